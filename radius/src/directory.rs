//! What the RADIUS server needs from the directory, behind a small trait (DESIGN §3a):
//! unit tests inject a fake, and the `pampa` binary adapts `pampa-directory` to it.

use std::{future::Future, net::IpAddr, net::Ipv4Addr, sync::Arc};

/// Why a lookup failed: the directory is down or broken. The server drops the packet
/// (the NAS retransmits) rather than answer wrongly.
pub type LookupError = Box<dyn std::error::Error + Send + Sync>;

/// A NAS allowed to talk to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NasClient {
    /// The source network it was registered as (`10.0.0.0/24`, `192.0.2.7/32`): also its
    /// name in events and the bounded `nas` metric label.
    pub network: String,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// Whether every Access-Request must carry a valid Message-Authenticator
    /// (RFC 3579, BlastRADIUS). True unless the NAS was added with
    /// `--no-message-authenticator`.
    pub require_message_authenticator: bool,
}

/// A user's RADIUS profile: the reply attributes of an Access-Accept, and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RadiusProfile {
    /// Session-Timeout, seconds.
    pub session_timeout: Option<u32>,
    /// Idle-Timeout, seconds.
    pub idle_timeout: Option<u32>,
    /// Framed-IP-Address.
    pub framed_ip: Option<Ipv4Addr>,
    /// Framed-Pool (the NAS's address pool name), when no fixed address is set.
    pub framed_pool: Option<String>,
    /// Class, echoed by the NAS in its accounting.
    pub class: Option<String>,
    /// How many sessions the user may have open at once (Simultaneous-Use); `None` is
    /// no limit.
    pub simultaneous_use: Option<u32>,
}

/// A directory user as RADIUS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusUser {
    /// The normalised address (`alice@example.org`).
    pub address: String,
    /// The stored password hash (argon2 PHC string), for PAP. CHAP and MS-CHAPv2 cannot
    /// use a hash: they need [`RadiusUser::chap_secret`].
    pub password_hash: String,
    /// A cleartext secret for CHAP and MS-CHAPv2, which need the password itself on the
    /// server side. `None` means those methods are refused for this user.
    pub chap_secret: Option<String>,
    /// Reply attributes and limits.
    pub profile: RadiusProfile,
}

/// The directory, as the RADIUS server uses it.
pub trait RadiusDirectory: Send + Sync + 'static {
    /// The NAS whose registered network holds `ip` (the most specific one), if any.
    /// Shared, because it is asked for every packet: a copy of the secret each time is
    /// measurable at tens of thousands of requests a second.
    fn nas(
        &self,
        ip: IpAddr,
    ) -> impl Future<Output = Result<Option<Arc<NasClient>>, LookupError>> + Send;
    /// The user with this exact address (the server has already added the default realm
    /// to a bare local part).
    fn user(
        &self,
        address: &str,
    ) -> impl Future<Output = Result<Option<Arc<RadiusUser>>, LookupError>> + Send;
    /// Whether `password` matches `user.password_hash`. Deliberately slow (argon2): the
    /// server calls it off the async workers and caches successes.
    fn verify_password(&self, user: &RadiusUser, password: &str) -> bool;
}
