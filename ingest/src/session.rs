//! One SMTP conversation: a state machine over smtp-proto's command parser, on the
//! shared plumbing of [`crate::conn`].

use std::{net::SocketAddr, sync::Arc};

use chrono::Utc;
use pampa_bus::OutgoingEvent;
use pampa_directory::{Address, DirectoryError, User};
use pampa_schemas::{new_id, ClientInfo, Envelope, LevelSnapshot, MailReceived, RecipientLevel};
use smtp_proto::{
    EhloResponse, Error as ParseError, Request, EXT_8BIT_MIME, EXT_ENHANCED_STATUS_CODES,
    EXT_PIPELINING, EXT_SIZE, EXT_START_TLS,
};
use tracing::Instrument;

use crate::{
    conn::{has_source_route, parse_error_reply, Io, Outcome, SmtpConn},
    message::{canonical_line_endings, header_message_id, Trace},
    metrics,
    server::Shared,
};

struct Transaction {
    mail_from: String,
    recipients: Vec<String>,
    /// Each recipient's spam level at RCPT time, recorded in the event for replay.
    levels: Vec<RecipientLevel>,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    conn: SmtpConn,
    peer: SocketAddr,
    id: String,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    transaction: Option<Transaction>,
}

enum Next {
    Continue,
    Close(Outcome),
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, stream: Box<dyn Io>, peer: SocketAddr) -> Self {
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
            esmtp: false,
            tls: false,
            transaction: None,
        }
    }

    pub(crate) async fn run(mut self) -> Outcome {
        let span = tracing::info_span!("smtp", session_id = %self.id, client_ip = %self.peer.ip());
        async move {
            tracing::debug!("SMTP session opened.");
            let outcome = self.converse().await;
            // The peer may be gone already; there is nobody left to tell.
            let _ = self.conn.flush().await;
            tracing::debug!(outcome, "SMTP session closed.");
            outcome
        }
        .instrument(span)
        .await
    }

    async fn converse(&mut self) -> Outcome {
        if self.shared.guard.is_blocked(&self.peer.ip()) {
            self.reply(
                421,
                "4.7.0",
                "Too many unknown recipients from your address; try again later",
            );
            return "blocked";
        }
        // Nothing could be stored while the log is unreachable: say so before the client
        // sends a body (an MX that greets and then 451s every DATA wastes its bandwidth).
        if !self.shared.log.is_ready().await {
            self.reply(
                421,
                "4.3.0",
                "The mail store is unavailable; try again later",
            );
            return "not_ready";
        }
        let greeting = format!("{} ESMTP pampa", self.shared.config.hostname);
        self.reply(220, "", &greeting);
        loop {
            while let Some(line) = self.conn.next_line() {
                match self.command(&line).await {
                    Next::Continue => {}
                    Next::Close(outcome) => return outcome,
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

    fn reply(&mut self, code: u16, esc: &str, text: &str) {
        self.conn.reply(code, esc, text);
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
        if !line.is_ascii() {
            // SMTPUTF8 is not offered, so 8-bit bytes in a command are a protocol error.
            return self.error(500, "5.5.2", "8-bit characters are not allowed in commands");
        }
        if line.contains(&0) {
            return self.error(500, "5.5.2", "NUL characters are not allowed in commands");
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(error) => return self.parse_error(error),
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Mail { from } => self.mail(from.address, from.size),
            // RFC 5321 lets a server ignore a source route (`<@relay:user@domain>`), but
            // relays once honoured them, so they are refused outright: no sender needs one.
            Request::Rcpt { .. } if has_source_route(line) => self.error(
                553,
                "5.1.0",
                "Source routes are not accepted; name the recipient alone",
            ),
            Request::Rcpt { to } => self.rcpt(&to.address).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.transaction = None;
                self.reply(250, "2.0.0", "Ok");
                Next::Continue
            }
            Request::Noop { .. } => {
                self.reply(250, "2.0.0", "Ok");
                Next::Continue
            }
            Request::Vrfy { .. } => {
                // Saying whether a user exists would hand out the user list.
                self.reply(
                    252,
                    "2.5.0",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                Next::Continue
            }
            Request::Quit => {
                self.reply(221, "2.0.0", "Bye");
                Next::Close("quit")
            }
            Request::StartTls => self.starttls().await,
            Request::Help { .. } => {
                self.reply(214, "2.0.0", "See RFC 5321");
                Next::Continue
            }
            Request::Auth { .. } => self.error(
                503,
                "5.5.1",
                "AUTH is not offered on this MX; use submission",
            ),
            Request::Lhlo { .. } => self.error(500, "5.5.1", "This is SMTP, not LMTP"),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Bdat { .. } => self.error(502, "5.5.1", "Command not implemented"),
        }
    }

    fn parse_error(&mut self, error: ParseError) -> Next {
        let (code, esc, text) = parse_error_reply(error);
        self.error(code, esc, &text)
    }

    fn hello(&mut self, host: String, esmtp: bool) -> Next {
        if host.trim().is_empty() {
            return self.error(501, "5.5.4", "Syntax: EHLO hostname");
        }
        self.helo = Some(host);
        self.esmtp = esmtp;
        self.transaction = None;
        let config = &self.shared.config;
        if !esmtp {
            let text = config.hostname.clone();
            self.reply(250, "", &text);
            return Next::Continue;
        }
        let mut ehlo = EhloResponse::new(config.hostname.as_str());
        ehlo.capabilities = EXT_PIPELINING | EXT_SIZE | EXT_8BIT_MIME | EXT_ENHANCED_STATUS_CODES;
        if self.shared.tls.is_some() && !self.tls {
            ehlo.capabilities |= EXT_START_TLS;
        }
        ehlo.size = config.max_message_bytes;
        // Writing into a Vec cannot fail.
        let _ = ehlo.write(self.conn.output());
        self.conn.count_reply(250);
        Next::Continue
    }

    fn mail(&mut self, from: String, size: usize) -> Next {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO or HELO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1", "Nested MAIL command");
        }
        if size > self.shared.config.max_message_bytes {
            self.reply(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
            return Next::Continue;
        }
        let mail_from = if from.is_empty() {
            String::new()
        } else {
            match Address::parse(&from) {
                Ok(address) => address.to_string(),
                Err(_) => return self.error(501, "5.1.7", "Bad sender address syntax"),
            }
        };
        self.transaction = Some(Transaction {
            mail_from,
            recipients: Vec::new(),
            levels: Vec::new(),
        });
        self.reply(250, "2.1.0", "Ok");
        Next::Continue
    }

    async fn rcpt(&mut self, to: &str) -> Next {
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            return self.error(503, "5.5.1", "Need MAIL command first");
        };
        if count >= self.shared.config.max_recipients {
            self.reply(452, "4.5.3", "Too many recipients");
            return Next::Continue;
        }
        // `user@domain.` names the same domain, but an MX that accepted it could be
        // tricked into relaying by a downstream that reads it otherwise.
        if to.ends_with('.') {
            return self.error(553, "5.1.3", "A trailing dot in the domain is not accepted");
        }
        let Ok(address) = Address::parse(to) else {
            return self.error(501, "5.1.3", "Bad recipient address syntax");
        };
        match self.resolve(&address).await {
            Ok(Some(user)) => {
                if let Some(transaction) = self.transaction.as_mut() {
                    if !transaction.recipients.contains(&user.address) {
                        transaction.levels.push(RecipientLevel {
                            address: user.address.clone(),
                            level: LevelSnapshot {
                                name: user.level.name,
                                cut: user.level.cut,
                                discard: user.level.discard,
                            },
                        });
                        transaction.recipients.push(user.address);
                    }
                }
                self.reply(250, "2.1.5", "Ok");
                Next::Continue
            }
            Ok(None) if !self.is_local(&address).await => {
                self.reply(554, "5.7.1", &format!("<{address}>: Relay access denied"));
                Next::Continue
            }
            Ok(None) => {
                if self.shared.guard.record_failure(self.peer.ip()) {
                    ::metrics::counter!(metrics::DICTIONARY_BLOCKS_TOTAL).increment(1);
                    tracing::warn!(
                        "Client named too many unknown recipients; refusing it for a while."
                    );
                    self.reply(
                        421,
                        "4.7.0",
                        "Too many unknown recipients, closing connection",
                    );
                    return Next::Close("dictionary_attack");
                }
                self.error(
                    550,
                    "5.1.1",
                    &format!("<{address}>: Recipient address rejected: User unknown"),
                )
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot verify a recipient.");
                self.reply(
                    451,
                    "4.3.0",
                    "Cannot verify the recipient now; try again later",
                );
                Next::Continue
            }
        }
    }

    /// The user an address delivers to: the user itself, or the user of `user+detail`.
    async fn resolve(&self, address: &Address) -> Result<Option<User>, DirectoryError> {
        let directory = &self.shared.directory;
        if let Some(user) = directory.find_user(address).await? {
            return Ok(Some(user));
        }
        let delimiter = self.shared.config.recipient_delimiter;
        match delimiter.and_then(|d| address.without_detail(d)) {
            Some(base) => directory.find_user(&base).await,
            None => Ok(None),
        }
    }

    async fn is_local(&self, address: &Address) -> bool {
        // A directory error here is answered as "not local" only after resolve() worked
        // moments ago; treat a failure as local so the reply is the safer 550, not a relay.
        self.shared
            .directory
            .is_local_domain(address.domain())
            .await
            .unwrap_or(true)
    }

    async fn starttls(&mut self) -> Next {
        let Some(acceptor) = self.shared.tls.clone() else {
            return self.error(502, "5.5.1", "STARTTLS is not offered");
        };
        if self.tls {
            return self.error(503, "5.5.1", "TLS is already active");
        }
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
        if data.contains(&0) {
            ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "rejected").increment(1);
            self.reply(554, "5.6.0", "Message contains NUL characters");
            return Next::Continue;
        }
        let message_id = new_id();
        match self.make_durable(&message_id, transaction, data).await {
            Ok(size) => {
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "accepted").increment(1);
                ::metrics::histogram!(metrics::MESSAGE_BYTES).record(size as f64);
                tracing::info!(message_id, size, "Message accepted.");
                self.reply(250, "2.0.0", &format!("Ok: queued as {message_id}"));
            }
            Err(error) => {
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "tempfail").increment(1);
                tracing::warn!(message_id, %error, "Message not stored durably; answered 451.");
                self.reply(
                    451,
                    "4.3.0",
                    "Cannot store the message now; try again later",
                );
            }
        }
        Next::Continue
    }

    /// Stores the body and publishes `mail.received`; both must be confirmed.
    async fn make_durable(
        &self,
        message_id: &str,
        transaction: Transaction,
        data: Vec<u8>,
    ) -> Result<usize, String> {
        let now = Utc::now();
        let data = canonical_line_endings(data);
        let helo = self.helo.clone().unwrap_or_default();
        let ip = self.peer.ip().to_string();
        let trace = Trace {
            helo: &helo,
            ip: &ip,
            hostname: &self.shared.config.hostname,
            tls: self.tls,
            esmtp: self.esmtp,
            authenticated: false,
            id: message_id,
            single_recipient: (transaction.recipients.len() == 1)
                .then(|| transaction.recipients[0].as_str()),
            at: now,
        }
        .header();
        let mut body = Vec::with_capacity(trace.len() + data.len());
        body.extend_from_slice(trace.as_bytes());
        body.extend_from_slice(&data);
        let log = &self.shared.log;
        let store = async {
            let blob = pampa_bus::blob::blob_ref(message_id, &body);
            let event = Envelope::root(
                message_id.to_owned(),
                "ingest",
                MailReceived {
                    submitted_by: None,
                    message_id: message_id.to_owned(),
                    client: ClientInfo {
                        ip: ip.clone(),
                        helo: helo.clone(),
                        tls: self.tls,
                    },
                    mail_from: transaction.mail_from,
                    recipients: transaction.recipients,
                    blob: blob.clone(),
                    header_message_id: header_message_id(&data),
                    received_by: self.shared.config.hostname.clone(),
                    received_at: now,
                    levels: transaction.levels,
                },
            );
            let event = OutgoingEvent::from_envelope(&event).map_err(|e| e.to_string())?;
            let size = body.len();
            // Body and event become durable together (one fsync on the embedded log).
            log.publish_with_body(&event, &blob, body)
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
