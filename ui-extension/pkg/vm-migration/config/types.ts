// Steve type ids of what the extension shows (`<group>.<kind>` lowercased, core types bare).

// The product's name, in URLs (/c/<cluster>/migration/...). No '-': the shell reads
// a route's product from its name up to the first one (c-cluster-<product>-...).
// Also the name of our CRDs' kubectl category.
export const PRODUCT = 'migration';

export const SOURCE = {
  VSPHERE:   'source.harvesterhci.io.vsphere',
  OPENSTACK: 'source.harvesterhci.io.openstack',
  HARVESTER: 'source.harvesterhci.io.harvester',
} as const;

export const SOURCE_TYPES = [SOURCE.VSPHERE, SOURCE.OPENSTACK, SOURCE.HARVESTER];

export const IMPORT_JOB = 'importjob.harvesterhci.io.virtualmachine';

export const INVENTORY = {
  VM:      'inventory.harvesterhci.io.virtualmachine',
  NETWORK: 'inventory.harvesterhci.io.network',
} as const;

export const NAD = 'k8s.cni.cncf.io.networkattachmentdefinition';
export const STORAGE_CLASS = 'storage.k8s.io.storageclass';
export const SECRET = 'secret';
export const EVENT = 'event';

// Harvester's own product and its KubeVirt VM list, where we add an entry point.
export const HARVESTER_PRODUCT = 'harvester';
export const KUBEVIRT_VM = 'kubevirt.io.virtualmachine';

// Pages of ours that are not a type's list (virtual types and their route names).
export const PAGE = {
  SOURCES: 'migration-sources',
  VMS:     'migration-vms',
  IMPORT:  'migration-import',
  JOBS:    'migration-jobs',
} as const;

// Route names of our pages (routing/index.ts).
export const ROUTE = {
  SOURCES: `c-cluster-${ PRODUCT }-sources`,
  VMS:     `c-cluster-${ PRODUCT }-vms`,
  IMPORT:  `c-cluster-${ PRODUCT }-import`,
  JOBS:    `c-cluster-${ PRODUCT }-jobs`,
} as const;
