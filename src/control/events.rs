//! The event stream: every state change the control plane makes, as typed events.
//!
//! Owns: the event vocabulary and its JSON form. Events fan out through a broadcast channel to
//! `/events` subscribers; a slow subscriber loses old events (it is told how many), it never
//! slows the control plane.
//! Must not: carry anything that is not already decided — events describe, they do not command.

use serde::Serialize;
use tokio::sync::broadcast;

/// Why a connection (and its call, if any) was released. Serialized in kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseReason {
    /// DeleteConnection from the API.
    ApiRequest,
    /// The peer hung up (BYE received).
    RemoteHangup,
    /// The peer cancelled the INVITE before it was answered.
    Cancelled,
    /// We answered but the ACK never came (RFC 3261 §13.3.1.4).
    AckTimeout,
    /// The INVITE transaction failed: we rejected it, or the peer never sent anything usable.
    InviteFailed,
    /// ACK carried no usable SDP answer to our offer.
    BadAnswer,
    /// A ReserveConnection was never completed with CreateConnection.
    ReserveTimeout,
    /// The server is shutting down.
    Shutdown,
    /// No RTP arrived for `[media] rtp_timeout_s`.
    RtpTimeout,
    /// The connection's conference was released (DeleteConnection with only a ConferenceId).
    ConferenceReleased,
    /// The conference's last connection left or was released.
    LastConnectionLeft,
    /// An `announcement` call's prompt has played: we hang up.
    AnnouncementComplete,
    /// A temporary conference connection's operation is over.
    OperationComplete,
    /// The call was transferred away (REFER accepted, or our BlindTransfer completed).
    Transferred,
    /// An INVITE with Replaces took the call's place (attended transfer).
    Replaced,
    /// A call we placed was refused, not answered, or answered without usable media.
    CallFailed,
    /// The session timer (RFC 4028) ran out without a refresh.
    SessionExpired,
}

/// One thing that happened. `Event` in JSON names the variant; ids are strings as in the API.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "Event")]
pub enum Event {
    ConnectionReserved {
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "MediaRxIP")]
        media_rx_ip: String,
        #[serde(rename = "MediaRxPort")]
        media_rx_port: u16,
    },
    ConnectionCreated {
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "MediaRxIP")]
        media_rx_ip: String,
        #[serde(rename = "MediaRxPort")]
        media_rx_port: u16,
        #[serde(rename = "MediaTxIP", skip_serializing_if = "Option::is_none")]
        media_tx_ip: Option<String>,
        #[serde(rename = "MediaTxPort", skip_serializing_if = "Option::is_none")]
        media_tx_port: Option<u16>,
        #[serde(rename = "CallId", skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
    },
    ConnectionModified {
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "MediaTxIP", skip_serializing_if = "Option::is_none")]
        media_tx_ip: Option<String>,
        #[serde(rename = "MediaTxPort", skip_serializing_if = "Option::is_none")]
        media_tx_port: Option<u16>,
    },
    /// The implicit or explicit DeleteConnection: which connection, why, and its final counters.
    ConnectionReleased {
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "Reason")]
        reason: ReleaseReason,
        #[serde(rename = "CallId", skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        #[serde(rename = "RtpPacketsReceived")]
        rtp_packets_received: u64,
        #[serde(rename = "RtpPacketsSent")]
        rtp_packets_sent: u64,
        /// RFC 3550 cumulative loss of the received stream.
        #[serde(rename = "PacketsLost")]
        packets_lost: i64,
        /// Interarrival jitter of the received stream, ms.
        #[serde(rename = "JitterMs")]
        jitter_ms: f64,
        #[serde(rename = "ConcealedFrames")]
        concealed_frames: u64,
        /// The conference the connection was in when it was released.
        #[serde(rename = "ConferenceId", skip_serializing_if = "Option::is_none")]
        conference_id: Option<String>,
        /// The call the released party was in (the party model's ConnID), for a party.
        #[serde(rename = "ConnID", skip_serializing_if = "Option::is_none")]
        conn_id: Option<String>,
        /// The released party's number.
        #[serde(rename = "DN", skip_serializing_if = "Option::is_none")]
        dn: Option<String>,
        /// Who released it: the party itself, another party, an API client or the system.
        #[serde(rename = "ReleasedBy", skip_serializing_if = "Option::is_none")]
        released_by: Option<super::party::Actor>,
    },
    /// CreateConference (or the first caller of a `conference` route) made a conference.
    ConferenceCreated {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "Hairpin")]
        hairpin: bool,
        /// Mixing rate, Hz.
        #[serde(rename = "SampleRate")]
        sample_rate: u32,
        /// The room name of a `conference` route (`conf=<name>`).
        #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A connection joined a conference (CreateConference's first participant included).
    ConferenceJoined {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(flatten)]
        attributes: ConfereeAttributes,
    },
    /// A conferee's attributes changed (SetConfereeAttribute).
    ConfereeAttributesChanged {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(flatten)]
        attributes: ConfereeAttributes,
    },
    /// A connection left a conference: LeaveConference or DeleteConnection with both ids
    /// (`api-request`, the connection stays), or its release (the release's reason).
    ConferenceLeft {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "Reason")]
        reason: ReleaseReason,
    },
    /// A hairpinned (two-party) conference became a mixed conference.
    ConferencePromoted {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
    },
    /// A conference is gone: released by the API (`api-request`, with its connections) or
    /// automatically when its last connection left (`last-connection-left`).
    ConferenceReleased {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
        #[serde(rename = "Reason")]
        reason: ReleaseReason,
        #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A conferee started talking (energy with hang-over, rate-limited).
    TalkerStarted {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
    },
    /// A conferee stopped talking.
    TalkerStopped {
        #[serde(rename = "ConferenceId")]
        conference_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
    },
    #[serde(rename = "Play_Complete")]
    PlayComplete(OperationDone),
    #[serde(rename = "Play_Failed")]
    PlayFailed(OperationDone),
    #[serde(rename = "PlayTone_Complete")]
    PlayToneComplete(OperationDone),
    #[serde(rename = "PlayTone_Failed")]
    PlayToneFailed(OperationDone),
    #[serde(rename = "GatherDigits_Complete")]
    GatherDigitsComplete(OperationDone),
    #[serde(rename = "GatherDigits_Failed")]
    GatherDigitsFailed(OperationDone),
    #[serde(rename = "Record_Complete")]
    RecordComplete(OperationDone),
    #[serde(rename = "Record_Failed")]
    RecordFailed(OperationDone),
    #[serde(rename = "DetectSilence_Complete")]
    DetectSilenceComplete(OperationDone),
    #[serde(rename = "DetectSilence_Failed")]
    DetectSilenceFailed(OperationDone),
    #[serde(rename = "DetectNonSilence_Complete")]
    DetectNonSilenceComplete(OperationDone),
    #[serde(rename = "DetectNonSilence_Failed")]
    DetectNonSilenceFailed(OperationDone),
    /// Call Control: the far end told us where to send (Tx applied to the connection).
    StartTx {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "MmsId")]
        mms_id: u32,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "MediaTxIP")]
        media_tx_ip: String,
        #[serde(rename = "MediaTxPort")]
        media_tx_port: u16,
        #[serde(rename = "MediaTxCodec")]
        media_tx_codec: String,
        #[serde(rename = "MediaTxFramesize")]
        media_tx_framesize: u32,
    },
    /// Call Control: the far end asked us to stop sending (hold).
    StopTx {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "MmsId")]
        mms_id: u32,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
    },
    /// Call Control: we told the far end where to send.
    StartRx {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "MmsId")]
        mms_id: u32,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "MediaRxIP")]
        media_rx_ip: String,
        #[serde(rename = "MediaRxPort")]
        media_rx_port: u16,
        #[serde(rename = "MediaRxCodec")]
        media_rx_codec: String,
        #[serde(rename = "MediaRxFramesize")]
        media_rx_framesize: u32,
    },
    /// Call Control: digits signalled on an application call (SIP INFO).
    GotDigits {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "Digits")]
        digits: String,
    },
    /// The far end ended an `application` call (Call Control).
    RemoteHangup {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "EndReason")]
        end_reason: String,
    },
    /// MakeCall's call was answered (Call Control).
    #[serde(rename = "MakeCall_Complete")]
    MakeCallComplete {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "MmsId")]
        mms_id: u32,
        #[serde(rename = "To")]
        to: String,
        #[serde(rename = "From")]
        from: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "ConferenceId", skip_serializing_if = "Option::is_none")]
        conference_id: Option<String>,
        #[serde(rename = "MediaTxIP", skip_serializing_if = "Option::is_none")]
        media_tx_ip: Option<String>,
        #[serde(rename = "MediaTxPort", skip_serializing_if = "Option::is_none")]
        media_tx_port: Option<u16>,
        #[serde(rename = "MediaTxCodec", skip_serializing_if = "Option::is_none")]
        media_tx_codec: Option<String>,
        #[serde(rename = "MediaTxFramesize", skip_serializing_if = "Option::is_none")]
        media_tx_framesize: Option<u32>,
    },
    /// MakeCall's call failed; its CallId is defunct.
    #[serde(rename = "MakeCall_Failed")]
    MakeCallFailed {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "To")]
        to: String,
        #[serde(rename = "From")]
        from: String,
        #[serde(rename = "EndReason")]
        end_reason: String,
        /// The SIP final status, when the far end gave one.
        #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    /// A call took another's place (inbound REFER or INVITE with Replaces): same conference,
    /// same role. `CallId` is the new call; the old one ends with reason transferred/replaced.
    CallChanged {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "ReplacesCallId")]
        replaces_call_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "To")]
        to: String,
        #[serde(rename = "From")]
        from: String,
    },
    /// A transfer asked of us (REFER) or by the application (BlindTransfer) failed: the call
    /// stays as it was.
    TransferFailed {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "Status")]
        status: u16,
    },
    IncomingCall {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "From")]
        from: String,
        #[serde(rename = "To")]
        to: String,
        #[serde(rename = "Service")]
        service: String,
    },
    CallAnswered {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "ConnectionId")]
        connection_id: String,
    },
    /// An RFC 4733 digit arrived on a connection.
    DigitReceived {
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "CallId", skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        #[serde(rename = "Digit")]
        digit: String,
        #[serde(rename = "DurationMs")]
        duration_ms: u32,
    },
    /// The call's dialog is over (BYE either way, CANCEL, failure).
    CallEnded {
        #[serde(rename = "CallId")]
        call_id: String,
        #[serde(rename = "Reason")]
        reason: ReleaseReason,
    },
    /// A call's recording (its route's or trunk's `record` policy) began.
    RecordingStarted {
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        /// The recording API's callID.
        #[serde(rename = "RecordingCallId")]
        recording_call_id: String,
        #[serde(rename = "RecordingId")]
        recording_id: String,
    },
    /// A call's recording stopped before the call ended (the disk is full, the file could not
    /// be written or created); the call goes on unrecorded.
    RecordingStopped {
        #[serde(rename = "ConnectionId")]
        connection_id: String,
        #[serde(rename = "RecordingCallId")]
        recording_call_id: String,
        #[serde(rename = "Error")]
        error: String,
    },
}

impl Event {
    /// The variant name, used as the SSE `event:` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ConnectionReserved { .. } => "ConnectionReserved",
            Event::ConnectionCreated { .. } => "ConnectionCreated",
            Event::ConnectionModified { .. } => "ConnectionModified",
            Event::ConnectionReleased { .. } => "ConnectionReleased",
            Event::IncomingCall { .. } => "IncomingCall",
            Event::MakeCallComplete { .. } => "MakeCall_Complete",
            Event::MakeCallFailed { .. } => "MakeCall_Failed",
            Event::CallChanged { .. } => "CallChanged",
            Event::TransferFailed { .. } => "TransferFailed",
            Event::RemoteHangup { .. } => "RemoteHangup",
            Event::StartTx { .. } => "StartTx",
            Event::StopTx { .. } => "StopTx",
            Event::StartRx { .. } => "StartRx",
            Event::GotDigits { .. } => "GotDigits",
            Event::CallAnswered { .. } => "CallAnswered",
            Event::DigitReceived { .. } => "DigitReceived",
            Event::CallEnded { .. } => "CallEnded",
            Event::RecordingStarted { .. } => "RecordingStarted",
            Event::RecordingStopped { .. } => "RecordingStopped",
            Event::ConferenceCreated { .. } => "ConferenceCreated",
            Event::ConferenceJoined { .. } => "ConferenceJoined",
            Event::ConfereeAttributesChanged { .. } => "ConfereeAttributesChanged",
            Event::ConferenceLeft { .. } => "ConferenceLeft",
            Event::ConferencePromoted { .. } => "ConferencePromoted",
            Event::ConferenceReleased { .. } => "ConferenceReleased",
            Event::TalkerStarted { .. } => "TalkerStarted",
            Event::TalkerStopped { .. } => "TalkerStopped",
            Event::PlayComplete(_) => "Play_Complete",
            Event::PlayFailed(_) => "Play_Failed",
            Event::PlayToneComplete(_) => "PlayTone_Complete",
            Event::PlayToneFailed(_) => "PlayTone_Failed",
            Event::GatherDigitsComplete(_) => "GatherDigits_Complete",
            Event::GatherDigitsFailed(_) => "GatherDigits_Failed",
            Event::RecordComplete(_) => "Record_Complete",
            Event::RecordFailed(_) => "Record_Failed",
            Event::DetectSilenceComplete(_) => "DetectSilence_Complete",
            Event::DetectSilenceFailed(_) => "DetectSilence_Failed",
            Event::DetectNonSilenceComplete(_) => "DetectNonSilence_Complete",
            Event::DetectNonSilenceFailed(_) => "DetectNonSilence_Failed",
        }
    }
}

/// The parameters of an `<Action>_Complete` / `<Action>_Failed` event (reference §4).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OperationDone {
    #[serde(rename = "ConnectionId")]
    pub connection_id: String,
    #[serde(rename = "OperationId")]
    pub operation_id: String,
    /// `_Complete` only: why it ended (`eod`, `maxtime`, `digit`, `userstop`, `autostop`, ...).
    #[serde(
        rename = "TerminationCondition",
        skip_serializing_if = "Option::is_none"
    )]
    pub termination_condition: Option<String>,
    /// Milliseconds the operation ran.
    #[serde(rename = "ElapsedTime", skip_serializing_if = "Option::is_none")]
    pub elapsed_time: Option<u64>,
    /// GatherDigits: the digits gathered.
    #[serde(rename = "Digits", skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
    /// Record: the file, relative to the recording directory.
    #[serde(rename = "Filename", skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// `_Failed` only.
    #[serde(rename = "ResultCode", skip_serializing_if = "Option::is_none")]
    pub result_code: Option<String>,
    /// The action's `State`, given back.
    #[serde(rename = "State", skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A conferee's attributes, in the API's names.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ConfereeAttributes {
    #[serde(rename = "Mute")]
    pub mute: bool,
    #[serde(rename = "ReceiveOnly")]
    pub receive_only: bool,
    #[serde(rename = "Monitor")]
    pub monitor: bool,
    #[serde(rename = "TariffTone")]
    pub tariff_tone: bool,
    #[serde(rename = "Coach")]
    pub coach: bool,
    #[serde(rename = "Pupil")]
    pub pupil: bool,
}

/// An event with its place in the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// Monotonic sequence number; a gap tells a subscriber it lost events.
    #[serde(rename = "Seq")]
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    #[serde(rename = "TimeMs")]
    pub time_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// The sending side of the stream, owned by the control plane.
///
/// An event the core knows it owes but cannot write yet (a `ConnectionReleased` waiting for
/// the worker's final statistics) holds its place: later events queue behind it, so the
/// stream keeps the order in which things happened.
pub struct EventBus {
    sender: broadcast::Sender<Envelope>,
    next_seq: u64,
    /// The time of the input being handled (the core sets it; the bus reads no clock).
    time_ms: u64,
    /// Events behind a held place, oldest first.
    held: std::collections::VecDeque<Held>,
}

/// A place in the stream: an event ready to go, or one still owed (by its key).
enum Held {
    Ready(u64, Event),
    Owed(u32, u64),
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        let (sender, _) = broadcast::channel(capacity);
        EventBus {
            sender,
            next_seq: 1,
            time_ms: 0,
            held: std::collections::VecDeque::new(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.sender.subscribe()
    }

    /// A handle the API keeps to subscribe without going through the control task.
    pub fn sender(&self) -> broadcast::Sender<Envelope> {
        self.sender.clone()
    }

    /// The time events emitted from now on carry.
    pub fn set_time(&mut self, time_ms: u64) {
        self.time_ms = time_ms;
    }

    /// Whether an event built now would reach anyone: a subscriber reads the stream, or an
    /// owed event holds its order (what waits behind it goes out when it is filled, and a
    /// subscriber may have come by then).
    pub fn wanted(&self) -> bool {
        !self.held.is_empty() || self.sender.receiver_count() > 0
    }

    /// [`EventBus::emit`] for an event built only when it is [wanted](EventBus::wanted): with
    /// nobody subscribed (an appliance serving routes, no application connected) a call's five
    /// events were built — numbers and addresses turned into strings — only to be dropped.
    pub fn emit_with(&mut self, build: impl FnOnce() -> Event) {
        if self.wanted() {
            self.emit(build());
        }
    }

    pub fn emit(&mut self, event: Event) {
        if self.held.is_empty() {
            self.send(self.time_ms, event);
        } else {
            self.held.push_back(Held::Ready(self.time_ms, event));
        }
    }

    /// Holds a place for the event owed under `key`: events emitted after it wait for it.
    /// Nothing to hold when nothing is [wanted](EventBus::wanted): the event, if a subscriber
    /// has come by the time it is filled, goes out then.
    pub fn hold(&mut self, key: u32) {
        if self.wanted() {
            self.held.push_back(Held::Owed(key, self.time_ms));
        }
    }

    /// [`EventBus::fill`] for an event built only when it has a place or is
    /// [wanted](EventBus::wanted).
    pub fn fill_with(&mut self, key: u32, build: impl FnOnce() -> Event) {
        if self.wanted() {
            self.fill(key, build());
        }
    }

    /// The event owed under `key`, in its place (with the time its place was taken); sends
    /// every event no longer behind an owed one.
    pub fn fill(&mut self, key: u32, event: Event) {
        let place = self
            .held
            .iter()
            .position(|h| matches!(h, Held::Owed(k, _) if *k == key));
        match place {
            Some(i) => {
                let Held::Owed(_, time_ms) = self.held[i] else {
                    unreachable!("position found an owed place")
                };
                self.held[i] = Held::Ready(time_ms, event);
            }
            None => self.emit(event),
        }
        while let Some(Held::Ready(..)) = self.held.front() {
            let Some(Held::Ready(time_ms, event)) = self.held.pop_front() else {
                unreachable!("front is ready")
            };
            self.send(time_ms, event);
        }
    }

    /// Owed events not written yet (for leak checks).
    pub fn owed(&self) -> usize {
        self.held
            .iter()
            .filter(|h| matches!(h, Held::Owed(..)))
            .count()
    }

    fn send(&mut self, time_ms: u64, event: Event) {
        tracing::debug!(event = event.name(), "event");
        let envelope = Envelope {
            seq: self.next_seq,
            time_ms,
            event,
        };
        self.next_seq += 1;
        // No subscribers is not an error: events are a stream, not a queue.
        let _ = self.sender.send(envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_event_json_uses_api_names() {
        let env = Envelope {
            seq: 7,
            time_ms: 1,
            event: Event::ConnectionReleased {
                connection_id: "12".into(),
                reason: ReleaseReason::RemoteHangup,
                call_id: Some("3".into()),
                rtp_packets_received: 5,
                rtp_packets_sent: 5,
                packets_lost: 1,
                jitter_ms: 2.5,
                concealed_frames: 1,
                conference_id: None,
                conn_id: Some("0001".into()),
                dn: Some("5551001".into()),
                released_by: Some(crate::control::party::Actor::Remote),
            },
        };
        let v = serde_json::to_value(&env).unwrap();
        assert_eq!(v["Event"], "ConnectionReleased");
        assert_eq!(v["ConnectionId"], "12");
        assert_eq!(v["Reason"], "remote-hangup");
        assert_eq!(v["CallId"], "3");
        assert_eq!(v["Seq"], 7);
        assert_eq!(v["ConnID"], "0001");
        assert_eq!(v["DN"], "5551001");
        assert_eq!(v["ReleasedBy"]["Kind"], "remote");
    }

    fn talker(n: u32) -> Event {
        Event::TalkerStarted {
            conference_id: "1".into(),
            connection_id: n.to_string(),
        }
    }

    #[test]
    fn events_behind_an_owed_one_wait_for_it_and_keep_their_order_and_times() {
        let mut bus = EventBus::new(16);
        let mut rx = bus.subscribe();
        bus.set_time(100);
        bus.emit(talker(1));
        bus.hold(7);
        bus.set_time(200);
        bus.emit(talker(2));
        bus.hold(8);
        bus.emit(talker(3));
        let first = rx.try_recv().unwrap();
        assert_eq!(first.time_ms, 100);
        assert!(rx.try_recv().is_err(), "held behind 7");
        assert_eq!(bus.owed(), 2);
        bus.set_time(300);
        bus.fill(8, talker(8));
        assert!(rx.try_recv().is_err(), "still behind 7");
        bus.fill(7, talker(7));
        let rest: Vec<(u64, u64, String)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| {
                let Event::TalkerStarted { connection_id, .. } = e.event else {
                    panic!("{e:?}")
                };
                (e.seq, e.time_ms, connection_id)
            })
            .collect();
        let ids: Vec<&str> = rest.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(ids, ["7", "2", "8", "3"]);
        // The owed events carry the time their place was taken; seq follows the stream.
        assert_eq!(rest[0].1, 100);
        assert_eq!(rest[2].1, 200);
        assert_eq!(rest.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3, 4, 5]);
        assert_eq!(bus.owed(), 0);
    }

    /// With nobody subscribed an event is not built and no place is held; a subscriber gets
    /// every event from its subscription on, an owed one included when it was held before.
    #[test]
    fn events_are_built_only_for_a_subscriber_or_behind_an_owed_one() {
        let mut bus = EventBus::new(16);
        let mut built = 0;
        bus.emit_with(|| {
            built += 1;
            talker(1)
        });
        bus.hold(7);
        assert_eq!((built, bus.owed()), (0, 0), "nobody subscribed");
        let mut rx = bus.subscribe();
        // Owed before the subscription, not held: it goes out when it comes.
        bus.fill_with(7, || talker(7));
        bus.emit_with(|| talker(2));
        bus.hold(8);
        assert_eq!(bus.owed(), 1);
        assert_eq!(talkers(&mut rx), ["7", "2"]);
        drop(rx);
        // Behind the held place an event is still built (a subscriber may come before 8).
        bus.emit_with(|| {
            built += 1;
            talker(3)
        });
        assert_eq!(built, 1);
        rx = bus.subscribe();
        bus.fill_with(8, || talker(8));
        assert_eq!(talkers(&mut rx), ["8", "3"]);
        assert_eq!(bus.owed(), 0);
    }

    /// The connection ids of the talker events waiting in `rx`.
    fn talkers(rx: &mut broadcast::Receiver<Envelope>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e.event {
                Event::TalkerStarted { connection_id, .. } => connection_id,
                other => panic!("{other:?}"),
            })
            .collect()
    }
}
