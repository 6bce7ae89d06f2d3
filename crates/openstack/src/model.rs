//! Servers, volumes, networks and ports as the services answer them, and
//! how they become inventory specs: a server with its attached volumes
//! (boot volume first) and its ports becomes a VM; a Neutron network a
//! network.

use std::collections::BTreeMap;

pub(crate) use openstack_types::block_storage::v3::volume::response::list_detailed::VolumeResponse as Volume;
use openstack_types::compute::v2::server::response::list_detailed_247::{
    ImageEnum, ServerResponse, Status,
};
pub(crate) use openstack_types::network::v2::network::response::list::NetworkResponse as NeutronNetwork;
pub(crate) use openstack_types::network::v2::port::response::list::PortResponse as Port;
use vmm_api::inventory::{
    Disk, LocalDisk, NetworkKind, NetworkSpec, Nic, PowerState, VirtualMachineSpec,
};

/// A Nova server (microversion 2.47).
pub type Server = ServerResponse;

const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// What a server's VM is made of, by id: every volume, network and port of
/// the project. (The response types have no `Debug`.)
#[derive(Clone, Default)]
pub struct Inventory {
    pub servers: BTreeMap<String, Server>,
    pub volumes: BTreeMap<String, Volume>,
    pub networks: BTreeMap<String, NeutronNetwork>,
    /// Ports attached to servers, by server id, in creation order.
    pub ports: BTreeMap<String, Vec<Port>>,
}

impl Inventory {
    /// Files `ports` under the servers they are attached to.
    pub fn set_ports(&mut self, ports: Vec<Port>) {
        self.ports.clear();
        for port in ports {
            let owner = port.device_owner.as_deref().unwrap_or_default();
            if let (true, Some(server)) = (owner.starts_with("compute:"), port.device_id.clone()) {
                self.ports.entry(server).or_default().push(port);
            }
        }
        for ports in self.ports.values_mut() {
            ports.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        }
    }

    /// Every VM's spec, by server id.
    pub fn vms(&self) -> BTreeMap<String, VirtualMachineSpec> {
        self.servers
            .values()
            .map(|server| (server.id.clone(), self.vm(server)))
            .collect()
    }

    /// Every network's spec, by id.
    pub fn network_specs(&self) -> BTreeMap<String, NetworkSpec> {
        self.networks
            .values()
            .filter_map(network)
            .map(|spec| (spec.id.clone(), spec))
            .collect()
    }

    /// The VM of `server`: the flavor's size, its volumes and ports.
    pub fn vm(&self, server: &Server) -> VirtualMachineSpec {
        let flavor = &server.flavor;
        VirtualMachineSpec {
            id: server.id.clone(),
            display_name: server.name.clone().unwrap_or_else(|| server.id.clone()),
            power_state: power_state(server),
            cpus: flavor.vcpus,
            memory_mib: i64::from(flavor.ram),
            host: server.os_ext_srv_attr_host.clone(),
            zone: Some(server.os_ext_az_availability_zone.clone()).filter(|z| !z.is_empty()),
            flavor: Some(flavor.original_name.clone()),
            fault: matches!(server.status, Status::Error).then(|| {
                server
                    .fault
                    .as_ref()
                    .map_or_else(|| "ERROR".to_owned(), |f| format!("ERROR: {}", f.message))
            }),
            disks: self.disks(server),
            nics: self.nics(server),
            ..Default::default()
        }
    }

    /// The image-backed root disk (local to the compute node), the attached
    /// volumes by device name (so the boot volume, `vda`, comes first), then
    /// the flavor's ephemeral and swap disks.
    fn disks(&self, server: &Server) -> Vec<Disk> {
        let flavor = &server.flavor;
        let mut disks = Vec::new();
        if let ImageEnum::F1(image) = &server.image {
            disks.push(Disk {
                name: "root disk".into(),
                capacity_bytes: i64::from(flavor.disk) * GIB,
                datastore: Some("local".into()),
                file: Some(format!("image {}", image.id.clone().unwrap_or_default())),
                bootable: Some(true),
                local: Some(LocalDisk::Root),
                ..Default::default()
            });
        }
        let mut volumes: Vec<(String, Disk)> = server
            .os_extended_volumes_volumes_attached
            .iter()
            .map(|attached| {
                let volume = self.volumes.get(&attached.id);
                let device = volume
                    .and_then(|v| {
                        v.attachments
                            .iter()
                            .find(|a| a.server_id.as_deref() == Some(&server.id))
                    })
                    .and_then(|a| a.device.clone())
                    .unwrap_or_default();
                let disk = match volume {
                    Some(volume) => Disk {
                        name: volume
                            .name
                            .clone()
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| volume.id.clone()),
                        capacity_bytes: volume.size * GIB,
                        datastore: volume.volume_type.clone(),
                        file: Some(volume.id.clone()),
                        controller: bus(&device).map(Into::into),
                        shared: volume.multiattach.unwrap_or(false) || volume.attachments.len() > 1,
                        bootable: Some(volume.bootable == "true"),
                        ..Default::default()
                    },
                    // Attached but not listed: another project's volume.
                    None => Disk {
                        name: attached.id.clone(),
                        file: Some(attached.id.clone()),
                        ..Default::default()
                    },
                };
                (device, disk)
            })
            .collect();
        volumes.sort_by(|a, b| (&a.0, &a.1.file).cmp(&(&b.0, &b.1.file)));
        disks.extend(volumes.into_iter().map(|(_, disk)| disk));
        if flavor.ephemeral > 0 {
            disks.push(Disk {
                name: "ephemeral disk".into(),
                capacity_bytes: i64::from(flavor.ephemeral) * GIB,
                datastore: Some("local".into()),
                local: Some(LocalDisk::Ephemeral),
                ..Default::default()
            });
        }
        if flavor.swap > 0 {
            disks.push(Disk {
                name: "swap disk".into(),
                capacity_bytes: i64::from(flavor.swap) * MIB,
                datastore: Some("local".into()),
                local: Some(LocalDisk::Swap),
                ..Default::default()
            });
        }
        disks
    }

    fn nics(&self, server: &Server) -> Vec<Nic> {
        let ports = self
            .ports
            .get(&server.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        ports
            .iter()
            .map(|port| {
                let id = port.id.clone().unwrap_or_default();
                Nic {
                    name: port
                        .name
                        .clone()
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| format!("port {}", id.get(..8).unwrap_or(&id))),
                    network: port.network_id.as_ref().map(|id| self.network_name(id)),
                    mac_address: port.mac_address.clone(),
                    model: None,
                    ip_addresses: port
                        .fixed_ips
                        .iter()
                        .flatten()
                        .filter_map(|ip| ip.ip_address.clone())
                        .collect(),
                    pod_network: false,
                }
            })
            .collect()
    }

    /// The name a network is shown by (and mapped by): its name, else its id.
    fn network_name(&self, id: &str) -> String {
        self.networks
            .get(id)
            .and_then(|n| n.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.to_owned())
    }
}

fn network(network: &NeutronNetwork) -> Option<NetworkSpec> {
    let id = network.id.clone()?;
    let vlan = (network.provider_network_type.as_deref() == Some("vlan"))
        .then(|| {
            network
                .provider_segmentation_id
                .and_then(|v| i32::try_from(v).ok())
        })
        .flatten();
    Some(NetworkSpec {
        display_name: network
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.clone()),
        id,
        kind: NetworkKind::Neutron,
        vlan,
        switch: network.provider_physical_network.clone(),
        ..Default::default()
    })
}

/// From the server's status, else Nova's power state code (1 running,
/// 3 paused, 4 shutdown, 7 suspended).
fn power_state(server: &Server) -> PowerState {
    match server.status {
        Status::Active => PowerState::On,
        Status::Shutoff | Status::Shelved | Status::ShelvedOffloaded => PowerState::Off,
        Status::Paused | Status::Suspended => PowerState::Suspended,
        _ => match server.os_ext_sts_power_state {
            1 => PowerState::On,
            4 => PowerState::Off,
            3 | 7 => PowerState::Suspended,
            _ => PowerState::Unknown,
        },
    }
}

/// The bus a device name implies: `/dev/vda` virtio, `/dev/sda` scsi,
/// `/dev/hda` ide.
fn bus(device: &str) -> Option<&'static str> {
    let name = device.rsplit('/').next()?;
    match name.get(..2)? {
        "vd" => Some("virtio"),
        "sd" => Some("scsi"),
        "hd" => Some("ide"),
        "xv" => Some("xen"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A server as Nova 2.47 answers it.
    pub(crate) fn server(id: &str, name: &str, status: &str, image: serde_json::Value) -> Server {
        serde_json::from_value(json!({
            "id": id, "name": name, "status": status, "tenant_id": "p", "user_id": "u",
            "created": "2026-12-01T10:00:00Z", "updated": "2026-12-01T10:00:00Z",
            "hostId": "h", "addresses": {}, "config_drive": "", "key_name": null,
            "accessIPv4": "", "accessIPv6": "", "description": null,
            "locked": false, "metadata": {}, "tags": [], "links": [],
            "image": image, "OS-DCF:diskConfig": "MANUAL",
            "OS-EXT-AZ:availability_zone": "nova", "OS-EXT-STS:power_state": 1,
            "OS-EXT-STS:task_state": null, "OS-EXT-STS:vm_state": "active",
            "OS-SRV-USG:launched_at": "2026-12-01T10:00:01.000000", "OS-SRV-USG:terminated_at": null,
            "os-extended-volumes:volumes_attached": [
                {"id": "vol-data", "delete_on_termination": false},
                {"id": "vol-boot", "delete_on_termination": true}],
            "security_groups": [{"name": "default"}],
            "flavor": {"vcpus": 2, "ram": 4096, "disk": 20, "ephemeral": 0, "swap": 512,
                "original_name": "m1.medium", "extra_specs": {}},
            "progress": 0
        }))
        .unwrap()
    }

    fn volume(id: &str, device: &str, size: i64, bootable: bool, attachments: usize) -> Volume {
        let attachments: Vec<_> = (0..attachments)
            .map(|i| {
                json!({"id": id, "attachment_id": format!("a{i}"), "volume_id": id,
                "server_id": if i == 0 { "srv-1".to_owned() } else { format!("other-{i}") },
                "device": device, "host_name": null, "attached_at": null})
            })
            .collect();
        serde_json::from_value(json!({
            "id": id, "name": id, "size": size, "status": "in-use", "bootable": bootable.to_string(),
            "encrypted": false, "user_id": "u", "volume_type": "lvmdriver-1",
            "multiattach": attachments.len() > 1, "attachments": attachments,
            "replication_status": null, "links": [], "availability_zone": "nova"
        }))
        .unwrap()
    }

    #[test]
    fn a_volume_backed_server_becomes_a_vm() {
        let mut inventory = Inventory::default();
        inventory.servers.insert(
            "srv-1".into(),
            server("srv-1", "web 01", "SHUTOFF", json!("")),
        );
        inventory.volumes.insert(
            "vol-boot".into(),
            volume("vol-boot", "/dev/vda", 10, true, 1),
        );
        inventory.volumes.insert(
            "vol-data".into(),
            volume("vol-data", "/dev/vdb", 2, false, 2),
        );
        inventory.networks.insert(
            "net-1".into(),
            serde_json::from_value(json!({"id": "net-1", "name": "private",
                "provider:network_type": "vlan", "provider:segmentation_id": 100,
                "provider:physical_network": "physnet1"}))
            .unwrap(),
        );
        inventory.set_ports(
            serde_json::from_value(json!([
                {"id": "port-b0000000", "device_id": "srv-1", "device_owner": "compute:nova",
                 "network_id": "net-1", "mac_address": "fa:16:3e:00:00:02", "created_at": "2026-12-01T10:00:02Z",
                 "fixed_ips": [{"ip_address": "10.0.0.12", "subnet_id": "s"}], "name": ""},
                {"id": "port-a0000000", "device_id": "srv-1", "device_owner": "compute:nova",
                 "network_id": "net-1", "mac_address": "fa:16:3e:00:00:01", "created_at": "2026-12-01T10:00:01Z",
                 "fixed_ips": [], "name": "eth0"},
                {"id": "port-dhcp", "device_id": "dhcp", "device_owner": "network:dhcp", "network_id": "net-1"}
            ]))
            .unwrap(),
        );
        let vm = &inventory.vms()["srv-1"];
        assert_eq!(
            (vm.cpus, vm.memory_mib, vm.power_state),
            (2, 4096, PowerState::Off)
        );
        assert_eq!(vm.flavor.as_deref(), Some("m1.medium"));
        assert_eq!(vm.zone.as_deref(), Some("nova"));
        let disks: Vec<_> = vm
            .disks
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.capacity_bytes,
                    d.shared,
                    d.bootable,
                    d.controller.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            disks,
            [
                ("vol-boot", 10 * GIB, false, Some(true), Some("virtio")),
                ("vol-data", 2 * GIB, true, Some(false), Some("virtio")),
                ("swap disk", 512 * MIB, false, None, None),
            ]
        );
        let nics: Vec<_> = vm
            .nics
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.network.as_deref(),
                    n.mac_address.as_deref(),
                    n.ip_addresses.len(),
                )
            })
            .collect();
        assert_eq!(
            nics,
            [
                ("eth0", Some("private"), Some("fa:16:3e:00:00:01"), 0),
                (
                    "port port-b00",
                    Some("private"),
                    Some("fa:16:3e:00:00:02"),
                    1
                ),
            ],
            "in creation order; an unnamed port by its id; the DHCP port is no NIC"
        );
        let network = &inventory.network_specs()["net-1"];
        assert_eq!(
            (network.vlan, network.switch.as_deref()),
            (Some(100), Some("physnet1"))
        );
    }

    #[test]
    fn an_image_backed_server_has_a_local_root_disk() {
        let mut inventory = Inventory::default();
        let mut srv = server("srv-2", "db", "ACTIVE", json!({"id": "img-1", "links": []}));
        srv.os_extended_volumes_volumes_attached.clear();
        inventory.servers.insert("srv-2".into(), srv);
        let vm = &inventory.vms()["srv-2"];
        assert_eq!(vm.power_state, PowerState::On);
        assert_eq!(vm.fault, None);
        assert_eq!(vm.disks[0].name, "root disk");
        assert_eq!(vm.disks[0].capacity_bytes, 20 * GIB);
        assert_eq!(vm.disks[0].file.as_deref(), Some("image img-1"));
    }

    #[test]
    fn a_server_in_error_carries_its_fault() {
        let mut inventory = Inventory::default();
        let mut broken: Server = serde_json::from_value({
            let mut value =
                serde_json::to_value(server("srv-3", "bad", "ERROR", json!(""))).unwrap();
            value["fault"] = json!({"code": 500, "created": "2026-12-01T10:00:00Z",
                "message": "No valid host was found."});
            value
        })
        .unwrap();
        broken.os_extended_volumes_volumes_attached.clear();
        inventory.servers.insert("srv-3".into(), broken);
        assert_eq!(
            inventory.vms()["srv-3"].fault.as_deref(),
            Some("ERROR: No valid host was found.")
        );
    }

    #[test]
    fn buses() {
        assert_eq!(bus("/dev/vdb"), Some("virtio"));
        assert_eq!(bus("/dev/sda"), Some("scsi"));
        assert_eq!(bus(""), None);
    }
}
