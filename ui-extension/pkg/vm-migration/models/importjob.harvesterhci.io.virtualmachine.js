import SteveModel from '@shell/plugins/steve/steve-class';
import { phaseOf, phaseColor, readyCondition } from '../utils/jobs';

// Import jobs: their state is the pipeline's phase; a failure's message is the
// Ready condition's, which names the fix.
export default class ImportJob extends SteveModel {
  get phase() {
    return phaseOf(this);
  }

  get stateDisplay() {
    return this.phase;
  }

  get stateBackground() {
    return phaseColor(this.phase);
  }

  get stateDescription() {
    const ready = readyCondition(this);

    return this.phase === 'Failed' && ready ? ready.message : undefined;
  }
}
