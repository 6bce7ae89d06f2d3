// The inventory browser: its columns are the server's Table columns (steve keeps
// each row's cells in metadata.fields), and its filters become steve's `filter`
// parameters on those cells, so a keystroke fetches one page, never the whole
// inventory (docs/decisions.md, "The inventory browser at 10,000 VMs").
import { PaginationParamFilter, PaginationFilterField } from '@shell/types/store/pagination.types';

// Table column names of inventory VMs (apiserver/src/table.rs).
export const COLUMN = {
  NAME:         'Name',
  DISPLAY_NAME: 'Display Name',
  POWER:        'Power',
  GUEST_OS:     'Guest OS',
  SOURCE:       'Source',
  CONCERNS:     'Concerns',
  PATH:         'Path',
} as const;

// The `equality` values of the shell's PaginationFilterEquality (a const enum,
// which does not survive per-file compilation).
const EQUALS = '=';
const NOT_EQUALS = '!=';
const CONTAINS = '~';

export interface InventoryFilters {
  search: string;
  source: string;
  power: string;
  path: string;
  guestOs: string;
  concerns: '' | 'with' | 'without';
}

export function noFilters(): InventoryFilters {
  return {
    search: '', source: '', power: '', path: '', guestOs: '', concerns: ''
  };
}

// `metadata.fields.<i>` of the column named `name` (the path the shell's table and
// pagination use), or undefined when the server has no such column.
export function columnField(schema: any, name: string): string | undefined {
  const columns: any[] = schema?.attributes?.columns || [];
  const index = columns.findIndex((c) => c.name === name);

  return index < 0 ? undefined : `metadata.fields.${ index }`;
}

function field(schema: any, name: string): string {
  const path = columnField(schema, name);

  if (!path) {
    throw new Error(`the server's Table of ${ schema?.id } has no column ${ name }`);
  }

  return path;
}

// The filters as steve `filter` parameters: each one ANDed, the search ORed over
// the VM's name and display name.
export function paginationFilters(schema: any, filters: InventoryFilters): PaginationParamFilter[] {
  const out: PaginationParamFilter[] = [];
  const one = (name: string, value: string, equality: string) => out.push(new PaginationParamFilter({
    fields: [new PaginationFilterField({ field: field(schema, name), value, equality: equality as any })]
  }));
  const search = filters.search.trim();

  if (search) {
    out.push(new PaginationParamFilter({
      fields: [COLUMN.DISPLAY_NAME, COLUMN.NAME].map((name) => new PaginationFilterField({
        field: field(schema, name), value: search, equality: CONTAINS as any
      }))
    }));
  }
  if (filters.source) {
    one(COLUMN.SOURCE, filters.source, EQUALS);
  }
  if (filters.power) {
    one(COLUMN.POWER, filters.power, EQUALS);
  }
  if (filters.path.trim()) {
    one(COLUMN.PATH, filters.path.trim(), CONTAINS);
  }
  if (filters.guestOs.trim()) {
    one(COLUMN.GUEST_OS, filters.guestOs.trim(), CONTAINS);
  }
  if (filters.concerns) {
    one(COLUMN.CONCERNS, '0', filters.concerns === 'with' ? NOT_EQUALS : EQUALS);
  }

  return out;
}

// The same filters on a VM held in the browser (when the cluster's steve has no
// SQL cache and the shell lists everything).
export function matchesLocally(vm: any, filters: InventoryFilters): boolean {
  const spec = vm?.spec || {};
  const contains = (text: string | undefined, part: string) => (text || '').toLowerCase().includes(part.trim().toLowerCase());
  const concerns = (vm?.status?.concerns || []).length;

  return (!filters.search.trim() || contains(spec.displayName, filters.search) || contains(vm?.metadata?.name, filters.search)) &&
    (!filters.source || spec.source?.name === filters.source) &&
    (!filters.power || spec.powerState === filters.power) &&
    (!filters.path.trim() || contains(spec.path, filters.path)) &&
    (!filters.guestOs.trim() || contains(spec.guestOs, filters.guestOs)) &&
    (!filters.concerns || (filters.concerns === 'with' ? concerns > 0 : concerns === 0));
}

// Table headers from the server's columns: the default ones (priority 0), and
// Path, which the filters refer to.
export function headers(schema: any): any[] {
  const columns: any[] = schema?.attributes?.columns || [];

  return columns
    .map((c, i) => ({ c, i }))
    .filter(({ c }) => c.priority === 0 || c.name === COLUMN.PATH)
    .map(({ c, i }) => ({
      name:    `col-${ i }`,
      label:   c.name,
      tooltip: c.description,
      value:   `metadata.fields.${ i }`,
      sort:    [`metadata.fields.${ i }`],
      search:  false,
      formatter: c.name === COLUMN.CONCERNS ? 'VmmConcerns' : undefined,
    }));
}

// Concerns that make an import fail whatever the wizard sets (the disks no
// source can export, NICs no mapping can place); the others lose something
// (snapshots, independent disks, a swap disk) or the wizard settles them (a
// taken name gets another target name). apiserver/src/concerns.rs raises them.
export const BLOCKING_CONCERNS = [
  'NoDisks', 'RawDeviceMapping', 'EphemeralDisk', 'ContainerDisk',
  'NicWithoutNetwork', 'PodNetwork', 'NoNetworkToMapTo', 'MacAddressInUse',
];

export interface ConcernView {
  reason: string;
  message: string;
  blocking: boolean;
}

export function concernsOf(vm: any): ConcernView[] {
  return (vm?.status?.concerns || []).map((c: any) => ({
    reason: c.reason, message: c.message, blocking: BLOCKING_CONCERNS.includes(c.reason)
  }));
}

export function isBlocked(vm: any): boolean {
  return concernsOf(vm).some((c) => c.blocking);
}

// `namespace/name` ids of VMs, as the wizard's URL carries them.
export function vmIds(vms: any[]): string {
  return vms.map((vm) => `${ vm.metadata.namespace }/${ vm.metadata.name }`).join(',');
}

export function parseVmIds(query: string | undefined): { namespace: string, name: string }[] {
  return (query || '').split(',').map((id) => id.trim()).filter((id) => id.includes('/')).map((id) => {
    const [namespace, name] = id.split('/');

    return { namespace, name };
  });
}
