//! SIP over UDP, TCP and TLS on tokio: sockets in, parsed messages out, bytes back.
//!
//! Owns: the listening sockets, TCP connections (accepted and opened), TLS connections
//! (accepted; rustls does the handshake), stream framing (RFC 3261 §18.3) and the choice of
//! our address as a peer sees it.
//! Must not: keep SIP state. Every message goes to the control plane through the overload
//! intake ([`super::overload`]), which may answer a new request 503 itself; nothing queues
//! without bound. A request that does
//! not parse goes there too, as [`Received::Unparsed`], so the UA can answer it (RFC 4475
//! §3.1.2); a response that does not parse is dropped.
//!
//! Closing a stream: junk that cannot be framed, a message too large, a partial message that
//! stalls, or the peer's end of stream stop the reading, but the connection is not dropped
//! there: its reader queues [`Received::StreamEnd`] behind the messages it already handed on,
//! and the control plane calls [`SipTransport::close_stream`] when it reaches it, once it has
//! answered them. The answers go out on that connection, then it closes.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::message::{frame, parse, Frame, SipMessage, Unparsed};
use super::overload::{Intake, SipIntake};
use super::transaction::{Peer, Transport};
use crate::udp_batch::{self, RecvBatch};

/// Largest message we accept on a stream before giving up on the connection.
const MAX_STREAM_BUFFER: usize = 256 * 1024;

/// A TLS client that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A stream holding part of a message that gets no further byte for this long is closed
/// (RFC 4475 §3.1.2.2 clerr: a Content-Length beyond what ever comes). 64·T1 of the default T1,
/// the longest a SIP transaction waits.
const PARTIAL_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(32);

/// A listener from `[sip] listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub transport: ListenTransport,
    pub addr: SocketAddr,
}

/// As written in `[sip] listen`: `udp://127.0.0.1:5060`.
impl std::fmt::Display for SipListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.transport {
            ListenTransport::Udp => "udp",
            ListenTransport::Tcp => "tcp",
            ListenTransport::Tls => "tls",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransport {
    Udp,
    Tcp,
    /// TCP with TLS: needs a certificate and its private key.
    Tls,
}

/// One message from the network.
#[derive(Debug)]
pub struct Inbound {
    pub received: Received,
    pub source: Peer,
    /// Our address (IP and listener port) as `source` reaches us.
    pub local: SocketAddr,
    /// When it was read off the socket: its wait for the control plane is the overload signal.
    pub arrived: std::time::Instant,
}

/// What came from a peer.
#[derive(Debug)]
pub enum Received {
    /// A message that parsed.
    Message(SipMessage),
    /// A request that did not, kept as far as its answer needs.
    Unparsed(Unparsed),
    /// The stream connection from `source` reads no more: close it (see the module notes)
    /// once the messages before this one are answered. `connection` tells it from a later
    /// connection of the same peer address.
    StreamEnd { connection: u64 },
}

impl Received {
    /// What `parse` made of these bytes: the message, what is left of a request it refused,
    /// or None (an unparseable response, or no request at all).
    fn from_bytes(bytes: &[u8]) -> Option<Received> {
        match parse(bytes) {
            Ok(message) => Some(Received::Message(message)),
            Err(e) => {
                tracing::debug!(error = %e, len = bytes.len(), "unparseable SIP message");
                Unparsed::salvage(bytes, e).map(Received::Unparsed)
            }
        }
    }
}

/// One stream connection in the map: its writer queue, and its number (see
/// [`Received::StreamEnd`]).
#[derive(Clone)]
struct StreamWriter {
    connection: u64,
    queue: mpsc::Sender<Vec<u8>>,
}

/// Handle for sending; cheap to clone.
#[derive(Clone)]
pub struct SipTransport {
    inner: Arc<Inner>,
}

/// A SIP UDP socket, registered with the reactor for reading only: sends never wait for
/// room (a datagram the kernel cannot take is dropped, as the network may drop it, and the
/// transaction layer resends), so nothing asks to be told when the socket is writable — and
/// with write interest registered, every datagram the kernel frees after sending it wakes the
/// reactor's epoll (`sock_wfree` → `ep_poll_callback`): 5 % of the control threads' time at
/// 2,000 call setups a second (docs/PERFORMANCE.md).
type SipUdpSocket = AsyncFd<std::net::UdpSocket>;

/// A UDP listener's batch: 16 datagrams of up to 64 KiB, the most UDP carries, so no SIP
/// message is ever truncated. 1 MiB of address space, of which only what datagrams write is
/// ever touched.
type SipBatch = RecvBatch<16, 65_536>;

struct Inner {
    udp: Vec<(Arc<SipUdpSocket>, SocketAddr)>,
    tcp_listeners: Vec<SocketAddr>,
    tls_listeners: Vec<SocketAddr>,
    /// Open TCP and TLS connections by transport and peer address: the writer queue of each.
    tcp_connections: Mutex<HashMap<(Transport, SocketAddr), StreamWriter>>,
    /// The number the next stream connection gets.
    next_connection: std::sync::atomic::AtomicU64,
    intake: SipIntake,
    advertised: Option<IpAddr>,
    /// See [`PARTIAL_MESSAGE_TIMEOUT`].
    partial_message_timeout: std::time::Duration,
}

impl SipTransport {
    /// Binds every listener (IPv6 sockets are v6-only so `0.0.0.0` and `[::]` can share a port)
    /// and starts their receive tasks.
    pub async fn start(
        listeners: &[SipListen],
        tls_config: Option<Arc<rustls::ServerConfig>>,
        advertised: Option<IpAddr>,
        intake: SipIntake,
    ) -> io::Result<SipTransport> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut tls = Vec::new();
        for l in listeners {
            // Which listener could not bind: "tcp://127.0.0.1:5060: Address already in use".
            let named = |e: io::Error| io::Error::new(e.kind(), format!("{l}: {e}"));
            match l.transport {
                ListenTransport::Udp => {
                    let socket = bind_udp(l.addr).map_err(named)?;
                    let local = socket.get_ref().local_addr()?;
                    udp.push((Arc::new(socket), local));
                }
                ListenTransport::Tcp => {
                    let listener = bind_tcp(l.addr).map_err(named)?;
                    let local = listener.local_addr()?;
                    tcp.push((listener, local));
                }
                ListenTransport::Tls => {
                    let listener = bind_tcp(l.addr).map_err(named)?;
                    let local = listener.local_addr()?;
                    tls.push((listener, local));
                }
            }
        }
        let acceptor = match (&tls_config, tls.is_empty()) {
            (_, true) => None,
            (Some(config), false) => Some(tokio_rustls::TlsAcceptor::from(config.clone())),
            (None, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a tls:// listener needs a certificate and key",
                ))
            }
        };
        let inner = Arc::new(Inner {
            udp: udp.clone(),
            tcp_listeners: tcp.iter().map(|(_, a)| *a).collect(),
            tls_listeners: tls.iter().map(|(_, a)| *a).collect(),
            tcp_connections: Mutex::new(HashMap::new()),
            next_connection: std::sync::atomic::AtomicU64::new(1),
            intake,
            advertised,
            partial_message_timeout: PARTIAL_MESSAGE_TIMEOUT,
        });
        for (socket, local) in udp {
            tokio::spawn(udp_receive(inner.clone(), socket, local));
        }
        for (listener, local) in tcp {
            tokio::spawn(tcp_accept(inner.clone(), listener, local));
        }
        if let Some(acceptor) = acceptor {
            for (listener, local) in tls {
                tokio::spawn(tls_accept(inner.clone(), listener, local, acceptor.clone()));
            }
        }
        Ok(SipTransport { inner })
    }

    /// Local addresses actually bound (after port 0 resolution), for logs and tests.
    pub fn local_addresses(&self) -> Vec<(Transport, SocketAddr)> {
        let udp = self.inner.udp.iter().map(|(_, a)| (Transport::Udp, *a));
        let tcp = self
            .inner
            .tcp_listeners
            .iter()
            .map(|a| (Transport::Tcp, *a));
        let tls = self
            .inner
            .tls_listeners
            .iter()
            .map(|a| (Transport::Tls, *a));
        udp.chain(tcp).chain(tls).collect()
    }

    /// Our SIP address as `peer` will see it when we send first (calls we place): the listener
    /// of that transport and family, with its wildcard IP resolved as for received messages.
    /// None when no listener fits.
    pub fn local_for(&self, peer: Peer) -> Option<SocketAddr> {
        let listener = match peer.transport {
            Transport::Udp => self
                .inner
                .udp
                .iter()
                .map(|(_, a)| *a)
                .find(|a| a.is_ipv4() == peer.addr.is_ipv4()),
            Transport::Tcp => self
                .inner
                .tcp_listeners
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == peer.addr.is_ipv4()),
            Transport::Tls => self
                .inner
                .tls_listeners
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == peer.addr.is_ipv4()),
        }?;
        Some(LocalAddressCache::default().ours(listener, peer.addr.ip(), self.inner.advertised))
    }

    /// Sends what the control plane left, without waiting, and empties `transmits`. UDP: best
    /// effort (a full socket buffer drops, SIP retransmits); the datagrams for one listener go
    /// out together ([`udp_batch::send_each`]: a `sendmmsg` for up to 32), each peer's in
    /// order. TCP: on the peer's connection, opening one if there is none.
    pub fn send_all(&self, transmits: &mut Vec<(Peer, Vec<u8>)>) {
        for (to, bytes) in transmits.iter_mut() {
            if to.transport != Transport::Udp {
                self.send_stream(*to, std::mem::take(bytes));
            }
        }
        for family_v4 in [true, false] {
            let mut datagrams = transmits
                .iter()
                .filter(|(to, _)| to.transport == Transport::Udp && to.addr.is_ipv4() == family_v4)
                .map(|(to, bytes)| (to.addr, &bytes[..]))
                .peekable();
            if datagrams.peek().is_none() {
                continue;
            }
            let Some((socket, _)) = self
                .inner
                .udp
                .iter()
                .find(|(_, local)| local.is_ipv4() == family_v4)
            else {
                tracing::warn!(
                    family = if family_v4 { "ipv4" } else { "ipv6" },
                    "no UDP listener for the peer's address family"
                );
                continue;
            };
            udp_batch::send_each(
                socket.get_ref(),
                datagrams,
                |to, error| tracing::debug!(%to, %error, "UDP send failed"),
            );
        }
        transmits.clear();
    }

    /// A message on a TCP or TLS connection (a UDP peer gets nothing here: UDP goes through
    /// [`SipTransport::send_all`]'s batches).
    fn send_stream(&self, to: Peer, bytes: Vec<u8>) {
        match to.transport {
            Transport::Udp => {
                tracing::error!(peer = %to.addr, "a UDP message on the stream path; dropped")
            }
            Transport::Tcp => self.send_tcp(to.addr, bytes),
            Transport::Tls => self.send_tls(to.addr, bytes),
        }
    }

    /// Closes the stream connection a [`Received::StreamEnd`] came from: what is queued for it
    /// is written first. A later connection of the same peer address stays.
    pub fn close_stream(&self, peer: Peer, connection: u64) {
        // The writer task writes what its queue holds, then ends with the last sender.
        forget_stream(&self.inner, peer, connection);
    }

    /// TLS: only on a connection the peer opened (we place no calls over TLS).
    fn send_tls(&self, to: SocketAddr, bytes: Vec<u8>) {
        let existing = self
            .inner
            .tcp_connections
            .lock()
            .expect("tcp connection map lock is never poisoned: no panics while held")
            .get(&(Transport::Tls, to))
            .cloned();
        match existing {
            Some(writer) => {
                if writer.queue.try_send(bytes).is_err() {
                    tracing::debug!("TLS writer queue full or closed; message dropped");
                }
            }
            None => {
                tracing::info!(peer = %to, "no TLS connection to the peer (it closed it); message dropped")
            }
        }
    }

    fn send_tcp(&self, to: SocketAddr, bytes: Vec<u8>) {
        let existing = self
            .inner
            .tcp_connections
            .lock()
            .expect("tcp connection map lock is never poisoned: no panics while held")
            .get(&(Transport::Tcp, to))
            .cloned();
        if let Some(writer) = existing {
            if writer.queue.try_send(bytes).is_err() {
                tracing::debug!("TCP writer queue full or closed; message dropped");
            }
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(stream) => {
                    let local = stream
                        .local_addr()
                        .unwrap_or_else(|_| SocketAddr::new(to.ip(), 0));
                    let writer = serve_stream(inner, stream, to, local, Transport::Tcp);
                    let _ = writer.send(bytes).await;
                }
                Err(e) => tracing::info!(error = %e, "TCP connect for SIP failed"),
            }
        });
    }
}

/// The receive and send buffer a SIP UDP socket asks for.
const UDP_SOCKET_BUFFER: usize = 2 * 1024 * 1024;

fn bind_udp(addr: SocketAddr) -> io::Result<SipUdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    // A burst (a trunk failing over, every phone re-registering) must wait in the kernel, not
    // be dropped there: the default (~200 KB, a few hundred INVITEs) overflowed at 9,000
    // requests/s in scripts/bench-overload, losing ACKs and BYEs as well as new INVITEs. The
    // overload intake, not the buffer, decides what is refused; the kernel caps the size at
    // net.core.rmem_max / wmem_max.
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(UDP_SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(UDP_SOCKET_BUFFER)),
    ] {
        if let Err(error) = result {
            tracing::debug!(%error, what, "SIP UDP socket buffer left at the default");
        }
    }
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    // SAFETY: the `AsyncFd` owns the socket, whose descriptor stays open and the same until
    // the `AsyncFd` drops it.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(io::Error::from)
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Reads a UDP listener's datagrams in batches: one `recvmmsg` takes what has queued since
/// the last (at thousands of call setups a second, several messages a call arrive while the
/// last batch is handed on), and a batch short of full means the socket was empty, so no
/// further read is spent to hear "empty" — the reactor's edge-triggered epoll reports the next
/// datagram.
async fn udp_receive(inner: Arc<Inner>, socket: Arc<SipUdpSocket>, local: SocketAddr) {
    let mut batch = SipBatch::new();
    let mut locals = LocalAddressCache::default();
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return; // the runtime is shutting down
        };
        let count = match ready.try_io(|s| batch.receive(s.get_ref(), SipBatch::CAPACITY)) {
            Ok(Ok(count)) => count,
            Ok(Err(e)) => {
                // ICMP port unreachable from an earlier send shows up here on Linux; not fatal.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
            Err(_empty) => continue, // readiness cleared: wait for the next datagram
        };
        if count < SipBatch::CAPACITY {
            ready.clear_ready();
        }
        drop(ready);
        for i in 0..count {
            let (buffer, len, source, _) = batch.datagram(i);
            let Some(source) = source else {
                continue; // not IPv4 or IPv6: cannot happen on our listeners
            };
            let data = &buffer[..len];
            if data.iter().all(|b| b.is_ascii_whitespace()) {
                continue; // keep-alive
            }
            let Some(received) = Received::from_bytes(data) else {
                tracing::debug!(len, %source, "unanswerable SIP datagram dropped");
                continue;
            };
            let our = locals.ours(local, source.ip(), inner.advertised);
            let inbound = Inbound {
                received,
                source: Peer {
                    transport: Transport::Udp,
                    addr: source,
                },
                local: our,
                arrived: std::time::Instant::now(),
            };
            match inner.intake.offer(inbound) {
                Intake::Queued => {}
                Intake::Refused(answer) => {
                    if let Err(error) = socket.get_ref().send_to(&answer, source) {
                        tracing::debug!(%error, "503 not sent");
                    }
                }
                Intake::Dropped => {
                    tracing::debug!("control plane queue full; SIP datagram dropped")
                }
            }
        }
    }
}

async fn tcp_accept(inner: Arc<Inner>, listener: TcpListener, local: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                serve_stream(inner.clone(), stream, peer, local, Transport::Tcp);
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tls_accept(
    inner: Arc<Inner>,
    listener: TcpListener,
    local: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (inner, acceptor) = (inner.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => {
                            serve_stream(inner, tls, peer, local, Transport::Tls);
                        }
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::info!(peer = %peer, "TLS handshake timed out"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Registers a stream connection (TCP or TLS) and starts its reader and writer; returns its
/// writer queue.
fn serve_stream<S>(
    inner: Arc<Inner>,
    stream: S,
    peer: SocketAddr,
    listener_local: SocketAddr,
    transport: Transport,
) -> mpsc::Sender<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (writer_tx, mut writer_rx) = mpsc::channel::<Vec<u8>>(256);
    let connection = inner
        .next_connection
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    inner
        .tcp_connections
        .lock()
        .expect("tcp connection map lock is never poisoned: no panics while held")
        .insert(
            (transport, peer),
            StreamWriter {
                connection,
                queue: writer_tx.clone(),
            },
        );
    let (read_half, mut write_half) = tokio::io::split(stream);
    // Writes until the last sender is gone (`close_stream` drops the map's), everything queued
    // before that included, then closes the sending side.
    tokio::spawn(async move {
        while let Some(bytes) = writer_rx.recv().await {
            if write_half.write_all(&bytes).await.is_err() || write_half.flush().await.is_err() {
                return;
            }
        }
        let _ = write_half.shutdown().await;
    });
    let source = Peer {
        transport,
        addr: peer,
    };
    tokio::spawn(read_stream(
        inner,
        read_half,
        source,
        listener_local,
        connection,
    ));
    writer_tx
}

/// Reads one stream connection: frames its messages (RFC 3261 §18.3) and hands them on, until
/// the peer ends the stream, sends what cannot be framed, lets a partial message stall, or
/// overflows the buffer; then hands on [`Received::StreamEnd`].
async fn read_stream<R>(
    inner: Arc<Inner>,
    mut read_half: R,
    source: Peer,
    listener_local: SocketAddr,
    connection: u64,
) where
    R: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    let mut locals = LocalAddressCache::default();
    let mut local = || locals.ours(listener_local, source.addr.ip(), inner.advertised);
    'read: loop {
        let read = if buf.is_empty() {
            read_half.read(&mut chunk).await
        } else {
            match tokio::time::timeout(inner.partial_message_timeout, read_half.read(&mut chunk))
                .await
            {
                Ok(read) => read,
                Err(_) => {
                    tracing::info!(peer = %source.addr, "closing stream connection: a partial message stalled");
                    break;
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame(&buf) {
                Frame::Incomplete => break,
                Frame::KeepAlive(len) => {
                    buf.drain(..len);
                }
                Frame::Complete(len) => {
                    let received = Received::from_bytes(&buf[..len]);
                    buf.drain(..len);
                    if let Some(received) = received {
                        if !deliver(&inner, received, source, local()).await {
                            return forget_stream(&inner, source, connection);
                        }
                    }
                }
                Frame::Invalid(e) => {
                    tracing::info!(peer = %source.addr, error = %e, "closing stream connection with unframeable SIP");
                    // A request whose framing is broken (no, a negative or conflicting
                    // Content-Length: RFC 4475 ncl, mcl01) is still answered before the close.
                    if let Some(unparsed) = Unparsed::salvage(&buf, e) {
                        if !deliver(&inner, Received::Unparsed(unparsed), source, local()).await {
                            return forget_stream(&inner, source, connection);
                        }
                    }
                    break 'read;
                }
            }
        }
        if buf.len() > MAX_STREAM_BUFFER {
            tracing::info!(peer = %source.addr, "closing stream connection: message too large");
            break;
        }
    }
    if !deliver(&inner, Received::StreamEnd { connection }, source, local()).await {
        forget_stream(&inner, source, connection);
    }
}

/// Queues one inbound for the control plane (waiting for room: the stream's back-pressure),
/// or sends the intake's 503 back on the stream; false once the control plane is gone.
async fn deliver(inner: &Arc<Inner>, received: Received, source: Peer, local: SocketAddr) -> bool {
    let inbound = Inbound {
        received,
        source,
        local,
        arrived: std::time::Instant::now(),
    };
    match inner.intake.deliver(inbound).await {
        Ok(Intake::Refused(answer)) => {
            SipTransport {
                inner: inner.clone(),
            }
            .send_stream(source, answer);
            true
        }
        Ok(_) => true,
        Err(()) => false,
    }
}

/// Without a control plane to pass [`Received::StreamEnd`] to: drops the connection at once.
fn forget_stream(inner: &Inner, source: Peer, connection: u64) {
    let mut connections = inner
        .tcp_connections
        .lock()
        .expect("tcp connection map lock is never poisoned: no panics while held");
    let key = (source.transport, source.addr);
    if connections
        .get(&key)
        .is_some_and(|writer| writer.connection == connection)
    {
        connections.remove(&key);
    }
}

/// Our IP as a given peer sees it: the listener's own address if specific, the configured
/// advertised address, or the source address the kernel picks to reach the peer.
#[derive(Default)]
struct LocalAddressCache {
    by_peer: HashMap<IpAddr, IpAddr>,
}

impl LocalAddressCache {
    fn ours(
        &mut self,
        listener: SocketAddr,
        peer: IpAddr,
        advertised: Option<IpAddr>,
    ) -> SocketAddr {
        if !listener.ip().is_unspecified() {
            return listener;
        }
        if let Some(ip) = advertised {
            return SocketAddr::new(ip, listener.port());
        }
        if self.by_peer.len() > 4096 {
            self.by_peer.clear();
        }
        let ip = *self
            .by_peer
            .entry(peer)
            .or_insert_with(|| route_source(peer).unwrap_or(listener.ip()));
        SocketAddr::new(ip, listener.port())
    }
}

/// The source address the kernel would use towards `peer` (a connected UDP socket sends
/// nothing; it only resolves the route).
pub fn route_source(peer: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(SocketAddr::new(peer, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::overload::IntakeQueues;
    use super::*;

    const PEER: &str = "192.0.2.10:5070";
    const LISTENER: &str = "192.0.2.1:5060";

    const OPTIONS: &str = "OPTIONS sip:user@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bK-stream-1\r\n\
        From: <sip:caller@example.net>;tag=1\r\nTo: <sip:user@example.com>\r\n\
        Call-ID: stream-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    /// A transport without sockets, its stream connections served over in-memory pipes.
    fn transport(partial_message_timeout: Duration) -> (SipTransport, IntakeQueues) {
        let (intake, queue) = super::super::overload::intake(
            super::super::overload::OverloadSettings::default(),
            "callbridge",
        );
        let inner = Arc::new(Inner {
            udp: Vec::new(),
            tcp_listeners: Vec::new(),
            tls_listeners: Vec::new(),
            tcp_connections: Mutex::new(HashMap::new()),
            next_connection: std::sync::atomic::AtomicU64::new(1),
            intake,
            advertised: None,
            partial_message_timeout,
        });
        (SipTransport { inner }, queue)
    }

    /// A client connection: what it writes reaches `serve_stream`.
    fn connect(transport: &SipTransport) -> tokio::io::DuplexStream {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let peer = PEER.parse().expect("test address");
        let listener = LISTENER.parse().expect("test address");
        serve_stream(
            transport.inner.clone(),
            server_side,
            peer,
            listener,
            Transport::Tcp,
        );
        client
    }

    /// The next inbound the control plane would read (accepted work first).
    async fn next(queue: &mut IntakeQueues) -> Inbound {
        let either = async {
            tokio::select! {
                biased;
                inbound = queue.dialog.recv() => inbound,
                inbound = queue.new_work.recv() => inbound,
            }
        };
        tokio::time::timeout(Duration::from_secs(5), either)
            .await
            .expect("the reader hands something on")
            .expect("the reader is alive")
    }

    /// The issue-20 case: a request and junk in one write. The request goes to the control
    /// plane, then the end of the stream; the answer the control plane queues before it
    /// closes the connection is written on that connection, then the connection closes.
    #[tokio::test]
    async fn a_request_followed_by_junk_is_answered_on_its_connection_before_it_closes() {
        let (transport, mut queue) = transport(PARTIAL_MESSAGE_TIMEOUT);
        let mut client = connect(&transport);
        client
            .write_all(format!("{OPTIONS}\u{16}\u{3}\u{1} no SIP here\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let request = next(&mut queue).await;
        assert!(matches!(
            request.received,
            Received::Message(SipMessage::Request(_))
        ));
        let end = next(&mut queue).await;
        let Received::StreamEnd { connection } = end.received else {
            panic!("expected the end of the stream, got {:?}", end.received);
        };
        let answer = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        transport.send_all(&mut vec![(request.source, answer.clone())]);
        transport.close_stream(end.source, connection);
        let mut read = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut read))
            .await
            .expect("the connection closes")
            .expect("read");
        assert_eq!(read, answer);
        assert!(transport
            .inner
            .tcp_connections
            .lock()
            .expect("not poisoned")
            .is_empty());
    }

    /// RFC 4475 ncl and mcl01 over a stream: the request is answered (its head is whole) and
    /// the connection then ends; a response whose framing is broken is not handed on.
    #[tokio::test]
    async fn a_request_with_broken_framing_is_handed_on_unparsed_then_the_stream_ends() {
        let (transport, mut queue) = transport(PARTIAL_MESSAGE_TIMEOUT);
        let mut client = connect(&transport);
        let ncl = OPTIONS.replace("Content-Length: 0", "Content-Length: -999");
        client.write_all(ncl.as_bytes()).await.expect("write");
        let unparsed = next(&mut queue).await;
        let Received::Unparsed(request) = unparsed.received else {
            panic!("expected the unparsed request, got {:?}", unparsed.received);
        };
        assert_eq!(request.status().0, 400);
        assert!(matches!(
            next(&mut queue).await.received,
            Received::StreamEnd { .. }
        ));

        let mut client = connect(&transport);
        client
            .write_all(b"SIP/2.0 200 OK\r\nContent-Length: five\r\n\r\n")
            .await
            .expect("write");
        assert!(matches!(
            next(&mut queue).await.received,
            Received::StreamEnd { .. }
        ));
    }

    /// RFC 4475 clerr over a stream: a body shorter than its Content-Length leaves the reader
    /// waiting, but not for ever.
    #[tokio::test]
    async fn a_partial_message_that_stalls_ends_the_stream() {
        let (transport, mut queue) = transport(Duration::from_millis(100));
        let mut client = connect(&transport);
        let clerr = OPTIONS.replace("Content-Length: 0", "Content-Length: 9999");
        client
            .write_all(format!("{clerr}only a few bytes").as_bytes())
            .await
            .expect("write");
        let started = std::time::Instant::now();
        assert!(matches!(
            next(&mut queue).await.received,
            Received::StreamEnd { .. }
        ));
        assert!(started.elapsed() >= Duration::from_millis(90));
    }

    /// A `StreamEnd` that comes after the peer reconnected from the same address closes only
    /// the connection it came from.
    #[tokio::test]
    async fn closing_an_old_connection_leaves_the_new_one_of_the_same_peer() {
        let (transport, mut queue) = transport(PARTIAL_MESSAGE_TIMEOUT);
        let old = connect(&transport);
        drop(old);
        let end = next(&mut queue).await;
        let Received::StreamEnd { connection } = end.received else {
            panic!("expected the end of the stream, got {:?}", end.received);
        };
        let _new = connect(&transport);
        transport.close_stream(end.source, connection);
        let connections = transport
            .inner
            .tcp_connections
            .lock()
            .expect("not poisoned");
        let left: Vec<u64> = connections.values().map(|w| w.connection).collect();
        assert_eq!(left.len(), 1);
        assert_ne!(left[0], connection);
    }

    /// A transport with one UDP listener on a free loopback port.
    async fn udp_transport() -> (SipTransport, IntakeQueues) {
        let (intake, queue) = super::super::overload::intake(
            super::super::overload::OverloadSettings::default(),
            "callbridge",
        );
        let listen = SipListen {
            transport: ListenTransport::Udp,
            addr: "127.0.0.1:0".parse().expect("address"),
        };
        let transport = SipTransport::start(&[listen], None, None, intake)
            .await
            .expect("binds on loopback");
        (transport, queue)
    }

    /// The epoll event masks registered for the open file `fd` in this process's epoll
    /// instances, read from `/proc/self/fdinfo`: a line `tfd: <fd> events: <hex mask> data:
    /// <hex> pos:0 ino:<hex inode> ...` per registration. The reactor's epoll is open under two
    /// descriptors (mio keeps a clone), so each registration is counted once.
    fn epoll_masks_of(fd: i32) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .expect("the socket's inode")
            .ino();
        let mut registrations = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
            let entry = entry.expect("fd entry");
            let is_epoll = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]");
            if !is_epoll {
                continue;
            }
            let info = format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy());
            let Ok(info) = std::fs::read_to_string(info) else {
                continue; // closed since it was listed
            };
            for line in info.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let field = |name: &str| {
                    let at = words.iter().position(|w| *w == name)?;
                    words.get(at + 1).copied()
                };
                let ours = words.first() == Some(&"tfd:")
                    && words.get(1) == Some(&fd.to_string().as_str())
                    && words.iter().any(|w| *w == format!("ino:{inode:x}"));
                if !ours {
                    continue;
                }
                let (Some(mask), Some(data)) = (field("events:"), field("data:")) else {
                    panic!("unexpected fdinfo line: {line}");
                };
                let mask = u32::from_str_radix(mask, 16).expect("hex mask");
                registrations.insert((data.to_string(), mask));
            }
        }
        registrations.into_iter().map(|(_, mask)| mask).collect()
    }

    /// A SIP UDP listener on loopback takes a datagram to the control plane and sends one
    /// back, and the reactor watches its socket for reading only: with write interest
    /// registered, every datagram the kernel frees after sending it woke the reactor's epoll
    /// (docs/PERFORMANCE.md, "The SIP socket watched for reading only, read in batches").
    #[tokio::test]
    async fn a_udp_listener_is_watched_for_reading_only_and_still_sends() {
        use std::os::fd::AsRawFd;
        let (transport, mut queue) = udp_transport().await;
        let (socket, local) = transport.inner.udp[0].clone();

        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("peer");
        let options = OPTIONS.replace("SIP/2.0/TCP", "SIP/2.0/UDP");
        peer.send_to(options.as_bytes(), local).await.expect("sent");
        let inbound = next(&mut queue).await;
        assert_eq!(inbound.source.transport, Transport::Udp);
        assert_eq!(
            inbound.source.addr,
            peer.local_addr().expect("peer address")
        );
        assert!(matches!(inbound.received, Received::Message(_)));

        transport.send_all(&mut vec![(
            inbound.source,
            b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
        )]);
        let mut buf = [0u8; 64];
        let (len, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("the answer arrives")
            .expect("received");
        assert_eq!(&buf[..len], b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(from, local);

        let masks = epoll_masks_of(socket.as_raw_fd());
        assert_eq!(masks.len(), 1, "one registration of the socket: {masks:x?}");
        assert_ne!(masks[0] & libc::EPOLLIN as u32, 0, "watched for reading");
        assert_eq!(masks[0] & libc::EPOLLOUT as u32, 0, "not for writing");
    }

    /// A burst of datagrams longer than a batch, the largest of them beyond anything a media
    /// batch holds, all reach the control plane whole and in order; and the datagram sent
    /// after the socket was found empty (a batch short of full clears the readiness without a
    /// further read) is heard too.
    #[tokio::test]
    async fn a_udp_listener_takes_a_burst_whole_and_hears_the_datagram_after_it() {
        let (transport, mut queue) = udp_transport().await;
        let local = transport.inner.udp[0].1;
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        let options = |n: usize, body: usize| {
            OPTIONS
                .replace("SIP/2.0/TCP", "SIP/2.0/UDP")
                .replace("stream-1\r\n", &format!("burst-{n}\r\n"))
                .replace(
                    "Content-Length: 0\r\n\r\n",
                    &format!("Content-Length: {body}\r\n\r\n{}", "x".repeat(body)),
                )
        };
        let burst = 2 * SipBatch::CAPACITY + 3;
        let large = 60_000; // a body no media batch (2 KiB a datagram) could take whole
        for n in 0..burst {
            let body = if n == 1 { large } else { 0 };
            peer.send_to(options(n, body).as_bytes(), local)
                .expect("sent");
        }
        for n in 0..burst {
            let inbound = next(&mut queue).await;
            let Received::Message(SipMessage::Request(request)) = inbound.received else {
                panic!(
                    "datagram {n}: expected a request, got {:?}",
                    inbound.received
                );
            };
            assert_eq!(
                request.headers.get("Call-ID"),
                Some(format!("burst-{n}").as_str())
            );
            assert_eq!(request.body.len(), if n == 1 { large } else { 0 });
        }
        // The reader has found the socket empty and waits on the reactor.
        tokio::time::sleep(Duration::from_millis(50)).await;
        peer.send_to(options(burst, 0).as_bytes(), local)
            .expect("sent");
        let inbound = next(&mut queue).await;
        let Received::Message(SipMessage::Request(request)) = inbound.received else {
            panic!("expected a request, got {:?}", inbound.received);
        };
        assert_eq!(
            request.headers.get("Call-ID"),
            Some(format!("burst-{burst}").as_str())
        );
    }
}
