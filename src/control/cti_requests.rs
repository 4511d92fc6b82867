//! CTI requests (T-Library names): what a `/cti` client asks of the call model, carried out
//! through the core's ordinary paths, so a `RequestReleaseCall` and a CUAE `DeleteConnection`
//! are the same release.
//!
//! Owns: [`CtiRequest`] (parsed and checked for form at the API edge), finding a call by
//! ConnID and a party by DN, and the answers (`EventACK`, `EventPartyInfo`,
//! `EventAddressInfo`) or [`CtiError`]s with the numeric codes of docs/CTI.md.
//! Must not: build T-Library events for what the requests cause — those come from the party
//! model's changes, through `cti::translate`, like every other change.

use serde_json::{json, Value};

use super::cti::TCallState;
use super::events::ReleaseReason;
use super::party::{Actor, ConnId, Party};
use super::result::ActionError;
use super::{Backend, ConferenceChoice, Controller, MakeCall};

/// A CTI request.
#[derive(Debug, Clone)]
pub enum CtiRequest {
    /// The parties of a call.
    QueryCall { conn_id: ConnId },
    /// The calls a DN takes part in.
    QueryAddress { this_dn: String },
    /// `this_dn` leaves the call (a two-party call ends).
    ReleaseCall { this_dn: String, conn_id: ConnId },
    /// `this_dn` deletes `other_dn` from a conference call.
    DeleteFromConference {
        this_dn: String,
        conn_id: ConnId,
        other_dn: String,
    },
    /// `this_dn` (the route an offered `application` call rings) answers it: Call Control's
    /// AnswerCall.
    AnswerCall { this_dn: String, conn_id: ConnId },
    /// A call from `this_dn` to `destination` through a trunk.
    MakeCall {
        this_dn: String,
        destination: String,
        trunk: Option<String>,
    },
    /// `this_dn`'s place in the call goes to `destination` (ConnID kept): a call placed to
    /// it takes the place; `this_dn` is released when it answers.
    SingleStepTransfer {
        this_dn: String,
        conn_id: ConnId,
        destination: String,
    },
    /// `this_dn` (a SIP party) is put on hold (`hold`) or taken off it: a re-INVITE offering
    /// `sendonly` or `sendrecv`; answered when the party has answered it.
    Hold {
        this_dn: String,
        conn_id: ConnId,
        hold: bool,
    },
    /// Two-step conference or transfer, first step: `this_dn` is held in `conn_id` and
    /// consults `destination` on a call of its own.
    Initiate {
        this_dn: String,
        conn_id: ConnId,
        destination: String,
    },
    /// Second step: the consultation merges into `conn_id` (`transfer`: false) or the
    /// consulted party takes `this_dn`'s place there (`transfer`: true).
    Complete {
        this_dn: String,
        conn_id: ConnId,
        transfer: bool,
    },
    /// `this_dn` adds `destination` to the call: a call placed to it joins the call.
    SingleStepConference {
        this_dn: String,
        conn_id: ConnId,
        destination: String,
    },
}

/// Where a CTI request's answer goes.
pub type CtiReply = tokio::sync::oneshot::Sender<Result<Value, CtiError>>;

/// Why a CTI request failed; `code` is the `ErrorCode` of `EventError` (docs/CTI.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtiError {
    pub code: u32,
    pub message: String,
}

/// The error codes of `EventError` (docs/CTI.md, "Errors").
pub mod codes {
    pub const MALFORMED: u32 = 400;
    pub const UNKNOWN_REQUEST: u32 = 401;
    pub const MISSING_ATTRIBUTE: u32 = 402;
    pub const INVALID_ATTRIBUTE: u32 = 403;
    pub const UNKNOWN_CONN_ID: u32 = 410;
    pub const DN_NOT_IN_CALL: u32 = 411;
    pub const INVALID_STATE: u32 = 412;
    pub const NOT_SUPPORTED: u32 = 420;
    /// The call machinery refused (no ports, unknown trunk, ...): the text says why.
    pub const REFUSED: u32 = 430;
}

impl CtiError {
    pub fn new(code: u32, message: impl Into<String>) -> CtiError {
        CtiError {
            code,
            message: message.into(),
        }
    }

    fn refused(e: ActionError) -> CtiError {
        CtiError::new(codes::REFUSED, e.message)
    }
}

impl<M: Backend> Controller<M> {
    /// Carries out a CTI request; the events it causes carry `reference`. The answer goes to
    /// `reply` now, or — for a hold or retrieve — once the party has answered our re-INVITE.
    pub(super) fn on_cti_request(&mut self, request: CtiRequest, reference: u64, reply: CtiReply) {
        self.cti_reference = Some(reference);
        self.acting = Some(request_name(&request));
        if let CtiRequest::Hold {
            this_dn,
            conn_id,
            hold,
        } = request
        {
            if let Err(e) = self.hold(&this_dn, conn_id, hold, reference, reply) {
                // `hold` gave the reply back inside the error.
                let (reply, e) = *e;
                let _ = reply.send(Err(e));
            }
        } else {
            let _ = reply.send(self.cti_request(request));
        }
        self.acting = None;
    }

    /// RequestHoldCall / RequestRetrieveCall: our re-INVITE to the party; the answer waits.
    fn hold(
        &mut self,
        this_dn: &str,
        conn_id: ConnId,
        hold: bool,
        reference: u64,
        reply: CtiReply,
    ) -> Result<(), Box<(CtiReply, CtiError)>> {
        let found = self.cti_call(conn_id).and_then(|call| {
            let party = member(call, this_dn, conn_id)?;
            party.sip_call.ok_or_else(|| {
                CtiError::new(
                    codes::INVALID_STATE,
                    format!("{this_dn:?} has no SIP call to hold"),
                )
            })
        });
        let call = match found {
            Ok(found) => found,
            Err(e) => return Err(Box::new((reply, e))),
        };
        if self.pending_holds.contains_key(&call) {
            let e = CtiError::new(codes::INVALID_STATE, "a hold or retrieve is in progress");
            return Err(Box::new((reply, e)));
        }
        let direction = if hold {
            crate::sdp::Direction::SendOnly
        } else {
            crate::sdp::Direction::SendRecv
        };
        if let Err(e) = self.ua.reinvite(self.now.at, call, direction) {
            return Err(Box::new((reply, CtiError::new(codes::INVALID_STATE, e))));
        }
        let by = self.client_or(Actor::System);
        self.pending_holds.insert(
            call,
            super::core::PendingHold {
                reply,
                reference,
                by,
                conn_id,
            },
        );
        Ok(())
    }

    fn cti_request(&mut self, request: CtiRequest) -> Result<Value, CtiError> {
        match request {
            CtiRequest::QueryCall { conn_id } => self.query_call(conn_id),
            CtiRequest::QueryAddress { this_dn } => Ok(self.query_address(&this_dn)),
            CtiRequest::ReleaseCall { this_dn, conn_id } => {
                let (connection, by) = self.releasing(conn_id, &this_dn)?;
                self.release_connection_by(connection, ReleaseReason::ApiRequest, Some(by))
                    .map_err(CtiError::refused)?;
                Ok(ack(conn_id))
            }
            CtiRequest::DeleteFromConference {
                this_dn,
                conn_id,
                other_dn,
            } => {
                let call = self.cti_call(conn_id)?;
                if call.conference.is_none() {
                    return Err(CtiError::new(
                        codes::INVALID_STATE,
                        format!("call {conn_id} is not a conference"),
                    ));
                }
                let deleter = member(call, &this_dn, conn_id)?.clone();
                let deleted = member(call, &other_dn, conn_id)?.connection;
                let by = Actor::Party {
                    connection: Some(deleter.connection),
                    dn: deleter.dn,
                };
                self.release_connection_by(deleted, ReleaseReason::ApiRequest, Some(by))
                    .map_err(CtiError::refused)?;
                Ok(ack(conn_id))
            }
            CtiRequest::MakeCall {
                this_dn,
                destination,
                trunk,
            } => {
                let placed = self
                    .make_call(MakeCall {
                        to: destination,
                        from: Some(this_dn),
                        display_name: None,
                        trunk,
                        conference: None,
                    })
                    .map_err(CtiError::refused)?;
                let connection = placed
                    .get("ConnectionId")
                    .and_then(Value::as_str)
                    .and_then(|c| c.parse().ok())
                    .and_then(|c| self.model.conn_id_of(c));
                let conn_id = connection
                    .ok_or_else(|| CtiError::new(codes::REFUSED, "the placed call has no party"))?;
                Ok(ack(conn_id))
            }
            CtiRequest::SingleStepConference {
                this_dn,
                conn_id,
                destination,
            } => self.single_step_conference(&this_dn, conn_id, destination),
            CtiRequest::AnswerCall { this_dn, conn_id } => {
                let call = self.cti_call(conn_id)?;
                let ringing = call
                    .parties
                    .values()
                    .find(|p| p.connection >= super::party::NO_CONNECTION)
                    .and_then(|p| p.sip_call);
                let Some(sip_call) = ringing else {
                    return Err(CtiError::new(
                        codes::INVALID_STATE,
                        format!("call {conn_id} is not ringing an application route"),
                    ));
                };
                if call.service_dn != this_dn {
                    return Err(not_in_call(&this_dn, conn_id));
                }
                self.on_call_action(super::CallAction::Answer {
                    call: sip_call,
                    conference: None,
                })
                .map_err(CtiError::refused)?;
                Ok(ack(conn_id))
            }
            CtiRequest::Initiate {
                this_dn,
                conn_id,
                destination,
            } => self.initiate_consultation(&this_dn, conn_id, destination),
            CtiRequest::Complete {
                this_dn,
                conn_id,
                transfer,
            } => self.complete_consultation(&this_dn, conn_id, transfer),
            CtiRequest::Hold { .. } => unreachable!("on_cti_request answers holds itself"),
            CtiRequest::SingleStepTransfer {
                this_dn,
                conn_id,
                destination,
            } => {
                let call = self.cti_call(conn_id)?;
                let party = member(call, &this_dn, conn_id)?;
                let Some(sip_call) = party.sip_call else {
                    return Err(CtiError::new(
                        codes::INVALID_STATE,
                        format!("{this_dn:?} has no SIP call whose place could be transferred"),
                    ));
                };
                self.transfer_place(sip_call, &destination, this_dn)
                    .map_err(CtiError::refused)?;
                Ok(ack(conn_id))
            }
        }
    }

    /// `RequestQueryCall`: the call's parties, states and roles.
    fn query_call(&self, conn_id: ConnId) -> Result<Value, CtiError> {
        let call = self.cti_call(conn_id)?;
        let parties: Vec<Value> = call
            .parties
            .values()
            .map(|p| json!({"DN": p.dn, "Role": p.role, "State": p.state}))
            .collect();
        Ok(json!({
            "Event": "EventPartyInfo",
            "ConnID": conn_id,
            "CallState": TCallState::from(call.state()),
            "ServiceDN": call.service_dn,
            "Conference": call.conference.is_some(),
            "Parties": parties,
        }))
    }

    /// `RequestQueryAddress`: the calls `dn` takes part in (as a party, or as the DN a call
    /// with one party is for).
    fn query_address(&self, dn: &str) -> Value {
        let calls: Vec<Value> = self
            .model
            .calls()
            .filter_map(|call| {
                let party = call.parties.values().find(|p| p.dn == dn);
                let serves =
                    call.conference.is_none() && call.parties.len() == 1 && call.service_dn == dn;
                if party.is_none() && !serves {
                    return None;
                }
                Some(json!({
                    "ConnID": call.conn_id,
                    "CallState": TCallState::from(call.state()),
                    "Role": party.map(|p| p.role),
                    "State": party.map(|p| p.state),
                }))
            })
            .collect();
        json!({"Event": "EventAddressInfo", "ThisDN": dn, "Calls": calls})
    }

    /// `RequestSingleStepConference`: a call placed to `destination` joins the call — its
    /// conference, or a new one made of the call's one party when it has none.
    fn single_step_conference(
        &mut self,
        this_dn: &str,
        conn_id: ConnId,
        destination: String,
    ) -> Result<Value, CtiError> {
        let call = self.cti_call(conn_id)?;
        let requester = cti_party(call, this_dn, conn_id)?;
        let conference = match call.conference {
            Some(conference) => conference,
            None => {
                let Some(first) = call.parties.values().next().map(|p| p.connection) else {
                    return Err(CtiError::new(codes::INVALID_STATE, "the call has no party"));
                };
                let created = self
                    .create_conference(
                        first,
                        super::Completion::default(),
                        crate::engine::ConfereeSpec::default(),
                        false,
                        false,
                        None,
                    )
                    .map_err(CtiError::refused)?;
                created
                    .get("ConferenceId")
                    .and_then(Value::as_str)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| CtiError::new(codes::REFUSED, "no conference id"))?
            }
        };
        self.make_call_by(
            MakeCall {
                to: destination,
                from: Some(this_dn.to_string()),
                display_name: None,
                trunk: None,
                conference: Some(ConferenceChoice {
                    conference: Some(conference),
                    hairpin: false,
                }),
            },
            Some(requester),
        )
        .map_err(CtiError::refused)?;
        Ok(ack(conn_id))
    }

    /// The call of a ConnID, or 410.
    fn cti_call(&self, conn_id: ConnId) -> Result<&super::party::Call, CtiError> {
        self.model
            .call(conn_id)
            .ok_or_else(|| CtiError::new(codes::UNKNOWN_CONN_ID, format!("no call {conn_id}")))
    }

    /// What `RequestReleaseCall` releases: the party `dn` of the call, or — when `dn` is the
    /// DN a one-party call is for (the route) — that one party; and who releases it.
    fn releasing(&self, conn_id: ConnId, dn: &str) -> Result<(u32, Actor), CtiError> {
        let call = self.cti_call(conn_id)?;
        if let Some(p) = call.parties.values().find(|p| p.dn == dn) {
            let by = Actor::Party {
                connection: Some(p.connection),
                dn: p.dn.clone(),
            };
            return Ok((p.connection, by));
        }
        match call.parties.values().collect::<Vec<_>>().as_slice() {
            [only] if call.conference.is_none() && call.service_dn == dn => Ok((
                only.connection,
                Actor::Party {
                    connection: None,
                    dn: dn.to_string(),
                },
            )),
            _ => Err(not_in_call(dn, conn_id)),
        }
    }
}

/// The request's T-Library name (the "action" of the changes it causes).
pub fn request_name(request: &CtiRequest) -> &'static str {
    match request {
        CtiRequest::QueryCall { .. } => "RequestQueryCall",
        CtiRequest::QueryAddress { .. } => "RequestQueryAddress",
        CtiRequest::ReleaseCall { .. } => "RequestReleaseCall",
        CtiRequest::DeleteFromConference { .. } => "RequestDeleteFromConference",
        CtiRequest::MakeCall { .. } => "RequestMakeCall",
        CtiRequest::AnswerCall { .. } => "RequestAnswerCall",
        CtiRequest::Initiate { .. } => "RequestInitiateConference",
        CtiRequest::Complete {
            transfer: false, ..
        } => "RequestCompleteConference",
        CtiRequest::Complete { transfer: true, .. } => "RequestCompleteTransfer",
        CtiRequest::SingleStepConference { .. } => "RequestSingleStepConference",
        CtiRequest::SingleStepTransfer { .. } => "RequestSingleStepTransfer",
        CtiRequest::Hold { hold: true, .. } => "RequestHoldCall",
        CtiRequest::Hold { hold: false, .. } => "RequestRetrieveCall",
    }
}

/// A member of the call by DN, or 411.
fn member<'a>(
    call: &'a super::party::Call,
    dn: &str,
    conn_id: ConnId,
) -> Result<&'a Party, CtiError> {
    call.parties
        .values()
        .find(|p| p.dn == dn)
        .ok_or_else(|| not_in_call(dn, conn_id))
}

/// The requester as the cause of what it adds: a member, or the DN the call is for.
fn cti_party(call: &super::party::Call, dn: &str, conn_id: ConnId) -> Result<Actor, CtiError> {
    if let Some(p) = call.parties.values().find(|p| p.dn == dn) {
        return Ok(Actor::Party {
            connection: Some(p.connection),
            dn: p.dn.clone(),
        });
    }
    if call.service_dn == dn && !dn.is_empty() {
        return Ok(Actor::Party {
            connection: None,
            dn: dn.to_string(),
        });
    }
    Err(not_in_call(dn, conn_id))
}

fn not_in_call(dn: &str, conn_id: ConnId) -> CtiError {
    CtiError::new(
        codes::DN_NOT_IN_CALL,
        format!("{dn:?} is not a party of call {conn_id}"),
    )
}

pub(super) fn ack(conn_id: ConnId) -> Value {
    json!({"Event": "EventACK", "ConnID": conn_id})
}
