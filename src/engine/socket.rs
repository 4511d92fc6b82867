//! Creating, tuning and binding one connection's RTP/RTCP UDP socket pair.
//!
//! Owns: socket options (non-blocking, DSCP, buffer sizes) and the bind.
//! Must not: choose ports (the pool does) or read and write packets (the worker does). It runs on
//! the control plane so that bind errors reach the caller synchronously.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

/// Options applied to every media socket.
#[derive(Debug, Clone)]
pub(super) struct SocketTuning {
    /// IPv4 TOS / IPv6 traffic class; 0 leaves the default.
    pub(super) dscp_tos: u8,
    /// SO_RCVBUF; 0 leaves the kernel default.
    pub(super) recv_buffer: usize,
    /// SO_SNDBUF; 0 leaves the kernel default.
    pub(super) send_buffer: usize,
}

/// The bound sockets of one connection.
pub(super) struct MediaSockets {
    /// RTP socket, on the even port.
    pub(super) rtp: UdpSocket,
    /// RTCP socket, on the RTP port + 1.
    pub(super) rtcp: UdpSocket,
    /// Local address of the RTP socket, as the kernel reports it.
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
    let rtp = bind_one(SocketAddr::new(ip, rtp_port), tuning)?;
    let rtcp = bind_one(SocketAddr::new(ip, rtcp_port), tuning)?;
    let local_rtp = rtp.local_addr()?;
    Ok(MediaSockets {
        rtp,
        rtcp,
        local_rtp,
    })
}

/// One non-blocking, tuned UDP socket bound to `address` (no SO_REUSEADDR: a taken port must
/// fail the bind).
fn bind_one(address: SocketAddr, tuning: &SocketTuning) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
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
        if let Err(error) = socket.set_recv_buffer_size(tuning.recv_buffer) {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            report_refusal(&LOGGED, "SO_RCVBUF", &error);
        }
    }
    if tuning.send_buffer != 0 {
        if let Err(error) = socket.set_send_buffer_size(tuning.send_buffer) {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            report_refusal(&LOGGED, "SO_SNDBUF", &error);
        }
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
