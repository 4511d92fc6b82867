//! Engine tests over real UDP sockets on 127.0.0.1.
//!
//! Owns: end-to-end checks of echo through each connection's media session, idle counting,
//! malformed and foreign input, RTCP, NAT latching, RTP timeouts, RFC 4733 digits, the port pool
//! and shutdown; echo (clear and SRTP), RTCP and many connections again with `io_uring_send`.
//! Must not: use any address but 127.0.0.1, or sleep for fixed times where it can wait for an
//! event or a condition instead. Each test has its own port range in 31100-31499: above the RTP
//! ranges the end-to-end tests pick (21000-30999) and below the kernel's ephemeral ports (32768+),
//! so client sockets never take them and tests can run in parallel.
//!
//! Media runs in real time: clients send PCMU frames paced every 20 ms on a fixed schedule, and
//! an Echo session plays them back after its jitter buffer's delay as its own RTP stream (its
//! SSRC, sequence numbers and timestamps). G.711 decode→encode is lossless, so the echoed
//! payloads are the caller's; after the caller stops, the jitter buffer conceals a few frames
//! (at most `jitter_max_ms` of them) and then the session goes quiet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TryRecvError, Receiver};

use super::*;
use crate::media::dtmf::DtmfSender;
use crate::media::rtp::{self, RtpHeader};
use crate::media::session::LEARN_PACKETS;
use crate::sdp::Codec;

/// How long a test waits for something that should happen within milliseconds.
const PATIENCE: Duration = Duration::from_secs(5);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The negotiated stream of the test connections: PCMU, 20 ms, telephone-event on PT 101.
const PCMU: StreamFormat = StreamFormat {
    codec: Codec::Pcmu,
    payload_type: 0,
    ptime_ms: 20,
    telephone_event_pt: Some(101),
    send: None,
    peer_opus: crate::sdp::OpusParams::RFC_DEFAULTS,
};
const PTIME: Duration = Duration::from_millis(20);
/// A PCMU frame on the wire: 12-byte RTP header and 160 bytes of payload.
const FRAME_BYTES: u64 = 172;
/// Caller frames that may be missing at the start of an echo while the jitter buffer fills.
const MAY_MISS_AT_START: usize = 3;
/// Stand-in (concealed) frames tolerated in the middle of an echo: a test thread or worker
/// delayed by a loaded machine can make the jitter buffer stretch its delay once or twice.
/// Caller frames are never allowed to go missing.
const MAY_STRETCH: usize = 2;
/// Silence after which an echo is over. The test jitter buffer conceals at most
/// `jitter_max_ms` (100 ms) after the caller's last frame, one frame per 20 ms, then sends
/// nothing.
const QUIET: Duration = Duration::from_millis(150);

/// The test caller's RTP stream.
const CALLER: Stream = Stream {
    ssrc: 0x1234_5678,
    first_sequence: 1000,
    first_timestamp: 5000,
    seed: 0,
};
/// A stream from somewhere the session must not accept media from.
const INTRUDER: Stream = Stream {
    ssrc: 0x0BAD_F00D,
    first_sequence: 40_000,
    first_timestamp: 900_000,
    seed: 0xA5,
};

/// An echo of paced PCMU: every frame comes back in our own stream, and the connection's
/// counters say so while it is open and when it closes. Workers that read each packet as it
/// arrives (the default) send each back as it comes: nothing stands in for a frame, nothing is
/// concealed. Workers that read at their tick play it out through the jitter buffer: the
/// concealed tail after the caller stopped is part of the echo.
#[test]
fn echo_plays_paced_pcmu_back_as_our_own_stream_and_reports_closed_stats() {
    for (min, receive_at_tick) in [(31_100, false), (31_110, true)] {
        check_paced_echo(min, receive_at_tick);
    }
}

fn check_paced_echo(min: u16, receive_at_tick: bool) {
    let (engine, mut events) = engine_reading(min, receive_at_tick);
    let client = client_socket();
    let endpoint = open(&engine, 1, echo_spec(&client));
    assert_eq!(endpoint.rtp.ip(), LOCALHOST);
    assert_eq!(endpoint.rtp.port() % 2, 0);

    let frames = CALLER.frames(50);
    send_paced(&client, endpoint.rtp, &frames);
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    let stand_ins = assert_echo_of(&echoes, &frames);
    let sent = echoes.len() as u64;
    if !receive_at_tick {
        assert_eq!(stand_ins, 0, "forwarded as they came");
        assert_eq!(sent, 50);
    }
    wait_until(|| {
        engine
            .stats(1)
            .is_some_and(|stats| stats.rtp_packets_received == 50 && stats.rtp_packets_sent == sent)
    });
    // RTP counts are published after every packet and exact; concealment and jitter go out
    // every 100 ms, so the listing may show them a little behind the figures at close.
    let stats = engine.stats(1).expect("connection open");
    let expected = MediaStats {
        rtp_packets_received: 50,
        rtp_bytes_received: 50 * FRAME_BYTES,
        rtp_packets_sent: sent,
        rtp_bytes_sent: sent * FRAME_BYTES,
        last_source: Some(local_address(&client)),
        concealed_frames: stats.concealed_frames,
        jitter_ms: stats.jitter_ms,
        playout_delay_ms: stats.playout_delay_ms,
        ..MediaStats::default()
    };
    assert_eq!(stats, expected);
    assert!(
        (20..=200).contains(&stats.playout_delay_ms),
        "the jitter buffer's delay, within the configured 20..=200 ms: {}",
        stats.playout_delay_ms
    );
    let first = wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::FirstPacket { .. })
    });
    assert_eq!(
        first,
        EngineEvent::FirstPacket {
            key: 1,
            source: local_address(&client)
        }
    );

    assert_eq!(engine.ports_in_use(), 2);
    engine.close_connection(1).expect("close open connection");
    let closed = wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::Closed { .. })
    });
    let EngineEvent::Closed { key: 1, stats } = closed else {
        panic!("not the close of connection 1: {closed:?}");
    };
    // The concealed tail after the caller stopped is part of the echo; nothing else is.
    let concealed = if receive_at_tick {
        1..=stand_ins as u64
    } else {
        0..=0
    };
    assert!(
        concealed.contains(&stats.concealed_frames),
        "concealed {} of {stand_ins} stand-in frames",
        stats.concealed_frames
    );
    assert!(expected.concealed_frames <= stats.concealed_frames);
    assert_eq!(
        stats,
        MediaStats {
            concealed_frames: stats.concealed_frames,
            jitter_ms: stats.jitter_ms,
            playout_delay_ms: stats.playout_delay_ms,
            ..expected
        }
    );
    assert_eq!(engine.ports_in_use(), 0);
    assert_eq!(engine.stats(1), None);
    engine.shutdown();
}

#[test]
fn with_io_uring_sends_the_echo_is_the_same_and_every_packet_goes_through_the_ring() {
    let (sender, mut events) = mpsc::channel(256);
    let engine = Engine::start(io_uring_config(31_208, 31_213, 1), sender).expect("valid config");
    let client = client_socket();
    let endpoint = open(&engine, 1, echo_spec(&client));

    let frames = CALLER.frames(50);
    send_paced(&client, endpoint.rtp, &frames);
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames);
    let sent = echoes.len() as u64;
    let stats = wait_for_stats(&engine, 1, |stats| {
        stats.rtp_packets_received == 50 && stats.rtp_packets_sent == sent
    });
    assert_eq!(stats.rtp_bytes_sent, sent * FRAME_BYTES);
    // Counted as the completions come back, at the end of the worker's turn; the RTCP count is
    // published every 100 ms, so it is read afresh each time.
    wait_until(|| {
        engine
            .stats(1)
            .is_some_and(|stats| engine.io_uring_sends() == sent + stats.rtcp_packets_sent)
    });

    engine.close_connection(1).expect("close open connection");
    let closed = wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::Closed { .. })
    });
    assert!(
        matches!(closed, EngineEvent::Closed { key: 1, ref stats } if stats.rtp_packets_sent == sent)
    );
    assert_eq!(engine.ports_in_use(), 0);
    engine.shutdown();
}

#[test]
fn with_io_uring_receives_every_packet_comes_through_the_ring_and_a_closed_pairs_sockets_serve_the_next(
) {
    let (sender, mut events) = mpsc::channel(256);
    // One port pair: the second connection can only open on the first one's ports.
    let engine =
        Engine::start(uring_receive_config(32_200, 32_201, 1), sender).expect("valid config");
    let stale = client_socket();
    for round in 0..2u64 {
        let client = client_socket();
        let endpoint = open(&engine, round, echo_spec(&client));
        assert_eq!(endpoint.rtp.port(), 32_200);
        assert_eq!(engine.ports_idle(), 0, "the idle pair was taken");
        let before = engine.io_uring_receives();
        let frames = CALLER.frames(40);
        send_paced(&client, endpoint.rtp, &frames);
        // The second connection hears its own caller only, not what reached the idle pair.
        let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
        assert_echo_of(&echoes, &frames);
        wait_until(|| {
            engine
                .stats(round)
                .is_some_and(|stats| stats.rtp_packets_received == 40)
        });
        // Counted once per worker turn: the ring let go of the first connection's receives,
        // so the reused sockets are read for the second.
        wait_until(|| engine.io_uring_receives() == before + 40);
        engine
            .close_connection(round)
            .expect("close open connection");
        let closed = wait_for_event(&mut events, |event| {
            matches!(event, EngineEvent::Closed { .. })
        });
        assert!(matches!(closed, EngineEvent::Closed { key, .. } if key == round));
        assert_eq!(engine.ports_in_use(), 0);
        assert_eq!(engine.ports_idle(), 2, "the pair's sockets stay bound");
        // Late packets to the idle pair are read away when it is reused.
        for frame in CALLER.frames(3) {
            stale.send_to(&frame, endpoint.rtp).expect("send stale");
        }
    }
    // Unused for `IDLE_MAX`, the idle sockets close (on the next look at the pool).
    wait_until(|| engine.ports_idle() == 0);
    let probe =
        std::net::UdpSocket::bind((LOCALHOST, 32_200)).expect("the idle pair's port is free");
    drop(probe);
    engine.shutdown();
}

#[test]
fn with_io_uring_receives_an_srtp_echo_decrypts_with_our_key_and_replays_the_caller() {
    let (sender, _events) = mpsc::channel(256);
    let engine =
        Engine::start(uring_receive_config(32_210, 32_215, 1), sender).expect("valid config");
    let (frames, _) = check_srtp_echo(&engine);
    wait_until(|| engine.io_uring_receives() == frames);
    engine.shutdown();
}

#[test]
fn with_io_uring_receives_connections_on_two_workers_echo_and_shut_down() {
    let (sender, events) = mpsc::channel(256);
    let engine =
        Engine::start(uring_receive_config(32_216, 32_229, 2), sender).expect("valid config");
    check_many_connections(engine, events, 6, Ring::Receives);
}

#[test]
fn with_io_uring_sends_an_srtp_echo_decrypts_with_our_key_and_replays_the_caller() {
    let (sender, _events) = mpsc::channel(256);
    let engine = Engine::start(io_uring_config(31_214, 31_219, 1), sender).expect("valid config");
    let (_, echoes) = check_srtp_echo(&engine);
    wait_until(|| engine.io_uring_sends() >= echoes);
    engine.shutdown();
}

/// Opens an SRTP echo (AES_CM_128_HMAC_SHA1_80, distinct keys each way) as connection 1, sends
/// 30 protected frames and checks every echo decrypts with our outbound key and carries the
/// caller's audio; returns how many frames were sent and how many echoes came back.
fn check_srtp_echo(engine: &Engine) -> (u64, u64) {
    use crate::media::srtp::{SrtpContext, SrtpProfile};
    let profile = SrtpProfile::AesCm128HmacSha1_80;
    let (their_key, their_salt) = ([0x11u8; 16], [0x22u8; 14]);
    let (our_key, our_salt) = ([0x33u8; 16], [0x44u8; 14]);
    let client = client_socket();
    let spec = MediaSpec {
        srtp: Some(SrtpKeys {
            profile,
            inbound_key: their_key.to_vec(),
            inbound_salt: their_salt.to_vec(),
            outbound_key: our_key.to_vec(),
            outbound_salt: our_salt.to_vec(),
        }),
        ..echo_spec(&client)
    };
    let endpoint = open(engine, 1, spec);

    let frames = CALLER.frames(30);
    let mut protect = SrtpContext::new(profile, &their_key, &their_salt).expect("test keys");
    let protected: Vec<Vec<u8>> = frames
        .iter()
        .map(|frame| {
            let mut buffer = [0u8; 256];
            buffer[..frame.len()].copy_from_slice(frame);
            let length = protect
                .protect_rtp(&mut buffer, frame.len())
                .expect("frame fits with its tag");
            buffer[..length].to_vec()
        })
        .collect();
    send_paced(&client, endpoint.rtp, &protected);

    let mut unprotect = SrtpContext::new(profile, &our_key, &our_salt).expect("test keys");
    let last_payload = &frames.last().expect("frames sent")[12..];
    let mut echoes = Vec::new();
    let mut buffer = [0u8; 2048];
    loop {
        let (length, from) = match client.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error) if is_timeout(&error) => break,
            Err(error) => panic!("client receive failed: {error}"),
        };
        assert_eq!(from, endpoint.rtp);
        // 172 bytes of RTP and a 10-byte tag: the kernel sent the whole slot's packet.
        assert_eq!(length, 182, "SRTP echo has the wrong length");
        let clear = unprotect
            .unprotect_rtp(&mut buffer, length)
            .expect("the echo authenticates and decrypts with our outbound key");
        let echo = echo_of(&buffer[..clear]);
        if echo.payload == last_payload {
            client
                .set_read_timeout(Some(QUIET))
                .expect("set read timeout");
        }
        echoes.push(echo);
    }
    assert_echo_of(&echoes, &frames);
    assert_eq!(engine.stats(1).expect("open").srtp_rejected, 0);
    (frames.len() as u64, echoes.len() as u64)
}

#[test]
fn idle_counts_but_sends_nothing_back() {
    let (engine, _events) = start_engine(31_120, 31_139, 1);
    let client = client_socket();
    let endpoint = open(&engine, 2, MediaSpec::idle(Some(local_address(&client))));
    for packet in CALLER.frames(5) {
        client
            .send_to(&packet, endpoint.rtp)
            .expect("send to engine");
    }
    wait_until(|| {
        engine
            .stats(2)
            .is_some_and(|stats| stats.rtp_packets_received == 5)
    });
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    assert!(receive(&client).is_none(), "idle connection sent media");
    let stats = engine.stats(2).expect("connection open");
    assert_eq!(stats.rtp_bytes_received, 5 * FRAME_BYTES);
    assert_eq!(stats.rtp_packets_sent, 0);
    assert_eq!(stats.rtcp_packets_sent, 0);
    assert_eq!(stats.malformed_packets, 0);
    assert_eq!(stats.foreign_source_dropped, 0);
    assert_eq!(stats.last_source, Some(local_address(&client)));
    engine.shutdown();
}

#[test]
fn garbage_is_counted_malformed_and_not_echoed() {
    let (engine, _events) = start_engine(31_140, 31_159, 1);
    let client = client_socket();
    let endpoint = open(&engine, 3, echo_spec(&client));
    client
        .send_to(&[0x00, 0x01, 0x02], endpoint.rtp)
        .expect("send garbage");
    // RTP-sized, but version 1.
    client
        .send_to(&[0x40; 20], endpoint.rtp)
        .expect("send garbage");
    client
        .send_to(&[0x00, 0x01, 0x02], rtcp_address(endpoint))
        .expect("send garbage to RTCP");
    wait_until(|| {
        engine
            .stats(3)
            .is_some_and(|stats| stats.malformed_packets == 3)
    });
    client
        .set_read_timeout(Some(QUIET))
        .expect("set read timeout");
    assert!(receive(&client).is_none(), "garbage was answered");
    client
        .set_read_timeout(Some(PATIENCE))
        .expect("set read timeout");

    // Valid frames after the garbage are echoed, and only they.
    let frames = CALLER.frames(10);
    send_paced(&client, endpoint.rtp, &frames);
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames);
    let sent = echoes.len() as u64;
    let stats = wait_for_stats(&engine, 3, |stats| stats.rtp_packets_sent == sent);
    assert_eq!(stats.rtp_packets_received, 10);
    assert_eq!(stats.malformed_packets, 3);
    assert_eq!(stats.rtcp_packets_received, 0);
    engine.shutdown();
}

#[test]
fn media_from_a_foreign_source_is_dropped_and_counted() {
    let (engine, _events) = start_engine(31_420, 31_429, 1);
    let client = client_socket();
    let intruder = client_socket();
    let endpoint = open(&engine, 11, echo_spec(&client));

    let frames = CALLER.frames(20);
    let foreign = INTRUDER.frames(20);
    pace(frames.len(), |index| {
        client
            .send_to(&frames[index], endpoint.rtp)
            .expect("send to engine");
        intruder
            .send_to(&foreign[index], endpoint.rtp)
            .expect("send to engine");
    });
    // The caller's echo is intact: no intruder frame got into it.
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames);
    let stats = wait_for_stats(&engine, 11, |stats| stats.foreign_source_dropped == 20);
    assert_eq!(stats.rtp_packets_received, 20);
    assert_eq!(stats.rtp_bytes_received, 20 * FRAME_BYTES);
    assert_eq!(stats.last_source, Some(local_address(&client)));
    intruder
        .set_read_timeout(Some(QUIET))
        .expect("set read timeout");
    assert!(receive(&intruder).is_none(), "media sent to the intruder");
    engine.shutdown();
}

#[test]
fn rtcp_reports_are_counted_and_the_session_sends_its_own() {
    check_rtcp_reports(EngineConfig {
        rtp_port_min: 31_160,
        rtp_port_max: 31_179,
        ..test_config(1)
    });
}

#[test]
fn with_io_uring_sends_rtcp_reports_still_go_out_from_the_rtcp_port() {
    check_rtcp_reports(io_uring_config(31_270, 31_279, 1));
}

/// Two RTCP reports in (on the RTCP port and multiplexed on RTP), echo, and the session's own
/// reports out from its RTCP port, on an engine with `config` (reports every 200 ms).
fn check_rtcp_reports(config: EngineConfig) {
    let (sender, _events) = mpsc::channel(256);
    let config = EngineConfig {
        session: SessionDefaults {
            rtcp_interval: Duration::from_millis(200),
            ..config.session
        },
        ..config
    };
    let engine = Engine::start(config, sender).expect("test config is valid");
    let client = client_socket();
    let client_rtcp = client_socket();
    let spec = MediaSpec {
        remote_rtcp: Some(local_address(&client_rtcp)),
        ..echo_spec(&client)
    };
    let endpoint = open(&engine, 4, spec);

    // Empty receiver report: V=2, RC=0, PT=201, length=1, SSRC.
    let report = [0x80, 201, 0x00, 0x01, 0xDE, 0xAD, 0xBE, 0xEF];
    client_rtcp
        .send_to(&report, rtcp_address(endpoint))
        .expect("send RTCP");
    wait_until(|| {
        engine
            .stats(4)
            .is_some_and(|stats| stats.rtcp_packets_received == 1)
    });
    // Multiplexed on the RTP port, it is still RTCP.
    client.send_to(&report, endpoint.rtp).expect("send RTCP");
    let stats = wait_for_stats(&engine, 4, |stats| stats.rtcp_packets_received == 2);
    assert_eq!(stats.rtp_packets_received, 0);
    assert_eq!(stats.malformed_packets, 0);

    let frames = CALLER.frames(15);
    send_paced(&client, endpoint.rtp, &frames);
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames);
    let our_ssrc = echoes[0].ssrc;

    // Reports are not echoes: they come from our RTCP port, about our SSRC, and once we have
    // sent RTP they are sender reports.
    let deadline = Instant::now() + PATIENCE;
    let mut buffer = [0u8; 1500];
    loop {
        let (length, from) = client_rtcp
            .recv_from(&mut buffer)
            .expect("RTCP report from the session");
        let datagram = &buffer[..length];
        assert_eq!(from, rtcp_address(endpoint));
        assert!(rtp::is_rtcp(datagram), "not RTCP: {datagram:02x?}");
        assert_ne!(datagram, &report[..], "RTCP was echoed");
        assert!(
            matches!(datagram[1], 200 | 201),
            "not a report: {datagram:02x?}"
        );
        let ssrc = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        assert_eq!(ssrc, our_ssrc, "report not about our stream");
        if datagram[1] == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no sender report in {PATIENCE:?}"
        );
    }
    // The sender report just read is counted within a publication interval.
    let stats = wait_for_stats(&engine, 4, |stats| stats.rtcp_packets_sent >= 1);
    assert_eq!(stats.rtcp_packets_received, 2);
    assert_eq!(stats.rtp_packets_received, 15);
    engine.shutdown();
}

#[test]
fn update_from_idle_to_echo_takes_effect() {
    let (engine, _events) = start_engine(31_180, 31_199, 1);
    let client = client_socket();
    let endpoint = open(&engine, 5, MediaSpec::idle(Some(local_address(&client))));
    let frames = CALLER.frames(16);
    client
        .send_to(&frames[0], endpoint.rtp)
        .expect("send to engine");
    wait_until(|| {
        engine
            .stats(5)
            .is_some_and(|stats| stats.rtp_packets_received == 1)
    });
    assert_eq!(
        engine.stats(5).expect("connection open").rtp_packets_sent,
        0
    );

    engine
        .update_connection(5, echo_spec(&client))
        .expect("update open connection");
    // The update is queued before the frames are sent, and the worker applies commands first.
    send_paced(&client, endpoint.rtp, &frames[1..]);
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames[1..]);
    let sent = echoes.len() as u64;
    // Counters carry over the rebuilt session.
    wait_until(|| {
        engine
            .stats(5)
            .is_some_and(|stats| stats.rtp_packets_received == 16 && stats.rtp_packets_sent == sent)
    });
    engine.shutdown();
}

#[test]
fn update_to_a_new_peer_moves_the_echo_without_restarting_the_stream() {
    let (engine, _events) = start_engine(31_460, 31_469, 1);
    let old_peer = client_socket();
    let new_peer = client_socket();
    let endpoint = open(&engine, 15, echo_spec(&old_peer));
    let frames = CALLER.frames(10);
    send_paced(&old_peer, endpoint.rtp, &frames);
    let before = collect_echoes(&old_peer, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&before, &frames);

    // Same mode and format, new address (a re-INVITE): the session is re-targeted, not rebuilt.
    engine
        .update_connection(15, echo_spec(&new_peer))
        .expect("update open connection");
    let moved = Stream {
        ssrc: 0x2222_0001,
        first_sequence: 30_000,
        first_timestamp: 3_000_000,
        seed: 0x3C,
    };
    let frames = moved.frames(10);
    let stale = INTRUDER.frames(10);
    pace(frames.len(), |index| {
        new_peer
            .send_to(&frames[index], endpoint.rtp)
            .expect("send to engine");
        old_peer
            .send_to(&stale[index], endpoint.rtp)
            .expect("send to engine");
    });
    let after = collect_echoes(&new_peer, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&after, &frames);
    let (last, first) = (before.last().expect("echoed"), &after[0]);
    assert_eq!(first.ssrc, last.ssrc, "stream restarted");
    assert_eq!(
        first.sequence,
        last.sequence.wrapping_add(1),
        "sequence restarted"
    );
    let stats = wait_for_stats(&engine, 15, |stats| stats.foreign_source_dropped == 10);
    assert_eq!(stats.rtp_packets_received, 20);
    old_peer
        .set_read_timeout(Some(QUIET))
        .expect("set read timeout");
    assert!(
        receive(&old_peer).is_none(),
        "media still sent to the old peer"
    );
    engine.shutdown();
}

#[test]
fn pool_runs_out_and_a_closed_pair_comes_back() {
    let (engine, mut events) = start_engine(31_200, 31_207, 1);
    assert_eq!(engine.ports_total(), 8);
    let mut ports = Vec::new();
    for key in 0..4 {
        ports.push(open(&engine, key, MediaSpec::idle(None)).rtp.port());
    }
    assert_eq!(ports, [31_200, 31_202, 31_204, 31_206]);
    assert_eq!(engine.ports_in_use(), 8);
    let refused = engine.open_connection(request(4, MediaSpec::idle(None)));
    assert!(
        matches!(refused, Err(EngineError::NoPortsAvailable)),
        "{refused:?}"
    );

    engine.close_connection(1).expect("close open connection");
    wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::Closed { key: 1, .. })
    });
    assert_eq!(engine.ports_in_use(), 6);
    assert_eq!(open(&engine, 4, MediaSpec::idle(None)).rtp.port(), 31_202);
    engine.shutdown();
}

#[test]
fn pair_held_by_a_foreign_socket_is_skipped() {
    let (engine, _events) = start_engine(31_220, 31_227, 1);
    // Another process holds the RTCP port of the second pair.
    let foreign = UdpSocket::bind((LOCALHOST, 31_223)).expect("bind foreign socket");
    let mut ports = Vec::new();
    for key in 0..3 {
        ports.push(open(&engine, key, MediaSpec::idle(None)).rtp.port());
    }
    assert_eq!(ports, [31_220, 31_224, 31_226]);
    let refused = engine.open_connection(request(3, MediaSpec::idle(None)));
    assert!(
        matches!(refused, Err(EngineError::NoPortsAvailable)),
        "{refused:?}"
    );
    assert_eq!(engine.ports_in_use(), 6);

    drop(foreign);
    assert_eq!(open(&engine, 3, MediaSpec::idle(None)).rtp.port(), 31_222);
    engine.shutdown();
}

#[test]
fn many_connections_across_two_workers_echo_and_shut_down() {
    let (engine, events) = start_engine(31_300, 31_399, 2);
    check_many_connections(engine, events, 40, Ring::None);
}

#[test]
fn with_io_uring_sends_connections_on_two_workers_echo_and_shut_down() {
    let (sender, events) = mpsc::channel(256);
    let engine = Engine::start(io_uring_config(31_228, 31_239, 2), sender).expect("valid config");
    check_many_connections(engine, events, 6, Ring::Sends);
}

/// Which io_uring the engine under test uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ring {
    None,
    Sends,
    Receives,
}

/// Opens `connections` echo connections (spread over both workers of `engine`), echoes eight
/// paced frames on each, then shuts the engine down and checks every `Closed`'s counters.
/// `ring`: every echo must have gone out (`Sends`) or every frame come in (`Receives`) through
/// the workers' io_uring.
fn check_many_connections(
    engine: Engine,
    mut events: Receiver<EngineEvent>,
    connections: u64,
    ring: Ring,
) {
    const FRAMES: u16 = 8;
    let calls: Vec<(MediaEndpoint, UdpSocket)> = (0..connections)
        .map(|key| {
            let client = client_socket();
            (open(&engine, key, echo_spec(&client)), client)
        })
        .collect();
    assert!(calls.iter().any(|(endpoint, _)| endpoint.worker == 0));
    assert!(calls.iter().any(|(endpoint, _)| endpoint.worker == 1));
    assert_eq!(engine.ports_in_use(), 2 * connections as usize);

    let frames = CALLER.frames(FRAMES);
    pace(frames.len(), |index| {
        for (endpoint, client) in &calls {
            client
                .send_to(&frames[index], endpoint.rtp)
                .expect("send to engine");
        }
    });
    let mut echoed = Vec::new();
    for (endpoint, client) in &calls {
        let echoes = receive_echoes_until(client, endpoint.rtp, frames.last().expect("sent"));
        assert_echo_of(&echoes, &frames);
        echoed.push(echoes.len() as u64);
    }
    // Each connection heard only its own client.
    for (key, (endpoint, client)) in calls.iter().enumerate() {
        let stats = engine.stats(key as u64).expect("connection open");
        assert_eq!(
            stats.last_source,
            Some(local_address(client)),
            "{}",
            endpoint.rtp
        );
    }

    if ring == Ring::Sends {
        let echoed_total: u64 = echoed.iter().sum();
        wait_until(|| engine.io_uring_sends() >= echoed_total);
    } else {
        assert_eq!(engine.io_uring_sends(), 0);
    }
    if ring == Ring::Receives {
        wait_until(|| engine.io_uring_receives() == connections * u64::from(FRAMES));
    } else {
        assert_eq!(engine.io_uring_receives(), 0);
    }
    engine.shutdown();
    let mut closed = 0;
    while closed < connections {
        if let EngineEvent::Closed { key, stats } = wait_for_event(&mut events, |event| {
            matches!(event, EngineEvent::Closed { .. })
        }) {
            assert_eq!(stats.rtp_packets_received, u64::from(FRAMES), "key {key}");
            // The concealed tail may still have been under way at shutdown.
            assert!(
                stats.rtp_packets_sent >= echoed[key as usize],
                "key {key}: sent {} < echoed {}",
                stats.rtp_packets_sent,
                echoed[key as usize]
            );
            closed += 1;
        }
    }
}

#[test]
fn duplicate_and_unknown_keys_are_refused() {
    let (engine, _events) = start_engine(31_240, 31_259, 1);
    open(&engine, 9, MediaSpec::idle(None));
    let client = client_socket();
    let duplicate = engine.open_connection(request(9, echo_spec(&client)));
    assert!(
        matches!(duplicate, Err(EngineError::DuplicateConnection)),
        "{duplicate:?}"
    );
    assert_eq!(engine.ports_in_use(), 2, "refused open kept a pair");
    assert!(matches!(
        engine.update_connection(10, echo_spec(&client)),
        Err(EngineError::UnknownConnection)
    ));
    assert!(matches!(
        engine.close_connection(10),
        Err(EngineError::UnknownConnection)
    ));
    assert_eq!(engine.stats(10), None);
    engine.shutdown();
}

#[test]
fn invalid_port_ranges_are_refused() {
    for (min, max) in [(31_270, 31_270), (31_271, 31_270), (0, 31_270)] {
        let (sender, _events) = mpsc::channel(4);
        let config = EngineConfig {
            rtp_port_min: min,
            rtp_port_max: max,
            ..test_config(1)
        };
        let started = Engine::start(config, sender);
        assert!(
            matches!(started, Err(EngineError::InvalidConfig(_))),
            "{min}-{max}: {:?}",
            started.err()
        );
    }
}

#[test]
fn silence_on_the_wire_raises_rtp_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let (sender, mut events) = mpsc::channel(256);
    let config = EngineConfig {
        rtp_port_min: 31_430,
        rtp_port_max: 31_439,
        session: SessionDefaults {
            rtp_timeout: Some(TIMEOUT),
            ..test_session()
        },
        ..test_config(1)
    };
    let engine = Engine::start(config, sender).expect("test config is valid");
    let client = client_socket();
    let endpoint = open(
        &engine,
        12,
        MediaSpec {
            expects_rtp: true,
            ..MediaSpec::idle(Some(local_address(&client)))
        },
    );
    // A held connection (the peer is not expected to send) never times out.
    let held_client = client_socket();
    open(
        &engine,
        13,
        MediaSpec::idle(Some(local_address(&held_client))),
    );

    // Twice the timeout with a packet every 50 ms: no timeout while media flows.
    let frames = CALLER.frames(12);
    let mut last_sent = Instant::now();
    let start = Instant::now();
    for (index, frame) in frames.iter().enumerate() {
        sleep_until(start + Duration::from_millis(50) * index as u32);
        // Taken before the send: the engine cannot have heard the frame earlier.
        last_sent = Instant::now();
        client.send_to(frame, endpoint.rtp).expect("send to engine");
    }
    wait_until(|| {
        engine
            .stats(12)
            .is_some_and(|stats| stats.rtp_packets_received == 12)
    });
    loop {
        match events.try_recv() {
            Ok(EngineEvent::RtpTimeout { key }) => {
                panic!("RTP timeout on {key} while media flowed")
            }
            Ok(_) => {}
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => panic!("event channel closed"),
        }
    }

    let timeout = wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::RtpTimeout { .. })
    });
    assert_eq!(timeout, EngineEvent::RtpTimeout { key: 12 });
    assert!(
        last_sent.elapsed() >= TIMEOUT,
        "timeout after {:?} of silence",
        last_sent.elapsed()
    );
    engine.shutdown();
}

#[test]
fn rfc4733_digits_become_events() {
    let (engine, mut events) = start_engine(31_440, 31_449, 1);
    let client = client_socket();
    // A connection that only listens hears digits too.
    let spec = MediaSpec {
        mode: MediaMode::Idle,
        ..echo_spec(&client)
    };
    let endpoint = open(&engine, 13, spec);

    let mut dtmf = DtmfSender::new(8000, 20);
    dtmf.queue("42#", 100, 50).expect("valid digits");
    let mut sequence = CALLER.first_sequence;
    let start = Instant::now();
    let mut tick = 0u32;
    while !dtmf.is_idle() {
        let now = start + PTIME * tick;
        sleep_until(now);
        let timestamp = CALLER.first_timestamp + 160 * tick;
        let mut payload = [0u8; 4];
        if let Some(event) = dtmf.poll_packet(now, timestamp, &mut payload) {
            let header = RtpHeader {
                marker: event.marker,
                payload_type: 101,
                sequence,
                timestamp: event.timestamp,
                ssrc: CALLER.ssrc,
                csrcs: &[],
            };
            let mut packet = [0u8; 16];
            let length = rtp::write_packet(&mut packet, &header, &payload).expect("fits");
            client
                .send_to(&packet[..length], endpoint.rtp)
                .expect("send to engine");
            sequence = sequence.wrapping_add(1);
        }
        tick += 1;
        assert!(tick < 100, "DTMF sender never finished");
    }

    let mut digits = Vec::new();
    while digits.len() < 3 {
        if let EngineEvent::Digit {
            key,
            digit,
            duration_ms,
        } = wait_for_event(&mut events, |event| {
            matches!(event, EngineEvent::Digit { .. })
        }) {
            assert_eq!(key, 13);
            digits.push((digit, duration_ms));
        }
    }
    assert_eq!(digits, [('4', 100), ('2', 100), ('#', 100)]);
    wait_until(|| {
        engine
            .stats(13)
            .is_some_and(|stats| stats.digits_received == 3)
    });
    assert_eq!(
        engine.stats(13).expect("connection open").malformed_packets,
        0
    );
    engine.shutdown();
}

#[test]
fn latching_follows_the_first_source_and_ignores_later_ones() {
    let (sender, mut events) = mpsc::channel(256);
    let config = EngineConfig {
        rtp_port_min: 31_450,
        rtp_port_max: 31_459,
        session: SessionDefaults {
            rtp_source: RtpSource::Learn,
            ..test_session()
        },
        ..test_config(1)
    };
    let engine = Engine::start(config, sender).expect("test config is valid");
    // The address the peer announced (its private address behind a NAT): nothing comes from it.
    let announced = client_socket();
    let client = client_socket();
    let intruder = client_socket();
    let endpoint = open(&engine, 14, echo_spec(&announced));

    let frames = CALLER.frames(15);
    let foreign = INTRUDER.frames(15);
    pace(frames.len(), |index| {
        client
            .send_to(&frames[index], endpoint.rtp)
            .expect("send to engine");
        if index > 0 {
            intruder
                .send_to(&foreign[index], endpoint.rtp)
                .expect("send to engine");
        }
    });
    let latched = wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::Latched { .. })
    });
    assert_eq!(
        latched,
        EngineEvent::Latched {
            key: 14,
            source: local_address(&client)
        }
    );
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames);
    // Both are learned from, one packet each turn; the client, a turn ahead, is first to
    // reach LEARN_PACKETS in sequence, when the intruder has sent one fewer. Learning packets
    // are neither played nor counted; the intruder's after that are foreign.
    let learning = u64::from(LEARN_PACKETS - 1);
    let stats = wait_for_stats(&engine, 14, |stats| {
        stats.foreign_source_dropped == 14 - (learning - 1)
    });
    assert_eq!(stats.rtp_packets_received, 15 - learning);
    assert_eq!(stats.last_source, Some(local_address(&client)));
    for socket in [&announced, &intruder] {
        socket
            .set_read_timeout(Some(QUIET))
            .expect("set read timeout");
        assert!(receive(socket).is_none(), "media went to the wrong place");
    }
    engine.shutdown();
}

#[test]
fn engine_handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

/// Session settings of the test engines: a jitter buffer deep enough (60 ms) that a test
/// thread paced by `sleep` on a loaded machine still delivers every frame in time, a short
/// concealment tail (100 ms), and no RTCP reports unless a test asks for them.
fn test_session() -> SessionDefaults {
    SessionDefaults {
        rtp_source: RtpSource::Strict,
        rtp_timeout: None,
        jitter_min_ms: 60,
        jitter_max_ms: 100,
        rtcp_interval: Duration::from_secs(3600),
        inband_dtmf: false,
        silence_threshold_dbfs: -40.0,
    }
}

fn test_config(workers: usize) -> EngineConfig {
    EngineConfig {
        workers,
        bind_ip: LOCALHOST,
        rtp_port_min: 31_100,
        rtp_port_max: 32_099,
        dscp_tos: 0xB8,
        recv_buffer: 0,
        send_buffer: 0,
        session: test_session(),
        socket_priority: None,
        threads: super::tuning::ThreadTuning::default(),
    }
}

/// The test engine with `io_uring_send` on, ports `min..=max`.
fn io_uring_config(min: u16, max: u16, workers: usize) -> EngineConfig {
    EngineConfig {
        rtp_port_min: min,
        rtp_port_max: max,
        threads: super::tuning::ThreadTuning {
            io_uring_send: true,
            ..super::tuning::ThreadTuning::default()
        },
        ..test_config(workers)
    }
}

/// The test engine reading at the tick through io_uring (`io_uring_receive`), ports `min..=max`.
fn uring_receive_config(min: u16, max: u16, workers: usize) -> EngineConfig {
    EngineConfig {
        rtp_port_min: min,
        rtp_port_max: max,
        threads: super::tuning::ThreadTuning {
            receive_at_tick: true,
            io_uring_receive: true,
            ..super::tuning::ThreadTuning::default()
        },
        ..test_config(workers)
    }
}

fn start_engine(min: u16, max: u16, workers: usize) -> (Engine, Receiver<EngineEvent>) {
    let (sender, events) = mpsc::channel(256);
    let config = EngineConfig {
        rtp_port_min: min,
        rtp_port_max: max,
        ..test_config(workers)
    };
    (
        Engine::start(config, sender).expect("test config is valid"),
        events,
    )
}

/// A one-worker test engine on ports `min..min + 10` that reads each packet as it arrives
/// (the default) or at its tick (`receive_at_tick`).
fn engine_reading(min: u16, receive_at_tick: bool) -> (Engine, Receiver<EngineEvent>) {
    let (sender, events) = mpsc::channel(256);
    let config = EngineConfig {
        rtp_port_min: min,
        rtp_port_max: min + 9,
        threads: super::tuning::ThreadTuning {
            receive_at_tick,
            ..super::tuning::ThreadTuning::default()
        },
        ..test_config(1)
    };
    (
        Engine::start(config, sender).expect("test config is valid"),
        events,
    )
}

/// Echo of PCMU with `client` as the negotiated RTP address, no RTCP address.
fn echo_spec(client: &UdpSocket) -> MediaSpec {
    MediaSpec {
        mode: MediaMode::Echo,
        format: Some(PCMU),
        remote_rtp: Some(local_address(client)),
        remote_rtcp: None,
        srtp: None,
        expects_rtp: true,
        source: None,
    }
}

fn request(key: ConnectionKey, media: MediaSpec) -> OpenConnection {
    OpenConnection { key, media }
}

fn open(engine: &Engine, key: ConnectionKey, media: MediaSpec) -> MediaEndpoint {
    engine
        .open_connection(request(key, media))
        .expect("test range has a free pair")
}

fn rtcp_address(endpoint: MediaEndpoint) -> SocketAddr {
    SocketAddr::new(endpoint.rtp.ip(), endpoint.rtp.port() + 1)
}

/// A sender's PCMU stream: frame `i` has sequence `first_sequence + i`, timestamp
/// `first_timestamp + 160 i`, the marker bit on frame 0, and a payload unique to (`seed`, `i`).
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    first_sequence: u16,
    first_timestamp: u32,
    seed: u8,
}

impl Stream {
    fn frame(&self, index: u16) -> Vec<u8> {
        self.packet(index, &self.payload(index))
    }

    /// The stream's `index`-th PCMU packet (20 ms) carrying `payload`.
    fn packet(&self, index: u16, payload: &[u8; 160]) -> Vec<u8> {
        let header = RtpHeader {
            marker: index == 0,
            payload_type: 0,
            sequence: self.first_sequence.wrapping_add(index),
            timestamp: self.first_timestamp.wrapping_add(160 * u32::from(index)),
            ssrc: self.ssrc,
            csrcs: &[],
        };
        let mut packet = [0u8; 172];
        let length = rtp::write_packet(&mut packet, &header, payload).expect("frame fits");
        packet[..length].to_vec()
    }

    fn frames(&self, count: u16) -> Vec<Vec<u8>> {
        (0..count).map(|index| self.frame(index)).collect()
    }

    /// 160 μ-law codes, different for each frame (37 is odd, so no two of 256 frames share a
    /// first byte), and never 0x7F: μ-law "negative zero" is the one code that decode→encode
    /// does not give back.
    fn payload(&self, index: u16) -> [u8; 160] {
        let mut payload = [0u8; 160];
        for (position, code) in (0u16..).zip(payload.iter_mut()) {
            let value = index
                .wrapping_mul(37)
                .wrapping_add(position.wrapping_mul(11));
            // Truncation keeps the low byte: the code cycles through all 256 values.
            *code = (value as u8) ^ self.seed;
            if *code == 0x7F {
                *code = 0x7E;
            }
        }
        payload
    }
}

/// Calls `each(i)` for `i` in `0..count`, the `i`-th at `i` × 20 ms from now.
fn pace(count: usize, mut each: impl FnMut(usize)) {
    let start = Instant::now();
    for index in 0..count {
        sleep_until(start + PTIME * index as u32);
        each(index);
    }
}

fn send_paced(client: &UdpSocket, to: SocketAddr, frames: &[Vec<u8>]) {
    pace(frames.len(), |index| {
        client.send_to(&frames[index], to).expect("send to engine");
    });
}

fn sleep_until(when: Instant) {
    if let Some(wait) = when.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// One echoed RTP packet.
#[derive(Debug)]
struct Echo {
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

/// Receives echoes from `engine_rtp` until one carries the payload of `last_frame`.
fn receive_echoes_until(
    client: &UdpSocket,
    engine_rtp: SocketAddr,
    last_frame: &[u8],
) -> Vec<Echo> {
    let last_payload = &last_frame[12..];
    let deadline = Instant::now() + PATIENCE;
    let mut echoes = Vec::new();
    loop {
        let echo = receive_echo(client, engine_rtp).expect("echo of the last frame");
        let done = echo.payload == last_payload;
        echoes.push(echo);
        if done {
            return echoes;
        }
        assert!(
            Instant::now() < deadline,
            "last frame not echoed in {PATIENCE:?}"
        );
    }
}

/// The whole echo of a stream ending with `last_frame`: up to its echo, then the concealed
/// tail until the session has been quiet for `QUIET`.
fn collect_echoes(client: &UdpSocket, engine_rtp: SocketAddr, last_frame: &[u8]) -> Vec<Echo> {
    let mut echoes = receive_echoes_until(client, engine_rtp, last_frame);
    let deadline = Instant::now() + PATIENCE;
    client
        .set_read_timeout(Some(QUIET))
        .expect("set read timeout");
    while let Some(echo) = receive_echo(client, engine_rtp) {
        echoes.push(echo);
        assert!(
            Instant::now() < deadline,
            "echo did not stop after the caller did"
        );
    }
    client
        .set_read_timeout(Some(PATIENCE))
        .expect("set read timeout");
    echoes
}

/// The next RTP packet from `engine_rtp`, or `None` on timeout.
fn receive_echo(client: &UdpSocket, engine_rtp: SocketAddr) -> Option<Echo> {
    let mut buffer = [0u8; 2048];
    let (length, from) = match client.recv_from(&mut buffer) {
        Ok(received) => received,
        Err(error) if is_timeout(&error) => return None,
        Err(error) => panic!("client receive failed: {error}"),
    };
    assert_eq!(
        from, engine_rtp,
        "echo not sent from the connection's RTP port"
    );
    Some(echo_of(&buffer[..length]))
}

/// The echo a (clear) RTP packet is.
fn echo_of(datagram: &[u8]) -> Echo {
    let packet = rtp::parse(datagram).expect("echo is an RTP packet");
    Echo {
        marker: packet.marker(),
        payload_type: packet.payload_type(),
        sequence: packet.sequence(),
        timestamp: packet.timestamp(),
        ssrc: packet.ssrc(),
        payload: packet.payload().to_vec(),
    }
}

/// Checks that `echoes` are the session's own PCMU stream playing `frames` back: one SSRC (not
/// the caller's), marker bit on the first packet, consecutive sequence numbers and timestamps,
/// and the caller's payloads in order, each once, none missing except possibly the first few.
/// Returns how many echoed frames were stand-ins (concealment) rather than caller frames.
fn assert_echo_of(echoes: &[Echo], frames: &[Vec<u8>]) -> usize {
    let first = echoes.first().expect("something echoed");
    assert_ne!(
        first.ssrc, CALLER.ssrc,
        "the caller's stream was relayed, not re-encoded"
    );
    assert!(first.marker, "our stream starts with the marker bit");
    for echo in echoes {
        assert_eq!(echo.payload_type, 0, "{echo:?}");
        assert_eq!(echo.ssrc, first.ssrc, "SSRC changed mid-stream");
        assert_eq!(echo.payload.len(), 160, "{echo:?}");
    }
    for pair in echoes.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
        assert_eq!(pair[1].timestamp, pair[0].timestamp.wrapping_add(160));
    }

    let payloads: Vec<&[u8]> = frames.iter().map(|frame| &frame[12..]).collect();
    let origin = |echo: &Echo| payloads.iter().position(|p| *p == echo.payload.as_slice());
    let played: Vec<usize> = echoes.iter().filter_map(origin).collect();
    let start = origin(first).expect("the echo starts with a caller frame, not a stand-in");
    assert!(
        start <= MAY_MISS_AT_START,
        "first {start} frames missing from the echo"
    );
    assert_eq!(
        played,
        (start..frames.len()).collect::<Vec<_>>(),
        "caller frames echoed out of order, twice or not at all"
    );
    let last_played = echoes
        .iter()
        .rposition(|echo| origin(echo).is_some())
        .expect("some caller frame echoed");
    let stretched = echoes[..last_played]
        .iter()
        .filter(|echo| origin(echo).is_none())
        .count();
    assert!(
        stretched <= MAY_STRETCH,
        "{stretched} stand-in frames inside the echo"
    );
    echoes.len() - played.len()
}

fn client_socket() -> UdpSocket {
    let socket = UdpSocket::bind((LOCALHOST, 0)).expect("bind client socket");
    socket
        .set_read_timeout(Some(PATIENCE))
        .expect("set read timeout");
    socket
}

fn local_address(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().expect("bound socket has an address")
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The next datagram, or `None` on timeout.
fn receive(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buffer = [0u8; 2048];
    match socket.recv_from(&mut buffer) {
        Ok((length, _)) => Some(buffer[..length].to_vec()),
        Err(error) if is_timeout(&error) => None,
        Err(error) => panic!("client receive failed: {error}"),
    }
}

/// Polls `condition` until it holds, failing after `PATIENCE`.
fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not met in {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The connection's published counters once `condition` holds for them; fails after
/// `PATIENCE`. Counters other than the RTP counts are published every 100 ms, so a test waits
/// here for each figure it checks.
fn wait_for_stats(
    engine: &Engine,
    key: ConnectionKey,
    condition: impl Fn(&MediaStats) -> bool,
) -> MediaStats {
    let mut published = None;
    wait_until(|| {
        published = engine.stats(key).filter(&condition);
        published.is_some()
    });
    published.expect("the condition held")
}

/// The next event matching `wanted`, skipping others; fails after `PATIENCE`.
fn wait_for_event(
    events: &mut Receiver<EngineEvent>,
    wanted: impl Fn(&EngineEvent) -> bool,
) -> EngineEvent {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match events.try_recv() {
            Ok(event) if wanted(&event) => return event,
            Ok(_) => {}
            Err(TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "event not seen in {PATIENCE:?}");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(TryRecvError::Disconnected) => panic!("event channel closed"),
        }
    }
}

#[test]
fn a_fully_tuned_engine_still_echoes() {
    // Pinning, SCHED_FIFO, busy polling and SO_PRIORITY: whatever the kernel refuses is logged
    // and skipped; media must flow either way.
    let (sender, _events) = mpsc::channel(256);
    let config = EngineConfig {
        rtp_port_min: 31_480,
        rtp_port_max: 31_489,
        socket_priority: Some(5),
        threads: super::tuning::ThreadTuning {
            pin_to_core: true,
            realtime_priority: 10,
            busy_poll_us: 50,
            busy_poll_budget: 16,
            receive_at_tick: false,
            io_uring_send: false,
            io_uring_receive: false,
        },
        ..test_config(1)
    };
    let engine = Engine::start(config, sender).expect("tuned config is valid");
    let client = client_socket();
    let endpoint = open(&engine, 1, echo_spec(&client));
    let frames = CALLER.frames(20);
    send_paced(&client, endpoint.rtp, &frames);
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames);
    engine.shutdown();
}

/// Wake-ups written to the workers' wakers so far.
fn worker_wakes(engine: &Engine) -> u64 {
    engine
        .workers
        .iter()
        .map(|worker| worker.wakes.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

#[test]
fn batched_receive_at_the_tick_still_echoes_every_frame() {
    let (sender, mut events) = mpsc::channel(256);
    let config = EngineConfig {
        rtp_port_min: 31_490,
        rtp_port_max: 31_499,
        threads: super::tuning::ThreadTuning {
            receive_at_tick: true,
            ..super::tuning::ThreadTuning::default()
        },
        ..test_config(1)
    };
    let engine = Engine::start(config, sender).expect("config is valid");
    let client = client_socket();
    let endpoint = open(&engine, 1, echo_spec(&client));
    let frames = CALLER.frames(30);
    send_paced(&client, endpoint.rtp, &frames);
    let echoes = collect_echoes(&client, endpoint.rtp, frames.last().expect("frames sent"));
    assert_echo_of(&echoes, &frames);
    // The worker took the open and the close at its ticks: neither wrote to its waker.
    let asked = Instant::now();
    engine.close_connection(1).expect("close open connection");
    wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::Closed { key: 1, .. })
    });
    assert!(asked.elapsed() < Duration::from_secs(1), "closed at a tick");
    assert_eq!(
        worker_wakes(&engine),
        0,
        "commands woke a worker that sleeps to its tick"
    );
    engine.shutdown();
}

#[test]
fn a_worker_that_waits_on_its_sockets_is_woken_for_each_command() {
    let (engine, mut events) = start_engine(31_500, 31_509, 1);
    let client = client_socket();
    open(&engine, 1, echo_spec(&client));
    engine.close_connection(1).expect("close open connection");
    wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::Closed { key: 1, .. })
    });
    assert_eq!(
        worker_wakes(&engine),
        2,
        "one wake-up for the open, one for the close"
    );
    engine.shutdown();
}

/// A caller's PCMU stream carrying a `hz` tone (amplitude 8000), frame by frame.
fn tone_frames(stream: Stream, hz: f64, count: u16) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| {
            let pcm: Vec<i16> = (0..160)
                .map(|n| {
                    let t = f64::from(u32::from(index) * 160 + n) / 8000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            let mut payload = [0u8; 160];
            crate::media::g711::encode_ulaw(&pcm, &mut payload);
            stream.packet(index, &payload)
        })
        .collect()
}

/// What `client` has received so far (RTP only; a conference sends every 20 ms, so this reads
/// what is queued, after 60 ms for the last ticks to land), decoded from PCMU to linear.
fn drain_audio(client: &UdpSocket) -> Vec<i16> {
    std::thread::sleep(Duration::from_millis(60));
    client.set_nonblocking(true).expect("non-blocking");
    let mut pcm = Vec::new();
    let mut buffer = [0u8; 2048];
    loop {
        let length = match client.recv_from(&mut buffer) {
            Ok((length, _)) => length,
            Err(error) if is_timeout(&error) => break,
            Err(error) => panic!("client receive failed: {error}"),
        };
        let packet = &buffer[..length];
        if rtp::is_rtcp(packet) {
            continue;
        }
        let Ok(parsed) = rtp::parse(packet) else {
            continue;
        };
        assert_eq!(
            parsed.payload_type(),
            0,
            "the mix is sent in the member's codec"
        );
        let mut frame = vec![0i16; parsed.payload().len()];
        crate::media::g711::decode_ulaw(parsed.payload(), &mut frame);
        pcm.extend_from_slice(&frame);
    }
    client.set_nonblocking(false).expect("blocking");
    pcm
}

/// Goertzel power of `hz` in 8 kHz audio (a sine of amplitude A throughout reads A²/2).
fn tone_power(pcm: &[i16], hz: f64) -> f64 {
    crate::media::tone::goertzel_power(pcm, 8000, hz)
}

/// An idle PCMU connection (as the API creates it) whose peer is `client`.
fn member_spec(client: &UdpSocket) -> MediaSpec {
    MediaSpec {
        mode: MediaMode::Idle,
        ..echo_spec(client)
    }
}

#[test]
fn three_members_on_three_workers_meet_on_one_and_each_hears_the_others_never_itself() {
    let (engine, mut events) = start_engine(31_260, 31_269, 3);
    let clients: Vec<UdpSocket> = (0..3).map(|_| client_socket()).collect();
    let endpoints: Vec<MediaEndpoint> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| open(&engine, 70 + i as u64, member_spec(c)))
        .collect();
    let workers: Vec<usize> = endpoints.iter().map(|e| e.worker).collect();
    assert_eq!(workers, [0, 1, 2], "least-loaded placement spreads them");
    engine
        .create_conference(
            9,
            ConferenceSpec {
                rate: 8000,
                hairpin: false,
                join_tone: false,
            },
            70,
        )
        .expect("conference starts");
    for key in 70..73 {
        engine
            .join_conference(9, key, ConfereeSpec::default())
            .expect("join");
    }
    for key in 70..73 {
        assert_eq!(
            engine.connection_worker(key),
            Some(0),
            "members live with the mix"
        );
    }
    // Member 70 talks (1 kHz); 71 and 72 are silent.
    let frames = tone_frames(CALLER, 1000.0, 60);
    send_paced(&clients[0], endpoints[0].rtp, &frames);
    let heard: Vec<Vec<i16>> = clients.iter().map(drain_audio).collect();
    for (i, pcm) in heard.iter().enumerate() {
        assert!(
            pcm.len() >= 160 * 40,
            "member {i} gets a stream: {} samples",
            pcm.len()
        );
    }
    let talker = tone_power(&heard[0], 1000.0);
    for listener in &heard[1..] {
        let power = tone_power(listener, 1000.0);
        assert!(power > 1e5, "listeners hear the talker: {power}");
        assert!(
            power > talker * 1000.0,
            "{power} vs the talker's own {talker}"
        );
    }
    // The talker, alone in the mix, heard silence: its stream above (a frame every tick)
    // came from the worker's one encode of silence, not an encode of its own.
    assert!(
        engine.conference_silence_shares() >= 40,
        "{} frames of shared silence",
        engine.conference_silence_shares()
    );
    match wait_for_event(&mut events, |e| matches!(e, EngineEvent::Talker { .. })) {
        EngineEvent::Talker {
            conference,
            key,
            talking,
        } => assert_eq!((conference, key, talking), (9, 70, true)),
        other => panic!("{other:?}"),
    }
    // The conference goes; its members stay open and fall quiet.
    engine.close_conference(9).expect("close");
    for key in 70..73 {
        assert!(engine.stats(key).is_some());
    }
    std::thread::sleep(Duration::from_millis(100));
    for client in &clients {
        drain_audio(client);
    }
    send_paced(&clients[0], endpoints[0].rtp, &frames[..10]);
    assert!(
        drain_audio(&clients[1]).is_empty(),
        "no mix after the conference"
    );
    assert!(
        drain_audio(&clients[2]).is_empty(),
        "no mix after the conference"
    );
    assert!(matches!(
        engine.join_conference(9, 70, ConfereeSpec::default()),
        Err(EngineError::UnknownConference)
    ));
}

#[test]
fn a_hairpin_swaps_two_streams_and_muting_silences_one_direction() {
    let (engine, _events) = start_engine(31_280, 31_289, 2);
    check_hairpin(&engine);
    assert_eq!(engine.io_uring_receives(), 0);
}

#[test]
fn with_io_uring_receives_a_member_moved_to_another_worker_is_read_there() {
    let (sender, _events) = mpsc::channel(256);
    let engine =
        Engine::start(uring_receive_config(32_230, 32_239, 2), sender).expect("valid config");
    check_hairpin(&engine);
    // Both members' 70 frames, B's after its move to A's worker, came through the rings.
    wait_until(|| engine.io_uring_receives() == 140);
    engine.shutdown();
}

/// Two members opened on two workers join a hairpin conference (B moves to A's worker); each
/// hears the other's tone and not its own; muted, B is no longer heard while it still hears A.
/// Each client sends 70 frames.
fn check_hairpin(engine: &Engine) {
    let clients: Vec<UdpSocket> = (0..2).map(|_| client_socket()).collect();
    let endpoints: Vec<MediaEndpoint> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| open(engine, 80 + i as u64, member_spec(c)))
        .collect();
    engine
        .create_conference(
            4,
            ConferenceSpec {
                rate: 8000,
                hairpin: true,
                join_tone: false,
            },
            80,
        )
        .expect("conference starts");
    assert_ne!(
        endpoints[0].worker, endpoints[1].worker,
        "opened on two workers"
    );
    for key in [80, 81] {
        engine
            .join_conference(4, key, ConfereeSpec::default())
            .expect("join");
    }
    assert_eq!(engine.connection_worker(81), Some(endpoints[0].worker));
    let a = tone_frames(CALLER, 1000.0, 40);
    let b = tone_frames(INTRUDER, 600.0, 40);
    pace(40, |i| {
        clients[0].send_to(&a[i], endpoints[0].rtp).expect("send");
        clients[1].send_to(&b[i], endpoints[1].rtp).expect("send");
    });
    let heard_by_a = drain_audio(&clients[0]);
    let heard_by_b = drain_audio(&clients[1]);
    assert!(
        tone_power(&heard_by_a, 600.0) > 1e5,
        "A hears B: {} samples, {}",
        heard_by_a.len(),
        tone_power(&heard_by_a, 600.0)
    );
    assert!(tone_power(&heard_by_a, 1000.0) < tone_power(&heard_by_a, 600.0) / 1000.0);
    assert!(tone_power(&heard_by_b, 1000.0) > 1e5, "B hears A");
    // B muted: A hears nothing from B; B still hears A.
    engine
        .set_conferee(
            4,
            81,
            ConfereeSpec {
                muted: true,
                ..ConfereeSpec::default()
            },
        )
        .expect("mute");
    std::thread::sleep(Duration::from_millis(60));
    drain_audio(&clients[0]);
    drain_audio(&clients[1]);
    pace(30, |i| {
        clients[0]
            .send_to(&a[i + 10], endpoints[0].rtp)
            .expect("send");
        clients[1]
            .send_to(&b[i + 10], endpoints[1].rtp)
            .expect("send");
    });
    let heard_by_a = drain_audio(&clients[0]);
    let heard_by_b = drain_audio(&clients[1]);
    assert!(tone_power(&heard_by_a, 600.0) < 1e3, "muted B is not heard");
    assert!(tone_power(&heard_by_b, 1000.0) > 1e5, "B still hears A");
}

/// The RTP packets `client` has been sent (after 60 ms of quiet), parsed: (SSRC, sequence,
/// payload).
fn drain_rtp(client: &UdpSocket) -> Vec<(u32, u16, Vec<u8>)> {
    std::thread::sleep(Duration::from_millis(60));
    client.set_nonblocking(true).expect("non-blocking");
    let mut packets = Vec::new();
    while let Some(datagram) = receive(client) {
        if rtp::is_rtcp(&datagram) {
            continue;
        }
        let parsed = rtp::parse(&datagram).expect("the engine sends valid RTP");
        packets.push((parsed.ssrc(), parsed.sequence(), parsed.payload().to_vec()));
    }
    client.set_nonblocking(false).expect("blocking");
    packets
}

/// Two PCMU members joined as a hairpin are sent each other's frames byte for byte, in their
/// own streams (the relay: no decode, no encode); joined in a mixed room, the same frames are
/// decoded, mixed and re-encoded. Every other sample of the frames is μ-law "negative zero"
/// (0x7F), which a decode and re-encode turns into 0xFF: that tells the two apart.
#[test]
fn a_g711_hairpin_relays_frames_as_they_came_and_a_mixed_pair_re_encodes_them() {
    let (engine, _events) = start_engine(32_240, 32_249, 2);
    let mut sent = [0u8; 160];
    for (i, byte) in sent.iter_mut().enumerate() {
        *byte = if i % 2 == 0 {
            0x7F
        } else {
            0x20 + (i % 64) as u8
        };
    }
    let mut pcm = [0i16; 160];
    crate::media::g711::decode_ulaw(&sent, &mut pcm);
    let mut re_encoded = [0u8; 160];
    crate::media::g711::encode_ulaw(&pcm, &mut re_encoded);
    assert_ne!(sent, re_encoded);
    let cases = [(6, true, sent, re_encoded), (7, false, re_encoded, sent)];
    for (conference, hairpin, expected, never) in cases {
        let clients: Vec<UdpSocket> = (0..2).map(|_| client_socket()).collect();
        let keys = [conference * 10, conference * 10 + 1];
        let endpoints: Vec<MediaEndpoint> = clients
            .iter()
            .zip(keys)
            .map(|(c, key)| open(&engine, key, member_spec(c)))
            .collect();
        let spec = ConferenceSpec {
            rate: 8000,
            hairpin,
            join_tone: false,
        };
        engine
            .create_conference(conference, spec, keys[0])
            .expect("conference starts");
        for key in keys {
            engine
                .join_conference(conference, key, ConfereeSpec::default())
                .expect("join");
        }
        let a: Vec<Vec<u8>> = (0..30).map(|i| CALLER.packet(i, &sent)).collect();
        let b: Vec<Vec<u8>> = (0..30).map(|i| INTRUDER.packet(i, &sent)).collect();
        pace(30, |i| {
            clients[0].send_to(&a[i], endpoints[0].rtp).expect("send");
            clients[1].send_to(&b[i], endpoints[1].rtp).expect("send");
        });
        for (client, sender) in clients.iter().zip([INTRUDER, CALLER]) {
            let heard = drain_rtp(client);
            let ssrc = heard.first().expect("sent something").0;
            assert_ne!(ssrc, sender.ssrc, "sent in the member's own stream");
            let mut frames = 0;
            for (i, (s, sequence, payload)) in heard.iter().enumerate() {
                assert_eq!(*s, ssrc);
                assert_eq!(*sequence, heard[0].1.wrapping_add(i as u16), "no gap");
                // Besides the frames: silence before the other's first one, a loss concealed
                // after its last.
                frames += usize::from(payload[..] == expected[..]);
                assert_ne!(payload[..], never[..], "hairpin {hairpin}, packet {i}");
            }
            assert!(frames >= 25, "hairpin {hairpin}: {frames} of 30 frames");
        }
        engine.close_conference(conference).expect("close");
    }
    engine.shutdown();
}

/// Connections 1 and 2, each with its client, joined in hairpin conference 1 (8 kHz).
fn pcmu_hairpin(engine: &Engine) -> (Vec<UdpSocket>, Vec<MediaEndpoint>) {
    let clients: Vec<UdpSocket> = (0..2).map(|_| client_socket()).collect();
    let endpoints: Vec<MediaEndpoint> = clients
        .iter()
        .zip([1, 2])
        .map(|(c, key)| open(engine, key, member_spec(c)))
        .collect();
    let spec = ConferenceSpec {
        rate: 8000,
        hairpin: true,
        join_tone: false,
    };
    engine.create_conference(1, spec, 1).expect("conference");
    for key in [1, 2] {
        engine
            .join_conference(1, key, ConfereeSpec::default())
            .expect("join");
    }
    (clients, endpoints)
}

/// The caller's PCMU frame `i`, every payload byte `0x20 + i` (which tells it apart).
fn indexed_frame(i: u16) -> Vec<u8> {
    CALLER.packet(i, &[0x20 + i as u8; 160])
}

/// The order of the gap-and-order tests' frames: frame 10 is never sent; 21 goes before 20.
fn gap_and_swap_order() -> Vec<u16> {
    let mut order: Vec<u16> = (0..30).filter(|&i| i != 10).collect();
    let at = order.iter().position(|&i| i == 20).expect("frame 20");
    order.swap(at, at + 1);
    order
}

/// (frame index, sequence number) of each of `heard`'s packets that carries an
/// `indexed_frame` whole, each sent in the server's own stream, not the caller's.
fn indexed_frames(heard: &[(u32, u16, Vec<u8>)]) -> Vec<(u16, u16)> {
    heard
        .iter()
        .filter(|(_, _, p)| (0x20..0x20 + 30).contains(&p[0]) && p.iter().all(|&b| b == p[0]))
        .map(|(ssrc, sequence, p)| {
            assert_ne!(*ssrc, CALLER.ssrc, "sent in the server's own stream");
            (u16::from(p[0] - 0x20), *sequence)
        })
        .collect()
}

/// Forwarded as they arrived: `frames` are the last of `order`, as sent, numbered as the
/// caller numbered them (its gap kept).
fn assert_forwarded(frames: &[(u16, u16)], order: &[u16]) {
    let indexes: Vec<u16> = frames.iter().map(|&(i, _)| i).collect();
    assert_eq!(indexes, order[order.len() - indexes.len()..], "as sent");
    let first = frames[0];
    for &(index, sequence) in frames {
        assert_eq!(
            sequence.wrapping_sub(first.1),
            index - first.0,
            "the caller's numbering, gap kept: {frames:?}"
        );
    }
}

/// Played out at the tick: `frames` in order, and the whole stream `heard` without a gap.
fn assert_retimed(frames: &[(u16, u16)], heard: &[(u32, u16, Vec<u8>)]) {
    assert!(frames.windows(2).all(|w| w[0].0 < w[1].0), "{frames:?}");
    for (n, (_, sequence, _)) in heard.iter().enumerate() {
        assert_eq!(*sequence, heard[0].1.wrapping_add(n as u16), "no gap");
    }
}

/// A PCMU hairpin on workers that read each packet as it arrives forwards each one at once,
/// in the other member's own stream: the caller's gap (a packet never sent) and order (two
/// packets swapped) reach the other member as they were, each frame byte for byte. Workers
/// that read at their tick re-time the frames through the jitter buffer instead: in order,
/// with no gap in the stream.
#[test]
fn a_hairpin_read_as_packets_arrive_forwards_them_with_their_gaps_and_order() {
    let order = gap_and_swap_order();
    for (min, forwards) in [(32_250, true), (32_260, false)] {
        let (engine, _events) = engine_reading(min, !forwards);
        let (clients, endpoints) = pcmu_hairpin(&engine);
        pace(order.len(), |n| {
            let packet = indexed_frame(order[n]);
            clients[0].send_to(&packet, endpoints[0].rtp).expect("send");
        });
        let heard = drain_rtp(&clients[1]);
        let frames = indexed_frames(&heard);
        assert!(frames.len() >= 25, "forwards {forwards}: {frames:?}");
        if forwards {
            assert_forwarded(&frames, &order);
        } else {
            assert_retimed(&frames, &heard);
        }
        engine.shutdown();
    }
}

/// An echo on workers that read each packet as it arrives sends each one back at once, in its
/// own stream, with the caller's gap (a packet never sent) and order (two packets swapped), as
/// rtpengine's media echo does — every packet, from the first; workers that read at their
/// tick play it out through the jitter buffer: in order, the gap concealed, no gap in the
/// stream.
#[test]
fn an_echo_read_as_packets_arrive_sends_them_back_with_their_gaps_and_order() {
    let order = gap_and_swap_order();
    for (min, receive_at_tick) in [(32_280, false), (32_290, true)] {
        let (engine, _events) = engine_reading(min, receive_at_tick);
        let client = client_socket();
        let endpoint = open(&engine, 1, echo_spec(&client));
        pace(order.len(), |n| {
            client
                .send_to(&indexed_frame(order[n]), endpoint.rtp)
                .expect("send");
        });
        let heard = drain_rtp(&client);
        let frames = indexed_frames(&heard);
        if receive_at_tick {
            assert!(frames.len() >= 25, "{frames:?}");
            assert_retimed(&frames, &heard);
        } else {
            assert_eq!(heard.len(), order.len(), "each packet, once: {frames:?}");
            assert_eq!(frames.len(), order.len(), "{frames:?}");
            assert_forwarded(&frames, &order);
        }
        engine.shutdown();
    }
}

/// A forwarding hairpin member that stops sending (held, or its sender's silence
/// suppression) is played at the room's tick again once it has been quiet a while: the other
/// member is sent silence in its stream rather than nothing; the caller's next packets are
/// forwarded again. The stream runs on without a gap throughout.
#[test]
fn a_forwarding_member_gone_quiet_is_played_at_the_tick_until_it_sends_again() {
    let (engine, _events) = start_engine(32_270, 32_279, 1);
    let (clients, endpoints) = pcmu_hairpin(&engine);
    pace(15, |i| {
        clients[0]
            .send_to(&indexed_frame(i as u16), endpoints[0].rtp)
            .expect("send");
    });
    std::thread::sleep(Duration::from_millis(600));
    pace(10, |i| {
        clients[0]
            .send_to(&indexed_frame(15 + i as u16), endpoints[0].rtp)
            .expect("send");
    });
    let heard = drain_rtp(&clients[1]);
    let is_frame = |p: &[u8]| (0x20..0x20 + 25).contains(&p[0]) && p.iter().all(|&b| b == p[0]);
    let kinds: Vec<char> = heard
        .iter()
        .map(|(_, _, p)| if is_frame(p) { 'F' } else { '.' })
        .collect();
    let kinds: String = kinds.into_iter().collect();
    let first = kinds.find('F').expect("frames heard");
    let (before, after) = kinds[first..].split_at(kinds[first..].find('.').expect("then silence"));
    assert!(before.len() >= 13, "the first frames, forwarded: {kinds}");
    let quiet = after.find('F').expect("frames again");
    // 600 ms quiet, the first 200 of them with nothing sent: silence every 20 ms after.
    assert!((10..=25).contains(&quiet), "silence at the tick: {kinds}");
    assert!(
        after[quiet..].chars().filter(|&k| k == 'F').count() >= 9,
        "{kinds}"
    );
    for (n, (_, sequence, _)) in heard.iter().enumerate() {
        assert_eq!(
            *sequence,
            heard[0].1.wrapping_add(n as u16),
            "no gap: {kinds}"
        );
    }
    engine.shutdown();
}

#[test]
fn a_member_that_leaves_stays_open_and_commands_sent_during_a_move_are_kept() {
    let (engine, mut events) = start_engine(31_400, 31_409, 2);
    let clients: Vec<UdpSocket> = (0..2).map(|_| client_socket()).collect();
    let endpoints: Vec<MediaEndpoint> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| open(&engine, 90 + i as u64, member_spec(c)))
        .collect();
    assert_ne!(endpoints[0].worker, endpoints[1].worker);
    engine
        .create_conference(
            5,
            ConferenceSpec {
                rate: 16000,
                hairpin: false,
                join_tone: false,
            },
            90,
        )
        .expect("conference starts");
    engine
        .join_conference(5, 90, ConfereeSpec::default())
        .expect("join");
    // Join (a move), then at once re-target and leave: all queued behind the hand-off.
    engine
        .join_conference(5, 91, ConfereeSpec::default())
        .expect("join");
    let elsewhere = client_socket();
    engine
        .update_connection(91, member_spec(&elsewhere))
        .expect("update during the move");
    engine.leave_conference(5, 91).expect("leave");
    let frames = tone_frames(CALLER, 1000.0, 20);
    send_paced(&clients[0], endpoints[0].rtp, &frames);
    assert!(
        drain_audio(&elsewhere).is_empty(),
        "91 left: it hears nothing"
    );
    assert!(engine.stats(91).is_some(), "91 is still open");
    // 91 re-joins and hears 90 at its new address, through a 16 kHz room.
    engine
        .join_conference(5, 91, ConfereeSpec::default())
        .expect("re-join");
    send_paced(
        &clients[0],
        endpoints[0].rtp,
        &tone_frames(CALLER, 1000.0, 40),
    );
    assert!(tone_power(&drain_audio(&elsewhere), 1000.0) > 1e5);
    engine.close_connection(91).expect("close");
    wait_for_event(&mut events, |e| {
        matches!(e, EngineEvent::Closed { key: 91, .. })
    });
    wait_until(|| engine.ports_in_use() == 2);
}

/// An idle PCMU connection (telephone-event on PT 101) that sends to `remote`.
fn idle_pcmu(remote: Option<SocketAddr>) -> MediaSpec {
    MediaSpec {
        mode: MediaMode::Idle,
        format: Some(PCMU),
        remote_rtp: remote,
        remote_rtcp: None,
        srtp: None,
        expects_rtp: false,
        source: None,
    }
}

#[test]
fn digits_sent_on_one_connection_are_heard_as_digits_by_another() {
    let (engine, mut events) = start_engine(31_470, 31_479, 1);
    // Two idle connections pointed at each other: 110 sends, 111 listens.
    let sender = open(&engine, 110, idle_pcmu(None));
    let listener = open(&engine, 111, idle_pcmu(Some(sender.rtp)));
    engine
        .update_connection(110, idle_pcmu(Some(listener.rtp)))
        .expect("re-target the sender");

    engine
        .send_digits(110, "1#9".into(), 100, 50)
        .expect("telephone-event negotiated, valid digits");
    let mut digits = Vec::new();
    while digits.len() < 3 {
        if let EngineEvent::Digit {
            key,
            digit,
            duration_ms,
        } = wait_for_event(&mut events, |e| matches!(e, EngineEvent::Digit { .. }))
        {
            assert_eq!(key, 111, "the listener hears them");
            digits.push((digit, duration_ms));
        }
    }
    assert_eq!(digits, [('1', 100), ('#', 100), ('9', 100)]);
    // An idle connection sends nothing but the digits: seven packets each (four updates and
    // three end packets of a 100 ms tone in 20 ms packets). Digit counts are published every
    // 100 ms, RTP counts after every packet: wait for both.
    wait_until(|| {
        engine.stats(110).is_some_and(|s| s.digits_sent == 3)
            && engine
                .stats(111)
                .is_some_and(|s| s.rtp_packets_received == 21 && s.digits_received == 3)
    });
    let sent = engine.stats(110).expect("sender open");
    assert_eq!((sent.rtp_packets_sent, sent.rtp_bytes_sent), (21, 21 * 16));
    let heard = engine.stats(111).expect("listener open");
    assert_eq!((heard.digits_received, heard.malformed_packets), (3, 0));

    // Refused at once, with nothing sent.
    assert!(matches!(
        engine.send_digits(110, "12x".into(), 100, 50),
        Err(EngineError::InvalidDigits(
            crate::media::dtmf::DtmfError::InvalidDigit {
                digit: 'x',
                index: 2
            }
        ))
    ));
    assert!(matches!(
        engine.send_digits(110, "5".repeat(65), 100, 50),
        Err(EngineError::InvalidDigits(
            crate::media::dtmf::DtmfError::QueueFull { .. }
        ))
    ));
    assert!(matches!(
        engine.send_digits(999, "1".into(), 100, 50),
        Err(EngineError::UnknownConnection)
    ));
    open(&engine, 112, MediaSpec::idle(Some(listener.rtp)));
    assert!(matches!(
        engine.send_digits(112, "1".into(), 100, 50),
        Err(EngineError::NoTelephoneEvent)
    ));
    let without_events = StreamFormat {
        telephone_event_pt: None,
        ..PCMU
    };
    engine
        .update_connection(
            112,
            MediaSpec {
                format: Some(without_events),
                ..idle_pcmu(Some(listener.rtp))
            },
        )
        .expect("update");
    assert!(matches!(
        engine.send_digits(112, "1".into(), 100, 50),
        Err(EngineError::NoTelephoneEvent)
    ));
    std::thread::sleep(QUIET);
    assert_eq!(
        engine.stats(110).expect("sender open").rtp_packets_sent,
        21,
        "refused digits are not sent"
    );
    assert_eq!(engine.stats(112).expect("open").rtp_packets_sent, 0);
    engine.shutdown();
}

#[test]
fn digits_sent_while_a_connection_moves_into_a_conference_go_out_on_its_stream() {
    let (engine, _events) = start_engine(31_290, 31_299, 2);
    let client = client_socket();
    let moving = open(&engine, 120, member_spec(&client));
    let host = open(&engine, 121, MediaSpec::idle(None));
    assert_ne!(moving.worker, host.worker);
    engine
        .create_conference(
            12,
            ConferenceSpec {
                rate: 8000,
                hairpin: false,
                join_tone: false,
            },
            121,
        )
        .expect("conference starts");
    // The join moves 120 to the conference's worker; the digits wait there for it.
    engine
        .join_conference(12, 120, ConfereeSpec::default())
        .expect("join");
    engine
        .send_digits(120, "*0".into(), 100, 50)
        .expect("digits during the move");
    assert_eq!(engine.connection_worker(120), Some(host.worker));

    // The member's stream (the mix it hears, silence here) carries the two digits.
    let mut receiver = crate::media::dtmf::DtmfReceiver::new(8000);
    let mut digits = Vec::new();
    let mut previous: Option<(u32, u16)> = None;
    let mut event_packets = 0;
    let deadline = Instant::now() + PATIENCE;
    while digits.len() < 2 {
        assert!(Instant::now() < deadline, "digits not heard: {digits:?}");
        let Some(datagram) = receive(&client) else {
            continue;
        };
        let packet = rtp::parse(&datagram).expect("the member's stream is RTP");
        if let Some((ssrc, sequence)) = previous {
            assert_eq!(packet.ssrc(), ssrc, "one stream");
            assert_eq!(packet.sequence(), sequence.wrapping_add(1), "no gap");
        }
        previous = Some((packet.ssrc(), packet.sequence()));
        if packet.payload_type() != 101 {
            assert_eq!(packet.payload_type(), 0);
            continue;
        }
        event_packets += 1;
        let now = Instant::now();
        if let Ok(Some(digit)) = receiver.on_packet(
            now,
            packet.sequence(),
            packet.timestamp(),
            packet.marker(),
            packet.payload(),
        ) {
            digits.push((digit.digit, digit.duration_ms));
        }
    }
    assert_eq!(digits, [('*', 100), ('0', 100)]);
    // The second digit is reported on its first end packet; five of each came by then.
    assert_eq!(event_packets, 7 + 5);
    wait_until(|| engine.stats(120).is_some_and(|s| s.digits_sent == 2));
    engine.shutdown();
}
