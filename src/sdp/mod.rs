//! SDP session descriptions (RFC 8866, formerly RFC 4566) and the offer/answer
//! rules of RFC 3264, narrowed to what callbridge needs: one negotiated audio
//! stream per call.
//!
//! This module owns:
//! - the SDP data model ([`SessionDescription`], [`MediaDescription`] and friends),
//! - a tolerant parser ([`SessionDescription::parse`]) and a canonical printer
//!   (`Display`: CRLF line ends, RFC line order),
//! - offer/answer negotiation ([`offer`], [`answer`], [`accept_answer`]) whose
//!   result, [`NegotiatedMedia`], is what the media engine consumes.
//!
//! It must not do I/O: no sockets, no clock, no randomness. Local addresses
//! and the o= session id/version come from the caller; the SIP layer owns the
//! dialog (and bumps the version per RFC 3264 §8), the media engine owns the
//! sockets.
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

// ---------------------------------------------------------------------------
// Negotiation: the entry points the SIP layer calls
// ---------------------------------------------------------------------------

/// What the local side supports, in preference order.
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
}

impl Default for LocalCapabilities {
    fn default() -> Self {
        LocalCapabilities {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime_ms: DEFAULT_PTIME_MS,
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
    /// RTP payload type of telephone-event when both sides use it (offerer's numbering).
    pub telephone_event_pt: Option<u8>,
    /// Packetisation time to send with.
    pub ptime_ms: u32,
    /// The stream direction from OUR point of view (peer sendonly ⇒ we recvonly).
    pub direction: Direction,
    /// RTP and RTCP share one port (RFC 5761).
    pub rtcp_mux: bool,
}

/// Builds an offer for one audio stream with all our codecs (static payload
/// types where they have one), telephone-event as dynamic PT 101 with
/// `a=fmtp:101 0-16` when enabled, `a=ptime` and `a=sendrecv`.
///
/// `local_rtp` is the address the peer should send RTP to; it must be a
/// concrete address (not 0.0.0.0) unless the caller means to put the call on
/// hold the RFC 2543 way.
pub fn offer(
    caps: &LocalCapabilities,
    local_rtp: SocketAddr,
    version: SessionVersion,
) -> SessionDescription {
    let mut formats = Vec::new();
    let mut attributes = Vec::new();
    for (codec, pt) in offered_payload_types(caps) {
        formats.push(pt.to_string());
        attributes.push(rtpmap_attribute(pt, codec));
    }
    if caps.telephone_event {
        let pt = DEFAULT_TELEPHONE_EVENT_PT;
        formats.push(pt.to_string());
        attributes.push(rtpmap_attribute(pt, Codec::TelephoneEvent));
        attributes.push(fmtp_attribute(pt, DEFAULT_TELEPHONE_EVENT_FMTP));
    }
    attributes.push(Attribute::new("ptime", Some(caps.ptime_ms.to_string())));
    attributes.push(Attribute::flag(Direction::SendRecv.attribute_name()));

    let audio = MediaDescription {
        media: "audio".to_string(),
        port: local_rtp.port(),
        port_count: None,
        protocol: "RTP/AVP".to_string(),
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
/// The first `audio` m-line with RTP/AVP (or RTP/AVPF) transport, a non-zero
/// port and a codec we share is accepted; every other m-line is rejected
/// (port 0, same media and proto, formats copied, no attributes), so the
/// answer has exactly as many m-lines as the offer, in order (RFC 3264 §6).
///
/// Errors (all mean "answer 488" to the SIP layer): [`SdpError::NoAudio`],
/// [`SdpError::NoCommonCodec`], [`SdpError::UnsupportedTransport`], and
/// [`SdpError::BadAddress`] when the accepted stream has no c= line.
pub fn answer(
    offer: &SessionDescription,
    caps: &LocalCapabilities,
    local_rtp: SocketAddr,
    version: SessionVersion,
) -> Result<(SessionDescription, NegotiatedMedia), SdpError> {
    let choice = choose_audio_stream(offer, caps)?;
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
    };
    Ok((local_session(version, local_rtp.ip(), media), negotiated))
}

/// Processes the answer to an offer we sent.
///
/// The answer must have as many m-lines as our offer, keep media type and
/// transport of the accepted audio line, and list one of our offered codecs
/// first (telephone-event aside), in our numbering; otherwise
/// [`SdpError::AnswerMismatch`]. An answer that rejects every audio stream
/// gives [`SdpError::NoAudio`].
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
    })
}

// ---------------------------------------------------------------------------
// Codecs and directions
// ---------------------------------------------------------------------------

/// A codec we can speak. New codecs (G722, opus, ...) are added as variants
/// plus one row in each `match` below and an entry in [`Codec::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static PT 0, 8000 Hz.
    Pcmu,
    /// G.711 A-law, static PT 8, 8000 Hz.
    Pcma,
    /// RFC 4733 named telephone events (DTMF), dynamic PT, 8000 Hz.
    TelephoneEvent,
}

impl Codec {
    /// Every codec this module knows, for lookups.
    pub const ALL: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::TelephoneEvent];

    /// The rtpmap encoding name (compared case-insensitively when parsing).
    pub fn encoding_name(&self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::TelephoneEvent => "telephone-event",
        }
    }

    /// The RTP clock rate as written in rtpmap (for G722 this will be 8000
    /// although it samples at 16 kHz, RFC 3551 §4.5.2).
    pub fn clock_rate(&self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => 8000,
        }
    }

    /// Number of audio channels (the rtpmap encoding parameter; 1 if absent).
    pub fn channels(&self) -> u8 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => 1,
        }
    }

    /// The RFC 3551 static payload type, or `None` for dynamic-only codecs.
    pub fn static_payload_type(&self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::TelephoneEvent => None,
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
    /// and channel count must all match.
    pub fn from_rtpmap(map: &RtpMap) -> Option<Codec> {
        Codec::ALL.into_iter().find(|codec| {
            let channels = map.encoding_params.as_deref().unwrap_or("1");
            map.encoding_name
                .eq_ignore_ascii_case(codec.encoding_name())
                && map.clock_rate == codec.clock_rate()
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
    /// Audio offered over RTP/AVP(F) but with no codec we support.
    NoCommonCodec,
    /// Audio offered only over transports we do not do (e.g. RTP/SAVP).
    UnsupportedTransport(String),
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
            SdpError::UnsupportedTransport(proto) => write!(
                f,
                "unsupported media transport {proto} (only RTP/AVP and RTP/AVPF)"
            ),
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
}

/// Finds the first acceptable audio stream, or the error that best explains
/// why there is none: codec trouble beats transport trouble beats no audio.
fn choose_audio_stream<'a>(
    offer: &'a SessionDescription,
    caps: &LocalCapabilities,
) -> Result<StreamChoice<'a>, SdpError> {
    let ours = local_audio_codecs(caps);
    let mut unsupported_transport = None;
    let mut saw_rtp_audio = false;
    for (index, media) in offer.media.iter().enumerate() {
        if !media.is_audio() || media.port == 0 {
            continue; // not audio, or a stream the offerer has disabled
        }
        if !is_supported_transport(&media.protocol) {
            unsupported_transport.get_or_insert_with(|| sanitize(&media.protocol));
            continue;
        }
        saw_rtp_audio = true;
        if let Some(choice) = choose_codec(index, media, &ours, caps.telephone_event) {
            return Ok(choice);
        }
    }
    Err(match (saw_rtp_audio, unsupported_transport) {
        (true, _) => SdpError::NoCommonCodec,
        (false, Some(proto)) => SdpError::UnsupportedTransport(proto),
        (false, None) => SdpError::NoAudio,
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

/// Payload types for our offer: static ones where defined, else dynamic
/// numbers from 96 up, skipping the one telephone-event uses.
fn offered_payload_types(caps: &LocalCapabilities) -> Vec<(Codec, u8)> {
    let mut dynamic = DYNAMIC_PTS.filter(|pt| *pt != DEFAULT_TELEPHONE_EVENT_PT);
    local_audio_codecs(caps)
        .into_iter()
        .filter_map(|codec| {
            // Dynamic numbers only run out with more than 31 dynamic codecs;
            // such a codec is then left out rather than given a clashing number.
            let pt = codec.static_payload_type().or_else(|| dynamic.next())?;
            Some((codec, pt))
        })
        .collect()
}

fn is_supported_transport(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("RTP/AVP") || protocol.eq_ignore_ascii_case("RTP/AVPF")
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
    if let Some((pt, fmtp)) = &choice.telephone_event {
        formats.push(pt.to_string());
        attributes.push(rtpmap_attribute(*pt, Codec::TelephoneEvent));
        attributes.push(fmtp_attribute(*pt, fmtp));
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
        )
        .expect("test offer should be answerable")
    }

    fn answer_err(text: &str) -> SdpError {
        answer(
            &parse(text),
            &LocalCapabilities::default(),
            local(),
            version(),
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
        let (sdp, media) = answer(&parse(&offer), &caps, local(), version()).expect("answerable");
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
        assert_eq!(
            answer_err(&offer_with("m=audio 6000 RTP/SAVP 0\r\n")),
            SdpError::UnsupportedTransport("RTP/SAVP".to_string())
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
        let (sdp, media) =
            answer(&offer, &LocalCapabilities::default(), local6, version()).expect("answerable");
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
        };
        let sdp = offer(&caps, local(), version());
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
        let our_offer = offer(&LocalCapabilities::default(), local(), version());
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
        let our_offer = offer(&LocalCapabilities::default(), local(), version());
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
        let our_offer = offer(&LocalCapabilities::default(), local(), version());
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

    // --- robustness ----------------------------------------------------------

    /// Exercises everything downstream of a successful parse.
    fn exercise(text: &str, our_offer: &SessionDescription) {
        let Ok(sdp) = SessionDescription::parse(text) else {
            return;
        };
        let printed = sdp.to_string();
        let reparsed = SessionDescription::parse(&printed)
            .unwrap_or_else(|e| panic!("printed SDP must parse: {e}\n{printed:?}"));
        assert_eq!(reparsed.to_string(), printed, "printing is stable");
        if let Ok((answer_sdp, _)) = answer(&sdp, &LocalCapabilities::default(), local(), version())
        {
            SessionDescription::parse(&answer_sdp.to_string()).expect("our answer must parse");
        }
        let _ = accept_answer(our_offer, &sdp);
        let _ = accept_answer(&sdp, our_offer);
        for media in &sdp.media {
            let _ = (
                media.rtpmaps(),
                media.rtcp(),
                media.ptime(),
                media.maxptime(),
            );
        }
    }

    #[test]
    fn never_panics_on_mutated_input() {
        let our_offer = offer(&LocalCapabilities::default(), local(), version());
        let their_answer = answer_to_our_offer(
            "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:40001 IN IP4 203.0.113.5\r\na=ptime:20\r\na=maxptime:40\r\na=rtcp-mux\r\n",
        );
        let samples = [
            SIPP_OFFER.to_string(),
            RICH_SDP.to_string(),
            our_offer.to_string(),
            their_answer,
        ];
        let replacements: &[u8] = b" \r\n=:/0 9x-.\xff\t";
        let mut runs = 0;
        for sample in &samples {
            let bytes = sample.as_bytes();
            for end in 0..=bytes.len() {
                exercise(&String::from_utf8_lossy(&bytes[..end]), &our_offer);
                runs += 1;
            }
            for position in 0..bytes.len() {
                for &replacement in replacements {
                    let mut mutated = bytes.to_vec();
                    mutated[position] = replacement;
                    exercise(&String::from_utf8_lossy(&mutated), &our_offer);
                    let mut deleted = bytes.to_vec();
                    deleted.remove(position);
                    exercise(&String::from_utf8_lossy(&deleted), &our_offer);
                    runs += 2;
                }
            }
        }
        assert!(runs > 10_000, "ran {runs} mutations");
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
