import {
  diskProgress, jobPercent, deleteConsequences, phaseColor, phaseOf, isFinished
} from '../jobs';

const GiB = 1024 ** 3;

function job(status: any = {}, spec: any = {}) {
  return { spec: { vmName: 'Web 01', ...spec }, status };
}

describe('disk progress', () => {
  it('reads bytes, rate and time left per disk', () => {
    const j = job({
      phase: 'Importing',
      disks: [
        {
          name: 'Hard disk 1', capacityBytes: 10 * GiB, bytesDone: 4 * GiB, bytesPerSecond: 100 << 20, etaSeconds: 61, phase: 'Transferring', imageName: 'web-01-disk-0'
        },
        {
          name: 'Hard disk 2', capacityBytes: 10 * GiB, bytesDone: 10 * GiB, phase: 'Imported'
        },
      ]
    });

    expect(diskProgress(j)).toEqual([
      {
        name: 'Hard disk 1', phase: 'Transferring', capacityBytes: 10 * GiB, bytesDone: 4 * GiB, percent: 40, bytesPerSecond: 100 << 20, etaSeconds: 61, imageName: 'web-01-disk-0'
      },
      {
        name: 'Hard disk 2', phase: 'Imported', capacityBytes: 10 * GiB, bytesDone: 10 * GiB, percent: 100, bytesPerSecond: undefined, etaSeconds: undefined, imageName: undefined
      },
    ]);
    expect(jobPercent(j)).toBe(70);
  });

  it('is 100 once the job succeeded, 0 before any disk is known', () => {
    expect(jobPercent(job({ phase: 'Succeeded' }))).toBe(100);
    expect(jobPercent(job())).toBe(0);
    expect(diskProgress(job())).toEqual([]);
  });
});

describe('phases', () => {
  it('start as Pending and end Succeeded or Failed', () => {
    expect(phaseOf(job())).toBe('Pending');
    expect(isFinished(job({ phase: 'Failed' }))).toBe(true);
    expect(isFinished(job({ phase: 'Exporting' }))).toBe(false);
    expect(['Succeeded', 'Failed', 'Importing', 'Pending'].map(phaseColor)).toEqual(['bg-success', 'bg-error', 'bg-info', 'bg-darker']);
  });
});

describe('delete confirmation', () => {
  const keys = (j: any) => deleteConsequences(j).map((c) => c.key.replace('vmMigration.jobs.remove.', ''));

  it('says the source VM stays off when the job powered it off', () => {
    const running = job({ phase: 'Exporting', sourceVm: { id: 'vm-42', poweredOffByJob: true } });

    expect(keys(running)).toEqual(['sourceStaysOff', 'transferStops', 'imagesRemoved']);
    expect(deleteConsequences(running)[0].args).toEqual({ vm: 'Web 01' });
  });

  it('says the source VM is not touched when the job did not power it off', () => {
    expect(keys(job({ phase: 'Validating' }))).toEqual(['sourceUntouched', 'transferStops', 'imagesRemoved']);
    expect(keys(job({ phase: 'Failed', sourceVm: { id: 'vm-42', poweredOffByJob: false } }))).toEqual(['sourceUntouched', 'imagesRemoved']);
  });

  it('says the Harvester VM stays after a success', () => {
    const done = job({ phase: 'Succeeded', targetName: 'web-01', sourceVm: { id: 'vm-42', poweredOffByJob: true } });

    expect(keys(done)).toEqual(['sourceStaysOff', 'vmKept']);
    expect(deleteConsequences(done)[1].args).toEqual({ target: 'web-01' });
  });
});
