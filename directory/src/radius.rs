//! What the RADIUS server needs from the directory: the NAS clients allowed to talk to it
//! (`nas_clients`), and each user's RADIUS profile (`radius_profiles`).
//!
//! A NAS is registered by network, in one normalised CIDR spelling (`192.0.2.7/32`,
//! `10.0.0.0/24`, `2001:db8::/32`), so the most specific network holding a source IP can
//! be found with one exact-match lookup on the indexed column ([`Directory::nas_for_ip`]).
//!
//! CHAP and MS-CHAPv2 cannot be answered from a password hash: the server must hold the
//! password itself. So a user who needs them gets a separate cleartext `chap_secret`, and
//! one without it is refused those methods. PAP keeps using the argon2 hash.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::IpNet;
use serde::Serialize;
use sqlx::{any::AnyRow, Row};

use crate::{
    store::{is_unique_violation, now_unix},
    Address, Directory, DirectoryError,
};

/// RADIUS shared secrets are at most 128 octets (RFC 2865 §3 leaves the length open, but
/// RFC 3579 and most NAS firmware cap it there).
pub const MAX_SECRET_LEN: usize = 128;

/// The shortest shared secret accepted. RFC 2865 §3 prefers at least 16 octets; below 8 a
/// secret is guessable offline from one captured packet, which BlastRADIUS
/// (CVE-2024-3596) made practical. Lab setups still commonly use `testing123` (10).
pub const MIN_SECRET_LEN: usize = 8;

/// The length RFC 2865 §3 prefers; the CLI warns below it.
pub const RECOMMENDED_SECRET_LEN: usize = 16;

/// The longest CHAP secret stored (the column's size; MS-CHAPv2 allows 256 characters).
pub const MAX_CHAP_SECRET_LEN: usize = 255;

/// The longest string a RADIUS attribute can carry (255 minus type and length octets).
const MAX_ATTRIBUTE_LEN: usize = 253;

/// The longest NAS description kept.
const MAX_DESCRIPTION_LEN: usize = 255;

/// A NAS allowed to send RADIUS requests.
#[derive(Clone, PartialEq, Eq)]
pub struct NasClient {
    /// Row id.
    pub id: i64,
    /// The network it was registered as, normalised (`192.0.2.7/32`).
    pub network: IpNet,
    /// The shared secret. Never printed: [`fmt::Debug`] redacts it.
    pub secret: String,
    /// Whether every Access-Request from it must carry a valid Message-Authenticator
    /// (RFC 3579; the BlastRADIUS defence). Only legacy gear should have this off.
    pub require_message_authenticator: bool,
    /// Free text for operators.
    pub description: Option<String>,
    /// When it was added, in Unix seconds.
    pub created_at: i64,
}

impl fmt::Debug for NasClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NasClient")
            .field("id", &self.id)
            .field("network", &self.network)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field(
                "require_message_authenticator",
                &self.require_message_authenticator,
            )
            .field("description", &self.description)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl NasClient {
    /// Whether `ip` is in this NAS's network. An IPv4-mapped IPv6 address
    /// (`::ffff:192.0.2.7`, what a dual-stack socket reports) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.network.contains(&ip.to_canonical())
    }
}

/// The NAS of `nas` whose network holds `ip` with the longest prefix: what
/// [`Directory::nas_for_ip`] answers, for callers that hold the list in memory.
pub fn most_specific_nas(nas: &[NasClient], ip: IpAddr) -> Option<&NasClient> {
    nas.iter()
        .filter(|n| n.contains(ip))
        .max_by_key(|n| n.network.prefix_len())
}

/// Parses a NAS network as typed: a bare address (`192.0.2.7`, taken as `/32` or `/128`)
/// or a CIDR (`192.0.2.0/24`). A CIDR with host bits set (`192.0.2.7/24`) is refused
/// rather than silently widened, since it is usually a typo for a single host or for a
/// different network.
pub fn parse_network(text: &str) -> Result<IpNet, DirectoryError> {
    let trimmed = text.trim();
    let invalid = |reason: String| DirectoryError::InvalidNetwork {
        network: text.to_owned(),
        reason,
    };
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    let net: IpNet = trimmed.parse().map_err(|_| {
        invalid("not an IP address or CIDR (use 192.0.2.7, 192.0.2.0/24 or 2001:db8::/32)".into())
    })?;
    if net.addr() != net.network() {
        return Err(invalid(format!(
            "host bits are set; did you mean {} (or {}/{})?",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        )));
    }
    Ok(net)
}

/// Checks a NAS shared secret. The error says what is wrong and how long the secret is,
/// never the secret itself.
pub fn check_secret(secret: &str) -> Result<(), DirectoryError> {
    let invalid = |reason: String| DirectoryError::InvalidSecret {
        what: "shared secret",
        reason,
    };
    let len = secret.len();
    if secret.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if len < MIN_SECRET_LEN {
        return Err(invalid(format!(
            "it is {len} bytes; use at least {MIN_SECRET_LEN} (RFC 2865 prefers \
             {RECOMMENDED_SECRET_LEN} or more)"
        )));
    }
    if len > MAX_SECRET_LEN {
        return Err(invalid(format!(
            "it is {len} bytes; RADIUS secrets are at most {MAX_SECRET_LEN}"
        )));
    }
    check_secret_text(secret).map_err(invalid)
}

/// Characters a NAS configuration cannot reliably express, or that are almost always a
/// copy-and-paste accident.
fn check_secret_text(secret: &str) -> Result<(), String> {
    if secret.chars().any(char::is_control) {
        return Err("it contains a control character".into());
    }
    if secret.trim() != secret {
        return Err("it starts or ends with white space".into());
    }
    Ok(())
}

/// A user's RADIUS settings: the attributes of an Access-Accept, and limits. `None`
/// everywhere means "not set": no reply attribute, no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RadiusProfile {
    /// Session-Timeout, seconds (at least 1).
    pub session_timeout: Option<u32>,
    /// Idle-Timeout, seconds (at least 1).
    pub idle_timeout: Option<u32>,
    /// Framed-IP-Address. Exclusive with `framed_pool`.
    pub framed_ip: Option<Ipv4Addr>,
    /// Framed-Pool: the name of an address pool on the NAS. Exclusive with `framed_ip`.
    pub framed_pool: Option<String>,
    /// Class, which the NAS echoes in its accounting.
    pub class: Option<String>,
    /// How many sessions may be open at once (at least 1).
    pub simultaneous_use: Option<u32>,
}

impl RadiusProfile {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == RadiusProfile::default()
    }

    /// Checks every setting; the error names the setting and its value.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        let invalid = |setting: &'static str, value: String, reason: &'static str| {
            Err(DirectoryError::InvalidRadiusSetting {
                setting,
                value,
                reason,
            })
        };
        for (setting, value) in [
            ("session timeout", self.session_timeout),
            ("idle timeout", self.idle_timeout),
            ("simultaneous use", self.simultaneous_use),
        ] {
            if value == Some(0) {
                return invalid(setting, "0".into(), "use 1 or more, or leave it unset");
            }
        }
        if let (Some(ip), Some(_)) = (self.framed_ip, &self.framed_pool) {
            return invalid(
                "framed IP",
                ip.to_string(),
                "a user gets either a framed IP or a framed pool, not both",
            );
        }
        if let Some(ip) = self.framed_ip {
            if ip.is_unspecified() {
                return invalid("framed IP", ip.to_string(), "0.0.0.0 is not an address");
            }
        }
        for (setting, value) in [("framed pool", &self.framed_pool), ("class", &self.class)] {
            let Some(value) = value else { continue };
            if value.is_empty() {
                return invalid(
                    setting,
                    value.clone(),
                    "it is empty; leave it unset instead",
                );
            }
            if value.len() > MAX_ATTRIBUTE_LEN {
                return invalid(
                    setting,
                    value.clone(),
                    "a RADIUS attribute holds at most 253 bytes",
                );
            }
            if value.chars().any(char::is_control) {
                return invalid(setting, value.clone(), "it contains a control character");
            }
        }
        Ok(())
    }
}

/// Checks a CHAP secret; the error never repeats it.
pub fn check_chap_secret(secret: &str) -> Result<(), DirectoryError> {
    let invalid = |reason: String| DirectoryError::InvalidSecret {
        what: "CHAP secret",
        reason,
    };
    if secret.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if secret.len() > MAX_CHAP_SECRET_LEN {
        return Err(invalid(format!(
            "it is {} bytes; at most {MAX_CHAP_SECRET_LEN} are stored",
            secret.len()
        )));
    }
    check_secret_text(secret).map_err(invalid)
}

/// A directory user as the RADIUS server sees them.
#[derive(Clone, PartialEq, Eq)]
pub struct RadiusUser {
    /// The normalised address.
    pub address: String,
    /// The argon2 PHC hash of the password, for PAP (see
    /// [`verify_password_hash`](crate::verify_password_hash)).
    pub password_hash: String,
    /// The cleartext secret for CHAP and MS-CHAPv2, if the user has one.
    pub chap_secret: Option<String>,
    /// Reply attributes and limits.
    pub profile: RadiusProfile,
}

impl fmt::Debug for RadiusUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadiusUser")
            .field("address", &self.address)
            .field("password_hash", &"<redacted>")
            .field(
                "chap_secret",
                &self.chap_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("profile", &self.profile)
            .finish()
    }
}

const NAS_COLUMNS: &str =
    "id, network, secret, require_message_authenticator, description, created_at";

/// A stored value the code itself wrote no longer parses: someone edited the table by hand.
fn corrupt(what: String, reason: impl fmt::Display) -> DirectoryError {
    DirectoryError::Corrupt {
        what,
        reason: reason.to_string(),
    }
}

fn nas_from_row(row: &AnyRow) -> Result<NasClient, DirectoryError> {
    let network: String = row.try_get("network")?;
    let flag: i64 = row.try_get("require_message_authenticator")?;
    Ok(NasClient {
        id: row.try_get("id")?,
        network: network
            .parse()
            .map_err(|e| corrupt(format!("NAS network {network:?}"), e))?,
        secret: row.try_get("secret")?,
        require_message_authenticator: flag != 0,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A stored count of seconds or sessions, which the code keeps within `u32`.
fn stored_u32(row: &AnyRow, column: &str, address: &str) -> Result<Option<u32>, DirectoryError> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| u32::try_from(v).map_err(|e| corrupt(format!("{column} of {address} ({v})"), e)))
        .transpose()
}

fn radius_user_from_row(row: &AnyRow) -> Result<RadiusUser, DirectoryError> {
    let address: String = row.try_get("address")?;
    let framed_ip: Option<String> = row.try_get("framed_ip")?;
    let framed_ip = framed_ip
        .map(|ip| {
            ip.parse::<Ipv4Addr>()
                .map_err(|e| corrupt(format!("framed_ip of {address} ({ip:?})"), e))
        })
        .transpose()?;
    Ok(RadiusUser {
        password_hash: row.try_get("password_hash")?,
        chap_secret: row.try_get("chap_secret")?,
        profile: RadiusProfile {
            session_timeout: stored_u32(row, "session_timeout", &address)?,
            idle_timeout: stored_u32(row, "idle_timeout", &address)?,
            framed_ip,
            framed_pool: row.try_get("framed_pool")?,
            class: row.try_get("class")?,
            simultaneous_use: stored_u32(row, "simultaneous_use", &address)?,
        },
        address,
    })
}

impl Directory {
    /// Registers a NAS client: `network` as typed (see [`parse_network`]), its shared
    /// secret (see [`check_secret`]), whether its Access-Requests must carry a
    /// Message-Authenticator, and an optional description.
    pub async fn add_nas(
        &self,
        network: &str,
        secret: &str,
        require_message_authenticator: bool,
        description: Option<&str>,
    ) -> Result<NasClient, DirectoryError> {
        let net = parse_network(network)?;
        check_secret(secret)?;
        let description = description.map(str::trim).filter(|d| !d.is_empty());
        if let Some(d) = description {
            if d.chars().count() > MAX_DESCRIPTION_LEN || d.chars().any(char::is_control) {
                return Err(DirectoryError::InvalidRadiusSetting {
                    setting: "description",
                    value: d.to_owned(),
                    reason: "use one line of at most 255 characters",
                });
            }
        }
        let created_at = now_unix();
        let done = sqlx::query(&self.sql(
            "INSERT INTO nas_clients \
             (network, secret, require_message_authenticator, description, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(net.to_string())
        .bind(secret)
        .bind(i64::from(require_message_authenticator))
        .bind(description.map(str::to_owned))
        .bind(created_at)
        .execute(&self.pool)
        .await;
        match done {
            Err(e) if is_unique_violation(&e) => {
                return Err(DirectoryError::Exists(format!("NAS {net}")))
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        // MySQL has no RETURNING; the network is unique, so read the row back by it.
        let sql = format!("SELECT {NAS_COLUMNS} FROM nas_clients WHERE network = $1");
        let row = sqlx::query(&self.sql(&sql))
            .bind(net.to_string())
            .fetch_one(&self.pool)
            .await?;
        nas_from_row(&row)
    }

    /// Removes the NAS registered as exactly `network` (spelled any way
    /// [`parse_network`] takes).
    pub async fn remove_nas(&self, network: &str) -> Result<(), DirectoryError> {
        let net = parse_network(network)?;
        let done = sqlx::query(&self.sql("DELETE FROM nas_clients WHERE network = $1"))
            .bind(net.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::UnknownNas(net.to_string()));
        }
        Ok(())
    }

    /// Every NAS client, IPv4 before IPv6, then by address and prefix.
    pub async fn list_nas(&self) -> Result<Vec<NasClient>, DirectoryError> {
        let sql = format!("SELECT {NAS_COLUMNS} FROM nas_clients");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mut nas = rows
            .iter()
            .map(nas_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        nas.sort_by_key(|n| n.network);
        Ok(nas)
    }

    /// The NAS whose network holds `ip`, the most specific one if several do.
    ///
    /// One indexed lookup: it asks for every network that could hold `ip` (its address
    /// truncated to each prefix length, 33 for IPv4, 129 for IPv6) instead of scanning the
    /// table.
    pub async fn nas_for_ip(&self, ip: IpAddr) -> Result<Option<NasClient>, DirectoryError> {
        let ip = ip.to_canonical();
        let host = IpNet::from(ip);
        let candidates: Vec<String> = (0..=host.max_prefix_len())
            .filter_map(|len| IpNet::new(ip, len).ok())
            .map(|net| net.trunc().to_string())
            .collect();
        let placeholders = (1..=candidates.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("SELECT {NAS_COLUMNS} FROM nas_clients WHERE network IN ({placeholders})");
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql);
        for candidate in candidates {
            query = query.bind(candidate);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let nas = rows
            .iter()
            .map(nas_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(most_specific_nas(&nas, ip).cloned())
    }

    /// The user with this address as RADIUS needs them: password hash, CHAP secret and
    /// profile (empty if they have none). `None` if there is no such user.
    pub async fn radius_user(&self, address: &str) -> Result<Option<RadiusUser>, DirectoryError> {
        let address = Address::parse(address)?;
        let row = sqlx::query(&self.sql(
            "SELECT u.address, u.password_hash, r.chap_secret, r.session_timeout, \
             r.idle_timeout, r.framed_ip, r.framed_pool, r.class, r.simultaneous_use \
             FROM users u LEFT JOIN radius_profiles r ON r.address = u.address \
             WHERE u.address = $1",
        ))
        .bind(address.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(radius_user_from_row).transpose()
    }

    /// Replaces a user's RADIUS settings: the CHAP secret (`None`: CHAP and MS-CHAPv2 are
    /// refused) and the profile. Setting nothing at all removes the stored row.
    pub async fn set_radius_profile(
        &self,
        address: &str,
        chap_secret: Option<&str>,
        profile: &RadiusProfile,
    ) -> Result<(), DirectoryError> {
        let address = Address::parse(address)?;
        if let Some(secret) = chap_secret {
            check_chap_secret(secret)?;
        }
        profile.validate()?;
        let key = address.to_string();
        // Delete then insert, in one transaction: the three backends share no upsert
        // syntax, and MySQL's affected-row count of an UPDATE that changes nothing is 0.
        let mut tx = self.pool.begin().await?;
        let user: Option<String> =
            sqlx::query_scalar(&self.sql("SELECT address FROM users WHERE address = $1"))
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
        if user.is_none() {
            return Err(DirectoryError::UnknownUser(key));
        }
        sqlx::query(&self.sql("DELETE FROM radius_profiles WHERE address = $1"))
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        if chap_secret.is_some() || !profile.is_empty() {
            sqlx::query(&self.sql(
                "INSERT INTO radius_profiles (address, chap_secret, session_timeout, \
                 idle_timeout, framed_ip, framed_pool, class, simultaneous_use, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            ))
            .bind(&key)
            .bind(chap_secret.map(str::to_owned))
            .bind(profile.session_timeout.map(i64::from))
            .bind(profile.idle_timeout.map(i64::from))
            .bind(profile.framed_ip.map(|ip| ip.to_string()))
            .bind(profile.framed_pool.clone())
            .bind(profile.class.clone())
            .bind(profile.simultaneous_use.map(i64::from))
            .bind(now_unix())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_normalise_and_refuse_junk() {
        let parse = |t: &str| parse_network(t).map(|n| n.to_string());
        assert_eq!(parse("192.0.2.7").unwrap(), "192.0.2.7/32");
        assert_eq!(parse(" 10.0.0.0/8 ").unwrap(), "10.0.0.0/8");
        assert_eq!(parse("2001:DB8::1").unwrap(), "2001:db8::1/128");
        assert_eq!(parse("2001:db8:0::/32").unwrap(), "2001:db8::/32");
        assert_eq!(parse("::ffff:192.0.2.7").unwrap(), "192.0.2.7/32");
        for bad in [
            "",
            "nas1",
            "192.0.2.256",
            "192.0.2.0/33",
            "10.0.0.0/",
            "/24",
        ] {
            let err = parse_network(bad).unwrap_err();
            assert!(
                matches!(err, DirectoryError::InvalidNetwork { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let err = parse_network("192.0.2.7/24").unwrap_err().to_string();
        assert!(
            err.contains("192.0.2.0/24") && err.contains("192.0.2.7/32"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_checked_and_never_echoed() {
        assert!(check_secret("testing123").is_ok());
        assert!(check_secret(&"x".repeat(MAX_SECRET_LEN)).is_ok());
        for bad in [
            String::new(),
            "short".to_owned(),
            "y".repeat(MAX_SECRET_LEN + 1),
            "tab\tinside1".to_owned(),
            " leading-space".to_owned(),
        ] {
            let err = check_secret(&bad).unwrap_err();
            assert!(matches!(err, DirectoryError::InvalidSecret { .. }), "{err}");
            if !bad.trim().is_empty() {
                assert!(!err.to_string().contains(bad.trim()), "{err}");
            }
        }
        assert!(check_secret("short")
            .unwrap_err()
            .to_string()
            .contains("5 bytes"));
        assert!(check_chap_secret("p").is_ok());
        assert!(check_chap_secret("").is_err());
    }

    #[test]
    fn profiles_are_validated() {
        assert!(RadiusProfile::default().validate().is_ok());
        let good = RadiusProfile {
            session_timeout: Some(3600),
            idle_timeout: Some(600),
            framed_ip: Some(Ipv4Addr::new(198, 51, 100, 9)),
            framed_pool: None,
            class: Some("gold".into()),
            simultaneous_use: Some(1),
        };
        assert!(good.validate().is_ok());
        let both = RadiusProfile {
            framed_pool: Some("pool-a".into()),
            ..good.clone()
        };
        assert!(both
            .validate()
            .unwrap_err()
            .to_string()
            .contains("198.51.100.9"));
        let zero = RadiusProfile {
            idle_timeout: Some(0),
            ..good.clone()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("idle timeout"));
        let long = RadiusProfile {
            class: Some("c".repeat(254)),
            ..good
        };
        assert!(long.validate().is_err());
    }

    fn nas(network: &str) -> NasClient {
        NasClient {
            id: 0,
            network: parse_network(network).unwrap(),
            secret: "secret-of-mine".into(),
            require_message_authenticator: true,
            description: None,
            created_at: 0,
        }
    }

    #[test]
    fn the_most_specific_network_wins() {
        let list = [
            nas("10.0.0.0/8"),
            nas("10.1.0.0/16"),
            nas("10.1.2.3"),
            nas("2001:db8::/32"),
        ];
        let pick =
            |ip: &str| most_specific_nas(&list, ip.parse().unwrap()).map(|n| n.network.to_string());
        assert_eq!(pick("10.1.2.3").as_deref(), Some("10.1.2.3/32"));
        assert_eq!(pick("10.1.9.9").as_deref(), Some("10.1.0.0/16"));
        assert_eq!(pick("10.200.0.1").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(pick("::ffff:10.1.2.3").as_deref(), Some("10.1.2.3/32"));
        assert_eq!(pick("2001:db8:1::5").as_deref(), Some("2001:db8::/32"));
        assert_eq!(pick("192.0.2.1"), None);
        assert!(!format!("{:?}", list[0]).contains("secret-of-mine"));
    }
}
