//! Talker detection for one conference participant: the energy of each contributed frame
//! against a fixed threshold, with an attack (a click is not a talker), a hang-over (the pauses
//! between words do not end a talkspurt) and a minimum interval between reported changes (a
//! flapping talker cannot flood the control plane).
//!
//! Owns: the per-participant detector state and its timing, in ticks of the conference.
//! Must not: allocate, queue events or know participant ids — the mixer asks each detector
//! whether it has a change to report.

/// A frame is speech when its RMS level reaches −40 dBFS (328 of 32 768): well above the
/// G.711 idle-channel noise (≈ −65 dBFS) and comfortable noise, below quiet speech (≈ −35 dBFS).
pub const THRESHOLD_RMS: u64 = 328;
/// Consecutive loud time before a participant counts as talking.
pub const ATTACK_MS: u32 = 40;
/// Quiet time after which a talking participant counts as stopped.
pub const HANGOVER_MS: u32 = 500;
/// Minimum time between two reported changes of one participant. A change that comes sooner is
/// reported when the interval has passed, unless the participant is back in the reported state
/// by then (then nothing is reported at all).
pub const MIN_REPORT_INTERVAL_MS: u32 = 1000;

/// The detector's timing converted to ticks of one conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TalkerTiming {
    attack_ticks: u32,
    hangover_ticks: u32,
    min_report_interval_ticks: u64,
}

impl TalkerTiming {
    /// Timing for ticks of `frame_ms` (at least 1 ms), each interval rounded up to whole ticks.
    pub(crate) fn for_frame_ms(frame_ms: u32) -> TalkerTiming {
        let frame_ms = frame_ms.max(1);
        let ticks = |ms: u32| ms.div_ceil(frame_ms).max(1);
        TalkerTiming {
            attack_ticks: ticks(ATTACK_MS),
            hangover_ticks: ticks(HANGOVER_MS),
            min_report_interval_ticks: u64::from(ticks(MIN_REPORT_INTERVAL_MS)),
        }
    }
}

/// Whether a frame of `samples` samples whose squares sum to `energy` is speech.
pub(crate) fn is_loud(energy: u64, samples: usize) -> bool {
    energy >= THRESHOLD_RMS * THRESHOLD_RMS * samples as u64
}

/// Sum of the squares of a frame (at most 2³⁰ per sample, so no overflow below 2³³ samples).
pub(crate) fn energy(frame: &[i16]) -> u64 {
    frame
        .iter()
        .map(|&s| {
            let s = i64::from(s);
            (s * s) as u64
        })
        .sum()
}

/// One participant's detector.
#[derive(Debug, Clone, Default)]
pub(crate) struct TalkerDetector {
    /// Consecutive loud ticks.
    loud_run: u32,
    /// Consecutive quiet ticks.
    quiet_run: u32,
    /// The detected state (after attack and hang-over).
    talking: bool,
    /// The state last reported to the consumer.
    reported: bool,
    /// Conference tick of the last report; `None` before the first one.
    last_report_tick: Option<u64>,
}

impl TalkerDetector {
    /// Feeds one tick's verdict.
    pub(crate) fn observe(&mut self, loud: bool, timing: &TalkerTiming) {
        if loud {
            self.quiet_run = 0;
            self.loud_run = self.loud_run.saturating_add(1);
            if self.loud_run >= timing.attack_ticks {
                self.talking = true;
            }
            return;
        }
        self.loud_run = 0;
        self.quiet_run = self.quiet_run.saturating_add(1);
        if self.quiet_run >= timing.hangover_ticks {
            self.talking = false;
        }
    }

    /// Whether the participant talks now (after attack and hang-over; reported or not).
    pub(crate) fn is_talking(&self) -> bool {
        self.talking
    }

    /// The state to report at `tick`, if it differs from the last report and the minimum
    /// interval has passed; it then counts as reported.
    pub(crate) fn take_change(&mut self, tick: u64, timing: &TalkerTiming) -> Option<bool> {
        if self.talking == self.reported {
            return None;
        }
        if let Some(last) = self.last_report_tick {
            if tick.saturating_sub(last) < timing.min_report_interval_ticks {
                return None;
            }
        }
        self.reported = self.talking;
        self.last_report_tick = Some(tick);
        Some(self.talking)
    }
}
