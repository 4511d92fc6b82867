//! Local UDP sockets on 127.0.0.1, taken from a configurable port range.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Hands out ports from `lo..=hi`, skipping those already in use; wraps around once.
pub struct PortRange {
    lo: u16,
    hi: u16,
    next: u16,
}

impl PortRange {
    pub fn new(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi, next: lo }
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
            if let Ok(s) = bind(port, rcvbuf, false) {
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
            let Ok(rtp) = bind(port, rcvbuf, false) else {
                continue;
            };
            if let Ok(rtcp) = bind(port + 1, 0, false) {
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
                match bind(port, rcvbuf, true) {
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
pub fn bind(port: u16, rcvbuf: usize, reuseport: bool) -> io::Result<UdpSocket> {
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
    s.bind(&SocketAddr::V4(SocketAddrV4::new(LOOPBACK, port)).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Refuses anything but an IPv4 loopback address: this tool never sends off the machine.
pub fn require_loopback(addr: SocketAddr, what: &str) -> Result<SocketAddrV4, String> {
    match addr {
        SocketAddr::V4(a) if a.ip().is_loopback() => Ok(a),
        _ => Err(format!(
            "{what} {addr} is not an IPv4 loopback address; loadgen only talks to 127.0.0.0/8"
        )),
    }
}
