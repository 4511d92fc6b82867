//! The control plane's side of a worker: preparing and spawning the thread, the bounded
//! command queue and waker ([`WorkerHandle`]), the hand-off channel between workers ([`Peer`]),
//! and what a worker shares with the engine ([`WorkerContext`]), through which its events and
//! recordings leave.
//!
//! Owns: the thread's start, join and CPU clock, and the non-blocking ways out of the worker.
//! Must not: block the worker: events and recorder frames are `try_send` (a full queue drops and
//! counts), submitting a command never waits.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::{Poll, Waker};
use tokio::sync::mpsc::error::TrySendError as EventSendError;
use tokio::sync::mpsc::Sender;

use super::command::WorkerCommand;
use super::connection::Connection;
use super::{Worker, COMMAND_QUEUE_DEPTH, WAKER_TOKEN};
use crate::engine::pool::PortReturn;
use crate::engine::socket::MediaSockets;
use crate::engine::stats::SharedStats;
use crate::engine::{ConnectionKey, EngineError, EngineEvent, MediaSpec, SessionDefaults};

/// A connection handed from one worker to another (its sockets are deregistered).
pub(in crate::engine) struct Moving(pub(super) Box<Connection>);

/// How a worker reaches the others, to hand connections over.
#[derive(Clone)]
pub(in crate::engine) struct Peer {
    pub(super) handoff: mpsc::Sender<Moving>,
    pub(super) waker: Arc<Waker>,
}

/// A connection handed over to a worker.
pub(in crate::engine) struct NewConnection {
    /// The control plane's id.
    pub(in crate::engine) key: ConnectionKey,
    /// What the session does and with whom.
    pub(in crate::engine) media: MediaSpec,
    /// RTP port of the pair, given back to the pool on close.
    pub(in crate::engine) rtp_port: u16,
    /// The bound sockets; the worker becomes their only owner.
    pub(in crate::engine) sockets: MediaSockets,
    /// Where the worker publishes the connection's counters.
    pub(in crate::engine) stats: Arc<SharedStats>,
}

/// What a worker shares with the engine, handed over at start.
pub(in crate::engine) struct WorkerContext {
    /// Event queue to the control plane, used only with `try_send`.
    pub(in crate::engine) events: Sender<EngineEvent>,
    /// Engine-wide count of events dropped because the queue was full.
    pub(in crate::engine) events_dropped: Arc<AtomicU64>,
    /// Recording frames a full recorder queue refused (engine-wide).
    pub(in crate::engine) recorder_dropped: Arc<AtomicU64>,
    /// Channel on which closed port pairs go back to the pool.
    pub(in crate::engine) port_return: PortReturn,
    /// Set by the engine at shutdown.
    pub(in crate::engine) stop: Arc<AtomicBool>,
    /// Session settings common to every connection.
    pub(in crate::engine) defaults: SessionDefaults,
    /// Pinning, realtime priority and busy polling of this thread.
    pub(in crate::engine) threads: crate::engine::tuning::ThreadTuning,
    /// Milliseconds since `epoch` at the worker's last turn: the watchdog's proof of life.
    pub(in crate::engine) heartbeat: Arc<AtomicU64>,
    /// The engine's start, the origin of `heartbeat`.
    pub(in crate::engine) epoch: std::time::Instant,
    /// Origin of this worker's first 20 ms grid (its conference ticks, and the sessions of tick
    /// group 0; group `g` is `g × 20 ms / TICK_GROUPS` later): staggered from the other
    /// workers' by [`staggered_tick_epoch`], so no two bursts of ticks start together.
    pub(in crate::engine) tick_epoch: std::time::Instant,
    /// How late this worker runs session deadlines.
    pub(in crate::engine) tick_lateness: Arc<crate::engine::stats::TickLateness>,
    /// The recorder thread's queue (frames are `try_send`: never waited for).
    pub(in crate::engine) recorder: SyncSender<crate::engine::recorder::RecorderCommand>,
    /// Engine-wide count of datagrams sent through io_uring (added to once per turn).
    pub(in crate::engine) uring_sends: Arc<AtomicU64>,
    /// Engine-wide count of datagrams received through io_uring (added to once per turn).
    pub(in crate::engine) uring_receives: Arc<AtomicU64>,
    /// Engine-wide count of ring receives that found every buffer in use (once per turn).
    pub(in crate::engine) receive_buffers_exhausted: Arc<AtomicU64>,
    /// Engine-wide count of frames a talker was sent from the worker's encode of silence.
    pub(in crate::engine) silence_shares: Arc<AtomicU64>,
}

/// The control plane's handle on one worker thread.
pub(in crate::engine) struct WorkerHandle {
    /// Worker number (the `n` of `media-<n>`).
    index: usize,
    /// Bounded command queue into the worker.
    commands: SyncSender<WorkerCommand>,
    /// Wakes the worker's poll after a command or at shutdown.
    waker: Arc<Waker>,
    /// Whether a command wakes the worker: not when it receives at the tick, where it sleeps
    /// to the next tick (20 ms at most) whatever the waker says and then takes its commands.
    wake_on_command: bool,
    /// Wake-ups written to the waker.
    #[cfg(test)]
    pub(in crate::engine) wakes: std::sync::atomic::AtomicU64,
    /// The thread, until joined.
    thread: Option<JoinHandle<()>>,
}

/// A worker whose poller, queues and waker exist but whose thread has not started: all workers
/// are prepared first, so each can be given every other's hand-off channel.
pub(in crate::engine) struct Prepared {
    index: usize,
    poll: Poll,
    waker: Arc<Waker>,
    commands: SyncSender<WorkerCommand>,
    inbox: Receiver<WorkerCommand>,
    handoff: mpsc::Sender<Moving>,
    arrivals: Receiver<Moving>,
}

/// Creates worker `index`'s poller, waker and queues.
pub(in crate::engine) fn prepare(index: usize) -> io::Result<Prepared> {
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
    pub(in crate::engine) fn peer(&self) -> Peer {
        Peer {
            handoff: self.handoff.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Starts thread `media-<index>`; `peers[i]` reaches worker `i`.
    pub(in crate::engine) fn spawn(
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
        let wake_on_command = !context.threads.receive_at_tick;
        // Built on its own thread: a single-issuer io_uring belongs to the thread that made it.
        let thread = thread::Builder::new()
            .name(format!("media-{index}"))
            .spawn(move || Worker::new(index, poll, inbox, arrivals, peers, context).run())?;
        Ok(WorkerHandle {
            index,
            commands,
            waker,
            wake_on_command,
            #[cfg(test)]
            wakes: std::sync::atomic::AtomicU64::new(0),
            thread: Some(thread),
        })
    }
}

impl WorkerHandle {
    /// CPU time the worker thread has used (user + system, from its thread CPU clock), or
    /// `None` once the thread has ended or the clock cannot be read.
    pub(in crate::engine) fn cpu_time(&self) -> Option<Duration> {
        use std::os::unix::thread::JoinHandleExt;
        let thread = self.thread.as_ref()?;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the pthread_t comes from a JoinHandle we hold, so the thread has not been
        // joined and its id is valid; a thread that has exited makes the call fail (ESRCH),
        // never read freed memory.
        if unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) } != 0 {
            return None;
        }
        crate::engine::clock_time(clock)
    }

    /// Queues a command and wakes the worker unless it takes commands at its next tick anyway
    /// (two system calls a call's setup saved at load); a rejected command is dropped (closing
    /// any sockets it carries).
    pub(in crate::engine) fn submit(&self, command: WorkerCommand) -> Result<(), EngineError> {
        match self.commands.try_send(command) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EngineError::QueueFull),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::WorkerGone),
        }
        if self.wake_on_command {
            self.wake();
        }
        Ok(())
    }

    /// Interrupts the worker's poll.
    pub(in crate::engine) fn wake(&self) {
        #[cfg(test)]
        self.wakes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(error) = self.waker.wake() {
            // The worker still sees the command or the stop flag after its poll timeout.
            tracing::warn!(worker = self.index, %error, "cannot wake media worker");
        }
    }

    /// Waits for the thread to end (after the stop flag is set); idempotent.
    pub(in crate::engine) fn join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if thread.join().is_err() {
            tracing::error!(worker = self.index, "media worker panicked");
        }
    }
}

impl WorkerContext {
    /// Hands audio of a recording's `channel` (0: left or mono, 1: right) to the recorder
    /// thread in frame-sized messages; a full queue drops (and logs) rather than wait.
    pub(super) fn record(
        &self,
        key: ConnectionKey,
        operation: u64,
        channel: u8,
        samples: &[i16],
        rate: u32,
    ) {
        for chunk in samples.chunks(crate::engine::recorder::FRAME_SAMPLES) {
            let mut frame = Box::new([0i16; crate::engine::recorder::FRAME_SAMPLES]);
            frame[..chunk.len()].copy_from_slice(chunk);
            let sent = self
                .recorder
                .try_send(crate::engine::recorder::RecorderCommand::Frame {
                    operation,
                    channel,
                    rate,
                    len: chunk.len(),
                    samples: frame,
                });
            if sent.is_err() {
                // Counted always, logged once per 10,000: a recorder that cannot keep up
                // must not also flood the log.
                let dropped = self.recorder_dropped.fetch_add(1, Ordering::Relaxed);
                if dropped % 10_000 == 0 {
                    tracing::warn!(
                        key,
                        operation,
                        dropped = dropped + 1,
                        "recorder queue full: recording audio dropped"
                    );
                }
            }
        }
    }

    /// Reports to the control plane without ever blocking; a full queue drops and counts.
    pub(super) fn emit(&self, event: EngineEvent) {
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
                    EngineEvent::RecordingFailed { key, .. } => (key, "recording_failed"),
                    EngineEvent::Energy { key, .. } => (key, "energy"),
                };
                tracing::warn!(key, kind, "engine event queue full, event dropped");
            }
            // The control plane is gone (shutdown): nobody is left to tell.
            Err(EventSendError::Closed(_)) => {}
        }
    }
}
