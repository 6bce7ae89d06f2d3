//! The dependency rules of docs/architecture.md, checked on the tree: the
//! core crate links no vendor client, neither binary names a vendor's types
//! (so a new source kind plugs in behind the core traits only), every
//! build parses vSphere's answers strictly, and the servers alone resolve
//! each dependency as the test build does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo tree` with `args`, one line per node.
fn tree(args: &[&str]) -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(args)
        .output()
        .expect("run cargo tree");
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
    tree(&["--package", package, "--edges", "normal"])
        .iter()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Each registry package of the tree with `args` and the features cargo
/// turns on for it (`name version features`).
fn resolved(args: &[&str]) -> BTreeSet<String> {
    let format = ["--format", "{p} {f}"];
    tree(&[args, &format].concat())
        .into_iter()
        .map(|line| line.trim_end_matches(" (*)").trim_end().to_owned())
        .filter(|line| !line.contains(" (/"))
        .collect()
}

const SERVERS: [&str; 4] = ["--package", "vmm-apiserver", "--package", "vmm-controller"];

#[test]
fn no_build_parses_for_vcsim() {
    // vim_rs's `vcsim_compat` drops an object it cannot parse: against a
    // real vCenter a malformed VM would go missing silently. The test world
    // needs it neither (test/peers/vcsim/patches/0004-…).
    let everything = tree(&["--workspace", "--edges", "all,features"]);
    assert!(everything.iter().any(|line| line.contains("vim_rs")));
    assert!(!everything.iter().any(|line| line.contains("vcsim_compat")));
}

#[test]
fn the_servers_alone_resolve_each_dependency_as_the_test_build() {
    // CI builds the servers alone (as released) and then the workspace with
    // its tests: a dependency whose features differ between the two is
    // compiled twice, with every crate above it (kube, reqwest, vim_rs).
    let released = resolved(&[&SERVERS[..], &["--edges", "normal,build"]].concat());
    let tested = resolved(&["--workspace", "--edges", "normal,build,dev"]);
    assert!(
        released.iter().any(|p| p.starts_with("vim_rs ")),
        "{released:?}"
    );
    let differ: Vec<_> = released.difference(&tested).collect();
    assert!(
        differ.is_empty(),
        "resolved otherwise in the test build (turn the features on in crates/runtime/Cargo.toml): {differ:#?}"
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
