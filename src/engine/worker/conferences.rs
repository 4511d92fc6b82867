//! The worker's side of the conferences it mixes: the 20 ms conference tick, the commands
//! that create, join, leave and close them, and the members as a conference reaches them.
//!
//! Owns: the bridge between a sans-IO [`Conference`] (in [`crate::mixer::conference`]) and the
//! worker's connections: `Members` captures from and plays to their sessions, sends what they
//! queued, hands recordings to the recorder and events to the control plane; and each
//! conference's [`SharedEncodes`]: the members that hear the common mix (not a current talker)
//! get one encode per format, each session only packetizing it in its own stream.
//! Must not: mix, or allocate per tick: `Members` borrows the worker's state for one
//! conference's tick, on the stack; a format's shared encoder is made when a member joins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::connection::Connection;
use super::transmit::Transmitter;
use super::{fill_group, group_tick_epoch, pair_mut, Worker, WorkerContext, TICK_GROUPS};
use crate::engine::{ConfereeSpec, ConferenceKey, ConferenceSpec, ConnectionKey, EngineEvent};
use crate::media::codec::pcm_rate;
use crate::media::session::{aligned_tick, Relayed, SharedEncodes, MAX_RELAYED, ROOM_TICK};
use crate::mixer::conference::{Capture, Conference, ConferenceEvent, ConferenceIo, Heard, Relay};

impl Worker {
    /// Runs the conference ticks that are due: the conferences of each due tick group mix one
    /// 20 ms frame, and their members send what they hear.
    pub(super) fn run_due_rooms(&mut self) {
        let now = Instant::now();
        // Each due group once a turn: one that is still behind ticks again next turn, after
        // the turn's receives, so its catching up pops frames that have been read.
        for (group, at) in self.room_ticks.due(now).into_iter().flatten() {
            self.run_room_group(group, at, now);
            self.room_ticks.advance(group, at, now);
        }
    }

    /// One tick of the conferences of `group`, due `at`.
    fn run_room_group(&mut self, group: usize, at: Instant, now: Instant) {
        self.context
            .tick_lateness
            .record(now.saturating_duration_since(at).as_micros() as u64);
        let Worker {
            conferences,
            room_ticks,
            shared_encodes,
            silence_encodes,
            connections,
            slots,
            room_frame,
            transmit,
            context,
            ..
        } = self;
        if room_ticks.silence_period_begins(at) {
            silence_encodes.begin_tick();
        }
        // Forward as packets arrive where they are read so (else only a member whose packets
        // are being dropped as late).
        let forward_on_arrival = !context.threads.receive_at_tick;
        for conference in room_ticks.rooms(group) {
            let Some(room) = conferences.get_mut(conference) else {
                continue;
            };
            let shared = shared_encodes.entry(*conference).or_default();
            shared.begin_tick();
            let mut members = Members {
                conference: *conference,
                connections,
                slots,
                shared,
                silence: silence_encodes,
                out: transmit,
                context,
                forward_on_arrival,
            };
            room.tick(now, room_frame, &mut members);
        }
    }

    pub(super) fn create_conference(&mut self, conference: ConferenceKey, spec: ConferenceSpec) {
        if self.conferences.contains_key(&conference) {
            tracing::error!(
                conference,
                "duplicate conference key, keeping the existing one"
            );
            return;
        }
        self.conferences.insert(conference, Conference::new(spec));
        self.shared_encodes
            .insert(conference, SharedEncodes::default());
        if self.room_frame.len() < self.conferences[&conference].frame_len() {
            let len = self.conferences[&conference].frame_len();
            self.room_frame.resize(len, 0);
        }
        let conferences = &self.conferences;
        let group = self.room_ticks.add(
            conference,
            self.context.tick_epoch,
            Instant::now(),
            |room| conferences.get(&room).map_or(0, |c| c.members().count()),
        );
        tracing::debug!(
            worker = self.index,
            conference,
            rate = spec.rate,
            group,
            "conference created"
        );
    }

    pub(super) fn join(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    ) {
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
        if let Err(error) = room.join(key, conferee) {
            tracing::error!(key, conference, %error, "conference refused the connection");
            return;
        }
        if let Err(error) = connection.session.enter_conference(room.rate()) {
            tracing::error!(key, conference, %error, "connection cannot take part in the mix");
        }
        let shared = self.shared_encodes.entry(conference).or_default();
        if let Err(error) = shared.prepare(&connection.session) {
            // It still hears the mix, encoded by its own session.
            tracing::warn!(key, conference, %error, "connection cannot share the mix's encode");
        }
        if let Err(error) = self.silence_encodes.prepare(&connection.session) {
            tracing::warn!(key, conference, %error, "connection cannot share silence's encode");
        }
        connection.conference = Some(conference);
        self.schedule(slot);
    }

    pub(super) fn leave(&mut self, conference: ConferenceKey, key: ConnectionKey) {
        if let Some(room) = self.conferences.get_mut(&conference) {
            room.leave(key);
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

    pub(super) fn close_conference(&mut self, conference: ConferenceKey) {
        let Some(room) = self.conferences.get(&conference) else {
            return;
        };
        let members: Vec<ConnectionKey> = room.members().collect();
        let recordings: Vec<u64> = room.recording_operations().collect();
        for key in members {
            self.leave(conference, key);
        }
        for operation in recordings {
            let _ = self
                .context
                .recorder
                .try_send(crate::engine::recorder::RecorderCommand::Stop { operation });
        }
        self.conferences.remove(&conference);
        self.shared_encodes.remove(&conference);
        self.room_ticks.remove(conference);
        tracing::debug!(worker = self.index, conference, "conference closed");
    }
}

/// Members a tick group's rooms take before new rooms go to another group (see
/// [`RoomTicks`]): a burst of 256 packets each way, where the echo measurements put the worth of
/// a second grid (docs/PERFORMANCE.md, "Staggered tick grids": at 250 calls a worker one grid
/// had the lower jitter, at 500 four grids had).
pub(super) const GROUP_MEMBERS: usize = 256;

/// When this worker's conferences tick. A tick's burst reads, mixes and sends for every member
/// of its rooms at once; with all of a worker's rooms on one grid a two-party relay of 1,000
/// calls (1,000 members a worker) had a stream jitter p99 of 4.6–5.7 ms where echo at the same
/// packet rate, its sessions on four grids, had about 1 (issue 19). So rooms fill one grid up
/// to [`GROUP_MEMBERS`] members and then spread over the same `TICK_GROUPS` grids as the
/// sessions (1.0–2.7 ms then): a small load keeps one wake-up a tick (each grid in use is a
/// wake-up every 20 ms, and four of them cost 150 PCMU members in rooms of ten about a third
/// more CPU), a large one bursts of a quarter of the members.
#[derive(Default)]
pub(super) struct RoomTicks {
    /// Each group's conferences.
    rooms: [Vec<ConferenceKey>; TICK_GROUPS],
    /// Each group's next tick, while it has conferences.
    next: [Option<Instant>; TICK_GROUPS],
    /// The tick that last began a period of the worker's silence encodes (see
    /// [`RoomTicks::silence_period_begins`]).
    silence_period: Option<Instant>,
}

impl RoomTicks {
    /// Puts `conference` in a group — the fullest still under [`GROUP_MEMBERS`] members (by
    /// `members` of each of its rooms now), else the emptiest — and returns it. A group with no
    /// rooms starts on its grid's next point after `now` (group `g`'s grid is `epoch + g × 20
    /// ms / TICK_GROUPS + k × 20 ms`).
    pub(super) fn add(
        &mut self,
        conference: ConferenceKey,
        epoch: Instant,
        now: Instant,
        members: impl Fn(ConferenceKey) -> usize,
    ) -> usize {
        let load: [usize; TICK_GROUPS] =
            std::array::from_fn(|g| self.rooms[g].iter().map(|&c| members(c)).sum());
        let group = fill_group(&load, GROUP_MEMBERS);
        self.rooms[group].push(conference);
        if self.next[group].is_none() {
            let grid = group_tick_epoch(epoch, group);
            self.next[group] = Some(aligned_tick(grid, now, ROOM_TICK));
        }
        group
    }

    /// Takes `conference` out of its group (it may be in none).
    pub(super) fn remove(&mut self, conference: ConferenceKey) {
        for (rooms, next) in self.rooms.iter_mut().zip(&mut self.next) {
            if let Some(at) = rooms.iter().position(|&c| c == conference) {
                rooms.swap_remove(at);
                if rooms.is_empty() {
                    *next = None;
                }
                return;
            }
        }
    }

    /// The earliest group tick.
    pub(super) fn next(&self) -> Option<Instant> {
        self.next.iter().flatten().min().copied()
    }

    /// The groups whose tick has come by `now`, each with its time, earliest first (then the
    /// groups not due, as `None`).
    pub(super) fn due(&self, now: Instant) -> [Option<(usize, Instant)>; TICK_GROUPS] {
        let mut due: [Option<(usize, Instant)>; TICK_GROUPS] =
            std::array::from_fn(|g| self.next[g].filter(|&at| at <= now).map(|at| (g, at)));
        due.sort_unstable_by_key(|d| (d.is_none(), d.map(|(_, at)| at)));
        due
    }

    /// `group`'s conferences.
    pub(super) fn rooms(&self, group: usize) -> &[ConferenceKey] {
        &self.rooms[group]
    }

    /// After `group` ticked for `at`: its next tick keeps the cadence, or after a long stall
    /// skips ahead rather than burst.
    pub(super) fn advance(&mut self, group: usize, at: Instant, now: Instant) {
        if self.rooms[group].is_empty() {
            self.next[group] = None;
            return;
        }
        let next = at + ROOM_TICK;
        self.next[group] = Some(if next + ROOM_TICK * 5 < now {
            now + ROOM_TICK
        } else {
            next
        });
    }

    /// Whether the tick due `at` begins a new 20 ms period of the worker's encodes of digital
    /// silence (a talker who hears nobody is sent them): once a period whatever the groups,
    /// so the groups' ticks within one 20 ms share them as the rooms of one tick do.
    pub(super) fn silence_period_begins(&mut self, at: Instant) -> bool {
        // Ticks of one period are at most three quarters of a tick apart.
        let begins = self.silence_period.is_none_or(|last| {
            at.saturating_duration_since(last) > ROOM_TICK - ROOM_TICK / (2 * TICK_GROUPS as u32)
        });
        if begins {
            self.silence_period = Some(at);
        }
        begins
    }
}

/// How long a hairpin member that forwards its packets as they arrive may send none before
/// it is played at the room's tick again (the other member then hears silence packets, not
/// nothing: some far ends end a call whose RTP stops). Longer than a pause between a
/// discontinuous sender's talkspurts is not needed: the first packet after one starts the
/// forwarding again.
const FORWARD_IDLE: Duration = Duration::from_millis(200);

/// A hairpin member whose packets went to the other as they arrived: they are played out
/// here again from the next one.
fn stop_forwarding(connection: &mut Connection) {
    if connection.session.is_forwarding() {
        connection.session.stop_forwarding();
    }
    connection.relay_to = None;
}

/// One conference's members as this worker carries them, for the length of its tick.
struct Members<'a> {
    /// The conference ticking (for its events).
    conference: ConferenceKey,
    connections: &'a mut [Option<Box<Connection>>],
    slots: &'a HashMap<ConnectionKey, usize>,
    /// The conference's encodes of its common mix.
    shared: &'a mut SharedEncodes,
    /// The worker's encodes of digital silence, for talkers who hear nothing.
    silence: &'a mut SharedEncodes,
    out: &'a mut Transmitter,
    context: &'a WorkerContext,
    /// A relayable hairpin forwards its packets as they arrive
    /// ([`ConferenceIo::relay`]'s implementation below).
    forward_on_arrival: bool,
}

impl Members<'_> {
    /// The member's connection, when it is on this worker (not in transit).
    fn connection(&mut self, key: ConnectionKey) -> Option<&mut Connection> {
        self.slots
            .get(&key)
            .and_then(|&slot| self.connections.get_mut(slot))
            .and_then(Option::as_deref_mut)
    }
}

impl ConferenceIo for Members<'_> {
    /// The session's share of the tick; what the caller said meanwhile also goes to its own
    /// recording and energy watches.
    fn capture(
        &mut self,
        key: ConnectionKey,
        now: Instant,
        frame: &mut [i16],
        listener: bool,
    ) -> Capture {
        let context = self.context;
        let Some(connection) = self.connection(key) else {
            return Capture::Absent;
        };
        // Captured, not relayed: what it says is played out here again.
        stop_forwarding(connection);
        let voiced = if listener {
            connection.session.capture_listener(now, frame)
        } else {
            connection.session.capture(now, frame)
        };
        connection.consume_heard(context);
        match voiced {
            Some(audio_rate) => Capture::Voiced { audio_rate },
            None => Capture::Silent,
        }
    }

    /// The session sends what the member hears (the common mix's shared encode, or its own);
    /// its packets go out now.
    fn play(
        &mut self,
        key: ConnectionKey,
        now: Instant,
        heard: Option<Heard<'_>>,
        audio_rate: Option<u32>,
    ) {
        let context = self.context;
        let Some(connection) = self
            .slots
            .get(&key)
            .and_then(|&slot| self.connections.get_mut(slot))
            .and_then(Option::as_mut)
        else {
            return;
        };
        match heard {
            Some(Heard::Shared(mix)) => {
                self.shared
                    .play(&mut connection.session, now, mix, audio_rate, true);
            }
            // A talker alone in the mix hears digital silence: the worker's one encode of it.
            Some(Heard::Own(mix)) if mix.iter().all(|&sample| sample == 0) => {
                let shared = self
                    .silence
                    .play(&mut connection.session, now, mix, None, true);
                context
                    .silence_shares
                    .fetch_add(u64::from(shared), std::sync::atomic::Ordering::Relaxed);
            }
            Some(Heard::Own(mix)) => connection.session.play(now, mix, audio_rate),
            None => {}
        }
        // What it was sent goes to its two-channel recording this tick, beside what it said.
        connection.consume_heard(context);
        connection.flush(self.out, context);
    }

    /// The two sessions agree on a G.711 format both can pass untouched: `from`'s frame is
    /// taken as it came and queued in `to`'s stream, which sends it now. Where the worker reads
    /// each packet as it arrives (not at its tick), or while `from`'s packets are being dropped
    /// as late ([`MediaSession::dropping_late`]), `from` forwards its packets to `to` as they
    /// come instead ([`MediaSession::start_forwarding`]): the tick only sees that it still may.
    /// Played at the tick, the two stay paired (`relay_to`) while `to` can take forwarded
    /// packets: a packet of `from`'s that comes after its tick, in order, then starts the
    /// forwarding as it is read rather than being dropped.
    ///
    /// [`MediaSession::dropping_late`]: crate::media::session::MediaSession::dropping_late
    ///
    /// [`MediaSession::start_forwarding`]: crate::media::session::MediaSession::start_forwarding
    fn relay(
        &mut self,
        from: ConnectionKey,
        to: ConnectionKey,
        now: Instant,
        frame: &mut [i16],
    ) -> Option<Relay> {
        let context = self.context;
        let (&from_slot, &to_slot) = (self.slots.get(&from)?, self.slots.get(&to)?);
        let (source, sink) = pair_mut(self.connections, from_slot, to_slot)?;
        let (source, sink) = (source.as_deref_mut()?, sink.as_deref_mut()?);
        let codec = sink.session.relay_sink()?;
        if source.session.relay_source()? != codec {
            return None;
        }
        let forward = self.forward_on_arrival || source.session.dropping_late(now);
        let target = (to_slot, sink.generation);
        let sink_takes = sink.session.forward_sink() == Some(codec);
        if forward && sink_takes {
            let forwarding = source.session.is_forwarding() && source.relay_to == Some(target);
            if forwarding && source.session.forwarded_within(now, FORWARD_IDLE) {
                return Some(Relay::Sent {
                    audio_rate: pcm_rate(codec),
                });
            }
            if !forwarding && source.session.has_waiting_audio() {
                source.relay_to = Some(target);
                let out = &mut *self.out;
                // What waits in its jitter buffer goes first, then each packet as it comes.
                source.session.start_forwarding(now, |packet| {
                    sink.session.send_forwarded(now, codec, packet);
                    sink.flush(out, context);
                });
                return Some(Relay::Sent {
                    audio_rate: pcm_rate(codec),
                });
            }
            // A caller quiet for FORWARD_IDLE, or not sending yet: played at the tick, so the
            // other member is sent silence; its next packet starts the forwarding again.
        }
        stop_forwarding(source);
        if sink_takes {
            // Paired: a packet of `from`'s that comes after its tick but in order goes to `to`
            // as it is read instead of being dropped (`MediaSession::handle_rtp`).
            source.relay_to = Some(target);
        }
        let mut payload = [0u8; MAX_RELAYED];
        let taken = source.session.capture_relay(now, &mut payload, frame);
        source.consume_heard(context);
        let (len, audio_rate) = match taken {
            Relayed::Payload { len, audio_rate } => (len, audio_rate),
            Relayed::Decoded(voiced) => {
                return Some(Relay::Captured(match voiced {
                    Some(audio_rate) => Capture::Voiced { audio_rate },
                    None => Capture::Silent,
                }))
            }
        };
        sink.session.play_relayed(now, &payload[..len]);
        sink.consume_heard(context);
        sink.flush(self.out, context);
        Some(Relay::Sent { audio_rate })
    }

    fn record(&mut self, key: ConnectionKey, operation: u64, mix: &[i16], rate: u32) {
        self.context.record(key, operation, 0, mix, rate);
    }

    fn event(&mut self, event: ConferenceEvent) {
        self.context.emit(match event {
            ConferenceEvent::PlayoutDone { key, operation } => {
                EngineEvent::PlayoutDone { key, operation }
            }
            ConferenceEvent::Talker { key, talking } => EngineEvent::Talker {
                conference: self.conference,
                key,
                talking,
            },
        });
    }
}
