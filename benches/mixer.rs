//! Conference mixer cost per tick (20 ms), for participants-per-core figures.
//!
//! - `g711_room/<n>`: a G.711 room (8 kHz) of n talking participants, one full tick: μ-law
//!   decode of every contribution, contribute, mix, read and μ-law encode every output.
//! - `g711_mix_only/<n>`: the same tick without the codec (contribute, mix, read outputs).
//! - `opus_room_mix_only/<n>`: an Opus room (48 kHz) of n talking participants, mixing only.
//! - `opus_codec_per_participant`: one 20 ms Opus encode (48 kHz, 24 kb/s, complexity 5, FEC)
//!   plus one decode, the codec work each Opus participant adds to every tick.
//! - `opus_encode_band/<rate>`: one 20 ms encode of 48 kHz PCM (a tone and white noise:
//!   fullband content) with our settings, the encoder held to the band of `<rate>` (8000
//!   narrowband … 48000 fullband), as it is for a member who hears only that wide
//!   (`OpusEncoder::set_audio_rate`); and `opus_encode_band/<rate>/complexity-<c>`, the same
//!   fullband at other complexities (Janus AudioBridge runs 4).
//!
//! - `session_room/<codec>/<n>`: the whole conference tick as the media worker runs it, through
//!   n `MediaSession`s: each receives one RTP packet (jitter buffer), `capture` (decode,
//!   resample to the room), contribute, mix, `play` (resample, encode, RTP; or, for who hears
//!   the common mix, the room's one encode of it per format, packetized) and the packet is
//!   taken for sending. Everything but the socket calls; PCMU in an 8 kHz room, Opus in a
//!   48 kHz room.
//!
//! - `session_room_listeners/<codec>/<n>`: the same whole tick in rooms of n where 3 members
//!   talk and the others send silence (the encoded frames of digital silence their phones
//!   would send): the common case of a large conference.
//!
//! In `session_room` everyone talks in every tick (the worst case: no listener shares the common
//! mix). participants per core = 20 ms / (time per tick / n), for each room size.
//!
//! Run: `cargo bench --bench mixer -- --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use std::net::SocketAddr;
use std::time::Instant;

use callbridge::media::codec::{pcm_rate, AudioEncoder};
use callbridge::media::g711;
use callbridge::media::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use callbridge::media::rtp::{self, RtpHeader};
use callbridge::media::session::{
    MediaSession, SessionConfig, SessionMode, SharedEncodes, StreamFormat, MAX_PACKET,
};
use callbridge::mixer::{Mixer, MixerConfig, ParticipantFlags, ParticipantId};
use callbridge::sdp::Codec;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 4] = [10, 100, 500, 1000];
const FRAME_MS: u32 = 20;

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = g711_room, g711_mix_only, opus_room_mix_only, opus_codec_per_participant,
        opus_encode_band, session_room, session_room_listeners
}
criterion_main!(benches);

fn g711_room(c: &mut Criterion) {
    let mut group = c.benchmark_group("g711_room");
    for n in SIZES {
        let mut mixer = room(8000, n);
        let frame = mixer.frame_len();
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|p| {
                let mut payload = vec![0u8; frame];
                g711::encode_ulaw(&voice(8000, frame, p), &mut payload);
                payload
            })
            .collect();
        let mut pcm = vec![0i16; frame];
        let mut encoded = vec![0u8; frame];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for (id, payload) in payloads.iter().enumerate() {
                    g711::decode_ulaw(payload, &mut pcm);
                    mixer.contribute(id as ParticipantId, &pcm);
                }
                mixer.mix();
                for id in 0..n as ParticipantId {
                    let out = mixer.output(id).expect("participant is in the room");
                    g711::encode_ulaw(out, &mut encoded);
                    black_box(&encoded);
                }
                while mixer.poll_talker_event().is_some() {}
            })
        });
    }
    group.finish();
}

fn g711_mix_only(c: &mut Criterion) {
    mix_only(c, "g711_mix_only", 8000);
}

fn opus_room_mix_only(c: &mut Criterion) {
    mix_only(c, "opus_room_mix_only", 48_000);
}

fn opus_codec_per_participant(c: &mut Criterion) {
    let config = OpusConfig::default();
    let mut encoder = OpusEncoder::new(&config).expect("valid Opus config");
    let mut decoder = OpusDecoder::new(config.sample_rate).expect("valid Opus rate");
    let frame = (config.sample_rate * FRAME_MS / 1000) as usize;
    // What an Opus participant is sent: a mix of several voices.
    let mix: Vec<i16> = (0..frame)
        .map(|i| (0..4).map(|p| voice(48_000, frame, p)[i] / 2).sum())
        .collect();
    let mut packet = vec![0u8; 1500];
    let mut pcm = vec![0i16; frame];
    c.bench_function("opus_codec_per_participant", |b| {
        b.iter(|| {
            let len = encoder.encode(&mix, &mut packet).expect("encodes");
            decoder.decode(&packet[..len], &mut pcm).expect("decodes");
            black_box(&pcm);
        })
    });
}

fn opus_encode_band(c: &mut Criterion) {
    let mut group = c.benchmark_group("opus_encode_band");
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let frames: Vec<Vec<i16>> = (0..50)
        .map(|k| {
            (0..960)
                .map(|i| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    let t = f64::from(k * 960 + i) / 48_000.0;
                    (4000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                        + ((noise >> 52) as i16 - 2048)
                })
                .collect()
        })
        .collect();
    let settings = [8000u32, 12_000, 16_000, 24_000, 48_000]
        .map(|rate| (rate, 5u8))
        .into_iter()
        .chain([(48_000, 0), (48_000, 3), (48_000, 4), (48_000, 10)]);
    for (rate, complexity) in settings {
        let mut encoder = OpusEncoder::new(&OpusConfig {
            complexity,
            ..OpusConfig::default()
        })
        .expect("valid Opus config");
        encoder.set_audio_rate(rate).expect("a band");
        let mut packet = vec![0u8; 1500];
        let mut k = 0;
        let name = if complexity == 5 {
            rate.to_string()
        } else {
            format!("{rate}/complexity-{complexity}")
        };
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                k = (k + 1) % frames.len();
                black_box(encoder.encode(&frames[k], &mut packet).expect("encodes"))
            })
        });
    }
    group.finish();
}

/// contribute for all + mix + read all outputs, at `rate`.
fn mix_only(c: &mut Criterion, name: &str, rate: u32) {
    let mut group = c.benchmark_group(name);
    for n in SIZES {
        let mut mixer = room(rate, n);
        let frame = mixer.frame_len();
        let voices: Vec<Vec<i16>> = (0..n).map(|p| voice(rate, frame, p)).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for (id, pcm) in voices.iter().enumerate() {
                    mixer.contribute(id as ParticipantId, pcm);
                }
                mixer.mix();
                let mut checksum = 0i32;
                for id in 0..n as ParticipantId {
                    let out = mixer.output(id).expect("participant is in the room");
                    checksum = checksum.wrapping_add(i32::from(out[frame / 2]));
                    black_box(out);
                }
                while mixer.poll_talker_event().is_some() {}
                checksum
            })
        });
    }
    group.finish();
}

fn room(rate: u32, n: usize) -> Mixer {
    let mut mixer = Mixer::new(MixerConfig {
        sample_rate: rate,
        frame_ms: FRAME_MS,
        max_participants: n,
    });
    for id in 0..n as ParticipantId {
        mixer
            .add(id, ParticipantFlags::default())
            .expect("room sized for n");
    }
    mixer
}

/// A participant's frame: two tones of its own at ≈ −26 dBFS plus a little noise, so large
/// rooms overload and exercise the limiter like real crowds do.
fn voice(rate: u32, frame: usize, participant: usize) -> Vec<i16> {
    let f1 = 150.0 + (participant % 37) as f64 * 20.0;
    let f2 = 900.0 + (participant % 53) as f64 * 35.0;
    let mut noise = 0x9E37_79B9u32.wrapping_mul(participant as u32 + 1);
    (0..frame)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let hiss = f64::from((noise >> 24) as u8) - 128.0;
            let tone = 1000.0 * (2.0 * std::f64::consts::PI * f1 * t).sin()
                + 700.0 * (2.0 * std::f64::consts::PI * f2 * t).sin();
            (tone + hiss) as i16
        })
        .collect()
}

/// One participant of `session_room`: its session and the packets its phone sends.
struct Member {
    session: MediaSession,
    /// Encoded frames of the participant's voice, sent round-robin.
    payloads: Vec<Vec<u8>>,
    source: SocketAddr,
    payload_type: u8,
}

fn session_room(c: &mut Criterion) {
    session_rooms(
        c,
        "session_room",
        &[
            (Codec::Pcmu, 0u8, 8000u32, &[100usize, 500][..]),
            (Codec::Opus, 111, 48_000, &[10, 50][..]),
        ],
        None,
    );
}

fn session_room_listeners(c: &mut Criterion) {
    session_rooms(
        c,
        "session_room_listeners",
        &[
            (Codec::Pcmu, 0u8, 8000u32, &[3usize, 10, 50][..]),
            (Codec::Opus, 111, 48_000, &[3, 10, 50][..]),
        ],
        Some(3),
    );
}

/// Whole conference ticks through `MediaSession`s, for each (codec, payload type, room rate,
/// room sizes); with `talkers`, only that many members talk and the rest send silence.
fn session_rooms(
    c: &mut Criterion,
    name: &str,
    rooms: &[(Codec, u8, u32, &[usize])],
    talkers: Option<usize>,
) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for &(codec, payload_type, rate, sizes) in rooms {
        for &n in sizes {
            let epoch = Instant::now();
            let mut members: Vec<Member> = (0..n)
                .map(|p| {
                    let talks = talkers.is_none_or(|t| p < t);
                    member(codec, payload_type, rate, p, epoch, talks)
                })
                .collect();
            let mut mixer = room(rate, n);
            let mut shared = SharedEncodes::default();
            for m in &members {
                shared.prepare(&m.session).expect("shared encoder");
            }
            let frame_len = mixer.frame_len();
            let mut frame = vec![0i16; frame_len];
            let mut packet = [0u8; MAX_PACKET];
            let mut out = [0u8; MAX_PACKET];
            let mut tick: u32 = 0;
            group.throughput(Throughput::Elements(n as u64));
            let name = format!("{codec:?}/{n}").to_lowercase();
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let now = epoch + Duration::from_millis(20) * tick;
                    let seq = tick as u16;
                    let timestamp = tick.wrapping_mul(codec.clock_rate() / 50);
                    for (id, m) in members.iter_mut().enumerate() {
                        let payload = &m.payloads[tick as usize % m.payloads.len()];
                        let header = RtpHeader {
                            marker: tick == 0,
                            payload_type: m.payload_type,
                            sequence: seq,
                            timestamp,
                            ssrc: 0x5000 + id as u32,
                            csrcs: &[],
                        };
                        let len =
                            rtp::write_packet(&mut packet, &header, payload).expect("packet fits");
                        m.session.handle_rtp(now, m.source, &mut packet, len);
                        // As the worker's conference does: who heard the common mix last
                        // tick is captured as a listener (inactive Opus frames undecoded).
                        let voiced = if mixer.shares_output(id as ParticipantId) {
                            m.session.capture_listener(now, &mut frame)
                        } else {
                            m.session.capture(now, &mut frame)
                        };
                        if voiced.is_some() {
                            mixer.contribute(id as ParticipantId, &frame);
                        }
                    }
                    mixer.mix();
                    shared.begin_tick();
                    for (id, m) in members.iter_mut().enumerate() {
                        let id = id as ParticipantId;
                        let mix = mixer.output(id).expect("in the room");
                        // The bench's members all send their codec's whole band.
                        let width = Some(rate);
                        shared.play(&mut m.session, now, mix, width, mixer.shares_output(id));
                        while let Some(t) = m.session.poll_transmit(&mut out) {
                            black_box(t);
                        }
                    }
                    while mixer.poll_talker_event().is_some() {}
                    tick += 1;
                })
            });
        }
    }
    group.finish();
}

/// A member whose phone sends its voice (`talks`) or the encoded frames of digital silence.
fn member(
    codec: Codec,
    payload_type: u8,
    room_rate: u32,
    p: usize,
    epoch: Instant,
    talks: bool,
) -> Member {
    let source: SocketAddr = format!("127.0.0.1:{}", 20_000 + 2 * p)
        .parse()
        .expect("address");
    let format = StreamFormat {
        codec,
        payload_type,
        ptime_ms: FRAME_MS,
        telephone_event_pt: Some(101),
        send: None,
        peer_opus: callbridge::sdp::OpusParams::RFC_DEFAULTS,
    };
    let config = SessionConfig {
        local_ssrc: 0x1000 + p as u32,
        cname: format!("bench-{p}"),
        ntp_at_start: 0,
        format: Some(format),
        mode: SessionMode::Idle,
        remote_rtp: Some(source),
        remote_rtcp: None,
        source: callbridge::media::session::RtpSource::Strict,
        srtp: None,
        rtp_timeout: None,
        jitter_min_ms: 20,
        jitter_max_ms: 200,
        rtcp_interval: Duration::from_secs(3600),
        seed: p as u64,
        inband_dtmf: false,
        tick_epoch: epoch,
        forward_on_arrival: false,
    };
    let mut session = MediaSession::new(config, epoch).expect("session");
    session.enter_conference(room_rate).expect("room");
    let rate = pcm_rate(codec);
    let frame = (rate * FRAME_MS / 1000) as usize;
    let mut encoder = AudioEncoder::new(codec).expect("encoder");
    let payloads = (0..8)
        .map(|k| {
            let pcm = if talks {
                voice(rate, frame, p * 8 + k)
            } else {
                vec![0; frame]
            };
            let mut payload = vec![0u8; MAX_PACKET];
            let len = encoder.encode(&pcm, &mut payload).expect("encode");
            payload.truncate(len);
            payload
        })
        .collect();
    Member {
        session,
        payloads,
        source,
        payload_type,
    }
}
