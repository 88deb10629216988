//! RADIUS's shared-secret cryptography: User-Password hiding (RFC 2865 §5.2), the
//! Response Authenticator (§3), the Accounting-Request authenticator (RFC 2866 §3),
//! Message-Authenticator (RFC 3579 §3.2) and CHAP (RFC 1994, RFC 2865 §5.3).
//!
//! MD5 is weak, but it is what the protocol fixes; Message-Authenticator (HMAC-MD5) is
//! what makes Access-Request forgery (BlastRADIUS) impractical.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

use crate::packet::{attr, EncodeError, Packet, PacketWriter, HEADER_LEN};

type HmacMd5 = Hmac<Md5>;

/// Longest User-Password RFC 2865 allows, in bytes.
pub const MAX_PASSWORD_LEN: usize = 128;

/// Compares without an early exit, so timing does not leak how many bytes matched.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hides a password for User-Password: 16-byte blocks, each XORed with
/// MD5(secret + previous block), the first with MD5(secret + Request Authenticator).
pub fn hide_password(
    password: &[u8],
    secret: &[u8],
    authenticator: &[u8; 16],
) -> Result<Vec<u8>, EncodeError> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(EncodeError::AttributeTooLong {
            attribute: attr::USER_PASSWORD,
            len: password.len(),
        });
    }
    let padded_len = password.len().div_ceil(16).max(1) * 16;
    let mut out = password.to_vec();
    out.resize(padded_len, 0);
    let mut previous: [u8; 16] = *authenticator;
    for block in out.chunks_mut(16) {
        let b = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize();
        for (c, k) in block.iter_mut().zip(b.iter()) {
            *c ^= k;
        }
        previous.copy_from_slice(block);
    }
    Ok(out)
}

/// Recovers a User-Password; `None` if its length is not 16..=128 in steps of 16. The
/// trailing NUL padding is removed.
pub fn unhide_password(hidden: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Option<Vec<u8>> {
    if hidden.is_empty() || !hidden.len().is_multiple_of(16) || hidden.len() > MAX_PASSWORD_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(hidden.len());
    let mut previous: &[u8] = authenticator;
    for block in hidden.chunks(16) {
        let b = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize();
        out.extend(block.iter().zip(b.iter()).map(|(c, k)| c ^ k));
        previous = block;
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    Some(out)
}

/// What a packet's Message-Authenticator says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageAuthenticator {
    /// The packet has none.
    Absent,
    /// It is present and right.
    Valid,
    /// It is present and wrong, or not 16 bytes: drop the packet (RFC 3579 §3.2).
    Invalid,
}

/// HMAC-MD5 over `bytes` with the 16 value bytes at `at` taken as zero, and the
/// authenticator field replaced by `authenticator` when given.
fn message_authenticator_of(
    bytes: &[u8],
    at: usize,
    authenticator: Option<&[u8; 16]>,
    secret: &[u8],
) -> [u8; 16] {
    let mut mac = <HmacMd5 as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    match authenticator {
        Some(auth) => {
            mac.update(&bytes[..4]);
            mac.update(auth);
            mac.update(&bytes[HEADER_LEN..at]);
        }
        None => mac.update(&bytes[..at]),
    }
    mac.update(&[0u8; 16]);
    mac.update(&bytes[at + 16..]);
    mac.finalize().into_bytes().into()
}

/// Checks the Message-Authenticator of a request as received (the Access-Request rule:
/// the HMAC covers the packet as sent, with the attribute's value zeroed).
pub fn verify_message_authenticator(packet: &Packet<'_>, secret: &[u8]) -> MessageAuthenticator {
    let mut found = packet
        .attributes()
        .filter(|a| a.typ == attr::MESSAGE_AUTHENTICATOR);
    let Some(ma) = found.next() else {
        return MessageAuthenticator::Absent;
    };
    // Two of them is not a packet any NAS sends; treat it as an attack.
    if ma.value.len() != 16 || found.next().is_some() {
        return MessageAuthenticator::Invalid;
    }
    let expected = message_authenticator_of(packet.bytes(), ma.offset + 2, None, secret);
    if ct_eq(&expected, ma.value) {
        MessageAuthenticator::Valid
    } else {
        MessageAuthenticator::Invalid
    }
}

/// MD5(Code + Identifier + Length + `authenticator` + Attributes + secret).
fn md5_authenticator(bytes: &[u8], authenticator: &[u8; 16], secret: &[u8]) -> [u8; 16] {
    Md5::new()
        .chain_update(&bytes[..4])
        .chain_update(authenticator)
        .chain_update(&bytes[HEADER_LEN..])
        .chain_update(secret)
        .finalize()
        .into()
}

/// Whether an Accounting-Request's authenticator is MD5 over the packet with a zero
/// authenticator and the secret (RFC 2866 §3). A wrong secret or a forgery fails.
pub fn verify_accounting_request(packet: &Packet<'_>, secret: &[u8]) -> bool {
    let expected = md5_authenticator(packet.bytes(), &[0u8; 16], secret);
    ct_eq(&expected, &packet.authenticator)
}

/// Finishes a reply (Access-Accept/Reject/Challenge, Accounting-Response): the
/// Message-Authenticator is computed with the Request Authenticator in the header
/// (RFC 3579 §3.2), then the Response Authenticator over the whole packet, including it.
pub fn finish_reply(
    writer: PacketWriter,
    secret: &[u8],
    request_authenticator: &[u8; 16],
) -> Result<Vec<u8>, EncodeError> {
    let (mut bytes, ma_at) = writer.into_parts(request_authenticator)?;
    if let Some(at) = ma_at {
        let ma = message_authenticator_of(&bytes, at, None, secret);
        bytes[at..at + 16].copy_from_slice(&ma);
    }
    let response = md5_authenticator(&bytes, request_authenticator, secret);
    bytes[4..HEADER_LEN].copy_from_slice(&response);
    Ok(bytes)
}

/// Finishes an Access-Request with the given (random) Request Authenticator: what a
/// NAS does. For clients, tests and benchmarks.
pub fn finish_access_request(
    writer: PacketWriter,
    secret: &[u8],
    authenticator: &[u8; 16],
) -> Result<Vec<u8>, EncodeError> {
    let (mut bytes, ma_at) = writer.into_parts(authenticator)?;
    if let Some(at) = ma_at {
        let ma = message_authenticator_of(&bytes, at, None, secret);
        bytes[at..at + 16].copy_from_slice(&ma);
    }
    Ok(bytes)
}

/// Finishes an Accounting-Request: Message-Authenticator (if added) over the packet with
/// a zero authenticator, then the authenticator of RFC 2866 §3. For clients and tests.
pub fn finish_accounting_request(
    writer: PacketWriter,
    secret: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let (mut bytes, ma_at) = writer.into_parts(&[0u8; 16])?;
    if let Some(at) = ma_at {
        let ma = message_authenticator_of(&bytes, at, Some(&[0u8; 16]), secret);
        bytes[at..at + 16].copy_from_slice(&ma);
    }
    let auth = md5_authenticator(&bytes, &[0u8; 16], secret);
    bytes[4..HEADER_LEN].copy_from_slice(&auth);
    Ok(bytes)
}

/// Whether a reply's Response Authenticator matches the request's: what a NAS checks.
pub fn verify_reply(reply: &Packet<'_>, secret: &[u8], request_authenticator: &[u8; 16]) -> bool {
    let expected = md5_authenticator(reply.bytes(), request_authenticator, secret);
    ct_eq(&expected, &reply.authenticator)
}

/// Whether a reply's Message-Authenticator is right (computed with the request's
/// authenticator in the header): what a NAS checks.
pub fn verify_reply_message_authenticator(
    reply: &Packet<'_>,
    secret: &[u8],
    request_authenticator: &[u8; 16],
) -> MessageAuthenticator {
    let Some(ma) = reply.attribute(attr::MESSAGE_AUTHENTICATOR) else {
        return MessageAuthenticator::Absent;
    };
    if ma.value.len() != 16 {
        return MessageAuthenticator::Invalid;
    }
    let expected = message_authenticator_of(
        reply.bytes(),
        ma.offset + 2,
        Some(request_authenticator),
        secret,
    );
    if ct_eq(&expected, ma.value) {
        MessageAuthenticator::Valid
    } else {
        MessageAuthenticator::Invalid
    }
}

/// The CHAP response: MD5(identifier + secret + challenge) (RFC 1994 §4.1).
pub fn chap_response(identifier: u8, password: &[u8], challenge: &[u8]) -> [u8; 16] {
    Md5::new()
        .chain_update([identifier])
        .chain_update(password)
        .chain_update(challenge)
        .finalize()
        .into()
}

/// Checks a CHAP-Password value (identifier + 16-byte response) against the user's
/// cleartext secret. The challenge is CHAP-Challenge, or the Request Authenticator when
/// the NAS sent none (RFC 2865 §2.2).
pub fn verify_chap(chap_password: &[u8], password: &[u8], challenge: &[u8]) -> bool {
    let Some((&identifier, response)) = chap_password.split_first() else {
        return false;
    };
    response.len() == 16 && ct_eq(&chap_response(identifier, password, challenge), response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Code;

    #[test]
    fn password_hiding_round_trips() {
        let auth = [7u8; 16];
        for pw in [
            "",
            "a",
            "exactly16bytes!!",
            "a password longer than sixteen bytes",
            &"x".repeat(128),
        ] {
            let hidden = hide_password(pw.as_bytes(), b"s3cret", &auth).unwrap();
            assert_eq!(hidden.len() % 16, 0);
            assert!(!hidden.is_empty());
            assert_eq!(
                unhide_password(&hidden, b"s3cret", &auth).unwrap(),
                pw.as_bytes()
            );
            assert_ne!(
                unhide_password(&hidden, b"wrong", &auth).unwrap(),
                pw.as_bytes()
            );
        }
        assert!(hide_password(&[b'x'; 129], b"s", &auth).is_err());
        assert!(unhide_password(&[0; 15], b"s", &auth).is_none());
        assert!(unhide_password(&[0; 144], b"s", &auth).is_none());
    }

    /// RFC 2865 §7.1's example: the hidden password of "arctangent" with secret "xyzzy5461".
    #[test]
    fn password_hiding_matches_rfc_2865_example() {
        let auth: [u8; 16] = hex::decode("0f403f9473978057bd83d5cb98f4227a")
            .unwrap()
            .try_into()
            .unwrap();
        let hidden = hide_password(b"arctangent", b"xyzzy5461", &auth).unwrap();
        assert_eq!(hex::encode(hidden), "0dbe708d93d413ce3196e43f782a0aee");
    }

    #[test]
    fn message_authenticator_signs_and_verifies() {
        let mut w = PacketWriter::new(Code::AccessRequest, 9);
        w.message_authenticator();
        w.push(attr::USER_NAME, b"bob").unwrap();
        let auth = [3u8; 16];
        let bytes = finish_access_request(w, b"secret", &auth).unwrap();
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(
            verify_message_authenticator(&p, b"secret"),
            MessageAuthenticator::Valid
        );
        assert_eq!(
            verify_message_authenticator(&p, b"other"),
            MessageAuthenticator::Invalid
        );
        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() = b'c';
        let p = Packet::decode(&tampered).unwrap();
        assert_eq!(
            verify_message_authenticator(&p, b"secret"),
            MessageAuthenticator::Invalid
        );

        let mut w = PacketWriter::new(Code::AccessAccept, 9);
        w.message_authenticator();
        w.push_u32(attr::SESSION_TIMEOUT, 60);
        let reply = finish_reply(w, b"secret", &auth).unwrap();
        let r = Packet::decode(&reply).unwrap();
        assert!(verify_reply(&r, b"secret", &auth));
        assert!(!verify_reply(&r, b"secret", &[4; 16]));
        assert_eq!(
            verify_reply_message_authenticator(&r, b"secret", &auth),
            MessageAuthenticator::Valid
        );
    }

    /// The attribute as radclient places it (last, after `Message-Authenticator = 0x00`
    /// in its input), checked against HMAC-MD5 computed independently over the packet
    /// with the value zeroed.
    #[test]
    fn message_authenticator_is_hmac_md5_over_the_zeroed_packet() {
        let mut w = PacketWriter::new(Code::AccessRequest, 1);
        w.push(attr::USER_NAME, b"bob").unwrap();
        w.message_authenticator();
        let bytes = finish_access_request(w, b"testing123", &[0x11; 16]).unwrap();
        let mut zeroed = bytes.clone();
        let at = bytes.len() - 16;
        zeroed[at..].fill(0);
        let mut mac = <HmacMd5 as Mac>::new_from_slice(b"testing123").unwrap();
        mac.update(&zeroed);
        assert_eq!(&bytes[at..], &mac.finalize().into_bytes()[..]);
    }

    #[test]
    fn accounting_authenticator_verifies() {
        let mut w = PacketWriter::new(Code::AccountingRequest, 1);
        w.push_u32(attr::ACCT_STATUS_TYPE, 1);
        let bytes = finish_accounting_request(w, b"secret").unwrap();
        let p = Packet::decode(&bytes).unwrap();
        assert!(verify_accounting_request(&p, b"secret"));
        assert!(!verify_accounting_request(&p, b"secreT"));
    }

    #[test]
    fn chap_checks_identifier_secret_and_challenge() {
        let challenge = [5u8; 16];
        let mut value = vec![42];
        value.extend_from_slice(&chap_response(42, b"pw", &challenge));
        assert!(verify_chap(&value, b"pw", &challenge));
        assert!(!verify_chap(&value, b"pw2", &challenge));
        assert!(!verify_chap(&value, b"pw", &[6u8; 16]));
        assert!(!verify_chap(&value[..10], b"pw", &challenge));
        assert!(!verify_chap(&[], b"pw", &challenge));
    }
}
