//! What the benchmark commands share: the reproduced method's static file
//! server and scratch sampler, import jobs through kube-apiserver, external
//! tools, and how figures are printed (process figures from `/proc` are the
//! harness's, `vmm_testkit::procfs`, since the load suite reads them too).

#![forbid(unsafe_code)]

pub mod args;
pub mod files;
pub mod jobs;
pub mod report;
pub mod tools;
