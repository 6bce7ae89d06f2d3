import { IPlugin } from '@shell/core/types';
import {
  PRODUCT, PAGE, ROUTE, SOURCE_TYPES, IMPORT_JOB, INVENTORY
} from './config/types';

// The "VM Migration" product, in the cluster store: the CRDs and the inventory
// API live on the Harvester cluster, which Rancher reaches as /k8s/clusters/<id>.
// It shows on every cluster that serves our groups, Harvester's product or not.
export function init($plugin: IPlugin, store: any): void {
  const {
    product, virtualType, basicType, configureType, weightType
  } = $plugin.DSL(store, PRODUCT);

  product({
    icon:                'copy',
    inStore:             'cluster',
    ifHaveGroup:         /^(source|importjob|inventory)\.harvesterhci\.io$/,
    showNamespaceFilter: true,
    to:                  { name: ROUTE.SOURCES, params: { product: PRODUCT } },
  });

  // Our own pages (they say "not allowed" where the shell's generic ones would
  // fail), then the networks' generic list.
  const pages: [string, string, string, number][] = [
    [PAGE.SOURCES, ROUTE.SOURCES, 'vmMigration.nav.sources', 100],
    [PAGE.VMS, ROUTE.VMS, 'vmMigration.nav.vms', 90],
    [PAGE.IMPORT, ROUTE.IMPORT, 'vmMigration.nav.import', 70],
    [PAGE.JOBS, ROUTE.JOBS, 'vmMigration.nav.jobs', 60],
  ];

  for (const [name, route, labelKey, weight] of pages) {
    virtualType({
      labelKey, name, namespaced: true, route: { name: route, params: { product: PRODUCT } }
    });
    weightType(name, weight, true);
  }
  basicType([PAGE.SOURCES, PAGE.VMS, INVENTORY.NETWORK, PAGE.IMPORT, PAGE.JOBS]);
  weightType(INVENTORY.NETWORK, 80, true);

  // Sources are listed together on their own page; their create/edit forms stay the
  // shell's, reached from there.
  for (const type of SOURCE_TYPES) {
    configureType(type, { isCreatable: true, isEditable: true, canYaml: true });
  }
  configureType(INVENTORY.VM, { isCreatable: false, isEditable: false, canYaml: false, showState: false });
  configureType(INVENTORY.NETWORK, { isCreatable: false, isEditable: false, canYaml: false, showState: false });
  // Jobs are made by the import wizard (from the inventory browser's selection)
  // and cannot change once made.
  configureType(IMPORT_JOB, { isCreatable: false, isEditable: false });
}
