//! One connection as its worker sees it: its RTP/RTCP sockets, its [`MediaSession`], its
//! counters, its recording and energy watches, and how it is watched (epoll tokens or ring
//! tags).
//!
//! Owns: draining a socket into the session (at most `MAX_PACKETS_PER_WAKEUP` per turn),
//! sending what the session queued, turning session events into engine events, publishing
//! counters, and building sessions from a [`MediaSpec`].
//! Must not: allocate or lock per packet, or block: a full send buffer drops the packet.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::handle::{NewConnection, WorkerContext};
use super::transmit::Transmitter;
use super::MAX_PACKETS_PER_WAKEUP;
use crate::engine::recv_ring::{Cancelled, RecvRing};
use crate::engine::socket::MediaSockets;
use crate::engine::stats::SharedStats;
use crate::engine::{
    ConferenceKey, ConnectionKey, EngineEvent, MediaSpec, MediaStats, SessionDefaults,
};
use crate::media::energy::EnergyWatch;
use crate::media::rtcp::ntp_timestamp_from_unix;
use crate::media::session::{
    Channel, Forward, MediaSession, SessionConfig, SessionEvent, SessionStats,
};
use crate::udp_batch::{RecvBatch, BATCH};

/// A recording a connection's audio goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recording {
    pub(super) operation: u64,
    /// Two channels: the caller's audio (left) and what the session sends it (right); else
    /// the caller's audio alone.
    pub(super) both: bool,
}

/// One connection as its worker sees it.
pub(super) struct Connection {
    /// The control plane's id.
    pub(super) key: ConnectionKey,
    /// Origin of the grid its session ticks on: the tick group it got from the worker that
    /// opened it (kept when it moves to another worker: its ticks stay on a grid, only not
    /// interleaved with the new worker's own).
    pub(super) tick_epoch: Instant,
    /// The tick group it counts in on this worker ([`super::SessionGroups`]): `None` once it
    /// has moved in from another worker, or has left.
    pub(super) tick_group: Option<usize>,
    /// What the session was built from (an update that changes more than the peer rebuilds it).
    pub(super) media: MediaSpec,
    pub(super) session: MediaSession,
    /// Counters of sessions this connection had before a rebuild, added to the current one's.
    pub(super) base: MediaStats,
    /// RTP port of the pair, given back on close.
    pub(super) rtp_port: u16,
    /// The RTP and RTCP sockets.
    pub(super) sockets: MediaSockets,
    /// Counters as last published to `shared`.
    pub(super) stats: MediaStats,
    /// Published counters read by the control plane.
    pub(super) shared: Arc<SharedStats>,
    /// Per leg: the socket's token is in `ready` or `carry_over` already.
    pub(super) queued: [bool; 2],
    /// Tells this connection's deadlines and ring receives from those of an earlier one in the
    /// same slot.
    pub(super) generation: u64,
    /// The conference (on this worker) the connection is in.
    pub(super) conference: Option<ConferenceKey>,
    /// The recordings the connection's audio goes to (a Record operation's and the call's
    /// two-channel recording may run at once).
    pub(super) recordings: Vec<Recording>,
    /// Silence/non-silence conditions waited for.
    pub(super) watches: Vec<EnergyWatch>,
    /// The tags of this connection's ring receives (RTP, RTCP) while it lives on a worker that
    /// reads through io_uring; datagrams with other tags are not its own.
    pub(super) ring_tags: Option<[u64; 2]>,
    /// Its sockets have ring receives in flight (false once disarmed, so an ended request is not
    /// armed again).
    pub(super) armed: bool,
    /// The kernel has let go of the sockets whenever they were unwatched: another connection
    /// may have them once this one ends (false after a ring receive that would not end).
    pub(super) sockets_reusable: bool,
    /// A ring receive of this connection has failed and was logged.
    pub(super) receive_failure_logged: bool,
    /// The slot and generation of the other member of its hairpin on this worker, while its
    /// session forwards the caller's packets there as they arrive
    /// ([`MediaSession::start_forwarding`]), or the room's tick relays the two and the other
    /// could take them (a packet late in order then starts the forwarding).
    pub(super) relay_to: Option<(usize, u64)>,
}

impl Connection {
    pub(super) fn new(
        new: NewConnection,
        defaults: &SessionDefaults,
        forward_on_arrival: bool,
        generation: u64,
        tick_epoch: Instant,
    ) -> Connection {
        let session = new_session(
            new.key,
            &new.media,
            defaults,
            forward_on_arrival,
            tick_epoch,
        );
        Connection {
            tick_epoch,
            tick_group: None,
            key: new.key,
            media: new.media,
            session,
            base: MediaStats::default(),
            rtp_port: new.rtp_port,
            sockets: new.sockets,
            stats: MediaStats::default(),
            shared: new.stats,
            queued: [false; 2],
            generation,
            conference: None,
            recordings: Vec::new(),
            watches: Vec::new(),
            ring_tags: None,
            armed: false,
            sockets_reusable: true,
            receive_failure_logged: false,
            relay_to: None,
        }
    }

    /// Hands the caller's audio decoded since last time to the recorder and the energy
    /// watches (a watch whose condition is met reports and goes), and what the session sent
    /// to the two-channel recordings' right channel.
    pub(super) fn consume_heard(&mut self, context: &WorkerContext) {
        if self.recordings.is_empty() && self.watches.is_empty() {
            return;
        }
        let Connection {
            key,
            session,
            recordings,
            watches,
            ..
        } = self;
        let key = *key;
        session.take_spoken(|samples, rate| {
            for r in recordings.iter().filter(|r| r.both) {
                context.record(key, r.operation, 1, samples, rate);
            }
        });
        session.take_heard(|samples, rate| {
            for r in recordings.iter() {
                context.record(key, r.operation, 0, samples, rate);
            }
            watches.retain_mut(|watch| {
                if watch.feed(samples, rate) {
                    context.emit(EngineEvent::Energy {
                        key,
                        operation: watch.operation,
                        silence: watch.want_silence,
                    });
                    false
                } else {
                    true
                }
            });
        });
    }

    /// Whether something listens to the caller's audio (a recording, an energy watch).
    pub(super) fn listening(&self) -> bool {
        !self.recordings.is_empty() || !self.watches.is_empty()
    }

    /// Whether a two-channel recording also takes what the session sends.
    pub(super) fn keeping_sent(&self) -> bool {
        self.recordings.iter().any(|r| r.both)
    }

    /// Switches the session's listening (and keeping of the sent audio) to what the
    /// connection's recordings and watches need.
    pub(super) fn apply_listening(&mut self, now: Instant) {
        self.session.set_listening(now, self.listening());
        self.session.set_keeping_sent(self.keeping_sent());
    }

    /// Watches both sockets for readability under the slot's tokens.
    pub(super) fn register(&mut self, registry: &Registry, slot: usize) -> io::Result<()> {
        let sockets = &mut self.sockets;
        registry.register(
            &mut sockets.rtp,
            token_for(slot, Leg::Rtp),
            Interest::READABLE,
        )?;
        registry.register(
            &mut sockets.rtcp,
            token_for(slot, Leg::Rtcp),
            Interest::READABLE,
        )
    }

    /// Starts a ring receive on both sockets, tagged with the slot and this connection's
    /// generation.
    pub(super) fn arm(&mut self, ring: &mut RecvRing, slot: usize) -> io::Result<()> {
        let tags = [
            ring_tag(slot, Leg::Rtp, self.generation),
            ring_tag(slot, Leg::Rtcp, self.generation),
        ];
        self.ring_tags = Some(tags);
        self.armed = true;
        ring.arm(self.sockets.rtp.as_raw_fd(), tags[0])?;
        ring.arm(self.sockets.rtcp.as_raw_fd(), tags[1])
    }

    /// Stops reading both sockets: ends their ring receives (returning once the kernel has let
    /// go of the sockets) or takes them out of epoll.
    pub(super) fn unwatch(&mut self, registry: &Registry, mut ring: Option<&mut RecvRing>) {
        if let Some(cancelled) = self.stop_watching(registry, ring.as_deref_mut()) {
            if let Some(ring) = ring {
                self.sockets_reusable &= ring.wait(&cancelled);
            }
        }
    }

    /// Stops reading both sockets without waiting: takes them out of epoll, or queues the
    /// cancel of their ring receives and returns it — the sockets are the kernel's until
    /// [`RecvRing::outcome`] says the receives are over.
    pub(super) fn stop_watching(
        &mut self,
        registry: &Registry,
        ring: Option<&mut RecvRing>,
    ) -> Option<Cancelled> {
        match (ring, self.ring_tags) {
            (Some(ring), Some(tags)) if self.armed => {
                self.armed = false;
                Some(ring.cancel(tags))
            }
            _ => {
                self.deregister(registry);
                None
            }
        }
    }

    /// Stops watching both sockets (errors only mean one was never registered).
    pub(super) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sockets.rtp);
        let _ = registry.deregister(&mut self.sockets.rtcp);
    }

    pub(super) fn socket(&self, leg: Leg) -> &UdpSocket {
        match leg {
            Leg::Rtp => &self.sockets.rtp,
            Leg::Rtcp => &self.sockets.rtcp,
        }
    }

    /// Reads one socket until `WouldBlock`, at most `MAX_PACKETS_PER_WAKEUP` packets, feeding
    /// each datagram to the session (and what it forwards to `peer`).
    pub(super) fn drain(
        &mut self,
        leg: Leg,
        batch: &mut RecvBatch,
        mut peer: Option<&mut Connection>,
        out: &mut Transmitter,
        context: &WorkerContext,
    ) -> Drain {
        let mut taken = 0;
        while taken < MAX_PACKETS_PER_WAKEUP {
            let asked = (MAX_PACKETS_PER_WAKEUP - taken).min(BATCH);
            let count = match batch.receive(self.socket(leg), asked) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Drain::Empty,
                Err(error) if is_transient(&error) => {
                    taken += 1;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(key = self.key, ?leg, %error, "media socket receive failed");
                    return Drain::Empty;
                }
            };
            // Taken after the read, so no datagram is stamped earlier than it arrived.
            let now = Instant::now();
            for i in 0..count {
                let (buffer, length, source, truncated) = batch.datagram(i);
                let Some(source) = source else { continue };
                if let Some(forward) = self.deliver(now, leg, source, buffer, length, truncated) {
                    self.forward_arrived(now, &forward, buffer, peer.as_deref_mut(), out, context);
                }
                if self.session.has_transmits() {
                    // An echo sent the packet back: out before the next (the queue holds four).
                    self.transmit(out);
                }
            }
            taken += count;
            if count < asked {
                // Fewer than asked: the queue is empty; a later datagram raises a new edge.
                return Drain::Empty;
            }
        }
        Drain::MoreWaiting
    }

    /// Hands one datagram read from the socket of `leg` (`buf[..len]`) to the session; one
    /// longer than any packet we accept (`truncated`) is only counted as malformed.
    pub(super) fn deliver(
        &mut self,
        now: Instant,
        leg: Leg,
        source: SocketAddr,
        buf: &mut [u8],
        len: usize,
        truncated: bool,
    ) -> Option<Forward> {
        if truncated {
            self.session.note_malformed();
            return None;
        }
        match leg {
            Leg::Rtp => self.session.handle_rtp(now, source, buf, len),
            Leg::Rtcp => {
                self.session.handle_rtcp(now, source, buf, len);
                None
            }
        }
    }

    /// A packet the session handed on as it arrived ([`MediaSession::start_forwarding`];
    /// its payload in `buf`): sent now by `peer`, the other member of its hairpin; else —
    /// that member gone, not paired by the room's tick, or unable to take it now — played out
    /// here after all (or, dropped as late already, left so), and the forwarding ends (the
    /// room's next tick decides again).
    pub(super) fn forward_arrived(
        &mut self,
        now: Instant,
        forward: &Forward,
        buf: &[u8],
        peer: Option<&mut Connection>,
        out: &mut Transmitter,
        context: &WorkerContext,
    ) {
        let packet = forward.packet(buf);
        let sent = peer.is_some_and(|peer| {
            let sent = peer.session.send_forwarded(now, forward.codec, packet);
            if sent {
                peer.flush(out, context);
            }
            sent
        });
        if !sent {
            if forward.late {
                // Dropped as late already: it stays so, and nothing is forwarded.
                self.session.stop_forwarding();
            } else {
                self.session.unforward(now, packet);
            }
            self.relay_to = None;
        }
    }

    /// Sends what the session queued, reports its events and publishes its RTP packet and byte
    /// counts (the other counters go out every [`STATS_PUBLISH_INTERVAL`]).
    pub(super) fn flush(&mut self, out: &mut Transmitter, context: &WorkerContext) {
        self.transmit(out);
        while let Some(event) = self.session.poll_event() {
            let event = match event {
                SessionEvent::FirstPacket { source } => {
                    self.shared.publish_last_source(source);
                    self.stats.last_source = Some(source);
                    EngineEvent::FirstPacket {
                        key: self.key,
                        source,
                    }
                }
                SessionEvent::Latched { source } => {
                    self.shared.publish_last_source(source);
                    EngineEvent::Latched {
                        key: self.key,
                        source,
                    }
                }
                SessionEvent::Digit(d) => EngineEvent::Digit {
                    key: self.key,
                    digit: d.digit,
                    duration_ms: d.duration_ms,
                },
                SessionEvent::RtpTimeout { .. } => EngineEvent::RtpTimeout { key: self.key },
                SessionEvent::PlayoutDone { operation } => EngineEvent::PlayoutDone {
                    key: self.key,
                    operation,
                },
            };
            context.emit(event);
        }
        let [received, received_bytes, sent, sent_bytes] = self.session.traffic();
        let base = &self.base;
        let traffic = [
            base.rtp_packets_received + received,
            base.rtp_bytes_received + received_bytes,
            base.rtp_packets_sent + sent,
            base.rtp_bytes_sent + sent_bytes,
        ];
        let published = &mut self.stats;
        if traffic
            != [
                published.rtp_packets_received,
                published.rtp_bytes_received,
                published.rtp_packets_sent,
                published.rtp_bytes_sent,
            ]
        {
            [
                published.rtp_packets_received,
                published.rtp_bytes_received,
                published.rtp_packets_sent,
                published.rtp_bytes_sent,
            ] = traffic;
            self.shared.publish_traffic(published);
        }
    }

    /// Publishes all counters for the control plane if they changed since last time.
    pub(super) fn publish_stats(&mut self) {
        let current = self.current_stats();
        if current != self.stats {
            self.shared.publish(&current);
            self.stats = current;
        }
    }

    /// This session's counters plus those of the sessions it replaced.
    pub(super) fn current_stats(&self) -> MediaStats {
        add_stats(&self.base, &self.session.stats(), self.stats.last_source)
    }

    /// Sends every packet the session has queued: written straight into a free ring slot and
    /// queued when the worker has a ring, else copied into the send buffer and sent with `sendto`.
    pub(super) fn transmit(&mut self, out: &mut Transmitter) {
        loop {
            if let Some(ring) = out.ring.as_mut() {
                if let Some(buffer) = ring.packet_buffer() {
                    let Some(t) = self.session.poll_transmit(buffer) else {
                        return;
                    };
                    let socket = self.socket(Leg::of(t.channel));
                    ring.send(socket, t.len, t.destination, self.key);
                    continue;
                }
            }
            let Some(t) = self.session.poll_transmit(&mut out.buffer[..]) else {
                return;
            };
            self.send(t.channel, &out.buffer[..t.len], t.destination);
        }
    }

    /// Sends a datagram from the socket of `channel`; a full send buffer drops it.
    pub(super) fn send(&self, channel: Channel, packet: &[u8], target: SocketAddr) {
        let leg = Leg::of(channel);
        if let Err(error) = self.socket(leg).send_to(packet, target) {
            tracing::trace!(key = self.key, ?leg, %target, %error, "media packet not sent");
        }
    }
}

/// Which socket of a connection a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leg {
    Rtp = 0,
    Rtcp = 1,
}

impl Leg {
    /// The socket a session's channel is sent from.
    pub(super) fn of(channel: Channel) -> Leg {
        match channel {
            Channel::Rtp => Leg::Rtp,
            Channel::Rtcp => Leg::Rtcp,
        }
    }
}

/// Whether a socket was left with packets still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drain {
    /// Read until `WouldBlock` (or an error): wait for the next readiness edge.
    Empty,
    /// Stopped at the per-wake-up cap: come back next turn without sleeping.
    MoreWaiting,
}

/// A session for `media` with the worker's defaults; a spec the session refuses (a codec
/// that cannot start) falls back to an idle session that only counts, and says so. An echo
/// forwards the caller's packets as they arrive where the worker reads each as it comes
/// (`forward_on_arrival`: not `receive_at_tick`).
pub(super) fn new_session(
    key: ConnectionKey,
    media: &MediaSpec,
    defaults: &SessionDefaults,
    forward_on_arrival: bool,
    tick_epoch: Instant,
) -> MediaSession {
    let now = Instant::now();
    let ntp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(ntp_timestamp_from_unix)
        .unwrap_or(0);
    let config = SessionConfig {
        local_ssrc: rand::random(),
        cname: format!("callbridge-{key}"),
        ntp_at_start: ntp,
        format: media.format,
        mode: media.mode,
        remote_rtp: media.remote_rtp,
        remote_rtcp: media.remote_rtcp,
        source: media.source.unwrap_or(defaults.rtp_source),
        srtp: media.srtp.clone(),
        rtp_timeout: defaults.rtp_timeout.filter(|_| media.expects_rtp),
        jitter_min_ms: defaults.jitter_min_ms,
        jitter_max_ms: defaults.jitter_max_ms,
        rtcp_interval: defaults.rtcp_interval,
        seed: rand::random(),
        inband_dtmf: defaults.inband_dtmf,
        tick_epoch,
        forward_on_arrival,
    };
    match MediaSession::new(config.clone(), now) {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(key, %error, "media session refused its spec; counting only");
            let idle = SessionConfig {
                format: None,
                srtp: None,
                mode: crate::engine::MediaMode::Idle,
                ..config
            };
            MediaSession::new(idle, now).expect("a session without format or keys cannot fail")
        }
    }
}

/// `base` (earlier sessions) plus `current`.
pub(super) fn add_stats(
    base: &MediaStats,
    current: &SessionStats,
    last_source: Option<SocketAddr>,
) -> MediaStats {
    MediaStats {
        rtp_packets_received: base.rtp_packets_received + current.rtp_packets_received,
        rtp_bytes_received: base.rtp_bytes_received + current.rtp_bytes_received,
        rtp_packets_sent: base.rtp_packets_sent + current.rtp_packets_sent,
        rtp_bytes_sent: base.rtp_bytes_sent + current.rtp_bytes_sent,
        rtcp_packets_received: base.rtcp_packets_received + current.rtcp_packets_received,
        last_source,
        malformed_packets: base.malformed_packets + current.malformed_packets,
        rtcp_packets_sent: base.rtcp_packets_sent + current.rtcp_packets_sent,
        foreign_source_dropped: base.foreign_source_dropped + current.foreign_source_dropped,
        srtp_rejected: base.srtp_rejected + current.srtp_rejected,
        packets_lost: base.packets_lost + i64::from(current.rtcp.cumulative_lost),
        concealed_frames: base.concealed_frames + current.jitter.concealed,
        late_packets: base.late_packets + current.jitter.late,
        shrunk_frames: base.shrunk_frames + current.jitter.shrunk,
        playout_delay_ms: current.jitter.target_delay_ms,
        jitter_ms: f64::from(current.rtcp.jitter_ms),
        rtt_ms: current.rtcp.rtt_ms.map(f64::from).unwrap_or(base.rtt_ms),
        digits_received: base.digits_received + current.digits_received,
        digits_sent: base.digits_sent + current.digits_sent,
    }
}

/// Errors after which the socket may still hold packets: ICMP-induced errors and signals.
pub(super) fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

/// The `user_data` of a ring receive: generation (30 bits), slot (32 bits), leg (1 bit); the
/// top bit stays clear.
pub(super) fn ring_tag(slot: usize, leg: Leg, generation: u64) -> u64 {
    ((generation & 0x3FFF_FFFF) << 33) | ((slot as u64 & 0xFFFF_FFFF) << 1) | leg as u64
}

/// The slot and leg of a ring tag.
pub(super) fn split_ring_tag(tag: u64) -> (usize, Leg) {
    let leg = if tag & 1 == 0 { Leg::Rtp } else { Leg::Rtcp };
    (((tag >> 1) & 0xFFFF_FFFF) as usize, leg)
}

pub(super) fn token_for(slot: usize, leg: Leg) -> Token {
    Token(slot * 2 + leg as usize)
}

pub(super) fn split_token(token: Token) -> (usize, Leg) {
    let leg = if token.0 & 1 == 0 {
        Leg::Rtp
    } else {
        Leg::Rtcp
    };
    (token.0 / 2, leg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for slot in [0, 1, 7, 1000] {
            for leg in [Leg::Rtp, Leg::Rtcp] {
                assert_eq!(split_token(token_for(slot, leg)), (slot, leg));
            }
        }
    }

    #[test]
    fn a_rebuilt_sessions_jitter_counters_add_to_the_earlier_ones_and_its_delay_is_current() {
        // The counters of the sessions a media change replaced, and the session now running.
        let base = MediaStats {
            concealed_frames: 2,
            late_packets: 3,
            shrunk_frames: 4,
            playout_delay_ms: 120,
            ..MediaStats::default()
        };
        let current = SessionStats {
            jitter: crate::media::jitter::JitterStats {
                concealed: 10,
                late: 20,
                shrunk: 30,
                target_delay_ms: 60,
                ..Default::default()
            },
            ..SessionStats::default()
        };
        let sum = add_stats(&base, &current, None);
        assert_eq!(
            (
                sum.concealed_frames,
                sum.late_packets,
                sum.shrunk_frames,
                sum.playout_delay_ms
            ),
            (12, 23, 34, 60)
        );
    }
}
