//! [`Unparsed`]: what is left of a request that [`parse`](super::parse()) refused, kept as far
//! as answering it needs — RFC 3261 §8.2 and §18.3, RFC 4475 §3.1.2: a UAS answers a request
//! it cannot read with 400 (505 for another SIP version, 416 for a Request-URI scheme it does
//! not serve) rather than leaving the client to retransmit into silence.
//!
//! Must not: interpret anything of such a request beyond its method token and the headers a
//! response copies (Via, From, To, Call-ID, CSeq), all kept as received; never salvage a
//! response or an ACK (neither is ever answered).

use super::headers::{canonical_name, header_name};
use super::lex::{is_token, trim_lws};
use super::parse::{find_head_end, leading_crlf_len, split_list, LogicalLines};
use super::{Header, Headers, Method, ParseError};

/// The headers a response copies from its request (RFC 3261 §8.2.6.2).
const COPIED: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// A request that failed to parse, with what its answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsed {
    /// The start line's method token.
    pub method: Method,
    /// Every Via (a list line split into its values), and the first From, To, Call-ID and
    /// CSeq, each as received.
    pub headers: Headers,
    /// Why `parse` refused the request.
    pub error: ParseError,
}

impl Unparsed {
    /// What is left of a message `parse` refused with `error`: None unless its start line
    /// begins with a method token (responses are dropped, RFC 3261 §18.1.2) and it has a Via
    /// (without one there is no response to build); None for an ACK (never answered, §17.1.1).
    pub fn salvage(buf: &[u8], error: ParseError) -> Option<Unparsed> {
        let start = leading_crlf_len(buf);
        let head_end = find_head_end(buf, start).map_or(buf.len(), |(end, _)| end);
        let head = String::from_utf8_lossy(buf.get(start..head_end)?);
        let (start_line, header_text) = head.split_once('\n').unwrap_or((&head, ""));
        let token = start_line.split([' ', '\t', '\r']).next()?;
        if !is_token(token)
            || token
                .get(..4)
                .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"))
        {
            return None;
        }
        let method = Method::from_token(token);
        if method == Method::Ack {
            return None;
        }
        let mut headers = Headers(Vec::with_capacity(COPIED.len() + 2));
        for line in LogicalLines::new(header_text) {
            let line = line.unfolded();
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = canonical_name(trim_lws(name));
            let Some(copied) = COPIED.iter().find(|c| c.eq_ignore_ascii_case(name)) else {
                continue;
            };
            let value = trim_lws(value);
            if *copied == "Via" {
                let values = split_list(value);
                if values.is_empty() {
                    headers.0.push(header(copied, value));
                }
                headers
                    .0
                    .extend(values.into_iter().map(|v| header(copied, v)));
            } else if headers.get(copied).is_none() {
                headers.0.push(header(copied, value));
            }
        }
        headers.get("Via")?;
        Some(Unparsed {
            method,
            headers,
            error,
        })
    }

    /// The answer's status and reason phrase: 505 for a SIP version other than 2.0 (§8.2.2.4
    /// via §21.5.7), 416 for a Request-URI of a scheme we do not serve (§8.2.2.1), else 400
    /// saying what was wrong.
    pub fn status(&self) -> (u16, String) {
        match &self.error {
            ParseError::Version(_) => (505, "Version Not Supported".to_string()),
            ParseError::UnsupportedScheme(_) => (416, "Unsupported URI Scheme".to_string()),
            other => (400, format!("Bad Request - {other}")),
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: header_name(name),
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use crate::sip::message::tests::crlf;

    fn salvaged(text: &str) -> Option<Unparsed> {
        let buf = crlf(text);
        let error = parse(&buf).expect_err("the message must not parse");
        Unparsed::salvage(&buf, error)
    }

    const HEADERS: &str = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/UDP 192.0.2.2\n\
        f: <sip:a@example.com>;tag=1\n\
        To: <sip:b@example.com>\n\
        Call-ID: c1\n\
        CSeq: 1 OPTIONS\n\
        Subject: not copied\n\
        Content-Length: 0\n\n";

    #[test]
    fn a_request_with_a_bad_start_line_keeps_what_its_answer_copies() {
        let u = salvaged(&format!("OPTIONS  sip:b@example.com  SIP/2.0\n{HEADERS}")).unwrap();
        assert_eq!(u.method, Method::Options);
        assert_eq!(
            u.headers.get_all("Via").collect::<Vec<_>>(),
            [
                "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
                "SIP/2.0/UDP 192.0.2.2"
            ]
        );
        assert_eq!(u.headers.get("From"), Some("<sip:a@example.com>;tag=1"));
        assert_eq!(u.headers.get("Call-ID"), Some("c1"));
        assert_eq!(u.headers.get("Subject"), None);
        assert_eq!(u.status().0, 400);
        assert!(u
            .status()
            .1
            .starts_with("Bad Request - Malformed Start Line"));
    }

    #[test]
    fn the_status_says_version_scheme_or_bad_request() {
        let version = salvaged(&format!("OPTIONS sip:b@example.com SIP/7.0\n{HEADERS}")).unwrap();
        assert_eq!(version.status(), (505, "Version Not Supported".to_string()));
        let scheme = salvaged(&format!(
            "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\n{HEADERS}"
        ));
        assert_eq!(
            scheme.unwrap().status(),
            (416, "Unsupported URI Scheme".to_string())
        );
        let brackets = salvaged(&format!("INVITE <sip:b@example.com> SIP/2.0\n{HEADERS}"));
        assert_eq!(brackets.unwrap().status().0, 400);
        let length = salvaged(&HEADERS.replace("Content-Length: 0", "Content-Length: 99"));
        assert!(
            length.is_none(),
            "no start line: the first header is not a method"
        );
        let length = salvaged(&format!(
            "OPTIONS sip:b@example.com SIP/2.0\n{}",
            HEADERS.replace("Content-Length: 0", "Content-Length: 99")
        ));
        assert!(length.unwrap().status().1.contains("Content-Length"));
    }

    #[test]
    fn responses_acks_and_requests_without_via_are_not_salvaged() {
        assert!(salvaged(&format!("SIP/2.0 4294967301 Big\n{HEADERS}")).is_none());
        assert!(salvaged(&format!("ACK <sip:b@example.com> SIP/2.0\n{HEADERS}")).is_none());
        let no_via = HEADERS.replace(
            "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/UDP 192.0.2.2\n",
            "",
        );
        assert!(salvaged(&format!("OPTIONS <sip:b@example.com> SIP/2.0\n{no_via}")).is_none());
        assert!(Unparsed::salvage(
            b"\x16\x03\x01\x02\x00garbage",
            ParseError::StartLine(String::new())
        )
        .is_none());
    }
}
