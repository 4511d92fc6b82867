//! `loadgen compare`: the same generator against callbridge and its peers (rtpengine, Janus
//! AudioBridge) in one invocation, one server at a time on 127.0.0.1, one table per workload
//! with the ratio callbridge ÷ peer (issue 19).
//!
//! Workloads (each for the servers that can do it):
//! - `echo`: callbridge's echo service (SIP) vs rtpengine `media-echo=backwards`: the tagged
//!   G.711 stream of `loadgen echo`, CPU per echoed packet, loss, stream jitter p99.
//! - `relay`: A ↔ server ↔ B, PCMU both sides: callbridge joins the two SIP calls in a room
//!   of two (the hairpin BridgeCalls makes) vs rtpengine's plain relay; CPU per relayed
//!   packet, loss, jitter.
//! - `transcode`: the same with A on PCMU and B on Opus 48 kHz (rtpengine `codec-transcode`);
//!   tones both ways, checked by Goertzel; CPU per call-second.
//! - `conference`: rooms of K members (PCMU 8 kHz and Opus 48 kHz rooms; 1 and 3 talkers,
//!   the rest silent) vs Janus AudioBridge plain-RTP participants in the same rooms; CPU per
//!   member-second and whether each talker is heard by the others and not by itself.
//! - `setup`: SIPp's `uac` (INVITE/200/ACK/BYE, no RTP) to callbridge's echo at increasing
//!   rates; setups per second and CPU µs per call. rtpengine and Janus take no calls; the row
//!   beside callbridge's is SIPp's own `uas` answering the same calls at the same rate: the
//!   machine's floor for SIP, as the reflector is for echo.
//! - `memory`: resident bytes per idle established call (G.711, Opus and G.711 with SDES-SRTP for callbridge;
//!   a two-sided relay call for rtpengine; a PCMU participant for Janus) and after the calls end.
//!
//! `setup` and `memory` live in `compare_signalling.rs`.

use std::net::{SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

#[path = "compare_signalling.rs"]
mod signalling;
use serde_json::json;

use crate::peers::{self, bytes, dict, list, Ng, Peer, Places, Server};
use crate::ports::PortRange;
use crate::room::{self, Member, RoomCodec, RoomReport, TONES};
use crate::stream::{self, Flow, Probe, StreamReport};
use crate::{cores, print_table, sip, Common, EchoOpts, ServerCpu, SHARED_SOCKET_BUFFER};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    Echo,
    Relay,
    Transcode,
    Conference,
    Setup,
    Memory,
}

#[derive(Args, Clone)]
pub struct CompareArgs {
    /// Workloads to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "echo,relay,transcode,conference,setup,memory"
    )]
    workloads: Vec<Workload>,
    /// Servers to measure (each workload runs on those that can do it). `reflector` is the
    /// tool's own UDP reflector at each echo row's packet rate, one socket per call as
    /// callbridge has, and `sipp-uas` SIPp's own uas answering the setup workload's calls:
    /// the machine's floors, not servers.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "callbridge,rtpengine,janus,reflector,sipp-uas"
    )]
    servers: Vec<Peer>,
    /// callbridge's binary (a release build).
    #[arg(long, default_value = "target/release/callbridge")]
    bin: PathBuf,
    /// Worker threads for callbridge and rtpengine (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Concurrent echo calls, one row each.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,4000")]
    echo_calls: Vec<usize>,
    /// Concurrent relayed calls (two streams each), one row each.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    relay_calls: Vec<usize>,
    /// Concurrent transcoded calls (PCMU ↔ Opus), one row each.
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    transcode_calls: Vec<usize>,
    /// Conference room sizes K.
    #[arg(long, value_delimiter = ',', default_value = "3,10,50")]
    room_sizes: Vec<usize>,
    /// Talkers per room (the others send silence).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    talkers: Vec<usize>,
    /// Members per PCMU conference run (rooms = members / K).
    #[arg(long, default_value_t = 150)]
    pcmu_members: usize,
    /// Members per Opus conference run.
    #[arg(long, default_value_t = 50)]
    opus_members: usize,
    /// SIPp call rates for the setup workload, calls per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000,4000,6000,8000,10000"
    )]
    setup_rates: Vec<u32>,
    /// Seconds per setup step.
    #[arg(long, default_value_t = 5)]
    setup_seconds: u32,
    /// Setup workload: run SIPp in the normal scheduling class, as before 2026-12-06, instead
    /// of SCHED_BATCH. On the server's own cores a normal-class SIPp, woken by each response,
    /// preempts the server in the middle of its turn (a remote peer never does), and the
    /// server's CPU per call then carries those context switches: ~10 % at 2,000 calls/s.
    #[arg(long)]
    sipp_preempts: bool,
    /// Idle calls for the memory workload, one row each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    idle_calls: Vec<usize>,
    /// Seconds of media per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Memory workload: seconds to wait before reading the resident size, and after the calls
    /// end (callbridge's health tick returns freed memory every few seconds).
    #[arg(long, default_value_t = 6.0)]
    settle_seconds: f64,
    /// Memory workload: seconds after the calls ended before "after" is read. SIP transactions
    /// outlive their calls by Timer L (32 s); callbridge's health tick then returns the memory.
    #[arg(long, default_value_t = 40.0)]
    after_seconds: f64,
    /// SIP setup rate towards callbridge, calls per second (media workloads).
    #[arg(long, default_value_t = 500.0)]
    setup_rate: f64,
    /// callbridge's SIP address (the tool starts it there).
    #[arg(long, default_value = "127.0.0.1:25060")]
    server_sip: SocketAddrV4,
    /// callbridge's API address.
    #[arg(long, default_value = "127.0.0.1:28080")]
    server_api: std::net::SocketAddr,
    /// Media ports the servers hand out (outside --port-range, the tool's own).
    #[arg(long, default_value = "10000-39999", value_parser = crate::parse_range)]
    server_ports: (u16, u16),
    /// Run callbridge with its default media settings instead of those of
    /// configs/examples/high-density.toml.
    #[arg(long)]
    untuned: bool,
    /// Relay through a mixed room of two (`conf=<room>`: decoded, mixed, re-encoded) instead
    /// of a two-party hairpin (`bridge=<room>`, a route with `hairpin = true`, as BridgeCalls
    /// joins two calls); also leaves the hairpin route out of callbridge's config, for a
    /// build from before route hairpins.
    #[arg(long)]
    relay_mixed: bool,
    /// Another program's load on the machine while every workload runs: one thread pinned to
    /// each core, busy for this percentage of every 20 ms and asleep for the rest (0: none).
    /// How each server copes when it does not have the cores to itself.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=90))]
    competing_load: u8,
    #[command(flatten)]
    common: Common,
}

impl CompareArgs {
    fn places(&self) -> Places {
        Places {
            sip: self.server_sip,
            api: self.server_api,
            media: self.server_ports,
            tuned: !self.untuned,
            bridge_route: !self.relay_mixed,
        }
    }
}

/// One measured row: a server at one size of one workload.
struct Row {
    size: String,
    peer: Peer,
    /// Server CPU per unit (µs): per packet, per member-second, per call-second, per call.
    cpu_us: Option<f64>,
    /// Loss (or undelivered) %, as the workload defines it.
    loss: Option<f64>,
    /// Stream jitter p99, ms.
    jitter_ms: Option<f64>,
    /// Server resident memory, MB, after the run.
    rss_mb: Option<f64>,
    /// Free text: mix check, failures, thread count.
    note: String,
}

pub fn run_compare(a: &CompareArgs) -> Result<ExitCode, String> {
    crate::print_context(&a.common);
    let (lo, hi) = a.common.port_range;
    if a.server_ports.0 <= hi && lo <= a.server_ports.1 {
        return Err(format!(
            "--server-ports {}-{} overlaps the tool's own --port-range {lo}-{hi}",
            a.server_ports.0, a.server_ports.1
        ));
    }
    let workers = a.workers.unwrap_or_else(cores);
    let root = std::env::temp_dir().join(format!("loadgen-compare-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    crate::raise_limits(20_000);
    println!(
        "servers: {} (one at a time, each started fresh per workload); {workers} worker thread(s) for callbridge and rtpengine; Janus runs its own threads per participant and room; callbridge media settings: {}",
        a.servers.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
        if a.untuned {
            "defaults"
        } else {
            "configs/examples/high-density.toml's (receive at the tick, io_uring sends and receives, 1 MiB socket buffers, pinned workers)"
        }
    );
    let load = CompetingLoad::start(a.competing_load, cores());
    if a.competing_load > 0 {
        println!(
            "competing load: one thread pinned to each of {} cores, busy {} % of every 20 ms",
            cores(),
            a.competing_load
        );
    }
    let mut failed = false;
    for &w in &a.workloads {
        let result = match w {
            Workload::Echo => echo(a, &root, workers),
            Workload::Relay => relay(a, &root, workers),
            Workload::Transcode => transcode(a, &root, workers),
            Workload::Conference => conference(a, &root, workers),
            Workload::Setup => signalling::setup(a, &root, workers),
            Workload::Memory => signalling::memory(a, &root, workers),
        };
        match result {
            Ok(ok) => failed |= !ok,
            Err(e) => {
                println!("\n{w:?}: failed: {e}");
                failed = true;
            }
        }
    }
    drop(load);
    let _ = std::fs::remove_dir_all(&root);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--competing-load`: busy threads, one pinned to each core, stopped and joined on drop.
struct CompetingLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CompetingLoad {
    const PERIOD: Duration = Duration::from_millis(20);

    fn start(percent: u8, cores: usize) -> CompetingLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = if percent == 0 { 0 } else { cores };
        let threads = (0..cores)
            .map(|core| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    crate::sys::pin_to_core(core);
                    let busy = Self::PERIOD * u32::from(percent) / 100;
                    while !stop.load(Ordering::Relaxed) {
                        let start = std::time::Instant::now();
                        while start.elapsed() < busy {
                            std::hint::spin_loop();
                        }
                        std::thread::sleep(Self::PERIOD - busy);
                    }
                })
            })
            .collect();
        CompetingLoad { stop, threads }
    }
}

impl Drop for CompetingLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn wants(a: &CompareArgs, peer: Peer) -> bool {
    a.servers.contains(&peer)
}

fn ports(a: &CompareArgs) -> PortRange {
    PortRange::new(
        a.common.local_ip,
        a.common.port_range.0,
        a.common.port_range.1,
    )
}

fn mb(kb: Option<u64>) -> Option<f64> {
    kb.map(|k| k as f64 / 1024.0)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// [`print_rows`] for a workload whose sizes are counts: rows by size, then server.
fn print_sized_rows(title: &str, unit: &str, mut rows: Vec<Row>) -> bool {
    rows.sort_by_key(|r| (r.size.parse::<usize>().unwrap_or(0), r.peer));
    print_rows(title, unit, &rows)
}

/// Prints a workload's table: its rows, and per size the ratio of callbridge's CPU per unit
/// to each peer's. Returns whether every row's note is free of failures.
fn print_rows(title: &str, unit: &str, rows: &[Row]) -> bool {
    println!("\n### {title}\n");
    let mut out = Vec::new();
    for r in rows {
        let cb = rows
            .iter()
            .find(|c| c.size == r.size && c.peer == Peer::Callbridge)
            .and_then(|c| c.cpu_us);
        let ratio = match (cb, r.cpu_us) {
            (Some(c), Some(p)) if r.peer != Peer::Callbridge && p > 0.0 => format!("{:.2}", c / p),
            _ => "–".into(),
        };
        out.push(vec![
            r.size.clone(),
            r.peer.name().into(),
            fmt(r.cpu_us, 2),
            fmt(r.loss, 3),
            fmt(r.jitter_ms, 3),
            fmt(r.rss_mb, 1),
            ratio,
            r.note.clone(),
        ]);
    }
    let cpu = format!("CPU µs {unit}");
    print_table(
        &[
            "size",
            "server",
            &cpu,
            "loss %",
            "jitter p99 ms",
            "resident MB",
            "callbridge ÷ this",
            "notes",
        ],
        &out,
    );
    // A peer's failure is reported in its row; only callbridge's fail the run.
    rows.iter()
        .all(|r| r.peer != Peer::Callbridge || !r.note.contains("FAIL"))
}

fn stream_row(size: String, peer: Peer, r: &StreamReport, server: &Server, note: String) -> Row {
    let packets = r.echoed.max(1);
    Row {
        size,
        peer,
        cpu_us: r.target_cpu_ns.map(|ns| ns as f64 / 1e3 / packets as f64),
        loss: Some(r.loss_pct()),
        jitter_ms: r.stream_jitter.percentile(99.0).map(|ns| ns as f64 / 1e6),
        rss_mb: mb(server.rss_kb()),
        note,
    }
}

fn cpu_probe(server: &Server) -> impl Fn() -> Probe + '_ {
    move || Probe {
        target_cpu_ns: server.cpu_ns(),
        target_packets: None,
    }
}

// ---------------------------------------------------------------------------------------------
// callbridge over SIP

fn echo_opts(a: &CompareArgs, n: usize, server: &Server) -> EchoOpts {
    EchoOpts {
        sip: a.server_sip.into(),
        calls: vec![n],
        pid: Some(server.pid),
        rate: a.setup_rate,
        user: "echo".into(),
        t1_ms: 500,
        api: Some(a.server_api),
        api_token: Some(peers::CALLBRIDGE_TOKEN.into()),
        pause: 0.0,
        server_cpu: ServerCpu::Proc,
        shared_media: true,
    }
}

/// The reflector as `loadgen all` runs it for the floor: one thread per core, one socket per
/// flow, fed from the generator's shared socket.
fn floor_opts() -> crate::ReflectorOpts {
    crate::ReflectorOpts {
        pps: 0.0,
        flows: None,
        find_max: false,
        step: 1.25,
        max_loss: 0.1,
        retries: 1,
        max_pps: 4_000_000.0,
        reflector_threads: None,
        reflector_sockets: crate::reflector::Sockets::PerFlow,
        shared_generator: true,
    }
}

/// SIP calls to callbridge, one per entry of `calls` (Request-URI user, payload type), each
/// offering `rtp_ports[i]`. Returns the UAC (for its media addresses and teardown).
fn sip_calls(
    a: &CompareArgs,
    ports: &mut PortRange,
    calls: &[(String, u8)],
    rtp_ports: &[u16],
) -> Result<(sip::Uac, sip::SetupResult), String> {
    sip_calls_srtp(a, ports, calls, rtp_ports, false)
}

/// [`sip_calls`], offering SDES-SRTP when `srtp` is set.
fn sip_calls_srtp(
    a: &CompareArgs,
    ports: &mut PortRange,
    calls: &[(String, u8)],
    rtp_ports: &[u16],
    srtp: bool,
) -> Result<(sip::Uac, sip::SetupResult), String> {
    let sock = ports
        .bind_one(4 << 20)
        .map_err(|e| format!("SIP socket: {e}"))?;
    let mut uac = sip::Uac::new(
        sock,
        sip::UacConfig {
            server: a.server_sip,
            user: "echo".into(),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            rate: a.setup_rate,
            users: calls.iter().map(|(u, _)| u.clone()).collect(),
            payload_types: calls.iter().map(|(_, pt)| *pt).collect(),
            srtp,
        },
        rtp_ports,
    );
    let setup = uac.setup();
    Ok((uac, setup))
}

/// BYEs every call and waits until callbridge has none left.
fn sip_teardown(a: &CompareArgs, uac: &mut sip::Uac) -> String {
    let t = uac.teardown();
    let gone = crate::wait_gone(a.server_api);
    format!("BYE {}/{}; {gone}", t.bye_ok, t.bye_sent)
}

/// Runs `media` while the UAC answers whatever the server sends on the dialogs.
fn with_uac<T>(uac: &mut sip::Uac, media: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        let serve = s.spawn(move || uac.serve(stop));
        let out = media();
        stop.store(true, Ordering::Relaxed);
        let _ = serve.join();
        out
    })
}

fn shared_flows(
    socket: &(UdpSocket, UdpSocket),
    dests: &[SocketAddrV4],
) -> Result<Vec<Flow>, String> {
    let mut rtcp = Some(socket.1.try_clone().map_err(|e| format!("dup: {e}"))?);
    dests
        .iter()
        .map(|&dest| {
            Ok(Flow {
                rtp: socket.0.try_clone().map_err(|e| format!("dup: {e}"))?,
                rtcp: rtcp.take(),
                dest: Some(dest),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// rtpengine over ng

fn sdp(port: u16, pts: &[u8]) -> String {
    let mut lines = vec![
        "v=0".to_string(),
        "o=- 1 1 IN IP4 127.0.0.1".into(),
        "s=-".into(),
        "c=IN IP4 127.0.0.1".into(),
        "t=0 0".into(),
        format!(
            "m=audio {port} RTP/AVP {}",
            pts.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")
        ),
    ];
    for pt in pts {
        lines.push(match pt {
            0 => "a=rtpmap:0 PCMU/8000".into(),
            p => format!("a=rtpmap:{p} opus/48000/2"),
        });
    }
    lines.push("a=ptime:20".into());
    lines.push("a=sendrecv".into());
    lines.join("\r\n") + "\r\n"
}

/// The audio port and payload types of an SDP rtpengine wrote.
fn sdp_media(sdp: &str) -> Option<(u16, Vec<u8>)> {
    let m = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?;
    let mut f = m.split_whitespace();
    let port = f.next()?.parse().ok()?;
    let pts = f.skip(1).filter_map(|p| p.parse().ok()).collect();
    Some((port, pts))
}

fn to_local(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
}

/// One two-sided rtpengine call: A offers `a_pts` from `a_port`, B answers `b_pts` from
/// `b_port`. Returns (where A sends, where B sends, B's SDP as rtpengine offered it).
fn ng_call(
    ng: &Ng,
    id: &str,
    a_port: u16,
    a_pts: &[u8],
    b_port: u16,
    b_pts: &[u8],
    extra: Vec<(&str, serde_bencode::value::Value)>,
) -> Result<(SocketAddrV4, SocketAddrV4, Vec<u8>), String> {
    let mut offer = vec![
        ("call-id", bytes(id)),
        ("from-tag", bytes("A")),
        ("sdp", bytes(&sdp(a_port, a_pts))),
        ("ICE", bytes("remove")),
        ("replace", list(&["origin", "session-connection"])),
    ];
    offer.extend(extra);
    let offered = ng.call("offer", offer)?;
    let offered_sdp = peers::text(&offered, "sdp").ok_or("offer: no sdp")?;
    let (to_rtpe_from_b, b_offered) = sdp_media(&offered_sdp).ok_or("offer: no m=audio")?;
    let answered = ng.call(
        "answer",
        vec![
            ("call-id", bytes(id)),
            ("from-tag", bytes("A")),
            ("to-tag", bytes("B")),
            ("sdp", bytes(&sdp(b_port, b_pts))),
            ("ICE", bytes("remove")),
            ("replace", list(&["origin", "session-connection"])),
        ],
    )?;
    let answered_sdp = peers::text(&answered, "sdp").ok_or("answer: no sdp")?;
    let (to_rtpe_from_a, _) = sdp_media(&answered_sdp).ok_or("answer: no m=audio")?;
    Ok((
        to_local(to_rtpe_from_a),
        to_local(to_rtpe_from_b),
        b_offered,
    ))
}

fn ng_delete_all(ng: &Ng, ids: &[String]) {
    for id in ids {
        let _ = ng.call("delete", vec![("call-id", bytes(id))]);
    }
}

// ---------------------------------------------------------------------------------------------
// echo and relay

fn echo(a: &CompareArgs, root: &Path, workers: usize) -> Result<bool, String> {
    let mut rows = Vec::new();
    if wants(a, Peer::Callbridge) {
        let server = peers::start_callbridge(&a.bin, root, workers, &a.places())?;
        let mut ports = ports(a);
        let cpu = crate::CpuSource::Pid(server.pid);
        for &n in &a.echo_calls {
            eprintln!("loadgen compare: echo, callbridge, {n} calls");
            let o = echo_opts(a, n, &server);
            let row = crate::echo_run(&o, a.server_sip, &cpu, n, a.seconds, &a.common, &mut ports)?;
            let note = if row.setup.failed > 0 {
                format!("FAIL: {} calls not set up", row.setup.failed)
            } else {
                String::new()
            };
            rows.push(stream_row(
                n.to_string(),
                Peer::Callbridge,
                &row.report,
                &server,
                note,
            ));
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    if wants(a, Peer::Rtpengine) {
        rows.extend(rtpengine_streams(a, root, workers, "echo", &a.echo_calls)?);
    }
    if wants(a, Peer::Reflector) {
        let mut ports = ports(a);
        for &n in &a.echo_calls {
            eprintln!("loadgen compare: echo, reflector, {n} flows");
            let report =
                crate::floor_run(&floor_opts(), true, n, a.seconds, &a.common, &mut ports)?;
            let packets = report.target_packets.unwrap_or(report.echoed).max(1);
            rows.push(Row {
                size: n.to_string(),
                peer: Peer::Reflector,
                cpu_us: report
                    .target_cpu_ns
                    .map(|ns| ns as f64 / 1e3 / packets as f64),
                loss: Some(report.loss_pct()),
                jitter_ms: report
                    .stream_jitter
                    .percentile(99.0)
                    .map(|ns| ns as f64 / 1e6),
                rss_mb: None,
                note: "the machine's floor: recvmmsg/sendmmsg, one socket per call".into(),
            });
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(print_sized_rows(
        "echo: G.711 20 ms, every packet echoed (callbridge echo service vs rtpengine media-echo)",
        "per echoed packet",
        rows,
    ))
}

/// rtpengine under the tagged stream at each size: `echo` calls (`media-echo=backwards`, one
/// stream each, A's packets back to A) or `relay` calls (A ↔ B, two streams each), every
/// endpoint on the generator's one shared socket.
fn rtpengine_streams(
    a: &CompareArgs,
    root: &Path,
    workers: usize,
    workload: &str,
    sizes: &[usize],
) -> Result<Vec<Row>, String> {
    let echo = workload == "echo";
    let (server, ng) = peers::start_rtpengine(root, workers, &a.places())?;
    let mut ports = ports(a);
    let shared = ports
        .bind_pair(SHARED_SOCKET_BUFFER)
        .map_err(|e| format!("shared socket: {e}"))?;
    let port = shared.0.local_addr().map_err(|e| e.to_string())?.port();
    let mut rows = Vec::new();
    for &n in sizes {
        eprintln!("loadgen compare: {workload}, rtpengine, {n} calls");
        let ids: Vec<String> = (0..n).map(|i| format!("{workload}-{n}-{i}")).collect();
        let mut dests = Vec::with_capacity(2 * n);
        for id in &ids {
            let flags = if echo {
                vec![("media-echo", bytes("backwards"))]
            } else {
                Vec::new()
            };
            let (to_a, to_b, _) = ng_call(&ng, id, port, &[0], port, &[0], flags)?;
            dests.push(to_a);
            if !echo {
                dests.push(to_b);
            }
        }
        let flows = shared_flows(&shared, &dests)?;
        let report = stream::run(
            &flows,
            &crate::stream_config(&a.common, 50.0 * flows.len() as f64, a.seconds),
            &cpu_probe(&server),
        )?;
        rows.push(stream_row(
            n.to_string(),
            Peer::Rtpengine,
            &report,
            &server,
            String::new(),
        ));
        ng_delete_all(&ng, &ids);
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(rows)
}

fn relay(a: &CompareArgs, root: &Path, workers: usize) -> Result<bool, String> {
    let mut rows = Vec::new();
    if wants(a, Peer::Callbridge) {
        let server = peers::start_callbridge(&a.bin, root, workers, &a.places())?;
        let mut ports = ports(a);
        let shared = ports
            .bind_pair(SHARED_SOCKET_BUFFER)
            .map_err(|e| format!("shared socket: {e}"))?;
        let port = shared.0.local_addr().map_err(|e| e.to_string())?.port();
        for &n in &a.relay_calls {
            let room = if a.relay_mixed { "conf" } else { "bridge" };
            eprintln!("loadgen compare: relay, callbridge, {n} calls ({room}=<room>: two each)");
            let calls: Vec<(String, u8)> = (0..2 * n)
                .map(|i| (format!("{room}=r{n}-{}", i / 2), 0))
                .collect();
            let (mut uac, setup) = sip_calls(a, &mut ports, &calls, &vec![port; 2 * n])?;
            let dests: Vec<SocketAddrV4> = (0..2 * n).filter_map(|i| uac.media(i)).collect();
            let flows = shared_flows(&shared, &dests)?;
            let report = with_uac(&mut uac, || {
                stream::run(
                    &flows,
                    &crate::stream_config(&a.common, 50.0 * flows.len() as f64, a.seconds),
                    &cpu_probe(&server),
                )
            });
            let gone = sip_teardown(a, &mut uac);
            let report = report?;
            let note = if setup.failed > 0 {
                format!("FAIL: {} calls not set up; {gone}", setup.failed)
            } else {
                String::new()
            };
            rows.push(stream_row(
                n.to_string(),
                Peer::Callbridge,
                &report,
                &server,
                note,
            ));
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    if wants(a, Peer::Rtpengine) {
        rows.extend(rtpengine_streams(
            a,
            root,
            workers,
            "relay",
            &a.relay_calls,
        )?);
    }
    let how = if a.relay_mixed {
        "the two SIP calls in a mixed room of two (--relay-mixed)"
    } else {
        "the two SIP calls joined by a two-party hairpin, as BridgeCalls joins them"
    };
    Ok(print_sized_rows(
        &format!("relay: A ↔ server ↔ B, PCMU 20 ms both ways (callbridge: {how}; rtpengine: plain userspace relay); size = calls, 2 streams each"),
        "per relayed packet",
        rows,
    ))
}

// ---------------------------------------------------------------------------------------------
// transcode and conference: the room generator

/// A member socket connected to where the server takes its media.
fn member(
    sock: UdpSocket,
    to: SocketAddrV4,
    codec: RoomCodec,
    pt: u8,
    tone: Option<u32>,
    expect: Vec<u32>,
    check: bool,
) -> Result<Member, String> {
    sock.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    Ok(Member {
        sock,
        codec,
        pt,
        tone,
        expect,
        check,
    })
}

fn room_row(size: String, peer: Peer, r: &RoomReport, server: &Server, extra: &str) -> Row {
    let failed: Vec<&String> = r
        .checks
        .iter()
        .filter(|(heard, own, _)| !*heard || *own)
        .map(|(_, _, d)| d)
        .collect();
    let mut note = if r.checks.is_empty() {
        "no mix check".to_string()
    } else if failed.is_empty() {
        format!("mix ok ({} members checked)", r.checks.len())
    } else {
        format!(
            "FAIL mix: {}",
            failed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    note.push_str(&format!("; {} threads", server.threads()));
    if !extra.is_empty() {
        note.push_str("; ");
        note.push_str(extra);
    }
    Row {
        size,
        peer,
        cpu_us: r.us_per_member_second(),
        loss: Some((100.0 - r.delivered_pct()).max(0.0)),
        jitter_ms: None,
        rss_mb: mb(server.rss_kb()),
        note,
    }
}

fn transcode(a: &CompareArgs, root: &Path, workers: usize) -> Result<bool, String> {
    let mut rows = Vec::new();
    let [tone_a, tone_b, _] = TONES;
    if wants(a, Peer::Callbridge) {
        let server = peers::start_callbridge(&a.bin, root, workers, &a.places())?;
        let mut ports = ports(a);
        for &n in &a.transcode_calls {
            eprintln!("loadgen compare: transcode, callbridge, {n} calls");
            let socks = (0..2 * n)
                .map(|_| ports.bind_one(1 << 20).map_err(|e| format!("socket: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let local: Vec<u16> = socks
                .iter()
                .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(0))
                .collect();
            let calls: Vec<(String, u8)> = (0..2 * n)
                .map(|i| {
                    (
                        format!("conf=t{n}-{}", i / 2),
                        if i % 2 == 0 { 0 } else { room::OPUS_PT },
                    )
                })
                .collect();
            let (mut uac, setup) = sip_calls(a, &mut ports, &calls, &local)?;
            let mut members = Vec::new();
            for (i, sock) in socks.into_iter().enumerate() {
                let Some(to) = uac.media(i) else { continue };
                let (codec, pt, tone, hear) = if i % 2 == 0 {
                    (RoomCodec::Pcmu, 0, tone_a, tone_b)
                } else {
                    (RoomCodec::Opus, room::OPUS_PT, tone_b, tone_a)
                };
                members.push(member(
                    sock,
                    to,
                    codec,
                    pt,
                    Some(tone),
                    vec![hear],
                    i < 2 || i + 2 >= 2 * n,
                )?);
            }
            let report = with_uac(&mut uac, || {
                room::run(&members, a.seconds, &|| server.cpu_ns())
            });
            drop(members);
            let gone = sip_teardown(a, &mut uac);
            let mut report = report?;
            report.members /= 2; // per call-second
            let mut row = room_row(n.to_string(), Peer::Callbridge, &report, &server, "");
            if setup.failed > 0 {
                row.note = format!(
                    "FAIL: {} calls not set up; {gone}; {}",
                    setup.failed, row.note
                );
            }
            rows.push(row);
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    if wants(a, Peer::Rtpengine) {
        let (server, ng) = peers::start_rtpengine(root, workers, &a.places())?;
        let mut ports = ports(a);
        for &n in &a.transcode_calls {
            eprintln!("loadgen compare: transcode, rtpengine, {n} calls");
            let ids: Vec<String> = (0..n).map(|i| format!("tc-{n}-{i}")).collect();
            let mut members = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let sa = ports
                    .bind_one(1 << 20)
                    .map_err(|e| format!("socket: {e}"))?;
                let sb = ports
                    .bind_one(1 << 20)
                    .map_err(|e| format!("socket: {e}"))?;
                let pa = sa.local_addr().map_err(|e| e.to_string())?.port();
                let pb = sb.local_addr().map_err(|e| e.to_string())?.port();
                // B is told PCMU and Opus; it answers Opus only, with rtpengine's payload type.
                let transcode = || vec![("codec", dict(vec![("transcode", list(&["opus"]))]))];
                let (mut to_a, mut to_b, offered) =
                    ng_call(&ng, id, pa, &[0], pb, &[room::OPUS_PT], transcode())?;
                let opus_pt = offered
                    .iter()
                    .copied()
                    .find(|&p| p != 0)
                    .unwrap_or(room::OPUS_PT);
                if opus_pt != room::OPUS_PT {
                    // rtpengine chose another number for Opus: answer again with it.
                    ng_delete_all(&ng, std::slice::from_ref(id));
                    (to_a, to_b, _) = ng_call(&ng, id, pa, &[0], pb, &[opus_pt], transcode())?;
                }
                let check = i == 0 || i + 1 == n;
                members.push(member(
                    sa,
                    to_a,
                    RoomCodec::Pcmu,
                    0,
                    Some(tone_a),
                    vec![tone_b],
                    check,
                )?);
                members.push(member(
                    sb,
                    to_b,
                    RoomCodec::Opus,
                    opus_pt,
                    Some(tone_b),
                    vec![tone_a],
                    check,
                )?);
            }
            let mut report = room::run(&members, a.seconds, &|| server.cpu_ns())?;
            report.members /= 2;
            rows.push(room_row(
                n.to_string(),
                Peer::Rtpengine,
                &report,
                &server,
                "",
            ));
            drop(members);
            ng_delete_all(&ng, &ids);
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    Ok(print_sized_rows(
        "transcode: A (PCMU) ↔ server ↔ B (Opus 48 kHz), tones both ways; size = calls; loss = packets not delivered of 2 × 50 per call-second",
        "per call-second",
        rows,
    ))
}

fn conference(a: &CompareArgs, root: &Path, workers: usize) -> Result<bool, String> {
    let mut ok = true;
    for (codec, members) in [
        (RoomCodec::Pcmu, a.pcmu_members),
        (RoomCodec::Opus, a.opus_members),
    ] {
        let mut rows = Vec::new();
        for peer in [Peer::Callbridge, Peer::Janus] {
            if !wants(a, peer) || members == 0 {
                continue;
            }
            for &k in &a.room_sizes {
                for &t in &a.talkers {
                    let (rooms, k, t) = room_shape(members, k, t);
                    let size = room_size_label(members, k, t);
                    eprintln!(
                        "loadgen compare: conference {}, {}, {size}",
                        codec.name(),
                        peer.name()
                    );
                    let row = match peer {
                        Peer::Janus => janus_rooms(a, root, codec, rooms, k, t, &size)?,
                        _ => callbridge_rooms(a, root, workers, codec, rooms, k, t, &size)?,
                    };
                    rows.push(row);
                }
            }
        }
        // By room size, then talkers, then server (the sizes' order as given).
        let order: Vec<String> = a
            .room_sizes
            .iter()
            .flat_map(|&k| a.talkers.iter().map(move |&t| (k, t)))
            .map(|(k, t)| room_size_label(members, k, t))
            .collect();
        rows.sort_by_key(|r| (order.iter().position(|s| *s == r.size), r.peer));
        ok &= print_rows(
            &format!(
                "conference, {} ({} kHz rooms): rooms × members, talkers send tones, the rest silence; loss = mix packets not delivered of 50 per member-second",
                codec.name(),
                if codec == RoomCodec::Pcmu { 8 } else { 48 }
            ),
            "per member-second",
            &rows,
        );
    }
    Ok(ok)
}

/// (rooms, K, talkers) for `members` in rooms of `k` with `t` talking: at least two in a
/// room, no more talkers than members or distinct tones, at least one room.
fn room_shape(members: usize, k: usize, t: usize) -> (usize, usize, usize) {
    let k = k.max(2);
    ((members / k).max(1), k, t.min(k).min(TONES.len()))
}

/// "rooms×K, t talking" for `members` in rooms of `k`.
fn room_size_label(members: usize, k: usize, t: usize) -> String {
    let (rooms, k, t) = room_shape(members, k, t);
    format!("{rooms}×{k}, {t} talking")
}

/// Who talks and what each member must hear: member j < t of a room sends TONES[j].
fn room_plan(t: usize, j: usize) -> (Option<u32>, Vec<u32>) {
    let tone = (j < t).then(|| TONES[j]);
    let expect = (0..t).filter(|&o| o != j).map(|o| TONES[o]).collect();
    (tone, expect)
}

/// Members checked: the first few of room 0 and the last member of the last room.
fn checked(room: usize, rooms: usize, j: usize, k: usize) -> bool {
    (room == 0 && j < 4) || (room + 1 == rooms && j + 1 == k)
}

#[allow(clippy::too_many_arguments)]
fn callbridge_rooms(
    a: &CompareArgs,
    root: &Path,
    workers: usize,
    codec: RoomCodec,
    rooms: usize,
    k: usize,
    t: usize,
    size: &str,
) -> Result<Row, String> {
    let server = peers::start_callbridge(&a.bin, root, workers, &a.places())?;
    let mut ports = ports(a);
    let n = rooms * k;
    let socks = (0..n)
        .map(|_| ports.bind_one(1 << 20).map_err(|e| format!("socket: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let local: Vec<u16> = socks
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect();
    let calls: Vec<(String, u8)> = (0..n)
        .map(|i| (format!("conf=c{}", i / k), codec.pt()))
        .collect();
    let (mut uac, setup) = sip_calls(a, &mut ports, &calls, &local)?;
    let mut members = Vec::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let Some(to) = uac.media(i) else { continue };
        let (room, j) = (i / k, i % k);
        let (tone, expect) = room_plan(t, j);
        let check = checked(room, rooms, j, k) && !expect.is_empty();
        members.push(member(sock, to, codec, codec.pt(), tone, expect, check)?);
    }
    let report = with_uac(&mut uac, || {
        room::run(&members, a.seconds, &|| server.cpu_ns())
    });
    drop(members);
    let gone = sip_teardown(a, &mut uac);
    let report = report?;
    let mut row = room_row(size.into(), Peer::Callbridge, &report, &server, "");
    if setup.failed > 0 {
        row.note = format!(
            "FAIL: {} calls not set up; {gone}; {}",
            setup.failed, row.note
        );
    }
    Ok(row)
}

#[allow(clippy::too_many_arguments)]
fn janus_rooms(
    a: &CompareArgs,
    root: &Path,
    codec: RoomCodec,
    rooms: usize,
    k: usize,
    t: usize,
    size: &str,
) -> Result<Row, String> {
    let (server, mut janus) = peers::start_janus(root, &a.places())?;
    let mut ports = ports(a);
    let rate = if codec == RoomCodec::Pcmu {
        8000
    } else {
        48000
    };
    let mut members = Vec::new();
    for r in 0..rooms {
        let room_id = 1000 + r as u64;
        let h = janus.attach()?;
        janus.message(
            h,
            json!({"request": "create", "room": room_id, "sampling_rate": rate, "record": false,
                   "allow_rtp_participants": true, "audiolevel_ext": false}),
        )?;
        for j in 0..k {
            let sock = ports
                .bind_one(1 << 20)
                .map_err(|e| format!("socket: {e}"))?;
            let port = sock.local_addr().map_err(|e| e.to_string())?.port();
            let h = janus.attach()?;
            janus.message(
                h,
                json!({"request": "join", "room": room_id, "display": format!("p{j}"),
                       "codec": if codec == RoomCodec::Pcmu { "pcmu" } else { "opus" },
                       "rtp": {"ip": "127.0.0.1", "port": port, "payload_type": codec.pt()}}),
            )?;
            let event = janus.event(h)?;
            let data = &event["plugindata"]["data"];
            let to_port = data["rtp"]["port"]
                .as_u64()
                .ok_or_else(|| format!("janus join: {data}"))? as u16;
            let (tone, expect) = room_plan(t, j);
            let check = checked(r, rooms, j, k) && !expect.is_empty();
            members.push(member(
                sock,
                to_local(to_port),
                codec,
                codec.pt(),
                tone,
                expect,
                check,
            )?);
        }
    }
    let joined_rss = server.rss_kb();
    let report = room::run(&members, a.seconds, &|| server.cpu_ns())?;
    janus.destroy();
    drop(members);
    let extra = format!("resident after join {} MB", fmt(mb(joined_rss), 1));
    Ok(room_row(size.into(), Peer::Janus, &report, &server, &extra))
}
