//! What the control plane asks a worker to do ([`WorkerCommand`]) and how the worker applies
//! it: commands for a connection in transit are parked until it arrives, the others change a
//! connection, its session or a conference.
//!
//! Owns: the command vocabulary and its dispatch.
//! Must not: wait: commands are drained with `try_recv` at the start of a turn, and what they
//! pass on (recorder stops) is sent with `try_send`.

use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use super::connection::{Connection, Recording};
use super::handle::NewConnection;
use super::Worker;
use crate::engine::{ConfereeSpec, ConferenceKey, ConferenceSpec, ConnectionKey, MediaSpec};
use crate::media::energy::EnergyWatch;
use crate::media::session::MediaSession;

/// What the control plane asks a worker to do.
pub(in crate::engine) enum WorkerCommand {
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
    Record {
        key: ConnectionKey,
        operation: u64,
        both: bool,
    },
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
    pub(super) fn connection(&self) -> Option<ConnectionKey> {
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

impl Worker {
    /// Takes connections handed over by other workers, then applies every queued command;
    /// false once the control plane is gone.
    pub(super) fn apply_commands(&mut self) -> bool {
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
    pub(super) fn apply(&mut self, command: WorkerCommand) {
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
                    room.set_hairpin(hairpin);
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
            WorkerCommand::Record {
                key,
                operation,
                both,
            } => self.with_connection(key, |c| {
                c.recordings.retain(|r| r.operation != operation);
                c.recordings.push(Recording { operation, both });
            }),
            WorkerCommand::StopRecord { key, operation } => {
                let recorder = self.context.recorder.clone();
                self.with_connection(key, |c| c.recordings.retain(|r| r.operation != operation));
                // After the last audio the worker held: the recorder then finishes the file.
                let _ =
                    recorder.try_send(crate::engine::recorder::RecorderCommand::Stop { operation });
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
                    room.set_player_gain(key, gain, speed);
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
                    .try_send(crate::engine::recorder::RecorderCommand::Stop { operation });
            }
        }
    }

    /// Changes what listens to a connection's audio (recording, energy watches), then hands
    /// over what was heard so far and switches the session's listening on or off.
    pub(super) fn with_connection(
        &mut self,
        key: ConnectionKey,
        change: impl FnOnce(&mut Connection),
    ) {
        let Some(&slot) = self.slots.get(&key) else {
            tracing::warn!(key, "command for a connection this worker does not carry");
            return;
        };
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        connection.consume_heard(&self.context);
        change(connection);
        connection.apply_listening(Instant::now());
        self.schedule(slot);
    }

    /// Runs `change` on a connection's session, then reschedules it (its deadlines may move).
    pub(super) fn with_session(
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
}
