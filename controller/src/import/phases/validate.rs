//! `Validating`: preflight, before the source VM is touched; the VM found is
//! recorded (later steps act on exactly it), with one status entry per disk
//! and the name of the VM to create.

use kube::ResourceExt;
use vmm_api::importjob::{DiskStatus, ImportPhase, SourceVm};

use crate::crash;
use crate::import::images;
use crate::import::preflight;
use crate::import::status::StatusUpdate;
use crate::import::step::{Outcome, Step};

pub async fn run(step: &Step<'_>) -> Outcome {
    let checked = preflight::run(step).await?;
    let job_name = step.job.name_any();
    let disks: Vec<DiskStatus> = checked
        .vm
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| DiskStatus {
            name: disk.label.clone(),
            capacity_bytes: disk.capacity_bytes,
            source_key: Some(disk.key.clone()),
            image_name: Some(images::name(&job_name, index)),
            ..DiskStatus::default()
        })
        .collect();
    let source_vm = SourceVm {
        id: checked.vm.spec.id.clone(),
        path: checked.vm.spec.path.clone(),
        powered_off_by_job: false,
        host: checked.vm.spec.host.clone(),
    };
    crash::point(crash::VALIDATED);
    step.advance(
        ImportPhase::PoweringOff,
        &format!("preflight passed; powering off {:?}", step.job.spec.vm_name),
        StatusUpdate::default()
            .with_target_name(&checked.target_name)
            .with_source_vm(&source_vm)
            .with_disks(&disks),
    )
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vmm_api::importjob::ImportPhase;
    use vmm_api::inventory::PowerState;
    use vmm_core::{ProviderError, Reason};

    use crate::testing::{FakeSource, SourceCall, World, web_vm};

    const VALIDATING: &str = r#"{"phase": "Validating"}"#;

    fn validating() -> serde_json::Value {
        serde_json::from_str(VALIDATING).unwrap()
    }

    #[tokio::test]
    async fn a_vm_that_passes_preflight_is_recorded_and_powered_off_next() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
        world.job(json!({}), validating());
        world.reconcile().await.unwrap();
        let status = world.stored().status.unwrap();
        assert_eq!(status.phase, Some(ImportPhase::PoweringOff));
        assert_eq!(status.target_name.as_deref(), Some("web-01"));
        let vm = status.source_vm.unwrap();
        assert_eq!((vm.id.as_str(), vm.powered_off_by_job), ("vm-1", false));
        assert_eq!(status.disks.len(), 1);
        assert_eq!(status.disks[0].source_key.as_deref(), Some("2000"));
        assert_eq!(status.disks[0].image_name.as_deref(), Some("web-disk-0"));
        assert_eq!(status.progress.as_deref(), Some("0.0/0.0 GiB (0%)"));
        // Logged in once, found the VM, logged out; nothing else touched it.
        assert_eq!(
            world.source.calls(),
            [
                SourceCall::Connect,
                SourceCall::Find("Web 01".into()),
                SourceCall::Logout
            ]
        );
    }

    #[tokio::test]
    async fn refusals_name_the_fix_and_leave_the_vm_on() {
        let mut raw = web_vm(PowerState::On);
        raw.disks[0].unsupported = Some("Hard disk 1 is a raw device mapping".into());
        let cases = [
            (
                json!({"vmName": "Nope"}),
                vec![web_vm(PowerState::On)],
                "VmNotFound",
                "spec.vmName",
            ),
            (
                json!({}),
                vec![raw],
                "UnsupportedDisk",
                "raw device mapping",
            ),
            (
                json!({"mapping": []}),
                vec![web_vm(PowerState::On)],
                "NetworkNotMapped",
                "VM Network",
            ),
            (
                json!({"mapping": [{"sourceNetwork": "VM Network", "destinationNetwork": "ghost"}]}),
                vec![web_vm(PowerState::On)],
                "NetworkNotFound",
                "ghost",
            ),
            (
                json!({"sourceCluster": {"kind": "Vsphere", "name": "gone"}}),
                vec![web_vm(PowerState::On)],
                "SourceNotFound",
                "gone",
            ),
        ];
        for (spec, vms, reason, says) in cases {
            let world = World::new(FakeSource::new(vms));
            world.job(spec.clone(), validating());
            world.reconcile().await.unwrap();
            assert_eq!(world.phase(), ImportPhase::Failed, "{spec}");
            let (got, message) = world.ready();
            assert_eq!(got, reason, "{spec}: {message}");
            assert!(message.contains(says), "{spec}: {message}");
            assert_eq!(world.source.power("vm-1"), Some(PowerState::On));
            assert!(world.kube.event_reasons().contains(&reason.to_owned()));
        }
    }

    #[tokio::test]
    async fn a_source_that_is_not_ready_is_not_logged_in_to() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
        let mut source = world
            .kube
            .get("/apis/source.harvesterhci.io/v1/namespaces/team-a/vspheres/vc")
            .unwrap();
        source["status"]["conditions"][0]["status"] = json!("False");
        source["status"]["conditions"][0]["reason"] = json!("AuthenticationFailed");
        world.kube.put("vspheres", source);
        world.job(json!({}), validating());
        world.reconcile().await.unwrap();
        let (reason, message) = world.ready();
        assert_eq!(reason, "SourceNotReady");
        assert!(message.contains("AuthenticationFailed"), "{message}");
        assert!(world.source.calls().is_empty());
    }

    /// The source's last check found it unreachable a moment ago, but it
    /// answers now: the job goes on (an unreachable one would wait, as
    /// below). Unreachable for longer than the grace, it fails the job.
    #[tokio::test]
    async fn a_source_unreachable_for_a_moment_is_tried_and_for_long_is_not() {
        let now = k8s_openapi::jiff::Timestamp::now();
        let long_ago = now - crate::import::preflight::DOWN_GRACE * 2;
        for (since, phase) in [
            (now, ImportPhase::PoweringOff),
            (long_ago, ImportPhase::Failed),
        ] {
            let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
            let mut source = world
                .kube
                .get("/apis/source.harvesterhci.io/v1/namespaces/team-a/vspheres/vc")
                .unwrap();
            let ready = &mut source["status"]["conditions"][0];
            ready["status"] = json!("False");
            ready["reason"] = json!("EndpointUnreachable");
            ready["lastTransitionTime"] = json!(since.to_string());
            world.kube.put("vspheres", source);
            world.job(json!({}), validating());
            world.reconcile().await.unwrap();
            assert_eq!(world.phase(), phase, "{since}: {:?}", world.ready());
            if phase == ImportPhase::Failed {
                assert_eq!(world.ready().0, "SourceNotReady");
                assert!(world.source.calls().is_empty());
            }
        }
    }

    #[tokio::test]
    async fn an_unreachable_source_is_waited_for() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
        world.job(json!({}), validating());
        world.source.fail_once(
            "find_vms",
            ProviderError::transient(Reason::EndpointUnreachable, "vc is unreachable: check it"),
        );
        let action = world.reconcile().await.unwrap();
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(crate::import::RETRY_DELAY)
        );
        assert_eq!(world.phase(), ImportPhase::Validating);
        let (reason, message) = world.ready();
        assert_eq!(reason, "Validating");
        assert!(message.contains("vc is unreachable"), "{message}");
        assert!(
            world
                .kube
                .event_reasons()
                .contains(&"EndpointUnreachable".to_owned())
        );
        // Next time it answers: the job goes on.
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::PoweringOff);
    }
}
