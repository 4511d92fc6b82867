//! End to end: conferences with the real binary — SIP callers in a `conference` route's room,
//! and the Media Control conference actions with API connections — checking the audio each
//! member hears, the three modes of DeleteConnection (connections, conferences, SIP dialogs
//! and events after each), the automatic release with the last connection, and the resource
//! counts.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::uac::{self, Uac};
use common::{heard, send_tone, tone_power, Server};
use serde_json::{json, Value};

const ROOM_ROUTE: &str = r#"
[[route]]
user = "^conf=(?P<conference>[^@;]+)$"
service = "conference"
"#;

/// A SIP caller in a call with callbridge: its UAC, the dialog's To tag and where callbridge
/// receives its RTP.
struct Caller {
    uac: Uac,
    to_tag: String,
    server_rtp: SocketAddr,
    cseq: u32,
}

impl Caller {
    /// INVITE (PCMU offer) to `user`, 200, ACK.
    fn call(server: &Server, name: &str, user: &str) -> Caller {
        Self::call_offering(server, name, user, "0 101")
    }

    /// INVITE offering `payload_types` to `user`, 200, ACK.
    fn call_offering(server: &Server, name: &str, user: &str, payload_types: &str) -> Caller {
        Self::call_with(server, name, user, |uac| uac.sdp(payload_types))
    }

    /// INVITE offering Opus on payload type 111, with `fmtp` when given, to `user`.
    fn call_opus(server: &Server, name: &str, user: &str, fmtp: Option<&str>) -> Caller {
        Self::call_with(server, name, user, |uac| {
            let fmtp = fmtp.map_or(String::new(), |f| format!("a=fmtp:111 {f}\r\n"));
            format!("{}a=rtpmap:111 opus/48000/2\r\n{fmtp}", uac.sdp("111"))
        })
    }

    /// INVITE with the offer `offer` makes for the caller's UAC, 200, ACK.
    fn call_with(
        server: &Server,
        name: &str,
        user: &str,
        offer: impl FnOnce(&Uac) -> String,
    ) -> Caller {
        let uac = Uac::new(server, name);
        let offer = offer(&uac);
        uac.send(&uac.request("INVITE", user, 1, "", &format!("{name}i"), &offer));
        let ok = uac.final_response("INVITE");
        assert_eq!(uac::status(&ok), 200, "{name}: {ok}\n{}", server.log());
        let to_tag = uac::to_tag(&ok);
        uac.send(&uac.request("ACK", user, 1, &to_tag, &format!("{name}a"), ""));
        let port = uac::media_port(uac::body(&ok));
        Caller {
            uac,
            to_tag,
            server_rtp: SocketAddr::from(([127, 0, 0, 1], port)),
            cseq: 1,
        }
    }

    /// Sends BYE and waits for its 200.
    fn hang_up(&mut self, user: &str) {
        self.cseq += 1;
        let bye = self
            .uac
            .request("BYE", user, self.cseq, &self.to_tag, "bye", "");
        self.uac.send(&bye);
        assert_eq!(uac::status(&self.uac.final_response("BYE")), 200);
    }

    /// Whether callbridge sends this caller a BYE within `within` (answered with 200).
    fn got_bye(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let Some(msg) = self.uac.recv(Duration::from_millis(100)) else {
                continue;
            };
            if msg.starts_with("BYE ") {
                let response = uac::ok_for(&msg);
                self.uac.send(&response);
                return true;
            }
        }
        false
    }
}

/// The conference listing, by id.
fn conference(server: &Server, id: &str) -> Option<Value> {
    server.get("/mediacontrol/conferences")["Conferences"]
        .as_array()
        .expect("Conferences array")
        .iter()
        .find(|c| c["ConferenceId"] == id)
        .cloned()
}

fn participants(conference: &Value) -> Vec<String> {
    conference["Participants"]
        .as_array()
        .expect("Participants")
        .iter()
        .map(|p| p["ConnectionId"].as_str().expect("id").to_string())
        .collect()
}

fn resources(server: &Server) -> (u64, u64, u64) {
    let r = server.get("/mediacontrol/resources");
    (
        r["Rtp"]["Used"].as_u64().expect("Rtp.Used"),
        r["EnhancedRtp"]["Used"].as_u64().expect("EnhancedRtp.Used"),
        r["Conference"]["Used"].as_u64().expect("Conference.Used"),
    )
}

/// The connection bound to the SIP call whose From tag is the caller's.
fn connection_of(server: &Server, call_index: usize) -> String {
    let calls = server.get("/callcontrol/calls")["Calls"]
        .as_array()
        .cloned()
        .expect("Calls");
    calls[call_index]["ConnectionId"]
        .as_str()
        .expect("ConnectionId")
        .to_string()
}

fn is(event: &Value, name: &str) -> bool {
    event["Event"] == name
}

#[test]
fn three_sip_callers_in_a_room_hear_each_other_and_every_delete_mode_does_what_it_says() {
    let server = Server::start(ROOM_ROUTE);
    let mut events = server.events();
    let mut callers: Vec<Caller> = (0..3)
        .map(|i| Caller::call(&server, &format!("room{i}"), "conf=room1"))
        .collect();
    let created = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceCreated"));
    assert_eq!(created["Name"], "room1");
    let conf = created["ConferenceId"].as_str().expect("id").to_string();
    let listing = conference(&server, &conf).expect("conference listed");
    assert_eq!(participants(&listing).len(), 3, "{listing:#}");
    assert_eq!(listing["Hairpin"], false);
    assert_eq!(
        resources(&server),
        (3, 0, 3),
        "3 RTP + 3 conference resources"
    );
    let ids: Vec<String> = (0..3).map(|i| connection_of(&server, i)).collect();

    // Caller 0 talks; 1 and 2 hear the tone, 0 does not hear itself.
    for c in &callers {
        heard(&c.uac.rtp);
    }
    send_tone(
        &callers[0].uac.rtp,
        callers[0].server_rtp,
        0x1111,
        1000.0,
        60,
    );
    let audio: Vec<Vec<i16>> = callers.iter().map(|c| heard(&c.uac.rtp)).collect();
    for (i, a) in audio.iter().enumerate() {
        assert!(
            a.len() >= 160 * 40,
            "caller {i} receives the mix: {}",
            a.len()
        );
    }
    for listener in &audio[1..] {
        assert!(
            tone_power(listener, 1000.0) > 1e5,
            "{}",
            tone_power(listener, 1000.0)
        );
    }
    assert!(
        tone_power(&audio[0], 1000.0) < tone_power(&audio[1], 1000.0) / 1000.0,
        "the talker does not hear itself"
    );
    let talking = events.wait_for(Duration::from_secs(5), |e| is(e, "TalkerStarted"));
    assert_eq!(talking["ConnectionId"], ids[0].as_str());

    // Mode 3 — both ids: caller 2 leaves the conference, its call and connection stay.
    let (code, body) = server.action(
        "DeleteConnection",
        json!({"ConnectionId": ids[2], "ConferenceId": conf}),
    );
    assert_eq!((code, body["ResultCode"].as_str()), (200, Some("0")));
    let left = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceLeft"));
    assert_eq!(left["ConnectionId"], ids[2].as_str());
    assert_eq!(left["Reason"], "api-request");
    assert!(
        !callers[2].got_bye(Duration::from_millis(500)),
        "no BYE on leave"
    );
    assert_eq!(participants(&conference(&server, &conf).unwrap()).len(), 2);
    assert_eq!(server.connections().len(), 3);
    assert_eq!(
        resources(&server),
        (3, 0, 2),
        "the conference resource came back"
    );

    // Mode 1 — connection only: caller 1's connection is released and its call ends.
    let (code, _) = server.action("DeleteConnection", json!({"ConnectionId": ids[1]}));
    assert_eq!(code, 200);
    assert!(
        callers[1].got_bye(Duration::from_secs(3)),
        "BYE to caller 1"
    );
    let released = events.wait_for(Duration::from_secs(5), |e| {
        is(e, "ConnectionReleased") && e["ConnectionId"] == ids[1].as_str()
    });
    assert_eq!(released["Reason"], "api-request");
    assert_eq!(released["ConferenceId"], conf.as_str());
    assert_eq!(
        participants(&conference(&server, &conf).unwrap()),
        [ids[0].clone()]
    );

    // The last member hangs up: the conference goes by itself.
    callers[0].hang_up("conf=room1");
    let gone = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceReleased"));
    assert_eq!(gone["ConferenceId"], conf.as_str());
    assert_eq!(gone["Reason"], "last-connection-left");
    assert!(conference(&server, &conf).is_none());
    let (code, body) = server.action(
        "JoinConference",
        json!({"ConnectionId": ids[2], "ConferenceId": conf}),
    );
    assert_eq!((code, body["ResultCode"].as_str()), (404, Some("24")));
    let (_, body) = server.action("DeleteConnection", json!({"ConferenceId": conf}));
    assert_eq!(body["ResultCode"], "24");

    // Caller 2 is still in its call; releasing its connection sends BYE.
    let (code, _) = server.action("DeleteConnection", json!({"ConnectionId": ids[2]}));
    assert_eq!(code, 200);
    assert!(callers[2].got_bye(Duration::from_secs(3)));
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(resources(&server), (0, 0, 0));
    callers.clear();
}

#[test]
fn releasing_a_conference_releases_every_connection_in_it_and_hangs_up_its_calls() {
    let server = Server::start(ROOM_ROUTE);
    let mut events = server.events();
    let callers: Vec<Caller> = (0..2)
        .map(|i| Caller::call(&server, &format!("rel{i}"), "conf=sales"))
        .collect();
    let created = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceCreated"));
    let conf = created["ConferenceId"].as_str().unwrap().to_string();
    // Mode 2 — conference only.
    let (code, body) = server.action("DeleteConnection", json!({"ConferenceId": conf}));
    assert_eq!((code, body["ResultCode"].as_str()), (200, Some("0")));
    for c in &callers {
        assert!(
            c.got_bye(Duration::from_secs(3)),
            "every call in it is hung up"
        );
    }
    let gone = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceReleased"));
    assert_eq!(gone["Reason"], "api-request");
    let released: Vec<Value> = events
        .drain()
        .iter()
        .filter(|e| is(e, "ConnectionReleased"))
        .cloned()
        .collect();
    assert_eq!(released.len(), 2, "{released:#?}");
    for e in &released {
        assert_eq!(e["Reason"], "conference-released");
        assert_eq!(e["ConferenceId"], conf.as_str());
    }
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(resources(&server), (0, 0, 0));
    // The room name is free again: the next caller starts a new conference.
    let _again = Caller::call(&server, "rel2", "conf=sales");
    let next = events.wait_for(Duration::from_secs(5), |e| {
        is(e, "ConferenceCreated") && e["ConferenceId"] != conf.as_str()
    });
    assert_eq!(next["Name"], "sales");
}

/// An API connection whose "phone" is a local UDP socket.
struct Leg {
    socket: UdpSocket,
    id: String,
    rx: SocketAddr,
}

fn api_leg(server: &Server) -> Leg {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().unwrap().port();
    let (code, body) = server.action(
        "CreateConnection",
        json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": port}),
    );
    assert_eq!(code, 200, "{body}");
    let rx = SocketAddr::new(
        body["MediaRxIP"].as_str().unwrap().parse().unwrap(),
        body["MediaRxPort"].as_u64().unwrap() as u16,
    );
    Leg {
        socket,
        id: body["ConnectionId"].as_str().unwrap().to_string(),
        rx,
    }
}

#[test]
fn api_conference_hairpin_promotion_coach_and_pupil_and_resource_limits() {
    let server = Server::start_with_overrides(&["resources.conference=2"]);
    let mut events = server.events();
    let a = api_leg(&server);
    let b = api_leg(&server);
    let (code, body) = server.action(
        "CreateConference",
        json!({"ConnectionId": a.id, "Hairpin": true}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ConnectionId"], a.id.as_str());
    let conf = body["ConferenceId"].as_str().unwrap().to_string();
    let (code, body) = server.action(
        "JoinConference",
        json!({"ConnectionId": b.id, "ConferenceId": conf}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        resources(&server).2,
        0,
        "a hairpin holds no conference resource"
    );
    assert_eq!(conference(&server, &conf).unwrap()["Hairpin"], true);
    // The hairpin carries audio both ways.
    heard(&a.socket);
    heard(&b.socket);
    send_tone(&a.socket, a.rx, 0xA, 1000.0, 40);
    assert!(
        tone_power(&heard(&b.socket), 1000.0) > 1e5,
        "B hears A through the hairpin"
    );

    // Errors leave everything as it was.
    let (_, body) = server.action("CreateConference", json!({"ConnectionId": a.id}));
    assert_eq!(body["ResultCode"], "15", "already in a conference");
    let (_, body) = server.action(
        "SetConfereeAttribute",
        json!({"ConnectionId": a.id, "ConferenceId": conf}),
    );
    assert_eq!(body["ResultCode"], "26", "no attribute given");
    let (_, body) = server.action(
        "SetConfereeAttribute",
        json!({"ConnectionId": a.id, "ConferenceId": conf, "Coach": true, "Pupil": true}),
    );
    assert_eq!(body["ResultCode"], "27");
    let (_, body) = server.action(
        "JoinConference",
        json!({"ConnectionId": a.id, "ConferenceId": 4242}),
    );
    assert_eq!(body["ResultCode"], "24");
    let (_, body) = server.action(
        "LeaveConference",
        json!({"ConnectionId": 777, "ConferenceId": conf}),
    );
    assert_eq!(body["ResultCode"], "23");

    // Coach on B promotes the hairpin: both now hold a conference resource.
    let (code, body) = server.action(
        "SetConfereeAttribute",
        json!({"ConnectionId": b.id, "ConferenceId": conf, "Coach": "true"}),
    );
    assert_eq!(code, 200, "{body}");
    events.wait_for(Duration::from_secs(5), |e| is(e, "ConferencePromoted"));
    assert_eq!(conference(&server, &conf).unwrap()["Hairpin"], false);
    assert_eq!(resources(&server).2, 2);

    // A third talker needs a conference resource: the limit (2) answers 8, nothing changes.
    let c = api_leg(&server);
    let (code, body) = server.action(
        "JoinConference",
        json!({"ConnectionId": c.id, "ConferenceId": conf}),
    );
    assert_eq!(
        (code, body["ResultCode"].as_str()),
        (503, Some("8")),
        "{body}"
    );
    assert_eq!(participants(&conference(&server, &conf).unwrap()).len(), 2);
    assert_eq!(
        server.connections().len(),
        3,
        "the refused connection is still there"
    );
    // A monitor takes no conference resource.
    let (code, body) = server.action(
        "JoinConference",
        json!({"ConnectionId": c.id, "ConferenceId": conf, "Monitor": true}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        resources(&server).2,
        2,
        "the monitor holds no conference resource"
    );

    // The coach (B) is heard by the pupil only: A is not the pupil yet, so it hears nothing;
    // the monitor C hears everyone but the coach.
    for leg in [&a, &b, &c] {
        heard(&leg.socket);
    }
    send_tone(&b.socket, b.rx, 0xB, 700.0, 40);
    assert!(
        tone_power(&heard(&a.socket), 700.0) < 1e3,
        "the coach is not heard by non-pupils"
    );
    assert!(
        tone_power(&heard(&c.socket), 700.0) < 1e3,
        "nor by a monitor"
    );
    let (code, _) = server.action(
        "SetConfereeAttribute",
        json!({"ConnectionId": a.id, "ConferenceId": conf, "Pupil": true}),
    );
    assert_eq!(code, 200);
    heard(&a.socket);
    send_tone(&b.socket, b.rx, 0xB, 700.0, 40);
    assert!(
        tone_power(&heard(&a.socket), 700.0) > 1e5,
        "the pupil hears the coach"
    );
    // A talks: B and the monitor C hear it.
    heard(&b.socket);
    heard(&c.socket);
    send_tone(&a.socket, a.rx, 0xA, 1000.0, 40);
    assert!(tone_power(&heard(&b.socket), 1000.0) > 1e5);
    assert!(
        tone_power(&heard(&c.socket), 1000.0) > 1e5,
        "the monitor hears the conference"
    );
    // Mute A: nobody hears it.
    let (code, _) = server.action(
        "SetConfereeAttribute",
        json!({"ConnectionId": a.id, "ConferenceId": conf, "Mute": true}),
    );
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_millis(60));
    heard(&b.socket);
    send_tone(&a.socket, a.rx, 0xA, 1000.0, 30);
    assert!(
        tone_power(&heard(&b.socket), 1000.0) < 1e3,
        "muted A is not heard"
    );

    // LeaveConference, then release the rest: the conference goes with its last member.
    let (code, _) = server.action(
        "LeaveConference",
        json!({"ConnectionId": c.id, "ConferenceId": conf}),
    );
    assert_eq!(code, 200);
    assert_eq!(server.connections().len(), 3);
    for leg in [&a, &b] {
        let (code, _) = server.action("DeleteConnection", json!({"ConnectionId": leg.id}));
        assert_eq!(code, 200);
    }
    let gone = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceReleased"));
    assert_eq!(gone["Reason"], "last-connection-left");
    let (_, body) = server.action("DeleteConnection", json!({"ConnectionId": c.id}));
    assert_eq!(body["ResultCode"], "0");
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(resources(&server), (0, 0, 0));
}

#[test]
fn a_reserved_connection_is_completed_while_creating_a_conference() {
    let server = Server::start("");
    let (code, body) = server.action("ReserveConnection", json!({}));
    assert_eq!(code, 200);
    let id = body["ConnectionId"].as_str().unwrap().to_string();
    let (_, body) = server.action("CreateConference", json!({"ConnectionId": id}));
    assert_eq!(
        body["ResultCode"], "26",
        "a reserved connection needs its Tx address"
    );
    let (code, body) = server.action(
        "CreateConference",
        json!({"ConnectionId": id, "MediaTxIP": "127.0.0.1", "MediaTxPort": 4000}),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body["MediaRxPort"].as_u64().is_some());
    let listed = server.connections();
    assert_eq!(listed[0]["State"], "connected");
    assert_eq!(listed[0]["MediaTxPort"], 4000);
}

#[test]
fn rtp_and_enhanced_resources_run_out_cleanly() {
    let server = Server::start_with_overrides(&["resources.rtp=2", "resources.enhanced_rtp=1"]);
    // A G.722 call holds an RTP and an enhanced RTP resource.
    let mut wideband = Caller::call_offering(&server, "wb1", "echo", "9");
    assert_eq!(resources(&server), (1, 1, 0));
    // A second G.722 call finds no enhanced resource: 503, nothing allocated.
    let refused = Uac::new(&server, "wb2");
    refused.send(&refused.request("INVITE", "echo", 1, "", "wb2i", &refused.sdp("9")));
    assert_eq!(uac::status(&refused.final_response("INVITE")), 503);
    assert_eq!(resources(&server), (1, 1, 0));
    assert_eq!(server.connections().len(), 1);
    // A re-INVITE to G.711 gives the enhanced resource back; back to G.722 takes it again.
    for (payload_types, enhanced) in [("0", 0), ("9", 1)] {
        wideband.cseq += 1;
        let offer = wideband.uac.sdp(payload_types);
        let reinvite = wideband.uac.request(
            "INVITE",
            "echo",
            wideband.cseq,
            &wideband.to_tag,
            &format!("re{}", wideband.cseq),
            &offer,
        );
        wideband.uac.send(&reinvite);
        assert_eq!(uac::status(&wideband.uac.final_response("INVITE")), 200);
        let ack = wideband.uac.request(
            "ACK",
            "echo",
            wideband.cseq,
            &wideband.to_tag,
            &format!("re{}a", wideband.cseq),
            "",
        );
        wideband.uac.send(&ack);
        let deadline = Instant::now() + Duration::from_secs(2);
        while resources(&server) != (1, enhanced, 0) {
            assert!(
                Instant::now() < deadline,
                "{payload_types}: {:?}",
                resources(&server)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // G.711 needs no enhanced resource: the second RTP resource is taken, then none is left (4).
    let leg = api_leg(&server);
    let (code, body) = server.action(
        "CreateConnection",
        json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000}),
    );
    assert_eq!(
        (code, body["ResultCode"].as_str()),
        (503, Some("4")),
        "{body}"
    );
    assert_eq!(resources(&server), (2, 1, 0));
    wideband.hang_up("echo");
    let (code, _) = server.action("DeleteConnection", json!({"ConnectionId": leg.id}));
    assert_eq!(code, 200);
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(
        resources(&server),
        (0, 0, 0),
        "every release gives back what it took"
    );
}

#[test]
fn sound_tone_on_join_beeps_to_the_members_when_someone_joins() {
    let server = Server::start("");
    let a = api_leg(&server);
    let b = api_leg(&server);
    let (code, body) = server.action(
        "CreateConference",
        json!({"ConnectionId": a.id, "SoundToneOnJoin": true}),
    );
    assert_eq!(code, 200, "{body}");
    let conf = body["ConferenceId"].as_str().unwrap().to_string();
    heard(&a.socket);
    let (code, _) = server.action(
        "JoinConference",
        json!({"ConnectionId": b.id, "ConferenceId": conf}),
    );
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_millis(300));
    let beep = heard(&a.socket);
    assert!(
        tone_power(&beep, 1000.0) > 1e4,
        "A hears the join tone: {}",
        tone_power(&beep, 1000.0)
    );
    // Without SoundToneOnJoin, a join is silent.
    let c = api_leg(&server);
    let d = api_leg(&server);
    let (_, body) = server.action("CreateConference", json!({"ConnectionId": c.id}));
    let quiet = body["ConferenceId"].as_str().unwrap().to_string();
    heard(&c.socket);
    server.action(
        "JoinConference",
        json!({"ConnectionId": d.id, "ConferenceId": quiet}),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(tone_power(&heard(&c.socket), 1000.0) < 1e3);
}

/// Opus RTP packets of a 1 kHz tone with white noise above it (fullband audio), 20 ms apart
/// from `socket` to `to`, encoded as a fullband softphone would.
fn send_fullband_opus(socket: &UdpSocket, to: SocketAddr, frames: u32) {
    use callbridge::media::opus::{OpusConfig, OpusEncoder};
    let mut encoder = OpusEncoder::new(&OpusConfig::default()).expect("encoder");
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let mut packet = [0u8; 1500];
    let start = Instant::now();
    for index in 0..frames {
        let pcm: Vec<i16> = (0..960u32)
            .map(|i| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                let t = f64::from(index * 960 + i) / 48_000.0;
                (4000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                    + ((noise >> 52) as i16 - 2048)
            })
            .collect();
        packet[..12].copy_from_slice(&[0x80, 111, 0, 0, 0, 0, 0, 0, 0, 0, 0x22, 0x22]);
        packet[2..4].copy_from_slice(&(index as u16).to_be_bytes());
        packet[4..8].copy_from_slice(&(index * 960).to_be_bytes());
        let len = 12 + encoder.encode(&pcm, &mut packet[12..]).expect("encodes");
        let due = start + Duration::from_millis(20 * u64::from(index));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket.send_to(&packet[..len], to).expect("send RTP");
    }
}

/// The Opus packets received on `socket` so far: the audio band of each (its TOC byte, as a
/// sample rate) and the audio decoded at 8 kHz (for [`tone_power`]). Drops RTCP.
fn heard_opus(socket: &UdpSocket) -> (Vec<u32>, Vec<i16>) {
    let (bands, pcm, _) = heard_opus_sized(socket);
    (bands, pcm)
}

/// [`heard_opus`], and the mean payload size in bytes.
fn heard_opus_sized(socket: &UdpSocket) -> (Vec<u32>, Vec<i16>, usize) {
    use callbridge::media::opus::{packet_audio_rate, OpusDecoder};
    std::thread::sleep(Duration::from_millis(80));
    socket.set_nonblocking(true).expect("non-blocking");
    let mut decoder = OpusDecoder::new(8000).expect("decoder");
    let (mut bands, mut pcm, mut bytes) = (Vec::new(), Vec::new(), 0);
    let mut buf = [0u8; 2048];
    let mut frame = [0i16; 960];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        if n <= 12 || (200..=207).contains(&buf[1]) {
            continue;
        }
        assert_eq!(buf[1] & 0x7f, 111, "Opus on the payload type offered");
        bands.push(packet_audio_rate(&buf[12..n]).expect("a packet"));
        bytes += n - 12;
        let samples = decoder.decode(&buf[12..n], &mut frame).expect("decodes");
        pcm.extend_from_slice(&frame[..samples]);
    }
    socket.set_nonblocking(false).expect("blocking");
    let mean = bytes / bands.len().max(1);
    (bands, pcm, mean)
}

/// RFC 7587 §6.1 and issue 19: an Opus member is sent no wider a band than the audio it hears
/// can hold (a room whose talkers are G.711 callers: narrowband) nor than its phone plays back
/// (`maxplaybackrate`), no more bits than it asked for (`maxaveragebitrate`), and the
/// fullband member who may hear fullband gets it.
#[test]
fn opus_members_are_sent_the_band_they_can_hear_and_play_no_wider() {
    let server = Server::start(ROOM_ROUTE);
    // A G.711 caller opens the room (8 kHz), an Opus caller joins and hears it talk.
    let pstn = Caller::call(&server, "nb0", "conf=narrow");
    let opus = Caller::call_opus(&server, "nb1", "conf=narrow", None);
    heard_opus(&opus.uac.rtp);
    send_tone(&pstn.uac.rtp, pstn.server_rtp, 0x1111, 1000.0, 50);
    let (bands, pcm) = heard_opus(&opus.uac.rtp);
    assert!(bands.len() >= 40, "{} packets", bands.len());
    assert!(
        bands.iter().all(|&band| band == 8000),
        "narrowband from the first packet: {bands:?}"
    );
    let tail = &pcm[pcm.len() / 2..];
    assert!(
        tone_power(tail, 1000.0) > tone_power(tail, 2300.0) * 100.0,
        "the caller's tone is heard"
    );

    // An Opus softphone opens a fullband room and talks; one member plays back wideband at
    // most, another has no limit.
    let talker = Caller::call_opus(&server, "fb0", "conf=full", None);
    let wideband = Caller::call_opus(
        &server,
        "fb1",
        "conf=full",
        Some("maxplaybackrate=16000; useinbandfec=1; maxaveragebitrate=12000"),
    );
    let fullband = Caller::call_opus(&server, "fb2", "conf=full", Some("useinbandfec=1"));
    for c in [&wideband, &fullband] {
        heard_opus(&c.uac.rtp);
    }
    send_fullband_opus(&talker.uac.rtp, talker.server_rtp, 50);
    let (wide_bands, wide_pcm, wide_bytes) = heard_opus_sized(&wideband.uac.rtp);
    let (full_bands, full_pcm, full_bytes) = heard_opus_sized(&fullband.uac.rtp);
    // maxaveragebitrate=12000: 30 bytes a 20 ms packet on average; ours is 24 kb/s (60).
    assert!(
        wide_bytes <= 33 && full_bytes >= 45,
        "{wide_bytes} / {full_bytes} bytes a packet"
    );
    assert!(wide_bands.len() >= 40 && full_bands.len() >= 40);
    assert!(
        wide_bands.iter().all(|&band| band == 16_000),
        "maxplaybackrate=16000: wideband: {wide_bands:?}"
    );
    assert!(
        full_bands.iter().filter(|&&band| band == 48_000).count() >= 40,
        "no limit: the talker's fullband: {full_bands:?}"
    );
    for pcm in [&wide_pcm, &full_pcm] {
        let tail = &pcm[pcm.len() / 2..];
        assert!(tone_power(tail, 1000.0) > tone_power(tail, 300.0) * 20.0);
    }

    // A softphone that says it captures 16 kHz audio (`sprop-maxcapturerate`) is heard as
    // wideband, whatever band its encoder codes.
    let declared = Caller::call_opus(
        &server,
        "sp0",
        "conf=declared",
        Some("sprop-maxcapturerate=16000"),
    );
    let listener = Caller::call_opus(&server, "sp1", "conf=declared", None);
    heard_opus(&listener.uac.rtp);
    send_fullband_opus(&declared.uac.rtp, declared.server_rtp, 50);
    let (bands, _) = heard_opus(&listener.uac.rtp);
    assert!(bands.len() >= 40, "{} packets", bands.len());
    // Until its first packet has come in, nobody has said anything: the room's own band.
    assert!(
        bands[2..].iter().all(|&band| band == 16_000),
        "sprop-maxcapturerate=16000: wideband: {bands:?}"
    );
}

const BRIDGE_ROUTE: &str = r#"
[[route]]
user = "^bridge=(?P<conference>[^@;]+)$"
service = "conference"
hairpin = true
"#;

#[test]
fn a_hairpin_route_joins_two_callers_without_a_mix_and_a_third_promotes_the_room() {
    let server = Server::start(BRIDGE_ROUTE);
    let mut events = server.events();
    let mut callers: Vec<Caller> = (0..2)
        .map(|i| Caller::call(&server, &format!("br{i}"), "bridge=b1"))
        .collect();
    let created = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceCreated"));
    assert_eq!(created["Name"], "b1");
    let conf = created["ConferenceId"].as_str().expect("id").to_string();
    let listing = conference(&server, &conf).expect("conference listed");
    assert_eq!(listing["Hairpin"], true, "{listing:#}");
    assert_eq!(participants(&listing).len(), 2);
    assert_eq!(
        resources(&server),
        (2, 0, 0),
        "a hairpin holds no conference resource"
    );

    // Each hears the other, not itself.
    for c in &callers {
        heard(&c.uac.rtp);
    }
    send_tone(
        &callers[0].uac.rtp,
        callers[0].server_rtp,
        0x2222,
        1000.0,
        40,
    );
    let audio: Vec<Vec<i16>> = callers.iter().map(|c| heard(&c.uac.rtp)).collect();
    assert!(
        tone_power(&audio[1], 1000.0) > 1e5,
        "{}",
        tone_power(&audio[1], 1000.0)
    );
    assert!(tone_power(&audio[0], 1000.0) < tone_power(&audio[1], 1000.0) / 1000.0);

    // A third caller promotes the room to a mix: the other two hear the talker.
    callers.push(Caller::call(&server, "br2", "bridge=b1"));
    let listing = conference(&server, &conf).expect("still listed");
    assert_eq!(listing["Hairpin"], false, "{listing:#}");
    assert_eq!(participants(&listing).len(), 3);
    assert_eq!(resources(&server), (3, 0, 3));
    for c in &callers {
        heard(&c.uac.rtp);
    }
    send_tone(
        &callers[0].uac.rtp,
        callers[0].server_rtp,
        0x3333,
        1000.0,
        40,
    );
    let audio: Vec<Vec<i16>> = callers.iter().map(|c| heard(&c.uac.rtp)).collect();
    for listener in &audio[1..] {
        assert!(
            tone_power(listener, 1000.0) > 1e5,
            "{}",
            tone_power(listener, 1000.0)
        );
    }
    for c in &mut callers {
        c.hang_up("bridge=b1");
    }
    let gone = events.wait_for(Duration::from_secs(5), |e| is(e, "ConferenceReleased"));
    assert_eq!(gone["ConferenceId"], conf.as_str());
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(resources(&server), (0, 0, 0));
}
