//! [`SdpError`], and the helpers that make peer text safe to quote in it
//! (`sanitize`, `quote`).
//!
//! Error texts must stay one line without double quotes or control
//! characters (they go into log lines and SIP Warning headers), and must
//! never carry SRTP key material.

use std::fmt;

/// Longest piece of peer text quoted in an error message.
const MAX_QUOTED_CHARS: usize = 40;

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
    /// UDP/TLS/RTP/SAVPF, or RTP/SAVP under [`SrtpPolicy::Refuse`](super::SrtpPolicy::Refuse)).
    UnsupportedTransport(String),
    /// Audio offered over RTP/SAVP(F), but no `a=crypto` line we can accept
    /// (unknown suites, MKIs, several keys, unsupported session parameters).
    NoAcceptableCrypto,
    /// Audio offered only over plain RTP while
    /// [`SrtpPolicy::Require`](super::SrtpPolicy::Require) is set.
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

/// Peer text made safe for a log line and a SIP Warning header: shortened,
/// with double quotes, backslashes and control characters replaced.
pub(super) fn sanitize(text: &str) -> String {
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
pub(super) fn quote(text: &str) -> String {
    format!("'{}'", sanitize(text))
}

#[cfg(test)]
mod tests {
    use crate::sdp::SessionDescription;

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
}
