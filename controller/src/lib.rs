//! The controller as a library: the binary (`main.rs`) only reads flags and
//! wires these together; the e2e tests drive the same pieces against the real
//! peers.
//!
//! | module | what |
//! |---|---|
//! | [`import`] | import jobs: the VM to create ([`import::target`]) |
#![forbid(unsafe_code)]

pub mod import;
