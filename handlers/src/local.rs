//! `sygno serve`: the router, a store and its aggregator in one process —
//! the embedded store with its worker ([`serve`]), or a DynamoDB table with
//! a Streams poller driving the stream aggregator ([`serve_dynamo`], the
//! whole AWS path on one machine) — and `sygno rebuild` against a stopped
//! embedded store.

use crate::body::BodyReader;
use crate::routes::{app, AppState};
use crate::server::{self, ConnectionOptions};
use std::future::Future;
use std::sync::Arc;
use sygno_aggregator::control;
use sygno_aggregator::dynamo::{self, poller::Poller};
use sygno_aggregator::embedded::rebuild::{rebuild, Rebuilt};
use sygno_aggregator::embedded::worker::{self, Worker};
use sygno_aggregator::Clock;
use sygno_shared::domain::auth::ApiKeys;
use sygno_shared::domain::series::Retention;
use sygno_shared::store::dynamo::DynamoStore;
use sygno_shared::store::embedded::EmbeddedStore;
use sygno_shared::store::{AggregateStore, ChangeFeed, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the local server stopped with an error.
#[derive(thiserror::Error)]
pub enum ServeError {
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("the HTTP server failed")]
    Io(#[from] std::io::Error),
    #[error("the aggregator's thread could not start")]
    AggregatorThread(#[source] std::io::Error),
}

impl std::fmt::Debug for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        sygno_shared::store::error_chain_fmt(self, f)
    }
}

/// How `sygno serve` serves HTTP.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub connections: ConnectionOptions,
    /// Record metrics and serve them at `GET /metrics`.
    pub metrics: bool,
    /// How long summaries are kept (the worker prunes; series older than
    /// kept are refused).
    pub retention: Retention,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            connections: ConnectionOptions::default(),
            metrics: true,
            retention: Retention::default(),
        }
    }
}

impl ServeOptions {
    pub fn retain(self, retention: Retention) -> Self {
        ServeOptions { retention, ..self }
    }

    /// Serves `state`'s router until `shutdown` completes.
    async fn serve(
        self,
        listener: TcpListener,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let metrics = self
            .metrics
            .then(crate::observe::install_prometheus)
            .flatten();
        let state = AppState {
            metrics,
            bodies: BodyReader::new(self.connections.body_timeout),
            reads: Default::default(),
            retention: self.retention,
            ..state
        };
        let router = app(state);
        server::serve(listener, router, self.connections, shutdown).await
    }
}

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// Serves the API on `listener` until `shutdown` completes, with the
/// aggregation worker running beside it. On shutdown, in-flight requests
/// finish, then the worker finishes its step (its checkpoint committed),
/// then the store's writer commits what is queued.
pub async fn serve(
    listener: TcpListener,
    store: EmbeddedStore,
    keys: ApiKeys,
    clock: Clock,
    max_fields: usize,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let feed: Arc<dyn ChangeFeed> = Arc::new(store.clone());
    let aggregates: Arc<dyn AggregateStore> = Arc::new(store.clone());
    let worker = Worker::start(feed, aggregates, max_fields, clock())
        .await?
        .render_every(worker::LIVE_RENDER_INTERVAL)
        .retain(options.retention);
    let (rebuild, requests) = control::channel();
    let (stop, stopped) = watch::channel(false);
    let worker_done = on_own_thread(
        "sygno-aggregator",
        worker::run(worker, Arc::clone(&clock), requests, stopped),
    )
    .map_err(ServeError::AggregatorThread)?;

    let state = AppState::on_store(keys, store, Some(rebuild));
    let served = options.serve(listener, state, shutdown).await;
    tracing::info!("HTTP server stopped; stopping the aggregator");
    let _ = stop.send(true);
    // A panic was logged when it happened (`on_own_thread`).
    let _ = worker_done.await;
    served.map_err(ServeError::Io)
}

/// Runs `work` on an OS thread of its own, on a single-threaded runtime;
/// the receiver completes when it has (an error: it panicked, which is
/// logged at once: the server goes on answering from rows that no longer
/// change).
///
/// The aggregator's steps hold the CPU for milliseconds at a time
/// (folding thousands of events, rendering hundreds of aggregates): on
/// the server's runtime they would hold up the requests queued on the
/// runtime thread they ran on, while the OS scheduler shares the cores
/// between the two fairly.
fn on_own_thread(
    name: &str,
    work: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = tokio::sync::oneshot::channel();
    let thread = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(work)));
            match ran {
                Ok(()) => {
                    let _ = done.send(());
                }
                Err(_) => tracing::error!(thread, "a thread of the server panicked"),
            }
        })?;
    Ok(finished)
}

/// Serves the API on a DynamoDB table until `shutdown` completes: the
/// write and read paths of the Lambda functions, a Streams poller doing
/// what the aggregator Lambda does, and `POST /admin/rebuild` running the
/// online rebuild.
pub async fn serve_dynamo(
    listener: TcpListener,
    store: DynamoStore,
    keys: ApiKeys,
    clock: Clock,
    rebuild_options: dynamo::rebuild::Options,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let streams = dynamo::poller::streams_client_from_env().await;
    let poller = Poller::new(store.clone(), streams, rebuild_options.max_fields).await?;
    let (stop, stopped) = watch::channel(false);
    let poller_task = tokio::spawn(dynamo::poller::run(poller, Arc::clone(&clock), stopped));
    let (rebuild, requests) = control::channel();
    let rebuild_task = tokio::spawn(dynamo::rebuild::serve_requests(
        store.clone(),
        Arc::clone(&clock),
        rebuild_options,
        requests,
    ));
    let state = AppState::on_store(keys, store, Some(rebuild));
    let served = options.serve(listener, state, shutdown).await;
    tracing::info!("HTTP server stopped; stopping the stream poller");
    let _ = stop.send(true);
    rebuild_task.abort();
    if let Err(e) = poller_task.await {
        tracing::error!(error = %e, "stream poller task failed");
    }
    served.map_err(ServeError::Io)
}

/// Rebuilds every aggregate of the store from its log (no server may hold
/// the store). `progress(events_read, target)` is called after each batch.
pub async fn rebuild_store(
    store: &EmbeddedStore,
    clock: &Clock,
    max_fields: usize,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Rebuilt, StoreError> {
    rebuild(store, store, max_fields, clock(), progress).await
}
