//! Receiving datagrams in batches with `recvmmsg(2)`, sending them with `sendmmsg(2)`.
//!
//! Owns: the preallocated buffers and source addresses of one batch, and the conversion of
//! socket addresses to and from the kernel's. One `recvmmsg` replaces a `recvfrom` per packet
//! plus the final one that only says "empty": when the kernel returns fewer datagrams than
//! asked for, the socket is drained (an edge-triggered epoll reports any datagram that arrives
//! after the call). One `sendmmsg` sends what a caller has gathered: the system call is paid
//! once, and a local peer is woken once for the lot rather than once a datagram.
//! Must not: allocate after construction, or interpret what it receives or sends.
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

/// Datagrams one `sendmmsg` call carries; [`send_each`] makes as many calls as it takes.
pub(crate) const SEND_BATCH: usize = 32;

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

/// Sends every datagram of `datagrams` (destination, bytes), in order, `SEND_BATCH` to a
/// `sendmmsg(2)` call; returns how many the kernel took. Best effort, as a `sendto` per
/// datagram would be: one the kernel refuses (a full socket buffer, an address it cannot reach)
/// goes to `refused` with the error, and the rest are still sent.
pub(crate) fn send_each<'a>(
    socket: &impl AsRawFd,
    datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
    mut refused: impl FnMut(SocketAddr, io::Error),
) -> usize {
    let mut datagrams = datagrams.into_iter();
    let mut sent = 0;
    loop {
        // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr are valid values (plain C
        // structs); the ones passed to the kernel are filled in below.
        let mut addrs: [libc::sockaddr_storage; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut iovecs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut count = 0;
        for (to, bytes) in datagrams.by_ref().take(SEND_BATCH) {
            iovecs[count].iov_base = bytes.as_ptr().cast_mut().cast();
            iovecs[count].iov_len = bytes.len();
            headers[count].msg_hdr.msg_name =
                (&mut addrs[count] as *mut libc::sockaddr_storage).cast();
            headers[count].msg_hdr.msg_namelen = write_socket_addr(&mut addrs[count], to);
            headers[count].msg_hdr.msg_iov = &mut iovecs[count];
            headers[count].msg_hdr.msg_iovlen = 1;
            count += 1;
        }
        if count == 0 {
            return sent;
        }
        let mut at = 0;
        while at < count {
            // SAFETY: `headers[at..count]` point at address storage and iovecs of this frame,
            // and the iovecs at the callers' byte slices, which outlive the call; the kernel
            // only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers[at..].as_mut_ptr(),
                    (count - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                sent += n as usize;
                at += n as usize;
                continue;
            }
            // The first datagram of `at..` was refused (the kernel reports an error only when
            // it sent none of them): skip it and send the rest.
            let error = if n < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::other("sendmmsg sent nothing")
            };
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if let Some(to) = to_socket_addr(&addrs[at]) {
                refused(to, error);
            }
            at += 1;
        }
    }
}

/// Writes `target` into `storage` as the kernel's socket address (what [`to_socket_addr`]
/// reads back); its length. The media workers' io_uring sends and [`send_each`] use it.
pub(crate) fn write_socket_addr(
    storage: &mut libc::sockaddr_storage,
    target: SocketAddr,
) -> libc::socklen_t {
    match target {
        SocketAddr::V4(address) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: address.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(address.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any socket address.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(address) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: address.port().to_be(),
                sin6_flowinfo: address.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: address.ip().octets(),
                },
                sin6_scope_id: address.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
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
    fn socket_addresses_are_written_as_the_kernel_reads_them() {
        for address in [
            "192.0.2.7:5004",
            "[2001:db8::1]:40000",
            "[::ffff:10.0.0.1]:9",
        ] {
            let address: SocketAddr = address.parse().expect("address");
            // SAFETY: all-zero sockaddr_storage is a valid value.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let length = write_socket_addr(&mut storage, address);
            let expected = match address {
                SocketAddr::V4(_) => std::mem::size_of::<libc::sockaddr_in>(),
                SocketAddr::V6(_) => std::mem::size_of::<libc::sockaddr_in6>(),
            };
            assert_eq!(length as usize, expected);
            assert_eq!(to_socket_addr(&storage), Some(address));
        }
    }

    #[test]
    fn a_send_batch_delivers_every_datagram_in_order_across_several_calls() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let socket = std::net::UdpSocket::bind(bind).unwrap();
            let peers: Vec<_> = (0..2)
                .map(|_| {
                    let peer = std::net::UdpSocket::bind(bind).unwrap();
                    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                        .unwrap();
                    peer
                })
                .collect();
            let to: Vec<_> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
            // More than one call's worth, alternating between the two peers.
            let payloads: Vec<Vec<u8>> =
                (0..SEND_BATCH + 9).map(|i| vec![i as u8; 10 + i]).collect();
            let sent = send_each(
                &socket,
                payloads
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (to[i % 2], &p[..])),
                |to, e| panic!("{to}: {e}"),
            );
            assert_eq!(sent, payloads.len());
            let mut buffer = [0; 100];
            for (i, payload) in payloads.iter().enumerate() {
                let (len, from) = peers[i % 2].recv_from(&mut buffer).unwrap();
                assert_eq!(
                    &buffer[..len],
                    &payload[..],
                    "datagram {i} whole and in order"
                );
                assert_eq!(from, socket.local_addr().unwrap());
            }
        }
    }

    #[test]
    fn a_datagram_the_kernel_refuses_is_reported_and_the_rest_still_go() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = peer.local_addr().unwrap();
        let ipv6: SocketAddr = "[::1]:9".parse().unwrap();
        // Larger than an IPv4 datagram can be (EMSGSIZE), and an IPv6 address on an IPv4
        // socket: the first and the middle of a batch.
        let too_big = vec![0; 70_000];
        let datagrams: Vec<(SocketAddr, &[u8])> = vec![
            (to, &too_big[..]),
            (to, b"one"),
            (ipv6, b"lost"),
            (to, b"two"),
            (to, b"three"),
        ];
        let mut refused = Vec::new();
        let sent = send_each(&socket, datagrams, |to, e| refused.push((to, e.kind())));
        assert_eq!(sent, 3);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0].0, to);
        assert_eq!(refused[1].0, ipv6);
        let mut buffer = [0; 100];
        for expected in [&b"one"[..], b"two", b"three"] {
            let (len, _) = peer.recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..len], expected);
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
