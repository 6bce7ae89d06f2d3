// The import wizard's rules: which source networks the chosen VMs use, which
// NetworkAttachmentDefinition each maps to (with a hint where a NAD's VLAN is
// the source network's), and the jobs it creates, one per VM.
import { targetVmName } from './names';

export interface SourceNetwork {
  // The network's name as the source shows it (what mapping[].sourceNetwork names).
  name: string;
  // VLAN id at the source (0: untagged), when the inventory knows it.
  vlan?: number;
  // Display names of the chosen VMs with a NIC on it.
  vms: string[];
}

// The networks the VMs' NICs are on, each once, with the VLAN from the
// inventory's networks of the same source.
export function sourceNetworks(vms: any[], inventoryNetworks: any[] = []): SourceNetwork[] {
  const byName = new Map<string, SourceNetwork>();

  for (const vm of vms) {
    for (const nic of vm?.spec?.nics || []) {
      if (!nic.network) {
        continue;
      }
      let entry = byName.get(nic.network);

      if (!entry) {
        const known = inventoryNetworks.find((n) => n.spec?.displayName === nic.network &&
          n.metadata?.namespace === vm.metadata?.namespace &&
          n.spec?.source?.name === vm.spec?.source?.name);

        entry = { name: nic.network, vlan: known?.spec?.vlan ?? undefined, vms: [] };
        byName.set(nic.network, entry);
      }
      if (!entry.vms.includes(vm.spec.displayName)) {
        entry.vms.push(vm.spec.displayName);
      }
    }
  }

  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

// The VLAN a NAD carries, read from its CNI config the way Harvester writes it
// (`vlan`, 0 or absent for untagged); undefined when it is no bridge VLAN network.
export function nadVlan(nad: any): number | undefined {
  try {
    const config = JSON.parse(nad?.spec?.config || '');

    if (config.type !== 'bridge') {
      return undefined;
    }

    return Number.isInteger(config.vlan) ? config.vlan : 0;
  } catch {
    return undefined;
  }
}

export function nadId(nad: any): string {
  return `${ nad.metadata.namespace }/${ nad.metadata.name }`;
}

// Whether a NAD carries the source network's VLAN.
export function vlanMatches(network: SourceNetwork, nad: any): boolean {
  return network.vlan !== undefined && nadVlan(nad) === network.vlan;
}

// The NAD to preselect: the only one that carries the network's VLAN.
export function suggestedNad(network: SourceNetwork, nads: any[]): string | undefined {
  const matching = nads.filter((nad) => vlanMatches(network, nad));

  return matching.length === 1 ? nadId(matching[0]) : undefined;
}

// Networks without a NAD yet: the wizard does not go on while there are any.
export function unmapped(networks: SourceNetwork[], mapping: Record<string, string>): string[] {
  return networks.filter((n) => !mapping[n.name]).map((n) => n.name);
}

// How a job in `namespace` names a NAD: by name in its own namespace, else
// `namespace/name`.
export function destination(nad: string, namespace: string): string {
  const [nadNamespace, name] = nad.split('/');

  return nadNamespace === namespace ? name : nad;
}

export interface ImportPlan {
  vms: any[];
  mapping: Record<string, string>;
  storageClass: string;
  targetNames: Record<string, string>;
  powerOn: boolean;
}

// Default target names, keyed by the VM's `namespace/name`.
export function defaultTargetNames(vms: any[]): Record<string, string> {
  return Object.fromEntries(vms.map((vm) => [`${ vm.metadata.namespace }/${ vm.metadata.name }`, targetVmName(vm.spec.displayName)]));
}

// Two VMs of one namespace must not get one name.
export function duplicateTargets(vms: any[], targetNames: Record<string, string>): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();

  for (const vm of vms) {
    const key = `${ vm.metadata.namespace }/${ targetNames[`${ vm.metadata.namespace }/${ vm.metadata.name }`] }`;

    if (seen.has(key)) {
      dup.add(key.split('/')[1]);
    }
    seen.add(key);
  }

  return [...dup];
}

// One import job per VM, in the VM's namespace, named after its target VM.
export function importJobs(plan: ImportPlan): any[] {
  return plan.vms.map((vm) => {
    const namespace = vm.metadata.namespace;
    const target = plan.targetNames[`${ namespace }/${ vm.metadata.name }`];
    const networks = new Set((vm.spec.nics || []).map((n: any) => n.network).filter(Boolean));
    const spec: Record<string, any> = {
      sourceCluster: { kind: vm.spec.source.kind, name: vm.spec.source.name },
      vmName:        vm.spec.displayName,
      targetName:    target,
      mapping:       [...networks].sort().map((network: any) => ({
        sourceNetwork: network, destinationNetwork: destination(plan.mapping[network], namespace)
      })),
      powerOn: plan.powerOn,
    };

    // The VM's own inventory path: a job finds the VM by name within the path
    // given, so this picks exactly this VM when another one has the same name.
    if (vm.spec.path) {
      spec.path = vm.spec.path;
    }
    if (plan.storageClass) {
      spec.storageClass = plan.storageClass;
    }

    return {
      apiVersion: 'importjob.harvesterhci.io/v1',
      kind:       'VirtualMachine',
      type:       'importjob.harvesterhci.io.virtualmachine',
      metadata:   { name: target, namespace },
      spec,
    };
  });
}
