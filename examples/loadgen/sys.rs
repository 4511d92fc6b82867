//! Thin libc wrappers: clocks, sleeping, limits, epoll, recvmmsg/sendmmsg batches and the
//! /proc readers (process CPU, UDP drop counters, the pid owning a UDP port).

use std::io;
use std::mem;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::ptr;

/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) on x86-64 and arm64: a `timespec` of CLOCK_REALTIME
/// taken when the packet entered the receive path (for loopback: when the peer sent it).
const SO_TIMESTAMPNS: libc::c_int = 35;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec; clock ids used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_REALTIME in ns: the clock of kernel receive timestamps (send/receive stamps only).
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// CLOCK_MONOTONIC in ns: schedules and windows.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of this whole process (all threads).
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of another thread of this process (by pthread id).
pub fn pthread_cpu_ns(thread: libc::pthread_t) -> u64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `thread` is a live joinable thread (the caller holds its JoinHandle).
    if unsafe { libc::pthread_getcpuclockid(thread, &mut clock) } != 0 {
        return 0;
    }
    clock_ns(clock)
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (absolute, so no drift).
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    for _ in 0..1000 {
        // SAFETY: valid timespec, null remainder is allowed with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}

/// Pins the calling thread to `core`, one of the machine's (best effort: a refusal leaves it
/// free to move; a core beyond the set's size is ignored).
pub fn pin_to_core(core: usize) {
    if core >= libc::CPU_SETSIZE as usize {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it (`core` < CPU_SETSIZE,
    // checked above) and sched_setaffinity only reads the set passed to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Timer slack of the calling thread (default 50 µs); 1 µs lets a pacer wake close to its
/// deadline without spinning.
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
}

/// Raises RLIMIT_NOFILE to at least `want` (soft, and hard if allowed). Returns the soft limit
/// now in force, or an error text when the kernel refused and the limit stays below `want`.
pub fn raise_nofile(want: u64) -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let wanted = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(want);
    }
    let first = io::Error::last_os_error();
    // Not allowed to raise the hard limit: take what the hard limit allows.
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: valid rlimit.
    let now = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        lim.rlim_max
    } else {
        lim.rlim_cur
    };
    Err(format!(
        "setrlimit(RLIMIT_NOFILE, {want}) refused ({first}); soft limit is {now}"
    ))
}

/// Waits until `fd` is readable or `timeout_ms` passes.
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) > 0 }
}

/// Asks for kernel receive timestamps (`SO_TIMESTAMPNS`) on a socket.
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: valid option value pointer and length.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// SO_RCVBUFFORCE and SO_SNDBUFFORCE to `bytes` (needs CAP_NET_ADMIN).
pub fn set_buffer_force(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: valid option value pointer and length.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    Ok(())
}

/// The receive buffer the kernel granted (SO_RCVBUF, bytes; the kernel doubles requests).
pub fn recv_buffer(fd: RawFd) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out pointers.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    v.max(0) as usize
}

/// An epoll instance (level-triggered EPOLLIN).
pub struct Epoll {
    fd: RawFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll { fd })
    }

    pub fn add(&self, fd: RawFd, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: valid epoll fd, fd and event.
        cvt(unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
    }

    /// Fills `events`; returns how many are ready (0 on timeout or EINTR).
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: the buffer holds `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Largest datagram a batch slot holds (RTP here is 172 bytes).
const SLOT: usize = 2048;
const CONTROL: usize = 64;

/// Preallocated buffers for recvmmsg/sendmmsg. The header array points into the boxed
/// buffers, which never move.
pub struct Batch {
    bufs: Box<[[u8; SLOT]]>,
    // Owned here only so the raw pointers in `hdrs` stay valid.
    _names: Box<[libc::sockaddr_storage]>,
    _control: Box<[[u64; CONTROL / 8]]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers only point into the Batch's own boxes.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new(size: usize) -> Batch {
        let mut bufs = vec![[0u8; SLOT]; size].into_boxed_slice();
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs; all-zero is valid.
        let mut names: Box<[libc::sockaddr_storage]> =
            (0..size).map(|_| unsafe { mem::zeroed() }).collect();
        let mut control = vec![[0u64; CONTROL / 8]; size].into_boxed_slice();
        let mut iovs: Box<[libc::iovec]> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: SLOT,
            })
            .collect();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..size)
            .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
            .collect();
        for i in 0..size {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = &mut names[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = control[i].as_mut_ptr() as *mut libc::c_void;
        }
        Batch {
            bufs,
            _names: names,
            _control: control,
            iovs,
            hdrs,
        }
    }

    pub fn len(&self) -> usize {
        self.hdrs.len()
    }

    fn reset(&mut self, n: usize, with_control: bool) {
        for i in 0..n {
            self.iovs[i].iov_len = SLOT;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_controllen = if with_control { CONTROL } else { 0 };
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
    }

    /// recvmmsg of up to `n` datagrams. `flags`: MSG_DONTWAIT or MSG_WAITFORONE.
    pub fn recv(
        &mut self,
        fd: RawFd,
        n: usize,
        flags: libc::c_int,
        control: bool,
    ) -> io::Result<usize> {
        let n = n.min(self.len());
        self.reset(n, control);
        // SAFETY: the headers point at live buffers of the advertised sizes.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                ptr::null_mut(),
            )
        };
        cvt(got).map(|g| g as usize)
    }

    /// Datagram `i` of the last recv.
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(SLOT);
        &self.bufs[i][..len]
    }

    /// The SO_TIMESTAMPNS stamp of datagram `i`, if the kernel attached one.
    pub fn rx_timestamp_ns(&self, i: usize) -> Option<u64> {
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk within them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                    let ts = ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// Sends datagrams 0..n of the last recv back to their sources (sendmmsg, retried on a
    /// partial send). Returns how many went out; the rest were dropped.
    pub fn reflect(&mut self, fd: RawFd, n: usize) -> usize {
        for i in 0..n {
            self.iovs[i].iov_len = self.hdrs[i].msg_len as usize;
            self.hdrs[i].msg_hdr.msg_controllen = 0;
        }
        let mut done = 0;
        let mut sent = 0;
        for _ in 0..n + 8 {
            if done >= n {
                break;
            }
            // SAFETY: headers done..n are valid and point at live buffers and addresses.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if r <= 0 {
                // The error (full buffer, ICMP-induced ECONNREFUSED) is about the first
                // datagram: drop it and go on with the rest.
                done += 1;
                continue;
            }
            done += r as usize;
            sent += r as usize;
        }
        sent
    }
}

/// Datagrams to many destinations from one unconnected socket, sent with one `sendmmsg` per
/// batch (the `--shared-media` generator). Buffers and addresses live in the batch, never move.
pub struct SendBatch {
    bufs: Box<[[u8; SLOT]]>,
    names: Box<[libc::sockaddr_in]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// What each queued datagram is, for the caller to account for failures: (flow, index).
    pub ids: Vec<(usize, u64)>,
}

// SAFETY: the raw pointers only point into the batch's own boxes.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(size: usize) -> SendBatch {
        let mut bufs = vec![[0u8; SLOT]; size].into_boxed_slice();
        // SAFETY: sockaddr_in and mmsghdr are plain C structs; all-zero is valid.
        let mut names: Box<[libc::sockaddr_in]> =
            (0..size).map(|_| unsafe { mem::zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: 0,
            })
            .collect();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..size)
            .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
            .collect();
        for i in 0..size {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = &mut names[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        SendBatch {
            bufs,
            names,
            iovs,
            hdrs,
            ids: Vec::with_capacity(size),
        }
    }

    pub fn is_full(&self) -> bool {
        self.ids.len() == self.hdrs.len()
    }

    /// Queues `packet` for `dest`; the caller flushes when full.
    pub fn push(&mut self, packet: &[u8], dest: std::net::SocketAddrV4, id: (usize, u64)) {
        let i = self.ids.len();
        let len = packet.len().min(SLOT);
        self.bufs[i][..len].copy_from_slice(&packet[..len]);
        self.iovs[i].iov_len = len;
        self.names[i] = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: dest.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*dest.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        self.ids.push(id);
    }

    /// Sends everything queued from `fd`; returns the ids that could not be sent (a full
    /// buffer or an ICMP-induced error drops that datagram, the rest go on).
    pub fn flush(&mut self, fd: RawFd) -> Vec<(usize, u64)> {
        let n = self.ids.len();
        let mut failed = Vec::new();
        let mut done = 0;
        while done < n {
            // SAFETY: headers done..n point at live buffers and addresses of this batch.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..n].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if r <= 0 {
                failed.push(self.ids[done]);
                done += 1;
                continue;
            }
            done += r as usize;
        }
        self.ids.clear();
        failed
    }
}

/// Clock ticks per second for /proc/<pid>/stat.
pub fn clk_tck() -> u64 {
    // SAFETY: plain sysconf.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of a process, in ns (from /proc/<pid>/stat, clock-tick resolution).
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000_000 / clk_tck())
}

/// Machine-wide CPU time from the first line of /proc/stat, ns (summed over all cores).
#[derive(Clone, Copy, Default)]
pub struct MachineCpu {
    /// user + nice + system: time spent running processes (ours and everyone else's).
    pub tasks_ns: u64,
    /// irq + softirq: with IRQ time accounting, loopback packet delivery lands here and not
    /// in any process's utime/stime.
    pub softirq_ns: u64,
    /// Time the hypervisor ran someone else.
    pub steal_ns: u64,
}

pub fn machine_cpu() -> Option<MachineCpu> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let t = |i: usize| v.get(i).copied().unwrap_or(0) * 1_000_000_000 / clk_tck();
    Some(MachineCpu {
        tasks_ns: t(0) + t(1) + t(2),
        softirq_ns: t(5) + t(6),
        steal_ns: t(7),
    })
}

impl MachineCpu {
    pub fn since(&self, earlier: &MachineCpu) -> MachineCpu {
        MachineCpu {
            tasks_ns: self.tasks_ns.saturating_sub(earlier.tasks_ns),
            softirq_ns: self.softirq_ns.saturating_sub(earlier.softirq_ns),
            steal_ns: self.steal_ns.saturating_sub(earlier.steal_ns),
        }
    }
}

/// Machine-wide UDP error counters from /proc/net/snmp (RcvbufErrors, SndbufErrors);
/// loopback drops show up here.
#[derive(Clone, Copy, Default)]
pub struct UdpCounters {
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

pub fn udp_counters() -> Option<UdpCounters> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> u64 {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(UdpCounters {
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
    })
}

impl UdpCounters {
    /// Datagrams dropped between `earlier` and `self` (receive-buffer + send-buffer errors).
    pub fn drops_since(&self, earlier: &UdpCounters) -> u64 {
        self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors)
            + self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors)
    }
}

/// Whether `ip` is one of this machine's addresses (a socket can be bound to it).
pub fn is_local_address(ip: std::net::Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The pid of the process holding a UDP socket bound to `addr` (or to 0.0.0.0 on its port),
/// found through /proc/net/udp inodes and /proc/<pid>/fd links.
pub fn udp_port_owner(addr: SocketAddrV4) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let port = format!("{:04X}", addr.port());
    let ip = format!("{:08X}", u32::from_ne_bytes(addr.ip().octets()));
    let mut inodes = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some((lip, lport)) = f.get(1).and_then(|a| a.split_once(':')) else {
            continue;
        };
        if lport == port && (lip == ip || lip == "00000000") {
            if let Some(inode) = f.get(9) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Pids whose command name (/proc/<pid>/comm) is exactly `name` (like `pgrep -x`).
pub fn pids_named(name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
                if comm.trim_end() == name {
                    out.push(pid);
                }
            }
        }
    }
    out
}
