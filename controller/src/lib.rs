//! The controller as a library: the binary (`main.rs`) only reads flags and
//! wires these together; the e2e tests drive the same pieces against the real
//! peers.
//!
//! | module | what |
//! |---|---|
//! | [`sources`] | the `Ready` condition of every source: reachable, logged in |
//! | [`disks`] | the endpoint Harvester's image importer downloads each disk from |
//! | [`workers`] | disk transfers as Jobs: the worker, its objects, the limits |
//! | [`import`] | import jobs: the VM to create ([`import::target`]) |
//! | [`connect`] | logging in to a source with its Secret; failures as reasons |
//! | [`leader`] | leader election with a Lease, so two replicas are safe |
//! | [`check`] | a running release checked as users depend on it (`helm test`) |
//! | [`metrics`] | jobs by phase, bytes served, job durations |
//! | [`crash`] | crash points for the restart tests (`VMM_CRASH_AT`) |
//! | [`conditions`] | status conditions as Kubernetes expects them |
//! | [`context`], [`error`] | what reconcilers share; their error type |
#![forbid(unsafe_code)]

pub mod check;
pub mod conditions;
pub mod connect;
pub mod context;
pub mod crash;
pub mod disks;
pub mod error;
pub mod import;
pub mod leader;
pub mod metrics;
pub mod sources;
#[cfg(test)]
mod testing;
pub mod workers;
