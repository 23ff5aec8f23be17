//! `POST /source/write_raw`: validate, append durably, answer.

use crate::auth::authorize;
use crate::error::{ok, ApiError};
use crate::openapi::{ErrorResponse, WriteRawRequest, WriteRawResponse};
use crate::routes::{now_ms, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use sygno_shared::domain::auth::KeyId;
use sygno_shared::domain::auth::Role;
use sygno_shared::domain::event::Appended;
use sygno_shared::domain::event::NewEvent;
use sygno_shared::domain::time::format_rfc3339;
use sygno_shared::domain::time::Millis;
use sygno_shared::domain::write::{
    parse_idempotency_key, parse_write, WriteCommand, WriteError, MAX_BODY_BYTES,
};

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// One event's answer.
#[derive(Serialize)]
pub(crate) struct Written {
    event_id: String,
    event_time: String,
    duplicate: bool,
}

impl From<Appended> for Written {
    fn from(appended: Appended) -> Self {
        Written {
            event_id: appended.event_id,
            event_time: format_rfc3339(appended.event_time),
            duplicate: appended.duplicate,
        }
    }
}

/// The request's `Idempotency-Key`, if any, validated.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, WriteError> {
    headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .map(|v| parse_idempotency_key(v.as_bytes()))
        .transpose()
}

/// The event to append for a validated write: a new id, the writer's key
/// id, the receipt time.
pub(crate) fn new_event(
    command: WriteCommand,
    writer: &KeyId,
    now: Millis,
    idempotency_key: Option<String>,
) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_time: command.event_time,
        received_at: now,
        name: command.name,
        user_id: writer.as_str().to_owned(),
        data: command.data.get().to_owned(),
        idempotency_key,
    }
}

/// Appends a raw event to the log.
#[utoipa::path(
    post,
    path = "/source/write_raw",
    tag = "events",
    request_body = WriteRawRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7E]{1,128}$",
        description = "1 to 128 visible ASCII characters. A repeat from the same API key returns the first event and appends nothing.")),
    responses(
        (status = 200, description = "Stored durably (or a duplicate of an earlier request)", body = WriteRawResponse),
        (status = 400, description = "Body is not JSON", body = ErrorResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the write role", body = ErrorResponse),
        (status = 413, description = "Body over 64 KiB", body = ErrorResponse),
        (status = 415, description = "Content-Type is not JSON", body = ErrorResponse),
        (status = 422, description = "Body or Idempotency-Key invalid, or a new source past SYGNO_MAX_SOURCES (`too_many_sources`); nothing stored", body = ErrorResponse),
        (status = 503, description = "Store unavailable; nothing stored, retry", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn write_raw(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let writer = authorize(&state.keys, &headers, Role::Write)?;
    let bytes = state
        .bodies
        .read(&writer, &headers, body, MAX_BODY_BYTES)
        .await?;
    let now = now_ms();
    let command = parse_write(&bytes, now)?;
    let event = new_event(command, &writer, now, idempotency_key(&headers)?);
    let appended = state.log.append(event).await?;
    sygno_shared::telemetry::appended(std::slice::from_ref(&appended));
    let description = if appended.duplicate {
        "duplicate: this Idempotency-Key was used before; nothing was appended"
    } else {
        "event stored"
    };
    Ok(ok(StatusCode::OK, description, &Written::from(appended)))
}
