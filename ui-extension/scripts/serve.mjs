#!/usr/bin/env node
// Serves the built shell (dist/) and proxies its API calls to a standalone steve,
// playing the part of Rancher's server in the test world (hack/up.sh, the browser
// suite, the benchmark). No dependencies beyond Node.
//
//   node scripts/serve.mjs --dist DIR --steve https://127.0.0.1:PORT [--listen 127.0.0.1:0] [--log FILE]
//
// Prints one JSON line, {"url": "http://127.0.0.1:PORT/", "port": PORT}, once it listens. With --log,
// appends one JSON line per proxied request ({time, method, url, status, bytes, ms}),
// which the benchmark counts.
//
// What it answers (docs/decisions.md, "The UI's test world"):
// - Rancher's own APIs (/v3, /v3-public, /v1-public, /rancherversion) do not exist
//   here: 404 with the message ABSENT, which the shell takes as "no Rancher auth,
//   no Rancher version" (one of these 404s it leaves as an unhandled rejection).
// - /v1, /api, /apis, /version (HTTP and WebSocket) go to steve, with x-api-host set.
// - /k8s/clusters/local/... is the local cluster's steve: the prefix is cut off,
//   because steve answers it with a 302 that a WebSocket does not follow.
// - Anything else is a file of dist/, or index.html (the shell routes in the browser).
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const LOCAL_CLUSTER = '/k8s/clusters/local';
// The message of the 404 for Rancher's own APIs (the browser suite recognises it).
export const ABSENT = 'not served without Rancher';
const STEVE_PATHS = [/^\/v1(\/|\?|$)/, /^\/api(\/|\?|$)/, /^\/apis(\/|\?|$)/, /^\/version(\?|$)/];
const ABSENT_PATHS = [/^\/v3(\/|\?|$)/, /^\/v3-public(\/|\?|$)/, /^\/v1-public(\/|\?|$)/, /^\/rancherversion(\?|$)/];
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js':   'application/javascript',
  '.css':  'text/css',
  '.json': 'application/json',
  '.svg':  'image/svg+xml',
  '.png':  'image/png',
  '.ico':  'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf':  'font/ttf',
  '.map':  'application/json',
};

// Where a request goes: {to: 'steve', path} | {to: 'absent'} | {to: 'file'}.
export function route(url) {
  let target = url;

  if (target === LOCAL_CLUSTER || target.startsWith(`${ LOCAL_CLUSTER }/`) || target.startsWith(`${ LOCAL_CLUSTER }?`)) {
    target = target.slice(LOCAL_CLUSTER.length) || '/';
    if (!target.startsWith('/')) {
      target = `/${ target }`;
    }
  }
  if (ABSENT_PATHS.some((re) => re.test(target))) {
    return { to: 'absent' };
  }
  if (STEVE_PATHS.some((re) => re.test(target))) {
    return { to: 'steve', path: target };
  }

  return { to: 'file' };
}

function main() {
  const { values } = parseArgs({
    options: {
      dist:   { type: 'string' },
      steve:  { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:0' },
      log:    { type: 'string' },
    }
  });

  if (!values.dist || !values.steve) {
    console.error('usage: serve.mjs --dist DIR --steve https://HOST:PORT [--listen HOST:PORT] [--log FILE]');
    process.exit(2);
  }
  const dist = path.resolve(values.dist);

  if (!fs.existsSync(path.join(dist, 'index.html'))) {
    console.error(`serve.mjs: ${ dist }/index.html not found: build the UI first (npm run build)`);
    process.exit(2);
  }
  const steve = new URL(values.steve);
  const log = values.log ? fs.createWriteStream(values.log, { flags: 'a' }) : null;
  const [host, port] = splitHostPort(values.listen);

  const server = http.createServer((req, res) => {
    const started = Date.now();
    const where = route(req.url);

    if (where.to === 'absent') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ type: 'error', status: 404, message: ABSENT }));
    } else if (where.to === 'steve') {
      proxy(req, res, steve, where.path, (status, bytes) => {
        log?.write(`${ JSON.stringify({
          time: new Date(started).toISOString(), method: req.method, url: req.url, status, bytes, ms: Date.now() - started
        }) }\n`);
      });
    } else {
      serveFile(dist, req, res);
    }
  });

  server.on('upgrade', (req, socket, head) => {
    const where = route(req.url);

    if (where.to !== 'steve') {
      socket.destroy();

      return;
    }
    upgrade(req, socket, head, steve, where.path);
  });

  server.listen(Number(port), host, () => {
    const addr = server.address();

    process.stdout.write(`${ JSON.stringify({ url: `http://${ addr.address }:${ addr.port }/`, port: addr.port }) }\n`);
  });
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      server.close();
      process.exit(0);
    });
  }
}

function splitHostPort(listen) {
  const i = listen.lastIndexOf(':');

  if (i < 0) {
    throw new Error(`--listen ${ listen }: want HOST:PORT`);
  }

  return [listen.slice(0, i), listen.slice(i + 1)];
}

// Headers for steve: its own Host, and x-api-host and x-forwarded-proto so the links
// it writes point back at us (plain HTTP), not at its own TLS port.
function upstreamHeaders(req, steve) {
  const headers = {
    ...req.headers, host: steve.host, 'x-api-host': req.headers.host, 'x-forwarded-proto': 'http'
  };

  delete headers.origin;

  return headers;
}

function proxy(req, res, steve, path, done) {
  const upstream = https.request({
    host:               steve.hostname,
    port:               steve.port,
    method:             req.method,
    path,
    headers:            upstreamHeaders(req, steve),
    // steve's certificate is self-signed, and it listens on loopback only.
    rejectUnauthorized: false,
  }, (up) => {
    let bytes = 0;

    up.on('data', (chunk) => {
      bytes += chunk.length;
    });
    up.on('end', () => done(up.statusCode, bytes));
    res.writeHead(up.statusCode, up.headers);
    up.pipe(res);
  });

  upstream.on('error', (err) => {
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain' });
    }
    res.end(`steve: ${ err.message }`);
    done(502, 0);
  });
  req.pipe(upstream);
}

// A WebSocket (steve's /v1/subscribe): replay the upgrade request to steve over TLS
// and splice the two sockets.
function upgrade(req, socket, head, steve, path) {
  const upstream = tls.connect({
    host: steve.hostname, port: Number(steve.port), rejectUnauthorized: false, servername: 'localhost'
  }, () => {
    const headers = upstreamHeaders(req, steve);
    const lines = [`${ req.method } ${ path } HTTP/1.1`];

    for (const [name, value] of Object.entries(headers)) {
      for (const v of Array.isArray(value) ? value : [value]) {
        lines.push(`${ name }: ${ v }`);
      }
    }
    upstream.write(`${ lines.join('\r\n') }\r\n\r\n`);
    if (head?.length) {
      upstream.write(head);
    }
    upstream.pipe(socket);
    socket.pipe(upstream);
  });
  const close = () => {
    upstream.destroy();
    socket.destroy();
  };

  upstream.on('error', close);
  socket.on('error', close);
  upstream.on('close', close);
  socket.on('close', close);
}

function serveFile(dist, req, res) {
  const urlPath = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  let file = path.normalize(path.join(dist, urlPath));

  if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    file = path.join(dist, 'index.html');
  }
  res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
}

if (import.meta.url === `file://${ process.argv[1] }`) {
  main();
}
