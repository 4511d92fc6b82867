//! SIP message model, parser and printer (RFC 3261 §7, §19, §20, §25; RFC 4475 torture cases).
//!
//! Owns: turning bytes from a transport into typed `Request`/`Response` values and back.
//! Must not: know about transactions, dialogs, sockets or the clock.
//!
//! Parsing policy: the start line and header *syntax* are checked by [`parse`]; typed header values
//! (Via, From, CSeq, ...) are parsed on demand by the accessors, so a message with an odd header
//! that nobody asks about still gets through. Compact header names are expanded to their full
//! names at parse time and list-valued headers (Via, Contact, Route, ...) that carry several
//! comma-separated values on one line are split into one `Header` each, so inner code only ever
//! sees one value per `Header`. Unknown methods parse as `Method::Extension` (so the UA can answer
//! 501), never as an error.
//!
//! Robustness: everything here runs on bytes straight off the network, so no input may make it
//! panic. Slices are only taken at ASCII delimiters (always char boundaries), sizes use checked
//! arithmetic, and error details quote at most a short excerpt of the input.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Largest header section `frame` waits for before declaring the stream broken.
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// Largest body `frame` accepts on a stream; SIP bodies are small, and a peer announcing more is
/// either broken or trying to make us buffer without bound.
pub const MAX_STREAM_BODY: usize = 4 * 1024 * 1024;

/// A SIP request method. Unknown tokens are kept as `Extension` (RFC 3261 §7.1 allows any token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Refer,
    Notify,
    Subscribe,
    Prack,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    /// Case-sensitive per RFC 3261 §7.1 ("INVITE"); anything else that is a valid token is Extension.
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        }
    }

    /// The method token as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Host part of a URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Domain(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// Domain as-is, V4 dotted, V6 in brackets "[2001:db8::1]".
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(name) => f.write_str(name),
            Host::V4(addr) => write!(f, "{addr}"),
            Host::V6(addr) => write!(f, "[{addr}]"),
        }
    }
}

/// `name` or `name=value` parameter (URI params, header params). Names compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Finds a parameter by case-insensitive name: None = absent, Some(None) = present without value.
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref())
}

/// True if `s` is a non-empty RFC 3261 `token` (method names, header names, parameter names).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// sip:, sips: or tel: URI. For tel: `user` holds the number and `host` is Domain("").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// "sip", "sips", "tel" (lower-cased)
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// Raw `?hdr=val&...` part without the '?', if present.
    pub headers: Option<String>,
}

impl Uri {
    /// Parses a sip:, sips: or tel: URI (no surrounding whitespace or `<>`). Escapes in the user
    /// part are kept as received. Any other scheme is `BadUri` (the UAS answers 416).
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        // Whitespace, controls, quotes and angle brackets never occur in a URI; rejecting them here
        // also catches `<sip:...>` as a Request-URI and "sip:a@b ;lr" (RFC 4475 ltgtruri, lwsruri).
        if let Some(bad) = s
            .chars()
            .find(|c| c.is_control() || matches!(c, ' ' | '<' | '>' | '"'))
        {
            return Err(ParseError::BadUri(format!(
                "invalid character {bad:?} in {}",
                excerpt(s)
            )));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(ParseError::BadUri(format!("no scheme in {}", excerpt(s))));
        };
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "sip" | "sips" => parse_sip_uri(scheme, rest),
            "tel" => parse_tel_uri(scheme, rest),
            _ => Err(ParseError::BadUri(format!(
                "unsupported URI scheme {}",
                excerpt(&scheme)
            ))),
        }
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

/// Prints back a valid URI (user part escapes kept as received).
impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if self.scheme == "tel" {
            f.write_str(self.user.as_deref().unwrap_or(""))?;
        } else {
            if let Some(user) = &self.user {
                f.write_str(user)?;
                if let Some(password) = &self.password {
                    write!(f, ":{password}")?;
                }
                f.write_str("@")?;
            }
            write!(f, "{}", self.host)?;
            if let Some(port) = self.port {
                write!(f, ":{port}")?;
            }
        }
        write_params(f, &self.params)?;
        if let Some(headers) = &self.headers {
            write!(f, "?{headers}")?;
        }
        Ok(())
    }
}

/// From, To, Contact, Route, Record-Route, Refer-To value: `"Display" <uri>;params` or `uri;params`.
/// For the addr-spec form without <>, RFC 3261 §20: params after the URI belong to the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Vec<Param>,
}

impl NameAddr {
    /// Parses one name-addr or addr-spec with its header parameters. A quoted display name is
    /// stored unescaped (`"a \"b\""` → `a "b"`); an unquoted one is kept as written.
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = trim_lws(s);
        if s.is_empty() {
            return Err(bad_name_addr("empty value".to_string()));
        }
        if s.starts_with('"') {
            let Some((display, rest)) = unquote_prefix(s) else {
                return Err(bad_name_addr(
                    "unterminated quoted display name".to_string(),
                ));
            };
            let rest = trim_start_lws(rest);
            if !rest.starts_with('<') {
                return Err(bad_name_addr("expected '<' after display name".to_string()));
            }
            return parse_angle_addr(Some(display), rest);
        }
        // An unquoted display name is tokens and LWS only, so the first of '<', ';' or '"' tells
        // the name-addr form (`Bob <sip:b@h>`) from the addr-spec form (`sip:b@h;tag=x`).
        match s.find(['<', ';', '"']) {
            Some(lt) if s[lt..].starts_with('<') => {
                let display = trim_lws(&s[..lt]);
                if let Some(bad) = display.chars().find(|&c| !is_display_char(c)) {
                    return Err(bad_name_addr(format!(
                        "invalid character {bad:?} in unquoted display name"
                    )));
                }
                let display = (!display.is_empty()).then(|| display.to_string());
                parse_angle_addr(display, &s[lt..])
            }
            _ => parse_addr_spec(s),
        }
    }

    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }
}

/// Always prints the name-addr form with <> (`"Alice" <sip:a@h>;tag=1`).
impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = &self.display {
            f.write_str("\"")?;
            for c in display.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
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

impl Via {
    /// Parses one via-parm: `SIP/2.0/UDP host[:port];params`, with LWS allowed around `/`, `:`,
    /// `;` and `=` (RFC 3261 §25.1 SLASH/COLON/SEMI/EQUAL).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
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
        let host = parse_host(host_text).map_err(bad)?;
        c.skip_lws();
        let port = if c.eat(b':') {
            c.skip_lws();
            Some(parse_port(c.take_while(|b| b.is_ascii_digit())).map_err(bad)?)
        } else {
            None
        };
        let params = parse_header_params(c.rest()).map_err(bad)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

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
                name: name.to_string(),
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

/// One header line (after compact-form expansion and list splitting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name for known headers ("Via", "Call-ID", "CSeq", "WWW-Authenticate"...),
    /// as received for unknown ones. Compare with `eq_ignore_ascii_case`.
    pub name: String,
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

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Appends one header (name canonicalized, value stored as given).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name).to_string(),
            value: value.into(),
        });
    }

    /// Inserts before all existing headers (used to add our Via on top).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: canonical_name(name).to_string(),
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
            name: name.to_string(),
            value: value.into(),
        };
        let mut index = 0;
        self.0.retain(|h| {
            let keep = index <= first || !h.name.eq_ignore_ascii_case(name);
            index += 1;
            keep
        });
    }

    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// All Via values, top first.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.get_all("Via").map(Via::parse).collect()
    }

    pub fn top_via(&self) -> Result<Via, ParseError> {
        Via::parse(self.get("Via").ok_or(ParseError::Missing("Via"))?)
    }

    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("From")
    }

    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("To")
    }

    pub fn call_id(&self) -> Result<&str, ParseError> {
        let value = self.get("Call-ID").ok_or(ParseError::Missing("Call-ID"))?;
        if value.is_empty() {
            return Err(ParseError::BadHeader("Call-ID", "empty".to_string()));
        }
        Ok(value)
    }

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

    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs("Record-Route")
    }

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

    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
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
    fn at_most_once(&self, name: &'static str) -> Result<(), ParseError> {
        if self.get_all(name).nth(1).is_some() {
            return Err(ParseError::BadHeader(name, "multiple values".to_string()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl Request {
    /// Checks what RFC 3261 §8.1.1 makes mandatory and what a UAS needs to answer at all:
    /// Via (top one parseable, with branch), From, To, Call-ID, CSeq (whose method equals the
    /// request method), Max-Forwards is optional. Returns the first problem found.
    /// From, To, Call-ID and CSeq must appear once (RFC 4475 multi01); a Max-Forwards that is
    /// present must be a number.
    pub fn check_mandatory(&self) -> Result<(), ParseError> {
        let h = &self.headers;
        if h.top_via()?.branch().is_none() {
            return Err(ParseError::BadHeader(
                "Via",
                "missing branch parameter".to_string(),
            ));
        }
        h.at_most_once("From")?;
        h.from()?;
        h.at_most_once("To")?;
        h.to()?;
        h.at_most_once("Call-ID")?;
        h.call_id()?;
        h.at_most_once("CSeq")?;
        if h.cseq()?.method != self.method {
            return Err(ParseError::CSeqMethodMismatch);
        }
        h.max_forwards()?;
        Ok(())
    }

    /// Serializes with CRLF line ends; Content-Length is always written, computed from `body`
    /// (any stored Content-Length header is ignored).
    pub fn to_bytes(&self) -> Vec<u8> {
        let start_line = format!("{} {} SIP/2.0", self.method, self.uri);
        write_message(&start_line, &self.headers, &self.body)
    }
}

impl Response {
    /// RFC 3261 §8.2.6.2: a response to `req` copying all Via (in order), From, To, Call-ID and
    /// CSeq; no body. The caller adds a To tag when needed.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut headers = Headers(Vec::with_capacity(8));
        for via in req.headers.get_all("Via") {
            headers.push("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(value) = req.headers.get(name) {
                headers.push(name, value);
            }
        }
        Response {
            status,
            reason: reason.to_string(),
            headers,
            body: Vec::new(),
        }
    }

    /// Serializes like [`Request::to_bytes`]; an empty reason still gets its separating SP.
    pub fn to_bytes(&self) -> Vec<u8> {
        let start_line = format!("SIP/2.0 {} {}", self.status, self.reason);
        write_message(&start_line, &self.headers, &self.body)
    }
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

/// Parses one complete datagram / framed message. Accepts CRLF and bare-LF line ends, header
/// folding, `Name : value`, compact names, any-case names, several values per line, IPv6 literals.
/// The body is `Content-Length` bytes (error if fewer present; extra bytes ignored on UDP); if
/// Content-Length is absent the rest of the buffer is the body.
/// Leading CRLFs (stream keep-alives, RFC 3261 §7.5) are skipped.
pub fn parse(buf: &[u8]) -> Result<SipMessage, ParseError> {
    let start = leading_crlf_len(buf);
    // Without an empty line the whole buffer is the header section and the body is empty.
    let (head_end, body_start) = find_head_end(buf, start).unwrap_or((buf.len(), buf.len()));
    let head = std::str::from_utf8(&buf[start..head_end])
        .map_err(|_| ParseError::StartLine("message head is not valid UTF-8".to_string()))?;
    let (start_line, header_text) = match head.find('\n') {
        Some(nl) => (&head[..nl], &head[nl + 1..]),
        None => (head, ""),
    };
    let start_line = parse_start_line(start_line.strip_suffix('\r').unwrap_or(start_line))?;
    let headers = parse_headers(header_text)?;

    let available = &buf[body_start..];
    let body = match content_length(headers.get_all("Content-Length"))? {
        Some(len) if len > available.len() => {
            return Err(ParseError::ContentLength(format!(
                "{len} announced, {} present",
                available.len()
            )))
        }
        Some(len) => available[..len].to_vec(),
        None => available.to_vec(),
    };

    Ok(match start_line {
        StartLine::Request(method, uri) => SipMessage::Request(Request {
            method,
            uri,
            headers,
            body,
        }),
        StartLine::Response(status, reason) => SipMessage::Response(Response {
            status,
            reason: reason.to_string(),
            headers,
            body,
        }),
    })
}

/// Result of looking for one message at the front of a TCP stream buffer (RFC 3261 §18.3).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message occupies `buf[..len]` (leading CRLF keep-alives are included in `len`).
    Complete(usize),
    /// Need more bytes.
    Incomplete,
    /// Only CRLF keep-alive bytes so far: consume `len` bytes.
    KeepAlive(usize),
    /// Can never become a valid message (e.g. no/invalid Content-Length on a stream, headers
    /// too large > 64 KiB).
    Invalid(ParseError),
}

/// Finds the first message in a stream buffer. Only the framing is checked (header section end
/// and Content-Length); the message itself is checked by [`parse`] on `buf[..len]`.
/// A body larger than [`MAX_STREAM_BODY`] is `Invalid`.
pub fn frame(buf: &[u8]) -> Frame {
    let start = leading_crlf_len(buf);
    if start == buf.len() {
        return if start == 0 {
            Frame::Incomplete
        } else {
            Frame::KeepAlive(start)
        };
    }
    let too_large = || Frame::Invalid(ParseError::HeaderSyntax("header section too large".into()));
    let Some((head_end, body_start)) = find_head_end(buf, start) else {
        return if buf.len() - start > MAX_HEAD_LEN {
            too_large()
        } else {
            Frame::Incomplete
        };
    };
    if head_end - start > MAX_HEAD_LEN {
        return too_large();
    }
    let Ok(head) = std::str::from_utf8(&buf[start..head_end]) else {
        return Frame::Invalid(ParseError::StartLine(
            "message head is not valid UTF-8".to_string(),
        ));
    };
    // Skip the start line: it cannot carry a Content-Length and cannot be folded.
    let header_text = head.find('\n').map_or("", |nl| &head[nl + 1..]);
    let lengths = LogicalLines::new(header_text).filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = trim_lws(name);
        let is_length =
            name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l");
        is_length.then_some(value)
    });
    let body_len = match content_length(lengths) {
        Ok(Some(len)) => len,
        Ok(None) => return Frame::Invalid(ParseError::Missing("Content-Length")),
        Err(e) => return Frame::Invalid(e),
    };
    if body_len > MAX_STREAM_BODY {
        return Frame::Invalid(ParseError::ContentLength(format!(
            "body of {body_len} bytes is too large"
        )));
    }
    match body_start.checked_add(body_len) {
        Some(total) if total <= buf.len() => Frame::Complete(total),
        _ => Frame::Incomplete,
    }
}

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
}

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
        };
        write!(f, "Bad Request - {what}")?;
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

// ---------------------------------------------------------------------------------------------
// Start line and header section
// ---------------------------------------------------------------------------------------------

enum StartLine<'a> {
    Request(Method, Uri),
    Response(u16, &'a str),
}

/// `Method SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP Reason`. Separators are exactly
/// one SP (RFC 4475 lwsstart, trws are invalid).
fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    let bad = || ParseError::StartLine(excerpt(line));
    let (first, rest) = line.split_once(' ').ok_or_else(bad)?;
    if first.len() >= 4 && first.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/") {
        check_version(first)?;
        let (status, reason) = parse_status(rest).ok_or_else(bad)?;
        return Ok(StartLine::Response(status, reason));
    }
    if !is_token(first) {
        return Err(bad());
    }
    let (uri, version) = rest.split_once(' ').ok_or_else(bad)?;
    if uri.is_empty() || version.contains([' ', '\t']) {
        return Err(bad());
    }
    check_version(version)?;
    let uri = Uri::parse(uri)?;
    Ok(StartLine::Request(Method::from_token(first), uri))
}

/// `3DIGIT [SP Reason-Phrase]` after the version; the reason may be empty, with or without its
/// separating SP (RFC 4475 noreason), and may be UTF-8 (unreason).
fn parse_status(rest: &str) -> Option<(u16, &str)> {
    let bytes = rest.as_bytes();
    let code = bytes.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(bytes.get(3), None | Some(b' ')) {
        return None;
    }
    // Three digits: at most 999, no overflow.
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&status) {
        return None;
    }
    Some((status, rest.get(4..).unwrap_or("")))
}

fn check_version(version: &str) -> Result<(), ParseError> {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else {
        Err(ParseError::Version(excerpt(version)))
    }
}

/// Parses the header lines after the start line: unfolds, expands compact names and splits
/// list-valued headers into one `Header` per value.
fn parse_headers(text: &str) -> Result<Headers, ParseError> {
    let mut headers = Headers(Vec::with_capacity(16));
    for line in LogicalLines::new(text) {
        if line.starts_with([' ', '\t']) {
            return Err(ParseError::HeaderSyntax(format!(
                "continuation line without a header: {}",
                excerpt(line)
            )));
        }
        let line = unfold(line);
        let Some((raw_name, value)) = line.split_once(':') else {
            return Err(ParseError::HeaderSyntax(format!(
                "no colon in {}",
                excerpt(&line)
            )));
        };
        // `Name : value` is legal (HCOLON allows whitespace before the colon).
        let raw_name = trim_lws(raw_name);
        if !is_token(raw_name) {
            return Err(ParseError::HeaderSyntax(format!(
                "invalid header name {}",
                excerpt(raw_name)
            )));
        }
        let name = canonical_name(raw_name);
        let value = trim_lws(value);
        if !is_list_header(name) || value == "*" {
            headers.push_raw(name, value);
            continue;
        }
        let items = split_list(value);
        if items.is_empty() {
            // Nothing but commas/whitespace: keep the value as received for whoever asks.
            headers.push_raw(name, value);
        }
        for item in items {
            headers.push_raw(name, item);
        }
    }
    Ok(headers)
}

impl Headers {
    /// Push without canonicalizing again (the parser already did).
    fn push_raw(&mut self, name: &str, value: &str) {
        self.0.push(Header {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
}

/// Merges every Content-Length value: each must be plain digits, and all must agree.
fn content_length<'a>(values: impl Iterator<Item = &'a str>) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    for value in values {
        let value = trim_lws(value);
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::ContentLength(format!(
                "not a number: {}",
                excerpt(value)
            )));
        }
        let len = value
            .parse::<usize>()
            .map_err(|_| ParseError::ContentLength(format!("too large: {}", excerpt(value))))?;
        match found {
            Some(previous) if previous != len => {
                return Err(ParseError::ContentLength(format!(
                    "conflicting values {previous} and {len}"
                )))
            }
            _ => found = Some(len),
        }
    }
    Ok(found)
}

/// Number of CR/LF bytes at the front (keep-alives and stray line ends before a message).
fn leading_crlf_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Finds the empty line ending the header section, searching from `from`. Returns (end of the
/// header section including the last header's line end, start of the body). Accepts CRLF and
/// bare LF.
fn find_head_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(offset) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + offset;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some((nl + 1, nl + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((nl + 1, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

/// Iterates logical header lines: a physical line starting with SP/HT continues the previous
/// one (RFC 3261 §7.3.1). Yielded lines still contain their inner line breaks; see [`unfold`].
struct LogicalLines<'a> {
    rest: &'a str,
}

impl<'a> LogicalLines<'a> {
    fn new(text: &'a str) -> Self {
        LogicalLines { rest: text }
    }
}

impl<'a> Iterator for LogicalLines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        while !self.rest.is_empty() {
            let bytes = self.rest.as_bytes();
            let (mut end, mut next) = (bytes.len(), bytes.len());
            let mut i = 0;
            while let Some(offset) = bytes[i..].iter().position(|&b| b == b'\n') {
                let nl = i + offset;
                if matches!(bytes.get(nl + 1), Some(b' ' | b'\t')) {
                    i = nl + 1;
                    continue;
                }
                (end, next) = (nl, nl + 1);
                break;
            }
            let line = &self.rest[..end];
            self.rest = &self.rest[next..];
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }
}

/// Joins folded physical lines with one space; borrows when the line was not folded.
fn unfold(line: &str) -> Cow<'_, str> {
    if !line.contains('\n') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    for part in line.split('\n').map(trim_lws).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    Cow::Owned(out)
}

/// Splits a list header value on commas outside double quotes (with backslash escapes) and
/// outside `<...>`. Empty items are dropped.
fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
    let mut start = 0;
    for (i, b) in value.bytes().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' if !in_angle => in_quotes = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                // `i` is the index of an ASCII comma, so both slices are on char boundaries.
                let item = trim_lws(&value[start..i]);
                if !item.is_empty() {
                    items.push(item);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = trim_lws(&value[start..]);
    if !last.is_empty() {
        items.push(last);
    }
    items
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
fn canonical_name(name: &str) -> &str {
    if let [letter] = name.as_bytes() {
        let letter = letter.to_ascii_lowercase();
        return COMPACT_FORMS
            .iter()
            .find(|(compact, _)| *compact == letter)
            .map_or(name, |(_, full)| full);
    }
    KNOWN_HEADERS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
        .map_or(name, |known| known)
}

fn is_list_header(name: &str) -> bool {
    LIST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Writes start line, headers (minus any Content-Length), the computed Content-Length and body.
/// CR/LF inside names or values (only possible through the API) become spaces, so a value can
/// never inject a header line.
fn write_message(start_line: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let head_len: usize = headers
        .0
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(start_line.len() + head_len + 32 + body.len());
    push_line_text(&mut out, start_line);
    out.extend_from_slice(b"\r\n");
    for h in &headers.0 {
        if h.name.eq_ignore_ascii_case("Content-Length") || h.name.eq_ignore_ascii_case("l") {
            continue;
        }
        push_line_text(&mut out, &h.name);
        out.extend_from_slice(b": ");
        push_line_text(&mut out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn push_line_text(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

// ---------------------------------------------------------------------------------------------
// URI, name-addr and parameter helpers
// ---------------------------------------------------------------------------------------------

/// `[user[:password]@]host[:port][;params][?headers]` after "sip:" / "sips:".
fn parse_sip_uri(scheme: String, rest: &str) -> Result<Uri, ParseError> {
    let bad = |detail: String| ParseError::BadUri(detail);
    // The user part may contain ';', '?' and ':' (RFC 4475 semiuri, intmeth) but never an
    // unescaped '@', so the first '@' ends the userinfo.
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password.to_string())),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return Err(bad("empty user part".to_string()));
            }
            (Some(user.to_string()), password)
        }
    };
    let (before_headers, headers) = match hostpart.split_once('?') {
        Some((before, headers)) => (before, Some(headers.to_string())),
        None => (hostpart, None),
    };
    let (hostport, params) = match before_headers.find(';') {
        Some(semi) => before_headers.split_at(semi),
        None => (before_headers, ""),
    };
    let (host, port) = parse_hostport(hostport).map_err(bad)?;
    Ok(Uri {
        scheme,
        user,
        password,
        host,
        port,
        params: parse_uri_params(params).map_err(bad)?,
        headers,
    })
}

/// `number[;params]` after "tel:" (RFC 3966); the number goes in `user`.
fn parse_tel_uri(scheme: String, rest: &str) -> Result<Uri, ParseError> {
    let (number, params) = match rest.find(';') {
        Some(semi) => rest.split_at(semi),
        None => (rest, ""),
    };
    if number.is_empty() {
        return Err(ParseError::BadUri("empty telephone number".to_string()));
    }
    Ok(Uri {
        scheme,
        user: Some(number.to_string()),
        password: None,
        host: Host::Domain(String::new()),
        port: None,
        params: parse_uri_params(params).map_err(ParseError::BadUri)?,
        headers: None,
    })
}

/// `host[:port]` where host may be an IPv6 reference `[...]`.
fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), String> {
    let (host, port) = if s.starts_with('[') {
        match s.find(']') {
            Some(close) => s.split_at(close + 1),
            None => return Err(format!("unterminated IPv6 reference {}", excerpt(s))),
        }
    } else {
        match s.find(':') {
            Some(colon) => s.split_at(colon),
            None => (s, ""),
        }
    };
    let port = match port.strip_prefix(':') {
        Some(digits) => Some(parse_port(digits)?),
        None if port.is_empty() => None,
        None => return Err(format!("unexpected text after host: {}", excerpt(port))),
    };
    Ok((parse_host(host)?, port))
}

/// `[v6]`, dotted IPv4 or a domain name (lower-cased).
fn parse_host(s: &str) -> Result<Host, String> {
    if let Some(inner) = s.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
            .map(Host::V6)
            .ok_or_else(|| format!("bad IPv6 reference {}", excerpt(s)));
    }
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Ok(Host::V4(v4));
    }
    if s.is_empty() || !s.bytes().all(is_host_byte) {
        return Err(format!("bad host {}", excerpt(s)));
    }
    Ok(Host::Domain(s.to_ascii_lowercase()))
}

fn parse_port(digits: &str) -> Result<u16, String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad port {}", excerpt(digits)));
    }
    digits
        .parse::<u16>()
        .map_err(|_| format!("port out of range {}", excerpt(digits)))
}

/// URI parameters: "" or `;name[=value]...` with no whitespace (the URI was checked for it).
fn parse_uri_params(s: &str) -> Result<Vec<Param>, String> {
    let Some(s) = s.strip_prefix(';') else {
        return Ok(Vec::new());
    };
    s.split(';')
        .map(|param| {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (param, None),
            };
            if name.is_empty() {
                return Err("empty URI parameter name".to_string());
            }
            Ok(Param {
                name: name.to_string(),
                value,
            })
        })
        .collect()
}

/// Header parameters `*( SEMI name [EQUAL value] )` with LWS allowed around `;` and `=`.
/// Values are a token/host or a quoted string (kept with its quotes).
fn parse_header_params(s: &str) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    let mut c = Cursor::new(s);
    loop {
        c.skip_lws();
        if c.at_end() {
            return Ok(params);
        }
        if !c.eat(b';') {
            return Err(format!("expected ';' before {}", excerpt(c.rest())));
        }
        c.skip_lws();
        let name = c.take_while(is_token_byte);
        if name.is_empty() {
            return Err(format!("empty parameter name before {}", excerpt(c.rest())));
        }
        c.skip_lws();
        let value = if c.eat(b'=') {
            c.skip_lws();
            let value = if c.peek() == Some(b'"') {
                c.take_quoted()
                    .ok_or_else(|| format!("unterminated quoted value for {}", excerpt(name)))?
            } else {
                c.take_while(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b',' | b'"'))
            };
            if value.is_empty() {
                return Err(format!("empty value for parameter {}", excerpt(name)));
            }
            Some(value.to_string())
        } else {
            None
        };
        params.push(Param {
            name: name.to_string(),
            value,
        });
    }
}

/// `<uri>` followed by header params; `s` starts with '<'.
fn parse_angle_addr(display: Option<String>, s: &str) -> Result<NameAddr, ParseError> {
    let Some(close) = s.find('>') else {
        return Err(bad_name_addr("missing '>'".to_string()));
    };
    let uri = Uri::parse(&s[1..close])?;
    let params = parse_header_params(&s[close + 1..]).map_err(bad_name_addr)?;
    Ok(NameAddr {
        display,
        uri,
        params,
    })
}

/// addr-spec without <>: the URI ends at the first ';' and the rest are header params. Such a URI
/// must not contain '?' (RFC 3261 §20, RFC 4475 regbadct).
fn parse_addr_spec(s: &str) -> Result<NameAddr, ParseError> {
    let (uri, params) = match s.find(';') {
        Some(semi) => s.split_at(semi),
        None => (s, ""),
    };
    let uri = trim_lws(uri);
    if uri.contains('?') {
        return Err(bad_name_addr(
            "URI with '?' must be enclosed in <>".to_string(),
        ));
    }
    Ok(NameAddr {
        display: None,
        uri: Uri::parse(uri)?,
        params: parse_header_params(params).map_err(bad_name_addr)?,
    })
}

fn bad_name_addr(detail: String) -> ParseError {
    ParseError::BadHeader("name-addr", detail)
}

/// Re-labels a value error with the header it came from.
fn for_header(e: ParseError, name: &'static str) -> ParseError {
    match e {
        ParseError::BadHeader(_, detail) => ParseError::BadHeader(name, detail),
        ParseError::BadUri(detail) => ParseError::BadHeader(name, format!("bad URI: {detail}")),
        other => other,
    }
}

/// Parses the quoted-string at the start of `s` (which starts with '"'): returns the unescaped
/// content and what follows the closing quote; None if unterminated.
fn unquote_prefix(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            // `i` indexes an ASCII quote, so `i + 1` is a char boundary.
            '"' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for param in params {
        write!(f, ";{}", param.name)?;
        if let Some(value) = &param.value {
            write!(f, "={value}")?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Small lexical helpers
// ---------------------------------------------------------------------------------------------

/// RFC 3261 §25.1 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Unquoted display names are `*(token LWS)` (RFC 4475 baddn); non-ASCII is tolerated because
/// UAs send UTF-8 names unquoted.
fn is_display_char(c: char) -> bool {
    !c.is_ascii() || c == ' ' || c == '\t' || is_token_byte(c as u8)
}

/// Characters of a domain name (with '_' tolerated, as seen in the wild).
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

fn is_lws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Trims SIP whitespace only (not every Unicode space, which may be part of a UTF-8 value).
fn trim_lws(s: &str) -> &str {
    s.trim_matches(is_lws)
}

fn trim_start_lws(s: &str) -> &str {
    s.trim_start_matches(is_lws)
}

/// First 40 characters of `s` for error details, so errors never copy a huge input.
fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

/// Byte cursor over a `&str` for the LWS-tolerant grammars (Via, header params).
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        // `pos` only ever stops before an ASCII byte or at the end (see `take_while`).
        self.s.get(self.pos..).unwrap_or("")
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_lws(&mut self) {
        self.take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    }

    /// Consumes bytes while `pred` holds. `pred` must answer the same for every byte >= 0x80, so
    /// the cursor never stops inside a UTF-8 sequence.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// At a '"': consumes a quoted string (backslash escapes honoured) and returns it with its
    /// quotes; None (nothing consumed) if it is unterminated.
    fn take_quoted(&mut self) -> Option<&'a str> {
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
