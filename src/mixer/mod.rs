//! Conference mixing: N-1 mixes in linear PCM at the conference rate, one tick (frame) at a
//! time, sans-IO.
//!
//! Owns: the participants of one conference and their per-tick audio — each one's contribution,
//! each one's mix — the coach/pupil relation, the tariff tone, and talker detection.
//! Must not: read the clock, decode, encode or resample (the media session converts to and from
//! the conference rate before [`Mixer::contribute`] and after [`Mixer::output`]), or allocate
//! after [`Mixer::add`]: [`Mixer::contribute`], [`Mixer::mix`], [`Mixer::output`] and
//! [`Mixer::poll_talker_event`] work in buffers sized when a participant is added.
//!
//! Cost is linear in participants: [`Mixer::mix`] sums every contribution once into an `i32`
//! accumulator, then gives each participant the total minus its own contribution (plus the
//! coach's for the pupil, whose contribution is kept out of the total). Participants that
//! contributed nothing this tick (listeners, monitors, muted or silent parties) all share one
//! limited copy of the total, so their cost is a table lookup; [`Mixer::shares_output`] tells
//! the worker who they are, so it encodes that copy once per format instead of once each.
//!
//! Gate: a frame quieter than [`GATE_RMS`] (−50 dBFS, below any speech, above line and comfort
//! noise) from a participant that is not talking stays out of the mix, as if it had not been
//! contributed: a room's silent members (phones that send silence or background hiss) neither
//! add their noise to everyone's mix nor need a mix of their own. A talking participant (talker
//! detection's state, hang-over included) is mixed whatever its level, so the quiet ends of
//! words are not cut, and the mix stays exactly N−1 for everyone in it.
//!
//! Limiting: a stateless soft clip per sample ([`soft_clip`]). Sums up to ±[`KNEE`] (−2.5 dBFS)
//! pass unchanged, bit for bit; above it the excess is compressed by `x·H/(x+H)` (H = 32 767 −
//! KNEE), which is continuous with slope 1 at the knee and approaches full scale without passing
//! it, so nothing ever wraps or flips sign and loud overlaps sound compressed rather than
//! square-clipped. It is stateless on purpose: no gain to carry per listener, no pumping, and
//! the common case (no sample above the knee) runs as one vectorized subtract-and-narrow loop.
//! The price is some distortion of a single talker's peaks above −2.5 dBFS, which speech at
//! telephony levels (−20 dBm0 nominal) does not reach.

pub mod conference;
mod talker;

use std::fmt;

use talker::{TalkerDetector, TalkerTiming};
pub use talker::{ATTACK_MS, HANGOVER_MS, MIN_REPORT_INTERVAL_MS, THRESHOLD_RMS};

/// A participant's handle in one mixer (the connection id, for the engine).
pub type ParticipantId = u32;

/// The most participants one mixer takes: keeps the `i32` sum of full-scale contributions (plus
/// the coach and the tariff tone) below `i32::MAX`. `MixerConfig::max_participants` is capped
/// to it.
pub const MAX_PARTICIPANTS: usize = 65_000;

/// A frame from a participant that is not talking enters the mix only at this RMS level or
/// above (−50 dBFS, 104 of 32 768): 10 dB below talker detection's threshold
/// ([`THRESHOLD_RMS`]), above G.711 idle-channel noise (≈ −65 dBFS).
pub const GATE_RMS: u64 = 104;

/// Sums within ±KNEE pass the limiter unchanged (0.75 of full scale, −2.5 dBFS).
pub const KNEE: i32 = 24_576;

/// Frequency of the tariff tone (a whole number of cycles in any 5 ms multiple).
pub const TARIFF_TONE_HZ: u32 = 1400;
/// Peak amplitude of the tariff tone (−20 dBFS).
pub const TARIFF_TONE_PEAK: f64 = 3277.0;
/// The tariff tone sounds for this long ...
pub const TARIFF_TONE_ON_MS: u32 = 200;
/// ... at the start of every period of this length.
pub const TARIFF_TONE_PERIOD_MS: u32 = 10_000;

/// How one conference mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixerConfig {
    /// Conference rate in Hz: 8000 or 16000 (G.711/G.722 rooms), 48000 (Opus rooms).
    pub sample_rate: u32,
    /// Tick length in ms (20).
    pub frame_ms: u32,
    /// Participants the mixer accepts (monitors included), at most [`MAX_PARTICIPANTS`].
    pub max_participants: usize,
}

/// How a participant takes part. All false: a normal conferee who talks and listens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParticipantFlags {
    /// In the conference, but contributes nothing (can be toggled at any tick).
    pub muted: bool,
    /// Hears the conference, contributes nothing.
    pub receive_only: bool,
    /// Hears everything, contributes nothing, and is not "in" the conference (CUAE Monitor).
    pub monitor: bool,
    /// Hears a periodic tone ([`TARIFF_TONE_HZ`]) mixed into its output.
    pub tariff_tone: bool,
    /// Hears nothing (silence), while it may still be heard (an agent conference's "speak
    /// only" participant).
    pub deaf: bool,
}

impl ParticipantFlags {
    /// Whether this participant's audio may enter the mix.
    pub fn contributes(&self) -> bool {
        !(self.muted || self.receive_only || self.monitor)
    }
}

/// Who started or stopped talking (see [`Mixer::poll_talker_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkerEvent {
    Started { id: ParticipantId },
    Stopped { id: ParticipantId },
}

/// Why a mixer refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixerError {
    /// The conference already has `max_participants`.
    Full,
    /// The participant is already in this conference.
    Duplicate(ParticipantId),
    /// No such participant in this conference.
    Unknown(ParticipantId),
    /// The pupil cannot be the coach (nor the coach the pupil).
    PupilCannotCoach(ParticipantId),
}

impl fmt::Display for MixerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MixerError::Full => write!(f, "the conference is full"),
            MixerError::Duplicate(id) => write!(f, "participant {id} is already in the conference"),
            MixerError::Unknown(id) => write!(f, "participant {id} is not in the conference"),
            MixerError::PupilCannotCoach(id) => {
                write!(f, "participant {id} cannot be both coach and pupil")
            }
        }
    }
}

impl std::error::Error for MixerError {}

/// One conference's mixer. Owned by the media worker that owns the conference's connections;
/// each tick: [`Mixer::contribute`] per participant, [`Mixer::mix`], [`Mixer::output`] per
/// participant, then [`Mixer::poll_talker_event`] until `None`.
pub struct Mixer {
    /// Samples per tick.
    frame_len: usize,
    /// Participants accepted, capped at [`MAX_PARTICIPANTS`].
    max_participants: usize,
    /// Dense: participant `i` owns `contributions` and `outputs` at `i * frame_len`.
    participants: Vec<Participant>,
    /// (id, index into `participants`), sorted by id.
    index: Vec<(ParticipantId, usize)>,
    /// This tick's contribution of each participant (valid where `contributed`).
    contributions: Vec<i16>,
    /// Last tick's mix of each participant (valid where `own_output`).
    outputs: Vec<i16>,
    /// The mix of every participant that contributed this tick except the coach.
    total: Vec<i32>,
    /// `total`, limited: the output of everyone who has nothing to take out of it or add to it.
    shared_output: Vec<i16>,
    /// Accumulator for outputs with more than one correction (the pupil, tariff tone).
    scratch: Vec<i32>,
    /// One tick of the tariff tone.
    tariff_frame: Vec<i16>,
    tariff_on_ticks: u64,
    tariff_period_ticks: u64,
    coach: Option<ParticipantId>,
    pupil: Option<ParticipantId>,
    /// Ticks mixed so far.
    tick: u64,
    talker_timing: TalkerTiming,
    /// Where the next [`Mixer::poll_talker_event`] starts looking, so no one starves.
    poll_cursor: usize,
}

/// Per-participant state.
struct Participant {
    id: ParticipantId,
    flags: ParticipantFlags,
    /// `contribute` stored a frame this tick (cleared by `mix`).
    contributed: bool,
    /// Sum of squares of this tick's contribution.
    energy: u64,
    /// The last mix is in this participant's `outputs` slot; otherwise it is `shared_output`.
    own_output: bool,
    talker: TalkerDetector,
}

impl Participant {
    /// Whether this tick's contribution enters the mix.
    fn in_mix(&self) -> bool {
        self.contributed && self.flags.contributes()
    }
}

impl Mixer {
    /// A mixer with no participants. The frame is `sample_rate · frame_ms / 1000` samples (at
    /// least one); `max_participants` is capped at [`MAX_PARTICIPANTS`].
    pub fn new(config: MixerConfig) -> Mixer {
        let frame_len =
            ((u64::from(config.sample_rate) * u64::from(config.frame_ms) / 1000) as usize).max(1);
        let max_participants = config.max_participants.min(MAX_PARTICIPANTS);
        let frame_ms = u64::from(config.frame_ms.max(1));
        let tariff_frame = (0..frame_len)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * f64::from(TARIFF_TONE_HZ) * n as f64
                    / f64::from(config.sample_rate.max(1));
                (TARIFF_TONE_PEAK * phase.sin()).round() as i16
            })
            .collect();
        Mixer {
            frame_len,
            max_participants,
            participants: Vec::with_capacity(max_participants.min(1024)),
            index: Vec::with_capacity(max_participants.min(1024)),
            contributions: Vec::new(),
            outputs: Vec::new(),
            total: vec![0; frame_len],
            shared_output: vec![0; frame_len],
            scratch: vec![0; frame_len],
            tariff_frame,
            tariff_on_ticks: u64::from(TARIFF_TONE_ON_MS).div_ceil(frame_ms),
            tariff_period_ticks: (u64::from(TARIFF_TONE_PERIOD_MS) / frame_ms).max(1),
            coach: None,
            pupil: None,
            tick: 0,
            talker_timing: TalkerTiming::for_frame_ms(config.frame_ms),
            poll_cursor: 0,
        }
    }

    /// Adds a participant, silent until it contributes. May allocate (buffers grow here).
    pub fn add(&mut self, id: ParticipantId, flags: ParticipantFlags) -> Result<(), MixerError> {
        let slot = match self.index.binary_search_by_key(&id, |&(k, _)| k) {
            Ok(_) => return Err(MixerError::Duplicate(id)),
            Err(slot) => slot,
        };
        if self.participants.len() >= self.max_participants {
            return Err(MixerError::Full);
        }
        let position = self.participants.len();
        self.participants.push(Participant {
            id,
            flags,
            contributed: false,
            energy: 0,
            own_output: false,
            talker: TalkerDetector::default(),
        });
        self.index.insert(slot, (id, position));
        let len = self.participants.len() * self.frame_len;
        self.contributions.resize(len, 0);
        self.outputs.resize(len, 0);
        Ok(())
    }

    /// Removes a participant (and its coach or pupil role); false if it was not here. Its
    /// pending talker change, if any, is dropped: the participant is gone.
    pub fn remove(&mut self, id: ParticipantId) -> bool {
        let Ok(slot) = self.index.binary_search_by_key(&id, |&(k, _)| k) else {
            return false;
        };
        let (_, position) = self.index.remove(slot);
        let last = self.participants.len() - 1;
        self.participants.swap_remove(position);
        if position != last {
            // The last participant moved into `position`: move its buffers and index entry.
            let n = self.frame_len;
            self.contributions
                .copy_within(last * n..(last + 1) * n, position * n);
            self.outputs
                .copy_within(last * n..(last + 1) * n, position * n);
            let moved = self.participants[position].id;
            if let Ok(entry) = self.index.binary_search_by_key(&moved, |&(k, _)| k) {
                self.index[entry].1 = position;
            }
        }
        self.contributions.truncate(last * self.frame_len);
        self.outputs.truncate(last * self.frame_len);
        if self.coach == Some(id) {
            self.coach = None;
        }
        if self.pupil == Some(id) {
            self.pupil = None;
        }
        true
    }

    /// Changes how a participant takes part, from the next [`Mixer::mix`] on (a contribution
    /// already made this tick is dropped if the participant no longer contributes).
    pub fn set_flags(
        &mut self,
        id: ParticipantId,
        flags: ParticipantFlags,
    ) -> Result<(), MixerError> {
        let position = self.position(id).ok_or(MixerError::Unknown(id))?;
        self.participants[position].flags = flags;
        Ok(())
    }

    /// Makes `id` the conference's one coach (replacing any other), heard only by the pupil;
    /// `None` removes the role.
    pub fn set_coach(&mut self, id: Option<ParticipantId>) -> Result<(), MixerError> {
        if let Some(id) = id {
            self.position(id).ok_or(MixerError::Unknown(id))?;
            if self.pupil == Some(id) {
                return Err(MixerError::PupilCannotCoach(id));
            }
        }
        self.coach = id;
        Ok(())
    }

    /// Makes `id` the conference's one pupil (replacing any other), who alone hears the coach;
    /// `None` removes the role.
    pub fn set_pupil(&mut self, id: Option<ParticipantId>) -> Result<(), MixerError> {
        if let Some(id) = id {
            self.position(id).ok_or(MixerError::Unknown(id))?;
            if self.coach == Some(id) {
                return Err(MixerError::PupilCannotCoach(id));
            }
        }
        self.pupil = id;
        Ok(())
    }

    /// The conference's coach, if any.
    pub fn coach(&self) -> Option<ParticipantId> {
        self.coach
    }

    /// The conference's pupil, if any.
    pub fn pupil(&self) -> Option<ParticipantId> {
        self.pupil
    }

    /// This tick's contribution of a participant (one frame of PCM at the conference rate; the
    /// session resamples before calling). A participant that contributed nothing this tick is
    /// silent. A shorter frame is padded with silence, a longer one cut to the frame; a second
    /// call in the same tick replaces the first. Unknown ids and participants that do not
    /// contribute (muted, receive-only, monitor) are ignored, and so is a frame below the gate
    /// ([`GATE_RMS`]) from a participant that is not talking.
    pub fn contribute(&mut self, id: ParticipantId, pcm: &[i16]) {
        let Some(position) = self.position(id) else {
            return;
        };
        let participant = &mut self.participants[position];
        if !participant.flags.contributes() {
            return;
        }
        let n = self.frame_len;
        let len = pcm.len().min(n);
        let energy = talker::energy(&pcm[..len]);
        participant.energy = energy;
        participant.contributed =
            participant.talker.is_talking() || energy >= GATE_RMS * GATE_RMS * n as u64;
        if !participant.contributed {
            return;
        }
        let frame = &mut self.contributions[position * n..(position + 1) * n];
        frame[..len].copy_from_slice(&pcm[..len]);
        frame[len..].fill(0);
    }

    /// Mixes the tick: afterwards [`Mixer::output`] gives each participant the sum of everyone
    /// else's contribution (N-1: never itself; the coach only to the pupil; muted,
    /// receive-only and monitor participants contribute nothing; monitors receive the full
    /// mix), soft-clipped so nothing wraps. Then runs talker detection and starts a new tick.
    pub fn mix(&mut self) {
        let n = self.frame_len;
        let coach = self.coach.and_then(|id| self.position(id));
        let pupil = self.pupil.and_then(|id| self.position(id));
        let Mixer {
            participants,
            contributions,
            outputs,
            total,
            shared_output,
            scratch,
            tariff_frame,
            talker_timing,
            ..
        } = self;

        total.fill(0);
        for (position, participant) in participants.iter().enumerate() {
            if participant.in_mix() && Some(position) != coach {
                add_into(total, &contributions[position * n..(position + 1) * n]);
            }
        }
        limit_into(shared_output, total);

        let coach_frame = coach
            .filter(|&c| participants[c].in_mix())
            .map(|c| &contributions[c * n..(c + 1) * n]);
        let tariff_now = self.tick % self.tariff_period_ticks < self.tariff_on_ticks;
        for (position, participant) in participants.iter_mut().enumerate() {
            let in_mix = participant.in_mix();
            let own = (in_mix && Some(position) != coach)
                .then(|| &contributions[position * n..(position + 1) * n]);
            let from_coach = if Some(position) == pupil {
                coach_frame
            } else {
                None
            };
            let tone = (tariff_now && participant.flags.tariff_tone).then_some(&tariff_frame[..]);
            let out = &mut outputs[position * n..(position + 1) * n];
            participant.own_output = match (own, from_coach, tone) {
                _ if participant.flags.deaf => {
                    out.fill(0);
                    true
                }
                (None, None, None) => false,
                (Some(own), None, None) => {
                    subtract_and_limit(out, total, own);
                    true
                }
                (own, from_coach, tone) => {
                    scratch.copy_from_slice(total);
                    if let Some(own) = own {
                        subtract_from(scratch, own);
                    }
                    for frame in [from_coach, tone].into_iter().flatten() {
                        add_into(scratch, frame);
                    }
                    limit_into(out, scratch);
                    true
                }
            };
            let loud = in_mix && talker::is_loud(participant.energy, n);
            participant.talker.observe(loud, talker_timing);
            participant.contributed = false;
        }
        self.tick += 1;
    }

    /// What a participant hears from the last [`Mixer::mix`] (silence before the first one);
    /// `None` if it is not in the conference.
    pub fn output(&self, id: ParticipantId) -> Option<&[i16]> {
        let position = self.position(id)?;
        if !self.participants[position].own_output {
            return Some(&self.shared_output);
        }
        let n = self.frame_len;
        Some(&self.outputs[position * n..(position + 1) * n])
    }

    /// Whether a participant hears the common mix this tick (the one [`Mixer::output`] gives
    /// everyone who took no part in the last [`Mixer::mix`] and hears nothing special): every
    /// participant for whom this is true got the same samples, so the worker may encode them
    /// once per format. False for talkers (their N−1), the deaf, the pupil hearing its coach,
    /// a tariff tone's listener, and for ids not in the conference.
    pub fn shares_output(&self, id: ParticipantId) -> bool {
        self.position(id)
            .is_some_and(|position| !self.participants[position].own_output)
    }

    /// Talker detection (energy with hang-over), rate-limited: the next change since the last
    /// call, `None` when there is none. Each participant's reported state changes at most once
    /// per [`MIN_REPORT_INTERVAL_MS`]; a change and its reversal within that time (or between
    /// two polls) are never reported. Call until `None` after each tick.
    pub fn poll_talker_event(&mut self) -> Option<TalkerEvent> {
        let count = self.participants.len();
        for step in 0..count {
            let position = (self.poll_cursor + step) % count;
            let participant = &mut self.participants[position];
            let Some(talking) = participant
                .talker
                .take_change(self.tick, &self.talker_timing)
            else {
                continue;
            };
            self.poll_cursor = position + 1;
            let id = participant.id;
            return Some(if talking {
                TalkerEvent::Started { id }
            } else {
                TalkerEvent::Stopped { id }
            });
        }
        None
    }

    /// Participants, monitors included.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether no one is left.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Samples per tick (the length of every contribution and output).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    fn position(&self, id: ParticipantId) -> Option<usize> {
        self.index
            .binary_search_by_key(&id, |&(k, _)| k)
            .ok()
            .map(|slot| self.index[slot].1)
    }
}

/// The limiter: identity within ±[`KNEE`], above it `KNEE + x·H/(x+H)` for an excess `x`, with
/// `H = 32 767 − KNEE` (rounded), mirrored for negative sums. Monotonic, continuous with slope 1
/// at the knee, never beyond ±32 767 (so −32 768 is never produced), and sign-preserving.
pub fn soft_clip(sum: i32) -> i16 {
    let magnitude = i64::from(sum).abs();
    let knee = i64::from(KNEE);
    if magnitude <= knee {
        // Within ±KNEE, so the narrowing is exact.
        return sum as i16;
    }
    let headroom = i64::from(i16::MAX) - knee;
    let excess = magnitude - knee;
    // Rounded, so the first step past the knee is a step of one (continuity).
    let limited = knee + (excess * headroom + (excess + headroom) / 2) / (excess + headroom);
    // `limited` ≤ KNEE + headroom = 32 767 by construction.
    (if sum < 0 { -limited } else { limited }) as i16
}

/// `total += frame`, sample by sample.
fn add_into(total: &mut [i32], frame: &[i16]) {
    for (t, &s) in total.iter_mut().zip(frame) {
        *t += i32::from(s);
    }
}

/// `total -= frame`, sample by sample.
fn subtract_from(total: &mut [i32], frame: &[i16]) {
    for (t, &s) in total.iter_mut().zip(frame) {
        *t -= i32::from(s);
    }
}

/// `out = soft_clip(total - own)`: one vectorizable pass that narrows and tracks the peak, and a
/// second, exact pass only when some sample went past the knee.
fn subtract_and_limit(out: &mut [i16], total: &[i32], own: &[i16]) {
    let mut peak = 0u32;
    for ((o, &t), &s) in out.iter_mut().zip(total).zip(own) {
        let v = t - i32::from(s);
        peak = peak.max(v.unsigned_abs());
        *o = v as i16;
    }
    if peak <= KNEE as u32 {
        return;
    }
    for ((o, &t), &s) in out.iter_mut().zip(total).zip(own) {
        *o = soft_clip(t - i32::from(s));
    }
}

/// `out = soft_clip(sum)`, with the same fast path as [`subtract_and_limit`].
fn limit_into(out: &mut [i16], sum: &[i32]) {
    let mut peak = 0u32;
    for (o, &v) in out.iter_mut().zip(sum) {
        peak = peak.max(v.unsigned_abs());
        *o = v as i16;
    }
    if peak <= KNEE as u32 {
        return;
    }
    for (o, &v) in out.iter_mut().zip(sum) {
        *o = soft_clip(v);
    }
}

#[cfg(test)]
mod tests;
