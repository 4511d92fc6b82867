//! Decimal text of IPv4 addresses, ports and other numbers without `core::fmt`: std's
//! `Display` for `Ipv4Addr` goes through width and precision handling (~1,200 instructions
//! under callgrind) and a call setup printed nine addresses (SDP origin and connection lines,
//! Contact, Via sent-by, `received`). [`Ipv4Text`] prints into a stack buffer; [`push_ip`]
//! appends any IP address that way for IPv4, [`push_decimal`] a number.
//!
//! And the reverse, for the same reason: [`parse_ipv4`] accepts exactly what std's `FromStr`
//! for `Ipv4Addr` accepts, in a fraction of the instructions (a call's setup reads a dozen URI
//! hosts and the SDP's addresses).

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

/// Appends a port's decimal digits.
pub fn push_port(out: &mut String, port: u16) {
    push_decimal(out, u64::from(port));
}

/// Appends a number's decimal digits, as `Display` prints it.
pub fn push_decimal(out: &mut String, value: u64) {
    out.push_str(decimal(value, &mut [0u8; 20]));
}

/// A number's decimal digits, as `Display` prints them, written at the end of `digits`.
pub fn decimal(value: u64, digits: &mut [u8; 20]) -> &str {
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&digits[at..]).unwrap_or_default()
}

/// Appends an IP address as std prints it (IPv4 without `core::fmt`).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(addr) => out.push_str(Ipv4Text::new(addr).as_str()),
        IpAddr::V6(addr) => {
            use std::fmt::Write;
            let _ = write!(out, "{addr}");
        }
    }
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

/// Dotted-decimal IPv4 as std parses it: four decimal octets of one to three digits, each at
/// most 255, no leading zero (a "010" could mean octal elsewhere), nothing else.
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut fields = s.as_bytes().split(|&b| b == b'.');
    for octet in &mut octets {
        *octet = decimal_octet(fields.next()?)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// One to three ASCII digits, at most 255, without a leading zero unless it is the only digit.
fn decimal_octet(digits: &[u8]) -> Option<u8> {
    if digits.is_empty() || digits.len() > 3 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let value = digits.iter().try_fold(0u16, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u16::from(b - b'0'))
    })?;
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_std_parses_them() {
        let cases = [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "1.20.199.200",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.",
            ".1.2.3",
            "1..2.3",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.0",
            "1.2.3.4 ",
            "+1.2.3.4",
            "1.2.3.-4",
            "1234.1.1.1",
            "example.com",
            "",
            "::1",
            "1.2.3.4:5060",
            "١.2.3.4",
        ];
        for case in cases {
            assert_eq!(parse_ipv4(case), case.parse::<Ipv4Addr>().ok(), "{case:?}");
        }
        // Every octet value, and the strings around each.
        for n in 0..=300u32 {
            let case = format!("10.{n}.0.1");
            assert_eq!(parse_ipv4(&case), case.parse::<Ipv4Addr>().ok(), "{case}");
        }
    }

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
        }
        for ip in ["2001:db8::1", "::ffff:10.0.0.1", "10.2.0.99", "::"] {
            let ip: IpAddr = ip.parse().expect("address");
            let mut text = String::new();
            push_ip(&mut text, ip);
            assert_eq!(text, ip.to_string());
        }
        for port in [0u16, 7, 10, 99, 5060, 65535] {
            let mut text = String::new();
            push_port(&mut text, port);
            assert_eq!(text, port.to_string());
        }
        for n in [0u64, 9, 10, 4611731400430051336, u64::MAX] {
            let mut text = String::new();
            push_decimal(&mut text, n);
            assert_eq!(text, n.to_string());
        }
        for addr in ["127.0.0.1:5060", "[2001:db8::1]:5061", "10.1.2.3:0"] {
            let addr: SocketAddr = addr.parse().expect("socket address");
            assert_eq!(host_port(addr), addr.to_string());
        }
    }
}
