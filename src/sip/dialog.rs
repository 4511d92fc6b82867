//! SIP dialogs (RFC 3261 §12): identity, route set, remote target and CSeq rules.
//!
//! Owns: the state a dialog keeps once it exists, and building requests inside it
//! (§12.2.1.1, loose and strict routing) and checking requests that arrive in it (§12.2.2).
//! Must not: send anything, read the clock, or know about media; the user agent core
//! (`sip::ua`) decides when a dialog starts and ends.

use std::fmt;

use super::message::{find_param, CSeq, Headers, Method, NameAddr, Request, Uri, Via};

/// One dialog, seen from our side (we are the UAS for calls from trunks; a UAC dialog differs
/// only in which tag is local).
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our URI: the To of the request that created the dialog (UAS).
    pub local_uri: NameAddr,
    /// The peer's URI: the From of that request (UAS).
    pub remote_uri: NameAddr,
    /// Last CSeq we used in a request we sent in this dialog.
    pub local_seq: u32,
    /// Highest CSeq seen from the peer; requests below it are out of order (§12.2.2).
    pub remote_seq: u32,
    /// Where in-dialog requests go: the peer's Contact.
    pub remote_target: Uri,
    /// Record-Route of the dialog-creating request, in order (UAS view, §12.1.1).
    pub route_set: Vec<NameAddr>,
}

/// Why a request cannot be accepted in, or a dialog created from, a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogError {
    /// The dialog-creating request lacks a usable header (name, detail); answered 400.
    BadRequest(&'static str, String),
    /// An in-dialog request whose CSeq is lower than one already seen; answered 500.
    CSeqOutOfOrder { got: u32, last: u32 },
}

impl fmt::Display for DialogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialogError::BadRequest(name, detail) => write!(f, "bad {name}: {detail}"),
            DialogError::CSeqOutOfOrder { got, last } => {
                write!(f, "CSeq {got} is lower than {last} already seen")
            }
        }
    }
}

impl std::error::Error for DialogError {}

impl Dialog {
    /// The dialog a UAS creates when it answers `invite` with a To tag `local_tag` (§12.1.1).
    pub fn new_uas(invite: &Request, local_tag: String) -> Result<Dialog, DialogError> {
        let h = &invite.headers;
        let bad =
            |name: &'static str, e: &dyn fmt::Display| DialogError::BadRequest(name, e.to_string());
        let call_id = h.call_id().map_err(|e| bad("Call-ID", &e))?.to_string();
        let remote_uri = h.from().map_err(|e| bad("From", &e))?;
        let local_uri = h.to().map_err(|e| bad("To", &e))?;
        let cseq = h.cseq().map_err(|e| bad("CSeq", &e))?;
        // §12.1.1: the remote target is the Contact; a request without one (broken peer) still
        // gets a dialog aimed at its From URI, so that we can at least try to send BYE.
        let remote_target = match h.contacts() {
            Ok(contacts) => contacts
                .into_iter()
                .next()
                .map(|c| c.uri)
                .unwrap_or_else(|| remote_uri.uri.clone()),
            Err(e) => return Err(bad("Contact", &e)),
        };
        let route_set = h.record_routes().map_err(|e| bad("Record-Route", &e))?;
        Ok(Dialog {
            call_id,
            local_tag,
            remote_tag: remote_uri.tag().map(str::to_string),
            local_uri,
            remote_uri,
            local_seq: 0,
            remote_seq: cseq.seq,
            remote_target,
            route_set,
        })
    }

    /// The dialog of an INVITE we send, before any response (§12.1.2): our From tag is the
    /// local tag, the remote tag and target come with the response ([`Dialog::confirm_uac`]).
    pub fn new_uac(invite: &Request) -> Result<Dialog, DialogError> {
        let h = &invite.headers;
        let bad =
            |name: &'static str, e: &dyn fmt::Display| DialogError::BadRequest(name, e.to_string());
        let local_uri = h.from().map_err(|e| bad("From", &e))?;
        let local_tag = local_uri
            .tag()
            .ok_or_else(|| DialogError::BadRequest("From", "no tag".into()))?
            .to_string();
        Ok(Dialog {
            call_id: h.call_id().map_err(|e| bad("Call-ID", &e))?.to_string(),
            local_tag,
            remote_tag: None,
            remote_uri: h.to().map_err(|e| bad("To", &e))?,
            local_uri,
            local_seq: h.cseq().map_err(|e| bad("CSeq", &e))?.seq,
            remote_seq: 0,
            remote_target: invite.uri.clone(),
            route_set: h.routes().map_err(|e| bad("Route", &e))?,
        })
    }

    /// A response with a To tag to our INVITE sets up the dialog (§12.1.2): the peer's tag,
    /// its Contact as the remote target and the Record-Route in reverse as the route set.
    pub fn confirm_uac(&mut self, response: &super::message::Response) {
        let h = &response.headers;
        if let Ok(to) = h.to() {
            self.remote_tag = to.tag().map(str::to_string);
        }
        self.refresh_target(h);
        if let Ok(mut routes) = h.record_routes() {
            if !routes.is_empty() {
                routes.reverse();
                self.route_set = routes;
            }
        }
    }

    /// A target refresh — a re-INVITE or UPDATE, or the 2xx of ours — names the remote target
    /// in its Contact (§12.2.1.2, §12.2.2); a message without one leaves it as it was.
    pub fn refresh_target(&mut self, headers: &super::message::Headers) {
        if let Some(contact) = headers.contacts().ok().and_then(|c| c.into_iter().next()) {
            self.remote_target = contact.uri;
        }
    }

    /// Checks and records the CSeq of a request received in this dialog (§12.2.2).
    /// ACK and CANCEL carry the CSeq of the request they refer to, so they are not checked.
    pub fn accept_remote_cseq(&mut self, request: &Request) -> Result<(), DialogError> {
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let cseq = request
            .headers
            .cseq()
            .map_err(|e| DialogError::BadRequest("CSeq", e.to_string()))?;
        if cseq.seq < self.remote_seq {
            return Err(DialogError::CSeqOutOfOrder {
                got: cseq.seq,
                last: self.remote_seq,
            });
        }
        self.remote_seq = cseq.seq;
        Ok(())
    }

    /// Builds a request inside the dialog (§12.2.1.1). `via` is our Via (with branch),
    /// `contact` our Contact. Returns the request and the URI of the next hop (first Route if
    /// any, else the Request-URI), from which the caller picks the destination.
    pub fn new_request(&mut self, method: Method, via: &Via, contact: &str) -> (Request, Uri) {
        if method != Method::Ack && method != Method::Cancel {
            // Our first request uses a fresh number; §12.2.1.1 allows any starting value.
            self.local_seq = if self.local_seq == 0 {
                1
            } else {
                self.local_seq.saturating_add(1)
            };
        }
        let (uri, routes) = self.request_uri_and_routes();
        let next_hop = routes
            .first()
            .map(|r| r.uri.clone())
            .unwrap_or_else(|| uri.clone());
        let mut headers = Headers::default();
        headers.push("Via", via.to_string());
        headers.push("Max-Forwards", "70");
        let mut from = self.local_uri.clone();
        set_tag(&mut from, Some(&self.local_tag));
        let mut to = self.remote_uri.clone();
        set_tag(&mut to, self.remote_tag.as_deref());
        headers.push("From", from.to_string());
        headers.push("To", to.to_string());
        headers.push("Call-ID", self.call_id.clone());
        let cseq = CSeq {
            seq: self.local_seq,
            method: method.clone(),
        };
        headers.push("CSeq", cseq.to_string());
        for r in &routes {
            headers.push("Route", r.to_string());
        }
        headers.push("Contact", contact);
        let request = Request {
            method,
            uri,
            headers,
            body: Vec::new(),
        };
        (request, next_hop)
    }

    /// Loose routing when the first route has `;lr`, strict routing otherwise (§12.2.1.1).
    fn request_uri_and_routes(&self) -> (Uri, Vec<NameAddr>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        if find_param(&first.uri.params, "lr").is_some() {
            return (self.remote_target.clone(), self.route_set.clone());
        }
        let mut routes: Vec<NameAddr> = self.route_set[1..].to_vec();
        routes.push(NameAddr {
            display: None,
            uri: self.remote_target.clone(),
            params: Vec::new(),
        });
        (first.uri.clone(), routes)
    }
}

/// Sets (or removes) the `tag` parameter of a From/To value.
pub fn set_tag(addr: &mut NameAddr, tag: Option<&str>) {
    addr.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    if let Some(tag) = tag {
        addr.params.push(super::message::Param {
            name: "tag".into(),
            value: Some(tag.to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, SipMessage};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:echo@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=a1\r\n\
             To: <sip:echo@127.0.0.1>\r\n\
             Call-ID: c1@127.0.0.1\r\n\
             CSeq: 10 INVITE\r\n\
             Contact: <sip:alice@127.0.0.1:5070>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()).expect("test INVITE parses") {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!("test text is a request"),
        }
    }

    fn via() -> Via {
        Via::parse("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye").expect("test Via parses")
    }

    #[test]
    fn uas_dialog_takes_ids_from_invite() {
        let d = Dialog::new_uas(&invite(""), "b2".into()).unwrap();
        assert_eq!(d.call_id, "c1@127.0.0.1");
        assert_eq!(d.remote_tag.as_deref(), Some("a1"));
        assert_eq!(d.remote_seq, 10);
        assert_eq!(d.remote_target.to_string(), "sip:alice@127.0.0.1:5070");
    }

    #[test]
    fn bye_without_routes_targets_contact_with_swapped_tags() {
        let mut d = Dialog::new_uas(&invite(""), "b2".into()).unwrap();
        let (bye, hop) = d.new_request(Method::Bye, &via(), "<sip:cb@127.0.0.1:5060>");
        assert_eq!(bye.uri.to_string(), "sip:alice@127.0.0.1:5070");
        assert_eq!(hop, bye.uri);
        assert_eq!(bye.headers.from().unwrap().tag(), Some("b2"));
        assert_eq!(bye.headers.to().unwrap().tag(), Some("a1"));
        assert_eq!(bye.headers.cseq().unwrap().method, Method::Bye);
        assert_eq!(bye.headers.get("Route"), None);
        let (bye2, _) = d.new_request(Method::Bye, &via(), "<sip:cb@127.0.0.1:5060>");
        assert!(bye2.headers.cseq().unwrap().seq > bye.headers.cseq().unwrap().seq);
    }

    #[test]
    fn loose_route_set_is_kept_in_order() {
        let inv = invite("Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n");
        let mut d = Dialog::new_uas(&inv, "b2".into()).unwrap();
        let (bye, hop) = d.new_request(Method::Bye, &via(), "<sip:cb@127.0.0.1>");
        let routes: Vec<&str> = bye.headers.get_all("Route").collect();
        assert_eq!(routes.len(), 2);
        assert!(routes[0].contains("p1.example.com"));
        assert!(routes[1].contains("p2.example.com"));
        assert_eq!(bye.uri.to_string(), "sip:alice@127.0.0.1:5070");
        assert_eq!(hop.to_string(), "sip:p1.example.com;lr");
    }

    #[test]
    fn strict_route_puts_first_route_in_request_uri() {
        let inv = invite("Record-Route: <sip:strict.example.com>\r\n");
        let mut d = Dialog::new_uas(&inv, "b2".into()).unwrap();
        let (bye, _) = d.new_request(Method::Bye, &via(), "<sip:cb@127.0.0.1>");
        assert_eq!(bye.uri.to_string(), "sip:strict.example.com");
        let routes: Vec<&str> = bye.headers.get_all("Route").collect();
        assert_eq!(routes.len(), 1);
        assert!(routes[0].contains("alice@127.0.0.1:5070"));
    }

    #[test]
    fn lower_cseq_is_rejected() {
        let mut d = Dialog::new_uas(&invite(""), "b2".into()).unwrap();
        let mut req = invite("");
        req.method = Method::Bye;
        req.headers.set("CSeq", "9 BYE");
        assert_eq!(
            d.accept_remote_cseq(&req),
            Err(DialogError::CSeqOutOfOrder { got: 9, last: 10 })
        );
        req.headers.set("CSeq", "11 BYE");
        assert_eq!(d.accept_remote_cseq(&req), Ok(()));
        assert_eq!(d.remote_seq, 11);
    }
}
