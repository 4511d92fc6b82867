//! Unit tests of `request`: every selector and status form, and each rule with its code.

use super::*;
use crate::api::verba::codes::*;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `action` and `apiKey=k1`, then `extra`.
fn ask(action: &str, extra: &[(&str, &str)]) -> Result<VerbaRequest, VerbaError> {
    let mut list = vec![("action", action), ("apiKey", "k1")];
    list.extend_from_slice(extra);
    parse(&pairs(&list))
}

fn code(result: Result<VerbaRequest, VerbaError>) -> i32 {
    match result {
        Ok(request) => panic!("accepted: {request:?}"),
        Err(e) => e.code,
    }
}

fn query(result: Result<VerbaRequest, VerbaError>) -> CallQuery {
    match result.expect("a valid request").action {
        Action::DeleteCall(q)
        | Action::KeepCall(q)
        | Action::GetCallID(q)
        | Action::GetCallURL(q)
        | Action::MuteRecording { query: q, .. }
        | Action::GetMediaEncoded { query: q, .. } => q,
        other => panic!("no call query in {other:?}"),
    }
}

fn search(extra: &[(&str, &str)]) -> Result<SearchQuery, VerbaError> {
    match ask("SearchCalls", extra)?.action {
        Action::SearchCalls(q) => Ok(q),
        other => panic!("not a search: {other:?}"),
    }
}

#[test]
fn the_seed_sample_parses() {
    let request = parse(&pairs(&[
        ("action", "DeleteCall"),
        ("apiKey", "74c8eea0-50c6-40b2-9f3e-252ed501c3c8"),
        ("token", "09835e02-6c10-11e0-bb22-ba324924019b"),
        ("responseType", "XML"),
        ("extension", "8856"),
        ("status", "last"),
    ]))
    .expect("the seed's request");
    assert_eq!(request.api_key, "74c8eea0-50c6-40b2-9f3e-252ed501c3c8");
    assert_eq!(
        request.token.as_deref(),
        Some("09835e02-6c10-11e0-bb22-ba324924019b")
    );
    assert_eq!(request.response_type, ResponseType::Xml);
    let expected = CallQuery {
        extension: Some("8856".into()),
        statuses: vec![CallStatus::Last],
        ..CallQuery::default()
    };
    assert_eq!(request.action, Action::DeleteCall(expected));
}

#[test]
fn each_id_selector_alone_and_together() {
    type Field = fn(&CallQuery) -> &Option<String>;
    let cases: [(&str, Field); 4] = [
        ("callID", |q| &q.call_id),
        ("platformCallID", |q| &q.platform_call_id),
        ("nativeID", |q| &q.native_id),
        ("meetingID", |q| &q.meeting_id),
    ];
    for (name, field) in cases {
        for action in ["DeleteCall", "KeepCall", "GetCallID", "GetCallURL"] {
            let q = query(ask(action, &[(name, "v-1")]));
            assert_eq!(field(&q).as_deref(), Some("v-1"), "{action} {name}");
            assert!(q.statuses.is_empty());
        }
    }
    let q = query(ask(
        "KeepCall",
        &[
            ("callID", "a8343631-9f35-4a3a-83f0-9e81592339fb"),
            ("platformCallID", "71627389"),
            ("nativeID", "TRS26140192"),
            ("meetingID", "WHBFM6DD"),
            ("extension", "8856"),
            ("status", "ongoing"),
        ],
    ));
    assert_eq!(
        q.call_id.as_deref(),
        Some("a8343631-9f35-4a3a-83f0-9e81592339fb")
    );
    assert_eq!(q.platform_call_id.as_deref(), Some("71627389"));
    assert_eq!(q.native_id.as_deref(), Some("TRS26140192"));
    assert_eq!(q.meeting_id.as_deref(), Some("WHBFM6DD"));
    assert_eq!(q.extension.as_deref(), Some("8856"));
    assert_eq!(q.statuses, vec![CallStatus::Ongoing]);
}

#[test]
fn every_status_form() {
    use CallStatus::*;
    let cases: [(&str, &[CallStatus]); 8] = [
        ("ongoing", &[Ongoing]),
        ("next", &[Next]),
        ("last", &[Last]),
        ("ongoing,next", &[Ongoing, Next]),
        ("last, ongoing", &[Last, Ongoing]),
        (" LAST ", &[Last]),
        ("Ongoing , Next , Last", &[Ongoing, Next, Last]),
        ("next,last", &[Next, Last]),
    ];
    for (text, expected) in cases {
        let q = query(ask("GetCallID", &[("extension", "8856"), ("status", text)]));
        assert_eq!(q.statuses, expected, "{text:?}");
    }
}

#[test]
fn status_rules() {
    let ext = ("extension", "8856");
    assert_eq!(code(ask("DeleteCall", &[ext])), MISSING_PARAMETER);
    for bad in [
        "",
        "ongoing,",
        ",last",
        "ongoing,,next",
        "previous",
        "last,last",
    ] {
        assert_eq!(
            code(ask("DeleteCall", &[ext, ("status", bad)])),
            INVALID_PARAMETER,
            "{bad:?}"
        );
    }
    let e = ask("DeleteCall", &[ext, ("status", "last, LAST")]).unwrap_err();
    assert_eq!(
        e.message,
        "Invalid value of parameter status: last is given twice."
    );
    let without = ask("DeleteCall", &[("callID", "c1"), ("status", "last")]);
    assert_eq!(code(without), INVALID_PARAMETER);
}

#[test]
fn selector_rules() {
    assert_eq!(code(ask("DeleteCall", &[])), MISSING_PARAMETER);
    // Names are case-sensitive: `callid` is not `callID`.
    assert_eq!(
        code(ask("DeleteCall", &[("callid", "c1")])),
        MISSING_PARAMETER
    );
    // Without an extension, status alone selects nothing.
    assert_eq!(
        code(ask("DeleteCall", &[("status", "last")])),
        MISSING_PARAMETER
    );
    let long = "9".repeat(MAX_VALUE_CHARS + 1);
    let longest = "é".repeat(MAX_VALUE_CHARS);
    assert!(ask("DeleteCall", &[("callID", &longest)]).is_ok());
    for name in [
        "callID",
        "platformCallID",
        "nativeID",
        "meetingID",
        "extension",
    ] {
        for bad in ["", long.as_str(), " 4912345", "8856 ", "88\n56", "a\u{0}b"] {
            let extra = [(name, bad), ("status", "last")];
            let e = ask("GetCallURL", &extra).unwrap_err();
            assert_eq!(e.code, INVALID_PARAMETER, "{name}={bad:?}: {e}");
        }
    }
    let e = ask(
        "DeleteCall",
        &[("extension", " 4912345"), ("status", "last")],
    );
    assert!(e.unwrap_err().message.contains("%2B"));
}

#[test]
fn cid_is_an_alias_only_for_get_media_encoded() {
    let q = query(ask("GetMediaEncoded", &[("cid", "c1")]));
    assert_eq!(q.call_id.as_deref(), Some("c1"));
    let same = query(ask("GetMediaEncoded", &[("cid", "c1"), ("callID", "c1")]));
    assert_eq!(same.call_id.as_deref(), Some("c1"));
    let differ = ask("GetMediaEncoded", &[("cid", "c1"), ("callID", "c2")]);
    assert_eq!(code(differ), INVALID_PARAMETER);
    assert_eq!(code(ask("DeleteCall", &[("cid", "c1")])), MISSING_PARAMETER);
}

#[test]
fn media_format() {
    let format = |extra: &[(&str, &str)]| match ask("GetMediaEncoded", extra) {
        Ok(VerbaRequest {
            action: Action::GetMediaEncoded { format, .. },
            ..
        }) => Ok(format),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.code),
    };
    assert_eq!(format(&[("cid", "c1")]), Ok(None));
    assert_eq!(
        format(&[("cid", "c1"), ("format", "WAV")]),
        Ok(Some("wav".into()))
    );
    assert_eq!(
        format(&[("cid", "c1"), ("format", "ogg")]),
        Ok(Some("ogg".into()))
    );
    assert_eq!(
        format(&[("cid", "c1"), ("format", "Opus")]),
        Ok(Some("opus".into()))
    );
    assert_eq!(
        format(&[("cid", "c1"), ("format", "mp3")]),
        Err(FORMAT_NOT_AVAILABLE)
    );
    assert_eq!(
        format(&[("cid", "c1"), ("format", "")]),
        Err(INVALID_PARAMETER)
    );

    assert!(media_format_matches("wav", RecordingFormat::WavUlaw));
    assert!(media_format_matches("wav", RecordingFormat::WavPcm16));
    assert!(!media_format_matches("wav", RecordingFormat::OggOpus));
    assert!(media_format_matches("ogg", RecordingFormat::OggOpus));
    assert!(media_format_matches("opus", RecordingFormat::OggOpus));
    assert!(!media_format_matches("opus", RecordingFormat::WavAlaw));
    assert!(!media_format_matches("mp3", RecordingFormat::WavAlaw));
}

#[test]
fn mute_values() {
    let mute = |value: &str| match ask("MuteRecording", &[("callID", "c1"), ("mute", value)]) {
        Ok(VerbaRequest {
            action: Action::MuteRecording { mute, .. },
            ..
        }) => Ok(mute),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.code),
    };
    assert_eq!(mute("0"), Ok(MuteChannels::NONE));
    assert_eq!(mute("1"), Ok(MuteChannels::LEFT));
    assert_eq!(mute("2"), Ok(MuteChannels::RIGHT));
    assert_eq!(mute("3"), Ok(MuteChannels::BOTH));
    for bad in ["4", "-1", "01", " 1", "+1", "one", ""] {
        assert_eq!(mute(bad), Err(INVALID_PARAMETER), "{bad:?}");
    }
    assert_eq!(
        code(ask("MuteRecording", &[("callID", "c1")])),
        MISSING_PARAMETER
    );
    assert_eq!(
        code(ask("MuteRecording", &[("mute", "3")])),
        MISSING_PARAMETER
    );
}

#[test]
fn search_window_and_paging() {
    let window = [
        ("start", "2024-03-01 10:00"),
        ("end", "2024-03-01 11:30:15"),
    ];
    let q = search(&window).expect("a valid search");
    assert_eq!(q.from_ms, 1_709_287_200_000);
    assert_eq!(q.to_ms, 1_709_292_615_000);
    assert_eq!((q.number, q.page_len, q.page), (None, DEFAULT_PAGE_LEN, 0));

    let mut paged = window.to_vec();
    paged.extend([
        ("extension", "+4930123"),
        ("pagelen", "1000"),
        ("page", "7"),
    ]);
    let q = search(&paged).expect("a paged search");
    assert_eq!(
        (q.number.as_deref(), q.page_len, q.page),
        (Some("+4930123"), 1000, 7)
    );
    let t = search(&[
        ("start", "2024-03-01T10:00:00"),
        ("end", "2024-03-02 00:00"),
    ]);
    assert_eq!(t.expect("T separator").from_ms, 1_709_287_200_000);
    let one = [window[0], window[1], ("pagelen", "1")];
    assert_eq!(search(&one).expect("pagelen 1").page_len, 1);
}

#[test]
fn search_rules() {
    let code_of = |extra: &[(&str, &str)]| search(extra).map(|_| ()).unwrap_err().code;
    let start = ("start", "2024-03-01 10:00");
    let end = ("end", "2024-03-01 11:00");
    assert_eq!(code_of(&[end]), MISSING_PARAMETER);
    assert_eq!(code_of(&[start]), MISSING_PARAMETER);
    assert_eq!(
        code_of(&[start, ("end", "2024-03-01 10:00:00")]),
        INVALID_PARAMETER
    );
    assert_eq!(
        code_of(&[start, ("end", "2024-03-01 09:59")]),
        INVALID_PARAMETER
    );
    for bad in [
        "2024-02-30 10:00",
        "2024-03-01",
        "2024-03-01 10:00:00Z",
        "2024-03-01 10:00:00.5",
        "2024-3-01 10:00:00",
        "1969-12-31 23:59",
        "2024-03-01 24:00",
        "2024-03-01+10:00",
    ] {
        assert_eq!(
            code_of(&[("start", bad), end]),
            INVALID_PARAMETER,
            "{bad:?}"
        );
    }
    for bad in ["0", "1001", "-1", "+5", "ten", "99999999999"] {
        assert_eq!(
            code_of(&[start, end, ("pagelen", bad)]),
            INVALID_PARAMETER,
            "{bad}"
        );
    }
    for bad in ["-1", "x", "4294967296"] {
        assert_eq!(
            code_of(&[start, end, ("page", bad)]),
            INVALID_PARAMETER,
            "{bad}"
        );
    }
}

#[test]
fn request_token_takes_optional_credentials() {
    let creds = ask(
        "RequestToken",
        &[("userName", "ops"), ("password", " s3cret ")],
    );
    assert_eq!(
        creds.expect("with credentials").action,
        Action::RequestToken {
            user: Some("ops".into()),
            password: Some(" s3cret ".into())
        }
    );
    let bare = ask("RequestToken", &[]).expect("without credentials");
    assert_eq!(
        bare.action,
        Action::RequestToken {
            user: None,
            password: None
        }
    );
    let text = format!("{:?}", ask("RequestToken", &[("password", "s3cret")]));
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn action_and_api_key_rules() {
    let only = |list: &[(&str, &str)]| code(parse(&pairs(list)));
    assert_eq!(only(&[("apiKey", "k1")]), UNKNOWN_ACTION);
    assert_eq!(only(&[("action", ""), ("apiKey", "k1")]), UNKNOWN_ACTION);
    assert_eq!(
        only(&[("action", "Login"), ("apiKey", "k1")]),
        UNKNOWN_ACTION
    );
    assert_eq!(
        only(&[("action", "deletecall"), ("apiKey", "k1")]),
        UNKNOWN_ACTION
    );
    assert_eq!(
        only(&[("action", "DeleteCall"), ("callID", "c1")]),
        INVALID_API_KEY
    );
    let empty_key = [("action", "DeleteCall"), ("apiKey", ""), ("callID", "c1")];
    assert_eq!(only(&empty_key), INVALID_API_KEY);
    let e = parse(&pairs(&[("action", &"X".repeat(300)), ("apiKey", "k1")])).unwrap_err();
    assert!(e.message.chars().count() < 100, "{}", e.message);
}

#[test]
fn response_type_any_case_default_xml() {
    let of = |value: &str| {
        ask("GetCallID", &[("callID", "c1"), ("responseType", value)])
            .map(|r| r.response_type)
            .map_err(|e| e.code)
    };
    assert_eq!(of("xml"), Ok(ResponseType::Xml));
    assert_eq!(of("Html"), Ok(ResponseType::Html));
    assert_eq!(of("TEXT"), Ok(ResponseType::Text));
    assert_eq!(of("tExT"), Ok(ResponseType::Text));
    assert_eq!(of(""), Ok(ResponseType::Xml));
    assert_eq!(of("JSON"), Err(INVALID_PARAMETER));
    let default = ask("GetCallID", &[("callID", "c1")]).expect("no responseType");
    assert_eq!(default.response_type, ResponseType::Xml);

    let params = pairs(&[("action", "KeepCall"), ("responseType", "html")]);
    assert_eq!(response_type_or_xml(&params), ResponseType::Html);
    assert_eq!(action_name(&params), "KeepCall");
    let params = pairs(&[("action", "Nope"), ("responseType", "JSON")]);
    assert_eq!(response_type_or_xml(&params), ResponseType::Xml);
    assert_eq!(action_name(&params), UNKNOWN_ACTION_NAME);
    assert_eq!(action_name(&[]), UNKNOWN_ACTION_NAME);
}

#[test]
fn first_occurrence_wins_and_empty_token_is_none() {
    let request = parse(&pairs(&[
        ("action", "GetCallID"),
        ("apiKey", "query-key"),
        ("callID", "from-query"),
        ("token", ""),
        ("action", "DeleteCall"),
        ("apiKey", "body-key"),
        ("callID", "from-body"),
    ]))
    .expect("query then body");
    assert_eq!(request.api_key, "query-key");
    assert_eq!(request.token, None);
    assert_eq!(request.action.name(), "GetCallID");
    let long_token = "t".repeat(MAX_VALUE_CHARS + 1);
    let bad_token = [("callID", "c1"), ("token", long_token.as_str())];
    assert_eq!(code(ask("GetCallID", &bad_token)), INVALID_TOKEN);
    assert_eq!(query(Ok(request)).call_id.as_deref(), Some("from-query"));
}

#[test]
fn names_match_the_actions_table() {
    for name in ACTIONS {
        let extra = [
            ("callID", "c1"),
            ("mute", "0"),
            ("start", "2024-01-01 00:00"),
        ];
        let mut list = extra.to_vec();
        list.push(("end", "2024-01-02 00:00"));
        let request = ask(name, &list).expect(name);
        assert_eq!(request.action.name(), name);
    }
    let debug = format!(
        "{:?}",
        ask("DeleteCall", &[("callID", "c1"), ("token", "t-secret")])
    );
    assert!(!debug.contains("t-secret"), "{debug}");
}
