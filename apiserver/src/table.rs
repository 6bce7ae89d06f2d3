//! `meta.k8s.io/v1` Table output, what `kubectl get` asks for: a few useful
//! columns by default, more under `-o wide` (priority 1).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::{Value, json};
use vmm_api::inventory::{Network, VirtualMachine};

/// One column, as `columnDefinitions` describes it.
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

const fn column(
    name: &'static str,
    kind: &'static str,
    priority: i32,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name of the object, derived from the source and the source's id",
    priority: 0,
};

/// How much of each object goes with its row (`includeObject`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

pub trait TableRow: Serialize {
    const COLUMNS: &'static [Column];
    fn cells(&self) -> Vec<Value>;
    fn metadata(&self) -> &ObjectMeta;
}

impl TableRow for VirtualMachine {
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
            json!(mebibytes(spec.memory_mib)),
            json!(format!("{} ({})", spec.disks.len(), bytes(disk_bytes))),
            json!(spec.guest_os.as_deref().unwrap_or("")),
            json!(spec.source.as_ref().map(|s| s.name.as_str()).unwrap_or("")),
            json!(self.status.concerns.len()),
            json!(spec.path.as_deref().unwrap_or("")),
            json!(spec.host.as_deref().unwrap_or("")),
            json!(networks.join(",")),
        ]
    }

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
}

impl TableRow for Network {
    const COLUMNS: &'static [Column] = &[
        NAME,
        column(
            "Display Name",
            "string",
            0,
            "The network's name at its source",
        ),
        column("Kind", "string", 0, "Kind of network at the source"),
        column("VLAN", "string", 0, "VLAN id, when the network has one"),
        column(
            "Source",
            "string",
            0,
            "The source object the network is read from",
        ),
        column(
            "Switch",
            "string",
            1,
            "Virtual switch the network belongs to",
        ),
    ];

    fn cells(&self) -> Vec<Value> {
        let spec = &self.spec;
        vec![
            json!(self.metadata.name),
            json!(spec.display_name),
            json!(spec.kind),
            json!(spec.vlan.map(|v| v.to_string()).unwrap_or_default()),
            json!(spec.source.as_ref().map(|s| s.name.as_str()).unwrap_or("")),
            json!(spec.switch.as_deref().unwrap_or("")),
        ]
    }

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// A Table of `items`, with list metadata as kubectl expects it.
pub fn table<'a, T: TableRow + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    list_metadata: Value,
    include: IncludeObject,
) -> Value {
    let columns: Vec<Value> = T::COLUMNS
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.metadata(),
                }),
                IncludeObject::Object => json!(item),
            };
            json!({"cells": item.cells(), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn mebibytes(mib: i64) -> String {
    bytes(mib.saturating_mul(1 << 20))
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
mod tests {
    use vmm_api::inventory::{Disk, Nic, PowerState, VirtualMachineSpec, VirtualMachineStatus};

    use super::*;

    fn vm() -> VirtualMachine {
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
        let vm = vm();
        let cells = vm.cells();
        assert_eq!(cells.len(), VirtualMachine::COLUMNS.len());
        assert_eq!(cells[1], "Web 01");
        assert_eq!(cells[2], "On");
        assert_eq!(cells[4], "6Gi");
        assert_eq!(cells[5], "2 (10.5Gi)");
        assert_eq!(cells[11], "VM Network");
        let table = table(
            [&vm],
            json!({"resourceVersion": "7"}),
            IncludeObject::Metadata,
        );
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "vc-vm-1");
        let bare = super::table([&vm], json!({}), IncludeObject::None);
        assert!(bare["rows"][0]["object"].is_null());
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
