//! The dependency rules of docs/architecture.md, checked on the tree: the
//! core crate links no vendor client, and neither binary names a vendor's
//! types, so a new source kind plugs in behind the core traits only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each package's dependencies by name, from `Cargo.lock`.
fn lock_graph() -> BTreeMap<String, Vec<String>> {
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock")).expect("Cargo.lock");
    let mut graph = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let name = package
            .lines()
            .find_map(|line| line.strip_prefix("name = "))
            .map(|name| name.trim_matches('"').to_owned())
            .expect("a package name");
        let dependencies = package
            .split_once("dependencies = [")
            .map(|(_, rest)| rest.split(']').next().unwrap_or_default())
            .unwrap_or_default()
            .split(',')
            // `"name"` or `"name version"` when several versions are locked.
            .filter_map(|entry| entry.trim().trim_matches('"').split(' ').next())
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        graph.insert(name, dependencies);
    }
    graph
}

fn closure(graph: &BTreeMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_core_links_no_client() {
    let graph = lock_graph();
    let core = closure(&graph, "vmm-core");
    assert!(core.contains("rustls"), "the closure was read: {core:?}");
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
    assert!(closure(&graph, "vmm-vsphere").contains("vim_rs"));
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
