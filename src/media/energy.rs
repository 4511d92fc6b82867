//! Silence and non-silence detection on the caller's decoded audio (DetectSilence,
//! DetectNonSilence, `TermCondSilence`, `TermCondNonSilence`) — sans-IO.
//!
//! Owns: one condition's state: how long the audio has continuously been on the wanted side of
//! the energy threshold, measured in 10 ms blocks.
//! Must not: read the clock (time is the amount of audio fed) or allocate.

use std::time::Duration;

/// Default energy threshold between silence and speech, dBFS (mean power of a 10 ms block).
/// Telephone line noise sits near −60 dBFS, speech at −30 to −15.
pub const DEFAULT_THRESHOLD_DBFS: f64 = -40.0;

/// Watches for `needed` of continuous silence (or non-silence).
#[derive(Debug, Clone)]
pub struct EnergyWatch {
    /// The operation this watch belongs to.
    pub operation: u64,
    /// True: wait for silence; false: for non-silence.
    pub want_silence: bool,
    needed: Duration,
    run: Duration,
    /// Mean square of a full-scale signal at the threshold.
    threshold_power: f64,
    /// Samples of the current 10 ms block so far, and their sum of squares.
    block_samples: u32,
    block_energy: f64,
}

impl EnergyWatch {
    pub fn new(operation: u64, want_silence: bool, needed: Duration, threshold_dbfs: f64) -> Self {
        let full_scale = 32768.0f64;
        EnergyWatch {
            operation,
            want_silence,
            needed,
            run: Duration::ZERO,
            threshold_power: full_scale * full_scale * 10f64.powf(threshold_dbfs / 10.0),
            block_samples: 0,
            block_energy: 0.0,
        }
    }

    /// Feeds audio at `rate`; true once the wanted state has lasted `needed` without a break.
    pub fn feed(&mut self, samples: &[i16], rate: u32) -> bool {
        let block = (rate / 100).max(1);
        for &s in samples {
            self.block_energy += f64::from(s) * f64::from(s);
            self.block_samples += 1;
            if self.block_samples == block {
                let silent = self.block_energy / f64::from(block) < self.threshold_power;
                self.block_samples = 0;
                self.block_energy = 0.0;
                if silent == self.want_silence {
                    self.run += Duration::from_millis(10);
                    if self.run >= self.needed {
                        return true;
                    }
                } else {
                    self.run = Duration::ZERO;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u32, amplitude: f64) -> Vec<i16> {
        (0..8 * ms)
            .map(|i| (amplitude * (f64::from(i) * 0.3).sin()) as i16)
            .collect()
    }

    #[test]
    fn silence_is_reported_after_its_duration_of_continuous_quiet() {
        let mut watch = EnergyWatch::new(1, true, Duration::from_millis(500), -40.0);
        assert!(
            !watch.feed(&tone(300, 8000.0), 8000),
            "speech is not silence"
        );
        assert!(
            !watch.feed(&tone(400, 50.0), 8000),
            "400 ms of quiet is not 500"
        );
        assert!(
            !watch.feed(&tone(20, 8000.0), 8000),
            "a word resets the run"
        );
        assert!(!watch.feed(&tone(490, 50.0), 8000));
        assert!(watch.feed(&tone(20, 50.0), 8000), "500 ms of quiet");
    }

    #[test]
    fn non_silence_is_reported_after_its_duration_of_sound_at_any_rate() {
        let mut watch = EnergyWatch::new(2, false, Duration::from_millis(200), -40.0);
        assert!(!watch.feed(&vec![0i16; 16 * 1000], 16000));
        let loud: Vec<i16> = (0..16 * 190)
            .map(|i| (3000.0 * (f64::from(i) * 0.2).sin()) as i16)
            .collect();
        assert!(!watch.feed(&loud, 16000));
        assert!(watch.feed(&loud[..16 * 10], 16000));
    }
}
