//! The two SASL mechanisms submission offers, PLAIN (RFC 4616) and LOGIN (the
//! de-facto one Outlook still uses). Both carry the password itself, which is why they
//! are offered only inside TLS. Decoding is written here: it is two base64 strings and
//! a NUL split, smaller than any crate's API around it.

use base64::{engine::general_purpose::STANDARD, Engine};

/// A user name and password as the client sent them.
#[derive(PartialEq, Eq)]
pub(crate) struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.user)
    }
}

/// Why a SASL answer could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SaslError {
    /// The client sent `*`.
    Cancelled,
    /// Not base64, not UTF-8, or not the mechanism's shape.
    Malformed,
}

/// Decodes one base64 line of a SASL exchange (CRLF trimmed).
pub(crate) fn decode_line(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let text = line.trim_ascii();
    if text == b"*" {
        return Err(SaslError::Cancelled);
    }
    if text == b"=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(text).map_err(|_| SaslError::Malformed)
}

/// Splits a PLAIN message: `authzid NUL authcid NUL password`. An authorization
/// identity other than the user's own is refused: nobody may act as someone else.
pub(crate) fn parse_plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let (authzid, user, password) = (text(authzid)?, text(user)?, text(password)?);
    if user.is_empty() || (!authzid.is_empty() && !authzid.eq_ignore_ascii_case(&user)) {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials { user, password })
}

/// A LOGIN answer (user name or password) as text.
pub(crate) fn login_text(line: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(decode_line(line)?).map_err(|_| SaslError::Malformed)
}

/// `334` challenges of LOGIN: "Username:" and "Password:", base64.
pub(crate) const LOGIN_USER_CHALLENGE: &str = "VXNlcm5hbWU6";
/// See [`LOGIN_USER_CHALLENGE`].
pub(crate) const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_splits_and_refuses_acting_as_another() {
        let ok = parse_plain(b"\0alice@example.org\0secret").unwrap();
        assert_eq!(ok.user, "alice@example.org");
        assert_eq!(ok.password, "secret");
        assert!(parse_plain(b"alice@example.org\0alice@example.org\0s").is_ok());
        assert_eq!(
            parse_plain(b"bob@example.org\0alice@example.org\0s"),
            Err(SaslError::Malformed)
        );
        assert_eq!(parse_plain(b"alice\0secret"), Err(SaslError::Malformed));
        assert_eq!(parse_plain(b"\0\0secret"), Err(SaslError::Malformed));
        assert_eq!(parse_plain(b"\0a\0b\0c"), Err(SaslError::Malformed));
    }

    #[test]
    fn lines_decode_cancel_and_refuse_garbage() {
        assert_eq!(decode_line(b"*\r\n"), Err(SaslError::Cancelled));
        assert_eq!(decode_line(b"!!!\r\n"), Err(SaslError::Malformed));
        assert_eq!(login_text(b"YWxpY2U=\r\n").unwrap(), "alice");
        assert_eq!(STANDARD.decode(LOGIN_USER_CHALLENGE).unwrap(), b"Username:");
    }
}
