//! The HTTP listeners' accept loop and their defences against hostile clients, for the API and
//! the agent gateway alike.
//!
//! Owns: accepting TCP (and, for the agent gateway, TLS) connections; the caps on open
//! connections per listener and per source address; the header-read timeout (which also
//! bounds a TLS handshake and the wait for the next request on a kept-alive connection); the
//! idle timeout; the request body limit; graceful shutdown (every connection is told to finish
//! its request in flight and close); the gap allowed inside a request body; the counters
//! `/metrics` shows.
//! Must not: know any route. Handlers see each request with its [`ConnectInfo`], as under
//! `axum::serve`, and the body limit is enforced before they run.
//!
//! A refused connection is closed at once, before a byte is read: a flood of half-open
//! connections costs file descriptors only up to the caps, never the RTP sockets' share.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// What a listener allows each client (`[http]`); the defaults protect a production host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A client must send a request's whole header within this (and finish a TLS handshake
    /// within it); a kept-alive connection that sends no next request within it is closed.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress and no byte either way for this long is
    /// closed (event streams send a keep-alive every 15 s; long polls are requests).
    pub idle_timeout: Duration,
    /// Open connections per listener; more are closed at accept.
    pub max_connections: usize,
    /// Open connections per source address; more are closed at accept.
    pub max_connections_per_source: usize,
    /// Largest request body, bytes: larger is answered 413 before a handler runs.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_source: 256,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// One listener's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Closed at accept: the listener's cap was reached.
    pub refused_listener_cap: AtomicU64,
    /// Closed at accept: the source address's cap was reached.
    pub refused_source_cap: AtomicU64,
    /// Closed for a header (or TLS handshake) not sent in time.
    pub header_timeouts: AtomicU64,
    /// Closed for idleness.
    pub idle_timeouts: AtomicU64,
    /// Closed to make room at the listener's cap: the oldest connection that had not sent a
    /// request yet.
    pub evicted: AtomicU64,
}

/// The listeners' counters in the Prometheus text format, labelled by listener.
pub fn render_metrics(listeners: &[(&'static str, Arc<ListenerStats>)], out: &mut String) {
    use std::fmt::Write;
    /// Name, type, help, value.
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ListenerStats) -> u64,
    );
    let families: [Family; 6] = [
        (
            "callbridge_http_connections",
            "gauge",
            "HTTP connections open.",
            |s| s.open.load(Ordering::Relaxed) as u64,
        ),
        (
            "callbridge_http_connections_refused_total",
            "counter",
            "HTTP connections closed at accept because the listener had max_connections open.",
            |s| s.refused_listener_cap.load(Ordering::Relaxed),
        ),
        (
            "callbridge_http_connections_refused_source_total",
            "counter",
            "HTTP connections closed at accept because their address had max_connections_per_source open.",
            |s| s.refused_source_cap.load(Ordering::Relaxed),
        ),
        (
            "callbridge_http_header_timeouts_total",
            "counter",
            "HTTP connections closed because a request header or TLS handshake did not arrive within header_read_timeout_ms.",
            |s| s.header_timeouts.load(Ordering::Relaxed),
        ),
        (
            "callbridge_http_idle_timeouts_total",
            "counter",
            "HTTP connections closed after idle_timeout_s without a request or traffic.",
            |s| s.idle_timeouts.load(Ordering::Relaxed),
        ),
        (
            "callbridge_http_evicted_total",
            "counter",
            "HTTP connections closed at the listener's cap to admit a new one: the oldest that had not sent a request yet.",
            |s| s.evicted.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (listener, stats) in listeners {
            let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {}", value(stats));
        }
    }
}

/// How a listener serves: its name in logs and metrics, TLS, the kernel send buffer.
pub struct Listening {
    pub name: &'static str,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// SO_SNDBUF of each connection, bytes; None: the kernel's.
    pub send_buffer: Option<usize>,
    pub limits: HttpLimits,
    pub stats: Arc<ListenerStats>,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets every connection finish
/// the request it is serving and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    listening: Listening,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Listening {
        name,
        tls,
        send_buffer,
        limits,
        stats,
    } = listening;
    let app = with_body_limit(app, limits.max_body_bytes);
    let gate = Arc::new(Gate::new(&limits, stats.clone()));
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, most likely: give the closing ones a moment.
                        tracing::warn!(listener = name, %error, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(admission) = gate.admit(peer.ip()) else {
                    tracing::debug!(listener = name, %peer, "HTTP connection over the caps: closed");
                    continue;
                };
                tune(&stream, send_buffer);
                let connection = Connection {
                    name,
                    peer,
                    app: app.clone(),
                    limits: limits.clone(),
                    stats: stats.clone(),
                    closing: closing.clone(),
                };
                connections.spawn(connection.run(stream, tls.clone(), admission));
            }
        }
    }
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// A 413 for a declared body over the limit (before anything is read), and axum's limit for
/// bodies that do not declare their length (chunked): its extractors stop at the limit.
fn with_body_limit(app: Router, limit: usize) -> Router {
    app.layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let declared = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            async move {
                match declared {
                    Some(length) if length > limit as u64 => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Json(serde_json::json!({
                            "Error": format!("request body of {length} bytes: the limit is {limit}")
                        })),
                    )
                        .into_response(),
                    _ => next.run(request).await,
                }
            }
        }))
}

fn tune(stream: &TcpStream, send_buffer: Option<usize>) {
    let _ = stream.set_nodelay(true);
    let Some(bytes) = send_buffer else { return };
    if let Err(error) = socket2::SockRef::from(stream).set_send_buffer_size(bytes) {
        tracing::debug!(%error, "HTTP connection: send buffer size refused");
    }
}

/// One accepted connection and what it is served with.
struct Connection {
    name: &'static str,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    stats: Arc<ListenerStats>,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        tls: Option<Arc<rustls::ServerConfig>>,
        admission: Admission,
    ) {
        let Some(config) = tls else {
            return self.serve(stream, admission).await;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake =
            tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream));
        let handshake = tokio::select! {
            done = handshake => done,
            _ = admission.unproven.evicted() => {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = self.name, peer = %self.peer, "TLS handshake evicted at the cap");
                return;
            }
        };
        match handshake {
            Ok(Ok(stream)) => self.serve(stream, admission).await,
            Ok(Err(error)) => {
                tracing::debug!(listener = self.name, peer = %self.peer, %error, "TLS handshake failed")
            }
            Err(_) => {
                self.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = self.name, peer = %self.peer, "TLS handshake timed out");
            }
        }
    }

    async fn serve<I>(mut self, io: I, admission: Admission)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let unproven = admission.unproven.clone();
        // The admission lives as long as the stream, an upgraded (WebSocket) one included.
        let io = Watched {
            inner: io,
            activity: activity.clone(),
            _admission: admission,
        };
        let (app, peer, busy) = (self.app.clone(), self.peer, activity.clone());
        let gap = self.limits.header_read_timeout;
        let proving = unproven.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            proving.prove();
            request.extensions_mut().insert(ConnectInfo(peer));
            let request = request.map(|body| Body::new(TimedBody::new(body, gap)));
            let serving = busy.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                drop(serving);
                response
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(connection);
        let idle = self.limits.idle_timeout;
        let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(100)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        if error.is_timeout() {
                            self.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(listener = self.name, %peer, %error, "HTTP connection ended");
                    }
                    return;
                }
                _ = self.closing.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = unproven.evicted() => {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = self.name, %peer, "HTTP connection without a request evicted at the cap");
                    return;
                }
                _ = check.tick() => {
                    if activity.idle_for() >= idle {
                        self.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(listener = self.name, %peer, "HTTP connection idle: closed");
                        return;
                    }
                }
            }
        }
    }
}

/// A request body that must keep arriving: a gap longer than `gap` between two of its parts
/// is an error (the handler's extractor answers it, the connection closes). A request being
/// served is never idle, so without this a client could hold a connection by sending its
/// body a byte at a time.
struct TimedBody {
    inner: Incoming,
    gap: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, gap: Duration) -> TimedBody {
        TimedBody {
            inner,
            gap,
            deadline: Box::pin(tokio::time::sleep(gap)),
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.gap;
                self.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body stopped arriving for {} ms",
                    self.gap.as_millis()
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts open connections per listener and per source address.
///
/// At the listener's cap a new connection is not refused while some connection has not sent a
/// request yet: the oldest such one is closed to make room. Holding connections open without
/// requests (slowloris) from many addresses would otherwise shut every client out until the
/// header timeout; a client that sends its request at once always gets in.
struct Gate {
    max: usize,
    per_source: usize,
    sources: Mutex<HashMap<IpAddr, usize>>,
    /// Admitted connections that had not sent a request when admitted, oldest first (some may
    /// have sent one since, or closed: skipped when met).
    unproven: Mutex<VecDeque<Arc<Unproven>>>,
    stats: Arc<ListenerStats>,
}

/// A connection's standing before its first request: it can be evicted at the cap.
#[derive(Default)]
struct Unproven {
    /// [`UNPROVEN`], [`PROVEN`] (a request has begun, or the connection is gone: never
    /// evicted) or [`EVICTED`].
    state: AtomicU8,
    evict: tokio::sync::Notify,
}

const UNPROVEN: u8 = 0;
const PROVEN: u8 = 1;
const EVICTED: u8 = 2;

impl Unproven {
    fn prove(&self) {
        let _ = self
            .state
            .compare_exchange(UNPROVEN, PROVEN, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn is_unproven(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UNPROVEN
    }

    /// Resolves when the gate evicts this connection.
    async fn evicted(&self) {
        if self.state.load(Ordering::Relaxed) == PROVEN {
            return std::future::pending().await;
        }
        self.evict.notified().await
    }

    /// Evicts it unless it has proven itself; true when it was evicted.
    fn evict(&self) -> bool {
        if self
            .state
            .compare_exchange(UNPROVEN, EVICTED, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // notify_one keeps a permit when nobody waits yet, so it is not lost.
        self.evict.notify_one();
        true
    }
}

impl Gate {
    fn new(limits: &HttpLimits, stats: Arc<ListenerStats>) -> Gate {
        Gate {
            max: limits.max_connections,
            per_source: limits.max_connections_per_source,
            sources: Mutex::new(HashMap::new()),
            unproven: Mutex::new(VecDeque::new()),
            stats,
        }
    }

    /// Evicts the oldest connection that has not sent a request; false when there is none.
    fn evict_oldest_unproven(&self) -> bool {
        let mut unproven = self.unproven.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(oldest) = unproven.pop_front() {
            // A strong count of 1: the connection is gone, only the queue holds it.
            if Arc::strong_count(&oldest) > 1 && oldest.evict() {
                return true;
            }
        }
        false
    }

    /// An admission for one more connection from `source`, or None over a cap.
    fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Admission> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        // The per-source cap first: an address at its cap evicts nobody.
        if sources.get(&source).is_some_and(|&n| n >= self.per_source) {
            self.stats
                .refused_source_cap
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // The evicted connection gives its place back when its task ends, a moment later.
        if self.stats.open.load(Ordering::Relaxed) >= self.max && !self.evict_oldest_unproven() {
            self.stats
                .refused_listener_cap
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let count = sources.entry(source).or_insert(0);
        if *count >= self.per_source {
            self.stats
                .refused_source_cap
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *count += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let unproven = Arc::new(Unproven::default());
        let mut queue = self.unproven.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push_back(unproven.clone());
        // Connections that proved themselves or closed stay queued until met; keep the queue
        // near the number of connections.
        if queue.len() > 2 * self.max.max(16) {
            queue.retain(|u| Arc::strong_count(u) > 1 && u.is_unproven());
        }
        Some(Admission {
            gate: self.clone(),
            source,
            unproven,
        })
    }
}

/// One open connection's place under the caps, given back when dropped.
struct Admission {
    gate: Arc<Gate>,
    source: IpAddr,
    unproven: Arc<Unproven>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut sources = self
            .gate
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = sources.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                sources.remove(&self.source);
            }
        }
        self.gate.stats.open.fetch_sub(1, Ordering::Relaxed);
        self.unproven.prove();
    }
}

/// When a connection last moved a byte, and how many of its requests are being served.
struct Activity {
    since: Instant,
    last_ms: AtomicU64,
    serving: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            serving: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has been idle: zero while a request is being served.
    fn idle_for(&self) -> Duration {
        if self.serving.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }

    fn begin(self: &Arc<Self>) -> Serving {
        self.serving.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }
}

/// A request being served (its handler has not answered yet).
struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.touch();
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream, noting each byte moved for the idle timeout and holding the
/// connection's admission.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
    _admission: Admission,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_source: usize) -> Arc<Gate> {
        let limits = HttpLimits {
            max_connections: max,
            max_connections_per_source: per_source,
            ..HttpLimits::default()
        };
        Arc::new(Gate::new(&limits, Arc::new(ListenerStats::default())))
    }

    #[test]
    fn the_caps_count_per_source_and_per_listener_and_are_given_back() {
        let gate = gate(3, 2);
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = gate.admit(a).expect("first from a");
        let _second = gate.admit(a).expect("second from a");
        assert!(gate.admit(a).is_none(), "a's cap");
        let third = gate.admit(b).expect("b has its own count");
        // All three have sent a request: none can be evicted.
        for admitted in [&first, &_second, &third] {
            admitted.unproven.prove();
        }
        assert!(gate.admit(b).is_none(), "the listener's cap");
        assert_eq!(gate.stats.refused_source_cap.load(Ordering::Relaxed), 1);
        assert_eq!(gate.stats.refused_listener_cap.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(gate.stats.open.load(Ordering::Relaxed), 2);
        let _again = gate.admit(a).expect("a's place given back");
        assert_eq!(gate.sources.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_connection_without_a_request_makes_room() {
        let gate = gate(3, 3);
        let (a, b, c) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        let oldest = gate.admit(a).expect("a");
        let served = gate.admit(b).expect("b");
        let younger = gate.admit(a).expect("a again");
        served.unproven.prove();
        let newcomer = gate
            .admit(c)
            .expect("admitted by evicting the oldest unproven");
        assert_eq!(gate.stats.refused_listener_cap.load(Ordering::Relaxed), 0);
        tokio::time::timeout(Duration::from_secs(1), oldest.unproven.evicted())
            .await
            .expect("the oldest is told to close");
        // The evicted one closes; the next newcomer evicts the next unproven, never `served`.
        drop(oldest);
        let _next = gate.admit(c).expect("evicts `younger`");
        tokio::time::timeout(Duration::from_secs(1), younger.unproven.evicted())
            .await
            .expect("the younger one is told to close");
        drop(younger);
        newcomer.unproven.prove();
        // Everyone left has sent a request: refused.
        _next.unproven.prove();
        assert!(gate.admit(c).is_none());
        assert_eq!(gate.stats.refused_listener_cap.load(Ordering::Relaxed), 1);
        let pending = tokio::time::timeout(Duration::from_millis(50), served.unproven.evicted());
        assert!(
            pending.await.is_err(),
            "a connection that sent a request is never evicted"
        );
    }

    #[test]
    fn a_source_without_connections_is_forgotten() {
        let gate = gate(10, 10);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        drop(gate.admit(a));
        assert!(gate.sources.lock().unwrap().is_empty());
        assert_eq!(gate.stats.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_connection_serving_a_request_is_never_idle() {
        let activity = Arc::new(Activity::new());
        std::thread::sleep(Duration::from_millis(30));
        assert!(activity.idle_for() >= Duration::from_millis(30));
        let serving = activity.begin();
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(serving);
        assert!(
            activity.idle_for() < Duration::from_millis(30),
            "answered just now"
        );
    }
}
