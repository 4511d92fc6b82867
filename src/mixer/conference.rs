//! One conference as a media worker mixes it, sans-IO: its members, the two-party hairpin, the
//! prompts and tones played into the mix, the recordings of the whole mix, and the 20 ms tick
//! that turns everyone's audio into what each one hears.
//!
//! Owns: the conference's [`Mixer`], its members in join order with how they take part
//! ([`ConfereeSpec`]), the hairpin frames, its [`Player`]s (each a participant of its own), its
//! recordings (each a monitor that hears everyone), the join tone, and the coach/pupil roles.
//! Must not: own or reach sockets, sessions or worker state, read the clock, or allocate per
//! tick beyond what the mixer was sized for. A tick reaches the members only through a
//! [`ConferenceIo`] given to [`Conference::tick`]: each member's audio comes in, what it hears
//! goes out, and recording frames and events go out; the worker implements it over its
//! connections' sessions, the tests over plain frames.
//!
//! What a member hears is marked [`Heard::Shared`] when it is the room's common mix (everyone
//! who is not a current talker and hears nothing special), [`Heard::Own`] otherwise: the worker
//! encodes the shared one once per format for all its listeners.

use std::time::{Duration, Instant};

use super::{Mixer, MixerConfig, ParticipantFlags, TalkerEvent, MAX_PARTICIPANTS};
use crate::media::player::{amplitude_of_db, PlaySource, Player};
use crate::media::session::ROOM_TICK;

/// A member's key: the control plane's connection key (`engine::ConnectionKey`). Temporary
/// participants (a playout, a recording) have keys of their own.
pub type MemberKey = u64;

/// How a conference mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConferenceSpec {
    /// Mixing rate in Hz: 8000, 16000 or 48000.
    pub rate: u32,
    /// Two-party fast path: the two members' frames are swapped, not mixed, until the
    /// control plane promotes the conference.
    pub hairpin: bool,
    /// Everyone hears a short tone when someone joins (CUAE `SoundToneOnJoin`; mixed
    /// conferences only).
    pub join_tone: bool,
}

/// How one connection takes part in its conference (CUAE conferee attributes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfereeSpec {
    pub muted: bool,
    /// Hears nothing (an agent conference's "speak only" or "neither").
    pub deaf: bool,
    pub receive_only: bool,
    pub monitor: bool,
    pub tariff_tone: bool,
    /// Heard only by the pupil.
    pub coach: bool,
    /// Hears the coach (as well as the conference).
    pub pupil: bool,
}

impl ConfereeSpec {
    /// The mixer's view of the attributes (roles are set apart).
    pub fn flags(&self) -> ParticipantFlags {
        ParticipantFlags {
            muted: self.muted,
            deaf: self.deaf,
            receive_only: self.receive_only,
            monitor: self.monitor,
            tariff_tone: self.tariff_tone,
        }
    }
}

/// What a tick reports besides audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceEvent {
    /// A playout into the mix played to its end (or could not be converted) and was removed.
    PlayoutDone { key: MemberKey, operation: u64 },
    /// Talker detection: `key` started or stopped talking.
    Talker { key: MemberKey, talking: bool },
}

/// What a member hears this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// The room's common mix: every member handed `Shared` in one tick hears these same
    /// samples (all who took no part in the mix and hear nothing special), so its encode can
    /// be shared by all of them that send the same format.
    Shared(&'a [i16]),
    /// A mix of its own: a talker's N−1, a deaf member's silence, the pupil's (with the coach),
    /// a tariff tone's listener's, each side of the two-party hairpin.
    Own(&'a [i16]),
}

impl<'a> Heard<'a> {
    /// The samples heard, shared or not.
    pub fn samples(&self) -> &'a [i16] {
        match *self {
            Heard::Shared(pcm) | Heard::Own(pcm) => pcm,
        }
    }
}

/// A member's audio this tick, as [`ConferenceIo::capture`] took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Not here (in transit to this worker): silent, and it hears nothing.
    Absent,
    /// Here, but contributed nothing: the frame is silence.
    Silent,
    /// Contributed audio no wider than `audio_rate`, a sample rate (a G.711 caller's 8000, the
    /// widest coded band of an Opus caller's packets: [`crate::media::codec::audio_rate`]).
    Voiced { audio_rate: u32 },
}

/// What [`ConferenceIo::relay`] did with a hairpin member's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Sent to the other member as it came; it was `audio_rate` wide.
    Sent { audio_rate: u32 },
    /// Not a whole frame (a loss, silence, another length): captured into `frame` as
    /// [`ConferenceIo::capture`] does, and played to the other member as usual.
    Captured(Capture),
}

/// The members' side of a tick: how a [`Conference`] takes each member's audio and hands over
/// what each hears. Called in member order (join order), all captures before any playback —
/// except a hairpin's [`ConferenceIo::relay`], which captures one member and sends to the
/// other in one step.
pub trait ConferenceIo {
    /// Member `key`'s audio for this tick, at the conference rate, into `frame` (one tick
    /// long). `listener`: the member was not in the last mix (it heard the common mix), so a
    /// frame its sender marked inactive need not be decoded.
    fn capture(
        &mut self,
        key: MemberKey,
        now: Instant,
        frame: &mut [i16],
        listener: bool,
    ) -> Capture;
    /// What member `key` hears this tick (`None`: the mixer has no output for it); the member
    /// sends what it has queued either way. `audio_rate`: how wide the audio in it can be, the
    /// widest [`Capture::Voiced`] of the others since they joined (a prompt counts as the
    /// conference's whole band), so its encoder codes no wider; `None` while none of them has
    /// said anything.
    fn play(
        &mut self,
        key: MemberKey,
        now: Instant,
        heard: Option<Heard<'_>>,
        audio_rate: Option<u32>,
    );
    /// Hairpin: member `from`'s frame of this tick sent to `to` as it came, when both allow it
    /// (G.711 in the same format at one tick a packet, nothing wanting the audio decoded):
    /// no decode, no encode, and `to` is then not played this tick. `None`: nothing was
    /// taken, and `from` is captured as usual.
    fn relay(
        &mut self,
        from: MemberKey,
        to: MemberKey,
        now: Instant,
        frame: &mut [i16],
    ) -> Option<Relay>;
    /// One tick of the whole mix for recording `operation` (made as listener `key`).
    fn record(&mut self, key: MemberKey, operation: u64, mix: &[i16], rate: u32);
    /// Something the control plane should hear about.
    fn event(&mut self, event: ConferenceEvent);
}

/// One conference as its worker mixes it.
pub struct Conference {
    mixer: Mixer,
    rate: u32,
    /// Two-party fast path: each of the two hears the other's frame, with no mix.
    hairpin: bool,
    /// Members in join order, with how they take part.
    members: Vec<Member>,
    /// Hairpin: the two members' frames of this tick, and whether each is to be heard.
    hairpin_frames: [Vec<i16>; 2],
    hairpin_heard: [bool; 2],
    /// Prompts and tones played into the mix, each as a participant of its own:
    /// (temporary connection key, operation, player).
    players: Vec<(MemberKey, u64, Player)>,
    /// Recordings of the whole mix: (temporary connection key, operation), each a listener
    /// that hears everyone.
    recordings: Vec<(MemberKey, u64)>,
    /// Play [`join_tone`] into the mix when someone joins.
    join_tone: bool,
    /// The participant key the join tone plays as (outside the 24-bit connection ids).
    tone_key: MemberKey,
}

impl Conference {
    pub fn new(spec: ConferenceSpec) -> Conference {
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

    /// One 20 ms tick: capture every present member's audio, mix (or, hairpinned, swap the two
    /// frames), and hand each member what it hears. Members in transit to this worker are
    /// silent and hear nothing until they arrive. `frame` is scratch of at least
    /// [`Conference::frame_len`] samples.
    pub fn tick(&mut self, now: Instant, frame: &mut [i16], io: &mut impl ConferenceIo) {
        let n = self.mixer.frame_len();
        let frame = &mut frame[..n];
        let hairpin = self.hairpin && self.members.len() <= 2;
        // Hairpin members whose frame of this tick was relayed to them as it came.
        let mut relayed = [false; 2];
        let pair = match self.members[..] {
            [ref a, ref b] => Some([a.key, b.key]),
            _ => None,
        };
        for (i, member) in self.members.iter_mut().enumerate() {
            let key = member.key;
            let captured = if hairpin {
                let frame = &mut self.hairpin_frames[i];
                let relay = match pair {
                    Some(keys) if member.conferee.flags().contributes() => {
                        io.relay(key, keys[1 - i], now, frame)
                    }
                    _ => None,
                };
                match relay {
                    Some(Relay::Sent { audio_rate }) => {
                        relayed[1 - i] = true;
                        Capture::Voiced { audio_rate }
                    }
                    Some(Relay::Captured(captured)) => captured,
                    None => io.capture(key, now, frame, false),
                }
            } else {
                // Before this tick's mix, `shares_output` still tells the last one's.
                let listener = participant_id(key)
                    .ok()
                    .is_some_and(|id| self.mixer.shares_output(id));
                io.capture(key, now, frame, listener)
            };
            let voiced = match captured {
                Capture::Voiced { audio_rate } => {
                    member.width = member.width.max(Some(audio_rate.min(self.rate)));
                    true
                }
                Capture::Silent | Capture::Absent => false,
            };
            if hairpin {
                self.hairpin_heard[i] = voiced && member.conferee.flags().contributes();
            } else if voiced {
                if let Ok(id) = participant_id(key) {
                    self.mixer.contribute(id, frame);
                }
            }
        }
        // What each can hear is as wide as what the others have sent in this call, whether
        // they talk this tick or not: an Opus encoder narrows its band over seconds (SILK's
        // low-pass transition), so it follows who is in the room, not who talks.
        let mut widths = Widths::default();
        for member in &self.members {
            if let (Some(width), true) = (member.width, member.conferee.flags().contributes()) {
                widths.add(member.key, width);
            }
        }
        if !hairpin {
            let rate = self.rate;
            let mut finished = Vec::new();
            for (key, operation, player) in &mut self.players {
                let ok = player.fill(frame, rate);
                if let Ok(id) = participant_id(*key) {
                    self.mixer.contribute(id, frame);
                }
                // What a prompt holds is not known here: the room's whole band.
                widths.add(*key, rate);
                if player.is_done() || !ok {
                    finished.push((*key, *operation));
                }
            }
            self.mixer.mix();
            for (key, operation) in finished {
                self.stop_player(key);
                io.event(ConferenceEvent::PlayoutDone { key, operation });
            }
            for &(key, operation) in &self.recordings {
                let Some(mix) = participant_id(key)
                    .ok()
                    .and_then(|id| self.mixer.output(id))
                else {
                    continue;
                };
                io.record(key, operation, mix, rate);
            }
        }
        frame.fill(0);
        for (i, member) in self.members.iter().enumerate() {
            let key = member.key;
            if hairpin {
                if relayed[i] {
                    // It was sent the other's frame with the relay.
                    continue;
                }
                let other = 1 - i.min(1);
                let (heard, audio_rate) = if pair.is_some() && self.hairpin_heard[other] {
                    (&self.hairpin_frames[other][..], self.members[other].width)
                } else {
                    (&frame[..], None)
                };
                io.play(key, now, Some(Heard::Own(heard)), audio_rate);
            } else {
                let heard = participant_id(key).ok().and_then(|id| {
                    let mix = self.mixer.output(id)?;
                    Some(if self.mixer.shares_output(id) {
                        Heard::Shared(mix)
                    } else {
                        Heard::Own(mix)
                    })
                });
                io.play(key, now, heard, widths.heard_by(key));
            }
        }
        if !hairpin {
            while let Some(event) = self.mixer.poll_talker_event() {
                let (id, talking) = match event {
                    TalkerEvent::Started { id } => (id, true),
                    TalkerEvent::Stopped { id } => (id, false),
                };
                io.event(ConferenceEvent::Talker {
                    key: MemberKey::from(id),
                    talking,
                });
            }
        }
    }

    /// Adds a member (after the control plane has checked it may join); with the join tone
    /// on, everyone hears it once there are two or more.
    pub fn join(&mut self, key: MemberKey, conferee: ConfereeSpec) -> Result<(), String> {
        let id = participant_id(key)?;
        self.mixer
            .add(id, conferee.flags())
            .map_err(|e| e.to_string())?;
        self.members.push(Member {
            key,
            conferee,
            width: None,
        });
        self.apply_roles(key, conferee);
        if self.join_tone && self.members.len() > 1 {
            let tone_key = self.tone_key;
            self.stop_player(tone_key);
            self.start_player(tone_key, 0, join_tone(), 1.0);
        }
        Ok(())
    }

    /// Takes a member out (it may not be one).
    pub fn leave(&mut self, key: MemberKey) {
        self.members.retain(|m| m.key != key);
        if let Ok(id) = participant_id(key) {
            self.mixer.remove(id);
        }
    }

    /// Changes how a member takes part (mute, coach, ...).
    pub fn set_conferee(&mut self, key: MemberKey, conferee: ConfereeSpec) {
        let Some(member) = self.members.iter_mut().find(|m| m.key == key) else {
            tracing::warn!(key, "attributes for a connection not in the conference");
            return;
        };
        member.conferee = conferee;
        if let Ok(id) = participant_id(key) {
            let _ = self.mixer.set_flags(id, conferee.flags());
        }
        self.apply_roles(key, conferee);
    }

    /// Two-party fast path on or off (off = promoted to a full mix).
    pub fn set_hairpin(&mut self, hairpin: bool) {
        self.hairpin = hairpin;
    }

    /// A playout into the mix (the control plane has promoted a hairpin first).
    pub fn start_player(&mut self, key: MemberKey, operation: u64, source: PlaySource, gain: f32) {
        let Ok(id) = participant_id(key) else { return };
        if let Err(error) = self.mixer.add(id, ParticipantFlags::default()) {
            tracing::error!(key, %error, "conference cannot take the playout");
            return;
        }
        self.players
            .push((key, operation, Player::new(source, gain)));
    }

    pub fn stop_player(&mut self, key: MemberKey) {
        self.players.retain(|(k, _, _)| *k != key);
        if let Ok(id) = participant_id(key) {
            self.mixer.remove(id);
        }
    }

    /// New volume (and speed, when given) for the playout of `key`.
    pub fn set_player_gain(&mut self, key: MemberKey, gain: f32, speed: Option<i32>) {
        for (k, _, player) in &mut self.players {
            if *k == key {
                player.set_gain(gain);
                if let Some(speed) = speed {
                    player.set_speed(speed);
                }
            }
        }
    }

    /// A recording of the mix: a monitor hears everyone.
    pub fn start_recording(&mut self, key: MemberKey, operation: u64) {
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

    pub fn stop_recording(&mut self, key: MemberKey) {
        self.recordings.retain(|(k, _)| *k != key);
        if let Ok(id) = participant_id(key) {
            self.mixer.remove(id);
        }
    }

    /// The mixing rate in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples per tick at the mixing rate.
    pub fn frame_len(&self) -> usize {
        self.mixer.frame_len()
    }

    /// The members, in join order.
    pub fn members(&self) -> impl Iterator<Item = MemberKey> + '_ {
        self.members.iter().map(|m| m.key)
    }

    /// The operations of the recordings of the mix.
    pub fn recording_operations(&self) -> impl Iterator<Item = u64> + '_ {
        self.recordings.iter().map(|(_, operation)| *operation)
    }

    /// Coach and pupil: one of each per conference; a role given to another moves.
    fn apply_roles(&mut self, key: MemberKey, conferee: ConfereeSpec) {
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
}

/// The join tone: 1 kHz at −20 dBFS for 200 ms.
fn join_tone() -> PlaySource {
    PlaySource::Tone {
        frequencies: [1000.0, 0.0],
        amplitudes: [amplitude_of_db(-20), 0.0],
        duration: Some(Duration::from_millis(200)),
    }
}

/// A member of a conference.
#[derive(Debug, Clone, Copy)]
struct Member {
    key: MemberKey,
    /// How it takes part.
    conferee: ConfereeSpec,
    /// The widest audio it has sent in this conference ([`Capture::Voiced`], at most the
    /// conference's rate); `None` before its first.
    width: Option<u32>,
}

/// How wide what can be heard in one tick is, kept as the widest (and whose, when only one is
/// that wide) and the widest of the others: enough to tell each member how wide what it hears
/// is (everything but its own) without a list per tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Widths {
    /// The widest contribution, with its member while it is the only one that wide.
    widest: Option<(u32, Option<MemberKey>)>,
    /// The widest contribution below `widest`, or as wide when several reached it.
    second: Option<u32>,
}

impl Widths {
    fn add(&mut self, key: MemberKey, rate: u32) {
        match self.widest {
            None => self.widest = Some((rate, Some(key))),
            Some((widest, _)) if rate > widest => {
                self.second = Some(widest);
                self.widest = Some((rate, Some(key)));
            }
            Some((widest, _)) if rate == widest => {
                self.second = Some(widest);
                self.widest = Some((widest, None));
            }
            Some(_) => self.second = self.second.max(Some(rate)),
        }
    }

    /// How wide what `key` hears is: every contribution but its own.
    fn heard_by(&self, key: MemberKey) -> Option<u32> {
        match self.widest {
            Some((_, Some(only))) if only == key => self.second,
            Some((widest, _)) => Some(widest),
            None => None,
        }
    }
}

/// The mixer's id of a connection (control-plane ids are 24-bit; wider keys cannot mix).
fn participant_id(key: MemberKey) -> Result<u32, String> {
    u32::try_from(key).map_err(|_| format!("connection key {key} is too large to mix"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const RATE: u32 = 8000;
    /// Samples per 20 ms tick at [`RATE`].
    const N: usize = 160;

    /// The members' side of a tick without sockets or sessions: what each member says this
    /// tick goes in, what each hears, the recordings and the events come out.
    #[derive(Default)]
    struct Bench {
        /// What a member says this tick; a member not listed is silent.
        says: HashMap<MemberKey, Vec<i16>>,
        /// How wide a member's audio is (the room's rate when not listed).
        widths: HashMap<MemberKey, u32>,
        /// How wide what each member heard on the last tick was said to be.
        heard_widths: HashMap<MemberKey, Option<u32>>,
        /// Members in transit: not here this tick.
        away: Vec<MemberKey>,
        /// What each member heard on the last tick, in the order they were played to.
        heard: Vec<(MemberKey, Option<Vec<i16>>)>,
        /// Who heard the shared mix on the last tick.
        shared: Vec<MemberKey>,
        /// Who was captured as a listener (not in the last mix), in order.
        listeners: Vec<MemberKey>,
        recorded: Vec<(MemberKey, u64, Vec<i16>, u32)>,
        events: Vec<ConferenceEvent>,
        /// Members whose frames can be relayed as they came (G.711 both ways, nothing
        /// wanting them decoded).
        relayable: Vec<MemberKey>,
        /// The relays of the last tick: (from, to).
        relayed: Vec<(MemberKey, MemberKey)>,
    }

    impl ConferenceIo for Bench {
        fn capture(
            &mut self,
            key: MemberKey,
            _now: Instant,
            frame: &mut [i16],
            listener: bool,
        ) -> Capture {
            if listener {
                self.listeners.push(key);
            }
            if self.away.contains(&key) {
                return Capture::Absent;
            }
            match self.says.get(&key) {
                Some(said) => {
                    frame.copy_from_slice(said);
                    Capture::Voiced {
                        audio_rate: self.widths.get(&key).copied().unwrap_or(RATE),
                    }
                }
                None => {
                    frame.fill(0);
                    Capture::Silent
                }
            }
        }

        fn play(
            &mut self,
            key: MemberKey,
            _now: Instant,
            heard: Option<Heard<'_>>,
            audio_rate: Option<u32>,
        ) {
            if let Some(Heard::Shared(_)) = heard {
                self.shared.push(key);
            }
            self.heard_widths.insert(key, audio_rate);
            self.heard
                .push((key, heard.map(|heard| heard.samples().to_vec())));
        }

        fn relay(
            &mut self,
            from: MemberKey,
            to: MemberKey,
            _now: Instant,
            frame: &mut [i16],
        ) -> Option<Relay> {
            let both = [from, to];
            if !both
                .iter()
                .all(|k| self.relayable.contains(k) && !self.away.contains(k))
            {
                return None;
            }
            frame.fill(0);
            let Some(said) = self.says.get(&from) else {
                // Nothing whole to pass on: captured (silence), played as usual.
                return Some(Relay::Captured(Capture::Silent));
            };
            self.relayed.push((from, to));
            self.heard.push((to, Some(said.clone())));
            Some(Relay::Sent {
                audio_rate: self.widths.get(&from).copied().unwrap_or(RATE),
            })
        }

        fn record(&mut self, key: MemberKey, operation: u64, mix: &[i16], rate: u32) {
            self.recorded.push((key, operation, mix.to_vec(), rate));
        }

        fn event(&mut self, event: ConferenceEvent) {
            self.events.push(event);
        }
    }

    impl Bench {
        /// Runs one tick of `room` and returns what each member heard, in playing order.
        fn tick(&mut self, room: &mut Conference, now: Instant) -> Vec<(MemberKey, Vec<i16>)> {
            self.heard.clear();
            self.shared.clear();
            self.relayed.clear();
            let mut scratch = vec![0; room.frame_len()];
            room.tick(now, &mut scratch, self);
            self.heard
                .iter()
                .map(|(key, heard)| (*key, heard.clone().expect("every member has a mix")))
                .collect()
        }
    }

    fn room(hairpin: bool, join_tone: bool) -> Conference {
        Conference::new(ConferenceSpec {
            rate: RATE,
            hairpin,
            join_tone,
        })
    }

    /// A room mixing at `rate`, without join tones, with `members` joined.
    fn room_at(rate: u32, hairpin: bool, members: &[MemberKey]) -> Conference {
        let mut room = Conference::new(ConferenceSpec {
            rate,
            hairpin,
            join_tone: false,
        });
        for &key in members {
            room.join(key, ConfereeSpec::default()).expect("joins");
        }
        room
    }

    /// A plain room with members 1, 2 and 3 joined.
    fn room_of_three() -> Conference {
        room_at(RATE, false, &[1, 2, 3])
    }

    /// Three different voices, each well below the limiter's knee when summed.
    fn voice(key: MemberKey) -> Vec<i16> {
        (0..N as i16)
            .map(|i| match key {
                1 => (i % 50) * 10,
                2 => 3000,
                3 => -(i % 7) * 100,
                _ => i,
            })
            .collect()
    }

    fn sum(frames: &[&[i16]]) -> Vec<i16> {
        (0..N).map(|i| frames.iter().map(|f| f[i]).sum()).collect()
    }

    /// What `source` plays in its first `ticks` ticks, as a reference.
    fn played(source: PlaySource, ticks: usize) -> Vec<Vec<i16>> {
        let mut player = Player::new(source, 1.0);
        (0..ticks)
            .map(|_| {
                let mut frame = vec![0; N];
                assert!(player.fill(&mut frame, RATE));
                frame
            })
            .collect()
    }

    fn peak(frame: &[i16]) -> i16 {
        frame.iter().map(|s| s.saturating_abs()).max().unwrap_or(0)
    }

    #[test]
    fn three_members_each_hear_the_other_two_and_never_themselves() {
        let mut room = room_of_three();
        let mut bench = Bench::default();
        for key in [1, 2, 3] {
            bench.says.insert(key, voice(key));
        }
        let heard = bench.tick(&mut room, Instant::now());

        let (a, b, c) = (voice(1), voice(2), voice(3));
        assert_eq!(
            heard,
            [
                (1, sum(&[&b, &c])),
                (2, sum(&[&a, &c])),
                (3, sum(&[&a, &b])),
            ]
        );
        // Sample by sample: 1 hears 3000 + the saw of 3, never its own ramp.
        assert_eq!(heard[0].1[13], 3000 - 600);
        assert_eq!(heard[1].1[13], 130 - 600);
        assert_eq!(heard[2].1[13], 130 + 3000);
        assert!(bench.recorded.is_empty());
    }

    #[test]
    fn members_not_in_the_last_mix_are_captured_as_listeners() {
        let mut three = room_of_three();
        let mut bench = Bench::default();
        bench.says.insert(1, voice(1));
        let start = Instant::now();
        bench.tick(&mut three, start);
        // The first tick: nobody was in a mix before.
        assert_eq!(bench.listeners, [1, 2, 3]);
        bench.listeners.clear();
        bench.tick(&mut three, start + Duration::from_millis(20));
        // 1 talked in the last mix: its frames are decoded whatever its sender says of them.
        assert_eq!(bench.listeners, [2, 3]);
        // A hairpinned pair is never captured as listeners (each hears the other's frames).
        let mut pair = room(true, false);
        pair.join(1, ConfereeSpec::default()).expect("joins");
        pair.join(2, ConfereeSpec::default()).expect("joins");
        bench.listeners.clear();
        bench.tick(&mut pair, start);
        assert!(bench.listeners.is_empty());
    }

    #[test]
    fn what_each_member_hears_is_as_wide_as_what_the_others_have_sent() {
        const FULL: u32 = 48_000;
        let muted = ConfereeSpec {
            muted: true,
            ..ConfereeSpec::default()
        };
        // 1 calls on G.711, 2 sends wideband Opus, 3 fullband; 4 only listens; 5 is muted.
        let mut room = room_at(FULL, false, &[1, 2, 3, 4]);
        room.join(5, muted).expect("joins");
        let mut bench = Bench {
            widths: HashMap::from([(1, 8000), (2, 16_000), (3, FULL), (5, FULL)]),
            ..Bench::default()
        };
        let talk = vec![500i16; (FULL / 50) as usize];
        let start = Instant::now();
        let widths_heard = |talkers: &[MemberKey], bench: &mut Bench, room: &mut Conference| {
            bench.says = talkers.iter().map(|&key| (key, talk.clone())).collect();
            bench.tick(room, start);
            room.members()
                .map(|key| bench.heard_widths[&key])
                .collect::<Vec<_>>()
        };
        let (nb, wb) = (Some(8000), Some(16_000));
        // Everyone hears what the others said, no wider; the muted member's audio is not
        // mixed, so it widens nothing.
        assert_eq!(
            widths_heard(&[1, 2, 5], &mut bench, &mut room),
            [wb, nb, wb, wb, wb]
        );
        // Those who have spoken count while they pause: the band follows who is in the room.
        assert_eq!(
            widths_heard(&[1], &mut bench, &mut room),
            [wb, nb, wb, wb, wb]
        );
        assert_eq!(
            widths_heard(&[3], &mut bench, &mut room),
            [Some(FULL), Some(FULL), wb, Some(FULL), Some(FULL)]
        );
        assert_eq!(
            widths_heard(&[], &mut bench, &mut room),
            [Some(FULL), Some(FULL), wb, Some(FULL), Some(FULL)]
        );
        // Two as wide as each other: each hears the other's band.
        bench.widths.insert(2, FULL);
        assert_eq!(widths_heard(&[2], &mut bench, &mut room), [Some(FULL); 5]);
        // Who leaves no longer counts.
        room.leave(2);
        room.leave(3);
        assert_eq!(widths_heard(&[], &mut bench, &mut room), [None, nb, nb]);

        // A lone caller hears nothing to code; a prompt may hold the room's whole band.
        let mut room = room_at(FULL, false, &[1, 4]);
        assert_eq!(widths_heard(&[1], &mut bench, &mut room), [None, nb]);
        room.start_player(
            500,
            9,
            PlaySource::Tone {
                frequencies: [1000.0, 0.0],
                amplitudes: [8000.0, 0.0],
                duration: Some(Duration::from_millis(40)),
            },
            1.0,
        );
        assert_eq!(widths_heard(&[1], &mut bench, &mut room), [Some(FULL); 2]);

        // The hairpin: each hears the other's frames, as wide as they have been.
        let mut pair = room_at(FULL, true, &[1, 2]);
        bench.says = HashMap::from([(1, talk.clone())]);
        bench.tick(&mut pair, start);
        assert_eq!(bench.heard_widths[&1], None);
        assert_eq!(bench.heard_widths[&2], nb);

        // No room is heard wider than it mixes: a fullband caller in a narrowband room.
        let mut narrow = room_at(RATE, false, &[1, 2]);
        bench.widths.insert(1, FULL);
        bench.says = HashMap::from([(1, voice(1))]);
        bench.tick(&mut narrow, start);
        assert_eq!(bench.heard_widths[&2], Some(RATE));
    }

    #[test]
    fn a_member_in_transit_is_silent_while_the_others_hear_each_other() {
        let mut room = room_of_three();
        let mut bench = Bench::default();
        for key in [1, 2, 3] {
            bench.says.insert(key, voice(key));
        }
        bench.away.push(3);
        let heard = bench.tick(&mut room, Instant::now());

        // 3 says nothing this tick; what it is offered, the worker drops (it is not there).
        assert_eq!(heard[..2], [(1, voice(2)), (2, voice(1))]);
        assert_eq!(heard[2], (3, sum(&[&voice(1), &voice(2)])));
    }

    #[test]
    fn the_two_party_hairpin_forwards_each_members_frames_to_the_other() {
        let mut room = room(true, false);
        room.join(1, ConfereeSpec::default()).expect("joins");
        room.join(2, ConfereeSpec::default()).expect("joins");
        let mut bench = Bench::default();
        bench.says.insert(1, voice(1));
        bench.says.insert(2, voice(2));
        let start = Instant::now();

        let heard = bench.tick(&mut room, start);
        assert_eq!(heard, [(1, voice(2)), (2, voice(1))]);

        // 2 stops talking: 1 hears silence, 2 still hears 1, sample for sample.
        bench.says.remove(&2);
        let heard = bench.tick(&mut room, start + ROOM_TICK);
        assert_eq!(heard, [(1, vec![0; N]), (2, voice(1))]);

        // A muted member is not forwarded even while it talks.
        bench.says.insert(2, voice(2));
        let muted = ConfereeSpec {
            muted: true,
            ..ConfereeSpec::default()
        };
        room.set_conferee(2, muted);
        let heard = bench.tick(&mut room, start + ROOM_TICK * 2);
        assert_eq!(heard, [(1, vec![0; N]), (2, voice(1))]);
        // The hairpin does not mix: no talker events.
        assert!(bench.events.is_empty());
    }

    /// A room of members 1 and 2 (hairpinned or mixed), both talking and both able to take a
    /// relayed frame.
    fn relaying_pair(hairpin: bool) -> (Conference, Bench) {
        let mut room = room(hairpin, false);
        room.join(1, ConfereeSpec::default()).expect("joins");
        room.join(2, ConfereeSpec::default()).expect("joins");
        let mut bench = Bench {
            relayable: vec![1, 2],
            ..Bench::default()
        };
        bench.says.insert(1, voice(1));
        bench.says.insert(2, voice(2));
        (room, bench)
    }

    #[test]
    fn the_hairpin_relays_whole_frames_and_plays_what_it_cannot() {
        let (mut room, mut bench) = relaying_pair(true);
        let start = Instant::now();

        // Both talk: each frame goes to the other as it came, nobody is played.
        let heard = bench.tick(&mut room, start);
        assert_eq!(bench.relayed, [(1, 2), (2, 1)]);
        assert_eq!(heard, [(2, voice(1)), (1, voice(2))]);

        // 2 says nothing: 1 is played silence the usual way, 2 still gets 1's frame.
        bench.says.remove(&2);
        let heard = bench.tick(&mut room, start + ROOM_TICK);
        assert_eq!(bench.relayed, [(1, 2)]);
        assert_eq!(heard, [(2, voice(1)), (1, vec![0; N])]);

        // A muted member's frames are not relayed (nor heard).
        bench.says.insert(2, voice(2));
        room.set_conferee(
            2,
            ConfereeSpec {
                muted: true,
                ..ConfereeSpec::default()
            },
        );
        let heard = bench.tick(&mut room, start + ROOM_TICK * 2);
        assert_eq!(bench.relayed, [(1, 2)]);
        assert_eq!(heard, [(2, voice(1)), (1, vec![0; N])]);
        room.set_conferee(2, ConfereeSpec::default());

        // One end that cannot take a relayed frame: both are captured and played.
        bench.relayable = vec![1];
        let heard = bench.tick(&mut room, start + ROOM_TICK * 3);
        assert!(bench.relayed.is_empty());
        assert_eq!(heard, [(1, voice(2)), (2, voice(1))]);

        // Promoted, the room mixes: no relay, whoever can take one.
        bench.relayable = vec![1, 2, 3];
        room.set_hairpin(false);
        room.join(3, ConfereeSpec::default()).expect("joins");
        bench.says.insert(3, voice(3));
        let heard = bench.tick(&mut room, start + ROOM_TICK * 4);
        assert!(bench.relayed.is_empty());
        assert_eq!(heard[2], (3, sum(&[&voice(1), &voice(2)])));
    }

    #[test]
    fn a_mixed_room_of_two_never_relays() {
        let (mut room, mut bench) = relaying_pair(false);
        let heard = bench.tick(&mut room, Instant::now());
        assert!(bench.relayed.is_empty());
        assert_eq!(heard, [(1, voice(2)), (2, voice(1))]);
    }

    #[test]
    fn a_promoted_hairpin_mixes_like_any_conference() {
        let mut room = room(true, false);
        room.join(1, ConfereeSpec::default()).expect("joins");
        room.join(2, ConfereeSpec::default()).expect("joins");
        room.set_hairpin(false);
        room.join(3, ConfereeSpec::default()).expect("joins");
        let mut bench = Bench::default();
        for key in [1, 2, 3] {
            bench.says.insert(key, voice(key));
        }
        let heard = bench.tick(&mut room, Instant::now());
        let (a, b, c) = (voice(1), voice(2), voice(3));
        assert_eq!(heard[2], (3, sum(&[&a, &b])));
        assert_eq!(heard[0], (1, sum(&[&b, &c])));
    }

    #[test]
    fn a_recording_receives_the_whole_mix_on_every_tick_until_stopped() {
        let mut room = room(false, false);
        room.join(1, ConfereeSpec::default()).expect("joins");
        room.join(2, ConfereeSpec::default()).expect("joins");
        room.start_recording(900, 77);
        assert_eq!(room.recording_operations().collect::<Vec<_>>(), [77]);
        let mut bench = Bench::default();
        bench.says.insert(1, voice(1));
        bench.says.insert(2, voice(2));
        let start = Instant::now();

        let heard = bench.tick(&mut room, start);
        bench.says.remove(&1);
        bench.tick(&mut room, start + ROOM_TICK);

        let whole = sum(&[&voice(1), &voice(2)]);
        assert_eq!(
            bench.recorded,
            [(900, 77, whole, RATE), (900, 77, voice(2), RATE)]
        );
        // The recording listens only: the members still hear each other and nothing else.
        assert_eq!(heard, [(1, voice(2)), (2, voice(1))]);

        room.stop_recording(900);
        bench.recorded.clear();
        bench.tick(&mut room, start + ROOM_TICK * 2);
        assert!(bench.recorded.is_empty());
        assert_eq!(room.recording_operations().count(), 0);
    }

    #[test]
    fn a_player_is_heard_by_every_member_and_reports_its_end_once() {
        let tone = PlaySource::Tone {
            frequencies: [1000.0, 0.0],
            amplitudes: [8000.0, 0.0],
            duration: Some(Duration::from_millis(40)),
        };
        let reference = played(tone.clone(), 2);
        assert!(peak(&reference[0]) > 7000, "the reference is a real tone");

        let mut room = room(false, false);
        room.join(1, ConfereeSpec::default()).expect("joins");
        room.join(2, ConfereeSpec::default()).expect("joins");
        room.start_player(500, 9, tone, 1.0);
        let mut bench = Bench::default();
        bench.says.insert(2, voice(2));
        let start = Instant::now();

        let mut ticks = Vec::new();
        for i in 0..4 {
            ticks.push(bench.tick(&mut room, start + ROOM_TICK * i));
        }

        // 40 ms of tone: two ticks. Member 1 hears 2 and the tone, 2 hears the tone alone.
        for (tick, frame) in ticks.iter().zip(&reference) {
            assert_eq!(tick[0], (1, sum(&[&voice(2), frame])));
            assert_eq!(tick[1], (2, frame.clone()));
        }
        // Then the tone is gone.
        assert_eq!(ticks[3], [(1, voice(2)), (2, vec![0; N])]);
        let done: Vec<_> = bench
            .events
            .iter()
            .filter(|e| matches!(e, ConferenceEvent::PlayoutDone { .. }))
            .collect();
        assert_eq!(
            done,
            [&ConferenceEvent::PlayoutDone {
                key: 500,
                operation: 9
            }]
        );
    }

    #[test]
    fn the_join_tone_plays_to_everyone_once_a_second_member_joins() {
        let mut room = room(false, true);
        let mut bench = Bench::default();
        room.join(1, ConfereeSpec::default()).expect("joins");
        let heard = bench.tick(&mut room, Instant::now());
        assert_eq!(heard, [(1, vec![0; N])], "no tone for the first member");

        room.join(2, ConfereeSpec::default()).expect("joins");
        let heard = bench.tick(&mut room, Instant::now());
        let tone = &played(join_tone(), 1)[0];
        assert!(peak(tone) > 3000, "−20 dBFS at 1 kHz");
        assert_eq!(heard, [(1, tone.clone()), (2, tone.clone())]);
    }

    #[test]
    fn listeners_are_marked_as_hearing_the_shared_mix_and_talkers_their_own() {
        let mut room = room(false, false);
        for key in [1, 2, 3, 4, 5] {
            room.join(key, ConfereeSpec::default()).expect("joins");
        }
        let deaf = ConfereeSpec {
            deaf: true,
            ..ConfereeSpec::default()
        };
        room.set_conferee(5, deaf);
        let mut bench = Bench::default();
        bench.says.insert(1, voice(1));
        bench.says.insert(2, voice(2));
        let heard = bench.tick(&mut room, Instant::now());

        // 3 and 4 listen: one shared copy of 1 + 2. The talkers hear each other only; the deaf
        // member hears silence of its own.
        let both = sum(&[&voice(1), &voice(2)]);
        assert_eq!(bench.shared, [3, 4]);
        assert_eq!(heard[2], (3, both.clone()));
        assert_eq!(heard[3], (4, both));
        assert_eq!(heard[0], (1, voice(2)));
        assert_eq!(heard[1], (2, voice(1)));
        assert_eq!(heard[4], (5, vec![0; N]));

        // 1 stops talking and shares the mix with the listeners; the hairpin never shares.
        bench.says.remove(&1);
        bench.tick(&mut room, Instant::now() + ROOM_TICK);
        assert_eq!(bench.shared, [1, 3, 4]);
        let mut pair = self::room(true, false);
        pair.join(1, ConfereeSpec::default()).expect("joins");
        pair.join(2, ConfereeSpec::default()).expect("joins");
        bench.tick(&mut pair, Instant::now());
        assert!(bench.shared.is_empty());
    }
}
