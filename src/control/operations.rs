//! Media operations (reference §3.6–3.12, §3.16–3.18, §5): the digit buffer every connection
//! keeps, and the termination conditions of each running operation — sans-IO.
//!
//! Owns: per connection, the buffered digits and the operations in progress, each with its
//! OperationId, its `TermCond*` parameters, `CommandTimeout` and `State`; deciding which
//! condition ends an operation (digits and timers here; end of data, silence and non-silence
//! are reported by the media engine and fed in by the control plane).
//! Must not: read the clock (time is the `now` argument), touch media, or emit events — the
//! control plane turns [`Finished`] into `<Action>_Complete` events and stops the engine's work.
//!
//! Precedence when one digit meets several conditions: `digit`, then `digitlist`, then
//! `digitpattern`, then `maxdigits`. When several timers are due at once: `maxtime`, then
//! `timeout`, then `interdigdelay`.

use std::time::{Duration, Instant};

/// Digits a connection buffers when nobody collects them; older ones are dropped.
pub const DIGIT_BUFFER_MAX: usize = 128;

/// Which action an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Play,
    PlayTone,
    Record,
    GatherDigits,
    DetectSilence,
    DetectNonSilence,
}

impl OperationKind {
    /// The action name (events are `<name>_Complete` / `<name>_Failed`).
    pub fn name(self) -> &'static str {
        match self {
            OperationKind::Play => "Play",
            OperationKind::PlayTone => "PlayTone",
            OperationKind::Record => "Record",
            OperationKind::GatherDigits => "GatherDigits",
            OperationKind::DetectSilence => "DetectSilence",
            OperationKind::DetectNonSilence => "DetectNonSilence",
        }
    }
}

/// Why an operation ended (the `TerminationCondition` values of reference §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// All prompts played; a tone's duration elapsed.
    Eod,
    MaxTime,
    MaxDigits,
    Digit,
    DigitList,
    DigitPattern,
    /// `TermCondInterDigitDelay` passed after the last digit (CUAE spelling).
    InterDigDelay,
    Silence,
    NonSilence,
    /// StopMediaOperation.
    UserStop,
    /// The connection or its call went away.
    AutoStop,
    /// `CommandTimeout`.
    Timeout,
}

impl Termination {
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Eod => "eod",
            Termination::MaxTime => "maxtime",
            Termination::MaxDigits => "maxdigits",
            Termination::Digit => "digit",
            Termination::DigitList => "digitlist",
            Termination::DigitPattern => "digitpattern",
            Termination::InterDigDelay => "interdigdelay",
            Termination::Silence => "silence",
            Termination::NonSilence => "nonsilence",
            Termination::UserStop => "userstop",
            Termination::AutoStop => "autostop",
            Termination::Timeout => "timeout",
        }
    }
}

/// The termination conditions an action was given (absent = not used).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermConds {
    pub max_time: Option<Duration>,
    pub max_digits: Option<u32>,
    pub digit: Option<char>,
    pub digit_list: Option<String>,
    pub digit_pattern: Option<String>,
    pub inter_digit_delay: Option<Duration>,
    pub silence: Option<Duration>,
    pub non_silence: Option<Duration>,
    pub command_timeout: Option<Duration>,
}

impl TermConds {
    /// Whether anything but the media itself can end the operation.
    pub fn is_empty(&self) -> bool {
        *self == TermConds::default()
    }
}

/// An operation that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub operation: u32,
    pub kind: OperationKind,
    pub termination: Termination,
    /// GatherDigits: the digits gathered (buffer at the start plus those since).
    pub digits: Option<String>,
    pub elapsed: Duration,
    pub state: Option<String>,
}

/// One operation in progress.
#[derive(Debug, Clone)]
struct Operation {
    id: u32,
    kind: OperationKind,
    conds: TermConds,
    started: Instant,
    /// Digits that arrived while this operation ran (for maxdigits on Play and Record).
    digits_seen: u32,
    /// When the last digit arrived (the inter-digit timer's origin).
    last_digit_at: Option<Instant>,
    state: Option<String>,
}

/// A connection's digit buffer and its operations.
#[derive(Debug, Default)]
pub struct Operations {
    buffer: String,
    running: Vec<Operation>,
}

impl Operations {
    /// Starts an operation. A GatherDigits first considers what is buffered already, so it
    /// may finish at once: that is returned.
    pub fn start(
        &mut self,
        now: Instant,
        id: u32,
        kind: OperationKind,
        conds: TermConds,
        state: Option<String>,
    ) -> Option<Finished> {
        let mut op = Operation {
            id,
            kind,
            conds,
            started: now,
            digits_seen: 0,
            last_digit_at: None,
            state,
        };
        if kind == OperationKind::GatherDigits && !self.buffer.is_empty() {
            op.last_digit_at = Some(now);
            let buffered: Vec<char> = self.buffer.chars().collect();
            for (i, &digit) in buffered.iter().enumerate() {
                op.digits_seen += 1;
                if let Some(t) = digit_termination(&op, &buffered[..=i], digit) {
                    let finished = self.finish_op(op, now, t);
                    return Some(finished);
                }
            }
        }
        self.running.push(op);
        None
    }

    /// A digit arrived (RFC 4733, in-band, SIP INFO, or SendDigits): it is buffered, and every
    /// operation it ends is returned.
    pub fn on_digit(&mut self, now: Instant, digit: char) -> Vec<Finished> {
        if self.buffer.len() >= DIGIT_BUFFER_MAX {
            self.buffer.remove(0);
        }
        self.buffer.push(digit);
        let buffered: Vec<char> = self.buffer.chars().collect();
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            let op = &mut self.running[i];
            op.digits_seen += 1;
            op.last_digit_at = Some(now);
            if let Some(t) = digit_termination(op, &buffered, digit) {
                let op = self.running.remove(i);
                ended.push(self.finish_op(op, now, t));
            } else {
                i += 1;
            }
        }
        ended
    }

    /// The earliest timer of any operation (maxtime, timeout, inter-digit delay).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running.iter().filter_map(timer).min()
    }

    /// Ends every operation whose timer has come.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Finished> {
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            match timer_termination(&self.running[i], now) {
                Some(t) => {
                    let op = self.running.remove(i);
                    ended.push(self.finish_op(op, now, t));
                }
                None => i += 1,
            }
        }
        ended
    }

    /// Ends one operation for a reason found elsewhere (end of data, silence, StopMediaOperation,
    /// the connection going away). None if it is not running.
    pub fn end(&mut self, now: Instant, id: u32, termination: Termination) -> Option<Finished> {
        let position = self.running.iter().position(|op| op.id == id)?;
        let op = self.running.remove(position);
        Some(self.finish_op(op, now, termination))
    }

    /// Ends every operation (StopMediaOperation without OperationId, connection release).
    pub fn end_all(&mut self, now: Instant, termination: Termination) -> Vec<Finished> {
        let running = std::mem::take(&mut self.running);
        running
            .into_iter()
            .map(|op| self.finish_op(op, now, termination))
            .collect()
    }

    /// Whether operation `id` is running.
    pub fn is_running(&self, id: u32) -> bool {
        self.running.iter().any(|op| op.id == id)
    }

    /// The running operations: (id, kind), oldest first.
    pub fn running(&self) -> Vec<(u32, OperationKind)> {
        self.running.iter().map(|op| (op.id, op.kind)).collect()
    }

    /// The running operation's silence/non-silence conditions (for the media engine).
    pub fn energy_conditions(&self, id: u32) -> Option<(Option<Duration>, Option<Duration>)> {
        let op = self.running.iter().find(|op| op.id == id)?;
        Some((op.conds.silence, op.conds.non_silence))
    }

    /// Digits buffered now.
    pub fn buffered(&self) -> &str {
        &self.buffer
    }

    fn finish_op(&mut self, op: Operation, now: Instant, termination: Termination) -> Finished {
        let digits = (op.kind == OperationKind::GatherDigits).then(|| {
            // The buffer is cleared after GatherDigits_Complete (reference §3.16).
            std::mem::take(&mut self.buffer)
        });
        Finished {
            operation: op.id,
            kind: op.kind,
            termination,
            digits,
            elapsed: now.saturating_duration_since(op.started),
            state: op.state,
        }
    }
}

/// The digit conditions `digit` (the newest of `buffered`) meets, in precedence order.
fn digit_termination(op: &Operation, buffered: &[char], digit: char) -> Option<Termination> {
    let conds = &op.conds;
    if conds.digit == Some(digit) {
        return Some(Termination::Digit);
    }
    if conds
        .digit_list
        .as_deref()
        .is_some_and(|list| list.contains(digit))
    {
        return Some(Termination::DigitList);
    }
    if let Some(pattern) = conds.digit_pattern.as_deref() {
        let pattern: Vec<char> = pattern.chars().collect();
        if !pattern.is_empty() && buffered.ends_with(&pattern) {
            return Some(Termination::DigitPattern);
        }
    }
    if conds.max_digits.is_some_and(|max| op.digits_seen >= max) {
        return Some(Termination::MaxDigits);
    }
    None
}

/// The next instant one of the operation's timers fires.
fn timer(op: &Operation) -> Option<Instant> {
    let conds = &op.conds;
    [
        conds.max_time.map(|d| op.started + d),
        conds.command_timeout.map(|d| op.started + d),
        conds
            .inter_digit_delay
            .zip(op.last_digit_at)
            .map(|(d, at)| at + d),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// The timer condition due at `now`, in precedence order.
fn timer_termination(op: &Operation, now: Instant) -> Option<Termination> {
    let conds = &op.conds;
    if conds.max_time.is_some_and(|d| op.started + d <= now) {
        return Some(Termination::MaxTime);
    }
    if conds.command_timeout.is_some_and(|d| op.started + d <= now) {
        return Some(Termination::Timeout);
    }
    if let (Some(d), Some(at)) = (conds.inter_digit_delay, op.last_digit_at) {
        if at + d <= now {
            return Some(Termination::InterDigDelay);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn gather(conds: TermConds) -> (Operations, Instant) {
        let now = crate::control::shell::virtual_epoch();
        let mut ops = Operations::default();
        assert!(ops
            .start(now, 1, OperationKind::GatherDigits, conds, Some("s".into()))
            .is_none());
        (ops, now)
    }

    #[test]
    fn digits_end_a_gather_by_digit_list_pattern_and_count_in_precedence_order() {
        let conds = TermConds {
            digit: Some('#'),
            max_digits: Some(4),
            ..TermConds::default()
        };
        let (mut ops, now) = gather(conds.clone());
        assert!(ops.on_digit(now + MS, '1').is_empty());
        assert!(ops.on_digit(now + MS * 2, '2').is_empty());
        let done = ops.on_digit(now + MS * 3, '#');
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].termination, Termination::Digit);
        assert_eq!(done[0].digits.as_deref(), Some("12#"));
        assert_eq!(done[0].elapsed, MS * 3);
        assert_eq!(done[0].state.as_deref(), Some("s"));
        assert_eq!(ops.buffered(), "", "the buffer is cleared after the gather");

        // '#' is the 4th digit and the digit: `digit` wins over `maxdigits`.
        let (mut ops, now) = gather(conds);
        for d in ['1', '2', '3'] {
            assert!(ops.on_digit(now, d).is_empty());
        }
        assert_eq!(ops.on_digit(now, '#')[0].termination, Termination::Digit);

        let (mut ops, now) = gather(TermConds {
            digit_list: Some("*0".into()),
            ..TermConds::default()
        });
        assert!(ops.on_digit(now, '5').is_empty());
        assert_eq!(
            ops.on_digit(now, '0')[0].termination,
            Termination::DigitList
        );

        let (mut ops, now) = gather(TermConds {
            digit_pattern: Some("1234".into()),
            max_digits: Some(10),
            ..TermConds::default()
        });
        for d in ['9', '1', '2', '3'] {
            assert!(ops.on_digit(now, d).is_empty());
        }
        let done = ops.on_digit(now, '4');
        assert_eq!(done[0].termination, Termination::DigitPattern);
        assert_eq!(done[0].digits.as_deref(), Some("91234"));

        let (mut ops, now) = gather(TermConds {
            max_digits: Some(2),
            ..TermConds::default()
        });
        assert!(ops.on_digit(now, '7').is_empty());
        assert_eq!(
            ops.on_digit(now, '8')[0].termination,
            Termination::MaxDigits
        );
    }

    #[test]
    fn a_gather_considers_the_buffer_at_its_start() {
        let now = crate::control::shell::virtual_epoch();
        let mut ops = Operations::default();
        for d in ['1', '2', '3'] {
            assert!(ops.on_digit(now, d).is_empty(), "nothing running: buffered");
        }
        assert_eq!(ops.buffered(), "123");
        let conds = TermConds {
            digit_pattern: Some("1234".into()),
            ..TermConds::default()
        };
        assert!(ops
            .start(now, 5, OperationKind::GatherDigits, conds, None)
            .is_none());
        let done = ops.on_digit(now + MS * 10, '4');
        assert_eq!(done[0].termination, Termination::DigitPattern);
        assert_eq!(done[0].digits.as_deref(), Some("1234"));

        // Buffered digits that already meet the condition finish the gather at once.
        let mut ops = Operations::default();
        ops.on_digit(now, '5');
        ops.on_digit(now, '#');
        let done = ops
            .start(
                now,
                6,
                OperationKind::GatherDigits,
                TermConds {
                    digit: Some('#'),
                    ..TermConds::default()
                },
                None,
            )
            .expect("finishes at once");
        assert_eq!(done.digits.as_deref(), Some("5#"));
        assert!(ops.running().is_empty());
    }

    #[test]
    fn timers_end_operations_in_precedence_order_at_the_right_instant() {
        let (mut ops, now) = gather(TermConds {
            max_time: Some(MS * 500),
            command_timeout: Some(MS * 500),
            ..TermConds::default()
        });
        assert_eq!(ops.poll_timeout(), Some(now + MS * 500));
        assert!(ops.handle_timeout(now + MS * 499).is_empty());
        let done = ops.handle_timeout(now + MS * 500);
        assert_eq!(
            done[0].termination,
            Termination::MaxTime,
            "maxtime before timeout"
        );

        let (mut ops, now) = gather(TermConds {
            command_timeout: Some(MS * 300),
            ..TermConds::default()
        });
        assert_eq!(
            ops.handle_timeout(now + MS * 300)[0].termination,
            Termination::Timeout
        );

        // The inter-digit timer runs from the last digit only.
        let (mut ops, now) = gather(TermConds {
            inter_digit_delay: Some(MS * 100),
            ..TermConds::default()
        });
        assert_eq!(
            ops.poll_timeout(),
            None,
            "no digit yet: no inter-digit timer"
        );
        ops.on_digit(now + MS * 1000, '1');
        ops.on_digit(now + MS * 1080, '2');
        assert_eq!(ops.poll_timeout(), Some(now + MS * 1180));
        assert!(ops.handle_timeout(now + MS * 1179).is_empty());
        let done = ops.handle_timeout(now + MS * 1180);
        assert_eq!(done[0].termination, Termination::InterDigDelay);
        assert_eq!(done[0].digits.as_deref(), Some("12"));
    }

    #[test]
    fn a_digit_ending_a_play_stays_buffered_for_a_later_gather() {
        let now = crate::control::shell::virtual_epoch();
        let mut ops = Operations::default();
        let conds = TermConds {
            digit: Some('5'),
            ..TermConds::default()
        };
        ops.start(now, 1, OperationKind::Play, conds, None);
        let done = ops.on_digit(now + MS, '5');
        assert_eq!(done[0].kind, OperationKind::Play);
        assert_eq!(done[0].digits, None);
        assert_eq!(ops.buffered(), "5");
    }

    #[test]
    fn stop_one_or_all_and_several_operations_at_once() {
        let now = crate::control::shell::virtual_epoch();
        let mut ops = Operations::default();
        ops.start(now, 1, OperationKind::Play, TermConds::default(), None);
        ops.start(
            now,
            2,
            OperationKind::GatherDigits,
            TermConds {
                max_digits: Some(1),
                ..TermConds::default()
            },
            None,
        );
        ops.start(now, 3, OperationKind::PlayTone, TermConds::default(), None);
        // One digit ends the gather only; the plays go on.
        let done = ops.on_digit(now, '9');
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].operation, 2);
        assert!(ops.is_running(1) && ops.is_running(3));
        let stopped = ops
            .end(now + MS * 7, 3, Termination::UserStop)
            .expect("running");
        assert_eq!(
            (stopped.operation, stopped.termination),
            (3, Termination::UserStop)
        );
        assert_eq!(stopped.elapsed, MS * 7);
        assert!(
            ops.end(now, 3, Termination::UserStop).is_none(),
            "not running any more"
        );
        let all = ops.end_all(now, Termination::AutoStop);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].termination.as_str(), "autostop");
        assert!(ops.running().is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let now = crate::control::shell::virtual_epoch();
        let mut ops = Operations::default();
        for _ in 0..DIGIT_BUFFER_MAX + 10 {
            ops.on_digit(now, '1');
        }
        assert_eq!(ops.buffered().len(), DIGIT_BUFFER_MAX);
    }
}
