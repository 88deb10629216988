//! DKIM (RFC 6376, RFC 8463): key generation, the DNS TXT record, and signing.
//!
//! Keys are stored as PKCS#8 PEM so that one format covers both algorithms and
//! `pampa dkim show` can derive the public half again without a second stored field.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::der::pem;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

/// RSA modulus size of generated keys: 2048 is what every verifier accepts and what
/// RFC 8301 recommends; larger keys no longer fit one 255-byte TXT string anyway.
const RSA_BITS: usize = 2048;

/// PEM label of a PKCS#8 private key.
const PKCS8_LABEL: &str = "PRIVATE KEY";
/// PEM label of a PKCS#1 RSA private key, accepted so keys made by `openssl genrsa` load.
const PKCS1_LABEL: &str = "RSA PRIVATE KEY";

/// Headers we sign. From is mandatory (RFC 6376 5.4); the rest are the ones whose
/// change would alter what the reader sees or how the message threads and decodes.
/// Headers that are absent from a message are skipped by mail-auth.
const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Errors of DKIM key handling and signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DkimError {
    /// The algorithm name is not one we support.
    #[error("unknown dkim algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// Key generation failed (the system random source or the key library).
    #[error("cannot generate dkim key: {0}")]
    Generate(String),
    /// The stored private key could not be read for the given algorithm.
    #[error("invalid dkim private key: {0}")]
    InvalidKey(String),
    /// The domain or selector cannot be used in a signature.
    #[error("invalid dkim {field}: {value:?}")]
    InvalidName {
        /// Which setting was wrong ("domain" or "selector").
        field: &'static str,
        /// The rejected value.
        value: String,
    },
    /// The message has no From header, so no valid signature can be made.
    #[error("message has no from header to sign")]
    NoFrom,
    /// The signing library failed.
    #[error("cannot sign message: {0}")]
    Sign(#[source] mail_auth::Error),
}

/// Signing algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DkimAlgorithm {
    /// RSA with a 2048-bit modulus, signing with rsa-sha256.
    Rsa2048,
    /// Ed25519, signing with ed25519-sha256 (RFC 8463).
    Ed25519,
}

impl DkimAlgorithm {
    /// The DKIM `a=` name of the signing algorithm, which is also what we store.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa2048 => "rsa-sha256",
            DkimAlgorithm::Ed25519 => "ed25519-sha256",
        }
    }

    /// The DNS record's `k=` key type.
    fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa2048 => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for DkimAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DkimAlgorithm {
    type Err = DkimError;

    /// Accepts the short CLI names "rsa" and "ed25519" (case-insensitive); the `a=`
    /// names are accepted too so a stored value parses back.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rsa" | "rsa-sha256" => Ok(DkimAlgorithm::Rsa2048),
            "ed25519" | "ed25519-sha256" => Ok(DkimAlgorithm::Ed25519),
            _ => Err(DkimError::UnknownAlgorithm(s.to_owned())),
        }
    }
}

/// A freshly generated key pair.
#[derive(Clone)]
pub struct GeneratedKey {
    /// Algorithm of the key.
    pub algorithm: DkimAlgorithm,
    /// The private key, PKCS#8 PEM.
    pub private_key_pem: String,
    /// The public key as it goes into the TXT record's `p=` tag.
    pub public_key_b64: String,
}

impl fmt::Debug for GeneratedKey {
    // Keeps the private key out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("algorithm", &self.algorithm)
            .field("public_key_b64", &self.public_key_b64)
            .finish_non_exhaustive()
    }
}

/// Generates a new key pair.
pub fn generate(algorithm: DkimAlgorithm) -> Result<GeneratedKey, DkimError> {
    match algorithm {
        DkimAlgorithm::Rsa2048 => {
            // ring can sign with RSA but cannot create RSA keys, hence the rsa crate.
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS)
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            let private_key_pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| DkimError::Generate(e.to_string()))?
                .to_string();
            let public_key_b64 = rsa_public_b64(&key)?;
            Ok(GeneratedKey {
                algorithm,
                private_key_pem,
                public_key_b64,
            })
        }
        DkimAlgorithm::Ed25519 => {
            let der =
                Ed25519Key::generate_pkcs8().map_err(|e| DkimError::Generate(e.to_string()))?;
            let private_key_pem = pem::encode_string(PKCS8_LABEL, LineEnding::LF, &der)
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            let key =
                Ed25519Key::from_pkcs8_der(&der).map_err(|e| DkimError::Generate(e.to_string()))?;
            Ok(GeneratedKey {
                algorithm,
                private_key_pem,
                public_key_b64: BASE64.encode(key.public_key()),
            })
        }
    }
}

/// The TXT record value: `v=DKIM1; k=rsa; p=...` (`k=ed25519` for ed25519-sha256).
///
/// Unknown algorithm names fall back to `k=rsa`, the RFC 6376 default, because the
/// caller only ever passes names that [`DkimAlgorithm::as_str`] produced.
pub fn txt_record(key_algorithm: &str, public_key_b64: &str) -> String {
    let k = key_algorithm
        .parse::<DkimAlgorithm>()
        .map(DkimAlgorithm::key_type)
        .unwrap_or("rsa");
    format!("v=DKIM1; k={k}; p={public_key_b64}")
}

/// The public half from a stored private key PEM (so `pampa dkim show` can print the record again).
pub fn public_key_b64(algorithm: &str, private_key_pem: &str) -> Result<String, DkimError> {
    match algorithm.parse::<DkimAlgorithm>()? {
        DkimAlgorithm::Rsa2048 => rsa_public_b64(&parse_rsa_pem(private_key_pem)?),
        DkimAlgorithm::Ed25519 => {
            let key = parse_ed25519_pem(private_key_pem)?;
            Ok(BASE64.encode(key.public_key()))
        }
    }
}

/// `p=` for RSA: the SubjectPublicKeyInfo DER, which is what RFC 6376 3.6.1 specifies
/// and what every verifier expects.
fn rsa_public_b64(key: &rsa::RsaPrivateKey) -> Result<String, DkimError> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| DkimError::InvalidKey(e.to_string()))?;
    Ok(BASE64.encode(der.as_bytes()))
}

/// Decodes a PEM block into its label and DER bytes.
fn decode_pem(private_key_pem: &str) -> Result<(String, Vec<u8>), DkimError> {
    let (label, der) = pem::decode_vec(private_key_pem.trim().as_bytes())
        .map_err(|e| DkimError::InvalidKey(e.to_string()))?;
    Ok((label.to_owned(), der))
}

fn parse_rsa_pem(private_key_pem: &str) -> Result<rsa::RsaPrivateKey, DkimError> {
    let (label, der) = decode_pem(private_key_pem)?;
    match label.as_str() {
        PKCS8_LABEL => rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .map_err(|e| DkimError::InvalidKey(e.to_string())),
        PKCS1_LABEL => rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .map_err(|e| DkimError::InvalidKey(e.to_string())),
        other => Err(DkimError::InvalidKey(format!(
            "unexpected pem label {other:?}"
        ))),
    }
}

fn parse_ed25519_pem(private_key_pem: &str) -> Result<Ed25519Key, DkimError> {
    let (label, der) = decode_pem(private_key_pem)?;
    if label != PKCS8_LABEL {
        return Err(DkimError::InvalidKey(format!(
            "unexpected pem label {label:?}"
        )));
    }
    // "maybe unchecked" accepts PKCS#8 v1 too (no embedded public key), which is what
    // `openssl genpkey -algorithm ed25519` writes; ring's own keys are v2.
    Ed25519Key::from_pkcs8_maybe_unchecked_der(&der)
        .map_err(|e| DkimError::InvalidKey(e.to_string()))
}

/// Rejects names that would break the signature header or the DNS lookup name.
fn check_name(field: &'static str, value: &str) -> Result<(), DkimError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(DkimError::InvalidName {
            field,
            value: value.to_owned(),
        })
    }
}

/// The key-specific signer; mail-auth's signer is generic over the key type.
enum Inner {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// A ready signer for one domain.
pub struct Signer {
    inner: Inner,
    domain: String,
    selector: String,
    algorithm: DkimAlgorithm,
}

impl fmt::Debug for Signer {
    // Keeps the private key out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Builds a signer from the stored key; `algorithm` is the `a=` name
    /// ("rsa-sha256" or "ed25519-sha256"), short names "rsa"/"ed25519" work too.
    pub fn new(
        domain: &str,
        selector: &str,
        algorithm: &str,
        private_key_pem: &str,
    ) -> Result<Self, DkimError> {
        check_name("domain", domain)?;
        check_name("selector", selector)?;
        let algorithm: DkimAlgorithm = algorithm.parse()?;
        let inner = match algorithm {
            DkimAlgorithm::Rsa2048 => {
                let (label, der) = decode_pem(private_key_pem)?;
                let key_der = match label.as_str() {
                    PKCS8_LABEL => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
                    PKCS1_LABEL => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
                    other => {
                        return Err(DkimError::InvalidKey(format!(
                            "unexpected pem label {other:?}"
                        )));
                    }
                };
                let key = RsaKey::<Sha256>::from_key_der(key_der)
                    .map_err(|e| DkimError::InvalidKey(e.to_string()))?;
                Inner::Rsa(configure(DkimSigner::from_key(key), domain, selector))
            }
            DkimAlgorithm::Ed25519 => {
                let key = parse_ed25519_pem(private_key_pem)?;
                Inner::Ed25519(configure(DkimSigner::from_key(key), domain, selector))
            }
        };
        Ok(Signer {
            inner,
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            algorithm,
        })
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The algorithm of the key.
    pub fn algorithm(&self) -> DkimAlgorithm {
        self.algorithm
    }

    /// Returns the `DKIM-Signature: ...\r\n` header (to prepend to the message) for the
    /// raw RFC 5322 message (CRLF line ends).
    pub fn sign(&self, message: &[u8]) -> Result<String, DkimError> {
        // A signature over a message without From is invalid (RFC 6376 5.4), but
        // mail-auth lists absent headers in h= and signs anyway, so check first.
        if !has_from(message) {
            return Err(DkimError::NoFrom);
        }
        let signature = match &self.inner {
            Inner::Rsa(s) => s.sign(message),
            Inner::Ed25519(s) => s.sign(message),
        }
        .map_err(|e| match e {
            mail_auth::Error::NoHeadersFound => DkimError::NoFrom,
            other => DkimError::Sign(other),
        })?;
        Ok(signature.to_header())
    }
}

/// Whether the header block has a From field. Hand-written because mail-auth's header
/// iterator is private and a full mail-parser parse is more than this needs.
fn has_from(message: &[u8]) -> bool {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // End of the header block.
            return false;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            // Continuation of a folded field.
            continue;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if name.len() < line.len() && name.trim_ascii().eq_ignore_ascii_case(b"from") {
            return true;
        }
    }
    false
}

/// Applies the settings shared by both key types.
fn configure<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T>,
    domain: &str,
    selector: &str,
) -> DkimSigner<T, Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        // relaxed/relaxed survives the whitespace and folding changes that relays
        // along the way are known to make.
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::parse::TxtRecordParser as _;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{
        AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, RecordSet,
        ResolverCache, Txt, MX,
    };
    use std::borrow::Borrow;
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::{Arc, Mutex, OnceLock};

    /// A resolver cache that answers only what the test put in, so verification never
    /// reaches the network.
    struct FixedCache<K, V>(Mutex<HashMap<K, V>>);

    impl<K: Hash + Eq, V: Clone> FixedCache<K, V> {
        fn new() -> Self {
            FixedCache(Mutex::new(HashMap::new()))
        }
    }

    impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for FixedCache<K, V> {
        fn get<Q>(&self, name: &Q) -> Option<V>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().expect("cache lock").get(name).cloned()
        }

        fn remove<Q>(&self, name: &Q) -> Option<V>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().expect("cache lock").remove(name)
        }

        fn insert(&self, key: K, value: V, _valid_until: std::time::Instant) {
            self.0.lock().expect("cache lock").insert(key, value);
        }
    }

    const MESSAGE: &str = concat!(
        "From: Alice <alice@example.net>\r\n",
        "To: Bob <bob@example.org>\r\n",
        "Subject: Hello there\r\n",
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n",
        "Message-ID: <1@example.net>\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "\r\n",
        "Hi Bob,\r\n",
        "\r\n",
        "just testing.\r\n",
    );

    // RSA key generation is slow in debug builds; one key serves all RSA tests.
    fn rsa_key() -> &'static GeneratedKey {
        static KEY: OnceLock<GeneratedKey> = OnceLock::new();
        KEY.get_or_init(|| generate(DkimAlgorithm::Rsa2048).expect("rsa key"))
    }

    fn ed25519_key() -> &'static GeneratedKey {
        static KEY: OnceLock<GeneratedKey> = OnceLock::new();
        KEY.get_or_init(|| generate(DkimAlgorithm::Ed25519).expect("ed25519 key"))
    }

    /// Verifies `signed` with mail-auth's verifier, the key record served from a cache.
    async fn verify(signed: &[u8], selector: &str, domain: &str, record: &str) -> Vec<DkimResult> {
        let txt: FixedCache<Box<str>, Txt> = FixedCache::new();
        let key = DomainKey::parse(record.as_bytes()).expect("record parses");
        txt.insert(
            format!("{selector}._domainkey.{domain}.").into_boxed_str(),
            Txt::DomainKey(Arc::new(key)),
            std::time::Instant::now() + std::time::Duration::from_secs(3600),
        );
        let mx: FixedCache<Box<str>, RecordSet<MX>> = FixedCache::new();
        let v4: FixedCache<Box<str>, RecordSet<Ipv4Addr>> = FixedCache::new();
        let v6: FixedCache<Box<str>, RecordSet<Ipv6Addr>> = FixedCache::new();
        let ptr: FixedCache<IpAddr, RecordSet<Box<str>>> = FixedCache::new();
        // The resolver is never asked: every lookup is answered by the cache.
        let resolver = MessageAuthenticator::new_cloudflare().expect("resolver");
        let message = AuthenticatedMessage::parse(signed).expect("message parses");
        let params = Parameters {
            params: &message,
            cache_txt: Some(&txt),
            cache_mx: Some(&mx),
            cache_ptr: Some(&ptr),
            cache_ipv4: Some(&v4),
            cache_ipv6: Some(&v6),
        };
        resolver
            .verify_dkim(params)
            .await
            .iter()
            .map(|o| o.result().clone())
            .collect()
    }

    async fn sign_and_verify(key: &GeneratedKey) {
        let signer = Signer::new(
            "example.net",
            "sel1",
            key.algorithm.as_str(),
            &key.private_key_pem,
        )
        .expect("signer");
        let header = signer.sign(MESSAGE.as_bytes()).expect("signature");
        assert!(header.starts_with("DKIM-Signature: "), "{header}");
        assert!(header.ends_with("\r\n"), "{header}");
        assert!(header.contains(&format!("a={}", key.algorithm.as_str())));
        assert!(header.contains("c=relaxed/relaxed"), "{header}");
        let record = txt_record(key.algorithm.as_str(), &key.public_key_b64);

        let signed = format!("{header}{MESSAGE}");
        let results = verify(signed.as_bytes(), "sel1", "example.net", &record).await;
        assert_eq!(results, vec![DkimResult::Pass], "{signed}");

        // A changed body must break the body hash. mail-auth reports that as neutral
        // with FailedBodyHashMatch rather than fail; either way it is not a pass.
        let tampered = signed.replace("just testing.", "just testing!");
        let results = verify(tampered.as_bytes(), "sel1", "example.net", &record).await;
        assert!(
            matches!(
                results.as_slice(),
                [DkimResult::Neutral(mail_auth::Error::Dkim(
                    mail_auth::dkim::DkimError::FailedBodyHashMatch
                )) | DkimResult::Fail(mail_auth::Error::Dkim(
                    mail_auth::dkim::DkimError::FailedBodyHashMatch
                ))]
            ),
            "{results:?}"
        );

        // A changed signed header must break the signature.
        let tampered = signed.replace("Subject: Hello there", "Subject: Pay now");
        let results = verify(tampered.as_bytes(), "sel1", "example.net", &record).await;
        assert!(
            matches!(results.as_slice(), [DkimResult::Fail(_)]),
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn rsa_signature_verifies() {
        sign_and_verify(rsa_key()).await;
    }

    #[tokio::test]
    async fn ed25519_signature_verifies() {
        sign_and_verify(ed25519_key()).await;
    }

    #[tokio::test]
    async fn wrong_key_fails() {
        let signer = Signer::new(
            "example.net",
            "sel1",
            "ed25519-sha256",
            &ed25519_key().private_key_pem,
        )
        .expect("signer");
        let header = signer.sign(MESSAGE.as_bytes()).expect("signature");
        let other = generate(DkimAlgorithm::Ed25519).expect("key");
        let record = txt_record("ed25519-sha256", &other.public_key_b64);
        let signed = format!("{header}{MESSAGE}");
        let results = verify(signed.as_bytes(), "sel1", "example.net", &record).await;
        assert!(
            matches!(results.as_slice(), [DkimResult::Fail(_)]),
            "{results:?}"
        );
    }

    #[test]
    fn generated_keys_have_expected_shape() {
        let rsa = rsa_key();
        assert_eq!(rsa.algorithm, DkimAlgorithm::Rsa2048);
        assert!(rsa
            .private_key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        // SPKI of a 2048-bit key is 294 bytes.
        let spki = BASE64.decode(&rsa.public_key_b64).expect("base64");
        assert_eq!(spki.len(), 294);

        let ed = ed25519_key();
        assert_eq!(ed.algorithm, DkimAlgorithm::Ed25519);
        assert!(ed
            .private_key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        let raw = BASE64.decode(&ed.public_key_b64).expect("base64");
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn public_key_is_derived_from_stored_pem() {
        for key in [rsa_key(), ed25519_key()] {
            let derived =
                public_key_b64(key.algorithm.as_str(), &key.private_key_pem).expect("derive");
            assert_eq!(derived, key.public_key_b64);
        }
        assert!(matches!(
            public_key_b64("rsa-sha256", &ed25519_key().private_key_pem),
            Err(DkimError::InvalidKey(_))
        ));
        assert!(matches!(
            public_key_b64("dsa", &rsa_key().private_key_pem),
            Err(DkimError::UnknownAlgorithm(_))
        ));
        assert!(matches!(
            public_key_b64("ed25519-sha256", "not a pem"),
            Err(DkimError::InvalidKey(_))
        ));
    }

    #[test]
    fn from_detection() {
        assert!(has_from(b"From: a@b.c\r\n\r\n"));
        assert!(has_from(b"Subject: x\r\n  folded\r\nfrom : a@b.c\r\n\r\n"));
        assert!(has_from(b"FROM:a@b.c"));
        assert!(!has_from(
            b"Subject: x\r\n From: folded\r\n\r\nFrom: in body\r\n"
        ));
        assert!(!has_from(b"From-Address: x\r\n\r\n"));
        assert!(!has_from(b""));
    }

    #[test]
    fn txt_records() {
        assert_eq!(txt_record("rsa-sha256", "AAAA"), "v=DKIM1; k=rsa; p=AAAA");
        assert_eq!(
            txt_record("ed25519-sha256", "BBBB"),
            "v=DKIM1; k=ed25519; p=BBBB"
        );
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(
            "rsa".parse::<DkimAlgorithm>().ok(),
            Some(DkimAlgorithm::Rsa2048)
        );
        assert_eq!(
            "ED25519".parse::<DkimAlgorithm>().ok(),
            Some(DkimAlgorithm::Ed25519)
        );
        assert!("dsa".parse::<DkimAlgorithm>().is_err());
        assert_eq!(DkimAlgorithm::Rsa2048.as_str(), "rsa-sha256");
        assert_eq!(DkimAlgorithm::Ed25519.as_str(), "ed25519-sha256");
    }

    #[test]
    fn signer_rejects_bad_input() {
        let pem = &ed25519_key().private_key_pem;
        assert!(matches!(
            Signer::new("exa mple.net", "s", "ed25519-sha256", pem),
            Err(DkimError::InvalidName {
                field: "domain",
                ..
            })
        ));
        assert!(matches!(
            Signer::new("example.net", "s;x=1", "ed25519-sha256", pem),
            Err(DkimError::InvalidName {
                field: "selector",
                ..
            })
        ));
        assert!(matches!(
            Signer::new("example.net", "s", "rsa-sha256", pem),
            Err(DkimError::InvalidKey(_))
        ));
        let signer = Signer::new("example.net", "s", "ed25519-sha256", pem).expect("signer");
        let no_from = signer.sign(b"Subject: no from\r\n\r\nbody\r\n");
        assert!(matches!(no_from, Err(DkimError::NoFrom)), "{no_from:?}");
        assert!(matches!(signer.sign(b""), Err(DkimError::NoFrom)));
    }
}
