//! `loadgen compare`'s signalling-side workloads: call setup (SIPp at rising rates) and
//! memory (idle established calls, and after they end) — see `compare` for the others.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    fmt, mb, ng_call, ng_delete_all, ports, print_rows, sip_calls_srtp, sip_teardown, wants,
    CompareArgs, Row,
};
use crate::peers::{self, Peer};
use crate::print_table;
use crate::room;

// ---------------------------------------------------------------------------------------------
// call setup

pub(super) fn setup(a: &CompareArgs, root: &Path, workers: usize) -> Result<bool, String> {
    let mut servers = Vec::new();
    if wants(a, Peer::Callbridge) {
        let server = peers::start_callbridge(&a.bin, root, workers, &a.places())?;
        servers.push((server, a.server_sip));
    }
    if wants(a, Peer::SippUas) {
        // The floor's port, from the tool's range (a free one, released for SIPp to take).
        let port = free_port(a, "SIPp's uas")?;
        let sip = std::net::SocketAddrV4::new(a.common.local_ip, port);
        servers.push((peers::start_sipp_uas(root, sip)?, sip));
    }
    if servers.is_empty() {
        return Ok(true);
    }
    // The generator's own port (released for SIPp to take).
    let uac_port = free_port(a, "SIPp")?;
    let mut rows = Vec::new();
    // Each rate against every server still answering, in turn (so a slow minute of this shared
    // machine falls on both rows of a rate, not on one server's whole table); a server's
    // rising stops at its first rate with failures.
    let mut limited = vec![false; servers.len()];
    for &rate in &a.setup_rates {
        for (i, (server, target)) in servers.iter().enumerate() {
            if limited[i] {
                continue;
            }
            eprintln!("loadgen compare: setup, {}, {rate}/s", server.peer.name());
            let row = setup_rate(a, server, *target, uac_port, rate)?;
            limited[i] = row.note.ends_with("FAIL");
            rows.push(row);
        }
        if limited.iter().all(|&l| l) {
            break;
        }
    }
    // A server's row with failures is its limit, not a defect.
    for r in rows.iter_mut().filter(|r| r.note.ends_with("FAIL")) {
        r.note = r.note.replace("; FAIL", "; limit reached");
    }
    Ok(print_rows(
        "call setup: SIPp uac (SCHED_BATCH unless --sipp-preempts) to callbridge's echo (INVITE/200/ACK/BYE/200, no RTP), rising rates until calls fail; loss = failed calls; sipp-uas: SIPp's own uas answering the same calls, the machine's floor for SIP (no media, no store)",
        "per call",
        &rows,
    ))
}

/// A free port of the tool's range, released for SIPp to take.
fn free_port(a: &CompareArgs, whose: &str) -> Result<u16, String> {
    ports(a)
        .bind_one(0)
        .and_then(|s| s.local_addr())
        .map_err(|e| format!("a port for {whose}: {e}"))
        .map(|addr| addr.port())
}

/// One rate of SIPp's `uac` against `server` at `target`: its CPU per completed call.
fn setup_rate(
    a: &CompareArgs,
    server: &peers::Server,
    target: std::net::SocketAddrV4,
    uac_port: u16,
    rate: u32,
) -> Result<Row, String> {
    let calls = rate * a.setup_seconds;
    let cpu0 = server.cpu_ns();
    let started = Instant::now();
    let stat = server
        .dir
        .join(format!("setup-{}-{rate}.csv", server.peer.name()));
    let mut sipp = Command::new("sipp");
    if !a.sipp_preempts {
        batch_class(&mut sipp);
    }
    let status = sipp
        .current_dir(&server.dir)
        .args([
            &target.to_string(),
            "-sn",
            "uac",
            "-s",
            "echo",
            "-i",
            &a.common.local_ip.to_string(),
            "-p",
            &uac_port.to_string(),
            "-nostdin",
            "-buff_size",
            "4194304",
            "-d",
            "0",
        ])
        .args([
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            &(rate * 2).to_string(),
        ])
        .args(["-timeout", &format!("{}s", a.setup_seconds * 4 + 30)])
        .args(["-trace_stat", "-stf", &stat.to_string_lossy(), "-fd", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("sipp: {e} (scripts/setup-system installs it)"))?;
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = match (cpu0, server.cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let (ok, failed) = sipp_counts(&stat).unwrap_or((0, calls as u64));
    let note = format!(
        "{ok} completed, {failed} failed in {elapsed:.1} s ({:.0}/s); CPU {:.0} % of a core; sipp {}, exit {}{}",
        ok as f64 / elapsed,
        cpu.map_or(0.0, |c| c as f64 / 1e9 / elapsed * 100.0),
        if a.sipp_preempts { "SCHED_OTHER" } else { "SCHED_BATCH" },
        status.code().unwrap_or(-1),
        if failed > 0 { "; FAIL" } else { "" }
    );
    Ok(Row {
        size: format!("{rate}/s"),
        peer: server.peer,
        cpu_us: cpu.filter(|_| ok > 0).map(|c| c as f64 / 1e3 / ok as f64),
        loss: Some(100.0 * failed as f64 / calls.max(1) as f64),
        jitter_ms: None,
        rss_mb: mb(server.rss_kb()),
        note,
    })
}

/// Starts the command in the SCHED_BATCH class: the kernel then does not let it preempt the
/// running task when it wakes (its turn comes at the next tick, or when a core is idle). The
/// load generator shares the server's two cores; SIPp in the normal class, woken by each
/// response the server sends, took over the server's core in the middle of the server's turn
/// (one involuntary switch a call at 2,000 calls/s), and the server's CPU per call included
/// switching back. A PBX or trunk on another host costs the server no such switch.
fn batch_class(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; it makes one system call (async-signal
    // safe) and touches nothing of the parent's.
    unsafe {
        command.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// SIPp's last statistics line: (successful, failed) calls.
fn sipp_counts(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.last()?.split(';').collect();
    let col = |name: &str| -> Option<u64> {
        let i = header.iter().position(|h| *h == name)?;
        last.get(i)?.trim().parse().ok()
    };
    Some((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

// ---------------------------------------------------------------------------------------------
// memory

pub(super) fn memory(a: &CompareArgs, root: &Path, workers: usize) -> Result<bool, String> {
    let mut rows = Vec::new();
    // A server that fails part-way gets a row saying so; the others still run.
    let failed = |peer: Peer, size: String, e: String| MemRow {
        size,
        peer,
        calls: 0,
        before_kb: None,
        up_kb: None,
        after_kb: None,
        note: format!("FAIL: {e}"),
    };
    if wants(a, Peer::Callbridge) {
        for (label, pt, srtp) in [
            ("G.711", 0u8, false),
            ("Opus", room::OPUS_PT, false),
            ("G.711 SRTP", 0u8, true),
        ] {
            if let Err(e) = callbridge_memory(a, root, workers, (label, pt, srtp), &mut rows) {
                rows.push(failed(Peer::Callbridge, label.into(), e));
            }
        }
    }
    if wants(a, Peer::Rtpengine) {
        if let Err(e) = rtpengine_memory(a, root, workers, &mut rows) {
            rows.push(failed(Peer::Rtpengine, "G.711".into(), e));
        }
    }
    if wants(a, Peer::Janus) {
        if let Err(e) = janus_memory(a, root, &mut rows) {
            rows.push(failed(Peer::Janus, "G.711".into(), e));
        }
    }
    print_memory(&rows);
    Ok(rows
        .iter()
        .all(|r| r.peer != Peer::Callbridge || !r.note.contains("FAIL")))
}

fn settle(a: &CompareArgs) {
    std::thread::sleep(Duration::from_secs_f64(a.settle_seconds));
}

/// The wait after the calls ended, before "after" is read.
fn settle_after(a: &CompareArgs) {
    std::thread::sleep(Duration::from_secs_f64(a.after_seconds));
}

/// Idle calls of one kind: (label, payload type, SDES-SRTP).
fn callbridge_memory(
    a: &CompareArgs,
    root: &Path,
    workers: usize,
    (label, pt, srtp): (&str, u8, bool),
    rows: &mut Vec<MemRow>,
) -> Result<(), String> {
    let server = peers::start_callbridge(&a.bin, root, workers, &a.places())?;
    let mut ports = ports(a);
    let shared = ports.bind_pair(0).map_err(|e| format!("socket: {e}"))?;
    let port = shared.0.local_addr().map_err(|e| e.to_string())?.port();
    for &n in &a.idle_calls {
        eprintln!("loadgen compare: memory, callbridge {label}, {n} idle calls");
        settle(a);
        let before = server.rss_kb();
        let calls: Vec<(String, u8)> = (0..n).map(|_| ("echo".to_string(), pt)).collect();
        let (mut uac, setup) = sip_calls_srtp(a, &mut ports, &calls, &vec![port; n], srtp)?;
        std::thread::sleep(Duration::from_secs(1));
        let up = server.rss_kb();
        let gone = sip_teardown(a, &mut uac);
        settle_after(a);
        rows.push(MemRow {
            size: format!("{n} {label}"),
            peer: Peer::Callbridge,
            calls: setup.established,
            before_kb: before,
            up_kb: up,
            after_kb: server.rss_kb(),
            note: if setup.failed > 0 {
                format!("FAIL: {} not set up; {gone}", setup.failed)
            } else {
                gone
            },
        });
    }
    Ok(())
}

fn rtpengine_memory(
    a: &CompareArgs,
    root: &Path,
    workers: usize,
    rows: &mut Vec<MemRow>,
) -> Result<(), String> {
    let (server, ng) = peers::start_rtpengine(root, workers, &a.places())?;
    for &n in &a.idle_calls {
        eprintln!("loadgen compare: memory, rtpengine, {n} idle calls");
        settle(a);
        let before = server.rss_kb();
        let ids: Vec<String> = (0..n).map(|i| format!("idle-{n}-{i}")).collect();
        let mut made = 0;
        let mut error = None;
        for id in &ids {
            match ng_call(&ng, id, 9000, &[0], 9002, &[0], Vec::new()) {
                Ok(_) => made += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let up = server.rss_kb();
        ng_delete_all(&ng, &ids[..made]);
        settle_after(a);
        rows.push(MemRow {
            size: format!("{n} G.711"),
            peer: Peer::Rtpengine,
            calls: made,
            before_kb: before,
            up_kb: up,
            after_kb: server.rss_kb(),
            note: match error {
                Some(e) => format!("FAIL after {made} calls: {e}"),
                None => "offer/answer, no RTP".into(),
            },
        });
    }
    Ok(())
}

fn janus_memory(a: &CompareArgs, root: &Path, rows: &mut Vec<MemRow>) -> Result<(), String> {
    let (server, mut janus) = peers::start_janus(root, &a.places())?;
    let mut ports = ports(a);
    // Janus answers a participant by its own address: a socket each (10 per room), and
    // three threads each: the smallest size only, at most 1,000.
    let n = a.idle_calls.iter().copied().min().unwrap_or(0).min(1000);
    eprintln!("loadgen compare: memory, janus, {n} idle participants");
    settle(a);
    let before = server.rss_kb();
    let mut socks = Vec::new();
    for r in 0..n.div_ceil(10) {
        let room_id = 5000 + r as u64;
        let h = janus.attach()?;
        janus.message(
            h,
            json!({"request": "create", "room": room_id, "sampling_rate": 8000,
            "record": false, "allow_rtp_participants": true, "audiolevel_ext": false}),
        )?;
        for j in 0..10.min(n - r * 10) {
            let sock = ports.bind_one(0).map_err(|e| format!("socket: {e}"))?;
            let port = sock.local_addr().map_err(|e| e.to_string())?.port();
            let h = janus.attach()?;
            janus.message(
                h,
                json!({"request": "join", "room": room_id, "display": format!("p{j}"),
                "codec": "pcmu", "rtp": {"ip": "127.0.0.1", "port": port, "payload_type": 0}}),
            )?;
            janus.event(h)?;
            socks.push(sock);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let up = server.rss_kb();
    let threads = server.threads();
    janus.destroy();
    settle_after(a);
    rows.push(MemRow {
        size: format!("{n} G.711"),
        peer: Peer::Janus,
        calls: n,
        before_kb: before,
        up_kb: up,
        after_kb: server.rss_kb(),
        note: format!("PCMU participants joined, rooms of 10, no RTP; {threads} threads"),
    });
    Ok(())
}

/// One memory row: resident size before, with the idle calls up, and after they ended.
struct MemRow {
    size: String,
    peer: Peer,
    calls: usize,
    before_kb: Option<u64>,
    up_kb: Option<u64>,
    after_kb: Option<u64>,
    note: String,
}

impl MemRow {
    fn per_call_kb(&self) -> Option<f64> {
        match (self.before_kb, self.up_kb) {
            (Some(b), Some(u)) if self.calls > 0 => {
                Some(u.saturating_sub(b) as f64 / self.calls as f64)
            }
            _ => None,
        }
    }
}

fn print_memory(rows: &[MemRow]) {
    println!("\n### memory: resident per idle established call (no RTP)\n");
    let mut by_size: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.peer == Peer::Callbridge) {
        by_size.insert(&r.size, r.per_call_kb());
    }
    let out: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let ratio = match (
                by_size.get(r.size.as_str()).copied().flatten(),
                r.per_call_kb(),
            ) {
                (Some(c), Some(p)) if r.peer != Peer::Callbridge && p > 0.0 => {
                    format!("{:.2}", c / p)
                }
                _ => "–".into(),
            };
            vec![
                r.size.clone(),
                r.peer.name().into(),
                fmt(r.per_call_kb(), 1),
                fmt(mb(r.before_kb), 1),
                fmt(mb(r.up_kb), 1),
                fmt(mb(r.after_kb), 1),
                ratio,
                r.note.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "calls",
            "server",
            "KB per call",
            "resident before MB",
            "with the calls up MB",
            "after the calls ended MB",
            "callbridge ÷ this",
            "notes",
        ],
        &out,
    );
}
