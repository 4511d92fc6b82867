//! The user agent core: turns SIP requests into calls, and calls back into SIP.
//!
//! Owns: every call's dialog and INVITE session (offer/answer, ringing, ACK, BYE, CANCEL),
//! the transaction layer, inbound routing (`[[route]]`) and the answers to requests outside
//! calls (OPTIONS, unknown methods, malformed requests).
//! Must not: touch sockets, read the clock, or allocate media. It asks its owner for media
//! through [`UaOutput::IncomingCall`] and is told the result through [`UserAgent::accept`] /
//! [`UserAgent::reject`] — the seam where a dialog binds to a media connection.
//!
//! Every call ends exactly once: either the dialog ends it ([`UaOutput::CallEnded`]) or the
//! owner does ([`UserAgent::hangup`], which emits nothing back, as the owner already knows).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::dialog::{set_tag, Dialog};
use super::message::{Headers, Host, Method, NameAddr, Request, Response, SipMessage, Uri, Via};
use super::routing::{Route, Service};
use super::transaction::{
    new_branch, Peer, TimerValues, TransactionKey, TransactionLayer, Transport, TxEvent,
};
use crate::sdp::{self, LocalCapabilities, NegotiatedMedia, SessionDescription, SessionVersion};

/// Our id for a call (one dialog bound to one connection).
pub type CallId = u64;

/// Methods we implement, for Allow headers and 405/501 decisions.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK";

/// Extensions we implement (RFC 3262 reliable provisionals, RFC 3891 Replaces, RFC 4028
/// session timers, RFC 4488 Refer-Sub).
pub const SUPPORTED: &str = "100rel, replaces, timer, norefersub";

/// Seconds a REFER's implicit subscription lasts before its final NOTIFY (RFC 3515 §2.4.4).
const REFER_SUBSCRIPTION_S: u32 = 60;

/// What the UA needs to know about itself.
#[derive(Debug, Clone)]
pub struct UaSettings {
    pub user_agent: String,
    pub timers: TimerValues,
    pub routes: Vec<Route>,
    pub capabilities: LocalCapabilities,
    /// Who may send out-of-dialog requests (INVITE, OPTIONS ...): the trunks' sources.
    pub trust: super::trust::Trust,
    /// SRTP policy of calls over TLS whose route sets none (`[sip] tls_srtp`).
    pub tls_srtp: sdp::SrtpPolicy,
}

/// Why a call's dialog ended, as seen by SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// BYE from the peer.
    RemoteHangup,
    /// CANCEL before we answered.
    Cancelled,
    /// Our 2xx was never acknowledged.
    AckTimeout,
    /// The INVITE could not be completed (we rejected it, or its transaction failed).
    InviteFailed,
    /// The ACK did not carry a usable answer to the offer in our 2xx, or the 2xx to our
    /// INVITE no usable answer to our offer.
    BadAnswer,
    /// Our INVITE got this final error status (3xx–6xx).
    Rejected(u16),
    /// Our INVITE got no final response (Timer B).
    NoAnswer,
    /// The peer hung up after we accepted its REFER: the call was transferred.
    Transferred,
    /// The session timer (RFC 4028) ran out without a refresh.
    SessionExpired,
}

/// Credentials for a trunk's Digest challenge. Debug output hides the password (configs and
/// trunks are logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// An INVITE we send: MakeCall, or a transfer we carry out.
#[derive(Debug, Clone)]
pub struct OutboundInvite {
    /// Request-URI.
    pub target: Uri,
    /// The To header (without tag).
    pub to: NameAddr,
    /// Our identity (without tag).
    pub from: NameAddr,
    /// The next hop (the trunk).
    pub destination: Peer,
    /// Our SIP address as the destination reaches it.
    pub local: SocketAddr,
    /// The connection's RTP address, offered in our SDP.
    pub local_rtp: SocketAddr,
    pub credentials: Option<Credentials>,
    /// SRTP policy for this call (the route's or trunk's), else the global one.
    pub srtp: Option<sdp::SrtpPolicy>,
    /// Codecs to offer (the trunk's), else the global ones.
    pub codecs: Option<Vec<sdp::Codec>>,
    /// Headers the INVITE carries besides ours (Referred-By, Replaces).
    pub headers: Vec<(String, String)>,
    /// The call whose REFER this INVITE carries out: its progress goes there as NOTIFY.
    pub refer_of: Option<CallId>,
    /// What the call is, as a route's service would say (for a later Replaces).
    pub service: Service,
}

/// What the UA wants its owner to do or know.
#[derive(Debug)]
pub enum UaOutput {
    /// Send this message.
    Transmit { to: Peer, message: SipMessage },
    /// A routed INVITE: allocate media and call [`UserAgent::accept`] (or `reject`).
    IncomingCall {
        call: CallId,
        service: Service,
        /// The peer's media from its offer; None when the INVITE had no SDP (we offer in 2xx).
        remote_media: Option<NegotiatedMedia>,
        from: String,
        to: String,
        /// The caller's number: the user part of the P-Asserted-Identity URI (RFC 3325) when
        /// the INVITE has one and comes from a trusted source, else of the From URI; empty
        /// when neither has a user part.
        remote_dn: String,
        /// The number called: the matched route's `dn`, else the Request-URI's user part.
        route_dn: String,
        /// Our SIP address as the peer reaches it (used as the media address fallback).
        local: SocketAddr,
        /// The route's `conference` group: the room a `conference` route joins.
        conference: Option<String>,
        /// The Request-URI's `play=` parameter (RFC 4240 announcements), %-decoded, else the
        /// route's `prompt`.
        play: Option<String>,
        /// An INVITE with Replaces (RFC 3891): the call whose place this one takes.
        replaces: Option<CallId>,
    },
    /// The call's media changed (answer in ACK, re-INVITE).
    MediaUpdated {
        call: CallId,
        media: NegotiatedMedia,
    },
    /// We sent the 2xx.
    CallAnswered { call: CallId },
    /// A DTMF digit signalled in a SIP INFO (application/dtmf-relay or application/dtmf).
    Digit {
        call: CallId,
        digit: char,
        duration_ms: u32,
    },
    /// The dialog is over; the owner releases the call's connection.
    CallEnded { call: CallId, reason: EndReason },
    /// A provisional response (180, 183) to our INVITE.
    Progress { call: CallId, status: u16 },
    /// The peer asks us (REFER, RFC 3515) to call `target`; we answered 202 and NOTIFY
    /// "100 Trying". The owner places the call ([`UserAgent::invite`] with `refer_of`) or
    /// gives up ([`UserAgent::transfer_failed`]).
    TransferRequested {
        call: CallId,
        target: Uri,
        /// Headers from the Refer-To URI the INVITE must carry (Replaces).
        headers: Vec<(String, String)>,
        referred_by: String,
        /// What serves the call being transferred (the new call is the same).
        service: Service,
    },
    /// Our REFER (BlindTransfer) got this final response.
    ReferAnswered { call: CallId, status: u16 },
    /// A NOTIFY about our REFER: the transfer target's status; `done` when it is final.
    ReferProgress {
        call: CallId,
        status: u16,
        done: bool,
    },
}

/// The user agent. One per process, owned by the control plane.
pub struct UserAgent {
    settings: UaSettings,
    transactions: TransactionLayer,
    calls: HashMap<CallId, Call>,
    /// (Call-ID, our tag) → call, for requests inside a dialog.
    by_dialog: HashMap<(String, String), CallId>,
    /// Ringing calls due to be answered, ordered by time.
    answer_timers: BTreeSet<(Instant, CallId)>,
    outputs: VecDeque<UaOutput>,
    rng: rand::rngs::StdRng,
    next_call: CallId,
    /// Shutting down: new INVITEs get 503 with Retry-After; calls in progress carry on.
    draining: bool,
    counters: SipCounters,
    /// Our client transactions whose outcome matters.
    client_tx: HashMap<TransactionKey, ClientTx>,
    /// Session timers (RFC 4028) by expiry.
    session_timers: BTreeSet<(Instant, CallId)>,
    /// Reliable provisional responses (RFC 3262) to retransmit, by when.
    prack_timers: BTreeSet<(Instant, CallId)>,
}

/// What one of our client transactions is for.
#[derive(Debug, Clone)]
enum ClientTx {
    /// A call's INVITE; the ACK of its 2xx, re-sent on each 2xx retransmission.
    Invite {
        call: CallId,
        ack: Option<Box<(Peer, Request)>>,
    },
    /// A call's REFER (BlindTransfer).
    Refer { call: CallId },
}

/// Requests received and responses sent, for metrics (transaction-level: retransmissions of
/// the same response are not counted again).
#[derive(Debug, Clone, Default)]
pub struct SipCounters {
    pub requests_received: std::collections::BTreeMap<String, u64>,
    pub responses_sent: std::collections::BTreeMap<u16, u64>,
    /// Out-of-dialog requests from sources outside every trunk (refused or ignored).
    pub untrusted_requests: u64,
}

/// Seconds a draining server asks callers to wait before retrying (Retry-After).
const DRAIN_RETRY_AFTER_S: u32 = 30;

/// One call's SIP side.
struct Call {
    dialog: Dialog,
    /// The INVITE that created the call, to build its responses.
    invite: Request,
    /// Its server transaction (the current INVITE's, after a re-INVITE).
    invite_tx: TransactionKey,
    /// Where the peer's signalling comes from.
    source: Peer,
    /// Our SIP address as the peer reaches it.
    local: SocketAddr,
    state: CallState,
    /// The peer's offer that we must answer, if it made one.
    remote_offer: Option<SessionDescription>,
    /// Our offer in a 2xx, waiting for the answer in the ACK.
    our_offer: Option<SessionDescription>,
    /// Our current SDP (answer or offer) and its o= version.
    local_sdp: Option<SessionDescription>,
    sdp_version: SessionVersion,
    /// The bound connection's local RTP address, once accepted.
    local_rtp: Option<SocketAddr>,
    answer_delay: Duration,
    /// Reason header of the BYE held back in `ByePending`.
    pending_bye_reason: Option<String>,
    /// Our SDES-SRTP keys for this call (see [`new_srtp_keys`]).
    srtp_keys: sdp::SrtpKeys,
    /// What this call negotiates with: the UA's capabilities with its route's SRTP policy.
    capabilities: LocalCapabilities,
    /// What serves the call (its route's service; for our INVITEs, the owner's choice).
    service: Service,
    /// Our INVITE's state, for calls we placed.
    outbound: Option<Box<Outbound>>,
    /// A REFER from the peer we accepted: the transfer we are carrying out.
    transfer: Option<Transfer>,
    /// Our REFER (BlindTransfer) is out.
    referring: bool,
    /// Negotiated session timer (RFC 4028): interval, and whether we refresh.
    session_expires: Option<(Duration, bool)>,
    /// The peer's INVITE: 100rel supported (we may send reliable provisionals) or required
    /// (every provisional but 100 must be reliable).
    peer_100rel: Option<bool>,
    /// RSeq of our last reliable provisional, and the one waiting for its PRACK.
    rseq: u32,
    unacked_provisional: Option<UnackedProvisional>,
}

/// A reliable provisional response not yet PRACKed (RFC 3262 §3).
#[derive(Debug, Clone)]
struct UnackedProvisional {
    response: Response,
    rseq: u32,
    interval: Duration,
    /// No PRACK by then: the INVITE is refused (5xx).
    give_up: Instant,
}

/// The UAC side of a call we placed.
#[derive(Debug)]
struct Outbound {
    credentials: Option<Credentials>,
    /// A challenge was answered (once per call).
    authenticated: bool,
    /// A provisional response came, so CANCEL may go (§9.1).
    provisional: bool,
    /// The owner hung up before any provisional: CANCEL as soon as one comes.
    cancel_wanted: bool,
    /// The answer in an 18x (early media).
    early_answer: Option<NegotiatedMedia>,
    /// The REFER this INVITE carries out.
    refer_of: Option<CallId>,
}

/// A REFER the peer sent us, accepted.
#[derive(Debug, Clone)]
struct Transfer {
    /// NOTIFYs wanted (no `Refer-Sub: false`).
    notify: bool,
    /// The REFER's CSeq, for the NOTIFY's `Event: refer;id=`.
    id: u32,
    /// The transfer target answered.
    succeeded: bool,
}

/// Fresh SDES keys for every configured suite the media layer implements, from the OS-seeded
/// thread RNG (not the UA's 64-bit-seeded one: these are long-term secrets for the call).
fn new_srtp_keys(caps: &LocalCapabilities) -> sdp::SrtpKeys {
    use base64::Engine as _;
    use rand::RngCore as _;
    sdp::SrtpKeys::from_fn(&caps.srtp_suites, |suite| {
        let profile = crate::media::srtp::SrtpProfile::from_sdes_name(suite)?;
        let mut key_salt = vec![0u8; profile.master_key_len() + profile.master_salt_len()];
        rand::rng().fill_bytes(&mut key_salt);
        Some(base64::engine::general_purpose::STANDARD.encode(&key_salt))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// IncomingCall emitted, waiting for the owner to accept or reject.
    AwaitingMedia,
    /// 180 sent, answer due at the timer.
    Ringing,
    /// 2xx sent, ACK not yet seen.
    Answered,
    /// ACK seen.
    Confirmed,
    /// The owner hung up before the ACK came: the BYE waits for the ACK or its timeout
    /// (RFC 3261 §15: no BYE on an INVITE whose 2xx is not yet acknowledged).
    ByePending,
    /// Our INVITE is out, no final response yet.
    Calling,
    /// The owner hung up our ringing INVITE: CANCEL sent (or due at the first provisional);
    /// the call goes with the final response, a late 2xx gets ACK and BYE.
    Cancelling,
}

impl UserAgent {
    pub fn new(settings: UaSettings, seed: u64) -> UserAgent {
        UserAgent {
            transactions: TransactionLayer::new(settings.timers),
            settings,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            answer_timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            next_call: 1,
            draining: false,
            counters: SipCounters::default(),
            client_tx: HashMap::new(),
            session_timers: BTreeSet::new(),
            prack_timers: BTreeSet::new(),
        }
    }

    /// One parsed message from the transport. `local` is our address as `source` reaches it.
    pub fn handle_message(
        &mut self,
        now: Instant,
        message: SipMessage,
        source: Peer,
        local: SocketAddr,
    ) {
        let message = match message {
            SipMessage::Request(mut request) => {
                *self
                    .counters
                    .requests_received
                    .entry(request.method.as_str().to_string())
                    .or_default() += 1;
                let out_of_dialog = request.headers.to().map_or(true, |to| to.tag().is_none());
                if out_of_dialog
                    && request.method != Method::Ack
                    && !self.settings.trust.allows(source.addr.ip())
                {
                    self.counters.untrusted_requests += 1;
                    tracing::debug!(source = %source.addr, method = request.method.as_str(), "request from outside the trunks");
                    if self.settings.trust.untrusted == super::trust::Untrusted::Ignore {
                        // Silence: a scanner learns nothing, not even that SIP is here.
                        return;
                    }
                }
                if let Err(e) = request.check_mandatory() {
                    self.answer_malformed(&request, source, &e.to_string());
                    return;
                }
                stamp_via(&mut request, source.addr);
                SipMessage::Request(request)
            }
            SipMessage::Response(response) => {
                // A response we cannot match is dropped by the transaction layer anyway; one
                // missing its CSeq or Via could only confuse it.
                if response.headers.cseq().is_err() || response.headers.top_via().is_err() {
                    tracing::debug!(status = response.status, "dropping malformed response");
                    return;
                }
                SipMessage::Response(response)
            }
        };
        self.transactions.handle_message(now, message, source);
        self.drain_transactions(now, Some(local));
    }

    /// Time has passed: retransmissions, timeouts, ringing calls to answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transactions.handle_timeout(now);
        self.drain_transactions(now, None);
        while let Some(&(due, call)) = self.answer_timers.first() {
            if due > now {
                break;
            }
            self.answer_timers.pop_first();
            self.send_answer(now, call);
        }
        self.expire_sessions(now);
        self.retransmit_provisionals(now);
    }

    /// When `handle_timeout` must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.transactions.poll_timeout().map(|(at, _)| at);
        let ring = self.answer_timers.first().map(|(at, _)| *at);
        let session = self.session_timers.first().map(|(at, _)| *at);
        let prack = self.prack_timers.first().map(|(at, _)| *at);
        [tx, ring, session, prack].into_iter().flatten().min()
    }

    pub fn poll_output(&mut self) -> Option<UaOutput> {
        self.outputs.pop_front()
    }

    /// Media is ready for `call` at `local_rtp`: answer (now, or after the route's ring time).
    pub fn accept(&mut self, now: Instant, call_id: CallId, local_rtp: SocketAddr) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.state != CallState::AwaitingMedia {
            return;
        }
        call.local_rtp = Some(local_rtp);
        if call.answer_delay.is_zero() {
            self.send_answer(now, call_id);
            return;
        }
        call.state = CallState::Ringing;
        self.send_provisional(now, call_id, 180, "Ringing", None);
        let due = now + self.calls[&call_id].answer_delay;
        self.answer_timers.insert((due, call_id));
    }

    /// The owner wants more time before answering (CUAE AcceptCall): 180 Ringing, the call
    /// still waits for [`UserAgent::accept`] or [`UserAgent::reject`].
    pub fn ring(&mut self, now: Instant, call_id: CallId) -> bool {
        let Some(call) = self.calls.get(&call_id) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia {
            return false;
        }
        self.send_provisional(now, call_id, 180, "Ringing", None);
        true
    }

    /// Early media (CUAE AcceptCall with a reserved connection): 183 Session Progress with
    /// our answer for `local_rtp`, reliable (RFC 3262) when the caller supports 100rel. The
    /// call still waits for [`UserAgent::accept`] (the same answer in the 200) or `reject`.
    /// False when the call is not waiting, or its INVITE had no offer to answer.
    pub fn early_media(&mut self, now: Instant, call_id: CallId, local_rtp: SocketAddr) -> bool {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia || call.local_rtp.is_some() {
            return false;
        }
        let Some(offer) = &call.remote_offer else {
            return false;
        };
        let Ok((answer, _)) = sdp::answer(
            offer,
            &call.capabilities,
            local_rtp,
            call.sdp_version,
            &call.srtp_keys,
        ) else {
            return false;
        };
        call.local_rtp = Some(local_rtp);
        call.local_sdp = Some(answer.clone());
        self.send_provisional(now, call_id, 183, "Session Progress", Some(&answer));
        true
    }

    /// Redirects an unanswered call to `target`: 302 with that Contact. A target without a
    /// scheme is a user at the host the caller called (`sip:<target>@<Request-URI host>`).
    pub fn redirect(&mut self, now: Instant, call_id: CallId, target: &str) -> bool {
        let Some(call) = self.calls.get(&call_id) else {
            return false;
        };
        if call.state != CallState::AwaitingMedia {
            return false;
        }
        let target = if target.contains(':') {
            target.to_string()
        } else {
            let mut uri = call.invite.uri.clone();
            uri.user = Some(target.to_string());
            uri.password = None;
            uri.params.clear();
            uri.headers = None;
            uri.to_string()
        };
        let mut response = self.response_for_call(call_id, 302, "Moved Temporarily", None);
        response.headers.set("Contact", format!("<{target}>"));
        self.respond_invite(now, call_id, response);
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: EndReason::InviteFailed,
        });
        true
    }

    /// Whether the call is still waiting for an answer (no 2xx sent).
    pub fn is_unanswered(&self, call_id: CallId) -> bool {
        self.calls
            .get(&call_id)
            .is_some_and(|c| c.state == CallState::AwaitingMedia)
    }

    /// Places a call: INVITE with our offer for `local_rtp` to the destination. The outcome
    /// comes as [`UaOutput::MediaUpdated`] + [`UaOutput::CallAnswered`], or
    /// [`UaOutput::CallEnded`] (Rejected, NoAnswer, BadAnswer).
    pub fn invite(&mut self, now: Instant, out: OutboundInvite) -> Result<CallId, String> {
        let local_tag = self.random_token();
        let call_id_header = format!("{}@{}", self.random_token(), host_port(out.local));
        let mut from = out.from.clone();
        set_tag(&mut from, Some(&local_tag));
        let mut to = out.to.clone();
        set_tag(&mut to, None);
        let mut capabilities = self.settings.capabilities.clone();
        if let Some(policy) = out.srtp {
            capabilities.srtp = policy;
        }
        if let Some(codecs) = &out.codecs {
            capabilities.codecs = codecs.clone();
        }
        let srtp_keys = new_srtp_keys(&capabilities);
        let version = SessionVersion {
            session_id: self.rng.random::<u32>() as u64,
            version: 1,
        };
        let offer = sdp::offer(&capabilities, out.local_rtp, version, &srtp_keys);
        let branch = new_branch(self.rng.random());
        let transport = out.destination.transport;
        let mut headers = Headers::default();
        headers.push("Via", our_via(transport, out.local, &branch).to_string());
        headers.push("Max-Forwards", "70");
        headers.push("From", from.to_string());
        headers.push("To", to.to_string());
        headers.push("Call-ID", call_id_header);
        headers.push("CSeq", "1 INVITE");
        headers.push("Contact", contact_for(transport, out.local));
        headers.push("Allow", ALLOW);
        // No "timer": we never refresh sessions ourselves (RFC 4028 lets the UAS do it).
        headers.push("Supported", "replaces, norefersub");
        headers.push("User-Agent", self.settings.user_agent.clone());
        for (name, value) in &out.headers {
            headers.push(name, value.clone());
        }
        headers.push("Content-Type", "application/sdp");
        let request = Request {
            method: Method::Invite,
            uri: out.target.clone(),
            headers,
            body: offer.to_string().into_bytes(),
        };
        let dialog = Dialog::new_uac(&request).map_err(|e| e.to_string())?;
        let key = self
            .transactions
            .send_request(now, request.clone(), out.destination)
            .map_err(|e| e.to_string())?;
        let call_id = self.next_call;
        self.next_call += 1;
        self.client_tx.insert(
            key.clone(),
            ClientTx::Invite {
                call: call_id,
                ack: None,
            },
        );
        self.by_dialog
            .insert((dialog.call_id.clone(), dialog.local_tag.clone()), call_id);
        self.calls.insert(
            call_id,
            Call {
                dialog,
                invite: request,
                invite_tx: key,
                source: out.destination,
                local: out.local,
                state: CallState::Calling,
                remote_offer: None,
                our_offer: Some(offer.clone()),
                local_sdp: Some(offer),
                sdp_version: version,
                local_rtp: Some(out.local_rtp),
                answer_delay: Duration::ZERO,
                pending_bye_reason: None,
                srtp_keys,
                capabilities,
                service: out.service,
                outbound: Some(Box::new(Outbound {
                    credentials: out.credentials,
                    authenticated: false,
                    provisional: false,
                    cancel_wanted: false,
                    early_answer: None,
                    refer_of: out.refer_of,
                })),
                transfer: None,
                referring: false,
                session_expires: None,
                peer_100rel: None,
                rseq: 0,
                unacked_provisional: None,
            },
        );
        self.drain_transactions(now, None);
        Ok(call_id)
    }

    /// The transfer the peer asked for cannot be carried out (no trunk, no media): the final
    /// NOTIFY says so and the call stays as it was.
    pub fn transfer_failed(&mut self, now: Instant, call_id: CallId, status: u16, reason: &str) {
        self.transfer_outcome(now, call_id, status, reason);
    }

    /// BlindTransfer: REFER the peer to `target` (a SIP URI, or a user at the peer's host).
    /// The answer comes as [`UaOutput::ReferAnswered`], the progress as
    /// [`UaOutput::ReferProgress`].
    pub fn refer(&mut self, now: Instant, call_id: CallId, target: &str) -> Result<(), String> {
        let branch = new_branch(self.rng.random());
        let Some(call) = self.calls.get_mut(&call_id) else {
            return Err(format!("call {call_id} does not exist"));
        };
        if call.state != CallState::Confirmed {
            return Err(format!("call {call_id} is not established"));
        }
        if call.referring {
            return Err(format!("call {call_id} is already being transferred"));
        }
        let target = if target.contains(':') {
            Uri::parse(target).map_err(|e| format!("To {target:?}: {e}"))?
        } else {
            let mut uri = call.dialog.remote_uri.uri.clone();
            uri.user = Some(target.to_string());
            uri.password = None;
            uri.params.clear();
            uri.headers = None;
            uri
        };
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut refer, next_hop) = call.dialog.new_request(Method::Refer, &via, &contact);
        refer.headers.push("Refer-To", format!("<{target}>"));
        let mut referred_by = call.dialog.local_uri.clone();
        set_tag(&mut referred_by, None);
        refer.headers.push("Referred-By", referred_by.to_string());
        refer
            .headers
            .push("User-Agent", self.settings.user_agent.clone());
        let destination = destination_for(&next_hop, call.source);
        let key = self
            .transactions
            .send_request(now, refer, destination)
            .map_err(|e| e.to_string())?;
        call.referring = true;
        self.client_tx
            .insert(key, ClientTx::Refer { call: call_id });
        self.drain_transactions(now, None);
        Ok(())
    }

    /// The owner cannot serve `call` (no media ports, ...): reject it with `status`.
    pub fn reject(&mut self, now: Instant, call_id: CallId, status: u16, reason: &str) {
        if !self.calls.contains_key(&call_id) {
            return;
        }
        let response = self.response_for_call(call_id, status, reason, None);
        self.respond_invite(now, call_id, response);
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: EndReason::InviteFailed,
        });
    }

    /// The owner ends the call (DeleteConnection, shutdown): BYE if answered, else a final
    /// error response. Emits no CallEnded: the owner is the one ending it.
    pub fn hangup(&mut self, now: Instant, call_id: CallId, q850_cause: u8) -> bool {
        let Some(call) = self.calls.get(&call_id) else {
            return false;
        };
        let reason = format!("Q.850;cause={q850_cause}");
        match call.state {
            CallState::AwaitingMedia | CallState::Ringing => {
                let mut response =
                    self.response_for_call(call_id, 480, "Temporarily Unavailable", None);
                response.headers.push("Reason", reason);
                self.respond_invite(now, call_id, response);
            }
            CallState::Answered => {
                let call = self.calls.get_mut(&call_id).expect("looked up above");
                call.state = CallState::ByePending;
                call.pending_bye_reason = Some(reason);
                return true;
            }
            CallState::Confirmed => self.send_bye(now, call_id, &reason),
            CallState::ByePending | CallState::Cancelling => return true,
            CallState::Calling => {
                // §9.1: CANCEL only once a provisional response came; the call stays until
                // the INVITE's final response, so a late 2xx can be ACKed and ended.
                let call = self.calls.get_mut(&call_id).expect("looked up above");
                call.state = CallState::Cancelling;
                let out = call.outbound.as_mut().expect("Calling calls are outbound");
                if out.provisional {
                    self.send_cancel(now, call_id);
                } else {
                    out.cancel_wanted = true;
                }
                return true;
            }
        }
        self.forget(call_id);
        true
    }

    /// Replaces who may start calls (configuration reload); calls in progress are unaffected.
    pub fn set_trust(&mut self, trust: super::trust::Trust) {
        self.settings.trust = trust;
    }

    /// Replaces the inbound routes (configuration reload); calls in progress are unaffected.
    pub fn set_routes(&mut self, routes: Vec<Route>) {
        self.settings.routes = routes;
    }

    /// From now on new INVITEs are refused with 503 and Retry-After (graceful shutdown).
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    pub fn counters(&self) -> &SipCounters {
        &self.counters
    }

    /// Calls alive (for leak checks and metrics).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Transactions alive (for leak checks and metrics).
    pub fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    fn drain_transactions(&mut self, now: Instant, local: Option<SocketAddr>) {
        while let Some(event) = self.transactions.poll_event() {
            match event {
                TxEvent::Transmit { to, message } => {
                    self.outputs.push_back(UaOutput::Transmit { to, message })
                }
                TxEvent::Request {
                    key,
                    request,
                    source,
                } => self.on_request(now, key, request, source, local),
                TxEvent::StrayAck { request, .. } => self.on_ack(now, &request),
                TxEvent::AckTimeout { key } => self.on_ack_timeout(now, &key),
                TxEvent::Response { key, response } => self.on_response(now, key, response),
                TxEvent::Timeout { key } => self.on_client_timeout(now, &key),
                TxEvent::Terminated { key } => {
                    self.client_tx.remove(&key);
                }
                TxEvent::StrayResponse { .. } => {
                    // After Timer M a 2xx retransmission matches nothing: the peer has had our
                    // ACK 32 s long; BYEs and NOTIFYs of gone calls change nothing either.
                }
            }
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        source: Peer,
        local: Option<SocketAddr>,
    ) {
        let in_dialog = request
            .headers
            .to()
            .ok()
            .and_then(|to| to.tag().map(str::to_string));
        if let Some(tag) = in_dialog {
            self.on_dialog_request(now, key, request, &tag);
            return;
        }
        if !self.settings.trust.allows(source.addr.ip()) {
            self.respond_simple(now, &key, &request, 403, "Forbidden");
            return;
        }
        match request.method {
            Method::Invite => {
                let local = local.unwrap_or(source.addr);
                self.on_invite(now, key, request, source, local)
            }
            Method::Cancel => self.on_cancel(now, key, &request),
            Method::Options => {
                let response = self.options_response(&request);
                self.respond(now, &key, response);
            }
            Method::Bye => {
                self.respond_simple(now, &key, &request, 481, "Call/Transaction Does Not Exist")
            }
            Method::Extension(_) => {
                self.respond_simple(now, &key, &request, 501, "Not Implemented")
            }
            _ => {
                let mut response = self.base_response(&request, 405, "Method Not Allowed");
                response.headers.push("Allow", ALLOW);
                self.respond(now, &key, response);
            }
        }
    }

    fn on_invite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        source: Peer,
        local: SocketAddr,
    ) {
        if let Some(status) = self.unsupported_extension(&request) {
            let mut response = self.base_response(&request, 420, "Bad Extension");
            response.headers.push("Unsupported", status);
            self.respond(now, &key, response);
            return;
        }
        if self.draining {
            let mut response = self.base_response(&request, 503, "Service Unavailable");
            response
                .headers
                .push("Retry-After", DRAIN_RETRY_AFTER_S.to_string());
            self.respond(now, &key, response);
            return;
        }
        // RFC 4028: a session interval below our minimum gets 422 with ours.
        let session_expires = match requested_session_timer(&request) {
            Ok(interval) => interval,
            Err(()) => {
                let mut response = self.base_response(&request, 422, "Session Interval Too Small");
                response.headers.push("Min-SE", MIN_SE_S.to_string());
                self.respond(now, &key, response);
                return;
            }
        };
        // RFC 3891: an INVITE with Replaces takes the place of one of our confirmed dialogs,
        // whatever its Request-URI.
        let replaces = match self.replaced_call(&request) {
            Ok(r) => r,
            Err((status, reason)) => {
                self.respond_simple(now, &key, &request, status, reason);
                return;
            }
        };
        let user = request.uri.user.clone().unwrap_or_default();
        let placement = match replaces {
            // The replaced call's service and SRTP policy, answered at once.
            Some(old) => Some(Placement {
                service: self.calls[&old].service,
                answer_delay_ms: 0,
                prompt: None,
                srtp: Some(self.calls[&old].capabilities.srtp),
                conference: None,
                dn: None,
            }),
            None => self
                .settings
                .routes
                .iter()
                .find(|r| r.matches(&user))
                .map(|route| Placement::of_route(route, &user)),
        };
        let Some(route) = placement else {
            tracing::debug!(user = %user, "no route for INVITE");
            self.respond_simple(now, &key, &request, 404, "Not Found");
            return;
        };
        let remote_offer = match self.read_offer(&request) {
            Ok(offer) => offer,
            Err((status, reason, warning)) => {
                let mut response = self.base_response(&request, status, reason);
                if status == 415 {
                    response.headers.push("Accept", "application/sdp");
                }
                if let Some(w) = warning {
                    response
                        .headers
                        .push("Warning", format!("399 callbridge \"{w}\""));
                }
                self.respond(now, &key, response);
                return;
            }
        };
        // This call's SDES keys: the same for every offer/answer of the dialog, so the
        // pre-check below and the answer in our 2xx agree.
        let mut capabilities = self.settings.capabilities.clone();
        if let Some(policy) = route.srtp {
            capabilities.srtp = policy;
        } else if source.transport == Transport::Tls {
            // Signalling secured by TLS carries SDES keys: the media must be SRTP too.
            capabilities.srtp = self.settings.tls_srtp;
        }
        let srtp_keys = new_srtp_keys(&capabilities);
        // Check the offer before any media is allocated, so a 488 costs nothing.
        let remote_media = match &remote_offer {
            Some(offer) => match sdp::answer(
                offer,
                &capabilities,
                SocketAddr::from(([127, 0, 0, 1], 9)),
                SessionVersion {
                    session_id: 0,
                    version: 0,
                },
                &srtp_keys,
            ) {
                Ok((_, media)) => Some(media),
                Err(e) => {
                    let mut response = self.base_response(&request, 488, "Not Acceptable Here");
                    response
                        .headers
                        .push("Warning", format!("304 callbridge \"{e}\""));
                    self.respond(now, &key, response);
                    return;
                }
            },
            None => None,
        };
        let local_tag = self.random_token();
        let dialog = match Dialog::new_uas(&request, local_tag.clone()) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("Bad Request - {e}");
                self.respond_simple(now, &key, &request, 400, &reason);
                return;
            }
        };
        let tags = |name: &str| -> bool {
            request
                .headers
                .get_all(name)
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("100rel"))
        };
        let peer_100rel = if tags("Require") {
            Some(true)
        } else if tags("Supported") {
            Some(false)
        } else {
            None
        };
        let call_id = self.next_call;
        self.next_call += 1;
        let play = request
            .uri
            .param("play")
            .flatten()
            .map(percent_decode)
            .or_else(|| route.prompt.clone());
        let from = request.headers.get("From").unwrap_or_default().to_string();
        let to = request.headers.get("To").unwrap_or_default().to_string();
        // RFC 3325: an asserted identity counts only from inside the trust domain, which is
        // the trunks (everyone when none is configured, as for starting calls at all).
        let remote_dn = caller_number(&request, self.settings.trust.allows(source.addr.ip()));
        let route_dn = route.dn.clone().unwrap_or(user);
        self.by_dialog
            .insert((dialog.call_id.clone(), local_tag), call_id);
        let session_id = self.rng.random::<u32>() as u64;
        self.calls.insert(
            call_id,
            Call {
                dialog,
                invite: request,
                invite_tx: key,
                source,
                local,
                state: CallState::AwaitingMedia,
                remote_offer,
                our_offer: None,
                local_sdp: None,
                sdp_version: SessionVersion {
                    session_id,
                    version: 1,
                },
                local_rtp: None,
                answer_delay: Duration::from_millis(route.answer_delay_ms),
                pending_bye_reason: None,
                srtp_keys,
                capabilities,
                service: route.service,
                outbound: None,
                transfer: None,
                referring: false,
                session_expires: session_expires.map(|i| (i, false)),
                peer_100rel,
                rseq: 0,
                unacked_provisional: None,
            },
        );
        self.outputs.push_back(UaOutput::IncomingCall {
            call: call_id,
            service: route.service,
            remote_media,
            from,
            to,
            remote_dn,
            route_dn,
            local,
            conference: route.conference,
            play,
            replaces,
        });
    }

    /// The call an INVITE's Replaces header names (RFC 3891 §3): Call-ID, to-tag (our tag)
    /// and from-tag (the peer's) of a confirmed dialog. None without the header.
    fn replaced_call(&self, request: &Request) -> Result<Option<CallId>, (u16, &'static str)> {
        let values: Vec<&str> = request.headers.get_all("Replaces").collect();
        let value = match values.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => return Err((400, "Bad Request - more than one Replaces")),
        };
        let mut parts = value.split(';').map(str::trim);
        let call_id = parts.next().unwrap_or_default();
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for p in parts {
            let (name, v) = p.split_once('=').unwrap_or((p, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to_tag = Some(v.trim()),
                "from-tag" => from_tag = Some(v.trim()),
                "early-only" => early_only = true,
                _ => {}
            }
        }
        let (Some(to_tag), Some(from_tag)) = (to_tag, from_tag) else {
            return Err((400, "Bad Request - Replaces needs to-tag and from-tag"));
        };
        let Some(&old) = self
            .by_dialog
            .get(&(call_id.to_string(), to_tag.to_string()))
        else {
            return Err((481, "Call/Transaction Does Not Exist"));
        };
        let call = &self.calls[&old];
        if call.dialog.remote_tag.as_deref() != Some(from_tag) {
            return Err((481, "Call/Transaction Does Not Exist"));
        }
        match call.state {
            CallState::Confirmed if early_only => Err((486, "Busy Here")),
            CallState::Confirmed => Ok(Some(old)),
            // Early dialogs we did not start, and dialogs on their way out, cannot be taken.
            _ => Err((481, "Call/Transaction Does Not Exist")),
        }
    }

    fn on_cancel(&mut self, now: Instant, key: TransactionKey, cancel: &Request) {
        let Some(invite_key) = self.transactions.invite_for_cancel(cancel) else {
            self.respond_simple(now, &key, cancel, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let call = self
            .calls
            .iter()
            .find(|(_, c)| c.invite_tx == invite_key)
            .map(|(id, c)| (*id, c.state));
        let mut ok = self.base_response(cancel, 200, "OK");
        if let (Some((call_id, _)), Ok(mut to)) = (call, ok.headers.to()) {
            // §9.2: the same To tag as the responses to the INVITE.
            set_tag(&mut to, Some(&self.calls[&call_id].dialog.local_tag));
            ok.headers.set("To", to.to_string());
        }
        self.respond(now, &key, ok);
        // §9.2: a CANCEL after the final response changes nothing.
        let Some((call_id, state)) = call else { return };
        if matches!(state, CallState::Answered | CallState::Confirmed) {
            return;
        }
        let response = self.response_for_call(call_id, 487, "Request Terminated", None);
        self.respond_invite(now, call_id, response);
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: EndReason::Cancelled,
        });
    }

    fn on_dialog_request(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        tag: &str,
    ) {
        let call_id_header = request.headers.call_id().unwrap_or_default().to_string();
        let Some(&call_id) = self.by_dialog.get(&(call_id_header, tag.to_string())) else {
            self.respond_simple(now, &key, &request, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let call = self
            .calls
            .get_mut(&call_id)
            .expect("by_dialog only names live calls");
        if let Err(e) = call.dialog.accept_remote_cseq(&request) {
            let reason = format!("Server Internal Error - {e}");
            self.respond_simple(now, &key, &request, 500, &reason);
            return;
        }
        match request.method {
            Method::Bye => {
                self.respond_simple(now, &key, &request, 200, "OK");
                let call = &self.calls[&call_id];
                // The transferor ends its leg once we accepted its REFER (RFC 5589 §6).
                let reason = if call.transfer.is_some() {
                    EndReason::Transferred
                } else {
                    EndReason::RemoteHangup
                };
                if call.state == CallState::Cancelling {
                    // We already ended it; the INVITE's final response cleans up.
                    return;
                }
                // A BYE on a call we have not answered (early dialog) ends the INVITE too.
                if matches!(
                    self.calls[&call_id].state,
                    CallState::AwaitingMedia | CallState::Ringing
                ) {
                    let response = self.response_for_call(call_id, 487, "Request Terminated", None);
                    self.respond_invite(now, call_id, response);
                }
                let owner_ended = self.calls[&call_id].state == CallState::ByePending;
                self.forget(call_id);
                if !owner_ended {
                    self.outputs.push_back(UaOutput::CallEnded {
                        call: call_id,
                        reason,
                    });
                }
            }
            Method::Invite => self.on_reinvite(now, key, call_id, request),
            Method::Refer => self.on_refer(now, key, call_id, request),
            Method::Notify => self.on_notify(now, key, call_id, request),
            Method::Update => self.on_update(now, key, call_id, request),
            Method::Prack => self.on_prack(now, key, call_id, request),
            Method::Cancel => self.on_cancel(now, key, &request),
            Method::Options => {
                let response = self.options_response(&request);
                self.respond(now, &key, response);
            }
            Method::Info => {
                // Legacy DTMF INFO (no Info-Package): the digit goes to the call's connection.
                let content_type = request.headers.get("Content-Type").unwrap_or_default();
                if let Some((digit, duration_ms)) = info_digit(content_type, &request.body) {
                    self.outputs.push_back(UaOutput::Digit {
                        call: call_id,
                        digit,
                        duration_ms,
                    });
                }
                self.respond_simple(now, &key, &request, 200, "OK")
            }
            Method::Extension(_) => {
                self.respond_simple(now, &key, &request, 501, "Not Implemented")
            }
            _ => {
                let mut response = self.base_response(&request, 405, "Method Not Allowed");
                response.headers.push("Allow", ALLOW);
                self.respond(now, &key, response);
            }
        }
    }

    /// A re-INVITE (hold, resume, new address, session refresh) on an established call.
    fn on_reinvite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        call_id: CallId,
        request: Request,
    ) {
        let call = &self.calls[&call_id];
        if call.state != CallState::Confirmed {
            // §14.2: a re-INVITE while one is pending gets 491 (here: before our 2xx is ACKed).
            self.respond_simple(now, &key, &request, 491, "Request Pending");
            return;
        }
        let offer = match self.read_offer(&request) {
            Ok(offer) => offer,
            Err((status, reason, _)) => {
                self.respond_simple(now, &key, &request, status, reason);
                return;
            }
        };
        let local_rtp = call.local_rtp.expect("a confirmed call has media");
        let mut version = call.sdp_version;
        version.version += 1;
        let (body, media, our_offer) = match &offer {
            Some(offer) => {
                match sdp::answer(
                    offer,
                    &call.capabilities,
                    local_rtp,
                    version,
                    &call.srtp_keys,
                ) {
                    Ok((answer, media)) => (answer, Some(media), None),
                    Err(e) => {
                        // §14.2: a rejected re-INVITE leaves the session as it was.
                        let mut response = self.base_response(&request, 488, "Not Acceptable Here");
                        response
                            .headers
                            .push("Warning", format!("304 callbridge \"{e}\""));
                        self.respond(now, &key, response);
                        return;
                    }
                }
            }
            None => {
                let o = sdp::offer(&call.capabilities, local_rtp, version, &call.srtp_keys);
                (o.clone(), None, Some(o))
            }
        };
        let call = self.calls.get_mut(&call_id).expect("checked above");
        // §12.2.2: a re-INVITE is a target refresh request.
        if let Some(contact) = request
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
        {
            call.dialog.remote_target = contact.uri;
        }
        if let Ok(Some(interval)) = requested_session_timer(&request) {
            call.session_expires = Some((interval, false));
        }
        call.invite = request;
        call.invite_tx = key;
        call.sdp_version = version;
        call.our_offer = our_offer;
        call.local_sdp = Some(body.clone());
        call.state = CallState::Answered;
        call.unacked_provisional = None;
        self.prack_timers.retain(|(_, c)| *c != call_id);
        let mut response = self.response_for_call(call_id, 200, "OK", Some(&body));
        self.add_session_timer(call_id, &mut response);
        self.respond_invite(now, call_id, response);
        // A re-INVITE is a session refresh (RFC 4028 §10).
        self.arm_session_timer(now, call_id);
        if let Some(media) = media {
            self.outputs.push_back(UaOutput::MediaUpdated {
                call: call_id,
                media,
            });
        }
    }

    fn on_ack(&mut self, now: Instant, ack: &Request) {
        let Some(tag) = ack
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
        else {
            return;
        };
        let call_id_header = ack.headers.call_id().unwrap_or_default().to_string();
        let Some(&call_id) = self.by_dialog.get(&(call_id_header, tag)) else {
            return;
        };
        let call = self
            .calls
            .get_mut(&call_id)
            .expect("by_dialog only names live calls");
        if call.state == CallState::ByePending {
            self.transactions.ack_received(&call.invite_tx);
            let reason = call.pending_bye_reason.take().unwrap_or_default();
            self.send_bye(now, call_id, &reason);
            self.forget(call_id);
            return;
        }
        if call.state != CallState::Answered {
            return; // a retransmitted ACK
        }
        self.transactions.ack_received(&call.invite_tx);
        call.state = CallState::Confirmed;
        let Some(our_offer) = call.our_offer.take() else {
            return;
        };
        let answer = SessionDescription::parse(&String::from_utf8_lossy(&ack.body));
        match answer
            .map_err(|e| e.to_string())
            .and_then(|a| sdp::accept_answer(&our_offer, &a).map_err(|e| e.to_string()))
        {
            Ok(media) => self.outputs.push_back(UaOutput::MediaUpdated {
                call: call_id,
                media,
            }),
            Err(e) => {
                tracing::info!(call = call_id, error = %e, "ACK without a usable SDP answer");
                self.send_bye(now, call_id, "SIP;cause=488;text=\"Not Acceptable Here\"");
                self.forget(call_id);
                self.outputs.push_back(UaOutput::CallEnded {
                    call: call_id,
                    reason: EndReason::BadAnswer,
                });
            }
        }
    }

    fn on_ack_timeout(&mut self, now: Instant, key: &TransactionKey) {
        let Some(call_id) = self
            .calls
            .iter()
            .find(|(_, c)| {
                &c.invite_tx == key
                    && matches!(c.state, CallState::Answered | CallState::ByePending)
            })
            .map(|(id, _)| *id)
        else {
            return;
        };
        if let Some(reason) = self.calls[&call_id].pending_bye_reason.clone() {
            // The owner already ended this call; only the held-back BYE remains.
            self.send_bye(now, call_id, &reason);
            self.forget(call_id);
            return;
        }
        // §13.3.1.4: no ACK for our 2xx — the session is over; tell the peer with a BYE.
        self.send_bye(now, call_id, "SIP;cause=408;text=\"ACK Timeout\"");
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: EndReason::AckTimeout,
        });
    }

    /// A provisional response to the call's INVITE: reliable (RFC 3262: Require: 100rel,
    /// RSeq, retransmitted until PRACKed) when the caller requires it, or when it supports it
    /// and the response carries our SDP; one reliable provisional at a time (§3).
    fn send_provisional(
        &mut self,
        now: Instant,
        call_id: CallId,
        status: u16,
        reason: &str,
        body: Option<&SessionDescription>,
    ) {
        let mut response = self.response_for_call(call_id, status, reason, body);
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let reliable = match call.peer_100rel {
            Some(true) => true,
            Some(false) => body.is_some(),
            None => false,
        };
        if reliable && call.unacked_provisional.is_none() {
            call.rseq += 1;
            response.headers.push("Require", "100rel");
            response.headers.push("RSeq", call.rseq.to_string());
            let t1 = self.settings.timers.t1;
            call.unacked_provisional = Some(UnackedProvisional {
                response: response.clone(),
                rseq: call.rseq,
                interval: t1,
                give_up: now + t1 * 64,
            });
            self.prack_timers.insert((now + t1, call_id));
        } else if reliable {
            // §3: the next reliable provisional waits for the PRACK of this one; an
            // unreliable one would break the caller's Require.
            if call.peer_100rel == Some(true) {
                return;
            }
        }
        self.respond_invite(now, call_id, response);
    }

    /// Retransmits unacknowledged reliable provisionals at T1, 2·T1 ...; without a PRACK
    /// within 64·T1 the INVITE is refused (RFC 3262 §3).
    fn retransmit_provisionals(&mut self, now: Instant) {
        while let Some(&(due, call_id)) = self.prack_timers.first() {
            if due > now {
                break;
            }
            self.prack_timers.pop_first();
            let Some(call) = self.calls.get_mut(&call_id) else {
                continue;
            };
            let Some(pending) = call.unacked_provisional.as_mut() else {
                continue;
            };
            if now >= pending.give_up {
                call.unacked_provisional = None;
                tracing::info!(call = call_id, "no PRACK for our reliable provisional");
                self.reject(now, call_id, 504, "Server Time-out - no PRACK");
                continue;
            }
            let response = pending.response.clone();
            pending.interval = (pending.interval * 2).min(self.settings.timers.t2 * 8);
            let next = (now + pending.interval).min(pending.give_up);
            self.prack_timers.insert((next, call_id));
            self.respond_invite(now, call_id, response);
        }
    }

    /// PRACK (RFC 3262 §3): its RAck names our unacknowledged reliable provisional.
    fn on_prack(&mut self, now: Instant, key: TransactionKey, call_id: CallId, request: Request) {
        let rack: Option<(u32, u32)> = request.headers.get("RAck").and_then(|v| {
            let mut parts = v.split_whitespace();
            let rseq = parts.next()?.parse().ok()?;
            let cseq = parts.next()?.parse().ok()?;
            parts
                .next()
                .filter(|m| m.eq_ignore_ascii_case("INVITE"))
                .map(|_| (rseq, cseq))
        });
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let invite_cseq = call.invite.headers.cseq().map(|c| c.seq).ok();
        let matches = match (&call.unacked_provisional, rack) {
            (Some(p), Some((rseq, cseq))) => p.rseq == rseq && Some(cseq) == invite_cseq,
            _ => false,
        };
        if !matches {
            self.respond_simple(now, &key, &request, 481, "Call/Transaction Does Not Exist");
            return;
        }
        call.unacked_provisional = None;
        self.prack_timers.retain(|(_, c)| *c != call_id);
        self.respond_simple(now, &key, &request, 200, "OK");
    }

    fn on_response(&mut self, now: Instant, key: TransactionKey, response: Response) {
        match self.client_tx.get(&key).cloned() {
            Some(ClientTx::Invite { call, ack }) => {
                if let (Some(sent), true) = (ack, (200..300).contains(&response.status)) {
                    let (to, ack) = *sent;
                    let tag = |h: &Headers| h.to().ok().and_then(|t| t.tag().map(str::to_string));
                    if tag(&ack.headers) != tag(&response.headers) {
                        // Another fork answered too (§13.2.2.4): ACK it and end it.
                        self.end_extra_fork(now, &ack, &response, to);
                        return;
                    }
                    // A 2xx retransmission: our ACK was lost (§13.2.2.4).
                    self.outputs.push_back(UaOutput::Transmit {
                        to,
                        message: SipMessage::Request(ack),
                    });
                    return;
                }
                self.on_invite_response(now, call, key, response);
            }
            Some(ClientTx::Refer { call }) if response.status >= 200 => {
                self.client_tx.remove(&key);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.referring = (200..300).contains(&response.status);
                }
                self.outputs.push_back(UaOutput::ReferAnswered {
                    call,
                    status: response.status,
                });
            }
            _ => {}
        }
    }

    /// A 2xx from a second fork of our INVITE (a proxy forked it and two UASs answered): the
    /// call already has its dialog, so this one gets its ACK and, at once, a BYE.
    fn end_extra_fork(&mut self, now: Instant, our_ack: &Request, response: &Response, to: Peer) {
        let ack_branch = new_branch(self.rng.random());
        let bye_branch = new_branch(self.rng.random());
        let Ok(mut dialog) = Dialog::new_uac(our_ack) else {
            return;
        };
        dialog.confirm_uac(response);
        let Ok(via) = our_ack.headers.top_via() else {
            return;
        };
        let local = match (&via.host, via.port) {
            (Host::V4(ip), port) => SocketAddr::new((*ip).into(), port.unwrap_or(5060)),
            (Host::V6(ip), port) => SocketAddr::new((*ip).into(), port.unwrap_or(5060)),
            (Host::Domain(_), _) => return,
        };
        let contact = contact_for(to.transport, local);
        let (mut ack, next_hop) = dialog.new_request(
            Method::Ack,
            &our_via(to.transport, local, &ack_branch),
            &contact,
        );
        ack.headers.remove("Contact");
        let destination = destination_for(&next_hop, to);
        self.outputs.push_back(UaOutput::Transmit {
            to: destination,
            message: SipMessage::Request(ack),
        });
        let (mut bye, _) = dialog.new_request(
            Method::Bye,
            &our_via(to.transport, local, &bye_branch),
            &contact,
        );
        bye.headers
            .push("Reason", "SIP;cause=200;text=\"Call completed elsewhere\"");
        if let Err(e) = self.transactions.send_request(now, bye, destination) {
            tracing::debug!(error = %e, "cannot end the extra fork");
        }
        self.drain_transactions(now, None);
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        call_id: CallId,
        key: TransactionKey,
        response: Response,
    ) {
        let status = response.status;
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.invite_tx != key {
            return; // the answer to an attempt we already re-sent with credentials
        }
        let state = call.state;
        let Some(out) = call.outbound.as_mut() else {
            return;
        };
        match status {
            100 => {}
            101..=199 => {
                out.provisional = true;
                if out.cancel_wanted {
                    out.cancel_wanted = false;
                    self.send_cancel(now, call_id);
                    return;
                }
                if state != CallState::Calling {
                    return;
                }
                if has_tag(&response) {
                    call.dialog.confirm_uac(&response); // the early dialog
                }
                if out.early_answer.is_none() && !response.body.is_empty() {
                    if let Some(media) = call
                        .our_offer
                        .as_ref()
                        .and_then(|offer| answer_in(&response, offer).ok())
                    {
                        out.early_answer = Some(media.clone());
                        self.outputs.push_back(UaOutput::MediaUpdated {
                            call: call_id,
                            media,
                        });
                    }
                }
                self.outputs.push_back(UaOutput::Progress {
                    call: call_id,
                    status,
                });
            }
            200..=299 => {
                call.dialog.confirm_uac(&response);
                self.send_ack(call_id, &key);
                let call = self.calls.get_mut(&call_id).expect("looked up above");
                if state == CallState::Cancelling {
                    // The 2xx crossed our CANCEL: the call is over all the same (§9.1).
                    call.state = CallState::Confirmed;
                    self.send_bye(now, call_id, "SIP;cause=487;text=\"Request Terminated\"");
                    self.forget(call_id);
                    return;
                }
                if state != CallState::Calling {
                    return;
                }
                call.state = CallState::Confirmed;
                let offer = call.our_offer.take().expect("our INVITE carried an offer");
                let early = call.outbound.as_mut().and_then(|o| o.early_answer.take());
                let media = if response.body.is_empty() {
                    early.ok_or_else(|| "the 2xx carries no SDP answer".to_string())
                } else {
                    answer_in(&response, &offer)
                };
                call.session_expires = session_timer_of_answer(&response);
                self.arm_session_timer(now, call_id);
                match media {
                    Ok(media) => {
                        self.outputs.push_back(UaOutput::MediaUpdated {
                            call: call_id,
                            media,
                        });
                        self.outputs
                            .push_back(UaOutput::CallAnswered { call: call_id });
                        self.transfer_outcome_for_new_call(now, call_id, 200, "OK");
                    }
                    Err(e) => {
                        tracing::info!(call = call_id, error = %e, "2xx without a usable SDP answer");
                        self.send_bye(now, call_id, "SIP;cause=488;text=\"Not Acceptable Here\"");
                        self.transfer_outcome_for_new_call(
                            now,
                            call_id,
                            488,
                            "Not Acceptable Here",
                        );
                        self.forget(call_id);
                        self.outputs.push_back(UaOutput::CallEnded {
                            call: call_id,
                            reason: EndReason::BadAnswer,
                        });
                    }
                }
            }
            401 | 407
                if state == CallState::Calling
                    && !out.authenticated
                    && out.credentials.is_some() =>
            {
                if !self.retry_with_credentials(now, call_id, &response) {
                    self.invite_failed(now, call_id, status, &response.reason);
                }
            }
            _ => match state {
                CallState::Cancelling => self.forget(call_id),
                CallState::Calling => self.invite_failed(now, call_id, status, &response.reason),
                _ => {}
            },
        }
    }

    /// Our INVITE failed with a final `status`: the call ends (the owner is told).
    fn invite_failed(&mut self, now: Instant, call_id: CallId, status: u16, reason: &str) {
        self.transfer_outcome_for_new_call(now, call_id, status, reason);
        self.forget(call_id);
        self.outputs.push_back(UaOutput::CallEnded {
            call: call_id,
            reason: if status == 408 {
                EndReason::NoAnswer
            } else {
                EndReason::Rejected(status)
            },
        });
    }

    fn on_client_timeout(&mut self, now: Instant, key: &TransactionKey) {
        match self.client_tx.get(key).cloned() {
            Some(ClientTx::Invite { call, .. }) => {
                let Some(c) = self.calls.get(&call) else {
                    return;
                };
                if &c.invite_tx != key {
                    return;
                }
                match c.state {
                    CallState::Calling => {
                        self.transfer_outcome_for_new_call(now, call, 408, "Request Timeout");
                        self.forget(call);
                        self.outputs.push_back(UaOutput::CallEnded {
                            call,
                            reason: EndReason::NoAnswer,
                        });
                    }
                    CallState::Cancelling => self.forget(call),
                    _ => {}
                }
            }
            Some(ClientTx::Refer { call }) => {
                self.client_tx.remove(key);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.referring = false;
                }
                self.outputs
                    .push_back(UaOutput::ReferAnswered { call, status: 408 });
            }
            None => {}
        }
    }

    /// The ACK for the 2xx to our INVITE (§13.2.2.4): outside any transaction, remembered
    /// for the 2xx's retransmissions.
    fn send_ack(&mut self, call_id: CallId, key: &TransactionKey) {
        let branch = new_branch(self.rng.random());
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut ack, next_hop) = call.dialog.new_request(Method::Ack, &via, &contact);
        ack.headers.remove("Contact");
        let to = destination_for(&next_hop, call.source);
        if let Some(ClientTx::Invite { ack: slot, .. }) = self.client_tx.get_mut(key) {
            *slot = Some(Box::new((to, ack.clone())));
        }
        self.outputs.push_back(UaOutput::Transmit {
            to,
            message: SipMessage::Request(ack),
        });
    }

    /// CANCEL of our INVITE (§9.1): its Request-URI, Call-ID, From, To, CSeq number, Route
    /// and top Via.
    fn send_cancel(&mut self, now: Instant, call_id: CallId) {
        let call = &self.calls[&call_id];
        let invite = &call.invite;
        let mut headers = Headers::default();
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(value) = invite.headers.get(name) {
                headers.push(name, value.to_string());
            }
        }
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        headers.push("CSeq", format!("{seq} CANCEL"));
        for route in invite.headers.get_all("Route") {
            headers.push("Route", route.to_string());
        }
        headers.push("User-Agent", self.settings.user_agent.clone());
        let cancel = Request {
            method: Method::Cancel,
            uri: invite.uri.clone(),
            headers,
            body: Vec::new(),
        };
        if let Err(e) = self.transactions.send_request(now, cancel, call.source) {
            tracing::warn!(call = call_id, error = %e, "cannot send CANCEL");
        }
        self.drain_transactions(now, None);
    }

    /// A 401/407 to our INVITE: the same INVITE again with our Digest answer, once.
    fn retry_with_credentials(
        &mut self,
        now: Instant,
        call_id: CallId,
        response: &Response,
    ) -> bool {
        let (challenge_header, answer_header) = if response.status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let challenge = match response
            .headers
            .get_all(challenge_header)
            .map(super::digest::Challenge::parse)
            .find_map(Result::ok)
        {
            Some(c) => c,
            None => {
                tracing::warn!(call = call_id, "no Digest MD5 challenge we can answer");
                return false;
            }
        };
        let cnonce = self.random_token();
        let branch = new_branch(self.rng.random());
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let out = call.outbound.as_mut().expect("caller checked");
        let Some(credentials) = out.credentials.clone() else {
            return false;
        };
        out.authenticated = true;
        out.provisional = false;
        let mut invite = call.invite.clone();
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1) + 1;
        invite.headers.set("CSeq", format!("{seq} INVITE"));
        invite.headers.set(
            "Via",
            our_via(call.source.transport, call.local, &branch).to_string(),
        );
        let uri = invite.uri.to_string();
        invite.headers.set(
            answer_header,
            challenge.answer(
                &credentials.username,
                &credentials.password,
                "INVITE",
                &uri,
                &cnonce,
            ),
        );
        call.dialog.local_seq = seq;
        let key = match self
            .transactions
            .send_request(now, invite.clone(), call.source)
        {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(call = call_id, error = %e, "cannot re-send INVITE");
                return false;
            }
        };
        call.invite = invite;
        call.invite_tx = key.clone();
        self.client_tx.insert(
            key,
            ClientTx::Invite {
                call: call_id,
                ack: None,
            },
        );
        self.drain_transactions(now, None);
        true
    }

    /// The INVITE of a transfer we carry out has its final answer: tell the transferor.
    fn transfer_outcome_for_new_call(
        &mut self,
        now: Instant,
        call_id: CallId,
        status: u16,
        reason: &str,
    ) {
        let refer_of = self
            .calls
            .get(&call_id)
            .and_then(|c| c.outbound.as_ref())
            .and_then(|o| o.refer_of);
        if let Some(old) = refer_of {
            self.transfer_outcome(now, old, status, reason);
        }
    }

    /// The final NOTIFY of an accepted REFER. Success marks the call transferred (its BYE
    /// then ends it with [`EndReason::Transferred`]); failure leaves it as it was.
    fn transfer_outcome(&mut self, now: Instant, call_id: CallId, status: u16, reason: &str) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(transfer) = call.transfer.as_mut() else {
            return;
        };
        let success = (200..300).contains(&status);
        transfer.succeeded = success;
        if transfer.notify {
            self.send_notify(now, call_id, status, reason, true);
        }
        if !success {
            if let Some(call) = self.calls.get_mut(&call_id) {
                call.transfer = None;
            }
        }
    }

    /// A NOTIFY of the REFER subscription (RFC 3515 §2.4.4) with a message/sipfrag status.
    fn send_notify(
        &mut self,
        now: Instant,
        call_id: CallId,
        status: u16,
        reason: &str,
        last: bool,
    ) {
        let branch = new_branch(self.rng.random());
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(transfer) = call.transfer.clone() else {
            return;
        };
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut notify, next_hop) = call.dialog.new_request(Method::Notify, &via, &contact);
        if transfer.id > 0 {
            notify
                .headers
                .push("Event", format!("refer;id={}", transfer.id));
        } else {
            notify.headers.push("Event", "refer");
        }
        notify.headers.push(
            "Subscription-State",
            if last {
                "terminated;reason=noresource".to_string()
            } else {
                format!("active;expires={REFER_SUBSCRIPTION_S}")
            },
        );
        notify
            .headers
            .push("Content-Type", "message/sipfrag;version=2.0");
        notify
            .headers
            .push("User-Agent", self.settings.user_agent.clone());
        notify.body = format!("SIP/2.0 {status} {reason}\r\n").into_bytes();
        let destination = destination_for(&next_hop, call.source);
        if let Err(e) = self.transactions.send_request(now, notify, destination) {
            tracing::warn!(call = call_id, error = %e, "cannot send NOTIFY");
        }
        self.drain_transactions(now, None);
    }

    /// REFER on an established call (RFC 3515): 202, NOTIFY "100 Trying", and the owner is
    /// asked to place the call.
    fn on_refer(&mut self, now: Instant, key: TransactionKey, call_id: CallId, request: Request) {
        let call = &self.calls[&call_id];
        if call.state != CallState::Confirmed {
            self.respond_simple(now, &key, &request, 403, "Forbidden - call not established");
            return;
        }
        if call.transfer.is_some() {
            // Overlapping REFERs are refused, as PBX gateways do.
            self.respond_simple(now, &key, &request, 491, "Request Pending");
            return;
        }
        let refer_to: Vec<&str> = request.headers.get_all("Refer-To").collect();
        let target = match refer_to.as_slice() {
            [one] => NameAddr::parse(one).map_err(|e| e.to_string()),
            _ => Err("exactly one Refer-To is required".to_string()),
        };
        let mut target = match target {
            Ok(t) => t.uri,
            Err(e) => {
                let reason = format!("Bad Request - Refer-To: {e}");
                self.respond_simple(now, &key, &request, 400, &reason);
                return;
            }
        };
        let headers = refer_to_headers(target.headers.take().as_deref());
        let notify = !request
            .headers
            .get("Refer-Sub")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let referred_by = request
            .headers
            .get("Referred-By")
            .map(str::to_string)
            .unwrap_or_else(|| {
                let mut by = call.dialog.remote_uri.clone();
                set_tag(&mut by, None);
                by.to_string()
            });
        let id = request.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let mut response = self.base_response(&request, 202, "Accepted");
        if !notify {
            response.headers.push("Refer-Sub", "false");
        }
        self.respond(now, &key, response);
        let call = self.calls.get_mut(&call_id).expect("checked above");
        call.transfer = Some(Transfer {
            notify,
            id,
            succeeded: false,
        });
        if notify {
            self.send_notify(now, call_id, 100, "Trying", false);
        }
        let service = self.calls[&call_id].service;
        self.outputs.push_back(UaOutput::TransferRequested {
            call: call_id,
            target,
            headers,
            referred_by,
            service,
        });
    }

    /// NOTIFY about our REFER (RFC 3515 §2.4.5): the sipfrag status line is the progress.
    fn on_notify(&mut self, now: Instant, key: TransactionKey, call_id: CallId, request: Request) {
        let event = request.headers.get("Event").unwrap_or_default();
        let is_refer = event
            .split(';')
            .next()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("refer"));
        if !is_refer || !self.calls[&call_id].referring {
            // RFC 6665 §4.1.3: a NOTIFY for no subscription of ours.
            self.respond_simple(now, &key, &request, 481, "Subscription Does Not Exist");
            return;
        }
        let status = std::str::from_utf8(&request.body)
            .ok()
            .and_then(|b| b.lines().next())
            .and_then(|line| line.strip_prefix("SIP/2.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        let Some(status) = status else {
            self.respond_simple(
                now,
                &key,
                &request,
                400,
                "Bad Request - no sipfrag status line",
            );
            return;
        };
        self.respond_simple(now, &key, &request, 200, "OK");
        let terminated = request
            .headers
            .get("Subscription-State")
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        let done = status >= 200 || terminated;
        if done {
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.referring = false;
            }
        }
        self.outputs.push_back(UaOutput::ReferProgress {
            call: call_id,
            status,
            done,
        });
    }

    /// UPDATE on an established call (RFC 3311): a session refresh, with or without a new
    /// offer (answered at once; a rejected offer leaves the session as it was).
    fn on_update(&mut self, now: Instant, key: TransactionKey, call_id: CallId, request: Request) {
        if self.calls[&call_id].state != CallState::Confirmed {
            self.respond_simple(now, &key, &request, 491, "Request Pending");
            return;
        }
        let offer = match self.read_offer(&request) {
            Ok(offer) => offer,
            Err((status, reason, _)) => {
                self.respond_simple(now, &key, &request, status, reason);
                return;
            }
        };
        let call = self.calls.get_mut(&call_id).expect("checked above");
        let mut response = Response::for_request(&request, 200, "OK");
        response
            .headers
            .push("Server", self.settings.user_agent.clone());
        response
            .headers
            .push("Contact", contact_for(call.source.transport, call.local));
        let mut media = None;
        if let Some(offer) = offer {
            let local_rtp = call.local_rtp.expect("a confirmed call has media");
            let mut version = call.sdp_version;
            version.version += 1;
            match sdp::answer(
                &offer,
                &call.capabilities,
                local_rtp,
                version,
                &call.srtp_keys,
            ) {
                Ok((answer, negotiated)) => {
                    call.sdp_version = version;
                    call.local_sdp = Some(answer.clone());
                    response.headers.push("Content-Type", "application/sdp");
                    response.body = answer.to_string().into_bytes();
                    media = Some(negotiated);
                }
                Err(e) => {
                    let mut response = self.base_response(&request, 488, "Not Acceptable Here");
                    response
                        .headers
                        .push("Warning", format!("304 callbridge \"{e}\""));
                    self.respond(now, &key, response);
                    return;
                }
            }
        }
        if let Some(contact) = request
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
        {
            call.dialog.remote_target = contact.uri;
        }
        if let Ok(Some(interval)) = requested_session_timer(&request) {
            call.session_expires = Some((interval, false));
        }
        if let Some((interval, _)) = call.session_expires {
            response.headers.push(
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            );
            response.headers.push("Require", "timer");
        }
        self.arm_session_timer(now, call_id);
        self.respond(now, &key, response);
        if let Some(media) = media {
            self.outputs.push_back(UaOutput::MediaUpdated {
                call: call_id,
                media,
            });
        }
    }

    /// (Re)starts the call's session timer: expiry is the interval less min(32 s, 1/3) after
    /// now (RFC 4028 §10, the side that does not refresh).
    fn arm_session_timer(&mut self, now: Instant, call_id: CallId) {
        self.session_timers.retain(|(_, c)| *c != call_id);
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        if let Some((interval, _)) = call.session_expires {
            let margin = Duration::from_secs(32).min(interval / 3);
            self.session_timers
                .insert((now + interval - margin, call_id));
        }
    }

    /// Sessions not refreshed in time end with BYE (RFC 4028 §10).
    fn expire_sessions(&mut self, now: Instant) {
        while let Some(&(due, call_id)) = self.session_timers.first() {
            if due > now {
                break;
            }
            self.session_timers.pop_first();
            let Some(call) = self.calls.get(&call_id) else {
                continue;
            };
            if call.state != CallState::Confirmed {
                continue;
            }
            tracing::info!(call = call_id, "session timer expired without a refresh");
            self.send_bye(now, call_id, "SIP;cause=408;text=\"Session Timer Expired\"");
            self.forget(call_id);
            self.outputs.push_back(UaOutput::CallEnded {
                call: call_id,
                reason: EndReason::SessionExpired,
            });
        }
    }

    fn send_answer(&mut self, now: Instant, call_id: CallId) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(local_rtp) = call.local_rtp else {
            return;
        };
        let body = match &call.remote_offer {
            Some(offer) => {
                match sdp::answer(
                    offer,
                    &call.capabilities,
                    local_rtp,
                    call.sdp_version,
                    &call.srtp_keys,
                ) {
                    Ok((answer, _)) => answer,
                    Err(e) => {
                        // Checked before media was allocated; only a config change could get here.
                        tracing::warn!(call = call_id, error = %e, "offer no longer acceptable");
                        self.reject(now, call_id, 488, "Not Acceptable Here");
                        return;
                    }
                }
            }
            None => {
                let offer = sdp::offer(
                    &call.capabilities,
                    local_rtp,
                    call.sdp_version,
                    &call.srtp_keys,
                );
                call.our_offer = Some(offer.clone());
                offer
            }
        };
        call.local_sdp = Some(body.clone());
        call.state = CallState::Answered;
        let mut response = self.response_for_call(call_id, 200, "OK", Some(&body));
        self.add_session_timer(call_id, &mut response);
        self.respond_invite(now, call_id, response);
        self.arm_session_timer(now, call_id);
        self.outputs
            .push_back(UaOutput::CallAnswered { call: call_id });
    }

    fn send_bye(&mut self, now: Instant, call_id: CallId, reason: &str) {
        let branch = new_branch(self.rng.random());
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut bye, next_hop) = call.dialog.new_request(Method::Bye, &via, &contact);
        bye.headers.push("Reason", reason);
        bye.headers
            .push("User-Agent", self.settings.user_agent.clone());
        let destination = destination_for(&next_hop, call.source);
        if let Err(e) = self.transactions.send_request(now, bye, destination) {
            tracing::warn!(call = call_id, error = %e, "cannot send BYE");
        }
        self.drain_transactions(now, None);
    }

    /// RFC 4028 §9: the 2xx names the interval and that the peer (the UAC) refreshes.
    fn add_session_timer(&self, call_id: CallId, response: &mut Response) {
        if let Some((interval, _)) = self.calls[&call_id].session_expires {
            response.headers.push(
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            );
            response.headers.push("Require", "timer");
        }
    }

    fn respond_invite(&mut self, now: Instant, call_id: CallId, response: Response) {
        let key = self.calls[&call_id].invite_tx.clone();
        self.respond(now, &key, response);
    }

    fn respond(&mut self, now: Instant, key: &TransactionKey, mut response: Response) {
        self.add_to_tag(&mut response);
        *self
            .counters
            .responses_sent
            .entry(response.status)
            .or_default() += 1;
        if let Err(e) = self.transactions.send_response(now, key, response) {
            tracing::debug!(error = %e, "response not sent");
        }
        self.drain_transactions(now, None);
    }

    /// §8.2.6.2: every response but a 100 carries a To tag; one of ours if the request had none.
    fn add_to_tag(&mut self, response: &mut Response) {
        if response.status == 100 {
            return;
        }
        let Ok(mut to) = response.headers.to() else {
            return;
        };
        if to.tag().is_some() {
            return;
        }
        let tag = self.random_token();
        set_tag(&mut to, Some(&tag));
        response.headers.set("To", to.to_string());
    }

    fn respond_simple(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        request: &Request,
        status: u16,
        reason: &str,
    ) {
        let response = self.base_response(request, status, reason);
        self.respond(now, key, response);
    }

    /// A response to the call's current INVITE, with our tag, Contact and Record-Route.
    fn response_for_call(
        &self,
        call_id: CallId,
        status: u16,
        reason: &str,
        body: Option<&SessionDescription>,
    ) -> Response {
        let call = &self.calls[&call_id];
        let mut response = self.base_response(&call.invite, status, reason);
        if let Ok(mut to) = response.headers.to() {
            set_tag(&mut to, Some(&call.dialog.local_tag));
            response.headers.set("To", to.to_string());
        }
        if status > 100 && status < 300 {
            // §12.1.1: dialog-creating responses copy Record-Route and carry our Contact.
            for rr in call.invite.headers.get_all("Record-Route") {
                response.headers.push("Record-Route", rr.to_string());
            }
            response
                .headers
                .push("Contact", contact_for(call.source.transport, call.local));
            response.headers.push("Allow", ALLOW);
        }
        if let Some(sdp) = body {
            response.headers.push("Content-Type", "application/sdp");
            response.body = sdp.to_string().into_bytes();
        }
        response
    }

    fn base_response(&self, request: &Request, status: u16, reason: &str) -> Response {
        let mut response = Response::for_request(request, status, reason);
        response
            .headers
            .push("Server", self.settings.user_agent.clone());
        response
    }

    fn options_response(&self, request: &Request) -> Response {
        let mut response = self.base_response(request, 200, "OK");
        response.headers.push("Allow", ALLOW);
        response.headers.push("Accept", "application/sdp");
        response.headers.push("Accept-Language", "en");
        response.headers.push("Supported", SUPPORTED);
        response
    }

    /// Answers a request that failed the mandatory-header check with 400, when it can be
    /// answered at all (it needs a Via to route the response); ACKs are never answered.
    fn answer_malformed(&mut self, request: &Request, source: Peer, reason: &str) {
        if request.method == Method::Ack || request.headers.top_via().is_err() {
            tracing::debug!(reason, "dropping unanswerable malformed request");
            return;
        }
        let mut response = Response::for_request(request, 400, &format!("Bad Request - {reason}"));
        response
            .headers
            .push("Server", self.settings.user_agent.clone());
        self.add_to_tag(&mut response);
        self.outputs.push_back(UaOutput::Transmit {
            to: source,
            message: SipMessage::Response(response),
        });
    }

    /// §8.2.2.3: Require option tags other than the ones we implement are refused.
    fn unsupported_extension(&self, request: &Request) -> Option<String> {
        let tags: Vec<&str> = request
            .headers
            .get_all("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !SUPPORTED.split(", ").any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        (!tags.is_empty()).then(|| tags.join(", "))
    }

    /// The SDP offer in a request: None without a body, an error status for bodies we refuse.
    #[allow(clippy::type_complexity)]
    fn read_offer(
        &self,
        request: &Request,
    ) -> Result<Option<SessionDescription>, (u16, &'static str, Option<String>)> {
        if request.body.is_empty() {
            return Ok(None);
        }
        let content_type = request.headers.content_type().map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        if content_type.as_deref() != Some("application/sdp") {
            return Err((415, "Unsupported Media Type", None));
        }
        let text = std::str::from_utf8(&request.body)
            .map_err(|_| (400, "Bad Request - SDP is not UTF-8", None))?;
        SessionDescription::parse(text)
            .map(Some)
            .map_err(|e| (400, "Bad Request - malformed SDP", Some(e.to_string())))
    }

    fn forget(&mut self, call_id: CallId) {
        let Some(call) = self.calls.remove(&call_id) else {
            return;
        };
        self.by_dialog
            .remove(&(call.dialog.call_id.clone(), call.dialog.local_tag.clone()));
        self.answer_timers.retain(|(_, c)| *c != call_id);
        self.session_timers.retain(|(_, c)| *c != call_id);
        self.prack_timers.retain(|(_, c)| *c != call_id);
    }

    fn random_token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }
}

/// RFC 3261 §18.2.1 / RFC 3581: record where a request really came from in its top Via.
pub fn stamp_via(request: &mut Request, source: SocketAddr) {
    let Ok(mut vias) = request.headers.vias() else {
        return;
    };
    let Some(top) = vias.first_mut() else { return };
    let sent_by_is_source = match &top.host {
        Host::V4(ip) => std::net::IpAddr::V4(*ip) == source.ip(),
        Host::V6(ip) => std::net::IpAddr::V6(*ip) == source.ip(),
        Host::Domain(_) => false,
    };
    let wants_rport = top
        .params
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case("rport"));
    if sent_by_is_source && !wants_rport {
        return;
    }
    let received = match source.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => ip.to_string(),
    };
    top.set_param("received", Some(received));
    if wants_rport {
        top.set_param("rport", Some(source.port().to_string()));
    }
    let rest: Vec<String> = vias.iter().map(|v| v.to_string()).collect();
    request.headers.remove("Via");
    for v in rest.iter().rev() {
        request.headers.push_front("Via", v.clone());
    }
}

fn our_via(transport: Transport, local: SocketAddr, branch: &str) -> Via {
    let text = format!(
        "SIP/2.0/{} {};branch={branch};rport",
        transport_name(transport),
        host_port(local)
    );
    Via::parse(&text).expect("our own Via text is well-formed")
}

fn contact_for(transport: Transport, local: SocketAddr) -> String {
    match transport {
        Transport::Udp => format!("<sip:callbridge@{}>", host_port(local)),
        Transport::Tcp => format!("<sip:callbridge@{};transport=tcp>", host_port(local)),
        Transport::Tls => format!("<sip:callbridge@{};transport=tls>", host_port(local)),
    }
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    }
}

fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Where an in-dialog request goes. Over TCP the peer's own connection is reused (it may be
/// behind NAT and it is the flow it chose); over UDP the next hop's IP literal and port, or the
/// peer's signalling address when the next hop is a name (no DNS on the control plane yet).
fn destination_for(next_hop: &super::message::Uri, source: Peer) -> Peer {
    if source.transport.is_reliable() {
        return source;
    }
    let port = next_hop.port.unwrap_or(5060);
    let ip = match &next_hop.host {
        Host::V4(ip) => std::net::IpAddr::V4(*ip),
        Host::V6(ip) => std::net::IpAddr::V6(*ip),
        Host::Domain(_) => return source,
    };
    Peer {
        transport: Transport::Udp,
        addr: SocketAddr::new(ip, port),
    }
}

/// How an incoming INVITE is served: from its `[[route]]`, or from the call it replaces.
struct Placement {
    service: Service,
    answer_delay_ms: u64,
    prompt: Option<String>,
    srtp: Option<sdp::SrtpPolicy>,
    /// The route's `conference` group, for a `conference` route.
    conference: Option<String>,
    /// The route's directory number.
    dn: Option<String>,
}

impl Placement {
    fn of_route(route: &Route, user: &str) -> Placement {
        Placement {
            service: route.service,
            answer_delay_ms: route.answer_delay_ms,
            prompt: route.prompt.clone(),
            srtp: route.srtp,
            conference: route.conference(user),
            dn: route.dn.clone(),
        }
    }
}

/// The caller's number: the user part of the first P-Asserted-Identity URI that has one when
/// `asserted_trusted`, else the From URI's user part; empty when neither has one.
fn caller_number(request: &Request, asserted_trusted: bool) -> String {
    let asserted = request
        .headers
        .get_all("P-Asserted-Identity")
        .filter(|_| asserted_trusted)
        .flat_map(identities)
        .find_map(|identity| identity.uri.user);
    asserted
        .or_else(|| request.headers.from().ok().and_then(|from| from.uri.user))
        .unwrap_or_default()
}

/// The identities of one P-Asserted-Identity value (`"A" <sip:1@h>, <tel:+1>`): split on
/// commas outside quotes and `<...>`; items that do not parse are skipped.
fn identities(value: &str) -> Vec<NameAddr> {
    let (mut items, mut start) = (Vec::new(), 0);
    let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
        .into_iter()
        .filter_map(|item| NameAddr::parse(item).ok())
        .collect()
}

/// RFC 4028 Min-SE we ask for, s (the RFC's own minimum).
const MIN_SE_S: u64 = 90;

/// The session interval a request asks for, when the peer will refresh it: its
/// Session-Expires with `Supported: timer` and no `refresher=uas`. We never refresh sessions
/// ourselves, so an interval the peer would not refresh is not used at all (RFC 4028 §9 leaves
/// it to the UAS). Err: below Min-SE (422).
fn requested_session_timer(request: &Request) -> Result<Option<Duration>, ()> {
    let Some(value) = request.headers.get("Session-Expires") else {
        return Ok(None);
    };
    let mut parts = value.split(';').map(str::trim);
    let Some(seconds) = parts.next().and_then(|s| s.parse::<u64>().ok()) else {
        return Ok(None);
    };
    if seconds < MIN_SE_S {
        return Err(());
    }
    let uas_refreshes = parts.any(|p| p.eq_ignore_ascii_case("refresher=uas"));
    let peer_supports = request
        .headers
        .get_all("Supported")
        .chain(request.headers.get_all("Require"))
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("timer"));
    if uas_refreshes || !peer_supports {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs(seconds)))
}

/// The session timer in a 2xx to our INVITE: kept when the peer (`refresher=uas`) refreshes.
fn session_timer_of_answer(response: &Response) -> Option<(Duration, bool)> {
    let value = response.headers.get("Session-Expires")?;
    let mut parts = value.split(';').map(str::trim);
    let seconds = parts.next()?.parse::<u64>().ok()?;
    parts
        .any(|p| p.eq_ignore_ascii_case("refresher=uas"))
        .then(|| (Duration::from_secs(seconds.max(MIN_SE_S)), false))
}

fn has_tag(response: &Response) -> bool {
    response.headers.to().is_ok_and(|t| t.tag().is_some())
}

/// The SDP answer in a response to our offer.
fn answer_in(response: &Response, offer: &SessionDescription) -> Result<NegotiatedMedia, String> {
    let text = std::str::from_utf8(&response.body).map_err(|_| "SDP is not UTF-8".to_string())?;
    let answer = SessionDescription::parse(text).map_err(|e| e.to_string())?;
    sdp::accept_answer(offer, &answer).map_err(|e| e.to_string())
}

/// Headers carried in a Refer-To URI (`?Replaces=...&...`) that the INVITE must carry; only
/// Replaces is taken (RFC 3515 §2.1 lets us ignore the others).
fn refer_to_headers(raw: Option<&str>) -> Vec<(String, String)> {
    let Some(raw) = raw else { return Vec::new() };
    raw.split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.eq_ignore_ascii_case("replaces"))
        .map(|(_, value)| ("Replaces".to_string(), percent_decode(value)))
        .collect()
}

/// The digit of a DTMF INFO body: `application/dtmf-relay` (`Signal=5` / `Duration=160`
/// lines) or `application/dtmf` (the digit alone). None for other bodies or non-digits.
fn info_digit(content_type: &str, body: &[u8]) -> Option<(char, u32)> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let (signal, duration) = match media_type.as_str() {
        "application/dtmf-relay" => {
            let mut signal = None;
            let mut duration = 0;
            for line in text.lines() {
                let Some((name, value)) = line.split_once('=') else {
                    continue;
                };
                match name.trim().to_ascii_lowercase().as_str() {
                    "signal" => signal = Some(value.trim().to_string()),
                    "duration" => duration = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            (signal?, duration)
        }
        "application/dtmf" => (text.trim().to_string(), 0),
        _ => return None,
    };
    // Signal is a digit or its RFC 4733 event code ("10" for '*'); hook flash is no digit.
    use crate::media::dtmf::{digit_to_event, event_to_digit};
    let code = match signal.parse::<u8>() {
        Ok(code) => code,
        Err(_) => {
            let mut chars = signal.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => digit_to_event(c)?,
                _ => return None,
            }
        }
    };
    let digit = event_to_digit(code).filter(|&d| d != '!')?;
    Some((digit, duration))
}

/// `%XX` escapes of a URI parameter value decoded (invalid escapes are kept as they are).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    //! Scenarios in virtual time: the peer's requests go in as SIP text, and the assertions are
    //! on what the peer reads off the wire and on what the owner is told. `now` only moves when
    //! a test advances it; nothing sleeps.

    use super::*;
    use crate::sdp::Codec;
    use crate::sip::message::{find_param, parse, Headers};

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
            capabilities: LocalCapabilities::default(),
            tls_srtp: sdp::SrtpPolicy::Require,
        }
    }

    fn sip(text: &str) -> SipMessage {
        parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("test message does not parse ({e}):\n{text}"))
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
        let SipMessage::Response(mut other) =
            callee_says(&invite, 200, "OK", Some(&pcmu_sdp(31004)))
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
}
