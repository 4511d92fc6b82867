//! Writing the model back as SDP text: [`SessionDescription::to_text`] (and the `Display`
//! impls of the description and the lines it is made of, which print the same text), in
//! canonical form (CRLF line ends, RFC 8866 line order).
//!
//! It prints what the model holds and nothing else, apart from the
//! mandatory lines a model may lack (`s=-`, `t=0 0`). It must not decide
//! what an SDP should contain: our offers and answers are built in
//! `negotiate`.
//!
//! The text is appended to a `String` directly rather than through `core::fmt`: every call's
//! answer is printed, and `write!` per line and per field (numbers through the formatter's
//! width and precision handling) was ~17,500 instructions of a call's setup under callgrind.

use std::fmt;

use super::{
    Attribute, Connection, MediaDescription, Origin, OriginAddress, OtherLine, RtpMap,
    SessionDescription,
};
use crate::text::{push_decimal, push_ip};

/// Session-level "other" lines that belong between s= and c=.
const SESSION_INFO_LINES: [char; 4] = ['i', 'u', 'e', 'p'];

/// What prints itself into SDP text; each `Display` below prints the same.
trait PushText {
    fn push_to(&self, out: &mut String);
}

impl PushText for str {
    fn push_to(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl PushText for String {
    fn push_to(&self, out: &mut String) {
        out.push_str(self);
    }
}

macro_rules! display_by_push_text {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut text = String::new();
                self.push_to(&mut text);
                f.write_str(&text)
            }
        }
    )*};
}

display_by_push_text!(
    SessionDescription,
    Origin,
    OriginAddress,
    Connection,
    Attribute,
    MediaDescription,
    RtpMap
);

impl SessionDescription {
    /// The SDP text, as `Display` prints it.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(320);
        self.push_to(&mut out);
        out
    }
}

impl PushText for SessionDescription {
    /// Canonical form: CRLF line ends, `v o s [i u e p] c? b* t+ [r z k ...] a*`,
    /// then each m= block.
    fn push_to(&self, out: &mut String) {
        push_line(out, 'v', "0");
        push_line(out, 'o', &self.origin);
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        push_line(out, 's', name);
        push_other(out, &self.other, |kind| SESSION_INFO_LINES.contains(&kind));
        if let Some(connection) = &self.connection {
            push_line(out, 'c', connection);
        }
        push_lines(out, 'b', &self.bandwidth);
        if self.times.is_empty() {
            push_line(out, 't', "0 0"); // t= is mandatory; "0 0" means unbounded
        }
        push_lines(out, 't', &self.times);
        push_other(out, &self.other, |kind| !SESSION_INFO_LINES.contains(&kind));
        push_lines(out, 'a', &self.attributes);
        for media in &self.media {
            media.push_to(out);
        }
    }
}

impl PushText for Origin {
    fn push_to(&self, out: &mut String) {
        out.push_str(&self.username);
        out.push(' ');
        push_decimal(out, self.session_id);
        out.push(' ');
        push_decimal(out, self.session_version);
        out.push(' ');
        self.address.push_to(out);
    }
}

impl PushText for OriginAddress {
    fn push_to(&self, out: &mut String) {
        out.push_str("IN ");
        match self {
            OriginAddress::Ip(ip) => {
                out.push_str(addrtype(ip.is_ipv6()));
                out.push(' ');
                push_ip(out, *ip);
            }
            OriginAddress::Name { ipv6, name } => {
                out.push_str(addrtype(*ipv6));
                out.push(' ');
                out.push_str(name);
            }
        }
    }
}

impl PushText for Connection {
    fn push_to(&self, out: &mut String) {
        out.push_str("IN ");
        out.push_str(addrtype(self.address.is_ipv6()));
        out.push(' ');
        push_ip(out, self.address);
    }
}

impl PushText for Attribute {
    fn push_to(&self, out: &mut String) {
        out.push_str(&self.name);
        if let Some(value) = &self.value {
            out.push(':');
            out.push_str(value);
        }
    }
}

impl PushText for MediaDescription {
    /// Canonical form: `m [i] c? b* [k ...] a*`.
    fn push_to(&self, out: &mut String) {
        out.push_str("m=");
        out.push_str(&self.media);
        out.push(' ');
        push_decimal(out, u64::from(self.port));
        if let Some(count) = self.port_count {
            out.push('/');
            push_decimal(out, u64::from(count));
        }
        out.push(' ');
        out.push_str(&self.protocol);
        for format in &self.formats {
            out.push(' ');
            out.push_str(format);
        }
        out.push_str("\r\n");
        push_other(out, &self.other, |kind| kind == 'i');
        if let Some(connection) = &self.connection {
            push_line(out, 'c', connection);
        }
        push_lines(out, 'b', &self.bandwidth);
        push_other(out, &self.other, |kind| kind != 'i');
        push_lines(out, 'a', &self.attributes);
    }
}

impl PushText for RtpMap {
    /// The attribute value, e.g. `101 telephone-event/8000`.
    fn push_to(&self, out: &mut String) {
        push_decimal(out, u64::from(self.payload_type));
        out.push(' ');
        out.push_str(&self.encoding_name);
        out.push('/');
        push_decimal(out, u64::from(self.clock_rate));
        if let Some(params) = &self.encoding_params {
            out.push('/');
            out.push_str(params);
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

fn push_line(out: &mut String, kind: char, value: &(impl PushText + ?Sized)) {
    out.push(kind);
    out.push('=');
    value.push_to(out);
    out.push_str("\r\n");
}

fn push_lines<T: PushText>(out: &mut String, kind: char, values: &[T]) {
    for value in values {
        push_line(out, kind, value);
    }
}

fn push_other(out: &mut String, lines: &[OtherLine], wanted: impl Fn(char) -> bool) {
    for line in lines.iter().filter(|line| wanted(line.kind)) {
        push_line(out, line.kind, &line.value);
    }
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
