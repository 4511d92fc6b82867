//! Reading SDP text into the model: [`SessionDescription::parse`], the
//! attribute-value parsers ([`RtpMap::parse`], [`RtcpAttribute::parse`]) and
//! the small text helpers the other files share (`parse_decimal`).
//!
//! Lenient where real peers are sloppy, strict where a guess could send
//! media to the wrong place (see the `sdp` module doc). It must never panic,
//! whatever the input, and must not judge what an SDP asks for: whether a
//! codec, transport or crypto line is acceptable is decided in `negotiate`
//! and `crypto`.

use std::net::{IpAddr, Ipv6Addr};

use super::error::quote;
use super::print::addrtype;
use super::{
    Attribute, Connection, MediaDescription, Origin, OriginAddress, OtherLine, RtcpAttribute,
    RtpMap, SdpError, SessionDescription,
};

/// Letters (besides o, s, t) that only exist at session level; seen after an
/// m= line they are filed at session level rather than rejected.
const SESSION_ONLY_LINES: [char; 5] = ['u', 'e', 'p', 'r', 'z'];

impl SessionDescription {
    /// Parses an SDP body.
    ///
    /// Tolerates LF-only line ends, trailing whitespace, blank lines,
    /// unknown lines and attributes (kept), a missing s= and odd line order
    /// inside a block. Rejects: a first line other than `v=0`, a missing o=,
    /// lines not of the form `x=...`, malformed o=/m=/c= lines, non-numeric
    /// ports ([`SdpError::Syntax`] with the 1-based line number), and c=
    /// addresses that are not IP literals ([`SdpError::BadAddress`]).
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(index, raw)| (index + 1, raw.trim_end()));
        let first = lines.next().map_or("", |(_, line)| line);
        if first != "v=0" {
            return Err(syntax(1, format!("expected v=0, found {}", quote(first))));
        }
        let mut parser = Parser::default();
        for (number, line) in lines.filter(|(_, line)| !line.is_empty()) {
            parser.line(number, line)?;
        }
        parser.finish()
    }
}

impl RtpMap {
    /// Parses an rtpmap attribute value; `None` if malformed.
    pub fn parse(value: &str) -> Option<RtpMap> {
        let (pt, encoding) = value.trim().split_once(' ')?;
        let payload_type = parse_decimal::<u8>(pt).filter(|pt| *pt <= 127)?;
        let mut parts = encoding.trim().splitn(3, '/');
        let encoding_name = parts.next().filter(|name| !name.is_empty())?;
        let clock_rate = parts.next().and_then(parse_decimal::<u32>)?;
        Some(RtpMap {
            payload_type,
            encoding_name: encoding_name.to_string(),
            clock_rate,
            encoding_params: parts.next().map(str::to_string),
        })
    }
}

impl RtcpAttribute {
    /// Parses an rtcp attribute value; `None` if malformed (including a
    /// host name address, which we could not use without DNS).
    pub fn parse(value: &str) -> Option<RtcpAttribute> {
        let value = value.trim();
        let (port, rest) = value.split_once(' ').unwrap_or((value, ""));
        let port = parse_decimal::<u16>(port)?;
        let address = match rest.trim() {
            "" => None,
            rest => Some(parse_connection_value(rest).ok()?.address),
        };
        Some(RtcpAttribute { port, address })
    }
}

impl Attribute {
    fn parse(text: &str) -> Attribute {
        match text.split_once(':') {
            Some((name, value)) => Attribute::new(name, Some(value.to_string())),
            None => Attribute::flag(text),
        }
    }
}

/// Accumulates lines after `v=0`.
#[derive(Default)]
struct Parser {
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<Connection>,
    bandwidth: Vec<String>,
    times: Vec<String>,
    attributes: Vec<Attribute>,
    other: Vec<OtherLine>,
    media: Vec<MediaDescription>,
}

impl Parser {
    fn line(&mut self, number: usize, line: &str) -> Result<(), SdpError> {
        let (kind, value) = split_line(number, line)?;
        match kind {
            'v' => Err(syntax(number, "v= may only be the first line".to_string())),
            'o' if self.origin.is_some() => Err(syntax(number, "second o= line".to_string())),
            'o' => {
                self.origin = Some(parse_origin(number, value)?);
                Ok(())
            }
            's' => {
                self.session_name.get_or_insert_with(|| value.to_string());
                Ok(())
            }
            't' => {
                self.times.push(value.to_string());
                Ok(())
            }
            'm' => {
                self.media.push(parse_media_line(number, value)?);
                Ok(())
            }
            'c' => {
                let connection = parse_connection(number, value)?;
                // Several c= lines only occur for multicast; the first one wins.
                match self.media.last_mut() {
                    Some(media) => media.connection.get_or_insert(connection),
                    None => self.connection.get_or_insert(connection),
                };
                Ok(())
            }
            _ => {
                self.block_line(kind, value);
                Ok(())
            }
        }
    }

    /// b=, a= and other lines go to the current block: the last m= seen, or
    /// the session before any m= (and always for session-only letters).
    fn block_line(&mut self, kind: char, value: &str) {
        let session_only = SESSION_ONLY_LINES.contains(&kind);
        let media = self.media.last_mut().filter(|_| !session_only);
        let (bandwidth, attributes, other) = match media {
            Some(m) => (&mut m.bandwidth, &mut m.attributes, &mut m.other),
            None => (&mut self.bandwidth, &mut self.attributes, &mut self.other),
        };
        match kind {
            'b' => bandwidth.push(value.to_string()),
            'a' => attributes.push(Attribute::parse(value)),
            _ => other.push(OtherLine {
                kind,
                value: value.to_string(),
            }),
        }
    }

    fn finish(self) -> Result<SessionDescription, SdpError> {
        let origin = self
            .origin
            .ok_or_else(|| syntax(2, "missing o= line".to_string()))?;
        Ok(SessionDescription {
            origin,
            session_name: self.session_name.unwrap_or_default(),
            connection: self.connection,
            bandwidth: self.bandwidth,
            times: self.times,
            attributes: self.attributes,
            media: self.media,
            other: self.other,
        })
    }
}

/// Splits `x=value` into its type letter and value.
fn split_line(number: usize, line: &str) -> Result<(char, &str), SdpError> {
    match line.as_bytes() {
        [kind, b'=', ..] if kind.is_ascii_alphabetic() => {
            // Both leading bytes are ASCII, so index 2 is a char boundary.
            Ok((char::from(*kind), &line[2..]))
        }
        _ => Err(syntax(
            number,
            format!("expected <letter>=<value>, found {}", quote(line)),
        )),
    }
}

/// `o=<username> <sess-id> <sess-version> IN <IP4|IP6> <address>`
fn parse_origin(number: usize, value: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [username, id, version, nettype, addrtype, address] = fields[..] else {
        return Err(syntax(
            number,
            format!("o= needs 6 fields, found {}", fields.len()),
        ));
    };
    let number_field = |field: &str, what: &str| {
        parse_decimal::<u64>(field).ok_or_else(|| {
            syntax(
                number,
                format!("o= {what} {} is not a number", quote(field)),
            )
        })
    };
    let session_id = number_field(id, "session id")?;
    let session_version = number_field(version, "session version")?;
    let ipv6 = parse_net_and_addrtype(number, nettype, addrtype)?;
    let ip = match crate::text::parse_ipv4(address) {
        Some(v4) => Ok(IpAddr::V4(v4)),
        None => address.parse::<IpAddr>(),
    };
    let address = match ip {
        Ok(ip) => OriginAddress::Ip(ip),
        Err(_) => OriginAddress::Name {
            ipv6,
            name: address.to_string(),
        },
    };
    Ok(Origin {
        username: username.to_string(),
        session_id,
        session_version,
        address,
    })
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`
fn parse_media_line(number: usize, value: &str) -> Result<MediaDescription, SdpError> {
    let mut fields = value.split_whitespace();
    let (Some(media), Some(port_field), Some(protocol)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(syntax(
            number,
            "m= needs <media> <port> <proto> <formats>".to_string(),
        ));
    };
    let (port, count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(count)),
        None => (port_field, None),
    };
    let bad_port = || {
        syntax(
            number,
            format!("m= port {} is not 0-65535", quote(port_field)),
        )
    };
    let port = parse_decimal::<u16>(port).ok_or_else(bad_port)?;
    let port_count = match count {
        Some(count) => Some(parse_decimal::<u16>(count).ok_or_else(bad_port)?),
        None => None,
    };
    let formats: Vec<String> = fields.map(str::to_string).collect();
    // RFC 8866 requires a format; some stacks omit it on rejected (port 0) lines.
    if formats.is_empty() && port != 0 {
        return Err(syntax(number, "m= line lists no formats".to_string()));
    }
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        port_count,
        protocol: protocol.to_string(),
        formats,
        connection: None,
        bandwidth: Vec::new(),
        attributes: Vec::new(),
        other: Vec::new(),
    })
}

/// `c=IN <IP4|IP6> <address>[/<ttl>][/<count>]`, with the line number for errors.
fn parse_connection(number: usize, value: &str) -> Result<Connection, SdpError> {
    parse_connection_value(value).map_err(|error| match error {
        SdpError::Syntax { reason, .. } => syntax(number, reason),
        SdpError::BadAddress(reason) => SdpError::BadAddress(format!("line {number}: {reason}")),
        other => other,
    })
}

/// `IN <IP4|IP6> <address>[/...]` (shared by c= and a=rtcp). Errors carry
/// line 0; [`parse_connection`] puts the real number in.
fn parse_connection_value(value: &str) -> Result<Connection, SdpError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [nettype, kind, address] = fields[..] else {
        return Err(syntax(
            0,
            format!("c= needs 3 fields, found {}", fields.len()),
        ));
    };
    let ipv6 = parse_net_and_addrtype(0, nettype, kind)?;
    // Multicast c= lines carry /ttl and /count suffixes that unicast RTP ignores.
    let literal = address.split('/').next().unwrap_or(address);
    let ip = if ipv6 {
        literal.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
    } else {
        crate::text::parse_ipv4(literal).map(IpAddr::V4)
    };
    let address = ip.ok_or_else(|| {
        SdpError::BadAddress(format!(
            "{} is not an {} literal (host names are not supported)",
            quote(address),
            addrtype(ipv6)
        ))
    })?;
    Ok(Connection { address })
}

/// Checks `IN` and returns whether the address type is IP6.
fn parse_net_and_addrtype(number: usize, nettype: &str, addrtype: &str) -> Result<bool, SdpError> {
    let reason = match (nettype, addrtype) {
        ("IN", "IP4") => return Ok(false),
        ("IN", "IP6") => return Ok(true),
        ("IN", other) => format!("address type {} is not IP4 or IP6", quote(other)),
        (other, _) => format!("network type {} is not IN", quote(other)),
    };
    // Line 0 means the caller adds the line number itself.
    Err(SdpError::BadAddress(match number {
        0 => reason,
        _ => format!("line {number}: {reason}"),
    }))
}

/// Parses an unsigned decimal made of ASCII digits only (`str::parse` alone
/// would also take a leading '+').
pub(super) fn parse_decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn syntax(line: usize, reason: String) -> SdpError {
    SdpError::Syntax { line, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::tests::*;

    #[test]
    fn connection_ttl_suffix_is_dropped() {
        let sdp = parse(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\nc=IN IP4 233.252.0.1/127/3\r\n",
        ));
        assert_eq!(
            sdp.media[0].connection,
            Some(Connection {
                address: "233.252.0.1".parse().expect("literal")
            })
        );
    }

    #[test]
    fn parser_rejects_bad_input_with_line_numbers() {
        let cases: [(&str, usize); 7] = [
            ("", 1),
            ("v=1\r\n", 1),
            ("o=x 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", 1),
            ("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio\r\n", 4),
            (
                "v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 6o00 RTP/AVP 0\r\n",
                5,
            ),
            (
                "v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
                3,
            ),
            ("v=0\r\no=x one 1 IN IP4 1.2.3.4\r\n", 2),
        ];
        for (text, line) in cases {
            match SessionDescription::parse(text) {
                Err(SdpError::Syntax { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let missing_origin = SessionDescription::parse("v=0\r\ns=-\r\n");
        assert!(matches!(
            missing_origin,
            Err(SdpError::Syntax { line: 2, .. })
        ));
        let no_formats =
            SessionDescription::parse("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP\r\n");
        assert!(matches!(no_formats, Err(SdpError::Syntax { line: 3, .. })));
        let rejected_no_formats = parse("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=video 0 RTP/AVP\r\n");
        assert!(rejected_no_formats.media[0].formats.is_empty());
    }

    #[test]
    fn host_name_in_connection_is_bad_address() {
        let err = SessionDescription::parse(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\nc=IN IP4 media.example.com\r\n",
        ))
        .expect_err("host name c=");
        assert_eq!(
            err,
            SdpError::BadAddress(
                "line 7: 'media.example.com' is not an IP4 literal (host names are not supported)"
                    .to_string()
            )
        );
        let wrong_family = SessionDescription::parse(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\nc=IN IP6 10.0.0.1\r\n",
        ));
        assert!(matches!(wrong_family, Err(SdpError::BadAddress(_))));
    }
}
