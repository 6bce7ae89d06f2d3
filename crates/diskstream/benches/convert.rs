//! `cargo bench -p vmm-diskstream`: converts one streamOptimized VMDK to raw with qemu-img and
//! with this crate, side by side, and prints throughput and the ratio. Not a test: nothing is
//! asserted about time (DESIGN §5). The outputs are compared byte for byte.
//!
//! `DISKSTREAM_BENCH_MIB` sets the disk size (default 256 MiB): 40% compressible text, 20%
//! random, 40% zeros, in 1 MiB runs, which is roughly what a used OS disk looks like.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use vmm_diskstream::{Progress, SegmentReader};

const MIB: usize = 1 << 20;
const RUNS: usize = 3;

fn main() {
    let mib: usize = std::env::var("DISKSTREAM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().expect("tempdir");
    let raw_path = dir.path().join("disk.raw");
    let vmdk = dir.path().join("disk.vmdk");
    std::fs::write(&raw_path, disk(mib)).expect("write raw");
    qemu_img(
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ],
        &raw_path,
        &vmdk,
    );
    let vmdk_len = std::fs::metadata(&vmdk).expect("vmdk").len();

    let qemu_out = dir.path().join("qemu.raw");
    let qemu = best(|| {
        let _ = std::fs::remove_file(&qemu_out);
        let t = Instant::now();
        qemu_img(&["convert", "-f", "vmdk", "-O", "raw"], &vmdk, &qemu_out);
        t.elapsed()
    });

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ours_out = dir.path().join("ours.raw");
    let mut inflated = 0;
    let file = best(|| {
        rt.block_on(async {
            let t = Instant::now();
            let progress = Progress::new();
            let src = tokio::fs::File::open(&vmdk).await.expect("open");
            let reader = SegmentReader::vmdk(src, progress.clone())
                .await
                .expect("header");
            let mut out = tokio::fs::File::create(&ours_out).await.expect("create");
            reader.write_sparse(&mut out).await.expect("convert");
            out.sync_all().await.ok();
            inflated = progress.inflated_bytes();
            t.elapsed()
        })
    });
    let stream = best(|| {
        rt.block_on(async {
            let t = Instant::now();
            let src = tokio::fs::File::open(&vmdk).await.expect("open");
            let reader = SegmentReader::vmdk(src, Progress::new())
                .await
                .expect("header");
            let n = reader
                .into_raw_stream()
                .try_fold(0u64, |n, b| async move { Ok(n + b.len() as u64) })
                .await
                .expect("convert");
            assert_eq!(n, (mib * MIB) as u64);
            t.elapsed()
        })
    });
    let same =
        std::fs::read(&qemu_out).expect("qemu out") == std::fs::read(&ours_out).expect("ours");
    assert!(same, "raw outputs differ");

    let raw = (mib * MIB) as f64 / 1e6;
    let rate = |d: Duration| raw / d.as_secs_f64();
    println!(
        "disk {mib} MiB raw, {:.1} MiB streamOptimized, {:.1} MiB of grains inflated; best of {RUNS}",
        vmdk_len as f64 / MIB as f64,
        inflated as f64 / MIB as f64
    );
    println!(
        "qemu-img convert -O raw (file)  {:>8.3} s  {:>7.0} MB/s raw",
        qemu.as_secs_f64(),
        rate(qemu)
    );
    println!(
        "diskstream write_sparse (file)  {:>8.3} s  {:>7.0} MB/s raw",
        file.as_secs_f64(),
        rate(file)
    );
    println!(
        "diskstream into_raw_stream      {:>8.3} s  {:>7.0} MB/s raw",
        stream.as_secs_f64(),
        rate(stream)
    );
    println!(
        "inflate rate (raw stream)       {:>8.0} MB/s of grain data",
        inflated as f64 / 1e6 / stream.as_secs_f64()
    );
    println!(
        "ratio qemu-img / write_sparse: {:.2}",
        qemu.as_secs_f64() / file.as_secs_f64()
    );
    println!(
        "ratio qemu-img / raw stream:   {:.2}",
        qemu.as_secs_f64() / stream.as_secs_f64()
    );
    println!("outputs identical: {same}");
}

fn best(mut run: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| run()).min().expect("runs")
}

fn qemu_img(args: &[&str], input: &Path, output: &Path) {
    let status = Command::new("qemu-img")
        .args(args)
        .arg(input)
        .arg(output)
        .status()
        .expect("qemu-img (qemu-utils) is needed");
    assert!(status.success(), "qemu-img {args:?} failed");
}

/// 1 MiB runs: text-like 40%, random 20%, zero 40%.
fn disk(mib: usize) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"kernel ",
        b"lib",
        b"usr/share/",
        b"0000 ",
        b"the ",
        b"\n",
        b"ELF",
        b"\x00\x00",
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(mib * MIB);
    for i in 0..mib {
        let end = out.len() + MIB;
        match i % 10 {
            0..=3 => {
                while out.len() < end {
                    let w = WORDS[next() as usize % WORDS.len()];
                    out.extend_from_slice(&w[..w.len().min(end - out.len())]);
                }
            }
            4 | 5 => {
                while out.len() < end {
                    out.extend_from_slice(&next().to_le_bytes());
                }
            }
            _ => out.resize(end, 0),
        }
    }
    out
}
