//! What operators see of the HTTP layer: a request id on every request
//! (`x-request-id`, taken from the client or made, and echoed), a tracing
//! span per request carrying it (so every log line of a request names it),
//! one log line per failed request (its route, status, error code, cause
//! and request id: `error` level for 5xx; a refused request, 4xx, at
//! `debug`), and the request
//! metrics of [`sygno_shared::telemetry::metric`]. `GET /metrics` renders
//! them ([`crate::routes::prometheus`]).

use crate::error::Failure;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;
use sygno_shared::telemetry::{describe_metrics, metric};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `router` (its routes and fallbacks) in the request id, span,
/// failure log and metrics layers.
pub fn layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(axum::middleware::from_fn(observe))
        .layer(
            TraceLayer::new_for_http()
                // The failure line is `observe`'s, with the route.
                .on_failure(())
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", id, method = %request.method())
                }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(bounded_request_id))
}

/// Longest client request id kept; a longer one, or one with other than
/// visible ASCII, is replaced by a new id (it is echoed and logged with
/// every line of the request).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Drops a client's `x-request-id` that is empty, over
/// [`MAX_REQUEST_ID_LEN`] or not visible ASCII, so that a new one is made.
async fn bounded_request_id(mut request: Request) -> Request {
    let acceptable = |v: &axum::http::HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    };
    let headers = request.headers_mut();
    let ids: Vec<_> = headers.get_all(&REQUEST_ID).iter().collect();
    if ids.len() > 1 || ids.first().is_some_and(|v| !acceptable(v)) {
        headers.remove(&REQUEST_ID);
    }
    request
}

/// Counts and times the request by its matched route, and logs it if it failed.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Known methods only: any token is a valid method to hyper, and each
    // label value is a series kept forever.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    metrics::counter!(metric::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!(metric::HTTP_DURATION, "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    if status.is_client_error() || status.is_server_error() {
        let failure = response.extensions().get::<Failure>();
        let code = failure.map_or("", |f| f.code);
        if status.is_server_error() {
            let cause = failure.and_then(|f| f.cause.as_deref()).unwrap_or("");
            tracing::error!(%route, method, status = status.as_u16(), code, error.cause_chain = cause, "request failed");
        } else {
            // Refusals are the client's doing, and anyone can cause them:
            // counted in the metrics, logged only at debug.
            tracing::debug!(%route, method, status = status.as_u16(), code, "request refused");
        }
    }
    response
}

/// Installs the process's Prometheus recorder (once; later calls return
/// the same handle) and starts its upkeep (histogram buffers drained every
/// 5 s, so memory stays bounded between scrapes). `None` if another
/// recorder was installed first.
pub fn install_prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &metric::DURATION_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(metric::BATCH_EVENTS.into()),
                        &metric::BATCH_BUCKETS,
                    )
                });
            let handle = builder
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()?;
            describe_metrics();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("sygno-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}
