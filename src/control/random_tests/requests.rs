//! The random scenarios' applications, CTI clients, agents and engine: Call Control and
//! Media Control actions, CTI requests and queries, agent conference requests, and what a
//! media worker reports.

use super::*;

impl Scenario {
    /// A Call Control action; its answer, which may come later (BlindTransfer waits for the
    /// outcome), is not waited for.
    pub(super) fn call_action(&mut self, action: CallAction) {
        let (reply, _answer) = tokio::sync::oneshot::channel();
        self.h
            .input(Input::Request(ControlRequest::Call(action, reply)));
    }

    /// An application's media operation on a connection (or a conference): a prompt, digit
    /// gathering, a recording, energy detection, digits sent, or a stop.
    pub(super) fn media_operation(&mut self) {
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
            0 | 1 => MediaAction::Play(crate::control::PlayRequest {
                conds,
                ..crate::control::PlayRequest::prompt(target, "hello.wav")
            }),
            2 => MediaAction::GatherDigits {
                connection,
                conds: TermConds {
                    max_digits: Some(2),
                    ..conds
                },
                state: None,
            },
            3 => MediaAction::Record(crate::control::RecordRequest {
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
    pub(super) fn engine_says(&mut self) {
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
    pub(super) fn conference_action(&mut self) {
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
    pub(super) fn app_connection(&mut self) {
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
                .filter(|(_, c)| {
                    matches!(
                        c.state,
                        crate::control::core::ConnectionState::Reserved { .. }
                    )
                })
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
    pub(super) fn mute_recording(&mut self) {
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

    /// A CTI client's MakeCall, from a DN the events named or a new one.
    pub(super) fn cti_make_call(&mut self) {
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
    pub(super) fn cti_query(&mut self) {
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
    pub(super) fn media_change(&mut self) {
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
                tone: crate::control::media_ops::ToneRequest {
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
                level: crate::control::media_ops::Level::Volume(3),
                adjustment: crate::control::media_ops::Adjustment::Relative,
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
    pub(super) fn cti_request(&mut self) {
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
    pub(super) fn agent_request(&mut self) {
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
    pub(super) fn agent_says(&mut self, id: i64, request: AgentConfRequest) {
        let (reply, _answer) = tokio::sync::oneshot::channel();
        self.h.input(Input::Request(ControlRequest::AgentConf {
            agent: agent(id),
            phone: agent_phone(id),
            request,
            reply,
        }));
    }
}

pub(super) fn agent(id: i64) -> crate::agent_gateway::AgentId {
    crate::agent_gateway::AgentId::new(id).expect("an agent id")
}

pub(super) fn number(text: &str) -> crate::agent_gateway::PhoneNumber {
    crate::agent_gateway::PhoneNumber::parse(text).expect("a number")
}

/// Agent 1001's phone is 6001, 1002's 6002.
pub(super) fn agent_phone(id: i64) -> crate::agent_gateway::PhoneNumber {
    number(&(id + 5000).to_string())
}
