//! `GET /metrics`: the process's metrics in the Prometheus text exposition
//! format (role `read`: a scraper sends its key in `x-api-key`). The one
//! route whose success body is not the envelope: Prometheus reads it.

use crate::auth::authorize;
use crate::error::ApiError;
use crate::openapi::ErrorResponse;
use crate::routes::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use sygno_aggregator::control::RebuildState;
use sygno_shared::domain::auth::Role;
use sygno_shared::telemetry::metric;

/// The Prometheus text format's media type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The service's metrics (Prometheus text format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format (not the envelope)", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the read role", body = ErrorResponse),
        (status = 404, description = "Metrics are off in this process", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.keys, &headers, Role::Read)?;
    let handle = state.metrics.as_ref().ok_or_else(|| {
        ApiError::not_found("metrics are off in this process (sygno serve --no-metrics)".to_owned())
    })?;
    if let Some(rebuild) = &state.rebuild {
        let status = rebuild.status();
        for (name, state) in [
            ("idle", RebuildState::Idle),
            ("running", RebuildState::Running),
            ("done", RebuildState::Done),
            ("failed", RebuildState::Failed),
        ] {
            let value = if status.state == state { 1.0 } else { 0.0 };
            metrics::gauge!(metric::REBUILD_STATE, "state" => name).set(value);
        }
        metrics::gauge!(metric::REBUILD_PROCESSED).set(status.processed as f64);
    }
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}
