//! `POST /admin/rebuild` starts a rebuild of every aggregate from the log
//! in the running server (202); `GET /admin/rebuild` reports its progress.
//! Both need the `admin` role.

use crate::auth::authorize;
use crate::error::{ok, ApiError};
use crate::openapi::{ErrorResponse, RebuildResponse};
use crate::routes::{now_ms, AppState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sygno_aggregator::control::StartError;
use sygno_aggregator::RebuildHandle;
use sygno_shared::domain::auth::Role;

fn handle(state: &AppState) -> Result<&RebuildHandle, ApiError> {
    state.rebuild.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "no aggregator runs in this process; run `sygno rebuild` against the store",
        )
    })
}

/// Starts a rebuild; writes go on meanwhile.
#[utoipa::path(
    post,
    path = "/admin/rebuild",
    tag = "operations",
    responses(
        (status = 202, description = "Rebuild started; poll GET /admin/rebuild", body = RebuildResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the admin role", body = ErrorResponse),
        (status = 409, description = "A rebuild is already running", body = ErrorResponse),
        (status = 503, description = "No aggregator in this process", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn start_rebuild(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.keys, &headers, Role::Admin)?;
    match handle(&state)?.start(now_ms()) {
        Ok(status) => Ok(ok(StatusCode::ACCEPTED, "rebuild started", &status)),
        Err(StartError::Running(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "rebuild_running",
            "a rebuild is already running; poll GET /admin/rebuild",
        )),
        Err(StartError::NoWorker) => Err(ApiError::unavailable("the aggregator is not running")),
    }
}

/// The last rebuild's state and progress.
#[utoipa::path(
    get,
    path = "/admin/rebuild",
    tag = "operations",
    responses(
        (status = 200, description = "Rebuild status", body = RebuildResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the admin role", body = ErrorResponse),
        (status = 503, description = "No aggregator in this process", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn rebuild_status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.keys, &headers, Role::Admin)?;
    let status = handle(&state)?.status();
    Ok(ok(StatusCode::OK, "rebuild status", &status))
}
