//! callbridge media load tool (issue 3, "Benchmark").
//!
//! ```text
//! cargo run --release --example loadgen -- reflector --pps 50000 --flows 2000 --seconds 5 [--find-max]
//! cargo run --release --example loadgen -- echo --sip 127.0.0.1:5060 --calls 100,500,2000 --seconds 10
//! cargo run --release --example loadgen -- all --sip 127.0.0.1:5060 --calls 100,500,1000,2000 --seconds 10
//! ```
//!
//! `reflector` measures the machine's limit with an in-process recvmmsg/sendmmsg reflector;
//! `echo` sets up real SIP calls to callbridge's echo service and streams G.711 20 ms RTP on
//! each; `all` does both, then runs the reflector once more at each echo row's packet rate
//! (one reflector socket per call, the generator shaped as in the echo run: the machine's
//! jitter floor at that load, next to callbridge's), and prints callbridge's echoed packet
//! rate as a ratio of the reflector's. Everything is on 127.0.0.1 by default; `echo
//! --local-ip <this machine's address> --api … --api-token … --server-cpu metrics` runs the
//! generator from a machine of its own against callbridge on another (callbridge's CPU then
//! comes from its /metrics, and the machine-wide columns describe the generator's machine).
//! Tables go to stdout
//! (markdown), progress to stderr. Exit status: 0, 1 if any call failed to set up, 2 on bad
//! arguments, 3 on errors.
//!
//! Metrics (per row):
//! - sent: RTP packets the kernel accepted from us. echoed: distinct packets of ours that came
//!   back within the drain time after the last send, identified by a tag in the first 20 bytes
//!   of the G.711 payload (flow id + packet index in µ-law codes that survive decode→encode),
//!   because callbridge's echo re-packetizes the audio (its own SSRC/sequence/timestamps,
//!   jitter buffer, concealment of lost frames). loss % = (sent − echoed) / sent.
//! - delay: echo arrival − send, per packet, ms. Send = CLOCK_REALTIME just before send();
//!   arrival = the kernel receive timestamp (SO_TIMESTAMPNS: when the echo was queued to our
//!   socket) with `--timestamps kernel` (default), so our own receiver's wake-up latency is
//!   not counted; `--timestamps user` takes the clock after recvmmsg instead. It is the whole
//!   echo path: our send syscall, loopback, the server's receive queueing, jitter buffer and
//!   playout tick, its send.
//! - jitter: per packet, |delay − median delay of the same call|, then p50/p99 over all packets
//!   of the run. Per call, because each call's echo is played out on the server's own 20 ms
//!   tick, whose phase against our sends differs from call to call (a constant per call, not
//!   jitter). Not the RFC 3550 smoothed estimator: a per-packet distribution shows the stalls
//!   that smoothing hides. Our own sender's lateness enters it with the opposite sign: a
//!   packet sent 10 ms late and played on time by the server's jitter buffer comes back with
//!   10 ms less delay.
//! - stream jitter: the same per-packet deviation from the call's median, with the delay taken
//!   from the packet's *scheduled* send time: the echoed stream's jitter against the 20 ms
//!   cadence, which is what a far-end RTP receiver (its playout keyed to RTP timestamps) sees.
//!   It counts the server's late ticks and jitter-buffer resizing, not our sender's lateness
//!   while the server's buffer absorbs it.
//! - CPU %: of one core (200 % = both cores of a 2-core machine), over the sending window
//!   (first scheduled send to last send): callbridge from /proc/<pid>/stat utime+stime (or
//!   its /metrics `process_cpu_seconds_total` with `--server-cpu metrics`),
//!   reflector threads from their pthread CPU clocks, loadgen from its process CPU clock;
//!   softirq = machine-wide irq+softirq time from /proc/stat (loopback delivery is accounted
//!   there, in nobody's process time); other = machine-wide user+system time of every other
//!   process (a busy neighbour invalidates the run).
//! - pps: our packets echoed (reflected) per second over the sending window; each is one
//!   packet received and one sent by the server. µs/pkt: the server's CPU time over the
//!   window divided by the packets it echoed (reflected) in it.
//! - send late: how far behind its absolute schedule the sender was (p99), with the sender
//!   waking every `--tick-us`; UDP drops: machine-wide RcvbufErrors + SndbufErrors delta.
//! - callbridge's counters (notes, with `--api` and `--api-token`): from its connection
//!   listing after the drain, before the BYEs, summed over this run's connections: RTP
//!   received, packets dropped as late (their frame already played), frames concealed, RTP
//!   loss. They tell loss on the way in from loss in the jitter buffer.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

#[path = "loadgen/compare.rs"]
mod compare;
#[path = "loadgen/hist.rs"]
mod hist;
#[path = "loadgen/peers.rs"]
mod peers;
#[path = "loadgen/ports.rs"]
mod ports;
#[path = "loadgen/reflector.rs"]
mod reflector;
#[path = "loadgen/room.rs"]
mod room;
#[path = "loadgen/sip.rs"]
mod sip;
#[path = "loadgen/stream.rs"]
mod stream;
#[path = "loadgen/sys.rs"]
mod sys;

use ports::PortRange;
use reflector::{Reflector, Sockets};
use stream::{Flow, Probe, Stamp, StreamConfig, StreamReport};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Media load tool for callbridge: UDP reflector baseline and SIP+RTP echo calls (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// The machine's limit: an in-process UDP reflector driven by a paced generator.
    Reflector(ReflectorArgs),
    /// N real SIP calls to callbridge's echo service, G.711 20 ms RTP on each.
    Echo(EchoArgs),
    /// Reflector max-find, then the echo series, and callbridge's rate as a ratio of the
    /// reflector's.
    All(AllArgs),
    /// callbridge side by side with rtpengine and Janus AudioBridge, started by the tool:
    /// echo, relay, transcode, conference, call setup and memory workloads.
    Compare(compare::CompareArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The tool's own IPv4 address: every socket binds to it and the SDP offers announce it.
    /// With 127.0.0.1 (or any 127.0.0.0/8 address) the tool only reaches loopback. Give this
    /// machine's address on a real network to run `echo` from a machine of its own against
    /// callbridge on another (callbridge's CPU then comes from its /metrics: `--api` and
    /// `--api-token`).
    #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
    local_ip: Ipv4Addr,
    /// Local ports for our sockets (SIP, RTP/RTCP pairs, reflector), inclusive.
    #[arg(long, default_value = "40000-49999", value_parser = parse_range)]
    port_range: (u16, u16),
    /// Keep receiving this long after the last send; later echoes count as lost.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
    /// Sender threads (flows are split between them).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Receiver threads, each with its own epoll over its share of the sockets.
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// Receive time source: kernel (SO_TIMESTAMPNS) or user (clock after recvmmsg).
    #[arg(long, value_enum, default_value_t = Stamp::Kernel)]
    timestamps: Stamp,
    /// Sender wake-up granularity, µs: sleep at least this long, then send all packets due
    /// (each send is still stamped when it happens). 0 = wake for every packet.
    #[arg(long, default_value_t = 100)]
    tick_us: u64,
    /// Receiver pause between epoll passes, µs (kernel timestamps only; lets one wake-up
    /// drain many sockets).
    #[arg(long, default_value_t = 1000)]
    rx_pause_us: u64,
}

#[derive(Args, Clone)]
struct ReflectorOpts {
    /// Packets per second offered (the start rate with --find-max).
    #[arg(long, default_value_t = 20_000.0)]
    pps: f64,
    /// Generator flows (one socket each). Default: 100 (reflector), the largest N (all).
    #[arg(long)]
    flows: Option<usize>,
    /// Step the rate up by --step until loss exceeds --max-loss; report the highest clean rate.
    #[arg(long)]
    find_max: bool,
    #[arg(long, default_value_t = 1.25)]
    step: f64,
    /// Loss (%) above which a step is not clean.
    #[arg(long, default_value_t = 0.1)]
    max_loss: f64,
    /// With --find-max, run a step that was not clean this many more times at the same rate
    /// before stopping (every run is shown).
    #[arg(long, default_value_t = 1)]
    retries: u32,
    /// Never offer more than this (bounds --find-max).
    #[arg(long, default_value_t = 4_000_000.0)]
    max_pps: f64,
    /// Reflector threads (default: one per core).
    #[arg(long)]
    reflector_threads: Option<usize>,
    /// reuseport: one SO_REUSEPORT socket per thread on one port; per-flow: one port per flow.
    #[arg(long, value_enum, default_value_t = Sockets::Reuseport)]
    reflector_sockets: Sockets,
    /// The generator sends every flow from one unconnected socket and tells the reflections
    /// apart by payload tag, as `echo --shared-media` does. Use it with `--reflector-sockets
    /// per-flow`: with one reuseport port, every datagram would hash to one reflector thread.
    #[arg(long)]
    shared_generator: bool,
}

#[derive(Args, Clone)]
struct ReflectorArgs {
    #[command(flatten)]
    opts: ReflectorOpts,
    /// Seconds per rate step.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct EchoOpts {
    /// callbridge's SIP UDP address (loopback only).
    #[arg(long, default_value = "127.0.0.1:5060")]
    sip: SocketAddr,
    /// Concurrent calls, one run per value: 100,500,2000.
    #[arg(long, value_delimiter = ',', required = true)]
    calls: Vec<usize>,
    /// callbridge's pid for CPU (default: the owner of the --sip socket, else `pgrep -x callbridge`).
    #[arg(long)]
    pid: Option<u32>,
    /// Call setup (and BYE) rate, calls per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Request-URI user routed to the echo service.
    #[arg(long, default_value = "echo")]
    user: String,
    /// SIP T1 (ms) for retransmissions.
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
    /// callbridge's HTTP API (e.g. 127.0.0.1:8080): after the BYEs, wait until /health shows
    /// no calls and no connections.
    #[arg(long)]
    api: Option<SocketAddr>,
    /// A token of callbridge's `[api] tokens`: with `--api`, read its connection listing after
    /// the drain and report what it counted on these calls (late arrivals, concealment).
    #[arg(long)]
    api_token: Option<String>,
    /// Pause between runs of the series, seconds.
    #[arg(long, default_value_t = 2.0)]
    pause: f64,
    /// Where callbridge's CPU time comes from: `proc` reads /proc/<pid>/stat on this machine
    /// (callbridge found by --pid, as the owner of the --sip port, or by name); `metrics` reads
    /// `process_cpu_seconds_total` from its /metrics (needs --api and --api-token; works
    /// from another machine); `auto` takes proc when callbridge runs here, else metrics.
    #[arg(long, value_enum, default_value_t = ServerCpu::Auto)]
    server_cpu: ServerCpu,
    /// Every call's media on one local RTP/RTCP socket pair (each SDP names the same port):
    /// the generator sends with sendmmsg and receives with recvmmsg in batches of 64 and tells
    /// calls apart by payload tag, so it takes less of the machine it shares with callbridge.
    /// callbridge still has one socket pair per call.
    #[arg(long)]
    shared_media: bool,
}

#[derive(Args, Clone)]
struct EchoArgs {
    #[command(flatten)]
    opts: EchoOpts,
    /// Seconds of media per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Clone)]
struct AllArgs {
    #[command(flatten)]
    echo: EchoOpts,
    #[command(flatten)]
    reflector: ReflectorOpts,
    /// Seconds of media per echo run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds per reflector rate step.
    #[arg(long, default_value_t = 5.0)]
    reflector_seconds: f64,
    /// Skip section 3, the reflector run at each echo row's packet rate.
    #[arg(long)]
    no_floor: bool,
    #[command(flatten)]
    common: Common,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected LOW-HIGH")?;
    let lo: u16 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
    let hi: u16 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
    if lo == 0 || hi <= lo {
        return Err("need 0 < LOW < HIGH".into());
    }
    Ok((lo, hi))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    println!("command: {}", command_line());
    let result = match cli.mode {
        Mode::Reflector(a) => run_reflector_mode(&a),
        Mode::Echo(a) => run_echo_mode(&a),
        Mode::All(a) => run_all_mode(&a),
        Mode::Compare(a) => compare::run_compare(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(3)
        }
    }
}

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@%+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn print_context(common: &Common) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {} cores, Linux {}; loadgen: {} sender / {} receiver thread(s), sender tick {} µs, receiver pause {} µs, {:?} receive timestamps, drain {} ms, local ports {}-{}",
        cores(),
        kernel.trim(),
        common.senders,
        common.receivers,
        common.tick_us,
        common.rx_pause_us,
        common.timestamps,
        common.drain_ms,
        common.port_range.0,
        common.port_range.1,
    );
}

fn raise_limits(sockets: usize) {
    let want = (sockets as u64 + 1024).max(8192);
    match sys::raise_nofile(want) {
        Ok(n) => eprintln!("loadgen: RLIMIT_NOFILE = {n}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            println!("warning: {e}");
        }
    }
}

fn stream_config(common: &Common, rate: f64, seconds: f64) -> StreamConfig {
    StreamConfig {
        rate,
        seconds,
        drain: Duration::from_millis(common.drain_ms),
        senders: common.senders,
        receivers: common.receivers,
        stamp: common.timestamps,
        tick_ns: common.tick_us * 1000,
        rx_pause_ns: common.rx_pause_us * 1000,
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Milliseconds with µs resolution.
fn ms(ns: Option<u64>) -> String {
    match ns {
        Some(v) => format!("{:.3}", v as f64 / 1e6),
        None => "–".into(),
    }
}

fn loss(r: &StreamReport) -> String {
    if r.sent == 0 {
        "–".into()
    } else {
        format!("{:.3}", r.loss_pct())
    }
}

/// CPU µs per packet (received and sent back), or "–".
fn per_packet_us(cpu_ns: Option<u64>, packets: u64) -> String {
    match cpu_ns {
        Some(ns) if packets > 0 => format!("{:.2}", ns as f64 / packets as f64 / 1000.0),
        _ => "–".into(),
    }
}

fn pct(v: f64) -> String {
    format!("{v:.1}")
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([headers[c].chars().count()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}", w = *w))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| format!("{}:", "-".repeat(w + 1)))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Reflector

struct MaxFind {
    /// Highest reflected pps among steps with loss ≤ max-loss.
    /// Highest reflected pps among fully clean steps (generator kept up, loss ≤ max-loss).
    best_pps: f64,
    best_offered: f64,
    /// Highest reflected pps with loss ≤ max-loss where the generator fell short of its rate.
    generator_limited_pps: f64,
    /// Reflector CPU ns per reflected packet at the best step.
    best_ns_per_packet: Option<f64>,
    /// Why the search stopped.
    limit: String,
}

fn run_reflector_mode(a: &ReflectorArgs) -> Result<ExitCode, String> {
    print_context(&a.common);
    let flows = a.opts.flows.unwrap_or(100);
    raise_limits(flows * 2);
    let mut ports = PortRange::new(
        a.common.local_ip,
        a.common.port_range.0,
        a.common.port_range.1,
    );
    let found = reflector_series(&a.opts, flows, a.seconds, &a.common, &mut ports)?;
    if a.opts.find_max {
        print_max(&found);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_max(found: &MaxFind) {
    println!(
        "\nreflector max: {} pps reflected cleanly (offered {} pps, generator on schedule, loss within limit); search stopped: {}",
        thousands(found.best_pps as u64),
        thousands(found.best_offered as u64),
        found.limit
    );
    if found.generator_limited_pps > found.best_pps {
        println!(
            "(a step where the generator fell behind its schedule still reflected {} pps within the loss limit: the machine's packet rate with this one-thread generator tops out there)",
            thousands(found.generator_limited_pps as u64)
        );
    }
}

/// Starts the reflector and the generator's flows aimed at it: one connected socket per flow,
/// or with `--shared-generator` one socket for all of them.
fn start_reflector(
    o: &ReflectorOpts,
    flows: usize,
    ports: &mut PortRange,
) -> Result<(Reflector, Vec<Flow>), String> {
    if o.shared_generator && o.reflector_sockets == Sockets::Reuseport {
        return Err(
            "--shared-generator needs --reflector-sockets per-flow: from one socket every datagram would hash to the same reuseport socket and reflector thread".into(),
        );
    }
    let threads = o.reflector_threads.unwrap_or_else(cores);
    let reflector = Reflector::start(o.reflector_sockets, threads, flows, ports)
        .map_err(|e| format!("reflector: {e}"))?;
    let shared = if o.shared_generator {
        let s = ports
            .bind_one(SHARED_SOCKET_BUFFER)
            .map_err(|e| format!("generator socket: {e}"))?;
        Some(s)
    } else {
        None
    };
    let mut gen_flows = Vec::with_capacity(flows);
    for f in 0..flows.max(1) {
        let target = reflector.targets[f % reflector.targets.len()];
        let flow = match &shared {
            Some(s) => Flow {
                rtp: s.try_clone().map_err(|e| format!("dup: {e}"))?,
                rtcp: None,
                dest: Some(ports::require_reachable(
                    target,
                    *ports.ip(),
                    "reflector target",
                )?),
            },
            None => {
                let s = ports
                    .bind_one(0)
                    .map_err(|e| format!("generator socket {f}: {e}"))?;
                s.connect(target).map_err(|e| format!("connect: {e}"))?;
                Flow {
                    rtp: s,
                    rtcp: None,
                    dest: None,
                }
            }
        };
        gen_flows.push(flow);
    }
    Ok((reflector, gen_flows))
}

fn reflector_probe(reflector: &Reflector) -> Probe {
    let (packets, cpu) = reflector.sample();
    Probe {
        target_cpu_ns: Some(cpu),
        target_packets: Some(packets),
    }
}

fn reflector_series(
    o: &ReflectorOpts,
    flows: usize,
    seconds: f64,
    common: &Common,
    ports: &mut PortRange,
) -> Result<MaxFind, String> {
    let (reflector, gen_flows) = start_reflector(o, flows, ports)?;
    println!(
        "reflector: {} thread(s), {:?} sockets (SO_RCVBUF {} KiB), recvmmsg/sendmmsg batch 64; generator: {} flows of 172-byte RTP{}, {} s per step",
        reflector.thread_count(),
        o.reflector_sockets,
        reflector.rcvbuf / 1024,
        gen_flows.len(),
        if o.shared_generator {
            " from one shared socket"
        } else {
            ""
        },
        seconds
    );
    let probe = || reflector_probe(&reflector);
    let mut rows = Vec::new();
    let mut found = MaxFind {
        best_pps: 0.0,
        best_offered: 0.0,
        generator_limited_pps: 0.0,
        best_ns_per_packet: None,
        limit: "single step (no --find-max)".into(),
    };
    let mut rate = o.pps.min(o.max_pps);
    let mut failed_in_row = 0;
    let mut busy = Vec::new();
    for step in 1..=60 {
        eprintln!("loadgen: reflector step {step}: {rate:.0} pps offered over {flows} flows");
        let r = stream::run(&gen_flows, &stream_config(common, rate, seconds), &probe)?;
        let reflected_pps = r.target_packets.unwrap_or(0) as f64 / r.window_s.max(1e-9);
        let loss_ok = r.loss_pct() <= o.max_loss && r.sent > 0;
        let kept_up = r.sent_pps() >= 0.98 * rate;
        let verdict = match (loss_ok, kept_up) {
            (true, true) => "clean",
            (true, false) => "generator-limited",
            (false, _) => "loss",
        };
        if loss_ok && !kept_up {
            found.generator_limited_pps = found.generator_limited_pps.max(reflected_pps);
        }
        if loss_ok && kept_up && reflected_pps > found.best_pps {
            found.best_pps = reflected_pps;
            found.best_offered = rate;
            found.best_ns_per_packet = r
                .target_cpu_ns
                .zip(r.target_packets.filter(|p| *p > 0))
                .map(|(ns, p)| ns as f64 / p as f64);
        }
        if let Some(other) = r.other_cpu_pct(true).filter(|p| *p > BUSY_NEIGHBOUR_PCT) {
            busy.push((format!("step {step}"), other));
        }
        let generator_cpu = r
            .process_cpu_ns
            .saturating_sub(r.target_cpu_ns.unwrap_or(0));
        rows.push(vec![
            step.to_string(),
            thousands(rate as u64),
            thousands(r.sent),
            thousands(r.echoed),
            loss(&r),
            thousands(r.sent_pps() as u64),
            thousands(reflected_pps as u64),
            ms(r.delay.percentile(50.0)),
            ms(r.delay.percentile(99.0)),
            ms(r.jitter.percentile(50.0)),
            ms(r.jitter.percentile(99.0)),
            pct(r.pct_of_core(r.target_cpu_ns.unwrap_or(0))),
            per_packet_us(r.target_cpu_ns, r.target_packets.unwrap_or(0)),
            pct(r.pct_of_core(r.sender_cpu_ns)),
            pct(r.pct_of_core(generator_cpu)),
            r.softirq_cpu_pct().map(pct).unwrap_or_else(|| "–".into()),
            r.other_cpu_pct(true).map(pct).unwrap_or_else(|| "–".into()),
            r.steal_cpu_pct().map(pct).unwrap_or_else(|| "–".into()),
            r.udp_drops.map(thousands).unwrap_or_else(|| "–".into()),
            verdict.into(),
        ]);
        if !o.find_max {
            break;
        }
        if !(loss_ok && kept_up) {
            failed_in_row += 1;
            if failed_in_row <= o.retries {
                // Same rate once more: one scheduling hiccup should not end the search.
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            found.limit = if !loss_ok {
                format!(
                    "loss {:.3} % > {} % at {} pps offered ({} run(s) in a row)",
                    r.loss_pct(),
                    o.max_loss,
                    thousands(rate as u64),
                    failed_in_row
                )
            } else {
                format!(
                    "the generator could not keep up ({} of {} pps sent, its sender thread at {} % of a core)",
                    thousands(r.sent_pps() as u64),
                    thousands(rate as u64),
                    pct(r.pct_of_core(r.sender_cpu_ns))
                )
            };
            break;
        }
        failed_in_row = 0;
        let next = rate * o.step;
        if next > o.max_pps {
            found.limit = format!("--max-pps {} reached", o.max_pps);
            break;
        }
        rate = next;
        std::thread::sleep(Duration::from_millis(500));
    }
    reflector.stop();
    println!();
    print_table(
        &[
            "step",
            "offered pps",
            "sent",
            "received",
            "loss %",
            "sent pps",
            "reflected pps",
            "delay p50 ms",
            "delay p99 ms",
            "jitter p50 ms",
            "jitter p99 ms",
            "reflector CPU %",
            "reflector µs/pkt",
            "gen sender CPU %",
            "generator CPU %",
            "softirq CPU %",
            "other CPU %",
            "steal %",
            "UDP drops",
            "result",
        ],
        &rows,
    );
    warn_interference(&busy);
    Ok(found)
}

/// Socket buffers of a generator socket that carries every flow.
const SHARED_SOCKET_BUFFER: usize = 32 << 20;

/// Other processes above this share of a core during a run make its figures suspect.
const BUSY_NEIGHBOUR_PCT: f64 = 10.0;

fn warn_interference(busy: &[(String, f64)]) {
    if busy.is_empty() {
        return;
    }
    let list: Vec<String> = busy
        .iter()
        .map(|(what, p)| format!("{what} ({p:.0} %)"))
        .collect();
    println!(
        "\nwarning: other processes used more than {BUSY_NEIGHBOUR_PCT:.0} % of a core during {}: those rows measure a shared machine, not the system under test alone",
        list.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// Echo

struct EchoRow {
    calls: usize,
    setup: sip::SetupResult,
    teardown: Option<sip::TeardownResult>,
    gone: String,
    report: StreamReport,
    stats: sip::SipStats,
    /// callbridge's own counters for these calls (with `--api` and `--api-token`).
    server: Option<Result<ServerView, String>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum ServerCpu {
    Auto,
    Proc,
    Metrics,
}

/// Where a run reads callbridge's CPU time.
#[derive(Clone, Debug, PartialEq)]
enum CpuSource {
    Pid(u32),
    Metrics { api: SocketAddr, token: String },
    Unknown,
}

impl CpuSource {
    /// callbridge's CPU time so far, ns (None when it cannot be read).
    fn read(&self) -> Option<u64> {
        match self {
            CpuSource::Pid(pid) => sys::proc_cpu_ns(*pid),
            CpuSource::Metrics { api, token } => match metrics_cpu_ns(*api, token) {
                Ok(ns) => Some(ns),
                Err(why) => {
                    eprintln!("loadgen: callbridge's CPU: {why}");
                    None
                }
            },
            CpuSource::Unknown => None,
        }
    }
}

fn cpu_source(o: &EchoOpts, sip: SocketAddrV4) -> Result<CpuSource, String> {
    let metrics = || match (o.api, &o.api_token) {
        (Some(api), Some(token)) => Ok(CpuSource::Metrics {
            api,
            token: token.clone(),
        }),
        _ => Err("--server-cpu metrics needs --api and --api-token".to_string()),
    };
    match o.server_cpu {
        ServerCpu::Metrics => metrics(),
        ServerCpu::Proc => Ok(find_pid(o, sip).map_or(CpuSource::Unknown, CpuSource::Pid)),
        ServerCpu::Auto => Ok(find_pid(o, sip)
            .map(CpuSource::Pid)
            .or_else(|| metrics().ok())
            .unwrap_or(CpuSource::Unknown)),
    }
}

/// callbridge's pid on this machine: --pid, else (when the SIP address is one of this
/// machine's) the owner of the SIP port or the one process named callbridge. A callbridge on
/// another machine has no pid here, whatever local process holds the same port number.
fn find_pid(o: &EchoOpts, sip: SocketAddrV4) -> Option<u32> {
    if let Some(pid) = o.pid {
        return Some(pid);
    }
    if !sys::is_local_address(*sip.ip()) {
        return None;
    }
    if let Some(pid) = sys::udp_port_owner(sip) {
        return Some(pid);
    }
    match sys::pids_named("callbridge").as_slice() {
        [pid] => Some(*pid),
        [] => None,
        many => {
            eprintln!("loadgen: several callbridge processes ({many:?}); pass --pid");
            None
        }
    }
}

fn run_echo_mode(a: &EchoArgs) -> Result<ExitCode, String> {
    print_context(&a.common);
    let rows = echo_series(&a.opts, a.seconds, &a.common)?;
    print_echo_table(&rows, None);
    print_echo_notes(&rows);
    Ok(exit_for(&rows))
}

fn exit_for(rows: &[EchoRow]) -> ExitCode {
    if rows.iter().any(|r| r.setup.failed > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn echo_series(o: &EchoOpts, seconds: f64, common: &Common) -> Result<Vec<EchoRow>, String> {
    let local = common.local_ip;
    if !ports::is_unicast(local) {
        return Err(format!(
            "--local-ip {local}: give one address of this machine (the SDP offers announce it)"
        ));
    }
    let sip = ports::require_reachable(o.sip, local, "--sip")?;
    if let Some(api) = o.api {
        ports::require_reachable(api, local, "--api")?;
    }
    if o.calls.is_empty() || o.rate <= 0.0 || seconds <= 0.0 || seconds > 3600.0 {
        return Err("need --calls, --rate > 0 and 0 < --seconds <= 3600".into());
    }
    let max_calls = o.calls.iter().copied().max().unwrap_or(0);
    let mut ports = PortRange::new(common.local_ip, common.port_range.0, common.port_range.1);
    if max_calls * 2 + 1 > ports.span() {
        return Err(format!(
            "--calls {max_calls} needs {} local ports; --port-range has {}",
            max_calls * 2 + 1,
            ports.span()
        ));
    }
    raise_limits(max_calls * 2);
    let cpu = cpu_source(o, sip)?;
    match &cpu {
        CpuSource::Pid(p) => println!("callbridge: pid {p}, SIP {sip}, user {}", o.user),
        CpuSource::Metrics { api, .. } => println!(
            "callbridge: SIP {sip}, user {}, CPU from http://{api}/metrics",
            o.user
        ),
        CpuSource::Unknown => println!("callbridge: pid not found (CPU column empty), SIP {sip}"),
    }
    if !local.is_loopback() {
        println!(
            "loadgen on {local}: the loadgen, softirq and other CPU columns are this machine's"
        );
    }
    let mut rows = Vec::new();
    for (run, &n) in o.calls.iter().enumerate() {
        if run > 0 {
            std::thread::sleep(Duration::from_secs_f64(o.pause));
        }
        eprintln!("loadgen: {n} calls: setting up at {} calls/s", o.rate);
        rows.push(echo_run(o, sip, &cpu, n, seconds, common, &mut ports)?);
    }
    Ok(rows)
}

fn echo_run(
    o: &EchoOpts,
    sip_addr: SocketAddrV4,
    cpu: &CpuSource,
    n: usize,
    seconds: f64,
    common: &Common,
    ports: &mut PortRange,
) -> Result<EchoRow, String> {
    let sip_sock = ports
        .bind_one(4 << 20)
        .map_err(|e| format!("SIP socket: {e}"))?;
    let mut pairs = Vec::with_capacity(n);
    let count = if o.shared_media { 1 } else { n };
    for i in 0..count {
        let pair = ports
            .bind_pair(if o.shared_media {
                SHARED_SOCKET_BUFFER
            } else {
                0
            })
            .map_err(|e| format!("RTP socket pair {i}: {e}"))?;
        pairs.push(pair);
    }
    let mut rtp_ports: Vec<u16> = pairs
        .iter()
        .map(|(rtp, _)| rtp.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect();
    if o.shared_media {
        rtp_ports = vec![rtp_ports[0]; n];
    }
    let mut uac = sip::Uac::new(
        sip_sock,
        sip::UacConfig {
            server: sip_addr,
            user: o.user.clone(),
            t1: Duration::from_millis(o.t1_ms),
            t2: Duration::from_secs(4),
            rate: o.rate,
            users: Vec::new(),
            payload_types: Vec::new(),
            srtp: false,
        },
        &rtp_ports,
    );
    let setup = uac.setup();
    eprintln!(
        "loadgen: {n} calls: {} set up, {} failed in {:.1} s",
        setup.established, setup.failed, setup.seconds
    );
    let mut flows = Vec::with_capacity(setup.established);
    if o.shared_media {
        let (rtp, rtcp) = pairs.pop().expect("one shared pair");
        let mut rtcp = Some(rtcp);
        for i in 0..n {
            if let Some(media) = uac.media(i) {
                let dup = |s: &std::net::UdpSocket| s.try_clone().map_err(|e| format!("dup: {e}"));
                flows.push(Flow {
                    rtp: dup(&rtp)?,
                    // Only the first flow reads the shared RTCP socket.
                    rtcp: rtcp.take(),
                    dest: Some(media),
                });
            }
        }
    } else {
        for (i, (rtp, rtcp)) in pairs.into_iter().enumerate() {
            if let Some(media) = uac.media(i) {
                rtp.connect(media)
                    .map_err(|e| format!("connect {media}: {e}"))?;
                flows.push(Flow {
                    rtp,
                    rtcp: Some(rtcp),
                    dest: None,
                });
            }
        }
    }
    let probe = || Probe {
        target_cpu_ns: cpu.read(),
        target_packets: None,
    };
    eprintln!(
        "loadgen: {n} calls: streaming {} flows x 50 pps for {seconds} s",
        flows.len()
    );
    let stop = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        let uac = &mut uac;
        let stop = &stop;
        let server = s.spawn(move || uac.serve(stop));
        let report = stream::run(
            &flows,
            &stream_config(common, 50.0 * flows.len() as f64, seconds),
            &probe,
        );
        stop.store(true, Ordering::Relaxed);
        let _ = server.join();
        report
    });
    drop(flows);
    let server = o.api.zip(o.api_token.as_deref()).map(|(api, token)| {
        http_get(api, "/mediacontrol/connections", Some(token))
            .and_then(|listing| server_view(&listing, common.local_ip, &rtp_ports))
    });
    let teardown = (setup.established > 0).then(|| uac.teardown());
    let gone = match o.api {
        Some(api) => wait_gone(api),
        None => "not checked".into(),
    };
    if let Some(t) = &teardown {
        eprintln!(
            "loadgen: {n} calls: BYE {}/{} answered 200 in {:.1} s; server state: {gone}",
            t.bye_ok, t.bye_sent, t.seconds
        );
    }
    // Calls are torn down above even when the streaming run itself failed.
    let report = report?;
    Ok(EchoRow {
        calls: n,
        setup,
        teardown,
        gone,
        report,
        stats: uac.stats.clone(),
        server,
    })
}

/// Polls GET /health until it reports no calls and no connections (at most 30 s).
fn wait_gone(api: SocketAddr) -> String {
    let start = Instant::now();
    let mut last = String::from("no answer");
    while start.elapsed() < Duration::from_secs(30) {
        match health(api) {
            Some((0, 0)) => return format!("0 calls after {:.1} s", start.elapsed().as_secs_f64()),
            Some((calls, conns)) => last = format!("{calls} calls, {conns} connections left"),
            None => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    last
}

fn health(api: SocketAddr) -> Option<(u64, u64)> {
    let v = http_get(api, "/health", None).ok()?;
    Some((v.get("Calls")?.as_u64()?, v.get("Connections")?.as_u64()?))
}

/// GET of a JSON document from callbridge's API.
fn http_get(api: SocketAddr, path: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    let body = http_get_text(api, path, token)?;
    serde_json::from_str(body.trim()).map_err(|e| format!("GET {path}: {e}"))
}

/// GET of a page from callbridge's API (Connection: close, Content-Length body): its body.
fn http_get_text(api: SocketAddr, path: &str, token: Option<&str>) -> Result<String, String> {
    use std::io::{Read, Write};
    let io = |e: std::io::Error| format!("GET {path}: {e}");
    let mut s = std::net::TcpStream::connect_timeout(&api, Duration::from_secs(2)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut text = String::new();
    s.take(64 << 20).read_to_string(&mut text).map_err(io)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no complete HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path}: {status}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("GET {path}: chunked responses are not read"));
    }
    Ok(body.to_string())
}

/// callbridge's CPU time so far, ns, from `process_cpu_seconds_total` on its /metrics.
fn metrics_cpu_ns(api: SocketAddr, token: &str) -> Result<u64, String> {
    let page = http_get_text(api, "/metrics", Some(token))?;
    let seconds: f64 = page
        .lines()
        .find_map(|l| {
            l.strip_prefix("process_cpu_seconds_total ")?
                .trim()
                .parse()
                .ok()
        })
        .ok_or("/metrics has no process_cpu_seconds_total")?;
    Ok((seconds * 1e9) as u64)
}

/// What callbridge counted on this run's connections: its connection listing after the
/// drain, before the BYEs.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
struct ServerView {
    connections: u64,
    received: u64,
    /// Packets that arrived after their frame had been played (concealed) and were dropped.
    late: u64,
    concealed: u64,
    /// RFC 3550 cumulative loss (sequence gaps on the wire).
    lost: i64,
}

/// Sums the counters of the listed connections that send to one of `ports` at `ip` (ours).
fn server_view(
    listing: &serde_json::Value,
    ip: Ipv4Addr,
    ports: &[u16],
) -> Result<ServerView, String> {
    let ip = ip.to_string();
    let connections = listing
        .get("Connections")
        .and_then(|c| c.as_array())
        .ok_or("the listing has no Connections array")?;
    let ports: std::collections::HashSet<u64> = ports.iter().map(|&p| u64::from(p)).collect();
    let mut view = ServerView::default();
    for c in connections {
        let ours = c.get("MediaTxIP").and_then(|v| v.as_str()) == Some(ip.as_str())
            && c.get("MediaTxPort")
                .and_then(|v| v.as_u64())
                .is_some_and(|p| ports.contains(&p));
        if !ours {
            continue;
        }
        let stat = |key: &str| c.get("Stats").and_then(|s| s.get(key));
        let count = |key: &str| {
            stat(key)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| format!("a connection without Stats.{key}"))
        };
        view.connections += 1;
        view.received += count("RtpPacketsReceived")?;
        view.late += count("LatePackets")?;
        view.concealed += count("ConcealedFrames")?;
        view.lost += stat("PacketsLost")
            .and_then(|v| v.as_i64())
            .ok_or("a connection without Stats.PacketsLost")?;
    }
    Ok(view)
}

fn print_echo_table(rows: &[EchoRow], reflector_pps: Option<f64>) {
    let mut headers = vec![
        "calls",
        "set up",
        "failed",
        "sent",
        "echoed",
        "loss %",
        "delay p50 ms",
        "delay p99 ms",
        "delay max ms",
        "jitter p50 ms",
        "jitter p99 ms",
        "stream jitter p50 ms",
        "stream jitter p99 ms",
        "callbridge CPU %",
        "callbridge µs/pkt",
        "callbridge pps",
    ];
    if reflector_pps.is_some() {
        headers.push("× reflector");
    }
    headers.extend([
        "loadgen CPU %",
        "softirq CPU %",
        "other CPU %",
        "send late p99 ms",
        "UDP drops",
        "BYE 200",
    ]);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let r = &row.report;
            let jitter = &r.jitter;
            let mut cells = vec![
                thousands(row.calls as u64),
                thousands(row.setup.established as u64),
                thousands(row.setup.failed as u64),
                thousands(r.sent),
                thousands(r.echoed),
                loss(r),
                ms(r.delay.percentile(50.0)),
                ms(r.delay.percentile(99.0)),
                ms((r.delay.count() > 0).then(|| r.delay.max())),
                ms(jitter.percentile(50.0)),
                ms(jitter.percentile(99.0)),
                ms(r.stream_jitter.percentile(50.0)),
                ms(r.stream_jitter.percentile(99.0)),
                r.target_cpu_ns
                    .map(|ns| pct(r.pct_of_core(ns)))
                    .unwrap_or_else(|| "–".into()),
                per_packet_us(r.target_cpu_ns, r.echoed),
                thousands(r.echoed_pps() as u64),
            ];
            if let Some(refl) = reflector_pps {
                cells.push(if refl > 0.0 {
                    format!("{:.2}", r.echoed_pps() / refl)
                } else {
                    "–".into()
                });
            }
            cells.extend([
                pct(r.pct_of_core(r.process_cpu_ns)),
                r.softirq_cpu_pct().map(pct).unwrap_or_else(|| "–".into()),
                r.other_cpu_pct(false)
                    .map(pct)
                    .unwrap_or_else(|| "–".into()),
                ms(r.lateness.percentile(99.0)),
                r.udp_drops.map(thousands).unwrap_or_else(|| "–".into()),
                match &row.teardown {
                    Some(t) => format!("{}/{}", t.bye_ok, t.bye_sent),
                    None => "–".into(),
                },
            ]);
            cells
        })
        .collect();
    println!();
    print_table(&headers, &table);
}

/// The reflector carrying what an echo row carried: one reflector socket per call (the shape
/// of callbridge's sockets), the generator shaped as in the echo run (one shared socket with
/// `--shared-media`), 50 pps per flow for as long as the echo run streamed.
fn floor_run(
    reflector: &ReflectorOpts,
    shared_generator: bool,
    flows: usize,
    seconds: f64,
    common: &Common,
    ports: &mut PortRange,
) -> Result<StreamReport, String> {
    let mut o = reflector.clone();
    o.reflector_sockets = Sockets::PerFlow;
    o.shared_generator = shared_generator;
    let (reflector, gen_flows) = start_reflector(&o, flows, ports)?;
    let report = stream::run(
        &gen_flows,
        &stream_config(common, 50.0 * flows as f64, seconds),
        &|| reflector_probe(&reflector),
    );
    reflector.stop();
    report
}

/// Section 3 of `all`: what a server that does nothing but send each datagram straight back
/// shows at the same packet rate on the same machine, next to what callbridge showed.
fn print_floor_table(floor: &[(&EchoRow, StreamReport)]) {
    let headers = [
        "calls",
        "pps offered",
        "reflector loss %",
        "reflector delay p99 ms",
        "reflector jitter p50 ms",
        "reflector jitter p99 ms",
        "reflector CPU %",
        "loadgen CPU %",
        "softirq CPU %",
        "callbridge jitter p99 ms",
        "callbridge stream jitter p99 ms",
    ];
    let table: Vec<Vec<String>> = floor
        .iter()
        .map(|(row, r)| {
            let generator_cpu = r
                .process_cpu_ns
                .saturating_sub(r.target_cpu_ns.unwrap_or(0));
            vec![
                thousands(row.calls as u64),
                thousands(r.target_pps as u64),
                loss(r),
                ms(r.delay.percentile(99.0)),
                ms(r.jitter.percentile(50.0)),
                ms(r.jitter.percentile(99.0)),
                pct(r.pct_of_core(r.target_cpu_ns.unwrap_or(0))),
                pct(r.pct_of_core(generator_cpu)),
                r.softirq_cpu_pct().map(pct).unwrap_or_else(|| "–".into()),
                ms(row.report.jitter.percentile(99.0)),
                ms(row.report.stream_jitter.percentile(99.0)),
            ]
        })
        .collect();
    print_table(&headers, &table);
    let busy: Vec<(String, f64)> = floor
        .iter()
        .filter_map(|(row, r)| {
            let other = r.other_cpu_pct(true)?;
            (other > BUSY_NEIGHBOUR_PCT).then(|| (format!("the {} calls floor", row.calls), other))
        })
        .collect();
    warn_interference(&busy);
    println!(
        "\nThe reflector sends each datagram back as soon as it is read: no jitter buffer, no 20 ms tick. Its jitter is how late this machine runs a woken thread at that packet rate, with the generator on it too: a floor under any server's added jitter here."
    );
}

fn print_echo_notes(rows: &[EchoRow]) {
    let busy: Vec<(String, f64)> = rows
        .iter()
        .filter_map(|row| {
            let other = row.report.other_cpu_pct(false)?;
            (other > BUSY_NEIGHBOUR_PCT).then(|| (format!("{} calls", row.calls), other))
        })
        .collect();
    warn_interference(&busy);
    println!();
    for row in rows {
        let r = &row.report;
        let s = &row.stats;
        let mut note = format!(
            "- {} calls: setup {:.1} s; streamed {} flows for {:.2} s at {} pps offered ({} pps sent); calls with loss {}; \
             sender thread {} % / receiver thread {} % of a core; INVITE retransmissions {}; ACK resent {}; \
             BYE retransmissions {}; server BYEs {}; duplicates {}; unmatched RTP (no tag of ours: concealment etc.) {}; server RTP out {} pps; RTCP received {}; send errors {}; steal {} %; after BYE: {}",
            row.calls,
            row.setup.seconds,
            r.flows,
            r.window_s,
            thousands(r.target_pps as u64),
            thousands(r.sent_pps() as u64),
            r.flows_with_loss,
            pct(r.pct_of_core(r.sender_cpu_ns)),
            pct(r.pct_of_core(r.receiver_cpu_ns)),
            s.invite_retransmissions,
            s.ack_resent,
            s.bye_retransmissions,
            s.remote_byes,
            r.duplicates,
            r.unmatched,
            thousands(((r.echoed + r.unmatched) as f64 / r.window_s.max(1e-9)) as u64),
            r.rtcp_received,
            r.send_errors,
            r.steal_cpu_pct().map(pct).unwrap_or_else(|| "–".into()),
            row.gone,
        );
        match &row.server {
            Some(Ok(v)) => note.push_str(&format!(
                "; callbridge's counters on {} connections: {} RTP received, {} arrived after their frame was played (dropped as late), {} frames concealed, RTP loss {}",
                v.connections, v.received, v.late, v.concealed, v.lost
            )),
            Some(Err(e)) => note.push_str(&format!("; callbridge's counters not read: {e}")),
            None => {}
        }
        if s.late_answers > 0 {
            note.push_str(&format!("; late 2xx (ACK+BYE) {}", s.late_answers));
        }
        if !s.failures.is_empty() {
            let reasons: Vec<String> = s
                .failures
                .iter()
                .map(|(why, n)| format!("{n}× {why}"))
                .collect();
            note.push_str(&format!("; setup failures: {}", reasons.join(", ")));
        }
        println!("{note}");
    }
}

// ---------------------------------------------------------------------------------------------
// All

fn run_all_mode(a: &AllArgs) -> Result<ExitCode, String> {
    print_context(&a.common);
    let max_calls = a.echo.calls.iter().copied().max().unwrap_or(0);
    let flows = a.reflector.flows.unwrap_or(max_calls.max(1));
    raise_limits(flows.max(max_calls) * 2);
    let mut opts = a.reflector.clone();
    opts.find_max = true;
    let mut ports = PortRange::new(
        a.common.local_ip,
        a.common.port_range.0,
        a.common.port_range.1,
    );
    println!("\n## 1. Reflector baseline (machine limit)\n");
    let found = reflector_series(&opts, flows, a.reflector_seconds, &a.common, &mut ports)?;
    print_max(&found);
    println!("\n## 2. callbridge echo\n");
    std::thread::sleep(Duration::from_secs(1));
    let rows = echo_series(&a.echo, a.seconds, &a.common)?;
    print_echo_table(&rows, Some(found.best_pps));
    print_echo_notes(&rows);
    if !a.no_floor {
        println!("\n## 3. The machine's floor: the reflector at each row's packet rate\n");
        let mut floor = Vec::with_capacity(rows.len());
        for row in &rows {
            std::thread::sleep(Duration::from_secs_f64(a.echo.pause));
            let flows = row.report.flows.max(1);
            eprintln!("loadgen: floor for {} calls: {flows} flows", row.calls);
            let r = floor_run(
                &a.reflector,
                a.echo.shared_media,
                flows,
                a.seconds,
                &a.common,
                &mut ports,
            )?;
            floor.push((row, r));
        }
        print_floor_table(&floor);
    }
    println!("\n## 4. Ratio\n");
    let clean = rows
        .iter()
        .filter(|r| {
            r.setup.failed == 0 && r.report.sent > 0 && r.report.loss_pct() < a.reflector.max_loss
        })
        .max_by(|x, y| x.report.echoed_pps().total_cmp(&y.report.echoed_pps()));
    match clean {
        Some(best) => {
            let cb = best.report.echoed_pps();
            let offered_bound = rows
                .iter()
                .all(|r| r.calls <= best.calls || r.report.loss_pct() < a.reflector.max_loss);
            println!(
                "callbridge sustained {} pps echoed (each way) at {} calls with {:.3} % loss = {:.2} × the reflector's {} pps{}",
                thousands(cb as u64),
                best.calls,
                best.report.loss_pct(),
                if found.best_pps > 0.0 { cb / found.best_pps } else { 0.0 },
                thousands(found.best_pps as u64),
                if offered_bound {
                    " (the largest N offered was clean: this is a lower bound, callbridge's ceiling was not reached)"
                } else {
                    ""
                }
            );
        }
        None => println!(
            "no echo run stayed under {} % loss with every call set up: no sustained rate to compare",
            a.reflector.max_loss
        ),
    }
    // CPU per packet does not depend on how much of the machine the generator took.
    if let Some(refl_ns) = found.best_ns_per_packet {
        for row in &rows {
            let r = &row.report;
            if let Some(cb_ns) = r.target_cpu_ns.filter(|_| r.echoed > 0) {
                let cb = cb_ns as f64 / r.echoed as f64;
                println!(
                    "- {} calls: callbridge {:.2} µs of CPU per echoed packet vs the reflector's {:.2} µs per reflected packet ({:.1}×)",
                    row.calls,
                    cb / 1000.0,
                    refl_ns / 1000.0,
                    cb / refl_ns
                );
            }
        }
    }
    Ok(exit_for(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_args(extra: &[&str]) -> AllArgs {
        let mut argv = vec![
            "loadgen",
            "all",
            "--calls",
            "20",
            "--port-range",
            "46000-46999",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("arguments parse").mode {
            Mode::All(a) => a,
            _ => unreachable!("the all subcommand"),
        }
    }

    /// A callbridge on another machine is never taken for a local process holding the same
    /// port: its CPU comes from its /metrics, or stays unknown without the API.
    #[test]
    fn the_cpu_of_a_callbridge_elsewhere_comes_from_its_metrics_never_from_a_local_process() {
        assert!(sys::is_local_address(Ipv4Addr::LOCALHOST));
        // TEST-NET-1: no machine running the tests owns it.
        let elsewhere: SocketAddrV4 = "192.0.2.1:5060".parse().unwrap();
        assert!(!sys::is_local_address(*elsewhere.ip()));
        let api = ["--api", "192.0.2.1:8080", "--api-token", "t"];
        assert_eq!(
            cpu_source(&all_args(&api).echo, elsewhere),
            Ok(CpuSource::Metrics {
                api: "192.0.2.1:8080".parse().unwrap(),
                token: "t".into()
            })
        );
        assert_eq!(
            cpu_source(&all_args(&[]).echo, elsewhere),
            Ok(CpuSource::Unknown)
        );
        assert!(cpu_source(&all_args(&["--server-cpu", "metrics"]).echo, elsewhere).is_err());
        let given = [&api[..], &["--pid", "42"]].concat();
        assert_eq!(
            cpu_source(&all_args(&given).echo, elsewhere),
            Ok(CpuSource::Pid(42)),
            "--pid wins"
        );
    }

    /// The floor run carries what an echo row carried, through one reflector socket per flow
    /// and (with --shared-media) one generator socket, and accounts for every packet.
    #[test]
    fn a_floor_run_reflects_every_packet_of_a_shared_generator_through_per_flow_sockets() {
        let a = all_args(&["--shared-media", "--drain-ms", "300"]);
        let mut ports = PortRange::new(
            a.common.local_ip,
            a.common.port_range.0,
            a.common.port_range.1,
        );
        let r = floor_run(
            &a.reflector,
            a.echo.shared_media,
            20,
            0.4,
            &a.common,
            &mut ports,
        )
        .expect("floor run");
        assert_eq!(r.flows, 20);
        assert_eq!(r.target_pps, 1_000.0, "50 pps per flow");
        assert!(r.sent >= 300, "sent {}", r.sent);
        assert_eq!(r.echoed, r.sent, "every datagram comes back");
        assert_eq!(r.jitter.count(), r.echoed, "one jitter value per echo");
        assert_eq!(
            r.target_packets,
            Some(r.echoed),
            "the reflector counted them"
        );
        assert_eq!(r.flows_with_loss, 0);
    }

    #[test]
    fn the_server_view_sums_the_counters_of_our_connections_only() {
        let connection = |port: u16, late: u64| {
            serde_json::json!({
                "MediaTxIP": "127.0.0.1",
                "MediaTxPort": port,
                "Stats": {
                    "RtpPacketsReceived": 500,
                    "LatePackets": late,
                    "ConcealedFrames": late + 10,
                    "PacketsLost": -1,
                },
            })
        };
        let listing = serde_json::json!({
            "ResultCode": "0",
            "Connections": [connection(40_000, 3), connection(40_000, 0), connection(50_000, 7)],
        });
        assert_eq!(
            server_view(&listing, Ipv4Addr::LOCALHOST, &[40_000, 40_000]),
            Ok(ServerView {
                connections: 2,
                received: 1_000,
                late: 3,
                concealed: 23,
                lost: -2,
            })
        );
        let mut broken = listing.clone();
        broken["Connections"][0]["Stats"]
            .as_object_mut()
            .unwrap()
            .remove("LatePackets");
        assert_eq!(
            server_view(&broken, Ipv4Addr::LOCALHOST, &[40_000]),
            Err("a connection without Stats.LatePackets".to_string())
        );
        assert!(server_view(
            &serde_json::json!({ "ResultCode": "2" }),
            Ipv4Addr::LOCALHOST,
            &[40_000]
        )
        .is_err());
    }

    #[test]
    fn the_shared_generator_sends_every_flow_from_one_socket_to_its_own_reflector_port() {
        let a = all_args(&[]);
        let mut o = a.reflector.clone();
        o.reflector_sockets = Sockets::PerFlow;
        o.shared_generator = true;
        let mut ports = PortRange::new(
            a.common.local_ip,
            a.common.port_range.0,
            a.common.port_range.1,
        );
        let (reflector, flows) = start_reflector(&o, 5, &mut ports).expect("reflector");
        let local: Vec<_> = flows.iter().map(|f| f.rtp.local_addr().unwrap()).collect();
        assert!(local.iter().all(|l| *l == local[0]), "{local:?}");
        let dests: Vec<SocketAddr> = flows
            .iter()
            .map(|f| SocketAddr::V4(f.dest.expect("a shared socket names its target")))
            .collect();
        assert_eq!(dests, reflector.targets);
        reflector.stop();
        o.reflector_sockets = Sockets::Reuseport;
        let refused = start_reflector(&o, 5, &mut ports).err().expect("refused");
        assert!(
            refused.contains("--reflector-sockets per-flow"),
            "{refused}"
        );
    }
}
