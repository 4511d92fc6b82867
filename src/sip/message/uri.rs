//! Addresses: [`Uri`] (sip:, sips:, tel:), [`NameAddr`] (From, To, Contact, Route, ...) and
//! their parts [`Host`] and [`Param`], parsed from text and printed back.
//!
//! Must not: resolve host names or touch the network, or know which header an address came from
//! beyond naming it in an error. Like the rest of the parser it must never panic, whatever the
//! input.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::lex::{
    excerpt, is_display_char, is_host_byte, is_token_byte, trim_lws, trim_start_lws, Cursor,
};
use super::ParseError;

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
        UriRef::read(s)?.to_owned()
    }

    /// URI parameter by case-insensitive name (see [`find_param`]).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3986 §3.1).
fn is_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
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
        NameAddrRef::read(s)?.to_owned()
    }

    /// Checks `s` as [`NameAddr::parse`] does, with the same errors, without building
    /// anything: how a request's From and To are validated (every request, before the UA).
    pub fn check(s: &str) -> Result<(), ParseError> {
        NameAddrRef::read(s).map(drop)
    }

    /// The user part of the URI of `s`, read in place: what [`NameAddr::parse`]'s
    /// `uri.user` gives, None where the parse fails.
    pub fn user_of(s: &str) -> Option<&str> {
        NameAddrRef::read(s).ok()?.uri.user
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

/// Host part of a URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Domain(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// Domain as-is, V4 dotted, V6 in brackets (`[2001:db8::1]`).
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(name) => f.write_str(name),
            Host::V4(addr) => f.write_str(crate::text::Ipv4Text::new(*addr).as_str()),
            Host::V6(addr) => write!(f, "[{addr}]"),
        }
    }
}

/// `name` or `name=value` parameter (URI params, header params). Names compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// As received; the common names (`tag`, `branch`, `rport`, ...) as a `&'static str` when
    /// received in lower case: no allocation for them in every message parsed.
    pub name: Cow<'static, str>,
    pub value: Option<String>,
}

/// Parameter names every call's messages carry, kept without a copy when received as written.
const COMMON_PARAMS: [&str; 12] = [
    "tag",
    "branch",
    "rport",
    "received",
    "transport",
    "lr",
    "user",
    "maddr",
    "ttl",
    "method",
    "expires",
    "ob",
];

/// A parsed parameter name: a common one borrowed, any other copied (case kept).
fn param_name(name: &str) -> Cow<'static, str> {
    COMMON_PARAMS
        .iter()
        .find(|common| **common == name)
        .map_or_else(
            || Cow::Owned(name.to_string()),
            |common| Cow::Borrowed(*common),
        )
}

/// Finds a parameter by case-insensitive name: None = absent, Some(None) = present without value.
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref())
}

/// A URI read and checked in place: everything [`Uri::parse`] checks, nothing copied.
struct UriRef<'a> {
    /// As received (the owned URI lower-cases it).
    scheme: &'a str,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: HostRef<'a>,
    port: Option<u16>,
    /// `;name[=value]...` or "", checked.
    params: &'a str,
    headers: Option<&'a str>,
}

/// A [`Host`] before its domain name is lower-cased into a `String`.
pub(super) enum HostRef<'a> {
    Domain(&'a str),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl HostRef<'_> {
    pub(super) fn to_owned(&self) -> Host {
        match *self {
            HostRef::Domain(name) => Host::Domain(name.to_ascii_lowercase()),
            HostRef::V4(addr) => Host::V4(addr),
            HostRef::V6(addr) => Host::V6(addr),
        }
    }
}

impl<'a> UriRef<'a> {
    fn read(s: &'a str) -> Result<UriRef<'a>, ParseError> {
        // Whitespace, controls, quotes and angle brackets never occur in a URI; rejecting them here
        // also catches `<sip:...>` as a Request-URI and "sip:a@b ;lr" (RFC 4475 ltgtruri, lwsruri).
        // Bytes first: a non-ASCII byte (rare) sends the scan to the chars, where a C1 control
        // is found; decoding every URI char by char was ~300 instructions a URI.
        let forbidden = |c: char| c.is_control() || matches!(c, ' ' | '<' | '>' | '"');
        let bad = if s.bytes().any(|b| !b.is_ascii() || forbidden(char::from(b))) {
            s.chars().find(|&c| forbidden(c))
        } else {
            None
        };
        if let Some(bad) = bad {
            return Err(ParseError::BadUri(format!(
                "invalid character {bad:?} in {}",
                excerpt(s)
            )));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(ParseError::BadUri(format!("no scheme in {}", excerpt(s))));
        };
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            read_sip_uri(scheme, rest)
        } else if scheme.eq_ignore_ascii_case("tel") {
            read_tel_uri(scheme, rest)
        } else if is_scheme(scheme) {
            // RFC 3986 §3.1: a scheme is a letter followed by letters, digits, '+', '-', '.';
            // anything else is not a URI at all.
            Err(ParseError::UnsupportedScheme(excerpt(
                &scheme.to_ascii_lowercase(),
            )))
        } else {
            Err(ParseError::BadUri(format!("bad scheme in {}", excerpt(s))))
        }
    }

    fn to_owned(&self) -> Result<Uri, ParseError> {
        Ok(Uri {
            scheme: self.scheme.to_ascii_lowercase(),
            user: self.user.map(str::to_string),
            password: self.password.map(str::to_string),
            host: self.host.to_owned(),
            port: self.port,
            params: parse_uri_params(self.params).map_err(ParseError::BadUri)?,
            headers: self.headers.map(str::to_string),
        })
    }
}

/// `[user[:password]@]host[:port][;params][?headers]` after "sip:" / "sips:".
fn read_sip_uri<'a>(scheme: &'a str, rest: &'a str) -> Result<UriRef<'a>, ParseError> {
    let bad = |detail: String| ParseError::BadUri(detail);
    // The user part may contain ';', '?' and ':' (RFC 4475 semiuri, intmeth) but never an
    // unescaped '@', so the first '@' ends the userinfo.
    let (userinfo, hostpart) = match split_once_byte(rest, b'@') {
        Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match split_once_byte(userinfo, b':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return Err(bad("empty user part".to_string()));
            }
            (Some(user), password)
        }
    };
    let (before_headers, headers) = match split_once_byte(hostpart, b'?') {
        Some((before, headers)) => (before, Some(headers)),
        None => (hostpart, None),
    };
    let (hostport, params) = match find_byte(before_headers, b';') {
        Some(semi) => before_headers.split_at(semi),
        None => (before_headers, ""),
    };
    let (host, port) = read_hostport(hostport).map_err(bad)?;
    check_uri_params(params).map_err(bad)?;
    Ok(UriRef {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// `number[;params]` after "tel:" (RFC 3966); the number goes in `user`.
fn read_tel_uri<'a>(scheme: &'a str, rest: &'a str) -> Result<UriRef<'a>, ParseError> {
    let (number, params) = match find_byte(rest, b';') {
        Some(semi) => rest.split_at(semi),
        None => (rest, ""),
    };
    if number.is_empty() {
        return Err(ParseError::BadUri("empty telephone number".to_string()));
    }
    check_uri_params(params).map_err(ParseError::BadUri)?;
    Ok(UriRef {
        scheme,
        user: Some(number),
        password: None,
        host: HostRef::Domain(""),
        port: None,
        params,
        headers: None,
    })
}

/// `host[:port]` where host may be an IPv6 reference `[...]`.
fn read_hostport(s: &str) -> Result<(HostRef<'_>, Option<u16>), String> {
    let (host, port) = if s.starts_with('[') {
        match find_byte(s, b']') {
            Some(close) => s.split_at(close + 1),
            None => return Err(format!("unterminated IPv6 reference {}", excerpt(s))),
        }
    } else {
        match find_byte(s, b':') {
            Some(colon) => s.split_at(colon),
            None => (s, ""),
        }
    };
    let port = match port.strip_prefix(':') {
        Some(digits) => Some(parse_port(digits)?),
        None if port.is_empty() => None,
        None => return Err(format!("unexpected text after host: {}", excerpt(port))),
    };
    Ok((read_host(host)?, port))
}

/// The first `byte` (ASCII) in `s`: a plain scan of the few bytes of a URI part, where
/// `str::find(char)`'s searcher cost about twice as much (~65 searches a call's setup).
fn find_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().position(|b| b == byte)
}

/// `s` split around its first `byte` (ASCII), as `str::split_once` splits it.
fn split_once_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let at = find_byte(s, byte)?;
    Some((&s[..at], &s[at + 1..]))
}

/// `[v6]`, dotted IPv4 or a domain name (a [`Host`] once its name is lower-cased).
pub(super) fn read_host(s: &str) -> Result<HostRef<'_>, String> {
    if let Some(inner) = s.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
            .map(HostRef::V6)
            .ok_or_else(|| format!("bad IPv6 reference {}", excerpt(s)));
    }
    if let Some(v4) = crate::text::parse_ipv4(s) {
        return Ok(HostRef::V4(v4));
    }
    if s.is_empty() || !s.bytes().all(is_host_byte) {
        return Err(format!("bad host {}", excerpt(s)));
    }
    Ok(HostRef::Domain(s))
}

/// `1*DIGIT` (RFC 3261 §25.1: leading zeros allowed, no sign), at most 65535.
pub(super) fn parse_port(digits: &str) -> Result<u16, String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad port {}", excerpt(digits)));
    }
    // Digits only, so only the range can fail; read without `u16::from_str`'s generality.
    digits
        .bytes()
        .try_fold(0u16, |port, b| {
            port.checked_mul(10)?.checked_add(u16::from(b - b'0'))
        })
        .ok_or_else(|| format!("port out of range {}", excerpt(digits)))
}

/// Checks URI parameters as [`parse_uri_params`] reads them.
fn check_uri_params(s: &str) -> Result<(), String> {
    match s.strip_prefix(';') {
        Some(s)
            if s.split(';')
                .any(|param| param.split('=').next() == Some("")) =>
        {
            Err("empty URI parameter name".to_string())
        }
        _ => Ok(()),
    }
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
                name: param_name(name),
                value,
            })
        })
        .collect()
}

/// Checks header parameters as [`parse_header_params`] reads them.
pub(super) fn check_header_params(s: &str) -> Result<(), String> {
    let mut c = Cursor::new(s);
    while let Some(param) = next_param(&mut c) {
        param?;
    }
    Ok(())
}

/// Header parameters `*( SEMI name [EQUAL value] )` with LWS allowed around `;` and `=`.
/// Values are a token/host or a quoted string (kept with its quotes).
pub(super) fn parse_header_params(s: &str) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    let mut c = Cursor::new(s);
    while let Some(param) = next_param(&mut c) {
        let (name, value) = param?;
        params.push(Param {
            name: param_name(name),
            value: value.map(str::to_string),
        });
    }
    Ok(params)
}

/// The next `;name[=value]` of a parameter list, borrowed (a quoted value with its quotes);
/// None at the end of the list.
fn next_param<'a>(c: &mut Cursor<'a>) -> Option<Result<(&'a str, Option<&'a str>), String>> {
    c.skip_lws();
    if c.at_end() {
        return None;
    }
    if !c.eat(b';') {
        return Some(Err(format!("expected ';' before {}", excerpt(c.rest()))));
    }
    c.skip_lws();
    let name = c.take_while(is_token_byte);
    if name.is_empty() {
        return Some(Err(format!(
            "empty parameter name before {}",
            excerpt(c.rest())
        )));
    }
    c.skip_lws();
    if !c.eat(b'=') {
        return Some(Ok((name, None)));
    }
    c.skip_lws();
    let value = if c.peek() == Some(b'"') {
        match c.take_quoted() {
            Some(value) => value,
            None => {
                return Some(Err(format!(
                    "unterminated quoted value for {}",
                    excerpt(name)
                )))
            }
        }
    } else {
        c.take_while(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b',' | b'"'))
    };
    if value.is_empty() {
        return Some(Err(format!("empty value for parameter {}", excerpt(name))));
    }
    Some(Ok((name, Some(value))))
}

/// The first header parameter `name` (any case) in checked `params`: `Some` with its value
/// (None for a parameter without one), `None` when absent — [`find_param`] over
/// [`parse_header_params`]'s result, without building it.
fn find_header_param<'a>(params: &'a str, name: &str) -> Option<Option<&'a str>> {
    let mut c = Cursor::new(params);
    while let Some(param) = next_param(&mut c) {
        match param {
            Ok((found, value)) if found.eq_ignore_ascii_case(name) => return Some(value),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The value of the first header parameter `name` (any case) in checked `params`, when it has
/// one.
pub(super) fn header_param_value<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    find_header_param(params, name).flatten()
}

/// Whether checked `params` hold the header parameter `name` (any case), with or without a
/// value.
pub(super) fn header_param_present(params: &str, name: &str) -> bool {
    find_header_param(params, name).is_some()
}

/// The `tag` header parameter of a name-addr or addr-spec value (To, From), read without
/// parsing the URI or copying anything: for a value that [`NameAddr::parse`] accepts, what
/// its [`NameAddr::tag`] gives. Every request has its To tag looked at several times on its
/// way (transaction key, overload class, dialog match); this is what those looks cost.
pub(super) fn name_addr_tag(s: &str) -> Option<&str> {
    find_header_param(header_params_part(s)?, "tag").flatten()
}

/// Where [`NameAddr::parse`] finds the header parameters of `s`: after the `>` of a
/// name-addr, after the URI of an addr-spec (its first ';'); None where it fails first.
fn header_params_part(s: &str) -> Option<&str> {
    let s = trim_lws(s);
    let angle = if s.starts_with('"') {
        let quoted = Cursor::new(s).take_quoted()?;
        trim_start_lws(&s[quoted.len()..])
    } else {
        match s.find(['<', ';', '"']) {
            Some(lt) if s[lt..].starts_with('<') => &s[lt..],
            _ => return Some(s.find(';').map_or("", |semi| &s[semi..])),
        }
    };
    if !angle.starts_with('<') {
        return None;
    }
    let close = angle.find('>')?;
    Some(&angle[close + 1..])
}

/// A name-addr or addr-spec read and checked in place: everything [`NameAddr::parse`]
/// checks, nothing copied.
struct NameAddrRef<'a> {
    display: Option<DisplayRef<'a>>,
    uri: UriRef<'a>,
    /// The header parameters, checked.
    params: &'a str,
}

/// A display name as written: quoted (with its quotes and escapes) or a run of tokens.
enum DisplayRef<'a> {
    Quoted(&'a str),
    Plain(&'a str),
}

impl<'a> NameAddrRef<'a> {
    fn read(s: &'a str) -> Result<NameAddrRef<'a>, ParseError> {
        let s = trim_lws(s);
        if s.is_empty() {
            return Err(bad_name_addr("empty value".to_string()));
        }
        if s.starts_with('"') {
            let Some(quoted) = Cursor::new(s).take_quoted() else {
                return Err(bad_name_addr(
                    "unterminated quoted display name".to_string(),
                ));
            };
            let rest = trim_start_lws(&s[quoted.len()..]);
            if !rest.starts_with('<') {
                return Err(bad_name_addr("expected '<' after display name".to_string()));
            }
            return read_angle_addr(Some(DisplayRef::Quoted(quoted)), rest);
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
                let display = (!display.is_empty()).then_some(DisplayRef::Plain(display));
                read_angle_addr(display, &s[lt..])
            }
            _ => read_addr_spec(s),
        }
    }

    fn to_owned(&self) -> Result<NameAddr, ParseError> {
        let display = match self.display {
            None => None,
            Some(DisplayRef::Plain(name)) => Some(name.to_string()),
            // Read by `take_quoted`, so terminated: unquoting cannot fail.
            Some(DisplayRef::Quoted(quoted)) => unquote_prefix(quoted).map(|(name, _)| name),
        };
        Ok(NameAddr {
            display,
            uri: self.uri.to_owned()?,
            params: parse_header_params(self.params).map_err(bad_name_addr)?,
        })
    }
}

/// `<uri>` followed by header params; `s` starts with '<'.
fn read_angle_addr<'a>(
    display: Option<DisplayRef<'a>>,
    s: &'a str,
) -> Result<NameAddrRef<'a>, ParseError> {
    let Some(close) = s.find('>') else {
        return Err(bad_name_addr("missing '>'".to_string()));
    };
    let uri = UriRef::read(&s[1..close])?;
    let params = &s[close + 1..];
    check_header_params(params).map_err(bad_name_addr)?;
    Ok(NameAddrRef {
        display,
        uri,
        params,
    })
}

/// addr-spec without <>: the URI ends at the first ';' and the rest are header params. Such a URI
/// must not contain '?' (RFC 3261 §20, RFC 4475 regbadct).
fn read_addr_spec(s: &str) -> Result<NameAddrRef<'_>, ParseError> {
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
    let uri = UriRef::read(uri)?;
    check_header_params(params).map_err(bad_name_addr)?;
    Ok(NameAddrRef {
        display: None,
        uri,
        params,
    })
}

fn bad_name_addr(detail: String) -> ParseError {
    ParseError::BadHeader("name-addr", detail)
}

/// Re-labels a value error with the header it came from.
pub(super) fn for_header(e: ParseError, name: &'static str) -> ParseError {
    match e {
        ParseError::BadHeader(_, detail) => ParseError::BadHeader(name, detail),
        ParseError::BadUri(detail) => ParseError::BadHeader(name, format!("bad URI: {detail}")),
        ParseError::UnsupportedScheme(scheme) => {
            ParseError::BadHeader(name, format!("unsupported URI scheme {scheme}"))
        }
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

pub(super) fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for param in params {
        write!(f, ";{}", param.name)?;
        if let Some(value) = &param.value {
            write!(f, "={value}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port is digits only, 0–65535, as `u16::from_str` reads it but without its `+`.
    #[test]
    fn ports_are_read_as_std_reads_them_without_a_sign() {
        for case in [
            "0",
            "5060",
            "65535",
            "65536",
            "99999",
            "",
            "+1",
            "-1",
            "00",
            "05060",
            "0000005060",
            "1a",
            "123456",
            " 1",
        ] {
            // std also reads a '+'; a SIP port has no sign.
            let std = case.parse::<u16>().ok().filter(|_| !case.starts_with('+'));
            assert_eq!(parse_port(case).ok(), std, "{case:?}");
        }
        assert_eq!(
            parse_port("70000"),
            Err("port out of range 70000".to_string())
        );
        assert_eq!(parse_port("70a"), Err("bad port 70a".to_string()));
    }

    /// The tag and the user read in place agree with the full parse on every form a To or
    /// From takes, and find nothing where the parse fails.
    #[test]
    fn the_borrowed_tag_and_user_agree_with_the_parsed_name_addr() {
        let values = [
            "<sip:bob@example.com>;tag=abc",
            "<sip:bob@example.com>",
            "Bob <sip:bob@example.com;transport=udp>;tag=1928301774",
            "\"Bob; <the \\\"boss\\\">\" <sip:bob@example.com>;tag=x;other=y",
            "\"Bob\" <sip:bob@example.com;tag=in-uri>",
            "sip:bob@example.com;tag=addr-spec",
            "sip:bob@example.com",
            "<sip:bob@example.com> ; TAG = spaced ; x",
            "<sip:bob@example.com>;foo;tag=\"quoted\"",
            "<sip:bob@example.com>;tag",
            "<sip:bob@example.com>;tag=a;tag=b",
            "tel:+15551234;tag=t1",
            "<sip:bob@example.com",
            "\"unterminated <sip:bob@example.com>;tag=z",
            "<sip:bob@example.com>;tag=",
            "",
        ];
        for value in values {
            let parsed = NameAddr::parse(value);
            let borrowed = name_addr_tag(value);
            let user = NameAddr::user_of(value);
            match &parsed {
                Ok(name_addr) => {
                    assert_eq!(borrowed, name_addr.tag(), "{value:?}");
                    assert_eq!(user, name_addr.uri.user.as_deref(), "{value:?}");
                }
                Err(_) => {
                    assert_eq!(borrowed, None, "{value:?} does not parse: {parsed:?}");
                    assert_eq!(user, None, "{value:?}");
                }
            }
        }
        assert_eq!(
            NameAddr::user_of("\"A\" <sip:5551001@pbx>;tag=1"),
            Some("5551001")
        );
        assert_eq!(name_addr_tag("<sip:a@b>;tag=abc"), Some("abc"));
        assert_eq!(name_addr_tag("sip:a@b;tag=q"), Some("q"));
    }
    /// The check that validates every request's From and To says what the full parse says,
    /// error for error, on every form and every way of failing.
    #[test]
    fn the_check_agrees_with_the_parse() {
        let values = [
            "<sip:bob@example.com>;tag=abc",
            "Bob <sip:bob@example.com;transport=udp>;tag=1928301774",
            "\"Bob; <the \\\"boss\\\">\" <sip:bob@example.com>;tag=x;other=y",
            "\"Bob\" <sip:bob@example.com;tag=in-uri>",
            "sip:bob@example.com;tag=addr-spec",
            "<sip:bob@example.com> ; TAG = spaced ; x",
            "<sip:bob@example.com>;foo;tag=\"quoted\"",
            "tel:+15551234;tag=t1",
            "<tel:+15551234;phone-context=example.com>",
            "<SIPS:Alice:pw@EXAMPLE.com:5061;LR?subject=x>",
            "<sip:a@[2001:db8::1]:5060>",
            "<sip:a@192.0.2.1:5060;transport=udp>;tag=x",
            "<sip:bob@example.com",
            "\"unterminated <sip:bob@example.com>;tag=z",
            "\"trailing escape\\",
            "\"Bob\" sip:bob@example.com",
            "<sip:bob@example.com>;tag=",
            "<sip:bob@example.com>;=x",
            "<sip:bob@example.com;;lr>",
            "<sip:bob@example.com;=v>",
            "<sip:@example.com>",
            "<sip:a@example.com:99999>",
            "<sip:a@example.com:50x>",
            "<sip:a@[2001:db8::1>",
            "<sip:a@exa mple.com>",
            "<sip:a@exa_mple.com>",
            "<sip:a@>",
            "sip:a@b?x=y",
            "<http://example.com/>",
            "<1sip:a@b>",
            "<no-scheme>",
            "<tel:>",
            "Bob\u{1} <sip:a@b>",
            "B@b <sip:a@b>",
            "",
            "   ",
        ];
        for value in values {
            assert_eq!(
                NameAddr::check(value),
                NameAddr::parse(value).map(drop),
                "{value:?}"
            );
        }
    }

    use crate::sip::message::tests::*;

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

        for unsupported in [
            "http://example.com/",
            "urn:service:sos",
            "soap.beep://192.0.2.103:3002",
        ] {
            assert!(
                matches!(
                    Uri::parse(unsupported),
                    Err(ParseError::UnsupportedScheme(_))
                ),
                "{unsupported}"
            );
        }
        for bad in [
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
}
