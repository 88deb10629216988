//! DNSBL answers written straight from the query's wire bytes.
//!
//! A DNSBL query is the server's hottest case and its simplest: one question, a name
//! under a DNSBL zone, an A or TXT record or a negative answer with the zone's SOA.
//! Decoding it into a hickory `Message` and encoding a `Message` back cost more than
//! the lookup itself (allocations per label and per record), so the UDP path first
//! tries this: read the header and the question in place, and write the response
//! bytes directly. Anything this does not recognise exactly (opcodes other than QUERY,
//! several questions, EDNS with options or a version above 0, a compression pointer in
//! the question, a class other than IN, a response that would need truncation) is left
//! to the general path, which then answers as it always did.
//!
//! The bytes written are the ones hickory's encoder writes for the same answer, name
//! compression included ([`Packer`] copies its rules), so the two paths cannot be told
//! apart on the wire; a test in `server.rs` holds them to that.

/// A query the fast path may answer: a standard query with one IN question, no
/// answer or authority records, and at most an OPT record without options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    pub id: u16,
    /// RD, copied to the response.
    pub rd: bool,
    /// CD, copied to the response.
    pub cd: bool,
    /// The question name's labels as sent (length-prefixed, without the root's zero).
    pub qname: &'a [u8],
    pub qtype: u16,
    /// The requestor's EDNS payload size, when the query had an OPT record.
    pub edns_payload: Option<u16>,
}

/// TYPE and CLASS numbers the fast path looks at.
pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_TXT: u16 = 16;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const TYPE_ANY: u16 = 255;
pub(crate) const CLASS_IN: u16 = 1;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads a query the fast path can answer, or `None` for anything else.
pub(crate) fn parse(b: &[u8]) -> Option<Query<'_>> {
    if b.len() < 12 || b[2] & 0xf8 != 0 {
        // Too short, a response, or an opcode other than QUERY.
        return None;
    }
    let (qd, an, ns, ar) = (u16_at(b, 4)?, u16_at(b, 6)?, u16_at(b, 8)?, u16_at(b, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut p = 12;
    loop {
        let len = usize::from(*b.get(p)?);
        if len == 0 {
            break;
        }
        // A pointer (0xc0) or an extended label type (0x40, 0x80): not in a plain query.
        if len > 63 {
            return None;
        }
        p += 1 + len;
    }
    let qname = b.get(12..p)?;
    // With the root's zero, a name is at most 255 bytes (RFC 1035 §3.1).
    if qname.len() + 1 > 255 {
        return None;
    }
    p += 1;
    let qtype = u16_at(b, p)?;
    if u16_at(b, p + 2)? != CLASS_IN {
        return None;
    }
    p += 4;
    let mut edns_payload = None;
    if ar == 1 {
        // Root owner, type OPT, class = payload size, TTL = ext-rcode/version/flags,
        // RDLENGTH 0 (no options), and nothing after it.
        if *b.get(p)? != 0 || u16_at(b, p + 1)? != TYPE_OPT {
            return None;
        }
        let payload = u16_at(b, p + 3)?;
        let version = *b.get(p + 6)?;
        if version != 0 || u16_at(b, p + 9)? != 0 {
            return None;
        }
        edns_payload = Some(payload);
        p += 11;
    }
    if p != b.len() {
        return None;
    }
    Some(Query {
        id: u16::from_be_bytes([b[0], b[1]]),
        rd: b[2] & 0x01 != 0,
        cd: b[3] & 0x10 != 0,
        qname,
        qtype,
        edns_payload,
    })
}

/// The name's labels lowercased (ASCII) into `out`; `false` when a label byte is not
/// ASCII (the general path decides those).
pub(crate) fn lowercase(name: &[u8], out: &mut [u8; 255]) -> bool {
    if name.len() > out.len() {
        return false;
    }
    for (o, &c) in out.iter_mut().zip(name) {
        if c >= 0x80 {
            return false;
        }
        *o = c.to_ascii_lowercase();
    }
    true
}

/// Offsets of each label in a length-prefixed name (as many as fit in `out`; a name has
/// at most 127 labels).
pub(crate) fn label_starts(name: &[u8], out: &mut [u8; 128]) -> usize {
    let (mut p, mut n) = (0usize, 0usize);
    while p < name.len() && n < out.len() {
        out[n] = p as u8;
        n += 1;
        p += 1 + usize::from(name[p]);
    }
    n
}

/// The first `labels` labels of a lowercased name, dot-joined (`2.0.0.127`): the
/// DNSBL dataset's key, as `blzone::query_key` makes it, written into `buf`.
pub(crate) fn dataset_key<'b>(lower: &[u8], labels: usize, buf: &'b mut [u8; 255]) -> &'b str {
    let (mut p, mut n) = (0usize, 0usize);
    for i in 0..labels {
        let len = usize::from(lower[p]);
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        buf[n..n + len].copy_from_slice(&lower[p + 1..p + 1 + len]);
        n += len;
        p += 1 + len;
    }
    // ASCII only: `lowercase` refused anything else.
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// Hickory's encoder keeps at most this many names to point at.
const COMPRESSION_CANDIDATES: usize = 64;

/// Writes a response with hickory's name compression: a name already written (as the
/// same bytes, case included) is replaced by a pointer to it, searched label by label
/// from the first, the earliest stored match winning; each suffix written in full is
/// remembered for later names.
#[derive(Default)]
pub(crate) struct Packer {
    pub(crate) out: Vec<u8>,
    /// (offset in `out`, range in `names`) of every suffix written in full.
    pointers: Vec<(u16, u16, u16)>,
    /// The suffixes' label bytes, as written before any pointer replaced their tail.
    names: Vec<u8>,
}

impl Packer {
    pub(crate) fn clear(&mut self) {
        self.out.clear();
        self.pointers.clear();
        self.names.clear();
    }

    fn find(&self, suffix: &[u8]) -> Option<u16> {
        self.pointers
            .iter()
            .find(|(_, s, e)| &self.names[usize::from(*s)..usize::from(*e)] == suffix)
            .map(|(at, _, _)| *at)
    }

    fn store(&mut self, at: usize, suffix: &[u8], end_offset: usize) {
        // Hickory stores only below 0x3fff (where its cursor is) and at most 64 names.
        if end_offset < 0x3fff && self.pointers.len() < COMPRESSION_CANDIDATES {
            let start = self.names.len();
            self.names.extend_from_slice(suffix);
            self.pointers
                .push((at as u16, start as u16, self.names.len() as u16));
        }
    }

    /// Writes a name given as length-prefixed labels without the root's zero.
    pub(crate) fn name(&mut self, name: &[u8]) {
        let base = self.out.len();
        let end = base + name.len();
        let mut p = 0;
        while p < name.len() {
            let suffix = &name[p..];
            match self.find(suffix) {
                Some(at) if at & 0xc000 == 0 => {
                    self.out.extend_from_slice(&name[..p]);
                    self.out.extend_from_slice(&(0xc000 | at).to_be_bytes());
                    return;
                }
                _ => self.store(base + p, suffix, end),
            }
            p += 1 + usize::from(name[p]);
        }
        self.out.extend_from_slice(name);
        self.out.push(0);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Owner, type, class IN and TTL of a record; returns where RDLENGTH goes, for
    /// [`Packer::end_rdata`].
    pub(crate) fn record(&mut self, owner: &[u8], rtype: u16, ttl: u32) -> usize {
        self.name(owner);
        self.u16(rtype);
        self.u16(CLASS_IN);
        self.u32(ttl);
        let at = self.out.len();
        self.u16(0);
        at
    }

    pub(crate) fn end_rdata(&mut self, at: usize) {
        let len = (self.out.len() - at - 2) as u16;
        self.out[at..at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// TXT RDATA: the text in strings of at most 255 bytes.
    pub(crate) fn txt(&mut self, text: &[u8]) {
        if text.is_empty() {
            self.out.push(0);
        }
        for chunk in text.chunks(255) {
            self.out.push(chunk.len() as u8);
            self.out.extend_from_slice(chunk);
        }
    }
}

/// A hickory `Name`'s labels in wire form (length-prefixed, no root zero), case kept.
pub(crate) fn name_wire(name: &hickory_proto::rr::Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_plain_queries_only() {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x011\x012\x02bl\x00\x00\x01\x00\x01");
        let p = parse(&q).unwrap();
        assert_eq!((p.id, p.rd, p.cd, p.qtype), (0x1234, true, false, 1));
        assert_eq!(p.qname, b"\x011\x012\x02bl");
        // Trailing garbage, a response, another opcode, two questions.
        let mut t = q.clone();
        t.push(0);
        assert!(parse(&t).is_none());
        let mut t = q.clone();
        t[2] |= 0x80;
        assert!(parse(&t).is_none());
        let mut t = q.clone();
        t[2] |= 0x10;
        assert!(parse(&t).is_none());
        let mut t = q.clone();
        t[5] = 2;
        assert!(parse(&t).is_none());
        // EDNS without options.
        let mut e = q.clone();
        e[11] = 1;
        e.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]);
        assert_eq!(parse(&e).unwrap().edns_payload, Some(4096));
        let mut v = e.clone();
        v[e.len() - 5] = 1; // version 1
        assert!(parse(&v).is_none());
    }

    #[test]
    fn packer_compresses_like_hickory() {
        use hickory_proto::rr::Name;
        use std::str::FromStr;
        let mut p = Packer::default();
        p.out.extend_from_slice(&[0; 12]);
        let q = name_wire(&Name::from_str("4.3.2.1.bl.example.net.").unwrap());
        p.name(&q);
        p.name(&q);
        assert_eq!(&p.out[p.out.len() - 2..], &[0xc0, 12]);
        let host = name_wire(&Name::from_str("hostmaster.bl.example.net.").unwrap());
        p.name(&host);
        assert_eq!(&p.out[p.out.len() - 13..], b"\x0ahostmaster\xc0\x14");
    }
}
