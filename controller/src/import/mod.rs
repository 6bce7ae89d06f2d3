//! Import jobs: from a source VM to a running Harvester VM.

pub mod target;
