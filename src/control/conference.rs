//! Conferences in the control plane: CreateConference, JoinConference, LeaveConference,
//! SetConfereeAttribute, the conference modes of DeleteConnection, and resource accounting.
//!
//! Owns: the conference registry (members and their attributes, hairpin state, room names of
//! `conference` routes), the rules of reference §3.4–3.5, §3.13–3.15 and §8 (one coach and one
//! pupil, promotion of a hairpin, automatic release with the last connection), and the resource
//! pools of seed 01 (RTP, enhanced RTP, conference).
//! Must not: mix or touch media — the engine's worker that owns a conference mixes it. Every
//! action checks everything it needs (ids, state, resources) before it changes anything, so a
//! refusal leaves nothing half-made.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::events::{ConfereeAttributes, Event, ReleaseReason};
use super::party::Actor;
use super::result::{ActionError, ResultCode};
use super::Backend;
use super::{
    engine_error, retarget, success, unknown_connection, ActionResult, CodecChoice,
    ConnectionState, Controller,
};
use crate::engine::{ConfereeSpec, ConferenceSpec};
use crate::sdp::Codec;
use crate::sip::routing::RouteRoom;

/// One conference.
#[derive(Debug)]
pub(super) struct Conference {
    /// Members by connection id, with their attributes and whether each holds a conference
    /// resource.
    pub(super) members: BTreeMap<u32, Conferee>,
    /// Two-party fast path (no conference resources); promoted, never demoted.
    pub(super) hairpin: bool,
    /// Mixing rate, Hz.
    pub(super) rate: u32,
    /// Room name of a `conference` route.
    pub(super) name: Option<String>,
    pub(super) created_ms: u64,
}

/// One member of a conference.
#[derive(Debug, Clone, Copy)]
pub(super) struct Conferee {
    pub(super) spec: ConfereeSpec,
    /// Holds one conference resource (mixed conference, not a monitor).
    pub(super) holds_resource: bool,
}

/// Optional Tx completion of CreateConference/JoinConference (reference §3.13): a reserved
/// connection gets its Tx side here; a connected one is re-targeted when an address is given.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub tx: Option<SocketAddr>,
    pub codecs: CodecChoice,
}

/// SetConfereeAttribute's changes; None leaves an attribute as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttributeChange {
    pub mute: Option<bool>,
    pub tariff_tone: Option<bool>,
    pub coach: Option<bool>,
    pub pupil: Option<bool>,
    /// Hears nothing (the agent gateway's "speak only" and "neither"; not a CUAE attribute).
    pub deaf: Option<bool>,
}

impl AttributeChange {
    fn is_empty(&self) -> bool {
        self.mute.is_none()
            && self.tariff_tone.is_none()
            && self.coach.is_none()
            && self.pupil.is_none()
            && self.deaf.is_none()
    }

    fn apply(&self, spec: ConfereeSpec) -> ConfereeSpec {
        ConfereeSpec {
            muted: self.mute.unwrap_or(spec.muted),
            tariff_tone: self.tariff_tone.unwrap_or(spec.tariff_tone),
            coach: self.coach.unwrap_or(spec.coach),
            pupil: self.pupil.unwrap_or(spec.pupil),
            deaf: self.deaf.unwrap_or(spec.deaf),
            ..spec
        }
    }
}

/// Used and available units of one kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub used: usize,
    pub limit: usize,
}

impl Pool {
    fn new(limit: usize) -> Pool {
        Pool { used: 0, limit }
    }

    pub fn free(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    fn take(&mut self, n: usize) {
        self.used += n;
    }

    fn give_back(&mut self, n: usize) {
        debug_assert!(self.used >= n, "resource given back twice");
        self.used = self.used.saturating_sub(n);
    }
}

/// The limits of the resource pools (CUAE resource accounting, seed 01; `[resources]`):
/// 0 means as many as the RTP port range allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Connections (RTP resources). Exhausted → ResultCode 4 (ServerBusy), SIP 503.
    pub rtp: usize,
    /// Connections whose codec is not G.711 (G.722, Opus). Exhausted → 8.
    pub enhanced_rtp: usize,
    /// Conferees in mixed conferences. Exhausted → 8.
    pub conference: usize,
}

/// The resource pools of seed 01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// One per connection.
    pub rtp: Pool,
    /// One per connection whose codec is not G.711.
    pub enhanced_rtp: Pool,
    /// One per conferee of a mixed conference (monitors and hairpins hold none).
    pub conference: Pool,
}

impl Resources {
    /// Limits from `[resources]`; 0 means as many as there are RTP port pairs.
    pub fn new(config: &ResourceLimits, port_pairs: usize) -> Resources {
        let limit = |n: usize| if n == 0 { port_pairs } else { n };
        Resources {
            rtp: Pool::new(limit(config.rtp)),
            enhanced_rtp: Pool::new(limit(config.enhanced_rtp)),
            conference: Pool::new(limit(config.conference)),
        }
    }

    /// Checks that a new connection with `codec` can be had: RTP (else 4), enhanced (else 8).
    pub(super) fn check_connection(&self, codec: Codec) -> Result<(), ActionError> {
        if self.rtp.free() == 0 {
            return Err(ActionError::new(
                ResultCode::ServerBusy,
                format!("all {} RTP resources are in use", self.rtp.limit),
            ));
        }
        if needs_enhanced(codec) && self.enhanced_rtp.free() == 0 {
            return Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                format!(
                    "all {} enhanced RTP resources (non-G.711 codecs) are in use",
                    self.enhanced_rtp.limit
                ),
            ));
        }
        Ok(())
    }

    /// Takes what a connection with `codec` holds; returns whether it holds an enhanced one.
    pub(super) fn take_connection(&mut self, codec: Codec) -> bool {
        self.rtp.take(1);
        let enhanced = needs_enhanced(codec);
        if enhanced {
            self.enhanced_rtp.take(1);
        }
        enhanced
    }

    /// A connection's codec changed: its enhanced resource (`holds`) is taken or given back
    /// to match `needs`. True when taking it went past the limit.
    pub(super) fn follow_codec(&mut self, holds: &mut bool, needs: bool) -> bool {
        match (needs, *holds) {
            (true, false) => {
                self.enhanced_rtp.take(1);
                *holds = true;
                self.enhanced_rtp.used > self.enhanced_rtp.limit
            }
            (false, true) => {
                self.enhanced_rtp.give_back(1);
                *holds = false;
                false
            }
            _ => false,
        }
    }

    pub(super) fn give_back_connection(&mut self, enhanced: bool) {
        self.rtp.give_back(1);
        if enhanced {
            self.enhanced_rtp.give_back(1);
        }
    }

    /// A temporary conference connection ends: its conference resource comes back.
    pub(super) fn conference_leg_released(&mut self) {
        self.conference.give_back(1);
    }

    pub(super) fn check_conferees(&self, n: usize) -> Result<(), ActionError> {
        if self.conference.free() < n {
            return Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                format!(
                    "{n} conference resource(s) needed, {} of {} free",
                    self.conference.free(),
                    self.conference.limit
                ),
            ));
        }
        Ok(())
    }

    /// The API's view (`/mediacontrol/resources`, `/metrics`).
    pub fn to_json(&self) -> Value {
        let pool = |p: &Pool| json!({ "Used": p.used, "Limit": p.limit, "Free": p.free() });
        json!({
            "Rtp": pool(&self.rtp),
            "EnhancedRtp": pool(&self.enhanced_rtp),
            "Conference": pool(&self.conference),
        })
    }
}

/// Codecs other than G.711 need an enhanced RTP resource (seed 01: "low bitrate codecs").
pub(super) fn needs_enhanced(codec: Codec) -> bool {
    !codec.is_g711()
}

/// The mixing rate of a room whose first member speaks `codec`: narrowband for G.711,
/// wideband for G.722, fullband for Opus.
fn room_rate(codec: Codec) -> u32 {
    match codec {
        Codec::G722 => 16_000,
        Codec::Opus => 48_000,
        _ => 8_000,
    }
}

fn attributes(spec: &ConfereeSpec) -> ConfereeAttributes {
    ConfereeAttributes {
        mute: spec.muted,
        receive_only: spec.receive_only,
        monitor: spec.monitor,
        tariff_tone: spec.tariff_tone,
        coach: spec.coach,
        pupil: spec.pupil,
    }
}

fn unknown_conference(id: u32) -> ActionError {
    ActionError::new(
        ResultCode::UnknownConferenceId,
        format!("conference {id} does not exist"),
    )
}

fn coach_and_pupil() -> ActionError {
    ActionError::new(
        ResultCode::InvalidParameter,
        "a conferee cannot be both Coach and Pupil",
    )
}

impl<M: Backend> Controller<M> {
    /// CreateConference: a new conference with `connection` as its first participant.
    pub(super) fn create_conference(
        &mut self,
        connection: u32,
        completion: Completion,
        conferee: ConfereeSpec,
        hairpin: bool,
        join_tone: bool,
        name: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        if conferee.coach && conferee.pupil {
            return Err(coach_and_pupil());
        }
        self.check_joinable(connection, &completion)?;
        // A hairpin promotes as soon as a role needs the mixer.
        let hairpin = hairpin && !conferee.coach && !conferee.pupil;
        let needs = usize::from(!hairpin && !conferee.monitor);
        self.resources.check_conferees(needs)?;
        let id = self.allocate_conference_id()?;
        self.complete_for_join(connection, completion)?;
        let rate = room_rate(self.connections[&connection].rx_codec);
        self.engine
            .create_conference(
                u64::from(id),
                ConferenceSpec {
                    rate,
                    hairpin,
                    join_tone,
                },
                u64::from(connection),
            )
            .map_err(engine_error)?;
        if let Some(room) = &name {
            self.rooms.insert(room.clone(), id);
        }
        self.conferences.insert(
            id,
            Conference {
                members: BTreeMap::new(),
                hairpin,
                rate,
                name: name.clone(),
                created_ms: self.now.unix_ms,
            },
        );
        tracing::info!(
            conference = id,
            connection,
            hairpin,
            rate,
            "conference created"
        );
        self.events.emit(Event::ConferenceCreated {
            conference_id: id.to_string(),
            connection_id: connection.to_string(),
            hairpin,
            sample_rate: rate,
            name,
        });
        self.add_member(id, connection, conferee);
        let mut result = self.connection_result(connection);
        result.insert("ConferenceId".into(), json!(id.to_string()));
        Ok(result)
    }

    /// JoinConference: `connection` becomes a participant of `conference`. A third party (or a
    /// coach or pupil) promotes a hairpin to a mixed conference, which needs a conference
    /// resource for every participant that talks; without them the join fails with 8 and
    /// nothing changes.
    pub(super) fn join_conference(
        &mut self,
        connection: u32,
        conference: u32,
        completion: Completion,
        conferee: ConfereeSpec,
    ) -> Result<ActionResult, ActionError> {
        if conferee.coach && conferee.pupil {
            return Err(coach_and_pupil());
        }
        let room = self
            .conferences
            .get(&conference)
            .ok_or_else(|| unknown_conference(conference))?;
        let promote = room.hairpin && (room.members.len() >= 2 || conferee.coach || conferee.pupil);
        let mixed = !room.hairpin || promote;
        let mut needs = usize::from(mixed && !conferee.monitor);
        if promote {
            needs += room
                .members
                .values()
                .filter(|m| !m.spec.monitor && !m.holds_resource)
                .count();
        }
        self.check_joinable(connection, &completion)?;
        self.resources.check_conferees(needs)?;
        self.complete_for_join(connection, completion)?;
        if promote {
            self.promote(conference);
        }
        self.add_member(conference, connection, conferee);
        let mut result = self.connection_result(connection);
        result.insert("ConferenceId".into(), json!(conference.to_string()));
        Ok(result)
    }

    /// LeaveConference, or DeleteConnection with both ids: the connection leaves and stays
    /// open; the conference goes with its last connection.
    pub(super) fn leave_conference(
        &mut self,
        connection: u32,
        conference: u32,
    ) -> Result<ActionResult, ActionError> {
        self.check_member(connection, conference)?;
        self.remove_member(conference, connection, ReleaseReason::ApiRequest);
        let by = self.client_or(Actor::System);
        self.model
            .leave_conference(self.now.unix_ms, connection, by);
        if let Err(e) = self
            .engine
            .leave_conference(u64::from(conference), u64::from(connection))
        {
            tracing::warn!(conference, connection, error = %e, "engine could not take the connection out of the mix");
        }
        self.release_conference_if_empty(conference);
        Ok(success())
    }

    /// Takes a connection out of a conference's mix without changing the party model (a
    /// consultation's moves); the conference goes with its last member.
    pub(super) fn media_leave(&mut self, conference: u32, connection: u32) {
        self.remove_member(conference, connection, ReleaseReason::ApiRequest);
        if let Err(e) = self
            .engine
            .leave_conference(u64::from(conference), u64::from(connection))
        {
            tracing::warn!(conference, connection, error = %e, "engine could not take the connection out of the mix");
        }
        self.release_conference_if_empty(conference);
    }

    /// SetConfereeAttribute: Mute, TariffTone, Coach, Pupil of a participant.
    pub(super) fn set_conferee_attribute(
        &mut self,
        connection: u32,
        conference: u32,
        change: AttributeChange,
    ) -> Result<ActionResult, ActionError> {
        if change.is_empty() {
            return Err(ActionError::new(
                ResultCode::InvalidParameters,
                "SetConfereeAttribute needs at least one of Mute, TariffTone, Coach, Pupil",
            ));
        }
        self.check_member(connection, conference)?;
        let room = &self.conferences[&conference];
        let old = room.members[&connection].spec;
        let spec = change.apply(old);
        if spec.coach && spec.pupil {
            return Err(coach_and_pupil());
        }
        let promote = room.hairpin && (spec.coach || spec.pupil);
        let needs = if promote {
            room.members
                .values()
                .filter(|m| !m.spec.monitor && !m.holds_resource)
                .count()
        } else {
            0
        };
        self.resources.check_conferees(needs)?;
        if promote {
            self.promote(conference);
        }
        let room = self
            .conferences
            .get_mut(&conference)
            .expect("checked above");
        clear_roles_of_others(room, connection, &spec);
        if let Some(member) = room.members.get_mut(&connection) {
            member.spec = spec;
        }
        if let Err(e) = self
            .engine
            .set_conferee(u64::from(conference), u64::from(connection), spec)
        {
            tracing::warn!(conference, connection, error = %e, "engine could not change conferee");
        }
        self.events.emit(Event::ConfereeAttributesChanged {
            conference_id: conference.to_string(),
            connection_id: connection.to_string(),
            attributes: attributes(&spec),
        });
        Ok(success())
    }

    /// A temporary conference connection for a Play/PlayTone/Record addressed to the
    /// conference (reference §3.6): it takes a conference resource, and a hairpin is promoted
    /// first ("a voice operation performed on the conference itself"). Nothing changes when
    /// that cannot be had.
    pub(super) fn open_conference_leg(&mut self, conference: u32) -> Result<u32, ActionError> {
        let room = self
            .conferences
            .get(&conference)
            .ok_or_else(|| unknown_conference(conference))?;
        let mut needs = 1;
        if room.hairpin {
            needs += room
                .members
                .values()
                .filter(|m| !m.spec.monitor && !m.holds_resource)
                .count();
        }
        self.resources.check_conferees(needs)?;
        let id = self.allocate_id()?;
        if self.conferences[&conference].hairpin {
            self.promote(conference);
        }
        self.resources.conference.take(1);
        let media = crate::engine::MediaSpec {
            format: Some(super::api_format(&CodecChoice::default(), &self.media)),
            ..crate::engine::MediaSpec::idle(None)
        };
        let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        self.connections.insert(
            id,
            super::Connection::new(
                unspecified,
                unspecified.ip(),
                ConnectionState::Connected,
                (
                    self.media.default_codec,
                    self.media.default_codec,
                    self.media.default_framesize,
                    self.media.default_framesize,
                ),
                None,
                media,
                false,
                Some(conference),
            ),
        );
        tracing::info!(
            connection = id,
            conference,
            "temporary conference connection"
        );
        Ok(id)
    }

    /// Releases the temporary connections of a conference that is going away.
    fn release_legs_of(&mut self, conference: u32) {
        let legs: Vec<u32> = self
            .connections
            .iter()
            .filter(|(_, c)| c.leg_of == Some(conference))
            .map(|(id, _)| *id)
            .collect();
        for leg in legs {
            let _ = self.release_connection_in(leg, ReleaseReason::ConferenceReleased, None, None);
        }
    }

    /// DeleteConnection with only a ConferenceId: the conference and every connection in it
    /// (calls among them are hung up).
    pub(super) fn release_conference(&mut self, conference: u32) -> Result<(), ActionError> {
        if !self.conferences.contains_key(&conference) {
            return Err(unknown_conference(conference));
        }
        self.release_legs_of(conference);
        let Some(room) = self.conferences.remove(&conference) else {
            return Err(unknown_conference(conference));
        };
        for (&connection, member) in &room.members {
            if member.holds_resource {
                self.resources.conference.give_back(1);
            }
            if let Some(c) = self.connections.get_mut(&connection) {
                c.conference = None;
            }
        }
        // The members go while their call is still the conference call: each is released
        // from a conference (the others told it was deleted), not from a two-party call.
        for &connection in room.members.keys() {
            let _ = self.release_connection_in(
                connection,
                ReleaseReason::ConferenceReleased,
                Some(conference),
                None,
            );
        }
        self.close_room(conference, &room);
        self.events.emit(Event::ConferenceReleased {
            conference_id: conference.to_string(),
            reason: ReleaseReason::ApiRequest,
            name: room.name,
        });
        Ok(())
    }

    /// A connection being released leaves its conference first (no engine command: closing
    /// the connection takes it out of the mix). Returns the conference it was in.
    pub(super) fn leave_on_release(
        &mut self,
        connection: u32,
        reason: ReleaseReason,
    ) -> Option<u32> {
        let conference = self.connections.get(&connection)?.conference?;
        self.remove_member(conference, connection, reason);
        Some(conference)
    }

    /// Releases a conference whose last member has gone.
    pub(super) fn release_conference_if_empty(&mut self, conference: u32) {
        let empty = self
            .conferences
            .get(&conference)
            .is_some_and(|room| room.members.is_empty());
        if !empty {
            return;
        }
        self.release_legs_of(conference);
        let Some(room) = self.conferences.remove(&conference) else {
            return;
        };
        self.close_room(conference, &room);
        self.events.emit(Event::ConferenceReleased {
            conference_id: conference.to_string(),
            reason: ReleaseReason::LastConnectionLeft,
            name: room.name,
        });
    }

    /// The conference a `conference` route's caller joins: the room by name, created with the
    /// caller as first participant when it does not exist (a hairpin when the route says so:
    /// the second caller is joined without a mix, a third promotes it).
    pub(super) fn join_room(
        &mut self,
        connection: u32,
        room: RouteRoom,
    ) -> Result<u32, ActionError> {
        let conferee = ConfereeSpec::default();
        let RouteRoom { name, hairpin } = room;
        match self.rooms.get(&name).copied() {
            Some(conference) => {
                self.join_conference(connection, conference, Completion::default(), conferee)?;
                Ok(conference)
            }
            None => {
                let result = self.create_conference(
                    connection,
                    Completion::default(),
                    conferee,
                    hairpin,
                    false,
                    Some(name),
                )?;
                result
                    .get("ConferenceId")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        ActionError::new(ResultCode::ServerInternal, "conference id missing")
                    })
            }
        }
    }

    /// `GET /mediacontrol/conferences`.
    pub(super) fn list_conferences(&self) -> Value {
        let list: Vec<Value> = self
            .conferences
            .iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(id, room)| {
                let participants: Vec<Value> = room
                    .members
                    .iter()
                    .map(|(connection, member)| {
                        let mut p =
                            serde_json::to_value(attributes(&member.spec)).unwrap_or_default();
                        p["ConnectionId"] = json!(connection.to_string());
                        p["CallId"] = json!(self
                            .connections
                            .get(connection)
                            .and_then(|c| c.call)
                            .map(|c| c.to_string()));
                        p["HoldsConferenceResource"] = json!(member.holds_resource);
                        p
                    })
                    .collect();
                json!({
                    "ConferenceId": id.to_string(),
                    "Name": room.name,
                    "Hairpin": room.hairpin,
                    "SampleRate": room.rate,
                    "CreatedMs": room.created_ms,
                    "Participants": participants,
                })
            })
            .collect();
        json!({ "ResultCode": "0", "Conferences": list })
    }

    /// The connection exists, is in no conference, and can be completed with `completion`.
    fn check_joinable(&self, connection: u32, completion: &Completion) -> Result<(), ActionError> {
        let c = self
            .connections
            .get(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        if let Some(other) = c.conference {
            return Err(ActionError::new(
                ResultCode::AlreadyConnected,
                format!("connection {connection} is in conference {other}; LeaveConference first"),
            ));
        }
        if let Some(owner) = c.leg_of {
            return Err(ActionError::new(
                ResultCode::AlreadyConnected,
                format!(
                    "connection {connection} is conference {owner}'s own (a Play or Record to the conference): it joins nothing"
                ),
            ));
        }
        if matches!(c.state, ConnectionState::Reserved { .. }) && completion.tx.is_none() {
            return Err(ActionError::new(
                ResultCode::InvalidParameters,
                format!(
                    "connection {connection} is only reserved: give MediaTxIP and MediaTxPort to complete it while joining"
                ),
            ));
        }
        if let Some(codec) = completion.codecs.rx_codec {
            if needs_enhanced(codec) && !c.enhanced && self.resources.enhanced_rtp.free() == 0 {
                return Err(ActionError::new(
                    ResultCode::ResourceUnavailable,
                    "no enhanced RTP resource for that codec",
                ));
            }
        }
        Ok(())
    }

    /// The connection exists and is a member of the conference (which exists).
    fn check_member(&self, connection: u32, conference: u32) -> Result<(), ActionError> {
        let room = self
            .conferences
            .get(&conference)
            .ok_or_else(|| unknown_conference(conference))?;
        if !self.connections.contains_key(&connection) {
            return Err(unknown_connection(connection));
        }
        if !room.members.contains_key(&connection) {
            return Err(ActionError::new(
                ResultCode::UnknownConferenceId,
                format!("connection {connection} is not in conference {conference}"),
            ));
        }
        Ok(())
    }

    /// Completes a reserved connection's Tx side (or re-targets a connected one) and applies
    /// codec choices, as CreateConnection would.
    fn complete_for_join(
        &mut self,
        connection: u32,
        completion: Completion,
    ) -> Result<(), ActionError> {
        let Completion { tx, codecs } = completion;
        let changes_codecs = codecs.rx_codec.is_some()
            || codecs.tx_codec.is_some()
            || codecs.rx_framesize.is_some()
            || codecs.tx_framesize.is_some();
        if tx.is_none() && !changes_codecs {
            return Ok(());
        }
        let was_reserved = {
            let c = self.connection_mut(connection)?;
            let was = matches!(c.state, ConnectionState::Reserved { .. });
            c.state = ConnectionState::Connected;
            was
        };
        self.apply_connection_codecs(connection, &codecs);
        let c = self.connection_mut(connection)?;
        if let Some(tx) = tx {
            c.media = retarget(&c.media, tx);
        }
        let spec = c.media.clone();
        self.engine
            .update_connection(u64::from(connection), spec)
            .map_err(engine_error)?;
        if was_reserved {
            self.emit_created(connection);
        }
        Ok(())
    }

    /// Adds a checked member (resources were checked by the caller) and tells the engine.
    fn add_member(&mut self, conference: u32, connection: u32, spec: ConfereeSpec) {
        let Some(room) = self.conferences.get_mut(&conference) else {
            return;
        };
        let holds_resource = !room.hairpin && !spec.monitor;
        let first = room.members.is_empty();
        if holds_resource {
            self.resources.conference.take(1);
        }
        clear_roles_of_others(room, connection, &spec);
        room.members.insert(
            connection,
            Conferee {
                spec,
                holds_resource,
            },
        );
        if let Some(c) = self.connections.get_mut(&connection) {
            c.conference = Some(conference);
        }
        self.store_meeting(connection, conference);
        if let Err(e) =
            self.engine
                .join_conference(u64::from(conference), u64::from(connection), spec)
        {
            tracing::error!(conference, connection, error = %e, "engine could not put the connection in the mix");
        }
        // The conference is one call: its first member's call becomes it; later members'
        // calls merge into it. A route's caller joins by dialling it.
        let by = match &self.joining_by {
            Some(by) => by.clone(),
            None => self.client_or(Actor::Remote),
        };
        let now_ms = self.now.unix_ms;
        if self.transfer_targets.contains(&connection) || self.consulting.contains(&connection) {
            // It joins the call when it takes its place (PartyModel::replace).
        } else if first {
            self.model
                .open_conference(now_ms, conference, connection, by);
        } else {
            self.model
                .join_conference(now_ms, conference, connection, spec.monitor, by);
        }
        tracing::info!(conference, connection, "connection joined conference");
        self.events.emit(Event::ConferenceJoined {
            conference_id: conference.to_string(),
            connection_id: connection.to_string(),
            attributes: attributes(&spec),
        });
    }

    /// Takes a member out of the registry (resource back, event); the engine is told by the
    /// caller.
    pub(super) fn remove_member(
        &mut self,
        conference: u32,
        connection: u32,
        reason: ReleaseReason,
    ) {
        let Some(room) = self.conferences.get_mut(&conference) else {
            return;
        };
        let Some(member) = room.members.remove(&connection) else {
            return;
        };
        if member.holds_resource {
            self.resources.conference.give_back(1);
        }
        if let Some(c) = self.connections.get_mut(&connection) {
            c.conference = None;
        }
        tracing::info!(
            conference,
            connection,
            ?reason,
            "connection left conference"
        );
        self.events.emit(Event::ConferenceLeft {
            conference_id: conference.to_string(),
            connection_id: connection.to_string(),
            reason,
        });
    }

    /// Hairpin → mixed conference (resources checked by the caller): every talking member
    /// takes a conference resource. Promote, never demote.
    fn promote(&mut self, conference: u32) {
        let Some(room) = self.conferences.get_mut(&conference) else {
            return;
        };
        room.hairpin = false;
        for member in room.members.values_mut() {
            if !member.spec.monitor && !member.holds_resource {
                member.holds_resource = true;
                self.resources.conference.take(1);
            }
        }
        if let Err(e) = self.engine.set_hairpin(u64::from(conference), false) {
            tracing::warn!(conference, error = %e, "engine could not promote the conference");
        }
        tracing::info!(conference, "hairpin promoted to a mixed conference");
        self.events.emit(Event::ConferencePromoted {
            conference_id: conference.to_string(),
        });
    }

    /// Stops the engine's mix and forgets the room name.
    fn close_room(&mut self, conference: u32, room: &Conference) {
        // Only its own entry: a named conference that is no room (an agent conference) must
        // not take a room of the same name with it.
        if let Some(name) = &room.name {
            if self.rooms.get(name) == Some(&conference) {
                self.rooms.remove(name);
            }
        }
        self.model.end_conference(conference);
        if let Err(e) = self.engine.close_conference(u64::from(conference)) {
            tracing::warn!(conference, error = %e, "engine could not close the conference");
        }
        tracing::info!(conference, "conference released");
    }

    fn allocate_conference_id(&mut self) -> Result<u32, ActionError> {
        let conferences = &self.conferences;
        super::allocate_in(&mut self.next_conference_id, self.media.node_id, |id| {
            conferences.contains_key(&id)
        })
        .ok_or_else(|| ActionError::new(ResultCode::ServerBusy, "no conference ids left"))
    }
}

/// One coach and one pupil per conference: giving a role to `connection` takes it from
/// whoever had it.
fn clear_roles_of_others(room: &mut Conference, connection: u32, spec: &ConfereeSpec) {
    for (&id, member) in room.members.iter_mut() {
        if id == connection {
            continue;
        }
        if spec.coach {
            member.spec.coach = false;
        }
        if spec.pupil {
            member.spec.pupil = false;
        }
    }
}
