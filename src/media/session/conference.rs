//! A session as a conference member: the caller's audio captured in 20 ms ticks at the
//! conference rate, and the mix it hears sent in its own codec and ptime.
//!
//! Owns: the session's membership (the room rate) and its `RoomPort`, the two resamplers and
//! FIFOs between the stream's ptime and the room's 20 ms frames, and whether the session can
//! take its room's shared encode of the common mix this tick ([`MediaSession::shared_format`];
//! the encode itself is `shared`'s); for a G.711 hairpin, forwarding the caller's packets as
//! they arrive ([`MediaSession::start_forwarding`]; the late packets that make it forward
//! whatever reads it, [`MediaSession::dropping_late`]) and sending the other member's in our
//! stream ([`MediaSession::send_forwarded`]).
//! Must not: mix (the worker's conference does, in [`crate::mixer`]), read the clock, or
//! allocate per tick: the port is sized when the session joins.

use std::time::{Duration, Instant};

use super::audio::Forwarded;
use super::send::Outgoing;
use super::shared::{SharedFormat, SHARED_PTIME_MS};
use super::{MediaSession, SessionError, SessionEvent, StreamFormat, SRTP_ROOM};
use crate::media::codec::pcm_rate;
use crate::media::jitter::Playout;
use crate::media::resample::Resampler;
use crate::media::rtp::{self, seq_newer, RtpHeader};
use crate::sdp::Codec;

/// Packets dropped as late within a second that make a room member forward
/// ([`MediaSession::dropping_late`]): more than one, so a single straggler does not.
const LATE_PACKETS: u32 = 2;

/// How long a member forwards after its packets were dropped as late.
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
}

impl Forward {
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

/// One packet on its way from a forwarding session to the other member of its hairpin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedPacket<'a> {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

impl MediaSession {
    /// Joins a conference that mixes at `room_rate` Hz in ticks of [`ROOM_TICK`]: the session
    /// stops playing out on its own (no echo) and is driven by [`MediaSession::capture`] and
    /// [`MediaSession::play`] instead. Allocates the conversion buffers (not on the packet
    /// path). A session without a negotiated format joins too, contributing silence and
    /// sending nothing until it has one.
    pub fn enter_conference(&mut self, room_rate: u32) -> Result<(), SessionError> {
        let port = match &self.audio {
            Some(audio) => Some(RoomPort::new(room_rate, &audio.format)?),
            None => None,
        };
        self.room = Some(Box::new(RoomMembership {
            room_rate,
            port,
            forwarding: None,
            late_count: 0,
            late_since: None,
            late_forward_until: None,
        }));
        self.next_tick = None;
        Ok(())
    }

    /// Leaves the conference: back to the session's own mode (Echo plays out again).
    pub fn leave_conference(&mut self, now: Instant) {
        if self.room.take().is_none() {
            return;
        }
        self.end_forwarded(now);
        self.restore_tick(now);
    }

    /// The rate of the conference the session is in, if any.
    pub fn conference_rate(&self) -> Option<u32> {
        self.room.as_ref().map(|r| r.room_rate)
    }

    /// One conference tick of the caller's audio at the conference rate, into `out` (sized
    /// to the tick: `room_rate / 50` samples). `None` when the caller contributed nothing this
    /// tick (no stream yet, between talkspurts, no format): `out` is then silence. Else how
    /// wide its audio has been, as a sample rate (G.711: 8000; Opus: the widest coded band of
    /// its packets so far, [`crate::media::codec::audio_rate`]); the room bounds it by its own
    /// rate.
    pub fn capture(&mut self, now: Instant, out: &mut [i16]) -> Option<u32> {
        self.capture_frames(now, out, false)
    }

    /// [`MediaSession::capture`] for a member the room did not mix last tick (it hears the
    /// common mix: no talker): an Opus frame its sender's VAD marked inactive is not decoded
    /// (silence; nothing the room would mix, and no level talker detection needs), unless the
    /// session records or detects in-band digits. The first active frame is decoded from a
    /// fresh decoder. Issue 19: the silent members' decode was ~40 % of a large Opus room's tick.
    pub fn capture_listener(&mut self, now: Instant, out: &mut [i16]) -> Option<u32> {
        self.capture_frames(now, out, true)
    }

    /// The codec in which this member's next frame can go to the other member of a hairpin as
    /// it came ([`MediaSession::capture_relay`]): G.711 at one room tick a packet and at the
    /// room's rate, no audio of it held back by the re-framing, and nothing here wanting it
    /// decoded (in-band digit detection, a recording or energy watch of what it says, a
    /// prompt playing to it, which takes it out of the mix). `None`: it is captured as PCM.
    pub fn relay_source(&self) -> Option<Codec> {
        let room = self.room.as_ref()?;
        let audio = self.audio.as_ref()?;
        let whole = room.port.as_ref()?.inbox_len == 0;
        let untouched = self.player.is_none() && self.heard.is_none() && audio.inband.is_none();
        let codec = audio.format.codec;
        (whole && untouched && relays(codec, audio.format.ptime_ms, room.room_rate))
            .then_some(codec)
    }

    /// The codec in which this member can be sent the other member's frame as it came
    /// ([`MediaSession::play_relayed`]): it sends G.711 at one room tick a packet and at the
    /// room's rate, with nothing of the mix held back by its re-framing, no prompt playing to
    /// it and no recording of what it is sent. `None`: it is played PCM.
    pub fn relay_sink(&self) -> Option<Codec> {
        let room = self.room.as_ref()?;
        let audio = self.audio.as_ref()?;
        let whole = room.port.as_ref()?.outbox_len == 0;
        let untouched = self.player.is_none() && self.spoken.is_none();
        let codec = audio.format.sending().0;
        (whole && untouched && relays(codec, audio.format.ptime_ms, room.room_rate))
            .then_some(codec)
    }

    /// Whether the caller's packets go to the other member of a hairpin as they arrive
    /// ([`MediaSession::start_forwarding`]).
    pub fn is_forwarding(&self) -> bool {
        self.room
            .as_ref()
            .is_some_and(|room| room.forwarding.is_some())
    }

    /// Whether a forwarding session handed a packet on within `within` of `now` (or started
    /// forwarding then): a caller gone quiet for longer is better played out here again,
    /// where the other member is sent silence rather than nothing (a far end's RTP timer).
    pub fn forwarded_within(&self, now: Instant, within: Duration) -> bool {
        self.room
            .as_ref()
            .and_then(|room| room.forwarding)
            .is_some_and(|at| now.saturating_duration_since(at) <= within)
    }

    /// Whether the caller's packets have been arriving after their playout here — dropped as
    /// late, their frames concealed: `LATE_PACKETS` within a second, in the last
    /// `LATE_FORWARD_HOLD`. A hairpin member then forwards its packets as they arrive
    /// whatever reads them ([`MediaSession::start_forwarding`]): a packet late for our playout
    /// is not late for the far end's, and a relay that drops what its own clock could not
    /// play (a core shared or saturated, a burst held up in the network) loses audio that a
    /// forwarder delivers.
    pub fn dropping_late(&self, now: Instant) -> bool {
        self.room
            .as_ref()
            .and_then(|room| room.late_forward_until)
            .is_some_and(|until| now < until)
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
    /// are read as their packets arrive: each packet then leaves with the sender's own timing
    /// and no playout delay of ours, as a media relay's would, and the far end's jitter
    /// buffer alone judges lateness and conceals a loss. Not in a room, or no format: nothing.
    pub fn start_forwarding(&mut self, now: Instant, mut each: impl FnMut(ForwardedPacket<'_>)) {
        let (Some(room), Some(audio)) = (self.room.as_mut(), self.audio.as_mut()) else {
            return;
        };
        room.forwarding = Some(now);
        let ssrc = self.rtcp.remote_ssrc().unwrap_or_default();
        audio.jitter.drain(|sequence, timestamp, marker, payload| {
            each(ForwardedPacket {
                ssrc,
                sequence,
                timestamp,
                marker,
                payload,
            })
        });
    }

    /// Packets go into the jitter buffer again (the next one starts a new playout).
    pub fn stop_forwarding(&mut self) {
        if let Some(room) = self.room.as_mut() {
            room.forwarding = None;
        }
    }

    /// A packet [`MediaSession::handle_rtp`] handed on that could not be forwarded (the other
    /// member cannot take it now): stops forwarding, and the packet is played out here.
    pub fn unforward(&mut self, now: Instant, packet: ForwardedPacket<'_>) {
        self.stop_forwarding();
        if let Some(audio) = self.audio.as_mut() {
            audio.jitter.push(
                now,
                packet.sequence,
                packet.timestamp,
                packet.marker,
                packet.payload,
            );
        }
    }

    /// The codec in which this member can be sent the other hairpin member's packets as they
    /// arrive ([`MediaSession::send_forwarded`]): a [`MediaSession::relay_sink`] that is not
    /// sending digits (their telephone-events take ptimes of our stream, which the room's
    /// tick paces).
    pub fn forward_sink(&self) -> Option<Codec> {
        if self.is_sending_digits() {
            return None;
        }
        self.relay_sink()
    }

    /// Sends the other hairpin member's packet as it arrived, as a packet of our stream: our
    /// SSRC and payload type, its sequence number and timestamp moved by the offsets fixed at
    /// the first packet forwarded (which continues our stream, with the marker bit), so its
    /// timing, order and gaps reach the far end unchanged. False, and nothing sent, when the
    /// session is not a [`MediaSession::forward_sink`] for `codec` now; the next frame played
    /// here continues our stream after the packets forwarded (`end_forwarded`).
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

    /// [`MediaSession::capture`] for a [`MediaSession::relay_source`]: a whole frame as it came
    /// into `payload` (the jitter buffer's timing and order kept, nothing decoded), else —
    /// a loss concealed, a packet of another length, silence, or a frame longer than
    /// `payload` — decoded into `out` as `capture` does.
    pub fn capture_relay(&mut self, now: Instant, payload: &mut [u8], out: &mut [i16]) -> Relayed {
        let Some(audio) = self.audio.as_mut() else {
            return Relayed::Decoded(self.capture(now, out));
        };
        audio.fit_receive();
        let playout = audio.jitter.pop(now, &mut audio.payload[..]);
        if let Playout::Frame { len, .. } = playout {
            if len == audio.frame_samples && len <= payload.len() {
                payload[..len].copy_from_slice(&audio.payload[..len]);
                out.fill(0);
                return Relayed::Payload {
                    len,
                    audio_rate: pcm_rate(audio.format.codec),
                };
            }
        }
        Relayed::Decoded(self.capture_from(now, out, false, Some(playout)))
    }

    /// `listener`: Opus frames marked inactive may go undecoded (`capture_listener`).
    fn capture_frames(&mut self, now: Instant, out: &mut [i16], listener: bool) -> Option<u32> {
        self.capture_from(now, out, listener, None)
    }

    /// `capture_frames`, whose first frame (`first`) may already be out of the jitter buffer.
    fn capture_from(
        &mut self,
        now: Instant,
        out: &mut [i16],
        listener: bool,
        mut first: Option<Playout>,
    ) -> Option<u32> {
        out.fill(0);
        let mut port = self.room.as_mut().and_then(|r| r.port.take())?;
        let mut voiced: Option<u32> = None;
        let mut guard = 0;
        while port.inbox_len < out.len() && guard < 8 {
            guard += 1;
            let pulled = match first.take() {
                Some(playout) => self.pull_popped(playout, listener),
                None => self.pull_frame(now, listener),
            };
            match pulled {
                Some(samples) => {
                    if let Some(audio) = self.audio.as_ref() {
                        port.push_in(&audio.pcm[..samples]);
                        voiced = voiced.max(Some(audio.widest_decoded));
                    }
                }
                None => port.push_in_silence(),
            }
        }
        port.take_in(out);
        if let Some(room) = self.room.as_mut() {
            room.port = Some(port);
        }
        if self.player.is_some() {
            // Taken out of the mix while something plays to it (reference §3.6).
            out.fill(0);
            return None;
        }
        voiced
    }

    /// The format of the room's shared encode this session can send in place of its own
    /// encode this tick: in a room, with a negotiated format whose ptime is one room tick, and
    /// nothing playing to it (a prompt replaces the mix) or left over from its own re-framing.
    /// `None`: it encodes what it hears itself ([`MediaSession::play`]).
    pub fn shared_format(&self) -> Option<SharedFormat> {
        let port = self.room.as_ref()?.port.as_ref()?;
        if self.player.is_some() || port.outbox_len != 0 {
            return None;
        }
        self.room_format()
    }

    /// The shared format of the session's stream in its room, whatever plays to it now; `None`
    /// outside a room, without a format, or with a ptime other than the room tick's.
    pub(super) fn room_format(&self) -> Option<SharedFormat> {
        let room = self.room.as_ref()?;
        let audio = self.audio.as_ref()?;
        if audio.format.ptime_ms != SHARED_PTIME_MS {
            return None;
        }
        Some(SharedFormat::new(
            room.room_rate,
            audio.format.sending().0,
            audio.format.ptime_ms,
            &audio.format.peer_opus,
        ))
    }

    /// Sends one conference tick of audio (the mix this participant hears, at the conference
    /// rate) to the peer, re-framed to the session's ptime and encoded in its codec.
    /// `audio_rate`: how wide the mix's audio can be (the widest the others have sent, see
    /// [`MediaSession::capture`]), so the encoder codes no wider; `None` when nobody has sent
    /// anything yet: the room's rate.
    pub fn play(&mut self, now: Instant, pcm: &[i16], audio_rate: Option<u32>) {
        let Some(mut port) = self.room.as_mut().and_then(|r| r.port.take()) else {
            return;
        };
        let room_rate = self.room.as_ref().map_or(8000, |r| r.room_rate);
        // A prompt may fill the room's whole band; the mix is as wide as what is in it.
        let audio_rate = match self.player {
            None => mix_width(audio_rate, room_rate),
            Some(_) => room_rate,
        };
        if let Some((operation, player)) = self.player.as_mut() {
            // What plays replaces the mix for the duration.
            let operation = *operation;
            let ok = player.fill(&mut port.playout, room_rate);
            let done = player.is_done() || !ok;
            let RoomPort {
                outbox,
                outbox_len,
                playout,
                ..
            } = &mut port;
            let n = playout.len().min(outbox.len() - *outbox_len);
            outbox[*outbox_len..*outbox_len + n].copy_from_slice(&playout[..n]);
            *outbox_len += n;
            if done {
                self.player = None;
                self.push_event(SessionEvent::PlayoutDone { operation });
            }
        } else {
            port.push_out(pcm);
        }
        while let Some(audio) = self.audio.as_mut() {
            audio.fit_send();
            let Some(len) = port.take_out(&mut audio.resampled[..]) else {
                break;
            };
            self.send_audio(now, Outgoing::Resampled { len, audio_rate });
        }
        if let Some(room) = self.room.as_mut() {
            room.port = Some(port);
        }
    }
}

/// How wide a room's mix is for its encoders: what was mixed into it (`None`: nothing yet),
/// never wider than the room's rate.
pub(super) fn mix_width(audio_rate: Option<u32>, room_rate: u32) -> u32 {
    audio_rate.map_or(room_rate, |rate| rate.min(room_rate))
}

/// A conference tick: every conference mixes 20 ms frames.
pub const ROOM_TICK: Duration = Duration::from_millis(20);

/// The longest frame a hairpin relays as it came: one room tick of G.711.
pub const MAX_RELAYED: usize = 160;

/// What [`MediaSession::capture_relay`] took from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// A whole frame as it came, in the caller's `payload[..len]`; its audio is `audio_rate`
    /// wide (a sample rate).
    Payload { len: usize, audio_rate: u32 },
    /// Decoded into `out`; what [`MediaSession::capture`] returns.
    Decoded(Option<u32>),
}

/// Whether a stream in `codec` at `ptime_ms` a packet can pass a room of `room_rate` untouched:
/// a stateless codec (no decoder or encoder state to keep in step), one packet a tick, no
/// resampling.
fn relays(codec: Codec, ptime_ms: u32, room_rate: u32) -> bool {
    codec.is_g711() && ptime_ms == SHARED_PTIME_MS && pcm_rate(codec) == room_rate
}

/// Conference membership of a session.
pub(super) struct RoomMembership {
    pub(super) room_rate: u32,
    /// The conversions to and from the room; None until a format is negotiated.
    pub(super) port: Option<RoomPort>,
    /// While the caller's packets go to the other member of a hairpin as they arrive
    /// ([`MediaSession::start_forwarding`]), not into the jitter buffer: when the last one
    /// went (or the forwarding started).
    pub(super) forwarding: Option<Instant>,
    /// Packets its jitter buffer dropped as late ([`MediaSession::dropping_late`]): how many
    /// since `late_since`, and until when the member forwards because of them.
    pub(super) late_count: u32,
    pub(super) late_since: Option<Instant>,
    pub(super) late_forward_until: Option<Instant>,
}

impl RoomMembership {
    /// A packet of the caller's dropped as late ([`MediaSession::dropping_late`]).
    pub(super) fn note_late(&mut self, now: Instant) {
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
            self.late_forward_until = Some(now + LATE_FORWARD_HOLD);
        }
    }
}

/// Converts between the session's stream (its codec rates and ptime) and the room's 20 ms
/// frames at the room rate, with two small FIFOs so any ptime of 10–60 ms fits 20 ms ticks.
/// Sized at construction; nothing allocates per tick.
pub(super) struct RoomPort {
    /// Received codec's PCM rate → room rate.
    pub(super) to_room: Resampler,
    /// Room rate → sent codec's PCM rate.
    pub(super) from_room: Resampler,
    /// Room samples per ptime of the session (one packet's worth).
    pub(super) ptime_room: usize,
    /// Room-rate audio decoded but not yet contributed.
    pub(super) inbox: Box<[i16]>,
    pub(super) inbox_len: usize,
    /// Room-rate mix not yet sent (less than one packet's worth between ticks).
    pub(super) outbox: Box<[i16]>,
    pub(super) outbox_len: usize,
    /// One room tick of a playout, played instead of the mix.
    pub(super) playout: Box<[i16]>,
}

impl RoomPort {
    pub(super) fn new(room_rate: u32, format: &StreamFormat) -> Result<RoomPort, SessionError> {
        let convert =
            |from, to| Resampler::new(from, to).map_err(|e| SessionError::Format(e.to_string()));
        let to_room = convert(pcm_rate(format.codec), room_rate)?;
        let from_room = convert(room_rate, pcm_rate(format.sending().0))?;
        let ptime_room = (room_rate * format.ptime_ms / 1000) as usize;
        // One tick plus the longest packet, with margin: 100 ms at the room rate.
        let capacity = (room_rate / 10) as usize;
        Ok(RoomPort {
            to_room,
            from_room,
            ptime_room,
            inbox: vec![0; capacity].into_boxed_slice(),
            inbox_len: 0,
            outbox: vec![0; capacity].into_boxed_slice(),
            outbox_len: 0,
            playout: vec![0; (room_rate / 50) as usize].into_boxed_slice(),
        })
    }

    /// Appends one decoded frame (at the received codec's rate), converted to the room rate.
    pub(super) fn push_in(&mut self, pcm: &[i16]) {
        let n = self.to_room.process(pcm, &mut self.inbox[self.inbox_len..]);
        self.inbox_len += n;
    }

    /// Appends one ptime of silence (nothing to play this ptime).
    pub(super) fn push_in_silence(&mut self) {
        let end = (self.inbox_len + self.ptime_room).min(self.inbox.len());
        self.inbox[self.inbox_len..end].fill(0);
        self.inbox_len = end;
    }

    /// Moves the oldest `out.len()` samples out (silence-padded if fewer are held).
    pub(super) fn take_in(&mut self, out: &mut [i16]) {
        let n = out.len().min(self.inbox_len);
        out[..n].copy_from_slice(&self.inbox[..n]);
        out[n..].fill(0);
        self.inbox.copy_within(n..self.inbox_len, 0);
        self.inbox_len -= n;
    }

    /// Appends one tick of the mix; what does not fit (a stalled sender) is dropped.
    pub(super) fn push_out(&mut self, pcm: &[i16]) {
        let n = pcm.len().min(self.outbox.len() - self.outbox_len);
        self.outbox[self.outbox_len..self.outbox_len + n].copy_from_slice(&pcm[..n]);
        self.outbox_len += n;
    }

    /// One packet's worth of the mix, converted to the sent codec's rate into `out`; None
    /// until a whole ptime is held.
    pub(super) fn take_out(&mut self, out: &mut [i16]) -> Option<usize> {
        if self.outbox_len < self.ptime_room {
            return None;
        }
        let n = self.from_room.process(&self.outbox[..self.ptime_room], out);
        self.outbox.copy_within(self.ptime_room..self.outbox_len, 0);
        self.outbox_len -= self.ptime_room;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec;
    use crate::media::session::test_support::*;

    /// An Opus member in a room, captured as a listener, sending `silence` frames, then a
    /// 1 kHz tone, then silence again (its encoder's VAD decides what is inactive): what it
    /// contributed and its stats. `recorded` taps what it says (as a recording does).
    fn listener_run(recorded: bool) -> (Vec<i16>, usize, SessionStats) {
        let start = Instant::now();
        let mut cfg = config(Codec::Opus, 111);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        session.enter_conference(48_000).unwrap();
        if recorded {
            session.set_listening(start, true);
        }
        let mut encoder = AudioEncoder::new(Codec::Opus).unwrap();
        let mut frame = vec![0i16; 960];
        let mut buf = [0u8; MAX_PACKET];
        let mut said = Vec::new();
        let mut voiced = 0;
        for i in 0..60u32 {
            let now = start + PTIME * i;
            let talking = (20..40).contains(&i);
            let pcm: Vec<i16> = (0..960u32)
                .map(|k| {
                    let t = f64::from(i * 960 + k) / 48_000.0;
                    let tone = 8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin();
                    if talking {
                        tone as i16
                    } else {
                        0
                    }
                })
                .collect();
            let header = RtpHeader {
                marker: false,
                payload_type: 111,
                sequence: 1000 + i as u16,
                timestamp: 5000 + 960 * i,
                ssrc: 0xabcd_0001,
                csrcs: &[],
            };
            let h = rtp::write_header(&mut buf, &header).unwrap();
            let len = h + encoder.encode(&pcm, &mut buf[h..]).unwrap();
            session.handle_rtp(now, addr(PEER), &mut buf, len);
            if session
                .capture_listener(now + Duration::from_millis(1), &mut frame)
                .is_some()
            {
                voiced += 1;
            }
            said.extend_from_slice(&frame);
            if recorded {
                session.take_heard(|_, _| {});
            }
        }
        (said, voiced, session.stats())
    }

    #[test]
    fn a_listener_leaves_frames_its_sender_marked_inactive_undecoded() {
        use crate::media::tone::goertzel_power;
        let (said, voiced, stats) = listener_run(false);
        // The leading silence and the trailing silence after the encoder's hang-over.
        assert!(stats.inactive_skipped >= 30, "{stats:?}");
        // The talkspurt is decoded, from a fresh decoder, and is what the room hears.
        assert!(voiced >= 18, "{voiced} voiced ticks");
        assert!(
            goertzel_power(&said, 48_000, 1000.0) > goertzel_power(&said, 48_000, 2300.0) * 50.0
        );
        assert_eq!(stats.decode_errors, 0);
        // What is recorded or watched is decoded whole.
        let (_, recorded_voiced, stats) = listener_run(true);
        assert_eq!(stats.inactive_skipped, 0);
        assert!(recorded_voiced > voiced, "{recorded_voiced} vs {voiced}");
    }

    /// A conference port carries the caller's tone into the room at the room rate, and the
    /// room's audio back out in the caller's codec and ptime, for narrowband, wideband and
    /// fullband rooms and packet times that are not the room's 20 ms.
    #[test]
    fn room_port_converts_codec_rate_and_ptime_both_ways() {
        use crate::media::tone::goertzel_power;
        for (codec, pt, room_rate, ptime) in [
            (Codec::Pcmu, 0, 8000, 20),
            (Codec::Pcmu, 0, 16000, 20),
            (Codec::G722, 9, 8000, 20),
            (Codec::Opus, 111, 48000, 20),
            (Codec::Pcma, 8, 48000, 20),
            (Codec::Pcmu, 0, 8000, 30),
            (Codec::Pcmu, 0, 16000, 10),
        ] {
            let start = Instant::now();
            let mut cfg = config(codec, pt);
            cfg.mode = SessionMode::Idle;
            if let Some(f) = cfg.format.as_mut() {
                f.ptime_ms = ptime;
            }
            let mut session = MediaSession::new(cfg, start).unwrap();
            session.enter_conference(room_rate).unwrap();
            assert_eq!(session.conference_rate(), Some(room_rate));
            let mut peer = Peer::new(codec, pt);
            let tick = (room_rate / 50) as usize;
            let mut room_in = Vec::new();
            let mut sent = Vec::new();
            let mut buf = [0u8; MAX_PACKET];
            let mut out = [0u8; MAX_PACKET];
            let mut frame = vec![0i16; tick];
            let mut voiced_ticks = 0;
            let mut bands = Vec::new();
            // The room plays its own 1 kHz tone to the caller.
            let room_tone: Vec<i16> = (0..tick * 100)
                .map(|i| {
                    let t = i as f64 / f64::from(room_rate);
                    (6000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                })
                .collect();
            for i in 0..100u32 {
                let now = start + PTIME * i;
                // The peer sends 20 ms frames; its ptime only shapes what we send back.
                let len = peer.frame(&mut buf);
                // How wide the caller's audio is: its codec's band (an Opus packet's own),
                // whatever the room's rate.
                bands.push(codec::audio_rate(
                    codec,
                    rtp::parse(&buf[..len]).unwrap().payload(),
                ));
                session.handle_rtp(now, addr(PEER), &mut buf, len);
                if let Some(rate) = session.capture(now + Duration::from_millis(1), &mut frame) {
                    voiced_ticks += 1;
                    assert!(bands.contains(&rate), "{codec:?} in {room_rate}: {rate}");
                }
                room_in.extend_from_slice(&frame);
                let i = i as usize;
                session.play(now, &room_tone[i * tick..(i + 1) * tick], Some(room_rate));
                session.handle_timeout(now + Duration::from_millis(1));
                while let Some(t) = session.poll_transmit(&mut out) {
                    if t.channel == Channel::Rtp && !rtp::is_rtcp(&out[..t.len]) {
                        sent.push(out[..t.len].to_vec());
                    }
                }
            }
            assert!(
                voiced_ticks >= 90,
                "{codec:?} in {room_rate}: {voiced_ticks}"
            );
            let tail = &room_in[room_in.len() - tick * 50..];
            let on = goertzel_power(tail, room_rate, 1000.0);
            let off = goertzel_power(tail, room_rate, 2300.0);
            assert!(
                on > off * 50.0,
                "{codec:?} in {room_rate}: caller's tone in the room"
            );
            // Every packet carries one ptime, timestamps step by one ptime of the codec clock.
            let expected = 100 * 20 / ptime as usize;
            assert!(
                sent.len() + 1 >= expected && sent.len() <= expected,
                "{codec:?} ptime {ptime}: {} packets",
                sent.len()
            );
            let step = codec.clock_rate() * ptime / 1000;
            let mut decoder = AudioDecoder::new(codec).unwrap();
            let mut heard = Vec::new();
            let mut pcm = [0i16; MAX_FRAME_SAMPLES];
            for pair in sent.windows(2) {
                let (a, b) = (rtp::parse(&pair[0]).unwrap(), rtp::parse(&pair[1]).unwrap());
                assert_eq!(b.timestamp(), a.timestamp().wrapping_add(step));
                assert_eq!(b.payload_type(), pt);
            }
            for p in &sent {
                let n = decoder
                    .decode(rtp::parse(p).unwrap().payload(), &mut pcm)
                    .unwrap();
                heard.extend_from_slice(&pcm[..n]);
            }
            let rate = pcm_rate(codec);
            let tail = &heard[heard.len() / 2..];
            assert!(
                goertzel_power(tail, rate, 1000.0) > goertzel_power(tail, rate, 2300.0) * 50.0,
                "{codec:?}: the room's tone reaches the caller"
            );
            // Leaving the room: an Idle session sends no more audio.
            session.leave_conference(start + PTIME * 100);
            assert_eq!(session.conference_rate(), None);
            session.play(start + PTIME * 101, &room_tone[..tick], Some(room_rate));
            assert!(session.poll_transmit(&mut out).is_none());
        }
    }

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

    /// (marker, sequence, timestamp, payload's first byte) of each RTP packet `session` sent.
    fn sent_rtp(session: &mut MediaSession) -> Vec<(bool, u16, u32, u8)> {
        let mut out = [0u8; MAX_PACKET];
        let mut sent = Vec::new();
        while let Some(t) = session.poll_transmit(&mut out) {
            if rtp::is_rtcp(&out[..t.len]) {
                continue;
            }
            let p = rtp::parse(&out[..t.len]).unwrap();
            assert_eq!(p.ssrc(), 0x5555_6666, "the sink's own stream");
            assert_eq!(p.payload_type(), 0);
            assert_eq!(p.payload().len(), 160);
            sent.push((p.marker(), p.sequence(), p.timestamp(), p.payload()[0]));
        }
        sent
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
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        session.enter_conference(8000).unwrap();
        let mut frame = [0i16; 160];
        let sender = 0xabcd_0001;
        let deliver = |session: &mut MediaSession, seq: u16, at: Instant| {
            let mut packet = pcmu_packet(sender, seq, false);
            let len = packet.len();
            session.handle_rtp(at, addr(PEER), &mut packet, len);
        };
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
}
