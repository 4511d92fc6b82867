//! RTP and RTCP datagrams off a media port: RTP header parsing (a packet without extension and
//! padding must be rebuilt byte for byte by the writer), RFC 8285 extension elements, the
//! RFC 5761 demultiplexer, and one RTCP session (with RTP sequence statistics and the RFC 4733
//! DTMF receiver) fed a series of packets.
//!
//! Input: the whole input is one datagram; it is also read as a series of datagrams, each
//! preceded by its length (2 bytes, big endian), delivered 20 ms apart.
#![no_main]

use std::time::{Duration, Instant};

use callbridge::media::dtmf::DtmfReceiver;
use callbridge::media::rtcp::{RtcpConfig, RtcpSession, MAX_COMPOUND_LEN};
use callbridge::media::rtp::{self, RtpHeader, SequenceTracker, RTP_MAX_CSRCS};
use libfuzzer_sys::fuzz_target;

/// The telephone-event payload type the session negotiated.
const TELEPHONE_EVENT_PT: u8 = 101;

fuzz_target!(|data: &[u8]| {
    check_rtp(data);
    let start = Instant::now();
    let mut session = RtcpSession::new(
        RtcpConfig {
            local_ssrc: 0x1234_5678,
            cname: "callbridge@192.0.2.10".to_string(),
            clock_rate: 8000,
            min_interval: Duration::from_millis(100),
            seed: 7,
            ntp_at_start: 0xe000_0000_0000_0000,
        },
        start,
    );
    let mut tracker = SequenceTracker::new();
    let mut dtmf = DtmfReceiver::new(8000);
    let mut out = [0u8; MAX_COMPOUND_LEN];
    let mut now = start;
    let mut deliver = |packet: &[u8], now: Instant| {
        if rtp::is_rtcp(packet) {
            if let Ok(info) = session.on_rtcp(now, packet) {
                let _ = format!("{info:?}");
            }
        } else if let Ok(packet) = rtp::parse(packet) {
            session.on_rtp_received(now, packet.ssrc(), packet.sequence(), packet.timestamp());
            let _ = tracker.on_packet(packet.sequence());
            let _ = tracker.interval_fraction_lost();
            let _ = tracker.lost();
            if packet.payload_type() == TELEPHONE_EVENT_PT {
                let _ = dtmf.on_packet(
                    now,
                    packet.sequence(),
                    packet.timestamp(),
                    packet.marker(),
                    packet.payload(),
                );
            }
        }
        session.on_rtp_sent(now, 160, 160);
        if let Some(len) = session.poll_transmit(now, &mut out) {
            assert!(len <= out.len());
        }
        let _ = dtmf.poll(now);
        let _ = session.stats();
    };
    deliver(data, now);
    let mut rest = data;
    while let Some((&[hi, lo], tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        now += Duration::from_millis(20);
        deliver(packet, now);
        rest = tail;
    }
    let _ = session.write_bye(now, &mut out);
    let _ = session.remote_cname();
});

/// Parsing invariants and the rebuild of a plain packet.
fn check_rtp(data: &[u8]) {
    let Ok(packet) = rtp::parse(data) else { return };
    assert_eq!(packet.as_bytes(), data);
    assert!(packet.header_len() + packet.payload().len() + packet.padding_len() == data.len());
    let csrcs: Vec<u32> = packet.csrcs().collect();
    assert_eq!(csrcs.len(), usize::from(packet.csrc_count()));
    if let Some(extension) = packet.extension() {
        for element in extension.elements() {
            if element.is_err() {
                break;
            }
        }
        let _ = extension.element(1);
    }
    if !packet.has_extension() && !packet.padding() && csrcs.len() <= RTP_MAX_CSRCS {
        let header = RtpHeader {
            marker: packet.marker(),
            payload_type: packet.payload_type(),
            sequence: packet.sequence(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
            csrcs: &csrcs,
        };
        let mut out = vec![0u8; data.len()];
        let len = rtp::write_packet(&mut out, &header, packet.payload()).expect("room for it");
        assert_eq!(&out[..len], data, "rebuilt packet differs");
    }
}
