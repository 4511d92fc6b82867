//! The control plane: the one owner of calls, parties, connections and conferences.
//!
//! Owns: the registry, the party call model ([`party`]), the Media Control and Call Control
//! semantics (result codes, the DeleteConnection modes, reservation expiry) and the single
//! release path that the API's DeleteConnection, every dialog end (BYE, CANCEL, ACK timeout,
//! INVITE failure, session expiry), RTP timeouts and shutdown all go through.
//! Must not: touch sockets, files or the clock. It is split as quinn is:
//! - the **core** ([`Controller`], `core.rs` and the files beside it) is sans-IO: it takes
//!   `handle(now, input)` — an API request, a SIP message for the UA, an engine event, a
//!   timeout — and leaves outputs to poll (SIP datagrams to send) and one next deadline
//!   ([`timers`]). It reaches the media engine and the media files through one seam,
//!   [`backend::Backend`], whose answers (a port, a queue full) decide result codes.
//! - the **shell** (`shell.rs`) is the tokio task: it reads the clock once per turn, moves the
//!   API's requests, the transport's messages and the engine's events in, and sends what the
//!   core outputs. The tests replace the shell with a virtual-time harness (`harness.rs`).
//!
//! The path of a BYE, from the socket to the released port:
//! 1. `sip::transport` reads the datagram (or stream frame) and queues an `Inbound`;
//! 2. the shell hands it to [`Controller::handle`] as `Input::Sip`, which gives it to
//!    `sip::ua::UserAgent::handle_message`: the transaction layer makes a server transaction,
//!    the UA matches the dialog, answers 200 and ends the call (`UaOutput::CallEnded`);
//! 3. the core drains the UA (`sip_calls.rs`, `on_ua_output`): the call's connection takes the
//!    one release path, `release_connection` (`connections.rs`): out of its conference (which
//!    goes with its last member), operations stopped (`autostop`), the party released in the
//!    call model, resources given back, `Backend::close_connection`;
//! 4. the engine's worker drops the connection's sockets and its ports go back to the pool
//!    (`engine::pool`); its `EngineEvent::Closed { stats }` comes back through the shell and
//!    the core emits `ConnectionReleased` with those final statistics.

#[cfg(test)]
mod agent_check;
mod agent_conf;
#[cfg(test)]
mod agent_conf_tests;
pub mod backend;
mod call_control;
mod conference;
mod connections;
mod consult;
mod core;
pub mod cti;
mod cti_requests;
pub mod events;
#[cfg(test)]
mod harness;
mod media_ops;
pub mod operations;
mod outbound;
pub mod party;
#[cfg(test)]
mod random_tests;
mod recording;
#[cfg(test)]
mod recording_tests;
pub mod result;
mod shell;
mod sip_calls;
#[cfg(test)]
mod sip_check;
#[cfg(test)]
mod surface_check;
#[cfg(test)]
mod tests;
pub mod timers;

pub use agent_conf::AgentConfRequest;
pub use backend::files::sweep_recordings;
pub use backend::{Backend, Host, MediaHealth};
pub use call_control::{CallAction, ConferenceChoice};
pub use conference::{AttributeChange, Completion, Pool, ResourceLimits, Resources};
pub use connections::{
    allocate_in, codec_name, engine_error, node_of, retarget, success, unknown_connection,
    with_node,
};
pub use core::{Controller, Input, Now};
pub use cti_requests::{codes as cti_codes, CtiError, CtiRequest};
pub use media_ops::{
    Adjustment, Level, PlayRequest, RecordRequest, Target, ToneRequest, MAX_PROMPTS,
};
pub use outbound::MakeCall;
pub use recording::{RecordingFileRecovery, RecordingSettings};
pub use shell::{handle_for, run, unix_ms, AgentEventSink};

/// How often expired recordings are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// After a connection's end, when to close the sockets it may have left bound for a next
/// connection: the engine's idle limit (`engine::pool::IDLE_MAX`).
const IDLE_SOCKETS_CHECK: Duration = crate::engine::IDLE_SOCKETS_MAX;

/// Where an action's answer goes.
type Reply = oneshot::Sender<Result<ActionResult, ActionError>>;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use self::core::{CallInfo, Connection, ConnectionState};
use crate::engine::ConfereeSpec;
use crate::sdp::Codec;
use crate::sip::routing::{OutboundTrunk, Route};
use connections::{api_format, media_spec};
use events::{Envelope, Event, ReleaseReason};
use party::Actor;
use result::{ActionError, ResultCode};

/// Connection and conference ids are 24-bit below the top byte, which names the media server
/// (MmsId, `[app] node_id`; reference §2).
const MAX_CONNECTION_ID: u32 = 0x00FF_FFFF;

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

impl MediaAction {
    /// The action's API name.
    pub fn name(&self) -> &'static str {
        match self {
            MediaAction::Reserve { .. } => "ReserveConnection",
            MediaAction::Create { .. } => "CreateConnection",
            MediaAction::Modify { .. } => "ModifyConnection",
            MediaAction::Delete { .. } => "DeleteConnection",
            MediaAction::CreateConference { .. } => "CreateConference",
            MediaAction::JoinConference { .. } => "JoinConference",
            MediaAction::LeaveConference { .. } => "LeaveConference",
            MediaAction::SetConfereeAttribute { .. } => "SetConfereeAttribute",
            MediaAction::Play(_) => "Play",
            MediaAction::PlayTone { .. } => "PlayTone",
            MediaAction::GatherDigits { .. } => "GatherDigits",
            MediaAction::SendDigits { .. } => "SendDigits",
            MediaAction::StopMediaOperation { .. } => "StopMediaOperation",
            MediaAction::Record(_) => "Record",
            MediaAction::DetectEnergy { silence: true, .. } => "DetectSilence",
            MediaAction::DetectEnergy { silence: false, .. } => "DetectNonSilence",
            MediaAction::AdjustPlay { .. } => "AdjustPlay",
        }
    }
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
    /// Shrink the tables a burst of calls grew (they keep their peak capacity otherwise).
    ShrinkIdle(oneshot::Sender<()>),
    /// New inbound routes from a configuration reload.
    ReloadRoutes(
        Vec<Route>,
        crate::sip::trust::Trust,
        Vec<OutboundTrunk>,
        oneshot::Sender<()>,
    ),
    /// A CTI request; the answer is the event to send (`EventACK`, `EventPartyInfo`, ...).
    Cti {
        request: CtiRequest,
        reference: u64,
        reply: oneshot::Sender<Result<Value, CtiError>>,
    },
    /// The recording API's MuteRecording: silence in these channels of the recording of the
    /// call with this callID (NONE unmutes).
    MuteRecording {
        call_id: String,
        channels: crate::store::MuteChannels,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// An agent gateway request of a signed-in agent (on its phone): the `result` to answer
    /// with, or the vendor's retcode.
    AgentConf {
        agent: crate::agent_gateway::AgentId,
        phone: crate::agent_gateway::PhoneNumber,
        request: AgentConfRequest,
        reply: oneshot::Sender<Result<Value, crate::agent_gateway::GatewayError>>,
    },
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
    /// Ports of ended connections kept bound for the next ones (two per pair).
    pub ports_idle: usize,
    pub ports_total: usize,
    pub calls_total: u64,
    /// Calls answered (2xx to an INVITE, in or out), ever.
    pub calls_answered_total: u64,
    pub releases_by_reason: BTreeMap<String, u64>,
    /// Media workers whose loop has not turned for a second (the watchdog's check).
    pub stalled_workers: usize,
    pub sip: crate::sip::ua::SipCounters,
    /// RTP packets received/sent, over every connection ever (released ones included).
    pub rtp_packets_received: u64,
    pub rtp_packets_sent: u64,
    pub engine_events_dropped: u64,
    /// Recording frames the recorder's full queue refused.
    pub recorder_frames_dropped: u64,
    /// RFC 3550 loss summed over live connections, and the worst jitter among them.
    pub rtp_packets_lost: i64,
    pub rtp_jitter_ms_max: f64,
    /// Packets dropped by the jitter buffers of live connections because their frame had
    /// already been played.
    pub rtp_packets_late: u64,
    /// Frames the jitter buffers of live connections skipped to bring their delay down.
    pub rtp_frames_shrunk: u64,
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
    /// Calls and parties of the party call model.
    pub call_model_calls: usize,
    pub call_model_parties: usize,
    /// Call recordings (and Record files) being written.
    pub recordings_in_progress: usize,
    /// Recordings that stopped before their call ended (a full disk, a file not created).
    pub recording_failures: u64,
}

/// The API's handle on the control plane.
#[derive(Clone)]
pub struct ControlHandle {
    requests: mpsc::Sender<ControlRequest>,
    events: broadcast::Sender<Envelope>,
    cti: broadcast::Sender<std::sync::Arc<cti::CtiEvent>>,
}

impl ControlHandle {
    pub fn new(
        requests: mpsc::Sender<ControlRequest>,
        events: broadcast::Sender<Envelope>,
        cti: broadcast::Sender<std::sync::Arc<cti::CtiEvent>>,
    ) -> ControlHandle {
        ControlHandle {
            requests,
            events,
            cti,
        }
    }

    /// The CTI stream (T-Library events for every DN; a client filters by registration).
    pub fn subscribe_cti(&self) -> broadcast::Receiver<std::sync::Arc<cti::CtiEvent>> {
        self.cti.subscribe()
    }

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

/// Media settings the control plane applies to every connection.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub advertised_ip: Option<IpAddr>,
    pub bind_ip: IpAddr,
    pub default_codec: Codec,
    pub default_framesize: u32,
    pub reserve_timeout: Duration,
    pub resources: ResourceLimits,
    pub prompt_dir: std::path::PathBuf,
    pub recording_dir: std::path::PathBuf,
    pub allow_absolute_paths: bool,
    /// How long an `application` call waits for the application's decision.
    pub decision_timeout: Duration,
    /// How long a call we place may ring.
    pub ring_timeout: Duration,
    /// Trunks calls can be placed through (MakeCall, transfers); the first is the default.
    pub trunks: Vec<OutboundTrunk>,
    /// How calls are recorded (`[recording]`).
    pub recording: RecordingSettings,
    /// This node's id (`[app] node_id`): the MmsId of every result and event, and the top byte
    /// of every connection and conference id. 0 is a single server.
    pub node_id: u8,
}
