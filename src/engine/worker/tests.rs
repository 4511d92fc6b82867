//! Worker tests driven turn by turn on the test thread, with real loopback sockets: the tick
//! grids, the per-wake-up cap, and sending through io_uring or `sendto`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Poll;

use super::connection::Leg;
use super::*;
use crate::engine::{MediaSpec, SessionDefaults};
use crate::media::session::ROOM_TICK;

use crate::media::rtp::{self, RtpHeader};
use crate::media::session::StreamFormat;
use crate::sdp::Codec;

/// SSRC of the test client's stream.
const CLIENT_SSRC: u32 = 0x1234_5678;

/// The media sockets' settings in these tests: 1 MiB buffers, nothing else.
const TEST_SOCKETS: super::super::socket::SocketTuning = super::super::socket::SocketTuning {
    dscp_tos: 0,
    recv_buffer: 1 << 20,
    send_buffer: 1 << 20,
    priority: None,
    busy_poll_us: 0,
    busy_poll_budget: 0,
};

/// A worker with `threads`' settings whose ports (`pairs` pairs from `rtp_port`) go back to a
/// pool of their own, its tick grid from `tick_epoch(epoch)`; and its command sender, with
/// room for eight commands (dropping it would tell the worker to stop).
fn test_worker(
    rtp_port: u16,
    pairs: u16,
    threads: super::super::tuning::ThreadTuning,
    tick_epoch: impl Fn(Instant) -> Instant,
) -> (Worker, SyncSender<WorkerCommand>) {
    let pool = super::super::pool::PortPool::new(
        rtp_port,
        rtp_port + 2 * pairs - 1,
        super::super::pool::IdleSockets::new(0),
    )
    .expect("the tests' port range");
    let (events, _) = tokio::sync::mpsc::channel(64);
    let epoch = Instant::now();
    let context = WorkerContext {
        events,
        events_dropped: Arc::default(),
        recorder_dropped: Arc::default(),
        port_return: pool.port_return(),
        stop: Arc::default(),
        defaults: SessionDefaults::default(),
        threads,
        heartbeat: Arc::default(),
        epoch,
        tick_epoch: tick_epoch(epoch),
        tick_lateness: Arc::default(),
        recorder: super::super::recorder::channel().0,
        uring_sends: Arc::default(),
        uring_receives: Arc::default(),
        receive_buffers_exhausted: Arc::default(),
        silence_shares: Arc::default(),
    };
    let (commands, inbox) = mpsc::sync_channel(8);
    let (_handoff, arrivals) = mpsc::channel();
    let worker = Worker::new(
        0,
        Poll::new().expect("create poll"),
        inbox,
        arrivals,
        Vec::new(),
        context,
    );
    (worker, commands)
}

/// A PCMU connection in `mode` (telephone-event not negotiated) whose peer is `client`.
fn pcmu_media(mode: super::super::MediaMode, client: &std::net::UdpSocket) -> MediaSpec {
    MediaSpec {
        mode,
        format: Some(StreamFormat {
            codec: Codec::Pcmu,
            payload_type: 0,
            ptime_ms: 20,
            telephone_event_pt: None,
            send: None,
            peer_opus: crate::sdp::OpusParams::RFC_DEFAULTS,
        }),
        remote_rtp: Some(client.local_addr().expect("client address")),
        remote_rtcp: None,
        srtp: None,
        expects_rtp: true,
        source: None,
    }
}

/// A worker driven turn by turn on this thread, with one PCMU Echo connection whose
/// negotiated peer is the returned client. The command sender is returned too: dropping it
/// would tell the worker to stop.
fn worker_with_echo_connection(
    rtp_port: u16,
) -> (
    Worker,
    SyncSender<WorkerCommand>,
    std::net::UdpSocket,
    SocketAddr,
) {
    echo_worker(
        rtp_port,
        None,
        super::super::tuning::ThreadTuning::default(),
    )
}

/// [`worker_with_echo_connection`] with `threads`' settings, its sockets read through an
/// io_uring (`io_uring_receive`) with `ring` provided buffers when given (`worker.receive`
/// None when the kernel refuses one).
fn echo_worker(
    rtp_port: u16,
    ring: Option<u16>,
    threads: super::super::tuning::ThreadTuning,
) -> (
    Worker,
    SyncSender<WorkerCommand>,
    std::net::UdpSocket,
    SocketAddr,
) {
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let sockets = super::super::socket::bind_pair(localhost, rtp_port, &TEST_SOCKETS)
        .expect("test port pair is free");
    let local_rtp = sockets.local_rtp;
    // The second of two workers.
    let (mut worker, commands) = test_worker(rtp_port, 1, threads, |epoch| {
        staggered_tick_epoch(epoch, 1, 2)
    });
    if let Some(buffers) = ring {
        worker.receive = crate::engine::recv_ring::RecvRing::new(buffers).ok();
    }
    let client = std::net::UdpSocket::bind((localhost, 0)).expect("bind client");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");
    let media = pcmu_media(super::super::MediaMode::Echo, &client);
    let open = NewConnection {
        key: 1,
        media,
        rtp_port,
        sockets,
        stats: Arc::default(),
    };
    commands
        .try_send(WorkerCommand::Open(Box::new(open)))
        .expect("queue has room");
    assert!(worker.apply_commands());
    (worker, commands, client, local_rtp)
}

/// PCMU frame `index` of the client's stream: 12-byte header and 160 bytes of payload.
fn pcmu_frame(index: u16) -> Vec<u8> {
    let header = RtpHeader {
        marker: index == 0,
        payload_type: 0,
        sequence: 1000 + index,
        timestamp: 160 * u32::from(index),
        ssrc: CLIENT_SSRC,
        csrcs: &[],
    };
    // Truncation keeps the low byte; 0x7F (μ-law negative zero) never appears.
    let payload: Vec<u8> = (0..160u16)
        .map(|i| (index.wrapping_mul(37).wrapping_add(i) as u8) & 0xF7)
        .collect();
    let mut packet = vec![0u8; 172];
    let length = rtp::write_packet(&mut packet, &header, &payload).expect("frame fits");
    packet.truncate(length);
    packet
}

#[test]
fn the_grids_of_every_worker_and_tick_group_interleave_evenly_over_one_tick() {
    let epoch = Instant::now();
    for workers in 1..=5 {
        let mut offsets: Vec<Duration> = (0..workers)
            .flat_map(|index| {
                let first = staggered_tick_epoch(epoch, index, workers);
                (0..TICK_GROUPS).map(move |group| group_tick_epoch(first, group) - epoch)
            })
            .collect();
        offsets.sort();
        let phases = workers * TICK_GROUPS;
        let step = ROOM_TICK.as_nanos() as f64 / phases as f64;
        assert_eq!(offsets.len(), phases);
        for (n, offset) in offsets.iter().enumerate() {
            // Evenly spaced within a nanosecond (integer division), all inside one tick.
            let expected = step * n as f64;
            assert!(
                (offset.as_nanos() as f64 - expected).abs() < 1.0,
                "{workers} workers: phase {n} at {offset:?}, not {expected} ns"
            );
        }
    }
    // Group g's grid is g × 5 ms on.
    let groups: Vec<Duration> = (0..TICK_GROUPS)
        .map(|group| group_tick_epoch(epoch, group) - epoch)
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(groups, [ms(0), ms(5), ms(10), ms(15)]);
}

#[test]
fn sessions_fill_a_tick_group_then_spread_and_give_it_back_as_they_end() {
    assert_eq!(GROUP_SESSIONS, 64);
    let mut groups = SessionGroups::default();
    // A small load: every session on the first grid, one wake-up a tick (round robin put the
    // first four on four grids).
    let first: Vec<usize> = (0..GROUP_SESSIONS).map(|_| groups.join()).collect();
    assert!(first.iter().all(|&g| g == 0), "{first:?}");
    // Then the next group, and so on until all are full.
    assert_eq!(groups.join(), 1);
    for _ in 1..GROUP_SESSIONS {
        groups.join();
    }
    assert_eq!(groups.load(), [64, 64, 0, 0]);
    for _ in 0..2 * GROUP_SESSIONS {
        groups.join();
    }
    assert_eq!(groups.load(), [64; TICK_GROUPS]);
    // Beyond 256 the emptiest takes each: a quarter of the calls a grid, as round robin had.
    let beyond: Vec<usize> = (0..6).map(|_| groups.join()).collect();
    assert_eq!(beyond, [0, 1, 2, 3, 0, 1]);
    // Sessions that end free their group; one that took none here (moved in) changes nothing.
    for _ in 0..66 {
        groups.leave(Some(0));
    }
    groups.leave(None);
    assert_eq!(groups.load(), [0, 66, 65, 65]);
    assert_eq!(groups.join(), 0, "every other group is over its cap");
    // The fullest group under the cap takes the next, not the emptier one.
    for _ in 0..3 {
        groups.leave(Some(1));
    }
    assert_eq!(groups.join(), 1, "63 against 1");
}

#[test]
fn a_workers_connections_share_one_grid_and_leave_their_group_as_they_close_or_move() {
    let (mut worker, _commands, _client, _) = worker_with_echo_connection(31_616);
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let open = |worker: &mut Worker, key, port| {
        let sockets = super::super::socket::bind_pair(localhost, port, &TEST_SOCKETS)
            .expect("test port pair is free");
        let peer = std::net::UdpSocket::bind((localhost, 0)).expect("bind peer");
        worker.open(NewConnection {
            key,
            media: pcmu_media(super::super::MediaMode::Echo, &peer),
            rtp_port: port,
            sockets,
            stats: Arc::default(),
        });
    };
    open(&mut worker, 2, 31_618);
    open(&mut worker, 3, 31_620);
    assert_eq!(worker.session_groups.load(), [3, 0, 0, 0]);
    let epochs: std::collections::HashSet<Instant> = worker
        .connections
        .iter()
        .flatten()
        .map(|connection| connection.tick_epoch)
        .collect();
    assert_eq!(epochs.len(), 1, "three sessions, one grid");
    worker.close(2);
    assert_eq!(worker.session_groups.load(), [2, 0, 0, 0]);
    // Moved to another worker: it leaves its group here at once.
    let (handoff, _arrivals) = mpsc::channel();
    let other = Poll::new().expect("create poll");
    worker.peers = vec![Peer {
        handoff,
        waker: Arc::new(mio::Waker::new(other.registry(), mio::Token(0)).expect("waker")),
    }];
    worker.move_out(3, 0);
    assert_eq!(worker.session_groups.load(), [1, 0, 0, 0]);
    worker.close(1);
    worker.finish_closing();
    assert_eq!(worker.session_groups.load(), [0; TICK_GROUPS]);
}

#[test]
fn a_connection_ticks_on_its_workers_grid_for_its_tick_group() {
    let (worker, _commands, _client, _) = worker_with_echo_connection(31_418);
    let (slot, connection) = worker
        .connections
        .iter()
        .enumerate()
        .find_map(|(slot, connection)| Some((slot, connection.as_ref()?)))
        .expect("the echo connection is open");
    // The harness is the second of two workers (first grid 2.5 ms after the engine's) and
    // this is its first connection (group 0, its worker's first grid): 2.5 ms.
    assert_eq!(connection.generation, 1);
    assert_eq!(connection.tick_group, Some(0));
    let deadline = worker
        .deadlines
        .get(slot)
        .expect("the session is scheduled");
    let since = deadline - worker.context.epoch;
    assert_eq!(since.as_nanos() % ROOM_TICK.as_nanos(), 2_500_000);
    assert!(deadline > Instant::now() - ROOM_TICK);
}

#[test]
fn burst_beyond_the_cap_is_carried_over_to_the_next_turn() {
    let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_410);
    let frames: Vec<Vec<u8>> = (0..100).map(pcmu_frame).collect();
    for frame in &frames {
        client.send_to(frame, engine_rtp).expect("send to worker");
    }
    let received = |worker: &mut Worker| {
        worker
            .connection_by_key(1)
            .expect("connection open")
            .shared
            .snapshot()
            .rtp_packets_received
    };

    assert!(worker.turn());
    assert_eq!(received(&mut worker), MAX_PACKETS_PER_WAKEUP as u64);
    assert_eq!(worker.carry_over.len(), 1, "capped socket not carried over");
    assert!(worker.turn());
    assert_eq!(received(&mut worker), 100);
    assert!(worker.carry_over.is_empty());

    // The session plays its jitter buffer out every 20 ms: once it has filled, turns past
    // the next ticks send echo frames, as our own stream, back to the client.
    client.set_nonblocking(true).expect("non-blocking client");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buffer = [0u8; 2048];
    let (length, from) = loop {
        assert!(worker.turn());
        match client.recv_from(&mut buffer) {
            Ok(received) => break received,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("client receive failed: {error}"),
        }
        assert!(Instant::now() < deadline, "no echo within 2 s");
    };
    assert_eq!(from, engine_rtp);
    let echo = rtp::parse(&buffer[..length]).expect("echo is RTP");
    assert_eq!(echo.payload_type(), 0);
    assert_ne!(
        echo.ssrc(),
        CLIENT_SSRC,
        "echo relayed instead of re-encoded"
    );
    assert!(echo.marker(), "first echo packet starts a talkspurt");
    assert!(
        frames.iter().any(|frame| frame[12..] == *echo.payload()),
        "echo payload is not one of the client's frames"
    );
    let sent = worker
        .connection_by_key(1)
        .expect("connection open")
        .shared
        .snapshot()
        .rtp_packets_sent;
    assert!(sent >= 1, "echo sent but not published");
    worker.close_all();
}

/// Sends `frames` from `client` 20 ms apart while turning `worker`, then keeps turning for
/// `tail`; every datagram the client got back, in order.
fn echo_through_turns(
    worker: &mut Worker,
    client: &std::net::UdpSocket,
    engine_rtp: SocketAddr,
    frames: &[Vec<u8>],
    tail: Duration,
) -> Vec<Vec<u8>> {
    client.set_nonblocking(true).expect("non-blocking client");
    let start = Instant::now();
    let end = start + ROOM_TICK * frames.len() as u32 + tail;
    let mut next = 0;
    let mut echoes = Vec::new();
    let mut buffer = [0u8; 2048];
    while Instant::now() < end {
        if next < frames.len() && Instant::now() >= start + ROOM_TICK * next as u32 {
            client
                .send_to(&frames[next], engine_rtp)
                .expect("send to worker");
            next += 1;
        }
        assert!(worker.turn());
        loop {
            match client.recv_from(&mut buffer) {
                Ok((length, from)) => {
                    assert_eq!(from, engine_rtp, "echo not sent from the RTP socket");
                    echoes.push(buffer[..length].to_vec());
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => panic!("client receive failed: {error}"),
            }
        }
    }
    echoes
}

/// Checks that `echoes` play the caller's `frames` back in order (stand-ins aside), with at
/// most a few missing while the jitter buffer filled or stretched on a busy test machine.
fn assert_plays_back(echoes: &[Vec<u8>], frames: &[Vec<u8>]) {
    let played: Vec<usize> = echoes
        .iter()
        .filter_map(|echo| {
            let packet = rtp::parse(echo).expect("echo is RTP");
            assert_ne!(packet.ssrc(), CLIENT_SSRC, "relayed instead of re-encoded");
            frames
                .iter()
                .position(|frame| frame[12..] == *packet.payload())
        })
        .collect();
    assert!(
        played.windows(2).all(|pair| pair[0] < pair[1]),
        "caller frames echoed out of order or twice: {played:?}"
    );
    assert!(
        played.len() + 5 >= frames.len(),
        "only {} of {} caller frames echoed",
        played.len(),
        frames.len()
    );
}

#[test]
fn a_connection_read_through_the_ring_closes_in_the_turns_enter_not_one_of_its_own() {
    let (mut worker, commands, _client, _engine_rtp) =
        echo_worker(31_602, Some(4096), Default::default());
    let Some(entered) = worker.receive.as_ref().map(|ring| ring.enters) else {
        eprintln!("skipped: the kernel refuses io_uring here");
        return;
    };
    assert!(
        worker.connection_by_key(1).is_some_and(|c| c.armed),
        "read through the ring"
    );
    commands
        .try_send(WorkerCommand::Close { key: 1 })
        .expect("queue has room");
    assert!(worker.apply_commands());
    let ring = worker.receive.as_ref().expect("ring");
    assert_eq!(
        ring.enters, entered,
        "the close waited in a kernel call of its own"
    );
    assert_eq!(
        worker.closing.len(),
        1,
        "closing until the kernel ends its receives"
    );
    assert!(worker.connection_by_key(1).is_none());
    let localhost = std::net::Ipv4Addr::LOCALHOST;
    assert!(
        std::net::UdpSocket::bind((localhost, 31_602)).is_err(),
        "the sockets are held until the kernel has ended their receives"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !worker.closing.is_empty() {
        assert!(Instant::now() < deadline, "the receives never ended");
        assert!(worker.turn());
    }
    // Finished: the sockets went back to a pool without room, which closed them.
    std::net::UdpSocket::bind((localhost, 31_602)).expect("the port is free once closed");
    worker.close_all();
}

#[test]
fn datagrams_beyond_the_rings_buffers_are_read_in_the_same_turn() {
    let (mut worker, _commands, client, engine_rtp) =
        echo_worker(31_600, Some(8), Default::default());
    if worker.receive.is_none() {
        eprintln!("skipped: the kernel refuses io_uring here");
        return;
    }
    // A worker back from a stall: five times its ring's buffers wait in one socket.
    let frames: Vec<Vec<u8>> = (0..40).map(pcmu_frame).collect();
    for frame in &frames {
        client.send_to(frame, engine_rtp).expect("send to worker");
    }
    worker.receive_from_ring();
    let received = worker
        .connection_by_key(1)
        .expect("connection open")
        .shared
        .snapshot()
        .rtp_packets_received;
    assert_eq!(
        received, 40,
        "what did not fit the buffers waited for the next tick"
    );
    assert!(
        worker
            .context
            .receive_buffers_exhausted
            .load(Ordering::Relaxed)
            >= 4,
        "the buffers never ran out"
    );
    worker.close_all();
}

#[test]
fn with_io_uring_every_echo_goes_through_the_ring_and_every_slot_comes_back() {
    let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_412);
    // Sixteen slots, reused many times over by sixty frames and their echoes.
    worker.transmit = Transmitter::new(true, 16, 0);
    let frames: Vec<Vec<u8>> = (0..60).map(pcmu_frame).collect();
    let echoes = echo_through_turns(
        &mut worker,
        &client,
        engine_rtp,
        &frames,
        Duration::from_millis(300),
    );
    assert_plays_back(&echoes, &frames);
    // A busy machine can leave the last packets queued behind a full ring when the loop ends
    // (counted by the session, not sent yet): more turns, with nothing new coming in, send
    // them. A packet that bypassed the ring would never be counted by it: that still fails.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        let stats = &worker.connection_by_key(1).expect("connection open").stats;
        let counted = stats.rtp_packets_sent + stats.rtcp_packets_sent;
        let ring = worker.transmit.ring.as_ref().expect("ring set up");
        if ring.in_flight() == 0 && ring.counts().sent == counted {
            break;
        }
        assert!(worker.turn());
    }

    let stats = worker
        .connection_by_key(1)
        .expect("connection open")
        .stats
        .clone();
    let ring = worker.transmit.ring.as_ref().expect("ring set up");
    assert_eq!(ring.in_flight(), 0, "a slot was never given back");
    let counts = ring.counts();
    assert_eq!(
        counts.sent,
        stats.rtp_packets_sent + stats.rtcp_packets_sent,
        "some packets did not go through the ring: {counts:?}"
    );
    assert_eq!((counts.failed, counts.fell_back), (0, 0), "{counts:?}");
    assert!(counts.sent > 16, "slots were not reused: {counts:?}");
    assert_eq!(echoes.len() as u64, stats.rtp_packets_sent);
    assert_eq!(
        worker.context.uring_sends.load(Ordering::Relaxed),
        counts.sent,
        "engine-wide count not published"
    );
    worker.close_all();
}

#[test]
fn when_the_kernel_refuses_the_ring_the_worker_echoes_with_sendto() {
    let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_414);
    // A ring of zero entries is refused by io_uring_setup, like a seccomp filter would.
    worker.transmit = Transmitter::new(true, 0, 0);
    assert!(worker.transmit.ring.is_none());
    let frames: Vec<Vec<u8>> = (0..30).map(pcmu_frame).collect();
    let echoes = echo_through_turns(
        &mut worker,
        &client,
        engine_rtp,
        &frames,
        Duration::from_millis(200),
    );
    assert_plays_back(&echoes, &frames);
    assert_eq!(worker.context.uring_sends.load(Ordering::Relaxed), 0);
    worker.close_all();
}

#[test]
fn closing_a_connection_hands_its_queued_sends_to_the_kernel_first() {
    let (mut worker, _commands, client, engine_rtp) = worker_with_echo_connection(31_416);
    worker.transmit = Transmitter::new(true, 16, 0);
    let slot = worker.slots[&1];
    let connection = worker.connections[slot].as_ref().expect("connection open");
    // A packet queued mid-turn, as a session flush would queue it, then the close.
    let socket = connection.socket(Leg::Rtp);
    let ring = worker.transmit.ring.as_mut().expect("ring set up");
    let buffer = ring.packet_buffer().expect("free slot");
    buffer[..5].copy_from_slice(b"final");
    let target = client.local_addr().expect("client address");
    ring.send(socket, 5, target, 1);
    assert_eq!(ring.in_flight(), 1);
    worker.close(1);
    let mut received = [0u8; 16];
    let (length, from) = client
        .recv_from(&mut received)
        .expect("queued send went out");
    assert_eq!((&received[..length], from), (&b"final"[..], engine_rtp));
}

#[test]
fn conferences_fill_a_tick_group_then_spread_each_on_its_own_grid() {
    use super::conferences::{RoomTicks, GROUP_MEMBERS};
    let first_due = |ticks: &RoomTicks, now| ticks.due(now)[0];
    let epoch = Instant::now();
    let ms = Duration::from_millis;
    let now = epoch + ms(41);
    let mut ticks = RoomTicks::default();
    assert_eq!(ticks.next(), None);
    // Rooms of ten: a small load stays on one grid, one wake-up a tick.
    let ten = |_| 10;
    let small: Vec<usize> = (1..=15)
        .map(|room| ticks.add(room, epoch, now, ten))
        .collect();
    assert_eq!(small, [0; 15]);
    assert_eq!(
        ticks.next(),
        Some(epoch + ms(60)),
        "group 0's grid: epoch + k × 20 ms"
    );
    for room in 1..=15 {
        ticks.remove(room);
    }
    assert_eq!(
        ticks.next(),
        None,
        "a group whose rooms all left does not tick"
    );
    // Rooms of 100: a group takes rooms until it has GROUP_MEMBERS, then the next one does;
    // with every group full, the emptiest.
    assert_eq!(GROUP_MEMBERS, 256);
    let hundred = |_| 100;
    let groups: Vec<usize> = (1..=14)
        .map(|room| ticks.add(room, epoch, now, hundred))
        .collect();
    assert_eq!(groups, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0, 1]);
    // After 41 ms: group 0 next ticks at 60 ms, group 1 at 45, group 2 at 50, group 3 at 55.
    assert_eq!(ticks.next(), Some(epoch + ms(45)));
    assert_eq!(first_due(&ticks, now), None);
    assert_eq!(first_due(&ticks, epoch + ms(52)), Some((1, epoch + ms(45))));
    ticks.advance(1, epoch + ms(45), epoch + ms(52));
    assert_eq!(first_due(&ticks, epoch + ms(52)), Some((2, epoch + ms(50))));
    ticks.advance(2, epoch + ms(50), epoch + ms(52));
    assert_eq!(first_due(&ticks, epoch + ms(52)), None);
    assert_eq!(ticks.next(), Some(epoch + ms(55)));
    // Group 3's rooms leave: it stops ticking, and the next room goes there (the only group
    // under GROUP_MEMBERS), on its grid.
    for room in [10, 11, 12] {
        ticks.remove(room);
    }
    ticks.remove(99); // in no group: nothing happens
    assert_eq!(ticks.rooms(3).len(), 0);
    assert_eq!(
        first_due(&ticks, epoch + ms(56)),
        None,
        "group 3 has no rooms left"
    );
    assert_eq!(ticks.next(), Some(epoch + ms(60)));
    assert_eq!(ticks.add(15, epoch, epoch + ms(56), hundred), 3);
    for (group, at) in [(0, 60), (1, 65), (2, 70)] {
        assert_eq!(
            first_due(&ticks, epoch + ms(at)),
            Some((group, epoch + ms(at)))
        );
        ticks.advance(group, epoch + ms(at), epoch + ms(at));
    }
    assert_eq!(first_due(&ticks, epoch + ms(74)), None);
    assert_eq!(first_due(&ticks, epoch + ms(75)), Some((3, epoch + ms(75))));
    // Every due group, earliest first, once; one behind by several ticks ticks once a turn
    // and is due again the next.
    let mut ticks = RoomTicks::default();
    for room in 1..=12 {
        ticks.add(room, epoch, now, hundred);
    }
    assert_eq!(
        ticks.due(epoch + ms(58)),
        [
            Some((1, epoch + ms(45))),
            Some((2, epoch + ms(50))),
            Some((3, epoch + ms(55))),
            None
        ]
    );
    ticks.advance(1, epoch + ms(45), epoch + ms(110));
    assert_eq!(
        first_due(&ticks, epoch + ms(110)),
        Some((2, epoch + ms(50))),
        "group 1 ticked for 45 ms and is behind: 65 ms is due, after the others"
    );
    assert!(ticks
        .due(epoch + ms(110))
        .contains(&Some((1, epoch + ms(65)))));
    // After a long stall each group skips ahead rather than burst.
    let mut ticks = RoomTicks::default();
    for room in 1..=12 {
        ticks.add(room, epoch, now, hundred);
    }
    for (group, at) in [(0, 60), (1, 45), (2, 50), (3, 55)] {
        ticks.advance(group, epoch + ms(at), epoch + ms(500));
    }
    assert_eq!(first_due(&ticks, epoch + ms(519)), None);
    assert_eq!(
        first_due(&ticks, epoch + ms(520)),
        Some((0, epoch + ms(520)))
    );
}

#[test]
fn the_groups_ticks_of_one_period_share_the_workers_silence_encodes() {
    use super::conferences::RoomTicks;
    let epoch = Instant::now();
    let ms = Duration::from_millis;
    let mut ticks = RoomTicks::default();
    // Four groups' ticks 5 ms apart: one period; the next group 0 tick begins the next.
    let begins: Vec<bool> = [0, 5, 10, 15, 20, 25, 40]
        .into_iter()
        .map(|at| ticks.silence_period_begins(epoch + ms(at)))
        .collect();
    assert_eq!(begins, [true, false, false, false, true, false, true]);
    // Groups 1 and 3 alone: each period begins at group 1's tick.
    let mut ticks = RoomTicks::default();
    let begins: Vec<bool> = [5, 15, 25, 35, 45]
        .into_iter()
        .map(|at| ticks.silence_period_begins(epoch + ms(at)))
        .collect();
    assert_eq!(begins, [true, false, true, false, true]);
}

/// A worker that reads at its tick, with a PCMU hairpin of two connections, each with its
/// client: (worker, command sender, clients, the connections' RTP addresses).
fn hairpin_worker_at_tick(
    rtp_port: u16,
) -> (
    Worker,
    SyncSender<WorkerCommand>,
    [std::net::UdpSocket; 2],
    [SocketAddr; 2],
) {
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let threads = super::super::tuning::ThreadTuning {
        receive_at_tick: true,
        ..super::super::tuning::ThreadTuning::default()
    };
    let (mut worker, commands) = test_worker(rtp_port, 2, threads, |epoch| {
        staggered_tick_epoch(epoch, 0, 1)
    });
    let clients = [0, 1].map(|_| {
        let client = std::net::UdpSocket::bind((localhost, 0)).expect("bind client");
        client.set_nonblocking(true).expect("non-blocking client");
        client
    });
    let mut addresses = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let port = rtp_port + 2 * i as u16;
        let sockets = super::super::socket::bind_pair(localhost, port, &TEST_SOCKETS)
            .expect("test pair is free");
        addresses.push(sockets.local_rtp);
        let media = pcmu_media(super::super::MediaMode::Idle, client);
        let open = NewConnection {
            key: 1 + i as u64,
            media,
            rtp_port: port,
            sockets,
            stats: Arc::default(),
        };
        commands
            .try_send(WorkerCommand::Open(Box::new(open)))
            .expect("queue has room");
    }
    let spec = crate::engine::ConferenceSpec {
        rate: 8000,
        hairpin: true,
        join_tone: false,
    };
    commands
        .try_send(WorkerCommand::CreateConference {
            conference: 1,
            spec,
        })
        .expect("queue has room");
    for key in [1, 2] {
        commands
            .try_send(WorkerCommand::Join {
                conference: 1,
                key,
                conferee: crate::engine::ConfereeSpec::default(),
            })
            .expect("queue has room");
    }
    assert!(worker.apply_commands());
    (worker, commands, clients, [addresses[0], addresses[1]])
}

/// Runs turns while the first of `clients` sends frames `indexes` (a tick apart) to
/// `engine_rtp`; returns (sequence number, frame index) of each frame the second client (or
/// the same one) was sent (other packets, the tick's stand-ins for what was missing, as index
/// `None`).
fn relay_through_turns(
    worker: &mut Worker,
    clients: [&std::net::UdpSocket; 2],
    engine_rtp: SocketAddr,
    indexes: &[u16],
) -> Vec<(u16, Option<u16>)> {
    let start = Instant::now();
    let end = start + ROOM_TICK * (indexes.len() as u32 + 6);
    let mut next = 0;
    let mut heard = Vec::new();
    let mut buffer = [0u8; 2048];
    while Instant::now() < end {
        if next < indexes.len() && Instant::now() >= start + ROOM_TICK * next as u32 {
            clients[0]
                .send_to(&pcmu_frame(indexes[next]), engine_rtp)
                .expect("send to worker");
            next += 1;
        }
        assert!(worker.turn());
        while let Ok(length) = clients[1].recv(&mut buffer) {
            if rtp::is_rtcp(&buffer[..length]) {
                continue;
            }
            let packet = rtp::parse(&buffer[..length]).expect("valid RTP");
            let index = (0..100).find(|&i| pcmu_frame(i)[12..] == *packet.payload());
            heard.push((packet.sequence(), index));
        }
    }
    heard
}

/// A worker that reads at its tick relays a hairpin through the jitter buffer (the caller's
/// lost frame concealed: no gap in the stream), until the caller's packets are dropped as
/// late: from then on it forwards them as they arrive (the caller's gap and order reach the
/// far end).
#[test]
fn a_hairpin_whose_packets_come_too_late_for_the_tick_is_forwarded_as_they_arrive() {
    let (mut worker, _commands, clients, addresses) = hairpin_worker_at_tick(31_604);
    let on_time: Vec<u16> = (0..20).filter(|&i| i != 10).collect();
    let heard = relay_through_turns(
        &mut worker,
        [&clients[0], &clients[1]],
        addresses[0],
        &on_time,
    );
    let frames = heard.iter().filter(|(_, i)| i.is_some()).count();
    assert!(frames >= 15, "{heard:?}");
    for (n, (sequence, _)) in heard.iter().enumerate() {
        assert_eq!(
            *sequence,
            heard[0].0.wrapping_add(n as u16),
            "no gap: {heard:?}"
        );
    }
    // Frames 20 to 29, then 30 to 32 held up (a burst late in the network) and sent after 40:
    // played and concealed by then, they are dropped as late.
    let mut late: Vec<u16> = (20..30).chain(33..41).collect();
    late.extend([30, 31, 32]);
    relay_through_turns(&mut worker, [&clients[0], &clients[1]], addresses[0], &late);
    // Then frame 42 is never sent, 48 goes before 47.
    let mut forwarded: Vec<u16> = (41..60).filter(|&i| i != 42).collect();
    let at = forwarded.iter().position(|&i| i == 47).expect("frame 47");
    forwarded.swap(at, at + 1);
    let heard = relay_through_turns(
        &mut worker,
        [&clients[0], &clients[1]],
        addresses[0],
        &forwarded,
    );
    let first = heard.iter().position(|(_, i)| i.is_some()).expect("frames");
    let last = heard
        .iter()
        .rposition(|(_, i)| i.is_some())
        .expect("frames");
    let frames = &heard[first..=last];
    // Each frame as it came, in the order sent, no stand-in where 42 was missing.
    let indexes: Vec<u16> = frames.iter().filter_map(|&(_, i)| i).collect();
    assert_eq!(
        indexes,
        forwarded[forwarded.len() - indexes.len()..],
        "{heard:?}"
    );
    assert!(indexes.len() >= 12, "{heard:?}");
    let (first_sequence, first_index) = (frames[0].0, indexes[0]);
    for &(sequence, index) in frames {
        let index = index.expect("only frames between the first and the last");
        assert_eq!(
            sequence.wrapping_sub(first_sequence),
            index - first_index,
            "the caller's numbering, its gap kept: {heard:?}"
        );
    }
}

/// An echo on a worker that reads at its tick plays the caller's frames out at the tick (a
/// lost one concealed) until they are dropped as late; from then on each goes back as it is
/// read — a burst of ten read at one tick too, more than a session's four transmit slots —
/// with the caller's numbering.
#[test]
fn an_echo_whose_packets_come_too_late_for_the_tick_sends_each_back_as_it_is_read() {
    let threads = super::super::tuning::ThreadTuning {
        receive_at_tick: true,
        ..super::super::tuning::ThreadTuning::default()
    };
    let (mut worker, _commands, client, engine_rtp) = echo_worker(31_608, None, threads);
    client.set_nonblocking(true).expect("non-blocking client");
    let on_time: Vec<u16> = (0..20).filter(|&i| i != 10).collect();
    let heard = relay_through_turns(&mut worker, [&client, &client], engine_rtp, &on_time);
    assert!(
        heard.iter().filter(|(_, i)| i.is_some()).count() >= 15,
        "{heard:?}"
    );
    for (n, (sequence, _)) in heard.iter().enumerate() {
        assert_eq!(*sequence, heard[0].0.wrapping_add(n as u16), "{heard:?}");
    }
    let session = |worker: &mut Worker| {
        let connection = worker.connection_by_key(1).expect("open");
        (
            connection.session.is_forwarding(),
            connection.session.dropping_late(Instant::now()),
        )
    };
    assert_eq!(session(&mut worker), (false, false));
    // Frames 30 to 32 held up in the network, sent after 40: dropped as late.
    let mut late: Vec<u16> = (20..30).chain(33..41).collect();
    late.extend([30, 31, 32]);
    relay_through_turns(&mut worker, [&client, &client], engine_rtp, &late);
    assert_eq!(session(&mut worker), (true, true));
    // Ten frames at once.
    for i in 41..51 {
        client
            .send_to(&pcmu_frame(i), engine_rtp)
            .expect("send to worker");
    }
    let heard = relay_through_turns(&mut worker, [&client, &client], engine_rtp, &[]);
    let indexes: Vec<u16> = heard.iter().filter_map(|&(_, i)| i).collect();
    assert_eq!(indexes, (41..51).collect::<Vec<u16>>(), "{heard:?}");
    for (n, (sequence, _)) in heard.iter().enumerate() {
        assert_eq!(*sequence, heard[0].0.wrapping_add(n as u16), "{heard:?}");
    }
}

/// A hairpin on a worker that reads at its tick whose caller falls silent for six ticks and
/// then resumes with the frames it held (in order, each after its tick: the stream behind
/// the playout): none of them is lost — the first goes to the other member as it is read,
/// after the concealment (the room's tick paired the two), and the rest as they arrive.
/// Unpaired, all six that came after their ticks were dropped as late.
#[test]
fn a_hairpin_whose_stream_falls_behind_in_order_loses_none_of_it() {
    let (mut worker, _commands, clients, addresses) = hairpin_worker_at_tick(31_612);
    let clients = [&clients[0], &clients[1]];
    let on_time: Vec<u16> = (0..20).collect();
    // Then six ticks without a packet (`relay_through_turns` ends so).
    relay_through_turns(&mut worker, clients, addresses[0], &on_time);
    let held: Vec<u16> = (20..40).collect();
    let heard = relay_through_turns(&mut worker, clients, addresses[0], &held);
    let indexes: Vec<u16> = heard.iter().filter_map(|&(_, i)| i).collect();
    assert_eq!(indexes, held, "{heard:?}");
    for (n, (sequence, _)) in heard.iter().enumerate() {
        assert_eq!(*sequence, heard[0].0.wrapping_add(n as u16), "{heard:?}");
    }
    let connection = worker.connection_by_key(1).expect("open");
    assert!(connection.session.is_forwarding());
    assert_eq!(connection.session.stats().jitter.late, 1, "20 alone");
}
