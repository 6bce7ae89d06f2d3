//! A process's memory, CPU time and storage writes, from `/proc/<pid>`.

use std::time::Duration;

use anyhow::{Context, Result};

/// Resets the process's VmHWM to its current RSS (`clear_refs`, value 5).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("reset the peak RSS of process {pid}"))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub fn memory_field(pid: u32, name: &str) -> Result<u64> {
    let value = field(pid, "status", name)?;
    value
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{name} in /proc/{pid}/status"))
}

/// User + system CPU time of a process, all threads: fields 14 and 15 of
/// `/proc/<pid>/stat`, in USER_HZ ticks (100 per second on Linux).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    stat_ticks(pid, &[14, 15])
}

/// [`cpu_time`] plus that of the children it has reaped (fields 16 and 17),
/// e.g. the downloaders the Harvester stand-in ran to their end.
pub fn cpu_time_with_reaped_children(pid: u32) -> Result<Duration> {
    stat_ticks(pid, &[14, 15, 16, 17])
}

/// The sum of `/proc/<pid>/stat` tick fields (numbered as in proc(5)).
fn stat_ticks(pid: u32, numbers: &[usize]) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // Fields count from the state, after the command name in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let mut ticks = 0u64;
    for &number in numbers {
        ticks += fields
            .get(number - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("field {number} of {path}"))?;
    }
    Ok(Duration::from_millis(ticks * 10))
}

/// Bytes the process caused to be written to storage (`/proc/<pid>/io`).
pub fn storage_writes(pid: u32) -> Result<u64> {
    field(pid, "io", "write_bytes:")?
        .parse()
        .with_context(|| format!("write_bytes in /proc/{pid}/io"))
}

fn field(pid: u32, file: &str, name: &str) -> Result<String> {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_owned())
        .with_context(|| format!("{name} missing in {path}"))
}
