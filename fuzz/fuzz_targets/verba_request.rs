//! Recording API requests (`GET|POST /verba/api`): the query string and form body decoded as
//! the handler decodes them, parsed into a typed request, and the error documents that can
//! quote the client's own values rendered in the response type asked for. Oracles: an XML
//! document is well-formed; a request's `Debug` (what gets logged) never shows a whole API key.
//!
//! Input: the query string, a newline, the form body.
#![no_main]

use callbridge::api::verba::request::{action_name, response_type_or_xml};
use callbridge::api::verba::{parse, Action, ResponseType, VerbaError, VerbaResponse};
use libfuzzer_sys::fuzz_target;
use quick_xml::events::Event;
use quick_xml::Reader;

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let mut params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    if !body.is_empty() {
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            Ok(form) => params.extend(form),
            Err(_) => return,
        }
    }
    let request = match parse(&params) {
        Ok(request) => request,
        Err(error) => {
            let response = VerbaResponse::error(action_name(&params), error);
            render(&response, response_type_or_xml(&params));
            return;
        }
    };
    let key = &request.api_key;
    if key.chars().count() >= 12
        && !params
            .iter()
            .any(|(n, v)| n != "apiKey" && v.contains(key.as_str()))
    {
        assert!(
            !format!("{request:?}").contains(key.as_str()),
            "the API key is logged"
        );
    }
    let action = request.action.name();
    let query = match &request.action {
        Action::DeleteCall(q)
        | Action::KeepCall(q)
        | Action::GetCallID(q)
        | Action::GetCallURL(q) => Some(q),
        Action::MuteRecording { query, .. } => Some(query),
        Action::GetMediaEncoded { query, format } => {
            if let Some(format) = format {
                let error = VerbaError::format_not_available(format, "wav");
                render(&VerbaResponse::error(action, error), request.response_type);
            }
            Some(query)
        }
        Action::RequestToken { .. } | Action::SearchCalls(_) => None,
    };
    if let Some(query) = query {
        for error in [
            VerbaError::call_not_found(query, 2, 1000),
            VerbaError::ambiguous_call(query, 2),
        ] {
            render(&VerbaResponse::error(action, error), request.response_type);
        }
    }
});

/// Renders the document; XML must be well-formed.
fn render(response: &VerbaResponse, response_type: ResponseType) {
    let (_, body) = response.render(response_type);
    if response_type != ResponseType::Xml {
        return;
    }
    let mut reader = Reader::from_str(&body);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("malformed XML ({e}):\n{body}"),
        }
    }
}
