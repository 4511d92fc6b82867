//! End to end through the media path with the real binary: SRTP (SDES) echo, RTP source
//! security, RFC 4733 digits as events, and the RTP-inactivity release.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use callbridge::media::srtp::{CryptoAttribute, SrtpContext, SrtpProfile};
use common::uac::{body, media_port, status, to_tag, Uac};
use common::{pcmu_frame, Server};

/// Sets up an answered call from `uac` with `sdp`; returns (our To tag, the answer SDP).
fn answered_call(uac: &Uac, sdp: &str) -> (String, String) {
    uac.send(&uac.request(
        "INVITE",
        "echo",
        1,
        "",
        &format!("i{}", uac.call_id.len()),
        sdp,
    ));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", 1, &tag, "ack", ""));
    (tag, body(&ok).to_string())
}

fn hang_up(uac: &Uac, tag: &str) {
    uac.send(&uac.request("BYE", "echo", 2, tag, "bye", ""));
    assert_eq!(status(&uac.final_response("BYE")), 200);
}

fn rtp_packet(seq: u16, payload_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, payload_type, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn srtp_offer_is_answered_with_our_key_and_the_echo_is_encrypted_audio() {
    let server = Server::start("");
    let uac = Uac::new(&server, "srtp");
    let mut fill = {
        let mut n = 17u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_mul(73).wrapping_add(41);
                *b = n;
            }
        }
    };
    let ours = CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut fill);
    let mki_only =
        "2 AES_CM_128_HMAC_SHA1_32 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:4";
    let port = uac.rtp.local_addr().unwrap().port();
    let sdp = format!(
        "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=crypto:{mki_only}\r\na=crypto:{}\r\n",
        ours.to_sdp_value()
    );
    let (tag, answer) = answered_call(&uac, &sdp);
    assert!(answer.contains("RTP/SAVP"), "{answer}");
    let line = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .expect("our crypto line");
    let theirs = CryptoAttribute::parse(line).expect("parsable crypto answer");
    assert_eq!(theirs.tag, 1, "the MKI line was skipped, tag 1 chosen");
    assert!(theirs.mki.is_none());
    let server_rtp: SocketAddr = ([127, 0, 0, 1], media_port(&answer)).into();

    let mut protect = SrtpContext::new(ours.profile, &ours.key, &ours.salt).unwrap();
    let mut unprotect = SrtpContext::new(theirs.profile, &theirs.key, &theirs.salt).unwrap();
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let frames: Vec<Vec<u8>> = (0..40).map(pcmu_frame).collect();
    let mut echoed = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    for (i, frame) in frames.iter().enumerate() {
        while start.elapsed() < Duration::from_millis(20 * i as u64) {
            if let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
                if let Ok(len) = unprotect.unprotect_rtp(&mut buf, n) {
                    echoed.push(buf[12..len].to_vec());
                }
            }
        }
        let mut packet = rtp_packet(i as u16, 0, frame);
        let len = packet.len();
        packet.resize(len + 16, 0);
        let len = protect.protect_rtp(&mut packet, len).unwrap();
        uac.rtp.send_to(&packet[..len], server_rtp).unwrap();
    }
    let drain_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < drain_until {
        if let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
            if let Ok(len) = unprotect.unprotect_rtp(&mut buf, n) {
                echoed.push(buf[12..len].to_vec());
            }
        }
    }
    let matched = echoed.iter().filter(|e| frames.contains(e)).count();
    assert!(
        matched >= 35,
        "{matched} of 40 frames came back decryptable and intact"
    );
    let listed = server.connections();
    assert_eq!(listed[0]["Srtp"], "AES_CM_128_HMAC_SHA1_80");
    assert_eq!(listed[0]["Stats"]["SrtpRejected"], 0);
    hang_up(&uac, &tag);
}

/// RTP bleed: once the call's source is known, well-formed RTP in sequence from anywhere
/// else is dropped, never learned, never answered.
#[test]
fn rtp_from_a_foreign_source_is_dropped_and_never_echoed() {
    let server = Server::start("");
    let uac = Uac::new(&server, "bleed");
    let (tag, answer) = answered_call(&uac, &uac.sdp("0"));
    let server_rtp: SocketAddr = ([127, 0, 0, 1], media_port(&answer)).into();
    let echoed = common::stream_and_check_echo(&uac.rtp, server_rtp, 20);
    assert!(echoed >= 17, "{echoed}");
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();
    intruder
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for seq in 0..30u16 {
        intruder
            .send_to(&rtp_packet(seq, 0, &pcmu_frame(seq)), server_rtp)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = [0u8; 2048];
    assert!(
        intruder.recv_from(&mut buf).is_err(),
        "nothing goes to the intruder"
    );
    let listed = server.connections();
    assert_eq!(listed[0]["Stats"]["ForeignSourceDropped"], 30);
    assert_eq!(listed[0]["Stats"]["RtpPacketsReceived"], 20);
    // The real caller is still served: its stream goes on (the common helper's SSRC, the
    // next sequence numbers) and comes back.
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut answered = 0;
    for seq in 20..60u16 {
        let mut packet = rtp_packet(seq, 0, &pcmu_frame(seq));
        packet[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
        uac.rtp.send_to(&packet, server_rtp).unwrap();
        let due = Instant::now() + Duration::from_millis(20);
        while Instant::now() < due {
            if let Ok((n, from)) = uac.rtp.recv_from(&mut buf) {
                answered += usize::from(from == server_rtp && n == 172);
            }
        }
    }
    assert!(answered >= 35, "{answered} of 40 echoed");
    let listed = server.connections();
    assert_eq!(listed[0]["Stats"]["ForeignSourceDropped"], 30);
    hang_up(&uac, &tag);
}

#[test]
fn rfc4733_digits_arrive_as_events() {
    let server = Server::start("");
    let mut events = server.events();
    let uac = Uac::new(&server, "digits");
    let (tag, answer) = answered_call(
        &uac,
        &uac.sdp("0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16"),
    );
    assert!(answer.contains("telephone-event/8000"), "{answer}");
    let server_rtp: SocketAddr = ([127, 0, 0, 1], media_port(&answer)).into();
    let mut seq = 100u16;
    // RFC 4733: one event per digit (same timestamp), duration growing, three end packets.
    for (n, (code, _digit)) in [(5u8, '5'), (11, '#')].into_iter().enumerate() {
        let timestamp = 8000 * (n as u32 + 1);
        for step in 0..6u16 {
            let end = step >= 3;
            let duration = 160 * (step.min(3) + 1);
            let payload = [
                code,
                (u8::from(end) << 7) | 10,
                (duration >> 8) as u8,
                duration as u8,
            ];
            let marker = if step == 0 { 0x80 } else { 0 };
            let mut p = vec![0x80, 101 | marker, (seq >> 8) as u8, seq as u8];
            p.extend_from_slice(&timestamp.to_be_bytes());
            p.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
            p.extend_from_slice(&payload);
            uac.rtp.send_to(&p, server_rtp).unwrap();
            seq += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let first = events.wait_for(Duration::from_secs(3), |e| e["Event"] == "DigitReceived");
    assert_eq!(first["Digit"], "5");
    assert!(first["CallId"].is_string());
    let second = events.wait_for(Duration::from_secs(3), |e| {
        e["Event"] == "DigitReceived" && e["Digit"] == "#"
    });
    assert_eq!(second["ConnectionId"], first["ConnectionId"]);
    let digits = events
        .drain()
        .iter()
        .filter(|e| e["Event"] == "DigitReceived")
        .count();
    assert_eq!(
        digits, 2,
        "each digit once, whatever the end-packet repeats"
    );
    hang_up(&uac, &tag);
}

#[test]
fn a_call_whose_rtp_stops_is_released_and_the_caller_gets_a_bye() {
    let server = Server::start_with_overrides(&["media.rtp_timeout_s=1"]);
    let mut events = server.events();
    let uac = Uac::new(&server, "silent");
    let (_tag, answer) = answered_call(&uac, &uac.sdp("0"));
    let server_rtp: SocketAddr = ([127, 0, 0, 1], media_port(&answer)).into();
    common::stream_and_check_echo(&uac.rtp, server_rtp, 10);
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["Reason"], "rtp-timeout");
    let deadline = Instant::now() + Duration::from_secs(3);
    let bye = loop {
        assert!(Instant::now() < deadline, "no BYE after the RTP timeout");
        if let Some(m) = uac.recv(Duration::from_millis(200)) {
            if m.starts_with("BYE ") {
                break m;
            }
        }
    };
    assert!(bye.contains("Reason:"), "{bye}");
    server.wait_no_connections(Duration::from_secs(2));
}
