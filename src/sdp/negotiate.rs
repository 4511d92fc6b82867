//! Offer/answer (RFC 3264) for the one audio stream of a call: [`offer`],
//! [`answer`] and [`accept_answer`], the settings they take
//! ([`LocalCapabilities`], [`SessionVersion`]) and the result the media
//! engine consumes ([`NegotiatedMedia`], [`OpusParams`]).
//!
//! It must not do I/O, read a clock or draw randomness: addresses, the o=
//! version and SRTP keys come from the caller. What an acceptable
//! `a=crypto` line is, and which one to take, is `crypto`'s business; this
//! file only asks it.

use std::net::{IpAddr, SocketAddr};

use super::crypto::{answered_crypto, choose_crypto, crypto_attribute, local_srtp_suites};
use super::error::{quote, sanitize};
use super::parse::parse_decimal;
use super::{
    Attribute, Codec, Connection, Direction, MediaDescription, NegotiatedSrtp, Origin,
    OriginAddress, RtpMap, SdpError, SessionDescription, SrtpKeys, SrtpPolicy, DEFAULT_PTIME_MS,
    DEFAULT_SRTP_SUITES, DEFAULT_TELEPHONE_EVENT_FMTP, DEFAULT_TELEPHONE_EVENT_PT,
};

/// Name used for the o= username and the s= line of the SDPs we write.
const LOCAL_NAME: &str = "callbridge";
/// Smallest a=ptime we honour; also the step our framing works in.
const PTIME_STEP_MS: u32 = 10;
/// Largest a=ptime we honour (longer packets make DTMF and jitter worse).
const MAX_PTIME_MS: u32 = 60;
/// RTP dynamic payload type range (RFC 3551 §3).
const DYNAMIC_PTS: std::ops::RangeInclusive<u8> = 96..=127;
/// The dynamic payload type we give telephone-event at 48 kHz (to go with
/// opus, RFC 4733 §2.1) in our offers.
const TELEPHONE_EVENT_48K_PT: u8 = 110;

/// Builds an offer for one audio stream with all our codecs (static payload
/// types where they have one, opus as 111 with [`OPUS_FMTP`](super::OPUS_FMTP), others from 96
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
/// answered with [`OPUS_FMTP`](super::OPUS_FMTP); the offerer's opus fmtp lands in
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
    let (choice, negotiated) = agree(offer, caps, keys)?;
    let mut accepted = Some(accepted_media(
        choice.media,
        &choice,
        negotiated.ptime_ms,
        negotiated.direction,
        negotiated.rtcp_mux,
        local_rtp.port(),
    ));
    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(index, m)| match accepted.take() {
            Some(ours) if index == choice.index => ours,
            other => {
                accepted = other;
                rejected_media(m)
            }
        })
        .collect();
    Ok((local_session(version, local_rtp.ip(), media), negotiated))
}

/// What [`answer`] would agree to for `offer` (the same checks, the same errors), without
/// building the answer: a UAS checks an INVITE's offer with it before any media is
/// allocated, and builds the answer once it has its RTP port.
pub fn negotiate(
    offer: &SessionDescription,
    caps: &LocalCapabilities,
    keys: &SrtpKeys,
) -> Result<NegotiatedMedia, SdpError> {
    agree(offer, caps, keys).map(|(_, negotiated)| negotiated)
}

/// The stream [`answer`] accepts and what it agrees for it.
fn agree<'a>(
    offer: &'a SessionDescription,
    caps: &LocalCapabilities,
    keys: &SrtpKeys,
) -> Result<(StreamChoice<'a>, NegotiatedMedia), SdpError> {
    let choice = choose_audio_stream(offer, caps, keys)?;
    let offered = choice.media;
    let rtcp_mux = offered.has_attribute("rtcp-mux");
    let (remote_rtp, remote_rtcp) = remote_endpoints(offer, offered, rtcp_mux)?;
    let ptime_ms = negotiate_ptime(offered, caps.ptime_ms);
    // The offer's direction is the offerer's view; ours is its mirror image.
    let direction = offered.effective_direction(offer).reversed();
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
        srtp: choice.srtp.clone(),
    };
    Ok((choice, negotiated))
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
    /// `maxaveragebitrate`: the most the peer wants to receive on average, in
    /// bit/s; our encoder should not exceed it. `None` when absent or outside
    /// 6000..=510000, which RFC 7587 says to ignore.
    pub max_average_bitrate: Option<u32>,
}

impl Default for OpusParams {
    fn default() -> Self {
        OpusParams::RFC_DEFAULTS
    }
}

/// Opus rates RFC 7587 allows for maxplaybackrate / sprop-maxcapturerate.
const OPUS_MIN_RATE: u32 = 8000;
const OPUS_MAX_RATE: u32 = 48000;

impl OpusParams {
    /// What a peer that says nothing means (RFC 7587 §6.1): no band limit either way, no FEC.
    pub const RFC_DEFAULTS: OpusParams = OpusParams {
        max_playback_rate: OPUS_MAX_RATE,
        sprop_max_capture_rate: OPUS_MAX_RATE,
        use_inband_fec: false,
        max_average_bitrate: None,
    };

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
                "maxaveragebitrate" => match parse_decimal::<u64>(value) {
                    Some(bps) if (6_000..=510_000).contains(&bps) => {
                        params.max_average_bitrate = u32::try_from(bps).ok();
                        true
                    }
                    _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::tests::*;

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
                max_average_bitrate: None,
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
            max_average_bitrate: None,
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
            (
                "maxaveragebitrate=16000",
                OpusParams {
                    max_average_bitrate: Some(16_000),
                    ..defaults
                },
            ),
            (
                // Outside 6000..=510000: ignored (RFC 7587 §6.1); the next well-formed wins.
                "maxaveragebitrate=5999; maxaveragebitrate=600000; MaxAverageBitrate=6000",
                OpusParams {
                    max_average_bitrate: Some(6_000),
                    ..defaults
                },
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
                max_average_bitrate: None,
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
}
