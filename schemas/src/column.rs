//! Columns of batch events whose entries repeat, stored once per distinct value.
//!
//! A batch of DNS queries names the same zone, type, class, rcode and (from a busy
//! client) address over and over: written out plainly those repeats were about half the
//! bytes of a `dns.query` event, and a resolver's log is the biggest stream an ISP keeps
//! (100 bytes a query is 8 GB a day at 1,000 queries a second). A [`Dictionary`] keeps
//! each distinct value once and, per entry, the index of its value, which msgpack writes
//! in one byte for the first 128 values.
//!
//! On the wire a dictionary is a map `{values: [...], refs: [...]}`. It also reads the
//! plain array of values that earlier writers stored in the same column, so a reader
//! handles both without an upcaster.

use std::{borrow::Borrow, collections::HashMap, fmt, hash::Hash, marker::PhantomData};

use serde::{
    de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor},
    ser::SerializeStruct,
    Deserialize, Deserializer, Serialize, Serializer,
};

/// A column of values that repeat: each distinct value stored once, and per entry the
/// index of its value.
#[derive(Clone)]
pub struct Dictionary<T> {
    /// The distinct values, in the order they first appeared.
    values: Vec<T>,
    /// Per entry, its value's index in `values`.
    refs: Vec<u32>,
    /// Where each value sits in `values`, so that a push finds its value without a scan.
    /// Built as values are pushed (and when a column is read), never written out.
    positions: HashMap<T, u32>,
}

impl<T> Default for Dictionary<T> {
    fn default() -> Self {
        Dictionary {
            values: Vec::new(),
            refs: Vec::new(),
            positions: HashMap::new(),
        }
    }
}

impl<T: Eq + Hash + Clone> Dictionary<T> {
    /// Entries in the column.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// Whether the column has no entry.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// Entry `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.values.get(*self.refs.get(i)? as usize)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.refs.iter().map(|&r| &self.values[r as usize])
    }

    /// The distinct values, in the order they first appeared.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// Appends `value`.
    pub fn push(&mut self, value: T) {
        if self.last_is(&value) {
            self.repeat_last();
            return;
        }
        let r = match self.positions.get(&value) {
            Some(&r) => r,
            None => self.add(value),
        };
        self.refs.push(r);
    }

    /// Appends the value `key` borrows from, and makes an owned copy only when the
    /// value is new to the column: a repeated `&str` costs no allocation.
    pub fn push_borrowed<Q>(&mut self, key: &Q)
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = T> + ?Sized,
    {
        if self.last_is(key) {
            self.repeat_last();
            return;
        }
        let r = match self.positions.get(key) {
            Some(&r) => r,
            None => self.add(key.to_owned()),
        };
        self.refs.push(r);
    }

    /// Appends the last entry again, for a caller that knows its value repeats (and so
    /// need not build it); `false`, appending nothing, when the column is empty.
    pub fn repeat_last(&mut self) -> bool {
        match self.refs.last().copied() {
            Some(r) => {
                self.refs.push(r);
                true
            }
            None => false,
        }
    }

    /// Whether the last entry is `key`: the common case, checked before hashing.
    fn last_is<Q>(&self, key: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.refs
            .last()
            .is_some_and(|&r| self.values[r as usize].borrow() == key)
    }

    fn add(&mut self, value: T) -> u32 {
        let r = self.values.len() as u32;
        self.positions.insert(value.clone(), r);
        self.values.push(value);
        r
    }
}

impl<T: Eq + Hash + Clone> FromIterator<T> for Dictionary<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut column = Dictionary::default();
        values.into_iter().for_each(|v| column.push(v));
        column
    }
}

/// Two columns are equal when their entries are, however their values are numbered.
impl<T: Eq + Hash + Clone> PartialEq for Dictionary<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: fmt::Debug + Eq + Hash + Clone> fmt::Debug for Dictionary<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Serialize> Serialize for Dictionary<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Dictionary", 2)?;
        s.serialize_field("values", &self.values)?;
        s.serialize_field("refs", &self.refs)?;
        s.end()
    }
}

impl<'de, T: DeserializeOwned + Eq + Hash + Clone> Deserialize<'de> for Dictionary<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DictionaryVisitor(PhantomData))
    }
}

struct DictionaryVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned + Eq + Hash + Clone> Visitor<'de> for DictionaryVisitor<T> {
    type Value = Dictionary<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a dictionary column (values and refs) or an array of values")
    }

    /// A plain column, as writers before dictionaries stored it.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut column = Dictionary::default();
        while let Some(value) = seq.next_element::<T>()? {
            column.push(value);
        }
        Ok(column)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut values, mut refs): (Option<Vec<T>>, Option<Vec<u32>>) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "values" => values = Some(map.next_value()?),
                "refs" => refs = Some(map.next_value()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let values = values.unwrap_or_default();
        let refs = refs.unwrap_or_default();
        if let Some(&bad) = refs.iter().find(|&&r| r as usize >= values.len()) {
            return Err(de::Error::custom(format!(
                "dictionary ref {bad} is past its {} values",
                values.len()
            )));
        }
        let positions = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), i as u32))
            .collect();
        Ok(Dictionary {
            values,
            refs,
            positions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
        rmp_serde::from_slice(&rmp_serde::to_vec_named(value).unwrap()).unwrap()
    }

    #[test]
    fn entries_come_back_in_order_and_each_value_is_stored_once() {
        let mut column: Dictionary<String> = Dictionary::default();
        for v in ["A", "A", "TXT", "A", "MX", "TXT"] {
            column.push_borrowed(v);
        }
        assert_eq!(column.len(), 6);
        assert_eq!(column.values(), ["A", "TXT", "MX"]);
        assert_eq!(
            column.iter().map(String::as_str).collect::<Vec<_>>(),
            ["A", "A", "TXT", "A", "MX", "TXT"]
        );
        assert_eq!(column.get(4).map(String::as_str), Some("MX"));
        assert_eq!(column.get(6), None);
        assert_eq!(round_trip(&column), column);
    }

    #[test]
    fn repeat_last_appends_the_last_value_and_refuses_on_an_empty_column() {
        let mut column: Dictionary<Option<String>> = Dictionary::default();
        assert!(!column.repeat_last());
        column.push(Some("bl.example.net.".into()));
        assert!(column.repeat_last());
        column.push(None);
        assert!(column.repeat_last());
        assert_eq!(
            column.iter().cloned().collect::<Vec<_>>(),
            [
                Some("bl.example.net.".into()),
                Some("bl.example.net.".into()),
                None,
                None
            ]
        );
    }

    #[test]
    fn a_plain_array_of_values_reads_as_a_column() {
        let plain = vec![Some("a.".to_owned()), None, Some("a.".to_owned())];
        let column: Dictionary<Option<String>> =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&plain).unwrap()).unwrap();
        assert_eq!(column.iter().cloned().collect::<Vec<_>>(), plain);
        // Pushing after reading finds the values read.
        let mut column = column;
        column.push(None);
        assert_eq!(column.values().len(), 2);
    }

    #[test]
    fn a_ref_past_the_values_is_an_error_not_a_panic() {
        #[derive(Serialize)]
        struct Raw {
            values: Vec<String>,
            refs: Vec<u32>,
        }
        let bytes = rmp_serde::to_vec_named(&Raw {
            values: vec!["x".into()],
            refs: vec![0, 1],
        })
        .unwrap();
        let error = rmp_serde::from_slice::<Dictionary<String>>(&bytes).unwrap_err();
        assert!(error.to_string().contains("past its 1 values"), "{error}");
    }

    #[test]
    fn repeated_values_take_far_fewer_bytes_than_a_plain_column() {
        let plain: Vec<String> = (0..1000)
            .map(|i| ["NOERROR", "NXDOMAIN"][i % 2].into())
            .collect();
        let column: Dictionary<String> = plain.iter().cloned().collect();
        let (p, d) = (
            rmp_serde::to_vec_named(&plain).unwrap().len(),
            rmp_serde::to_vec_named(&column).unwrap().len(),
        );
        assert!(d * 5 < p, "dictionary {d} bytes, plain {p} bytes");
    }
}
