//! Shared end-to-end harness: starts the real `callbridge` binary on loopback with its own
//! ports and config, talks to its HTTP API, reads its event stream, runs SIPp against it.
#![allow(dead_code)]

pub mod kamailio;
pub mod postgres;
pub mod uac;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-token";

/// A running server; killed (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    pub sip_port: u16,
    pub api_port: u16,
    pub rtp_min: u16,
    pub rtp_max: u16,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts with the standard test config plus `extra` TOML (e.g. more routes).
    pub fn start(extra: &str) -> Server {
        Self::start_with(extra, 40)
    }

    /// As `start`, with `rtp_pairs` RTP port pairs in the range.
    pub fn start_with(extra: &str, rtp_pairs: u16) -> Server {
        Self::launch(extra, rtp_pairs, &[], false, &[], None)
    }

    /// SIP on 127.0.0.1 and [::1], media on a dual-stack `::` socket.
    pub fn start_dual_stack() -> Server {
        Self::launch("", 40, &[], true, &[], None)
    }

    /// The standard config with `--set` overrides on the command line.
    pub fn start_with_overrides(overrides: &[&str]) -> Server {
        Self::launch("", 40, overrides, false, &[], None)
    }

    /// The standard config plus `extra` TOML (routes), with `--set` overrides.
    pub fn start_with_extra_and_overrides(extra: &str, overrides: &[&str]) -> Server {
        Self::launch(extra, 40, overrides, false, &[], None)
    }

    /// The standard config plus `extra`, with `--set` overrides and extra environment
    /// variables (test-only fault hooks).
    pub fn launch_with(extra: &str, overrides: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch(extra, 40, overrides, false, env, None)
    }

    /// The standard config (plus `extra`) with extra environment variables (NOTIFY_SOCKET...).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Server {
        Self::launch(extra, 40, &[], false, env, None)
    }

    /// The standard config (plus `extra`) with a `tls://127.0.0.1:<tls_port>` listener using
    /// this PEM certificate and key.
    pub fn start_with_tls(extra: &str, tls_port: u16, certificate: &Path, key: &Path) -> Server {
        Self::launch(
            extra,
            40,
            &[],
            false,
            &[],
            Some((tls_port, certificate, key)),
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("callbridge.toml")
    }

    /// `callbridge ctl --config <this server's config> ARGS`: whether it succeeded, and what it
    /// printed (standard output, then standard error).
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_callbridge"))
            .arg("ctl")
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("ctl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// Waits for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn launch(
        extra: &str,
        rtp_pairs: u16,
        overrides: &[&str],
        dual_stack: bool,
        env: &[(&str, &str)],
        tls: Option<(u16, &Path, &Path)>,
    ) -> Server {
        // The ports are picked free before the server binds them, outside the ephemeral
        // range (`reserve_port`); should another process still take one in between, the
        // server exits with "Address already in use" and is started again on other ports.
        const ATTEMPTS: usize = 4;
        for attempt in 1..=ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir");
            let sip_port = free_udp_tcp_port();
            let api_port = free_tcp_port();
            let rtp_min = free_rtp_range(rtp_pairs);
            let rtp_max = rtp_min + rtp_pairs * 2 - 1;
            let (tls_listen, tls_files) = match tls {
                Some((port, certificate, key)) => (
                    format!(", \"tls://127.0.0.1:{port}\""),
                    format!(
                        "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
                        certificate.display(),
                        key.display()
                    ),
                ),
                None => (String::new(), String::new()),
            };
            let (v6_listen, media_ip) = if dual_stack {
                (
                    format!(", \"udp://[::1]:{sip_port}\", \"tcp://[::1]:{sip_port}\""),
                    "::",
                )
            } else {
                (String::new(), "127.0.0.1")
            };
            // Prompts and recordings stay inside the test's own directory.
            let prompt_dir = dir.path().join("prompts").display().to_string();
            let recording_dir = dir.path().join("recordings").display().to_string();
            // The recording store and call recordings too.
            let store_path = dir.path().join("callbridge.db").display().to_string();
            let calls_dir = dir.path().join("calls").display().to_string();
            let config = format!(
                r#"
[sip]
listen = ["udp://127.0.0.1:{sip_port}", "tcp://127.0.0.1:{sip_port}"{v6_listen}{tls_listen}]
t1_ms = 100
t2_ms = 400
{tls_files}
[media]
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_max}
bind_ip = "{media_ip}"
workers = 2
prompt_dir = "{prompt_dir}"
recording_dir = "{recording_dir}"
[store]
path = "{store_path}"
[recording]
dir = "{calls_dir}"
[api]
listen = "127.0.0.1:{api_port}"
tokens = ["{TOKEN}"]
[log]
level = "info,callbridge=debug"
[[route]]
user = "^echo$"
service = "echo"
[[route]]
user = "^ring$"
service = "echo"
answer_delay_ms = 5000
{extra}
"#
            );
            let path = dir.path().join("callbridge.toml");
            std::fs::write(&path, config).expect("write config");
            let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
            let mut server = Server::start_process(&path, &overrides, env, dir, sip_port, api_port);
            match server.wait_healthy() {
                Ok(()) => {
                    (server.rtp_min, server.rtp_max) = (rtp_min, rtp_max);
                    return server;
                }
                Err(log) if attempt < ATTEMPTS && log.contains("Address already in use") => {}
                Err(log) => panic!("server never became healthy; log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Runs the binary on `config` with `--set` `overrides`, its log in `dir`.
    fn start_process(
        config: &Path,
        overrides: &[String],
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
        sip_port: u16,
        api_port: u16,
    ) -> Server {
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_callbridge"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(overrides.iter().flat_map(|o| ["--set", o.as_str()]))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start callbridge");
        Server {
            child: Some(child),
            sip_port,
            api_port,
            rtp_min: 0,
            rtp_max: 0,
            dir,
        }
    }

    /// Waits until /health answers 200; the log if the process exits first or 15 s pass.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(self.url("/health")).send() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if exited(&mut self.child) {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.log())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.api_port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// POST /mediacontrol/{action} with a JSON body; returns (HTTP status, JSON body).
    pub fn action(&self, action: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(self.url(&format!("/mediacontrol/{action}")))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .expect("API reachable");
        let status = r.status().as_u16();
        (status, r.json().expect("JSON body"))
    }

    pub fn get(&self, path: &str) -> Value {
        let r = client()
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .expect("API reachable");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().expect("JSON body")
    }

    /// The whole `/metrics` page (through a client of its own).
    pub fn metrics(&self) -> String {
        self.metrics_through(&client())
    }

    /// The whole `/metrics` page through `client`: a test counting the server's descriptors
    /// reads every page over one kept-alive connection, one steady descriptor on its side.
    pub fn metrics_through(&self, client: &reqwest::blocking::Client) -> String {
        let r = client
            .get(self.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .expect("API reachable");
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().expect("metrics text")
    }

    /// One `/metrics` value: the sample line `name` (with its labels, if any).
    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics(), name)
    }

    pub fn connections(&self) -> Vec<Value> {
        self.get("/mediacontrol/connections")["Connections"]
            .as_array()
            .cloned()
            .expect("Connections array")
    }

    /// Waits until the connection list is empty (calls released), or panics with the list.
    pub fn wait_no_connections(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let list = self.connections();
            if list.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("connections left: {list:#?}\nlog:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn events(&self) -> EventStream {
        EventStream::open(&self.url("/events"))
    }

    /// Runs SIPp against the server (UDP unless `args` says otherwise); returns its exit
    /// status and combined output.
    pub fn sipp(&self, args: &[&str]) -> (bool, String) {
        let out = sipp_command(self.sip_port, self.dir.path(), args)
            .output()
            .expect("sipp is installed (Debian package sip-tester)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Runs SIPp on a thread (for scenarios that wait for the server to act); join for its
    /// output.
    pub fn sipp_in_background(&self, args: &[&str]) -> BackgroundSipp {
        sipp_in_background_to(self.sip_port, self.dir.path(), args)
    }

    /// Starts the binary on a config file of the repository (an example), with `--set`
    /// overrides for what is site-specific: `overrides` gets the server's temp dir (for the
    /// store and recordings) and must make the API listen on 127.0.0.1:`api_port` with
    /// [`TOKEN`] among its tokens.
    pub fn start_from_file(
        config: &Path,
        sip_port: u16,
        api_port: u16,
        overrides: impl FnOnce(&Path) -> Vec<String>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let overrides = overrides(dir.path());
        let mut server = Server::start_process(config, &overrides, &[], dir, sip_port, api_port);
        if let Err(log) = server.wait_healthy() {
            panic!("server never became healthy; log:\n{log}");
        }
        server
    }

    /// SIGKILL: the process ends at once, nothing is released or written.
    pub fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs SIPp against 127.0.0.1:`port` (callbridge, or a proxy in front of it) on a thread, in
/// `dir`; join for its output.
pub fn sipp_in_background_to(port: u16, dir: &Path, args: &[&str]) -> BackgroundSipp {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let exited = std::sync::Arc::new(std::sync::OnceLock::new());
    let told = exited.clone();
    let handle = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = sipp_command(port, &dir, &args)
            .output()
            .expect("sipp is installed (Debian package sip-tester)");
        let _ = told.set(format!(
            "{}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
        output
    });
    BackgroundSipp { handle, exited }
}

/// SIPp running on a thread: [`EventStream::wait_for_while`] waits for what its call causes
/// and, when that never comes, fails with SIPp's exit status and output (a port it could not
/// bind, a call refused) or says that it is still running.
pub struct BackgroundSipp {
    handle: std::thread::JoinHandle<std::process::Output>,
    exited: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl BackgroundSipp {
    /// Waits for SIPp to exit; its output.
    pub fn join(self) -> std::thread::Result<std::process::Output> {
        self.handle.join()
    }

    /// SIPp's exit status and output once it has exited.
    pub fn exited(&self) -> Option<&str> {
        self.exited.get().map(String::as_str)
    }
}

/// A SIPp run's combined output, and whether it succeeded.
pub fn sipp_result(output: std::process::Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// SIPp against 127.0.0.1:`sip_port` from free local ports, bounded by a 60 s global timeout.
fn sipp_command(sip_port: u16, dir: &Path, args: &[&str]) -> Command {
    let mut command = sipp_base(dir, free_udp_tcp_port());
    command.arg(format!("127.0.0.1:{sip_port}")).args(args);
    command
}

/// SIPp on 127.0.0.1:`local_port` (media on a free port), run in `dir`, bounded by a 60 s
/// global timeout.
fn sipp_base(dir: &Path, local_port: u16) -> Command {
    let media_port = free_sipp_media_port();
    let mut command = Command::new("sipp");
    command
        .current_dir(dir)
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
        ])
        .args([
            "-p",
            &local_port.to_string(),
            "-mp",
            &media_port.to_string(),
        ]);
    command
}

/// The `/events` SSE stream, read on a thread into a channel of JSON events.
pub struct EventStream {
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl EventStream {
    fn open(url: &str) -> EventStream {
        let response = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client")
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .expect("events reachable");
        assert_eq!(response.status(), 200);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(response);
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Some(data) = line.strip_prefix("data:") {
                    if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        EventStream {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the first event (seen before or arriving) that satisfies `pred`.
    pub fn wait_for(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_wait_for(within, pred)
            .unwrap_or_else(|missing| panic!("{missing}"))
    }

    /// As [`EventStream::wait_for`], while `sipp` places the call that causes the event: a
    /// failure says how SIPp ended (a port it could not bind, a call refused), or that it is
    /// still running.
    pub fn wait_for_while(
        &mut self,
        sipp: &BackgroundSipp,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.try_wait_for(within, pred).unwrap_or_else(|missing| {
            panic!(
                "{missing}\nSIPp: {}",
                sipp.exited().unwrap_or("still running")
            )
        })
    }

    /// The first event that satisfies `pred`, or what was seen instead once `within` passed.
    fn try_wait_for(
        &mut self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Ok(v.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Ok(v);
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "no matching event within {within:?}; saw {:#?}",
                        self.seen
                    ))
                }
            }
        }
    }

    /// Every event received so far (after draining what is queued).
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }
}

/// The value of the sample line `name` (with its labels, if any) on a `/metrics` page.
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// A port free for both UDP and TCP on 127.0.0.1, for a listener a child process binds.
pub fn free_udp_tcp_port() -> u16 {
    reserve_port(|port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// A port free for TCP on 127.0.0.1, for a listener a child process binds.
pub fn free_tcp_port() -> u16 {
    reserve_port(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A port for SIPp's media (`-mp`): SIPp binds it and the port two above (its video socket),
/// and exits if either is taken.
fn free_sipp_media_port() -> u16 {
    reserve_port(|port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port + 2)).is_ok()
    })
}

/// The first port of a block of four that `usable` accepts, from 10000–20999: below the
/// kernel's ephemeral ports (32768 up), so no socket bound to port 0 and no outgoing
/// connection — another test's client, an INVITE from a raw socket — can take it between the
/// check and the child's bind, and below [`free_rtp_range`]'s ranges. A counter keeps this
/// process's tests on different blocks; the process id spreads the start.
fn reserve_port(usable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 10_000;
    const BLOCKS: u32 = 2_750;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 97) * 28;
    for _ in 0..BLOCKS {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + ((start + n) % BLOCKS) * 4) as u16;
        if usable(port) {
            return port;
        }
    }
    panic!("no usable port in 10000-20999");
}

/// An even base port with `pairs` free pairs after it, in a range the kernel does not hand
/// out as ephemeral ports (below 32768), chosen per process to keep parallel tests apart.
pub fn free_rtp_range(pairs: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = pairs * 2;
    let seed = (std::process::id() % 64) as u16;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 21000 + ((seed * 7 + n * 3) % 40) * 250;
        let base = base & !1;
        let all_free = (base..base + span).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
        assert!(n < 200, "no free RTP range");
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// One PCMU frame of a 1 kHz tone (no 0x7F code: μ-law "negative zero" re-encodes as 0xFF).
pub fn pcmu_frame(index: u16) -> Vec<u8> {
    (0..160u32)
        .map(|i| {
            let t = (u32::from(index) * 160 + i) as f64 / 8000.0;
            let sample = (6000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16;
            let code = ulaw_encode(sample);
            if code == 0x7F {
                0xFF
            } else {
                code
            }
        })
        .collect()
}

/// G.711 μ-law decoder (ITU-T G.711), for checking received audio.
pub fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let exponent = (c >> 4) & 0x07;
    let mantissa = i32::from(c & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if c & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Normalized Goertzel power of `hz` in 8 kHz audio (a full-length sine of amplitude A reads
/// A²/2).
pub fn tone_power(pcm: &[i16], hz: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let n = pcm.len().max(1) as f64;
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / (n * n)
}

/// G.711 μ-law encoder (ITU-T G.711), for building test audio.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s - 1;
        0x7F
    } else {
        0xFF
    };
    let s = (s + BIAS).min(0x7FFF);
    let exponent = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    (sign ^ ((exponent << 4) as i32 | mantissa)) as u8
}

/// Streams `frames` PCMU packets (20 ms apart, PT 0) from `socket` to `destination` and checks
/// what comes back: the callbridge echo is its own RTP stream (its SSRC, its sequence numbers)
/// carrying the caller's audio after the jitter buffer. Returns the number of frames echoed;
/// panics if they are out of order or altered.
pub fn stream_and_check_echo(
    socket: &UdpSocket,
    destination: std::net::SocketAddr,
    frames: u16,
) -> usize {
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .expect("read timeout");
    let sent: Vec<Vec<u8>> = (0..frames).map(pcmu_frame).collect();
    let mut echoed: Vec<(u16, u32, u32, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let end = start + Duration::from_millis(20 * u64::from(frames) + 300);
    let mut next = 0u16;
    while Instant::now() < end {
        let due = start + Duration::from_millis(20 * u64::from(next));
        if next < frames && Instant::now() >= due {
            let mut packet = vec![0x80, 0, (next >> 8) as u8, next as u8];
            packet.extend_from_slice(&(u32::from(next) * 160).to_be_bytes());
            packet.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
            packet.extend_from_slice(&sent[usize::from(next)]);
            socket.send_to(&packet, destination).expect("send RTP");
            next += 1;
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(
                from.port(),
                destination.port(),
                "echo comes from the announced port"
            );
            let p = &buf[..n];
            if p.len() < 12 || (192..=223).contains(&p[1]) {
                continue; // RTCP report
            }
            let seq = u16::from_be_bytes([p[2], p[3]]);
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            echoed.push((seq, ts, ssrc, p[12..].to_vec()));
        }
    }
    assert!(!echoed.is_empty(), "nothing echoed");
    let ssrc = echoed[0].2;
    assert_ne!(ssrc, 0x0bad_cafe, "the echo is callbridge's own stream");
    let offset = sent
        .iter()
        .position(|f| *f == echoed[0].3)
        .expect("the first echoed frame is one we sent");
    let mut matched = 0;
    for (i, (seq, ts, s, payload)) in echoed.iter().enumerate() {
        if offset + i >= sent.len() {
            // After the caller's last frame the jitter buffer conceals a few frames more.
            break;
        }
        matched += 1;
        assert_eq!(*s, ssrc);
        assert_eq!(
            *seq,
            echoed[0].0.wrapping_add(i as u16),
            "consecutive sequence numbers"
        );
        assert_eq!(
            *ts,
            echoed[0].1.wrapping_add(160 * i as u32),
            "20 ms timestamp steps"
        );
        assert_eq!(
            Some(payload),
            sent.get(offset + i),
            "echoed frame {i} is our frame {}",
            offset + i
        );
    }
    matched
}

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `dir`: (certificate,
/// private key).
pub fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("generate a certificate");
    let certificate = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&certificate, certified.cert.pem()).expect("write certificate");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    (certificate, key)
}

/// A PCMU RTP packet of a `hz` tone, frame `index` of a stream.
pub fn tone_packet(ssrc: u32, hz: f64, index: u16) -> Vec<u8> {
    let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    packet[2..4].copy_from_slice(&index.wrapping_add(100).to_be_bytes());
    packet[4..8].copy_from_slice(&(u32::from(index) * 160).to_be_bytes());
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for i in 0..160u32 {
        let t = f64::from(u32::from(index) * 160 + i) / 8000.0;
        let sample = (6000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
        packet.push(ulaw_encode(sample));
    }
    packet
}

/// Sends `frames` tone packets 20 ms apart from `socket` to `to`.
pub fn send_tone(
    socket: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    ssrc: u32,
    hz: f64,
    frames: u16,
) {
    let start = Instant::now();
    for index in 0..frames {
        let due = start + Duration::from_millis(20 * u64::from(index));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket
            .send_to(&tone_packet(ssrc, hz, index), to)
            .expect("send RTP");
    }
}

/// The audio received on `socket` so far (a conference sends every 20 ms: this reads what is
/// queued), decoded from PCMU. Drops RTCP.
pub fn heard(socket: &std::net::UdpSocket) -> Vec<i16> {
    std::thread::sleep(Duration::from_millis(80));
    socket.set_nonblocking(true).expect("non-blocking");
    let mut pcm = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        let packet = &buf[..n];
        if n < 12 || (200..=207).contains(&packet[1]) {
            continue;
        }
        assert_eq!(packet[1] & 0x7f, 0, "members hear the mix in PCMU");
        pcm.extend(packet[12..].iter().map(|&c| ulaw_decode(c)));
    }
    socket.set_nonblocking(false).expect("blocking");
    pcm
}

/// Whether a process the test started has exited (or was already reaped): a server or peer
/// that could not start is not waited for.
pub fn exited(child: &mut Option<Child>) -> bool {
    child
        .as_mut()
        .is_none_or(|child| !matches!(child.try_wait(), Ok(None)))
}

/// Whether something listens on UDP 127.0.0.1:`port` within `within`, read from /proc/net/udp
/// so that no probe socket competes with it for the port.
pub fn udp_listener_within(port: u16, within: Duration) -> bool {
    let local = format!("0100007F:{port:04X}");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let table = std::fs::read_to_string("/proc/net/udp").expect("read /proc/net/udp");
        let bound = table
            .lines()
            .skip(1)
            .any(|line| line.split_whitespace().nth(1) == Some(local.as_str()));
        if bound {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs SIPp as a UAS (a trunk's far end) on a free port of 127.0.0.1 on a thread, and
/// returns once it listens: the port and the run (join for its output). `args` name the
/// scenario (`-sf`/`-sn`) and how many calls (`-m`). When another test took the port between
/// the pick and SIPp's bind (tests run in parallel), SIPp exits and another port is tried.
pub fn sipp_uas_on_a_free_port(
    args: &[&str],
) -> (u16, std::thread::JoinHandle<std::process::Output>) {
    for _ in 0..5 {
        let port = free_udp_tcp_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let handle = std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sipp_base(&repo_path("tests/sipp"), port)
                .args(&args)
                .output()
                .expect("sipp is installed (Debian package sip-tester)")
        });
        // The port bound and SIPp still running: SIPp holds it (a SIPp that lost the port
        // to another test exits at once).
        if udp_listener_within(port, Duration::from_secs(10)) {
            std::thread::sleep(Duration::from_millis(300));
            if !handle.is_finished() {
                return (port, handle);
            }
        }
        // SIPp could not bind (or never came up): it has exited or will; try another port.
    }
    panic!("SIPp never listened on a free port");
}

/// A raw UDP socket as the trunk: what it receives, and a way to answer.
pub struct RawTrunk {
    pub socket: UdpSocket,
}

impl RawTrunk {
    pub fn bind() -> (RawTrunk, u16) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        (RawTrunk { socket }, port)
    }

    /// The next request of `method` (others are skipped), with where it came from.
    pub fn expect(&self, method: &str) -> (String, std::net::SocketAddr) {
        let mut buf = [0u8; 65535];
        for _ in 0..50 {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with(method) {
                    return (text, from);
                }
            }
        }
        panic!("no {method} reached the trunk");
    }

    /// A response to `request` with a To tag and `extra` header lines.
    pub fn respond(&self, request: &str, to: std::net::SocketAddr, status: &str, extra: &str) {
        let mut response = format!("SIP/2.0 {status}\r\n");
        for line in request.lines().take_while(|l| !l.is_empty()) {
            let name = line.split(':').next().unwrap_or("").trim();
            if ["Via", "From", "Call-ID", "CSeq"]
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
            {
                response.push_str(line);
                response.push_str("\r\n");
            } else if name.eq_ignore_ascii_case("To") {
                response.push_str(line);
                if !line.contains("tag=") {
                    response.push_str(";tag=trunk1");
                }
                response.push_str("\r\n");
            }
        }
        response.push_str(extra);
        response.push_str("Content-Length: 0\r\n\r\n");
        self.socket.send_to(response.as_bytes(), to).unwrap();
    }
}

/// Writes a mono 16-bit PCM WAV of a `hz` tone.
pub fn write_tone_wav(path: &Path, rate: u32, hz: f64, ms: u32) {
    let n = rate * ms / 1000;
    let mut data = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        let t = f64::from(i) / f64::from(rate);
        let s = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
        data.extend_from_slice(&s.to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).expect("write prompt");
}

/// `callbridge check-config --config <path>`: whether it accepted the file, and its standard
/// error.
pub fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .expect("callbridge runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
