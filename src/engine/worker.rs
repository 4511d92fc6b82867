//! One media worker thread (`media-<n>`): owns its connections' RTP/RTCP sockets and moves their
//! packets.
//!
//! Owns: a `mio::Poll`, the sockets and per-connection state handed over by
//! [`WorkerCommand::Open`], one reusable receive buffer, and publishing each connection's
//! statistics.
//! Must not: take a lock, allocate per packet, or wait for the control plane. Commands arrive on a
//! bounded queue drained with `try_recv`, events leave with `try_send` (drops are counted), and
//! port pairs go back on a channel whose send never blocks.
//!
//! Loop: wait for readiness (with a timeout), apply commands, then drain each readable socket up
//! to [`MAX_PACKETS_PER_WAKEUP`] packets. mio is edge-triggered, so a socket cut off by that cap
//! is carried over and drained again on the next turn, which then does not sleep.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tokio::sync::mpsc::error::TrySendError as EventSendError;
use tokio::sync::mpsc::Sender;

use super::pool::PortReturn;
use super::socket::MediaSockets;
use super::stats::SharedStats;
use super::{ConnectionKey, EngineError, EngineEvent, MediaMode, MediaStats};

/// Commands a worker can hold before the control plane gets `QueueFull`.
const COMMAND_QUEUE_DEPTH: usize = 1024;
/// Longest sleep without readiness or commands; bounds how late a lost wake-up is noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Packets taken from one socket per turn, so one busy stream cannot starve the others.
const MAX_PACKETS_PER_WAKEUP: usize = 64;
/// Receive buffer size: the largest UDP payload, so no datagram is ever truncated.
const RECEIVE_BUFFER_BYTES: usize = 65_536;
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 256;
/// Token of the waker; connection tokens are `slot * 2 + leg` and never reach it.
const WAKER_TOKEN: Token = Token(usize::MAX);

/// What the control plane asks a worker to do.
pub(super) enum WorkerCommand {
    /// Take ownership of a new connection's sockets.
    Open(NewConnection),
    /// Change mode and peer address of a connection.
    Update {
        key: ConnectionKey,
        mode: MediaMode,
        remote_rtp: Option<SocketAddr>,
    },
    /// Close a connection: drop its sockets, give its ports back, report `Closed`.
    Close { key: ConnectionKey },
}

/// A connection handed over to a worker.
pub(super) struct NewConnection {
    /// The control plane's id.
    pub(super) key: ConnectionKey,
    /// What to do with received media.
    pub(super) mode: MediaMode,
    /// Negotiated peer RTP address.
    pub(super) remote_rtp: Option<SocketAddr>,
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
    /// Milliseconds since `epoch` at the worker's last turn: the watchdog's proof of life.
    pub(super) heartbeat: Arc<AtomicU64>,
    /// The engine's start, the origin of `heartbeat`.
    pub(super) epoch: std::time::Instant,
}

/// The control plane's handle on one worker thread.
pub(super) struct WorkerHandle {
    /// Worker number (the `n` of `media-<n>`).
    index: usize,
    /// Bounded command queue into the worker.
    commands: SyncSender<WorkerCommand>,
    /// Wakes the worker's poll after a command or at shutdown.
    waker: Waker,
    /// The thread, until joined.
    thread: Option<JoinHandle<()>>,
}

/// Creates the worker's poller and starts thread `media-<index>`.
pub(super) fn spawn(index: usize, context: WorkerContext) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
    let (commands, inbox) = mpsc::sync_channel(COMMAND_QUEUE_DEPTH);
    let worker = Worker::new(index, poll, inbox, context);
    let thread = thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        index,
        commands,
        waker,
        thread: Some(thread),
    })
}

impl WorkerHandle {
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
    /// The one receive buffer, reused for every packet.
    buffer: Box<[u8]>,
    /// Sockets to drain this turn.
    ready: Vec<Token>,
    /// Sockets cut off by the per-wake-up cap, drained again next turn.
    carry_over: Vec<Token>,
}

/// One connection as its worker sees it.
struct Connection {
    /// The control plane's id.
    key: ConnectionKey,
    /// What to do with received media.
    mode: MediaMode,
    /// Negotiated peer RTP address; echo answers the actual source instead.
    remote_rtp: Option<SocketAddr>,
    /// RTP port of the pair, given back on close.
    rtp_port: u16,
    /// The RTP and RTCP sockets.
    sockets: MediaSockets,
    /// Counters, owned here and published to `shared`.
    stats: MediaStats,
    /// Published counters read by the control plane.
    shared: Arc<SharedStats>,
    /// Per leg: the socket's token is in `ready` or `carry_over` already.
    queued: [bool; 2],
}

impl Worker {
    fn new(
        index: usize,
        poll: Poll,
        inbox: Receiver<WorkerCommand>,
        context: WorkerContext,
    ) -> Worker {
        Worker {
            index,
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            inbox,
            context,
            connections: Vec::new(),
            free_slots: Vec::new(),
            slots: HashMap::new(),
            buffer: vec![0; RECEIVE_BUFFER_BYTES].into_boxed_slice(),
            ready: Vec::new(),
            carry_over: Vec::new(),
        }
    }

    /// The worker loop, until the engine stops it or the control plane disappears.
    fn run(mut self) {
        tracing::info!(worker = self.index, "media worker started");
        while self.turn() {}
        // Commands that raced with the stop still carry sockets: apply them so they close cleanly.
        self.apply_commands();
        self.close_all();
        tracing::info!(worker = self.index, "media worker stopped");
    }

    /// One pass: wait for readiness, apply commands, drain ready sockets. False to stop.
    fn turn(&mut self) -> bool {
        // A later busy-poll step ("spin on the sockets for N µs before sleeping") goes here.
        let timeout = if self.carry_over.is_empty() {
            POLL_TIMEOUT
        } else {
            Duration::ZERO
        };
        if let Err(error) = self.poll.poll(&mut self.events, Some(timeout)) {
            if error.kind() == io::ErrorKind::Interrupted {
                return true;
            }
            // epoll_wait fails only on a broken poller: give everything back and stop.
            tracing::error!(worker = self.index, %error, "media worker poll failed, stopping");
            return false;
        }
        let alive_ms = self.context.epoch.elapsed().as_millis() as u64;
        self.context.heartbeat.store(alive_ms, Ordering::Relaxed);
        if self.context.stop.load(Ordering::Acquire) || !self.apply_commands() {
            return false;
        }
        self.collect_ready();
        self.service_ready();
        true
    }

    /// Applies every queued command; false once the control plane is gone.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(WorkerCommand::Open(new)) => self.open(new),
                Ok(WorkerCommand::Update {
                    key,
                    mode,
                    remote_rtp,
                }) => self.update(key, mode, remote_rtp),
                Ok(WorkerCommand::Close { key }) => self.close(key),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Takes ownership of a connection and starts watching its sockets.
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
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        let mut connection = Connection::new(new);
        if let Err(error) = connection.register(self.poll.registry(), slot) {
            tracing::error!(
                worker = self.index,
                key = connection.key,
                %error,
                "cannot watch media sockets, closing connection"
            );
            connection.deregister(self.poll.registry());
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
    }

    /// Changes mode and peer address of a connection.
    fn update(&mut self, key: ConnectionKey, mode: MediaMode, remote_rtp: Option<SocketAddr>) {
        let Some(connection) = self.connection_by_key(key) else {
            tracing::warn!(key, "update for a connection this worker does not carry");
            return;
        };
        connection.mode = mode;
        connection.remote_rtp = remote_rtp;
        tracing::debug!(key, ?mode, remote_rtp = ?remote_rtp, "media connection updated");
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
        connection.deregister(self.poll.registry());
        self.finish(connection);
    }

    /// Closes every connection (at stop).
    fn close_all(&mut self) {
        self.slots.clear();
        for slot in 0..self.connections.len() {
            if let Some(mut connection) = self.connections[slot].take() {
                connection.deregister(self.poll.registry());
                self.finish(connection);
            }
        }
    }

    /// Drops the sockets, then gives the ports back and reports `Closed`, in that order, so a
    /// port is never handed out while its old socket is still open.
    fn finish(&self, connection: Connection) {
        let Connection {
            key,
            rtp_port,
            sockets,
            stats,
            shared,
            ..
        } = connection;
        shared.publish(&stats);
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
        let drain = connection.drain(leg, &mut self.buffer, &self.context);
        connection.queued[leg as usize] = drain == Drain::MoreWaiting;
        connection.shared.publish(&connection.stats);
        drain
    }

    fn connection_by_key(&mut self, key: ConnectionKey) -> Option<&mut Connection> {
        let slot = *self.slots.get(&key)?;
        self.connections.get_mut(slot)?.as_mut()
    }
}

impl Connection {
    fn new(new: NewConnection) -> Connection {
        Connection {
            key: new.key,
            mode: new.mode,
            remote_rtp: new.remote_rtp,
            rtp_port: new.rtp_port,
            sockets: new.sockets,
            stats: MediaStats::default(),
            shared: new.stats,
            queued: [false; 2],
        }
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

    /// Reads one socket until `WouldBlock`, at most `MAX_PACKETS_PER_WAKEUP` packets.
    fn drain(&mut self, leg: Leg, buffer: &mut [u8], context: &WorkerContext) -> Drain {
        for _ in 0..MAX_PACKETS_PER_WAKEUP {
            let (length, source) = match self.socket(leg).recv_from(buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Drain::Empty,
                Err(error) if is_transient(&error) => continue,
                Err(error) => {
                    tracing::warn!(key = self.key, ?leg, %error, "media socket receive failed");
                    return Drain::Empty;
                }
            };
            let packet = &buffer[..length];
            match leg {
                Leg::Rtp => self.on_rtp_port(packet, source, context),
                Leg::Rtcp => self.on_rtcp(Leg::Rtcp, packet, source),
            }
        }
        Drain::MoreWaiting
    }

    /// A packet on the RTP port: RTP, or RTCP multiplexed onto it (RFC 5761).
    fn on_rtp_port(&mut self, packet: &[u8], source: SocketAddr, context: &WorkerContext) {
        if is_multiplexed_rtcp(packet) {
            self.on_rtcp(Leg::Rtp, packet, source);
            return;
        }
        if !looks_like_rtp(packet) {
            self.stats.malformed_packets += 1;
            tracing::trace!(
                key = self.key,
                %source,
                length = packet.len(),
                "non-RTP packet dropped"
            );
            return;
        }
        self.stats.rtp_packets_received += 1;
        self.stats.rtp_bytes_received += packet.len() as u64;
        self.note_source(source, context);
        if self.mode == MediaMode::Echo && self.send(Leg::Rtp, packet, source) {
            self.stats.rtp_packets_sent += 1;
            self.stats.rtp_bytes_sent += packet.len() as u64;
        }
    }

    /// An RTCP packet, on the RTCP port or multiplexed on the RTP port (`leg`).
    fn on_rtcp(&mut self, leg: Leg, packet: &[u8], source: SocketAddr) {
        if !looks_like_rtcp(packet) {
            self.stats.malformed_packets += 1;
            tracing::trace!(
                key = self.key,
                %source,
                length = packet.len(),
                "non-RTCP packet dropped"
            );
            return;
        }
        self.stats.rtcp_packets_received += 1;
        if self.mode == MediaMode::Echo {
            self.send(leg, packet, source);
        }
    }

    /// Records the RTP source; reports the first one and publishes changes (not per packet).
    fn note_source(&mut self, source: SocketAddr, context: &WorkerContext) {
        if self.stats.last_source == Some(source) {
            return;
        }
        match self.stats.last_source {
            None => context.emit(EngineEvent::FirstPacket {
                key: self.key,
                source,
            }),
            Some(previous) => {
                tracing::debug!(key = self.key, %previous, %source, "RTP source changed");
            }
        }
        self.stats.last_source = Some(source);
        self.shared.publish_last_source(source);
    }

    /// Sends `packet` to `target` from the socket of `leg`; a full send buffer drops it.
    fn send(&self, leg: Leg, packet: &[u8], target: SocketAddr) -> bool {
        match self.socket(leg).send_to(packet, target) {
            Ok(_) => true,
            Err(error) => {
                tracing::trace!(key = self.key, ?leg, %target, %error, "media packet not sent");
                false
            }
        }
    }
}

impl WorkerContext {
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

/// Minimal RTP check (RFC 3550 §5.1): a full fixed header and version 2.
fn looks_like_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[0] >> 6 == 2
}

/// Minimal RTCP check (RFC 3550 §6.4): a common header and version 2.
fn looks_like_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 4 && packet[0] >> 6 == 2
}

/// RTCP on the RTP port: packet types 192-223, which RTP payload types never use (RFC 5761 §4).
fn is_multiplexed_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && packet[0] >> 6 == 2 && (192..=223).contains(&packet[1])
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

    #[test]
    fn rtp_check_wants_version_2_and_full_header() {
        let mut packet = [0u8; 12];
        packet[0] = 0x80;
        assert!(looks_like_rtp(&packet));
        assert!(!looks_like_rtp(&packet[..11]));
        packet[0] = 0x40;
        assert!(!looks_like_rtp(&packet));
    }

    #[test]
    fn multiplexed_rtcp_is_told_apart_from_rtp() {
        // Receiver report (PT 201) vs PCMU with the marker bit (0x80).
        assert!(is_multiplexed_rtcp(&[0x80, 201, 0, 1]));
        assert!(!is_multiplexed_rtcp(&[0x80, 0x80, 0, 1]));
        assert!(!is_multiplexed_rtcp(&[0x80, 0, 0, 1]));
    }

    /// A worker driven turn by turn on this thread, with one Echo connection and its client. The
    /// command sender is returned too: dropping it would tell the worker to stop.
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
        };
        let sockets = super::super::socket::bind_pair(localhost, rtp_port, &tuning)
            .expect("test port pair is free");
        let local_rtp = sockets.local_rtp;
        let pool =
            super::super::pool::PortPool::new(rtp_port, rtp_port + 1).expect("one-pair range");
        let (events, _) = tokio::sync::mpsc::channel(8);
        let context = WorkerContext {
            events,
            events_dropped: Arc::default(),
            port_return: pool.port_return(),
            stop: Arc::default(),
            heartbeat: Arc::default(),
            epoch: std::time::Instant::now(),
        };
        let (commands, inbox) = mpsc::sync_channel(4);
        let mut worker = Worker::new(0, Poll::new().expect("create poll"), inbox, context);
        let open = NewConnection {
            key: 1,
            mode: MediaMode::Echo,
            remote_rtp: None,
            rtp_port,
            sockets,
            stats: Arc::default(),
        };
        commands
            .try_send(WorkerCommand::Open(open))
            .expect("queue has room");
        assert!(worker.apply_commands());
        let client = std::net::UdpSocket::bind((localhost, 0)).expect("bind client");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set read timeout");
        (worker, commands, client, local_rtp)
    }

    #[test]
    fn burst_beyond_the_cap_is_carried_over_to_the_next_turn() {
        let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_410);
        let mut packet = [0u8; 172];
        packet[0] = 0x80;
        for _ in 0..100 {
            client.send_to(&packet, engine_rtp).expect("send to worker");
        }
        let received = |worker: &mut Worker| {
            worker
                .connection_by_key(1)
                .expect("connection open")
                .stats
                .rtp_packets_received
        };

        assert!(worker.turn());
        assert_eq!(received(&mut worker), MAX_PACKETS_PER_WAKEUP as u64);
        assert_eq!(worker.carry_over.len(), 1, "capped socket not carried over");
        assert!(worker.turn());
        assert_eq!(received(&mut worker), 100);
        assert!(worker.carry_over.is_empty());

        let mut buffer = [0u8; 256];
        for _ in 0..100 {
            let (length, _) = client.recv_from(&mut buffer).expect("echoed packet");
            assert_eq!(&buffer[..length], &packet);
        }
        worker.close_all();
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
