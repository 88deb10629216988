//! A sorted set of lowercase domain names packed into one string.
//!
//! A `HashMap<String, u32>` costs a heap block, a pointer, a length and a capacity per name;
//! here a name costs its bytes plus eight (its end offset and its value), and a lookup is
//! one binary search.

/// Names sorted bytewise, each with an interned value index.
#[derive(Debug, Default)]
pub(crate) struct NameSet {
    /// All names, concatenated in sorted order.
    buf: String,
    /// `ends[i]` is where name `i` ends in `buf`; it starts where name `i - 1` ends.
    ends: Vec<u32>,
    values: Vec<u32>,
}

impl NameSet {
    /// Builds the set from `(name, rank, value)`. Where a name appears more than once the
    /// highest rank wins, which the caller uses for "an exclusion beats a listing, then
    /// the first line wins".
    pub(crate) fn build(mut entries: Vec<(Box<str>, u64, u32)>) -> NameSet {
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        entries.dedup_by(|later, first| later.0 == first.0);
        let mut set = NameSet {
            buf: String::with_capacity(entries.iter().map(|e| e.0.len()).sum()),
            ends: Vec::with_capacity(entries.len()),
            values: Vec::with_capacity(entries.len()),
        };
        for (name, _, value) in entries {
            // u32 offsets keep a name's overhead at 8 bytes; past 4 GiB of names (far
            // beyond any DNSBL) the rest is dropped rather than overflowing.
            let Ok(end) = u32::try_from(set.buf.len() + name.len()) else {
                break;
            };
            set.buf.push_str(&name);
            set.ends.push(end);
            set.values.push(value);
        }
        set
    }

    fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    /// The value of `name` (already lowercase), by one binary search.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.ends.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.name(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.values[mid]),
            }
        }
        None
    }

    /// Number of names held.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Heap memory held, in bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity() + (self.ends.capacity() + self.values.capacity()) * 4
    }
}
