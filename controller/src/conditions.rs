//! Kubernetes conditions as our status writers set them: a condition's
//! `lastTransitionTime` moves only when its status does, as `kubectl wait`
//! and the UI expect.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub const READY: &str = "Ready";

/// What a condition should say now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// `conditions` with `observed` set, keeping the others and the transition
/// time when the status did not change.
pub fn set(
    conditions: &[Condition],
    observed: &Observed,
    generation: Option<i64>,
) -> Vec<Condition> {
    let status = if observed.status { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == observed.type_);
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let updated = Condition {
        type_: observed.type_.to_owned(),
        status: status.to_owned(),
        reason: observed.reason.clone(),
        message: observed.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != observed.type_)
        .cloned()
        .collect();
    out.push(updated);
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let ready = Observed::new(READY, true, "Connected", "vCenter 8.0");
        let first = set(&[], &ready, Some(1));
        let since = first[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let again = set(
            &first,
            &Observed::new(READY, true, "Connected", "vCenter 8.0.1"),
            Some(2),
        );
        assert_eq!(again[0].last_transition_time, since);
        assert_eq!(again[0].message, "vCenter 8.0.1");
        assert_eq!(again[0].observed_generation, Some(2));
        let failed = set(
            &again,
            &Observed::new(READY, false, "EndpointUnreachable", "down"),
            Some(2),
        );
        assert_ne!(failed[0].last_transition_time, since);
        assert_eq!(failed.len(), 1);
    }
}
