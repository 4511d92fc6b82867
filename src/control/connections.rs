//! Connections: the Media Control actions on them and the one release path.
//!
//! Owns: Reserve/Create/Modify/DeleteConnection, opening a connection's media, and
//! `release_connection` — the single path every release takes (API, dialog end, timers,
//! shutdown): out of its conference, operations stopped, party released in the call model,
//! resources back, media closed, the dialog hung up unless it is what ended, and
//! `ConnectionReleased` once the worker's final statistics are in.
//! Must not: read the clock or touch sockets; the engine is reached through the backend.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Map};

use super::core::Connection;
use super::events::{Event, ReleaseReason};
use super::party::{Actor, Released};
use super::timers::Timer;
use super::*;
use crate::engine::{
    EngineError, MediaMode, MediaSpec, MediaStats, OpenConnection, SrtpKeys, StreamFormat,
};
use crate::media::srtp::CryptoAttribute;

/// Q.850 cause "normal call clearing", sent in the Reason of a BYE we send on request.
pub(super) const Q850_NORMAL_CLEARING: u8 = 16;

/// How long a released connection's `ConnectionReleased` waits for the worker's final
/// statistics before it goes with the last published ones.
const RELEASE_STATS_WAIT: Duration = Duration::from_secs(1);

/// A released connection waiting for its final statistics.
#[derive(Debug)]
pub(super) struct PendingRelease {
    reason: ReleaseReason,
    call: Option<crate::sip::ua::CallId>,
    conference: Option<u32>,
    party: Option<Released>,
    published: MediaStats,
}

impl<M: Backend> Controller<M> {
    pub(super) fn reserve(
        &mut self,
        now: Instant,
        rx_codec: Option<Codec>,
        tx_codec: Option<Codec>,
        requester: IpAddr,
    ) -> Result<ActionResult, ActionError> {
        let choice = CodecChoice {
            rx_codec,
            tx_codec,
            ..CodecChoice::default()
        };
        let rx_ip = self.announced_ip(requester);
        let state = ConnectionState::Reserved {
            expires: now + self.media.reserve_timeout,
        };
        let media = MediaSpec {
            format: Some(api_format(&choice, &self.media)),
            ..MediaSpec::idle(None)
        };
        let id = self.open_connection(rx_ip, state, &choice, media, None)?;
        self.timers
            .set(Timer::Reservation(id), now + self.media.reserve_timeout);
        let c = &self.connections[&id];
        self.events.emit(Event::ConnectionReserved {
            connection_id: id.to_string(),
            media_rx_ip: c.rx_ip.to_string(),
            media_rx_port: c.local_rtp.port(),
        });
        Ok(self.connection_result(id))
    }

    pub(super) fn create(
        &mut self,
        connection: Option<u32>,
        tx: SocketAddr,
        codecs: CodecChoice,
        requester: IpAddr,
    ) -> Result<ActionResult, ActionError> {
        let Some(id) = connection else {
            let rx_ip = self.announced_ip(if tx.ip().is_unspecified() {
                requester
            } else {
                tx.ip()
            });
            let media = MediaSpec {
                format: Some(api_format(&codecs, &self.media)),
                ..MediaSpec::idle(Some(tx))
            };
            let id =
                self.open_connection(rx_ip, ConnectionState::Connected, &codecs, media, None)?;
            self.emit_created(id);
            return Ok(self.connection_result(id));
        };
        // Completing a reservation, or (legacy MCE semantics) re-targeting a live connection.
        self.check_codec_change(id, &codecs)?;
        self.apply_connection_codecs(id, &codecs);
        self.timers.cancel(Timer::Reservation(id));
        let c = self.connection_mut(id)?;
        c.state = ConnectionState::Connected;
        let spec = retarget(&c.media, tx);
        c.media = spec.clone();
        if let Err(e) = self.engine.update_connection(u64::from(id), spec) {
            return Err(engine_error(e));
        }
        self.emit_created(id);
        Ok(self.connection_result(id))
    }

    pub(super) fn modify(
        &mut self,
        id: u32,
        tx: SocketAddr,
        codecs: CodecChoice,
    ) -> Result<ActionResult, ActionError> {
        let c = self.connection_mut(id)?;
        if matches!(c.state, ConnectionState::Reserved { .. }) {
            return Err(ActionError::new(
                ResultCode::NotConnected,
                "connection is reserved but not created; use CreateConnection",
            ));
        }
        self.check_codec_change(id, &codecs)?;
        self.apply_connection_codecs(id, &codecs);
        let c = self.connection_mut(id)?;
        let spec = retarget(&c.media, tx);
        c.media = spec.clone();
        if let Err(e) = self.engine.update_connection(u64::from(id), spec) {
            return Err(engine_error(e));
        }
        self.events.emit(Event::ConnectionModified {
            connection_id: id.to_string(),
            media_tx_ip: Some(tx.ip().to_string()),
            media_tx_port: Some(tx.port()),
        });
        Ok(self.connection_result(id))
    }

    /// DeleteConnection's three modes (seed 01): the connection (leaving its conference), the
    /// conference with every connection in it, or the connection out of the conference.
    pub(super) fn delete(
        &mut self,
        connection: Option<u32>,
        conference: Option<u32>,
    ) -> Result<ActionResult, ActionError> {
        match (connection, conference) {
            (None, None) => Err(ActionError::new(
                ResultCode::InvalidParameters,
                "DeleteConnection needs ConnectionId, ConferenceId or both",
            )),
            (Some(id), None) => {
                self.release_connection(id, ReleaseReason::ApiRequest)?;
                Ok(success())
            }
            (None, Some(conference)) => {
                self.release_conference(conference)?;
                Ok(success())
            }
            (Some(id), Some(conference)) => self.leave_conference(id, conference),
        }
    }

    /// The one release path: API DeleteConnection, dialog end, reservation expiry, shutdown.
    /// Takes the connection out of its conference (which goes with its last connection),
    /// closes the media, gives its resources back, ends the bound call (BYE) unless the call
    /// is what ended, and says so.
    pub(super) fn release_connection(
        &mut self,
        id: u32,
        reason: ReleaseReason,
    ) -> Result<(), ActionError> {
        self.release_connection_by(id, reason, None)
    }

    /// [`Controller::release_connection`], naming who caused it (None: as the reason and the
    /// action being handled say).
    pub(super) fn release_connection_by(
        &mut self,
        id: u32,
        reason: ReleaseReason,
        by: Option<Actor>,
    ) -> Result<(), ActionError> {
        if !self.connections.contains_key(&id) {
            return Err(unknown_connection(id));
        }
        let conference = self.leave_on_release(id, reason);
        let result = self.release_connection_in(id, reason, conference, by);
        if let Some(conference) = conference {
            self.release_conference_if_empty(conference);
        }
        result
    }

    /// Releases a connection already out of its conference (`conference`: the one it was in,
    /// for the event).
    pub(super) fn release_connection_in(
        &mut self,
        id: u32,
        reason: ReleaseReason,
        conference: Option<u32>,
        by: Option<Actor>,
    ) -> Result<(), ActionError> {
        if let Some(c) = self.connections.get_mut(&id) {
            c.releasing = true;
        }
        self.autostop_operations(id);
        let Some(connection) = self.connections.remove(&id) else {
            return Err(unknown_connection(id));
        };
        self.timers.cancel(Timer::Reservation(id));
        self.timers.cancel(Timer::Operations(id));
        self.transfer_targets.remove(&id);
        if let Some(leg_of) = connection.leg_of {
            // A temporary conference connection: no sockets, one conference resource.
            self.resources.conference_leg_released();
            tracing::info!(connection = id, conference = leg_of, reason = ?reason, "conference connection released");
            self.events.emit(Event::ConnectionReleased {
                connection_id: id.to_string(),
                reason,
                call_id: None,
                rtp_packets_received: 0,
                rtp_packets_sent: 0,
                packets_lost: 0,
                jitter_ms: 0.0,
                concealed_frames: 0,
                conference_id: Some(leg_of.to_string()),
                conn_id: None,
                dn: None,
                released_by: None,
            });
            return Ok(());
        }
        self.resources.give_back_connection(connection.enhanced);
        // An agent conference member leaves (its recording's times still known here).
        self.agent_member_released(id);
        self.store_call_ended(id, reason);
        let by = by.unwrap_or_else(|| self.actor_for(reason));
        let party = self.model.release(self.now.unix_ms, id, reason, by);
        // The last figures the worker published, in case its final ones never come.
        let published = self.engine.stats(u64::from(id)).unwrap_or_default();
        let closed = self.engine.close_connection(u64::from(id));
        if let Some(call) = connection.call {
            self.call_connections.remove(&call);
            self.end_call_of(call, reason);
        }
        *self
            .releases_by_reason
            .entry(reason_name(reason))
            .or_default() += 1;
        tracing::info!(connection = id, reason = ?reason, "connection released");
        // A consultation goes with its connections (B's takes C's call; C's gives B back).
        let dn = party
            .as_ref()
            .map(|p| p.party.dn.clone())
            .unwrap_or_default();
        self.consultation_released(id, dn);
        self.closing.insert(
            id,
            PendingRelease {
                reason,
                call: connection.call,
                conference,
                party,
                published,
            },
        );
        if let Err(e) = closed {
            // No `Closed` will come: report what was published.
            tracing::warn!(connection = id, error = %e, "engine could not close connection");
            self.finish_release(id, None);
            return Ok(());
        }
        self.events.hold(id);
        self.timers
            .set(Timer::ReleaseStats(id), self.now.at + RELEASE_STATS_WAIT);
        Ok(())
    }

    /// The SIP call of a connection being released, or of an offered call the application
    /// hangs up, is over for us: whatever waited on it is answered (a hold, a BlindTransfer),
    /// no AnswerCall may give it a connection again, and its dialog — still up only when the
    /// release did not come from it — is ended (BYE, or 480 before its answer), with
    /// `CallEnded`.
    pub(super) fn end_call_of(&mut self, call: crate::sip::ua::CallId, reason: ReleaseReason) {
        self.call_info.remove(&call);
        self.app_calls.remove(&call);
        self.forget_placed(call);
        self.take_offer(call);
        if let Some(peer) = self.bridges.remove(&call) {
            self.bridges.remove(&peer);
        }
        if let Some(pending) = self.pending_holds.remove(&call) {
            let _ = pending.reply.send(Err(super::CtiError::new(
                super::cti_codes::INVALID_STATE,
                "the call was released before the party answered",
            )));
        }
        self.transfer_call_released(call);
        if self.ua.hangup(self.now.at, call, Q850_NORMAL_CLEARING) {
            self.events.emit_with(|| Event::CallEnded {
                call_id: call.to_string(),
                reason,
            });
        }
    }

    /// A released connection's `ConnectionReleased`, with the worker's final statistics
    /// (`Closed`), or the last published ones when they did not come in time.
    pub(super) fn finish_release(&mut self, id: u32, stats: Option<MediaStats>) {
        let Some(pending) = self.closing.remove(&id) else {
            return;
        };
        self.timers.cancel(Timer::ReleaseStats(id));
        if stats.is_none() {
            tracing::debug!(
                connection = id,
                "final statistics missing: reporting the published ones"
            );
        }
        let stats = stats.unwrap_or(pending.published);
        self.released_rtp_received += stats.rtp_packets_received;
        self.released_rtp_sent += stats.rtp_packets_sent;
        let party = pending.party;
        self.events.fill_with(id, || Event::ConnectionReleased {
            connection_id: id.to_string(),
            reason: pending.reason,
            call_id: pending.call.map(|c| c.to_string()),
            rtp_packets_received: stats.rtp_packets_received,
            rtp_packets_sent: stats.rtp_packets_sent,
            packets_lost: stats.packets_lost,
            jitter_ms: stats.jitter_ms,
            concealed_frames: stats.concealed_frames,
            conference_id: pending.conference.map(|c| c.to_string()),
            conn_id: party.as_ref().map(|p| p.conn_id.to_string()),
            dn: party.as_ref().map(|p| p.party.dn.clone()),
            released_by: party.map(|p| p.by),
        });
    }

    /// Gives a connection another media mode (a transferred party taking another's echo).
    pub(super) fn set_media_mode(&mut self, id: u32, mode: crate::engine::MediaMode) {
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        c.media.mode = mode;
        let spec = c.media.clone();
        if let Err(e) = self.engine.update_connection(u64::from(id), spec) {
            tracing::warn!(connection = id, error = %e, "media mode change failed");
        }
    }

    /// The address we announce for media to a peer at `peer` (SIP peer, MediaTxIP,
    /// requester): the configured one, else the bound one, else the one the kernel routes
    /// from.
    pub(super) fn announced_ip(&self, peer: IpAddr) -> IpAddr {
        if let Some(ip) = self.media.advertised_ip {
            return ip;
        }
        if !self.media.bind_ip.is_unspecified() {
            return self.media.bind_ip;
        }
        self.engine.source_address_for(peer).unwrap_or(peer)
    }

    /// The API action being handled as the cause of a change, or `otherwise`.
    pub(super) fn client_or(&self, otherwise: Actor) -> Actor {
        match self.acting {
            Some(action) => Actor::Client {
                action: action.into(),
            },
            None => otherwise,
        }
    }

    /// Who caused a release, from its reason and the API action being handled.
    pub(super) fn actor_for(&self, reason: ReleaseReason) -> Actor {
        match reason {
            ReleaseReason::RemoteHangup | ReleaseReason::Cancelled => Actor::Remote,
            ReleaseReason::ApiRequest | ReleaseReason::ConferenceReleased => {
                self.client_or(Actor::System)
            }
            // Our BlindTransfer, or the peer's own REFER.
            ReleaseReason::Transferred => self.client_or(Actor::Remote),
            ReleaseReason::AckTimeout
            | ReleaseReason::InviteFailed
            | ReleaseReason::BadAnswer
            | ReleaseReason::ReserveTimeout
            | ReleaseReason::Shutdown
            | ReleaseReason::RtpTimeout
            | ReleaseReason::LastConnectionLeft
            | ReleaseReason::AnnouncementComplete
            | ReleaseReason::OperationComplete
            | ReleaseReason::Replaced
            | ReleaseReason::SessionExpired
            // A call of ours that failed on our side (Ringout, no INVITE sent, no conference
            // to join); the far end's refusals come through the dialog's end.
            | ReleaseReason::CallFailed => Actor::System,
        }
    }

    pub(super) fn open_connection(
        &mut self,
        rx_ip: IpAddr,
        state: ConnectionState,
        codecs: &CodecChoice,
        media: MediaSpec,
        call: Option<crate::sip::ua::CallId>,
    ) -> Result<u32, ActionError> {
        let default_codec = self.media.default_codec;
        let default_framesize = self.media.default_framesize;
        let rx_codec = codecs.rx_codec.unwrap_or(default_codec);
        let tx_codec = codecs.tx_codec.unwrap_or(default_codec);
        let codec = if conference::needs_enhanced(tx_codec) {
            tx_codec
        } else {
            rx_codec
        };
        self.resources.check_connection(codec)?;
        let id = self.allocate_id()?;
        let endpoint = self
            .engine
            .open_connection(OpenConnection {
                key: u64::from(id),
                media: media.clone(),
            })
            .map_err(engine_error)?;
        let enhanced = self.resources.take_connection(codec);
        self.connections.insert(
            id,
            Connection::new(
                endpoint.rtp,
                rx_ip,
                state,
                (
                    rx_codec,
                    tx_codec,
                    codecs.rx_framesize.unwrap_or(default_framesize),
                    codecs.tx_framesize.unwrap_or(default_framesize),
                ),
                call,
                media,
                enhanced,
                None,
            ),
        );
        Ok(id)
    }

    pub(super) fn allocate_id(&mut self) -> Result<u32, ActionError> {
        let (connections, closing) = (&self.connections, &self.closing);
        // An id still closing is not free: its `Closed` is on the way.
        allocate_in(&mut self.next_connection_id, self.media.node_id, |id| {
            connections.contains_key(&id) || closing.contains_key(&id)
        })
        .ok_or_else(|| ActionError::new(ResultCode::ServerBusy, "no connection ids left"))
    }

    pub(super) fn connection_mut(&mut self, id: u32) -> Result<&mut Connection, ActionError> {
        self.connections
            .get_mut(&id)
            .map(|connection| &mut **connection)
            .ok_or_else(|| unknown_connection(id))
    }

    pub(super) fn emit_created(&mut self, id: u32) {
        let c = &self.connections[&id];
        self.events.emit_with(|| Event::ConnectionCreated {
            connection_id: id.to_string(),
            media_rx_ip: c.rx_ip.to_string(),
            media_rx_port: c.local_rtp.port(),
            media_tx_ip: c.media.remote_rtp.map(|a| a.ip().to_string()),
            media_tx_port: c.media.remote_rtp.map(|a| a.port()),
            call_id: c.call.map(|c| c.to_string()),
        });
    }

    /// The result data of Reserve/Create/ModifyConnection (reference §3.1–3.3).
    pub(super) fn connection_result(&self, id: u32) -> ActionResult {
        let c = &self.connections[&id];
        let mut m = success();
        m.insert("ConnectionId".into(), json!(id.to_string()));
        m.insert("MmsId".into(), json!(self.media.node_id));
        m.insert("MediaRxIP".into(), json!(c.rx_ip.to_string()));
        m.insert("MediaRxPort".into(), json!(c.local_rtp.port()));
        m.insert("MediaRxControlIP".into(), json!(c.rx_ip.to_string()));
        m.insert("MediaRxControlPort".into(), json!(c.local_rtp.port() + 1));
        m
    }

    pub(super) fn check_codec_change(
        &self,
        id: u32,
        codecs: &CodecChoice,
    ) -> Result<(), ActionError> {
        let c = self
            .connections
            .get(&id)
            .ok_or_else(|| unknown_connection(id))?;
        let rx = codecs.rx_codec.unwrap_or(c.rx_codec);
        let tx = codecs.tx_codec.unwrap_or(c.tx_codec);
        let needs = conference::needs_enhanced(rx) || conference::needs_enhanced(tx);
        if needs && !c.enhanced && self.resources.enhanced_rtp.free() == 0 {
            return Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                "no enhanced RTP resource is free for that codec",
            ));
        }
        Ok(())
    }

    /// Applies codec/framesize choices (checked by [`Controller::check_codec_change`]): the
    /// enhanced resource follows the codec, and an API connection's stream format follows
    /// its codecs. Call connections keep the format their SDP negotiated.
    pub(super) fn apply_connection_codecs(&mut self, id: u32, codecs: &CodecChoice) {
        let settings = self.media.clone();
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        apply_codecs(c, codecs);
        let needs =
            conference::needs_enhanced(c.rx_codec) || conference::needs_enhanced(c.tx_codec);
        // Checked by check_codec_change: within the limit.
        self.resources.follow_codec(&mut c.enhanced, needs);
        if c.call.is_none() {
            let choice = CodecChoice {
                rx_codec: Some(c.rx_codec),
                tx_codec: Some(c.tx_codec),
                rx_framesize: Some(c.rx_framesize),
                tx_framesize: Some(c.tx_framesize),
            };
            c.media.format = Some(api_format(&choice, &settings));
        }
    }
}

/// The next free id from `next` on: `node` (the MmsId) in the top byte, a 24-bit number from
/// `next` (wrapping to 1) below it, as CUAE's media servers numbered theirs (reference §2:
/// "each media server will attach its serverId to each connectionId and conferenceId it
/// returns"). None when every id is `taken`.
pub fn allocate_in(next: &mut u32, node: u8, taken: impl Fn(u32) -> bool) -> Option<u32> {
    for _ in 0..MAX_CONNECTION_ID {
        let n = *next;
        *next = if n >= MAX_CONNECTION_ID { 1 } else { n + 1 };
        let id = with_node(node, n);
        if !taken(id) {
            return Some(id);
        }
    }
    None
}

/// `n` (24 bits) with `node` in the top byte.
pub fn with_node(node: u8, n: u32) -> u32 {
    (u32::from(node) << 24) | (n & MAX_CONNECTION_ID)
}

/// The media server (MmsId) a connection or conference id names: its top byte.
pub fn node_of(id: u32) -> u8 {
    (id >> 24) as u8
}

/// The API name of a codec (reference §3: `G711u`, `G711a`).
pub fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Pcmu => "G711u",
        Codec::Pcma => "G711a",
        Codec::G722 => "G722",
        Codec::Opus => "Opus",
        Codec::TelephoneEvent => "telephone-event",
    }
}

/// RTP payload type of a codec on an API connection: the static ones, else the dynamic
/// numbers our SDP offers use.
fn api_payload_type(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
        Codec::G722 => 9,
        Codec::Opus => 111,
        Codec::TelephoneEvent => 101,
    }
}

/// The stream of an API connection (no SDP): its Rx codec and framesize (default G.711 μ-law,
/// 20 ms), its Tx codec when different, and RFC 4733 digits on payload type 101.
pub(super) fn api_format(codecs: &CodecChoice, settings: &MediaSettings) -> StreamFormat {
    let rx = codecs.rx_codec.unwrap_or(settings.default_codec);
    let tx = codecs.tx_codec.unwrap_or(rx);
    StreamFormat {
        codec: rx,
        payload_type: api_payload_type(rx),
        ptime_ms: codecs.rx_framesize.unwrap_or(settings.default_framesize),
        telephone_event_pt: Some(api_payload_type(Codec::TelephoneEvent)),
        send: (tx != rx).then(|| (tx, api_payload_type(tx))),
        // No SDP says what the far end decodes: no band limit, and FEC on (a decoder without
        // it ignores the extra bits).
        peer_opus: crate::sdp::OpusParams {
            use_inband_fec: true,
            ..crate::sdp::OpusParams::RFC_DEFAULTS
        },
    }
}

/// The engine's view of negotiated media: format, peer addresses and SRTP keys.
pub(super) fn media_spec(
    mode: MediaMode,
    media: &crate::sdp::NegotiatedMedia,
) -> Result<MediaSpec, String> {
    let srtp = match &media.srtp {
        Some(s) => Some(srtp_keys(s)?),
        None => None,
    };
    Ok(MediaSpec {
        mode,
        format: Some(StreamFormat {
            codec: media.codec,
            payload_type: media.payload_type,
            ptime_ms: media.ptime_ms,
            telephone_event_pt: media.telephone_event_pt,
            send: None,
            peer_opus: media.opus.unwrap_or_default(),
        }),
        remote_rtp: media.remote_rtp,
        remote_rtcp: media.remote_rtcp,
        srtp,
        source: None,
        // On hold (we only send, or nothing flows) silence is expected, not a dead call.
        expects_rtp: media.direction.receives() && media.remote_rtp.is_some(),
    })
}

/// SDES key parameters (`inline:<base64 key||salt>[|lifetime]`) of both sides → SRTP keys.
pub(super) fn srtp_keys(s: &crate::sdp::NegotiatedSrtp) -> Result<SrtpKeys, String> {
    let parse = |params: &str| {
        CryptoAttribute::parse(&format!("{} {} {params}", s.tag, s.suite))
            .map_err(|e| format!("SRTP key parameters: {e}"))
    };
    let theirs = parse(&s.remote_key_params)?;
    let ours = parse(&s.local_key_params)?;
    Ok(SrtpKeys {
        profile: theirs.profile,
        inbound_key: theirs.key.to_vec(),
        inbound_salt: theirs.salt.clone(),
        outbound_key: ours.key.to_vec(),
        outbound_salt: ours.salt.clone(),
    })
}

/// The same media aimed at a new peer address (ModifyConnection, CreateConnection re-target).
pub fn retarget(spec: &MediaSpec, tx: SocketAddr) -> MediaSpec {
    MediaSpec {
        remote_rtp: Some(tx),
        remote_rtcp: Some(SocketAddr::new(tx.ip(), tx.port().wrapping_add(1))),
        ..spec.clone()
    }
}

pub(super) fn apply_codecs(c: &mut Connection, codecs: &CodecChoice) {
    if let Some(x) = codecs.rx_codec {
        c.rx_codec = x;
    }
    if let Some(x) = codecs.tx_codec {
        c.tx_codec = x;
    }
    if let Some(x) = codecs.rx_framesize {
        c.rx_framesize = x;
    }
    if let Some(x) = codecs.tx_framesize {
        c.tx_framesize = x;
    }
}

pub fn success() -> ActionResult {
    let mut m = Map::new();
    m.insert("ResultCode".into(), json!("0"));
    m
}

pub fn unknown_connection(id: u32) -> ActionError {
    ActionError::new(
        ResultCode::UnknownConnectionId,
        format!("connection {id} does not exist"),
    )
}

pub fn engine_error(e: EngineError) -> ActionError {
    match e {
        EngineError::NoPortsAvailable => {
            ActionError::new(ResultCode::ServerBusy, "all RTP ports are in use")
        }
        EngineError::NoTelephoneEvent => ActionError::new(
            ResultCode::ResourceUnavailable,
            "the far end did not negotiate telephone-event (RFC 4733): digits cannot be sent",
        ),
        EngineError::InvalidDigits(e) => {
            ActionError::new(ResultCode::InvalidParameter, format!("Digits: {e}"))
        }
        other => ActionError::new(ResultCode::ServerInternal, other.to_string()),
    }
}

/// A release reason's name in events and metrics.
fn reason_name(reason: ReleaseReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{reason:?}"))
}
