#!/usr/bin/env python3
"""Drops stale build output from the shared cargo target directory.

Every change of a crate's features or sources leaves its old artifacts in
`<target>/<profile>/deps` under another hash; with the workspace's binaries at
hundreds of MB each, a day of commits can fill the disk (it did here: 46 GB
of stale artifacts). Per artifact name, only the three newest
hashes are kept (a library is built for clippy, as released and with the
test features, so a warm run still finds all three), and `incremental/` is
dropped. Usage: prune-target.py <target-dir>
"""

import collections
import os
import re
import shutil
import sys

ARTIFACT = re.compile(r"^(.*)-([0-9a-f]{16})(\..*)?$")
KEEP = 3


def prune_deps(deps):
    by_name = collections.defaultdict(lambda: collections.defaultdict(list))
    for entry in os.scandir(deps):
        match = ARTIFACT.match(entry.name)
        if match:
            by_name[match.group(1)][match.group(2)].append(entry)
    freed = 0
    for hashes in by_name.values():
        newest = sorted(
            hashes.values(),
            key=lambda files: max(f.stat().st_mtime for f in files),
            reverse=True,
        )
        for files in newest[KEEP:]:
            for f in files:
                freed += f.stat().st_size
                os.remove(f.path)
    return freed


def main(target):
    freed = 0
    for profile in ("debug", "release"):
        deps = os.path.join(target, profile, "deps")
        if os.path.isdir(deps):
            freed += prune_deps(deps)
        incremental = os.path.join(target, profile, "incremental")
        if os.path.isdir(incremental):
            shutil.rmtree(incremental)
    print(f"[prune-target] {freed / 2**30:.1f} GiB of stale artifacts dropped", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
