import { importTypes } from '@rancher/auto-import';
import { IPlugin } from '@shell/core/types';
import routes from './routing';
import { addHarvesterEntryPoints } from './harvester';

// The extension: the "VM Migration" product of its own, and entry points into
// Harvester's product when that is installed too.
export default function(plugin: IPlugin): void {
  importTypes(plugin);
  plugin.metadata = require('./package.json');
  plugin.addProduct(require('./product'));
  plugin.addRoutes(routes);
  addHarvesterEntryPoints(plugin);
}
