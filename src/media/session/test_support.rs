//! Test helpers shared by the session's unit tests: a test configuration, a peer sending a
//! tone, and a driver that runs ptimes and collects what the session sent.
//!
//! Owns: nothing of the session. Must not: be compiled outside tests.

pub(super) use std::net::SocketAddr;
pub(super) use std::time::{Duration, Instant};

pub(super) use super::*;
pub(super) use crate::media::codec::{pcm_rate, AudioDecoder, AudioEncoder, MAX_FRAME_SAMPLES};
pub(super) use crate::media::dtmf::{DtmfError, DtmfSender};
pub(super) use crate::media::rtp::{self, RtpHeader};
pub(super) use crate::media::srtp::{CryptoAttribute, SrtpContext, SrtpProfile};
pub(super) use crate::media::tone::goertzel_power;
pub(super) use crate::sdp::Codec;

pub(super) const PEER: &str = "192.0.2.10:4000";
pub(super) const PTIME: Duration = Duration::from_millis(20);

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub(super) fn config(codec: Codec, payload_type: u8) -> SessionConfig {
    SessionConfig {
        local_ssrc: 0x1111_2222,
        cname: "callbridge@test".into(),
        ntp_at_start: 0,
        format: Some(StreamFormat {
            codec,
            payload_type,
            ptime_ms: 20,
            telephone_event_pt: Some(101),
            send: None,
            peer_opus: crate::sdp::OpusParams::RFC_DEFAULTS,
        }),
        mode: SessionMode::Echo,
        remote_rtp: Some(addr(PEER)),
        remote_rtcp: Some(addr("192.0.2.10:4001")),
        source: RtpSource::Strict,
        srtp: None,
        rtp_timeout: Some(Duration::from_secs(5)),
        jitter_min_ms: 20,
        jitter_max_ms: 200,
        rtcp_interval: Duration::from_secs(5),
        seed: 7,
        inband_dtmf: false,
        tick_epoch: Instant::now(),
        forward_on_arrival: false,
    }
}

/// A peer sending one codec's frames every 20 ms, encoded from a tone.
pub(super) struct Peer {
    pub(super) encoder: AudioEncoder,
    pub(super) codec: Codec,
    pub(super) payload_type: u8,
    pub(super) seq: u16,
    pub(super) ts: u32,
    pub(super) phase: usize,
    pub(super) srtp: Option<SrtpContext>,
}

impl Peer {
    pub(super) fn new(codec: Codec, payload_type: u8) -> Peer {
        Peer {
            encoder: AudioEncoder::new(codec).expect("codec"),
            codec,
            payload_type,
            seq: 1000,
            ts: 5000,
            phase: 0,
            srtp: None,
        }
    }

    pub(super) fn frame(&mut self, out: &mut [u8]) -> usize {
        let rate = pcm_rate(self.codec);
        let n = (rate / 50) as usize;
        let hz = 1000.0;
        let pcm: Vec<i16> = (0..n)
            .map(|i| {
                let t = (self.phase + i) as f64 / f64::from(rate);
                (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect();
        self.phase += n;
        let header = RtpHeader {
            marker: false,
            payload_type: self.payload_type,
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: 0xabcd_0001,
            csrcs: &[],
        };
        let h = rtp::write_header(out, &header).expect("header fits");
        let len = h + self.encoder.encode(&pcm, &mut out[h..]).expect("encode");
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.codec.clock_rate() / 50);
        match self.srtp.as_mut() {
            Some(ctx) => ctx.protect_rtp(out, len).expect("protect"),
            None => len,
        }
    }
}

/// Runs `frames` ptimes: the peer sends a frame (unless `lose(i)`), the session ticks;
/// returns everything the session transmitted.
pub(super) fn run(
    session: &mut MediaSession,
    peer: &mut Peer,
    start: Instant,
    frames: usize,
    lose: impl Fn(usize) -> bool,
) -> Vec<(Transmit, Vec<u8>)> {
    let mut sent = Vec::new();
    let mut buf = [0u8; MAX_PACKET];
    let mut out = [0u8; MAX_PACKET];
    for i in 0..frames {
        let now = start + PTIME * i as u32;
        let len = peer.frame(&mut buf);
        if !lose(i) {
            session.handle_rtp(now, addr(PEER), &mut buf, len);
        }
        session.handle_timeout(now + Duration::from_millis(1));
        while let Some(t) = session.poll_transmit(&mut out) {
            sent.push((t, out[..t.len].to_vec()));
        }
    }
    sent
}

pub(super) fn rtp_only(sent: &[(Transmit, Vec<u8>)]) -> Vec<Vec<u8>> {
    sent.iter()
        .filter(|(t, p)| t.channel == Channel::Rtp && !rtp::is_rtcp(p))
        .map(|(_, p)| p.clone())
        .collect()
}
