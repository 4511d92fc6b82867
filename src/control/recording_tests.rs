//! The recording view of the control core, in virtual time: what the store is told about a
//! recorded call, whichever surface releases it.

use std::time::Duration;

use super::harness::*;
use super::{ControlRequest, MediaAction};
use crate::store::{Direction, MuteChannels, RecordPolicy, RecordingOrigin, StoreEvent};

/// A call to the recorded `rec` route, answered: the peer and its connection.
fn recorded_call(h: &mut Harness, name: &str) -> (PeerCall, u32) {
    let mut peer = PeerCall::new("rec", name).with_dn("5557001");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    let ok = response(&h.take_wire(), 200);
    peer.learn(&ok);
    h.sip_from(PEER, peer.ack());
    let id = h
        .core
        .call_connections
        .values()
        .copied()
        .max()
        .expect("a connection");
    (peer, id)
}

fn kinds(events: &[StoreEvent]) -> Vec<&'static str> {
    events.iter().map(StoreEvent::kind).collect()
}

#[test]
fn a_recorded_call_is_a_store_call_with_a_two_channel_recording_from_answer_to_bye() {
    let mut h = Harness::new();
    let (mut peer, connection) = recorded_call(&mut h, "rec-bye");
    let events = h.core.take_store_events();
    assert_eq!(
        kinds(&events),
        ["CallStarted", "CallAnswered", "RecordingStarted"]
    );
    let StoreEvent::CallStarted {
        call_id,
        direction,
        platform_call_id,
        native_id,
        calling,
        called,
        policy,
        ..
    } = &events[0]
    else {
        unreachable!()
    };
    assert_eq!(*direction, Direction::Inbound);
    assert_eq!(platform_call_id.as_deref(), Some(peer.call_id.as_str()));
    assert_eq!(native_id.as_deref().map(str::len), Some(16), "the ConnID");
    assert_eq!((calling.as_str(), called.as_str()), ("5557001", "rec"));
    assert_eq!(*policy, RecordPolicy::Always);
    let StoreEvent::RecordingStarted {
        call_id: recorded,
        path,
        channels,
        origin,
        ..
    } = &events[2]
    else {
        unreachable!()
    };
    assert_eq!(recorded, call_id);
    assert_eq!((*channels, *origin), (2, RecordingOrigin::Policy));
    assert!(path.exists(), "the file is created at the answer");
    assert!(path.to_string_lossy().ends_with(&format!("{call_id}.wav")));
    assert_eq!(h.events_named("RecordingStarted").len(), 1);

    // Muting reaches the recorder and the store.
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.input(super::Input::Request(ControlRequest::MuteRecording {
        call_id: call_id.clone(),
        channels: MuteChannels::BOTH,
        reply,
    }));
    assert_eq!(answer.blocking_recv().expect("answered"), Ok(()));
    let operation = h
        .core
        .tracked_recordings
        .keys()
        .copied()
        .next()
        .expect("tracked");
    assert_eq!(
        h.core.engine.mutes,
        [(u64::from(operation), true, true)],
        "both channels muted in the recorder"
    );
    assert!(matches!(
        &h.core.take_store_events()[..],
        [StoreEvent::MuteChanged {
            channels: MuteChannels::BOTH,
            ..
        }]
    ));

    // The BYE ends the call; the recorder's finish ends the recording.
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    h.settle();
    let events = h.core.take_store_events();
    assert_eq!(
        kinds(&events),
        ["CallEnded", "RecordingFinished"],
        "{events:?}"
    );
    assert!(matches!(&events[0], StoreEvent::CallEnded { cause, .. } if cause == "remote-hangup"));
    let _ = connection;
    h.assert_no_leaks();
}

#[test]
fn delete_connection_and_a_cti_release_end_the_store_call_the_same_way() {
    let mut h = Harness::new();
    let (_peer, connection) = recorded_call(&mut h, "rec-api");
    h.core.take_store_events();
    h.action(MediaAction::Delete {
        connection: Some(connection),
        conference: None,
    })
    .expect("deleted");
    h.settle();
    let events = h.core.take_store_events();
    assert_eq!(kinds(&events), ["CallEnded", "RecordingFinished"]);
    assert!(matches!(&events[0], StoreEvent::CallEnded { cause, .. } if cause == "api-request"));
    h.advance(Duration::from_secs(1));
    h.assert_no_leaks();
}

#[test]
fn an_unrecorded_route_is_a_store_call_without_a_recording_and_mute_is_refused() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "plain");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    peer.learn(&response(&h.take_wire(), 200));
    h.sip_from(PEER, peer.ack());
    let events = h.core.take_store_events();
    assert_eq!(kinds(&events), ["CallStarted", "CallAnswered"]);
    let StoreEvent::CallStarted { call_id, .. } = &events[0] else {
        unreachable!()
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.input(super::Input::Request(ControlRequest::MuteRecording {
        call_id: call_id.clone(),
        channels: MuteChannels::LEFT,
        reply,
    }));
    assert!(answer.blocking_recv().expect("answered").is_err());
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    h.settle();
    assert_eq!(kinds(&h.core.take_store_events()), ["CallEnded"]);
    h.assert_no_leaks();
}

#[test]
fn a_recording_file_that_cannot_be_made_stops_the_recording_not_the_call() {
    let mut h = Harness::new();
    // A regular file where the recording directory should be: nothing can be created in it.
    let blocker = h
        .core
        .recording_settings
        .dir
        .with_file_name("not-a-directory");
    std::fs::write(&blocker, b"x").expect("blocker file");
    h.core.recording_settings.dir = blocker.join("calls");
    let (mut peer, _connection) = recorded_call(&mut h, "rec-nodir");
    let events = h.core.take_store_events();
    assert_eq!(
        kinds(&events),
        ["CallStarted", "CallAnswered"],
        "{events:?}"
    );
    let stopped = h.events_named("RecordingStopped");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert!(stopped[0]["Error"]
        .as_str()
        .unwrap_or("")
        .contains("cannot"));
    assert_eq!(h.core.recording_failures, 1);
    // The call itself is answered and ends normally.
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    h.settle();
    assert_eq!(kinds(&h.core.take_store_events()), ["CallEnded"]);
    h.assert_no_leaks();
}
