//! The header section: [`Header`] and [`Headers`] (lookups, mutators and the typed accessors),
//! the typed values [`Via`] and [`CSeq`], and header-name knowledge (compact forms, canonical
//! capitalization, which headers are lists).
//!
//! Must not: parse the message framing or start line (`parse` does) or decide what a missing or
//! bad header means for a transaction or dialog; accessors report a [`ParseError`] and the caller
//! decides.

use std::borrow::Cow;
use std::fmt;

use super::lex::{excerpt, is_host_byte, is_token, is_token_byte, trim_lws, Cursor};
use super::uri::{
    check_header_params, for_header, header_param_present, header_param_value, name_addr_tag,
    parse_header_params, parse_port, read_host, write_params, HostRef,
};
use super::{find_param, Host, Method, NameAddr, Param, ParseError};

/// One header line (after compact-form expansion and list splitting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name for known headers ("Via", "Call-ID", "CSeq", "WWW-Authenticate"...),
    /// as received for unknown ones. Compare with `eq_ignore_ascii_case`. A known name is a
    /// `&'static str` (no allocation per header of every message parsed or built).
    pub name: Cow<'static, str>,
    /// Value with surrounding whitespace trimmed and folded lines joined by one space.
    pub value: String,
}

/// Ordered header list. All lookups are case-insensitive on the (already expanded) name.
/// The mutators (`push`, `set`, `remove`, ...) also accept compact names and store canonical ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of that header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of that header, in message order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Appends one header (name canonicalized, value stored as given).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: header_name(name),
            value: value.into(),
        });
    }

    /// Inserts before all existing headers (used to add our Via on top).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: header_name(name),
                value: value.into(),
            },
        );
    }

    /// Replaces every header of that name with one value (appends if absent).
    /// The value takes the position of the first existing header of that name.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        let Some(first) = self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(name))
        else {
            self.push(name, value);
            return;
        };
        self.0[first] = Header {
            name: header_name(name),
            value: value.into(),
        };
        let mut index = 0;
        self.0.retain(|h| {
            let keep = index <= first || !h.name.eq_ignore_ascii_case(name);
            index += 1;
            keep
        });
    }

    /// Removes every header of that name.
    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// All Via values, top first.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.get_all("Via").map(Via::parse).collect()
    }

    /// The first (topmost) Via; Missing if there is none.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        Via::parse(self.get("Via").ok_or(ParseError::Missing("Via"))?)
    }

    /// [`Headers::top_via`] read in place, for what needs only its checks, branch or sent-by.
    pub fn top_via_ref(&self) -> Result<ViaRef<'_>, ParseError> {
        ViaRef::read(self.get("Via").ok_or(ParseError::Missing("Via"))?)
    }

    /// The From value; Missing if absent, BadHeader("From", ..) if it does not parse.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("From")
    }

    /// The To value; Missing if absent, BadHeader("To", ..) if it does not parse.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("To")
    }

    /// The To header's tag, read without parsing its URI: `to()?.tag()` for a To that parses
    /// (a request that reached the UA was checked by `check_mandatory`).
    pub fn to_tag(&self) -> Option<&str> {
        self.get("To").and_then(name_addr_tag)
    }

    /// The From header's tag, like [`Headers::to_tag`].
    pub fn from_tag(&self) -> Option<&str> {
        self.get("From").and_then(name_addr_tag)
    }

    /// Gives a To without a tag the tag `tag`, appended to the value as it is (§8.2.6.2: the
    /// response's To is the request's with a tag added); a To that has one gets it replaced.
    /// No To, or one that does not parse while it has a tag: unchanged, false.
    pub fn set_to_tag(&mut self, tag: &str) -> bool {
        let Some(header) = self.0.iter_mut().find(|h| h.name == "To") else {
            return false;
        };
        if name_addr_tag(&header.value).is_none() {
            header.value.push_str(";tag=");
            header.value.push_str(tag);
            return true;
        }
        let Ok(mut to) = NameAddr::parse(&header.value) else {
            return false;
        };
        to.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
        to.params.push(Param {
            name: "tag".into(),
            value: Some(tag.to_string()),
        });
        header.value = to.to_string();
        true
    }

    /// The Call-ID; Missing if absent, BadHeader if empty.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let value = self.get("Call-ID").ok_or(ParseError::Missing("Call-ID"))?;
        if value.is_empty() {
            return Err(ParseError::BadHeader("Call-ID", "empty".to_string()));
        }
        Ok(value)
    }

    /// The CSeq; Missing if absent, BadHeader if it does not parse.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.get("CSeq").ok_or(ParseError::Missing("CSeq"))?)
    }

    /// All Contact values. A `*` (REGISTER "remove all") is not an address and gives BadHeader;
    /// check [`Headers::contact_is_wildcard`] first where `*` is legal.
    pub fn contacts(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("Contact")
    }

    /// True if the message carries `Contact: *`.
    pub fn contact_is_wildcard(&self) -> bool {
        self.get_all("Contact").any(|v| v == "*")
    }

    /// All Record-Route values, in message order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("Record-Route")
    }

    /// All Route values, in message order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("Route")
    }

    /// None if absent; BadHeader unless it is a number in 0..=255 (RFC 3261 §20.22).
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        let Some(value) = self.get("Max-Forwards") else {
            return Ok(None);
        };
        let parsed = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            value.parse::<u32>().ok().filter(|&n| n <= 255)
        } else {
            None
        };
        match parsed {
            Some(n) => Ok(Some(n)),
            None => Err(ParseError::BadHeader(
                "Max-Forwards",
                format!("not a number in 0..=255: {}", excerpt(value)),
            )),
        }
    }

    /// The Content-Type value as received.
    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
    }

    /// Checks a From or To as [`Headers::from`] and [`Headers::to`] parse it, with the same
    /// errors, without building the address.
    pub(super) fn check_name_addr(&self, name: &'static str) -> Result<(), ParseError> {
        let value = self.get(name).ok_or(ParseError::Missing(name))?;
        NameAddr::check(value).map_err(|e| for_header(e, name))
    }

    fn name_addr(&self, name: &'static str) -> Result<NameAddr, ParseError> {
        let value = self.get(name).ok_or(ParseError::Missing(name))?;
        NameAddr::parse(value).map_err(|e| for_header(e, name))
    }

    fn name_addrs(&self, name: &'static str) -> Result<Vec<NameAddr>, ParseError> {
        self.get_all(name)
            .map(|v| NameAddr::parse(v).map_err(|e| for_header(e, name)))
            .collect()
    }

    /// BadHeader if a header that must appear at most once appears several times.
    pub(super) fn at_most_once(&self, name: &'static str) -> Result<(), ParseError> {
        if self.get_all(name).nth(1).is_some() {
            return Err(ParseError::BadHeader(name, "multiple values".to_string()));
        }
        Ok(())
    }
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-cased transport: "UDP", "TCP", "TLS", "WS", ...
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

/// A Via read and checked in place: everything [`Via::parse`] checks (the parse is this
/// reader followed by the copies), for the checks of every request and its transaction key,
/// which need no copy (a Via parse was ~2,000 instructions, seven a call's setup).
pub struct ViaRef<'a> {
    transport: &'a str,
    host: HostRef<'a>,
    port: Option<u16>,
    /// `;name[=value]...` or "", checked.
    params: &'a str,
}

impl<'a> ViaRef<'a> {
    /// Everything [`ViaRef::read`] reads; the parameters are left for the caller to check
    /// (or to parse, which checks them: [`Via::parse`]).
    fn read_unchecked_params(s: &'a str) -> Result<ViaRef<'a>, ParseError> {
        let bad = |detail: String| ParseError::BadHeader("Via", detail);
        let mut c = Cursor::new(s);
        c.skip_lws();
        let protocol = c.take_while(is_token_byte);
        c.skip_lws();
        if !c.eat(b'/') {
            return Err(bad(format!("bad sent-protocol in {}", excerpt(s))));
        }
        c.skip_lws();
        let version = c.take_while(is_token_byte);
        c.skip_lws();
        if !c.eat(b'/') {
            return Err(bad(format!("bad sent-protocol in {}", excerpt(s))));
        }
        c.skip_lws();
        let transport = c.take_while(is_token_byte);
        if !protocol.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return Err(bad(format!("bad sent-protocol in {}", excerpt(s))));
        }
        c.skip_lws();
        let host_text = if c.peek() == Some(b'[') {
            let start = c.pos;
            c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return Err(bad("unterminated IPv6 reference".to_string()));
            }
            &s[start..c.pos]
        } else {
            c.take_while(is_host_byte)
        };
        let host = read_host(host_text).map_err(bad)?;
        c.skip_lws();
        let port = if c.eat(b':') {
            c.skip_lws();
            Some(parse_port(c.take_while(|b| b.is_ascii_digit())).map_err(bad)?)
        } else {
            None
        };
        Ok(ViaRef {
            transport,
            host,
            port,
            params: c.rest(),
        })
    }

    /// Reads one via-parm: `SIP/2.0/UDP host[:port];params`, with LWS allowed around `/`,
    /// `:`, `;` and `=` (RFC 3261 §25.1 SLASH/COLON/SEMI/EQUAL).
    pub fn read(s: &'a str) -> Result<ViaRef<'a>, ParseError> {
        let via = ViaRef::read_unchecked_params(s)?;
        check_header_params(via.params).map_err(|detail| ParseError::BadHeader("Via", detail))?;
        Ok(via)
    }

    /// The owned [`Via`] (its parameters parsed, which checks them).
    fn to_owned(&self) -> Result<Via, ParseError> {
        Ok(Via {
            transport: self.transport.to_ascii_uppercase(),
            host: self.host.to_owned(),
            port: self.port,
            params: parse_header_params(self.params)
                .map_err(|detail| ParseError::BadHeader("Via", detail))?,
        })
    }

    /// The `branch` parameter, if present with a value.
    pub fn branch(&self) -> Option<&'a str> {
        header_param_value(self.params, "branch")
    }

    /// The sent-by host when it is an address, not a name.
    pub fn host_ip(&self) -> Option<std::net::IpAddr> {
        match self.host {
            HostRef::Domain(_) => None,
            HostRef::V4(addr) => Some(addr.into()),
            HostRef::V6(addr) => Some(addr.into()),
        }
    }

    /// Whether the parameter `name` (any case) is present, with a value or without.
    pub fn has_param(&self, name: &str) -> bool {
        header_param_present(self.params, name)
    }

    /// `host[:port]`, host lower-cased (host names compare case-insensitively): the sent-by
    /// of a server transaction's key (§17.2.3).
    pub fn sent_by(&self) -> String {
        // One allocation: a transaction key is made for every request.
        let mut sent_by = String::with_capacity(48);
        match self.host {
            HostRef::Domain(name) => {
                sent_by.push_str(name);
                sent_by.make_ascii_lowercase();
            }
            HostRef::V4(addr) => sent_by.push_str(crate::text::Ipv4Text::new(addr).as_str()),
            HostRef::V6(addr) => {
                use std::fmt::Write as _;
                let _ = write!(sent_by, "[{addr}]");
            }
        }
        if let Some(port) = self.port {
            sent_by.push(':');
            crate::text::push_port(&mut sent_by, port);
        }
        sent_by
    }
}

impl Via {
    /// Parses one via-parm ([`ViaRef::read`], then the copies; its parameters are read once,
    /// by the parse that copies them).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        ViaRef::read_unchecked_params(s)?.to_owned()
    }

    /// The `branch` parameter, if present with a value.
    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    /// Sets or replaces a parameter (used for received= and rport=).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(param) => param.value = value,
            None => self.params.push(Param {
                name: name.to_string().into(),
                value,
            }),
        }
    }
}

/// "SIP/2.0/UDP host:port;branch=...;..."
impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

/// CSeq value: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses `<digits> LWS <method>`; the number must be below 2^31 (RFC 3261 §8.1.1.5).
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let bad = |detail: String| ParseError::BadHeader("CSeq", detail);
        let s = trim_lws(s);
        let Some(split) = s.find([' ', '\t', '\r', '\n']) else {
            return Err(bad(format!("expected number and method in {}", excerpt(s))));
        };
        let (number, method) = (&s[..split], trim_lws(&s[split..]));
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("bad sequence number {}", excerpt(number))));
        }
        let seq = match number.parse::<u32>() {
            Ok(seq) if seq < 1 << 31 => seq,
            _ => {
                return Err(bad(format!(
                    "sequence number too large {}",
                    excerpt(number)
                )))
            }
        };
        if !is_token(method) {
            return Err(bad(format!("bad method {}", excerpt(method))));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

/// "1 INVITE"
impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// (single-letter compact form, full name), RFC 3261 §7.3.3 and the IANA header registry.
const COMPACT_FORMS: [(u8, &str); 20] = [
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Canonical spelling of the header names we know; others are kept as received.
const KNOWN_HEADERS: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Resource-Priority",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Resource-Priority",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Headers whose comma-separated values are split into one `Header` each. Headers whose values
/// may legally contain commas (From, To, Date, the auth headers, Warning, Reason...) are not.
const LIST_HEADERS: &[&str] = &[
    "Via",
    "Contact",
    "Route",
    "Record-Route",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Allow-Events",
    "Content-Encoding",
    "Path",
];

/// Expands compact forms and normalizes the capitalization of known names.
pub(super) fn canonical_name(name: &str) -> &str {
    known_name(name).unwrap_or(name)
}

/// A known header: its canonical spelling, and whether its values are a comma-separated list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known {
    pub(super) name: &'static str,
    pub(super) list: bool,
}

/// [`KNOWN_HEADERS`] grouped by length: a name is compared only with the known names of its
/// own length (a few), not scanned against all sixty (a twentieth of a call's setup was that
/// scan: ~330 instructions a header, ~50 headers a call).
static KNOWN_BY_LENGTH: std::sync::LazyLock<Vec<Vec<Known>>> = std::sync::LazyLock::new(|| {
    let longest = KNOWN_HEADERS
        .iter()
        .map(|name| name.len())
        .max()
        .unwrap_or(0);
    let mut by_length = vec![Vec::new(); longest + 1];
    for &name in KNOWN_HEADERS {
        let list = LIST_HEADERS.contains(&name);
        by_length[name.len()].push(Known { name, list });
    }
    by_length
});

/// The known header of a name or compact form, in any case.
pub(super) fn known_header(name: &str) -> Option<Known> {
    if let [letter] = name.as_bytes() {
        let letter = letter.to_ascii_lowercase();
        let full = COMPACT_FORMS
            .iter()
            .find(|(compact, _)| *compact == letter)
            .map(|(_, full)| *full)?;
        return known_header(full);
    }
    KNOWN_BY_LENGTH
        .get(name.len())?
        .iter()
        .find(|known| known.name.eq_ignore_ascii_case(name))
        .copied()
}

/// The canonical spelling of a known header name or compact form.
fn known_name(name: &str) -> Option<&'static str> {
    known_header(name).map(|known| known.name)
}

/// A header's stored name: the canonical `&'static str` of a known one, else a copy.
pub(super) fn header_name(name: &str) -> Cow<'static, str> {
    known_name(name).map_or_else(|| Cow::Owned(name.to_string()), Cow::Borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_to_tag_is_appended_as_received_or_replaced() {
        let mut headers = Headers::default();
        assert!(!headers.set_to_tag("x"), "no To");
        headers.push("To", "Bob <sip:bob@example.com;transport=udp>");
        assert!(headers.set_to_tag("t1"));
        assert_eq!(
            headers.get("To"),
            Some("Bob <sip:bob@example.com;transport=udp>;tag=t1")
        );
        assert_eq!(headers.to_tag(), Some("t1"));
        assert_eq!(headers.to().expect("parses").tag(), Some("t1"));
        // One that has a tag gets it replaced.
        assert!(headers.set_to_tag("t2"));
        assert_eq!(headers.to_tag(), Some("t2"));
        assert_eq!(headers.to().expect("parses").params.len(), 1);
        // The addr-spec form: the tag is a header parameter after the URI.
        let mut headers = Headers::default();
        headers.push("t", "sip:bob@example.com");
        assert!(headers.set_to_tag("t3"));
        assert_eq!(headers.get("To"), Some("sip:bob@example.com;tag=t3"));
        assert_eq!(headers.to().expect("parses").uri.params, []);
        assert_eq!(headers.from_tag(), None);
    }

    #[test]
    fn known_names_are_found_in_any_case() {
        for known in KNOWN_HEADERS {
            assert_eq!(known_name(&known.to_ascii_uppercase()), Some(*known));
            assert_eq!(known_name(&known.to_ascii_lowercase()), Some(*known));
        }
        for (compact, full) in COMPACT_FORMS {
            assert_eq!(known_name(&char::from(compact).to_string()), Some(full));
            assert!(KNOWN_HEADERS.contains(&full), "{full} is a known name");
        }
        for unknown in ["x-custom", "Vias", "Vi", "", "q", "Content-Lengths"] {
            assert_eq!(known_name(unknown), None, "{unknown}");
        }
        assert_eq!(known_name("V"), Some("Via"));
        // Exactly the list headers are split at commas; all of them are known names.
        let lists: Vec<&str> = KNOWN_HEADERS
            .iter()
            .filter_map(|name| known_header(name).filter(|known| known.list))
            .map(|known| known.name)
            .collect();
        let mut expected = LIST_HEADERS.to_vec();
        expected.sort_unstable();
        let mut found = lists.clone();
        found.sort_unstable();
        assert_eq!(found, expected);
        assert!(
            known_header("m").is_some_and(|known| known.list),
            "Contact's compact form"
        );
        assert!(known_header("From").is_some_and(|known| !known.list));
    }

    /// Via values the parse refuses.
    const BAD_VIAS: [&str; 8] = [
        "SIP/2.0 UDP h",
        "SIP/3.0/UDP h",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h;;",
        "SIP/2.0/UDP h;branch=",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/UDP h junk",
    ];

    #[test]
    fn the_via_reader_agrees_with_the_parse() {
        let forms = [
            "SIP/2.0/UDP host.Example.COM:5060;branch=z9hG4bK1;rport",
            "SIP/2.0/udp 192.0.2.1;BRANCH=z9hG4bKx",
            " SIP / 2.0 / TCP [2001:DB8::1] : 5061 ; received=192.0.2.9 ; branch = z9hG4bKy",
            "SIP/2.0/TLS h;branch",
            "SIP/2.0/UDP h;rport;branch=a;branch=b",
            "SIP/2.0/UDP h",
            "SIP/2.0/WS h;branch=\"quoted;value\"",
        ];
        for form in forms.into_iter().chain(BAD_VIAS) {
            let read = ViaRef::read(form);
            let parsed = Via::parse(form);
            match (&read, &parsed) {
                (Ok(via_ref), Ok(via)) => {
                    assert_eq!(via_ref.to_owned().as_ref(), Ok(via), "{form}");
                    assert_eq!(via_ref.branch(), via.branch(), "{form}");
                    let host_port = match via.port {
                        Some(port) => format!("{}:{port}", via.host),
                        None => via.host.to_string(),
                    };
                    assert_eq!(via_ref.sent_by(), host_port.to_ascii_lowercase(), "{form}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{form}"),
                _ => panic!("{form}: the reader and the parse disagree"),
            }
        }
        let via = ViaRef::read("SIP/2.0/UDP Host.Example.COM:5060;branch=z9hG4bK1").expect("via");
        assert_eq!(via.sent_by(), "host.example.com:5060");
        assert_eq!(via.branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn via_set_param_and_display() {
        let mut via =
            Via::parse("SIP/2.0/udp Host.Example.com:5060;rport;branch=z9hG4bK1").unwrap();
        assert_eq!(via.transport, "UDP");
        via.set_param("rport", Some("5070".into()));
        via.set_param("received", Some("192.0.2.1".into()));
        assert_eq!(
            via.to_string(),
            "SIP/2.0/UDP host.example.com:5060;rport=5070;branch=z9hG4bK1;received=192.0.2.1"
        );
        assert_eq!(Via::parse(&via.to_string()).unwrap(), via);
        for bad in BAD_VIAS {
            assert!(
                matches!(Via::parse(bad), Err(ParseError::BadHeader("Via", _))),
                "{bad}"
            );
        }
    }

    #[test]
    fn cseq_limits() {
        assert_eq!(
            CSeq::parse(" 0009 \t INVITE ").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse("2147483647 ACK").unwrap().seq, 2_147_483_647);
        assert_eq!(CSeq::parse("1 INVITE").unwrap().to_string(), "1 INVITE");
        for bad in [
            "2147483648 ACK",
            "4294967296 ACK",
            "36893488147419103232 REGISTER",
            "-1 ACK",
            "1",
            "ACK 1",
            "1 IN(VITE",
            "",
        ] {
            assert!(
                matches!(CSeq::parse(bad), Err(ParseError::BadHeader("CSeq", _))),
                "{bad}"
            );
        }
    }

    #[test]
    fn known_header_names_are_not_copied() {
        let message = super::super::parse::parse(
            b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
              f: <sip:x@y>;tag=1\r\nt: <sip:a@b>\r\ni: c1\r\nCSeq: 1 OPTIONS\r\n\
              X-Custom: 1\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("parse");
        let mut headers = message.headers().clone();
        headers.push("max-forwards", "70");
        headers.set("x-other", "2");
        for header in &headers.0 {
            let known = !header.name.starts_with("X-") && !header.name.starts_with("x-");
            assert_eq!(
                matches!(header.name, Cow::Borrowed(_)),
                known,
                "{}",
                header.name
            );
        }
        assert_eq!(headers.get("Call-ID"), Some("c1"));
        assert!(headers.0.iter().any(|h| h.name == "Via"));
    }

    #[test]
    fn headers_mutators() {
        let mut h = Headers::default();
        h.push("v", "SIP/2.0/UDP b;branch=z9hG4bK2");
        h.push("Foo", "1");
        h.push("foo", "2");
        h.push_front("Via", "SIP/2.0/UDP a;branch=z9hG4bK1");
        assert_eq!(h.0[1].name, "Via");
        assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK1"));
        h.set("FOO", "3");
        assert_eq!(h.get_all("foo").collect::<Vec<_>>(), ["3"]);
        assert_eq!(h.0.len(), 3);
        h.set("call-id", "x");
        assert_eq!(h.0[3].name, "Call-ID");
        h.remove("via");
        assert!(h.get("Via").is_none());
        assert_eq!(h.top_via(), Err(ParseError::Missing("Via")));
        assert_eq!(h.max_forwards(), Ok(None));
        h.push("Contact", "*");
        assert!(h.contact_is_wildcard());
        assert!(h.contacts().is_err());
    }
}
