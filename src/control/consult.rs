//! Two-step conference and transfer (CTI `RequestInitiateConference`/`Transfer` and their
//! `Complete`): a consultation call from a party while its own call holds it.
//!
//! Owns: the consultations in progress — who consults (B, a SIP party of the held call), the
//! held call and where B was in its media, the consultation call's connection (C) and, once C
//! answers, the hairpin that connects B and C — and their three ends: merged into the held
//! call (conference), C taking B's place in it (transfer), or broken off (C refused or hung
//! up, B hung up).
//! Must not: touch the party model's membership for these media moves: B stays a (held) party
//! of its call and C a party of the consultation call until a completion merges them, through
//! the model's ordinary join and replace.

use super::cti_requests::{ack, CtiError};
use super::events::ReleaseReason;
use super::party::{Actor, ConnId, PartyState};
use super::{cti_codes as codes, Backend, Completion, Controller, MakeCall};
use crate::engine::ConfereeSpec;

/// One consultation: B consults C while its call holds it.
#[derive(Debug)]
pub(super) struct Consultation {
    /// The held call.
    held: ConnId,
    /// B's conference in the held call (if it was in one) and its attributes there.
    held_conference: Option<(u32, ConfereeSpec)>,
    /// C's connection.
    target: u32,
    /// The hairpin connecting B and C, once C answered.
    hairpin: Option<u32>,
}

impl<M: Backend> Controller<M> {
    /// Initiate: B (`this_dn`, a SIP party of `conn_id`) is held in its call and a call from
    /// B's DN is placed to `destination`; when it answers, B and it are connected.
    pub(super) fn initiate_consultation(
        &mut self,
        this_dn: &str,
        conn_id: ConnId,
        destination: String,
    ) -> Result<serde_json::Value, CtiError> {
        let call = self
            .model
            .call(conn_id)
            .ok_or_else(|| CtiError::new(codes::UNKNOWN_CONN_ID, format!("no call {conn_id}")))?;
        let b = call
            .parties
            .values()
            .find(|p| p.dn == this_dn && p.sip_call.is_some())
            .ok_or_else(|| {
                CtiError::new(
                    codes::DN_NOT_IN_CALL,
                    format!("{this_dn:?} is not a SIP party of call {conn_id}"),
                )
            })?
            .clone();
        if b.state != PartyState::Established || self.consultations.contains_key(&b.connection) {
            return Err(CtiError::new(
                codes::INVALID_STATE,
                format!("{this_dn:?} is not in a conversation it could consult from"),
            ));
        }
        let placed = self
            .make_call(MakeCall {
                to: destination,
                from: Some(this_dn.to_string()),
                display_name: None,
                trunk: None,
                conference: None,
            })
            .map_err(|e| CtiError::new(codes::REFUSED, e.message))?;
        let target: u32 = placed
            .get("ConnectionId")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| CtiError::new(codes::REFUSED, "the consultation has no connection"))?;
        let consult_call = self
            .model
            .conn_id_of(target)
            .ok_or_else(|| CtiError::new(codes::REFUSED, "the consultation has no party"))?;
        // B leaves its call's media (the others no longer hear it) and is held there.
        let held_conference = self.connections[&b.connection]
            .conference
            .map(|conference| {
                let spec = self.conferences[&conference].members[&b.connection].spec;
                (conference, spec)
            });
        if let Some((conference, _)) = held_conference {
            self.media_leave(conference, b.connection);
        }
        let by = self.party_actor(b.connection);
        self.model
            .set_state(self.now.unix_ms, b.connection, PartyState::Held, by);
        self.consulting.insert(b.connection);
        self.consulting.insert(target);
        self.consult_targets.insert(target, b.connection);
        self.consultations.insert(
            b.connection,
            Consultation {
                held: conn_id,
                held_conference,
                target,
                hairpin: None,
            },
        );
        Ok(ack(consult_call))
    }

    /// The consultation call answered: B and C are connected by a hairpin.
    pub(super) fn consultation_answered(&mut self, target: u32) {
        let Some(&b) = self.consult_targets.get(&target) else {
            return;
        };
        let created = self.create_conference(
            target,
            Completion::default(),
            ConfereeSpec::default(),
            true,
            false,
            None,
        );
        let hairpin = created
            .ok()
            .and_then(|r| r.get("ConferenceId")?.as_str()?.parse::<u32>().ok());
        let Some(hairpin) = hairpin else {
            tracing::warn!(connection = target, "consultation cannot be connected");
            return;
        };
        if let Err(e) =
            self.join_conference(b, hairpin, Completion::default(), ConfereeSpec::default())
        {
            tracing::warn!(connection = b, error = %e.message, "consulting party cannot join");
        }
        if let Some(c) = self.consultations.get_mut(&b) {
            c.hairpin = Some(hairpin);
        }
    }

    /// Complete: the consultation merges into the held call (`transfer`: false: C joins it,
    /// B back in it) or C takes B's place there and B goes (`transfer`: true).
    pub(super) fn complete_consultation(
        &mut self,
        this_dn: &str,
        conn_id: ConnId,
        transfer: bool,
    ) -> Result<serde_json::Value, CtiError> {
        let b = self
            .consultations
            .iter()
            .find(|(b, c)| {
                c.held == conn_id && self.model.party(**b).is_some_and(|p| p.dn == this_dn)
            })
            .map(|(b, _)| *b)
            .ok_or_else(|| {
                CtiError::new(
                    codes::INVALID_STATE,
                    format!("{this_dn:?} has no consultation from call {conn_id}"),
                )
            })?;
        let Some(hairpin) = self.consultations[&b].hairpin else {
            return Err(CtiError::new(
                codes::INVALID_STATE,
                "the consulted party has not answered yet",
            ));
        };
        let consultation = self.consultations.remove(&b).expect("found above");
        let c = consultation.target;
        self.consult_targets.remove(&c);
        self.media_leave(hairpin, b);
        self.media_leave(hairpin, c);
        let requester = self.party_actor(b);
        if transfer {
            // C takes B's place: B's conference and attributes, B's role and call.
            self.consulting.remove(&b);
            if let Some((conference, spec)) = consultation.held_conference {
                self.join_conference(c, conference, Completion::default(), spec)
                    .map_err(|e| CtiError::new(codes::REFUSED, e.message))?;
            } else if let Some(mode) = self.connections.get(&b).map(|x| x.media.mode) {
                self.set_media_mode(c, mode);
            }
            self.consulting.remove(&c);
            self.model
                .replace(self.now.unix_ms, c, b, requester.clone());
            let _ = self.release_connection_by(b, ReleaseReason::Transferred, Some(requester));
            return Ok(ack(conn_id));
        }
        // Conference: B back in its call (a conference now, if it was not), C joins it.
        let conference = match consultation.held_conference {
            Some((conference, spec)) if self.conferences.contains_key(&conference) => {
                self.join_conference(b, conference, Completion::default(), spec)
                    .map_err(|e| CtiError::new(codes::REFUSED, e.message))?;
                conference
            }
            _ => {
                self.consulting.remove(&b);
                let created = self
                    .create_conference(
                        b,
                        Completion::default(),
                        ConfereeSpec::default(),
                        false,
                        false,
                        None,
                    )
                    .map_err(|e| CtiError::new(codes::REFUSED, e.message))?;
                created
                    .get("ConferenceId")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| CtiError::new(codes::REFUSED, "no conference id"))?
            }
        };
        self.consulting.remove(&b);
        self.consulting.remove(&c);
        self.model.set_state(
            self.now.unix_ms,
            b,
            PartyState::Established,
            requester.clone(),
        );
        self.joining_by = Some(requester);
        let joined = self.join_conference(
            c,
            conference,
            Completion::default(),
            ConfereeSpec::default(),
        );
        self.joining_by = None;
        joined.map_err(|e| CtiError::new(codes::REFUSED, e.message))?;
        Ok(ack(conn_id))
    }

    /// A connection of a consultation was released: B's takes its consultation call with it;
    /// C's (refused, not answered, hung up) gives B back to its held call.
    pub(super) fn consultation_released(&mut self, id: u32, dn: String) {
        if let Some(consultation) = self.consultations.remove(&id) {
            self.consulting.remove(&id);
            self.consult_targets.remove(&consultation.target);
            self.consulting.remove(&consultation.target);
            let by = Actor::Party {
                connection: Some(id),
                dn,
            };
            let _ = self.release_connection_by(
                consultation.target,
                ReleaseReason::ApiRequest,
                Some(by),
            );
            return;
        }
        let Some(b) = self.consult_targets.remove(&id) else {
            return;
        };
        self.consulting.remove(&id);
        let Some(consultation) = self.consultations.remove(&b) else {
            return;
        };
        if let Some(hairpin) = consultation.hairpin {
            if self.conferences.contains_key(&hairpin) {
                self.media_leave(hairpin, b);
            }
        }
        if let Some((conference, spec)) = consultation.held_conference {
            if self.conferences.contains_key(&conference) {
                if let Err(e) = self.join_conference(b, conference, Completion::default(), spec) {
                    tracing::warn!(connection = b, error = %e.message, "cannot go back to the held call");
                }
            }
        }
        self.consulting.remove(&b);
        self.model
            .set_state(self.now.unix_ms, b, PartyState::Established, Actor::System);
    }
}
