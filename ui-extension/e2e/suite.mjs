#!/usr/bin/env node
// The UI's browser suite: Debian's Chromium, driven by playwright-core, against the
// real system that `vmm-dev --ui-dist` runs (kube-apiserver, our apiserver and
// controller, vcsim, the image importer stand-in, steve and the built shell with
// pkg/vm-migration). It does what a user does and checks what they would see:
//
//   1. adds a vSphere source through the form and sees it turn Ready;
//   2. browses and filters the source's VMs;
//   3. sees a VM powered off in vcsim turn Off in the open page, without a reload;
//   4. runs the import wizard for two VMs;
//   5. watches both jobs reach Succeeded, their progress bars taking three or more values,
//      and the inventory then flag the imported VM's name as taken (a concern badge);
//   6. deletes a job through its confirmation;
//   7. opens the pages as a user who may read sources but nothing else of ours, and
//      sees "not allowed" where the others would be.
//
// It writes a screenshot of every page to --screenshots, and fails on any page error
// or console error but the few the shell makes without Rancher (world.mjs).
//
//   node e2e/suite.mjs --dist ui-extension/dist --vmm-dev <target>/debug/vmm-dev --screenshots docs/ui
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  logger, until, quiet, startSystem, kubectl, vcsimHarness, proxiedRequests, openBrowser, input, choose
} from './world.mjs';

const NAMESPACE = 'ui-e2e';
const SOURCE = 'vc-ui';
const NAD = 'vlan-a';

const { values: args } = parseArgs({
  options: {
    dist:        { type: 'string' },
    'vmm-dev':   { type: 'string' },
    screenshots: { type: 'string' },
    chromium:    { type: 'string', default: '/usr/bin/chromium' },
  }
});

if (!args.dist || !args['vmm-dev']) {
  console.error('usage: suite.mjs --dist DIR --vmm-dev BIN [--screenshots DIR] [--chromium BIN]');
  process.exit(2);
}

const log = logger('ui-e2e');

async function screenshot(page, name) {
  if (args.screenshots) {
    fs.mkdirSync(args.screenshots, { recursive: true });
    await page.screenshot({ path: path.join(args.screenshots, `${ name }.png`), fullPage: false });
  }
}

// ---------------------------------------------------------------- the steps

async function addSource(page, ready) {
  const base = ready.ui.url;

  await page.goto(`${ base }c/local/migration/sources`);
  await page.getByTestId('vmm-add-source.harvesterhci.io.vsphere').click();
  await input(page, 'name-ns-description-name').fill(SOURCE);
  await choose(page, page.getByTestId('name-ns-description-namespace'), NAMESPACE);
  await input(page, 'vmm-source-endpoint').fill(ready.vcsim.url);
  await page.getByTestId('vmm-source-tls').getByText('Trust this CA').click();
  await input(page, 'vmm-source-ca').fill(ready.vcsim.caPem);
  await input(page, 'vmm-source-username').fill(ready.vcsim.username);
  await input(page, 'vmm-source-password').fill(ready.vcsim.password);
  await screenshot(page, 'source-form');
  await page.getByRole('button', { name: 'Create', exact: true }).click();

  const row = page.getByTestId('vmm-sources-table').locator('tr', { hasText: SOURCE });

  await until(`source ${ SOURCE } Ready in the list`, async() => (await row.getByTestId('vmm-source-state').textContent())?.includes('Ready') &&
    !(await row.getByTestId('vmm-source-state').textContent())?.includes('Not'));
  // The Secret holds what was typed, in the source's namespace.
  const secret = JSON.parse(kubectl(ready, ['get', 'secret', '-n', NAMESPACE, `${ SOURCE }-credentials`, '-o', 'json']));

  if (Buffer.from(secret.data.password, 'base64').toString() !== ready.vcsim.password) {
    throw new Error('the credentials Secret does not hold the password typed in');
  }
  await until('the source\'s VM count', async() => /^\d+$/.test((await row.getByTestId('vmm-source-vms').textContent()).trim()));
  await screenshot(page, 'sources');
  log(`source ${ SOURCE } is Ready`);
}

async function browseAndFilter(page, ready) {
  await page.goto(`${ ready.ui.url }c/local/migration/vms`);
  const table = page.getByTestId('vmm-inventory-table');

  await until('inventory rows', async() => (await table.locator('tbody tr.main-row').count()) > 0);
  await choose(page, page.getByTestId('vmm-filter-source'), SOURCE);
  await input(page, 'vmm-filter-search').fill('Web');
  await until('only Web 01 after filtering', async() => {
    const names = await table.locator('tbody tr.main-row').allTextContents();

    return names.length === 1 && names[0].includes('Web 01');
  });
  // Filtered by steve (its SQL cache), not in the browser: the request for the page
  // carries the filter, on the server's Table cell of the display name.
  if (!proxiedRequests(ready).some(({ url }) => url.includes('/v1/inventory.harvesterhci.io.virtualmachines?') && url.includes('filter=metadata.fields[1]~Web'))) {
    throw new Error('no server-side filtered request for the inventory; the page is not paging on the server');
  }
  await input(page, 'vmm-filter-search').fill('');
  await until('the source\'s VMs again', async() => (await table.locator('tbody tr.main-row').count()) === ready.demoVms.length + 2);
  log('browsed and filtered the inventory');
}

async function liveUpdate(page, ready) {
  const vm = ready.demoVms.find((v) => v.name === 'Web 01');
  const power = page.getByTestId('vmm-inventory-table').locator('tr.main-row', { hasText: 'Web 01' }).getByTestId('vmm-vm-power');

  await until('Web 01 On', async() => (await power.textContent()).trim() === 'On');
  // Only steve's watch can bring the change once the page has stopped fetching.
  await quiet(ready, '/v1/inventory.harvesterhci.io.virtualmachines?page=', 6_000);
  const t0 = Date.now();

  await vcsimHarness(ready, 'power', { moref: vm.moref, powerState: 'poweredOff' });
  await until('Web 01 Off in the open page', async() => (await power.textContent()).trim() === 'Off', 60_000);
  log(`a power-off in vcsim showed in the page after ${ Date.now() - t0 } ms, through steve's watch, without a reload`);
}

async function runWizard(page) {
  const table = page.getByTestId('vmm-inventory-table');

  for (const name of ['Web 01', 'Ünïcödé-VM €']) {
    await table.locator('tr.main-row', { hasText: name }).locator('.checkbox-container').first().click();
  }
  await page.getByTestId('vmm-import-selected').click();
  await until('the wizard with two VMs', async() => (await page.getByTestId('vmm-import-vms').locator('tbody tr').count()) === 2);
  await screenshot(page, 'import-vms');
  await page.getByRole('button', { name: 'Next' }).click();

  await choose(page, page.getByTestId('vmm-map-VM Network').locator('.v-select, .labeled-select').first(), `${ NAMESPACE }/${ NAD }`);
  await until('no unmapped network', async() => !(await page.getByTestId('vmm-unmapped').count()));
  await screenshot(page, 'import-networks');
  await page.getByRole('button', { name: 'Next' }).click();

  const names = [await input(page, 'vmm-target-Web 01').inputValue(), await input(page, 'vmm-target-Ünïcödé-VM €').inputValue()];

  if (names.join() !== 'web-01,unicode-vm-eur') {
    throw new Error(`the target names are not the controller's: ${ names }`);
  }
  await input(page, 'vmm-target-Web 01').fill('Web_01');
  await until('a DNS-1123 error', async() => (await page.getByText('Lowercase letters, digits and "-"').count()) > 0);
  await input(page, 'vmm-target-Web 01').fill('web-01');
  await screenshot(page, 'import-options');
  await page.getByRole('button', { name: 'Next' }).click();
  await until('the review', async() => (await page.getByTestId('vmm-review').locator('tbody tr').count()) === 2);
  await screenshot(page, 'import-review');
  await page.getByTestId('vmm-import-finish').click();
  await until('the jobs list', async() => page.url().endsWith('/migration/jobs'));
  log('the wizard created two import jobs');
}

async function watchJobs(page, ready) {
  const table = page.getByTestId('vmm-jobs-table');
  const seen = { 'web-01': new Set(), 'unicode-vm-eur': new Set() };
  let shot = false;

  await until('both jobs Succeeded', async() => {
    const done = [];

    for (const job of Object.keys(seen)) {
      const row = table.locator('tr.main-row', { hasText: job });

      if (!(await row.count())) {
        return false;
      }
      for (const value of await row.locator('[role=progressbar]').evaluateAll((bars) => bars.map((b) => b.getAttribute('aria-valuenow')))) {
        seen[job].add(value);
      }
      const text = await row.textContent();

      if (text.includes('Failed')) {
        throw new Error(`job ${ job } failed: ${ kubectl(ready, ['get', 'importjob', '-n', NAMESPACE, job, '-o', 'jsonpath={.status.conditions}']) }`);
      }
      if (!shot && seen[job].size >= 2 && !text.includes('Succeeded')) {
        await screenshot(page, 'jobs');
        shot = true;
      }
      done.push(text.includes('Succeeded'));
    }

    return done.every(Boolean);
  }, 300_000, 300);
  for (const [job, values] of Object.entries(seen)) {
    if (values.size < 3) {
      throw new Error(`job ${ job }: the progress bar took ${ values.size } values (${ [...values] }), want at least 3`);
    }
  }
  log(`both jobs Succeeded; progress values seen: ${ JSON.stringify(Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, [...v]]))) }`);
  if (!shot) {
    await screenshot(page, 'jobs');
  }

  await table.locator('tr.main-row', { hasText: 'web-01' }).getByRole('link', { name: 'web-01' }).click();
  await until('the job detail', async() => (await page.getByTestId('vmm-job-facts').count()) > 0);
  await screenshot(page, 'job-detail');
  await page.goBack();
}

// The imported VM's name is now taken in the namespace: the inventory says so on
// the source VM, as a badge with the concern's text, live.
async function concernBadge(page, ready) {
  await page.goto(`${ ready.ui.url }c/local/migration/vms`);
  await choose(page, page.getByTestId('vmm-filter-source'), SOURCE);
  const badge = page.getByTestId('vmm-inventory-table').locator('tr.main-row', { hasText: 'Web 01' }).getByTestId('vmm-concern');

  await until('a NameTaken badge on Web 01', async() => (await badge.count()) > 0 && (await badge.first().textContent()).includes('NameTaken'), 60_000);
  const text = await badge.first().getAttribute('title');

  if (!text.includes('web-01') || !text.includes('spec.targetName')) {
    throw new Error(`the badge does not carry the concern's text: ${ text }`);
  }
  await screenshot(page, 'inventory');
  log('the inventory flags the imported VM\'s name as taken');
  await page.goto(`${ ready.ui.url }c/local/migration/jobs`);
}

async function deleteJob(page, ready) {
  const table = page.getByTestId('vmm-jobs-table');
  const row = table.locator('tr.main-row', { hasText: 'unicode-vm-eur' });

  await row.locator('[data-testid$="-action-button"]').click();
  await page.getByRole('menuitem', { name: 'Delete' }).or(page.locator('.list-unstyled.menu li', { hasText: 'Delete' })).first().click();
  const prompt = page.getByTestId('vmm-remove-job');

  await until('the delete confirmation', async() => (await prompt.count()) > 0);
  const text = await prompt.textContent();

  if (!text.includes('stays powered off')) {
    throw new Error(`the confirmation does not say what happens to the source VM: ${ text }`);
  }
  await screenshot(page, 'job-delete');
  await page.getByTestId('prompt-remove-confirm-button').click();
  await until('the confirmation to close', async() => !(await prompt.count()), 30_000);
  await until('the job gone from the list', async() => !(await row.count()), 60_000).catch((err) => {
    // Whether the page did not delete it or the controller did not let it go.
    const job = kubectl(ready, ['get', 'importjob', '-n', NAMESPACE, 'unicode-vm-eur', '--ignore-not-found', '-o',
      'jsonpath={.metadata.deletionTimestamp} {.metadata.finalizers}']);

    throw new Error(`${ err.message }; the job in the cluster: ${ job || 'gone' }`);
  });
  log('deleted a job; its confirmation said the source VM stays off');
}

async function notAllowed(page, ready) {
  const base = `${ ready.ui.restrictedUrl }c/local/migration`;

  await page.goto(`${ base }/sources`);
  await until('the sources this user may read', async() => (await page.getByTestId('vmm-sources-table').locator('tr', { hasText: SOURCE }).count()) > 0);
  for (const [pageName, shot] of [['vms', 'not-allowed'], ['jobs'], [`import?vms=${ NAMESPACE }/anything`]]) {
    await page.goto(`${ base }/${ pageName }`);
    await until(`"not allowed" on ${ pageName }`, async() => (await page.getByTestId('vmm-not-allowed').count()) > 0);
    if (shot) {
      await screenshot(page, shot);
    }
  }
  log('a user who may only read sources sees "not allowed" on the inventory, the jobs and the wizard');
}

// ---------------------------------------------------------------- main

const system = startSystem(args['vmm-dev'], args.dist, ['--ui-restricted', '--vms', '2']);
let browser;
let page;
let errors = [];
let failed = false;

try {
  const ready = await system.ready();

  log(`system up: ${ ready.ui.url } (logs in ${ ready.logs })`);
  kubectl(ready, ['create', 'namespace', NAMESPACE]);
  kubectl(ready, ['apply', '-f', '-'], JSON.stringify({
    apiVersion: 'k8s.cni.cncf.io/v1',
    kind:       'NetworkAttachmentDefinition',
    metadata:   { name: NAD, namespace: NAMESPACE },
    spec:       {
      config: JSON.stringify({
        cniVersion: '0.3.1', name: NAD, type: 'bridge', bridge: 'mgmt-br', promiscMode: true, vlan: 10, ipam: {}
      })
    },
  }));

  ({ browser, page, errors } = await openBrowser(args.chromium));
  await addSource(page, ready);
  await browseAndFilter(page, ready);
  await liveUpdate(page, ready);
  await runWizard(page);
  await watchJobs(page, ready);
  await concernBadge(page, ready);
  await deleteJob(page, ready);
  await notAllowed(page, ready);

  if (errors.length) {
    throw new Error(`the pages logged errors:\n${ errors.join('\n') }`);
  }
  log('passed');
} catch (err) {
  failed = true;
  console.error(`[ui-e2e] FAILED: ${ err.stack || err }`);
  if (page) {
    const shot = path.join(os.tmpdir(), 'vmm-ui-e2e-failure.png');

    await page.screenshot({ path: shot }).then(() => console.error(`[ui-e2e] the page when it failed: ${ shot } (${ page.url() })`), () => {});
  }
  if (errors.length) {
    console.error(`[ui-e2e] errors the pages logged:\n${ errors.join('\n') }`);
  }
  console.error(`[ui-e2e] vmm-dev's last lines:\n${ system.tail.join('\n') }`);
} finally {
  await browser?.close();
  await system.stop();
}
process.exit(failed ? 1 : 0);
