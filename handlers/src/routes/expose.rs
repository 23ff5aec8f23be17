//! `POST /source/expose`: one materialized row, sent as stored.

use crate::auth::authorize;
use crate::body::read_json_body;
use crate::error::{envelope, ApiError};
use crate::openapi::{ErrorResponse, ExposeRequest, ExposeResponse};
use crate::routes::{now_ms, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use sygno_shared::domain::auth::Role;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::series::Summary;
use sygno_shared::domain::time::window_end;
use sygno_shared::domain::write::classify;
use sygno_shared::views::render_window;

/// Fields other than `type` are ignored, as the original API did.
#[derive(Deserialize)]
struct Request {
    #[serde(rename = "type")]
    kind: String,
}

const SHAPE: &str =
    "body must be {\"type\": T} with T one of latest, 24h_average, 24h_devt, 7d_average, 7d_devt";

/// Reads the latest event or a window's statistics.
#[utoipa::path(
    post,
    path = "/source/expose",
    tag = "statistics",
    request_body = ExposeRequest,
    responses(
        (status = 200, description = "The row asked for", body = ExposeResponse),
        (status = 400, description = "Body is not JSON", body = ErrorResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the read role", body = ErrorResponse),
        (status = 404, description = "`latest` before any event", body = ErrorResponse),
        (status = 413, description = "Body over 64 KiB", body = ErrorResponse),
        (status = 422, description = "Unknown `type`", body = ErrorResponse),
        (status = 503, description = "Store unavailable", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn expose(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state.keys, &headers, Role::Read)?;
    let bytes = read_json_body(&headers, body).await?;
    let request: Request =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::from(classify(&e, &bytes, SHAPE)))?;
    let kind = ExposeKind::parse(&request.kind)
        .ok_or_else(|| ApiError::invalid_body(format!("unknown `type`: {SHAPE}")))?;
    match state.views.view(kind).await? {
        Some(doc) => Ok(envelope(StatusCode::OK, kind.as_str(), &doc)),
        None if kind == ExposeKind::Latest => Err(ApiError::not_found(
            "no event has been written yet".to_owned(),
        )),
        // No row yet means no event was ever aggregated: an empty window.
        None => {
            let doc = render_window(kind, window_end(now_ms()), &Summary::default());
            Ok(envelope(StatusCode::OK, kind.as_str(), &doc))
        }
    }
}
