//! The materialized rows `expose` and `sources` serve, rendered as the
//! contract's `data` documents. The aggregator renders them after each
//! batch; the read path sends them as they are, so a read costs one row
//! lookup and no arithmetic.

use crate::domain::expose::{ExposeKind, Statistic};
use crate::domain::fold::{EventRef, ScopeState};
use crate::domain::stats::Moments;
use crate::domain::summary::Summary;
use crate::domain::time::{format_rfc3339, Millis};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct LatestDoc<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event_id: &'a str,
    event_time: String,
    name: &'a str,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct WindowDoc<'a, F> {
    #[serde(rename = "type")]
    kind: &'static str,
    window_start: String,
    window_end: String,
    count: u64,
    fields: BTreeMap<&'a str, F>,
    /// v2 documents only.
    #[serde(skip_serializing_if = "Option::is_none")]
    fields_dropped: Option<usize>,
}

#[derive(Serialize)]
struct ValueDoc {
    count: u64,
    /// Null below the statistic's minimum count.
    value: Option<f64>,
}

#[derive(Serialize)]
struct StatsDoc {
    count: u64,
    mean: Option<f64>,
    std: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Serialize)]
struct SourceDoc<'a> {
    name: &'a str,
    events: u64,
    first_event_time: Option<String>,
    last_event_time: Option<String>,
    fields: usize,
    fields_dropped: usize,
}

/// The `latest` row of an event.
pub fn render_latest(event: &EventRef<'_>) -> String {
    let fallback;
    let data: &RawValue = match serde_json::from_str(event.data) {
        Ok(raw) => raw,
        Err(_) => {
            fallback = RawValue::NULL;
            fallback
        }
    };
    let doc = LatestDoc {
        kind: ExposeKind::Latest.as_str(),
        event_id: event.event_id,
        event_time: format_rfc3339(event.event_time),
        name: event.name,
        data,
    };
    serde_json::to_string(&doc).unwrap_or_else(|_| String::from("null"))
}

/// A window row: `kind` must be a window kind; `summary` covers
/// `[end - span, end)`; `fields_dropped` is reported by the v2 kinds.
pub fn render_window(
    kind: ExposeKind,
    end: Millis,
    summary: &Summary,
    fields_dropped: usize,
) -> String {
    let doc = match kind.statistic().unwrap_or(Statistic::Mean) {
        Statistic::All => window_doc(kind, end, summary, Some(fields_dropped), |m| StatsDoc {
            count: m.count,
            mean: m.mean(),
            std: m.sample_std(),
            min: m.min(),
            max: m.max(),
        }),
        Statistic::SampleStd => window_doc(kind, end, summary, None, |m| ValueDoc {
            count: m.count,
            value: m.sample_std(),
        }),
        Statistic::Mean => window_doc(kind, end, summary, None, |m| ValueDoc {
            count: m.count,
            value: m.mean(),
        }),
    };
    doc.unwrap_or_else(|_| String::from("null"))
}

fn window_doc<F: Serialize>(
    kind: ExposeKind,
    end: Millis,
    summary: &Summary,
    fields_dropped: Option<usize>,
    field: impl Fn(&Moments) -> F,
) -> serde_json::Result<String> {
    let span = kind.span().unwrap_or_default();
    serde_json::to_string(&WindowDoc {
        kind: kind.as_str(),
        window_start: format_rfc3339(end - span),
        window_end: format_rfc3339(end),
        count: summary.events,
        fields: summary
            .fields
            .iter()
            .map(|(path, m)| (path.as_str(), field(m)))
            .collect(),
        fields_dropped,
    })
}

/// Every window row of an aggregate: `windows` holds the 24 h and the 7 d
/// summaries ending at `end`.
pub fn render_windows(
    end: Millis,
    windows: &[Summary; 2],
    fields_dropped: usize,
) -> Vec<(ExposeKind, String)> {
    let mut rows = Vec::with_capacity(6);
    for ((_, kinds), summary) in ExposeKind::WINDOWS.iter().zip(windows) {
        for kind in kinds {
            rows.push((*kind, render_window(*kind, end, summary, fields_dropped)));
        }
    }
    rows
}

/// A source's entry in `GET /source/sources`; `week` is its 7-day window,
/// ending at `end`.
pub fn render_source(name: &str, state: &ScopeState, week: &Summary, end: Millis) -> String {
    let doc = SourceDoc {
        name,
        events: state.events,
        first_event_time: state.first_event_time.map(format_rfc3339),
        last_event_time: state.last_event_time.map(format_rfc3339),
        fields: week.fields.len(),
        fields_dropped: state.fields.dropped_before(end),
    };
    serde_json::to_string(&doc).unwrap_or_else(|_| String::from("null"))
}

#[cfg(test)]
mod tests;
