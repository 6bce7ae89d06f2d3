//! The dependency rules of docs/architecture.md, checked on the tree: the
//! core crate links no vendor client, neither binary names a vendor's types
//! (so a new source kind plugs in behind the core traits only), and what
//! ships parses vSphere's answers strictly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo tree` of `packages` built together, one line per node.
fn tree(packages: &[&str], edges: &str) -> Vec<String> {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(repo_root())
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(["--edges", edges]);
    for package in packages {
        command.args(["--package", package]);
    }
    let output = command.output().expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    text.lines().map(str::to_owned).collect()
}

/// The packages `package` links, as cargo resolves them: normal
/// dependencies only, with the features this workspace turns on for it.
fn links(package: &str) -> BTreeSet<String> {
    tree(&[package], "normal")
        .iter()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Whether vim_rs's tolerant parsing for vcsim is on when `packages` are
/// built together.
fn parses_for_vcsim(packages: &[&str]) -> bool {
    tree(packages, "normal,build,features")
        .iter()
        .any(|line| line.contains("vcsim_compat"))
}

#[test]
fn only_the_test_world_parses_for_vcsim() {
    // What ships (hack/build-images.sh, the Dockerfile): the two servers alone.
    assert!(!parses_for_vcsim(&["vmm-apiserver", "vmm-controller"]));
    assert!(
        parses_for_vcsim(&["vmm-testkit"]),
        "the harness turns it on"
    );
}

#[test]
fn the_core_links_no_client() {
    let core = links("vmm-core");
    assert!(core.contains("rustls"), "cargo tree was read: {core:?}");
    for client in [
        "vim_rs",
        "reqwest",
        "hyper",
        "kube-client",
        "vmm-vsphere",
        "vmm-providers",
    ] {
        assert!(!core.contains(client), "vmm-core depends on {client}");
    }
    // The vendor library is linked by its client crate and what uses it.
    assert!(links("vmm-vsphere").contains("vim_rs"));
}

#[test]
fn the_binaries_name_no_vendor_type() {
    const VENDOR: [&str; 6] = [
        "VsphereClient",
        "VsphereError",
        "ExportLease",
        "DiskBacking",
        "vim_rs",
        "vmm_vsphere",
    ];
    let mut found = Vec::new();
    for dir in ["apiserver/src", "controller/src"] {
        let mut todo = vec![repo_root().join(dir)];
        while let Some(path) = todo.pop() {
            if path.is_dir() {
                todo.extend(
                    std::fs::read_dir(&path)
                        .expect("a source directory")
                        .map(|entry| entry.expect("an entry").path()),
                );
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                found.extend(
                    VENDOR
                        .iter()
                        .filter(|name| text.contains(*name))
                        .map(|name| format!("{} names {name}", path.display())),
                );
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
