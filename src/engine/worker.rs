//! One media worker thread (`media-<n>`): owns its connections' RTP/RTCP sockets and moves their
//! packets.
//!
//! Owns: a `mio::Poll`, the sockets and per-connection state handed over by
//! [`WorkerCommand::Open`], one reusable receive buffer, its [`Transmitter`] (one send buffer,
//! and with `io_uring_send` a [`SendRing`]), and publishing each connection's statistics.
//! Must not: take a lock, allocate per packet, or wait for the control plane. Commands arrive on a
//! bounded queue drained with `try_recv`, events leave with `try_send` (drops are counted), and
//! port pairs go back on a channel whose send never blocks.
//!
//! Each connection's media is a sans-IO [`MediaSession`]: the worker feeds it datagrams and time,
//! and sends what it asks to send.
//!
//! Loop: wait for readiness (until the earliest session deadline at most), apply commands, drain
//! each readable socket up to [`MAX_PACKETS_PER_WAKEUP`] packets into its session, then run the
//! sessions whose deadline (playout tick, RTCP report, timeout) has come, then (with a ring)
//! submit the turn's sends at once and reap their completions. mio is edge-triggered,
//! so a socket cut off by the cap is carried over and drained again on the next turn, which then
//! does not sleep. Deadlines live in a binary heap keyed by (time, slot, generation); stale
//! entries (the session moved its deadline, or the slot was reused) are skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tokio::sync::mpsc::error::TrySendError as EventSendError;
use tokio::sync::mpsc::Sender;

use super::batch::{RecvBatch, BATCH};
use super::pool::PortReturn;
use super::recv_ring::{ReceiveCounts, Received, RecvRing};
use super::send_ring::{SendRing, RING_ENTRIES};
use super::socket::MediaSockets;
use super::stats::SharedStats;
use super::{
    ConfereeSpec, ConferenceKey, ConferenceSpec, ConnectionKey, EngineError, EngineEvent,
    MediaSpec, MediaStats, SessionDefaults,
};
use crate::media::energy::EnergyWatch;
use crate::media::rtcp::ntp_timestamp_from_unix;
use crate::media::session::{
    Channel, MediaSession, SessionConfig, SessionEvent, SessionStats, MAX_PACKET, ROOM_TICK,
};
use crate::mixer::{Mixer, MixerConfig, ParticipantFlags, TalkerEvent, MAX_PARTICIPANTS};

/// Commands a worker can hold before the control plane gets `QueueFull`.
const COMMAND_QUEUE_DEPTH: usize = 1024;
/// Longest sleep without readiness or commands; bounds how late a lost wake-up is noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Packets taken from one socket per turn, so one busy stream cannot starve the others.
const MAX_PACKETS_PER_WAKEUP: usize = 64;
/// Longest sleep in batched-receive mode (one playout tick), bounding command latency.
const BATCHED_SLEEP_MAX: Duration = Duration::from_millis(20);
/// How often a worker publishes all of its connections' counters for the control plane (and on
/// close): summarizing them after every packet cost a tenth of the worker's time at load. RTP
/// packet and byte counts still go out after every packet.
const STATS_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 256;
/// Token of the waker; connection tokens are `slot * 2 + leg` and never reach it.
const WAKER_TOKEN: Token = Token(usize::MAX);

/// What the control plane asks a worker to do.
pub(super) enum WorkerCommand {
    /// Take ownership of a new connection's sockets.
    Open(Box<NewConnection>),
    /// Change what a connection's session does (mode, format, peer, keys).
    Update {
        key: ConnectionKey,
        media: Box<MediaSpec>,
    },
    /// Close a connection: drop its sockets, give its ports back, report `Closed`.
    Close { key: ConnectionKey },
    /// A connection is on its way here from another worker: hold commands for it until it
    /// arrives (on the hand-off channel).
    Expect { key: ConnectionKey },
    /// Hand a connection (sockets and session) over to worker `to`.
    MoveOut { key: ConnectionKey, to: usize },
    /// Start mixing a conference on this worker.
    CreateConference {
        conference: ConferenceKey,
        spec: ConferenceSpec,
    },
    /// Put a connection (on this worker, or expected here) into a conference.
    Join {
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    },
    /// Change how a conferee takes part.
    SetConferee {
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    },
    /// Take a connection out of its conference; it stays open.
    Leave {
        conference: ConferenceKey,
        key: ConnectionKey,
    },
    /// Two-party fast path on or off (off = promoted to a full mix).
    SetHairpin {
        conference: ConferenceKey,
        hairpin: bool,
    },
    /// Stop mixing a conference; its connections stay open (the control plane closes them).
    CloseConference { conference: ConferenceKey },
    /// Play a prompt or tone to a connection (Play, PlayTone).
    Play {
        key: ConnectionKey,
        operation: u64,
        source: Box<crate::media::player::PlaySource>,
        gain: f32,
    },
    /// Stop a connection's playout of `operation`.
    StopPlay { key: ConnectionKey, operation: u64 },
    /// New volume for a connection's playout (AdjustPlay).
    SetPlayGain { key: ConnectionKey, gain: f32 },
    /// New speed for a connection's playout (−10..=10).
    SetPlaySpeed { key: ConnectionKey, speed: i32 },
    /// Send digits to a connection's peer as RFC 4733 telephone-events (validated by the
    /// engine already).
    SendDigits {
        key: ConnectionKey,
        digits: String,
        duration_ms: u32,
        gap_ms: u32,
    },
    /// Start handing the caller's audio to the recorder for `operation`.
    Record { key: ConnectionKey, operation: u64 },
    /// Stop recording `operation`: last audio out, then the recorder finishes the file.
    StopRecord { key: ConnectionKey, operation: u64 },
    /// Watch the caller's audio for silence (or non-silence) lasting `needed`.
    Watch {
        key: ConnectionKey,
        operation: u64,
        silence: bool,
        needed: Duration,
    },
    /// Drop the energy watches of `operation`.
    Unwatch { key: ConnectionKey, operation: u64 },
    /// Play a prompt or tone into a conference's mix, as participant `key` (a temporary
    /// conference connection without sockets).
    RoomPlay {
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        source: Box<crate::media::player::PlaySource>,
        gain: f32,
    },
    /// Stop a conference playout.
    RoomStopPlay {
        conference: ConferenceKey,
        key: ConnectionKey,
    },
    /// New volume (and speed, when given) for a conference playout.
    RoomSetGain {
        conference: ConferenceKey,
        key: ConnectionKey,
        gain: f32,
        speed: Option<i32>,
    },
    /// Record the whole mix of a conference, as listener `key`.
    RoomRecord {
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
    },
    /// Stop recording a conference; the recorder finishes the file.
    RoomStopRecord {
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
    },
}

impl WorkerCommand {
    /// The connection a command must wait for when that connection is in transit.
    fn connection(&self) -> Option<ConnectionKey> {
        match self {
            WorkerCommand::Update { key, .. }
            | WorkerCommand::Close { key }
            | WorkerCommand::MoveOut { key, .. }
            | WorkerCommand::Join { key, .. }
            | WorkerCommand::SetConferee { key, .. }
            | WorkerCommand::Leave { key, .. }
            | WorkerCommand::Play { key, .. }
            | WorkerCommand::StopPlay { key, .. }
            | WorkerCommand::SetPlayGain { key, .. }
            | WorkerCommand::SetPlaySpeed { key, .. }
            | WorkerCommand::SendDigits { key, .. }
            | WorkerCommand::Record { key, .. }
            | WorkerCommand::StopRecord { key, .. }
            | WorkerCommand::Watch { key, .. }
            | WorkerCommand::Unwatch { key, .. } => Some(*key),
            _ => None,
        }
    }
}

/// A connection handed from one worker to another (its sockets are deregistered).
pub(super) struct Moving(Box<Connection>);

/// How a worker reaches the others, to hand connections over.
#[derive(Clone)]
pub(super) struct Peer {
    handoff: mpsc::Sender<Moving>,
    waker: Arc<Waker>,
}

/// A connection handed over to a worker.
pub(super) struct NewConnection {
    /// The control plane's id.
    pub(super) key: ConnectionKey,
    /// What the session does and with whom.
    pub(super) media: MediaSpec,
    /// RTP port of the pair, given back to the pool on close.
    pub(super) rtp_port: u16,
    /// The bound sockets; the worker becomes their only owner.
    pub(super) sockets: MediaSockets,
    /// Where the worker publishes the connection's counters.
    pub(super) stats: Arc<SharedStats>,
}

/// What a worker shares with the engine, handed over at start.
pub(super) struct WorkerContext {
    /// Event queue to the control plane, used only with `try_send`.
    pub(super) events: Sender<EngineEvent>,
    /// Engine-wide count of events dropped because the queue was full.
    pub(super) events_dropped: Arc<AtomicU64>,
    /// Channel on which closed port pairs go back to the pool.
    pub(super) port_return: PortReturn,
    /// Set by the engine at shutdown.
    pub(super) stop: Arc<AtomicBool>,
    /// Session settings common to every connection.
    pub(super) defaults: SessionDefaults,
    /// Pinning, realtime priority and busy polling of this thread.
    pub(super) threads: super::tuning::ThreadTuning,
    /// Milliseconds since `epoch` at the worker's last turn: the watchdog's proof of life.
    pub(super) heartbeat: Arc<AtomicU64>,
    /// The engine's start, the origin of `heartbeat`.
    pub(super) epoch: std::time::Instant,
    /// Origin of this worker's first 20 ms grid (its conference ticks, and the sessions of tick
    /// group 0; group `g` is `g × 20 ms / TICK_GROUPS` later): staggered from the other
    /// workers' by [`staggered_tick_epoch`], so no two bursts of ticks start together.
    pub(super) tick_epoch: std::time::Instant,
    /// How late this worker runs session deadlines.
    pub(super) tick_lateness: Arc<super::stats::TickLateness>,
    /// The recorder thread's queue (frames are `try_send`: never waited for).
    pub(super) recorder: SyncSender<super::recorder::RecorderCommand>,
    /// Engine-wide count of datagrams sent through io_uring (added to once per turn).
    pub(super) uring_sends: Arc<AtomicU64>,
    /// Engine-wide count of datagrams received through io_uring (added to once per turn).
    pub(super) uring_receives: Arc<AtomicU64>,
    /// Engine-wide count of ring receives that found every buffer in use (once per turn).
    pub(super) receive_buffers_exhausted: Arc<AtomicU64>,
}

/// The control plane's handle on one worker thread.
pub(super) struct WorkerHandle {
    /// Worker number (the `n` of `media-<n>`).
    index: usize,
    /// Bounded command queue into the worker.
    commands: SyncSender<WorkerCommand>,
    /// Wakes the worker's poll after a command or at shutdown.
    waker: Arc<Waker>,
    /// The thread, until joined.
    thread: Option<JoinHandle<()>>,
}

/// A worker whose poller, queues and waker exist but whose thread has not started: all workers
/// are prepared first, so each can be given every other's hand-off channel.
pub(super) struct Prepared {
    index: usize,
    poll: Poll,
    waker: Arc<Waker>,
    commands: SyncSender<WorkerCommand>,
    inbox: Receiver<WorkerCommand>,
    handoff: mpsc::Sender<Moving>,
    arrivals: Receiver<Moving>,
}

/// Creates worker `index`'s poller, waker and queues.
pub(super) fn prepare(index: usize) -> io::Result<Prepared> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
    let (commands, inbox) = mpsc::sync_channel(COMMAND_QUEUE_DEPTH);
    // Unbounded: a hand-off must never fail for lack of room (moves are bounded by the
    // connections in existence).
    let (handoff, arrivals) = mpsc::channel();
    Ok(Prepared {
        index,
        poll,
        waker,
        commands,
        inbox,
        handoff,
        arrivals,
    })
}

impl Prepared {
    /// How the other workers reach this one.
    pub(super) fn peer(&self) -> Peer {
        Peer {
            handoff: self.handoff.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Starts thread `media-<index>`; `peers[i]` reaches worker `i`.
    pub(super) fn spawn(
        self,
        context: WorkerContext,
        peers: Vec<Peer>,
    ) -> io::Result<WorkerHandle> {
        let Prepared {
            index,
            poll,
            waker,
            commands,
            inbox,
            arrivals,
            ..
        } = self;
        // Built on its own thread: a single-issuer io_uring belongs to the thread that made it.
        let thread = thread::Builder::new()
            .name(format!("media-{index}"))
            .spawn(move || Worker::new(index, poll, inbox, arrivals, peers, context).run())?;
        Ok(WorkerHandle {
            index,
            commands,
            waker,
            thread: Some(thread),
        })
    }
}

impl WorkerHandle {
    /// CPU time the worker thread has used (user + system, from its thread CPU clock), or
    /// `None` once the thread has ended or the clock cannot be read.
    pub(super) fn cpu_time(&self) -> Option<Duration> {
        use std::os::unix::thread::JoinHandleExt;
        let thread = self.thread.as_ref()?;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the pthread_t comes from a JoinHandle we hold, so the thread has not been
        // joined and its id is valid; a thread that has exited makes the call fail (ESRCH),
        // never read freed memory.
        if unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) } != 0 {
            return None;
        }
        super::clock_time(clock)
    }

    /// Queues a command and wakes the worker; a rejected command is dropped (closing any sockets
    /// it carries).
    pub(super) fn submit(&self, command: WorkerCommand) -> Result<(), EngineError> {
        match self.commands.try_send(command) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EngineError::QueueFull),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::WorkerGone),
        }
        self.wake();
        Ok(())
    }

    /// Interrupts the worker's poll.
    pub(super) fn wake(&self) {
        if let Err(error) = self.waker.wake() {
            // The worker still sees the command or the stop flag after its poll timeout.
            tracing::warn!(worker = self.index, %error, "cannot wake media worker");
        }
    }

    /// Waits for the thread to end (after the stop flag is set); idempotent.
    pub(super) fn join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if thread.join().is_err() {
            tracing::error!(worker = self.index, "media worker panicked");
        }
    }
}

/// Which socket of a connection a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Rtp = 0,
    Rtcp = 1,
}

impl Leg {
    /// The socket a session's channel is sent from.
    fn of(channel: Channel) -> Leg {
        match channel {
            Channel::Rtp => Leg::Rtp,
            Channel::Rtcp => Leg::Rtcp,
        }
    }
}

/// Whether a socket was left with packets still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Read until `WouldBlock` (or an error): wait for the next readiness edge.
    Empty,
    /// Stopped at the per-wake-up cap: come back next turn without sleeping.
    MoreWaiting,
}

/// The state owned by one worker thread.
struct Worker {
    /// Worker number, for logs.
    index: usize,
    /// Readiness of this worker's sockets and its waker.
    poll: Poll,
    /// Reused readiness buffer.
    events: Events,
    /// Commands from the control plane.
    inbox: Receiver<WorkerCommand>,
    /// Event queue, port return and stop flag.
    context: WorkerContext,
    /// Connections by slot; a slot's tokens are `slot * 2` (RTP) and `slot * 2 + 1` (RTCP).
    connections: Vec<Option<Connection>>,
    /// Empty slots to reuse before growing `connections`.
    free_slots: Vec<usize>,
    /// Slot of each connection by key.
    slots: HashMap<ConnectionKey, usize>,
    /// The receive batch (recvmmsg buffers), reused for every socket.
    batch: RecvBatch,
    /// Sockets to drain this turn.
    ready: Vec<Token>,
    /// Sockets cut off by the per-wake-up cap, drained again next turn.
    carry_over: Vec<Token>,
    /// Session deadlines: (when, slot, generation), earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Generation stamped on the next opened connection (tells reused slots apart).
    next_generation: u64,
    /// Where packets go out: the reused send buffer, and the io_uring when there is one.
    transmit: Transmitter,
    /// With `io_uring_receive`: the ring every socket of this worker is read through (instead
    /// of epoll and `recvmmsg`); `None` when off or refused by the kernel.
    receive: Option<RecvRing>,
    /// Ring requests that ended this turn, armed again after the datagrams are handled.
    rearm: Vec<u64>,
    /// The ring's counts already added to the engine-wide counters.
    receives_published: ReceiveCounts,
    /// When the connections' counters are published next.
    next_stats_publish: Instant,
    /// With busy polling on: poll without sleeping until then (set when packets arrive).
    spin_until: Option<Instant>,
    /// Connections arriving from other workers.
    arrivals: Receiver<Moving>,
    /// Every worker's hand-off channel, by worker number.
    peers: Vec<Peer>,
    /// Connections announced (`Expect`) but not arrived yet.
    expected: HashSet<ConnectionKey>,
    /// Commands for expected connections, applied in order when they arrive.
    parked: HashMap<ConnectionKey, Vec<WorkerCommand>>,
    /// Conferences mixed on this worker.
    conferences: HashMap<ConferenceKey, Conference>,
    /// The next 20 ms conference tick, while there are conferences.
    next_room_tick: Option<Instant>,
    /// One conference frame, reused for every capture.
    room_frame: Vec<i16>,
}

/// How a worker sends: `sendto` from one reused buffer, or (with `io_uring_send`) queued in the
/// slots of a [`SendRing`] and submitted once per turn.
struct Transmitter {
    /// The one send buffer for `sendto`, reused for every packet.
    buffer: Box<[u8; MAX_PACKET]>,
    /// The worker's ring; `None` when `io_uring_send` is off or the kernel refused the ring.
    ring: Option<SendRing>,
    /// Ring sends already added to the engine-wide count.
    published: u64,
}

/// One conference as its worker mixes it.
struct Conference {
    mixer: Mixer,
    rate: u32,
    /// Two-party fast path: each of the two hears the other's frame, with no mix.
    hairpin: bool,
    /// Members in join order, with how they take part.
    members: Vec<(ConnectionKey, ConfereeSpec)>,
    /// Hairpin: the two members' frames of this tick, and whether each is to be heard.
    hairpin_frames: [Vec<i16>; 2],
    hairpin_heard: [bool; 2],
    /// Prompts and tones played into the mix, each as a participant of its own:
    /// (temporary connection key, operation, player).
    players: Vec<(ConnectionKey, u64, crate::media::player::Player)>,
    /// Recordings of the whole mix: (temporary connection key, operation), each a listener
    /// that hears everyone.
    recordings: Vec<(ConnectionKey, u64)>,
    /// Play [`join_tone`] into the mix when someone joins.
    join_tone: bool,
    /// The participant key the join tone plays as (outside the 24-bit connection ids).
    tone_key: ConnectionKey,
}

/// The join tone: 1 kHz at −20 dBFS for 200 ms.
fn join_tone() -> crate::media::player::PlaySource {
    crate::media::player::PlaySource::Tone {
        frequencies: [1000.0, 0.0],
        amplitudes: [crate::media::player::amplitude_of_db(-20), 0.0],
        duration: Some(Duration::from_millis(200)),
    }
}

/// One connection as its worker sees it.
struct Connection {
    /// The control plane's id.
    key: ConnectionKey,
    /// Origin of the grid its session ticks on: the tick group it got from the worker that
    /// opened it (kept when it moves to another worker: its ticks stay on a grid, only not
    /// interleaved with the new worker's own).
    tick_epoch: Instant,
    /// What the session was built from (an update that changes more than the peer rebuilds it).
    media: MediaSpec,
    session: MediaSession,
    /// Counters of sessions this connection had before a rebuild, added to the current one's.
    base: MediaStats,
    /// RTP port of the pair, given back on close.
    rtp_port: u16,
    /// The RTP and RTCP sockets.
    sockets: MediaSockets,
    /// Counters as last published to `shared`.
    stats: MediaStats,
    /// Published counters read by the control plane.
    shared: Arc<SharedStats>,
    /// Per leg: the socket's token is in `ready` or `carry_over` already.
    queued: [bool; 2],
    /// Tells this connection's heap entries from those of an earlier one in the same slot.
    generation: u64,
    /// The deadline the heap holds for this connection.
    deadline: Instant,
    /// The conference (on this worker) the connection is in.
    conference: Option<ConferenceKey>,
    /// The recording the caller's audio goes to.
    recording: Option<u64>,
    /// Silence/non-silence conditions waited for.
    watches: Vec<EnergyWatch>,
    /// The tags of this connection's ring receives (RTP, RTCP) while it lives on a worker that
    /// reads through io_uring; datagrams with other tags are not its own.
    ring_tags: Option<[u64; 2]>,
    /// Its sockets have ring receives in flight (false once disarmed, so an ended request is not
    /// armed again).
    armed: bool,
    /// A ring receive of this connection has failed and was logged.
    receive_failure_logged: bool,
}

impl Worker {
    fn new(
        index: usize,
        poll: Poll,
        inbox: Receiver<WorkerCommand>,
        arrivals: Receiver<Moving>,
        peers: Vec<Peer>,
        context: WorkerContext,
    ) -> Worker {
        let transmit = Transmitter::new(context.threads.io_uring_send, RING_ENTRIES, index);
        let receive = (context.threads.io_uring_receive && context.threads.receive_at_tick)
            .then(|| RecvRing::start(index))
            .flatten();
        Worker {
            index,
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            inbox,
            context,
            connections: Vec::new(),
            free_slots: Vec::new(),
            slots: HashMap::new(),
            batch: RecvBatch::new(),
            ready: Vec::new(),
            carry_over: Vec::new(),
            deadlines: BinaryHeap::new(),
            next_generation: 0,
            transmit,
            receive,
            rearm: Vec::new(),
            receives_published: ReceiveCounts::default(),
            next_stats_publish: Instant::now(),
            spin_until: None,
            arrivals,
            peers,
            expected: HashSet::new(),
            parked: HashMap::new(),
            conferences: HashMap::new(),
            next_room_tick: None,
            room_frame: Vec::new(),
        }
    }

    /// The worker loop, until the engine stops it or the control plane disappears.
    fn run(mut self) {
        super::tuning::apply_to_current_thread(self.index, &self.context.threads);
        super::tuning::apply_epoll_busy_poll(&self.poll, self.index, &self.context.threads);
        tracing::info!(worker = self.index, "media worker started");
        while self.turn() {}
        // Commands that raced with the stop still carry sockets: apply them so they close cleanly.
        self.apply_commands();
        self.close_all();
        // Connections handed to this worker after its last turn close here too.
        while let Ok(Moving(connection)) = self.arrivals.try_recv() {
            self.finish(*connection);
        }
        tracing::info!(worker = self.index, "media worker stopped");
    }

    /// One pass: wait for readiness, apply commands, drain ready sockets. False to stop.
    fn turn(&mut self) -> bool {
        let spinning = self.spin_until.is_some_and(|until| Instant::now() < until);
        let mut timeout = if self.carry_over.is_empty() && !spinning {
            let session = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
            // Counters are due every STATS_PUBLISH_INTERVAL whatever the sessions' deadlines.
            let next = [session, self.next_room_tick, Some(self.next_stats_publish)]
                .into_iter()
                .flatten()
                .min();
            next.map(|at| at.saturating_duration_since(Instant::now()))
                .map_or(POLL_TIMEOUT, |d| d.min(POLL_TIMEOUT))
        } else {
            Duration::ZERO
        };
        if self.context.threads.receive_at_tick && !timeout.is_zero() {
            // Batched mode: do not wake per packet; sleep to the next tick (20 ms at most, so
            // commands wait no longer), then take everything that arrived meanwhile.
            std::thread::sleep(timeout.min(BATCHED_SLEEP_MAX));
            timeout = Duration::ZERO;
        }
        if let Err(error) = self.poll.poll(&mut self.events, Some(timeout)) {
            if error.kind() == io::ErrorKind::Interrupted {
                return true;
            }
            // epoll_wait fails only on a broken poller: give everything back and stop.
            tracing::error!(worker = self.index, %error, "media worker poll failed, stopping");
            return false;
        }
        if self.context.threads.busy_poll_us > 0 && !self.events.is_empty() {
            // Traffic: keep polling without sleeping for the configured window.
            self.spin_until = Some(
                Instant::now()
                    + Duration::from_micros(u64::from(self.context.threads.busy_poll_us)),
            );
        }
        let alive_ms = self.context.epoch.elapsed().as_millis() as u64;
        self.context.heartbeat.store(alive_ms, Ordering::Relaxed);
        if self.context.stop.load(Ordering::Acquire) || !self.apply_commands() {
            return false;
        }
        self.collect_ready();
        self.service_ready();
        self.receive_from_ring();
        self.run_due_sessions();
        self.run_due_rooms();
        self.publish_stats();
        // Before the next sleep: the turn's sends go to the kernel in one call.
        self.transmit.complete(&self.context.uring_sends);
        true
    }

    /// Runs the conference tick when it is due: every conference of this worker mixes one
    /// 20 ms frame, and its members send what they hear.
    fn run_due_rooms(&mut self) {
        let Some(at) = self.next_room_tick else {
            return;
        };
        let now = Instant::now();
        if at > now {
            return;
        }
        self.context
            .tick_lateness
            .record(now.saturating_duration_since(at).as_micros() as u64);
        let Worker {
            conferences,
            connections,
            slots,
            room_frame,
            transmit,
            context,
            ..
        } = self;
        for (&conference, room) in conferences.iter_mut() {
            room.tick(
                conference,
                now,
                connections,
                slots,
                room_frame,
                transmit,
                context,
            );
        }
        // Keep the cadence; after a long stall, skip ahead rather than burst.
        let next = at + ROOM_TICK;
        self.next_room_tick = if self.conferences.is_empty() {
            None
        } else if next + ROOM_TICK * 5 < now {
            Some(now + ROOM_TICK)
        } else {
            Some(next)
        };
    }

    /// Every [`STATS_PUBLISH_INTERVAL`]: publishes the counters of every connection whose
    /// counters changed.
    fn publish_stats(&mut self) {
        let now = Instant::now();
        if now < self.next_stats_publish {
            return;
        }
        self.next_stats_publish = now + STATS_PUBLISH_INTERVAL;
        for connection in self.connections.iter_mut().flatten() {
            connection.publish_stats();
        }
    }

    /// Runs every session whose deadline has come, and reschedules it.
    fn run_due_sessions(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, slot, generation))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(Some(connection)) = self.connections.get_mut(slot) else {
                continue;
            };
            if connection.generation != generation || connection.deadline != at {
                continue; // stale entry
            }
            self.context
                .tick_lateness
                .record(now.saturating_duration_since(at).as_micros() as u64);
            connection.session.handle_timeout(now);
            connection.consume_heard(&self.context);
            connection.flush(&mut self.transmit, &self.context);
            self.schedule(slot);
        }
    }

    /// Puts a connection's current session deadline in the heap (if it moved).
    fn schedule(&mut self, slot: usize) {
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        let at = connection.session.poll_timeout();
        connection.deadline = at;
        self.deadlines
            .push(Reverse((at, slot, connection.generation)));
    }

    /// Takes connections handed over by other workers, then applies every queued command;
    /// false once the control plane is gone.
    fn apply_commands(&mut self) -> bool {
        self.take_arrivals();
        loop {
            match self.inbox.try_recv() {
                Ok(command) => self.apply(command),
                Err(TryRecvError::Empty) => {
                    self.take_arrivals();
                    return true;
                }
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Applies one command, or parks it while its connection is in transit to this worker.
    fn apply(&mut self, command: WorkerCommand) {
        if let Some(key) = command.connection() {
            if self.expected.contains(&key) && !self.slots.contains_key(&key) {
                self.parked.entry(key).or_default().push(command);
                return;
            }
        }
        match command {
            WorkerCommand::Open(new) => self.open(*new),
            WorkerCommand::Update { key, media } => self.update(key, *media),
            WorkerCommand::Close { key } => self.close(key),
            WorkerCommand::Expect { key } => {
                if !self.slots.contains_key(&key) {
                    self.expected.insert(key);
                }
            }
            WorkerCommand::MoveOut { key, to } => self.move_out(key, to),
            WorkerCommand::CreateConference { conference, spec } => {
                self.create_conference(conference, spec)
            }
            WorkerCommand::Join {
                conference,
                key,
                conferee,
            } => self.join(conference, key, conferee),
            WorkerCommand::SetConferee {
                conference,
                key,
                conferee,
            } => {
                if let Some(room) = self.conferences.get_mut(&conference) {
                    room.set_conferee(key, conferee);
                }
            }
            WorkerCommand::Leave { conference, key } => self.leave(conference, key),
            WorkerCommand::SetHairpin {
                conference,
                hairpin,
            } => {
                if let Some(room) = self.conferences.get_mut(&conference) {
                    room.hairpin = hairpin;
                }
            }
            WorkerCommand::CloseConference { conference } => self.close_conference(conference),
            WorkerCommand::Play {
                key,
                operation,
                source,
                gain,
            } => self.with_session(key, |session, now| {
                session.start_playout(now, operation, *source, gain)
            }),
            WorkerCommand::StopPlay { key, operation } => self.with_session(key, |session, now| {
                session.stop_playout(now, operation);
            }),
            WorkerCommand::SetPlayGain { key, gain } => self.with_session(key, |session, _| {
                session.set_playout_gain(gain);
            }),
            WorkerCommand::SetPlaySpeed { key, speed } => self.with_session(key, |session, _| {
                session.set_playout_speed(speed);
            }),
            WorkerCommand::SendDigits {
                key,
                digits,
                duration_ms,
                gap_ms,
            } => self.with_session(key, |session, now| {
                // The engine checked the digits and the negotiation; what is left is a session
                // rebuilt without telephone-event since, or a queue still full of digits.
                if let Err(error) = session.send_digits(now, &digits, duration_ms, gap_ms) {
                    tracing::warn!(key, %error, "digits not sent");
                }
            }),
            WorkerCommand::Record { key, operation } => {
                self.with_connection(key, |c| c.recording = Some(operation))
            }
            WorkerCommand::StopRecord { key, operation } => {
                let recorder = self.context.recorder.clone();
                self.with_connection(key, |c| {
                    if c.recording == Some(operation) {
                        c.recording = None;
                    }
                });
                // After the last audio the worker held: the recorder then finishes the file.
                let _ = recorder.try_send(super::recorder::RecorderCommand::Stop { operation });
            }
            WorkerCommand::Watch {
                key,
                operation,
                silence,
                needed,
            } => {
                let threshold = self.context.defaults.silence_threshold_dbfs;
                self.with_connection(key, |c| {
                    c.watches
                        .push(EnergyWatch::new(operation, silence, needed, threshold))
                })
            }
            WorkerCommand::Unwatch { key, operation } => {
                self.with_connection(key, |c| c.watches.retain(|w| w.operation != operation))
            }
            WorkerCommand::RoomPlay {
                conference,
                key,
                operation,
                source,
                gain,
            } => {
                if let Some(room) = self.conferences.get_mut(&conference) {
                    room.start_player(key, operation, *source, gain);
                }
            }
            WorkerCommand::RoomStopPlay { conference, key } => {
                if let Some(room) = self.conferences.get_mut(&conference) {
                    room.stop_player(key);
                }
            }
            WorkerCommand::RoomSetGain {
                conference,
                key,
                gain,
                speed,
            } => {
                if let Some(room) = self.conferences.get_mut(&conference) {
                    for (k, _, player) in &mut room.players {
                        if *k == key {
                            player.set_gain(gain);
                            if let Some(speed) = speed {
                                player.set_speed(speed);
                            }
                        }
                    }
                }
            }
            WorkerCommand::RoomRecord {
                conference,
                key,
                operation,
            } => {
                if let Some(room) = self.conferences.get_mut(&conference) {
                    room.start_recording(key, operation);
                }
            }
            WorkerCommand::RoomStopRecord {
                conference,
                key,
                operation,
            } => {
                if let Some(room) = self.conferences.get_mut(&conference) {
                    room.stop_recording(key);
                }
                let _ = self
                    .context
                    .recorder
                    .try_send(super::recorder::RecorderCommand::Stop { operation });
            }
        }
    }

    /// Changes what listens to a connection's audio (recording, energy watches), then hands
    /// over what was heard so far and switches the session's listening on or off.
    fn with_connection(&mut self, key: ConnectionKey, change: impl FnOnce(&mut Connection)) {
        let Some(&slot) = self.slots.get(&key) else {
            tracing::warn!(key, "command for a connection this worker does not carry");
            return;
        };
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        connection.consume_heard(&self.context);
        change(connection);
        let listening = connection.recording.is_some() || !connection.watches.is_empty();
        connection.session.set_listening(Instant::now(), listening);
        self.schedule(slot);
    }

    /// Runs `change` on a connection's session, then reschedules it (its deadlines may move).
    fn with_session(
        &mut self,
        key: ConnectionKey,
        change: impl FnOnce(&mut MediaSession, Instant),
    ) {
        let Some(&slot) = self.slots.get(&key) else {
            tracing::warn!(key, "command for a connection this worker does not carry");
            return;
        };
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        change(&mut connection.session, Instant::now());
        connection.flush(&mut self.transmit, &self.context);
        self.schedule(slot);
    }

    /// Installs the connections other workers handed over, and replays what was parked for
    /// them.
    fn take_arrivals(&mut self) {
        while let Ok(Moving(mut connection)) = self.arrivals.try_recv() {
            let key = connection.key;
            self.expected.remove(&key);
            self.next_generation += 1;
            connection.generation = self.next_generation;
            connection.queued = [false; 2];
            tracing::debug!(worker = self.index, key, "media connection arrived");
            self.install(*connection);
            for command in self.parked.remove(&key).unwrap_or_default() {
                self.apply(command);
            }
        }
    }

    /// Hands a connection to worker `to`: its sockets stop being watched here and its session
    /// travels as it is (SRTP and RTP state intact).
    fn move_out(&mut self, key: ConnectionKey, to: usize) {
        let Some(&slot) = self.slots.get(&key) else {
            tracing::warn!(key, "move of a connection this worker does not carry");
            return;
        };
        if let Some(Some(connection)) = self.connections.get_mut(slot) {
            connection.unwatch(self.poll.registry(), self.receive.as_mut());
        }
        // What the ring received for it before the disarm goes to its session before it leaves.
        self.receive_from_ring();
        self.slots.remove(&key);
        let Some(mut connection) = self.connections[slot].take() else {
            return;
        };
        self.free_slots.push(slot);
        // The next worker may close the sockets before this one's turn ends.
        self.transmit.submit();
        if let Some(conference) = connection.conference.take() {
            // The control plane takes a connection out of its conference before moving it.
            if let Some(room) = self.conferences.get_mut(&conference) {
                room.remove(key);
            }
            connection.session.leave_conference(Instant::now());
        }
        let Some(peer) = self.peers.get(to) else {
            tracing::error!(key, to, "move to a worker that does not exist; closing");
            self.finish(connection);
            return;
        };
        match peer.handoff.send(Moving(Box::new(connection))) {
            Ok(()) => {
                if let Err(error) = peer.waker.wake() {
                    tracing::warn!(worker = to, %error, "cannot wake media worker");
                }
            }
            Err(mpsc::SendError(Moving(connection))) => {
                tracing::error!(key, to, "receiving worker has stopped; closing");
                self.finish(*connection);
            }
        }
    }

    fn create_conference(&mut self, conference: ConferenceKey, spec: ConferenceSpec) {
        if self.conferences.contains_key(&conference) {
            tracing::error!(
                conference,
                "duplicate conference key, keeping the existing one"
            );
            return;
        }
        self.conferences.insert(conference, Conference::new(spec));
        if self.room_frame.len() < self.conferences[&conference].mixer.frame_len() {
            let len = self.conferences[&conference].mixer.frame_len();
            self.room_frame.resize(len, 0);
        }
        if self.next_room_tick.is_none() {
            let now = Instant::now();
            let since = now
                .saturating_duration_since(self.context.tick_epoch)
                .as_nanos();
            let tick = ROOM_TICK.as_nanos();
            let k = since / tick + 1;
            self.next_room_tick =
                Some(self.context.tick_epoch + Duration::from_nanos((k * tick) as u64));
        }
        tracing::debug!(
            worker = self.index,
            conference,
            rate = spec.rate,
            "conference created"
        );
    }

    fn join(&mut self, conference: ConferenceKey, key: ConnectionKey, conferee: ConfereeSpec) {
        let Some(&slot) = self.slots.get(&key) else {
            tracing::warn!(
                key,
                conference,
                "join of a connection this worker does not carry"
            );
            return;
        };
        let Some(room) = self.conferences.get_mut(&conference) else {
            tracing::warn!(
                key,
                conference,
                "join of a conference this worker does not mix"
            );
            return;
        };
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        if let Err(error) = room.add(key, conferee) {
            tracing::error!(key, conference, %error, "conference refused the connection");
            return;
        }
        if room.join_tone && room.members.len() > 1 {
            let tone_key = room.tone_key;
            room.stop_player(tone_key);
            room.start_player(tone_key, 0, join_tone(), 1.0);
        }
        if let Err(error) = connection.session.enter_conference(room.rate) {
            tracing::error!(key, conference, %error, "connection cannot take part in the mix");
        }
        connection.conference = Some(conference);
        self.schedule(slot);
    }

    fn leave(&mut self, conference: ConferenceKey, key: ConnectionKey) {
        if let Some(room) = self.conferences.get_mut(&conference) {
            room.remove(key);
        }
        let Some(&slot) = self.slots.get(&key) else {
            return;
        };
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        if connection.conference == Some(conference) {
            connection.conference = None;
            connection.session.leave_conference(Instant::now());
            self.schedule(slot);
        }
    }

    fn close_conference(&mut self, conference: ConferenceKey) {
        let Some(room) = self.conferences.get(&conference) else {
            return;
        };
        let members: Vec<ConnectionKey> = room.members.iter().map(|(key, _)| *key).collect();
        let recordings: Vec<u64> = room.recordings.iter().map(|(_, op)| *op).collect();
        for key in members {
            self.leave(conference, key);
        }
        for operation in recordings {
            let _ = self
                .context
                .recorder
                .try_send(super::recorder::RecorderCommand::Stop { operation });
        }
        self.conferences.remove(&conference);
        if self.conferences.is_empty() {
            self.next_room_tick = None;
        }
        tracing::debug!(worker = self.index, conference, "conference closed");
    }

    /// Takes ownership of a new connection and starts watching its sockets.
    fn open(&mut self, new: NewConnection) {
        if self.slots.contains_key(&new.key) {
            // The engine refuses duplicate keys; keep the newer connection if one slips through.
            tracing::error!(
                worker = self.index,
                key = new.key,
                "duplicate connection key, closing the older one"
            );
            self.close(new.key);
        }
        self.expected.remove(&new.key);
        self.next_generation += 1;
        let connection = Connection::new(
            new,
            &self.context.defaults,
            self.next_generation,
            group_tick_epoch(self.context.tick_epoch, self.next_generation),
        );
        self.install(connection);
    }

    /// Puts a connection in a slot, watches its sockets and schedules its session.
    fn install(&mut self, mut connection: Connection) {
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        let watched = match self.receive.as_mut() {
            Some(ring) => connection.arm(ring, slot),
            None => connection.register(self.poll.registry(), slot),
        };
        if let Err(error) = watched {
            tracing::error!(
                worker = self.index,
                key = connection.key,
                %error,
                "cannot watch media sockets, closing connection"
            );
            connection.unwatch(self.poll.registry(), self.receive.as_mut());
            self.finish(connection);
            self.free_slots.push(slot);
            return;
        }
        tracing::debug!(
            worker = self.index,
            key = connection.key,
            slot,
            "media connection taken over"
        );
        self.slots.insert(connection.key, slot);
        self.connections[slot] = Some(connection);
        self.schedule(slot);
    }

    /// Applies a new media spec: a new peer only re-targets the session; a new mode, format or
    /// key set rebuilds it (counters carry over).
    fn update(&mut self, key: ConnectionKey, media: MediaSpec) {
        let Some(&slot) = self.slots.get(&key) else {
            tracing::warn!(key, "update for a connection this worker does not carry");
            return;
        };
        let defaults = self.context.defaults;
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        let only_peer_changed = connection.media.mode == media.mode
            && connection.media.format == media.format
            && connection.media.srtp == media.srtp
            && connection.media.expects_rtp == media.expects_rtp;
        if only_peer_changed {
            connection
                .session
                .set_remote(media.remote_rtp, media.remote_rtcp);
        } else {
            connection.base = connection.current_stats();
            if connection.session.is_sending_digits() {
                // Their payload type and clock may not exist in the new format.
                tracing::warn!(
                    key,
                    "media changed while sending digits: the rest are dropped"
                );
            }
            let playout = connection.session.take_playout();
            connection.session = new_session(key, &media, &defaults, connection.tick_epoch);
            if let Some(playout) = playout {
                // A prompt keeps playing across a codec change.
                connection.session.resume_playout(Instant::now(), playout);
            }
            let rate = connection
                .conference
                .and_then(|c| self.conferences.get(&c))
                .map(|room| room.rate);
            if let Some(rate) = rate {
                if let Err(error) = connection.session.enter_conference(rate) {
                    tracing::error!(key, %error, "rebuilt session cannot take part in the mix");
                }
            }
            let listening = connection.recording.is_some() || !connection.watches.is_empty();
            connection.session.set_listening(Instant::now(), listening);
        }
        tracing::debug!(key, mode = ?media.mode, rebuilt = !only_peer_changed, "media connection updated");
        connection.media = media;
        self.schedule(slot);
    }

    /// Closes one connection.
    fn close(&mut self, key: ConnectionKey) {
        let Some(slot) = self.slots.remove(&key) else {
            tracing::warn!(key, "close for a connection this worker does not carry");
            return;
        };
        let Some(mut connection) = self.connections[slot].take() else {
            return;
        };
        self.free_slots.push(slot);
        if let Some(room) = connection
            .conference
            .and_then(|c| self.conferences.get_mut(&c))
        {
            room.remove(key);
        }
        connection.consume_heard(&self.context);
        if let Some(operation) = connection.recording.take() {
            let _ = self
                .context
                .recorder
                .try_send(super::recorder::RecorderCommand::Stop { operation });
        }
        connection.unwatch(self.poll.registry(), self.receive.as_mut());
        self.finish(connection);
    }

    /// Closes every connection (at stop).
    fn close_all(&mut self) {
        self.slots.clear();
        for slot in 0..self.connections.len() {
            if let Some(mut connection) = self.connections[slot].take() {
                connection.unwatch(self.poll.registry(), self.receive.as_mut());
                self.finish(connection);
            }
        }
    }

    /// Drops the sockets, then gives the ports back and reports `Closed`, in that order, so a
    /// port is never handed out while its old socket is still open.
    fn finish(&mut self, connection: Connection) {
        let stats = connection.current_stats();
        let Connection {
            key,
            rtp_port,
            sockets,
            shared,
            ..
        } = connection;
        shared.publish(&stats);
        // Sends still queued name these sockets by fd number: hand them to the kernel first.
        self.transmit.submit();
        drop(sockets);
        self.context.port_return.give_back(rtp_port);
        tracing::debug!(
            worker = self.index,
            key,
            rtp_port,
            "media connection closed"
        );
        self.context.emit(EngineEvent::Closed { key, stats });
    }

    /// Turns this turn's readiness events into the `ready` list, after last turn's carry-over.
    fn collect_ready(&mut self) {
        // `ready` is empty here; the carry-over (already flagged as queued) goes first.
        mem::swap(&mut self.ready, &mut self.carry_over);
        for event in self.events.iter() {
            let token = event.token();
            if token == WAKER_TOKEN {
                continue;
            }
            let (slot, leg) = split_token(token);
            let Some(Some(connection)) = self.connections.get_mut(slot) else {
                continue;
            };
            if !mem::replace(&mut connection.queued[leg as usize], true) {
                self.ready.push(token);
            }
        }
    }

    /// Drains every socket in `ready`, carrying over the ones left with packets.
    fn service_ready(&mut self) {
        let mut ready = mem::take(&mut self.ready);
        for &token in &ready {
            if self.drain_socket(token) == Drain::MoreWaiting {
                self.carry_over.push(token);
            }
        }
        ready.clear();
        self.ready = ready;
    }

    /// Drains one socket and publishes its connection's counters.
    fn drain_socket(&mut self, token: Token) -> Drain {
        let (slot, leg) = split_token(token);
        // Tokens of a slot closed (or reused) this turn find nothing, or nothing to read.
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return Drain::Empty;
        };
        let drain = connection.drain(leg, &mut self.batch);
        connection.queued[leg as usize] = drain == Drain::MoreWaiting;
        connection.flush(&mut self.transmit, &self.context);
        schedule_if_earlier(&mut self.deadlines, slot, connection);
        drain
    }

    /// With a receive ring: runs the receives queued since the last call (one system call) and
    /// hands each datagram to its connection's session, then arms again the requests that ended.
    fn receive_from_ring(&mut self) {
        let Some(ring) = self.receive.as_mut() else {
            return;
        };
        ring.poll();
        let now = Instant::now();
        let Worker {
            connections,
            deadlines,
            transmit,
            context,
            rearm,
            index,
            ..
        } = self;
        ring.take(|tag, received| {
            let (slot, leg) = split_ring_tag(tag);
            let Some(Some(connection)) = connections.get_mut(slot) else {
                return; // closed since
            };
            if connection.ring_tags.map(|tags| tags[leg as usize]) != Some(tag) {
                return; // an earlier connection of this slot
            }
            match received {
                Received::Datagram {
                    source,
                    buf,
                    len,
                    truncated,
                } => {
                    connection.deliver(now, leg, source, buf, len, truncated);
                    connection.flush(transmit, context);
                    schedule_if_earlier(deadlines, slot, connection);
                }
                Received::Ended { error } => {
                    if !connection.armed {
                        return; // disarmed: closing or leaving this worker
                    }
                    match error {
                        Some(error)
                            if error.raw_os_error() != Some(libc::ENOBUFS)
                                && !connection.receive_failure_logged =>
                        {
                            connection.receive_failure_logged = true;
                            tracing::warn!(worker = *index, key = connection.key, ?leg, %error, "media socket receive failed; reading it again");
                        }
                        _ => {}
                    }
                    rearm.push(tag);
                }
            }
        });
        for tag in self.rearm.drain(..) {
            let (slot, leg) = split_ring_tag(tag);
            if let Some(Some(connection)) = self.connections.get(slot) {
                if let Err(error) = ring.arm(connection.socket(leg).as_raw_fd(), tag) {
                    tracing::error!(worker = self.index, key = connection.key, ?leg, %error, "cannot read media socket again");
                }
            }
        }
        let counts = ring.counts();
        let published = mem::replace(&mut self.receives_published, counts);
        add_new(
            &self.context.uring_receives,
            counts.datagrams,
            published.datagrams,
        );
        add_new(
            &self.context.receive_buffers_exhausted,
            counts.out_of_buffers,
            published.out_of_buffers,
        );
    }

    #[cfg(test)]
    fn connection_by_key(&mut self, key: ConnectionKey) -> Option<&mut Connection> {
        let slot = *self.slots.get(&key)?;
        self.connections.get_mut(slot)?.as_mut()
    }
}

impl Connection {
    fn new(
        new: NewConnection,
        defaults: &SessionDefaults,
        generation: u64,
        tick_epoch: Instant,
    ) -> Connection {
        let session = new_session(new.key, &new.media, defaults, tick_epoch);
        let deadline = session.poll_timeout();
        Connection {
            tick_epoch,
            key: new.key,
            media: new.media,
            session,
            base: MediaStats::default(),
            rtp_port: new.rtp_port,
            sockets: new.sockets,
            stats: MediaStats::default(),
            shared: new.stats,
            queued: [false; 2],
            generation,
            deadline,
            conference: None,
            recording: None,
            watches: Vec::new(),
            ring_tags: None,
            armed: false,
            receive_failure_logged: false,
        }
    }

    /// Hands the caller's audio decoded since last time to the recorder and the energy
    /// watches; a watch whose condition is met reports and goes.
    fn consume_heard(&mut self, context: &WorkerContext) {
        if self.recording.is_none() && self.watches.is_empty() {
            return;
        }
        let Connection {
            key,
            session,
            recording,
            watches,
            ..
        } = self;
        let key = *key;
        session.take_heard(|samples, rate| {
            if let Some(operation) = *recording {
                context.record(key, operation, samples, rate);
            }
            watches.retain_mut(|watch| {
                if watch.feed(samples, rate) {
                    context.emit(EngineEvent::Energy {
                        key,
                        operation: watch.operation,
                        silence: watch.want_silence,
                    });
                    false
                } else {
                    true
                }
            });
        });
    }

    /// Watches both sockets for readability under the slot's tokens.
    fn register(&mut self, registry: &Registry, slot: usize) -> io::Result<()> {
        let sockets = &mut self.sockets;
        registry.register(
            &mut sockets.rtp,
            token_for(slot, Leg::Rtp),
            Interest::READABLE,
        )?;
        registry.register(
            &mut sockets.rtcp,
            token_for(slot, Leg::Rtcp),
            Interest::READABLE,
        )
    }

    /// Starts a ring receive on both sockets, tagged with the slot and this connection's
    /// generation.
    fn arm(&mut self, ring: &mut RecvRing, slot: usize) -> io::Result<()> {
        let tags = [
            ring_tag(slot, Leg::Rtp, self.generation),
            ring_tag(slot, Leg::Rtcp, self.generation),
        ];
        self.ring_tags = Some(tags);
        self.armed = true;
        ring.arm(self.sockets.rtp.as_raw_fd(), tags[0])?;
        ring.arm(self.sockets.rtcp.as_raw_fd(), tags[1])
    }

    /// Stops reading both sockets: ends their ring receives (returning once the kernel has let
    /// go of the sockets) or takes them out of epoll.
    fn unwatch(&mut self, registry: &Registry, ring: Option<&mut RecvRing>) {
        match (ring, self.ring_tags) {
            (Some(ring), Some([rtp, rtcp])) if self.armed => {
                self.armed = false;
                ring.disarm(&[
                    (self.sockets.rtp.as_raw_fd(), rtp),
                    (self.sockets.rtcp.as_raw_fd(), rtcp),
                ]);
            }
            _ => self.deregister(registry),
        }
    }

    /// Stops watching both sockets (errors only mean one was never registered).
    fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sockets.rtp);
        let _ = registry.deregister(&mut self.sockets.rtcp);
    }

    fn socket(&self, leg: Leg) -> &UdpSocket {
        match leg {
            Leg::Rtp => &self.sockets.rtp,
            Leg::Rtcp => &self.sockets.rtcp,
        }
    }

    /// Reads one socket until `WouldBlock`, at most `MAX_PACKETS_PER_WAKEUP` packets, feeding
    /// each datagram to the session.
    fn drain(&mut self, leg: Leg, batch: &mut RecvBatch) -> Drain {
        let mut taken = 0;
        while taken < MAX_PACKETS_PER_WAKEUP {
            let asked = (MAX_PACKETS_PER_WAKEUP - taken).min(BATCH);
            let count = match batch.receive(self.socket(leg), asked) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Drain::Empty,
                Err(error) if is_transient(&error) => {
                    taken += 1;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(key = self.key, ?leg, %error, "media socket receive failed");
                    return Drain::Empty;
                }
            };
            // Taken after the read, so no datagram is stamped earlier than it arrived.
            let now = Instant::now();
            for i in 0..count {
                let (buffer, length, source, truncated) = batch.datagram(i);
                let Some(source) = source else { continue };
                self.deliver(now, leg, source, buffer, length, truncated);
            }
            taken += count;
            if count < asked {
                // Fewer than asked: the queue is empty; a later datagram raises a new edge.
                return Drain::Empty;
            }
        }
        Drain::MoreWaiting
    }

    /// Hands one datagram read from the socket of `leg` (`buf[..len]`) to the session; one
    /// longer than any packet we accept (`truncated`) is only counted as malformed.
    fn deliver(
        &mut self,
        now: Instant,
        leg: Leg,
        source: SocketAddr,
        buf: &mut [u8],
        len: usize,
        truncated: bool,
    ) {
        if truncated {
            self.session.note_malformed();
            return;
        }
        match leg {
            Leg::Rtp => self.session.handle_rtp(now, source, buf, len),
            Leg::Rtcp => self.session.handle_rtcp(now, source, buf, len),
        }
    }

    /// Sends what the session queued, reports its events and publishes its RTP packet and byte
    /// counts (the other counters go out every [`STATS_PUBLISH_INTERVAL`]).
    fn flush(&mut self, out: &mut Transmitter, context: &WorkerContext) {
        self.transmit(out);
        while let Some(event) = self.session.poll_event() {
            let event = match event {
                SessionEvent::FirstPacket { source } => {
                    self.shared.publish_last_source(source);
                    self.stats.last_source = Some(source);
                    EngineEvent::FirstPacket {
                        key: self.key,
                        source,
                    }
                }
                SessionEvent::Latched { source } => {
                    self.shared.publish_last_source(source);
                    EngineEvent::Latched {
                        key: self.key,
                        source,
                    }
                }
                SessionEvent::Digit(d) => EngineEvent::Digit {
                    key: self.key,
                    digit: d.digit,
                    duration_ms: d.duration_ms,
                },
                SessionEvent::RtpTimeout { .. } => EngineEvent::RtpTimeout { key: self.key },
                SessionEvent::PlayoutDone { operation } => EngineEvent::PlayoutDone {
                    key: self.key,
                    operation,
                },
            };
            context.emit(event);
        }
        let [received, received_bytes, sent, sent_bytes] = self.session.traffic();
        let base = &self.base;
        let traffic = [
            base.rtp_packets_received + received,
            base.rtp_bytes_received + received_bytes,
            base.rtp_packets_sent + sent,
            base.rtp_bytes_sent + sent_bytes,
        ];
        let published = &mut self.stats;
        if traffic
            != [
                published.rtp_packets_received,
                published.rtp_bytes_received,
                published.rtp_packets_sent,
                published.rtp_bytes_sent,
            ]
        {
            [
                published.rtp_packets_received,
                published.rtp_bytes_received,
                published.rtp_packets_sent,
                published.rtp_bytes_sent,
            ] = traffic;
            self.shared.publish_traffic(published);
        }
    }

    /// Publishes all counters for the control plane if they changed since last time.
    fn publish_stats(&mut self) {
        let current = self.current_stats();
        if current != self.stats {
            self.shared.publish(&current);
            self.stats = current;
        }
    }

    /// This session's counters plus those of the sessions it replaced.
    fn current_stats(&self) -> MediaStats {
        add_stats(&self.base, &self.session.stats(), self.stats.last_source)
    }

    /// Sends every packet the session has queued: written straight into a free ring slot and
    /// queued when the worker has a ring, else copied into the send buffer and sent with `sendto`.
    fn transmit(&mut self, out: &mut Transmitter) {
        loop {
            if let Some(ring) = out.ring.as_mut() {
                if let Some(buffer) = ring.packet_buffer() {
                    let Some(t) = self.session.poll_transmit(buffer) else {
                        return;
                    };
                    let socket = self.socket(Leg::of(t.channel));
                    ring.send(socket, t.len, t.destination, self.key);
                    continue;
                }
            }
            let Some(t) = self.session.poll_transmit(&mut out.buffer[..]) else {
                return;
            };
            self.send(t.channel, &out.buffer[..t.len], t.destination);
        }
    }

    /// Sends a datagram from the socket of `channel`; a full send buffer drops it.
    fn send(&self, channel: Channel, packet: &[u8], target: SocketAddr) {
        let leg = Leg::of(channel);
        if let Err(error) = self.socket(leg).send_to(packet, target) {
            tracing::trace!(key = self.key, ?leg, %target, %error, "media packet not sent");
        }
    }
}

impl Transmitter {
    /// A transmitter for worker `worker`; with `io_uring` it tries to set up a ring of `entries`
    /// (falling back to `sendto`, warned once, when the kernel refuses).
    fn new(io_uring: bool, entries: u32, worker: usize) -> Transmitter {
        Transmitter {
            buffer: Box::new([0; MAX_PACKET]),
            ring: if io_uring {
                SendRing::start(entries, worker)
            } else {
                None
            },
            published: 0,
        }
    }

    /// Hands queued sends to the kernel (before a socket they may name closes or moves away).
    fn submit(&mut self) {
        if let Some(ring) = self.ring.as_mut() {
            ring.submit();
        }
    }

    /// End of a turn: submits the turn's sends, reaps completions and adds what was sent to
    /// `sent_total`.
    fn complete(&mut self, sent_total: &AtomicU64) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        ring.complete();
        let sent = ring.counts().sent;
        add_new(sent_total, sent, mem::replace(&mut self.published, sent));
    }
}

/// Adds to an engine-wide `total` what a worker's own running count gained since it was last
/// `published` (no shared write when nothing changed).
fn add_new(total: &AtomicU64, count: u64, published: u64) {
    if count != published {
        total.fetch_add(count - published, Ordering::Relaxed);
    }
}

impl Conference {
    fn new(spec: ConferenceSpec) -> Conference {
        let mixer = Mixer::new(MixerConfig {
            sample_rate: spec.rate,
            frame_ms: ROOM_TICK.as_millis() as u32,
            max_participants: MAX_PARTICIPANTS,
        });
        let frame = mixer.frame_len();
        Conference {
            mixer,
            rate: spec.rate,
            hairpin: spec.hairpin,
            members: Vec::new(),
            hairpin_frames: [vec![0; frame], vec![0; frame]],
            hairpin_heard: [false; 2],
            players: Vec::new(),
            recordings: Vec::new(),
            join_tone: spec.join_tone,
            tone_key: 0,
        }
    }

    /// A playout into the mix (the control plane has promoted a hairpin first).
    fn start_player(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        source: crate::media::player::PlaySource,
        gain: f32,
    ) {
        let Ok(id) = participant_id(key) else { return };
        if let Err(error) = self.mixer.add(id, ParticipantFlags::default()) {
            tracing::error!(key, %error, "conference cannot take the playout");
            return;
        }
        self.players.push((
            key,
            operation,
            crate::media::player::Player::new(source, gain),
        ));
    }

    fn stop_player(&mut self, key: ConnectionKey) {
        self.players.retain(|(k, _, _)| *k != key);
        if let Ok(id) = participant_id(key) {
            self.mixer.remove(id);
        }
    }

    /// A recording of the mix: a monitor hears everyone.
    fn start_recording(&mut self, key: ConnectionKey, operation: u64) {
        let Ok(id) = participant_id(key) else { return };
        let monitor = ParticipantFlags {
            monitor: true,
            ..ParticipantFlags::default()
        };
        if let Err(error) = self.mixer.add(id, monitor) {
            tracing::error!(key, %error, "conference cannot take the recording");
            return;
        }
        self.recordings.push((key, operation));
    }

    fn stop_recording(&mut self, key: ConnectionKey) {
        self.recordings.retain(|(k, _)| *k != key);
        if let Ok(id) = participant_id(key) {
            self.mixer.remove(id);
        }
    }

    fn add(&mut self, key: ConnectionKey, conferee: ConfereeSpec) -> Result<(), String> {
        let id = participant_id(key)?;
        self.mixer
            .add(id, conferee.flags())
            .map_err(|e| e.to_string())?;
        self.members.push((key, conferee));
        self.apply_roles(key, conferee);
        Ok(())
    }

    fn remove(&mut self, key: ConnectionKey) {
        self.members.retain(|(k, _)| *k != key);
        if let Ok(id) = participant_id(key) {
            self.mixer.remove(id);
        }
    }

    fn set_conferee(&mut self, key: ConnectionKey, conferee: ConfereeSpec) {
        let Some(member) = self.members.iter_mut().find(|(k, _)| *k == key) else {
            tracing::warn!(key, "attributes for a connection not in the conference");
            return;
        };
        member.1 = conferee;
        if let Ok(id) = participant_id(key) {
            let _ = self.mixer.set_flags(id, conferee.flags());
        }
        self.apply_roles(key, conferee);
    }

    /// Coach and pupil: one of each per conference; a role given to another moves.
    fn apply_roles(&mut self, key: ConnectionKey, conferee: ConfereeSpec) {
        let Ok(id) = participant_id(key) else { return };
        let result = if conferee.coach {
            self.mixer.set_coach(Some(id))
        } else if self.mixer.coach() == Some(id) {
            self.mixer.set_coach(None)
        } else {
            Ok(())
        };
        let result = result.and(if conferee.pupil {
            self.mixer.set_pupil(Some(id))
        } else if self.mixer.pupil() == Some(id) {
            self.mixer.set_pupil(None)
        } else {
            Ok(())
        });
        if let Err(error) = result {
            tracing::warn!(key, %error, "conference role not applied");
        }
    }

    /// One 20 ms tick: capture every present member's audio, mix (or, hairpinned, swap the two
    /// frames), and send each member what it hears. Members in transit to this worker are
    /// silent and hear nothing until they arrive.
    #[allow(clippy::too_many_arguments)]
    fn tick(
        &mut self,
        conference: ConferenceKey,
        now: Instant,
        connections: &mut [Option<Connection>],
        slots: &HashMap<ConnectionKey, usize>,
        frame: &mut [i16],
        out: &mut Transmitter,
        context: &WorkerContext,
    ) {
        let n = self.mixer.frame_len();
        let frame = &mut frame[..n];
        let hairpin = self.hairpin && self.members.len() <= 2;
        for (i, &(key, conferee)) in self.members.iter().enumerate() {
            let connection = slots
                .get(&key)
                .and_then(|&slot| connections.get_mut(slot))
                .and_then(Option::as_mut);
            let Some(connection) = connection else {
                if hairpin {
                    self.hairpin_heard[i] = false;
                }
                continue;
            };
            if hairpin {
                let voiced = connection.session.capture(now, &mut self.hairpin_frames[i]);
                self.hairpin_heard[i] = voiced && conferee.flags().contributes();
            } else if connection.session.capture(now, frame) {
                if let Ok(id) = participant_id(key) {
                    self.mixer.contribute(id, frame);
                }
            }
            connection.consume_heard(context);
        }
        if !hairpin {
            let rate = self.rate;
            let mut finished = Vec::new();
            for (key, operation, player) in &mut self.players {
                let ok = player.fill(frame, rate);
                if let Ok(id) = participant_id(*key) {
                    self.mixer.contribute(id, frame);
                }
                if player.is_done() || !ok {
                    finished.push((*key, *operation));
                }
            }
            self.mixer.mix();
            for (key, operation) in finished {
                self.stop_player(key);
                context.emit(EngineEvent::PlayoutDone { key, operation });
            }
            for &(key, operation) in &self.recordings {
                let Some(mix) = participant_id(key)
                    .ok()
                    .and_then(|id| self.mixer.output(id))
                else {
                    continue;
                };
                context.record(key, operation, mix, rate);
            }
        }
        frame.fill(0);
        let pair = self.members.len() == 2;
        for (i, &(key, _)) in self.members.iter().enumerate() {
            let connection = slots
                .get(&key)
                .and_then(|&slot| connections.get_mut(slot))
                .and_then(Option::as_mut);
            let Some(connection) = connection else {
                continue;
            };
            if hairpin {
                let other = 1 - i.min(1);
                let heard = if pair && self.hairpin_heard[other] {
                    &self.hairpin_frames[other][..]
                } else {
                    &frame[..]
                };
                connection.session.play(now, heard);
            } else if let Some(mix) = participant_id(key)
                .ok()
                .and_then(|id| self.mixer.output(id))
            {
                connection.session.play(now, mix);
            }
            connection.flush(out, context);
        }
        if !hairpin {
            while let Some(event) = self.mixer.poll_talker_event() {
                let (id, talking) = match event {
                    TalkerEvent::Started { id } => (id, true),
                    TalkerEvent::Stopped { id } => (id, false),
                };
                context.emit(EngineEvent::Talker {
                    conference,
                    key: ConnectionKey::from(id),
                    talking,
                });
            }
        }
    }
}

/// The mixer's id of a connection (control-plane ids are 24-bit; wider keys cannot mix).
fn participant_id(key: ConnectionKey) -> Result<u32, String> {
    u32::try_from(key).map_err(|_| format!("connection key {key} is too large to mix"))
}

/// A session for `media` with the worker's defaults; a spec the session refuses (a codec
/// that cannot start) falls back to an idle session that only counts, and says so.
fn new_session(
    key: ConnectionKey,
    media: &MediaSpec,
    defaults: &SessionDefaults,
    tick_epoch: Instant,
) -> MediaSession {
    let now = Instant::now();
    let ntp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(ntp_timestamp_from_unix)
        .unwrap_or(0);
    let config = SessionConfig {
        local_ssrc: rand::random(),
        cname: format!("callbridge-{key}"),
        ntp_at_start: ntp,
        format: media.format,
        mode: media.mode,
        remote_rtp: media.remote_rtp,
        remote_rtcp: media.remote_rtcp,
        latching: defaults.latching,
        srtp: media.srtp.clone(),
        rtp_timeout: defaults.rtp_timeout.filter(|_| media.expects_rtp),
        jitter_min_ms: defaults.jitter_min_ms,
        jitter_max_ms: defaults.jitter_max_ms,
        rtcp_interval: defaults.rtcp_interval,
        seed: rand::random(),
        inband_dtmf: defaults.inband_dtmf,
        tick_epoch,
    };
    match MediaSession::new(config.clone(), now) {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(key, %error, "media session refused its spec; counting only");
            let idle = SessionConfig {
                format: None,
                srtp: None,
                mode: super::MediaMode::Idle,
                ..config
            };
            MediaSession::new(idle, now).expect("a session without format or keys cannot fail")
        }
    }
}

/// `base` (earlier sessions) plus `current`.
fn add_stats(
    base: &MediaStats,
    current: &SessionStats,
    last_source: Option<SocketAddr>,
) -> MediaStats {
    MediaStats {
        rtp_packets_received: base.rtp_packets_received + current.rtp_packets_received,
        rtp_bytes_received: base.rtp_bytes_received + current.rtp_bytes_received,
        rtp_packets_sent: base.rtp_packets_sent + current.rtp_packets_sent,
        rtp_bytes_sent: base.rtp_bytes_sent + current.rtp_bytes_sent,
        rtcp_packets_received: base.rtcp_packets_received + current.rtcp_packets_received,
        last_source,
        malformed_packets: base.malformed_packets + current.malformed_packets,
        rtcp_packets_sent: base.rtcp_packets_sent + current.rtcp_packets_sent,
        foreign_source_dropped: base.foreign_source_dropped + current.foreign_source_dropped,
        srtp_rejected: base.srtp_rejected + current.srtp_rejected,
        packets_lost: base.packets_lost + i64::from(current.rtcp.cumulative_lost),
        concealed_frames: base.concealed_frames + current.jitter.concealed,
        late_packets: base.late_packets + current.jitter.late,
        jitter_ms: f64::from(current.rtcp.jitter_ms),
        rtt_ms: current.rtcp.rtt_ms.map(f64::from).unwrap_or(base.rtt_ms),
        digits_received: base.digits_received + current.digits_received,
        digits_sent: base.digits_sent + current.digits_sent,
    }
}

impl WorkerContext {
    /// Hands audio of a recording to the recorder thread in frame-sized messages; a full queue
    /// drops (and logs) rather than wait.
    fn record(&self, key: ConnectionKey, operation: u64, samples: &[i16], rate: u32) {
        for chunk in samples.chunks(super::recorder::FRAME_SAMPLES) {
            let mut frame = Box::new([0i16; super::recorder::FRAME_SAMPLES]);
            frame[..chunk.len()].copy_from_slice(chunk);
            let sent = self
                .recorder
                .try_send(super::recorder::RecorderCommand::Frame {
                    operation,
                    rate,
                    len: chunk.len(),
                    samples: frame,
                });
            if sent.is_err() {
                tracing::warn!(key, operation, "recorder queue full: audio dropped");
            }
        }
    }

    /// Reports to the control plane without ever blocking; a full queue drops and counts.
    fn emit(&self, event: EngineEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(EventSendError::Full(event)) => {
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
                // Key and kind only: the event may carry a caller's address (personal data).
                let (key, kind) = match event {
                    EngineEvent::Closed { key, .. } => (key, "closed"),
                    EngineEvent::FirstPacket { key, .. } => (key, "first_packet"),
                    EngineEvent::Latched { key, .. } => (key, "latched"),
                    EngineEvent::Digit { key, .. } => (key, "digit"),
                    EngineEvent::RtpTimeout { key } => (key, "rtp_timeout"),
                    EngineEvent::Talker { key, .. } => (key, "talker"),
                    EngineEvent::PlayoutDone { key, .. } => (key, "playout_done"),
                    EngineEvent::RecordingDone { key, .. } => (key, "recording_done"),
                    EngineEvent::Energy { key, .. } => (key, "energy"),
                };
                tracing::warn!(key, kind, "engine event queue full, event dropped");
            }
            // The control plane is gone (shutdown): nobody is left to tell.
            Err(EventSendError::Closed(_)) => {}
        }
    }
}

/// Errors after which the socket may still hold packets: ICMP-induced errors and signals.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

/// Puts a connection's session deadline in the heap when it moved earlier than the one there
/// (a later one is found when the earlier entry comes due).
fn schedule_if_earlier(
    deadlines: &mut BinaryHeap<Reverse<(Instant, usize, u64)>>,
    slot: usize,
    connection: &mut Connection,
) {
    let at = connection.session.poll_timeout();
    if at < connection.deadline {
        connection.deadline = at;
        deadlines.push(Reverse((at, slot, connection.generation)));
    }
}

/// Tick groups per worker. A worker runs the ticks of all the sessions on one grid at once, in
/// one burst; it spreads its connections over this many grids (round robin at open), each
/// `20 ms / TICK_GROUPS` after the last, so a burst carries a quarter of the worker's calls.
pub(super) const TICK_GROUPS: usize = 4;

/// Where worker `index` of `workers` starts its first tick grid: `epoch` plus its share of one
/// 20 ms tick divided among all the workers' tick groups. With the group offsets of
/// [`group_tick_epoch`] the grids of all workers and groups interleave evenly, so no two
/// bursts start at the same instant and the cores are less often all busy at once when a
/// packet, a command or another thread needs one.
pub(super) fn staggered_tick_epoch(epoch: Instant, index: usize, workers: usize) -> Instant {
    let phases = (workers.max(1) * TICK_GROUPS) as u64;
    let share = ROOM_TICK.as_nanos() as u64 * (index % workers.max(1)) as u64 / phases;
    epoch + Duration::from_nanos(share)
}

/// The grid of the connection with this `generation` on a worker whose first grid starts at
/// `worker_epoch`: group `generation % TICK_GROUPS`, `20 ms / TICK_GROUPS` apart.
fn group_tick_epoch(worker_epoch: Instant, generation: u64) -> Instant {
    let group = generation % TICK_GROUPS as u64;
    worker_epoch + Duration::from_nanos(ROOM_TICK.as_nanos() as u64 * group / TICK_GROUPS as u64)
}

/// The `user_data` of a ring receive: generation (30 bits), slot (32 bits), leg (1 bit); the
/// top bit stays clear.
fn ring_tag(slot: usize, leg: Leg, generation: u64) -> u64 {
    ((generation & 0x3FFF_FFFF) << 33) | ((slot as u64 & 0xFFFF_FFFF) << 1) | leg as u64
}

/// The slot and leg of a ring tag.
fn split_ring_tag(tag: u64) -> (usize, Leg) {
    let leg = if tag & 1 == 0 { Leg::Rtp } else { Leg::Rtcp };
    (((tag >> 1) & 0xFFFF_FFFF) as usize, leg)
}

fn token_for(slot: usize, leg: Leg) -> Token {
    Token(slot * 2 + leg as usize)
}

fn split_token(token: Token) -> (usize, Leg) {
    let leg = if token.0 & 1 == 0 {
        Leg::Rtp
    } else {
        Leg::Rtcp
    };
    (token.0 / 2, leg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{self, RtpHeader};
    use crate::media::session::StreamFormat;
    use crate::sdp::Codec;

    /// SSRC of the test client's stream.
    const CLIENT_SSRC: u32 = 0x1234_5678;

    /// A worker driven turn by turn on this thread, with one PCMU Echo connection whose
    /// negotiated peer is the returned client. The command sender is returned too: dropping it
    /// would tell the worker to stop.
    fn worker_with_echo_connection(
        rtp_port: u16,
    ) -> (
        Worker,
        SyncSender<WorkerCommand>,
        std::net::UdpSocket,
        SocketAddr,
    ) {
        let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
        let tuning = super::super::socket::SocketTuning {
            dscp_tos: 0,
            recv_buffer: 1 << 20,
            send_buffer: 1 << 20,
            priority: None,
            busy_poll_us: 0,
            busy_poll_budget: 0,
        };
        let sockets = super::super::socket::bind_pair(localhost, rtp_port, &tuning)
            .expect("test port pair is free");
        let local_rtp = sockets.local_rtp;
        let pool =
            super::super::pool::PortPool::new(rtp_port, rtp_port + 1).expect("one-pair range");
        let (events, _) = tokio::sync::mpsc::channel(8);
        let epoch = Instant::now();
        let context = WorkerContext {
            events,
            events_dropped: Arc::default(),
            port_return: pool.port_return(),
            stop: Arc::default(),
            defaults: SessionDefaults::default(),
            threads: super::super::tuning::ThreadTuning::default(),
            heartbeat: Arc::default(),
            epoch,
            // The second of two workers.
            tick_epoch: staggered_tick_epoch(epoch, 1, 2),
            tick_lateness: Arc::default(),
            recorder: super::super::recorder::channel().0,
            uring_sends: Arc::default(),
            uring_receives: Arc::default(),
            receive_buffers_exhausted: Arc::default(),
        };
        let (commands, inbox) = mpsc::sync_channel(4);
        let (_handoff, arrivals) = mpsc::channel();
        let mut worker = Worker::new(
            0,
            Poll::new().expect("create poll"),
            inbox,
            arrivals,
            Vec::new(),
            context,
        );
        let client = std::net::UdpSocket::bind((localhost, 0)).expect("bind client");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set read timeout");
        let media = MediaSpec {
            mode: super::super::MediaMode::Echo,
            format: Some(StreamFormat {
                codec: Codec::Pcmu,
                payload_type: 0,
                ptime_ms: 20,
                telephone_event_pt: None,
                send: None,
            }),
            remote_rtp: Some(client.local_addr().expect("client address")),
            remote_rtcp: None,
            srtp: None,
            expects_rtp: true,
        };
        let open = NewConnection {
            key: 1,
            media,
            rtp_port,
            sockets,
            stats: Arc::default(),
        };
        commands
            .try_send(WorkerCommand::Open(Box::new(open)))
            .expect("queue has room");
        assert!(worker.apply_commands());
        (worker, commands, client, local_rtp)
    }

    /// PCMU frame `index` of the client's stream: 12-byte header and 160 bytes of payload.
    fn pcmu_frame(index: u16) -> Vec<u8> {
        let header = RtpHeader {
            marker: index == 0,
            payload_type: 0,
            sequence: 1000 + index,
            timestamp: 160 * u32::from(index),
            ssrc: CLIENT_SSRC,
            csrcs: &[],
        };
        // Truncation keeps the low byte; 0x7F (μ-law negative zero) never appears.
        let payload: Vec<u8> = (0..160u16)
            .map(|i| (index.wrapping_mul(37).wrapping_add(i) as u8) & 0xF7)
            .collect();
        let mut packet = vec![0u8; 172];
        let length = rtp::write_packet(&mut packet, &header, &payload).expect("frame fits");
        packet.truncate(length);
        packet
    }

    #[test]
    fn the_grids_of_every_worker_and_tick_group_interleave_evenly_over_one_tick() {
        let epoch = Instant::now();
        for workers in 1..=5 {
            let mut offsets: Vec<Duration> = (0..workers)
                .flat_map(|index| {
                    let first = staggered_tick_epoch(epoch, index, workers);
                    (0..TICK_GROUPS as u64)
                        .map(move |generation| group_tick_epoch(first, generation) - epoch)
                })
                .collect();
            offsets.sort();
            let phases = workers * TICK_GROUPS;
            let step = ROOM_TICK.as_nanos() as f64 / phases as f64;
            assert_eq!(offsets.len(), phases);
            for (n, offset) in offsets.iter().enumerate() {
                // Evenly spaced within a nanosecond (integer division), all inside one tick.
                let expected = step * n as f64;
                assert!(
                    (offset.as_nanos() as f64 - expected).abs() < 1.0,
                    "{workers} workers: phase {n} at {offset:?}, not {expected} ns"
                );
            }
        }
        // Connections take the groups in turn as they open.
        let groups: Vec<Duration> = (1..=6)
            .map(|generation| group_tick_epoch(epoch, generation) - epoch)
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(groups, [ms(5), ms(10), ms(15), ms(0), ms(5), ms(10)]);
    }

    #[test]
    fn a_connection_ticks_on_its_workers_grid_for_its_tick_group() {
        let (worker, _commands, _client, _) = worker_with_echo_connection(31_418);
        let connection = worker
            .connections
            .iter()
            .flatten()
            .next()
            .expect("the echo connection is open");
        // The harness is the second of two workers (first grid 2.5 ms after the engine's) and
        // this is its first connection (generation 1: group 1, 5 ms later): 7.5 ms.
        assert_eq!(connection.generation, 1);
        let since = connection.deadline - worker.context.epoch;
        assert_eq!(since.as_nanos() % ROOM_TICK.as_nanos(), 7_500_000);
        assert!(connection.deadline > Instant::now() - ROOM_TICK);
    }

    #[test]
    fn burst_beyond_the_cap_is_carried_over_to_the_next_turn() {
        let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_410);
        let frames: Vec<Vec<u8>> = (0..100).map(pcmu_frame).collect();
        for frame in &frames {
            client.send_to(frame, engine_rtp).expect("send to worker");
        }
        let received = |worker: &mut Worker| {
            worker
                .connection_by_key(1)
                .expect("connection open")
                .shared
                .snapshot()
                .rtp_packets_received
        };

        assert!(worker.turn());
        assert_eq!(received(&mut worker), MAX_PACKETS_PER_WAKEUP as u64);
        assert_eq!(worker.carry_over.len(), 1, "capped socket not carried over");
        assert!(worker.turn());
        assert_eq!(received(&mut worker), 100);
        assert!(worker.carry_over.is_empty());

        // The session plays its jitter buffer out every 20 ms: once it has filled, turns past
        // the next ticks send echo frames, as our own stream, back to the client.
        client.set_nonblocking(true).expect("non-blocking client");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buffer = [0u8; 2048];
        let (length, from) = loop {
            assert!(worker.turn());
            match client.recv_from(&mut buffer) {
                Ok(received) => break received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("client receive failed: {error}"),
            }
            assert!(Instant::now() < deadline, "no echo within 2 s");
        };
        assert_eq!(from, engine_rtp);
        let echo = rtp::parse(&buffer[..length]).expect("echo is RTP");
        assert_eq!(echo.payload_type(), 0);
        assert_ne!(
            echo.ssrc(),
            CLIENT_SSRC,
            "echo relayed instead of re-encoded"
        );
        assert!(echo.marker(), "first echo packet starts a talkspurt");
        assert!(
            frames.iter().any(|frame| frame[12..] == *echo.payload()),
            "echo payload is not one of the client's frames"
        );
        let sent = worker
            .connection_by_key(1)
            .expect("connection open")
            .shared
            .snapshot()
            .rtp_packets_sent;
        assert!(sent >= 1, "echo sent but not published");
        worker.close_all();
    }

    /// Sends `frames` from `client` 20 ms apart while turning `worker`, then keeps turning for
    /// `tail`; every datagram the client got back, in order.
    fn echo_through_turns(
        worker: &mut Worker,
        client: &std::net::UdpSocket,
        engine_rtp: SocketAddr,
        frames: &[Vec<u8>],
        tail: Duration,
    ) -> Vec<Vec<u8>> {
        client.set_nonblocking(true).expect("non-blocking client");
        let start = Instant::now();
        let end = start + ROOM_TICK * frames.len() as u32 + tail;
        let mut next = 0;
        let mut echoes = Vec::new();
        let mut buffer = [0u8; 2048];
        while Instant::now() < end {
            if next < frames.len() && Instant::now() >= start + ROOM_TICK * next as u32 {
                client
                    .send_to(&frames[next], engine_rtp)
                    .expect("send to worker");
                next += 1;
            }
            assert!(worker.turn());
            loop {
                match client.recv_from(&mut buffer) {
                    Ok((length, from)) => {
                        assert_eq!(from, engine_rtp, "echo not sent from the RTP socket");
                        echoes.push(buffer[..length].to_vec());
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => panic!("client receive failed: {error}"),
                }
            }
        }
        echoes
    }

    /// Checks that `echoes` play the caller's `frames` back in order (stand-ins aside), with at
    /// most a few missing while the jitter buffer filled or stretched on a busy test machine.
    fn assert_plays_back(echoes: &[Vec<u8>], frames: &[Vec<u8>]) {
        let played: Vec<usize> = echoes
            .iter()
            .filter_map(|echo| {
                let packet = rtp::parse(echo).expect("echo is RTP");
                assert_ne!(packet.ssrc(), CLIENT_SSRC, "relayed instead of re-encoded");
                frames
                    .iter()
                    .position(|frame| frame[12..] == *packet.payload())
            })
            .collect();
        assert!(
            played.windows(2).all(|pair| pair[0] < pair[1]),
            "caller frames echoed out of order or twice: {played:?}"
        );
        assert!(
            played.len() + 5 >= frames.len(),
            "only {} of {} caller frames echoed",
            played.len(),
            frames.len()
        );
    }

    #[test]
    fn with_io_uring_every_echo_goes_through_the_ring_and_every_slot_comes_back() {
        let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_412);
        // Sixteen slots, reused many times over by sixty frames and their echoes.
        worker.transmit = Transmitter::new(true, 16, 0);
        let frames: Vec<Vec<u8>> = (0..60).map(pcmu_frame).collect();
        let echoes = echo_through_turns(
            &mut worker,
            &client,
            engine_rtp,
            &frames,
            Duration::from_millis(300),
        );
        assert_plays_back(&echoes, &frames);

        let stats = worker
            .connection_by_key(1)
            .expect("connection open")
            .stats
            .clone();
        let ring = worker.transmit.ring.as_ref().expect("ring set up");
        assert_eq!(ring.in_flight(), 0, "a slot was never given back");
        let counts = ring.counts();
        assert_eq!(
            counts.sent,
            stats.rtp_packets_sent + stats.rtcp_packets_sent,
            "some packets did not go through the ring: {counts:?}"
        );
        assert_eq!((counts.failed, counts.fell_back), (0, 0), "{counts:?}");
        assert!(counts.sent > 16, "slots were not reused: {counts:?}");
        assert_eq!(echoes.len() as u64, stats.rtp_packets_sent);
        assert_eq!(
            worker.context.uring_sends.load(Ordering::Relaxed),
            counts.sent,
            "engine-wide count not published"
        );
        worker.close_all();
    }

    #[test]
    fn when_the_kernel_refuses_the_ring_the_worker_echoes_with_sendto() {
        let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_414);
        // A ring of zero entries is refused by io_uring_setup, like a seccomp filter would.
        worker.transmit = Transmitter::new(true, 0, 0);
        assert!(worker.transmit.ring.is_none());
        let frames: Vec<Vec<u8>> = (0..30).map(pcmu_frame).collect();
        let echoes = echo_through_turns(
            &mut worker,
            &client,
            engine_rtp,
            &frames,
            Duration::from_millis(200),
        );
        assert_plays_back(&echoes, &frames);
        assert_eq!(worker.context.uring_sends.load(Ordering::Relaxed), 0);
        worker.close_all();
    }

    #[test]
    fn closing_a_connection_hands_its_queued_sends_to_the_kernel_first() {
        let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_416);
        worker.transmit = Transmitter::new(true, 16, 0);
        let slot = worker.slots[&1];
        let connection = worker.connections[slot].as_ref().expect("connection open");
        // A packet queued mid-turn, as a session flush would queue it, then the close.
        let socket = connection.socket(Leg::Rtp);
        let ring = worker.transmit.ring.as_mut().expect("ring set up");
        let buffer = ring.packet_buffer().expect("free slot");
        buffer[..5].copy_from_slice(b"final");
        let target = client.local_addr().expect("client address");
        ring.send(socket, 5, target, 1);
        assert_eq!(ring.in_flight(), 1);
        worker.close(1);
        let mut received = [0u8; 16];
        let (length, from) = client
            .recv_from(&mut received)
            .expect("queued send went out");
        assert_eq!((&received[..length], from), (&b"final"[..], engine_rtp));
    }

    #[test]
    fn tokens_round_trip() {
        for slot in [0, 1, 7, 1000] {
            for leg in [Leg::Rtp, Leg::Rtcp] {
                assert_eq!(split_token(token_for(slot, leg)), (slot, leg));
            }
        }
    }
}
