//! Engine tests over real UDP sockets on 127.0.0.1.
//!
//! Owns: end-to-end checks of echo, idle, malformed input, the port pool and shutdown.
//! Must not: use any address but 127.0.0.1, or sleep for fixed times where it can wait for an
//! event or a condition instead. Each test has its own port range in 31100-31499: above the RTP
//! ranges the end-to-end tests pick (21000-30999) and below the kernel's ephemeral ports (32768+),
//! so client sockets never take them and tests can run in parallel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TryRecvError, Receiver};

use super::*;

/// How long a test waits for something that should happen within milliseconds.
const PATIENCE: Duration = Duration::from_secs(5);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn echo_returns_every_rtp_packet_and_reports_closed_stats() {
    let (engine, mut events) = start_engine(31_100, 31_119, 1);
    let endpoint = open(&engine, 1, MediaMode::Echo);
    assert_eq!(endpoint.rtp.ip(), LOCALHOST);
    assert_eq!(endpoint.rtp.port() % 2, 0);
    let client = client_socket();

    let sent: Vec<Vec<u8>> = (0..50).map(rtp_packet).collect();
    for packet in &sent {
        client
            .send_to(packet, endpoint.rtp)
            .expect("send to engine");
    }
    for packet in &sent {
        assert_eq!(&receive(&client).expect("echoed packet"), packet);
    }

    let expected = MediaStats {
        rtp_packets_received: 50,
        rtp_bytes_received: 50 * 172,
        rtp_packets_sent: 50,
        rtp_bytes_sent: 50 * 172,
        rtcp_packets_received: 0,
        last_source: Some(local_address(&client)),
        malformed_packets: 0,
    };
    wait_until(|| engine.stats(1).as_ref() == Some(&expected));
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
    assert_eq!(
        closed,
        EngineEvent::Closed {
            key: 1,
            stats: expected
        }
    );
    assert_eq!(engine.ports_in_use(), 0);
    assert_eq!(engine.stats(1), None);
    engine.shutdown();
}

#[test]
fn idle_counts_but_sends_nothing_back() {
    let (engine, _events) = start_engine(31_120, 31_139, 1);
    let endpoint = open(&engine, 2, MediaMode::Idle);
    let client = client_socket();
    for seq in 0..5 {
        client
            .send_to(&rtp_packet(seq), endpoint.rtp)
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
    assert_eq!(stats.rtp_packets_sent, 0);
    assert_eq!(stats.last_source, Some(local_address(&client)));
    engine.shutdown();
}

#[test]
fn garbage_is_counted_malformed_and_not_echoed() {
    let (engine, _events) = start_engine(31_140, 31_159, 1);
    let endpoint = open(&engine, 3, MediaMode::Echo);
    let client = client_socket();
    client
        .send_to(&[0x00, 0x01, 0x02], endpoint.rtp)
        .expect("send garbage");
    client
        .send_to(&[0x00, 0x01, 0x02], rtcp_address(endpoint))
        .expect("send garbage to RTCP");
    wait_until(|| {
        engine
            .stats(3)
            .is_some_and(|stats| stats.malformed_packets == 2)
    });

    // A valid packet sent after the garbage is the first thing echoed.
    client
        .send_to(&rtp_packet(7), endpoint.rtp)
        .expect("send RTP");
    assert_eq!(receive(&client).expect("echoed packet"), rtp_packet(7));
    // Counters are published after each batch, so possibly just after the echo went out.
    wait_until(|| {
        engine
            .stats(3)
            .is_some_and(|stats| stats.rtp_packets_sent == 1)
    });
    let stats = engine.stats(3).expect("connection open");
    assert_eq!(stats.rtp_packets_received, 1);
    assert_eq!(stats.malformed_packets, 2);
    engine.shutdown();
}

#[test]
fn rtcp_is_echoed_on_the_rtcp_port_and_counted() {
    let (engine, _events) = start_engine(31_160, 31_179, 1);
    let endpoint = open(&engine, 4, MediaMode::Echo);
    let client = client_socket();
    // Empty receiver report: V=2, RC=0, PT=201, length=1, SSRC.
    let report = [0x80, 201, 0x00, 0x01, 0xDE, 0xAD, 0xBE, 0xEF];
    client
        .send_to(&report, rtcp_address(endpoint))
        .expect("send RTCP");
    let mut buffer = [0u8; 64];
    let (length, from) = client.recv_from(&mut buffer).expect("echoed RTCP");
    assert_eq!(&buffer[..length], &report);
    assert_eq!(from, rtcp_address(endpoint));
    wait_until(|| {
        engine
            .stats(4)
            .is_some_and(|stats| stats.rtcp_packets_received == 1)
    });
    assert_eq!(
        engine
            .stats(4)
            .expect("connection open")
            .rtp_packets_received,
        0
    );
    engine.shutdown();
}

#[test]
fn update_from_idle_to_echo_takes_effect() {
    let (engine, _events) = start_engine(31_180, 31_199, 1);
    let endpoint = open(&engine, 5, MediaMode::Idle);
    let client = client_socket();
    client
        .send_to(&rtp_packet(1), endpoint.rtp)
        .expect("send to engine");
    wait_until(|| {
        engine
            .stats(5)
            .is_some_and(|stats| stats.rtp_packets_received == 1)
    });

    let peer = local_address(&client);
    engine
        .update_connection(5, MediaMode::Echo, Some(peer))
        .expect("update open connection");
    // The update is queued before the packet is sent, and the worker applies commands first.
    client
        .send_to(&rtp_packet(2), endpoint.rtp)
        .expect("send to engine");
    assert_eq!(receive(&client).expect("echo after update"), rtp_packet(2));
    wait_until(|| {
        engine
            .stats(5)
            .is_some_and(|stats| stats.rtp_packets_sent == 1)
    });
    engine.shutdown();
}

#[test]
fn pool_runs_out_and_a_closed_pair_comes_back() {
    let (engine, mut events) = start_engine(31_200, 31_207, 1);
    assert_eq!(engine.ports_total(), 8);
    let mut ports = Vec::new();
    for key in 0..4 {
        ports.push(open(&engine, key, MediaMode::Idle).rtp.port());
    }
    assert_eq!(ports, [31_200, 31_202, 31_204, 31_206]);
    assert_eq!(engine.ports_in_use(), 8);
    let refused = engine.open_connection(request(4, MediaMode::Idle));
    assert!(
        matches!(refused, Err(EngineError::NoPortsAvailable)),
        "{refused:?}"
    );

    engine.close_connection(1).expect("close open connection");
    wait_for_event(&mut events, |event| {
        matches!(event, EngineEvent::Closed { key: 1, .. })
    });
    assert_eq!(engine.ports_in_use(), 6);
    assert_eq!(open(&engine, 4, MediaMode::Idle).rtp.port(), 31_202);
    engine.shutdown();
}

#[test]
fn pair_held_by_a_foreign_socket_is_skipped() {
    let (engine, _events) = start_engine(31_220, 31_227, 1);
    // Another process holds the RTCP port of the second pair.
    let foreign = UdpSocket::bind((LOCALHOST, 31_223)).expect("bind foreign socket");
    let mut ports = Vec::new();
    for key in 0..3 {
        ports.push(open(&engine, key, MediaMode::Idle).rtp.port());
    }
    assert_eq!(ports, [31_220, 31_224, 31_226]);
    let refused = engine.open_connection(request(3, MediaMode::Idle));
    assert!(
        matches!(refused, Err(EngineError::NoPortsAvailable)),
        "{refused:?}"
    );
    assert_eq!(engine.ports_in_use(), 6);

    drop(foreign);
    assert_eq!(open(&engine, 3, MediaMode::Idle).rtp.port(), 31_222);
    engine.shutdown();
}

#[test]
fn many_connections_across_two_workers_echo_and_shut_down() {
    const CONNECTIONS: u64 = 40;
    let (engine, mut events) = start_engine(31_300, 31_399, 2);
    let calls: Vec<(MediaEndpoint, UdpSocket)> = (0..CONNECTIONS)
        .map(|key| (open(&engine, key, MediaMode::Echo), client_socket()))
        .collect();
    assert!(calls.iter().any(|(endpoint, _)| endpoint.worker == 0));
    assert!(calls.iter().any(|(endpoint, _)| endpoint.worker == 1));
    assert_eq!(engine.ports_in_use(), 80);

    for seq in 0..5 {
        for (endpoint, client) in &calls {
            client
                .send_to(&rtp_packet(seq), endpoint.rtp)
                .expect("send to engine");
        }
    }
    for (endpoint, client) in &calls {
        for seq in 0..5 {
            let echoed = receive(client).expect("echoed packet");
            assert_eq!(echoed, rtp_packet(seq), "connection on {}", endpoint.rtp);
        }
    }

    engine.shutdown();
    let mut closed = 0;
    while closed < CONNECTIONS {
        if let EngineEvent::Closed { stats, .. } = wait_for_event(&mut events, |event| {
            matches!(event, EngineEvent::Closed { .. })
        }) {
            assert_eq!(stats.rtp_packets_sent, 5);
            closed += 1;
        }
    }
}

#[test]
fn duplicate_and_unknown_keys_are_refused() {
    let (engine, _events) = start_engine(31_240, 31_259, 1);
    open(&engine, 9, MediaMode::Idle);
    let duplicate = engine.open_connection(request(9, MediaMode::Echo));
    assert!(
        matches!(duplicate, Err(EngineError::DuplicateConnection)),
        "{duplicate:?}"
    );
    assert_eq!(engine.ports_in_use(), 2, "refused open kept a pair");
    assert!(matches!(
        engine.update_connection(10, MediaMode::Echo, None),
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
fn invalid_port_range_is_refused() {
    let (sender, _events) = mpsc::channel(4);
    let config = EngineConfig {
        rtp_port_min: 31_270,
        rtp_port_max: 31_270,
        ..test_config(1)
    };
    assert!(matches!(
        Engine::start(config, sender),
        Err(EngineError::InvalidConfig(_))
    ));
}

#[test]
fn engine_handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
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

fn request(key: ConnectionKey, mode: MediaMode) -> OpenConnection {
    OpenConnection {
        key,
        mode,
        remote_rtp: None,
    }
}

fn open(engine: &Engine, key: ConnectionKey, mode: MediaMode) -> MediaEndpoint {
    engine
        .open_connection(request(key, mode))
        .expect("test range has a free pair")
}

fn rtcp_address(endpoint: MediaEndpoint) -> SocketAddr {
    SocketAddr::new(endpoint.rtp.ip(), endpoint.rtp.port() + 1)
}

/// A PCMU packet: 12-byte header (V=2, PT 0, sequence `seq`) and 160 bytes of payload.
fn rtp_packet(seq: u16) -> Vec<u8> {
    let timestamp = u32::from(seq) * 160;
    let mut packet = vec![0x80, 0x00];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.extend((0..160u8).map(|i| i.wrapping_add(seq as u8)));
    packet
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

/// The next datagram, or `None` on timeout.
fn receive(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buffer = [0u8; 2048];
    match socket.recv_from(&mut buffer) {
        Ok((length, _)) => Some(buffer[..length].to_vec()),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
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
