//! `vmm-dev` (the README's "try it" command) brings the whole system up, the demo
//! source is listed by kubectl, and SIGTERM leaves no process behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_testkit::namespace::random_suffix;
use vmm_testkit::process::{StdoutMode, run_dir};
use vmm_testkit::{Peers, ProcessBuilder, workspace_binary};

/// Every process started by `vmm-dev` inherits this variable, so after it
/// stops we can look for survivors in `/proc`.
const TAG_VAR: &str = "VMM_DEV_STACK_TEST_TAG";

#[test]
fn dev_stack_starts_lists_the_demo_source_and_stops_cleanly() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_vmm-dev"));
    for server in ["vmm-apiserver", "vmm-controller"] {
        workspace_binary(server).expect("vmm-dev starts the servers built next to it");
    }
    let tag = format!("dev-stack-{}", random_suffix());
    let state_dir = run_dir().expect("run dir").join("state");

    let mut dev = ProcessBuilder::new("vmm-dev", &exe)
        .args(["--vms", "2", "--state-dir"])
        .arg(&state_dir)
        .env(TAG_VAR, &tag)
        .stdout(StdoutMode::Piped)
        .grace(Duration::from_secs(30))
        .spawn()
        .expect("start vmm-dev");
    let stdout = BufReader::new(dev.take_stdout().expect("piped stdout"));

    let mut kubeconfig = None;
    for line in stdout.lines() {
        let line = line.expect("read vmm-dev output");
        if let Some(path) = line.trim().strip_prefix("export KUBECONFIG=") {
            kubeconfig = Some(PathBuf::from(path));
        }
        if line.starts_with("Stop everything with Ctrl-C") {
            break;
        }
    }
    let kubeconfig = kubeconfig.unwrap_or_else(|| {
        panic!(
            "vmm-dev printed no kubeconfig path; its log:\n{}",
            dev.log_tail(40)
        )
    });
    assert_eq!(kubeconfig, state_dir.join("kubeconfig"));

    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(Peers::get().expect("peers").kubectl())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = kubectl(&["get", "vspheres", "-n", "demo"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("vcsim ") && l.contains("https://127.0.0.1:")),
        "demo source not listed:\n{table}"
    );
    let resources = kubectl(&["api-resources", "--api-group", "inventory.harvesterhci.io"]);
    assert!(
        resources.lines().any(|l| l.starts_with("virtualmachines ")),
        "the inventory API is not registered:\n{resources}"
    );

    let status = dev.stop().expect("stop vmm-dev");
    assert!(status.success(), "vmm-dev exited with {status} on SIGTERM");
    let survivors = wait_for_no_process_tagged(&tag, Duration::from_secs(15));
    assert!(survivors.is_empty(), "processes left behind: {survivors:?}");
    assert!(!kubeconfig.exists(), "the kubeconfig outlived the stack");
}

/// Pids (with command lines) of processes whose environment carries the tag.
fn processes_tagged(tag: &str) -> Vec<String> {
    let needle = format!("{TAG_VAR}={tag}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|e| describe(&e.path()))
        .collect()
}

fn describe(proc_dir: &Path) -> String {
    let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    format!("{}: {cmdline}", proc_dir.display())
}

fn wait_for_no_process_tagged(tag: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let survivors = processes_tagged(tag);
        if survivors.is_empty() || Instant::now() >= deadline {
            return survivors;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
