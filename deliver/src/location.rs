//! Where a user's mailbox lives: the directory's `mailbox_location`, a comma-separated
//! list of stores. One store is the normal case; two are a migration, and every copy
//! goes to both.
//!
//! - `maildir:` — the default Maildir, `{data_dir}/mail/{domain}/{user}/`;
//! - `maildir:/srv/mail/alice` — a Maildir at that path;
//! - `lmtp://10.0.0.5:24` — LMTP over TCP (Dovecot's or Cyrus's lmtpd);
//! - `lmtp+unix:///run/dovecot/lmtp` — LMTP over a unix socket.

use std::{fmt, path::PathBuf};

/// One store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Store {
    /// A Maildir: the default one (`None`) or one at a path.
    Maildir(Option<PathBuf>),
    /// An LMTP server.
    Lmtp(LmtpAddress),
}

/// How an LMTP server is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LmtpAddress {
    /// `host:port`.
    Tcp(String),
    /// A unix socket's path.
    Unix(PathBuf),
}

/// The most stores one mailbox is delivered to: a migration needs two; more is a typo.
pub const MAX_STORES: usize = 4;

impl Store {
    /// Reads one store's spelling.
    pub fn parse(text: &str) -> Result<Store, String> {
        let text = text.trim();
        // The directory keeps a user's stores comma-separated.
        if text.contains(',') {
            return Err(format!(
                "{text:?}: a store's path or address cannot hold a comma"
            ));
        }
        if let Some(path) = text.strip_prefix("maildir:") {
            if path.is_empty() {
                return Ok(Store::Maildir(None));
            }
            if !path.starts_with('/') {
                return Err(format!("{text:?}: a Maildir path must be absolute"));
            }
            return Ok(Store::Maildir(Some(PathBuf::from(path))));
        }
        if let Some(path) = text.strip_prefix("lmtp+unix://") {
            if !path.starts_with('/') {
                return Err(format!("{text:?}: write lmtp+unix:///absolute/path"));
            }
            return Ok(Store::Lmtp(LmtpAddress::Unix(PathBuf::from(path))));
        }
        if let Some(hostport) = text.strip_prefix("lmtp://") {
            let hostport = hostport.trim_end_matches('/');
            let port_ok = hostport.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                return Err(format!(
                    "{text:?}: write lmtp://host:port (LMTP has no default port)"
                ));
            }
            return Ok(Store::Lmtp(LmtpAddress::Tcp(hostport.to_owned())));
        }
        Err(format!(
            "{text:?} is not a store: use maildir:, maildir:/path, lmtp://host:port or lmtp+unix:///path"
        ))
    }

    /// The kind, as the `store` metric label: `maildir` or `lmtp`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Maildir(_) => "maildir",
            Store::Lmtp(_) => "lmtp",
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Maildir(None) => f.write_str("maildir:"),
            Store::Maildir(Some(path)) => write!(f, "maildir:{}", path.display()),
            Store::Lmtp(LmtpAddress::Tcp(hostport)) => write!(f, "lmtp://{hostport}"),
            Store::Lmtp(LmtpAddress::Unix(path)) => write!(f, "lmtp+unix://{}", path.display()),
        }
    }
}

/// The stores of a `mailbox_location`; none set means the default Maildir.
pub fn parse_location(location: Option<&str>) -> Result<Vec<Store>, String> {
    let Some(location) = location.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(vec![Store::Maildir(None)]);
    };
    let mut stores = Vec::new();
    for part in location.split(',') {
        let store = Store::parse(part)?;
        if !stores.contains(&store) {
            stores.push(store);
        }
    }
    if stores.len() > MAX_STORES {
        return Err(format!(
            "{} stores in one location; at most {MAX_STORES}",
            stores.len()
        ));
    }
    Ok(stores)
}

/// The `mailbox_location` text of a list of stores.
pub fn format_location(stores: &[Store]) -> String {
    stores
        .iter()
        .map(Store::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_and_prints_back() {
        for text in [
            "maildir:",
            "maildir:/srv/mail/alice",
            "lmtp://10.0.0.5:24",
            "lmtp://[2001:db8::5]:24",
            "lmtp+unix:///run/dovecot/lmtp",
        ] {
            assert_eq!(Store::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            parse_location(Some("maildir:, lmtp://mx:24")).unwrap(),
            vec![
                Store::Maildir(None),
                Store::Lmtp(LmtpAddress::Tcp("mx:24".into()))
            ]
        );
        assert_eq!(parse_location(None).unwrap(), vec![Store::Maildir(None)]);
        assert_eq!(
            parse_location(Some("")).unwrap(),
            vec![Store::Maildir(None)]
        );
    }

    #[test]
    fn mistakes_are_named() {
        for bad in [
            "lmtp://host",
            "lmtp://:24",
            "maildir:relative",
            "imap://x",
            "lmtp+unix://run/x",
            "lmtp://h:0",
        ] {
            assert!(Store::parse(bad).is_err(), "{bad}");
        }
    }
}
