//! Time bounds on every connection a daemon serves (manager API, manager raft listener, agent
//! API; plain or TLS, HTTP/1 or HTTP/2), so that clients that send nothing, or drip, cannot hold
//! sockets and memory forever.
//!
//! [`GuardAcceptor`] wraps each accepted connection (under TLS, so the handshake is covered too)
//! and its service:
//! - while no request is in progress on the connection (a new connection, the TLS handshake,
//!   HTTP/2's preface, an idle keep-alive connection, a request head still arriving), the
//!   connection is closed once [`ConnLimits::head_timeout`] has passed since it was opened or
//!   since its last answer ended. A request in progress is one whose head has arrived and whose
//!   answer has not ended: long-polls, `--follow` streams and downloads are answers and are
//!   never cut;
//! - a request body must arrive at [`ConnLimits::body_min_rate`] bytes per second or faster,
//!   averaged over [`ConnLimits::body_rate_window`] of waiting for it (time the handler spends
//!   not reading does not count against the client). A slower body ends with `408` and
//!   `Connection: close`.
//!
//! A [`ConnCap`] bounds how many connections are open at once: past it a new connection is
//! closed as soon as it is accepted, so a crowd of clients can never take the file descriptors
//! the daemon needs for its own files (the manager's SQLite files: out of descriptors, its state
//! machine could not apply and raft would stop).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum_server::accept::Accept;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bounds, from each daemon's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// How long a connection may go without a request in progress before it is closed (the
    /// time a client has to send a complete request head, on a new or a kept-alive connection).
    pub head_timeout: Duration,
    /// The slowest accepted request body, in bytes per second (0: no minimum).
    pub body_min_rate: u64,
    /// The waiting time over which the body rate is averaged.
    pub body_rate_window: Duration,
}

/// At most this many connections open at once (shared by the clones of one acceptor).
#[derive(Debug)]
pub struct ConnCap {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
}

impl ConnCap {
    pub fn new(max: usize) -> Arc<ConnCap> {
        Arc::new(ConnCap {
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The most connections held open at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the cap was reached, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts one more open connection, or refuses it when `max` are open.
    fn admit(&self) -> bool {
        if self.open.fetch_add(1, Ordering::AcqRel) < self.max {
            return true;
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        let refused = self.refused.fetch_add(1, Ordering::Relaxed);
        if refused.is_multiple_of(1000) {
            tracing::warn!(
                max = self.max,
                refused = refused + 1,
                "connection limit reached: closing new connections until some end"
            );
        }
        false
    }
}

/// An [`Accept`] that applies [`ConnLimits`] to the connection and its service, and a
/// [`ConnCap`] when it has one. Use it as the acceptor of a plain server, or as the inner
/// acceptor of `RustlsAcceptor`.
#[derive(Debug, Clone)]
pub struct GuardAcceptor {
    limits: ConnLimits,
    cap: Option<Arc<ConnCap>>,
}

impl GuardAcceptor {
    pub fn new(limits: ConnLimits) -> GuardAcceptor {
        GuardAcceptor { limits, cap: None }
    }

    /// Closes a new connection at once while `cap` connections are open.
    pub fn capped(mut self, cap: Arc<ConnCap>) -> GuardAcceptor {
        self.cap = Some(cap);
        self
    }
}

impl<S> Accept<TcpStream, S> for GuardAcceptor {
    type Stream = GuardedIo<TcpStream>;
    type Service = GuardedService<S>;
    type Future = std::future::Ready<io::Result<(GuardedIo<TcpStream>, GuardedService<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        if let Some(cap) = &self.cap
            && !cap.admit()
        {
            // Dropping `stream` closes it: its descriptor is free again at once.
            return std::future::ready(Err(io::Error::other("connection limit reached")));
        }
        // Small writes go out at once. With Nagle's algorithm on, the second of two small
        // writes (a result event after the `accepted` one of an invocation stream, a frame on a
        // watch) waited for the peer's delayed acknowledgement: about 40 ms on every fan-out.
        if let Err(e) = stream.set_nodelay(true) {
            return std::future::ready(Err(e));
        }
        let conn = Arc::new(Conn {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            reader: Mutex::new(None),
            cap: self.cap.clone(),
            upgraded: AtomicBool::new(false),
        });
        std::future::ready(Ok((
            GuardedIo {
                inner: stream,
                conn: conn.clone(),
                limit: self.limits.head_timeout,
                sleep: Box::pin(tokio::time::sleep(self.limits.head_timeout)),
                armed: None,
            },
            GuardedService {
                inner: service,
                conn,
                limits: self.limits,
            },
        )))
    }
}

/// What a connection's stream and service share.
struct Conn {
    opened: Instant,
    /// Requests whose head arrived and whose answer has not ended.
    in_flight: AtomicUsize,
    /// When the connection last became idle, in ms after `opened`.
    idle_since_ms: AtomicU64,
    /// The task reading the connection, woken when the last request in progress ends so that it
    /// starts the idle clock (HTTP/2 ends answers on other tasks).
    reader: Mutex<Option<Waker>>,
    /// The cap this connection counts against, released when the connection ends.
    cap: Option<Arc<ConnCap>>,
    /// The connection switched protocols (`101`, the agents' watch): it is no longer HTTP, and
    /// the handler that holds it bounds its silence.
    upgraded: AtomicBool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(cap) = &self.cap {
            cap.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Conn {
    fn idle_deadline(&self, limit: Duration) -> Instant {
        self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst)) + limit
    }

    fn begin(self: &Arc<Self>) -> Flight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Flight(self.clone())
    }
}

/// One request in progress; dropped when its answer has ended (or was abandoned).
struct Flight(Arc<Conn>);

impl Drop for Flight {
    fn drop(&mut self) {
        let conn = &self.0;
        let ms = u64::try_from(conn.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        conn.idle_since_ms.store(ms, Ordering::SeqCst);
        if conn.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && let Some(w) = conn.reader.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            w.wake();
        }
    }
}

/// The connection's stream: reads fail with `TimedOut` once it has been idle too long, which
/// makes the server close it.
pub struct GuardedIo<I> {
    inner: I,
    conn: Arc<Conn>,
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

fn idle_error(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no complete request within {limit:?}: connection closed"),
    )
}

impl<I: AsyncRead + Unpin> AsyncRead for GuardedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.upgraded.load(Ordering::SeqCst) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.conn.in_flight.load(Ordering::SeqCst) > 0 {
            *this.conn.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // The request may have ended between the check and storing the waker.
            if this.conn.in_flight.load(Ordering::SeqCst) > 0 {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
        }
        let deadline = this.conn.idle_deadline(this.limit);
        if Instant::now() >= deadline {
            return Poll::Ready(Err(idle_error(this.limit)));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if this.armed != Some(deadline) {
                    this.sleep.as_mut().reset(deadline);
                    this.armed = Some(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(idle_error(this.limit))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => ready,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for GuardedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connection's service: counts requests in progress and bounds the rate of their bodies.
#[derive(Clone)]
pub struct GuardedService<S> {
    inner: S,
    conn: Arc<Conn>,
    limits: ConnLimits,
}

impl<S, B> tower::Service<Request<Incoming>> for GuardedService<S>
where
    S: tower::Service<Request<RateBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Unpin,
{
    type Response = Response<GuardedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let flight = self.conn.begin();
        let too_slow = Arc::new(AtomicBool::new(false));
        let limits = self.limits;
        let slow = too_slow.clone();
        let answer = self
            .inner
            .call(req.map(|body| RateBody::new(body, limits, slow)));
        Box::pin(async move {
            let response = answer.await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                flight.0.upgraded.store(true, Ordering::SeqCst);
            }
            if too_slow.load(Ordering::SeqCst) {
                return Ok(too_slow_response(limits, flight));
            }
            Ok(response.map(|body| GuardedBody {
                kind: Kind::Inner(body),
                _flight: flight,
            }))
        })
    }
}

fn too_slow_response<B>(limits: ConnLimits, flight: Flight) -> Response<GuardedBody<B>> {
    let message = format!(
        "the request body arrived slower than {} bytes/s over {} s: send it faster",
        limits.body_min_rate,
        limits.body_rate_window.as_secs_f64()
    );
    let body = format!(
        "{{\"code\":\"body_too_slow\",\"message\":{}}}",
        json_string(&message)
    );
    let mut response = Response::new(GuardedBody {
        kind: Kind::Fixed(Some(Bytes::from(body))),
        _flight: flight,
    });
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// `s` as a JSON string literal (the message has no characters that need more than this).
fn json_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A response body that keeps its request counted as in progress until it has been sent.
pub struct GuardedBody<B> {
    kind: Kind<B>,
    _flight: Flight,
}

enum Kind<B> {
    Inner(B),
    Fixed(Option<Bytes>),
}

impl<B: Body<Data = Bytes> + Unpin> Body for GuardedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Inner(b) => Pin::new(b).poll_frame(cx),
            Kind::Fixed(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner(b) => b.is_end_stream(),
            Kind::Fixed(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner(b) => b.size_hint(),
            Kind::Fixed(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {min_rate} bytes/s over {window:?}")]
pub struct BodyTooSlow {
    pub min_rate: u64,
    pub window: Duration,
}

/// A request body that fails with [`BodyTooSlow`] when it arrives too slowly.
pub struct RateBody {
    inner: Incoming,
    limits: ConnLimits,
    /// Time spent waiting for data in the current window, not counting a wait in progress.
    waited: Duration,
    /// Bytes received in the current window.
    bytes: u64,
    /// When the wait in progress began.
    waiting_since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    too_slow: Arc<AtomicBool>,
}

impl RateBody {
    fn new(inner: Incoming, limits: ConnLimits, too_slow: Arc<AtomicBool>) -> RateBody {
        RateBody {
            inner,
            limits,
            waited: Duration::ZERO,
            bytes: 0,
            waiting_since: None,
            sleep: None,
            too_slow,
        }
    }

    /// Closes the window once `waited` fills it: the body failed when too few bytes came.
    fn judge(&mut self) -> Result<(), BodyTooSlow> {
        if self.waited < self.limits.body_rate_window {
            return Ok(());
        }
        let need = self.limits.body_min_rate as f64 * self.limits.body_rate_window.as_secs_f64();
        if (self.bytes as f64) < need {
            self.too_slow.store(true, Ordering::SeqCst);
            return Err(BodyTooSlow {
                min_rate: self.limits.body_min_rate,
                window: self.limits.body_rate_window,
            });
        }
        self.waited = Duration::ZERO;
        self.bytes = 0;
        Ok(())
    }

    fn stop_waiting(&mut self, now: Instant) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now - since;
        }
    }
}

impl Body for RateBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.too_slow.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.stop_waiting(Instant::now());
                    if let Some(data) = frame.data_ref() {
                        this.bytes += data.len() as u64;
                    }
                    if let Err(e) = this.judge() {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(other) => {
                    this.waiting_since = None;
                    return Poll::Ready(other.map(|r| r.map_err(BoxError::from)));
                }
                Poll::Pending => {
                    if this.limits.body_min_rate == 0 {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    let since = *this.waiting_since.get_or_insert(now);
                    let deadline = since + this.limits.body_rate_window.saturating_sub(this.waited);
                    if now >= deadline {
                        this.stop_waiting(now);
                        if let Err(e) = this.judge() {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        // The window was met: a new one starts, still waiting.
                        this.waiting_since = Some(now);
                        continue;
                    }
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if sleep.deadline() != deadline {
                        sleep.as_mut().reset(deadline);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(
            !stream.nodelay().unwrap(),
            "the kernel's default is Nagle on"
        );
        let limits = ConnLimits {
            head_timeout: Duration::from_secs(5),
            body_min_rate: 0,
            body_rate_window: Duration::from_secs(5),
        };
        let (io, _service) = GuardAcceptor::new(limits).accept(stream, ()).await.unwrap();
        assert!(io.inner.nodelay().unwrap());
        drop(client);
    }
}
