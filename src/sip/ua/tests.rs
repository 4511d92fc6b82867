//! Scenarios in virtual time: the peer's requests go in as SIP text, and the assertions are
//! on what the peer reads off the wire and on what the owner is told. `now` only moves when
//! a test advances it; nothing sleeps.

use super::in_dialog::info_digit;
use super::uas::percent_decode;
use super::*;
use crate::sdp::Codec;
use crate::sip::dialog::set_tag;
use crate::sip::message::{find_param, parse, Headers, Response};
use crate::sip::transaction::Transport;

const T1: Duration = Duration::from_millis(500);
/// Our SIP address as the peer reaches it.
const LOCAL: &str = "192.0.2.1:5060";
/// Where the peer's signalling comes from (also its Via sent-by).
const PEER: &str = "192.0.2.10:5070";
/// The peer's Contact: where our in-dialog requests must go.
const PEER_CONTACT: &str = "192.0.2.10:5072";
/// The peer's media address in its SDP.
const PEER_MEDIA_IP: &str = "192.0.2.10";
/// The RTP address the owner binds for a call.
const LOCAL_RTP: &str = "192.0.2.1:40000";
/// Timer firings allowed per advance; more means a timer that keeps re-arming (livelock).
const MAX_TIMER_ROUNDS: usize = 1000;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address parses")
}

fn udp(text: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr(text),
    }
}

#[test]
fn dtmf_info_bodies_give_their_digit() {
    assert_eq!(
        info_digit("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
        Some(('5', 160))
    );
    assert_eq!(
        info_digit("Application/DTMF-Relay; x=y", b"Signal= #\nDuration= 250"),
        Some(('#', 250))
    );
    assert_eq!(
        info_digit("application/dtmf-relay", b"Signal=11"),
        Some(('#', 0))
    );
    assert_eq!(info_digit("application/dtmf", b"7"), Some(('7', 0)));
    assert_eq!(info_digit("application/dtmf-relay", b"Signal=x"), None);
    assert_eq!(
        info_digit("application/dtmf-relay", b"Signal=16"),
        None,
        "flash"
    );
    assert_eq!(
        info_digit("application/dtmf-relay", b"Signal=b"),
        Some(('B', 0))
    );
    assert_eq!(info_digit("application/dtmf-relay", b"Duration=100"), None);
    assert_eq!(info_digit("text/plain", b"5"), None);
}

#[test]
fn play_parameters_are_percent_decoded() {
    assert_eq!(percent_decode("welcome%2Fen.wav"), "welcome/en.wav");
    assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4", "bad escapes stay");
    assert_eq!(
        percent_decode("file%3A%2F%2F%2Ftmp%2Fx.wav"),
        "file:///tmp/x.wav"
    );
}

fn route(pattern: &str, answer_delay_ms: u64) -> Route {
    Route {
        user: regex::Regex::new(pattern).expect("test pattern compiles"),
        service: Service::Echo,
        answer_delay_ms,
        srtp: None,
        prompt: None,
        dn: None,
        record: None,
        rtp_source: None,
        hairpin: false,
    }
}

fn settings() -> UaSettings {
    UaSettings {
        user_agent: "callbridge-test".to_string(),
        timers: TimerValues::default(),
        routes: vec![
            route("^echo$", 0),
            route("^ring$", 2000),
            Route {
                srtp: Some(sdp::SrtpPolicy::Require),
                ..route("^secure$", 0)
            },
            Route {
                dn: Some("7000".to_string()),
                ..route("^sales$", 0)
            },
        ],
        trust: crate::sip::trust::Trust::default(),
        capabilities: std::sync::Arc::new(LocalCapabilities::default()),
        tls_srtp: sdp::SrtpPolicy::Require,
    }
}

fn sip(text: &str) -> SipMessage {
    parse(text.as_bytes()).unwrap_or_else(|e| panic!("test message does not parse ({e}):\n{text}"))
}

/// PCMU + telephone-event at the peer's media address: an offer, or an answer to ours.
fn pcmu_sdp(port: u16) -> String {
    audio_sdp(
        port,
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
    )
}

/// An offer we share no codec with.
fn g729_sdp(port: u16) -> String {
    audio_sdp(port, "18", "a=rtpmap:18 G729/8000\r\n")
}

fn audio_sdp(port: u16, formats: &str, attributes: &str) -> String {
    format!(
        "v=0\r\no=alice 2890844526 1 IN IP4 {PEER_MEDIA_IP}\r\ns=-\r\n\
             c=IN IP4 {PEER_MEDIA_IP}\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n\
             {attributes}a=sendrecv\r\n"
    )
}

/// The peer's side of one call: writes its requests as text.
struct PeerCall {
    user: &'static str,
    call_id: String,
    from_tag: String,
    /// Via sent-by, and parameters after the branch (`;rport`).
    sent_by: String,
    via_params: String,
    /// Branch and CSeq number of the last INVITE (its CANCEL and ACKs reuse the number).
    invite_branch: String,
    invite_cseq: u32,
    /// Last CSeq number used.
    cseq: u32,
    /// Our tag, once learned from a response.
    to_tag: Option<String>,
    /// host:port of the peer's Contact.
    contact: String,
    branches: u32,
}

impl PeerCall {
    fn new(user: &'static str, name: &str) -> PeerCall {
        PeerCall {
            user,
            call_id: format!("{name}@{PEER_MEDIA_IP}"),
            from_tag: format!("peer-{name}"),
            sent_by: PEER.to_string(),
            via_params: String::new(),
            invite_branch: format!("z9hG4bK-{name}-1"),
            invite_cseq: 100,
            cseq: 100,
            to_tag: None,
            contact: PEER_CONTACT.to_string(),
            branches: 1,
        }
    }

    /// Sends from behind a NAT: its Via names a private address and asks for rport.
    fn behind_nat(mut self) -> PeerCall {
        self.sent_by = "10.0.0.5:5070".to_string();
        self.via_params = ";rport".to_string();
        self
    }

    fn fresh_branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK-{}-{}", self.from_tag, self.branches)
    }

    fn learn_tag(&mut self, response: &Response) {
        self.to_tag = Some(to_tag(response).expect("response carries our To tag"));
    }

    fn text(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
        extra_headers: &str,
        body: Option<(&str, &str)>,
    ) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let (content_type, body) = match body {
            Some((content_type, body)) => (format!("Content-Type: {content_type}\r\n"), body),
            None => (String::new(), ""),
        };
        format!(
            "{method} sip:{user}@{LOCAL} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {sent_by};branch={branch}{via_params}\r\n\
                 Max-Forwards: 70\r\n\
                 From: \"Alice\" <sip:alice@example.com>;tag={from_tag}\r\n\
                 To: <sip:{user}@{LOCAL}>{to_tag}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {cseq} {method}\r\n\
                 Contact: <sip:alice@{contact}>\r\n\
                 {extra_headers}{content_type}Content-Length: {length}\r\n\r\n{body}",
            user = self.user,
            sent_by = self.sent_by,
            via_params = self.via_params,
            from_tag = self.from_tag,
            call_id = self.call_id,
            contact = self.contact,
            length = body.len(),
        )
    }

    fn invite_text(&self, extra_headers: &str, body: Option<(&str, &str)>) -> String {
        let branch = &self.invite_branch;
        self.text(
            "INVITE",
            branch,
            self.invite_cseq,
            None,
            extra_headers,
            body,
        )
    }

    fn invite(&self, sdp: Option<&str>) -> SipMessage {
        sip(&self.invite_text("", sdp.map(|s| ("application/sdp", s))))
    }

    /// The ACK for our 2xx: a new transaction, with our tag.
    fn ack_text(&mut self, sdp: Option<&str>) -> String {
        let branch = self.fresh_branch();
        let body = sdp.map(|s| ("application/sdp", s));
        let to_tag = self.to_tag.as_deref();
        self.text("ACK", &branch, self.invite_cseq, to_tag, "", body)
    }

    fn ack(&mut self, sdp: Option<&str>) -> SipMessage {
        sip(&self.ack_text(sdp))
    }

    /// The ACK for a non-2xx final: same transaction as the INVITE, To from the response.
    fn ack_failure(&self, response: &Response) -> SipMessage {
        let tag = to_tag(response);
        let branch = &self.invite_branch;
        sip(&self.text("ACK", branch, self.invite_cseq, tag.as_deref(), "", None))
    }

    /// CANCEL of the last INVITE: its branch and CSeq number, its To (no tag).
    fn cancel(&self) -> SipMessage {
        let branch = &self.invite_branch;
        sip(&self.text("CANCEL", branch, self.invite_cseq, None, "", None))
    }

    /// CANCEL of a re-INVITE: its To carries our tag, like the re-INVITE's.
    fn cancel_reinvite(&self) -> SipMessage {
        let branch = &self.invite_branch;
        let to_tag = self.to_tag.as_deref();
        sip(&self.text("CANCEL", branch, self.invite_cseq, to_tag, "", None))
    }

    fn bye(&mut self) -> SipMessage {
        self.in_dialog("BYE")
    }

    /// A request in the dialog with the next CSeq number.
    fn in_dialog(&mut self, method: &str) -> SipMessage {
        let cseq = self.cseq + 1;
        self.in_dialog_numbered(method, cseq)
    }

    /// A request in the dialog with these extra headers (REFER's Refer-To, RAck ...).
    fn in_dialog_with(&mut self, method: &str, headers: &[(&str, &str)]) -> Request {
        let SipMessage::Request(mut request) = self.in_dialog(method) else {
            unreachable!("in_dialog builds requests")
        };
        for (name, value) in headers {
            request.headers.push(name, value.to_string());
        }
        request
    }

    fn in_dialog_numbered(&mut self, method: &str, cseq: u32) -> SipMessage {
        self.cseq = cseq;
        let branch = self.fresh_branch();
        let to_tag = self.to_tag.as_deref();
        sip(&self.text(method, &branch, cseq, to_tag, "", None))
    }

    fn reinvite(&mut self, sdp: &str) -> SipMessage {
        self.reinvite_with(Some(sdp))
    }

    fn reinvite_with(&mut self, sdp: Option<&str>) -> SipMessage {
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        self.invite_branch = self.fresh_branch();
        let body = sdp.map(|s| ("application/sdp", s));
        let to_tag = self.to_tag.as_deref();
        sip(&self.text("INVITE", &self.invite_branch, self.cseq, to_tag, "", body))
    }

    /// A request outside any dialog (OPTIONS, REGISTER, unknown methods).
    fn out_of_dialog(&mut self, method: &str) -> SipMessage {
        self.cseq += 1;
        let branch = self.fresh_branch();
        sip(&self.text(method, &branch, self.cseq, None, "", None))
    }
}

/// The text of a message without its `name` header line.
fn without_header(text: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    text.split_inclusive("\r\n")
        .filter(|line| !line.starts_with(&prefix))
        .collect()
}

/// The peer's answer to one of our requests.
fn reply(request: &Request, status: u16, reason: &str) -> SipMessage {
    SipMessage::Response(Response::for_request(request, status, reason))
}

/// Drives a UserAgent in virtual time, as its owner would.
struct Harness {
    ua: UserAgent,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            ua: UserAgent::new(settings(), 7),
            now: Instant::now(),
        }
    }

    fn drain(&mut self) -> Vec<UaOutput> {
        std::iter::from_fn(|| self.ua.poll_output()).collect()
    }

    /// The peer's message arrives from its usual address.
    fn receive(&mut self, message: SipMessage) -> Vec<UaOutput> {
        self.receive_from(message, PEER)
    }

    fn receive_from(&mut self, message: SipMessage, source: &str) -> Vec<UaOutput> {
        self.ua
            .handle_message(self.now, message, udp(source), addr(LOCAL));
        self.drain()
    }

    fn accept(&mut self, call: CallId) -> Vec<UaOutput> {
        self.ua.accept(self.now, call, addr(LOCAL_RTP));
        self.drain()
    }

    fn hangup(&mut self, call: CallId, cause: u8) -> Vec<UaOutput> {
        assert!(
            self.ua.hangup(self.now, call, cause),
            "call {call} is alive"
        );
        self.drain()
    }

    /// Fires every timer due up to `deadline`, one `handle_timeout` per `poll_timeout`
    /// instant; returns each round's outputs with its time since the start.
    fn timeline_until(&mut self, deadline: Instant) -> Vec<(Duration, Vec<UaOutput>)> {
        let start = self.now;
        let mut rounds = Vec::new();
        for _ in 0..MAX_TIMER_ROUNDS {
            match self.ua.poll_timeout() {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    self.ua.handle_timeout(self.now);
                    let outputs = self.drain();
                    rounds.push((self.now - start, outputs));
                }
                _ => {
                    self.now = deadline;
                    return rounds;
                }
            }
        }
        panic!("more than {MAX_TIMER_ROUNDS} timer rounds before the deadline: livelock");
    }

    fn timeline(&mut self, by: Duration) -> Vec<(Duration, Vec<UaOutput>)> {
        self.timeline_until(self.now + by)
    }

    fn advance_until(&mut self, deadline: Instant) -> Vec<UaOutput> {
        self.timeline_until(deadline)
            .into_iter()
            .flat_map(|(_, outputs)| outputs)
            .collect()
    }

    fn advance(&mut self, by: Duration) -> Vec<UaOutput> {
        self.advance_until(self.now + by)
    }

    /// The peer's INVITE is routed: checks the 100 Trying, returns the new call.
    fn invite(&mut self, peer: &PeerCall, sdp: Option<&str>) -> CallId {
        let out = self.receive(peer.invite(sdp));
        assert_eq!(statuses(&out), [100]);
        incoming_call(&out)
    }

    /// The owner accepts an `echo` call at once: the 200 the peer gets (it learns our tag).
    fn answer(&mut self, peer: &mut PeerCall, call: CallId) -> Response {
        let out = self.accept(call);
        assert_eq!(answered(&out), [call]);
        let ok = response(&out, 200);
        peer.learn_tag(&ok);
        ok
    }

    /// A PCMU call to `echo`, answered and ACKed; with the 200 the peer got.
    fn confirmed_call(&mut self, peer: &mut PeerCall) -> (CallId, Response) {
        let call = self.invite(peer, Some(&pcmu_sdp(30000)));
        let ok = self.answer(peer, call);
        let out = self.receive(peer.ack(None));
        assert!(out.is_empty(), "an ACK is answered by nothing: {out:?}");
        (call, ok)
    }

    /// The peer's BYE ends the call as a remote hang-up, and nothing is left behind.
    fn peer_hangs_up(&mut self, peer: &mut PeerCall, call: CallId) {
        assert_eq!(
            ended(&self.receive(peer.bye())),
            [(call, EndReason::RemoteHangup)]
        );
        self.assert_drains();
    }

    /// Lets every timer run out; no call or transaction may be left behind.
    fn assert_drains(&mut self) {
        self.advance(T1 * 64);
        assert_eq!(self.ua.call_count(), 0, "calls leaked");
        assert_eq!(self.ua.transaction_count(), 0, "transactions leaked");
        assert_eq!(self.ua.abandoned_count(), 0, "abandoned INVITEs kept");
        assert_eq!(self.ua.poll_timeout(), None, "timers left armed");
    }
}

/// A message as the peer reads it: serialized and parsed back.
fn on_the_wire(message: &SipMessage) -> SipMessage {
    parse(&message.to_bytes()).expect("what we send parses")
}

/// Every message sent, with its destination.
fn transmitted(outputs: &[UaOutput]) -> Vec<(SocketAddr, SipMessage)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::Transmit { to, message } => {
                assert_eq!(to.transport, Transport::Udp);
                Some((to.addr, on_the_wire(message)))
            }
            UaOutput::Resend { to, bytes } => {
                assert_eq!(to.transport, Transport::Udp);
                Some((to.addr, parse(bytes).expect("what we resend parses")))
            }
            _ => None,
        })
        .collect()
}

fn sent_to(outputs: &[UaOutput]) -> Vec<SocketAddr> {
    transmitted(outputs).into_iter().map(|(to, _)| to).collect()
}

fn responses(outputs: &[UaOutput]) -> Vec<Response> {
    transmitted(outputs)
        .into_iter()
        .filter_map(|(_, m)| match m {
            SipMessage::Response(r) => Some(r),
            SipMessage::Request(_) => None,
        })
        .collect()
}

fn requests(outputs: &[UaOutput]) -> Vec<Request> {
    transmitted(outputs)
        .into_iter()
        .filter_map(|(_, m)| match m {
            SipMessage::Request(r) => Some(r),
            SipMessage::Response(_) => None,
        })
        .collect()
}

fn statuses(outputs: &[UaOutput]) -> Vec<u16> {
    responses(outputs).iter().map(|r| r.status).collect()
}

/// The one response with `status` among the outputs.
fn response(outputs: &[UaOutput], status: u16) -> Response {
    let mut matching: Vec<Response> = responses(outputs)
        .into_iter()
        .filter(|r| r.status == status)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one {status}, sent: {:?}",
        statuses(outputs)
    );
    matching.remove(0)
}

/// The one request sent among the outputs.
fn only_request(outputs: &[UaOutput]) -> Request {
    let mut sent = requests(outputs);
    assert_eq!(sent.len(), 1, "expected one request, sent: {sent:?}");
    sent.remove(0)
}

fn to_tag(response: &Response) -> Option<String> {
    let to = response.headers.to().expect("response has a To");
    to.tag().map(str::to_string)
}

fn cseq_method(headers: &Headers) -> Method {
    headers.cseq().expect("message has a CSeq").method
}

/// The Allow list as one value (the parser splits it into items).
fn allow(response: &Response) -> String {
    response
        .headers
        .get_all("Allow")
        .collect::<Vec<_>>()
        .join(", ")
}

fn sdp_body(response: &Response) -> SessionDescription {
    assert_eq!(response.headers.content_type(), Some("application/sdp"));
    SessionDescription::parse(std::str::from_utf8(&response.body).expect("SDP is UTF-8"))
        .expect("our SDP parses")
}

fn incoming_call(outputs: &[UaOutput]) -> CallId {
    let calls: Vec<CallId> = outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "expected one IncomingCall: {outputs:?}");
    calls[0]
}

fn has_incoming_call(outputs: &[UaOutput]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, UaOutput::IncomingCall { .. }))
}

fn answered(outputs: &[UaOutput]) -> Vec<CallId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::CallAnswered { call } => Some(*call),
            _ => None,
        })
        .collect()
}

fn ended(outputs: &[UaOutput]) -> Vec<(CallId, EndReason)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::CallEnded { call, reason } => Some((*call, *reason)),
            _ => None,
        })
        .collect()
}

fn media_updates(outputs: &[UaOutput]) -> Vec<(CallId, NegotiatedMedia)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::MediaUpdated { call, media } => Some((*call, media.clone())),
            _ => None,
        })
        .collect()
}

fn peer_media(port: u16) -> Option<SocketAddr> {
    Some(addr(&format!("{PEER_MEDIA_IP}:{port}")))
}

// --- 1. The basic call -------------------------------------------------------------------

#[test]
fn an_answered_call_keeps_its_answer_and_drops_the_offer() {
    // An established call is what a server holds by the thousand: the peer's offer (parsed
    // SDP, ~1 KB) has served its purpose once the 2xx carries the answer.
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "slim");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    assert!(h.ua.calls[&call].remote_offer.is_some());
    h.answer(&mut peer, call);
    let held = &h.ua.calls[&call];
    assert!(held.remote_offer.is_none(), "the offer outlived the answer");
    assert!(held.local_sdp.is_some(), "the answer is kept for re-offers");
    // A second answer (a stray timer) changes nothing and sends nothing.
    h.ua.send_answer(h.now, call);
    assert!(h.drain().is_empty());
}

#[test]
fn invite_accept_ack_bye_ends_the_call_and_drains() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "basic");

    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    assert_eq!(statuses(&out), [100]);
    assert_eq!(sent_to(&out), [addr(PEER)]);
    let Some(UaOutput::IncomingCall {
        call,
        service,
        remote_media,
        from,
        to,
        local,
        ..
    }) = out
        .iter()
        .find(|o| matches!(o, UaOutput::IncomingCall { .. }))
    else {
        panic!("no IncomingCall: {out:?}");
    };
    let call = *call;
    assert_eq!(*service, Service::Echo);
    let media = remote_media.as_ref().expect("the INVITE had an offer");
    assert_eq!(media.remote_rtp, peer_media(30000));
    assert_eq!(media.codec, Codec::Pcmu);
    assert_eq!(media.telephone_event_pt, Some(101));
    assert!(from.contains("tag=peer-basic"), "From: {from}");
    assert_eq!(to, &format!("<sip:echo@{LOCAL}>"));
    assert_eq!(*local, addr(LOCAL));
    assert_eq!(h.ua.call_count(), 1);

    let out = h.accept(call);
    assert_eq!(answered(&out), [call]);
    assert_eq!(sent_to(&out), [addr(PEER)]);
    let ok = response(&out, 200);
    assert_eq!(cseq_method(&ok.headers), Method::Invite);
    assert!(to_tag(&ok).is_some(), "200 without a To tag");
    assert_eq!(
        ok.headers.get("Contact"),
        Some(format!("<sip:callbridge@{LOCAL}>").as_str())
    );
    let answer = sdp_body(&ok);
    let audio = &answer.media[0];
    assert_eq!(audio.port, addr(LOCAL_RTP).port());
    assert_eq!(audio.formats, ["0", "101"]);
    assert_eq!(
        audio
            .effective_connection(&answer)
            .map(|c| c.address.to_string()),
        Some("192.0.2.1".to_string())
    );
    peer.learn_tag(&ok);

    assert!(h.receive(peer.ack(None)).is_empty());
    assert!(
        transmitted(&h.advance(ms(10_000))).is_empty(),
        "the 200 is not retransmitted once ACKed"
    );

    let out = h.receive(peer.bye());
    let bye_ok = response(&out, 200);
    assert_eq!(cseq_method(&bye_ok.headers), Method::Bye);
    assert_eq!(to_tag(&bye_ok), to_tag(&ok));
    assert_eq!(sent_to(&out), [addr(PEER)]);
    assert_eq!(ended(&out), [(call, EndReason::RemoteHangup)]);
    assert_eq!(h.ua.call_count(), 0);

    assert!(transmitted(&h.advance(ms(32_000))).is_empty());
    assert_eq!(h.ua.transaction_count(), 0);
    assert_eq!(h.ua.poll_timeout(), None);
}

/// The caller's and the called number of the one IncomingCall among the outputs.
fn identity(outputs: &[UaOutput]) -> (String, String) {
    let found: Vec<(String, String)> = outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::IncomingCall {
                remote_dn,
                route_dn,
                ..
            } => Some((remote_dn.clone(), route_dn.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one IncomingCall: {outputs:?}");
    found[0].clone()
}

/// Answers the call the peer's INVITE made, ACKs it and hangs it up: nothing stays behind.
fn complete_and_hang_up(h: &mut Harness, peer: &mut PeerCall, outputs: &[UaOutput]) {
    let call = incoming_call(outputs);
    h.answer(peer, call);
    assert!(h.receive(peer.ack(None)).is_empty());
    h.peer_hangs_up(peer, call);
}

#[test]
fn the_asserted_identity_wins_over_from_as_the_callers_number() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "pai");
    let text = peer.invite_text(
            "P-Asserted-Identity: \"Alice, Sales\" <sip:+15551234@pbx.example.com>, <tel:+15551234>\r\n",
            Some(("application/sdp", &pcmu_sdp(30000))),
        );
    let out = h.receive(sip(&text));
    assert_eq!(
        identity(&out),
        ("+15551234".to_string(), "echo".to_string()),
        "PAI's user, not From's (alice); no route dn: the Request-URI user"
    );
    complete_and_hang_up(&mut h, &mut peer, &out);
}

#[test]
fn without_an_asserted_identity_the_callers_number_is_froms_user() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "from-only");
    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    assert_eq!(identity(&out), ("alice".to_string(), "echo".to_string()));
    complete_and_hang_up(&mut h, &mut peer, &out);
}

#[test]
fn the_routes_dn_wins_over_the_request_uri_user_as_the_called_number() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("sales", "route-dn");
    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    assert_eq!(identity(&out), ("alice".to_string(), "7000".to_string()));
    complete_and_hang_up(&mut h, &mut peer, &out);
}

// --- 2. The 2xx without its ACK ----------------------------------------------------------

#[test]
fn unacknowledged_200_is_retransmitted_then_bye_at_64_t1() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "noack");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    let ok = h.answer(&mut peer, call);

    let rounds = h.timeline(T1 * 64 - ms(1));
    let mut resent_at = Vec::new();
    for (at, out) in &rounds {
        assert!(ended(out).is_empty(), "call ended early at {at:?}");
        for (to, message) in transmitted(out) {
            assert_eq!(to, addr(PEER));
            assert_eq!(message, SipMessage::Response(ok.clone()), "the same 200");
            resent_at.push(*at);
        }
    }
    // T1, 2T1, 4T1, then capped at T2 = 4 s.
    let expected = [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ];
    assert_eq!(resent_at, expected.map(ms));

    let out = h.advance(ms(1));
    assert_eq!(ended(&out), [(call, EndReason::AckTimeout)]);
    assert_eq!(sent_to(&out), [addr(PEER_CONTACT)]);
    let bye = only_request(&out);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(
        bye.headers.get("Reason"),
        Some("SIP;cause=408;text=\"ACK Timeout\"")
    );
    assert_eq!(h.ua.call_count(), 0);

    assert!(h
        .receive_from(reply(&bye, 200, "OK"), PEER_CONTACT)
        .is_empty());
    h.assert_drains();
}

#[test]
fn ack_missing_headers_is_dropped_and_the_200_keeps_coming() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "badack");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    h.answer(&mut peer, call);

    let ack = without_header(&peer.ack_text(None), "Call-ID");
    assert!(h.receive(sip(&ack)).is_empty(), "nothing answers an ACK");
    let ack = without_header(&peer.ack_text(None), "From");
    assert!(h.receive(sip(&ack)).is_empty(), "nothing answers an ACK");

    assert_eq!(
        statuses(&h.advance(T1)),
        [200],
        "the 200 is still unacknowledged"
    );
}

// --- 3. INVITE retransmissions -----------------------------------------------------------

#[test]
fn retransmitted_invite_while_ringing_gets_the_180_again() {
    let mut h = Harness::new();
    let peer = PeerCall::new("ring", "retrans");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));

    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    assert_eq!(statuses(&out), [100], "before accept, the 100 is repeated");
    assert!(!has_incoming_call(&out));

    let ringing = response(&h.accept(call), 180);
    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    assert!(!has_incoming_call(&out), "no second call: {out:?}");
    assert_eq!(sent_to(&out), [addr(PEER)]);
    assert_eq!(response(&out, 180), ringing);
    assert_eq!(h.ua.call_count(), 1);
}

// --- 4. Ringing and CANCEL ---------------------------------------------------------------

#[test]
fn ring_route_sends_180_then_200_after_two_seconds() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("ring", "ring");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));

    let out = h.accept(call);
    assert!(answered(&out).is_empty());
    assert_eq!(statuses(&out), [180]);
    let ringing = response(&out, 180);
    let tag = to_tag(&ringing).expect("180 carries our To tag");
    assert_eq!(
        ringing.headers.get("Contact"),
        Some(format!("<sip:callbridge@{LOCAL}>").as_str())
    );

    assert!(h.advance(ms(1999)).is_empty(), "no 200 before 2 s");
    let out = h.advance(ms(1));
    assert_eq!(answered(&out), [call]);
    let ok = response(&out, 200);
    assert_eq!(to_tag(&ok).as_deref(), Some(tag.as_str()), "one dialog");
    assert_eq!(sdp_body(&ok).media[0].port, addr(LOCAL_RTP).port());

    peer.learn_tag(&ok);
    assert!(h.receive(peer.ack(None)).is_empty());
    h.peer_hangs_up(&mut peer, call);
}

#[test]
fn cancel_while_ringing_gets_200_and_the_invite_487() {
    let mut h = Harness::new();
    let peer = PeerCall::new("ring", "cancel");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    let ringing = response(&h.accept(call), 180);

    let out = h.receive(peer.cancel());
    assert_eq!(statuses(&out), [200, 487]);
    assert_eq!(sent_to(&out), [addr(PEER), addr(PEER)]);
    let cancel_ok = response(&out, 200);
    assert_eq!(cseq_method(&cancel_ok.headers), Method::Cancel);
    let terminated = response(&out, 487);
    assert_eq!(cseq_method(&terminated.headers), Method::Invite);
    assert_eq!(to_tag(&terminated), to_tag(&ringing));
    assert_eq!(to_tag(&cancel_ok), to_tag(&ringing), "§9.2: one To tag");
    assert_eq!(ended(&out), [(call, EndReason::Cancelled)]);
    assert_eq!(h.ua.call_count(), 0);

    assert!(h.receive(peer.ack_failure(&terminated)).is_empty());
    assert!(
        transmitted(&h.advance(ms(2000))).is_empty(),
        "the ring timer died with the call"
    );
    h.assert_drains();
}

#[test]
fn cancel_before_accept_makes_the_late_accept_a_no_op() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "earlycancel");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));

    let out = h.receive(peer.cancel());
    assert_eq!(statuses(&out), [200, 487]);
    assert_eq!(ended(&out), [(call, EndReason::Cancelled)]);
    assert!(h.accept(call).is_empty());
    assert!(!h.ua.hangup(h.now, call, 16), "the call is already gone");

    let terminated = response(&out, 487);
    assert!(h.receive(peer.ack_failure(&terminated)).is_empty());
    h.assert_drains();
}

#[test]
fn cancel_after_200_changes_nothing() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("ring", "latecancel");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    h.accept(call);
    let ok = response(&h.advance(ms(2000)), 200);
    peer.learn_tag(&ok);

    let out = h.receive(peer.cancel());
    assert_eq!(statuses(&out), [200]);
    assert_eq!(cseq_method(&response(&out, 200).headers), Method::Cancel);
    assert!(ended(&out).is_empty());
    assert_eq!(h.ua.call_count(), 1);

    assert!(h.receive(peer.ack(None)).is_empty());
    let out = h.receive(peer.bye());
    assert_eq!(statuses(&out), [200]);
    assert_eq!(ended(&out), [(call, EndReason::RemoteHangup)]);
    h.assert_drains();
}

/// Hung up by its owner between our 2xx and the caller's ACK (the BYE waits for the ACK), then
/// CANCELled by the caller, whose CANCEL crossed our 2xx: the CANCEL gets its 200 and nothing
/// else — no second final response (487) to an INVITE already answered, and no end reported
/// to an owner that already ended the call.
#[test]
fn cancel_after_200_of_a_call_hung_up_before_the_ack_changes_nothing() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "hungupcancel");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    h.answer(&mut peer, call);
    assert!(requests(&h.hangup(call, 16)).is_empty(), "the BYE waits");

    let out = h.receive(peer.cancel());
    assert_eq!(statuses(&out), [200]);
    assert_eq!(cseq_method(&response(&out, 200).headers), Method::Cancel);
    assert!(ended(&out).is_empty(), "{out:?}");

    let out = h.receive(peer.ack(None));
    assert_eq!(only_request(&out).method, Method::Bye);
    assert!(ended(&out).is_empty(), "its owner ended it");
    h.assert_drains();
}

#[test]
fn cancel_for_no_invite_gets_481() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "nocall");
    let out = h.receive(peer.cancel());
    assert_eq!(statuses(&out), [481]);
    h.assert_drains();
}

// --- 5. Offer in our 2xx, answer in the ACK ----------------------------------------------

#[test]
fn invite_without_sdp_gets_an_offer_and_the_ack_answer_updates_media() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "late");
    let out = h.receive(peer.invite(None));
    let Some(UaOutput::IncomingCall {
        call, remote_media, ..
    }) = out
        .iter()
        .find(|o| matches!(o, UaOutput::IncomingCall { .. }))
    else {
        panic!("no IncomingCall: {out:?}");
    };
    let call = *call;
    assert_eq!(*remote_media, None);

    let ok = h.answer(&mut peer, call);
    let offer = sdp_body(&ok);
    let audio = &offer.media[0];
    assert_eq!(audio.port, addr(LOCAL_RTP).port());
    assert_eq!(audio.formats, ["0", "8", "101"]);
    assert!(
        audio
            .rtpmaps()
            .iter()
            .any(|m| m.encoding_name.eq_ignore_ascii_case("telephone-event")),
        "offer lacks telephone-event: {offer}"
    );

    let out = h.receive(peer.ack(Some(&pcmu_sdp(31000))));
    assert!(transmitted(&out).is_empty());
    let updates = media_updates(&out);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].0, call);
    assert_eq!(updates[0].1.remote_rtp, peer_media(31000));
    assert_eq!(updates[0].1.codec, Codec::Pcmu);
    assert!(
        transmitted(&h.advance(ms(5000))).is_empty(),
        "ACK stopped the 200"
    );

    h.peer_hangs_up(&mut peer, call);
}

#[test]
fn ack_without_the_answer_to_our_offer_ends_the_call_with_bye() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "noanswer");
    let call = h.invite(&peer, None);
    h.answer(&mut peer, call);

    let out = h.receive(peer.ack(None));
    assert_eq!(ended(&out), [(call, EndReason::BadAnswer)]);
    assert!(media_updates(&out).is_empty());
    assert_eq!(sent_to(&out), [addr(PEER_CONTACT)]);
    let bye = only_request(&out);
    assert_eq!(bye.method, Method::Bye);
    assert!(
        bye.headers
            .get("Reason")
            .is_some_and(|r| r.starts_with("SIP;cause=488")),
        "Reason: {:?}",
        bye.headers.get("Reason")
    );
    assert_eq!(h.ua.call_count(), 0);
    assert!(
        !statuses(&h.advance(ms(5000))).contains(&200),
        "the ACK still stopped the 200"
    );

    assert!(h
        .receive_from(reply(&bye, 200, "OK"), PEER_CONTACT)
        .is_empty());
    h.assert_drains();
}

// --- 6. The owner hangs up ----------------------------------------------------------------

#[test]
fn hangup_after_answer_sends_bye_to_the_contact() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "hangup");
    let (call, ok) = h.confirmed_call(&mut peer);
    let our_tag = to_tag(&ok).expect("200 has our tag");

    let out = h.hangup(call, 16);
    assert!(ended(&out).is_empty(), "the owner already knows");
    assert_eq!(sent_to(&out), [addr(PEER_CONTACT)]);
    let bye = only_request(&out);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri.to_string(), format!("sip:alice@{PEER_CONTACT}"));
    assert_eq!(bye.headers.get("Reason"), Some("Q.850;cause=16"));
    let from = bye.headers.from().expect("BYE has From");
    let to = bye.headers.to().expect("BYE has To");
    assert_eq!(from.tag(), Some(our_tag.as_str()));
    assert_eq!(from.uri.to_string(), format!("sip:echo@{LOCAL}"));
    assert_eq!(to.tag(), Some("peer-hangup"));
    assert_eq!(to.uri.to_string(), "sip:alice@example.com");
    assert_eq!(bye.headers.call_id().ok(), Some("hangup@192.0.2.10"));
    assert_eq!(cseq_method(&bye.headers), Method::Bye);
    assert_eq!(h.ua.call_count(), 0);

    // The BYE is retransmitted until answered.
    let out = h.advance(T1);
    assert_eq!(only_request(&out).headers.cseq(), bye.headers.cseq());
    assert!(h
        .receive_from(reply(&bye, 200, "OK"), PEER_CONTACT)
        .is_empty());
    h.assert_drains();
}

#[test]
fn hangup_before_the_ack_holds_the_bye_until_the_ack_arrives() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "earlyhangup");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    h.answer(&mut peer, call);

    let out = h.hangup(call, 16);
    assert!(
        requests(&out).is_empty(),
        "no BYE before the 2xx is acknowledged"
    );
    assert!(ended(&out).is_empty(), "the owner already knows");

    let out = h.receive(peer.ack(None));
    let bye = only_request(&out);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.headers.get("Reason"), Some("Q.850;cause=16"));
    assert!(ended(&out).is_empty());
    assert!(h
        .receive_from(reply(&bye, 200, "OK"), PEER_CONTACT)
        .is_empty());
    h.assert_drains();
}

/// A hold asked for the moment the call is answered (a CTI RequestHoldCall right after
/// EventEstablished) waits for the ACK: RFC 3261 §14.1 allows no re-INVITE while the INVITE
/// transaction is in progress; refusing it (as before) made the hold fail when the control
/// plane read the request before the phone's ACK.
#[test]
fn a_reinvite_asked_for_before_the_ack_goes_when_the_ack_arrives() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "holdbeforeack");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    h.answer(&mut peer, call);

    h.ua.reinvite(h.now, call, sdp::Direction::SendOnly)
        .expect("held for the ACK");
    assert!(
        h.ua.reinvite(h.now, call, sdp::Direction::SendRecv)
            .is_err(),
        "one at a time"
    );
    assert!(requests(&h.drain()).is_empty(), "nothing before the ACK");

    let out = h.receive(peer.ack(None));
    let reinvite = only_request(&out);
    assert_eq!(reinvite.method, Method::Invite);
    let offer = SessionDescription::parse(std::str::from_utf8(&reinvite.body).unwrap()).unwrap();
    assert_eq!(offer.media[0].direction(), Some(sdp::Direction::SendOnly));
}

#[test]
fn hangup_before_an_ack_that_never_comes_sends_the_bye_at_the_ack_timeout() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "earlyhangup2");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    h.answer(&mut peer, call);
    assert!(requests(&h.hangup(call, 16)).is_empty());

    let out = h.advance(T1 * 64);
    let bye = requests(&out)
        .into_iter()
        .find(|r| r.method == Method::Bye)
        .expect("the held-back BYE goes out at the ACK timeout");
    assert_eq!(bye.headers.get("Reason"), Some("Q.850;cause=16"));
    assert!(ended(&out).is_empty(), "no second CallEnded");
    assert!(h
        .receive_from(reply(&bye, 200, "OK"), PEER_CONTACT)
        .is_empty());
    h.assert_drains();
}

#[test]
fn bye_in_the_early_dialog_gets_200_and_ends_the_invite_with_487() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("ring", "earlybye");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    let ringing = response(&h.accept(call), 180);
    peer.learn_tag(&ringing);

    let out = h.receive(peer.bye());
    assert_eq!(statuses(&out), [200, 487]);
    assert_eq!(cseq_method(&response(&out, 200).headers), Method::Bye);
    assert_eq!(to_tag(&response(&out, 487)), to_tag(&ringing));
    assert_eq!(ended(&out), [(call, EndReason::RemoteHangup)]);
    assert!(!statuses(&h.advance(ms(2000))).contains(&200));

    assert!(h.receive(peer.ack_failure(&response(&out, 487))).is_empty());
    h.assert_drains();
}

#[test]
fn hangup_while_ringing_sends_480_with_reason() {
    let mut h = Harness::new();
    let peer = PeerCall::new("ring", "hangupring");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    let ringing = response(&h.accept(call), 180);

    let out = h.hangup(call, 16);
    assert!(ended(&out).is_empty(), "the owner already knows");
    assert_eq!(sent_to(&out), [addr(PEER)]);
    let unavailable = response(&out, 480);
    assert_eq!(unavailable.headers.get("Reason"), Some("Q.850;cause=16"));
    assert_eq!(to_tag(&unavailable), to_tag(&ringing));
    assert_eq!(h.ua.call_count(), 0);

    assert!(
        !statuses(&h.advance(ms(2000))).contains(&200),
        "no 200 after the hangup"
    );
    assert!(h.receive(peer.ack_failure(&unavailable)).is_empty());
    h.assert_drains();
}

#[test]
fn reject_sends_the_status_and_ends_the_call() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "reject");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));

    h.ua.reject(h.now, call, 503, "Service Unavailable");
    let out = h.drain();
    let unavailable = response(&out, 503);
    assert!(to_tag(&unavailable).is_some());
    assert_eq!(ended(&out), [(call, EndReason::InviteFailed)]);
    assert!(h.receive(peer.ack_failure(&unavailable)).is_empty());
    h.assert_drains();
}

// --- 7. Re-INVITE -------------------------------------------------------------------------

#[test]
fn reinvite_with_new_port_updates_media_and_bumps_the_sdp_version() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "reinvite");
    let (call, ok) = h.confirmed_call(&mut peer);
    let first = sdp_body(&ok).origin;

    let out = h.receive(peer.reinvite(&pcmu_sdp(32000)));
    assert_eq!(statuses(&out), [100, 200]);
    let reok = response(&out, 200);
    assert_eq!(to_tag(&reok), to_tag(&ok));
    let answer = sdp_body(&reok);
    assert_eq!(answer.origin.session_id, first.session_id);
    assert_eq!(answer.origin.session_version, first.session_version + 1);
    assert_eq!(answer.media[0].port, addr(LOCAL_RTP).port());
    let updates = media_updates(&out);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].0, call);
    assert_eq!(updates[0].1.remote_rtp, peer_media(32000));

    assert!(h.receive(peer.ack(None)).is_empty());
    assert!(
        transmitted(&h.advance(ms(5000))).is_empty(),
        "ACK stopped the 200"
    );
    h.peer_hangs_up(&mut peer, call);
}

#[test]
fn sdes_keys_are_made_when_an_offer_needs_them() {
    let mut h = Harness::new();
    // A plain RTP call under the default policy never needs keys: it holds none.
    let mut peer = PeerCall::new("echo", "plain");
    let (call, _) = h.confirmed_call(&mut peer);
    assert!(h.ua.calls[&call].srtp_keys.is_empty());
    // Until the peer offers SRTP in a re-INVITE: it is answered with our key.
    let savp = format!(
        "v=0\r\no=alice 2890844526 2 IN IP4 {PEER_MEDIA_IP}\r\ns=-\r\n\
         c=IN IP4 {PEER_MEDIA_IP}\r\nt=0 0\r\nm=audio 32000 RTP/SAVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n\
         a=sendrecv\r\n"
    );
    let out = h.receive(peer.reinvite(&savp));
    assert_eq!(statuses(&out), [100, 200]);
    let answer = sdp_body(&response(&out, 200));
    assert_eq!(answer.media[0].protocol, "RTP/SAVP");
    let crypto = answer.media[0]
        .attributes
        .iter()
        .find(|a| a.name == "crypto")
        .expect("the answer carries our key");
    let ours = h.ua.calls[&call]
        .srtp_keys
        .key("AES_CM_128_HMAC_SHA1_80")
        .expect("made for the offer")
        .to_string();
    assert!(crypto.value.as_deref().unwrap_or("").contains(&ours));
    // An SRTP offer in the INVITE has its keys from the start.
    let secure = PeerCall::new("echo", "secure-offer");
    let invite = h.receive(secure.invite(Some(&savp)));
    let call = incoming_call(&invite);
    assert!(!h.ua.calls[&call].srtp_keys.is_empty());
}

#[test]
fn reinvite_without_common_codec_gets_488_and_the_call_stays() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "reinvite488");
    let (call, _) = h.confirmed_call(&mut peer);

    let out = h.receive(peer.reinvite(&g729_sdp(32000)));
    assert_eq!(statuses(&out), [100, 488]);
    let refused = response(&out, 488);
    assert!(refused.headers.get("Warning").is_some());
    assert!(media_updates(&out).is_empty());
    assert!(ended(&out).is_empty());
    assert_eq!(h.ua.call_count(), 1);
    assert!(h.receive(peer.ack_failure(&refused)).is_empty());

    let out = h.receive(peer.bye());
    assert_eq!(statuses(&out), [200]);
    assert_eq!(ended(&out), [(call, EndReason::RemoteHangup)]);
    h.assert_drains();
}

#[test]
fn reinvite_without_sdp_gets_an_offer_answered_in_the_ack() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "refreshsdp");
    let (call, ok) = h.confirmed_call(&mut peer);
    let first = sdp_body(&ok).origin;

    let out = h.receive(peer.reinvite_with(None));
    assert!(media_updates(&out).is_empty(), "nothing agreed yet");
    let offer = sdp_body(&response(&out, 200));
    assert_eq!(offer.origin.session_version, first.session_version + 1);
    assert_eq!(offer.media[0].formats, ["0", "8", "101"]);

    let out = h.receive(peer.ack(Some(&pcmu_sdp(33000))));
    assert!(transmitted(&out).is_empty());
    let updates = media_updates(&out);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].0, call);
    assert_eq!(updates[0].1.remote_rtp, peer_media(33000));
}

#[test]
fn reinvite_contact_becomes_the_target_of_our_bye() {
    const MOVED: &str = "192.0.2.20:5080";
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "refresh");
    let (call, _) = h.confirmed_call(&mut peer);

    peer.contact = MOVED.to_string();
    let out = h.receive(peer.reinvite(&pcmu_sdp(32000)));
    assert_eq!(statuses(&out), [100, 200]);
    assert!(h.receive(peer.ack(None)).is_empty());

    let out = h.hangup(call, 16);
    assert_eq!(
        sent_to(&out),
        [addr(MOVED)],
        "§12.2.2: re-INVITE refreshes the target"
    );
    assert_eq!(
        only_request(&out).uri.to_string(),
        format!("sip:alice@{MOVED}")
    );
}

#[test]
fn cancel_of_an_answered_reinvite_gets_200_and_the_call_stays() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "cancelreinvite");
    let (call, ok) = h.confirmed_call(&mut peer);
    h.receive(peer.reinvite(&pcmu_sdp(32000)));

    let out = h.receive(peer.cancel_reinvite());
    assert_eq!(statuses(&out), [200]);
    let cancel_ok = response(&out, 200);
    assert_eq!(cseq_method(&cancel_ok.headers), Method::Cancel);
    assert_eq!(to_tag(&cancel_ok), to_tag(&ok));
    assert!(ended(&out).is_empty());
    assert_eq!(h.ua.call_count(), 1);

    assert!(h.receive(peer.ack(None)).is_empty());
    h.peer_hangs_up(&mut peer, call);
}

#[test]
fn reinvite_before_the_ack_gets_491() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "reinvite491");
    let call = h.invite(&peer, Some(&pcmu_sdp(30000)));
    h.answer(&mut peer, call);

    let out = h.receive(peer.reinvite(&pcmu_sdp(32000)));
    assert_eq!(statuses(&out), [100, 491]);
    assert!(media_updates(&out).is_empty());
    assert_eq!(h.ua.call_count(), 1);
}

// --- 8. Requests we refuse ----------------------------------------------------------------

/// The INVITE got `status` and no call; the ACK for it ends everything.
fn assert_invite_refused(h: &mut Harness, peer: &PeerCall, out: &[UaOutput], status: u16) {
    assert_eq!(statuses(out), [100, status]);
    assert!(!has_incoming_call(out));
    assert_eq!(h.ua.call_count(), 0);
    let refusal = response(out, status);
    assert!(to_tag(&refusal).is_some(), "{status} without a To tag");
    assert!(h.receive(peer.ack_failure(&refusal)).is_empty());
    h.assert_drains();
}

#[test]
fn unrouted_user_gets_404() {
    let mut h = Harness::new();
    let peer = PeerCall::new("nobody", "unrouted");
    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    assert_invite_refused(&mut h, &peer, &out, 404);
}

#[test]
fn offer_without_common_codec_gets_488_with_warning() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "g729");
    let out = h.receive(peer.invite(Some(&g729_sdp(30000))));
    let warning = response(&out, 488)
        .headers
        .get("Warning")
        .map(str::to_string);
    assert!(
        warning.as_deref().is_some_and(|w| w.starts_with("304 ")),
        "Warning: {warning:?}"
    );
    assert_invite_refused(&mut h, &peer, &out, 488);
}

#[test]
fn a_route_that_requires_srtp_refuses_plain_rtp_offers() {
    let mut h = Harness::new();
    let peer = PeerCall::new("secure", "plain");
    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    let refused = response(&out, 488);
    assert!(
        refused
            .headers
            .get("Warning")
            .is_some_and(|w| w.to_ascii_lowercase().contains("srtp")),
        "{refused:?}"
    );
    assert_invite_refused(&mut h, &peer, &out, 488);
    // The same offer on a route without the override is accepted (global policy: offer).
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "plain2");
    let out = h.receive(peer.invite(Some(&pcmu_sdp(30000))));
    assert!(has_incoming_call(&out));
}

#[test]
fn an_unknown_required_extension_gets_420_with_unsupported() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "prack");
    let sdp = pcmu_sdp(30000);
    let text = peer.invite_text(
        "Require: 100rel, foo-ext\r\n",
        Some(("application/sdp", &sdp)),
    );
    let out = h.receive(sip(&text));
    let refusal = response(&out, 420);
    assert_eq!(refusal.headers.get("Unsupported"), Some("foo-ext"));
    assert_invite_refused(&mut h, &peer, &out, 420);
}

#[test]
fn early_media_is_a_reliable_183_until_prack_then_the_200_carries_the_same_answer() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "early");
    let text = peer.invite_text(
        "Supported: 100rel, timer\r\n",
        Some(("application/sdp", &pcmu_sdp(30000))),
    );
    let call = incoming_call(&h.receive(sip(&text)));
    assert!(h.ua.early_media(h.now, call, addr(LOCAL_RTP)));
    let out = h.drain();
    let progress = response(&out, 183);
    assert_eq!(progress.headers.get("Require"), Some("100rel"));
    assert_eq!(progress.headers.get("RSeq"), Some("1"));
    assert_eq!(sdp_body(&progress).media[0].port, 40000);
    peer.learn_tag(&progress);
    // Not PRACKed: sent again after T1.
    let again = h.advance(T1);
    assert_eq!(statuses(&again), [183]);
    // A PRACK naming another RSeq is not ours; the right one stops the retransmissions.
    let rack = format!("7 {} INVITE", peer.invite_cseq);
    let wrong = peer.in_dialog_with("PRACK", &[("RAck", &rack)]);
    assert_eq!(statuses(&h.receive(SipMessage::Request(wrong))), [481]);
    let rack = format!("1 {} INVITE", peer.invite_cseq);
    let prack = peer.in_dialog_with("PRACK", &[("RAck", &rack)]);
    assert_eq!(statuses(&h.receive(SipMessage::Request(prack))), [200]);
    assert!(statuses(&h.advance(T1 * 8)).is_empty(), "no more 183s");
    let ok = response(&h.accept(call), 200);
    assert_eq!(
        sdp_body(&ok),
        sdp_body(&progress),
        "the 200 repeats the early answer"
    );
    h.receive(peer.ack(None));
    h.peer_hangs_up(&mut peer, call);
}

#[test]
fn a_reliable_provisional_never_pracked_refuses_the_invite() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "noprack");
    let text = peer.invite_text(
        "Require: 100rel\r\n",
        Some(("application/sdp", &pcmu_sdp(30000))),
    );
    let call = incoming_call(&h.receive(sip(&text)));
    assert!(h.ua.ring(h.now, call));
    let out = h.drain();
    assert_eq!(
        response(&out, 180).headers.get("RSeq"),
        Some("1"),
        "required: reliable 180"
    );
    let out = h.advance(T1 * 65);
    assert!(statuses(&out).contains(&504), "{:?}", statuses(&out));
    assert_eq!(ended(&out), [(call, EndReason::InviteFailed)]);
}

#[test]
fn text_body_gets_415_with_accept() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "text");
    let text = peer.invite_text("", Some(("text/plain", "hello")));
    let out = h.receive(sip(&text));
    let refusal = response(&out, 415);
    assert_eq!(refusal.headers.get("Accept"), Some("application/sdp"));
    assert_invite_refused(&mut h, &peer, &out, 415);
}

#[test]
fn malformed_sdp_gets_400() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "badsdp");
    let text = peer.invite_text("", Some(("application/sdp", "v=1\r\nnonsense\r\n")));
    let out = h.receive(sip(&text));
    let refusal = response(&out, 400);
    assert!(refusal.reason.contains("SDP"), "reason: {}", refusal.reason);
    assert_invite_refused(&mut h, &peer, &out, 400);
}

/// The bytes of every message sent, first sends and resends alike.
fn wire_bytes(outputs: &[UaOutput]) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::Transmit { message, .. } => Some(message.to_bytes()),
            UaOutput::Resend { bytes, .. } => Some(bytes.to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_retransmitted_bye_gets_the_same_200_again_and_ends_nothing_twice() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "bye-again");
    let (call, _) = h.confirmed_call(&mut peer);
    let bye = peer.bye();
    let first = h.receive(bye.clone());
    assert_eq!(ended(&first), [(call, EndReason::RemoteHangup)]);
    assert_eq!(statuses(&first), [200]);
    // The peer missed our 200 and sends its BYE again, within Timer J.
    h.advance(T1 * 4);
    let again = h.receive(bye.clone());
    assert!(ended(&again).is_empty(), "{again:?}");
    assert!(
        matches!(again.as_slice(), [UaOutput::Resend { to, .. }] if to.addr == addr(PEER)),
        "{again:?}"
    );
    assert_eq!(
        wire_bytes(&again),
        wire_bytes(&first),
        "the same 200, byte for byte"
    );
    // Once Timer J has run out the BYE is a stranger: its dialog is gone.
    h.advance(T1 * 64);
    assert_eq!(h.ua.transaction_count(), 0);
    assert_eq!(statuses(&h.receive(bye)), [481]);
    h.assert_drains();
}

#[test]
fn bye_with_unknown_to_tag_gets_481() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "stale");
    peer.to_tag = Some("not-ours".to_string());
    let out = h.receive(peer.bye());
    assert_eq!(statuses(&out), [481]);
    assert_eq!(sent_to(&out), [addr(PEER)]);
    assert!(ended(&out).is_empty());
    h.assert_drains();
}

#[test]
fn bye_without_to_tag_gets_481() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "notag");
    let out = h.receive(peer.bye());
    assert_eq!(statuses(&out), [481]);
    h.assert_drains();
}

#[test]
fn in_dialog_request_with_lower_cseq_gets_500_and_the_call_stays() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "cseq");
    let (call, _) = h.confirmed_call(&mut peer);

    let out = h.receive(peer.in_dialog_numbered("BYE", 50));
    assert_eq!(statuses(&out), [500]);
    assert!(ended(&out).is_empty());
    assert_eq!(h.ua.call_count(), 1);

    let out = h.receive(peer.in_dialog_numbered("BYE", 101));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(ended(&out), [(call, EndReason::RemoteHangup)]);
    h.assert_drains();
}

#[test]
fn register_gets_405_with_allow() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "register");
    let out = h.receive(peer.out_of_dialog("REGISTER"));
    assert_eq!(statuses(&out), [405]);
    let refusal = response(&out, 405);
    assert_eq!(allow(&refusal), ALLOW);
    assert!(to_tag(&refusal).is_some(), "405 without a To tag");
    h.assert_drains();
}

#[test]
fn unknown_method_gets_501() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "foobar");
    let out = h.receive(peer.out_of_dialog("FOOBAR"));
    assert_eq!(statuses(&out), [501]);
    assert_eq!(cseq_method(&response(&out, 501).headers).as_str(), "FOOBAR");
    h.assert_drains();
}

#[test]
fn unknown_method_in_a_dialog_gets_501_and_the_call_stays() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "foobardialog");
    h.confirmed_call(&mut peer);
    let out = h.receive(peer.in_dialog("FOOBAR"));
    assert_eq!(statuses(&out), [501]);
    assert_eq!(h.ua.call_count(), 1);
}

#[test]
fn options_gets_200_with_allow_accept_supported() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "options");
    let out = h.receive(peer.out_of_dialog("OPTIONS"));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(sent_to(&out), [addr(PEER)]);
    let ok = response(&out, 200);
    assert_eq!(allow(&ok), ALLOW);
    assert_eq!(ok.headers.get("Accept"), Some("application/sdp"));
    assert!(ok.headers.get("Supported").is_some(), "no Supported header");
    assert!(to_tag(&ok).is_some(), "200 to OPTIONS without a To tag");
    assert!(!has_incoming_call(&out));
    h.assert_drains();
}

/// A draining node tells a load balancer's OPTIONS probe to stop sending it calls (503 with
/// Retry-After); an established call's in-dialog OPTIONS still gets 200: it goes on.
#[test]
fn a_draining_ua_answers_probes_503_and_its_calls_options_200() {
    let mut h = Harness::new();
    let mut call = PeerCall::new("echo", "drained-call");
    h.confirmed_call(&mut call);
    h.ua.start_draining();
    let mut probe = PeerCall::new("echo", "probe");
    let out = h.receive(probe.out_of_dialog("OPTIONS"));
    assert_eq!(statuses(&out), [503]);
    assert_eq!(response(&out, 503).headers.get("Retry-After"), Some("30"));
    let out = h.receive(call.in_dialog("OPTIONS"));
    assert_eq!(statuses(&out), [200]);
    assert_eq!(h.ua.call_count(), 1);
}

#[test]
fn request_missing_call_id_gets_400_naming_it() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "nocallid");
    let text = without_header(&peer.invite_text("", None), "Call-ID");
    let out = h.receive(sip(&text));
    assert_eq!(sent_to(&out), [addr(PEER)]);
    let refusal = response(&out, 400);
    assert!(
        refusal.reason.contains("Call-ID"),
        "reason: {}",
        refusal.reason
    );
    assert_eq!(
        refusal.reason.matches("Bad Request").count(),
        1,
        "reason: {}",
        refusal.reason
    );
    assert!(to_tag(&refusal).is_some(), "400 without a To tag");
    assert!(!has_incoming_call(&out));
    assert_eq!(h.ua.transaction_count(), 0);
}

#[test]
fn request_without_via_is_dropped() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "novia");
    let text = without_header(&peer.invite_text("", None), "Via");
    assert!(h.receive(sip(&text)).is_empty());
    assert_eq!(h.ua.transaction_count(), 0);
}

// --- 9. Via: where responses go ----------------------------------------------------------

#[test]
fn rport_request_from_another_address_is_answered_at_its_source() {
    const NAT: &str = "203.0.113.7:40000";
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "nat").behind_nat();

    let out = h.receive_from(peer.invite(Some(&pcmu_sdp(30000))), NAT);
    let call = incoming_call(&out);
    let mut out = out;
    out.extend(h.accept(call));
    assert_eq!(statuses(&out), [100, 200]);
    assert_eq!(sent_to(&out), [addr(NAT), addr(NAT)]);
    for response in responses(&out) {
        let via = response.headers.top_via().expect("response has a Via");
        assert_eq!(via.host.to_string(), "10.0.0.5");
        assert_eq!(via.port, Some(5070));
        assert_eq!(
            find_param(&via.params, "received"),
            Some(Some("203.0.113.7"))
        );
        assert_eq!(find_param(&via.params, "rport"), Some(Some("40000")));
        assert_eq!(via.branch(), Some("z9hG4bK-nat-1"));
    }

    let ok = response(&out, 200);
    peer.learn_tag(&ok);
    assert!(h.receive_from(peer.ack(None), NAT).is_empty());
    let out = h.receive_from(peer.bye(), NAT);
    assert_eq!(sent_to(&out), [addr(NAT)]);
    let via = response(&out, 200).headers.top_via().expect("Via");
    assert_eq!(find_param(&via.params, "rport"), Some(Some("40000")));
    h.assert_drains();
}

#[test]
fn request_from_another_ip_without_rport_gets_received_only() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "received");
    let out = h.receive_from(peer.out_of_dialog("OPTIONS"), "198.51.100.3:5070");
    assert_eq!(sent_to(&out), [addr("198.51.100.3:5070")]);
    let via = response(&out, 200).headers.top_via().expect("Via");
    assert_eq!(
        find_param(&via.params, "received"),
        Some(Some("198.51.100.3"))
    );
    assert_eq!(find_param(&via.params, "rport"), None);
}

#[test]
fn request_from_its_sent_by_keeps_its_via() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "direct");
    let out = h.receive(peer.out_of_dialog("OPTIONS"));
    let via = response(&out, 200).headers.top_via().expect("Via");
    assert_eq!(
        via.to_string(),
        format!("SIP/2.0/UDP {PEER};branch=z9hG4bK-peer-direct-2")
    );
}

// ---- Calls we place (UAC), transfers, Replaces, session timers ----

const TRUNK: &str = "192.0.2.20:5080";
const CALLEE_CONTACT: &str = "192.0.2.20:5082";

fn outbound(credentials: Option<Credentials>, refer_of: Option<CallId>) -> OutboundInvite {
    OutboundInvite {
        target: Uri::parse("sip:1001@192.0.2.20").unwrap(),
        to: NameAddr::parse("<sip:1001@192.0.2.20>").unwrap(),
        from: NameAddr::parse("<sip:callbridge@192.0.2.1>").unwrap(),
        destination: udp(TRUNK),
        local: addr(LOCAL),
        local_rtp: addr(LOCAL_RTP),
        credentials,
        srtp: None,
        codecs: None,
        headers: vec![("Referred-By".into(), "<sip:alice@example.com>".into())],
        refer_of,
        service: Service::Application,
    }
}

/// The callee's response to our INVITE: its tag and Contact, and an SDP answer if given.
fn callee_says(invite: &Request, status: u16, reason: &str, sdp: Option<&str>) -> SipMessage {
    let mut r = Response::for_request(invite, status, reason);
    if status > 100 {
        let mut to = r.headers.to().unwrap();
        set_tag(&mut to, Some("callee"));
        r.headers.set("To", to.to_string());
        r.headers
            .push("Contact", format!("<sip:1001@{CALLEE_CONTACT}>"));
    }
    if let Some(sdp) = sdp {
        r.headers.push("Content-Type", "application/sdp");
        r.body = sdp.as_bytes().to_vec();
    }
    on_the_wire(&SipMessage::Response(r))
}

fn place(h: &mut Harness, credentials: Option<Credentials>) -> (CallId, Request) {
    let call =
        h.ua.invite(h.now, outbound(credentials, None))
            .expect("INVITE sent");
    let out = h.drain();
    assert_eq!(sent_to(&out), [addr(TRUNK)]);
    let invite = only_request(&out);
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(invite.uri.to_string(), "sip:1001@192.0.2.20");
    assert_eq!(
        invite.headers.get("Referred-By"),
        Some("<sip:alice@example.com>")
    );
    let offer = SessionDescription::parse(std::str::from_utf8(&invite.body).unwrap()).unwrap();
    assert_eq!(
        offer.media[0].port, 40000,
        "our offer names the connection's port"
    );
    (call, invite)
}

fn progress(outputs: &[UaOutput]) -> Vec<u16> {
    outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::Progress { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

#[test]
fn placed_call_rings_is_answered_acked_and_ended_by_the_callee() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    let out = h.receive_from(callee_says(&invite, 180, "Ringing", None), TRUNK);
    assert_eq!(progress(&out), [180]);
    let out = h.receive_from(
        callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31000))),
        TRUNK,
    );
    let ack = only_request(&out);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(
        sent_to(&out),
        [addr(CALLEE_CONTACT)],
        "ACK goes to the callee's Contact"
    );
    assert_eq!(ack.headers.cseq().unwrap().seq, 1);
    assert_eq!(ack.headers.to().unwrap().tag(), Some("callee"));
    assert_eq!(media_updates(&out)[0].1.remote_rtp, peer_media(31000));
    assert_eq!(answered(&out), [call]);
    // A retransmitted 2xx gets the same ACK again (§13.2.2.4).
    let again = h.receive_from(
        callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31000))),
        TRUNK,
    );
    assert_eq!(
        only_request(&again).headers.top_via().unwrap().branch(),
        ack.headers.top_via().unwrap().branch()
    );
    assert!(answered(&again).is_empty());
    // The callee's BYE reaches the call by our From tag.
    let bye = format!(
            "BYE sip:callbridge@{LOCAL} SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bK-cb1\r\nMax-Forwards: 70\r\nFrom: <sip:1001@192.0.2.20>;tag=callee\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            invite.headers.get("From").unwrap(),
            invite.headers.call_id().unwrap()
        );
    let out = h.receive_from(sip(&bye), TRUNK);
    assert_eq!(statuses(&out), [200]);
    assert_eq!(ended(&out), [(call, EndReason::RemoteHangup)]);
    h.assert_drains();
}

#[test]
fn placed_call_refused_ends_with_its_status_and_early_media_is_reported() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    let out = h.receive_from(
        callee_says(&invite, 183, "Session Progress", Some(&pcmu_sdp(31002))),
        TRUNK,
    );
    assert_eq!(progress(&out), [183]);
    assert_eq!(
        media_updates(&out)[0].1.remote_rtp,
        peer_media(31002),
        "early media"
    );
    let out = h.receive_from(callee_says(&invite, 486, "Busy Here", None), TRUNK);
    assert_eq!(ended(&out), [(call, EndReason::Rejected(486))]);
    assert_eq!(
        only_request(&out).method,
        Method::Ack,
        "the transaction ACKs the error"
    );
    h.assert_drains();
}

#[test]
fn hangup_of_a_ringing_placed_call_cancels_it_and_reports_nothing() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    h.receive_from(callee_says(&invite, 180, "Ringing", None), TRUNK);
    let out = h.hangup(call, 16);
    let cancel = only_request(&out);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(
        cancel.headers.top_via().unwrap().branch(),
        invite.headers.top_via().unwrap().branch()
    );
    assert_eq!(cancel.headers.cseq().unwrap().seq, 1);
    let out = h.receive_from(on_the_wire(&reply(&cancel, 200, "OK")), TRUNK);
    assert!(ended(&out).is_empty());
    let out = h.receive_from(callee_says(&invite, 487, "Request Terminated", None), TRUNK);
    assert!(ended(&out).is_empty(), "the owner ended it: no CallEnded");
    h.assert_drains();
}

#[test]
fn a_cancelled_call_whose_callee_goes_quiet_ends_64_t1_after_the_cancel() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    h.receive_from(callee_says(&invite, 180, "Ringing", None), TRUNK);
    // Ringing for a while: the callee decides, no timer of ours ends the call.
    h.advance(T1 * 100);
    assert_eq!(h.ua.call_count(), 1);
    let out = h.hangup(call, 16);
    let cancel = only_request(&out);
    assert_eq!(cancel.method, Method::Cancel);
    h.receive_from(on_the_wire(&reply(&cancel, 200, "OK")), TRUNK);
    // The callee still rings (its provisionals go on), but no 487 ever comes. §9.1: 64*T1
    // after the CANCEL the INVITE is considered cancelled.
    h.advance(T1 * 32);
    h.receive_from(callee_says(&invite, 180, "Ringing", None), TRUNK);
    let out = h.advance(T1 * 32 - ms(1));
    assert!(requests(&out).is_empty() && ended(&out).is_empty());
    assert_eq!(
        h.ua.call_count(),
        1,
        "still waiting for the INVITE's final response"
    );
    let out = h.advance(ms(1));
    assert!(ended(&out).is_empty(), "the owner ended it: no CallEnded");
    assert_eq!(h.ua.call_count(), 0);
    h.assert_drains();
}

#[test]
fn a_hangup_after_100_trying_cancels_at_once() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    h.receive_from(callee_says(&invite, 100, "Trying", None), TRUNK);
    let out = h.hangup(call, 16);
    assert_eq!(
        only_request(&out).method,
        Method::Cancel,
        "§9.1: 100 Trying is a provisional response"
    );
    h.advance(T1 * 64);
    assert_eq!(h.ua.call_count(), 0, "the INVITE considered cancelled");
    h.assert_drains();
}

#[test]
fn reject_is_for_calls_we_were_offered_and_leaves_a_placed_or_answered_call_alone() {
    let mut h = Harness::new();
    let (placed, invite) = place(&mut h, None);
    h.ua.reject(h.now, placed, 603, "Decline");
    assert!(h.drain().is_empty(), "no response on our own INVITE");
    // The placed call goes on: the callee's 100, then the owner's hang-up CANCELs it.
    h.receive_from(callee_says(&invite, 100, "Trying", None), TRUNK);
    assert_eq!(only_request(&h.hangup(placed, 16)).method, Method::Cancel);
    let mut peer = PeerCall::new("echo", "alice");
    let (answered, _) = h.confirmed_call(&mut peer);
    h.ua.reject(h.now, answered, 486, "Busy Here");
    assert!(h.drain().is_empty(), "an answered call is not rejected");
    assert_eq!(only_request(&h.hangup(answered, 16)).method, Method::Bye);
    h.advance(T1 * 64);
    assert_eq!(h.ua.call_count(), 0);
}

#[test]
fn hangup_before_any_provisional_cancels_at_the_first_and_a_crossing_2xx_gets_ack_and_bye() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    let out = h.hangup(call, 16);
    assert!(
        requests(&out).is_empty(),
        "§9.1: no CANCEL before a provisional"
    );
    let out = h.receive_from(callee_says(&invite, 180, "Ringing", None), TRUNK);
    assert_eq!(only_request(&out).method, Method::Cancel);
    let out = h.receive_from(
        callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31000))),
        TRUNK,
    );
    let sent: Vec<Method> = requests(&out).into_iter().map(|r| r.method).collect();
    assert_eq!(sent, [Method::Ack, Method::Bye]);
    assert!(ended(&out).is_empty() && answered(&out).is_empty());
    assert_eq!(h.ua.call_count(), 0);
}

#[test]
fn a_challenge_is_answered_once_with_our_credentials() {
    let mut h = Harness::new();
    let creds = Credentials {
        username: "cb".into(),
        password: "secret".into(),
    };
    let (call, invite) = place(&mut h, Some(creds));
    let mut challenge = Response::for_request(&invite, 407, "Proxy Authentication Required");
    challenge.headers.push(
        "Proxy-Authenticate",
        "Digest realm=\"trunk\", nonce=\"n1\", qop=\"auth\"",
    );
    let out = h.receive_from(SipMessage::Response(challenge.clone()), TRUNK);
    let sent = requests(&out);
    assert_eq!(sent[0].method, Method::Ack);
    let retry = &sent[1];
    assert_eq!(retry.method, Method::Invite);
    assert_eq!(retry.headers.cseq().unwrap().seq, 2);
    assert_eq!(
        retry.headers.call_id().unwrap(),
        invite.headers.call_id().unwrap()
    );
    let auth = retry
        .headers
        .get("Proxy-Authorization")
        .expect("credentials");
    assert!(
        auth.contains("username=\"cb\"")
            && auth.contains("realm=\"trunk\"")
            && auth.contains("qop=auth"),
        "{auth}"
    );
    assert!(ended(&out).is_empty());
    // A second challenge means the credentials are wrong: the call fails.
    let mut again = Response::for_request(retry, 407, "Proxy Authentication Required");
    again
        .headers
        .push("Proxy-Authenticate", "Digest realm=\"trunk\", nonce=\"n2\"");
    let out = h.receive_from(SipMessage::Response(again), TRUNK);
    assert_eq!(ended(&out), [(call, EndReason::Rejected(407))]);
    h.assert_drains();
}

#[test]
fn a_placed_call_nobody_answers_ends_with_no_answer() {
    let mut h = Harness::new();
    let (call, _) = place(&mut h, None);
    let out = h.advance(T1 * 65);
    assert_eq!(ended(&out), [(call, EndReason::NoAnswer)]);
    h.assert_drains();
}

/// A 2xx that comes after our INVITE timed out (the far end answered, its responses late or
/// lost until then): the call is gone, but the far end would play to nobody until it gives
/// up on our ACK 32 s later, then BYE a call we no longer know. It gets its ACK and a BYE
/// (RFC 3261 §13.2.2.4: every 2xx is ACKed; a session not wanted is ended by BYE), again on
/// a retransmission; after 64*T1 more such a 2xx is a stranger's again, and nothing is kept.
/// Its 200 to our BYE ends it; a 2xx to an INVITE we never sent gets nothing.
#[test]
fn a_2xx_after_our_invite_timed_out_gets_an_ack_and_a_bye() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    let out = h.advance(T1 * 65);
    assert_eq!(ended(&out), [(call, EndReason::NoAnswer)]);
    let late = callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31000)));
    let out = h.receive_from(late.clone(), TRUNK);
    let sent = requests(&out);
    assert_eq!(
        sent.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        [Method::Ack, Method::Bye]
    );
    for r in &sent {
        assert_eq!(
            r.headers.call_id().unwrap(),
            invite.headers.call_id().unwrap()
        );
        assert!(
            r.headers.to().unwrap().tag().is_some(),
            "in the 2xx's dialog"
        );
    }
    assert_eq!(
        sent[0].headers.cseq().unwrap().seq,
        invite.headers.cseq().unwrap().seq
    );
    assert!(sent[1].headers.cseq().unwrap().seq > invite.headers.cseq().unwrap().seq);
    assert!(ended(&out).is_empty() && answered(&out).is_empty());
    // The 2xx again (our ACK lost): the ACK again, no second BYE.
    let out = h.receive_from(late.clone(), TRUNK);
    assert_eq!(
        requests(&out)
            .iter()
            .map(|r| r.method.clone())
            .collect::<Vec<_>>(),
        [Method::Ack]
    );
    let bye = sent[1].clone();
    h.receive_from(
        SipMessage::Response(Response::for_request(&bye, 200, "OK")),
        TRUNK,
    );
    h.advance(T1 * 65);
    let out = h.receive_from(late, TRUNK);
    assert!(
        requests(&out).is_empty(),
        "64*T1 later it is a stranger's 2xx"
    );
    // Nor does a 2xx to an INVITE we never sent get anything.
    let mut stranger = invite.clone();
    stranger
        .headers
        .set("Call-ID", "not-ours@192.0.2.20".to_string());
    let out = h.receive_from(
        callee_says(&stranger, 200, "OK", Some(&pcmu_sdp(31000))),
        TRUNK,
    );
    assert!(requests(&out).is_empty());
    h.assert_drains();
}

type Asked = (CallId, String, Vec<(String, String)>);

fn transfer_requests(outputs: &[UaOutput]) -> Vec<Asked> {
    outputs
        .iter()
        .filter_map(|o| match o {
            UaOutput::TransferRequested {
                call,
                target,
                headers,
                ..
            } => Some((*call, target.to_string(), headers.clone())),
            _ => None,
        })
        .collect()
}

fn sipfrag(request: &Request) -> String {
    String::from_utf8(request.body.clone()).unwrap()
}

#[test]
fn refer_is_accepted_notified_carried_out_and_the_bye_ends_the_call_as_transferred() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "xfer");
    let (call, _) = h.confirmed_call(&mut peer);
    let refer = peer.in_dialog_with(
        "REFER",
        &[(
            "Refer-To",
            "<sip:bob@192.0.2.20?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        )],
    );
    let out = h.receive(SipMessage::Request(refer));
    assert_eq!(statuses(&out), [202]);
    let notify = only_request(&out);
    assert_eq!(notify.method, Method::Notify);
    assert_eq!(sent_to(&out)[1], addr(PEER_CONTACT));
    assert_eq!(notify.headers.get("Event"), Some("refer;id=101"));
    assert!(notify
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("active"));
    assert_eq!(sipfrag(&notify), "SIP/2.0 100 Trying\r\n");
    let asked = transfer_requests(&out);
    assert_eq!(asked[0].0, call);
    assert_eq!(asked[0].1, "sip:bob@192.0.2.20");
    assert_eq!(
        asked[0].2,
        [(
            "Replaces".to_string(),
            "abc@host;to-tag=1;from-tag=2".to_string()
        )]
    );
    // A second REFER while this one runs is refused.
    let out = h.receive(peer.in_dialog("REFER"));
    assert_eq!(statuses(&out), [491]);
    // The owner places the call; its answer is the final NOTIFY.
    let new = h.ua.invite(h.now, outbound(None, Some(call))).unwrap();
    let invite = only_request(&h.drain());
    let out = h.receive_from(
        callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31000))),
        TRUNK,
    );
    assert_eq!(answered(&out), [new]);
    let notify = requests(&out)
        .into_iter()
        .find(|r| r.method == Method::Notify)
        .expect("final NOTIFY");
    assert_eq!(sipfrag(&notify), "SIP/2.0 200 OK\r\n");
    assert!(notify
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert_eq!(
        ended(&h.receive(peer.bye())),
        [(call, EndReason::Transferred)]
    );
}

#[test]
fn a_failed_transfer_is_notified_and_the_call_stays() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "xfail");
    let (call, _) = h.confirmed_call(&mut peer);
    let refer = peer.in_dialog_with(
        "REFER",
        &[("Refer-To", "sip:bob@192.0.2.20"), ("Refer-Sub", "true")],
    );
    h.receive(SipMessage::Request(refer));
    h.ua.transfer_failed(h.now, call, 503, "Service Unavailable");
    let notify = only_request(&h.drain());
    assert_eq!(sipfrag(&notify), "SIP/2.0 503 Service Unavailable\r\n");
    h.peer_hangs_up(&mut peer, call);
}

#[test]
fn refer_without_one_refer_to_is_400_and_refer_sub_false_gets_no_notify() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "xbad");
    let (call, _) = h.confirmed_call(&mut peer);
    let out = h.receive(peer.in_dialog("REFER"));
    assert_eq!(statuses(&out), [400]);
    let refer = peer.in_dialog_with(
        "REFER",
        &[("Refer-To", "<sip:bob@192.0.2.20>"), ("Refer-Sub", "false")],
    );
    let out = h.receive(SipMessage::Request(refer));
    assert_eq!(response(&out, 202).headers.get("Refer-Sub"), Some("false"));
    assert!(requests(&out).is_empty(), "no NOTIFY with Refer-Sub: false");
    assert_eq!(transfer_requests(&out).len(), 1);
    assert_eq!(
        ended(&h.receive(peer.bye())),
        [(call, EndReason::Transferred)]
    );
}

#[test]
fn invite_with_replaces_names_the_call_it_replaces_or_gets_481_or_486() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "old");
    let (old, ok) = h.confirmed_call(&mut peer);
    let ours = to_tag(&ok).unwrap();
    let replaces = |to: &str, extra: &str| {
        format!("Replaces: old@{PEER_MEDIA_IP};to-tag={to};from-tag=peer-old{extra}\r\n")
    };
    // Any Request-URI: the replaced call's service decides.
    let mut newcomer = PeerCall::new("nobody-routes-this", "new");
    let text = newcomer.invite_text(
        &replaces(&ours, ""),
        Some(("application/sdp", &pcmu_sdp(30002))),
    );
    let out = h.receive(sip(&text));
    let incoming: Vec<Option<CallId>> = out
        .iter()
        .filter_map(|o| match o {
            UaOutput::IncomingCall { replaces, .. } => Some(*replaces),
            _ => None,
        })
        .collect();
    assert_eq!(incoming, [Some(old)]);
    newcomer.invite_branch = newcomer.fresh_branch();
    let text = newcomer.invite_text(
        &replaces("wrong", ""),
        Some(("application/sdp", &pcmu_sdp(30002))),
    );
    assert!(statuses(&h.receive(sip(&text))).contains(&481));
    newcomer.invite_branch = newcomer.fresh_branch();
    let text = newcomer.invite_text(
        &replaces(&ours, ";early-only"),
        Some(("application/sdp", &pcmu_sdp(30002))),
    );
    assert!(statuses(&h.receive(sip(&text))).contains(&486));
}

#[test]
fn session_timer_is_granted_to_a_refreshing_peer_and_expiry_ends_the_call() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "timer");
    let text = peer.invite_text(
        "Session-Expires: 120\r\nSupported: timer\r\n",
        Some(("application/sdp", &pcmu_sdp(30000))),
    );
    let out = h.receive(sip(&text));
    let call = incoming_call(&out);
    let ok = h.answer(&mut peer, call);
    assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uac"));
    assert_eq!(ok.headers.get("Require"), Some("timer"));
    h.receive(peer.ack(None));
    // A refresh (UPDATE without SDP) at 60 s moves the expiry.
    h.advance(Duration::from_secs(60));
    let out = h.receive(peer.in_dialog("UPDATE"));
    assert_eq!(statuses(&out), [200]);
    let out = h.advance(Duration::from_secs(80));
    assert!(ended(&out).is_empty(), "refreshed at 60 s: alive at 140 s");
    let out = h.advance(Duration::from_secs(10));
    assert_eq!(ended(&out), [(call, EndReason::SessionExpired)]);
    assert_eq!(
        requests(&out)[0].method,
        Method::Bye,
        "BYE (then its retransmissions)"
    );
}

#[test]
fn a_session_interval_below_min_se_gets_422() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "short");
    let text = peer.invite_text(
        "Session-Expires: 30\r\nSupported: timer\r\n",
        Some(("application/sdp", &pcmu_sdp(30000))),
    );
    let out = h.receive(sip(&text));
    assert_eq!(response(&out, 422).headers.get("Min-SE"), Some("90"));
}

#[test]
fn our_refer_follows_the_notify_progress() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "blind");
    let (call, _) = h.confirmed_call(&mut peer);
    h.ua.refer(h.now, call, "2002").unwrap();
    let out = h.drain();
    let refer = only_request(&out);
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(
        refer.headers.get("Refer-To"),
        Some("<sip:2002@example.com>")
    );
    assert!(
        h.ua.refer(h.now, call, "2003").is_err(),
        "one transfer at a time"
    );
    let out = h.receive(on_the_wire(&reply(&refer, 202, "Accepted")));
    assert!(matches!(
        out.as_slice(),
        [UaOutput::ReferAnswered { status: 202, .. }]
    ));
    let mut notify = peer.in_dialog_with(
        "NOTIFY",
        &[
            ("Event", "refer"),
            ("Subscription-State", "terminated;reason=noresource"),
            ("Content-Type", "message/sipfrag"),
        ],
    );
    notify.body = b"SIP/2.0 200 OK\r\n".to_vec();
    let out = h.receive(SipMessage::Request(notify));
    assert_eq!(statuses(&out), [200]);
    assert!(matches!(
        out.last(),
        Some(UaOutput::ReferProgress {
            status: 200,
            done: true,
            ..
        })
    ));
    // Any further NOTIFY is for no subscription of ours.
    let late = peer.in_dialog_with("NOTIFY", &[("Event", "refer")]);
    assert_eq!(statuses(&h.receive(SipMessage::Request(late))), [481]);
}

#[test]
fn a_second_forks_2xx_gets_its_own_ack_and_a_bye() {
    let mut h = Harness::new();
    let (call, invite) = place(&mut h, None);
    let out = h.receive_from(
        callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31000))),
        TRUNK,
    );
    assert_eq!(answered(&out), [call]);
    // The same INVITE answered by another UAS (To tag "other").
    let SipMessage::Response(mut other) = callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31004)))
    else {
        unreachable!()
    };
    let mut to = other.headers.to().unwrap();
    set_tag(&mut to, Some("other"));
    other.headers.set("To", to.to_string());
    let out = h.receive_from(SipMessage::Response(other), TRUNK);
    let sent = requests(&out);
    assert_eq!(
        sent.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        [Method::Ack, Method::Bye]
    );
    for r in &sent {
        assert_eq!(r.headers.to().unwrap().tag(), Some("other"));
    }
    assert!(
        answered(&out).is_empty() && ended(&out).is_empty(),
        "our call is untouched"
    );
    assert_eq!(h.ua.call_count(), 1);
}

/// The peer's 200 to our `reinvite`: its Contact at `contact`, its answer `sdp`.
fn reinvite_ok(reinvite: &Request, contact: &str, sdp: &str) -> Response {
    let mut ok = Response::for_request(reinvite, 200, "OK");
    ok.headers.push("Contact", format!("<sip:alice@{contact}>"));
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = sdp.as_bytes().to_vec();
    ok
}

/// Our re-INVITE (hold): a `sendonly` offer to the peer's Contact with the next CSeq and SDP
/// version; its 2xx gets our ACK (again on a retransmission), the answer is `MediaUpdated`;
/// the peer's own re-INVITE meanwhile gets 491; a refusal is `ReinviteFailed` and a second
/// re-INVITE may then go.
#[test]
fn our_reinvite_holds_the_peer_and_handles_glare_retransmission_and_refusal() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "hold-out");
    let (call, ok) = h.confirmed_call(&mut peer);
    let first_version = sdp_body(&ok).origin.session_version;

    h.ua.reinvite(h.now, call, sdp::Direction::SendOnly)
        .expect("a re-INVITE goes");
    assert!(
        h.ua.reinvite(h.now, call, sdp::Direction::SendRecv)
            .is_err(),
        "one at a time"
    );
    let out = h.drain();
    let reinvite = only_request(&out);
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(sent_to(&out), [addr(PEER_CONTACT)]);
    let offer = SessionDescription::parse(std::str::from_utf8(&reinvite.body).unwrap()).unwrap();
    assert_eq!(offer.media[0].direction(), Some(sdp::Direction::SendOnly));
    assert_eq!(offer.origin.session_version, first_version + 1);

    // Glare: the peer's re-INVITE while ours is out.
    let out = h.receive(peer.reinvite(&pcmu_sdp(30000)));
    assert_eq!(statuses(&out), [100, 491]);

    // The peer answers recvonly; we ACK, and again when the 200 is retransmitted.
    let answer = audio_sdp(30000, "0", "a=rtpmap:0 PCMU/8000\r\na=recvonly\r\n")
        .replace("a=sendrecv\r\n", "");
    let ok = reinvite_ok(&reinvite, PEER_CONTACT, &answer);
    let out = h.receive_from(SipMessage::Response(ok.clone()), PEER);
    let acks: Vec<Request> = requests(&out);
    assert_eq!(acks.len(), 1, "{out:?}");
    assert_eq!(acks[0].method, Method::Ack);
    let updates = media_updates(&out);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].1.direction, sdp::Direction::SendOnly);
    let out = h.receive_from(SipMessage::Response(ok), PEER);
    assert_eq!(requests(&out).len(), 1, "the ACK again");
    assert!(media_updates(&out).is_empty());

    // Resume, refused: the session stays, and the next offer may go.
    h.ua.reinvite(h.now, call, sdp::Direction::SendRecv)
        .expect("a re-INVITE goes");
    let reinvite = only_request(&h.drain());
    let out = h.receive_from(reply(&reinvite, 488, "Not Acceptable Here"), PEER);
    assert!(out
        .iter()
        .any(|o| matches!(o, UaOutput::ReinviteFailed { status: 488, .. })));
    h.ua.reinvite(h.now, call, sdp::Direction::SendRecv)
        .expect("free for the next");
    let reinvite = only_request(&h.drain());
    let out = h.advance(T1 * 64);
    assert!(
        out.iter()
            .any(|o| matches!(o, UaOutput::ReinviteFailed { status: 408, .. })),
        "Timer B: {out:?}"
    );
    let _ = reinvite;
    h.peer_hangs_up(&mut peer, call);
}

/// The 2xx of our re-INVITE is ACKed whatever happened meanwhile (RFC 3261 §13.2.2.4): the
/// owner hung up while it was out (our BYE took the next CSeq number), and the 2xx names a
/// new Contact (§12.2.1.2: a target refresh's 2xx replaces the remote target). The ACK
/// carries the re-INVITE's CSeq number, not the BYE's, and goes to the new Contact; without
/// it the peer would retransmit its 2xx for 32 s and then end the dialog itself.
#[test]
fn the_2xx_of_our_reinvite_is_acked_after_we_hung_up_at_its_new_contact() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "hold-bye");
    let (call, _) = h.confirmed_call(&mut peer);
    h.ua.reinvite(h.now, call, sdp::Direction::SendOnly)
        .expect("a re-INVITE goes");
    let reinvite = only_request(&h.drain());
    let bye = only_request(&h.hangup(call, 16));
    assert_eq!(bye.method, Method::Bye);
    let reinvite_seq = reinvite.headers.cseq().unwrap().seq;
    assert!(bye.headers.cseq().unwrap().seq > reinvite_seq);
    let moved = "192.0.2.10:5090";
    let ok = reinvite_ok(&reinvite, moved, &pcmu_sdp(30000));
    let out = h.receive_from(SipMessage::Response(ok.clone()), PEER);
    let acks = requests(&out);
    assert_eq!(acks.len(), 1, "{out:?}");
    assert_eq!(acks[0].method, Method::Ack);
    assert_eq!(acks[0].headers.cseq().unwrap().seq, reinvite_seq);
    assert_eq!(acks[0].uri.to_string(), format!("sip:alice@{moved}"));
    assert_eq!(sent_to(&out), [addr(moved)]);
    assert!(media_updates(&out).is_empty(), "the call is over");
    let out = h.receive_from(SipMessage::Response(ok), PEER);
    assert_eq!(requests(&out).len(), 1, "the ACK again");
    h.receive_from(
        SipMessage::Response(Response::for_request(&bye, 200, "OK")),
        PEER,
    );
    h.assert_drains();
}

/// A 2xx to our re-INVITE that comes after Timer B gave it up still gets its ACK (with the
/// re-INVITE's CSeq number) and nothing else: unacknowledged, the peer would end the whole
/// call 32 s later (RFC 3261 §13.3.1.4). The call stays up, the owner told 408.
#[test]
fn a_late_2xx_to_a_timed_out_reinvite_is_acked_and_the_call_stays() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "hold-late");
    let (call, _) = h.confirmed_call(&mut peer);
    h.ua.reinvite(h.now, call, sdp::Direction::SendOnly)
        .expect("a re-INVITE goes");
    let reinvite = only_request(&h.drain());
    let out = h.advance(T1 * 65);
    assert!(out
        .iter()
        .any(|o| matches!(o, UaOutput::ReinviteFailed { status: 408, .. })));
    let ok = reinvite_ok(&reinvite, PEER_CONTACT, &pcmu_sdp(30000));
    let out = h.receive_from(SipMessage::Response(ok), PEER);
    let sent = requests(&out);
    assert_eq!(
        sent.iter().map(|r| r.method.clone()).collect::<Vec<_>>(),
        [Method::Ack]
    );
    assert_eq!(
        sent[0].headers.cseq().unwrap().seq,
        reinvite.headers.cseq().unwrap().seq
    );
    assert!(ended(&out).is_empty() && media_updates(&out).is_empty());
    assert_eq!(h.ua.call_count(), 1);
    h.peer_hangs_up(&mut peer, call);
}

/// Nobody rings for a re-INVITE: one the peer answers with a provisional and then nothing
/// fails after Timer B's 64*T1 all the same (the call stays, the next offer may go), and one
/// still waiting when the call ends is gone 64*T1 after it was sent, with the call.
#[test]
fn a_reinvite_left_at_a_provisional_fails_after_64_t1_and_never_outlives_its_call() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "hold-quiet");
    let (call, _) = h.confirmed_call(&mut peer);
    h.ua.reinvite(h.now, call, sdp::Direction::SendOnly)
        .expect("a re-INVITE goes");
    let reinvite = only_request(&h.drain());
    h.receive_from(reply(&reinvite, 100, "Trying"), PEER);
    let out = h.advance(T1 * 64 - ms(1));
    assert!(!out
        .iter()
        .any(|o| matches!(o, UaOutput::ReinviteFailed { .. })));
    let out = h.advance(ms(1));
    assert!(
        out.iter()
            .any(|o| matches!(o, UaOutput::ReinviteFailed { status: 408, .. })),
        "{out:?}"
    );
    h.ua.reinvite(h.now, call, sdp::Direction::SendOnly)
        .expect("free for the next");
    let reinvite = only_request(&h.drain());
    h.receive_from(reply(&reinvite, 183, "Session Progress"), PEER);
    // The call ends meanwhile (our BYE, which the peer answers).
    let bye = only_request(&h.hangup(call, 16));
    h.receive_from(on_the_wire(&reply(&bye, 200, "OK")), PEER);
    assert_eq!(h.ua.call_count(), 0);
    let out = h.advance(T1 * 64);
    assert!(
        !out.iter()
            .any(|o| matches!(o, UaOutput::ReinviteFailed { .. })),
        "nothing to fail on an ended call: {out:?}"
    );
    h.assert_drains();
}

// ---- RFC 4475: what a UAS answers the torture messages ----------------------------------------

/// A request the peer writes out in full (the torture messages are not `PeerCall`'s shape).
fn raw_request(method_line: &str, headers: &str, body: &str) -> String {
    format!(
        "{method_line}\r\nVia: SIP/2.0/UDP {PEER};branch=z9hG4bK-raw-{}\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        method_line.len(),
        body.len()
    )
}

/// RFC 4475 intmeth, esc02: an endpoint's 501 lists the methods it understands.
#[test]
fn a_501_lists_what_we_implement_in_allow() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "allow501");
    let out = h.receive(peer.out_of_dialog("RE%47IST%45R"));
    assert_eq!(allow(&response(&out, 501)), ALLOW);
    h.assert_drains();
}

/// RFC 4475 bext01 (RFC 3261 §8.2.2.3): OPTIONS requiring what we lack gets 420 listing it;
/// Proxy-Require is for proxies and is not looked at.
#[test]
fn options_requiring_an_unknown_extension_gets_420() {
    let mut h = Harness::new();
    let text = raw_request(
        "OPTIONS sip:user@example.com SIP/2.0",
        "To: sip:j_user@example.com\r\nFrom: sip:caller@example.net;tag=242etr\r\n\
         Max-Forwards: 6\r\nCall-ID: bext01.0ha0isndaksdj\r\n\
         Require: nothingSupportsThis, nothingSupportsThisEither\r\n\
         Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\nCSeq: 8 OPTIONS\r\n",
        "",
    );
    let out = h.receive(sip(&text));
    let refusal = response(&out, 420);
    let unsupported: Vec<&str> = refusal.headers.get_all("Unsupported").collect();
    assert_eq!(
        unsupported,
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    let proxy_only = without_header(&text, "Require");
    let out = h.receive(sip(&proxy_only.replace("raw-", "raw-proxy-")));
    assert_eq!(statuses(&out), [200]);
    h.assert_drains();
}

/// RFC 4475 sdp01: an INVITE whose Accept leaves out application/sdp can get no answer we
/// could write: 406 with a Warning saying so, before any media is asked for. An Accept that
/// lists SDP (or a wildcard covering it) is fine.
#[test]
fn an_invite_accepting_no_sdp_gets_406() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "sdp01");
    let sdp = pcmu_sdp(30000);
    let text = peer.invite_text(
        "Accept: text/nobodyKnowsThis\r\n",
        Some(("application/sdp", &sdp)),
    );
    let out = h.receive(sip(&text));
    let refusal = response(&out, 406);
    assert!(refusal
        .headers
        .get("Warning")
        .is_some_and(|w| w.starts_with("399 ")));
    assert_invite_refused(&mut h, &peer, &out, 406);

    for accept in ["application/sdp, text/plain", "Application/*;q=0.5", "*/*"] {
        let peer = PeerCall::new("echo", &format!("accept-{}", accept.len()));
        let text = peer.invite_text(
            &format!("Accept: {accept}\r\n"),
            Some(("application/sdp", &sdp)),
        );
        let out = h.receive(sip(&text));
        assert!(has_incoming_call(&out), "Accept: {accept}");
    }
}

/// RFC 3261 §8.2.1 before §8.2.2 (RFC 4475 unksm2, mismatch02): a method we do not implement
/// is refused for what it is (405, 501) even when headers we would check for our own
/// methods are unusable; a CSeq out of range is still a 400 (scalar02).
#[test]
fn methods_we_do_not_implement_are_refused_before_their_headers_are_inspected() {
    let mut h = Harness::new();
    let unksm2 = raw_request(
        "REGISTER sip:example.com SIP/2.0",
        "To: isbn:2983792873\r\nFrom: <http://www.example.com>;tag=3234233\r\n\
         Call-ID: unksm2.daksdj@hyphenated-host.example.com\r\nCSeq: 234902 REGISTER\r\n\
         Max-Forwards: 70\r\nContact: <name:John_Smith>\r\n",
        "",
    );
    let out = h.receive(sip(&unksm2));
    let refusal = response(&out, 405);
    assert_eq!(allow(&refusal), ALLOW);
    let to = refusal.headers.get("To").expect("To copied");
    assert!(to.starts_with("isbn:2983792873;tag="), "{to}");

    let mismatch02 = raw_request(
        "NEWMETHOD sip:user@example.com SIP/2.0",
        "To: sip:j.user@example.com\r\nFrom: sip:caller@example.net;tag=34525\r\n\
         Max-Forwards: 6\r\nCall-ID: mismatch02.dj0234sxdfl3\r\nCSeq: 8 INVITE\r\n",
        "",
    );
    assert_eq!(statuses(&h.receive(sip(&mismatch02))), [501]);

    let scalar = unksm2
        .replace("CSeq: 234902", "CSeq: 36893488147419103232")
        .replace("raw-", "raw-scalar-");
    let out = h.receive(sip(&scalar));
    assert_eq!(statuses(&out), [400]);
    // A method we implement gets every check: the same CSeq mismatch is a 400 (mismatch01).
    let mismatch01 = mismatch02
        .replace("NEWMETHOD", "OPTIONS")
        .replace("raw-", "raw-01-");
    assert_eq!(statuses(&h.receive(sip(&mismatch01))), [400]);
    h.assert_drains();
}

/// RFC 4475 inv2543: an RFC 2543 INVITE (no branch, no From tag, no Content-Length, no
/// Max-Forwards) is a call like any other.
#[test]
fn an_rfc2543_invite_without_branch_is_served() {
    let mut h = Harness::new();
    let sdp = pcmu_sdp(30000);
    let text = format!(
        "INVITE sip:echo@{LOCAL} SIP/2.0\r\nVia: SIP/2.0/UDP {PEER}\r\n\
         From: <sip:+13035551111@ift.client.example.net;user=phone>\r\n\
         To: sip:echo@{LOCAL}\r\nCall-ID: inv2543.1717@ift.client.example.com\r\n\
         CSeq: 56 INVITE\r\nContent-Type: application/sdp\r\n\r\n{sdp}"
    );
    let out = h.receive(sip(&text));
    assert_eq!(statuses(&out), [100]);
    assert!(has_incoming_call(&out));
}

/// RFC 4475 badinv01: a Via that does not parse is still a Via to copy; the 400 goes back
/// to where the request came from.
#[test]
fn a_request_with_an_unparseable_via_gets_400_all_the_same() {
    let mut h = Harness::new();
    let text = "INVITE sip:user@example.com SIP/2.0\r\nTo: sip:j.user@example.com\r\n\
                From: sip:caller@example.net;tag=134161461246\r\nMax-Forwards: 7\r\n\
                Call-ID: badinv01.0ha0isndaksdjasdf3234nas\r\nCSeq: 8 INVITE\r\n\
                Via: SIP/2.0/UDP 192.0.2.15;;,;,,\r\nContact: \"Joe\" <sip:joe@example.org>;;;;\r\n\
                Content-Length: 0\r\n\r\n";
    let out = h.receive(sip(text));
    assert_eq!(sent_to(&out), [addr(PEER)]);
    let refusal = response(&out, 400);
    assert_eq!(refusal.headers.get("Via"), Some("SIP/2.0/UDP 192.0.2.15;;"));
    assert!(to_tag(&refusal).is_some());
}

/// What the transport could not parse: 416 for a Request-URI scheme we do not serve, 505 for
/// another SIP version, 400 for the rest; an ACK is never answered, and untrusted sources
/// hear nothing when `[trust] untrusted` says to ignore them.
#[test]
fn unparseable_requests_are_answered_statelessly() {
    use crate::sip::message::Unparsed;
    let mut h = Harness::new();
    let headers = "To: sip:user@example.com\r\nFrom: sip:caller@example.net;tag=384\r\n\
                   Max-Forwards: 3\r\nCall-ID: unkscm.nasdfasser0q239nwsdfasdkl34\r\n\
                   CSeq: 3923423 OPTIONS\r\n";
    let unparsed = |line: &str| {
        let text = raw_request(line, headers, "");
        let error = parse(text.as_bytes()).expect_err("must not parse");
        Unparsed::salvage(text.as_bytes(), error)
    };
    for (line, status) in [
        (
            "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
            416,
        ),
        ("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", 416),
        ("OPTIONS sip:t.watson@example.org SIP/7.0", 505),
        ("INVITE  sip:user@example.com  SIP/2.0", 400),
    ] {
        let request = unparsed(line).expect("salvaged");
        h.ua.handle_unparsed(request, udp(PEER));
        let out = h.drain();
        let answer = response(&out, status);
        assert_eq!(sent_to(&out), [addr(PEER)], "{line}");
        assert!(to_tag(&answer).is_some(), "{line}");
        assert_eq!(
            answer.headers.get("Call-ID"),
            Some("unkscm.nasdfasser0q239nwsdfasdkl34")
        );
    }
    assert!(unparsed("ACK <sip:user@example.com> SIP/2.0").is_none());
    assert_eq!(
        h.ua.transaction_count(),
        0,
        "answered without a transaction"
    );
}

/// Heap bytes an ended call leaves in the UA while its INVITE and BYE server transactions
/// absorb retransmissions (RFC 6026's Timer L and RFC 3261's Timer J, 32 s over UDP): at
/// 4,000 calls a second, 128,000 calls' worth. 1,841 bytes before the transactions kept
/// their response as bytes, four timer slots and their key once; 995 after (2026-12-07).
#[test]
fn an_ended_call_leaves_under_1100_bytes_while_its_transactions_wait() {
    const CALLS: usize = 200;
    fn round(h: &mut Harness, name: &str) {
        for i in 0..CALLS {
            let mut peer = PeerCall::new("echo", &format!("{name}-{i}"));
            let (call, _) = h.confirmed_call(&mut peer);
            assert_eq!(
                ended(&h.receive(peer.bye())),
                [(call, EndReason::RemoteHangup)]
            );
        }
    }
    let mut h = Harness::new();
    // A first round grows the tables and queues to their size for this many calls.
    round(&mut h, "first");
    h.advance(T1 * 64);
    assert_eq!(h.ua.transaction_count(), 0);
    let held = crate::media::alloc_counter::bytes_held_after(|| round(&mut h, "second"));
    assert_eq!(h.ua.transaction_count(), 2 * CALLS, "INVITE and BYE wait");
    let per_call = held / CALLS as isize;
    eprintln!("an ended call holds {per_call} bytes while its transactions wait");
    assert!(per_call <= 1_100, "{per_call} bytes a call");
    h.assert_drains();
}
