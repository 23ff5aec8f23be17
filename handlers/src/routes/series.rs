//! `POST /source/series`: an aggregate's statistics bucket by bucket,
//! folded from its stored minute or hour summaries; JSON in the envelope,
//! or CSV on `Accept: text/csv`. Also the `expose` development types.

use crate::auth::authorize;
use crate::error::{envelope_open, ApiError};
use crate::openapi::{ErrorResponse, SeriesRequest, SeriesResponse};
use crate::reads::HeavyRead;
use crate::routes::{now_ms, AppState};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sygno_shared::domain::auth::Role;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::Scope;
use sygno_shared::domain::series::{
    parse_series, Bucket, Development, SeriesError, SeriesFold, SeriesQuery, SeriesRequestError,
};
use sygno_shared::domain::write::MAX_BODY_BYTES;
use sygno_shared::views::{SeriesCsv, SeriesJson};

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
    if wants_csv(&headers) {
        // Refusals cost no read slot.
        let scope = check_series(&state, &query).await?;
        let read = state.reads.begin("series").await?;
        let mut csv = SeriesCsv::begin(&query);
        let mut text = Chunks::default();
        fold_series(&state, &query, &scope, |bucket| {
            csv.bucket(&bucket);
            if csv.len() >= Chunks::SIZE {
                text.add(csv.take_text());
            }
        })
        .await?;
        text.add(csv.end());
        return Ok(text.response(StatusCode::OK, "text/csv; charset=utf-8", read));
    }
    series_json(&state, &query, None, "series").await
}

/// The JSON answer of `query` (the development view `development`'s, if
/// given) for `route`, written bucket by bucket as the fold finishes
/// them: memory holds the answer's text and the fold's working set.
pub async fn series_json(
    state: &AppState,
    query: &SeriesQuery,
    development: Option<Development>,
    route: &'static str,
) -> Result<Response, ApiError> {
    // Refusals cost no read slot.
    let scope = check_series(state, query).await?;
    let read = state.reads.begin(route).await?;
    let description = development.map_or("series", Development::as_str);
    let mut text = Chunks::default();
    let mut body = envelope_open(StatusCode::OK, description);
    let mut doc = SeriesJson::begin(&mut body, query, development);
    fold_series(state, query, &scope, |bucket| {
        doc.bucket(&mut body, &bucket);
        if body.len() >= Chunks::SIZE {
            text.add(std::mem::take(&mut body));
        }
    })
    .await?;
    doc.end(&mut body);
    body.push(b'}'); // the envelope's
    text.add(body);
    Ok(text.response(StatusCode::OK, "application/json", read))
}

/// An answer's text in pieces of about [`Chunks::SIZE`]: written out
/// without one large buffer growing (and copied) as the answer does.
#[derive(Debug, Default)]
struct Chunks {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    /// About how large a piece is.
    const SIZE: usize = 1 << 20;

    fn add(&mut self, piece: Vec<u8>) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(Bytes::from(piece));
        }
    }

    /// The response, holding `read`'s slot until its body is sent
    /// ([`HeavyRead::hold_until_sent`]).
    fn response(self, status: StatusCode, content_type: &'static str, read: HeavyRead) -> Response {
        let pieces = futures::stream::iter(
            self.pieces
                .into_iter()
                .map(Ok::<_, std::convert::Infallible>),
        );
        let mut response = (status, Body::from_stream(pieces)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.len));
        read.hold_until_sent(response)
    }
}

/// Folds `query`'s stored summaries of `scope` (from [`check_series`]),
/// giving each bucket with events to `each`, in order, as soon as no
/// later summary can change it; a 422 for an answer over the statistics
/// budget. Summaries are read a piece at a time (`SeriesFold::next_read`:
/// fewer of wide ones), so memory holds one read's summaries and the
/// unfinished buckets, not the range. The caller holds a heavy read's
/// slot (`crate::reads`).
async fn fold_series(
    state: &AppState,
    query: &SeriesQuery,
    scope: &Scope,
    mut each: impl FnMut(Bucket),
) -> Result<(), ApiError> {
    let (tier, _) = query.reads();
    let mut fold = SeriesFold::new(query);
    let mut at = i64::MIN;
    while let Some(range) = fold.next_read(at) {
        at = range.end;
        for (index, summary) in state.views.summaries(scope, tier, range).await? {
            fold.push(index, &summary).map_err(series_error)?;
        }
        fold.take_finished(at).into_iter().for_each(&mut each);
    }
    fold.finish().into_iter().for_each(each);
    Ok(())
}

/// `query`'s aggregate, unless the range is finer than kept (422) or the
/// source was never aggregated (404).
async fn check_series(state: &AppState, query: &SeriesQuery) -> Result<Scope, ApiError> {
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
    Ok(scope)
}

/// The buckets of `query`, all at once ([`check_series`], then
/// [`fold_series`]).
pub async fn buckets(state: &AppState, query: &SeriesQuery) -> Result<Vec<Bucket>, ApiError> {
    let scope = check_series(state, query).await?;
    let mut all = Vec::new();
    fold_series(state, query, &scope, |bucket| all.push(bucket)).await?;
    Ok(all)
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
    // Media types with their q-values only: a parameter such as
    // `charset=utf-8` does not make `text/csv` another type here.
    let ranges: Vec<String> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_owned();
            match parts.find(|p| p.to_ascii_lowercase().starts_with("q=")) {
                Some(q) => format!("{media};{q}"),
                None => media,
            }
        })
        .filter(|range| !range.is_empty())
        .collect();
    let Ok(accept) = ranges.join(", ").parse::<headers_accept::Accept>() else {
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
