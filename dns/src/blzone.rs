//! DNSBL zones: a [`crate::dnsbl::Dataset`] served under a zone name, per RFC 5782,
//! and reloaded when its file changes.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use hickory_proto::{
    op::ResponseCode,
    rr::{
        rdata::{NS, SOA, TXT},
        Name, RData, Record, RecordType,
    },
};

use crate::{
    config::{DnsblConfig, DnsblFormat},
    dnsbl::{Dataset, DatasetKind},
    fastpath::{self, Packer},
    metrics,
    zone::label_count,
    zone::Answer,
    DnsError,
};

/// What identifies one version of a dataset file: a change of either means reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// One loaded version of the dataset, with the apex records made for it.
struct Loaded {
    dataset: Dataset,
    stamp: Option<FileStamp>,
    ttl: u32,
    soa: Record,
    ns: Vec<Record>,
    /// The negative answers' SOA, ready for the wire fast path.
    negative: WireSoa,
}

/// The SOA of negative answers in the pieces [`BlZone::answer_wire`] writes: the TTL
/// (the record's, capped at the SOA minimum, as [`BlZone::lookup`] does), the two names
/// (compressed against the packet when written) and the five numbers.
struct WireSoa {
    ttl: u32,
    mname: Vec<u8>,
    rname: Vec<u8>,
    numbers: [u8; 20],
}

impl WireSoa {
    fn new(record: &Record) -> WireSoa {
        let mut soa = WireSoa {
            ttl: record.ttl,
            mname: Vec::new(),
            rname: Vec::new(),
            numbers: [0; 20],
        };
        if let RData::SOA(s) = &record.data {
            soa.ttl = soa.ttl.min(s.minimum);
            soa.mname = fastpath::name_wire(&s.mname);
            soa.rname = fastpath::name_wire(&s.rname);
            soa.numbers[0..4].copy_from_slice(&s.serial.to_be_bytes());
            soa.numbers[4..8].copy_from_slice(&s.refresh.to_be_bytes());
            soa.numbers[8..12].copy_from_slice(&s.retry.to_be_bytes());
            soa.numbers[12..16].copy_from_slice(&s.expire.to_be_bytes());
            soa.numbers[16..20].copy_from_slice(&s.minimum.to_be_bytes());
        }
        soa
    }
}

/// A DNSBL zone: its dataset can be swapped while queries read the old one.
pub(crate) struct BlZone {
    origin: Name,
    /// The apex's labels in wire form, case as configured (for the fast path).
    origin_wire: Vec<u8>,
    name: String,
    file: PathBuf,
    kind: DatasetKind,
    current: RwLock<Arc<Loaded>>,
    /// The file's stamp at the last load attempt, good or bad.
    seen: Mutex<Option<FileStamp>>,
}

impl std::fmt::Debug for BlZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlZone")
            .field("origin", &self.origin)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl BlZone {
    /// Loads the dataset of `config` (blocking: a big dataset takes a while).
    pub(crate) fn load(config: &DnsblConfig) -> Result<BlZone, DnsError> {
        let mut origin = Name::from_str(&config.name).map_err(|e| DnsError::Dnsbl {
            zone: config.name.clone(),
            path: config.file.clone(),
            message: format!("{:?} is not a domain name: {e}", config.name),
        })?;
        origin.set_fqdn(true);
        let kind = match config.format {
            DnsblFormat::Ip4set => DatasetKind::Ip4Set,
            DnsblFormat::Ip4trie => DatasetKind::Ip4Trie,
            DnsblFormat::Ip6trie => DatasetKind::Ip6Trie,
            DnsblFormat::Dnset => DatasetKind::Dnset,
        };
        let loaded = Self::read(&origin, &config.name, &config.file, kind)?;
        let zone = BlZone {
            seen: Mutex::new(loaded.stamp),
            name: config.name.clone(),
            file: config.file.clone(),
            kind,
            current: RwLock::new(Arc::new(loaded)),
            origin_wire: fastpath::name_wire(&origin),
            origin,
        };
        Ok(zone)
    }

    fn read(origin: &Name, name: &str, file: &Path, kind: DatasetKind) -> Result<Loaded, DnsError> {
        // Stamp first: a write landing during the load is then seen as a change next time.
        let stamp = stamp(file);
        let dataset = Dataset::load(kind, file).map_err(|e| DnsError::Dnsbl {
            zone: name.to_owned(),
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
        let ttl = dataset.ttl();
        let (soa, ns) = apex_records(origin, &dataset, stamp);
        Ok(Loaded {
            dataset,
            stamp,
            ttl,
            negative: WireSoa::new(&soa),
            soa,
            ns,
        })
    }

    /// The zone's apex.
    pub(crate) fn origin(&self) -> &Name {
        &self.origin
    }

    /// The configured name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The dataset file.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    fn current(&self) -> Arc<Loaded> {
        // Only whole `Arc`s are ever stored, so a poisoned lock still holds a good one.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the dataset if its file changed since the last load (blocking). `None`:
    /// unchanged. On error the old dataset keeps serving.
    pub(crate) fn reload_if_changed(&self) -> Option<Result<(), DnsError>> {
        let now = stamp(&self.file);
        {
            // A broken version is remembered too, so it is not re-parsed every poll;
            // the next write to the file changes the stamp again.
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_some() && now == *seen {
                return None;
            }
            *seen = now;
        }
        let result = Self::read(&self.origin, &self.name, &self.file, self.kind);
        let label = if result.is_ok() { "ok" } else { "error" };
        ::metrics::counter!(metrics::ZONE_RELOADS_TOTAL, "kind" => "dnsbl", "result" => label)
            .increment(1);
        Some(match result {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                tracing::info!(zone = %self.name, file = %self.file.display(), "Reloaded a DNSBL dataset.");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "A DNSBL dataset failed to load; the previous one keeps serving.");
                Err(error)
            }
        })
    }

    /// Answers `qname`/`qtype` under this zone (RFC 5782 §2): a listed entry has an A
    /// record (127.0.0.x) and maybe a TXT; anything else is NXDOMAIN. The apex has a
    /// synthesized SOA and NS.
    pub(crate) fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let loaded = self.current();
        let mut answer = Answer::new(ResponseCode::NoError);
        let mut negative_soa = loaded.soa.clone();
        if let RData::SOA(soa) = &loaded.soa.data {
            negative_soa.ttl = negative_soa.ttl.min(soa.minimum);
        }
        let labels = label_count(qname) - label_count(&self.origin);
        if labels == 0 {
            match qtype {
                RecordType::SOA => answer.answers.push(loaded.soa.clone()),
                RecordType::NS => answer.answers.extend(loaded.ns.iter().cloned()),
                RecordType::ANY => {
                    answer.answers.push(loaded.soa.clone());
                    answer.answers.extend(loaded.ns.iter().cloned());
                }
                _ => answer.authorities.push(negative_soa),
            }
            return answer;
        }
        let key = query_key(qname, labels);
        let Some(listing) = loaded.dataset.query(&key) else {
            answer.rcode = ResponseCode::NXDomain;
            answer.authorities.push(negative_soa);
            return answer;
        };
        let a = Record::from_rdata(qname.clone(), loaded.ttl, RData::A(listing.a.into()));
        let txt = listing
            .txt
            .as_deref()
            .map(|t| Record::from_rdata(qname.clone(), loaded.ttl, RData::TXT(txt_rdata(t))));
        match qtype {
            RecordType::A => answer.answers.push(a),
            RecordType::TXT => answer.answers.extend(txt),
            RecordType::ANY => {
                answer.answers.push(a);
                answer.answers.extend(txt);
            }
            _ => {}
        }
        if answer.answers.is_empty() {
            answer.authorities.push(negative_soa);
        }
        answer
    }
}

impl BlZone {
    /// [`BlZone::lookup`] for the wire fast path: appends the answer and authority
    /// sections for `qname` (a name below the apex, as sent) to `p`, the header and the
    /// question being there already, and returns the rcode and the two sections' record
    /// counts. `key` is the dataset key (`query_key` of the name).
    pub(crate) fn answer_wire(
        &self,
        qname: &[u8],
        qtype: u16,
        key: &str,
        p: &mut Packer,
    ) -> (ResponseCode, u16, u16) {
        let loaded = self.current();
        let dataset = &loaded.dataset;
        let (listed, a, txt) = match qtype {
            fastpath::TYPE_TXT | fastpath::TYPE_ANY => match dataset.query(key) {
                Some(l) => (true, Some(l.a), l.txt),
                None => (false, None, None),
            },
            _ => match dataset.query_a(key) {
                Some(a) => (true, Some(a), None),
                None => (false, None, None),
            },
        };
        let mut answers = 0;
        if listed {
            if matches!(qtype, fastpath::TYPE_A | fastpath::TYPE_ANY) {
                if let Some(a) = a {
                    let at = p.record(qname, fastpath::TYPE_A, loaded.ttl);
                    p.out.extend_from_slice(&a.octets());
                    p.end_rdata(at);
                    answers += 1;
                }
            }
            if matches!(qtype, fastpath::TYPE_TXT | fastpath::TYPE_ANY) {
                if let Some(txt) = txt {
                    let at = p.record(qname, fastpath::TYPE_TXT, loaded.ttl);
                    p.txt(txt.as_bytes());
                    p.end_rdata(at);
                    answers += 1;
                }
            }
        }
        let mut authorities = 0;
        if answers == 0 {
            let soa = &loaded.negative;
            let at = p.record(&self.origin_wire, fastpath::TYPE_SOA, soa.ttl);
            p.name(&soa.mname);
            p.name(&soa.rname);
            p.out.extend_from_slice(&soa.numbers);
            p.end_rdata(at);
            authorities = 1;
        }
        let rcode = if listed {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        (rcode, answers, authorities)
    }
}

/// The apex SOA and NS: the file's `$SOA` and `$NS` when it has them (as rbldnsd
/// serves them), else synthesized: the zone itself as name server, `hostmaster.<zone>`
/// as mailbox, the file's modification time as serial, the dataset TTL as minimum.
fn apex_records(
    origin: &Name,
    dataset: &Dataset,
    stamp: Option<FileStamp>,
) -> (Record, Vec<Record>) {
    let ttl = dataset.ttl();
    let absolute = |s: &str| {
        let mut n = Name::from_str(s).ok()?;
        n.set_fqdn(true);
        Some(n)
    };
    let soa = dataset
        .soa()
        .and_then(|s| {
            Some(Record::from_rdata(
                origin.clone(),
                if s.ttl == 0 { ttl } else { s.ttl },
                RData::SOA(SOA::new(
                    absolute(&s.mname)?,
                    absolute(&s.rname)?,
                    s.serial,
                    s.refresh as i32,
                    s.retry as i32,
                    s.expire as i32,
                    s.minimum,
                )),
            ))
        })
        .unwrap_or_else(|| {
            let serial = stamp
                .and_then(|s| s.modified)
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1);
            let rname = origin
                .prepend_label("hostmaster")
                .unwrap_or_else(|_| origin.clone());
            Record::from_rdata(
                origin.clone(),
                ttl,
                RData::SOA(SOA::new(
                    origin.clone(),
                    rname,
                    serial,
                    3600,
                    600,
                    604_800,
                    ttl,
                )),
            )
        });
    let mut ns: Vec<Record> = dataset
        .ns()
        .map(|n| {
            n.names
                .iter()
                .filter_map(|name| absolute(name))
                .map(|name| Record::from_rdata(origin.clone(), n.ttl.max(1), RData::NS(NS(name))))
                .collect()
        })
        .unwrap_or_default();
    if ns.is_empty() {
        ns.push(Record::from_rdata(
            origin.clone(),
            ttl,
            RData::NS(NS(origin.clone())),
        ));
    }
    (soa, ns)
}

/// The labels of `qname` above the zone, lowercased and dot-joined (`2.0.0.127`,
/// `spam.example.com`): the dataset's key.
fn query_key(qname: &Name, labels: usize) -> String {
    let mut key = String::with_capacity(qname.len());
    for (i, label) in qname.iter().take(labels).enumerate() {
        if i > 0 {
            key.push('.');
        }
        key.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
    }
    key
}

/// TXT data in strings of at most 255 bytes, as the wire format requires.
fn txt_rdata(text: &str) -> TXT {
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(255).collect();
    if chunks.is_empty() {
        TXT::from_bytes(vec![b""])
    } else {
        TXT::from_bytes(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_labels_above_the_zone() {
        let q = Name::from_str("2.0.0.127.BL.example.net.").unwrap();
        assert_eq!(query_key(&q, 4), "2.0.0.127");
        let q = Name::from_str("Spam.Example.COM.dbl.example.net.").unwrap();
        assert_eq!(query_key(&q, 3), "spam.example.com");
    }

    #[test]
    fn long_txt_is_split() {
        let t = txt_rdata(&"x".repeat(600));
        assert_eq!(t.txt_data.len(), 3);
    }
}
