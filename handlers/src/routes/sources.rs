//! `GET /source/sources`: every source and what its aggregate holds.

use crate::auth::authorize;
use crate::error::{envelope, ApiError};
use crate::openapi::{ErrorResponse, SourcesResponse};
use crate::routes::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sygno_shared::domain::auth::Role;

/// Lists the sources, sorted by name, as the aggregator last rendered
/// them.
#[utoipa::path(
    get,
    path = "/source/sources",
    tag = "statistics",
    responses(
        (status = 200, description = "Every source", body = SourcesResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the read role", body = ErrorResponse),
        (status = 503, description = "Store unavailable", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn list_sources(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.keys, &headers, Role::Read)?;
    let docs = state.views.sources().await?;
    let mut data = String::from("{\"sources\":[");
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str(doc);
    }
    data.push_str("]}");
    Ok(envelope(StatusCode::OK, "sources", &data))
}
