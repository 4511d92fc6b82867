//! Virtual-time mixer tests: tones in, Goertzel on what each participant hears.

use super::*;
use crate::media::alloc_counter::allocations_during;
use crate::media::tone::goertzel_power;

const RATE: u32 = 8000;
const FRAME: usize = 160;

/// Every tone is a whole number of cycles per 20 ms frame (a multiple of 50 Hz), so a
/// frame-long Goertzel sees no leakage between them.
const TONE_A: f64 = 500.0;
const TONE_B: f64 = 1100.0;
const TONE_C: f64 = 1700.0;
const TONE_K: f64 = 2300.0;
const TONE_M: f64 = 2900.0;
const AMPLITUDE: f64 = 4000.0;

const A: ParticipantId = 1;
const B: ParticipantId = 2;
const C: ParticipantId = 3;
const K: ParticipantId = 10;
const M: ParticipantId = 20;
const P: ParticipantId = 30;

fn config(max_participants: usize) -> MixerConfig {
    MixerConfig {
        sample_rate: RATE,
        frame_ms: 20,
        max_participants,
    }
}

fn tone(hz: f64, amplitude: f64) -> Vec<i16> {
    (0..FRAME)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(RATE);
            (amplitude * phase.sin()).round() as i16
        })
        .collect()
}

/// Whether `hz` is in `samples` at (about) the test amplitude; fails loudly on anything in
/// between "clearly there" and "clearly absent".
fn hears(samples: &[i16], hz: f64) -> bool {
    let full = AMPLITUDE * AMPLITUDE / 2.0;
    let power = goertzel_power(samples, RATE, hz);
    assert!(
        power > 0.9 * full || power < 1e-4 * full,
        "{hz} Hz at an ambiguous level ({power:.1} vs {full:.1})"
    );
    power > 0.9 * full
}

/// The tones a participant hears, out of all the test tones.
fn heard_by(mixer: &Mixer, id: ParticipantId) -> Vec<f64> {
    let out = mixer.output(id).expect("participant is in the conference");
    [TONE_A, TONE_B, TONE_C, TONE_K, TONE_M]
        .into_iter()
        .filter(|&hz| hears(out, hz))
        .collect()
}

fn talker(hz: f64) -> (Vec<i16>, f64) {
    (tone(hz, AMPLITUDE), hz)
}

/// One tick: everyone in `talkers` contributes its tone, then the mix.
fn tick(mixer: &mut Mixer, talkers: &[(ParticipantId, f64)]) {
    for &(id, hz) in talkers {
        mixer.contribute(id, &tone(hz, AMPLITUDE));
    }
    mixer.mix();
}

fn room(ids: &[ParticipantId]) -> Mixer {
    let mut mixer = Mixer::new(config(16));
    for &id in ids {
        mixer
            .add(id, ParticipantFlags::default())
            .expect("room has space");
    }
    mixer
}

const ABC: [(ParticipantId, f64); 3] = [(A, TONE_A), (B, TONE_B), (C, TONE_C)];

#[test]
fn each_hears_the_other_two_and_never_itself() {
    let mut mixer = room(&[A, B, C]);
    tick(&mut mixer, &ABC);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B, TONE_C]);
    assert_eq!(heard_by(&mixer, B), vec![TONE_A, TONE_C]);
    assert_eq!(heard_by(&mixer, C), vec![TONE_A, TONE_B]);

    // Below the knee the mix is exact: A hears exactly B + C.
    let (b, _) = talker(TONE_B);
    let (c, _) = talker(TONE_C);
    let expected: Vec<i16> = b.iter().zip(&c).map(|(&x, &y)| x + y).collect();
    assert_eq!(mixer.output(A), Some(&expected[..]));
}

#[test]
fn a_participant_that_sends_nothing_this_tick_is_silent() {
    let mut mixer = room(&[A, B, C]);
    tick(&mut mixer, &ABC);
    tick(&mut mixer, &[(B, TONE_B)]);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B]);
    assert_eq!(heard_by(&mixer, B), Vec::<f64>::new());
    assert_eq!(heard_by(&mixer, C), vec![TONE_B]);
    tick(&mut mixer, &[]);
    for id in [A, B, C] {
        assert!(mixer.output(id).expect("present").iter().all(|&s| s == 0));
    }
}

#[test]
fn before_the_first_tick_everyone_hears_silence_and_strangers_nothing() {
    let mixer = room(&[A]);
    assert_eq!(mixer.output(A), Some(&[0i16; FRAME][..]));
    assert_eq!(mixer.output(B), None);
    assert_eq!(mixer.frame_len(), FRAME);
}

#[test]
fn muted_participant_is_not_heard_but_still_hears() {
    let mut mixer = room(&[A, B, C]);
    let muted = ParticipantFlags {
        muted: true,
        ..ParticipantFlags::default()
    };
    mixer.set_flags(A, muted).expect("A is here");
    tick(&mut mixer, &ABC);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B, TONE_C]);
    assert_eq!(heard_by(&mixer, B), vec![TONE_C]);
    assert_eq!(heard_by(&mixer, C), vec![TONE_B]);

    // Unmuted at the next tick: heard again.
    mixer
        .set_flags(A, ParticipantFlags::default())
        .expect("A is here");
    tick(&mut mixer, &ABC);
    assert_eq!(heard_by(&mixer, B), vec![TONE_A, TONE_C]);

    // Muted after contributing but before the mix: that contribution is dropped.
    mixer.contribute(A, &tone(TONE_A, AMPLITUDE));
    mixer.set_flags(A, muted).expect("A is here");
    tick(&mut mixer, &[(B, TONE_B), (C, TONE_C)]);
    assert_eq!(heard_by(&mixer, C), vec![TONE_B]);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B, TONE_C]);
}

#[test]
fn deaf_participant_is_heard_but_hears_silence() {
    let mut mixer = room(&[B, C]);
    let deaf = ParticipantFlags {
        deaf: true,
        ..ParticipantFlags::default()
    };
    mixer.add(A, deaf).expect("room has space");
    tick(&mut mixer, &ABC);
    let out = mixer.output(A).expect("A is in the conference");
    assert!(out.iter().all(|&s| s == 0), "A hears nothing");
    assert_eq!(heard_by(&mixer, B), vec![TONE_A, TONE_C]);
    assert_eq!(heard_by(&mixer, C), vec![TONE_A, TONE_B]);
}

#[test]
fn receive_only_participant_hears_but_is_not_heard() {
    let mut mixer = room(&[B, C]);
    let receive_only = ParticipantFlags {
        receive_only: true,
        ..ParticipantFlags::default()
    };
    mixer.add(A, receive_only).expect("room has space");
    tick(&mut mixer, &ABC);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B, TONE_C]);
    assert_eq!(heard_by(&mixer, B), vec![TONE_C]);
    assert_eq!(heard_by(&mixer, C), vec![TONE_B]);
}

#[test]
fn monitor_hears_everyone_and_is_heard_by_nobody() {
    let mut mixer = room(&[A, B, C]);
    let monitor = ParticipantFlags {
        monitor: true,
        ..ParticipantFlags::default()
    };
    mixer.add(M, monitor).expect("room has space");
    tick(
        &mut mixer,
        &[(A, TONE_A), (B, TONE_B), (C, TONE_C), (M, TONE_M)],
    );
    assert_eq!(heard_by(&mixer, M), vec![TONE_A, TONE_B, TONE_C]);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B, TONE_C]);
    assert_eq!(heard_by(&mixer, B), vec![TONE_A, TONE_C]);
    assert_eq!(heard_by(&mixer, C), vec![TONE_A, TONE_B]);
    assert_eq!(mixer.len(), 4);
}

#[test]
fn coach_is_heard_only_by_the_pupil() {
    let mut mixer = room(&[A, B, K, P]);
    mixer.set_coach(Some(K)).expect("K is here");
    mixer.set_pupil(Some(P)).expect("P is here");
    // P talks with the C tone.
    let talkers = [(A, TONE_A), (B, TONE_B), (K, TONE_K), (P, TONE_C)];
    tick(&mut mixer, &talkers);
    assert_eq!(heard_by(&mixer, P), vec![TONE_A, TONE_B, TONE_K]);
    assert_eq!(heard_by(&mixer, K), vec![TONE_A, TONE_B, TONE_C]);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B, TONE_C]);
    assert_eq!(heard_by(&mixer, B), vec![TONE_A, TONE_C]);

    // A monitor does not hear the coach either: only the pupil does.
    let monitor = ParticipantFlags {
        monitor: true,
        ..ParticipantFlags::default()
    };
    mixer.add(M, monitor).expect("room has space");
    tick(&mut mixer, &talkers);
    assert_eq!(heard_by(&mixer, M), vec![TONE_A, TONE_B, TONE_C]);

    // Without a pupil nobody hears the coach; the coach still hears everyone.
    mixer.set_pupil(None).expect("clearing always works");
    tick(&mut mixer, &talkers);
    assert_eq!(heard_by(&mixer, P), vec![TONE_A, TONE_B]);
    assert_eq!(heard_by(&mixer, K), vec![TONE_A, TONE_B, TONE_C]);

    // The coach role moves; the old coach is a normal conferee again.
    mixer.set_pupil(Some(P)).expect("P is here");
    mixer.set_coach(Some(A)).expect("A is here");
    tick(&mut mixer, &talkers);
    assert_eq!(heard_by(&mixer, P), vec![TONE_A, TONE_B, TONE_K]);
    assert_eq!(heard_by(&mixer, B), vec![TONE_C, TONE_K]);
}

#[test]
fn pupil_cannot_be_coach_and_roles_need_participants() {
    let mut mixer = room(&[K, P]);
    mixer.set_coach(Some(K)).expect("K is here");
    assert_eq!(
        mixer.set_pupil(Some(K)),
        Err(MixerError::PupilCannotCoach(K))
    );
    mixer.set_pupil(Some(P)).expect("P is here");
    assert_eq!(
        mixer.set_coach(Some(P)),
        Err(MixerError::PupilCannotCoach(P))
    );
    assert_eq!(mixer.set_coach(Some(99)), Err(MixerError::Unknown(99)));
    assert_eq!(mixer.set_pupil(Some(99)), Err(MixerError::Unknown(99)));

    // Removing the coach removes the role: a re-added K is an ordinary participant.
    assert!(mixer.remove(K));
    mixer
        .add(K, ParticipantFlags::default())
        .expect("room has space");
    tick(&mut mixer, &[(K, TONE_K)]);
    assert_eq!(heard_by(&mixer, P), vec![TONE_K]);
}

#[test]
fn add_refuses_duplicates_and_a_full_room() {
    let mut mixer = Mixer::new(config(2));
    assert!(mixer.is_empty());
    mixer
        .add(A, ParticipantFlags::default())
        .expect("room has space");
    assert_eq!(
        mixer.add(A, ParticipantFlags::default()),
        Err(MixerError::Duplicate(A))
    );
    mixer
        .add(B, ParticipantFlags::default())
        .expect("room has space");
    assert_eq!(
        mixer.add(C, ParticipantFlags::default()),
        Err(MixerError::Full)
    );
    assert_eq!(mixer.len(), 2);
    assert_eq!(
        mixer.set_flags(C, ParticipantFlags::default()),
        Err(MixerError::Unknown(C))
    );
}

#[test]
fn removing_a_participant() {
    let mut mixer = room(&[A, B, C, 4]);
    tick(&mut mixer, &ABC);
    // Removing A moves the last participant into A's buffers; everyone must be unaffected.
    assert!(mixer.remove(A));
    assert!(!mixer.remove(A));
    assert_eq!(mixer.output(A), None);
    assert_eq!(mixer.len(), 3);
    assert_eq!(
        heard_by(&mixer, B),
        vec![TONE_A, TONE_C],
        "last tick's mix stays readable"
    );
    assert_eq!(heard_by(&mixer, 4), vec![TONE_A, TONE_B, TONE_C]);

    // A contribution still pending when a participant leaves is not mixed.
    mixer.contribute(B, &tone(TONE_B, AMPLITUDE));
    assert!(mixer.remove(B));
    tick(&mut mixer, &[(A, TONE_A), (C, TONE_C), (4, TONE_K)]);
    assert_eq!(heard_by(&mixer, C), vec![TONE_K]);
    assert_eq!(heard_by(&mixer, 4), vec![TONE_C]);

    assert!(mixer.remove(C));
    assert!(mixer.remove(4));
    assert!(mixer.is_empty());
    tick(&mut mixer, &[]);
    mixer
        .add(A, ParticipantFlags::default())
        .expect("room has space");
    mixer
        .add(B, ParticipantFlags::default())
        .expect("room has space");
    tick(&mut mixer, &ABC);
    assert_eq!(heard_by(&mixer, A), vec![TONE_B]);
}

#[test]
fn full_scale_inputs_from_many_participants_never_wrap() {
    let participants = 200;
    let mut mixer = Mixer::new(config(participants));
    for id in 0..participants as ParticipantId {
        mixer
            .add(id, ParticipantFlags::default())
            .expect("room has space");
    }
    // A full-scale square wave from everybody, then full-scale DC of each sign.
    let square: Vec<i16> = (0..FRAME)
        .map(|n| {
            if (n / 10) % 2 == 0 {
                i16::MAX
            } else {
                i16::MIN
            }
        })
        .collect();
    for input in [square, vec![i16::MAX; FRAME], vec![i16::MIN; FRAME]] {
        for id in 0..participants as ParticipantId {
            mixer.contribute(id, &input);
        }
        mixer.mix();
        for id in 0..participants as ParticipantId {
            let out = mixer.output(id).expect("present");
            for (&o, &i) in out.iter().zip(&input) {
                assert_eq!(o.signum(), i.signum(), "sign kept: in {i}, out {o}");
                assert!(o.unsigned_abs() > KNEE as u16, "loud stays loud: {o}");
            }
        }
    }

    // One full-scale talker among silent ones: still the right sign, only compressed.
    mixer.contribute(0, &[i16::MIN; FRAME]);
    mixer.mix();
    let out = mixer.output(1).expect("present");
    assert!(out.iter().all(|&o| o < -KNEE as i16 && o > i16::MIN));
}

#[test]
fn soft_clip_is_identity_below_the_knee_and_monotonic_above() {
    for v in [-KNEE, -1000, -1, 0, 1, 1000, KNEE] {
        assert_eq!(i32::from(soft_clip(v)), v);
    }
    let mut previous = soft_clip(-40_000_000);
    assert!(previous > i16::MIN);
    for v in (-40_000_000..40_000_000).step_by(997) {
        let y = soft_clip(v);
        assert!(y >= previous, "monotonic at {v}");
        assert!(i32::from(y - previous) <= 997, "slope at most 1 at {v}");
        previous = y;
    }
    assert_eq!(soft_clip(i32::MAX), i16::MAX);
    assert_eq!(soft_clip(i32::MIN), -i16::MAX);
    assert_eq!(
        soft_clip(-32_768),
        -28_672,
        "one full-scale talker: about −1.2 dB"
    );
    assert_eq!(
        soft_clip(KNEE + 1),
        (KNEE + 1) as i16,
        "continuous at the knee"
    );
}

#[test]
fn tariff_tone_is_heard_periodically_by_who_asked_for_it() {
    let mut mixer = room(&[A, B]);
    let tariff = ParticipantFlags {
        tariff_tone: true,
        ..ParticipantFlags::default()
    };
    mixer.set_flags(A, tariff).expect("A is here");
    let ticks_on = (TARIFF_TONE_ON_MS / 20) as usize;
    let period = (TARIFF_TONE_PERIOD_MS / 20) as usize;
    let mut heard = Vec::new();
    for _ in 0..2 * period {
        tick(&mut mixer, &[(B, TONE_B)]);
        let out = mixer.output(A).expect("present");
        let tariff_power = goertzel_power(out, RATE, f64::from(TARIFF_TONE_HZ));
        heard.push(tariff_power > TARIFF_TONE_PEAK * TARIFF_TONE_PEAK / 4.0);
        assert!(hears(out, TONE_B), "the conference is still heard");
        let other = mixer.output(B).expect("present");
        assert!(goertzel_power(other, RATE, f64::from(TARIFF_TONE_HZ)) < 1.0);
    }
    let expected: Vec<bool> = (0..2 * period).map(|t| t % period < ticks_on).collect();
    assert_eq!(heard, expected);
}

/// Drives `mixer` for `ticks` ticks with A talking when `loud(t)`, polling after each one;
/// returns (tick index, event).
fn talker_events(
    mixer: &mut Mixer,
    ticks: usize,
    loud: impl Fn(usize) -> bool,
) -> Vec<(usize, TalkerEvent)> {
    let quiet = tone(TONE_A, 100.0); // −50 dBFS: background, not a talker
    let speech = tone(TONE_A, AMPLITUDE);
    let mut events = Vec::new();
    for t in 0..ticks {
        mixer.contribute(A, if loud(t) { &speech } else { &quiet });
        mixer.contribute(B, &quiet);
        mixer.mix();
        while let Some(event) = mixer.poll_talker_event() {
            events.push((t, event));
        }
    }
    events
}

#[test]
fn talker_events_have_attack_and_hang_over() {
    let mut mixer = room(&[A, B]);
    // Talk for 1 s with a 200 ms pause in the middle, then silence.
    let events = talker_events(&mut mixer, 150, |t| t < 20 || (30..50).contains(&t));
    let attack = (ATTACK_MS / 20) as usize;
    let hang = (HANGOVER_MS / 20) as usize;
    assert_eq!(
        events,
        vec![
            (attack - 1, TalkerEvent::Started { id: A }),
            // The pause is shorter than the hang-over: one talkspurt.
            (50 + hang - 1, TalkerEvent::Stopped { id: A }),
        ]
    );
    // A single loud tick is a click, not a talker.
    let events = talker_events(&mut mixer, 60, |t| t == 10);
    assert_eq!(events, vec![]);
}

#[test]
fn talker_events_are_rate_limited() {
    let mut mixer = room(&[A, B]);
    let interval = (MIN_REPORT_INTERVAL_MS / 20) as usize;
    let hang = (HANGOVER_MS / 20) as usize;
    // A short word: detection stops after the hang-over, but the Stopped waits for the interval.
    let events = talker_events(&mut mixer, 120, |t| t < 3);
    assert_eq!(
        events,
        vec![
            (1, TalkerEvent::Started { id: A }),
            (1 + interval, TalkerEvent::Stopped { id: A }),
        ]
    );
    assert!(
        2 + hang < 1 + interval,
        "the test needs hang-over < interval"
    );

    // Stop and restart within the interval after the last report: neither is reported.
    let mut mixer = room(&[A, B]);
    let restart = 2 + hang + 2;
    let events = talker_events(&mut mixer, 200, |t| t < 3 || t >= restart);
    assert_eq!(events, vec![(1, TalkerEvent::Started { id: A })]);

    // A muted talker stops (after the hang-over and interval) like a silent one.
    let mut mixer = room(&[A, B]);
    let mut events = talker_events(&mut mixer, 10, |_| true);
    let muted = ParticipantFlags {
        muted: true,
        ..ParticipantFlags::default()
    };
    mixer.set_flags(A, muted).expect("A is here");
    events.extend(talker_events(&mut mixer, 100, |_| true));
    assert_eq!(
        events,
        vec![
            (1, TalkerEvent::Started { id: A }),
            (interval + 1 - 10, TalkerEvent::Stopped { id: A }),
        ]
    );
}

#[test]
fn contribute_mix_output_and_events_do_not_allocate() {
    let participants = 50;
    let mut mixer = Mixer::new(MixerConfig {
        sample_rate: 48_000,
        frame_ms: 20,
        max_participants: participants,
    });
    let frame = mixer.frame_len();
    for id in 0..participants as ParticipantId {
        mixer
            .add(id, ParticipantFlags::default())
            .expect("room has space");
    }
    let monitor = ParticipantFlags {
        monitor: true,
        tariff_tone: true,
        ..ParticipantFlags::default()
    };
    mixer.set_flags(7, monitor).expect("7 is here");
    mixer.set_coach(Some(3)).expect("3 is here");
    mixer.set_pupil(Some(4)).expect("4 is here");
    let loud: Vec<i16> = (0..frame).map(|n| ((n * 7919) % 60_000) as i16).collect();
    let mut checksum = 0i64;
    let allocations = allocations_during(|| {
        for t in 0..100u32 {
            for id in 0..participants as ParticipantId {
                if (id + t) % 3 != 0 {
                    mixer.contribute(id, &loud);
                }
            }
            mixer.mix();
            for id in 0..participants as ParticipantId {
                checksum += i64::from(mixer.output(id).expect("present")[0]);
            }
            while let Some(event) = mixer.poll_talker_event() {
                checksum += i64::from(matches!(event, TalkerEvent::Started { .. }));
            }
        }
    });
    assert_eq!(allocations, 0, "checksum {checksum}");
    assert_eq!(
        allocations_during(|| drop(vec![0u8; 8])),
        1,
        "the counter counts"
    );
}

#[test]
fn quiet_frames_of_a_silent_participant_stay_out_of_the_mix_and_it_shares_the_common_one() {
    let mut mixer = room(&[A, B, C]);
    // −56 dBFS hiss from C: under the gate, and C is not talking.
    let hiss = tone(TONE_C, 50.0);
    mixer.contribute(A, &tone(TONE_A, AMPLITUDE));
    mixer.contribute(C, &hiss);
    mixer.mix();
    // B and C hear exactly A (C's hiss is not in anyone's mix), from one shared copy.
    let a = tone(TONE_A, AMPLITUDE);
    assert_eq!(mixer.output(B), Some(&a[..]));
    assert_eq!(mixer.output(C), Some(&a[..]));
    assert!(mixer.shares_output(B) && mixer.shares_output(C));
    // The talker has a mix of its own: everyone but itself (silence here).
    assert!(!mixer.shares_output(A));
    assert_eq!(mixer.output(A), Some(&[0i16; FRAME][..]));
    assert!(!mixer.shares_output(P), "a stranger shares nothing");

    // At the gate's level or above, a frame is mixed, and its sender gets its own N−1.
    let murmur = tone(TONE_C, 200.0); // −44 dBFS: not a talker, not under the gate
    mixer.contribute(A, &a);
    mixer.contribute(C, &murmur);
    mixer.mix();
    let both: Vec<i16> = a.iter().zip(&murmur).map(|(&x, &y)| x + y).collect();
    assert_eq!(mixer.output(B), Some(&both[..]));
    assert_eq!(mixer.output(C), Some(&a[..]));
    assert!(!mixer.shares_output(C));
}

#[test]
fn a_talker_is_mixed_whatever_its_level_until_its_hang_over_ends() {
    let mut mixer = room(&[A, B]);
    let speech = tone(TONE_A, AMPLITUDE);
    let hiss = tone(TONE_A, 50.0);
    for _ in 0..(ATTACK_MS / 20) {
        mixer.contribute(A, &speech);
        mixer.mix();
    }
    // A talks: its quiet frames (a pause between words) still reach B, exactly.
    mixer.contribute(A, &hiss);
    mixer.mix();
    assert_eq!(mixer.output(B), Some(&hiss[..]));
    assert!(!mixer.shares_output(A));
    // After the hang-over, the same hiss is gated and A shares the common mix again.
    for _ in 0..(HANGOVER_MS / 20) {
        mixer.contribute(A, &hiss);
        mixer.mix();
    }
    mixer.contribute(A, &hiss);
    mixer.mix();
    assert_eq!(mixer.output(B), Some(&[0i16; FRAME][..]));
    assert!(mixer.shares_output(A) && mixer.shares_output(B));
}
