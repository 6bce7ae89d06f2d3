import SteveModel from '@shell/plugins/steve/steve-class';
import { readiness } from './sources';
import { PRODUCT, ROUTE } from '../config/types';

// Sources of every kind: state from the Ready condition, so lists and the detail
// page show Ready / Not Ready / Checking and sort by it.
export default class Source extends SteveModel {
  get readyState() {
    return readiness(this).state;
  }

  get stateDisplay() {
    return this.$rootGetters['i18n/t'](`vmMigration.sources.state.${ this.readyState }`);
  }

  get stateBackground() {
    return { ready: 'bg-success', notReady: 'bg-error', checking: 'bg-info' }[this.readyState];
  }

  // After the form is saved: the Sources page, where every kind is listed.
  get doneRoute() {
    return ROUTE.SOURCES;
  }

  get doneParams() {
    return { cluster: this.$rootGetters['clusterId'], product: PRODUCT };
  }

  get stateDescription() {
    const r = readiness(this);

    return r.state === 'notReady' ? `${ r.reason }: ${ r.message }` : undefined;
  }
}
