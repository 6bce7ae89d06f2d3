import { importTypes } from '@rancher/auto-import';
import { IPlugin } from '@shell/core/types';
import routes from './routing';
import { addHarvesterEntryPoints } from './harvester';
import { INVENTORY } from './config/types';

// The extension: the "VM Migration" product of its own, and entry points into
// Harvester's product when that is installed too.
export default function(plugin: IPlugin): void {
  importTypes(plugin);
  plugin.metadata = require('./package.json');
  plugin.addProduct(require('./product'));
  plugin.addRoutes(routes);
  // Our inventory list pages on the server when steve's SQL cache is on (the shell
  // pages only generic lists by itself; ours has its own component).
  plugin.enableServerSidePagination({ cluster: { resources: { enableAll: false, enableSome: { enabled: [INVENTORY.VM] } } } });
  addHarvesterEntryPoints(plugin);
}
