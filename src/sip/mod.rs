//! SIP: message model, transactions, dialogs, the user agent core and the transport.
//!
//! Owns: everything between a SIP byte on a socket and a call the control plane can bind to
//! media — `message` (parsing, framing), `transaction` (RFC 3261 §17 state machines and
//! timers), `dialog`, `ua` (calls: INVITE sessions, in-dialog requests, transfers), `routing`
//! (the `[[route]]`/trunk settings types the UA uses), `trust` (who may start calls), `digest`
//! and `transport` (tokio sockets). Its settings types live here; `app` builds them.
//! Must not: import `app`, allocate or touch media, or read the clock in `transaction` and
//! `ua` — time is a parameter there, so both run in virtual time under test.
//!
//! The path of a BYE from the socket to the released RTP port:
//!
//! 1. `transport`: `udp_receive` reads the datagram (`read_stream` reads a TCP/TLS stream and
//!    cuts one message off it with `message::frame`), `message::parse` makes it a
//!    `SipMessage`, and it is queued as an `Inbound` for the control plane. (A request that
//!    does not parse is queued as a `message::Unparsed`, which the UA answers 400, 416 or 505
//!    without a transaction.)
//! 2. `control` hands it to [`ua::UserAgent::handle_message`], which checks it (400 if
//!    malformed; a method we do not implement only for what its 405 or 501 needs, RFC 3261
//!    §8.2.1), stamps the Via and passes it to `transaction`:
//!    `TransactionLayer::handle_message` → `handle_request` opens a server non-INVITE
//!    transaction and reports `TxEvent::Request` (a retransmission is absorbed there).
//! 3. `ua`: `drain_transactions` → `on_request` sees the To tag and `on_dialog_request`
//!    matches the dialog (481 without one) and its CSeq, answers 200 OK through the
//!    transaction, and `end_call` removes the call and emits `UaOutput::CallEnded`.
//! 4. `control`: `drain_ua` takes `CallEnded` to the one release path, `release_connection`
//!    (the bound connection, reason `remote-hangup`), which calls
//!    `engine::Engine::close_connection`.
//! 5. `engine`: the worker carrying the connection gets `WorkerCommand::Close`; `close` →
//!    `finish` drops the sockets, then gives the RTP port back to the pool
//!    (`port_return.give_back`) and reports `EngineEvent::Closed`.

pub mod dialog;
pub mod digest;
pub mod message;
pub mod overload;
pub mod routing;
pub mod transaction;
pub mod transport;
pub mod trust;
pub mod ua;
