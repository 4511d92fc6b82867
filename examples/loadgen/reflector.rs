//! The baseline: a minimal in-process UDP reflector, one thread per core, recvmmsg/sendmmsg
//! in batches of 64, every datagram sent straight back to its source.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::ports::PortRange;
use crate::sys;

const BATCH: usize = 64;
const SOCKET_BUFFER: usize = 8 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Sockets {
    /// One SO_REUSEPORT socket per thread, all on the same port (the kernel spreads flows by
    /// 4-tuple hash); blocking recvmmsg.
    Reuseport,
    /// One socket (port) per flow, spread over the threads, each thread with its own epoll:
    /// the shape of a media server with one socket per call.
    PerFlow,
}

pub struct Reflector {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    reflected: Vec<Arc<AtomicU64>>,
    /// Where flow f must send: `targets[f % targets.len()]`.
    pub targets: Vec<SocketAddr>,
    /// SO_RCVBUF granted on the (first) reflector socket, bytes.
    pub rcvbuf: usize,
}

impl Reflector {
    pub fn start(
        mode: Sockets,
        threads: usize,
        flows: usize,
        ports: &mut PortRange,
    ) -> std::io::Result<Reflector> {
        let threads = threads.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut reflector = Reflector {
            threads: Vec::new(),
            stop: stop.clone(),
            reflected: Vec::new(),
            targets: Vec::new(),
            rcvbuf: 0,
        };
        let mut per_thread: Vec<Vec<UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
        match mode {
            Sockets::Reuseport => {
                let group = ports.bind_reuseport(threads, SOCKET_BUFFER)?;
                reflector.rcvbuf = sys::recv_buffer(group[0].as_raw_fd());
                reflector.targets.push(group[0].local_addr()?);
                for (t, s) in group.into_iter().enumerate() {
                    s.set_nonblocking(false)?;
                    s.set_read_timeout(Some(std::time::Duration::from_millis(50)))?;
                    per_thread[t].push(s);
                }
            }
            Sockets::PerFlow => {
                for f in 0..flows.max(1) {
                    let s = ports.bind_one(SOCKET_BUFFER / 8)?;
                    reflector.rcvbuf = sys::recv_buffer(s.as_raw_fd());
                    reflector.targets.push(s.local_addr()?);
                    per_thread[f % threads].push(s);
                }
            }
        }
        for (t, sockets) in per_thread.into_iter().enumerate() {
            let counter = Arc::new(AtomicU64::new(0));
            reflector.reflected.push(counter.clone());
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("reflector-{t}"))
                .spawn(move || match mode {
                    Sockets::Reuseport => reflect_blocking(&sockets[0], &counter, &stop),
                    Sockets::PerFlow => reflect_epoll(&sockets, &counter, &stop),
                })?;
            reflector.threads.push(handle);
        }
        Ok(reflector)
    }

    /// Datagrams reflected so far and the reflector threads' CPU time (ns).
    pub fn sample(&self) -> (u64, u64) {
        let packets = self
            .reflected
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let cpu = self
            .threads
            .iter()
            .map(|h| sys::pthread_cpu_ns(h.as_pthread_t()))
            .sum();
        (packets, cpu)
    }

    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads {
            let _ = h.join();
        }
    }
}

fn reflect_blocking(socket: &UdpSocket, counter: &AtomicU64, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut batch = sys::Batch::new(BATCH);
    while !stop.load(Ordering::Relaxed) {
        // Blocks for the first datagram (up to the 50 ms SO_RCVTIMEO), then takes what is queued.
        let Ok(n) = batch.recv(fd, BATCH, libc::MSG_WAITFORONE, false) else {
            continue;
        };
        // Counted before they go back: a generator that has its echo finds it counted (a
        // count after the send raced the generator's last read under load).
        counter.fetch_add(n as u64, Ordering::Relaxed);
        batch.reflect(fd, n);
    }
}

fn reflect_epoll(sockets: &[UdpSocket], counter: &AtomicU64, stop: &AtomicBool) {
    let epoll = sys::Epoll::new().expect("epoll_create1");
    for (i, s) in sockets.iter().enumerate() {
        epoll.add(s.as_raw_fd(), i as u64).expect("epoll add");
    }
    let mut batch = sys::Batch::new(BATCH);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while !stop.load(Ordering::Relaxed) {
        let ready = epoll.wait(&mut events, 50);
        for ev in &events[..ready] {
            let fd = sockets[ev.u64 as usize].as_raw_fd();
            for _ in 0..4 {
                let Ok(n) = batch.recv(fd, BATCH, libc::MSG_DONTWAIT, false) else {
                    break;
                };
                // Counted before they go back (see reflect_blocking).
                counter.fetch_add(n as u64, Ordering::Relaxed);
                batch.reflect(fd, n);
                if n < BATCH {
                    break;
                }
            }
        }
    }
}
