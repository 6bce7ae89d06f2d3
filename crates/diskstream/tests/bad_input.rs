//! Bad input: each case a specific error, none a panic.

mod common;

use std::io::Cursor;

use common::*;
use vmm_diskstream::{Error, Progress, SegmentReader, SourceFormat};

/// A qemu-img streamOptimized file: 3 grains of data, a gap, 1 more grain.
fn qemu_stream(dir: &std::path::Path) -> Vec<u8> {
    let mut raw = vec![0u8; 2 * MIB];
    raw[..3 * 64 * KIB].copy_from_slice(&texty(3 * 64 * KIB, 1));
    raw[MIB..MIB + 100].copy_from_slice(&[7; 100]);
    std::fs::read(qemu_vmdk(dir, "base", &raw, "streamOptimized")).expect("read")
}

/// Byte offset of the first grain marker in a qemu-img file (after its 128-sector front area)
/// and that grain's compressed size.
fn first_grain(v: &[u8]) -> (usize, usize) {
    let at = 128 * 512;
    let size = u32::from_le_bytes(v[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
    (at, size)
}

fn cut(v: &[u8], len: usize) -> Vec<u8> {
    v[..len].to_vec()
}

fn patched(v: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = v.to_vec();
    v[at..at + bytes.len()].copy_from_slice(bytes);
    v
}

fn vmware(build: impl FnOnce(&mut StreamBuilder)) -> Vec<u8> {
    // 4 MiB disk, 64 KiB grains.
    let mut b = StreamBuilder::new(8192, 128);
    build(&mut b);
    b.finish()
}

type Check = fn(&Error) -> bool;

#[tokio::test]
async fn bad_inputs_are_specific_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = qemu_stream(dir.path());
    let (g, gsize) = first_grain(&q);
    let grain_end = g + 12 + gsize;
    let second_grain = grain_end.next_multiple_of(512);
    assert!(
        grain_end % 512 != 0,
        "the first grain has padding to cut into"
    );

    let raw_path = dir.path().join("q.raw");
    std::fs::write(&raw_path, random(MIB, 2)).expect("write");
    let qcow2_path = dir.path().join("q.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path(&raw_path),
        path(&qcow2_path),
    ]);
    let qcow2 = std::fs::read(&qcow2_path).expect("read");
    let sparse = std::fs::read(qemu_vmdk(
        dir.path(),
        "m",
        &random(MIB, 3),
        "monolithicSparse",
    ))
    .expect("read");
    let flat_descriptor = std::fs::read(qemu_vmdk(
        dir.path(),
        "f",
        &random(MIB, 4),
        "monolithicFlat",
    ))
    .expect("read");
    let grain = random(64 * KIB, 5);
    let vm = vmware(|b| {
        b.grain(0, &grain);
        b.grain(128, &grain);
    });

    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("empty", vec![], |e| {
            matches!(
                e,
                Error::Truncated {
                    what: "sparse extent header",
                    offset: 0
                }
            )
        }),
        ("wrong magic", patched(&q, 0, b"XXXX"), |e| {
            matches!(e, Error::BadHeader(_))
        }),
        ("qcow2", qcow2, |e| {
            matches!(
                e,
                Error::UnsupportedFormat {
                    format: SourceFormat::Qcow2
                }
            )
        }),
        ("monolithicSparse", sparse, |e| {
            matches!(
                e,
                Error::UnsupportedFormat {
                    format: SourceFormat::SparseVmdk
                }
            )
        }),
        ("descriptor", flat_descriptor, |e| {
            matches!(
                e,
                Error::UnsupportedFormat {
                    format: SourceFormat::VmdkDescriptor
                }
            )
        }),
        (
            "version 4",
            patched(&q, 4, &4u32.to_le_bytes()),
            |e| matches!(e, Error::Unsupported(m) if m.contains("version 4")),
        ),
        (
            "compression 2",
            patched(&q, 77, &2u16.to_le_bytes()),
            |e| matches!(e, Error::Unsupported(m) if m.contains("compression")),
        ),
        (
            "grain size 3",
            patched(&q, 20, &3u64.to_le_bytes()),
            |e| matches!(e, Error::BadHeader(m) if m.contains("power of two")),
        ),
        (
            "grain size 1 GiB",
            patched(&q, 20, &(1u64 << 21).to_le_bytes()),
            |e| matches!(e, Error::Unsupported(m) if m.contains("grain size")),
        ),
        (
            "CRLF-damaged check bytes",
            patched(&q, 73, b"\r\n \r"),
            |e| matches!(e, Error::BadHeader(m) if m.contains("newline")),
        ),
        (
            "overHead 0",
            patched(&q, 64, &0u64.to_le_bytes()),
            |e| matches!(e, Error::BadHeader(m) if m.contains("overHead")),
        ),
        ("cut in the header", cut(&q, 100), |e| {
            matches!(
                e,
                Error::Truncated {
                    what: "sparse extent header",
                    ..
                }
            )
        }),
        (
            "cut in the front area",
            cut(&q, 600),
            |e| matches!(e, Error::Truncated { what, .. } if what.starts_with("front area")),
        ),
        ("cut in a grain marker", cut(&q, g + 6), |e| {
            matches!(
                e,
                Error::Truncated {
                    what: "marker",
                    offset: 65536
                }
            )
        }),
        ("cut in grain data", cut(&q, g + 100), |e| {
            matches!(
                e,
                Error::Truncated {
                    what: "grain",
                    offset: 65536
                }
            )
        }),
        ("cut in grain padding", cut(&q, grain_end + 1), |e| {
            matches!(
                e,
                Error::Truncated {
                    what: "grain padding",
                    ..
                }
            )
        }),
        (
            "cut at a grain boundary (qemu layout)",
            cut(&q, second_grain),
            |e| matches!(e, Error::EndedEarly { detail, .. } if detail.contains("1 of the 4 grains")),
        ),
        (
            "zero-filled after the first grain (qemu layout)",
            {
                let mut v = q.clone();
                v[second_grain..].fill(0);
                v
            },
            |e| matches!(e, Error::EndedEarly { detail, .. } if detail.contains("end-of-stream marker after 1 of the 4")),
        ),
        ("corrupt zlib header", patched(&q, g + 12, &[0, 0]), |e| {
            matches!(e, Error::Corrupt { lba: 0, .. })
        }),
        (
            "corrupt adler32",
            {
                let mut v = q.clone();
                v[grain_end - 2] ^= 0xff;
                v
            },
            |e| matches!(e, Error::Corrupt { lba: 0, .. }),
        ),
        (
            "grain claims 4 GiB",
            patched(&q, g + 8, &u32::MAX.to_le_bytes()),
            |e| matches!(e, Error::BadGrain { detail, .. } if detail.contains("claims")),
        ),
        (
            "VMware layout cut before EOS",
            cut(&vm, vm.len() - 512),
            |e| matches!(e, Error::EndedEarly { detail, .. } if detail.contains("without an end-of-stream marker")),
        ),
        (
            "VMware layout cut in the footer",
            cut(&vm, vm.len() - 1000),
            |e| matches!(e, Error::Truncated { what: "footer", .. }),
        ),
        (
            "VMware layout cut after the grains",
            cut(&vm, 128 * 512 + 2 * second_grain_len(&vm)),
            |e| matches!(e, Error::EndedEarly { .. }),
        ),
        (
            "out of order",
            vmware(|b| {
                b.grain(256, &grain);
                b.grain(128, &grain);
            }),
            |e| {
                matches!(
                    e,
                    Error::OutOfOrder {
                        lba: 128,
                        previous: 256
                    }
                )
            },
        ),
        (
            "duplicate grain",
            vmware(|b| {
                b.grain(128, &grain);
                b.grain(128, &grain);
            }),
            |e| {
                matches!(
                    e,
                    Error::OutOfOrder {
                        lba: 128,
                        previous: 128
                    }
                )
            },
        ),
        (
            "misaligned grain",
            vmware(|b| b.grain(3, &grain)),
            |e| matches!(e, Error::BadGrain { lba: 3, detail, .. } if detail.contains("aligned")),
        ),
        (
            "grain beyond the disk",
            vmware(|b| b.grain(8192, &grain)),
            |e| matches!(e, Error::BadGrain { lba: 8192, detail, .. } if detail.contains("beyond")),
        ),
        ("short grain", vmware(|b| b.grain(0, &[1; 1000])), |e| {
            matches!(
                e,
                Error::GrainSize {
                    lba: 0,
                    actual: 1000,
                    expected: 65536
                }
            )
        }),
        ("long grain", vmware(|b| b.grain(0, &[1; 100_000])), |e| {
            matches!(
                e,
                Error::GrainSize {
                    lba: 0,
                    actual: 100_000,
                    expected: 65536
                }
            )
        }),
        ("empty zlib grain", vmware(|b| b.grain(0, &[])), |e| {
            matches!(
                e,
                Error::GrainSize {
                    lba: 0,
                    actual: 0,
                    ..
                }
            )
        }),
        (
            "unknown marker type",
            vmware(|b| {
                b.metadata(7, &[0; 512]);
            }),
            |e| {
                matches!(
                    e,
                    Error::UnknownMarker {
                        kind: 7,
                        offset: 65536
                    }
                )
            },
        ),
        (
            "extra grain (qemu layout)",
            extra_grain(&q),
            |e| matches!(e, Error::BadGrain { detail, .. } if detail.contains("more grains than the 4")),
        ),
    ];

    for (name, input, check) in cases {
        match decode(input).await {
            Ok(_) => panic!("{name}: decoded without error"),
            Err(e) => {
                assert!(check(&e), "{name}: unexpected error {e:?}");
                assert!(e.is_format_error(), "{name}: {e:?} is a format error");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// Bytes of one grain marker of the VMware test stream (random data: the same for both).
fn second_grain_len(vm: &[u8]) -> usize {
    let at = 128 * 512;
    let size = u32::from_le_bytes(vm[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
    (12 + size).next_multiple_of(512)
}

/// The qemu file cut after its grains, plus one grain its tables do not list.
fn extra_grain(q: &[u8]) -> Vec<u8> {
    let mut v = q.to_vec();
    // Find the end of the last grain: walk the markers.
    let mut at = 128 * 512;
    loop {
        let size = u32::from_le_bytes(v[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        if size == 0 {
            break;
        }
        at += (12 + size).next_multiple_of(512);
    }
    v.truncate(at);
    let mut b = StreamBuilder::new(8, 8);
    b.grain(0, &[0; 4096]);
    let built = b.out;
    let mut marker = built[128 * 512..].to_vec();
    marker[0..8].copy_from_slice(&3072u64.to_le_bytes()); // after the last grain at 2048
    v.extend_from_slice(&marker);
    v
}

#[tokio::test]
async fn a_failed_reader_stays_failed() {
    let vm = vmware(|b| {
        b.grain(256, &[1; 65536]);
        b.grain(128, &[1; 65536]);
        b.grain(512, &[1; 65536]);
    });
    let mut reader = SegmentReader::vmdk(Cursor::new(vm), Progress::new())
        .await
        .expect("header");
    let mut errors = Vec::new();
    for _ in 0..5 {
        if let Err(e) = reader.next_segment().await {
            errors.push(e);
        }
    }
    assert!(
        matches!(
            errors[0],
            Error::OutOfOrder {
                lba: 128,
                previous: 256
            }
        ),
        "{errors:?}"
    );
    assert!(
        errors[1..]
            .iter()
            .all(|e| matches!(e, Error::AlreadyFailed)),
        "{errors:?}"
    );
    assert_eq!(
        errors.len(),
        3,
        "zero gap and the first grain came out: {errors:?}"
    );
}

#[tokio::test]
async fn flat_source_shorter_than_its_capacity() {
    let reader = SegmentReader::flat(Cursor::new(vec![1u8; 3000]), 4096, Progress::new());
    let err = collect(reader).await.expect_err("short flat source");
    assert!(
        matches!(
            err,
            Error::Truncated {
                what: "flat extent",
                offset: 3000
            }
        ),
        "{err:?}"
    );

    // Longer is fine: only the capacity is read.
    let reader = SegmentReader::flat(Cursor::new(vec![1u8; 5000]), 4096, Progress::new());
    assert_eq!(collect(reader).await.expect("reads").len(), 4096);
}

async fn collect(reader: SegmentReader<Cursor<Vec<u8>>>) -> Result<Vec<u8>, Error> {
    use futures::TryStreamExt;
    reader
        .into_raw_stream()
        .try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
}

/// Every cut of a valid stream is an error, and no damaged byte anywhere makes the decoder
/// panic or produce a raw image of the wrong length.
#[tokio::test]
async fn no_cut_or_flipped_byte_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small grains' worth of data: every decode below inflates them (unoptimised in tests).
    let mut raw = vec![0u8; 512 * KIB];
    raw[..20 * KIB].copy_from_slice(&texty(20 * KIB, 8));
    raw[300 * KIB..302 * KIB].copy_from_slice(&random(2 * KIB, 9));
    let qemu = std::fs::read(qemu_vmdk(dir.path(), "n", &raw, "streamOptimized")).expect("read");
    let (full, _) = decode(qemu.clone()).await.expect("valid");
    // Up to the last grain's end: qemu-img's trailing zero sectors are not part of the stream.
    let qemu_end = (128 * 512..qemu.len())
        .step_by(512)
        .rfind(|&s| qemu[s..s + 512].iter().any(|&b| b != 0))
        .map(|s| s + 512)
        .expect("grains");
    let vmware = StreamBuilder::from_raw(&raw, 128, Compression::fast());

    for (layout, input, end) in [
        ("qemu-img", &qemu, qemu_end),
        ("VMware", &vmware, vmware.len()),
    ] {
        for len in (0..end).step_by(97).chain([end - 1]) {
            let result = decode(input[..len].to_vec()).await;
            assert!(result.is_err(), "{layout}: cut at {len} of {end} decoded");
        }
        // Every 61st byte of the header and the grains, every 509th of the front area.
        let front = (512..128 * 512).step_by(509);
        for at in (0..512)
            .step_by(61)
            .chain(front)
            .chain((128 * 512..end).step_by(61))
        {
            let mut damaged = input.clone();
            damaged[at] ^= 0x5a;
            if let Ok((out, _)) = decode(damaged).await {
                // Damage in places no reader looks at (padding, descriptor) is harmless.
                assert!(
                    out.len() == full.len() || at < 512,
                    "{layout}: flip at {at}"
                );
            }
        }
    }
}
