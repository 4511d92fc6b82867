//! HTTP Digest authentication for requests we send (RFC 3261 §22, RFC 2617, RFC 8760 MD5):
//! answering a trunk's 401/407 challenge with our credentials.
//!
//! Owns: parsing a `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge and computing
//! the `Authorization` / `Proxy-Authorization` value for one request.
//! Must not: decide when to retry (the user agent does, once per challenge).

use md5::{Digest, Md5};

/// A Digest challenge's parameters that the answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// "auth" when the server offers qop=auth (auth-int is not supported).
    pub qop_auth: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    NotDigest,
    Missing(&'static str),
    /// An algorithm other than MD5 (SHA-256 challenges come with an MD5 one in practice).
    Algorithm(String),
    /// qop other than auth (auth-int needs the body hashed; no trunk asks for it alone).
    Qop(String),
}

impl std::fmt::Display for DigestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DigestError::NotDigest => write!(f, "not a Digest challenge"),
            DigestError::Missing(p) => write!(f, "challenge without {p}"),
            DigestError::Algorithm(a) => write!(f, "unsupported digest algorithm {a}"),
            DigestError::Qop(q) => write!(f, "unsupported qop {q}"),
        }
    }
}

impl Challenge {
    /// Parses `Digest realm="x", nonce="y", qop="auth,auth-int", opaque="z", algorithm=MD5`.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::NotDigest);
        }
        let params = parse_params(rest);
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if let Some(alg) = get("algorithm") {
            if !alg.eq_ignore_ascii_case("md5") {
                return Err(DigestError::Algorithm(alg));
            }
        }
        let qop_auth = match get("qop") {
            None => false,
            Some(q) => {
                if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(DigestError::Qop(q));
                }
            }
        };
        Ok(Challenge {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            qop_auth,
        })
    }

    /// The credentials line for `method` `uri`; `cnonce` is fresh per answer, nc is 1.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let ha1 = md5_hex(&format!("{username}:{}:{password}", self.realm));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let nc = "00000001";
        let response = if self.qop_auth {
            md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce)
        );
        if self.qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        out
    }
}

fn md5_hex(text: &str) -> String {
    let digest = Md5::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `name=value` pairs separated by commas; values may be quoted (with `\` escapes).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if name.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example_gives_its_response() {
        // RFC 2617 §3.5, with the method and URI of its example.
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert!(c.qop_auth);
        let line = c.answer(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
        );
        assert!(
            line.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{line}"
        );
        assert!(line.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    #[test]
    fn challenge_without_qop_uses_the_rfc_2069_form() {
        let c = Challenge::parse("Digest realm=\"sip.example\",nonce=\"abc\"").unwrap();
        assert!(!c.qop_auth);
        let line = c.answer("u", "p", "INVITE", "sip:100@sip.example", "x");
        let ha1 = md5_hex("u:sip.example:p");
        let ha2 = md5_hex("INVITE:sip:100@sip.example");
        let expected = md5_hex(&format!("{ha1}:abc:{ha2}"));
        assert!(line.contains(&expected));
        assert!(!line.contains("qop"));
    }

    #[test]
    fn unusable_challenges_are_errors() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256"),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(DigestError::Qop(_))
        ));
    }
}
