//! One SMTP conversation: a state machine over smtp-proto's command parser.
//!
//! Replies are queued and flushed only when the client's input is drained, which is what
//! PIPELINING needs and saves a write per command.

use std::{net::SocketAddr, sync::Arc};

use chrono::Utc;
use pampa_bus::OutgoingEvent;
use pampa_directory::{Address, DirectoryError, User};
use pampa_schemas::{new_id, ClientInfo, Envelope, LevelSnapshot, MailReceived, RecipientLevel};
use smtp_proto::{
    request::receiver::{DataReceiver, DummyDataReceiver},
    EhloResponse, Error as ParseError, Request, EXT_8BIT_MIME, EXT_ENHANCED_STATUS_CODES,
    EXT_PIPELINING, EXT_SIZE, EXT_START_TLS,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use crate::{
    message::{canonical_line_endings, header_message_id, Trace},
    metrics,
    server::Shared,
};

/// Anything a session can speak over: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// What ends a session, as the `result` label of [`metrics::SESSIONS_TOTAL`].
type Outcome = &'static str;

struct Transaction {
    mail_from: String,
    recipients: Vec<String>,
    /// Each recipient's spam level at RCPT time, recorded in the event for replay.
    levels: Vec<RecipientLevel>,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    stream: Option<Box<dyn Io>>,
    peer: SocketAddr,
    id: String,
    input: Vec<u8>,
    output: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    transaction: Option<Transaction>,
    commands: usize,
    errors: usize,
    /// Set after an over-long line: input is dropped up to the next newline.
    skipping_long_line: bool,
}

enum Next {
    Continue,
    Close(Outcome),
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, stream: Box<dyn Io>, peer: SocketAddr) -> Self {
        Session {
            shared,
            stream: Some(stream),
            peer,
            id: new_id(),
            input: Vec::with_capacity(1024),
            output: Vec::with_capacity(1024),
            helo: None,
            esmtp: false,
            tls: false,
            transaction: None,
            commands: 0,
            errors: 0,
            skipping_long_line: false,
        }
    }

    pub(crate) async fn run(mut self) -> Outcome {
        let span = tracing::info_span!("smtp", session_id = %self.id, client_ip = %self.peer.ip());
        async move {
            tracing::debug!("SMTP session opened.");
            let outcome = self.converse().await;
            // The peer may be gone already; there is nobody left to tell.
            let _ = self.flush().await;
            tracing::debug!(outcome, "SMTP session closed.");
            outcome
        }
        .instrument(span)
        .await
    }

    async fn converse(&mut self) -> Outcome {
        if self.shared.guard.is_blocked(self.peer.ip()) {
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
            while let Some(line) = self.next_line() {
                match self.command(&line).await {
                    Next::Continue => {}
                    Next::Close(outcome) => return outcome,
                }
            }
            if let Err(outcome) = self.flush().await {
                return outcome;
            }
            match self.read_more().await {
                Ok(true) => {}
                Ok(false) => return "disconnect",
                Err(outcome) => return outcome,
            }
        }
    }

    fn reply(&mut self, code: u16, esc: &str, text: &str) {
        if esc.is_empty() {
            self.output
                .extend_from_slice(format!("{code} {text}\r\n").as_bytes());
        } else {
            self.output
                .extend_from_slice(format!("{code} {esc} {text}\r\n").as_bytes());
        }
        ::metrics::counter!(metrics::REPLIES_TOTAL, "code" => code.to_string()).increment(1);
    }

    async fn flush(&mut self) -> Result<(), Outcome> {
        if self.output.is_empty() {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("io_error");
        };
        let written = async {
            stream.write_all(&self.output).await?;
            stream.flush().await
        };
        let result = tokio::time::timeout(self.shared.config.idle_timeout, written).await;
        self.output.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            _ => Err("io_error"),
        }
    }

    /// Reads more input; `Ok(false)` on a clean EOF.
    async fn read_more(&mut self) -> Result<bool, Outcome> {
        let Some(stream) = self.stream.as_mut() else {
            return Err("io_error");
        };
        // Straight into the input's spare room: no zeroed buffer to copy from.
        self.input.reserve(16 * 1024);
        match tokio::time::timeout(
            self.shared.config.idle_timeout,
            stream.read_buf(&mut self.input),
        )
        .await
        {
            Err(_) => {
                self.reply(421, "4.4.2", "Idle timeout, closing connection");
                Err("timeout")
            }
            Ok(Err(_)) => Err("io_error"),
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
        }
    }

    /// Takes the next complete command line off the input, dealing with over-long ones.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        let max = self.shared.config.max_line_length;
        loop {
            match self.input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line: Vec<u8> = self.input.drain(..=end).collect();
                    if self.skipping_long_line {
                        self.skipping_long_line = false;
                        continue;
                    }
                    if line.len() > max {
                        self.reply(500, "5.5.2", "Line too long");
                        self.errors += 1;
                        continue;
                    }
                    return Some(line);
                }
                None => {
                    if self.input.len() > max {
                        if !self.skipping_long_line {
                            self.reply(500, "5.5.2", "Line too long");
                            self.errors += 1;
                        }
                        self.skipping_long_line = true;
                        self.input.clear();
                    }
                    return None;
                }
            }
        }
    }

    fn error(&mut self, code: u16, esc: &str, text: &str) -> Next {
        self.reply(code, esc, text);
        self.errors += 1;
        if self.errors >= self.shared.config.max_errors {
            self.reply(421, "4.7.0", "Too many errors, closing connection");
            return Next::Close("error_limit");
        }
        Next::Continue
    }

    async fn command(&mut self, line: &[u8]) -> Next {
        self.commands += 1;
        if self.commands > self.shared.config.max_commands {
            self.reply(421, "4.7.0", "Too many commands, closing connection");
            return Next::Close("command_limit");
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
        match error {
            ParseError::UnknownCommand => {
                self.error(500, "5.5.2", "Syntax error, command unrecognized")
            }
            ParseError::InvalidSenderAddress => {
                self.error(501, "5.1.7", "Bad sender address syntax")
            }
            ParseError::InvalidRecipientAddress => {
                self.error(501, "5.1.3", "Bad recipient address syntax")
            }
            ParseError::SyntaxError { syntax } => {
                self.error(501, "5.5.4", &format!("Syntax: {syntax}"))
            }
            ParseError::InvalidParameter { param } => {
                self.error(501, "5.5.4", &format!("Invalid parameter {param:?}"))
            }
            ParseError::UnsupportedParameter { param } => {
                let param: String = param
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect();
                self.error(555, "5.5.4", &format!("Unsupported parameter {param:?}"))
            }
            ParseError::ResponseTooLong => self.error(500, "5.5.2", "Line too long"),
            ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
                self.error(500, "5.5.2", "Syntax error")
            }
        }
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
        let _ = ehlo.write(&mut self.output);
        ::metrics::counter!(metrics::REPLIES_TOTAL, "code" => "250").increment(1);
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
                if self.shared.guard.record_unknown(self.peer.ip()) {
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
        self.reply(220, "2.0.0", "Ready to start TLS");
        if let Err(outcome) = self.flush().await {
            return Next::Close(outcome);
        }
        // Anything pipelined after STARTTLS was sent in clear text and must not be
        // executed inside TLS (CVE-2011-0411).
        self.input.clear();
        let Some(plain) = self.stream.take() else {
            return Next::Close("io_error");
        };
        match tokio::time::timeout(self.shared.config.idle_timeout, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.stream = Some(Box::new(tls));
                self.tls = true;
                self.helo = None;
                self.transaction = None;
                Next::Continue
            }
            _ => Next::Close("tls_error"),
        }
    }

    async fn data(&mut self) -> Next {
        let Some(transaction) = self.transaction.as_ref() else {
            return self.error(503, "5.5.1", "Need MAIL command first");
        };
        if transaction.recipients.is_empty() {
            return self.error(554, "5.5.1", "No valid recipients");
        }
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        if let Err(outcome) = self.flush().await {
            return Next::Close(outcome);
        }
        let data = match self.receive_data().await {
            Ok(Some(data)) => data,
            Ok(None) => {
                self.transaction = None;
                ::metrics::counter!(metrics::MESSAGES_TOTAL, "result" => "rejected").increment(1);
                self.reply(
                    552,
                    "5.3.4",
                    "Message size exceeds fixed maximum message size",
                );
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

    /// Reads DATA up to the terminator. `Ok(None)` when it was too large (the rest was
    /// read and dropped, so the session can go on).
    async fn receive_data(&mut self) -> Result<Option<Vec<u8>>, Outcome> {
        let max = self.shared.config.max_message_bytes;
        let mut receiver = DataReceiver::new();
        let mut discard: Option<DummyDataReceiver> = None;
        let mut data = Vec::with_capacity(self.input.len().max(8 * 1024));
        loop {
            let mut bytes = self.input.iter();
            let done = match discard.as_mut() {
                Some(discard) => discard.ingest(&mut bytes),
                None => receiver.ingest(&mut bytes, &mut data),
            };
            // Keep what follows the terminator (pipelined commands), and the buffer.
            let consumed = self.input.len() - bytes.as_slice().len();
            self.input.drain(..consumed);
            if discard.is_none() && data.len() > max {
                discard = Some(DummyDataReceiver::new_data(&receiver));
                data = Vec::new();
            }
            if done {
                return Ok(discard.is_none().then_some(data));
            }
            match self.read_more().await {
                Ok(true) => {}
                // A client that hangs up before the terminator has sent no message.
                Ok(false) => return Err("disconnect"),
                Err(outcome) => return Err(outcome),
            }
        }
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

/// Whether a `MAIL`/`RCPT` command line's path starts with a source route (`<@a,@b:…>`).
fn has_source_route(line: &[u8]) -> bool {
    line.iter()
        .position(|b| *b == b'<')
        .and_then(|open| line[open + 1..].iter().find(|b| !b.is_ascii_whitespace()))
        == Some(&b'@')
}

#[cfg(test)]
mod tests {
    #[test]
    fn source_routes_are_found_in_the_path() {
        assert!(super::has_source_route(
            b"RCPT TO:<@relay.example:user@example.org>"
        ));
        assert!(super::has_source_route(
            b"RCPT TO: < @a,@b:user@example.org>"
        ));
        assert!(!super::has_source_route(b"RCPT TO:<user@example.org>"));
        assert!(!super::has_source_route(b"RCPT TO:user@example.org"));
    }
}
