//! Requests inside an established dialog: BYE, INFO (DTMF), OPTIONS, and re-INVITE and UPDATE,
//! which share one mid-dialog offer/answer path; and our own BYE.
//!
//! Owns: matching a request to its dialog (481 otherwise) and CSeq order, then the method's
//! answer. REFER and NOTIFY go to `transfer`, PRACK and CANCEL to `uas`.
//! Must not: end a call other than through `UserAgent::end_call`.

use std::time::Instant;

use rand::Rng;

use super::addressing::{contact_for, destination_for, our_via};
use super::session_timer::requested_session_timer;
use super::{ensure_srtp_keys, CallId, CallState, EndReason, UaOutput, UserAgent, ALLOW};
use crate::sdp::{self, NegotiatedMedia, SessionDescription};
use crate::sip::message::{Method, Request};
use crate::sip::transaction::{new_branch, TransactionKey};

/// What a mid-dialog offer/answer exchange (re-INVITE, UPDATE) settled on.
struct MidDialogExchange {
    /// Our SDP for the 2xx: the answer to the peer's offer, or our own offer.
    body: Option<SessionDescription>,
    /// The media the peer's offer negotiated.
    media: Option<NegotiatedMedia>,
    /// Our offer, waiting for the answer in the ACK (re-INVITE without an offer).
    our_offer: Option<SessionDescription>,
}

impl UserAgent {
    pub(super) fn on_dialog_request(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        tag: &str,
    ) {
        let call_id_header = request.headers.call_id().unwrap_or_default().to_string();
        let Some(&call_id) = self.by_dialog.get(&(call_id_header, tag.to_string())) else {
            self.respond_simple(now, &key, &request, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let call = self
            .calls
            .get_mut(&call_id)
            .expect("by_dialog only names live calls");
        if let Err(e) = call.dialog.accept_remote_cseq(&request) {
            let reason = format!("Server Internal Error - {e}");
            self.respond_simple(now, &key, &request, 500, &reason);
            return;
        }
        match request.method {
            Method::Bye => {
                self.respond_simple(now, &key, &request, 200, "OK");
                let call = &self.calls[&call_id];
                // The transferor ends its leg once we accepted its REFER (RFC 5589 §6).
                let reason = if call.transfer.is_some() {
                    EndReason::Transferred
                } else {
                    EndReason::RemoteHangup
                };
                if call.state == CallState::Cancelling {
                    // We already ended it; the INVITE's final response cleans up.
                    return;
                }
                // A BYE on a call we have not answered (early dialog) ends the INVITE too.
                if matches!(
                    self.calls[&call_id].state,
                    CallState::AwaitingMedia | CallState::Ringing
                ) {
                    let response = self.response_for_call(call_id, 487, "Request Terminated", None);
                    self.respond_invite(now, call_id, response);
                }
                let owner_ended = self.calls[&call_id].state == CallState::ByePending;
                self.end_call(call_id, (!owner_ended).then_some(reason));
            }
            Method::Invite => self.on_reinvite(now, key, call_id, request),
            Method::Refer => self.on_refer(now, key, call_id, request),
            Method::Notify => self.on_notify(now, key, call_id, request),
            Method::Update => self.on_update(now, key, call_id, request),
            Method::Prack => self.on_prack(now, key, call_id, request),
            Method::Cancel => self.on_cancel(now, key, &request),
            Method::Options => {
                let response = self.options_response(&request);
                self.respond(now, &key, response);
            }
            Method::Info => {
                // Legacy DTMF INFO (no Info-Package): the digit goes to the call's connection.
                let content_type = request.headers.get("Content-Type").unwrap_or_default();
                if let Some((digit, duration_ms)) = info_digit(content_type, &request.body) {
                    self.outputs.push_back(UaOutput::Digit {
                        call: call_id,
                        digit,
                        duration_ms,
                    });
                }
                self.respond_simple(now, &key, &request, 200, "OK")
            }
            Method::Extension(_) => {
                self.respond_simple(now, &key, &request, 501, "Not Implemented")
            }
            _ => {
                let mut response = self.base_response(&request, 405, "Method Not Allowed");
                response.headers.push("Allow", ALLOW);
                self.respond(now, &key, response);
            }
        }
    }

    /// A re-INVITE (hold, resume, new address, session refresh) on an established call: the
    /// mid-dialog exchange, then the call waits for the ACK of our 2xx (with the answer to our
    /// offer, when the re-INVITE had none).
    fn on_reinvite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        call_id: CallId,
        request: Request,
    ) {
        let Some(exchange) = self.mid_dialog_exchange(now, &key, call_id, &request) else {
            return;
        };
        let call = self
            .calls
            .get_mut(&call_id)
            .expect("the exchange checked it");
        call.invite = request;
        call.invite_tx = key;
        call.our_offer = exchange.our_offer.map(Box::new);
        call.state = CallState::Answered;
        call.unacked_provisional = None;
        self.prack_timers.disarm(call_id);
        let mut response = self.response_for_call(call_id, 200, "OK", exchange.body.as_ref());
        self.add_session_timer(call_id, &mut response);
        self.respond_invite(now, call_id, response);
        // A re-INVITE is a session refresh (RFC 4028 §10).
        self.arm_session_timer(now, call_id);
        self.media_updated(call_id, exchange.media);
    }

    /// UPDATE on an established call (RFC 3311): the mid-dialog exchange, answered at once (a
    /// session refresh, with or without a new offer).
    fn on_update(&mut self, now: Instant, key: TransactionKey, call_id: CallId, request: Request) {
        let Some(exchange) = self.mid_dialog_exchange(now, &key, call_id, &request) else {
            return;
        };
        let call = &self.calls[&call_id];
        let mut response = self.base_response(&request, 200, "OK");
        response
            .headers
            .push("Contact", contact_for(call.source.transport, call.local));
        if let Some(answer) = &exchange.body {
            response.headers.push("Content-Type", "application/sdp");
            response.body = answer.to_text().into_bytes();
        }
        self.add_session_timer(call_id, &mut response);
        self.arm_session_timer(now, call_id);
        self.respond(now, &key, response);
        self.media_updated(call_id, exchange.media);
    }

    /// The offer/answer and target refresh that re-INVITE and UPDATE share: 491 while the call
    /// is not confirmed (§14.2, RFC 3311 §5.2), the refusal of a body we cannot read, 488 for an
    /// offer we cannot answer (the session stays as it was); else our answer — or, for a
    /// re-INVITE without an offer, our offer — becomes the call's SDP, the request's Contact its
    /// remote target (§12.2.2) and its Session-Expires its interval. None: already answered.
    fn mid_dialog_exchange(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        call_id: CallId,
        request: &Request,
    ) -> Option<MidDialogExchange> {
        let call = &self.calls[&call_id];
        if call.state != CallState::Confirmed || call.reinviting {
            // §14.2: a re-INVITE while one is pending gets 491 (before our 2xx is ACKed, or
            // while ours is out).
            self.respond_simple(now, key, request, 491, "Request Pending");
            return None;
        }
        let offer = match self.read_offer(request) {
            Ok(offer) => offer,
            Err((status, reason, _)) => {
                self.respond_simple(now, key, request, status, reason);
                return None;
            }
        };
        if let Some(offer) = &offer {
            let call = self.calls.get_mut(&call_id).expect("looked up above");
            ensure_srtp_keys(call, offer);
        }
        let call = &self.calls[&call_id];
        let local_rtp = call.local_rtp.expect("a confirmed call has media");
        let mut version = call.sdp_version;
        version.version += 1;
        let exchange = match offer {
            Some(offer) => match sdp::answer(
                &offer,
                &call.capabilities,
                local_rtp,
                version,
                &call.srtp_keys,
            ) {
                Ok((answer, media)) => MidDialogExchange {
                    body: Some(answer),
                    media: Some(media),
                    our_offer: None,
                },
                Err(e) => {
                    // §14.2: a rejected offer leaves the session as it was.
                    let mut response = self.base_response(request, 488, "Not Acceptable Here");
                    response
                        .headers
                        .push("Warning", format!("304 callbridge \"{e}\""));
                    self.respond(now, key, response);
                    return None;
                }
            },
            // §14.1: a re-INVITE without an offer asks for ours (answered in the ACK).
            None if request.method == Method::Invite => {
                let ours = sdp::offer(&call.capabilities, local_rtp, version, &call.srtp_keys);
                MidDialogExchange {
                    body: Some(ours.clone()),
                    media: None,
                    our_offer: Some(ours),
                }
            }
            // An UPDATE without an offer only refreshes the session.
            None => MidDialogExchange {
                body: None,
                media: None,
                our_offer: None,
            },
        };
        let call = self.calls.get_mut(&call_id).expect("checked above");
        if let Some(body) = &exchange.body {
            call.sdp_version = version;
            call.local_sdp = Some(body.clone());
        }
        call.dialog.refresh_target(&request.headers);
        if let Ok(Some(interval)) = requested_session_timer(request) {
            call.session_expires = Some((interval, false));
        }
        Some(exchange)
    }

    /// The peer's offer changed the call's media: the owner is told.
    fn media_updated(&mut self, call_id: CallId, media: Option<NegotiatedMedia>) {
        if let Some(media) = media {
            self.outputs.push_back(UaOutput::MediaUpdated {
                call: call_id,
                media,
            });
        }
    }

    pub(super) fn send_bye(&mut self, now: Instant, call_id: CallId, reason: &str) {
        let branch = new_branch(self.rng.random());
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut bye, next_hop) = call.dialog.new_request(Method::Bye, &via, &contact);
        bye.headers.push("Reason", reason);
        bye.headers
            .push("User-Agent", self.settings.user_agent.clone());
        let destination = destination_for(&next_hop, call.source);
        if let Err(e) = self.transactions.send_request(now, bye, destination) {
            tracing::warn!(call = call_id, error = %e, "cannot send BYE");
        }
        self.drain_transactions(now, None);
    }
}

/// The digit of a DTMF INFO body: `application/dtmf-relay` (`Signal=5` / `Duration=160`
/// lines) or `application/dtmf` (the digit alone). None for other bodies or non-digits.
pub(super) fn info_digit(content_type: &str, body: &[u8]) -> Option<(char, u32)> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let (signal, duration) = match media_type.as_str() {
        "application/dtmf-relay" => {
            let mut signal = None;
            let mut duration = 0;
            for line in text.lines() {
                let Some((name, value)) = line.split_once('=') else {
                    continue;
                };
                match name.trim().to_ascii_lowercase().as_str() {
                    "signal" => signal = Some(value.trim().to_string()),
                    "duration" => duration = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            (signal?, duration)
        }
        "application/dtmf" => (text.trim().to_string(), 0),
        _ => return None,
    };
    // Signal is a digit or its RFC 4733 event code ("10" for '*'); hook flash is no digit.
    use crate::media::dtmf::{digit_to_event, event_to_digit};
    let code = match signal.parse::<u8>() {
        Ok(code) => code,
        Err(_) => {
            let mut chars = signal.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => digit_to_event(c)?,
                _ => return None,
            }
        }
    };
    let digit = event_to_digit(code).filter(|&d| d != '!')?;
    Some((digit, duration))
}
