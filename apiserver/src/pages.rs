//! Paged lists read one version to the end, as kube-apiserver's do: the
//! snapshot a first page was cut from is kept (its items are shared `Arc`s,
//! so a snapshot costs a pointer per object) and the continue tokens that
//! name its version are served from it, however the inventory changed since.
//! A token outlives its snapshot only past [`LIFETIME`] or when
//! [`CAPACITY`] newer snapshots were kept after it; then it gets 410 and the
//! client lists again, as after an etcd compaction.
//!
//! Before, a token was good only while nothing changed: under a vCenter
//! changing a VM every few hundred milliseconds, most paged walks of 500 VMs
//! ended in 410 (the load suite, docs/reliability.md).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::Snapshot;

/// As long as kube-apiserver's continue tokens last with etcd's default
/// compaction interval.
pub const LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Snapshots kept at most, newest first: at 10,000 VMs, about 80 KiB each
/// plus the old states of objects changed since.
pub const CAPACITY: usize = 64;

/// The snapshots paged lists are reading.
#[derive(Default)]
pub struct Pages {
    kept: Mutex<VecDeque<Kept>>,
}

struct Kept {
    kind: &'static str,
    namespace: Option<String>,
    version: u64,
    items: Arc<dyn Any + Send + Sync>,
    at: Instant,
}

impl Kept {
    fn is(&self, kind: &str, namespace: Option<&str>, version: u64) -> bool {
        self.kind == kind && self.namespace.as_deref() == namespace && self.version == version
    }
}

impl Pages {
    /// Keeps `snapshot` of resource `kind` (in `namespace`) for the pages
    /// after its first; once per version.
    pub fn keep<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        namespace: Option<&str>,
        snapshot: &Snapshot<T>,
    ) {
        let mut kept = self.lock();
        expire(&mut kept);
        if kept.iter().any(|k| k.is(kind, namespace, snapshot.version)) {
            return;
        }
        if kept.len() == CAPACITY {
            kept.pop_back();
        }
        kept.push_front(Kept {
            kind,
            namespace: namespace.map(str::to_owned),
            version: snapshot.version,
            items: Arc::new(snapshot.items.clone()),
            at: Instant::now(),
        });
    }

    /// The snapshot of `kind` (in `namespace`) at `version`, if still kept.
    pub fn find<T: Send + Sync + 'static>(
        &self,
        kind: &str,
        namespace: Option<&str>,
        version: u64,
    ) -> Option<Snapshot<T>> {
        let mut kept = self.lock();
        expire(&mut kept);
        let found = kept.iter().find(|k| k.is(kind, namespace, version))?;
        let items = found.items.downcast_ref::<Vec<Arc<T>>>()?.clone();
        Some(Snapshot { version, items })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn expire(kept: &mut VecDeque<Kept>) {
    while kept.back().is_some_and(|k| k.at.elapsed() > LIFETIME) {
        kept.pop_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64, items: &[&str]) -> Snapshot<String> {
        Snapshot {
            version,
            items: items.iter().map(|s| Arc::new((*s).to_owned())).collect(),
        }
    }

    #[test]
    fn a_kept_snapshot_is_found_by_kind_namespace_and_version_only() {
        let pages = Pages::default();
        pages.keep("virtualmachines", Some("a"), &snapshot(7, &["x", "y"]));
        let found = pages
            .find::<String>("virtualmachines", Some("a"), 7)
            .unwrap();
        assert_eq!(found.items.len(), 2);
        assert!(
            pages
                .find::<String>("virtualmachines", Some("a"), 8)
                .is_none()
        );
        assert!(
            pages
                .find::<String>("virtualmachines", Some("b"), 7)
                .is_none()
        );
        assert!(pages.find::<String>("virtualmachines", None, 7).is_none());
        assert!(pages.find::<String>("networks", Some("a"), 7).is_none());
        // Another type under the same key is not mistaken for it.
        assert!(pages.find::<u32>("virtualmachines", Some("a"), 7).is_none());
    }

    #[test]
    fn the_oldest_snapshot_goes_first_past_the_capacity() {
        let pages = Pages::default();
        for version in 0..=CAPACITY as u64 {
            pages.keep("virtualmachines", None, &snapshot(version, &["x"]));
            // Kept once per version.
            pages.keep("virtualmachines", None, &snapshot(version, &["x"]));
        }
        assert!(pages.find::<String>("virtualmachines", None, 0).is_none());
        assert!(pages.find::<String>("virtualmachines", None, 1).is_some());
        assert!(
            pages
                .find::<String>("virtualmachines", None, CAPACITY as u64)
                .is_some()
        );
    }
}
