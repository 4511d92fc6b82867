//! SDP session descriptions (RFC 8866, formerly RFC 4566) and the offer/answer
//! rules of RFC 3264, narrowed to what callbridge needs: one negotiated audio
//! stream per call.
//!
//! This module owns:
//! - the SDP data model ([`SessionDescription`], [`MediaDescription`] and friends),
//! - a tolerant parser ([`SessionDescription::parse`]) and a canonical printer
//!   (`Display`: CRLF line ends, RFC line order),
//! - offer/answer negotiation ([`offer`], [`answer`], [`accept_answer`]) whose
//!   result, [`NegotiatedMedia`], is what the media engine consumes,
//! - the SDP side of SDES-SRTP (RFC 4568): choosing and writing `a=crypto`
//!   lines as strings. Keys are opaque base64 text here; decoding them and
//!   all cryptography belong to the media layer.
//!
//! It must not do I/O: no sockets, no clock, no randomness. Local addresses,
//! the o= session id/version and our SRTP keys ([`SrtpKeys`]) come from the
//! caller; the SIP layer owns the dialog (and bumps the version per RFC 3264
//! §8), the media engine owns the sockets.
//!
//! Key material never appears in an [`SdpError`] text or in the `Debug`
//! output of [`SrtpKeys`] and [`NegotiatedSrtp`]. It does appear, by
//! necessity, in the `a=crypto` lines of the SDP bodies themselves.
//!
//! The parser is lenient where real peers are sloppy (LF-only line ends,
//! trailing whitespace, unknown lines and attributes, a missing s=, odd line
//! order inside a block) and strict where a guess could send media to the
//! wrong place (the v=0 first line, m= syntax, port numbers, c= addresses).
//! It never panics, whatever the input.
//!
//! Files: `model` (the types above, [`Codec`], [`Direction`]), `parse`
//! (text to model), `print` (model to text), `negotiate` ([`offer`],
//! [`answer`], [`accept_answer`] and their settings and result), `crypto`
//! (SDES: [`SrtpPolicy`], [`SrtpKeys`], `a=crypto` lines) and `error`
//! ([`SdpError`]). Everything public is re-exported here; use the
//! `crate::sdp::X` paths.

mod crypto;
mod error;
mod model;
mod negotiate;
mod parse;
mod print;

pub use crypto::{NegotiatedSrtp, SrtpKeys, SrtpPolicy};
pub use error::SdpError;
pub use model::{
    Attribute, Codec, Connection, Direction, MediaDescription, Origin, OriginAddress, OtherLine,
    RtcpAttribute, RtpMap, SessionDescription,
};
pub use negotiate::{
    accept_answer, answer, negotiate, offer, LocalCapabilities, NegotiatedMedia, OpusParams,
    SessionVersion,
};

/// Packetisation time used when nobody states a usable one.
pub const DEFAULT_PTIME_MS: u32 = 20;
/// The dynamic payload type we give telephone-event in our offers.
pub const DEFAULT_TELEPHONE_EVENT_PT: u8 = 101;
/// The RFC 4733 events we handle: DTMF 0-9, *, #, A-D and flash.
pub const DEFAULT_TELEPHONE_EVENT_FMTP: &str = "0-16";
/// The dynamic payload type we give opus in our offers (the common choice).
pub const DEFAULT_OPUS_PT: u8 = 111;
/// The opus fmtp of our offers and answers (RFC 7587 §6.1): we decode
/// in-band FEC, take fullband audio, and want mono.
pub const OPUS_FMTP: &str = "useinbandfec=1; maxplaybackrate=48000; stereo=0";
/// The SDES crypto suites of [`LocalCapabilities::default`], best first.
pub const DEFAULT_SRTP_SUITES: [&str; 3] = [
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
];

#[cfg(test)]
mod tests;
