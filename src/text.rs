//! Decimal text of IPv4 addresses and ports without `core::fmt`: std's `Display` for
//! `Ipv4Addr` goes through width and precision handling (~1,200 instructions under callgrind)
//! and a call setup printed nine addresses (SDP origin and connection lines, Contact, Via
//! sent-by, `received`). [`Ipv4Text`] prints into a stack buffer; [`IpText`] is a `Display`
//! for any IP address that takes that path for IPv4.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// An IPv4 address in dotted decimal, in a stack buffer.
pub struct Ipv4Text {
    buf: [u8; 15],
    len: usize,
}

impl Ipv4Text {
    pub fn new(addr: Ipv4Addr) -> Ipv4Text {
        let mut text = Ipv4Text {
            buf: [0; 15],
            len: 0,
        };
        for (i, octet) in addr.octets().into_iter().enumerate() {
            if i > 0 {
                text.push(b'.');
            }
            if octet >= 100 {
                text.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                text.push(b'0' + octet / 10 % 10);
            }
            text.push(b'0' + octet % 10);
        }
        text
    }

    fn push(&mut self, byte: u8) {
        // At most 4 × 3 digits and 3 dots: 15 bytes.
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and dots were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// An IP address printed as std prints it, IPv4 without `core::fmt`'s number formatting.
pub struct IpText(pub IpAddr);

impl fmt::Display for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(addr) => f.write_str(Ipv4Text::new(addr).as_str()),
            IpAddr::V6(addr) => write!(f, "{addr}"),
        }
    }
}

/// Appends a port's decimal digits.
pub fn push_port(out: &mut String, port: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = port;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// `a.b.c.d:port` or `[v6]:port`, as `SocketAddr`'s `Display` prints it.
pub fn host_port(addr: SocketAddr) -> String {
    let mut out = String::with_capacity(21);
    match addr {
        SocketAddr::V4(a) => out.push_str(Ipv4Text::new(*a.ip()).as_str()),
        SocketAddr::V6(a) => {
            out.push('[');
            out.push_str(&a.ip().to_string());
            out.push(']');
        }
    }
    out.push(':');
    push_port(&mut out, addr.port());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports_print_as_std_prints_them() {
        for addr in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.0.255",
            "192.168.100.9",
            "255.255.255.255",
            "1.20.199.200",
        ] {
            let ip: Ipv4Addr = addr.parse().expect("address");
            assert_eq!(Ipv4Text::new(ip).as_str(), addr);
            assert_eq!(IpText(IpAddr::V4(ip)).to_string(), addr);
        }
        let v6: IpAddr = "2001:db8::1".parse().expect("address");
        assert_eq!(IpText(v6).to_string(), "2001:db8::1");
        for port in [0u16, 7, 10, 99, 5060, 65535] {
            let mut text = String::new();
            push_port(&mut text, port);
            assert_eq!(text, port.to_string());
        }
        for addr in ["127.0.0.1:5060", "[2001:db8::1]:5061", "10.1.2.3:0"] {
            let addr: SocketAddr = addr.parse().expect("socket address");
            assert_eq!(host_port(addr), addr.to_string());
        }
    }
}
