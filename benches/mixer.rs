//! Conference mixer cost per tick (20 ms), for participants-per-core figures.
//!
//! - `g711_room/<n>`: a G.711 room (8 kHz) of n talking participants, one full tick: μ-law
//!   decode of every contribution, contribute, mix, read and μ-law encode every output.
//! - `g711_mix_only/<n>`: the same tick without the codec (contribute, mix, read outputs).
//! - `opus_room_mix_only/<n>`: an Opus room (48 kHz) of n talking participants, mixing only.
//! - `opus_codec_per_participant`: one 20 ms Opus encode (48 kHz, 24 kb/s, complexity 5, FEC)
//!   plus one decode, the codec work each Opus participant adds to every tick.
//!
//! Everyone talks in every tick (the worst case: no listener shares the common mix).
//! participants per core = 20 ms / (time per tick / n), for each room size.
//!
//! Run: `cargo bench --bench mixer -- --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use callbridge::media::g711;
use callbridge::media::opus::{OpusConfig, OpusDecoder, OpusEncoder};
use callbridge::mixer::{Mixer, MixerConfig, ParticipantFlags, ParticipantId};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 4] = [10, 100, 500, 1000];
const FRAME_MS: u32 = 20;

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = g711_room, g711_mix_only, opus_room_mix_only, opus_codec_per_participant
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
