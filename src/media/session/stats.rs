//! A session's counters, its RTCP view of the stream, and the RTCP reports it sends.
//!
//! Owns: [`SessionStats`] and [`RtcpSummary`] (what the worker publishes) and the sending of
//! RTCP sender/receiver reports when the RTCP session says one is due.
//! Must not: count on the packet path beyond plain increments (the summary is built only when
//! [`MediaSession::stats`] is asked for), or allocate: reports go out in the session's spare
//! packet buffers.

use std::time::Instant;

use super::{Channel, MediaSession, SRTCP_ROOM};
use crate::media::jitter::JitterStats;
use crate::media::rtcp::RtcpStats;

/// Counters since the session started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionStats {
    pub rtp_packets_received: u64,
    pub rtp_bytes_received: u64,
    pub rtp_packets_sent: u64,
    pub rtp_bytes_sent: u64,
    pub rtcp_packets_received: u64,
    pub rtcp_packets_sent: u64,
    /// Not RTP/RTCP, or a payload type that was not negotiated.
    pub malformed_packets: u64,
    /// From a source other than the negotiated/latched one ("RTP bleed" attempts included).
    pub foreign_source_dropped: u64,
    /// SRTP authentication or replay failures.
    pub srtp_rejected: u64,
    pub decode_errors: u64,
    /// Lost Opus frames decoded with the following packet at hand (from its in-band FEC when
    /// the sender put one there, else libopus's PLC).
    pub fec_recovered: u64,
    /// Opus frames of a silent conference listener left undecoded because their sender's VAD
    /// marked them inactive.
    pub inactive_skipped: u64,
    pub digits_received: u64,
    /// RFC 4733 digits sent (telephone-events started; each is one key press).
    pub digits_sent: u64,
    pub jitter: JitterStats,
    pub rtcp: RtcpSummary,
}

/// The RTCP view of the stream (what RFC 3550 reports say).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpSummary {
    pub cumulative_lost: i32,
    pub fraction_lost_percent: f32,
    pub jitter_ms: f32,
    pub rtt_ms: Option<f32>,
    pub remote_fraction_lost_percent: Option<f32>,
    pub remote_jitter_ms: Option<f32>,
}

impl MediaSession {
    /// RTP packets and bytes received and sent: plain counters, cheap enough to read after every
    /// packet (unlike [`MediaSession::stats`], which also summarizes RTCP).
    pub fn traffic(&self) -> [u64; 4] {
        let s = &self.stats;
        [
            s.rtp_packets_received,
            s.rtp_bytes_received,
            s.rtp_packets_sent,
            s.rtp_bytes_sent,
        ]
    }

    pub fn stats(&self) -> SessionStats {
        let mut stats = self.stats;
        if let Some(audio) = &self.audio {
            stats.jitter = audio.jitter.stats();
        }
        stats.rtcp = summarize(&self.rtcp.stats());
        stats
    }

    pub(super) fn send_rtcp(&mut self, now: Instant) {
        let Some(mut buf) = self.take_slot() else {
            return;
        };
        let room = buf.len() - SRTCP_ROOM;
        let Some(len) = self.rtcp.poll_transmit(now, &mut buf[..room]) else {
            self.spare.push(buf);
            return;
        };
        let Some(destination) = self.rtcp_destination() else {
            self.spare.push(buf);
            return;
        };
        let len = match self.srtp_out.as_mut() {
            Some(ctx) => match ctx.protect_rtcp(&mut buf[..], len) {
                Ok(n) => n,
                Err(_) => {
                    self.spare.push(buf);
                    return;
                }
            },
            None => len,
        };
        let channel = if Some(destination) == self.rtp_destination() {
            Channel::Rtp
        } else {
            Channel::Rtcp
        };
        self.stats.rtcp_packets_sent += 1;
        self.transmits.push_back((channel, destination, len, buf));
    }
}

fn summarize(s: &RtcpStats) -> RtcpSummary {
    RtcpSummary {
        cumulative_lost: s.cumulative_lost,
        fraction_lost_percent: s.fraction_lost_percent,
        jitter_ms: s.jitter_ms,
        rtt_ms: s.rtt.map(|d| d.as_secs_f32() * 1000.0),
        remote_fraction_lost_percent: s.remote_fraction_lost.map(|f| f32::from(f) * 100.0 / 256.0),
        remote_jitter_ms: s.remote_jitter_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::test_support::*;

    #[test]
    fn rtcp_reports_go_to_the_rtcp_port_or_the_rtp_port_with_mux() {
        for (remote_rtcp, channel) in [("192.0.2.10:4001", Channel::Rtcp), (PEER, Channel::Rtp)] {
            let start = Instant::now();
            let mut cfg = config(Codec::Pcmu, 0);
            cfg.remote_rtcp = Some(addr(remote_rtcp));
            let mut session = MediaSession::new(cfg, start).unwrap();
            let mut peer = Peer::new(Codec::Pcmu, 0);
            let sent = run(&mut session, &mut peer, start, 500, |_| false);
            let reports: Vec<&(Transmit, Vec<u8>)> =
                sent.iter().filter(|(_, p)| rtp::is_rtcp(p)).collect();
            assert!(!reports.is_empty(), "an RTCP report within 10 s");
            for (t, _) in reports {
                assert_eq!(t.destination, addr(remote_rtcp));
                assert_eq!(t.channel, channel);
            }
        }
    }

    #[test]
    fn a_ticking_session_sends_its_reports_at_its_ticks_and_wakes_for_nothing_else() {
        // Driven as a worker drives it: only at the instants it asks for.
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.tick_epoch = start - Duration::from_millis(7);
        let epoch = cfg.tick_epoch;
        cfg.rtp_timeout = Some(Duration::from_secs(3));
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        let on_grid = |at: Instant| (at - epoch).as_nanos() % PTIME.as_nanos() == 0;
        let (mut reports, mut wakes, mut now) = (Vec::new(), 0, start);
        let (mut timed_out_at, mut last_packet) = (None, start);
        while now < start + Duration::from_secs(12) {
            // The caller talks for the first 2 s, then goes quiet (the RTP timeout fires).
            if now < start + Duration::from_secs(2) {
                let len = peer.frame(&mut buf);
                session.handle_rtp(now, addr(PEER), &mut buf, len);
                last_packet = now;
            }
            now = session.poll_timeout();
            assert!(on_grid(now), "woken off its tick grid at {:?}", now - start);
            session.handle_timeout(now);
            wakes += 1;
            while let Some(event) = session.poll_event() {
                if matches!(event, SessionEvent::RtpTimeout { .. }) {
                    timed_out_at = Some(now);
                }
            }
            while let Some(t) = session.poll_transmit(&mut out) {
                if rtp::is_rtcp(&out[..t.len]) {
                    reports.push(now);
                }
            }
        }
        // Reports in the 12 s (the first within 1.25–3.75 s, then every 2.5–7.5 s), each at a tick.
        assert!(reports.len() >= 2, "{} reports", reports.len());
        assert!(reports.iter().all(|&at| on_grid(at)));
        // The ticks from 13 ms to 12.013 s: one wake-up each, none between.
        assert_eq!(wakes, 601);
        // The RTP timeout is still reported: at the first tick 3 s after the last packet.
        let silent = timed_out_at.expect("the RTP timeout is reported") - last_packet;
        assert!(
            silent >= Duration::from_secs(3) && silent < Duration::from_secs(3) + PTIME,
            "reported after {silent:?} of silence"
        );
    }

    #[test]
    fn idle_sessions_count_but_send_nothing() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let sent = run(&mut session, &mut peer, start, 400, |_| false);
        assert!(sent.is_empty());
        assert_eq!(session.stats().rtp_packets_received, 400);
    }
}
