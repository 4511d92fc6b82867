//! INVITEs we receive (UAS): routing an INVITE to a call, the identities the owner is told,
//! provisional responses (reliable ones per RFC 3262, with PRACK), CANCEL, the 2xx and its ACK,
//! and Replaces (RFC 3891).
//!
//! Owns: the life of an incoming call until its dialog is confirmed.
//! Must not: send requests of its own inside a dialog (BYE goes through `in_dialog`), or end a
//! call other than through `UserAgent::end_call`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::session_timer::{requested_session_timer, MIN_SE_S};
use super::{initial_srtp_keys, Call, CallId, CallState, EndReason, UaOutput, UserAgent};
use crate::sdp::{self, SessionDescription, SessionVersion};
use crate::sip::dialog::Dialog;
use crate::sip::message::{NameAddr, Request, Response};
use crate::sip::routing::{Route, RouteRoom, Service};
use crate::sip::transaction::{Peer, TransactionKey, Transport};

/// Whether the request's Accept (RFC 3261 §20.1) admits application/sdp: no Accept does, an
/// Accept does when a media range covers it (`application/sdp`, `application/*`, `*/*`).
fn accepts_sdp(request: &Request) -> bool {
    let mut ranges = request
        .headers
        .get_all("Accept")
        .flat_map(|v| v.split(','))
        .map(|range| {
            range
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .peekable();
    if ranges.peek().is_none() {
        return true;
    }
    ranges.any(|range| matches!(range.as_str(), "application/sdp" | "application/*" | "*/*"))
}

/// Seconds a draining server asks callers to wait before retrying (Retry-After).
pub(super) const DRAIN_RETRY_AFTER_S: u32 = 30;

/// A reliable provisional response not yet PRACKed (RFC 3262 §3).
#[derive(Debug, Clone)]
pub(super) struct UnackedProvisional {
    pub(super) response: Response,
    pub(super) rseq: u32,
    pub(super) interval: Duration,
    /// No PRACK by then: the INVITE is refused (5xx).
    pub(super) give_up: Instant,
}

impl UserAgent {
    pub(super) fn on_invite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        source: Peer,
        local: SocketAddr,
    ) {
        if let Some(status) = self.unsupported_extension(&request) {
            let mut response = self.base_response(&request, 420, "Bad Extension");
            response.headers.push("Unsupported", status);
            self.respond(now, &key, response);
            return;
        }
        if self.draining {
            let mut response = self.base_response(&request, 503, "Service Unavailable");
            response
                .headers
                .push("Retry-After", DRAIN_RETRY_AFTER_S.to_string());
            self.respond(now, &key, response);
            return;
        }
        // RFC 4028: a session interval below our minimum gets 422 with ours.
        let session_expires = match requested_session_timer(&request) {
            Ok(interval) => interval,
            Err(()) => {
                let mut response = self.base_response(&request, 422, "Session Interval Too Small");
                response.headers.push("Min-SE", MIN_SE_S.to_string());
                self.respond(now, &key, response);
                return;
            }
        };
        // RFC 3891: an INVITE with Replaces takes the place of one of our confirmed dialogs,
        // whatever its Request-URI.
        let replaces = match self.replaced_call(&request) {
            Ok(r) => r,
            Err((status, reason)) => {
                self.respond_simple(now, &key, &request, status, reason);
                return;
            }
        };
        let user = request.uri.user.clone().unwrap_or_default();
        let placement = match replaces {
            // The replaced call's service and SRTP policy, answered at once.
            Some(old) => Some(Placement {
                service: self.calls[&old].service,
                answer_delay_ms: 0,
                prompt: None,
                srtp: Some(self.calls[&old].capabilities.srtp),
                conference: None,
                dn: None,
                // Recorded as its source trunk says (the replaced call's route is not kept).
                record: None,
                // The control plane keeps the replaced call's.
                rtp_source: None,
            }),
            None => self
                .settings
                .routes
                .iter()
                .find(|r| r.matches(&user))
                .map(|route| Placement::of_route(route, &user)),
        };
        let Some(route) = placement else {
            tracing::debug!(user = %user, "no route for INVITE");
            self.respond_simple(now, &key, &request, 404, "Not Found");
            return;
        };
        let remote_offer = match self.read_offer(&request) {
            Ok(offer) => offer,
            Err((status, reason, warning)) => {
                let mut response = self.base_response(&request, status, reason);
                if status == 415 {
                    response.headers.push("Accept", "application/sdp");
                }
                if let Some(w) = warning {
                    response
                        .headers
                        .push("Warning", format!("399 callbridge \"{w}\""));
                }
                self.respond(now, &key, response);
                return;
            }
        };
        // Our answer carries SDP (or our offer does): an Accept without it leaves nothing we
        // could send (RFC 3261 §21.4.7; RFC 4475 sdp01).
        if !accepts_sdp(&request) {
            let mut response = self.base_response(&request, 406, "Not Acceptable");
            response.headers.push(
                "Warning",
                "399 callbridge \"our session description is application/sdp, which Accept does not list\"",
            );
            self.respond(now, &key, response);
            return;
        }
        // This call's SDES keys: the same for every offer/answer of the dialog, so the
        // pre-check below and the answer in our 2xx agree.
        let srtp = match route.srtp {
            Some(policy) => policy,
            // Signalling secured by TLS carries SDES keys: the media must be SRTP too.
            None if source.transport == Transport::Tls => self.settings.tls_srtp,
            None => self.settings.capabilities.srtp,
        };
        let capabilities = self.settings.capabilities_with(srtp, None);
        let srtp_keys = initial_srtp_keys(&capabilities, remote_offer.as_ref());
        // Check the offer before any media is allocated, so a 488 costs nothing.
        let remote_media = match &remote_offer {
            Some(offer) => match sdp::negotiate(offer, &capabilities, &srtp_keys) {
                Ok(media) => Some(media),
                Err(e) => {
                    let mut response = self.base_response(&request, 488, "Not Acceptable Here");
                    response
                        .headers
                        .push("Warning", format!("304 callbridge \"{e}\""));
                    self.respond(now, &key, response);
                    return;
                }
            },
            None => None,
        };
        let local_tag = self.random_token();
        let dialog = match Dialog::new_uas(&request, local_tag.clone()) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("Bad Request - {e}");
                self.respond_simple(now, &key, &request, 400, &reason);
                return;
            }
        };
        let tags = |name: &str| -> bool {
            request
                .headers
                .get_all(name)
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("100rel"))
        };
        let peer_100rel = if tags("Require") {
            Some(true)
        } else if tags("Supported") {
            Some(false)
        } else {
            None
        };
        let call_id = self.next_call;
        self.next_call += 1;
        let play = request
            .uri
            .param("play")
            .flatten()
            .map(percent_decode)
            .or_else(|| route.prompt.clone());
        let from = request.headers.get("From").unwrap_or_default().to_string();
        let to = request.headers.get("To").unwrap_or_default().to_string();
        // RFC 3325: an asserted identity counts only from inside the trust domain, which is
        // the trunks (everyone when none is configured, as for starting calls at all).
        let remote_dn = caller_number(&request, self.settings.trust.allows(source.addr.ip()));
        let route_dn = route.dn.clone().unwrap_or(user);
        let source_trunk = self.settings.trust.trunk_of(source.addr.ip());
        let trunk = source_trunk.map(|t| t.name.clone());
        let record = route
            .record
            .or(source_trunk.map(|t| t.record))
            .unwrap_or_default();
        self.by_dialog
            .insert((dialog.call_id.clone(), local_tag), call_id);
        let session_id = self.rng.random::<u32>() as u64;
        self.calls.insert(
            call_id,
            Box::new(Call {
                dialog,
                invite: request,
                invite_tx: key,
                source,
                local,
                state: CallState::AwaitingMedia,
                remote_offer: remote_offer.map(Box::new),
                our_offer: None,
                local_sdp: None,
                sdp_version: SessionVersion {
                    session_id,
                    version: 1,
                },
                local_rtp: None,
                answer_delay: Duration::from_millis(route.answer_delay_ms),
                pending_bye_reason: None,
                srtp_keys,
                capabilities,
                service: route.service,
                outbound: None,
                transfer: None,
                referring: false,
                reinviting: false,
                reinvite_after_ack: None,
                session_expires: session_expires.map(|i| (i, false)),
                peer_100rel,
                rseq: 0,
                unacked_provisional: None,
            }),
        );
        self.outputs.push_back(UaOutput::IncomingCall {
            call: call_id,
            service: route.service,
            remote_media,
            from,
            to,
            remote_dn,
            route_dn,
            local,
            conference: route.conference,
            play,
            replaces,
            record,
            trunk,
            rtp_source: route.rtp_source,
        });
    }

    /// The call an INVITE's Replaces header names (RFC 3891 §3): Call-ID, to-tag (our tag)
    /// and from-tag (the peer's) of a confirmed dialog. None without the header.
    fn replaced_call(&self, request: &Request) -> Result<Option<CallId>, (u16, &'static str)> {
        let values: Vec<&str> = request.headers.get_all("Replaces").collect();
        let value = match values.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => return Err((400, "Bad Request - more than one Replaces")),
        };
        let mut parts = value.split(';').map(str::trim);
        let call_id = parts.next().unwrap_or_default();
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for p in parts {
            let (name, v) = p.split_once('=').unwrap_or((p, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to_tag = Some(v.trim()),
                "from-tag" => from_tag = Some(v.trim()),
                "early-only" => early_only = true,
                _ => {}
            }
        }
        let (Some(to_tag), Some(from_tag)) = (to_tag, from_tag) else {
            return Err((400, "Bad Request - Replaces needs to-tag and from-tag"));
        };
        let Some(&old) = self
            .by_dialog
            .get(&(call_id.to_string(), to_tag.to_string()))
        else {
            return Err((481, "Call/Transaction Does Not Exist"));
        };
        let call = &self.calls[&old];
        if call.dialog.remote_tag.as_deref() != Some(from_tag) {
            return Err((481, "Call/Transaction Does Not Exist"));
        }
        match call.state {
            CallState::Confirmed if early_only => Err((486, "Busy Here")),
            CallState::Confirmed => Ok(Some(old)),
            // Early dialogs we did not start, and dialogs on their way out, cannot be taken.
            _ => Err((481, "Call/Transaction Does Not Exist")),
        }
    }

    pub(super) fn on_cancel(&mut self, now: Instant, key: TransactionKey, cancel: &Request) {
        let Some(invite_key) = self.transactions.invite_for_cancel(cancel) else {
            self.respond_simple(now, &key, cancel, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let call = self
            .calls
            .iter()
            .find(|(_, c)| c.invite_tx == invite_key)
            .map(|(id, c)| (*id, c.state));
        let mut ok = self.base_response(cancel, 200, "OK");
        if let Some((call_id, _)) = call {
            // §9.2: the same To tag as the responses to the INVITE.
            ok.headers
                .set_to_tag(&self.calls[&call_id].dialog.local_tag);
        }
        self.respond(now, &key, ok);
        // §9.2: a CANCEL after the final response changes nothing — our 2xx went, whether
        // the call is up or the owner's BYE waits for the ACK.
        let Some((call_id, state)) = call else { return };
        if matches!(
            state,
            CallState::Answered | CallState::Confirmed | CallState::ByePending
        ) {
            return;
        }
        let response = self.response_for_call(call_id, 487, "Request Terminated", None);
        self.respond_invite(now, call_id, response);
        self.end_call(call_id, Some(EndReason::Cancelled));
    }

    pub(super) fn on_ack(&mut self, now: Instant, ack: &Request) {
        let Some(tag) = ack.headers.to_tag().map(str::to_string) else {
            return;
        };
        let call_id_header = ack.headers.call_id().unwrap_or_default().to_string();
        let Some(&call_id) = self.by_dialog.get(&(call_id_header, tag)) else {
            return;
        };
        let call = self
            .calls
            .get_mut(&call_id)
            .expect("by_dialog only names live calls");
        if call.state == CallState::ByePending {
            self.transactions.ack_received(&call.invite_tx);
            let reason = call.pending_bye_reason.take().unwrap_or_default();
            self.send_bye(now, call_id, &reason);
            self.end_call(call_id, None);
            return;
        }
        if call.state != CallState::Answered {
            return; // a retransmitted ACK
        }
        self.transactions.ack_received(&call.invite_tx);
        call.state = CallState::Confirmed;
        let Some(our_offer) = call.our_offer.take().map(|offer| *offer) else {
            self.send_reinvite_held_for_ack(now, call_id);
            return;
        };
        let answer = SessionDescription::parse(&String::from_utf8_lossy(&ack.body));
        match answer
            .map_err(|e| e.to_string())
            .and_then(|a| sdp::accept_answer(&our_offer, &a).map_err(|e| e.to_string()))
        {
            Ok(media) => {
                self.outputs.push_back(UaOutput::MediaUpdated {
                    call: call_id,
                    media,
                });
                self.send_reinvite_held_for_ack(now, call_id);
            }
            Err(e) => {
                tracing::info!(call = call_id, error = %e, "ACK without a usable SDP answer");
                self.send_bye(now, call_id, "SIP;cause=488;text=\"Not Acceptable Here\"");
                self.end_call(call_id, Some(EndReason::BadAnswer));
            }
        }
    }

    /// The re-INVITE asked for between our 2xx and its ACK (a hold right after the answer),
    /// now that the call is confirmed.
    fn send_reinvite_held_for_ack(&mut self, now: Instant, call_id: CallId) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(direction) = call.reinvite_after_ack.take() else {
            return;
        };
        call.reinviting = false;
        if let Err(e) = self.reinvite(now, call_id, direction) {
            tracing::warn!(call = call_id, error = %e, "re-INVITE held for the ACK not sent");
            self.reinvite_failed(call_id, 500);
        }
    }

    pub(super) fn on_ack_timeout(&mut self, now: Instant, key: &TransactionKey) {
        let Some(call_id) = self
            .calls
            .iter()
            .find(|(_, c)| {
                &c.invite_tx == key
                    && matches!(c.state, CallState::Answered | CallState::ByePending)
            })
            .map(|(id, _)| *id)
        else {
            return;
        };
        if let Some(reason) = self.calls[&call_id].pending_bye_reason.clone() {
            // The owner already ended this call; only the held-back BYE remains.
            self.send_bye(now, call_id, &reason);
            self.end_call(call_id, None);
            return;
        }
        // §13.3.1.4: no ACK for our 2xx — the session is over; tell the peer with a BYE.
        self.send_bye(now, call_id, "SIP;cause=408;text=\"ACK Timeout\"");
        self.end_call(call_id, Some(EndReason::AckTimeout));
    }

    /// A provisional response to the call's INVITE: reliable (RFC 3262: Require: 100rel,
    /// RSeq, retransmitted until PRACKed) when the caller requires it, or when it supports it
    /// and the response carries our SDP; one reliable provisional at a time (§3).
    pub(super) fn send_provisional(
        &mut self,
        now: Instant,
        call_id: CallId,
        status: u16,
        reason: &str,
        body: Option<&SessionDescription>,
    ) {
        let mut response = self.response_for_call(call_id, status, reason, body);
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let reliable = match call.peer_100rel {
            Some(true) => true,
            Some(false) => body.is_some(),
            None => false,
        };
        if reliable && call.unacked_provisional.is_none() {
            call.rseq += 1;
            response.headers.push("Require", "100rel");
            response.headers.push("RSeq", call.rseq.to_string());
            let t1 = self.settings.timers.t1;
            call.unacked_provisional = Some(Box::new(UnackedProvisional {
                response: response.clone(),
                rseq: call.rseq,
                interval: t1,
                give_up: now + t1 * 64,
            }));
            self.prack_timers.arm(call_id, now + t1);
        } else if reliable {
            // §3: the next reliable provisional waits for the PRACK of this one; an
            // unreliable one would break the caller's Require.
            if call.peer_100rel == Some(true) {
                return;
            }
        }
        self.respond_invite(now, call_id, response);
    }

    /// Retransmits unacknowledged reliable provisionals at T1, 2·T1 ...; without a PRACK
    /// within 64·T1 the INVITE is refused (RFC 3262 §3).
    pub(super) fn retransmit_provisionals(&mut self, now: Instant) {
        while let Some(call_id) = self.prack_timers.pop_due(now) {
            let Some(call) = self.calls.get_mut(&call_id) else {
                continue;
            };
            let Some(pending) = call.unacked_provisional.as_mut() else {
                continue;
            };
            if now >= pending.give_up {
                call.unacked_provisional = None;
                tracing::info!(call = call_id, "no PRACK for our reliable provisional");
                self.reject(now, call_id, 504, "Server Time-out - no PRACK");
                continue;
            }
            let response = pending.response.clone();
            pending.interval = (pending.interval * 2).min(self.settings.timers.t2 * 8);
            let next = (now + pending.interval).min(pending.give_up);
            self.prack_timers.arm(call_id, next);
            self.respond_invite(now, call_id, response);
        }
    }

    /// PRACK (RFC 3262 §3): its RAck names our unacknowledged reliable provisional.
    pub(super) fn on_prack(
        &mut self,
        now: Instant,
        key: TransactionKey,
        call_id: CallId,
        request: Request,
    ) {
        let rack: Option<(u32, u32)> = request.headers.get("RAck").and_then(|v| {
            let mut parts = v.split_whitespace();
            let rseq = parts.next()?.parse().ok()?;
            let cseq = parts.next()?.parse().ok()?;
            parts
                .next()
                .filter(|m| m.eq_ignore_ascii_case("INVITE"))
                .map(|_| (rseq, cseq))
        });
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let invite_cseq = call.invite.headers.cseq().map(|c| c.seq).ok();
        let matches = match (&call.unacked_provisional, rack) {
            (Some(p), Some((rseq, cseq))) => p.rseq == rseq && Some(cseq) == invite_cseq,
            _ => false,
        };
        if !matches {
            self.respond_simple(now, &key, &request, 481, "Call/Transaction Does Not Exist");
            return;
        }
        call.unacked_provisional = None;
        self.prack_timers.disarm(call_id);
        self.respond_simple(now, &key, &request, 200, "OK");
    }

    pub(super) fn send_answer(&mut self, now: Instant, call_id: CallId) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        // Once: the offer is dropped with the answer.
        if !matches!(call.state, CallState::AwaitingMedia | CallState::Ringing) {
            return;
        }
        let Some(local_rtp) = call.local_rtp else {
            return;
        };
        let body = match call.remote_offer.take() {
            Some(offer) => {
                match sdp::answer(
                    &offer,
                    &call.capabilities,
                    local_rtp,
                    call.sdp_version,
                    &call.srtp_keys,
                ) {
                    Ok((answer, _)) => answer,
                    Err(e) => {
                        // Checked before media was allocated; only a config change could get here.
                        tracing::warn!(call = call_id, error = %e, "offer no longer acceptable");
                        self.reject(now, call_id, 488, "Not Acceptable Here");
                        return;
                    }
                }
            }
            None => {
                let offer = sdp::offer(
                    &call.capabilities,
                    local_rtp,
                    call.sdp_version,
                    &call.srtp_keys,
                );
                call.our_offer = Some(Box::new(offer.clone()));
                offer
            }
        };
        call.local_sdp = Some(body);
        call.state = CallState::Answered;
        let body = self.calls[&call_id].local_sdp.as_ref();
        let mut response = self.response_for_call(call_id, 200, "OK", body);
        self.add_session_timer(call_id, &mut response);
        self.respond_invite(now, call_id, response);
        self.arm_session_timer(now, call_id);
        self.outputs
            .push_back(UaOutput::CallAnswered { call: call_id });
    }
}

/// How an incoming INVITE is served: from its `[[route]]`, or from the call it replaces.
struct Placement {
    pub(super) service: Service,
    pub(super) answer_delay_ms: u64,
    pub(super) prompt: Option<String>,
    pub(super) srtp: Option<sdp::SrtpPolicy>,
    /// The room of a `conference` route.
    pub(super) conference: Option<RouteRoom>,
    /// The route's directory number.
    pub(super) dn: Option<String>,
    /// The route's `record`.
    pub(super) record: Option<crate::store::RecordPolicy>,
    /// The route's `rtp_source`.
    pub(super) rtp_source: Option<crate::engine::RtpSource>,
}

impl Placement {
    fn of_route(route: &Route, user: &str) -> Placement {
        Placement {
            service: route.service,
            answer_delay_ms: route.answer_delay_ms,
            prompt: route.prompt.clone(),
            srtp: route.srtp,
            conference: route.conference(user),
            dn: route.dn.clone(),
            record: route.record,
            rtp_source: route.rtp_source,
        }
    }
}

/// The caller's number: the user part of the first P-Asserted-Identity URI that has one when
/// `asserted_trusted`, else the From URI's user part; empty when neither has one.
fn caller_number(request: &Request, asserted_trusted: bool) -> String {
    let asserted = request
        .headers
        .get_all("P-Asserted-Identity")
        .filter(|_| asserted_trusted)
        .flat_map(identities)
        .find_map(|identity| identity.uri.user);
    asserted
        .or_else(|| {
            let from = request.headers.get("From")?;
            NameAddr::user_of(from).map(str::to_string)
        })
        .unwrap_or_default()
}

/// The identities of one P-Asserted-Identity value (`"A" <sip:1@h>, <tel:+1>`): split on
/// commas outside quotes and `<...>`; items that do not parse are skipped.
fn identities(value: &str) -> Vec<NameAddr> {
    let (mut items, mut start) = (Vec::new(), 0);
    let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
        .into_iter()
        .filter_map(|item| NameAddr::parse(item).ok())
        .collect()
}

/// `%XX` escapes of a URI parameter value decoded (invalid escapes are kept as they are).
pub(super) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
