//! SRTP and SRTCP with a fixed master key, for each profile: unprotecting raw input (what an
//! attacker can send), and a series of packets protected by one context and unprotected by
//! another, which must give back each packet, refuse it replayed, and refuse it with any one
//! bit flipped (and stay unchanged by that refusal).
//!
//! Input: byte 0 picks the profile, byte 1 which bit to flip; the rest is unprotected as is,
//! then read as a series of packets, each preceded by its length (2 bytes, big endian).
#![no_main]

use callbridge::media::rtp;
use callbridge::media::srtp::{SrtpContext, SrtpProfile};
use libfuzzer_sys::fuzz_target;

const PROFILES: [SrtpProfile; 3] = [
    SrtpProfile::AesCm128HmacSha1_80,
    SrtpProfile::AesCm128HmacSha1_32,
    SrtpProfile::AeadAes128Gcm,
];
const MASTER_KEY: [u8; 16] = *b"callbridge-fuzz!";
const MASTER_SALT: [u8; 14] = *b"fixed-salt-14b";
/// Room for any profile's trailer (index and tag).
const TAIL_ROOM: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Some((&[selector, flip], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let profile = PROFILES[usize::from(selector) % PROFILES.len()];
    let context = || {
        let salt = &MASTER_SALT[..profile.master_salt_len()];
        SrtpContext::new(profile, &MASTER_KEY, salt).expect("valid key lengths")
    };
    let (mut tx, mut rx) = (context(), context());

    let mut raw = rest.to_vec();
    let _ = rx.unprotect_rtp(&mut raw, rest.len());
    let mut raw = rest.to_vec();
    let _ = rx.unprotect_rtcp(&mut raw, rest.len());

    let mut rest = rest;
    while let Some((&[hi, lo], tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        round_trip(&mut tx, &mut rx, packet, usize::from(flip));
        rest = tail;
    }
});

/// Protects `packet` with `tx`; if that works, `rx` must refuse it tampered, then take it, then
/// refuse it replayed.
fn round_trip(tx: &mut SrtpContext, rx: &mut SrtpContext, packet: &[u8], flip: usize) {
    let is_rtcp = rtp::is_rtcp(packet);
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + TAIL_ROOM, 0);
    let protected_len = if is_rtcp {
        tx.protect_rtcp(&mut buf, packet.len())
    } else {
        tx.protect_rtp(&mut buf, packet.len())
    };
    let Ok(protected_len) = protected_len else {
        return;
    };
    let protected = &buf[..protected_len];
    let mut unprotect = |bytes: &[u8]| {
        let mut copy = bytes.to_vec();
        let result = if is_rtcp {
            rx.unprotect_rtcp(&mut copy, bytes.len())
        } else {
            rx.unprotect_rtp(&mut copy, bytes.len())
        };
        result.map(|len| copy[..len].to_vec())
    };

    let mut tampered = protected.to_vec();
    let bit = flip.wrapping_mul(131).wrapping_add(packet.len()) % (protected_len * 8);
    tampered[bit / 8] ^= 1 << (bit % 8);
    assert!(
        unprotect(&tampered).is_err(),
        "tampered packet accepted (bit {bit})"
    );

    match unprotect(protected) {
        Ok(plain) => assert_eq!(plain, packet, "unprotect did not give back the packet"),
        Err(e) => panic!("our own protected packet refused: {e:?}"),
    }
    assert!(unprotect(protected).is_err(), "replayed packet accepted");
}
