//! A small time-bounded, size-bounded map for review results (TokenReview,
//! SubjectAccessReview). The lock is a plain mutex held only for map work,
//! never across an `await`: two identical requests that miss together both ask
//! the apiserver, and the later answer wins.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// Entries live `ttl`; at most `capacity` are kept (at least one).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value stored for `key`, if it has not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some((expires, value)) if now < *expires => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` until `now + ttl`. When full, first drops what has
    /// expired, then the entries closest to expiry.
    pub fn insert(&self, key: K, value: V, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            entries.retain(|_, (expires, _)| now < *expires);
            while entries.len() >= self.capacity {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (now + self.ttl, value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        // A panic while holding the lock leaves a consistent map: keep going.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        cache.insert("a", true, t0);
        assert_eq!(cache.get(&"a", t0), Some(true));
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(9)), Some(true));
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(10)), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when seen");
        assert_eq!(cache.get(&"b", t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_oldest() {
        let cache = TtlCache::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let s = Duration::from_secs;
        cache.insert(1, "one", t0);
        cache.insert(2, "two", t0 + s(1));
        cache.insert(3, "three", t0 + s(2));
        // Full, nothing expired: the entry closest to expiry goes.
        cache.insert(4, "four", t0 + s(3));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&1, t0 + s(3)), None);
        assert_eq!(cache.get(&2, t0 + s(3)), Some("two"));
        // Later, 2 and 3 have expired: both go, 4 stays.
        cache.insert(5, "five", t0 + s(12));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&4, t0 + s(12)), Some("four"));
        assert_eq!(cache.get(&5, t0 + s(12)), Some("five"));
        // Replacing a key never evicts another.
        cache.insert(5, "FIVE", t0 + s(12));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&5, t0 + s(12)), Some("FIVE"));
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = TtlCache::new(Duration::ZERO, 3);
        cache.insert("a", 1, Instant::now());
        assert_eq!(cache.len(), 0);
    }
}
