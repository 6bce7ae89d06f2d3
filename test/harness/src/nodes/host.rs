//! What real nodes change on the host, captured before they start and put back
//! after they stop: iptables rules, network links, mounts, cgroups, sysctls,
//! the kubelet's and CNI's fixed paths, and stray processes (containerd's shims
//! outlive containerd). One node cluster at a time holds the host lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The bridge every node's pods attach to.
pub const BRIDGE: &str = "vmm-cni0";
/// The cgroup root of node `n` is `<hierarchy>/<CGROUP_PREFIX><n>`.
pub const CGROUP_PREFIX: &str = "vmm-node-";
const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Sysctls the kubelet and the bridge plugin set.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/ip_forward",
];

/// Paths the kubelet, containerd's runc and the CNI plugins use whatever
/// their configuration says.
const FIXED_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/run/netns",
];

/// Program names of what nodes run; any of ours left after a stop is killed.
const NODE_PROGRAMS: &[&str] = &[
    "kubelet",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "kube-proxy",
    "kube-scheduler",
    "runc",
];

/// Holds the host for one node cluster at a time (two would share the
/// kubelet's fixed paths and the bridge); released when dropped.
pub struct HostLock {
    _file: File,
}

impl HostLock {
    pub fn acquire() -> Result<HostLock> {
        let path = Path::new("/run/lock/vmm-e2e-nodes.lock");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        file.lock()
            .with_context(|| format!("lock {}", path.display()))?;
        Ok(HostLock { _file: file })
    }
}

/// What nodes may change on the host, as comparable sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// `iptables-save` / `ip6tables-save` per table, without counters.
    pub iptables: BTreeMap<String, String>,
    pub links: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
    /// cgroup directories up to two levels below each hierarchy.
    pub cgroups: BTreeSet<PathBuf>,
    pub sysctls: BTreeMap<String, String>,
    pub fixed_paths: BTreeSet<String>,
    /// `pid name` of running node programs.
    pub processes: BTreeSet<String>,
}

impl HostState {
    pub fn capture() -> Result<HostState> {
        Ok(HostState {
            iptables: iptables_tables()?,
            links: links()?,
            mounts: mounts()?,
            cgroups: cgroups()?,
            sysctls: SYSCTLS
                .iter()
                .map(|s| {
                    Ok((
                        s.to_string(),
                        read_trimmed(&Path::new("/proc/sys").join(s))?,
                    ))
                })
                .collect::<Result<_>>()?,
            fixed_paths: FIXED_PATHS
                .iter()
                .filter(|p| Path::new(p).exists())
                .map(|p| p.to_string())
                .collect(),
            processes: node_processes()?,
        })
    }

    /// What differs from `before`, one line each; empty when the host is as it was.
    pub fn differences(&self, before: &HostState) -> Vec<String> {
        let mut out = Vec::new();
        let mut sets = |what: &str, now: &BTreeSet<String>, was: &BTreeSet<String>| {
            out.extend(now.difference(was).map(|x| format!("{what} added: {x}")));
            out.extend(was.difference(now).map(|x| format!("{what} gone: {x}")));
        };
        sets("link", &self.links, &before.links);
        sets("mount", &self.mounts, &before.mounts);
        sets("path", &self.fixed_paths, &before.fixed_paths);
        sets("process", &self.processes, &before.processes);
        let paths = |set: &BTreeSet<PathBuf>| -> BTreeSet<String> {
            set.iter().map(|p| p.display().to_string()).collect()
        };
        sets("cgroup", &paths(&self.cgroups), &paths(&before.cgroups));
        for (map, what) in [
            ((&self.iptables, &before.iptables), "iptables table"),
            ((&self.sysctls, &before.sysctls), "sysctl"),
        ] {
            let (now, was) = map;
            for key in now.keys().chain(was.keys()).collect::<BTreeSet<_>>() {
                if now.get(key) != was.get(key) {
                    out.push(format!(
                        "{what} {key}: was {:?}, now {:?}",
                        was.get(key),
                        now.get(key)
                    ));
                }
            }
        }
        out
    }

    /// Puts the host back as `self` found it: kills stray node programs,
    /// unmounts, removes cgroups, links and paths that are new, restores
    /// iptables tables and sysctls. Returns what it had to do, one line each.
    pub fn restore(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let now = HostState::capture()?;
        kill(now.processes.difference(&self.processes), &mut done);
        unmount_all(now.mounts.difference(&self.mounts), &mut done)?;
        for link in now.links.difference(&self.links) {
            run("ip", &["link", "delete", link])?;
            done.push(format!("deleted link {link}"));
        }
        let mut cgroups: Vec<_> = all_cgroups_below(&now.cgroups, &self.cgroups)?;
        cgroups.sort_by_key(|c| std::cmp::Reverse(c.components().count()));
        for cgroup in cgroups {
            fs::remove_dir(&cgroup)
                .with_context(|| format!("remove cgroup {}", cgroup.display()))?;
            done.push(format!("removed cgroup {}", cgroup.display()));
        }
        for (table, rules) in &self.iptables {
            if now.iptables.get(table) != Some(rules) {
                restore_iptables_table(table, rules)?;
                done.push(format!("restored iptables table {table}"));
            }
        }
        for table in now
            .iptables
            .keys()
            .filter(|t| !self.iptables.contains_key(*t))
        {
            let (command, name) = split_table_key(table);
            run(command, &["-t", name, "-F"])?;
            run(command, &["-t", name, "-X"])?;
            done.push(format!("emptied iptables table {table}"));
        }
        for (sysctl, value) in &self.sysctls {
            if now.sysctls.get(sysctl) != Some(value) {
                fs::write(Path::new("/proc/sys").join(sysctl), value)
                    .with_context(|| format!("restore sysctl {sysctl}"))?;
                done.push(format!("restored sysctl {sysctl}={value}"));
            }
        }
        for path in now.fixed_paths.difference(&self.fixed_paths) {
            fs::remove_dir_all(path).with_context(|| format!("remove {path}"))?;
            done.push(format!("removed {path}"));
        }
        Ok(done)
    }
}

/// Creates node `n`'s cgroup root in every v1 hierarchy (the kubelet refuses
/// to start without it), with the parent's CPUs and memory nodes for cpuset.
pub fn create_cgroup_root(n: usize) -> Result<()> {
    for hierarchy in v1_hierarchies()? {
        let root = hierarchy.join(format!("{CGROUP_PREFIX}{n}"));
        fs::create_dir_all(&root).with_context(|| format!("create cgroup {}", root.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = hierarchy.join(file);
            if parent.exists() {
                fs::write(root.join(file), fs::read(&parent)?)
                    .with_context(|| format!("write {}", root.join(file).display()))?;
            }
        }
    }
    Ok(())
}

/// Adds the bridge with `address` (CIDR), up.
pub fn create_bridge(address: &str) -> Result<()> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["addr", "add", address, "dev", BRIDGE])?;
    run("ip", &["link", "set", BRIDGE, "up"])
}

/// What a node cluster of a killed test binary left: its bridge, node
/// cgroups, shims. Run under the [`HostLock`] before capturing the state a
/// new cluster restores to.
pub fn remove_leftovers() -> Result<Vec<String>> {
    let mut done = Vec::new();
    kill(&node_processes()?, &mut done);
    let present = mounts()?;
    let ours = present
        .iter()
        .filter(|m| m.contains("/vmm-e2e/") || m.starts_with("/run/netns/cni-"));
    unmount_all(ours, &mut done)?;
    if links()?.contains(BRIDGE) {
        run("ip", &["link", "delete", BRIDGE])?;
        done.push(format!("deleted link {BRIDGE}"));
    }
    let ours: BTreeSet<PathBuf> = cgroups()?
        .into_iter()
        .filter(|c| {
            c.components().any(|part| {
                part.as_os_str()
                    .to_str()
                    .is_some_and(|p| p.starts_with(CGROUP_PREFIX))
            })
        })
        .collect();
    let mut leftover = all_cgroups_below(&ours, &BTreeSet::new())?;
    leftover.sort_by_key(|c| std::cmp::Reverse(c.components().count()));
    for cgroup in leftover {
        fs::remove_dir(&cgroup).with_context(|| format!("remove cgroup {}", cgroup.display()))?;
        done.push(format!("removed cgroup {}", cgroup.display()));
    }
    Ok(done)
}

/// Unmounts `targets` deepest first and lazily (a busy mount must not stop the
/// rest), noting each in `done`. A mount that went with an earlier one counts
/// as done: the kubelet makes its root dir rshared, so an unmount can take
/// a peer's copy along, and a lazy unmount detaches everything below.
fn unmount_all<'a>(
    targets: impl IntoIterator<Item = &'a String>,
    done: &mut Vec<String>,
) -> Result<()> {
    let mut deepest_first: Vec<_> = targets.into_iter().collect();
    deepest_first.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in deepest_first {
        if let Err(e) = run("umount", &["-l", mount])
            && mounts()?.contains(mount)
        {
            return Err(e);
        }
        done.push(format!("unmounted {mount}"));
    }
    Ok(())
}

/// SIGKILLs each `pid name` of [`node_processes`], noting it in `done`.
fn kill<'a>(processes: impl IntoIterator<Item = &'a String>, done: &mut Vec<String>) {
    for process in processes {
        let pid = process
            .split(' ')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            done.push(format!("killed {process}"));
        }
    }
}

fn v1_hierarchies() -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(CGROUP_FS).with_context(|| format!("read {CGROUP_FS}"))? {
        let path = entry?.path();
        // cgroup2 (`unified`) needs no root; symlinks (`cpu,cpuacct`) alias a hierarchy.
        if path.is_dir() && !path.is_symlink() && !path.ends_with("unified") {
            out.push(path);
        }
    }
    Ok(out)
}

fn cgroups() -> Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut hierarchies = v1_hierarchies()?;
    let unified = Path::new(CGROUP_FS).join("unified");
    if unified.is_dir() {
        hierarchies.push(unified);
    }
    for hierarchy in hierarchies {
        for level1 in subdirs(&hierarchy)? {
            out.extend(subdirs(&level1)?);
            out.insert(level1);
        }
    }
    Ok(out)
}

/// Every cgroup directory at or below the ones in `now` that are not in
/// `before` (the kubelet nests pods' cgroups deeper than [`cgroups`] looks).
fn all_cgroups_below(now: &BTreeSet<PathBuf>, before: &BTreeSet<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = now.difference(before).cloned().collect();
    while let Some(dir) = stack.pop() {
        if !dir.is_dir() || out.contains(&dir) {
            continue;
        }
        stack.extend(subdirs(&dir)?);
        out.push(dir);
    }
    Ok(out)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn links() -> Result<BTreeSet<String>> {
    let out = output("ip", &["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect())
}

fn mounts() -> Result<BTreeSet<String>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .collect())
}

fn node_processes() -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        // comm is cut at 15 bytes: containerd-shim-runc-v2 reads containerd-shim.
        if !NODE_PROGRAMS.contains(&comm) || !crate::process::pid_alive(pid) {
            continue;
        }
        // Ours name a run dir (config, root dir, socket): a machine's own
        // containerd (Docker's) is never touched.
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("/vmm-e2e/") {
            out.insert(format!("{pid} {comm}"));
        }
    }
    Ok(out)
}

/// `iptables:filter` → its rules, for IPv4 and IPv6, without counters.
fn iptables_tables() -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for command in ["iptables", "ip6tables"] {
        let save = output(&format!("{command}-save"), &[])?;
        let mut table = None;
        let mut rules = String::new();
        for line in save.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = Some(name.to_string());
                rules.clear();
            } else if line == "COMMIT" {
                // A table with nothing but its built-in chains accepting is as
                // good as none: iptables-nft makes one just by listing it.
                if let Some(name) = table.take().filter(|_| !only_builtin_accept(&rules)) {
                    out.insert(format!("{command}:{name}"), std::mem::take(&mut rules));
                }
            } else if !line.starts_with('#') && table.is_some() {
                // `:CHAIN POLICY [packets:bytes]`
                let line = match line.rfind(" [") {
                    Some(i) if line.starts_with(':') => &line[..i],
                    _ => line,
                };
                rules.push_str(line);
                rules.push('\n');
            }
        }
    }
    Ok(out)
}

fn only_builtin_accept(rules: &str) -> bool {
    rules.lines().all(|line| {
        matches!(
            line,
            ":PREROUTING ACCEPT"
                | ":INPUT ACCEPT"
                | ":FORWARD ACCEPT"
                | ":OUTPUT ACCEPT"
                | ":POSTROUTING ACCEPT"
        )
    })
}

fn split_table_key(key: &str) -> (&str, &str) {
    key.split_once(':').unwrap_or(("iptables", key))
}

fn restore_iptables_table(key: &str, rules: &str) -> Result<()> {
    use std::io::Write;
    let (command, table) = split_table_key(key);
    let restore = format!("{command}-restore");
    let mut child = Command::new(&restore)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("run {restore}"))?;
    let text = format!("*{table}\n{rules}COMMIT\n");
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{restore} of table {table} failed: {status}");
    }
    Ok(())
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_string())
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two peers of one shared mount: unmounting a volume under the first
    /// takes the second's copy along, as with the kubelet's rshared root.
    #[test]
    fn a_mount_that_went_with_its_peer_counts_as_unmounted() {
        let base = std::env::temp_dir().join(format!("vmm-unmount-{}", std::process::id()));
        let path = |p: &str| base.join(p).display().to_string();
        fs::create_dir_all(&base).unwrap();
        let tmpfs = |at: &str| run("mount", &["-t", "tmpfs", "tmpfs", at]);
        tmpfs(&path("")).unwrap();
        run("mount", &["--make-private", &path("")]).unwrap();
        for dir in ["root", "peer"] {
            fs::create_dir(base.join(dir)).unwrap();
        }
        tmpfs(&path("root")).unwrap();
        run("mount", &["--make-shared", &path("root")]).unwrap();
        run("mount", &["--bind", &path("root"), &path("peer")]).unwrap();
        fs::create_dir(base.join("root/volume")).unwrap();
        tmpfs(&path("root/volume")).unwrap();
        let volumes = [path("root/volume"), path("peer/volume")];
        assert!(volumes.iter().all(|v| mounts().unwrap().contains(v)));

        let mut done = Vec::new();
        let result = unmount_all(&volumes, &mut done);

        let left: Vec<_> = volumes
            .iter()
            .filter(|v| mounts().unwrap().contains(*v))
            .collect();
        run("umount", &["-l", &path("")]).unwrap();
        fs::remove_dir(&base).unwrap();
        result.unwrap();
        assert!(left.is_empty(), "still mounted: {left:?}");
        assert_eq!(done.len(), 2, "{done:?}");
    }
}
