//! Agent conferences: the agent gateway's `agentconf` family (seed 03) on callbridge's own
//! conferences, calls and release path.
//!
//! Owns: each agent conference (its chair, members and their phones' calls, its length and
//! warning), turning the gateway's requests into placed calls, conference joins and releases,
//! and the agent events they cause (queued for the gateway: [`Controller::take_agent_events`]).
//! Must not: release a connection any other way than the one release path — a chair's
//! `releaseagentconf`, a participant's phone hanging up (SIP BYE), a CUAE DeleteConnection or
//! a CTI ReleaseCall all reach [`Controller::agent_member_released`] from
//! `release_connection_in` — or know about Guids and sessions (the gateway's).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::backend::Backend;
use super::core::Controller;
use super::events::ReleaseReason;
use super::party::Actor;
use super::timers::Timer;
use crate::agent_gateway::requests::{
    ApplyToShiftPresident, BatchAddParticipant, BatchRemoveParticipant, ChangeParticipantMode,
    ParticipantMode, ParticipantTarget, ProlongTime, RequestAgentConf,
};
use crate::agent_gateway::{
    AgentEvent, AgentId, GatewayError, LeaveReason, Participant, ParticipantChange, PhoneNumber,
    PhoneReleasedBy, RecordingStopped, Retcode,
};
use crate::engine::ConfereeSpec;

/// What the gateway asks of the agent conference logic, for a signed-in agent.
#[derive(Debug)]
pub enum AgentConfRequest {
    Request(RequestAgentConf),
    /// With the phone of each invited agent that is signed in.
    AddParticipants(BatchAddParticipant, HashMap<AgentId, PhoneNumber>),
    RemoveParticipants(BatchRemoveParticipant),
    ChangeMode(ChangeParticipantMode),
    /// `holdparticipant` (true) / `unholdparticipant` (false).
    Hold(ParticipantTarget, bool),
    ShiftPresident(ApplyToShiftPresident),
    Prolong(ProlongTime),
    Answer,
    Reject,
    Leave,
    Release,
    QueryConfInfos,
    /// `queryvdnconfid`: every conference's id, for an inspector.
    QueryAllConfIds {
        inspector: bool,
    },
    /// The agent's session ended (sign-out, heartbeat lost, forced out).
    SignedOut,
}

/// An agent conference.
#[derive(Debug)]
pub(super) struct AgentConference {
    chair: AgentId,
    /// callbridge's conference, once the chair's phone answered.
    conference: Option<u32>,
    members: Vec<Member>,
    member_num: u8,
    caller: Option<PhoneNumber>,
    /// `beepTone`: a tone into the mix when someone joins.
    beep_tone: bool,
    started_ms: u64,
    minutes: u16,
    prompt_minutes: u16,
    /// `AgentConf_Timeout` was sent.
    prompted: bool,
    next_member: u32,
    /// Being released: members leave with "conference ended".
    ending: bool,
}

#[derive(Debug)]
struct Member {
    id: u32,
    who: Participant,
    /// The agent's phone number, for an agent member.
    phone: Option<PhoneNumber>,
    connection: Option<u32>,
    state: MemberState,
    muted: bool,
    entered_ms: u64,
    /// Why it is leaving, when something asked (else: it hung up).
    leaving: Option<LeaveReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberState {
    /// An invited agent: `AgentConf_Ringing` sent, waiting for answer or reject.
    Invited,
    /// Its phone is being called.
    Dialing,
    /// In the conference.
    Joined,
}

impl<M: Backend> Controller<M> {
    /// The agent events since the last call, in order, for the gateway's queues.
    pub fn take_agent_events(&mut self) -> Vec<(AgentId, AgentEvent)> {
        std::mem::take(&mut self.agent_out)
    }

    /// A gateway request of `agent` (signed in on `phone`): the `result` to answer with.
    pub(super) fn on_agent_conf(
        &mut self,
        agent: AgentId,
        phone: PhoneNumber,
        request: AgentConfRequest,
    ) -> Result<Value, GatewayError> {
        match request {
            AgentConfRequest::Request(r) => self.request_agent_conf(agent, phone, r),
            AgentConfRequest::AddParticipants(r, phones) => self.add_participants(agent, r, phones),
            AgentConfRequest::RemoveParticipants(r) => self.remove_participants(agent, r),
            AgentConfRequest::ChangeMode(r) => self.change_mode(agent, r),
            AgentConfRequest::Hold(r, hold) => self.hold_participant(agent, r, hold),
            AgentConfRequest::ShiftPresident(r) => self.shift_president(agent, r),
            AgentConfRequest::Prolong(r) => self.prolong(agent, r),
            AgentConfRequest::Answer => self.answer_invitation(agent, phone),
            AgentConfRequest::Reject => self.reject_invitation(agent),
            AgentConfRequest::Leave => self.leave_agent_conf(agent),
            AgentConfRequest::Release => self.release_agent_conf(agent),
            AgentConfRequest::QueryConfInfos => self.query_conf_infos(agent),
            AgentConfRequest::QueryAllConfIds { inspector } => {
                if !inspector {
                    return Err(GatewayError::new(
                        Retcode::NotInspector,
                        "only an inspector may query every conference",
                    ));
                }
                let ids: Vec<u64> = self.agent_confs.keys().copied().collect();
                Ok(json!(ids))
            }
            AgentConfRequest::SignedOut => {
                self.agent_signed_out(agent);
                Ok(json!({}))
            }
        }
    }

    /// `requestagentconf`: calls the chair's phone; the conference is created with the chair
    /// in it when the phone answers.
    fn request_agent_conf(
        &mut self,
        agent: AgentId,
        phone: PhoneNumber,
        r: RequestAgentConf,
    ) -> Result<Value, GatewayError> {
        if self.agent_conf_of.contains_key(&agent) {
            return Err(GatewayError::new(
                Retcode::AlreadyInConference,
                format!("agent {agent} is already in a conference"),
            ));
        }
        let conf = self.next_agent_conf;
        self.next_agent_conf += 1;
        self.agent_confs.insert(
            conf,
            AgentConference {
                chair: agent,
                conference: None,
                members: Vec::new(),
                member_num: r.member_num,
                caller: r.conf_caller_no.clone(),
                beep_tone: r.beep_tone,
                started_ms: self.now.unix_ms,
                minutes: r.minutes,
                prompt_minutes: r.prompt_minutes,
                prompted: false,
                next_member: 0,
                ending: false,
            },
        );
        self.agent_conf_of.insert(agent, conf);
        let member = self.add_agent_member(conf, Participant::Agent(agent), Some(phone.clone()));
        self.agent_event(agent, AgentEvent::busy);
        if let Err(e) = self.dial_member(conf, member, phone.as_str()) {
            self.agent_confs.remove(&conf);
            self.agent_conf_of.remove(&agent);
            self.agent_event(agent, AgentEvent::ready);
            return Err(e);
        }
        self.agent_event(agent, AgentEvent::phone_alerting);
        Ok(json!({}))
    }

    /// `batchaddparticipant`: numbers are called; signed-in agents are invited
    /// (`AgentConf_Ringing`) and called when they answer.
    fn add_participants(
        &mut self,
        agent: AgentId,
        r: BatchAddParticipant,
        phones: HashMap<AgentId, PhoneNumber>,
    ) -> Result<Value, GatewayError> {
        let conf = self.chaired_conference(agent)?;
        let room = &self.agent_confs[&conf];
        if room.conference.is_none() {
            return Err(GatewayError::new(
                Retcode::NoConference,
                "the conference is not set up yet: the chair's phone has not answered",
            ));
        }
        if room.members.len() + r.participants.len() > usize::from(room.member_num) {
            return Err(GatewayError::new(
                Retcode::BadParameter,
                format!(
                    "the conference has {} of {} seats taken",
                    room.members.len(),
                    room.member_num
                ),
            ));
        }
        if r.caller.is_some() {
            if let Some(room) = self.agent_confs.get_mut(&conf) {
                room.caller = r.caller.clone();
            }
        }
        for participant in r.participants {
            if self.member_by(conf, &participant).is_some() {
                continue;
            }
            match &participant {
                Participant::Phone(number) => {
                    let number = number.clone();
                    let member = self.add_agent_member(conf, participant, None);
                    if let Err(e) = self.dial_member(conf, member, number.as_str()) {
                        tracing::warn!(conf, error = %e, "participant cannot be called");
                        self.drop_member(conf, member);
                    }
                }
                Participant::Agent(invited) => {
                    let invited = *invited;
                    let Some(phone) = phones.get(&invited).cloned() else {
                        return Err(GatewayError::new(
                            Retcode::BadParameter,
                            format!("agent {invited} is not signed in"),
                        ));
                    };
                    if self.agent_conf_of.contains_key(&invited) {
                        return Err(GatewayError::new(
                            Retcode::AlreadyInConference,
                            format!("agent {invited} is already in a conference"),
                        ));
                    }
                    let member = self.add_agent_member(conf, participant, Some(phone));
                    if let Some(m) = self.member_mut(conf, member) {
                        m.state = MemberState::Invited;
                    }
                    self.agent_conf_of.insert(invited, conf);
                    self.agent_event(invited, |a, t| AgentEvent::conf_ringing(a, t, conf));
                }
            }
        }
        Ok(json!({}))
    }

    /// `answeragentconf`: the invited agent's phone is called.
    fn answer_invitation(
        &mut self,
        agent: AgentId,
        phone: PhoneNumber,
    ) -> Result<Value, GatewayError> {
        let (conf, member) = self.invitation_of(agent)?;
        self.dial_member(conf, member, phone.as_str())?;
        self.agent_event(agent, AgentEvent::phone_alerting);
        Ok(json!({}))
    }

    /// `rejectagentconf`: the invitation goes; the others hear of it.
    fn reject_invitation(&mut self, agent: AgentId) -> Result<Value, GatewayError> {
        let (conf, member) = self.invitation_of(agent)?;
        self.drop_member(conf, member);
        self.agent_conf_of.remove(&agent);
        self.agent_event(agent, |a, t| {
            AgentEvent::phone_release(a, t, PhoneReleasedBy::Agent)
        });
        self.agent_event(agent, AgentEvent::ready);
        self.tell_members(
            conf,
            ParticipantChange::Left(LeaveReason::Left),
            &Participant::Agent(agent),
        );
        Ok(json!({}))
    }

    /// `batchremoveparticipant`: the chair removes members (their calls are released).
    fn remove_participants(
        &mut self,
        agent: AgentId,
        r: BatchRemoveParticipant,
    ) -> Result<Value, GatewayError> {
        let conf = self.chaired_conference(agent)?;
        let mut missing = Vec::new();
        for participant in &r.participants {
            if *participant == Participant::Agent(agent) {
                return Err(GatewayError::new(
                    Retcode::ChairDeletesSelf,
                    "the chair cannot remove itself: release the conference instead",
                ));
            }
            let Some(member) = self.member_by(conf, participant) else {
                missing.push(participant.clone());
                continue;
            };
            self.remove_member_call(conf, member, LeaveReason::RemovedByChair);
        }
        let missing: Vec<Value> = missing
            .iter()
            .map(|p| json!({ "address": p.address(), "addressType": p.address_type().code() }))
            .collect();
        Ok(json!({ "noExistParticipants": missing }))
    }

    /// `changeparticipantmode`: 1 listen only (muted), 2 speak only (hears nothing), 3 listen
    /// and speak, 4 neither. The others hear of 1 and 3 (speech prohibited, restored), as the
    /// vendor's gateway tells them.
    fn change_mode(
        &mut self,
        agent: AgentId,
        r: ChangeParticipantMode,
    ) -> Result<Value, GatewayError> {
        let conf = self.chaired_conference(agent)?;
        let Some(member) = self.member_by(conf, &r.participant) else {
            return Err(GatewayError::new(
                Retcode::BadParameter,
                format!("{} is not in the conference", r.participant.address()),
            ));
        };
        let (connection, conference) = match (
            self.member_ref(conf, member).and_then(|m| m.connection),
            self.agent_confs[&conf].conference,
        ) {
            (Some(c), Some(room)) => (c, room),
            _ => {
                return Err(GatewayError::new(
                    Retcode::BadParameter,
                    format!("{} has not joined yet", r.participant.address()),
                ))
            }
        };
        let muted = !r.mode.speaks();
        let change = super::AttributeChange {
            mute: Some(muted),
            deaf: Some(!r.mode.hears()),
            ..Default::default()
        };
        self.set_conferee_attribute(connection, conference, change)
            .map_err(|e| GatewayError::internal(e.message))?;
        if let Some(m) = self.member_mut(conf, member) {
            m.muted = muted;
        }
        let told = match r.mode {
            ParticipantMode::ListenOnly => Some(ParticipantChange::Muted),
            ParticipantMode::ListenAndSpeak => Some(ParticipantChange::Unmuted),
            ParticipantMode::SpeakOnly | ParticipantMode::Neither => None,
        };
        if let Some(change) = told {
            self.tell_members(conf, change, &r.participant);
        }
        Ok(json!({}))
    }

    /// `holdparticipant` / `unholdparticipant`: the participant's phone is put on hold (our
    /// re-INVITE, `sendonly`) and out of the mix's voices, or back.
    fn hold_participant(
        &mut self,
        agent: AgentId,
        r: ParticipantTarget,
        hold: bool,
    ) -> Result<Value, GatewayError> {
        let conf = self.chaired_conference(agent)?;
        let joined = self
            .member_by(conf, &r.participant)
            .and_then(|m| self.member_ref(conf, m))
            .and_then(|m| m.connection);
        let (Some(connection), Some(conference)) = (joined, self.agent_confs[&conf].conference)
        else {
            return Err(GatewayError::new(
                Retcode::BadParameter,
                format!("{} is not in the conference", r.participant.address()),
            ));
        };
        let call = self
            .connections
            .get(&connection)
            .and_then(|c| c.call)
            .ok_or_else(|| GatewayError::internal("the participant has no call"))?;
        let direction = if hold {
            crate::sdp::Direction::SendOnly
        } else {
            crate::sdp::Direction::SendRecv
        };
        self.ua
            .reinvite(self.now.at, call, direction)
            .map_err(|e| GatewayError::new(Retcode::BadParameter, e))?;
        let change = super::AttributeChange {
            mute: Some(hold),
            ..Default::default()
        };
        self.set_conferee_attribute(connection, conference, change)
            .map_err(|e| GatewayError::internal(e.message))?;
        let change = if hold {
            ParticipantChange::Held
        } else {
            ParticipantChange::Unheld
        };
        self.tell_members(conf, change, &r.participant);
        Ok(json!({}))
    }

    /// `applytoshiftpresident`: another agent in the conference becomes its chair.
    fn shift_president(
        &mut self,
        agent: AgentId,
        r: ApplyToShiftPresident,
    ) -> Result<Value, GatewayError> {
        let conf = self.chaired_conference(agent)?;
        if r.dest_agent == agent {
            return Err(GatewayError::new(
                Retcode::ChairToSelf,
                "the chair cannot hand the chair to itself",
            ));
        }
        let joined = self
            .member_by(conf, &Participant::Agent(r.dest_agent))
            .and_then(|m| self.member_ref(conf, m))
            .is_some_and(|m| m.state == MemberState::Joined);
        if !joined {
            return Err(GatewayError::new(
                Retcode::BadParameter,
                format!("agent {} is not in the conference", r.dest_agent),
            ));
        }
        if let Some(room) = self.agent_confs.get_mut(&conf) {
            room.chair = r.dest_agent;
        }
        self.agent_event(r.dest_agent, |a, t| {
            AgentEvent::conf_president_changed(a, t, conf)
        });
        self.tell_members(
            conf,
            ParticipantChange::ChairChanged,
            &Participant::Agent(r.dest_agent),
        );
        Ok(json!({}))
    }

    /// `prolongtime`: the conference runs longer (at most 1,440 minutes in all).
    fn prolong(&mut self, agent: AgentId, r: ProlongTime) -> Result<Value, GatewayError> {
        let conf = self.chaired_conference(agent)?;
        let room = self.agent_confs.get_mut(&conf).expect("chaired above");
        let total = room.minutes + r.minutes;
        if total > 1440 {
            return Err(GatewayError::new(
                Retcode::BadParameter,
                format!("the conference would last {total} minutes: at most 1440"),
            ));
        }
        room.minutes = total;
        room.prompted = false;
        self.arm_agent_conf(conf);
        Ok(json!({}))
    }

    /// `requestleaveagentconf`: a member (not the chair) leaves.
    fn leave_agent_conf(&mut self, agent: AgentId) -> Result<Value, GatewayError> {
        let conf = *self
            .agent_conf_of
            .get(&agent)
            .ok_or_else(|| no_conference(agent))?;
        if self.agent_confs[&conf].chair == agent {
            return Err(GatewayError::new(
                Retcode::ChairCannotLeave,
                "the chair cannot leave the conference: release it",
            ));
        }
        let member = self
            .member_by(conf, &Participant::Agent(agent))
            .ok_or_else(|| no_conference(agent))?;
        self.remove_member_call(conf, member, LeaveReason::Left);
        Ok(json!({}))
    }

    /// `releaseagentconf`: the chair ends the conference: every member's call is released
    /// (BYE through the one release path), then the conference goes with its last member.
    fn release_agent_conf(&mut self, agent: AgentId) -> Result<Value, GatewayError> {
        let conf = self.chaired_conference(agent)?;
        self.end_agent_conf(conf);
        Ok(json!({}))
    }

    /// `queryconfinfos`: the agent's own conference.
    fn query_conf_infos(&self, agent: AgentId) -> Result<Value, GatewayError> {
        let conf = *self
            .agent_conf_of
            .get(&agent)
            .ok_or_else(|| no_conference(agent))?;
        let room = &self.agent_confs[&conf];
        let addresses: Vec<Value> = room
            .members
            .iter()
            .map(|m| {
                json!({
                    "addressType": m.who.address_type().code(),
                    "address": m.who.address(),
                    "channelAttrib": if m.muted { 1 } else { 3 },
                    "channelState": 0,
                    "role": u8::from(m.who == Participant::Agent(room.chair)),
                    "enterTime": m.entered_ms,
                    "phoneNumber": m.phone.as_ref().map(PhoneNumber::as_str),
                    "state": match m.state {
                        MemberState::Invited => "invited",
                        MemberState::Dialing => "dialing",
                        MemberState::Joined => "joined",
                    },
                })
            })
            .collect();
        let elapsed_min = self.now.unix_ms.saturating_sub(room.started_ms) / 60_000;
        Ok(json!([{
            "confId": conf,
            "confState": 0,
            "startTime": room.started_ms,
            "applyConfTime": room.minutes,
            "confHaveBeenTime": elapsed_min,
            "addresses": addresses,
        }]))
    }

    /// A phone of an agent conference answered: the chair's creates the conference, the
    /// others join it.
    pub(super) fn agent_phone_answered(&mut self, conf: u64, member: u32, connection: u32) {
        let Some(room) = self.agent_confs.get(&conf) else {
            // Ended while the phone rang: hang it up.
            let _ = self.release_connection(connection, ReleaseReason::ConferenceReleased);
            return;
        };
        let now_ms = self.now.unix_ms;
        let who = match self.member_ref(conf, member) {
            Some(m) => m.who.clone(),
            None => {
                let _ = self.release_connection(connection, ReleaseReason::ConferenceReleased);
                return;
            }
        };
        let (chair, beep_tone) = (room.chair, room.beep_tone);
        let joined = match room.conference {
            // Not a named room: a `conference` route's caller must not be able to dial in.
            None => self
                .create_conference(
                    connection,
                    Default::default(),
                    ConfereeSpec::default(),
                    false,
                    beep_tone,
                    None,
                )
                .and_then(|r| {
                    r.get("ConferenceId")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<u32>().ok())
                        .ok_or_else(|| {
                            super::result::ActionError::new(
                                super::result::ResultCode::ServerInternal,
                                "no conference id",
                            )
                        })
                }),
            Some(existing) => self
                .join_conference(
                    connection,
                    existing,
                    Default::default(),
                    ConfereeSpec::default(),
                )
                .map(|_| existing),
        };
        let conference = match joined {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(conf, error = %e.message, "agent conference phone cannot join");
                let _ = self.release_connection(connection, ReleaseReason::CallFailed);
                return;
            }
        };
        let created = self
            .agent_confs
            .get(&conf)
            .is_some_and(|r| r.conference.is_none());
        if created {
            // Its name (the recording store's meetingID), given after the chair joined.
            if let Some(c) = self.conferences.get_mut(&conference) {
                c.name = Some(format!("agentconf-{conf}"));
            }
            self.store_meeting(connection, conference);
        }
        if let Some(room) = self.agent_confs.get_mut(&conf) {
            room.conference = Some(conference);
        }
        if let Some(m) = self.member_mut(conf, member) {
            m.connection = Some(connection);
            m.state = MemberState::Joined;
            m.entered_ms = now_ms;
        }
        self.agent_dialing.remove(&connection);
        self.agent_connection.insert(connection, (conf, member));
        if let Participant::Agent(agent) = who {
            self.agent_event(agent, AgentEvent::phone_offhook);
            self.agent_event(agent, |a, t| AgentEvent::conf_self_join(a, t, conf));
            if agent == chair {
                self.agent_event(agent, |a, t| AgentEvent::conf_request_success(a, t, conf));
                self.arm_agent_conf(conf);
                return;
            }
        }
        self.tell_members(conf, ParticipantChange::Joined, &who);
    }

    /// A phone of an agent conference did not answer (`status`: its SIP status, 408 when it
    /// rang out, 487 when its call was released before it answered). An agent's desktop,
    /// told its phone was alerting, is told it is released (`phoneState` 3) before the rest.
    pub(super) fn agent_phone_failed(&mut self, conf: u64, member: u32, status: u16) {
        let Some(room) = self.agent_confs.get(&conf) else {
            return;
        };
        let chair = room.chair;
        let Some(who) = self.member_ref(conf, member).map(|m| m.who.clone()) else {
            return;
        };
        self.drop_member(conf, member);
        if let Participant::Agent(agent) = who {
            self.agent_event(agent, |a, t| {
                AgentEvent::phone_release(a, t, PhoneReleasedBy::Platform)
            });
        }
        match who {
            Participant::Agent(agent) if agent == chair => {
                // The chair's phone never answered: no conference.
                self.agent_confs.remove(&conf);
                self.agent_conf_of.remove(&agent);
                self.agent_event(agent, |a, t| {
                    AgentEvent::conf_request_failed(a, t, u32::from(status))
                });
                self.agent_event(agent, AgentEvent::ready);
            }
            Participant::Agent(agent) => {
                self.agent_conf_of.remove(&agent);
                self.agent_event(agent, AgentEvent::ready);
                self.tell_members(
                    conf,
                    ParticipantChange::Left(LeaveReason::OtherForced),
                    &who,
                );
            }
            Participant::Phone(_) => {
                self.tell_members(
                    conf,
                    ParticipantChange::Left(LeaveReason::OtherForced),
                    &who,
                );
            }
        }
    }

    /// A connection was released (whatever released it): if it is an agent conference
    /// member's, the member leaves; the chair's ends the conference. A phone still being
    /// called that anyone but the conference itself released (an application's
    /// DeleteConnection, a CTI release, shutdown: the conference's own hang-ups take it off
    /// `agent_dialing` first) did not answer, as far as the conference is concerned (487).
    pub(super) fn agent_member_released(&mut self, connection: u32) {
        if let Some((conf, member)) = self.agent_dialing.remove(&connection) {
            self.agent_phone_failed(conf, member, 487);
            return;
        }
        let Some((conf, member)) = self.agent_connection.remove(&connection) else {
            return;
        };
        let Some(room) = self.agent_confs.get(&conf) else {
            return;
        };
        let (chair, ending) = (room.chair, room.ending);
        let Some(m) = self.member_ref(conf, member) else {
            return;
        };
        let who = m.who.clone();
        let reason = if ending {
            LeaveReason::ConferenceEnded
        } else {
            m.leaving.unwrap_or(LeaveReason::HungUp)
        };
        let recording = self.agent_recording_stopped(connection);
        self.drop_member(conf, member);
        if let Participant::Agent(agent) = who {
            self.agent_conf_of.remove(&agent);
            if let Some(record) = &recording {
                self.agent_event(agent, |a, t| AgentEvent::stop_record_done(a, t, record));
            }
            let by = match reason {
                LeaveReason::HungUp => PhoneReleasedBy::Agent,
                _ => PhoneReleasedBy::Platform,
            };
            self.agent_event(agent, |a, t| AgentEvent::phone_release(a, t, by));
            self.agent_event(agent, |a, t| AgentEvent::conf_self_leave(a, t, conf));
            if ending && agent != chair {
                self.agent_event(agent, |a, t| {
                    AgentEvent::conf_participant_changed(
                        a,
                        t,
                        conf,
                        ParticipantChange::Left(LeaveReason::ConferenceEnded),
                        &Participant::Agent(a),
                    )
                });
            }
            self.agent_event(agent, AgentEvent::ready);
            if agent == chair && !ending {
                // The chair's phone hung up: the conference ends with it.
                self.end_agent_conf(conf);
                return;
            }
        }
        if !ending {
            self.tell_members(conf, ParticipantChange::Left(reason), &who);
        }
        self.forget_if_ended(conf);
    }

    /// The agent conference's timer: the warning `promptTime` before the end, then the end.
    pub(super) fn agent_conf_timer(&mut self, conf: u64) {
        let Some(room) = self.agent_confs.get_mut(&conf) else {
            return;
        };
        if !room.prompted && room.prompt_minutes > 0 {
            room.prompted = true;
            let chair = room.chair;
            self.agent_event(chair, |a, t| AgentEvent::conf_timeout(a, t, conf));
            self.arm_agent_conf(conf);
            return;
        }
        tracing::info!(conf, "agent conference reached its end time");
        self.end_agent_conf(conf);
    }

    /// Ends an agent conference: invitations go, every member's call is released.
    fn end_agent_conf(&mut self, conf: u64) {
        self.timers.cancel(Timer::AgentConf(conf));
        let Some(room) = self.agent_confs.get_mut(&conf) else {
            return;
        };
        room.ending = true;
        let members: Vec<(u32, Option<u32>, Participant)> = room
            .members
            .iter()
            .map(|m| (m.id, m.connection, m.who.clone()))
            .collect();
        // The chair's own leg last, so its events come after the others have been released.
        let chair = room.chair;
        let (chair_legs, others): (Vec<_>, Vec<_>) = members
            .into_iter()
            .partition(|(_, _, who)| *who == Participant::Agent(chair));
        for (member, connection, who) in others.into_iter().chain(chair_legs) {
            match connection {
                Some(connection) => {
                    let _ = self.release_connection_by(
                        connection,
                        ReleaseReason::ConferenceReleased,
                        Some(Actor::Client {
                            action: "releaseagentconf".into(),
                        }),
                    );
                }
                None => {
                    // Invited or still dialing: no call in the conference yet (a ringing
                    // phone's call is cancelled first, while the member still names it).
                    let dialing = self.hang_up_dialing(conf, member);
                    self.drop_member(conf, member);
                    if let Participant::Agent(agent) = who {
                        self.agent_conf_of.remove(&agent);
                        self.unanswered_agent_gone(agent, dialing, agent == chair);
                    }
                }
            }
        }
        self.forget_if_ended(conf);
    }

    /// Shutdown: every agent conference ends as its chair's release would end it (the agents
    /// are told, their phones' calls released).
    pub(super) fn end_agent_confs(&mut self) {
        let mut confs: Vec<u64> = self.agent_confs.keys().copied().collect();
        confs.sort_unstable();
        for conf in confs {
            self.end_agent_conf(conf);
        }
    }

    /// An agent's session ended: it leaves its conference (a chair's ends).
    fn agent_signed_out(&mut self, agent: AgentId) {
        let Some(&conf) = self.agent_conf_of.get(&agent) else {
            return;
        };
        if self
            .agent_confs
            .get(&conf)
            .is_some_and(|r| r.chair == agent)
        {
            self.end_agent_conf(conf);
            return;
        }
        if let Some(member) = self.member_by(conf, &Participant::Agent(agent)) {
            self.remove_member_call(conf, member, LeaveReason::SignedOut);
        }
    }

    /// Releases a member's call with `reason` told to the others (an invitation or a call
    /// still ringing simply goes).
    fn remove_member_call(&mut self, conf: u64, member: u32, reason: LeaveReason) {
        let Some(m) = self.member_mut(conf, member) else {
            return;
        };
        m.leaving = Some(reason);
        match m.connection {
            Some(connection) => {
                let _ = self.release_connection_by(
                    connection,
                    ReleaseReason::ApiRequest,
                    Some(Actor::Client {
                        action: "agentconf".into(),
                    }),
                );
            }
            None => {
                let who = m.who.clone();
                let dialing = self.hang_up_dialing(conf, member);
                self.drop_member(conf, member);
                if let Participant::Agent(agent) = who {
                    self.agent_conf_of.remove(&agent);
                    self.unanswered_agent_gone(agent, dialing, false);
                }
                self.tell_members(conf, ParticipantChange::Left(reason), &who);
            }
        }
    }

    /// An agent whose phone had not answered is out of its conference (or its request): a
    /// phone it was told is alerting (`dialing`) is released by the platform, a chair's
    /// request fails (487: cancelled), and it is ready again.
    fn unanswered_agent_gone(&mut self, agent: AgentId, dialing: bool, chair: bool) {
        if dialing {
            self.agent_event(agent, |a, t| {
                AgentEvent::phone_release(a, t, PhoneReleasedBy::Platform)
            });
        }
        if chair {
            self.agent_event(agent, |a, t| AgentEvent::conf_request_failed(a, t, 487));
        }
        self.agent_event(agent, AgentEvent::ready);
    }

    /// A member whose phone is still being called: the call is cancelled. Whether it was.
    fn hang_up_dialing(&mut self, conf: u64, member: u32) -> bool {
        let dialing: Vec<u32> = self
            .agent_dialing
            .iter()
            .filter(|(_, &(c, m))| c == conf && m == member)
            .map(|(&connection, _)| connection)
            .collect();
        let any = !dialing.is_empty();
        for connection in dialing {
            self.agent_dialing.remove(&connection);
            let _ = self.release_connection(connection, ReleaseReason::ConferenceReleased);
        }
        any
    }

    fn dial_member(&mut self, conf: u64, member: u32, number: &str) -> Result<(), GatewayError> {
        let caller = self
            .agent_confs
            .get(&conf)
            .and_then(|r| r.caller.as_ref().map(|c| c.as_str().to_string()));
        let (_, connection) = self
            .place_agent_phone(
                conf,
                member,
                number,
                caller.as_deref(),
                Actor::Client {
                    action: "agentconf".into(),
                },
            )
            .map_err(|e| {
                GatewayError::internal(format!("the phone cannot be called: {}", e.message))
            })?;
        self.agent_dialing.insert(connection, (conf, member));
        if let Some(m) = self.member_mut(conf, member) {
            m.state = MemberState::Dialing;
        }
        Ok(())
    }

    fn add_agent_member(&mut self, conf: u64, who: Participant, phone: Option<PhoneNumber>) -> u32 {
        let Some(room) = self.agent_confs.get_mut(&conf) else {
            return 0;
        };
        let id = room.next_member;
        room.next_member += 1;
        room.members.push(Member {
            id,
            who,
            phone,
            connection: None,
            state: MemberState::Dialing,
            muted: false,
            entered_ms: 0,
            leaving: None,
        });
        id
    }

    fn drop_member(&mut self, conf: u64, member: u32) {
        if let Some(room) = self.agent_confs.get_mut(&conf) {
            room.members.retain(|m| m.id != member);
        }
        self.agent_dialing
            .retain(|_, &mut (c, m)| !(c == conf && m == member));
    }

    /// A conference that is ending goes once its last member has.
    fn forget_if_ended(&mut self, conf: u64) {
        let done = self
            .agent_confs
            .get(&conf)
            .is_some_and(|r| r.ending && r.members.is_empty());
        if done {
            self.agent_confs.remove(&conf);
            self.agent_conf_of.retain(|_, c| *c != conf);
            tracing::info!(conf, "agent conference released");
        }
    }

    fn member_by(&self, conf: u64, who: &Participant) -> Option<u32> {
        self.agent_confs
            .get(&conf)?
            .members
            .iter()
            .find(|m| m.who == *who)
            .map(|m| m.id)
    }

    fn member_ref(&self, conf: u64, member: u32) -> Option<&Member> {
        self.agent_confs
            .get(&conf)?
            .members
            .iter()
            .find(|m| m.id == member)
    }

    fn member_mut(&mut self, conf: u64, member: u32) -> Option<&mut Member> {
        self.agent_confs
            .get_mut(&conf)?
            .members
            .iter_mut()
            .find(|m| m.id == member)
    }

    /// The conference `agent` chairs: 101-001 without one, 101-002 when not its chair.
    fn chaired_conference(&self, agent: AgentId) -> Result<u64, GatewayError> {
        let conf = *self
            .agent_conf_of
            .get(&agent)
            .ok_or_else(|| no_conference(agent))?;
        if self.agent_confs.get(&conf).map(|r| r.chair) != Some(agent) {
            return Err(GatewayError::new(
                Retcode::NotChair,
                format!("agent {agent} is not the chair of its conference"),
            ));
        }
        Ok(conf)
    }

    fn invitation_of(&self, agent: AgentId) -> Result<(u64, u32), GatewayError> {
        let conf = *self
            .agent_conf_of
            .get(&agent)
            .ok_or_else(|| no_conference(agent))?;
        let member = self
            .member_by(conf, &Participant::Agent(agent))
            .filter(|&m| {
                self.member_ref(conf, m)
                    .is_some_and(|m| m.state == MemberState::Invited)
            })
            .ok_or_else(|| {
                GatewayError::new(
                    Retcode::NoConference,
                    format!("agent {agent} has no conference invitation waiting"),
                )
            })?;
        Ok((conf, member))
    }

    /// Tells every joined agent member (but the one it is about) of a change.
    fn tell_members(&mut self, conf: u64, change: ParticipantChange, about: &Participant) {
        let Some(room) = self.agent_confs.get(&conf) else {
            return;
        };
        let agents: Vec<AgentId> = room
            .members
            .iter()
            .filter(|m| m.state == MemberState::Joined && m.who != *about)
            .filter_map(|m| match m.who {
                Participant::Agent(a) => Some(a),
                Participant::Phone(_) => None,
            })
            .collect();
        for agent in agents {
            self.agent_event(agent, |a, t| {
                AgentEvent::conf_participant_changed(a, t, conf, change, about)
            });
        }
    }

    /// The warning's (or the end's) deadline.
    fn arm_agent_conf(&mut self, conf: u64) {
        let Some(room) = self.agent_confs.get(&conf) else {
            return;
        };
        let elapsed = Duration::from_millis(self.now.unix_ms.saturating_sub(room.started_ms));
        let length = Duration::from_secs(u64::from(room.minutes) * 60);
        let warning = Duration::from_secs(u64::from(room.prompt_minutes) * 60);
        let due = if room.prompted {
            length
        } else {
            length.saturating_sub(warning)
        };
        let at = self.now.at + due.saturating_sub(elapsed);
        self.timers.set(Timer::AgentConf(conf), at);
    }

    /// The chair's recording, when its leg was recorded: `AgentMediaEvent_StopRecordDone`'s
    /// times.
    fn agent_recording_stopped(&self, connection: u32) -> Option<RecordingStopped> {
        let call = self.store_calls.get(&connection)?;
        let (operation, recording_id) = call.recording.as_ref()?;
        let started = self.tracked_recordings.get(operation)?.started_ms;
        Some(RecordingStopped {
            begin_ms: u64::try_from(started).unwrap_or(0),
            end_ms: self.now.unix_ms,
            task_id: recording_id.clone(),
            call_id: call.call_id.clone(),
        })
    }

    fn agent_event(&mut self, agent: AgentId, make: impl FnOnce(AgentId, u64) -> AgentEvent) {
        let event = make(agent, self.now.unix_ms);
        self.agent_out.push((agent, event));
    }
}

fn no_conference(agent: AgentId) -> GatewayError {
    GatewayError::new(
        Retcode::NoConference,
        format!("agent {agent} has no phone conference"),
    )
}
