import { ActionLocation, IPlugin } from '@shell/core/types';
import {
  HARVESTER_PRODUCT, KUBEVIRT_VM, PRODUCT, ROUTE
} from './config/types';

// Where our entry points appear in Harvester's product: the list of its
// (KubeVirt) virtual machines. Matching needs Harvester's product to be loaded;
// without it these locations never match and nothing shows.
export const HARVESTER_VM_LIST = { product: [HARVESTER_PRODUCT], resource: [KUBEVIRT_VM], mode: ['list'] };

// The route of our import wizard in the cluster a Harvester page shows.
export function importRoute(cluster: string) {
  return { name: ROUTE.IMPORT, params: { cluster, product: PRODUCT } };
}

export function addHarvesterEntryPoints(plugin: IPlugin): void {
  plugin.addAction(ActionLocation.HEADER, HARVESTER_VM_LIST, {
    labelKey: 'vmMigration.harvester.importAction',
    icon:     'icon-upload',
    // Called with the header component as `this` (it has the router).
    invoke(this: any, opts: any, resources: any[], globals: any) {
      this.$router.push(importRoute(globals.$route.params.cluster));
    }
  });
}
