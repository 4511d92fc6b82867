//! Batched datagram receives through io_uring (opt-in: `[media] io_uring_receive`, with
//! `receive_at_tick`).
//!
//! Owns: one worker's receive ring (single issuer, deferred task running: when a datagram
//! arrives the kernel only queues the receive, and runs it when the worker asks), the provided
//! buffers its multishot `RecvMsg` requests fill, the tags of the requests in flight, and the
//! completions taken from the kernel but not yet handed to the worker (the backlog).
//! Each socket gets one multishot receive ([`RecvRing::arm`]). At each tick the worker calls
//! [`RecvRing::poll`], which runs every receive queued since the last tick in one
//! `io_uring_enter` (more only when there were more than twenty: see `poll`), then
//! [`RecvRing::take`] hands each datagram to the worker in place, in its buffer, and gives the
//! buffer back to the kernel. A worker reading 1,000 sockets per tick makes
//! one system call instead of one `recvmmsg` each, and needs no epoll for them.
//! Must not: give a buffer back before the worker is done with its datagram; free the buffers or
//! the buffer ring while the kernel may still write to them (dropping the ring cancels every
//! request and waits up to [`DRAIN_LIMIT`] for their ends, then leaks the memory rather than
//! free what the kernel might write); let a socket be closed or handed to another worker while a
//! request of this ring still holds it ([`RecvRing::disarm`] returns once the requests on it have
//! ended, so a port given back is really free); be used from any thread but the one that created
//! it (the ring is single-issuer); allocate on the packet path.
//!
//! When the buffers run out between two polls, the kernel ends the requests that found none
//! (`ENOBUFS`); the datagrams wait in their sockets, and the worker arms those sockets again
//! once [`RecvRing::take`] has given the buffers back and polls again in the same turn (a
//! worker back from a stall finds more datagrams than buffers; read a tick later, their frames'
//! playout would have passed).

use std::alloc::{self, Layout};
use std::collections::{HashSet, VecDeque};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, CancelBuilder, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::udp_batch::to_socket_addr;
// The longest wait for requests to end, when a socket is disarmed or the ring dropped: the same
// as for the send ring's sends in flight.
use super::send_ring::DRAIN_LIMIT;
use crate::media::session::MAX_PACKET;

/// Provided buffers per worker (a power of two, at most 32,768). A worker carrying 1,000 calls
/// receives about 1,000 RTP datagrams per 20 ms tick; four times that leaves room for RTCP and
/// bursts.
const BUFFERS: u16 = 4096;
/// Submission entries: arms and cancels only (receives re-use their request).
const SQ_ENTRIES: u32 = 256;
/// The buffer group every request takes its buffers from.
const GROUP: u16 = 0;
/// A connection's two receives being cancelled ([`RecvRing::cancel`]), and when to stop
/// waiting for their end.
pub(super) struct Cancelled {
    tags: [u64; 2],
    deadline: Instant,
}

/// The `user_data` of cancel requests (worker tags never set the top bit).
const CANCEL_TAG: u64 = u64::MAX;

/// Most deferred receives an `io_uring_enter` that asks for no completions runs (the kernel's
/// `IO_LOCAL_TW_DEFAULT_MAX`, Linux 6.10 on; earlier kernels run them all). Each posts at least
/// one completion unless its wake-up found nothing to read, so fewer completions than this
/// after such an enter means none were left (one left by a spurious wake-up runs at the next
/// poll).
const SMALL_RUN: usize = 20;

/// Room for the source address in every buffer: a `sockaddr_in6` holds IPv4 and IPv6.
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();
/// What the kernel writes before the name: `struct io_uring_recvmsg_out`.
const OUT_HEADER_LEN: usize = 16;
/// One buffer: header, name, and the largest datagram we accept plus one byte, so a longer one
/// is reported truncated rather than silently cut; rounded up to whole cache lines.
const BUFFER_LEN: usize = (OUT_HEADER_LEN + NAME_LEN + MAX_PACKET + 1).div_ceil(64) * 64;

/// What [`RecvRing::take`] hands the worker for one completion.
pub(super) enum Received<'a> {
    /// A datagram: its source, its bytes (`buf[..len]`, with spare room after), and whether it
    /// was longer than any packet we accept (then only a prefix is there).
    Datagram {
        source: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
        truncated: bool,
    },
    /// The request ended: arm the socket again unless it is being closed. `error` is what ended
    /// it (`ENOBUFS` when the buffers ran out; `ECANCELED` after a disarm).
    Ended { error: Option<io::Error> },
}

/// One completion as taken from the kernel.
#[derive(Debug, Clone, Copy)]
struct Completion {
    tag: u64,
    result: i32,
    flags: u32,
}

/// What went through one ring since it was set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReceiveCounts {
    /// Datagrams handed to the worker.
    pub(super) datagrams: u64,
    /// Requests that ended because every buffer was in use.
    pub(super) out_of_buffers: u64,
}

/// One worker's receive ring and the buffers it fills.
pub(super) struct RecvRing {
    ring: IoUring,
    /// The buffer ring shared with the kernel: `buffers` entries, page-aligned; the tail lives in
    /// the first entry's reserved field.
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    /// The buffers, `buffers × BUFFER_LEN` bytes. The kernel writes the ones it holds; the worker
    /// reaches one at a time, through a raw pointer, only after its completion.
    memory: NonNull<u8>,
    memory_layout: Layout,
    /// Number of buffers (a power of two) and the mask of a ring index.
    buffers: u16,
    /// The tail last published to the kernel, and buffers written after it since.
    tail: u16,
    unpublished: u16,
    /// The header every request is prepared from: room for an IPv6 address, no control data.
    template: Box<libc::msghdr>,
    /// Tags of the requests in flight (armed, final completion not yet taken from the kernel).
    live: HashSet<u64>,
    /// Receives whose cancel is queued or submitted since the last [`RecvRing::poll`]: each
    /// ends in a completion the kernel posts from deferred work.
    ending: u32,
    /// `io_uring_enter` calls made.
    #[cfg(test)]
    pub(super) enters: u64,
    /// Those of them that slept on the timer of their zero timeout (`ETIME`).
    #[cfg(test)]
    waits: u64,
    /// Completions taken from the kernel, in order, not yet handed to the worker.
    backlog: VecDeque<Completion>,
    counts: ReceiveCounts,
    /// Whether the kernel memory may be freed on drop (false after a drain that timed out).
    buffers_registered: bool,
}

impl RecvRing {
    /// A ring with [`BUFFERS`] buffers, or `None` when the kernel refuses (no io_uring, or older
    /// than 6.1, which has no deferred task running): then the worker reads with `recvmmsg`. The
    /// refusal is warned about once per process.
    pub(super) fn start(worker: usize) -> Option<RecvRing> {
        match RecvRing::new(BUFFERS) {
            Ok(ring) => {
                tracing::info!(
                    worker,
                    buffers = BUFFERS,
                    "media worker receives through io_uring"
                );
                Some(ring)
            }
            Err(error) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                super::tuning::report_fallback(
                    &WARNED,
                    "io_uring_receive",
                    "epoll and recvmmsg",
                    worker,
                    &error,
                );
                None
            }
        }
    }

    /// Sets up the ring and registers `buffers` provided buffers (a power of two).
    pub(super) fn new(buffers: u16) -> io::Result<RecvRing> {
        if !buffers.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "provided buffers must be a power of two",
            ));
        }
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            // One completion per datagram between two polls: at most one per buffer, plus
            // the ends of requests (and never fewer than submission entries, which the kernel
            // refuses).
            .setup_cqsize((2 * u32::from(buffers)).max(SQ_ENTRIES))
            .build(SQ_ENTRIES)?;
        let count = usize::from(buffers);
        let entries_layout =
            Layout::from_size_align(count * mem::size_of::<BufRingEntry>(), page_size())
                .map_err(|_| io::Error::other("buffer ring layout"))?;
        let memory_layout = Layout::from_size_align(count * BUFFER_LEN, 64)
            .map_err(|_| io::Error::other("buffer layout"))?;
        // SAFETY: both layouts have a non-zero size (count ≥ 1).
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            .cast::<BufRingEntry>();
        // SAFETY: as above.
        let Some(memory) = NonNull::new(unsafe { alloc::alloc_zeroed(memory_layout) }) else {
            // SAFETY: allocated just above with this layout, never shared.
            unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut template: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        template.msg_namelen = NAME_LEN as libc::socklen_t;
        let mut receive = RecvRing {
            ring,
            entries,
            entries_layout,
            memory,
            memory_layout,
            buffers,
            tail: 0,
            unpublished: 0,
            template,
            live: HashSet::with_capacity(count),
            ending: 0,
            #[cfg(test)]
            enters: 0,
            #[cfg(test)]
            waits: 0,
            backlog: VecDeque::with_capacity(2 * count),
            counts: ReceiveCounts::default(),
            buffers_registered: false,
        };
        for bid in 0..buffers {
            receive.recycle(bid);
        }
        receive.publish();
        // SAFETY: `entries` is page-aligned, `buffers` entries long, and lives until the ring is
        // dropped (Drop unregisters it first, or leaks it).
        unsafe {
            receive.ring.submitter().register_buf_ring_with_flags(
                receive.entries.as_ptr() as u64,
                buffers,
                GROUP,
                0,
            )?;
        }
        receive.buffers_registered = true;
        Ok(receive)
    }

    /// Starts a multishot receive on `fd`, completions tagged `tag` (top bit clear). The request
    /// goes to the kernel at the next [`RecvRing::poll`] or [`RecvRing::disarm`]; the socket must
    /// stay open until it has been disarmed.
    pub(super) fn arm(&mut self, fd: RawFd, tag: u64) -> io::Result<()> {
        debug_assert_ne!(tag, CANCEL_TAG);
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.template, GROUP)
            .build()
            .user_data(tag);
        self.push(&entry)?;
        self.live.insert(tag);
        Ok(())
    }

    /// Queues the cancel of the receives of these tags without entering the kernel: the next
    /// [`RecvRing::poll`] (or [`RecvRing::wait`]) submits it and takes their final completions;
    /// datagrams already received stay in the backlog and are handed out, with their tags, by
    /// the next [`RecvRing::take`]. Until [`RecvRing::outcome`] says the receives are over, the
    /// kernel may still read their sockets.
    pub(super) fn cancel(&mut self, tags: [u64; 2]) -> Cancelled {
        for tag in tags {
            if self.live.contains(&tag) {
                // By the request's own tag, which the kernel finds in one bucket of its cancel
                // table; by file descriptor it walked every bucket (a tenth of a media worker's
                // time at 8,000 call setups a second).
                let cancel = opcode::AsyncCancel2::new(CancelBuilder::user_data(tag))
                    .build()
                    .user_data(CANCEL_TAG);
                match self.push(&cancel) {
                    Ok(()) => self.ending += 1,
                    Err(error) => {
                        tracing::error!(%error, "cannot queue the cancel of a media receive")
                    }
                }
            }
        }
        Cancelled {
            tags,
            deadline: Instant::now() + DRAIN_LIMIT,
        }
    }

    /// Whether cancelled receives are over: `Some(true)` when the kernel has ended them,
    /// `Some(false)` when they outlived `DRAIN_LIMIT` (logged: their sockets must be closed, not
    /// reused), `None` while they may still end.
    pub(super) fn outcome(&self, cancelled: &Cancelled) -> Option<bool> {
        if !cancelled.tags.iter().any(|tag| self.live.contains(tag)) {
            return Some(true);
        }
        if Instant::now() <= cancelled.deadline {
            return None;
        }
        tracing::error!(
            "media receives did not end within {DRAIN_LIMIT:?}; their sockets are closed, not reused"
        );
        Some(false)
    }

    /// Enters the kernel until the cancelled receives are over; their [`RecvRing::outcome`].
    pub(super) fn wait(&mut self, cancelled: &Cancelled) -> bool {
        // Its enters take the cancels' completions: the next poll need not ask for them.
        self.ending = 0;
        loop {
            if let Some(ended) = self.outcome(cancelled) {
                return ended;
            }
            self.enter(1, Duration::from_millis(1));
            self.pull();
        }
    }

    /// Submits queued arms and cancels and runs every receive the kernel deferred since the last
    /// call; their completions wait for [`RecvRing::take`].
    ///
    /// An `io_uring_enter` runs at most [`SMALL_RUN`] deferred receives, or as many as it asks
    /// completions for when that is more — and an enter that finds fewer completions than it
    /// asked for arms a timer for its zero timeout and sleeps until the timer fires: ~28 µs of
    /// a worker's time each on this project's VMs (timer programming and its interrupt are
    /// hypervisor exits), a fifth of the media workers' time at 2,000 call setups a second
    /// when every turn slept so. So:
    ///
    /// 1. the first enter asks for as many completions as receives were cancelled since the
    ///    last poll (each ends in deferred work) — no more than it is sure to find, since each
    ///    cancel's own completion is posted as it is submitted — so it runs their ends as well
    ///    as SMALL_RUN other receives and returns at once: a turn that closes twenty calls'
    ///    sockets ends their receives here, where it slept on the timer before;
    /// 2. only when that may have left some (as many completions as it ran) a second enter asks
    ///    for none and runs SMALL_RUN more;
    /// 3. only when that too may have left some does a third ask for as many completions as the
    ///    queue holds, which runs them all, and sleeps on the timer once.
    pub(super) fn poll(&mut self) {
        // At most a full completion queue (its own cancels' completions are there too).
        let ending = mem::take(&mut self.ending).min(self.ring.params().cq_entries() / 2);
        let ran = if ending == 0 {
            self.enter_without_waiting();
            SMALL_RUN
        } else {
            self.enter(ending, Duration::ZERO);
            SMALL_RUN.max(ending as usize)
        };
        if self.pull() < ran {
            return;
        }
        self.enter_without_waiting();
        if self.pull() >= SMALL_RUN {
            self.enter(self.ring.params().cq_entries(), Duration::ZERO);
            self.pull();
        }
    }

    /// One `io_uring_enter` that submits what is queued and runs up to [`SMALL_RUN`] deferred
    /// receives, asking for no completions (so it never sleeps). Not `enter(0, …)`: io-uring's
    /// `submit_with_args` sets `GETEVENTS` only when it asks for completions, and without it the
    /// kernel runs no deferred receive.
    fn enter_without_waiting(&mut self) {
        #[cfg(test)]
        {
            self.enters += 1;
        }
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: no argument is passed; the queued entries point at the boxed template, which
        // lives as long as the ring.
        let entered = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
        report_enter(entered);
    }

    /// Hands every completion taken so far to `handle`, in arrival order, with its tag, then
    /// gives the buffers back to the kernel.
    #[cfg(test)]
    pub(super) fn take(&mut self, mut handle: impl FnMut(u64, Received<'_>)) {
        self.take_looking_ahead(0, |tag, _, received| handle(tag, received));
    }

    /// As [`RecvRing::take`], and tells `handle` with each completion the tag of the one `ahead`
    /// places after it (if taken already): the worker fetches that connection's memory while it
    /// handles this one.
    pub(super) fn take_looking_ahead(
        &mut self,
        ahead: usize,
        mut handle: impl FnMut(u64, Option<u64>, Received<'_>),
    ) {
        while let Some(completion) = self.backlog.pop_front() {
            let upcoming = ahead
                .checked_sub(1)
                .and_then(|index| self.backlog.get(index))
                .map(|completion| completion.tag);
            let buffer = cqueue::buffer_select(completion.flags);
            if let (Some(bid), Ok(written)) = (buffer, usize::try_from(completion.result)) {
                if let Some((source, offset, len, truncated)) = self.parse(bid, written) {
                    // SAFETY: the kernel handed this buffer over with the completion and gets it
                    // back only through `recycle` below; no other reference to it exists.
                    let buf =
                        unsafe { std::slice::from_raw_parts_mut(self.buffer_ptr(bid), BUFFER_LEN) };
                    self.counts.datagrams += 1;
                    handle(
                        completion.tag,
                        upcoming,
                        Received::Datagram {
                            source,
                            buf: &mut buf[offset..],
                            len,
                            truncated,
                        },
                    );
                }
            }
            if let Some(bid) = buffer {
                self.recycle(bid);
            }
            if !cqueue::more(completion.flags) {
                let error = (completion.result < 0)
                    .then(|| io::Error::from_raw_os_error(-completion.result));
                if completion.result == -libc::ENOBUFS {
                    self.counts.out_of_buffers += 1;
                }
                handle(completion.tag, upcoming, Received::Ended { error });
            }
        }
        self.publish();
    }

    /// What went through this ring so far.
    pub(super) fn counts(&self) -> ReceiveCounts {
        self.counts
    }

    /// Where buffer `bid` starts.
    fn buffer_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < buffers, so the offset stays inside the allocation.
        unsafe { self.memory.as_ptr().add(usize::from(bid) * BUFFER_LEN) }
    }

    /// Reads the kernel's header in buffer `bid`: source, payload offset and length, truncation.
    fn parse(&self, bid: u16, written: usize) -> Option<(SocketAddr, usize, usize, bool)> {
        if bid >= self.buffers {
            return None;
        }
        // SAFETY: the buffer is ours since its completion (see `take`); read-only here.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.buffer_ptr(bid), written.min(BUFFER_LEN)) };
        let out = RecvMsgOut::parse(bytes, &self.template).ok()?;
        // SAFETY: all-zero sockaddr_storage is valid; the name is at most NAME_LEN bytes.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let name = out.name_data();
        // SAFETY: `name` has at most NAME_LEN (< size of sockaddr_storage) bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                name.len().min(NAME_LEN),
            );
        }
        let source = to_socket_addr(&storage)?;
        let payload = out.payload_data();
        let offset = payload.as_ptr() as usize - bytes.as_ptr() as usize;
        let truncated = out.is_payload_truncated() || payload.len() > MAX_PACKET;
        Some((source, offset, payload.len().min(MAX_PACKET), truncated))
    }

    /// Writes buffer `bid` into the next free entry of the buffer ring (published by
    /// [`RecvRing::publish`]).
    fn recycle(&mut self, bid: u16) {
        let index = usize::from(self.tail.wrapping_add(self.unpublished) & (self.buffers - 1));
        let address = self.buffer_ptr(bid) as u64;
        // SAFETY: index < buffers; entries between the kernel's head and the published tail are
        // the kernel's, this one is past the tail, so only we touch it.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        entry.set_addr(address);
        entry.set_len(BUFFER_LEN as u32);
        entry.set_bid(bid);
        self.unpublished += 1;
    }

    /// Makes the buffers written by [`RecvRing::recycle`] visible to the kernel.
    fn publish(&mut self) {
        if self.unpublished == 0 {
            return;
        }
        self.tail = self.tail.wrapping_add(self.unpublished);
        self.unpublished = 0;
        // SAFETY: the tail field is inside the first entry, which lives as long as `self`; the
        // kernel only reads it, with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Queues an entry, submitting first if the queue is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the entry's msghdr (the boxed template) lives as long as the ring.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        self.enter(0, Duration::ZERO);
        // SAFETY: as above.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    /// One `io_uring_enter` that submits what is queued, runs deferred work and waits up to
    /// `timeout` for `want` completions (sleeping on a timer when it finds fewer).
    fn enter(&mut self, want: u32, timeout: Duration) {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        let entered = self.ring.submitter().submit_with_args(want as usize, &args);
        #[cfg(test)]
        {
            self.enters += 1;
            self.waits += u64::from(matches!(
                &entered,
                Err(error) if error.raw_os_error() == Some(libc::ETIME)
            ));
        }
        report_enter(entered);
    }

    /// Moves the kernel's completions to the backlog and forgets requests that ended; how many
    /// receive completions it took (a cancel's own completion is posted when it is submitted,
    /// not by deferred work, and is not counted).
    fn pull(&mut self) -> usize {
        let mut taken = 0;
        let mut queue = self.ring.completion();
        queue.sync();
        for entry in &mut queue {
            let tag = entry.user_data();
            if tag == CANCEL_TAG {
                continue;
            }
            taken += 1;
            if !cqueue::more(entry.flags()) {
                self.live.remove(&tag);
            }
            self.backlog.push_back(Completion {
                tag,
                result: entry.result(),
                flags: entry.flags(),
            });
        }
        taken
    }
}

/// Logs an `io_uring_enter` that failed for another reason than its timeout, an interruption
/// or a full completion queue (all of which the next enter retries).
fn report_enter(result: io::Result<usize>) {
    if let Err(error) = result {
        if !matches!(
            error.raw_os_error(),
            Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
        ) {
            tracing::error!(%error, "io_uring enter failed for media receives");
        }
    }
}

impl Drop for RecvRing {
    fn drop(&mut self) {
        if !self.live.is_empty() {
            let cancel = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(CANCEL_TAG);
            let _ = self.push(&cancel);
            let deadline = Instant::now() + DRAIN_LIMIT;
            while !self.live.is_empty() && Instant::now() < deadline {
                self.enter(1, Duration::from_millis(1));
                self.pull();
            }
        }
        if !self.live.is_empty() {
            tracing::error!(
                requests = self.live.len(),
                "media receives still running at shutdown; their buffers are leaked"
            );
            return;
        }
        if self.buffers_registered && self.ring.submitter().unregister_buf_ring(GROUP).is_err() {
            // Still registered: the kernel may hold the address; leak rather than free.
            return;
        }
        // SAFETY: no request is in flight and the buffer ring is unregistered (or never was), so
        // the kernel holds neither allocation; both were made with these layouts.
        unsafe {
            alloc::dealloc(self.memory.as_ptr(), self.memory_layout);
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
        }
    }
}

/// The system's page size (the buffer ring must be page-aligned).
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// `count` sockets bound on loopback, each with one datagram queued from `sender` (its
    /// index, big-endian).
    fn sockets_with_one_datagram(count: usize, sender: &UdpSocket) -> Vec<UdpSocket> {
        let payload = |i: usize| (i as u32).to_be_bytes().to_vec();
        let sockets: Vec<UdpSocket> = (0..count)
            .map(|i| {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket.set_nonblocking(true).expect("nonblocking");
                sender
                    .send_to(&payload(i), socket.local_addr().expect("addr"))
                    .expect("send");
                socket
            })
            .collect();
        wait_delivered(&sockets, sender, payload);
        sockets
    }

    /// Waits until each socket has a datagram queued (on a busy machine loopback delivery can
    /// lag the send; once it is queued, so is an armed receive's deferred run), sending
    /// `payload(i)` to socket `i` again if loopback dropped it (its backlog full): the tests are
    /// about what a poll takes, not about loopback.
    fn wait_delivered(
        sockets: &[UdpSocket],
        sender: &UdpSocket,
        payload: impl Fn(usize) -> Vec<u8>,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (i, socket) in sockets.iter().enumerate() {
            let mut peek = [0u8; 8];
            let mut resend_at = Instant::now() + Duration::from_secs(1);
            while socket.peek_from(&mut peek).is_err() {
                assert!(Instant::now() < deadline, "a datagram was never delivered");
                if Instant::now() >= resend_at {
                    let _ = sender.send_to(&payload(i), socket.local_addr().expect("addr"));
                    resend_at = Instant::now() + Duration::from_secs(1);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Polls until `want` datagrams were taken (or two seconds pass), re-arming ended requests
    /// as the worker does; returns (tag, payload, source) of each.
    fn take_all(
        ring: &mut RecvRing,
        sockets: &[UdpSocket],
        want: usize,
    ) -> Vec<(u64, Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < want && Instant::now() < deadline {
            ring.poll();
            let mut ended = Vec::new();
            ring.take(|tag, received| match received {
                Received::Datagram {
                    source, buf, len, ..
                } => got.push((tag, buf[..len].to_vec(), source)),
                Received::Ended { .. } => ended.push(tag),
            });
            for tag in ended {
                ring.arm(sockets[tag as usize].as_raw_fd(), tag)
                    .expect("re-arm");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn one_poll_takes_the_datagrams_of_hundreds_of_sockets_with_their_sources() {
        let mut ring = RecvRing::new(1024).expect("io_uring with deferred task running");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sockets = sockets_with_one_datagram(300, &sender);
        for (i, socket) in sockets.iter().enumerate() {
            ring.arm(socket.as_raw_fd(), i as u64).expect("arm");
        }
        // Arming submits at the first poll; the receives already queued run in the same call.
        ring.poll();
        let mut got = Vec::new();
        ring.take(|tag, received| {
            if let Received::Datagram {
                source, buf, len, ..
            } = received
            {
                got.push((tag, buf[..len].to_vec(), source));
            }
        });
        assert_eq!(got.len(), 300, "one poll ran every queued receive");
        for (tag, payload, source) in &got {
            assert_eq!(payload, &(*tag as u32).to_be_bytes());
            assert_eq!(*source, sender.local_addr().expect("addr"));
        }
        assert_eq!(ring.counts().datagrams, 300);
        // Datagrams arriving later, while the worker is not in the kernel, wait for the next poll.
        sender
            .send_to(b"late", sockets[7].local_addr().expect("addr"))
            .expect("send");
        std::thread::sleep(Duration::from_millis(20));
        let got = take_all(&mut ring, &sockets, 1);
        assert_eq!(
            got,
            vec![(7, b"late".to_vec(), sender.local_addr().expect("a"))]
        );
    }

    #[test]
    fn one_poll_runs_every_deferred_receive_and_a_quiet_poll_does_not_wait() {
        let mut ring = RecvRing::new(1024).expect("io_uring with deferred task running");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sockets: Vec<UdpSocket> = (0..100)
            .map(|_| {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket.set_nonblocking(true).expect("nonblocking");
                socket
            })
            .collect();
        for (i, socket) in sockets.iter().enumerate() {
            ring.arm(socket.as_raw_fd(), i as u64).expect("arm");
        }
        // The arms go in; nothing to read: no enter that asks for completions (and would sleep
        // on a timer for its zero timeout).
        ring.poll();
        assert_eq!(ring.waits, 0, "a poll with nothing to receive waited");

        // Datagrams arriving now are received by deferred runs, five times more than an enter
        // that asks for no completions runs (Linux 6.10 on): one poll still takes them all.
        for socket in &sockets {
            sender
                .send_to(b"burst", socket.local_addr().expect("addr"))
                .expect("send");
        }
        wait_delivered(&sockets, &sender, |_| b"burst".to_vec());
        ring.poll();
        let mut tags = Vec::new();
        ring.take(|tag, received| {
            if let Received::Datagram { buf, len, .. } = received {
                assert_eq!(&buf[..len], b"burst");
                tags.push(tag);
            }
        });
        tags.sort_unstable();
        assert_eq!(
            tags,
            (0..100).collect::<Vec<u64>>(),
            "one poll, every receive"
        );

        // A few datagrams are taken by the enter that asks for none.
        let waits = ring.waits;
        for socket in &sockets[..3] {
            sender
                .send_to(b"few", socket.local_addr().expect("addr"))
                .expect("send");
        }
        wait_delivered(&sockets[..3], &sender, |_| b"few".to_vec());
        ring.poll();
        let mut got = 0;
        ring.take(|_, received| got += usize::from(matches!(received, Received::Datagram { .. })));
        assert_eq!(got, 3);
        assert_eq!(ring.waits, waits, "three receives waited on a timer");
    }

    /// A turn that closes many calls ends all their receives in its one poll, and without an
    /// enter that asks for more completions than it is sure to find (which sleeps on a timer
    /// for its zero timeout: ~28 µs on a VM, every turn of a worker whose calls come and go).
    #[test]
    fn the_receives_of_many_closed_calls_end_in_one_poll_without_a_timer() {
        let mut ring = RecvRing::new(64).expect("io_uring with deferred task running");
        let sockets: Vec<UdpSocket> = (0..60)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        for (i, socket) in sockets.iter().enumerate() {
            ring.arm(socket.as_raw_fd(), i as u64).expect("arm");
        }
        ring.poll();
        // Thirty calls close: sixty receives, three times what an enter asking for none runs.
        let cancelled: Vec<Cancelled> = (0..30u64)
            .map(|call| ring.cancel([2 * call, 2 * call + 1]))
            .collect();
        let waits = ring.waits;
        ring.poll();
        for c in &cancelled {
            assert_eq!(ring.outcome(c), Some(true), "{:?} still live", c.tags);
        }
        assert_eq!(ring.waits, waits, "the ends waited on a timer");
        let mut ended = 0;
        ring.take(|_, received| {
            if let Received::Ended { error } = received {
                assert_eq!(error.and_then(|e| e.raw_os_error()), Some(libc::ECANCELED));
                ended += 1;
            }
        });
        assert_eq!(ended, 60);
    }

    #[test]
    fn when_the_buffers_run_out_the_requests_end_and_rearmed_they_take_the_rest() {
        let mut ring = RecvRing::new(8).expect("ring");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let to = socket.local_addr().expect("addr");
        for i in 0u32..40 {
            sender.send_to(&i.to_be_bytes(), to).expect("send");
        }
        ring.arm(socket.as_raw_fd(), 0).expect("arm");
        let got = take_all(&mut ring, std::slice::from_ref(&socket), 40);
        let payloads: Vec<Vec<u8>> = got.into_iter().map(|(_, p, _)| p).collect();
        let expected: Vec<Vec<u8>> = (0u32..40).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(payloads, expected, "every datagram, in order, none lost");
        assert!(
            ring.counts().out_of_buffers > 0,
            "8 buffers for 40 datagrams"
        );
    }

    #[test]
    fn a_disarmed_socket_is_released_at_once_and_its_port_can_be_bound_again() {
        let mut ring = RecvRing::new(16).expect("ring");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = socket.local_addr().expect("addr");
        ring.arm(socket.as_raw_fd(), 5).expect("arm");
        ring.poll();
        // Tag 6 was never armed: only 5 is cancelled and waited for.
        let cancelled = ring.cancel([5, 6]);
        assert!(ring.wait(&cancelled), "the receive ended");
        drop(socket);
        // Were a receive still holding the socket, the port would still be bound.
        let again = UdpSocket::bind(address).expect("the port is free after disarm and close");
        again.set_nonblocking(true).expect("nonblocking");
        let mut ended = Vec::new();
        ring.take(|tag, received| {
            if let Received::Ended { error } = received {
                ended.push((tag, error.and_then(|e| e.raw_os_error())));
            }
        });
        assert_eq!(ended, vec![(5, Some(libc::ECANCELED))]);
        // The ring still works for other sockets.
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender.send_to(b"x", address).expect("send");
        ring.arm(again.as_raw_fd(), 0).expect("arm");
        let got = take_all(&mut ring, std::slice::from_ref(&again), 1);
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn a_datagram_longer_than_any_packet_is_flagged_truncated() {
        let mut ring = RecvRing::new(8).expect("ring");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender
            .send_to(&[0u8; MAX_PACKET + 200], socket.local_addr().expect("addr"))
            .expect("send");
        ring.arm(socket.as_raw_fd(), 0).expect("arm");
        std::thread::sleep(Duration::from_millis(5));
        ring.poll();
        let mut seen = Vec::new();
        ring.take(|_, received| {
            if let Received::Datagram { len, truncated, .. } = received {
                seen.push((len, truncated));
            }
        });
        assert_eq!(seen, vec![(MAX_PACKET, true)]);
    }
}
