//! SDP from a peer: parsing, printing (the printed form must parse and print the same), and
//! negotiation against fixed local capabilities, both as the offer we answer and as the answer
//! to our own offer. Our answer must itself be SDP we can parse.
#![no_main]

use std::net::SocketAddr;

use callbridge::sdp::{
    accept_answer, answer, offer, Codec, LocalCapabilities, SessionDescription, SessionVersion,
    SrtpKeys, SrtpPolicy, DEFAULT_SRTP_SUITES,
};
use libfuzzer_sys::fuzz_target;

/// Key and salt, base64: 16 + 14 bytes (AES-CM suites), 16 + 12 bytes (AEAD_AES_128_GCM).
const KEY_AES_CM: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e";
const KEY_GCM: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHA==";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(remote) = SessionDescription::parse(text) else {
        return;
    };
    let printed = remote.to_string();
    let reparsed = match SessionDescription::parse(&printed) {
        Ok(sdp) => sdp,
        Err(e) => panic!("printed SDP does not parse: {e}\n{printed}"),
    };
    assert_eq!(reparsed.to_string(), printed, "printing is not stable");

    let local: SocketAddr = ([192, 0, 2, 10], 40_000).into();
    let version = SessionVersion {
        session_id: 1,
        version: 1,
    };
    let keys = SrtpKeys::new()
        .with("AEAD_AES_128_GCM", KEY_GCM)
        .with("AES_CM_128_HMAC_SHA1_80", KEY_AES_CM)
        .with("AES_CM_128_HMAC_SHA1_32", KEY_AES_CM);
    for caps in capabilities() {
        if let Ok((ours, negotiated)) = answer(&remote, &caps, local, version, &keys) {
            let printed = ours.to_string();
            let ours_again = match SessionDescription::parse(&printed) {
                Ok(sdp) => sdp,
                Err(e) => panic!("our answer does not parse: {e}\n{printed}"),
            };
            assert_eq!(
                ours_again.media.len(),
                remote.media.len(),
                "one answer m-line per offer m-line"
            );
            let _ = format!("{negotiated:?}");
        }
        // The remote SDP as the answer to an offer of ours.
        let ours = offer(&caps, local, version, &keys);
        let _ = accept_answer(&ours, &remote);
    }
});

/// The default capabilities, and every codec with SRTP offered and required.
fn capabilities() -> [LocalCapabilities; 3] {
    let all = vec![Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma];
    let suites = DEFAULT_SRTP_SUITES.map(str::to_string).to_vec();
    [
        LocalCapabilities::default(),
        LocalCapabilities {
            codecs: all.clone(),
            srtp: SrtpPolicy::Offer,
            srtp_suites: suites.clone(),
            ..LocalCapabilities::default()
        },
        LocalCapabilities {
            codecs: all,
            srtp: SrtpPolicy::Require,
            srtp_suites: suites,
            ptime_ms: 30,
            telephone_event: false,
        },
    ]
}
