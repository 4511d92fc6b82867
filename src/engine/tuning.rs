//! Worker thread and process tuning: CPU pinning, SCHED_FIFO, per-epoll busy polling and
//! mlockall.
//!
//! Owns: the system calls socket2 and mio do not offer. Every one is optional and configured;
//! a refusal (no CAP_SYS_NICE / CAP_IPC_LOCK, a kernel without EPIOCSPARAMS) is logged once and
//! the worker carries on without it — media still flows, only less deterministically.
//! Must not: be called on the packet path (thread start and process start only).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// What each worker thread applies to itself at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadTuning {
    /// Pin worker `n` to core `n % cores`.
    pub pin_to_core: bool,
    /// SCHED_FIFO priority (1–99); 0 keeps the normal scheduler.
    pub realtime_priority: u8,
    /// Per-epoll busy poll (Linux ≥ 6.9, EPIOCSPARAMS) in µs; 0 = off.
    pub busy_poll_us: u32,
    /// Packets per busy-poll pass; 0 = kernel default (8).
    pub busy_poll_budget: u32,
    /// Read sockets only at each playout tick instead of waking per packet: one wake-up per
    /// 20 ms for all of a worker's connections, at the cost of up to one tick of added delay.
    pub receive_at_tick: bool,
    /// Send through one io_uring per worker (queued during a turn, submitted once at its end)
    /// instead of one `sendto` per packet; falls back to `sendto` when the kernel refuses.
    pub io_uring_send: bool,
    /// With `receive_at_tick`: read every socket through one io_uring per worker (a multishot
    /// receive per socket, run by one `io_uring_enter` per tick) instead of epoll and one
    /// `recvmmsg` per socket; falls back to those when the kernel refuses.
    pub io_uring_receive: bool,
}

/// Applies pinning and the realtime policy to the calling thread (a worker at its start).
pub(super) fn apply_to_current_thread(worker: usize, tuning: &ThreadTuning) {
    if tuning.pin_to_core {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let core = worker % cores;
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within its bounds
        // because `core` < available cores ≤ CPU_SETSIZE.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        report("sched_setaffinity", worker, rc);
    }
    if tuning.realtime_priority > 0 {
        let param = libc::sched_param {
            sched_priority: i32::from(tuning.realtime_priority.min(99)),
        };
        // SAFETY: `param` is a valid sched_param; 0 means the calling thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        report("SCHED_FIFO", worker, rc);
    }
}

/// Turns on busy polling for an epoll instance (the worker's `mio::Poll`).
pub(super) fn apply_epoll_busy_poll(poll: &mio::Poll, worker: usize, tuning: &ThreadTuning) {
    if tuning.busy_poll_us == 0 {
        return;
    }
    // SAFETY: zeroed epoll_params is valid (all-integer struct); fields set below.
    let mut params: libc::epoll_params = unsafe { std::mem::zeroed() };
    params.busy_poll_usecs = tuning.busy_poll_us;
    params.busy_poll_budget = tuning.busy_poll_budget.min(u32::from(u16::MAX)) as u16;
    params.prefer_busy_poll = 1;
    // SAFETY: the fd is mio's live epoll fd; EPIOCSPARAMS reads exactly one epoll_params.
    let rc = unsafe { libc::ioctl(poll.as_raw_fd(), libc::EPIOCSPARAMS, &params) };
    report("EPIOCSPARAMS (per-epoll busy poll)", worker, rc);
}

/// Locks all current and future memory (no page faults on the media path).
pub fn lock_memory() -> io::Result<()> {
    // SAFETY: mlockall takes flags only.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn report(what: &str, worker: usize, rc: libc::c_int) {
    if rc == 0 {
        tracing::debug!(worker, what, "media worker tuning applied");
        return;
    }
    let error = io::Error::last_os_error();
    // One line per worker at start; refusals are expected without capabilities.
    tracing::warn!(worker, what, %error, "media worker tuning refused, continuing without it");
}

/// An opt-in kernel path (`option`) the kernel refused, so the worker uses `fallback`: warned
/// the first time in the process (`warned` is the caller's flag), at debug level for the
/// other workers after that.
pub(super) fn report_fallback(
    warned: &AtomicBool,
    option: &str,
    fallback: &str,
    worker: usize,
    error: &io::Error,
) {
    if warned.swap(true, Ordering::Relaxed) {
        tracing::debug!(worker, option, fallback, %error, "kernel refused, using the fallback");
    } else {
        tracing::warn!(
            worker,
            option,
            fallback,
            %error,
            "{option} is on but the kernel refuses it: media goes through {fallback}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_the_current_thread_restricts_it_to_one_core() {
        std::thread::spawn(|| {
            apply_to_current_thread(
                0,
                &ThreadTuning {
                    pin_to_core: true,
                    ..ThreadTuning::default()
                },
            );
            // SAFETY: zeroed cpu_set_t is valid; sched_getaffinity fills it.
            let count = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                let rc =
                    libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
                assert_eq!(rc, 0);
                libc::CPU_COUNT(&set)
            };
            assert_eq!(count, 1, "pinned to exactly one core");
        })
        .join()
        .expect("thread ran");
    }

    /// Whether this process may use SCHED_FIFO, probed on a throw-away thread.
    fn realtime_permitted() -> bool {
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: valid sched_param for the calling (throw-away) thread.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
        })
        .join()
        .expect("probe thread ran")
    }

    #[test]
    fn realtime_priority_is_applied_when_permitted_and_skipped_otherwise() {
        let permitted = realtime_permitted();
        let (policy, priority) = std::thread::spawn(|| {
            apply_to_current_thread(
                1,
                &ThreadTuning {
                    realtime_priority: 10,
                    ..ThreadTuning::default()
                },
            );
            let mut param = libc::sched_param { sched_priority: 0 };
            // SAFETY: 0 = the calling thread; `param` is a valid out-parameter.
            unsafe {
                let policy = libc::sched_getscheduler(0);
                libc::sched_getparam(0, &mut param);
                (policy, param.sched_priority)
            }
        })
        .join()
        .expect("thread ran");
        if permitted {
            assert_eq!((policy, priority), (libc::SCHED_FIFO, 10));
        } else {
            assert_eq!(
                policy,
                libc::SCHED_OTHER,
                "refused: the thread keeps the normal scheduler"
            );
        }
    }

    #[test]
    fn epoll_busy_poll_parameters_read_back_when_the_kernel_takes_them() {
        let poll = mio::Poll::new().expect("poll");
        apply_epoll_busy_poll(
            &poll,
            1,
            &ThreadTuning {
                busy_poll_us: 50,
                busy_poll_budget: 16,
                ..ThreadTuning::default()
            },
        );
        // SAFETY: zeroed epoll_params is valid; EPIOCGPARAMS fills exactly one.
        let mut params: libc::epoll_params = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::ioctl(poll.as_raw_fd(), libc::EPIOCGPARAMS, &mut params) };
        if rc == 0 {
            // A kernel with per-epoll busy poll must hold exactly what we set.
            assert_eq!(params.busy_poll_usecs, 50);
            assert_eq!(params.busy_poll_budget, 16);
            assert_eq!(params.prefer_busy_poll, 1);
        } else {
            // Older kernel: no such ioctl, and the worker goes on without it.
            assert_ne!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EFAULT)
            );
        }
    }
}
