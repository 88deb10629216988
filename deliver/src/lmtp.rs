//! The LMTP client (RFC 2033): hands copies to Dovecot's or Cyrus's lmtpd, over TCP or
//! a unix socket, through a capped pool of connections per server.
//!
//! One transaction carries every recipient of a message at one server: LHLO once per
//! connection, then MAIL, all RCPTs and DATA written together when the server offers
//! PIPELINING, and after the body **one reply per accepted recipient**, in RCPT order.
//! Written on tokio directly: no maintained crate speaks LMTP's per-recipient replies,
//! and the protocol is a handful of lines.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
    sync::Semaphore,
};

use crate::{location::LmtpAddress, metrics};

/// Anything LMTP runs over.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a transaction did not get its replies; every recipient is then tried again.
#[derive(Debug, thiserror::Error)]
pub enum LmtpError {
    /// The server cannot be reached, or the connection broke.
    #[error("LMTP {server}: {why}")]
    Unavailable {
        /// The server.
        server: String,
        /// What happened.
        why: String,
    },
}

/// One recipient's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptReply {
    /// The reply code.
    pub code: u16,
    /// The whole reply, for events and logs (`452 4.2.2 <bob> Quota exceeded`).
    pub text: String,
}

impl RcptReply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Whether the server said the mailbox is full: 552, or the enhanced codes 4.2.2
    /// and 5.2.2 (RFC 3463).
    pub fn is_over_quota(&self) -> bool {
        self.code == 552 || self.text.contains("4.2.2") || self.text.contains("5.2.2")
    }
}

struct Conn {
    stream: Box<dyn Io>,
    input: Vec<u8>,
    pipelining: bool,
    /// Set when the session lost its footing (a reply missing): never pooled again.
    broken: bool,
}

/// The connections of one server, at most `cap` at once.
struct Pool {
    idle: Mutex<Vec<Conn>>,
    slots: Arc<Semaphore>,
}

/// Every LMTP server's pool.
pub struct LmtpClient {
    pools: Mutex<HashMap<LmtpAddress, Arc<Pool>>>,
    cap: usize,
    timeout: Duration,
    lhlo: String,
}

impl LmtpClient {
    /// A client that opens at most `cap` connections per server, says `lhlo` in LHLO,
    /// and waits at most `timeout` for each reply.
    pub fn new(lhlo: &str, cap: usize, timeout: Duration) -> Self {
        LmtpClient {
            pools: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            timeout,
            lhlo: lhlo.to_owned(),
        }
    }

    fn pool(&self, server: &LmtpAddress) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(server.clone())
            .or_insert_with(|| {
                Arc::new(Pool {
                    idle: Mutex::new(Vec::new()),
                    slots: Arc::new(Semaphore::new(self.cap)),
                })
            })
            .clone()
    }

    /// Delivers `body` (CRLF line ends) to `recipients` at `server`: one reply per
    /// recipient, in order.
    pub async fn deliver(
        &self,
        server: &LmtpAddress,
        sender: &str,
        recipients: &[String],
        body: &[u8],
    ) -> Result<Vec<RcptReply>, LmtpError> {
        let name = match server {
            LmtpAddress::Tcp(hostport) => hostport.clone(),
            LmtpAddress::Unix(path) => path.display().to_string(),
        };
        let unavailable = |why: String| LmtpError::Unavailable {
            server: name.clone(),
            why,
        };
        let pool = self.pool(server);
        let _slot = pool
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let started = Instant::now();
        // A pooled connection starts with RSET: it proves the connection is alive (the
        // server may have closed it meanwhile; then a fresh one is opened) and clears
        // whatever an earlier transaction left. Once RSET is answered, a failure is the
        // server's and is not retried here: the body may have been taken.
        let pooled = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let alive = match pooled {
            Some(mut conn) => match self.reset(&mut conn).await {
                Ok(()) => Some(conn),
                Err(_) => None,
            },
            None => None,
        };
        let result = match alive {
            Some(mut conn) => self
                .transaction(&mut conn, sender, recipients, body)
                .await
                .map(|replies| (conn, replies)),
            None => self.fresh(server, sender, recipients, body).await,
        };
        ::metrics::histogram!(metrics::LMTP_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok((conn, replies)) => {
                // Only a connection with nothing left unread goes back: a stale reply
                // would be taken for the next transaction's.
                if !conn.broken && conn.input.is_empty() {
                    pool.idle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(conn);
                }
                Ok(replies)
            }
            Err(why) => Err(unavailable(why)),
        }
    }

    async fn fresh(
        &self,
        server: &LmtpAddress,
        sender: &str,
        recipients: &[String],
        body: &[u8],
    ) -> Result<(Conn, Vec<RcptReply>), String> {
        let mut conn = self.connect(server).await?;
        let replies = self
            .transaction(&mut conn, sender, recipients, body)
            .await?;
        Ok((conn, replies))
    }

    async fn connect(&self, server: &LmtpAddress) -> Result<Conn, String> {
        let connect = async {
            let stream: Box<dyn Io> = match server {
                LmtpAddress::Tcp(hostport) => {
                    let stream = TcpStream::connect(hostport.as_str()).await?;
                    let _ = stream.set_nodelay(true);
                    Box::new(stream)
                }
                LmtpAddress::Unix(path) => Box::new(UnixStream::connect(path).await?),
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut conn = Conn {
            stream,
            input: Vec::new(),
            pipelining: false,
            broken: false,
        };
        let greeting = self.read_reply(&mut conn).await?;
        if greeting.code != 220 {
            return Err(format!("greeted with {}", greeting.text));
        }
        self.send(&mut conn, format!("LHLO {}\r\n", self.lhlo).as_bytes())
            .await?;
        let lhlo = self.read_reply(&mut conn).await?;
        if lhlo.code != 250 {
            return Err(format!("LHLO refused: {}", lhlo.text));
        }
        conn.pipelining = lhlo.text.lines().any(|line| {
            line.get(4..)
                .is_some_and(|ext| ext.trim().eq_ignore_ascii_case("PIPELINING"))
        });
        Ok(conn)
    }

    async fn reset(&self, conn: &mut Conn) -> Result<(), String> {
        self.send(conn, b"RSET\r\n").await?;
        let reply = self.read_reply(conn).await?;
        if reply.code == 250 {
            Ok(())
        } else {
            Err(format!("RSET refused: {}", reply.text))
        }
    }

    /// MAIL, RCPTs, DATA, body; one reply per recipient.
    async fn transaction(
        &self,
        conn: &mut Conn,
        sender: &str,
        recipients: &[String],
        body: &[u8],
    ) -> Result<Vec<RcptReply>, String> {
        let mut commands = format!("MAIL FROM:<{sender}>\r\n");
        for recipient in recipients {
            commands.push_str(&format!("RCPT TO:<{recipient}>\r\n"));
        }
        commands.push_str("DATA\r\n");
        let (mail, rcpts, data) = if conn.pipelining {
            self.send(conn, commands.as_bytes()).await?;
            let mail = self.read_reply(conn).await?;
            let mut rcpts = Vec::with_capacity(recipients.len());
            for _ in recipients {
                rcpts.push(self.read_reply(conn).await?);
            }
            let data = self.read_reply(conn).await?;
            (mail, rcpts, data)
        } else {
            let mut lines = commands.split_inclusive("\r\n");
            let mut next = || lines.next().unwrap_or("").to_owned();
            self.send(conn, next().as_bytes()).await?;
            let mail = self.read_reply(conn).await?;
            let mut rcpts = Vec::with_capacity(recipients.len());
            for _ in recipients {
                self.send(conn, next().as_bytes()).await?;
                rcpts.push(self.read_reply(conn).await?);
            }
            self.send(conn, next().as_bytes()).await?;
            let data = self.read_reply(conn).await?;
            (mail, rcpts, data)
        };
        if !(200..300).contains(&mail.code) {
            if data.code == 354 {
                return Err("the server took DATA after refusing MAIL".to_owned());
            }
            // 503 is the server's view of the session, not of the sender: a state to
            // retry from, never a reason to refuse the copies for good.
            if mail.code == 503 || mail.code == 421 {
                return Err(format!("MAIL refused: {}", mail.text));
            }
            // Every RCPT and the DATA were refused in sequence; the sender was.
            return Ok(recipients.iter().map(|_| mail.clone()).collect());
        }
        let accepted: Vec<usize> = (0..rcpts.len())
            .filter(|&i| rcpts[i].is_success())
            .collect();
        if data.code == 354 && accepted.is_empty() {
            // RFC 2033 §4.2 wants 503 here; a server that takes DATA anyway would leave
            // a reply to the body that nobody reads.
            return Err("the server took DATA with no recipient accepted".to_owned());
        }
        if data.code != 354 {
            if accepted.is_empty() {
                return Ok(rcpts);
            }
            // Recipients were taken but the data was not: none of them got the copy.
            return Ok(rcpts
                .into_iter()
                .map(|r| if r.is_success() { data.clone() } else { r })
                .collect());
        }
        self.send(conn, &pampa_ingest::conn::dot_stuffed(body))
            .await?;
        let mut replies = rcpts;
        for (n, &i) in accepted.iter().enumerate() {
            match self.read_reply(conn).await {
                Ok(reply) => replies[i] = reply,
                Err(why) => {
                    // The copies answered so far are the server's; the rest are tried
                    // again (a copy the server kept without saying so carries the
                    // delivery id, for Sieve's duplicate test).
                    conn.broken = true;
                    for &rest in &accepted[n..] {
                        replies[rest] = RcptReply {
                            code: 451,
                            text: format!("451 4.4.2 no reply after the data: {why}"),
                        };
                    }
                    break;
                }
            }
        }
        Ok(replies)
    }

    async fn send(&self, conn: &mut Conn, bytes: &[u8]) -> Result<(), String> {
        tokio::time::timeout(self.timeout, async {
            conn.stream.write_all(bytes).await?;
            conn.stream.flush().await
        })
        .await
        .map_err(|_| "timed out sending".to_owned())?
        .map_err(|e| format!("write failed: {e}"))
    }

    /// One reply, multi-line ones whole (lines joined with `\n`).
    async fn read_reply(&self, conn: &mut Conn) -> Result<RcptReply, String> {
        let mut text = String::new();
        loop {
            while let Some(end) = conn.input.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = conn.input.drain(..=end).collect();
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\r', '\n']);
                let code = line
                    .get(..3)
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| (200..600).contains(c))
                    .ok_or_else(|| format!("not an LMTP reply: {line:.80}"))?;
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(RcptReply { code, text });
                }
            }
            if conn.input.len() > 64 * 1024 {
                return Err("reply too long".to_owned());
            }
            conn.input.reserve(4096);
            let read = tokio::time::timeout(self.timeout, conn.stream.read_buf(&mut conn.input))
                .await
                .map_err(|_| "timed out waiting for a reply".to_owned())?
                .map_err(|e| format!("read failed: {e}"))?;
            if read == 0 {
                return Err("the server closed the connection".to_owned());
            }
        }
    }
}

/// LF line ends as CRLF, for the wire (copies are built with LF, the Maildir way).
pub fn to_crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 40);
    let mut previous = 0u8;
    for &byte in body {
        if byte == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        previous = byte;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted LMTP server: greeting, LHLO with PIPELINING, then for each
    /// recipient the scripted RCPT reply, and after DATA the scripted final replies.
    async fn scripted(rcpt: Vec<&'static str>, finals: Vec<&'static str>) -> LmtpAddress {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"220 lmtp ready\r\n").await.unwrap();
            let mut input = Vec::new();
            let mut buf = [0u8; 4096];
            // LHLO
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                input.extend_from_slice(&buf[..n]);
                if input.ends_with(b"\r\n") {
                    break;
                }
            }
            stream
                .write_all(b"250-lmtp\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
                .await
                .unwrap();
            input.clear();
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                input.extend_from_slice(&buf[..n]);
                if input.ends_with(b"DATA\r\n") {
                    break;
                }
            }
            let mut replies = String::from("250 2.1.0 ok\r\n");
            for r in &rcpt {
                replies.push_str(r);
                replies.push_str("\r\n");
            }
            replies.push_str("354 go\r\n");
            stream.write_all(replies.as_bytes()).await.unwrap();
            input.clear();
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                input.extend_from_slice(&buf[..n]);
                if input.ends_with(b"\r\n.\r\n") {
                    break;
                }
            }
            let mut out = String::new();
            for f in &finals {
                out.push_str(f);
                out.push_str("\r\n");
            }
            stream.write_all(out.as_bytes()).await.unwrap();
            let _ = stream.read(&mut buf).await;
        });
        LmtpAddress::Tcp(addr.to_string())
    }

    #[tokio::test]
    async fn one_reply_per_accepted_recipient_in_order() {
        let server = scripted(
            vec!["250 2.1.5 ok", "550 5.1.1 no such user", "250 2.1.5 ok"],
            vec!["250 2.0.0 <a> saved", "452 4.2.2 <c> Quota exceeded"],
        )
        .await;
        let client = LmtpClient::new("test", 2, Duration::from_secs(5));
        let recipients = vec!["a@x".to_owned(), "b@x".to_owned(), "c@x".to_owned()];
        let replies = client
            .deliver(&server, "s@x", &recipients, b"Subject: x\r\n\r\n.dot\r\n")
            .await
            .unwrap();
        assert_eq!(
            replies.iter().map(|r| r.code).collect::<Vec<_>>(),
            [250, 550, 452]
        );
        assert!(replies[0].is_success());
        assert!(replies[1].is_permanent() && !replies[1].is_over_quota());
        assert!(replies[2].is_over_quota() && !replies[2].is_permanent());
    }

    #[tokio::test]
    async fn a_reply_missing_after_the_data_defers_only_the_unanswered() {
        let server = scripted(
            vec!["250 2.1.5 ok", "250 2.1.5 ok"],
            vec!["250 2.0.0 <a> saved"],
        )
        .await;
        let client = LmtpClient::new("test", 2, Duration::from_secs(1));
        let recipients = vec!["a@x".to_owned(), "b@x".to_owned()];
        let replies = client
            .deliver(&server, "s@x", &recipients, b"Subject: x\r\n\r\nbody\r\n")
            .await
            .unwrap();
        assert!(replies[0].is_success(), "the answered copy is the server's");
        assert_eq!(replies[1].code, 451, "{:?}", replies[1]);
        // The connection that lost its footing was not pooled.
        let pools = client.pools.lock().unwrap();
        assert!(pools.values().all(|p| p.idle.lock().unwrap().is_empty()));
    }

    #[tokio::test]
    async fn a_dead_server_is_unavailable() {
        let client = LmtpClient::new("test", 2, Duration::from_secs(2));
        let err = client
            .deliver(
                &LmtpAddress::Tcp("127.0.0.1:9".into()),
                "s@x",
                &["a@x".into()],
                b"x\r\n",
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
    }
}
