//! `POST /source/write_batch`: validate every event, append them all
//! durably, answer each.

use crate::auth::authorize;
use crate::error::{ok, ApiError};
use crate::openapi::{ErrorResponse, WriteBatchRequest, WriteBatchResponse};
use crate::routes::write_raw::{idempotency_key, new_event, Written};
use crate::routes::{now_ms, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use sygno_shared::domain::auth::Role;
use sygno_shared::domain::write::{batch_event_key, parse_batch, MAX_BATCH_BODY_BYTES};

#[derive(Serialize)]
struct WrittenBatch {
    events: Vec<Written>,
}

/// Appends a batch of raw events: all are checked before any is stored.
#[utoipa::path(
    post,
    path = "/source/write_batch",
    tag = "events",
    request_body = WriteBatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7E]{1,128}$",
        description = "1 to 128 visible ASCII characters. Makes each event idempotent (as if the i-th had its own key): a retried batch, even after a 503 that stored part of it, appends no event twice.")),
    responses(
        (status = 200, description = "Every event stored durably (or a duplicate of an earlier request's)", body = WriteBatchResponse),
        (status = 400, description = "Body is not JSON", body = ErrorResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the write role", body = ErrorResponse),
        (status = 413, description = "Body over 1 MiB", body = ErrorResponse),
        (status = 415, description = "Content-Type is not JSON", body = ErrorResponse),
        (status = 422, description = "A bad event (`data.index` names the first), a bad batch, or a new source past SYGNO_MAX_SOURCES (`too_many_sources`); nothing stored", body = ErrorResponse),
        (status = 503, description = "Store unavailable; retry (with an Idempotency-Key, without duplicates)", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn write_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let writer = authorize(&state.keys, &headers, Role::Write)?;
    let bytes = state
        .bodies
        .read(&writer, &headers, body, MAX_BATCH_BODY_BYTES)
        .await?;
    let now = now_ms();
    let commands = parse_batch(&bytes, now)?;
    let batch_key = idempotency_key(&headers)?;
    let events = commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| {
            let key = batch_key.as_deref().map(|key| batch_event_key(key, i));
            new_event(command, &writer, now, key)
        })
        .collect();
    let appended = state.log.append_batch(events).await?;
    sygno_shared::telemetry::appended(&appended);
    let duplicates = appended.iter().filter(|a| a.duplicate).count();
    let description = match duplicates {
        0 => "events stored".to_owned(),
        n => format!("events stored; {n} were duplicates of an earlier request's and were not appended again"),
    };
    let events = appended.into_iter().map(Written::from).collect();
    Ok(ok(StatusCode::OK, &description, &WrittenBatch { events }))
}
