//! `virtualmachines.inventory.harvesterhci.io` (`ivm`): a VM at a source.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use vmm_api::inventory::{self, ResourceNames, VirtualMachine};
use vmm_query::selector::FieldTable;

use super::{Column, InventoryResource, NAME, column, source_name, text};
use crate::store::{Object, Snapshot, Store};

impl InventoryResource for VirtualMachine {
    const NAMES: ResourceNames = inventory::VIRTUAL_MACHINES;

    const FIELDS: FieldTable<Self> = FieldTable::new(&[
        ("metadata.name", |vm| {
            vm.metadata.name.as_deref().map(Cow::Borrowed)
        }),
        ("metadata.namespace", |vm| {
            vm.metadata.namespace.as_deref().map(Cow::Borrowed)
        }),
        ("spec.displayName", |vm| {
            Some(Cow::Borrowed(&vm.spec.display_name))
        }),
        ("spec.powerState", |vm| text(&vm.spec.power_state)),
        ("spec.source.kind", |vm| {
            vm.spec.source.as_ref().and_then(|s| text(&s.kind))
        }),
        ("spec.source.name", |vm| {
            vm.spec
                .source
                .as_ref()
                .map(|s| Cow::Borrowed(s.name.as_str()))
        }),
    ]);

    const COLUMNS: &'static [Column] = &[
        NAME,
        column("Display Name", "string", 0, "The VM's name at its source"),
        column("Power", "string", 0, "Power state at the source"),
        column("CPUs", "integer", 0, "Virtual CPUs"),
        column("Memory", "string", 0, "Memory"),
        column("Disks", "string", 0, "Number and total size of the disks"),
        column("Guest OS", "string", 0, "Guest OS as the source names it"),
        column(
            "Source",
            "string",
            0,
            "The source object the VM is read from",
        ),
        column(
            "Concerns",
            "integer",
            0,
            "Reasons an import would fail or lose something (see status.concerns)",
        ),
        column("Path", "string", 1, "Inventory path at the source"),
        column("Host", "string", 1, "Host the VM runs on"),
        column("Networks", "string", 1, "Networks of the VM's NICs"),
    ];

    fn cells(&self) -> Vec<Value> {
        let spec = &self.spec;
        let disk_bytes: i64 = spec.disks.iter().map(|d| d.capacity_bytes).sum();
        let networks: Vec<&str> = spec
            .nics
            .iter()
            .filter_map(|n| n.network.as_deref())
            .collect();
        vec![
            json!(self.metadata.name),
            json!(spec.display_name),
            json!(spec.power_state),
            json!(spec.cpus),
            json!(bytes(spec.memory_mib.saturating_mul(1 << 20))),
            json!(format!("{} ({})", spec.disks.len(), bytes(disk_bytes))),
            json!(spec.guest_os.as_deref().unwrap_or("")),
            json!(source_name(spec.source.as_ref())),
            json!(self.status.concerns.len()),
            json!(spec.path.as_deref().unwrap_or("")),
            json!(spec.host.as_deref().unwrap_or("")),
            json!(networks.join(",")),
        ]
    }

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn snapshot(store: &Store, namespace: Option<&str>) -> Snapshot<Self> {
        store.virtual_machines(namespace)
    }

    fn one(store: &Store, namespace: &str, name: &str) -> Option<Arc<Self>> {
        store.virtual_machine(namespace, name)
    }

    fn wrap(object: Arc<Self>) -> Object {
        Object::VirtualMachine(object)
    }

    fn of(object: &Object) -> Option<&Arc<Self>> {
        match object {
            Object::VirtualMachine(vm) => Some(vm),
            Object::Network(_) => None,
        }
    }
}

/// Binary units, as `kubectl` users read quantities: `512Mi`, `4Gi`, `1.5Ti`.
fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 || unit == 0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use vmm_api::inventory::{Disk, Nic, PowerState, VirtualMachineSpec, VirtualMachineStatus};

    use super::*;

    pub(crate) fn vm() -> VirtualMachine {
        VirtualMachine {
            api_version: "inventory.harvesterhci.io/v1".into(),
            kind: "VirtualMachine".into(),
            metadata: ObjectMeta {
                name: Some("vc-vm-1".into()),
                namespace: Some("team-a".into()),
                ..ObjectMeta::default()
            },
            spec: VirtualMachineSpec {
                id: "vm-1".into(),
                display_name: "Web 01".into(),
                power_state: PowerState::On,
                cpus: 4,
                memory_mib: 6144,
                disks: vec![
                    Disk {
                        capacity_bytes: 10 << 30,
                        ..Disk::default()
                    },
                    Disk {
                        capacity_bytes: 512 << 20,
                        ..Disk::default()
                    },
                ],
                nics: vec![Nic {
                    network: Some("VM Network".into()),
                    ..Nic::default()
                }],
                ..VirtualMachineSpec::default()
            },
            status: VirtualMachineStatus::default(),
        }
    }

    #[test]
    fn rows_match_columns_and_read_well() {
        let cells = vm().cells();
        assert_eq!(cells.len(), VirtualMachine::COLUMNS.len());
        assert_eq!(cells[1], "Web 01");
        assert_eq!(cells[2], "On");
        assert_eq!(cells[4], "6Gi");
        assert_eq!(cells[5], "2 (10.5Gi)");
        assert_eq!(cells[11], "VM Network");
    }

    #[test]
    fn sizes_use_binary_units() {
        for (n, want) in [
            (0, "0"),
            (1023, "1023"),
            (1 << 20, "1Mi"),
            (1536 << 20, "1.5Gi"),
            (3 << 40, "3Ti"),
        ] {
            assert_eq!(bytes(n), want);
        }
    }
}
