//! The router: one function, [`app`], serves every entry point.
//!
//! Routes: `POST {/source,/sygno}/write_raw` and `write_batch` (role write),
//! `POST {/source,/sygno}/expose`, `POST {/source,/sygno}/series` and
//! `GET {/source,/sygno}/sources`
//! (role read), `GET /metrics` (role read), `/grafana` (the Grafana JSON
//! data source; role read), `GET /health`,
//! `POST|GET /admin/rebuild` (role admin), `GET /docs`, `GET /openapi.json`.
//! Unknown routes (404), wrong methods (405) and panics (500) answer in the
//! envelope too.

pub mod admin;
pub mod expose;
pub mod grafana;
pub mod health;
pub mod prometheus;
pub mod series;
pub mod sources;
pub mod write_batch;
pub mod write_raw;

use crate::body::BodyReader;
use crate::error::ApiError;
use crate::openapi;
use crate::reads::ReadBudget;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use sygno_aggregator::RebuildHandle;
use sygno_shared::domain::auth::ApiKeys;
use sygno_shared::domain::series::Retention;
use sygno_shared::store::{EventLog, ViewStore};
use tower_http::catch_panic::CatchPanicLayer;

/// The prefixes the data routes are served under: the contract's and the
/// original service's.
pub const PREFIXES: [&str; 2] = ["/source", "/sygno"];
pub const WRITE_RAW: &str = "/write_raw";
pub const WRITE_BATCH: &str = "/write_batch";
pub const EXPOSE: &str = "/expose";
pub const SOURCES: &str = "/sources";
pub const SERIES: &str = "/series";
pub const HEALTH: &str = "/health";
pub const METRICS: &str = "/metrics";
pub const GRAFANA: &str = "/grafana";
pub const ADMIN_REBUILD: &str = "/admin/rebuild";
pub const DOCS: &str = "/docs";
pub const OPENAPI_JSON: &str = "/openapi.json";

/// What the handlers need: keys, the log to append to, the rows to read,
/// and (in a process that runs the worker) the rebuild control.
#[derive(Clone)]
pub struct AppState {
    pub keys: Arc<ApiKeys>,
    pub log: Arc<dyn EventLog>,
    pub views: Arc<dyn ViewStore>,
    /// `None` where no worker runs in-process (the read and write Lambdas).
    pub rebuild: Option<RebuildHandle>,
    /// The Prometheus recorder `GET /metrics` renders; `None` where
    /// metrics go elsewhere (the Lambda functions: CloudWatch) or are off.
    pub metrics: Option<PrometheusHandle>,
    /// Reads request bodies (deadline, shared memory budget).
    pub bodies: BodyReader,
    /// The budget of heavy reads (series, Grafana queries).
    pub reads: ReadBudget,
    /// How long the aggregator keeps minute and hour summaries: a series
    /// finer than kept is refused.
    pub retention: Retention,
}

impl AppState {
    /// The state of a process whose one store is both the log and the rows.
    pub fn on_store<S>(keys: ApiKeys, store: S, rebuild: Option<RebuildHandle>) -> Self
    where
        S: EventLog + ViewStore + Clone + 'static,
    {
        AppState {
            keys: Arc::new(keys),
            log: Arc::new(store.clone()),
            views: Arc::new(store),
            rebuild,
            metrics: None,
            bodies: BodyReader::default(),
            reads: ReadBudget::default(),
            retention: Retention::default(),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("rebuild", &self.rebuild.is_some())
            .finish_non_exhaustive()
    }
}

/// The router, with every route, fallback and the panic guard.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for prefix in PREFIXES {
        router = router
            .route(&format!("{prefix}{WRITE_RAW}"), post(write_raw::write_raw))
            .route(
                &format!("{prefix}{WRITE_BATCH}"),
                post(write_batch::write_batch),
            )
            .route(&format!("{prefix}{EXPOSE}"), post(expose::expose))
            .route(&format!("{prefix}{SOURCES}"), get(sources::list_sources))
            .route(&format!("{prefix}{SERIES}"), post(series::series));
    }
    let router = router
        .route(HEALTH, get(health::health))
        .route(
            ADMIN_REBUILD,
            post(admin::start_rebuild).get(admin::rebuild_status),
        )
        .merge(docs())
        .route(METRICS, get(prometheus::metrics))
        .route(GRAFANA, get(grafana::health))
        .route(&format!("{GRAFANA}/"), get(grafana::health))
        .route(&format!("{GRAFANA}/metrics"), post(grafana::metrics))
        .route(
            &format!("{GRAFANA}/metric-payload-options"),
            post(grafana::payload_options),
        )
        .route(&format!("{GRAFANA}/query"), post(grafana::query));
    crate::observe::layers(guarded(router)).with_state(state)
}

/// `GET /docs` (the Swagger UI, its assets compiled in) and `GET /openapi.json`.
#[cfg(feature = "swagger-ui")]
fn docs<S: Clone + Send + Sync + 'static>() -> Router<S> {
    utoipa_swagger_ui::SwaggerUi::new(DOCS)
        .url(OPENAPI_JSON, openapi::document())
        .into()
}

/// `GET /docs` and `GET /openapi.json` without compiled-in assets (the
/// Lambda functions): a page that loads the Swagger UI from a CDN and
/// points it at `openapi.json` by a relative address, so that an API
/// Gateway stage prefix keeps working.
#[cfg(not(feature = "swagger-ui"))]
fn docs<S: Clone + Send + Sync + 'static>() -> Router<S> {
    use axum::response::Html;
    use axum::Json;
    const PAGE: &str = include_str!("docs.html");
    let document = Json(openapi::document());
    Router::new()
        .route(DOCS, get(|| async { Html(PAGE) }))
        .route(OPENAPI_JSON, get(move || async move { document.clone() }))
}

/// The fallbacks and panic guard, so that even unrouted requests and
/// bugs answer in the envelope.
fn guarded<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(envelope_foreign_errors))
        .layer(CatchPanicLayer::custom(on_panic))
}

/// An error answered outside the handlers (the API page's file server
/// under `/docs`) in the envelope too. The handlers' own errors are JSON
/// already and pass unchanged.
async fn envelope_foreign_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        axum::http::StatusCode::NOT_FOUND => "not_found",
        axum::http::StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let description = status.canonical_reason().unwrap_or("request failed");
    ApiError::new(status, code, description.to_ascii_lowercase()).into_response()
}

/// Now, in milliseconds since the epoch: the shell's clock.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A panic is a 500 whose cause (the panic's message) goes to the
/// request's log line.
fn on_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    ApiError {
        cause: Some(format!("a request handler panicked: {message}")),
        ..ApiError::internal()
    }
    .into_response()
}

#[cfg(test)]
mod tests;
