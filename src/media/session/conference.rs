//! A session as a conference member: the caller's audio captured in 20 ms ticks at the
//! conference rate, and the mix it hears sent in its own codec and ptime.
//!
//! Owns: the session's membership (the room rate) and its `RoomPort`, the two resamplers and
//! FIFOs between the stream's ptime and the room's 20 ms frames, and whether the session can
//! take its room's shared encode of the common mix this tick ([`MediaSession::shared_format`];
//! the encode itself is `shared`'s); for a G.711 hairpin, the formats in which the members'
//! frames can pass untouched ([`MediaSession::relay_source`], [`MediaSession::relay_sink`];
//! forwarding them as they arrive is `forward`'s).
//! Must not: mix (the worker's conference does, in [`crate::mixer`]), read the clock, or
//! allocate per tick: the port is sized when the session joins.

use std::time::{Duration, Instant};

use super::send::Outgoing;
use super::shared::{SharedFormat, SHARED_PTIME_MS};
use super::{MediaSession, SessionError, SessionEvent, StreamFormat};
use crate::media::codec::pcm_rate;
use crate::media::jitter::Playout;
use crate::media::resample::Resampler;
use crate::sdp::Codec;

impl MediaSession {
    /// Joins a conference that mixes at `room_rate` Hz in ticks of [`ROOM_TICK`]: the session
    /// stops playing out on its own (no echo) and is driven by [`MediaSession::capture`] and
    /// [`MediaSession::play`] instead. Allocates the conversion buffers (not on the packet
    /// path). A session without a negotiated format joins too, contributing silence and
    /// sending nothing until it has one.
    pub fn enter_conference(&mut self, room_rate: u32) -> Result<(), SessionError> {
        let port = match &self.audio {
            Some(audio) => Some(RoomPort::new(room_rate, &audio.format)?),
            None => None,
        };
        self.room = Some(Box::new(RoomMembership { room_rate, port }));
        self.next_tick = None;
        // An echo's packets went back as they came: the room's tick decides afresh.
        self.stop_forwarding();
        Ok(())
    }

    /// Leaves the conference: back to the session's own mode (Echo plays out again).
    pub fn leave_conference(&mut self, now: Instant) {
        if self.room.take().is_none() {
            return;
        }
        self.stop_forwarding();
        self.end_forwarded(now);
        self.restore_tick(now);
    }

    /// The rate of the conference the session is in, if any.
    pub fn conference_rate(&self) -> Option<u32> {
        self.room.as_ref().map(|r| r.room_rate)
    }

    /// One conference tick of the caller's audio at the conference rate, into `out` (sized
    /// to the tick: `room_rate / 50` samples). `None` when the caller contributed nothing this
    /// tick (no stream yet, between talkspurts, no format): `out` is then silence. Else how
    /// wide its audio has been, as a sample rate (G.711: 8000; Opus: the widest coded band of
    /// its packets so far, [`crate::media::codec::audio_rate`]); the room bounds it by its own
    /// rate.
    pub fn capture(&mut self, now: Instant, out: &mut [i16]) -> Option<u32> {
        self.capture_frames(now, out, false)
    }

    /// [`MediaSession::capture`] for a member the room did not mix last tick (it hears the
    /// common mix: no talker): an Opus frame its sender's VAD marked inactive is not decoded
    /// (silence; nothing the room would mix, and no level talker detection needs), unless the
    /// session records or detects in-band digits. The first active frame is decoded from a
    /// fresh decoder. Issue 19: the silent members' decode was ~40 % of a large Opus room's tick.
    pub fn capture_listener(&mut self, now: Instant, out: &mut [i16]) -> Option<u32> {
        self.capture_frames(now, out, true)
    }

    /// The codec in which this member's next frame can go to the other member of a hairpin as
    /// it came ([`MediaSession::capture_relay`]): G.711 at one room tick a packet and at the
    /// room's rate, no audio of it held back by the re-framing, and nothing here wanting it
    /// decoded (in-band digit detection, a recording or energy watch of what it says, a
    /// prompt playing to it, which takes it out of the mix). `None`: it is captured as PCM.
    pub fn relay_source(&self) -> Option<Codec> {
        let room = self.room.as_ref()?;
        let audio = self.audio.as_ref()?;
        let whole = room.port.as_ref()?.inbox_len == 0;
        let untouched = self.player.is_none() && self.heard.is_none() && audio.inband.is_none();
        let codec = audio.format.codec;
        (whole && untouched && relays(codec, audio.format.ptime_ms, room.room_rate))
            .then_some(codec)
    }

    /// The codec in which this member can be sent the other member's frame as it came
    /// ([`MediaSession::play_relayed`]): it sends G.711 at one room tick a packet and at the
    /// room's rate, with nothing of the mix held back by its re-framing, no prompt playing to
    /// it and no recording of what it is sent. `None`: it is played PCM.
    pub fn relay_sink(&self) -> Option<Codec> {
        let room = self.room.as_ref()?;
        let audio = self.audio.as_ref()?;
        let whole = room.port.as_ref()?.outbox_len == 0;
        let untouched = self.player.is_none() && self.spoken.is_none();
        let codec = audio.format.sending().0;
        (whole && untouched && relays(codec, audio.format.ptime_ms, room.room_rate))
            .then_some(codec)
    }

    /// [`MediaSession::capture`] for a [`MediaSession::relay_source`]: a whole frame as it came
    /// into `payload` (the jitter buffer's timing and order kept, nothing decoded), else —
    /// a loss concealed, a packet of another length, silence, or a frame longer than
    /// `payload` — decoded into `out` as `capture` does.
    pub fn capture_relay(&mut self, now: Instant, payload: &mut [u8], out: &mut [i16]) -> Relayed {
        let Some(audio) = self.audio.as_mut() else {
            return Relayed::Decoded(self.capture(now, out));
        };
        audio.fit_receive();
        let playout = audio.jitter.pop(now, &mut audio.payload[..]);
        if let Playout::Frame { len, .. } = playout {
            if len == audio.frame_samples && len <= payload.len() {
                payload[..len].copy_from_slice(&audio.payload[..len]);
                out.fill(0);
                return Relayed::Payload {
                    len,
                    audio_rate: pcm_rate(audio.format.codec),
                };
            }
        }
        Relayed::Decoded(self.capture_from(now, out, false, Some(playout)))
    }

    /// `listener`: Opus frames marked inactive may go undecoded (`capture_listener`).
    fn capture_frames(&mut self, now: Instant, out: &mut [i16], listener: bool) -> Option<u32> {
        self.capture_from(now, out, listener, None)
    }

    /// `capture_frames`, whose first frame (`first`) may already be out of the jitter buffer.
    fn capture_from(
        &mut self,
        now: Instant,
        out: &mut [i16],
        listener: bool,
        mut first: Option<Playout>,
    ) -> Option<u32> {
        out.fill(0);
        let mut port = self.room.as_mut().and_then(|r| r.port.take())?;
        let mut voiced: Option<u32> = None;
        let mut guard = 0;
        while port.inbox_len < out.len() && guard < 8 {
            guard += 1;
            let pulled = match first.take() {
                Some(playout) => self.pull_popped(playout, listener),
                None => self.pull_frame(now, listener),
            };
            match pulled {
                Some(samples) => {
                    if let Some(audio) = self.audio.as_ref() {
                        port.push_in(&audio.pcm[..samples]);
                        voiced = voiced.max(Some(audio.widest_decoded));
                    }
                }
                None => port.push_in_silence(),
            }
        }
        port.take_in(out);
        if let Some(room) = self.room.as_mut() {
            room.port = Some(port);
        }
        if self.player.is_some() {
            // Taken out of the mix while something plays to it (reference §3.6).
            out.fill(0);
            return None;
        }
        voiced
    }

    /// The format of the room's shared encode this session can send in place of its own
    /// encode this tick: in a room, with a negotiated format whose ptime is one room tick, and
    /// nothing playing to it (a prompt replaces the mix) or left over from its own re-framing.
    /// `None`: it encodes what it hears itself ([`MediaSession::play`]).
    pub fn shared_format(&self) -> Option<SharedFormat> {
        let port = self.room.as_ref()?.port.as_ref()?;
        if self.player.is_some() || port.outbox_len != 0 {
            return None;
        }
        self.room_format()
    }

    /// The shared format of the session's stream in its room, whatever plays to it now; `None`
    /// outside a room, without a format, or with a ptime other than the room tick's.
    pub(super) fn room_format(&self) -> Option<SharedFormat> {
        let room = self.room.as_ref()?;
        let audio = self.audio.as_ref()?;
        if audio.format.ptime_ms != SHARED_PTIME_MS {
            return None;
        }
        Some(SharedFormat::new(
            room.room_rate,
            audio.format.sending().0,
            audio.format.ptime_ms,
            &audio.format.peer_opus,
        ))
    }

    /// Sends one conference tick of audio (the mix this participant hears, at the conference
    /// rate) to the peer, re-framed to the session's ptime and encoded in its codec.
    /// `audio_rate`: how wide the mix's audio can be (the widest the others have sent, see
    /// [`MediaSession::capture`]), so the encoder codes no wider; `None` when nobody has sent
    /// anything yet: the room's rate.
    pub fn play(&mut self, now: Instant, pcm: &[i16], audio_rate: Option<u32>) {
        let Some(mut port) = self.room.as_mut().and_then(|r| r.port.take()) else {
            return;
        };
        let room_rate = self.room.as_ref().map_or(8000, |r| r.room_rate);
        // A prompt may fill the room's whole band; the mix is as wide as what is in it.
        let audio_rate = match self.player {
            None => mix_width(audio_rate, room_rate),
            Some(_) => room_rate,
        };
        if let Some((operation, player)) = self.player.as_mut() {
            // What plays replaces the mix for the duration.
            let operation = *operation;
            let ok = player.fill(&mut port.playout, room_rate);
            let done = player.is_done() || !ok;
            let RoomPort {
                outbox,
                outbox_len,
                playout,
                ..
            } = &mut port;
            let n = playout.len().min(outbox.len() - *outbox_len);
            outbox[*outbox_len..*outbox_len + n].copy_from_slice(&playout[..n]);
            *outbox_len += n;
            if done {
                self.player = None;
                self.push_event(SessionEvent::PlayoutDone { operation });
            }
        } else {
            port.push_out(pcm);
        }
        while let Some(audio) = self.audio.as_mut() {
            audio.fit_send();
            let Some(len) = port.take_out(&mut audio.resampled[..]) else {
                break;
            };
            self.send_audio(now, Outgoing::Resampled { len, audio_rate });
        }
        if let Some(room) = self.room.as_mut() {
            room.port = Some(port);
        }
    }
}

/// How wide a room's mix is for its encoders: what was mixed into it (`None`: nothing yet),
/// never wider than the room's rate.
pub(super) fn mix_width(audio_rate: Option<u32>, room_rate: u32) -> u32 {
    audio_rate.map_or(room_rate, |rate| rate.min(room_rate))
}

/// A conference tick: every conference mixes 20 ms frames.
pub const ROOM_TICK: Duration = Duration::from_millis(20);

/// The longest frame a hairpin relays as it came: one room tick of G.711.
pub const MAX_RELAYED: usize = 160;

/// What [`MediaSession::capture_relay`] took from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// A whole frame as it came, in the caller's `payload[..len]`; its audio is `audio_rate`
    /// wide (a sample rate).
    Payload { len: usize, audio_rate: u32 },
    /// Decoded into `out`; what [`MediaSession::capture`] returns.
    Decoded(Option<u32>),
}

/// Whether a stream in `codec` at `ptime_ms` a packet can pass a room of `room_rate` untouched:
/// a stateless codec (no decoder or encoder state to keep in step), one packet a tick, no
/// resampling.
fn relays(codec: Codec, ptime_ms: u32, room_rate: u32) -> bool {
    codec.is_g711() && ptime_ms == SHARED_PTIME_MS && pcm_rate(codec) == room_rate
}

/// Conference membership of a session.
pub(super) struct RoomMembership {
    pub(super) room_rate: u32,
    /// The conversions to and from the room; None until a format is negotiated.
    pub(super) port: Option<RoomPort>,
}

/// Converts between the session's stream (its codec rates and ptime) and the room's 20 ms
/// frames at the room rate, with two small FIFOs so any ptime of 10–60 ms fits 20 ms ticks.
/// Sized at construction; nothing allocates per tick.
pub(super) struct RoomPort {
    /// Received codec's PCM rate → room rate.
    pub(super) to_room: Resampler,
    /// Room rate → sent codec's PCM rate.
    pub(super) from_room: Resampler,
    /// Room samples per ptime of the session (one packet's worth).
    pub(super) ptime_room: usize,
    /// Room-rate audio decoded but not yet contributed.
    pub(super) inbox: Box<[i16]>,
    pub(super) inbox_len: usize,
    /// Room-rate mix not yet sent (less than one packet's worth between ticks).
    pub(super) outbox: Box<[i16]>,
    pub(super) outbox_len: usize,
    /// One room tick of a playout, played instead of the mix.
    pub(super) playout: Box<[i16]>,
}

impl RoomPort {
    pub(super) fn new(room_rate: u32, format: &StreamFormat) -> Result<RoomPort, SessionError> {
        let convert =
            |from, to| Resampler::new(from, to).map_err(|e| SessionError::Format(e.to_string()));
        let to_room = convert(pcm_rate(format.codec), room_rate)?;
        let from_room = convert(room_rate, pcm_rate(format.sending().0))?;
        let ptime_room = (room_rate * format.ptime_ms / 1000) as usize;
        // One tick plus the longest packet, with margin: 100 ms at the room rate.
        let capacity = (room_rate / 10) as usize;
        Ok(RoomPort {
            to_room,
            from_room,
            ptime_room,
            inbox: vec![0; capacity].into_boxed_slice(),
            inbox_len: 0,
            outbox: vec![0; capacity].into_boxed_slice(),
            outbox_len: 0,
            playout: vec![0; (room_rate / 50) as usize].into_boxed_slice(),
        })
    }

    /// Appends one decoded frame (at the received codec's rate), converted to the room rate.
    pub(super) fn push_in(&mut self, pcm: &[i16]) {
        let n = self.to_room.process(pcm, &mut self.inbox[self.inbox_len..]);
        self.inbox_len += n;
    }

    /// Appends one ptime of silence (nothing to play this ptime).
    pub(super) fn push_in_silence(&mut self) {
        let end = (self.inbox_len + self.ptime_room).min(self.inbox.len());
        self.inbox[self.inbox_len..end].fill(0);
        self.inbox_len = end;
    }

    /// Moves the oldest `out.len()` samples out (silence-padded if fewer are held).
    pub(super) fn take_in(&mut self, out: &mut [i16]) {
        let n = out.len().min(self.inbox_len);
        out[..n].copy_from_slice(&self.inbox[..n]);
        out[n..].fill(0);
        self.inbox.copy_within(n..self.inbox_len, 0);
        self.inbox_len -= n;
    }

    /// Appends one tick of the mix; what does not fit (a stalled sender) is dropped.
    pub(super) fn push_out(&mut self, pcm: &[i16]) {
        let n = pcm.len().min(self.outbox.len() - self.outbox_len);
        self.outbox[self.outbox_len..self.outbox_len + n].copy_from_slice(&pcm[..n]);
        self.outbox_len += n;
    }

    /// One packet's worth of the mix, converted to the sent codec's rate into `out`; None
    /// until a whole ptime is held.
    pub(super) fn take_out(&mut self, out: &mut [i16]) -> Option<usize> {
        if self.outbox_len < self.ptime_room {
            return None;
        }
        let n = self.from_room.process(&self.outbox[..self.ptime_room], out);
        self.outbox.copy_within(self.ptime_room..self.outbox_len, 0);
        self.outbox_len -= self.ptime_room;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec;
    use crate::media::session::test_support::*;

    /// An Opus member in a room, captured as a listener, sending `silence` frames, then a
    /// 1 kHz tone, then silence again (its encoder's VAD decides what is inactive): what it
    /// contributed and its stats. `recorded` taps what it says (as a recording does).
    fn listener_run(recorded: bool) -> (Vec<i16>, usize, SessionStats) {
        let start = Instant::now();
        let mut cfg = config(Codec::Opus, 111);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        session.enter_conference(48_000).unwrap();
        if recorded {
            session.set_listening(start, true);
        }
        let mut encoder = AudioEncoder::new(Codec::Opus).unwrap();
        let mut frame = vec![0i16; 960];
        let mut buf = [0u8; MAX_PACKET];
        let mut said = Vec::new();
        let mut voiced = 0;
        for i in 0..60u32 {
            let now = start + PTIME * i;
            let talking = (20..40).contains(&i);
            let pcm: Vec<i16> = (0..960u32)
                .map(|k| {
                    let t = f64::from(i * 960 + k) / 48_000.0;
                    let tone = 8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin();
                    if talking {
                        tone as i16
                    } else {
                        0
                    }
                })
                .collect();
            let header = RtpHeader {
                marker: false,
                payload_type: 111,
                sequence: 1000 + i as u16,
                timestamp: 5000 + 960 * i,
                ssrc: 0xabcd_0001,
                csrcs: &[],
            };
            let h = rtp::write_header(&mut buf, &header).unwrap();
            let len = h + encoder.encode(&pcm, &mut buf[h..]).unwrap();
            session.handle_rtp(now, addr(PEER), &mut buf, len);
            if session
                .capture_listener(now + Duration::from_millis(1), &mut frame)
                .is_some()
            {
                voiced += 1;
            }
            said.extend_from_slice(&frame);
            if recorded {
                session.take_heard(|_, _| {});
            }
        }
        (said, voiced, session.stats())
    }

    #[test]
    fn a_listener_leaves_frames_its_sender_marked_inactive_undecoded() {
        use crate::media::tone::goertzel_power;
        let (said, voiced, stats) = listener_run(false);
        // The leading silence and the trailing silence after the encoder's hang-over.
        assert!(stats.inactive_skipped >= 30, "{stats:?}");
        // The talkspurt is decoded, from a fresh decoder, and is what the room hears.
        assert!(voiced >= 18, "{voiced} voiced ticks");
        assert!(
            goertzel_power(&said, 48_000, 1000.0) > goertzel_power(&said, 48_000, 2300.0) * 50.0
        );
        assert_eq!(stats.decode_errors, 0);
        // What is recorded or watched is decoded whole.
        let (_, recorded_voiced, stats) = listener_run(true);
        assert_eq!(stats.inactive_skipped, 0);
        assert!(recorded_voiced > voiced, "{recorded_voiced} vs {voiced}");
    }

    /// A conference port carries the caller's tone into the room at the room rate, and the
    /// room's audio back out in the caller's codec and ptime, for narrowband, wideband and
    /// fullband rooms and packet times that are not the room's 20 ms.
    #[test]
    fn room_port_converts_codec_rate_and_ptime_both_ways() {
        use crate::media::tone::goertzel_power;
        for (codec, pt, room_rate, ptime) in [
            (Codec::Pcmu, 0, 8000, 20),
            (Codec::Pcmu, 0, 16000, 20),
            (Codec::G722, 9, 8000, 20),
            (Codec::Opus, 111, 48000, 20),
            (Codec::Pcma, 8, 48000, 20),
            (Codec::Pcmu, 0, 8000, 30),
            (Codec::Pcmu, 0, 16000, 10),
        ] {
            let start = Instant::now();
            let mut cfg = config(codec, pt);
            cfg.mode = SessionMode::Idle;
            if let Some(f) = cfg.format.as_mut() {
                f.ptime_ms = ptime;
            }
            let mut session = MediaSession::new(cfg, start).unwrap();
            session.enter_conference(room_rate).unwrap();
            assert_eq!(session.conference_rate(), Some(room_rate));
            let mut peer = Peer::new(codec, pt);
            let tick = (room_rate / 50) as usize;
            let mut room_in = Vec::new();
            let mut sent = Vec::new();
            let mut buf = [0u8; MAX_PACKET];
            let mut out = [0u8; MAX_PACKET];
            let mut frame = vec![0i16; tick];
            let mut voiced_ticks = 0;
            let mut bands = Vec::new();
            // The room plays its own 1 kHz tone to the caller.
            let room_tone: Vec<i16> = (0..tick * 100)
                .map(|i| {
                    let t = i as f64 / f64::from(room_rate);
                    (6000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                })
                .collect();
            for i in 0..100u32 {
                let now = start + PTIME * i;
                // The peer sends 20 ms frames; its ptime only shapes what we send back.
                let len = peer.frame(&mut buf);
                // How wide the caller's audio is: its codec's band (an Opus packet's own),
                // whatever the room's rate.
                bands.push(codec::audio_rate(
                    codec,
                    rtp::parse(&buf[..len]).unwrap().payload(),
                ));
                session.handle_rtp(now, addr(PEER), &mut buf, len);
                if let Some(rate) = session.capture(now + Duration::from_millis(1), &mut frame) {
                    voiced_ticks += 1;
                    assert!(bands.contains(&rate), "{codec:?} in {room_rate}: {rate}");
                }
                room_in.extend_from_slice(&frame);
                let i = i as usize;
                session.play(now, &room_tone[i * tick..(i + 1) * tick], Some(room_rate));
                session.handle_timeout(now + Duration::from_millis(1));
                while let Some(t) = session.poll_transmit(&mut out) {
                    if t.channel == Channel::Rtp && !rtp::is_rtcp(&out[..t.len]) {
                        sent.push(out[..t.len].to_vec());
                    }
                }
            }
            assert!(
                voiced_ticks >= 90,
                "{codec:?} in {room_rate}: {voiced_ticks}"
            );
            let tail = &room_in[room_in.len() - tick * 50..];
            let on = goertzel_power(tail, room_rate, 1000.0);
            let off = goertzel_power(tail, room_rate, 2300.0);
            assert!(
                on > off * 50.0,
                "{codec:?} in {room_rate}: caller's tone in the room"
            );
            // Every packet carries one ptime, timestamps step by one ptime of the codec clock.
            let expected = 100 * 20 / ptime as usize;
            assert!(
                sent.len() + 1 >= expected && sent.len() <= expected,
                "{codec:?} ptime {ptime}: {} packets",
                sent.len()
            );
            let step = codec.clock_rate() * ptime / 1000;
            let mut decoder = AudioDecoder::new(codec).unwrap();
            let mut heard = Vec::new();
            let mut pcm = [0i16; MAX_FRAME_SAMPLES];
            for pair in sent.windows(2) {
                let (a, b) = (rtp::parse(&pair[0]).unwrap(), rtp::parse(&pair[1]).unwrap());
                assert_eq!(b.timestamp(), a.timestamp().wrapping_add(step));
                assert_eq!(b.payload_type(), pt);
            }
            for p in &sent {
                let n = decoder
                    .decode(rtp::parse(p).unwrap().payload(), &mut pcm)
                    .unwrap();
                heard.extend_from_slice(&pcm[..n]);
            }
            let rate = pcm_rate(codec);
            let tail = &heard[heard.len() / 2..];
            assert!(
                goertzel_power(tail, rate, 1000.0) > goertzel_power(tail, rate, 2300.0) * 50.0,
                "{codec:?}: the room's tone reaches the caller"
            );
            // Leaving the room: an Idle session sends no more audio.
            session.leave_conference(start + PTIME * 100);
            assert_eq!(session.conference_rate(), None);
            session.play(start + PTIME * 101, &room_tone[..tick], Some(room_rate));
            assert!(session.poll_transmit(&mut out).is_none());
        }
    }
}
