//! The common mix of a conference encoded once for all the members that hear it in one format,
//! instead of once per member.
//!
//! Owns: a conference's [`SharedEncodes`]: per [`SharedFormat`] (room rate, sent codec, ptime:
//! everything that changes the encoded bytes) one resampler from the room rate, one encoder kept
//! across ticks (so Opus state is continuous) and this tick's payload; and the choice, per member
//! and tick, between that payload and the member's own encode.
//! Must not: packetize or protect (each member's session writes its own RTP header — SSRC,
//! sequence, timestamp, marker —, SRTP and RTCP counts around the shared payload), read the
//! clock, or allocate after [`SharedEncodes::prepare`]: [`SharedEncodes::begin_tick`] and
//! [`SharedEncodes::play`] work in buffers sized there.
//!
//! Who shares: a member the mixer hands the common mix ([`crate::mixer::conference::Heard`]'s
//! `Shared`: not a current talker, nothing special to hear) and whose session can take it this
//! tick ([`MediaSession::shared_format`]: in the room with a format, a ptime of one room tick,
//! nothing playing to it). Everyone else — talkers with their N−1, a member with a prompt of its
//! own, the deaf, the pupil, other ptimes — is encoded by its own session as before. A member
//! going from one to the other keeps its stream: the RTP counters are the session's either way.
//! The far end's decoder then follows another encoder's state, which for G.722 and Opus is a
//! short transient at the switch, the same as a talkspurt edge.
//!
//! A conference has at most one encoder per codec the sessions send (the room rate is the
//! conference's, the ptime must be the tick's), so encoders are not removed when members leave.

use std::time::Instant;

use super::conference::mix_width;
use super::{MediaSession, SessionError, MAX_PACKET, ROOM_TICK};
use crate::media::codec::{frame_capacity, pcm_rate, AudioEncoder};
use crate::media::resample::Resampler;
use crate::sdp::{Codec, OpusParams};

/// What changes the encoded bytes of a conference's common mix: the format, and what the
/// receiver's decoder asked of an Opus encoder ([`AudioEncoder::for_receiver`]; the RFC 7587
/// defaults for the other codecs, which have nothing to choose, so their listeners share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFormat {
    /// The conference's mixing rate.
    pub room_rate: u32,
    /// The codec the session sends.
    pub codec: Codec,
    /// The session's packet time.
    pub ptime_ms: u32,
    /// Opus: the receiver's `maxplaybackrate` and `useinbandfec`.
    pub receiver: OpusParams,
}

impl SharedFormat {
    /// The shared format of a stream sending `codec` at `ptime_ms` in a room of `room_rate`
    /// to a receiver that asked for `receiver`.
    pub fn new(room_rate: u32, codec: Codec, ptime_ms: u32, receiver: &OpusParams) -> Self {
        let receiver = if codec == Codec::Opus {
            OpusParams {
                // The capture rate is what the receiver sends: no part of our encode.
                sprop_max_capture_rate: OpusParams::RFC_DEFAULTS.sprop_max_capture_rate,
                ..*receiver
            }
        } else {
            OpusParams::RFC_DEFAULTS
        };
        SharedFormat {
            room_rate,
            codec,
            ptime_ms,
            receiver,
        }
    }
}

/// A conference's encodes of its common mix, one per format its listeners send.
#[derive(Default)]
pub struct SharedEncodes {
    encoders: Vec<SharedEncoder>,
}

impl SharedEncodes {
    /// Makes sure the format `session` sends in its room has an encoder, when that format can
    /// share at all (a ptime of one room tick). Allocates: call when a member joins or its
    /// session is rebuilt, never per tick.
    pub fn prepare(&mut self, session: &MediaSession) -> Result<(), SessionError> {
        let Some(format) = session.room_format() else {
            return Ok(());
        };
        if self.encoders.iter().any(|e| e.format == format) {
            return Ok(());
        }
        self.encoders.push(SharedEncoder::new(format)?);
        Ok(())
    }

    /// A new tick: last tick's payloads are stale.
    pub fn begin_tick(&mut self) {
        for encoder in &mut self.encoders {
            encoder.state = TickState::Stale;
        }
    }

    /// Plays one tick to a member: `mix` (at the room rate) is what it hears, `audio_rate` how
    /// wide its audio is ([`MediaSession::play`]); with `shared`, it is the room's common mix
    /// (the same samples and width for every member given it this tick), and a session that
    /// can take it gets its format's payload (encoded on the first such member this tick),
    /// else the session encodes `mix` itself. True when the session was sent the shared
    /// payload (false: it encoded `mix` itself).
    pub fn play(
        &mut self,
        session: &mut MediaSession,
        now: Instant,
        mix: &[i16],
        audio_rate: Option<u32>,
        shared: bool,
    ) -> bool {
        let format = if shared {
            session.shared_format()
        } else {
            None
        };
        let encoder = format.and_then(|f| self.encoders.iter_mut().find(|e| e.format == f));
        let Some(encoder) = encoder else {
            session.play(now, mix, audio_rate);
            return false;
        };
        if encoder.state == TickState::Stale {
            encoder.encode(mix, audio_rate);
        }
        if encoder.state != TickState::Encoded {
            session.play(now, mix, audio_rate);
            return false;
        }
        session.send_shared(
            now,
            &encoder.pcm[..encoder.pcm_len],
            &encoder.payload[..encoder.payload_len],
        );
        true
    }

    /// Encodes made so far, all formats together (one per format per tick that had a listener).
    pub fn encodes(&self) -> u64 {
        self.encoders.iter().map(|e| e.encodes).sum()
    }

    /// Formats with an encoder.
    pub fn len(&self) -> usize {
        self.encoders.len()
    }

    /// Whether no format has an encoder yet.
    pub fn is_empty(&self) -> bool {
        self.encoders.is_empty()
    }
}

/// Whether an encoder's payload belongs to this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TickState {
    /// Not encoded yet this tick.
    Stale,
    /// `pcm` and `payload` are this tick's.
    Encoded,
    /// The encoder refused this tick's frame: members encode their own.
    Failed,
}

/// The common mix in one format.
struct SharedEncoder {
    format: SharedFormat,
    /// Room rate → the codec's PCM rate.
    from_room: Resampler,
    encoder: AudioEncoder,
    /// This tick's mix at the codec's rate (what the members' two-channel recordings keep).
    pcm: Box<[i16]>,
    pcm_len: usize,
    payload: Box<[u8; MAX_PACKET]>,
    payload_len: usize,
    state: TickState,
    /// Encodes made, for tests and benchmarks.
    encodes: u64,
}

impl SharedEncoder {
    fn new(format: SharedFormat) -> Result<SharedEncoder, SessionError> {
        let rate = pcm_rate(format.codec);
        Ok(SharedEncoder {
            from_room: Resampler::new(format.room_rate, rate)
                .map_err(|e| SessionError::Format(e.to_string()))?,
            encoder: AudioEncoder::for_receiver(format.codec, &format.receiver)
                .map_err(SessionError::Codec)?,
            pcm: vec![0; frame_capacity(rate)].into_boxed_slice(),
            pcm_len: 0,
            payload: Box::new([0; MAX_PACKET]),
            payload_len: 0,
            state: TickState::Stale,
            encodes: 0,
            format,
        })
    }

    /// This tick's mix (one room tick at the room rate, at most `audio_rate` wide: `None`, the
    /// room's rate) to the codec's rate and encoded.
    fn encode(&mut self, mix: &[i16], audio_rate: Option<u32>) {
        self.encoder
            .set_audio_rate(mix_width(audio_rate, self.format.room_rate));
        self.pcm_len = self.from_room.process(mix, &mut self.pcm);
        // Room for the RTP header and the SRTP tag the sessions add around it.
        let room = MAX_PACKET - 12 - 16;
        self.encodes += 1;
        self.state = match self
            .encoder
            .encode(&self.pcm[..self.pcm_len], &mut self.payload[..room])
        {
            Ok(n) => {
                self.payload_len = n;
                TickState::Encoded
            }
            Err(error) => {
                tracing::debug!(codec = ?self.format.codec, %error, "shared encode failed");
                TickState::Failed
            }
        };
    }
}

/// Packet time that can share: one room tick (longer ones gather ticks, shorter ones split
/// them, each in a phase of its own).
pub(super) const SHARED_PTIME_MS: u32 = ROOM_TICK.as_millis() as u32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::alloc_counter::allocations_during;
    use crate::media::session::test_support::*;
    use crate::mixer::{Mixer, MixerConfig, ParticipantFlags, ParticipantId};

    /// A room driven as the worker drives it: a mixer, the members' sessions (ids are
    /// positions) and their shared encodes; `run` says who contributes what each tick.
    struct Room {
        mixer: Mixer,
        members: Vec<MediaSession>,
        shared: SharedEncodes,
        start: Instant,
        /// How wide what everyone hears is said to be (`None`: the room's rate).
        width: Option<u32>,
    }

    /// A sent RTP packet, parsed.
    #[derive(Debug, Clone, PartialEq)]
    struct Sent {
        ssrc: u32,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
    }

    impl Room {
        /// Members of the given formats ((codec, payload type, ptime, SRTP key byte)).
        fn new(room_rate: u32, formats: &[(Codec, u8, u32, Option<u8>)]) -> Room {
            Self::with_receivers(room_rate, formats, &[])
        }

        /// As [`Room::new`], member i's far end asking `receivers[i]` of an Opus encoder
        /// (RFC 7587 defaults for those beyond).
        fn with_receivers(
            room_rate: u32,
            formats: &[(Codec, u8, u32, Option<u8>)],
            receivers: &[OpusParams],
        ) -> Room {
            let start = Instant::now();
            let mut mixer = Mixer::new(MixerConfig {
                sample_rate: room_rate,
                frame_ms: 20,
                max_participants: 64,
            });
            let mut shared = SharedEncodes::default();
            let members = formats
                .iter()
                .enumerate()
                .map(|(i, &(codec, pt, ptime, key))| {
                    let mut cfg = config(codec, pt);
                    cfg.mode = SessionMode::Idle;
                    cfg.local_ssrc = 0x1000 + i as u32;
                    if let Some(f) = cfg.format.as_mut() {
                        f.ptime_ms = ptime;
                        f.peer_opus = receivers.get(i).copied().unwrap_or_default();
                    }
                    cfg.srtp = key.map(|k| SrtpKeys {
                        profile: SrtpProfile::AesCm128HmacSha1_80,
                        inbound_key: vec![k; 16],
                        inbound_salt: vec![k; 14],
                        outbound_key: vec![k; 16],
                        outbound_salt: vec![k; 14],
                    });
                    let mut session = MediaSession::new(cfg, start).expect("session");
                    session.enter_conference(room_rate).expect("joins");
                    shared.prepare(&session).expect("shared encoder");
                    mixer
                        .add(i as ParticipantId, ParticipantFlags::default())
                        .expect("room");
                    session
                })
                .collect();
            Room {
                mixer,
                members,
                shared,
                start,
                width: None,
            }
        }

        /// One tick: each (member, frame) contributes, everyone is played to; returns the
        /// RTP packets each member sent (still SRTP-protected where it has keys).
        fn tick(&mut self, t: u32, says: &[(usize, &[i16])]) -> Vec<Vec<Vec<u8>>> {
            let now = self.start + PTIME * t;
            for &(member, frame) in says {
                self.mixer.contribute(member as ParticipantId, frame);
            }
            self.mixer.mix();
            self.shared.begin_tick();
            let mut out = [0u8; MAX_PACKET];
            let mut sent = Vec::new();
            for (id, session) in self.members.iter_mut().enumerate() {
                let id = id as ParticipantId;
                let mix = self.mixer.output(id).expect("in the room");
                let shares = self.mixer.shares_output(id);
                self.shared.play(session, now, mix, self.width, shares);
                let mut packets = Vec::new();
                while let Some(t) = session.poll_transmit(&mut out) {
                    if t.channel == Channel::Rtp && !rtp::is_rtcp(&out[..t.len]) {
                        packets.push(out[..t.len].to_vec());
                    }
                }
                sent.push(packets);
            }
            sent
        }
    }

    fn parse(packet: &[u8]) -> Sent {
        let p = rtp::parse(packet).expect("RTP");
        Sent {
            ssrc: p.ssrc(),
            payload_type: p.payload_type(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            marker: p.marker(),
            payload: p.payload().to_vec(),
        }
    }

    /// One tick of a tone at the room rate.
    fn tone(rate: u32, hz: f64, amplitude: f64, tick: u32) -> Vec<i16> {
        let n = (rate / 50) as usize;
        (0..n)
            .map(|i| {
                let t = (tick as usize * n + i) as f64 / f64::from(rate);
                (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    fn decode(codec: Codec, packets: &[Sent]) -> Vec<i16> {
        let mut decoder = AudioDecoder::new(codec).expect("decoder");
        let mut pcm = [0i16; MAX_FRAME_SAMPLES];
        let mut heard = Vec::new();
        for p in packets {
            let n = decoder.decode(&p.payload, &mut pcm).expect("decodes");
            heard.extend_from_slice(&pcm[..n]);
        }
        heard
    }

    #[test]
    fn listeners_of_one_format_get_the_same_payload_from_one_encode_per_tick() {
        let opus = (Codec::Opus, 111, 20, None);
        let mut room = Room::new(48_000, &[opus; 5]);
        let mut listened = Vec::new();
        for t in 0..10 {
            let voice = tone(48_000, 1000.0, 6000.0, t);
            let sent = room.tick(t, &[(0, &voice)]);
            let sent: Vec<Sent> = sent.iter().map(|p| parse(&p[0])).collect();
            // Members 1-4 listen: the same bytes, each in its own stream.
            for listener in &sent[2..] {
                assert_eq!(listener.payload, sent[1].payload, "tick {t}");
            }
            let ssrcs: Vec<u32> = sent.iter().map(|s| s.ssrc).collect();
            assert_eq!(ssrcs, [0x1000, 0x1001, 0x1002, 0x1003, 0x1004]);
            // The talker hears none of itself: its own encode (of silence).
            assert_ne!(sent[0].payload, sent[1].payload, "tick {t}");
            listened.push(sent[1].clone());
        }
        assert_eq!(
            room.shared.encodes(),
            10,
            "one encode per tick for four listeners"
        );
        assert_eq!(room.shared.len(), 1);
        // What the listeners got is the talker's tone.
        let heard = decode(Codec::Opus, &listened);
        let tail = &heard[heard.len() / 2..];
        assert!(goertzel_power(tail, 48_000, 1000.0) > goertzel_power(tail, 48_000, 2300.0) * 50.0);
    }

    #[test]
    fn opus_listeners_get_the_band_of_what_they_hear_and_no_wider_than_they_play() {
        let opus = (Codec::Opus, 111, 20, None);
        let wideband_phone = OpusParams {
            max_playback_rate: 16_000,
            ..OpusParams::RFC_DEFAULTS
        };
        let fec = OpusParams {
            use_inband_fec: true,
            ..OpusParams::RFC_DEFAULTS
        };
        // 0 talks; 1 and 2 listen with nothing asked; 3 plays back wideband at most; 4 uses FEC.
        let receivers = [OpusParams::RFC_DEFAULTS; 3];
        let receivers = [&receivers[..], &[wideband_phone, fec]].concat();
        let bands = |width: Option<u32>| {
            let mut room = Room::with_receivers(48_000, &[opus; 5], &receivers);
            room.width = width;
            let mut coded = vec![Vec::new(); 5];
            for t in 0..10 {
                let voice = tone(48_000, 1000.0, 6000.0, t);
                for (member, packets) in room.tick(t, &[(0, &voice)]).iter().enumerate() {
                    let payload = parse(&packets[0]).payload;
                    coded[member].push(crate::media::opus::packet_audio_rate(&payload).unwrap());
                }
            }
            (coded, room.shared.len(), room.shared.encodes())
        };
        // The listeners who asked the same share one encode; those who asked otherwise get one
        // of their own, in their band.
        let (coded, formats, encodes) = bands(None);
        assert_eq!(formats, 3, "plain, wideband, FEC");
        assert_eq!(encodes, 30);
        for member in [1, 2, 4] {
            assert!(
                coded[member].iter().all(|&b| b == 48_000),
                "{member}: {coded:?}"
            );
        }
        assert!(coded[3].iter().all(|&b| b == 16_000), "{coded:?}");
        // What everyone hears came from narrowband callers: narrowband for all.
        let (coded, _, _) = bands(Some(8000));
        for member in 1..5 {
            assert!(
                coded[member].iter().all(|&b| b == 8000),
                "{member}: {coded:?}"
            );
        }
    }

    #[test]
    fn talkers_hear_exactly_everyone_else_and_listeners_everyone() {
        let pcmu = (Codec::Pcmu, 0, 20, None);
        let mut room = Room::new(8000, &[pcmu; 4]);
        let (a, b) = (tone(8000, 500.0, 4000.0, 0), tone(8000, 1100.0, 4000.0, 0));
        let sent = room.tick(0, &[(0, &a), (1, &b)]);
        let heard: Vec<Vec<i16>> = sent
            .iter()
            .map(|p| decode(Codec::Pcmu, &[parse(&p[0])]))
            .collect();
        // μ-law of exactly the other talker (N−1: never itself).
        let ulaw = |pcm: &[i16]| {
            let mut payload = vec![0u8; pcm.len()];
            crate::media::g711::encode_ulaw(pcm, &mut payload);
            let mut back = vec![0i16; pcm.len()];
            crate::media::g711::decode_ulaw(&payload, &mut back);
            back
        };
        assert_eq!(heard[0], ulaw(&b));
        assert_eq!(heard[1], ulaw(&a));
        let both: Vec<i16> = a.iter().zip(&b).map(|(&x, &y)| x + y).collect();
        assert_eq!(heard[2], ulaw(&both));
        assert_eq!(heard[3], heard[2]);
        assert_eq!(room.shared.encodes(), 1);
    }

    #[test]
    fn a_member_going_from_talker_to_listener_and_back_keeps_its_stream() {
        for (codec, pt, rate) in [(Codec::Pcmu, 0, 8000), (Codec::Opus, 111, 48_000)] {
            let mut room = Room::new(rate, &[(codec, pt, 20, None); 3]);
            let mut stream = Vec::new();
            for t in 0..15 {
                // Member 2 murmurs (mixed, not a talker) in ticks 0-4 and 10-14.
                let murmur = tone(rate, 700.0, 300.0, t);
                let voice = tone(rate, 1000.0, 6000.0, t);
                let mut says: Vec<(usize, &[i16])> = vec![(0, &voice)];
                if !(5..10).contains(&t) {
                    says.push((2, &murmur));
                }
                let sent = room.tick(t, &says);
                let (listener, member) = (parse(&sent[1][0]), parse(&sent[2][0]));
                // Listening, it sends the listeners' payload; murmuring, one of its own.
                assert_eq!(
                    member.payload == listener.payload,
                    (5..10).contains(&t),
                    "{codec:?} tick {t}"
                );
                stream.push(member);
            }
            let step = codec.clock_rate() / 50;
            assert!(stream[0].marker, "the stream starts a talkspurt");
            for pair in stream.windows(2) {
                assert_eq!(
                    pair[1].sequence,
                    pair[0].sequence.wrapping_add(1),
                    "{codec:?}"
                );
                assert_eq!(pair[1].timestamp, pair[0].timestamp.wrapping_add(step));
                assert!(!pair[1].marker, "{codec:?}: no new talkspurt at a switch");
                assert_eq!((pair[1].ssrc, pair[1].payload_type), (0x1002, pt));
            }
        }
    }

    #[test]
    fn members_of_different_formats_each_get_theirs_from_one_encode_per_format() {
        let mut room = Room::new(
            16_000,
            &[
                (Codec::Opus, 111, 20, None),
                (Codec::Pcmu, 0, 20, None),
                (Codec::Opus, 111, 20, None),
                (Codec::Pcmu, 0, 20, None),
                (Codec::G722, 9, 20, None),
                (Codec::Pcma, 8, 20, None),
                // 30 ms packets gather room ticks: encoded by the session itself.
                (Codec::Pcmu, 0, 30, None),
            ],
        );
        assert_eq!(
            room.shared.len(),
            4,
            "Opus, PCMU, G.722, PCMA; not the 30 ms one"
        );
        assert_eq!(room.members[6].shared_format(), None);
        let mut sent_30ms = 0;
        for t in 0..6 {
            let voice = tone(16_000, 1000.0, 6000.0, t);
            // A talker of its own: member 7 does not exist, so everyone listens but 0.
            let sent = room.tick(t, &[(0, &voice)]);
            let first: Vec<Sent> = sent[..6].iter().map(|p| parse(&p[0])).collect();
            let pts: Vec<u8> = first.iter().map(|s| s.payload_type).collect();
            assert_eq!(pts, [111, 0, 111, 0, 9, 8]);
            assert_eq!(first[3].payload, first[1].payload);
            assert_eq!(first[1].payload.len(), 160);
            assert_eq!(first[4].payload.len(), 160, "G.722: 320 samples at 16 kHz");
            sent_30ms += sent[6].len();
            for p in &sent[6] {
                assert_eq!(parse(p).payload.len(), 240);
            }
        }
        assert_eq!(sent_30ms, 4, "120 ms in 30 ms packets");
        // Opus, PCMU, G.722 and PCMA once per tick; member 0 talks and encodes its own.
        assert_eq!(room.shared.encodes(), 4 * 6);
    }

    #[test]
    fn srtp_members_each_protect_the_shared_payload_with_their_own_keys() {
        let mut room = Room::new(
            8000,
            &[
                (Codec::Pcmu, 0, 20, None),
                (Codec::Pcmu, 0, 20, Some(3)),
                (Codec::Pcmu, 0, 20, Some(5)),
                (Codec::Pcmu, 0, 20, None),
            ],
        );
        let mut keys = [3u8, 5].map(|k| {
            SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &[k; 16], &[k; 14]).unwrap()
        });
        for t in 0..5 {
            let voice = tone(8000, 1000.0, 6000.0, t);
            let sent = room.tick(t, &[(0, &voice)]);
            let plain = parse(&sent[3][0]);
            let mut wire = [sent[1][0].clone(), sent[2][0].clone()];
            assert_ne!(wire[0][12..], wire[1][12..], "each member's own keystream");
            for (packet, key) in wire.iter_mut().zip(&mut keys) {
                assert_ne!(packet[12..12 + 160], plain.payload[..], "protected");
                let len = packet.len();
                let n = key.unprotect_rtp(packet, len).expect("authenticates");
                assert_eq!(parse(&packet[..n]).payload, plain.payload, "tick {t}");
            }
        }
        assert_eq!(room.shared.encodes(), 5);
    }

    #[test]
    fn a_member_with_a_prompt_of_its_own_hears_the_prompt_not_the_shared_mix() {
        use crate::media::player::PlaySource;
        let mut room = Room::new(8000, &[(Codec::Pcmu, 0, 20, None); 3]);
        room.members[2].start_playout(
            room.start,
            1,
            PlaySource::Tone {
                frequencies: [1700.0, 0.0],
                amplitudes: [6000.0, 0.0],
                duration: None,
            },
            1.0,
        );
        assert_eq!(room.members[2].shared_format(), None);
        let mut prompt = Vec::new();
        for t in 0..10 {
            let voice = tone(8000, 500.0, 6000.0, t);
            let sent = room.tick(t, &[(0, &voice)]);
            prompt.push(parse(&sent[2][0]));
        }
        let heard = decode(Codec::Pcmu, &prompt);
        assert!(goertzel_power(&heard, 8000, 1700.0) > goertzel_power(&heard, 8000, 500.0) * 50.0);
    }

    #[test]
    fn sharing_the_encode_allocates_nothing_per_tick() {
        let mut room = Room::new(48_000, &[(Codec::Opus, 111, 20, Some(7)); 6]);
        let voices: Vec<Vec<i16>> = (0..20).map(|t| tone(48_000, 1000.0, 6000.0, t)).collect();
        room.tick(0, &[(0, &voices[0])]);
        let now = room.start;
        let mut out = [0u8; MAX_PACKET];
        let mut sent = 0;
        let allocations = allocations_during(|| {
            for (t, voice) in voices.iter().enumerate().skip(1) {
                room.mixer.contribute(0, voice);
                room.mixer.mix();
                room.shared.begin_tick();
                for (id, session) in room.members.iter_mut().enumerate() {
                    let id = id as ParticipantId;
                    let mix = room.mixer.output(id).expect("here");
                    let shares = room.mixer.shares_output(id);
                    room.shared
                        .play(session, now + PTIME * t as u32, mix, None, shares);
                    while session.poll_transmit(&mut out).is_some() {
                        sent += 1;
                    }
                }
            }
        });
        assert_eq!(allocations, 0);
        assert!(sent >= 19 * 6, "{sent}");
        assert_eq!(room.shared.encodes(), 20);
    }
}
