//! Concerns: what would make an import of a VM fail or lose something, computed
//! from what the source reports, so the UI can say so before anyone starts.

use vmm_api::inventory::{Concern, VirtualMachineSpec};

pub fn concerns(vm: &VirtualMachineSpec) -> Vec<Concern> {
    let mut found = Vec::new();
    let mut add = |reason: &str, message: String| {
        found.push(Concern {
            reason: reason.to_owned(),
            message,
        })
    };
    if vm.snapshots > 0 {
        add(
            "HasSnapshots",
            format!(
                "the VM has {} snapshot(s): only the current state is imported; consolidate or delete them at the source to import what you see",
                vm.snapshots
            ),
        );
    }
    for disk in &vm.disks {
        if disk.raw_device {
            add(
                "RawDeviceMapping",
                format!(
                    "{} is a raw device mapping: its LUN cannot be exported; copy it to a virtual disk at the source first",
                    disk.name
                ),
            );
        } else if disk.independent {
            add(
                "IndependentDisk",
                format!(
                    "{} is an independent disk: exports skip it; make it dependent at the source to import it",
                    disk.name
                ),
            );
        }
    }
    for nic in vm.nics.iter().filter(|nic| nic.network.is_none()) {
        add(
            "NicWithoutNetwork",
            format!(
                "{} is on no network the source can name: it cannot be mapped to a Harvester network",
                nic.name
            ),
        );
    }
    if vm.disks.is_empty() {
        add(
            "NoDisks",
            "the VM has no disks: there is nothing to import".to_owned(),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use vmm_api::inventory::{Disk, Nic};

    use super::*;

    #[test]
    fn each_concern_names_the_fix() {
        let disk = |name: &str, raw_device, independent| Disk {
            name: name.into(),
            raw_device,
            independent,
            ..Disk::default()
        };
        let clean = VirtualMachineSpec {
            disks: vec![disk("Hard disk 1", false, false)],
            nics: vec![Nic {
                name: "Network adapter 1".into(),
                network: Some("VM Network".into()),
                ..Nic::default()
            }],
            ..VirtualMachineSpec::default()
        };
        assert!(concerns(&clean).is_empty());

        let troubled = VirtualMachineSpec {
            snapshots: 2,
            disks: vec![
                disk("Hard disk 1", true, false),
                disk("Hard disk 2", false, true),
            ],
            nics: vec![Nic {
                name: "Network adapter 1".into(),
                ..Nic::default()
            }],
            ..VirtualMachineSpec::default()
        };
        let reasons: Vec<String> = concerns(&troubled).into_iter().map(|c| c.reason).collect();
        assert_eq!(
            reasons,
            [
                "HasSnapshots",
                "RawDeviceMapping",
                "IndependentDisk",
                "NicWithoutNetwork"
            ]
        );
        let no_disks = concerns(&VirtualMachineSpec::default());
        assert_eq!(no_disks[0].reason, "NoDisks");
    }
}
