//! The SDP side of SDES-SRTP (RFC 4568): the [`SrtpPolicy`], our
//! [`SrtpKeys`], the outcome [`NegotiatedSrtp`], and choosing, checking and
//! writing `a=crypto` lines for `negotiate`.
//!
//! Keys are opaque base64 text here: it must not decode them or do any
//! cryptography (the media layer does), and must never put key material in
//! an error text or a `Debug` output.

use std::fmt;

use super::error::quote;
use super::parse::parse_decimal;
use super::{Attribute, LocalCapabilities, MediaDescription, SdpError};

/// RFC 4568 §9.1: a tag is 1 to 9 digits.
const MAX_CRYPTO_TAG_DIGITS: usize = 9;

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
/// value to every [`offer`](super::offer)/[`answer`](super::answer) of that call, so that repeated
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
    /// Whether no suite has a key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, suite: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(suite))
            .map(|(_, key)| key.as_str())
    }

    /// Our key for `suite` if it is fit for an `inline:` parameter.
    pub(super) fn usable_key(&self, suite: &str) -> Option<&str> {
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

/// The SDES-SRTP outcome: one crypto suite, the peer's key for what we
/// RECEIVE and ours for what we SEND. Key parameters are the text after
/// `a=crypto:<tag> <suite> `, e.g. `inline:<base64>` or
/// `inline:<base64>|2^31` (the peer's may carry a lifetime; never an MKI,
/// never several keys). `Debug` redacts both keys.
#[derive(Clone, PartialEq, Eq)]
pub struct NegotiatedSrtp {
    /// The crypto-suite name, spelt as in [`LocalCapabilities::srtp_suites`]
    /// (or as in our offer, after [`accept_answer`](super::accept_answer)).
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

/// The crypto line to answer an RTP/SAVP(F) m-line with: the first offered
/// line (RFC 4568 §7.1: the offerer's preference) we can accept and have a
/// key for.
pub(super) fn choose_crypto(
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
pub(super) fn answered_crypto(
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
pub(super) fn local_srtp_suites(caps: &LocalCapabilities) -> Vec<&str> {
    let mut suites: Vec<&str> = Vec::new();
    for suite in &caps.srtp_suites {
        if !suites.iter().any(|known| known.eq_ignore_ascii_case(suite)) {
            suites.push(suite);
        }
    }
    suites
}

pub(super) fn crypto_attribute(tag: u32, suite: &str, key: &str) -> Attribute {
    Attribute::new("crypto", Some(format!("{tag} {suite} inline:{key}")))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::sdp::tests::*;
    use crate::sdp::{
        accept_answer, answer, offer, Codec, NegotiatedMedia, SessionDescription,
        DEFAULT_SRTP_SUITES,
    };

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
}
