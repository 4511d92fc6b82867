//! CORE DOC

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use serde_json::{json, Value};

use std::collections::VecDeque;

use tokio::sync::broadcast;

use super::backend::Backend;
use super::connections::PendingRelease;
use super::cti::CtiBus;
use super::events::{Envelope, Event, EventBus, ReleaseReason};
use super::party::CallModel;
use super::timers::{Timer, TimerTable};
use super::*;
use crate::engine::{EngineEvent, MediaSpec};
use crate::idmap::{IdMap, IdSet};
use crate::sip::transaction::Peer;
use crate::sip::transport::Received;
use crate::sip::ua::{CallId, UserAgent};

/// When an input happens: the monotonic instant for deadlines and the wall clock for event
/// times and listings. The shell reads both once per loop turn; tests make them up.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

/// What the core is given.
#[derive(Debug)]
pub enum Input {
    /// A request from the API (or `callbridge ctl` through it).
    Request(ControlRequest),
    /// A SIP message from the transport, for the UA.
    Sip(crate::sip::transport::Inbound),
    /// Something the media engine reports.
    Media(EngineEvent),
    /// The deadline given by [`Controller::poll_timeout`] has come.
    Timeout,
}

/// The control plane's state: the sans-IO core. See the module doc.
pub struct Controller<M: Backend> {
    pub(super) media: MediaSettings,
    pub(super) engine: M,
    pub(super) ua: UserAgent,
    pub(super) events: EventBus,
    /// The time of the input being handled (set by [`Controller::handle`] only).
    pub(super) now: Now,
    /// Every deadline, with its reason.
    pub(super) timers: TimerTable,
    /// SIP messages to send, for the shell.
    pub(super) transmits: VecDeque<(Peer, Vec<u8>)>,
    /// This turn's 100 Trying, sent at its end unless a response of the same INVITE
    /// transaction went in the same turn (see `transmit`).
    pub(super) held_trying: Vec<(Peer, crate::sip::message::Response)>,
    /// A Shutdown has been handled: everything is released.
    pub(super) stopped: bool,
    /// The party call model.
    pub(super) model: CallModel,
    /// Its changes as T-Library events, for the `/cti` clients.
    pub(super) cti: CtiBus,
    /// The CTI request being handled (its ReferenceID), for the events it causes.
    pub(super) cti_reference: Option<u64>,
    /// The API action being handled, for the changes it causes.
    pub(super) acting: Option<&'static str>,
    /// Who adds the connection joining a conference now, when not the action being handled.
    pub(super) joining_by: Option<Actor>,
    /// Boxed: a `Connection` is ~400 bytes and the map keeps up to twice as many slots as
    /// connections (idle-call memory, issue 19).
    pub(super) connections: IdMap<u32, Box<Connection>>,
    /// Released connections whose final statistics the worker has not sent yet.
    pub(super) closing: IdMap<u32, PendingRelease>,
    /// Which connection each call is bound to.
    pub(super) call_connections: IdMap<CallId, u32>,
    pub(super) next_connection_id: u32,
    pub(super) calls_total: u64,
    /// Calls answered (a 2xx to an INVITE we received, or to one we sent), ever.
    pub(super) calls_answered_total: u64,
    pub(super) releases_by_reason: BTreeMap<String, u64>,
    /// What the API shows about each call in progress.
    pub(super) call_info: IdMap<CallId, CallInfo>,
    /// RTP counters of released connections, so totals survive releases.
    pub(super) released_rtp_received: u64,
    pub(super) released_rtp_sent: u64,
    pub(super) conferences: IdMap<u32, conference::Conference>,
    pub(super) next_conference_id: u32,
    /// Conferences of `conference` routes by room name.
    pub(super) rooms: HashMap<String, u32>,
    pub(super) resources: Resources,
    pub(super) next_operation_id: u32,
    /// Records whose operation ended, waiting for their file to be finished.
    pub(super) pending_records: IdMap<u32, media_ops::PendingRecord>,
    /// StopMediaOperation answers held (Block) until these records are finished.
    pub(super) blocked_stops: Vec<(Vec<u32>, Option<Reply>, ActionResult)>,
    /// Media operations completed, by (action, termination condition).
    pub(super) operations_completed: BTreeMap<(String, String), u64>,
    /// `application` calls waiting for AcceptCall/AnswerCall/RejectCall/Redirect.
    pub(super) offered: IdMap<CallId, call_control::OfferedCall>,
    /// Every `application` call in progress (answered or not).
    pub(super) app_calls: IdSet<CallId>,
    /// Calls we placed (MakeCall, transfers) not answered yet.
    pub(super) placed: IdMap<CallId, outbound::Placed>,
    /// BlindTransfer answers waiting for the far end's NOTIFY.
    pub(super) transfer_replies: IdMap<CallId, Reply>,
    /// BridgeCalls peers, both ways.
    pub(super) bridges: IdMap<CallId, CallId>,
    /// Connections taking another's place (REFER, Replaces): they join its conference's mix at
    /// once and its call in the party model when the transfer completes.
    pub(super) transfer_targets: IdSet<u32>,
    /// CTI holds and retrieves waiting for the party's answer to our re-INVITE, by SIP call.
    pub(super) pending_holds: IdMap<CallId, PendingHold>,
    /// The party-model key of each offered `application` call (it has no connection yet).
    pub(super) offer_parties: IdMap<CallId, u32>,
    /// Two-step consultations by the consulting connection (B).
    pub(super) consultations: IdMap<u32, super::consult::Consultation>,
    /// The consulting connection (B) of each consultation call's connection (C).
    pub(super) consult_targets: IdMap<u32, u32>,
    /// Connections whose conference moves are a consultation's (media only, no model change).
    pub(super) consulting: IdSet<u32>,
    /// How calls are recorded.
    pub(super) recording_settings: super::recording::RecordingSettings,
    /// Each connection's call in the recording store.
    pub(super) store_calls: IdMap<u32, super::recording::StoreCall>,
    /// Recordings whose files the store tracks, by operation.
    pub(super) tracked_recordings: IdMap<u32, super::recording::TrackedRecording>,
    /// Writes for the store, in order, for the shell.
    pub(super) store_out: Vec<crate::store::StoreEvent>,
    /// Recordings that stopped before their call ended (a full disk, a file not created).
    pub(super) recording_failures: u64,
    /// Agent conferences (the agent gateway), by confId.
    pub(super) agent_confs: std::collections::BTreeMap<u64, super::agent_conf::AgentConference>,
    /// The agent conference each agent chairs, is in or is invited to.
    pub(super) agent_conf_of: HashMap<crate::agent_gateway::AgentId, u64>,
    /// Agent conference members' connections in the conference: (confId, member).
    pub(super) agent_connection: IdMap<u32, (u64, u32)>,
    /// Agent conference phones being called: (confId, member).
    pub(super) agent_dialing: IdMap<u32, (u64, u32)>,
    /// Agent events for the gateway, in order.
    pub(super) agent_out: Vec<(
        crate::agent_gateway::AgentId,
        crate::agent_gateway::AgentEvent,
    )>,
    pub(super) next_agent_conf: u64,
}

/// A CTI RequestHoldCall / RequestRetrieveCall waiting for the party's answer.
pub(super) struct PendingHold {
    pub(super) reply: super::cti_requests::CtiReply,
    pub(super) reference: u64,
    /// Who holds (the request).
    pub(super) by: Actor,
    pub(super) conn_id: super::party::ConnId,
}

/// A call as listed by the API.
#[derive(Debug, Clone)]
pub(super) struct CallInfo {
    pub(super) from: String,
    pub(super) to: String,
    /// The remote party's number.
    pub(super) dn: String,
    /// The DN on our side: the number a call in reached, the calling number of a call we
    /// placed.
    pub(super) service_dn: String,
    pub(super) service: &'static str,
    /// The service, for a transfer that takes the call's place.
    pub(super) kind: crate::sip::routing::Service,
    pub(super) answered: bool,
    pub(super) started_ms: u64,
    /// Whether the call is recorded (its route's, else its trunk's `record`).
    pub(super) record: crate::store::RecordPolicy,
    /// The trunk it came in from or went out through.
    pub(super) trunk: Option<String>,
    /// Where its RTP is accepted from, when its route says (else the engine's default).
    pub(super) rtp_source: Option<crate::engine::RtpSource>,
}

/// One media connection.
#[derive(Debug)]
pub(super) struct Connection {
    /// Where the engine bound its RTP socket (port is what we announce).
    pub(super) local_rtp: SocketAddr,
    /// The address we announce (MediaRxIP).
    pub(super) rx_ip: IpAddr,
    pub(super) state: ConnectionState,
    pub(super) rx_codec: Codec,
    pub(super) tx_codec: Codec,
    pub(super) rx_framesize: u32,
    pub(super) tx_framesize: u32,
    pub(super) call: Option<CallId>,
    /// What the engine's session for it does.
    pub(super) media: MediaSpec,
    /// The conference it is in.
    pub(super) conference: Option<u32>,
    /// Holds an enhanced RTP resource (codec other than G.711).
    pub(super) enhanced: bool,
    /// Its digit buffer and media operations in progress.
    pub(super) ops: operations::Operations,
    /// The Play/PlayTone operation whose audio the engine is playing.
    pub(super) playing: Option<u32>,
    /// An announcement call: hang up when this Play has played to its end.
    pub(super) hang_up_after: Option<u32>,
    /// Playout volume (−10..=10) and the one a toggle returns to.
    pub(super) volume: i32,
    pub(super) toggled_volume: i32,
    /// Playout speed (−10..=10).
    pub(super) speed: i32,
    /// The Record in progress (operation, file name as the API reports it).
    pub(super) recording: Option<(u32, String)>,
    /// Operations with silence/non-silence watches in the engine.
    pub(super) watching: Vec<u32>,
    /// A temporary conference connection (Play/PlayTone/Record to a conference): no sockets,
    /// a participant of this conference's mix for the operation's duration.
    pub(super) leg_of: Option<u32>,
    /// Being released (its operations' completions must not release it again).
    pub(super) releasing: bool,
}

impl Connection {
    /// A connection with no operation, recording or conference yet.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        local_rtp: SocketAddr,
        rx_ip: IpAddr,
        state: ConnectionState,
        codecs: (Codec, Codec, u32, u32),
        call: Option<CallId>,
        media: MediaSpec,
        enhanced: bool,
        leg_of: Option<u32>,
    ) -> Box<Connection> {
        let (rx_codec, tx_codec, rx_framesize, tx_framesize) = codecs;
        Box::new(Connection {
            local_rtp,
            rx_ip,
            state,
            rx_codec,
            tx_codec,
            rx_framesize,
            tx_framesize,
            call,
            media,
            conference: None,
            enhanced,
            ops: operations::Operations::default(),
            playing: None,
            hang_up_after: None,
            volume: 0,
            toggled_volume: 0,
            speed: 0,
            recording: None,
            watching: Vec::new(),
            leg_of,
            releasing: false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnectionState {
    /// ReserveConnection done; CreateConnection due before `expires`.
    Reserved {
        expires: Instant,
    },
    Connected,
}

impl<M: Backend> Controller<M> {
    /// The core at `now`, over `engine` and `ua`. Recordings a killed process left behind get
    /// valid headers and expired ones go (through the backend).
    pub fn new(now: Now, media: MediaSettings, mut engine: M, ua: UserAgent) -> Controller<M> {
        let resources = Resources::new(&media.resources, engine.health().ports_total / 2);
        engine.sweep_recordings(&media.recording_dir, true, now.unix_ms / 1000);
        let mut timers = TimerTable::default();
        timers.set(Timer::Sweep, now.at + SWEEP_INTERVAL);
        Controller {
            resources,
            now,
            timers,
            transmits: VecDeque::new(),
            held_trying: Vec::new(),
            stopped: false,
            model: CallModel::default(),
            cti: CtiBus::new(8192),
            cti_reference: None,
            acting: None,
            joining_by: None,
            closing: IdMap::default(),
            conferences: IdMap::default(),
            next_conference_id: 1,
            rooms: HashMap::new(),
            next_operation_id: 1,
            pending_records: IdMap::default(),
            blocked_stops: Vec::new(),
            operations_completed: BTreeMap::new(),
            offered: IdMap::default(),
            app_calls: IdSet::default(),
            placed: IdMap::default(),
            transfer_replies: IdMap::default(),
            bridges: IdMap::default(),
            transfer_targets: IdSet::default(),
            pending_holds: IdMap::default(),
            offer_parties: IdMap::default(),
            consultations: IdMap::default(),
            consult_targets: IdMap::default(),
            consulting: IdSet::default(),
            recording_settings: media.recording.clone(),
            store_calls: IdMap::default(),
            tracked_recordings: IdMap::default(),
            store_out: Vec::new(),
            recording_failures: 0,
            agent_confs: std::collections::BTreeMap::new(),
            agent_conf_of: HashMap::new(),
            agent_connection: IdMap::default(),
            agent_dialing: IdMap::default(),
            agent_out: Vec::new(),
            next_agent_conf: 1,
            media,
            engine,
            ua,
            events: EventBus::new(4096),
            connections: IdMap::default(),
            call_connections: IdMap::default(),
            next_connection_id: 1,
            calls_total: 0,
            calls_answered_total: 0,
            releases_by_reason: BTreeMap::new(),
            call_info: IdMap::default(),
            released_rtp_received: 0,
            released_rtp_sent: 0,
        }
    }

    /// Handles one input at `now`. Afterwards the shell sends what [`Controller::poll_transmit`]
    /// gives and sleeps until [`Controller::poll_timeout`].
    pub fn handle(&mut self, now: Now, input: Input) {
        self.now = now;
        self.events.set_time(now.unix_ms);
        // The party model's changes go to the CTI stream only: with no client reading it, they
        // are not translated (and their calls not copied) for nobody.
        self.model.set_observed(self.cti.has_listeners());
        match input {
            Input::Request(request) => self.on_request(request),
            Input::Sip(m) => match m.received {
                Received::Message(message) => {
                    self.ua.handle_message(now.at, message, m.source, m.local)
                }
                Received::Unparsed(request) => self.ua.handle_unparsed(request, m.source),
                // The shell closes the connection; nothing of the calls changes.
                Received::StreamEnd { .. } => {}
            },
            Input::Media(event) => self.on_engine_event(event),
            Input::Timeout => self.on_timeout(),
        }
        self.drain_ua();
        self.send_held_trying();
        for change in self.model.take_events() {
            self.cti.publish(&change, self.cti_reference);
        }
        self.cti_reference = None;
    }

    /// The next deadline: the UA's and the core's own.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.ua.poll_timeout(), self.timers.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next SIP message to send.
    pub fn poll_transmit(&mut self) -> Option<(Peer, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// True once a Shutdown request has released everything.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The event stream's sender, for the API's handle.
    pub fn event_sender(&self) -> broadcast::Sender<Envelope> {
        self.events.sender()
    }

    /// The CTI stream's sender, for the `/cti` clients.
    pub fn cti_sender(&self) -> broadcast::Sender<std::sync::Arc<super::cti::CtiEvent>> {
        self.cti.sender()
    }

    /// Gives the backend back (the shell shuts the engine down with it).
    pub fn into_backend(self) -> M {
        self.engine
    }

    pub(super) fn on_timeout(&mut self) {
        let now = self.now.at;
        self.ua.handle_timeout(now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Reservation(id) => {
                    let _ = self.release_connection(id, ReleaseReason::ReserveTimeout);
                }
                Timer::Operations(id) => self.expire_operations(id),
                Timer::Offer(call) => self.expire_offer(call),
                Timer::Placed(call) => self.expire_placed(call),
                Timer::AgentConf(conf) => self.agent_conf_timer(conf),
                Timer::ReleaseStats(id) => self.finish_release(id, None),
                Timer::IdleSockets => {
                    if let Some(next) = self.engine.close_idle_sockets() {
                        self.timers.set(Timer::IdleSockets, now + next);
                    }
                }
                Timer::Sweep => {
                    self.timers.set(Timer::Sweep, now + SWEEP_INTERVAL);
                    let dir = self.media.recording_dir.clone();
                    self.engine
                        .sweep_recordings(&dir, false, self.now.unix_ms / 1000);
                }
            }
        }
    }

    pub(super) fn on_request(&mut self, request: ControlRequest) {
        match request {
            ControlRequest::Action(action, reply) => {
                if let MediaAction::StopMediaOperation {
                    connection,
                    operation,
                    block,
                } = *action
                {
                    self.stop_and_reply(connection, operation, block, reply);
                    return;
                }
                self.acting = Some(action.name());
                let result = self.on_action(*action);
                self.acting = None;
                let _ = reply.send(result);
            }
            ControlRequest::ListConnections(reply) => {
                let _ = reply.send(self.list_connections());
            }
            ControlRequest::ListConferences(reply) => {
                let _ = reply.send(self.list_conferences());
            }
            ControlRequest::Call(CallAction::BlindTransfer { call, to }, reply) => {
                self.acting = Some("BlindTransfer");
                self.blind_transfer(call, to, reply);
                self.acting = None;
            }
            ControlRequest::Call(action, reply) => {
                self.acting = Some(action.name());
                let result = self.on_call_action(action);
                self.acting = None;
                let _ = reply.send(result);
            }
            ControlRequest::ListResources(reply) => {
                let mut v = self.resources.to_json();
                v["ResultCode"] = json!("0");
                let _ = reply.send(v);
            }
            ControlRequest::ListCalls(reply) => {
                let _ = reply.send(self.list_calls());
            }
            ControlRequest::Status(reply) => {
                let _ = reply.send(self.status());
            }
            ControlRequest::ShrinkIdle(reply) => {
                self.shrink_idle();
                let _ = reply.send(());
            }
            ControlRequest::ReloadRoutes(routes, trust, trunks, reply) => {
                self.media.trunks = trunks;
                tracing::info!(
                    routes = routes.len(),
                    trunk_blocks = trust.allowed.as_ref().map_or(0, Vec::len),
                    "routes and trunks reloaded"
                );
                self.ua.set_routes(routes);
                self.ua.set_trust(trust);
                let _ = reply.send(());
            }
            ControlRequest::Cti {
                request,
                reference,
                reply,
            } => self.on_cti_request(request, reference, reply),
            ControlRequest::AgentConf {
                agent,
                phone,
                request,
                reply,
            } => {
                let _ = reply.send(self.on_agent_conf(agent, phone, request));
            }
            ControlRequest::MuteRecording {
                call_id,
                channels,
                reply,
            } => {
                let _ = reply.send(self.mute_call_recording(&call_id, channels));
            }
            ControlRequest::Drain(reply) => {
                tracing::info!(calls = self.ua.call_count(), "draining: new calls refused");
                self.ua.start_draining();
                let _ = reply.send(());
            }
            ControlRequest::Shutdown(done) => {
                self.shutdown();
                let _ = done.send(());
            }
        }
    }

    /// StopMediaOperation: with Block, the answer waits until stopped Records have finished
    /// their files (their `Record_Complete` is out).
    pub(super) fn stop_and_reply(
        &mut self,
        connection: u32,
        operation: Option<u32>,
        block: bool,
        reply: Reply,
    ) {
        match self.stop_media_operation(connection, operation) {
            Ok((result, stopped)) => {
                let waiting = self.unfinished_records(&stopped);
                if block && !waiting.is_empty() {
                    self.blocked_stops.push((waiting, Some(reply), result));
                } else {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn on_action(&mut self, action: MediaAction) -> Result<ActionResult, ActionError> {
        let now = self.now.at;
        match action {
            MediaAction::Reserve {
                rx_codec,
                tx_codec,
                requester,
            } => self.reserve(now, rx_codec, tx_codec, requester),
            MediaAction::Create {
                connection,
                tx,
                codecs,
                requester,
            } => self.create(connection, tx, codecs, requester),
            MediaAction::Modify {
                connection,
                tx,
                codecs,
            } => self.modify(connection, tx, codecs),
            MediaAction::Delete {
                connection,
                conference,
            } => self.delete(connection, conference),
            MediaAction::CreateConference {
                connection,
                completion,
                conferee,
                hairpin,
                join_tone,
            } => self.create_conference(connection, completion, conferee, hairpin, join_tone, None),
            MediaAction::JoinConference {
                connection,
                conference,
                completion,
                conferee,
            } => self.join_conference(connection, conference, completion, conferee),
            MediaAction::LeaveConference {
                connection,
                conference,
            } => self.leave_conference(connection, conference),
            MediaAction::SetConfereeAttribute {
                connection,
                conference,
                change,
            } => self.set_conferee_attribute(connection, conference, change),
            MediaAction::Play(request) => self.play(request),
            MediaAction::PlayTone {
                target,
                tone,
                conds,
                state,
            } => self.play_tone(target, tone, conds, state),
            MediaAction::GatherDigits {
                connection,
                conds,
                state,
            } => self.gather_digits(connection, conds, state),
            MediaAction::SendDigits { connection, digits } => self.send_digits(connection, &digits),
            MediaAction::StopMediaOperation {
                connection,
                operation,
                ..
            } => self
                .stop_media_operation(connection, operation)
                .map(|(result, _)| result),
            MediaAction::Record(request) => self.record(request),
            MediaAction::DetectEnergy {
                connection,
                silence,
                needed,
                command_timeout,
                state,
            } => self.detect_energy(connection, silence, needed, command_timeout, state),
            MediaAction::AdjustPlay {
                connection,
                level,
                adjustment,
            } => self.adjust_play(connection, level, adjustment),
        }
    }

    pub(super) fn on_engine_event(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::Closed { key, stats } => {
                tracing::debug!(
                    connection = key,
                    received = stats.rtp_packets_received,
                    "media closed"
                );
                if let Ok(id) = u32::try_from(key) {
                    self.finish_release(id, Some(stats));
                }
                // Its sockets may stay bound for a next connection: they close when unused
                // that long (`engine::pool::IDLE_MAX`), checked then.
                self.timers
                    .set_unless_armed(Timer::IdleSockets, self.now.at + IDLE_SOCKETS_CHECK);
            }
            EngineEvent::FirstPacket { key, .. } => {
                tracing::debug!(connection = key, "first RTP packet");
            }
            EngineEvent::Latched { key, source } => {
                tracing::debug!(connection = key, %source, "RTP source latched");
            }
            EngineEvent::Digit {
                key,
                digit,
                duration_ms,
            } => {
                let Ok(id) = u32::try_from(key) else { return };
                let call = self.connections.get(&id).and_then(|c| c.call);
                self.events.emit(Event::DigitReceived {
                    connection_id: id.to_string(),
                    call_id: call.map(|c| c.to_string()),
                    digit: digit.to_string(),
                    duration_ms,
                });
                self.on_operation_digit(id, digit);
            }
            EngineEvent::RecordingDone {
                operation,
                samples,
                error,
                ..
            } => {
                if let Ok(operation) = u32::try_from(operation) {
                    self.store_recording_done(operation, samples, error.clone());
                    self.on_recording_done(operation, samples, error);
                }
            }
            EngineEvent::RecordingFailed {
                operation, error, ..
            } => {
                if let Ok(operation) = u32::try_from(operation) {
                    self.on_recording_failed(operation, error);
                }
            }
            EngineEvent::Energy {
                key,
                operation,
                silence,
            } => {
                if let (Ok(id), Ok(operation)) = (u32::try_from(key), u32::try_from(operation)) {
                    self.on_energy(id, operation, silence);
                }
            }
            EngineEvent::PlayoutDone { key, operation } => {
                if let (Ok(id), Ok(operation)) = (u32::try_from(key), u32::try_from(operation)) {
                    self.on_playout_done(id, operation);
                }
            }
            EngineEvent::Talker {
                conference,
                key,
                talking,
            } => {
                let conference_id = conference.to_string();
                let connection_id = key.to_string();
                self.events.emit(if talking {
                    Event::TalkerStarted {
                        conference_id,
                        connection_id,
                    }
                } else {
                    Event::TalkerStopped {
                        conference_id,
                        connection_id,
                    }
                });
            }
            EngineEvent::RtpTimeout { key } => {
                let Ok(id) = u32::try_from(key) else { return };
                if self.connections.contains_key(&id) {
                    tracing::info!(connection = id, "no RTP: releasing the connection");
                    let _ = self.release_connection(id, ReleaseReason::RtpTimeout);
                }
            }
        }
    }

    pub(super) fn shutdown(&mut self) {
        self.end_agent_confs();
        let ids: Vec<u32> = self.connections.keys().copied().collect();
        for id in ids {
            let _ = self.release_connection(id, ReleaseReason::Shutdown);
        }
        self.drain_ua();
        // The workers' final statistics would come after the loop has stopped reading them.
        let closing: Vec<u32> = self.closing.keys().copied().collect();
        for id in closing {
            self.finish_release(id, None);
        }
        self.stopped = true;
    }

    pub(super) fn list_connections(&self) -> Value {
        let mut ids: Vec<&u32> = self.connections.keys().collect();
        ids.sort();
        let list: Vec<Value> = ids
            .into_iter()
            .map(|id| {
                let c = &self.connections[id];
                let stats = self.engine.stats(u64::from(*id)).unwrap_or_default();
                json!({
                    "ConnectionId": id.to_string(),
                    "State": match (c.state, c.leg_of) {
                        (_, Some(_)) => "conference-leg",
                        (ConnectionState::Reserved { .. }, None) => "reserved",
                        (ConnectionState::Connected, None) => "connected",
                    },
                    "ConferenceId": c.conference.or(c.leg_of).map(|id| id.to_string()),
                    "MediaRxIP": c.rx_ip.to_string(),
                    "MediaRxPort": c.local_rtp.port(),
                    "MediaTxIP": c.media.remote_rtp.map(|a| a.ip().to_string()),
                    "MediaTxPort": c.media.remote_rtp.map(|a| a.port()),
                    "MediaRxCodec": codec_name(c.rx_codec),
                    "MediaTxCodec": codec_name(c.tx_codec),
                    "MediaRxFramesize": c.rx_framesize,
                    "MediaTxFramesize": c.tx_framesize,
                    "CallId": c.call.map(|c| c.to_string()),
                    "Stats": {
                        "RtpPacketsReceived": stats.rtp_packets_received,
                        "RtpBytesReceived": stats.rtp_bytes_received,
                        "RtpPacketsSent": stats.rtp_packets_sent,
                        "RtpBytesSent": stats.rtp_bytes_sent,
                        "RtcpPacketsReceived": stats.rtcp_packets_received,
                        "MalformedPackets": stats.malformed_packets,
                        "RtcpPacketsSent": stats.rtcp_packets_sent,
                        "ForeignSourceDropped": stats.foreign_source_dropped,
                        "SrtpRejected": stats.srtp_rejected,
                        "PacketsLost": stats.packets_lost,
                        "ConcealedFrames": stats.concealed_frames,
                        "LatePackets": stats.late_packets,
                        "ShrunkFrames": stats.shrunk_frames,
                        "PlayoutDelayMs": stats.playout_delay_ms,
                        "JitterMs": stats.jitter_ms,
                        "RttMs": stats.rtt_ms,
                        "DigitsReceived": stats.digits_received,
                    },
                    "Srtp": c.media.srtp.as_ref().map(|k| k.profile.sdes_name()),
                })
            })
            .collect();
        json!({ "ResultCode": "0", "Connections": list })
    }

    pub(super) fn list_calls(&self) -> Value {
        let mut ids: Vec<&CallId> = self.call_info.keys().collect();
        ids.sort();
        let list: Vec<Value> = ids
            .into_iter()
            .map(|id| {
                let c = &self.call_info[id];
                let connection = self.call_connections.get(id).copied();
                let party = connection.and_then(|c| self.model.party(c));
                let call = connection
                    .and_then(|c| self.model.conn_id_of(c))
                    .and_then(|id| self.model.call(id));
                json!({
                    "CallId": id.to_string(),
                    "From": c.from,
                    "To": c.to,
                    "Service": c.service,
                    "State": if c.answered { "answered" } else { "ringing" },
                    "ConnectionId": connection.map(|c| c.to_string()),
                    "StartedMs": c.started_ms,
                    "ConnID": call.map(|call| call.conn_id),
                    "DN": party.map(|p| p.dn.clone()),
                    "CallState": call.map(|call| call.state()),
                    "Parties": call.map(|call| call.parties.values().collect::<Vec<_>>()),
                })
            })
            .collect();
        let model: Vec<Value> = self.model.calls().map(|c| c.to_json()).collect();
        json!({ "ResultCode": "0", "Calls": list, "CallModel": model })
    }

    /// Gives back the slack a burst left in the control plane's tables (see `crate::shrink`).
    fn shrink_idle(&mut self) {
        use crate::shrink::ShrinkIdle;
        self.ua.shrink_idle();
        self.model.shrink_idle();
        self.engine.shrink_idle();
        self.transmits.shrink_idle();
        self.connections.shrink_idle();
        self.closing.shrink_idle();
        self.call_connections.shrink_idle();
        self.call_info.shrink_idle();
        self.offered.shrink_idle();
        self.placed.shrink_idle();
        self.offer_parties.shrink_idle();
    }

    pub(super) fn status(&self) -> Status {
        // Connections still closing count as live until their final statistics are in.
        let live: Vec<crate::engine::MediaStats> = self
            .connections
            .keys()
            .chain(self.closing.keys())
            .filter_map(|id| self.engine.stats(u64::from(*id)))
            .collect();
        let health = self.engine.health();
        let live_received: u64 = live.iter().map(|s| s.rtp_packets_received).sum();
        let live_sent: u64 = live.iter().map(|s| s.rtp_packets_sent).sum();
        Status {
            connections: self.connections.len(),
            calls: self.ua.call_count(),
            transactions: self.ua.transaction_count(),
            ports_in_use: health.ports_in_use,
            ports_idle: health.ports_idle,
            ports_total: health.ports_total,
            calls_total: self.calls_total,
            calls_answered_total: self.calls_answered_total,
            releases_by_reason: self.releases_by_reason.clone(),
            stalled_workers: health.stalled_workers,
            sip: self.ua.counters().clone(),
            rtp_packets_received: self.released_rtp_received + live_received,
            rtp_packets_sent: self.released_rtp_sent + live_sent,
            engine_events_dropped: health.events_dropped,
            recorder_frames_dropped: health.recorder_frames_dropped,
            rtp_packets_lost: live.iter().map(|s| s.packets_lost).sum(),
            rtp_jitter_ms_max: live.iter().map(|s| s.jitter_ms).fold(0.0, f64::max),
            rtp_packets_late: live.iter().map(|s| s.late_packets).sum(),
            rtp_frames_shrunk: live.iter().map(|s| s.shrunk_frames).sum(),
            receive_buffers_exhausted: health.receive_buffers_exhausted,
            worker_cpu: health.worker_cpu,
            tick_lateness: health.tick_lateness,
            conferences: self.conferences.len(),
            conferees: self.conferences.values().map(|c| c.members.len()).sum(),
            operations_running: self
                .connections
                .values()
                .map(|c| c.ops.running().len())
                .sum(),
            operations_completed: self.operations_completed.clone(),
            resources: Some(self.resources),
            call_model_calls: self.model.call_count(),
            call_model_parties: self.model.party_count(),
            recordings_in_progress: self.recordings_in_progress(),
            recording_failures: self.recording_failures,
        }
    }
}
