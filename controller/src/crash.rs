//! Crash points for the restart tests: with `VMM_CRASH_AT=<point>` in its
//! environment the process exits the first time it reaches that point, with
//! no cleanup at all (no destructor, no pending write, no lease ended: what a
//! SIGKILL or a node failure leaves), so a test can prove that the next
//! process finishes the job from what the first one left in the cluster and
//! at the source.
//!
//! Only a build with the `test-hooks` feature has them: `hack/test.sh`
//! builds the binaries the e2e suites run that way, and a release build
//! never does (the chart's images included), so there [`point`] does
//! nothing and `VMM_CRASH_AT` is ignored. The names stay in every build, so
//! the tests can name the points.

#[cfg(feature = "test-hooks")]
use std::sync::OnceLock;

/// The variable naming the point to crash at.
pub const ENV: &str = "VMM_CRASH_AT";

/// The points, in the order an import reaches them.
pub const POINTS: [&str; 6] = [
    VALIDATED,
    SHUTDOWN_REQUESTED,
    EXPORT_OPENED,
    ONE_DISK_IMPORTED,
    ALL_DISKS_IMPORTED,
    VM_APPLIED,
];
/// Preflight passed; the job is still `Validating`.
pub const VALIDATED: &str = "validated";
/// The guest was asked to shut down; the job is still `PoweringOff`.
pub const SHUTDOWN_REQUESTED: &str = "shutdown-requested";
/// The export is open and recorded; no image exists yet.
pub const EXPORT_OPENED: &str = "export-opened";
/// One image is imported while another is still importing.
pub const ONE_DISK_IMPORTED: &str = "one-disk-imported";
/// Every image is imported; the export is still open.
pub const ALL_DISKS_IMPORTED: &str = "all-disks-imported";
/// The KubeVirt VM exists; the job is still `CreatingVM`.
pub const VM_APPLIED: &str = "vm-applied";

/// The exit code at a crash point: a shell's code for SIGKILL.
pub const EXIT_CODE: i32 = 137;

/// Ends the process if `point` is the one named in [`ENV`].
#[cfg(feature = "test-hooks")]
pub fn point(point: &'static str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var(ENV).ok());
    if chosen.as_deref() == Some(point) {
        tracing::error!(point, "crash point reached; exiting at once ({ENV} is set)");
        // `exit` runs no destructor; unlike `abort` it leaves no core file.
        std::process::exit(EXIT_CODE);
    }
}

/// Without `test-hooks`: nothing.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn point(_point: &'static str) {}
