//! Datagrams in batches: `recvmmsg` and `sendmmsg` on a UDP worker's socket.
//!
//! Under load a worker's socket holds many queries at once (dnsperf keeps hundreds in
//! flight, so does a busy mail server's resolver). One system call per datagram each way
//! was a third of the server's CPU; reading up to [`BATCH`] queries with one call and
//! sending their answers with one more makes that per batch instead. When the socket
//! has only one query waiting, this is one call each way, as before.
//!
//! Written against `libc` by hand because neither tokio nor socket2 (the crates already
//! in the tree) offers the two calls, and `nix`'s wrappers would add a dependency for
//! about forty lines of FFI.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
};

use tokio::{io::Interest, net::UdpSocket};

/// Most datagrams read or sent with one call.
pub(crate) const BATCH: usize = 32;
/// The biggest query read. A query is a header, one question of at most 259 bytes and
/// an OPT record; anything near this size is not a DNS query, and arrives truncated
/// (see [`Batch::truncated`]).
const QUERY_BUFFER: usize = 4096;

/// Buffers for one worker: the queries read, and the answers to send.
pub(crate) struct Batch {
    queries: Vec<[u8; QUERY_BUFFER]>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    flags: Vec<libc::c_int>,
    /// The answers, by query index; `None`: nothing to send for that query.
    replies: Vec<Option<Vec<u8>>>,
    /// Spare answer buffers, so answers reuse their allocations.
    spare: Vec<Vec<u8>>,
    received: usize,
}

// SAFETY of the raw parts: `sockaddr_storage` is plain old data; the pointers handed to
// the kernel point into this struct's vectors, which are not resized while a call runs.
unsafe impl Send for Batch {}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch {
            queries: vec![[0; QUERY_BUFFER]; BATCH],
            // SAFETY: all-zero is a valid `sockaddr_storage`.
            addrs: vec![unsafe { zeroed() }; BATCH],
            addr_lens: vec![0; BATCH],
            lens: vec![0; BATCH],
            flags: vec![0; BATCH],
            replies: (0..BATCH).map(|_| None).collect(),
            spare: Vec::new(),
            received: 0,
        }
    }

    /// Reads what is waiting (up to [`BATCH`] datagrams) without blocking; `WouldBlock`
    /// when nothing is, which also clears the socket's readiness in tokio.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.clear_replies();
        let n = socket.try_io(Interest::READABLE, || {
            // SAFETY: zeroed iovecs and headers are valid, and are filled in below.
            let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            for i in 0..BATCH {
                iov[i].iov_base = self.queries[i].as_mut_ptr().cast();
                iov[i].iov_len = QUERY_BUFFER;
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iov[i];
                h.msg_iovlen = 1;
            }
            // SAFETY: every pointer is to a live buffer of the size given.
            let r = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = r as usize;
            for (i, h) in hdrs.iter().take(n).enumerate() {
                self.lens[i] = h.msg_len as usize;
                self.addr_lens[i] = h.msg_hdr.msg_namelen;
                self.flags[i] = h.msg_hdr.msg_flags;
            }
            Ok(n)
        })?;
        self.received = n;
        Ok(n)
    }

    /// Query `i` of the last [`Batch::recv`].
    pub(crate) fn query(&self, i: usize) -> &[u8] {
        &self.queries[i][..self.lens[i].min(QUERY_BUFFER)]
    }

    /// Whether query `i` was longer than the buffer (and so arrived cut short).
    pub(crate) fn truncated(&self, i: usize) -> bool {
        self.flags[i] & libc::MSG_TRUNC != 0
    }

    /// Who sent query `i`; `None` for an address family other than IPv4 and IPv6.
    pub(crate) fn peer(&self, i: usize) -> Option<SocketAddr> {
        let a = &self.addrs[i];
        match i32::from(a.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a `sockaddr_in`.
                let v4 =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a `sockaddr_in6`.
                let v6 =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(v6.sin6_addr.s6_addr),
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// A cleared buffer to write the answer to query `i` into; [`Batch::send`] sends it.
    pub(crate) fn reply_buffer(&mut self, i: usize) -> &mut Vec<u8> {
        let mut buf = self.replies[i]
            .take()
            .or_else(|| self.spare.pop())
            .unwrap_or_default();
        buf.clear();
        self.replies[i].insert(buf)
    }

    /// Sets the answer to query `i`.
    pub(crate) fn set_reply(&mut self, i: usize, bytes: Vec<u8>) {
        if let Some(old) = self.replies[i].replace(bytes) {
            self.spare.push(old);
        }
    }

    fn clear_replies(&mut self) {
        for r in &mut self.replies {
            if let Some(buf) = r.take() {
                self.spare.push(buf);
            }
        }
    }

    /// Sends the answers set since the last [`Batch::recv`], each to its query's sender:
    /// with `sendmmsg` while the socket takes them, then one by one (waiting) if it
    /// stops taking them. A datagram the kernel refuses is skipped.
    pub(crate) async fn send(&mut self, socket: &UdpSocket) {
        let ready: Vec<usize> = (0..self.received)
            .filter(|&i| self.replies[i].is_some())
            .collect();
        let mut done = 0;
        while done < ready.len() {
            let pending = &ready[done..];
            let sent = socket.try_io(Interest::WRITABLE, || {
                // SAFETY: zeroed iovecs and headers are valid, and are filled in below.
                let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
                let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
                for (k, &i) in pending.iter().enumerate() {
                    let reply = self.replies[i].as_deref().unwrap_or(&[]);
                    iov[k].iov_base = reply.as_ptr() as *mut libc::c_void;
                    iov[k].iov_len = reply.len();
                    let h = &mut hdrs[k].msg_hdr;
                    h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = self.addr_lens[i];
                    h.msg_iov = &mut iov[k];
                    h.msg_iovlen = 1;
                }
                // SAFETY: every pointer is to a live buffer of the size given.
                let r = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        hdrs.as_mut_ptr(),
                        pending.len() as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            });
            match sent {
                Ok(n) => done += n.max(1),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    for &i in pending {
                        if let (Some(reply), Some(peer)) = (&self.replies[i], self.peer(i)) {
                            if let Err(error) = socket.send_to(reply, peer).await {
                                tracing::debug!(%error, "Sending a DNS response failed.");
                            }
                        }
                    }
                    return;
                }
                Err(error) => {
                    // The first datagram was refused (an unreachable peer, a bad
                    // address): skip it and send the rest.
                    tracing::debug!(%error, "Sending a DNS response failed.");
                    done += 1;
                }
            }
        }
    }
}
