//! SIP message model, parser and printer (RFC 3261 §7, §19, §20, §25; RFC 4475 torture cases).
//!
//! Owns: turning bytes from a transport into typed `Request`/`Response` values and back.
//! Must not: know about transactions, dialogs, sockets or the clock.
//!
//! Parsing policy: the start line and header *syntax* are checked by [`parse`]; typed header values
//! (Via, From, CSeq, ...) are parsed on demand by the accessors, so a message with an odd header
//! that nobody asks about still gets through. Compact header names are expanded to their full
//! names at parse time and list-valued headers (Via, Contact, Route, ...) that carry several
//! comma-separated values on one line are split into one `Header` each, so inner code only ever
//! sees one value per `Header`. Unknown methods parse as `Method::Extension` (so the UA can answer
//! 501), never as an error.
//!
//! Robustness: everything here runs on bytes straight off the network, so no input may make it
//! panic. Slices are only taken at ASCII delimiters (always char boundaries), sizes use checked
//! arithmetic, and error details quote at most a short excerpt of the input.
//!
//! Files: `model` (the message types), `parse` (bytes to messages, stream framing), `print`
//! (messages to bytes), `unparsed` (what is left of a request [`parse`] refused, to answer it),
//! `headers` (the header section and the Via and CSeq values), `uri`
//! (URIs, name-addrs and their parameters), `error` ([`ParseError`]) and `lex` (character
//! classes and the cursor the parsers share). Everything public is re-exported here; use the
//! `crate::sip::message::X` paths.

mod error;
mod headers;
mod lex;
mod model;
mod parse;
mod print;
mod unparsed;
mod uri;

pub use error::ParseError;
pub use headers::{CSeq, Header, Headers, Via, ViaRef};
pub use lex::is_token;
pub use model::{Method, Request, Response, SipMessage};
pub use parse::{frame, parse, Frame, MAX_HEAD_LEN, MAX_STREAM_BODY};
pub use unparsed::Unparsed;
pub use uri::{find_param, Host, NameAddr, Param, Uri};

#[cfg(test)]
mod tests;
