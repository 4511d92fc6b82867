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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Name used for the o= username and the s= line of the SDPs we write.
const LOCAL_NAME: &str = "callbridge";
/// Smallest a=ptime we honour; also the step our framing works in.
const PTIME_STEP_MS: u32 = 10;
/// Largest a=ptime we honour (longer packets make DTMF and jitter worse).
const MAX_PTIME_MS: u32 = 60;
/// RTP dynamic payload type range (RFC 3551 §3).
const DYNAMIC_PTS: std::ops::RangeInclusive<u8> = 96..=127;
/// Longest piece of peer text quoted in an error message.
const MAX_QUOTED_CHARS: usize = 40;
/// The dynamic payload type we give telephone-event at 48 kHz (to go with
/// opus, RFC 4733 §2.1) in our offers.
const TELEPHONE_EVENT_48K_PT: u8 = 110;
/// RFC 4568 §9.1: a tag is 1 to 9 digits.
const MAX_CRYPTO_TAG_DIGITS: usize = 9;

// ---------------------------------------------------------------------------
// Negotiation: the entry points the SIP layer calls
// ---------------------------------------------------------------------------

/// What the local side supports, in preference order.
///
/// Existing struct literals can name the fields they care about and end
/// with `..LocalCapabilities::default()`; [`LocalCapabilities::new`] does the
/// same for the three original fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCapabilities {
    /// Audio codecs in our preference order. [`Codec::TelephoneEvent`] does
    /// not belong here (use `telephone_event`) and is ignored if present;
    /// duplicates are ignored too. Configuration must supply at least one.
    pub codecs: Vec<Codec>,
    /// Whether we send and receive RFC 4733 telephone-events (DTMF).
    pub telephone_event: bool,
    /// Packetisation time we ask for, and fall back to when the peer states
    /// none or one we do not honour.
    pub ptime_ms: u32,
    /// When we use SDES-SRTP (RTP/SAVP) rather than plain RTP (RTP/AVP).
    pub srtp: SrtpPolicy,
    /// SDES crypto-suite names (e.g. `AES_CM_128_HMAC_SHA1_80`) we accept,
    /// in our preference order: the order of the `a=crypto` lines of our
    /// offers. When answering, the offerer's order wins (RFC 4568 §7.1) and
    /// this list only filters. Names compare case-insensitively; our SDPs
    /// spell them as written here. Duplicates are ignored.
    pub srtp_suites: Vec<String>,
}

impl LocalCapabilities {
    /// Capabilities with these codecs, telephone-event setting and ptime,
    /// and the default SRTP policy and suites.
    pub fn new(codecs: Vec<Codec>, telephone_event: bool, ptime_ms: u32) -> LocalCapabilities {
        LocalCapabilities {
            codecs,
            telephone_event,
            ptime_ms,
            ..LocalCapabilities::default()
        }
    }
}

impl Default for LocalCapabilities {
    fn default() -> Self {
        LocalCapabilities {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: DEFAULT_PTIME_MS,
            srtp: SrtpPolicy::default(),
            srtp_suites: DEFAULT_SRTP_SUITES.map(str::to_string).to_vec(),
        }
    }
}

/// When callbridge uses SDES-SRTP (RFC 4568; m= transport `RTP/SAVP` or
/// `RTP/SAVPF`) instead of plain RTP (`RTP/AVP`, `RTP/AVPF`). DTLS-SRTP
/// (`UDP/TLS/RTP/SAVPF`) is never supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only: an offer whose audio is only RTP/SAVP(F) is refused
    /// with [`SdpError::UnsupportedTransport`]; our offers are RTP/AVP.
    Refuse,
    /// Accept what the peer offers: RTP/AVP(F) and RTP/SAVP(F) offers are
    /// both answered, and when an offer carries the same audio twice (one
    /// plain, one SAVP m-line: "best-effort SRTP") the SAVP line is taken.
    /// Our own offers are plain RTP/AVP without crypto, which every peer
    /// understands; use `Require` to offer SRTP.
    #[default]
    Offer,
    /// SRTP only: RTP/AVP(F)-only offers are refused with
    /// [`SdpError::SrtpRequired`]; our offers are RTP/SAVP with one
    /// `a=crypto` line per suite of [`LocalCapabilities::srtp_suites`].
    Require,
}

impl SrtpPolicy {
    /// The lower-case name used in configuration: `refuse`, `offer`, `require`.
    pub fn name(self) -> &'static str {
        match self {
            SrtpPolicy::Refuse => "refuse",
            SrtpPolicy::Offer => "offer",
            SrtpPolicy::Require => "require",
        }
    }

    /// The policy with this [`name`](SrtpPolicy::name) (case-insensitive).
    pub fn from_name(name: &str) -> Option<SrtpPolicy> {
        [SrtpPolicy::Refuse, SrtpPolicy::Offer, SrtpPolicy::Require]
            .into_iter()
            .find(|policy| name.eq_ignore_ascii_case(policy.name()))
    }
}

impl fmt::Display for SrtpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Our SDES master keys, one per crypto suite: the base64 text of
/// key||salt that goes after `inline:` (e.g. 40 characters for the
/// `AES_CM_128_*` suites, 30 bytes; 38 or 40 for `AEAD_AES_128_GCM`, 28 bytes).
///
/// The caller draws them from a CSPRNG once per call and passes the same
/// value to every [`offer`]/[`answer`] of that call, so that repeated
/// negotiation (a pre-check, then the real answer) is deterministic and
/// agrees with itself. A suite without a key here is treated as one we do
/// not support; a key that is not base64 of the suite's key||salt length is
/// ignored rather than put on the wire. `Debug` shows the suites, never keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SrtpKeys {
    /// (suite, base64 key||salt), suites unique (case-insensitive).
    keys: Vec<(String, String)>,
}

impl SrtpKeys {
    /// No keys: enough for plain RTP; SRTP offers cannot be answered.
    pub fn new() -> SrtpKeys {
        SrtpKeys::default()
    }

    /// Keys for `suites`, made by `make_key` (`None`: that suite gets none).
    pub fn from_fn(
        suites: &[String],
        mut make_key: impl FnMut(&str) -> Option<String>,
    ) -> SrtpKeys {
        let mut keys = SrtpKeys::new();
        for suite in suites {
            if keys.key(suite).is_none() {
                if let Some(key) = make_key(suite) {
                    keys.insert(suite, key);
                }
            }
        }
        keys
    }

    /// Sets the key for `suite` (replacing an earlier one).
    pub fn insert(&mut self, suite: &str, inline_key: String) {
        match self
            .keys
            .iter_mut()
            .find(|(known, _)| known.eq_ignore_ascii_case(suite))
        {
            Some((_, key)) => *key = inline_key,
            None => self.keys.push((suite.to_string(), inline_key)),
        }
    }

    /// [`insert`](SrtpKeys::insert) in builder style.
    pub fn with(mut self, suite: &str, inline_key: &str) -> SrtpKeys {
        self.insert(suite, inline_key.to_string());
        self
    }

    /// The key for `suite` (case-insensitive), if any.
    pub fn key(&self, suite: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(suite))
            .map(|(_, key)| key.as_str())
    }

    /// Our key for `suite` if it is fit for an `inline:` parameter.
    fn usable_key(&self, suite: &str) -> Option<&str> {
        self.key(suite).filter(|key| is_inline_key(suite, key))
    }
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(suite, _)| suite))
            .finish()
    }
}

/// The o= session id and version we put in our SDPs. The caller keeps one
/// per dialog and increments `version` for every changed SDP (RFC 3264 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionVersion {
    /// o= sess-id: stays the same for the whole dialog.
    pub session_id: u64,
    /// o= sess-version: grows by one with every new SDP we send.
    pub version: u64,
}

impl SessionVersion {
    /// The version to use for the next SDP of the same session.
    pub fn next(self) -> SessionVersion {
        SessionVersion {
            session_id: self.session_id,
            version: self.version.wrapping_add(1),
        }
    }
}

/// The result of negotiation for the (single) audio stream, used by the
/// media engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where to send RTP. `None` when the peer's connection address is
    /// unspecified (0.0.0.0 / ::, the RFC 2543 hold style) or its port is 0.
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP: a=rtcp if present, else the RTP port + 1; equal
    /// to `remote_rtp` when rtcp-mux was negotiated.
    pub remote_rtcp: Option<SocketAddr>,
    /// The audio codec both sides agreed on.
    pub codec: Codec,
    /// RTP payload type of `codec`, in the offerer's numbering (RFC 3264 §6.1).
    pub payload_type: u8,
    /// RTP payload type of telephone-event when both sides use it (offerer's
    /// numbering). Its RTP clock is always `codec.clock_rate()` (RFC 4733 §2.1),
    /// so 48000 with opus.
    pub telephone_event_pt: Option<u8>,
    /// Packetisation time to send with.
    pub ptime_ms: u32,
    /// The stream direction from OUR point of view (peer sendonly ⇒ we recvonly).
    pub direction: Direction,
    /// RTP and RTCP share one port (RFC 5761).
    pub rtcp_mux: bool,
    /// What the peer's fmtp says about opus; `Some` exactly when `codec` is
    /// [`Codec::Opus`] (RFC 7587 defaults when the peer said nothing).
    pub opus: Option<OpusParams>,
    /// The SDES-SRTP suite and keys when the stream is RTP/SAVP(F); `None`
    /// for plain RTP.
    pub srtp: Option<NegotiatedSrtp>,
}

/// The opus parameters (RFC 7587 §6.1) the PEER stated in its fmtp, i.e.
/// what the peer's decoder wants and what its encoder will send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpusParams {
    /// `maxplaybackrate`: the widest audio the peer wants to receive, as a
    /// sample rate in Hz (8000..=48000; values outside are clamped). Our
    /// encoder should not code a wider bandwidth. Default 48000.
    pub max_playback_rate: u32,
    /// `sprop-maxcapturerate`: the widest audio the peer will send, in Hz
    /// (8000..=48000, clamped). Default 48000.
    pub sprop_max_capture_rate: u32,
    /// `useinbandfec=1`: the peer's decoder uses opus in-band FEC, so our
    /// encoder should send it. Default false.
    pub use_inband_fec: bool,
}

impl Default for OpusParams {
    fn default() -> Self {
        OpusParams {
            max_playback_rate: OPUS_MAX_RATE,
            sprop_max_capture_rate: OPUS_MAX_RATE,
            use_inband_fec: false,
        }
    }
}

/// Opus rates RFC 7587 allows for maxplaybackrate / sprop-maxcapturerate.
const OPUS_MIN_RATE: u32 = 8000;
const OPUS_MAX_RATE: u32 = 48000;

impl OpusParams {
    /// Reads an opus fmtp value such as `maxplaybackrate=16000;
    /// useinbandfec=1`. Unknown, malformed and repeated parameters are
    /// ignored (first one wins); names compare case-insensitively.
    pub fn from_fmtp(fmtp: &str) -> OpusParams {
        let mut params = OpusParams::default();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in fmtp.split(';').filter_map(|p| p.split_once('=')) {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            if seen.contains(&name) {
                continue;
            }
            let recognised = match name.as_str() {
                "maxplaybackrate" => match opus_rate(value) {
                    Some(rate) => {
                        params.max_playback_rate = rate;
                        true
                    }
                    None => false,
                },
                "sprop-maxcapturerate" => match opus_rate(value) {
                    Some(rate) => {
                        params.sprop_max_capture_rate = rate;
                        true
                    }
                    None => false,
                },
                "useinbandfec" => match value {
                    "0" | "1" => {
                        params.use_inband_fec = value == "1";
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if recognised {
                seen.push(name);
            }
        }
        params
    }
}

/// An opus rate parameter, clamped to what RFC 7587 allows.
fn opus_rate(value: &str) -> Option<u32> {
    let rate = parse_decimal::<u64>(value)?;
    u32::try_from(rate.clamp(OPUS_MIN_RATE.into(), OPUS_MAX_RATE.into())).ok()
}

/// The SDES-SRTP outcome: one crypto suite, the peer's key for what we
/// RECEIVE and ours for what we SEND. Key parameters are the text after
/// `a=crypto:<tag> <suite> `, e.g. `inline:<base64>` or
/// `inline:<base64>|2^31` (the peer's may carry a lifetime; never an MKI,
/// never several keys). `Debug` redacts both keys.
#[derive(Clone, PartialEq, Eq)]
pub struct NegotiatedSrtp {
    /// The crypto-suite name, spelt as in [`LocalCapabilities::srtp_suites`]
    /// (or as in our offer, after [`accept_answer`]).
    pub suite: String,
    /// The `a=crypto` tag both sides used.
    pub tag: u32,
    /// The peer's key parameters: decode for INBOUND SRTP/SRTCP.
    pub remote_key_params: String,
    /// Our key parameters (`inline:<base64>`): use for OUTBOUND SRTP/SRTCP.
    pub local_key_params: String,
}

impl fmt::Debug for NegotiatedSrtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegotiatedSrtp")
            .field("suite", &self.suite)
            .field("tag", &self.tag)
            .field("remote_key_params", &"<redacted>")
            .field("local_key_params", &"<redacted>")
            .finish()
    }
}

/// Builds an offer for one audio stream with all our codecs (static payload
/// types where they have one, opus as 111 with [`OPUS_FMTP`], others from 96
/// up), telephone-event when enabled (dynamic PT 101 at 8000 Hz, plus 110 at
/// 48000 Hz when opus is offered, each with `a=fmtp:<pt> 0-16`), `a=ptime`
/// and `a=sendrecv`.
///
/// With [`SrtpPolicy::Require`] the m-line is RTP/SAVP with one
/// `a=crypto:<tag> <suite> inline:<key>` line per suite of
/// `caps.srtp_suites` that has a usable key in `keys`, tags 1, 2, ... in
/// that order. If no suite has a key the offer carries no crypto line and
/// every peer will refuse it (failing closed, never falling back to plain
/// RTP). Other policies offer plain RTP/AVP and ignore `keys`.
///
/// `local_rtp` is the address the peer should send RTP to; it must be a
/// concrete address (not 0.0.0.0) unless the caller means to put the call on
/// hold the RFC 2543 way.
pub fn offer(
    caps: &LocalCapabilities,
    local_rtp: SocketAddr,
    version: SessionVersion,
    keys: &SrtpKeys,
) -> SessionDescription {
    let mut formats = Vec::new();
    let mut attributes = Vec::new();
    for format in offered_formats(caps) {
        formats.push(format.payload_type.to_string());
        attributes.push(Attribute::new("rtpmap", Some(format.rtpmap().to_string())));
        if let Some(fmtp) = format.fmtp() {
            attributes.push(fmtp_attribute(format.payload_type, fmtp));
        }
    }
    let srtp = caps.srtp == SrtpPolicy::Require;
    if srtp {
        let usable = local_srtp_suites(caps)
            .into_iter()
            .filter_map(|suite| Some((suite, keys.usable_key(suite)?)));
        for (tag, (suite, key)) in (1u32..).zip(usable) {
            attributes.push(crypto_attribute(tag, suite, key));
        }
    }
    attributes.push(Attribute::new("ptime", Some(caps.ptime_ms.to_string())));
    attributes.push(Attribute::flag(Direction::SendRecv.attribute_name()));

    let audio = MediaDescription {
        media: "audio".to_string(),
        port: local_rtp.port(),
        port_count: None,
        protocol: if srtp { "RTP/SAVP" } else { "RTP/AVP" }.to_string(),
        formats,
        connection: None,
        bandwidth: Vec::new(),
        attributes,
        other: Vec::new(),
    };
    local_session(version, local_rtp.ip(), vec![audio])
}

/// Answers a remote offer.
///
/// Audio m-lines with a non-zero port are considered in the order the
/// SRTP policy prefers (see [`SrtpPolicy`]: with `Offer` and `Require`
/// every RTP/SAVP(F) line before any RTP/AVP(F) line), each group in offer
/// order; the first with a codec we share (the offerer's first that we
/// support, RFC 3264 §6.1) and, for SAVP, an acceptable `a=crypto` line is
/// accepted. Every other m-line is rejected (port 0, same media and proto,
/// formats copied, no attributes), so the answer has exactly as many
/// m-lines as the offer, in order (RFC 3264 §6).
///
/// Codecs match by encoding name, clock rate and channel count; the answer
/// uses the offerer's payload type numbers. Opus (`opus/48000/2`) is
/// answered with [`OPUS_FMTP`]; the offerer's opus fmtp lands in
/// [`NegotiatedMedia::opus`].
///
/// SDES (RFC 4568 §7.1): the first offered `a=crypto` line (offer order)
/// whose suite is in `caps.srtp_suites` and has a key in `keys`, whose key
/// parameters are a single `inline:` key of the right length with at most
/// a lifetime (no MKI), and whose session parameters are all harmless
/// (`KDR=0`, `WSH=`, `FEC_ORDER=`, `-`-prefixed ones; not e.g.
/// `UNENCRYPTED_SRTP`, `KDR=n>0` or `FEC_KEY`) is answered with
/// `a=crypto:<same tag> <suite> inline:<our key>`.
///
/// Errors (all mean "answer 488" to the SIP layer), most specific first:
/// [`SdpError::NoAcceptableCrypto`], [`SdpError::NoCommonCodec`],
/// [`SdpError::SrtpRequired`], [`SdpError::UnsupportedTransport`],
/// [`SdpError::NoAudio`], and [`SdpError::BadAddress`] when the accepted
/// stream has no c= line.
pub fn answer(
    offer: &SessionDescription,
    caps: &LocalCapabilities,
    local_rtp: SocketAddr,
    version: SessionVersion,
    keys: &SrtpKeys,
) -> Result<(SessionDescription, NegotiatedMedia), SdpError> {
    let choice = choose_audio_stream(offer, caps, keys)?;
    let offered = choice.media;
    let rtcp_mux = offered.has_attribute("rtcp-mux");
    let (remote_rtp, remote_rtcp) = remote_endpoints(offer, offered, rtcp_mux)?;
    let ptime_ms = negotiate_ptime(offered, caps.ptime_ms);
    // The offer's direction is the offerer's view; ours is its mirror image.
    let direction = offered.effective_direction(offer).reversed();

    let accepted = accepted_media(
        offered,
        &choice,
        ptime_ms,
        direction,
        rtcp_mux,
        local_rtp.port(),
    );
    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(index, m)| {
            if index == choice.index {
                accepted.clone()
            } else {
                rejected_media(m)
            }
        })
        .collect();

    let negotiated = NegotiatedMedia {
        remote_rtp,
        remote_rtcp,
        codec: choice.codec,
        payload_type: choice.payload_type,
        telephone_event_pt: choice.telephone_event.as_ref().map(|te| te.0),
        ptime_ms,
        direction,
        rtcp_mux,
        opus: opus_params(choice.codec, offered, choice.payload_type),
        srtp: choice.srtp,
    };
    Ok((local_session(version, local_rtp.ip(), media), negotiated))
}

/// Processes the answer to an offer we sent.
///
/// The answer must have as many m-lines as our offer, keep media type and
/// transport of the accepted audio line, and list one of our offered codecs
/// first (telephone-event aside), in our numbering; when we offered
/// RTP/SAVP it must carry an `a=crypto` line with one of our tags, the same
/// suite, and a single `inline:` key without MKI and with only harmless
/// session parameters. Otherwise [`SdpError::AnswerMismatch`]. An answer
/// that rejects every audio stream gives [`SdpError::NoAudio`].
pub fn accept_answer(
    our_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedMedia, SdpError> {
    if our_offer.media.len() != answer.media.len() {
        return Err(SdpError::AnswerMismatch(format!(
            "answer has {} m-lines, our offer had {}",
            answer.media.len(),
            our_offer.media.len()
        )));
    }
    let (offered, answered) = our_offer
        .media
        .iter()
        .zip(&answer.media)
        .find(|(o, a)| o.is_audio() && o.port != 0 && a.port != 0)
        .ok_or(SdpError::NoAudio)?;
    check_same_stream(offered, answered)?;

    let (codec, payload_type) = answered_codec(offered, answered)?;
    let srtp = match Transport::of(&offered.protocol) {
        Transport::Sdes => Some(answered_crypto(offered, answered)?),
        Transport::Rtp | Transport::Other => None,
    };
    let telephone_event_pt = offered.telephone_event_pt(codec.clock_rate());
    let rtcp_mux = offered.has_attribute("rtcp-mux") && answered.has_attribute("rtcp-mux");
    let (remote_rtp, remote_rtcp) = remote_endpoints(answer, answered, rtcp_mux)?;
    let our_ptime = offered.ptime().unwrap_or(DEFAULT_PTIME_MS);
    // The answer states the answerer's view; we may never do more than we offered.
    let direction = offered
        .effective_direction(our_offer)
        .intersect(answered.effective_direction(answer).reversed());

    Ok(NegotiatedMedia {
        remote_rtp,
        remote_rtcp,
        codec,
        payload_type,
        telephone_event_pt: telephone_event_pt.filter(|pt| answered.lists_payload_type(*pt)),
        ptime_ms: negotiate_ptime(answered, our_ptime),
        direction,
        rtcp_mux,
        opus: opus_params(codec, answered, payload_type),
        srtp,
    })
}

// ---------------------------------------------------------------------------
// Codecs and directions
// ---------------------------------------------------------------------------

/// A codec we can speak. New codecs are added as variants plus one row in
/// each `match` below and an entry in [`Codec::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static PT 0, 8000 Hz.
    Pcmu,
    /// G.711 A-law, static PT 8, 8000 Hz.
    Pcma,
    /// G.722, static PT 9. It samples at 16 kHz, but its RTP clock (and its
    /// rtpmap, `G722/8000`) says 8000 Hz: an error in RFC 1890 that RFC 3551
    /// §4.5.2 keeps for compatibility. Timestamps advance 8000 per second.
    G722,
    /// Opus (RFC 7587), dynamic PT (111 in our offers), rtpmap always
    /// `opus/48000/2` whatever the actual rate and channel count.
    Opus,
    /// RFC 4733 named telephone events (DTMF), dynamic PT, 8000 Hz (or the
    /// clock of the audio codec it goes with).
    TelephoneEvent,
}

impl Codec {
    /// Every codec this module knows, for lookups.
    pub const ALL: [Codec; 5] = [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G722,
        Codec::Opus,
        Codec::TelephoneEvent,
    ];

    /// The rtpmap encoding name (compared case-insensitively when parsing).
    pub fn encoding_name(&self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
            Codec::TelephoneEvent => "telephone-event",
        }
    }

    /// The RTP clock rate as written in rtpmap and used for RTP timestamps:
    /// 8000 for G722 although it samples at 16 kHz (RFC 3551 §4.5.2), 48000
    /// for opus whatever its actual rate (RFC 7587 §4.1). Compare
    /// [`audio_sample_rate`](Codec::audio_sample_rate).
    pub fn clock_rate(&self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::TelephoneEvent => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The rate at which the codec samples audio (what the media engine
    /// feeds its encoder and gets from its decoder): 8000 for G.711, 16000
    /// for G722, 48000 for opus (which may code less, see [`OpusParams`]).
    /// For telephone-event, which carries no audio, its clock rate.
    pub fn audio_sample_rate(&self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => 8000,
            Codec::G722 => 16000,
            Codec::Opus => 48000,
        }
    }

    /// Number of audio channels (the rtpmap encoding parameter; 1 if absent).
    /// 2 for opus: RFC 7587 requires `/2` in the rtpmap even for mono.
    pub fn channels(&self) -> u8 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::TelephoneEvent => 1,
            Codec::Opus => 2,
        }
    }

    /// The RFC 3551 static payload type, or `None` for dynamic-only codecs.
    pub fn static_payload_type(&self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus | Codec::TelephoneEvent => None,
        }
    }

    /// The payload type we use in our offers: the static one, else our
    /// customary dynamic one (opus 111, telephone-event 101), else `None`
    /// (a free dynamic number is then picked).
    pub fn default_payload_type(&self) -> Option<u8> {
        match self {
            Codec::Opus => Some(DEFAULT_OPUS_PT),
            Codec::TelephoneEvent => Some(DEFAULT_TELEPHONE_EVENT_PT),
            Codec::Pcmu | Codec::Pcma | Codec::G722 => self.static_payload_type(),
        }
    }

    /// True for codecs that carry audio (everything but telephone-event).
    pub fn is_audio(&self) -> bool {
        !matches!(self, Codec::TelephoneEvent)
    }

    /// The codec with this static payload type, for m-lines without rtpmap.
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.static_payload_type() == Some(pt))
    }

    /// The codec an rtpmap describes: name (case-insensitive), clock rate
    /// and channel count must all match. Telephone-event matches at any
    /// clock rate (it follows its audio codec, RFC 4733 §2.1).
    pub fn from_rtpmap(map: &RtpMap) -> Option<Codec> {
        Codec::ALL.into_iter().find(|codec| {
            let channels = map.encoding_params.as_deref().unwrap_or("1");
            map.encoding_name
                .eq_ignore_ascii_case(codec.encoding_name())
                && (map.clock_rate == codec.clock_rate() || *codec == Codec::TelephoneEvent)
                && parse_decimal::<u8>(channels) == Some(codec.channels())
        })
    }

    /// The rtpmap for this codec under payload type `pt`.
    pub fn rtpmap(&self, pt: u8) -> RtpMap {
        RtpMap {
            payload_type: pt,
            encoding_name: self.encoding_name().to_string(),
            clock_rate: self.clock_rate(),
            encoding_params: (self.channels() > 1).then(|| self.channels().to_string()),
        }
    }

    /// The fmtp parameters we state for this codec, in offers and answers
    /// (telephone-event's follow the offer, see [`DEFAULT_TELEPHONE_EVENT_FMTP`]).
    fn local_fmtp(&self) -> Option<&'static str> {
        match self {
            Codec::Opus => Some(OPUS_FMTP),
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::TelephoneEvent => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.encoding_name(), self.clock_rate())
    }
}

/// Stream direction attribute (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// a=sendrecv (the default when nothing is said).
    #[default]
    SendRecv,
    /// a=sendonly
    SendOnly,
    /// a=recvonly
    RecvOnly,
    /// a=inactive
    Inactive,
}

impl Direction {
    /// The attribute name, e.g. "sendonly".
    pub fn attribute_name(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name stands for (case-insensitive).
    pub fn from_attribute_name(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.attribute_name()))
    }

    /// The same stream seen from the other end (sendonly ⇄ recvonly).
    pub fn reversed(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction that sends and/or receives as given.
    pub fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// What both directions allow (same point of view for both).
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute_name())
    }
}

// ---------------------------------------------------------------------------
// The SDP model
// ---------------------------------------------------------------------------

/// A parsed SDP session description. `v=0` is implied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The o= line.
    pub origin: Origin,
    /// The s= line; empty when the peer left it out (printed as "-").
    pub session_name: String,
    /// Session-level c= line (media-level c= overrides it).
    pub connection: Option<Connection>,
    /// Session-level b= values, verbatim.
    pub bandwidth: Vec<String>,
    /// t= values, verbatim (we never schedule sessions).
    pub times: Vec<String>,
    /// Session-level a= lines, in order.
    pub attributes: Vec<Attribute>,
    /// The m= blocks, in order.
    pub media: Vec<MediaDescription>,
    /// Other session-level lines (i, u, e, p, r, z, k, unknown letters), kept
    /// so that a printed SDP loses nothing. r= lines are printed after all t=
    /// lines, so repeat times of multiple t= lines lose their pairing.
    pub other: Vec<OtherLine>,
}

impl SessionDescription {
    /// Parses an SDP body.
    ///
    /// Tolerates LF-only line ends, trailing whitespace, blank lines,
    /// unknown lines and attributes (kept), a missing s= and odd line order
    /// inside a block. Rejects: a first line other than `v=0`, a missing o=,
    /// lines not of the form `x=...`, malformed o=/m=/c= lines, non-numeric
    /// ports ([`SdpError::Syntax`] with the 1-based line number), and c=
    /// addresses that are not IP literals ([`SdpError::BadAddress`]).
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(index, raw)| (index + 1, raw.trim_end()));
        let first = lines.next().map_or("", |(_, line)| line);
        if first != "v=0" {
            return Err(syntax(1, format!("expected v=0, found {}", quote(first))));
        }
        let mut parser = Parser::default();
        for (number, line) in lines.filter(|(_, line)| !line.is_empty()) {
            parser.line(number, line)?;
        }
        parser.finish()
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.attributes)
    }

    /// The value of the first session-level attribute `name`: `None` if
    /// absent, `Some(None)` for a flag such as `a=rtcp-mux`.
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        find_attribute(&self.attributes, name)
    }
}

impl fmt::Display for SessionDescription {
    /// Canonical form: CRLF line ends, `v o s [i u e p] c? b* t+ [r z k ...] a*`,
    /// then each m= block.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_line(f, 'v', "0")?;
        write_line(f, 'o', &self.origin)?;
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        write_line(f, 's', name)?;
        write_other(f, &self.other, |kind| SESSION_INFO_LINES.contains(&kind))?;
        if let Some(connection) = &self.connection {
            write_line(f, 'c', connection)?;
        }
        write_lines(f, 'b', &self.bandwidth)?;
        if self.times.is_empty() {
            write_line(f, 't', "0 0")?; // t= is mandatory; "0 0" means unbounded
        }
        write_lines(f, 't', &self.times)?;
        write_other(f, &self.other, |kind| !SESSION_INFO_LINES.contains(&kind))?;
        write_lines(f, 'a', &self.attributes)?;
        self.media.iter().try_for_each(|m| write!(f, "{m}"))
    }
}

/// The o= line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// o= username ("-" when the peer has none).
    pub username: String,
    /// o= sess-id.
    pub session_id: u64,
    /// o= sess-version.
    pub session_version: u64,
    /// o= unicast-address (network type is always IN).
    pub address: OriginAddress,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.username, self.session_id, self.session_version, self.address
        )
    }
}

/// The o= address. Unlike c=, RFC 8866 §5.2 lets o= carry a host name, and
/// nothing routes media by it, so host names are kept rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginAddress {
    /// An IP literal.
    Ip(IpAddr),
    /// A host name with its stated address type.
    Name {
        /// The addrtype was IP6 (else IP4).
        ipv6: bool,
        /// The host name, verbatim.
        name: String,
    },
}

impl fmt::Display for OriginAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginAddress::Ip(ip) => write!(f, "IN {} {ip}", addrtype(ip.is_ipv6())),
            OriginAddress::Name { ipv6, name } => write!(f, "IN {} {name}", addrtype(*ipv6)),
        }
    }
}

/// A c= line: `IN IP4 x` or `IN IP6 x`. A multicast TTL / address count
/// suffix is accepted and dropped; host names are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection {
    /// The connection address.
    pub address: IpAddr,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IN {} {}",
            addrtype(self.address.is_ipv6()),
            self.address
        )
    }
}

/// An a= line: `a=name` (flag, `value: None`) or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute name (compared case-insensitively by lookups).
    pub name: String,
    /// Everything after the first ':'; `None` for flags.
    pub value: Option<String>,
}

impl Attribute {
    /// An attribute with an optional value.
    pub fn new(name: &str, value: Option<String>) -> Attribute {
        Attribute {
            name: name.to_string(),
            value,
        }
    }

    /// A value-less attribute such as `a=rtcp-mux`.
    pub fn flag(name: &str) -> Attribute {
        Attribute::new(name, None)
    }

    fn parse(text: &str) -> Attribute {
        match text.split_once(':') {
            Some((name, value)) => Attribute::new(name, Some(value.to_string())),
            None => Attribute::flag(text),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}:{value}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A line this model has no field for, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherLine {
    /// The type letter.
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

/// One m= block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// Media type: audio, video, application, ...
    pub media: String,
    /// Transport port; 0 means the stream is rejected/disabled.
    pub port: u16,
    /// The `/<number of ports>` suffix, if given.
    pub port_count: Option<u16>,
    /// Transport protocol: RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF, ...
    pub protocol: String,
    /// Media formats (RTP payload type numbers for RTP transports).
    pub formats: Vec<String>,
    /// Media-level c= (overrides the session-level one).
    pub connection: Option<Connection>,
    /// Media-level b= values, verbatim.
    pub bandwidth: Vec<String>,
    /// Media-level a= lines, in order.
    pub attributes: Vec<Attribute>,
    /// Other media-level lines (i, k, unknown letters), kept verbatim.
    pub other: Vec<OtherLine>,
}

impl MediaDescription {
    /// The value of the first attribute `name`: `None` if absent,
    /// `Some(None)` for a flag such as `a=rtcp-mux`.
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        find_attribute(&self.attributes, name)
    }

    /// Whether attribute `name` is present (with or without a value).
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// The media-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.attributes)
    }

    /// The direction in force: media-level, else session-level, else sendrecv.
    pub fn effective_direction(&self, session: &SessionDescription) -> Direction {
        self.direction()
            .or_else(|| session.direction())
            .unwrap_or_default()
    }

    /// The connection in force: media-level, else session-level.
    pub fn effective_connection(&self, session: &SessionDescription) -> Option<Connection> {
        self.connection.or(session.connection)
    }

    /// All well-formed a=rtpmap lines (malformed ones are skipped).
    pub fn rtpmaps(&self) -> Vec<RtpMap> {
        self.attribute_values("rtpmap")
            .filter_map(RtpMap::parse)
            .collect()
    }

    /// The rtpmap for payload type `pt`, if any.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        self.rtpmaps().into_iter().find(|m| m.payload_type == pt)
    }

    /// The a=fmtp parameters for payload type `pt`, if any.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attribute_values("fmtp").find_map(|value| {
            let (format, params) = value.split_once(' ')?;
            (parse_decimal::<u8>(format) == Some(pt)).then(|| params.trim())
        })
    }

    /// a=ptime in milliseconds, if present and numeric.
    pub fn ptime(&self) -> Option<u32> {
        self.attribute("ptime").flatten().and_then(parse_decimal)
    }

    /// a=maxptime in milliseconds, if present and numeric.
    pub fn maxptime(&self) -> Option<u32> {
        self.attribute("maxptime").flatten().and_then(parse_decimal)
    }

    /// a=rtcp (RFC 3605), if present and well-formed.
    pub fn rtcp(&self) -> Option<RtcpAttribute> {
        self.attribute("rtcp")
            .flatten()
            .and_then(RtcpAttribute::parse)
    }

    /// The codec payload type `pt` stands for on this m-line: by rtpmap when
    /// there is one, else by the static payload type table.
    pub fn codec_for(&self, pt: u8) -> Option<Codec> {
        match self.rtpmap(pt) {
            Some(map) => Codec::from_rtpmap(&map),
            None => Codec::from_static_payload_type(pt),
        }
    }

    /// The payload types listed in the m= line, in order (non-numeric
    /// formats skipped).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| parse_decimal::<u8>(f))
    }

    /// The first listed telephone-event payload type with this clock rate.
    pub fn telephone_event_pt(&self, clock_rate: u32) -> Option<u8> {
        self.payload_types().find(|pt| {
            self.rtpmap(*pt).is_some_and(|map| {
                Codec::from_rtpmap(&map) == Some(Codec::TelephoneEvent)
                    && map.clock_rate == clock_rate
            })
        })
    }

    fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    fn lists_payload_type(&self, pt: u8) -> bool {
        self.payload_types().any(|listed| listed == pt)
    }

    fn attribute_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.name.eq_ignore_ascii_case(name))
            .filter_map(|a| a.value.as_deref())
    }
}

impl fmt::Display for MediaDescription {
    /// Canonical form: `m [i] c? b* [k ...] a*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(count) = self.port_count {
            write!(f, "/{count}")?;
        }
        write!(f, " {}", self.protocol)?;
        self.formats
            .iter()
            .try_for_each(|fmt| write!(f, " {fmt}"))?;
        f.write_str("\r\n")?;
        write_other(f, &self.other, |kind| kind == 'i')?;
        if let Some(connection) = &self.connection {
            write_line(f, 'c', connection)?;
        }
        write_lines(f, 'b', &self.bandwidth)?;
        write_other(f, &self.other, |kind| kind != 'i')?;
        write_lines(f, 'a', &self.attributes)
    }
}

/// An a=rtpmap value: `<pt> <name>/<clock rate>[/<params>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// RTP payload type (0-127).
    pub payload_type: u8,
    /// Encoding name as written by the peer.
    pub encoding_name: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Encoding parameters (channel count for audio), if given.
    pub encoding_params: Option<String>,
}

impl RtpMap {
    /// Parses an rtpmap attribute value; `None` if malformed.
    pub fn parse(value: &str) -> Option<RtpMap> {
        let (pt, encoding) = value.trim().split_once(' ')?;
        let payload_type = parse_decimal::<u8>(pt).filter(|pt| *pt <= 127)?;
        let mut parts = encoding.trim().splitn(3, '/');
        let encoding_name = parts.next().filter(|name| !name.is_empty())?;
        let clock_rate = parts.next().and_then(parse_decimal::<u32>)?;
        Some(RtpMap {
            payload_type,
            encoding_name: encoding_name.to_string(),
            clock_rate,
            encoding_params: parts.next().map(str::to_string),
        })
    }
}

impl fmt::Display for RtpMap {
    /// The attribute value, e.g. `101 telephone-event/8000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding_name, self.clock_rate
        )?;
        match &self.encoding_params {
            Some(params) => write!(f, "/{params}"),
            None => Ok(()),
        }
    }
}

/// An a=rtcp value (RFC 3605): `<port> [IN IP4|IP6 <address>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttribute {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the c= address.
    pub address: Option<IpAddr>,
}

impl RtcpAttribute {
    /// Parses an rtcp attribute value; `None` if malformed (including a
    /// host name address, which we could not use without DNS).
    pub fn parse(value: &str) -> Option<RtcpAttribute> {
        let value = value.trim();
        let (port, rest) = value.split_once(' ').unwrap_or((value, ""));
        let port = parse_decimal::<u16>(port)?;
        let address = match rest.trim() {
            "" => None,
            rest => Some(parse_connection_value(rest).ok()?.address),
        };
        Some(RtcpAttribute { port, address })
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why an SDP could not be parsed or negotiated. `Display` is a single line
/// without double quotes or control characters, fit for a log line and the
/// text of a SIP Warning header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The body is not well-formed SDP; `line` is 1-based.
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// No usable (non-rejected) audio stream.
    NoAudio,
    /// Audio offered over a transport we take, but with no codec we support.
    NoCommonCodec,
    /// Audio offered only over transports we do not do (e.g.
    /// UDP/TLS/RTP/SAVPF, or RTP/SAVP under [`SrtpPolicy::Refuse`]).
    UnsupportedTransport(String),
    /// Audio offered over RTP/SAVP(F), but no `a=crypto` line we can accept
    /// (unknown suites, MKIs, several keys, unsupported session parameters).
    NoAcceptableCrypto,
    /// Audio offered only over plain RTP while [`SrtpPolicy::Require`] is set.
    SrtpRequired,
    /// A c= line is missing or not an IP literal we can use.
    BadAddress(String),
    /// The answer does not fit the offer it answers.
    AnswerMismatch(String),
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Syntax { line, reason } => {
                write!(f, "SDP syntax error on line {line}: {reason}")
            }
            SdpError::NoAudio => f.write_str("SDP has no usable audio stream"),
            SdpError::NoCommonCodec => f.write_str("no common audio codec"),
            SdpError::UnsupportedTransport(proto) => {
                write!(f, "unsupported media transport {proto}")
            }
            SdpError::NoAcceptableCrypto => {
                f.write_str("no acceptable SDES crypto attribute in the SRTP offer")
            }
            SdpError::SrtpRequired => f.write_str("SRTP is required but only RTP was offered"),
            SdpError::BadAddress(reason) => write!(f, "unusable SDP address: {reason}"),
            SdpError::AnswerMismatch(reason) => {
                write!(f, "SDP answer does not match our offer: {reason}")
            }
        }
    }
}

impl std::error::Error for SdpError {}

// ---------------------------------------------------------------------------
// Negotiation helpers
// ---------------------------------------------------------------------------

/// The audio stream of an offer we will accept, and what we picked in it.
struct StreamChoice<'a> {
    index: usize,
    media: &'a MediaDescription,
    codec: Codec,
    payload_type: u8,
    /// Offerer's telephone-event payload type and the fmtp we answer with.
    telephone_event: Option<(u8, String)>,
    /// The crypto line we answer an RTP/SAVP(F) stream with.
    srtp: Option<NegotiatedSrtp>,
}

/// The m= transports we tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// RTP/AVP or RTP/AVPF: plain RTP.
    Rtp,
    /// RTP/SAVP or RTP/SAVPF: SRTP keyed by SDES `a=crypto` lines.
    Sdes,
    /// Anything else (DTLS-SRTP, TCP, non-RTP).
    Other,
}

impl Transport {
    fn of(protocol: &str) -> Transport {
        let is = |name: &str| protocol.eq_ignore_ascii_case(name);
        if is("RTP/AVP") || is("RTP/AVPF") {
            Transport::Rtp
        } else if is("RTP/SAVP") || is("RTP/SAVPF") {
            Transport::Sdes
        } else {
            Transport::Other
        }
    }
}

/// Finds the acceptable audio stream the policy likes best, or the error
/// that best explains why there is none: crypto trouble beats codec trouble
/// beats "SRTP required" beats transport trouble beats no audio.
fn choose_audio_stream<'a>(
    offer: &'a SessionDescription,
    caps: &LocalCapabilities,
    keys: &SrtpKeys,
) -> Result<StreamChoice<'a>, SdpError> {
    let ours = local_audio_codecs(caps);
    // Transports we take, the preferred one first.
    let wanted: &[Transport] = match caps.srtp {
        SrtpPolicy::Refuse => &[Transport::Rtp],
        SrtpPolicy::Offer => &[Transport::Sdes, Transport::Rtp],
        SrtpPolicy::Require => &[Transport::Sdes],
    };
    let live_audio = || {
        offer
            .media
            .iter()
            .enumerate()
            // Not audio, or a stream the offerer has disabled.
            .filter(|(_, media)| media.is_audio() && media.port != 0)
    };
    let mut no_common_codec = false;
    let mut no_acceptable_crypto = false;
    for &transport in wanted {
        for (index, media) in live_audio().filter(|(_, m)| Transport::of(&m.protocol) == transport)
        {
            let Some(mut choice) = choose_codec(index, media, &ours, caps.telephone_event) else {
                no_common_codec = true;
                continue;
            };
            if transport == Transport::Sdes {
                match choose_crypto(media, caps, keys) {
                    Some(srtp) => choice.srtp = Some(srtp),
                    None => {
                        no_acceptable_crypto = true;
                        continue;
                    }
                }
            }
            return Ok(choice);
        }
    }
    let offered = |transport| live_audio().any(|(_, m)| Transport::of(&m.protocol) == transport);
    let unsupported = live_audio()
        .find(|(_, m)| !wanted.contains(&Transport::of(&m.protocol)))
        .map(|(_, m)| sanitize(&m.protocol));
    Err(if no_acceptable_crypto {
        SdpError::NoAcceptableCrypto
    } else if no_common_codec {
        SdpError::NoCommonCodec
    } else if caps.srtp == SrtpPolicy::Require && offered(Transport::Rtp) {
        SdpError::SrtpRequired
    } else if let Some(protocol) = unsupported {
        SdpError::UnsupportedTransport(protocol)
    } else {
        SdpError::NoAudio
    })
}

/// The first offered format (offerer's preference order, RFC 3264 §6.1)
/// that we support, plus telephone-event at the same clock rate if wanted.
fn choose_codec<'a>(
    index: usize,
    media: &'a MediaDescription,
    ours: &[Codec],
    telephone_event: bool,
) -> Option<StreamChoice<'a>> {
    let (payload_type, codec) = media
        .payload_types()
        .filter_map(|pt| Some((pt, media.codec_for(pt)?)))
        .find(|(_, codec)| ours.contains(codec))?;
    let telephone_event = telephone_event
        .then(|| media.telephone_event_pt(codec.clock_rate()))
        .flatten()
        .map(|pt| {
            let fmtp = media.fmtp(pt).unwrap_or(DEFAULT_TELEPHONE_EVENT_FMTP);
            (pt, fmtp.to_string())
        });
    Some(StreamChoice {
        index,
        media,
        codec,
        payload_type,
        telephone_event,
        srtp: None,
    })
}

/// The crypto line to answer an RTP/SAVP(F) m-line with: the first offered
/// line (RFC 4568 §7.1: the offerer's preference) we can accept and have a
/// key for.
fn choose_crypto(
    media: &MediaDescription,
    caps: &LocalCapabilities,
    keys: &SrtpKeys,
) -> Option<NegotiatedSrtp> {
    media
        .attribute_values("crypto")
        .filter_map(CryptoLine::parse)
        .find_map(|line| {
            let suite = caps
                .srtp_suites
                .iter()
                .find(|suite| suite.eq_ignore_ascii_case(line.suite))?;
            if !line.is_usable() {
                return None;
            }
            let key = keys.usable_key(suite)?;
            Some(NegotiatedSrtp {
                suite: suite.clone(),
                tag: line.tag,
                remote_key_params: line.key_params.to_string(),
                local_key_params: format!("inline:{key}"),
            })
        })
}

/// The crypto line of an answer to our RTP/SAVP offer, matched to ours.
fn answered_crypto(
    offered: &MediaDescription,
    answered: &MediaDescription,
) -> Result<NegotiatedSrtp, SdpError> {
    let mismatch = |reason: String| SdpError::AnswerMismatch(reason);
    let line = answered
        .attribute_values("crypto")
        .find_map(CryptoLine::parse)
        .ok_or_else(|| mismatch("no crypto attribute for our SRTP offer".to_string()))?;
    let same_tag: Vec<CryptoLine> = offered
        .attribute_values("crypto")
        .filter_map(CryptoLine::parse)
        .filter(|ours| ours.tag == line.tag)
        .collect();
    let ours = same_tag
        .iter()
        .find(|ours| ours.suite.eq_ignore_ascii_case(line.suite))
        .ok_or_else(|| match same_tag.first() {
            None => mismatch(format!("crypto tag {} was not offered", line.tag)),
            Some(ours) => mismatch(format!(
                "crypto tag {} answered with suite {}, offered {}",
                line.tag,
                quote(line.suite),
                quote(ours.suite)
            )),
        })?;
    if !line.is_usable() {
        // Never quote key parameters: they hold the key.
        return Err(mismatch(format!(
            "crypto tag {} has key or session parameters we cannot use",
            line.tag
        )));
    }
    Ok(NegotiatedSrtp {
        suite: ours.suite.to_string(),
        tag: line.tag,
        remote_key_params: line.key_params.to_string(),
        local_key_params: ours.key_params.to_string(),
    })
}

/// An `a=crypto` value, split but not judged (RFC 4568 §9.1):
/// `<tag> <crypto-suite> <key-params> *(<session-param>)`.
struct CryptoLine<'a> {
    tag: u32,
    suite: &'a str,
    /// `inline:<key||salt>[|lifetime][|MKI:length]`, possibly several `;`-separated.
    key_params: &'a str,
    session_params: Vec<&'a str>,
}

impl<'a> CryptoLine<'a> {
    /// `None` when the tag is not 1-9 digits or a field is missing.
    fn parse(value: &'a str) -> Option<CryptoLine<'a>> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields
            .next()
            .filter(|tag| tag.len() <= MAX_CRYPTO_TAG_DIGITS)
            .and_then(parse_decimal::<u32>)?;
        let suite = fields.next()?;
        let key_params = fields.next()?;
        Some(CryptoLine {
            tag,
            suite,
            key_params,
            session_params: fields.collect(),
        })
    }

    /// One `inline:` key of the suite's length with at most a lifetime
    /// (no MKI, which we could not match packets against), and only
    /// session parameters that do not change how packets are protected.
    fn is_usable(&self) -> bool {
        is_single_inline_key(self.suite, self.key_params)
            && self
                .session_params
                .iter()
                .all(|param| is_harmless_session_param(param))
    }
}

/// `inline:<key||salt>[|<lifetime>]` (RFC 4568 §9.2).
fn is_single_inline_key(suite: &str, key_params: &str) -> bool {
    let Some((method, info)) = key_params.split_once(':') else {
        return false;
    };
    if !method.eq_ignore_ascii_case("inline") || key_params.contains(';') {
        return false; // another key method, or several keys (which need MKIs)
    }
    let mut parts = info.split('|');
    let key = parts.next().unwrap_or_default();
    let lifetime_ok = match (parts.next(), parts.next()) {
        (None, _) => true,
        // A second part with ':' is an MKI; a third part is an MKI too.
        (Some(lifetime), None) => is_lifetime(lifetime),
        (Some(_), Some(_)) => false,
    };
    lifetime_ok && is_inline_key(suite, key)
}

/// `<decimal>` or `2^<decimal>`, not zero.
fn is_lifetime(text: &str) -> bool {
    match text.strip_prefix("2^") {
        Some(exponent) => parse_decimal::<u8>(exponent).is_some_and(|e| e < 64),
        None => parse_decimal::<u64>(text).is_some_and(|n| n > 0),
    }
}

/// Base64 text (padding optional) of the suite's key||salt length, or of
/// any non-zero length for suites whose length we do not know.
fn is_inline_key(suite: &str, key: &str) -> bool {
    let data = key.trim_end_matches('=');
    let padding = key.len() - data.len();
    let well_formed = !data.is_empty()
        && padding <= 2
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        && data.len() % 4 != 1
        && (padding == 0 || key.len() % 4 == 0);
    let decoded_len = data.len() * 3 / 4;
    well_formed && srtp_key_salt_len(suite).is_none_or(|len| len == decoded_len)
}

/// Master key plus master salt length in bytes of the SDES suites we know
/// (RFC 4568 §6.2, RFC 6188, RFC 7714 §12).
fn srtp_key_salt_len(suite: &str) -> Option<usize> {
    const LENGTHS: [(&str, usize); 9] = [
        ("AES_CM_128_HMAC_SHA1_80", 30),
        ("AES_CM_128_HMAC_SHA1_32", 30),
        ("F8_128_HMAC_SHA1_80", 30),
        ("AES_192_CM_HMAC_SHA1_80", 38),
        ("AES_192_CM_HMAC_SHA1_32", 38),
        ("AES_256_CM_HMAC_SHA1_80", 46),
        ("AES_256_CM_HMAC_SHA1_32", 46),
        ("AEAD_AES_128_GCM", 28),
        ("AEAD_AES_256_GCM", 44),
    ];
    LENGTHS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(suite))
        .map(|(_, len)| *len)
}

/// Session parameters (RFC 4568 §6.3) we may accept without acting on
/// them: `KDR=0` (key derivation once, the default), the window size hint,
/// the FEC order (we do no FEC) and the optional `-`-prefixed kind (§6.3.7).
/// Everything else (KDR above 0, UNENCRYPTED_SRTP/SRTCP,
/// UNAUTHENTICATED_SRTP, FEC_KEY, unknown ones) makes the line unusable.
fn is_harmless_session_param(param: &str) -> bool {
    let (name, value) = param.split_once('=').unwrap_or((param, ""));
    param.starts_with('-')
        || (name == "KDR" && value == "0")
        || (name == "WSH" && parse_decimal::<u32>(value).is_some())
        || (name == "FEC_ORDER" && matches!(value, "FEC_SRTP" | "SRTP_FEC"))
}

/// Our SDES suites in preference order, duplicates removed.
fn local_srtp_suites(caps: &LocalCapabilities) -> Vec<&str> {
    let mut suites: Vec<&str> = Vec::new();
    for suite in &caps.srtp_suites {
        if !suites.iter().any(|known| known.eq_ignore_ascii_case(suite)) {
            suites.push(suite);
        }
    }
    suites
}

fn crypto_attribute(tag: u32, suite: &str, key: &str) -> Attribute {
    Attribute::new("crypto", Some(format!("{tag} {suite} inline:{key}")))
}

/// Our audio codecs in preference order: telephone-event and duplicates removed.
fn local_audio_codecs(caps: &LocalCapabilities) -> Vec<Codec> {
    let mut codecs: Vec<Codec> = Vec::new();
    for codec in caps.codecs.iter().copied().filter(Codec::is_audio) {
        if !codecs.contains(&codec) {
            codecs.push(codec);
        }
    }
    codecs
}

/// One format of our offer.
struct OfferedFormat {
    codec: Codec,
    payload_type: u8,
    /// The RTP clock: the codec's, or for telephone-event the clock of the
    /// audio codecs it goes with.
    clock_rate: u32,
}

impl OfferedFormat {
    fn rtpmap(&self) -> RtpMap {
        RtpMap {
            clock_rate: self.clock_rate,
            ..self.codec.rtpmap(self.payload_type)
        }
    }

    fn fmtp(&self) -> Option<&'static str> {
        match self.codec {
            Codec::TelephoneEvent => Some(DEFAULT_TELEPHONE_EVENT_FMTP),
            codec => codec.local_fmtp(),
        }
    }
}

/// The formats of our offer: our audio codecs in preference order, then
/// telephone-event (when enabled) at 8000 Hz and at every other clock rate
/// of those codecs. Static payload types where defined, then our customary
/// dynamic numbers (opus 111; telephone-event 101 at 8 kHz, 110 at 48 kHz),
/// then free dynamic numbers from 96 up.
fn offered_formats(caps: &LocalCapabilities) -> Vec<OfferedFormat> {
    let codecs = local_audio_codecs(caps);
    let mut wanted: Vec<(Codec, u32, Option<u8>)> = codecs
        .iter()
        .map(|c| (*c, c.clock_rate(), c.default_payload_type()))
        .collect();
    if caps.telephone_event {
        let mut clocks = vec![Codec::TelephoneEvent.clock_rate()];
        for clock in codecs.iter().map(Codec::clock_rate) {
            if !clocks.contains(&clock) {
                clocks.push(clock);
            }
        }
        wanted.extend(clocks.into_iter().map(|clock| {
            let pt = match clock {
                8000 => Some(DEFAULT_TELEPHONE_EVENT_PT),
                48000 => Some(TELEPHONE_EVENT_48K_PT),
                _ => None,
            };
            (Codec::TelephoneEvent, clock, pt)
        }));
    }
    let reserved: Vec<u8> = wanted.iter().filter_map(|(_, _, pt)| *pt).collect();
    let mut dynamic = DYNAMIC_PTS.filter(|pt| !reserved.contains(pt));
    wanted
        .into_iter()
        .filter_map(|(codec, clock_rate, pt)| {
            // Dynamic numbers only run out with more than 29 dynamic formats;
            // such a format is then left out rather than given a clashing number.
            let payload_type = pt.or_else(|| dynamic.next())?;
            Some(OfferedFormat {
                codec,
                payload_type,
                clock_rate,
            })
        })
        .collect()
}

/// [`OpusParams`] from the fmtp of `media` for `pt`, when `codec` is opus.
fn opus_params(codec: Codec, media: &MediaDescription, pt: u8) -> Option<OpusParams> {
    (codec == Codec::Opus).then(|| OpusParams::from_fmtp(media.fmtp(pt).unwrap_or_default()))
}

/// The peer's a=ptime if we honour it (10..=60 ms in steps of 10), else
/// `fallback`; either way capped by the peer's a=maxptime.
fn negotiate_ptime(media: &MediaDescription, fallback: u32) -> u32 {
    let wanted = media
        .ptime()
        .filter(|p| (PTIME_STEP_MS..=MAX_PTIME_MS).contains(p) && p % PTIME_STEP_MS == 0)
        .unwrap_or(fallback);
    match media.maxptime() {
        // A maxptime below our 10 ms framing cannot be met; 10 ms is the closest.
        Some(max) if max > 0 && wanted > max => {
            (max / PTIME_STEP_MS * PTIME_STEP_MS).max(PTIME_STEP_MS)
        }
        _ => wanted,
    }
}

/// RTP and RTCP destinations of a remote m-line.
fn remote_endpoints(
    session: &SessionDescription,
    media: &MediaDescription,
    rtcp_mux: bool,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), SdpError> {
    let connection = media
        .effective_connection(session)
        .ok_or_else(|| SdpError::BadAddress("no c= line for the audio stream".to_string()))?;
    let rtp = usable_endpoint(connection.address, media.port);
    let rtcp = if rtcp_mux {
        rtp
    } else {
        match media.rtcp() {
            Some(rtcp) => usable_endpoint(rtcp.address.unwrap_or(connection.address), rtcp.port),
            None => media
                .port
                .checked_add(1)
                .and_then(|port| usable_endpoint(connection.address, port)),
        }
    };
    Ok((rtp, rtcp))
}

/// `None` for the hold address (0.0.0.0 / ::) and port 0: nowhere to send.
fn usable_endpoint(ip: IpAddr, port: u16) -> Option<SocketAddr> {
    (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port))
}

/// Our m-line accepting the offered stream.
fn accepted_media(
    offered: &MediaDescription,
    choice: &StreamChoice,
    ptime_ms: u32,
    direction: Direction,
    rtcp_mux: bool,
    local_port: u16,
) -> MediaDescription {
    let mut formats = vec![choice.payload_type.to_string()];
    let mut attributes = vec![rtpmap_attribute(choice.payload_type, choice.codec)];
    if let Some(fmtp) = choice.codec.local_fmtp() {
        attributes.push(fmtp_attribute(choice.payload_type, fmtp));
    }
    if let Some((pt, fmtp)) = &choice.telephone_event {
        formats.push(pt.to_string());
        let rtpmap = RtpMap {
            clock_rate: choice.codec.clock_rate(),
            ..Codec::TelephoneEvent.rtpmap(*pt)
        };
        attributes.push(Attribute::new("rtpmap", Some(rtpmap.to_string())));
        attributes.push(fmtp_attribute(*pt, fmtp));
    }
    if let Some(srtp) = &choice.srtp {
        // Same tag and suite as the offer line we accept (RFC 4568 §7.1.2).
        attributes.push(Attribute::new(
            "crypto",
            Some(format!(
                "{} {} {}",
                srtp.tag, srtp.suite, srtp.local_key_params
            )),
        ));
    }
    attributes.push(Attribute::new("ptime", Some(ptime_ms.to_string())));
    if rtcp_mux {
        attributes.push(Attribute::flag("rtcp-mux"));
    }
    attributes.push(Attribute::flag(direction.attribute_name()));
    MediaDescription {
        media: offered.media.clone(),
        port: local_port,
        port_count: None,
        protocol: offered.protocol.clone(),
        formats,
        connection: None,
        bandwidth: Vec::new(),
        attributes,
        other: Vec::new(),
    }
}

/// Our m-line rejecting an offered stream (RFC 3264 §6: port 0, formats kept).
fn rejected_media(offered: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media: offered.media.clone(),
        port: 0,
        port_count: None,
        protocol: offered.protocol.clone(),
        formats: offered.formats.clone(),
        connection: None,
        bandwidth: Vec::new(),
        attributes: Vec::new(),
        other: Vec::new(),
    }
}

/// The session envelope of every SDP we send.
fn local_session(
    version: SessionVersion,
    ip: IpAddr,
    media: Vec<MediaDescription>,
) -> SessionDescription {
    SessionDescription {
        origin: Origin {
            username: LOCAL_NAME.to_string(),
            session_id: version.session_id,
            session_version: version.version,
            address: OriginAddress::Ip(ip),
        },
        session_name: LOCAL_NAME.to_string(),
        connection: Some(Connection { address: ip }),
        bandwidth: Vec::new(),
        times: vec!["0 0".to_string()],
        attributes: Vec::new(),
        media,
        other: Vec::new(),
    }
}

fn rtpmap_attribute(pt: u8, codec: Codec) -> Attribute {
    Attribute::new("rtpmap", Some(codec.rtpmap(pt).to_string()))
}

fn fmtp_attribute(pt: u8, params: &str) -> Attribute {
    Attribute::new("fmtp", Some(format!("{pt} {params}")))
}

/// The answered m-line must be the same kind of stream as the offered one.
fn check_same_stream(
    offered: &MediaDescription,
    answered: &MediaDescription,
) -> Result<(), SdpError> {
    if !answered.media.eq_ignore_ascii_case(&offered.media) {
        return Err(SdpError::AnswerMismatch(format!(
            "media {} answered as {}",
            quote(&offered.media),
            quote(&answered.media)
        )));
    }
    if !answered.protocol.eq_ignore_ascii_case(&offered.protocol) {
        return Err(SdpError::AnswerMismatch(format!(
            "transport {} answered as {}",
            quote(&offered.protocol),
            quote(&answered.protocol)
        )));
    }
    Ok(())
}

/// The codec the answer picked: its first format that is not one of our
/// telephone-event payload types, which must be an audio codec from our
/// offer, in our numbering (RFC 3264 §6.1).
fn answered_codec(
    offered: &MediaDescription,
    answered: &MediaDescription,
) -> Result<(Codec, u8), SdpError> {
    let is_our_telephone_event = |format: &&String| {
        parse_decimal::<u8>(format)
            .is_some_and(|pt| offered.codec_for(pt) == Some(Codec::TelephoneEvent))
    };
    let first = answered
        .formats
        .iter()
        .find(|format| !is_our_telephone_event(format))
        .ok_or_else(|| SdpError::AnswerMismatch("answer lists no audio codec".to_string()))?;
    let not_offered =
        || SdpError::AnswerMismatch(format!("format {} was not offered", quote(first)));
    let pt = parse_decimal::<u8>(first)
        .filter(|pt| offered.lists_payload_type(*pt))
        .ok_or_else(not_offered)?;
    let codec = offered
        .codec_for(pt)
        .filter(Codec::is_audio)
        .ok_or_else(not_offered)?;
    Ok((codec, pt))
}

// ---------------------------------------------------------------------------
// Parser internals
// ---------------------------------------------------------------------------

/// Session-level "other" lines that belong between s= and c=.
const SESSION_INFO_LINES: [char; 4] = ['i', 'u', 'e', 'p'];
/// Letters (besides o, s, t) that only exist at session level; seen after an
/// m= line they are filed at session level rather than rejected.
const SESSION_ONLY_LINES: [char; 5] = ['u', 'e', 'p', 'r', 'z'];

/// Accumulates lines after `v=0`.
#[derive(Default)]
struct Parser {
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<Connection>,
    bandwidth: Vec<String>,
    times: Vec<String>,
    attributes: Vec<Attribute>,
    other: Vec<OtherLine>,
    media: Vec<MediaDescription>,
}

impl Parser {
    fn line(&mut self, number: usize, line: &str) -> Result<(), SdpError> {
        let (kind, value) = split_line(number, line)?;
        match kind {
            'v' => Err(syntax(number, "v= may only be the first line".to_string())),
            'o' if self.origin.is_some() => Err(syntax(number, "second o= line".to_string())),
            'o' => {
                self.origin = Some(parse_origin(number, value)?);
                Ok(())
            }
            's' => {
                self.session_name.get_or_insert_with(|| value.to_string());
                Ok(())
            }
            't' => {
                self.times.push(value.to_string());
                Ok(())
            }
            'm' => {
                self.media.push(parse_media_line(number, value)?);
                Ok(())
            }
            'c' => {
                let connection = parse_connection(number, value)?;
                // Several c= lines only occur for multicast; the first one wins.
                match self.media.last_mut() {
                    Some(media) => media.connection.get_or_insert(connection),
                    None => self.connection.get_or_insert(connection),
                };
                Ok(())
            }
            _ => {
                self.block_line(kind, value);
                Ok(())
            }
        }
    }

    /// b=, a= and other lines go to the current block: the last m= seen, or
    /// the session before any m= (and always for session-only letters).
    fn block_line(&mut self, kind: char, value: &str) {
        let session_only = SESSION_ONLY_LINES.contains(&kind);
        let media = self.media.last_mut().filter(|_| !session_only);
        let (bandwidth, attributes, other) = match media {
            Some(m) => (&mut m.bandwidth, &mut m.attributes, &mut m.other),
            None => (&mut self.bandwidth, &mut self.attributes, &mut self.other),
        };
        match kind {
            'b' => bandwidth.push(value.to_string()),
            'a' => attributes.push(Attribute::parse(value)),
            _ => other.push(OtherLine {
                kind,
                value: value.to_string(),
            }),
        }
    }

    fn finish(self) -> Result<SessionDescription, SdpError> {
        let origin = self
            .origin
            .ok_or_else(|| syntax(2, "missing o= line".to_string()))?;
        Ok(SessionDescription {
            origin,
            session_name: self.session_name.unwrap_or_default(),
            connection: self.connection,
            bandwidth: self.bandwidth,
            times: self.times,
            attributes: self.attributes,
            media: self.media,
            other: self.other,
        })
    }
}

/// Splits `x=value` into its type letter and value.
fn split_line(number: usize, line: &str) -> Result<(char, &str), SdpError> {
    match line.as_bytes() {
        [kind, b'=', ..] if kind.is_ascii_alphabetic() => {
            // Both leading bytes are ASCII, so index 2 is a char boundary.
            Ok((char::from(*kind), &line[2..]))
        }
        _ => Err(syntax(
            number,
            format!("expected <letter>=<value>, found {}", quote(line)),
        )),
    }
}

/// `o=<username> <sess-id> <sess-version> IN <IP4|IP6> <address>`
fn parse_origin(number: usize, value: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [username, id, version, nettype, addrtype, address] = fields[..] else {
        return Err(syntax(
            number,
            format!("o= needs 6 fields, found {}", fields.len()),
        ));
    };
    let number_field = |field: &str, what: &str| {
        parse_decimal::<u64>(field).ok_or_else(|| {
            syntax(
                number,
                format!("o= {what} {} is not a number", quote(field)),
            )
        })
    };
    let session_id = number_field(id, "session id")?;
    let session_version = number_field(version, "session version")?;
    let ipv6 = parse_net_and_addrtype(number, nettype, addrtype)?;
    let address = match address.parse::<IpAddr>() {
        Ok(ip) => OriginAddress::Ip(ip),
        Err(_) => OriginAddress::Name {
            ipv6,
            name: address.to_string(),
        },
    };
    Ok(Origin {
        username: username.to_string(),
        session_id,
        session_version,
        address,
    })
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`
fn parse_media_line(number: usize, value: &str) -> Result<MediaDescription, SdpError> {
    let mut fields = value.split_whitespace();
    let (Some(media), Some(port_field), Some(protocol)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(syntax(
            number,
            "m= needs <media> <port> <proto> <formats>".to_string(),
        ));
    };
    let (port, count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(count)),
        None => (port_field, None),
    };
    let bad_port = || {
        syntax(
            number,
            format!("m= port {} is not 0-65535", quote(port_field)),
        )
    };
    let port = parse_decimal::<u16>(port).ok_or_else(bad_port)?;
    let port_count = match count {
        Some(count) => Some(parse_decimal::<u16>(count).ok_or_else(bad_port)?),
        None => None,
    };
    let formats: Vec<String> = fields.map(str::to_string).collect();
    // RFC 8866 requires a format; some stacks omit it on rejected (port 0) lines.
    if formats.is_empty() && port != 0 {
        return Err(syntax(number, "m= line lists no formats".to_string()));
    }
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        port_count,
        protocol: protocol.to_string(),
        formats,
        connection: None,
        bandwidth: Vec::new(),
        attributes: Vec::new(),
        other: Vec::new(),
    })
}

/// `c=IN <IP4|IP6> <address>[/<ttl>][/<count>]`, with the line number for errors.
fn parse_connection(number: usize, value: &str) -> Result<Connection, SdpError> {
    parse_connection_value(value).map_err(|error| match error {
        SdpError::Syntax { reason, .. } => syntax(number, reason),
        SdpError::BadAddress(reason) => SdpError::BadAddress(format!("line {number}: {reason}")),
        other => other,
    })
}

/// `IN <IP4|IP6> <address>[/...]` (shared by c= and a=rtcp). Errors carry
/// line 0; [`parse_connection`] puts the real number in.
fn parse_connection_value(value: &str) -> Result<Connection, SdpError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [nettype, kind, address] = fields[..] else {
        return Err(syntax(
            0,
            format!("c= needs 3 fields, found {}", fields.len()),
        ));
    };
    let ipv6 = parse_net_and_addrtype(0, nettype, kind)?;
    // Multicast c= lines carry /ttl and /count suffixes that unicast RTP ignores.
    let literal = address.split('/').next().unwrap_or(address);
    let ip = if ipv6 {
        literal.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
    } else {
        literal.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
    };
    let address = ip.ok_or_else(|| {
        SdpError::BadAddress(format!(
            "{} is not an {} literal (host names are not supported)",
            quote(address),
            addrtype(ipv6)
        ))
    })?;
    Ok(Connection { address })
}

/// Checks `IN` and returns whether the address type is IP6.
fn parse_net_and_addrtype(number: usize, nettype: &str, addrtype: &str) -> Result<bool, SdpError> {
    let reason = match (nettype, addrtype) {
        ("IN", "IP4") => return Ok(false),
        ("IN", "IP6") => return Ok(true),
        ("IN", other) => format!("address type {} is not IP4 or IP6", quote(other)),
        (other, _) => format!("network type {} is not IN", quote(other)),
    };
    // Line 0 means the caller adds the line number itself.
    Err(SdpError::BadAddress(match number {
        0 => reason,
        _ => format!("line {number}: {reason}"),
    }))
}

fn addrtype(ipv6: bool) -> &'static str {
    if ipv6 {
        "IP6"
    } else {
        "IP4"
    }
}

fn direction_of(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_attribute_name(&a.name))
}

fn find_attribute<'a>(attributes: &'a [Attribute], name: &str) -> Option<Option<&'a str>> {
    attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
        .map(|a| a.value.as_deref())
}

/// Parses an unsigned decimal made of ASCII digits only (`str::parse` alone
/// would also take a leading '+').
fn parse_decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn syntax(line: usize, reason: String) -> SdpError {
    SdpError::Syntax { line, reason }
}

/// Peer text made safe for a log line and a SIP Warning header: shortened,
/// with double quotes, backslashes and control characters replaced.
fn sanitize(text: &str) -> String {
    let mut safe: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '?'
            } else {
                c
            }
        })
        .collect();
    if text.chars().count() > MAX_QUOTED_CHARS {
        safe.push_str("...");
    }
    safe
}

/// [`sanitize`]d peer text in single quotes, for use inside a sentence.
fn quote(text: &str) -> String {
    format!("'{}'", sanitize(text))
}

fn write_line(f: &mut fmt::Formatter<'_>, kind: char, value: impl fmt::Display) -> fmt::Result {
    write!(f, "{kind}={value}\r\n")
}

fn write_lines<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    kind: char,
    values: &[T],
) -> fmt::Result {
    values
        .iter()
        .try_for_each(|value| write_line(f, kind, value))
}

fn write_other(
    f: &mut fmt::Formatter<'_>,
    lines: &[OtherLine],
    wanted: impl Fn(char) -> bool,
) -> fmt::Result {
    lines
        .iter()
        .filter(|line| wanted(line.kind))
        .try_for_each(|line| write_line(f, line.kind, &line.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\n\
        o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        c=IN IP4 127.0.0.1\r\n\
        t=0 0\r\n\
        m=audio 6000 RTP/AVP 0\r\n\
        a=rtpmap:0 PCMU/8000\r\n";

    const SIPP_OFFER_NO_RTPMAP: &str = "v=0\n\
        o=user1 53655765 2353687637 IN IP4 127.0.0.1\n\
        s=-\n\
        c=IN IP4 127.0.0.1\n\
        t=0 0\n\
        m=audio 6000 RTP/AVP 0\n";

    const RICH_SDP: &str = "v=0\r\n\
        o=- 4611731400430051336 2 IN IP4 gw.example.com\r\n\
        s=Talk\r\n\
        i=A call\r\n\
        c=IN IP4 192.0.2.10\r\n\
        b=AS:128\r\n\
        t=0 0\r\n\
        r=7d 1h 0 25h\r\n\
        a=tool:foo\r\n\
        a=sendrecv\r\n\
        m=video 5004 RTP/AVP 96\r\n\
        a=rtpmap:96 H264/90000\r\n\
        m=audio 4000/2 RTP/AVP 8 0 101\r\n\
        i=voice\r\n\
        c=IN IP6 2001:db8::1\r\n\
        b=TIAS:64000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=ptime:20\r\n\
        a=x-unknown\r\n";

    fn local() -> SocketAddr {
        "192.0.2.1:20000".parse().expect("test address literal")
    }

    fn version() -> SessionVersion {
        SessionVersion {
            session_id: 42,
            version: 1,
        }
    }

    fn parse(text: &str) -> SessionDescription {
        SessionDescription::parse(text).expect("test SDP should parse")
    }

    fn answer_default(text: &str) -> (SessionDescription, NegotiatedMedia) {
        answer(
            &parse(text),
            &LocalCapabilities::default(),
            local(),
            version(),
            &keys(),
        )
        .expect("test offer should be answerable")
    }

    const OUR_KEY_GCM: &str = "Y2FsbGJyaWRnZSBnY20ga2V5K2l0cyBzYWx0IQ==";
    const OUR_KEY_80: &str = "Y2FsbGJyaWRnZSBrZXk4MCBhbmQgaXRzIHNhbHQu";
    const OUR_KEY_32: &str = "Y2FsbGJyaWRnZSBrZXkzMiBhbmQgaXRzIHNhbHQu";
    const PEER_KEY_GCM: &str = "cGVlcidzIGdjbSBrZXkgYW5kIGl0cyBzYWx0Lg==";
    const PEER_KEY_80: &str = "cGVlciBrZXkgZm9yIEFFU19DTV84MCArIHNhbHQu";

    /// Our fixed SDES keys for the default suites.
    fn keys() -> SrtpKeys {
        SrtpKeys::new()
            .with("AEAD_AES_128_GCM", OUR_KEY_GCM)
            .with("AES_CM_128_HMAC_SHA1_80", OUR_KEY_80)
            .with("AES_CM_128_HMAC_SHA1_32", OUR_KEY_32)
    }

    fn caps_with(srtp: SrtpPolicy) -> LocalCapabilities {
        LocalCapabilities {
            srtp,
            ..LocalCapabilities::default()
        }
    }

    fn answer_with(
        caps: &LocalCapabilities,
        text: &str,
    ) -> Result<(SessionDescription, NegotiatedMedia), SdpError> {
        answer(&parse(text), caps, local(), version(), &keys())
    }

    fn answer_err(text: &str) -> SdpError {
        answer(
            &parse(text),
            &LocalCapabilities::default(),
            local(),
            version(),
            &keys(),
        )
        .expect_err("test offer should be refused")
    }

    /// An offer with the SIPp envelope and the given audio m-line block.
    fn offer_with(media: &str) -> String {
        format!(
            "v=0\r\no=alice 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n{media}"
        )
    }

    // --- parse and print ---------------------------------------------------

    #[test]
    fn round_trip_parse_print_parse() {
        let first = parse(RICH_SDP);
        let printed = first.to_string();
        let second = parse(&printed);
        assert_eq!(first, second);
        assert_eq!(printed, RICH_SDP, "RICH_SDP is already in canonical order");
        assert_eq!(
            first.origin.address,
            OriginAddress::Name {
                ipv6: false,
                name: "gw.example.com".to_string()
            }
        );
        assert_eq!(first.origin.session_id, 4611731400430051336);
        let audio = &first.media[1];
        assert_eq!(audio.port, 4000);
        assert_eq!(audio.port_count, Some(2));
        assert_eq!(audio.formats, ["8", "0", "101"]);
        assert_eq!(
            audio.connection.map(|c| c.address),
            Some("2001:db8::1".parse().expect("literal"))
        );
        assert_eq!(audio.bandwidth, ["TIAS:64000"]);
        assert_eq!(audio.attribute("x-unknown"), Some(None));
        assert_eq!(audio.attribute("ptime"), Some(Some("20")));
        assert_eq!(audio.fmtp(101), Some("0-15"));
        assert_eq!(audio.rtpmaps().len(), 2);
        assert_eq!(first.direction(), Some(Direction::SendRecv));
    }

    #[test]
    fn printer_uses_crlf_and_canonical_order() {
        // a= before c= and b= inside blocks, LF only, trailing blanks.
        let messy = "v=0\n\
            o=x 1 2 IN IP4 10.0.0.1  \n\
            a=recvonly\n\
            t=0 0\n\
            c=IN IP4 10.0.0.1\n\
            m=audio 7000 RTP/AVP 0\n\
            a=ptime:20\n\
            b=AS:64\t\n\
            c=IN IP4 10.0.0.2\n\
            \n";
        let sdp = parse(messy);
        assert_eq!(sdp.session_name, "");
        assert_eq!(
            sdp.to_string(),
            "v=0\r\no=x 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
             a=recvonly\r\nm=audio 7000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\nb=AS:64\r\na=ptime:20\r\n"
        );
    }

    #[test]
    fn connection_ttl_suffix_is_dropped() {
        let sdp = parse(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\nc=IN IP4 233.252.0.1/127/3\r\n",
        ));
        assert_eq!(
            sdp.media[0].connection,
            Some(Connection {
                address: "233.252.0.1".parse().expect("literal")
            })
        );
    }

    #[test]
    fn parser_rejects_bad_input_with_line_numbers() {
        let cases: [(&str, usize); 7] = [
            ("", 1),
            ("v=1\r\n", 1),
            ("o=x 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", 1),
            ("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio\r\n", 4),
            (
                "v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 6o00 RTP/AVP 0\r\n",
                5,
            ),
            (
                "v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
                3,
            ),
            ("v=0\r\no=x one 1 IN IP4 1.2.3.4\r\n", 2),
        ];
        for (text, line) in cases {
            match SessionDescription::parse(text) {
                Err(SdpError::Syntax { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let missing_origin = SessionDescription::parse("v=0\r\ns=-\r\n");
        assert!(matches!(
            missing_origin,
            Err(SdpError::Syntax { line: 2, .. })
        ));
        let no_formats =
            SessionDescription::parse("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=audio 6000 RTP/AVP\r\n");
        assert!(matches!(no_formats, Err(SdpError::Syntax { line: 3, .. })));
        let rejected_no_formats = parse("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=video 0 RTP/AVP\r\n");
        assert!(rejected_no_formats.media[0].formats.is_empty());
    }

    #[test]
    fn host_name_in_connection_is_bad_address() {
        let err = SessionDescription::parse(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\nc=IN IP4 media.example.com\r\n",
        ))
        .expect_err("host name c=");
        assert_eq!(
            err,
            SdpError::BadAddress(
                "line 7: 'media.example.com' is not an IP4 literal (host names are not supported)"
                    .to_string()
            )
        );
        let wrong_family = SessionDescription::parse(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\nc=IN IP6 10.0.0.1\r\n",
        ));
        assert!(matches!(wrong_family, Err(SdpError::BadAddress(_))));
    }

    #[test]
    fn error_text_is_safe_for_a_warning_header() {
        let err =
            SessionDescription::parse("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\n\"bad\\\u{7}line\r\n")
                .expect_err("garbage line");
        let text = err.to_string();
        assert_eq!(
            text,
            "SDP syntax error on line 3: expected <letter>=<value>, found '?bad??line'"
        );
        let long = format!("v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\n{}\r\n", "z".repeat(100));
        let text = SessionDescription::parse(&long)
            .expect_err("long garbage")
            .to_string();
        assert!(text.ends_with("zzz...'"), "{text}");
        assert!(text.len() < 120, "{text}");
    }

    // --- answering -----------------------------------------------------------

    #[test]
    fn answers_typical_sipp_offer_without_rtpmap() {
        let (sdp, media) = answer_default(SIPP_OFFER_NO_RTPMAP);
        assert_eq!(
            media,
            NegotiatedMedia {
                remote_rtp: Some("127.0.0.1:6000".parse().expect("literal")),
                remote_rtcp: Some("127.0.0.1:6001".parse().expect("literal")),
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event_pt: None,
                ptime_ms: 20,
                direction: Direction::SendRecv,
                rtcp_mux: false,
                opus: None,
                srtp: None,
            }
        );
        assert_eq!(
            sdp.to_string(),
            "v=0\r\n\
             o=callbridge 42 1 IN IP4 192.0.2.1\r\n\
             s=callbridge\r\n\
             c=IN IP4 192.0.2.1\r\n\
             t=0 0\r\n\
             m=audio 20000 RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        let (_, with_rtpmap) = answer_default(SIPP_OFFER);
        assert_eq!(with_rtpmap, media);
    }

    #[test]
    fn offerer_preference_wins_and_telephone_event_is_kept() {
        let (sdp, media) = answer_default(&offer_with(
            "m=audio 6000 RTP/AVP 8 0 101\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n",
        ));
        assert_eq!(media.codec, Codec::Pcma);
        assert_eq!(media.payload_type, 8);
        assert_eq!(media.telephone_event_pt, Some(101));
        let audio = &sdp.media[0];
        assert_eq!(audio.formats, ["8", "101"]);
        assert_eq!(
            audio.rtpmaps(),
            [Codec::Pcma.rtpmap(8), Codec::TelephoneEvent.rtpmap(101)]
        );
        assert_eq!(audio.fmtp(101), Some("0-16"));
    }

    #[test]
    fn offerer_dynamic_numbering_is_kept() {
        let (sdp, media) = answer_default(&offer_with(
            "m=audio 6000 RTP/AVP 98 96\r\n\
             a=rtpmap:98 pcmu/8000\r\n\
             a=rtpmap:96 Telephone-Event/8000\r\n\
             a=fmtp:96 0-15\r\n",
        ));
        assert_eq!((media.codec, media.payload_type), (Codec::Pcmu, 98));
        assert_eq!(media.telephone_event_pt, Some(96));
        assert_eq!(sdp.media[0].formats, ["98", "96"]);
        assert_eq!(sdp.media[0].fmtp(96), Some("0-15"));
    }

    #[test]
    fn telephone_event_without_fmtp_gets_default_and_can_be_disabled() {
        let offer =
            offer_with("m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        let (sdp, media) = answer_default(&offer);
        assert_eq!(media.telephone_event_pt, Some(101));
        assert_eq!(sdp.media[0].fmtp(101), Some("0-16"));

        let caps = LocalCapabilities {
            telephone_event: false,
            ..LocalCapabilities::default()
        };
        let (sdp, media) =
            answer(&parse(&offer), &caps, local(), version(), &keys()).expect("answerable");
        assert_eq!(media.telephone_event_pt, None);
        assert_eq!(sdp.media[0].formats, ["0"]);

        // telephone-event at 16 kHz does not go with an 8 kHz codec.
        let (_, media) = answer_default(&offer_with(
            "m=audio 6000 RTP/AVP 0 100\r\na=rtpmap:100 telephone-event/16000\r\n",
        ));
        assert_eq!(media.telephone_event_pt, None);
    }

    #[test]
    fn rtpmap_overrides_static_numbering_and_caps_filter() {
        // PT 0 relabelled as something else is not PCMU.
        let (_, media) = answer_default(&offer_with(
            "m=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 G729/8000\r\n",
        ));
        assert_eq!((media.codec, media.payload_type), (Codec::Pcma, 8));

        let caps = LocalCapabilities {
            codecs: vec![Codec::Pcma],
            ..LocalCapabilities::default()
        };
        let (_, media) = answer(
            &parse(&offer_with("m=audio 6000 RTP/AVP 0 8\r\n")),
            &caps,
            local(),
            version(),
            &keys(),
        )
        .expect("answerable");
        assert_eq!(media.codec, Codec::Pcma);
    }

    #[test]
    fn ptime_rules() {
        let ptime_of = |attrs: &str| {
            answer_default(&offer_with(&format!("m=audio 6000 RTP/AVP 0\r\n{attrs}")))
                .1
                .ptime_ms
        };
        assert_eq!(ptime_of("a=ptime:30\r\n"), 30);
        assert_eq!(ptime_of("a=ptime:25\r\n"), 20);
        assert_eq!(ptime_of("a=ptime:80\r\n"), 20);
        assert_eq!(ptime_of("a=ptime:abc\r\n"), 20);
        assert_eq!(ptime_of("a=ptime:40\r\na=maxptime:30\r\n"), 30);
        assert_eq!(ptime_of("a=maxptime:10\r\n"), 10);
        assert_eq!(ptime_of("a=maxptime:25\r\n"), 20);
        assert_eq!(ptime_of("a=maxptime:5\r\n"), 10);

        let (sdp, _) = answer_default(&offer_with("m=audio 6000 RTP/AVP 0\r\na=ptime:30\r\n"));
        assert_eq!(sdp.media[0].ptime(), Some(30));
    }

    #[test]
    fn other_streams_are_rejected_in_order() {
        let (sdp, media) = answer_default(&offer_with(
            "m=video 5004 RTP/AVP 96 97\r\n\
             a=rtpmap:96 H264/90000\r\n\
             m=audio 6000 RTP/AVP 0\r\n\
             m=audio 6002 RTP/AVP 8\r\n",
        ));
        assert_eq!(sdp.media.len(), 3);
        let video = &sdp.media[0];
        assert_eq!(
            (video.media.as_str(), video.port, video.protocol.as_str()),
            ("video", 0, "RTP/AVP")
        );
        assert_eq!(video.formats, ["96", "97"]);
        assert!(video.attributes.is_empty());
        assert_eq!(
            (sdp.media[1].port, sdp.media[1].formats.as_slice()),
            (20000, &["0".to_string()][..])
        );
        assert_eq!(sdp.media[2].port, 0);
        assert_eq!(
            media.remote_rtp,
            Some("198.51.100.7:6000".parse().expect("literal"))
        );
    }

    #[test]
    fn disabled_and_codecless_audio_lines_are_skipped() {
        let (sdp, media) = answer_default(&offer_with(
            "m=audio 0 RTP/AVP 0\r\n\
             m=audio 6000 RTP/AVP 18\r\n\
             m=audio 6002 RTP/AVP 8\r\n",
        ));
        assert_eq!(media.codec, Codec::Pcma);
        let ports: Vec<u16> = sdp.media.iter().map(|m| m.port).collect();
        assert_eq!(ports, [0, 0, 20000]);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            answer_err(&offer_with(
                "m=audio 6000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
            )),
            SdpError::NoCommonCodec
        );
        // RTP/SAVP without crypto lines: see sdes_policy_errors for the rest.
        assert_eq!(
            answer_err(&offer_with("m=audio 6000 RTP/SAVP 0\r\n")),
            SdpError::NoAcceptableCrypto
        );
        assert_eq!(
            answer_err(&offer_with(
                "m=audio 6000 UDP/TLS/RTP/SAVPF 0\r\nm=audio 6002 RTP/AVP 18\r\n"
            )),
            SdpError::NoCommonCodec
        );
        assert_eq!(
            answer_err(&offer_with("m=video 5004 RTP/AVP 96\r\n")),
            SdpError::NoAudio
        );
        assert_eq!(
            answer_err(&offer_with("m=audio 0 RTP/AVP 0\r\n")),
            SdpError::NoAudio
        );
        let no_connection =
            "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert!(matches!(answer_err(no_connection), SdpError::BadAddress(_)));
    }

    #[test]
    fn avpf_is_answered_with_avpf() {
        let (sdp, _) = answer_default(&offer_with("m=audio 6000 RTP/AVPF 0\r\n"));
        assert_eq!(sdp.media[0].protocol, "RTP/AVPF");
    }

    #[test]
    fn directions_are_mirrored() {
        let cases = [
            ("a=sendrecv\r\n", Direction::SendRecv),
            ("a=sendonly\r\n", Direction::RecvOnly),
            ("a=recvonly\r\n", Direction::SendOnly),
            ("a=inactive\r\n", Direction::Inactive),
            ("", Direction::SendRecv),
        ];
        for (attr, ours) in cases {
            let (sdp, media) =
                answer_default(&offer_with(&format!("m=audio 6000 RTP/AVP 0\r\n{attr}")));
            assert_eq!(media.direction, ours, "{attr:?}");
            assert_eq!(sdp.media[0].direction(), Some(ours));
        }
        // Session-level sendonly applies unless the m-line overrides it.
        let session_level =
            "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\na=sendonly\r\n";
        let (_, media) = answer_default(&format!("{session_level}m=audio 6000 RTP/AVP 0\r\n"));
        assert_eq!(media.direction, Direction::RecvOnly);
        let (_, media) = answer_default(&format!(
            "{session_level}m=audio 6000 RTP/AVP 0\r\na=inactive\r\n"
        ));
        assert_eq!(media.direction, Direction::Inactive);
    }

    #[test]
    fn unspecified_connection_address_is_hold() {
        let (_, media) = answer_default(
            "v=0\r\no=a 1 2 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
        );
        assert_eq!((media.remote_rtp, media.remote_rtcp), (None, None));
        assert_eq!(media.direction, Direction::SendRecv);
    }

    #[test]
    fn ipv6_connection() {
        let local6: SocketAddr = "[2001:db8::100]:30000".parse().expect("literal");
        let offer = parse(
            "v=0\r\no=a 1 1 IN IP6 2001:db8::7\r\ns=-\r\nc=IN IP6 2001:db8::7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
        );
        let (sdp, media) = answer(
            &offer,
            &LocalCapabilities::default(),
            local6,
            version(),
            &keys(),
        )
        .expect("answerable");
        assert_eq!(
            media.remote_rtp,
            Some("[2001:db8::7]:6000".parse().expect("literal"))
        );
        assert_eq!(
            media.remote_rtcp,
            Some("[2001:db8::7]:6001".parse().expect("literal"))
        );
        let text = sdp.to_string();
        assert!(
            text.contains("o=callbridge 42 1 IN IP6 2001:db8::100\r\n"),
            "{text}"
        );
        assert!(text.contains("c=IN IP6 2001:db8::100\r\n"), "{text}");
    }

    #[test]
    fn rtcp_mux_and_rtcp_attribute() {
        let (sdp, media) = answer_default(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\na=rtcp-mux\r\na=rtcp:7000\r\n",
        ));
        assert!(media.rtcp_mux);
        assert_eq!(media.remote_rtcp, media.remote_rtp);
        assert!(sdp.media[0].has_attribute("rtcp-mux"));

        let (sdp, media) = answer_default(&offer_with(
            "m=audio 6000 RTP/AVP 0\r\na=rtcp:7001 IN IP4 203.0.113.9\r\n",
        ));
        assert!(!media.rtcp_mux);
        assert!(!sdp.media[0].has_attribute("rtcp-mux"));
        assert_eq!(
            media.remote_rtcp,
            Some("203.0.113.9:7001".parse().expect("literal"))
        );

        let (_, media) = answer_default(&offer_with("m=audio 6000 RTP/AVP 0\r\na=rtcp:7001\r\n"));
        assert_eq!(
            media.remote_rtcp,
            Some("198.51.100.7:7001".parse().expect("literal"))
        );

        let (_, media) = answer_default(&offer_with("m=audio 65535 RTP/AVP 0\r\n"));
        assert_eq!(media.remote_rtcp, None, "port + 1 would overflow");
    }

    // --- offering ------------------------------------------------------------

    #[test]
    fn offer_lists_all_codecs_with_rtpmaps() {
        let caps = LocalCapabilities {
            codecs: vec![Codec::Pcma, Codec::Pcmu, Codec::TelephoneEvent, Codec::Pcma],
            telephone_event: true,
            ptime_ms: 20,
            ..LocalCapabilities::default()
        };
        let sdp = offer(&caps, local(), version(), &keys());
        assert_eq!(
            sdp.to_string(),
            "v=0\r\n\
             o=callbridge 42 1 IN IP4 192.0.2.1\r\n\
             s=callbridge\r\n\
             c=IN IP4 192.0.2.1\r\n\
             t=0 0\r\n\
             m=audio 20000 RTP/AVP 8 0 101\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        assert_eq!(parse(&sdp.to_string()), sdp);
    }

    #[test]
    fn offer_then_accept_answer() {
        let our_offer = offer(&LocalCapabilities::default(), local(), version(), &keys());
        let peer: SocketAddr = "203.0.113.5:40000".parse().expect("literal");
        let (their_answer, their_view) = answer(
            &parse(&our_offer.to_string()),
            &LocalCapabilities {
                codecs: vec![Codec::Pcma, Codec::Pcmu],
                ..LocalCapabilities::default()
            },
            peer,
            SessionVersion {
                session_id: 7,
                version: 1,
            },
            &keys(),
        )
        .expect("peer answers");
        // The offerer's preference (PCMU first) wins over the answerer's.
        assert_eq!(their_view.codec, Codec::Pcmu);

        let ours =
            accept_answer(&our_offer, &parse(&their_answer.to_string())).expect("answer fits");
        assert_eq!(
            ours,
            NegotiatedMedia {
                remote_rtp: Some(peer),
                remote_rtcp: Some("203.0.113.5:40001".parse().expect("literal")),
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event_pt: Some(101),
                ptime_ms: 20,
                direction: Direction::SendRecv,
                rtcp_mux: false,
                opus: None,
                srtp: None,
            }
        );
    }

    fn answer_to_our_offer(media: &str) -> String {
        format!(
            "v=0\r\no=bob 9 9 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n{media}"
        )
    }

    #[test]
    fn accept_answer_details() {
        let our_offer = offer(&LocalCapabilities::default(), local(), version(), &keys());
        let accept = |media: &str| accept_answer(&our_offer, &parse(&answer_to_our_offer(media)));

        let media =
            accept("m=audio 40000 RTP/AVP 101 8\r\na=sendonly\r\na=ptime:30\r\n").expect("fits");
        assert_eq!((media.codec, media.payload_type), (Codec::Pcma, 8));
        assert_eq!(media.telephone_event_pt, Some(101));
        assert_eq!(media.direction, Direction::RecvOnly);
        assert_eq!(media.ptime_ms, 30);

        let media = accept("m=audio 40000 RTP/AVP 0\r\n").expect("fits");
        assert_eq!(media.telephone_event_pt, None);

        // We offered sendonly (hold); a sendrecv answer cannot make us receive.
        let mut hold = our_offer.clone();
        hold.media[0].attributes.retain(|a| a.name != "sendrecv");
        hold.media[0].attributes.push(Attribute::flag("sendonly"));
        let media = accept_answer(
            &hold,
            &parse(&answer_to_our_offer("m=audio 40000 RTP/AVP 0\r\n")),
        )
        .expect("fits");
        assert_eq!(media.direction, Direction::SendOnly);
    }

    #[test]
    fn accept_answer_mismatches() {
        let our_offer = offer(&LocalCapabilities::default(), local(), version(), &keys());
        let accept = |media: &str| accept_answer(&our_offer, &parse(&answer_to_our_offer(media)));
        let mismatch = |result: Result<NegotiatedMedia, SdpError>| {
            matches!(result, Err(SdpError::AnswerMismatch(_)))
        };
        assert!(
            mismatch(accept("m=audio 40000 RTP/AVP 18\r\n")),
            "codec not offered"
        );
        assert!(
            mismatch(accept("m=audio 40000 RTP/AVP 101\r\n")),
            "only telephone-event"
        );
        assert!(
            mismatch(accept("m=audio 40000 RTP/SAVP 0\r\n")),
            "transport changed"
        );
        assert!(
            mismatch(accept("m=video 40000 RTP/AVP 0\r\n")),
            "media changed"
        );
        assert!(mismatch(accept(
            "m=audio 40000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n"
        )));
        assert!(mismatch(accept("")), "no m-lines");
        assert_eq!(accept("m=audio 0 RTP/AVP 0\r\n"), Err(SdpError::NoAudio));
        assert_eq!(
            accept("m=audio 40000 RTP/AVP 18\r\n")
                .expect_err("mismatch")
                .to_string(),
            "SDP answer does not match our offer: format '18' was not offered"
        );
    }

    // --- G722 and opus -------------------------------------------------------

    fn opus_caps() -> LocalCapabilities {
        LocalCapabilities {
            codecs: vec![Codec::Opus, Codec::Pcmu],
            ..LocalCapabilities::default()
        }
    }

    #[test]
    fn g722_is_answered_with_static_payload_type_9() {
        let caps = LocalCapabilities {
            codecs: vec![Codec::G722, Codec::Pcmu],
            ..LocalCapabilities::default()
        };
        for block in [
            "m=audio 6000 RTP/AVP 9 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
            "m=audio 6000 RTP/AVP 9 0 101\r\na=rtpmap:9 g722/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        ] {
            let (sdp, media) = answer_with(&caps, &offer_with(block)).expect("answerable");
            assert_eq!((media.codec, media.payload_type), (Codec::G722, 9));
            assert_eq!((media.telephone_event_pt, media.opus), (Some(101), None));
            assert_eq!(
                sdp.media[0].to_string(),
                "m=audio 20000 RTP/AVP 9 101\r\n\
                 a=rtpmap:9 G722/8000\r\n\
                 a=rtpmap:101 telephone-event/8000\r\n\
                 a=fmtp:101 0-16\r\n\
                 a=ptime:20\r\n\
                 a=sendrecv\r\n"
            );
        }
        // G722/16000 is not the RFC 3551 registration: the next format wins.
        let (_, media) = answer_with(
            &caps,
            &offer_with("m=audio 6000 RTP/AVP 96 0\r\na=rtpmap:96 G722/16000\r\n"),
        )
        .expect("answerable");
        assert_eq!(media.codec, Codec::Pcmu);
        // Without G722 in our list, the offerer's next choice.
        let (_, media) = answer_default(&offer_with("m=audio 6000 RTP/AVP 9 8\r\n"));
        assert_eq!(media.codec, Codec::Pcma);
    }

    #[test]
    fn opus_answer_copies_payload_type_and_states_our_fmtp() {
        let (sdp, media) = answer_with(
            &opus_caps(),
            &offer_with(
                "m=audio 6000 RTP/AVP 109 0 101 100\r\n\
                 a=rtpmap:109 OPUS/48000/2\r\n\
                 a=fmtp:109 maxplaybackrate=16000; sprop-maxcapturerate=16000; useinbandfec=1\r\n\
                 a=rtpmap:101 telephone-event/8000\r\n\
                 a=rtpmap:100 telephone-event/48000\r\n\
                 a=fmtp:100 0-15\r\n",
            ),
        )
        .expect("answerable");
        assert_eq!((media.codec, media.payload_type), (Codec::Opus, 109));
        assert_eq!(media.telephone_event_pt, Some(100), "the 48 kHz one");
        assert_eq!(
            media.opus,
            Some(OpusParams {
                max_playback_rate: 16000,
                sprop_max_capture_rate: 16000,
                use_inband_fec: true,
            })
        );
        assert_eq!(
            sdp.media[0].to_string(),
            "m=audio 20000 RTP/AVP 109 100\r\n\
             a=rtpmap:109 opus/48000/2\r\n\
             a=fmtp:109 useinbandfec=1; maxplaybackrate=48000; stereo=0\r\n\
             a=rtpmap:100 telephone-event/48000\r\n\
             a=fmtp:100 0-15\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );

        // RFC 7587 §7: the rtpmap is always opus/48000/2.
        for rtpmap in ["opus/48000", "opus/48000/1", "opus/16000/2"] {
            let (_, media) = answer_with(
                &opus_caps(),
                &offer_with(&format!(
                    "m=audio 6000 RTP/AVP 96 0\r\na=rtpmap:96 {rtpmap}\r\n"
                )),
            )
            .expect("answerable");
            assert_eq!((media.codec, media.opus), (Codec::Pcmu, None), "{rtpmap}");
        }

        // No fmtp: RFC 7587 defaults; only 8 kHz telephone-event: none with opus.
        let (_, media) = answer_with(
            &opus_caps(),
            &offer_with(
                "m=audio 6000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
            ),
        )
        .expect("answerable");
        assert_eq!(media.opus, Some(OpusParams::default()));
        assert_eq!(media.telephone_event_pt, None);
    }

    #[test]
    fn opus_fmtp_parameters() {
        let defaults = OpusParams {
            max_playback_rate: 48000,
            sprop_max_capture_rate: 48000,
            use_inband_fec: false,
        };
        assert_eq!(OpusParams::default(), defaults);
        let cases = [
            ("", defaults),
            (
                "minptime=10;useinbandfec=1",
                OpusParams {
                    use_inband_fec: true,
                    ..defaults
                },
            ),
            (
                " MaxPlaybackRate = 24000 ;stereo=1",
                OpusParams {
                    max_playback_rate: 24000,
                    ..defaults
                },
            ),
            (
                // Out of range: clamped to 8000..=48000.
                "maxplaybackrate=4000; sprop-maxcapturerate=96000",
                OpusParams {
                    max_playback_rate: 8000,
                    ..defaults
                },
            ),
            (
                // Malformed ones are skipped; of the well-formed, the first wins.
                "maxplaybackrate=abc; maxplaybackrate=12000; maxplaybackrate=16000",
                OpusParams {
                    max_playback_rate: 12000,
                    ..defaults
                },
            ),
            (
                "useinbandfec=1; useinbandfec=0",
                OpusParams {
                    use_inband_fec: true,
                    ..defaults
                },
            ),
            (
                "useinbandfec=yes;;=;useinbandfec;maxplaybackrate=+9000",
                defaults,
            ),
        ];
        for (fmtp, expected) in cases {
            assert_eq!(OpusParams::from_fmtp(fmtp), expected, "{fmtp:?}");
        }
    }

    #[test]
    fn offer_prefers_opus_with_pcmu_fallback() {
        let our_offer = offer(&opus_caps(), local(), version(), &keys());
        assert_eq!(
            our_offer.media[0].to_string(),
            "m=audio 20000 RTP/AVP 111 0 101 110\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             a=fmtp:111 useinbandfec=1; maxplaybackrate=48000; stereo=0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=rtpmap:110 telephone-event/48000\r\n\
             a=fmtp:110 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );

        // A peer preferring PCMU still takes opus: the offerer's order wins.
        let peer: SocketAddr = "203.0.113.5:40000".parse().expect("literal");
        let pcmu_first = LocalCapabilities {
            codecs: vec![Codec::Pcmu, Codec::Opus],
            ..LocalCapabilities::default()
        };
        let (their_answer, their_view) = answer(
            &parse(&our_offer.to_string()),
            &pcmu_first,
            peer,
            version(),
            &SrtpKeys::new(),
        )
        .expect("peer answers");
        let opus_at_111 = |m: &NegotiatedMedia| (m.codec, m.payload_type, m.telephone_event_pt);
        assert_eq!(opus_at_111(&their_view), (Codec::Opus, 111, Some(110)));
        let our_fmtp = OpusParams {
            use_inband_fec: true,
            ..OpusParams::default()
        };
        assert_eq!(their_view.opus, Some(our_fmtp), "the peer reads our fmtp");
        let ours = accept_answer(&our_offer, &parse(&their_answer.to_string())).expect("fits");
        assert_eq!(opus_at_111(&ours), (Codec::Opus, 111, Some(110)));
        assert_eq!(ours.opus, Some(our_fmtp), "we read the peer's (same) fmtp");

        // The answer's opus fmtp is what we get.
        let ours = accept_answer(
            &our_offer,
            &parse(&answer_to_our_offer(
                "m=audio 40000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 maxplaybackrate=8000;sprop-maxcapturerate=16000\r\n",
            )),
        )
        .expect("fits");
        assert_eq!(
            ours.opus,
            Some(OpusParams {
                max_playback_rate: 8000,
                sprop_max_capture_rate: 16000,
                use_inband_fec: false,
            })
        );
        assert_eq!(ours.telephone_event_pt, None, "not in the answer");

        // A PCMU answer gets PCMU with the 8 kHz telephone-event.
        let ours = accept_answer(
            &our_offer,
            &parse(&answer_to_our_offer("m=audio 40000 RTP/AVP 0 101\r\n")),
        )
        .expect("fits");
        assert_eq!(
            (ours.codec, ours.telephone_event_pt, ours.opus),
            (Codec::Pcmu, Some(101), None)
        );

        // Answering, we follow the offerer's order even though we prefer opus.
        let (_, media) = answer_with(
            &opus_caps(),
            &offer_with("m=audio 6000 RTP/AVP 0 111\r\na=rtpmap:111 opus/48000/2\r\n"),
        )
        .expect("answerable");
        assert_eq!(media.codec, Codec::Pcmu);
    }

    #[test]
    fn offered_payload_types_avoid_clashes() {
        let caps = LocalCapabilities {
            codecs: vec![Codec::G722, Codec::Opus, Codec::Pcma],
            telephone_event: false,
            ..LocalCapabilities::default()
        };
        let sdp = offer(&caps, local(), version(), &keys());
        assert_eq!(sdp.media[0].formats, ["9", "111", "8"]);
        let rtpmaps: Vec<String> = sdp.media[0]
            .rtpmaps()
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(rtpmaps, ["9 G722/8000", "111 opus/48000/2", "8 PCMA/8000"]);
    }

    // --- SDES-SRTP -----------------------------------------------------------

    /// RFC 4568 §8.1: every line carries an MKI, the third two keys.
    const RFC4568_CRYPTO: &str = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
        a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32\r\n\
        a=crypto:3 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP\r\n";

    fn savp_offer(crypto: &str) -> String {
        offer_with(&format!("m=audio 49170 RTP/SAVP 0\r\n{crypto}"))
    }

    fn srtp_of(result: Result<(SessionDescription, NegotiatedMedia), SdpError>) -> NegotiatedSrtp {
        result.expect("answerable").1.srtp.expect("SRTP negotiated")
    }

    #[test]
    fn sdes_answer_takes_the_first_acceptable_offered_line() {
        // §8.1-style: the first line has an MKI; the second does not; the
        // third (GCM, our favourite) is acceptable too but comes later.
        let text = savp_offer(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20\r\n\
             a=crypto:3 AEAD_AES_128_GCM inline:cGVlcidzIGdjbSBrZXkgYW5kIGl0cyBzYWx0Lg==\r\n",
        );
        let (sdp, media) = answer_default(&text);
        assert_eq!(
            media.srtp,
            Some(NegotiatedSrtp {
                suite: "AES_CM_128_HMAC_SHA1_32".to_string(),
                tag: 2,
                remote_key_params: "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20"
                    .to_string(),
                local_key_params: format!("inline:{OUR_KEY_32}"),
            })
        );
        assert_eq!(
            sdp.to_string(),
            format!(
                "v=0\r\n\
                 o=callbridge 42 1 IN IP4 192.0.2.1\r\n\
                 s=callbridge\r\n\
                 c=IN IP4 192.0.2.1\r\n\
                 t=0 0\r\n\
                 m=audio 20000 RTP/SAVP 0\r\n\
                 a=rtpmap:0 PCMU/8000\r\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{OUR_KEY_32}\r\n\
                 a=ptime:20\r\n\
                 a=sendrecv\r\n"
            )
        );

        // The RFC 4568 §8.1 offer itself: MKIs everywhere, nothing acceptable.
        assert_eq!(
            answer_err(&savp_offer(RFC4568_CRYPTO)),
            SdpError::NoAcceptableCrypto
        );
    }

    #[test]
    fn sdes_suites_are_filtered_by_ours_and_by_keys() {
        let text = savp_offer(&format!(
            "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{}\r\n\
             a=crypto:2 NO_SUCH_SUITE inline:{PEER_KEY_80}\r\n\
             a=crypto:3 AEAD_AES_128_GCM inline:{PEER_KEY_GCM}\r\n\
             a=crypto:4 aes_cm_128_hmac_sha1_80 inline:{PEER_KEY_80}\r\n",
            "QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVmMTIzNDU2Nzg5QUJD"
        ));
        let srtp = srtp_of(answer_with(&LocalCapabilities::default(), &text));
        assert_eq!((srtp.tag, srtp.suite.as_str()), (3, "AEAD_AES_128_GCM"));

        // Without GCM in our list, tag 4, answered in our spelling.
        let caps = LocalCapabilities {
            srtp_suites: vec!["AES_CM_128_HMAC_SHA1_80".to_string()],
            ..LocalCapabilities::default()
        };
        let (sdp, media) = answer_with(&caps, &text).expect("answerable");
        let srtp = media.srtp.expect("SRTP");
        assert_eq!(
            (srtp.tag, srtp.suite.as_str()),
            (4, "AES_CM_128_HMAC_SHA1_80")
        );
        assert_eq!(
            sdp.media[0].attribute("crypto"),
            Some(Some(
                format!("4 AES_CM_128_HMAC_SHA1_80 inline:{OUR_KEY_80}").as_str()
            ))
        );

        // A suite we list but hold no (usable) key for is skipped too.
        let only_80 = SrtpKeys::new()
            .with("AEAD_AES_128_GCM", "too short")
            .with("AES_CM_128_HMAC_SHA1_80", OUR_KEY_80);
        let (_, media) = answer(
            &parse(&text),
            &LocalCapabilities::default(),
            local(),
            version(),
            &only_80,
        )
        .expect("answerable");
        assert_eq!(media.srtp.map(|s| s.tag), Some(4));
        assert_eq!(
            answer(
                &parse(&text),
                &LocalCapabilities::default(),
                local(),
                version(),
                &SrtpKeys::new(),
            ),
            Err(SdpError::NoAcceptableCrypto)
        );
    }

    #[test]
    fn sdes_session_parameters() {
        let good = format!("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80}\r\n");
        for param in [
            "UNENCRYPTED_SRTP",
            "UNENCRYPTED_SRTCP",
            "UNAUTHENTICATED_SRTP",
            "KDR=1",
            "KDR=24",
            "FEC_KEY=inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "FEC_ORDER=OTHER",
            "WSH=lots",
            "SOMETHING_NEW=1",
            "KDR=0 UNENCRYPTED_SRTP",
        ] {
            let text = savp_offer(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80} {param}\r\n{good}"
            ));
            assert_eq!(
                srtp_of(answer_with(&caps_with(SrtpPolicy::Offer), &text)).tag,
                2,
                "{param}"
            );
        }
        for param in [
            "KDR=0",
            "WSH=128",
            "-X_VENDOR_THING",
            "FEC_ORDER=SRTP_FEC",
            "KDR=0 WSH=64",
        ] {
            let text = savp_offer(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80} {param}\r\n{good}"
            ));
            assert_eq!(
                srtp_of(answer_with(&caps_with(SrtpPolicy::Offer), &text)).tag,
                1,
                "{param}"
            );
        }
    }

    #[test]
    fn sdes_key_parameters_must_be_one_plain_inline_key() {
        let key = PEER_KEY_80;
        for key_params in [
            format!("inline:{key}|2^20|1:4"),
            format!("inline:{key}|1:4"),
            format!("inline:{key}|2^20;inline:{key}|2^20"),
            format!("inline:{key};inline:{key}"),
            format!("inline:{key}|"),
            format!("inline:{key}|0"),
            format!("inline:{key}|2^x"),
            format!("uri:{key}"),
            format!("inline:{}", &key[4..]),
            format!("inline:{key}AAAA"),
            format!("inline:{}!", &key[1..]),
            format!("inline:{key}==="),
            "inline:".to_string(),
            PEER_KEY_80.to_string(),
        ] {
            let text = savp_offer(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key_params}\r\n"
            ));
            assert_eq!(
                answer_err(&text),
                SdpError::NoAcceptableCrypto,
                "{key_params}"
            );
        }
        for line in [
            format!("a=crypto:1234567890 AES_CM_128_HMAC_SHA1_80 inline:{key}"),
            format!("a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:{key}"),
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80".to_string(),
            "a=crypto".to_string(),
        ] {
            assert_eq!(
                answer_err(&savp_offer(&format!("{line}\r\n"))),
                SdpError::NoAcceptableCrypto,
                "{line}"
            );
        }
        // Lifetimes are fine and reach the media layer; GCM keys may drop their padding.
        for (suite, key_params) in [
            ("AES_CM_128_HMAC_SHA1_80", format!("inline:{key}|2^31")),
            ("AES_CM_128_HMAC_SHA1_80", format!("INLINE:{key}|1048576")),
            ("AEAD_AES_128_GCM", format!("inline:{PEER_KEY_GCM}")),
            (
                "AEAD_AES_128_GCM",
                format!("inline:{}", PEER_KEY_GCM.trim_end_matches('=')),
            ),
        ] {
            let text = savp_offer(&format!("a=crypto:7 {suite} {key_params}\r\n"));
            let srtp = srtp_of(answer_with(&LocalCapabilities::default(), &text));
            assert_eq!((srtp.tag, srtp.remote_key_params), (7, key_params));
        }
    }

    #[test]
    fn sdes_two_line_offer_follows_the_policy() {
        let savp = format!(
            "m=audio 6002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80}\r\n"
        );
        let avp = "m=audio 6000 RTP/AVP 0\r\n";
        let accepted = |policy, media: &str| {
            let (sdp, negotiated) =
                answer_with(&caps_with(policy), &offer_with(media)).expect("answerable");
            let ports: Vec<u16> = sdp.media.iter().map(|m| m.port).collect();
            let chosen = sdp
                .media
                .iter()
                .find(|m| m.port != 0)
                .expect("one accepted");
            let remote_port = negotiated.remote_rtp.map(|a| a.port());
            (
                ports,
                chosen.protocol.clone(),
                remote_port,
                negotiated.srtp.is_some(),
            )
        };
        let avp_then_savp = format!("{avp}{savp}");
        let savp_then_avp = format!("{savp}{avp}");
        let savp_won = |ports: Vec<u16>| (ports, "RTP/SAVP".to_string(), Some(6002), true);
        let avp_won = |ports: Vec<u16>| (ports, "RTP/AVP".to_string(), Some(6000), false);
        assert_eq!(
            accepted(SrtpPolicy::Offer, &avp_then_savp),
            savp_won(vec![0, 20000])
        );
        assert_eq!(
            accepted(SrtpPolicy::Require, &avp_then_savp),
            savp_won(vec![0, 20000])
        );
        assert_eq!(
            accepted(SrtpPolicy::Refuse, &avp_then_savp),
            avp_won(vec![20000, 0])
        );
        assert_eq!(
            accepted(SrtpPolicy::Offer, &savp_then_avp),
            savp_won(vec![20000, 0])
        );
        assert_eq!(
            accepted(SrtpPolicy::Refuse, &savp_then_avp),
            avp_won(vec![0, 20000])
        );

        // Best effort: with no usable crypto line, Offer falls back to plain RTP.
        let bad_savp = "m=audio 6002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n";
        assert_eq!(
            accepted(SrtpPolicy::Offer, &format!("{bad_savp}{avp}")),
            avp_won(vec![0, 20000])
        );
        assert_eq!(
            answer_with(
                &caps_with(SrtpPolicy::Require),
                &offer_with(&format!("{bad_savp}{avp}"))
            ),
            Err(SdpError::NoAcceptableCrypto)
        );
    }

    #[test]
    fn sdes_policy_errors() {
        let err = |policy, media: &str| {
            answer_with(&caps_with(policy), &offer_with(media)).expect_err("refused")
        };
        let avp_only = "m=audio 6000 RTP/AVP 0\r\n";
        let savp_only = format!(
            "m=audio 6000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80}\r\n"
        );
        assert_eq!(err(SrtpPolicy::Require, avp_only), SdpError::SrtpRequired);
        assert_eq!(
            err(SrtpPolicy::Require, "m=audio 6000 RTP/AVPF 0\r\n"),
            SdpError::SrtpRequired
        );
        assert_eq!(
            err(SrtpPolicy::Refuse, &savp_only),
            SdpError::UnsupportedTransport("RTP/SAVP".to_string())
        );
        assert_eq!(
            err(SrtpPolicy::Require, "m=audio 6000 UDP/TLS/RTP/SAVPF 0\r\n"),
            SdpError::UnsupportedTransport("UDP/TLS/RTP/SAVPF".to_string())
        );
        assert_eq!(
            err(
                SrtpPolicy::Require,
                &format!("m=audio 6000 RTP/SAVP 18\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80}\r\n")
            ),
            SdpError::NoCommonCodec
        );
        assert_eq!(
            err(SrtpPolicy::Offer, "m=audio 6000 RTP/SAVP 0\r\n"),
            SdpError::NoAcceptableCrypto
        );
        // Crypto trouble on the SAVP line outranks codec trouble on the AVP one.
        assert_eq!(
            err(
                SrtpPolicy::Offer,
                "m=audio 6000 RTP/AVP 18\r\nm=audio 6002 RTP/SAVP 0\r\n"
            ),
            SdpError::NoAcceptableCrypto
        );
        // The policies that take SAVP(F) answer it in kind.
        for policy in [SrtpPolicy::Offer, SrtpPolicy::Require] {
            let (sdp, _) = answer_with(
                &caps_with(policy),
                &offer_with(&savp_only.replace("RTP/SAVP", "RTP/SAVPF")),
            )
            .expect("answerable");
            assert_eq!(sdp.media[0].protocol, "RTP/SAVPF");
        }
        assert_eq!(SrtpPolicy::default(), SrtpPolicy::Offer);
        assert_eq!(SrtpPolicy::from_name("REQUIRE"), Some(SrtpPolicy::Require));
        assert_eq!(SrtpPolicy::from_name("sometimes"), None);
        assert_eq!(SrtpPolicy::Refuse.to_string(), "refuse");
    }

    #[test]
    fn sdes_offer_and_accept_answer_round_trip() {
        let caps = caps_with(SrtpPolicy::Require);
        let our_offer = offer(&caps, local(), version(), &keys());
        assert_eq!(
            our_offer.media[0].to_string(),
            format!(
                "m=audio 20000 RTP/SAVP 0 8 101\r\n\
                 a=rtpmap:0 PCMU/8000\r\n\
                 a=rtpmap:8 PCMA/8000\r\n\
                 a=rtpmap:101 telephone-event/8000\r\n\
                 a=fmtp:101 0-16\r\n\
                 a=crypto:1 AEAD_AES_128_GCM inline:{OUR_KEY_GCM}\r\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{OUR_KEY_80}\r\n\
                 a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{OUR_KEY_32}\r\n\
                 a=ptime:20\r\n\
                 a=sendrecv\r\n"
            )
        );

        // A peer that only does the 80-bit suite answers tag 2 with its own key.
        let peer: SocketAddr = "203.0.113.5:40000".parse().expect("literal");
        let peer_caps = LocalCapabilities {
            srtp_suites: vec!["AES_CM_128_HMAC_SHA1_80".to_string()],
            ..LocalCapabilities::default()
        };
        let peer_keys = SrtpKeys::new().with("AES_CM_128_HMAC_SHA1_80", PEER_KEY_80);
        let (their_answer, their_view) = answer(
            &parse(&our_offer.to_string()),
            &peer_caps,
            peer,
            version(),
            &peer_keys,
        )
        .expect("peer answers");
        let ours = accept_answer(&our_offer, &parse(&their_answer.to_string())).expect("fits");
        assert_eq!(
            ours.srtp,
            Some(NegotiatedSrtp {
                suite: "AES_CM_128_HMAC_SHA1_80".to_string(),
                tag: 2,
                remote_key_params: format!("inline:{PEER_KEY_80}"),
                local_key_params: format!("inline:{OUR_KEY_80}"),
            })
        );
        let theirs = their_view.srtp.expect("peer has SRTP");
        let ours = ours.srtp.expect("we have SRTP");
        assert_eq!(
            (theirs.remote_key_params, theirs.local_key_params),
            (ours.local_key_params, ours.remote_key_params),
            "each side's inbound key is the other's outbound key"
        );

        // Suites without a usable key are left out; tags stay consecutive.
        let two = SrtpKeys::new()
            .with("AES_CM_128_HMAC_SHA1_32", OUR_KEY_32)
            .with("AES_CM_128_HMAC_SHA1_80", OUR_KEY_80)
            .with("AEAD_AES_128_GCM", "not base64!");
        let sdp = offer(&caps, local(), version(), &two);
        let lines: Vec<&str> = sdp.media[0].attribute_values("crypto").collect();
        assert_eq!(
            lines,
            [
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{OUR_KEY_80}"),
                format!("2 AES_CM_128_HMAC_SHA1_32 inline:{OUR_KEY_32}"),
            ]
        );
        // No keys at all: SAVP without crypto, which fails closed.
        let keyless = offer(&caps, local(), version(), &SrtpKeys::new());
        assert_eq!(keyless.media[0].protocol, "RTP/SAVP");
        assert!(!keyless.media[0].has_attribute("crypto"));
        // Other policies offer plain RTP.
        for policy in [SrtpPolicy::Offer, SrtpPolicy::Refuse] {
            let sdp = offer(&caps_with(policy), local(), version(), &keys());
            assert_eq!(sdp.media[0].protocol, "RTP/AVP");
            assert!(!sdp.media[0].has_attribute("crypto"));
        }
    }

    #[test]
    fn sdes_accept_answer_mismatches() {
        let our_offer = offer(&caps_with(SrtpPolicy::Require), local(), version(), &keys());
        let accept = |media: &str| accept_answer(&our_offer, &parse(&answer_to_our_offer(media)));
        let savp = |crypto: &str| format!("m=audio 40000 RTP/SAVP 0\r\n{crypto}");
        let peer_80 = format!("inline:{PEER_KEY_80}");
        for (answer_media, why) in [
            (savp(""), "no crypto"),
            (
                "m=audio 40000 RTP/AVP 0\r\n".to_string(),
                "transport changed",
            ),
            (
                savp(&format!("a=crypto:4 AES_CM_128_HMAC_SHA1_80 {peer_80}\r\n")),
                "tag not offered",
            ),
            (
                savp(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {peer_80}\r\n")),
                "suite changed",
            ),
            (
                savp(&format!(
                    "a=crypto:2 AES_CM_128_HMAC_SHA1_80 {peer_80}|2^20|1:4\r\n"
                )),
                "MKI",
            ),
            (
                savp(&format!(
                    "a=crypto:2 AES_CM_128_HMAC_SHA1_80 {peer_80} UNENCRYPTED_SRTP\r\n"
                )),
                "unencrypted",
            ),
            (
                savp(&format!(
                    "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_GCM}\r\n"
                )),
                "key length",
            ),
        ] {
            let err = accept(&answer_media).expect_err(why);
            assert!(matches!(err, SdpError::AnswerMismatch(_)), "{why}: {err:?}");
            let text = err.to_string();
            for secret in [
                PEER_KEY_80,
                PEER_KEY_GCM,
                OUR_KEY_80,
                OUR_KEY_GCM,
                OUR_KEY_32,
            ] {
                assert!(!text.contains(secret), "{why}: {text}");
            }
            assert!(!text.contains("inline"), "{why}: {text}");
        }
        let media = accept(&savp(&format!(
            "a=crypto:3 AES_CM_128_HMAC_SHA1_32 {peer_80}|2^31 WSH=64\r\n"
        )))
        .expect("fits");
        let srtp = media.srtp.expect("SRTP");
        assert_eq!(
            (srtp.tag, srtp.remote_key_params, srtp.local_key_params),
            (3, format!("{peer_80}|2^31"), format!("inline:{OUR_KEY_32}"))
        );
    }

    #[test]
    fn keys_stay_out_of_debug_and_errors() {
        let text = savp_offer(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80}\r\n"
        ));
        let (_, media) = answer_default(&text);
        let debug = format!("{media:?} {:?}", keys());
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("AES_CM_128_HMAC_SHA1_80"), "{debug}");
        for secret in [PEER_KEY_80, OUR_KEY_80, OUR_KEY_GCM, OUR_KEY_32] {
            assert!(!debug.contains(secret), "{debug}");
        }
        for err in [
            SdpError::NoAcceptableCrypto,
            SdpError::SrtpRequired,
            answer_err(&savp_offer(RFC4568_CRYPTO)),
        ] {
            assert!(!err.to_string().contains("inline"), "{err}");
        }
    }

    #[test]
    fn srtp_keys_helpers() {
        let suites: Vec<String> = ["AES_CM_128_HMAC_SHA1_80", "aes_cm_128_hmac_sha1_80", "NOPE"]
            .map(str::to_string)
            .to_vec();
        let mut asked = Vec::new();
        let made = SrtpKeys::from_fn(&suites, |suite| {
            asked.push(suite.to_string());
            (suite != "NOPE").then(|| OUR_KEY_80.to_string())
        });
        assert_eq!(asked, ["AES_CM_128_HMAC_SHA1_80", "NOPE"], "once per suite");
        assert_eq!(made.key("Aes_Cm_128_Hmac_Sha1_80"), Some(OUR_KEY_80));
        assert_eq!(made.key("NOPE"), None);
        let mut replaced = made.clone();
        replaced.insert("AES_CM_128_HMAC_SHA1_80", OUR_KEY_32.to_string());
        assert_eq!(replaced.key("AES_CM_128_HMAC_SHA1_80"), Some(OUR_KEY_32));
        assert_eq!(format!("{made:?}"), "[\"AES_CM_128_HMAC_SHA1_80\"]");
        assert_eq!(
            LocalCapabilities::new(vec![Codec::Pcma], false, 30),
            LocalCapabilities {
                codecs: vec![Codec::Pcma],
                telephone_event: false,
                ptime_ms: 30,
                srtp: SrtpPolicy::Offer,
                srtp_suites: DEFAULT_SRTP_SUITES.map(str::to_string).to_vec(),
            }
        );
    }

    // --- robustness ----------------------------------------------------------

    /// Exercises everything downstream of a successful parse.
    fn exercise(text: &str, our_offers: &[SessionDescription]) {
        let Ok(sdp) = SessionDescription::parse(text) else {
            return;
        };
        let printed = sdp.to_string();
        let reparsed = SessionDescription::parse(&printed)
            .unwrap_or_else(|e| panic!("printed SDP must parse: {e}\n{printed:?}"));
        assert_eq!(reparsed.to_string(), printed, "printing is stable");
        let all_codecs_no_srtp = LocalCapabilities {
            codecs: vec![Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma],
            srtp: SrtpPolicy::Refuse,
            ..LocalCapabilities::default()
        };
        for caps in [
            LocalCapabilities::default(),
            caps_with(SrtpPolicy::Require),
            all_codecs_no_srtp,
        ] {
            let Ok((answer_sdp, ours)) = answer(&sdp, &caps, local(), version(), &keys()) else {
                continue;
            };
            let answer_sdp = SessionDescription::parse(&answer_sdp.to_string())
                .unwrap_or_else(|e| panic!("our answer must parse: {e}\n{text:?}"));
            // Whatever we answer, the offerer can accept.
            let theirs = accept_answer(&sdp, &answer_sdp)
                .unwrap_or_else(|e| panic!("our answer must fit: {e}\n{text:?}"));
            assert_eq!(
                (theirs.codec, theirs.payload_type, theirs.srtp.is_some()),
                (ours.codec, ours.payload_type, ours.srtp.is_some()),
                "{text:?}"
            );
            assert_eq!(ours.opus.is_some(), ours.codec == Codec::Opus);
            if let Some(srtp) = &ours.srtp {
                let debug = format!("{ours:?}");
                assert!(!debug.contains(&srtp.local_key_params[7..]), "{debug}");
            }
        }
        for our_offer in our_offers {
            let _ = accept_answer(our_offer, &sdp);
            let _ = accept_answer(&sdp, our_offer);
        }
        for media in &sdp.media {
            let _ = (
                media.rtpmaps(),
                media.rtcp(),
                media.ptime(),
                media.maxptime(),
            );
            if let Some(pt) = media.payload_types().next() {
                let _ = OpusParams::from_fmtp(media.fmtp(pt).unwrap_or_default());
            }
        }
    }

    #[test]
    fn never_panics_on_mutated_input() {
        let our_offers = [
            offer(&LocalCapabilities::default(), local(), version(), &keys()),
            offer(&caps_with(SrtpPolicy::Require), local(), version(), &keys()),
            offer(&opus_caps(), local(), version(), &keys()),
        ];
        let their_answer = answer_to_our_offer(
            "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:40001 IN IP4 203.0.113.5\r\na=ptime:20\r\na=maxptime:40\r\na=rtcp-mux\r\n",
        );
        let their_srtp_answer = answer_to_our_offer(&format!(
            "m=audio 40000 RTP/SAVP 111 110\r\na=rtpmap:111 opus/48000/2\r\n\
             a=fmtp:111 maxplaybackrate=16000; useinbandfec=1\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80}|2^31 KDR=0\r\n"
        ));
        let srtp_offer = offer_with(&format!(
            "m=audio 6000 RTP/AVP 0\r\n\
             m=audio 6002 RTP/SAVPF 96 9 0 101\r\n\
             a=rtpmap:96 opus/48000/2\r\n\
             a=fmtp:96 sprop-maxcapturerate=24000;useinbandfec=0\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
             a=crypto:2 AEAD_AES_128_GCM inline:{PEER_KEY_GCM} UNENCRYPTED_SRTCP\r\n\
             a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{PEER_KEY_80}|2^20 WSH=64 -X\r\n\
             a=crypto:4 AEAD_AES_128_GCM inline:{PEER_KEY_GCM}\r\n"
        ));
        let samples = [
            SIPP_OFFER.to_string(),
            RICH_SDP.to_string(),
            our_offers[0].to_string(),
            their_answer,
            their_srtp_answer,
            srtp_offer,
            savp_offer(RFC4568_CRYPTO),
        ];
        let replacements: &[u8] = b" \r\n=:/0|9;-.\xff\t";
        let mut runs = 0;
        for sample in &samples {
            let bytes = sample.as_bytes();
            for end in 0..=bytes.len() {
                exercise(&String::from_utf8_lossy(&bytes[..end]), &our_offers);
                runs += 1;
            }
            for position in 0..bytes.len() {
                for &replacement in replacements {
                    let mut mutated = bytes.to_vec();
                    mutated[position] = replacement;
                    exercise(&String::from_utf8_lossy(&mutated), &our_offers);
                    let mut deleted = bytes.to_vec();
                    deleted.remove(position);
                    exercise(&String::from_utf8_lossy(&deleted), &our_offers);
                    runs += 2;
                }
            }
        }
        assert!(runs > 50_000, "ran {runs} mutations");
    }

    #[test]
    fn codec_and_direction_helpers() {
        assert_eq!(Codec::Pcmu.encoding_name(), "PCMU");
        assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
        assert_eq!(Codec::TelephoneEvent.static_payload_type(), None);
        assert_eq!(Codec::TelephoneEvent.clock_rate(), 8000);
        assert_eq!(Codec::from_static_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_static_payload_type(18), None);
        let stereo = RtpMap::parse("0 PCMU/8000/2").expect("well-formed");
        assert_eq!(Codec::from_rtpmap(&stereo), None);
        assert_eq!(RtpMap::parse("0 PCMU"), None);
        assert_eq!(RtpMap::parse("200 PCMU/8000"), None);
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(
            Direction::SendRecv.intersect(Direction::RecvOnly),
            Direction::RecvOnly
        );
        assert_eq!(
            Direction::from_attribute_name("SENDONLY"),
            Some(Direction::SendOnly)
        );
        assert_eq!(
            version().next(),
            SessionVersion {
                session_id: 42,
                version: 2
            }
        );
    }
}
