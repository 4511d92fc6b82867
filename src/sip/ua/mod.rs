//! The user agent core: turns SIP requests into calls, and calls back into SIP.
//!
//! Owns: every call's dialog and INVITE session (offer/answer, ringing, ACK, BYE, CANCEL),
//! the transaction layer, inbound routing (`[[route]]`) and the answers to requests outside
//! calls (OPTIONS, unknown methods, malformed requests). This file holds the [`UserAgent`]
//! type, its public API and its outputs, the per-call state, and the dispatch of what the
//! transaction layer reports; the protocol work lives next to it:
//!
//! - `uas`: INVITEs we receive — routing, 100rel provisionals, CANCEL, ACK, the 2xx;
//! - `uac`: INVITEs we send — responses, Digest retry, CANCEL, extra forks;
//! - `in_dialog`: requests inside a dialog — BYE, INFO, OPTIONS, and re-INVITE and UPDATE
//!   through one mid-dialog offer/answer path;
//! - `transfer`: REFER, its NOTIFYs and the transfers we carry out (Replaces in `uas`);
//! - `session_timer`: RFC 4028 intervals and expiry;
//! - `responses`: building and sending responses; `addressing`: Via, Contact, next hop.
//!
//! Must not: touch sockets, read the clock, or allocate media. It asks its owner for media
//! through [`UaOutput::IncomingCall`] and is told the result through [`UserAgent::accept`] /
//! [`UserAgent::reject`] — the seam where a dialog binds to a media connection.
//!
//! Every call ends exactly once, in `UserAgent::end_call`: either the dialog ends it
//! ([`UaOutput::CallEnded`]) or the owner does ([`UserAgent::hangup`], which emits nothing
//! back, as the owner already knows).

mod addressing;
mod call_timers;
mod hold;
mod in_dialog;
mod responses;
mod session_timer;
mod transfer;
mod uac;
mod uas;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::dialog::Dialog;
use super::message::{Method, NameAddr, Request, SipMessage, Unparsed, Uri};
use super::routing::{Route, RouteRoom, Service};
use super::transaction::{Peer, TimerValues, TransactionKey, TransactionLayer, TxEvent};
use crate::sdp::{self, LocalCapabilities, NegotiatedMedia, SessionDescription, SessionVersion};
use crate::store::RecordPolicy;
pub use addressing::stamp_via;
use call_timers::CallTimers;
use transfer::Transfer;
use uac::Outbound;
use uas::UnackedProvisional;

/// Our id for a call (one dialog bound to one connection).
pub type CallId = u64;

/// Methods we implement, for Allow headers and 405/501 decisions.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK";

/// Whether `method` is one of [`ALLOW`]: the others are refused (405, 501) before their
/// headers are inspected (RFC 3261 §8.2.1).
fn implements(method: &Method) -> bool {
    ALLOW.split(", ").any(|m| m == method.as_str())
}

/// Extensions we implement (RFC 3262 reliable provisionals, RFC 3891 Replaces, RFC 4028
/// session timers, RFC 4488 Refer-Sub).
pub const SUPPORTED: &str = "100rel, replaces, timer, norefersub";

/// What the UA needs to know about itself.
#[derive(Debug, Clone)]
pub struct UaSettings {
    pub user_agent: String,
    pub timers: TimerValues,
    pub routes: Vec<Route>,
    /// Shared with every call that negotiates with them unchanged (`capabilities_with`).
    pub capabilities: Arc<LocalCapabilities>,
    /// Who may send out-of-dialog requests (INVITE, OPTIONS ...): the trunks' sources.
    pub trust: super::trust::Trust,
    /// SRTP policy of calls over TLS whose route sets none (`[sip] tls_srtp`).
    pub tls_srtp: sdp::SrtpPolicy,
}

impl UaSettings {
    /// The capabilities a call negotiates with: ours with its SRTP policy and, for a call we
    /// place, its trunk's codecs. Ours, shared, when that changes nothing (the usual case:
    /// no copy per call).
    fn capabilities_with(
        &self,
        srtp: sdp::SrtpPolicy,
        codecs: Option<&Vec<sdp::Codec>>,
    ) -> Arc<LocalCapabilities> {
        let base = &self.capabilities;
        if srtp == base.srtp && codecs.is_none_or(|codecs| *codecs == base.codecs) {
            return base.clone();
        }
        Arc::new(LocalCapabilities {
            srtp,
            codecs: codecs.cloned().unwrap_or_else(|| base.codecs.clone()),
            ..LocalCapabilities::clone(base)
        })
    }
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
    /// Send these bytes again: a response as it first went on the wire (its request came
    /// again, or Timer G), resent by its transaction.
    Resend { to: Peer, bytes: Box<[u8]> },
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
        /// The room a `conference` route joins (its `conference` group, and whether it starts
        /// as a hairpin).
        conference: Option<RouteRoom>,
        /// The Request-URI's `play=` parameter (RFC 4240 announcements), %-decoded, else the
        /// route's `prompt`.
        play: Option<String>,
        /// An INVITE with Replaces (RFC 3891): the call whose place this one takes.
        replaces: Option<CallId>,
        /// Whether the call is recorded: the route's `record`, else the source trunk's.
        record: RecordPolicy,
        /// The `[[trunk]]` whose `allow` block the INVITE came from.
        trunk: Option<String>,
        /// Where its RTP is accepted from, when its route says (else the engine's default).
        rtp_source: Option<crate::engine::RtpSource>,
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
    /// Our re-INVITE ([`UserAgent::reinvite`]) was refused (or timed out: 408, or answered
    /// unusably: 488); the session stays as it was.
    ReinviteFailed { call: CallId, status: u16 },
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
    /// Boxed: a `Call` is about 2 KB, and the map keeps up to twice as many buckets as calls
    /// (an idle call's memory, scripts/bench-idle-memory).
    calls: crate::idmap::IdMap<CallId, Box<Call>>,
    /// (Call-ID, our tag) → call, for requests inside a dialog.
    by_dialog: HashMap<(String, String), CallId>,
    /// Ringing calls due to be answered, ordered by time.
    answer_timers: CallTimers,
    outputs: VecDeque<UaOutput>,
    rng: rand::rngs::StdRng,
    next_call: CallId,
    /// Shutting down: new INVITEs get 503 with Retry-After; calls in progress carry on.
    draining: bool,
    counters: SipCounters,
    /// Our client transactions whose outcome matters.
    client_tx: HashMap<TransactionKey, ClientTx>,
    /// Session timers (RFC 4028) by expiry.
    session_timers: CallTimers,
    /// Reliable provisional responses (RFC 3262) to retransmit, by when.
    prack_timers: CallTimers,
    /// Our INVITEs given up without a final response, by Call-ID and CSeq number: a 2xx that
    /// still comes gets its ACK (and a call's first INVITE a BYE) for 64*T1
    /// (`uac::Abandoned`).
    abandoned: HashMap<(String, u32), Box<uac::Abandoned>>,
    /// When each abandoned INVITE is forgotten, in order.
    abandoned_until: VecDeque<(Instant, (String, u32))>,
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
    /// Our re-INVITE (hold, resume) with its offer and the dialog as it sent it; the ACK of
    /// its 2xx once sent.
    Reinvite {
        call: CallId,
        offer: Box<SessionDescription>,
        sent: Box<hold::SentIn>,
        ack: Option<Box<(Peer, Request)>>,
    },
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

impl SipCounters {
    /// One more request of `method` (the method's name copied only the first time).
    fn count_request(&mut self, method: &str) {
        match self.requests_received.get_mut(method) {
            Some(count) => *count += 1,
            None => {
                self.requests_received.insert(method.to_string(), 1);
            }
        }
    }
}

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
    /// The peer's offer that we must answer, if it made one; dropped once the 2xx carries
    /// the answer (an established call does not keep it). Boxed, as is `our_offer`: most of
    /// a call's life neither is there, and a `SessionDescription` is 240 bytes inline.
    remote_offer: Option<Box<SessionDescription>>,
    /// Our offer in a 2xx, waiting for the answer in the ACK.
    our_offer: Option<Box<SessionDescription>>,
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
    capabilities: Arc<LocalCapabilities>,
    /// What serves the call (its route's service; for our INVITEs, the owner's choice).
    service: Service,
    /// Our INVITE's state, for calls we placed.
    outbound: Option<Box<Outbound>>,
    /// A REFER from the peer we accepted: the transfer we are carrying out.
    transfer: Option<Transfer>,
    /// Our REFER (BlindTransfer) is out.
    referring: bool,
    /// Our re-INVITE is out (the peer's gets 491 meanwhile).
    reinviting: bool,
    /// A re-INVITE asked for before the ACK of our 2xx: sent once the ACK comes (RFC 3261
    /// §14.1: no re-INVITE while an INVITE transaction is in progress).
    reinvite_after_ack: Option<crate::sdp::Direction>,
    /// Negotiated session timer (RFC 4028): interval, and whether we refresh.
    session_expires: Option<(Duration, bool)>,
    /// The peer's INVITE: 100rel supported (we may send reliable provisionals) or required
    /// (every provisional but 100 must be reliable).
    peer_100rel: Option<bool>,
    /// RSeq of our last reliable provisional, and the one waiting for its PRACK.
    rseq: u32,
    unacked_provisional: Option<Box<UnackedProvisional>>,
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

/// The SDES keys a call starts with: fresh ones when they can be needed — our offers are
/// SRTP (`Require`), or the peer's `offer` has an RTP/SAVP(F) stream to answer — else none
/// (most calls: no random bytes, base64 and ~400 bytes held for the call's life). A later
/// offer with SRTP makes them then ([`ensure_srtp_keys`]).
fn initial_srtp_keys(
    caps: &LocalCapabilities,
    offer: Option<&SessionDescription>,
) -> sdp::SrtpKeys {
    if caps.srtp == sdp::SrtpPolicy::Require || offer.is_some_and(offers_srtp) {
        new_srtp_keys(caps)
    } else {
        sdp::SrtpKeys::new()
    }
}

/// Makes the call's SDES keys if it has none and `offer` needs them.
fn ensure_srtp_keys(call: &mut Call, offer: &SessionDescription) {
    if call.srtp_keys.is_empty() && offers_srtp(offer) {
        call.srtp_keys = new_srtp_keys(&call.capabilities);
    }
}

/// Whether an SDP has a stream keyed by SDES (RTP/SAVP or RTP/SAVPF).
fn offers_srtp(sdp: &SessionDescription) -> bool {
    sdp.media.iter().any(|m| {
        m.protocol.eq_ignore_ascii_case("RTP/SAVP") || m.protocol.eq_ignore_ascii_case("RTP/SAVPF")
    })
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

impl UserAgent {
    /// Gives back the slack a burst left in the tables (see `crate::shrink`).
    pub fn shrink_idle(&mut self) {
        use crate::shrink::ShrinkIdle;
        self.calls.shrink_idle();
        self.by_dialog.shrink_idle();
        self.client_tx.shrink_idle();
        self.abandoned.shrink_idle();
        self.abandoned_until.shrink_idle();
        self.outputs.shrink_idle();
        self.transactions.shrink_idle();
    }

    pub fn new(settings: UaSettings, seed: u64) -> UserAgent {
        UserAgent {
            transactions: TransactionLayer::new(settings.timers),
            settings,
            calls: crate::idmap::IdMap::default(),
            by_dialog: HashMap::new(),
            answer_timers: CallTimers::default(),
            outputs: VecDeque::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            next_call: 1,
            draining: false,
            counters: SipCounters::default(),
            client_tx: HashMap::new(),
            session_timers: CallTimers::default(),
            prack_timers: CallTimers::default(),
            abandoned: HashMap::new(),
            abandoned_until: VecDeque::new(),
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
                self.counters.count_request(request.method.as_str());
                let out_of_dialog = request.headers.to_tag().is_none();
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
                let checked = if implements(&request.method) {
                    request.check_mandatory()
                } else {
                    request.check_answerable()
                };
                if let Err(e) = checked {
                    self.answer_malformed(
                        &request.method,
                        &request.headers,
                        source,
                        400,
                        &format!("Bad Request - {e}"),
                    );
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

    /// A request the transport could not parse (RFC 4475 §3.1.2): answered statelessly with
    /// 400, 416 or 505 (see [`Unparsed::status`]); a source outside the trunks gets what
    /// `[trust] untrusted` says.
    pub fn handle_unparsed(&mut self, request: Unparsed, source: Peer) {
        self.counters.count_request(request.method.as_str());
        if !self.settings.trust.allows(source.addr.ip()) {
            self.counters.untrusted_requests += 1;
            if self.settings.trust.untrusted == super::trust::Untrusted::Ignore {
                return;
            }
        }
        let (status, reason) = request.status();
        tracing::debug!(source = %source.addr, method = request.method.as_str(), error = %request.error, status, "unparseable request");
        self.answer_malformed(&request.method, &request.headers, source, status, &reason);
    }

    /// Time has passed: retransmissions, timeouts, ringing calls to answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transactions.handle_timeout(now);
        self.drain_transactions(now, None);
        while let Some(call) = self.answer_timers.pop_due(now) {
            self.send_answer(now, call);
        }
        self.expire_sessions(now);
        self.retransmit_provisionals(now);
        while let Some((_, key)) = self.abandoned_until.front().filter(|(at, _)| *at <= now) {
            self.abandoned.remove(key);
            self.abandoned_until.pop_front();
        }
    }

    /// When `handle_timeout` must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.transactions.poll_timeout().map(|(at, _)| at);
        let ring = self.answer_timers.next();
        let session = self.session_timers.next();
        let prack = self.prack_timers.next();
        let abandoned = self.abandoned_until.front().map(|(at, _)| *at);
        [tx, ring, session, prack, abandoned]
            .into_iter()
            .flatten()
            .min()
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
        self.answer_timers.arm(call_id, due);
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
        self.end_call(call_id, Some(EndReason::InviteFailed));
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
        self.place_call(now, out)
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
        self.send_refer(now, call_id, target)
    }

    /// The owner cannot serve `call` (no media ports, ...): reject it with `status`. Only a
    /// call the peer placed and we have not answered: an answered call ends with a BYE and
    /// one we placed with a CANCEL ([`UserAgent::hangup`]), so for those this does nothing.
    pub fn reject(&mut self, now: Instant, call_id: CallId, status: u16, reason: &str) {
        let unanswered = self.calls.get(&call_id).is_some_and(|call| {
            matches!(call.state, CallState::AwaitingMedia | CallState::Ringing)
        });
        if !unanswered {
            return;
        }
        let response = self.response_for_call(call_id, status, reason, None);
        self.respond_invite(now, call_id, response);
        self.end_call(call_id, Some(EndReason::InviteFailed));
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
        self.end_call(call_id, None);
        true
    }

    /// Replaces who may start calls (configuration reload); calls in progress are unaffected.
    /// The SIP Call-ID of a call's dialog (the recording API's platformCallID).
    pub fn sip_call_id(&self, call: CallId) -> Option<&str> {
        self.calls.get(&call).map(|c| c.dialog.call_id.as_str())
    }

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

    /// INVITEs given up and still remembered for a late 2xx (for leak checks).
    pub fn abandoned_count(&self) -> usize {
        self.abandoned.len()
    }

    fn drain_transactions(&mut self, now: Instant, local: Option<SocketAddr>) {
        while let Some(event) = self.transactions.poll_event() {
            match event {
                TxEvent::Transmit { to, message } => {
                    self.outputs.push_back(UaOutput::Transmit { to, message })
                }
                TxEvent::Resend { to, bytes } => {
                    self.outputs.push_back(UaOutput::Resend { to, bytes })
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
                TxEvent::StrayResponse { response, source } => {
                    // After Timer M a 2xx retransmission matches nothing: the peer has had our
                    // ACK 32 s long; BYEs and NOTIFYs of gone calls change nothing either. A
                    // 2xx to an INVITE we gave up is the exception.
                    self.on_stray_response(now, &response, source);
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
        let in_dialog = request.headers.to_tag().map(str::to_string);
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
                // §8.2.2.3 (RFC 4475 bext01): an extension we lack is refused; Proxy-Require
                // is for proxies.
                let response = match self.unsupported_extension(&request) {
                    Some(tags) => {
                        let mut response = self.base_response(&request, 420, "Bad Extension");
                        response.headers.push("Unsupported", tags);
                        response
                    }
                    // A draining node says so to the load balancer's probes (Kamailio's
                    // dispatcher takes it out of rotation on a 503; docs/CLUSTER.md). An
                    // overloaded one has its OPTIONS refused by the intake already.
                    None if self.draining => {
                        let mut response = self.base_response(&request, 503, "Service Unavailable");
                        response
                            .headers
                            .push("Retry-After", uas::DRAIN_RETRY_AFTER_S.to_string());
                        response
                    }
                    None => self.options_response(&request),
                };
                self.respond(now, &key, response);
            }
            Method::Bye => {
                self.respond_simple(now, &key, &request, 481, "Call/Transaction Does Not Exist")
            }
            Method::Extension(_) => {
                // RFC 4475 intmeth, esc02: the 501 lists what we do implement.
                let mut response = self.base_response(&request, 501, "Not Implemented");
                response.headers.push("Allow", ALLOW);
                self.respond(now, &key, response);
            }
            _ => {
                let mut response = self.base_response(&request, 405, "Method Not Allowed");
                response.headers.push("Allow", ALLOW);
                self.respond(now, &key, response);
            }
        }
    }

    /// Ends a call: the one place a call is removed. With a `reason` the dialog ended it and
    /// the owner is told ([`UaOutput::CallEnded`]); without, the owner ended it (hangup) and
    /// already knows. Whatever the call still has to send has been sent by then.
    fn end_call(&mut self, call_id: CallId, reason: Option<EndReason>) {
        let Some(call) = self.calls.remove(&call_id) else {
            return;
        };
        self.by_dialog
            .remove(&(call.dialog.call_id.clone(), call.dialog.local_tag.clone()));
        self.answer_timers.disarm(call_id);
        self.session_timers.disarm(call_id);
        self.prack_timers.disarm(call_id);
        if let Some(reason) = reason {
            self.outputs.push_back(UaOutput::CallEnded {
                call: call_id,
                reason,
            });
        }
    }

    fn random_token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }
}

/// A call in the confirmed state, for the requests we send in its dialog (a free function over
/// the map, so the rest of the user agent stays borrowable).
fn established_call(
    calls: &mut crate::idmap::IdMap<CallId, Box<Call>>,
    call_id: CallId,
) -> Result<&mut Call, String> {
    let Some(call) = calls.get_mut(&call_id) else {
        return Err(format!("call {call_id} does not exist"));
    };
    if call.state != CallState::Confirmed {
        return Err(format!("call {call_id} is not established"));
    }
    Ok(call)
}

#[cfg(test)]
mod tests;
