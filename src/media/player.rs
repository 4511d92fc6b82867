//! What a connection plays instead of its usual audio while a Play or PlayTone runs: prompt
//! samples or a dual tone, at whatever rate the consumer asks for, with a volume — sans-IO.
//!
//! Owns: the position in the prompt, the tone's phase and elapsed time, the conversion from the
//! prompt's rate to the rate asked for, and the volume.
//! Must not: read the clock or allocate per frame (the conversion is rebuilt only when the
//! consumer's rate changes, i.e. when the connection joins or leaves a conference).

use std::f64::consts::PI;
use std::sync::Arc;
use std::time::Duration;

use super::resample::Resampler;

/// What to play.
#[derive(Debug, Clone)]
pub enum PlaySource {
    /// Prompts, already decoded and joined: mono linear PCM at `rate`.
    Samples { pcm: Arc<[i16]>, rate: u32 },
    /// One or two frequencies (Hz) at their peak amplitudes (linear, full scale 32767), for
    /// `duration` (None: until stopped).
    Tone {
        frequencies: [f64; 2],
        amplitudes: [f64; 2],
        duration: Option<Duration>,
    },
}

/// Volume step of the CUAE `Volume` parameter: −10..10 in 2 dB steps (reference §3.7).
pub const VOLUME_STEP_DB: f64 = 2.0;

/// The gain of a CUAE volume setting (−10..=10 → −20..+20 dB).
pub fn volume_gain(volume: i32) -> f32 {
    10f64.powf(f64::from(volume) * VOLUME_STEP_DB / 20.0) as f32
}

/// A playout in progress.
pub struct Player {
    source: PlaySource,
    /// Samples of the prompt consumed so far.
    position: usize,
    /// Tone: samples generated so far, at `rate`.
    generated: u64,
    phases: [f64; 2],
    /// Output rate of the current conversion.
    rate: u32,
    resampler: Option<Resampler>,
    /// Prompt input for one frame (padded with silence at the end).
    scratch: Vec<i16>,
    gain: f32,
    done: bool,
    /// Faster or slower playback of a prompt (Speed ≠ 0), pitch kept.
    stretch: Option<Stretch>,
}

/// The playback rate of a CUAE `Speed` setting: 10 % per step, between half and double speed.
pub fn speed_ratio(speed: i32) -> f64 {
    (1.0 + 0.1 * f64::from(speed)).clamp(0.5, 2.0)
}

/// Time-scale modification by WSOLA (waveform-similarity overlap-add): the prompt is cut into
/// 20 ms Hann-windowed segments taken every `hop · ratio` input samples and laid down every
/// `hop` output samples; each segment's start is moved by up to half a hop to where it best
/// continues the previous one, so the pitch is kept and the joins are smooth.
struct Stretch {
    /// Input samples advanced per output sample (> 1: faster).
    ratio: f64,
    /// Where the next segment would start without the similarity search.
    position: f64,
    /// Where the last segment really started.
    previous: Option<usize>,
    /// Output samples per segment (10 ms at the prompt's rate).
    hop: usize,
    window: Vec<f32>,
    /// The second, windowed half of the last segment, added to the next one.
    tail: Vec<f32>,
    /// Output made but not yet taken.
    ready: Vec<i16>,
    /// The input is used up and its last tail has been given out.
    exhausted: bool,
}

impl Stretch {
    fn new(rate: u32, ratio: f64, position: usize) -> Stretch {
        let hop = (rate / 100).max(1) as usize;
        let length = 2 * hop;
        let window = (0..length)
            .map(|i| (0.5 - 0.5 * (2.0 * PI * i as f64 / length as f64).cos()) as f32)
            .collect();
        Stretch {
            ratio,
            position: position as f64,
            previous: None,
            hop,
            window,
            tail: vec![0.0; hop],
            ready: Vec::with_capacity(4 * hop),
            exhausted: false,
        }
    }

    /// Fills `out` (at the prompt's rate); true once everything has been played.
    fn fill(&mut self, pcm: &[i16], out: &mut [i16]) -> bool {
        while self.ready.len() < out.len() && !self.exhausted {
            self.segment(pcm);
        }
        let n = out.len().min(self.ready.len());
        out[..n].copy_from_slice(&self.ready[..n]);
        out[n..].fill(0);
        self.ready.drain(..n);
        self.exhausted && self.ready.is_empty()
    }

    fn segment(&mut self, pcm: &[i16]) {
        let sample = |i: usize| pcm.get(i).map_or(0.0, |&s| f32::from(s));
        if self.position >= pcm.len() as f64 {
            // Give out the last tail, then stop.
            self.ready
                .extend(self.tail.iter().map(|&v| v.round() as i16));
            self.tail.fill(0.0);
            self.exhausted = true;
            return;
        }
        let hop = self.hop;
        let nominal = self.position as usize;
        let start = match self.previous {
            None => nominal,
            Some(previous) => {
                let natural = previous + hop;
                let reach = hop / 2;
                let mut best = (f32::MIN, nominal);
                for candidate in nominal.saturating_sub(reach)..=nominal + reach {
                    let score: f32 = (0..hop)
                        .map(|i| sample(natural + i) * sample(candidate + i))
                        .sum();
                    if score > best.0 {
                        best = (score, candidate);
                    }
                }
                best.1
            }
        };
        for i in 0..hop {
            let value = self.tail[i] + self.window[i] * sample(start + i);
            self.ready
                .push(value.round().clamp(-32768.0, 32767.0) as i16);
            self.tail[i] = self.window[hop + i] * sample(start + hop + i);
        }
        self.previous = Some(start);
        self.position += hop as f64 * self.ratio;
    }
}

impl Player {
    pub fn new(source: PlaySource, gain: f32) -> Player {
        Player {
            source,
            position: 0,
            generated: 0,
            phases: [0.0; 2],
            rate: 0,
            resampler: None,
            scratch: Vec::new(),
            gain,
            done: false,
            stretch: None,
        }
    }

    /// Plays a prompt faster or slower (CUAE `Speed`, −10..=10), from the next frame on;
    /// tones are not affected.
    pub fn set_speed(&mut self, speed: i32) {
        let PlaySource::Samples { rate, .. } = &self.source else {
            return;
        };
        let ratio = speed_ratio(speed);
        match self.stretch.as_mut() {
            Some(stretch) => stretch.ratio = ratio,
            None if (ratio - 1.0).abs() > f64::EPSILON => {
                self.stretch = Some(Stretch::new(*rate, ratio, self.position));
            }
            None => {}
        }
    }

    /// Changes the volume from the next frame on (AdjustPlay).
    pub fn set_gain(&mut self, gain: f32) {
        self.gain = gain;
    }

    /// Whether everything has been played.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Fills `out` with the next `out.len()` samples at `rate`; silence once done. Returns
    /// false when the source could not be converted to `rate` (the player is then done).
    pub fn fill(&mut self, out: &mut [i16], rate: u32) -> bool {
        out.fill(0);
        if self.done {
            return true;
        }
        let ok = match &self.source {
            PlaySource::Tone {
                frequencies,
                amplitudes,
                duration,
            } => {
                let (frequencies, amplitudes, duration) = (*frequencies, *amplitudes, *duration);
                self.fill_tone(out, rate, frequencies, amplitudes, duration);
                true
            }
            PlaySource::Samples { .. } => self.fill_samples(out, rate),
        };
        if !ok {
            self.done = true;
            return false;
        }
        if (self.gain - 1.0).abs() > f32::EPSILON {
            for sample in out.iter_mut() {
                *sample = (f32::from(*sample) * self.gain)
                    .clamp(f32::from(i16::MIN), f32::from(i16::MAX))
                    as i16;
            }
        }
        true
    }

    fn fill_tone(
        &mut self,
        out: &mut [i16],
        rate: u32,
        frequencies: [f64; 2],
        amplitudes: [f64; 2],
        duration: Option<Duration>,
    ) {
        if rate != self.rate {
            // Keep time across a rate change: convert the elapsed count.
            if self.rate != 0 {
                self.generated = self.generated * u64::from(rate) / u64::from(self.rate);
            }
            self.rate = rate;
        }
        let limit = duration.map(|d| (d.as_secs_f64() * f64::from(rate)).round() as u64);
        for sample in out.iter_mut() {
            if limit.is_some_and(|limit| self.generated >= limit) {
                self.done = true;
                break;
            }
            let mut value = 0.0;
            for k in 0..2 {
                value += amplitudes[k] * self.phases[k].sin();
                self.phases[k] =
                    (self.phases[k] + 2.0 * PI * frequencies[k] / f64::from(rate)) % (2.0 * PI);
            }
            *sample = value.round().clamp(-32767.0, 32767.0) as i16;
            self.generated += 1;
        }
        if limit.is_some_and(|limit| self.generated >= limit) {
            self.done = true;
        }
    }

    fn fill_samples(&mut self, out: &mut [i16], rate: u32) -> bool {
        let PlaySource::Samples {
            pcm,
            rate: source_rate,
        } = &self.source
        else {
            return false;
        };
        let (pcm, source_rate) = (Arc::clone(pcm), *source_rate);
        if rate != self.rate || self.resampler.is_none() {
            match Resampler::new(source_rate, rate) {
                Ok(r) => self.resampler = Some(r),
                Err(_) => return false,
            }
            self.rate = rate;
        }
        let Some(resampler) = self.resampler.as_mut() else {
            return false;
        };
        let wanted = (out.len() as u64 * u64::from(source_rate) / u64::from(rate)) as usize;
        if let Some(stretch) = self.stretch.as_mut() {
            self.scratch.resize(wanted, 0);
            if stretch.fill(&pcm, &mut self.scratch) {
                self.done = true;
            }
            resampler.process(&self.scratch, out);
            return true;
        }
        let end = (self.position + wanted).min(pcm.len());
        self.scratch.clear();
        self.scratch.extend_from_slice(&pcm[self.position..end]);
        self.scratch.resize(wanted, 0);
        self.position = end;
        resampler.process(&self.scratch, out);
        if self.position >= pcm.len() {
            self.done = true;
        }
        true
    }
}

/// The linear peak amplitude of a level in dB relative to full scale (CUAE `Amplitude`:
/// −40..0 dB).
pub fn amplitude_of_db(db: i32) -> f64 {
    32767.0 * 10f64.powf(f64::from(db) / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tone::goertzel_power;

    #[test]
    fn a_prompt_plays_to_its_end_at_any_rate_then_reports_done() {
        let pcm: Arc<[i16]> = (0..8000)
            .map(|i| ((2.0 * PI * 500.0 * f64::from(i) / 8000.0).sin() * 8000.0) as i16)
            .collect::<Vec<_>>()
            .into();
        for rate in [8000u32, 16000, 48000] {
            let mut player = Player::new(
                PlaySource::Samples {
                    pcm: Arc::clone(&pcm),
                    rate: 8000,
                },
                1.0,
            );
            let frame = (rate / 50) as usize;
            let mut out = vec![0i16; frame];
            let mut heard = Vec::new();
            let mut frames = 0;
            while !player.is_done() {
                assert!(player.fill(&mut out, rate));
                heard.extend_from_slice(&out);
                frames += 1;
                assert!(frames <= 60, "a 1 s prompt ends after 50 frames");
            }
            assert_eq!(frames, 50, "{rate}");
            let on = goertzel_power(&heard[frame * 10..], rate, 500.0);
            let off = goertzel_power(&heard[frame * 10..], rate, 1300.0);
            assert!(on > 1e7 && on > off * 100.0, "{rate}: {on} vs {off}");
            assert!(player.fill(&mut out, rate));
            assert!(out.iter().all(|&s| s == 0), "silence after the end");
        }
    }

    #[test]
    fn a_tone_has_its_frequencies_levels_and_duration() {
        let mut player = Player::new(
            PlaySource::Tone {
                frequencies: [697.0, 1209.0],
                amplitudes: [amplitude_of_db(-10), amplitude_of_db(-16)],
                duration: Some(Duration::from_millis(300)),
            },
            1.0,
        );
        let mut out = vec![0i16; 160];
        let mut heard = Vec::new();
        while !player.is_done() {
            player.fill(&mut out, 8000);
            heard.extend_from_slice(&out);
        }
        assert_eq!(heard.len(), 160 * 15, "300 ms in 20 ms frames");
        let low = goertzel_power(&heard, 8000, 697.0);
        let high = goertzel_power(&heard, 8000, 1209.0);
        let expected_low = amplitude_of_db(-10).powi(2) / 2.0;
        assert!(
            (low / expected_low - 1.0).abs() < 0.05,
            "{low} vs {expected_low}"
        );
        assert!(
            (10.0 * (low / high).log10() - 6.0).abs() < 0.5,
            "6 dB apart"
        );
        // Endless tone: never done.
        let mut endless = Player::new(
            PlaySource::Tone {
                frequencies: [400.0, 0.0],
                amplitudes: [amplitude_of_db(-10), 0.0],
                duration: None,
            },
            1.0,
        );
        for _ in 0..500 {
            endless.fill(&mut out, 8000);
        }
        assert!(!endless.is_done());
    }

    #[test]
    fn speed_changes_the_duration_and_keeps_the_pitch() {
        let pcm: Arc<[i16]> = (0..8000)
            .map(|i| ((2.0 * PI * 600.0 * f64::from(i) / 8000.0).sin() * 8000.0) as i16)
            .collect::<Vec<_>>()
            .into();
        for (speed, expected_frames) in [(5, 34i32), (-5, 100), (10, 25), (0, 50)] {
            let mut player = Player::new(
                PlaySource::Samples {
                    pcm: Arc::clone(&pcm),
                    rate: 8000,
                },
                1.0,
            );
            player.set_speed(speed);
            let mut out = vec![0i16; 160];
            let mut heard = Vec::new();
            let mut frames = 0;
            while !player.is_done() {
                player.fill(&mut out, 8000);
                heard.extend_from_slice(&out);
                frames += 1;
                assert!(frames < 200);
            }
            assert!(
                (frames - expected_frames).abs() <= 2,
                "speed {speed}: {frames} frames, expected about {expected_frames}"
            );
            let middle = &heard[heard.len() / 4..heard.len() * 3 / 4];
            let pitch = goertzel_power(middle, 8000, 600.0);
            assert!(
                pitch > 1e7 && pitch > goertzel_power(middle, 8000, 900.0) * 100.0,
                "speed {speed}: still 600 Hz ({pitch})"
            );
        }
        assert_eq!(speed_ratio(-10), 0.5);
        assert_eq!(speed_ratio(10), 2.0);
    }

    #[test]
    fn volume_scales_by_two_db_per_step() {
        assert!((volume_gain(0) - 1.0).abs() < 1e-6);
        assert!((20.0 * f64::from(volume_gain(5)).log10() - 10.0).abs() < 1e-3);
        let pcm: Arc<[i16]> = vec![1000i16; 800].into();
        let mut loud = Player::new(PlaySource::Samples { pcm, rate: 8000 }, volume_gain(10));
        let mut out = vec![0i16; 160];
        loud.fill(&mut out, 8000);
        assert_eq!(out[80], 10000, "+20 dB is ×10");
    }
}
