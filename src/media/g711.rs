//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA) companding between 16-bit linear PCM and 8-bit codes.
//!
//! This module owns the sample-by-sample conversion only: scalar encode/decode functions and
//! slice helpers that work on caller-provided buffers. It must not allocate, packetize, resample
//! or know about RTP.
//!
//! Bit-exactness: decoding uses 256-entry tables built at compile time from the G.711 expansion
//! rule, and gives the same values as the ITU-T G.191 reference (`g711.c`) and the classic Sun
//! `g711.c`. Encoding follows G.191: negative samples are quantized on their one's complement,
//! so the quantizer is symmetric and -1 maps to μ-law 0x7F ("negative zero"); some Sun-derived
//! μ-law encoders negate instead and give 0x7E for small negative inputs. A-law encoding is
//! the same in G.191 and Sun's code.
//!
//! Input is 16-bit PCM; μ-law uses the top 14 bits and A-law the top 13 bits, so the low bits
//! are truncated, as in the references.

/// μ-law code of digital silence (+0).
pub const ULAW_SILENCE: u8 = 0xFF;

/// A-law code closest to silence (+8; A-law has no zero level).
pub const ALAW_SILENCE: u8 = 0xD5;

/// Encodes one 16-bit linear sample to a μ-law code.
pub const fn ulaw_encode(sample: i16) -> u8 {
    let (magnitude, sign) = magnitude_and_sign(sample);
    // 14-bit magnitude plus the 33 bias puts every segment boundary on a power of two.
    let mut biased = (magnitude >> 2) + 33;
    if biased > 0x1FFF {
        biased = 0x1FFF;
    }
    // biased is in 33..=0x1FFF, i.e. 6 to 13 significant bits: segment 0 to 7.
    let segment = (32 - biased.leading_zeros()) - 6;
    let mantissa = (biased >> (segment + 1)) & 0x0F;
    // μ-law codes are transmitted inverted.
    ((((segment << 4) | mantissa) as u8) ^ 0x7F) | sign
}

/// Decodes one μ-law code to a 16-bit linear sample.
pub const fn ulaw_decode(code: u8) -> i16 {
    ULAW_TO_LINEAR[code as usize]
}

/// Encodes one 16-bit linear sample to an A-law code.
pub const fn alaw_encode(sample: i16) -> u8 {
    let (magnitude, sign) = magnitude_and_sign(sample);
    // 12-bit magnitude; segments 0 and 1 share the smallest step.
    let level = magnitude >> 4;
    let code = if level < 16 {
        level
    } else {
        // level has 5 to 11 significant bits: segment 1 to 7.
        let segment = (32 - level.leading_zeros()) - 4;
        (segment << 4) | ((level >> (segment - 1)) & 0x0F)
    };
    // Even bits are inverted on the line.
    ((code as u8) | sign) ^ 0x55
}

/// Decodes one A-law code to a 16-bit linear sample.
pub const fn alaw_decode(code: u8) -> i16 {
    ALAW_TO_LINEAR[code as usize]
}

/// Encodes `pcm` to μ-law into `out`; returns the number of samples converted,
/// `min(pcm.len(), out.len())`.
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let count = pcm.len().min(out.len());
    for (code, &sample) in out.iter_mut().zip(pcm) {
        *code = ulaw_encode(sample);
    }
    count
}

/// Decodes μ-law `data` into `out`; returns the number of samples produced,
/// `min(data.len(), out.len())`.
pub fn decode_ulaw(data: &[u8], out: &mut [i16]) -> usize {
    let count = data.len().min(out.len());
    for (sample, &code) in out.iter_mut().zip(data) {
        *sample = ULAW_TO_LINEAR[code as usize];
    }
    count
}

/// Encodes `pcm` to A-law into `out`; returns the number of samples converted,
/// `min(pcm.len(), out.len())`.
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let count = pcm.len().min(out.len());
    for (code, &sample) in out.iter_mut().zip(pcm) {
        *code = alaw_encode(sample);
    }
    count
}

/// Decodes A-law `data` into `out`; returns the number of samples produced,
/// `min(data.len(), out.len())`.
pub fn decode_alaw(data: &[u8], out: &mut [i16]) -> usize {
    let count = data.len().min(out.len());
    for (sample, &code) in out.iter_mut().zip(data) {
        *sample = ALAW_TO_LINEAR[code as usize];
    }
    count
}

/// μ-law code → linear sample, indexed by the code as received.
static ULAW_TO_LINEAR: [i16; 256] = build_table(Law::Mu);

/// A-law code → linear sample, indexed by the code as received.
static ALAW_TO_LINEAR: [i16; 256] = build_table(Law::A);

/// Companding law a decode table is built for.
#[derive(Clone, Copy)]
enum Law {
    Mu,
    A,
}

/// Splits a sample into a quantizer magnitude and the code's sign bit (0x80 = positive).
///
/// Negative samples use the one's complement (`!sample`, i.e. `-sample - 1`) so that the
/// decision levels are mirror images around -0.5 and `i16::MIN` needs no special case.
const fn magnitude_and_sign(sample: i16) -> (u32, u8) {
    if sample < 0 {
        ((!sample) as u32, 0x00)
    } else {
        (sample as u32, 0x80)
    }
}

const fn build_table(law: Law) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = match law {
            Law::Mu => ulaw_expand(code as u8),
            Law::A => alaw_expand(code as u8),
        };
        code += 1;
    }
    table
}

/// G.711 μ-law expansion of one code (the table generator).
const fn ulaw_expand(code: u8) -> i16 {
    let bits = !code;
    let segment = (bits >> 4) & 0x07;
    let mantissa = (bits & 0x0F) as i32;
    // Reconstruction level is the middle of the decision interval, in 16-bit scale.
    let magnitude = (((mantissa << 3) + 0x84) << segment) - 0x84;
    let value = if bits & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    };
    value as i16
}

/// G.711 A-law expansion of one code (the table generator).
const fn alaw_expand(code: u8) -> i16 {
    let bits = code ^ 0x55;
    let segment = (bits >> 4) & 0x07;
    let mut magnitude = (((bits & 0x0F) as i32) << 4) + 8;
    if segment > 0 {
        magnitude += 0x100;
    }
    if segment > 1 {
        magnitude <<= segment - 1;
    }
    let value = if bits & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    };
    value as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantization step (in 16-bit units) of the segment a μ-law code belongs to.
    fn ulaw_step(code: u8) -> i32 {
        8 << ((!code >> 4) & 0x07)
    }

    /// Quantization step (in 16-bit units) of the segment an A-law code belongs to.
    fn alaw_step(code: u8) -> i32 {
        let segment = ((code ^ 0x55) >> 4) & 0x07;
        if segment == 0 {
            16
        } else {
            16 << (segment - 1)
        }
    }

    #[test]
    fn ulaw_known_codes() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(8), 0xFE);
        assert_eq!(ulaw_encode(-8), 0x7E);
        // Decision level between 0 and 8 sits at +4 / -5 in 16-bit scale.
        assert_eq!(ulaw_encode(3), 0xFF);
        assert_eq!(ulaw_encode(4), 0xFE);
        assert_eq!(ulaw_encode(-4), 0x7F);
        assert_eq!(ulaw_encode(-5), 0x7E);
    }

    #[test]
    fn ulaw_decode_table_points() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x8F), 16764);
    }

    #[test]
    fn alaw_known_codes() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(16), 0xD4);
    }

    #[test]
    fn alaw_decode_table_points() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xD4), 24);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        // First code of segment 2 (0x20 before even-bit inversion).
        assert_eq!(alaw_decode((0x20 ^ 0x55) | 0x80), 528);
    }

    #[test]
    fn ulaw_decode_encode_round_trip_is_identity_except_negative_zero() {
        for code in 0..=255u8 {
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), expected, "code {code:#04x}");
        }
    }

    #[test]
    fn alaw_decode_encode_round_trip_is_identity() {
        for code in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "code {code:#04x}");
        }
    }

    #[test]
    fn ulaw_error_is_within_half_a_step_for_every_input() {
        for sample in i16::MIN..=i16::MAX {
            let code = ulaw_encode(sample);
            let decoded = i32::from(ulaw_decode(code));
            let error = (decoded - i32::from(sample)).abs();
            let magnitude = i32::from(sample).abs();
            if magnitude > 32124 + 512 {
                // Beyond the last decision level everything clips to the largest level.
                assert_eq!(decoded.abs(), 32124, "sample {sample}");
            } else {
                assert!(
                    error <= ulaw_step(code) / 2,
                    "sample {sample}: error {error}"
                );
            }
        }
    }

    #[test]
    fn alaw_error_is_within_half_a_step_for_every_input() {
        for sample in i16::MIN..=i16::MAX {
            let code = alaw_encode(sample);
            let decoded = i32::from(alaw_decode(code));
            let error = (decoded - i32::from(sample)).abs();
            assert!(
                error <= alaw_step(code) / 2,
                "sample {sample}: error {error}"
            );
        }
    }

    #[test]
    fn quantizers_are_symmetric_around_minus_half() {
        for sample in 0..=i16::MAX {
            assert_eq!(ulaw_encode(!sample), ulaw_encode(sample) & 0x7F);
            // The sign is bit 7 in both laws; A-law's even-bit inversion leaves it alone.
            assert_eq!(alaw_encode(!sample), alaw_encode(sample) & 0x7F);
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut previous_u = ulaw_decode(ulaw_encode(i16::MIN));
        let mut previous_a = alaw_decode(alaw_encode(i16::MIN));
        for sample in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(sample));
            let a = alaw_decode(alaw_encode(sample));
            assert!(u >= previous_u && a >= previous_a, "sample {sample}");
            previous_u = u;
            previous_a = a;
        }
    }

    #[test]
    fn slice_helpers_convert_the_common_prefix() {
        let pcm = [0i16, -1, 1000, -1000, i16::MAX];
        let mut codes = [0u8; 4];
        assert_eq!(encode_ulaw(&pcm, &mut codes), 4);
        assert_eq!(codes, [0xFF, 0x7F, ulaw_encode(1000), ulaw_encode(-1000)]);

        let mut decoded = [0i16; 8];
        assert_eq!(decode_ulaw(&codes, &mut decoded), 4);
        assert_eq!(
            &decoded[..4],
            &[0, 0, ulaw_decode(codes[2]), ulaw_decode(codes[3])]
        );
        assert_eq!(decoded[4], 0);

        let mut a_codes = [0u8; 5];
        assert_eq!(encode_alaw(&pcm, &mut a_codes), 5);
        assert_eq!(a_codes[0], 0xD5);
        assert_eq!(a_codes[4], 0xAA);
        let mut a_decoded = [0i16; 3];
        assert_eq!(decode_alaw(&a_codes, &mut a_decoded), 3);
        assert_eq!(a_decoded, [8, -8, alaw_decode(alaw_encode(1000))]);
    }
}
