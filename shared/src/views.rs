//! The materialized rows `expose` serves, rendered as the contract's `data`
//! documents. The aggregator renders them after each batch; the read path
//! sends them as they are, so a read costs one row lookup and no arithmetic.

use crate::domain::aggregates::Latest;
use crate::domain::expose::{ExposeKind, Statistic};
use crate::domain::series::Summary;
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
struct WindowDoc<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    window_start: String,
    window_end: String,
    count: u64,
    fields: BTreeMap<&'a str, FieldDoc>,
}

#[derive(Serialize)]
struct FieldDoc {
    count: u64,
    /// Null below the statistic's minimum count (and for a mean that
    /// overflowed f64, which JSON cannot carry).
    value: Option<f64>,
}

/// The `latest` row.
pub fn render_latest(latest: &Latest) -> String {
    let fallback;
    let data: &RawValue = match serde_json::from_str(&latest.data) {
        Ok(raw) => raw,
        Err(_) => {
            fallback = RawValue::NULL;
            fallback
        }
    };
    let doc = LatestDoc {
        kind: ExposeKind::Latest.as_str(),
        event_id: &latest.event_id,
        event_time: format_rfc3339(latest.event_time),
        name: &latest.name,
        data,
    };
    serde_json::to_string(&doc).unwrap_or_else(|_| String::from("null"))
}

/// A window row: `kind` must be a window kind; `summary` covers `[end - span, end)`.
pub fn render_window(kind: ExposeKind, end: Millis, summary: &Summary) -> String {
    let span = kind.span().unwrap_or_default();
    let statistic = kind.statistic().unwrap_or(Statistic::Mean);
    let fields = summary
        .fields
        .iter()
        .map(|(path, m)| {
            let value = match statistic {
                Statistic::Mean => m.mean(),
                Statistic::SampleStd => m.sample_std(),
            };
            (
                path.as_str(),
                FieldDoc {
                    count: m.count,
                    value: value.filter(|v| v.is_finite()),
                },
            )
        })
        .collect();
    let doc = WindowDoc {
        kind: kind.as_str(),
        window_start: format_rfc3339(end - span),
        window_end: format_rfc3339(end),
        count: summary.events,
        fields,
    };
    serde_json::to_string(&doc).unwrap_or_else(|_| String::from("null"))
}

#[cfg(test)]
mod tests;
