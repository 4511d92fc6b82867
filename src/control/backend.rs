//! The control core's one seam to the machine: the media engine, the media files and the
//! host's addresses.
//!
//! Owns: the [`Backend`] trait — every engine command the core gives (open, update and
//! close connections, conferences, playouts, recordings, energy watches, digits), every
//! file the core touches (prompts read, recordings created, expiry markers, the sweep) and
//! the two address questions that need the kernel (which source address reaches a peer;
//! which SIP listener a call we place goes out of) — and [`Host`], its implementation over
//! the real [`Engine`], `std::fs` and the SIP transport, which the shell owns.
//! Engine commands answer at once (a port allocated, a queue full), and that answer decides
//! the API's result code, so they are calls rather than deferred effects; what happens later
//! comes back as [`crate::engine::EngineEvent`]s through the shell.
//! Must not: decide anything. It forwards; the tests replace it with a simulated engine.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::engine::{
    ConfereeSpec, ConferenceKey, ConferenceSpec, ConnectionKey, Engine, EngineError, MediaEndpoint,
    MediaSpec, MediaStats, OpenConnection, TickLatenessSnapshot,
};
use crate::media::player::PlaySource;
use crate::media::recording_file::{FileKind, NewRecording, RecordingFile};
use crate::media::wav::Audio;
use crate::sip::transaction::Peer;
use crate::sip::transport::{route_source, SipTransport};

/// The engine's health and counters, for /health and /metrics.
#[derive(Debug, Clone, Default)]
pub struct MediaHealth {
    pub ports_in_use: usize,
    /// Ports of ended connections kept bound for the next ones (two per pair).
    pub ports_idle: usize,
    pub ports_total: usize,
    /// Media workers whose loop has not turned for a second.
    pub stalled_workers: usize,
    pub events_dropped: u64,
    /// Recording frames the recorder's full queue refused.
    pub recorder_frames_dropped: u64,
    pub receive_buffers_exhausted: u64,
    /// CPU time of each media worker thread (`None`: the thread has ended).
    pub worker_cpu: Vec<Option<Duration>>,
    pub tick_lateness: TickLatenessSnapshot,
}

/// What the control core asks of the media engine and the file system. Keys are the
/// core's connection, conference and operation ids; see [`Engine`] for each command's meaning.
#[allow(missing_docs)]
pub trait Backend {
    fn open_connection(&mut self, request: OpenConnection) -> Result<MediaEndpoint, EngineError>;
    fn update_connection(
        &mut self,
        key: ConnectionKey,
        media: MediaSpec,
    ) -> Result<(), EngineError>;
    /// Closes a connection; an `EngineEvent::Closed` with its final statistics follows.
    fn close_connection(&mut self, key: ConnectionKey) -> Result<(), EngineError>;
    fn create_conference(
        &mut self,
        conference: ConferenceKey,
        spec: ConferenceSpec,
        first: ConnectionKey,
    ) -> Result<(), EngineError>;
    fn join_conference(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    ) -> Result<(), EngineError>;
    fn set_conferee(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    ) -> Result<(), EngineError>;
    fn leave_conference(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError>;
    fn set_hairpin(&mut self, conference: ConferenceKey, hairpin: bool) -> Result<(), EngineError>;
    fn close_conference(&mut self, conference: ConferenceKey) -> Result<(), EngineError>;
    fn play(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        source: PlaySource,
        gain: f32,
    ) -> Result<(), EngineError>;
    fn stop_play(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError>;
    fn set_play_gain(&mut self, key: ConnectionKey, gain: f32) -> Result<(), EngineError>;
    fn set_play_speed(&mut self, key: ConnectionKey, speed: i32) -> Result<(), EngineError>;
    fn send_digits(
        &mut self,
        key: ConnectionKey,
        digits: String,
        duration_ms: u32,
        gap_ms: u32,
    ) -> Result<(), EngineError>;
    fn start_recording(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError>;
    /// A call's recording: its file is created off the control task (the recorder thread).
    fn start_recording_to(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        file: NewRecording,
    ) -> Result<(), EngineError>;
    fn stop_recording(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError>;
    /// Silence in a recording's channels from now on (`left`: the caller, or a mono file's
    /// only channel; `right`: what the connection is sent).
    fn mute_recording(
        &mut self,
        operation: u64,
        left: bool,
        right: bool,
    ) -> Result<(), EngineError>;
    fn watch_energy(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        silence: bool,
        needed: Duration,
    ) -> Result<(), EngineError>;
    fn unwatch_energy(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError>;
    fn conference_play(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        source: PlaySource,
        gain: f32,
    ) -> Result<(), EngineError>;
    fn conference_stop_play(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError>;
    fn conference_set_gain(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        gain: f32,
        speed: Option<i32>,
    ) -> Result<(), EngineError>;
    fn conference_record(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError>;
    fn conference_stop_record(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
    ) -> Result<(), EngineError>;
    /// The connection's latest published counters (every 100 ms, packet counts at once).
    fn stats(&self, key: ConnectionKey) -> Option<MediaStats>;
    fn health(&self) -> MediaHealth;
    /// Gives back the slack a burst left in the backend's tables (see `crate::shrink`).
    fn shrink_idle(&mut self) {}
    /// Closes the sockets of ended connections kept bound longer than their time; returns how
    /// long until the next of those left is due (None: none left).
    fn close_idle_sockets(&mut self) -> Option<Duration> {
        None
    }

    // Media files: the local file system unless a backend keeps them elsewhere.
    fn is_file(&self, path: &Path) -> bool {
        files::is_file(path)
    }
    fn read_prompt(&self, path: &Path) -> Result<Audio, String> {
        files::read_prompt(path)
    }
    /// Creates a recording's file (and its directory); the error says what failed.
    fn create_recording(
        &mut self,
        path: &Path,
        kind: FileKind,
        rate: u32,
        channels: u16,
    ) -> Result<RecordingFile, String> {
        files::create_recording(path, kind, rate, channels)
    }
    fn remove_file(&mut self, path: &Path) {
        files::remove_file(path)
    }
    fn write_file(&mut self, path: &Path, contents: &str) -> io::Result<()> {
        files::write_file(path, contents)
    }
    /// Repairs recordings a killed process left (`repair`) and deletes expired ones.
    fn sweep_recordings(&mut self, dir: &Path, repair: bool, now_unix_s: u64) {
        files::sweep_recordings(dir, repair, now_unix_s)
    }

    // Addresses.
    /// The local address the kernel would send from to reach `peer`.
    fn source_address_for(&self, peer: IpAddr) -> Option<IpAddr>;
    /// Our SIP address as `peer` sees it when we send first (calls we place).
    fn sip_local_for(&self, peer: Peer) -> Option<SocketAddr>;
}

/// The real backend: the media engine's worker threads, the local file system and the SIP
/// transport's listeners.
pub struct Host {
    pub engine: Engine,
    pub sip: SipTransport,
}

/// The local file system: the default media-file half of [`Backend`].
pub mod files {
    use super::*;

    pub fn is_file(path: &Path) -> bool {
        path.is_file()
    }

    pub fn read_prompt(path: &Path) -> Result<Audio, String> {
        crate::media::wav::read(path).map_err(|e| e.to_string())
    }

    pub fn create_recording(
        path: &Path,
        kind: FileKind,
        rate: u32,
        channels: u16,
    ) -> Result<RecordingFile, String> {
        RecordingFile::create(path, kind, rate, channels).map_err(|e| e.to_string())
    }

    pub fn remove_file(path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    pub fn write_file(path: &Path, contents: &str) -> io::Result<()> {
        std::fs::write(path, contents)
    }

    /// At start: recordings a killed process left get valid headers; and (at start and hourly)
    /// expired recordings are deleted. Walks `dir` a few levels deep.
    pub fn sweep_recordings(dir: &Path, repair: bool, now_unix_s: u64) {
        fn walk(dir: &Path, depth: u32, repair: bool, now: u64) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if depth < 4 {
                        walk(&path, depth + 1, repair, now);
                    }
                    continue;
                }
                let name = path.to_string_lossy().to_string();
                if let Some(recording) = name.strip_suffix(super::super::media_ops::EXPIRES_SUFFIX)
                {
                    let expired = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .is_some_and(|at| at <= now);
                    if expired {
                        let _ = std::fs::remove_file(recording);
                        let _ = std::fs::remove_file(&path);
                        tracing::info!(file = recording, "expired recording deleted");
                    }
                } else if repair && name.ends_with(".wav") {
                    match crate::media::wav::repair(&path) {
                        Ok(true) => {
                            tracing::warn!(file = %path.display(), "recording cut off by a stop: header repaired")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "recording cannot be repaired")
                        }
                    }
                }
            }
        }
        walk(dir, 0, repair, now_unix_s);
    }
}

impl Backend for Host {
    fn open_connection(&mut self, request: OpenConnection) -> Result<MediaEndpoint, EngineError> {
        self.engine.open_connection(request)
    }
    fn update_connection(
        &mut self,
        key: ConnectionKey,
        media: MediaSpec,
    ) -> Result<(), EngineError> {
        self.engine.update_connection(key, media)
    }
    fn close_connection(&mut self, key: ConnectionKey) -> Result<(), EngineError> {
        self.engine.close_connection(key)
    }
    fn create_conference(
        &mut self,
        conference: ConferenceKey,
        spec: ConferenceSpec,
        first: ConnectionKey,
    ) -> Result<(), EngineError> {
        self.engine.create_conference(conference, spec, first)
    }
    fn join_conference(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    ) -> Result<(), EngineError> {
        self.engine.join_conference(conference, key, conferee)
    }
    fn set_conferee(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        conferee: ConfereeSpec,
    ) -> Result<(), EngineError> {
        self.engine.set_conferee(conference, key, conferee)
    }
    fn leave_conference(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError> {
        self.engine.leave_conference(conference, key)
    }
    fn set_hairpin(&mut self, conference: ConferenceKey, hairpin: bool) -> Result<(), EngineError> {
        self.engine.set_hairpin(conference, hairpin)
    }
    fn close_conference(&mut self, conference: ConferenceKey) -> Result<(), EngineError> {
        self.engine.close_conference(conference)
    }
    fn play(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        source: PlaySource,
        gain: f32,
    ) -> Result<(), EngineError> {
        self.engine.play(key, operation, source, gain)
    }
    fn stop_play(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.engine.stop_play(key, operation)
    }
    fn set_play_gain(&mut self, key: ConnectionKey, gain: f32) -> Result<(), EngineError> {
        self.engine.set_play_gain(key, gain)
    }
    fn set_play_speed(&mut self, key: ConnectionKey, speed: i32) -> Result<(), EngineError> {
        self.engine.set_play_speed(key, speed)
    }
    fn send_digits(
        &mut self,
        key: ConnectionKey,
        digits: String,
        duration_ms: u32,
        gap_ms: u32,
    ) -> Result<(), EngineError> {
        self.engine.send_digits(key, digits, duration_ms, gap_ms)
    }
    fn start_recording(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError> {
        self.engine.start_recording(key, operation, file)
    }
    fn start_recording_to(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        file: NewRecording,
    ) -> Result<(), EngineError> {
        self.engine.start_recording_to(key, operation, file)
    }
    fn stop_recording(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.engine.stop_recording(key, operation)
    }
    fn mute_recording(
        &mut self,
        operation: u64,
        left: bool,
        right: bool,
    ) -> Result<(), EngineError> {
        self.engine.mute_recording(operation, left, right)
    }
    fn watch_energy(
        &mut self,
        key: ConnectionKey,
        operation: u64,
        silence: bool,
        needed: Duration,
    ) -> Result<(), EngineError> {
        self.engine.watch_energy(key, operation, silence, needed)
    }
    fn unwatch_energy(&mut self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        self.engine.unwatch_energy(key, operation)
    }
    fn conference_play(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        source: PlaySource,
        gain: f32,
    ) -> Result<(), EngineError> {
        self.engine
            .conference_play(conference, key, operation, source, gain)
    }
    fn conference_stop_play(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
    ) -> Result<(), EngineError> {
        self.engine.conference_stop_play(conference, key)
    }
    fn conference_set_gain(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        gain: f32,
        speed: Option<i32>,
    ) -> Result<(), EngineError> {
        self.engine
            .conference_set_gain(conference, key, gain, speed)
    }
    fn conference_record(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError> {
        self.engine
            .conference_record(conference, key, operation, file)
    }
    fn conference_stop_record(
        &mut self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
    ) -> Result<(), EngineError> {
        self.engine
            .conference_stop_record(conference, key, operation)
    }
    fn stats(&self, key: ConnectionKey) -> Option<MediaStats> {
        self.engine.stats(key)
    }

    fn shrink_idle(&mut self) {
        self.engine.shrink_idle();
    }
    fn close_idle_sockets(&mut self) -> Option<Duration> {
        self.engine.close_idle_sockets()
    }

    fn health(&self) -> MediaHealth {
        MediaHealth {
            ports_in_use: self.engine.ports_in_use(),
            ports_idle: self.engine.ports_idle(),
            ports_total: self.engine.ports_total(),
            stalled_workers: self.engine.stalled_workers(Duration::from_secs(1)),
            events_dropped: self.engine.events_dropped(),
            recorder_frames_dropped: self.engine.recorder_frames_dropped(),
            receive_buffers_exhausted: self.engine.receive_buffers_exhausted(),
            worker_cpu: self.engine.worker_cpu_times(),
            tick_lateness: self.engine.tick_lateness(),
        }
    }

    fn source_address_for(&self, peer: IpAddr) -> Option<IpAddr> {
        route_source(peer)
    }
    fn sip_local_for(&self, peer: Peer) -> Option<SocketAddr> {
        self.sip.local_for(peer)
    }
}
