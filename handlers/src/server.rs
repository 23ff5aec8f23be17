//! The local server's connections: HTTP/1.1 with a header read timeout
//! (the body's deadline is `crate::body::BodyReader`'s), a cap on open
//! connections below the process's file-descriptor limit, and graceful
//! shutdown.
//!
//! At the cap, the server does not stop accepting (that would leave
//! `/health` and writes queued behind idle sockets in the kernel's
//! backlog): it closes its oldest connections. One serving a request
//! (its headers in, its answer not yet out) finishes that request, then
//! closes; one that is idle or still sending its request headers or
//! body closes at once. So, whatever the number of idle or slow clients, a new
//! connection is served within about one request's time.
//!
//! Requests hyper cannot parse are answered by hyper itself: `refusals`
//! puts those answers in the envelope too.

mod refusals;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tower::{Service, ServiceExt};

/// How the local server treats connections.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// A request's headers must arrive within this (from the connection's
    /// start, or the end of its previous response).
    pub header_timeout: Duration,
    /// A request's body must arrive within this once its reading starts
    /// (enforced where bodies are read: `crate::body::BodyReader`); also
    /// bounds how long a shutdown waits for requests in flight.
    pub body_timeout: Duration,
    /// Most connections open at once; `None`: [`default_max_connections`].
    pub max_connections: Option<usize>,
}

pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub use crate::body::DEFAULT_BODY_TIMEOUT;

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: None,
        }
    }
}

/// File descriptors kept for everything but client connections: the
/// store's files, its threads' pipes, the listener, logs, the AWS SDK's
/// connections.
pub const RESERVED_FDS: u64 = 64;
/// The default cap when the descriptor limit is very high.
pub const MAX_DEFAULT_CONNECTIONS: u64 = 16_384;

/// The default connection cap: the soft `RLIMIT_NOFILE` less
/// [`RESERVED_FDS`], at most [`MAX_DEFAULT_CONNECTIONS`], at least 8.
pub fn default_max_connections() -> usize {
    let soft = rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _hard)| soft);
    let cap = soft
        .saturating_sub(RESERVED_FDS)
        .clamp(8, MAX_DEFAULT_CONNECTIONS);
    usize::try_from(cap).unwrap_or(8)
}

/// Open connections, oldest first, each with the signal that asks it to close.
#[derive(Default)]
struct Open {
    next_id: u64,
    closing: BTreeMap<u64, Arc<Notify>>,
}

impl Open {
    fn add(&mut self) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let close = Arc::new(Notify::new());
        self.closing.insert(id, Arc::clone(&close));
        (id, close)
    }

    /// Asks the oldest connection not yet asked to close.
    fn close_oldest(&mut self) {
        if let Some((_, close)) = self.closing.pop_first() {
            close.notify_one();
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, closes idle connections, lets requests in flight finish
/// (for at most the body timeout and 5 s more), and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ConnectionOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ceiling = default_max_connections();
    let max = match options.max_connections {
        Some(asked) if asked > ceiling => {
            tracing::warn!(
                asked,
                ceiling,
                "--max-connections is above the file-descriptor limit less its reserve; using the limit"
            );
            ceiling
        }
        Some(asked) => asked.max(1),
        None => ceiling,
    };
    tracing::info!(
        max_connections = max,
        header_timeout_s = options.header_timeout.as_secs_f64(),
        body_timeout_s = options.body_timeout.as_secs_f64(),
        "accepting connections"
    );
    let slots = Arc::new(Semaphore::new(max));
    let open: Arc<Mutex<Open>> = Arc::default();
    let (stopping, stop) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks (their results are nothing).
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (other parts of the process use them
                // too), or a connection reset before it was accepted:
                // free one, wait a little, go on.
                tracing::warn!(error = %e, "accepting a connection failed");
                lock(&open).close_oldest();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // The new connection holds a descriptor of the reserve until a
        // slot frees.
        let slot = tokio::select! {
            slot = free_slot(&slots, &open) => slot,
            () = &mut shutdown => break,
        };
        let (id, close) = lock(&open).add();
        let connection =
            serve_connection(http.clone(), stream, router.clone(), close, stop.clone());
        let open = Arc::clone(&open);
        connections.spawn(async move {
            connection.await;
            lock(&open).closing.remove(&id);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let grace = options.body_timeout + Duration::from_secs(5);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// A free connection slot; while there is none, closes the oldest
/// connections, one more every 10 ms.
async fn free_slot(
    slots: &Arc<Semaphore>,
    open: &Arc<Mutex<Open>>,
) -> tokio::sync::OwnedSemaphorePermit {
    loop {
        if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
            return slot;
        }
        lock(open).close_oldest();
        if let Ok(Ok(slot)) =
            tokio::time::timeout(Duration::from_millis(10), Arc::clone(slots).acquire_owned()).await
        {
            return slot;
        }
    }
}

/// One connection, until it ends, the server stops, or it is asked to
/// close: then at once if no request is being served, else gracefully
/// (the request in flight finishes first).
async fn serve_connection<S>(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    service: S,
    close: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Tracked>, Response = axum::response::Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Requests being served on this connection (0 or 1 in HTTP/1.1).
    let serving = Arc::new(AtomicUsize::new(0));
    // Whether that request's body is still arriving.
    let body_pending = Arc::new(AtomicBool::new(false));
    let counter = Arc::clone(&serving);
    let pending = Arc::clone(&body_pending);
    let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let guard = Serving::new(&counter);
        let request = request.map(|body| Tracked::new(body, Arc::clone(&pending)));
        let answer = service.clone().oneshot(request);
        async move {
            let answer = answer.await;
            drop(guard);
            answer
        }
    });
    let connection = http.serve_connection(
        TokioIo::new(refusals::Enveloped::new(stream)),
        hyper_service,
    );
    tokio::pin!(connection);
    let shed = tokio::select! {
        result = connection.as_mut() => return log_end(result),
        () = close.notified() => true,
        _ = stop.wait_for(|stopping| *stopping) => false,
    };
    if serving.load(Ordering::SeqCst) == 0 {
        // Idle, or its request headers still coming: closed at once.
        return;
    }
    if shed && body_pending.load(Ordering::SeqCst) {
        // Shed at the cap while its body is still coming: closed at once
        // too (that request has done nothing yet), so that clients
        // trickling bodies cannot hold every slot. A shutdown lets it
        // finish instead.
        return;
    }
    connection.as_mut().graceful_shutdown();
    log_end(connection.await);
}

/// A request's body that tells its connection whether it is still
/// arriving: from the request's start until its last frame, an error, or
/// the body being dropped.
#[derive(Debug)]
pub struct Tracked {
    inner: Incoming,
    pending: Arc<AtomicBool>,
}

impl Tracked {
    fn new(inner: Incoming, pending: Arc<AtomicBool>) -> Self {
        pending.store(!hyper::body::Body::is_end_stream(&inner), Ordering::SeqCst);
        Tracked { inner, pending }
    }
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_))))
            || hyper::body::Body::is_end_stream(&self.inner)
        {
            self.pending.store(false, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.pending.store(false, Ordering::SeqCst);
    }
}

/// Counts a request as being served until dropped.
struct Serving(Arc<AtomicUsize>);

impl Serving {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Serving(Arc::clone(counter))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Timeouts, resets, malformed requests: the client's doing.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
