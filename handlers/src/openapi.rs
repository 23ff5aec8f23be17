//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the schema types below. The schema types describe the
//! wire format only; handlers validate with the domain's parsers.

use crate::routes::{EXPOSE, PREFIXES, SERIES, SOURCES, WRITE_BATCH, WRITE_RAW};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// A raw event. Other top-level fields are refused (422).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteRawRequest {
    /// The event: any JSON object, nested at most 32 levels. Every numeric
    /// leaf is a field (`{"a": {"b": 1}}` gives `a.b`). A climate
    /// computer's table (`rows` starting with `["Variable", "Value"]`) gives
    /// one field per row, and its `ts` and `name` are the event's.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// RFC 3339 (e.g. `2021-05-01T12:07:50+02:00`); at most 5 minutes in
    /// the future. Default: receipt time.
    #[schema(
        format = DateTime,
        pattern = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
    )]
    pub event_time: Option<String>,
    /// 1 to 128 characters. Default `raw`.
    #[schema(min_length = 1, max_length = 128)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WriteRawData {
    pub event_id: String,
    /// RFC 3339 UTC, millisecond precision.
    #[schema(format = DateTime)]
    pub event_time: String,
    /// True when the Idempotency-Key was seen before: nothing was appended.
    pub duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WriteRawResponse {
    pub status: u16,
    pub description: String,
    pub data: WriteRawData,
}

/// 1 to 1,000 events, the body at most 1 MiB. Other top-level fields are
/// refused (422).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteBatchRequest {
    /// Each checked as a `write_raw` body is.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<WriteRawRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WriteBatchData {
    /// One per event, in request order.
    pub events: Vec<WriteRawData>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WriteBatchResponse {
    pub status: u16,
    pub description: String,
    pub data: WriteBatchData,
}

/// The row to read. `24_average` is accepted as `24h_average`.
#[derive(Debug, Serialize, ToSchema)]
pub enum ExposeType {
    #[serde(rename = "latest")]
    Latest,
    #[serde(rename = "24h_average")]
    DayAverage,
    #[serde(rename = "24_average")]
    DayAverageLegacy,
    #[serde(rename = "24h_devt")]
    DayDevt,
    #[serde(rename = "7d_average")]
    WeekAverage,
    #[serde(rename = "7d_devt")]
    WeekDevt,
    #[serde(rename = "24h_stats")]
    DayStats,
    #[serde(rename = "7d_stats")]
    WeekStats,
    /// 15-minute buckets of the last 24 hours (a series document).
    #[serde(rename = "24h_development")]
    DayDevelopment,
    /// 1-day buckets of the last 7 days (a series document).
    #[serde(rename = "7d_development")]
    WeekDevelopment,
}

/// A series request. Other fields are refused (422).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesRequest {
    /// A source; omitted: all events.
    #[schema(min_length = 1, max_length = 128)]
    pub name: Option<String>,
    /// The fields to answer (at most 100); omitted: all. Unknown fields are
    /// absent from the answer, not an error.
    #[schema(max_items = 100)]
    pub fields: Option<Vec<String>>,
    pub interval: SeriesInterval,
    /// Rounded down to the interval (UTC).
    #[schema(format = DateTime)]
    pub from: String,
    /// Rounded up to the interval; at most 10,000 buckets.
    #[schema(format = DateTime)]
    pub to: String,
}

/// Bucket width. 1m, 5m and 15m fold minute summaries (kept 35 days by
/// default); 1h, 6h and 1d fold hour summaries (kept as long as the log).
#[derive(Debug, Serialize, ToSchema)]
pub enum SeriesInterval {
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "1d")]
    D1,
}

/// One bucket with events.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesBucket {
    #[schema(format = DateTime)]
    pub start: String,
    /// All the bucket's events, with or without the fields asked for.
    pub count: u64,
    pub fields: BTreeMap<String, FieldStats>,
}

/// A series (also the development `expose` types, with `type`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesData {
    /// Development views only.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The source; null for all events.
    pub name: Option<String>,
    pub interval: SeriesInterval,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// Buckets without events are left out.
    pub buckets: Vec<SeriesBucket>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesResponse {
    pub status: u16,
    pub description: String,
    pub data: SeriesData,
}

/// Other fields are ignored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExposeRequest {
    #[serde(rename = "type")]
    pub kind: ExposeType,
    /// A source: that source's events only. Omitted: all events.
    #[schema(min_length = 1, max_length = 128)]
    pub name: Option<String>,
}

/// The event with the greatest `event_time`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestData {
    #[serde(rename = "type")]
    pub kind: String,
    pub event_id: String,
    #[schema(format = DateTime)]
    pub event_time: String,
    pub name: String,
    /// As the writer sent it.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One field's statistic over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldStat {
    /// Events in the window that have this field.
    pub count: u64,
    /// Mean (`_average`) or sample standard deviation (`_devt`); null for
    /// a deviation of fewer than 2 values.
    pub value: Option<f64>,
}

/// Statistics over `[window_start, window_end)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowData {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(format = DateTime)]
    pub window_start: String,
    /// Within 60 s of the request.
    #[schema(format = DateTime)]
    pub window_end: String,
    /// Events in the window.
    pub count: u64,
    pub fields: BTreeMap<String, FieldStat>,
}

/// Every statistic of one field over the window (`_stats` types).
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldStats {
    /// Events in the window that have this field.
    pub count: u64,
    pub mean: Option<f64>,
    /// Sample standard deviation; null below 2 values.
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Every statistic over `[window_start, window_end)` (`24h_stats`,
/// `7d_stats`).
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsData {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(format = DateTime)]
    pub window_start: String,
    #[schema(format = DateTime)]
    pub window_end: String,
    pub count: u64,
    pub fields: BTreeMap<String, FieldStats>,
    /// Distinct fields in the aggregate's 7-day window not aggregated
    /// because of the field limit (`SYGNO_MAX_FIELDS`).
    pub fields_dropped: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExposeData {
    Latest(LatestData),
    Window(WindowData),
    Stats(StatsData),
    Development(SeriesData),
}

/// One source.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceEntry {
    pub name: String,
    /// The source's events in the log (aggregated so far).
    pub events: u64,
    #[schema(format = DateTime)]
    pub first_event_time: Option<String>,
    #[schema(format = DateTime)]
    pub last_event_time: Option<String>,
    /// Distinct numeric fields aggregated in its 7-day window.
    pub fields: u64,
    /// Distinct fields in its 7-day window not aggregated because of the
    /// field limit.
    pub fields_dropped: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourcesData {
    /// Sorted by name: at most `limit` of them, after `cursor`.
    pub sources: Vec<SourceEntry>,
    /// The `cursor` of the next page (the last name of this one); null
    /// on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourcesResponse {
    pub status: u16,
    pub description: String,
    pub data: SourcesData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExposeResponse {
    pub status: u16,
    pub description: String,
    pub data: ExposeData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorData {
    /// Stable code: unauthorized, forbidden, payload_too_large,
    /// unsupported_media_type, invalid_json, invalid_body,
    /// too_many_fields, field_path_too_long, field_collision, not_found,
    /// unknown_source, method_not_allowed, rebuild_running, unavailable,
    /// too_many_events, too_many_sources, too_many_statistics, too_many_buckets,
    /// resolution_unavailable, invalid_query, busy, request_timeout,
    /// invalid_request, headers_too_large, uri_too_long,
    /// internal.
    pub error: String,
    /// `write_batch`: the index of the first bad event.
    pub index: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub status: u16,
    /// What was wrong, naming the field.
    pub description: String,
    pub data: ErrorData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthData {
    pub store: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    pub status: u16,
    pub description: String,
    pub data: HealthData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildResponse {
    pub status: u16,
    pub description: String,
    pub data: sygno_aggregator::RebuildStatus,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sygno",
        description = "Ingests raw JSON events and serves live statistics over them. Every body, success or error, is {status, description, data}."
    ),
    paths(
        crate::routes::write_raw::write_raw,
        crate::routes::write_batch::write_batch,
        crate::routes::expose::expose,
        crate::routes::sources::list_sources,
        crate::routes::series::series,
        crate::routes::health::health,
        crate::routes::prometheus::metrics,
        crate::routes::grafana::health,
        crate::routes::grafana::metrics,
        crate::routes::grafana::payload_options,
        crate::routes::grafana::query,
        crate::routes::admin::start_rebuild,
        crate::routes::admin::rebuild_status,
    ),
    modifiers(&Additions)
)]
struct ApiDoc;

/// Adds the key scheme, and the original service's `/sygno/*` aliases.
struct Additions;

impl Modify for Additions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        let [canonical, legacy] = PREFIXES;
        for route in [WRITE_RAW, WRITE_BATCH, EXPOSE, SOURCES, SERIES] {
            let Some(item) = openapi.paths.paths.get(&format!("{canonical}{route}")) else {
                continue;
            };
            let mut alias = item.clone();
            for op in [alias.post.as_mut(), alias.get.as_mut()]
                .into_iter()
                .flatten()
            {
                op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}_legacy"));
                op.summary = Some(format!(
                    "Alias of {canonical}{route} (the original service's path)"
                ));
            }
            openapi
                .paths
                .paths
                .insert(format!("{legacy}{route}"), alias);
        }
    }
}

/// The OpenAPI document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
