//! Writing the model back as SDP text: the `Display` impls of
//! [`SessionDescription`] and the lines it is made of, in canonical form
//! (CRLF line ends, RFC 8866 line order).
//!
//! It prints what the model holds and nothing else, apart from the
//! mandatory lines a model may lack (`s=-`, `t=0 0`). It must not decide
//! what an SDP should contain: our offers and answers are built in
//! `negotiate`.

use std::fmt;

use super::{
    Attribute, Connection, MediaDescription, Origin, OriginAddress, OtherLine, RtpMap,
    SessionDescription,
};

/// Session-level "other" lines that belong between s= and c=.
const SESSION_INFO_LINES: [char; 4] = ['i', 'u', 'e', 'p'];

impl fmt::Display for SessionDescription {
    /// Canonical form: CRLF line ends, `v o s [i u e p] c? b* t+ [r z k ...] a*`,
    /// then each m= block.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_line(f, 'v', "0")?;
        write_line(f, 'o', &self.origin)?;
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        write_line(f, 's', name)?;
        write_other(f, &self.other, |kind| SESSION_INFO_LINES.contains(&kind))?;
        if let Some(connection) = &self.connection {
            write_line(f, 'c', connection)?;
        }
        write_lines(f, 'b', &self.bandwidth)?;
        if self.times.is_empty() {
            write_line(f, 't', "0 0")?; // t= is mandatory; "0 0" means unbounded
        }
        write_lines(f, 't', &self.times)?;
        write_other(f, &self.other, |kind| !SESSION_INFO_LINES.contains(&kind))?;
        write_lines(f, 'a', &self.attributes)?;
        self.media.iter().try_for_each(|m| write!(f, "{m}"))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.username, self.session_id, self.session_version, self.address
        )
    }
}

impl fmt::Display for OriginAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginAddress::Ip(ip) => write!(
                f,
                "IN {} {}",
                addrtype(ip.is_ipv6()),
                crate::text::IpText(*ip)
            ),
            OriginAddress::Name { ipv6, name } => write!(f, "IN {} {name}", addrtype(*ipv6)),
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IN {} {}",
            addrtype(self.address.is_ipv6()),
            crate::text::IpText(self.address)
        )
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}:{value}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl fmt::Display for MediaDescription {
    /// Canonical form: `m [i] c? b* [k ...] a*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(count) = self.port_count {
            write!(f, "/{count}")?;
        }
        write!(f, " {}", self.protocol)?;
        self.formats
            .iter()
            .try_for_each(|fmt| write!(f, " {fmt}"))?;
        f.write_str("\r\n")?;
        write_other(f, &self.other, |kind| kind == 'i')?;
        if let Some(connection) = &self.connection {
            write_line(f, 'c', connection)?;
        }
        write_lines(f, 'b', &self.bandwidth)?;
        write_other(f, &self.other, |kind| kind != 'i')?;
        write_lines(f, 'a', &self.attributes)
    }
}

impl fmt::Display for RtpMap {
    /// The attribute value, e.g. `101 telephone-event/8000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding_name, self.clock_rate
        )?;
        match &self.encoding_params {
            Some(params) => write!(f, "/{params}"),
            None => Ok(()),
        }
    }
}

pub(super) fn addrtype(ipv6: bool) -> &'static str {
    if ipv6 {
        "IP6"
    } else {
        "IP4"
    }
}

fn write_line(f: &mut fmt::Formatter<'_>, kind: char, value: impl fmt::Display) -> fmt::Result {
    write!(f, "{kind}={value}\r\n")
}

fn write_lines<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    kind: char,
    values: &[T],
) -> fmt::Result {
    values
        .iter()
        .try_for_each(|value| write_line(f, kind, value))
}

fn write_other(
    f: &mut fmt::Formatter<'_>,
    lines: &[OtherLine],
    wanted: impl Fn(char) -> bool,
) -> fmt::Result {
    lines
        .iter()
        .filter(|line| wanted(line.kind))
        .try_for_each(|line| write_line(f, line.kind, &line.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::tests::*;
    use crate::sdp::Direction;

    #[test]
    fn round_trip_parse_print_parse() {
        let first = parse(RICH_SDP);
        let printed = first.to_string();
        let second = parse(&printed);
        assert_eq!(first, second);
        assert_eq!(printed, RICH_SDP, "RICH_SDP is already in canonical order");
        assert_eq!(
            first.origin.address,
            OriginAddress::Name {
                ipv6: false,
                name: "gw.example.com".to_string()
            }
        );
        assert_eq!(first.origin.session_id, 4611731400430051336);
        let audio = &first.media[1];
        assert_eq!(audio.port, 4000);
        assert_eq!(audio.port_count, Some(2));
        assert_eq!(audio.formats, ["8", "0", "101"]);
        assert_eq!(
            audio.connection.map(|c| c.address),
            Some("2001:db8::1".parse().expect("literal"))
        );
        assert_eq!(audio.bandwidth, ["TIAS:64000"]);
        assert_eq!(audio.attribute("x-unknown"), Some(None));
        assert_eq!(audio.attribute("ptime"), Some(Some("20")));
        assert_eq!(audio.fmtp(101), Some("0-15"));
        assert_eq!(audio.rtpmaps().len(), 2);
        assert_eq!(first.direction(), Some(Direction::SendRecv));
    }

    #[test]
    fn printer_uses_crlf_and_canonical_order() {
        // a= before c= and b= inside blocks, LF only, trailing blanks.
        let messy = "v=0\n\
            o=x 1 2 IN IP4 10.0.0.1  \n\
            a=recvonly\n\
            t=0 0\n\
            c=IN IP4 10.0.0.1\n\
            m=audio 7000 RTP/AVP 0\n\
            a=ptime:20\n\
            b=AS:64\t\n\
            c=IN IP4 10.0.0.2\n\
            \n";
        let sdp = parse(messy);
        assert_eq!(sdp.session_name, "");
        assert_eq!(
            sdp.to_string(),
            "v=0\r\no=x 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
             a=recvonly\r\nm=audio 7000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\nb=AS:64\r\na=ptime:20\r\n"
        );
    }
}
