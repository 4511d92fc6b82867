//! The party call model: who is in which call, by number, and who caused each change.
//!
//! Owns: calls (a [`ConnId`] each; a conference is one multi-party call) made of parties (a
//! connection bound to a SIP dialog or created by an application, with a DN, a state and a
//! role), the merges that make one call of two (a call joining a conference, BridgeCalls, a
//! transferred call taking another's place) and the record of every change with its cause
//! and its third party. Every surface (CUAE today; CTI, recording, agent gateway next) reads
//! this one model; none keeps a registry of its own.
//! Must not: decide anything about media or signalling. The core tells it what happened, in
//! the order it happened, and it answers what the call looks like now.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Index;

use serde::Serialize;
use serde_json::{json, Value};

use super::events::ReleaseReason;
use crate::sip::ua::CallId;

/// Keys from here on are parties without a connection yet (an offered `application` call);
/// connection ids are 24-bit, so the two never meet.
pub const NO_CONNECTION: u32 = 0x0100_0000;

/// How many changes a call keeps (the oldest go first).
const MAX_CHANGES: usize = 64;

/// A call's identifier, shared by all its parties: 16 hexadecimal digits, unique on this node
/// across restarts (a millisecond clock in the high bits, a sequence in the low 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// A ConnID as printed: 16 hexadecimal digits.
    pub fn parse(text: &str) -> Option<ConnId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(ConnId)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for ConnId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A party's state in its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartyState {
    /// We are calling it (INVITE sent, nothing back yet).
    Dialing,
    /// It is ringing: a call it made that we have not answered, or one we made that rings.
    Ringing,
    Established,
    /// It sends us nothing (it put us on hold).
    Held,
    Released,
}

/// A party's role, in the names of the Genesys call model (vendor-apis.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    /// It made the call (a call in).
    Origination,
    /// It was called (a call we placed).
    Destination,
    ConferenceMember,
    /// It has just been added to the call (a conference join).
    NewParty,
    AddedBy,
    DeletedBy,
    DeletedParty,
    TransferredBy,
    ConferencedBy,
    /// It listens only (a conference monitor).
    Observer,
}

/// Who caused a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "Kind")]
pub enum Actor {
    /// The party itself (its BYE, CANCEL, re-INVITE to hold, the number it dialled).
    #[serde(rename = "remote")]
    Remote,
    /// Another party of the call (a transferor, the call that replaced it, a chair).
    #[serde(rename = "party")]
    Party {
        /// None: a DN with no connection (the route a call reached, acting through CTI).
        #[serde(
            rename = "ConnectionId",
            skip_serializing_if = "Option::is_none",
            serialize_with = "opt_id_string"
        )]
        connection: Option<u32>,
        #[serde(rename = "DN")]
        dn: String,
    },
    /// An application, through one of the API surfaces.
    #[serde(rename = "client")]
    Client {
        #[serde(rename = "Action")]
        action: String,
    },
    /// callbridge itself (timers, media timeouts, drain and shutdown).
    #[serde(rename = "system")]
    System,
}

impl Actor {
    /// `remote`, `party`, `client` or `system`.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Remote => "remote",
            Actor::Party { .. } => "party",
            Actor::Client { .. } => "client",
            Actor::System => "system",
        }
    }
}

/// What happened to a party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Created,
    Ringing,
    Established,
    Held,
    Retrieved,
    /// It joined the call (from a call of its own, whose ConnID it leaves behind).
    Joined,
    /// It left the call and continues in a call of its own.
    Left,
    /// It took another party's place (transfer, Replaces).
    Replaced,
    /// The call's route (its service DN: the route a call in reached, the DN a call we placed
    /// is from) stopped being a party of it: its one party went into a conference or on to
    /// another call.
    RouteLeft,
    Released,
}

/// One change of a call, with its cause and third party.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    #[serde(rename = "TimeMs")]
    pub at_ms: u64,
    #[serde(rename = "Change")]
    pub kind: ChangeKind,
    #[serde(rename = "ConnectionId", serialize_with = "id_string")]
    pub connection: u32,
    #[serde(rename = "DN")]
    pub dn: String,
    /// For releases: why.
    #[serde(rename = "Reason", skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReleaseReason>,
    #[serde(rename = "By")]
    pub by: Actor,
}

/// A connection as a member of a call.
#[derive(Debug, Clone, Serialize)]
pub struct Party {
    #[serde(rename = "ConnectionId", serialize_with = "id_string")]
    pub connection: u32,
    /// The SIP dialog it is bound to, if any.
    #[serde(
        rename = "CallId",
        skip_serializing_if = "Option::is_none",
        serialize_with = "call_id_string"
    )]
    pub sip_call: Option<CallId>,
    #[serde(rename = "DN")]
    pub dn: String,
    #[serde(rename = "State")]
    pub state: PartyState,
    #[serde(rename = "Role")]
    pub role: Role,
    /// The ConnID of the call it was in before a merge.
    #[serde(rename = "PreviousConnID", skip_serializing_if = "Option::is_none")]
    pub previous: Option<ConnId>,
    #[serde(rename = "JoinedMs")]
    pub joined_ms: u64,
    /// The SIP status a call we placed to it failed with (busy, no answer, ...).
    #[serde(rename = "FailedWith", skip_serializing_if = "Option::is_none")]
    pub failure: Option<u16>,
    /// The DN of the party that took its place (a transfer), until it is released.
    #[serde(rename = "ReplacedBy", skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

/// One call: its parties and its history.
#[derive(Debug, Clone)]
pub struct Call {
    pub conn_id: ConnId,
    /// The DN on callbridge's side of the call: the route's DN a call in reached, the calling
    /// DN of a call we placed; for a conference call, the room's DN. The other party of a call
    /// with one party and no conference.
    pub service_dn: String,
    /// The conference that carries it, for a conference call.
    pub conference: Option<u32>,
    /// A call to a meet-me room (a `conference` route): the room is no party, even before
    /// the call joins it.
    pub meet_me: bool,
    pub created_ms: u64,
    /// Live parties by connection.
    pub parties: Parties,
    pub changes: Vec<Change>,
}

/// A call's live parties in connection order: a sorted vector, not a map. A call has one to a
/// few parties (a conference call tens), and every established call holds this; a `BTreeMap`
/// node is made for eleven (over a kilobyte for the one party of most calls).
#[derive(Debug, Clone, Default)]
pub struct Parties(Vec<Party>);

impl Parties {
    fn one(party: Party) -> Parties {
        Parties(vec![party])
    }

    fn position(&self, connection: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&connection, |p| p.connection)
    }

    pub fn get(&self, connection: &u32) -> Option<&Party> {
        self.position(*connection).ok().map(|i| &self.0[i])
    }

    pub fn get_mut(&mut self, connection: &u32) -> Option<&mut Party> {
        self.position(*connection).ok().map(|i| &mut self.0[i])
    }

    pub fn contains_key(&self, connection: &u32) -> bool {
        self.position(*connection).is_ok()
    }

    /// Adds (or replaces) the party of `party.connection`; the one it replaced.
    pub fn insert(&mut self, party: Party) -> Option<Party> {
        match self.position(party.connection) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], party)),
            Err(i) => {
                self.0.insert(i, party);
                None
            }
        }
    }

    pub fn remove(&mut self, connection: &u32) -> Option<Party> {
        self.position(*connection).ok().map(|i| self.0.remove(i))
    }

    /// Their connections, in order.
    pub fn keys(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|p| &p.connection)
    }

    /// The parties in connection order.
    pub fn values(&self) -> std::slice::Iter<'_, Party> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Index<&u32> for Parties {
    type Output = Party;

    fn index(&self, connection: &u32) -> &Party {
        self.get(connection).expect("no party with that connection")
    }
}

/// The Genesys `CallState` of a call after a change (seed 05): Conferenced while more than
/// two parties remain, OK otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CallState {
    #[serde(rename = "OK")]
    Ok,
    Conferenced,
}

impl Call {
    pub fn state(&self) -> CallState {
        if self.parties.len() > 2 {
            CallState::Conferenced
        } else {
            CallState::Ok
        }
    }

    fn record(&mut self, change: Change) {
        if self.changes.len() == MAX_CHANGES {
            self.changes.remove(0);
        }
        self.changes.push(change);
    }

    /// The listing of the call (API names).
    pub fn to_json(&self) -> Value {
        json!({
            "ConnID": self.conn_id,
            "ServiceDN": self.service_dn,
            "CallState": self.state(),
            "ConferenceId": self.conference.map(|c| c.to_string()),
            "CreatedMs": self.created_ms,
            "Parties": self.parties.values().collect::<Vec<_>>(),
            "Changes": self.changes,
        })
    }
}

/// A party's release, as the surfaces report it.
#[derive(Debug, Clone)]
pub struct Released {
    pub conn_id: ConnId,
    pub party: Party,
    pub by: Actor,
    /// The call after the release (None: the call is over).
    pub remaining: Option<CallState>,
}

/// A new party: where it comes from.
#[derive(Debug, Clone)]
pub struct NewParty {
    pub connection: u32,
    /// It calls a meet-me room.
    pub meet_me: bool,
    pub sip_call: Option<CallId>,
    pub dn: String,
    pub service_dn: String,
    pub role: Role,
    pub state: PartyState,
}

/// One change of the model with the call around it, as it was right after the change: what
/// the surfaces (the CTI stream first) translate into their own events.
#[derive(Debug, Clone)]
pub struct PartyEvent {
    pub at_ms: u64,
    /// The call the change happened on.
    pub conn_id: ConnId,
    pub kind: ChangeKind,
    /// The party the change is about (for a release: in the state it was released from).
    pub party: Party,
    pub by: Actor,
    /// For releases: why.
    pub reason: Option<ReleaseReason>,
    /// The call's other parties after the change.
    pub others: Vec<Party>,
    /// The call's [`Call::service_dn`].
    pub service_dn: String,
    /// Whether a conference carries the call (or it is a call to a meet-me room).
    pub conference: bool,
    /// The call's state after the change.
    pub state: CallState,
    /// Joined, Replaced: the ConnID of the call the party came from (None: it was in none).
    pub previous: Option<ConnId>,
    /// Left: the ConnID of the call the party continues in.
    pub next: Option<ConnId>,
    /// Replaced: the party whose place it took.
    pub replaced: Option<Party>,
}

/// Every call and party of this node.
#[derive(Debug, Default)]
pub struct CallModel {
    calls: BTreeMap<ConnId, Call>,
    /// The call of each party, by connection.
    call_of: crate::idmap::IdMap<u32, ConnId>,
    /// The call each conference carries.
    conference_call: crate::idmap::IdMap<u32, ConnId>,
    last_id: u64,
    /// Changes not taken by the surfaces yet, in order.
    outbox: Vec<PartyEvent>,
    /// No surface reads the changes now (no CTI client): each is still recorded on its call,
    /// but not queued with a copy of the call around it.
    unobserved: bool,
    /// The last key given to a party without a connection.
    last_placeholder: u32,
}

/// What a [`PartyEvent`] carries beyond the change itself.
#[derive(Default)]
struct Extra {
    reason: Option<ReleaseReason>,
    previous: Option<ConnId>,
    next: Option<ConnId>,
    replaced: Option<Party>,
}

impl CallModel {
    /// Gives back the slack a burst left in the tables (see `crate::shrink`).
    pub fn shrink_idle(&mut self) {
        use crate::shrink::ShrinkIdle;
        self.call_of.shrink_idle();
        self.conference_call.shrink_idle();
        self.outbox.shrink_idle();
    }

    /// A new call with one party; returns its ConnID.
    pub fn open(&mut self, now_ms: u64, new: NewParty, by: Actor) -> ConnId {
        let conn_id = self.next_id(now_ms);
        let party = Party {
            connection: new.connection,
            sip_call: new.sip_call,
            dn: new.dn,
            state: new.state,
            role: new.role,
            previous: None,
            joined_ms: now_ms,
            failure: None,
            replaced_by: None,
        };
        self.calls.insert(
            conn_id,
            Call {
                conn_id,
                service_dn: new.service_dn,
                conference: None,
                meet_me: new.meet_me,
                created_ms: now_ms,
                parties: Parties::one(party.clone()),
                changes: Vec::new(),
            },
        );
        self.call_of.insert(new.connection, conn_id);
        self.publish(
            now_ms,
            conn_id,
            ChangeKind::Created,
            &party,
            by,
            Extra::default(),
        );
        conn_id
    }

    /// A party's state changed (answered, ringing, held, retrieved).
    pub fn set_state(&mut self, now_ms: u64, connection: u32, state: PartyState, by: Actor) {
        let Some(&conn_id) = self.call_of.get(&connection) else {
            return;
        };
        let Some(party) = self
            .calls
            .get_mut(&conn_id)
            .and_then(|c| c.parties.get_mut(&connection))
        else {
            return;
        };
        if party.state == state {
            return;
        }
        let kind = match (party.state, state) {
            (PartyState::Held, PartyState::Established) => ChangeKind::Retrieved,
            (_, PartyState::Established) => ChangeKind::Established,
            (_, PartyState::Held) => ChangeKind::Held,
            (_, PartyState::Ringing) => ChangeKind::Ringing,
            (_, PartyState::Released) => ChangeKind::Released,
            (_, PartyState::Dialing) => ChangeKind::Created,
        };
        party.state = state;
        let party = party.clone();
        self.publish(now_ms, conn_id, kind, &party, by, Extra::default());
    }

    /// A call we placed to `connection` failed with a SIP status; its release follows.
    pub fn fail(&mut self, connection: u32, status: u16) {
        let Some(&conn_id) = self.call_of.get(&connection) else {
            return;
        };
        if let Some(party) = self
            .calls
            .get_mut(&conn_id)
            .and_then(|c| c.parties.get_mut(&connection))
        {
            party.failure = Some(status);
        }
    }

    /// A conference now carries `connection`'s call (CreateConference): that call survives
    /// as the conference call, so its ConnID stays; its route, if it had one, leaves it.
    pub fn start_conference(&mut self, now_ms: u64, conference: u32, connection: u32, by: Actor) {
        let Some(&conn_id) = self.call_of.get(&connection) else {
            return;
        };
        self.route_leaves(now_ms, conn_id, connection, by, None);
        if let Some(call) = self.calls.get_mut(&conn_id) {
            call.conference = Some(conference);
            if let Some(p) = call.parties.get_mut(&connection) {
                p.role = Role::ConferenceMember;
            }
        }
        self.conference_call.insert(conference, conn_id);
    }

    /// `connection` joins `conference`'s call; its own call merges into it (its ConnID is
    /// remembered as the party's previous one). A connection that is no party yet (an
    /// application's connection) becomes one. Returns the conference call.
    pub fn join_conference(
        &mut self,
        now_ms: u64,
        conference: u32,
        connection: u32,
        observer: bool,
        by: Actor,
    ) -> Option<ConnId> {
        let target = *self.conference_call.get(&conference)?;
        if let Some(&old) = self.call_of.get(&connection).filter(|&&old| old != target) {
            self.route_leaves(now_ms, old, connection, by.clone(), Some(target));
        }
        let mut party = match self.take_party(connection) {
            Some((old, party)) if old == target => {
                // Already a member (CreateConference's first): nothing moves.
                self.put_back(target, party);
                return Some(target);
            }
            Some((old, mut party)) => {
                party.previous = Some(old);
                self.drop_if_empty(old);
                party
            }
            None => Party {
                connection,
                sip_call: None,
                dn: String::new(),
                state: PartyState::Established,
                role: Role::NewParty,
                previous: None,
                joined_ms: now_ms,
                failure: None,
                replaced_by: None,
            },
        };
        party.role = if observer {
            Role::Observer
        } else {
            Role::ConferenceMember
        };
        party.joined_ms = now_ms;
        self.calls.get_mut(&target)?.parties.insert(party.clone());
        self.call_of.insert(connection, target);
        let extra = Extra {
            previous: party.previous,
            ..Extra::default()
        };
        self.publish(now_ms, target, ChangeKind::Joined, &party, by, extra);
        Some(target)
    }

    /// Opens a conference call for a conference whose first member is no party of any call
    /// (an application's connection).
    pub fn open_conference(&mut self, now_ms: u64, conference: u32, connection: u32, by: Actor) {
        if !self.call_of.contains_key(&connection) {
            self.open(
                now_ms,
                NewParty {
                    connection,
                    meet_me: false,
                    sip_call: None,
                    dn: String::new(),
                    service_dn: String::new(),
                    role: Role::ConferenceMember,
                    state: PartyState::Established,
                },
                by.clone(),
            );
        }
        self.start_conference(now_ms, conference, connection, by);
    }

    /// `connection` leaves its conference but stays connected: it continues in a call of its
    /// own (a new ConnID; the conference's is its previous).
    pub fn leave_conference(&mut self, now_ms: u64, connection: u32, by: Actor) {
        // A connection mixed into a conference while its call is still its own (a transfer's
        // target before it answers) leaves the mix, not a call.
        let in_conference = self
            .call_of
            .get(&connection)
            .and_then(|c| self.calls.get(c))
            .is_some_and(|c| c.conference.is_some() || c.meet_me);
        if !in_conference {
            return;
        }
        let Some((old, mut party)) = self.take_party(connection) else {
            return;
        };
        let conn_id = self.next_id(now_ms);
        let mut left = party.clone();
        left.role = Role::DeletedParty;
        let extra = Extra {
            next: Some(conn_id),
            ..Extra::default()
        };
        self.publish(now_ms, old, ChangeKind::Left, &left, by, extra);
        self.drop_if_empty(old);
        party.previous = Some(old);
        party.role = Role::Origination;
        self.calls.insert(
            conn_id,
            Call {
                conn_id,
                service_dn: String::new(),
                conference: None,
                meet_me: false,
                created_ms: now_ms,
                parties: Parties::one(party),
                changes: Vec::new(),
            },
        );
        self.call_of.insert(connection, conn_id);
    }

    /// The conference is gone: its call (if parties remain, which the core releases first)
    /// is no conference call any more.
    pub fn end_conference(&mut self, conference: u32) {
        if let Some(conn_id) = self.conference_call.remove(&conference) {
            if let Some(call) = self.calls.get_mut(&conn_id) {
                call.conference = None;
            }
        }
    }

    /// `new` takes `old`'s place (a transfer, an INVITE with Replaces): it moves into `old`'s
    /// call with `old`'s role; its own call's ConnID becomes its previous one. `old` is then
    /// released by the core.
    pub fn replace(&mut self, now_ms: u64, new: u32, old: u32, by: Actor) {
        let Some(&target) = self.call_of.get(&old) else {
            return;
        };
        // One place, one taker: a party whose place another has taken already (a transfer
        // waiting for the transferor's BYE) gives it to nobody else; the second comer keeps
        // its own call.
        let taken = self
            .calls
            .get(&target)
            .and_then(|c| c.parties.get(&old))
            .is_some_and(|p| p.replaced_by.is_some());
        if taken {
            return;
        }
        if let Some(&from) = self.call_of.get(&new).filter(|&&from| from != target) {
            self.route_leaves(now_ms, from, new, by.clone(), Some(target));
        }
        let Some((from, mut party)) = self.take_party(new) else {
            return;
        };
        if from == target {
            self.put_back(target, party);
            return;
        }
        self.drop_if_empty(from);
        let Some(call) = self.calls.get_mut(&target) else {
            return;
        };
        let replaced = call.parties.get(&old).cloned();
        if let Some(old) = call.parties.get_mut(&old) {
            party.role = old.role;
            old.replaced_by = Some(party.dn.clone());
        }
        party.previous = Some(from);
        call.parties.insert(party.clone());
        self.call_of.insert(new, target);
        let extra = Extra {
            previous: Some(from),
            replaced,
            ..Extra::default()
        };
        self.publish(now_ms, target, ChangeKind::Replaced, &party, by, extra);
    }

    /// Releases a party: the call goes on with the others, or ends with it.
    pub fn release(
        &mut self,
        now_ms: u64,
        connection: u32,
        reason: ReleaseReason,
        by: Actor,
    ) -> Option<Released> {
        let (conn_id, mut party) = self.take_party(connection)?;
        let remaining = {
            let call = self.calls.get(&conn_id)?;
            (!call.parties.is_empty()).then(|| call.state())
        };
        let extra = Extra {
            reason: Some(reason),
            ..Extra::default()
        };
        // The event carries the state the party was released from (ringing: abandoned).
        self.publish(
            now_ms,
            conn_id,
            ChangeKind::Released,
            &party,
            by.clone(),
            extra,
        );
        party.state = PartyState::Released;
        self.drop_if_empty(conn_id);
        Some(Released {
            conn_id,
            party,
            by,
            remaining,
        })
    }

    /// A key for a party that has no connection yet (see [`NO_CONNECTION`]); give it its
    /// connection with [`CallModel::rekey`].
    pub fn placeholder(&mut self) -> u32 {
        self.last_placeholder = self.last_placeholder.wrapping_add(1) % NO_CONNECTION;
        NO_CONNECTION + self.last_placeholder
    }

    /// A party without a connection got one: it keeps its call, state and history.
    pub fn rekey(&mut self, placeholder: u32, connection: u32) {
        let Some((conn_id, mut party)) = self.take_party(placeholder) else {
            return;
        };
        party.connection = connection;
        self.put_back(conn_id, party);
    }

    /// The changes since the last take, oldest first.
    /// Whether changes are queued for the surfaces (see `unobserved`); on by default.
    pub fn set_observed(&mut self, observed: bool) {
        self.unobserved = !observed;
    }

    pub fn take_events(&mut self) -> Vec<PartyEvent> {
        std::mem::take(&mut self.outbox)
    }

    pub fn conn_id_of(&self, connection: u32) -> Option<ConnId> {
        self.call_of.get(&connection).copied()
    }

    pub fn party(&self, connection: u32) -> Option<&Party> {
        self.calls
            .get(self.call_of.get(&connection)?)?
            .parties
            .get(&connection)
    }

    pub fn call(&self, conn_id: ConnId) -> Option<&Call> {
        self.calls.get(&conn_id)
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Live calls (for leak checks and /metrics).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    pub fn party_count(&self) -> usize {
        self.call_of.len()
    }

    fn next_id(&mut self, now_ms: u64) -> ConnId {
        let id = (now_ms << 16).max(self.last_id + 1);
        self.last_id = id;
        ConnId(id)
    }

    /// Records a change on its call and queues it, with the call around it, for the surfaces.
    fn publish(
        &mut self,
        now_ms: u64,
        conn_id: ConnId,
        kind: ChangeKind,
        party: &Party,
        by: Actor,
        extra: Extra,
    ) {
        let Some(call) = self.calls.get_mut(&conn_id) else {
            return;
        };
        call.record(change(now_ms, kind, party, extra.reason, by.clone()));
        if self.unobserved {
            return;
        }
        self.outbox.push(PartyEvent {
            at_ms: now_ms,
            conn_id,
            kind,
            party: party.clone(),
            by,
            reason: extra.reason,
            others: call
                .parties
                .values()
                .filter(|p| p.connection != party.connection)
                .cloned()
                .collect(),
            service_dn: call.service_dn.clone(),
            conference: call.conference.is_some() || call.meet_me,
            state: call.state(),
            previous: extra.previous,
            next: extra.next,
            replaced: extra.replaced,
        });
    }

    /// `connection`'s call `conn_id` stops having a route among its parties: its one party
    /// goes into a conference (`next` None: the call becomes the conference call) or on to
    /// the call `next`. Nothing when the call has no route, or it is a conference already.
    fn route_leaves(
        &mut self,
        now_ms: u64,
        conn_id: ConnId,
        connection: u32,
        by: Actor,
        next: Option<ConnId>,
    ) {
        let Some(call) = self.calls.get(&conn_id) else {
            return;
        };
        if call.conference.is_some() || call.meet_me || call.service_dn.is_empty() {
            return;
        }
        // The route's other party: the call's one party still in the conversation (a
        // transferor whose place another took lingers until its BYE, and counts for nothing).
        let mut active = call.parties.values().filter(|p| p.replaced_by.is_none());
        let (Some(party), None) = (active.next(), active.next()) else {
            return;
        };
        // Going on to another call takes the route's other party away only if it is that one.
        let leaves = match next {
            None => call.parties.contains_key(&connection),
            Some(_) => party.connection == connection,
        };
        if !leaves {
            return;
        }
        let party = party.clone();
        let extra = Extra {
            next,
            ..Extra::default()
        };
        self.publish(now_ms, conn_id, ChangeKind::RouteLeft, &party, by, extra);
        // For good: the call is a conference now (whose lone member has no room DN), or over.
        if let Some(call) = self.calls.get_mut(&conn_id) {
            call.service_dn.clear();
        }
    }

    /// Takes a party out of its call (the call stays, even empty: see `drop_if_empty`).
    fn take_party(&mut self, connection: u32) -> Option<(ConnId, Party)> {
        let conn_id = self.call_of.remove(&connection)?;
        let party = self.calls.get_mut(&conn_id)?.parties.remove(&connection)?;
        Some((conn_id, party))
    }

    fn put_back(&mut self, conn_id: ConnId, party: Party) {
        self.call_of.insert(party.connection, conn_id);
        if let Some(call) = self.calls.get_mut(&conn_id) {
            call.parties.insert(party);
        }
    }

    /// A call with no party left is over (a conference call too: its conference goes with
    /// its last connection).
    fn drop_if_empty(&mut self, conn_id: ConnId) {
        let empty = self
            .calls
            .get(&conn_id)
            .is_some_and(|c| c.parties.is_empty());
        if !empty {
            return;
        }
        if let Some(call) = self.calls.remove(&conn_id) {
            if let Some(conference) = call.conference {
                self.conference_call.remove(&conference);
            }
        }
    }
}

/// Ids are strings in the API, as everywhere in the CUAE vocabulary; a party without a
/// connection has none.
fn id_string<S: serde::Serializer>(id: &u32, s: S) -> Result<S::Ok, S::Error> {
    if *id >= NO_CONNECTION {
        return s.serialize_none();
    }
    s.collect_str(id)
}

fn opt_id_string<S: serde::Serializer>(id: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

fn call_id_string<S: serde::Serializer>(id: &Option<CallId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

fn change(
    at_ms: u64,
    kind: ChangeKind,
    party: &Party,
    reason: Option<ReleaseReason>,
    by: Actor,
) -> Change {
    Change {
        at_ms,
        kind,
        connection: party.connection,
        dn: party.dn.clone(),
        reason,
        by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(connection: u32, dn: &str) -> NewParty {
        NewParty {
            connection,
            meet_me: false,
            sip_call: Some(u64::from(connection) + 100),
            dn: dn.into(),
            service_dn: "7000".into(),
            role: Role::Origination,
            state: PartyState::Ringing,
        }
    }

    fn party(connection: u32, dn: &str) -> Party {
        Party {
            connection,
            sip_call: None,
            dn: dn.into(),
            state: PartyState::Established,
            role: Role::ConferenceMember,
            previous: None,
            joined_ms: 0,
            failure: None,
            replaced_by: None,
        }
    }

    #[test]
    fn parties_are_kept_in_connection_order_one_per_connection() {
        let mut parties = Parties::one(party(5, "5005"));
        assert!(parties.insert(party(2, "5002")).is_none());
        assert!(parties.insert(party(9, "5009")).is_none());
        let replaced = parties.insert(party(5, "6005")).expect("5 was there");
        assert_eq!(replaced.dn, "5005");
        assert_eq!(parties.keys().copied().collect::<Vec<_>>(), [2, 5, 9]);
        assert_eq!(parties[&5].dn, "6005");
        assert_eq!(parties.remove(&2).map(|p| p.dn), Some("5002".to_string()));
        assert!(parties.remove(&2).is_none());
        assert!(!parties.contains_key(&2) && parties.contains_key(&9));
        parties.get_mut(&9).expect("9").dn = "7009".into();
        let dns: Vec<&str> = parties.values().map(|p| p.dn.as_str()).collect();
        assert_eq!(dns, ["6005", "7009"]);
        assert_eq!(parties.len(), 2);
    }

    #[test]
    fn an_unobserved_model_records_changes_on_the_call_but_queues_none() {
        let mut m = CallModel::default();
        m.set_observed(false);
        let call = m.open(1_000, caller(1, "1001"), Actor::Remote);
        assert!(m.take_events().is_empty());
        assert_eq!(m.call(call).expect("open").changes.len(), 1);
        m.set_observed(true);
        let other = m.open(1_001, caller(2, "1002"), Actor::Remote);
        let queued = m.take_events();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].conn_id, other);
    }

    #[test]
    fn conn_ids_are_sixteen_hex_digits_and_increase_even_within_a_millisecond() {
        let mut model = CallModel::default();
        let a = model.open(1_780_000_000_000, caller(1, "5551001"), Actor::Remote);
        let b = model.open(1_780_000_000_000, caller(2, "5551002"), Actor::Remote);
        assert_eq!(a.to_string().len(), 16);
        assert!(a.to_string().chars().all(|c| c.is_ascii_hexdigit()));
        assert!(b > a);
        // A restart later never reuses an id: the clock is in the high bits.
        let mut restarted = CallModel::default();
        let c = restarted.open(1_780_000_000_001, caller(1, "5551001"), Actor::Remote);
        assert!(c > b);
    }

    #[test]
    fn a_conference_is_one_call_whose_state_follows_its_membership() {
        let mut m = CallModel::default();
        let t = 1_000;
        let first = m.open(t, caller(1, "1001"), Actor::Remote);
        let second = m.open(t, caller(2, "1002"), Actor::Remote);
        let third = m.open(t, caller(3, "1003"), Actor::Remote);
        m.start_conference(0, 9, 1, Actor::System);
        let client = Actor::Client {
            action: "JoinConference".into(),
        };
        assert_eq!(
            m.join_conference(t, 9, 2, false, client.clone()),
            Some(first)
        );
        assert_eq!(m.call(first).unwrap().state(), CallState::Ok);
        m.join_conference(t, 9, 3, false, client);
        let call = m.call(first).unwrap();
        assert_eq!(call.state(), CallState::Conferenced);
        assert_eq!(call.parties[&2].previous, Some(second));
        assert_eq!(call.parties[&3].previous, Some(third));
        assert_eq!(call.parties[&3].role, Role::ConferenceMember);
        // The merged calls are gone; every party shares the surviving ConnID.
        assert_eq!(m.call_count(), 1);
        assert_eq!(m.conn_id_of(3), Some(first));

        let released = m.release(t + 5, 3, ReleaseReason::RemoteHangup, Actor::Remote);
        let released = released.unwrap();
        assert_eq!(released.conn_id, first);
        assert_eq!(released.party.dn, "1003");
        assert_eq!(released.remaining, Some(CallState::Ok));
        let chair = Actor::Party {
            connection: Some(1),
            dn: "1001".into(),
        };
        let deleted = m
            .release(t + 6, 2, ReleaseReason::ApiRequest, chair.clone())
            .unwrap();
        assert_eq!(deleted.by, chair);
        assert_eq!(deleted.remaining, Some(CallState::Ok));
        let last = m
            .release(t + 7, 1, ReleaseReason::RemoteHangup, Actor::Remote)
            .unwrap();
        assert_eq!(last.remaining, None);
        assert_eq!(m.call_count(), 0);
        assert_eq!(m.party_count(), 0);
    }

    #[test]
    fn a_party_that_leaves_a_conference_continues_in_a_call_of_its_own() {
        let mut m = CallModel::default();
        let conf = m.open(1, caller(1, "1001"), Actor::Remote);
        m.open(1, caller(2, "1002"), Actor::Remote);
        m.start_conference(0, 4, 1, Actor::System);
        m.join_conference(2, 4, 2, false, Actor::Remote);
        m.leave_conference(3, 2, Actor::System);
        let own = m.conn_id_of(2).unwrap();
        assert_ne!(own, conf);
        let party = m.party(2).unwrap();
        assert_eq!(party.previous, Some(conf));
        assert_eq!(m.call(conf).unwrap().parties.len(), 1);
        let left = &m.call(conf).unwrap().changes;
        assert_eq!(left.last().unwrap().kind, ChangeKind::Left);
    }

    #[test]
    fn a_transferred_call_takes_the_old_partys_place_and_role() {
        let mut m = CallModel::default();
        let conf = m.open(1, caller(1, "1001"), Actor::Remote);
        m.open(1, caller(2, "1002"), Actor::Remote);
        m.start_conference(0, 4, 1, Actor::System);
        m.join_conference(2, 4, 2, true, Actor::Remote);
        let new_call = m.open(3, caller(5, "2002"), Actor::Remote);
        let transferor = Actor::Party {
            connection: Some(2),
            dn: "1002".into(),
        };
        m.replace(4, 5, 2, transferor.clone());
        m.release(4, 2, ReleaseReason::Transferred, transferor);
        let call = m.call(conf).unwrap();
        assert_eq!(call.parties[&5].role, Role::Observer);
        assert_eq!(call.parties[&5].previous, Some(new_call));
        assert!(!call.parties.contains_key(&2));
        assert!(m.call(new_call).is_none());
    }

    #[test]
    fn hold_and_retrieve_are_recorded_with_who_did_them() {
        let mut m = CallModel::default();
        let id = m.open(1, caller(1, "1001"), Actor::Remote);
        m.set_state(2, 1, PartyState::Established, Actor::System);
        m.set_state(3, 1, PartyState::Held, Actor::Remote);
        m.set_state(4, 1, PartyState::Established, Actor::Remote);
        let kinds: Vec<ChangeKind> = m.call(id).unwrap().changes.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                ChangeKind::Created,
                ChangeKind::Established,
                ChangeKind::Held,
                ChangeKind::Retrieved
            ]
        );
    }
}
