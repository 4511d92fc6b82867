//! The control core's virtual-time harness: the core over a simulated engine, a SIP peer
//! that writes its requests as text, and leak checks at the end of every test.
//!
//! Owns: [`Sim`] (a [`Backend`] that allocates ports from a small pool, keeps what each
//! connection and conference is, publishes statistics and reports `Closed` with final ones
//! when the core closes a connection), [`Harness`] (the shell's loop, in virtual time:
//! `now` only moves when a test advances it; every engine event is delivered; a loop that
//! does not settle panics as a livelock) and [`PeerCall`] (one SIP dialog seen from the peer).
//! Must not: sleep, read the clock or open a socket.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::backend::{Backend, MediaHealth};
use super::core::{Controller, Input, Now};
use super::events::Envelope;
use super::result::ActionError;
use super::timers::Timer;
use super::{ActionResult, CallAction, ControlRequest, MediaAction, MediaSettings};
use crate::engine::{
    ConfereeSpec, ConferenceKey, ConferenceSpec, ConnectionKey, EngineError, EngineEvent,
    MediaEndpoint, MediaSpec, MediaStats, OpenConnection,
};
use crate::media::player::PlaySource;
use crate::media::recording_file::RecordingFile;
use crate::media::wav::Audio;
use crate::sdp::{Codec, LocalCapabilities, SrtpPolicy};
use crate::sip::message::{parse, Request, Response, SipMessage};
use crate::sip::routing::{OutboundTrunk, Route, Service};
use crate::sip::transaction::{Peer, TimerValues, Transport};
use crate::sip::ua::{UaSettings, UserAgent};

/// Our SIP address.
pub const LOCAL: &str = "127.0.0.1:5060";
/// The peer's signalling address (Via sent-by, Contact).
pub const PEER: &str = "127.0.0.2:5070";
/// The peer's media address in its SDP.
pub const PEER_MEDIA_IP: &str = "127.0.0.2";
/// The trunk calls are placed through (transfers, MakeCall).
pub const TRUNK: &str = "127.0.0.3:5080";
/// Inputs one `settle` may take; more means something keeps re-arming (livelock).
const MAX_ROUNDS: usize = 10_000;
/// First and last RTP port of the simulated pool (even ports; each pair holds RTP + RTCP).
const PORT_MIN: u16 = 40_000;
const PORT_MAX: u16 = 40_398;

/// What the simulated engine publishes for a connection, and what its worker adds after the
/// last publication (so a test can tell the final figures from the published ones).
pub const PUBLISHED_RECEIVED: u64 = 100;
pub const FINAL_EXTRA_RECEIVED: u64 = 7;

/// A connection as the simulated engine holds it.
#[derive(Debug, Clone)]
pub struct SimConnection {
    pub port: u16,
    pub media: MediaSpec,
    pub conference: Option<ConferenceKey>,
}

/// A media engine without sockets or threads: it answers the core's commands at once and
/// queues the events a real engine would send.
#[derive(Debug, Default)]
pub struct Sim {
    free_ports: BTreeSet<u16>,
    pub connections: HashMap<ConnectionKey, SimConnection>,
    pub conferences: HashMap<ConferenceKey, BTreeSet<ConnectionKey>>,
    /// Playouts in progress: (connection, operation).
    pub plays: HashSet<(ConnectionKey, u64)>,
    /// Recordings in progress by operation (the writer is dropped when it stops).
    pub recordings: HashMap<u64, (ConnectionKey, RecordingFile)>,
    /// Every mute asked for: operation, left, right.
    pub mutes: Vec<(u64, bool, bool)>,
    /// Conferences created with a join tone.
    pub conferences_with_join_tone: std::collections::HashSet<ConferenceKey>,
    /// Energy watches in progress: (connection, operation).
    pub watches: HashSet<(ConnectionKey, u64)>,
    /// Events for the core, in order.
    pub outbox: VecDeque<EngineEvent>,
    /// Every connection closed, in order.
    pub closed: Vec<ConnectionKey>,
    /// Prompt files that "exist".
    pub prompts: BTreeMap<PathBuf, Audio>,
    /// Drop `Closed` events (as a full event queue would).
    pub lose_closed: bool,
    /// How often the core asked to close idle sockets.
    pub idle_socket_checks: usize,
    /// What those asks answer, in order (then None: no idle sockets left).
    pub idle_sockets_due: VecDeque<Duration>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            free_ports: (PORT_MIN..=PORT_MAX).step_by(2).collect(),
            ..Sim::default()
        }
    }

    pub fn ports_total(&self) -> usize {
        usize::from((PORT_MAX - PORT_MIN) / 2 + 1) * 2
    }

    pub fn ports_in_use(&self) -> usize {
        self.ports_total() - self.free_ports.len() * 2
    }

    fn connection(&mut self, key: ConnectionKey) -> Result<&mut SimConnection, EngineError> {
        self.connections
            .get_mut(&key)
            .ok_or(EngineError::UnknownConnection)
    }

    fn conference(
        &mut self,
        conference: ConferenceKey,
    ) -> Result<&mut BTreeSet<ConnectionKey>, EngineError> {
        self.conferences
            .get_mut(&conference)
            .ok_or(EngineError::UnknownConference)
    }

    fn stop_recording_of(&mut self, operation: u64) {
        if let Some((key, file)) = self.recordings.remove(&operation) {
            let (samples, error) = match file.finish() {
                Ok(frames) => (frames, None),
                Err(e) => (0, Some(e.to_string())),
            };
            self.outbox.push_back(EngineEvent::RecordingDone {
                key,
                operation,
                samples,
                error,
            });
        }
    }
}

impl Backend for Sim {
    fn open_connection(&mut self, request: OpenConnection) -> Result<MediaEndpoint, EngineError> {
        if self.connections.contains_key(&request.key) {
            return Err(EngineError::DuplicateConnection);
        }
        let port = self
            .free_ports
            .pop_first()
            .ok_or(EngineError::NoPortsAvailable)?;
        self.connections.insert(
            request.key,
            SimConnection {
                port,
                media: request.media,
                conference: None,
            },
        );
        Ok(MediaEndpoint {
            rtp: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
            worker: 0,
        })
    }

    fn update_connection(
        &mut self,
        key: ConnectionKey,
        media: MediaSpec,
    ) -> Result<(), EngineError> {
        self.connection(key)?.media = media;
        Ok(())
    }

    fn close_connection(&mut self, key: ConnectionKey) -> Result<(), EngineError> {
        let connection = self
            .connections
            .remove(&key)
            .ok_or(EngineError::UnknownConnection)?;
        if let Some(members) = connection
            .conference
            .and_then(|c| self.conferences.get_mut(&c))
        {
            members.remove(&key);
        }
        self.plays.retain(|(k, _)| *k != key);
        self.watches.retain(|(k, _)| *k != key);
        let recordings: Vec<u64> = self
            .recordings
            .iter()
            .filter(|(_, (k, _))| *k == key)
            .map(|(op, _)| *op)
            .collect();
        for operation in recordings {
            self.stop_recording_of(operation);
        }
        self.free_ports.insert(connection.port);
        self.closed.push(key);
        if !self.lose_closed {
            let mut stats = published_stats();
            stats.rtp_packets_received += FINAL_EXTRA_RECEIVED;
            self.outbox.push_back(EngineEvent::Closed { key, stats });
        }
        Ok(())
    }

    fn create_conference(
        &mut self,
        conference: ConferenceKey,
        spec: ConferenceSpec,
        first: ConnectionKey,
    ) -> Result<(), EngineError> {
        if self.conferences.contains_key(&conference) {
            return Err(EngineError::DuplicateConference);
        }
        self.connection(first)?;
        self.conferences.insert(conference, BTreeSet::new());
        if spec.join_tone {
            self.conferences_with_join_tone.insert(conference);
        }
        Ok(())
    }

    fn join_conference(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        _conferee: ConfereeSpec,
    ) -> Result<(), EngineError> {
        self.conference(conference)?;
        self.connection(key)?.conference = Some(conference);
        self.conference(conference)?.insert(key);
        Ok(())
    }

    fn set_conferee(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        _conferee: ConfereeSpec,
    ) -> Result<(), EngineError> {
        if !self.conference(conference)?.contains(&key) {
            return Err(EngineError::UnknownConnection);
        }
        Ok(())
    }

    fn leave_conference(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError> {
        self.conference(conference)?.remove(&key);
        self.connection(key)?.conference = None;
        Ok(())
    }

    fn set_hairpin(&mut self, conference: ConferenceKey, _: bool) -> Result<(), EngineError> {
        self.conference(conference).map(|_| ())
    }

    fn close_conference(&mut self, conference: ConferenceKey) -> Result<(), EngineError> {
        let members = self
            .conferences
            .remove(&conference)
            .ok_or(EngineError::UnknownConference)?;
        for key in members {
            if let Some(c) = self.connections.get_mut(&key) {
                c.conference = None;
            }
        }
        Ok(())
    }

    fn play(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        _source: PlaySource,
        _gain: f32,
    ) -> Result<(), EngineError> {
        self.connection(key)?;
        self.plays.insert((key, operation));
        Ok(())
    }

    fn stop_play(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.plays.remove(&(key, operation));
        Ok(())
    }

    fn set_play_gain(&mut self, key: ConnectionKey, _gain: f32) -> Result<(), EngineError> {
        self.connection(key).map(|_| ())
    }

    fn set_play_speed(&mut self, key: ConnectionKey, _speed: i32) -> Result<(), EngineError> {
        self.connection(key).map(|_| ())
    }

    fn send_digits(
        &mut self,
        key: ConnectionKey,
        _digits: String,
        _duration_ms: u32,
        _gap_ms: u32,
    ) -> Result<(), EngineError> {
        self.connection(key).map(|_| ())
    }

    fn start_recording(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError> {
        self.connection(key)?;
        self.recordings.insert(operation, (key, file));
        Ok(())
    }

    fn start_recording_to(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        file: crate::media::recording_file::NewRecording,
    ) -> Result<(), EngineError> {
        self.connection(key)?;
        // The real recorder creates the file on its thread; the simulation at once.
        let file = file.create().map_err(|e| {
            EngineError::InvalidConfig(format!("recording file cannot be created: {e}"))
        })?;
        self.recordings.insert(operation, (key, file));
        Ok(())
    }

    fn stop_recording(&mut self, _key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.stop_recording_of(operation);
        Ok(())
    }

    fn mute_recording(
        &mut self,
        operation: u64,
        left: bool,
        right: bool,
    ) -> Result<(), EngineError> {
        if !self.recordings.contains_key(&operation) {
            return Err(EngineError::UnknownConnection);
        }
        self.mutes.push((operation, left, right));
        Ok(())
    }

    fn watch_energy(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        _silence: bool,
        _needed: Duration,
    ) -> Result<(), EngineError> {
        self.connection(key)?;
        self.watches.insert((key, operation));
        Ok(())
    }

    fn unwatch_energy(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.watches.remove(&(key, operation));
        Ok(())
    }

    fn conference_play(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        _source: PlaySource,
        _gain: f32,
    ) -> Result<(), EngineError> {
        self.conference(conference)?;
        self.plays.insert((key, operation));
        Ok(())
    }

    fn conference_stop_play(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError> {
        self.conference(conference)?;
        self.plays.retain(|(k, _)| *k != key);
        Ok(())
    }

    fn conference_set_gain(
        &mut self,
        conference: ConferenceKey,
        _key: ConnectionKey,
        _gain: f32,
        _speed: Option<i32>,
    ) -> Result<(), EngineError> {
        self.conference(conference).map(|_| ())
    }

    fn conference_record(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError> {
        self.conference(conference)?;
        self.recordings.insert(operation, (key, file));
        Ok(())
    }

    fn conference_stop_record(
        &mut self,
        _conference: ConferenceKey,
        _key: ConnectionKey,
        operation: u64,
    ) -> Result<(), EngineError> {
        self.stop_recording_of(operation);
        Ok(())
    }

    fn stats(&self, key: ConnectionKey) -> Option<MediaStats> {
        self.connections.get(&key).map(|_| published_stats())
    }

    fn close_idle_sockets(&mut self) -> Option<Duration> {
        self.idle_socket_checks += 1;
        self.idle_sockets_due.pop_front()
    }

    fn health(&self) -> MediaHealth {
        MediaHealth {
            ports_in_use: self.ports_in_use(),
            ports_total: self.ports_total(),
            ..MediaHealth::default()
        }
    }

    fn is_file(&self, path: &Path) -> bool {
        self.prompts.contains_key(path)
    }

    fn read_prompt(&self, path: &Path) -> Result<Audio, String> {
        self.prompts
            .get(path)
            .map(|a| Audio {
                sample_rate: a.sample_rate,
                samples: a.samples.clone(),
            })
            .ok_or_else(|| format!("{}: no such prompt", path.display()))
    }

    // Recordings are real files in the harness's directory (the trait's defaults).

    fn source_address_for(&self, _peer: IpAddr) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, 1]))
    }

    fn sip_local_for(&self, _peer: Peer) -> Option<SocketAddr> {
        Some(addr(LOCAL))
    }
}

/// What the simulated workers publish for every live connection.
pub fn published_stats() -> MediaStats {
    MediaStats {
        rtp_packets_received: PUBLISHED_RECEIVED,
        rtp_packets_sent: PUBLISHED_RECEIVED,
        ..MediaStats::default()
    }
}

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address parses")
}

pub fn udp(text: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr(text),
    }
}

pub fn sip(text: &str) -> SipMessage {
    parse(text.as_bytes()).unwrap_or_else(|e| panic!("test message does not parse ({e}):\n{text}"))
}

/// PCMU + telephone-event at the peer's media address.
/// CreateConference of `connection` as its first member, nothing else asked.
pub fn create_conference(connection: u32) -> MediaAction {
    MediaAction::CreateConference {
        connection,
        completion: super::Completion::default(),
        conferee: crate::engine::ConfereeSpec::default(),
        hairpin: false,
        join_tone: false,
    }
}

/// JoinConference of `connection` into `conference`, nothing else asked.
pub fn join_conference(connection: u32, conference: u32) -> MediaAction {
    MediaAction::JoinConference {
        connection,
        conference,
        completion: super::Completion::default(),
        conferee: crate::engine::ConfereeSpec::default(),
    }
}

/// Call Control MakeCall to `to` through the default trunk, nothing else asked.
pub fn make_call(to: &str) -> super::CallAction {
    super::CallAction::MakeCall(super::MakeCall {
        to: to.into(),
        from: None,
        display_name: None,
        trunk: None,
        conference: None,
    })
}

pub fn pcmu_sdp(port: u16) -> String {
    sdp_with(port, "sendrecv")
}

/// The same offer with another direction (`sendonly`: the peer puts us on hold).
pub fn sdp_with(port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=peer 2890844526 1 IN IP4 {PEER_MEDIA_IP}\r\ns=-\r\n\
         c=IN IP4 {PEER_MEDIA_IP}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
         a={direction}\r\n"
    )
}

fn route(pattern: &str, service: Service, answer_delay_ms: u64) -> Route {
    Route {
        user: regex::Regex::new(pattern).expect("test pattern compiles"),
        service,
        answer_delay_ms,
        srtp: None,
        prompt: None,
        dn: None,
        record: None,
        rtp_source: None,
        hairpin: false,
    }
}

/// The routes every harness has: `echo`, `ring` (echo after 2 s of ringing), `conf=<room>`,
/// `app` (offered to applications), `hello` (an announcement of `hello.wav`) and `rec` (echo,
/// recorded).
pub fn routes() -> Vec<Route> {
    vec![
        route("^echo$", Service::Echo, 0),
        route("^ring$", Service::Echo, 2000),
        route("^conf=(?P<conference>[^@;]+)$", Service::Conference, 0),
        route("^app$", Service::Application, 0),
        Route {
            prompt: Some("hello.wav".into()),
            ..route("^hello$", Service::Announcement, 0)
        },
        Route {
            record: Some(crate::store::RecordPolicy::Always),
            ..route("^rec$", Service::Echo, 0)
        },
    ]
}

/// The core, its simulated engine and the SIP wire, in virtual time.
pub struct Harness {
    pub core: Controller<Sim>,
    pub now: Now,
    events: broadcast::Receiver<Envelope>,
    /// Every event so far, as JSON.
    pub seen: Vec<Value>,
    cti: broadcast::Receiver<std::sync::Arc<super::cti::CtiEvent>>,
    /// Every CTI event so far, as JSON.
    pub cti_seen: Vec<Value>,
    /// SIP messages the core sent and the test has not taken yet.
    pub wire: Vec<(Peer, SipMessage)>,
    /// Where prompts and recordings live (removed with the harness).
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let media = MediaSettings {
            advertised_ip: None,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            default_codec: Codec::Pcmu,
            default_framesize: 20,
            reserve_timeout: Duration::from_secs(30),
            resources: super::ResourceLimits::default(),
            prompt_dir: dir.path().join("prompts"),
            recording_dir: dir.path().join("recordings"),
            allow_absolute_paths: false,
            decision_timeout: Duration::from_secs(90),
            ring_timeout: Duration::from_secs(60),
            trunks: vec![OutboundTrunk {
                name: "pbx".into(),
                destination: udp(TRUNK),
                domain: "127.0.0.3".into(),
                from_user: "callbridge".into(),
                credentials: None,
                srtp: None,
                codecs: None,
                record: crate::store::RecordPolicy::Off,
            }],
            node_id: 0,
            recording: super::RecordingSettings {
                dir: dir.path().join("calls"),
                format: crate::store::RecordingFormat::WavPcm16,
            },
        };
        let ua = UserAgent::new(
            UaSettings {
                user_agent: "callbridge-test".into(),
                timers: TimerValues::default(),
                routes: routes(),
                trust: crate::sip::trust::Trust::default(),
                capabilities: std::sync::Arc::new(LocalCapabilities::default()),
                tls_srtp: SrtpPolicy::Require,
            },
            7,
        );
        let mut sim = Sim::new();
        sim.prompts.insert(
            media.prompt_dir.join("hello.wav"),
            Audio {
                sample_rate: 8000,
                samples: vec![0; 800],
            },
        );
        // A fixed point in virtual time; only the test moves it.
        let now = Now {
            at: crate::control::shell::virtual_epoch(),
            unix_ms: 1_780_000_000_000,
        };
        let core = Controller::new(now, media, sim, ua);
        let events = core.event_sender().subscribe();
        let cti = core.cti_sender().subscribe();
        Harness {
            core,
            now,
            events,
            seen: Vec::new(),
            cti,
            cti_seen: Vec::new(),
            wire: Vec::new(),
            _dir: dir,
        }
    }

    /// Hands one input to the core, then delivers every engine event it causes.
    pub fn input(&mut self, input: Input) {
        self.core.handle(self.now, input);
        self.settle();
    }

    /// Delivers the simulated engine's events (and their consequences) until none is left.
    pub fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            self.collect();
            let Some(event) = self.core.engine.outbox.pop_front() else {
                return;
            };
            self.core.handle(self.now, Input::Media(event));
        }
        panic!("livelock: the engine's events never settle");
    }

    /// An engine event, as a worker would send it.
    pub fn engine_event(&mut self, event: EngineEvent) {
        self.input(Input::Media(event));
    }

    /// A Media Control action; its answer.
    pub fn action(&mut self, action: MediaAction) -> Result<ActionResult, ActionError> {
        let (tx, mut rx) = oneshot::channel();
        self.input(Input::Request(ControlRequest::Action(Box::new(action), tx)));
        rx.try_recv().expect("the action was answered")
    }

    /// A Call Control action; its answer.
    pub fn call_action(&mut self, action: CallAction) -> Result<ActionResult, ActionError> {
        let (tx, mut rx) = oneshot::channel();
        self.input(Input::Request(ControlRequest::Call(action, tx)));
        rx.try_recv().expect("the action was answered")
    }

    /// A CTI request with ReferenceID `reference`; its answer.
    pub fn cti_request(
        &mut self,
        request: super::CtiRequest,
        reference: u64,
    ) -> Result<Value, super::CtiError> {
        let (reply, mut rx) = oneshot::channel();
        self.input(Input::Request(ControlRequest::Cti {
            request,
            reference,
            reply,
        }));
        rx.try_recv().expect("the request was answered")
    }

    /// A CTI request whose answer may come later (a hold): where it will arrive.
    pub fn cti_request_later(
        &mut self,
        request: super::CtiRequest,
        reference: u64,
    ) -> oneshot::Receiver<Result<Value, super::CtiError>> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::Request(ControlRequest::Cti {
            request,
            reference,
            reply,
        }));
        rx
    }

    /// The CTI events since the last take, as (Event, ThisDN) pairs and in full.
    pub fn take_cti(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.cti_seen)
    }

    /// A request answered by a value (listings).
    pub fn list(&mut self, make: impl FnOnce(oneshot::Sender<Value>) -> ControlRequest) -> Value {
        let (tx, mut rx) = oneshot::channel();
        self.input(Input::Request(make(tx)));
        rx.try_recv().expect("the listing was answered")
    }

    /// A SIP message from `from`.
    pub fn sip_from(&mut self, from: &str, message: SipMessage) {
        self.input(Input::Sip(crate::sip::transport::Inbound {
            received: crate::sip::transport::Received::Message(message),
            source: udp(from),
            local: addr(LOCAL),
            arrived: self.now.at,
        }));
    }

    /// Moves virtual time on by `by`, firing every deadline on the way in order.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now.at + by;
        for _ in 0..MAX_ROUNDS {
            match self.core.poll_timeout() {
                Some(at) if at <= end => {
                    self.set_time(at.max(self.now.at));
                    self.input(Input::Timeout);
                }
                _ => {
                    self.set_time(end);
                    return;
                }
            }
        }
        panic!("livelock: timers keep firing without time passing");
    }

    fn set_time(&mut self, at: Instant) {
        let step = at.saturating_duration_since(self.now.at);
        self.now = Now {
            at,
            unix_ms: self.now.unix_ms + step.as_millis() as u64,
        };
    }

    /// Moves the core's transmits onto the wire and its events into `seen`.
    fn collect(&mut self) {
        while let Some((to, bytes)) = self.core.poll_transmit() {
            let message = parse(&bytes).expect("the core sends messages that parse");
            self.wire.push((to, message));
        }
        while let Ok(envelope) = self.events.try_recv() {
            self.seen
                .push(serde_json::to_value(&envelope).expect("events serialize"));
        }
        while let Ok(event) = self.cti.try_recv() {
            self.cti_seen
                .push(serde_json::to_value(&*event).expect("CTI events serialize"));
        }
    }

    /// The messages sent since the last take.
    pub fn take_wire(&mut self) -> Vec<SipMessage> {
        self.wire.drain(..).map(|(_, m)| m).collect()
    }

    /// The events named `name` so far.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|e| e["Event"] == name)
            .cloned()
            .collect()
    }

    /// The one event named `name` matching `matches`.
    pub fn one_event(&self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let found: Vec<Value> = self
            .events_named(name)
            .into_iter()
            .filter(|e| matches(e))
            .collect();
        assert_eq!(found.len(), 1, "one {name} expected: {:#?}", self.seen);
        found.into_iter().next().expect("one found")
    }

    /// Event names in order.
    pub fn event_names(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|e| e["Event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The end of every test: lets the SIP transactions finish (Timer J, K ...), then checks
    /// that nothing is left — connections, calls, conferences, operations, parties, timers
    /// (but the hourly sweep), owed events and ports.
    pub fn assert_no_leaks(&mut self) {
        self.advance(Duration::from_secs(64));
        let core = &self.core;
        assert!(
            core.connections.is_empty(),
            "connections left: {:?}",
            core.connections.keys()
        );
        assert!(core.closing.is_empty(), "releases not finished");
        assert_eq!(core.ua.call_count(), 0, "SIP calls left");
        assert_eq!(core.ua.transaction_count(), 0, "SIP transactions left");
        assert_eq!(core.ua.abandoned_count(), 0, "abandoned INVITEs left");
        assert!(core.conferences.is_empty(), "conferences left");
        assert!(core.rooms.is_empty(), "rooms left");
        assert!(core.call_connections.is_empty(), "call bindings left");
        assert!(core.call_info.is_empty(), "listed calls left");
        assert!(
            core.offered.is_empty() && core.placed.is_empty(),
            "calls waiting left"
        );
        assert!(
            core.app_calls.is_empty() && core.bridges.is_empty(),
            "call state left"
        );
        assert!(core.pending_records.is_empty(), "recordings waiting left");
        assert!(core.store_calls.is_empty(), "store calls left");
        assert!(
            core.agent_confs.is_empty()
                && core.agent_conf_of.is_empty()
                && core.agent_connection.is_empty()
                && core.agent_dialing.is_empty(),
            "agent conferences left"
        );
        assert!(
            core.tracked_recordings.is_empty(),
            "tracked recordings left"
        );
        assert!(core.transfer_targets.is_empty(), "transfers waiting left");
        assert!(
            core.transfer_replies.is_empty(),
            "BlindTransfers waiting left"
        );
        assert!(core.pending_holds.is_empty(), "holds waiting left");
        assert!(core.offer_parties.is_empty(), "offered parties left");
        assert_eq!(core.model.call_count(), 0, "party-model calls left");
        assert_eq!(core.model.party_count(), 0, "parties left");
        assert_eq!(core.events.owed(), 0, "events owed");
        // The idle-socket check may still be armed after the last close: it fires once and,
        // with no idle sockets left, is not armed again.
        let timers: Vec<Timer> = core
            .timers
            .armed()
            .map(|(_, t)| t)
            .filter(|t| *t != Timer::IdleSockets)
            .collect();
        assert_eq!(timers, [Timer::Sweep], "timers left");
        let sim = &core.engine;
        assert!(sim.connections.is_empty(), "engine connections left");
        assert!(sim.conferences.is_empty(), "engine conferences left");
        assert_eq!(sim.ports_in_use(), 0, "ports left");
        assert!(sim.plays.is_empty() && sim.recordings.is_empty() && sim.watches.is_empty());
        let resources = core.resources;
        assert_eq!(
            (
                resources.rtp.used,
                resources.enhanced_rtp.used,
                resources.conference.used
            ),
            (0, 0, 0),
            "resources left"
        );
    }
}

/// One SIP dialog as the peer sees it: it writes its requests as text and reads our answers.
pub struct PeerCall {
    pub user: String,
    pub call_id: String,
    from_tag: String,
    invite_branch: String,
    invite_cseq: u32,
    cseq: u32,
    /// Our tag, once learned from a response.
    pub to_tag: Option<String>,
    branches: u32,
    /// The P-Asserted-Identity to send, if any.
    pub asserted: Option<String>,
}

impl PeerCall {
    pub fn new(user: &str, name: &str) -> PeerCall {
        PeerCall {
            user: user.to_string(),
            call_id: format!("{name}@{PEER_MEDIA_IP}"),
            from_tag: format!("peer-{name}"),
            invite_branch: format!("z9hG4bK-{name}-1"),
            invite_cseq: 100,
            cseq: 100,
            to_tag: None,
            branches: 1,
            asserted: None,
        }
    }

    /// The same call from DN `dn` (its P-Asserted-Identity).
    pub fn with_dn(mut self, dn: &str) -> PeerCall {
        self.asserted = Some(dn.into());
        self
    }

    /// Whether `response` answers the peer's latest INVITE (its CSeq number).
    pub fn is_invite_answer(&self, response: &Response) -> bool {
        response.headers.cseq().is_ok_and(|c| {
            c.seq == self.invite_cseq && c.method == crate::sip::message::Method::Invite
        })
    }

    /// The ACK of a non-2xx final response to the INVITE: its transaction, its To tag.
    pub fn ack_failure(&mut self, response: &Response) -> SipMessage {
        self.learn(response);
        sip(&self.text("ACK", &self.invite_branch, self.invite_cseq, "", None))
    }

    fn fresh_branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK-{}-{}", self.from_tag, self.branches)
    }

    pub fn text(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        extra_headers: &str,
        body: Option<&str>,
    ) -> String {
        let to_tag = match (&self.to_tag, method) {
            (Some(t), m) if m != "CANCEL" || cseq != self.invite_cseq => format!(";tag={t}"),
            _ => String::new(),
        };
        let to_tag = if method == "INVITE" && cseq == 100 {
            String::new()
        } else {
            to_tag
        };
        let (content_type, body) = match body {
            Some(body) => ("Content-Type: application/sdp\r\n".to_string(), body),
            None => (String::new(), ""),
        };
        let asserted = self
            .asserted
            .as_ref()
            .map(|a| format!("P-Asserted-Identity: <sip:{a}@127.0.0.2>\r\n"))
            .unwrap_or_default();
        format!(
            "{method} sip:{user}@{LOCAL} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {PEER};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:5551001@127.0.0.2>;tag={from_tag}\r\n\
             To: <sip:{user}@{LOCAL}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:5551001@{PEER}>\r\n\
             {asserted}{extra_headers}{content_type}Content-Length: {length}\r\n\r\n{body}",
            user = self.user,
            from_tag = self.from_tag,
            call_id = self.call_id,
            length = body.len(),
        )
    }

    pub fn invite(&self, sdp: Option<&str>, extra_headers: &str) -> SipMessage {
        sip(&self.text(
            "INVITE",
            &self.invite_branch,
            self.invite_cseq,
            extra_headers,
            sdp,
        ))
    }

    /// Learns our tag from a response to the INVITE.
    pub fn learn(&mut self, response: &Response) {
        if let Some(tag) = to_tag(response) {
            self.to_tag = Some(tag);
        }
    }

    pub fn ack(&mut self) -> SipMessage {
        self.ack_with(None)
    }

    /// The ACK of a 2xx, carrying `sdp` (the answer to an offer in the 2xx of an INVITE that
    /// had none).
    pub fn ack_with(&mut self, sdp: Option<&str>) -> SipMessage {
        let branch = self.fresh_branch();
        sip(&self.text("ACK", &branch, self.invite_cseq, "", sdp))
    }

    /// The PRACK of the reliable provisional response `rseq` to the INVITE (RFC 3262).
    pub fn prack(&mut self, rseq: u32) -> SipMessage {
        let rack = format!("RAck: {rseq} {} INVITE\r\n", self.invite_cseq);
        self.in_dialog("PRACK", &rack)
    }

    pub fn cancel(&self) -> SipMessage {
        sip(&self.text("CANCEL", &self.invite_branch, self.invite_cseq, "", None))
    }

    /// A request in the dialog with the next CSeq number.
    pub fn in_dialog(&mut self, method: &str, extra_headers: &str) -> SipMessage {
        self.cseq += 1;
        let branch = self.fresh_branch();
        sip(&self.text(method, &branch, self.cseq, extra_headers, None))
    }

    /// An UPDATE with `sdp` (RFC 3311: a new offer in the dialog, no ACK).
    pub fn update(&mut self, sdp: &str) -> SipMessage {
        self.cseq += 1;
        let branch = self.fresh_branch();
        sip(&self.text("UPDATE", &branch, self.cseq, "", Some(sdp)))
    }

    /// A re-INVITE with `sdp`.
    pub fn reinvite(&mut self, sdp: &str) -> SipMessage {
        self.reinvite_with(Some(sdp))
    }

    /// A re-INVITE with `sdp`, or with none (asking for our offer, RFC 3261 §14.1).
    pub fn reinvite_with(&mut self, sdp: Option<&str>) -> SipMessage {
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        self.invite_branch = self.fresh_branch();
        sip(&self.text("INVITE", &self.invite_branch, self.cseq, "", sdp))
    }
}

pub fn to_tag(response: &Response) -> Option<String> {
    let to = response.headers.get("To")?;
    to.split(';')
        .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_string))
}

/// The responses among `messages`, as (status, CSeq method).
pub fn statuses(messages: &[SipMessage]) -> Vec<(u16, String)> {
    messages
        .iter()
        .filter_map(|m| match m {
            SipMessage::Response(r) => Some((
                r.status,
                r.headers
                    .get("CSeq")
                    .and_then(|c| c.split_whitespace().nth(1))
                    .unwrap_or_default()
                    .to_string(),
            )),
            SipMessage::Request(_) => None,
        })
        .collect()
}

/// The requests among `messages`.
pub fn requests(messages: &[SipMessage]) -> Vec<&Request> {
    messages
        .iter()
        .filter_map(|m| match m {
            SipMessage::Request(r) => Some(r),
            SipMessage::Response(_) => None,
        })
        .collect()
}

/// The response with `status` among `messages`.
pub fn response(messages: &[SipMessage], status: u16) -> Response {
    messages
        .iter()
        .find_map(|m| match m {
            SipMessage::Response(r) if r.status == status => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {status} among {messages:#?}"))
}
