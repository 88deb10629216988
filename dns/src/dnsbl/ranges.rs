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
    /// The address's top 16 bits: its bucket in [`RangeTable`]'s index.
    fn top16(self) -> usize;
}

impl Key for u32 {
    const MAX: Self = u32::MAX;
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Self {
        self.wrapping_sub(1)
    }
    fn top16(self) -> usize {
        (self >> 16) as usize
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
    fn top16(self) -> usize {
        (self >> 112) as usize
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

/// One listed range and its value.
#[derive(Debug, Clone, Copy)]
struct Range<A> {
    start: A,
    end: A,
    value: u32,
}

/// Disjoint listed ranges, sorted, each with its value. One vector of (start, end,
/// value) rather than three parallel ones: with the bucket index below, a search reads a
/// few neighbouring ranges, and the end and value it then needs sit in the same cache
/// line as the start it found (three vectors cost three more cache misses per query,
/// 9% of a DNSBL answer's CPU on a 500,000-entry table).
#[derive(Debug, Clone)]
pub(crate) struct RangeTable<A> {
    ranges: Vec<Range<A>>,
    /// For big tables, `index[h]` is the first range starting at or above the addresses
    /// whose top 16 bits are `h` (65,537 entries, 256 KiB): a query then searches only
    /// its bucket, a few ranges in one or two cache lines, instead of ~19 steps through
    /// the whole table with a cache miss each (which was most of a DNSBL query's time).
    index: Vec<u32>,
}

/// Tables with fewer ranges than this are searched whole: they fit in cache anyway.
const INDEX_FROM: usize = 4096;

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
            ranges: Vec::new(),
            index: Vec::new(),
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
        table.ranges.shrink_to_fit();
        if table.ranges.len() >= INDEX_FROM {
            let mut index = Vec::with_capacity(65_537);
            let mut i = 0;
            for bucket in 0..=65_536usize {
                while i < table.ranges.len() && table.ranges[i].start.top16() < bucket {
                    i += 1;
                }
                index.push(i as u32);
            }
            table.index = index;
        }
        table
    }

    /// Appends a range, merging it into the previous one when they touch and agree.
    fn push(&mut self, start: A, end: A, value: u32) {
        if let Some(last) = self.ranges.last_mut() {
            if last.value == value && last.end.succ() == Some(start) {
                last.end = end;
                return;
            }
        }
        self.ranges.push(Range { start, end, value });
    }

    /// The value listed for `addr`, by one binary search.
    pub(crate) fn get(&self, addr: A) -> Option<u32> {
        let i = if self.index.is_empty() {
            self.ranges.partition_point(|r| r.start <= addr)
        } else {
            // Every range before the bucket starts below `addr`, every one after it
            // above: the search within the bucket is the search over the table.
            let h = addr.top16();
            let (from, to) = (self.index[h] as usize, self.index[h + 1] as usize);
            from + self.ranges[from..to].partition_point(|r| r.start <= addr)
        };
        let range = self.ranges[i.checked_sub(1)?];
        (addr <= range.end).then_some(range.value)
    }

    /// Number of disjoint ranges held.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Heap memory held, in bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ranges.capacity() * std::mem::size_of::<Range<A>>()
            + self.index.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    /// The bucket index finds exactly what the search over the whole table finds, at
    /// bucket edges and ends of the space included.
    #[test]
    fn the_index_changes_no_answer() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut intervals = Vec::new();
        for rank in 0..20_000u64 {
            let start = next() as u32 & !0xf;
            let len = [0u32, 0, 0, 255, 65_535, 1 << 20][next() as usize % 6];
            intervals.push(Interval {
                start,
                end: start.saturating_add(len),
                rank,
                value: if next() % 5 == 0 {
                    EXCLUDED
                } else {
                    rank as u32
                },
            });
        }
        intervals.push(Interval {
            start: 0,
            end: 3,
            rank: 1 << 40,
            value: 7,
        });
        intervals.push(Interval {
            start: u32::MAX - 3,
            end: u32::MAX,
            rank: 1 << 41,
            value: 8,
        });
        let indexed = RangeTable::build(intervals);
        assert!(!indexed.index.is_empty());
        let plain = RangeTable {
            index: Vec::new(),
            ..indexed.clone()
        };
        let mut probes: Vec<u32> = vec![0, 1, 4, u32::MAX, u32::MAX - 4, 0xffff, 0x10000];
        for i in 0..indexed.len() {
            let (s, e) = (indexed.ranges[i].start, indexed.ranges[i].end);
            probes.extend([s, e, s.wrapping_sub(1), e.wrapping_add(1)]);
        }
        probes.extend((0..200_000).map(|_| next() as u32));
        for addr in probes {
            assert_eq!(indexed.get(addr), plain.get(addr), "{addr:#x}");
        }
    }
}
