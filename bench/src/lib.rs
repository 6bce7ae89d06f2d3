//! What the benchmark commands share: process figures from `/proc`, the
//! reproduced method's static file server and scratch sampler, import jobs
//! through kube-apiserver, external tools, and how figures are printed.

#![forbid(unsafe_code)]

pub mod args;
pub mod files;
pub mod jobs;
pub mod process;
pub mod report;
pub mod tools;
