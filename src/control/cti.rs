//! The CTI call-model view: the party model's changes as Genesys T-Library events.
//!
//! Owns: the T-Library event vocabulary (`EventRinging`, `EventReleased`, `EventPartyDeleted`,
//! ...) with its attributes (`ThisDN`/`OtherDN`/`ThirdPartyDN` and their roles, `CallState`,
//! `Cause`, `PreviousConnID`), the translation of each [`PartyEvent`] into the events every
//! affected DN receives (vendor-apis.md §3, seed 05), and [`CtiBus`], the stream the `/cti`
//! clients read. docs/CTI.md is the reference of what is sent when.
//! Must not: keep call state of its own (it reads what the party model says happened), or
//! decide anything; the requests act through the core's ordinary paths.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use super::events::ReleaseReason;
use super::party::{Actor, CallState, ChangeKind, ConnId, Party, PartyEvent, PartyState, Role};

/// The T-Library `TCallState` of an event (names without the `CallState` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TCallState {
    #[serde(rename = "OK")]
    Ok,
    Transferred,
    Conferenced,
    Busy,
    NoAnswer,
    SitInvalidNum,
    SitVacant,
    AllTrunksBusy,
    GeneralError,
}

impl From<CallState> for TCallState {
    fn from(state: CallState) -> TCallState {
        match state {
            CallState::Ok => TCallState::Ok,
            CallState::Conferenced => TCallState::Conferenced,
        }
    }
}

/// One T-Library event for one DN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CtiEvent {
    #[serde(rename = "Event")]
    pub event: &'static str,
    #[serde(rename = "ConnID")]
    pub conn_id: ConnId,
    #[serde(rename = "PreviousConnID", skip_serializing_if = "Option::is_none")]
    pub previous: Option<ConnId>,
    #[serde(rename = "ThisDN")]
    pub this_dn: String,
    #[serde(rename = "ThisDNRole", skip_serializing_if = "Option::is_none")]
    pub this_role: Option<Role>,
    #[serde(rename = "OtherDN", skip_serializing_if = "Option::is_none")]
    pub other_dn: Option<String>,
    #[serde(rename = "OtherDNRole", skip_serializing_if = "Option::is_none")]
    pub other_role: Option<Role>,
    #[serde(rename = "ThirdPartyDN", skip_serializing_if = "Option::is_none")]
    pub third_dn: Option<String>,
    #[serde(rename = "ThirdPartyDNRole", skip_serializing_if = "Option::is_none")]
    pub third_role: Option<Role>,
    #[serde(rename = "CallState")]
    pub call_state: TCallState,
    /// Q.850 cause of a release.
    #[serde(rename = "Cause", skip_serializing_if = "Option::is_none")]
    pub cause: Option<u8>,
    /// UTC, RFC 3339 with milliseconds.
    #[serde(rename = "Time")]
    pub time: String,
    /// The request that caused it.
    #[serde(rename = "ReferenceID", skip_serializing_if = "Option::is_none")]
    pub reference: Option<u64>,
}

/// The sending side of the CTI stream, owned by the control core. A slow reader loses events
/// (the API disconnects it); the core never waits.
pub struct CtiBus {
    sender: broadcast::Sender<Arc<CtiEvent>>,
}

impl CtiBus {
    pub fn new(capacity: usize) -> CtiBus {
        let (sender, _) = broadcast::channel(capacity);
        CtiBus { sender }
    }

    /// Whether any `/cti` client (or test) reads the stream now.
    pub fn has_listeners(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn sender(&self) -> broadcast::Sender<Arc<CtiEvent>> {
        self.sender.clone()
    }

    /// Translates a change and sends its events, stamped with `reference` (the CTI request
    /// being handled, if any).
    pub fn publish(&self, change: &PartyEvent, reference: Option<u64>) {
        for mut event in translate(change) {
            event.reference = reference;
            // No reader is not an error: events are a stream.
            let _ = self.sender.send(Arc::new(event));
        }
    }
}

/// A party as the CTI model sees it: a DN and its role.
#[derive(Debug, Clone, PartialEq)]
struct Dn {
    dn: String,
    role: Role,
}

/// The events every affected DN receives for one change of the party model.
pub fn translate(e: &PartyEvent) -> Vec<CtiEvent> {
    let mut out = Out {
        e,
        events: Vec::new(),
    };
    let me = Dn {
        dn: e.party.dn.clone(),
        role: e.party.role,
    };
    let others = cti_parties(e);
    // A lone member's other DN is its room's (which is no party: it gets no events).
    let other = single(&others).or_else(|| room_of(e, &others));
    match e.kind {
        ChangeKind::Created => match e.party.state {
            // A call in: the caller dials, the route's DN rings.
            PartyState::Ringing => {
                out.push("EventDialing", &me, other.as_ref(), e.state.into());
                if let Some(route) = others.first() {
                    out.push("EventRinging", route, Some(&me), e.state.into());
                }
            }
            // A call we place: our calling DN dials.
            PartyState::Dialing => {
                if let [caller] = others.as_slice() {
                    out.push("EventDialing", caller, Some(&me), e.state.into());
                }
            }
            _ => {}
        },
        ChangeKind::Ringing => out.push("EventRinging", &me, other.as_ref(), e.state.into()),
        ChangeKind::Established => {
            out.push("EventEstablished", &me, other.as_ref(), e.state.into());
            if let [o] = others.as_slice() {
                out.push("EventEstablished", o, Some(&me), e.state.into());
            }
        }
        ChangeKind::Held => out.push("EventHeld", &me, other.as_ref(), e.state.into()),
        ChangeKind::Retrieved => out.push("EventRetrieved", &me, other.as_ref(), e.state.into()),
        ChangeKind::Joined => joined(&mut out, &me, &others),
        ChangeKind::Left => left(&mut out, &me, &others),
        ChangeKind::Replaced => replaced(&mut out, &me, &others),
        ChangeKind::RouteLeft => route_left(&mut out, &me),
        ChangeKind::Released => released(&mut out, &me, &others),
    }
    // A destination we are still dialing has been told nothing of the call (its first event
    // is EventRinging or EventEstablished): nothing is addressed to it before.
    let unreached: Vec<&str> = std::iter::once(&e.party)
        .chain(&e.others)
        .filter(|p| p.state == PartyState::Dialing)
        .map(|p| p.dn.as_str())
        .collect();
    out.events
        .retain(|ev| !ev.this_dn.is_empty() && !unreached.contains(&ev.this_dn.as_str()));
    out.events
}

/// The other CTI parties of the change's call: its other members; for a call with one party
/// and no conference, the service DN (a route a call in reached, the DN a call we placed is
/// from). A conference room is no party.
fn cti_parties(e: &PartyEvent) -> Vec<Dn> {
    let mut parties: Vec<Dn> = e
        .others
        .iter()
        // A transferor whose place another took is no longer in the conversation, though its
        // dialog lingers until its BYE.
        .filter(|p| {
            p.replaced_by.is_none()
                && e.replaced
                    .as_ref()
                    .is_none_or(|r| r.connection != p.connection)
        })
        .map(|p| Dn {
            dn: p.dn.clone(),
            role: p.role,
        })
        .collect();
    if !e.conference && parties.is_empty() && !e.service_dn.is_empty() {
        parties.push(Dn {
            dn: e.service_dn.clone(),
            role: opposite(e.party.role),
        });
    }
    parties
}

/// A lone conference member's room, as its other DN.
fn room_of(e: &PartyEvent, others: &[Dn]) -> Option<Dn> {
    (e.conference && others.is_empty() && !e.service_dn.is_empty()).then(|| Dn {
        dn: e.service_dn.clone(),
        role: Role::Destination,
    })
}

/// The one other party of a two-party call.
fn single(others: &[Dn]) -> Option<Dn> {
    match others {
        [one] => Some(one.clone()),
        _ => None,
    }
}

fn opposite(role: Role) -> Role {
    match role {
        Role::Destination => Role::Origination,
        _ => Role::Destination,
    }
}

/// A member joined: the others are told who was added and by whom; the joiner that came from
/// a call of its own is told its ConnID changed.
fn joined(out: &mut Out, me: &Dn, others: &[Dn]) {
    let e = out.e;
    let third = third_party(&e.by, &e.party);
    let new_party = Dn {
        dn: me.dn.clone(),
        role: Role::NewParty,
    };
    for o in others {
        let mut ev = out.event("EventPartyAdded", o, Some(&new_party), e.state.into());
        ev.third_dn = Some(third.clone());
        ev.third_role = Some(Role::AddedBy);
        out.events.push(ev);
    }
    if e.previous.is_some() {
        let mut ev = out.event(
            "EventPartyChanged",
            me,
            single(others).as_ref(),
            e.state.into(),
        );
        ev.previous = e.previous;
        ev.third_dn = Some(third);
        ev.third_role = Some(Role::AddedBy);
        out.events.push(ev);
    }
}

/// A member left the conference and continues in a call of its own.
fn left(out: &mut Out, me: &Dn, others: &[Dn]) {
    let e = out.e;
    let third = third_party(&e.by, &e.party);
    deleted(out, me, others, third);
    if let Some(next) = e.next {
        let mut ev = out.event("EventPartyChanged", me, None, TCallState::Ok);
        ev.conn_id = next;
        ev.previous = Some(e.conn_id);
        out.events.push(ev);
    }
}

/// The others of a conference are told a party was deleted, and by whom.
fn deleted(out: &mut Out, me: &Dn, others: &[Dn], third: String) {
    let e = out.e;
    let gone = Dn {
        dn: me.dn.clone(),
        role: Role::DeletedParty,
    };
    for o in others {
        let mut ev = out.event("EventPartyDeleted", o, Some(&gone), e.state.into());
        ev.third_dn = Some(third.clone());
        ev.third_role = Some(Role::DeletedBy);
        ev.cause = e.reason.map(|r| cause(r, None));
        out.events.push(ev);
    }
}

/// The call's route is no party of it any more: its one party went into a conference (and
/// stays in the call) or on to another call. The route is released; a party that stays is
/// told the route was deleted from its call.
fn route_left(out: &mut Out, me: &Dn) {
    let e = out.e;
    let route = Dn {
        dn: e.service_dn.clone(),
        role: opposite(e.party.role),
    };
    let mut ev = out.event("EventReleased", &route, Some(me), TCallState::Ok);
    ev.cause = Some(cause(ReleaseReason::ApiRequest, None));
    out.events.push(ev);
    if e.next.is_none() {
        let third = third_party(&e.by, &e.party);
        deleted(out, &route, std::slice::from_ref(me), third);
    }
}

/// A transferred party took another's place (§3.3.7): it and the call's others are told, with
/// the transferor as third party.
fn replaced(out: &mut Out, me: &Dn, others: &[Dn]) {
    let e = out.e;
    let transferor = e.replaced.as_ref().map(|p| p.dn.clone());
    let mut ev = out.event(
        "EventPartyChanged",
        me,
        single(others).as_ref(),
        TCallState::Transferred,
    );
    ev.previous = e.previous;
    ev.third_dn = transferor.clone();
    ev.third_role = Some(Role::TransferredBy);
    out.events.push(ev);
    for o in others {
        let mut ev = out.event("EventPartyChanged", o, Some(me), TCallState::Transferred);
        ev.third_dn = transferor.clone();
        ev.third_role = Some(Role::TransferredBy);
        out.events.push(ev);
    }
}

/// A party was released (seed 05): in a two-party call both sides are released (the route of
/// a caller who hung up while ringing is told the call was abandoned; the caller of a call we
/// placed that failed is told the destination was busy first); in a conference the party is
/// released and the others are told it was deleted.
fn released(out: &mut Out, me: &Dn, others: &[Dn]) {
    let e = out.e;
    let reason = e.reason.unwrap_or(ReleaseReason::ApiRequest);
    let failure = e.party.failure;
    let q850 = cause(reason, failure);
    // Transferred, or whatever ends it after its place went to another (a transferor that
    // lingered until an application or a timer released it).
    if matches!(reason, ReleaseReason::Transferred | ReleaseReason::Replaced)
        || e.party.replaced_by.is_some()
    {
        // Its place went to another: the others were told by EventPartyChanged. Its other
        // party is the one it was talking to, not the one that took its place.
        let talking_to: Vec<Dn> = others
            .iter()
            .filter(|o| Some(&o.dn) != e.party.replaced_by.as_ref())
            .cloned()
            .collect();
        let mut ev = out.event(
            "EventReleased",
            me,
            single(&talking_to).as_ref(),
            TCallState::Transferred,
        );
        ev.third_dn = e.party.replaced_by.clone();
        ev.third_role = ev.third_dn.as_ref().map(|_| Role::TransferredBy);
        ev.cause = Some(q850);
        out.events.push(ev);
        // Nobody has taken its place and only the call's route is left: the call is over for
        // the route too (a transfer target that answers later has a call of its own).
        if e.party.replaced_by.is_none() && e.others.is_empty() {
            if let Some(route) = single(&talking_to) {
                let mut ev = out.event("EventReleased", &route, Some(me), TCallState::Transferred);
                ev.cause = Some(q850);
                out.events.push(ev);
            }
        }
        return;
    }
    if e.conference && !others.is_empty() {
        let mut ev = out.event("EventReleased", me, None, TCallState::Ok);
        ev.cause = Some(q850);
        out.events.push(ev);
        let third = third_party(&e.by, &e.party);
        deleted(out, me, others, third);
        return;
    }
    let state = failure.map_or(TCallState::Ok, state_of_failure);
    let other = single(others).or_else(|| room_of(e, others));
    // A destination we were still dialing was never told of the call: nothing to release.
    let rang = e.party.state != PartyState::Dialing;
    if rang {
        let mut ev = out.event("EventReleased", me, other.as_ref(), state);
        ev.cause = Some(q850);
        out.events.push(ev);
    }
    let Some(o) = other.filter(|_| !e.conference) else {
        return;
    };
    if failure.is_some() && e.party.role == Role::Destination {
        out.push("EventDestinationBusy", &o, Some(me), state);
    }
    let abandoned = e.party.role == Role::Origination
        && e.party.state == PartyState::Ringing
        && reason == ReleaseReason::Cancelled;
    let name = if abandoned {
        "EventAbandoned"
    } else {
        "EventReleased"
    };
    let mut ev = out.event(name, &o, Some(me), state);
    ev.cause = Some(q850);
    out.events.push(ev);
}

/// The DN of whoever caused a change: another party's, else the party's own (its own BYE, or
/// an application or timer acting on it: `Cause` says which).
fn third_party(by: &Actor, party: &Party) -> String {
    match by {
        Actor::Party { dn, .. } if !dn.is_empty() => dn.clone(),
        _ => party.dn.clone(),
    }
}

/// The events being built for one change.
struct Out<'a> {
    e: &'a PartyEvent,
    events: Vec<CtiEvent>,
}

impl Out<'_> {
    fn event(
        &self,
        name: &'static str,
        this: &Dn,
        other: Option<&Dn>,
        state: TCallState,
    ) -> CtiEvent {
        CtiEvent {
            event: name,
            conn_id: self.e.conn_id,
            previous: None,
            this_dn: this.dn.clone(),
            this_role: Some(this.role),
            other_dn: other.map(|o| o.dn.clone()).filter(|d| !d.is_empty()),
            other_role: other.filter(|o| !o.dn.is_empty()).map(|o| o.role),
            third_dn: None,
            third_role: None,
            call_state: state,
            cause: None,
            time: rfc3339(self.e.at_ms),
            reference: None,
        }
    }

    fn push(&mut self, name: &'static str, this: &Dn, other: Option<&Dn>, state: TCallState) {
        let event = self.event(name, this, other, state);
        self.events.push(event);
    }
}

/// The call state of a call we placed that failed with `status`.
fn state_of_failure(status: u16) -> TCallState {
    match status {
        486 | 600 => TCallState::Busy,
        408 | 480 | 487 => TCallState::NoAnswer,
        404 | 484 | 485 | 604 => TCallState::SitInvalidNum,
        410 => TCallState::SitVacant,
        503 => TCallState::AllTrunksBusy,
        _ => TCallState::GeneralError,
    }
}

/// The Q.850 cause of a release: from the SIP status a call we placed failed with (RFC 3398
/// §7.2.4.1), else from why it was released.
pub fn cause(reason: ReleaseReason, failure: Option<u16>) -> u8 {
    if let Some(status) = failure {
        return match status {
            404 | 485 | 604 => 1,
            486 | 600 => 17,
            480 => 18,
            408 | 487 => 19,
            410 => 22,
            482 | 483 => 25,
            484 => 28,
            502 => 38,
            580 => 47,
            606 | 488 => 58,
            405 => 63,
            406 | 415 | 501 => 79,
            401 | 402 | 403 | 407 | 603 => 21,
            504 => 102,
            400 | 481 | 500 | 503 => 41,
            _ => 127,
        };
    }
    match reason {
        ReleaseReason::ApiRequest
        | ReleaseReason::RemoteHangup
        | ReleaseReason::ConferenceReleased
        | ReleaseReason::LastConnectionLeft
        | ReleaseReason::AnnouncementComplete
        | ReleaseReason::OperationComplete
        | ReleaseReason::Transferred
        | ReleaseReason::Replaced
        | ReleaseReason::Cancelled => 16,
        ReleaseReason::CallFailed => 31,
        ReleaseReason::BadAnswer => 88,
        ReleaseReason::AckTimeout
        | ReleaseReason::ReserveTimeout
        | ReleaseReason::SessionExpired => 102,
        ReleaseReason::InviteFailed | ReleaseReason::Shutdown | ReleaseReason::RtpTimeout => 41,
    }
}

/// `unix_ms` as UTC, RFC 3339 with milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}
