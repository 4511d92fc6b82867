//! Kamailio (Debian package `kamailio`) as a stateful, record-routing SIP proxy in front of
//! callbridge: the config is written into the guard's temp dir (no database modules), the proxy
//! runs in the foreground on 127.0.0.1 and is stopped when the guard drops. Every request and
//! reply it handles is logged on one `cbtest:` line, so a test can tell what passed through it
//! and with which Route and Record-Route. It must not start or touch a system Kamailio service.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_udp_tcp_port;

/// A running Kamailio; its process group gets SIGTERM (then SIGKILL) on drop.
pub struct Kamailio {
    child: Option<Child>,
    /// The UDP port it listens on at 127.0.0.1.
    pub port: u16,
    /// callbridge's SIP port at 127.0.0.1, where initial requests go.
    pub callbridge_port: u16,
    pub dir: tempfile::TempDir,
}

/// A request as Kamailio received it, before it removed its own Route.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// `ip:port` it came from.
    pub source: String,
    pub request_uri: String,
    /// Every Route header value, comma-joined; `<null>` when there was none.
    pub route: String,
}

/// A reply as Kamailio received it from the next hop.
#[derive(Debug, Clone)]
pub struct SeenReply {
    pub status: u16,
    /// The CSeq method.
    pub method: String,
    pub source: String,
    /// Every Record-Route value, comma-joined; `<null>` when there was none.
    pub record_route: String,
}

impl Kamailio {
    /// Starts a proxy that record-routes initial INVITE, SUBSCRIBE and REFER, loose-routes
    /// in-dialog requests, relays requests from callbridge toward their Request-URI and all
    /// others to callbridge at 127.0.0.1:`callbridge_port`. Returns once it answers an
    /// OPTIONS. Panics, naming scripts/setup-system, when Kamailio is not installed.
    pub fn start(callbridge_port: u16) -> Kamailio {
        Self::start_config(callbridge_port, |port, _dir| {
            proxy_config(port, callbridge_port)
        })
    }

    /// Starts Kamailio on the config `config` writes for its UDP port on 127.0.0.1 (and its
    /// temp dir, for files the config names); `callbridge_port` is only remembered.
    pub fn start_config(
        callbridge_port: u16,
        config: impl Fn(u16, &std::path::Path) -> String,
    ) -> Kamailio {
        let binary = binary();
        let mut last_log = String::new();
        // The port is picked free, then bound by Kamailio: another process may take it in
        // between, so a proxy that exits during start-up gets a new port.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_udp_tcp_port();
            let text = config(port, dir.path());
            let config = dir.path().join("kamailio.cfg");
            std::fs::write(&config, text).expect("write cfg");
            let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log file");
            let child = Command::new(&binary)
                // -DD: stay in the foreground (children are still forked); -E: log to stderr;
                // -Y: runtime dir in the temp dir instead of /run/kamailio.
                .args(["-DD", "-E", "-f"])
                .arg(&config)
                .arg("-Y")
                .arg(dir.path())
                .args(["-m", "32", "-M", "4", "-w"])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                // Its own process group, so drop stops the worker processes too.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
            let mut proxy = Kamailio {
                child: Some(child),
                port,
                callbridge_port,
                dir,
            };
            if proxy.wait_ready() {
                return proxy;
            }
            last_log = proxy.log();
            proxy.stop();
        }
        panic!("kamailio never answered OPTIONS; log:\n{last_log}");
    }

    /// Kamailio's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// Every request received so far (the readiness probe left out), in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        let probe_uri = format!("sip:127.0.0.1:{}", self.port);
        self.log()
            .lines()
            .filter_map(|line| line.split_once("cbtest: request ").map(|(_, rest)| rest))
            .filter_map(|rest| {
                let (method, rest) = rest.split_once(" from ")?;
                let (source, rest) = rest.split_once(" ruri=")?;
                let (request_uri, route) = rest.split_once(" route=")?;
                Some(SeenRequest {
                    method: method.to_string(),
                    source: source.to_string(),
                    request_uri: request_uri.to_string(),
                    route: route.to_string(),
                })
            })
            .filter(|r| !(r.method == "OPTIONS" && r.request_uri == probe_uri))
            .collect()
    }

    /// Every reply received so far, in arrival order.
    pub fn replies(&self) -> Vec<SeenReply> {
        self.log()
            .lines()
            .filter_map(|line| line.split_once("cbtest: reply ").map(|(_, rest)| rest))
            .filter_map(|rest| {
                let (status, rest) = rest.split_once(' ')?;
                let (method, rest) = rest.split_once(" from ")?;
                let (source, record_route) = rest.split_once(" record-route=")?;
                Some(SeenReply {
                    status: status.parse().ok()?,
                    method: method.to_string(),
                    source: source.to_string(),
                    record_route: record_route.to_string(),
                })
            })
            .collect()
    }

    /// The Route value callbridge must put on its in-dialog requests: this proxy's own
    /// loose-routing URI, as it recorded it (parameters such as `ftag` follow).
    pub fn route_uri_prefix(&self) -> String {
        format!("<sip:127.0.0.1:{};lr", self.port)
    }

    /// Runs SIPp against the proxy on a thread; join for its output.
    pub fn sipp_in_background(&self, args: &[&str]) -> super::BackgroundSipp {
        super::sipp_in_background_to(self.port, self.dir.path(), args)
    }

    /// Probes with OPTIONS until a 200 comes back; false if the process exits or 10 s pass.
    fn wait_ready(&mut self) -> bool {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let local = probe.local_addr().expect("probe addr").port();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        let mut attempt = 0;
        while Instant::now() < deadline {
            if super::exited(&mut self.child) {
                return false;
            }
            attempt += 1;
            let options = format!(
                "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKprobe{attempt}\r\n\
                 From: <sip:probe@127.0.0.1:{local}>;tag=probe\r\n\
                 To: <sip:127.0.0.1:{port}>\r\n\
                 Call-ID: probe-{local}@127.0.0.1\r\n\
                 CSeq: {attempt} OPTIONS\r\n\
                 Max-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n",
                port = self.port
            );
            let _ = probe.send_to(options.as_bytes(), ("127.0.0.1", self.port));
            if let Ok(n) = probe.recv(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return true;
                }
            }
        }
        false
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = -(child.id() as i32);
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // The main process waits for its workers; any straggler goes too.
                unsafe {
                    libc::kill(group, libc::SIGKILL);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kamailio binary: on PATH, or in /usr/sbin where Debian installs it (not on a normal
/// user's PATH).
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("kamailio"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kamailio is not installed: run ./scripts/setup-system (as root), which installs \
                 the Debian package kamailio"
            )
        })
}

/// A minimal stateful proxy: tm, sl, rr, maxfwd, siputils, textops, pv, xlog; UDP on 127.0.0.1
/// only.
fn proxy_config(port: u16, callbridge_port: u16) -> String {
    format!(
        "#!KAMAILIO\n\
         #!define CALLBRIDGE_PORT {callbridge_port}\n\
         listen=udp:127.0.0.1:{port}\n\
         {PROXY_CONFIG}"
    )
}

const PROXY_CONFIG: &str = r#"
debug=2
log_stderror=yes
# One UDP worker: with more, a reply and the request right behind it (callbridge's 202 to a
# REFER, then its NOTIFY) are handled by different processes and may leave in either order,
# which SIPp's scripted scenarios take for an unexpected message.
children=1
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "pv.so"
loadmodule "xlog.so"

request_route {
    xlog("L_NOTICE", "cbtest: request $rm from $si:$sp ruri=$ru route=$(hdr(Route)[*])\n");
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    # The harness's readiness probe: OPTIONS to the proxy itself.
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {
        sl_send_reply("200", "Ready");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    if (has_totag()) {
        # In-dialog, following the route set we recorded (callbridge's BYE, NOTIFY, ...).
        if (loose_route()) {
            route(RELAY);
        }
        # The ACK of a negative final reply follows its INVITE transaction.
        if (is_method("ACK") && t_check_trans()) {
            route(RELAY);
        }
        # No Route: SIPp's scenarios send in-dialog requests to the proxy's address without
        # a route set; they go to callbridge below like initial requests.
    } else if (is_method("INVITE|SUBSCRIBE|REFER")) {
        record_route();
    }
    # From callbridge: toward its Request-URI (a call it places).
    if ($si == "127.0.0.1" && $sp == CALLBRIDGE_PORT) {
        route(RELAY);
    }
    # Everything else goes to callbridge.
    $rd = "127.0.0.1";
    $rp = CALLBRIDGE_PORT;
    route(RELAY);
}

route[RELAY] {
    xlog("L_NOTICE", "cbtest: relay $rm to $ru\n");
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}

onreply_route {
    xlog("L_NOTICE", "cbtest: reply $rs $rm from $si:$sp record-route=$(hdr(Record-Route)[*])\n");
}
"#;
