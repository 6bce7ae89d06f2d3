// What the browser suite and the UI benchmark share: the system vmm-dev runs
// (kube-apiserver, our servers, vcsim, the image importer stand-in, steve and the
// shell), Chromium driven by playwright-core, and polling.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ABSENT } from '../scripts/serve.mjs';

export const STEP_TIMEOUT = 120_000;

// What the shell logs without Rancher's own APIs (the proxy answers them 404, see
// scripts/serve.mjs): resource loads refused, and the extensions catalog missing.
// It also leaves one of those 404s unhandled, which the page drops (ignoreAbsent).
const KNOWN_CONSOLE_ERRORS = [
  /^Failed to load resource: the server responded with a status of 404/,
  /^Could not load UI Extensions list/,
];

export function logger(name) {
  const started = Date.now();

  return (msg) => console.error(`[${ name } ${ ((Date.now() - started) / 1000).toFixed(1) }s] ${ msg }`);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `fn` until it returns something truthy; fails naming `what`.
export async function until(what, fn, timeout = STEP_TIMEOUT, interval = 250) {
  const deadline = Date.now() + timeout;
  let last;

  while (Date.now() < deadline) {
    try {
      const value = await fn();

      if (value) {
        return value;
      }
    } catch (err) {
      last = err;
    }
    await sleep(interval);
  }
  throw new Error(`timed out after ${ timeout / 1000 }s waiting for ${ what }${ last ? `: ${ last.message }` : '' }`);
}

// Starts `vmm-dev` with the built UI and `extraArgs`; `ready()` waits for its ready
// file, `stop()` ends it. It (and through it every peer) also dies with this process.
export function startSystem(vmmDev, dist, extraArgs = [], readyTimeout = 300_000) {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmm-ui-'));
  const readyFile = path.join(stateDir, 'ready.json');
  const child = spawn('setpriv', ['--pdeathsig', 'SIGTERM', '--', vmmDev,
    '--ui-dist', path.resolve(dist), '--ready-file', readyFile, '--state-dir', stateDir, ...extraArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
  const tail = [];

  child.stderr.on('data', (chunk) => {
    tail.push(...chunk.toString().split('\n').filter(Boolean));
    tail.splice(0, Math.max(0, tail.length - 40));
  });

  return {
    tail,
    ready: () => until('vmm-dev to be ready', () => {
      if (child.exitCode !== null) {
        throw new Error(`vmm-dev exited with ${ child.exitCode }:\n${ tail.join('\n') }`);
      }

      return fs.existsSync(readyFile) && JSON.parse(fs.readFileSync(readyFile, 'utf8'));
    }, readyTimeout, 500),
    async stop() {
      child.kill('SIGTERM');
      await until('vmm-dev to stop', () => child.exitCode !== null || child.signalCode !== null, 30_000, 200).catch(() => child.kill('SIGKILL'));
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export function kubectl(ready, argv, input) {
  return execFileSync(ready.kubectl, ['--kubeconfig', ready.kubeconfig, ...argv], { input, encoding: 'utf8' });
}

// A call to vcsim's control API (test/peers/vcsim/harness.go), trusting its CA.
export function vcsimHarness(ready, route, body) {
  const url = new URL(route, ready.vcsim.harnessUrl);

  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method: 'POST', ca: ready.vcsim.caPem, headers: { 'content-type': 'application/json' }
    }, (res) => {
      let data = '';

      res.on('data', (c) => {
        data += c;
      });
      res.on('end', () => (res.statusCode < 300 ? resolve(JSON.parse(data)) : reject(new Error(`${ route }: ${ res.statusCode } ${ data }`))));
    });

    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

// The requests the UI server proxied to steve so far, URL-decoded
// ({time, method, url, status, bytes, ms} each).
export function proxiedRequests(ready) {
  return fs.readFileSync(ready.ui.requestLog, 'utf8').split('\n').filter(Boolean).map((line) => {
    const request = JSON.parse(line);

    return { ...request, url: decodeURIComponent(request.url) };
  });
}

// Waits until the UI server has proxied no request starting with `prefix` for
// `ms`: the page then only fetches again on a change steve pushes to it.
export function quiet(ready, prefix, ms) {
  return until(`no request for ${ prefix } in ${ ms } ms`, () => {
    const seen = proxiedRequests(ready).filter((r) => r.url.startsWith(prefix));

    return !seen.length || Date.now() - Date.parse(seen[seen.length - 1].time) > ms;
  }, 120_000, 500);
}

// Runs in the page: a rejection carrying the proxy's 404 for Rancher's own APIs is
// the test world's, not a page error.
function ignoreAbsent(absent) {
  window.addEventListener('unhandledrejection', (event) => {
    if (event.reason?.message === absent) {
      event.preventDefault();
    }
  });
}

// Chromium with one page; `errors` collects page errors and console errors but the
// known ones.
export async function openBrowser(executablePath) {
  const browser = await chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const errors = [];

  await page.addInitScript(ignoreAbsent, ABSENT);
  page.on('pageerror', (err) => errors.push(`page error: ${ err.message || '' } ${ err.stack || JSON.stringify(err) }`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !KNOWN_CONSOLE_ERRORS.some((re) => re.test(msg.text()))) {
      errors.push(`console error: ${ msg.text() }`);
    }
  });

  return { browser, page, errors };
}

// The text input inside the element with `testid`.
export const input = (page, testid) => page.getByTestId(testid).locator('input, textarea').first();

// Picks `option` in a vue-select (the shell's LabeledSelect) found by `root`.
export async function choose(page, root, option) {
  await root.click();
  await page.locator('.vs__dropdown-menu .vs__dropdown-option', { hasText: option }).first().click();
}
