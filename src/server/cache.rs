//! Caches that are exactly as fresh as the store: each holds values read while the
//! store's configuration epoch had one value, and drops them all the moment it moves.
//!
//! The epoch moves before a change to identity or configuration is acknowledged (see
//! `Store::config_epoch`), so a request that starts after a token is revoked or a kill
//! switch engaged can never be answered from a stale entry: "effect on the very next
//! request" holds with the cache as without it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub struct EpochCache<K, V> {
    inner: Mutex<Entries<K, V>>,
    capacity: usize,
}

struct Entries<K, V> {
    epoch: u64,
    map: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Clone> EpochCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        EpochCache { inner: Mutex::new(Entries { epoch: 0, map: HashMap::new() }), capacity }
    }

    /// The value stored for `key`, if it was read at `epoch` (the current one).
    pub fn get(&self, key: &K, epoch: u64) -> Option<V> {
        let mut e = self.inner.lock().expect("cache lock");
        if e.epoch != epoch {
            e.map.clear();
            e.epoch = epoch;
            return None;
        }
        e.map.get(key).cloned()
    }

    /// Stores a value read at `epoch` (read the epoch *before* reading the value). A value
    /// from an epoch that has since moved is not stored.
    pub fn put(&self, key: K, epoch: u64, value: V) {
        let mut e = self.inner.lock().expect("cache lock");
        if e.epoch != epoch {
            if epoch < e.epoch {
                return;
            }
            e.map.clear();
            e.epoch = epoch;
        }
        if e.map.len() >= self.capacity {
            e.map.clear();
        }
        e.map.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_epoch_empties_the_cache() {
        let c = EpochCache::new(10);
        c.put("a", 1, 10);
        assert_eq!(c.get(&"a", 1), Some(10));
        assert_eq!(c.get(&"a", 2), None);
        assert_eq!(c.get(&"a", 2), None);
        // A value read before the move is never stored after it.
        c.put("a", 1, 10);
        assert_eq!(c.get(&"a", 2), None);
    }

    #[test]
    fn capacity_bounds_memory() {
        let c = EpochCache::new(2);
        for i in 0..5 {
            c.put(i, 1, i);
        }
        assert!((0..5).filter(|i| c.get(i, 1).is_some()).count() <= 2);
    }
}
