//! Writing messages to bytes: the `to_bytes` of [`Request`], [`Response`] and [`SipMessage`],
//! with CRLF line ends and a Content-Length computed from the body.
//!
//! Must not: let a header name or value inject a line (CR/LF become spaces), trust a stored
//! Content-Length, or reorder the headers it is given.

use super::{Headers, Request, Response, SipMessage};
use crate::text::decimal;

impl Request {
    /// Serializes with CRLF line ends; Content-Length is always written, computed from `body`
    /// (any stored Content-Length header is ignored).
    pub fn to_bytes(&self) -> Vec<u8> {
        let uri = self.uri.to_string();
        write_message(
            &[self.method.as_str(), " ", &uri, " SIP/2.0"],
            &self.headers,
            &self.body,
        )
    }
}

impl Response {
    /// Serializes like [`Request::to_bytes`]; an empty reason still gets its separating SP.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut digits = [0u8; 20];
        let status = decimal(u64::from(self.status), &mut digits);
        write_message(
            &["SIP/2.0 ", status, " ", &self.reason],
            &self.headers,
            &self.body,
        )
    }
}

impl SipMessage {
    /// Serializes either kind of message (see [`Request::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

/// Writes the start line (its pieces in order), headers (minus any Content-Length), the
/// computed Content-Length and body. CR/LF inside names or values (only possible through the
/// API) become spaces, so a value can never inject a header line.
fn write_message(start_line: &[&str], headers: &Headers, body: &[u8]) -> Vec<u8> {
    let head_len: usize = headers
        .0
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum::<usize>()
        + start_line.iter().map(|piece| piece.len()).sum::<usize>();
    let mut out = Vec::with_capacity(head_len + 40 + body.len());
    for piece in start_line {
        push_line_text(&mut out, piece);
    }
    out.extend_from_slice(b"\r\n");
    for h in &headers.0 {
        if h.name.eq_ignore_ascii_case("Content-Length") || h.name.eq_ignore_ascii_case("l") {
            continue;
        }
        push_line_text(&mut out, &h.name);
        out.extend_from_slice(b": ");
        push_line_text(&mut out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    let mut digits = [0u8; 20];
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(decimal(body.len() as u64, &mut digits).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Copies `text`, then blanks any CR or LF in the copy (values carry none unless the API put
/// them there): a plain copy and a pass without branches, where a byte-by-byte map cost
/// several instructions a byte. (A SIMD search for CR or LF first cost more than it saved:
/// most values are a few dozen bytes.)
fn push_line_text(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    out.extend_from_slice(text.as_bytes());
    for b in &mut out[start..] {
        let line_end = *b == b'\r' || *b == b'\n';
        *b = if line_end { b' ' } else { *b };
    }
}

#[cfg(test)]
mod tests {
    use crate::sip::message::parse;
    use crate::sip::message::tests::*;

    #[test]
    fn print_then_parse_round_trips() {
        let original = parse(&basic_invite()).unwrap();
        let printed = original.to_bytes();
        let reparsed = parse(&printed).unwrap();
        assert_eq!(reparsed, original);
        assert_eq!(reparsed.to_bytes(), printed);
        let text = String::from_utf8(printed).unwrap();
        assert!(text.starts_with(
            "INVITE sip:bob@biloxi.example.com:5062;transport=udp SIP/2.0\r\nVia: SIP/2.0/UDP "
        ));
        assert!(text.contains("\r\nRecord-Route: <sip:p1.example.com;lr>\r\nRecord-Route: <sip:p2.example.com;lr>\r\n"));
        assert!(text.ends_with(&format!("Content-Length: {}\r\n\r\n{SDP}", SDP.len())));
    }

    #[test]
    fn to_bytes_writes_computed_content_length_last() {
        let mut r = request(&basic_invite());
        r.body = b"xyz".to_vec();
        r.headers.push("X-Extra", "1");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(text.matches("Content-Length").count(), 1);
        assert!(text.ends_with("X-Extra: 1\r\nContent-Length: 3\r\n\r\nxyz"));
    }

    #[test]
    fn to_bytes_never_lets_a_value_inject_a_line() {
        let mut r = request(&basic_invite());
        r.headers
            .push("Subject", "hi\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bKx");
        let again = request(&r.to_bytes());
        assert_eq!(again.headers.vias().unwrap().len(), 1);
        let mut ok = crate::sip::message::Response::for_request(&r, 200, "OK\r\nX-Evil: 1");
        ok.body = b"v=0\r\n".to_vec();
        let text = String::from_utf8(ok.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK  X-Evil: 1\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"), "{text}");
    }
}
