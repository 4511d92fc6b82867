//! Random scenarios for the control core, in virtual time: seeded sequences of what callers,
//! a trunk and applications can do — calls in on every kind of route (with and without an
//! offer, with reliable provisionals) and out through the trunk, answers, refusals,
//! redirects, hang-ups from either side, CANCELs, holds and re-INVITEs from either side,
//! DeleteConnection, BridgeCalls, BlindTransfer, Media Control's operations and conferences,
//! CTI requests (release, hold, answer, make call, transfers and conferences in one or two
//! steps), agent conference requests, time passing — in any order. Whatever came before, once
//! the agents sign out, the applications hang up every call and delete every connection they
//! know (or the server shuts down) and time runs on, the harness's leak check finds nothing
//! left: no connection, SIP call or transaction, conference, party, agent conference, timer
//! or port. After every step the surfaces' events are checked (`surface_check`) and so is the
//! wire (`sip_check`). A failure names its seed and the steps that led there.

mod requests;
mod wire;

use std::time::Duration;

use serde_json::Value;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::agent_check::Desktops;
use super::core::Input;
use super::harness::*;
use super::operations::TermConds;
use super::party::ConnId;
use super::sip_check::SipAnswers;
use super::surface_check::Surfaces;
use super::tests::{trunk_request, trunk_response};
use super::{
    AgentConfRequest, AttributeChange, CallAction, CodecChoice, Completion, ConferenceChoice,
    ControlRequest, CtiRequest, MediaAction, Target,
};
use crate::engine::{ConfereeSpec, EngineEvent};
use crate::sip::message::{Request, SipMessage};
use crate::sip::transaction::Peer;
use crate::sip::ua::CallId;

/// Every kind of route the harness has: echo, a ring time, a conference, an application, an
/// announcement, a recorded call.
const USERS: [&str; 6] = ["echo", "ring", "conf=r1", "app", "hello", "rec"];

struct Scenario {
    h: Harness,
    rng: StdRng,
    /// The callers' dialogs, in the order they called.
    peers: Vec<PeerCall>,
    /// Calls the applications know: offered ones (IncomingCall) and placed ones.
    calls: Vec<CallId>,
    /// Our INVITEs to the trunk not answered finally yet.
    trunk_invites: Vec<Request>,
    /// Our INVITEs the trunk answered 200: dialogs it may end with a BYE.
    trunk_answered: Vec<Request>,
    /// The top Via of each of our INVITEs the trunk has seen.
    trunk_branches: std::collections::HashSet<String>,
    /// How the callers and the trunk answered each of our requests (top Via and method).
    answered: std::collections::HashMap<String, u16>,
    /// Each (ThisDN, ConnID) the CTI events named: what CTI requests act on.
    cti_parties: Vec<(String, ConnId)>,
    /// ReferenceIDs of the CTI requests sent.
    references: u64,
    /// What happened, for a failure's message.
    steps: Vec<String>,
    /// How far the scenario got: the steps after which each kind of state existed.
    reached: Reached,
    /// What the surfaces told their clients, checked after every step.
    surfaces: Surfaces,
    /// What the callers and the trunk asked and were answered on the wire.
    sip: SipAnswers,
    /// What the agents' desktops were told.
    desktops: Desktops,
    /// The requests the callers and the trunk sent (ACKs aside) and when, for
    /// retransmissions.
    sent: Vec<(&'static str, SipMessage, std::time::Instant)>,
    /// The virtual time the current step began: what the core sent since was sent no
    /// earlier.
    step_started: std::time::Instant,
    /// The virtual time the scenario began (the trace's times count from it).
    began: std::time::Instant,
    /// How many `/events` events the check has read.
    events_read: usize,
    /// Conferences the applications created (CreateConference's answers).
    app_conferences: Vec<u32>,
    /// Numbers dialled so far (each destination its own).
    numbers: u32,
    /// Callers whose INVITE had no SDP: their ACK carries the answer to our offer.
    offerless: Vec<usize>,
    /// The trunk's CSeq numbers in the dialogs our INVITEs began (one count for all of them:
    /// each dialog's only grow).
    trunk_cseq: u32,
}

/// Steps after which the core held an answered call's connection, a bridge, a transfer
/// waiting for its target, an agent conference, an application's conference or a media
/// operation an application started, and how many of our requests the callers and the trunk
/// answered: scenarios that never get there would find nothing wrong there, so the test
/// requires them.
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    connections: usize,
    bridges: usize,
    transfers: usize,
    agent_conferences: usize,
    app_conferences: usize,
    operations: usize,
    answers: usize,
    /// Steps where a caller's early dialog was confirmed by a PRACK, or a caller's ACK
    /// carried the answer to our offer.
    offer_answer_variants: usize,
}

impl Reached {
    fn add(&mut self, r: Reached) {
        self.connections += r.connections;
        self.bridges += r.bridges;
        self.transfers += r.transfers;
        self.agent_conferences += r.agent_conferences;
        self.app_conferences += r.app_conferences;
        self.operations += r.operations;
        self.answers += r.answers;
        self.offer_answer_variants += r.offer_answer_variants;
    }

    fn everywhere(&self) -> bool {
        [
            self.connections,
            self.bridges,
            self.transfers,
            self.agent_conferences,
            self.app_conferences,
            self.operations,
            self.answers,
            self.offer_answer_variants,
        ]
        .iter()
        .all(|&n| n > 0)
    }
}

/// Prints a scenario's steps and events as they happen (`SCENARIO_TRACE=1`).
fn trace(line: impl std::fmt::Display) {
    if std::env::var_os("SCENARIO_TRACE").is_some() {
        eprintln!("{line}");
    }
}

impl Scenario {
    fn new(seed: u64) -> Scenario {
        let h = Harness::new();
        let step_started = h.now.at;
        Scenario {
            h,
            rng: StdRng::seed_from_u64(seed),
            peers: Vec::new(),
            calls: Vec::new(),
            trunk_invites: Vec::new(),
            trunk_answered: Vec::new(),
            trunk_branches: Default::default(),
            answered: Default::default(),
            cti_parties: Vec::new(),
            references: 0,
            steps: Vec::new(),
            reached: Reached::default(),
            surfaces: Surfaces::default(),
            sip: SipAnswers::default(),
            desktops: Desktops::default(),
            sent: Vec::new(),
            step_started,
            began: step_started,
            events_read: 0,
            app_conferences: Vec::new(),
            numbers: 0,
            offerless: Vec::new(),
            trunk_cseq: 1,
        }
    }

    fn step(&mut self) {
        self.step_started = self.h.now.at;
        let steps = self.steps.len();
        self.take_step();
        let at = self.h.now.at.duration_since(self.began).as_secs_f64();
        for step in &self.steps[steps..] {
            trace(format_args!("[{at:.3} s] {step}"));
        }
        self.read_wire();
    }

    fn take_step(&mut self) {
        match self.rng.random_range(0..40) {
            0 | 1 => {
                let user = USERS[self.rng.random_range(0..USERS.len())];
                let name = format!("p{}", self.peers.len());
                // Each caller its own DN: what the CTI check tells parties apart by.
                let peer =
                    PeerCall::new(user, &name).with_dn(&format!("555{}", 2000 + self.peers.len()));
                let port = 30_000 + 2 * self.peers.len() as u16;
                self.steps
                    .push(format!("INVITE from p{} to {user}", self.peers.len()));
                // A third ask for a session timer (RFC 4028) they may let expire.
                let mut extra = String::new();
                if self.rng.random_range(0..3) == 0 {
                    extra.push_str("Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n");
                }
                // A third support reliable provisionals (RFC 3262), a few require them.
                match self.rng.random_range(0..6) {
                    0 | 1 => extra.push_str("Supported: 100rel\r\n"),
                    2 => extra.push_str("Require: 100rel\r\n"),
                    _ => {}
                }
                // A sixth make no offer: ours comes in the 2xx, theirs in the ACK.
                let sdp = if self.rng.random_range(0..6) == 0 {
                    self.offerless.push(self.peers.len());
                    None
                } else {
                    Some(self.some_offer(port))
                };
                let invite = peer.invite(sdp.as_deref(), &extra);
                self.peers.push(peer);
                self.send(PEER, invite);
            }
            2 => self.peer_acks(),
            3 => self.peer_sends("BYE", |peer| peer.in_dialog("BYE", "")),
            4 => self.peer_sends("CANCEL", |peer| peer.cancel()),
            5 if self.rng.random_range(0..4) == 0 => {
                self.peer_reinvites("re-INVITE without SDP", |peer| peer.reinvite_with(None))
            }
            5 => {
                let offer = self.some_offer(31_000);
                self.peer_reinvites("re-INVITE", |peer| peer.reinvite(&offer))
            }
            6 | 7 => {
                let Some(call) = self.pick_call() else { return };
                let action = match self.rng.random_range(0..6) {
                    0 => CallAction::Accept {
                        call,
                        early_media: self.rng.random(),
                    },
                    1 | 2 => CallAction::Answer {
                        call,
                        conference: None,
                    },
                    3 => CallAction::Reject { call, status: 486 },
                    4 => CallAction::Redirect {
                        call,
                        to: self.fresh_number("71"),
                    },
                    _ => CallAction::Hangup { call },
                };
                self.steps.push(format!("{} {call}", action.name()));
                self.call_action(action);
            }
            8 => {
                self.steps.push("MakeCall".into());
                let to = self.fresh_number("70");
                let placed = self.h.call_action(make_call(&to));
                if let Some(call) = placed
                    .ok()
                    .and_then(|r| r["CallId"].as_str().and_then(|s| s.parse().ok()))
                {
                    self.calls.push(call);
                }
            }
            9 => self.trunk_answers(),
            10 => {
                let Some(id) = self.pick_connection() else {
                    return;
                };
                self.steps.push(format!("DeleteConnection {id}"));
                let _ = self.h.action(MediaAction::Delete {
                    connection: Some(id),
                    conference: None,
                });
            }
            11 => {
                let (Some(call), Some(peer)) = (self.pick_call(), self.pick_call()) else {
                    return;
                };
                self.steps.push(format!("BridgeCalls {call} {peer}"));
                self.call_action(CallAction::Bridge {
                    call,
                    peer: Some(peer),
                });
            }
            14 | 15 => self.cti_request(),
            18 | 19 => self.agent_request(),
            16 => self.trunk_hangs_up(),
            17 => {
                let Some(call) = self.pick_call() else { return };
                self.steps.push(format!("BlindTransfer {call}"));
                let to = self.fresh_number("72");
                self.call_action(CallAction::BlindTransfer { call, to });
            }
            20 => {
                let target = self.fresh_number("76");
                self.peer_sends("REFER", |peer| {
                    peer.in_dialog("REFER", &format!("Refer-To: <sip:{target}@127.0.0.3>\r\n"))
                })
            }
            21 => {
                let direction = ["sendonly", "inactive", "sendrecv"][self.rng.random_range(0..3)];
                if self.rng.random() {
                    self.peer_reinvites(&format!("re-INVITE {direction}"), |peer| {
                        peer.reinvite(&sdp_with(31_000, direction))
                    })
                } else {
                    self.peer_sends(&format!("UPDATE {direction}"), |peer| {
                        peer.update(&sdp_with(31_000, direction))
                    })
                }
            }
            22 => self.replacing_invite(),
            23 | 24 => self.media_operation(),
            25 => self.engine_says(),
            26 => self.conference_action(),
            27 => self.app_connection(),
            28 => self.mute_recording(),
            29 => {
                let Some(conference) = self.pick(&self.app_conferences.clone()) else {
                    return;
                };
                self.steps
                    .push(format!("DeleteConnection conference {conference}"));
                let _ = self.h.action(MediaAction::Delete {
                    connection: None,
                    conference: Some(conference),
                });
            }
            30 => {
                let (Some(call), Some(peer)) = (self.pick_call(), self.pick_call()) else {
                    return;
                };
                let peer = if self.rng.random() { Some(peer) } else { None };
                self.steps.push(format!("UnbridgeCalls {call} {peer:?}"));
                self.call_action(CallAction::Unbridge { call, peer });
            }
            31 => {
                let Some(call) = self.pick_call() else { return };
                self.steps.push(format!("SendUserInput {call}"));
                self.call_action(CallAction::SendUserInput {
                    call,
                    digits: "1#".into(),
                });
            }
            32 => {
                let Some(call) = self.pick_call() else { return };
                let conference = match self.pick(&self.app_conferences.clone()) {
                    Some(id) if self.rng.random() => Some(id),
                    _ => None,
                };
                let hairpin = self.rng.random();
                self.steps
                    .push(format!("AnswerCall {call} into conference {conference:?}"));
                self.call_action(CallAction::Answer {
                    call,
                    conference: Some(ConferenceChoice {
                        conference,
                        hairpin,
                    }),
                });
            }
            33 => self.cti_make_call(),
            34 => self.media_change(),
            35 => self.trunk_sends(),
            36 => self.peer_sends_other(),
            37 => self.cti_query(),
            38 => self.resend(),
            39 => self.trunk_fork_answers(),
            12 => {
                let by = Duration::from_millis(self.rng.random_range(0..3_000));
                self.steps.push(format!("{} ms pass", by.as_millis()));
                self.h.advance(by);
            }
            _ => {
                let by = Duration::from_secs(self.rng.random_range(0..70));
                self.steps.push(format!("{} s pass", by.as_secs()));
                self.h.advance(by);
            }
        }
        let core = &self.h.core;
        for (held, count) in [
            (
                !core.call_connections.is_empty(),
                &mut self.reached.connections,
            ),
            (!core.bridges.is_empty(), &mut self.reached.bridges),
            (
                !core.transfer_targets.is_empty(),
                &mut self.reached.transfers,
            ),
            (
                !core.agent_confs.is_empty(),
                &mut self.reached.agent_conferences,
            ),
            (
                self.app_conferences
                    .iter()
                    .any(|c| core.conferences.contains_key(c)),
                &mut self.reached.app_conferences,
            ),
            (
                self.surfaces.operations_running(),
                &mut self.reached.operations,
            ),
        ] {
            *count += usize::from(held);
        }
    }

    fn pick_call(&mut self) -> Option<CallId> {
        match self.calls.len() {
            0 => None,
            n => Some(self.calls[self.rng.random_range(0..n)]),
        }
    }

    /// A number no party of this scenario has had: the CTI check tells parties apart by DN
    /// (two parties with one DN in one call are one to a T-Library client).
    fn fresh_number(&mut self, prefix: &str) -> String {
        self.numbers += 1;
        format!("{prefix}{:03}", self.numbers)
    }

    fn pick<T: Clone>(&mut self, list: &[T]) -> Option<T> {
        match list.len() {
            0 => None,
            n => Some(list[self.rng.random_range(0..n)].clone()),
        }
    }

    /// One of the core's connections (any kind), if there is one.
    fn pick_connection(&mut self) -> Option<u32> {
        let mut ids: Vec<u32> = self.h.core.connections.keys().copied().collect();
        ids.sort_unstable();
        self.pick(&ids)
    }

    /// The applications end everything they know — or the server shuts down — and time runs
    /// on past every deadline: nothing is left in the core, and every surface told its
    /// clients so.
    fn finish(&mut self) {
        self.step_started = self.h.now.at;
        if self.rng.random_range(0..4) == 0 {
            self.steps
                .push("the end: the server shuts down (every call released)".into());
            let (done, _answer) = tokio::sync::oneshot::channel();
            self.h.input(Input::Request(ControlRequest::Shutdown(done)));
        } else {
            self.steps.push(
                "the end: the agents sign out, every call is hung up, every connection deleted"
                    .into(),
            );
            for id in [1001, 1002] {
                self.agent_says(id, AgentConfRequest::SignedOut);
            }
            for call in self.calls.clone() {
                self.call_action(CallAction::Hangup { call });
            }
            let mut ids: Vec<u32> = self.h.core.connections.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                let _ = self.h.action(MediaAction::Delete {
                    connection: Some(id),
                    conference: None,
                });
            }
        }
        self.h.advance(Duration::from_secs(600));
        self.h.assert_no_leaks();
        self.read_wire();
        if let Err(e) = self
            .surfaces
            .all_told_ended()
            .and_then(|()| self.sip.all_answered())
            .and_then(|()| self.desktops.all_told_ended())
        {
            panic!("{e}");
        }
    }
}

/// One scenario of `steps` steps from `seed`; a failure names both and what happened.
fn run(seed: u64, steps: usize) -> Reached {
    let mut scenario = Scenario::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..steps {
            scenario.step();
        }
        scenario.finish();
    }));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!(
            "seed {seed}, {steps} steps: {message}\nsteps:\n{}",
            scenario.steps.join("\n")
        );
    }
    scenario.reached
}

/// 200 scenarios of 40 steps; `SCENARIO_SEEDS` and `SCENARIO_STEPS` ask for more (a longer
/// search: `SCENARIO_SEEDS=5000 SCENARIO_STEPS=60 cargo test --lib control::random_tests`).
#[test]
fn whatever_callers_trunk_and_applications_do_nothing_is_left_once_they_are_done() {
    let from_env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let steps = from_env("SCENARIO_STEPS", 40) as usize;
    let mut reached = Reached::default();
    let seeds = match std::env::var("SCENARIO_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => seed..seed + 1,
        None => 0..from_env("SCENARIO_SEEDS", 200),
    };
    for seed in seeds {
        reached.add(run(seed, steps));
    }
    // The scenarios reach what they are meant to search (the counts of the suite's 200 are in
    // docs/RELIABILITY.md).
    trace(format_args!("reached: {reached:?}"));
    assert!(
        reached.everywhere(),
        "the scenarios never got there: {reached:?}"
    );
}
