//! The pure decisions of the source sync: what to do with a source's task when
//! the source or its Secret changes, and how long to wait before reconnecting.

use std::time::Duration;

/// What a running task was started from. A task is restarted exactly when this
/// changes: the source's spec (its `metadata.generation`, which the status
/// subresource keeps still on status writes) or its Secret's data (a keyed hash
/// of it, so credential rotation restarts the task and nothing else does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub generation: Option<i64>,
    pub secret_hash: u64,
}

/// What to do with one source's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Nothing runs and nothing should.
    Idle,
    /// It runs as it should.
    Keep,
    Start,
    /// Stop it and start a new one; the new watch re-sends the full set, so the
    /// sink keeps what it had until then.
    Restart,
    /// Stop it and make the sink forget the source: it is gone, or its Secret is.
    StopAndForget,
}

/// `running`: the fingerprint of the task that runs, if any. `desired`: what
/// should run, `None` when the source is gone or its Secret does not exist.
pub(super) fn plan(running: Option<&Fingerprint>, desired: Option<&Fingerprint>) -> Plan {
    match (running, desired) {
        (None, None) => Plan::Idle,
        (None, Some(_)) => Plan::Start,
        (Some(_), None) => Plan::StopAndForget,
        (Some(old), Some(new)) if old == new => Plan::Keep,
        (Some(_), Some(_)) => Plan::Restart,
    }
}

/// Exponential backoff between reconnects: `MIN`, doubling up to `MAX`; errors
/// a person must fix (bad credentials, untrusted CA, bad URL) wait `MAX` at once.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(60);
    /// A watch that synced and ran this long was healthy: the next failure
    /// starts again at `MIN`.
    pub const HEALTHY: Duration = Duration::from_secs(60);

    pub fn new() -> Self {
        Self { next: Self::MIN }
    }

    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }

    /// The wait after a failure.
    pub fn failed(&mut self, transient: bool) -> Duration {
        if !transient {
            self.next = Self::MAX;
            return Self::MAX;
        }
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Fingerprint = Fingerprint {
        generation: Some(1),
        secret_hash: 7,
    };

    #[test]
    fn restarts_only_when_spec_or_secret_changes() {
        let new_generation = Fingerprint {
            generation: Some(2),
            ..A
        };
        let rotated = Fingerprint {
            secret_hash: 8,
            ..A
        };
        assert_eq!(plan(None, None), Plan::Idle);
        assert_eq!(plan(None, Some(&A)), Plan::Start);
        assert_eq!(plan(Some(&A), Some(&A)), Plan::Keep);
        assert_eq!(plan(Some(&A), Some(&new_generation)), Plan::Restart);
        assert_eq!(plan(Some(&A), Some(&rotated)), Plan::Restart);
        assert_eq!(plan(Some(&A), None), Plan::StopAndForget);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.failed(true).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.failed(true), Backoff::MIN);
        assert_eq!(b.failed(false), Backoff::MAX);
        assert_eq!(b.failed(true), Backoff::MAX, "stays at the cap");
        b.reset();
        assert_eq!(b.failed(true), Backoff::MIN);
    }
}
