//! A minimal SIP UAC over UDP: INVITE with an SDP offer (PCMU), 1xx/2xx handling, ACK,
//! INVITE retransmission (RFC 3261 Timer A/B), BYE with Timer E/F, and answers to the
//! requests a UAS may send in a dialog (BYE → 200).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::stream::Rng;
use crate::sys;

pub struct UacConfig {
    pub server: SocketAddrV4,
    pub user: String,
    pub t1: Duration,
    pub t2: Duration,
    /// INVITEs (and BYEs) per second.
    pub rate: f64,
    /// Per call: its Request-URI user (when empty, or for calls past its end, `user`).
    pub users: Vec<String>,
    /// Per call: the payload type it offers, 0 (PCMU) or 111 (Opus 48 kHz); default PCMU.
    pub payload_types: Vec<u8>,
    /// Offer SDES-SRTP (RTP/SAVP, AES_CM_128_HMAC_SHA1_80) instead of plain RTP.
    pub srtp: bool,
}

impl UacConfig {
    fn user(&self, i: usize) -> &str {
        self.users.get(i).map_or(&self.user, |u| u)
    }

    fn payload_type(&self, i: usize) -> u8 {
        self.payload_types.get(i).copied().unwrap_or(0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Idle,
    /// INVITE sent, nothing heard yet: retransmitting.
    Calling,
    /// 1xx heard: waiting for the final response.
    Proceeding,
    Established,
    Failed,
    /// BYE sent.
    Closing,
    Closed,
}

struct Call {
    call_id: String,
    from_tag: String,
    invite: Vec<u8>,
    state: State,
    to_header: Option<String>,
    remote_target: Option<String>,
    media: Option<SocketAddrV4>,
    ack: Option<Vec<u8>>,
    bye: Option<Vec<u8>>,
    retx_at: Option<Instant>,
    interval: Duration,
    give_up_at: Option<Instant>,
    bye_ok: bool,
}

#[derive(Default, Clone)]
pub struct SipStats {
    pub invite_retransmissions: u64,
    pub bye_retransmissions: u64,
    /// ACKs sent again for a retransmitted 2xx.
    pub ack_resent: u64,
    /// BYEs received from the server (calls it ended on its own).
    pub remote_byes: u64,
    /// 2xx arriving after we had given the call up (ACKed and BYEd at once).
    pub late_answers: u64,
    /// Why calls failed to set up, with counts.
    pub failures: BTreeMap<String, u64>,
}

pub struct SetupResult {
    pub established: usize,
    pub failed: usize,
    pub seconds: f64,
}

pub struct TeardownResult {
    pub bye_sent: usize,
    pub bye_ok: usize,
    pub seconds: f64,
}

pub struct Uac {
    sock: UdpSocket,
    local: SocketAddrV4,
    cfg: UacConfig,
    run: String,
    calls: Vec<Call>,
    pub stats: SipStats,
    rng: Rng,
}

impl Uac {
    /// `sock` is bound to the tool's address (which the SDP offers announce); `rtp_ports[i]` is
    /// what call i offers.
    pub fn new(sock: UdpSocket, cfg: UacConfig, rtp_ports: &[u16]) -> Uac {
        let local = match sock.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            _ => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        };
        let mut rng = Rng::seeded();
        let run = format!("lg{:08x}", rng.next_u64() as u32);
        let calls = rtp_ports
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                let call_id = format!("{run}-{i}@loadgen");
                let from_tag = format!("{:x}", rng.next_u64());
                let branch = format!("z9hG4bK-{run}-{i}-i");
                let invite = invite(&cfg, local, &call_id, &from_tag, &branch, port, i);
                Call {
                    call_id,
                    from_tag,
                    invite,
                    state: State::Idle,
                    to_header: None,
                    remote_target: None,
                    media: None,
                    ack: None,
                    bye: None,
                    retx_at: None,
                    interval: cfg.t1,
                    give_up_at: None,
                    bye_ok: false,
                }
            })
            .collect();
        Uac {
            sock,
            local,
            cfg,
            run,
            calls,
            stats: SipStats::default(),
            rng,
        }
    }

    /// The RTP address the server answered for call `i`, if it is established.
    pub fn media(&self, i: usize) -> Option<SocketAddrV4> {
        let c = &self.calls[i];
        (c.state == State::Established).then_some(c.media).flatten()
    }

    fn send(&self, bytes: &[u8]) {
        // The server address was checked to be loopback when the config was built.
        let _ = self.sock.send_to(bytes, self.cfg.server);
    }

    fn fail(&mut self, i: usize, why: String) {
        let c = &mut self.calls[i];
        c.state = State::Failed;
        c.retx_at = None;
        c.give_up_at = None;
        *self.stats.failures.entry(why).or_insert(0) += 1;
    }

    /// Sends every INVITE (paced at `rate`) and waits for each call to be established or to
    /// fail (Timer B = 64·T1 without any response; 64·T1 after the INVITE without a final one).
    pub fn setup(&mut self) -> SetupResult {
        let start = Instant::now();
        let n = self.calls.len();
        let timer_b = self.cfg.t1 * 64;
        let mut next = 0;
        let mut last_scan = start;
        // Bounded: the last INVITE goes out at n / rate; nothing can live past Timer B after it.
        let hard_end = start + Duration::from_secs_f64(n as f64 / self.cfg.rate) + timer_b * 2;
        loop {
            let now = Instant::now();
            while next < n && start + Duration::from_secs_f64(next as f64 / self.cfg.rate) <= now {
                let c = &mut self.calls[next];
                c.state = State::Calling;
                c.retx_at = Some(now + self.cfg.t1);
                c.interval = self.cfg.t1;
                c.give_up_at = Some(now + timer_b);
                let bytes = c.invite.clone();
                self.send(&bytes);
                next += 1;
            }
            if now >= last_scan + Duration::from_millis(5) {
                last_scan = now;
                self.scan_timers(now);
            }
            let pending = self.calls[..next]
                .iter()
                .any(|c| matches!(c.state, State::Calling | State::Proceeding | State::Closing));
            if next == n && !pending {
                break;
            }
            if now >= hard_end {
                for i in 0..n {
                    if matches!(
                        self.calls[i].state,
                        State::Idle | State::Calling | State::Proceeding
                    ) {
                        self.fail(i, "setup timed out".into());
                    }
                }
                break;
            }
            let wait = if next < n { 1 } else { 5 };
            self.pump(wait);
        }
        let established = self
            .calls
            .iter()
            .filter(|c| c.state == State::Established)
            .count();
        SetupResult {
            established,
            failed: n - established,
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// Answers the server while media flows (2xx retransmissions, BYE) until `stop`.
    pub fn serve(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.pump(20);
            self.scan_timers(Instant::now());
        }
    }

    /// BYE every established call (paced at `rate`), retransmitting per Timer E until the
    /// final response or Timer F (64·T1).
    pub fn teardown(&mut self) -> TeardownResult {
        let start = Instant::now();
        let targets: Vec<usize> = (0..self.calls.len())
            .filter(|&i| self.calls[i].state == State::Established)
            .collect();
        let timer_f = self.cfg.t1 * 64;
        let hard_end =
            start + Duration::from_secs_f64(targets.len() as f64 / self.cfg.rate) + timer_f * 2;
        let mut next = 0;
        let mut last_scan = start;
        loop {
            let now = Instant::now();
            while next < targets.len()
                && start + Duration::from_secs_f64(next as f64 / self.cfg.rate) <= now
            {
                let i = targets[next];
                if self.calls[i].state == State::Established {
                    self.send_bye(i, now);
                }
                next += 1;
            }
            if now >= last_scan + Duration::from_millis(5) {
                last_scan = now;
                self.scan_timers(now);
            }
            let closing = self.calls.iter().any(|c| c.state == State::Closing);
            if (next == targets.len() && !closing) || now >= hard_end {
                break;
            }
            self.pump(if next < targets.len() { 1 } else { 5 });
        }
        let bye_ok = targets.iter().filter(|&&i| self.calls[i].bye_ok).count();
        TeardownResult {
            bye_sent: targets.len(),
            bye_ok,
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// A request in call `i`'s dialog (ACK, BYE) to `target`: a fresh branch, our From tag,
    /// the dialog's To (with the peer's tag).
    fn dialog_request(
        &mut self,
        i: usize,
        method: &str,
        cseq: u32,
        target: &str,
        to: &str,
    ) -> Vec<u8> {
        let branch = format!(
            "z9hG4bK-{}-{i}-{}{:x}",
            self.run,
            method.to_ascii_lowercase(),
            self.rng.next_u64() as u16
        );
        let c = &self.calls[i];
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:loadgen@{ip}>;tag={tag}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            local = self.local,
            ip = self.local.ip(),
            tag = c.from_tag,
            cid = c.call_id,
        )
        .into_bytes()
    }

    fn send_bye(&mut self, i: usize, now: Instant) {
        let target = self.calls[i]
            .remote_target
            .clone()
            .unwrap_or_else(|| format!("sip:{}@{}", self.cfg.user(i), self.cfg.server));
        let to = self.calls[i].to_header.clone().unwrap_or_default();
        let bytes = self.dialog_request(i, "BYE", 2, &target, &to);
        let c = &mut self.calls[i];
        c.state = State::Closing;
        c.interval = self.cfg.t1;
        c.retx_at = Some(now + self.cfg.t1);
        c.give_up_at = Some(now + self.cfg.t1 * 64);
        c.bye = Some(bytes.clone());
        self.send(&bytes);
    }

    fn scan_timers(&mut self, now: Instant) {
        for i in 0..self.calls.len() {
            let state = self.calls[i].state;
            if !matches!(state, State::Calling | State::Proceeding | State::Closing) {
                continue;
            }
            if self.calls[i].give_up_at.is_some_and(|t| now >= t) {
                match state {
                    State::Calling => self.fail(i, "no response (Timer B)".into()),
                    State::Proceeding => self.fail(i, "no final response in 64*T1".into()),
                    _ => {
                        // Timer F: the BYE was never answered.
                        self.calls[i].state = State::Closed;
                        self.calls[i].retx_at = None;
                    }
                }
                continue;
            }
            let c = &mut self.calls[i];
            let Some(at) = c.retx_at else { continue };
            if now < at {
                continue;
            }
            let bytes = match state {
                State::Calling => {
                    c.interval *= 2; // Timer A doubles without a cap
                    self.stats.invite_retransmissions += 1;
                    c.invite.clone()
                }
                State::Closing => {
                    c.interval = (c.interval * 2).min(self.cfg.t2); // Timer E
                    self.stats.bye_retransmissions += 1;
                    c.bye.clone().unwrap_or_default()
                }
                _ => continue,
            };
            c.retx_at = Some(now + c.interval);
            self.send(&bytes);
        }
    }

    /// Waits up to `timeout_ms` for datagrams and handles everything queued.
    fn pump(&mut self, timeout_ms: i32) {
        if !sys::poll_readable(self.sock.as_raw_fd(), timeout_ms) {
            return;
        }
        let mut buf = [0u8; 65536];
        for _ in 0..4096 {
            match self.sock.recv_from(&mut buf) {
                Ok((len, src)) => {
                    let data = buf[..len].to_vec();
                    self.handle(&data, src);
                }
                Err(_) => break,
            }
        }
    }

    fn call_index(&self, call_id: &str) -> Option<usize> {
        let rest = call_id.strip_prefix(&self.run)?.strip_prefix('-')?;
        let i: usize = rest.split('@').next()?.parse().ok()?;
        (i < self.calls.len() && self.calls[i].call_id == call_id).then_some(i)
    }

    fn handle(&mut self, data: &[u8], src: SocketAddr) {
        let Some(msg) = Message::parse(data) else {
            return;
        };
        if msg.start.starts_with("SIP/2.0 ") {
            self.on_response(&msg);
        } else {
            self.on_request(&msg, src);
        }
    }

    fn on_request(&mut self, msg: &Message, src: SocketAddr) {
        let method = msg.start.split(' ').next().unwrap_or("");
        if method == "ACK" {
            return;
        }
        let (code, reason) = match method {
            "BYE" => (200, "OK"),
            "OPTIONS" => (200, "OK"),
            _ => (501, "Not Implemented"),
        };
        if method == "BYE" {
            if let Some(i) = msg.get("call-id").and_then(|id| self.call_index(id)) {
                let c = &mut self.calls[i];
                if matches!(c.state, State::Established | State::Closing) {
                    c.state = State::Closed;
                    c.retx_at = None;
                    self.stats.remote_byes += 1;
                }
            }
        }
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for v in msg.all("via") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = msg.get(name) {
                out.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        // A source our address cannot reach (off loopback while we are on it) fails here.
        let _ = self.sock.send_to(out.as_bytes(), src);
    }

    fn on_response(&mut self, msg: &Message) {
        let Some(code) = msg
            .start
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
        else {
            return;
        };
        let Some(i) = msg.get("call-id").and_then(|id| self.call_index(id)) else {
            return;
        };
        let method = msg
            .get("cseq")
            .and_then(|c| c.split_whitespace().nth(1))
            .unwrap_or("");
        match method {
            "INVITE" => self.on_invite_response(i, code, msg),
            "BYE" if code >= 200 => {
                let c = &mut self.calls[i];
                if c.state == State::Closing {
                    c.state = State::Closed;
                    c.retx_at = None;
                    c.bye_ok = (200..300).contains(&code);
                }
            }
            _ => {}
        }
    }

    fn on_invite_response(&mut self, i: usize, code: u16, msg: &Message) {
        let state = self.calls[i].state;
        if code < 200 {
            if state == State::Calling {
                let c = &mut self.calls[i];
                c.state = State::Proceeding;
                c.retx_at = None; // Timer A stops on a provisional response
                c.give_up_at = Some(Instant::now() + self.cfg.t1 * 64);
            }
            return;
        }
        let to = msg.get("to").unwrap_or("").to_string();
        if code >= 300 {
            // ACK for a non-2xx: same branch as the INVITE, part of its transaction.
            let c = &self.calls[i];
            let ack = format!(
                "ACK sip:{user}@{server} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-{run}-{i}-i;rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:loadgen@{ip}>;tag={tag}\r\n\
                 To: {to}\r\n\
                 Call-ID: {cid}\r\n\
                 CSeq: 1 ACK\r\n\
                 Content-Length: 0\r\n\r\n",
                user = self.cfg.user(i),
                server = self.cfg.server,
                local = self.local,
                run = self.run,
                ip = self.local.ip(),
                tag = c.from_tag,
                cid = c.call_id,
            );
            self.send(ack.as_bytes());
            if matches!(state, State::Calling | State::Proceeding) {
                let reason = msg.start.splitn(3, ' ').nth(2).unwrap_or("").trim();
                self.fail(i, format!("{code} {reason}"));
            }
            return;
        }
        // 2xx.
        match state {
            State::Calling | State::Proceeding | State::Failed => {}
            _ => {
                // A retransmitted 2xx: our ACK was lost, send it again.
                if let Some(ack) = self.calls[i].ack.clone() {
                    self.stats.ack_resent += 1;
                    self.send(&ack);
                }
                return;
            }
        }
        let target = msg
            .get("contact")
            .map(contact_uri)
            .unwrap_or_else(|| format!("sip:{}@{}", self.cfg.user(i), self.cfg.server));
        let ack = self.dialog_request(i, "ACK", 1, &target, &to);
        let c = &mut self.calls[i];
        c.to_header = Some(to);
        c.remote_target = Some(target);
        c.ack = Some(ack.clone());
        self.send(&ack);
        if state == State::Failed {
            // We gave up on this call before the answer came: end the dialog at once.
            self.stats.late_answers += 1;
            self.calls[i].state = State::Established;
            self.send_bye(i, Instant::now());
            return;
        }
        match parse_sdp(msg.body, *self.local.ip(), self.cfg.payload_type(i)) {
            Ok(addr) => {
                let c = &mut self.calls[i];
                c.media = Some(addr);
                c.state = State::Established;
                c.retx_at = None;
                c.give_up_at = None;
            }
            Err(why) => {
                self.fail(i, format!("bad SDP answer: {why}"));
                self.calls[i].state = State::Established;
                self.send_bye(i, Instant::now());
            }
        }
    }
}

fn invite(
    cfg: &UacConfig,
    local: SocketAddrV4,
    call_id: &str,
    tag: &str,
    branch: &str,
    rtp_port: u16,
    i: usize,
) -> Vec<u8> {
    let ip = local.ip();
    let sdp = format!(
        "v=0\r\n\
         o=loadgen {sess} 1 IN IP4 {ip}\r\n\
         s=loadgen\r\n\
         c=IN IP4 {ip}\r\n\
         t=0 0\r\n\
         m=audio {rtp_port} {proto} {pt}\r\n\
         a=rtpmap:{pt} {rtpmap}\r\n\
         a=ptime:20\r\n\
         {crypto}a=sendrecv\r\n",
        sess = 1000 + i,
        proto = if cfg.srtp { "RTP/SAVP" } else { "RTP/AVP" },
        // A fixed key: the tool never encrypts (SRTP only shapes what the server holds).
        crypto = if cfg.srtp {
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
        } else {
            ""
        },
        pt = cfg.payload_type(i),
        rtpmap = if cfg.payload_type(i) == 0 {
            "PCMU/8000"
        } else {
            "opus/48000/2"
        },
    );
    format!(
        "INVITE sip:{user}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:loadgen@{ip}>;tag={tag}\r\n\
         To: <sip:{user}@{server}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:loadgen@{local}>\r\n\
         User-Agent: callbridge-loadgen\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        user = cfg.user(i),
        server = cfg.server,
        len = sdp.len(),
    )
    .into_bytes()
}

/// The URI inside a Contact value (`<sip:...>;params` or a bare URI).
fn contact_uri(v: &str) -> String {
    if let (Some(a), Some(b)) = (v.find('<'), v.find('>')) {
        if a < b {
            return v[a + 1..b].to_string();
        }
    }
    v.split(';').next().unwrap_or(v).trim().to_string()
}

/// The RTP address of the first audio stream of an SDP answer; it must offer PCMU (0) and be
/// on loopback.
/// The answer's audio address, which our address `local` must be able to reach (see
/// `ports::require_reachable`).
fn parse_sdp(body: &str, local: Ipv4Addr, pt: u8) -> Result<SocketAddrV4, String> {
    let pt = pt.to_string();
    let mut session_c: Option<&str> = None;
    let mut media_c: Option<&str> = None;
    let mut media: Option<(u16, bool)> = None;
    let mut in_audio = false;
    for line in body.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if media.is_some() {
                break; // only the first audio stream
            }
            let f: Vec<&str> = m.split_whitespace().collect();
            in_audio = f.first() == Some(&"audio");
            if in_audio {
                let port = f.get(1).and_then(|p| p.parse().ok()).ok_or("bad m= port")?;
                media = Some((port, f.iter().skip(3).any(|p| *p == pt)));
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let addr = c.split_whitespace().nth(2);
            if in_audio {
                media_c = addr;
            } else if media.is_none() {
                session_c = addr;
            }
        }
    }
    let (port, offered) = media.ok_or("no m=audio line")?;
    if port == 0 {
        return Err("audio stream rejected (port 0)".into());
    }
    if !offered {
        return Err(format!("payload type {pt} (offered) not in the answer"));
    }
    let ip: Ipv4Addr = media_c
        .or(session_c)
        .ok_or("no c= line")?
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| "c= is not an IPv4 address".to_string())?;
    crate::ports::require_reachable(SocketAddrV4::new(ip, port).into(), local, "media address")
}

/// A parsed SIP message: start line, headers in order, body.
struct Message<'a> {
    start: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

const COMPACT: [(&str, &str); 7] = [
    ("call-id", "i"),
    ("from", "f"),
    ("to", "t"),
    ("via", "v"),
    ("contact", "m"),
    ("content-length", "l"),
    ("content-type", "c"),
];

impl<'a> Message<'a> {
    fn parse(data: &'a [u8]) -> Option<Message<'a>> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = match text.find("\r\n\r\n") {
            Some(p) => (&text[..p], &text[p + 4..]),
            None => match text.find("\n\n") {
                Some(p) => (&text[..p], &text[p + 2..]),
                None => (text, ""),
            },
        };
        let mut lines = head.lines();
        let start = lines.next()?.trim_end();
        let headers: Vec<(&str, &str)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim(), v.trim()))
            .collect();
        let mut msg = Message {
            start,
            headers,
            body,
        };
        if let Some(len) = msg
            .get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            if len <= body.len() && body.is_char_boundary(len) {
                msg.body = &body[..len];
            }
        }
        Some(msg)
    }

    fn matches(name: &str, wanted: &str) -> bool {
        if name.eq_ignore_ascii_case(wanted) {
            return true;
        }
        COMPACT.iter().any(|(long, short)| {
            wanted.eq_ignore_ascii_case(long) && name.eq_ignore_ascii_case(short)
        })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| Self::matches(n, name))
            .map(|(_, v)| *v)
    }

    fn all(&self, name: &str) -> Vec<&'a str> {
        self.headers
            .iter()
            .filter(|(n, _)| Self::matches(n, name))
            .map(|(_, v)| *v)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_answer() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 20002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(
            parse_sdp(sdp, Ipv4Addr::LOCALHOST, 0).unwrap(),
            "127.0.0.1:20002".parse::<SocketAddrV4>().unwrap()
        );
        let off_loopback = sdp.replace("127.0.0.1\r\nt", "192.0.2.1\r\nt");
        assert!(parse_sdp(&off_loopback, Ipv4Addr::LOCALHOST, 0).is_err());
        assert_eq!(
            parse_sdp(&off_loopback, Ipv4Addr::new(192, 0, 2, 9), 0),
            Ok("192.0.2.1:20002".parse().unwrap()),
            "reachable from a generator with an address of its own"
        );
        let on_hold = sdp.replace("127.0.0.1\r\nt", "0.0.0.0\r\nt");
        assert!(parse_sdp(&on_hold, Ipv4Addr::new(192, 0, 2, 9), 0).is_err());
        assert!(parse_sdp(&sdp.replace(" 0 101", " 8"), Ipv4Addr::LOCALHOST, 0).is_err());
    }

    #[test]
    fn message_headers() {
        let m = Message::parse(
            b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a\r\nVia: SIP/2.0/UDP b\r\ni: x@y\r\n\
              l: 3\r\n\r\nabcdef",
        )
        .unwrap();
        assert_eq!(m.get("Call-ID"), Some("x@y"));
        assert_eq!(m.all("via").len(), 2);
        assert_eq!(m.body, "abc");
        assert_eq!(
            contact_uri("<sip:echo@127.0.0.1:5060>;expires=1"),
            "sip:echo@127.0.0.1:5060"
        );
    }
}
