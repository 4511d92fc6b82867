//! The SIP message types: [`Method`], [`Request`], [`Response`] and [`SipMessage`], with what a
//! UA asks of a whole message (mandatory-header check, a response built from a request).
//!
//! Must not: read or write bytes (`parse` and `print` do), parse header values (`headers` and
//! `uri` do), or know about transactions, dialogs, sockets or the clock.

use std::fmt;

use super::{Headers, ParseError, Uri};

/// A SIP request method. Unknown tokens are kept as `Extension` (RFC 3261 §7.1 allows any token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Refer,
    Notify,
    Subscribe,
    Prack,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    /// Case-sensitive per RFC 3261 §7.1 ("INVITE"); anything else that is a valid token is Extension.
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        }
    }

    /// The method token as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SIP request. `body` is raw bytes (Content-Length of them when parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response; `reason` may be empty or UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Either kind of message, as returned by [`parse`](super::parse()).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl Request {
    /// Checks what RFC 3261 §8.1.1 makes mandatory and what a UAS needs to answer at all:
    /// Via (top one parseable), From, To, Call-ID, CSeq (whose method equals the request
    /// method), Max-Forwards is optional. Returns the first problem found.
    /// From, To, Call-ID and CSeq must appear once (RFC 4475 multi01); a Max-Forwards that is
    /// present must be a number. A top Via without a branch is an RFC 2543 element's
    /// (RFC 4475 inv2543, longreq): the transaction layer matches it by §17.2.3's fields.
    pub fn check_mandatory(&self) -> Result<(), ParseError> {
        let h = &self.headers;
        h.top_via_ref()?;
        h.at_most_once("From")?;
        h.check_name_addr("From")?;
        h.at_most_once("To")?;
        h.check_name_addr("To")?;
        h.at_most_once("Call-ID")?;
        h.call_id()?;
        h.at_most_once("CSeq")?;
        if h.cseq()?.method != self.method {
            return Err(ParseError::CSeqMethodMismatch);
        }
        h.max_forwards()?;
        Ok(())
    }

    /// What a request of a method the UAS does not implement needs before it is refused with
    /// 405 or 501: RFC 3261 §8.2.1 inspects the method before §8.2.2 inspects the headers, so
    /// only what the transaction and its answer need is checked — a top Via, a CSeq (RFC 4475
    /// scalar02: a sequence number out of range is still 400), a Call-ID, a From and a To, and
    /// without an RFC 3261 branch a From that parses (its tag identifies the transaction).
    pub fn check_answerable(&self) -> Result<(), ParseError> {
        let h = &self.headers;
        let via = h.top_via_ref()?;
        h.cseq()?;
        h.call_id()?;
        for name in ["From", "To"] {
            if h.get(name).is_none() {
                return Err(ParseError::Missing(name));
            }
        }
        if via.branch().is_none_or(|b| !b.starts_with("z9hG4bK")) {
            h.check_name_addr("From")?;
        }
        Ok(())
    }
}

impl Response {
    /// RFC 3261 §8.2.6.2: a response to `req` copying all Via (in order), From, To, Call-ID and
    /// CSeq; no body. The caller adds a To tag when needed.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut headers = Headers(Vec::with_capacity(8));
        for via in req.headers.get_all("Via") {
            headers.push("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(value) = req.headers.get(name) {
                headers.push(name, value);
            }
        }
        Response {
            status,
            reason: reason.to_string(),
            headers,
            body: Vec::new(),
        }
    }
}

impl SipMessage {
    /// The headers of either kind of message.
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::tests::*;

    #[test]
    fn response_for_request_copies_dialog_headers() {
        let req = request(&crlf(
            "BYE sip:a@b SIP/2.0
Via: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/TCP h2;branch=z9hG4bK2
Route: <sip:r@x>
From: <sip:a@b>;tag=1
To: <sip:c@d>;tag=2
Call-ID: cid
CSeq: 7 BYE
Content-Length: 0

",
        ));
        let resp = Response::for_request(&req, 200, "OK");
        let names: Vec<&str> = resp.headers.0.iter().map(|h| h.name.as_ref()).collect();
        assert_eq!(names, ["Via", "Via", "From", "To", "Call-ID", "CSeq"]);
        assert_eq!(resp.headers.vias().unwrap()[1].branch(), Some("z9hG4bK2"));
        let bytes = resp.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h1;branch=z9hG4bK1\r\n"));
        assert!(text.ends_with("CSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"));
        let back = response(&bytes);
        assert_eq!(back.status, 200);
        assert_eq!(back.reason, "OK");
        assert_eq!(back.headers.cseq().unwrap().method, Method::Bye);
    }

    #[test]
    fn check_mandatory_reports_first_problem() {
        let base = "OPTIONS sip:x@y SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:a@b>;tag=1
To: <sip:x@y>
Call-ID: c
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

";
        request(&crlf(base)).check_mandatory().unwrap();
        let cases: [(&str, &str, ParseError); 7] = [
            (
                "Via: SIP/2.0/UDP h;branch=z9hG4bK1\n",
                "",
                ParseError::Missing("Via"),
            ),
            ("From: <sip:a@b>;tag=1\n", "", ParseError::Missing("From")),
            ("Call-ID: c\n", "", ParseError::Missing("Call-ID")),
            (
                "CSeq: 1 OPTIONS",
                "CSeq: 1 INVITE",
                ParseError::CSeqMethodMismatch,
            ),
            (
                "Call-ID: c",
                "Call-ID: ",
                ParseError::BadHeader("Call-ID", "empty".into()),
            ),
            (
                "To: <sip:x@y>",
                "To: <sip:x@y>\nTo: <sip:z@y>",
                ParseError::BadHeader("To", "multiple values".into()),
            ),
            (
                "Max-Forwards: 70",
                "Max-Forwards: seventy",
                ParseError::BadHeader("Max-Forwards", "not a number in 0..=255: seventy".into()),
            ),
        ];
        for (from, to, expected) in cases {
            let text = base.replace(from, to);
            assert_eq!(
                request(&crlf(&text)).check_mandatory(),
                Err(expected),
                "{text}"
            );
        }
    }

    /// RFC 4475 inv2543: an RFC 2543 element's Via has no branch; that is no reason for a 400.
    #[test]
    fn a_via_without_branch_passes_the_mandatory_check() {
        let text = "INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.client.example.net;user=phone>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE

";
        request(&crlf(text)).check_mandatory().unwrap();
    }

    /// §8.2.1 before §8.2.2: a method we refuse anyway needs only what the refusal needs.
    #[test]
    fn check_answerable_needs_what_a_refusal_needs() {
        let base = "REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw
Content-Length: 0

";
        let unksm2 = request(&crlf(base));
        assert!(unksm2.check_mandatory().is_err(), "From is an http: URI");
        unksm2.check_answerable().unwrap();
        let cases = [
            (
                "CSeq: 234902 REGISTER",
                "CSeq: 36893488147419103232 REGISTER",
            ),
            ("Call-ID: unksm2.daksdj@hyphenated-host.example.com\n", ""),
            ("To: isbn:2983792873\n", ""),
            (";branch=z9hG4bKkdjuw", ""),
        ];
        for (from, to) in cases {
            let text = base.replace(from, to);
            assert!(request(&crlf(&text)).check_answerable().is_err(), "{text}");
        }
        let mismatch = base.replace("CSeq: 234902 REGISTER", "CSeq: 1 INVITE");
        request(&crlf(&mismatch)).check_answerable().unwrap();
    }
}
