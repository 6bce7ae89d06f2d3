//! One file per phase of an import job, in the order the pipeline runs
//! them. Each is given a [`Step`](super::step::Step) and returns an
//! [`Outcome`](super::step::Outcome); the dispatcher is `import::step_job`.

pub mod admit;
pub mod cleanup;
pub mod create_vm;
pub mod export;
pub mod handoff;
pub mod importing;
pub mod power_off;
pub mod validate;
