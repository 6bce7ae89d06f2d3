//! Our raw output against qemu-img's, byte for byte, on disks qemu-img wrote and on disks laid out
//! the way VMware writes them.

mod common;

use std::io::Cursor;

use common::*;
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;
use vmm_diskstream::{Descriptor, Progress, Segment, SegmentReader, SourceFormat, sniff};

/// Disk contents that exercise zero gaps, grain boundaries and odd sizes.
fn patterns() -> Vec<(&'static str, Vec<u8>)> {
    let mut alternating = vec![0u8; 8 * MIB];
    for (i, chunk) in alternating.chunks_mut(MIB).enumerate() {
        if i % 2 == 0 {
            chunk.copy_from_slice(&random(MIB, i as u64 + 1));
        }
    }
    let mut straddling = vec![0u8; 2 * MIB];
    straddling[60 * KIB..200 * KIB].copy_from_slice(&random(140 * KIB, 7));
    straddling[MIB - 10..MIB + 10].copy_from_slice(&[0xab; 20]);
    let mut several_tables = vec![0u8; 40 * MIB];
    for at in (0..40 * MIB).step_by(3 * MIB) {
        let len = (100 * KIB).min(40 * MIB - at);
        several_tables[at..at + len].copy_from_slice(&texty(len, at as u64));
    }
    let mut sparse_last_byte = vec![0u8; 3 * MIB];
    sparse_last_byte[3 * MIB - 1] = 1;
    vec![
        ("all zero, 4 MiB", vec![0; 4 * MIB]),
        ("dense random, 3 MiB", random(3 * MIB, 42)),
        ("1 MiB data / 1 MiB zero, 8 MiB", alternating),
        ("1 MiB + 512 bytes, dense", random(MIB + 512, 3)),
        (
            "1 MiB + 100 bytes, not a sector multiple",
            random(MIB + 100, 4),
        ),
        ("tiny, 512 bytes", random(512, 5)),
        ("data straddling grain boundaries", straddling),
        (
            "compressible text, 2 MiB + 20 KiB",
            texty(2 * MIB + 20 * KIB, 6),
        ),
        (
            "40 MiB, data every 3 MiB (two grain tables)",
            several_tables,
        ),
        ("only the last byte set", sparse_last_byte),
    ]
}

/// Decode `vmdk` every way this crate offers and compare each with qemu-img's raw output.
async fn check_against_qemu(name: &str, vmdk: &std::path::Path, max_data: u64) -> Progress {
    let reference = qemu_raw(vmdk, "vmdk");
    let input = std::fs::read(vmdk).expect("read vmdk");

    let (raw, progress) = decode(input.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(raw.len(), reference.len(), "{name}: length");
    assert_eq!(
        sha256(&raw),
        sha256(&reference),
        "{name}: raw stream differs from qemu-img"
    );
    assert_eq!(
        progress.raw_bytes(),
        reference.len() as u64,
        "{name}: raw bytes counted"
    );
    // qemu-img may leave zero sectors after the last grain; they read as an end-of-stream
    // marker, and what follows is not read.
    let consumed = progress.source_bytes();
    assert!(
        consumed > 512 && consumed <= input.len() as u64,
        "{name}: {consumed} source bytes"
    );

    check_segments(input.clone(), max_data).await;

    let file_progress = Progress::new();
    let reader = SegmentReader::vmdk(Cursor::new(input), file_progress.clone())
        .await
        .expect("header");
    let out = vmdk.with_extension("ours.raw");
    let mut file = tokio::fs::File::create(&out).await.expect("create");
    let written = reader
        .write_sparse(&mut file)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    drop(file);
    let from_file = std::fs::read(&out).expect("read ours");
    assert_eq!(
        written,
        reference.len() as u64,
        "{name}: sparse file length"
    );
    assert_eq!(
        sha256(&from_file),
        sha256(&reference),
        "{name}: sparse file differs from qemu-img"
    );
    assert_eq!(
        file_progress.raw_bytes(),
        reference.len() as u64,
        "{name}: sparse raw bytes"
    );
    progress
}

#[tokio::test]
async fn qemu_written_stream_optimized_matches_qemu_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (name, raw)) in patterns().into_iter().enumerate() {
        let vmdk = qemu_vmdk(dir.path(), &format!("p{i}"), &raw, "streamOptimized");
        let progress = check_against_qemu(name, &vmdk, 64 * KIB as u64).await;
        let nonzero_grains = raw
            .chunks(64 * KIB)
            .filter(|g| g.iter().any(|&b| b != 0))
            .count();
        assert_eq!(
            progress.grains_inflated(),
            nonzero_grains as u64,
            "{name}: grains inflated"
        );
    }
}

#[tokio::test]
async fn vmware_layout_matches_qemu_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (name, raw)) in patterns().into_iter().enumerate() {
        // VMware's 64 KiB grains for every pattern; 8 KiB and 1 MiB grains for the small ones.
        // Compressing in an unoptimised test build is slow: only small disks with 64 KiB
        // grains are really deflated, the others get stored deflate blocks.
        let small = raw.len() <= 3 * MIB;
        let sizes: &[u64] = if small { &[16, 128, 2048] } else { &[128] };
        for &grain_sectors in sizes {
            let level = match (small, grain_sectors) {
                (true, 128) => Compression::fast(),
                _ => Compression::none(),
            };
            let vmdk = dir.path().join(format!("vm{i}-{grain_sectors}.vmdk"));
            std::fs::write(&vmdk, StreamBuilder::from_raw(&raw, grain_sectors, level))
                .expect("write");
            let name = format!("{name}, VMware layout, {grain_sectors}-sector grains");
            check_against_qemu(&name, &vmdk, grain_sectors * 512).await;
        }
    }
}

#[tokio::test]
async fn all_zero_disk_inflates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let qemu = std::fs::read(qemu_vmdk(
        dir.path(),
        "zero",
        &vec![0; 16 * MIB],
        "streamOptimized",
    ))
    .expect("read");
    let vmware = StreamBuilder::from_raw(&vec![0; 16 * MIB], 128, Compression::fast());
    for (layout, input) in [("qemu-img", qemu), ("VMware", vmware)] {
        let (raw, progress) = decode(input.clone()).await.expect("decodes");
        assert_eq!(raw.len(), 16 * MIB, "{layout}");
        assert!(raw.iter().all(|&b| b == 0), "{layout}");
        assert_eq!(progress.grains_inflated(), 0, "{layout}: no grain inflated");
        assert_eq!(progress.inflated_bytes(), 0, "{layout}: no byte inflated");
        let segments = check_segments(input, 64 * KIB as u64).await;
        assert_eq!(
            segments,
            vec![Segment::Zero {
                offset: 0,
                len: 16 * MIB as u64
            }],
            "{layout}"
        );
    }
}

#[tokio::test]
async fn monolithic_flat_passes_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (name, raw)) in patterns().into_iter().enumerate().take(7) {
        let descriptor_path = qemu_vmdk(dir.path(), &format!("flat{i}"), &raw, "monolithicFlat");
        let reference = qemu_raw(&descriptor_path, "vmdk");

        let file = tokio::fs::File::open(&descriptor_path).await.expect("open");
        let (format, mut sniffed) = sniff(file).await.expect("sniff");
        assert_eq!(format, SourceFormat::VmdkDescriptor, "{name}");
        let mut text = String::new();
        sniffed
            .read_to_string(&mut text)
            .await
            .expect("descriptor text");
        let descriptor = Descriptor::parse(&text).expect("descriptor parses");
        assert_eq!(descriptor.create_type, "monolithicFlat");
        let extent = descriptor.single_flat_extent().expect("one flat extent");
        assert_eq!(extent.offset, 0);

        let flat =
            tokio::fs::File::open(dir.path().join(extent.file.as_deref().unwrap_or_default()))
                .await
                .expect("open flat extent");
        let progress = Progress::new();
        let reader = SegmentReader::flat(flat, descriptor.capacity_bytes(), progress.clone());
        let ours: Vec<u8> = reader
            .into_raw_stream()
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .expect("passes through");
        assert_eq!(
            sha256(&ours),
            sha256(&reference),
            "{name}: flat passthrough differs"
        );
        assert_eq!(progress.raw_bytes(), reference.len() as u64, "{name}");
        assert_eq!(progress.source_bytes(), reference.len() as u64, "{name}");
    }
}

#[tokio::test]
async fn sniff_detects_and_keeps_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = random(MIB, 9);
    let qcow2 = dir.path().join("d.qcow2");
    let raw_path = dir.path().join("d.raw");
    std::fs::write(&raw_path, &raw).expect("write");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path(&raw_path),
        path(&qcow2),
    ]);
    let cases = [
        (
            "streamOptimized",
            qemu_vmdk(dir.path(), "s", &raw, "streamOptimized"),
            SourceFormat::StreamOptimizedVmdk,
        ),
        (
            "monolithicSparse",
            qemu_vmdk(dir.path(), "m", &raw, "monolithicSparse"),
            SourceFormat::SparseVmdk,
        ),
        (
            "monolithicFlat descriptor",
            qemu_vmdk(dir.path(), "f", &raw, "monolithicFlat"),
            SourceFormat::VmdkDescriptor,
        ),
        ("qcow2", qcow2, SourceFormat::Qcow2),
        ("raw", raw_path, SourceFormat::Unknown),
    ];
    for (name, file, expected) in cases {
        let original = std::fs::read(&file).expect("read");
        let (format, mut sniffed) = sniff(Cursor::new(original.clone())).await.expect("sniff");
        assert_eq!(format, expected, "{name}");
        let mut again = Vec::new();
        sniffed.read_to_end(&mut again).await.expect("read sniffed");
        assert_eq!(again, original, "{name}: sniff must not lose bytes");
    }
    // Shorter than the detection window.
    let (format, mut sniffed) = sniff(Cursor::new(b"QFI\xfb".to_vec()))
        .await
        .expect("sniff");
    assert_eq!(format, SourceFormat::Qcow2);
    let mut again = Vec::new();
    sniffed.read_to_end(&mut again).await.expect("read");
    assert_eq!(again, b"QFI\xfb");
}

#[tokio::test]
async fn progress_is_visible_while_streaming() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = random(4 * MIB, 11);
    let input = std::fs::read(qemu_vmdk(dir.path(), "p", &raw, "streamOptimized")).expect("read");
    let progress = Progress::new();
    let reader = SegmentReader::vmdk(Cursor::new(input), progress.clone())
        .await
        .expect("header");
    let stream = reader.into_raw_stream();
    futures::pin_mut!(stream);
    let mut seen = Vec::new();
    while let Some(chunk) = stream.try_next().await.expect("decodes") {
        seen.push((
            chunk.len() as u64,
            progress.raw_bytes(),
            progress.source_bytes(),
        ));
    }
    let mut total = 0;
    for (len, raw_done, source_done) in &seen {
        total += len;
        assert_eq!(*raw_done, total, "raw bytes counted as yielded");
        assert!(*source_done > 0);
    }
    assert_eq!(total, 4 * MIB as u64);
    assert!(
        seen.len() >= 64,
        "one chunk per grain, not the whole disk at once"
    );
}

/// The controller runs each disk on its own task: the futures must be `Send`.
#[tokio::test]
async fn conversions_run_on_spawned_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = random(100 * KIB, 12);
    let input = StreamBuilder::from_raw(&raw, 128, Compression::fast());
    let out = dir.path().join("spawned.raw");
    let mut file = tokio::fs::File::create(&out).await.expect("create");
    let written = tokio::spawn(async move {
        let reader = SegmentReader::vmdk(Cursor::new(input), Progress::new()).await?;
        reader.write_sparse(&mut file).await
    })
    .await
    .expect("join")
    .expect("converts");
    assert_eq!(written, 100 * KIB as u64);
    assert_eq!(std::fs::read(&out).expect("read"), raw);
}
