//! Fixtures shared by the unit tests of every `sdp` file, and the tests
//! that span the whole module (robustness against mutated input). A test of
//! one file's code lives at the bottom of that file.

use std::net::SocketAddr;

use super::*;

pub(super) const SIPP_OFFER: &str = "v=0\r\n\
    o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
    s=-\r\n\
    c=IN IP4 127.0.0.1\r\n\
    t=0 0\r\n\
    m=audio 6000 RTP/AVP 0\r\n\
    a=rtpmap:0 PCMU/8000\r\n";

pub(super) const SIPP_OFFER_NO_RTPMAP: &str = "v=0\n\
    o=user1 53655765 2353687637 IN IP4 127.0.0.1\n\
    s=-\n\
    c=IN IP4 127.0.0.1\n\
    t=0 0\n\
    m=audio 6000 RTP/AVP 0\n";

pub(super) const RICH_SDP: &str = "v=0\r\n\
    o=- 4611731400430051336 2 IN IP4 gw.example.com\r\n\
    s=Talk\r\n\
    i=A call\r\n\
    c=IN IP4 192.0.2.10\r\n\
    b=AS:128\r\n\
    t=0 0\r\n\
    r=7d 1h 0 25h\r\n\
    a=tool:foo\r\n\
    a=sendrecv\r\n\
    m=video 5004 RTP/AVP 96\r\n\
    a=rtpmap:96 H264/90000\r\n\
    m=audio 4000/2 RTP/AVP 8 0 101\r\n\
    i=voice\r\n\
    c=IN IP6 2001:db8::1\r\n\
    b=TIAS:64000\r\n\
    a=rtpmap:8 PCMA/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-15\r\n\
    a=ptime:20\r\n\
    a=x-unknown\r\n";

pub(super) fn local() -> SocketAddr {
    "192.0.2.1:20000".parse().expect("test address literal")
}

pub(super) fn version() -> SessionVersion {
    SessionVersion {
        session_id: 42,
        version: 1,
    }
}

pub(super) fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(text).expect("test SDP should parse")
}

pub(super) fn answer_default(text: &str) -> (SessionDescription, NegotiatedMedia) {
    let answered = answer(
        &parse(text),
        &LocalCapabilities::default(),
        local(),
        version(),
        &keys(),
    )
    .expect("test offer should be answerable");
    // Checking an offer without building the answer agrees with the answer.
    let negotiated = negotiate(&parse(text), &LocalCapabilities::default(), &keys());
    assert_eq!(negotiated.as_ref(), Ok(&answered.1));
    answered
}

pub(super) const OUR_KEY_GCM: &str = "Y2FsbGJyaWRnZSBnY20ga2V5K2l0cyBzYWx0IQ==";

pub(super) const OUR_KEY_80: &str = "Y2FsbGJyaWRnZSBrZXk4MCBhbmQgaXRzIHNhbHQu";

pub(super) const OUR_KEY_32: &str = "Y2FsbGJyaWRnZSBrZXkzMiBhbmQgaXRzIHNhbHQu";

pub(super) const PEER_KEY_GCM: &str = "cGVlcidzIGdjbSBrZXkgYW5kIGl0cyBzYWx0Lg==";

pub(super) const PEER_KEY_80: &str = "cGVlciBrZXkgZm9yIEFFU19DTV84MCArIHNhbHQu";

/// Our fixed SDES keys for the default suites.
pub(super) fn keys() -> SrtpKeys {
    SrtpKeys::new()
        .with("AEAD_AES_128_GCM", OUR_KEY_GCM)
        .with("AES_CM_128_HMAC_SHA1_80", OUR_KEY_80)
        .with("AES_CM_128_HMAC_SHA1_32", OUR_KEY_32)
}

pub(super) fn caps_with(srtp: SrtpPolicy) -> LocalCapabilities {
    LocalCapabilities {
        srtp,
        ..LocalCapabilities::default()
    }
}

pub(super) fn answer_with(
    caps: &LocalCapabilities,
    text: &str,
) -> Result<(SessionDescription, NegotiatedMedia), SdpError> {
    answer(&parse(text), caps, local(), version(), &keys())
}

pub(super) fn answer_err(text: &str) -> SdpError {
    let refused = answer(
        &parse(text),
        &LocalCapabilities::default(),
        local(),
        version(),
        &keys(),
    )
    .expect_err("test offer should be refused");
    let negotiated = negotiate(&parse(text), &LocalCapabilities::default(), &keys());
    assert_eq!(negotiated, Err(refused.clone()));
    refused
}

/// An offer with the SIPp envelope and the given audio m-line block.
pub(super) fn offer_with(media: &str) -> String {
    format!(
        "v=0\r\no=alice 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n{media}"
    )
}

pub(super) fn answer_to_our_offer(media: &str) -> String {
    format!(
        "v=0\r\no=bob 9 9 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n{media}"
    )
}

pub(super) fn opus_caps() -> LocalCapabilities {
    LocalCapabilities {
        codecs: vec![Codec::Opus, Codec::Pcmu],
        ..LocalCapabilities::default()
    }
}

/// RFC 4568 §8.1: every line carries an MKI, the third two keys.
pub(super) const RFC4568_CRYPTO: &str = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
    a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32\r\n\
    a=crypto:3 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP\r\n";

pub(super) fn savp_offer(crypto: &str) -> String {
    offer_with(&format!("m=audio 49170 RTP/SAVP 0\r\n{crypto}"))
}

/// Exercises everything downstream of a successful parse.
fn exercise(text: &str, our_offers: &[SessionDescription]) {
    let Ok(sdp) = SessionDescription::parse(text) else {
        return;
    };
    let printed = sdp.to_string();
    let reparsed = SessionDescription::parse(&printed)
        .unwrap_or_else(|e| panic!("printed SDP must parse: {e}\n{printed:?}"));
    assert_eq!(reparsed.to_string(), printed, "printing is stable");
    let all_codecs_no_srtp = LocalCapabilities {
        codecs: vec![Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma],
        srtp: SrtpPolicy::Refuse,
        ..LocalCapabilities::default()
    };
    for caps in [
        LocalCapabilities::default(),
        caps_with(SrtpPolicy::Require),
        all_codecs_no_srtp,
    ] {
        let Ok((answer_sdp, ours)) = answer(&sdp, &caps, local(), version(), &keys()) else {
            continue;
        };
        let answer_sdp = SessionDescription::parse(&answer_sdp.to_string())
            .unwrap_or_else(|e| panic!("our answer must parse: {e}\n{text:?}"));
        // Whatever we answer, the offerer can accept.
        let theirs = accept_answer(&sdp, &answer_sdp)
            .unwrap_or_else(|e| panic!("our answer must fit: {e}\n{text:?}"));
        assert_eq!(
            (theirs.codec, theirs.payload_type, theirs.srtp.is_some()),
            (ours.codec, ours.payload_type, ours.srtp.is_some()),
            "{text:?}"
        );
        assert_eq!(ours.opus.is_some(), ours.codec == Codec::Opus);
        if let Some(srtp) = &ours.srtp {
            let debug = format!("{ours:?}");
            assert!(!debug.contains(&srtp.local_key_params[7..]), "{debug}");
        }
    }
    for our_offer in our_offers {
        let _ = accept_answer(our_offer, &sdp);
        let _ = accept_answer(&sdp, our_offer);
    }
    for media in &sdp.media {
        let _ = (
            media.rtpmaps(),
            media.rtcp(),
            media.ptime(),
            media.maxptime(),
        );
        if let Some(pt) = media.payload_types().next() {
            let _ = OpusParams::from_fmtp(media.fmtp(pt).unwrap_or_default());
        }
    }
}

#[test]
fn never_panics_on_mutated_input() {
    let our_offers = [
        offer(&LocalCapabilities::default(), local(), version(), &keys()),
        offer(&caps_with(SrtpPolicy::Require), local(), version(), &keys()),
        offer(&opus_caps(), local(), version(), &keys()),
    ];
    let their_answer = answer_to_our_offer(
        "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:40001 IN IP4 203.0.113.5\r\na=ptime:20\r\na=maxptime:40\r\na=rtcp-mux\r\n",
    );
    let their_srtp_answer = answer_to_our_offer(&format!(
        "m=audio 40000 RTP/SAVP 111 110\r\na=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 maxplaybackrate=16000; useinbandfec=1\r\n\
         a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{PEER_KEY_80}|2^31 KDR=0\r\n"
    ));
    let srtp_offer = offer_with(&format!(
        "m=audio 6000 RTP/AVP 0\r\n\
         m=audio 6002 RTP/SAVPF 96 9 0 101\r\n\
         a=rtpmap:96 opus/48000/2\r\n\
         a=fmtp:96 sprop-maxcapturerate=24000;useinbandfec=0\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
         a=crypto:2 AEAD_AES_128_GCM inline:{PEER_KEY_GCM} UNENCRYPTED_SRTCP\r\n\
         a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{PEER_KEY_80}|2^20 WSH=64 -X\r\n\
         a=crypto:4 AEAD_AES_128_GCM inline:{PEER_KEY_GCM}\r\n"
    ));
    let samples = [
        SIPP_OFFER.to_string(),
        RICH_SDP.to_string(),
        our_offers[0].to_string(),
        their_answer,
        their_srtp_answer,
        srtp_offer,
        savp_offer(RFC4568_CRYPTO),
    ];
    let replacements: &[u8] = b" \r\n=:/0|9;-.\xff\t";
    let mut runs = 0;
    for sample in &samples {
        let bytes = sample.as_bytes();
        for end in 0..=bytes.len() {
            exercise(&String::from_utf8_lossy(&bytes[..end]), &our_offers);
            runs += 1;
        }
        for position in 0..bytes.len() {
            for &replacement in replacements {
                let mut mutated = bytes.to_vec();
                mutated[position] = replacement;
                exercise(&String::from_utf8_lossy(&mutated), &our_offers);
                let mut deleted = bytes.to_vec();
                deleted.remove(position);
                exercise(&String::from_utf8_lossy(&deleted), &our_offers);
                runs += 2;
            }
        }
    }
    assert!(runs > 50_000, "ran {runs} mutations");
}
