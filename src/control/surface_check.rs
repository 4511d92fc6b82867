//! What every surface says about the one party model, checked event by event: the Media
//! Control and Call Control stream (`/events`), the CTI stream (T-Library) and the recording
//! store's writes (the Verba API's rows). Whatever released a party — a BYE, DeleteConnection,
//! Hangup, a CTI request, the agent gateway, a timer, the engine — each surface must tell its
//! clients once, in an order they can follow, and by the time nothing is left in the core
//! every surface must have said so: no connection, conference, call, CTI party, store call or
//! recording its clients still believe in.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::store::StoreEvent;

/// The names of the `/events` events that end an operation.
const OPERATION_ENDS: [&str; 12] = [
    "Play_Complete",
    "Play_Failed",
    "PlayTone_Complete",
    "PlayTone_Failed",
    "GatherDigits_Complete",
    "GatherDigits_Failed",
    "Record_Complete",
    "Record_Failed",
    "DetectSilence_Complete",
    "DetectSilence_Failed",
    "DetectNonSilence_Complete",
    "DetectNonSilence_Failed",
];

/// What the surfaces' clients believe exists, from what they were told.
#[derive(Debug, Default)]
pub(super) struct Surfaces {
    /// `/events`: the last `Seq` read (a gap would mean the check lost events).
    seq: Option<u64>,
    /// Connections reserved or created and not released.
    connections: HashSet<String>,
    /// Conferences created and not released.
    conferences: HashSet<String>,
    /// SIP calls (CallId) named by any event, and those whose CallEnded came.
    calls: HashSet<String>,
    calls_ended: HashSet<String>,
    /// Media operations the applications started (by OperationId), and those whose
    /// completion came (the core's own, an announcement's prompt, end too).
    operations: HashSet<String>,
    operations_ended: HashSet<String>,
    /// Policy recordings (RecordingCallId) started, with their connection: each ends with a
    /// RecordingStopped (a failure) or its connection's release.
    recordings: HashMap<String, String>,
    /// CTI: the parties (ThisDN, ConnID) told of and not released.
    parties: HashSet<(String, String)>,
    /// The parties (DN, ConnID) whose connections `/events` released since the last
    /// [`Surfaces::same_releases`]: the CTI stream must have released each as well.
    released_parties: Vec<(String, String)>,
    /// The store: calls started and not ended, and recordings started and not finished.
    store_calls: HashSet<String>,
    store_recordings: HashSet<String>,
    /// When each store call started and whether it was answered, and when each recording
    /// started: a row's times must follow one another (answered once, at or after the
    /// start; ended at or after the answer; a recording finished at or after its start).
    store_times: HashMap<String, (i64, Option<i64>)>,
    recording_times: HashMap<String, i64>,
}

impl Surfaces {
    /// An operation an action's answer named (its completion event is owed).
    pub(super) fn operation_started(&mut self, id: &str) {
        self.operations.insert(id.to_string());
    }

    /// Whether an operation an application started has not ended yet.
    pub(super) fn operations_running(&self) -> bool {
        self.operations
            .difference(&self.operations_ended)
            .next()
            .is_some()
    }

    /// A connection an action's answer named: a Play, PlayTone or Record to a conference
    /// makes a temporary conference connection, known from the answer (no ConnectionCreated),
    /// whose ConnectionReleased comes when its operation ends.
    pub(super) fn connection_answered(&mut self, id: &str) {
        self.connections.insert(id.to_string());
    }

    /// The `/events` events since the last read, in order.
    pub(super) fn read_events(&mut self, events: &[Value]) -> Result<(), String> {
        self.read_each(events, Self::read_event, "event")
    }

    /// `read` of each of `events` in order; the first failure names the event.
    fn read_each<T: std::fmt::Debug>(
        &mut self,
        events: &[T],
        read: fn(&mut Self, &T) -> Result<(), String>,
        what: &str,
    ) -> Result<(), String> {
        for event in events {
            read(self, event).map_err(|e| format!("{e}\n  in {what} {event:?}"))?;
        }
        Ok(())
    }

    fn read_event(&mut self, event: &Value) -> Result<(), String> {
        let seq = event["Seq"].as_u64().ok_or("an event without Seq")?;
        if let Some(last) = self.seq {
            if seq != last + 1 {
                return Err(format!("events lost between Seq {last} and {seq}"));
            }
        }
        self.seq = Some(seq);
        let name = event["Event"].as_str().unwrap_or_default();
        let text = |key: &str| event[key].as_str().map(str::to_string);
        if let Some(call) = text("CallId") {
            // A call's connection may go after its dialog (the implicit DeleteConnection).
            if self.calls_ended.contains(&call) && name != "ConnectionReleased" {
                return Err(format!("{name} about call {call} after its CallEnded"));
            }
            self.calls.insert(call.clone());
            if name == "CallEnded" {
                self.calls_ended.insert(call);
            }
        }
        match name {
            "ConnectionReserved" | "ConnectionCreated" => {
                let id = text("ConnectionId").ok_or("no ConnectionId")?;
                self.connections.insert(id);
            }
            "ConnectionReleased" => {
                let id = text("ConnectionId").ok_or("no ConnectionId")?;
                if !self.connections.remove(&id) {
                    return Err(format!("connection {id} released but not alive"));
                }
                if let (Some(dn), Some(conn_id)) = (text("DN"), text("ConnID")) {
                    self.released_parties.push((dn, conn_id));
                }
                self.recordings.retain(|_, connection| *connection != id);
            }
            "ConferenceCreated" => {
                let id = text("ConferenceId").ok_or("no ConferenceId")?;
                if !self.conferences.insert(id.clone()) {
                    return Err(format!("conference {id} created twice"));
                }
                self.connection_alive(name, event)?;
            }
            "ConferenceReleased" => {
                let id = text("ConferenceId").ok_or("no ConferenceId")?;
                if !self.conferences.remove(&id) {
                    return Err(format!("conference {id} released but not alive"));
                }
            }
            "ConferenceJoined"
            | "ConferenceLeft"
            | "ConfereeAttributesChanged"
            | "TalkerStarted"
            | "TalkerStopped"
            | "ConferencePromoted" => {
                let id = text("ConferenceId").ok_or("no ConferenceId")?;
                if !self.conferences.contains(&id) {
                    return Err(format!("{name} in conference {id}, not alive"));
                }
                if name != "ConferencePromoted" {
                    self.connection_alive(name, event)?;
                }
            }
            "RecordingStarted" => {
                self.connection_alive(name, event)?;
                let id = text("RecordingCallId").ok_or("no RecordingCallId")?;
                let connection = text("ConnectionId").ok_or("no ConnectionId")?;
                if self.recordings.insert(id.clone(), connection).is_some() {
                    return Err(format!("recording of {id} started twice"));
                }
            }
            "RecordingStopped" => {
                // Also a Record operation's failed write (no RecordingStarted before it: its
                // start was the action's answer; its Record_Failed follows).
                let id = text("RecordingCallId").ok_or("no RecordingCallId")?;
                self.recordings.remove(&id);
            }
            "ConnectionModified" | "CallAnswered" | "DigitReceived" | "CallChanged" => {
                self.connection_alive(name, event)?;
            }
            name if OPERATION_ENDS.contains(&name) => {
                // A Record completes when its file is finished, which may be after its
                // connection's release; every other operation completes before it.
                if !name.starts_with("Record_") {
                    self.connection_alive(name, event)?;
                }
                let id = text("OperationId").ok_or("no OperationId")?;
                if !self.operations_ended.insert(id.clone()) {
                    return Err(format!("operation {id} ended twice"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn connection_alive(&self, name: &str, event: &Value) -> Result<(), String> {
        match event["ConnectionId"].as_str() {
            Some(id) if !self.connections.contains(id) => {
                Err(format!("{name} about connection {id}, not alive"))
            }
            _ => Ok(()),
        }
    }

    /// CTI events, in order.
    pub(super) fn read_cti(&mut self, events: &[Value]) -> Result<(), String> {
        self.read_each(events, Self::read_cti_event, "CTI event")
    }

    /// One release, every surface: a party whose connection `/events` released (its DN and
    /// ConnID on `ConnectionReleased`) is no CTI party any more once both streams of the same
    /// moment are read.
    pub(super) fn same_releases(&mut self) -> Result<(), String> {
        for (dn, conn_id) in std::mem::take(&mut self.released_parties) {
            if self.parties.contains(&(dn.clone(), conn_id.clone())) {
                return Err(format!(
                    "/events released {dn}'s connection in call {conn_id}; the CTI stream still \
                     has the party"
                ));
            }
        }
        Ok(())
    }

    fn read_cti_event(&mut self, event: &Value) -> Result<(), String> {
        let name = event["Event"].as_str().unwrap_or_default();
        let (Some(dn), Some(conn_id)) = (event["ThisDN"].as_str(), event["ConnID"].as_str()) else {
            return Ok(());
        };
        let party = (dn.to_string(), conn_id.to_string());
        match name {
            "EventReleased" | "EventAbandoned" => {
                if !self.parties.remove(&party) {
                    return Err(format!("{name} for {dn} in {conn_id}, not a party there"));
                }
            }
            "EventPartyInfo" | "EventAddressInfo" | "EventACK" | "EventError" => {}
            _ => {
                if let Some(previous) = event["PreviousConnID"].as_str() {
                    self.parties.remove(&(dn.to_string(), previous.to_string()));
                }
                self.parties.insert(party);
            }
        }
        Ok(())
    }

    /// The store's writes, in order.
    pub(super) fn read_store(&mut self, events: &[StoreEvent]) -> Result<(), String> {
        self.read_each(events, Self::read_store_event, "store event")
    }

    fn read_store_event(&mut self, event: &StoreEvent) -> Result<(), String> {
        let call_alive = |surfaces: &Self, call_id: &String| {
            if surfaces.store_calls.contains(call_id) {
                Ok(())
            } else {
                Err(format!(
                    "{} for store call {call_id}, not alive",
                    event.kind()
                ))
            }
        };
        match event {
            StoreEvent::CallStarted {
                call_id,
                started_ms,
                ..
            } => {
                if !self.store_calls.insert(call_id.clone()) {
                    return Err(format!("store call {call_id} started twice"));
                }
                self.store_times
                    .insert(call_id.clone(), (*started_ms, None));
            }
            StoreEvent::CallEnded { call_id, at_ms, .. } => {
                // Its recordings may finish after it: the file is finished on its own thread.
                call_alive(self, call_id)?;
                self.store_calls.remove(call_id);
                if let Some((started, answered)) = self.store_times.remove(call_id) {
                    if *at_ms < answered.unwrap_or(started) {
                        return Err(format!(
                            "store call {call_id} ended at {at_ms}, before its start \
                             ({started}) or answer ({answered:?})"
                        ));
                    }
                }
            }
            StoreEvent::CallAnswered { call_id, at_ms } => {
                call_alive(self, call_id)?;
                if let Some((started, answered)) = self.store_times.get_mut(call_id) {
                    if answered.is_some() || *at_ms < *started {
                        return Err(format!(
                            "store call {call_id} answered at {at_ms} (started {started}, \
                             answered before: {answered:?})"
                        ));
                    }
                    *answered = Some(*at_ms);
                }
            }
            StoreEvent::MeetingChanged { call_id, .. } | StoreEvent::PartyAdded { call_id, .. } => {
                call_alive(self, call_id)?
            }
            StoreEvent::RecordingStarted {
                recording_id,
                call_id,
                started_ms,
                ..
            } => {
                call_alive(self, call_id)?;
                if !self.store_recordings.insert(recording_id.clone()) {
                    return Err(format!("recording {recording_id} started twice"));
                }
                self.recording_times
                    .insert(recording_id.clone(), *started_ms);
            }
            StoreEvent::RecordingFinished {
                recording_id,
                ended_ms,
                ..
            } => {
                if !self.store_recordings.remove(recording_id) {
                    return Err(format!("recording {recording_id} finished, not started"));
                }
                let started = self.recording_times.remove(recording_id).unwrap_or(0);
                if *ended_ms < started {
                    return Err(format!(
                        "recording {recording_id} finished at {ended_ms}, before its start \
                         ({started})"
                    ));
                }
            }
            StoreEvent::RecordingFailed { recording_id, .. }
            | StoreEvent::MuteChanged { recording_id, .. } => {
                if !self.store_recordings.contains(recording_id) {
                    return Err(format!(
                        "{} of recording {recording_id}, not started",
                        event.kind()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The store's calls whose recording may be muted (the recording API's callIDs).
    pub(super) fn store_call_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.store_calls.iter().cloned().collect();
        ids.sort();
        ids
    }

    /// Once nothing is left in the core: nothing any surface's clients were told of is left
    /// either.
    pub(super) fn all_told_ended(&self) -> Result<(), String> {
        let mut unended: Vec<&String> = self.calls.difference(&self.calls_ended).collect();
        unended.sort();
        let mut unfinished: Vec<&String> =
            self.operations.difference(&self.operations_ended).collect();
        unfinished.sort();
        let mut left = Vec::new();
        for (what, count, list) in [
            (
                "connections",
                self.connections.len(),
                format!("{:?}", sorted(&self.connections)),
            ),
            (
                "conferences",
                self.conferences.len(),
                format!("{:?}", sorted(&self.conferences)),
            ),
            (
                "calls without CallEnded",
                unended.len(),
                format!("{unended:?}"),
            ),
            (
                "operations without completion",
                unfinished.len(),
                format!("{unfinished:?}"),
            ),
            (
                "recordings neither stopped nor released",
                self.recordings.len(),
                format!("{:?}", self.recordings),
            ),
            (
                "CTI parties without EventReleased",
                self.parties.len(),
                format!("{:?}", {
                    let mut p: Vec<_> = self.parties.iter().collect();
                    p.sort();
                    p
                }),
            ),
            (
                "store calls not ended",
                self.store_calls.len(),
                format!("{:?}", sorted(&self.store_calls)),
            ),
            (
                "store recordings not finished",
                self.store_recordings.len(),
                format!("{:?}", sorted(&self.store_recordings)),
            ),
        ] {
            if count > 0 {
                left.push(format!("{what}: {list}"));
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the core holds nothing, but its surfaces' clients were never told the end of:\n  {}",
                left.join("\n  ")
            ))
        }
    }
}

fn sorted(set: &HashSet<String>) -> Vec<&String> {
    let mut list: Vec<&String> = set.iter().collect();
    list.sort();
    list
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// One release, every surface: a connection `/events` released whose party the CTI stream
    /// still has in the call fails the check; released on both, it passes.
    #[test]
    fn a_release_told_on_one_surface_only_fails_the_check() {
        let established = json!({"Event": "EventEstablished", "ThisDN": "5552000", "ConnID": "0a"});
        let created = json!({"Event": "ConnectionCreated", "Seq": 1, "ConnectionId": "1"});
        let released = json!({
            "Event": "ConnectionReleased", "Seq": 2, "ConnectionId": "1",
            "DN": "5552000", "ConnID": "0a"
        });
        let mut surfaces = Surfaces::default();
        surfaces.read_cti(&[established]).unwrap();
        surfaces.read_events(&[created, released]).unwrap();
        assert!(surfaces.same_releases().is_err());
        let cti_released = json!({"Event": "EventReleased", "ThisDN": "5552000", "ConnID": "0a"});
        surfaces.read_cti(&[cti_released]).unwrap();
        surfaces.same_releases().unwrap();
        surfaces.all_told_ended().unwrap();
    }
}
