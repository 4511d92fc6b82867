//! The media engine: worker threads that own RTP/RTCP sockets and move the media of each
//! connection.
//!
//! Owns: the RTP port pool, binding and tuning each connection's RTP/RTCP socket pair, the
//! `media-<n>` worker threads, and the registry that maps a control-plane connection id to the
//! worker that carries it.
//! Must not: speak SIP or SDP, run on (or block) the tokio runtime, take a lock on the packet
//! path, or make a worker wait for the control plane: workers report back with `try_send` and
//! count what they could not deliver.
//!
//! Threading: the control plane calls [`Engine`] from any thread. Sockets are bound here, so "port
//! in use" is reported synchronously, then moved into one worker through that worker's bounded
//! command queue plus a `mio::Waker`. From then on the worker is the only owner of the sockets and
//! of the connection state; the control plane sees the connection through [`Engine::stats`]
//! (atomics the worker publishes) and through [`EngineEvent`]s. A port pair goes back to the pool
//! only after its worker has dropped the sockets.
//!
//! The end of a BYE's path (see `control` for the start): the control core's one release path
//! calls [`Engine::close_connection`] → the connection's worker gets `WorkerCommand::Close`,
//! takes the connection out of its conference, stops its recording, deregisters and drops the
//! sockets, gives the RTP/RTCP port pair back to the pool (`PortPool`, through the port-return
//! queue) and sends [`EngineEvent::Closed`] with the final statistics, which the control plane
//! puts in `ConnectionReleased`.

mod pool;
mod recorder;
mod recording;
mod recv_ring;
mod send_ring;
mod socket;
mod stats;
pub mod tuning;
pub use stats::{TickLatenessSnapshot, TICK_LATENESS_BOUNDS_US};
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc::Sender;

use crate::media::dtmf::{self, DtmfError};
use pool::{IdleSockets, Pair, PortPool};
use socket::{MediaSockets, SocketTuning};
use stats::SharedStats;
use worker::{NewConnection, WorkerCommand, WorkerContext, WorkerHandle};

pub use crate::mixer::ParticipantFlags;

/// How long an ended connection's sockets stay bound, unused, for a next connection before
/// they are closed.
pub const IDLE_SOCKETS_MAX: std::time::Duration = pool::IDLE_MAX;

/// How many pairs `open_connection` tries to bind before giving up with `NoPortsAvailable`;
/// pairs held by other processes are skipped, but a crowded host must not stall the control plane.
const MAX_BIND_ATTEMPTS: usize = 16;

/// Engine settings, normally from the `[media]` section of the configuration file.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of media worker threads; 0 means one per core.
    pub workers: usize,
    /// Address every RTP/RTCP socket binds to.
    pub bind_ip: IpAddr,
    /// Lowest RTP port (rounded up to even).
    pub rtp_port_min: u16,
    /// Highest port of the range; the last pair's RTCP port must not exceed it.
    pub rtp_port_max: u16,
    /// IPv4 TOS / IPv6 traffic class on media sockets; 0xB8 is DSCP EF. A refusal is logged and
    /// the socket is used anyway.
    pub dscp_tos: u8,
    /// SO_RCVBUF for each media socket; 0 leaves the kernel default.
    pub recv_buffer: usize,
    /// SO_SNDBUF for each media socket; 0 leaves the kernel default.
    pub send_buffer: usize,
    /// Media-session settings every connection gets.
    pub session: SessionDefaults,
    /// SO_PRIORITY on media sockets; None leaves the default.
    pub socket_priority: Option<u32>,
    /// Worker threads: pinning, SCHED_FIFO, busy polling (socket, epoll and spin).
    pub threads: tuning::ThreadTuning,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 0,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            rtp_port_min: 10_000,
            rtp_port_max: 20_000,
            dscp_tos: 0xB8,
            recv_buffer: 0,
            send_buffer: 0,
            session: SessionDefaults::default(),
            socket_priority: None,
            threads: tuning::ThreadTuning::default(),
        }
    }
}

/// Media-session settings every connection gets (from `[media]`).
#[derive(Debug, Clone, Copy)]
pub struct SessionDefaults {
    /// Where connections accept RTP from unless their [`MediaSpec::source`] says otherwise.
    pub rtp_source: RtpSource,
    /// No RTP for this long → [`EngineEvent::RtpTimeout`]; None disables.
    pub rtp_timeout: Option<std::time::Duration>,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
    pub rtcp_interval: std::time::Duration,
    /// Detect DTMF tones in decoded G.711/G.722 audio too.
    pub inband_dtmf: bool,
    /// Below this mean power (dBFS, per 10 ms) audio counts as silence (DetectSilence,
    /// TermCondSilence).
    pub silence_threshold_dbfs: f64,
}

impl Default for SessionDefaults {
    fn default() -> Self {
        SessionDefaults {
            rtp_source: RtpSource::Learn,
            rtp_timeout: None,
            jitter_min_ms: 20,
            jitter_max_ms: 200,
            rtcp_interval: std::time::Duration::from_secs(5),
            inband_dtmf: false,
            silence_threshold_dbfs: crate::media::energy::DEFAULT_THRESHOLD_DBFS,
        }
    }
}

/// The control plane's connection id.
pub type ConnectionKey = u64;

/// The control plane's conference id.
pub type ConferenceKey = u64;

pub use crate::mixer::conference::{ConfereeSpec, ConferenceSpec};

pub use crate::media::session::{RtpSource, SessionMode as MediaMode, SrtpKeys, StreamFormat};

/// What a connection's media session does and with whom.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSpec {
    pub mode: MediaMode,
    /// The negotiated stream; None until known (counts packets, decodes nothing).
    pub format: Option<StreamFormat>,
    pub remote_rtp: Option<SocketAddr>,
    pub remote_rtcp: Option<SocketAddr>,
    pub srtp: Option<SrtpKeys>,
    /// The peer is expected to send RTP (false on hold: sendonly/inactive from our side, or no
    /// address): the RTP-inactivity timeout applies only when true.
    pub expects_rtp: bool,
    /// Where RTP is accepted from (a route's `rtp_source`); None: [`SessionDefaults::rtp_source`].
    pub source: Option<RtpSource>,
}

impl MediaSpec {
    /// Receive and count only, from `remote_rtp` (API connections without work yet).
    pub fn idle(remote_rtp: Option<SocketAddr>) -> MediaSpec {
        MediaSpec {
            mode: MediaMode::Idle,
            format: None,
            remote_rtp,
            remote_rtcp: remote_rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))),
            srtp: None,
            expects_rtp: false,
            source: None,
        }
    }
}

/// A request to open a media connection.
#[derive(Debug, Clone)]
pub struct OpenConnection {
    /// The control plane's id for the connection; must not be open already.
    pub key: ConnectionKey,
    pub media: MediaSpec,
}

/// Where an opened connection receives media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaEndpoint {
    /// Local bound RTP address; RTCP is on port + 1.
    pub rtp: SocketAddr,
    /// Index of the worker that carries the connection.
    pub worker: usize,
}

/// Counters of one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    /// RTP packets received that looked like RTP.
    pub rtp_packets_received: u64,
    /// Bytes of those packets (UDP payload).
    pub rtp_bytes_received: u64,
    /// RTP packets sent (echoed) successfully.
    pub rtp_packets_sent: u64,
    /// Bytes of those packets.
    pub rtp_bytes_sent: u64,
    /// RTCP packets received, on the RTCP port or multiplexed on the RTP port.
    pub rtcp_packets_received: u64,
    /// Source address of the latest valid RTP packet.
    pub last_source: Option<SocketAddr>,
    /// Packets dropped because they did not look like RTP/RTCP.
    pub malformed_packets: u64,
    /// RTCP reports sent.
    pub rtcp_packets_sent: u64,
    /// Packets from a source other than the negotiated/latched one.
    pub foreign_source_dropped: u64,
    /// SRTP authentication/replay failures.
    pub srtp_rejected: u64,
    /// RFC 3550 cumulative loss of the received stream.
    pub packets_lost: i64,
    /// Frames the jitter buffer concealed.
    pub concealed_frames: u64,
    /// Late packets the jitter buffer discarded.
    pub late_packets: u64,
    /// Frames the jitter buffer skipped to bring its delay back down after it grew (in silence
    /// where it can; a frame of speech when a whole second stayed two frames above target).
    pub shrunk_frames: u64,
    /// The playout delay the jitter buffer aims at now, ms (what the network's jitter and the
    /// late packets of the last seconds asked for): how long received audio waits.
    pub playout_delay_ms: u32,
    /// RFC 3550 interarrival jitter of the received stream, ms.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, ms (0 until measured).
    pub rtt_ms: f64,
    /// RFC 4733 digits received.
    pub digits_received: u64,
    /// RFC 4733 digits sent ([`Engine::send_digits`]), counted as each one starts.
    pub digits_sent: u64,
}

/// What the workers report to the control plane.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The connection's sockets are closed and its ports are back in the pool.
    Closed {
        key: ConnectionKey,
        stats: MediaStats,
    },
    /// First RTP packet seen on the connection (source address), once per connection.
    FirstPacket {
        key: ConnectionKey,
        source: SocketAddr,
    },
    /// NAT latching chose this source.
    Latched {
        key: ConnectionKey,
        source: SocketAddr,
    },
    /// An RFC 4733 digit arrived.
    Digit {
        key: ConnectionKey,
        digit: char,
        duration_ms: u32,
    },
    /// No RTP for the configured time.
    RtpTimeout { key: ConnectionKey },
    /// A recording's file is finished (`error`: what went wrong, the file holds what was
    /// written before): `samples` per channel, at the file's rate.
    RecordingDone {
        key: ConnectionKey,
        operation: u64,
        samples: u64,
        error: Option<String>,
    },
    /// Writing a recording failed (a full disk): it records nothing more; the file holds what
    /// was written before, and [`EngineEvent::RecordingDone`] still follows its stop.
    RecordingFailed {
        key: ConnectionKey,
        operation: u64,
        error: String,
    },
    /// The silence (or non-silence) `operation` waited for has lasted its time.
    Energy {
        key: ConnectionKey,
        operation: u64,
        silence: bool,
    },
    /// The prompt or tone of `operation` played to its end.
    PlayoutDone { key: ConnectionKey, operation: u64 },
    /// A conferee started (`talking`) or stopped talking (rate-limited by the mixer).
    Talker {
        conference: ConferenceKey,
        key: ConnectionKey,
        talking: bool,
    },
}

/// Why an engine call failed.
#[derive(Debug)]
pub enum EngineError {
    /// Every port pair is allocated or held by another process.
    NoPortsAvailable,
    /// Binding a media socket failed for a reason other than the port being taken.
    Bind(std::io::Error),
    /// The worker thread that carries the connection has stopped.
    WorkerGone,
    /// The worker's command queue is full; the control plane may retry.
    QueueFull,
    /// No open connection has this key.
    UnknownConnection,
    /// No conference has this key.
    UnknownConference,
    /// A conference with this key exists already.
    DuplicateConference,
    /// A connection with this key is already open.
    DuplicateConnection,
    /// Digits to send, but the connection's peer did not negotiate RFC 4733 telephone-event
    /// (or no media format is known yet).
    NoTelephoneEvent,
    /// Digits that cannot be sent (an invalid character, or more than a connection queues);
    /// nothing was sent.
    InvalidDigits(DtmfError),
    /// The configuration cannot work (message says why).
    InvalidConfig(String),
    /// A worker thread or its poller could not be created.
    WorkerStart(std::io::Error),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::NoPortsAvailable => write!(f, "no RTP port pair available"),
            EngineError::Bind(error) => write!(f, "cannot bind media socket: {error}"),
            EngineError::WorkerGone => write!(f, "media worker has stopped"),
            EngineError::QueueFull => write!(f, "media worker command queue is full"),
            EngineError::UnknownConnection => write!(f, "unknown media connection"),
            EngineError::UnknownConference => write!(f, "unknown conference"),
            EngineError::DuplicateConference => write!(f, "conference already exists"),
            EngineError::DuplicateConnection => write!(f, "media connection already open"),
            EngineError::NoTelephoneEvent => write!(
                f,
                "the connection's peer did not negotiate RFC 4733 telephone-event"
            ),
            EngineError::InvalidDigits(error) => write!(f, "{error}"),
            EngineError::InvalidConfig(reason) => {
                write!(f, "invalid media configuration: {reason}")
            }
            EngineError::WorkerStart(error) => write!(f, "cannot start media worker: {error}"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Bind(error) | EngineError::WorkerStart(error) => Some(error),
            EngineError::InvalidDigits(error) => Some(error),
            _ => None,
        }
    }
}

/// Handle to the running media engine, held by the control plane (`Send + Sync`).
pub struct Engine {
    /// One handle per `media-<n>` worker, indexed by worker number.
    workers: Vec<WorkerHandle>,
    /// Free RTP port pairs; only the control plane locks it (allocate, release, counting).
    ports: Mutex<PortPool>,
    /// Open connections by key, and how many each worker carries.
    registry: Mutex<Registry>,
    /// Address every media socket binds to.
    bind_ip: IpAddr,
    /// Options applied to every media socket.
    tuning: SocketTuning,
    /// Set once to make every worker close its connections and exit.
    stop: Arc<AtomicBool>,
    /// Events the workers dropped because the event queue was full.
    events_dropped: Arc<AtomicU64>,
    /// Recording frames a full recorder queue refused.
    recorder_dropped: Arc<AtomicU64>,
    /// Per worker: milliseconds since `epoch` at its last loop turn.
    heartbeats: Vec<Arc<AtomicU64>>,
    /// Per worker: how late its session deadlines run.
    tick_lateness: Vec<Arc<stats::TickLateness>>,
    /// Datagrams all workers sent through io_uring (`io_uring_send`).
    uring_sends: Arc<AtomicU64>,
    /// Datagrams all workers received through io_uring (`io_uring_receive`).
    uring_receives: Arc<AtomicU64>,
    /// Ring receives that found every buffer in use, over all workers.
    receive_buffers_exhausted: Arc<AtomicU64>,
    /// Conference frames sent to a talker from its worker's one encode of silence.
    silence_shares: Arc<AtomicU64>,
    epoch: std::time::Instant,
    /// The recorder thread's queue (None once stopping) and the thread.
    recorder: Option<std::sync::mpsc::SyncSender<recorder::RecorderCommand>>,
    recorder_thread: Option<std::thread::JoinHandle<()>>,
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`); None if it cannot be read.
pub fn soft_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}

/// The reading of a clock (`CLOCK_PROCESS_CPUTIME_ID`, a thread's CPU clock, ...), or `None`
/// when the kernel refuses it (a thread that has ended).
pub fn clock_time(clock: libc::clockid_t) -> Option<std::time::Duration> {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid timespec to write; an invalid clock is an error return.
    if unsafe { libc::clock_gettime(clock, &mut time) } != 0 {
        return None;
    }
    Some(std::time::Duration::new(
        u64::try_from(time.tv_sec).ok()?,
        u32::try_from(time.tv_nsec).ok()?,
    ))
}

impl Engine {
    /// Validates the configuration and starts the worker threads; events go to `events`.
    pub fn start(config: EngineConfig, events: Sender<EngineEvent>) -> Result<Engine, EngineError> {
        let ports = PortPool::new(
            config.rtp_port_min,
            config.rtp_port_max,
            IdleSockets::from_file_limit(),
        )?;
        let worker_count = resolve_worker_count(config.workers);
        let port_return = ports.port_return();
        let (recorder_queue, recorder_inbox) = recorder::channel();
        let recorder_thread =
            recorder::spawn(recorder_inbox, events.clone()).map_err(EngineError::WorkerStart)?;
        let mut engine = Engine {
            workers: Vec::with_capacity(worker_count),
            ports: Mutex::new(ports),
            registry: Mutex::new(Registry::new(worker_count)),
            bind_ip: config.bind_ip,
            tuning: SocketTuning {
                dscp_tos: config.dscp_tos,
                recv_buffer: config.recv_buffer,
                send_buffer: config.send_buffer,
                priority: config.socket_priority,
                busy_poll_us: config.threads.busy_poll_us,
                busy_poll_budget: config.threads.busy_poll_budget,
            },
            stop: Arc::new(AtomicBool::new(false)),
            events_dropped: Arc::new(AtomicU64::new(0)),
            recorder_dropped: Arc::new(AtomicU64::new(0)),
            heartbeats: Vec::with_capacity(worker_count),
            tick_lateness: Vec::with_capacity(worker_count),
            uring_sends: Arc::new(AtomicU64::new(0)),
            uring_receives: Arc::new(AtomicU64::new(0)),
            silence_shares: Arc::new(AtomicU64::new(0)),
            receive_buffers_exhausted: Arc::new(AtomicU64::new(0)),
            epoch: std::time::Instant::now(),
            recorder: Some(recorder_queue.clone()),
            recorder_thread: Some(recorder_thread),
        };
        let prepared = (0..worker_count)
            .map(worker::prepare)
            .collect::<Result<Vec<_>, _>>()
            .map_err(EngineError::WorkerStart)?;
        let peers: Vec<worker::Peer> = prepared.iter().map(worker::Prepared::peer).collect();
        for (index, prepared) in prepared.into_iter().enumerate() {
            let context = WorkerContext {
                events: events.clone(),
                events_dropped: Arc::clone(&engine.events_dropped),
                recorder_dropped: Arc::clone(&engine.recorder_dropped),
                port_return: port_return.clone(),
                stop: Arc::clone(&engine.stop),
                defaults: config.session,
                threads: config.threads,
                heartbeat: Arc::new(AtomicU64::new(0)),
                tick_lateness: Arc::default(),
                epoch: engine.epoch,
                tick_epoch: worker::staggered_tick_epoch(engine.epoch, index, worker_count),
                recorder: recorder_queue.clone(),
                uring_sends: Arc::clone(&engine.uring_sends),
                uring_receives: Arc::clone(&engine.uring_receives),
                receive_buffers_exhausted: Arc::clone(&engine.receive_buffers_exhausted),
                silence_shares: Arc::clone(&engine.silence_shares),
            };
            engine.heartbeats.push(Arc::clone(&context.heartbeat));
            engine
                .tick_lateness
                .push(Arc::clone(&context.tick_lateness));
            // On error, dropping `engine` stops the workers already started.
            let handle = prepared
                .spawn(context, peers.clone())
                .map_err(EngineError::WorkerStart)?;
            engine.workers.push(handle);
        }
        tracing::info!(
            workers = worker_count,
            bind_ip = %config.bind_ip,
            ports = engine.ports_total(),
            "media engine started"
        );
        Ok(engine)
    }

    /// Allocates an even RTP port (and port+1 for RTCP) from the pool, binds both UDP sockets
    /// (non-blocking, tuned), hands them to the least-loaded worker and returns the local address.
    /// On any failure nothing stays allocated.
    pub fn open_connection(&self, request: OpenConnection) -> Result<MediaEndpoint, EngineError> {
        // Held throughout so a concurrent open of the same key cannot slip in.
        let mut registry = lock(&self.registry);
        if registry.connections.contains_key(&request.key) {
            return Err(EngineError::DuplicateConnection);
        }
        let (rtp_port, sockets) = self.bind_free_pair()?;
        let local_rtp = sockets.local_rtp;
        let worker = registry.least_loaded_worker();
        let stats = Arc::new(SharedStats::default());
        let mode = request.media.mode;
        let telephone_event = has_telephone_event(&request.media);
        let command = WorkerCommand::Open(Box::new(NewConnection {
            key: request.key,
            media: request.media,
            rtp_port,
            sockets,
            stats: Arc::clone(&stats),
        }));
        if let Err(error) = self.workers[worker].submit(command) {
            // The rejected command, and with it both sockets, is already dropped.
            lock(&self.ports).release(rtp_port);
            return Err(error);
        }
        registry.insert(
            request.key,
            ConnectionEntry {
                worker,
                stats,
                telephone_event,
            },
        );
        tracing::debug!(
            key = request.key,
            worker,
            rtp = %local_rtp,
            ?mode,
            "media connection opened"
        );
        Ok(MediaEndpoint {
            rtp: local_rtp,
            worker,
        })
    }

    /// Changes the remote address / mode of a live connection (ModifyConnection, CreateConnection
    /// on a reserved connection).
    pub fn update_connection(
        &self,
        key: ConnectionKey,
        media: MediaSpec,
    ) -> Result<(), EngineError> {
        let mut registry = lock(&self.registry);
        let entry = registry
            .connections
            .get_mut(&key)
            .ok_or(EngineError::UnknownConnection)?;
        let telephone_event = has_telephone_event(&media);
        self.workers[entry.worker].submit(WorkerCommand::Update {
            key,
            media: Box::new(media),
        })?;
        // Commands run in order on the worker: later digits meet the session built from this.
        entry.telephone_event = telephone_event;
        Ok(())
    }

    /// Closes the connection on its worker; ports return to the pool when the worker has dropped
    /// the sockets; an [`EngineEvent::Closed`] with final stats follows.
    pub fn close_connection(&self, key: ConnectionKey) -> Result<(), EngineError> {
        let mut registry = lock(&self.registry);
        let worker = registry
            .connections
            .get(&key)
            .ok_or(EngineError::UnknownConnection)?
            .worker;
        // Forget the connection only once the worker has the command, so QueueFull can be retried.
        self.workers[worker].submit(WorkerCommand::Close { key })?;
        registry.remove(key);
        Ok(())
    }

    /// Starts mixing a conference on the worker that carries `first` (its first member, which
    /// the control plane then joins).
    pub fn create_conference(
        &self,
        conference: ConferenceKey,
        spec: ConferenceSpec,
        first: ConnectionKey,
    ) -> Result<(), EngineError> {
        let mut registry = lock(&self.registry);
        if registry.conferences.contains_key(&conference) {
            return Err(EngineError::DuplicateConference);
        }
        let worker = registry
            .connections
            .get(&first)
            .ok_or(EngineError::UnknownConnection)?
            .worker;
        self.workers[worker].submit(WorkerCommand::CreateConference { conference, spec })?;
        registry.conferences.insert(conference, worker);
        Ok(())
    }

    /// Puts a connection into a conference. A connection carried by another worker moves to the
    /// conference's worker first (by message, with its session intact); commands sent meanwhile
    /// wait on the receiving worker until it arrives.
    pub fn join_conference(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    ) -> Result<(), EngineError> {
        let mut registry = lock(&self.registry);
        let target = *registry
            .conferences
            .get(&conference)
            .ok_or(EngineError::UnknownConference)?;
        let source = registry
            .connections
            .get(&key)
            .ok_or(EngineError::UnknownConnection)?
            .worker;
        if source != target {
            self.workers[target].submit(WorkerCommand::Expect { key })?;
            self.workers[source].submit(WorkerCommand::MoveOut { key, to: target })?;
            registry.move_connection(key, target);
            tracing::debug!(
                key,
                from = source,
                to = target,
                "connection moves to its conference's worker"
            );
        }
        self.workers[target].submit(WorkerCommand::Join {
            conference,
            key,
            conferee,
        })
    }

    /// Changes how a conferee takes part (mute, receive-only, tariff tone, coach, pupil).
    pub fn set_conferee(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    ) -> Result<(), EngineError> {
        let worker = self.conference_worker(conference)?;
        self.workers[worker].submit(WorkerCommand::SetConferee {
            conference,
            key,
            conferee,
        })
    }

    /// Takes a connection out of a conference; the connection stays open.
    pub fn leave_conference(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError> {
        let worker = self.conference_worker(conference)?;
        self.workers[worker].submit(WorkerCommand::Leave { conference, key })
    }

    /// Two-party fast path on (`true`) or off (promoted to a full mix).
    pub fn set_hairpin(&self, conference: ConferenceKey, hairpin: bool) -> Result<(), EngineError> {
        let worker = self.conference_worker(conference)?;
        self.workers[worker].submit(WorkerCommand::SetHairpin {
            conference,
            hairpin,
        })
    }

    /// Stops mixing a conference; members still in it leave it and stay open.
    pub fn close_conference(&self, conference: ConferenceKey) -> Result<(), EngineError> {
        let mut registry = lock(&self.registry);
        let worker = *registry
            .conferences
            .get(&conference)
            .ok_or(EngineError::UnknownConference)?;
        self.workers[worker].submit(WorkerCommand::CloseConference { conference })?;
        registry.conferences.remove(&conference);
        Ok(())
    }

    /// Plays a prompt or tone to a connection instead of its usual audio (taking it out of its
    /// conference's mix meanwhile); [`EngineEvent::PlayoutDone`] when it ends by itself.
    pub fn play(
        &self,
        key: ConnectionKey,
        operation: u64,
        source: crate::media::player::PlaySource,
        gain: f32,
    ) -> Result<(), EngineError> {
        self.submit_for(
            key,
            WorkerCommand::Play {
                key,
                operation,
                source: Box::new(source),
                gain,
            },
        )
    }

    /// Stops the playout of `operation` on a connection (no `PlayoutDone` follows).
    pub fn stop_play(&self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.submit_for(key, WorkerCommand::StopPlay { key, operation })
    }

    /// Changes the volume of a connection's playout.
    pub fn set_play_gain(&self, key: ConnectionKey, gain: f32) -> Result<(), EngineError> {
        self.submit_for(key, WorkerCommand::SetPlayGain { key, gain })
    }

    /// Changes the speed of a connection's playout (−10..=10, 10 % per step, pitch kept).
    pub fn set_play_speed(&self, key: ConnectionKey, speed: i32) -> Result<(), EngineError> {
        self.submit_for(key, WorkerCommand::SetPlaySpeed { key, speed })
    }

    /// Sends `digits` to a connection's peer as RFC 4733 telephone-events (out-of-band DTMF:
    /// Call Control's SendUserInput), each for `duration_ms` (0: 100 ms, at least 40 ms) with
    /// `gap_ms` (0: 50 ms) between them, after any digits still being sent. Each digit's
    /// packets go out on the connection's RTP stream in place of its audio (echo, prompt or
    /// conference mix) for that time; an idle connection sends just the digits.
    ///
    /// Answered here rather than by an event: the digits are checked ('0'-'9', '*', '#',
    /// 'A'-'D', '!' for hook flash; at most [`dtmf::MAX_QUEUED_DIGITS`]) and so is the
    /// connection's latest media spec (telephone-event negotiated); on error nothing is sent.
    /// Only the worker knows what is still queued: a string that would take a connection past
    /// 64 waiting digits is dropped there and logged. No event reports the end;
    /// [`MediaStats::digits_sent`] counts digits as they start.
    pub fn send_digits(
        &self,
        key: ConnectionKey,
        digits: String,
        duration_ms: u32,
        gap_ms: u32,
    ) -> Result<(), EngineError> {
        let registry = lock(&self.registry);
        let entry = registry
            .connections
            .get(&key)
            .ok_or(EngineError::UnknownConnection)?;
        let count = dtmf::check_digits(&digits).map_err(EngineError::InvalidDigits)?;
        if count > dtmf::MAX_QUEUED_DIGITS {
            return Err(EngineError::InvalidDigits(DtmfError::QueueFull {
                queued: 0,
                requested: count,
            }));
        }
        if !entry.telephone_event {
            return Err(EngineError::NoTelephoneEvent);
        }
        if count == 0 {
            return Ok(());
        }
        self.workers[entry.worker].submit(WorkerCommand::SendDigits {
            key,
            digits,
            duration_ms,
            gap_ms,
        })
    }

    /// Watches a connection's audio for `needed` of continuous silence (or non-silence);
    /// [`EngineEvent::Energy`] when it happens.
    pub fn watch_energy(
        &self,
        key: ConnectionKey,
        operation: u64,
        silence: bool,
        needed: std::time::Duration,
    ) -> Result<(), EngineError> {
        self.submit_for(
            key,
            WorkerCommand::Watch {
                key,
                operation,
                silence,
                needed,
            },
        )
    }

    /// Stops the energy watches of `operation` on a connection.
    pub fn unwatch_energy(&self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.submit_for(key, WorkerCommand::Unwatch { key, operation })
    }

    /// Plays a prompt or tone into a conference's mix as participant `key` (a temporary
    /// conference connection); [`EngineEvent::PlayoutDone`] when it has played.
    pub fn conference_play(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        source: crate::media::player::PlaySource,
        gain: f32,
    ) -> Result<(), EngineError> {
        let worker = self.conference_worker(conference)?;
        self.workers[worker].submit(WorkerCommand::RoomPlay {
            conference,
            key,
            operation,
            source: Box::new(source),
            gain,
        })
    }

    /// Stops a conference playout (no `PlayoutDone` follows).
    pub fn conference_stop_play(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError> {
        let worker = self.conference_worker(conference)?;
        self.workers[worker].submit(WorkerCommand::RoomStopPlay { conference, key })
    }

    /// Changes the volume (and the speed, when given) of a conference playout.
    pub fn conference_set_gain(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
        gain: f32,
        speed: Option<i32>,
    ) -> Result<(), EngineError> {
        let worker = self.conference_worker(conference)?;
        self.workers[worker].submit(WorkerCommand::RoomSetGain {
            conference,
            key,
            gain,
            speed,
        })
    }

    /// Sends a command to the worker that carries `key`.
    fn submit_for(&self, key: ConnectionKey, command: WorkerCommand) -> Result<(), EngineError> {
        let registry = lock(&self.registry);
        let entry = registry
            .connections
            .get(&key)
            .ok_or(EngineError::UnknownConnection)?;
        self.workers[entry.worker].submit(command)
    }

    /// The worker that carries a connection (after any move requested so far).
    pub fn connection_worker(&self, key: ConnectionKey) -> Option<usize> {
        lock(&self.registry).connections.get(&key).map(|e| e.worker)
    }

    fn conference_worker(&self, conference: ConferenceKey) -> Result<usize, EngineError> {
        lock(&self.registry)
            .conferences
            .get(&conference)
            .copied()
            .ok_or(EngineError::UnknownConference)
    }

    /// Live statistics of an open connection, as last published by its worker (after each batch
    /// of packets). `None` once the connection is closed: the final figures come with `Closed`.
    pub fn stats(&self, key: ConnectionKey) -> Option<MediaStats> {
        let registry = lock(&self.registry);
        registry
            .connections
            .get(&key)
            .map(|entry| entry.stats.snapshot())
    }

    /// Gives back the slack a burst left in the registry (see `crate::shrink`).
    pub fn shrink_idle(&self) {
        use crate::shrink::ShrinkIdle;
        let mut registry = lock(&self.registry);
        registry.connections.shrink_idle();
        registry.conferences.shrink_idle();
    }

    /// UDP ports allocated to connections (two per connection: RTP and RTCP), including closed
    /// connections whose worker has not given the sockets back yet.
    pub fn ports_in_use(&self) -> usize {
        lock(&self.ports).ports_in_use()
    }

    /// Closes the idle sockets that have rested `IDLE_SOCKETS_MAX`; returns how long until the
    /// next one left is due (None: none left).
    pub fn close_idle_sockets(&self) -> Option<std::time::Duration> {
        lock(&self.ports).close_idle_sockets(std::time::Instant::now())
    }

    /// UDP ports of ended connections whose sockets stay bound for the next ones (two per
    /// pair); they close after `pool::IDLE_MAX` unused. Reading this (as `ports_in_use` does)
    /// closes those that have rested that long.
    pub fn ports_idle(&self) -> usize {
        lock(&self.ports).ports_idle()
    }

    /// UDP ports in the pool (two per pair).
    pub fn ports_total(&self) -> usize {
        lock(&self.ports).ports_total()
    }

    /// Workers whose loop has not turned within `max_age` (each turns at least every 100 ms
    /// when idle). The systemd watchdog is fed only while this is zero.
    pub fn stalled_workers(&self, max_age: std::time::Duration) -> usize {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let max_ms = max_age.as_millis() as u64;
        self.heartbeats
            .iter()
            .filter(|h| now_ms.saturating_sub(h.load(Ordering::Relaxed)) > max_ms)
            .count()
    }

    /// How late session deadlines (20 ms playout ticks, RTCP, timeouts) ran, over all workers.
    pub fn tick_lateness(&self) -> TickLatenessSnapshot {
        let mut total = TickLatenessSnapshot::default();
        for worker in &self.tick_lateness {
            worker.add_to(&mut total);
        }
        total
    }

    /// Events the workers could not deliver because the event queue was full.
    pub fn recorder_frames_dropped(&self) -> u64 {
        self.recorder_dropped.load(Ordering::Relaxed)
    }

    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }

    /// Datagrams the workers have sent through io_uring (`[media] io_uring_send`), counted as
    /// their completions arrive; stays 0 when the option is off or the kernel refused io_uring.
    pub fn io_uring_sends(&self) -> u64 {
        self.uring_sends.load(Ordering::Relaxed)
    }

    /// Datagrams the workers have received through io_uring (`[media] io_uring_receive`); stays
    /// 0 when the option is off or the kernel refused it.
    pub fn io_uring_receives(&self) -> u64 {
        self.uring_receives.load(Ordering::Relaxed)
    }

    /// Conference frames sent to a talker who heard only silence from its worker's one encode
    /// of silence, instead of an encode of its own.
    pub fn conference_silence_shares(&self) -> u64 {
        self.silence_shares.load(Ordering::Relaxed)
    }

    /// How often a socket's io_uring receive found all of its worker's buffers in use: its
    /// datagrams then waited in the socket for the worker's next turn.
    pub fn receive_buffers_exhausted(&self) -> u64 {
        self.receive_buffers_exhausted.load(Ordering::Relaxed)
    }

    /// CPU time each media worker thread has used, by worker number; `None` for a worker whose
    /// thread has ended.
    pub fn worker_cpu_times(&self) -> Vec<Option<std::time::Duration>> {
        self.workers.iter().map(WorkerHandle::cpu_time).collect()
    }

    /// Stops all workers, closing every socket (each open connection reports `Closed`), and
    /// joins the threads. Used at shutdown and in tests; dropping the engine does the same.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Pops free pairs until one binds: pairs taken by another process go to the back of the
    /// pool and the next is tried, up to `MAX_BIND_ATTEMPTS`. A pair whose sockets stayed
    /// bound from an earlier connection is used as it is, once what arrived on it since is read
    /// away (closed instead when its old peer is still sending).
    fn bind_free_pair(&self) -> Result<(u16, MediaSockets), EngineError> {
        let mut ports = lock(&self.ports);
        let attempts = ports.free_pairs().min(MAX_BIND_ATTEMPTS);
        for _ in 0..attempts {
            let rtp_port = match ports.allocate() {
                None => break,
                Some(Pair::Bound(rtp_port, sockets)) => {
                    if socket::discard_stale(&sockets) {
                        return Ok((rtp_port, sockets));
                    }
                    tracing::debug!(
                        rtp_port,
                        "media port pair still receiving its old stream, closed"
                    );
                    drop(sockets);
                    ports.release(rtp_port);
                    continue;
                }
                Some(Pair::Unbound(rtp_port)) => rtp_port,
            };
            match socket::bind_pair(self.bind_ip, rtp_port, &self.tuning) {
                Ok(sockets) => return Ok((rtp_port, sockets)),
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                    tracing::debug!(
                        rtp_port,
                        %error,
                        "media port pair taken by another socket, trying next"
                    );
                    ports.release(rtp_port);
                }
                Err(error) => {
                    ports.release(rtp_port);
                    tracing::warn!(
                        rtp_port,
                        bind_ip = %self.bind_ip,
                        %error,
                        "cannot bind media socket"
                    );
                    return Err(EngineError::Bind(error));
                }
            }
        }
        tracing::warn!(attempts, "no RTP port pair available");
        Err(EngineError::NoPortsAvailable)
    }

    /// Tells every worker to stop and waits for it; safe to call more than once.
    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::Release);
        for worker in &self.workers {
            worker.wake();
        }
        for worker in &mut self.workers {
            worker.join();
        }
        // The workers' queues are gone with them; dropping ours lets the recorder finish its
        // files and end.
        self.recorder = None;
        if let Some(thread) = self.recorder_thread.take() {
            if thread.join().is_err() {
                tracing::error!("media recorder panicked");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// The control plane's view of open connections.
struct Registry {
    /// Open connections by key.
    connections: crate::idmap::IdMap<ConnectionKey, ConnectionEntry>,
    /// Connections carried by each worker, indexed by worker number.
    load: Vec<usize>,
    /// The worker that mixes each conference.
    conferences: HashMap<ConferenceKey, usize>,
}

/// Where an open connection lives and how to read its statistics.
struct ConnectionEntry {
    /// Index of the worker that owns the sockets.
    worker: usize,
    /// Counters the worker publishes.
    stats: Arc<SharedStats>,
    /// The latest media spec sent to the worker negotiated RFC 4733 telephone-event, so
    /// digits can be sent ([`Engine::send_digits`] answers without asking the worker).
    telephone_event: bool,
}

impl Registry {
    fn new(workers: usize) -> Self {
        Registry {
            connections: crate::idmap::IdMap::default(),
            load: vec![0; workers],
            conferences: HashMap::new(),
        }
    }

    /// The worker carrying the fewest connections (lowest index on a tie).
    fn least_loaded_worker(&self) -> usize {
        self.load
            .iter()
            .enumerate()
            .min_by_key(|&(_, &load)| load)
            .map_or(0, |(index, _)| index)
    }

    fn insert(&mut self, key: ConnectionKey, entry: ConnectionEntry) {
        self.load[entry.worker] += 1;
        self.connections.insert(key, entry);
    }

    fn remove(&mut self, key: ConnectionKey) {
        if let Some(entry) = self.connections.remove(&key) {
            self.load[entry.worker] -= 1;
        }
    }

    /// Records that a connection now lives on worker `to`.
    fn move_connection(&mut self, key: ConnectionKey, to: usize) {
        if let Some(entry) = self.connections.get_mut(&key) {
            self.load[entry.worker] -= 1;
            self.load[to] += 1;
            entry.worker = to;
        }
    }
}

/// Whether a media spec negotiated RFC 4733 telephone-event.
fn has_telephone_event(media: &MediaSpec) -> bool {
    media
        .format
        .is_some_and(|format| format.telephone_event_pt.is_some())
}

/// Worker threads to start: the configured number, or one per core for 0.
fn resolve_worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Locks a control-plane mutex. A panic while holding one of these cannot leave the data half
/// updated (every critical section is a single map/queue operation), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
