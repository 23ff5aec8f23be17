//! `POST /source/expose`: one materialized row, sent as stored.

use super::series;
use crate::auth::authorize;
use crate::error::{envelope, ApiError};
use crate::openapi::{ErrorResponse, ExposeRequest, ExposeResponse};
use crate::routes::{now_ms, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};
use sygno_shared::domain::auth::Role;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::Scope;
use sygno_shared::domain::series::Development;
use sygno_shared::domain::summary::Summary;
use sygno_shared::domain::time::window_end;
use sygno_shared::domain::write::{parse_json, MAX_BODY_BYTES, MAX_NAME_CHARS};
use sygno_shared::views::render_window;

const SHAPE: &str = "body must be a JSON object {\"type\": T, \"name\"?: source} with T one of \
     latest, 24h_average, 24h_devt, 7d_average, 7d_devt, 24h_stats, 7d_stats, 24h_development, 7d_development";

/// Reads the latest event or a window's statistics, of all events or of
/// one source.
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
        (status = 404, description = "`latest` before any event (`not_found`), or a `name` never written (`unknown_source`)", body = ErrorResponse),
        (status = 413, description = "Body over 64 KiB", body = ErrorResponse),
        (status = 422, description = "Not an object, unknown `type`, or a bad `name`", body = ErrorResponse),
        (status = 503, description = "Store unavailable", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn expose(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reader = authorize(&state.keys, &headers, Role::Read)?;
    let bytes = state
        .bodies
        .read(&reader, &headers, body, MAX_BODY_BYTES)
        .await?;
    // Other fields are ignored, as the original API did.
    let request: Map<String, Value> = parse_json(&bytes, SHAPE)?;
    let text = match request.get("type") {
        Some(Value::String(text)) => Some(text.as_str()),
        _ => None,
    };
    let development = text.and_then(Development::parse);
    let kind = text.and_then(ExposeKind::parse);
    if kind.is_none() && development.is_none() {
        return Err(ApiError::invalid_body(format!(
            "missing or unknown `type`: {SHAPE}"
        )));
    }
    let scope = match request.get("name") {
        None | Some(Value::Null) => Scope::All,
        Some(Value::String(name)) if (1..=MAX_NAME_CHARS).contains(&name.chars().count()) => {
            Scope::Source(name.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid_body(format!(
                "`name` must be a source name of 1 to {MAX_NAME_CHARS} characters"
            )))
        }
    };
    let Some(kind) = kind else {
        // A development view: the series of the window, read from the
        // stored summaries (a fold of its buckets, not a stored row).
        let development = development.ok_or_else(ApiError::internal)?;
        let query = development.query(scope.name().map(str::to_owned), window_end(now_ms()));
        return series::series_json(&state, &query, Some(development), "expose").await;
    };
    match state.views.view(&scope, kind).await? {
        Some(doc) => Ok(envelope(StatusCode::OK, kind.as_str(), &doc)),
        // A source's rows exist from its first aggregated event on: its
        // `latest` row at once, its window rows from the next render (a
        // fraction of a second later), so until then its window is empty.
        None if scope != Scope::All && kind != ExposeKind::Latest => {
            match state.views.view(&scope, ExposeKind::Latest).await? {
                Some(_) => Ok(empty_window(kind)),
                None => Err(unknown_source()),
            }
        }
        None if scope != Scope::All => Err(unknown_source()),
        None if kind == ExposeKind::Latest => Err(ApiError::not_found(
            "no event has been written yet".to_owned(),
        )),
        // No row yet means no event was ever aggregated: an empty window.
        None => Ok(empty_window(kind)),
    }
}

/// A window of no events, ending now.
fn empty_window(kind: ExposeKind) -> Response {
    let doc = render_window(kind, window_end(now_ms()), &Summary::default(), 0);
    envelope(StatusCode::OK, kind.as_str(), &doc)
}

use super::series::unknown_source;
