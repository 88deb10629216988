//! One submission conversation: the MX's plumbing ([`pampa_ingest::conn`]) with
//! submission's policy on top. Nothing is relayed before AUTH, AUTH only inside TLS,
//! and every sender address (envelope and `From:`) must be the user's own or an alias.

use std::{net::SocketAddr, sync::Arc};

use chrono::Utc;
use pampa_bus::OutgoingEvent;
use pampa_directory::Address;
use pampa_ingest::conn::{has_source_route, parse_error_reply, Io, Outcome, SmtpConn};
use pampa_schemas::{
    new_id, ClientInfo, Envelope, LevelSnapshot, MailReceived, RecipientLevel, SubmissionLimited,
    SUBMITTED_EVENT_TYPE,
};
use smtp_proto::{
    EhloResponse, Request, AUTH_LOGIN, AUTH_PLAIN, EXT_8BIT_MIME, EXT_AUTH,
    EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_START_TLS,
};
use tracing::Instrument;

use crate::{
    limits::Limit,
    message::{self, HeaderCheck},
    metrics,
    sasl::{self, Credentials, SaslError},
    server::Shared,
};

/// The user a session authenticated as, with what was read of them at AUTH.
struct AuthedUser {
    address: String,
    /// (messages, recipients) an hour.
    limits: (u32, u32),
    flagged: bool,
}

struct Transaction {
    mail_from: String,
    recipients: Vec<String>,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    conn: SmtpConn,
    peer: SocketAddr,
    id: String,
    helo: Option<String>,
    tls: bool,
    user: Option<AuthedUser>,
    transaction: Option<Transaction>,
}

enum Next {
    Continue,
    Close(Outcome),
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stream: Box<dyn Io>,
        peer: SocketAddr,
        tls: bool,
    ) -> Self {
        let conn = SmtpConn::new(
            stream,
            shared.config.idle_timeout,
            shared.config.max_line_length,
            metrics::REPLIES_TOTAL,
        );
        Session {
            shared,
            conn,
            peer,
            id: new_id(),
            helo: None,
            tls,
            user: None,
            transaction: None,
        }
    }

    pub(crate) async fn run(mut self) -> Outcome {
        let span =
            tracing::info_span!("submission", session_id = %self.id, client_ip = %self.peer.ip());
        async move {
            let outcome = self.converse().await;
            let _ = self.conn.flush().await;
            tracing::debug!(outcome, "Submission session closed.");
            outcome
        }
        .instrument(span)
        .await
    }

    async fn converse(&mut self) -> Outcome {
        if !self.shared.log.is_ready().await {
            self.conn.reply(
                421,
                "4.3.0",
                "The mail store is unavailable; try again later",
            );
            return "not_ready";
        }
        let greeting = format!("{} ESMTP pampa submission", self.shared.config.hostname);
        self.conn.reply(220, "", &greeting);
        loop {
            while let Some(line) = self.conn.next_line() {
                if let Next::Close(outcome) = self.command(&line).await {
                    return outcome;
                }
            }
            if let Err(outcome) = self.conn.flush().await {
                return outcome;
            }
            match self.conn.read_more().await {
                Ok(true) => {}
                Ok(false) => return "disconnect",
                Err(outcome) => return outcome,
            }
        }
    }

    fn reply(&mut self, code: u16, esc: &str, text: &str) -> Next {
        self.conn.reply(code, esc, text);
        Next::Continue
    }

    fn error(&mut self, code: u16, esc: &str, text: &str) -> Next {
        match self
            .conn
            .error(code, esc, text, self.shared.config.max_errors)
        {
            Ok(()) => Next::Continue,
            Err(outcome) => Next::Close(outcome),
        }
    }

    async fn command(&mut self, line: &[u8]) -> Next {
        if let Err(outcome) = self.conn.count_command(self.shared.config.max_commands) {
            return Next::Close(outcome);
        }
        if !line.is_ascii() || line.contains(&0) {
            return self.error(
                500,
                "5.5.2",
                "8-bit or NUL characters are not allowed in commands",
            );
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(error) => {
                let (code, esc, text) = parse_error_reply(error);
                return self.error(code, esc, &text);
            }
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::StartTls => self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from.address, from.size).await,
            Request::Rcpt { .. } if has_source_route(line) => self.error(
                553,
                "5.1.0",
                "Source routes are not accepted; name the recipient alone",
            ),
            Request::Rcpt { to } => self.rcpt(&to.address).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.transaction = None;
                self.reply(250, "2.0.0", "Ok")
            }
            Request::Noop { .. } => self.reply(250, "2.0.0", "Ok"),
            Request::Vrfy { .. } => self.reply(252, "2.5.0", "Cannot VRFY user"),
            Request::Quit => {
                self.conn.reply(221, "2.0.0", "Bye");
                Next::Close("quit")
            }
            Request::Help { .. } => self.reply(214, "2.0.0", "See RFC 6409"),
            Request::Lhlo { .. } => self.error(500, "5.5.1", "This is SMTP, not LMTP"),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Bdat { .. } => self.error(502, "5.5.1", "Command not implemented"),
        }
    }

    fn hello(&mut self, host: String, esmtp: bool) -> Next {
        if host.trim().is_empty() {
            return self.error(501, "5.5.4", "Syntax: EHLO hostname");
        }
        self.helo = Some(host);
        self.transaction = None;
        let config = &self.shared.config;
        if !esmtp {
            let text = config.hostname.clone();
            return self.reply(250, "", &text);
        }
        let mut ehlo = EhloResponse::new(config.hostname.as_str());
        ehlo.capabilities = EXT_PIPELINING | EXT_SIZE | EXT_8BIT_MIME | EXT_ENHANCED_STATUS_CODES;
        if self.tls {
            // Passwords travel in the clear inside these mechanisms: offered in TLS only.
            ehlo.capabilities |= EXT_AUTH;
            ehlo.auth_mechanisms = AUTH_PLAIN | AUTH_LOGIN;
        } else {
            ehlo.capabilities |= EXT_START_TLS;
        }
        ehlo.size = config.max_message_bytes;
        let _ = ehlo.write(self.conn.output());
        self.conn.count_reply(250);
        Next::Continue
    }

    async fn starttls(&mut self) -> Next {
        if self.tls {
            return self.error(503, "5.5.1", "TLS is already active");
        }
        let acceptor = self.shared.tls.clone();
        match self.conn.start_tls(&acceptor).await {
            Ok(()) => {
                self.tls = true;
                self.helo = None;
                self.transaction = None;
                Next::Continue
            }
            Err(outcome) => Next::Close(outcome),
        }
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Next {
        if !self.tls {
            ::metrics::counter!(metrics::AUTH_TOTAL, "result" => "no_tls").increment(1);
            return self.error(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism; use STARTTLS",
            );
        }
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO first");
        }
        if self.user.is_some() {
            return self.error(503, "5.5.1", "Already authenticated");
        }
        if self.transaction.is_some() {
            return self.error(
                503,
                "5.5.1",
                "AUTH is not allowed during a mail transaction",
            );
        }
        let ip = pampa_ingest::guard::client_key(self.peer.ip());
        if self.shared.ip_guard.is_blocked(&ip) {
            ::metrics::counter!(metrics::AUTH_TOTAL, "result" => "locked_out").increment(1);
            self.conn.reply(
                454,
                "4.7.0",
                "Too many failed authentications from your address; try again later",
            );
            return Next::Close("auth_locked_out");
        }
        let credentials = match self.read_credentials(mechanism, initial).await {
            Ok(credentials) => credentials,
            Err(Ok(SaslError::Cancelled)) => {
                return self.error(501, "5.7.0", "Authentication cancelled")
            }
            Err(Ok(SaslError::Malformed)) => {
                return self.error(501, "5.5.2", "Cannot decode the authentication response")
            }
            Err(Err(next)) => return next,
        };
        // One key per account, however it is spelled (`Alice@X.org.`, ` alice@x.org`):
        // the directory reads them all as the same user. Names that are no address
        // share one key, and never reach the password check.
        let user_key = match Address::parse(&credentials.user) {
            Ok(address) => address.to_string(),
            Err(_) => {
                ::metrics::counter!(metrics::AUTH_TOTAL, "result" => "failed").increment(1);
                if self.shared.ip_guard.record_failure(ip) {
                    ::metrics::counter!(metrics::LOCKOUTS_TOTAL, "scope" => "ip").increment(1);
                }
                return self.error(535, "5.7.8", "Authentication credentials invalid");
            }
        };
        if self.shared.user_guard.is_blocked(&user_key) {
            ::metrics::counter!(metrics::AUTH_TOTAL, "result" => "locked_out").increment(1);
            tracing::warn!(user = %credentials.user, "AUTH refused: the user is locked out after failed attempts.");
            return self.error(
                454,
                "4.7.0",
                "Too many failed authentications for this user; try again later",
            );
        }
        let directory = &self.shared.directory;
        let verified = match directory
            .verify_password(&credentials.user, &credentials.password)
            .await
        {
            Ok(verified) => verified,
            Err(error) => {
                tracing::warn!(%error, "Cannot check a password.");
                return self.reply(454, "4.7.0", "Temporary authentication failure");
            }
        };
        if !verified {
            ::metrics::counter!(metrics::AUTH_TOTAL, "result" => "failed").increment(1);
            if self.shared.ip_guard.record_failure(ip) {
                ::metrics::counter!(metrics::LOCKOUTS_TOTAL, "scope" => "ip").increment(1);
                tracing::warn!("A client IP is locked out after failed AUTH attempts.");
            }
            if self.shared.user_guard.record_failure(user_key) {
                ::metrics::counter!(metrics::LOCKOUTS_TOTAL, "scope" => "user").increment(1);
                tracing::warn!(user = %credentials.user, "A user is locked out after failed AUTH attempts.");
            }
            return self.error(535, "5.7.8", "Authentication credentials invalid");
        }
        let address = match Address::parse(&credentials.user) {
            Ok(address) => address.to_string(),
            Err(_) => return self.error(535, "5.7.8", "Authentication credentials invalid"),
        };
        let profile = match directory.outbound_profile(&address).await {
            Ok(profile) => profile,
            Err(error) => {
                tracing::warn!(%error, "Cannot read a user's outbound profile.");
                return self.reply(454, "4.7.0", "Temporary authentication failure");
            }
        };
        let config = &self.shared.config;
        self.user = Some(AuthedUser {
            address,
            limits: (
                profile
                    .messages_per_hour
                    .unwrap_or(config.messages_per_hour),
                profile
                    .recipients_per_hour
                    .unwrap_or(config.recipients_per_hour),
            ),
            flagged: profile.flag.is_some(),
        });
        ::metrics::counter!(metrics::AUTH_TOTAL, "result" => "ok").increment(1);
        self.reply(235, "2.7.0", "Authentication successful")
    }

    /// Runs the SASL exchange. `Err(Ok(_))` is a bad answer; `Err(Err(next))` ends the
    /// command (the connection dropped, or an unknown mechanism was answered).
    async fn read_credentials(
        &mut self,
        mechanism: u64,
        initial: String,
    ) -> Result<Credentials, Result<SaslError, Next>> {
        let io = |outcome| Err(Err(Next::Close(outcome)));
        match mechanism {
            AUTH_PLAIN => {
                let line = if initial.is_empty() {
                    self.conn.reply(334, "", "");
                    match self.conn.read_line().await {
                        Ok(line) => line,
                        Err(outcome) => return io(outcome),
                    }
                } else {
                    initial.into_bytes()
                };
                let message = sasl::decode_line(&line).map_err(Ok)?;
                sasl::parse_plain(&message).map_err(Ok)
            }
            AUTH_LOGIN => {
                let user = if initial.is_empty() {
                    self.conn.reply(334, "", sasl::LOGIN_USER_CHALLENGE);
                    match self.conn.read_line().await {
                        Ok(line) => sasl::login_text(&line).map_err(Ok)?,
                        Err(outcome) => return io(outcome),
                    }
                } else {
                    sasl::login_text(initial.as_bytes()).map_err(Ok)?
                };
                self.conn.reply(334, "", sasl::LOGIN_PASSWORD_CHALLENGE);
                let password = match self.conn.read_line().await {
                    Ok(line) => sasl::login_text(&line).map_err(Ok)?,
                    Err(outcome) => return io(outcome),
                };
                if user.is_empty() {
                    return Err(Ok(SaslError::Malformed));
                }
                Ok(Credentials { user, password })
            }
            _ => Err(Err(self.error(
                504,
                "5.5.4",
                "Unrecognized authentication type; use PLAIN or LOGIN",
            ))),
        }
    }

    async fn mail(&mut self, from: String, size: usize) -> Next {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO or HELO first");
        }
        let Some(user) = self.user.as_ref() else {
            return self.error(530, "5.7.0", "Authentication required");
        };
        if self.transaction.is_some() {
            return self.error(503, "5.5.1", "Nested MAIL command");
        }
        if size > self.shared.config.max_message_bytes {
            return self.reply(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        if user.flagged && !self.shared.config.flagged_may_send {
            return self.reply(
                550,
                "5.7.1",
                "Sending is suspended for this account after it sent spam; contact support",
            );
        }
        let Ok(sender) = Address::parse(&from) else {
            return self.error(
                553,
                "5.7.1",
                "Sender address rejected: send from your own address",
            );
        };
        let (user_address, limits) = (user.address.clone(), user.limits);
        match self
            .shared
            .directory
            .may_send_as(&user_address, &sender.to_string())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                ::metrics::counter!(metrics::FORGED_TOTAL, "where" => "envelope").increment(1);
                tracing::info!(user = %user_address, sender = %sender, "Forged envelope sender refused.");
                return self.error(
                    553,
                    "5.7.1",
                    &format!(
                        "<{sender}>: Sender address rejected: not owned by user {user_address}"
                    ),
                );
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot check a sender address.");
                return self.reply(451, "4.3.0", "Cannot check the sender now; try again later");
            }
        }
        if let Err(limit) = self
            .shared
            .rates
            .take_message(&user_address, self.peer.ip(), limits)
        {
            return self.limited(limit).await;
        }
        self.transaction = Some(Transaction {
            mail_from: sender.to_string(),
            recipients: Vec::new(),
        });
        self.reply(250, "2.1.0", "Ok")
    }

    /// Answers a reached limit with `451 4.7.1`, and records it as an event.
    async fn limited(&mut self, limit: Limit) -> Next {
        let Some(user) = self.user.as_ref() else {
            return Next::Continue;
        };
        let config = &self.shared.config;
        let allowed_per_hour = match limit {
            Limit::MessagesPerHour => user.limits.0,
            Limit::RecipientsPerHour => user.limits.1,
            Limit::IpMessagesPerHour => config.ip_messages_per_hour,
        };
        ::metrics::counter!(metrics::LIMITED_TOTAL, "limit" => limit.as_str()).increment(1);
        tracing::info!(user = %user.address, limit = limit.as_str(), allowed_per_hour, "Sending limit reached.");
        let event = Envelope::root(
            new_id(),
            "submission",
            SubmissionLimited {
                user: user.address.clone(),
                ip: self.peer.ip().to_string(),
                limit: limit.as_str().to_owned(),
                allowed_per_hour,
            },
        );
        // The reply does not wait on this record: the limit holds either way.
        if let Ok(event) = OutgoingEvent::from_envelope(&event) {
            if let Err(error) = self.shared.log.publish(&event).await {
                tracing::warn!(%error, "Cannot record a reached sending limit.");
            }
        }
        self.reply(
            451,
            "4.7.1",
            &format!(
                "Sending limit reached ({allowed_per_hour} {} an hour); try again later",
                match limit {
                    Limit::RecipientsPerHour => "recipients",
                    _ => "messages",
                }
            ),
        )
    }

    async fn rcpt(&mut self, to: &str) -> Next {
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            return self.error(503, "5.5.1", "Need MAIL command first");
        };
        if count >= self.shared.config.max_recipients {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        let Ok(address) = Address::parse(to) else {
            return self.error(501, "5.1.3", "Bad recipient address syntax");
        };
        let address = address.to_string();
        if self
            .transaction
            .as_ref()
            .is_some_and(|t| t.recipients.contains(&address))
        {
            return self.reply(250, "2.1.5", "Ok");
        }
        let Some(user) = self.user.as_ref() else {
            return self.error(530, "5.7.0", "Authentication required");
        };
        let (user_address, limits) = (user.address.clone(), user.limits);
        if let Err(limit) = self.shared.rates.take_recipient(&user_address, limits) {
            return self.limited(limit).await;
        }
        if let Some(transaction) = self.transaction.as_mut() {
            transaction.recipients.push(address);
        }
        self.reply(250, "2.1.5", "Ok")
    }

    async fn data(&mut self) -> Next {
        let Some(transaction) = self.transaction.as_ref() else {
            return self.error(503, "5.5.1", "Need MAIL command first");
        };
        if transaction.recipients.is_empty() {
            return self.error(554, "5.5.1", "No valid recipients");
        }
        let data = match self
            .conn
            .read_message(self.shared.config.max_message_bytes)
            .await
        {
            Ok(Some(data)) => data,
            Ok(None) => {
                self.transaction = None;
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "rejected").increment(1);
                return Next::Continue;
            }
            Err(outcome) => return Next::Close(outcome),
        };
        let Some(transaction) = self.transaction.take() else {
            return Next::Continue;
        };
        let Some(user) = self.user.as_ref().map(|u| u.address.clone()) else {
            return self.error(530, "5.7.0", "Authentication required");
        };
        if data.contains(&0) {
            ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "rejected").increment(1);
            return self.reply(554, "5.6.0", "Message contains NUL characters");
        }
        match message::check_from(&self.shared.directory, &user, &data).await {
            Ok(HeaderCheck::Owned) => {}
            Ok(HeaderCheck::Missing) => {
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "rejected").increment(1);
                return self.reply(550, "5.6.0", "The message has no From: header");
            }
            Ok(HeaderCheck::SeveralFrom) => {
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "rejected").increment(1);
                ::metrics::counter!(metrics::FORGED_TOTAL, "where" => "header").increment(1);
                return self.reply(550, "5.6.0", "The message has more than one From: header");
            }
            Ok(HeaderCheck::Forged(address)) => {
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "rejected").increment(1);
                ::metrics::counter!(metrics::FORGED_TOTAL, "where" => "header").increment(1);
                tracing::info!(user = %user, from = %address, "Forged From: header refused.");
                return self.reply(
                    553,
                    "5.7.1",
                    &format!(
                        "Sender <{address}> in the headers rejected: not owned by user {user}"
                    ),
                );
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot check the From: header.");
                return self.reply(451, "4.3.0", "Cannot check the sender now; try again later");
            }
        }
        let message_id = new_id();
        match self
            .make_durable(&message_id, &user, transaction, data)
            .await
        {
            Ok(size) => {
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "accepted").increment(1);
                tracing::info!(message_id, size, user = %user, "Message submitted.");
                self.reply(250, "2.0.0", &format!("Ok: queued as {message_id}"))
            }
            Err(error) => {
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "tempfail").increment(1);
                tracing::warn!(message_id, %error, "Message not stored durably; answered 451.");
                self.reply(
                    451,
                    "4.3.0",
                    "Cannot store the message now; try again later",
                )
            }
        }
    }

    /// Stores the body and publishes `mail.submitted`; both must be confirmed.
    async fn make_durable(
        &self,
        message_id: &str,
        user: &str,
        transaction: Transaction,
        data: Vec<u8>,
    ) -> Result<usize, String> {
        let now = Utc::now();
        let helo = self.helo.clone().unwrap_or_default();
        let ip = self.peer.ip().to_string();
        let config = &self.shared.config;
        let body = message::complete(data, &helo, &ip, &config.hostname, message_id, now);
        // Every recipient gets the one outbound level: below hold_score the mail goes
        // out ("inbox"), from it up it is held ("spam").
        let level = LevelSnapshot {
            name: "outbound".to_owned(),
            cut: Some(config.hold_score),
            discard: None,
        };
        let levels = transaction
            .recipients
            .iter()
            .map(|address| RecipientLevel {
                address: address.clone(),
                level: level.clone(),
            })
            .collect();
        let store = async {
            let blob = pampa_bus::blob::blob_ref(message_id, &body);
            let mut event = Envelope::root(
                message_id.to_owned(),
                "submission",
                MailReceived {
                    message_id: message_id.to_owned(),
                    client: ClientInfo {
                        ip: ip.clone(),
                        helo: helo.clone(),
                        tls: self.tls,
                    },
                    mail_from: transaction.mail_from,
                    recipients: transaction.recipients,
                    blob: blob.clone(),
                    header_message_id: message::header_message_id(&body),
                    received_by: config.hostname.clone(),
                    received_at: now,
                    levels,
                    submitted_by: Some(user.to_owned()),
                },
            );
            event.event_type = SUBMITTED_EVENT_TYPE.to_owned();
            let event = OutgoingEvent::from_envelope(&event).map_err(|e| e.to_string())?;
            let size = body.len();
            self.shared
                .log
                .publish_with_body(&event, &blob, body)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(size)
        };
        match tokio::time::timeout(self.shared.durable_timeout, store).await {
            Ok(result) => result,
            Err(_) => Err("the event log did not confirm in time".to_owned()),
        }
    }
}
