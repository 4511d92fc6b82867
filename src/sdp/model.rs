//! The SDP data model: [`SessionDescription`] and the lines it is made of
//! ([`Origin`], [`Connection`], [`Attribute`], [`MediaDescription`],
//! [`RtpMap`], [`RtcpAttribute`], ...), the [`Codec`] and [`Direction`]
//! vocabulary, and the read-only questions negotiation asks of a session or
//! an m-line (attributes, rtpmaps, fmtp, ptime, direction and connection in
//! force).
//!
//! It must not read or write SDP text (`parse` and `print` do) nor make
//! offer/answer decisions (`negotiate` and `crypto` do): it holds data and
//! answers questions about it.

use std::fmt;
use std::net::IpAddr;

use super::parse::parse_decimal;
use super::{DEFAULT_OPUS_PT, DEFAULT_TELEPHONE_EVENT_PT, OPUS_FMTP};

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

/// A c= line: `IN IP4 x` or `IN IP6 x`. A multicast TTL / address count
/// suffix is accepted and dropped; host names are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection {
    /// The connection address.
    pub address: IpAddr,
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

    pub(super) fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    pub(super) fn lists_payload_type(&self, pt: u8) -> bool {
        self.payload_types().any(|listed| listed == pt)
    }

    pub(super) fn attribute_values<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.name.eq_ignore_ascii_case(name))
            .filter_map(|a| a.value.as_deref())
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

/// An a=rtcp value (RFC 3605): `<port> [IN IP4|IP6 <address>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttribute {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the c= address.
    pub address: Option<IpAddr>,
}

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

    /// G.711 (μ-law or A-law): one byte a sample, no codec state, so a frame can be passed on
    /// as it came, and the cheapest codec to carry (no enhanced RTP resource).
    pub fn is_g711(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma)
    }

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
    /// for G722, 48000 for opus (which may code less, see [`OpusParams`](super::OpusParams)).
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
    /// (telephone-event's follow the offer, see
    /// [`DEFAULT_TELEPHONE_EVENT_FMTP`](super::DEFAULT_TELEPHONE_EVENT_FMTP)).
    pub(super) fn local_fmtp(&self) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::tests::*;
    use crate::sdp::SessionVersion;

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
