//! Forwarding the caller's packets as they arrive, untouched, instead of playing them out at a
//! tick: to the other member of a G.711 hairpin (the worker's room tick starts it,
//! [`MediaSession::start_forwarding`]), or back to the caller — an echo of G.711 in the same
//! format both ways, which starts at its own tick. A forwarded packet goes out in our stream
//! with the caller's timing, order and gaps ([`MediaSession::send_forwarded`]), as a media
//! relay's would: no playout delay of ours, and the far end's jitter buffer alone judges
//! lateness and conceals a loss.
//!
//! Owns: whether the caller's packets are forwarded and since when, the late packets that make
//! a session forward whatever reads it ([`MediaSession::dropping_late`]), how a forwarded
//! stream maps into ours and how ours continues after it, and an echo's own decision.
//! Must not: read the clock, or allocate on the packet path (a drain of a deep jitter buffer
//! takes packet buffers beyond the transmit queue's four, given back as they are sent).

use std::time::{Duration, Instant};

use super::audio::Forwarded;
use super::{MediaSession, SessionMode, SRTP_ROOM, TRANSMIT_SLOTS};
use crate::media::jitter::{PushOutcome, Waiting};
use crate::media::rtp::{self, seq_newer, RtpHeader, RtpPacket};
use crate::sdp::Codec;

/// Packets dropped as late within a second that make a session forward
/// ([`MediaSession::dropping_late`]) when they came after frames that follow them: more than
/// one, so a single reordered straggler does not. One late packet newer than every frame
/// played is enough: the caller's stream is behind our playout.
const LATE_PACKETS: u32 = 2;

/// How long a session forwards after its packets were dropped as late.
const LATE_FORWARD_HOLD: Duration = Duration::from_secs(30);

/// An audio packet a forwarding session handed on as it arrived
/// ([`MediaSession::start_forwarding`]): its header's timing and where its payload lies in the
/// datagram [`MediaSession::handle_rtp`] was given (decrypted in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The codec it is in (the session's, as a relay source).
    pub codec: Codec,
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: std::ops::Range<usize>,
    /// A packet dropped as late by the jitter buffer that starts the forwarding
    /// ([`MediaSession::handle_rtp`]): when it cannot be forwarded it stays dropped.
    pub late: bool,
}

impl Forward {
    /// `packet` (in the datagram given to `handle_rtp`) in `codec`.
    pub(super) fn of(codec: Codec, packet: &RtpPacket<'_>, late: bool) -> Forward {
        Forward {
            codec,
            ssrc: packet.ssrc(),
            sequence: packet.sequence(),
            timestamp: packet.timestamp(),
            marker: packet.marker(),
            payload: packet.payload_range(),
            late,
        }
    }

    /// The packet, with its payload in `buf` (the datagram given to `handle_rtp`).
    pub fn packet<'a>(&self, buf: &'a [u8]) -> ForwardedPacket<'a> {
        ForwardedPacket {
            ssrc: self.ssrc,
            sequence: self.sequence,
            timestamp: self.timestamp,
            marker: self.marker,
            payload: buf.get(self.payload.clone()).unwrap_or_default(),
        }
    }
}

/// One packet on its way from a forwarding session to the stream it is sent in: the other
/// member's of its hairpin, or its own (an echo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedPacket<'a> {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

impl<'a> ForwardedPacket<'a> {
    /// A received packet as it came.
    pub(super) fn of(packet: &RtpPacket<'a>) -> ForwardedPacket<'a> {
        ForwardedPacket {
            ssrc: packet.ssrc(),
            sequence: packet.sequence(),
            timestamp: packet.timestamp(),
            marker: packet.marker(),
            payload: packet.payload(),
        }
    }
}

/// The caller's side of forwarding: whether its packets are forwarded, and its packets
/// dropped as late.
#[derive(Debug, Default)]
pub(super) struct ForwardSource {
    /// While the caller's packets are forwarded as they arrive, not put in the jitter buffer:
    /// when the last one went (or the forwarding started).
    since: Option<Instant>,
    /// Packets the jitter buffer dropped as late ([`MediaSession::dropping_late`]): how many
    /// since `late_since`, and until when the session forwards because of them.
    late_count: u32,
    late_since: Option<Instant>,
    late_until: Option<Instant>,
}

impl ForwardSource {
    /// A packet of the caller's dropped as late ([`MediaSession::dropping_late`]); `in_order`:
    /// newer than every frame played (its tick passed before it came, nothing after it
    /// played yet).
    pub(super) fn note_late(&mut self, now: Instant, in_order: bool) {
        if in_order {
            self.late_until = Some(now + LATE_FORWARD_HOLD);
        }
        let within = self
            .late_since
            .is_some_and(|since| now.saturating_duration_since(since) <= Duration::from_secs(1));
        if within {
            self.late_count += 1;
        } else {
            self.late_since = Some(now);
            self.late_count = 1;
        }
        if self.late_count >= LATE_PACKETS {
            self.late_until = Some(now + LATE_FORWARD_HOLD);
        }
    }

    /// A packet was handed on now.
    pub(super) fn handed_on(&mut self, now: Instant) {
        self.since = Some(now);
    }
}

impl MediaSession {
    /// Whether the caller's packets are forwarded as they arrive
    /// ([`MediaSession::start_forwarding`]; an echo's at its tick).
    pub fn is_forwarding(&self) -> bool {
        self.forward.since.is_some()
    }

    /// Whether a forwarding session handed a packet on within `within` of `now` (or started
    /// forwarding then): a caller gone quiet for longer is better played out here again,
    /// where the other member of a hairpin is sent silence rather than nothing (a far end's
    /// RTP timer).
    pub fn forwarded_within(&self, now: Instant, within: Duration) -> bool {
        self.forward
            .since
            .is_some_and(|at| now.saturating_duration_since(at) <= within)
    }

    /// Whether the caller's packets have been arriving after their playout here — dropped as
    /// late, their frames concealed: one newer than every frame played (the stream behind
    /// our playout), or `LATE_PACKETS` within a second, in the last `LATE_FORWARD_HOLD`. A
    /// hairpin member or an echo then forwards its packets as they arrive whatever reads
    /// them: a packet late for our playout is not late for the far end's, and a relay that
    /// drops what its own clock could not play (a core shared or saturated, a burst held up
    /// in the network) loses audio that a forwarder delivers.
    pub fn dropping_late(&self, now: Instant) -> bool {
        self.forward.late_until.is_some_and(|until| now < until)
    }

    /// Whether the caller's audio waits in the jitter buffer: it is sending.
    pub fn has_waiting_audio(&self) -> bool {
        self.audio
            .as_ref()
            .is_some_and(|audio| audio.jitter.buffered_frames() > 0)
    }

    /// From now on the caller's audio packets are handed on as they arrive
    /// ([`MediaSession::handle_rtp`] returns them as [`Forward`]s) instead of being played out
    /// here, for as long as the session stays a [`MediaSession::relay_source`]; the frames
    /// waiting in the jitter buffer go to `each` first, in order. For a hairpin whose members
    /// are read as their packets arrive, or whose packets come late for the tick (the room's
    /// tick decides). Not in a room, or no format: nothing.
    pub fn start_forwarding(&mut self, now: Instant, mut each: impl FnMut(ForwardedPacket<'_>)) {
        if self.room.is_none() || self.audio.is_none() {
            return;
        }
        self.forward.handed_on(now);
        self.hand_over_waiting(|_, packet| each(packet));
    }

    /// Packets go into the jitter buffer again (the next one starts a new playout).
    pub fn stop_forwarding(&mut self) {
        self.forward.since = None;
    }

    /// A packet [`MediaSession::handle_rtp`] handed on that could not be forwarded (the other
    /// member cannot take it now): stops forwarding, and the packet is played out here.
    pub fn unforward(&mut self, now: Instant, packet: ForwardedPacket<'_>) {
        self.stop_forwarding();
        self.buffer(now, packet);
    }

    /// The caller's audio packet into the jitter buffer, for playout here. When it is dropped
    /// as late it counts towards [`MediaSession::dropping_late`], and the answer is whether
    /// it came in order (newer than every frame played: the stream behind our playout).
    pub(super) fn buffer(&mut self, now: Instant, packet: ForwardedPacket<'_>) -> Option<bool> {
        let audio = self.audio.as_mut()?;
        let outcome = audio.jitter.push(
            now,
            packet.sequence,
            packet.timestamp,
            packet.marker,
            packet.payload,
        );
        if outcome != PushOutcome::TooLate {
            return None;
        }
        let in_order = audio.jitter.after_played(packet.sequence);
        self.forward.note_late(now, in_order);
        Some(in_order)
    }

    /// The codec in which the caller's packets can be forwarded as they arrive: a hairpin
    /// member's [`MediaSession::relay_source`], else an echo's (`echo_format`).
    pub(super) fn forward_source(&self) -> Option<Codec> {
        if self.room.is_some() {
            self.relay_source()
        } else {
            self.echo_format()
        }
    }

    /// The codec in which this session can send packets forwarded as they arrived
    /// ([`MediaSession::send_forwarded`]): a hairpin member's [`MediaSession::relay_sink`], or
    /// an echo's own format (`echo_format`) — while it is not sending digits (their
    /// telephone-events take ptimes of our stream, which the tick paces).
    pub fn forward_sink(&self) -> Option<Codec> {
        if self.is_sending_digits() {
            return None;
        }
        if self.room.is_some() {
            self.relay_sink()
        } else {
            self.echo_format()
        }
    }

    /// The codec in which an echo can send the caller's packets back as they came: G.711 in
    /// the same format both ways (no resampling, no in-band digit detection), no prompt
    /// playing, and nothing recording or watching either direction — what
    /// `next_echo_frame` passes untouched at the tick. The packet's own length goes back
    /// (any ptime).
    fn echo_format(&self) -> Option<Codec> {
        if self.config.mode != SessionMode::Echo
            || self.room.is_some()
            || self.player.is_some()
            || self.heard.is_some()
            || self.spoken.is_some()
        {
            return None;
        }
        let audio = self.audio.as_ref()?;
        audio.passes_through().then_some(audio.format.codec)
    }

    /// An echo's tick (an Echo session with somewhere to send, no prompt playing): true when
    /// the caller's packets go back as they arrive (this ptime sends nothing of its own: what
    /// the caller sent went back as it came), false when the tick plays the caller's audio
    /// out as before. Where the worker reads each packet as it arrives
    /// (`SessionConfig::forward_on_arrival`), or while the caller's packets are being dropped
    /// as late ([`MediaSession::dropping_late`]), an echo that can pass them untouched
    /// (`echo_format`) forwards them: what waits in the jitter buffer goes back now, then each
    /// packet from [`MediaSession::handle_rtp`] as it arrives. Else, or when it stops being
    /// able to (digits to send, a recording, a prompt), it plays out at its tick again.
    pub(super) fn echo_forwards(&mut self, now: Instant) -> bool {
        let wanted = self.config.forward_on_arrival || self.dropping_late(now);
        // Not in a room: its own sink, `echo_format` while no digits are sent.
        let Some(codec) = self.forward_sink().filter(|_| wanted) else {
            self.stop_forwarding();
            return false;
        };
        if self.is_forwarding() {
            return true;
        }
        if !self.has_waiting_audio() {
            return false;
        }
        self.forward.handed_on(now);
        self.echo_waiting(now, codec);
        true
    }

    /// What waits in an echo's jitter buffer, back in our stream now, in sequence order.
    fn echo_waiting(&mut self, now: Instant, codec: Codec) {
        let waiting = self
            .audio
            .as_ref()
            .map_or(0, |audio| audio.jitter.buffered_frames());
        // More than the transmit queue holds may wait (a worker behind its ticks).
        self.reserve_slots(waiting);
        self.hand_over_waiting(|session, packet| {
            session.send_forwarded(now, codec, packet);
        });
    }

    /// The caller's packet as it arrived, back in our stream (an echo forwarding,
    /// [`MediaSession::echo_forwards`]); played out here after all when the session cannot
    /// send it now.
    pub(super) fn echo_arrived(&mut self, now: Instant, codec: Codec, packet: ForwardedPacket<'_>) {
        if !self.send_forwarded(now, codec, packet) {
            self.unforward(now, packet);
        }
    }

    /// A packet of the caller's dropped as late by the jitter buffer, newer than every frame
    /// played (its frame was concealed, nothing after it played yet: the caller's stream is
    /// behind our playout), where the session can forward: it starts forwarding with this
    /// packet instead of losing it, after the concealment — the stream stretches by the
    /// lateness, as a jitter buffer that grows its delay would — and the caller's packets go
    /// on as they arrive ([`MediaSession::dropping_late`] holds). An echo sends it back itself,
    /// then what waits behind it; a hairpin member hands it on (`Forward::late`: the worker
    /// gives it to the other member when the room's tick paired them, else it stays dropped),
    /// unless frames wait behind it, which the room's tick forwards in order.
    pub(super) fn forward_late(&mut self, now: Instant, packet: &RtpPacket<'_>) -> Option<Forward> {
        if self.room.is_some() {
            let codec = self.relay_source().filter(|_| !self.has_waiting_audio())?;
            self.forward.handed_on(now);
            return Some(Forward::of(codec, packet, true));
        }
        let codec = self.forward_sink()?;
        self.forward.handed_on(now);
        self.send_forwarded(now, codec, ForwardedPacket::of(packet));
        self.echo_waiting(now, codec);
        None
    }

    /// Hands every frame waiting in the jitter buffer to `each` in sequence order (with the
    /// session, so an echo can send it), then forgets the stream there.
    fn hand_over_waiting(&mut self, mut each: impl FnMut(&mut MediaSession, ForwardedPacket<'_>)) {
        let Some(audio) = self.audio.as_mut() else {
            return;
        };
        audio.fit_receive();
        let mut scratch = std::mem::take(&mut audio.payload);
        let ssrc = self.rtcp.remote_ssrc().unwrap_or_default();
        while let Some(Waiting {
            seq,
            timestamp,
            marker,
            len,
        }) = self
            .audio
            .as_mut()
            .and_then(|audio| audio.jitter.hand_over(&mut scratch))
        {
            let packet = ForwardedPacket {
                ssrc,
                sequence: seq,
                timestamp,
                marker,
                payload: &scratch[..len],
            };
            each(self, packet);
        }
        if let Some(audio) = self.audio.as_mut() {
            audio.payload = scratch;
        }
    }

    /// Makes sure `n` packets can be queued now: packet buffers beyond the transmit queue's
    /// [`TRANSMIT_SLOTS`], for a drain of the jitter buffer, given back as they are sent
    /// ([`MediaSession::poll_transmit`]).
    fn reserve_slots(&mut self, n: usize) {
        let unmade = TRANSMIT_SLOTS.saturating_sub(usize::from(self.slots_made));
        let free = self.spare.len() + unmade;
        for _ in free..n {
            self.spare
                .push(vec![0u8; usize::from(self.slot_len)].into_boxed_slice());
        }
    }

    /// Sends a packet forwarded as it arrived — the other hairpin member's, or the caller's
    /// own (an echo) — as a packet of our stream: our SSRC and payload type, its sequence
    /// number and timestamp moved by the offsets fixed at the first packet forwarded (which
    /// continues our stream, with the marker bit), so its timing, order and gaps reach the far
    /// end unchanged. False, and nothing sent, when the session is not a
    /// [`MediaSession::forward_sink`] for `codec` now; the next frame played here continues
    /// our stream after the packets forwarded (`end_forwarded`).
    pub fn send_forwarded(
        &mut self,
        now: Instant,
        codec: Codec,
        packet: ForwardedPacket<'_>,
    ) -> bool {
        if self.forward_sink() != Some(codec) {
            return false;
        }
        let restarted = |f: &Forwarded| f.source_ssrc != packet.ssrc;
        if self
            .audio
            .as_ref()
            .and_then(|a| a.forwarded.as_ref())
            .is_some_and(restarted)
        {
            // Another stream of the sender: ours continues, and the new one maps from there.
            self.end_forwarded(now);
        }
        let Some(destination) = self.rtp_destination() else {
            return true; // nowhere to send it, as a frame played here
        };
        let Some(mut buf) = self.take_slot() else {
            return true; // transmit queue full: the worker is not draining; dropped
        };
        let Some(audio) = self.audio.as_mut() else {
            self.spare.push(buf);
            return false;
        };
        let first = audio.forwarded.is_none();
        let (tx_sequence, tx_timestamp) = (audio.tx_sequence, audio.tx_timestamp);
        let forwarded = audio.forwarded.get_or_insert(Forwarded {
            source_ssrc: packet.ssrc,
            sequence_offset: tx_sequence.wrapping_sub(packet.sequence),
            timestamp_offset: tx_timestamp.wrapping_sub(packet.timestamp),
            next_sequence: tx_sequence,
            next_timestamp: tx_timestamp,
            last_at: now,
        });
        let sequence = packet.sequence.wrapping_add(forwarded.sequence_offset);
        let timestamp = packet.timestamp.wrapping_add(forwarded.timestamp_offset);
        if first || seq_newer(sequence, forwarded.next_sequence.wrapping_sub(1)) {
            forwarded.next_sequence = sequence.wrapping_add(1);
            // G.711: one timestamp unit a byte.
            forwarded.next_timestamp = timestamp.wrapping_add(packet.payload.len() as u32);
        }
        forwarded.last_at = now;
        let header = RtpHeader {
            marker: first || packet.marker,
            payload_type: audio.format.sending().1,
            sequence,
            timestamp,
            ssrc: self.config.local_ssrc,
            csrcs: &[],
        };
        let header_len = header.len();
        let end = header_len + packet.payload.len();
        if end + SRTP_ROOM > buf.len()
            || rtp::write_header(&mut buf[..header_len], &header).is_err()
        {
            self.spare.push(buf);
            return true;
        }
        buf[header_len..end].copy_from_slice(packet.payload);
        self.queue_rtp(now, destination, buf, end, timestamp, packet.payload.len());
        true
    }

    /// After packets were forwarded in our stream ([`MediaSession::send_forwarded`]), before
    /// anything else is sent in it: the stream continues after the last of them, its
    /// timestamp moved on by the ptimes since beyond the first, and the next packet starts a
    /// talkspurt.
    pub(super) fn end_forwarded(&mut self, now: Instant) {
        let Some(audio) = self.audio.as_mut() else {
            return;
        };
        let Some(forwarded) = audio.forwarded.take() else {
            return;
        };
        // The packet after the last one forwarded was due a ptime after it, at
        // `next_timestamp`: later, by the ptimes since.
        let ptime = Duration::from_millis(u64::from(audio.format.ptime_ms.max(1))).as_nanos();
        let elapsed = now.saturating_duration_since(forwarded.last_at).as_nanos();
        let ptimes = ((elapsed + ptime / 2) / ptime).saturating_sub(1);
        let ptimes = u32::try_from(ptimes).unwrap_or(u32::MAX);
        audio.tx_sequence = forwarded.next_sequence;
        audio.tx_timestamp = forwarded
            .next_timestamp
            .wrapping_add(ptimes.wrapping_mul(audio.frame_ticks));
        audio.tx_talkspurt = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::test_support::*;

    /// A PCMU packet of SSRC `ssrc`, sequence `seq`, its payload 160 bytes of `seq`'s low byte.
    fn pcmu_packet(ssrc: u32, seq: u16, marker: bool) -> Vec<u8> {
        let mut packet = vec![0u8; 12 + 160];
        let header = RtpHeader {
            marker,
            payload_type: 0,
            sequence: seq,
            timestamp: 8000 + 160 * u32::from(seq),
            ssrc,
            csrcs: &[],
        };
        rtp::write_header(&mut packet, &header).unwrap();
        packet[12..].fill(seq as u8);
        packet
    }

    /// (marker, sequence, timestamp, payload's first byte) of each RTP packet `session` sent:
    /// PCMU frames of 160 bytes in its own stream.
    fn sent_rtp(session: &mut MediaSession) -> Vec<(bool, u16, u32, u8)> {
        echoed(session)
            .into_iter()
            .map(|(payload_type, marker, sequence, timestamp, first, len)| {
                assert_eq!((payload_type, len), (0, 160));
                (marker, sequence, timestamp, first)
            })
            .collect()
    }

    /// A hairpin member forwarding as packets arrive: what waited in its jitter buffer goes
    /// first, then each packet as it comes; the other member sends them in its own stream,
    /// continuing it, with their order, gaps and spacing kept; a frame played there later
    /// continues after them. Forwarding stops when the sink cannot take a packet (which is
    /// then played out at the source) and when the source starts being listened to.
    #[test]
    fn a_forwarding_hairpin_member_hands_each_packet_on_and_the_other_continues_its_stream() {
        let start = Instant::now();
        let make = |ssrc| {
            let mut cfg = config(Codec::Pcmu, 0);
            cfg.mode = SessionMode::Idle;
            cfg.local_ssrc = ssrc;
            let mut session = MediaSession::new(cfg, start).unwrap();
            session.enter_conference(8000).unwrap();
            session
        };
        let (mut a, mut b) = (make(0x1111_2222), make(0x5555_6666));
        assert_eq!(a.relay_source(), Some(Codec::Pcmu));
        assert_eq!(b.forward_sink(), Some(Codec::Pcmu));
        // The tick relay first: three frames played to B.
        for i in 0..3u32 {
            b.play_relayed(start + PTIME * i, &[0xEE; 160]);
        }
        let ticked = sent_rtp(&mut b);
        assert_eq!(ticked.len(), 3);
        let (_, seq0, ts0, _) = ticked[0];
        // Two packets wait in A's jitter buffer when forwarding starts.
        let sender = 0xabcd_0001;
        for seq in [100u16, 101] {
            let mut packet = pcmu_packet(sender, seq, seq == 100);
            let len = packet.len();
            assert_eq!(
                a.handle_rtp(start, addr(PEER), &mut packet, len),
                None,
                "buffered"
            );
        }
        let now = start + PTIME * 3;
        let (mut drained, mut forwarded) = (Vec::new(), Vec::new());
        a.start_forwarding(now, |packet| {
            drained.push(packet.sequence);
            assert!(b.send_forwarded(now, Codec::Pcmu, packet));
            // As the worker does: sent before the next (four transmit slots a session).
            forwarded.extend(sent_rtp(&mut b));
        });
        assert_eq!(drained, [100, 101]);
        assert!(a.is_forwarding());
        assert!(!a.has_waiting_audio());
        assert!(a.forwarded_within(now + Duration::from_millis(200), Duration::from_millis(200)));
        assert!(!a.forwarded_within(now + Duration::from_millis(201), Duration::from_millis(200)));
        // Then 102, 103, 105 and a late 104, each as it arrives.
        for (i, seq) in [102u16, 103, 105, 104].into_iter().enumerate() {
            let at = now + PTIME * i as u32;
            let mut packet = pcmu_packet(sender, seq, false);
            let len = packet.len();
            let forward = a
                .handle_rtp(at, addr(PEER), &mut packet, len)
                .expect("handed on");
            assert_eq!(
                (forward.codec, forward.sequence, forward.timestamp),
                (Codec::Pcmu, seq, 8000 + 160 * u32::from(seq))
            );
            assert!(b.send_forwarded(at, Codec::Pcmu, forward.packet(&packet)));
            forwarded.extend(sent_rtp(&mut b));
        }
        let audio = a.audio.as_ref().unwrap();
        assert_eq!(audio.jitter.buffered_frames(), 0, "nothing played out at A");
        // Each packet handed on keeps the forwarding alive.
        let last_packet = now + PTIME * 3;
        assert!(a.forwarded_within(
            last_packet + Duration::from_millis(200),
            Duration::from_millis(200)
        ));
        let expected: Vec<(bool, u16, u32, u8)> = [100u16, 101, 102, 103, 105, 104]
            .into_iter()
            .map(|seq| {
                let step = u32::from(seq - 100);
                (
                    seq == 100,
                    seq0.wrapping_add(3 + (seq - 100)),
                    ts0.wrapping_add(160 * (3 + step)),
                    seq as u8,
                )
            })
            .collect();
        assert_eq!(forwarded, expected);
        // 60 ms after the last packet B is played a frame again: after 105, three ptimes on.
        let last = now + PTIME * 3;
        b.play_relayed(last + PTIME * 3, &[0xEE; 160]);
        assert_eq!(
            sent_rtp(&mut b),
            [(
                true,
                seq0.wrapping_add(9),
                ts0.wrapping_add(160 * (9 + 2)),
                0xEE
            )]
        );
        // B sends digits: it cannot take forwarded packets; the one refused plays at A.
        b.send_digits(last, "1", 100, 50).unwrap();
        assert_eq!(b.forward_sink(), None);
        let mut packet = pcmu_packet(sender, 106, false);
        let len = packet.len();
        let forward = a.handle_rtp(last, addr(PEER), &mut packet, len).unwrap();
        assert!(!b.send_forwarded(last, Codec::Pcmu, forward.packet(&packet)));
        a.unforward(last, forward.packet(&packet));
        assert!(!a.is_forwarding());
        assert!(a.has_waiting_audio());
        assert_eq!(a.audio.as_ref().unwrap().jitter.buffered_frames(), 1);
        // Forwarding again, until A is listened to (a recording): then it plays out here.
        a.start_forwarding(last, |_| {});
        assert!(a.is_forwarding());
        a.set_listening(last, true);
        let mut packet = pcmu_packet(sender, 107, false);
        let len = packet.len();
        assert_eq!(a.handle_rtp(last, addr(PEER), &mut packet, len), None);
        assert!(!a.is_forwarding());
        // Leaving the room ends it too.
        a.set_listening(last, false);
        a.start_forwarding(last, |_| {});
        a.leave_conference(last);
        assert!(!a.is_forwarding());
    }

    /// A new stream of the sender (another SSRC) continues the sink's stream where the last
    /// one left it, as a new talkspurt.
    #[test]
    fn a_new_sender_stream_is_forwarded_from_where_the_last_one_left_ours() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        cfg.local_ssrc = 0x5555_6666;
        let mut b = MediaSession::new(cfg, start).unwrap();
        b.enter_conference(8000).unwrap();
        let forward = |b: &mut MediaSession, ssrc, seq, at| {
            let packet = pcmu_packet(ssrc, seq, false);
            let packet = rtp::parse(&packet).unwrap();
            let forwarded = ForwardedPacket {
                ssrc,
                sequence: packet.sequence(),
                timestamp: packet.timestamp(),
                marker: false,
                payload: packet.payload(),
            };
            assert!(b.send_forwarded(at, Codec::Pcmu, forwarded));
        };
        let mut sent = Vec::new();
        for (ssrc, seq, at) in [(1, 10, 0), (1, 11, 1), (2, 5000, 2), (2, 5001, 3)] {
            forward(&mut b, ssrc, seq, start + PTIME * at);
            sent.extend(sent_rtp(&mut b));
        }
        let (seq0, ts0) = (sent[0].1, sent[0].2);
        let expected = [
            (true, seq0, ts0, 10),
            (false, seq0.wrapping_add(1), ts0 + 160, 11),
            (true, seq0.wrapping_add(2), ts0 + 320, 5000u16 as u8),
            (false, seq0.wrapping_add(3), ts0 + 480, 5001u16 as u8),
        ];
        assert_eq!(sent, expected);
    }

    /// Two of the caller's packets dropped as late within a second make a room member forward
    /// for [`LATE_FORWARD_HOLD`]; one alone, or two a second and more apart, do not.
    #[test]
    fn packets_dropped_as_late_make_a_member_forward_for_a_while() {
        let start = Instant::now();
        let mut session = room_member(start);
        let mut frame = [0i16; 160];
        // Frames 0..=49 on time, but for 20, 21 and 40, which come two seconds late.
        let mut late = 0;
        for i in 0..50u16 {
            let now = start + PTIME * u32::from(i);
            if ![20, 21, 40].contains(&i) {
                deliver(&mut session, i, now);
            }
            session.capture(now + Duration::from_millis(1), &mut frame);
            if i == 45 {
                // 40 alone, long after its tick: one straggler.
                deliver(&mut session, 40, now);
                late += 1;
                assert!(!session.dropping_late(now), "one late packet");
            }
        }
        assert_eq!(late, 1);
        // 20 and 21 come later still: more than a second after 40.
        let now = start + PTIME * 50 + Duration::from_millis(1500);
        deliver(&mut session, 20, now);
        assert!(
            !session.dropping_late(now),
            "a second late packet, but seconds after"
        );
        deliver(&mut session, 21, now + Duration::from_millis(5));
        assert!(session.dropping_late(now + Duration::from_millis(5)));
        assert!(session.dropping_late(now + LATE_FORWARD_HOLD));
        assert!(!session.dropping_late(now + Duration::from_millis(5) + LATE_FORWARD_HOLD));
        assert_eq!(session.audio.as_ref().unwrap().jitter.stats().late, 3);
    }

    /// (payload type, marker, sequence number, timestamp, payload's first byte and length) of
    /// each RTP packet `session` sent, in its own stream (SSRC 0x55556666).
    fn echoed(session: &mut MediaSession) -> Vec<(u8, bool, u16, u32, u8, usize)> {
        let mut out = [0u8; MAX_PACKET];
        let mut sent = Vec::new();
        while let Some(t) = session.poll_transmit(&mut out) {
            if rtp::is_rtcp(&out[..t.len]) {
                continue;
            }
            let p = rtp::parse(&out[..t.len]).unwrap();
            assert_eq!(p.ssrc(), 0x5555_6666, "the session's own stream");
            let first = p.payload().first().copied().unwrap_or_default();
            sent.push((
                p.payload_type(),
                p.marker(),
                p.sequence(),
                p.timestamp(),
                first,
                p.payload().len(),
            ));
        }
        sent
    }

    /// An Idle PCMU session in a room of 8 kHz.
    fn room_member(start: Instant) -> MediaSession {
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        session.enter_conference(8000).unwrap();
        session
    }

    fn echo_session(start: Instant, forward_on_arrival: bool) -> MediaSession {
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.local_ssrc = 0x5555_6666;
        cfg.tick_epoch = start;
        cfg.forward_on_arrival = forward_on_arrival;
        MediaSession::new(cfg, start).unwrap()
    }

    /// The caller's PCMU packet `seq` (SSRC 0xabcd0001) handed to `echo` at `at`.
    fn deliver(echo: &mut MediaSession, seq: u16, at: Instant) {
        let mut packet = pcmu_packet(0xabcd_0001, seq, seq == 100);
        let len = packet.len();
        assert_eq!(echo.handle_rtp(at, addr(PEER), &mut packet, len), None);
    }

    /// An echo whose worker reads each packet as it arrives: the first packet goes back at the
    /// echo's next tick, every later one at once, in the echo's own stream with the caller's
    /// order and gaps; its ticks send nothing meanwhile. Digits to send take the stream back
    /// to the tick (their telephone-events, the caller's audio played out around them); then
    /// the caller's packets go back as they arrive again, the stream continuing.
    #[test]
    fn an_echo_read_as_packets_arrive_sends_each_back_as_it_comes() {
        let start = Instant::now();
        let ms = |n: u32| Duration::from_millis(u64::from(n));
        let mut echo = echo_session(start, true);
        deliver(&mut echo, 100, start + ms(5));
        assert!(echoed(&mut echo).is_empty(), "waits for the tick");
        echo.handle_timeout(start + PTIME);
        let first = echoed(&mut echo);
        assert_eq!(first.len(), 1);
        let (pt, marker, seq0, ts0, byte, _) = first[0];
        assert_eq!((pt, marker, byte), (0, true, 100));
        assert!(echo.is_forwarding());
        let mut sent = Vec::new();
        for (i, seq) in [101u16, 102, 104, 103, 106].into_iter().enumerate() {
            let i = i as u32;
            deliver(&mut echo, seq, start + PTIME * (i + 1) + ms(3));
            let back = echoed(&mut echo);
            assert_eq!(back.len(), 1, "{seq} goes back at once");
            sent.extend(back);
            echo.handle_timeout(start + PTIME * (i + 2));
            assert!(
                echoed(&mut echo).is_empty(),
                "the tick sends nothing of its own"
            );
        }
        let expected: Vec<_> = [101u16, 102, 104, 103, 106]
            .into_iter()
            .map(|seq| {
                let step = seq - 100;
                let ts = ts0.wrapping_add(160 * u32::from(step));
                (0, false, seq0.wrapping_add(step), ts, seq as u8, 160)
            })
            .collect();
        assert_eq!(sent, expected, "the caller's order and gap (105) kept");
        assert_eq!(echo.audio.as_ref().unwrap().jitter.buffered_frames(), 0);

        // Digit "1": 100 ms of telephone-events, a 50 ms gap; the caller keeps sending.
        let t = start + PTIME * 7;
        echo.send_digits(t, "1", 100, 50).unwrap();
        let mut during = Vec::new();
        let mut at_once_after_digits = 0;
        for i in 0..20u32 {
            let seq = 107 + i as u16;
            let digits = echo.is_sending_digits();
            deliver(&mut echo, seq, t + PTIME * i + ms(3));
            let back = echoed(&mut echo);
            if digits {
                assert!(
                    back.is_empty(),
                    "{seq}: played out at the tick while digits go"
                );
            } else if !back.is_empty() {
                at_once_after_digits += 1;
            }
            during.extend(back);
            echo.handle_timeout(t + PTIME * (i + 1));
            during.extend(echoed(&mut echo));
        }
        assert!(!echo.is_sending_digits());
        assert!(echo.is_forwarding(), "forwarding again after the digits");
        assert!(at_once_after_digits >= 10, "{during:?}");
        let events = during.iter().filter(|p| p.0 == 101).count();
        assert!(events >= 5, "the digit's telephone-events: {during:?}");
        // Our stream continues after 106 with no gap of its own, whatever carried each ptime.
        for (n, packet) in during.iter().enumerate() {
            assert_eq!(packet.2, seq0.wrapping_add(7 + n as u16), "{during:?}");
        }
        // Every frame of the caller's went back, once, in order.
        let frames: Vec<u8> = during.iter().filter(|p| p.0 == 0).map(|p| p.4).collect();
        let heard_from = frames.first().copied().unwrap_or_default();
        assert!(frames.windows(2).all(|w| w[1] == w[0] + 1), "{frames:?}");
        assert_eq!(*frames.last().unwrap(), 126, "{frames:?}");
        assert!(heard_from >= 107, "{frames:?}");
    }

    /// An echo whose worker reads at its tick plays the caller's packets out at the tick —
    /// until two of them come too late for it: then it sends each back as it arrives, for a
    /// while ([`LATE_FORWARD_HOLD`]), what waited in its jitter buffer first.
    #[test]
    fn an_echo_read_at_its_tick_forwards_only_while_its_packets_come_too_late() {
        let start = Instant::now();
        let ms = |n: u32| Duration::from_millis(u64::from(n));
        let mut echo = echo_session(start, false);
        let mut ticked = Vec::new();
        for i in 0..40u32 {
            let seq = 100 + i as u16;
            if ![120, 121].contains(&seq) {
                let forwarding = echo.is_forwarding();
                deliver(&mut echo, seq, start + PTIME * i + ms(1));
                let back = echoed(&mut echo);
                assert_eq!(back.len(), usize::from(forwarding), "{seq}: {back:?}");
                ticked.extend(back);
            }
            if seq == 130 {
                // 120 and 121, held up 200 ms: their playout is past.
                deliver(&mut echo, 120, start + PTIME * i + ms(2));
                deliver(&mut echo, 121, start + PTIME * i + ms(3));
                assert!(echo.dropping_late(start + PTIME * i + ms(3)));
            }
            echo.handle_timeout(start + PTIME * (i + 1));
            ticked.extend(echoed(&mut echo));
            assert_eq!(echo.is_forwarding(), seq >= 130, "{seq}");
        }
        assert!(ticked.len() >= 38, "one packet a ptime: {ticked:?}");
        assert_eq!(echo.audio.as_ref().unwrap().jitter.stats().late, 2);
        // Now each packet goes back as it arrives.
        deliver(&mut echo, 140, start + PTIME * 40 + ms(1));
        let back = echoed(&mut echo);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].4, 140);
        assert_eq!(back[0].2, ticked.last().unwrap().2.wrapping_add(1));
        // The frames played (120 and 121 concealed at their ticks), then those forwarded, each
        // once and in order.
        let frames: Vec<u8> = ticked
            .iter()
            .map(|p| p.4)
            .filter(|b| (100..=140).contains(b))
            .collect();
        let expected: Vec<u8> = (100..140).filter(|b| ![120, 121].contains(b)).collect();
        assert_eq!(frames, expected);
        assert!(!echo.dropping_late(start + PTIME * 40 + LATE_FORWARD_HOLD + ms(10)));
    }

    /// An echo playing out at its tick whose caller's packets fall behind in order (four held
    /// up, then coming together, as from a worker behind its reads): the first of them, its
    /// frame concealed, goes back at once after the concealment, and the rest as they arrive —
    /// every frame the caller sent comes back, once, in order, in a stream with no gap.
    #[test]
    fn an_echo_whose_packets_fall_behind_in_order_sends_the_first_late_one_back() {
        let start = Instant::now();
        let ms = |n: u32| Duration::from_millis(u64::from(n));
        let mut echo = echo_session(start, false);
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let seq = 100 + i as u16;
            let at = start + PTIME * i + ms(1);
            match seq {
                120..=123 => {}
                124 => {
                    for held in 120..=124 {
                        deliver(&mut echo, held, at);
                        sent.extend(echoed(&mut echo));
                        assert!(echo.is_forwarding(), "{held}");
                    }
                }
                _ => {
                    deliver(&mut echo, seq, at);
                    sent.extend(echoed(&mut echo));
                }
            }
            echo.handle_timeout(start + PTIME * (i + 1));
            sent.extend(echoed(&mut echo));
        }
        assert!(echo.dropping_late(start + PTIME * 40));
        assert_eq!(
            echo.audio.as_ref().unwrap().jitter.stats().late,
            1,
            "120 alone"
        );
        let frames: Vec<u8> = sent
            .iter()
            .map(|p| p.4)
            .filter(|b| (100..=140).contains(b))
            .collect();
        assert_eq!(frames, (100..140).collect::<Vec<u8>>(), "none lost");
        let before = sent.iter().position(|p| p.4 == 120).unwrap();
        assert_eq!(
            sent[before - 1].4,
            0xFF,
            "120's concealment, then 120 itself"
        );
        for (n, packet) in sent.iter().enumerate() {
            assert_eq!(packet.2, sent[0].2.wrapping_add(n as u16), "{sent:?}");
        }
    }

    /// A room member whose packet comes after its tick but before anything after it was
    /// played (its stream behind our playout, not reordered) forwards at once, starting with
    /// that packet; a reordered straggler does not (the test above).
    #[test]
    fn one_packet_late_in_order_makes_a_member_forward() {
        let start = Instant::now();
        let mut session = room_member(start);
        let mut frame = [0i16; 160];
        for i in 0..20u16 {
            let now = start + PTIME * u32::from(i);
            if i < 10 {
                deliver(&mut session, 100 + i, now);
            }
            session.capture(now + Duration::from_millis(1), &mut frame);
        }
        assert!(!session.dropping_late(start + PTIME * 20));
        // 110 comes 200 ms after its time: concealed, and nothing after it played. It is
        // handed on (to the other member, when the room's tick paired them) as the first
        // packet forwarded.
        let mut packet = pcmu_packet(0xabcd_0001, 110, false);
        let len = packet.len();
        let late = session.handle_rtp(start + PTIME * 20, addr(PEER), &mut packet, len);
        let late = late.expect("handed on");
        assert_eq!((late.sequence, late.late), (110, true));
        assert_eq!(late.packet(&packet).payload, &[110u8; 160][..]);
        assert!(session.is_forwarding());
        assert_eq!(session.audio.as_ref().unwrap().jitter.stats().late, 1);
        assert!(session.dropping_late(start + PTIME * 20));
    }
}
