import {
  columnField, paginationFilters, matchesLocally, headers, noFilters, concernsOf, isBlocked, vmIds, parseVmIds
} from '../inventory';
import stevePaginationUtils from '@shell/plugins/steve/steve-pagination-utils';
import { PaginationArgs } from '@shell/types/store/pagination.types';

// The columns apiserver/src/table.rs serves for inventory VMs, as steve's schema
// carries them.
const NAMES = ['Name', 'Display Name', 'Power', 'CPUs', 'Memory', 'Disks', 'Guest OS', 'Source', 'Concerns', 'Path', 'Host', 'Networks'];
const schema = {
  id:         'inventory.harvesterhci.io.virtualmachine',
  attributes: {
    columns: NAMES.map((name, i) => ({
      name, priority: i >= 9 ? 1 : 0, description: `${ name } column`, field: `$.metadata.fields[${ i }]`
    }))
  }
};

// The query string the shell's store sends to steve for these filters.
function query(filters: any): string {
  const pagination = new PaginationArgs({ page: 1, pageSize: 50, filters: paginationFilters(schema, { ...noFilters(), ...filters }) });

  return decodeURIComponent(stevePaginationUtils.createParamsForPagination({ schema: schema as any, opt: { pagination } as any }) || '');
}

describe('inventory filters', () => {
  it('finds columns by the server name', () => {
    expect(columnField(schema, 'Power')).toBe('metadata.fields.2');
    expect(columnField(schema, 'Nope')).toBeUndefined();
  });

  it('become one steve filter each, on the Table cells', () => {
    expect(query({})).toBe('page=1&pagesize=50');
    expect(query({ search: 'web' })).toBe('page=1&pagesize=50&filter=metadata.fields[1]~web,metadata.fields[0]~web');
    expect(query({ source: 'vc', power: 'Off' })).toBe('page=1&pagesize=50&filter=metadata.fields[7]=vc&filter=metadata.fields[2]=Off');
    expect(query({ path: '/DC0/vm/prod', guestOs: 'ubuntu' })).toBe('page=1&pagesize=50&filter=metadata.fields[9]~"/DC0/vm/prod"&filter=metadata.fields[6]~ubuntu');
    expect(query({ concerns: 'with' })).toBe('page=1&pagesize=50&filter=metadata.fields[8]!=0');
    expect(query({ concerns: 'without' })).toBe('page=1&pagesize=50&filter=metadata.fields[8]=0');
  });

  it('say which column is missing when the server changed', () => {
    expect(() => paginationFilters({ id: 'x', attributes: { columns: [] } }, { ...noFilters(), power: 'On' })).toThrow('has no column Power');
  });

  it('match the same VMs in the browser', () => {
    const vm = {
      metadata: { name: 'vc-vm-42' },
      spec:     {
        displayName: 'Web 01', source: { name: 'vc' }, powerState: 'Off', path: '/DC0/vm/prod/Web 01', guestOs: 'ubuntu64Guest'
      },
      status: { concerns: [{ reason: 'HasSnapshots', message: 'x' }] },
    };
    const is = (filters: any) => matchesLocally(vm, { ...noFilters(), ...filters });

    expect(is({})).toBe(true);
    expect(is({ search: 'WEB' })).toBe(true);
    expect(is({ search: 'vm-42' })).toBe(true);
    expect(is({ search: 'db' })).toBe(false);
    expect(is({ source: 'vc', power: 'Off', path: '/prod', guestOs: 'ubuntu' })).toBe(true);
    expect(is({ power: 'On' })).toBe(false);
    expect(is({ concerns: 'with' })).toBe(true);
    expect(is({ concerns: 'without' })).toBe(false);
  });
});

describe('inventory table', () => {
  it('shows the default columns and Path, sortable on the server', () => {
    const cols = headers(schema);

    expect(cols.map((h) => h.label)).toEqual(['Name', 'Display Name', 'Power', 'CPUs', 'Memory', 'Disks', 'Guest OS', 'Source', 'Concerns', 'Path']);
    expect(cols[2]).toMatchObject({ value: 'metadata.fields.2', sort: ['metadata.fields.2'], tooltip: 'Power column' });
    expect(cols[8].formatter).toBe('VmmConcerns');
  });
});

describe('concerns', () => {
  it('mark the ones no wizard setting fixes as blocking', () => {
    const vm = {
      status: {
        concerns: [
          { reason: 'HasSnapshots', message: 'only the current state is imported' },
          { reason: 'NameTaken', message: 'give the import job a spec.targetName' },
        ]
      }
    };

    expect(concernsOf(vm).map((c) => c.blocking)).toEqual([false, false]);
    expect(isBlocked(vm)).toBe(false);
    vm.status.concerns.push({ reason: 'RawDeviceMapping', message: 'copy it to a virtual disk first' });
    expect(isBlocked(vm)).toBe(true);
    expect(isBlocked({})).toBe(false);
  });

  it('block on what OpenStack and Harvester sources cannot export or map', () => {
    for (const reason of ['EphemeralDisk', 'ContainerDisk', 'PodNetwork']) {
      expect(isBlocked({ status: { concerns: [{ reason, message: 'x' }] } })).toBe(true);
    }
    for (const reason of ['SwapDisk', 'HotpluggedVolume', 'SnapshotInProgress']) {
      expect(isBlocked({ status: { concerns: [{ reason, message: 'x' }] } })).toBe(false);
    }
  });
});

describe('VM ids in the wizard URL', () => {
  it('round-trip', () => {
    const vms = [{ metadata: { namespace: 'a', name: 'vc-vm-1' } }, { metadata: { namespace: 'a', name: 'vc-vm-2' } }];

    expect(vmIds(vms)).toBe('a/vc-vm-1,a/vc-vm-2');
    expect(parseVmIds('a/vc-vm-1,a/vc-vm-2')).toEqual([{ namespace: 'a', name: 'vc-vm-1' }, { namespace: 'a', name: 'vc-vm-2' }]);
    expect(parseVmIds(undefined)).toEqual([]);
    expect(parseVmIds('garbage,,')).toEqual([]);
  });
});
