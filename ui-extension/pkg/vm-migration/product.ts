import { IPlugin } from '@shell/core/types';
import {
  PRODUCT, PAGE, SOURCE_TYPES, IMPORT_JOB, INVENTORY
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
    to:                  { name: `c-cluster-${ PRODUCT }-sources`, params: { product: PRODUCT } },
  });

  virtualType({
    labelKey:   'vmMigration.nav.sources',
    name:       PAGE.SOURCES,
    namespaced: true,
    weight:     100,
    route:      { name: `c-cluster-${ PRODUCT }-sources`, params: { product: PRODUCT } },
    exact:      true,
  });
  virtualType({
    labelKey:   'vmMigration.nav.import',
    name:       PAGE.IMPORT,
    namespaced: true,
    weight:     70,
    route:      { name: `c-cluster-${ PRODUCT }-import`, params: { product: PRODUCT } },
    exact:      true,
  });

  basicType([PAGE.SOURCES, INVENTORY.VM, INVENTORY.NETWORK, PAGE.IMPORT, IMPORT_JOB]);
  weightType(INVENTORY.VM, 90, true);
  weightType(INVENTORY.NETWORK, 80, true);
  weightType(IMPORT_JOB, 60, true);

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
