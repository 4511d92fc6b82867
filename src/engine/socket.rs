//! Creating, tuning and binding one connection's RTP/RTCP UDP socket pair.
//!
//! Owns: socket options (non-blocking, DSCP, buffer sizes with *FORCE when permitted,
//! SO_PRIORITY, SO_BUSY_POLL / SO_PREFER_BUSY_POLL / SO_BUSY_POLL_BUDGET) and the bind. Every
//! option the kernel refuses (no capability, old kernel) is logged once and skipped.
//! Must not: choose ports (the pool does) or read and write packets (the worker does). It runs on
//! the control plane so that bind errors reach the caller synchronously.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

/// Options applied to every media socket (the default: none, the kernel's own).
#[derive(Debug, Clone, Default)]
pub(super) struct SocketTuning {
    /// IPv4 TOS / IPv6 traffic class; 0 leaves the default.
    pub(super) dscp_tos: u8,
    /// SO_RCVBUF; 0 leaves the kernel default.
    pub(super) recv_buffer: usize,
    /// SO_SNDBUF; 0 leaves the kernel default.
    pub(super) send_buffer: usize,
    /// SO_PRIORITY (0–6 without CAP_NET_ADMIN); None leaves the default.
    pub(super) priority: Option<u32>,
    /// SO_BUSY_POLL in µs (and SO_PREFER_BUSY_POLL); 0 = off.
    pub(super) busy_poll_us: u32,
    /// SO_BUSY_POLL_BUDGET (packets per busy-poll pass); 0 leaves the default.
    pub(super) busy_poll_budget: u32,
}

impl SocketTuning {
    /// The RTCP socket's: the same marking, the kernel's buffers and no busy polling. It
    /// carries a report every few seconds (nothing with rtcp-mux); the options would only cost
    /// system calls on every call's setup.
    fn for_rtcp(&self) -> SocketTuning {
        SocketTuning {
            recv_buffer: 0,
            send_buffer: 0,
            busy_poll_us: 0,
            busy_poll_budget: 0,
            ..self.clone()
        }
    }
}

/// The bound sockets of one connection.
pub(super) struct MediaSockets {
    /// RTP socket, on the even port.
    pub(super) rtp: UdpSocket,
    /// RTCP socket, on the RTP port + 1.
    pub(super) rtcp: UdpSocket,
    /// Local address of the RTP socket: the address it was bound to (an explicit port, so
    /// no `getsockname` is needed to learn it).
    pub(super) local_rtp: SocketAddr,
}

/// Binds `ip:rtp_port` and `ip:rtp_port+1`, non-blocking and tuned. An `AddrInUse` error means
/// another socket holds one of the two ports.
pub(super) fn bind_pair(
    ip: IpAddr,
    rtp_port: u16,
    tuning: &SocketTuning,
) -> io::Result<MediaSockets> {
    let rtcp_port = rtp_port.checked_add(1).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "RTP port has no RTCP port above it",
        )
    })?;
    let local_rtp = SocketAddr::new(ip, rtp_port);
    let rtp = bind_one(local_rtp, tuning)?;
    let rtcp = bind_one(SocketAddr::new(ip, rtcp_port), &tuning.for_rtcp())?;
    Ok(MediaSockets {
        rtp,
        rtcp,
        local_rtp,
    })
}

/// Datagrams a reused pair may hold from its previous connection: the last packets its peer
/// sent before it heard the BYE (a few). More means that peer is still sending: a 20 ms
/// stream that went on through the pair's 0.5 s rest leaves 25.
const STALE_LIMIT: usize = 8;

/// Reads away what arrived on an idle pair since its connection ended. False when either
/// socket held more than [`STALE_LIMIT`] datagrams: the old peer is still sending, and the
/// pair must not carry a new call now.
pub(super) fn discard_stale(sockets: &MediaSockets) -> bool {
    if !anything_queued(sockets) {
        return true;
    }
    [&sockets.rtp, &sockets.rtcp].into_iter().all(|socket| {
        // A datagram longer than the buffer is truncated and dropped whole.
        let mut scrap = [0u8; 1];
        for _ in 0..=STALE_LIMIT {
            match socket.recv_from(&mut scrap) {
                Ok(_) => {}
                // WouldBlock: empty. Another error (an ICMP error queued for an earlier send)
                // is consumed by the read; the next read goes on.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => {}
            }
        }
        false
    })
}

/// Whether either socket of the pair has a datagram or an error queued: one `poll` with no
/// wait for the two, where reading each until it is empty takes two `recvfrom`s that fail —
/// and a pair is almost always empty when it is handed out again. True also when `poll`
/// itself fails: the reads then find out.
fn anything_queued(sockets: &MediaSockets) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = [&sockets.rtp, &sockets.rtcp].map(|socket| libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `fds` is an array of two initialised pollfd that outlives the call, and its
    // length is passed with it; a zero timeout never blocks.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    ready != 0
}

/// One non-blocking, tuned UDP socket bound to `address` (no SO_REUSEADDR: a taken port must
/// fail the bind).
fn bind_one(address: SocketAddr, tuning: &SocketTuning) -> io::Result<UdpSocket> {
    // Non-blocking (and close-on-exec, which socket2 adds) from the socket call itself: no
    // fcntl round trips, two fewer system calls per socket on the call setup path.
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM.nonblocking(),
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() && address.ip().is_unspecified() {
        // `::` serves IPv4 peers too (as v4-mapped addresses), whatever the sysctl default.
        socket.set_only_v6(false)?;
    }
    apply_tuning(&socket, address, tuning);
    socket.bind(&address.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// Sets DSCP and buffer sizes. A refusal (container without the capability, clamped limits) is
/// not fatal: media still flows, only without the marking or the larger buffer.
fn apply_tuning(socket: &Socket, address: SocketAddr, tuning: &SocketTuning) {
    if tuning.dscp_tos != 0 {
        let tos = u32::from(tuning.dscp_tos);
        let marked = match address {
            SocketAddr::V4(_) => socket.set_tos_v4(tos),
            // A dual-stack socket needs both: TCLASS marks IPv6 packets, TOS v4-mapped ones.
            SocketAddr::V6(_) => socket
                .set_tclass_v6(tos)
                .and_then(|()| socket.set_tos_v4(tos).or(Ok(()))),
        };
        if let Err(error) = marked {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            report_refusal(&LOGGED, "IP_TOS/IPV6_TCLASS", &error);
        }
    }
    if tuning.recv_buffer != 0 {
        // *FORCE passes net.core.rmem_max with CAP_NET_ADMIN; without it the plain option is
        // clamped to the sysctl (the .deb's sysctl drop-in raises it).
        let forced = set_int(
            socket,
            libc::SO_RCVBUFFORCE,
            tuning.recv_buffer as libc::c_int,
        );
        if forced.is_err() {
            if let Err(error) = socket.set_recv_buffer_size(tuning.recv_buffer) {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                report_refusal(&LOGGED, "SO_RCVBUF", &error);
            }
        }
    }
    if tuning.send_buffer != 0 {
        let forced = set_int(
            socket,
            libc::SO_SNDBUFFORCE,
            tuning.send_buffer as libc::c_int,
        );
        if forced.is_err() {
            if let Err(error) = socket.set_send_buffer_size(tuning.send_buffer) {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                report_refusal(&LOGGED, "SO_SNDBUF", &error);
            }
        }
    }
    if let Some(priority) = tuning.priority {
        if let Err(error) = socket.set_priority(priority) {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            report_refusal(&LOGGED, "SO_PRIORITY", &error);
        }
    }
    if tuning.busy_poll_us != 0 {
        if let Err(error) = socket.set_busy_poll(tuning.busy_poll_us) {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            report_refusal(&LOGGED, "SO_BUSY_POLL", &error);
        }
        if let Err(error) = set_int(socket, libc::SO_PREFER_BUSY_POLL, 1) {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            report_refusal(&LOGGED, "SO_PREFER_BUSY_POLL", &error);
        }
        if tuning.busy_poll_budget != 0 {
            let budget = tuning.busy_poll_budget.min(i32::MAX as u32) as libc::c_int;
            if let Err(error) = set_int(socket, libc::SO_BUSY_POLL_BUDGET, budget) {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                report_refusal(&LOGGED, "SO_BUSY_POLL_BUDGET", &error);
            }
        }
    }
}

/// `setsockopt(SOL_SOCKET, option, value)` for the options socket2 does not wrap.
fn set_int(socket: &Socket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd owned by `socket`, a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Warns about a refused option the first time, then only at debug: every call would repeat it.
fn report_refusal(logged: &AtomicBool, option: &str, error: &io::Error) {
    if logged.swap(true, Ordering::Relaxed) {
        tracing::debug!(option, %error, "media socket option refused");
    } else {
        tracing::warn!(option, %error, "media socket option refused, continuing without it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No option set: the kernel's defaults.
    fn untuned() -> SocketTuning {
        SocketTuning::default()
    }

    #[test]
    fn a_reused_pair_is_emptied_unless_its_old_peer_is_still_sending() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let pair = (32_000..33_000)
            .step_by(2)
            .find_map(|port| bind_pair(ip, port, &untuned()).ok())
            .expect("a free pair");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        let rtcp = pair.rtcp.local_addr().expect("rtcp");
        assert!(discard_stale(&pair), "nothing arrived");
        // A report on the RTCP socket alone is found (the check looks at both sockets).
        peer.send_to(&[0x81; 60], rtcp).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(anything_queued(&pair), "the RTCP socket's datagram is seen");
        assert!(discard_stale(&pair), "a late report is read away");
        assert!(!anything_queued(&pair), "and the pair is empty again");
        for _ in 0..3 {
            peer.send_to(&[0x80; 172], pair.local_rtp).expect("send");
        }
        peer.send_to(&[0x81; 60], rtcp).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(discard_stale(&pair), "a few late packets are read away");
        let mut buf = [0u8; 16];
        for socket in [&pair.rtp, &pair.rtcp] {
            let error = socket.recv_from(&mut buf).expect_err("emptied");
            assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        }
        for _ in 0..=STALE_LIMIT {
            peer.send_to(&[0x80; 172], pair.local_rtp).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!discard_stale(&pair), "a stream still arriving");
    }

    #[test]
    fn a_bound_pair_is_non_blocking_on_adjacent_ports() {
        let tuning = untuned();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let pair = (30_000..31_000)
            .step_by(2)
            .find_map(|port| bind_pair(ip, port, &tuning).ok())
            .expect("a free pair");
        assert_eq!(
            pair.rtcp.local_addr().expect("rtcp").port(),
            pair.local_rtp.port() + 1
        );
        let mut buf = [0u8; 16];
        for socket in [&pair.rtp, &pair.rtcp] {
            let error = socket.recv_from(&mut buf).expect_err("nothing sent");
            assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn the_rtcp_socket_keeps_the_kernels_buffers() {
        fn recv_buffer(socket: &UdpSocket) -> usize {
            socket2::SockRef::from(socket)
                .recv_buffer_size()
                .expect("SO_RCVBUF")
        }
        let ip = IpAddr::from([127, 0, 0, 1]);
        let plain = untuned();
        let bind = |tuning: &SocketTuning| {
            (31_000..32_000)
                .step_by(2)
                .find_map(|port| bind_pair(ip, port, tuning).ok())
                .expect("a free pair")
        };
        let default = recv_buffer(&bind(&plain).rtp);
        // Asking for the default size: the kernel doubles what it is given (and allows it
        // without privileges, being within rmem_max), so the tuned socket reports twice that.
        let tuned = SocketTuning {
            recv_buffer: default,
            ..plain
        };
        let pair = bind(&tuned);
        assert!(recv_buffer(&pair.rtp) > default, "the RTP socket is tuned");
        assert_eq!(recv_buffer(&pair.rtcp), default, "the RTCP socket is not");
    }
}
