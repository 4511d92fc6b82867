//! End to end: the agent gateway's sign-in, Guids and event polling (seed 03's prerequisites:
//! "The agent has signed in"), against the real binary on loopback: agents added with
//! `callbridge ctl agents`, the vendor's paths and fields, plain HTTP (`insecure_http`) and
//! HTTPS with a real TLS client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, free_tcp_port, Server};
use serde_json::{json, Value};

/// A gateway with fast Guid rotation (1 s), expiry (2.5 s), a 0.5 s long poll and a 3 s
/// heartbeat, and agents 1001 and 1002.
fn gateway(extra: &str) -> (Server, String) {
    let port = free_tcp_port();
    let config = format!(
        "[agent_gateway]\nlisten = \"127.0.0.1:{port}\"\nguid_interval_ms = 1000\n\
         guid_timeout_ms = 2500\npoll_wait_ms = 500\nheartbeat_timeout_ms = 3000\n{extra}"
    );
    let server = Server::start(&config);
    for agent in ["1001", "1002"] {
        let (ok, out) = server.ctl(&["agents", "add", agent, "--password", "agent-pw"]);
        assert!(ok, "{out}");
    }
    (server, format!("127.0.0.1:{port}"))
}

fn insecure() -> (Server, String) {
    gateway("insecure_http = true\n")
}

/// One request: status, `Set-GUID` (without `JSESSIONID=`), JSON body.
fn call(
    method: reqwest::Method,
    url: &str,
    guid: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = client()
        .request(method, url)
        .header("Content-Type", "application/json; charset=UTF-8")
        .timeout(Duration::from_secs(10));
    if let Some(guid) = guid {
        request = request.header("Guid", guid);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let r = request.send().expect("gateway reachable");
    let status = r.status().as_u16();
    let set_guid = r
        .headers()
        .get("set-guid")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("JSESSIONID=").to_string());
    let text = r.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}"));
    (status, set_guid, body)
}

fn online(at: &str, agent: &str, suffix: &str) -> String {
    format!("http://{at}/agentgateway/resource/onlineagent/{agent}{suffix}")
}

fn sign_in(at: &str, agent: &str, force: bool) -> (Option<String>, Value) {
    let suffix = if force { "/forcelogin" } else { "" };
    let (status, guid, body) = call(
        reqwest::Method::PUT,
        &online(at, agent, suffix),
        None,
        Some(json!({"password": "agent-pw", "phonenum": "6001"})),
    );
    assert_eq!(status, 200);
    (guid, body)
}

fn poll(at: &str, agent: &str, guid: &str) -> (Option<String>, Value) {
    let (status, set_guid, body) = call(
        reqwest::Method::GET,
        &format!("http://{at}/agentgateway/resource/agentevent/{agent}"),
        Some(guid),
        None,
    );
    assert_eq!(status, 200);
    (set_guid, body)
}

#[test]
fn agents_sign_in_once_force_out_the_old_session_and_sign_out() {
    let (_server, at) = insecure();
    let (guid, body) = sign_in(&at, "1001", false);
    assert_eq!(body["retcode"], "0", "{body}");
    assert_eq!(body["result"]["workno"], "1001");
    let guid = guid.expect("Set-GUID on sign-in");
    assert!(guid.ends_with(".AgentGateway1"), "{guid}");
    // Signed in already: 100-002; the force replaces the session and its Guid.
    let (_, again) = sign_in(&at, "1001", false);
    assert_eq!(again["retcode"], "100-002", "{again}");
    let (forced, body) = sign_in(&at, "1001", true);
    assert_eq!(body["retcode"], "0", "{body}");
    let forced = forced.expect("a new Guid");
    assert_ne!(forced, guid);
    let (_, old) = poll(&at, "1001", &guid);
    assert_eq!(
        old["retcode"], "100-006",
        "the replaced desktop is signed out: {old}"
    );
    // The new session's first poll has AgentState_Ready at once; the next is empty after the
    // long poll's wait.
    let (_, ready) = poll(&at, "1001", &forced);
    assert_eq!(ready["retcode"], "0", "{ready}");
    assert_eq!(ready["event"]["eventType"], "AgentState_Ready", "{ready}");
    assert_eq!(ready["event"]["workNo"], "1001");
    let started = Instant::now();
    let (_, empty) = poll(&at, "1001", &forced);
    assert_eq!(empty["retcode"], "0");
    assert!(empty["event"].is_null(), "{empty}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the poll waited for an event ({:?})",
        started.elapsed()
    );
    // Sign-out needs the Guid; then the session is gone.
    let url = online(&at, "1001", "/logout");
    let (_, _, wrong) = call(reqwest::Method::DELETE, &url, Some("nope"), None);
    assert_eq!(wrong["retcode"], "100-006", "{wrong}");
    let (_, _, out) = call(reqwest::Method::DELETE, &url, Some(&forced), None);
    assert_eq!(out["retcode"], "0", "{out}");
    let (_, gone) = poll(&at, "1001", &forced);
    assert_eq!(gone["retcode"], "100-006");
}

#[test]
fn bad_credentials_and_bodies_are_refused_with_the_vendor_codes() {
    let (_server, at) = insecure();
    let put = |agent: &str, body: &str| {
        let r = client()
            .put(online(&at, agent, ""))
            .header("Content-Type", "application/json; charset=UTF-8")
            .body(body.to_string())
            .send()
            .expect("gateway reachable");
        let body: Value = serde_json::from_str(&r.text().unwrap()).expect("JSON");
        body
    };
    let wrong = put("1001", r#"{"password":"nope","phonenum":"6001"}"#);
    assert_eq!(wrong["retcode"], "000-003", "{wrong}");
    let unknown = put("4444", r#"{"password":"agent-pw","phonenum":"6001"}"#);
    assert_eq!(
        unknown["retcode"], "000-003",
        "an unknown agent looks like a wrong password"
    );
    for (body, field) in [
        ("{not json", ""),
        (r#"{"password":"agent-pw"}"#, "phonenum"),
        (r#"{"password":"agent-pw","phonenum":"60a1"}"#, "phonenum"),
        (r#"{"password":"agent-pw","phonenum":{"n":1}}"#, "phonenum"),
    ] {
        let answer = put("1001", body);
        assert_eq!(answer["retcode"], "000-002", "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let out_of_range = put("99", r#"{"password":"agent-pw","phonenum":"6001"}"#);
    assert_eq!(out_of_range["retcode"], "000-002", "{out_of_range}");
    // Agent conference requests need a signed-in agent's Guid, then a conference.
    let conf = |guid: &str, op: &str| {
        let (_, _, body) = call(
            reqwest::Method::POST,
            &format!("http://{at}/agentgateway/resource/agentconf/1001/{op}"),
            Some(guid),
            Some(json!({})),
        );
        body
    };
    assert_eq!(conf("nope", "releaseagentconf")["retcode"], "100-006");
    let (guid, _) = sign_in(&at, "1001", false);
    let guid = guid.unwrap();
    let none = conf(&guid, "releaseagentconf");
    assert_eq!(none["retcode"], "101-001", "{none}");
    let unknown = conf(&guid, "dance");
    assert_eq!(unknown["retcode"], "000-002", "{unknown}");
    let bad = conf(&guid, "requestagentconf");
    assert_eq!(bad["retcode"], "000-002", "memberNum is mandatory: {bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("memberNum"),
        "{bad}"
    );
}

#[test]
fn dynamic_guids_rotate_on_the_poll_and_the_old_one_expires() {
    let (_server, at) = insecure();
    let (guid, _) = sign_in(&at, "1002", false);
    let first = guid.expect("Guid");
    let (rotated, ready) = poll(&at, "1002", &first);
    assert_eq!(ready["event"]["eventType"], "AgentState_Ready");
    assert!(rotated.is_none(), "no rotation before the interval");
    std::thread::sleep(Duration::from_millis(1100));
    let (rotated, _) = poll(&at, "1002", &first);
    let second = rotated.expect("a poll after the interval carries the new Guid in Set-GUID");
    assert_ne!(second, first);
    // The old Guid still works for a while after its rotation, then no more.
    let (_, still) = poll(&at, "1002", &first);
    assert_eq!(still["retcode"], "0", "{still}");
    // updateGuid hands out a new one at once.
    let (_, header, updated) = call(
        reqwest::Method::PUT,
        &online(&at, "1002", "/updateGuid"),
        Some(&second),
        None,
    );
    assert_eq!(updated["retcode"], "0", "{updated}");
    let third = updated["result"]["guid"]
        .as_str()
        .expect("result.guid")
        .to_string();
    assert_eq!(header.as_deref(), Some(third.as_str()));
    // Polls keep the session alive (each may rotate the Guid again) while the first Guid's
    // time runs out: 2.5 s after its rotation.
    let mut current = third;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1300));
        let (rotated, alive) = poll(&at, "1002", &current);
        assert_eq!(alive["retcode"], "0", "{alive}");
        if let Some(newer) = rotated {
            current = newer;
        }
    }
    let (_, expired) = poll(&at, "1002", &first);
    assert_eq!(expired["retcode"], "100-006", "{expired}");
    let (_, fine) = poll(&at, "1002", &current);
    assert_eq!(fine["retcode"], "0", "{fine}");
}

#[test]
fn an_agent_whose_polls_stop_is_signed_out() {
    let (_server, at) = insecure();
    let (guid, _) = sign_in(&at, "1001", false);
    let guid = guid.unwrap();
    let (_, ready) = poll(&at, "1001", &guid);
    assert_eq!(ready["retcode"], "0");
    std::thread::sleep(Duration::from_millis(4500));
    let (_, gone) = poll(&at, "1001", &guid);
    assert_eq!(gone["retcode"], "100-006", "{gone}");
    // Signed out, not stuck: a plain sign-in works again.
    let (_, body) = sign_in(&at, "1001", false);
    assert_eq!(body["retcode"], "0", "{body}");
}

#[test]
fn the_gateway_serves_https_and_refuses_to_start_without_tls_or_insecure_http() {
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = common::self_signed_certificate(dir.path());
    let (server, at) = gateway(&format!(
        "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
        certificate.display(),
        key.display()
    ));
    // A real TLS client that trusts the test's certificate.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&certificate).unwrap();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: rustls_pki_types::CertificateDer = cert.unwrap();
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(&at).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let body = r#"{"password":"agent-pw","phonenum":"6001"}"#;
    write!(
        tls,
        "PUT /agentgateway/resource/onlineagent/1001 HTTP/1.1\r\nHost: {at}\r\n\
         Content-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("set-guid: jsessionid="),
        "{answer}"
    );
    assert!(answer.contains("\"retcode\":\"0\""), "{answer}");
    // Plain HTTP to the TLS port gets nowhere.
    assert!(client()
        .put(format!(
            "http://{at}/agentgateway/resource/onlineagent/1002"
        ))
        .body(body)
        .timeout(Duration::from_secs(3))
        .send()
        .is_err());
    drop(server);
    // Neither TLS nor insecure_http: the configuration is refused, and says why.
    let port = free_tcp_port();
    let path = dir.path().join("no-tls.toml");
    std::fs::write(
        &path,
        format!("[agent_gateway]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let (accepted, said) = common::check_config(&path);
    assert!(!accepted);
    assert!(said.contains("insecure_http"), "{said}");
}

/// An agent signed in and polling: its Guid, and the events it has received so far.
struct Desk {
    at: String,
    agent: String,
    guid: String,
    seen: Vec<Value>,
}

impl Desk {
    fn sign_in(at: &str, agent: &str) -> Desk {
        let (guid, body) = sign_in(at, agent, false);
        assert_eq!(body["retcode"], "0", "{body}");
        let mut desk = Desk {
            at: at.to_string(),
            agent: agent.to_string(),
            guid: guid.expect("Guid"),
            seen: Vec::new(),
        };
        desk.wait_for("AgentState_Ready");
        desk
    }

    fn conf(&self, op: &str, body: Value) -> Value {
        let (status, _, answer) = call(
            reqwest::Method::POST,
            &format!(
                "http://{}/agentgateway/resource/agentconf/{}/{op}",
                self.at, self.agent
            ),
            Some(&self.guid),
            Some(body),
        );
        assert_eq!(status, 200);
        answer
    }

    /// Polls until an event of `kind` arrives (the Guid follows rotations); returns it.
    fn wait_for(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.seen.iter().find(|e| e["eventType"] == kind) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "agent {} never got {kind}; got {:?}",
                self.agent,
                self.kinds()
            );
            let (rotated, answer) = poll(&self.at, &self.agent, &self.guid);
            if let Some(guid) = rotated {
                self.guid = guid;
            }
            assert_eq!(answer["retcode"], "0", "{answer}");
            if !answer["event"].is_null() {
                self.seen.push(answer["event"].clone());
            }
        }
    }

    /// Polls until an `AgentConf_ParticipantChanged` of `change_type` (and, for a leave,
    /// `change_reason`) arrives.
    fn wait_for_change(&mut self, change_type: u64) -> Value {
        self.wait_for_leave(change_type, None)
    }

    fn wait_for_leave(&mut self, change_type: u64, change_reason: Option<u64>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.seen.iter().find(|e| {
                e["eventType"] == "AgentConf_ParticipantChanged"
                    && e["content"]["changeType"] == change_type
                    && change_reason.is_none_or(|r| e["content"]["changeReason"] == r)
            });
            if let Some(e) = found {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no changeType {change_type}: {:?}",
                self.seen
            );
            let (rotated, answer) = poll(&self.at, &self.agent, &self.guid);
            if let Some(guid) = rotated {
                self.guid = guid;
            }
            if !answer["event"].is_null() {
                self.seen.push(answer["event"].clone());
            }
        }
    }

    fn kinds(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|e| e["eventType"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

#[test]
fn a_chair_conference_with_a_phone_and_an_agent_is_released_with_the_seeds_events() {
    // The phones: a SIPp UAS behind the trunk answers every call and waits for our BYE.
    let (phones, sipp) = common::sipp_uas_on_a_free_port(&["-sf", "uas_answer.xml", "-m", "3"]);
    let (server, at) = gateway(&format!(
        "insecure_http = true\n[[trunk]]\nname = \"pbx\"\naddress = \"127.0.0.1:{phones}\"\nrecord = \"always\"\n"
    ));
    let (ok, out) = server.ctl(&["agents", "add", "1003", "--password", "agent-pw"]);
    assert!(ok, "{out}");
    let mut chair = Desk::sign_in(&at, "1001");
    let mut member = Desk::sign_in(&at, "1002");
    let mut decliner = Desk::sign_in(&at, "1003");

    // requestagentconf: the chair's phone is called; when it answers the conference exists.
    let answer = chair.conf(
        "requestagentconf",
        json!({"memberNum": 4, "time": 30, "promptTime": 5}),
    );
    assert_eq!(answer["retcode"], "0", "{answer}");
    let success = chair.wait_for("AgentConf_RequestSuccess");
    let conf_id = success["content"]["confId"].clone();
    for kind in [
        "AgentState_Busy",
        "AgentOther_PhoneAlerting",
        "AgentOther_PhoneOffhook",
        "AgentConf_SelfJoinResult",
    ] {
        assert!(
            chair.kinds().contains(&kind.to_string()),
            "{kind}: {:?}",
            chair.kinds()
        );
    }
    // A second conference for the same agent: 101-003.
    assert_eq!(
        chair.conf("requestagentconf", json!({"memberNum": 2}))["retcode"],
        "101-003"
    );

    // batchaddparticipant: a number, and two agents (one answers, one declines).
    let added = chair.conf(
        "batchaddparticipant",
        json!({"addresses": [
            {"addressType": 6, "address": "7001"},
            {"addressType": 9, "address": "1002"},
            {"addressType": 9, "address": "1003"},
        ]}),
    );
    assert_eq!(added["retcode"], "0", "{added}");
    // Only the chair adds: 101-002.
    assert_eq!(
        member.conf(
            "batchaddparticipant",
            json!({"addresses": [{"addressType": 6, "address": "7002"}]})
        )["retcode"],
        "101-002"
    );
    member.wait_for("AgentConf_Ringing");
    decliner.wait_for("AgentConf_Ringing");
    assert_eq!(member.conf("answeragentconf", json!({}))["retcode"], "0");
    assert_eq!(decliner.conf("rejectagentconf", json!({}))["retcode"], "0");
    decliner.wait_for("AgentOther_PhoneRelease");
    member.wait_for("AgentConf_SelfJoinResult");
    // The chair hears of the number joining and of the agent joining.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let joins: Vec<String> = chair
            .seen
            .iter()
            .filter(|e| {
                e["eventType"] == "AgentConf_ParticipantChanged" && e["content"]["changeType"] == 0
            })
            .map(|e| {
                e["content"]["participant"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        if joins.contains(&"7001".to_string()) && joins.contains(&"1002".to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "joins seen: {joins:?}; {:?}",
            chair.kinds()
        );
        let (rotated, answer) = poll(&at, "1001", &chair.guid);
        if let Some(g) = rotated {
            chair.guid = g;
        }
        if !answer["event"].is_null() {
            chair.seen.push(answer["event"].clone());
        }
    }
    // The conference as the gateway and Media Control see it.
    let infos = chair.conf("queryconfinfos", json!({}));
    assert_eq!(infos["retcode"], "0", "{infos}");
    let addresses = infos["result"][0]["addresses"]
        .as_array()
        .expect("addresses")
        .clone();
    assert_eq!(addresses.len(), 3, "chair, number, agent: {infos}");
    assert_eq!(infos["result"][0]["confId"], conf_id);
    let conferences = server.get("/mediacontrol/conferences");
    assert_eq!(
        conferences["Conferences"].as_array().map(Vec::len),
        Some(1),
        "{conferences}"
    );
    // Mute the number (listen only), then the chair may not leave; the member may.
    let muted = chair.conf(
        "changeparticipantmode",
        json!({"attribute": 1, "addressType": 6, "address": "7001"}),
    );
    assert_eq!(muted["retcode"], "0", "{muted}");
    let change = chair.wait_for_change(3);
    assert_eq!(
        change["content"]["participant"], "7001",
        "speech prohibited: {change}"
    );
    assert_eq!(
        chair.conf("requestleaveagentconf", json!({}))["retcode"],
        "101-007"
    );
    assert_eq!(
        member.conf("releaseagentconf", json!({}))["retcode"],
        "101-002"
    );

    // releaseagentconf: every phone gets BYE, the seed's events at the chair in order, the
    // member hears the conference ended, nothing is left.
    chair.seen.clear();
    let released = chair.conf("releaseagentconf", json!({}));
    assert_eq!(released["retcode"], "0", "{released}");
    chair.wait_for("AgentState_Ready");
    assert_eq!(
        chair.kinds(),
        [
            "AgentMediaEvent_StopRecordDone",
            "AgentOther_PhoneRelease",
            "AgentConf_SelfLeaveResult",
            "AgentState_Ready"
        ],
        "{:?}",
        chair.seen
    );
    let stop = &chair.seen[0]["content"];
    let (begin, end) = (
        stop["beginTime"].as_u64().unwrap(),
        stop["endTime"].as_u64().unwrap(),
    );
    assert!(
        begin > 0 && end >= begin,
        "the chair's leg's recording, from its answer to the release: {stop}"
    );
    assert_eq!(
        chair.seen[1]["content"]["phoneState"], 3,
        "released by the platform"
    );
    let ended = member.wait_for_leave(1, Some(3));
    assert_eq!(
        ended["content"]["changeReason"], 3,
        "conference ended: {ended}"
    );
    member.wait_for("AgentState_Ready");
    server.wait_no_connections(Duration::from_secs(5));
    let conferences = server.get("/mediacontrol/conferences");
    assert_eq!(
        conferences["Conferences"].as_array().map(Vec::len),
        Some(0),
        "{conferences}"
    );
    assert_eq!(
        chair.conf("releaseagentconf", json!({}))["retcode"],
        "101-001"
    );
    // Every phone got its BYE and answered it: SIPp's three calls succeeded.
    let (ok, out) = common::sipp_result(sipp.join().expect("sipp"));
    assert!(ok, "{out}");
}

/// Phones behind the trunk, answered by the test: each INVITE gets a 200 with an SDP offer
/// answer pointing at an RTP socket of its own; BYEs get 200. Each answered phone is handed
/// to the test as (number, its RTP socket, where callbridge takes its RTP).
fn phones_behind_the_trunk() -> (
    u16,
    std::sync::mpsc::Receiver<(String, std::net::UdpSocket, std::net::SocketAddr)>,
) {
    let trunk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    trunk
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = trunk.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65535];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let Ok((n, from)) = trunk.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let header = |name: &str| {
                text.lines()
                    .find(|l| {
                        l.to_ascii_lowercase()
                            .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                    })
                    .map(|l| l[name.len() + 1..].trim().to_string())
                    .unwrap_or_default()
            };
            let reply = |status: &str, extra: &str, body: &str| {
                let to = header("To");
                let to = if to.contains("tag=") {
                    to
                } else {
                    format!("{to};tag=phone")
                };
                format!(
                    "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\n\
                     CSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                    header("Via"),
                    header("From"),
                    header("Call-ID"),
                    header("CSeq"),
                    body.len()
                )
            };
            if let Some(request_line) = text.strip_prefix("INVITE ") {
                let number = request_line
                    .split('@')
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("sip:")
                    .to_string();
                let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let rtp_port = rtp.local_addr().unwrap().port();
                let media_port: u16 = text
                    .lines()
                    .find(|l| l.starts_with("m=audio "))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|p| p.parse().ok())
                    .expect("the INVITE offers audio");
                let sdp = format!(
                    "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                     m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
                );
                let contact = format!(
                    "Contact: <sip:{number}@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n"
                );
                trunk
                    .send_to(reply("200 OK", &contact, &sdp).as_bytes(), from)
                    .unwrap();
                let media = std::net::SocketAddr::from(([127, 0, 0, 1], media_port));
                let _ = tx.send((number, rtp, media));
            } else if text.starts_with("BYE ") {
                trunk
                    .send_to(reply("200 OK", "", "").as_bytes(), from)
                    .unwrap();
            }
        }
    });
    (port, rx)
}

#[test]
fn the_chairs_voice_reaches_a_participant_through_the_conference() {
    let (trunk_port, answered) = phones_behind_the_trunk();
    let (_server, at) = gateway(&format!(
        "insecure_http = true\n[[trunk]]\nname = \"pbx\"\naddress = \"127.0.0.1:{trunk_port}\"\n"
    ));
    let mut chair = Desk::sign_in(&at, "1001");
    let requested = chair.conf("requestagentconf", json!({"memberNum": 2}));
    assert_eq!(requested["retcode"], "0", "{requested}");
    let (number, chair_rtp, chair_media) = answered.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(number, "6001");
    chair.wait_for("AgentConf_RequestSuccess");
    let added = chair.conf(
        "batchaddparticipant",
        json!({"addresses": [{"addressType": 6, "address": "7001"}]}),
    );
    assert_eq!(added["retcode"], "0", "{added}");
    let (number, guest_rtp, _) = answered.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(number, "7001");
    chair.wait_for_change(0);
    // The chair talks (1 kHz); the participant hears it in the mix.
    guest_rtp
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    common::send_tone(&chair_rtp, chair_media, 0x6001, 1000.0, 60);
    let heard = common::heard(&guest_rtp);
    let tail = &heard[heard.len().saturating_sub(4000)..];
    assert!(
        common::tone_power(tail, 1000.0) > 1e5,
        "the participant hears the chair's 1 kHz ({} samples)",
        heard.len()
    );
    let released = chair.conf("releaseagentconf", json!({}));
    assert_eq!(released["retcode"], "0");
    chair.wait_for("AgentState_Ready");
}
