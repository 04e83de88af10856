//! A sorted map whose clone costs O(chunks), not O(entries).
//!
//! Entries live in key-ordered chunks of at most [`CHUNK_MAX`], each behind
//! an `Arc`. A clone shares every chunk; the first write to a shared chunk
//! copies that chunk alone. This is what lets the node thread hand a
//! consistent copy of the whole state to another thread, which encodes it
//! for a snapshot, without copying 100,000 sessions on the node thread (a
//! deep copy costs as much as encoding them).
//!
//! It owns only the layout; what the entries mean is `state.rs`'s.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound::{Included, Unbounded};
#[cfg(test)]
use std::ops::Index;
use std::sync::Arc;

/// Entries per chunk at most: the most a write after a clone copies.
const CHUNK_MAX: usize = 256;
/// A chunk this small is merged into its predecessor when they fit.
const CHUNK_MIN: usize = CHUNK_MAX / 8;

/// Invariant: every chunk is non-empty, and is filed under its smallest
/// key; chunks do not overlap.
#[derive(Clone)]
pub(super) struct CowMap<K, V> {
    chunks: BTreeMap<K, Arc<BTreeMap<K, V>>>,
    len: usize,
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            chunks: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Clone, V: Clone> CowMap<K, V> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.chunks
            .range::<Q, _>((Unbounded, Included(key)))
            .next_back()
            .and_then(|(_, chunk)| chunk.get(key))
    }

    pub(super) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The chunk holding `key`, with the key it is filed under; `None`
    /// when no chunk holds it.
    fn chunk_mut<Q>(&mut self, key: &Q) -> Option<(&K, &mut Arc<BTreeMap<K, V>>)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.chunks
            .range_mut::<Q, _>((Unbounded, Included(key)))
            .next_back()
            .filter(|(_, chunk)| chunk.contains_key(key))
    }

    /// The entry to change; copies its chunk first if a clone shares it.
    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (_, chunk) = self.chunk_mut(key)?;
        Arc::make_mut(chunk).get_mut(key)
    }

    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some((first, chunk)) = self
            .chunks
            .range_mut::<K, _>((Unbounded, Included(&key)))
            .next_back()
        {
            // The common case: the chunk stays filed where it is, unless
            // it grew too big and splits.
            let chunk = Arc::make_mut(chunk);
            let old = chunk.insert(key, value);
            let split = (old.is_none() && chunk.len() > CHUNK_MAX).then(|| first.clone());
            if old.is_none() {
                self.len += 1;
            }
            if let Some(first) = split
                && let Some(chunk) = self.chunks.remove(&first)
            {
                self.file(chunk);
            }
            return old;
        }
        // Smaller than every key: the first chunk takes it, and is filed
        // under it.
        let Some((_, mut chunk)) = self.chunks.pop_first() else {
            let chunk = BTreeMap::from([(key.clone(), value)]);
            self.chunks.insert(key, Arc::new(chunk));
            self.len = 1;
            return None;
        };
        let old = Arc::make_mut(&mut chunk).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        self.file(chunk);
        old
    }

    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (first, chunk) = self.chunk_mut(key)?;
        let refile = first.borrow() == key || chunk.len() <= CHUNK_MIN;
        let first = refile.then(|| first.clone());
        let old = Arc::make_mut(chunk).remove(key);
        self.len -= 1;
        // A chunk filed under the key just removed, or now small, is
        // filed again (under its new smallest key, or merged, or dropped).
        if let Some(first) = first
            && let Some(chunk) = self.chunks.remove::<K>(&first)
        {
            self.file(chunk);
        }
        old
    }

    /// Files a chunk taken out of the index back under its smallest key:
    /// split when too big, merged into its predecessor when small, dropped
    /// when empty.
    fn file(&mut self, mut chunk: Arc<BTreeMap<K, V>>) {
        if chunk.len() > CHUNK_MAX {
            let middle = chunk.keys().nth(chunk.len() / 2).cloned();
            if let Some(middle) = middle {
                let upper = Arc::make_mut(&mut chunk).split_off(&middle);
                self.chunks.insert(middle, Arc::new(upper));
            }
        }
        let Some(first) = chunk.keys().next().cloned() else {
            return;
        };
        if chunk.len() < CHUNK_MIN
            && let Some(before) = self.chunks.range_mut(..first.clone()).next_back()
            && before.1.len() + chunk.len() <= CHUNK_MAX
        {
            let entries = Arc::unwrap_or_clone(chunk);
            Arc::make_mut(before.1).extend(entries);
            return;
        }
        self.chunks.insert(first, chunk);
    }

    /// Every entry in key order.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.chunks.values().flat_map(|chunk| chunk.iter())
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }

    pub(super) fn last_key_value(&self) -> Option<(&K, &V)> {
        self.chunks
            .values()
            .next_back()
            .and_then(|chunk| chunk.last_key_value())
    }
}

#[cfg(test)]
impl<K, V, Q> Index<&Q> for CowMap<K, V>
where
    K: Ord + Clone + Borrow<Q>,
    V: Clone,
    Q: Ord + ?Sized,
{
    type Output = V;

    /// Panics when the key is absent, like `BTreeMap`'s.
    fn index(&self, key: &Q) -> &V {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no entry for the key"),
        }
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for CowMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<K: Ord + Clone, V: Clone + Eq> Eq for CowMap<K, V> {}

impl<K: Ord + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for CowMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::testkit::Prng;

    /// Checks the map against a plain `BTreeMap` and its own invariants.
    fn check(map: &CowMap<u64, u64>, model: &BTreeMap<u64, u64>) {
        assert_eq!(map.len(), model.len());
        assert!(map.iter().map(|(k, v)| (*k, *v)).eq(model.clone()));
        assert_eq!(
            map.last_key_value().map(|(k, v)| (*k, *v)),
            model.last_key_value().map(|(k, v)| (*k, *v))
        );
        let mut previous_last = None;
        for (first, chunk) in &map.chunks {
            assert!(!chunk.is_empty(), "an empty chunk");
            assert!(chunk.len() <= CHUNK_MAX, "an oversized chunk");
            assert_eq!(chunk.keys().next(), Some(first), "filed under another key");
            assert!(previous_last < Some(*first), "chunks overlap");
            previous_last = chunk.keys().next_back().copied();
        }
    }

    #[test]
    fn behaves_like_a_btreemap_under_random_changes() {
        let mut prng = Prng::new(7);
        let mut map = CowMap::default();
        let mut model = BTreeMap::new();
        for round in 0..20_000 {
            // Mostly appends at the top (session ids), some anywhere.
            let key = if prng.below(4) == 0 {
                prng.below(4000)
            } else {
                3000 + round / 4
            };
            match prng.below(10) {
                0..=4 => assert_eq!(map.insert(key, round), model.insert(key, round)),
                5..=7 => assert_eq!(map.remove(&key), model.remove(&key)),
                8 => {
                    if let Some(value) = map.get_mut(&key) {
                        *value += 1;
                    }
                    if let Some(value) = model.get_mut(&key) {
                        *value += 1;
                    }
                }
                _ => assert_eq!(map.get(&key), model.get(&key)),
            }
            if round % 500 == 0 {
                check(&map, &model);
            }
        }
        check(&map, &model);
        // Draining keeps the invariants down to empty.
        let keys: Vec<u64> = model.keys().copied().collect();
        for key in keys {
            assert_eq!(map.remove(&key), model.remove(&key));
        }
        check(&map, &model);
        assert!(map.chunks.is_empty());
    }

    #[test]
    fn a_clone_does_not_see_later_changes() {
        let mut map = CowMap::default();
        for key in 0..2000u64 {
            map.insert(key, key);
        }
        let frozen = map.clone();
        let before: Vec<(u64, u64)> = frozen.iter().map(|(k, v)| (*k, *v)).collect();
        map.insert(5000, 1);
        map.remove(&10);
        if let Some(value) = map.get_mut(&1000) {
            *value = 0;
        }
        map.insert(0, 77);
        let after: Vec<(u64, u64)> = frozen.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(before, after);
        assert_eq!(frozen.len(), 2000);
        assert_eq!(map.len(), 2000);
        assert_eq!(map.get(&1000), Some(&0));
        assert_eq!(frozen.get(&1000), Some(&1000));
        assert_ne!(map, frozen);
    }

    #[test]
    fn a_write_after_a_clone_copies_one_chunk() {
        let mut map = CowMap::default();
        for key in 0..10_000u64 {
            map.insert(key, key);
        }
        let frozen = map.clone();
        if let Some(value) = map.get_mut(&5000) {
            *value = 1;
        }
        let shared = map
            .chunks
            .values()
            .zip(frozen.chunks.values())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, map.chunks.len() - 1);
    }

    #[test]
    fn borrowed_keys_and_smaller_keys() {
        let mut map: CowMap<String, u32> = CowMap::default();
        map.insert("m".to_owned(), 1);
        map.insert("a".to_owned(), 2);
        assert_eq!(map.get("a"), Some(&2));
        assert_eq!(map["m"], 1);
        assert!(map.contains_key("m"));
        assert!(!map.contains_key("b"));
        assert_eq!(map.keys().cloned().collect::<Vec<_>>(), ["a", "m"]);
        assert_eq!(map.remove("a"), Some(2));
        assert_eq!(map.get("a"), None);
        assert_eq!(format!("{map:?}"), "{\"m\": 1}");
    }
}
