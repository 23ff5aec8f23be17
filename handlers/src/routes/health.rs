//! `GET /health`: 200 when the store answers, 503 otherwise. No key needed.

use crate::error::{ok, ApiError};
use crate::openapi::{ErrorResponse, HealthResponse};
use crate::routes::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

/// Liveness of the service and its store.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The store is reachable", body = HealthResponse),
        (status = 503, description = "The store is not reachable", body = ErrorResponse),
    )
)]
pub async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.log.ping().await?;
    Ok(ok(
        StatusCode::OK,
        "ok",
        &serde_json::json!({ "store": "ok" }),
    ))
}
