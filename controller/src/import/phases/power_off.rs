//! `PoweringOff`: the guest is asked to shut down and given the job's
//! timeout; then, if allowed, the VM is powered off hard. Whether the job
//! powered the VM off is recorded before the first call, so a restart in the
//! middle still knows.

use std::time::Duration;

use vmm_api::importjob::ImportPhase;
use vmm_api::inventory::PowerState;
use vmm_core::Reason;

use crate::connect::Refused;
use crate::crash;
use crate::import::status::StatusUpdate;
use crate::import::step::{Outcome, Step};

pub async fn run(step: &Step<'_>) -> Outcome {
    let job = step.job;
    let mut vm = step.source_vm()?.clone();
    let session = step.source.session().await?;
    if session.power_state(&vm.id).await? != PowerState::Off {
        if !vm.powered_off_by_job {
            vm.powered_off_by_job = true;
            step.write(&StatusUpdate::default().with_source_vm(&vm))
                .await?;
        }
        let timeout = Duration::from_secs(
            u64::try_from(job.spec.graceful_shutdown_timeout_seconds).unwrap_or(0),
        );
        let graceful = match session.shutdown_guest(&vm.id).await {
            Ok(()) => {
                crash::point(crash::SHUTDOWN_REQUESTED);
                session.wait_powered_off(&vm.id, timeout).await
            }
            Err(error) => Err(error),
        };
        match graceful {
            Ok(()) => {}
            Err(error)
                if matches!(
                    error.reason(),
                    Reason::GuestShutdownUnavailable | Reason::PowerOffTimedOut
                ) =>
            {
                if !job.spec.force_power_off {
                    return Err(Refused::new(
                        "ShutdownFailed",
                        format!("{error}; or set spec.forcePowerOff to power it off hard"),
                    )
                    .into());
                }
                session.power_off(&vm.id).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    step.advance(
        ImportPhase::Exporting,
        "the source VM is off; exporting its disks",
        StatusUpdate::default().with_source_vm(&vm),
    )
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use vmm_api::importjob::ImportPhase;
    use vmm_api::inventory::PowerState;
    use vmm_core::{ProviderError, Reason};

    use crate::testing::{FakeSource, SourceCall, World, web_vm};

    fn powering_off() -> Value {
        json!({"phase": "PoweringOff", "sourceVm": {"id": "vm-1"}, "targetName": "web-01"})
    }

    #[tokio::test]
    async fn the_guest_shuts_down_and_the_job_says_it_did_that() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
        world.job(json!({}), powering_off());
        world.reconcile().await.unwrap();
        let status = world.stored().status.unwrap();
        assert_eq!(status.phase, Some(ImportPhase::Exporting));
        assert!(status.source_vm.unwrap().powered_off_by_job);
        assert_eq!(world.source.power("vm-1"), Some(PowerState::Off));
        assert!(
            !world
                .source
                .calls()
                .contains(&SourceCall::PowerOff("vm-1".into())),
            "no hard power-off when the guest shuts down"
        );
    }

    /// After a restart the VM is already off: nothing is asked of it again.
    #[tokio::test]
    async fn a_vm_already_off_is_left_alone() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::Off)]));
        world.job(json!({}), powering_off());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Exporting);
        assert!(
            !world
                .stored()
                .status
                .unwrap()
                .source_vm
                .unwrap()
                .powered_off_by_job
        );
        assert_eq!(
            world.source.calls(),
            [
                SourceCall::Connect,
                SourceCall::PowerState("vm-1".into()),
                SourceCall::Logout
            ]
        );
    }

    #[tokio::test]
    async fn without_a_guest_agent_it_needs_force() {
        let source = FakeSource::new(vec![web_vm(PowerState::On)]).without_guest_agent();
        let world = World::new(source);
        world.job(json!({}), powering_off());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Failed);
        let (reason, message) = world.ready();
        assert_eq!(reason, "ShutdownFailed");
        assert!(message.contains("spec.forcePowerOff"), "{message}");
        assert_eq!(world.source.power("vm-1"), Some(PowerState::On));

        let source = FakeSource::new(vec![web_vm(PowerState::On)]).without_guest_agent();
        let world = World::new(source);
        world.job(json!({"forcePowerOff": true}), powering_off());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Exporting);
        assert!(
            world
                .source
                .calls()
                .contains(&SourceCall::PowerOff("vm-1".into()))
        );
    }

    #[tokio::test]
    async fn a_source_that_stops_answering_is_waited_for() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
        world.job(json!({}), powering_off());
        world.source.fail_once(
            "power_state",
            ProviderError::transient(Reason::EndpointError, "the session ended: log in again"),
        );
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::PoweringOff);
        assert_eq!(world.ready().0, "PoweringOff");
        assert_eq!(world.source.power("vm-1"), Some(PowerState::On));
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Exporting);
    }
}
