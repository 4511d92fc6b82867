//! WAV prompt files: the reader that decodes what an application points Play at. A file it
//! accepts has a usable sample rate and at most one sample per byte of the file; decoding it
//! again gives the same samples.
#![no_main]

use callbridge::media::wav;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(audio) = wav::parse(data) else { return };
    assert_ne!(audio.sample_rate, 0, "sample rate 0 accepted");
    assert!(!audio.samples.is_empty(), "no samples, yet accepted");
    assert!(audio.samples.len() <= data.len(), "more samples than bytes");
    assert_eq!(
        wav::parse(data).ok(),
        Some(audio),
        "decoding is not deterministic"
    );
});
