//! SIP over UDP, TCP and TLS on tokio: sockets in, parsed messages out, bytes back.
//!
//! Owns: the listening sockets, TCP connections (accepted and opened), TLS connections
//! (accepted; rustls does the handshake), stream framing (RFC 3261 §18.3) and the choice of
//! our address as a peer sees it.
//! Must not: keep SIP state. Every message goes to the control plane through the overload
//! intake ([`super::overload`]), which may answer a new request 503 itself; nothing queues
//! without bound.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::message::{frame, parse, Frame, SipMessage};
use super::overload::{Intake, SipIntake};
use super::transaction::{Peer, Transport};

/// Largest message we accept on a stream before giving up on the connection.
const MAX_STREAM_BUFFER: usize = 256 * 1024;

/// A TLS client that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A listener from `[sip] listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub transport: ListenTransport,
    pub addr: SocketAddr,
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
    pub message: SipMessage,
    pub source: Peer,
    /// Our address (IP and listener port) as `source` reaches us.
    pub local: SocketAddr,
    /// When it was read off the socket: its wait for the control plane is the overload signal.
    pub received: std::time::Instant,
}

/// The writer queue of one stream connection.
type StreamWriter = mpsc::Sender<Vec<u8>>;

/// Handle for sending; cheap to clone.
#[derive(Clone)]
pub struct SipTransport {
    inner: Arc<Inner>,
}

struct Inner {
    udp: Vec<(Arc<UdpSocket>, SocketAddr)>,
    tcp_listeners: Vec<SocketAddr>,
    tls_listeners: Vec<SocketAddr>,
    /// Open TCP and TLS connections by transport and peer address: the writer queue of each.
    tcp_connections: Mutex<HashMap<(Transport, SocketAddr), StreamWriter>>,
    intake: SipIntake,
    advertised: Option<IpAddr>,
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
            match l.transport {
                ListenTransport::Udp => {
                    let socket = bind_udp(l.addr)?;
                    let local = socket.local_addr()?;
                    udp.push((Arc::new(socket), local));
                }
                ListenTransport::Tcp => {
                    let listener = bind_tcp(l.addr)?;
                    let local = listener.local_addr()?;
                    tcp.push((listener, local));
                }
                ListenTransport::Tls => {
                    let listener = bind_tcp(l.addr)?;
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
            intake,
            advertised,
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

    /// Sends without waiting. UDP: best effort (a full socket buffer drops, SIP retransmits).
    /// TCP: on the peer's connection, opening one if there is none.
    pub fn send(&self, to: Peer, bytes: Vec<u8>) {
        match to.transport {
            Transport::Udp => self.send_udp(to.addr, &bytes),
            Transport::Tcp => self.send_tcp(to.addr, bytes),
            Transport::Tls => self.send_tls(to.addr, bytes),
        }
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
                if writer.try_send(bytes).is_err() {
                    tracing::debug!("TLS writer queue full or closed; message dropped");
                }
            }
            None => {
                tracing::info!(peer = %to, "no TLS connection to the peer (it closed it); message dropped")
            }
        }
    }

    fn send_udp(&self, to: SocketAddr, bytes: &[u8]) {
        let Some((socket, _)) = self
            .inner
            .udp
            .iter()
            .find(|(_, local)| local.is_ipv4() == to.is_ipv4())
        else {
            tracing::warn!(
                family = if to.is_ipv4() { "ipv4" } else { "ipv6" },
                "no UDP listener for the peer's address family"
            );
            return;
        };
        if let Err(e) = socket.try_send_to(bytes, to) {
            tracing::debug!(error = %e, "UDP send failed");
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
            if writer.try_send(bytes).is_err() {
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

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
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
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
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

async fn udp_receive(inner: Arc<Inner>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; 65535];
    let mut locals = LocalAddressCache::default();
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from an earlier send shows up here on Linux; not fatal.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        let data = &buf[..len];
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keep-alive
        }
        let message = match parse(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, len, "unparseable SIP datagram dropped");
                continue;
            }
        };
        let our = locals.ours(local, source.ip(), inner.advertised);
        let inbound = Inbound {
            message,
            source: Peer {
                transport: Transport::Udp,
                addr: source,
            },
            local: our,
            received: std::time::Instant::now(),
        };
        let to = inbound.source.addr;
        match inner.intake.offer(inbound) {
            Intake::Queued => {}
            Intake::Refused(answer) => {
                if let Err(error) = socket.send_to(&answer, to).await {
                    tracing::debug!(%error, "503 not sent");
                }
            }
            Intake::Dropped => tracing::debug!("control plane queue full; SIP datagram dropped"),
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
    inner
        .tcp_connections
        .lock()
        .expect("tcp connection map lock is never poisoned: no panics while held")
        .insert((transport, peer), writer_tx.clone());
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    tokio::spawn(async move {
        while let Some(bytes) = writer_rx.recv().await {
            if write_half.write_all(&bytes).await.is_err() || write_half.flush().await.is_err() {
                break;
            }
        }
    });
    let our_port = listener_local.port();
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let mut chunk = vec![0u8; 16384];
        let mut locals = LocalAddressCache::default();
        'read: loop {
            let n = match read_half.read(&mut chunk).await {
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
                        let parsed = parse(&buf[..len]);
                        buf.drain(..len);
                        let message = match parsed {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::debug!(error = %e, "unparseable SIP message on TCP");
                                continue;
                            }
                        };
                        let bound = SocketAddr::new(listener_local.ip(), our_port);
                        let inbound = Inbound {
                            message,
                            source: Peer {
                                transport,
                                addr: peer,
                            },
                            local: locals.ours(bound, peer.ip(), inner.advertised),
                            received: std::time::Instant::now(),
                        };
                        let source = inbound.source;
                        match inner.intake.deliver(inbound).await {
                            Ok(Intake::Refused(answer)) => {
                                SipTransport {
                                    inner: inner.clone(),
                                }
                                .send(source, answer);
                            }
                            Ok(_) => {}
                            Err(()) => break 'read,
                        }
                    }
                    Frame::Invalid(e) => {
                        tracing::info!(error = %e, "closing TCP connection with unframeable SIP");
                        break 'read;
                    }
                }
            }
            if buf.len() > MAX_STREAM_BUFFER {
                tracing::info!("closing TCP connection: message too large");
                break;
            }
        }
        inner
            .tcp_connections
            .lock()
            .expect("tcp connection map lock is never poisoned: no panics while held")
            .remove(&(transport, peer));
    });
    writer_tx
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
