//! What a media session is built from and how it refuses: the mode, the negotiated stream
//! format, the SRTP keys, the [`SessionConfig`] and [`SessionError`].
//!
//! Owns: plain data types handed in by the worker (built from SDP by the control plane).
//! Must not: hold session state or do work; the session reads these at construction and on
//! re-targeting only.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::codec::CodecError;
use crate::media::dtmf::DtmfError;
use crate::media::srtp::SrtpProfile;
use crate::sdp::{Codec, OpusParams};

/// How a session treats the audio it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// Receive, account and report; send no audio.
    Idle,
    /// Play the received audio back to its sender, through jitter buffer, decoder and encoder.
    Echo,
}

/// Where a session accepts RTP from (RFC 3550 leaves it to the application; RTP bleed is what
/// happens when any source is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtpSource {
    /// Learn the source once: the SDP address at once; any other address (a peer behind NAT
    /// that announced its private address) after [`LEARN_PACKETS`] packets in sequence of a
    /// negotiated payload type from one SSRC, or one authenticated SRTP packet. Never
    /// re-learned to another source for the rest of the call (a new SDP address starts over).
    #[default]
    Learn,
    /// Only the SDP address, ever.
    Strict,
}

/// Packets in sequence, from one address and SSRC, that teach a session a source other than
/// its SDP address: one stray or sprayed packet cannot take a call's media over.
pub const LEARN_PACKETS: u8 = 3;

impl RtpSource {
    /// `"learn"` or `"strict"`, as configuration spells it.
    pub fn from_name(name: &str) -> Option<RtpSource> {
        match name {
            "learn" => Some(RtpSource::Learn),
            "strict" => Some(RtpSource::Strict),
            _ => None,
        }
    }
}

/// The negotiated format of the audio stream: what we receive, and what we send when it
/// differs (transcoding through linear PCM, resampled when the rates differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    pub codec: Codec,
    pub payload_type: u8,
    pub ptime_ms: u32,
    pub telephone_event_pt: Option<u8>,
    /// The codec and payload type we send; None = the same as received.
    pub send: Option<(Codec, u8)>,
    /// What the peer's Opus decoder asked of our encoder (its SDP fmtp, RFC 7587 §6.1: the
    /// widest band it plays back, whether it uses in-band FEC); the RFC's defaults when it
    /// said nothing. Other codecs ignore it.
    pub peer_opus: OpusParams,
}

impl StreamFormat {
    /// The codec and payload type of what we send.
    pub fn sending(&self) -> (Codec, u8) {
        self.send.unwrap_or((self.codec, self.payload_type))
    }
}

/// SRTP master keys for both directions (SDES: theirs decrypts, ours encrypts).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub profile: SrtpProfile,
    pub inbound_key: Vec<u8>,
    pub inbound_salt: Vec<u8>,
    pub outbound_key: Vec<u8>,
    pub outbound_salt: Vec<u8>,
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Everything a session is created with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub local_ssrc: u32,
    /// RTCP CNAME.
    pub cname: String,
    /// NTP time (RFC 3550 64-bit) at the `now` given to [`MediaSession::new`].
    ///
    /// [`MediaSession::new`]: super::MediaSession::new
    pub ntp_at_start: u64,
    /// None until media is negotiated: packets are counted but not decoded.
    pub format: Option<StreamFormat>,
    pub mode: SessionMode,
    /// Where the peer said it receives RTP (SDP / MediaTxIP).
    pub remote_rtp: Option<SocketAddr>,
    /// Where the peer receives RTCP (a=rtcp, else RTP port + 1; the RTP address with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// Where RTP is accepted from: learned once, or the SDP address only.
    pub source: RtpSource,
    pub srtp: Option<SrtpKeys>,
    /// No RTP for this long → [`SessionEvent::RtpTimeout`]; None disables.
    ///
    /// [`SessionEvent::RtpTimeout`]: super::SessionEvent::RtpTimeout
    pub rtp_timeout: Option<Duration>,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
    pub rtcp_interval: Duration,
    /// Seed for RTCP interval randomization (deterministic in tests).
    pub seed: u64,
    /// Also detect DTMF tones in the decoded audio (callers that send tones, not RFC 4733);
    /// G.711 and G.722 streams (8/16 kHz).
    pub inband_dtmf: bool,
    /// Playout ticks fall on `tick_epoch + k * ptime`: every session of a worker ticks at the
    /// same instants, so one wake-up serves them all (instead of one per session).
    pub tick_epoch: Instant,
    /// The worker reads each packet as it arrives (not at its tick): an echo that can pass the
    /// caller's G.711 untouched sends each packet back as it comes, as Asterisk's and
    /// FreeSWITCH's echo and rtpengine's media echo do, instead of playing it out at its
    /// tick; with false, only while its packets are being dropped as late
    /// ([`super::MediaSession::dropping_late`]).
    pub forward_on_arrival: bool,
}

/// Why a session could not be created, or refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    Codec(CodecError),
    Srtp(String),
    /// ptime outside 10..=60 ms or a codec whose frames we cannot hold.
    Format(String),
    /// Digits to send, but no RFC 4733 telephone-event payload type was negotiated with the
    /// peer (or no format at all): they cannot go out of band.
    NoTelephoneEvent,
    /// Digits the telephone-event sender refused (an invalid character, or more than its queue
    /// holds); nothing was queued.
    Digits(DtmfError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Codec(e) => write!(f, "{e}"),
            SessionError::Srtp(e) => write!(f, "SRTP: {e}"),
            SessionError::Format(e) => write!(f, "media format: {e}"),
            SessionError::NoTelephoneEvent => {
                write!(f, "the peer did not negotiate RFC 4733 telephone-event")
            }
            SessionError::Digits(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SessionError {}
