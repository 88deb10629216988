//! Access-Request: who is asking, with which method, and the reply that carries the
//! decision.

use std::{borrow::Cow, sync::Arc};

use pampa_schemas::{AccessAuth, AuthResult};

use crate::{
    crypto,
    directory::{NasClient, RadiusDirectory, RadiusUser},
    mschap,
    packet::{attr, Code, EncodeError, Packet, PacketWriter},
    server::Shared,
    sessions::normalize_user,
};

/// How the user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Pap,
    Chap,
    MsChapV2,
    /// No credentials we support (none at all, or EAP).
    None,
}

impl Method {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Pap => "pap",
            Method::Chap => "chap",
            Method::MsChapV2 => "mschapv2",
            Method::None => "none",
        }
    }
}

/// The outcome of one Access-Request.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) method: Method,
    pub(crate) result: AuthResult,
    /// The reason for the audit event, precise (`bad password`, `unknown user`).
    pub(crate) reason: Cow<'static, str>,
    /// The Reply-Message of a reject: what the user may be told. Unknown user and bad
    /// password read the same, so the NAS's user cannot probe for addresses.
    pub(crate) reply_message: &'static str,
    pub(crate) address: Option<String>,
    pub(crate) user: Option<Arc<RadiusUser>>,
    /// MS-CHAP2-Success for an MS-CHAPv2 accept; the MS-CHAP ident for a reject.
    pub(crate) mschap_success: Option<Vec<u8>>,
    pub(crate) mschap_ident: Option<u8>,
}

/// The request could not be decided now (the directory failed): drop it so the NAS
/// retransmits, rather than answer wrongly.
#[derive(Debug)]
pub(crate) struct Undecided(pub(crate) &'static str);

const FAILED: &str = "Authentication failed";

fn reject(
    method: Method,
    reason: impl Into<Cow<'static, str>>,
    reply_message: &'static str,
) -> Decision {
    Decision {
        method,
        result: AuthResult::Reject,
        reason: reason.into(),
        reply_message,
        address: None,
        user: None,
        mschap_success: None,
        mschap_ident: None,
    }
}

fn method_of(packet: &Packet<'_>) -> Method {
    if packet.get(attr::USER_PASSWORD).is_some() {
        Method::Pap
    } else if packet.get(attr::CHAP_PASSWORD).is_some() {
        Method::Chap
    } else if matches!(
        packet.vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_RESPONSE),
        Ok(Some(_))
    ) {
        Method::MsChapV2
    } else {
        Method::None
    }
}

/// Decides an Access-Request whose Message-Authenticator (if any) is already verified.
pub(crate) async fn decide<D: RadiusDirectory>(
    shared: &Arc<Shared<D>>,
    packet: &Packet<'_>,
    nas: &NasClient,
) -> Result<Decision, Undecided> {
    let method = method_of(packet);
    let Some(user_name) = packet.get(attr::USER_NAME) else {
        return Ok(reject(method, "no user name", FAILED));
    };
    let Ok(user_name) = std::str::from_utf8(user_name) else {
        return Ok(reject(method, "user name is not utf-8", FAILED));
    };
    if !user_name.contains('@') && shared.config.default_realm.is_none() {
        return Ok(reject(
            method,
            "bare user name and no default realm",
            FAILED,
        ));
    }
    let address = normalize_user(user_name, shared.config.default_realm.as_deref());
    if method == Method::None {
        let reason = if packet.get(attr::EAP_MESSAGE).is_some() {
            "eap is not supported"
        } else {
            "no credentials"
        };
        let mut d = reject(method, reason, "No supported authentication method");
        d.address = Some(address);
        return Ok(d);
    }
    let user = shared.directory.user(&address).await.map_err(|error| {
        tracing::warn!(%error, "The directory failed to look up a RADIUS user.");
        Undecided("directory_error")
    })?;
    let Some(user) = user else {
        let mut d = reject(method, "unknown user", FAILED);
        d.address = Some(address);
        return Ok(d);
    };

    let mut decision = match method {
        Method::Pap => pap(shared, packet, nas, &user).await,
        Method::Chap => chap(packet, &user),
        Method::MsChapV2 => mschapv2(packet, user_name.as_bytes(), &user),
        Method::None => unreachable_none(),
    };
    decision.address = Some(user.address.clone());
    if decision.result == AuthResult::Accept {
        if let Some(limit) = user.profile.simultaneous_use {
            let open = shared.open_sessions(&user.address);
            if open >= limit {
                decision.result = AuthResult::Reject;
                decision.reason = format!("simultaneous-use limit {limit} reached").into();
                decision.reply_message = "Too many sessions open: access denied";
                decision.mschap_ident = decision
                    .mschap_success
                    .take()
                    .and_then(|s| s.first().copied());
            }
        }
    }
    decision.user = Some(user);
    Ok(decision)
}

/// `method_of` never returns `None` past the early return; keep the match total without
/// a panic on a path input can reach.
fn unreachable_none() -> Decision {
    reject(Method::None, "no credentials", FAILED)
}

fn accept(method: Method) -> Decision {
    Decision {
        method,
        result: AuthResult::Accept,
        reason: Cow::Borrowed("ok"),
        reply_message: "",
        address: None,
        user: None,
        mschap_success: None,
        mschap_ident: None,
    }
}

async fn pap<D: RadiusDirectory>(
    shared: &Arc<Shared<D>>,
    packet: &Packet<'_>,
    nas: &NasClient,
    user: &Arc<RadiusUser>,
) -> Decision {
    let hidden = packet.get(attr::USER_PASSWORD).unwrap_or_default();
    let Some(password) = crypto::unhide_password(hidden, &nas.secret, &packet.authenticator) else {
        return reject(Method::Pap, "malformed user-password", FAILED);
    };
    let Ok(password) = String::from_utf8(password) else {
        // Most likely a wrong shared secret: the bytes decode to noise.
        return reject(Method::Pap, "bad password", FAILED);
    };
    if shared
        .passwords
        .hit(&user.address, &user.password_hash, password.as_bytes())
    {
        shared.metrics.password_cache_hit.increment(1);
        return accept(Method::Pap);
    }
    shared.metrics.password_cache_miss.increment(1);
    let ok = {
        // Bounded: argon2 is CPU and memory heavy, and a flood of bad passwords must
        // queue here rather than fill the blocking pool.
        let _permit = shared.password_permits.acquire().await;
        let directory = shared.directory.clone();
        let user = user.clone();
        let pw = password.clone();
        tokio::task::spawn_blocking(move || directory.verify_password(&user, &pw))
            .await
            .unwrap_or(false)
    };
    if ok {
        shared
            .passwords
            .remember(&user.address, &user.password_hash, password.as_bytes());
        accept(Method::Pap)
    } else {
        reject(Method::Pap, "bad password", FAILED)
    }
}

const NEEDS_SECRET: &str =
    "CHAP and MS-CHAPv2 need a cleartext secret on the server; use PAP for this user";

fn chap(packet: &Packet<'_>, user: &RadiusUser) -> Decision {
    let Some(secret) = &user.chap_secret else {
        return reject(
            Method::Chap,
            "chap needs a stored cleartext secret",
            NEEDS_SECRET,
        );
    };
    let chap_password = packet.get(attr::CHAP_PASSWORD).unwrap_or_default();
    let challenge = packet
        .get(attr::CHAP_CHALLENGE)
        .unwrap_or(&packet.authenticator);
    if crypto::verify_chap(chap_password, secret.as_bytes(), challenge) {
        accept(Method::Chap)
    } else {
        reject(Method::Chap, "bad password", FAILED)
    }
}

fn mschapv2(packet: &Packet<'_>, user_name: &[u8], user: &RadiusUser) -> Decision {
    let value = packet
        .vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_RESPONSE)
        .ok()
        .flatten()
        .unwrap_or_default();
    let Some(response) = mschap::Response::parse(value) else {
        return reject(Method::MsChapV2, "malformed ms-chap2-response", FAILED);
    };
    let with_ident = |mut d: Decision| {
        d.mschap_ident = Some(response.ident);
        d
    };
    let Some(secret) = &user.chap_secret else {
        return with_ident(reject(
            Method::MsChapV2,
            "ms-chapv2 needs a stored cleartext secret",
            NEEDS_SECRET,
        ));
    };
    let challenge: Option<&[u8; 16]> = packet
        .vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP_CHALLENGE)
        .ok()
        .flatten()
        .and_then(|c| c.try_into().ok());
    let Some(challenge) = challenge else {
        return with_ident(reject(
            Method::MsChapV2,
            "missing ms-chap-challenge",
            FAILED,
        ));
    };
    match mschap::verify(challenge, &response, user_name, secret) {
        Some(success) => {
            let mut d = accept(Method::MsChapV2);
            d.mschap_success = Some(success);
            d
        }
        None => with_ident(reject(Method::MsChapV2, "bad password", FAILED)),
    }
}

/// The Access-Accept or Access-Reject for `decision`, Message-Authenticator first.
pub(crate) fn reply(
    packet: &Packet<'_>,
    nas: &NasClient,
    decision: &Decision,
) -> Result<Vec<u8>, EncodeError> {
    let code = match decision.result {
        AuthResult::Accept => Code::AccessAccept,
        AuthResult::Reject => Code::AccessReject,
    };
    let mut w = PacketWriter::new(code, packet.identifier);
    w.message_authenticator();
    match decision.result {
        AuthResult::Accept => {
            if let Some(profile) = decision.user.as_ref().map(|u| &u.profile) {
                if let Some(t) = profile.session_timeout {
                    w.push_u32(attr::SESSION_TIMEOUT, t);
                }
                if let Some(t) = profile.idle_timeout {
                    w.push_u32(attr::IDLE_TIMEOUT, t);
                }
                if let Some(ip) = profile.framed_ip {
                    w.push(attr::FRAMED_IP_ADDRESS, &ip.octets())?;
                } else if let Some(pool) = &profile.framed_pool {
                    w.push(attr::FRAMED_POOL, pool.as_bytes())?;
                }
                if let Some(class) = &profile.class {
                    w.push(attr::CLASS, class.as_bytes())?;
                }
            }
            if let Some(success) = &decision.mschap_success {
                w.push_vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_SUCCESS, success)?;
            }
        }
        AuthResult::Reject => {
            w.push_text(attr::REPLY_MESSAGE, decision.reply_message);
            if let Some(ident) = decision.mschap_ident {
                // E=691: authentication failure; R=0: no retry (RFC 2759 §6), so the
                // C= challenge a retry would use is zeros; M= is what clients show.
                let mut error = vec![ident];
                error.extend_from_slice(b"E=691 R=0 C=");
                error.extend_from_slice(&[b'0'; 32]);
                error.extend_from_slice(b" V=3 M=");
                error.extend_from_slice(decision.reply_message.as_bytes());
                w.push_vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP_ERROR, &error)?;
            }
        }
    }
    copy_proxy_state(packet, &mut w)?;
    crypto::finish_reply(w, &nas.secret, &packet.authenticator)
}

/// Proxy-State attributes go back unchanged and in order (RFC 2865 §5.33).
pub(crate) fn copy_proxy_state(
    packet: &Packet<'_>,
    w: &mut PacketWriter,
) -> Result<(), EncodeError> {
    for a in packet.attributes().filter(|a| a.typ == attr::PROXY_STATE) {
        w.push(attr::PROXY_STATE, a.value)?;
    }
    Ok(())
}

/// The audit record of a decision. It holds no credential of any kind.
pub(crate) fn audit_event(
    packet: &Packet<'_>,
    nas_ip: std::net::IpAddr,
    decision: &Decision,
) -> AccessAuth {
    AccessAuth {
        user: packet.text_lossy(attr::USER_NAME).unwrap_or_default(),
        address: decision.address.clone(),
        nas_ip: nas_ip.to_string(),
        nas_identifier: packet.text_lossy(attr::NAS_IDENTIFIER),
        nas_port: packet.u32(attr::NAS_PORT).ok().flatten(),
        calling_station_id: packet.text_lossy(attr::CALLING_STATION_ID),
        method: decision.method.name().to_owned(),
        result: decision.result,
        reason: decision.reason.clone().into_owned(),
        time: Some(chrono::Utc::now()),
    }
}
