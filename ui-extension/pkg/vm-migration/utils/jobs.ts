// Import jobs (importjob.harvesterhci.io): phases, per-disk progress, and what
// deleting one does (controller/src/import/mod.rs, cleanup: the export ends,
// images of an unfinished import are removed, the source VM is never touched).
import { percent } from './format';

export const PHASES = ['Pending', 'Validating', 'PoweringOff', 'Exporting', 'Importing', 'CreatingVM', 'Succeeded', 'Failed'];

export function phaseOf(job: any): string {
  return job?.status?.phase || 'Pending';
}

export function isFinished(job: any): boolean {
  return ['Succeeded', 'Failed'].includes(phaseOf(job));
}

// The colour of a phase badge (the shell's bg-* classes).
export function phaseColor(phase: string): string {
  switch (phase) {
  case 'Succeeded':
    return 'bg-success';
  case 'Failed':
    return 'bg-error';
  case 'Pending':
    return 'bg-darker';
  default:
    return 'bg-info';
  }
}

export interface DiskProgress {
  name: string;
  phase: string;
  capacityBytes: number;
  bytesDone: number;
  percent: number;
  bytesPerSecond?: number;
  etaSeconds?: number;
  imageName?: string;
}

export function diskProgress(job: any): DiskProgress[] {
  return (job?.status?.disks || []).map((d: any) => ({
    name:           d.name,
    phase:          d.phase || 'Pending',
    capacityBytes:  d.capacityBytes || 0,
    bytesDone:      d.bytesDone || 0,
    percent:        d.phase === 'Imported' ? 100 : percent(d.bytesDone, d.capacityBytes),
    bytesPerSecond: d.bytesPerSecond ?? undefined,
    etaSeconds:     d.etaSeconds ?? undefined,
    imageName:      d.imageName,
  }));
}

// All disks together.
export function jobPercent(job: any): number {
  if (phaseOf(job) === 'Succeeded') {
    return 100;
  }
  const disks = diskProgress(job);

  return percent(disks.reduce((a, d) => a + d.bytesDone, 0), disks.reduce((a, d) => a + d.capacityBytes, 0));
}

export function readyCondition(job: any): any {
  return (job?.status?.conditions || []).find((c: any) => c.type === 'Ready');
}

// What the delete confirmation says happens, as l10n keys with arguments, in order.
export function deleteConsequences(job: any): { key: string, args?: Record<string, any> }[] {
  const phase = phaseOf(job);
  const vm = job?.spec?.vmName;
  const target = job?.status?.targetName || job?.spec?.targetName;
  const out: { key: string, args?: Record<string, any> }[] = [];

  if (job?.status?.sourceVm?.poweredOffByJob) {
    out.push({ key: 'vmMigration.jobs.remove.sourceStaysOff', args: { vm } });
  } else {
    out.push({ key: 'vmMigration.jobs.remove.sourceUntouched', args: { vm } });
  }
  if (phase === 'Succeeded') {
    out.push({ key: 'vmMigration.jobs.remove.vmKept', args: { target } });
  } else {
    if (!isFinished(job)) {
      out.push({ key: 'vmMigration.jobs.remove.transferStops' });
    }
    out.push({ key: 'vmMigration.jobs.remove.imagesRemoved' });
  }

  return out;
}
