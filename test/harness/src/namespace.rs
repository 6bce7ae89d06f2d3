//! One namespace per test, on a shared control plane.
//!
//! Without kube-controller-manager a deleted namespace stays `Terminating`
//! forever (nothing empties it), so deletion on drop is best effort: it stops
//! new objects being created there and never fails a test. Set
//! `VMM_E2E_KEEP_NAMESPACES=1` to keep them for inspection.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use crate::control_plane::ControlPlane;

/// Label on every test namespace.
pub const TEST_NAMESPACE_LABEL: &str = "vmm-e2e/test-namespace";

/// Keep namespaces after the test when set to anything but empty or `0`.
pub const KEEP_NAMESPACES_ENV: &str = "VMM_E2E_KEEP_NAMESPACES";

/// A namespace that belongs to one test.
#[derive(Debug)]
pub struct TestNamespace<'a> {
    cp: &'a ControlPlane,
    name: String,
}

/// Six random lowercase letters and digits.
pub fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let mut n = hasher.finish();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// `<prefix>-<suffix>` cut to a valid DNS-1123 label (at most 63 characters).
pub fn unique_name(prefix: &str) -> String {
    let mut prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    prefix.truncate(63 - 7);
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "test" } else { prefix };
    format!("{prefix}-{}", random_suffix())
}

impl<'a> TestNamespace<'a> {
    /// Creates `<prefix>-<random>` (blocking; runs kubectl).
    pub fn new(cp: &'a ControlPlane, prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    {TEST_NAMESPACE_LABEL}: \"true\"\n"
        );
        let out = cp.kubectl_with_stdin(["create", "-f", "-"], &yaml);
        if !out.success() {
            bail!("create namespace {name}: {out}");
        }
        Ok(Self { cp, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn control_plane(&self) -> &'a ControlPlane {
        self.cp
    }

    /// `kubectl apply -n <this> -f -` of a YAML text.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let out = self.cp.apply_yaml(&self.name, yaml);
        out.ok()
            .map(str::to_owned)
            .with_context(|| format!("apply in {}", self.name))
    }

    /// `kubectl -n <this> <args…>`.
    pub fn kubectl<I, S>(&self, args: I) -> crate::process::CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(Into::into));
        self.cp.kubectl(all)
    }
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        let keep = std::env::var(KEEP_NAMESPACES_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        if keep {
            return;
        }
        // Best effort: a failure here must not turn into a second panic.
        let name = self.name.clone();
        let cp = self.cp;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cp.kubectl([
                "delete",
                "namespace",
                &name,
                "--wait=false",
                "--ignore-not-found",
            ])
        }));
        match result {
            Ok(out) if !out.success() => {
                tracing::warn!(namespace = %name, "delete failed: {}", out.stderr.trim())
            }
            Err(_) => tracing::warn!(namespace = %name, "delete failed"),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("Foundation_Test");
        let b = unique_name("Foundation_Test");
        assert_ne!(a, b);
        assert!(a.starts_with("foundation-test-"), "{a}");
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        for name in [a, long, unique_name("--")] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
    }
}
