//! Mail addresses as the directory keys them: `local@domain`, lowercased.
//!
//! Lowercasing the local part too is what ISPs do in practice: nobody expects
//! `Alice@` and `alice@` to be two mailboxes.

use std::fmt;

use crate::DirectoryError;

/// A normalised `local@domain` address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: String,
}

impl Address {
    /// Parses and normalises an address; refuses anything that is not a plain
    /// `local@domain` of printable ASCII.
    pub fn parse(text: &str) -> Result<Self, DirectoryError> {
        let invalid = || DirectoryError::InvalidAddress(text.to_owned());
        let (local, domain) = text.trim().rsplit_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || local.len() > 64
            || !local
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:@\"".contains(&b))
        {
            return Err(invalid());
        }
        let domain = normalize_domain(domain).map_err(|_| invalid())?;
        Ok(Address {
            local: local.to_ascii_lowercase(),
            domain,
        })
    }

    /// The part before `@`.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The address without a `+detail` (or other delimiter) suffix in the local part,
    /// if it has one.
    pub fn without_detail(&self, delimiter: char) -> Option<Address> {
        let (base, _) = self.local.split_once(delimiter)?;
        (!base.is_empty()).then(|| Address {
            local: base.to_owned(),
            domain: self.domain.clone(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Lowercases a domain and checks it is a plausible host name.
pub fn normalize_domain(text: &str) -> Result<String, DirectoryError> {
    let domain = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(domain)
    } else {
        Err(DirectoryError::InvalidDomain(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise_and_refuse_junk() {
        let a = Address::parse("Alice@Example.ORG").unwrap();
        assert_eq!(a.to_string(), "alice@example.org");
        assert!(Address::parse("no-at-sign").is_err());
        assert!(Address::parse("@example.org").is_err());
        assert!(Address::parse("a@-bad-.org").is_err());
        assert!(Address::parse("a b@example.org").is_err());
        assert!(Address::parse("caf\u{e9}@example.org").is_err());
        let plus = Address::parse("bob+lists@example.org").unwrap();
        assert_eq!(
            plus.without_detail('+').unwrap().to_string(),
            "bob@example.org"
        );
        assert!(a.without_detail('+').is_none());
    }
}
