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
//! does not sleep. Deadlines live in [`Deadlines`], a timing wheel of 1 ms buckets: a tick
//! group's sessions come due as one list, and while the worker runs one it fetches the memory
//! of the connections further on ([`PREFETCH_AHEAD`]).
//!
//! This file holds the worker loop and its connections' life cycle (open, move, update,
//! close). Next door: `handle` (the control plane's side: spawning, commands in, events out),
//! `command` (what the control plane asks and how the worker applies it), `connection` (one
//! connection's sockets and session), `deadlines` (when each session is due), `transmit` (how
//! packets leave), `conferences` (the conference tick, over the sans-IO
//! [`crate::mixer::conference::Conference`]).

mod command;
mod conferences;
mod connection;
mod deadlines;
mod handle;
mod transmit;

pub(super) use command::WorkerCommand;
pub(super) use handle::{prepare, NewConnection, Peer, Prepared, WorkerContext, WorkerHandle};

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::recv_ring::{Cancelled, ReceiveCounts, Received, RecvRing};
use super::send_ring::RING_ENTRIES;
use super::{ConferenceKey, ConnectionKey, EngineEvent, MediaSpec};
use crate::media::prefetch::prefetch;
use crate::media::session::{SharedEncodes, ROOM_TICK};
use crate::mixer::conference::Conference;
use crate::udp_batch::RecvBatch;
use connection::{new_session, split_ring_tag, split_token, Connection, Drain};
use deadlines::Deadlines;
use handle::Moving;
use transmit::{add_new, Transmitter};

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
/// How many places ahead in a due list (or in the receive ring's completions) the worker
/// fetches a connection (2.7 KB: a tick reads fields all over it) while it runs the current
/// one: each was last touched a tick ago, so its first reads missed the cache (a third of the
/// worker loop's own time at 3,000 echo calls, `perf annotate`). One place ahead in a due
/// list, with the connection cached by then, it fetches what the session's tick reads outside
/// it ([`crate::media::session::MediaSession::prefetch_tick`]).
const PREFETCH_AHEAD: usize = 3;
/// Most rounds of ring receives in one turn. A round hands over at most the ring's buffers
/// (4,096); when they ran out, the requests that found none ended and their datagrams wait in
/// their sockets, so the worker arms them again and reads the rest in the same turn rather
/// than a tick later, after their frames' playout has passed. Eight rounds bound one turn's
/// receiving (32,768 datagrams: a third of a second of 2,000 calls' packets).
const RECEIVE_ROUNDS: usize = 8;
/// Token of the waker; connection tokens are `slot * 2 + leg` and never reach it.
const WAKER_TOKEN: Token = Token(usize::MAX);

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
    /// Boxed: a `Connection` is ~8.5 KB (its session's buffers are inline), and the vector
    /// never shrinks, so inline slots kept a burst's peak resident after its calls ended.
    connections: Vec<Option<Box<Connection>>>,
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
    /// Each slot's next session deadline.
    deadlines: Deadlines,
    /// The sessions due this turn (slot, deadline), reused.
    due: Vec<(usize, Instant)>,
    /// Generation stamped on the next opened connection (tells reused slots apart).
    next_generation: u64,
    /// The tick group each connection opened here takes.
    session_groups: SessionGroups,
    /// Where packets go out: the reused send buffer, and the io_uring when there is one.
    transmit: Transmitter,
    /// With `io_uring_receive`: the ring every socket of this worker is read through (instead
    /// of epoll and `recvmmsg`); `None` when off or refused by the kernel.
    receive: Option<RecvRing>,
    /// Ring requests that ended this turn, armed again after the datagrams are handled.
    rearm: Vec<u64>,
    /// Closed connections whose ring receives are being cancelled: finished (sockets given
    /// back, `Closed` reported) once the kernel has ended them, in this turn's or a later one's
    /// `io_uring_enter`, instead of one enter of their own each.
    closing: Vec<Closing>,
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
    /// Each conference's encodes of its common mix, one per format its listeners send; made and
    /// dropped with its entry in `conferences`.
    shared_encodes: HashMap<ConferenceKey, SharedEncodes>,
    /// Digital silence encoded once per format per tick for every room of this worker: what a
    /// talker hears when nobody else in its room is in the mix (a room of three with one
    /// talker), sent in place of its own encode of zeros.
    silence_encodes: SharedEncodes,
    /// When its conferences tick: spread over the tick groups as its sessions are.
    room_ticks: conferences::RoomTicks,
    /// One conference frame, reused for every capture.
    room_frame: Vec<i16>,
}

/// A closed connection waiting for the kernel to end its ring receives.
struct Closing {
    connection: Box<Connection>,
    cancelled: Cancelled,
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
            deadlines: Deadlines::new(Instant::now()),
            due: Vec::new(),
            next_generation: 0,
            session_groups: SessionGroups::default(),
            transmit,
            receive,
            rearm: Vec::new(),
            closing: Vec::new(),
            receives_published: ReceiveCounts::default(),
            next_stats_publish: Instant::now(),
            spin_until: None,
            arrivals,
            peers,
            expected: HashSet::new(),
            parked: HashMap::new(),
            conferences: HashMap::new(),
            shared_encodes: HashMap::new(),
            silence_encodes: SharedEncodes::default(),
            room_ticks: conferences::RoomTicks::default(),
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
            self.finish(connection);
        }
        tracing::info!(worker = self.index, "media worker stopped");
    }

    /// One pass: wait for readiness, apply commands, drain ready sockets. False to stop.
    fn turn(&mut self) -> bool {
        let spinning = self.spin_until.is_some_and(|until| Instant::now() < until);
        let mut timeout = if self.carry_over.is_empty() && !spinning {
            let session = self.deadlines.next();
            // Counters are due every STATS_PUBLISH_INTERVAL whatever the sessions' deadlines.
            let next = [
                session,
                self.room_ticks.next(),
                Some(self.next_stats_publish),
            ]
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
        self.finish_closing();
        self.run_due_sessions();
        self.run_due_rooms();
        self.publish_stats();
        // Before the next sleep: the turn's sends go to the kernel in one call.
        self.transmit.complete(&self.context.uring_sends);
        true
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
        let mut due = mem::take(&mut self.due);
        self.deadlines.take_due(now, &mut due);
        for (i, &(slot, at)) in due.iter().enumerate() {
            if let Some(&(ahead, _)) = due.get(i + PREFETCH_AHEAD) {
                if let Some(Some(connection)) = self.connections.get(ahead) {
                    prefetch(&**connection);
                }
            }
            if let Some(&(next, _)) = due.get(i + 1) {
                if let Some(Some(connection)) = self.connections.get(next) {
                    connection.session.prefetch_tick();
                }
            }
            let Some(Some(connection)) = self.connections.get_mut(slot) else {
                continue;
            };
            self.context
                .tick_lateness
                .record(now.saturating_duration_since(at).as_micros() as u64);
            connection.session.handle_timeout(now);
            connection.consume_heard(&self.context);
            connection.flush(&mut self.transmit, &self.context);
            self.deadlines.set(
                slot,
                connection.generation,
                connection.session.poll_timeout(),
            );
        }
        due.clear();
        self.due = due;
    }

    /// Makes a connection's current session deadline its slot's (it may have moved either way).
    fn schedule(&mut self, slot: usize) {
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        self.deadlines.set(
            slot,
            connection.generation,
            connection.session.poll_timeout(),
        );
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
            // Its grid is its first worker's: it takes no group here.
            connection.tick_group = None;
            // Slots are this worker's own: a hairpin's other member is found again by its room.
            connection.relay_to = None;
            tracing::debug!(worker = self.index, key, "media connection arrived");
            self.install(connection);
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
            self.session_groups.leave(connection.tick_group.take());
        }
        // What the ring received for it before the disarm goes to its session before it leaves.
        self.receive_from_ring();
        self.slots.remove(&key);
        let Some(mut connection) = self.connections[slot].take() else {
            return;
        };
        self.free_slots.push(slot);
        self.deadlines.clear(slot);
        // The next worker may close the sockets before this one's turn ends.
        self.transmit.submit();
        if let Some(conference) = connection.conference.take() {
            // The control plane takes a connection out of its conference before moving it.
            if let Some(room) = self.conferences.get_mut(&conference) {
                room.leave(key);
            }
            connection.session.leave_conference(Instant::now());
        }
        let Some(peer) = self.peers.get(to) else {
            tracing::error!(key, to, "move to a worker that does not exist; closing");
            self.finish(connection);
            return;
        };
        match peer.handoff.send(Moving(connection)) {
            Ok(()) => {
                if let Err(error) = peer.waker.wake() {
                    tracing::warn!(worker = to, %error, "cannot wake media worker");
                }
            }
            Err(mpsc::SendError(Moving(connection))) => {
                tracing::error!(key, to, "receiving worker has stopped; closing");
                self.finish(connection);
            }
        }
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
        let group = self.session_groups.join();
        let mut connection = Connection::new(
            new,
            &self.context.defaults,
            !self.context.threads.receive_at_tick,
            self.next_generation,
            group_tick_epoch(self.context.tick_epoch, group),
        );
        connection.tick_group = Some(group);
        self.install(Box::new(connection));
    }

    /// Puts a connection in a slot, watches its sockets and schedules its session.
    fn install(&mut self, mut connection: Box<Connection>) {
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
            // A half-made watch: better a fresh pair for the next connection.
            connection.sockets_reusable = false;
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
        let forward_on_arrival = !self.context.threads.receive_at_tick;
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
            connection.session = new_session(
                key,
                &media,
                &defaults,
                forward_on_arrival,
                connection.tick_epoch,
            );
            if let Some(playout) = playout {
                // A prompt keeps playing across a codec change.
                connection.session.resume_playout(Instant::now(), playout);
            }
            let rate = connection
                .conference
                .and_then(|c| self.conferences.get(&c))
                .map(|room| room.rate());
            if let Some(rate) = rate {
                if let Err(error) = connection.session.enter_conference(rate) {
                    tracing::error!(key, %error, "rebuilt session cannot take part in the mix");
                }
                let shared = connection
                    .conference
                    .and_then(|c| self.shared_encodes.get_mut(&c));
                if let Some(Err(error)) = shared.map(|s| s.prepare(&connection.session)) {
                    tracing::error!(key, %error, "rebuilt session cannot share the mix's encode");
                }
                if let Err(error) = self.silence_encodes.prepare(&connection.session) {
                    tracing::error!(key, %error, "rebuilt session cannot share silence's encode");
                }
            }
            connection.apply_listening(Instant::now());
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
        self.deadlines.clear(slot);
        self.session_groups.leave(connection.tick_group.take());
        if let Some(room) = connection
            .conference
            .and_then(|c| self.conferences.get_mut(&c))
        {
            room.leave(key);
        }
        connection.consume_heard(&self.context);
        for recording in connection.recordings.drain(..) {
            let _ = self
                .context
                .recorder
                .try_send(super::recorder::RecorderCommand::Stop {
                    operation: recording.operation,
                });
        }
        match connection.stop_watching(self.poll.registry(), self.receive.as_mut()) {
            Some(cancelled) => self.closing.push(Closing {
                connection,
                cancelled,
            }),
            None => self.finish(connection),
        }
    }

    /// Finishes the closing connections whose receives are over ([`RecvRing::outcome`]): those
    /// the kernel ended, and those that outlived the drain limit, their sockets closed rather
    /// than reused.
    fn finish_closing(&mut self) {
        let mut i = 0;
        while let Some(entry) = self.closing.get(i) {
            let outcome = match &self.receive {
                Some(ring) => ring.outcome(&entry.cancelled),
                None => Some(true),
            };
            let Some(ended) = outcome else {
                i += 1;
                continue;
            };
            let Closing { mut connection, .. } = self.closing.swap_remove(i);
            connection.sockets_reusable &= ended;
            self.finish(connection);
        }
    }

    /// Closes every connection (at stop), and finishes those already closing.
    fn close_all(&mut self) {
        self.slots.clear();
        for slot in 0..self.connections.len() {
            if let Some(mut connection) = self.connections[slot].take() {
                connection.unwatch(self.poll.registry(), self.receive.as_mut());
                self.finish(connection);
            }
        }
        for Closing {
            mut connection,
            cancelled,
        } in mem::take(&mut self.closing)
        {
            if let Some(ring) = self.receive.as_mut() {
                connection.sockets_reusable &= ring.wait(&cancelled);
            }
            self.finish(connection);
        }
    }

    /// Gives the unwatched sockets back to the pool with their ports (kept bound for a later
    /// connection when there is room, else closed here first), then reports `Closed`.
    fn finish(&mut self, mut connection: Box<Connection>) {
        self.session_groups.leave(connection.tick_group.take());
        let stats = connection.current_stats();
        let Connection {
            key,
            rtp_port,
            sockets,
            sockets_reusable,
            shared,
            ..
        } = *connection;
        shared.publish(&stats);
        // Sends still queued name these sockets by fd number: hand them to the kernel first.
        self.transmit.submit();
        self.context
            .port_return
            .give_back(rtp_port, sockets, sockets_reusable);
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
        let Some((connection, peer)) = with_peer(&mut self.connections, slot) else {
            return Drain::Empty;
        };
        let drain = connection.drain(
            leg,
            &mut self.batch,
            peer,
            &mut self.transmit,
            &self.context,
        );
        connection.queued[leg as usize] = drain == Drain::MoreWaiting;
        connection.flush(&mut self.transmit, &self.context);
        self.deadlines.set_if_earlier(
            slot,
            connection.generation,
            connection.session.poll_timeout(),
        );
        drain
    }

    /// With a receive ring: runs the receives queued since the last call (one system call) and
    /// hands each datagram to its connection's session, then arms again the requests that ended;
    /// when some ended for lack of buffers, again (up to [`RECEIVE_ROUNDS`]) for what waits in
    /// their sockets.
    fn receive_from_ring(&mut self) {
        for _ in 0..RECEIVE_ROUNDS {
            if !self.receive_round() {
                break;
            }
        }
        let Some(ring) = self.receive.as_ref() else {
            return;
        };
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

    /// One round of [`Worker::receive_from_ring`]; true when a request ended because the
    /// buffers ran out (its socket armed again, datagrams may be waiting there).
    fn receive_round(&mut self) -> bool {
        let Some(ring) = self.receive.as_mut() else {
            return false;
        };
        let exhausted = ring.counts().out_of_buffers;
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
        ring.take_looking_ahead(PREFETCH_AHEAD, |tag, upcoming, received| {
            if let Some(upcoming) = upcoming {
                let (slot, _) = split_ring_tag(upcoming);
                if let Some(Some(connection)) = connections.get(slot) {
                    prefetch(&**connection);
                }
            }
            let (slot, leg) = split_ring_tag(tag);
            let Some((connection, peer)) = with_peer(connections, slot) else {
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
                    if let Some(forward) = connection.deliver(now, leg, source, buf, len, truncated)
                    {
                        connection.forward_arrived(now, &forward, buf, peer, transmit, context);
                    }
                    connection.flush(transmit, context);
                    deadlines.set_if_earlier(
                        slot,
                        connection.generation,
                        connection.session.poll_timeout(),
                    );
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
        ring.counts().out_of_buffers != exhausted
    }

    #[cfg(test)]
    fn connection_by_key(&mut self, key: ConnectionKey) -> Option<&mut Connection> {
        let slot = *self.slots.get(&key)?;
        self.connections.get_mut(slot)?.as_deref_mut()
    }
}

/// The connection in `slot` and, while its session forwards to the other member of its
/// hairpin (`relay_to`), that member's connection, when it is still the one in that slot.
fn with_peer(
    connections: &mut [Option<Box<Connection>>],
    slot: usize,
) -> Option<(&mut Connection, Option<&mut Connection>)> {
    let relay_to = connections.get(slot)?.as_ref()?.relay_to;
    match relay_to.filter(|&(to, _)| to != slot && to < connections.len()) {
        Some((to, generation)) => {
            let (connection, peer) = pair_mut(connections, slot, to)?;
            let peer = peer.as_deref_mut().filter(|p| p.generation == generation);
            Some((connection.as_deref_mut()?, peer))
        }
        None => Some((connections.get_mut(slot)?.as_deref_mut()?, None)),
    }
}

/// Two distinct elements of `items`, both mutable.
fn pair_mut<T>(items: &mut [T], a: usize, b: usize) -> Option<(&mut T, &mut T)> {
    if a == b || a >= items.len() || b >= items.len() {
        return None;
    }
    if a < b {
        let (low, high) = items.split_at_mut(b);
        Some((&mut low[a], &mut high[0]))
    } else {
        let (low, high) = items.split_at_mut(a);
        Some((&mut high[0], &mut low[b]))
    }
}

/// Tick groups per worker. A worker runs the ticks of all the sessions on one grid at once, in
/// one burst; it spreads its connections over this many grids, each `20 ms / TICK_GROUPS`
/// after the last, so at load a burst carries a quarter of the worker's calls
/// ([`SessionGroups`]).
pub(super) const TICK_GROUPS: usize = 4;

/// Sessions a tick group takes before new ones go to another group (see [`SessionGroups`]).
/// A burst of 64 packets: 500 echo calls on two workers (250 each) on four grids, as round
/// robin had them, measured a stream jitter p99 of 0.30–0.31 ms, where two grids of 128 had
/// 0.47–0.69 (docs/PERFORMANCE.md, "Tick groups filled before they spread"); from 256 calls a
/// worker every grid carries a quarter again.
pub(super) const GROUP_SESSIONS: usize = 64;

/// The group a new session or room goes to, by each group's `load`: the fullest still under
/// `cap` (the lowest-numbered of equals), else the emptiest. A small load stays on one grid —
/// one wake-up a tick, where each grid in use is one more every 20 ms — and a large one
/// spreads over all of them.
pub(super) fn fill_group(load: &[usize; TICK_GROUPS], cap: usize) -> usize {
    (0..TICK_GROUPS)
        .filter(|&g| load[g] < cap)
        .max_by_key(|&g| (load[g], std::cmp::Reverse(g)))
        .or_else(|| (0..TICK_GROUPS).min_by_key(|&g| load[g]))
        .unwrap_or(0)
}

/// How many of the connections this worker opened tick on each of its groups' grids.
///
/// Round robin at open put a worker's first four sessions on four grids: at 2,000 short calls
/// a second (a few alive at a time) each worker woke 200 times a second where 50 would do, and
/// a worker with a few calls woke four times a tick where once serves them all. Connections
/// fill group 0 up to [`GROUP_SESSIONS`], then the next, as rooms do; a connection that moved
/// in from another worker keeps its first worker's grid and counts in no group here.
#[derive(Debug, Default)]
pub(super) struct SessionGroups {
    load: [usize; TICK_GROUPS],
}

impl SessionGroups {
    /// Takes a group for a new connection.
    pub(super) fn join(&mut self) -> usize {
        let group = fill_group(&self.load, GROUP_SESSIONS);
        self.load[group] += 1;
        group
    }

    /// Gives back the group a connection took (`None`: it took none here).
    pub(super) fn leave(&mut self, group: Option<usize>) {
        if let Some(group) = group {
            // Each connection's group is taken out of it once (`Option::take`).
            debug_assert!(self.load[group] > 0, "group {group} left more than joined");
            self.load[group] = self.load[group].saturating_sub(1);
        }
    }

    /// Each group's sessions.
    #[cfg(test)]
    pub(super) fn load(&self) -> [usize; TICK_GROUPS] {
        self.load
    }
}

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

/// The grid of tick group `group` on a worker whose first grid starts at `worker_epoch`:
/// `group × 20 ms / TICK_GROUPS` later.
fn group_tick_epoch(worker_epoch: Instant, group: usize) -> Instant {
    let group = (group % TICK_GROUPS) as u64;
    worker_epoch + Duration::from_nanos(ROOM_TICK.as_nanos() as u64 * group / TICK_GROUPS as u64)
}

#[cfg(test)]
mod tests;
