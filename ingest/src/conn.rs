//! The SMTP plumbing that the MX and the submission role share: buffered command lines,
//! queued replies, the DATA reader, STARTTLS and TLS set-up. Each role keeps its own
//! state machine on top; this module knows nothing of recipients or policy.
//!
//! Replies are queued and flushed only when the client's input is drained, which is what
//! PIPELINING needs and saves a write per command.

use std::{path::Path, sync::Arc, time::Duration};

use smtp_proto::{
    request::receiver::{DataReceiver, DummyDataReceiver},
    Error as ParseError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{rustls, TlsAcceptor};

/// Anything a session can speak over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// What ends a session, as the `result` label of a sessions counter.
pub type Outcome = &'static str;

/// Loads a PEM certificate chain and key into a TLS acceptor.
pub fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let tls_err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        format!("{what} {}: {e}", path.display())
    };
    let cert_pem = std::fs::read(cert).map_err(|e| tls_err("cannot read", cert, &e))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("bad certificate in", cert, &e))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key_pem = std::fs::read(key).map_err(|e| tls_err("cannot read", key, &e))?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| tls_err("bad key in", key, &e))?
        .ok_or_else(|| format!("no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One client connection: the stream, what it sent that is not read yet, and the
/// replies not yet written.
pub struct SmtpConn {
    stream: Option<Box<dyn Io>>,
    input: Vec<u8>,
    output: Vec<u8>,
    idle_timeout: Duration,
    max_line_length: usize,
    /// Set after an over-long line: input is dropped up to the next newline.
    skipping_long_line: bool,
    /// Erroneous commands so far (over-long lines count here on their own).
    pub errors: usize,
    /// Commands so far.
    commands: usize,
    /// The counter each reply increments, labelled by code.
    replies_metric: &'static str,
}

impl SmtpConn {
    /// Wraps a connected stream.
    pub fn new(
        stream: Box<dyn Io>,
        idle_timeout: Duration,
        max_line_length: usize,
        replies_metric: &'static str,
    ) -> Self {
        SmtpConn {
            stream: Some(stream),
            input: Vec::with_capacity(1024),
            output: Vec::with_capacity(1024),
            idle_timeout,
            max_line_length,
            skipping_long_line: false,
            errors: 0,
            commands: 0,
            replies_metric,
        }
    }

    /// Queues one reply line.
    pub fn reply(&mut self, code: u16, esc: &str, text: &str) {
        if esc.is_empty() {
            self.output
                .extend_from_slice(format!("{code} {text}\r\n").as_bytes());
        } else {
            self.output
                .extend_from_slice(format!("{code} {esc} {text}\r\n").as_bytes());
        }
        self.count_reply(code);
    }

    /// Answers an erroneous command; past `max_errors` of them the session is closed
    /// with 421 (`Err`).
    pub fn error(
        &mut self,
        code: u16,
        esc: &str,
        text: &str,
        max_errors: usize,
    ) -> Result<(), Outcome> {
        self.reply(code, esc, text);
        self.errors += 1;
        if self.errors >= max_errors {
            self.reply(421, "4.7.0", "Too many errors, closing connection");
            return Err("error_limit");
        }
        Ok(())
    }

    /// Counts a command; past `max_commands` the session is closed with 421 (`Err`).
    pub fn count_command(&mut self, max_commands: usize) -> Result<(), Outcome> {
        self.commands += 1;
        if self.commands > max_commands {
            self.reply(421, "4.7.0", "Too many commands, closing connection");
            return Err("command_limit");
        }
        Ok(())
    }

    /// Answers DATA with 354 and reads the message. `Ok(None)`: it was larger than
    /// `max`, and the 552 is queued.
    pub async fn read_message(&mut self, max: usize) -> Result<Option<Vec<u8>>, Outcome> {
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        self.flush().await?;
        let data = self.receive_data(max).await?;
        if data.is_none() {
            self.reply(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        Ok(data)
    }

    /// Counts a reply written some other way (the multi-line EHLO answer).
    pub fn count_reply(&self, code: u16) {
        ::metrics::counter!(self.replies_metric, "code" => code.to_string()).increment(1);
    }

    /// The reply queue, for multi-line answers written by smtp-proto.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Writes the queued replies.
    pub async fn flush(&mut self) -> Result<(), Outcome> {
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
        let result = tokio::time::timeout(self.idle_timeout, written).await;
        self.output.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            _ => Err("io_error"),
        }
    }

    /// Reads more input; `Ok(false)` on a clean EOF.
    pub async fn read_more(&mut self) -> Result<bool, Outcome> {
        let Some(stream) = self.stream.as_mut() else {
            return Err("io_error");
        };
        // Straight into the input's spare room: no zeroed buffer to copy from.
        self.input.reserve(16 * 1024);
        match tokio::time::timeout(self.idle_timeout, stream.read_buf(&mut self.input)).await {
            Err(_) => {
                self.reply(421, "4.4.2", "Idle timeout, closing connection");
                Err("timeout")
            }
            Ok(Err(_)) => Err("io_error"),
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
        }
    }

    /// Takes the next complete command line off the input, answering over-long ones.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        let max = self.max_line_length;
        loop {
            match memchr::memchr(b'\n', &self.input) {
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

    /// Reads one line for a SASL exchange (a `334` challenge's answer).
    pub async fn read_line(&mut self) -> Result<Vec<u8>, Outcome> {
        loop {
            if let Some(line) = self.next_line() {
                return Ok(line);
            }
            self.flush().await?;
            if !self.read_more().await? {
                return Err("disconnect");
            }
        }
    }

    /// Reads DATA up to the terminator. `Ok(None)` when it was larger than `max` (the
    /// rest was read and dropped, so the session can go on).
    pub async fn receive_data(&mut self, max: usize) -> Result<Option<Vec<u8>>, Outcome> {
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

    /// Answers STARTTLS and runs the handshake.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Result<(), Outcome> {
        self.reply(220, "2.0.0", "Ready to start TLS");
        self.flush().await?;
        // Anything pipelined after STARTTLS was sent in clear text and must not be
        // executed inside TLS (CVE-2011-0411).
        self.input.clear();
        let Some(plain) = self.stream.take() else {
            return Err("io_error");
        };
        match tokio::time::timeout(self.idle_timeout, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.stream = Some(Box::new(tls));
                Ok(())
            }
            _ => Err("tls_error"),
        }
    }
}

/// The reply to a command smtp-proto could not parse: code, enhanced code and text.
pub fn parse_error_reply(error: ParseError) -> (u16, &'static str, String) {
    match error {
        ParseError::UnknownCommand => (500, "5.5.2", "Syntax error, command unrecognized".into()),
        ParseError::InvalidSenderAddress => (501, "5.1.7", "Bad sender address syntax".into()),
        ParseError::InvalidRecipientAddress => {
            (501, "5.1.3", "Bad recipient address syntax".into())
        }
        ParseError::SyntaxError { syntax } => (501, "5.5.4", format!("Syntax: {syntax}")),
        ParseError::InvalidParameter { param } => {
            (501, "5.5.4", format!("Invalid parameter {param:?}"))
        }
        ParseError::UnsupportedParameter { param } => {
            let param: String = param
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            (555, "5.5.4", format!("Unsupported parameter {param:?}"))
        }
        ParseError::ResponseTooLong => (500, "5.5.2", "Line too long".into()),
        ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
            (500, "5.5.2", "Syntax error".into())
        }
    }
}

/// A message as DATA sends it (RFC 5321 §4.5.2): lines that start with a dot get
/// another, a final CRLF if the body lacks one, and the terminating dot. The relay's
/// SMTP client and deliver's LMTP client both send with it.
pub fn dot_stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 50 + 5);
    let mut at_line_start = true;
    for &byte in body {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Whether a `MAIL`/`RCPT` command line's path starts with a source route (`<@a,@b:…>`).
pub fn has_source_route(line: &[u8]) -> bool {
    line.iter()
        .position(|b| *b == b'<')
        .and_then(|open| line[open + 1..].iter().find(|b| !b.is_ascii_whitespace()))
        == Some(&b'@')
}

#[cfg(test)]
mod tests {
    #[test]
    fn dots_are_stuffed_and_the_end_is_marked() {
        assert_eq!(
            super::dot_stuffed(b"a\r\n.b\r\n..\r\n"),
            b"a\r\n..b\r\n...\r\n.\r\n"
        );
        assert_eq!(super::dot_stuffed(b".x"), b"..x\r\n.\r\n");
    }

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
