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

    /// URI parameter by case-insensitive name (see [`find_param`]).
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

    /// The `tag` header parameter, if present with a value.
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

    /// The From value; Missing if absent, BadHeader("From", ..) if it does not parse.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("From")
    }

    /// The To value; Missing if absent, BadHeader("To", ..) if it does not parse.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("To")
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

/// A SIP request. `body` is raw bytes (Content-Length of them when parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response; `reason` may be empty or UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Either kind of message, as returned by [`parse`].
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
    /// The headers of either kind of message.
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    /// Serializes either kind of message (see [`Request::to_bytes`]).
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
        if buf.len() - start > MAX_HEAD_LEN {
            return too_large();
        }
        // Binary garbage (e.g. a TLS hello on a plain port) is rejected now rather than after
        // 64 KiB; a UTF-8 sequence cut off at the end of the buffer is just incomplete.
        if let Err(e) = std::str::from_utf8(&buf[start..]) {
            if e.error_len().is_some() {
                return Frame::Invalid(ParseError::StartLine(
                    "message head is not valid UTF-8".to_string(),
                ));
            }
        }
        return Frame::Incomplete;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Test messages are written with "\n"; the wire uses CRLF.
    fn crlf(text: &str) -> Vec<u8> {
        text.replace('\n', "\r\n").into_bytes()
    }

    fn request(buf: &[u8]) -> Request {
        match parse(buf) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn response(buf: &[u8]) -> Response {
        match parse(buf) {
            Ok(SipMessage::Response(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn domain(name: &str) -> Host {
        Host::Domain(name.to_string())
    }

    fn v6(text: &str) -> Host {
        Host::V6(text.parse().expect("test literal is a valid IPv6 address"))
    }

    const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

    fn basic_invite() -> Vec<u8> {
        let head = crlf(&format!(
            "INVITE sip:bob@biloxi.example.com:5062;transport=udp SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@192.0.2.101:5060>
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>
Route: <sip:p3.example.com;lr>
Content-Type: application/sdp
Content-Length: {}

",
            SDP.len()
        ));
        [head, SDP.as_bytes().to_vec()].concat()
    }

    // ---- ordinary messages -----------------------------------------------------------------

    #[test]
    fn invite_with_sdp_all_accessors() {
        let r = request(&basic_invite());
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.scheme, "sip");
        assert_eq!(r.uri.user.as_deref(), Some("bob"));
        assert_eq!(r.uri.host, domain("biloxi.example.com"));
        assert_eq!(r.uri.port, Some(5062));
        assert_eq!(r.uri.param("transport"), Some(Some("udp")));
        assert_eq!(r.body, SDP.as_bytes());

        let h = &r.headers;
        let via = h.top_via().unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.host, domain("pc33.atlanta.example.com"));
        assert_eq!(via.port, Some(5060));
        assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(find_param(&via.params, "RPORT"), Some(None));
        assert_eq!(h.max_forwards().unwrap(), Some(70));
        let to = h.to().unwrap();
        assert_eq!(to.display.as_deref(), Some("Bob"));
        assert_eq!(to.uri.user.as_deref(), Some("bob"));
        assert_eq!(to.tag(), None);
        let from = h.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("Alice"));
        assert_eq!(from.tag(), Some("1928301774"));
        assert_eq!(
            h.call_id().unwrap(),
            "a84b4c76e66710@pc33.atlanta.example.com"
        );
        assert_eq!(
            h.cseq().unwrap(),
            CSeq {
                seq: 314159,
                method: Method::Invite
            }
        );
        let contacts = h.contacts().unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(
            contacts[0].uri.host,
            Host::V4(Ipv4Addr::new(192, 0, 2, 101))
        );
        assert_eq!(contacts[0].uri.port, Some(5060));
        let rr = h.record_routes().unwrap();
        assert_eq!(rr.len(), 2);
        assert_eq!(rr[1].uri.host, domain("p2.example.com"));
        assert_eq!(rr[1].uri.param("lr"), Some(None));
        assert_eq!(h.routes().unwrap()[0].uri.host, domain("p3.example.com"));
        assert_eq!(h.content_type(), Some("application/sdp"));
        assert_eq!(
            h.get("content-length"),
            Some(SDP.len().to_string().as_str())
        );
        r.check_mandatory().unwrap();
    }

    #[test]
    fn print_then_parse_round_trips() {
        let original = parse(&basic_invite()).unwrap();
        let printed = original.to_bytes();
        let reparsed = parse(&printed).unwrap();
        assert_eq!(reparsed, original);
        assert_eq!(reparsed.to_bytes(), printed);
        let text = String::from_utf8(printed).unwrap();
        assert!(text.starts_with(
            "INVITE sip:bob@biloxi.example.com:5062;transport=udp SIP/2.0\r\nVia: SIP/2.0/UDP "
        ));
        assert!(text.contains("\r\nRecord-Route: <sip:p1.example.com;lr>\r\nRecord-Route: <sip:p2.example.com;lr>\r\n"));
        assert!(text.ends_with(&format!("Content-Length: {}\r\n\r\n{SDP}", SDP.len())));
    }

    #[test]
    fn to_bytes_writes_computed_content_length_last() {
        let mut r = request(&basic_invite());
        r.body = b"xyz".to_vec();
        r.headers.push("X-Extra", "1");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(text.matches("Content-Length").count(), 1);
        assert!(text.ends_with("X-Extra: 1\r\nContent-Length: 3\r\n\r\nxyz"));
    }

    #[test]
    fn to_bytes_never_lets_a_value_inject_a_line() {
        let mut r = request(&basic_invite());
        r.headers
            .push("Subject", "hi\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bKx");
        let again = request(&r.to_bytes());
        assert_eq!(again.headers.vias().unwrap().len(), 1);
    }

    #[test]
    fn response_for_request_copies_dialog_headers() {
        let req = request(&crlf(
            "BYE sip:a@b SIP/2.0
Via: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/TCP h2;branch=z9hG4bK2
Route: <sip:r@x>
From: <sip:a@b>;tag=1
To: <sip:c@d>;tag=2
Call-ID: cid
CSeq: 7 BYE
Content-Length: 0

",
        ));
        let resp = Response::for_request(&req, 200, "OK");
        let names: Vec<&str> = resp.headers.0.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["Via", "Via", "From", "To", "Call-ID", "CSeq"]);
        assert_eq!(resp.headers.vias().unwrap()[1].branch(), Some("z9hG4bK2"));
        let bytes = resp.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h1;branch=z9hG4bK1\r\n"));
        assert!(text.ends_with("CSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"));
        let back = response(&bytes);
        assert_eq!(back.status, 200);
        assert_eq!(back.reason, "OK");
        assert_eq!(back.headers.cseq().unwrap().method, Method::Bye);
    }

    #[test]
    fn bare_lf_line_ends() {
        let r = request(
            b"OPTIONS sip:x@y SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nCall-ID: 1\nCSeq: 1 OPTIONS\nContent-Length: 4\n\nbody",
        );
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.body, b"body");
        r.check_mandatory().unwrap();
    }

    #[test]
    fn compact_and_odd_case_names_are_canonical() {
        let r = request(&crlf(
            "MESSAGE sip:x@y SIP/2.0
v: SIP/2.0/UDP h;branch=z9hG4bK1
f: <sip:a@b>;tag=1
T: <sip:x@y>
i: abc
cseq: 1 MESSAGE
call-info: <http://x>
www-authenticate: Digest realm=\"a\", nonce=\"b\"
k: 100rel, timer
X-Custom-HEADER: v
c: text/plain
L: 2

hi",
        ));
        let names: Vec<&str> = r.headers.0.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "From",
                "To",
                "Call-ID",
                "CSeq",
                "Call-Info",
                "WWW-Authenticate",
                "Supported",
                "Supported",
                "X-Custom-HEADER",
                "Content-Type",
                "Content-Length"
            ]
        );
        // Not a list header: the comma in the auth challenge stays.
        assert_eq!(
            r.headers.get("WWW-Authenticate"),
            Some("Digest realm=\"a\", nonce=\"b\"")
        );
        assert_eq!(r.body, b"hi");
        r.check_mandatory().unwrap();
    }

    #[test]
    fn list_splitting_honours_quotes_escapes_and_angles() {
        let r = request(&crlf(
            "OPTIONS sip:x@y SIP/2.0
Contact: \"Doe, \\\"J\\\", Jr\" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>, sip:e@f;expires=\"Thu, 01 Dec\"
Allow: INVITE,ACK , ,BYE
From: \"Watson, T\" <sip:w@x>;tag=1
Content-Length: 0

",
        ));
        let contacts = r.headers.contacts().unwrap();
        assert_eq!(contacts.len(), 3);
        assert_eq!(contacts[0].display.as_deref(), Some("Doe, \"J\", Jr"));
        assert_eq!(contacts[0].uri.param("x"), Some(Some("1,2")));
        assert_eq!(find_param(&contacts[0].params, "q"), Some(Some("0.5")));
        assert_eq!(contacts[1].uri.user.as_deref(), Some("c"));
        assert_eq!(
            find_param(&contacts[2].params, "expires"),
            Some(Some("\"Thu, 01 Dec\""))
        );
        let allow: Vec<&str> = r.headers.get_all("Allow").collect();
        assert_eq!(allow, ["INVITE", "ACK", "BYE"]);
        assert_eq!(
            r.headers.from().unwrap().display.as_deref(),
            Some("Watson, T")
        );
    }

    #[test]
    fn two_vias_and_two_contacts_on_one_line() {
        let r = request(&crlf(
            "INVITE sip:x@y SIP/2.0
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKaaa, SIP/2.0/TCP b.example.com:5070;branch=z9hG4bKbbb
Contact: <sip:one@a.example.com>, \"Two\" <sip:two@b.example.com>;expires=60
Content-Length: 0

",
        ));
        let vias = r.headers.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].branch(), Some("z9hG4bKaaa"));
        assert_eq!(
            (vias[1].transport.as_str(), vias[1].port),
            ("TCP", Some(5070))
        );
        assert_eq!(vias[1].branch(), Some("z9hG4bKbbb"));
        assert_eq!(r.headers.top_via().unwrap(), vias[0]);
        let contacts = r.headers.contacts().unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].uri.user.as_deref(), Some("one"));
        assert_eq!(contacts[1].display.as_deref(), Some("Two"));
        assert_eq!(find_param(&contacts[1].params, "expires"), Some(Some("60")));
    }

    #[test]
    fn unknown_method_is_extension() {
        let r = request(b"FOOBAR sip:x@y SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.method, Method::Extension("FOOBAR".to_string()));
        assert_eq!(r.method.as_str(), "FOOBAR");
        // Method tokens are case-sensitive.
        assert_eq!(
            Method::from_token("invite"),
            Method::Extension("invite".into())
        );
        assert_eq!(Method::from_token("INVITE"), Method::Invite);
        assert!(matches!(
            parse(b"FOO(BAR) sip:x@y SIP/2.0\r\n\r\n"),
            Err(ParseError::StartLine(_))
        ));
    }

    #[test]
    fn ipv6_everywhere() {
        let r = request(&crlf(
            "INVITE sip:alice@[2001:db8::10]:5070 SIP/2.0
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas;received=[2001:db8::9:255]
Via: SIP/2.0/TCP [2001:db8::9:2]:5061;branch=z9hG4bKbs;rport=5061
From: <sip:bob@[2001:db8::9:1]>;tag=1
To: <sip:alice@[2001:db8::10]:5070>
Call-ID: v6
CSeq: 1 INVITE
Contact: \"Caller\" <sip:caller@[2001:db8::9:1]:5062;transport=tcp>
Content-Length: 0

",
        ));
        assert_eq!(r.uri.host, v6("2001:db8::10"));
        assert_eq!(r.uri.port, Some(5070));
        assert_eq!(r.uri.to_string(), "sip:alice@[2001:db8::10]:5070");
        let vias = r.headers.vias().unwrap();
        assert_eq!(vias[0].host, v6("2001:db8::9:1"));
        assert_eq!(vias[0].port, None);
        assert_eq!(vias[0].branch(), Some("z9hG4bKas"));
        assert_eq!(
            find_param(&vias[0].params, "received"),
            Some(Some("[2001:db8::9:255]"))
        );
        assert_eq!(
            (vias[1].host.clone(), vias[1].port),
            (v6("2001:db8::9:2"), Some(5061))
        );
        let contact = &r.headers.contacts().unwrap()[0];
        assert_eq!(contact.uri.host, v6("2001:db8::9:1"));
        assert_eq!(contact.uri.port, Some(5062));
        r.check_mandatory().unwrap();
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
        for bad in [
            "SIP/2.0 UDP h",
            "SIP/3.0/UDP h",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP h;;",
            "SIP/2.0/UDP h;branch=",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP h junk",
        ] {
            assert!(
                matches!(Via::parse(bad), Err(ParseError::BadHeader("Via", _))),
                "{bad}"
            );
        }
    }

    #[test]
    fn uri_forms() {
        let u = Uri::parse("sips:user:secret@Example.COM:5061;transport=tls;lr?subject=hi&x=y")
            .unwrap();
        assert_eq!(u.scheme, "sips");
        assert_eq!(u.user.as_deref(), Some("user"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, domain("example.com"));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.param("TRANSPORT"), Some(Some("tls")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers.as_deref(), Some("subject=hi&x=y"));
        assert_eq!(
            u.to_string(),
            "sips:user:secret@example.com:5061;transport=tls;lr?subject=hi&x=y"
        );

        let tel = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(tel.scheme, "tel");
        assert_eq!(tel.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(tel.host, domain(""));
        assert_eq!(
            tel.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );

        let v4 = Uri::parse("sip:10.0.0.1").unwrap();
        assert_eq!(
            (v4.user, v4.host),
            (None, Host::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );

        for bad in [
            "http://example.com/",
            "urn:service:sos",
            "sip:",
            "sip:@host",
            "sip:a@b:port",
            "sip:a@b:70000",
            "sip:a@[::1",
            "sip:a@[zz::1]",
            "sip:a@b c",
            "<sip:a@b>",
            "sip:a@b;;x",
            "sip:a@ho/st",
            "nocolon",
            "tel:",
        ] {
            assert!(
                matches!(Uri::parse(bad), Err(ParseError::BadUri(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Quoted \\\"Display\\\"\" <sip:a@h>;tag=x").unwrap();
        assert_eq!(n.display.as_deref(), Some("Quoted \"Display\""));
        assert_eq!(n.tag(), Some("x"));
        assert_eq!(n.to_string(), "\"Quoted \\\"Display\\\"\" <sip:a@h>;tag=x");
        assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);

        let n = NameAddr::parse("Bob Smith   <sip:b@h>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob Smith"));
        assert!(n.params.is_empty());

        // addr-spec: the params belong to the header, not the URI.
        let n = NameAddr::parse("sip:b@h;tag=x;user=phone").unwrap();
        assert_eq!(n.display, None);
        assert!(n.uri.params.is_empty());
        assert_eq!(n.tag(), Some("x"));
        assert_eq!(n.to_string(), "<sip:b@h>;tag=x;user=phone");

        let n = NameAddr::parse("<sip:b@h;lr>;tag=y").unwrap();
        assert_eq!(n.uri.param("lr"), Some(None));
        assert_eq!(n.tag(), Some("y"));

        let n = NameAddr::parse("<sip:b@h>;+sip.instance=\"<urn:uuid:1;2>\";reg-id=1").unwrap();
        assert_eq!(
            find_param(&n.params, "+sip.instance"),
            Some(Some("\"<urn:uuid:1;2>\""))
        );
        assert_eq!(find_param(&n.params, "reg-id"), Some(Some("1")));

        for bad in [
            "",
            "\"unterminated <sip:a@b>",
            "\"x\" sip:a@b",
            "<sip:a@b",
            "Bell, Alexander <sip:a@b>",
            "sip:a@b?x=y",
            "< sip:a@b >",
            "<sip:a@b>;",
            "<sip:a@b> junk",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
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

    #[test]
    fn check_mandatory_reports_first_problem() {
        let base = "OPTIONS sip:x@y SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:a@b>;tag=1
To: <sip:x@y>
Call-ID: c
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

";
        request(&crlf(base)).check_mandatory().unwrap();
        let cases: [(&str, &str, ParseError); 8] = [
            (
                "Via: SIP/2.0/UDP h;branch=z9hG4bK1\n",
                "",
                ParseError::Missing("Via"),
            ),
            ("From: <sip:a@b>;tag=1\n", "", ParseError::Missing("From")),
            ("Call-ID: c\n", "", ParseError::Missing("Call-ID")),
            (
                "CSeq: 1 OPTIONS",
                "CSeq: 1 INVITE",
                ParseError::CSeqMethodMismatch,
            ),
            (
                "Call-ID: c",
                "Call-ID: ",
                ParseError::BadHeader("Call-ID", "empty".into()),
            ),
            (
                "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
                "Via: SIP/2.0/UDP h",
                ParseError::BadHeader("Via", "missing branch parameter".into()),
            ),
            (
                "To: <sip:x@y>",
                "To: <sip:x@y>\nTo: <sip:z@y>",
                ParseError::BadHeader("To", "multiple values".into()),
            ),
            (
                "Max-Forwards: 70",
                "Max-Forwards: seventy",
                ParseError::BadHeader("Max-Forwards", "not a number in 0..=255: seventy".into()),
            ),
        ];
        for (from, to, expected) in cases {
            let text = base.replace(from, to);
            assert_eq!(
                request(&crlf(&text)).check_mandatory(),
                Err(expected),
                "{text}"
            );
        }
    }

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

    // ---- RFC 4475 valid messages -------------------------------------------------------------

    const WSINV_SDP: &str = "v=0\r\n\
o=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n\
s=-\r\n\
c=IN IP4 192.0.2.4\r\n\
t=0 0\r\n\
m=audio 49217 RTP/AVP 0 12\r\n\
m=video 3227 RTP/AVP 31\r\n\
a=rtpmap:31 LPC\r\n";

    /// RFC 4475 3.1.1.1 "wsinv": a short tortuous INVITE.
    #[test]
    fn rfc4475_wsinv() {
        assert_eq!(WSINV_SDP.len(), 150);
        let head = crlf(
            "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

",
        );
        let r = request(&[head, WSINV_SDP.as_bytes().to_vec()].concat());
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.user.as_deref(), Some("vivekg"));
        assert_eq!(r.uri.param("unknownparam"), Some(None));
        let h = &r.headers;
        let to = h.to().unwrap();
        assert_eq!(to.uri.host, domain("chair-dnrc.example.com"));
        assert_eq!(to.tag(), Some("1918181833n"));
        let from = h.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(from.tag(), Some("98asjd8"));
        assert_eq!(h.max_forwards().unwrap(), Some(68));
        assert_eq!(h.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
        assert_eq!(h.cseq().unwrap().seq, 9);
        assert_eq!(h.get("Subject"), Some(""));
        assert_eq!(
            h.get("NewFangledHeader"),
            Some("newfangled value continued newfangled value")
        );
        assert_eq!(h.get("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
        let route = &h.routes().unwrap()[0];
        assert_eq!(route.uri.param("unknownwith"), Some(Some("value")));
        let vias = h.vias().unwrap();
        assert_eq!(vias.len(), 3);
        assert_eq!(
            (vias[0].transport.as_str(), vias[0].branch()),
            ("UDP", Some("390skdjuw"))
        );
        assert_eq!(vias[1].host, domain("spindle.example.com"));
        assert_eq!(
            (vias[1].transport.as_str(), vias[1].branch()),
            ("TCP", Some("z9hG4bK9ikj8"))
        );
        assert_eq!(vias[2].host, Host::V4(Ipv4Addr::new(192, 168, 255, 111)));
        assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
        let contact = &h.contacts().unwrap()[0];
        assert_eq!(contact.display.as_deref(), Some("Quoted string \"\""));
        assert_eq!(
            find_param(&contact.params, "newparam"),
            Some(Some("newvalue"))
        );
        assert_eq!(find_param(&contact.params, "secondparam"), Some(None));
        assert_eq!(find_param(&contact.params, "q"), Some(Some("0.33")));
        assert_eq!(r.body, WSINV_SDP.as_bytes());
        r.check_mandatory().unwrap();
    }

    /// RFC 4475 3.1.1.2 "intmeth": extension method full of token characters, crazy URI,
    /// control characters escaped in a quoted display name, UTF-8 in a header value.
    #[test]
    fn rfc4475_intmeth() {
        let r = request(&crlf("!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{FEFF}大停電\u{FEFF}
Content-Length: 0

"));
        let method = Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into());
        assert_eq!(r.method, method);
        assert_eq!(
            r.uri.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            r.uri.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(r.uri.host, domain("example.com"));
        let h = &r.headers;
        assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
        let to = h.to().unwrap();
        assert_eq!(to.display.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));
        assert_eq!(
            to.uri.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        let from = h.from().unwrap();
        assert_eq!(
            from.display.as_deref(),
            Some("token1~` token2'+_ token3*%!.-")
        );
        assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
        assert_eq!(
            find_param(&from.params, "fromparam''~+*_!.-%"),
            Some(Some("\"работающий\""))
        );
        assert_eq!(
            h.call_id().unwrap(),
            "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
        );
        assert_eq!(h.cseq().unwrap().method, method);
        assert_eq!(h.max_forwards().unwrap(), Some(255));
        assert_eq!(
            h.get("EXTENSIONHEADER-!.%*+_`'~"),
            Some("\u{FEFF}大停電\u{FEFF}")
        );
        r.check_mandatory().unwrap();
        // Printing keeps the crazy parts intact.
        assert_eq!(parse(&r.to_bytes()).unwrap(), SipMessage::Request(r));
    }

    /// RFC 4475 3.1.1.3 "esc01": escaped characters in URI user parts and params, folded Contact.
    #[test]
    fn rfc4475_esc01() {
        let r = request(&crlf(
            "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 0

",
        ));
        assert_eq!(r.uri.user.as_deref(), Some("sips%3Auser%40example.com"));
        assert_eq!(r.uri.host, domain("example.net"));
        assert_eq!(
            r.headers.to().unwrap().uri.user.as_deref(),
            Some("%75se%72")
        );
        assert_eq!(
            r.headers.from().unwrap().uri.user.as_deref(),
            Some("I%20have%20spaces")
        );
        let contact = &r.headers.contacts().unwrap()[0];
        assert_eq!(contact.uri.user.as_deref(), Some("cal%6Cer"));
        assert_eq!(contact.uri.param("%6C%72"), Some(None));
        assert_eq!(contact.uri.param("n%61me"), Some(Some("v%61lue%25%34%31")));
        assert_eq!(r.headers.content_type(), Some("application/sdp"));
        assert_eq!(
            r.uri.to_string(),
            "sip:sips%3Auser%40example.com@example.net"
        );
        r.check_mandatory().unwrap();
    }

    /// RFC 4475 3.1.1.4/3.1.1.5 "escnull"/"esc02": %00 in users, '%' that is not an escape in a
    /// method and a header name.
    #[test]
    fn rfc4475_escnull_and_esc02() {
        let r = request(&crlf(
            "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
        ));
        assert_eq!(
            r.headers.from().unwrap().uri.user.as_deref(),
            Some("null-%00-null")
        );
        let users: Vec<String> = r
            .headers
            .contacts()
            .unwrap()
            .into_iter()
            .filter_map(|c| c.uri.user)
            .collect();
        assert_eq!(users, ["%00", "%00%00"]);
        r.check_mandatory().unwrap();

        let r = request(&crlf(
            "RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK209987
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

",
        ));
        assert_eq!(r.method, Method::Extension("RE%47IST%45R".into()));
        assert_eq!(r.headers.to().unwrap().display.as_deref(), Some("%Z%45"));
        assert_eq!(r.headers.contacts().unwrap().len(), 2);
        assert_eq!(
            r.headers.get("C%6Fntact"),
            Some("<sip:alias2@host2.example.com>")
        );
        r.check_mandatory().unwrap();
    }

    /// RFC 4475 3.1.1.6 "lwsdisp": no LWS between display name and '<'.
    #[test]
    fn rfc4475_lwsdisp() {
        let r = request(&crlf(
            "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
        ));
        let from = r.headers.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("caller"));
        assert_eq!(from.uri.user.as_deref(), Some("caller"));
        assert_eq!(from.tag(), Some("323"));
        r.check_mandatory().unwrap();
    }

    /// RFC 4475 3.1.1.7 "longreq": very long values and many Vias (mixed compact/full names).
    #[test]
    fn rfc4475_longreq() {
        let long = "longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong".repeat(8);
        let mut text = format!(
            "INVITE sip:user@example.com SIP/2.0
To: \"I have a user name of extreme{long} proportion\"<sip:user@example.com:6000;unknownparam1=very{long}value;{long}parameter-name=value>
From: sip:amazinglylongcallername{long}@example.net;tag=12{long}982424;unknown-param-name{long}=unknown-value;unknown-param-with-no-value
Call-ID: longreq.one{long}really@example.net
CSeq: 3882340 INVITE
Unknown-{long}-Name: unknown-{long}-value; unknown-{long}-parameter-name = unknown-{long}-parameter-value
Route: <sip:sip1.example.net;lr>, <sip:sip2.example.net;lr>, <sip:sip3.example.net;lr>, <sip:sip4.example.net;lr>, <sip:sip5.example.net;lr>
Max-Forwards: 70
"
        );
        let names = ["Via", "v", "V", "VIA"];
        for n in (1..=40).rev() {
            text.push_str(&format!(
                "{}: SIP/2.0/TCP sip{n}.example.com;branch=z9hG4bK{long}{n}\n",
                names[n % 4]
            ));
        }
        text.push_str(&format!(
            "Contact: <sip:amazinglylongcallername{long}@host5.example.net>\nContent-Length: 0\n\n"
        ));
        let buf = crlf(&text);
        assert!(buf.len() > 30_000);
        let r = request(&buf);
        let h = &r.headers;
        let vias = h.vias().unwrap();
        assert_eq!(vias.len(), 40);
        assert_eq!(vias[0].host, domain("sip40.example.com"));
        assert_eq!(vias[39].branch(), Some(format!("z9hG4bK{long}1").as_str()));
        assert_eq!(h.routes().unwrap().len(), 5);
        let to = h.to().unwrap();
        assert_eq!(to.uri.port, Some(6000));
        assert_eq!(
            to.display.unwrap().len(),
            "I have a user name of extreme proportion".len() + long.len()
        );
        assert_eq!(
            h.from().unwrap().tag(),
            Some(format!("12{long}982424").as_str())
        );
        assert!(h.get(&format!("unknown-{long}-name")).is_some());
        r.check_mandatory().unwrap();
        assert_eq!(frame(&buf), Frame::Complete(buf.len()));
    }

    const DBLREQ: &str = "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0


INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 4

v=0
";

    /// RFC 4475 3.1.1.8 "dblreq": on UDP only the first message counts.
    #[test]
    fn rfc4475_dblreq() {
        let r = request(&crlf(DBLREQ));
        assert_eq!(r.method, Method::Register);
        assert!(r.body.is_empty());
        assert_eq!(
            r.headers.call_id().unwrap(),
            "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
        );
        assert_eq!(
            r.headers.contacts().unwrap()[0].uri.host,
            domain("host.example.com")
        );
        r.check_mandatory().unwrap();
    }

    /// RFC 4475 3.1.1.9 "semiuri": semicolons in the user part of the Request-URI.
    #[test]
    fn rfc4475_semiuri() {
        let r = request(&crlf(
            "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
        ));
        assert_eq!(r.uri.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(r.uri.host, domain("example.com"));
        assert!(r.uri.params.is_empty());
        assert_eq!(
            r.uri.to_string(),
            "sip:user;par=u%40example.net@example.com"
        );
        let accept: Vec<&str> = r.headers.get_all("Accept").collect();
        assert_eq!(accept.len(), 6);
        assert_eq!(accept[5], "message/sipfrag");
        r.check_mandatory().unwrap();
    }

    /// RFC 4475 3.1.1.10 "transports": Vias with several transports, some sharing a line.
    #[test]
    fn rfc4475_transports() {
        let r = request(&crlf("OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw, SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj,SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/tcp t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

"));
        let vias = r.headers.vias().unwrap();
        let transports: Vec<&str> = vias.iter().map(|v| v.transport.as_str()).collect();
        assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
        assert_eq!(vias[3].branch(), Some("z9hG4bKasd0f3en"));
        assert_eq!(
            r.headers.call_id().unwrap(),
            "transports.kijh4akdnaqjkwendsasfdj"
        );
        r.check_mandatory().unwrap();
    }

    /// RFC 4475 3.1.1.11 "mpart01": a multipart body (with binary bytes) is kept intact.
    #[test]
    fn rfc4475_mpart01() {
        let mut body = crlf(
            "--boundary42
Content-Type: application/sdp

v=0
--boundary42
Content-Type: application/pkcs7-signature; name=smime.p7s
Content-Transfer-Encoding: binary

",
        );
        body.extend_from_slice(&[
            0x30, 0x82, 0x01, 0x52, 0x00, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n', 0x80,
        ]);
        body.extend_from_slice(b"\r\n--boundary42--\r\n");
        let head = crlf(&format!(
            "MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuL
Content-Type: multipart/mixed;boundary=\"boundary42\"
Call-ID: 0dc68373623af98a@127.0.0.1
CSeq: 2 MESSAGE
From: <sip:kumiko@example.net>;tag=2fb0dcc9
To: <sip:kumiko@example.org>
Content-Length: {}

",
            body.len()
        ));
        let buf = [head, body.clone()].concat();
        let r = request(&buf);
        assert_eq!(r.body, body);
        assert_eq!(
            r.headers.content_type(),
            Some("multipart/mixed;boundary=\"boundary42\"")
        );
        assert_eq!(r.headers.top_via().unwrap().port, Some(5070));
        r.check_mandatory().unwrap();
        assert_eq!(parse(&r.to_bytes()).unwrap(), SipMessage::Request(r));
        assert_eq!(frame(&buf), Frame::Complete(buf.len()));
    }

    /// RFC 4475 3.1.1.12 "unreason": UTF-8 reason phrase.
    #[test]
    fn rfc4475_unreason() {
        let reason = "= 2**3 * 5**2 но сто девяносто девять - простое";
        let r = response(&crlf(&format!(
            "SIP/2.0 200 {reason}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 4
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

v=0
"
        )));
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, reason);
        assert_eq!(r.body, b"v=0\r");
        assert_eq!(r.headers.to().unwrap().tag(), Some("2229"));
        assert_eq!(r.headers.cseq().unwrap().method, Method::Invite);
    }

    /// RFC 4475 3.1.1.13 "noreason": empty reason phrase (with and without the trailing SP).
    #[test]
    fn rfc4475_noreason() {
        for start in ["SIP/2.0 100 ", "SIP/2.0 100"] {
            let r = response(&crlf(&format!(
                "{start}
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0

"
            )));
            assert_eq!((r.status, r.reason.as_str()), (100, ""));
            assert!(r.to_bytes().starts_with(b"SIP/2.0 100 \r\n"));
        }
    }

    // ---- RFC 4475 invalid messages ------------------------------------------------------------

    fn minimal(method_line: &str, extra: &str) -> Vec<u8> {
        crlf(&format!(
            "{method_line}
Via: SIP/2.0/UDP h.example.com;branch=z9hG4bKbad
From: <sip:a@example.com>;tag=1
To: <sip:b@example.com>
Call-ID: bad.1
CSeq: 1 INVITE
Max-Forwards: 70
{extra}
"
        ))
    }

    /// RFC 4475 3.1.2.1 "badinv01": extraneous separators in Via and Contact.
    #[test]
    fn rfc4475_badinv01() {
        let r = request(&crlf(
            "INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: 0

",
        ));
        assert!(matches!(
            r.headers.vias(),
            Err(ParseError::BadHeader("Via", _))
        ));
        assert!(matches!(
            r.check_mandatory(),
            Err(ParseError::BadHeader("Via", _))
        ));
        assert!(matches!(
            r.headers.contacts(),
            Err(ParseError::BadHeader("Contact", _))
        ));
    }

    /// RFC 4475 3.1.2.2/3.1.2.3 "clerr", "ncl" and multiple Content-Length values.
    #[test]
    fn rfc4475_content_length_errors() {
        // `minimal` ends the extra text with a line end, so the body is "v=0\r\n".
        let body = "\n\nv=0";
        for (value, extra) in [
            ("9999", ""),
            ("-999", ""),
            ("18446744073709551617", ""),
            ("1O", ""),
            ("", ""),
            ("0", "\nContent-Length: 4"),
            ("4", "\nl: 5"),
        ] {
            let buf = minimal(
                "INVITE sip:b@example.com SIP/2.0",
                &format!("Content-Length: {value}{extra}{body}"),
            );
            assert!(
                matches!(parse(&buf), Err(ParseError::ContentLength(_))),
                "{value}{extra}: {:?}",
                parse(&buf)
            );
            assert!(matches!(frame(&buf), Frame::Invalid(_) | Frame::Incomplete));
        }
        // Equal duplicates are harmless.
        let buf = minimal(
            "INVITE sip:b@example.com SIP/2.0",
            &format!("Content-Length: 5\nl: 5{body}"),
        );
        assert_eq!(request(&buf).body, b"v=0\r\n");
    }

    /// RFC 4475 3.1.2.4/3.1.2.5 "scalar02"/"scalarlg": overlarge scalar values.
    #[test]
    fn rfc4475_scalar_overflow() {
        let r = request(&crlf(
            "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

",
        ));
        assert!(matches!(
            r.headers.cseq(),
            Err(ParseError::BadHeader("CSeq", _))
        ));
        assert!(matches!(
            r.check_mandatory(),
            Err(ParseError::BadHeader("CSeq", _))
        ));
        assert!(matches!(
            r.headers.max_forwards(),
            Err(ParseError::BadHeader("Max-Forwards", _))
        ));
        assert_eq!(
            find_param(&r.headers.contacts().unwrap()[0].params, "expires"),
            Some(Some("280297596632815"))
        );

        let r = response(&crlf(
            "SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

",
        ));
        assert!(matches!(
            r.headers.cseq(),
            Err(ParseError::BadHeader("CSeq", _))
        ));
        assert_eq!(
            r.headers.get("Warning"),
            Some("1812 overture \"In Progress\"")
        );
    }

    /// RFC 4475 "insuf": missing mandatory headers.
    #[test]
    fn rfc4475_insuf() {
        let r = request(&crlf(
            "INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 0

",
        ));
        assert_eq!(r.check_mandatory(), Err(ParseError::Missing("From")));
    }

    /// RFC 4475 "badvers", "lwsstart", "trws", "ltgtruri", "lwsruri", "bigcode", unknown schemes.
    #[test]
    fn rfc4475_bad_start_lines() {
        let cases = [
            ("OPTIONS sip:t.watson@example.org SIP/7.0", "Version"),
            ("SIP/7.0 200 OK", "Version"),
            ("INVITE  sip:user@example.com  SIP/2.0", "StartLine"),
            (
                "OPTIONS sip:remote-target@example.com SIP/2.0  ",
                "StartLine",
            ),
            (" INVITE sip:user@example.com SIP/2.0", "StartLine"),
            ("INVITE <sip:user@example.com> SIP/2.0", "BadUri"),
            ("INVITE sip:user@example.com; lr SIP/2.0", "StartLine"),
            (
                "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
                "BadUri",
            ),
            (
                "SIP/2.0 4294967301 better not break the receiver",
                "StartLine",
            ),
            ("SIP/2.0 099 Too Small", "StartLine"),
            ("SIP/2.0 20 OK", "StartLine"),
            ("SIP/2.0", "StartLine"),
            ("INVITE sip:x@y", "StartLine"),
            ("HTTP/1.1 200 OK", "StartLine"),
            ("GET / HTTP/1.1", "Version"),
            ("\u{1}\u{2}garbage", "StartLine"),
        ];
        for (line, expected) in cases {
            let err = parse(&minimal(line, "Content-Length: 0\n")).unwrap_err();
            let kind = match &err {
                ParseError::Version(_) => "Version",
                ParseError::StartLine(_) => "StartLine",
                ParseError::BadUri(_) => "BadUri",
                _ => "other",
            };
            assert_eq!(kind, expected, "{line:?} gave {err:?}");
        }
        assert_eq!(
            parse(&minimal("INVITE sip:x@y SIP/7.0", "")),
            Err(ParseError::Version("SIP/7.0".into()))
        );
        assert!(matches!(parse(b""), Err(ParseError::StartLine(_))));
        assert!(matches!(parse(b"\r\n\r\n"), Err(ParseError::StartLine(_))));
    }

    /// Header syntax errors and non-UTF-8 in the header section.
    #[test]
    fn bad_header_syntax() {
        for extra in ["No colon here\n", "Bad Name: x\n", ": no name\n"] {
            let buf = minimal("OPTIONS sip:x@y SIP/2.0", extra);
            assert!(
                matches!(parse(&buf), Err(ParseError::HeaderSyntax(_))),
                "{extra}"
            );
        }
        // A continuation line right after the start line has nothing to continue.
        let buf = crlf("OPTIONS sip:x@y SIP/2.0\n Via: SIP/2.0/UDP h\n\n");
        assert!(matches!(parse(&buf), Err(ParseError::HeaderSyntax(_))));
        let mut buf = minimal("OPTIONS sip:x@y SIP/2.0", "Subject: caf\u{e9}\n");
        let at = buf.iter().position(|&b| b == 0xc3).unwrap();
        buf[at] = 0xff;
        assert!(matches!(parse(&buf), Err(ParseError::StartLine(_))));
        // Non-UTF-8 in the body is fine.
        let mut buf = minimal("OPTIONS sip:x@y SIP/2.0", "Content-Length: 2\n");
        buf.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(request(&buf).body, [0xff, 0xfe]);
    }

    /// RFC 4475 "quotbal", "badaspec", "baddn", "regbadct", "mismatch01/02", "multi01".
    #[test]
    fn rfc4475_bad_header_values() {
        let r = request(&minimal("OPTIONS sip:x@y SIP/2.0", "Content-Length: 0\n"));
        let with = |name: &str, value: &str| {
            let mut r = r.clone();
            r.headers.set(name, value);
            r
        };
        let quotbal = with("To", "\"Mr. J. User <sip:j.user@example.com>");
        assert!(matches!(
            quotbal.headers.to(),
            Err(ParseError::BadHeader("To", _))
        ));
        let badaspec = with("To", "\"Watson, Thomas\" < sip:t.watson@example.org >");
        assert!(matches!(
            badaspec.check_mandatory(),
            Err(ParseError::BadHeader("To", _))
        ));
        let baddn = with("From", "Bell, Alexander <sip:a.g.bell@example.com>;tag=43");
        assert!(matches!(
            baddn.check_mandatory(),
            Err(ParseError::BadHeader("From", _))
        ));
        let regbadct = with(
            "Contact",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        );
        assert!(matches!(
            regbadct.headers.contacts(),
            Err(ParseError::BadHeader("Contact", _))
        ));
        // The same URI in <> is fine (RFC 4475 regescrt).
        let regescrt = with(
            "Contact",
            "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
        );
        assert_eq!(
            regescrt.headers.contacts().unwrap()[0]
                .uri
                .headers
                .as_deref(),
            Some("Route=%3Csip:sip.example.com%3E")
        );
        // The minimal request says CSeq INVITE but is an OPTIONS.
        assert_eq!(r.check_mandatory(), Err(ParseError::CSeqMethodMismatch));
        let mismatch02 = request(&minimal("NEWMETHOD sip:x@y SIP/2.0", "Content-Length: 0\n"));
        assert_eq!(
            mismatch02.check_mandatory(),
            Err(ParseError::CSeqMethodMismatch)
        );

        let multi01 = request(&crlf(
            "INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
l: 0

",
        ));
        assert_eq!(
            multi01.check_mandatory(),
            Err(ParseError::BadHeader("From", "multiple values".into()))
        );
    }

    // ---- frame() -------------------------------------------------------------------------------

    #[test]
    fn frame_stream_cases() {
        assert_eq!(frame(b""), Frame::Incomplete);
        assert_eq!(frame(b"\r\n\r\n"), Frame::KeepAlive(4));
        assert_eq!(frame(b"\r\n"), Frame::KeepAlive(2));
        let msg = basic_invite();
        let head_len = msg.len() - SDP.len();
        // Incomplete headers, then headers complete but body short.
        assert_eq!(frame(&msg[..40]), Frame::Incomplete);
        assert_eq!(frame(&msg[..head_len - 1]), Frame::Incomplete);
        assert_eq!(frame(&msg[..head_len + 10]), Frame::Incomplete);
        assert_eq!(frame(&msg), Frame::Complete(msg.len()));
        // Leading keep-alives are part of the frame; trailing bytes belong to the next message.
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&msg);
        stream.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\n");
        assert_eq!(frame(&stream), Frame::Complete(msg.len() + 4));
        assert_eq!(
            parse(&stream[..msg.len() + 4]).unwrap(),
            parse(&msg).unwrap()
        );

        let dbl = crlf(DBLREQ);
        let Frame::Complete(first) = frame(&dbl) else {
            panic!("first dblreq message should frame");
        };
        assert!(dbl[first..].starts_with(b"\r\nINVITE"));
        // The INVITE's Content-Length (4) leaves its final LF for the next frame.
        assert_eq!(frame(&dbl[first..]), Frame::Complete(dbl.len() - first - 1));
        assert_eq!(request(&dbl[first..]).body, b"v=0\r");

        // Bare LF framing.
        assert_eq!(
            frame(b"OPTIONS sip:x SIP/2.0\nl: 2\n\nabNEXT"),
            Frame::Complete(30)
        );
    }

    #[test]
    fn frame_invalid_cases() {
        assert_eq!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n"),
            Frame::Invalid(ParseError::Missing("Content-Length"))
        );
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n"),
            Frame::Invalid(ParseError::ContentLength(_))
        ));
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 999999999999\r\n\r\n"),
            Frame::Invalid(ParseError::ContentLength(_))
        ));
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nSubject: \xff\r\nl: 0\r\n\r\n"),
            Frame::Invalid(ParseError::StartLine(_))
        ));
        // Binary garbage is rejected at once; a UTF-8 character cut in half is only incomplete.
        assert!(matches!(
            frame(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Frame::Invalid(ParseError::StartLine(_))
        ));
        assert_eq!(frame(b"SIP/2.0 200 \xd0"), Frame::Incomplete);
        let mut huge = b"OPTIONS sip:x SIP/2.0\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_LEN + 100, b'a');
        assert!(matches!(
            frame(&huge),
            Frame::Invalid(ParseError::HeaderSyntax(_))
        ));
        huge.extend_from_slice(b"\r\nl: 0\r\n\r\n");
        assert!(matches!(
            frame(&huge),
            Frame::Invalid(ParseError::HeaderSyntax(_))
        ));
    }

    // ---- robustness ----------------------------------------------------------------------------

    /// Calls everything a caller might call on a parsed message; must never panic, and whatever
    /// parses must print back into something that parses.
    fn exercise(msg: &SipMessage) {
        let h = msg.headers();
        if let Ok(vias) = h.vias() {
            for via in vias {
                assert_eq!(Via::parse(&via.to_string()).as_ref(), Ok(&via));
                let _ = via.branch();
            }
        }
        let _ = h.top_via();
        for addr in [h.from(), h.to()].into_iter().flatten() {
            assert_eq!(NameAddr::parse(&addr.to_string()).as_ref(), Ok(&addr));
            let _ = addr.tag();
        }
        for list in [h.contacts(), h.routes(), h.record_routes()] {
            for addr in list.into_iter().flatten() {
                assert_eq!(NameAddr::parse(&addr.to_string()).as_ref(), Ok(&addr));
            }
        }
        let _ = (
            h.call_id(),
            h.max_forwards(),
            h.content_type(),
            h.contact_is_wildcard(),
        );
        if let Ok(cseq) = h.cseq() {
            assert_eq!(CSeq::parse(&cseq.to_string()).as_ref(), Ok(&cseq));
        }
        match msg {
            SipMessage::Request(r) => {
                if let Err(e) = r.check_mandatory() {
                    assert!(!e.to_string().contains(['\r', '\n']));
                }
                assert_eq!(Uri::parse(&r.uri.to_string()).as_ref(), Ok(&r.uri));
                let _ = Response::for_request(r, 400, "Bad").to_bytes();
            }
            SipMessage::Response(_) => {}
        }
        let printed = msg.to_bytes();
        let again = parse(&printed).unwrap_or_else(|e| panic!("reprint of {msg:?} fails: {e:?}"));
        let names = |m: &SipMessage| -> Vec<String> {
            m.headers()
                .0
                .iter()
                .filter(|h| !h.name.eq_ignore_ascii_case("Content-Length"))
                .map(|h| h.name.clone())
                .collect()
        };
        assert_eq!(names(&again), names(msg));
        match (msg, &again) {
            (SipMessage::Request(a), SipMessage::Request(b)) => {
                assert_eq!((&a.method, &a.uri, &a.body), (&b.method, &b.uri, &b.body));
            }
            (SipMessage::Response(a), SipMessage::Response(b)) => {
                assert_eq!((a.status, &a.body), (b.status, &b.body));
            }
            _ => panic!("reprint changed the message kind"),
        }
    }

    fn try_all(buf: &[u8]) {
        match parse(buf) {
            Ok(msg) => exercise(&msg),
            Err(e) => assert!(!e.to_string().contains(['\r', '\n'])),
        }
        if let Frame::Complete(len) | Frame::KeepAlive(len) = frame(buf) {
            assert!(len <= buf.len());
        }
    }

    fn fuzz_corpus() -> Vec<Vec<u8>> {
        vec![
            basic_invite(),
            crlf(DBLREQ),
            minimal("OPTIONS sip:x@[::1]:5060;lr SIP/2.0", "Contact: \"a\\\"b\" <sip:c@d>;q=1, <sips:e@f?x=y>\nl: 0\n"),
            crlf("SIP/2.0 180 Ringing\nv: SIP/2.0/UDP [2001:db8::1]:5060 ; branch = z9hG4bK1 ; rport=5\nf: \"A\" <sip:a@b>;tag=1\nt: sip:b@c;tag=2\ni: x\nCSeq: 1 INVITE\nRecord-Route: <sip:p;lr>,<sip:q;lr>\nl: 3\n\nabc"),
            b"REGISTER tel:+1234;x=y SIP/2.0\nVia: SIP/2.0/TCP h\n ;branch=z9hG4bK2\nTo: <tel:+1234>\nContact: *\nContent-Length: 0\n\n".to_vec(),
        ]
    }

    #[test]
    fn fuzz_prefixes_and_single_byte_mutations() {
        for msg in fuzz_corpus() {
            for len in 0..=msg.len() {
                try_all(&msg[..len]);
            }
            for pos in 0..msg.len() {
                for byte in [
                    0x00, b':', b' ', b'\n', b'\r', 0xff, b'"', b'<', b'>', b',', b';', b'[',
                    b'\\', 0xc3,
                ] {
                    let mut mutated = msg.clone();
                    mutated[pos] = byte;
                    try_all(&mutated);
                }
            }
        }
    }

    #[test]
    fn fuzz_random_multi_byte_mutations() {
        // Deterministic xorshift so failures reproduce.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const INTERESTING: &[u8] = b"\r\n\t :;,=<>\"\\[]@/?%0123456789abcSIP\xff\xc3\xa9\x00";
        for msg in fuzz_corpus() {
            for _ in 0..2000 {
                let mut mutated = msg.clone();
                for _ in 0..1 + next() % 6 {
                    let pos = (next() % mutated.len() as u64) as usize;
                    let byte = INTERESTING[(next() % INTERESTING.len() as u64) as usize];
                    match next() % 3 {
                        0 => mutated[pos] = byte,
                        1 => mutated.insert(pos, byte),
                        _ => {
                            mutated.remove(pos);
                        }
                    }
                    if mutated.is_empty() {
                        mutated.push(byte);
                    }
                }
                try_all(&mutated);
            }
        }
    }
}
