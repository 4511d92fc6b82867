//! Receiving datagrams in batches with `recvmmsg(2)`.
//!
//! Owns: the preallocated buffers and source addresses of one batch, and the conversion of
//! kernel socket addresses. One `recvmmsg` replaces a `recvfrom` per packet plus the final one
//! that only says "empty": when the kernel returns fewer datagrams than asked for, the socket is
//! drained (an edge-triggered epoll reports any datagram that arrives after the call).
//! Must not: allocate after construction, or interpret what it receives.
//!
//! The media workers take audio packets (the defaults: 32 of 2 KiB); SIP's UDP listeners take
//! whole datagrams of any size UDP allows (`sip::transport`'s batches of 16 × 64 KiB).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams a media worker takes per `recvmmsg` call.
pub(crate) const BATCH: usize = 32;
/// A media worker's buffer per datagram: any audio RTP packet with SRTP tag and header
/// extensions fits; a longer datagram is truncated and reported as such.
pub(crate) const DATAGRAM_BYTES: usize = 2048;

/// Storage for one batch of up to `N` datagrams of `BYTES` each, reused for every call.
pub(crate) struct RecvBatch<const N: usize = BATCH, const BYTES: usize = DATAGRAM_BYTES> {
    /// `N` buffers of `BYTES`, one after the other (on the heap, never on the stack: a SIP
    /// batch is a megabyte).
    data: Box<[u8]>,
    /// Per datagram: length and source, valid for the first `count` entries after `receive`.
    received: [(usize, Option<SocketAddr>, bool); N],
}

impl<const N: usize, const BYTES: usize> RecvBatch<N, BYTES> {
    /// The most datagrams one `receive` takes.
    pub(crate) const CAPACITY: usize = N;

    pub(crate) fn new() -> RecvBatch<N, BYTES> {
        RecvBatch {
            data: vec![0; N * BYTES].into_boxed_slice(),
            received: [(0, None, false); N],
        }
    }

    /// Receives up to `max` (≤ `N`) datagrams without blocking; the number received.
    /// `Ok(0)` never happens: an empty socket is `WouldBlock`. Fewer than `max` means the
    /// socket was empty when the kernel returned.
    pub(crate) fn receive(&mut self, socket: &impl AsRawFd, max: usize) -> io::Result<usize> {
        let max = max.clamp(1, N);
        // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr are valid values (plain C
        // structs); their pointers are filled in below before the call.
        let mut addrs: [libc::sockaddr_storage; N] = unsafe { std::mem::zeroed() };
        let mut iovecs: [libc::iovec; N] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
        for (i, buffer) in self.data.chunks_exact_mut(BYTES).take(max).enumerate() {
            iovecs[i].iov_base = buffer.as_mut_ptr().cast();
            iovecs[i].iov_len = BYTES;
            headers[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            headers[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            headers[i].msg_hdr.msg_iov = &mut iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `headers[..max]` point at live buffers and address storage owned by `self`
        // and this frame; the kernel writes at most `iov_len` / `msg_namelen` bytes into them.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                max as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let truncated = headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let len = (headers[i].msg_len as usize).min(BYTES);
            self.received[i] = (len, to_socket_addr(&addrs[i]), truncated);
        }
        Ok(n)
    }

    /// Datagram `i` of the last batch: its buffer (writable, for in-place SRTP), length, source
    /// and whether it was longer than the buffer.
    pub(crate) fn datagram(&mut self, i: usize) -> (&mut [u8], usize, Option<SocketAddr>, bool) {
        let (len, source, truncated) = self.received[i];
        (&mut self.data[i * BYTES..][..BYTES], len, source, truncated)
    }
}

/// The address the kernel wrote into `storage`; `None` for families other than IPv4 and IPv6.
pub(crate) fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_every_queued_datagram_with_its_source() {
        for (bind, peer_bind) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let socket = std::net::UdpSocket::bind(bind).unwrap();
            socket.set_nonblocking(true).unwrap();
            let peer = std::net::UdpSocket::bind(peer_bind).unwrap();
            for i in 0..5u8 {
                peer.send_to(&[i; 100], socket.local_addr().unwrap())
                    .unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut batch = RecvBatch::<BATCH, DATAGRAM_BYTES>::new();
            let n = batch.receive(&socket, BATCH).unwrap();
            assert_eq!(n, 5);
            for i in 0..n {
                let (data, len, source, truncated) = batch.datagram(i);
                assert_eq!(len, 100);
                assert!(!truncated);
                assert_eq!(data[0], i as u8, "in arrival order");
                assert_eq!(source, Some(peer.local_addr().unwrap()));
            }
            let empty = batch.receive(&socket, BATCH).unwrap_err();
            assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn an_oversized_datagram_is_flagged_truncated() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(&[7; DATAGRAM_BYTES + 10], socket.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut batch = RecvBatch::<BATCH, DATAGRAM_BYTES>::new();
        assert_eq!(batch.receive(&socket, 4).unwrap(), 1);
        let (_, len, _, truncated) = batch.datagram(0);
        assert_eq!(len, DATAGRAM_BYTES);
        assert!(truncated);
    }
}
