#!/usr/bin/env node
// The UI benchmark (not a test: docs/benchmarks.md). With --vms VMs in vcsim (10,000
// by default) it measures, in Chromium against the system `vmm-dev --ui-dist` runs:
//
//   - how long the inventory page takes to show its first rows after navigation:
//     loading the shell at the page's URL, and moving to it from another page;
//   - what one filter keystroke fetches, counted in the UI server's request log
//     (requests for inventory VMs and their bytes, after the page settles);
//   - for scale, what one download of the whole inventory costs.
//
// Prints a JSON summary on stdout.
//
//   node e2e/bench.mjs --dist DIR --vmm-dev BIN [--vms 10000] [--rounds 5]
import { parseArgs } from 'node:util';
import {
  logger, sleep, until, quiet, startSystem, proxiedRequests, openBrowser, input
} from './world.mjs';

const { values: args } = parseArgs({
  options: {
    dist:      { type: 'string' },
    'vmm-dev': { type: 'string' },
    vms:       { type: 'string', default: '10000' },
    rounds:    { type: 'string', default: '5' },
    chromium:  { type: 'string', default: '/usr/bin/chromium' },
  }
});

if (!args.dist || !args['vmm-dev']) {
  console.error('usage: bench.mjs --dist DIR --vmm-dev BIN [--vms N] [--rounds N]');
  process.exit(2);
}

const log = logger('ui-bench');
const VMS = Number(args.vms);
const ROUNDS = Number(args.rounds);
const COLLECTION = '/v1/inventory.harvesterhci.io.virtualmachines';
// Keystrokes that each narrow the list differently (VM names are DC0_C0_RP0_VM<n>).
const KEYS = ['1', '2', '3', '4', '5', '6', '7', '8', '9'];
// How long a keystroke's effects may take to show in the request log.
const SETTLE_MS = 2_000;
// The page also fetches again on its own when steve reports changes (live
// updates, at most every 4 s): a keystroke is measured once the page has been
// quiet this long, so only what the keystroke caused is counted.
const QUIET_MS = 5_000;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = (page) => page.getByTestId('vmm-inventory-table').locator('tbody tr.main-row');

async function getJson(ready, path) {
  const t0 = Date.now();
  const res = await fetch(new URL(path, ready.ui.url));
  const body = await res.text();

  return { ms: Date.now() - t0, bytes: body.length, json: JSON.parse(body) };
}

// Milliseconds from `navigate()` to the first row of the inventory table.
async function firstRows(page, navigate) {
  const t0 = Date.now();

  await navigate();
  await rows(page).first().waitFor({ timeout: 60_000 });

  return Date.now() - t0;
}

const system = startSystem(args['vmm-dev'], args.dist, ['--vms', String(VMS), '--download-mib-per-sec', '0']);
let browser;
let code = 0;

try {
  const ready = await system.ready();

  log(`system up: ${ ready.ui.url }; waiting for steve's cache to hold the ${ VMS } VMs`);
  await until(`${ VMS } inventory VMs in steve`, async() => (await getJson(ready, `${ COLLECTION }?pagesize=1`)).json.count >= VMS, 900_000, 2_000);
  const whole = await getJson(ready, `${ COLLECTION }?pagesize=${ VMS * 2 }`);

  log(`the whole inventory in one answer: ${ whole.json.data.length } VMs, ${ whole.bytes } bytes, ${ whole.ms } ms`);

  let page;

  ({ browser, page } = await openBrowser(args.chromium));
  const vmsUrl = `${ ready.ui.url }c/local/migration/vms`;
  const sourcesUrl = `${ ready.ui.url }c/local/migration/sources`;
  // Once, so the shell's own files are in the browser's cache as for a user who has
  // been on the site.
  await page.goto(sourcesUrl);
  await page.getByTestId('vmm-sources-table').waitFor({ timeout: 120_000 });

  const load = [];
  const inApp = [];

  for (let i = 0; i < ROUNDS; i++) {
    load.push(await firstRows(page, () => page.goto(vmsUrl)));
    await page.getByRole('link', { name: 'Sources' }).first().click();
    await page.getByTestId('vmm-sources-table').waitFor();
    inApp.push(await firstRows(page, () => page.getByRole('link', { name: 'Source VMs' }).first().click()));
  }
  log(`first rows: loading the page ${ load } ms, from another page ${ inApp } ms`);

  const keystrokes = [];

  for (const key of KEYS.slice(0, ROUNDS)) {
    const search = input(page, 'vmm-filter-search');

    await search.fill('');
    await quiet(ready, `${ COLLECTION }?page=`, QUIET_MS);
    const before = proxiedRequests(ready).length;
    const t0 = Date.now();

    await search.pressSequentially(key);
    await until('the filtered rows', async() => (await rows(page).first().textContent()).includes(key), 30_000, 50);
    const ms = Date.now() - t0;

    await sleep(SETTLE_MS);
    const fetched = proxiedRequests(ready).slice(before).filter((r) => r.url.startsWith(`${ COLLECTION }?`));

    keystrokes.push({
      key, ms, requests: fetched.length, bytes: fetched.reduce((a, r) => a + r.bytes, 0), urls: fetched.map((r) => r.url)
    });
  }
  log(`keystrokes: ${ keystrokes.map((k) => `${ k.requests } request(s), ${ k.bytes } bytes, rows after ${ k.ms } ms`).join('; ') }`);

  console.log(JSON.stringify({
    vms:            VMS,
    wholeInventory: { vms: whole.json.data.length, bytes: whole.bytes, ms: whole.ms },
    firstRowsMs:    {
      pageLoad: load, pageLoadMedian: median(load), inApp, inAppMedian: median(inApp)
    },
    keystrokes,
    maxRequestsPerKeystroke: Math.max(...keystrokes.map((k) => k.requests)),
  }, null, 2));
} catch (err) {
  code = 1;
  console.error(`[ui-bench] FAILED: ${ err.stack || err }\n${ system.tail.join('\n') }`);
} finally {
  await browser?.close();
  await system.stop();
}
process.exit(code);
