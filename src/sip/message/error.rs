//! [`ParseError`]: why a message or header failed to parse.
//!
//! Must not: let hostile input through to its `Display` text unfiltered; that text goes into a
//! 400 reason phrase, so control characters are replaced and details shortened.

use std::borrow::Cow;
use std::fmt;

/// Why a message or header failed to parse; the `Display` text is fit to use as a 400 reason
/// phrase ("Bad Request - Missing Call-ID").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not UTF-8 / not SIP at all / garbage start line.
    StartLine(String),
    /// SIP version other than SIP/2.0.
    Version(String),
    /// A header line without a colon or with an invalid name.
    HeaderSyntax(String),
    /// A mandatory header is absent (name).
    Missing(&'static str),
    /// A header is present but its value does not parse (name, detail).
    BadHeader(&'static str, String),
    /// Content-Length larger than the bytes present, or unparseable.
    ContentLength(String),
    /// CSeq method differs from the request method.
    CSeqMethodMismatch,
    BadUri(String),
    /// A well-formed URI of a scheme we do not serve (RFC 3261 §8.2.2.1: 416 when it is the
    /// Request-URI's).
    UnsupportedScheme(String),
}

/// Prints the part after "Bad Request - " ("Missing Call-ID"); the UA adds that prefix.
/// Control characters are replaced and details shortened, so the text can go on a status line
/// even when a detail quotes hostile input.
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, detail): (Cow<'_, str>, &str) = match self {
            ParseError::StartLine(d) => ("Malformed Start Line".into(), d),
            ParseError::Version(d) => ("Unsupported SIP Version".into(), d),
            ParseError::HeaderSyntax(d) => ("Malformed Header".into(), d),
            ParseError::Missing(name) => (format!("Missing {name}").into(), ""),
            ParseError::BadHeader(name, d) => (format!("Bad {name}").into(), d),
            ParseError::ContentLength(d) => ("Bad Content-Length".into(), d),
            ParseError::CSeqMethodMismatch => ("CSeq Method Mismatch".into(), ""),
            ParseError::BadUri(d) => ("Bad URI".into(), d),
            ParseError::UnsupportedScheme(d) => ("Unsupported URI Scheme".into(), d),
        };
        f.write_str(&what)?;
        if detail.is_empty() {
            return Ok(());
        }
        f.write_str(": ")?;
        const MAX_DETAIL_CHARS: usize = 100;
        for c in detail.chars().take(MAX_DETAIL_CHARS) {
            let c = if c.is_control() { '?' } else { c };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_display_is_a_safe_reason_phrase() {
        assert_eq!(
            format!("Bad Request - {}", ParseError::Missing("Call-ID")),
            "Bad Request - Missing Call-ID"
        );
        assert_eq!(
            ParseError::CSeqMethodMismatch.to_string(),
            "CSeq Method Mismatch"
        );
        let long = ParseError::BadHeader("Via", format!("x\r\ny{}", "z".repeat(500))).to_string();
        assert!(long.starts_with("Bad Via: x??yzz"));
        assert!(!long.contains(['\r', '\n']));
        assert!(long.len() < 150);
    }
}
