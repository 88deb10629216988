//! Address ranges resolved once, at load time, into a sorted table of disjoint ranges.
//!
//! rbldnsd answers an IP query by looking for the most specific entry that covers it, and
//! an exclusion entry carves a hole. Doing that work per query would need a trie walk or
//! several searches; doing it once when the file is loaded leaves a flat table that one
//! binary search answers, and that holds a listed /32 in 12 bytes on IPv4.

use std::{cmp::Ordering, collections::BinaryHeap};

/// The value index that marks an exclusion while building; never stored in a table.
pub(crate) const EXCLUDED: u32 = u32::MAX;

/// An address width: IPv4 as `u32`, IPv6 as `u128`.
pub(crate) trait Key: Copy + Ord + std::fmt::Debug {
    /// The highest address.
    const MAX: Self;
    /// The next address, or `None` past the top of the space.
    fn succ(self) -> Option<Self>;
    /// The previous address; only called on addresses above zero.
    fn pred(self) -> Self;
}

impl Key for u32 {
    const MAX: Self = u32::MAX;
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Self {
        self.wrapping_sub(1)
    }
}

impl Key for u128 {
    const MAX: Self = u128::MAX;
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Self {
        self.wrapping_sub(1)
    }
}

/// One entry of the data file, before overlaps are resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval<A> {
    /// First address covered.
    pub start: A,
    /// Last address covered (inclusive, so the whole space can be written).
    pub end: A,
    /// Where two intervals overlap, the higher rank decides. The caller encodes the
    /// dataset's rule in it (specificity, exclusion, file order), and makes ranks unique.
    pub rank: u64,
    /// Index of the interned value, or [`EXCLUDED`].
    pub value: u32,
}

/// The covering intervals at one point of the sweep, highest rank on top.
struct Active<A> {
    rank: u64,
    end: A,
    value: u32,
}

impl<A> PartialEq for Active<A> {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}
impl<A> Eq for Active<A> {}
impl<A> PartialOrd for Active<A> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<A> Ord for Active<A> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// Disjoint listed ranges, sorted, each with its value. Three parallel vectors rather than a
/// vector of structs, so that the binary search touches only the starts.
#[derive(Debug)]
pub(crate) struct RangeTable<A> {
    starts: Vec<A>,
    ends: Vec<A>,
    values: Vec<u32>,
}

impl<A: Key> RangeTable<A> {
    /// Resolves overlapping intervals: at every address the covering interval with the
    /// highest rank wins, and where it is an exclusion (or nothing covers) nothing is listed.
    /// A sweep over the interval boundaries with a max-heap of the covering intervals:
    /// O(n log n) for n intervals.
    pub(crate) fn build(mut intervals: Vec<Interval<A>>) -> Self {
        intervals.sort_unstable_by_key(|i| i.start);
        let mut bounds: Vec<A> = Vec::with_capacity(intervals.len() * 2);
        for i in &intervals {
            bounds.push(i.start);
            if let Some(after) = i.end.succ() {
                bounds.push(after);
            }
        }
        bounds.sort_unstable();
        bounds.dedup();

        let mut table = RangeTable {
            starts: Vec::new(),
            ends: Vec::new(),
            values: Vec::new(),
        };
        let mut heap: BinaryHeap<Active<A>> = BinaryHeap::new();
        let mut next = 0;
        for (k, &at) in bounds.iter().enumerate() {
            while let Some(i) = intervals.get(next).filter(|i| i.start <= at) {
                heap.push(Active {
                    rank: i.rank,
                    end: i.end,
                    value: i.value,
                });
                next += 1;
            }
            // Expired intervals below the top may linger; they are dropped when they
            // surface, which is all the sweep needs.
            while heap.peek().is_some_and(|top| top.end < at) {
                heap.pop();
            }
            let Some(top) = heap.peek() else { continue };
            if top.value == EXCLUDED {
                continue;
            }
            // Every end + 1 is a boundary, so the segment ends where the next one starts.
            let seg_end = bounds.get(k + 1).map_or(A::MAX, |b| b.pred());
            table.push(at, seg_end, top.value);
        }
        table.starts.shrink_to_fit();
        table.ends.shrink_to_fit();
        table.values.shrink_to_fit();
        table
    }

    /// Appends a range, merging it into the previous one when they touch and agree.
    fn push(&mut self, start: A, end: A, value: u32) {
        if let (Some(last_end), Some(&last_value)) = (self.ends.last_mut(), self.values.last()) {
            if last_value == value && last_end.succ() == Some(start) {
                *last_end = end;
                return;
            }
        }
        self.starts.push(start);
        self.ends.push(end);
        self.values.push(value);
    }

    /// The value listed for `addr`, by one binary search.
    pub(crate) fn get(&self, addr: A) -> Option<u32> {
        let i = self.starts.partition_point(|&s| s <= addr);
        let i = i.checked_sub(1)?;
        (addr <= self.ends[i]).then(|| self.values[i])
    }

    /// Number of disjoint ranges held.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Heap memory held, in bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.starts.capacity() + self.ends.capacity()) * std::mem::size_of::<A>()
            + self.values.capacity() * std::mem::size_of::<u32>()
    }
}
