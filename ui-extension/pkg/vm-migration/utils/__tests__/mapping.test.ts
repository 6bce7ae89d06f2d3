import {
  sourceNetworks, nadVlan, suggestedNad, vlanMatches, unmapped, destination, defaultTargetNames, duplicateTargets, importJobs
} from '../mapping';

function vm(name: string, displayName: string, networks: string[], extra: any = {}) {
  return {
    metadata: { namespace: 'team-a', name },
    spec:     {
      displayName, source: { kind: 'Vsphere', name: 'vc' }, nics: networks.map((network, i) => ({ name: `Network adapter ${ i + 1 }`, network })), ...extra
    },
  };
}

function nad(namespace: string, name: string, config: any) {
  return { metadata: { namespace, name }, spec: { config: JSON.stringify(config) } };
}

const web = vm('vc-vm-1', 'Web 01', ['VM Network', 'DC0_DVPG0'], { path: '/DC0/vm/Web 01' });
const db = vm('vc-vm-2', 'Ünïcödé-VM €', ['VM Network']);
const inventoryNetworks = [
  { metadata: { namespace: 'team-a' }, spec: { displayName: 'VM Network', source: { name: 'vc' }, vlan: 10 } },
  { metadata: { namespace: 'other' }, spec: { displayName: 'DC0_DVPG0', source: { name: 'vc' }, vlan: 99 } },
];
const nads = [
  nad('team-a', 'vlan-a', { type: 'bridge', vlan: 10 }),
  nad('default', 'vlan-b', { type: 'bridge', vlan: 20 }),
  nad('default', 'untagged', { type: 'bridge' }),
  nad('default', 'overlay', { type: 'kube-ovn' }),
];

describe('source networks', () => {
  it('are the chosen VMs\' networks, once each, with the VLAN of the same source and namespace', () => {
    expect(sourceNetworks([web, db], inventoryNetworks)).toEqual([
      { name: 'DC0_DVPG0', vlan: undefined, vms: ['Web 01'] },
      { name: 'VM Network', vlan: 10, vms: ['Web 01', 'Ünïcödé-VM €'] },
    ]);
  });
});

describe('NAD VLANs', () => {
  it('are read from the bridge CNI config', () => {
    expect(nads.map(nadVlan)).toEqual([10, 20, 0, undefined]);
    expect(nadVlan({ spec: { config: 'not json' } })).toBeUndefined();
  });

  it('hint at, and preselect, the one NAD on the source network\'s VLAN', () => {
    const [, vmNetwork] = sourceNetworks([web], inventoryNetworks);

    expect(nads.map((n) => vlanMatches(vmNetwork, n))).toEqual([true, false, false, false]);
    expect(suggestedNad(vmNetwork, nads)).toBe('team-a/vlan-a');
    expect(suggestedNad({ name: 'x', vlan: 10, vms: [] }, [...nads, nad('b', 'second', { type: 'bridge', vlan: 10 })])).toBeUndefined();
    expect(suggestedNad({ name: 'x', vms: [] }, nads)).toBeUndefined();
  });
});

describe('mapping', () => {
  it('lists what is not mapped yet', () => {
    const networks = sourceNetworks([web, db], inventoryNetworks);

    expect(unmapped(networks, {})).toEqual(['DC0_DVPG0', 'VM Network']);
    expect(unmapped(networks, { 'VM Network': 'team-a/vlan-a' })).toEqual(['DC0_DVPG0']);
    expect(unmapped(networks, { 'VM Network': 'team-a/vlan-a', DC0_DVPG0: 'default/vlan-b' })).toEqual([]);
  });

  it('names a NAD of the job\'s namespace by name only', () => {
    expect(destination('team-a/vlan-a', 'team-a')).toBe('vlan-a');
    expect(destination('default/vlan-b', 'team-a')).toBe('default/vlan-b');
  });
});

describe('target names', () => {
  it('default to the name the controller derives', () => {
    expect(defaultTargetNames([web, db])).toEqual({ 'team-a/vc-vm-1': 'web-01', 'team-a/vc-vm-2': 'unicode-vm-eur' });
  });

  it('must differ within a namespace', () => {
    expect(duplicateTargets([web, db], { 'team-a/vc-vm-1': 'same', 'team-a/vc-vm-2': 'same' })).toEqual(['same']);
    expect(duplicateTargets([web, db], defaultTargetNames([web, db]))).toEqual([]);
  });
});

describe('importJobs', () => {
  it('makes one job per VM with its mapping, names, storage class and power state', () => {
    const jobs = importJobs({
      vms:          [web, db],
      mapping:      { 'VM Network': 'team-a/vlan-a', DC0_DVPG0: 'default/vlan-b' },
      storageClass: 'longhorn',
      targetNames:  { 'team-a/vc-vm-1': 'web-01', 'team-a/vc-vm-2': 'db' },
      powerOn:      false,
    });

    expect(jobs).toEqual([
      {
        apiVersion: 'importjob.harvesterhci.io/v1',
        kind:       'VirtualMachine',
        type:       'importjob.harvesterhci.io.virtualmachine',
        metadata:   { name: 'web-01', namespace: 'team-a' },
        spec:       {
          sourceCluster: { kind: 'Vsphere', name: 'vc' },
          vmName:        'Web 01',
          path:          '/DC0/vm/Web 01',
          targetName:    'web-01',
          mapping:       [
            { sourceNetwork: 'DC0_DVPG0', destinationNetwork: 'default/vlan-b' },
            { sourceNetwork: 'VM Network', destinationNetwork: 'vlan-a' },
          ],
          storageClass: 'longhorn',
          powerOn:      false,
        },
      },
      {
        apiVersion: 'importjob.harvesterhci.io/v1',
        kind:       'VirtualMachine',
        type:       'importjob.harvesterhci.io.virtualmachine',
        metadata:   { name: 'db', namespace: 'team-a' },
        spec:       {
          sourceCluster: { kind: 'Vsphere', name: 'vc' },
          vmName:        'Ünïcödé-VM €',
          targetName:    'db',
          mapping:       [{ sourceNetwork: 'VM Network', destinationNetwork: 'vlan-a' }],
          storageClass:  'longhorn',
          powerOn:       false,
        },
      },
    ]);
  });

  it('leaves the storage class to the controller when none is picked', () => {
    const [job] = importJobs({
      vms: [db], mapping: { 'VM Network': 'team-a/vlan-a' }, storageClass: '', targetNames: defaultTargetNames([db]), powerOn: true
    });

    expect(job.spec.storageClass).toBeUndefined();
    expect(job.spec.powerOn).toBe(true);
  });
});
