//! Turns the parameters of a `/verba/api` request into a typed [`VerbaRequest`], or the
//! [`VerbaError`] that says what is wrong with them.
//!
//! Owns: the parameter names (case-sensitive, as Verba spells them), the value rules (no empty
//! values, at most [`MAX_VALUE_CHARS`] characters, no control characters, identifiers without
//! surrounding white space), the call-selector rules of seed 04, and the `SearchCalls` time
//! window. Parameters it does not know are ignored (Verba clients send more, e.g.
//! `returnMetadata`, `type`).
//! Must not: read a clock, check an API key or token against configuration, or look anything
//! up: the handler does, with the typed request. Whatever gets past [`parse`] is well-formed,
//! so nothing downstream re-checks form.

use std::fmt;
use std::time::UNIX_EPOCH;

use super::codes::{VerbaError, FORMAT_NOT_AVAILABLE};
use crate::store::model::{
    CallQuery, CallStatus, MuteChannels, RecordingFormat, SearchQuery, UnixMs,
};

/// The longest value accepted for any parameter, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// `SearchCalls`' page size when `pagelen` is not given.
pub const DEFAULT_PAGE_LEN: u32 = 100;
/// The largest `pagelen`.
pub const MAX_PAGE_LEN: u32 = 1000;

/// A well-formed request: what to do, and who asks.
#[derive(Clone, PartialEq, Eq)]
pub struct VerbaRequest {
    /// The action with its own parameters.
    pub action: Action,
    /// `apiKey`, non-empty (its validity is the handler's to check).
    pub api_key: String,
    /// `token`; an empty `token=` counts as none.
    pub token: Option<String>,
    /// `responseType`, XML when not given.
    pub response_type: ResponseType,
}

/// The format of the answer (`responseType`, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseType {
    /// For applications; the default.
    #[default]
    Xml,
    /// A page a browser shows.
    Html,
    /// `name=value` lines.
    Text,
}

/// An action with its parameters.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// Asks for a session token. The credentials normally come in the `Authorization: Basic`
    /// header (the handler reads it); `userName` / `password` parameters are accepted too.
    RequestToken {
        user: Option<String>,
        password: Option<String>,
    },
    /// Deletes the call's recording, or marks an ongoing one for deletion.
    DeleteCall(CallQuery),
    /// Keeps the on-demand call's recording.
    KeepCall(CallQuery),
    /// Answers the call's callID.
    GetCallID(CallQuery),
    /// Answers the URL of the call's media (its `GetMediaEncoded` request).
    GetCallURL(CallQuery),
    /// Mutes (pauses) channels of the call's recording, or unmutes it (`mute=0`).
    MuteRecording {
        query: CallQuery,
        mute: MuteChannels,
    },
    /// Lists the calls that started in a time window.
    SearchCalls(SearchQuery),
    /// Downloads the call's recording. `format`, lower-cased, is `wav`, `opus` or `ogg` when
    /// given; compare it to the stored format with [`media_format_matches`].
    GetMediaEncoded {
        query: CallQuery,
        format: Option<String>,
    },
}

/// The action names callbridge answers, as Verba spells them.
pub const ACTIONS: [&str; 8] = [
    "RequestToken",
    "DeleteCall",
    "KeepCall",
    "GetCallID",
    "GetCallURL",
    "MuteRecording",
    "SearchCalls",
    "GetMediaEncoded",
];

/// The action name used in a response whose request named no known action.
pub const UNKNOWN_ACTION_NAME: &str = "Unknown";

/// Parses a request's parameters: the query string's pairs followed by those of an
/// `application/x-www-form-urlencoded` body, already percent-decoded. The first occurrence of
/// a name wins (so the query string wins over the body).
///
/// Checked in this order: `action` (-2), `apiKey` (-10), `responseType` (-3), `token` (-11
/// when too long or with control characters; whether it is valid is the handler's to check),
/// then the action's own parameters (-3 invalid, -4 missing, -54 an unknown `format`).
pub fn parse(params: &[(String, String)]) -> Result<VerbaRequest, VerbaError> {
    let p = Params(params);
    let name = match p.get("action") {
        None | Some("") => return Err(VerbaError::missing_action()),
        Some(name) => name,
    };
    let Some(name) = known_action(name) else {
        return Err(VerbaError::unknown_action(&shortened(name)));
    };
    let api_key = match p.text("apiKey") {
        Ok(Some(key)) => key.to_string(),
        Ok(None) | Err(_) => return Err(VerbaError::invalid_api_key()),
    };
    let response_type = match p.optional("responseType")? {
        None => ResponseType::default(),
        Some(word) => ResponseType::parse(word).ok_or_else(|| {
            VerbaError::invalid_parameter("responseType", "must be XML, HTML or TEXT")
        })?,
    };
    // A token that cannot be one is an invalid token (-11), as a malformed key is -10.
    let token = match p.optional("token") {
        Ok(token) => token.map(str::to_string),
        Err(_) => return Err(VerbaError::invalid_token()),
    };
    let action = parse_action(name, &p)?;
    Ok(VerbaRequest {
        action,
        api_key,
        token,
        response_type,
    })
}

/// The action name to put in a response to these parameters, also when [`parse`] failed: the
/// name given if callbridge knows it, [`UNKNOWN_ACTION_NAME`] otherwise.
pub fn action_name(params: &[(String, String)]) -> &'static str {
    Params(params)
        .get("action")
        .and_then(known_action)
        .unwrap_or(UNKNOWN_ACTION_NAME)
}

/// The response type to answer these parameters in, also when [`parse`] failed: the one asked
/// for, or XML when none or an unknown one was.
pub fn response_type_or_xml(params: &[(String, String)]) -> ResponseType {
    Params(params)
        .get("responseType")
        .and_then(ResponseType::parse)
        .unwrap_or_default()
}

/// Whether a `GetMediaEncoded` `format` (as parsed: `wav`, `opus` or `ogg`) names the format a
/// recording is stored in: `wav` any WAV, `opus` and `ogg` Ogg Opus.
pub fn media_format_matches(requested: &str, stored: RecordingFormat) -> bool {
    match requested {
        "wav" => stored.extension() == "wav",
        "opus" | "ogg" => stored == RecordingFormat::OggOpus,
        _ => false,
    }
}

impl ResponseType {
    /// `XML`, `HTML` or `TEXT` in any case.
    pub fn parse(word: &str) -> Option<ResponseType> {
        [
            ("XML", ResponseType::Xml),
            ("HTML", ResponseType::Html),
            ("TEXT", ResponseType::Text),
        ]
        .into_iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map(|(_, response_type)| response_type)
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseType::Xml => "application/xml; charset=utf-8",
            ResponseType::Html => "text/html; charset=utf-8",
            ResponseType::Text => "text/plain; charset=utf-8",
        }
    }
}

impl Action {
    /// The action's name as Verba spells it (one of [`ACTIONS`]).
    pub fn name(&self) -> &'static str {
        match self {
            Action::RequestToken { .. } => "RequestToken",
            Action::DeleteCall(_) => "DeleteCall",
            Action::KeepCall(_) => "KeepCall",
            Action::GetCallID(_) => "GetCallID",
            Action::GetCallURL(_) => "GetCallURL",
            Action::MuteRecording { .. } => "MuteRecording",
            Action::SearchCalls(_) => "SearchCalls",
            Action::GetMediaEncoded { .. } => "GetMediaEncoded",
        }
    }
}

// Hand-written so that a logged request never shows a password, token or whole API key.
impl fmt::Debug for VerbaRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key_prefix: String = self.api_key.chars().take(8).collect();
        f.debug_struct("VerbaRequest")
            .field("action", &self.action)
            .field("api_key", &format_args!("{key_prefix}…"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("response_type", &self.response_type)
            .finish()
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = f.debug_tuple(self.name());
        match self {
            Action::RequestToken { user, password } => t
                .field(user)
                .field(&password.as_ref().map(|_| "<redacted>")),
            Action::DeleteCall(q)
            | Action::KeepCall(q)
            | Action::GetCallID(q)
            | Action::GetCallURL(q) => t.field(q),
            Action::MuteRecording { query, mute } => t.field(query).field(mute),
            Action::SearchCalls(q) => t.field(q),
            Action::GetMediaEncoded { query, format } => t.field(query).field(format),
        };
        t.finish()
    }
}

/// The action's own parameters.
fn parse_action(name: &str, p: &Params) -> Result<Action, VerbaError> {
    Ok(match name {
        "RequestToken" => Action::RequestToken {
            user: p.text("userName")?.map(str::to_string),
            password: p.text("password")?.map(str::to_string),
        },
        "DeleteCall" => Action::DeleteCall(call_query(p, false)?),
        "KeepCall" => Action::KeepCall(call_query(p, false)?),
        "GetCallID" => Action::GetCallID(call_query(p, false)?),
        "GetCallURL" => Action::GetCallURL(call_query(p, false)?),
        "MuteRecording" => Action::MuteRecording {
            query: call_query(p, false)?,
            mute: mute(p)?,
        },
        "SearchCalls" => Action::SearchCalls(search_query(p)?),
        "GetMediaEncoded" => Action::GetMediaEncoded {
            query: call_query(p, true)?,
            format: media_format(p)?,
        },
        other => return Err(VerbaError::unknown_action(other)),
    })
}

/// The call selectors of seed 04 (and `cid`, `GetMediaEncoded`'s alias of `callID`).
fn call_query(p: &Params, cid_alias: bool) -> Result<CallQuery, VerbaError> {
    let mut call_id = p.identifier("callID")?;
    if cid_alias {
        if let Some(cid) = p.identifier("cid")? {
            if call_id.is_some_and(|id| id != cid) {
                return Err(VerbaError::invalid_parameter(
                    "cid",
                    "differs from callID (cid is its alias)",
                ));
            }
            call_id = Some(cid);
        }
    }
    let query = CallQuery {
        call_id: call_id.map(str::to_string),
        platform_call_id: p.identifier("platformCallID")?.map(str::to_string),
        native_id: p.identifier("nativeID")?.map(str::to_string),
        meeting_id: p.identifier("meetingID")?.map(str::to_string),
        extension: p.identifier("extension")?.map(str::to_string),
        statuses: Vec::new(),
    };
    let selected = query.call_id.is_some()
        || query.platform_call_id.is_some()
        || query.native_id.is_some()
        || query.meeting_id.is_some()
        || query.extension.is_some();
    if !selected {
        let names = if cid_alias {
            "callID (or cid), platformCallID, nativeID, meetingID or extension"
        } else {
            "callID, platformCallID, nativeID, meetingID or extension"
        };
        return Err(VerbaError::missing_parameter(names));
    }
    let statuses = match (&query.extension, p.text("status")?) {
        (Some(_), Some(list)) => statuses(list)?,
        (Some(_), None) => return Err(VerbaError::missing_parameter("status")),
        (None, Some(_)) => {
            return Err(VerbaError::invalid_parameter(
                "status",
                "only allowed with extension",
            ))
        }
        (None, None) => Vec::new(),
    };
    Ok(CallQuery { statuses, ..query })
}

/// `status`: comma-separated `ongoing` / `next` / `last` (any case, trimmed), each once, tried
/// in the order given.
fn statuses(list: &str) -> Result<Vec<CallStatus>, VerbaError> {
    let mut statuses = Vec::new();
    for item in list.split(',') {
        let word = item.trim().to_ascii_lowercase();
        if word.is_empty() {
            return Err(VerbaError::invalid_parameter(
                "status",
                "an empty item in the list",
            ));
        }
        let status: CallStatus = word.parse().map_err(|_| {
            VerbaError::invalid_parameter(
                "status",
                format_args!("{:?} is not ongoing, next or last", item.trim()),
            )
        })?;
        if statuses.contains(&status) {
            return Err(VerbaError::invalid_parameter(
                "status",
                format_args!("{status} is given twice"),
            ));
        }
        statuses.push(status);
    }
    Ok(statuses)
}

/// `mute`, mandatory: 0 unmute, 1 the party (left), 2 what callbridge sends (right), 3 both.
fn mute(p: &Params) -> Result<MuteChannels, VerbaError> {
    match p.text("mute")? {
        None => Err(VerbaError::missing_parameter("mute")),
        Some("0") => Ok(MuteChannels::NONE),
        Some("1") => Ok(MuteChannels::LEFT),
        Some("2") => Ok(MuteChannels::RIGHT),
        Some("3") => Ok(MuteChannels::BOTH),
        Some(_) => Err(VerbaError::invalid_parameter(
            "mute",
            "must be 0 (unmute), 1 (the party), 2 (what callbridge sends) or 3 (both)",
        )),
    }
}

/// `SearchCalls`: `start` and `end` (GMT, mandatory, start before end), `extension`,
/// `pagelen`, `page`.
fn search_query(p: &Params) -> Result<SearchQuery, VerbaError> {
    let from_ms = p
        .gmt_time("start")?
        .ok_or_else(|| VerbaError::missing_parameter("start"))?;
    let to_ms = p
        .gmt_time("end")?
        .ok_or_else(|| VerbaError::missing_parameter("end"))?;
    if from_ms >= to_ms {
        return Err(VerbaError::invalid_parameter("end", "must be after start"));
    }
    let page_len = p.number("pagelen")?.unwrap_or(DEFAULT_PAGE_LEN);
    if !(1..=MAX_PAGE_LEN).contains(&page_len) {
        return Err(VerbaError::invalid_parameter(
            "pagelen",
            format_args!("must be 1 to {MAX_PAGE_LEN}"),
        ));
    }
    Ok(SearchQuery {
        from_ms,
        to_ms,
        number: p.identifier("extension")?.map(str::to_string),
        page_len,
        page: p.number("page")?.unwrap_or(0),
    })
}

/// `format`, lower-cased: `wav`, `opus` or `ogg`; anything else is not available (-54).
fn media_format(p: &Params) -> Result<Option<String>, VerbaError> {
    let Some(format) = p.text("format")? else {
        return Ok(None);
    };
    let format = format.to_ascii_lowercase();
    match format.as_str() {
        "wav" | "opus" | "ogg" => Ok(Some(format)),
        _ => Err(VerbaError::new(
            FORMAT_NOT_AVAILABLE,
            format!("Media format {format} is not available: recordings are wav or opus (ogg)."),
        )),
    }
}

/// `YYYY-MM-DD hh:mm[:ss]` (or with `T` between date and time), GMT, from 1970 on.
fn parse_gmt(value: &str) -> Option<UnixMs> {
    let b = value.as_bytes();
    let digits: &[usize] = match b.len() {
        16 => &[0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15],
        19 => &[0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18],
        _ => return None,
    };
    let shaped = digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b' ' || b[10] == b'T')
        && b[13] == b':'
        && (b.len() == 16 || b[16] == b':');
    if !shaped {
        return None;
    }
    let full = if b.len() == 16 {
        format!("{value}:00")
    } else {
        value.to_string()
    };
    let time = humantime::parse_rfc3339_weak(&full).ok()?;
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    UnixMs::try_from(since_epoch.as_millis()).ok()
}

/// The action name as given if callbridge knows it.
fn known_action(name: &str) -> Option<&'static str> {
    ACTIONS.iter().copied().find(|known| *known == name)
}

/// An unknown action name, cut to a length fit for a message.
fn shortened(name: &str) -> String {
    const SHOWN: usize = 64;
    if name.chars().count() <= SHOWN {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(SHOWN).collect();
    cut.push('…');
    cut
}

/// The request's parameters, first occurrence first.
struct Params<'a>(&'a [(String, String)]);

impl<'a> Params<'a> {
    /// The first value of `name`, unchecked.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A value under the common rules: not empty, not too long, no control characters.
    fn text(&self, name: &str) -> Result<Option<&'a str>, VerbaError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err(VerbaError::invalid_parameter(name, "empty"));
        }
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(VerbaError::invalid_parameter(
                name,
                format_args!("longer than {MAX_VALUE_CHARS} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(VerbaError::invalid_parameter(
                name,
                "contains control characters",
            ));
        }
        Ok(Some(value))
    }

    /// An optional setting: an empty value counts as not given.
    fn optional(&self, name: &str) -> Result<Option<&'a str>, VerbaError> {
        match self.get(name) {
            Some("") => Ok(None),
            _ => self.text(name),
        }
    }

    /// An id or a number compared with stored ones: [`Self::text`] without white space around
    /// it (a `+` sent unencoded arrives as a space, and `+49...` would silently not match).
    fn identifier(&self, name: &str) -> Result<Option<&'a str>, VerbaError> {
        let value = self.text(name)?;
        if value.is_some_and(|v| v.trim() != v) {
            return Err(VerbaError::invalid_parameter(
                name,
                "white space at its start or end (send a + as %2B)",
            ));
        }
        Ok(value)
    }

    /// A decimal number: digits only.
    fn number(&self, name: &str) -> Result<Option<u32>, VerbaError> {
        let Some(value) = self.text(name)? else {
            return Ok(None);
        };
        let parsed = value
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| value.parse::<u32>().ok())
            .flatten();
        match parsed {
            Some(n) => Ok(Some(n)),
            None => Err(VerbaError::invalid_parameter(
                name,
                "not a non-negative whole number",
            )),
        }
    }

    /// A time as `YYYY-MM-DD hh:mm[:ss]` in GMT.
    fn gmt_time(&self, name: &str) -> Result<Option<UnixMs>, VerbaError> {
        let Some(value) = self.text(name)? else {
            return Ok(None);
        };
        match parse_gmt(value) {
            Some(ms) => Ok(Some(ms)),
            None => Err(VerbaError::invalid_parameter(
                name,
                format_args!("{value:?} is not YYYY-MM-DD hh:mm[:ss] (GMT, from 1970)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
