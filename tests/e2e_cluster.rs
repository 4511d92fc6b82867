//! Three callbridge nodes behind Kamailio's dispatcher (issue 21), on loopback: Kamailio on
//! 127.0.0.1 running the shipped `configs/examples/cluster/kamailio.cfg` (only its address,
//! port, node list and probe interval replaced), the nodes on 127.0.0.2, .3 and .4 running the
//! shipped `node-N.toml` (only ports and paths overridden). Callers are hand-driven UACs that
//! follow the route set Kamailio records, so BYEs reach the node through the balancer as a
//! phone's would. Which node took a call is read from the address in its SDP answer.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::kamailio::Kamailio;
use common::postgres::Postgres;
use common::uac::{body, header, status, to_tag};
use common::{free_tcp_port, free_udp_tcp_port, heard, repo_path, send_tone, tone_power, Server};

const NODES: u8 = 3;

/// The nodes' addresses: node n (1-based) is 127.0.0.(n+1), as in the shipped configs.
fn node_ip(node: u8) -> String {
    format!("127.0.0.{}", node + 1)
}

struct Cluster {
    balancer: Kamailio,
    /// Node n is `nodes[n - 1]`; None once killed.
    nodes: Vec<Option<Server>>,
    /// Each node's (SIP, API) ports, to start it again.
    ports: Vec<(u16, u16)>,
    rtp_base: u16,
    /// Overrides every node gets after its own (a shared store, recording storage).
    shared: Vec<String>,
}

impl Cluster {
    /// `rtp_base`: the first RTP port of this cluster's nodes (each gets 200), distinct per
    /// test: the tests of this file run in parallel on the same node addresses.
    fn start(rtp_base: u16) -> Cluster {
        Cluster::start_with(rtp_base, Vec::new())
    }

    /// As `start`, every node also getting the `shared` overrides.
    fn start_with(rtp_base: u16, shared: Vec<String>) -> Cluster {
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        for node in 1..=NODES {
            let (sip_port, api_port) = (free_udp_tcp_port(), free_tcp_port());
            nodes.push(Some(start_node(
                node, sip_port, api_port, rtp_base, &shared,
            )));
            ports.push((sip_port, api_port));
        }
        let shipped = std::fs::read_to_string(repo_path("configs/examples/cluster/kamailio.cfg"))
            .expect("read the shipped kamailio.cfg");
        let balancer = Kamailio::start_config(0, |port, dir| {
            let list = dir.join("nodes.list");
            let lines: String = ports
                .iter()
                .enumerate()
                .map(|(i, (p, _))| {
                    format!("1 sip:{}:{p} 0 0 node={}\n", node_ip(i as u8 + 1), i + 1)
                })
                .collect();
            std::fs::write(&list, lines).expect("write nodes.list");
            site_config(&shipped, port, &list)
        });
        let cluster = Cluster {
            balancer,
            nodes,
            ports,
            rtp_base,
            shared,
        };
        // The nodes must be probed and active before the first call.
        cluster.wait_for_calls_to_reach(&[1, 2, 3]);
        cluster
    }

    fn node(&self, node: u8) -> &Server {
        self.nodes[usize::from(node - 1)]
            .as_ref()
            .expect("node running")
    }

    /// Starts node `node` again (after a kill) on its ports.
    fn restart(&mut self, node: u8) {
        let (sip_port, api_port) = self.ports[usize::from(node - 1)];
        let server = start_node(node, sip_port, api_port, self.rtp_base, &self.shared);
        self.nodes[usize::from(node - 1)] = Some(server);
    }

    fn balancer_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.balancer.port))
    }

    /// Places echo calls until every node in `nodes` has taken one (the dispatcher's probes
    /// have found them), hanging each up; panics after 15 s.
    fn wait_for_calls_to_reach(&self, nodes: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut reached = Vec::new();
        let mut n = 0;
        while Instant::now() < deadline {
            n += 1;
            if let Ok(mut call) = Caller::call(self.balancer_addr(), "echo", &format!("probe{n}")) {
                reached.push(call.node);
                call.hang_up();
            }
            if nodes.iter().all(|node| reached.contains(node)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "calls reached nodes {reached:?}, not all of {nodes:?}; kamailio:\n{}",
            self.balancer.log()
        );
    }
}

fn start_node(node: u8, sip_port: u16, api_port: u16, rtp_base: u16, shared: &[String]) -> Server {
    let config = repo_path(&format!("configs/examples/cluster/node-{node}.toml"));
    Server::start_from_file(&config, sip_port, api_port, |dir| {
        let mut overrides = node_overrides(node, sip_port, api_port, rtp_base, dir);
        overrides.extend(shared.iter().cloned());
        overrides
    })
}

/// What a test sets on a shipped node config: its ports, its token, its files.
fn node_overrides(
    node: u8,
    sip_port: u16,
    api_port: u16,
    rtp_base: u16,
    dir: &Path,
) -> Vec<String> {
    let token_file = dir.join("api.token");
    std::fs::write(&token_file, format!("{}\n", common::TOKEN)).expect("write token");
    let rtp_min = rtp_base;
    vec![
        format!("sip.listen=[\"udp://{}:{sip_port}\"]", node_ip(node)),
        format!("api.listen=127.0.0.1:{api_port}"),
        format!("api.token_file={:?}", token_file.display().to_string()),
        format!("media.rtp_port_min={rtp_min}"),
        format!("media.rtp_port_max={}", rtp_min + 199),
        format!(
            "store.path={:?}",
            dir.join("callbridge.db").display().to_string()
        ),
        format!(
            "recording.dir={:?}",
            dir.join("calls").display().to_string()
        ),
        format!(
            "media.recording_dir={:?}",
            dir.join("recordings").display().to_string()
        ),
        "app.drain_timeout_s=20".to_string(),
        "sip.t1_ms=100".to_string(),
    ]
}

/// The shipped balancer config with this test's address, port, node list and a 1 s probe.
fn site_config(shipped: &str, port: u16, list: &Path) -> String {
    let replaced = shipped
        .replace(
            "#!substdef \"!LB_PORT!5060!g\"",
            &format!("#!substdef \"!LB_PORT!{port}!g\""),
        )
        .replace(
            "#!substdef \"!NODES_LIST!/etc/kamailio/callbridge-nodes.list!g\"",
            &format!("#!substdef \"!NODES_LIST!{}!g\"", list.display()),
        )
        .replace("#!define PROBE_INTERVAL 2", "#!define PROBE_INTERVAL 1");
    assert_ne!(replaced, shipped, "the site lines of kamailio.cfg moved");
    assert!(replaced.contains(&format!("!LB_PORT!{port}!")));
    replaced
}

/// A phone calling through the balancer: it keeps the route set Kamailio recorded and sends
/// its ACK and BYE along it, as RFC 3261 §12.1.2 says.
struct Caller {
    sip: UdpSocket,
    rtp: UdpSocket,
    balancer: SocketAddr,
    user: String,
    /// The calling number (From user).
    from: String,
    call_id: String,
    tag: String,
    to_tag: String,
    /// Route headers for in-dialog requests (the Record-Route values, reversed).
    route: Vec<String>,
    /// The remote target (the node's Contact).
    target: String,
    /// Where the node wants our RTP (its SDP answer).
    node_rtp: SocketAddr,
    /// The node that answered (from the SDP answer's address).
    node: u8,
    hung_up: bool,
}

impl Caller {
    /// INVITE through the balancer until a final response; the call on a 2xx (ACKed), the
    /// status otherwise.
    fn call(balancer: SocketAddr, user: &str, name: &str) -> Result<Caller, u16> {
        Caller::call_from(balancer, user, "phone", name)
    }

    /// As `call`, from the number `from`.
    fn call_from(balancer: SocketAddr, user: &str, from: &str, name: &str) -> Result<Caller, u16> {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("bind SIP");
        sip.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind RTP");
        let port = sip.local_addr().expect("addr").port();
        let rtp_port = rtp.local_addr().expect("addr").port();
        let call_id = format!("{name}-{}-{port}@127.0.0.1", std::process::id());
        let tag = format!("t{port}");
        let sdp = format!(
            "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0\r\na=sendrecv\r\n"
        );
        let invite = format!(
            "INVITE sip:{user}@{balancer} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag}i;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from}@127.0.0.1:{port}>;tag={tag}\r\n\
             To: <sip:{user}@{balancer}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:phone@127.0.0.1:{port}>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        sip.send_to(invite.as_bytes(), balancer)
            .expect("send INVITE");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut resent = Instant::now();
        let answer = loop {
            assert!(Instant::now() < deadline, "no final response to {call_id}");
            let Some(msg) = recv(&sip) else {
                // Retransmit (UDP) until something provisional or final comes.
                if resent.elapsed() > Duration::from_millis(500) {
                    sip.send_to(invite.as_bytes(), balancer).expect("resend");
                    resent = Instant::now();
                }
                continue;
            };
            resent = Instant::now() + Duration::from_secs(60);
            if !msg.starts_with("SIP/2.0") || status(&msg) < 200 {
                continue;
            }
            break msg;
        };
        let code = status(&answer);
        if code >= 300 {
            // The transaction's ACK, hop by hop: the balancer absorbs it.
            let ack = format!(
                "ACK sip:{user}@{balancer} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag}i;rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:{from}@127.0.0.1:{port}>;tag={tag}\r\n\
                 To: {}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 1 ACK\r\n\
                 Content-Length: 0\r\n\r\n",
                header(&answer, "To").expect("To")
            );
            sip.send_to(ack.as_bytes(), balancer).expect("send ACK");
            return Err(code);
        }
        let mut route: Vec<String> = answer
            .lines()
            .filter_map(|l| l.strip_prefix("Record-Route: "))
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .collect();
        route.reverse();
        assert!(
            !route.is_empty(),
            "the balancer records its route: {answer}"
        );
        let contact = header(&answer, "Contact").expect("Contact");
        let target = contact
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map_or(contact, |(uri, _)| uri)
            .to_string();
        let sdp = body(&answer);
        let ip: IpAddr = sdp
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))
            .expect("c= line")
            .trim()
            .parse()
            .expect("c= address");
        let node = (1..=NODES)
            .find(|n| node_ip(*n) == ip.to_string())
            .unwrap_or_else(|| panic!("the answer's media address {ip} is no node's"));
        let caller = Caller {
            sip,
            rtp,
            balancer,
            user: user.to_string(),
            from: from.to_string(),
            call_id,
            tag,
            to_tag: to_tag(&answer),
            route,
            target,
            node_rtp: SocketAddr::new(ip, common::uac::media_port(sdp)),
            node,
            hung_up: false,
        };
        caller.send_in_dialog("ACK", 1, "a");
        Ok(caller)
    }

    fn send_in_dialog(&self, method: &str, cseq: u32, branch: &str) {
        let port = self.sip.local_addr().expect("addr").port();
        let routes: String = self
            .route
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let request = format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag}{branch}{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             {routes}\
             From: <sip:{from}@127.0.0.1:{port}>;tag={tag}\r\n\
             To: <sip:{user}@{balancer}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            target = self.target,
            from = self.from,
            tag = self.tag,
            user = self.user,
            balancer = self.balancer,
            to_tag = self.to_tag,
            call_id = self.call_id,
        );
        // Loose routing: the request goes to the first Route, the balancer.
        self.sip
            .send_to(request.as_bytes(), self.balancer)
            .expect("send in-dialog request");
    }

    /// BYE along the route set; the BYE's final status.
    fn hang_up(&mut self) -> u16 {
        self.hung_up = true;
        self.send_in_dialog("BYE", 2, "b");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut resent = Instant::now();
        while Instant::now() < deadline {
            let Some(msg) = recv(&self.sip) else {
                if resent.elapsed() > Duration::from_millis(500) {
                    self.send_in_dialog("BYE", 2, "b");
                    resent = Instant::now();
                }
                continue;
            };
            let cseq = header(&msg, "CSeq").unwrap_or_default().to_string();
            if msg.starts_with("SIP/2.0") && cseq.ends_with("BYE") && status(&msg) >= 200 {
                return status(&msg);
            }
            if msg.starts_with("SIP/2.0") && cseq.ends_with("INVITE") {
                // Our ACK was lost: the 200 comes again.
                self.send_in_dialog("ACK", 1, "a");
            }
        }
        panic!("no answer to BYE of {}", self.call_id);
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if !self.hung_up && !std::thread::panicking() {
            self.hang_up();
        }
    }
}

fn recv(socket: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn status_or_zero(msg: &str) -> u16 {
    if msg.starts_with("SIP/2.0 ") {
        status(msg)
    } else {
        0
    }
}

fn spread(calls: &[u8]) -> BTreeMap<u8, usize> {
    let mut by_node = BTreeMap::new();
    for node in calls {
        *by_node.entry(*node).or_default() += 1;
    }
    by_node
}

#[test]
fn calls_spread_over_the_nodes_and_every_caller_of_a_room_reaches_the_same_node() {
    let cluster = Cluster::start(41_000);

    // 30 calls: each node takes its share (round-robin), and each answers on its own address.
    let mut nodes = Vec::new();
    for n in 0..30 {
        let mut call = Caller::call(cluster.balancer_addr(), "echo", &format!("echo{n}"))
            .unwrap_or_else(|code| panic!("call {n} refused with {code}"));
        nodes.push(call.node);
        assert_eq!(
            call.hang_up(),
            200,
            "the BYE reaches the node through the balancer"
        );
    }
    let by_node = spread(&nodes);
    eprintln!("measured: 30 echo calls by node: {by_node:?}");
    assert_eq!(by_node.len(), 3, "{by_node:?}");
    assert!(by_node.values().all(|&n| n >= 5), "{by_node:?}");

    // Six callers of room 7 land on one node and hear each other (N-1 mix: not themselves).
    let room: Vec<Caller> = (0..6)
        .map(|i| {
            Caller::call(cluster.balancer_addr(), "conf7", &format!("room{i}"))
                .unwrap_or_else(|code| panic!("room caller {i} refused with {code}"))
        })
        .collect();
    let host = room[0].node;
    assert!(
        room.iter().all(|c| c.node == host),
        "one node per room: {:?}",
        room.iter().map(|c| c.node).collect::<Vec<_>>()
    );
    let server = cluster.node(host);
    assert_eq!(server.metric("callbridge_conferees"), 6.0);
    for other in (1..=NODES).filter(|n| *n != host) {
        assert_eq!(cluster.node(other).metric("callbridge_conferees"), 0.0);
    }
    // The node's ids carry its node_id in the top byte (CUAE's MmsId), and another node's
    // connection is refused by name rather than "not found".
    let calls = server.get("/callcontrol/calls")["Calls"]
        .as_array()
        .cloned()
        .expect("Calls");
    assert_eq!(calls.len(), 6, "{calls:#?}");
    for call in &calls {
        let id: u32 = call["ConnectionId"]
            .as_str()
            .expect("ConnectionId")
            .parse()
            .expect("numeric id");
        assert_eq!(id >> 24, u32::from(host), "{call}");
    }
    let elsewhere = (u32::from(host % NODES + 1) << 24) | 1;
    let (status, refused) = server.action(
        "DeleteConnection",
        serde_json::json!({ "ConnectionId": elsewhere.to_string() }),
    );
    assert_eq!(status, 503);
    assert_eq!(refused["ResultCode"], "8", "ResourceUnavailable: {refused}");
    assert!(
        refused["Error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("media server {}", host % NODES + 1))),
        "{refused}"
    );

    for c in &room {
        heard(&c.rtp);
    }
    send_tone(&room[0].rtp, room[0].node_rtp, 0x7007, 1000.0, 60);
    let audio: Vec<Vec<i16>> = room.iter().map(|c| heard(&c.rtp)).collect();
    for (i, pcm) in audio.iter().enumerate().skip(1) {
        assert!(
            tone_power(pcm, 1000.0) > 1e5,
            "caller {i} hears the talker: {} samples, power {}",
            pcm.len(),
            tone_power(pcm, 1000.0)
        );
    }
    assert!(
        tone_power(&audio[0], 1000.0) < tone_power(&audio[1], 1000.0) / 1000.0,
        "the talker does not hear itself"
    );
    drop(room);
    for node in 1..=NODES {
        let server = cluster.node(node);
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.metric("callbridge_calls") != 0.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            server.metric("callbridge_calls"),
            0.0,
            "node {node} kept a call"
        );
        let metrics = server.metrics();
        assert!(
            metrics.contains(&format!("callbridge_node_info{{node_id=\"{node}\"}} 1")),
            "node {node}'s /metrics names it"
        );
    }
}

#[test]
fn a_draining_node_and_a_killed_node_lose_no_new_calls() {
    let mut cluster = Cluster::start(41_200);

    // A call in progress on node 2 when it is told to stop.
    let mut on_two = loop {
        let call = Caller::call(cluster.balancer_addr(), "echo", "before-drain")
            .expect("call before the drain");
        if call.node == 2 {
            break call;
        }
    };
    let drain_started = Instant::now();
    cluster.node(2).signal(libc::SIGTERM);
    // What the dispatcher's probe now hears from it.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let node_two = SocketAddr::new(node_ip(2).parse().expect("ip"), cluster.node(2).sip_port);
    let local = probe.local_addr().expect("addr").port();
    // Probed until it answers 503, for at most ten seconds: the signal reaches the node's
    // control task in its own time, which on a loaded machine is more than a few round trips.
    let mut answer = String::new();
    let probing_until = drain_started + Duration::from_secs(10);
    for attempt in 0.. {
        if attempt > 0 {
            if Instant::now() >= probing_until {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let options = format!(
            "OPTIONS sip:{node_two} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKdrainprobe{attempt}\r\n\
             From: <sip:balancer@127.0.0.1>;tag=probe\r\n\
             To: <sip:{node_two}>\r\n\
             Call-ID: drain-probe-{attempt}-{local}@127.0.0.1\r\n\
             CSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        probe
            .send_to(options.as_bytes(), node_two)
            .expect("send OPTIONS");
        answer = recv(&probe).unwrap_or_default();
        if status_or_zero(&answer) == 503 {
            break;
        }
    }
    assert_eq!(status_or_zero(&answer), 503, "{answer}");
    eprintln!(
        "measured: node 2 answered OPTIONS 503 {} ms after SIGTERM",
        drain_started.elapsed().as_millis()
    );
    assert_eq!(header(&answer, "Retry-After"), Some("30"));
    // Draining: its OPTIONS answer 503 and the dispatcher takes it out; every new call
    // succeeds, on the other two.
    let mut nodes = Vec::new();
    for n in 0..12 {
        let mut call = Caller::call(cluster.balancer_addr(), "echo", &format!("drain{n}"))
            .unwrap_or_else(|code| {
                panic!(
                    "call {n} during the drain refused with {code}; kamailio:\n{}",
                    cluster.balancer.log()
                )
            });
        nodes.push(call.node);
        call.hang_up();
    }
    assert!(
        !nodes.contains(&2),
        "no new call on the draining node: {nodes:?}"
    );
    eprintln!(
        "measured: 12 calls during the drain, by node: {:?}",
        spread(&nodes)
    );
    assert!(nodes.contains(&1) && nodes.contains(&3), "{nodes:?}");
    // The call in progress continues and ends normally, through the balancer.
    let echo = [0x80u8, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9]
        .into_iter()
        .chain(std::iter::repeat_n(0xff, 160))
        .collect::<Vec<u8>>();
    on_two
        .rtp
        .send_to(&echo, on_two.node_rtp)
        .expect("send RTP");
    on_two
        .rtp
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let (n, _) = on_two
        .rtp
        .recv_from(&mut buf)
        .expect("the draining node still echoes its call");
    assert!(n >= 12);
    assert_eq!(on_two.hang_up(), 200);
    // With its last call gone it exits by itself, cleanly.
    let node_two = cluster.nodes[1].as_mut().expect("node 2");
    assert_eq!(node_two.wait_exit(Duration::from_secs(10)), Some(0));
    cluster.nodes[1] = None;

    // kill -9 node 3: new calls still succeed (a call sent to it before the dispatcher knows
    // fails over to node 1 after 2 s without an answer).
    cluster.nodes[2].as_mut().expect("node 3").kill_now();
    cluster.nodes[2] = None;
    let mut setups = Vec::new();
    for n in 0..6 {
        let started = Instant::now();
        let mut call = Caller::call(cluster.balancer_addr(), "echo", &format!("killed{n}"))
            .unwrap_or_else(|code| panic!("call {n} after the kill refused with {code}"));
        setups.push(started.elapsed().as_millis());
        assert_eq!(call.node, 1, "only node 1 is left");
        call.hang_up();
    }
    // A figure for docs/CLUSTER.md (`-- --nocapture` shows it), not a timed assertion.
    eprintln!("measured: call setup times (ms) after kill -9 of node 3: {setups:?}");
    assert_eq!(cluster.node(1).metric("callbridge_calls"), 0.0);
}

/// The recording API's key in the shared-store test.
const KEY: &str = "cluster-recording-key-0001";

/// GET /verba/api on `server` with these parameters: status and body.
fn verba(server: &Server, params: &[(&str, &str)]) -> (u16, String) {
    let r = common::client()
        .get(server.url("/verba/api"))
        .query(params)
        .send()
        .expect("API reachable");
    (r.status().as_u16(), r.text().expect("body"))
}

fn attribute(xml: &str, name: &str) -> Option<String> {
    let at = xml.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = xml[at..].find('"')?;
    Some(xml[at..at + end].to_string())
}

/// The call of extension `number` with `status`, asked of `server`: its id, or None.
fn call_of(server: &Server, number: &str, status: &str) -> Option<String> {
    let (_, xml) = verba(
        server,
        &[
            ("action", "GetCallID"),
            ("apiKey", KEY),
            ("extension", number),
            ("status", status),
        ],
    );
    (attribute(&xml, "code").as_deref() == Some("0"))
        .then(|| attribute(&xml, "callID"))
        .flatten()
}

/// `callbridge ctl calls --cluster` with node 1's shipped config on the shared store.
fn cluster_calls(store_url: &str, scratch: &Path) -> String {
    let token = scratch.join("ctl.token");
    std::fs::write(&token, "ctl-token-0123456789\n").expect("token file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .arg("ctl")
        .arg("--config")
        .arg(repo_path("configs/examples/cluster/node-1.toml"))
        .args(["--set", &format!("store.url={store_url:?}")])
        .args([
            "--set",
            &format!("api.token_file={:?}", token.display().to_string()),
        ])
        .args(["calls", "--cluster"])
        .output()
        .expect("run ctl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_shared_postgresql_store_answers_on_any_node_for_every_nodes_calls() {
    let pg = Postgres::start();
    pg.create_database("cluster");
    // The nodes' recording storage, shared as an NFS mount would be (docs/CLUSTER.md).
    let recordings = tempfile::tempdir().expect("shared recording dir");
    let shared = vec![
        format!("store.url={:?}", pg.url("cluster")),
        format!(
            "recording.dir={:?}",
            recordings.path().display().to_string()
        ),
        format!("recording.api_key=[{{key={KEY:?}}}]"),
        "route=[{user=\"^conf(?P<conference>[0-9]+)$\", service=\"conference\"}, \
         {user=\"^echo$\", service=\"echo\"}, {user=\"^rec$\", service=\"echo\", \
         record=\"always\"}]"
            .to_string(),
    ];
    let mut cluster = Cluster::start_with(41_400, shared);

    // A recorded call on every node, each from its own number.
    let mut numbers = BTreeMap::new();
    for n in 0..12 {
        let number = format!("55500{n:02}");
        let mut call =
            Caller::call_from(cluster.balancer_addr(), "rec", &number, &format!("rec{n}"))
                .unwrap_or_else(|code| panic!("recorded call {n} refused with {code}"));
        send_tone(&call.rtp, call.node_rtp, 0x5000 + n, 1000.0, 10);
        assert_eq!(call.hang_up(), 200);
        numbers.entry(call.node).or_insert(number);
        if numbers.len() == usize::from(NODES) {
            break;
        }
    }
    assert_eq!(numbers.len(), 3, "{numbers:?}");

    // Node 1 finds node 3's call by extension and `last`, and downloads its recording (once
    // node 3 has finished it).
    let node_a = cluster.node(1);
    let on_c = call_of(node_a, &numbers[&3], "last").expect("node 1 finds node 3's call");
    let deadline = Instant::now() + Duration::from_secs(10);
    let media = loop {
        let r = common::client()
            .get(node_a.url("/verba/api"))
            .query(&[
                ("action", "GetMediaEncoded"),
                ("apiKey", KEY),
                ("callID", &on_c),
            ])
            .send()
            .expect("API reachable");
        let sha = r
            .headers()
            .get("x-recording-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if r.status() == 200 {
            break (r.bytes().expect("media").to_vec(), sha);
        }
        assert!(
            Instant::now() < deadline,
            "node 3's recording never came: {}",
            r.text().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (bytes, sha) = media;
    assert!(bytes.len() > 44, "a WAV with audio: {} bytes", bytes.len());
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sha.as_deref(),
        Some(digest.as_str()),
        "the store's checksum is the file's"
    );
    // The search on node 1 sees every node's calls.
    let (_, search) = verba(
        node_a,
        &[
            ("action", "SearchCalls"),
            ("apiKey", KEY),
            ("start", "2000-01-01 00:00"),
            ("end", "2100-01-01 00:00"),
        ],
    );
    let total: usize = attribute(&search, "total")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{search}"));
    assert!(total >= 3, "{search}");
    let owners = pg.query_texts(
        "cluster",
        "SELECT DISTINCT CAST(node_id AS TEXT) FROM calls ORDER BY 1",
    );
    assert_eq!(owners, ["1", "2", "3"], "every call carries its node");

    // kill -9 of node 2 with a call up: the call is "ongoing" for every node until node 2
    // comes back and its recovery ends it.
    // Each try from a number of its own: a try that landed elsewhere is hung up, and its end
    // may not be written yet when node 1 is asked.
    let mut tries = 0;
    let (stranded, ongoing_number) = loop {
        tries += 1;
        assert!(tries < 20, "round-robin never reached node 2");
        let number = format!("55599{tries:02}");
        let call = Caller::call_from(cluster.balancer_addr(), "rec", &number, "stranded")
            .expect("a call to strand");
        if call.node == 2 {
            break (call, number);
        }
        let mut call = call;
        call.hang_up();
    };
    let ongoing_number = ongoing_number.as_str();
    // Every node sees it as ongoing once node 2's store thread has written it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let id = loop {
        if let Some(id) = call_of(cluster.node(1), ongoing_number, "ongoing") {
            break id;
        }
        assert!(Instant::now() < deadline, "node 1 never saw node 2's call");
        std::thread::sleep(Duration::from_millis(50));
    };
    cluster.nodes[1].as_mut().expect("node 2").kill_now();
    let mut stranded = stranded;
    stranded.hung_up = true; // nobody to say BYE to
    assert_eq!(
        call_of(cluster.node(3), ongoing_number, "ongoing").as_deref(),
        Some(id.as_str()),
        "still ongoing while node 2 is down"
    );
    let listed = cluster_calls(&pg.url("cluster"), recordings.path());
    let row = listed
        .lines()
        .find(|line| line.contains(&id))
        .unwrap_or_else(|| panic!("ctl calls --cluster lists node 2's call:\n{listed}"));
    assert!(row.trim_start().starts_with("2 "), "owned by node 2: {row}");
    cluster.restart(2);
    assert_eq!(call_of(cluster.node(1), ongoing_number, "ongoing"), None);
    assert_eq!(
        call_of(cluster.node(3), ongoing_number, "last").as_deref(),
        Some(id.as_str())
    );
    let cause = pg.query_texts(
        "cluster",
        &format!("SELECT end_cause FROM calls WHERE call_id = '{id}'"),
    );
    assert_eq!(cause, ["restart"]);
}
