//! The SIP user agent as a state machine: a peer's datagrams (raw bytes, or requests and
//! responses made from templates so that they meet the UA's own dialogs and transactions),
//! the owner's actions (accept, ring, reject, hang up, redirect, re-INVITE, REFER, an outbound
//! INVITE) and time passing, in the order the input says, in virtual time.
//!
//! Oracles beyond "no panic": everything the UA sends parses back (a resend is the bytes of a
//! message that did); its timers never fire in a loop without end; and once the owner has
//! ended every call it was told of and the transactions' timers have run out, no call, no
//! transaction and no timer is left — whatever came before.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use callbridge::sdp::{Direction, LocalCapabilities, SrtpPolicy};
use callbridge::sip::message::{parse, NameAddr, Request, Response, SipMessage, Unparsed, Uri};
use callbridge::sip::routing::{Route, Service};
use callbridge::sip::transaction::{Peer, TimerValues, Transport};
use callbridge::sip::trust::Trust;
use callbridge::sip::ua::{CallId, OutboundInvite, UaOutput, UaSettings, UserAgent};
use libfuzzer_sys::fuzz_target;

const LOCAL: &str = "127.0.0.1:5060";
const PEER: &str = "127.0.0.2:5070";
const LOCAL_RTP: &str = "127.0.0.1:40000";
/// Timer rounds one advance may take; more is a timer that keeps re-arming.
const MAX_TIMER_ROUNDS: usize = 10_000;
/// What the fuzzer's requests are addressed to: each kind of route.
const USERS: [&str; 5] = ["echo", "ring", "app", "conf=r1", "nobody"];
const METHODS: [&str; 12] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "REFER",
    "NOTIFY",
    "MESSAGE",
    "SUBSCRIBE",
];
const STATUSES: [u16; 14] = [
    100, 180, 183, 200, 202, 302, 400, 401, 407, 481, 486, 487, 491, 503,
];

fuzz_target!(|data: &[u8]| {
    let mut run = Run::new();
    let mut input = Input(data);
    while let Some(op) = input.byte() {
        run.step(op, &mut input);
    }
    run.end();
});

/// The fuzzer's bytes, read as they are needed; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn pick(&mut self, n: usize) -> usize {
        usize::from(self.byte().unwrap_or(0)) % n
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

struct Run {
    ua: UserAgent,
    start: Instant,
    now: Instant,
    /// Every call the owner was told of (IncomingCall) or placed.
    calls: Vec<CallId>,
    /// The last requests the UA sent: what template responses answer.
    sent: Vec<Request>,
    /// To tags the UA gave its dialogs: what in-dialog template requests carry.
    our_tags: Vec<String>,
    /// `SIP_UA_TRACE=1`: each step, and every message in and out, on standard error (to read
    /// what a crash's input did: `SIP_UA_TRACE=1 cargo fuzz run sip_ua <artifact>`).
    trace: bool,
}

impl Run {
    fn new() -> Run {
        let start = Instant::now();
        Run {
            ua: UserAgent::new(settings().clone(), 7),
            start,
            now: start,
            calls: Vec::new(),
            sent: Vec::new(),
            our_tags: Vec::new(),
            trace: std::env::var_os("SIP_UA_TRACE").is_some(),
        }
    }

    fn step(&mut self, op: u8, input: &mut Input) {
        let now = self.now;
        if self.trace {
            eprintln!("-- op {} at {:?}", op % 10, now - self.start);
        }
        match op % 10 {
            0 => {
                let len = usize::from(input.byte().unwrap_or(0)) * 8;
                let bytes = input.bytes(len).to_vec();
                self.deliver(&bytes, transport(input));
            }
            1 => {
                let text = self.request_text(input);
                self.deliver(text.as_bytes(), transport(input));
            }
            2 => {
                if let Some(text) = self.response_text(input) {
                    self.deliver(text.as_bytes(), Transport::Udp);
                }
            }
            3 => {
                let by = Duration::from_millis(u64::from(input.byte().unwrap_or(0)) * 37);
                self.advance(by);
            }
            4 => {
                if let Some(call) = self.call(input) {
                    self.ua.accept(now, call, addr(LOCAL_RTP));
                }
            }
            5 => {
                if let Some(call) = self.call(input) {
                    self.ua.hangup(now, call, 16);
                }
            }
            6 => {
                if let Some(call) = self.call(input) {
                    let status = [486, 603, 404, 500][input.pick(4)];
                    self.ua.reject(now, call, status, "Busy Here");
                }
            }
            7 => {
                if let Some(call) = self.call(input) {
                    match input.pick(3) {
                        0 => {
                            self.ua.ring(now, call);
                        }
                        1 => {
                            self.ua.early_media(now, call, addr(LOCAL_RTP));
                        }
                        _ => {
                            self.ua.redirect(now, call, "sip:other@127.0.0.3");
                        }
                    }
                }
            }
            8 => {
                if let Some(call) = self.call(input) {
                    let _ = match input.pick(4) {
                        0 => self.ua.reinvite(now, call, Direction::SendOnly),
                        1 => self.ua.reinvite(now, call, Direction::SendRecv),
                        2 => self.ua.refer(now, call, "sip:target@127.0.0.3"),
                        _ => {
                            self.ua
                                .transfer_failed(now, call, 503, "Service Unavailable");
                            Ok(())
                        }
                    };
                }
            }
            _ => {
                let refer_of = if input.pick(2) == 0 {
                    None
                } else {
                    self.call(input)
                };
                let out = OutboundInvite {
                    target: Uri::parse("sip:1001@127.0.0.2:5070").expect("uri"),
                    to: NameAddr::parse("<sip:1001@127.0.0.2>").expect("to"),
                    from: NameAddr::parse("\"IVR\" <sip:ivr@127.0.0.1>").expect("from"),
                    destination: peer(Transport::Udp),
                    local: addr(LOCAL),
                    local_rtp: addr(LOCAL_RTP),
                    credentials: None,
                    srtp: None,
                    codecs: None,
                    headers: Vec::new(),
                    refer_of,
                    service: Service::Application,
                };
                if let Ok(call) = self.ua.invite(now, out) {
                    self.calls.push(call);
                }
            }
        }
        self.drain();
    }

    /// A datagram (or a stream's framed message) from the peer, as the transport hands it on.
    fn deliver(&mut self, bytes: &[u8], transport: Transport) {
        let source = peer(transport);
        if self.trace {
            eprintln!("<< {transport:?}\n{}", String::from_utf8_lossy(bytes));
        }
        match parse(bytes) {
            Ok(message) => self
                .ua
                .handle_message(self.now, message, source, addr(LOCAL)),
            Err(error) => {
                if let Some(unparsed) = Unparsed::salvage(bytes, error) {
                    self.ua.handle_unparsed(unparsed, source);
                }
            }
        }
    }

    /// A request from the peer: one of a few calls, branches and sequence numbers, out of
    /// dialog or inside one of ours, with an offer or without.
    fn request_text(&mut self, input: &mut Input) -> String {
        let method = METHODS[input.pick(METHODS.len())];
        let user = USERS[input.pick(USERS.len())];
        let call = input.pick(4);
        let branch = input.pick(6);
        let cseq = 1 + input.pick(4);
        let to_tag = match input.pick(3) {
            0 => String::new(),
            1 => ";tag=stranger".to_string(),
            _ => match self.our_tags.len() {
                0 => String::new(),
                n => format!(";tag={}", self.our_tags[input.pick(n)]),
            },
        };
        let cseq_method = if input.pick(8) == 0 { "INVITE" } else { method };
        let mut extra = String::new();
        for _ in 0..input.pick(3) {
            extra.push_str(
                [
                    "Refer-To: <sip:carol@127.0.0.3>\r\n",
                    "Replaces: c0;to-tag=x;from-tag=peer-tag\r\n",
                    "Event: refer\r\nSubscription-State: active\r\n",
                    "Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n",
                    "Require: 100rel\r\n",
                    "RAck: 1 1 INVITE\r\n",
                    "Content-Type: application/dtmf-relay\r\n",
                ][input.pick(7)],
            );
        }
        let body = match input.pick(3) {
            0 => String::new(),
            1 => format!(
                "v=0\r\no=- 1 {} IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
                 m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na={}\r\n",
                1 + input.pick(3),
                20000 + 2 * input.pick(4),
                ["sendrecv", "sendonly", "inactive"][input.pick(3)]
            ),
            _ => "Signal=5\r\nDuration=160\r\n".to_string(),
        };
        let content_type = match (body.is_empty(), body.starts_with("v=0")) {
            (true, _) => "",
            (false, true) => "Content-Type: application/sdp\r\n",
            (false, false) => "",
        };
        format!(
            "{method} sip:{user}@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKfz{call}{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@127.0.0.2>;tag=peer-tag\r\n\
             To: <sip:{user}@127.0.0.1>{to_tag}\r\n\
             Call-ID: c{call}\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Contact: <sip:alice@127.0.0.2:5070>\r\n\
             {extra}{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// The peer's response to one of the UA's requests.
    fn response_text(&mut self, input: &mut Input) -> Option<String> {
        if self.sent.is_empty() {
            return None;
        }
        let request = &self.sent[input.pick(self.sent.len())];
        let status = STATUSES[input.pick(STATUSES.len())];
        let mut response = Response::for_request(request, status, "Whatever");
        let is_invite = request.method.as_str() == "INVITE";
        let tag = ["far-1", "far-2"][input.pick(2)];
        if status > 100 {
            if let Some(to) = response.headers.get("To").map(str::to_string) {
                if !to.contains("tag=") {
                    response.headers.set("To", format!("{to};tag={tag}"));
                }
            }
            response
                .headers
                .push("Contact", "<sip:bob@127.0.0.2:5070>".to_string());
        }
        match status {
            302 => response
                .headers
                .push("Contact", "<sip:elsewhere@127.0.0.4>".to_string()),
            401 | 407 => response.headers.push(
                if status == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                },
                "Digest realm=\"x\", nonce=\"n\"".to_string(),
            ),
            _ => {}
        }
        if is_invite && (status == 200 || status == 183) && input.pick(2) == 0 {
            response
                .headers
                .push("Content-Type", "application/sdp".to_string());
            response.body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n\
                t=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=sendrecv\r\n"
                .to_vec();
        }
        Some(String::from_utf8_lossy(&response.to_bytes()).into_owned())
    }

    fn call(&mut self, input: &mut Input) -> Option<CallId> {
        match self.calls.len() {
            0 => None,
            n => Some(self.calls[input.pick(n)]),
        }
    }

    /// Time passes by `by`: every timer due runs, in order.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        let mut rounds = 0;
        while let Some(at) = self.ua.poll_timeout().filter(|at| *at <= until) {
            rounds += 1;
            assert!(rounds < MAX_TIMER_ROUNDS, "timers keep firing");
            self.now = self.now.max(at);
            self.ua.handle_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    /// What the UA asks of its owner and the network.
    fn drain(&mut self) {
        while let Some(output) = self.ua.poll_output() {
            match output {
                UaOutput::Transmit { message, .. } => {
                    let bytes = message.to_bytes();
                    if self.trace {
                        eprintln!(">>\n{}", String::from_utf8_lossy(&bytes));
                    }
                    let Ok(sent) = parse(&bytes) else {
                        panic!(
                            "we sent what does not parse:\n{}",
                            String::from_utf8_lossy(&bytes)
                        )
                    };
                    match sent {
                        SipMessage::Request(request) => {
                            if self.sent.len() == 8 {
                                self.sent.remove(0);
                            }
                            self.sent.push(request);
                        }
                        SipMessage::Response(response) => {
                            if let Some(tag) = response
                                .headers
                                .to()
                                .ok()
                                .and_then(|to| to.tag().map(str::to_string))
                            {
                                if !self.our_tags.contains(&tag) && self.our_tags.len() < 8 {
                                    self.our_tags.push(tag);
                                }
                            }
                        }
                    }
                }
                UaOutput::Resend { bytes, .. } => {
                    assert!(parse(&bytes).is_ok(), "a resend does not parse");
                }
                UaOutput::IncomingCall { call, .. } => {
                    if self.trace {
                        eprintln!("owner: IncomingCall {call}");
                    }
                    self.calls.push(call);
                }
                other => {
                    if self.trace {
                        eprintln!("owner: {other:?}");
                    }
                }
            }
        }
    }

    /// The owner ends every call it knows; the peer goes quiet; every timer runs out.
    fn end(&mut self) {
        for call in self.calls.clone() {
            if self.ua.is_unanswered(call) {
                self.ua
                    .reject(self.now, call, 480, "Temporarily Unavailable");
            }
            self.ua.hangup(self.now, call, 16);
            self.drain();
        }
        for _ in 0..20 {
            self.advance(Duration::from_secs(64));
        }
        assert_eq!(
            self.ua.call_count(),
            0,
            "calls left after every call was ended"
        );
        assert_eq!(
            self.ua.transaction_count(),
            0,
            "transactions left after their timers ran out"
        );
        assert_eq!(self.ua.poll_timeout(), None, "timers left armed");
    }
}

/// The routes of every kind, built once: compiling their patterns for each input cost more
/// than the input's run.
fn settings() -> &'static UaSettings {
    static SETTINGS: OnceLock<UaSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let route = |pattern: &str, service: Service, answer_delay_ms: u64| Route {
            user: regex::Regex::new(pattern).expect("pattern"),
            service,
            answer_delay_ms,
            prompt: None,
            srtp: None,
            dn: None,
            record: None,
            rtp_source: None,
            hairpin: false,
        };
        UaSettings {
            user_agent: "callbridge-fuzz".to_string(),
            timers: TimerValues::default(),
            routes: vec![
                route("^echo$", Service::Echo, 0),
                route("^ring$", Service::Echo, 2000),
                route("^app$", Service::Application, 0),
                route("^conf=(?P<conference>[^@;]+)$", Service::Conference, 0),
            ],
            capabilities: Arc::new(LocalCapabilities::default()),
            trust: Trust::default(),
            tls_srtp: SrtpPolicy::Require,
        }
    })
}

fn transport(input: &mut Input) -> Transport {
    if input.pick(4) == 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    }
}

fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        addr: addr(PEER),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("address")
}
