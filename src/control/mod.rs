//! The control plane: the one owner of calls, connections and conferences.
//!
//! Owns: the registry, the Media Control semantics (result codes, the DeleteConnection modes,
//! reservation expiry) and the single release path that both the API's DeleteConnection and
//! every dialog end (BYE, CANCEL, ACK timeout, INVITE failure) go through.
//! Must not: touch sockets or media packets. It runs as one tokio task; the API, the SIP
//! transport and the media workers reach it only through queues.

mod call_control;
mod conference;
pub mod events;
mod media_ops;
pub mod operations;
mod outbound;
pub mod result;

pub use call_control::{CallAction, ConferenceChoice};
pub use conference::{AttributeChange, Completion, Pool, Resources};
pub use media_ops::{
    sweep_recordings, Adjustment, Level, PlayRequest, RecordRequest, Target, ToneRequest,
    MAX_PROMPTS,
};
pub use outbound::MakeCall;

/// How often expired recordings are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// Where an action's answer goes.
type Reply = oneshot::Sender<Result<ActionResult, ActionError>>;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::app::config::Config;
use crate::engine::{
    ConfereeSpec, Engine, EngineError, EngineEvent, MediaMode, MediaSpec, OpenConnection, SrtpKeys,
    StreamFormat,
};
use crate::media::srtp::CryptoAttribute;
use crate::sdp::Codec;
use crate::sip::routing::{OutboundTrunk, Route, Service};
use crate::sip::transport::{route_source, Inbound, SipTransport};
use crate::sip::ua::{CallId, EndReason, UaOutput, UserAgent};
use events::{Envelope, Event, EventBus, ReleaseReason};
use result::{ActionError, ResultCode};

/// Connection ids are 24-bit: the top byte of a CUAE id names the media server (MmsId), and
/// this server is MmsId 0 (reference §2).
const MAX_CONNECTION_ID: u32 = 0x00FF_FFFF;

/// Q.850 cause "normal call clearing", sent in the Reason of a BYE we send on request.
const Q850_NORMAL_CLEARING: u8 = 16;

/// A Media Control action, already parsed and checked for form at the API edge.
#[derive(Debug, Clone)]
pub enum MediaAction {
    Reserve {
        rx_codec: Option<Codec>,
        tx_codec: Option<Codec>,
        requester: IpAddr,
    },
    Create {
        connection: Option<u32>,
        tx: SocketAddr,
        codecs: CodecChoice,
        requester: IpAddr,
    },
    Modify {
        connection: u32,
        tx: SocketAddr,
        codecs: CodecChoice,
    },
    Delete {
        connection: Option<u32>,
        conference: Option<u32>,
    },
    CreateConference {
        connection: u32,
        completion: Completion,
        conferee: ConfereeSpec,
        hairpin: bool,
        /// SoundToneOnJoin.
        join_tone: bool,
    },
    JoinConference {
        connection: u32,
        conference: u32,
        completion: Completion,
        conferee: ConfereeSpec,
    },
    LeaveConference {
        connection: u32,
        conference: u32,
    },
    SetConfereeAttribute {
        connection: u32,
        conference: u32,
        change: AttributeChange,
    },
    Play(PlayRequest),
    PlayTone {
        target: Target,
        tone: ToneRequest,
        conds: operations::TermConds,
        state: Option<String>,
    },
    GatherDigits {
        connection: u32,
        conds: operations::TermConds,
        state: Option<String>,
    },
    SendDigits {
        connection: u32,
        digits: String,
    },
    StopMediaOperation {
        connection: u32,
        operation: Option<u32>,
        /// Answer only once the stopped operations' completion events are out.
        block: bool,
    },
    Record(RecordRequest),
    DetectEnergy {
        connection: u32,
        /// True: DetectSilence; false: DetectNonSilence.
        silence: bool,
        needed: Duration,
        command_timeout: Option<Duration>,
        state: Option<String>,
    },
    AdjustPlay {
        connection: u32,
        level: Level,
        adjustment: Adjustment,
    },
}

/// Optional codec and framesize parameters; None leaves the current (or default) value.
#[derive(Debug, Clone, Default)]
pub struct CodecChoice {
    pub rx_codec: Option<Codec>,
    pub tx_codec: Option<Codec>,
    pub rx_framesize: Option<u32>,
    pub tx_framesize: Option<u32>,
}

/// Result data of a successful action, in API field names.
pub type ActionResult = Map<String, Value>;

/// What the API asks of the control plane.
#[derive(Debug)]
pub enum ControlRequest {
    Action(
        Box<MediaAction>,
        oneshot::Sender<Result<ActionResult, ActionError>>,
    ),
    ListConnections(oneshot::Sender<Value>),
    ListConferences(oneshot::Sender<Value>),
    ListResources(oneshot::Sender<Value>),
    /// A Call Control action.
    Call(CallAction, Reply),
    ListCalls(oneshot::Sender<Value>),
    Status(oneshot::Sender<Status>),
    /// New inbound routes from a configuration reload.
    ReloadRoutes(
        Vec<Route>,
        crate::sip::trust::Trust,
        Vec<OutboundTrunk>,
        oneshot::Sender<()>,
    ),
    /// Graceful shutdown begins: refuse new calls, keep the ones in progress.
    Drain(oneshot::Sender<()>),
    /// Release everything (BYE every call) and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Counters for /health and /metrics.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub connections: usize,
    pub calls: usize,
    pub transactions: usize,
    pub ports_in_use: usize,
    pub ports_total: usize,
    pub calls_total: u64,
    pub releases_by_reason: BTreeMap<String, u64>,
    /// Media workers whose loop has not turned for a second (the watchdog's check).
    pub stalled_workers: usize,
    pub sip: crate::sip::ua::SipCounters,
    /// RTP packets received/sent, over every connection ever (released ones included).
    pub rtp_packets_received: u64,
    pub rtp_packets_sent: u64,
    pub engine_events_dropped: u64,
    /// RFC 3550 loss summed over live connections, and the worst jitter among them.
    pub rtp_packets_lost: i64,
    pub rtp_jitter_ms_max: f64,
    /// Packets dropped by the jitter buffers of live connections because their frame had
    /// already been played.
    pub rtp_packets_late: u64,
    /// io_uring receives that found every buffer of their worker in use (see the engine).
    pub receive_buffers_exhausted: u64,
    /// CPU time of each media worker thread, by worker number (`None`: the thread has ended).
    pub worker_cpu: Vec<Option<Duration>>,
    pub tick_lateness: crate::engine::TickLatenessSnapshot,
    pub conferences: usize,
    /// Conferees over all conferences (monitors included).
    pub conferees: usize,
    /// Media operations running now.
    pub operations_running: usize,
    /// Media operations completed, by (action, termination condition).
    pub operations_completed: BTreeMap<(String, String), u64>,
    pub resources: Option<Resources>,
}

/// The API's handle on the control plane.
#[derive(Clone)]
pub struct ControlHandle {
    requests: mpsc::Sender<ControlRequest>,
    events: broadcast::Sender<Envelope>,
}

impl ControlHandle {
    /// Sends a request; fails only when the control plane has stopped.
    pub async fn request(&self, request: ControlRequest) -> Result<(), ActionError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| ActionError::new(ResultCode::ServerInactive, "server is shutting down"))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.events.subscribe()
    }
}

/// The control plane's state.
pub struct Controller {
    media: MediaSettings,
    engine: Engine,
    ua: UserAgent,
    transport: SipTransport,
    events: EventBus,
    connections: HashMap<u32, Connection>,
    /// Which connection each call is bound to.
    call_connections: HashMap<CallId, u32>,
    next_connection_id: u32,
    calls_total: u64,
    releases_by_reason: BTreeMap<String, u64>,
    /// What the API shows about each call in progress.
    call_info: HashMap<CallId, CallInfo>,
    /// RTP counters of released connections, so totals survive releases.
    released_rtp_received: u64,
    released_rtp_sent: u64,
    conferences: HashMap<u32, conference::Conference>,
    next_conference_id: u32,
    /// Conferences of `conference` routes by room name.
    rooms: HashMap<String, u32>,
    resources: Resources,
    next_operation_id: u32,
    /// Records whose operation ended, waiting for their file to be finished.
    pending_records: HashMap<u32, media_ops::PendingRecord>,
    /// StopMediaOperation answers held (Block) until these records are finished.
    blocked_stops: Vec<(Vec<u32>, Option<Reply>, ActionResult)>,
    /// The next look for expired recordings.
    next_sweep: Instant,
    /// Media operations completed, by (action, termination condition).
    operations_completed: BTreeMap<(String, String), u64>,
    /// `application` calls waiting for AcceptCall/AnswerCall/RejectCall/Redirect.
    offered: HashMap<CallId, call_control::OfferedCall>,
    /// Every `application` call in progress (answered or not).
    app_calls: std::collections::HashSet<CallId>,
    /// Calls we placed (MakeCall, transfers) not answered yet.
    placed: HashMap<CallId, outbound::Placed>,
    /// BlindTransfer answers waiting for the far end's NOTIFY.
    transfer_replies: HashMap<CallId, Reply>,
    /// BridgeCalls peers, both ways.
    bridges: HashMap<CallId, CallId>,
}

/// A call as listed by the API.
#[derive(Debug, Clone)]
struct CallInfo {
    from: String,
    to: String,
    service: &'static str,
    answered: bool,
    started_ms: u64,
}

/// Media settings the control plane applies to every connection.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub advertised_ip: Option<IpAddr>,
    pub bind_ip: IpAddr,
    pub default_codec: Codec,
    pub default_framesize: u32,
    pub reserve_timeout: Duration,
    pub resources: crate::app::config::ResourcesConfig,
    pub prompt_dir: std::path::PathBuf,
    pub recording_dir: std::path::PathBuf,
    pub allow_absolute_paths: bool,
    /// How long an `application` call waits for the application's decision.
    pub decision_timeout: Duration,
    /// How long a call we place may ring.
    pub ring_timeout: Duration,
    /// Trunks calls can be placed through (MakeCall, transfers); the first is the default.
    pub trunks: Vec<OutboundTrunk>,
}

impl MediaSettings {
    pub fn from_config(config: &Config) -> MediaSettings {
        let codecs = config
            .audio_codecs()
            .expect("config was checked at load: codecs are known");
        MediaSettings {
            advertised_ip: config.media.advertised_ip,
            bind_ip: config.media.bind_ip,
            default_codec: codecs[0],
            default_framesize: config.media.ptime_ms,
            reserve_timeout: Duration::from_secs(config.media.reserve_timeout_s),
            resources: config.resources.clone(),
            prompt_dir: config.media.prompt_dir.clone(),
            recording_dir: config.media.recording_dir.clone(),
            allow_absolute_paths: config.media.allow_absolute_paths,
            decision_timeout: Duration::from_secs(config.app.call_decision_timeout_s),
            ring_timeout: Duration::from_secs(config.app.ring_timeout_s),
            trunks: config
                .outbound_trunks()
                .expect("config was checked at load: trunks are valid"),
        }
    }

    /// The address we announce for media to a peer at `peer` (SIP peer, MediaTxIP, requester).
    fn announced_ip(&self, peer: IpAddr) -> IpAddr {
        if let Some(ip) = self.advertised_ip {
            return ip;
        }
        if !self.bind_ip.is_unspecified() {
            return self.bind_ip;
        }
        route_source(peer).unwrap_or(peer)
    }
}

/// One media connection.
#[derive(Debug)]
struct Connection {
    /// Where the engine bound its RTP socket (port is what we announce).
    local_rtp: SocketAddr,
    /// The address we announce (MediaRxIP).
    rx_ip: IpAddr,
    state: ConnectionState,
    rx_codec: Codec,
    tx_codec: Codec,
    rx_framesize: u32,
    tx_framesize: u32,
    call: Option<CallId>,
    /// What the engine's session for it does.
    media: MediaSpec,
    /// The conference it is in.
    conference: Option<u32>,
    /// Holds an enhanced RTP resource (codec other than G.711).
    enhanced: bool,
    /// Its digit buffer and media operations in progress.
    ops: operations::Operations,
    /// The Play/PlayTone operation whose audio the engine is playing.
    playing: Option<u32>,
    /// An announcement call: hang up when this Play has played to its end.
    hang_up_after: Option<u32>,
    /// Playout volume (−10..=10) and the one a toggle returns to.
    volume: i32,
    toggled_volume: i32,
    /// Playout speed (−10..=10).
    speed: i32,
    /// The Record in progress (operation, file name as the API reports it).
    recording: Option<(u32, String)>,
    /// Operations with silence/non-silence watches in the engine.
    watching: Vec<u32>,
    /// A temporary conference connection (Play/PlayTone/Record to a conference): no sockets,
    /// a participant of this conference's mix for the operation's duration.
    leg_of: Option<u32>,
    /// Being released (its operations' completions must not release it again).
    releasing: bool,
}

impl Connection {
    /// A connection with no operation, recording or conference yet.
    #[allow(clippy::too_many_arguments)]
    fn new(
        local_rtp: SocketAddr,
        rx_ip: IpAddr,
        state: ConnectionState,
        codecs: (Codec, Codec, u32, u32),
        call: Option<CallId>,
        media: MediaSpec,
        enhanced: bool,
        leg_of: Option<u32>,
    ) -> Connection {
        let (rx_codec, tx_codec, rx_framesize, tx_framesize) = codecs;
        Connection {
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionState {
    /// ReserveConnection done; CreateConnection due before `expires`.
    Reserved {
        expires: Instant,
    },
    Connected,
}

impl Controller {
    pub fn new(
        media: MediaSettings,
        engine: Engine,
        ua: UserAgent,
        transport: SipTransport,
    ) -> Controller {
        let resources = Resources::new(&media.resources, engine.ports_total() / 2);
        // Recordings a killed process left behind get valid headers; expired ones go.
        if let Err(e) = std::fs::create_dir_all(&media.recording_dir) {
            tracing::warn!(dir = %media.recording_dir.display(), error = %e, "recording directory unavailable");
        }
        sweep_recordings(&media.recording_dir, true, events::unix_ms() / 1000);
        Controller {
            resources,
            conferences: HashMap::new(),
            next_conference_id: 1,
            rooms: HashMap::new(),
            next_operation_id: 1,
            pending_records: HashMap::new(),
            blocked_stops: Vec::new(),
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            operations_completed: BTreeMap::new(),
            offered: HashMap::new(),
            app_calls: std::collections::HashSet::new(),
            placed: HashMap::new(),
            transfer_replies: HashMap::new(),
            bridges: HashMap::new(),
            media,
            engine,
            ua,
            transport,
            events: EventBus::new(4096),
            connections: HashMap::new(),
            call_connections: HashMap::new(),
            next_connection_id: 1,
            calls_total: 0,
            releases_by_reason: BTreeMap::new(),
            call_info: HashMap::new(),
            released_rtp_received: 0,
            released_rtp_sent: 0,
        }
    }

    /// A handle for the API, and the queue the controller reads it from.
    pub fn handle(&self) -> (ControlHandle, mpsc::Receiver<ControlRequest>) {
        let (tx, rx) = mpsc::channel(1024);
        (
            ControlHandle {
                requests: tx,
                events: self.events.sender(),
            },
            rx,
        )
    }

    /// The control loop. Returns after a Shutdown request (everything released) or when every
    /// input queue has closed.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<ControlRequest>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut engine_events: mpsc::Receiver<EngineEvent>,
    ) -> Engine {
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    if let ControlRequest::Shutdown(done) = request {
                        self.shutdown();
                        let _ = done.send(());
                        break;
                    }
                    self.on_request(request);
                }
                message = inbound.recv() => {
                    let Some(m) = message else { break };
                    self.ua.handle_message(Instant::now(), m.message, m.source, m.local);
                }
                event = engine_events.recv() => {
                    let Some(e) = event else { break };
                    self.on_engine_event(e);
                }
                _ = sleep => {
                    let now = Instant::now();
                    self.ua.handle_timeout(now);
                    self.expire_reservations(now);
                    self.expire_operations(now);
                    self.expire_offers(now);
                    self.expire_placed(now);
                    if self.next_sweep <= now {
                        self.next_sweep = now + SWEEP_INTERVAL;
                        sweep_recordings(&self.media.recording_dir, false, events::unix_ms() / 1000);
                    }
                }
            }
            self.drain_ua();
        }
        self.engine
    }

    fn next_deadline(&self) -> Option<Instant> {
        let reservation = self
            .connections
            .values()
            .filter_map(|c| match c.state {
                ConnectionState::Reserved { expires } => Some(expires),
                ConnectionState::Connected => None,
            })
            .min();
        [
            self.ua.poll_timeout(),
            reservation,
            self.next_operation_deadline(),
            self.next_offer_deadline(),
            self.next_placed_deadline(),
            Some(self.next_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_request(&mut self, request: ControlRequest) {
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
                let result = self.on_action(*action);
                let _ = reply.send(result);
            }
            ControlRequest::ListConnections(reply) => {
                let _ = reply.send(self.list_connections());
            }
            ControlRequest::ListConferences(reply) => {
                let _ = reply.send(self.list_conferences());
            }
            ControlRequest::Call(CallAction::BlindTransfer { call, to }, reply) => {
                self.blind_transfer(call, to, reply);
            }
            ControlRequest::Call(action, reply) => {
                let _ = reply.send(self.on_call_action(action));
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
            ControlRequest::Drain(reply) => {
                tracing::info!(calls = self.ua.call_count(), "draining: new calls refused");
                self.ua.start_draining();
                let _ = reply.send(());
            }
            ControlRequest::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    /// StopMediaOperation: with Block, the answer waits until stopped Records have finished
    /// their files (their `Record_Complete` is out).
    fn stop_and_reply(
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

    fn on_action(&mut self, action: MediaAction) -> Result<ActionResult, ActionError> {
        let now = Instant::now();
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

    fn reserve(
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
        let rx_ip = self.media.announced_ip(requester);
        let state = ConnectionState::Reserved {
            expires: now + self.media.reserve_timeout,
        };
        let media = MediaSpec {
            format: Some(api_format(&choice, &self.media)),
            ..MediaSpec::idle(None)
        };
        let id = self.open_connection(rx_ip, state, &choice, media, None)?;
        let c = &self.connections[&id];
        self.events.emit(Event::ConnectionReserved {
            connection_id: id.to_string(),
            media_rx_ip: c.rx_ip.to_string(),
            media_rx_port: c.local_rtp.port(),
        });
        Ok(self.connection_result(id))
    }

    fn create(
        &mut self,
        connection: Option<u32>,
        tx: SocketAddr,
        codecs: CodecChoice,
        requester: IpAddr,
    ) -> Result<ActionResult, ActionError> {
        let Some(id) = connection else {
            let rx_ip = self.media.announced_ip(if tx.ip().is_unspecified() {
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

    fn modify(
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
    fn delete(
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
    fn release_connection(&mut self, id: u32, reason: ReleaseReason) -> Result<(), ActionError> {
        if !self.connections.contains_key(&id) {
            return Err(unknown_connection(id));
        }
        let conference = self.leave_on_release(id, reason);
        let result = self.release_connection_in(id, reason, conference);
        if let Some(conference) = conference {
            self.release_conference_if_empty(conference);
        }
        result
    }

    /// Releases a connection already out of its conference (`conference`: the one it was in,
    /// for the event).
    fn release_connection_in(
        &mut self,
        id: u32,
        reason: ReleaseReason,
        conference: Option<u32>,
    ) -> Result<(), ActionError> {
        if let Some(c) = self.connections.get_mut(&id) {
            c.releasing = true;
        }
        self.autostop_operations(id);
        let Some(connection) = self.connections.remove(&id) else {
            return Err(unknown_connection(id));
        };
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
            });
            return Ok(());
        }
        self.resources.give_back_connection(connection.enhanced);
        let stats = self.engine.stats(u64::from(id)).unwrap_or_default();
        self.released_rtp_received += stats.rtp_packets_received;
        self.released_rtp_sent += stats.rtp_packets_sent;
        if let Err(e) = self.engine.close_connection(u64::from(id)) {
            tracing::warn!(connection = id, error = %e, "engine could not close connection");
        }
        if let Some(call) = connection.call {
            self.call_connections.remove(&call);
            self.call_info.remove(&call);
            self.app_calls.remove(&call);
            self.forget_placed(call);
            if let Some(peer) = self.bridges.remove(&call) {
                self.bridges.remove(&peer);
            }
            // The dialog is still up only when the release did not come from it.
            if self.ua.hangup(Instant::now(), call, Q850_NORMAL_CLEARING) {
                self.events.emit(Event::CallEnded {
                    call_id: call.to_string(),
                    reason,
                });
            }
        }
        *self
            .releases_by_reason
            .entry(reason_name(reason))
            .or_default() += 1;
        tracing::info!(connection = id, reason = ?reason, "connection released");
        self.events.emit(Event::ConnectionReleased {
            connection_id: id.to_string(),
            reason,
            call_id: connection.call.map(|c| c.to_string()),
            rtp_packets_received: stats.rtp_packets_received,
            rtp_packets_sent: stats.rtp_packets_sent,
            packets_lost: stats.packets_lost,
            jitter_ms: stats.jitter_ms,
            concealed_frames: stats.concealed_frames,
            conference_id: conference.map(|c| c.to_string()),
        });
        Ok(())
    }

    fn drain_ua(&mut self) {
        while let Some(output) = self.ua.poll_output() {
            match output {
                UaOutput::Transmit { to, message } => self.transport.send(to, message.to_bytes()),
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
                    ..
                } => self.on_incoming_call(
                    call,
                    service,
                    remote_media,
                    (from, to),
                    local,
                    conference,
                    play,
                    replaces,
                ),
                UaOutput::MediaUpdated { call, media } => self.on_media_updated(call, media),
                UaOutput::CallAnswered { call } => {
                    if let Some(info) = self.call_info.get_mut(&call) {
                        info.answered = true;
                    }
                    if let Some(&id) = self.call_connections.get(&call) {
                        self.events.emit(Event::CallAnswered {
                            call_id: call.to_string(),
                            connection_id: id.to_string(),
                        });
                    }
                    self.on_placed_answered(call);
                }
                UaOutput::Progress { call, status } => {
                    tracing::debug!(call, status, "placed call in progress");
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
                    self.call_info.remove(&call);
                    self.on_placed_failed(call, end);
                    self.transfer_call_ended(call);
                    let reason = release_reason(end);
                    self.on_app_call_ended(call, reason);
                    self.events.emit(Event::CallEnded {
                        call_id: call.to_string(),
                        reason,
                    });
                    if let Some(id) = self.call_connections.remove(&call) {
                        // The implicit DeleteConnection (seed 01).
                        let _ = self.release_connection(id, reason);
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
        (from, to): (String, String),
        local: SocketAddr,
        room: Option<String>,
        play: Option<String>,
        replaces: Option<CallId>,
    ) {
        let service_name = self.note_call(call, &from, &to, service);
        if let Some(old) = replaces {
            // Attended transfer: the new dialog takes the replaced one's place at once.
            let mode = self
                .call_connections
                .get(&old)
                .and_then(|id| self.connections.get(id))
                .map_or(MediaMode::Idle, |c| c.media.mode);
            match self.open_call_connection(call, mode, remote_media.as_ref(), local) {
                Ok((id, announced)) => {
                    self.ua.accept(Instant::now(), call, announced);
                    self.replace_call(call, id, old);
                    if self.app_calls.contains(&call) {
                        self.emit_media_started(call, id, announced);
                    }
                }
                Err((status, reason)) => self.ua.reject(Instant::now(), call, status, reason),
            }
            return;
        }
        self.events.emit(Event::IncomingCall {
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
                    self.ua.reject(Instant::now(), call, status, reason);
                    return;
                }
            };
        if let (Service::Conference, Some(room)) = (service, room) {
            if let Err(e) = self.join_room(id, room) {
                // The UA reports the failed INVITE; its connection goes with it.
                tracing::warn!(call, error = %e.message, "caller cannot join the conference");
                self.ua
                    .reject(Instant::now(), call, 503, "Service Unavailable");
                return;
            }
        }
        if service == Service::Announcement {
            if let Err(e) = self.start_announcement(id, play) {
                // RFC 4240 §3: a prompt the server cannot fetch is 404.
                tracing::warn!(call, error = %e.message, "announcement cannot play");
                self.ua.reject(Instant::now(), call, 404, "Not Found");
                return;
            }
        }
        self.ua.accept(Instant::now(), call, announced);
    }

    /// Counts a new call (ours or the peer's) and lists it; returns its service's name.
    fn note_call(&mut self, call: CallId, from: &str, to: &str, service: Service) -> &'static str {
        let name = service_name(service);
        self.calls_total += 1;
        self.call_info.insert(
            call,
            CallInfo {
                from: from.to_string(),
                to: to.to_string(),
                service: name,
                answered: false,
                started_ms: events::unix_ms(),
            },
        );
        name
    }

    /// Opens and binds the media connection of an incoming call from its offer (or, without
    /// one, for the offer we make in the 2xx). Returns the connection and the address we
    /// announce, or the SIP status to reject the call with.
    fn open_call_connection(
        &mut self,
        call: CallId,
        mode: MediaMode,
        remote_media: Option<&crate::sdp::NegotiatedMedia>,
        local: SocketAddr,
    ) -> Result<(u32, SocketAddr), (u16, &'static str)> {
        let spec = match remote_media.map(|m| media_spec(mode, m)) {
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
        let codecs = remote_media
            .map(|m| CodecChoice {
                rx_codec: Some(m.codec),
                tx_codec: Some(m.codec),
                rx_framesize: Some(m.ptime_ms),
                tx_framesize: Some(m.ptime_ms),
            })
            .unwrap_or_default();
        let rx_ip = self.media.announced_ip(local.ip());
        match self.open_connection(rx_ip, ConnectionState::Connected, &codecs, spec, Some(call)) {
            Ok(id) => {
                self.call_connections.insert(call, id);
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
        let spec = match media_spec(c.media.mode, &media) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(connection = id, error = %e, "re-negotiated media unusable; keeping the old");
                return;
            }
        };
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
        self.emit_media_changed(call, id, media.direction.sends());
        self.events.emit(Event::ConnectionModified {
            connection_id: id.to_string(),
            media_tx_ip: media.remote_rtp.map(|a| a.ip().to_string()),
            media_tx_port: media.remote_rtp.map(|a| a.port()),
        });
    }

    fn on_engine_event(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::Closed { key, stats } => {
                tracing::debug!(
                    connection = key,
                    received = stats.rtp_packets_received,
                    "media closed"
                );
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
                    self.on_recording_done(operation, samples, error);
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

    fn expire_reservations(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .connections
            .iter()
            .filter(
                |(_, c)| matches!(c.state, ConnectionState::Reserved { expires } if expires <= now),
            )
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let _ = self.release_connection(id, ReleaseReason::ReserveTimeout);
        }
    }

    fn shutdown(&mut self) {
        let ids: Vec<u32> = self.connections.keys().copied().collect();
        for id in ids {
            let _ = self.release_connection(id, ReleaseReason::Shutdown);
        }
        self.drain_ua();
    }

    fn open_connection(
        &mut self,
        rx_ip: IpAddr,
        state: ConnectionState,
        codecs: &CodecChoice,
        media: MediaSpec,
        call: Option<CallId>,
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

    fn allocate_id(&mut self) -> Result<u32, ActionError> {
        let connections = &self.connections;
        allocate_in(&mut self.next_connection_id, |id| {
            connections.contains_key(&id)
        })
        .ok_or_else(|| ActionError::new(ResultCode::ServerBusy, "no connection ids left"))
    }

    fn connection_mut(&mut self, id: u32) -> Result<&mut Connection, ActionError> {
        self.connections
            .get_mut(&id)
            .ok_or_else(|| unknown_connection(id))
    }

    fn emit_created(&mut self, id: u32) {
        let c = &self.connections[&id];
        self.events.emit(Event::ConnectionCreated {
            connection_id: id.to_string(),
            media_rx_ip: c.rx_ip.to_string(),
            media_rx_port: c.local_rtp.port(),
            media_tx_ip: c.media.remote_rtp.map(|a| a.ip().to_string()),
            media_tx_port: c.media.remote_rtp.map(|a| a.port()),
            call_id: c.call.map(|c| c.to_string()),
        });
    }

    /// The result data of Reserve/Create/ModifyConnection (reference §3.1–3.3).
    fn connection_result(&self, id: u32) -> ActionResult {
        let c = &self.connections[&id];
        let mut m = success();
        m.insert("ConnectionId".into(), json!(id.to_string()));
        m.insert("MmsId".into(), json!(0));
        m.insert("MediaRxIP".into(), json!(c.rx_ip.to_string()));
        m.insert("MediaRxPort".into(), json!(c.local_rtp.port()));
        m.insert("MediaRxControlIP".into(), json!(c.rx_ip.to_string()));
        m.insert("MediaRxControlPort".into(), json!(c.local_rtp.port() + 1));
        m
    }

    fn list_connections(&self) -> Value {
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

    fn list_calls(&self) -> Value {
        let mut ids: Vec<&CallId> = self.call_info.keys().collect();
        ids.sort();
        let list: Vec<Value> = ids
            .into_iter()
            .map(|id| {
                let c = &self.call_info[id];
                json!({
                    "CallId": id.to_string(),
                    "From": c.from,
                    "To": c.to,
                    "Service": c.service,
                    "State": if c.answered { "answered" } else { "ringing" },
                    "ConnectionId": self.call_connections.get(id).map(|c| c.to_string()),
                    "StartedMs": c.started_ms,
                })
            })
            .collect();
        json!({ "ResultCode": "0", "Calls": list })
    }

    fn status(&self) -> Status {
        let live: Vec<crate::engine::MediaStats> = self
            .connections
            .keys()
            .filter_map(|id| self.engine.stats(u64::from(*id)))
            .collect();
        let live_received: u64 = live.iter().map(|s| s.rtp_packets_received).sum();
        let live_sent: u64 = live.iter().map(|s| s.rtp_packets_sent).sum();
        Status {
            connections: self.connections.len(),
            calls: self.ua.call_count(),
            transactions: self.ua.transaction_count(),
            ports_in_use: self.engine.ports_in_use(),
            ports_total: self.engine.ports_total(),
            calls_total: self.calls_total,
            releases_by_reason: self.releases_by_reason.clone(),
            stalled_workers: self.engine.stalled_workers(Duration::from_secs(1)),
            sip: self.ua.counters().clone(),
            rtp_packets_received: self.released_rtp_received + live_received,
            rtp_packets_sent: self.released_rtp_sent + live_sent,
            engine_events_dropped: self.engine.events_dropped(),
            rtp_packets_lost: live.iter().map(|s| s.packets_lost).sum(),
            rtp_jitter_ms_max: live.iter().map(|s| s.jitter_ms).fold(0.0, f64::max),
            rtp_packets_late: live.iter().map(|s| s.late_packets).sum(),
            receive_buffers_exhausted: self.engine.receive_buffers_exhausted(),
            worker_cpu: self.engine.worker_cpu_times(),
            tick_lateness: self.engine.tick_lateness(),
            conferences: self.conferences.len(),
            conferees: self.conferences.values().map(|c| c.members.len()).sum(),
            operations_running: self
                .connections
                .values()
                .map(|c| c.ops.running().len())
                .sum(),
            operations_completed: self.operations_completed.clone(),
            resources: Some(self.resources),
        }
    }

    /// Refuses a codec change that needs an enhanced RTP resource when none is free (8).
    fn check_codec_change(&self, id: u32, codecs: &CodecChoice) -> Result<(), ActionError> {
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
    fn apply_connection_codecs(&mut self, id: u32, codecs: &CodecChoice) {
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

/// The next free 24-bit id from `next` on (wrapping to 1; the top byte is the MmsId), or None
/// when every id is `taken`.
pub(crate) fn allocate_in(next: &mut u32, taken: impl Fn(u32) -> bool) -> Option<u32> {
    for _ in 0..MAX_CONNECTION_ID {
        let id = *next;
        *next = if id >= MAX_CONNECTION_ID { 1 } else { id + 1 };
        if !taken(id) {
            return Some(id);
        }
    }
    None
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
fn api_format(codecs: &CodecChoice, settings: &MediaSettings) -> StreamFormat {
    let rx = codecs.rx_codec.unwrap_or(settings.default_codec);
    let tx = codecs.tx_codec.unwrap_or(rx);
    StreamFormat {
        codec: rx,
        payload_type: api_payload_type(rx),
        ptime_ms: codecs.rx_framesize.unwrap_or(settings.default_framesize),
        telephone_event_pt: Some(api_payload_type(Codec::TelephoneEvent)),
        send: (tx != rx).then(|| (tx, api_payload_type(tx))),
    }
}

/// The engine's view of negotiated media: format, peer addresses and SRTP keys.
fn media_spec(mode: MediaMode, media: &crate::sdp::NegotiatedMedia) -> Result<MediaSpec, String> {
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
        }),
        remote_rtp: media.remote_rtp,
        remote_rtcp: media.remote_rtcp,
        srtp,
        // On hold (we only send, or nothing flows) silence is expected, not a dead call.
        expects_rtp: media.direction.receives() && media.remote_rtp.is_some(),
    })
}

/// SDES key parameters (`inline:<base64 key||salt>[|lifetime]`) of both sides → SRTP keys.
fn srtp_keys(s: &crate::sdp::NegotiatedSrtp) -> Result<SrtpKeys, String> {
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
pub(crate) fn retarget(spec: &MediaSpec, tx: SocketAddr) -> MediaSpec {
    MediaSpec {
        remote_rtp: Some(tx),
        remote_rtcp: Some(SocketAddr::new(tx.ip(), tx.port().wrapping_add(1))),
        ..spec.clone()
    }
}

fn apply_codecs(c: &mut Connection, codecs: &CodecChoice) {
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

pub(crate) fn success() -> ActionResult {
    let mut m = Map::new();
    m.insert("ResultCode".into(), json!("0"));
    m
}

pub(crate) fn unknown_connection(id: u32) -> ActionError {
    ActionError::new(
        ResultCode::UnknownConnectionId,
        format!("connection {id} does not exist"),
    )
}

pub(crate) fn engine_error(e: EngineError) -> ActionError {
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

fn reason_name(reason: ReleaseReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{reason:?}"))
}
