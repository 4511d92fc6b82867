//! Prompts and tones a session plays to its peer instead of its usual audio (echo, conference
//! mix, nothing), outside conferences on its own ticks.
//!
//! Owns: the session's [`Player`] (start, stop, volume, speed, hand-over to a rebuilt session)
//! and encoding one ptime of it per tick.
//! Must not: decide the conference's share (in a conference, `conference` plays the prompt in
//! place of the mix), or allocate per frame.

use std::time::{Duration, Instant};

use super::audio::AudioPath;
use super::send::Outgoing;
use super::{aligned_tick, MediaSession, SessionEvent};
use crate::media::codec::pcm_rate;
use crate::media::player::{PlaySource, Player};

impl MediaSession {
    /// Plays `source` to the peer instead of the session's usual audio (echo, conference mix,
    /// nothing) until it ends ([`SessionEvent::PlayoutDone`]) or [`MediaSession::stop_playout`];
    /// replaces a playout in progress. In a conference the session is also not heard meanwhile.
    pub fn start_playout(&mut self, now: Instant, operation: u64, source: PlaySource, gain: f32) {
        self.player = Some((operation, Box::new(Player::new(source, gain))));
        if self.room.is_none() && self.next_tick.is_none() {
            let ptime = self
                .audio
                .as_ref()
                .map(AudioPath::ptime)
                .unwrap_or(Duration::from_millis(20));
            self.next_tick = Some(aligned_tick(self.config.tick_epoch, now, ptime));
        }
    }

    /// Stops the playout of `operation` (if it is the one playing); true if it was.
    pub fn stop_playout(&mut self, now: Instant, operation: u64) -> bool {
        if self.player.as_ref().map(|(op, _)| *op) != Some(operation) {
            return false;
        }
        self.player = None;
        self.restore_tick(now);
        true
    }

    /// Changes the volume of the playout in progress (AdjustPlay).
    pub fn set_playout_gain(&mut self, gain: f32) -> bool {
        match self.player.as_mut() {
            Some((_, player)) => {
                player.set_gain(gain);
                true
            }
            None => false,
        }
    }

    /// Changes the speed of the playout in progress (AdjustPlay, Play's `Speed`).
    pub fn set_playout_speed(&mut self, speed: i32) -> bool {
        match self.player.as_mut() {
            Some((_, player)) => {
                player.set_speed(speed);
                true
            }
            None => false,
        }
    }

    /// Hands the playout in progress over (to carry it into a session rebuilt for a new
    /// format); see [`MediaSession::resume_playout`].
    pub fn take_playout(&mut self) -> Option<(u64, Player)> {
        self.player
            .take()
            .map(|(operation, player)| (operation, *player))
    }

    /// Continues a playout taken from the session this one replaces.
    pub fn resume_playout(&mut self, now: Instant, (operation, player): (u64, Player)) {
        self.player = Some((operation, Box::new(player)));
        if self.room.is_none() {
            self.restore_tick(now);
        }
    }

    /// Whether a prompt or tone is playing.
    pub fn is_playing(&self) -> bool {
        self.player.is_some()
    }

    /// One ptime of the playout, encoded and sent (own tick, outside conferences).
    pub(super) fn play_player_frame(&mut self, now: Instant) {
        let Some(audio) = self.audio.as_mut() else {
            // Nothing negotiated to encode with: the playout cannot be heard; it ends.
            if let Some((operation, _)) = self.player.take() {
                self.push_event(SessionEvent::PlayoutDone { operation });
                self.restore_tick(now);
            }
            return;
        };
        let Some((operation, player)) = self.player.as_mut() else {
            return;
        };
        let operation = *operation;
        let rate = pcm_rate(audio.format.sending().0);
        audio.fit_send();
        let n = ((rate * audio.format.ptime_ms / 1000) as usize).min(audio.resampled.len());
        let ok = player.fill(&mut audio.resampled[..n], rate);
        let done = player.is_done() || !ok;
        // A prompt may hold the codec's whole band.
        self.send_audio(
            now,
            Outgoing::Resampled {
                len: n,
                audio_rate: rate,
            },
        );
        if done {
            self.player = None;
            self.push_event(SessionEvent::PlayoutDone { operation });
            self.restore_tick(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::test_support::*;

    #[test]
    fn a_playout_continues_in_a_rebuilt_session_and_ends_once() {
        use crate::media::player::PlaySource;
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut first = MediaSession::new(cfg.clone(), start).unwrap();
        let tone = PlaySource::Tone {
            frequencies: [440.0, 0.0],
            amplitudes: [3000.0, 0.0],
            duration: Some(Duration::from_millis(200)),
        };
        first.start_playout(start, 7, tone, 1.0);
        let mut out = [0u8; MAX_PACKET];
        let mut sent = 0;
        for i in 1..=5u32 {
            first.handle_timeout(start + PTIME * i);
            while first.poll_transmit(&mut out).is_some() {
                sent += 1;
            }
        }
        // A new format: the session is rebuilt, the playout goes with it.
        if let Some(f) = cfg.format.as_mut() {
            f.codec = Codec::Pcma;
            f.payload_type = 8;
        }
        let mut second = MediaSession::new(cfg, start + PTIME * 5).unwrap();
        let playout = first.take_playout().expect("playing");
        second.resume_playout(start + PTIME * 5, playout);
        let mut done = 0;
        for i in 6..=20u32 {
            second.handle_timeout(start + PTIME * i);
            while second.poll_transmit(&mut out).is_some() {
                sent += 1;
            }
            while let Some(e) = second.poll_event() {
                if e == (SessionEvent::PlayoutDone { operation: 7 }) {
                    done += 1;
                }
            }
        }
        assert_eq!(done, 1, "the playout ends once, in the new session");
        assert_eq!(
            sent, 10,
            "200 ms of tone in 20 ms packets, across both sessions"
        );
        assert!(!second.is_playing());
    }

    #[test]
    fn playout_ticks_of_all_sessions_fall_on_one_grid() {
        let epoch = Instant::now();
        let mut deadlines = Vec::new();
        for offset_ms in [0u64, 3, 7, 19] {
            let mut cfg = config(Codec::Pcmu, 0);
            cfg.tick_epoch = epoch;
            let session = MediaSession::new(cfg, epoch + Duration::from_millis(offset_ms)).unwrap();
            deadlines.push(session.next_tick.expect("echo ticks"));
        }
        assert!(
            deadlines.iter().all(|d| *d == epoch + PTIME),
            "{deadlines:?}"
        );
        assert_eq!(
            aligned_tick(epoch, epoch + Duration::from_millis(41), PTIME),
            epoch + PTIME * 3
        );
    }
}
