//! Every response body is the contract's envelope:
//! `{"status": <int>, "description": "<text>", "data": <value or null>}`.
//! Errors carry a stable code in `data.error`; 5xx descriptions are generic
//! and their causes go to the log, never to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sygno_shared::domain::write::{BatchError, WriteError};
use sygno_shared::store::StoreError;

/// A response body in the envelope, `data` given as JSON text.
pub fn envelope(status: StatusCode, description: &str, data_json: &str) -> Response {
    envelope_writing(status, description, |out| {
        out.extend_from_slice(data_json.as_bytes());
    })
}

/// A response body in the envelope, `data` written by `data` straight
/// into the body (a large answer is not copied).
pub fn envelope_writing(
    status: StatusCode,
    description: &str,
    data: impl FnOnce(&mut Vec<u8>),
) -> Response {
    let mut body = envelope_open(status, description);
    data(&mut body);
    envelope_close(status, body)
}

/// The envelope up to its `data`, for `data` to be written after.
pub fn envelope_open(status: StatusCode, description: &str) -> Vec<u8> {
    let description = serde_json::to_string(description).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "{{\"status\":{},\"description\":{description},\"data\":",
        status.as_u16()
    )
    .into_bytes()
}

/// The response of an [`envelope_open`] body whose `data` is written.
pub fn envelope_close(status: StatusCode, mut body: Vec<u8>) -> Response {
    body.push(b'}');
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A success response with `data` serialized from `data`.
pub fn ok<T: Serialize>(status: StatusCode, description: &str, data: &T) -> Response {
    match serde_json::to_string(data) {
        Ok(json) => envelope(status, description, &json),
        Err(e) => {
            tracing::error!(error = %e, "response could not be serialized");
            ApiError::internal().into_response()
        }
    }
}

/// A failed request: status, stable code, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine code, sent as `data.error`.
    pub code: &'static str,
    pub description: String,
    /// The index of the bad event of a batch, sent as `data.index`.
    pub index: Option<usize>,
    /// What caused a 5xx, for the log line of the failed request (see
    /// [`crate::observe`]); never sent.
    pub cause: Option<String>,
}

/// A failed response's code and cause, kept in its extensions for the
/// request's log line.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: &'static str,
    pub cause: Option<String>,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            description: description.into(),
            index: None,
            cause: None,
        }
    }

    /// 401: no key, or a key nobody configured.
    pub fn unauthorized(description: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", description)
    }

    /// 403: a known key without the route's role.
    pub fn forbidden(description: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", description)
    }

    /// 413: body over the route's limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 408: the body did not arrive within the body read timeout. The
    /// connection is closed after the answer.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
    }

    /// 415: a body that says it is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON: send Content-Type: application/json",
        )
    }

    /// 400: not JSON at all.
    pub fn invalid_json(description: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", description)
    }

    /// 422: JSON of the wrong shape or with bad values.
    pub fn invalid_body(description: String) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            description,
        )
    }

    /// 404.
    pub fn not_found(description: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", description)
    }

    /// 503: the store failed; the client may retry.
    pub fn unavailable(description: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", description)
    }

    /// 503 `busy`: too many heavy reads at once (see `crate::reads`); the
    /// answer carries `Retry-After`.
    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many large reads at once; retry in a moment",
        )
    }

    /// 500: a bug. The cause is logged where it happened.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let data = match self.index {
            Some(index) => serde_json::json!({ "error": self.code, "index": index }),
            None => serde_json::json!({ "error": self.code }),
        };
        let data = data.to_string();
        let mut response = envelope(self.status, &self.description, &data);
        if self.code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may never come: close, do not drain.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(Failure {
            code: self.code,
            cause: self.cause,
        });
        response
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Syntax(_) => ApiError::invalid_json(e.to_string()),
            WriteError::Invalid(text) => ApiError::invalid_body(text),
            WriteError::Limit { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        ApiError {
            index: e.index,
            ..e.error.into()
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::TooManySources { max } = e {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_sources",
                format!("the service holds its most sources ({max}); write to a source it has, or ask its operator to raise SYGNO_MAX_SOURCES"),
            );
        }
        sygno_shared::telemetry::storage_error(&e, "request");
        ApiError {
            cause: Some(format!("{e:?}")),
            ..ApiError::unavailable("the store is unavailable; retry later")
        }
    }
}
