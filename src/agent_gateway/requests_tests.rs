//! The body rules of `requests`: what each body becomes, and the `000-002` message each broken
//! body gets.

use super::address::{AddressError, AgentId, Participant, PhoneNumber};
use super::requests::*;
use super::retcode::{GatewayError, Retcode};

/// The wire error of a refused body: always 000-002, and its message.
fn refused(error: RequestError) -> String {
    let wire = GatewayError::from(error);
    assert_eq!(wire.retcode, Retcode::BadParameter);
    wire.message
}

fn phone(text: &str) -> PhoneNumber {
    PhoneNumber::parse(text).expect("a test phone number")
}

fn agent(text: &str) -> AgentId {
    AgentId::parse(text).expect("a test agent id")
}

#[test]
fn malformed_json_and_non_objects_are_refused() {
    let error = SignIn::from_json(br#"{"password":"x","phonenum":"6001""#).expect_err("refused");
    assert!(matches!(error, RequestError::MalformedJson { .. }));
    assert!(refused(error).starts_with("the body is not valid JSON ("));
    for body in [&b""[..], b"not json", b"{'a':1}"] {
        assert!(matches!(
            RequestAgentConf::from_json(body),
            Err(RequestError::MalformedJson { .. })
        ));
    }
    for body in [&b"[]"[..], b"null", b"4", br#""memberNum""#] {
        assert_eq!(
            RequestAgentConf::from_json(body),
            Err(RequestError::NotAnObject)
        );
    }
    assert_eq!(
        refused(RequestError::NotAnObject),
        "the body must be a JSON object"
    );
}

#[test]
fn agent_id_in_the_path() {
    assert_eq!(parse_agent_path("101"), Ok(agent("101")));
    let error = parse_agent_path("100").expect_err("refused");
    assert_eq!(error.field(), Some("agentid"));
    assert_eq!(
        refused(error),
        "agentid must be an agent id from 101 to 999999"
    );
    assert!(parse_agent_path("1000000").is_err());
    assert!(parse_agent_path("abc").is_err());
}

#[test]
fn sign_in_with_vendor_defaults() {
    let request = SignIn::from_json(br#"{"password":"secret","phonenum":"6001"}"#)
        .expect("a minimal sign-in");
    assert_eq!(request.password.expose(), "secret");
    assert_eq!(format!("{:?}", request.password), "Password(***)");
    assert_eq!(request.phone, phone("6001"));
    assert!(request.auto_answer && request.auto_enter_idle && request.release_phone);
    assert_eq!(request.agent_type, AgentType::PcPhone);
    assert_eq!(request.status, InitialStatus::Idle);
}

#[test]
fn sign_in_accepts_the_strings_vendor_desktops_send() {
    // The shape the vendor's sample clients send, unknown fields included.
    let body = br#"{"password":"","phonenum":"40038","status":"5","releasephone":"false",
        "agenttype":"11","autoanswer":false,"autoenteridle":"true","phonelinkage":false,
        "checkInWebm":true,"ip":"127.0.0.1","callBackUri":"https://desk/cb"}"#;
    let request = SignIn::from_json(body).expect("a full sign-in");
    assert_eq!(request.password.expose(), "");
    assert_eq!(request.status, InitialStatus::Work);
    assert_eq!(request.agent_type, AgentType::PcPhoneVideo);
    assert!(!request.release_phone && !request.auto_answer && request.auto_enter_idle);
    // A number where a string belongs is its decimal text; null is absent.
    let request = SignIn::from_json(br#"{"password":1234,"phonenum":6001,"status":null}"#)
        .expect("numbers as text");
    assert_eq!(request.password.expose(), "1234");
    assert_eq!(request.phone, phone("6001"));
    assert_eq!(request.status, InitialStatus::Idle);
}

#[test]
fn sign_in_body_rules() {
    let cases: [(&[u8], &str); 11] = [
        (br#"{"phonenum":"6001"}"#, "password is mandatory"),
        (br#"{"password":"x"}"#, "phonenum is mandatory"),
        (
            br#"{"password":"x","phonenum":null}"#,
            "phonenum is mandatory",
        ),
        (
            br#"{"password":"x","phonenum":["6001"]}"#,
            "phonenum must be a string",
        ),
        (
            br#"{"password":{},"phonenum":"6001"}"#,
            "password must be a string",
        ),
        (
            br#"{"password":"x","phonenum":"1234567890123456789012345"}"#,
            "phonenum must be at most 24 characters",
        ),
        (
            br#"{"password":"x","phonenum":"sip:6001@pbx"}"#,
            "phonenum may contain only digits, '*', '#' and a leading '+'",
        ),
        (
            br#"{"password":"123456789012345678901234567890123","phonenum":"6001"}"#,
            "password must be at most 32 characters",
        ),
        (
            br#"{"password":"x","phonenum":"6001","agenttype":5}"#,
            "agenttype must be 4 (PC+phone agent) or 11 (PC+phone video agent)",
        ),
        (
            br#"{"password":"x","phonenum":"6001","status":3}"#,
            "status must be 4 (idle) or 5 (work)",
        ),
        (
            br#"{"password":"x","phonenum":"6001","autoanswer":"yes"}"#,
            "autoanswer must be a boolean",
        ),
    ];
    for (body, message) in cases {
        let error = SignIn::from_json(body).expect_err(message);
        assert_eq!(refused(error), message);
    }
}

#[test]
fn sign_in_refuses_push_delivery() {
    let body =
        br#"{"password":"x","phonenum":"6001","callBackUri":"https://d/cb","serviceToken":"t"}"#;
    let error = SignIn::from_json(body).expect_err("refused");
    assert_eq!(error, RequestError::PushNotSupported);
    assert!(refused(error).contains("sign in without them and poll agentevent"));
}

#[test]
fn request_agent_conf_defaults_and_sample() {
    let request = RequestAgentConf::from_json(br#"{"memberNum":4}"#).expect("minimal");
    assert_eq!(
        request,
        RequestAgentConf {
            member_num: 4,
            conf_caller_no: None,
            minutes: 60,
            prompt_minutes: 5,
            beep_tone: false,
            play_mode: 2,
            voice_path: None,
        }
    );
    // The vendor's sample body.
    let body = br#"{"memberNum": 4, "confCallerNo": "10000", "time": 50, "promptTime": 5,
        "beepTone": true, "playMode": 2, "voicePath": "y:/conf/120/1136287.V3"}"#;
    let request = RequestAgentConf::from_json(body).expect("the vendor sample");
    assert_eq!(request.conf_caller_no, Some(phone("10000")));
    assert_eq!((request.minutes, request.prompt_minutes), (50, 5));
    assert!(request.beep_tone);
    assert_eq!(
        request.voice_path.as_deref(),
        Some("y:/conf/120/1136287.V3")
    );
    // A conference shorter than the default warning warns a minute before its end.
    let short = RequestAgentConf::from_json(br#"{"memberNum":"120","time":4.0}"#).expect("short");
    assert_eq!(
        (short.member_num, short.minutes, short.prompt_minutes),
        (120, 4, 3)
    );
}

#[test]
fn request_agent_conf_body_rules() {
    let long_path = format!(r#"{{"memberNum":4,"voicePath":"{}"}}"#, "v".repeat(128));
    let cases: [(&[u8], &str); 13] = [
        (br#"{}"#, "memberNum is mandatory"),
        (br#"{"memberNum":0}"#, "memberNum must be from 1 to 120"),
        (br#"{"memberNum":121}"#, "memberNum must be from 1 to 120"),
        (br#"{"memberNum":4.5}"#, "memberNum must be an integer"),
        (br#"{"memberNum":"four"}"#, "memberNum must be an integer"),
        (
            br#"{"memberNum":99999999999999999999}"#,
            "memberNum must be from 1 to 120",
        ),
        (br#"{"memberNum":1e3}"#, "memberNum must be from 1 to 120"),
        (
            br#"{"memberNum":4,"time":3}"#,
            "time must be from 4 to 1440",
        ),
        (
            br#"{"memberNum":4,"time":1441}"#,
            "time must be from 4 to 1440",
        ),
        (
            br#"{"memberNum":4,"time":30,"promptTime":30}"#,
            "promptTime must be from 1 to 29",
        ),
        (
            br#"{"memberNum":4,"promptTime":0}"#,
            "promptTime must be from 1 to 59",
        ),
        (
            br#"{"memberNum":4,"confCallerNo":"1234567890123456789012345"}"#,
            "confCallerNo must be at most 24 characters",
        ),
        (
            br#"{"memberNum":4,"beepTone":1}"#,
            "beepTone must be a boolean",
        ),
    ];
    for (body, message) in cases {
        let error = RequestAgentConf::from_json(body).expect_err(message);
        assert_eq!(refused(error), message);
    }
    let error = RequestAgentConf::from_json(long_path.as_bytes()).expect_err("refused");
    assert_eq!(refused(error), "voicePath must be at most 127 characters");
    let error =
        RequestAgentConf::from_json(br#"{"memberNum":4,"playMode":256}"#).expect_err("refused");
    assert_eq!(refused(error), "playMode must be from 0 to 255");
}

#[test]
fn batch_add_participants() {
    let body = br#"{"addresses":[{"addressType":6,"address":"88887946"},
        {"addressType":"9","address":2001}],"caller":"10000","beepTone":false}"#;
    let request = BatchAddParticipant::from_json(body).expect("two invitees");
    assert_eq!(
        request.participants,
        [
            Participant::Phone(phone("88887946")),
            Participant::Agent(agent("2001"))
        ]
    );
    assert_eq!(request.caller, Some(phone("10000")));
    assert_eq!(
        (request.beep_tone, request.play_mode, request.voice_path),
        (false, 2, None)
    );
}

/// A body with `n` phone addresses.
fn addresses(n: usize) -> String {
    let entry = r#"{"addressType":6,"address":"5550000"}"#;
    format!(r#"{{"addresses":[{}]}}"#, vec![entry; n].join(","))
}

#[test]
fn batch_add_body_rules() {
    assert_eq!(
        BatchAddParticipant::from_json(addresses(120).as_bytes())
            .expect("120 invitees")
            .participants
            .len(),
        120
    );
    let error = BatchAddParticipant::from_json(addresses(121).as_bytes()).expect_err("refused");
    assert_eq!(refused(error), "addresses may hold at most 120 entries");
    let cases: [(&[u8], &str); 11] = [
        (br#"{}"#, "addresses is mandatory"),
        (br#"{"addresses":[]}"#, "addresses must not be empty"),
        (
            br#"{"addresses":{"addressType":6}}"#,
            "addresses must be an array",
        ),
        (
            br#"{"addresses":["5550000"]}"#,
            "addresses[0] must be an object",
        ),
        (
            br#"{"addresses":[{"addressType":6,"address":"1"},{"address":"2"}]}"#,
            "addresses[1].addressType is mandatory",
        ),
        (
            br#"{"addresses":[{"addressType":7,"address":"2"}]}"#,
            "addresses[0].addressType must be 6 (phone number) or 9 (agent id)",
        ),
        (
            br#"{"addresses":[{"addressType":"phone","address":"2"}]}"#,
            "addresses[0].addressType must be an integer",
        ),
        (
            br#"{"addresses":[{"addressType":6}]}"#,
            "addresses[0].address is mandatory",
        ),
        (
            br#"{"addresses":[{"addressType":6,"address":"1234567890123456789012345"}]}"#,
            "addresses[0].address must be at most 24 characters",
        ),
        (
            br#"{"addresses":[{"addressType":9,"address":"100"}]}"#,
            "addresses[0].address must be an agent id from 101 to 999999",
        ),
        (
            br#"{"addresses":[{"addressType":6,"address":"1"}],"caller":"x"}"#,
            "caller may contain only digits, '*', '#' and a leading '+'",
        ),
    ];
    for (body, message) in cases {
        let error = BatchAddParticipant::from_json(body).expect_err(message);
        assert_eq!(refused(error), message);
    }
}

#[test]
fn batch_remove_takes_at_most_30() {
    let request = BatchRemoveParticipant::from_json(addresses(30).as_bytes()).expect("30");
    assert_eq!(request.participants.len(), 30);
    let error = BatchRemoveParticipant::from_json(addresses(31).as_bytes()).expect_err("refused");
    assert_eq!(error.field(), Some("addresses"));
    assert_eq!(refused(error), "addresses may hold at most 30 entries");
}

#[test]
fn change_participant_mode() {
    let modes: Vec<(bool, bool)> = (1..=4)
        .map(|attribute| {
            let body = format!(r#"{{"attribute":{attribute},"addressType":6,"address":"5551"}}"#);
            let request = ChangeParticipantMode::from_json(body.as_bytes()).expect("a mode");
            assert_eq!(request.participant, Participant::Phone(phone("5551")));
            (request.mode.hears(), request.mode.speaks())
        })
        .collect();
    assert_eq!(
        modes,
        [(true, false), (false, true), (true, true), (false, false)]
    );
    let mode =
        ChangeParticipantMode::from_json(br#"{"attribute":"1","addressType":9,"address":"2001"}"#)
            .expect("strings");
    assert_eq!(mode.mode, ParticipantMode::ListenOnly);
    for (body, message) in [
        (
            &br#"{"addressType":6,"address":"5551"}"#[..],
            "attribute is mandatory",
        ),
        (
            br#"{"attribute":0,"addressType":6,"address":"5551"}"#,
            "attribute must be from 1 to 4",
        ),
        (
            br#"{"attribute":5,"addressType":6,"address":"5551"}"#,
            "attribute must be from 1 to 4",
        ),
        (
            br#"{"attribute":1,"address":"5551"}"#,
            "addressType is mandatory",
        ),
    ] {
        let error = ChangeParticipantMode::from_json(body).expect_err(message);
        assert_eq!(refused(error), message);
    }
}

#[test]
fn hold_and_unhold_name_a_participant() {
    // The sample next to holdparticipant in the vendor's guide; playMode/voicePath are ignored.
    let body =
        br#"{"address": "88887946", "addressType": "6", "playMode": 2, "voicePath": "y:/a"}"#;
    let request = ParticipantTarget::from_json(body).expect("the vendor sample");
    assert_eq!(request.participant, Participant::Phone(phone("88887946")));
    let error = ParticipantTarget::from_json(br#"{"addressType":6}"#).expect_err("refused");
    assert_eq!(refused(error), "address is mandatory");
    let error =
        ParticipantTarget::from_json(br#"{"addressType":9,"address":"abc"}"#).expect_err("refused");
    assert_eq!(
        error,
        RequestError::BadAddress {
            field: "address".into(),
            error: AddressError::NotAgentId
        }
    );
}

#[test]
fn prolong_time_rules() {
    assert_eq!(
        ProlongTime::from_json(br#"{"prolongTime":30}"#),
        Ok(ProlongTime { minutes: 30 })
    );
    assert_eq!(
        ProlongTime::from_json(br#"{"prolongTime":"1440"}"#),
        Ok(ProlongTime { minutes: 1440 })
    );
    for (body, message) in [
        (&br#"{}"#[..], "prolongTime is mandatory"),
        (
            br#"{"prolongTime":0}"#,
            "prolongTime must be from 1 to 1440",
        ),
        (
            br#"{"prolongTime":1441}"#,
            "prolongTime must be from 1 to 1440",
        ),
        (br#"{"prolongTime":true}"#, "prolongTime must be an integer"),
    ] {
        let error = ProlongTime::from_json(body).expect_err(message);
        assert_eq!(refused(error), message);
    }
}

#[test]
fn apply_to_shift_president_rules() {
    let expected = Ok(ApplyToShiftPresident {
        dest_agent: agent("2001"),
    });
    assert_eq!(
        ApplyToShiftPresident::from_json(br#"{ "destAgentNo": 2001 }"#),
        expected
    );
    assert_eq!(
        ApplyToShiftPresident::from_json(br#"{"destAgentNo":"2001"}"#),
        expected
    );
    for (body, message) in [
        (&br#"{}"#[..], "destAgentNo is mandatory"),
        (
            br#"{"destAgentNo":100}"#,
            "destAgentNo must be an agent id from 101 to 999999",
        ),
        (
            br#"{"destAgentNo":1000000}"#,
            "destAgentNo must be an agent id from 101 to 999999",
        ),
        (
            br#"{"destAgentNo":18446744073709551615}"#,
            "destAgentNo must be an agent id from 101 to 999999",
        ),
        (
            br#"{"destAgentNo":2001.5}"#,
            "destAgentNo must be an agent id",
        ),
        (
            br#"{"destAgentNo":[2001]}"#,
            "destAgentNo must be an agent id",
        ),
    ] {
        let error = ApplyToShiftPresident::from_json(body).expect_err(message);
        assert_eq!(refused(error), message);
    }
}
