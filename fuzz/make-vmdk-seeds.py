#!/usr/bin/env python3
"""Writes the seed corpus of the vmdk_stream fuzz target (fuzz/corpus/vmdk_stream/).

One real streamOptimized VMDK from `qemu-img convert -O vmdk -o subformat=streamOptimized`
(256 KiB disk, three grains), cut after its end-of-stream marker, and its first two sectors
alone; then small streams built on qemu's header with 512-byte to 4 KiB grains, so the fuzzer
mutates kilobytes rather than qemu's 64 KiB front area: VMware's layout (grains, grain table,
grain directory, footer and end-of-stream markers), qemu's layout (grain tables in front, no
end-of-stream marker), a last grain cut at the capacity, a descriptor and a qcow2 header.
Run it from the repository root when the decoder learns a new layout; needs qemu-img.
"""
import os
import struct
import subprocess
import tempfile
import zlib

OUT = "fuzz/corpus/vmdk_stream"
SECTOR = 512
GD_AT_END = 0xFFFFFFFFFFFFFFFF


def qemu_stream():
    with tempfile.TemporaryDirectory() as tmp:
        raw = bytearray(256 * 1024)
        raw[0:512] = bytes(range(256)) * 2
        raw[70000:70100] = b"hello fuzz" * 10
        raw[200000:200004] = b"\xde\xad\xbe\xef"
        with open(f"{tmp}/disk.raw", "wb") as f:
            f.write(raw)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                        "subformat=streamOptimized", f"{tmp}/disk.raw", f"{tmp}/disk.vmdk"],
                       check=True)
        with open(f"{tmp}/disk.vmdk", "rb") as f:
            return f.read()


def markers_end(vmdk):
    """The offset just after the end-of-stream marker (qemu pads the file after it)."""
    overhead = struct.unpack_from("<Q", vmdk, 64)[0]
    pos = overhead * SECTOR
    while True:
        value, size = struct.unpack_from("<QI", vmdk, pos)
        if size:
            pos += (12 + size + SECTOR - 1) // SECTOR * SECTOR
            continue
        kind = struct.unpack_from("<I", vmdk, pos + 12)[0]
        pos += SECTOR + value * SECTOR
        if kind == 0:
            return pos


def header(template, capacity, grain, overhead, gd_offset):
    h = bytearray(template[:SECTOR])
    struct.pack_into("<Q", h, 12, capacity)
    struct.pack_into("<Q", h, 20, grain)
    struct.pack_into("<Q", h, 28, 0)  # no embedded descriptor
    struct.pack_into("<Q", h, 36, 0)
    struct.pack_into("<I", h, 44, 128)  # entries per grain table: one sector each
    struct.pack_into("<Q", h, 48, 0)  # no redundant grain directory
    struct.pack_into("<Q", h, 56, gd_offset)
    struct.pack_into("<Q", h, 64, overhead)
    return bytes(h)


def pad(data):
    return data + bytes(-len(data) % SECTOR)


def grain_marker(lba, data):
    compressed = zlib.compress(data)
    return pad(struct.pack("<QI", lba, len(compressed)) + compressed)


def metadata_marker(kind, payload):
    marker = struct.pack("<QII", len(payload) // SECTOR, 0, kind)
    return pad(marker) + payload


def grain_data(lba, size):
    return bytes((lba * 7 + i) % 251 for i in range(size))


def vmware_layout(template, capacity, grain, grains):
    out = header(template, capacity, grain, 1, GD_AT_END)
    table = bytearray(SECTOR)
    for lba in grains:
        size = min(grain, capacity - lba) * SECTOR
        at = len(out) // SECTOR
        out += grain_marker(lba, grain_data(lba, size))
        struct.pack_into("<I", table, 4 * (lba // grain), at)
    table_at = len(out) // SECTOR + 1
    out += metadata_marker(1, bytes(table))
    directory = pad(struct.pack("<I", table_at))
    gd_at = len(out) // SECTOR + 1
    out += metadata_marker(2, directory)
    out += metadata_marker(3, header(template, capacity, grain, 1, gd_at))
    out += metadata_marker(0, b"")
    return out


def qemu_layout(template, capacity, grain, grains):
    # Sector 1: the grain directory, sector 2: the one grain table, grains from sector 3.
    out = bytearray(header(template, capacity, grain, 3, 1))
    directory = pad(struct.pack("<I", 2))
    table = bytearray(SECTOR)
    body = b""
    for lba in grains:
        struct.pack_into("<I", table, 4 * (lba // grain), 3 + len(body) // SECTOR)
        size = min(grain, capacity - lba) * SECTOR
        body += grain_marker(lba, grain_data(lba, size))
    return bytes(out) + directory + bytes(table) + body


def main():
    os.makedirs(OUT, exist_ok=True)
    vmdk = qemu_stream()
    seeds = {
        "qemu-256k-three-grains": vmdk[:markers_end(vmdk)],
        "qemu-header-and-descriptor": vmdk[:2 * SECTOR],
        "vmware-layout-512b-grains": vmware_layout(vmdk, 16, 1, [0, 3, 7, 15]),
        "vmware-layout-4k-grains": vmware_layout(vmdk, 40, 8, [0, 16, 32]),
        "qemu-layout-512b-grains": qemu_layout(vmdk, 8, 1, [1, 2, 6]),
        "last-grain-cut-at-capacity": qemu_layout(vmdk, 10, 8, [0, 8]),
        "descriptor-monolithic-flat": b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n'
                                      b'RW 2048 FLAT "disk-flat.vmdk" 0\n',
        "qcow2-header": b"QFI\xfb\x00\x00\x00\x03" + bytes(96),
    }
    for name, data in seeds.items():
        with open(f"{OUT}/{name}", "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
