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
    // What the core leaves to send, gathered while more input is waiting and sent when none
    // is (or a `sendmmsg`'s worth has gathered): the answers to a batch of received messages
    // leave in one system call, and wake a peer once rather than once each.
    let mut outgoing: Vec<(Peer, Vec<u8>)> = Vec::with_capacity(udp_batch::SEND_BATCH);
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
                transport.send_all(&mut outgoing);
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
            transport.send_all(&mut outgoing);
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
        outgoing.extend(std::iter::from_fn(|| core.poll_transmit()));
        if outgoing.len() >= udp_batch::SEND_BATCH {
            transport.send_all(&mut outgoing);
        }
        if core.is_stopped() {
            break;
        }
    }
    transport.send_all(&mut outgoing);
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
