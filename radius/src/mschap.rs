//! MS-CHAPv2 (RFC 2759) as carried in RADIUS (RFC 2548): the NT-Response check and the
//! Authenticator Response the server returns in MS-CHAP2-Success.
//!
//! Like CHAP it needs the user's cleartext password on the server (it hashes it with
//! MD4), so it works only for users with a `chap_secret`. MS-MPPE keys (RFC 3079) are
//! not sent: PPP encryption keys are not needed by the NASes this serves.

use des::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use md4::Md4;
use sha1::{Digest, Sha1};

use crate::crypto::ct_eq;

/// Length of the MS-CHAP2-Response value: ident, flags, peer challenge (16), reserved
/// (8), NT-Response (24).
pub const RESPONSE_LEN: usize = 50;

/// The parts of an MS-CHAP2-Response attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The PPP identifier, echoed in MS-CHAP2-Success and MS-CHAP-Error.
    pub ident: u8,
    /// The peer's challenge.
    pub peer_challenge: &'a [u8; 16],
    /// The NT-Response.
    pub nt_response: &'a [u8; 24],
}

impl<'a> Response<'a> {
    /// Splits an MS-CHAP2-Response value; `None` if it is not 50 bytes.
    pub fn parse(value: &'a [u8]) -> Option<Response<'a>> {
        if value.len() != RESPONSE_LEN {
            return None;
        }
        Some(Response {
            ident: value[0],
            peer_challenge: value[2..18].try_into().ok()?,
            nt_response: value[26..50].try_into().ok()?,
        })
    }
}

/// NtPasswordHash: MD4 of the password in UTF-16LE (RFC 2759 §8.3).
pub fn nt_password_hash(password: &str) -> [u8; 16] {
    let mut md4 = Md4::new();
    for unit in password.encode_utf16() {
        md4.update(unit.to_le_bytes());
    }
    md4.finalize().into()
}

/// The user name the challenge hash covers: without a Windows `DOMAIN\` prefix (§8.2).
fn bare_user_name(user_name: &[u8]) -> &[u8] {
    match user_name.iter().rposition(|&b| b == b'\\') {
        Some(i) => &user_name[i + 1..],
        None => user_name,
    }
}

/// ChallengeHash (RFC 2759 §8.2).
pub fn challenge_hash(
    peer_challenge: &[u8; 16],
    authenticator_challenge: &[u8; 16],
    user_name: &[u8],
) -> [u8; 8] {
    let digest = Sha1::new()
        .chain_update(peer_challenge)
        .chain_update(authenticator_challenge)
        .chain_update(bare_user_name(user_name))
        .finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Spreads 7 key bytes over the 8 bytes DES takes (the parity bits are ignored).
fn des_key(key7: &[u8]) -> [u8; 8] {
    let mut k = [0u8; 8];
    let bits = key7.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    for (i, byte) in k.iter_mut().enumerate() {
        *byte = (((bits >> (49 - 7 * i)) & 0x7f) as u8) << 1;
    }
    k
}

/// ChallengeResponse (§8.5): the 8-byte challenge DES-encrypted under three keys cut
/// from the zero-padded password hash.
fn challenge_response(challenge: &[u8; 8], password_hash: &[u8; 16]) -> [u8; 24] {
    let mut z = [0u8; 21];
    z[..16].copy_from_slice(password_hash);
    let mut out = [0u8; 24];
    for i in 0..3 {
        let cipher = des::Des::new(GenericArray::from_slice(&des_key(&z[7 * i..7 * i + 7])));
        let mut block = GenericArray::clone_from_slice(challenge);
        cipher.encrypt_block(&mut block);
        out[8 * i..8 * i + 8].copy_from_slice(&block);
    }
    out
}

/// GenerateNTResponse (§8.1).
pub fn nt_response(
    authenticator_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
    user_name: &[u8],
    password: &str,
) -> [u8; 24] {
    let challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name);
    challenge_response(&challenge, &nt_password_hash(password))
}

/// GenerateAuthenticatorResponse (§8.7): the `S=` followed by 40 upper-case hex digits.
pub fn authenticator_response(
    password: &str,
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    authenticator_challenge: &[u8; 16],
    user_name: &[u8],
) -> String {
    const MAGIC1: &[u8] = b"Magic server to client signing constant";
    const MAGIC2: &[u8] = b"Pad to make it do more than one iteration";
    let password_hash_hash: [u8; 16] = Md4::digest(nt_password_hash(password)).into();
    let digest = Sha1::new()
        .chain_update(password_hash_hash)
        .chain_update(nt_response)
        .chain_update(MAGIC1)
        .finalize();
    let challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name);
    let digest = Sha1::new()
        .chain_update(digest)
        .chain_update(challenge)
        .chain_update(MAGIC2)
        .finalize();
    format!("S={}", hex::encode_upper(digest))
}

/// Checks an MS-CHAP2-Response against the user's password. On success, returns the
/// MS-CHAP2-Success value to send: the ident followed by the Authenticator Response.
pub fn verify(
    authenticator_challenge: &[u8; 16],
    response: &Response<'_>,
    user_name: &[u8],
    password: &str,
) -> Option<Vec<u8>> {
    let expected = nt_response(
        authenticator_challenge,
        response.peer_challenge,
        user_name,
        password,
    );
    if !ct_eq(&expected, response.nt_response) {
        return None;
    }
    let s = authenticator_response(
        password,
        response.nt_response,
        response.peer_challenge,
        authenticator_challenge,
        user_name,
    );
    let mut success = Vec::with_capacity(1 + s.len());
    success.push(response.ident);
    success.extend_from_slice(s.as_bytes());
    Some(success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s.replace(' ', "")).unwrap().try_into().unwrap()
    }

    /// RFC 2759 §9.2, every intermediate value.
    #[test]
    fn rfc_2759_test_vectors() {
        let user = b"User";
        let password = "clientPass";
        let auth_challenge: [u8; 16] = h("5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28");
        let peer_challenge: [u8; 16] = h("21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E");
        assert_eq!(
            challenge_hash(&peer_challenge, &auth_challenge, user),
            h::<8>("D0 2E 43 86 BC E9 12 26")
        );
        assert_eq!(
            nt_password_hash(password),
            h::<16>("44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE")
        );
        let nt = nt_response(&auth_challenge, &peer_challenge, user, password);
        assert_eq!(
            nt,
            h::<24>("82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF")
        );
        let hash_hash: [u8; 16] = Md4::digest(nt_password_hash(password)).into();
        assert_eq!(
            hash_hash,
            h::<16>("41 C0 0C 58 4B D2 D9 1C 40 17 A2 A1 2F A5 9F 3F")
        );
        assert_eq!(
            authenticator_response(password, &nt, &peer_challenge, &auth_challenge, user),
            "S=407A5589115FD0D6209F510FE9C04566932CDA56"
        );

        let mut value = vec![7u8, 0];
        value.extend_from_slice(&peer_challenge);
        value.extend_from_slice(&[0; 8]);
        value.extend_from_slice(&nt);
        let response = Response::parse(&value).unwrap();
        let success = verify(&auth_challenge, &response, user, password).unwrap();
        assert_eq!(success[0], 7);
        assert_eq!(&success[1..], b"S=407A5589115FD0D6209F510FE9C04566932CDA56");
        assert!(verify(&auth_challenge, &response, user, "wrongPass").is_none());
        // A Windows domain prefix is not part of the hashed name.
        assert!(verify(&auth_challenge, &response, b"CORP\\User", password).is_some());
        assert!(Response::parse(&value[..49]).is_none());
    }
}
