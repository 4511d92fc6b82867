//! Small lexical helpers shared by the parsers: RFC 3261 character classes, LWS trimming, the
//! short input [`excerpt`] quoted in errors, and a byte [`Cursor`].
//!
//! Must not: know about SIP messages, headers or URIs; only slice at ASCII delimiters (char
//! boundaries), so nothing here can panic.

/// True if `s` is a non-empty RFC 3261 `token` (method names, header names, parameter names).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// RFC 3261 §25.1 token characters.
pub(super) fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[usize::from(b)]
}

/// [`is_token_byte`] for every byte, built at compile time: a look-up instead of a search of
/// the nine marks for each byte of every name (~4,000 instructions a call's setup).
static TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        b += 1;
    }
    table
};

/// Unquoted display names are `*(token LWS)` (RFC 4475 baddn); non-ASCII is tolerated because
/// UAs send UTF-8 names unquoted.
pub(super) fn is_display_char(c: char) -> bool {
    !c.is_ascii() || c == ' ' || c == '\t' || is_token_byte(c as u8)
}

/// Characters of a domain name (with '_' tolerated, as seen in the wild).
pub(super) fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

fn is_lws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Trims SIP whitespace only (not every Unicode space, which may be part of a UTF-8 value).
pub(super) fn trim_lws(s: &str) -> &str {
    s.trim_matches(is_lws)
}

pub(super) fn trim_start_lws(s: &str) -> &str {
    s.trim_start_matches(is_lws)
}

/// First 40 characters of `s` for error details, so errors never copy a huge input.
pub(super) fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

/// Byte cursor over a `&str` for the LWS-tolerant grammars (Via, header params).
pub(super) struct Cursor<'a> {
    s: &'a str,
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(super) fn rest(&self) -> &'a str {
        // `pos` only ever stops before an ASCII byte or at the end (see `take_while`).
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(super) fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    pub(super) fn skip_lws(&mut self) {
        self.take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    }

    /// Consumes bytes while `pred` holds. `pred` must answer the same for every byte >= 0x80, so
    /// the cursor never stops inside a UTF-8 sequence.
    pub(super) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// At a '"': consumes a quoted string (backslash escapes honoured) and returns it with its
    /// quotes; None (nothing consumed) if it is unterminated.
    pub(super) fn take_quoted(&mut self) -> Option<&'a str> {
        let bytes = self.s.as_bytes();
        let start = self.pos;
        let mut i = start + 1;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    self.pos = i + 1;
                    return self.s.get(start..=i);
                }
                _ => i += 1,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" /
    /// "'" / "~"), and no other byte (no separator, control or non-ASCII byte).
    #[test]
    fn token_bytes_are_the_rfcs() {
        let marks = b"-.!%*_+`'~";
        for b in 0..=255u8 {
            let rfc = b.is_ascii_alphanumeric() || marks.contains(&b);
            assert_eq!(is_token_byte(b), rfc, "byte {b:#04x}");
        }
        assert!(is_token("INVITE") && is_token("x-Custom.Header!%*_+`'~"));
        assert!(!is_token("") && !is_token("a b") && !is_token("a;b") && !is_token("é"));
    }
}
