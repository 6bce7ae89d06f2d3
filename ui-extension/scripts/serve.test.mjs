// node --test: where scripts/serve.mjs sends each request of the shell.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { route } from './serve.mjs';

test('steve serves the API, at the root and as the local cluster', () => {
  assert.deepEqual(route('/v1/schemas'), { to: 'steve', path: '/v1/schemas' });
  assert.deepEqual(route('/v1/subscribe?sockId=1'), { to: 'steve', path: '/v1/subscribe?sockId=1' });
  assert.deepEqual(route('/apis/inventory.harvesterhci.io/v1'), { to: 'steve', path: '/apis/inventory.harvesterhci.io/v1' });
  assert.deepEqual(route('/version'), { to: 'steve', path: '/version' });
  // No 302 from steve: a WebSocket would not follow it.
  assert.deepEqual(route('/k8s/clusters/local/v1/subscribe?sockId=2'), { to: 'steve', path: '/v1/subscribe?sockId=2' });
  assert.deepEqual(route('/k8s/clusters/local/v1/namespaces'), { to: 'steve', path: '/v1/namespaces' });
});

test('Rancher\'s own APIs are absent', () => {
  for (const url of ['/v3/users?me=true', '/v3/principals', '/v3-public/authProviders', '/rancherversion', '/v1-public/authproviders']) {
    assert.deepEqual(route(url), { to: 'absent' }, url);
  }
});

test('everything else is the shell', () => {
  for (const url of ['/', '/c/local/migration/sources', '/js/app.js', '/v1x', '/versions']) {
    assert.deepEqual(route(url), { to: 'file' }, url);
  }
});
