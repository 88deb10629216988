//! The SMTP client: one attempt to hand a message's recipients at one domain to that
//! domain's MX, with opportunistic STARTTLS.
//!
//! Written on tokio directly rather than on a client crate: the relay needs each
//! recipient's own reply and the choice between "next MX" and "stop here" after every
//! step, which is most of the code either way. Replies are read line by line (a
//! multi-line reply ends at the line whose code is followed by a space).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use pampa_schemas::AttemptResult;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    rustls::{
        self,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::CryptoProvider,
        pki_types::{CertificateDer, ServerName, UnixTime},
        DigitallySignedStruct, SignatureScheme,
    },
    TlsConnector,
};

use crate::{
    mx::{MxResolver, RouteError},
    RelayConfig,
};

/// Anything an SMTP session runs over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What one message to one domain carries.
pub struct Outgoing<'a> {
    /// The envelope sender; empty for a DSN.
    pub sender: &'a str,
    /// The recipients, all at the same domain.
    pub recipients: &'a [String],
    /// The message, CRLF line ends, signed.
    pub body: &'a [u8],
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    /// The MX host that was talked to last.
    pub mx: Option<String>,
    /// Whether that session ran inside TLS.
    pub tls: bool,
    /// Each recipient's result and the reply (or error) behind it.
    pub recipients: Vec<(String, AttemptResult, String)>,
}

impl AttemptReport {
    /// Every recipient with the same result, and no session.
    pub fn all(recipients: &[String], result: AttemptResult, reply: &str) -> Self {
        AttemptReport {
            mx: None,
            tls: false,
            recipients: recipients
                .iter()
                .map(|r| (r.clone(), result, reply.to_owned()))
                .collect(),
        }
    }
}

/// One SMTP reply: its code and its lines' text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }

    fn result(&self) -> AttemptResult {
        match self.code {
            200..=299 => AttemptResult::Delivered,
            500..=599 => AttemptResult::Bounced,
            _ => AttemptResult::Deferred,
        }
    }
}

/// Why a session with one MX address ended before the transaction started: the next
/// address or MX is worth trying.
enum NextHost {
    /// The TLS handshake failed: the same address without TLS is worth one more try.
    TlsFailed(String),
    /// Anything else: connection refused, a 4xx or 5xx greeting, a lost connection.
    Failed(String),
}

/// Delivers `outgoing` to its domain: MX hosts in order, each address in turn, until
/// one session reaches MAIL FROM. Its replies then decide.
pub async fn attempt(
    config: &RelayConfig,
    resolver: &MxResolver,
    tls: &TlsConnector,
    domain: &str,
    outgoing: &Outgoing<'_>,
) -> AttemptReport {
    let (hosts, port) = match config.route(domain) {
        Some((host, port)) => (Ok(vec![host]), port),
        None => (resolver.hosts(domain).await, config.smtp_port),
    };
    let hosts = match hosts {
        Ok(hosts) => hosts,
        Err(RouteError::NoMail(why)) => {
            return AttemptReport::all(
                outgoing.recipients,
                AttemptResult::Bounced,
                &format!("550 5.1.2 {why}"),
            )
        }
        // RFC 7505 §4.2.
        Err(RouteError::NullMx(why)) => {
            return AttemptReport::all(
                outgoing.recipients,
                AttemptResult::Bounced,
                &format!("556 5.1.10 {why}"),
            )
        }
        Err(RouteError::Temporary(why)) => {
            return AttemptReport::all(outgoing.recipients, AttemptResult::Deferred, &why)
        }
    };
    let mut last_error = format!("{domain}: no MX host could be reached");
    for host in hosts {
        let addresses = match resolver.addresses(&host).await {
            Ok(addresses) => addresses,
            Err(RouteError::NoMail(why) | RouteError::NullMx(why) | RouteError::Temporary(why)) => {
                last_error = why;
                continue;
            }
        };
        if addresses.is_empty() {
            last_error = format!("{host}: the MX host has no address");
            continue;
        }
        for ip in addresses {
            let mut use_tls = config.starttls;
            loop {
                match session(
                    config,
                    tls,
                    &host,
                    SocketAddr::new(ip, port),
                    use_tls,
                    outgoing,
                )
                .await
                {
                    Ok(report) => return report,
                    Err(NextHost::TlsFailed(why)) if use_tls => {
                        tracing::info!(host, %ip, why, "STARTTLS failed; trying the same MX in plain text.");
                        use_tls = false;
                    }
                    Err(NextHost::TlsFailed(why) | NextHost::Failed(why)) => {
                        last_error = why;
                        break;
                    }
                }
            }
        }
    }
    AttemptReport::all(outgoing.recipients, AttemptResult::Deferred, &last_error)
}

/// A connection with its unread input.
struct Conn {
    stream: Box<dyn Io>,
    input: Vec<u8>,
    timeout: Duration,
}

/// The longest reply accepted, in bytes and in lines: a server sending more is broken
/// (or hostile, and would otherwise make the relay hold its endless reply in memory).
const MAX_REPLY: usize = 64 * 1024;
/// See [`MAX_REPLY`].
const MAX_REPLY_LINES: usize = 200;

impl Conn {
    async fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        let mut bytes = 0;
        loop {
            while let Some(end) = memchr::memchr(b'\n', &self.input) {
                bytes += end + 1;
                if lines.len() >= MAX_REPLY_LINES || bytes > MAX_REPLY {
                    return Err(invalid("reply too long"));
                }
                let raw: Vec<u8> = self.input.drain(..=end).collect();
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\r', '\n']);
                let code = line
                    .get(..3)
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| (200..600).contains(c))
                    .ok_or_else(|| invalid(&format!("not an SMTP reply: {line:.80}")))?;
                let more = line.as_bytes().get(3) == Some(&b'-');
                lines.push(line.get(4..).unwrap_or("").to_owned());
                if !more {
                    return Ok(Reply { code, lines });
                }
            }
            if self.input.len() > MAX_REPLY {
                return Err(invalid("reply too long"));
            }
            self.input.reserve(4096);
            let read = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.input))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out waiting for a reply",
                    )
                })??;
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out sending"))?
    }

    async fn command(&mut self, line: &str) -> std::io::Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

/// One session with one MX address.
async fn session(
    config: &RelayConfig,
    tls: &TlsConnector,
    host: &str,
    addr: SocketAddr,
    use_tls: bool,
    outgoing: &Outgoing<'_>,
) -> Result<AttemptReport, NextHost> {
    let ip = addr.ip();
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        NextHost::Failed(format!("{host}[{ip}]: {what}: {e}"))
    };
    let stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(failed("cannot connect", &e)),
        Err(_) => return Err(failed("cannot connect", &"timed out")),
    };
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream: Box::new(stream),
        input: Vec::new(),
        timeout: config.command_timeout,
    };
    let greeting = conn
        .read_reply()
        .await
        .map_err(|e| failed("no greeting", &e))?;
    if greeting.code != 220 {
        return Err(NextHost::Failed(format!(
            "{host}[{ip}] greeted with {}",
            greeting.text()
        )));
    }
    let mut ehlo = hello(&mut conn, &config.hostname)
        .await
        .map_err(|e| failed("EHLO failed", &e))?;
    let mut in_tls = false;
    if use_tls && offers(&ehlo, "STARTTLS") {
        let reply = conn
            .command("STARTTLS")
            .await
            .map_err(|e| failed("STARTTLS failed", &e))?;
        if reply.code == 220 {
            let name =
                ServerName::try_from(host.to_owned()).unwrap_or(ServerName::IpAddress(ip.into()));
            let plain = std::mem::replace(&mut conn.stream, Box::new(tokio::io::duplex(1).0));
            match tokio::time::timeout(config.command_timeout, tls.connect(name, plain)).await {
                Ok(Ok(stream)) => {
                    conn.stream = Box::new(stream);
                    conn.input.clear();
                    in_tls = true;
                }
                Ok(Err(e)) => {
                    return Err(NextHost::TlsFailed(format!(
                        "{host}[{ip}]: TLS handshake failed: {e}"
                    )))
                }
                Err(_) => {
                    return Err(NextHost::TlsFailed(format!(
                        "{host}[{ip}]: TLS handshake timed out"
                    )))
                }
            }
            ehlo = hello(&mut conn, &config.hostname)
                .await
                .map_err(|e| failed("EHLO in TLS failed", &e))?;
        }
    }
    ::metrics::counter!(crate::metrics::SESSIONS_TOTAL, "tls" => if in_tls { "yes" } else { "no" })
        .increment(1);
    let mut report = AttemptReport {
        mx: Some(host.to_owned()),
        tls: in_tls,
        recipients: Vec::new(),
    };
    match transaction(&mut conn, &ehlo, outgoing, &mut report).await {
        Ok(()) => {}
        Err(e) => {
            // The connection broke mid-transaction: whoever has no final answer yet
            // is tried again later.
            let why = format!("{host}[{ip}]: connection lost: {e}");
            for recipient in outgoing.recipients {
                if let Some(entry) = report
                    .recipients
                    .iter_mut()
                    .find(|(r, _, _)| r == recipient)
                {
                    if entry.1 == AttemptResult::Delivered {
                        entry.1 = AttemptResult::Deferred;
                        entry.2 = why.clone();
                    }
                } else {
                    report.recipients.push((
                        recipient.clone(),
                        AttemptResult::Deferred,
                        why.clone(),
                    ));
                }
            }
            return Ok(report);
        }
    }
    let _ = conn.command("QUIT").await;
    Ok(report)
}

/// EHLO, or HELO for a server that refuses it; the reply's lines are its extensions.
async fn hello(conn: &mut Conn, hostname: &str) -> std::io::Result<Reply> {
    let reply = conn.command(&format!("EHLO {hostname}")).await?;
    if reply.code == 250 {
        return Ok(reply);
    }
    let reply = conn.command(&format!("HELO {hostname}")).await?;
    if reply.code == 250 {
        Ok(Reply {
            code: 250,
            lines: Vec::new(),
        })
    } else {
        Err(invalid(&format!("HELO refused: {}", reply.text())))
    }
}

fn offers(ehlo: &Reply, extension: &str) -> bool {
    ehlo.lines.iter().skip(1).any(|line| {
        line.split_ascii_whitespace()
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case(extension))
    })
}

/// MAIL, RCPT per recipient, DATA. Fills `report` as replies come; an I/O error
/// leaves the ones without a final reply to the caller.
async fn transaction(
    conn: &mut Conn,
    ehlo: &Reply,
    outgoing: &Outgoing<'_>,
    report: &mut AttemptReport,
) -> std::io::Result<()> {
    let mut size = if offers(ehlo, "SIZE") {
        format!(" SIZE={}", outgoing.body.len())
    } else {
        String::new()
    };
    // Submission takes 8-bit bodies (it offers 8BITMIME); say so where the remote
    // understands it (RFC 6152 §3). A remote without it gets the bytes as they are,
    // which nearly every MX today accepts.
    if !outgoing.body.is_ascii() && offers(ehlo, "8BITMIME") {
        size.push_str(" BODY=8BITMIME");
    }
    let mail = conn
        .command(&format!("MAIL FROM:<{}>{size}", outgoing.sender))
        .await?;
    if mail.code != 250 {
        let result = mail.result();
        let result = if result == AttemptResult::Delivered {
            AttemptResult::Deferred
        } else {
            result
        };
        report.recipients = outgoing
            .recipients
            .iter()
            .map(|r| (r.clone(), result, format!("MAIL FROM: {}", mail.text())))
            .collect();
        let _ = conn.command("RSET").await;
        return Ok(());
    }
    let mut accepted = Vec::new();
    for recipient in outgoing.recipients {
        let reply = conn.command(&format!("RCPT TO:<{recipient}>")).await?;
        match reply.result() {
            AttemptResult::Delivered => accepted.push(recipient.clone()),
            result => report
                .recipients
                .push((recipient.clone(), result, reply.text())),
        }
    }
    if accepted.is_empty() {
        let _ = conn.command("RSET").await;
        return Ok(());
    }
    let data = conn.command("DATA").await?;
    let (last, result) = if data.code == 354 {
        conn.send(&pampa_ingest::conn::dot_stuffed(outgoing.body))
            .await?;
        let last = conn.read_reply().await?;
        // Only 250 accepts the message (RFC 5321 §4.3.2); any other 2xx is a broken
        // server, and the message is not taken as delivered.
        let result = match last.result() {
            AttemptResult::Delivered if last.code != 250 => AttemptResult::Deferred,
            result => result,
        };
        (last, result)
    } else {
        // The body was never sent: a refusal decides, anything else is tried again.
        let result = match data.result() {
            AttemptResult::Bounced => AttemptResult::Bounced,
            _ => AttemptResult::Deferred,
        };
        (data, result)
    };
    for recipient in accepted {
        report.recipients.push((recipient, result, last.text()));
    }
    Ok(())
}

/// The TLS client of opportunistic STARTTLS: any certificate is taken, since a
/// refused one would only send the mail in plain text instead (RFC 7435). The
/// handshake's signatures are still checked, with ring.
pub fn opportunistic_tls() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(config) => TlsConnector::from(Arc::new(config)),
        // ring's defaults always include a protocol version; this is unreachable.
        Err(_) => TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )),
    }
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn multi_line_replies_are_read_whole() {
        let (client, mut server) = tokio::io::duplex(1024);
        server
            .write_all(b"250-mx.example\r\n250-SIZE 100\r\n250 STARTTLS\r\n550 5.1.1 no\r\n")
            .await
            .unwrap();
        let mut conn = Conn {
            stream: Box::new(client),
            input: Vec::new(),
            timeout: Duration::from_secs(5),
        };
        let ehlo = conn.read_reply().await.unwrap();
        assert_eq!(ehlo.code, 250);
        assert!(offers(&ehlo, "STARTTLS") && offers(&ehlo, "size"));
        let refused = conn.read_reply().await.unwrap();
        assert_eq!(refused.result(), AttemptResult::Bounced);
        assert_eq!(refused.text(), "550 5.1.1 no");
    }
}
