import { mount } from '@vue/test-utils';
import JobProgress from '../JobProgress.vue';
import RemoveJob from '../../promptRemove/importjob.harvesterhci.io.virtualmachine.vue';

const MiB = 1024 * 1024;

describe('the progress of a job', () => {
  it('is one bar per disk with bytes, rate and time left', () => {
    const job = {
      status: {
        disks: [
          {
            name: 'Hard disk 1', capacityBytes: 512 * MiB, bytesDone: 128 * MiB, bytesPerSecond: 32 * MiB, etaSeconds: 12, phase: 'Transferring'
          },
          { name: 'Hard disk 2', capacityBytes: 512 * MiB, bytesDone: 0 },
        ]
      }
    };
    const wrapper = mount(JobProgress, { props: { job } });
    const bars = wrapper.findAll('[role=progressbar]');

    expect(bars.map((b) => b.attributes('aria-valuenow'))).toEqual(['25', '0']);
    expect(wrapper.text()).toContain('25% · vmMigration.jobs.bytes {"done":"128 MiB","total":"512 MiB"}');
    expect(wrapper.text()).toContain('vmMigration.jobs.rate: 32 MiB/s');
    expect(wrapper.text()).toContain('vmMigration.jobs.eta: 12s');
    expect(wrapper.text()).toContain('vmMigration.jobs.eta: —');
  });

  it('says when there are no disks yet', () => {
    expect(mount(JobProgress, { props: { job: { status: {} } } }).text()).toBe('vmMigration.jobs.noDisks');
  });
});

describe('the delete confirmation', () => {
  it('says, per job, what happens to its source VM and what it made', () => {
    const jobs = [
      {
        id: 'a/web-01', metadata: { namespace: 'a', name: 'web-01' }, spec: { vmName: 'Web 01' }, status: { phase: 'Importing', sourceVm: { poweredOffByJob: true } }
      },
      {
        id: 'a/db', metadata: { namespace: 'a', name: 'db' }, spec: { vmName: 'DB' }, status: { phase: 'Succeeded', targetName: 'db' }
      },
    ];
    const items = mount(RemoveJob, { props: { value: jobs } }).findAll('[data-testid=vmm-remove-consequence]').map((li) => li.text());

    expect(items).toEqual([
      'vmMigration.jobs.remove.sourceStaysOff {"vm":"Web 01"}',
      'vmMigration.jobs.remove.transferStops',
      'vmMigration.jobs.remove.imagesRemoved',
      'vmMigration.jobs.remove.sourceUntouched {"vm":"DB"}',
      'vmMigration.jobs.remove.vmKept {"target":"db"}',
    ]);
  });
});
