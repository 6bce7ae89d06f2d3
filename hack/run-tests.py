#!/usr/bin/env python3
"""Runs the workspace's test binaries, several at a time.

`cargo test` runs one test binary after another. Ours spend most of their
time waiting on peers (kube-apiserver, vcsim, Keystone, webhooks) rather
than computing, so on two cores one binary at a time leaves the machine
half idle (docs/ci.md). This builds every test target with `cargo test
--no-run`, then runs the binaries `VMM_TEST_JOBS` at a time (2 by default),
the longest first by the times of the last run (kept beside the cargo target;
`hack/test-times.json` for a first run),
each as cargo would run it (in its package's directory, with
`CARGO_MANIFEST_DIR` set). Each binary's output is printed whole when it ends,
so outputs never interleave, with its wall time and its process's CPU time;
then the doc tests;
then a table of the slowest binaries. Exits non-zero if any binary failed,
after running all of them (like `--no-fail-fast`).

Usage: run-tests.py [cargo test options, e.g. --features X] [-- test args]
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGET_SELECTORS = {
    "--lib", "--bin", "--bins", "--example", "--examples", "--test", "--tests", "--bench", "--benches", "--all-targets"
}


def test_binaries(cargo_args):
    """(name, executable, package dir) of every test target, built."""
    built = subprocess.run(
        ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args],
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    binaries = []
    for line in built.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        if not message["profile"]["test"]:
            continue
        target = message["target"]
        package = Path(message["manifest_path"]).parent
        name = f"{package.name}/{target['kind'][0]}/{target['name']}"
        binaries.append((name, message["executable"], package))
    return binaries


def run_one(executable, package, test_args):
    """Runs one binary; returns (ok, output, wall seconds, CPU seconds)."""
    env = dict(os.environ, CARGO_MANIFEST_DIR=str(package))
    started = time.monotonic()
    with tempfile.TemporaryFile("w+", errors="replace") as log:
        process = subprocess.Popen(
            [executable, *test_args], cwd=package, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        # wait4's usage counts the binary and the children it reaped (not
        # the peers it kills on exit: those die after it).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    wall = time.monotonic() - started
    return process.returncode == 0, output, wall, usage.ru_utime + usage.ru_stime


def main():
    args = sys.argv[1:]
    cargo_args, test_args = (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, [])
    jobs = int(os.environ.get("VMM_TEST_JOBS", "2"))
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    times_file = target_dir / "test-times.json"
    # The committed times (hack/test-times.json) order a first run; a
    # machine's own last run refines them.
    last_times = {}
    for known in [Path(__file__).with_name("test-times.json"), times_file]:
        try:
            last_times.update(json.loads(known.read_text()))
        except (OSError, ValueError):
            pass

    binaries = test_binaries(cargo_args)
    # Longest first, so the last binaries to end are short ones.
    queue = sorted(binaries, key=lambda b: -last_times.get(b[0], 0.0))
    lock = threading.Lock()
    results = {}
    started = time.monotonic()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                name, executable, package = queue.pop(0)
            ok, output, wall, cpu = run_one(executable, package, test_args)
            with lock:
                results[name] = (ok, wall, cpu)
                verdict = "ok" if ok else "FAILED"
                print(f"=== {verdict}: {name} ({wall:.1f} s wall, {cpu:.1f} s CPU)", flush=True)
                sys.stdout.write(output)
                sys.stdout.flush()

    threads = [threading.Thread(target=worker) for _ in range(max(jobs, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    binaries_wall = time.monotonic() - started

    # Doc tests are no binary of their own; cargo refuses --doc beside a
    # target selection, and a selection (e.g. --test x) means no doc tests.
    selected = any(a.split("=")[0] in TARGET_SELECTORS for a in cargo_args)
    doc = subprocess.run(["true"] if selected else ["cargo", "test", "--doc", *cargo_args, "--", *test_args])

    times_file.parent.mkdir(parents=True, exist_ok=True)
    last_times.update({name: wall for name, (_, wall, _) in results.items()})
    times_file.write_text(json.dumps(last_times, indent=1))
    slowest = sorted(results.items(), key=lambda r: -r[1][1])[:12]
    cpu = sum(r[2] for r in results.values())
    print(
        f"\n{len(results)} test binaries, {jobs} at a time: {binaries_wall:.0f} s wall,"
        f" {cpu:.0f} s CPU in the test processes; the slowest:"
    )
    for name, (_, wall, _) in slowest:
        print(f"  {wall:7.1f} s  {name}")
    failed = sorted(name for name, (ok, _, _) in results.items() if not ok)
    if doc.returncode != 0:
        failed.append("doc tests")
    if failed:
        print(f"\n{len(failed)} failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
