//! Giving back what a burst grew: a `HashMap`, `Vec` or `VecDeque` keeps its peak capacity
//! after its entries are removed, so the tables of a server that once held 10,000 calls stay
//! that big when it holds ten. [`ShrinkIdle::shrink_idle`] halves the slack of a table that is
//! mostly empty; the control plane runs it on its tables when the health loop sees that the
//! work alive has fallen (`app::MemoryReturn`), before `heap::release_free_memory` hands the
//! freed pages back.
//!
//! Owns nothing. Must not run per request: shrinking rehashes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

/// Tables below this capacity are left alone (small, and likely to grow again).
const KEEP: usize = 256;

/// A collection that can give back most of its unused capacity.
pub(crate) trait ShrinkIdle {
    /// When less than a quarter of the capacity is used, shrinks to twice the length (room to
    /// grow again without rehashing at once).
    fn shrink_idle(&mut self);
}

/// The capacity a table of `len` entries in `capacity` shrinks to (twice its length, at least
/// [`KEEP`]) when less than a quarter of it is used; None when it stays. The impls below use
/// it, and tables they cannot shrink themselves (a `hashbrown::HashTable` needs its hasher).
pub(crate) fn idle_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEEP && len.saturating_mul(4) < capacity).then(|| (len * 2).max(KEEP))
}

impl<K: Eq + Hash, V, S: BuildHasher> ShrinkIdle for HashMap<K, V, S> {
    fn shrink_idle(&mut self) {
        if let Some(capacity) = idle_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

impl<T> ShrinkIdle for Vec<T> {
    fn shrink_idle(&mut self) {
        if let Some(capacity) = idle_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

impl<T> ShrinkIdle for VecDeque<T> {
    fn shrink_idle(&mut self) {
        if let Some(capacity) = idle_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mostly_empty_table_gives_back_its_slack_and_a_busy_or_small_one_is_left_alone() {
        let mut map: HashMap<u32, [u8; 64]> = (0..10_000).map(|i| (i, [0; 64])).collect();
        let peak = map.capacity();
        map.retain(|&k, _| k < 100);
        map.shrink_idle();
        assert!(map.capacity() < peak / 10, "{} of {peak}", map.capacity());
        assert!(map.capacity() >= KEEP);
        assert_eq!(map.len(), 100);
        assert!((0..100).all(|k| map.contains_key(&k)));

        let mut busy: Vec<u64> = Vec::with_capacity(10_000);
        busy.extend(0..5_000);
        busy.shrink_idle();
        assert_eq!(busy.capacity(), 10_000, "half full: kept");

        let mut small: VecDeque<u8> = VecDeque::with_capacity(200);
        small.push_back(1);
        small.shrink_idle();
        assert!(small.capacity() >= 200, "small tables are left alone");
    }
}
