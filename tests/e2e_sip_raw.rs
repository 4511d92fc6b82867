//! End to end with a hand-driven SIP UAC over UDP: RTP echo content, offerless INVITE,
//! and the error answers (404, 488, 400, 501, 481) a trunk would see.

mod common;

use std::time::{Duration, Instant};

use common::uac::{body, header, media_port, status, to_tag, Uac};
use common::{metric_value, Server};

/// Streams `count` paced frames to `port` and checks the echo (see the common helper).
fn assert_echo(uac: &Uac, port: u16, count: u16) {
    let echoed = common::stream_and_check_echo(&uac.rtp, ([127, 0, 0, 1], port).into(), count);
    assert!(
        echoed + 3 >= usize::from(count),
        "{echoed} of {count} frames echoed"
    );
}

#[test]
fn audio_sent_to_an_echo_call_comes_back_frame_for_frame() {
    let server = Server::start("");
    let uac = Uac::new(&server, "echo-rtp");
    uac.send(&uac.request(
        "INVITE",
        "echo",
        1,
        "",
        "inv1",
        &uac.sdp("0 8 101\r\na=rtpmap:101 telephone-event/8000"),
    ));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(header(&ok, "Content-Type"), Some("application/sdp"));
    let answer = body(&ok);
    assert!(
        answer.contains("RTP/AVP 0"),
        "PCMU chosen (offerer's order): {answer}"
    );
    let port = media_port(answer);
    assert!(
        port >= server.rtp_min && port <= server.rtp_max,
        "port {port} from the configured range"
    );
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", 1, &tag, "ack1", ""));

    assert_echo(&uac, port, 50);

    let listed = server.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["Stats"]["RtpPacketsReceived"], 50);
    assert!(listed[0]["Stats"]["RtpPacketsSent"].as_u64().unwrap() >= 47);
    assert_eq!(listed[0]["Stats"]["ForeignSourceDropped"], 0);
    assert_eq!(listed[0]["MediaRxCodec"], "G711u");
    assert!(server.metric("callbridge_media_tick_lateness_seconds_count") >= 50.0);
    assert_eq!(server.metric("callbridge_rtp_packets_received_total"), 50.0);
    assert!(server.metric("callbridge_rtp_packets_sent_total") >= 47.0);

    uac.send(&uac.request("BYE", "echo", 2, &tag, "bye1", ""));
    let bye_ok = uac.final_response("BYE");
    assert_eq!(status(&bye_ok), 200);
    server.wait_no_connections(Duration::from_secs(5));
}

/// What an operator watches for capacity and leaks: each call holds two sockets (RTP and
/// RTCP) and gives them back when it ends (kept bound for a next call, as idle ports, for at
/// most 2 s), and the media workers' and the process's CPU counters grow while media flows.
#[test]
fn metrics_show_each_calls_sockets_and_the_cpu_its_media_takes() {
    let server = Server::start("");
    // One client for every read: its one kept-alive connection is one steady descriptor on
    // the server's side.
    let client = common::client();
    let before = server.metrics_through(&client);
    let fds = |text: &str| metric_value(text, "process_open_fds");
    let workers_cpu = |text: &str| {
        (0..2)
            .map(|w| {
                metric_value(
                    text,
                    &format!("callbridge_media_worker_cpu_seconds_total{{worker=\"{w}\"}}"),
                )
            })
            .sum::<f64>()
    };
    assert!(metric_value(&before, "process_max_fds") >= fds(&before));
    assert!(metric_value(&before, "process_resident_memory_bytes") > 0.0);
    assert!(metric_value(&before, "process_start_time_seconds") > 1.7e9);

    let uac = Uac::new(&server, "echo-metrics");
    uac.send(&uac.request("INVITE", "echo", 1, "", "inv-m", &uac.sdp("0")));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    let port = media_port(body(&ok));
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", 1, &tag, "ack-m", ""));
    let during = server.metrics_through(&client);
    assert_eq!(
        fds(&during) - fds(&before),
        2.0,
        "one call: its RTP and RTCP sockets"
    );

    assert_echo(&uac, port, 50);
    let after_media = server.metrics_through(&client);
    assert!(
        workers_cpu(&after_media) > workers_cpu(&before),
        "the workers used CPU to echo 50 frames"
    );
    assert!(
        metric_value(&after_media, "process_cpu_seconds_total")
            > metric_value(&before, "process_cpu_seconds_total")
    );
    assert!(
        metric_value(&after_media, "process_cpu_seconds_total") >= workers_cpu(&after_media),
        "the process's CPU includes its workers'"
    );

    uac.send(&uac.request("BYE", "echo", 2, &tag, "bye-m", ""));
    assert_eq!(status(&uac.final_response("BYE")), 200);
    server.wait_no_connections(Duration::from_secs(5));
    // The ended call's two sockets stay bound for the next call (and are shown as idle) for up
    // to 2 s, then close.
    let ended = server.metrics_through(&client);
    assert_eq!(metric_value(&ended, "callbridge_rtp_ports_in_use"), 0.0);
    assert_eq!(
        fds(&ended) - fds(&before),
        metric_value(&ended, "callbridge_rtp_ports_idle"),
        "the descriptors still open are the idle pair's"
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let now = server.metrics_through(&client);
        if fds(&now) == fds(&before) {
            assert_eq!(metric_value(&now, "callbridge_rtp_ports_idle"), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sockets not given back: {} descriptors open, {} before the call",
            fds(&now),
            fds(&before)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A frame that arrives long after its playout time (its frame was concealed) is dropped as
/// late, and the connection listing and /metrics say so: what tells an operator that loss
/// happened in the jitter buffer and not on the wire. An echo plays out at its tick where the
/// workers read at their tick (with the default per-packet reads it sends each packet back as
/// it comes: the next test).
#[test]
fn a_frame_held_back_past_its_playout_is_dropped_as_late_and_counted() {
    late_frame_is_counted(Server::start_with_overrides(&[
        "media.receive_at_tick=true",
    ]));
}

/// The same with the batched io_uring receive path, whose buffers are never exhausted by one
/// call.
#[test]
fn with_io_uring_receives_a_frame_held_back_past_its_playout_is_dropped_as_late_and_counted() {
    late_frame_is_counted(Server::start_with_overrides(&[
        "media.receive_at_tick=true",
        "media.io_uring_receive=true",
    ]));
}

/// With the default media settings a G.711 echo sends each packet back as it arrives: the
/// frame held back goes back late, in its place in the caller's numbering (our stream keeps
/// the caller's order and gaps, as rtpengine's media echo does), and nothing is dropped as
/// late or concealed.
#[test]
fn an_echo_sends_a_frame_held_back_back_as_it_comes_in_its_place() {
    let server = Server::start("");
    let (uac, tag) = echo_with_frame_20_late(&server, "echo-forward");
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sequences = Vec::new();
    let mut buf = [0u8; 2048];
    while sequences.len() < 40 {
        let Ok(len) = uac.rtp.recv(&mut buf) else {
            break;
        };
        if len >= 12 && !(200..=204).contains(&buf[1]) {
            sequences.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
    }
    let first = *sequences.first().expect("echoes");
    let offsets: Vec<u16> = sequences.iter().map(|s| s.wrapping_sub(first)).collect();
    let expected: Vec<u16> = (0..36u16)
        .filter(|&s| s != 20)
        .chain([20])
        .chain(36..40)
        .collect();
    assert_eq!(offsets, expected, "as sent, frame 20 after 35");
    let listed = server.connections();
    let stats = &listed[0]["Stats"];
    assert_eq!(stats["RtpPacketsSent"], 40, "{stats}");
    assert_eq!(stats["LatePackets"], 0, "{stats}");
    assert_eq!(stats["ConcealedFrames"], 0, "{stats}");
    uac.send(&uac.request("BYE", "echo", 2, &tag, "bye-forward", ""));
    assert_eq!(status(&uac.final_response("BYE")), 200);
    server.wait_no_connections(Duration::from_secs(5));
}

/// An echo call whose caller sends 40 PCMU frames at 20 ms, frame 20 held back and sent after
/// frame 35 (300 ms late); the caller and the dialog's To tag.
fn echo_with_frame_20_late(server: &Server, call: &str) -> (Uac, String) {
    let uac = Uac::new(server, call);
    uac.send(&uac.request("INVITE", "echo", 1, "", "inv-late", &uac.sdp("0")));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    let port = media_port(body(&ok));
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", 1, &tag, "ack-late", ""));
    let destination: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let packet = |seq: u16| {
        let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8];
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x1ea7_e001u32.to_be_bytes());
        p.extend_from_slice(&common::pcmu_frame(seq));
        p
    };
    let start = Instant::now();
    for seq in (0..40u16).filter(|&s| s != 20) {
        let due = start + Duration::from_millis(20 * u64::from(seq));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        uac.rtp.send_to(&packet(seq), destination).unwrap();
        if seq == 35 {
            uac.rtp.send_to(&packet(20), destination).unwrap();
        }
    }
    (uac, tag)
}

fn late_frame_is_counted(server: Server) {
    let (uac, tag) = echo_with_frame_20_late(&server, "echo-late");
    let deadline = Instant::now() + Duration::from_secs(3);
    let stats = loop {
        let listed = server.connections();
        assert_eq!(listed.len(), 1);
        let stats = listed[0]["Stats"].clone();
        if stats["RtpPacketsReceived"] == 40 && stats["LatePackets"] != 0 {
            break stats;
        }
        assert!(Instant::now() < deadline, "no late packet counted: {stats}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stats["LatePackets"], 1, "{stats}");
    assert_eq!(
        stats["PacketsLost"], 0,
        "nothing missing on the wire: {stats}"
    );
    assert!(
        stats["ConcealedFrames"].as_u64().unwrap() >= 1,
        "frame 20 was concealed: {stats}"
    );
    // 300 ms late is beyond the 200 ms the buffer may wait: the delay does not chase it.
    let delay = stats["PlayoutDelayMs"]
        .as_u64()
        .expect("the playout delay is listed");
    assert!((20..=200).contains(&delay), "{stats}");
    assert_eq!(stats["ShrunkFrames"], 0, "a steady sender: {stats}");
    assert_eq!(server.metric("callbridge_rtp_packets_late"), 1.0);
    assert_eq!(server.metric("callbridge_rtp_frames_shrunk"), 0.0);
    assert_eq!(
        server.metric("callbridge_media_receive_buffers_exhausted_total"),
        0.0,
        "one call never runs its worker out of receive buffers"
    );

    uac.send(&uac.request("BYE", "echo", 2, &tag, "bye-late", ""));
    assert_eq!(status(&uac.final_response("BYE")), 200);
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(
        server.metric("callbridge_rtp_packets_late"),
        0.0,
        "the gauge covers live connections"
    );
}

#[test]
fn invite_without_sdp_gets_an_offer_and_the_ack_carries_the_answer() {
    let server = Server::start("");
    let mut events = server.events();
    let uac = Uac::new(&server, "offerless");
    uac.send(&uac.request("INVITE", "echo", 1, "", "inv2", ""));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    let offer = body(&ok);
    assert!(offer.contains("a=rtpmap:0 PCMU/8000"), "{offer}");
    assert!(offer.contains("telephone-event/8000"), "{offer}");
    let port = media_port(offer);
    let tag = to_tag(&ok);
    let mut ack = uac.request("ACK", "echo", 1, &tag, "ack2", &uac.sdp("0"));
    // The answer's address is where we send from; the echo goes to the packet's source anyway.
    assert!(ack.contains("m=audio"));
    uac.send(&std::mem::take(&mut ack));
    let modified = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionModified"
    });
    assert_eq!(
        modified["MediaTxPort"],
        uac.rtp.local_addr().unwrap().port()
    );
    assert_echo(&uac, port, 20);
    uac.send(&uac.request("BYE", "echo", 2, &tag, "bye2", ""));
    assert_eq!(status(&uac.final_response("BYE")), 200);
    server.wait_no_connections(Duration::from_secs(5));
}

#[test]
fn error_answers_name_the_problem_and_allocate_nothing() {
    let server = Server::start("");
    let uac = Uac::new(&server, "errors");

    uac.send(&uac.request("INVITE", "nobody", 1, "", "e1", &uac.sdp("0")));
    assert_eq!(status(&uac.final_response("INVITE")), 404);

    let mut other = Uac::new(&server, "nocodec");
    other.call_id.push('x');
    other.send(&other.request(
        "INVITE",
        "echo",
        1,
        "",
        "e2",
        &other.sdp("18\r\na=rtpmap:18 G729/8000"),
    ));
    let refused = other.final_response("INVITE");
    assert_eq!(status(&refused), 488, "{refused}");
    assert!(
        header(&refused, "Warning").is_some(),
        "488 says why: {refused}"
    );

    let unknown = uac.request("FROBNICATE", "echo", 5, "", "e3", "");
    uac.send(&unknown);
    assert_eq!(status(&uac.final_response("FROBNICATE")), 501);

    let no_call_id = uac
        .request("INVITE", "echo", 7, "", "e4", "")
        .lines()
        .filter(|l| !l.starts_with("Call-ID"))
        .collect::<Vec<_>>()
        .join("\r\n");
    uac.send(&no_call_id);
    let bad = uac.recv(Duration::from_secs(3)).expect("a 400");
    assert_eq!(status(&bad), 400, "{bad}");
    assert!(
        bad.lines().next().unwrap().contains("Call-ID"),
        "reason names the header: {bad}"
    );

    uac.send(&uac.request("BYE", "echo", 9, ";tag=nosuchdialog", "e5", ""));
    assert_eq!(status(&uac.final_response("BYE")), 481);

    // Garbage is dropped without an answer, and the server keeps serving.
    uac.sip
        .send_to(b"\x00\x01garbage\r\n\r\n", &uac.server)
        .unwrap();
    uac.send(&uac.request("OPTIONS", "echo", 10, "", "e6", ""));
    assert_eq!(status(&uac.final_response("OPTIONS")), 200);

    assert!(
        server.connections().is_empty(),
        "no connection was allocated"
    );
}

#[test]
fn compact_headers_and_multiple_vias_on_one_line_are_understood() {
    let server = Server::start("");
    let uac = Uac::new(&server, "compact");
    let port = uac.sip_port();
    let sdp = uac.sdp("8");
    let text = format!(
        "INVITE sip:echo@127.0.0.1:{sp} SIP/2.0\r\n\
         v: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKcmp1;rport, SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKupstream\r\n\
         f: <sip:uac@127.0.0.1:{port}>;tag=cmp\r\n\
         t: <sip:echo@127.0.0.1>\r\n\
         i: compact-{pid}@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         m: <sip:uac@127.0.0.1:{port}>\r\n\
         c: application/sdp\r\n\
         l: {len}\r\n\r\n{sdp}",
        sp = server.sip_port,
        pid = std::process::id(),
        len = sdp.len()
    );
    uac.send(&text);
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(body(&ok).contains("RTP/AVP 8"), "PCMA answered: {ok}");
    let vias: Vec<&str> = ok
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
        .collect();
    assert_eq!(vias.len(), 2, "both Vias returned: {ok}");
    assert!(
        vias[0].contains(&format!("rport={port}")),
        "rport filled: {}",
        vias[0]
    );
    let ack = format!(
        "ACK sip:uac@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKcmpack\r\n\
         From: <sip:uac@127.0.0.1:{port}>;tag=cmp\r\nTo: <sip:echo@127.0.0.1>{tag}\r\n\
         Call-ID: compact-{pid}@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        tag = to_tag(&ok),
        pid = std::process::id()
    );
    uac.send(&ack);
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("cmpack", "cmpbye");
    uac.send(&bye);
    assert_eq!(status(&uac.final_response("BYE")), 200);
    server.wait_no_connections(Duration::from_secs(5));
}

#[test]
fn an_answer_never_acknowledged_ends_with_bye_and_releases_the_connection() {
    // Test config: T1 = 100 ms, so the ACK wait (64*T1) is 6.4 s.
    let server = Server::start("");
    let mut events = server.events();
    let uac = Uac::new(&server, "noack");
    uac.send(&uac.request("INVITE", "echo", 1, "", "noack1", &uac.sdp("0")));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200);
    // Retransmissions of the 200 keep coming while we stay silent; then the server gives up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut retransmitted_200 = 0;
    let bye = loop {
        assert!(Instant::now() < deadline, "no BYE after the ACK timeout");
        let Some(msg) = uac.recv(Duration::from_millis(500)) else {
            continue;
        };
        if msg.starts_with("SIP/2.0 200") {
            retransmitted_200 += 1;
        } else if msg.starts_with("BYE ") {
            break msg;
        }
    };
    assert!(
        retransmitted_200 >= 3,
        "the 200 was retransmitted ({retransmitted_200})"
    );
    assert!(header(&bye, "Reason").is_some(), "BYE says why: {bye}");
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["Reason"], "ack-timeout");
    server.wait_no_connections(Duration::from_secs(2));
}

#[test]
fn only_trunks_may_call_and_a_reload_changes_who_they_are() {
    let trunk = "[[trunk]]\nname = \"pbx\"\nallow = [\"127.0.0.2\"]\n";
    let server = Server::start(trunk);
    // 127.0.0.1 is no trunk: 403, nothing allocated.
    let uac = Uac::new(&server, "trust1");
    uac.send(&uac.request("INVITE", "echo", 1, "", "tr1", &uac.sdp("0")));
    let refused = uac.final_response("INVITE");
    assert_eq!(status(&refused), 403, "{refused}");
    assert!(server.connections().is_empty());

    // Trunks are reloaded without a restart: now loopback may call, and anyone else is
    // ignored rather than refused.
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let config = config
        .replace("allow = [\"127.0.0.2\"]", "allow = [\"127.0.0.0/8\"]")
        .replace("[sip]\n", "[sip]\nuntrusted = \"ignore\"\n");
    std::fs::write(server.config_path(), config).unwrap();
    let reloaded = common::client()
        .post(server.url("/admin/reload"))
        .bearer_auth(common::TOKEN)
        .send()
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    let uac = Uac::new(&server, "trust2");
    uac.send(&uac.request("INVITE", "echo", 1, "", "tr2", &uac.sdp("0")));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200);
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", 1, &tag, "tr2a", ""));
    uac.send(&uac.request("BYE", "echo", 2, &tag, "tr2b", ""));
    assert_eq!(status(&uac.final_response("BYE")), 200);

    // Ignore mode: a source outside the trunks hears nothing at all.
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(
        server.config_path(),
        config.replace("allow = [\"127.0.0.0/8\"]", "allow = [\"127.0.0.2\"]"),
    )
    .unwrap();
    let reloaded = common::client()
        .post(server.url("/admin/reload"))
        .bearer_auth(common::TOKEN)
        .send()
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    let scanner = Uac::new(&server, "trust3");
    scanner.send(&scanner.request("OPTIONS", "echo", 1, "", "tr3", ""));
    scanner.send(&scanner.request("INVITE", "echo", 2, "", "tr4", &scanner.sdp("0")));
    assert!(
        scanner.recv(Duration::from_millis(800)).is_none(),
        "silence"
    );
    assert_eq!(
        server.metric("callbridge_sip_untrusted_requests_total"),
        3.0
    );
}

/// A phone behind NAT announces its private address in SDP and sends from its public one.
/// By default callbridge learns the public source from its first packets and answers there
/// (two-way audio, as Asterisk's strictrtp and rtpengine's endpoint learning do); a route
/// with `rtp_source = "strict"` accepts the SDP address only, so that phone hears nothing.
#[test]
fn a_caller_behind_nat_is_heard_and_answered_unless_its_route_is_strict() {
    let server = Server::start(
        "[[route]]\nuser = \"^strict$\"\nservice = \"echo\"\nrtp_source = \"strict\"\n",
    );
    for (user, learned) in [("echo", true), ("strict", false)] {
        // `uac.rtp` is the address in the SDP, where nothing is sent from; `public` is the
        // NAT's mapping the audio really comes from.
        let uac = Uac::new(&server, &format!("nat-{user}"));
        let public = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind public RTP");
        uac.send(&uac.request("INVITE", user, 1, "", &format!("nat{user}"), &uac.sdp("0")));
        let ok = uac.final_response("INVITE");
        assert_eq!(status(&ok), 200, "{ok}");
        let tag = to_tag(&ok);
        uac.send(&uac.request("ACK", user, 1, &tag, &format!("nat{user}a"), ""));
        let server_rtp = ([127, 0, 0, 1], media_port(body(&ok))).into();
        // 50 frames, paced, from the public address; what comes back, and to where.
        public
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut echoed = 0;
        let start = Instant::now();
        for n in 0..60u16 {
            if n < 50 {
                let mut packet = vec![0x80, 0, (n >> 8) as u8, n as u8];
                packet.extend_from_slice(&(u32::from(n) * 160).to_be_bytes());
                packet.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
                packet.extend_from_slice(&common::pcmu_frame(n));
                public.send_to(&packet, server_rtp).expect("send RTP");
            }
            let due = start + Duration::from_millis(20 * (u64::from(n) + 1));
            while Instant::now() < due {
                if let Ok((len, from)) = public.recv_from(&mut buf) {
                    let rtcp = len >= 2 && (192..=223).contains(&buf[1]);
                    if from == server_rtp && !rtcp {
                        echoed += 1;
                    }
                }
            }
        }
        uac.rtp
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let listed = server.connections();
        let stats = &listed[0]["Stats"];
        if learned {
            // The first packets teach the source and are not played.
            assert!(echoed >= 44, "{echoed} of 50 frames echoed");
            assert_eq!(stats["ForeignSourceDropped"], 0, "{listed:?}");
            assert!(
                stats["RtpPacketsReceived"].as_u64().unwrap() >= 47,
                "{listed:?}"
            );
            while let Ok((len, _)) = uac.rtp.recv_from(&mut buf) {
                assert!(
                    (192..=223).contains(&buf[1]) && len > 0,
                    "RTP went to the SDP address after the source was learned"
                );
            }
        } else {
            assert_eq!(
                echoed, 0,
                "strict: nothing back to an address not in the SDP"
            );
            assert_eq!(stats["ForeignSourceDropped"], 50, "{listed:?}");
            assert_eq!(stats["RtpPacketsReceived"], 0);
        }
        uac.send(&uac.request("BYE", user, 2, &tag, &format!("nat{user}b"), ""));
        assert_eq!(status(&uac.final_response("BYE")), 200);
        server.wait_no_connections(Duration::from_secs(5));
    }
}
