//! RFC 4733 digits of a session: digits sent to the peer as telephone-events in place of the
//! audio of their ptimes, and digits received (out of band or detected in band) reported as
//! events.
//!
//! Owns: queueing digits on the audio path's sender, the telephone-event packet of a ptime, and
//! the `digits_sent`/`digits_received` counts.
//! Must not: send audio for a ptime an event took, or allocate: event packets go out in the
//! session's spare packet buffers.

use std::time::Instant;

use super::{Channel, MediaSession, SessionError, SessionEvent};
use crate::media::dtmf::DigitEvent;
use crate::media::rtp::{self, RtpHeader};

impl MediaSession {
    /// Queues `digits` ('0'-'9', '*', '#', 'A'-'D', '!' for hook flash) to send to the peer as
    /// RFC 4733 telephone-events, each for `duration_ms` (0: 100 ms, at least 40 ms) with
    /// `gap_ms` (0: 50 ms) between them, after any digits still queued.
    ///
    /// Every ptime of a digit, its event packet goes out on our RTP stream (our SSRC, the
    /// next sequence number, the negotiated telephone-event payload type, SRTP as for audio)
    /// instead of that ptime's audio — echo, prompt or conference mix. An idle session, which
    /// sends no audio, ticks for as long as the digits take. Refused, with nothing queued,
    /// when no telephone-event was negotiated or a character is not a digit.
    pub fn send_digits(
        &mut self,
        now: Instant,
        digits: &str,
        duration_ms: u32,
        gap_ms: u32,
    ) -> Result<(), SessionError> {
        let sender = self
            .audio
            .as_mut()
            .and_then(|audio| audio.dtmf_out.as_mut())
            .ok_or(SessionError::NoTelephoneEvent)?;
        sender
            .queue(digits, duration_ms, gap_ms)
            .map_err(SessionError::Digits)?;
        if self.room.is_none() && self.next_tick.is_none() {
            self.restore_tick(now);
        }
        Ok(())
    }

    /// Whether digits are queued or being sent (the gap after the last one included).
    pub fn is_sending_digits(&self) -> bool {
        self.audio
            .as_ref()
            .and_then(|audio| audio.dtmf_out.as_ref())
            .is_some_and(|sender| !sender.is_idle())
    }

    /// One ptime of our stream while digits are sent: queues this ptime's telephone-event
    /// packet (the sender decides marker, event timestamp and the repeated end packets) and
    /// moves the stream on by one packet and one ptime. True when the event took the ptime,
    /// so its audio must not be sent; false between digits and when no digit is being sent.
    pub(super) fn send_event_slot(&mut self, now: Instant) -> bool {
        // Every ptime of our stream passes here first: one after forwarded packets continues
        // after them.
        self.end_forwarded(now);
        let destination = self.rtp_destination();
        let Some(audio) = self.audio.as_mut() else {
            return false;
        };
        let (Some(sender), Some(payload_type)) =
            (audio.dtmf_out.as_mut(), audio.format.telephone_event_pt)
        else {
            return false;
        };
        if sender.is_idle() {
            return false;
        }
        let slot_timestamp = audio.tx_timestamp;
        let mut payload = [0u8; 4];
        let Some(event) = sender.poll_packet(now, slot_timestamp, &mut payload) else {
            return false;
        };
        // The event owns this ptime of the stream whether or not its packet can leave.
        let sequence = audio.tx_sequence;
        audio.tx_sequence = audio.tx_sequence.wrapping_add(1);
        audio.tx_timestamp = audio.tx_timestamp.wrapping_add(audio.frame_ticks);
        // Audio after the event resumes after a jump in time: it starts a talkspurt.
        audio.tx_talkspurt = true;
        self.keep_sent_silence();
        if event.marker {
            self.stats.digits_sent += 1;
        }
        let Some(destination) = destination else {
            return true;
        };
        let Some(mut buf) = self.take_slot() else {
            return true; // transmit queue full: the worker is not draining; drop this packet
        };
        let header = RtpHeader {
            marker: event.marker,
            payload_type,
            sequence,
            timestamp: event.timestamp,
            ssrc: self.config.local_ssrc,
            csrcs: &[],
        };
        let Ok(mut len) = rtp::write_packet(&mut buf[..], &header, &payload) else {
            self.spare.push(buf);
            return true;
        };
        if let Some(ctx) = self.srtp_out.as_mut() {
            match ctx.protect_rtp(&mut buf[..], len) {
                Ok(n) => len = n,
                Err(_) => {
                    self.spare.push(buf);
                    return true;
                }
            }
        }
        // RTCP maps wall clock to the stream's timeline: this ptime's, not the event start's.
        self.rtcp.on_rtp_sent(now, slot_timestamp, payload.len());
        self.stats.rtp_packets_sent += 1;
        self.stats.rtp_bytes_sent += len as u64;
        self.transmits
            .push_back((Channel::Rtp, destination, len, buf));
        true
    }

    pub(super) fn on_digit(&mut self, digit: DigitEvent) {
        self.stats.digits_received += 1;
        self.push_event(SessionEvent::Digit(digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::test_support::*;

    #[test]
    fn rfc4733_digits_become_events() {
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        let mut sender = DtmfSender::new(8000, 20);
        sender.queue("42#", 100, 50).unwrap();
        let mut buf = [0u8; 64];
        let mut seq = 7u16;
        for i in 0..60u32 {
            let now = start + PTIME * i;
            let mut payload = [0u8; 4];
            if let Some(p) = sender.poll_packet(now, 1000 + 160 * i, &mut payload) {
                let header = RtpHeader {
                    marker: p.marker,
                    payload_type: 101,
                    sequence: seq,
                    timestamp: p.timestamp,
                    ssrc: 9,
                    csrcs: &[],
                };
                let len = rtp::write_packet(&mut buf, &header, &payload).unwrap();
                seq = seq.wrapping_add(1);
                session.handle_rtp(now, addr(PEER), &mut buf, len);
            }
            session.handle_timeout(now);
        }
        let digits: String = std::iter::from_fn(|| session.poll_event())
            .filter_map(|e| match e {
                SessionEvent::Digit(d) => Some(d.digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, "42#");
    }

    /// "12#" queued on an echoing session, with and without SRTP: every ptime of a digit
    /// carries its telephone-event packet on our stream instead of the echo, and the peer
    /// hears the three digits.
    #[test]
    fn sent_digits_take_the_place_of_the_audio_on_our_stream() {
        let mut random = {
            let mut n = 3u8;
            move |buf: &mut [u8]| {
                for b in buf {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    *b = n;
                }
            }
        };
        for profile in [None, Some(SrtpProfile::AesCm128HmacSha1_80)] {
            let start = Instant::now();
            let mut cfg = config(Codec::Pcmu, 0);
            let mut peer = Peer::new(Codec::Pcmu, 0);
            let mut decrypt = None;
            if let Some(profile) = profile {
                let theirs = CryptoAttribute::generate(1, profile, &mut random);
                let ours = CryptoAttribute::generate(1, profile, &mut random);
                cfg.srtp = Some(SrtpKeys {
                    profile,
                    inbound_key: theirs.key.to_vec(),
                    inbound_salt: theirs.salt.clone(),
                    outbound_key: ours.key.to_vec(),
                    outbound_salt: ours.salt.clone(),
                });
                peer.srtp = Some(SrtpContext::new(profile, &theirs.key, &theirs.salt).unwrap());
                decrypt = Some(SrtpContext::new(profile, &ours.key, &ours.salt).unwrap());
            }
            let mut session = MediaSession::new(cfg, start).unwrap();
            let mut sent = run(&mut session, &mut peer, start, 20, |_| false);
            let queued_at = start + PTIME * 20;
            session
                .send_digits(queued_at, "12#", 100, 50)
                .expect("telephone-event negotiated, valid digits");
            assert!(session.is_sending_digits());
            sent.extend(run(&mut session, &mut peer, queued_at, 40, |_| false));
            assert!(!session.is_sending_digits(), "{profile:?}: all digits sent");

            let stream = our_stream(&sent, decrypt.as_mut());
            let events = events_in_stream(&stream);
            assert_eq!(events.len(), 3, "{profile:?}");
            for (event, code) in events.iter().zip([1, 2, 11]) {
                assert_event(event, code);
            }
            // 100 ms tones, 50 ms gaps: one ptime of echo between two digits.
            let starts: Vec<u32> = events.iter().map(|e| e[0].timestamp).collect();
            assert_eq!(starts[1], starts[0].wrapping_add(8 * 160));
            assert_eq!(starts[2], starts[1].wrapping_add(8 * 160));
            let audio = stream.iter().filter(|p| p.payload_type == 0).count();
            assert!(
                audio >= 35,
                "{profile:?}: the echo goes on around the digits"
            );
            assert_eq!(
                heard_digits(start, &events),
                [('1', 100), ('2', 100), ('#', 100)]
            );
            assert_eq!(session.stats().digits_sent, 3);
        }
    }

    /// An idle session sends no audio and has no ticks; digits give it ticks for as long as
    /// they take, then it is quiet again.
    #[test]
    fn an_idle_session_ticks_only_while_it_sends_digits() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let quiet = start + Duration::from_secs(1);
        assert!(session.poll_timeout() > quiet, "no ticks before digits");

        session
            .send_digits(start, "5", 0, 0)
            .expect("default timing");
        let mut sent = Vec::new();
        let mut sent_at = Vec::new();
        let mut out = [0u8; MAX_PACKET];
        let mut turns = 0;
        while session.poll_timeout() < quiet {
            let now = session.poll_timeout();
            session.handle_timeout(now);
            while let Some(t) = session.poll_transmit(&mut out) {
                sent.push((t, out[..t.len].to_vec()));
                sent_at.push(now);
            }
            turns += 1;
            assert!(turns < 50, "the session never went quiet");
        }
        assert!(!session.is_sending_digits());
        let stream = our_stream(&sent, None);
        assert_eq!(stream.len(), sent.len(), "nothing but RTP");
        let events = events_in_stream(&stream);
        assert_eq!(events.len(), 1);
        assert_event(&events[0], 5);
        for pair in sent_at.windows(2) {
            assert_eq!(pair[1] - pair[0], PTIME, "one packet per ptime");
        }
        // 100 ms tone, three end packets, then the 50 ms gap: 8 ticks (160 ms) in all.
        assert_eq!(turns, 8);
        assert_eq!(heard_digits(start, &events), [('5', 100)]);
    }

    /// In a conference the digit replaces the mix the member would hear.
    #[test]
    fn a_conference_member_sends_digits_instead_of_its_mix() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        session
            .enter_conference(8000)
            .expect("PCMU joins an 8 kHz room");
        let mix: Vec<i16> = (0..160)
            .map(|i| (4000.0 * (f64::from(i) * 0.785).sin()) as i16)
            .collect();
        let mut captured = [0i16; 160];
        let mut sent = Vec::new();
        let mut out = [0u8; MAX_PACKET];
        for i in 0..30u32 {
            let now = start + PTIME * i;
            if i == 5 {
                session.send_digits(now, "7", 100, 50).expect("valid digit");
            }
            session.capture(now, &mut captured);
            session.play(now, &mix, Some(8000));
            session.handle_timeout(now);
            while let Some(t) = session.poll_transmit(&mut out) {
                sent.push((t, out[..t.len].to_vec()));
            }
        }
        let stream = our_stream(&sent, None);
        assert_eq!(stream.len(), 30, "one packet per room tick");
        let events = events_in_stream(&stream);
        assert_eq!(events.len(), 1);
        assert_event(&events[0], 7);
        assert_eq!(heard_digits(start, &events), [('7', 100)]);
    }

    #[test]
    fn digits_are_refused_without_telephone_event_or_with_a_bad_character() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        if let Some(format) = cfg.format.as_mut() {
            format.telephone_event_pt = None;
        }
        let mut session = MediaSession::new(cfg, start).unwrap();
        assert_eq!(
            session.send_digits(start, "1", 100, 50),
            Err(SessionError::NoTelephoneEvent)
        );
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.format = None;
        let mut session = MediaSession::new(cfg, start).unwrap();
        assert_eq!(
            session.send_digits(start, "1", 100, 50),
            Err(SessionError::NoTelephoneEvent)
        );

        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        assert_eq!(
            session.send_digits(start, "12x", 100, 50),
            Err(SessionError::Digits(DtmfError::InvalidDigit {
                digit: 'x',
                index: 2
            }))
        );
        assert!(!session.is_sending_digits());
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let stream = our_stream(&run(&mut session, &mut peer, start, 30, |_| false), None);
        assert!(stream.len() >= 27);
        assert!(
            stream.iter().all(|p| p.payload_type == 0),
            "nothing of a refused string is sent"
        );
        assert_eq!(session.stats().digits_sent, 0);
    }

    #[test]
    fn inband_dtmf_tones_become_digits_when_enabled() {
        use crate::media::tone::{ToneGenerator, ToneLevel};
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.inband_dtmf = true;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut encoder = AudioEncoder::new(Codec::Pcmu).unwrap();
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        let mut seq = 1u16;
        let mut frame_index = 0u32;
        for digit in ['7', '*'] {
            let mut tone =
                ToneGenerator::dtmf(8000, digit, ToneLevel::Dbm0(-10.0), ToneLevel::Dbm0(-10.0))
                    .unwrap();
            // 100 ms of tone, then 100 ms of silence.
            for i in 0..10 {
                let mut pcm = [0i16; 160];
                if i < 5 {
                    tone.fill(&mut pcm);
                }
                let header = RtpHeader {
                    marker: false,
                    payload_type: 0,
                    sequence: seq,
                    timestamp: 160 * frame_index,
                    ssrc: 3,
                    csrcs: &[],
                };
                let h = rtp::write_header(&mut buf, &header).unwrap();
                let len = h + encoder.encode(&pcm, &mut buf[h..]).unwrap();
                let now = start + PTIME * frame_index;
                session.handle_rtp(now, addr(PEER), &mut buf, len);
                session.handle_timeout(now + Duration::from_millis(1));
                while session.poll_transmit(&mut out).is_some() {}
                seq += 1;
                frame_index += 1;
            }
        }
        let digits: String = std::iter::from_fn(|| session.poll_event())
            .filter_map(|e| match e {
                SessionEvent::Digit(d) => Some(d.digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, "7*");
    }

    /// One RTP packet of our stream, as the peer reads it.
    #[derive(Debug, Clone)]
    struct SentPacket {
        marker: bool,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: Vec<u8>,
    }

    /// Our RTP packets (SRTP-decrypted with `decrypt` when given), in the order sent.
    fn our_stream(
        sent: &[(Transmit, Vec<u8>)],
        mut decrypt: Option<&mut SrtpContext>,
    ) -> Vec<SentPacket> {
        let mut stream = Vec::new();
        for (t, packet) in sent {
            if t.channel != Channel::Rtp || rtp::is_rtcp(packet) {
                continue;
            }
            let mut packet = packet.clone();
            let len = match decrypt.as_deref_mut() {
                Some(ctx) => ctx
                    .unprotect_rtp(&mut packet, t.len)
                    .expect("our SRTP decrypts"),
                None => t.len,
            };
            let p = rtp::parse(&packet[..len]).expect("we send RTP");
            stream.push(SentPacket {
                marker: p.marker(),
                payload_type: p.payload_type(),
                sequence: p.sequence(),
                timestamp: p.timestamp(),
                ssrc: p.ssrc(),
                payload: p.payload().to_vec(),
            });
        }
        stream
    }

    /// An RFC 4733 event block read straight off the wire: (event code, E bit, volume,
    /// duration).
    fn event_block(payload: &[u8]) -> (u8, bool, u8, u16) {
        assert_eq!(payload.len(), 4, "one event block per packet");
        (
            payload[0],
            payload[1] & 0x80 != 0,
            payload[1] & 0x3F,
            u16::from_be_bytes([payload[2], payload[3]]),
        )
    }

    /// Checks that `stream` is one RTP stream carrying one packet per ptime: our SSRC,
    /// sequence numbers without a gap, and every packet at the stream time of its ptime
    /// (audio: its timestamp; an event packet: its event's start plus the ptimes since).
    /// Returns the telephone-event (PT 101) packets grouped per event, having checked that
    /// each event's packets are back to back in the stream (no audio among them) and that
    /// the audio after an event starts a talkspurt.
    fn events_in_stream(stream: &[SentPacket]) -> Vec<Vec<SentPacket>> {
        let mut events: Vec<Vec<SentPacket>> = Vec::new();
        let mut slot_timestamps = Vec::new();
        let mut in_event = false;
        for (i, p) in stream.iter().enumerate() {
            assert_eq!(p.ssrc, 0x1111_2222, "packet {i}: one stream");
            if i > 0 {
                let before = &stream[i - 1];
                assert_eq!(
                    p.sequence,
                    before.sequence.wrapping_add(1),
                    "packet {i}: sequence continues"
                );
            }
            if p.payload_type == 101 {
                if p.marker {
                    events.push(Vec::new());
                } else {
                    assert!(
                        in_event,
                        "packet {i}: event continues without audio between"
                    );
                }
                let event = events.last_mut().expect("an event starts with the marker");
                let since_start = event.len() as u32;
                assert_eq!(
                    p.timestamp,
                    event.first().map_or(p.timestamp, |f| f.timestamp)
                );
                slot_timestamps.push(p.timestamp.wrapping_add(160 * since_start));
                event.push(p.clone());
                in_event = true;
            } else {
                assert_eq!(p.payload_type, 0, "packet {i}: audio otherwise");
                if in_event {
                    assert!(
                        p.marker,
                        "packet {i}: audio after an event starts a talkspurt"
                    );
                }
                slot_timestamps.push(p.timestamp);
                in_event = false;
            }
        }
        for (i, pair) in slot_timestamps.windows(2).enumerate() {
            assert_eq!(
                pair[1],
                pair[0].wrapping_add(160),
                "packet {}: one packet per ptime",
                i + 1
            );
        }
        events
    }

    /// Checks one event's packets as RFC 4733 wants a 100 ms tone at 8 kHz in 20 ms packets:
    /// the marker on the first, the duration growing by a ptime, the E bit on the last
    /// three (repeats of one final duration), volume -10 dBm0.
    fn assert_event(packets: &[SentPacket], code: u8) {
        let fields: Vec<(bool, u8, bool, u8, u16)> = packets
            .iter()
            .map(|p| {
                let (c, end, volume, duration) = event_block(&p.payload);
                (p.marker, c, end, volume, duration)
            })
            .collect();
        assert_eq!(
            fields,
            [
                (true, code, false, 10, 160),
                (false, code, false, 10, 320),
                (false, code, false, 10, 480),
                (false, code, false, 10, 640),
                (false, code, true, 10, 800),
                (false, code, true, 10, 800),
                (false, code, true, 10, 800),
            ]
        );
    }

    /// The digits a peer's RFC 4733 receiver hears in `events`.
    fn heard_digits(start: Instant, events: &[Vec<SentPacket>]) -> Vec<(char, u32)> {
        let mut receiver = DtmfReceiver::new(8000);
        let mut digits = Vec::new();
        for (i, p) in events.iter().flatten().enumerate() {
            let now = start + PTIME * i as u32;
            if let Ok(Some(d)) =
                receiver.on_packet(now, p.sequence, p.timestamp, p.marker, &p.payload)
            {
                digits.push((d.digit, d.duration_ms));
            }
        }
        while let Some(d) = receiver.poll(start + Duration::from_secs(60)) {
            digits.push((d.digit, d.duration_ms));
        }
        digits
    }
}
