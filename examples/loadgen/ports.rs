//! Local UDP sockets on the tool's address (`--local-ip`, 127.0.0.1 by default), taken from a
//! configurable port range.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// Hands out ports from `lo..=hi` on one address, skipping those already in use; wraps
/// around once.
pub struct PortRange {
    ip: Ipv4Addr,
    lo: u16,
    hi: u16,
    next: u16,
}

impl PortRange {
    /// Ports `lo..=hi` on `ip`.
    pub fn new(ip: Ipv4Addr, lo: u16, hi: u16) -> PortRange {
        PortRange {
            ip,
            lo,
            hi,
            next: lo,
        }
    }

    /// The address the sockets bind to.
    pub fn ip(&self) -> &Ipv4Addr {
        &self.ip
    }

    pub fn span(&self) -> usize {
        usize::from(self.hi - self.lo) + 1
    }

    fn advance(&mut self, by: u16) -> u16 {
        let p = self.next;
        let next = u32::from(self.next) + u32::from(by);
        self.next = if next > u32::from(self.hi) {
            self.lo
        } else {
            next as u16
        };
        p
    }

    /// One socket on a free port of the range.
    pub fn bind_one(&mut self, rcvbuf: usize) -> io::Result<UdpSocket> {
        for _ in 0..self.span() {
            let port = self.advance(1);
            if let Ok(s) = bind(self.ip, port, rcvbuf, false) {
                return Ok(s);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free port in {}-{}", self.lo, self.hi),
        ))
    }

    /// An RTP/RTCP pair on an even port p and p + 1.
    pub fn bind_pair(&mut self, rcvbuf: usize) -> io::Result<(UdpSocket, UdpSocket)> {
        if self.next % 2 == 1 {
            self.advance(1);
        }
        for _ in 0..self.span() / 2 {
            let port = self.advance(2);
            if port >= self.hi {
                continue;
            }
            let Ok(rtp) = bind(self.ip, port, rcvbuf, false) else {
                continue;
            };
            if let Ok(rtcp) = bind(self.ip, port + 1, 0, false) {
                return Ok((rtp, rtcp));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free even/odd port pair in {}-{}", self.lo, self.hi),
        ))
    }

    /// Binds `count` SO_REUSEPORT sockets to one port of the range.
    pub fn bind_reuseport(&mut self, count: usize, rcvbuf: usize) -> io::Result<Vec<UdpSocket>> {
        for _ in 0..self.span() {
            let port = self.advance(1);
            let mut group = Vec::with_capacity(count);
            for _ in 0..count {
                match bind(self.ip, port, rcvbuf, true) {
                    Ok(s) => group.push(s),
                    Err(_) => break,
                }
            }
            if group.len() == count {
                return Ok(group);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free port in {}-{}", self.lo, self.hi),
        ))
    }
}

/// A non-blocking UDP socket on 127.0.0.1:port; `rcvbuf` > 0 sets SO_RCVBUF and SO_SNDBUF.
pub fn bind(ip: Ipv4Addr, port: u16, rcvbuf: usize, reuseport: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if reuseport {
        s.set_reuse_port(true)?;
    }
    if rcvbuf > 0 {
        // SO_*BUFFORCE (CAP_NET_ADMIN) ignores net.core.rmem_max/wmem_max; without the
        // capability fall back to the capped options.
        if sys::set_buffer_force(s.as_raw_fd(), rcvbuf).is_err() {
            let _ = s.set_recv_buffer_size(rcvbuf);
            let _ = s.set_send_buffer_size(rcvbuf);
        }
    }
    s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, port)).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// An address one host can own and announce: not 0.0.0.0, multicast or broadcast.
pub fn is_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast())
}

/// `addr` as an IPv4 address the tool, bound to `local`, can reach: any address of
/// 127.0.0.0/8 from a loopback `local` (the default, and all the test suite uses), any unicast
/// IPv4 address from another (`--local-ip`: the generator on a machine of its own).
pub fn require_reachable(
    addr: SocketAddr,
    local: Ipv4Addr,
    what: &str,
) -> Result<SocketAddrV4, String> {
    match addr {
        SocketAddr::V4(a) if a.ip().is_loopback() || !local.is_loopback() => {
            if is_unicast(*a.ip()) {
                Ok(a)
            } else {
                Err(format!("{what} {addr} is not a unicast address"))
            }
        }
        SocketAddr::V4(_) => Err(format!(
            "{what} {addr} is not on loopback; from {local} the tool only reaches 127.0.0.0/8 \
             (give --local-ip this machine's address to run against another machine)"
        )),
        SocketAddr::V6(_) => Err(format!("{what} {addr} is not an IPv4 address")),
    }
}
