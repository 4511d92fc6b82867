//! The calls of the SIP user agent, as the control core sees them.
//!
//! Owns: what each `UaOutput` does to the registry and the party model — an incoming call's
//! connection and party, its answer, hold and retrieve (a re-INVITE or UPDATE that stops or
//! resumes the peer's sending), digits, and the implicit DeleteConnection of a call that
//! ended — and the SIP messages the UA gives to send, queued for the shell.
//! Must not: speak SIP itself; the UA does, and the transport sends.

use std::net::SocketAddr;

use super::party::{NewParty, PartyState, Role};
use super::*;
use crate::engine::{MediaMode, MediaSpec};
use crate::sip::message::{Response, SipMessage};
use crate::sip::routing::Service;
use crate::sip::transaction::Peer;
use crate::sip::ua::{CallId, EndReason, UaOutput};

/// Whether two responses answer the same request: the same top Via (its branch), Call-ID
/// and CSeq, all present.
fn same_transaction(a: &Response, b: &Response) -> bool {
    ["Via", "Call-ID", "CSeq"].iter().all(|name| {
        let value = a.headers.get(name);
        value.is_some() && value == b.headers.get(name)
    })
}

/// Who an incoming call is from and for: the header values, the caller's number
/// (P-Asserted-Identity, else From) and the number it reached (the route's DN, else the
/// Request-URI user).
struct IncomingParties {
    from: String,
    to: String,
    remote_dn: String,
    route_dn: String,
    record: crate::store::RecordPolicy,
    trunk: Option<String>,
    rtp_source: Option<crate::engine::RtpSource>,
}

impl<M: Backend> Controller<M> {
    /// Queues a SIP message for the shell. A 100 Trying waits for the end of the turn
    /// (`send_held_trying`): RFC 3261 §17.2.1 asks for it only when the TU will not answer
    /// within 200 ms, and a call answered at once (a route's service, an application's
    /// immediate answer) has its 180 or 200 go in the same turn: one datagram less each way.
    fn transmit(&mut self, to: Peer, message: SipMessage) {
        if let SipMessage::Response(response) = &message {
            if response.status == 100 {
                if let SipMessage::Response(trying) = message {
                    self.held_trying.push((to, trying));
                }
                return;
            }
            if !self.held_trying.is_empty() {
                self.held_trying
                    .retain(|(_, trying)| !same_transaction(trying, response));
            }
        }
        self.transmits.push_back((to, message.to_bytes()));
    }

    /// Sends the turn's 100 Trying that no other response of their transaction replaced.
    pub(super) fn send_held_trying(&mut self) {
        for (to, trying) in self.held_trying.drain(..) {
            self.transmits
                .push_back((to, SipMessage::Response(trying).to_bytes()));
        }
    }

    /// Moves the UA's outputs into the registry, the model and the transmit queue.
    pub(super) fn drain_ua(&mut self) {
        while let Some(output) = self.ua.poll_output() {
            match output {
                UaOutput::Transmit { to, message } => self.transmit(to, message),
                UaOutput::Resend { to, bytes } => self.transmits.push_back((to, bytes.into_vec())),
                UaOutput::IncomingCall {
                    call,
                    service,
                    remote_media,
                    from,
                    to,
                    local,
                    conference,
                    play,
                    replaces,
                    remote_dn,
                    route_dn,
                    record,
                    trunk,
                    rtp_source,
                } => self.on_incoming_call(
                    call,
                    service,
                    remote_media,
                    IncomingParties {
                        from,
                        to,
                        remote_dn,
                        route_dn,
                        record,
                        trunk,
                        rtp_source,
                    },
                    local,
                    conference,
                    play,
                    replaces,
                ),
                UaOutput::MediaUpdated { call, media } => self.on_media_updated(call, media),
                UaOutput::ReinviteFailed { call, status } => {
                    if let Some(pending) = self.pending_holds.remove(&call) {
                        let _ = pending.reply.send(Err(super::CtiError::new(
                            super::cti_codes::REFUSED,
                            format!("the party answered our re-INVITE with {status}"),
                        )));
                    }
                }
                UaOutput::CallAnswered { call } => {
                    self.calls_answered_total += 1;
                    if let Some(info) = self.call_info.get_mut(&call) {
                        info.answered = true;
                    }
                    if let Some(&id) = self.call_connections.get(&call) {
                        let by = self.answering_actor(call);
                        self.model
                            .set_state(self.now.unix_ms, id, PartyState::Established, by);
                        self.store_call_answered(id);
                        self.events.emit_with(|| Event::CallAnswered {
                            call_id: call.to_string(),
                            connection_id: id.to_string(),
                        });
                    }
                    self.on_placed_answered(call);
                }
                UaOutput::Progress { call, status } => {
                    tracing::debug!(call, status, "placed call in progress");
                    if let Some(&id) = self.call_connections.get(&call) {
                        self.model.set_state(
                            self.now.unix_ms,
                            id,
                            PartyState::Ringing,
                            Actor::Remote,
                        );
                    }
                }
                UaOutput::TransferRequested {
                    call,
                    target,
                    headers,
                    referred_by,
                    service,
                } => self.on_transfer_requested(call, target, headers, referred_by, service),
                UaOutput::ReferAnswered { call, status } => self.on_refer_answered(call, status),
                UaOutput::ReferProgress { call, status, done } => {
                    self.on_refer_progress(call, status, done)
                }
                UaOutput::Digit {
                    call,
                    digit,
                    duration_ms,
                } => {
                    if let Some(&id) = self.call_connections.get(&call) {
                        self.events.emit(Event::DigitReceived {
                            connection_id: id.to_string(),
                            call_id: Some(call.to_string()),
                            digit: digit.to_string(),
                            duration_ms,
                        });
                        self.on_operation_digit(id, digit);
                    }
                    self.emit_got_digits(call, digit);
                }
                UaOutput::CallEnded { call, reason: end } => {
                    if let Some(pending) = self.pending_holds.remove(&call) {
                        let _ = pending.reply.send(Err(super::CtiError::new(
                            super::cti_codes::INVALID_STATE,
                            "the call ended before the party answered",
                        )));
                    }
                    self.call_info.remove(&call);
                    self.on_placed_failed(call, end);
                    self.transfer_call_ended(call);
                    let reason = release_reason(end);
                    self.on_app_call_ended(call, reason);
                    self.events.emit_with(|| Event::CallEnded {
                        call_id: call.to_string(),
                        reason,
                    });
                    self.release_offered_party(call, reason, end_actor(end));
                    if let Some(id) = self.call_connections.remove(&call) {
                        match end {
                            EndReason::Rejected(status) => self.model.fail(id, status),
                            EndReason::NoAnswer => self.model.fail(id, 408),
                            _ => {}
                        }
                        // The implicit DeleteConnection (seed 01).
                        let by = end_actor(end);
                        let _ = self.release_connection_by(id, reason, Some(by));
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_incoming_call(
        &mut self,
        call: CallId,
        service: Service,
        remote_media: Option<crate::sdp::NegotiatedMedia>,
        parties: IncomingParties,
        local: SocketAddr,
        room: Option<crate::sip::routing::RouteRoom>,
        play: Option<String>,
        replaces: Option<CallId>,
    ) {
        let IncomingParties {
            from,
            to,
            remote_dn,
            route_dn,
            record,
            trunk,
            rtp_source,
        } = parties;
        let service_name = self.note_call(call, (&from, &to), (remote_dn, route_dn), service);
        if let Some(info) = self.call_info.get_mut(&call) {
            info.record = record;
            info.trunk = trunk;
            info.rtp_source = rtp_source;
        }
        if let Some(old) = replaces {
            // The replacing call is the replaced one's successor: its route's RTP policy holds.
            let kept = self.call_info.get(&old).and_then(|i| i.rtp_source);
            if let Some(info) = self.call_info.get_mut(&call) {
                info.rtp_source = info.rtp_source.or(kept);
            }
        }
        if let Some(old) = replaces {
            // Attended transfer: the new dialog takes the replaced one's place at once.
            let mode = self
                .call_connections
                .get(&old)
                .and_then(|id| self.connections.get(id))
                .map_or(MediaMode::Idle, |c| c.media.mode);
            match self.open_call_connection(call, mode, remote_media.as_ref(), local) {
                Ok((id, announced)) => {
                    self.ua.accept(self.now.at, call, announced);
                    self.replace_call(call, id, old);
                    if self.app_calls.contains(&call) {
                        self.emit_media_started(call, id, announced);
                    }
                }
                Err((status, reason)) => self.ua.reject(self.now.at, call, status, reason),
            }
            return;
        }
        self.events.emit_with(|| Event::IncomingCall {
            call_id: call.to_string(),
            from,
            to,
            service: service_name.into(),
        });
        if service == Service::Application {
            // The application decides (AcceptCall, AnswerCall, RejectCall, Redirect).
            self.offer_to_application(call, remote_media, local);
            return;
        }
        let mode = match service {
            Service::Echo => MediaMode::Echo,
            // The conference drives the session once it has joined; an announcement's playout
            // ticks it; an application's call idles until the application uses it.
            Service::Conference | Service::Announcement | Service::Application => MediaMode::Idle,
        };
        let (id, announced) =
            match self.open_call_connection(call, mode, remote_media.as_ref(), local) {
                Ok(opened) => opened,
                Err((status, reason)) => {
                    self.ua.reject(self.now.at, call, status, reason);
                    return;
                }
            };
        if let (Service::Conference, Some(room)) = (service, room) {
            if let Err(e) = self.join_room(id, room) {
                // The UA reports the failed INVITE; its connection goes with it.
                tracing::warn!(call, error = %e.message, "caller cannot join the conference");
                self.ua
                    .reject(self.now.at, call, 503, "Service Unavailable");
                return;
            }
        }
        if service == Service::Announcement {
            if let Err(e) = self.start_announcement(id, play) {
                // RFC 4240 §3: a prompt the server cannot fetch is 404.
                tracing::warn!(call, error = %e.message, "announcement cannot play");
                self.ua.reject(self.now.at, call, 404, "Not Found");
                return;
            }
        }
        self.ua.accept(self.now.at, call, announced);
    }

    /// Counts a new call (ours or the peer's) and lists it, with the remote party's number
    /// (`dn`) and the number the call reached (`service_dn`); returns its service's name.
    pub(super) fn note_call(
        &mut self,
        call: CallId,
        (from, to): (&str, &str),
        (dn, service_dn): (String, String),
        service: Service,
    ) -> &'static str {
        let name = service_name(service);
        self.calls_total += 1;
        self.call_info.insert(
            call,
            CallInfo {
                from: from.to_string(),
                to: to.to_string(),
                dn,
                service_dn,
                service: name,
                kind: service,
                answered: false,
                started_ms: self.now.unix_ms,
                record: crate::store::RecordPolicy::Off,
                trunk: None,
                rtp_source: None,
            },
        );
        name
    }

    /// A call leg's store row, with its record policy and trunk as the call noted them.
    pub(super) fn store_leg_started(
        &mut self,
        call: CallId,
        connection: u32,
        direction: crate::store::Direction,
    ) {
        let (policy, trunk) = self
            .call_info
            .get(&call)
            .map(|i| (i.record, i.trunk.clone()))
            .unwrap_or_default();
        self.store_call_started(
            connection,
            super::recording::LegInfo {
                direction,
                call: Some(call),
                policy,
                trunk,
            },
        );
    }

    /// Makes a call's connection a party of a call of its own: the caller of a call in
    /// (ringing until we answer), the called party of a call we place (dialing).
    pub(super) fn open_party(&mut self, call: CallId, connection: u32, outbound: bool, by: Actor) {
        let (dn, service_dn, meet_me) = self
            .call_info
            .get(&call)
            .map(|i| {
                let room = !outbound && i.kind == Service::Conference;
                (i.dn.clone(), i.service_dn.clone(), room)
            })
            .unwrap_or_default();
        let (role, state) = if outbound {
            (Role::Destination, PartyState::Dialing)
        } else {
            (Role::Origination, PartyState::Ringing)
        };
        self.model.open(
            self.now.unix_ms,
            NewParty {
                connection,
                meet_me,
                sip_call: Some(call),
                dn,
                service_dn,
                role,
                state,
            },
            by,
        );
    }

    /// Who answered: the far end for a call we placed, us (an application's AnswerCall, or the
    /// route) for a call in.
    fn answering_actor(&self, call: CallId) -> Actor {
        if self.placed.contains_key(&call) {
            Actor::Remote
        } else {
            self.client_or(Actor::System)
        }
    }

    /// Opens and binds the media connection of an incoming call from its offer (or, without
    /// one, for the offer we make in the 2xx). Returns the connection and the address we
    /// announce, or the SIP status to reject the call with.
    pub(super) fn open_call_connection(
        &mut self,
        call: CallId,
        mode: MediaMode,
        remote_media: Option<&crate::sdp::NegotiatedMedia>,
        local: SocketAddr,
    ) -> Result<(u32, SocketAddr), (u16, &'static str)> {
        let mut spec = match remote_media.map(|m| media_spec(mode, m)) {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                tracing::warn!(call, error = %e, "negotiated media unusable");
                return Err((488, "Not Acceptable Here"));
            }
            // No offer: we offer in the 2xx; the format comes with the answer in the ACK.
            None => MediaSpec {
                mode,
                ..MediaSpec::idle(None)
            },
        };
        spec.source = self.call_info.get(&call).and_then(|i| i.rtp_source);
        let codecs = remote_media
            .map(|m| CodecChoice {
                rx_codec: Some(m.codec),
                tx_codec: Some(m.codec),
                rx_framesize: Some(m.ptime_ms),
                tx_framesize: Some(m.ptime_ms),
            })
            .unwrap_or_default();
        let rx_ip = self.announced_ip(local.ip());
        match self.open_connection(rx_ip, ConnectionState::Connected, &codecs, spec, Some(call)) {
            Ok(id) => {
                self.call_connections.insert(call, id);
                // An offered call's party, ringing since the offer, now has its connection.
                match self.offer_parties.remove(&call) {
                    Some(key) => self.model.rekey(key, id),
                    None => self.open_party(call, id, false, Actor::Remote),
                }
                self.store_leg_started(call, id, crate::store::Direction::Inbound);
                self.emit_created(id);
                let announced = SocketAddr::new(rx_ip, self.connections[&id].local_rtp.port());
                Ok((id, announced))
            }
            Err(e) => {
                tracing::warn!(call, error = %e.message, "no media for incoming call");
                Err((503, "Service Unavailable"))
            }
        }
    }

    fn on_media_updated(&mut self, call: CallId, media: crate::sdp::NegotiatedMedia) {
        let Some(&id) = self.call_connections.get(&call) else {
            return;
        };
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        let mut spec = match media_spec(c.media.mode, &media) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(connection = id, error = %e, "re-negotiated media unusable; keeping the old");
                return;
            }
        };
        spec.source = c.media.source;
        // Anything but sendrecv is a hold: the peer's (its `sendonly` with music on hold, or
        // `inactive`), or ours (our `sendonly`, a CTI RequestHoldCall).
        let held = media.direction != crate::sdp::Direction::SendRecv;
        c.rx_codec = media.codec;
        c.tx_codec = media.codec;
        c.rx_framesize = media.ptime_ms;
        c.tx_framesize = media.ptime_ms;
        c.media = spec.clone();
        // The enhanced resource follows the codec. The answer is already given, so a re-INVITE
        // to a non-G.711 codec takes one even past the limit, and says so.
        if self
            .resources
            .follow_codec(&mut c.enhanced, conference::needs_enhanced(media.codec))
        {
            tracing::warn!(
                connection = id,
                "re-INVITE moved the call to a non-G.711 codec past the enhanced RTP limit"
            );
        }
        if let Err(e) = self.engine.update_connection(u64::from(id), spec) {
            tracing::warn!(connection = id, error = %e, "media update failed");
        }
        // Media that came after the answer (offer in our 2xx, answer in the ACK).
        self.start_policy_recording(id);
        let state = if held {
            PartyState::Held
        } else {
            PartyState::Established
        };
        // Our own re-INVITE (a CTI hold or retrieve) is answered: its requester did it.
        let pending = self.pending_holds.remove(&call);
        let by = match &pending {
            Some(p) => {
                self.cti_reference = Some(p.reference);
                p.by.clone()
            }
            None => Actor::Remote,
        };
        if self
            .model
            .party(id)
            .is_some_and(|p| matches!(p.state, PartyState::Established | PartyState::Held))
        {
            self.model.set_state(self.now.unix_ms, id, state, by);
        }
        if let Some(p) = pending {
            let _ = p.reply.send(Ok(super::cti_requests::ack(p.conn_id)));
        }
        self.emit_media_changed(call, id, media.direction.sends());
        self.events.emit(Event::ConnectionModified {
            connection_id: id.to_string(),
            media_tx_ip: media.remote_rtp.map(|a| a.ip().to_string()),
            media_tx_port: media.remote_rtp.map(|a| a.port()),
        });
    }
}

fn release_reason(reason: EndReason) -> ReleaseReason {
    match reason {
        EndReason::RemoteHangup => ReleaseReason::RemoteHangup,
        EndReason::Cancelled => ReleaseReason::Cancelled,
        EndReason::AckTimeout => ReleaseReason::AckTimeout,
        EndReason::InviteFailed => ReleaseReason::InviteFailed,
        EndReason::BadAnswer => ReleaseReason::BadAnswer,
        EndReason::Rejected(_) | EndReason::NoAnswer => ReleaseReason::CallFailed,
        EndReason::Transferred => ReleaseReason::Transferred,
        EndReason::SessionExpired => ReleaseReason::SessionExpired,
    }
}

/// A service's name in events and listings.
fn service_name(service: Service) -> &'static str {
    match service {
        Service::Echo => "echo",
        Service::Conference => "conference",
        Service::Announcement => "announcement",
        Service::Application => "application",
    }
}

/// Who ended a dialog: the far end (its BYE, CANCEL, refusal, transfer, unusable answer) or
/// the system (a timer: no ACK, no answer, no session refresh; an INVITE we could not serve).
fn end_actor(end: EndReason) -> Actor {
    match end {
        EndReason::RemoteHangup
        | EndReason::Cancelled
        | EndReason::Rejected(_)
        | EndReason::Transferred
        | EndReason::BadAnswer => Actor::Remote,
        EndReason::AckTimeout
        | EndReason::InviteFailed
        | EndReason::NoAnswer
        | EndReason::SessionExpired => Actor::System,
    }
}
