//! Reading bytes: [`parse`] for one complete message, [`frame`] for finding message boundaries
//! in a stream, and the start-line and header-section parsing behind them (line ends, folding,
//! compact names, list splitting, Content-Length).
//!
//! Must not: panic on any input, buffer without bound (see [`MAX_HEAD_LEN`],
//! [`MAX_STREAM_BODY`]), or parse typed header values up front: those are parsed on demand by
//! the accessors in `headers`.

use std::borrow::Cow;

use super::headers::known_header;
use super::lex::{excerpt, is_token, trim_lws};
use super::{Header, Headers, Method, ParseError, Request, Response, SipMessage, Uri};

/// Largest header section `frame` waits for before declaring the stream broken.
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// Largest body `frame` accepts on a stream; SIP bodies are small, and a peer announcing more is
/// either broken or trying to make us buffer without bound.
pub const MAX_STREAM_BODY: usize = 4 * 1024 * 1024;

/// Parses one complete datagram / framed message. Accepts CRLF and bare-LF line ends, header
/// folding, `Name : value`, compact names, any-case names, several values per line, IPv6 literals.
/// The body is `Content-Length` bytes (error if fewer present; extra bytes ignored on UDP); if
/// Content-Length is absent the rest of the buffer is the body.
/// Leading CRLFs (stream keep-alives, RFC 3261 §7.5) are skipped.
pub fn parse(buf: &[u8]) -> Result<SipMessage, ParseError> {
    let start = leading_crlf_len(buf);
    // Without an empty line the whole buffer is the header section and the body is empty.
    let (head_end, body_start) = find_head_end(buf, start).unwrap_or((buf.len(), buf.len()));
    let head = std::str::from_utf8(&buf[start..head_end])
        .map_err(|_| ParseError::StartLine("message head is not valid UTF-8".to_string()))?;
    let (start_line, header_text) = match head.find('\n') {
        Some(nl) => (&head[..nl], &head[nl + 1..]),
        None => (head, ""),
    };
    let start_line = start_line.strip_suffix('\r').unwrap_or(start_line);
    // As in a header line (see `parse_headers`), a CR that does not end the line is in no
    // start line's grammar, and the printer could not write it back.
    if start_line.contains('\r') {
        return Err(ParseError::StartLine(
            "CR inside the start line".to_string(),
        ));
    }
    let start_line = parse_start_line(start_line)?;
    let headers = parse_headers(header_text)?;

    let available = &buf[body_start..];
    let body = match content_length(headers.get_all("Content-Length"))? {
        Some(len) if len > available.len() => {
            return Err(ParseError::ContentLength(format!(
                "{len} announced, {} present",
                available.len()
            )))
        }
        Some(len) => available[..len].to_vec(),
        None => available.to_vec(),
    };

    Ok(match start_line {
        StartLine::Request(method, uri) => SipMessage::Request(Request {
            method,
            uri,
            headers,
            body,
        }),
        StartLine::Response(status, reason) => SipMessage::Response(Response {
            status,
            reason: reason.to_string(),
            headers,
            body,
        }),
    })
}

/// Result of looking for one message at the front of a TCP stream buffer (RFC 3261 §18.3).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message occupies `buf[..len]` (leading CRLF keep-alives are included in `len`).
    Complete(usize),
    /// Need more bytes.
    Incomplete,
    /// Only CRLF keep-alive bytes so far: consume `len` bytes.
    KeepAlive(usize),
    /// Can never become a valid message (e.g. no/invalid Content-Length on a stream, headers
    /// too large > 64 KiB).
    Invalid(ParseError),
}

/// Finds the first message in a stream buffer. Only the framing is checked (header section end
/// and Content-Length); the message itself is checked by [`parse`] on `buf[..len]`.
/// A body larger than [`MAX_STREAM_BODY`] is `Invalid`.
pub fn frame(buf: &[u8]) -> Frame {
    let start = leading_crlf_len(buf);
    if start == buf.len() {
        return if start == 0 {
            Frame::Incomplete
        } else {
            Frame::KeepAlive(start)
        };
    }
    let too_large = || Frame::Invalid(ParseError::HeaderSyntax("header section too large".into()));
    let Some((head_end, body_start)) = find_head_end(buf, start) else {
        if buf.len() - start > MAX_HEAD_LEN {
            return too_large();
        }
        // Binary garbage (e.g. a TLS hello on a plain port) is rejected now rather than after
        // 64 KiB; a UTF-8 sequence cut off at the end of the buffer is just incomplete.
        if let Err(e) = std::str::from_utf8(&buf[start..]) {
            if e.error_len().is_some() {
                return Frame::Invalid(ParseError::StartLine(
                    "message head is not valid UTF-8".to_string(),
                ));
            }
        }
        return Frame::Incomplete;
    };
    if head_end - start > MAX_HEAD_LEN {
        return too_large();
    }
    let Ok(head) = std::str::from_utf8(&buf[start..head_end]) else {
        return Frame::Invalid(ParseError::StartLine(
            "message head is not valid UTF-8".to_string(),
        ));
    };
    // Skip the start line: it cannot carry a Content-Length and cannot be folded.
    let header_text = head.find('\n').map_or("", |nl| &head[nl + 1..]);
    let lengths = LogicalLines::new(header_text).filter_map(|line| {
        let (name, value) = line.text.split_once(':')?;
        let name = trim_lws(name);
        let is_length =
            name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l");
        is_length.then_some(value)
    });
    let body_len = match content_length(lengths) {
        Ok(Some(len)) => len,
        Ok(None) => return Frame::Invalid(ParseError::Missing("Content-Length")),
        Err(e) => return Frame::Invalid(e),
    };
    if body_len > MAX_STREAM_BODY {
        return Frame::Invalid(ParseError::ContentLength(format!(
            "body of {body_len} bytes is too large"
        )));
    }
    match body_start.checked_add(body_len) {
        Some(total) if total <= buf.len() => Frame::Complete(total),
        _ => Frame::Incomplete,
    }
}

enum StartLine<'a> {
    Request(Method, Uri),
    Response(u16, &'a str),
}

/// `Method SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP Reason`. Separators are exactly
/// one SP (RFC 4475 lwsstart, trws are invalid).
fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    let bad = || ParseError::StartLine(excerpt(line));
    let (first, rest) = line.split_once(' ').ok_or_else(bad)?;
    if first.len() >= 4 && first.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/") {
        check_version(first)?;
        let (status, reason) = parse_status(rest).ok_or_else(bad)?;
        return Ok(StartLine::Response(status, reason));
    }
    if !is_token(first) {
        return Err(bad());
    }
    let (uri, version) = rest.split_once(' ').ok_or_else(bad)?;
    if uri.is_empty() || version.contains([' ', '\t']) {
        return Err(bad());
    }
    check_version(version)?;
    let uri = Uri::parse(uri)?;
    Ok(StartLine::Request(Method::from_token(first), uri))
}

/// `3DIGIT [SP Reason-Phrase]` after the version; the reason may be empty, with or without its
/// separating SP (RFC 4475 noreason), and may be UTF-8 (unreason).
fn parse_status(rest: &str) -> Option<(u16, &str)> {
    let bytes = rest.as_bytes();
    let code = bytes.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(bytes.get(3), None | Some(b' ')) {
        return None;
    }
    // Three digits: at most 999, no overflow.
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&status) {
        return None;
    }
    Some((status, rest.get(4..).unwrap_or("")))
}

fn check_version(version: &str) -> Result<(), ParseError> {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else {
        Err(ParseError::Version(excerpt(version)))
    }
}

/// Parses the header lines after the start line: unfolds, expands compact names and splits
/// list-valued headers into one `Header` per value.
fn parse_headers(text: &str) -> Result<Headers, ParseError> {
    let mut headers = Headers(Vec::with_capacity(16));
    for line in LogicalLines::new(text) {
        if line.text.starts_with([' ', '\t']) {
            return Err(ParseError::HeaderSyntax(format!(
                "continuation line without a header: {}",
                excerpt(line.text)
            )));
        }
        let line = line.unfolded();
        // A CR that does not end a line is in no header's grammar; kept, it would be printed
        // as a space (see `print`), and a Call-ID or tag would not be the one the peer sees.
        if line.contains('\r') {
            return Err(ParseError::HeaderSyntax(format!(
                "bare CR in {}",
                excerpt(&line)
            )));
        }
        let Some((raw_name, value)) = line.split_once(':') else {
            return Err(ParseError::HeaderSyntax(format!(
                "no colon in {}",
                excerpt(&line)
            )));
        };
        // `Name : value` is legal (HCOLON allows whitespace before the colon).
        let raw_name = trim_lws(raw_name);
        if !is_token(raw_name) {
            return Err(ParseError::HeaderSyntax(format!(
                "invalid header name {}",
                excerpt(raw_name)
            )));
        }
        // Looked up once: a known name is stored as its `&'static str` (list headers all are).
        let (name, list) = match known_header(raw_name) {
            Some(known) => (Cow::Borrowed(known.name), known.list),
            None => (Cow::Owned(raw_name.to_string()), false),
        };
        let value = trim_lws(value);
        if !list || value == "*" {
            headers.push_raw(name, value);
            continue;
        }
        let items = split_list(value);
        if items.is_empty() {
            // Nothing but commas/whitespace: keep the value as received for whoever asks.
            headers.push_raw(name.clone(), value);
        }
        for item in items {
            headers.push_raw(name.clone(), item);
        }
    }
    Ok(headers)
}

impl Headers {
    /// Push with the name the parser already made canonical.
    fn push_raw(&mut self, name: Cow<'static, str>, value: &str) {
        self.0.push(Header {
            name,
            value: value.to_string(),
        });
    }
}

/// Merges every Content-Length value: each must be plain digits, and all must agree.
fn content_length<'a>(values: impl Iterator<Item = &'a str>) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    for value in values {
        let value = trim_lws(value);
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::ContentLength(format!(
                "not a number: {}",
                excerpt(value)
            )));
        }
        let len = value
            .parse::<usize>()
            .map_err(|_| ParseError::ContentLength(format!("too large: {}", excerpt(value))))?;
        match found {
            Some(previous) if previous != len => {
                return Err(ParseError::ContentLength(format!(
                    "conflicting values {previous} and {len}"
                )))
            }
            _ => found = Some(len),
        }
    }
    Ok(found)
}

/// Number of CR/LF bytes at the front (keep-alives and stray line ends before a message).
pub(super) fn leading_crlf_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Finds the empty line ending the header section, searching from `from`. Returns (end of the
/// header section including the last header's line end, start of the body). Accepts CRLF and
/// bare LF.
pub(super) fn find_head_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(offset) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + offset;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some((nl + 1, nl + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((nl + 1, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

/// Iterates logical header lines: a physical line starting with SP/HT continues the previous
/// one (RFC 3261 §7.3.1). Yielded lines still contain their inner line breaks; see
/// [`LogicalLine::unfolded`].
pub(super) struct LogicalLines<'a> {
    rest: &'a str,
}

/// One logical header line as received.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogicalLine<'a> {
    /// The line, inner line breaks included, without its final one.
    pub(super) text: &'a str,
    /// Whether it continues onto further physical lines (the search for its end found that).
    folded: bool,
}

impl<'a> LogicalLine<'a> {
    /// The line with each fold joined by one space; borrowed, and not searched again, when it
    /// has none (almost every line).
    pub(super) fn unfolded(&self) -> Cow<'a, str> {
        if !self.folded {
            return Cow::Borrowed(self.text);
        }
        let mut out = String::with_capacity(self.text.len());
        for part in self
            .text
            .split('\n')
            .map(trim_lws)
            .filter(|p| !p.is_empty())
        {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(part);
        }
        Cow::Owned(out)
    }
}

impl<'a> LogicalLines<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        LogicalLines { rest: text }
    }
}

impl<'a> Iterator for LogicalLines<'a> {
    type Item = LogicalLine<'a>;

    fn next(&mut self) -> Option<LogicalLine<'a>> {
        while !self.rest.is_empty() {
            let bytes = self.rest.as_bytes();
            let (mut end, mut next) = (bytes.len(), bytes.len());
            let mut i = 0;
            let mut folded = false;
            while let Some(offset) = bytes[i..].iter().position(|&b| b == b'\n') {
                let nl = i + offset;
                if matches!(bytes.get(nl + 1), Some(b' ' | b'\t')) {
                    i = nl + 1;
                    folded = true;
                    continue;
                }
                (end, next) = (nl, nl + 1);
                break;
            }
            let line = &self.rest[..end];
            self.rest = &self.rest[next..];
            let text = line.strip_suffix('\r').unwrap_or(line);
            if !text.is_empty() {
                return Some(LogicalLine { text, folded });
            }
        }
        None
    }
}

/// Splits a list header value on commas outside double quotes (with backslash escapes) and
/// outside `<...>`. Empty items are dropped.
pub(super) fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
    let mut start = 0;
    for (i, b) in value.bytes().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' if !in_angle => in_quotes = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                // `i` is the index of an ASCII comma, so both slices are on char boundaries.
                let item = trim_lws(&value[start..i]);
                if !item.is_empty() {
                    items.push(item);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = trim_lws(&value[start..]);
    if !last.is_empty() {
        items.push(last);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::find_param;
    use crate::sip::message::tests::*;

    #[test]
    fn bare_lf_line_ends() {
        let r = request(
            b"OPTIONS sip:x@y SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nCall-ID: 1\nCSeq: 1 OPTIONS\nContent-Length: 4\n\nbody",
        );
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.body, b"body");
        r.check_mandatory().unwrap();
    }

    #[test]
    fn compact_and_odd_case_names_are_canonical() {
        let r = request(&crlf(
            "MESSAGE sip:x@y SIP/2.0
v: SIP/2.0/UDP h;branch=z9hG4bK1
f: <sip:a@b>;tag=1
T: <sip:x@y>
i: abc
cseq: 1 MESSAGE
call-info: <http://x>
www-authenticate: Digest realm=\"a\", nonce=\"b\"
k: 100rel, timer
X-Custom-HEADER: v
c: text/plain
L: 2

hi",
        ));
        let names: Vec<&str> = r.headers.0.iter().map(|h| h.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "From",
                "To",
                "Call-ID",
                "CSeq",
                "Call-Info",
                "WWW-Authenticate",
                "Supported",
                "Supported",
                "X-Custom-HEADER",
                "Content-Type",
                "Content-Length"
            ]
        );
        // Not a list header: the comma in the auth challenge stays.
        assert_eq!(
            r.headers.get("WWW-Authenticate"),
            Some("Digest realm=\"a\", nonce=\"b\"")
        );
        assert_eq!(r.body, b"hi");
        r.check_mandatory().unwrap();
    }

    #[test]
    fn list_splitting_honours_quotes_escapes_and_angles() {
        let r = request(&crlf(
            "OPTIONS sip:x@y SIP/2.0
Contact: \"Doe, \\\"J\\\", Jr\" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>, sip:e@f;expires=\"Thu, 01 Dec\"
Allow: INVITE,ACK , ,BYE
From: \"Watson, T\" <sip:w@x>;tag=1
Content-Length: 0

",
        ));
        let contacts = r.headers.contacts().unwrap();
        assert_eq!(contacts.len(), 3);
        assert_eq!(contacts[0].display.as_deref(), Some("Doe, \"J\", Jr"));
        assert_eq!(contacts[0].uri.param("x"), Some(Some("1,2")));
        assert_eq!(find_param(&contacts[0].params, "q"), Some(Some("0.5")));
        assert_eq!(contacts[1].uri.user.as_deref(), Some("c"));
        assert_eq!(
            find_param(&contacts[2].params, "expires"),
            Some(Some("\"Thu, 01 Dec\""))
        );
        let allow: Vec<&str> = r.headers.get_all("Allow").collect();
        assert_eq!(allow, ["INVITE", "ACK", "BYE"]);
        assert_eq!(
            r.headers.from().unwrap().display.as_deref(),
            Some("Watson, T")
        );
    }

    #[test]
    fn two_vias_and_two_contacts_on_one_line() {
        let r = request(&crlf(
            "INVITE sip:x@y SIP/2.0
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKaaa, SIP/2.0/TCP b.example.com:5070;branch=z9hG4bKbbb
Contact: <sip:one@a.example.com>, \"Two\" <sip:two@b.example.com>;expires=60
Content-Length: 0

",
        ));
        let vias = r.headers.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].branch(), Some("z9hG4bKaaa"));
        assert_eq!(
            (vias[1].transport.as_str(), vias[1].port),
            ("TCP", Some(5070))
        );
        assert_eq!(vias[1].branch(), Some("z9hG4bKbbb"));
        assert_eq!(r.headers.top_via().unwrap(), vias[0]);
        let contacts = r.headers.contacts().unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].uri.user.as_deref(), Some("one"));
        assert_eq!(contacts[1].display.as_deref(), Some("Two"));
        assert_eq!(find_param(&contacts[1].params, "expires"), Some(Some("60")));
    }

    #[test]
    fn unknown_method_is_extension() {
        let r = request(b"FOOBAR sip:x@y SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.method, Method::Extension("FOOBAR".to_string()));
        assert_eq!(r.method.as_str(), "FOOBAR");
        // Method tokens are case-sensitive.
        assert_eq!(
            Method::from_token("invite"),
            Method::Extension("invite".into())
        );
        assert_eq!(Method::from_token("INVITE"), Method::Invite);
        assert!(matches!(
            parse(b"FOO(BAR) sip:x@y SIP/2.0\r\n\r\n"),
            Err(ParseError::StartLine(_))
        ));
    }

    #[test]
    fn ipv6_everywhere() {
        let r = request(&crlf(
            "INVITE sip:alice@[2001:db8::10]:5070 SIP/2.0
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas;received=[2001:db8::9:255]
Via: SIP/2.0/TCP [2001:db8::9:2]:5061;branch=z9hG4bKbs;rport=5061
From: <sip:bob@[2001:db8::9:1]>;tag=1
To: <sip:alice@[2001:db8::10]:5070>
Call-ID: v6
CSeq: 1 INVITE
Contact: \"Caller\" <sip:caller@[2001:db8::9:1]:5062;transport=tcp>
Content-Length: 0

",
        ));
        assert_eq!(r.uri.host, v6("2001:db8::10"));
        assert_eq!(r.uri.port, Some(5070));
        assert_eq!(r.uri.to_string(), "sip:alice@[2001:db8::10]:5070");
        let vias = r.headers.vias().unwrap();
        assert_eq!(vias[0].host, v6("2001:db8::9:1"));
        assert_eq!(vias[0].port, None);
        assert_eq!(vias[0].branch(), Some("z9hG4bKas"));
        assert_eq!(
            find_param(&vias[0].params, "received"),
            Some(Some("[2001:db8::9:255]"))
        );
        assert_eq!(
            (vias[1].host.clone(), vias[1].port),
            (v6("2001:db8::9:2"), Some(5061))
        );
        let contact = &r.headers.contacts().unwrap()[0];
        assert_eq!(contact.uri.host, v6("2001:db8::9:1"));
        assert_eq!(contact.uri.port, Some(5062));
        r.check_mandatory().unwrap();
    }

    #[test]
    fn frame_stream_cases() {
        assert_eq!(frame(b""), Frame::Incomplete);
        assert_eq!(frame(b"\r\n\r\n"), Frame::KeepAlive(4));
        assert_eq!(frame(b"\r\n"), Frame::KeepAlive(2));
        let msg = basic_invite();
        let head_len = msg.len() - SDP.len();
        // Incomplete headers, then headers complete but body short.
        assert_eq!(frame(&msg[..40]), Frame::Incomplete);
        assert_eq!(frame(&msg[..head_len - 1]), Frame::Incomplete);
        assert_eq!(frame(&msg[..head_len + 10]), Frame::Incomplete);
        assert_eq!(frame(&msg), Frame::Complete(msg.len()));
        // Leading keep-alives are part of the frame; trailing bytes belong to the next message.
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&msg);
        stream.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\n");
        assert_eq!(frame(&stream), Frame::Complete(msg.len() + 4));
        assert_eq!(
            parse(&stream[..msg.len() + 4]).unwrap(),
            parse(&msg).unwrap()
        );

        let dbl = crlf(DBLREQ);
        let Frame::Complete(first) = frame(&dbl) else {
            panic!("first dblreq message should frame");
        };
        assert!(dbl[first..].starts_with(b"\r\nINVITE"));
        // The INVITE's Content-Length (4) leaves its final LF for the next frame.
        assert_eq!(frame(&dbl[first..]), Frame::Complete(dbl.len() - first - 1));
        assert_eq!(request(&dbl[first..]).body, b"v=0\r");

        // Bare LF framing.
        assert_eq!(
            frame(b"OPTIONS sip:x SIP/2.0\nl: 2\n\nabNEXT"),
            Frame::Complete(30)
        );
    }

    #[test]
    fn frame_invalid_cases() {
        assert_eq!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n"),
            Frame::Invalid(ParseError::Missing("Content-Length"))
        );
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n"),
            Frame::Invalid(ParseError::ContentLength(_))
        ));
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 999999999999\r\n\r\n"),
            Frame::Invalid(ParseError::ContentLength(_))
        ));
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nSubject: \xff\r\nl: 0\r\n\r\n"),
            Frame::Invalid(ParseError::StartLine(_))
        ));
        // Binary garbage is rejected at once; a UTF-8 character cut in half is only incomplete.
        assert!(matches!(
            frame(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Frame::Invalid(ParseError::StartLine(_))
        ));
        assert_eq!(frame(b"SIP/2.0 200 \xd0"), Frame::Incomplete);
        let mut huge = b"OPTIONS sip:x SIP/2.0\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_LEN + 100, b'a');
        assert!(matches!(
            frame(&huge),
            Frame::Invalid(ParseError::HeaderSyntax(_))
        ));
        huge.extend_from_slice(b"\r\nl: 0\r\n\r\n");
        assert!(matches!(
            frame(&huge),
            Frame::Invalid(ParseError::HeaderSyntax(_))
        ));
    }
}
