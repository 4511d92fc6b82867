//! RTP packet view, header writer and receive-side sequence accounting.
//!
//! Owns: the RTP wire format of RFC 3550 §5.1 (fixed header, CSRC list, header extension,
//! padding), the RFC 8285 one-byte and two-byte header-extension element forms, the RFC 5761 §4
//! RTP/RTCP demultiplexing rule, in-place header rewriting for relaying, the RFC 3550 Appendix A.1
//! sequence-number validation (`update_seq`) with the A.3 loss figures, and wraparound-safe
//! arithmetic on sequence numbers and timestamps.
//! Must not: allocate, copy payloads, read the clock, or panic on anything that came off the
//! network. It does not know codecs, SSRC ownership, RTCP contents or SRTP; a packet that fails
//! validation is reported with the [`RtpError`] variant naming what is wrong with it.

use std::fmt;

/// The only RTP version on the wire (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed header, before CSRCs and extension.
pub const RTP_FIXED_HEADER_LEN: usize = 12;
/// The CC field is four bits wide.
pub const RTP_MAX_CSRCS: usize = 15;
/// `defined by profile` value announcing RFC 8285 one-byte extension elements.
pub const EXTENSION_PROFILE_ONE_BYTE: u16 = 0xBEDE;
/// RFC 8285 two-byte form: `0x100` followed by four application bits.
pub const EXTENSION_PROFILE_TWO_BYTE: u16 = 0x1000;

/// RFC 3550 A.1: packets in sequence needed before a new source is believed.
pub const MIN_SEQUENTIAL: u8 = 2;
/// RFC 3550 A.1: largest forward jump still taken as loss rather than a restart.
pub const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: largest backward step still taken as reordering rather than a restart.
pub const MAX_MISORDER: u16 = 100;
/// Size of the sequence number space.
const RTP_SEQ_MOD: u32 = 1 << 16;

/// Everything that can be wrong with an RTP packet or with a header to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Fewer bytes than the 12-byte fixed header.
    TooShort { len: usize },
    /// Version field other than 2.
    BadVersion { version: u8 },
    /// The CC field announces more CSRCs than the packet holds.
    CsrcOverrun { csrc_count: u8, len: usize },
    /// X is set but the 4-byte extension header does not fit.
    ExtensionHeaderOverrun { len: usize },
    /// The extension length (in 32-bit words) runs past the end of the packet.
    ExtensionOverrun { words: u16, available: usize },
    /// P is set and the padding count (last byte) is zero.
    ZeroPadding,
    /// P is set and the padding count exceeds the bytes after the headers.
    PaddingOverrun { padding: u8, available: usize },
    /// An RFC 8285 extension element runs past the end of the extension data.
    ExtensionElementOverrun { id: u8 },
    /// The output buffer cannot hold what is to be written.
    BufferTooSmall { needed: usize, available: usize },
    /// More than 15 CSRCs to write.
    TooManyCsrcs { count: usize },
    /// Payload type does not fit in 7 bits.
    PayloadTypeOutOfRange { payload_type: u8 },
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RtpError::TooShort { len } => {
                write!(
                    f,
                    "RTP packet of {len} bytes is shorter than the fixed header"
                )
            }
            RtpError::BadVersion { version } => write!(f, "RTP version {version}, expected 2"),
            RtpError::CsrcOverrun { csrc_count, len } => {
                write!(f, "{csrc_count} CSRCs do not fit in a {len}-byte packet")
            }
            RtpError::ExtensionHeaderOverrun { len } => {
                write!(
                    f,
                    "header extension flagged but {len}-byte packet has no room for it"
                )
            }
            RtpError::ExtensionOverrun { words, available } => write!(
                f,
                "header extension of {words} words exceeds the {available} bytes left"
            ),
            RtpError::ZeroPadding => f.write_str("padding flagged with a zero padding count"),
            RtpError::PaddingOverrun { padding, available } => write!(
                f,
                "padding count {padding} exceeds the {available} bytes after the headers"
            ),
            RtpError::ExtensionElementOverrun { id } => {
                write!(f, "header extension element {id} runs past the extension")
            }
            RtpError::BufferTooSmall { needed, available } => {
                write!(f, "need {needed} bytes, buffer has {available}")
            }
            RtpError::TooManyCsrcs { count } => write!(f, "{count} CSRCs, at most 15 allowed"),
            RtpError::PayloadTypeOutOfRange { payload_type } => {
                write!(f, "payload type {payload_type} does not fit in 7 bits")
            }
        }
    }
}

impl std::error::Error for RtpError {}

/// RFC 5761 §4 demultiplexing on a shared RTP/RTCP port: version 2 and a second octet in
/// 192..=223 (RTCP packet types 192–223; RTP payload types 64–95 are kept off muxed ports).
/// Only the 4-byte RTCP common header is required; RTCP contents are the RTCP parser's business.
pub fn is_rtcp(buf: &[u8]) -> bool {
    if buf.len() < 4 {
        return false;
    }
    buf[0] >> 6 == RTP_VERSION && (192..=223).contains(&buf[1])
}

/// Validates `buf` as an RTP packet and returns a zero-copy view of it.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let len = buf.len();
    if len < RTP_FIXED_HEADER_LEN {
        return Err(RtpError::TooShort { len });
    }
    let version = buf[0] >> 6;
    if version != RTP_VERSION {
        return Err(RtpError::BadVersion { version });
    }
    let csrc_count = buf[0] & 0x0f;
    let csrc_end = RTP_FIXED_HEADER_LEN + 4 * usize::from(csrc_count);
    if csrc_end > len {
        return Err(RtpError::CsrcOverrun { csrc_count, len });
    }

    let mut payload_start = csrc_end;
    let mut extension_start = 0;
    if buf[0] & 0x10 != 0 {
        if csrc_end + 4 > len {
            return Err(RtpError::ExtensionHeaderOverrun { len });
        }
        let words = u16::from_be_bytes([buf[csrc_end + 2], buf[csrc_end + 3]]);
        extension_start = csrc_end + 4;
        let available = len - extension_start;
        let ext_len = 4 * usize::from(words);
        if ext_len > available {
            return Err(RtpError::ExtensionOverrun { words, available });
        }
        payload_start = extension_start + ext_len;
    }

    let mut payload_end = len;
    if buf[0] & 0x20 != 0 {
        let padding = buf[len - 1];
        let available = len - payload_start;
        if padding == 0 {
            return Err(RtpError::ZeroPadding);
        }
        if usize::from(padding) > available {
            return Err(RtpError::PaddingOverrun { padding, available });
        }
        payload_end = len - usize::from(padding);
    }

    Ok(RtpPacket {
        buf,
        extension_start,
        payload_start,
        payload_end,
    })
}

/// Writes a version-2 fixed header plus CSRC list (P and X clear) and returns its length.
pub fn write_header(out: &mut [u8], header: &RtpHeader<'_>) -> Result<usize, RtpError> {
    let count = header.csrcs.len();
    if count > RTP_MAX_CSRCS {
        return Err(RtpError::TooManyCsrcs { count });
    }
    if header.payload_type > 0x7f {
        return Err(RtpError::PayloadTypeOutOfRange {
            payload_type: header.payload_type,
        });
    }
    let needed = header.len();
    if out.len() < needed {
        return Err(RtpError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    // `count` ≤ 15 was checked above, so the cast cannot truncate.
    out[0] = (RTP_VERSION << 6) | count as u8;
    out[1] = (u8::from(header.marker) << 7) | header.payload_type;
    out[2..4].copy_from_slice(&header.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
    for (chunk, csrc) in out[RTP_FIXED_HEADER_LEN..needed]
        .chunks_exact_mut(4)
        .zip(header.csrcs)
    {
        chunk.copy_from_slice(&csrc.to_be_bytes());
    }
    Ok(needed)
}

/// Writes header and payload back to back; returns the packet length.
pub fn write_packet(
    out: &mut [u8],
    header: &RtpHeader<'_>,
    payload: &[u8],
) -> Result<usize, RtpError> {
    let needed = header.len() + payload.len();
    if out.len() < needed {
        return Err(RtpError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    let header_len = write_header(out, header)?;
    out[header_len..needed].copy_from_slice(payload);
    Ok(needed)
}

/// `a - b` in sequence space: positive when `a` is after `b`, correct across the 65535→0 wrap.
pub fn seq_distance(a: u16, b: u16) -> i32 {
    i32::from(a.wrapping_sub(b) as i16)
}

/// Whether sequence number `a` comes after `b` (within half the sequence space).
pub fn seq_newer(a: u16, b: u16) -> bool {
    seq_distance(a, b) > 0
}

/// `a - b` in RTP timestamp units, correct across the 2^32 wrap.
pub fn ts_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// A validated RTP packet borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The whole datagram.
    buf: &'a [u8],
    /// Offset of the extension data (after its 4-byte header); 0 when X is clear.
    extension_start: usize,
    /// Offset of the first payload byte.
    payload_start: usize,
    /// Offset one past the last payload byte (padding excluded).
    payload_end: usize,
}

impl<'a> RtpPacket<'a> {
    /// Always 2 for a parsed packet.
    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }

    /// P bit: the packet ends in padding.
    pub fn padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// X bit: a header extension follows the CSRC list.
    pub fn has_extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }

    /// CC field.
    pub fn csrc_count(&self) -> u8 {
        self.buf[0] & 0x0f
    }

    /// M bit (talkspurt start for audio, end of frame for video).
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }

    /// Sequence number.
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    /// RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }

    /// Synchronization source.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }

    /// The CSRC list as raw big-endian bytes (4 per entry).
    pub fn csrc_bytes(&self) -> &'a [u8] {
        let end = RTP_FIXED_HEADER_LEN + 4 * usize::from(self.csrc_count());
        &self.buf[RTP_FIXED_HEADER_LEN..end]
    }

    /// The contributing sources, in header order.
    pub fn csrcs(&self) -> Csrcs<'a> {
        Csrcs {
            chunks: self.csrc_bytes().chunks_exact(4),
        }
    }

    /// The header extension, if X is set.
    pub fn extension(&self) -> Option<RtpExtension<'a>> {
        if !self.has_extension() {
            return None;
        }
        let header = self.extension_start - 4;
        Some(RtpExtension {
            profile: u16::from_be_bytes([self.buf[header], self.buf[header + 1]]),
            data: &self.buf[self.extension_start..self.payload_start],
        })
    }

    /// Bytes before the payload: fixed header, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    /// Number of padding bytes at the end (0 when P is clear).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }

    /// The payload, padding excluded.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.payload_start..self.payload_end]
    }

    /// Where [`RtpPacket::payload`] lies in the parsed buffer.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        self.payload_start..self.payload_end
    }

    /// The whole packet as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Iterator over the CSRC list of an [`RtpPacket`].
#[derive(Debug, Clone)]
pub struct Csrcs<'a> {
    /// Remaining 4-byte entries.
    chunks: std::slice::ChunksExact<'a, u8>,
}

impl Iterator for Csrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let chunk = self.chunks.next()?;
        Some(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for Csrcs<'_> {}

/// The RFC 3550 §5.3.1 header extension of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The 16-bit "defined by profile" field.
    pub profile: u16,
    /// Extension data (length is a multiple of 4).
    pub data: &'a [u8],
}

impl<'a> RtpExtension<'a> {
    /// RFC 8285 elements; empty unless the profile announces the one-byte or two-byte form.
    pub fn elements(&self) -> ExtensionElements<'a> {
        let form = if self.profile == EXTENSION_PROFILE_ONE_BYTE {
            ElementForm::OneByte
        } else if self.profile & 0xfff0 == EXTENSION_PROFILE_TWO_BYTE {
            ElementForm::TwoByte
        } else {
            ElementForm::Opaque
        };
        ExtensionElements {
            data: self.data,
            pos: 0,
            form,
        }
    }

    /// The data of the first RFC 8285 element with local identifier `id`.
    pub fn element(&self, id: u8) -> Option<&'a [u8]> {
        self.elements()
            .map_while(Result::ok)
            .find(|element| element.id == id)
            .map(|element| element.data)
    }
}

/// One RFC 8285 header-extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionElement<'a> {
    /// Local identifier negotiated with `a=extmap`.
    pub id: u8,
    /// Element data.
    pub data: &'a [u8],
}

/// Iterator over RFC 8285 elements; yields one error and stops on a truncated element.
#[derive(Debug, Clone)]
pub struct ExtensionElements<'a> {
    /// Extension data being walked.
    data: &'a [u8],
    /// Offset of the next element; `data.len()` once finished.
    pos: usize,
    /// Which RFC 8285 form the profile announced.
    form: ElementForm,
}

/// RFC 8285 element encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementForm {
    /// §4.2: 4-bit ID, 4-bit length-minus-one.
    OneByte,
    /// §4.3: 8-bit ID, 8-bit length.
    TwoByte,
    /// Some other profile: no elements to report.
    Opaque,
}

impl<'a> Iterator for ExtensionElements<'a> {
    type Item = Result<ExtensionElement<'a>, RtpError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let first = *self.data.get(self.pos)?;
            // ID 0 is a single padding byte in both forms.
            if first == 0 {
                self.pos += 1;
                continue;
            }
            let (id, start, len) = match self.form {
                ElementForm::Opaque => return None,
                ElementForm::OneByte => {
                    // §4.2: ID 15 ends processing of the whole extension.
                    if first >> 4 == 15 {
                        self.pos = self.data.len();
                        return None;
                    }
                    (first >> 4, self.pos + 1, usize::from(first & 0x0f) + 1)
                }
                ElementForm::TwoByte => {
                    let Some(&len) = self.data.get(self.pos + 1) else {
                        self.pos = self.data.len();
                        return Some(Err(RtpError::ExtensionElementOverrun { id: first }));
                    };
                    (first, self.pos + 2, usize::from(len))
                }
            };
            let end = start + len;
            if end > self.data.len() {
                self.pos = self.data.len();
                return Some(Err(RtpError::ExtensionElementOverrun { id }));
            }
            self.pos = end;
            return Some(Ok(ExtensionElement {
                id,
                data: &self.data[start..end],
            }));
        }
    }
}

/// Fields of a header to be written by [`write_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpHeader<'c> {
    /// M bit.
    pub marker: bool,
    /// 7-bit payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Contributing sources (at most 15).
    pub csrcs: &'c [u32],
}

impl RtpHeader<'_> {
    /// Bytes [`write_header`] will write.
    #[allow(clippy::len_without_is_empty)] // a header is never empty
    pub fn len(&self) -> usize {
        RTP_FIXED_HEADER_LEN + 4 * self.csrcs.len()
    }
}

/// Mutable view of a received packet's fixed header, for relaying with rewritten fields.
/// Everything after the fixed header (CSRCs, extension, payload, padding) is left alone.
#[derive(Debug)]
pub struct RtpHeaderMut<'a> {
    /// The packet; at least 12 bytes with version 2.
    buf: &'a mut [u8],
}

impl<'a> RtpHeaderMut<'a> {
    /// Checks the fixed header is present and version 2.
    pub fn new(buf: &'a mut [u8]) -> Result<Self, RtpError> {
        let len = buf.len();
        if len < RTP_FIXED_HEADER_LEN {
            return Err(RtpError::TooShort { len });
        }
        let version = buf[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion { version });
        }
        Ok(RtpHeaderMut { buf })
    }

    /// Rewrites the sequence number.
    pub fn set_sequence(&mut self, sequence: u16) {
        self.buf[2..4].copy_from_slice(&sequence.to_be_bytes());
    }

    /// Rewrites the RTP timestamp.
    pub fn set_timestamp(&mut self, timestamp: u32) {
        self.buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    }

    /// Rewrites the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }

    /// Rewrites the payload type, keeping the marker bit.
    pub fn set_payload_type(&mut self, payload_type: u8) -> Result<(), RtpError> {
        if payload_type > 0x7f {
            return Err(RtpError::PayloadTypeOutOfRange { payload_type });
        }
        self.buf[1] = (self.buf[1] & 0x80) | payload_type;
        Ok(())
    }

    /// Sets or clears the marker bit, keeping the payload type.
    pub fn set_marker(&mut self, marker: bool) {
        self.buf[1] = (self.buf[1] & 0x7f) | (u8::from(marker) << 7);
    }
}

/// Verdict of [`SequenceTracker::on_packet`] on one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// In sequence (possibly after a loss gap, possibly across the wrap): new highest sequence.
    Valid,
    /// Same number as the highest sequence seen: a duplicate. Counted as received, as A.1 does,
    /// which is why [`SequenceTracker::lost`] can go negative.
    Duplicate,
    /// Older than the highest sequence by less than `MAX_MISORDER`: late or duplicated; counted.
    Reordered,
    /// The source is not yet validated (`MIN_SEQUENTIAL` packets in a row); not counted.
    Probation,
    /// A jump too large to be loss or reordering; not counted. Another packet right after it
    /// restarts the tracker.
    Bad,
    /// The packet after a `Bad` one: the sender restarted its sequence; counters start again here.
    Restarted,
}

/// RFC 3550 Appendix A.1 per-source sequence state, plus the A.3 loss figures for RTCP reports.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    /// Whether any packet has been seen (A.1's "new source heard for the first time").
    started: bool,
    /// Highest sequence number seen.
    max_seq: u16,
    /// Shifted count of sequence wraps (multiples of 65536, wrapping like A.1's u_int32).
    cycles: u32,
    /// First sequence number counted after (re)initialisation.
    base_seq: u16,
    /// Last "bad" sequence number + 1; 65537 (never matches) when none is pending.
    bad_seq: u32,
    /// Sequential packets still needed before the source is valid.
    probation: u8,
    /// Packets counted as received since (re)initialisation.
    received: u64,
    /// `expected()` at the last interval report.
    expected_prior: u64,
    /// `received` at the last interval report.
    received_prior: u64,
}

impl SequenceTracker {
    /// A tracker that has seen nothing; the first packet starts probation.
    pub fn new() -> SequenceTracker {
        SequenceTracker::default()
    }

    /// A.1 `update_seq` for one received packet.
    pub fn on_packet(&mut self, seq: u16) -> SeqStatus {
        if !self.started {
            self.started = true;
            self.init(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        if self.probation > 0 {
            return self.probation_step(seq);
        }

        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta == 0 {
            self.received += 1;
            return SeqStatus::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
            self.received += 1;
            return SeqStatus::Valid;
        }
        if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a big jump: the sender restarted, so do we.
                self.init(seq);
                self.received += 1;
                return SeqStatus::Restarted;
            }
            self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
            return SeqStatus::Bad;
        }
        self.received += 1;
        SeqStatus::Reordered
    }

    /// Whether probation is over.
    pub fn is_valid(&self) -> bool {
        self.started && self.probation == 0
    }

    /// Highest sequence number seen.
    pub fn max_seq(&self) -> u16 {
        self.max_seq
    }

    /// Extended highest sequence number received (RTCP RR field): cycles + highest sequence.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets counted as received (duplicates and reordered ones included, per A.1).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// A.3 packets expected: extended highest − base + 1; 0 before validation.
    pub fn expected(&self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        let extended = i64::from(self.extended_max());
        (extended - i64::from(self.base_seq) + 1).max(0) as u64
    }

    /// A.3 cumulative loss: expected − received; negative when duplicates outnumber losses.
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// A.3 fraction lost since the previous call, in 1/256 units (the RTCP RR field).
    pub fn interval_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        if expected_interval == 0 || received_interval >= expected_interval {
            return 0;
        }
        let lost_interval = expected_interval - received_interval;
        // lost_interval < expected_interval, so the quotient is below 256.
        ((lost_interval << 8) / expected_interval) as u8
    }

    /// A.1 probation branch: count sequential packets until the source is believed.
    fn probation_step(&mut self, seq: u16) -> SeqStatus {
        if seq != self.max_seq.wrapping_add(1) {
            self.probation = MIN_SEQUENTIAL - 1;
            self.max_seq = seq;
            return SeqStatus::Probation;
        }
        self.probation -= 1;
        self.max_seq = seq;
        if self.probation > 0 {
            return SeqStatus::Probation;
        }
        self.init(seq);
        self.received += 1;
        SeqStatus::Valid
    }

    /// A.1 `init_seq`.
    fn init(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a packet byte by byte so the vectors do not depend on `write_header`.
    fn packet(first: u8, second: u8, tail: &[u8]) -> Vec<u8> {
        let mut buf = vec![
            first, second, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
        ];
        buf.extend_from_slice(tail);
        buf
    }

    #[test]
    fn parses_minimal_packet_fields() {
        let buf = packet(0x80, 0x80 | 8, &[0xd5; 160]);
        let pkt = parse(&buf).expect("valid vector");
        assert_eq!(pkt.version(), 2);
        assert!(!pkt.padding());
        assert!(!pkt.has_extension());
        assert_eq!(pkt.csrc_count(), 0);
        assert!(pkt.marker());
        assert_eq!(pkt.payload_type(), 8);
        assert_eq!(pkt.sequence(), 0x1234);
        assert_eq!(pkt.timestamp(), 0xdead_beef);
        assert_eq!(pkt.ssrc(), 0x0102_0304);
        assert_eq!(pkt.header_len(), 12);
        assert_eq!(pkt.payload().len(), 160);
        assert_eq!(pkt.payload()[0], 0xd5);
        assert_eq!(pkt.csrcs().count(), 0);
        assert_eq!(pkt.extension(), None);
    }

    #[test]
    fn parses_csrcs_extension_and_padding_together() {
        let mut tail = vec![];
        tail.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        tail.extend_from_slice(&0x2222_2222u32.to_be_bytes());
        // One-byte extension: id 1 (1 byte), padding byte, id 3 (2 bytes), pad to 8 bytes.
        tail.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02]);
        tail.extend_from_slice(&[0x10, 0xaa, 0x00, 0x31, 0xbb, 0xcc, 0x00, 0x00]);
        tail.extend_from_slice(b"voice");
        tail.extend_from_slice(&[0, 0, 3]);
        let buf = packet(0xb2, 0x00, &tail);

        let pkt = parse(&buf).expect("valid vector");
        assert!(pkt.padding());
        assert!(pkt.has_extension());
        assert_eq!(pkt.csrcs().collect::<Vec<_>>(), [0x1111_1111, 0x2222_2222]);
        assert_eq!(pkt.csrcs().len(), 2);
        assert_eq!(pkt.csrc_bytes().len(), 8);
        let ext = pkt.extension().expect("X bit set");
        assert_eq!(ext.profile, EXTENSION_PROFILE_ONE_BYTE);
        assert_eq!(ext.data.len(), 8);
        let elements: Vec<_> = ext.elements().collect();
        assert_eq!(
            elements,
            [
                Ok(ExtensionElement {
                    id: 1,
                    data: &[0xaa]
                }),
                Ok(ExtensionElement {
                    id: 3,
                    data: &[0xbb, 0xcc]
                }),
            ]
        );
        assert_eq!(ext.element(3), Some(&[0xbb, 0xcc][..]));
        assert_eq!(ext.element(2), None);
        assert_eq!(pkt.header_len(), 12 + 8 + 4 + 8);
        assert_eq!(pkt.payload(), b"voice");
        assert_eq!(pkt.padding_len(), 3);
    }

    #[test]
    fn two_byte_extension_elements_and_opaque_profiles() {
        let tail = [
            0x10, 0x00, 0x00, 0x02, 0x05, 0x00, 0x00, 0x07, 0x03, 1, 2, 3,
        ];
        let buf = packet(0x90, 0, &tail);
        let ext = parse(&buf).expect("valid").extension().expect("X set");
        let elements: Vec<_> = ext.elements().collect();
        assert_eq!(
            elements,
            [
                Ok(ExtensionElement { id: 5, data: &[] }),
                Ok(ExtensionElement {
                    id: 7,
                    data: &[1, 2, 3]
                }),
            ]
        );

        let opaque = RtpExtension {
            profile: 0x1234,
            data: &[1, 2, 3, 4],
        };
        assert_eq!(opaque.elements().count(), 0);
    }

    #[test]
    fn extension_element_overrun_and_terminator() {
        let truncated = RtpExtension {
            profile: EXTENSION_PROFILE_ONE_BYTE,
            data: &[0x23, 0xaa, 0xbb, 0x00],
        };
        let items: Vec<_> = truncated.elements().collect();
        assert_eq!(items, [Err(RtpError::ExtensionElementOverrun { id: 2 })]);

        let terminated = RtpExtension {
            profile: EXTENSION_PROFILE_ONE_BYTE,
            data: &[0x10, 0xaa, 0xf0, 0x20],
        };
        let ids: Vec<_> = terminated.elements().map(|e| e.map(|e| e.id)).collect();
        assert_eq!(ids, [Ok(1)]);

        let two_byte_cut = RtpExtension {
            profile: 0x1003,
            data: &[0x00, 0x00, 0x00, 0x09],
        };
        let items: Vec<_> = two_byte_cut.elements().collect();
        assert_eq!(items, [Err(RtpError::ExtensionElementOverrun { id: 9 })]);
    }

    #[test]
    fn padding_may_consume_the_whole_payload() {
        let buf = packet(0xa0, 0, &[0, 0, 0, 4]);
        let pkt = parse(&buf).expect("valid");
        assert_eq!(pkt.payload(), b"");
        assert_eq!(pkt.padding_len(), 4);
    }

    #[test]
    fn every_malformed_variant_is_reported() {
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort { len: 11 }));
        assert_eq!(parse(&[]), Err(RtpError::TooShort { len: 0 }));
        assert_eq!(
            parse(&packet(0x40, 0, &[])),
            Err(RtpError::BadVersion { version: 1 })
        );
        assert_eq!(
            parse(&packet(0xc0, 0, &[])),
            Err(RtpError::BadVersion { version: 3 })
        );
        assert_eq!(
            parse(&packet(0x82, 0, &[0; 7])),
            Err(RtpError::CsrcOverrun {
                csrc_count: 2,
                len: 19
            })
        );
        assert_eq!(
            parse(&packet(0x90, 0, &[0xbe, 0xde, 0])),
            Err(RtpError::ExtensionHeaderOverrun { len: 15 })
        );
        assert_eq!(
            parse(&packet(0x90, 0, &[0xbe, 0xde, 0, 2, 0, 0, 0, 0])),
            Err(RtpError::ExtensionOverrun {
                words: 2,
                available: 4
            })
        );
        assert_eq!(
            parse(&packet(0xa0, 0, &[1, 2, 0])),
            Err(RtpError::ZeroPadding)
        );
        assert_eq!(
            parse(&packet(0xa0, 0, &[1, 2, 4])),
            Err(RtpError::PaddingOverrun {
                padding: 4,
                available: 3
            })
        );
        // P set, no bytes after the header: the count byte would be the SSRC's last byte.
        assert_eq!(
            parse(&packet(0xa0, 0, &[])),
            Err(RtpError::PaddingOverrun {
                padding: 4,
                available: 0
            })
        );
    }

    #[test]
    fn errors_display_what_is_wrong() {
        let text = RtpError::PaddingOverrun {
            padding: 9,
            available: 3,
        }
        .to_string();
        assert_eq!(
            text,
            "padding count 9 exceeds the 3 bytes after the headers"
        );
        assert_eq!(
            RtpError::BadVersion { version: 1 }.to_string(),
            "RTP version 1, expected 2"
        );
    }

    #[test]
    fn rtcp_demux_per_rfc_5761() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201, 0, 7]));
        assert!(is_rtcp(&[0x80, 192, 0, 1]));
        assert!(is_rtcp(&[0x80, 223, 0, 1]));
        assert!(!is_rtcp(&[0x80, 191, 0, 1]), "PT 63 with marker is RTP");
        assert!(!is_rtcp(&[0x80, 224, 0, 1]), "PT 96 with marker is RTP");
        assert!(!is_rtcp(&[0x80, 0, 0, 1]), "PCMU is RTP");
        assert!(!is_rtcp(&[0x40, 200, 0, 6]), "version 1");
        assert!(!is_rtcp(&[0x80, 200, 0]), "shorter than an RTCP header");
    }

    #[test]
    fn writes_header_with_csrcs_that_parses_back() {
        let csrcs = [7, 0xffff_fffe];
        let header = RtpHeader {
            marker: true,
            payload_type: 111,
            sequence: 65535,
            timestamp: 0xffff_ff00,
            ssrc: 0xcafe_f00d,
            csrcs: &csrcs,
        };
        let mut out = [0u8; 64];
        let len = write_packet(&mut out, &header, b"opus").expect("fits");
        assert_eq!(len, 12 + 8 + 4);
        assert_eq!(&out[..2], &[0x82, 0x80 | 111]);
        let pkt = parse(&out[..len]).expect("written packet parses");
        assert!(pkt.marker());
        assert_eq!(pkt.payload_type(), 111);
        assert_eq!(pkt.sequence(), 65535);
        assert_eq!(pkt.timestamp(), 0xffff_ff00);
        assert_eq!(pkt.ssrc(), 0xcafe_f00d);
        assert_eq!(pkt.csrcs().collect::<Vec<_>>(), csrcs);
        assert_eq!(pkt.payload(), b"opus");
    }

    #[test]
    fn writer_rejects_bad_headers_and_small_buffers() {
        let csrcs = [0u32; 16];
        let mut out = [0u8; 128];
        let too_many = RtpHeader {
            csrcs: &csrcs,
            ..RtpHeader::default()
        };
        assert_eq!(
            write_header(&mut out, &too_many),
            Err(RtpError::TooManyCsrcs { count: 16 })
        );
        let bad_pt = RtpHeader {
            payload_type: 128,
            ..RtpHeader::default()
        };
        assert_eq!(
            write_header(&mut out, &bad_pt),
            Err(RtpError::PayloadTypeOutOfRange { payload_type: 128 })
        );
        assert_eq!(
            write_header(&mut out[..11], &RtpHeader::default()),
            Err(RtpError::BufferTooSmall {
                needed: 12,
                available: 11
            })
        );
        assert_eq!(
            write_packet(&mut out[..20], &RtpHeader::default(), &[0; 9]),
            Err(RtpError::BufferTooSmall {
                needed: 21,
                available: 20
            })
        );
    }

    #[test]
    fn relaying_rewrites_only_the_named_fields() {
        let mut tail = 0x5555_5555u32.to_be_bytes().to_vec();
        tail.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x7f, 0, 0]);
        tail.extend_from_slice(b"payload");
        let mut buf = packet(0x91, 0x80, &tail);

        let mut header = RtpHeaderMut::new(&mut buf).expect("valid header");
        header.set_sequence(4242);
        header.set_timestamp(0x0102_0304);
        header.set_ssrc(0xa1b2_c3d4);
        header.set_payload_type(101).expect("101 fits in 7 bits");
        header.set_marker(false);
        assert_eq!(
            header.set_payload_type(200),
            Err(RtpError::PayloadTypeOutOfRange { payload_type: 200 })
        );

        let pkt = parse(&buf).expect("still valid");
        assert_eq!(pkt.sequence(), 4242);
        assert_eq!(pkt.timestamp(), 0x0102_0304);
        assert_eq!(pkt.ssrc(), 0xa1b2_c3d4);
        assert_eq!(pkt.payload_type(), 101);
        assert!(!pkt.marker());
        assert_eq!(pkt.csrcs().collect::<Vec<_>>(), [0x5555_5555]);
        assert_eq!(
            pkt.extension().and_then(|e| e.element(1)),
            Some(&[0x7f][..])
        );
        assert_eq!(pkt.payload(), b"payload");

        let mut marked = buf.clone();
        let mut header = RtpHeaderMut::new(&mut marked).expect("valid header");
        header.set_marker(true);
        assert_eq!(
            parse(&marked).map(|p| (p.marker(), p.payload_type())),
            Ok((true, 101))
        );

        assert_eq!(
            RtpHeaderMut::new(&mut [0x80; 5]).err(),
            Some(RtpError::TooShort { len: 5 })
        );
        assert_eq!(
            RtpHeaderMut::new(&mut [0x00; 12]).err(),
            Some(RtpError::BadVersion { version: 0 })
        );
    }

    #[test]
    fn wraparound_helpers() {
        assert_eq!(seq_distance(1, 65535), 2);
        assert_eq!(seq_distance(65535, 1), -2);
        assert_eq!(seq_distance(100, 100), 0);
        assert!(seq_newer(0, 65535));
        assert!(!seq_newer(65535, 0));
        assert!(!seq_newer(7, 7));
        assert_eq!(ts_diff(80, u32::MAX - 79), 160);
        assert_eq!(ts_diff(u32::MAX - 79, 80), -160);
        assert_eq!(ts_diff(8000, 0), 8000);
    }

    #[test]
    fn tracker_probation_then_valid() {
        let mut tracker = SequenceTracker::new();
        assert_eq!(tracker.on_packet(1000), SeqStatus::Probation);
        assert!(!tracker.is_valid());
        assert_eq!(tracker.expected(), 0);
        assert_eq!(tracker.on_packet(1001), SeqStatus::Valid);
        assert!(tracker.is_valid());
        assert_eq!(tracker.received(), 1);
        assert_eq!(tracker.expected(), 1);
        for seq in 1002..1010 {
            assert_eq!(tracker.on_packet(seq), SeqStatus::Valid);
        }
        assert_eq!(tracker.received(), 9);
        assert_eq!(tracker.lost(), 0);
        assert_eq!(tracker.extended_max(), 1009);
    }

    #[test]
    fn tracker_probation_restarts_on_non_sequential() {
        let mut tracker = SequenceTracker::new();
        assert_eq!(tracker.on_packet(10), SeqStatus::Probation);
        assert_eq!(tracker.on_packet(500), SeqStatus::Probation);
        assert_eq!(tracker.on_packet(501), SeqStatus::Valid);
        assert_eq!(tracker.max_seq(), 501);
        assert_eq!(tracker.expected(), 1);
    }

    #[test]
    fn tracker_counts_wraps_and_losses() {
        let mut tracker = SequenceTracker::new();
        tracker.on_packet(65530);
        tracker.on_packet(65531);
        for seq in (65532..=65535).chain(0..10) {
            if seq == 65534 || seq == 3 {
                continue; // lost
            }
            assert_eq!(tracker.on_packet(seq), SeqStatus::Valid, "seq {seq}");
        }
        assert_eq!(tracker.extended_max(), 65536 + 9);
        assert_eq!(tracker.expected(), 15, "65531 (base) ..= 65536 + 9");
        assert_eq!(tracker.received(), 13);
        assert_eq!(tracker.lost(), 2);
        assert_eq!(tracker.interval_fraction_lost(), (2 * 256 / 15) as u8);
        assert_eq!(tracker.interval_fraction_lost(), 0, "nothing since");
        tracker.on_packet(11);
        assert_eq!(tracker.interval_fraction_lost(), 128, "one of two lost");
    }

    #[test]
    fn tracker_duplicates_and_reordering_make_loss_negative() {
        let mut tracker = SequenceTracker::new();
        tracker.on_packet(1);
        tracker.on_packet(2);
        assert_eq!(tracker.on_packet(4), SeqStatus::Valid);
        assert_eq!(tracker.on_packet(3), SeqStatus::Reordered);
        assert_eq!(tracker.on_packet(4), SeqStatus::Duplicate);
        assert_eq!(tracker.on_packet(3), SeqStatus::Reordered);
        assert_eq!(tracker.max_seq(), 4);
        assert_eq!(tracker.expected(), 3);
        assert_eq!(tracker.received(), 5);
        assert_eq!(tracker.lost(), -2);
    }

    #[test]
    fn tracker_restarts_after_two_sequential_packets_past_a_large_jump() {
        let mut tracker = SequenceTracker::new();
        tracker.on_packet(100);
        tracker.on_packet(101);
        tracker.on_packet(102);
        assert_eq!(tracker.on_packet(40000), SeqStatus::Bad);
        assert_eq!(tracker.max_seq(), 102, "one stray packet changes nothing");
        assert_eq!(tracker.on_packet(103), SeqStatus::Valid);
        assert_eq!(tracker.on_packet(50000), SeqStatus::Bad);
        assert_eq!(tracker.on_packet(50001), SeqStatus::Restarted);
        assert_eq!(tracker.received(), 1);
        assert_eq!(tracker.expected(), 1);
        assert_eq!(tracker.on_packet(50002), SeqStatus::Valid);
        assert_eq!(tracker.lost(), 0);
        // A forward gap below MAX_DROPOUT is loss, not a restart.
        assert_eq!(tracker.on_packet(50002 + 2999), SeqStatus::Valid);
        assert_eq!(tracker.lost(), 2998);
        // MAX_MISORDER or more backwards is a jump; less is reordering.
        assert_eq!(tracker.on_packet(50002 + 2999 - 101), SeqStatus::Bad);
        assert_eq!(tracker.on_packet(50002 + 2999 - 99), SeqStatus::Reordered);
        assert_eq!(tracker.max_seq(), 50002 + 2999);
    }

    /// splitmix64: deterministic bytes without a dependency.
    fn next_random(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn random_and_mutated_bytes_never_panic_and_views_stay_in_bounds() {
        let mut state = 0x5eed;
        let mut tracker = SequenceTracker::new();
        let mut accepted = 0;
        let template = {
            let mut tail = 0x1234_5678u32.to_be_bytes().to_vec();
            tail.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x21, 1, 2, 0]);
            tail.extend_from_slice(&[9; 20]);
            tail.extend_from_slice(&[0, 2]);
            packet(0xb1, 0, &tail)
        };
        assert!(parse(&template).is_ok());
        for round in 0..20_000 {
            let mut buf = [0u8; 64];
            let len = if round % 2 == 0 {
                buf[..template.len()].copy_from_slice(&template);
                for _ in 0..1 + next_random(&mut state) % 3 {
                    let at = next_random(&mut state) as usize % template.len();
                    buf[at] ^= 1 << (next_random(&mut state) % 8);
                }
                template.len() - (next_random(&mut state) % 4) as usize
            } else {
                for byte in buf.iter_mut() {
                    *byte = next_random(&mut state) as u8;
                }
                buf[0] = 0x80 | (buf[0] & 0x3f);
                next_random(&mut state) as usize % buf.len()
            };
            let bytes = &buf[..len];
            let _ = is_rtcp(bytes);
            let Ok(pkt) = parse(bytes) else { continue };
            accepted += 1;
            assert_eq!(
                pkt.header_len() + pkt.payload().len() + pkt.padding_len(),
                len
            );
            let _ = pkt.csrcs().count();
            if let Some(ext) = pkt.extension() {
                for element in ext.elements() {
                    let _ = element.map(|e| e.data.len());
                }
            }
            tracker.on_packet(pkt.sequence());
        }
        assert!(
            accepted > 1000,
            "mutations keep many packets valid: {accepted}"
        );
    }

    #[test]
    fn parsing_and_writing_allocate_nothing() {
        let mut tail = 0x1111_2222u32.to_be_bytes().to_vec();
        tail.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        tail.extend_from_slice(&[0x55; 160]);
        let received = packet(0x90 | 1, 0, &tail);
        let mut relay = received.clone();
        let mut out = [0u8; 256];
        let mut tracker = SequenceTracker::new();
        let mut payload_bytes = 0;
        let allocations = crate::media::alloc_counter::allocations_during(|| {
            for seq in 0..1000u16 {
                let Ok(pkt) = parse(&received) else { continue };
                payload_bytes += pkt.payload().len();
                payload_bytes += pkt
                    .extension()
                    .and_then(|e| e.element(1))
                    .map_or(0, <[u8]>::len);
                tracker.on_packet(seq);
                if let Ok(mut header) = RtpHeaderMut::new(&mut relay) {
                    header.set_sequence(seq);
                }
                let header = RtpHeader {
                    sequence: seq,
                    ..RtpHeader::default()
                };
                let _ = write_packet(&mut out, &header, pkt.payload());
            }
        });
        assert_eq!(allocations, 0);
        assert_eq!(payload_bytes, 1000 * 161);
        assert_eq!(tracker.received(), 999);
    }
}
