//! How figures are printed and summarised.

use std::time::Duration;

const MIB: f64 = 1024.0 * 1024.0;

/// The item with the median `key`: its parts then add up to the median.
pub fn median_by<T>(items: &[T], key: impl Fn(&T) -> Duration) -> &T {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by_key(|item| key(item));
    sorted[sorted.len() / 2]
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub fn size(bytes: u64) -> String {
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else if mib >= 1.0 {
        format!("{mib:.1} MiB")
    } else if bytes >= 1024 {
        format!("{:.0} KiB", mib * 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Prints the CPU each measured import used.
pub fn print_cpu(lines: &[String]) {
    println!(
        "\nCPU used by our import (its median round), on {} cores:",
        cores()
    );
    for line in lines {
        println!("{line}");
    }
}

/// What one round of one disk cost the machine.
pub struct Footprint {
    /// Bytes our controller wrote to local storage (its log included).
    pub ours_written: u64,
    /// Peak bytes the reproduced method allocated in its scratch directory.
    pub reproduced_scratch: u64,
    /// The controller's peak RSS, bytes.
    pub ours_peak_rss: u64,
}

/// Prints each disk's largest footprint over its rounds (`reproduced_files`
/// says what the reproduced method keeps); the worst of ours written and of
/// our RSS.
pub fn print_footprints<'a>(
    disks: impl IntoIterator<Item = (&'a str, Vec<Footprint>)>,
    reproduced_files: &str,
) -> (u64, u64) {
    let disks: Vec<(&str, Vec<Footprint>)> = disks.into_iter().collect();
    let peak = |figure: fn(&Footprint) -> u64| -> (String, u64) {
        let per_disk: Vec<(&str, u64)> = disks
            .iter()
            .map(|(name, rounds)| (*name, rounds.iter().map(figure).max().unwrap_or(0)))
            .collect();
        let shown: Vec<String> = per_disk
            .iter()
            .map(|(name, bytes)| format!("{name} {}", size(*bytes)))
            .collect();
        let worst = per_disk.iter().map(|(_, bytes)| *bytes).max().unwrap_or(0);
        (shown.join(", "), worst)
    };
    let (ours, worst_written) = peak(|f| f.ours_written);
    let (reproduced, _) = peak(|f| f.reproduced_scratch);
    let (rss, worst_rss) = peak(|f| f.ours_peak_rss);
    println!(
        "\npeak local scratch, ours (everything the controller wrote to local storage, its log included): {ours}"
    );
    println!("peak local scratch, reproduced ({reproduced_files}, allocated): {reproduced}");
    println!("controller peak RSS (VmHWM, reset before each import): {rss}");
    (worst_written, worst_rss)
}
