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
    // The agent conference interfaces are not served yet: said so, never a success.
    let r = client()
        .post(format!(
            "http://{at}/agentgateway/resource/agentconf/1001/releaseagentconf"
        ))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 501);
    let body: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(body["retcode"], "000-002");
    assert!(body["message"].as_str().unwrap().contains("not available"));
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("insecure_http"), "{said}");
}
