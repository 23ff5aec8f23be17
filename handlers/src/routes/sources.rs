//! `GET /source/sources`: the sources and what their aggregates hold, a
//! page at a time.

use crate::auth::authorize;
use crate::error::{envelope, ApiError};
use crate::openapi::{ErrorResponse, SourcesResponse};
use crate::routes::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use sygno_shared::domain::auth::Role;
use sygno_shared::domain::write::MAX_NAME_CHARS;
use utoipa::IntoParams;

/// Sources per page by default: every source under the default bound on
/// sources (`SYGNO_MAX_SOURCES`), so clients of version 2, which know no
/// pages, still get them all.
pub const DEFAULT_SOURCES_PAGE: usize = 10_000;
/// Most sources on one page.
pub const MAX_SOURCES_PAGE: usize = 10_000;

/// `GET /source/sources`'s query: `limit` (1 to [`MAX_SOURCES_PAGE`],
/// default [`DEFAULT_SOURCES_PAGE`]) and `cursor` (the `next` of the
/// previous page).
#[derive(Debug, Deserialize, IntoParams)]
pub struct SourcesQuery {
    /// Sources on this page: 1 to 10,000 (default 10,000).
    limit: Option<String>,
    /// The previous page's `next`: this page starts after that name.
    cursor: Option<String>,
}

/// Lists the sources, sorted by name, a page at a time, as the
/// aggregator last rendered them.
#[utoipa::path(
    get,
    path = "/source/sources",
    tag = "statistics",
    params(SourcesQuery),
    responses(
        (status = 200, description = "A page of sources, and the cursor of the next", body = SourcesResponse),
        (status = 400, description = "A query string that does not decode (`invalid_query`)", body = ErrorResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the read role", body = ErrorResponse),
        (status = 422, description = "`limit` not a whole number from 1 to 10,000 (`invalid_query`)", body = ErrorResponse),
        (status = 503, description = "Store unavailable", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn list_sources(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SourcesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state.keys, &headers, Role::Read)?;
    let Query(query) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    if query
        .cursor
        .as_deref()
        .is_some_and(|c| c.chars().count() > MAX_NAME_CHARS)
    {
        return Err(invalid_query(format!(
            "`cursor` is a source name: at most {MAX_NAME_CHARS} characters"
        )));
    }
    let limit = match query.limit.as_deref() {
        None => DEFAULT_SOURCES_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_SOURCES_PAGE).contains(n))
            .ok_or_else(|| {
                invalid_query(format!(
                    "`limit` must be a whole number from 1 to {MAX_SOURCES_PAGE}"
                ))
            })?,
    };
    // One more than asked: whether a next page exists.
    let mut page = state
        .views
        .sources_page(query.cursor.as_deref(), limit + 1)
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more
        .then(|| page.last().map(|(name, _)| name.clone()))
        .flatten();
    let mut data = String::from("{\"sources\":[");
    for (i, (_, doc)) in page.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str(doc);
    }
    data.push_str("],\"next\":");
    data.push_str(&serde_json::to_string(&next).unwrap_or_else(|_| "null".to_owned()));
    data.push('}');
    Ok(envelope(StatusCode::OK, "sources", &data))
}

/// 422 `invalid_query`: a query parameter out of its range.
fn invalid_query(description: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
        description,
    )
}
