//! INVITEs we send (UAC): the INVITE and its offer, provisional and final responses (early
//! media, the answer in the 2xx), the ACK, one Digest retry on 401/407, CANCEL, and the 2xx of
//! a second fork (ACKed and ended at once).
//!
//! Owns: the life of a call we place until its dialog is confirmed or the INVITE fails, and the
//! outcome of our REFERs' transactions.
//! Must not: answer requests (that is `uas` and `in_dialog`), or end a call other than through
//! `UserAgent::end_call`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::addressing::{contact_for, destination_for, our_via};
use super::session_timer::session_timer_of_answer;
use super::{
    initial_srtp_keys, Call, CallId, CallState, ClientTx, Credentials, EndReason, OutboundInvite,
    UaOutput, UserAgent, ALLOW,
};
use crate::sdp::{self, NegotiatedMedia, SessionDescription, SessionVersion};
use crate::sip::dialog::{set_tag, Dialog};
use crate::sip::message::{Headers, Host, Method, Request, Response, SipMessage};
use crate::sip::transaction::{new_branch, Peer, TransactionKey};

/// Our INVITE given up without a final response, remembered for 64*T1: a 2xx that still
/// comes is ACKed, and ended if it starts a session ([`UserAgent::on_stray_response`]).
#[derive(Debug)]
pub(super) struct Abandoned {
    /// A request of the INVITE's dialog as the INVITE left it — the INVITE itself, or for a
    /// re-INVITE an ACK built from the dialog it was sent in: what a late 2xx's ACK is built
    /// from (its Call-ID, tags, CSeq number and route set).
    pub(super) request: Request,
    /// Where the INVITE went.
    pub(super) to: Peer,
    /// A call's first INVITE: its late session is ended by BYE (a re-INVITE's call has its
    /// own fate).
    pub(super) end: bool,
    /// The ACK of its first late 2xx and where it went, re-sent on each retransmission.
    pub(super) ack: Option<Box<(Peer, Request)>>,
}

/// The UAC side of a call we placed.
#[derive(Debug)]
pub(super) struct Outbound {
    pub(super) credentials: Option<Credentials>,
    /// A challenge was answered (once per call).
    pub(super) authenticated: bool,
    /// A provisional response came, so CANCEL may go (§9.1).
    pub(super) provisional: bool,
    /// The owner hung up before any provisional: CANCEL as soon as one comes.
    pub(super) cancel_wanted: bool,
    /// The answer in an 18x (early media).
    pub(super) early_answer: Option<NegotiatedMedia>,
    /// The REFER this INVITE carries out.
    pub(super) refer_of: Option<CallId>,
}

impl UserAgent {
    /// [`UserAgent::invite`]: our INVITE with our offer, and the call that waits for its answer.
    pub(super) fn place_call(
        &mut self,
        now: Instant,
        out: OutboundInvite,
    ) -> Result<CallId, String> {
        let local_tag = self.random_token();
        let call_id_header = format!(
            "{}@{}",
            self.random_token(),
            crate::text::host_port(out.local)
        );
        let mut from = out.from.clone();
        set_tag(&mut from, Some(&local_tag));
        let mut to = out.to.clone();
        set_tag(&mut to, None);
        let srtp = out.srtp.unwrap_or(self.settings.capabilities.srtp);
        let capabilities = self.settings.capabilities_with(srtp, out.codecs.as_ref());
        let srtp_keys = initial_srtp_keys(&capabilities, None);
        let version = SessionVersion {
            session_id: self.rng.random::<u32>() as u64,
            version: 1,
        };
        let offer = sdp::offer(&capabilities, out.local_rtp, version, &srtp_keys);
        let branch = new_branch(self.rng.random());
        let transport = out.destination.transport;
        let mut headers = Headers::default();
        headers.push("Via", our_via(transport, out.local, &branch).to_string());
        headers.push("Max-Forwards", "70");
        headers.push("From", from.to_string());
        headers.push("To", to.to_string());
        headers.push("Call-ID", call_id_header);
        headers.push("CSeq", "1 INVITE");
        headers.push("Contact", contact_for(transport, out.local));
        headers.push("Allow", ALLOW);
        // No "timer": we never refresh sessions ourselves (RFC 4028 lets the UAS do it).
        headers.push("Supported", "replaces, norefersub");
        headers.push("User-Agent", self.settings.user_agent.clone());
        for (name, value) in &out.headers {
            headers.push(name, value.clone());
        }
        headers.push("Content-Type", "application/sdp");
        let request = Request {
            method: Method::Invite,
            uri: out.target.clone(),
            headers,
            body: offer.to_text().into_bytes(),
        };
        let dialog = Dialog::new_uac(&request).map_err(|e| e.to_string())?;
        let key = self
            .transactions
            .send_request(now, request.clone(), out.destination)
            .map_err(|e| e.to_string())?;
        let call_id = self.next_call;
        self.next_call += 1;
        self.client_tx.insert(
            key.clone(),
            ClientTx::Invite {
                call: call_id,
                ack: None,
            },
        );
        self.by_dialog
            .insert((dialog.call_id.clone(), dialog.local_tag.clone()), call_id);
        self.calls.insert(
            call_id,
            Box::new(Call {
                dialog,
                invite: request,
                invite_tx: key,
                source: out.destination,
                local: out.local,
                state: CallState::Calling,
                remote_offer: None,
                our_offer: Some(Box::new(offer.clone())),
                local_sdp: Some(offer),
                sdp_version: version,
                local_rtp: Some(out.local_rtp),
                answer_delay: Duration::ZERO,
                pending_bye_reason: None,
                srtp_keys,
                capabilities,
                service: out.service,
                outbound: Some(Box::new(Outbound {
                    credentials: out.credentials,
                    authenticated: false,
                    provisional: false,
                    cancel_wanted: false,
                    early_answer: None,
                    refer_of: out.refer_of,
                })),
                transfer: None,
                referring: false,
                reinviting: false,
                reinvite_after_ack: None,
                session_expires: None,
                peer_100rel: None,
                rseq: 0,
                unacked_provisional: None,
            }),
        );
        self.drain_transactions(now, None);
        Ok(call_id)
    }

    pub(super) fn on_response(&mut self, now: Instant, key: TransactionKey, response: Response) {
        match self.client_tx.get(&key).cloned() {
            Some(ClientTx::Invite { call, ack }) => {
                if let (Some(sent), true) = (ack, (200..300).contains(&response.status)) {
                    let (to, ack) = *sent;
                    let tag = |h: &Headers| h.to().ok().and_then(|t| t.tag().map(str::to_string));
                    if tag(&ack.headers) != tag(&response.headers) {
                        // Another fork answered too (§13.2.2.4): ACK it and end it.
                        self.end_extra_fork(now, &ack, &response, to);
                        return;
                    }
                    // A 2xx retransmission: our ACK was lost (§13.2.2.4).
                    self.outputs.push_back(UaOutput::Transmit {
                        to,
                        message: SipMessage::Request(ack),
                    });
                    return;
                }
                self.on_invite_response(now, call, key, response);
            }
            Some(ClientTx::Reinvite {
                call, offer, ack, ..
            }) => {
                if let (Some(sent), true) = (ack, (200..300).contains(&response.status)) {
                    // A 2xx retransmission: our ACK was lost (§13.2.2.4).
                    let (to, ack) = *sent;
                    self.outputs.push_back(UaOutput::Transmit {
                        to,
                        message: SipMessage::Request(ack),
                    });
                    return;
                }
                self.on_reinvite_response(key, call, &offer, response);
            }
            Some(ClientTx::Refer { call }) if response.status >= 200 => {
                self.client_tx.remove(&key);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.referring = (200..300).contains(&response.status);
                }
                self.outputs.push_back(UaOutput::ReferAnswered {
                    call,
                    status: response.status,
                });
            }
            _ => {}
        }
    }

    /// A 2xx from a second fork of our INVITE (a proxy forked it and two UASs answered): the
    /// call already has its dialog, so this one gets its ACK and, at once, a BYE.
    fn end_extra_fork(&mut self, now: Instant, our_ack: &Request, response: &Response, to: Peer) {
        let reason = "SIP;cause=200;text=\"Call completed elsewhere\"";
        self.ack_and_bye(now, our_ack, response, to, Some(reason));
    }

    /// Our INVITE `call` is given up without a final response (Timer B, or no answer to our
    /// CANCEL): for 64*T1 a 2xx that still comes is ours to ACK and end
    /// ([`UserAgent::on_stray_response`]).
    pub(super) fn abandon(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let abandoned = Abandoned {
            request: c.invite.clone(),
            to: c.source,
            end: true,
            ack: None,
        };
        self.remember_abandoned(now, abandoned);
    }

    /// For 64*T1, a 2xx to `abandoned`'s INVITE is ACKed (and its session ended if it is a
    /// call's first INVITE).
    pub(super) fn remember_abandoned(&mut self, now: Instant, abandoned: Abandoned) {
        let h = &abandoned.request.headers;
        let (Ok(call_id), Ok(cseq)) = (h.call_id(), h.cseq()) else {
            return;
        };
        let key = (call_id.to_string(), cseq.seq);
        let until = now + self.settings.timers.t1 * 64;
        if self
            .abandoned
            .insert(key.clone(), Box::new(abandoned))
            .is_none()
        {
            self.abandoned_until.push_back((until, key));
        }
    }

    /// A response that matches no transaction. A 2xx to an INVITE we gave up
    /// ([`UserAgent::abandon`], or a re-INVITE's Timer B) gets its ACK (RFC 3261 §13.2.2.4:
    /// every 2xx is ACKed, its retransmissions again); a call's first INVITE, the first time,
    /// a BYE as well: the far end answered a call that is over for us, and would otherwise
    /// play to nobody until it gives up on the ACK 32 s later (and then BYE the call a
    /// re-INVITE's 2xx belongs to). Any other stray response changes nothing (a 2xx to an
    /// INVITE we never sent would make us a reflector).
    pub(super) fn on_stray_response(&mut self, now: Instant, response: &Response, source: Peer) {
        if !(200..300).contains(&response.status) {
            return;
        }
        let h = &response.headers;
        let (Ok(cseq), Ok(call_id), Ok(from)) = (h.cseq(), h.call_id(), h.from()) else {
            return;
        };
        if cseq.method != Method::Invite {
            return;
        }
        let key = (call_id.to_string(), cseq.seq);
        let Some(abandoned) = self.abandoned.get(&key) else {
            return;
        };
        let ours = abandoned.request.headers.from();
        if !ours.is_ok_and(|f| f.tag() == from.tag()) {
            return;
        }
        let tag = |h: &Headers| h.to().ok().and_then(|t| t.tag().map(str::to_string));
        match &abandoned.ack {
            Some(sent) if tag(&sent.1.headers) == tag(h) => {
                let (to, ack) = (**sent).clone();
                self.outputs.push_back(UaOutput::Transmit {
                    to,
                    message: SipMessage::Request(ack),
                });
            }
            _ => {
                let ours = abandoned.request.clone();
                let to = Peer {
                    addr: abandoned.to.addr,
                    transport: source.transport,
                };
                let reason = abandoned
                    .end
                    .then_some("SIP;cause=408;text=\"Answered after the INVITE timed out\"");
                let ack = self.ack_and_bye(now, &ours, response, to, reason);
                if let (Some(ack), Some(abandoned)) = (ack, self.abandoned.get_mut(&key)) {
                    abandoned.ack.get_or_insert(Box::new(ack));
                }
            }
        }
    }

    /// The ACK of a 2xx to `ours` (our INVITE, or an ACK in its dialog) in the 2xx's dialog,
    /// sent towards `to`, then with a `reason` a BYE in the same dialog: a session we do not
    /// want, ended as soon as it starts. Returns the ACK and where it went.
    fn ack_and_bye(
        &mut self,
        now: Instant,
        ours: &Request,
        response: &Response,
        to: Peer,
        reason: Option<&str>,
    ) -> Option<(Peer, Request)> {
        let ack_branch = new_branch(self.rng.random());
        let bye_branch = new_branch(self.rng.random());
        let mut dialog = Dialog::new_uac(ours).ok()?;
        dialog.confirm_uac(response);
        let via = ours.headers.top_via().ok()?;
        let local = match (&via.host, via.port) {
            (Host::V4(ip), port) => SocketAddr::new((*ip).into(), port.unwrap_or(5060)),
            (Host::V6(ip), port) => SocketAddr::new((*ip).into(), port.unwrap_or(5060)),
            (Host::Domain(_), _) => return None,
        };
        let contact = contact_for(to.transport, local);
        let (mut ack, next_hop) = dialog.new_request(
            Method::Ack,
            &our_via(to.transport, local, &ack_branch),
            &contact,
        );
        ack.headers.remove("Contact");
        let destination = destination_for(&next_hop, to);
        self.outputs.push_back(UaOutput::Transmit {
            to: destination,
            message: SipMessage::Request(ack.clone()),
        });
        if let Some(reason) = reason {
            let (mut bye, _) = dialog.new_request(
                Method::Bye,
                &our_via(to.transport, local, &bye_branch),
                &contact,
            );
            bye.headers.push("Reason", reason);
            if let Err(e) = self.transactions.send_request(now, bye, destination) {
                tracing::debug!(error = %e, "cannot end an unwanted session");
            }
            self.drain_transactions(now, None);
        }
        Some((destination, ack))
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        call_id: CallId,
        key: TransactionKey,
        response: Response,
    ) {
        let status = response.status;
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.invite_tx != key {
            return; // the answer to an attempt we already re-sent with credentials
        }
        let state = call.state;
        let Some(out) = call.outbound.as_mut() else {
            return;
        };
        match status {
            100..=199 => {
                // §9.1: any provisional response, 100 Trying too, lets a CANCEL go.
                out.provisional = true;
                if out.cancel_wanted {
                    out.cancel_wanted = false;
                    self.send_cancel(now, call_id);
                    return;
                }
                if status == 100 || state != CallState::Calling {
                    return;
                }
                if has_tag(&response) {
                    call.dialog.confirm_uac(&response); // the early dialog
                }
                if out.early_answer.is_none() && !response.body.is_empty() {
                    if let Some(media) = call
                        .our_offer
                        .as_ref()
                        .and_then(|offer| answer_in(&response, offer).ok())
                    {
                        out.early_answer = Some(media.clone());
                        self.outputs.push_back(UaOutput::MediaUpdated {
                            call: call_id,
                            media,
                        });
                    }
                }
                self.outputs.push_back(UaOutput::Progress {
                    call: call_id,
                    status,
                });
            }
            200..=299 => {
                call.dialog.confirm_uac(&response);
                self.send_ack(call_id, &key);
                let call = self.calls.get_mut(&call_id).expect("looked up above");
                if state == CallState::Cancelling {
                    // The 2xx crossed our CANCEL: the call is over all the same (§9.1).
                    call.state = CallState::Confirmed;
                    self.send_bye(now, call_id, "SIP;cause=487;text=\"Request Terminated\"");
                    self.end_call(call_id, None);
                    return;
                }
                if state != CallState::Calling {
                    return;
                }
                call.state = CallState::Confirmed;
                let offer = *call.our_offer.take().expect("our INVITE carried an offer");
                let early = call.outbound.as_mut().and_then(|o| o.early_answer.take());
                let media = if response.body.is_empty() {
                    early.ok_or_else(|| "the 2xx carries no SDP answer".to_string())
                } else {
                    answer_in(&response, &offer)
                };
                call.session_expires = session_timer_of_answer(&response);
                self.arm_session_timer(now, call_id);
                match media {
                    Ok(media) => {
                        self.outputs.push_back(UaOutput::MediaUpdated {
                            call: call_id,
                            media,
                        });
                        self.outputs
                            .push_back(UaOutput::CallAnswered { call: call_id });
                        self.transfer_outcome_for_new_call(now, call_id, 200, "OK");
                    }
                    Err(e) => {
                        tracing::info!(call = call_id, error = %e, "2xx without a usable SDP answer");
                        self.send_bye(now, call_id, "SIP;cause=488;text=\"Not Acceptable Here\"");
                        self.transfer_outcome_for_new_call(
                            now,
                            call_id,
                            488,
                            "Not Acceptable Here",
                        );
                        self.end_call(call_id, Some(EndReason::BadAnswer));
                    }
                }
            }
            401 | 407
                if state == CallState::Calling
                    && !out.authenticated
                    && out.credentials.is_some() =>
            {
                if !self.retry_with_credentials(now, call_id, &response) {
                    self.invite_failed(now, call_id, status, &response.reason);
                }
            }
            _ => match state {
                CallState::Cancelling => self.end_call(call_id, None),
                CallState::Calling => self.invite_failed(now, call_id, status, &response.reason),
                _ => {}
            },
        }
    }

    /// Our INVITE failed with a final `status`: the call ends (the owner is told).
    fn invite_failed(&mut self, now: Instant, call_id: CallId, status: u16, reason: &str) {
        self.transfer_outcome_for_new_call(now, call_id, status, reason);
        self.end_call(
            call_id,
            Some(if status == 408 {
                EndReason::NoAnswer
            } else {
                EndReason::Rejected(status)
            }),
        );
    }

    pub(super) fn on_client_timeout(&mut self, now: Instant, key: &TransactionKey) {
        match self.client_tx.get(key).cloned() {
            Some(ClientTx::Invite { call, .. }) => {
                let Some(c) = self.calls.get(&call) else {
                    return;
                };
                if &c.invite_tx != key {
                    return;
                }
                match c.state {
                    CallState::Calling => {
                        self.transfer_outcome_for_new_call(now, call, 408, "Request Timeout");
                        self.abandon(now, call);
                        self.end_call(call, Some(EndReason::NoAnswer));
                    }
                    CallState::Cancelling => {
                        self.abandon(now, call);
                        self.end_call(call, None);
                    }
                    _ => {}
                }
            }
            Some(ClientTx::Reinvite { call, .. }) => self.on_reinvite_timeout(now, key, call),
            Some(ClientTx::Refer { call }) => {
                self.client_tx.remove(key);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.referring = false;
                }
                self.outputs
                    .push_back(UaOutput::ReferAnswered { call, status: 408 });
            }
            None => {}
        }
    }

    /// The ACK for the 2xx to our INVITE (§13.2.2.4): outside any transaction, remembered
    /// for the 2xx's retransmissions.
    fn send_ack(&mut self, call_id: CallId, key: &TransactionKey) {
        let branch = new_branch(self.rng.random());
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut ack, next_hop) = call.dialog.new_request(Method::Ack, &via, &contact);
        ack.headers.remove("Contact");
        let to = destination_for(&next_hop, call.source);
        if let Some(ClientTx::Invite { ack: slot, .. }) = self.client_tx.get_mut(key) {
            *slot = Some(Box::new((to, ack.clone())));
        }
        self.outputs.push_back(UaOutput::Transmit {
            to,
            message: SipMessage::Request(ack),
        });
    }

    /// CANCEL of our INVITE (§9.1): its Request-URI, Call-ID, From, To, CSeq number, Route
    /// and top Via.
    pub(super) fn send_cancel(&mut self, now: Instant, call_id: CallId) {
        let call = &self.calls[&call_id];
        let invite = &call.invite;
        let mut headers = Headers::default();
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(value) = invite.headers.get(name) {
                headers.push(name, value.to_string());
            }
        }
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        headers.push("CSeq", format!("{seq} CANCEL"));
        for route in invite.headers.get_all("Route") {
            headers.push("Route", route.to_string());
        }
        headers.push("User-Agent", self.settings.user_agent.clone());
        let cancel = Request {
            method: Method::Cancel,
            uri: invite.uri.clone(),
            headers,
            body: Vec::new(),
        };
        if let Err(e) = self.transactions.send_request(now, cancel, call.source) {
            tracing::warn!(call = call_id, error = %e, "cannot send CANCEL");
        }
        // §9.1: no final response to the INVITE within 64*T1 of the CANCEL ends it (a timeout,
        // which ends the Cancelling call).
        self.transactions.bound_wait(now, &call.invite_tx);
        self.drain_transactions(now, None);
    }

    /// A 401/407 to our INVITE: the same INVITE again with our Digest answer, once.
    fn retry_with_credentials(
        &mut self,
        now: Instant,
        call_id: CallId,
        response: &Response,
    ) -> bool {
        let (challenge_header, answer_header) = if response.status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let challenge = match response
            .headers
            .get_all(challenge_header)
            .map(crate::sip::digest::Challenge::parse)
            .find_map(Result::ok)
        {
            Some(c) => c,
            None => {
                tracing::warn!(call = call_id, "no Digest MD5 challenge we can answer");
                return false;
            }
        };
        let cnonce = self.random_token();
        let branch = new_branch(self.rng.random());
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let out = call.outbound.as_mut().expect("caller checked");
        let Some(credentials) = out.credentials.clone() else {
            return false;
        };
        out.authenticated = true;
        out.provisional = false;
        let mut invite = call.invite.clone();
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1) + 1;
        invite.headers.set("CSeq", format!("{seq} INVITE"));
        invite.headers.set(
            "Via",
            our_via(call.source.transport, call.local, &branch).to_string(),
        );
        let uri = invite.uri.to_string();
        invite.headers.set(
            answer_header,
            challenge.answer(
                &credentials.username,
                &credentials.password,
                "INVITE",
                &uri,
                &cnonce,
            ),
        );
        call.dialog.local_seq = seq;
        let key = match self
            .transactions
            .send_request(now, invite.clone(), call.source)
        {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(call = call_id, error = %e, "cannot re-send INVITE");
                return false;
            }
        };
        call.invite = invite;
        call.invite_tx = key.clone();
        self.client_tx.insert(
            key,
            ClientTx::Invite {
                call: call_id,
                ack: None,
            },
        );
        self.drain_transactions(now, None);
        true
    }
}

fn has_tag(response: &Response) -> bool {
    response.headers.to().is_ok_and(|t| t.tag().is_some())
}

/// The SDP answer in a response to our offer.
pub(super) fn answer_in(
    response: &Response,
    offer: &SessionDescription,
) -> Result<NegotiatedMedia, String> {
    let text = std::str::from_utf8(&response.body).map_err(|_| "SDP is not UTF-8".to_string())?;
    let answer = SessionDescription::parse(text).map_err(|e| e.to_string())?;
    sdp::accept_answer(offer, &answer).map_err(|e| e.to_string())
}
