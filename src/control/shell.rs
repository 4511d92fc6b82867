//! The control plane's shell: the one tokio task that runs the core.
//!
//! Owns: the loop that reads the clock (once per turn), waits for the API's requests, the
//! transport's SIP messages, the engine's events and the core's next deadline, hands each to
//! [`Controller::handle`], and sends the SIP messages the core leaves (gathered while more input
//! waits, so that one `sendmmsg` answers a batch). The engine and the file system reach the
//! core through [`Host`].
//! Must not: decide anything: every rule lives in the core, where the tests reach it.

use tokio::sync::mpsc;

use super::core::{Controller, Input, Now};
use super::{ControlHandle, ControlRequest, Host};
use crate::engine::{Engine, EngineEvent};
use crate::sip::overload::IntakeQueues;
use crate::sip::transaction::Peer;
use crate::sip::transport::{Inbound, Received, SipTransport};
use crate::store::Store;
use crate::udp_batch;

impl Now {
    /// The machine's clocks: the control plane's only reading of them.
    pub fn read() -> Now {
        Now {
            at: std::time::Instant::now(),
            unix_ms: unix_ms(),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A handle for the API, and the queue the shell reads its requests from.
pub fn handle_for(core: &Controller<Host>) -> (ControlHandle, mpsc::Receiver<ControlRequest>) {
    let (tx, rx) = mpsc::channel(1024);
    (
        ControlHandle::new(tx, core.event_sender(), core.cti_sender()),
        rx,
    )
}

/// Where the core's agent events go: the agent gateway's queues.
pub type AgentEventSink = mpsc::UnboundedSender<(
    crate::agent_gateway::AgentId,
    crate::agent_gateway::AgentEvent,
)>;

/// How long the loop, once stopped, waits for the recorder to finish the recordings the
/// release stopped (so the store has their ends).
const RECORDINGS_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// The most turns of the control loop an answer waits for input behind it to be handled
/// before it is sent.
const GATHER_TURNS: u32 = 32;

/// What the core left to send, gathered while more input is waiting and sent when none is:
/// the answers to a batch of received messages leave in one system call, and wake a peer once
/// rather than once each. At most a `sendmmsg`'s worth, and for at most [`GATHER_TURNS`]
/// turns: inputs that leave nothing to send (ACKs, media events) do not hold an answer back
/// longer than that.
#[derive(Default)]
struct Outgoing {
    messages: Vec<(Peer, Vec<u8>)>,
    /// Turns since the oldest message gathered.
    turns: u32,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Takes what the core left this turn; true when what is gathered should go now.
    fn gather(&mut self, left: impl IntoIterator<Item = (Peer, Vec<u8>)>) -> bool {
        self.messages.extend(left);
        if self.messages.is_empty() {
            return false;
        }
        self.turns += 1;
        self.messages.len() >= udp_batch::SEND_BATCH || self.turns >= GATHER_TURNS
    }

    fn send(&mut self, transport: &SipTransport) {
        transport.send_all(&mut self.messages);
        self.turns = 0;
    }
}

/// The control loop. Returns the engine after a Shutdown request (everything released) or
/// when every input queue has closed. What the core leaves for the store goes to `store`.
pub async fn run(
    mut core: Controller<Host>,
    transport: SipTransport,
    store: Store,
    agent_events: AgentEventSink,
    mut requests: mpsc::Receiver<ControlRequest>,
    mut inbound: IntakeQueues,
    mut engine_events: mpsc::Receiver<EngineEvent>,
) -> Engine {
    // One timer for the whole loop, moved only when the core's next deadline moves. A new
    // `sleep_until` each turn registered a new timer entry each time the loop waited, and one
    // earlier than the runtime's next wake-up woke the thread parked in epoll (an eventfd
    // write, and that thread's wake-up) only to recompute its timeout: 85 % of the control
    // threads' `write`s, ~0.5 a call at 2,000 setups a second. A later deadline only extends
    // the entry, which wakes nobody.
    let mut timer = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    let mut armed: Option<std::time::Instant> = None;
    let mut outgoing = Outgoing::default();
    loop {
        let deadline = core.poll_timeout();
        if deadline != armed {
            if let Some(at) = deadline {
                timer.as_mut().reset(at.into());
            }
            armed = deadline;
        }
        // Accepted work first (responses, in-dialog requests, ACK, CANCEL: calls end cleanly
        // under load), then media events, timers and the API, new SIP work last; with nothing
        // of those ready, what is gathered goes out before the loop waits.
        let input = tokio::select! {
            biased;
            message = inbound.dialog.recv() => message.map(Input::Sip),
            event = engine_events.recv() => event.map(Input::Media),
            _ = timer.as_mut(), if armed.is_some() => Some(Input::Timeout),
            request = requests.recv() => request.map(Input::Request),
            message = inbound.new_work.recv() => message.map(Input::Sip),
            () = std::future::ready(()), if !outgoing.is_empty() => {
                outgoing.send(&transport);
                continue;
            }
        };
        let Some(input) = input else { break };
        let now = Now::read();
        if let Input::Sip(message) = &input {
            inbound.observe(message, now.at);
        }
        if let Input::Sip(Inbound {
            received: Received::StreamEnd { connection },
            source,
            ..
        }) = input
        {
            // Every message the connection carried before has been handled and its answers
            // queued on it: the connection closes after writing them.
            outgoing.send(&transport);
            transport.close_stream(source, connection);
            continue;
        }
        core.handle(now, input);
        // The store's writes first: a peer that reacts to our SIP message (and then asks the
        // recording API) finds the store's queue already holding what led to it.
        for event in core.take_store_events() {
            store.write(event);
        }
        for event in core.take_agent_events() {
            // No gateway (or it stopped): nobody polls for agent events.
            let _ = agent_events.send(event);
        }
        if outgoing.gather(std::iter::from_fn(|| core.poll_transmit())) {
            outgoing.send(&transport);
        }
        if core.is_stopped() {
            break;
        }
    }
    outgoing.send(&transport);
    let until = tokio::time::Instant::now() + RECORDINGS_DRAIN;
    while core.recordings_in_progress() > 0 {
        match tokio::time::timeout_at(until, engine_events.recv()).await {
            Ok(Some(event)) => core.handle(Now::read(), Input::Media(event)),
            _ => break,
        }
        for event in core.take_store_events() {
            store.write(event);
        }
    }
    core.into_backend().engine
}

/// A fixed point for tests that run in virtual time (the harness, the operation and timer
/// tests): read from the machine's clock here, once per test, so that the control plane
/// reads the clock in this module only.
#[cfg(test)]
pub(super) fn virtual_epoch() -> std::time::Instant {
    std::time::Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;

    fn message(n: u8) -> (Peer, Vec<u8>) {
        let peer = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5060".parse().expect("address"),
        };
        (peer, vec![n])
    }

    #[test]
    fn an_answer_waits_at_most_gather_turns_behind_input_that_sends_nothing() {
        let mut outgoing = Outgoing::default();
        assert!(!outgoing.gather([]), "nothing gathered, nothing to send");
        assert!(!outgoing.gather([message(1)]));
        for turn in 2..GATHER_TURNS {
            assert!(!outgoing.gather([]), "turn {turn}");
        }
        assert!(
            outgoing.gather([]),
            "the answer goes on turn {GATHER_TURNS}"
        );
        assert_eq!(outgoing.messages.len(), 1);
    }

    #[test]
    fn a_sendmmsgs_worth_goes_at_once() {
        let mut outgoing = Outgoing::default();
        assert!(!outgoing.gather((0..udp_batch::SEND_BATCH as u8 - 1).map(message)));
        assert!(outgoing.gather([message(99)]));
    }
}
