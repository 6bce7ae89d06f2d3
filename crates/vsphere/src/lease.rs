//! Reading and ending an `HttpNfcLease`: its state, error and info as the
//! property collector reports them, the progress and abort calls, and how
//! its device keys name the VM's disks.

use vim_rs::mo::HttpNfcLease;
use vim_rs::types::boxed_types::ValueElements;
use vim_rs::types::enums::{HttpNfcLeaseStateEnum, MoTypesEnum};
use vim_rs::types::structs::{
    HttpNfcLeaseInfo, LocalizedMethodFault, ManagedObjectReference, MethodFault,
};
use vim_rs::types::vim_any::VimAny;
use vmm_wire::vsphere::parse_device_key;

use super::disks::DiskDetails;
use super::{VsphereClient, VsphereError, is_fault};

/// The state of an export lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// vSphere prepares the disks; no URLs yet.
    Initializing,
    /// The device URLs can be read; progress must be reported.
    Ready,
    /// Completed.
    Done,
    /// Aborted, timed out (no progress for the lease timeout) or failed.
    Error {
        /// The fault's type, e.g. `Timedout`, `RequestCanceled`.
        fault: String,
        message: String,
    },
}

impl LeaseState {
    /// Initializing or ready: the lease still holds the VM.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Initializing | Self::Ready)
    }
}

impl std::fmt::Display for LeaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Initializing => f.write_str("initializing"),
            Self::Ready => f.write_str("ready"),
            Self::Done => f.write_str("done"),
            Self::Error { fault, message } if message.is_empty() => write!(f, "error ({fault})"),
            Self::Error { fault, message } => write!(f, "error ({fault}: {message})"),
        }
    }
}

pub(crate) async fn progress_call(
    client: &VsphereClient,
    id: &str,
    percent: u8,
) -> Result<(), vim_rs::core::client::Error> {
    HttpNfcLease::new(client.handle(), id)
        .http_nfc_lease_progress(i32::from(percent.min(100)))
        .await
}

pub(crate) async fn abort_call(
    client: &VsphereClient,
    id: &str,
) -> Result<(), vim_rs::core::client::Error> {
    HttpNfcLease::new(client.handle(), id)
        .http_nfc_lease_abort(None)
        .await
}

/// Faults of lease calls that mean the lease is over: `Timedout` (it
/// expired), `InvalidState` (completed or aborted), or unknown.
pub(crate) fn lease_ended(e: &vim_rs::core::client::Error) -> bool {
    is_fault(e, "Timedout") || is_fault(e, "InvalidState") || is_fault(e, "ManagedObjectNotFound")
}

pub(crate) struct LeaseProperties {
    pub state: Option<LeaseState>,
    pub info: Option<Box<HttpNfcLeaseInfo>>,
}

/// `state`, `error` and `info` of a lease; `None` when it does not exist.
pub(crate) async fn lease_properties(
    client: &VsphereClient,
    id: &str,
) -> Result<Option<LeaseProperties>, VsphereError> {
    let obj = ManagedObjectReference {
        r#type: MoTypesEnum::HttpNfcLease,
        value: id.to_owned(),
    };
    let Some(props) = client
        .object_properties(obj, "HttpNfcLease", &["state", "error", "info"])
        .await?
    else {
        return Ok(None);
    };
    let mut state = None;
    let mut error = None;
    let mut info = None;
    for prop in props {
        match prop.name.as_str() {
            "state" => state = lease_state(&prop.val),
            "error" => error = fault_text(prop.val),
            "info" => {
                if let VimAny::Object(obj) = prop.val {
                    info = obj.as_any_box().downcast::<HttpNfcLeaseInfo>().ok();
                }
            }
            _ => {}
        }
    }
    let state = state.map(|s| match s {
        LeaseState::Error { .. } => {
            let (fault, message) = error
                .clone()
                .unwrap_or_else(|| ("MethodFault".into(), String::new()));
            LeaseState::Error { fault, message }
        }
        other => other,
    });
    Ok(Some(LeaseProperties { state, info }))
}

fn lease_state(val: &VimAny) -> Option<LeaseState> {
    let text = match val {
        VimAny::Value(ValueElements::HttpNfcLeaseState(s)) => match s {
            HttpNfcLeaseStateEnum::Initializing => return Some(LeaseState::Initializing),
            HttpNfcLeaseStateEnum::Ready => return Some(LeaseState::Ready),
            HttpNfcLeaseStateEnum::Done => return Some(LeaseState::Done),
            HttpNfcLeaseStateEnum::Error => "error",
            HttpNfcLeaseStateEnum::Other_(s) => s.as_str(),
        },
        VimAny::Value(ValueElements::PrimitiveString(s)) => s.as_str(),
        _ => return None,
    };
    Some(match text {
        "initializing" => LeaseState::Initializing,
        "ready" => LeaseState::Ready,
        "done" => LeaseState::Done,
        _ => LeaseState::Error {
            fault: String::new(),
            message: String::new(),
        },
    })
}

/// (fault type, message) of a lease's `error` (a `LocalizedMethodFault`).
fn fault_text(val: VimAny) -> Option<(String, String)> {
    let VimAny::Object(obj) = val else {
        return None;
    };
    let any = obj.as_any_box();
    let (fault, localized) = match any.downcast::<LocalizedMethodFault>() {
        Ok(l) => (l.fault, l.localized_message),
        Err(any) => (*any.downcast::<MethodFault>().ok()?, None),
    };
    let kind = fault
        .type_
        .map(|t| t.as_str().to_owned())
        .unwrap_or_else(|| "MethodFault".to_owned());
    let message = localized.filter(|m| !m.is_empty()).unwrap_or_else(|| {
        fault
            .fault_message
            .iter()
            .flatten()
            .filter_map(|m| m.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    });
    Some((kind, message))
}

/// The VM disk a lease device key names: `/vm-42/VirtualLsiLogicController0:1`
/// is unit 1 on bus 0 of the VM's `VirtualLsiLogicController`.
pub(crate) fn match_device(key: &str, disks: &[DiskDetails]) -> Option<i32> {
    let (controller_type, bus, unit) = parse_device_key(key)?;
    disks
        .iter()
        .find(|d| {
            d.controller_type.as_deref() == Some(controller_type)
                && d.bus_number == Some(bus)
                && d.unit_number == Some(unit)
        })
        .map(|d| d.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::DiskBacking;

    fn disk(key: i32, controller_type: &str, bus: i32, unit: i32) -> DiskDetails {
        DiskDetails {
            key,
            label: String::new(),
            controller_key: None,
            controller: None,
            controller_type: Some(controller_type.into()),
            bus_number: Some(bus),
            unit_number: Some(unit),
            capacity_bytes: 0,
            file: None,
            flat_file: None,
            datastore: None,
            datacenter_path: None,
            backing: DiskBacking::Flat,
            delta: false,
            thin: false,
            independent: false,
        }
    }

    #[test]
    fn device_keys_map_to_disks() {
        let disks = [
            disk(2000, "ParaVirtualSCSIController", 0, 0),
            disk(2001, "ParaVirtualSCSIController", 0, 1),
            disk(3000, "VirtualIDEController", 0, 0),
        ];
        assert_eq!(
            match_device("/vm-1/ParaVirtualSCSIController0:1", &disks),
            Some(2001)
        );
        assert_eq!(
            match_device("/vm-1/VirtualIDEController0:0", &disks),
            Some(3000)
        );
        assert_eq!(match_device("/vm-1/VirtualIDEController1:0", &disks), None);
    }

    #[test]
    fn states_display() {
        let e = LeaseState::Error {
            fault: "Timedout".into(),
            message: "no progress".into(),
        };
        assert_eq!(e.to_string(), "error (Timedout: no progress)");
        assert!(!e.is_open() && LeaseState::Ready.is_open());
    }
}
