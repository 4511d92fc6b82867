//! The servers `loadgen compare` measures, started by the tool itself on 127.0.0.1, one at a
//! time: callbridge (its own binary, a generated config), rtpengine (`rtpengine-daemon`,
//! userspace forwarding, driven over its ng protocol) and Janus (`janus`, AudioBridge with
//! plain-RTP participants, driven over its HTTP API). The recipes, ports and pitfalls are
//! those of `../shared/reference/peers.md`.
//!
//! Every server runs with one worker thread per core where it has such a setting (callbridge
//! `[media] workers`, rtpengine `--num-threads`); Janus has none (it runs threads per
//! participant and per room).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_bencode::value::Value as Bencode;
use serde_json::{json, Value};

use crate::sys;

/// Which server a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Peer {
    Callbridge,
    Rtpengine,
    Janus,
    /// The tool's own in-process UDP reflector: the machine's floor (echo only).
    Reflector,
    /// SIPp's built-in `uas` answering the setup workload's calls: the machine's floor for SIP
    /// (one thread, no media, no store, no dialog kept), not a server.
    SippUas,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Callbridge => "callbridge",
            Peer::Rtpengine => "rtpengine",
            Peer::Janus => "janus",
            Peer::Reflector => "reflector",
            Peer::SippUas => "sipp-uas",
        }
    }
}

/// Where the servers listen.
#[derive(Clone, Copy, Debug)]
pub struct Places {
    /// callbridge's SIP (UDP) address.
    pub sip: SocketAddrV4,
    /// callbridge's HTTP API.
    pub api: SocketAddr,
    /// Media ports a server hands out (servers run one at a time, so they share the range).
    pub media: (u16, u16),
    /// callbridge runs with the media settings of `configs/examples/high-density.toml`
    /// (receive at the tick, io_uring sends and receives, 1 MiB socket buffers, pinned
    /// workers), as an operator sizing for load would; else with the defaults.
    pub tuned: bool,
    /// callbridge's config has the two-party bridge route, `bridge=<room>` (a conference
    /// route with `hairpin = true`).
    pub bridge_route: bool,
}

/// The API token of the generated config.
pub const CALLBRIDGE_TOKEN: &str = "loadgen";
const RTPENGINE_NG: &str = "127.0.0.1:22223";
const JANUS_HTTP: &str = "http://127.0.0.1:18088/janus";
/// Janus's HTTP listener (the port of [`JANUS_HTTP`]).
const JANUS_LISTEN: &str = "127.0.0.1:18088";

/// A server process the tool started; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub peer: Peer,
    child: Child,
    pub pid: u32,
    /// Its config folder and log (kept until the tool exits).
    pub dir: PathBuf,
}

impl Server {
    /// Resident set size, KiB.
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// utime + stime so far, ns.
    pub fn cpu_ns(&self) -> Option<u64> {
        sys::proc_cpu_ns(self.pid)
    }

    /// Threads it runs now.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Fails (with the log's tail) when the process has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); its log ends:\n{}",
                self.peer.name(),
                self.log()
            )),
            Err(e) => Err(format!("{}: {e}", self.peer.name())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(peer: Peer, dir: &Path, program: &str, args: &[String]) -> Result<Server, String> {
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| format!("log: {e}"))?;
    let err = log.try_clone().map_err(|e| format!("log: {e}"))?;
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            format!("{program}: {e} (scripts/setup-system --peers installs rtpengine and janus)")
        })?;
    Ok(Server {
        peer,
        pid: child.id(),
        child,
        dir: dir.to_path_buf(),
    })
}

/// Polls `ready` every 100 ms for up to 15 s while the process lives.
fn wait_ready(server: &mut Server, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        server.check_alive()?;
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{} did not become ready in 15 s; its log ends:\n{}",
        server.peer.name(),
        server.log()
    ))
}

/// Fails when another process already holds an address `peer` is to listen on — a server left
/// from an interrupted run: its answers would pass for this one's readiness and its calls, and
/// its CPU would be missing from the table.
fn require_free(peer: Peer, udp: &[&str], tcp: &[&str]) -> Result<(), String> {
    let taken = |transport: &str, addr: &str, e: std::io::Error| {
        format!(
            "{}: {transport} {addr} is taken ({e}): another process (a server left from an \
             interrupted run?) holds it",
            peer.name()
        )
    };
    for addr in udp {
        UdpSocket::bind(addr).map_err(|e| taken("UDP", addr, e))?;
    }
    for addr in tcp {
        std::net::TcpListener::bind(addr).map_err(|e| taken("TCP", addr, e))?;
    }
    Ok(())
}

/// A fresh folder for one server's config and log.
pub fn server_dir(root: &Path, peer: Peer) -> Result<PathBuf, String> {
    let dir = root.join(peer.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// callbridge

/// Starts callbridge with `workers` media workers (tuned as `places` says): echo on user
/// `echo`, conferences on `conf=<room>` (mixed from the first caller) and, when `places` says,
/// two-party bridges on `bridge=<room>` (a hairpin, as BridgeCalls joins two calls).
pub fn start_callbridge(
    bin: &Path,
    root: &Path,
    workers: usize,
    places: &Places,
) -> Result<Server, String> {
    require_free(
        Peer::Callbridge,
        &[&places.sip.to_string()],
        &[&places.api.to_string()],
    )?;
    let dir = server_dir(root, Peer::Callbridge)?;
    let config = format!(
        r#"[sip]
listen = ["udp://{sip}"]
[media]
bind_ip = "127.0.0.1"
rtp_port_min = {lo}
rtp_port_max = {hi}
workers = {workers}
rtp_timeout_s = 600
{tuning}[api]
listen = "{api}"
tokens = ["{CALLBRIDGE_TOKEN}"]
[log]
level = "warn"
[store]
path = "{dir}/callbridge.db"
[recording]
dir = "{dir}/recordings"
[[route]]
user = "^echo$"
service = "echo"
[[route]]
user = "^conf=(?P<conference>[^@;]+)$"
service = "conference"
{bridge}"#,
        bridge = if places.bridge_route {
            "[[route]]\nuser = \"^bridge=(?P<conference>[^@;]+)$\"\nservice = \"conference\"\nhairpin = true\n"
        } else {
            ""
        },
        tuning = if places.tuned {
            "receive_at_tick = true\nio_uring_send = true\nio_uring_receive = true\n\
             socket_recv_buffer = 1048576\nsocket_send_buffer = 1048576\npin_workers = true\n"
        } else {
            ""
        },
        sip = places.sip,
        api = places.api,
        lo = places.media.0,
        hi = places.media.1,
        dir = dir.display(),
    );
    let path = dir.join("callbridge.toml");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let bin = std::fs::canonicalize(bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut server = spawn(
        Peer::Callbridge,
        &dir,
        &bin.to_string_lossy(),
        &[
            "run".into(),
            "--config".into(),
            path.to_string_lossy().into(),
        ],
    )?;
    wait_ready(&mut server, || crate::health(places.api).is_some())?;
    Ok(server)
}

// ---------------------------------------------------------------------------------------------
// SIPp uas

/// Starts SIPp's built-in `uas` scenario (INVITE → 180, 200 with SDP; ACK; BYE → 200) on
/// `sip`, in the normal scheduling class as a server runs: the call-setup workload's floor.
pub fn start_sipp_uas(root: &Path, sip: SocketAddrV4) -> Result<Server, String> {
    require_free(Peer::SippUas, &[&sip.to_string()], &[])?;
    let dir = server_dir(root, Peer::SippUas)?;
    let mut server = spawn(
        Peer::SippUas,
        &dir,
        "sipp",
        &[
            "-sn".into(),
            "uas".into(),
            "-i".into(),
            sip.ip().to_string(),
            "-p".into(),
            sip.port().to_string(),
            "-nostdin".into(),
            "-buff_size".into(),
            "4194304".into(),
        ],
    )?;
    // Ready once SIPp holds its port.
    wait_ready(&mut server, || UdpSocket::bind(sip).is_err())?;
    Ok(server)
}

// ---------------------------------------------------------------------------------------------
// rtpengine

/// Starts rtpengine in the foreground, userspace only (`table = -1`), on 127.0.0.1, with
/// `threads` worker threads and deleted calls gone at once (`delete-delay = 0`).
pub fn start_rtpengine(
    root: &Path,
    threads: usize,
    places: &Places,
) -> Result<(Server, Ng), String> {
    require_free(Peer::Rtpengine, &[RTPENGINE_NG], &[])?;
    let dir = server_dir(root, Peer::Rtpengine)?;
    let config = format!(
        "[rtpengine]\ntable = -1\ninterface = 127.0.0.1\nlisten-ng = {RTPENGINE_NG}\n\
         port-min = {lo}\nport-max = {hi}\nforeground = true\nlog-stderr = true\nlog-level = 4\n\
         pidfile = {dir}/rtpengine.pid\ndelete-delay = 0\ntimeout = 600\nnum-threads = {threads}\n",
        lo = places.media.0,
        hi = places.media.1,
        dir = dir.display(),
    );
    let path = dir.join("rtpengine.conf");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut server = spawn(
        Peer::Rtpengine,
        &dir,
        "rtpengine",
        &[format!("--config-file={}", path.display())],
    )?;
    let ng = Ng::new()?;
    wait_ready(&mut server, || {
        ng.call("ping", Vec::new())
            .map(|r| text(&r, "result").as_deref() == Some("pong"))
            .unwrap_or(false)
    })?;
    Ok((server, ng))
}

/// rtpengine's ng control protocol: `<cookie> <bencoded dict>` over UDP, the reply carrying
/// the same cookie. Cookies are unique per request (rtpengine caches replies by cookie).
pub struct Ng {
    sock: UdpSocket,
    cookie: Cell<u64>,
}

impl Ng {
    pub fn new() -> Result<Ng, String> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("ng socket: {e}"))?;
        sock.connect(RTPENGINE_NG)
            .map_err(|e| format!("ng connect: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| format!("ng socket: {e}"))?;
        Ok(Ng {
            sock,
            cookie: Cell::new(u64::from(std::process::id()) << 32),
        })
    }

    /// One command; an `error` result is an Err with rtpengine's reason.
    pub fn call(&self, command: &str, params: Vec<(&str, Bencode)>) -> Result<Bencode, String> {
        let mut dict: HashMap<Vec<u8>, Bencode> = params
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        dict.insert(b"command".to_vec(), bytes(command));
        let body = serde_bencode::to_bytes(&Bencode::Dict(dict))
            .map_err(|e| format!("ng {command}: {e}"))?;
        self.cookie.set(self.cookie.get() + 1);
        let cookie = format!("{:x}", self.cookie.get());
        let mut datagram = cookie.clone().into_bytes();
        datagram.push(b' ');
        datagram.extend_from_slice(&body);
        let mut buf = vec![0u8; 65536];
        for _attempt in 0..4 {
            self.sock
                .send(&datagram)
                .map_err(|e| format!("ng {command}: {e}"))?;
            let deadline = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < deadline {
                let Ok(n) = self.sock.recv(&mut buf) else {
                    break;
                };
                let reply = &buf[..n];
                let Some(space) = reply.iter().position(|&b| b == b' ') else {
                    continue;
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue;
                }
                let value: Bencode = serde_bencode::from_bytes(&reply[space + 1..])
                    .map_err(|e| format!("ng {command} reply: {e}"))?;
                if text(&value, "result").as_deref() == Some("error") {
                    return Err(format!(
                        "ng {command}: {}",
                        text(&value, "error-reason").unwrap_or_default()
                    ));
                }
                return Ok(value);
            }
        }
        Err(format!("ng {command}: no reply from {RTPENGINE_NG}"))
    }
}

pub fn bytes(s: &str) -> Bencode {
    Bencode::Bytes(s.as_bytes().to_vec())
}

pub fn list(items: &[&str]) -> Bencode {
    Bencode::List(items.iter().map(|s| bytes(s)).collect())
}

pub fn dict(items: Vec<(&str, Bencode)>) -> Bencode {
    Bencode::Dict(
        items
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

/// A string member of a bencoded dict.
pub fn text(value: &Bencode, key: &str) -> Option<String> {
    match value {
        Bencode::Dict(d) => match d.get(key.as_bytes())? {
            Bencode::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Janus

/// Starts Janus in the foreground with only the AudioBridge plugin and the HTTP transport,
/// on 127.0.0.1:18088, plain-RTP participants' ports in the shared server range.
pub fn start_janus(root: &Path, places: &Places) -> Result<(Server, Janus), String> {
    require_free(Peer::Janus, &[], &[JANUS_LISTEN])?;
    let dir = server_dir(root, Peer::Janus)?;
    let lib = "/usr/lib/x86_64-linux-gnu/janus";
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "janus.jcfg",
        format!(
            "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{lib}/plugins\"\n \
             transports_folder = \"{lib}/transports\"\n events_folder = \"{lib}/events\"\n \
             loggers_folder = \"{lib}/loggers\"\n debug_level = 3\n session_timeout = 0\n \
             interface = \"127.0.0.1\"\n}}\n\
             media: {{ rtp_port_range = \"50000-50999\" }}\n\
             nat: {{ nice_debug = false\n ice_enforce_list = \"lo\" }}\n\
             plugins: {{ disable = \"libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so\" }}\n\
             transports: {{ disable = \"libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_websockets.so\" }}\n\
             loggers: {{ disable = \"libjanus_jsonlog.so\" }}\n\
             events: {{ broadcast = false }}\n",
            d = dir.display(),
        ),
    )?;
    write(
        "janus.transport.http.jcfg",
        "general: { json = \"compact\"  base_path = \"/janus\"  http = true  port = 18088  ip = \"127.0.0.1\"  https = false }\n\
         admin: { admin_http = false  admin_https = false }\n"
            .into(),
    )?;
    write(
        "janus.plugin.audiobridge.jcfg",
        format!(
            "general: {{ rtp_port_range = \"{}-{}\"  local_ip = \"127.0.0.1\"  events = false }}\n",
            places.media.0, places.media.1
        ),
    )?;
    let mut server = spawn(
        Peer::Janus,
        &dir,
        "janus",
        &[
            "-F".into(),
            dir.to_string_lossy().into(),
            "-C".into(),
            dir.join("janus.jcfg").to_string_lossy().into(),
            "-o".into(),
        ],
    )?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    wait_ready(&mut server, || {
        http.get(format!("{JANUS_HTTP}/info"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v.to_string().contains("janus.plugin.audiobridge"))
    })?;
    let janus = Janus::new(http)?;
    Ok((server, janus))
}

/// One Janus session over the HTTP API; one plugin handle per participant.
pub struct Janus {
    http: reqwest::blocking::Client,
    session: u64,
    transaction: u64,
    /// Events the long poll returned that nobody has asked for yet, by sender handle.
    pending: BTreeMap<u64, Vec<Value>>,
}

impl Janus {
    fn new(http: reqwest::blocking::Client) -> Result<Janus, String> {
        let mut janus = Janus {
            http,
            session: 0,
            transaction: 0,
            pending: BTreeMap::new(),
        };
        let created = janus.post(JANUS_HTTP.to_string(), json!({"janus": "create"}))?;
        janus.session = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus create: {created}"))?;
        Ok(janus)
    }

    fn post(&mut self, url: String, mut body: Value) -> Result<Value, String> {
        self.transaction += 1;
        body["transaction"] = json!(format!("t{}", self.transaction));
        let reply: Value = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| format!("janus {url}: {e}"))?;
        if reply["janus"] == "error" {
            return Err(format!("janus {url}: {reply}"));
        }
        Ok(reply)
    }

    /// A new AudioBridge handle.
    pub fn attach(&mut self) -> Result<u64, String> {
        let url = format!("{JANUS_HTTP}/{}", self.session);
        let r = self.post(
            url,
            json!({"janus": "attach", "plugin": "janus.plugin.audiobridge"}),
        )?;
        r["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus attach: {r}"))
    }

    /// A plugin request; synchronous ones answer in `plugindata.data`, asynchronous ones
    /// with an ack (the result then arrives as an event: [`Janus::event`]).
    pub fn message(&mut self, handle: u64, body: Value) -> Result<Value, String> {
        let url = format!("{JANUS_HTTP}/{}/{handle}", self.session);
        let r = self.post(url, json!({"janus": "message", "body": body}))?;
        let data = &r["plugindata"]["data"];
        if data.get("error").is_some() {
            return Err(format!("janus request {body}: {data}"));
        }
        Ok(r)
    }

    /// The next plugin event sent by `handle` (long polls the session).
    pub fn event(&mut self, handle: u64) -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(queue) = self.pending.get_mut(&handle) {
                if !queue.is_empty() {
                    return Ok(queue.remove(0));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("janus: no event from handle {handle} in 30 s"));
            }
            let url = format!("{JANUS_HTTP}/{}?maxev=100", self.session);
            let r: Value = self
                .http
                .get(&url)
                .send()
                .and_then(|r| r.json())
                .map_err(|e| format!("janus poll: {e}"))?;
            let events = match r {
                Value::Array(v) => v,
                other => vec![other],
            };
            for e in events {
                if e["janus"] == "event" {
                    if let Some(sender) = e["sender"].as_u64() {
                        self.pending.entry(sender).or_default().push(e);
                    }
                }
            }
        }
    }

    /// Ends the session (its handles with it).
    pub fn destroy(&mut self) {
        let url = format!("{JANUS_HTTP}/{}", self.session);
        let _ = self.post(url, json!({"janus": "destroy"}));
    }
}
