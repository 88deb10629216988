//! The ids published within the duplicate window, held in memory.
//!
//! The embedded log deduplicates the way JetStream does: a republished id is dropped
//! within [`crate::DUPLICATE_WINDOW`] of the first publish. It used to keep a UNIQUE index
//! on every id ever stored instead, and that index is what made it slow: derived ids
//! (UUIDv5, such as a stage's output or an accounting record's) are random, so each
//! insert dirtied a random leaf page, and a group commit of 64 events wrote 64 pages of
//! WAL. Time-ordered ids cost one page per commit. Measured on the RADIUS accounting
//! benchmark: 14k records/s with the index, 28k without. Keeping the window in memory
//! gives both backends the same promise (DESIGN.md §4.5), and the table needs no index
//! on the id at all.
//!
//! The map is keyed by a 64-bit hash of the id and holds the stored sequence: a hit is
//! confirmed against the stored id before a publish is called a duplicate, so a hash
//! collision can never drop an event.

use std::{
    collections::{HashMap, VecDeque},
    hash::{Hash, Hasher},
};

/// Where an id in the window was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Committed at this sequence.
    Stored(i64),
    /// The `n`th event of the transaction being written, not yet inserted.
    Pending(usize),
}

/// Recent ids by hash, with the order they expire in.
#[derive(Debug, Default)]
pub(super) struct RecentIds {
    by_hash: HashMap<u64, Slot>,
    /// (published at, ms; hash; sequence), oldest first.
    order: VecDeque<(i64, u64, i64)>,
    /// The highest sequence the map has seen: rows above it were written by another
    /// process (a CLI tool beside the server) and are read in before the next write.
    pub(super) last_seq: i64,
    /// False until the window has been read from the table, and again after a failed
    /// transaction, whose pending entries are then thrown away with the rest.
    pub(super) loaded: bool,
}

/// The map's key for an id. Ids are pampa's own (UUIDs), not chosen by an attacker, and
/// a collision only costs a lookup, so a fixed-key hash is enough.
pub(super) fn hash_id(id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl RecentIds {
    /// Forgets everything; the next transaction reads the window again.
    pub(super) fn reset(&mut self) {
        self.by_hash.clear();
        self.order.clear();
        self.last_seq = 0;
        self.loaded = false;
    }

    pub(super) fn get(&self, hash: u64) -> Option<Slot> {
        self.by_hash.get(&hash).copied()
    }

    /// Marks `hash` as the `n`th event of the transaction being written.
    pub(super) fn reserve(&mut self, hash: u64, n: usize) {
        self.by_hash.insert(hash, Slot::Pending(n));
    }

    /// Records a stored id (committed, or inserted in the open transaction).
    pub(super) fn stored(&mut self, hash: u64, seq: i64, published_at: i64) {
        self.by_hash.insert(hash, Slot::Stored(seq));
        self.order.push_back((published_at, hash, seq));
        self.last_seq = self.last_seq.max(seq);
    }

    /// Drops ids published before `cutoff` (ms), and the oldest beyond `capacity` so a
    /// burst cannot grow the map without bound (the window then shrinks for a while).
    pub(super) fn expire(&mut self, cutoff: i64, capacity: usize) {
        while let Some(&(at, hash, seq)) = self.order.front() {
            if at >= cutoff && self.order.len() <= capacity {
                break;
            }
            if self.by_hash.get(&hash) == Some(&Slot::Stored(seq)) {
                self.by_hash.remove(&hash);
            }
            self.order.pop_front();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_expire_in_order_and_by_capacity() {
        let mut recent = RecentIds::default();
        let (a, b, c) = (hash_id("a"), hash_id("b"), hash_id("c"));
        recent.stored(a, 1, 100);
        recent.stored(b, 2, 200);
        recent.stored(c, 3, 300);
        assert_eq!(recent.last_seq, 3);
        recent.expire(150, 10);
        assert_eq!(recent.get(a), None);
        assert_eq!(recent.get(b), Some(Slot::Stored(2)));
        recent.expire(0, 1);
        assert_eq!(recent.get(b), None);
        assert_eq!(recent.get(c), Some(Slot::Stored(3)));
        assert_eq!(recent.len(), 1);
    }

    #[test]
    fn a_reused_hash_keeps_its_newest_slot() {
        let mut recent = RecentIds::default();
        let a = hash_id("a");
        recent.stored(a, 1, 100);
        recent.stored(a, 5, 200);
        // Expiring the first entry must not forget the second.
        recent.expire(150, 10);
        assert_eq!(recent.get(a), Some(Slot::Stored(5)));
    }
}
