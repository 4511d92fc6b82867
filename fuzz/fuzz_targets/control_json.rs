//! Media Control and Call Control actions: the JSON body of `POST /mediacontrol/{action}` and
//! `POST /callcontrol/{action}` turned into typed actions, as the handlers do. Oracle: no
//! panic; every refusal carries a ResultCode and a message.
//!
//! Input: the action name, a newline, the body (both surfaces get the same).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use callbridge::fuzzing::{call_action, media_action};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let requester = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let media = media_action(name, body, requester);
    let call = call_action(name, body);
    for error in [media.as_ref().err(), call.as_ref().err()]
        .into_iter()
        .flatten()
    {
        assert!(!error.message.is_empty(), "refusal without a message");
        let _ = error.code.as_wire();
    }
    let _ = format!("{media:?}{call:?}");
});
