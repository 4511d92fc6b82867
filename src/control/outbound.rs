//! Calls we place and calls that change hands: MakeCall through a `[[trunk]]`, transfers the
//! far end asks for (REFER, RFC 3515; INVITE with Replaces, RFC 3891) and the application's
//! BlindTransfer (our REFER).
//!
//! Owns: the calls we placed that are not answered yet (their purpose, ring deadline and the
//! MakeCall details for `MakeCall_Complete`/`_Failed`), the BlindTransfer answers waiting for
//! the far end's NOTIFY, and "taking a call's place": the new connection gets the old one's
//! media mode and conference with the same attributes, then the old one is released.
//! Must not: speak SIP (the user agent does) or release a connection any other way than the
//! one release path.

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::call_control::ConferenceChoice;
use super::events::{Event, ReleaseReason};
use super::party::Actor;
use super::result::{ActionError, ResultCode};
use super::timers::Timer;
use super::Backend;
use super::{codec_name, CodecChoice, ConnectionState, Controller, Reply};
use crate::engine::{ConfereeSpec, MediaMode, MediaSpec};
use crate::sip::message::{NameAddr, Uri};
use crate::sip::routing::{OutboundTrunk, Service};
use crate::sip::ua::{CallId, EndReason, OutboundInvite};

/// A call we placed, not answered yet.
#[derive(Debug)]
pub(super) struct Placed {
    purpose: Purpose,
    to: String,
    from: String,
    /// Who adds the call to its conference when it is answered (a CTI single-step
    /// conference's requester); None: the application that placed it.
    added_by: Option<Actor>,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// The application's MakeCall, with its conference choice.
    MakeCall {
        conference: Option<ConferenceChoice>,
    },
    /// Carrying out the far end's REFER of `old` (`requested`: false), or a CTI single-step
    /// transfer of `old`'s place (`requested`: true; no REFER, so no NOTIFY, and `old` is hung
    /// up once the target answers).
    Transfer { old: CallId, requested: bool },
    /// A phone of an agent conference (the agent gateway): the chair's, an invited agent's or
    /// a participant's number.
    AgentConf { conf: u64, member: u32 },
}

/// MakeCall's parameters, parsed at the API edge.
#[derive(Debug, Clone)]
pub struct MakeCall {
    /// A number or user (sent as `sip:<to>@<trunk domain>`) or a whole SIP URI.
    pub to: String,
    /// The calling user, else the trunk's `from_user`.
    pub from: Option<String>,
    pub display_name: Option<String>,
    /// The trunk by name, else the first with an address.
    pub trunk: Option<String>,
    pub conference: Option<ConferenceChoice>,
}

impl<M: Backend> Controller<M> {
    /// MakeCall: a connection, then the INVITE through the trunk. Answers at once with the
    /// CallId; the outcome is `MakeCall_Complete` or `MakeCall_Failed`.
    pub(super) fn make_call(
        &mut self,
        request: MakeCall,
    ) -> Result<Map<String, Value>, ActionError> {
        self.make_call_by(request, None)
    }

    /// MakeCall, naming who adds the answered call to its conference.
    pub(super) fn make_call_by(
        &mut self,
        request: MakeCall,
        added_by: Option<Actor>,
    ) -> Result<Map<String, Value>, ActionError> {
        let trunk = self.trunk(request.trunk.as_deref())?;
        let target = target_uri(&request.to, &trunk.domain)
            .map_err(|e| ActionError::new(ResultCode::InvalidParameters, e))?;
        if let Some(ConferenceChoice {
            conference: Some(id),
            ..
        }) = request.conference
        {
            if !self.conferences.contains_key(&id) {
                return Err(ActionError::new(
                    ResultCode::UnknownConferenceId,
                    format!("conference {id} does not exist"),
                ));
            }
        }
        let from_user = request.from.clone().unwrap_or(trunk.from_user.clone());
        let (call, connection) = self.place_call(
            &trunk,
            target.clone(),
            &from_user,
            request.display_name.as_deref(),
            Vec::new(),
            MediaMode::Idle,
            Service::Application,
            None,
            Actor::Client {
                action: "MakeCall".into(),
            },
        )?;
        self.app_calls.insert(call);
        self.placed.insert(
            call,
            Placed {
                purpose: Purpose::MakeCall {
                    conference: request.conference,
                },
                to: request.to.clone(),
                from: from_user.clone(),
                added_by,
            },
        );
        self.timers
            .set(Timer::Placed(call), self.now.at + self.media.ring_timeout);
        let mut result = super::success();
        result.insert("CallId".into(), json!(call.to_string()));
        result.insert("ConnectionId".into(), json!(connection.to_string()));
        Ok(result)
    }

    /// Calls an agent conference's phone through the default trunk; its answer (or failure)
    /// comes back to the agent conference as `member`.
    pub(super) fn place_agent_phone(
        &mut self,
        conf: u64,
        member: u32,
        number: &str,
        caller: Option<&str>,
        by: Actor,
    ) -> Result<(CallId, u32), ActionError> {
        let trunk = self.trunk(None)?;
        let target = target_uri(number, &trunk.domain)
            .map_err(|e| ActionError::new(ResultCode::InvalidParameters, e))?;
        let from_user = caller.map_or(trunk.from_user.clone(), str::to_string);
        let (call, connection) = self.place_call(
            &trunk,
            target,
            &from_user,
            None,
            Vec::new(),
            MediaMode::Idle,
            Service::Application,
            None,
            by,
        )?;
        self.placed.insert(
            call,
            Placed {
                purpose: Purpose::AgentConf { conf, member },
                to: number.to_string(),
                from: from_user,
                added_by: None,
            },
        );
        self.timers
            .set(Timer::Placed(call), self.now.at + self.media.ring_timeout);
        Ok((call, connection))
    }

    /// The trunk named, or the first that calls can be placed through.
    fn trunk(&self, name: Option<&str>) -> Result<OutboundTrunk, ActionError> {
        let found = match name {
            Some(name) => self.media.trunks.iter().find(|t| t.name == name),
            None => self.media.trunks.first(),
        };
        found.cloned().ok_or_else(|| {
            ActionError::new(
                ResultCode::ResourceUnavailable,
                match name {
                    Some(name) => format!("no [[trunk]] named {name:?} with an address"),
                    None => "no [[trunk]] with an address to place calls through".to_string(),
                },
            )
        })
    }

    /// Opens a connection and sends the INVITE; the connection is bound to the new call.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place_call(
        &mut self,
        trunk: &OutboundTrunk,
        target: Uri,
        from_user: &str,
        display_name: Option<&str>,
        headers: Vec<(String, String)>,
        mode: MediaMode,
        service: Service,
        refer_of: Option<CallId>,
        by: Actor,
    ) -> Result<(CallId, u32), ActionError> {
        let local = self
            .engine
            .sip_local_for(trunk.destination)
            .ok_or_else(|| {
                ActionError::new(
                    ResultCode::ResourceUnavailable,
                    format!(
                        "no SIP listener for trunk {:?} ({:?} over {:?})",
                        trunk.name, trunk.destination.addr, trunk.destination.transport
                    ),
                )
            })?;
        let rx_ip = self.announced_ip(trunk.destination.addr.ip());
        let spec = MediaSpec {
            mode,
            ..MediaSpec::idle(None)
        };
        let id = self.open_connection(
            rx_ip,
            ConnectionState::Connected,
            &CodecChoice::default(),
            spec,
            None,
        )?;
        let local_rtp = SocketAddr::new(rx_ip, self.connections[&id].local_rtp.port());
        let from = NameAddr {
            display: display_name.map(str::to_string),
            uri: Uri::parse(&format!("sip:{from_user}@{}", host_of(local))).map_err(|e| {
                ActionError::new(
                    ResultCode::InvalidParameters,
                    format!("From {from_user:?}: {e}"),
                )
            })?,
            params: Vec::new(),
        };
        let target_text = target.to_string();
        let target_user = target.user.clone();
        let invite = OutboundInvite {
            to: NameAddr {
                display: None,
                uri: target.clone(),
                params: Vec::new(),
            },
            target,
            from,
            destination: trunk.destination,
            local,
            local_rtp,
            credentials: trunk.credentials.clone(),
            srtp: trunk.srtp,
            codecs: trunk.codecs.clone(),
            headers,
            refer_of,
            service,
        };
        let call = match self.ua.invite(self.now.at, invite) {
            Ok(call) => call,
            Err(e) => {
                let _ = self.release_connection(id, ReleaseReason::CallFailed);
                return Err(ActionError::new(
                    ResultCode::ServerInternal,
                    format!("cannot send the INVITE: {e}"),
                ));
            }
        };
        if let Some(c) = self.connections.get_mut(&id) {
            c.call = Some(call);
        }
        self.call_connections.insert(call, id);
        // The called party's number: the Request-URI's user.
        let dn = target_user.unwrap_or_default();
        let calling = from_user.to_string();
        self.note_call(call, (from_user, &target_text), (dn, calling), service);
        if let Some(info) = self.call_info.get_mut(&call) {
            info.record = trunk.record;
            info.trunk = Some(trunk.name.clone());
        }
        self.open_party(call, id, true, by);
        self.store_leg_started(call, id, crate::store::Direction::Outbound);
        self.emit_created(id);
        Ok((call, id))
    }

    /// A call we placed was answered (its media is already applied).
    pub(super) fn on_placed_answered(&mut self, call: CallId) {
        let Some(placed) = self.take_placed(call) else {
            return;
        };
        let Some(&id) = self.call_connections.get(&call) else {
            return;
        };
        match placed.purpose {
            Purpose::AgentConf { conf, member } => self.agent_phone_answered(conf, member, id),
            Purpose::MakeCall { conference } => {
                let mut conference_id = None;
                if let Some(choice) = conference {
                    self.joining_by = placed.added_by.clone();
                    let joined = self.join_chosen_conference(id, choice);
                    self.joining_by = None;
                    match joined {
                        Ok(c) => conference_id = Some(c),
                        Err(e) => {
                            tracing::warn!(call, error = %e.message, "answered MakeCall cannot join its conference");
                            self.events.emit(Event::MakeCallFailed {
                                call_id: call.to_string(),
                                to: placed.to,
                                from: placed.from,
                                end_reason: "InternalError".into(),
                                status: None,
                            });
                            self.app_calls.remove(&call);
                            let _ = self.release_connection(id, ReleaseReason::CallFailed);
                            return;
                        }
                    }
                }
                let c = &self.connections[&id];
                let tx = c.media.remote_rtp;
                self.events.emit(Event::MakeCallComplete {
                    call_id: call.to_string(),
                    mms_id: u32::from(self.media.node_id),
                    to: placed.to,
                    from: placed.from,
                    connection_id: id.to_string(),
                    conference_id: conference_id.map(|c| c.to_string()),
                    media_tx_ip: tx.map(|a| a.ip().to_string()),
                    media_tx_port: tx.map(|a| a.port()),
                    media_tx_codec: tx.map(|_| codec_name(c.tx_codec).to_string()),
                    media_tx_framesize: tx.map(|_| c.tx_framesize),
                });
                let rx = SocketAddr::new(c.rx_ip, c.local_rtp.port());
                self.emit_start_rx(call, id, rx);
                // A consultation call: connect its caller to it.
                self.consultation_answered(id);
            }
            Purpose::Transfer { old, requested } => {
                if self.app_calls.contains(&old) {
                    self.app_calls.insert(call);
                }
                // The transferred party takes the transferor's place (in a conference it
                // already has: take_place joined it).
                self.transfer_targets.remove(&id);
                if let Some(&old_connection) = self.call_connections.get(&old) {
                    let by = self.party_actor(old_connection);
                    self.model
                        .replace(self.now.unix_ms, id, old_connection, by.clone());
                    if requested {
                        let _ = self.release_connection_by(
                            old_connection,
                            ReleaseReason::Transferred,
                            Some(by),
                        );
                    }
                }
                self.events.emit(Event::CallChanged {
                    call_id: call.to_string(),
                    replaces_call_id: old.to_string(),
                    connection_id: id.to_string(),
                    to: placed.to,
                    from: placed.from,
                });
            }
        }
    }

    /// A call we placed ended before it was answered (refused, no answer, bad answer).
    pub(super) fn on_placed_failed(&mut self, call: CallId, reason: EndReason) {
        let Some(placed) = self.take_placed(call) else {
            return;
        };
        match placed.purpose {
            Purpose::AgentConf { conf, member } => {
                let status = match reason {
                    EndReason::Rejected(status) => status,
                    EndReason::NoAnswer => 408,
                    _ => 500,
                };
                self.agent_phone_failed(conf, member, status);
            }
            Purpose::MakeCall { .. } => {
                let status = match reason {
                    EndReason::Rejected(status) => Some(status),
                    _ => None,
                };
                self.events.emit(Event::MakeCallFailed {
                    call_id: call.to_string(),
                    to: placed.to,
                    from: placed.from,
                    end_reason: end_reason_of(reason).into(),
                    status,
                });
            }
            Purpose::Transfer { old, .. } => {
                let status = match reason {
                    EndReason::Rejected(status) => status,
                    EndReason::NoAnswer => 408,
                    _ => 500,
                };
                self.transfer_failed(old, status);
            }
        }
    }

    /// A call we placed still unanswered at its deadline is cancelled (Ringout).
    pub(super) fn expire_placed(&mut self, call: CallId) {
        let now = self.now.at;
        let Some(placed) = self.placed.remove(&call) else {
            return;
        };
        tracing::info!(call, "placed call not answered in time: cancelled");
        match placed.purpose {
            Purpose::AgentConf { conf, member } => self.agent_phone_failed(conf, member, 408),
            Purpose::MakeCall { .. } => self.events.emit(Event::MakeCallFailed {
                call_id: call.to_string(),
                to: placed.to,
                from: placed.from,
                end_reason: "Ringout".into(),
                status: None,
            }),
            Purpose::Transfer { old, requested } => {
                if !requested {
                    self.ua.transfer_failed(now, old, 408, "Request Timeout");
                }
                self.transfer_failed(old, 408);
            }
        }
        self.app_calls.remove(&call);
        if let Some(&id) = self.call_connections.get(&call) {
            // Rung out: no answer.
            self.model.fail(id, 408);
            let _ = self.release_connection(id, ReleaseReason::CallFailed);
        }
    }

    /// A connection is being released: a call of ours still ringing goes without a report
    /// (CUAE: Hangup of a ringing MakeCall gives no MakeCall_Failed).
    pub(super) fn forget_placed(&mut self, call: CallId) {
        self.take_placed(call);
    }

    /// Takes a call off the placed list, with its ring timer.
    pub(super) fn take_placed(&mut self, call: CallId) -> Option<Placed> {
        self.timers.cancel(Timer::Placed(call));
        self.placed.remove(&call)
    }

    /// The far end's REFER: place the call to the target through the trunk, in the old call's
    /// place (same mode, same conference, same attributes). The old call's connection goes
    /// when the transferor hangs up (reason `transferred`).
    pub(super) fn on_transfer_requested(
        &mut self,
        old: CallId,
        target: Uri,
        headers: Vec<(String, String)>,
        referred_by: String,
        service: Service,
    ) {
        let now = self.now.at;
        let placed = self.place_transfer(old, &target, headers, &referred_by, service);
        let (call, _from_user) = match placed {
            Ok(placed) => placed,
            Err(e) => {
                tracing::warn!(call = old, error = %e.message, "transfer refused");
                self.ua
                    .transfer_failed(now, old, 503, "Service Unavailable");
                self.transfer_failed(old, 503);
                return;
            }
        };
        tracing::info!(call = old, new_call = call, target = %target, "transferring (REFER)");
        self.placed.insert(
            call,
            Placed {
                purpose: Purpose::Transfer {
                    old,
                    requested: false,
                },
                to: target.to_string(),
                from: referred_by,
                added_by: None,
            },
        );
        self.timers
            .set(Timer::Placed(call), now + self.media.ring_timeout);
    }

    /// Places the transfer's call in `old`'s place: its trunk, its INVITE (with Referred-By
    /// and the Refer-To's headers), its connection in the old one's conference. Returns the
    /// new call and our calling user; on error nothing is left behind.
    fn place_transfer(
        &mut self,
        old: CallId,
        target: &Uri,
        headers: Vec<(String, String)>,
        referred_by: &str,
        service: Service,
    ) -> Result<(CallId, String), ActionError> {
        let mut invite_headers = vec![("Referred-By".to_string(), referred_by.to_string())];
        invite_headers.extend(headers);
        self.place_in_place_of(old, target, invite_headers, service, None, Some(old))
    }

    /// Places a call to `target` through its trunk in `old`'s place (same mode, same
    /// conference and attributes), from `from` (else the trunk's user); `refer_of`: the REFER
    /// it carries out. Returns the new call and our calling user.
    fn place_in_place_of(
        &mut self,
        old: CallId,
        target: &Uri,
        invite_headers: Vec<(String, String)>,
        service: Service,
        from: Option<String>,
        refer_of: Option<CallId>,
    ) -> Result<(CallId, String), ActionError> {
        let old_connection = *self.call_connections.get(&old).ok_or_else(|| {
            ActionError::new(
                ResultCode::UnknownConnectionId,
                format!("call {old} has no connection"),
            )
        })?;
        let trunk = self.trunk_for(target)?;
        let mode = self.connections[&old_connection].media.mode;
        let from_user = from.unwrap_or_else(|| trunk.from_user.clone());
        let (call, connection) = self.place_call(
            &trunk,
            target.clone(),
            &from_user,
            None,
            invite_headers,
            mode,
            service,
            refer_of,
            self.party_actor(old_connection),
        )?;
        self.transfer_targets.insert(connection);
        if let Err(e) = self.take_place(connection, old_connection) {
            // The INVITE is out: ending its connection CANCELs it.
            let _ = self.release_connection(connection, ReleaseReason::CallFailed);
            return Err(e);
        }
        Ok((call, from_user))
    }

    /// An INVITE with Replaces was accepted in `old`'s place: the new connection takes the
    /// old one's place and the old call is released (BYE, reason `replaced`).
    pub(super) fn replace_call(&mut self, new: CallId, new_connection: u32, old: CallId) {
        let Some(&old_connection) = self.call_connections.get(&old) else {
            return;
        };
        self.transfer_targets.insert(new_connection);
        if let Err(e) = self.take_place(new_connection, old_connection) {
            tracing::warn!(call = new, error = %e.message, "replacing call cannot take the conference place");
        }
        self.transfer_targets.remove(&new_connection);
        if self.app_calls.contains(&old) {
            self.app_calls.insert(new);
        }
        let info = self.call_info.get(&new).cloned();
        self.events.emit(Event::CallChanged {
            call_id: new.to_string(),
            replaces_call_id: old.to_string(),
            connection_id: new_connection.to_string(),
            to: info.as_ref().map(|i| i.to.clone()).unwrap_or_default(),
            from: info.map(|i| i.from).unwrap_or_default(),
        });
        // The replaced party transferred its place (TransferredBy); it is released by the
        // call that replaced it.
        let transferor = self.party_actor(old_connection);
        self.model
            .replace(self.now.unix_ms, new_connection, old_connection, transferor);
        let by = self.party_actor(new_connection);
        let _ = self.release_connection_by(old_connection, ReleaseReason::Replaced, Some(by));
    }

    /// A CTI single-step transfer: a call to `destination` (through the default trunk)
    /// takes `old`'s place; `old` is hung up when it answers. The call's `From` is the
    /// transferring DN.
    pub(super) fn transfer_place(
        &mut self,
        old: CallId,
        destination: &str,
        from: String,
    ) -> Result<CallId, ActionError> {
        let trunk = self.trunk(None)?;
        let target = target_uri(destination, &trunk.domain)
            .map_err(|e| ActionError::new(ResultCode::InvalidParameters, e))?;
        let service = self
            .call_info
            .get(&old)
            .map_or(Service::Echo, |info| info.kind);
        let now = self.now.at;
        let (call, _) =
            self.place_in_place_of(old, &target, Vec::new(), service, Some(from), None)?;
        self.placed.insert(
            call,
            Placed {
                purpose: Purpose::Transfer {
                    old,
                    requested: true,
                },
                to: target.to_string(),
                from: String::new(),
                added_by: None,
            },
        );
        self.timers
            .set(Timer::Placed(call), now + self.media.ring_timeout);
        Ok(call)
    }

    /// A party as the cause of a change to another.
    pub(super) fn party_actor(&self, connection: u32) -> Actor {
        Actor::Party {
            connection: Some(connection),
            dn: self
                .model
                .party(connection)
                .map(|p| p.dn.clone())
                .unwrap_or_default(),
        }
    }

    /// `new` joins `old`'s conference with `old`'s attributes (roles move with it).
    fn take_place(&mut self, new: u32, old: u32) -> Result<(), ActionError> {
        let Some(conference) = self.connections.get(&old).and_then(|c| c.conference) else {
            return Ok(());
        };
        let spec: ConfereeSpec = self.conferences[&conference].members[&old].spec;
        self.join_conference(new, conference, Default::default(), spec)
            .map(|_| ())
    }

    /// The trunk for a transfer target: the one whose address is the target's host, else
    /// the first trunk that places calls.
    fn trunk_for(&self, target: &Uri) -> Result<OutboundTrunk, ActionError> {
        let host = target.host.to_string();
        let by_address = self.media.trunks.iter().find(|t| {
            let ip = t.destination.addr.ip();
            host == ip.to_string() || host == format!("[{ip}]") || host == t.domain
        });
        match by_address {
            Some(t) => Ok(t.clone()),
            None => self.trunk(None),
        }
    }

    /// The chosen conference of AnswerCall/MakeCall: joined (existing) or created; its id.
    pub(super) fn join_chosen_conference(
        &mut self,
        connection: u32,
        choice: ConferenceChoice,
    ) -> Result<u32, ActionError> {
        match choice.conference {
            Some(existing) => self
                .join_conference(
                    connection,
                    existing,
                    Default::default(),
                    ConfereeSpec::default(),
                )
                .map(|_| existing),
            None => self
                .create_conference(
                    connection,
                    Default::default(),
                    ConfereeSpec::default(),
                    choice.hairpin,
                    false,
                    None,
                )
                .and_then(|r| {
                    r.get("ConferenceId")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| ActionError::new(ResultCode::ServerInternal, "no id"))
                }),
        }
    }

    /// BlindTransfer: REFER the far end to `to`. The answer waits for the outcome: the final
    /// NOTIFY (success releases the connection, reason `transferred`), or the REFER's refusal
    /// (the call stays). An unanswered call is redirected instead (302), as CUAE's SIP provider.
    pub(super) fn blind_transfer(&mut self, call: CallId, to: String, reply: Reply) {
        let now = self.now.at;
        if self.take_offer(call).is_some() {
            self.ua.redirect(now, call, &to);
            let _ = reply.send(Ok(super::call_control::call_result(call)));
            return;
        }
        if !self.call_connections.contains_key(&call) {
            let _ = reply.send(Err(ActionError::new(
                ResultCode::UnknownConnectionId,
                format!("call {call} does not exist"),
            )));
            return;
        }
        match self.ua.refer(now, call, &to) {
            Ok(()) => {
                self.transfer_replies.insert(call, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(ActionError::new(ResultCode::ConnectionBusy, e)));
            }
        }
    }

    /// The far end answered our REFER: a refusal fails the BlindTransfer (the call stays);
    /// 202 waits for the NOTIFYs.
    pub(super) fn on_refer_answered(&mut self, call: CallId, status: u16) {
        if (200..300).contains(&status) {
            return;
        }
        self.transfer_finished(call, status);
    }

    /// A NOTIFY about our REFER: the final one decides.
    pub(super) fn on_refer_progress(&mut self, call: CallId, status: u16, done: bool) {
        if done {
            self.transfer_finished(call, status);
        }
    }

    fn transfer_finished(&mut self, call: CallId, status: u16) {
        // Nothing waits when the call's end already answered the BlindTransfer (our REFER's
        // transaction may end after the call it was sent in).
        let Some(reply) = self.transfer_replies.remove(&call) else {
            return;
        };
        if (200..300).contains(&status) {
            let _ = reply.send(Ok(super::call_control::call_result(call)));
            if let Some(&id) = self.call_connections.get(&call) {
                // The implicit DeleteConnection of a completed transfer; the call gets BYE.
                self.app_calls.remove(&call);
                let _ = self.release_connection(id, ReleaseReason::Transferred);
            }
            return;
        }
        tracing::info!(call, status, "transfer failed; the call stays");
        self.events.emit(Event::TransferFailed {
            call_id: call.to_string(),
            status,
        });
        let _ = reply.send(Err(ActionError::new(
            ResultCode::ServerInternal,
            format!("transfer failed: the target answered {status}; the call stays"),
        )));
    }

    /// The call ended while a BlindTransfer waited: the far end left, so the transfer took.
    pub(super) fn transfer_call_ended(&mut self, call: CallId) {
        if let Some(reply) = self.transfer_replies.remove(&call) {
            let _ = reply.send(Ok(super::call_control::call_result(call)));
        }
    }

    /// `TransferFailed` for the transferred call `old` — nothing when it has ended meanwhile
    /// (its transferor hung up, or we released it): nobody is left to tell.
    fn transfer_failed(&mut self, old: CallId, status: u16) {
        if self.call_connections.contains_key(&old) {
            self.events.emit(Event::TransferFailed {
                call_id: old.to_string(),
                status,
            });
        }
    }

    /// We released the call while a BlindTransfer waited (DeleteConnection, Hangup, a CTI
    /// release, shutdown): the transfer did not take.
    pub(super) fn transfer_call_released(&mut self, call: CallId) {
        if let Some(reply) = self.transfer_replies.remove(&call) {
            let _ = reply.send(Err(ActionError::new(
                ResultCode::ServerInternal,
                format!("call {call} was released before its transfer completed"),
            )));
        }
    }
}

/// `sip:<to>@<domain>` for a number or user, or `to` itself when it is a SIP URI.
fn target_uri(to: &str, domain: &str) -> Result<Uri, String> {
    let to = to.trim();
    if to.is_empty() {
        return Err("To is required".into());
    }
    let text = if to.starts_with("sip:") || to.starts_with("sips:") || to.starts_with("tel:") {
        to.to_string()
    } else {
        format!("sip:{to}@{domain}")
    };
    let uri =
        Uri::parse(&text).map_err(|e| format!("To {to:?} is not a number or SIP URI: {e}"))?;
    if uri.scheme == "tel" {
        return Err(format!(
            "To {to:?}: a tel: URI needs a trunk domain; give the number alone"
        ));
    }
    Ok(uri)
}

fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// CUAE EndReason of a call we placed that failed (call-control-api.md §7). SIP statuses are
/// told apart where CUAE's SIP provider said only Ringout: busy, unreachable, no answer.
fn end_reason_of(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Rejected(486 | 600) => "Busy",
        EndReason::Rejected(404 | 410 | 484 | 485 | 502 | 503 | 604) | EndReason::NoAnswer => {
            "Unreachable"
        }
        EndReason::Rejected(408 | 480 | 487) => "Ringout",
        EndReason::Rejected(500..=599) | EndReason::BadAnswer => "InternalError",
        EndReason::RemoteHangup => "Normal",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_go_to_the_trunk_domain_and_uris_go_as_they_are() {
        assert_eq!(
            target_uri("1001", "pbx.example").unwrap().to_string(),
            "sip:1001@pbx.example"
        );
        assert_eq!(
            target_uri("sip:bob@10.0.0.9:5070", "pbx.example")
                .unwrap()
                .to_string(),
            "sip:bob@10.0.0.9:5070"
        );
        assert!(target_uri("", "pbx.example").is_err());
        assert!(target_uri("a b", "pbx.example").is_err());
        assert!(target_uri("tel:+123", "pbx.example").is_err());
    }

    #[test]
    fn failures_map_to_cuae_end_reasons() {
        assert_eq!(end_reason_of(EndReason::Rejected(486)), "Busy");
        assert_eq!(end_reason_of(EndReason::Rejected(404)), "Unreachable");
        assert_eq!(end_reason_of(EndReason::NoAnswer), "Unreachable");
        assert_eq!(end_reason_of(EndReason::Rejected(480)), "Ringout");
        assert_eq!(end_reason_of(EndReason::Rejected(500)), "InternalError");
        assert_eq!(end_reason_of(EndReason::Rejected(403)), "Unknown");
    }
}
