//! `/grafana`: the JSON data source protocol of the simPod "JSON" plugin
//! for Grafana, over the same series as `POST /source/series`. Role
//! `read` (`x-api-key`, set as a custom header in the data source). Its
//! answers are the plugin's own shapes, bare JSON arrays: the one
//! exception to the envelope (errors stay in the envelope).
//!
//! - `GET /grafana`: the plugin's connection test (200).
//! - `POST /grafana/metrics`: one metric per (source, field) pair, all
//!   events included, with a `statistic` payload (mean by default; count,
//!   std, min, max). A metric's value is the JSON array `[source, field]`
//!   (`null` for all events): names of any characters stay unambiguous.
//! - `POST /grafana/metric-payload-options`: the statistics.
//! - `POST /grafana/query`: per target, `[value, epoch_ms]` points, one per
//!   bucket holding the field, at the bucket's start; the interval is the
//!   finest kept one whose buckets fit `maxDataPoints`.

use crate::auth::authorize;
use crate::error::{envelope, ApiError};
use crate::openapi::ErrorResponse;
use crate::routes::series::buckets;
use crate::routes::{now_ms, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use sygno_shared::domain::auth::{KeyId, Role};
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::Scope;
use sygno_shared::domain::series::{finest_interval, Bucket, SeriesQuery, MAX_SERIES_CELLS};
use sygno_shared::domain::stats::Moments;
use sygno_shared::domain::time::parse_rfc3339;
use sygno_shared::domain::write::{check_syntax, classify, WriteError};

/// Largest `/grafana` request body (Grafana sends its whole query
/// request, panel and scoped variables included).
const MAX_GRAFANA_BODY_BYTES: usize = 256 * 1024;
/// Most metrics `/grafana/metrics` lists.
pub const MAX_METRICS: usize = 10_000;
/// Most aggregates whose fields `/grafana/metrics` lists (a row read each).
pub const MAX_METRIC_SOURCES: usize = 1_000;
/// Most targets one `/grafana/query` answers.
const MAX_TARGETS: usize = 100;
const STATISTICS: [&str; 5] = ["mean", "count", "std", "min", "max"];

/// A metric's label: its source (or all events) and field.
fn label(name: Option<&str>, field: &str) -> String {
    format!("{} · {field}", name.unwrap_or("all events"))
}

/// The statistics a point can be, as the plugin lists options.
fn statistic_options() -> Vec<Value> {
    STATISTICS
        .iter()
        .map(|s| json!({"label": s, "value": s}))
        .collect()
}

/// A plugin answer: a bare JSON array.
fn bare(value: &Value) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The request's body, sent with `reader`'s key, as `T`.
async fn body_of<T: for<'de> Deserialize<'de>>(
    state: &AppState,
    reader: &KeyId,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = state
        .bodies
        .read(reader, headers, body, MAX_GRAFANA_BODY_BYTES)
        .await?;
    // The plugin sends some requests without a body: read as `{}`.
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    // Syntax first (400); then what serde says of the shape, which names
    // the field (a missing `range`).
    check_syntax(text)?;
    serde_json::from_slice(text).map_err(|e| {
        ApiError::from(match classify(&e, text, "body must be a JSON object") {
            WriteError::Invalid(_) => WriteError::Invalid(format!("body: {e}")),
            other => other,
        })
    })
}

/// The Grafana data source's connection test.
#[utoipa::path(get, path = "/grafana", tag = "grafana",
    responses(
        (status = 200, description = "Ready", body = crate::openapi::HealthResponse),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 403, description = "Key lacks the read role", body = ErrorResponse),
    ),
    security(("api_key" = [])))]
pub async fn health(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.keys, &headers, Role::Read)?;
    Ok(envelope(
        StatusCode::OK,
        "Sygno's Grafana data source",
        "null",
    ))
}

/// `POST /grafana/metrics`: every (source, field) pair of the 7-day
/// windows, all events first, at most [`MAX_METRICS`].
#[utoipa::path(post, path = "/grafana/metrics", tag = "grafana",
    request_body(content = Object, description = "The plugin's `{metric?, payload?}` (ignored)"),
    responses(
        (status = 200, description = "`[{label, value, payloads}]`, value `[source or null, field]` as JSON text", body = [Object]),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
    ),
    security(("api_key" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reader = authorize(&state.keys, &headers, Role::Read)?;
    let _: Value = body_of(&state, &reader, &headers, body).await?;
    let mut scopes = vec![Scope::All];
    let sources = state
        .views
        .sources_page(None, MAX_METRIC_SOURCES - 1)
        .await?;
    scopes.extend(sources.into_iter().map(|(name, _)| Scope::Source(name)));
    let statistic = json!({
        "label": "Statistic", "name": "statistic", "type": "select",
        "placeholder": "mean",
        "options": statistic_options(),
    });
    // The 7-day rows, read 16 at a time, of at most MAX_METRIC_SOURCES
    // aggregates (all events first, then sources by name).
    scopes.truncate(MAX_METRIC_SOURCES);
    let views = &state.views;
    let rows: Vec<(Scope, Option<std::sync::Arc<str>>)> = futures::stream::iter(scopes)
        .map(|scope| async move {
            let row = views.view(&scope, ExposeKind::WeekStats).await;
            row.map(|row| (scope, row))
        })
        .buffered(16)
        .try_collect()
        .await?;
    let mut metrics = Vec::new();
    'scopes: for (scope, doc) in rows {
        let Some(doc) = doc else {
            continue;
        };
        let row: Value = serde_json::from_str(&doc).unwrap_or(Value::Null);
        let Some(fields) = row["fields"].as_object() else {
            continue;
        };
        for field in fields.keys() {
            if metrics.len() == MAX_METRICS {
                break 'scopes;
            }
            metrics.push(json!({
                "label": label(scope.name(), field),
                "value": json!([scope.name(), field]).to_string(),
                "payloads": [statistic.clone()],
            }));
        }
    }
    Ok(bare(&Value::Array(metrics)))
}

/// `POST /grafana/metric-payload-options`: the statistics a point can be.
#[utoipa::path(post, path = "/grafana/metric-payload-options", tag = "grafana",
    request_body(content = Object, description = "`{metric, payload, name}`"),
    responses(
        (status = 200, description = "`[{label, value}]`: for `name` `statistic`, mean, count, std, min, max", body = [Object]),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
    ),
    security(("api_key" = [])))]
pub async fn payload_options(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reader = authorize(&state.keys, &headers, Role::Read)?;
    let request: Value = body_of(&state, &reader, &headers, body).await?;
    let options = if request["name"] == "statistic" {
        statistic_options()
    } else {
        Vec::new()
    };
    Ok(bare(&Value::Array(options)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryRequest {
    range: Range,
    max_data_points: Option<i64>,
    #[serde(default)]
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Range {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    target: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    hide: bool,
}

/// `POST /grafana/query`: time series of `[value, epoch_ms]` points.
#[utoipa::path(post, path = "/grafana/query", tag = "grafana",
    request_body(content = Object, description = "Grafana's query request: `range.from`, `range.to`, `maxDataPoints`, `targets[].target` (a metric value), `targets[].payload.statistic`"),
    responses(
        (status = 200, description = "`[{target, datapoints: [[value, epoch_ms], ...]}]`", body = [Object]),
        (status = 401, description = "Missing or unknown key", body = ErrorResponse),
        (status = 422, description = "A bad range, target or statistic (`invalid_body`), or more than 1,000,000 points in all (`too_many_statistics`)", body = ErrorResponse),
        (status = 503, description = "Store unavailable (`unavailable`), or too many large reads at once (`busy`, with `Retry-After`)", body = ErrorResponse),
    ),
    security(("api_key" = [])))]
pub async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reader = authorize(&state.keys, &headers, Role::Read)?;
    let request: QueryRequest = body_of(&state, &reader, &headers, body).await?;
    let time = |text: &str, name: &str| {
        parse_rfc3339(text).ok_or_else(|| {
            ApiError::invalid_body(format!("`range.{name}` must be an RFC 3339 timestamp"))
        })
    };
    let (from, to) = (
        time(&request.range.from, "from")?,
        time(&request.range.to, "to")?,
    );
    let targets: Vec<&Target> = request
        .targets
        .iter()
        .filter(|t| !t.hide && t.target.as_deref().is_some_and(|t| !t.is_empty()))
        .collect();
    if targets.len() > MAX_TARGETS {
        return Err(ApiError::invalid_body(format!(
            "{} targets; at most {MAX_TARGETS}",
            targets.len()
        )));
    }
    let now = now_ms();
    let max_points = request.max_data_points.unwrap_or(1000);
    let interval = finest_interval(from, to, max_points, &state.retention, now);
    // Each target's metric and statistic, then one fold per aggregate
    // for all of its targets' fields (100 targets over one source read
    // its summaries once).
    let mut wanted: Vec<(Option<String>, String, String)> = Vec::with_capacity(targets.len());
    let mut fields_of: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
    for target in targets {
        let text = target.target.as_deref().unwrap_or_default();
        let (name, field) = parse_metric(text)?;
        let statistic = match &target.payload["statistic"] {
            Value::String(s) if STATISTICS.contains(&s.as_str()) => s.clone(),
            Value::Null => "mean".to_owned(),
            Value::String(s) if s.is_empty() => "mean".to_owned(),
            other => {
                return Err(ApiError::invalid_body(format!(
                    "`payload.statistic` must be one of {}, not {other}",
                    STATISTICS.join(", ")
                )))
            }
        };
        fields_of
            .entry(name.clone())
            .or_default()
            .insert(field.clone());
        wanted.push((name, field, statistic));
    }
    let read = state.reads.begin("grafana").await?;
    let mut points = 0;
    let mut folded: BTreeMap<Option<String>, Vec<Bucket>> = BTreeMap::new();
    for (name, fields) in fields_of {
        let query = SeriesQuery::new(name.clone(), Some(fields), interval, from, to)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code, e.message))?;
        let buckets = match buckets(&state, &query).await {
            Ok(buckets) => buckets,
            // A source never written plots nothing.
            Err(e) if e.code == "unknown_source" => Vec::new(),
            Err(e) => return Err(e),
        };
        points += buckets
            .iter()
            .map(|b| b.summary.fields.len())
            .sum::<usize>();
        if points > MAX_SERIES_CELLS {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_statistics",
                format!("the targets' points would be more than {MAX_SERIES_CELLS}: ask for fewer targets, a shorter range or fewer maxDataPoints"),
            ));
        }
        folded.insert(name, buckets);
    }
    let mut answer = Vec::with_capacity(wanted.len());
    for (name, field, statistic) in wanted {
        let points: Vec<Value> = folded
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|b| {
                let m = b.summary.fields.get(&field)?;
                Some(json!([point(m, &statistic)?, b.start]))
            })
            .collect();
        let target = format!("{} ({statistic})", label(name.as_deref(), &field));
        answer.push(json!({"target": target, "datapoints": points}));
    }
    Ok(read.hold_until_sent(bare(&Value::Array(answer))))
}

/// A metric's value, `[source or null, field]`.
fn parse_metric(text: &str) -> Result<(Option<String>, String), ApiError> {
    let bad = || {
        ApiError::invalid_body(format!(
            "a target is a metric from /grafana/metrics, [source or null, field]; not {text}"
        ))
    };
    match serde_json::from_str::<Value>(text).map_err(|_| bad())? {
        Value::Array(pair) => match pair.as_slice() {
            [Value::Null, Value::String(field)] => Ok((None, field.clone())),
            [Value::String(name), Value::String(field)] if !name.is_empty() => {
                Ok((Some(name.clone()), field.clone()))
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn point(m: &Moments, statistic: &str) -> Option<f64> {
    match statistic {
        "count" => Some(m.count as f64),
        "std" => m.sample_std(),
        "min" => m.min(),
        "max" => m.max(),
        _ => m.mean(),
    }
}
