//! Batched datagram sends through io_uring (opt-in: `[media] io_uring_send`).
//!
//! Owns: one worker's `IoUring`, its fixed slab of send slots (packet bytes, destination address,
//! iovec and msghdr per slot, allocated once and never moved), the free list of slots, and the
//! counts of what went through the ring. The worker has each session write its next packet
//! straight into a free slot ([`SendRing::packet_buffer`]) and queues a send for it
//! ([`SendRing::send`]): a `Send` carrying the destination address where the kernel takes one
//! (Linux 6.0 on, checked by a real send when the ring is set up), so no message header or
//! iovec is copied in for each packet, else a `SendMsg`. At the end of its turn
//! [`SendRing::complete`] submits everything queued with one `io_uring_enter` and frees the
//! slots whose completions have arrived. A turn that
//! sends hundreds of packets makes one system call instead of one `sendto` each.
//! Must not: reuse a slot before its completion; free the slab while the kernel may still read it
//! (dropping the ring waits up to [`DRAIN_LIMIT`] for sends in flight, then leaks the slab rather
//! than free memory the kernel might read); leave a send queued but unsubmitted when the socket it
//! names is closed or handed to another worker (its fd number could be reused by then: call
//! [`SendRing::submit`] first — once submitted, the kernel holds its own reference to the socket);
//! be used from any thread but the one that created it (the ring is set up single-issuer);
//! allocate after construction.
//!
//! Semantics match `sendto` on the worker's non-blocking sockets: every send carries
//! `MSG_DONTWAIT`, so a full socket buffer completes at once with `EAGAIN` and the packet is
//! dropped, as `sendto` would drop it; a failed send is counted and logged at trace.

use std::cell::UnsafeCell;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::ptr::{self, addr_of_mut};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring, Probe};
use mio::net::UdpSocket;

use super::ConnectionKey;
use crate::media::session::MAX_PACKET;
use crate::udp_batch::write_socket_addr;

/// Submission entries of each worker's ring, and its number of send slots (≈ 7 MiB of slab).
/// A worker carrying 1,000 calls sends about 1,000 packets per 20 ms tick; when every slot is
/// in flight the ring submits and reaps before taking the next packet.
pub(super) const RING_ENTRIES: u32 = 4096;
/// Longest wait, when a ring is dropped, for the sends in flight to complete.
pub(super) const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// `io_uring_enter` calls per submit before giving up (each retry follows an interruption or a
/// temporary refusal).
const SUBMIT_ATTEMPTS: usize = 4;

/// What went through one ring since it was set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RingCounts {
    /// Sends the kernel completed successfully.
    pub(super) sent: u64,
    /// Sends that completed with an error: dropped packets.
    pub(super) failed: u64,
    /// Packets sent with `sendto` instead: every slot was in flight, or the submission queue
    /// refused the entry.
    pub(super) fell_back: u64,
}

/// One worker's io_uring and the slots its queued sends live in.
pub(super) struct SendRing {
    ring: IoUring,
    /// The slab. `UnsafeCell`: the kernel reads the slots in flight while the worker writes free
    /// ones, so the worker never holds a reference to the contents of the whole slab; it reaches
    /// one slot at a time through a raw pointer.
    slots: Box<[UnsafeCell<Slot>]>,
    /// Per slot: whose packet it holds, for the log line of a failed send (the kernel never
    /// reads it).
    owners: Box<[Owner]>,
    /// Slots neither queued nor in flight; the last one is the next to fill. Never holds more
    /// than the slab's length, so pushing never reallocates.
    free: Vec<u32>,
    counts: RingCounts,
    /// How each packet is queued.
    op: SendOp,
}

/// The entry a packet is queued with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendOp {
    /// `IORING_OP_SEND` with the destination in the entry (`io_uring_prep_send_set_addr`).
    SendTo,
    /// `IORING_OP_SENDMSG` with the slot's `msghdr`: for kernels whose `Send` takes no address.
    SendMsg,
}

/// The memory of one send, read by the kernel from submission to completion. `header` points at
/// `iovec` and `address`, `iovec` at `packet` (for [`SendOp::SendMsg`]): set once at
/// construction, valid because the slab never moves.
struct Slot {
    header: libc::msghdr,
    iovec: libc::iovec,
    address: libc::sockaddr_storage,
    packet: [u8; MAX_PACKET],
}

/// Who a slot's packet was for.
#[derive(Debug, Clone, Copy)]
struct Owner {
    key: ConnectionKey,
    target: Option<SocketAddr>,
}

impl SendRing {
    /// A ring of `entries` submission entries and as many send slots, or `None` when the kernel
    /// refuses io_uring (seccomp, `kernel.io_uring_disabled`, an old kernel): then the worker
    /// sends with `sendto`. The refusal is warned about once per process.
    pub(super) fn start(entries: u32, worker: usize) -> Option<SendRing> {
        match SendRing::new(entries) {
            Ok(ring) => {
                tracing::info!(worker, entries, "media worker sends through io_uring");
                Some(ring)
            }
            Err(error) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                super::tuning::report_fallback(&WARNED, "io_uring_send", "sendto", worker, &error);
                None
            }
        }
    }

    /// Sets up the ring, checks that it can send messages, and builds the slab.
    pub(super) fn new(entries: u32) -> io::Result<SendRing> {
        // Single issuer and cooperative task running spare the kernel some locking and
        // interrupts; SUBMIT_ALL keeps one failed entry from holding back the rest of a batch.
        // Kernels before 6.0 refuse some of these flags: then a plain ring.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_submit_all()
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::SendMsg::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring cannot send messages",
            ));
        }
        let op = if probe.is_supported(opcode::Send::CODE) && sends_to_an_address(&ring) {
            SendOp::SendTo
        } else {
            SendOp::SendMsg
        };
        // Never more slots than completion entries: every slot in flight has room for its
        // completion, so the completion queue cannot overflow.
        let count = entries.min(ring.params().cq_entries()) as usize;
        let slots: Box<[UnsafeCell<Slot>]> =
            (0..count).map(|_| UnsafeCell::new(Slot::empty())).collect();
        for cell in slots.iter() {
            let slot = cell.get();
            // SAFETY: nothing is in flight and nothing else refers to the slab yet. The pointers
            // stored point into this same slot, inside a boxed slice that is never resized or
            // moved for as long as the ring lives (and is leaked if the kernel may outlive it).
            unsafe {
                (*slot).iovec.iov_base = addr_of_mut!((*slot).packet).cast();
                (*slot).header.msg_name = addr_of_mut!((*slot).address).cast();
                (*slot).header.msg_iov = addr_of_mut!((*slot).iovec);
                (*slot).header.msg_iovlen = 1;
            }
        }
        let owners = vec![
            Owner {
                key: 0,
                target: None
            };
            count
        ]
        .into_boxed_slice();
        Ok(SendRing {
            ring,
            slots,
            owners,
            free: (0..count as u32).rev().collect(),
            counts: RingCounts::default(),
            op,
        })
    }

    /// The packet buffer of a free slot, for a session to write its next packet into; `None` when
    /// every slot is queued or in flight even after submitting and reaping (then the caller sends
    /// with `sendto`). Taking the buffer does not take the slot: [`SendRing::send`] does.
    pub(super) fn packet_buffer(&mut self) -> Option<&mut [u8]> {
        if self.free.is_empty() {
            self.complete();
            if self.free.is_empty() {
                self.counts.fell_back += 1;
                return None;
            }
        }
        let &index = self.free.last()?;
        let slot = self.slots.get(index as usize)?.get();
        // SAFETY: the slot is on the free list, so no send of it is queued or in flight and the
        // kernel does not read it. The borrow holds `self` mutably, so it ends before `send`
        // queues the slot.
        Some(unsafe { &mut (&mut (*slot).packet)[..] })
    }

    /// Queues the first `len` bytes of the buffer last returned by [`SendRing::packet_buffer`]
    /// as a datagram from `socket` to `target`. If the submission queue stays full after a
    /// submit, the packet goes out with `sendto` at once.
    pub(super) fn send(
        &mut self,
        socket: &UdpSocket,
        len: usize,
        target: SocketAddr,
        key: ConnectionKey,
    ) {
        let Some(&index) = self.free.last() else {
            // Only after a `packet_buffer` that said `None`, which callers do not follow with a
            // send: nothing was written, nothing to send.
            return;
        };
        let Some(cell) = self.slots.get(index as usize) else {
            return;
        };
        let slot = cell.get();
        let len = len.min(MAX_PACKET);
        // SAFETY: the slot is free (see `packet_buffer`), so writing its address and length
        // races with nothing; `header` already points at this slot's `address` and `iovec`,
        // and the entry's pointers stay valid because the slab never moves.
        let entry = unsafe {
            let address_len = write_socket_addr(&mut (*slot).address, target);
            let fd = types::Fd(socket.as_raw_fd());
            match self.op {
                SendOp::SendTo => send_to(
                    fd,
                    ptr::addr_of!((*slot).packet).cast(),
                    len,
                    ptr::addr_of!((*slot).address),
                    address_len,
                ),
                SendOp::SendMsg => {
                    (*slot).header.msg_namelen = address_len;
                    (*slot).iovec.iov_len = len;
                    opcode::SendMsg::new(fd, ptr::addr_of!((*slot).header))
                        .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
                        .build()
                }
            }
        }
        .user_data(u64::from(index));
        if self.push(&entry) {
            self.free.pop();
            if let Some(owner) = self.owners.get_mut(index as usize) {
                *owner = Owner {
                    key,
                    target: Some(target),
                };
            }
            return;
        }
        self.counts.fell_back += 1;
        // SAFETY: the push failed, so the slot is still free and only read here, synchronously.
        let packet = unsafe { &(&(*slot).packet)[..len] };
        if let Err(error) = socket.send_to(packet, target) {
            tracing::trace!(key, %target, %error, "media packet not sent");
        }
    }

    /// Hands every queued send to the kernel: one `io_uring_enter`, more only after an
    /// interruption. Called at the end of each turn (through [`SendRing::complete`]) and before a
    /// socket with possibly queued sends is closed or handed to another worker: once submitted,
    /// each send holds its own reference to its socket.
    pub(super) fn submit(&mut self) {
        for _ in 0..SUBMIT_ATTEMPTS {
            if self.ring.submission().is_empty() {
                return;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // The kernel is short of resources or has completions to post first: make room.
                Err(error) if matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {
                    self.reap();
                }
                Err(error) => {
                    tracing::error!(%error, "io_uring submit failed; queued media sends wait");
                    return;
                }
            }
        }
    }

    /// Submits what is queued and frees the slot of every completion that has arrived; a failed
    /// send is a dropped packet (counted, logged at trace).
    pub(super) fn complete(&mut self) {
        self.submit();
        self.reap();
    }

    /// Slots queued or in flight (0 once every send has completed).
    pub(super) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Number of slots in the slab.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// What went through the ring since it was set up.
    pub(super) fn counts(&self) -> RingCounts {
        self.counts
    }

    /// Takes every completion that has arrived.
    fn reap(&mut self) {
        let SendRing {
            ring,
            owners,
            free,
            counts,
            ..
        } = self;
        for completion in ring.completion() {
            // Every entry carries the index of its slot, and each produces one completion.
            let index = completion.user_data() as u32;
            let Some(owner) = owners.get(index as usize) else {
                continue;
            };
            free.push(index);
            let result = completion.result();
            if result >= 0 {
                counts.sent += 1;
                continue;
            }
            counts.failed += 1;
            let error = io::Error::from_raw_os_error(-result);
            if let Some(target) = owner.target {
                tracing::trace!(key = owner.key, %target, %error, "media packet not sent");
            }
        }
    }

    /// Pushes one entry, submitting first if the queue is full; false if it still is.
    fn push(&mut self, entry: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: the entry names a slot that the caller takes off the free list as soon as
            // this succeeds; its header, iovec, address and bytes are not written again until
            // its completion puts it back, and the slab outlives every completion (see `Drop`).
            // The socket's fd is valid now, and sends are submitted before any socket closes.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return true;
            }
            self.submit();
        }
        false
    }
}

impl Drop for SendRing {
    /// Waits (up to [`DRAIN_LIMIT`]) for the sends in flight; if some never complete, their
    /// memory is leaked rather than freed under the kernel.
    fn drop(&mut self) {
        let deadline = Instant::now() + DRAIN_LIMIT;
        loop {
            self.complete();
            if self.in_flight() == 0 {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        tracing::warn!(
            in_flight = self.in_flight(),
            "media sends still in flight after 1 s; their buffers are kept, not freed"
        );
        mem::forget(mem::take(&mut self.slots));
    }
}

/// Whether the kernel's `IORING_OP_SEND` takes a destination address (Linux 6.0 on; before,
/// an address in the entry is refused with `EINVAL`): one byte sent on a fresh ring from a
/// loopback socket to itself, and its completion waited for. Any failure to make the test
/// (no loopback address) answers no, and the ring sends with `SendMsg`.
fn sends_to_an_address(ring: &IoUring) -> bool {
    let Ok(socket) =
        std::net::UdpSocket::bind("127.0.0.1:0").or_else(|_| std::net::UdpSocket::bind("[::1]:0"))
    else {
        return false;
    };
    let Ok(target) = socket.local_addr() else {
        return false;
    };
    // SAFETY: all-zero sockaddr_storage is a valid value.
    let mut address: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let address_len = write_socket_addr(&mut address, target);
    let byte = [0u8; 1];
    let entry = send_to(
        types::Fd(socket.as_raw_fd()),
        byte.as_ptr(),
        1,
        &address,
        address_len,
    )
    .user_data(u64::MAX);
    // SAFETY: the ring is fresh and used by this thread alone, so no other view of its
    // submission queue exists. The kernel reads the byte and the address while the entry is
    // submitted (a `MSG_DONTWAIT` datagram send completes at once), and both outlive the wait.
    let mut submission = unsafe { ring.submission_shared() };
    // SAFETY: as above.
    if unsafe { submission.push(&entry) }.is_err() {
        return false;
    }
    submission.sync();
    drop(submission);
    if ring.submitter().submit_and_wait(1).is_err() {
        return false;
    }
    // SAFETY: no other view of the completion queue exists yet.
    let mut completions = unsafe { ring.completion_shared() };
    let result = completions.next().map(|completion| completion.result());
    completions.sync();
    result == Some(1)
}

/// The entry of one datagram send from `fd` of `len` bytes at `packet` to the address at
/// `address` (`address_len` bytes of it), without waiting for room in the socket buffer.
fn send_to(
    fd: types::Fd,
    packet: *const u8,
    len: usize,
    address: *const libc::sockaddr_storage,
    address_len: libc::socklen_t,
) -> squeue::Entry {
    opcode::Send::new(fd, packet, len as u32)
        .dest_addr(address.cast())
        .dest_addr_len(address_len)
        .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        .build()
}

impl Slot {
    fn empty() -> Slot {
        // SAFETY: every field is a plain C struct or byte array for which all zeroes is a valid
        // value (null pointers, zero lengths, AF_UNSPEC).
        unsafe { mem::zeroed() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A non-blocking sender (the worker's kind of socket) and a receiver with a timeout, both on
    /// `ip`, port chosen by the kernel.
    fn socket_pair(ip: &str) -> (UdpSocket, std::net::UdpSocket) {
        let sender = UdpSocket::bind(format!("{ip}:0").parse().expect("address")).expect("bind");
        let receiver = std::net::UdpSocket::bind(format!("{ip}:0")).expect("bind receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        (sender, receiver)
    }

    fn ring(entries: u32) -> SendRing {
        SendRing::new(entries).expect("io_uring works on the project's machines (Linux 6.x)")
    }

    /// Queues `packet` through the ring as a session would: written into a free slot, then sent.
    fn queue(ring: &mut SendRing, socket: &UdpSocket, packet: &[u8], target: SocketAddr) {
        let buffer = ring.packet_buffer().expect("a free slot");
        buffer[..packet.len()].copy_from_slice(packet);
        ring.send(socket, packet.len(), target, 7);
    }

    #[test]
    fn this_kernel_takes_the_address_in_a_send_entry() {
        // Linux 6.0 on: the project's machines run 6.x, so the per-packet `msghdr` is not used.
        assert_eq!(ring(4).op, SendOp::SendTo);
    }

    #[test]
    fn more_packets_than_slots_all_arrive_in_order_and_every_slot_comes_back() {
        for (ip, op) in [
            ("127.0.0.1", SendOp::SendTo),
            ("[::1]", SendOp::SendTo),
            ("127.0.0.1", SendOp::SendMsg),
            ("[::1]", SendOp::SendMsg),
        ] {
            let mut ring = ring(8);
            ring.op = op;
            let (sender, receiver) = socket_pair(ip);
            let target = receiver.local_addr().expect("receiver address");
            for i in 0..20u8 {
                let packet = [i; 172];
                queue(&mut ring, &sender, &packet, target);
            }
            // Twenty packets through eight slots: the ring submitted and reaped on its own.
            assert!(ring.counts().sent >= 8, "{:?}", ring.counts());
            ring.complete();
            assert_eq!(ring.in_flight(), 0, "slots not given back");
            assert_eq!(ring.free.len(), ring.capacity());
            assert_eq!(
                ring.counts(),
                RingCounts {
                    sent: 20,
                    failed: 0,
                    fell_back: 0
                }
            );
            let mut buffer = [0u8; 2048];
            for i in 0..20u8 {
                let (length, from) = receiver.recv_from(&mut buffer).expect("datagram");
                assert_eq!(from, sender.local_addr().expect("sender address"));
                assert_eq!(&buffer[..length], &[i; 172][..], "datagram {i}");
            }
        }
    }

    #[test]
    fn a_failed_send_is_counted_and_frees_its_slot() {
        let mut ring = ring(4);
        let (sender, _receiver) = socket_pair("127.0.0.1");
        // An IPv4 socket cannot send to an IPv6 address: the completion carries the error.
        queue(
            &mut ring,
            &sender,
            &[1; 20],
            "[::1]:9".parse().expect("address"),
        );
        ring.complete();
        assert_eq!(ring.in_flight(), 0);
        assert_eq!(
            ring.counts(),
            RingCounts {
                sent: 0,
                failed: 1,
                fell_back: 0
            }
        );
    }

    #[test]
    fn dropping_the_ring_submits_what_is_queued_and_waits_for_it() {
        let mut ring = ring(4);
        let (sender, receiver) = socket_pair("127.0.0.1");
        let target = receiver.local_addr().expect("receiver address");
        queue(&mut ring, &sender, b"last words", target);
        assert_eq!(ring.in_flight(), 1);
        drop(ring);
        drop(sender);
        let mut buffer = [0u8; 64];
        let (length, _) = receiver
            .recv_from(&mut buffer)
            .expect("queued send went out");
        assert_eq!(&buffer[..length], b"last words");
    }

    #[test]
    fn a_ring_the_kernel_refuses_is_none() {
        // io_uring_setup refuses zero entries (EINVAL), as a seccomp filter would refuse it all.
        assert!(SendRing::start(0, 0).is_none());
    }
}
