//! A local replica of the vSphere objects the provider watches, in plain Rust
//! types (no vim_rs types), and the pure mapping from it to the inventory
//! specs. Property values arrive per object and path (from RetrievePropertiesEx
//! or WaitForUpdatesEx, see `convert`); the specs are derived from the replica,
//! so paths, host names and NIC network names need no call per VM. The replica
//! holds only what the mapping reads: the watched paths (by their static
//! names) and the devices that are disks or NICs, each disk with its
//! controller's kind.

use std::collections::{BTreeMap, BTreeSet};

use vmm_api::inventory::{
    Disk, Firmware, NetworkKind, NetworkSpec, Nic, PowerState, VirtualMachineSpec,
};
use vmm_wire::vsphere::unescape_name;

use super::disks::datastore_of_file;

/// The managed object types the provider reads, as vSphere names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ObjKind {
    VirtualMachine,
    Network,
    DistributedVirtualPortgroup,
    OpaqueNetwork,
    Folder,
    Datacenter,
    VirtualApp,
    HostSystem,
    DistributedVirtualSwitch,
    Datastore,
}

impl ObjKind {
    pub(crate) fn from_type_name(name: &str) -> Option<Self> {
        Some(match name {
            "VirtualMachine" => Self::VirtualMachine,
            "Network" => Self::Network,
            "DistributedVirtualPortgroup" => Self::DistributedVirtualPortgroup,
            "OpaqueNetwork" => Self::OpaqueNetwork,
            "Folder" => Self::Folder,
            "Datacenter" => Self::Datacenter,
            "VirtualApp" => Self::VirtualApp,
            "HostSystem" => Self::HostSystem,
            "DistributedVirtualSwitch" | "VmwareDistributedVirtualSwitch" => {
                Self::DistributedVirtualSwitch
            }
            "Datastore" => Self::Datastore,
            _ => return None,
        })
    }

    fn is_network(self) -> bool {
        matches!(
            self,
            Self::Network | Self::DistributedVirtualPortgroup | Self::OpaqueNetwork
        )
    }
}

/// One property value, reduced to what the mapping needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
    /// The value (id) of a managed object reference.
    Ref(String),
    Power(PowerState),
    Devices(Vec<Device>),
    /// A VM's snapshot tree, counted.
    SnapshotCount(i32),
    /// A DVPG's default port config, reduced to its VLAN.
    Vlan(Option<i32>),
    /// An opaque network's summary, reduced to its id.
    OpaqueId(String),
    /// A managed entity's system tags (`tag`), by key.
    Tags(Vec<String>),
    /// Anything the mapping does not read.
    Other,
}

/// One virtual device, reduced.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Device {
    Disk {
        label: String,
        capacity_bytes: i64,
        /// The kind of its controller (see [`controller_kind`]).
        controller: Option<&'static str>,
        file: Option<String>,
        datastore: Option<String>,
        raw_device: bool,
        independent: bool,
    },
    Nic {
        label: String,
        model: String,
        mac: Option<String>,
        backing: NicBacking,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NicBacking {
    /// A standard port group: the network's ref and the name vSphere put in the backing.
    Network {
        network: Option<String>,
        device_name: String,
    },
    /// A distributed port group, by its key.
    Distributed {
        portgroup_key: Option<String>,
    },
    Opaque {
        id: String,
    },
    Unknown,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Object {
    pub kind: ObjKind,
    /// By path as [`PROPERTY_PATHS`] spells it: a handful each, so a list.
    props: Vec<(&'static str, Value)>,
}

impl Object {
    fn new(kind: ObjKind) -> Self {
        Self {
            kind,
            props: Vec::new(),
        }
    }
    fn prop(&self, path: &str) -> Option<&Value> {
        self.props.iter().find(|(p, _)| *p == path).map(|(_, v)| v)
    }
    fn set(&mut self, path: &'static str, value: Option<Value>) {
        let at = self.props.iter().position(|(p, _)| *p == path);
        match (at, value) {
            (Some(i), Some(v)) => self.props[i].1 = v,
            (None, Some(v)) => self.props.push((path, v)),
            (Some(i), None) => {
                self.props.swap_remove(i);
            }
            (None, None) => {}
        }
    }
    fn text(&self, path: &str) -> Option<&str> {
        match self.prop(path) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }
    fn reference(&self, path: &str) -> Option<&str> {
        match self.prop(path) {
            Some(Value::Ref(s)) => Some(s),
            _ => None,
        }
    }
    fn int(&self, path: &str) -> Option<i64> {
        match self.prop(path) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
    fn boolean(&self, path: &str) -> Option<bool> {
        match self.prop(path) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    fn name(&self) -> Option<&str> {
        self.text("name")
    }
}

/// The property paths read per type: few, and leaves where vSphere allows it,
/// so updates stay small. (vcsim only reports changes of paths its code
/// publishes; power operations publish `runtime.powerState` and
/// `config.hardware.device`, which are both here.)
pub(crate) const PROPERTY_PATHS: &[(&str, &[&str])] = &[
    (
        "VirtualMachine",
        &[
            "name",
            "parent",
            "parentVApp",
            "runtime.powerState",
            "runtime.host",
            "config.template",
            "config.instanceUuid",
            "config.hardware.numCPU",
            "config.hardware.numCoresPerSocket",
            "config.hardware.memoryMB",
            "config.hardware.device",
            "config.firmware",
            "config.bootOptions.efiSecureBootEnabled",
            "config.guestId",
            "snapshot",
        ],
    ),
    ("Network", &["name"]),
    (
        "DistributedVirtualPortgroup",
        &[
            "name",
            "key",
            "config.distributedVirtualSwitch",
            "config.defaultPortConfig",
            "config.uplink",
            "tag",
        ],
    ),
    ("OpaqueNetwork", &["name", "summary"]),
    ("Folder", &["name", "parent"]),
    ("Datacenter", &["name", "parent"]),
    ("VirtualApp", &["name", "parentFolder", "parentVApp"]),
    ("HostSystem", &["name"]),
    ("VmwareDistributedVirtualSwitch", &["name"]),
    ("DistributedVirtualSwitch", &["name"]),
    ("Datastore", &["name"]),
];

/// `path` as [`PROPERTY_PATHS`] spells it, or `None` for a path not read.
fn watched_path(path: &str) -> Option<&'static str> {
    PROPERTY_PATHS
        .iter()
        .flat_map(|(_, paths)| paths.iter())
        .find(|p| **p == path)
        .copied()
}

/// All watched objects, by managed object id (unique within a vCenter).
#[derive(Clone, Debug, Default)]
pub(crate) struct ObjectCache {
    objects: BTreeMap<String, Object>,
}

/// What an update touched, so only affected specs are recomputed.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    /// Objects whose own specs may have changed (VMs, networks).
    pub ids: BTreeSet<String>,
    /// Something many specs depend on changed (a folder, host, switch,
    /// datastore or a network's name): recompute all.
    pub all: bool,
}

impl ObjectCache {
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// An object entered (or is seen for the first time).
    pub fn enter(&mut self, id: &str, kind: ObjKind, dirty: &mut Dirty) {
        self.objects
            .entry(id.to_owned())
            .or_insert_with(|| Object::new(kind));
        mark(kind, id, false, dirty);
    }

    /// Sets (or with `None`, clears) one property; paths not watched are
    /// not kept.
    pub fn set(
        &mut self,
        id: &str,
        kind: ObjKind,
        path: &str,
        value: Option<Value>,
        dirty: &mut Dirty,
    ) {
        let Some(path) = watched_path(path) else {
            return;
        };
        self.objects
            .entry(id.to_owned())
            .or_insert_with(|| Object::new(kind))
            .set(path, value);
        let fans_out = kind.is_network() && (path == "name" || path == "key");
        mark(kind, id, fans_out, dirty);
    }

    pub fn leave(&mut self, id: &str, dirty: &mut Dirty) {
        if let Some(obj) = self.objects.remove(id) {
            mark(obj.kind, id, obj.kind.is_network(), dirty);
        }
    }

    pub fn kind(&self, id: &str) -> Option<ObjKind> {
        self.objects.get(id).map(|o| o.kind)
    }

    pub fn vm_ids(&self) -> impl Iterator<Item = &str> {
        self.ids_of(|k| k == ObjKind::VirtualMachine)
    }

    pub fn network_ids(&self) -> impl Iterator<Item = &str> {
        self.ids_of(ObjKind::is_network)
    }

    fn ids_of(&self, f: impl Fn(ObjKind) -> bool) -> impl Iterator<Item = &str> {
        self.objects
            .iter()
            .filter(move |(_, o)| f(o.kind))
            .map(|(id, _)| id.as_str())
    }

    /// All VMs (templates skipped), sorted by id.
    pub fn vms(&self) -> Vec<VirtualMachineSpec> {
        self.vm_ids().filter_map(|id| self.vm_spec(id)).collect()
    }

    /// All networks, sorted by id.
    pub fn networks(&self) -> Vec<NetworkSpec> {
        self.network_ids()
            .filter_map(|id| self.network_spec(id))
            .collect()
    }

    /// The spec of a VM, or `None` if it is not (or no longer) a VM to import:
    /// unknown, a template, or not yet named.
    pub fn vm_spec(&self, id: &str) -> Option<VirtualMachineSpec> {
        let vm = self.objects.get(id)?;
        if vm.kind != ObjKind::VirtualMachine || vm.boolean("config.template") == Some(true) {
            return None;
        }
        let name = vm.name()?;
        let devices: &[Device] = match vm.prop("config.hardware.device") {
            Some(Value::Devices(d)) => d,
            _ => &[],
        };
        let disks = devices
            .iter()
            .filter_map(|d| match d {
                Device::Disk {
                    label,
                    capacity_bytes,
                    controller,
                    file,
                    datastore,
                    raw_device,
                    independent,
                } => Some(Disk {
                    name: label.clone(),
                    capacity_bytes: *capacity_bytes,
                    datastore: datastore
                        .as_deref()
                        .and_then(|ds| self.display_name(ds))
                        .or_else(|| file.as_deref().and_then(datastore_of_file)),
                    file: file.clone(),
                    controller: controller.map(str::to_owned),
                    raw_device: *raw_device,
                    independent: *independent,
                    ..Default::default()
                }),
                _ => None,
            })
            .collect();
        let nics = devices
            .iter()
            .filter_map(|d| match d {
                Device::Nic {
                    label,
                    model,
                    mac,
                    backing,
                } => Some(Nic {
                    name: label.clone(),
                    network: self.nic_network(backing),
                    mac_address: mac.clone(),
                    model: Some(model.clone()),
                    ..Nic::default()
                }),
                _ => None,
            })
            .collect();
        let cpus = vm.int("config.hardware.numCPU").unwrap_or(0);
        Some(VirtualMachineSpec {
            source: None,
            id: id.to_owned(),
            display_name: unescape_name(name),
            path: self.path(id),
            uuid: vm.text("config.instanceUuid").map(str::to_owned),
            power_state: match vm.prop("runtime.powerState") {
                Some(Value::Power(p)) => *p,
                _ => PowerState::Unknown,
            },
            cpus: clamp_i32(cpus),
            cores_per_socket: vm
                .int("config.hardware.numCoresPerSocket")
                .filter(|c| *c > 0)
                .map(clamp_i32),
            memory_mib: vm.int("config.hardware.memoryMB").unwrap_or(0),
            firmware: match vm.text("config.firmware") {
                Some(f) if f.eq_ignore_ascii_case("efi") => Firmware::Efi,
                _ => Firmware::Bios,
            },
            secure_boot: vm
                .boolean("config.bootOptions.efiSecureBootEnabled")
                .unwrap_or(false),
            guest_os: vm.text("config.guestId").map(str::to_owned),
            host: vm
                .reference("runtime.host")
                .and_then(|h| self.display_name(h)),
            zone: None,
            flavor: None,
            fault: None,
            disks,
            nics,
            snapshots: match vm.prop("snapshot") {
                Some(Value::SnapshotCount(n)) => *n,
                _ => 0,
            },
            ..VirtualMachineSpec::default()
        })
    }

    pub fn network_spec(&self, id: &str) -> Option<NetworkSpec> {
        let net = self.objects.get(id)?;
        let name = net.name()?;
        let (kind, vlan, switch) = match net.kind {
            ObjKind::Network => (NetworkKind::StandardPortgroup, None, None),
            // A switch's uplink port group carries no VM traffic: not a network to map.
            ObjKind::DistributedVirtualPortgroup if is_uplink(net) => return None,
            ObjKind::DistributedVirtualPortgroup => (
                NetworkKind::DistributedPortgroup,
                match net.prop("config.defaultPortConfig") {
                    Some(Value::Vlan(v)) => *v,
                    _ => None,
                },
                net.reference("config.distributedVirtualSwitch")
                    .and_then(|s| self.display_name(s)),
            ),
            ObjKind::OpaqueNetwork => (NetworkKind::Opaque, None, None),
            _ => return None,
        };
        Some(NetworkSpec {
            source: None,
            id: id.to_owned(),
            display_name: unescape_name(name),
            kind,
            vlan,
            switch,
        })
    }

    fn display_name(&self, id: &str) -> Option<String> {
        self.objects.get(id)?.name().map(unescape_name)
    }

    fn nic_network(&self, backing: &NicBacking) -> Option<String> {
        match backing {
            NicBacking::Network {
                network,
                device_name,
            } => network
                .as_deref()
                .and_then(|n| self.display_name(n))
                .or_else(|| (!device_name.is_empty()).then(|| unescape_name(device_name))),
            NicBacking::Distributed { portgroup_key } => {
                let key = portgroup_key.as_deref()?;
                self.objects
                    .iter()
                    .find(|(id, o)| {
                        o.kind == ObjKind::DistributedVirtualPortgroup
                            && (o.text("key") == Some(key)
                                || (o.text("key").is_none() && id.as_str() == key))
                    })
                    .and_then(|(_, o)| o.name().map(unescape_name))
            }
            NicBacking::Opaque { id } => self
                .objects
                .values()
                .find(|o| {
                    o.kind == ObjKind::OpaqueNetwork
                        && matches!(o.prop("summary"), Some(Value::OpaqueId(x)) if x == id)
                })
                .and_then(|o| o.name().map(unescape_name)),
            NicBacking::Unknown => None,
        }
    }

    /// The inventory path, from the parent chain: `/DC0/vm/folder/name`. The
    /// root folder is not watched, so the walk ends there. Names stay as
    /// vSphere escapes them (`%2f` for `/`), as in govc paths.
    pub fn path(&self, id: &str) -> Option<String> {
        let mut parts = Vec::new();
        let mut current = Some(id);
        let mut depth = 0;
        while let Some(cur) = current {
            let Some(obj) = self.objects.get(cur) else {
                break;
            };
            parts.push(obj.name()?.to_owned());
            depth += 1;
            if depth > 64 {
                return None;
            }
            current = match obj.kind {
                ObjKind::VirtualMachine => obj
                    .reference("parent")
                    .or_else(|| obj.reference("parentVApp")),
                ObjKind::VirtualApp => obj
                    .reference("parentVApp")
                    .or_else(|| obj.reference("parentFolder")),
                _ => obj.reference("parent"),
            };
        }
        if parts.len() < 2 {
            return None;
        }
        parts.reverse();
        Some(format!("/{}", parts.join("/")))
    }
}

/// vCenter marks uplink port groups with `config.uplink` and the system tag
/// `SYSTEM/DVS.UPLINKPG`. vcsim sets neither and names them
/// `<dvs>-DVUplinks-<n>` (as vCenter does), so without `config.uplink` the
/// name decides.
fn is_uplink(pg: &Object) -> bool {
    let tagged = matches!(pg.prop("tag"),
        Some(Value::Tags(t)) if t.iter().any(|k| k == "SYSTEM/DVS.UPLINKPG"));
    match pg.boolean("config.uplink") {
        Some(uplink) => uplink || tagged,
        None => tagged || pg.name().is_some_and(|n| n.contains("-DVUplinks-")),
    }
}

fn mark(kind: ObjKind, id: &str, fans_out: bool, dirty: &mut Dirty) {
    match kind {
        ObjKind::VirtualMachine => {
            dirty.ids.insert(id.to_owned());
        }
        k if k.is_network() => {
            dirty.ids.insert(id.to_owned());
            if fans_out {
                dirty.all = true;
            }
        }
        _ => dirty.all = true,
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The model name of a NIC from its vSphere type: `VirtualVmxnet3` → `vmxnet3`.
pub(crate) fn nic_model(type_name: &str) -> String {
    match type_name {
        "VirtualSriovEthernetCard" => "sriov".to_owned(),
        other => other
            .strip_prefix("Virtual")
            .unwrap_or(other)
            .to_ascii_lowercase(),
    }
}

/// The controller kind of a disk controller's vSphere type, or `None` for
/// devices that are not disk controllers.
pub(crate) fn controller_kind(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "ParaVirtualSCSIController" => "pvscsi",
        "VirtualLsiLogicController" => "lsilogic",
        "VirtualLsiLogicSASController" => "lsilogic-sas",
        "VirtualBusLogicController" => "buslogic",
        "VirtualIDEController" => "ide",
        "VirtualAHCIController" | "VirtualSATAController" => "sata",
        "VirtualNVMEController" => "nvme",
        "VirtualSCSIController" => "scsi",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(store: &mut ObjectCache, id: &str, kind: ObjKind, path: &str, v: Value) {
        store.set(id, kind, path, Some(v), &mut Dirty::default());
    }

    fn sample() -> ObjectCache {
        use ObjKind::*;
        let mut s = ObjectCache::default();
        set(
            &mut s,
            "datacenter-2",
            Datacenter,
            "name",
            Value::Text("DC0".into()),
        );
        set(
            &mut s,
            "datacenter-2",
            Datacenter,
            "parent",
            Value::Ref("group-d1".into()),
        );
        set(&mut s, "group-v3", Folder, "name", Value::Text("vm".into()));
        set(
            &mut s,
            "group-v3",
            Folder,
            "parent",
            Value::Ref("datacenter-2".into()),
        );
        set(
            &mut s,
            "group-v9",
            Folder,
            "name",
            Value::Text("prod%2fweb".into()),
        );
        set(
            &mut s,
            "group-v9",
            Folder,
            "parent",
            Value::Ref("group-v3".into()),
        );
        set(
            &mut s,
            "host-7",
            HostSystem,
            "name",
            Value::Text("esx-1".into()),
        );
        set(
            &mut s,
            "dvs-5",
            DistributedVirtualSwitch,
            "name",
            Value::Text("DVS0".into()),
        );
        set(
            &mut s,
            "datastore-4",
            Datastore,
            "name",
            Value::Text("LocalDS_0".into()),
        );
        set(
            &mut s,
            "network-6",
            Network,
            "name",
            Value::Text("VM Network".into()),
        );
        set(
            &mut s,
            "dvportgroup-8",
            DistributedVirtualPortgroup,
            "name",
            Value::Text("DC0_DVPG0".into()),
        );
        set(
            &mut s,
            "dvportgroup-8",
            DistributedVirtualPortgroup,
            "key",
            Value::Text("dvportgroup-8".into()),
        );
        set(
            &mut s,
            "dvportgroup-8",
            DistributedVirtualPortgroup,
            "config.distributedVirtualSwitch",
            Value::Ref("dvs-5".into()),
        );
        set(
            &mut s,
            "dvportgroup-8",
            DistributedVirtualPortgroup,
            "config.defaultPortConfig",
            Value::Vlan(Some(42)),
        );
        let vm = "vm-42";
        set(
            &mut s,
            vm,
            VirtualMachine,
            "name",
            Value::Text("Web 01".into()),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "parent",
            Value::Ref("group-v9".into()),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "runtime.powerState",
            Value::Power(PowerState::On),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "runtime.host",
            Value::Ref("host-7".into()),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "config.template",
            Value::Bool(false),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "config.hardware.numCPU",
            Value::Int(4),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "config.hardware.numCoresPerSocket",
            Value::Int(2),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "config.hardware.memoryMB",
            Value::Int(8192),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "config.firmware",
            Value::Text("efi".into()),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "config.bootOptions.efiSecureBootEnabled",
            Value::Bool(true),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "snapshot",
            Value::SnapshotCount(3),
        );
        set(
            &mut s,
            vm,
            VirtualMachine,
            "config.hardware.device",
            Value::Devices(vec![
                Device::Disk {
                    label: "Hard disk 1".into(),
                    capacity_bytes: 10 << 30,
                    controller: Some("pvscsi"),
                    file: Some("[LocalDS_0] web/web.vmdk".into()),
                    datastore: Some("datastore-4".into()),
                    raw_device: false,
                    independent: false,
                },
                Device::Disk {
                    label: "Hard disk 2".into(),
                    capacity_bytes: 1 << 30,
                    controller: Some("pvscsi"),
                    file: Some("[SAN_1] web/rdm.vmdk".into()),
                    datastore: None,
                    raw_device: true,
                    independent: true,
                },
                Device::Nic {
                    label: "Network adapter 1".into(),
                    model: "vmxnet3".into(),
                    mac: Some("00:50:56:aa:bb:cc".into()),
                    backing: NicBacking::Distributed {
                        portgroup_key: Some("dvportgroup-8".into()),
                    },
                },
                Device::Nic {
                    label: "Network adapter 2".into(),
                    model: "e1000e".into(),
                    mac: None,
                    backing: NicBacking::Network {
                        network: Some("network-6".into()),
                        device_name: "stale".into(),
                    },
                },
            ]),
        );
        s
    }

    #[test]
    fn maps_a_vm() {
        let spec = sample().vm_spec("vm-42").unwrap();
        assert_eq!(spec.display_name, "Web 01");
        assert_eq!(spec.path.as_deref(), Some("/DC0/vm/prod%2fweb/Web 01"));
        assert_eq!(spec.power_state, PowerState::On);
        assert_eq!(
            (spec.cpus, spec.cores_per_socket, spec.memory_mib),
            (4, Some(2), 8192)
        );
        assert_eq!((spec.firmware, spec.secure_boot), (Firmware::Efi, true));
        assert_eq!(spec.host.as_deref(), Some("esx-1"));
        assert_eq!(spec.snapshots, 3);
        assert_eq!(spec.disks.len(), 2);
        assert_eq!(spec.disks[0].datastore.as_deref(), Some("LocalDS_0"));
        assert_eq!(spec.disks[0].controller.as_deref(), Some("pvscsi"));
        assert_eq!(spec.disks[1].datastore.as_deref(), Some("SAN_1"));
        assert!(spec.disks[1].raw_device && spec.disks[1].independent);
        let nets: Vec<_> = spec.nics.iter().map(|n| n.network.as_deref()).collect();
        assert_eq!(nets, [Some("DC0_DVPG0"), Some("VM Network")]);
        assert_eq!(spec.nics[0].model.as_deref(), Some("vmxnet3"));
    }

    #[test]
    fn maps_networks() {
        let nets = sample().networks();
        assert_eq!(nets.len(), 2);
        let dvpg = nets.iter().find(|n| n.id == "dvportgroup-8").unwrap();
        assert_eq!(dvpg.kind, NetworkKind::DistributedPortgroup);
        assert_eq!(
            (dvpg.vlan, dvpg.switch.as_deref()),
            (Some(42), Some("DVS0"))
        );
        let std = nets.iter().find(|n| n.id == "network-6").unwrap();
        assert_eq!(std.kind, NetworkKind::StandardPortgroup);
    }

    #[test]
    fn uplink_portgroups_are_not_networks() {
        use ObjKind::DistributedVirtualPortgroup as Pg;
        let mut s = sample();
        set(
            &mut s,
            "dvportgroup-9",
            Pg,
            "name",
            Value::Text("DVS0-DVUplinks-7".into()),
        );
        assert!(s.network_spec("dvportgroup-9").is_none(), "vcsim's naming");
        set(
            &mut s,
            "dvportgroup-9",
            Pg,
            "config.uplink",
            Value::Bool(false),
        );
        assert!(
            s.network_spec("dvportgroup-9").is_some(),
            "vCenter says it is not"
        );
        set(
            &mut s,
            "dvportgroup-9",
            Pg,
            "tag",
            Value::Tags(vec!["SYSTEM/DVS.UPLINKPG".into()]),
        );
        assert!(s.network_spec("dvportgroup-9").is_none());
    }

    #[test]
    fn templates_are_not_vms() {
        let mut s = sample();
        set(
            &mut s,
            "vm-42",
            ObjKind::VirtualMachine,
            "config.template",
            Value::Bool(true),
        );
        assert!(s.vm_spec("vm-42").is_none());
        assert!(s.vms().is_empty());
    }

    #[test]
    fn dirty_tracking() {
        let mut s = sample();
        let mut d = Dirty::default();
        s.set(
            "vm-42",
            ObjKind::VirtualMachine,
            "runtime.powerState",
            Some(Value::Power(PowerState::Off)),
            &mut d,
        );
        assert!(!d.all && d.ids.contains("vm-42"));
        let mut d = Dirty::default();
        s.set(
            "group-v9",
            ObjKind::Folder,
            "name",
            Some(Value::Text("x".into())),
            &mut d,
        );
        assert!(d.all);
        let mut d = Dirty::default();
        s.leave("vm-42", &mut d);
        assert!(d.ids.contains("vm-42"));
        assert!(s.vm_spec("vm-42").is_none());
    }

    #[test]
    fn names_and_models() {
        assert_eq!(nic_model("VirtualVmxnet3"), "vmxnet3");
        assert_eq!(nic_model("VirtualE1000e"), "e1000e");
        assert_eq!(controller_kind("ParaVirtualSCSIController"), Some("pvscsi"));
        assert_eq!(controller_kind("VirtualPCIController"), None);
    }
}
