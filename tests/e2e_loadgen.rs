//! The load tool (`examples/loadgen`) against the real server, the way it runs from a machine
//! of its own: bound to another address (127.0.0.2, still loopback), offering that address in
//! its SDP, and reading callbridge's CPU from /metrics instead of /proc.
//!
//! Runs the example binary that `cargo test` builds next to the tests (a run filtered with
//! `--test e2e_loadgen` builds no examples: `cargo build --example loadgen` first). A binary
//! older than the tool's sources is refused rather than tested.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;

/// `target/<profile>/examples/loadgen`, checked to be newer than every source of the tool.
fn loadgen() -> PathBuf {
    let test = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e_loadgen-<hash> → target/<profile>/examples/loadgen
    let profile = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in target/<profile>/deps");
    let tool = profile.join("examples").join("loadgen");
    let built = std::fs::metadata(&tool)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo build --example loadgen`",
                tool.display()
            )
        });
    let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = vec![sources.join("loadgen.rs")];
    files.extend(
        std::fs::read_dir(sources.join("loadgen"))
            .expect("examples/loadgen/")
            .map(|entry| entry.expect("directory entry").path()),
    );
    for file in files {
        let changed = std::fs::metadata(&file).and_then(|m| m.modified()).unwrap();
        assert!(
            changed <= built,
            "{} is older than {}: run `cargo build --example loadgen`",
            tool.display(),
            file.display()
        );
    }
    tool
}

/// The cells of the first data row of the markdown table whose header starts with `| calls`,
/// by column name.
fn table_row(output: &str) -> Vec<(String, String)> {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = output.lines().skip_while(|l| !l.starts_with("| calls"));
    let header = cells(lines.next().expect("a result table"));
    let row = cells(lines.nth(1).expect("a data row under the separator"));
    assert_eq!(header.len(), row.len(), "{output}");
    header.into_iter().zip(row).collect()
}

#[test]
fn echo_calls_from_another_address_are_measured_with_the_servers_cpu_from_its_metrics() {
    let server = Server::start("");
    let output = Command::new(loadgen())
        .args(["echo", "--local-ip", "127.0.0.2"])
        .args(["--sip", &format!("127.0.0.1:{}", server.sip_port)])
        .args(["--api", &format!("127.0.0.1:{}", server.api_port)])
        .args(["--api-token", common::TOKEN, "--server-cpu", "metrics"])
        .args(["--calls", "4", "--seconds", "2", "--shared-media"])
        .args(["--port-range", "46000-46999"])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("CPU from http://127.0.0.1:"),
        "CPU read from /metrics: {stdout}"
    );
    let row = table_row(&stdout);
    let cell = |name: &str| {
        row.iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.replace(',', ""))
            .unwrap_or_else(|| panic!("no column {name}: {stdout}"))
    };
    let number = |name: &str| -> f64 {
        cell(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {stdout}"))
    };
    assert_eq!(cell("set up"), "4", "{stdout}");
    assert_eq!(cell("failed"), "0", "{stdout}");
    assert_eq!(cell("BYE 200"), "4/4", "{stdout}");
    // 4 calls × 50 pps × 2 s; a loaded test machine may cost the odd frame.
    assert!(number("sent") >= 390.0, "{stdout}");
    assert!(number("echoed") >= number("sent") * 0.95, "{stdout}");
    assert!(number("callbridge CPU %") > 0.0, "{stdout}");
    // callbridge's own counters, found by our address (127.0.0.2) and ports in its listing.
    assert!(
        stdout.contains("callbridge's counters on 4 connections"),
        "{stdout}"
    );
    server.wait_no_connections(std::time::Duration::from_secs(5));
}

/// The rows of every markdown table in `output` whose second column (server) is callbridge,
/// each with its table's title (the `### ` line above it).
fn callbridge_rows(output: &str) -> Vec<(String, Vec<String>)> {
    server_rows(output, "callbridge")
}

/// [`callbridge_rows`] for any server column.
fn server_rows(output: &str, server: &str) -> Vec<(String, Vec<String>)> {
    let mut title = String::new();
    let mut rows = Vec::new();
    for line in output.lines() {
        if let Some(t) = line.strip_prefix("### ") {
            title = t.to_string();
        } else if line.starts_with('|') && !line.starts_with("|-") {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            if cells.get(1).map(String::as_str) == Some(server) {
                rows.push((title.clone(), cells));
            }
        }
    }
    rows
}

/// `loadgen compare` as CI runs it: every workload, a few calls each, against callbridge alone
/// (the peers are installed only for benchmarking) and the call-setup floor, SIPp's own uas
/// (SIPp is installed for the tests). The tool starts the server binary itself.
#[test]
fn compare_runs_every_workload_against_callbridge_alone() {
    let sip = common::free_udp_tcp_port();
    let api = common::free_tcp_port();
    let media = common::free_rtp_range(500);
    let output = Command::new(loadgen())
        .args(["compare", "--servers", "callbridge,sipp-uas"])
        .args(["--bin", env!("CARGO_BIN_EXE_callbridge")])
        .args(["--server-sip", &format!("127.0.0.1:{sip}")])
        .args(["--server-api", &format!("127.0.0.1:{api}")])
        .args(["--server-ports", &format!("{media}-{}", media + 999)])
        .args(["--port-range", "45000-45999"])
        .args([
            "--echo-calls",
            "4",
            "--relay-calls",
            "2",
            "--transcode-calls",
            "1",
        ])
        .args(["--room-sizes", "3", "--talkers", "2", "--pcmu-members", "3"])
        .args([
            "--opus-members",
            "3",
            "--setup-rates",
            "20",
            "--setup-seconds",
            "2",
        ])
        .args([
            "--idle-calls",
            "10",
            "--seconds",
            "2",
            "--setup-rate",
            "100",
        ])
        .args(["--settle-seconds", "0.5", "--after-seconds", "0.5"])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let rows = callbridge_rows(&stdout);
    for workload in [
        "echo:",
        "relay:",
        "transcode:",
        "conference, PCMU",
        "conference, Opus",
        "call setup:",
        "memory:",
    ] {
        assert!(
            rows.iter().any(|(title, _)| title.starts_with(workload)),
            "no callbridge row under {workload}: {stdout}"
        );
    }
    for (title, cells) in &rows {
        let notes = cells.last().expect("a notes column");
        assert!(!notes.contains("FAIL"), "{title}: {cells:?}\n{stdout}");
        if title.starts_with("transcode") || title.starts_with("conference") {
            // Every talker was heard by the others and not by itself (Goertzel).
            assert!(notes.starts_with("mix ok"), "{title}: {cells:?}\n{stdout}");
        }
        let number = |i: usize| -> f64 {
            cells[i]
                .replace(',', "")
                .parse()
                .unwrap_or_else(|_| panic!("{title}: column {i} is not a number: {cells:?}"))
        };
        if title.starts_with("memory") {
            // Idle calls were up and each cost the server something.
            assert!(number(2) > 0.0, "{title}: KB per call: {cells:?}\n{stdout}");
        } else {
            assert!(
                number(2) >= 0.0,
                "{title}: a CPU figure: {cells:?}\n{stdout}"
            );
        }
        if title.starts_with("echo") || title.starts_with("relay") {
            // Every tagged packet came back (echo) or reached the other side (relay); a debug
            // build on a loaded machine may cost the odd frame.
            assert!(number(3) < 5.0, "{title}: loss %: {cells:?}\n{stdout}");
        }
    }
    // The floor answered every call of the setup rate, and callbridge's row is compared to it.
    let floor = server_rows(&stdout, "sipp-uas");
    assert_eq!(floor.len(), 1, "one sipp-uas row: {stdout}");
    let (title, cells) = &floor[0];
    assert!(title.starts_with("call setup:"), "{title}: {cells:?}");
    assert_eq!(cells[0], "20/s", "{cells:?}");
    assert_eq!(cells[3], "0.000", "no call failed: {cells:?}\n{stdout}");
    let ratio: f64 = cells[6]
        .parse()
        .unwrap_or_else(|_| panic!("callbridge ÷ the floor is a number: {cells:?}\n{stdout}"));
    assert!(ratio > 0.0, "{cells:?}");
}
