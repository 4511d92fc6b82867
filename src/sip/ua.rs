//! The user agent core: turns SIP requests into calls, and calls back into SIP.
//!
//! Owns: every call's dialog and INVITE session (offer/answer, ringing, ACK, BYE, CANCEL),
//! the transaction layer, inbound routing (`[[route]]`) and the answers to requests outside
//! calls (OPTIONS, unknown methods, malformed requests).
//! Must not: touch sockets, read the clock, or allocate media. It asks its owner for media
//! through [`UaOutput::IncomingCall`] and is told the result through [`UserAgent::accept`] /
//! [`UserAgent::reject`] — the seam where a dialog binds to a media connection.
//!
//! Every call ends exactly once: either the dialog ends it ([`UaOutput::CallEnded`]) or the
//! owner does ([`UserAgent::hangup`], which emits nothing back, as the owner already knows).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::dialog::{set_tag, Dialog};
use super::message::{Host, Method, Request, Response, SipMessage, Via};
use super::transaction::{
    new_branch, Peer, TimerValues, TransactionKey, TransactionLayer, Transport, TxEvent,
};
use crate::app::config::{Route, Service};
use crate::sdp::{self, LocalCapabilities, NegotiatedMedia, SessionDescription, SessionVersion};

/// Our id for a call (one dialog bound to one connection).
pub type CallId = u64;

/// Methods we implement, for Allow headers and 405/501 decisions.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";

/// What the UA needs to know about itself.
#[derive(Debug, Clone)]
pub struct UaSettings {
    pub user_agent: String,
    pub timers: TimerValues,
    pub routes: Vec<Route>,
    pub capabilities: LocalCapabilities,
}

/// Why a call's dialog ended, as seen by SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// BYE from the peer.
    RemoteHangup,
    /// CANCEL before we answered.
    Cancelled,
    /// Our 2xx was never acknowledged.
    AckTimeout,
    /// The INVITE could not be completed (we rejected it, or its transaction failed).
    InviteFailed,
    /// The ACK did not carry a usable answer to the offer in our 2xx.
    BadAnswer,
}

/// What the UA wants its owner to do or know.
#[derive(Debug)]
pub enum UaOutput {
    /// Send this message.
    Transmit { to: Peer, message: SipMessage },
    /// A routed INVITE: allocate media and call [`UserAgent::accept`] (or `reject`).
    IncomingCall {
        call: CallId,
        service: Service,
        /// The peer's media from its offer; None when the INVITE had no SDP (we offer in 2xx).
        remote_media: Option<NegotiatedMedia>,
        from: String,
        to: String,
        /// Our SIP address as the peer reaches it (used as the media address fallback).
        local: SocketAddr,
    },
    /// The call's media changed (answer in ACK, re-INVITE).
    MediaUpdated {
        call: CallId,
        media: NegotiatedMedia,
    },
    /// We sent the 2xx.
    CallAnswered { call: CallId },
    /// The dialog is over; the owner releases the call's connection.
    CallEnded { call: CallId, reason: EndReason },
}

/// The user agent. One per process, owned by the control plane.
pub struct UserAgent {
    settings: UaSettings,
    transactions: TransactionLayer,
    calls: HashMap<CallId, Call>,
    /// (Call-ID, our tag) → call, for requests inside a dialog.
    by_dialog: HashMap<(String, String), CallId>,
    /// Ringing calls due to be answered, ordered by time.
    answer_timers: BTreeSet<(Instant, CallId)>,
    outputs: VecDeque<UaOutput>,
    rng: rand::rngs::StdRng,
    next_call: CallId,
}

/// One call's SIP side.
struct Call {
    dialog: Dialog,
    /// The INVITE that created the call, to build its responses.
    invite: Request,
    /// Its server transaction (the current INVITE's, after a re-INVITE).
    invite_tx: TransactionKey,
    /// Where the peer's signalling comes from.
    source: Peer,
    /// Our SIP address as the peer reaches it.
    local: SocketAddr,
    state: CallState,
    /// The peer's offer that we must answer, if it made one.
    remote_offer: Option<SessionDescription>,
    /// Our offer in a 2xx, waiting for the answer in the ACK.
    our_offer: Option<SessionDescription>,
    /// Our current SDP (answer or offer) and its o= version.
    local_sdp: Option<SessionDescription>,
    sdp_version: SessionVersion,
    /// The bound connection's local RTP address, once accepted.
    local_rtp: Option<SocketAddr>,
    answer_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// IncomingCall emitted, waiting for the owner to accept or reject.
    AwaitingMedia,
    /// 180 sent, answer due at the timer.
    Ringing,
    /// 2xx sent, ACK not yet seen.
    Answered,
    /// ACK seen.
    Confirmed,
}

impl UserAgent {
    pub fn new(settings: UaSettings, seed: u64) -> UserAgent {
        UserAgent {
            transactions: TransactionLayer::new(settings.timers),
            settings,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            answer_timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            next_call: 1,
        }
    }

    /// One parsed message from the transport. `local` is our address as `source` reaches it.
    pub fn handle_message(
        &mut self,
        now: Instant,
        message: SipMessage,
        source: Peer,
        local: SocketAddr,
    ) {
        let message = match message {
            SipMessage::Request(mut request) => {
                if let Err(e) = request.check_mandatory() {
                    self.answer_malformed(&request, source, &e.to_string());
                    return;
                }
                stamp_via(&mut request, source.addr);
                SipMessage::Request(request)
            }
            SipMessage::Response(response) => {
                // A response we cannot match is dropped by the transaction layer anyway; one
                // missing its CSeq or Via could only confuse it.
                if response.headers.cseq().is_err() || response.headers.top_via().is_err() {
                    tracing::debug!(status = response.status, "dropping malformed response");
                    return;
                }
                SipMessage::Response(response)
            }
        };
        self.transactions.handle_message(now, message, source);
        self.drain_transactions(now, Some(local));
    }

    /// Time has passed: retransmissions, timeouts, ringing calls to answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transactions.handle_timeout(now);
        self.drain_transactions(now, None);
        while let Some(&(due, call)) = self.answer_timers.first() {
            if due > now {
                break;
            }
            self.answer_timers.pop_first();
            self.send_answer(now, call);
        }
    }

    /// When `handle_timeout` must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.transactions.poll_timeout().map(|(at, _)| at);
        let ring = self.answer_timers.first().map(|(at, _)| *at);
        match (tx, ring) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_output(&mut self) -> Option<UaOutput> {
        self.outputs.pop_front()
    }

    /// Media is ready for `call` at `local_rtp`: answer (now, or after the route's ring time).
    pub fn accept(&mut self, now: Instant, call_id: CallId, local_rtp: SocketAddr) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.state != CallState::AwaitingMedia {
            return;
        }
        call.local_rtp = Some(local_rtp);
        if call.answer_delay.is_zero() {
            self.send_answer(now, call_id);
            return;
        }
        call.state = CallState::Ringing;
        let ringing = self.response_for_call(call_id, 180, "Ringing", None);
        self.respond_invite(now, call_id, ringing);
        let due = now + self.calls[&call_id].answer_delay;
        self.answer_timers.insert((due, call_id));
    }

    /// The owner cannot serve `call` (no media ports, ...): reject it with `status`.
    pub fn reject(&mut self, now: Instant, call_id: CallId, status: u16, reason: &str) {
        if !self.calls.contains_key(&call_id) {
            return;
        }
        let response = self.response_for_call(call_id, status, reason, None);
        self.respond_invite(now, call_id, response);
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: EndReason::InviteFailed,
        });
    }

    /// The owner ends the call (DeleteConnection, shutdown): BYE if answered, else a final
    /// error response. Emits no CallEnded: the owner is the one ending it.
    pub fn hangup(&mut self, now: Instant, call_id: CallId, q850_cause: u8) -> bool {
        let Some(call) = self.calls.get(&call_id) else {
            return false;
        };
        let reason = format!("Q.850;cause={q850_cause}");
        match call.state {
            CallState::AwaitingMedia | CallState::Ringing => {
                let mut response =
                    self.response_for_call(call_id, 480, "Temporarily Unavailable", None);
                response.headers.push("Reason", reason);
                self.respond_invite(now, call_id, response);
            }
            CallState::Answered | CallState::Confirmed => self.send_bye(now, call_id, &reason),
        }
        self.forget(call_id);
        true
    }

    /// Calls alive (for leak checks and metrics).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Transactions alive (for leak checks and metrics).
    pub fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    fn drain_transactions(&mut self, now: Instant, local: Option<SocketAddr>) {
        while let Some(event) = self.transactions.poll_event() {
            match event {
                TxEvent::Transmit { to, message } => {
                    self.outputs.push_back(UaOutput::Transmit { to, message })
                }
                TxEvent::Request {
                    key,
                    request,
                    source,
                } => self.on_request(now, key, request, source, local),
                TxEvent::StrayAck { request, .. } => self.on_ack(now, &request),
                TxEvent::AckTimeout { key } => self.on_ack_timeout(now, &key),
                TxEvent::Response { .. }
                | TxEvent::StrayResponse { .. }
                | TxEvent::Timeout { .. }
                | TxEvent::Terminated { .. } => {
                    // Our only client transactions are BYEs of calls already forgotten: their
                    // outcome changes nothing.
                }
            }
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        source: Peer,
        local: Option<SocketAddr>,
    ) {
        let in_dialog = request
            .headers
            .to()
            .ok()
            .and_then(|to| to.tag().map(str::to_string));
        if let Some(tag) = in_dialog {
            self.on_dialog_request(now, key, request, &tag);
            return;
        }
        match request.method {
            Method::Invite => {
                let local = local.unwrap_or(source.addr);
                self.on_invite(now, key, request, source, local)
            }
            Method::Cancel => self.on_cancel(now, key, &request),
            Method::Options => {
                let response = self.options_response(&request);
                self.respond(now, &key, response);
            }
            Method::Bye => {
                self.respond_simple(now, &key, &request, 481, "Call/Transaction Does Not Exist")
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

    fn on_invite(
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
        let user = request.uri.user.clone().unwrap_or_default();
        let Some(route) = self
            .settings
            .routes
            .iter()
            .find(|r| r.user.is_match(&user))
            .cloned()
        else {
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
        // Check the offer before any media is allocated, so a 488 costs nothing.
        let remote_media = match &remote_offer {
            Some(offer) => match sdp::answer(
                offer,
                &self.settings.capabilities,
                SocketAddr::from(([127, 0, 0, 1], 9)),
                SessionVersion {
                    session_id: 0,
                    version: 0,
                },
            ) {
                Ok((_, media)) => Some(media),
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
        let call_id = self.next_call;
        self.next_call += 1;
        let from = request.headers.get("From").unwrap_or_default().to_string();
        let to = request.headers.get("To").unwrap_or_default().to_string();
        self.by_dialog
            .insert((dialog.call_id.clone(), local_tag), call_id);
        let session_id = self.rng.random::<u32>() as u64;
        self.calls.insert(
            call_id,
            Call {
                dialog,
                invite: request,
                invite_tx: key,
                source,
                local,
                state: CallState::AwaitingMedia,
                remote_offer,
                our_offer: None,
                local_sdp: None,
                sdp_version: SessionVersion {
                    session_id,
                    version: 1,
                },
                local_rtp: None,
                answer_delay: Duration::from_millis(route.answer_delay_ms),
            },
        );
        self.outputs.push_back(UaOutput::IncomingCall {
            call: call_id,
            service: route.service,
            remote_media,
            from,
            to,
            local,
        });
    }

    fn on_cancel(&mut self, now: Instant, key: TransactionKey, cancel: &Request) {
        let Some(invite_key) = self.transactions.invite_for_cancel(cancel) else {
            self.respond_simple(now, &key, cancel, 481, "Call/Transaction Does Not Exist");
            return;
        };
        self.respond_simple(now, &key, cancel, 200, "OK");
        let call = self
            .calls
            .iter()
            .find(|(_, c)| c.invite_tx == invite_key)
            .map(|(id, c)| (*id, c.state));
        // §9.2: a CANCEL after the final response changes nothing.
        let Some((call_id, state)) = call else { return };
        if matches!(state, CallState::Answered | CallState::Confirmed) {
            return;
        }
        let response = self.response_for_call(call_id, 487, "Request Terminated", None);
        self.respond_invite(now, call_id, response);
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: EndReason::Cancelled,
        });
    }

    fn on_dialog_request(
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
                // A BYE on a call we have not answered (early dialog) ends the INVITE too.
                if matches!(
                    self.calls[&call_id].state,
                    CallState::AwaitingMedia | CallState::Ringing
                ) {
                    let response = self.response_for_call(call_id, 487, "Request Terminated", None);
                    self.respond_invite(now, call_id, response);
                }
                self.forget(call_id);
                self.outputs.push_back(UaOutput::CallEnded {
                    call: call_id,
                    reason: EndReason::RemoteHangup,
                });
            }
            Method::Invite => self.on_reinvite(now, key, call_id, request),
            Method::Options => {
                let response = self.options_response(&request);
                self.respond(now, &key, response);
            }
            Method::Info => self.respond_simple(now, &key, &request, 200, "OK"),
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

    /// A re-INVITE (hold, resume, new address, session refresh) on an established call.
    fn on_reinvite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        call_id: CallId,
        request: Request,
    ) {
        let call = &self.calls[&call_id];
        if call.state != CallState::Confirmed {
            // §14.2: a re-INVITE while one is pending gets 491 (here: before our 2xx is ACKed).
            self.respond_simple(now, &key, &request, 491, "Request Pending");
            return;
        }
        let offer = match self.read_offer(&request) {
            Ok(offer) => offer,
            Err((status, reason, _)) => {
                self.respond_simple(now, &key, &request, status, reason);
                return;
            }
        };
        let local_rtp = call.local_rtp.expect("a confirmed call has media");
        let mut version = call.sdp_version;
        version.version += 1;
        let (body, media, our_offer) = match &offer {
            Some(offer) => {
                match sdp::answer(offer, &self.settings.capabilities, local_rtp, version) {
                    Ok((answer, media)) => (answer, Some(media), None),
                    Err(e) => {
                        // §14.2: a rejected re-INVITE leaves the session as it was.
                        let mut response = self.base_response(&request, 488, "Not Acceptable Here");
                        response
                            .headers
                            .push("Warning", format!("304 callbridge \"{e}\""));
                        self.respond(now, &key, response);
                        return;
                    }
                }
            }
            None => {
                let o = sdp::offer(&self.settings.capabilities, local_rtp, version);
                (o.clone(), None, Some(o))
            }
        };
        let call = self.calls.get_mut(&call_id).expect("checked above");
        call.invite = request;
        call.invite_tx = key;
        call.sdp_version = version;
        call.our_offer = our_offer;
        call.local_sdp = Some(body.clone());
        call.state = CallState::Answered;
        let response = self.response_for_call(call_id, 200, "OK", Some(&body));
        self.respond_invite(now, call_id, response);
        if let Some(media) = media {
            self.outputs.push_back(UaOutput::MediaUpdated {
                call: call_id,
                media,
            });
        }
    }

    fn on_ack(&mut self, _now: Instant, ack: &Request) {
        let Some(tag) = ack
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
        else {
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
        if call.state != CallState::Answered {
            return; // a retransmitted ACK
        }
        self.transactions.ack_received(&call.invite_tx);
        call.state = CallState::Confirmed;
        let Some(our_offer) = call.our_offer.take() else {
            return;
        };
        let answer = SessionDescription::parse(&String::from_utf8_lossy(&ack.body));
        match answer
            .map_err(|e| e.to_string())
            .and_then(|a| sdp::accept_answer(&our_offer, &a).map_err(|e| e.to_string()))
        {
            Ok(media) => self.outputs.push_back(UaOutput::MediaUpdated {
                call: call_id,
                media,
            }),
            Err(e) => {
                tracing::info!(call = call_id, error = %e, "ACK without a usable SDP answer");
                self.send_bye(_now, call_id, "SIP;cause=488;text=\"Not Acceptable Here\"");
                self.forget(call_id);
                self.outputs.push_back(UaOutput::CallEnded {
                    call: call_id,
                    reason: EndReason::BadAnswer,
                });
            }
        }
    }

    fn on_ack_timeout(&mut self, now: Instant, key: &TransactionKey) {
        let Some(call_id) = self
            .calls
            .iter()
            .find(|(_, c)| &c.invite_tx == key && c.state == CallState::Answered)
            .map(|(id, _)| *id)
        else {
            return;
        };
        // §13.3.1.4: no ACK for our 2xx — the session is over; tell the peer with a BYE.
        self.send_bye(now, call_id, "SIP;cause=408;text=\"ACK Timeout\"");
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: EndReason::AckTimeout,
        });
    }

    fn send_answer(&mut self, now: Instant, call_id: CallId) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(local_rtp) = call.local_rtp else {
            return;
        };
        let body = match &call.remote_offer {
            Some(offer) => {
                match sdp::answer(
                    offer,
                    &self.settings.capabilities,
                    local_rtp,
                    call.sdp_version,
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
                let offer = sdp::offer(&self.settings.capabilities, local_rtp, call.sdp_version);
                call.our_offer = Some(offer.clone());
                offer
            }
        };
        call.local_sdp = Some(body.clone());
        call.state = CallState::Answered;
        let response = self.response_for_call(call_id, 200, "OK", Some(&body));
        self.respond_invite(now, call_id, response);
        self.outputs
            .push_back(UaOutput::CallAnswered { call: call_id });
    }

    fn send_bye(&mut self, now: Instant, call_id: CallId, reason: &str) {
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

    fn respond_invite(&mut self, now: Instant, call_id: CallId, response: Response) {
        let key = self.calls[&call_id].invite_tx.clone();
        self.respond(now, &key, response);
    }

    fn respond(&mut self, now: Instant, key: &TransactionKey, response: Response) {
        if let Err(e) = self.transactions.send_response(now, key, response) {
            tracing::debug!(error = %e, "response not sent");
        }
        self.drain_transactions(now, None);
    }

    fn respond_simple(
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
    fn response_for_call(
        &self,
        call_id: CallId,
        status: u16,
        reason: &str,
        body: Option<&SessionDescription>,
    ) -> Response {
        let call = &self.calls[&call_id];
        let mut response = self.base_response(&call.invite, status, reason);
        if let Ok(mut to) = response.headers.to() {
            set_tag(&mut to, Some(&call.dialog.local_tag));
            response.headers.set("To", to.to_string());
        }
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
            response.body = sdp.to_string().into_bytes();
        }
        response
    }

    fn base_response(&self, request: &Request, status: u16, reason: &str) -> Response {
        let mut response = Response::for_request(request, status, reason);
        response
            .headers
            .push("Server", self.settings.user_agent.clone());
        response
    }

    fn options_response(&self, request: &Request) -> Response {
        let mut response = self.base_response(request, 200, "OK");
        response.headers.push("Allow", ALLOW);
        response.headers.push("Accept", "application/sdp");
        response.headers.push("Accept-Language", "en");
        response.headers.push("Supported", "");
        response
    }

    /// Answers a request that failed the mandatory-header check with 400, when it can be
    /// answered at all (it needs a Via to route the response); ACKs are never answered.
    fn answer_malformed(&mut self, request: &Request, source: Peer, reason: &str) {
        if request.method == Method::Ack || request.headers.top_via().is_err() {
            tracing::debug!(reason, "dropping unanswerable malformed request");
            return;
        }
        let mut response = Response::for_request(request, 400, &format!("Bad Request - {reason}"));
        response
            .headers
            .push("Server", self.settings.user_agent.clone());
        self.outputs.push_back(UaOutput::Transmit {
            to: source,
            message: SipMessage::Response(response),
        });
    }

    /// §8.2.2.3: we support no extensions, so any Require option tag is refused.
    fn unsupported_extension(&self, request: &Request) -> Option<String> {
        let tags: Vec<&str> = request.headers.get_all("Require").collect();
        (!tags.is_empty()).then(|| tags.join(", "))
    }

    /// The SDP offer in a request: None without a body, an error status for bodies we refuse.
    #[allow(clippy::type_complexity)]
    fn read_offer(
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

    fn forget(&mut self, call_id: CallId) {
        let Some(call) = self.calls.remove(&call_id) else {
            return;
        };
        self.by_dialog
            .remove(&(call.dialog.call_id.clone(), call.dialog.local_tag.clone()));
        self.answer_timers.retain(|(_, c)| *c != call_id);
    }

    fn random_token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }
}

/// RFC 3261 §18.2.1 / RFC 3581: record where a request really came from in its top Via.
pub fn stamp_via(request: &mut Request, source: SocketAddr) {
    let Ok(mut vias) = request.headers.vias() else {
        return;
    };
    let Some(top) = vias.first_mut() else { return };
    let sent_by_is_source = match &top.host {
        Host::V4(ip) => std::net::IpAddr::V4(*ip) == source.ip(),
        Host::V6(ip) => std::net::IpAddr::V6(*ip) == source.ip(),
        Host::Domain(_) => false,
    };
    let wants_rport = top
        .params
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case("rport"));
    if sent_by_is_source && !wants_rport {
        return;
    }
    let received = match source.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => ip.to_string(),
    };
    top.set_param("received", Some(received));
    if wants_rport {
        top.set_param("rport", Some(source.port().to_string()));
    }
    let rest: Vec<String> = vias.iter().map(|v| v.to_string()).collect();
    request.headers.remove("Via");
    for v in rest.iter().rev() {
        request.headers.push_front("Via", v.clone());
    }
}

fn our_via(transport: Transport, local: SocketAddr, branch: &str) -> Via {
    let text = format!(
        "SIP/2.0/{} {};branch={branch};rport",
        transport_name(transport),
        host_port(local)
    );
    Via::parse(&text).expect("our own Via text is well-formed")
}

fn contact_for(transport: Transport, local: SocketAddr) -> String {
    match transport {
        Transport::Udp => format!("<sip:callbridge@{}>", host_port(local)),
        Transport::Tcp => format!("<sip:callbridge@{};transport=tcp>", host_port(local)),
    }
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    }
}

fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Where an in-dialog request goes. Over TCP the peer's own connection is reused (it may be
/// behind NAT and it is the flow it chose); over UDP the next hop's IP literal and port, or the
/// peer's signalling address when the next hop is a name (no DNS on the control plane yet).
fn destination_for(next_hop: &super::message::Uri, source: Peer) -> Peer {
    if source.transport == Transport::Tcp {
        return source;
    }
    let port = next_hop.port.unwrap_or(5060);
    let ip = match &next_hop.host {
        Host::V4(ip) => std::net::IpAddr::V4(*ip),
        Host::V6(ip) => std::net::IpAddr::V6(*ip),
        Host::Domain(_) => return source,
    };
    Peer {
        transport: Transport::Udp,
        addr: SocketAddr::new(ip, port),
    }
}
