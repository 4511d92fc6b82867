//! SRTP/SRTCP packet protection (RFC 3711, RFC 7714) and SDES keying (RFC 4568 `a=crypto`).
//!
//! Owns: session-key derivation from an SDES master key, one crypto context per direction with
//! per-SSRC state (rollover counter, highest index, 64-packet replay window, SRTCP index) for a
//! fixed number of SSRCs preallocated in the context, in-place protect/unprotect of whole RTP and
//! RTCP packets, and parsing, generating and choosing `a=crypto` attribute values.
//!
//! Must not: allocate, read the clock, log or touch sockets on the packet path; accept packets
//! carrying an MKI (we never agree to crypto lines with one, so an MKI field would be mistaken
//! for payload); re-key (a new SDES key means a new context); decide anything about the SDP
//! offer/answer beyond which offered crypto line we can honour.

use std::fmt;

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aes::Aes128Enc;
use aes_gcm::{AeadInPlace, Aes128Gcm};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// How many distinct SSRCs one context keeps RTP (and, separately, RTCP) state for.
pub const MAX_SSRCS: usize = 4;

/// Replay window width in packets (RFC 3711 §3.3.2 minimum).
const REPLAY_WINDOW: u64 = 64;
const RTP_HEADER_LEN: usize = 12;
const RTCP_HEADER_LEN: usize = 8;
const SRTCP_INDEX_LEN: usize = 4;
const SRTCP_E_FLAG: u32 = 0x8000_0000;
const MAX_SRTCP_INDEX: u64 = 0x7FFF_FFFF;
const MAX_ROC: u64 = u32::MAX as u64;
const MASTER_KEY_LEN: usize = 16;
const AES_CM_SALT_LEN: usize = 14;
const GCM_SALT_LEN: usize = 12;
const HMAC_SHA1_LEN: usize = 20;
const GCM_TAG_LEN: usize = 16;

/// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

type HmacSha1 = Hmac<Sha1>;
type Aes128Ctr = ctr::Ctr128BE<Aes128Enc>;
type Aes128CtrCore = ctr::CtrCore<Aes128Enc, ctr::flavors::Ctr128BE>;

/// An SRTP protection profile we can key through SDES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `AES_CM_128_HMAC_SHA1_80`: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: as above with a 32-bit RTP tag (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714): AES-128-GCM with a 128-bit tag.
    AeadAes128Gcm,
}

impl SrtpProfile {
    /// Maps an SDES crypto-suite name to a profile; `None` for suites we do not implement.
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(Self::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(Self::AesCm128HmacSha1_32),
            "AEAD_AES_128_GCM" => Some(Self::AeadAes128Gcm),
            _ => None,
        }
    }

    /// The SDES crypto-suite name of this profile.
    pub fn sdes_name(&self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// Master key length in bytes.
    pub fn master_key_len(&self) -> usize {
        MASTER_KEY_LEN
    }

    /// Master salt length in bytes (14 for AES-CM, 12 for GCM).
    pub fn master_salt_len(&self) -> usize {
        match self {
            Self::AeadAes128Gcm => GCM_SALT_LEN,
            _ => AES_CM_SALT_LEN,
        }
    }

    /// Bytes appended to every SRTP packet.
    pub fn rtp_auth_tag_len(&self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 => 4,
            Self::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// Authentication tag bytes on every SRTCP packet (RFC 4568 §6.2: 80 bits for both SHA1 suites).
    pub fn rtcp_auth_tag_len(&self) -> usize {
        match self {
            Self::AeadAes128Gcm => GCM_TAG_LEN,
            _ => 10,
        }
    }
}

/// Why a packet could not be protected or unprotected, or why an `a=crypto` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Master key or salt length does not fit the profile.
    BadKeyLength,
    /// `len` is larger than the buffer it describes.
    LengthBeyondBuffer,
    /// The packet is shorter than its headers (and tag) require.
    TooShort,
    /// The RTP/RTCP version field is not 2.
    BadVersion,
    /// The buffer has no room after the packet for the SRTCP index and/or tag.
    NoTailRoom,
    /// The authentication tag did not verify; nothing was decrypted and no state changed.
    AuthenticationFailed,
    /// This packet index was already accepted (or, when sending, already used).
    Replayed,
    /// The packet index is behind the replay window.
    TooOld,
    /// Every per-SSRC slot is held by another SSRC; see [`SrtpContext::forget_ssrc`].
    TooManySsrcs,
    /// The rollover counter or SRTCP index would wrap: the master key must be replaced.
    IndexExhausted,
    /// An SRTCP packet with the E flag clear; we never negotiate unencrypted SRTCP.
    UnencryptedSrtcp,
    /// The `a=crypto` crypto-suite is not one we implement.
    UnknownSuite,
    /// The `a=crypto` key is not valid base64.
    BadKeyEncoding,
    /// The `a=crypto` value is malformed; the text names the part.
    MalformedCrypto(&'static str),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadKeyLength => {
                f.write_str("master key or salt has the wrong length for the profile")
            }
            Self::LengthBeyondBuffer => f.write_str("packet length exceeds the buffer"),
            Self::TooShort => f.write_str("packet too short for its headers and tag"),
            Self::BadVersion => f.write_str("not an RTP/RTCP version 2 packet"),
            Self::NoTailRoom => f.write_str("no room in the buffer for the SRTP trailer"),
            Self::AuthenticationFailed => f.write_str("SRTP authentication failed"),
            Self::Replayed => f.write_str("SRTP packet index already seen"),
            Self::TooOld => f.write_str("SRTP packet index behind the replay window"),
            Self::TooManySsrcs => f.write_str("no free per-SSRC slot in the SRTP context"),
            Self::IndexExhausted => f.write_str("SRTP packet index exhausted; re-key required"),
            Self::UnencryptedSrtcp => f.write_str("unencrypted SRTCP was not negotiated"),
            Self::UnknownSuite => f.write_str("unsupported SDES crypto suite"),
            Self::BadKeyEncoding => f.write_str("SDES key is not valid base64"),
            Self::MalformedCrypto(part) => write!(f, "malformed a=crypto attribute: {part}"),
        }
    }
}

impl std::error::Error for SrtpError {}

/// One direction (inbound or outbound) of one SRTP session: session keys plus per-SSRC state.
///
/// Use one context for what we send and another for what we receive: both directions would
/// otherwise share rollover counters and replay windows.
pub struct SrtpContext {
    /// The negotiated profile.
    profile: SrtpProfile,
    /// RTP session keys (labels 0x00-0x02).
    rtp: Transform,
    /// RTCP session keys (labels 0x03-0x05).
    rtcp: Transform,
    /// Per-SSRC RTP packet index and replay state.
    rtp_streams: [Option<ReplayWindow>; MAX_SSRCS],
    /// Per-SSRC SRTCP index and replay state (inbound: highest seen; outbound: last sent).
    rtcp_streams: [Option<ReplayWindow>; MAX_SSRCS],
}

impl SrtpContext {
    /// Derives the session keys (RFC 3711 §4.3, key derivation rate 0) for `profile`.
    pub fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<SrtpContext, SrtpError> {
        if master_key.len() != profile.master_key_len()
            || master_salt.len() != profile.master_salt_len()
        {
            return Err(SrtpError::BadKeyLength);
        }
        let prf = KeyDerivation::new(master_key, master_salt)?;
        let rtp = Transform::derive(
            &prf,
            profile,
            [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT],
            profile.rtp_auth_tag_len(),
        )?;
        let rtcp = Transform::derive(
            &prf,
            profile,
            [LABEL_RTCP_ENCRYPTION, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
            profile.rtcp_auth_tag_len(),
        )?;
        Ok(Self::from_transforms(profile, rtp, rtcp))
    }

    /// The profile this context was keyed for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The RTP rollover counter currently tracked for `ssrc`, if the SSRC has state here.
    pub fn rollover_counter(&self, ssrc: u32) -> Option<u32> {
        let window = self.rtp_streams.iter().flatten().find(|w| w.ssrc == ssrc)?;
        u32::try_from(window.highest >> 16).ok()
    }

    /// Drops RTP and RTCP state for `ssrc` (e.g. after RTCP BYE or an SSRC change) so its slot
    /// can be reused. Returns whether anything was dropped. Replay protection for that SSRC
    /// starts over if it ever comes back.
    pub fn forget_ssrc(&mut self, ssrc: u32) -> bool {
        let mut dropped = false;
        for slot in self
            .rtp_streams
            .iter_mut()
            .chain(self.rtcp_streams.iter_mut())
        {
            if slot.is_some_and(|w| w.ssrc == ssrc) {
                *slot = None;
                dropped = true;
            }
        }
        dropped
    }

    /// Encrypts `buf[..len]` (a whole RTP packet) in place and appends the tag; `buf` must have
    /// tail room; returns the new length.
    ///
    /// Refuses to reuse a packet index (same sequence number twice, or one behind the window):
    /// with a stream cipher that would reuse keystream.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::LengthBeyondBuffer)?;
        let header_len = rtp_header_len(packet)?;
        let out_len = len
            .checked_add(self.profile.rtp_auth_tag_len())
            .filter(|&n| n <= buf.len())
            .ok_or(SrtpError::NoTailRoom)?;
        let (slot, ssrc, index) = rtp_packet_index(&self.rtp_streams, packet)?;

        match &self.rtp {
            Transform::AesCm(t) => {
                t.apply_keystream(ssrc, index, &mut buf[header_len..len]);
                let tag = t.tag(&buf[..len], &roc_bytes(index));
                buf[len..out_len].copy_from_slice(&tag[..t.tag_len]);
            }
            Transform::Gcm(t) => {
                let (header, rest) = buf.split_at_mut(header_len);
                let tag = t.seal(ssrc, index, header, &mut rest[..len - header_len])?;
                buf[len..out_len].copy_from_slice(&tag);
            }
        }
        record(&mut self.rtp_streams[slot], ssrc, index);
        Ok(out_len)
    }

    /// Authenticates (constant time), checks replay (64-packet window, RFC 3711 §3.3.2),
    /// decrypts in place; returns the RTP packet length. On any error the packet state of the
    /// context is unchanged.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::LengthBeyondBuffer)?;
        let body_len = len
            .checked_sub(self.profile.rtp_auth_tag_len())
            .ok_or(SrtpError::TooShort)?;
        let header_len = rtp_header_len(&packet[..body_len])?;
        let (slot, ssrc, index) = rtp_packet_index(&self.rtp_streams, packet)?;

        match &self.rtp {
            Transform::AesCm(t) => {
                t.verify(&buf[..body_len], &roc_bytes(index), &buf[body_len..len])?;
                t.apply_keystream(ssrc, index, &mut buf[header_len..body_len]);
            }
            Transform::Gcm(t) => {
                let (header, rest) = buf[..len].split_at_mut(header_len);
                let (payload, tag) = rest.split_at_mut(body_len - header_len);
                t.open(ssrc, index, header, payload, tag)?;
            }
        }
        record(&mut self.rtp_streams[slot], ssrc, index);
        Ok(body_len)
    }

    /// Encrypts `buf[..len]` (a whole, possibly compound, RTCP packet) in place and appends the
    /// E flag with the SRTCP index and the tag (RFC 3711 §3.4, RFC 7714 §9); returns the new
    /// length. The SRTCP index starts at 0 per sender SSRC.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::LengthBeyondBuffer)?;
        check_rtcp_header(packet)?;
        let out_len = len
            .checked_add(SRTCP_INDEX_LEN + self.profile.rtcp_auth_tag_len())
            .filter(|&n| n <= buf.len())
            .ok_or(SrtpError::NoTailRoom)?;
        let ssrc = read_u32(packet, 4);
        let (slot, window) = stream_slot(&self.rtcp_streams, ssrc)?;
        let index = window.map_or(0, |w| w.highest + 1);
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let e_index = srtcp_trailer(index);

        match &self.rtcp {
            Transform::AesCm(t) => {
                t.apply_keystream(ssrc, index, &mut buf[RTCP_HEADER_LEN..len]);
                let index_end = len + SRTCP_INDEX_LEN;
                buf[len..index_end].copy_from_slice(&e_index);
                let tag = t.tag(&buf[..index_end], &[]);
                buf[index_end..out_len].copy_from_slice(&tag[..t.tag_len]);
            }
            Transform::Gcm(t) => {
                let aad = srtcp_gcm_aad(&buf[..RTCP_HEADER_LEN], e_index);
                let tag = t.seal(ssrc, index, &aad, &mut buf[RTCP_HEADER_LEN..len])?;
                let tag_end = len + GCM_TAG_LEN;
                buf[len..tag_end].copy_from_slice(&tag);
                buf[tag_end..out_len].copy_from_slice(&e_index);
            }
        }
        record(&mut self.rtcp_streams[slot], ssrc, index);
        Ok(out_len)
    }

    /// Authenticates, checks the SRTCP replay window, decrypts in place; returns the RTCP
    /// packet length. On any error the packet state of the context is unchanged.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::LengthBeyondBuffer)?;
        let tag_len = self.profile.rtcp_auth_tag_len();
        let body_len = len
            .checked_sub(SRTCP_INDEX_LEN + tag_len)
            .filter(|&n| n >= RTCP_HEADER_LEN)
            .ok_or(SrtpError::TooShort)?;
        check_rtcp_header(packet)?;
        // AES-CM puts the index before the tag (it is authenticated data); GCM puts it last.
        let index_at = match self.profile {
            SrtpProfile::AeadAes128Gcm => len - SRTCP_INDEX_LEN,
            _ => body_len,
        };
        let e_index = read_u32(packet, index_at);
        if e_index & SRTCP_E_FLAG == 0 {
            return Err(SrtpError::UnencryptedSrtcp);
        }
        let index = u64::from(e_index & !SRTCP_E_FLAG);
        let ssrc = read_u32(packet, 4);
        let (slot, window) = stream_slot(&self.rtcp_streams, ssrc)?;
        if let Some(w) = &window {
            w.check(index)?;
        }

        match &self.rtcp {
            Transform::AesCm(t) => {
                let auth_end = body_len + SRTCP_INDEX_LEN;
                t.verify(&buf[..auth_end], &[], &buf[auth_end..len])?;
                t.apply_keystream(ssrc, index, &mut buf[RTCP_HEADER_LEN..body_len]);
            }
            Transform::Gcm(t) => {
                let aad = srtcp_gcm_aad(&buf[..RTCP_HEADER_LEN], e_index.to_be_bytes());
                let (payload, tag) =
                    buf[RTCP_HEADER_LEN..index_at].split_at_mut(body_len - RTCP_HEADER_LEN);
                t.open(ssrc, index, &aad, payload, tag)?;
            }
        }
        record(&mut self.rtcp_streams[slot], ssrc, index);
        Ok(body_len)
    }

    /// Builds a context from already derived session transforms.
    fn from_transforms(profile: SrtpProfile, rtp: Transform, rtcp: Transform) -> Self {
        Self {
            profile,
            rtp,
            rtcp,
            rtp_streams: [None; MAX_SSRCS],
            rtcp_streams: [None; MAX_SSRCS],
        }
    }
}

impl fmt::Debug for SrtpContext {
    // Keys stay out of logs: only the profile and which SSRCs have state.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rtp_ssrcs = self.rtp_streams.iter().flatten().count();
        let rtcp_ssrcs = self.rtcp_streams.iter().flatten().count();
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("rtp_ssrcs", &rtp_ssrcs)
            .field("rtcp_ssrcs", &rtcp_ssrcs)
            .finish_non_exhaustive()
    }
}

/// SDES (RFC 4568) `a=crypto` attribute value:
/// `1 AES_CM_128_HMAC_SHA1_80 inline:<base64 key||salt>|2^20|1:32 [session params]`.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// Tag identifying the line; the answer echoes the tag of the offer line it accepts.
    pub tag: u32,
    /// The crypto suite.
    pub profile: SrtpProfile,
    /// Master key.
    pub key: [u8; 16],
    /// Master salt (`profile.master_salt_len()` bytes).
    pub salt: Vec<u8>,
    /// Master key lifetime in packets, when given.
    pub lifetime: Option<u64>,
    /// MKI value and MKI length in bytes, when given.
    pub mki: Option<(u32, u8)>,
    /// Session parameters verbatim (`KDR=1`, `UNENCRYPTED_SRTCP`, `WSH=128`, ...).
    pub session_params: Vec<String>,
}

impl CryptoAttribute {
    /// Parses an `a=crypto` value (the text after `a=crypto:`). When a line carries several
    /// inline keys (which RFC 4568 only allows with MKIs) the first is kept.
    pub fn parse(value: &str) -> Result<CryptoAttribute, SrtpError> {
        let mut fields = value.split_ascii_whitespace();
        let tag_text = fields
            .next()
            .ok_or(SrtpError::MalformedCrypto("missing tag"))?;
        let tag = parse_tag(tag_text)?;
        let suite = fields
            .next()
            .ok_or(SrtpError::MalformedCrypto("missing crypto suite"))?;
        let profile = SrtpProfile::from_sdes_name(suite).ok_or(SrtpError::UnknownSuite)?;
        let key_params = fields
            .next()
            .ok_or(SrtpError::MalformedCrypto("missing key params"))?;
        let session_params: Vec<String> = fields.map(str::to_owned).collect();

        let mut first: Option<KeyParam> = None;
        let mut key_count = 0usize;
        let mut every_key_has_mki = true;
        for text in key_params.split(';').filter(|p| !p.is_empty()) {
            let param = parse_key_param(profile, text)?;
            key_count += 1;
            every_key_has_mki &= param.mki.is_some();
            first.get_or_insert(param);
        }
        let first = first.ok_or(SrtpError::MalformedCrypto("missing key params"))?;
        if key_count > 1 && !every_key_has_mki {
            return Err(SrtpError::MalformedCrypto("several keys without MKI"));
        }
        Ok(CryptoAttribute {
            tag,
            profile,
            key: first.key,
            salt: first.salt,
            lifetime: first.lifetime,
            mki: first.mki,
            session_params,
        })
    }

    /// Draws a fresh master key and salt from `random` (which must be a CSPRNG) for `profile`.
    /// No lifetime, MKI or session parameters.
    pub fn generate(
        tag: u32,
        profile: SrtpProfile,
        random: &mut impl FnMut(&mut [u8]),
    ) -> CryptoAttribute {
        let mut key = [0u8; MASTER_KEY_LEN];
        random(&mut key);
        let mut salt = vec![0u8; profile.master_salt_len()];
        random(&mut salt);
        CryptoAttribute {
            tag,
            profile,
            key,
            salt,
            lifetime: None,
            mki: None,
            session_params: Vec::new(),
        }
    }

    /// Formats the value for `a=crypto:`; lifetimes that are powers of two are written `2^n`.
    pub fn to_sdp_value(&self) -> String {
        let mut key_salt = Vec::with_capacity(self.key.len() + self.salt.len());
        key_salt.extend_from_slice(&self.key);
        key_salt.extend_from_slice(&self.salt);
        let mut out = format!(
            "{} {} inline:{}",
            self.tag,
            self.profile.sdes_name(),
            SDES_BASE64.encode(&key_salt)
        );
        if let Some(lifetime) = self.lifetime {
            if lifetime.is_power_of_two() {
                out.push_str(&format!("|2^{}", lifetime.trailing_zeros()));
            } else {
                out.push_str(&format!("|{lifetime}"));
            }
        }
        if let Some((value, length)) = self.mki {
            out.push_str(&format!("|{value}:{length}"));
        }
        for param in &self.session_params {
            out.push(' ');
            out.push_str(param);
        }
        out
    }
}

impl fmt::Debug for CryptoAttribute {
    // Key material stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoAttribute")
            .field("tag", &self.tag)
            .field("profile", &self.profile)
            .field("key", &"<redacted>")
            .field("salt", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .field("session_params", &self.session_params)
            .finish()
    }
}

/// Answerer's choice (RFC 4568 §7.1): among the offered crypto lines, the first whose suite we
/// support, that has no MKI (we never mis-decrypt MKI packets) and whose session parameters
/// do not change how packets are keyed or protected. `None` → answer 488 or fall back.
pub fn choose_offered_crypto(offered: &[CryptoAttribute]) -> Option<&CryptoAttribute> {
    offered.iter().find(|line| {
        line.mki.is_none()
            && line.salt.len() == line.profile.master_salt_len()
            && line
                .session_params
                .iter()
                .all(|p| session_param_is_harmless(p))
    })
}

/// Session parameters we can accept without acting on them. KDR (a non-zero key derivation
/// rate), UNENCRYPTED_*/UNAUTHENTICATED_SRTP and FEC_KEY all change packet processing; unknown
/// mandatory parameters make the line invalid (RFC 4568 §6.3.7); `-`-prefixed ones are optional.
fn session_param_is_harmless(param: &str) -> bool {
    param.starts_with('-') || param.starts_with("WSH=") || param.starts_with("FEC_ORDER=")
}

/// Base64 for SDES keys: standard alphabet, padding written, padding optional when read
/// (some endpoints drop the `=` of GCM's 28-byte key||salt).
const SDES_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One parsed `inline:` key parameter.
struct KeyParam {
    key: [u8; MASTER_KEY_LEN],
    salt: Vec<u8>,
    lifetime: Option<u64>,
    mki: Option<(u32, u8)>,
}

fn parse_tag(text: &str) -> Result<u32, SrtpError> {
    // RFC 4568: tag = 1*9DIGIT
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SrtpError::MalformedCrypto("tag"));
    }
    text.parse().map_err(|_| SrtpError::MalformedCrypto("tag"))
}

fn parse_key_param(profile: SrtpProfile, text: &str) -> Result<KeyParam, SrtpError> {
    let (method, info) = text
        .split_once(':')
        .ok_or(SrtpError::MalformedCrypto("key params"))?;
    if !method.eq_ignore_ascii_case("inline") {
        return Err(SrtpError::MalformedCrypto("key method is not inline"));
    }
    let mut parts = info.split('|');
    let encoded = parts.next().unwrap_or_default();
    let mut decoded = [0u8; 64];
    let decoded_len = match SDES_BASE64.decode_slice(encoded, &mut decoded) {
        Ok(n) => n,
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => return Err(SrtpError::BadKeyLength),
        Err(base64::DecodeSliceError::DecodeError(_)) => return Err(SrtpError::BadKeyEncoding),
    };
    let salt_len = profile.master_salt_len();
    if decoded_len != MASTER_KEY_LEN + salt_len {
        return Err(SrtpError::BadKeyLength);
    }
    let mut key = [0u8; MASTER_KEY_LEN];
    key.copy_from_slice(&decoded[..MASTER_KEY_LEN]);
    let salt = decoded[MASTER_KEY_LEN..decoded_len].to_vec();

    let mut lifetime = None;
    let mut mki = None;
    for part in parts {
        if mki.is_some() {
            return Err(SrtpError::MalformedCrypto("text after MKI"));
        }
        if let Some((value, length)) = part.split_once(':') {
            mki = Some(parse_mki(value, length)?);
        } else if lifetime.is_none() {
            lifetime = Some(parse_lifetime(part)?);
        } else {
            return Err(SrtpError::MalformedCrypto("two lifetimes"));
        }
    }
    Ok(KeyParam {
        key,
        salt,
        lifetime,
        mki,
    })
}

fn parse_lifetime(text: &str) -> Result<u64, SrtpError> {
    const BAD: SrtpError = SrtpError::MalformedCrypto("lifetime");
    if let Some(exponent) = text.strip_prefix("2^") {
        let exponent: u32 = parse_digits(exponent).ok_or(BAD)?;
        return 1u64.checked_shl(exponent).ok_or(BAD);
    }
    parse_digits::<u64>(text).filter(|&n| n > 0).ok_or(BAD)
}

fn parse_mki(value: &str, length: &str) -> Result<(u32, u8), SrtpError> {
    let value = parse_digits(value).ok_or(SrtpError::MalformedCrypto("MKI value"))?;
    // RFC 4568 §6.1: MKI length is 1..128 bytes.
    let length = parse_digits::<u8>(length)
        .filter(|n| (1..=128).contains(n))
        .ok_or(SrtpError::MalformedCrypto("MKI length"))?;
    Ok((value, length))
}

/// Plain decimal digits only (no sign, no spaces), within the type's range.
fn parse_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Session keys for one of RTP or RTCP.
enum Transform {
    /// AES counter mode with HMAC-SHA1 (RFC 3711 §4.1.1, §4.2.1).
    AesCm(AesCmTransform),
    /// AES-GCM (RFC 7714).
    Gcm(GcmTransform),
}

impl Transform {
    /// Derives one direction's session transform; `labels` = encryption, auth, salt.
    fn derive(
        prf: &KeyDerivation,
        profile: SrtpProfile,
        labels: [u8; 3],
        tag_len: usize,
    ) -> Result<Self, SrtpError> {
        let [encryption_label, auth_label, salt_label] = labels;
        let mut key = [0u8; MASTER_KEY_LEN];
        prf.derive(encryption_label, &mut key);
        if profile == SrtpProfile::AeadAes128Gcm {
            let mut salt = [0u8; GCM_SALT_LEN];
            prf.derive(salt_label, &mut salt);
            return GcmTransform::new(&key, salt).map(Transform::Gcm);
        }
        let mut salt = [0u8; AES_CM_SALT_LEN];
        prf.derive(salt_label, &mut salt);
        let mut auth_key = [0u8; HMAC_SHA1_LEN];
        prf.derive(auth_label, &mut auth_key);
        AesCmTransform::new(&key, salt, &auth_key, tag_len).map(Transform::AesCm)
    }
}

/// AES-CM + HMAC-SHA1 session keys.
struct AesCmTransform {
    /// Session encryption key schedule.
    cipher: Aes128Enc,
    /// Session salt.
    salt: [u8; AES_CM_SALT_LEN],
    /// HMAC keyed with the session auth key; cloned per packet so the key schedule is reused.
    mac: HmacSha1,
    /// Truncated tag length in bytes.
    tag_len: usize,
}

impl AesCmTransform {
    fn new(
        key: &[u8],
        salt: [u8; AES_CM_SALT_LEN],
        auth_key: &[u8],
        tag_len: usize,
    ) -> Result<Self, SrtpError> {
        Ok(Self {
            cipher: Aes128Enc::new_from_slice(key).map_err(|_| SrtpError::BadKeyLength)?,
            salt,
            mac: <HmacSha1 as Mac>::new_from_slice(auth_key)
                .map_err(|_| SrtpError::BadKeyLength)?,
            tag_len,
        })
    }

    /// XORs the AES-CM keystream for (`ssrc`, `index`) into `data`; encrypts and decrypts.
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let iv = aes_cm_iv(&self.salt, ssrc, index);
        aes_ctr(&self.cipher, iv).apply_keystream(data);
    }

    /// Full-length HMAC-SHA1 over `authenticated || trailer`.
    fn tag(&self, authenticated: &[u8], trailer: &[u8]) -> [u8; HMAC_SHA1_LEN] {
        let mut mac = self.mac.clone();
        mac.update(authenticated);
        mac.update(trailer);
        mac.finalize().into_bytes().into()
    }

    fn verify(
        &self,
        authenticated: &[u8],
        trailer: &[u8],
        received: &[u8],
    ) -> Result<(), SrtpError> {
        let expected = self.tag(authenticated, trailer);
        if bool::from(expected[..self.tag_len].ct_eq(received)) {
            Ok(())
        } else {
            Err(SrtpError::AuthenticationFailed)
        }
    }
}

/// AEAD_AES_128_GCM session keys.
struct GcmTransform {
    /// Session key schedule and GHASH key.
    aead: Aes128Gcm,
    /// Session salt.
    salt: [u8; GCM_SALT_LEN],
}

impl GcmTransform {
    fn new(key: &[u8], salt: [u8; GCM_SALT_LEN]) -> Result<Self, SrtpError> {
        Ok(Self {
            aead: Aes128Gcm::new_from_slice(key).map_err(|_| SrtpError::BadKeyLength)?,
            salt,
        })
    }

    fn seal(
        &self,
        ssrc: u32,
        index: u64,
        aad: &[u8],
        payload: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN], SrtpError> {
        let nonce = gcm_iv(&self.salt, ssrc, index);
        self.aead
            .encrypt_in_place_detached(&nonce.into(), aad, payload)
            .map(Into::into)
            // GCM only refuses plaintexts longer than 64 GiB.
            .map_err(|_| SrtpError::LengthBeyondBuffer)
    }

    /// Verifies the tag before decrypting; on failure `payload` is left as it was.
    fn open(
        &self,
        ssrc: u32,
        index: u64,
        aad: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<(), SrtpError> {
        let tag: [u8; GCM_TAG_LEN] = tag.try_into().map_err(|_| SrtpError::TooShort)?;
        let nonce = gcm_iv(&self.salt, ssrc, index);
        self.aead
            .decrypt_in_place_detached(&nonce.into(), aad, payload, &tag.into())
            .map_err(|_| SrtpError::AuthenticationFailed)
    }
}

/// The RFC 3711 §4.3.3 AES-CM PRF keyed with the master key.
struct KeyDerivation {
    /// Master key schedule.
    cipher: Aes128Enc,
    /// Master salt right-padded to 14 bytes. GCM's 12-byte salt is zero-padded on the right, as
    /// libsrtp does, so the label still lands in byte 7.
    salt: [u8; AES_CM_SALT_LEN],
}

impl KeyDerivation {
    fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let mut salt = [0u8; AES_CM_SALT_LEN];
        salt.get_mut(..master_salt.len())
            .ok_or(SrtpError::BadKeyLength)?
            .copy_from_slice(master_salt);
        Ok(Self {
            cipher: Aes128Enc::new_from_slice(master_key).map_err(|_| SrtpError::BadKeyLength)?,
            salt,
        })
    }

    /// Fills `out` with PRF(master key, x = (label || r) XOR salt), key derivation rate 0 so r = 0.
    fn derive(&self, label: u8, out: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..AES_CM_SALT_LEN].copy_from_slice(&self.salt);
        // key_id = label || 48-bit r, right-aligned against the 112-bit salt.
        iv[7] ^= label;
        out.fill(0);
        aes_ctr(&self.cipher, iv).apply_keystream(out);
    }
}

/// Highest accepted packet index of one SSRC plus a bitmap of the 64 indices below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplayWindow {
    /// The SSRC this state belongs to.
    ssrc: u32,
    /// Highest index accepted (RTP: ROC·2^16 + SEQ; SRTCP: the 31-bit index).
    highest: u64,
    /// Bit i set = index `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    fn first(ssrc: u32, index: u64) -> Self {
        Self {
            ssrc,
            highest: index,
            seen: 1,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let age = self.highest - index;
        if age >= REPLAY_WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.seen & (1 << age) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if index > self.highest {
            let advance = index - self.highest;
            self.seen = if advance >= REPLAY_WINDOW {
                0
            } else {
                self.seen << advance
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1 << (self.highest - index);
        }
    }
}

/// The stream slot, SSRC and RFC 3711 §3.3.1 packet index of an RTP packet, refusing a
/// replayed or too-old index (§3.3.2) — shared by protect and unprotect.
fn rtp_packet_index(
    streams: &[Option<ReplayWindow>; MAX_SSRCS],
    packet: &[u8],
) -> Result<(usize, u32, u64), SrtpError> {
    let seq = read_u16(packet, 2);
    let ssrc = read_u32(packet, 8);
    let (slot, window) = stream_slot(streams, ssrc)?;
    let index = estimate_rtp_index(window.as_ref(), seq)?;
    if let Some(w) = &window {
        w.check(index)?;
    }
    Ok((slot, ssrc, index))
}

/// The slot holding `ssrc`'s state (with a copy of it), or a free slot for a new SSRC.
/// A new SSRC only occupies the slot once a packet has been accepted.
fn stream_slot(
    streams: &[Option<ReplayWindow>; MAX_SSRCS],
    ssrc: u32,
) -> Result<(usize, Option<ReplayWindow>), SrtpError> {
    if let Some(slot) = streams
        .iter()
        .position(|s| s.is_some_and(|w| w.ssrc == ssrc))
    {
        return Ok((slot, streams[slot]));
    }
    streams
        .iter()
        .position(Option::is_none)
        .map(|slot| (slot, None))
        .ok_or(SrtpError::TooManySsrcs)
}

/// Marks `index` accepted; called only after authentication (or after sealing, when sending).
fn record(slot: &mut Option<ReplayWindow>, ssrc: u32, index: u64) {
    match slot {
        Some(window) => window.accept(index),
        None => *slot = Some(ReplayWindow::first(ssrc, index)),
    }
}

/// RFC 3711 §3.3.1 / Appendix A: the index of `seq` given the highest index so far. The first
/// packet of an SSRC starts at ROC 0.
fn estimate_rtp_index(window: Option<&ReplayWindow>, seq: u16) -> Result<u64, SrtpError> {
    let Some(window) = window else {
        return Ok(u64::from(seq));
    };
    let roc = window.highest >> 16;
    let s_l = (window.highest & 0xFFFF) as u16;
    let guessed_roc = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            // From before the wrap; at ROC 0 it predates the stream itself.
            roc.checked_sub(1).ok_or(SrtpError::TooOld)?
        } else {
            roc
        }
    } else if seq < s_l - 0x8000 {
        roc + 1
    } else {
        roc
    };
    if guessed_roc > MAX_ROC {
        return Err(SrtpError::IndexExhausted);
    }
    Ok((guessed_roc << 16) | u64::from(seq))
}

/// The ROC appended to the authenticated RTP data (RFC 3711 §4.2).
fn roc_bytes(index: u64) -> [u8; 4] {
    ((index >> 16) as u32).to_be_bytes()
}

/// AES-CM IV = (salt·2^16) XOR (SSRC·2^64) XOR (index·2^16) (RFC 3711 §4.1.1).
fn aes_cm_iv(salt: &[u8; AES_CM_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..AES_CM_SALT_LEN].copy_from_slice(salt);
    xor_into(&mut iv[4..8], &ssrc.to_be_bytes());
    xor_into(&mut iv[8..14], &index.to_be_bytes()[2..]);
    iv
}

/// GCM IV = (0x0000 || SSRC || 48-bit index) XOR salt (RFC 7714 §8.1, §9.1). For RTP the index
/// is ROC || SEQ; for SRTCP it is 0x0000 || 0 || 31-bit SRTCP index.
fn gcm_iv(salt: &[u8; GCM_SALT_LEN], ssrc: u32, index: u64) -> [u8; GCM_SALT_LEN] {
    let mut iv = *salt;
    xor_into(&mut iv[2..6], &ssrc.to_be_bytes());
    xor_into(&mut iv[6..12], &index.to_be_bytes()[2..]);
    iv
}

/// AES-128 in 128-bit big-endian counter mode starting at `iv`; reuses the expanded key.
fn aes_ctr(cipher: &Aes128Enc, iv: [u8; 16]) -> Aes128Ctr {
    StreamCipherCoreWrapper::from_core(Aes128CtrCore::inner_iv_init(cipher.clone(), &iv.into()))
}

fn xor_into(target: &mut [u8], bytes: &[u8]) {
    for (t, b) in target.iter_mut().zip(bytes) {
        *t ^= b;
    }
}

/// E flag set plus the 31-bit SRTCP index, big-endian.
fn srtcp_trailer(index: u64) -> [u8; SRTCP_INDEX_LEN] {
    (SRTCP_E_FLAG | (index & MAX_SRTCP_INDEX) as u32).to_be_bytes()
}

/// RFC 7714 §9.2 AAD for encrypted SRTCP: the first 8 octets, then E flag and index.
fn srtcp_gcm_aad(
    header: &[u8],
    e_index: [u8; SRTCP_INDEX_LEN],
) -> [u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN] {
    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
    aad[..RTCP_HEADER_LEN].copy_from_slice(header);
    aad[RTCP_HEADER_LEN..].copy_from_slice(&e_index);
    aad
}

/// Length of the RTP header including CSRCs and the header extension.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < RTP_HEADER_LEN {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(packet[0] & 0x0F);
    if packet[0] & 0x10 != 0 {
        let extension = packet.get(len..len + 4).ok_or(SrtpError::TooShort)?;
        len += 4 + 4 * usize::from(read_u16(extension, 2));
    }
    if len > packet.len() {
        return Err(SrtpError::TooShort);
    }
    Ok(len)
}

fn check_rtcp_header(packet: &[u8]) -> Result<(), SrtpError> {
    if packet.len() < RTCP_HEADER_LEN {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    Ok(())
}

/// Callers have checked that `at + 2 <= bytes.len()`.
fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Callers have checked that `at + 4 <= bytes.len()`.
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_PROFILES: [SrtpProfile; 3] = [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
    ];

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                u8::from_str_radix(std::str::from_utf8(pair).expect("ascii hex"), 16)
                    .expect("hex digit")
            })
            .collect()
    }

    fn master_for(profile: SrtpProfile) -> (Vec<u8>, Vec<u8>) {
        let key: Vec<u8> = (1..=16).collect();
        let salt: Vec<u8> = (0xA0..0xA0 + profile.master_salt_len() as u8).collect();
        (key, salt)
    }

    /// An outbound and an inbound context keyed alike.
    fn pair(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
        let (key, salt) = master_for(profile);
        (
            SrtpContext::new(profile, &key, &salt).expect("valid key"),
            SrtpContext::new(profile, &key, &salt).expect("valid key"),
        )
    }

    /// RTP packet with 2 CSRCs and a one-word header extension, payload derived from `seq`.
    fn rtp_packet(ssrc: u32, seq: u16) -> Vec<u8> {
        let mut p = vec![0x92, 0x00]; // V=2, X=1, CC=2
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]);
        p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x10, 0xAA, 0x00, 0x00]);
        p.extend((0..160u16).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    const RTP_EXT_HEADER_LEN: usize = 12 + 8 + 8;

    fn rtcp_packet(ssrc: u32, marker: u8) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0x00, 0x06];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..20u8).map(|i| i.wrapping_mul(7) ^ marker));
        p
    }

    /// Protects `plain` into a fresh buffer with tail room; returns exactly the wire bytes.
    fn protect(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + 64, 0);
        let n = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
        buf.truncate(n);
        buf
    }

    fn unprotect(rx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = wire.to_vec();
        let n = rx.unprotect_rtp(&mut buf, wire.len())?;
        buf.truncate(n);
        Ok(buf)
    }

    fn protect_rtcp(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + 64, 0);
        let n = tx
            .protect_rtcp(&mut buf, plain.len())
            .expect("protect rtcp");
        buf.truncate(n);
        buf
    }

    fn unprotect_rtcp(rx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = wire.to_vec();
        let n = rx.unprotect_rtcp(&mut buf, wire.len())?;
        buf.truncate(n);
        Ok(buf)
    }

    // ---- published vectors -------------------------------------------------------------

    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let t = AesCmTransform::new(
            &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
            hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
                .try_into()
                .expect("14 bytes"),
            &[0u8; 20],
            10,
        )
        .expect("valid key");
        let mut keystream = vec![0u8; 0xFF02 * 16];
        t.apply_keystream(0, 0, &mut keystream);
        let block = |n: usize| keystream[n * 16..n * 16 + 16].to_vec();
        assert_eq!(block(0x0000), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(0x0001), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(0x0002), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xFEFF), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xFF00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xFF01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let prf = KeyDerivation::new(
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .expect("valid master key");
        let mut cipher_key = [0u8; 16];
        prf.derive(LABEL_RTP_ENCRYPTION, &mut cipher_key);
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        prf.derive(LABEL_RTP_SALT, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth_key = [0u8; 94];
        prf.derive(LABEL_RTP_AUTH, &mut auth_key);
        assert_eq!(
            auth_key.to_vec(),
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

    /// libsrtp's own reference packets (test/srtp_driver.c, srtp_validate): master key and salt
    /// from RFC 3711 B.3, SSRC 0xcafebabe, seq 0x1234; libsrtp numbers SRTCP from 1.
    #[test]
    fn libsrtp_reference_packets_aes_cm_128_hmac_sha1() {
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let rtp_plain = hex("800f1234decafbadcafebabe abababababababababababababababab");
        let srtp_80 =
            hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb");
        let rtcp_plain = hex("81c8000bcafebabe abababababababababababababababab");
        let srtcp =
            hex("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798");

        let mut tx = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &key, &salt).expect("key");
        assert_eq!(protect(&mut tx, &rtp_plain), srtp_80);
        tx.rtcp_streams[0] = Some(ReplayWindow::first(0xcafe_babe, 0));
        assert_eq!(protect_rtcp(&mut tx, &rtcp_plain), srtcp);

        let mut rx = SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &key, &salt).expect("key");
        assert_eq!(unprotect(&mut rx, &srtp_80), Ok(rtp_plain.clone()));
        assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(rtcp_plain.clone()));

        // _32 differs only in the truncation of the RTP tag.
        let mut tx32 =
            SrtpContext::new(SrtpProfile::AesCm128HmacSha1_32, &key, &salt).expect("key");
        assert_eq!(protect(&mut tx32, &rtp_plain), srtp_80[..32].to_vec());
        tx32.rtcp_streams[0] = Some(ReplayWindow::first(0xcafe_babe, 0));
        assert_eq!(
            protect_rtcp(&mut tx32, &rtcp_plain),
            srtcp,
            "SRTCP keeps the 80-bit tag"
        );
    }

    /// libsrtp's srtp_validate_gcm reference packets: these go through the key derivation
    /// with a 12-byte master salt, so they pin down how the GCM salt is padded.
    #[test]
    fn libsrtp_reference_packets_aead_aes_128_gcm() {
        let key = hex("000102030405060708090a0b0c0d0e0f");
        let salt = hex("a0a1a2a3a4a5a6a7a8a9aaab");
        let rtp_plain = hex("800f1234decafbadcafebabe abababababababababababababababab");
        let srtp = hex("800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e
             d2976826f796b201df3131a127e8a392");
        let rtcp_plain = hex("81c8000bcafebabe abababababababababababababababab");
        let srtcp = hex("81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025
             c52c6fbea2b3b446ea31123ba88ce61e 80000001");

        let mut tx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).expect("key");
        assert_eq!(protect(&mut tx, &rtp_plain), srtp);
        tx.rtcp_streams[0] = Some(ReplayWindow::first(0xcafe_babe, 0));
        assert_eq!(protect_rtcp(&mut tx, &rtcp_plain), srtcp);

        let mut rx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).expect("key");
        assert_eq!(unprotect(&mut rx, &srtp), Ok(rtp_plain));
        assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(rtcp_plain));
    }

    fn gcm_session_context(key: &[u8], salt: &[u8]) -> SrtpContext {
        let salt: [u8; 12] = salt.try_into().expect("12-byte salt");
        let rtp = Transform::Gcm(GcmTransform::new(key, salt).expect("key"));
        let rtcp = Transform::Gcm(GcmTransform::new(key, salt).expect("key"));
        SrtpContext::from_transforms(SrtpProfile::AeadAes128Gcm, rtp, rtcp)
    }

    /// RFC 7714 §16.1.1 (RTP) and §17.1.1 (RTCP); these use session keys directly.
    #[test]
    fn rfc7714_aead_aes_128_gcm_vectors() {
        let key = hex("000102030405060708090a0b0c0d0e0f");
        let salt = hex("517569642070726f2071756f");
        assert_eq!(
            gcm_iv(&salt.clone().try_into().expect("12"), 0x5501_a0b2, 0xf17b).to_vec(),
            hex("51753c6580c2726f20718414")
        );
        assert_eq!(
            gcm_iv(&salt.clone().try_into().expect("12"), 0x4d61_7273, 0x5d4).to_vec(),
            hex("517524055203726f207170bb")
        );

        let rtp_plain = hex("8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e6973
             20646976697361 20696e207061727465732074726573");
        let srtp = hex("8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bca
             be633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf
             765ee4390cce");
        let mut tx = gcm_session_context(&key, &salt);
        assert_eq!(protect(&mut tx, &rtp_plain), srtp);
        let mut rx = gcm_session_context(&key, &salt);
        assert_eq!(unprotect(&mut rx, &srtp), Ok(rtp_plain));

        let rtcp_plain = hex(
            "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61
             deadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
        );
        let srtcp = hex(
            "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32d
             c676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf872
             45d9eade800005d4",
        );
        tx.rtcp_streams[0] = Some(ReplayWindow::first(0x4d61_7273, 0x5d3));
        assert_eq!(protect_rtcp(&mut tx, &rtcp_plain), srtcp);
        assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(rtcp_plain));
    }

    // ---- round trips ---------------------------------------------------------------------

    #[test]
    fn rtp_round_trip_across_sequence_wrap_for_every_profile() {
        for profile in ALL_PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let ssrc = 0x1234_5678;
            for seq in (65530..=65535).chain(0..=5) {
                let plain = rtp_packet(ssrc, seq);
                let wire = protect(&mut tx, &plain);
                assert_eq!(wire.len(), plain.len() + profile.rtp_auth_tag_len());
                assert_eq!(
                    wire[..RTP_EXT_HEADER_LEN],
                    plain[..RTP_EXT_HEADER_LEN],
                    "header stays clear"
                );
                assert_ne!(
                    wire[RTP_EXT_HEADER_LEN..plain.len()],
                    plain[RTP_EXT_HEADER_LEN..],
                    "payload encrypted"
                );
                assert_eq!(
                    unprotect(&mut rx, &wire),
                    Ok(plain),
                    "{profile:?} seq {seq}"
                );
            }
            assert_eq!(tx.rollover_counter(ssrc), Some(1), "{profile:?}");
            assert_eq!(rx.rollover_counter(ssrc), Some(1), "{profile:?}");
        }
    }

    #[test]
    fn rtp_reordering_around_the_wrap_keeps_the_right_roc() {
        for profile in ALL_PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let ssrc = 0xABCD_0001;
            let seqs = [65532u16, 65533, 65534, 65535, 0, 1, 2, 3];
            let wires: Vec<(u16, Vec<u8>)> = seqs
                .iter()
                .map(|&s| (s, protect(&mut tx, &rtp_packet(ssrc, s))))
                .collect();
            // Arrival order: the wrap is crossed, then late packets from before it arrive.
            for position in [0usize, 1, 4, 2, 5, 3, 7, 6] {
                let (seq, wire) = &wires[position];
                assert_eq!(
                    unprotect(&mut rx, wire),
                    Ok(rtp_packet(ssrc, *seq)),
                    "{profile:?} seq {seq}"
                );
            }
            assert_eq!(rx.rollover_counter(ssrc), Some(1));
            assert_eq!(
                unprotect(&mut rx, &wires[3].1),
                Err(SrtpError::Replayed),
                "65535 again after the wrap"
            );
        }
    }

    #[test]
    fn rtcp_round_trip_for_every_profile_numbers_from_zero() {
        for profile in ALL_PROFILES {
            let (mut tx, mut rx) = pair(profile);
            for n in 0..5u8 {
                let plain = rtcp_packet(0x5555_0001, n);
                let wire = protect_rtcp(&mut tx, &plain);
                assert_eq!(wire.len(), plain.len() + 4 + profile.rtcp_auth_tag_len());
                let index_at = match profile {
                    SrtpProfile::AeadAes128Gcm => wire.len() - 4,
                    _ => plain.len(),
                };
                assert_eq!(
                    read_u32(&wire, index_at),
                    SRTCP_E_FLAG | u32::from(n),
                    "{profile:?}"
                );
                assert_ne!(wire[8..plain.len()], plain[8..], "compound body encrypted");
                assert_eq!(unprotect_rtcp(&mut rx, &wire), Ok(plain));
            }
        }
    }

    // ---- replay and tampering ------------------------------------------------------------

    #[test]
    fn replayed_and_too_old_packets_are_refused() {
        for profile in ALL_PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let ssrc = 7;
            let wires: Vec<Vec<u8>> = (0..100u16)
                .map(|s| protect(&mut tx, &rtp_packet(ssrc, s)))
                .collect();
            assert!(unprotect(&mut rx, &wires[10]).is_ok());
            assert_eq!(unprotect(&mut rx, &wires[10]), Err(SrtpError::Replayed));
            assert_eq!(unprotect(&mut rx, &wires[99]), Ok(rtp_packet(ssrc, 99)));
            assert_eq!(
                unprotect(&mut rx, &wires[35]),
                Err(SrtpError::TooOld),
                "99-35 = 64: just out"
            );
            assert_eq!(
                unprotect(&mut rx, &wires[36]),
                Ok(rtp_packet(ssrc, 36)),
                "99-36 = 63: last slot"
            );
            assert_eq!(unprotect(&mut rx, &wires[36]), Err(SrtpError::Replayed));

            let rtcp: Vec<Vec<u8>> = (0..70u8)
                .map(|n| protect_rtcp(&mut tx, &rtcp_packet(ssrc, n)))
                .collect();
            assert!(unprotect_rtcp(&mut rx, &rtcp[69]).is_ok());
            assert_eq!(unprotect_rtcp(&mut rx, &rtcp[69]), Err(SrtpError::Replayed));
            assert_eq!(unprotect_rtcp(&mut rx, &rtcp[5]), Err(SrtpError::TooOld));
            assert_eq!(unprotect_rtcp(&mut rx, &rtcp[6]), Ok(rtcp_packet(ssrc, 6)));
        }
    }

    #[test]
    fn tampering_fails_authentication_without_moving_the_window() {
        for profile in ALL_PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let ssrc = 0x0BAD_F00D;
            let wires: Vec<Vec<u8>> = (0..3u16)
                .map(|s| protect(&mut tx, &rtp_packet(ssrc, s)))
                .collect();
            let far_ahead = protect(&mut tx, &rtp_packet(ssrc, 1000));
            assert!(unprotect(&mut rx, &wires[0]).is_ok());

            let last = wires[1].len() - 1;
            for (what, at) in [
                ("payload", RTP_EXT_HEADER_LEN + 3),
                ("header", 5),
                ("csrc", 13),
                ("tag", last),
            ] {
                let mut forged = wires[1].clone();
                forged[at] ^= 0x01;
                assert_eq!(
                    unprotect(&mut rx, &forged),
                    Err(SrtpError::AuthenticationFailed),
                    "{profile:?} {what}"
                );
            }
            let mut in_place = wires[1].clone();
            in_place[RTP_EXT_HEADER_LEN + 3] ^= 0x01;
            let before = in_place.clone();
            let len = in_place.len();
            assert_eq!(
                rx.unprotect_rtp(&mut in_place, len),
                Err(SrtpError::AuthenticationFailed)
            );
            assert_eq!(
                in_place, before,
                "{profile:?}: nothing decrypted on failure"
            );
            // A forgery far ahead must not drag the window along (which would make 1 and 2 TooOld).
            let mut forged_ahead = far_ahead.clone();
            forged_ahead[RTP_EXT_HEADER_LEN] ^= 0x80;
            assert_eq!(
                unprotect(&mut rx, &forged_ahead),
                Err(SrtpError::AuthenticationFailed)
            );
            assert_eq!(rx.rollover_counter(ssrc), Some(0));
            assert_eq!(
                unprotect(&mut rx, &wires[1]),
                Ok(rtp_packet(ssrc, 1)),
                "{profile:?}: genuine index 1 still accepted"
            );
            assert_eq!(unprotect(&mut rx, &wires[2]), Ok(rtp_packet(ssrc, 2)));

            let rtcp = protect_rtcp(&mut tx, &rtcp_packet(ssrc, 9));
            for at in [1, 6, 10, rtcp.len() - 1] {
                let mut forged = rtcp.clone();
                forged[at] ^= 0x10;
                assert_eq!(
                    unprotect_rtcp(&mut rx, &forged),
                    Err(SrtpError::AuthenticationFailed),
                    "{profile:?} rtcp byte {at}"
                );
            }
            assert_eq!(unprotect_rtcp(&mut rx, &rtcp), Ok(rtcp_packet(ssrc, 9)));
        }
    }

    #[test]
    fn forged_packets_from_unknown_ssrcs_take_no_slot() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        for ssrc in 100..110u32 {
            let (mut forger, _) = pair(SrtpProfile::AesCm128HmacSha1_80);
            let mut forged = protect(&mut forger, &rtp_packet(ssrc, 1));
            let last = forged.len() - 1;
            forged[last] ^= 0xFF;
            assert_eq!(
                unprotect(&mut rx, &forged),
                Err(SrtpError::AuthenticationFailed)
            );
        }
        assert_eq!(rx.rollover_counter(100), None);
        for ssrc in 1..=MAX_SSRCS as u32 {
            let wire = protect(&mut tx, &rtp_packet(ssrc, 1));
            assert!(unprotect(&mut rx, &wire).is_ok(), "ssrc {ssrc}");
        }
    }

    #[test]
    fn ssrc_slots_are_bounded_and_can_be_released() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        for ssrc in 1..=MAX_SSRCS as u32 {
            let wire = protect(&mut tx, &rtp_packet(ssrc, 1));
            assert_eq!(unprotect(&mut rx, &wire), Ok(rtp_packet(ssrc, 1)));
        }
        let mut buf = rtp_packet(99, 1);
        let len = buf.len();
        buf.resize(len + 16, 0);
        assert_eq!(tx.protect_rtp(&mut buf, len), Err(SrtpError::TooManySsrcs));
        assert!(tx.forget_ssrc(1));
        assert!(!tx.forget_ssrc(1));
        let wire = protect(&mut tx, &rtp_packet(99, 1));
        assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::TooManySsrcs));
        assert!(rx.forget_ssrc(2));
        assert_eq!(unprotect(&mut rx, &wire), Ok(rtp_packet(99, 1)));
    }

    #[test]
    fn protect_refuses_to_reuse_an_index() {
        for profile in ALL_PROFILES {
            let (mut tx, _) = pair(profile);
            let plain = rtp_packet(3, 500);
            let _ = protect(&mut tx, &plain);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 16, 0);
            assert_eq!(
                tx.protect_rtp(&mut buf, plain.len()),
                Err(SrtpError::Replayed)
            );
            assert_eq!(
                buf[..plain.len()],
                plain[..],
                "refused packet left untouched"
            );
        }
    }

    #[test]
    fn malformed_and_short_buffers_are_errors() {
        let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80);
        let plain = rtp_packet(1, 1);
        let mut exact = plain.clone();
        assert_eq!(
            tx.protect_rtp(&mut exact, plain.len()),
            Err(SrtpError::NoTailRoom)
        );
        assert_eq!(
            tx.protect_rtp(&mut exact, plain.len() + 1),
            Err(SrtpError::LengthBeyondBuffer)
        );
        let mut v1 = plain.clone();
        v1[0] = 0x40 | (v1[0] & 0x3F);
        v1.resize(plain.len() + 16, 0);
        assert_eq!(
            tx.protect_rtp(&mut v1, plain.len()),
            Err(SrtpError::BadVersion)
        );
        let mut short = [0x80u8; 21];
        assert_eq!(rx.unprotect_rtp(&mut short, 21), Err(SrtpError::TooShort));
        // Extension length pointing past the packet.
        let mut wire = protect(&mut tx, &plain);
        wire[RTP_EXT_HEADER_LEN - 6] = 0x7F;
        let len = wire.len();
        assert_eq!(rx.unprotect_rtp(&mut wire, len), Err(SrtpError::TooShort));
        let mut rtcp = [0x80u8, 200, 0, 1, 0, 0, 0, 1];
        assert_eq!(tx.protect_rtcp(&mut rtcp, 8), Err(SrtpError::NoTailRoom));
        assert_eq!(rx.unprotect_rtcp(&mut rtcp, 8), Err(SrtpError::TooShort));
        let mut unencrypted = protect_rtcp(&mut tx, &rtcp_packet(1, 1));
        let e_at = unencrypted.len() - 14;
        unencrypted[e_at] &= 0x7F;
        let len = unencrypted.len();
        assert_eq!(
            rx.unprotect_rtcp(&mut unencrypted, len),
            Err(SrtpError::UnencryptedSrtcp)
        );
    }

    #[test]
    fn key_lengths_are_checked() {
        assert!(SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &[0; 16], &[0; 12]).is_err());
        assert!(SrtpContext::new(SrtpProfile::AeadAes128Gcm, &[0; 16], &[0; 14]).is_err());
        assert_eq!(
            SrtpContext::new(SrtpProfile::AesCm128HmacSha1_32, &[0; 32], &[0; 14])
                .map(|c| c.profile()),
            Err(SrtpError::BadKeyLength)
        );
    }

    // ---- SDES ----------------------------------------------------------------------------

    #[test]
    fn sdes_parses_rfc4568_examples() {
        let a = CryptoAttribute::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
        )
        .expect("RFC 4568 §4 example");
        assert_eq!(a.tag, 1);
        assert_eq!(a.profile, SrtpProfile::AesCm128HmacSha1_80);
        assert_eq!(a.key.to_vec(), hex("3d2d6e40255e7821426a75667239293f"));
        assert_eq!(a.salt, hex("2c2335685c603d265d7b71695051"));
        assert_eq!(a.lifetime, Some(1 << 20));
        assert_eq!(a.mki, Some((1, 32)));
        assert!(a.session_params.is_empty());

        let b = CryptoAttribute::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP",
        )
        .expect("RFC 4568 offer example");
        assert_eq!(b.mki, Some((1, 4)));
        assert_eq!(b.session_params, vec!["FEC_ORDER=FEC_SRTP".to_owned()]);
        assert_eq!(
            CryptoAttribute::parse(
                "2 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP"
            ),
            Err(SrtpError::UnknownSuite)
        );
        let two_keys = CryptoAttribute::parse(
            "3 AES_CM_128_HMAC_SHA1_32 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4",
        )
        .expect("two keys with MKIs");
        assert_eq!(&two_keys.key, b"123456789ABCDE01");
        assert_eq!(two_keys.mki, Some((1, 4)));
        let no_lifetime = CryptoAttribute::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:YUJDZGVmZ2hpSktMbW9QUXJzVHVWd3l6MTIzNDU2|1066:4",
        )
        .expect("RFC 4568 example without lifetime");
        assert_eq!(
            (no_lifetime.lifetime, no_lifetime.mki),
            (None, Some((1066, 4)))
        );
    }

    #[test]
    fn sdes_lifetime_forms() {
        let key = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let parse = |suffix: &str| {
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 {key}{suffix}"))
        };
        assert_eq!(parse("").map(|a| a.lifetime), Ok(None));
        assert_eq!(parse("|2^31").map(|a| a.lifetime), Ok(Some(1 << 31)));
        assert_eq!(parse("|2^48").map(|a| a.lifetime), Ok(Some(1 << 48)));
        assert_eq!(parse("|1048576").map(|a| a.lifetime), Ok(Some(1_048_576)));
        assert_eq!(
            parse("|1000000|7:1").map(|a| (a.lifetime, a.mki)),
            Ok((Some(1_000_000), Some((7, 1))))
        );
        for bad in [
            "|2^64",
            "|2^",
            "|0",
            "|-5",
            "|2^20|2^20",
            "|1:4|2^20",
            "|1:0",
            "|1:200",
            "|x:4",
        ] {
            assert!(
                matches!(parse(bad), Err(SrtpError::MalformedCrypto(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sdes_bad_values_are_errors() {
        let cases = [
            ("", SrtpError::MalformedCrypto("missing tag")),
            ("1", SrtpError::MalformedCrypto("missing crypto suite")),
            ("1 AES_CM_128_HMAC_SHA1_80", SrtpError::MalformedCrypto("missing key params")),
            ("x AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", SrtpError::MalformedCrypto("tag")),
            ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", SrtpError::MalformedCrypto("tag")),
            ("1 AES_256_CM_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", SrtpError::UnknownSuite),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:https://example.invalid/key", SrtpError::MalformedCrypto("key method is not inline")),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwg*CkgewkyMjA7fQp9CnVubGVz", SrtpError::BadKeyEncoding),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9", SrtpError::BadKeyLength),
            ("1 AEAD_AES_128_GCM inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", SrtpError::BadKeyLength),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzWVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", SrtpError::BadKeyLength),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz;inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
                SrtpError::MalformedCrypto("several keys without MKI"),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(CryptoAttribute::parse(value), Err(expected), "{value:?}");
        }
        assert_eq!(
            SrtpError::MalformedCrypto("tag").to_string(),
            "malformed a=crypto attribute: tag"
        );
    }

    #[test]
    fn answerer_skips_mki_unknown_suites_and_unsafe_session_params() {
        let offer = [
            "1 AES_256_CM_HMAC_SHA1_80 inline:8AbZePWwsKhLGX3GlXA+yHYPQ3cgraer/9DkFJYCOPZZy3o9wC0NIbIFYZfyHw==",
            "2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
            "3 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz KDR=1",
            "4 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz UNENCRYPTED_SRTCP",
            "5 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz FUTURE_PARAM=1",
            "6 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31 WSH=128 -FUTURE=1",
            "7 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        ];
        // Unknown suites never become attributes; the caller skips lines that fail to parse.
        let parsed: Vec<CryptoAttribute> = offer
            .iter()
            .filter_map(|v| CryptoAttribute::parse(v).ok())
            .collect();
        assert_eq!(parsed.len(), 6);
        let chosen = choose_offered_crypto(&parsed).expect("line 6 is usable");
        assert_eq!(
            (chosen.tag, chosen.profile),
            (6, SrtpProfile::AesCm128HmacSha1_32)
        );
        assert!(
            choose_offered_crypto(&parsed[..4]).is_none(),
            "only MKI/KDR/UNENCRYPTED/unknown lines left"
        );
        assert!(choose_offered_crypto(&[]).is_none());
    }

    #[test]
    fn generated_attributes_round_trip_and_key_matching_contexts() {
        let mut counter = 0u8;
        let mut random = |out: &mut [u8]| {
            for b in out {
                counter = counter.wrapping_add(37);
                *b = counter;
            }
        };
        for (tag, profile) in (1..).zip(ALL_PROFILES) {
            let offered = CryptoAttribute::generate(tag, profile, &mut random);
            assert_eq!(offered.salt.len(), profile.master_salt_len());
            let text = offered.to_sdp_value();
            assert!(
                text.starts_with(&format!("{tag} {} inline:", profile.sdes_name())),
                "{text}"
            );
            assert!(
                !text.contains('|'),
                "we generate no lifetime or MKI: {text}"
            );
            let parsed = CryptoAttribute::parse(&text).expect("our own value parses");
            assert_eq!(parsed, offered);

            let (mut tx, mut rx) = (
                SrtpContext::new(offered.profile, &offered.key, &offered.salt).expect("key"),
                SrtpContext::new(parsed.profile, &parsed.key, &parsed.salt).expect("key"),
            );
            let wire = protect(&mut tx, &rtp_packet(42, 7));
            assert_eq!(unprotect(&mut rx, &wire), Ok(rtp_packet(42, 7)));
        }
        let mut with_extras =
            CryptoAttribute::generate(9, SrtpProfile::AesCm128HmacSha1_80, &mut random);
        with_extras.lifetime = Some(1_000_000);
        with_extras.mki = Some((3, 2));
        with_extras.session_params = vec!["WSH=64".to_owned()];
        assert_eq!(
            CryptoAttribute::parse(&with_extras.to_sdp_value()),
            Ok(with_extras.clone())
        );
        with_extras.lifetime = Some(1 << 31);
        assert!(with_extras.to_sdp_value().contains("|2^31|3:2 WSH=64"));
    }

    #[test]
    fn gcm_key_without_base64_padding_is_accepted() {
        let offered =
            CryptoAttribute::generate(1, SrtpProfile::AeadAes128Gcm, &mut |b: &mut [u8]| {
                b.fill(0x5A)
            });
        let text = offered.to_sdp_value();
        assert!(text.ends_with('='), "28 bytes need padding: {text}");
        let unpadded = text.trim_end_matches('=');
        assert_eq!(CryptoAttribute::parse(unpadded), Ok(offered));
    }

    #[test]
    fn debug_output_hides_keys() {
        let a = CryptoAttribute::generate(
            1,
            SrtpProfile::AesCm128HmacSha1_80,
            &mut |b: &mut [u8]| b.fill(0xEE),
        );
        let shown = format!("{a:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("238"),
            "{shown}"
        );
        let (ctx, _) = pair(SrtpProfile::AeadAes128Gcm);
        assert_eq!(
            format!("{ctx:?}"),
            "SrtpContext { profile: AeadAes128Gcm, rtp_ssrcs: 0, rtcp_ssrcs: 0, .. }"
        );
    }

    #[test]
    fn profile_names_round_trip() {
        for profile in ALL_PROFILES {
            assert_eq!(
                SrtpProfile::from_sdes_name(profile.sdes_name()),
                Some(profile)
            );
            assert_eq!(profile.master_key_len(), 16);
        }
        assert_eq!(SrtpProfile::AeadAes128Gcm.master_salt_len(), 12);
        assert_eq!(SrtpProfile::AesCm128HmacSha1_32.rtp_auth_tag_len(), 4);
        assert_eq!(SrtpProfile::AesCm128HmacSha1_32.rtcp_auth_tag_len(), 10);
        assert_eq!(SrtpProfile::from_sdes_name("aes_cm_128_hmac_sha1_80"), None);
    }

    // ---- allocation and robustness -------------------------------------------------------

    use crate::media::alloc_counter::allocations_during;

    #[test]
    fn packet_path_does_not_allocate() {
        assert_eq!(
            allocations_during(|| drop(vec![0u8; 8])),
            1,
            "the counter works"
        );
        for profile in ALL_PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let plain = rtp_packet(77, 65534);
            let rtcp = rtcp_packet(77, 1);
            let mut buf = [0u8; 1500];
            let mut forged_sent = 0;
            let allocations = allocations_during(|| {
                for i in 0..200u16 {
                    buf[..plain.len()].copy_from_slice(&plain);
                    buf[2..4].copy_from_slice(&65534u16.wrapping_add(i).to_be_bytes());
                    let n = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
                    let m = rx.unprotect_rtp(&mut buf, n).expect("unprotect");
                    assert_eq!(m, plain.len());
                    buf[5] ^= 1;
                    let n = tx.protect_rtp(&mut buf, plain.len());
                    forged_sent += usize::from(n.is_err());

                    buf[..rtcp.len()].copy_from_slice(&rtcp);
                    let n = tx.protect_rtcp(&mut buf, rtcp.len()).expect("protect rtcp");
                    buf[10] ^= 1;
                    assert_eq!(
                        rx.unprotect_rtcp(&mut buf, n),
                        Err(SrtpError::AuthenticationFailed)
                    );
                    buf[10] ^= 1;
                    assert_eq!(rx.unprotect_rtcp(&mut buf, n), Ok(rtcp.len()));
                }
            });
            assert_eq!(allocations, 0, "{profile:?}");
            assert_eq!(
                forged_sent, 200,
                "re-protecting the same index is refused every time"
            );
            assert_eq!(rx.rollover_counter(77), Some(1));
        }
    }

    /// xorshift64*: deterministic and dependency-free.
    struct TestRng(u64);

    impl TestRng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn unprotect_never_panics_and_never_accepts_mutations() {
        let mut rng = TestRng(0x5EED_1234_ABCD_0001);
        for profile in ALL_PROFILES {
            let (mut tx, mut rx) = pair(profile);
            let mut accepted_random = 0;
            for _ in 0..3000 {
                let mut buf = vec![0u8; rng.below(200)];
                buf.iter_mut().for_each(|b| *b = rng.next() as u8);
                if !buf.is_empty() && rng.below(2) == 0 {
                    buf[0] = 0x80 | (buf[0] & 0x3F);
                }
                let len = rng.below(buf.len() + 8);
                accepted_random += usize::from(rx.unprotect_rtp(&mut buf, len).is_ok());
                accepted_random += usize::from(rx.unprotect_rtcp(&mut buf, len).is_ok());
            }
            assert_eq!(
                accepted_random, 0,
                "{profile:?}: random bytes never authenticate"
            );

            for seq in 0..400u16 {
                let rtp_wire = protect(&mut tx, &rtp_packet(0xF00D, seq));
                let rtcp_wire = protect_rtcp(&mut tx, &rtcp_packet(0xF00D, seq as u8));
                for wire in [&rtp_wire, &rtcp_wire] {
                    let mut mutated = wire.clone();
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(mutated.len());
                        mutated[at] ^= 1 << rng.below(8);
                    }
                    if mutated == *wire {
                        continue;
                    }
                    let cut = if rng.below(4) == 0 {
                        rng.below(mutated.len())
                    } else {
                        mutated.len()
                    };
                    let is_rtp = std::ptr::eq(wire, &rtp_wire);
                    let result = if is_rtp {
                        rx.unprotect_rtp(&mut mutated, cut)
                    } else {
                        rx.unprotect_rtcp(&mut mutated, cut)
                    };
                    assert!(
                        result.is_err(),
                        "{profile:?} seq {seq}: a mutated packet was accepted"
                    );
                }
                assert_eq!(
                    unprotect(&mut rx, &rtp_wire),
                    Ok(rtp_packet(0xF00D, seq)),
                    "{profile:?} genuine seq {seq}"
                );
                assert_eq!(
                    unprotect_rtcp(&mut rx, &rtcp_wire),
                    Ok(rtcp_packet(0xF00D, seq as u8))
                );
            }
        }
    }
}
