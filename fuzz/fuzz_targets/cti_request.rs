//! CTI requests: a WebSocket text frame, and the body of `POST /cti/{Request}`, turned into
//! typed requests or the `EventError` the client gets, as the handlers do. Oracle: no panic;
//! a refusal is an `EventError` with a numeric code and a message.
//!
//! Input: the request name (the POST's path segment), a newline, the body; the body is also
//! sent as a WebSocket frame.
#![no_main]

use callbridge::fuzzing::{cti_frame, cti_post};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (name, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(name) = std::str::from_utf8(name) {
        check(cti_post(name, body));
    }
    if let Ok(text) = std::str::from_utf8(body) {
        check(cti_frame(text));
    }
});

fn check(answer: Result<String, Value>) {
    if let Err(event) = answer {
        assert_eq!(event["Event"], "EventError");
        assert!(event["ErrorCode"].is_u64(), "{event}");
        assert!(
            event["ErrorMessage"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{event}"
        );
    }
}
