//! `POST /source/series`: an aggregate's statistics bucket by bucket,
//! folded from its stored minute or hour summaries; JSON in the envelope,
//! or CSV on `Accept: text/csv`. Also the `expose` development types.

use crate::auth::authorize;
use crate::error::{envelope_writing, ApiError};
use crate::openapi::{ErrorResponse, SeriesRequest, SeriesResponse};
use crate::reads::HeavyRead;
use crate::routes::{now_ms, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sygno_shared::domain::auth::Role;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::Scope;
use sygno_shared::domain::series::{
    parse_series, Bucket, SeriesError, SeriesFold, SeriesQuery, SeriesRequestError,
};
use sygno_shared::domain::write::MAX_BODY_BYTES;
use sygno_shared::views::{render_series_csv, render_series_to};

/// Statistics per bucket of a range, at an interval.
#[utoipa::path(
    post,
    path = "/source/series",
    tag = "statistics",
    request_body = SeriesRequest,
    responses(
        (status = 200, description = "The buckets with events, in order (CSV rows `start,name,field,count,mean,std,min,max` on `Accept: text/csv`)",
            content((SeriesResponse = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Body is not JSON", body = ErrorResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the read role", body = ErrorResponse),
        (status = 404, description = "A `name` never written (`unknown_source`)", body = ErrorResponse),
        (status = 413, description = "Body over 64 KiB", body = ErrorResponse),
        (status = 422, description = "Bad body (`invalid_body`), over 10,000 buckets (`too_many_buckets`), over 1,000,000 statistics (`too_many_statistics`), or finer than the summaries kept for that time (`resolution_unavailable`)", body = ErrorResponse),
        (status = 503, description = "Store unavailable (`unavailable`), or too many large reads at once (`busy`, with `Retry-After`)", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn series(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reader = authorize(&state.keys, &headers, Role::Read)?;
    let bytes = state
        .bodies
        .read(&reader, &headers, body, MAX_BODY_BYTES)
        .await?;
    let query = parse_series(&bytes).map_err(|e| match e {
        SeriesRequestError::Write(e) => ApiError::from(e),
        SeriesRequestError::Series(e) => series_error(e),
    })?;
    let mut read = state.reads.begin("series").await?;
    let buckets = buckets(&state, &query, &mut read).await?;
    if wants_csv(&headers) {
        let mut response = render_series_csv(&query, &buckets).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(response);
    }
    Ok(envelope_writing(StatusCode::OK, "series", |out| {
        render_series_to(out, &query, &buckets, None);
    }))
}

/// The buckets of `query`: a 404 for a source never aggregated, a 422 for
/// a range finer than kept or an answer over the statistics budget, else
/// the fold of its stored summaries, read a day's minutes (or 60 days of
/// hours) at a time so that memory holds the buckets, not the range;
/// `read` holds the statistics of the buckets as they grow (503 `busy`
/// when the budget is spent).
pub async fn buckets(
    state: &AppState,
    query: &SeriesQuery,
    read: &mut HeavyRead,
) -> Result<Vec<Bucket>, ApiError> {
    query
        .check_retention(&state.retention, now_ms())
        .map_err(series_error)?;
    let scope = Scope::from_name(query.name.as_deref());
    if scope != Scope::All
        && state
            .views
            .view(&scope, ExposeKind::Latest)
            .await?
            .is_none()
    {
        return Err(unknown_source());
    }
    let (tier, _) = query.reads();
    let held_before = read.held();
    let mut fold = SeriesFold::new(query);
    let chunks: Vec<_> = fold.chunks().collect();
    for chunk in chunks {
        for (index, summary) in state.views.summaries(&scope, tier, chunk).await? {
            fold.push(index, &summary).map_err(series_error)?;
        }
        read.hold(held_before + fold.cells()).await?;
    }
    Ok(fold.finish())
}

/// Whether the client prefers CSV: `Accept` negotiated with its q-values
/// between JSON (the default, first) and CSV. No `Accept`, one that does
/// not parse or that accepts neither: JSON.
fn wants_csv(headers: &HeaderMap) -> bool {
    use mediatype::{names, MediaType};
    const JSON: MediaType = MediaType::new(names::APPLICATION, names::JSON);
    const CSV: MediaType = MediaType::new(names::TEXT, names::CSV);
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return false;
    }
    let Ok(accept) = values.join(", ").parse::<headers_accept::Accept>() else {
        return false;
    };
    accept.negotiate(&[JSON, CSV]) == Some(&CSV)
}

fn series_error(e: SeriesError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code, e.message)
}

pub(crate) fn unknown_source() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_source",
        "no event of this source has been aggregated",
    )
}
