//! Building and sending responses: the common headers (Server, To tag), responses to a call's
//! INVITE (tag, Contact, Record-Route, SDP), OPTIONS, 400 to malformed requests, 420 for
//! extensions we lack, and the refusal of bodies we cannot read.
//!
//! Owns: every response leaving the UA (counted in `SipCounters::responses_sent`).
//! Must not: change call state — callers decide what a response means for the call.

use std::time::Instant;

use super::addressing::contact_for;
use super::{CallId, UaOutput, UserAgent, ALLOW, SUPPORTED};
use crate::sdp::SessionDescription;
use crate::sip::message::{Headers, Method, Request, Response, SipMessage};
use crate::sip::transaction::{Peer, TransactionKey};

impl UserAgent {
    pub(super) fn respond_invite(&mut self, now: Instant, call_id: CallId, response: Response) {
        let key = self.calls[&call_id].invite_tx.clone();
        self.respond(now, &key, response);
    }

    pub(super) fn respond(&mut self, now: Instant, key: &TransactionKey, mut response: Response) {
        self.add_to_tag(&mut response);
        *self
            .counters
            .responses_sent
            .entry(response.status)
            .or_default() += 1;
        if let Err(e) = self.transactions.send_response(now, key, response) {
            tracing::debug!(error = %e, "response not sent");
        }
        self.drain_transactions(now, None);
    }

    /// §8.2.6.2: every response but a 100 carries a To tag; one of ours if the request had none,
    /// appended to the request's To as it is (also one we cannot read, a URI scheme we do not
    /// serve: RFC 4475 unksm2); a To without any value stays as it is.
    fn add_to_tag(&mut self, response: &mut Response) {
        if response.status == 100 {
            return;
        }
        let has_value = response
            .headers
            .get("To")
            .is_some_and(|to| !to.trim().is_empty());
        if !has_value || response.headers.to_tag().is_some() {
            return;
        }
        let tag = self.random_token();
        response.headers.set_to_tag(&tag);
    }

    pub(super) fn respond_simple(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        request: &Request,
        status: u16,
        reason: &str,
    ) {
        let response = self.base_response(request, status, reason);
        self.respond(now, key, response);
    }

    /// A response to the call's current INVITE, with our tag, Contact and Record-Route.
    pub(super) fn response_for_call(
        &self,
        call_id: CallId,
        status: u16,
        reason: &str,
        body: Option<&SessionDescription>,
    ) -> Response {
        let call = &self.calls[&call_id];
        let mut response = self.base_response(&call.invite, status, reason);
        response.headers.set_to_tag(&call.dialog.local_tag);
        if status > 100 && status < 300 {
            // §12.1.1: dialog-creating responses copy Record-Route and carry our Contact.
            for rr in call.invite.headers.get_all("Record-Route") {
                response.headers.push("Record-Route", rr.to_string());
            }
            response
                .headers
                .push("Contact", contact_for(call.source.transport, call.local));
            response.headers.push("Allow", ALLOW);
        }
        if let Some(sdp) = body {
            response.headers.push("Content-Type", "application/sdp");
            response.body = sdp.to_text().into_bytes();
        }
        response
    }

    pub(super) fn base_response(&self, request: &Request, status: u16, reason: &str) -> Response {
        let mut response = Response::for_request(request, status, reason);
        response
            .headers
            .push("Server", self.settings.user_agent.clone());
        response
    }

    pub(super) fn options_response(&self, request: &Request) -> Response {
        let mut response = self.base_response(request, 200, "OK");
        response.headers.push("Allow", ALLOW);
        response.headers.push("Accept", "application/sdp");
        response.headers.push("Accept-Language", "en");
        response.headers.push("Supported", SUPPORTED);
        response
    }

    /// Answers statelessly a request that failed to parse or failed the mandatory-header check,
    /// when it can be answered at all: it needs a Via (copied as received, even one that does
    /// not parse: RFC 4475 badinv01); the answer goes to the request's source. ACKs are never
    /// answered.
    pub(super) fn answer_malformed(
        &mut self,
        method: &Method,
        headers: &Headers,
        source: Peer,
        status: u16,
        reason: &str,
    ) {
        if *method == Method::Ack || headers.get("Via").is_none() {
            tracing::debug!(reason, "dropping unanswerable malformed request");
            return;
        }
        let mut response = Response {
            status,
            reason: reason.to_string(),
            headers: Headers::default(),
            body: Vec::new(),
        };
        for via in headers.get_all("Via") {
            response.headers.push("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(value) = headers.get(name) {
                response.headers.push(name, value);
            }
        }
        response
            .headers
            .push("Server", self.settings.user_agent.clone());
        self.add_to_tag(&mut response);
        *self.counters.responses_sent.entry(status).or_default() += 1;
        self.outputs.push_back(UaOutput::Transmit {
            to: source,
            message: SipMessage::Response(response),
        });
    }

    /// §8.2.2.3: Require option tags other than the ones we implement are refused.
    pub(super) fn unsupported_extension(&self, request: &Request) -> Option<String> {
        let tags: Vec<&str> = request
            .headers
            .get_all("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !SUPPORTED.split(", ").any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        (!tags.is_empty()).then(|| tags.join(", "))
    }

    /// The SDP offer in a request: None without a body, an error status for bodies we refuse.
    #[allow(clippy::type_complexity)]
    pub(super) fn read_offer(
        &self,
        request: &Request,
    ) -> Result<Option<SessionDescription>, (u16, &'static str, Option<String>)> {
        if request.body.is_empty() {
            return Ok(None);
        }
        let content_type = request.headers.content_type().map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        if content_type.as_deref() != Some("application/sdp") {
            return Err((415, "Unsupported Media Type", None));
        }
        let text = std::str::from_utf8(&request.body)
            .map_err(|_| (400, "Bad Request - SDP is not UTF-8", None))?;
        SessionDescription::parse(text)
            .map(Some)
            .map_err(|e| (400, "Bad Request - malformed SDP", Some(e.to_string())))
    }
}
