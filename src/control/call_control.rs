//! Call Control for `application` routes (reference call-control-api.md §2.2–2.6, §3, §6):
//! the application answers, accepts, rejects or redirects the calls offered to it, and hangs
//! them up.
//!
//! Owns: the calls offered and not yet decided (with their offer and decision deadline), and
//! the Call Control events `RemoteHangup` for application calls.
//! Must not: speak SIP (the user agent does) or bypass the one release path: an answered call
//! ends through `release_connection`, which hangs it up.

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::events::{Event, ReleaseReason};
use super::party::Actor;
use super::result::{ActionError, ResultCode};
use super::timers::Timer;
use super::Backend;
use super::{codec_name, Controller};
use crate::engine::MediaMode;
use crate::sip::ua::CallId;

/// A Call Control action, parsed at the API edge.
#[derive(Debug, Clone)]
pub enum CallAction {
    /// 180 Ringing: more time to decide; with `early_media`, a connection now and 183 with
    /// its SDP (reliable when the caller supports 100rel).
    Accept { call: CallId, early_media: bool },
    /// Answer with a media connection; optionally in a (new or existing) conference.
    Answer {
        call: CallId,
        conference: Option<ConferenceChoice>,
    },
    /// Refuse with a SIP status (480 by default).
    Reject { call: CallId, status: u16 },
    /// 302 to `to` (a SIP URI or a user at the caller's domain).
    Redirect { call: CallId, to: String },
    /// End the call: BYE when answered, 480 when not, CANCEL when it is ours and ringing.
    Hangup { call: CallId },
    /// Place a call through a trunk.
    MakeCall(super::MakeCall),
    /// REFER the far end to `to`; answered when the transfer has succeeded or failed.
    BlindTransfer { call: CallId, to: String },
    /// RFC 4733 digits on the call's media.
    SendUserInput { call: CallId, digits: String },
    /// Connects two calls through a hairpin conference (or the one either is in).
    Bridge { call: CallId, peer: Option<CallId> },
    /// Takes two bridged calls apart again; both stay up.
    Unbridge { call: CallId, peer: Option<CallId> },
}

impl CallAction {
    /// The action's API name.
    pub fn name(&self) -> &'static str {
        match self {
            CallAction::Accept { .. } => "AcceptCall",
            CallAction::Answer { .. } => "AnswerCall",
            CallAction::Reject { .. } => "RejectCall",
            CallAction::Redirect { .. } => "Redirect",
            CallAction::Hangup { .. } => "Hangup",
            CallAction::MakeCall(_) => "MakeCall",
            CallAction::BlindTransfer { .. } => "BlindTransfer",
            CallAction::SendUserInput { .. } => "SendUserInput",
            CallAction::Bridge { .. } => "BridgeCalls",
            CallAction::Unbridge { .. } => "UnbridgeCalls",
        }
    }
}

/// AnswerCall's `Conference`/`ConferenceId`/`Hairpin`.
#[derive(Debug, Clone, Copy)]
pub struct ConferenceChoice {
    /// None (or 0): a new conference.
    pub conference: Option<u32>,
    pub hairpin: bool,
}

/// A call offered to applications, not answered yet.
#[derive(Debug)]
pub(super) struct OfferedCall {
    remote_media: Option<crate::sdp::NegotiatedMedia>,
    local: SocketAddr,
}

impl<M: Backend> Controller<M> {
    /// An `application` route's call: `IncomingCall` has been emitted; wait for the decision.
    pub(super) fn offer_to_application(
        &mut self,
        call: CallId,
        remote_media: Option<crate::sdp::NegotiatedMedia>,
        local: SocketAddr,
    ) {
        self.app_calls.insert(call);
        self.offered.insert(
            call,
            OfferedCall {
                remote_media,
                local,
            },
        );
        // Rejected (480) when no decision comes by then.
        self.timers.set(
            Timer::Offer(call),
            self.now.at + self.media.decision_timeout,
        );
        // The caller is a party (ringing) before it has media: the route rings (CTI).
        let key = self.model.placeholder();
        self.offer_parties.insert(call, key);
        self.open_party(call, key, false, super::party::Actor::Remote);
    }

    /// A Call Control action; the result data in CUAE names.
    pub(super) fn on_call_action(
        &mut self,
        action: CallAction,
    ) -> Result<Map<String, Value>, ActionError> {
        let now = self.now.at;
        match action {
            CallAction::Accept {
                call,
                early_media: false,
            } => {
                self.offered_call(call)?;
                self.ua.ring(now, call);
                Ok(call_result(call))
            }
            CallAction::Accept {
                call,
                early_media: true,
            } => self.accept_with_early_media(call),
            CallAction::Reject { call, status } => {
                self.offered_call(call)?;
                self.take_offer(call);
                self.ua.reject(now, call, status, reason_phrase(status));
                Ok(call_result(call))
            }
            CallAction::Redirect { call, to } => {
                self.offered_call(call)?;
                self.take_offer(call);
                self.ua.redirect(now, call, &to);
                Ok(call_result(call))
            }
            CallAction::Answer { call, conference } => self.answer_call(call, conference),
            CallAction::MakeCall(request) => self.make_call(request),
            CallAction::BlindTransfer { call, .. } => Err(ActionError::new(
                ResultCode::ServerInternal,
                format!("BlindTransfer of call {call} is answered by the transfer path"),
            )),
            CallAction::SendUserInput { call, digits } => self.send_user_input(call, &digits),
            CallAction::Bridge { call, peer } => self.bridge_calls(call, peer),
            CallAction::Unbridge { call, peer } => self.unbridge_calls(call, peer),
            CallAction::Hangup { call } => {
                if let Some(&id) = self.call_connections.get(&call) {
                    // The implicit DeleteConnection of an answered call, or of an offered one
                    // accepted with early media (whose connection would stay otherwise); the
                    // call gets BYE, or 480 before its answer.
                    let _ = self.release_connection(id, ReleaseReason::ApiRequest);
                } else if self.offered.contains_key(&call) {
                    self.end_call_of(call, ReleaseReason::ApiRequest);
                    // The UA reports no end of a call its owner ended: the application
                    // releases the party here.
                    let by = self.actor_for(ReleaseReason::ApiRequest);
                    self.release_offered_party(call, ReleaseReason::ApiRequest, by);
                }
                // CUAE answers success for an unknown or ended call too (reference §2.5).
                Ok(call_result(call))
            }
        }
    }

    /// AcceptCall with early media (CUAE's Reserve Media Early): the connection is made now
    /// and the caller hears it before the answer (183 with our SDP). AnswerCall then keeps it.
    fn accept_with_early_media(&mut self, call: CallId) -> Result<Map<String, Value>, ActionError> {
        self.offered_call(call)?;
        if self.call_connections.contains_key(&call) {
            return Err(ActionError::new(
                ResultCode::AlreadyConnected,
                format!("call {call} already has early media"),
            ));
        }
        let (remote_media, local) = {
            let offer = &self.offered[&call];
            (offer.remote_media.clone(), offer.local)
        };
        if remote_media.is_none() {
            return Err(ActionError::new(
                ResultCode::InvalidParameters,
                format!("call {call} came without an SDP offer: no early media before the answer"),
            ));
        }
        let (id, announced) = self
            .open_call_connection(call, MediaMode::Idle, remote_media.as_ref(), local)
            .map_err(|(status, _)| {
                ActionError::new(
                    ResultCode::ServerBusy,
                    format!("no media for call {call} (would be {status})"),
                )
            })?;
        if !self.ua.early_media(self.now.at, call, announced) {
            let _ = self.release_connection(id, ReleaseReason::InviteFailed);
            return Err(ActionError::new(
                ResultCode::ServerInternal,
                format!("call {call}: early media could not be offered"),
            ));
        }
        self.emit_media_started(call, id, announced);
        let mut result = call_result(call);
        result.insert("MmsId".into(), json!(self.media.node_id));
        result.insert("ConnectionId".into(), json!(id.to_string()));
        result.insert("MediaRxIP".into(), json!(announced.ip().to_string()));
        result.insert("MediaRxPort".into(), json!(announced.port()));
        Ok(result)
    }

    /// AnswerCall: the connection, the conference if asked, then 200 with our SDP.
    fn answer_call(
        &mut self,
        call: CallId,
        conference: Option<ConferenceChoice>,
    ) -> Result<Map<String, Value>, ActionError> {
        self.offered_call(call)?;
        if let Some(ConferenceChoice {
            conference: Some(id),
            ..
        }) = conference
        {
            if !self.conferences.contains_key(&id) {
                return Err(ActionError::new(
                    ResultCode::UnknownConferenceId,
                    format!("conference {id} does not exist"),
                ));
            }
        }
        let offer = self.take_offer(call).expect("checked above");
        let early = self.call_connections.get(&call).map(|&id| {
            let c = &self.connections[&id];
            (id, SocketAddr::new(c.rx_ip, c.local_rtp.port()))
        });
        let had_early_media = early.is_some();
        let opened = match early {
            Some(early) => Ok(early),
            None => self.open_call_connection(
                call,
                MediaMode::Idle,
                offer.remote_media.as_ref(),
                offer.local,
            ),
        };
        let (id, announced) = match opened {
            Ok(opened) => opened,
            Err((status, reason)) => {
                // Nothing can be answered: the call is refused, as CUAE's failed AnswerCall.
                self.ua.reject(self.now.at, call, status, reason);
                return Err(ActionError::new(
                    ResultCode::ServerBusy,
                    format!("no media for call {call}: rejected with {status}"),
                ));
            }
        };
        let mut result = call_result(call);
        if let Some(choice) = conference {
            let joined = self.join_chosen_conference(id, choice);
            match joined {
                Ok(conference) => {
                    result.insert("ConferenceId".into(), json!(conference.to_string()));
                }
                Err(e) => {
                    self.ua
                        .reject(self.now.at, call, 503, "Service Unavailable");
                    return Err(e);
                }
            }
        }
        self.ua.accept(self.now.at, call, announced);
        if !had_early_media {
            // With early media, AcceptCall already said StartRx/StartTx.
            self.emit_media_started(call, id, announced);
        }
        let c = &self.connections[&id];
        result.insert("MmsId".into(), json!(self.media.node_id));
        result.insert("ConnectionId".into(), json!(id.to_string()));
        result.insert("MediaRxIP".into(), json!(announced.ip().to_string()));
        result.insert("MediaRxPort".into(), json!(announced.port()));
        result.insert("MediaRxCodec".into(), json!(codec_name(c.rx_codec)));
        result.insert("MediaRxFramesize".into(), json!(c.rx_framesize));
        if let Some(tx) = c.media.remote_rtp {
            result.insert("MediaTxIP".into(), json!(tx.ip().to_string()));
            result.insert("MediaTxPort".into(), json!(tx.port()));
            result.insert("MediaTxCodec".into(), json!(codec_name(c.tx_codec)));
            result.insert("MediaTxFramesize".into(), json!(c.tx_framesize));
        }
        Ok(result)
    }

    /// StartRx, and StartTx when the far end's address is known: what the application's call
    /// now streams (call-control-api.md §3).
    pub(super) fn emit_media_started(&mut self, call: CallId, connection: u32, rx: SocketAddr) {
        self.emit_start_rx(call, connection, rx);
        if !self.events.wanted() {
            return;
        }
        if let Some(e) = self.start_tx(call, connection) {
            self.events.emit(e);
        }
    }

    /// StartRx alone: where we told the far end to send (a call we placed has had its StartTx
    /// when the answer's SDP came).
    pub(super) fn emit_start_rx(&mut self, call: CallId, connection: u32, rx: SocketAddr) {
        let Some(c) = self.connections.get(&connection) else {
            return;
        };
        let media = u32::from(self.media.node_id);
        self.events.emit_with(|| Event::StartRx {
            call_id: call.to_string(),
            mms_id: media,
            connection_id: connection.to_string(),
            media_rx_ip: rx.ip().to_string(),
            media_rx_port: rx.port(),
            media_rx_codec: codec_name(c.rx_codec).into(),
            media_rx_framesize: c.rx_framesize,
        });
    }

    /// A re-negotiation on an application call: StopTx when the far end no longer wants our
    /// audio (hold), StartTx when it does (again, or at a new address).
    pub(super) fn emit_media_changed(&mut self, call: CallId, connection: u32, we_send: bool) {
        if !self.app_calls.contains(&call) {
            return;
        }
        let event = match self.start_tx(call, connection).filter(|_| we_send) {
            Some(start) => start,
            None => Event::StopTx {
                call_id: call.to_string(),
                mms_id: u32::from(self.media.node_id),
                connection_id: connection.to_string(),
            },
        };
        self.events.emit(event);
    }

    /// StartTx for a connection whose far-end address is known.
    fn start_tx(&self, call: CallId, connection: u32) -> Option<Event> {
        let c = self.connections.get(&connection)?;
        let tx = c.media.remote_rtp?;
        Some(Event::StartTx {
            call_id: call.to_string(),
            mms_id: u32::from(self.media.node_id),
            connection_id: connection.to_string(),
            media_tx_ip: tx.ip().to_string(),
            media_tx_port: tx.port(),
            media_tx_codec: codec_name(c.tx_codec).into(),
            media_tx_framesize: c.tx_framesize,
        })
    }

    /// Digits signalled on an application call: `GotDigits`.
    pub(super) fn emit_got_digits(&mut self, call: CallId, digit: char) {
        if self.app_calls.contains(&call) {
            self.events.emit(Event::GotDigits {
                call_id: call.to_string(),
                digits: digit.to_string(),
            });
        }
    }

    /// Takes a call off the offered list, with its decision timer.
    pub(super) fn take_offer(&mut self, call: CallId) -> Option<OfferedCall> {
        self.timers.cancel(Timer::Offer(call));
        self.offered.remove(&call)
    }

    /// The party an offered call has rung with since the offer, released: the call ended
    /// before it had a connection (an answer gives the party the connection instead).
    pub(super) fn release_offered_party(&mut self, call: CallId, reason: ReleaseReason, by: Actor) {
        if let Some(key) = self.offer_parties.remove(&call) {
            self.model.release(self.now.unix_ms, key, reason, by);
        }
    }

    /// A call past its decision time is rejected (480), as CUAE's 90 s rule.
    pub(super) fn expire_offer(&mut self, call: CallId) {
        if self.offered.remove(&call).is_none() {
            return;
        }
        tracing::info!(call, "no decision from the application: rejected");
        self.ua
            .reject(self.now.at, call, 480, "Temporarily Unavailable");
    }

    /// An application call's dialog ended. When the far end ended it, the application hears
    /// `RemoteHangup` (EndReason `Normal`, the SIP provider's only reason for BYE and CANCEL).
    pub(super) fn on_app_call_ended(&mut self, call: CallId, reason: ReleaseReason) {
        self.take_offer(call);
        if !self.app_calls.remove(&call) {
            return;
        }
        if matches!(
            reason,
            ReleaseReason::RemoteHangup | ReleaseReason::Cancelled | ReleaseReason::Transferred
        ) {
            self.events.emit(Event::RemoteHangup {
                call_id: call.to_string(),
                end_reason: "Normal".into(),
            });
        }
    }

    /// SendUserInput: the digits as RFC 4733 events on the call's media, at the RFC 4733
    /// defaults (100 ms each, 50 ms apart), in place of the call's audio while they play.
    /// Without telephone-event negotiated the action fails.
    fn send_user_input(
        &mut self,
        call: CallId,
        digits: &str,
    ) -> Result<Map<String, Value>, ActionError> {
        let Some(&id) = self.call_connections.get(&call) else {
            return Err(ActionError::new(
                ResultCode::UnknownConnectionId,
                format!("call {call} has no media connection (not answered, or ended)"),
            ));
        };
        self.engine
            .send_digits(u64::from(id), digits.to_string(), 0, 0)
            .map_err(super::engine_error)?;
        Ok(call_result(call))
    }

    /// BridgeCalls: the two calls hear each other. Every call here has a connection, so the
    /// bridge is a hairpin conference of the two (promoted if more join), or the conference
    /// one of them is already in. The peer relationship is kept for UnbridgeCalls.
    fn bridge_calls(
        &mut self,
        call: CallId,
        peer: Option<CallId>,
    ) -> Result<Map<String, Value>, ActionError> {
        let peer = peer
            .or_else(|| self.bridges.get(&call).copied())
            .ok_or_else(|| {
                ActionError::new(
                    ResultCode::InvalidParameters,
                    "PeerCallId is required: the call has no peer to bridge with",
                )
            })?;
        if peer == call {
            return Err(ActionError::new(
                ResultCode::InvalidParameters,
                "a call cannot be bridged with itself",
            ));
        }
        let a = self.connection_of(call)?;
        let b = self.connection_of(peer)?;
        let (in_a, in_b) = (
            self.connections[&a].conference,
            self.connections[&b].conference,
        );
        let conference = match (in_a, in_b) {
            (Some(x), Some(y)) if x == y => {
                return Err(ActionError::new(
                    ResultCode::AlreadyConnected,
                    format!("calls {call} and {peer} are already in conference {x}"),
                ))
            }
            (Some(x), Some(y)) => {
                return Err(ActionError::new(
                    ResultCode::AlreadyConnected,
                    format!("call {call} is in conference {x} and call {peer} in {y}"),
                ))
            }
            (Some(x), None) => self
                .join_conference(b, x, Default::default(), Default::default())
                .map(|_| x)?,
            (None, Some(y)) => self
                .join_conference(a, y, Default::default(), Default::default())
                .map(|_| y)?,
            (None, None) => {
                let choice = super::ConferenceChoice {
                    conference: None,
                    hairpin: true,
                };
                let id = self.join_chosen_conference(a, choice)?;
                if let Err(e) = self.join_conference(b, id, Default::default(), Default::default())
                {
                    let _ = self.leave_conference(a, id);
                    return Err(e);
                }
                id
            }
        };
        self.bridges.insert(call, peer);
        self.bridges.insert(peer, call);
        let mut result = super::success();
        result.insert("ConnectionId".into(), json!(a.to_string()));
        result.insert("PeerConnectionId".into(), json!(b.to_string()));
        result.insert("ConferenceId".into(), json!(conference.to_string()));
        result.insert(
            "MediaRxIP".into(),
            json!(self.connections[&a].rx_ip.to_string()),
        );
        Ok(result)
    }

    /// UnbridgeCalls: both calls leave the bridge's conference (which goes with its last
    /// member) and stay up with their connections.
    fn unbridge_calls(
        &mut self,
        call: CallId,
        peer: Option<CallId>,
    ) -> Result<Map<String, Value>, ActionError> {
        let peer = match (self.bridges.get(&call).copied(), peer) {
            (Some(known), Some(given)) if known != given => {
                return Err(ActionError::new(
                    ResultCode::InvalidParameters,
                    format!("call {call} is bridged with {known}, not {given}"),
                ))
            }
            (Some(known), _) => known,
            (None, _) => {
                return Err(ActionError::new(
                    ResultCode::NotConnected,
                    format!("call {call} is not bridged"),
                ))
            }
        };
        for c in [call, peer] {
            self.bridges.remove(&c);
            if let Ok(id) = self.connection_of(c) {
                if let Some(conference) = self.connections[&id].conference {
                    self.leave_conference(id, conference)?;
                }
            }
        }
        Ok(call_result(call))
    }

    fn connection_of(&self, call: CallId) -> Result<u32, ActionError> {
        self.call_connections.get(&call).copied().ok_or_else(|| {
            ActionError::new(
                ResultCode::UnknownConnectionId,
                format!("call {call} has no media connection (not answered, or ended)"),
            )
        })
    }

    fn offered_call(&self, call: CallId) -> Result<(), ActionError> {
        if self.offered.contains_key(&call) {
            return Ok(());
        }
        Err(ActionError::new(
            ResultCode::UnknownConnectionId,
            format!("call {call} is not waiting for an answer"),
        ))
    }
}

pub(super) fn call_result(call: CallId) -> Map<String, Value> {
    let mut m = super::success();
    m.insert("CallId".into(), json!(call.to_string()));
    m
}

/// The reason phrase of a rejection status.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        403 => "Forbidden",
        404 => "Not Found",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        488 => "Not Acceptable Here",
        503 => "Service Unavailable",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Rejected",
    }
}
