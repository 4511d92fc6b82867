//! The conference generator: members with one socket each (Janus requires it: it answers only
//! the address a participant joined with), sending 20 ms frames of a tone (talkers) or
//! silence (everyone else) in PCMU or Opus, paced evenly over each 20 ms, and counting what
//! each receives. At the end the last second a few members heard is decoded and a Goertzel
//! filter tells which tones were in it: a talker's tone must reach the others and not itself.
//!
//! The same generator drives a two-member "room" for the transcoding relay (PCMU on one
//! side, Opus on the other).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callbridge::media::codec::{pcm_rate, AudioDecoder, AudioEncoder};
use callbridge::media::rtp::{self, RtpHeader};
use callbridge::sdp::Codec;

use crate::hist::Histogram;
use crate::sys;

/// Tones the talkers send, in order: each a whole number of cycles in 20 ms.
pub const TONES: [u32; 3] = [600, 1000, 1800];
/// Payload type used for Opus (both servers are told it).
pub const OPUS_PT: u8 = 111;
/// Frames of the last stretch each checked member keeps (one second).
const KEPT: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomCodec {
    Pcmu,
    Opus,
}

impl RoomCodec {
    pub fn codec(self) -> Codec {
        match self {
            RoomCodec::Pcmu => Codec::Pcmu,
            RoomCodec::Opus => Codec::Opus,
        }
    }
    pub fn pt(self) -> u8 {
        match self {
            RoomCodec::Pcmu => 0,
            RoomCodec::Opus => OPUS_PT,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            RoomCodec::Pcmu => "PCMU",
            RoomCodec::Opus => "Opus",
        }
    }
}

/// One member: its socket, connected to where the server takes its media.
pub struct Member {
    pub sock: UdpSocket,
    pub codec: RoomCodec,
    /// The payload type it sends (and the server sends it).
    pub pt: u8,
    /// The tone it sends, or None for silence.
    pub tone: Option<u32>,
    /// Tones it must hear (the others' in its room) — checked when `check` is set.
    pub expect: Vec<u32>,
    pub check: bool,
}

/// What one run measured.
#[derive(Default)]
pub struct RoomReport {
    pub members: usize,
    pub seconds: f64,
    pub sent: u64,
    pub send_errors: u64,
    /// Packets received over the window (every member's).
    pub received: u64,
    /// The server's CPU over the window, ns.
    pub server_cpu_ns: Option<u64>,
    pub lateness: Histogram,
    /// Checked members: (heard every expected tone, heard its own tone, detail).
    pub checks: Vec<(bool, bool, String)>,
}

impl RoomReport {
    /// Received as a share of what a full mix to every member would be (50 per second each).
    pub fn delivered_pct(&self) -> f64 {
        let expected = self.members as f64 * 50.0 * self.seconds;
        if expected <= 0.0 {
            return 0.0;
        }
        100.0 * self.received as f64 / expected
    }
    /// Server CPU µs per member-second.
    pub fn us_per_member_second(&self) -> Option<f64> {
        let ns = self.server_cpu_ns?;
        let ms = self.members as f64 * self.seconds;
        (ms > 0.0).then(|| ns as f64 / 1e3 / ms)
    }
}

/// The 50 payloads a member sends in a loop (one second).
fn frames(codec: RoomCodec, tone: Option<u32>) -> Result<Vec<Vec<u8>>, String> {
    let rate = pcm_rate(codec.codec());
    let n = (rate / 50) as usize;
    let mut encoder = AudioEncoder::new(codec.codec()).map_err(|e| format!("encoder: {e}"))?;
    let mut out = Vec::with_capacity(50);
    for f in 0..50 {
        let pcm: Vec<i16> = (0..n)
            .map(|i| match tone {
                Some(hz) => {
                    let t = (f * n + i) as f64 / f64::from(rate);
                    (8000.0 * (2.0 * std::f64::consts::PI * f64::from(hz) * t).sin()) as i16
                }
                None => 0,
            })
            .collect();
        let mut payload = vec![0u8; 1500];
        let len = encoder
            .encode(&pcm, &mut payload)
            .map_err(|e| format!("encode: {e}"))?;
        payload.truncate(len);
        out.push(payload);
    }
    Ok(out)
}

/// Normalised Goertzel power of `hz` in `x` (≈ 1.0 for a pure tone of that frequency).
pub fn goertzel(x: &[i16], rate: u32, hz: u32) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &v in x {
        let v = f64::from(v);
        energy += v * v;
        let s = v + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    if energy <= 0.0 {
        return 0.0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / (energy * x.len() as f64 / 2.0)
}

/// Streams `seconds` of media from every member, receiving meanwhile; `server_cpu` is read
/// at the first scheduled send and after the last.
pub fn run(
    members: &[Member],
    seconds: f64,
    server_cpu: &dyn Fn() -> Option<u64>,
) -> Result<RoomReport, String> {
    let n = members.len();
    let mut report = RoomReport {
        members: n,
        seconds,
        ..RoomReport::default()
    };
    if n == 0 {
        return Ok(report);
    }
    let payloads: Vec<Vec<Vec<u8>>> = members
        .iter()
        .map(|m| frames(m.codec, m.tone))
        .collect::<Result<_, _>>()?;
    for m in members {
        m.sock
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
    }
    let ticks = (seconds * 50.0).round() as u64;
    let rate = n as f64 * 50.0;
    let ns_per_packet = 1e9 / rate;
    let measuring = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    // Half a second of media first: Janus sends nothing to a member before its first packet,
    // and jitter buffers settle; the window starts after it.
    let warmup = 25u64;
    let t0 = sys::monotonic_ns() + 50_000_000;
    let window_start = t0 + (warmup as f64 * 20e6) as u64;
    let (received, kept) = std::thread::scope(|scope| {
        let rx = scope.spawn(|| receive(members, &measuring, &stop));
        sys::set_timer_slack_ns(1_000);
        let mut packet = [0u8; 1500];
        let mut cpu0 = None;
        for k in 0..warmup + ticks {
            if k == warmup {
                sys::sleep_until(window_start);
                measuring.store(true, Ordering::Release);
                cpu0 = server_cpu();
            }
            for (i, m) in members.iter().enumerate() {
                let due = t0 + ((k * n as u64 + i as u64) as f64 * ns_per_packet) as u64;
                let now = sys::monotonic_ns();
                if due > now + 100_000 {
                    sys::sleep_until(due);
                }
                if k >= warmup {
                    report
                        .lateness
                        .record(sys::monotonic_ns().saturating_sub(due));
                }
                let payload = &payloads[i][(k % 50) as usize];
                let samples = pcm_rate(m.codec.codec()) / 50;
                let header = RtpHeader {
                    marker: k == 0,
                    payload_type: m.pt,
                    sequence: k as u16,
                    timestamp: (k as u32).wrapping_mul(samples),
                    ssrc: 0x5000_0000 + i as u32,
                    csrcs: &[],
                };
                let Ok(len) = rtp::write_packet(&mut packet, &header, payload) else {
                    report.send_errors += 1; // a frame longer than a packet: never ours
                    continue;
                };
                match m.sock.send(&packet[..len]) {
                    Ok(_) if k >= warmup => report.sent += 1,
                    Ok(_) => {}
                    Err(_) => report.send_errors += 1,
                }
            }
        }
        let end = t0 + ((warmup + ticks) as f64 * 20e6) as u64;
        sys::sleep_until(end);
        measuring.store(false, Ordering::Release);
        report.server_cpu_ns = match (cpu0, server_cpu()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Release);
        rx.join().expect("receiver panicked")
    });
    report.received = received;
    for (i, m) in members.iter().enumerate() {
        if m.check {
            report.checks.push(check(m, &kept[i], i));
        }
    }
    Ok(report)
}

/// Decodes what a member kept and looks for the tones.
fn check(m: &Member, kept: &[Vec<u8>], index: usize) -> (bool, bool, String) {
    let codec = m.codec.codec();
    let rate = pcm_rate(codec);
    let Ok(mut decoder) = AudioDecoder::new(codec) else {
        return (false, false, "no decoder".into());
    };
    let mut pcm = Vec::new();
    let mut frame = vec![0i16; rate as usize / 10];
    for payload in kept {
        if let Ok(len) = decoder.decode(payload, &mut frame) {
            pcm.extend_from_slice(&frame[..len]);
        }
    }
    if pcm.is_empty() {
        return (false, false, format!("member {index}: nothing received"));
    }
    let heard: Vec<(u32, f64)> = m
        .expect
        .iter()
        .map(|&hz| (hz, goertzel(&pcm, rate, hz)))
        .collect();
    // Two or three tones share the power: each must hold a clear part of it.
    let threshold = if m.expect.len() > 1 { 0.2 } else { 0.6 };
    let all_heard = heard.iter().all(|(_, p)| *p > threshold);
    let own = m.tone.map(|hz| goertzel(&pcm, rate, hz)).unwrap_or(0.0);
    let detail = format!(
        "member {index} ({}{}): {} own {:.3}",
        m.codec.name(),
        m.tone
            .map(|t| format!(", sends {t} Hz"))
            .unwrap_or_default(),
        heard
            .iter()
            .map(|(hz, p)| format!("{hz} Hz {p:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        own
    );
    (all_heard, own > 0.05, detail)
}

/// Counts packets per member while measuring; checked members keep their last payloads.
fn receive(
    members: &[Member],
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> (u64, Vec<Vec<Vec<u8>>>) {
    let epoll = sys::Epoll::new().expect("epoll");
    for (i, m) in members.iter().enumerate() {
        epoll.add(m.sock.as_raw_fd(), i as u64).expect("epoll add");
    }
    let mut kept: Vec<Vec<Vec<u8>>> = members.iter().map(|_| Vec::new()).collect();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = [0u8; 1500];
    let mut received = 0u64;
    while !stop.load(Ordering::Acquire) {
        let ready = epoll.wait(&mut events, 20);
        let on = measuring.load(Ordering::Acquire);
        for e in &events[..ready] {
            let i = e.u64 as usize;
            let m = &members[i];
            while let Ok(len) = m.sock.recv(&mut buf) {
                if rtp::is_rtcp(&buf[..len]) {
                    continue;
                }
                let Ok(packet) = rtp::parse(&buf[..len]) else {
                    continue;
                };
                if on {
                    received += 1;
                    if m.check {
                        let list = &mut kept[i];
                        if list.len() == KEPT {
                            list.remove(0);
                        }
                        list.push(packet.payload().to_vec());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    (received, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_finds_the_tone_and_not_another() {
        let pcm: Vec<i16> = (0..8000)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * 600.0 * i as f64 / 8000.0).sin()) as i16
            })
            .collect();
        assert!(goertzel(&pcm, 8000, 600) > 0.9);
        assert!(goertzel(&pcm, 8000, 1000) < 0.01);
    }
}
