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

    /// A caller's or the trunk's message to the core, recorded for the SIP check.
    fn send(&mut self, from: &'static str, message: SipMessage) {
        if let Err(e) = self.sip.sent(&message, self.h.now.at) {
            panic!("{e}");
        }
        if matches!(&message, SipMessage::Request(r) if r.method.as_str() != "ACK") {
            self.sent.push((from, message.clone(), self.h.now.at));
        }
        self.h.sip_from(from, message);
    }

    /// One of the last requests a caller or the trunk sent, sent again as its transaction
    /// would retransmit it, its answer lost: within Timer B/F (64·T1) of its first sending,
    /// an INVITE only while it has no final response (once it has, its ACK went instead).
    fn resend(&mut self) {
        let now = self.h.now.at;
        let recent = self.sent.len().saturating_sub(10);
        let candidates: Vec<(&'static str, SipMessage)> = self.sent[recent..]
            .iter()
            .filter(|(_, message, at)| {
                let invite =
                    matches!(message, SipMessage::Request(r) if r.method.as_str() == "INVITE");
                now < *at + Duration::from_secs(32)
                    && !(invite && self.sip.answered_finally(message))
            })
            .map(|(from, message, _)| (*from, message.clone()))
            .collect();
        let Some((from, message)) = self.pick(&candidates) else {
            return;
        };
        if let SipMessage::Request(request) = &message {
            self.steps.push(format!(
                "{from} sends its {} again",
                request.method.as_str()
            ));
        }
        self.send(from, message);
    }

    /// A second fork behind the trunk answers one of our INVITEs the trunk answered too
    /// (another To tag): RFC 3261 §13.2.2.4, the core ACKs it and ends it.
    fn trunk_fork_answers(&mut self) {
        let Some(invite) = self.pick(&self.trunk_answered.clone()) else {
            return;
        };
        self.steps.push("a second fork answers 200".into());
        let response = trunk_response(&invite, 200, "OK", "fork");
        self.send(TRUNK, SipMessage::Response(response));
    }

    /// A Call Control action; its answer, which may come later (BlindTransfer waits for the
    /// outcome), is not waited for.
    fn call_action(&mut self, action: CallAction) {
        let (reply, _answer) = tokio::sync::oneshot::channel();
        self.h
            .input(Input::Request(ControlRequest::Call(action, reply)));
    }

    /// A caller's request in its dialog (or about its INVITE).
    /// A caller's re-INVITE, from one that has our tag: without it the INVITE would be a new
    /// call from the same DN (the CTI check tells parties apart by DN).
    fn peer_reinvites(&mut self, what: &str, make: impl FnOnce(&mut PeerCall) -> SipMessage) {
        let confirmed: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].to_tag.is_some())
            .collect();
        let Some(index) = self.pick(&confirmed) else {
            return;
        };
        self.steps.push(format!("{what} from p{index}"));
        let message = make(&mut self.peers[index]);
        self.send(PEER, message);
    }

    fn peer_sends(&mut self, what: &str, make: impl FnOnce(&mut PeerCall) -> SipMessage) {
        if self.peers.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.peers.len());
        self.steps.push(format!("{what} from p{index}"));
        let message = make(&mut self.peers[index]);
        self.send(PEER, message);
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

    /// A new caller whose INVITE replaces another caller's dialog (RFC 3891: an attended
    /// transfer's last step).
    fn replacing_invite(&mut self) {
        let confirmed: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].to_tag.is_some())
            .collect();
        let Some(old) = self.pick(&confirmed) else {
            return;
        };
        let old_peer = &self.peers[old];
        let replaces = format!(
            "Replaces: {};to-tag={};from-tag=peer-p{old}\r\n",
            old_peer.call_id,
            old_peer.to_tag.as_deref().unwrap_or_default()
        );
        let user = old_peer.user.clone();
        let n = self.peers.len();
        let peer = PeerCall::new(&user, &format!("p{n}")).with_dn(&format!("555{}", 2000 + n));
        self.steps
            .push(format!("INVITE from p{n} to {user} replacing p{old}"));
        let invite = peer.invite(Some(&pcmu_sdp(30_000 + 2 * n as u16)), &replaces);
        self.peers.push(peer);
        self.send(PEER, invite);
    }

    /// An application's media operation on a connection (or a conference): a prompt, digit
    /// gathering, a recording, energy detection, digits sent, or a stop.
    fn media_operation(&mut self) {
        let Some(connection) = self.pick_connection() else {
            return;
        };
        let conds = TermConds {
            max_time: Some(Duration::from_secs(self.rng.random_range(1..20))),
            ..TermConds::default()
        };
        let conference = self.pick(&self.app_conferences.clone());
        let target = match conference {
            Some(conference) if self.rng.random_range(0..4) == 0 => Target::Conference(conference),
            _ => Target::Connection(connection),
        };
        let target_kind = target;
        let action = match self.rng.random_range(0..7) {
            0 | 1 => MediaAction::Play(super::PlayRequest {
                conds,
                ..super::PlayRequest::prompt(target, "hello.wav")
            }),
            2 => MediaAction::GatherDigits {
                connection,
                conds: TermConds {
                    max_digits: Some(2),
                    ..conds
                },
                state: None,
            },
            3 => MediaAction::Record(super::RecordRequest {
                target,
                filename: None,
                conds,
                encoding: crate::media::wav::Encoding::Ulaw,
                file_rate: 8000,
                expires_days: 0,
                state: None,
            }),
            4 => MediaAction::DetectEnergy {
                connection,
                silence: self.rng.random(),
                needed: Duration::from_secs(2),
                command_timeout: Some(Duration::from_secs(10)),
                state: None,
            },
            5 => MediaAction::SendDigits {
                connection,
                digits: "12".into(),
            },
            _ => MediaAction::StopMediaOperation {
                connection,
                operation: None,
                block: self.rng.random(),
            },
        };
        self.steps
            .push(format!("{} on {connection}", action.name()));
        if let Ok(answer) = self.h.action(action) {
            if let Some(operation) = answer.get("OperationId").and_then(Value::as_str) {
                self.surfaces.operation_started(operation);
            }
            if let Target::Conference(_) = target_kind {
                if let Some(leg) = answer.get("ConnectionId").and_then(Value::as_str) {
                    self.surfaces.connection_answered(leg);
                }
            }
        }
    }

    /// What a media worker reports: RTP stopped, a prompt played out, a digit, the silence
    /// waited for, a recording's disk full, a talker.
    fn engine_says(&mut self) {
        let engine = &self.h.core.engine;
        let mut keys: Vec<u64> = engine.connections.keys().copied().collect();
        keys.sort_unstable();
        let mut plays: Vec<(u64, u64)> = engine.plays.iter().copied().collect();
        plays.sort_unstable();
        let mut watches: Vec<(u64, u64)> = engine.watches.iter().copied().collect();
        watches.sort_unstable();
        let mut recordings: Vec<(u64, u64)> = engine
            .recordings
            .iter()
            .map(|(op, (k, _))| (*k, *op))
            .collect();
        recordings.sort_unstable();
        let mut members: Vec<(u64, u64)> = engine
            .conferences
            .iter()
            .flat_map(|(c, m)| m.iter().map(move |k| (*c, *k)))
            .collect();
        members.sort_unstable();
        let source = "127.0.0.2:30999".parse().expect("an address");
        let event = match self.rng.random_range(0..8) {
            6 => self
                .pick(&keys)
                .map(|key| EngineEvent::FirstPacket { key, source }),
            7 => self
                .pick(&keys)
                .map(|key| EngineEvent::Latched { key, source }),
            0 => self.pick(&keys).map(|key| EngineEvent::RtpTimeout { key }),
            1 => self
                .pick(&plays)
                .map(|(key, operation)| EngineEvent::PlayoutDone { key, operation }),
            2 => self.pick(&keys).map(|key| EngineEvent::Digit {
                key,
                digit: '5',
                duration_ms: 120,
            }),
            3 => self
                .pick(&watches)
                .map(|(key, operation)| EngineEvent::Energy {
                    key,
                    operation,
                    silence: true,
                }),
            4 => self
                .pick(&recordings)
                .map(|(key, operation)| EngineEvent::RecordingFailed {
                    key,
                    operation,
                    error: "No space left on device".into(),
                }),
            _ => {
                let talking = self.rng.random();
                self.pick(&members)
                    .map(|(conference, key)| EngineEvent::Talker {
                        conference,
                        key,
                        talking,
                    })
            }
        };
        if let Some(event) = event {
            self.steps.push(format!("engine: {event:?}"));
            // What the engine itself forgets when it reports these ends.
            let engine = &mut self.h.core.engine;
            match &event {
                EngineEvent::PlayoutDone { key, operation } => {
                    engine.plays.remove(&(*key, *operation));
                }
                EngineEvent::Energy { key, operation, .. } => {
                    engine.watches.remove(&(*key, *operation));
                }
                _ => {}
            }
            self.h.engine_event(event);
        }
    }

    /// Media Control's conferences: one made of a connection, a connection joining one or
    /// leaving it.
    fn conference_action(&mut self) {
        let Some(connection) = self.pick_connection() else {
            return;
        };
        let conference = self.pick(&self.app_conferences.clone());
        let action = match (self.rng.random_range(0..3), conference) {
            (1, Some(conference)) => join_conference(connection, conference),
            (2, Some(conference)) => MediaAction::LeaveConference {
                connection,
                conference,
            },
            _ => MediaAction::CreateConference {
                connection,
                completion: Completion::default(),
                conferee: ConfereeSpec::default(),
                hairpin: self.rng.random(),
                join_tone: false,
            },
        };
        self.steps
            .push(format!("{} with {connection}", action.name()));
        if let Ok(answer) = self.h.action(action) {
            if let Some(id) = answer
                .get("ConferenceId")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                if !self.app_conferences.contains(&id) {
                    self.app_conferences.push(id);
                }
            }
        }
    }

    /// An application's own connection: reserved, or created (completing a reservation or
    /// not).
    fn app_connection(&mut self) {
        let requester = "127.0.0.9".parse().expect("an address");
        let action = if self.rng.random() {
            MediaAction::Reserve {
                rx_codec: None,
                tx_codec: None,
                requester,
            }
        } else {
            let mut reserved: Vec<u32> = self
                .h
                .core
                .connections
                .iter()
                .filter(|(_, c)| matches!(c.state, super::core::ConnectionState::Reserved { .. }))
                .map(|(id, _)| *id)
                .collect();
            reserved.sort_unstable();
            MediaAction::Create {
                connection: self.pick(&reserved),
                tx: "127.0.0.9:7000".parse().expect("an address"),
                codecs: CodecChoice::default(),
                requester,
            }
        };
        self.steps.push(action.name().into());
        let _ = self.h.action(action);
    }

    /// The recording API's MuteRecording of a call the store knows.
    fn mute_recording(&mut self) {
        let Some(call_id) = self.pick(&self.surfaces.store_call_ids()) else {
            return;
        };
        let channels = [
            crate::store::MuteChannels::NONE,
            crate::store::MuteChannels::LEFT,
            crate::store::MuteChannels::BOTH,
        ][self.rng.random_range(0..3)];
        self.steps.push(format!("MuteRecording {call_id}"));
        let (reply, _answer) = tokio::sync::oneshot::channel();
        self.h.input(Input::Request(ControlRequest::MuteRecording {
            call_id,
            channels,
            reply,
        }));
    }

    /// The trunk's answer to one of our INVITEs: ringing, answered with SDP, or busy.
    fn trunk_answers(&mut self) {
        if self.trunk_invites.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.trunk_invites.len());
        let status = [180, 183, 200, 486][self.rng.random_range(0..4)];
        self.steps.push(format!("trunk answers {status}"));
        let invite = if status < 200 {
            self.trunk_invites[index].clone()
        } else {
            self.trunk_invites.remove(index)
        };
        if status == 200 {
            self.trunk_answered.push(invite.clone());
        }
        let mut response = trunk_response(&invite, status, "Whatever", "target");
        if status == 183 {
            // Early media: the trunk's answer in a provisional response.
            response
                .headers
                .set("Content-Type", "application/sdp".to_string());
            response.body = pcmu_sdp(31_000).into_bytes();
        }
        self.send(TRUNK, SipMessage::Response(response));
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
        let message = self.trunk_in_dialog(&invite, "BYE", "", None);
        self.send(TRUNK, message);
    }

    /// A request of the trunk in the dialog `invite` began, with its next CSeq.
    fn trunk_in_dialog(
        &mut self,
        invite: &Request,
        method: &str,
        extra: &str,
        body: Option<&str>,
    ) -> SipMessage {
        self.trunk_cseq += 1;
        let n = self.steps.len() as u32;
        trunk_request(invite, method, n, self.trunk_cseq, extra, body)
    }

    /// The trunk's other requests in a call it answered: a hold or resume (re-INVITE or
    /// UPDATE), a re-INVITE asking for our offer, a REFER, an INFO or an OPTIONS.
    fn trunk_sends(&mut self) {
        let Some(invite) = self.pick(&self.trunk_answered.clone()) else {
            return;
        };
        let direction = ["sendonly", "inactive", "sendrecv"][self.rng.random_range(0..3)];
        let sdp = sdp_with(31_000, direction);
        let target = self.fresh_number("77");
        let refer_to = format!("Refer-To: <sip:{target}@{TRUNK}>\r\n");
        let (method, extra, body) = match self.rng.random_range(0..6) {
            0 => ("INVITE", "", Some(sdp.as_str())),
            1 => ("UPDATE", "", Some(sdp.as_str())),
            2 => ("INVITE", "", None),
            3 => ("REFER", refer_to.as_str(), None),
            4 => ("INFO", "", None),
            _ => ("OPTIONS", "", None),
        };
        self.steps.push(format!(
            "trunk {method} {}",
            if body.is_some() { direction } else { "" }
        ));
        let message = self.trunk_in_dialog(&invite, method, extra, body);
        self.send(TRUNK, message);
    }

    /// A caller's offer: mostly PCMU, else another codec (PCMA, Opus), SRTP (SDES), or
    /// nothing we can take (G.729 only: 488), at `port`.
    fn some_offer(&mut self, port: u16) -> String {
        let media = |line: &str, attributes: &str| {
            format!(
                "v=0\r\no=peer 2890844526 1 IN IP4 {PEER_MEDIA_IP}\r\ns=-\r\n\
                 c=IN IP4 {PEER_MEDIA_IP}\r\nt=0 0\r\nm=audio {port} {line}\r\n{attributes}"
            )
        };
        match self.rng.random_range(0..10) {
            0 => media("RTP/AVP 8", "a=rtpmap:8 PCMA/8000\r\n"),
            1 => media(
                "RTP/AVP 111 101",
                "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n\
                 a=rtpmap:101 telephone-event/48000\r\n",
            ),
            2 => media(
                "RTP/SAVP 0",
                "a=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 \
                 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VsZi1uZXR3b3JrKQ\r\n",
            ),
            3 => media("RTP/AVP 18", "a=rtpmap:18 G729/8000\r\n"),
            _ => pcmu_sdp(port),
        }
    }

    /// A caller's ACK; an offerless caller's mostly carries its answer.
    fn peer_acks(&mut self) {
        if self.peers.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.peers.len());
        let answer = self.offerless.contains(&index) && self.rng.random_range(0..5) > 0;
        self.steps.push(format!(
            "ACK{} from p{index}",
            if answer { " with SDP" } else { "" }
        ));
        let sdp = answer.then(|| pcmu_sdp(30_000 + 2 * index as u16));
        if answer {
            self.reached.offer_answer_variants += 1;
        }
        let message = self.peers[index].ack_with(sdp.as_deref());
        self.send(PEER, message);
    }

    /// A caller's requests that change nothing in the call (INFO, OPTIONS), or a PRACK of
    /// nothing we sent.
    fn peer_sends_other(&mut self) {
        match self.rng.random_range(0..3) {
            0 => self.peer_sends("INFO", |peer| peer.in_dialog("INFO", "")),
            1 => self.peer_sends("OPTIONS", |peer| peer.in_dialog("OPTIONS", "")),
            _ => self.peer_sends("PRACK of RSeq 77", |peer| peer.prack(77)),
        }
    }

    /// A CTI client's MakeCall, from a DN the events named or a new one.
    fn cti_make_call(&mut self) {
        let this_dn = match self.pick(&self.cti_parties.clone()) {
            Some((dn, _)) if self.rng.random() => dn,
            _ => self.fresh_number("78"),
        };
        let request = CtiRequest::MakeCall {
            this_dn,
            destination: self.fresh_number("79"),
            trunk: None,
        };
        self.steps.push(format!("CTI {request:?}"));
        self.references += 1;
        drop(self.h.cti_request_later(request, self.references));
    }

    /// A CTI client's questions: a call's parties, a DN's calls. They change nothing.
    fn cti_query(&mut self) {
        let Some((this_dn, conn_id)) = self.pick(&self.cti_parties.clone()) else {
            return;
        };
        let request = if self.rng.random() {
            CtiRequest::QueryCall { conn_id }
        } else {
            CtiRequest::QueryAddress { this_dn }
        };
        self.steps.push(format!("CTI {request:?}"));
        self.references += 1;
        drop(self.h.cti_request_later(request, self.references));
    }

    /// Media Control's changes to what exists: ModifyConnection, SetConfereeAttribute,
    /// PlayTone, AdjustPlay.
    fn media_change(&mut self) {
        let Some(connection) = self.pick_connection() else {
            return;
        };
        let action = match self.rng.random_range(0..4) {
            0 => MediaAction::Modify {
                connection,
                tx: "127.0.0.9:7002".parse().expect("an address"),
                codecs: CodecChoice::default(),
            },
            1 => {
                let Some(conference) = self.pick(&self.app_conferences.clone()) else {
                    return;
                };
                let flag = Some(self.rng.random());
                let change = match self.rng.random_range(0..4) {
                    0 => AttributeChange {
                        mute: flag,
                        ..AttributeChange::default()
                    },
                    1 => AttributeChange {
                        coach: flag,
                        ..AttributeChange::default()
                    },
                    2 => AttributeChange {
                        pupil: flag,
                        ..AttributeChange::default()
                    },
                    _ => AttributeChange {
                        deaf: flag,
                        ..AttributeChange::default()
                    },
                };
                MediaAction::SetConfereeAttribute {
                    connection,
                    conference,
                    change,
                }
            }
            2 => MediaAction::PlayTone {
                target: Target::Connection(connection),
                tone: super::media_ops::ToneRequest {
                    frequency1: 440,
                    frequency2: None,
                    amplitude1: -10,
                    amplitude2: -10,
                    duration_ms: Some(self.rng.random_range(0..3) * 500),
                },
                conds: TermConds::default(),
                state: None,
            },
            _ => MediaAction::AdjustPlay {
                connection,
                level: super::media_ops::Level::Volume(3),
                adjustment: super::media_ops::Adjustment::Relative,
            },
        };
        self.steps
            .push(format!("{} on {connection}", action.name()));
        if let Ok(answer) = self.h.action(action) {
            if let Some(operation) = answer.get("OperationId").and_then(Value::as_str) {
                self.surfaces.operation_started(operation);
            }
        }
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
                destination: self.fresh_number("73"),
            },
            5 => CtiRequest::Initiate {
                this_dn,
                conn_id,
                destination: self.fresh_number("74"),
            },
            6 => CtiRequest::Complete {
                this_dn,
                conn_id,
                transfer: self.rng.random(),
            },
            7 => CtiRequest::SingleStepConference {
                this_dn,
                conn_id,
                destination: self.fresh_number("75"),
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
            ApplyToShiftPresident, BatchAddParticipant, BatchRemoveParticipant,
            ChangeParticipantMode, ParticipantTarget, ProlongTime, RequestAgentConf,
        };
        use crate::agent_gateway::Participant;
        let (me, other) = if self.rng.random() {
            (1001, 1002)
        } else {
            (1002, 1001)
        };
        let json = |value: serde_json::Value| value.to_string().into_bytes();
        // Two numbers a conference may call besides the agents' phones.
        let phone = ["7001", "7002"][self.rng.random_range(0..2)];
        let request = match self.rng.random_range(0..15) {
            12 => AgentConfRequest::RemoveParticipants(
                BatchRemoveParticipant::from_json(&json(if self.rng.random() {
                    serde_json::json!({"addresses": [{"addressType": 6, "address": phone}]})
                } else {
                    serde_json::json!({
                        "addresses": [{"addressType": 9, "address": other.to_string()}]
                    })
                }))
                .expect("a request"),
            ),
            13 => AgentConfRequest::QueryConfInfos,
            14 => AgentConfRequest::QueryAllConfIds {
                inspector: self.rng.random(),
            },
            0 | 1 => AgentConfRequest::Request(
                RequestAgentConf::from_json(&json(
                    serde_json::json!({"memberNum": 4, "time": 5, "promptTime": 1}),
                ))
                .expect("a request"),
            ),
            2 => AgentConfRequest::AddParticipants(
                BatchAddParticipant::from_json(&json(
                    serde_json::json!({"addresses": [{"addressType": 6, "address": phone}]}),
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
                    participant: Participant::Phone(number(phone)),
                },
                self.rng.random(),
            ),
            7 => AgentConfRequest::ChangeMode(
                ChangeParticipantMode::from_json(&json(serde_json::json!({
                    "attribute": self.rng.random_range(1..=4),
                    "addressType": 6,
                    "address": phone
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
    /// offered to them, the trunk our INVITEs; the callers and the trunk answer most of our
    /// other requests (BYE, re-INVITE, UPDATE, REFER, NOTIFY, CANCEL, ...) — 200, or 481 as
    /// for a dialog they have forgotten — and leave the rest to time out.
    fn read_wire(&mut self) {
        for _ in 0..8 {
            if !self.read_wire_once() {
                break;
            }
        }
    }

    /// One pass of [`Scenario::read_wire`]: whether anyone answered (which may make more).
    fn read_wire_once(&mut self) -> bool {
        let wire: Vec<(Peer, SipMessage)> = self.h.wire.drain(..).collect();
        for (to, message) in &wire {
            if let Err(e) = self.sip.received(message, self.step_started) {
                panic!("{e}");
            }
            let cseq = message.headers().get("CSeq").unwrap_or_default();
            let call_id = message.headers().get("Call-ID").unwrap_or_default();
            match message {
                SipMessage::Request(r) => trace(format_args!(
                    "    sent to {}: {} ({cseq}, {call_id})",
                    to.addr,
                    r.method.as_str()
                )),
                SipMessage::Response(r) => trace(format_args!(
                    "    sent to {}: {} ({cseq}, {call_id})",
                    to.addr, r.status
                )),
            }
        }
        let mut answers = Vec::new();
        for (to, message) in &wire {
            let SipMessage::Request(request) = message else {
                continue;
            };
            let initial_invite =
                request.method.as_str() == "INVITE" && request.headers.to_tag().is_none();
            if initial_invite || request.method.as_str() == "ACK" {
                continue;
            }
            // A retransmission gets the answer the first copy got (if it got one).
            let key = format!(
                "{} {}",
                request.headers.get("Via").unwrap_or_default(),
                request.method.as_str()
            );
            let status = match self.answered.get(&key) {
                Some(&status) => status,
                None => match self.rng.random_range(0..10) {
                    0..=6 => 200,
                    7 => 481,
                    _ => continue,
                },
            };
            self.answered.insert(key, status);
            let mut response = crate::sip::message::Response::for_request(
                request,
                status,
                if status == 200 { "OK" } else { "Gone" },
            );
            let from = if to.addr == addr(TRUNK) { TRUNK } else { PEER };
            if status == 200 && request.method.as_str() == "INVITE" {
                response
                    .headers
                    .push("Contact", format!("<sip:peer@{from}>"));
                let sdp = sdp_with(31_000, "sendrecv");
                response
                    .headers
                    .set("Content-Type", "application/sdp".to_string());
                response.body = sdp.into_bytes();
            }
            answers.push((
                from,
                format!("{status} to {}", request.method.as_str()),
                SipMessage::Response(response),
            ));
        }
        for (to, message) in wire {
            match message {
                SipMessage::Response(response) => {
                    let call_id = response.headers.get("Call-ID").unwrap_or_default();
                    if let Some(index) = self.peers.iter().position(|p| p.call_id == call_id) {
                        let peer = &mut self.peers[index];
                        if peer.to_tag.is_none() {
                            peer.learn(&response);
                        }
                        // Most callers' transactions ACK a failure of their INVITE (RFC 3261
                        // §17.1.1.3); the rest leave the core to retransmit it until Timer H.
                        let failed = response.status >= 300
                            && self.peers[index].is_invite_answer(&response)
                            && self.rng.random_range(0..5) > 0;
                        if failed {
                            let ack = self.peers[index].ack_failure(&response);
                            answers.push((
                                PEER,
                                format!("ACK of {} from p{index}", response.status),
                                ack,
                            ));
                        }
                        // Most callers PRACK a reliable provisional response (RFC 3262).
                        let rseq = response
                            .headers
                            .get("RSeq")
                            .and_then(|r| r.trim().parse().ok());
                        if let Some(rseq) = rseq.filter(|_| self.rng.random_range(0..5) > 0) {
                            let prack = self.peers[index].prack(rseq);
                            self.reached.offer_answer_variants += 1;
                            answers.push((PEER, format!("PRACK {rseq} from p{index}"), prack));
                        }
                    } else if to.addr == addr(TRUNK)
                        && (200..300).contains(&response.status)
                        && response
                            .headers
                            .get("CSeq")
                            .is_some_and(|c| c.ends_with("INVITE"))
                    {
                        // The trunk ACKs most 2xx of its re-INVITEs.
                        let invite = self
                            .trunk_answered
                            .iter()
                            .find(|i| i.headers.get("Call-ID") == Some(call_id))
                            .cloned();
                        let cseq = response
                            .headers
                            .get("CSeq")
                            .and_then(|c| c.split_whitespace().next()?.parse().ok());
                        if let (Some(invite), Some(cseq)) = (invite, cseq) {
                            if self.rng.random_range(0..10) > 0 {
                                let n = self.steps.len() as u32;
                                let ack = trunk_request(&invite, "ACK", n, cseq, "", None);
                                answers.push((TRUNK, "trunk ACK".into(), ack));
                            }
                        }
                    }
                }
                SipMessage::Request(request) => {
                    // Each INVITE once, retransmissions aside; the trunk answers it finally
                    // once (a 200 after its 486 would be the trunk's error, not ours).
                    let branch = request.headers.get("Via").unwrap_or_default().to_string();
                    if request.method.as_str() == "INVITE"
                        && request.headers.to_tag().is_none()
                        && to.addr == addr(TRUNK)
                        && self.trunk_branches.insert(branch)
                    {
                        self.trunk_invites.push(request);
                    }
                }
            }
        }
        let answered = !answers.is_empty();
        for (from, what, message) in answers {
            let step = format!("{from} answers {what}");
            trace(&step);
            self.steps.push(step);
            self.reached.answers += 1;
            self.send(from, message);
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
        let agent_events = self.h.core.take_agent_events();
        for (agent, event) in &agent_events {
            trace(format_args!(
                "    agent {agent}: {} {}",
                event.event_type, event.content
            ));
        }
        let cti = self.h.take_cti();
        let store = self.h.core.take_store_events();
        let events = &self.h.seen[self.events_read..];
        self.events_read = self.h.seen.len();
        for event in events.iter().chain(&cti) {
            trace(format_args!("    {event}"));
        }
        for event in &store {
            trace(format_args!("    store: {event:?}"));
        }
        if let Err(e) = self
            .desktops
            .read(&agent_events)
            .and_then(|()| self.surfaces.read_events(events))
            .and_then(|()| self.surfaces.read_cti(&cti))
            .and_then(|()| self.surfaces.same_releases())
            .and_then(|()| self.surfaces.read_store(&store))
        {
            panic!("{e}");
        }
        for event in cti {
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
        answered
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
