//! Random scenarios for the control core, in virtual time: seeded sequences of what callers,
//! a trunk and applications can do — calls in on every kind of route and out through the
//! trunk, answers, refusals, redirects, hang-ups from either side, CANCELs, holds,
//! DeleteConnection, BridgeCalls, BlindTransfer, CTI requests (release, hold, answer,
//! transfers and conferences in one or two steps), agent conference requests, time passing —
//! in any order. Whatever came before, once the agents sign out, the applications hang up
//! every call and delete every connection they know and time runs on, the harness's leak check
//! finds nothing left: no connection, SIP call or transaction, conference, party, agent
//! conference, timer or port. A failure names its seed and the steps that led there.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::core::Input;
use super::harness::*;
use super::party::ConnId;
use super::tests::{trunk_bye, trunk_response};
use super::{AgentConfRequest, CallAction, ControlRequest, CtiRequest, MediaAction};
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
    /// Each (ThisDN, ConnID) the CTI events named: what CTI requests act on.
    cti_parties: Vec<(String, ConnId)>,
    /// ReferenceIDs of the CTI requests sent.
    references: u64,
    /// What happened, for a failure's message.
    steps: Vec<String>,
    /// How far the scenario got: the steps after which each kind of state existed.
    reached: Reached,
}

/// Steps after which the core held an answered call's connection, a bridge, a transfer
/// waiting for its target, or an agent conference: scenarios that never get there would
/// find no leak there, so the test requires them.
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    connections: usize,
    bridges: usize,
    transfers: usize,
    agent_conferences: usize,
}

impl Scenario {
    fn new(seed: u64) -> Scenario {
        Scenario {
            h: Harness::new(),
            rng: StdRng::seed_from_u64(seed),
            peers: Vec::new(),
            calls: Vec::new(),
            trunk_invites: Vec::new(),
            trunk_answered: Vec::new(),
            cti_parties: Vec::new(),
            references: 0,
            steps: Vec::new(),
            reached: Reached::default(),
        }
    }

    fn step(&mut self) {
        match self.rng.random_range(0..20) {
            0 | 1 => {
                let user = USERS[self.rng.random_range(0..USERS.len())];
                let peer = PeerCall::new(user, &format!("p{}", self.peers.len()));
                let port = 30_000 + 2 * self.peers.len() as u16;
                self.steps
                    .push(format!("INVITE from p{} to {user}", self.peers.len()));
                let invite = peer.invite(Some(&pcmu_sdp(port)), "");
                self.peers.push(peer);
                self.h.sip_from(PEER, invite);
            }
            2 => self.peer_sends("ACK", |peer| peer.ack()),
            3 => self.peer_sends("BYE", |peer| peer.in_dialog("BYE", "")),
            4 => self.peer_sends("CANCEL", |peer| peer.cancel()),
            5 => self.peer_sends("re-INVITE", |peer| peer.reinvite(&pcmu_sdp(31_000))),
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
                        to: "7100".into(),
                    },
                    _ => CallAction::Hangup { call },
                };
                self.steps.push(format!("{} {call}", action.name()));
                self.call_action(action);
            }
            8 => {
                self.steps.push("MakeCall".into());
                let placed = self.h.call_action(CallAction::MakeCall(super::MakeCall {
                    to: "7002".into(),
                    from: None,
                    display_name: None,
                    trunk: None,
                    conference: None,
                }));
                if let Some(call) = placed
                    .ok()
                    .and_then(|r| r["CallId"].as_str().and_then(|s| s.parse().ok()))
                {
                    self.calls.push(call);
                }
            }
            9 => self.trunk_answers(),
            10 => {
                let ids: Vec<u32> = self.h.core.connections.keys().copied().collect();
                if ids.is_empty() {
                    return;
                }
                let id = ids[self.rng.random_range(0..ids.len())];
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
                self.call_action(CallAction::BlindTransfer {
                    call,
                    to: "7200".into(),
                });
            }
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
        self.read_wire();
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
        ] {
            *count += usize::from(held);
        }
    }

    /// A Call Control action; its answer, which may come later (BlindTransfer waits for the
    /// outcome), is not waited for.
    fn call_action(&mut self, action: CallAction) {
        let (reply, _answer) = tokio::sync::oneshot::channel();
        self.h
            .input(Input::Request(ControlRequest::Call(action, reply)));
    }

    /// A caller's request in its dialog (or about its INVITE).
    fn peer_sends(&mut self, what: &str, make: impl FnOnce(&mut PeerCall) -> SipMessage) {
        if self.peers.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.peers.len());
        self.steps.push(format!("{what} from p{index}"));
        let message = make(&mut self.peers[index]);
        self.h.sip_from(PEER, message);
    }

    fn pick_call(&mut self) -> Option<CallId> {
        match self.calls.len() {
            0 => None,
            n => Some(self.calls[self.rng.random_range(0..n)]),
        }
    }

    /// The trunk's answer to one of our INVITEs: ringing, answered with SDP, or busy.
    fn trunk_answers(&mut self) {
        if self.trunk_invites.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.trunk_invites.len());
        let status = [180, 200, 486][self.rng.random_range(0..3)];
        self.steps.push(format!("trunk answers {status}"));
        let invite = if status == 180 {
            self.trunk_invites[index].clone()
        } else {
            self.trunk_invites.remove(index)
        };
        if status == 200 {
            self.trunk_answered.push(invite.clone());
        }
        let response = trunk_response(&invite, status, "Whatever", "target");
        self.h.sip_from(TRUNK, SipMessage::Response(response));
    }

    /// The trunk ends one of the calls it answered: a BYE in the dialog our INVITE made.
    fn trunk_hangs_up(&mut self) {
        if self.trunk_answered.is_empty() {
            return;
        }
        let invite = self
            .trunk_answered
            .remove(self.rng.random_range(0..self.trunk_answered.len()));
        self.steps.push("trunk BYE".into());
        let message = trunk_bye(&invite, self.steps.len() as u32);
        self.h.sip_from(TRUNK, message);
    }

    /// A CTI client's request about a party the events named (answers that come later, as a
    /// hold's, are not waited for).
    fn cti_request(&mut self) {
        if self.cti_parties.is_empty() {
            return;
        }
        let (this_dn, conn_id) =
            self.cti_parties[self.rng.random_range(0..self.cti_parties.len())].clone();
        let other_dn = self.cti_parties[self.rng.random_range(0..self.cti_parties.len())]
            .0
            .clone();
        let request = match self.rng.random_range(0..9) {
            0 | 1 => CtiRequest::ReleaseCall { this_dn, conn_id },
            2 => CtiRequest::Hold {
                this_dn,
                conn_id,
                hold: self.rng.random(),
            },
            3 => CtiRequest::AnswerCall { this_dn, conn_id },
            4 => CtiRequest::SingleStepTransfer {
                this_dn,
                conn_id,
                destination: "7300".into(),
            },
            5 => CtiRequest::Initiate {
                this_dn,
                conn_id,
                destination: "7301".into(),
            },
            6 => CtiRequest::Complete {
                this_dn,
                conn_id,
                transfer: self.rng.random(),
            },
            7 => CtiRequest::SingleStepConference {
                this_dn,
                conn_id,
                destination: "7302".into(),
            },
            _ => CtiRequest::DeleteFromConference {
                this_dn,
                conn_id,
                other_dn,
            },
        };
        self.steps.push(format!("CTI {request:?}"));
        self.references += 1;
        drop(self.h.cti_request_later(request, self.references));
    }

    /// An agent's gateway request (seed 03): agent 1001 on phone 6001 or 1002 on 6002 asks
    /// for a conference, adds a phone or the other agent, answers or refuses an invitation,
    /// holds, mutes, hands over the chair, prolongs, leaves, releases, or signs out.
    fn agent_request(&mut self) {
        use crate::agent_gateway::requests::{
            ApplyToShiftPresident, BatchAddParticipant, ChangeParticipantMode, ParticipantTarget,
            ProlongTime, RequestAgentConf,
        };
        use crate::agent_gateway::Participant;
        let (me, other) = if self.rng.random() {
            (1001, 1002)
        } else {
            (1002, 1001)
        };
        let json = |value: serde_json::Value| value.to_string().into_bytes();
        let request = match self.rng.random_range(0..12) {
            0 | 1 => AgentConfRequest::Request(
                RequestAgentConf::from_json(&json(
                    serde_json::json!({"memberNum": 4, "time": 5, "promptTime": 1}),
                ))
                .expect("a request"),
            ),
            2 => AgentConfRequest::AddParticipants(
                BatchAddParticipant::from_json(&json(
                    serde_json::json!({"addresses": [{"addressType": 6, "address": "7001"}]}),
                ))
                .expect("a request"),
                Default::default(),
            ),
            3 => AgentConfRequest::AddParticipants(
                BatchAddParticipant::from_json(&json(serde_json::json!({
                    "addresses": [{"addressType": 9, "address": other.to_string()}]
                })))
                .expect("a request"),
                [(agent(other), agent_phone(other))].into_iter().collect(),
            ),
            4 => AgentConfRequest::Answer,
            5 => AgentConfRequest::Reject,
            6 => AgentConfRequest::Hold(
                ParticipantTarget {
                    participant: Participant::Phone(number("7001")),
                },
                self.rng.random(),
            ),
            7 => AgentConfRequest::ChangeMode(
                ChangeParticipantMode::from_json(&json(serde_json::json!({
                    "attribute": self.rng.random_range(1..=4),
                    "addressType": 6,
                    "address": "7001"
                })))
                .expect("a request"),
            ),
            8 => AgentConfRequest::ShiftPresident(ApplyToShiftPresident {
                dest_agent: agent(other),
            }),
            9 => AgentConfRequest::Prolong(
                ProlongTime::from_json(&json(serde_json::json!({"prolongTime": 2})))
                    .expect("a request"),
            ),
            10 => AgentConfRequest::Leave,
            _ if self.rng.random() => AgentConfRequest::Release,
            _ => AgentConfRequest::SignedOut,
        };
        self.steps.push(format!("agent {me}: {request:?}"));
        self.agent_says(me, request);
    }

    /// A request of agent `id` (on its phone); its answer is not waited for.
    fn agent_says(&mut self, id: i64, request: AgentConfRequest) {
        let (reply, _answer) = tokio::sync::oneshot::channel();
        self.h.input(Input::Request(ControlRequest::AgentConf {
            agent: agent(id),
            phone: agent_phone(id),
            request,
            reply,
        }));
    }

    /// What the core sent and said: the callers learn our tags, the applications the calls
    /// offered to them, the trunk our INVITEs.
    fn read_wire(&mut self) {
        let wire: Vec<(Peer, SipMessage)> = self.h.wire.drain(..).collect();
        for (to, message) in wire {
            match message {
                SipMessage::Response(response) => {
                    let call_id = response.headers.get("Call-ID").unwrap_or_default();
                    if let Some(peer) = self.peers.iter_mut().find(|p| p.call_id == call_id) {
                        if peer.to_tag.is_none() {
                            peer.learn(&response);
                        }
                    }
                }
                SipMessage::Request(request) => {
                    if request.method.as_str() == "INVITE" && to.addr == addr(TRUNK) {
                        self.trunk_invites.push(request);
                    }
                }
            }
        }
        let offered: Vec<CallId> = self
            .h
            .events_named("IncomingCall")
            .iter()
            .filter_map(|e| e["CallId"].as_str().and_then(|s| s.parse().ok()))
            .collect();
        for call in offered {
            if !self.calls.contains(&call) {
                self.calls.push(call);
            }
        }
        self.h.core.take_agent_events();
        for event in self.h.take_cti() {
            let (Some(dn), Some(conn_id)) = (
                event["ThisDN"].as_str(),
                event["ConnID"].as_str().and_then(ConnId::parse),
            ) else {
                continue;
            };
            let party = (dn.to_string(), conn_id);
            if !self.cti_parties.contains(&party) {
                self.cti_parties.push(party);
            }
        }
    }

    /// The applications end everything they know; time runs on past every deadline.
    fn finish(&mut self) {
        self.steps.push(
            "the end: the agents sign out, every call is hung up, every connection deleted".into(),
        );
        for id in [1001, 1002] {
            self.agent_says(id, AgentConfRequest::SignedOut);
        }
        for call in self.calls.clone() {
            self.call_action(CallAction::Hangup { call });
        }
        let ids: Vec<u32> = self.h.core.connections.keys().copied().collect();
        for id in ids {
            let _ = self.h.action(MediaAction::Delete {
                connection: Some(id),
                conference: None,
            });
        }
        self.h.advance(Duration::from_secs(600));
        self.h.assert_no_leaks();
    }
}

fn agent(id: i64) -> crate::agent_gateway::AgentId {
    crate::agent_gateway::AgentId::new(id).expect("an agent id")
}

fn number(text: &str) -> crate::agent_gateway::PhoneNumber {
    crate::agent_gateway::PhoneNumber::parse(text).expect("a number")
}

/// Agent 1001's phone is 6001, 1002's 6002.
fn agent_phone(id: i64) -> crate::agent_gateway::PhoneNumber {
    number(&(id + 5000).to_string())
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
    for seed in 0..from_env("SCENARIO_SEEDS", 200) {
        let r = run(seed, steps);
        reached.connections += r.connections;
        reached.bridges += r.bridges;
        reached.transfers += r.transfers;
        reached.agent_conferences += r.agent_conferences;
    }
    // The scenarios reach what they are meant to search (200 of 40 steps: 4,961 steps with
    // an answered call's connection, 1,509 with an agent conference, 225 with a bridge, 95
    // with a transfer waiting).
    assert!(
        reached.connections > 0
            && reached.bridges > 0
            && reached.transfers > 0
            && reached.agent_conferences > 0,
        "the scenarios never got there: {reached:?}"
    );
}
