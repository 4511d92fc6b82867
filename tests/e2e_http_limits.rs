//! End to end: the HTTP listeners against hostile clients (issue 20) — half-open requests and
//! stalled bodies are closed after `header_read_timeout_ms`, one address cannot hold more
//! than `max_connections_per_source`, a declared body over `max_body_bytes` is refused before
//! it is read, and an address that presents wrong credentials too often is answered 429
//! without them being checked. The real binary, raw TCP sockets bound to loopback addresses.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Server, TOKEN};

const LIMITS: &str = "[http]\nheader_read_timeout_ms = 500\nmax_connections_per_source = 6\n\
                      auth_failures_per_minute = 5\nmax_body_bytes = 65536\n";

/// A TCP connection to the API from `source` (a loopback address of the test's choosing).
fn connect_from(server: &Server, source: [u8; 4]) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind the source address");
    let api: SocketAddr = ([127, 0, 0, 1], server.api_port).into();
    socket.connect(&api.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
}

/// Whether the server has closed `stream`: a read returns end of file (or a reset) within
/// `within`; still open when reads keep timing out.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. 408) before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A whole HTTP/1.1 exchange on its own connection from `source`: (status, the raw answer).
fn request_from(server: &Server, source: [u8; 4], text: &str) -> (u16, String) {
    let mut stream = connect_from(server, source);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(text.as_bytes()).expect("send request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (status, answer)
}

fn health_from(server: &Server, source: [u8; 4]) -> u16 {
    request_from(
        server,
        source,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .0
}

#[test]
fn half_open_requests_and_stalled_bodies_are_closed_and_one_address_cannot_take_every_connection() {
    let server = Server::start(LIMITS);
    // Half-open: part of a request line, then nothing. Each from its own address, so the
    // per-address cap is not what closes them.
    let mut half_open: Vec<TcpStream> = (0..40u8)
        .map(|i| {
            let mut s = connect_from(&server, [127, 0, 1, 1 + i]);
            s.write_all(b"GET /heal").unwrap();
            s
        })
        .collect();
    // A body announced as 100 bytes, 10 sent, then nothing.
    let mut stalled = connect_from(&server, [127, 0, 2, 1]);
    stalled
        .write_all(
            format!(
                "POST /mediacontrol/CreateConnection HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"MediaTx"
            )
            .as_bytes(),
        )
        .unwrap();
    for (i, s) in half_open.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "half-open connection {i} still open"
        );
    }
    assert!(
        closed_within(&mut stalled, Duration::from_secs(3)),
        "stalled body still open"
    );
    let metrics = server.metrics();
    assert!(
        common::metric_value(
            &metrics,
            "callbridge_http_header_timeouts_total{listener=\"api\"}"
        ) >= 40.0,
        "{metrics}"
    );
    assert!(
        server.connections().is_empty(),
        "the stalled request created nothing"
    );

    // One address: its first six connections are served, the seventh is closed at once.
    let held: Vec<TcpStream> = (0..6)
        .map(|_| connect_from(&server, [127, 0, 3, 1]))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut seventh = connect_from(&server, [127, 0, 3, 1]);
    assert!(
        closed_within(&mut seventh, Duration::from_millis(400)),
        "over the cap"
    );
    // Everyone else is still served, and the address is again once its connections close.
    assert_eq!(health_from(&server, [127, 0, 3, 2]), 200);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(health_from(&server, [127, 0, 3, 1]), 200);
    let metrics = server.metrics();
    assert_eq!(
        common::metric_value(
            &metrics,
            "callbridge_http_connections_refused_source_total{listener=\"api\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[test]
fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let server = Server::start(LIMITS);
    let mut stream = connect_from(&server, [127, 0, 4, 1]);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Only the header is sent: the answer comes without the two megabytes it announces.
    stream
        .write_all(
            format!(
                "POST /mediacontrol/CreateConnection HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut answer = [0u8; 4096];
    let n = stream.read(&mut answer).expect("an answer before the body");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("the limit is 65536"), "{answer}");
    // A chunked body (no declared length) is stopped at the limit by the JSON extractor.
    let chunk = "a".repeat(70_000);
    let (status, answer) = request_from(
        &server,
        [127, 0, 4, 2],
        &format!(
            "POST /mediacontrol/CreateConnection HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
    );
    assert_eq!(status, 413, "{answer}");
    assert!(server.connections().is_empty());
}

#[test]
fn an_address_that_fails_its_credentials_too_often_waits_and_others_do_not() {
    let server = Server::start(LIMITS);
    let get_calls = |token: &str| {
        format!(
            "GET /callcontrol/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
    };
    let guesser = [127, 0, 5, 1];
    for attempt in 0..5 {
        let (status, answer) = request_from(&server, guesser, &get_calls("guess"));
        assert_eq!(status, 401, "attempt {attempt}: {answer}");
    }
    // Throttled: not even the right token is looked at, and the answer says how long.
    let (status, answer) = request_from(&server, guesser, &get_calls(TOKEN));
    assert_eq!(status, 429, "{answer}");
    let retry_after: u64 = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {answer}"));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The recording API shares the API's throttle: a wrong key from there is refused too.
    let (status, _) = request_from(
        &server,
        guesser,
        "GET /verba/api?apiKey=nope&action=getcallid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 429);
    // Another address is served as before.
    let (status, answer) = request_from(&server, [127, 0, 5, 2], &get_calls(TOKEN));
    assert_eq!(status, 200, "{answer}");
}

/// Slowloris from many addresses: the listener is full of connections that sent part of a
/// request line and nothing more, yet a client that sends its request at once is served — the
/// oldest connection without a request is closed to make room — long before the header
/// timeout would have freed anything.
#[test]
fn a_listener_full_of_half_open_connections_still_serves_a_real_client() {
    let server = Server::start(
        "[http]\nheader_read_timeout_ms = 30000\nmax_connections = 20\n\
         max_connections_per_source = 4\n",
    );
    let mut half_open: Vec<TcpStream> = (0..20u8)
        .map(|i| {
            let mut s = connect_from(&server, [127, 0, 4, 1 + i]);
            s.write_all(b"GET /heal").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(health_from(&server, [127, 0, 5, 1]), 200);
    // Full again, then another real client.
    let mut refill = connect_from(&server, [127, 0, 4, 100]);
    refill.write_all(b"GET /heal").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(health_from(&server, [127, 0, 5, 2]), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The two oldest made room; the rest are still open (no timeout has passed).
    assert!(closed_within(&mut half_open[0], Duration::from_secs(2)));
    assert!(closed_within(&mut half_open[1], Duration::from_secs(2)));
    assert!(!closed_within(
        &mut half_open[19],
        Duration::from_millis(300)
    ));
    // Reading the metrics takes a place too (by evicting the next oldest).
    let metrics = server.metrics();
    assert!(
        common::metric_value(&metrics, "callbridge_http_evicted_total{listener=\"api\"}") >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        common::metric_value(
            &metrics,
            "callbridge_http_connections_refused_total{listener=\"api\"}"
        ),
        0.0
    );
}
