//! The two clamd commands the stage needs, `zPING` and `zINSTREAM`, and their replies.
//!
//! Written by hand rather than with the `clamav-client` crate, although that crate is
//! lean (it only pulls in tokio): the stage has to tell apart "could not connect",
//! "connection lost" and "clamd answered ERROR" for its retry metrics, and when clamd
//! stops a stream at `StreamMaxLength` it answers `INSTREAM size limit exceeded. ERROR`
//! and closes, so our next write fails with a broken pipe while the explanation is
//! still waiting to be read. The crate returns that write error and the answer is
//! lost; here a failed write is followed by reading the reply. The protocol itself is
//! small: a `z`-prefixed command ends with NUL, INSTREAM data goes as chunks each led
//! by a 4-byte big-endian length, a zero length ends the stream, and clamd answers
//! one NUL-terminated line per command and closes the connection.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{AntivirusError, ClamdAddress};

/// Bytes per INSTREAM chunk. clamd reads each chunk whole into memory; 64 KiB keeps
/// the round trips few and the buffers small.
const CHUNK: usize = 64 * 1024;

/// The longest reply we read. Real replies are a line or a few (one per signature
/// with `AllMatchScan`); anything longer is not clamd.
const MAX_REPLY: usize = 64 * 1024;

/// One detection: the signature and the reply line that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Detection {
    /// The signature name, such as `Eicar-Test-Signature.UNOFFICIAL`.
    pub signature: String,
    /// clamd's line, such as `stream: Eicar-Test-Signature.UNOFFICIAL FOUND`.
    pub reply: String,
}

/// What clamd said about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ScanReply {
    /// `stream: OK`.
    Clean,
    /// One or more `stream: <signature> FOUND`.
    Infected(Vec<Detection>),
}

/// Sends `zPING` and expects `PONG`.
pub(super) async fn ping(address: &ClamdAddress) -> Result<(), AntivirusError> {
    let reply = match connect(address).await? {
        Conn::Tcp(mut s) => command(address, &mut s, b"zPING\0").await?,
        #[cfg(unix)]
        Conn::Unix(mut s) => command(address, &mut s, b"zPING\0").await?,
    };
    let text = String::from_utf8_lossy(&reply);
    if text.trim_end_matches(['\0', '\n']).trim() == "PONG" {
        Ok(())
    } else {
        Err(AntivirusError::UnexpectedReply {
            reply: text.into_owned(),
        })
    }
}

/// Streams `body` to clamd with `zINSTREAM` and parses its answer.
pub(super) async fn instream(
    address: &ClamdAddress,
    body: &[u8],
) -> Result<ScanReply, AntivirusError> {
    let reply = match connect(address).await? {
        Conn::Tcp(mut s) => stream(address, &mut s, body).await?,
        #[cfg(unix)]
        Conn::Unix(mut s) => stream(address, &mut s, body).await?,
    };
    parse_reply(&reply)
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

async fn connect(address: &ClamdAddress) -> Result<Conn, AntivirusError> {
    let unreachable = |source| AntivirusError::Unreachable {
        address: address.clone(),
        source,
    };
    match address {
        ClamdAddress::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(unreachable)?;
            // Chunk headers are tiny writes; don't let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            Ok(Conn::Tcp(stream))
        }
        #[cfg(unix)]
        ClamdAddress::Unix(path) => Ok(Conn::Unix(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(unreachable)?,
        )),
        #[cfg(not(unix))]
        ClamdAddress::Unix(_) => Err(unreachable(io::Error::new(
            io::ErrorKind::Unsupported,
            "unix sockets are not supported on this platform",
        ))),
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    address: &ClamdAddress,
    s: &mut S,
    cmd: &[u8],
) -> Result<Vec<u8>, AntivirusError> {
    let sent = s.write_all(cmd).await;
    finish(address, s, sent).await
}

async fn stream<S: AsyncRead + AsyncWrite + Unpin>(
    address: &ClamdAddress,
    s: &mut S,
    body: &[u8],
) -> Result<Vec<u8>, AntivirusError> {
    let sent = send_stream(s, body).await;
    finish(address, s, sent).await
}

async fn send_stream<S: AsyncWrite + Unpin>(s: &mut S, body: &[u8]) -> io::Result<()> {
    s.write_all(b"zINSTREAM\0").await?;
    for chunk in body.chunks(CHUNK) {
        // A chunk is at most CHUNK bytes, so its length always fits in the u32 header.
        let len = chunk.len() as u32;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(chunk).await?;
    }
    s.write_all(&0u32.to_be_bytes()).await?;
    s.flush().await
}

/// Reads the reply after a command was sent, or tried to be: clamd answers an
/// over-long stream and closes while we are still writing, so a failed write is only
/// an error when no reply follows it.
async fn finish<S: AsyncRead + Unpin>(
    address: &ClamdAddress,
    s: &mut S,
    sent: io::Result<()>,
) -> Result<Vec<u8>, AntivirusError> {
    let read = read_reply(s).await;
    match (sent, read) {
        (_, Ok(reply)) if !reply.is_empty() => Ok(reply),
        (Err(source), _) | (Ok(()), Err(source)) => Err(AntivirusError::Unreachable {
            address: address.clone(),
            source,
        }),
        (Ok(()), Ok(_)) => Err(AntivirusError::Closed {
            address: address.clone(),
        }),
    }
}

/// Reads until clamd closes the connection (it does after every `z` command that is
/// not inside `IDSESSION`), keeping at most `MAX_REPLY` bytes.
async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(reply);
        }
        if reply.len() + n > MAX_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "clamd's reply is longer than 64 KiB",
            ));
        }
        reply.extend_from_slice(&buf[..n]);
    }
}

/// Parses clamd's answer to INSTREAM: NUL-terminated lines (newline-terminated from
/// clamd versions or proxies that ignore the `z` prefix), each `stream: OK`,
/// `stream: <signature> FOUND` or `<reason> ERROR`. Any ERROR wins: a partial scan is
/// no verdict.
pub(super) fn parse_reply(reply: &[u8]) -> Result<ScanReply, AntivirusError> {
    let text = String::from_utf8_lossy(reply);
    let unexpected = || AntivirusError::UnexpectedReply {
        reply: text.clone().into_owned(),
    };
    let mut clean = false;
    let mut found: Vec<Detection> = Vec::new();
    let lines = text
        .split(['\0', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty());
    for line in lines {
        if line == "ERROR" || line.ends_with(" ERROR") {
            return Err(AntivirusError::Clamd {
                reply: line.to_owned(),
            });
        }
        // clamd prefixes the object name (`stream` for INSTREAM); inside IDSESSION the
        // request number comes first (`1: stream: OK`). Keep what follows the last
        // `stream: `.
        let verdict = line
            .rsplit_once("stream: ")
            .map(|(_, verdict)| verdict)
            .ok_or_else(unexpected)?;
        if verdict == "OK" {
            clean = true;
        } else if let Some(signature) = verdict.strip_suffix(" FOUND") {
            let signature = signature.trim();
            if signature.is_empty() || signature.contains(char::is_whitespace) {
                return Err(unexpected());
            }
            if !found.iter().any(|d| d.signature == signature) {
                found.push(Detection {
                    signature: signature.to_owned(),
                    reply: line.to_owned(),
                });
            }
        } else {
            return Err(unexpected());
        }
    }
    if !found.is_empty() {
        Ok(ScanReply::Infected(found))
    } else if clean {
        Ok(ScanReply::Clean)
    } else {
        Err(unexpected())
    }
}
