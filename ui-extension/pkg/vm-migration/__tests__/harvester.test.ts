import { Plugin } from '@shell/core/plugin';
import { getApplicableExtensionEnhancements } from '@shell/core/plugin-helpers';
import { ActionLocation, ExtensionPoint } from '@shell/core/types';
import { addHarvesterEntryPoints, importRoute } from '../harvester';

// Our entry points registered on the shell's own Plugin, matched the way the shell
// matches them against routes (getApplicableExtensionEnhancements).
function headerActionsOn(route: any) {
  const plugin = new Plugin('vm-migration');

  addHarvesterEntryPoints(plugin as any);
  const ctx = { $extension: { getUIConfig: (type: string, where: string) => plugin.uiConfig[type][where] || [] }, t: (k: string) => k };

  return getApplicableExtensionEnhancements(ctx as any, ExtensionPoint.ACTION, ActionLocation.HEADER, route);
}

function route(name: string, params: any) {
  return {
    name, params, query: {}, meta: {}, hash: '', path: `/${ name }`
  };
}

const harvesterVmList = route('harvester-c-cluster-resource', { cluster: 'c-m-abc', product: 'harvester', resource: 'kubevirt.io.virtualmachine' });

describe('entry points in Harvester\'s product', () => {
  it('add "Import VMs" to Harvester\'s VM list', () => {
    const actions = headerActionsOn(harvesterVmList);

    expect(actions).toHaveLength(1);
    expect((actions[0] as any).labelKey).toBe('vmMigration.harvester.importAction');
  });

  it('show nowhere else: not on a VM\'s page, other lists or other products', () => {
    expect(headerActionsOn(route('harvester-c-cluster-resource-namespace-id', {
      cluster: 'c-m-abc', product: 'harvester', resource: 'kubevirt.io.virtualmachine', namespace: 'default', id: 'web'
    }))).toHaveLength(0);
    expect(headerActionsOn(route('harvester-c-cluster-resource', { cluster: 'c-m-abc', product: 'harvester', resource: 'harvesterhci.io.virtualmachineimage' }))).toHaveLength(0);
    expect(headerActionsOn(route('c-cluster-product-resource', { cluster: 'local', product: 'explorer', resource: 'kubevirt.io.virtualmachine' }))).toHaveLength(0);
  });

  it('open our import wizard in the cluster the page shows', () => {
    const [action] = headerActionsOn(harvesterVmList) as any[];
    const push = jest.fn();

    action.invoke.call({ $router: { push } }, {}, [], { $route: harvesterVmList });
    expect(push).toHaveBeenCalledWith(importRoute('c-m-abc'));
    expect(importRoute('c-m-abc')).toEqual({ name: 'c-cluster-migration-import', params: { cluster: 'c-m-abc', product: 'migration' } });
  });
});
