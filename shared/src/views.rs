//! The materialized rows `expose` and `sources` serve, rendered as the
//! contract's `data` documents. The aggregator renders them after each
//! batch; the read path sends them as they are, so a read costs one row
//! lookup and no arithmetic.

use crate::domain::expose::{ExposeKind, Statistic};
use crate::domain::fold::{EventRef, ScopeState};
use crate::domain::series::{Bucket, Development, SeriesQuery};
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

impl StatsDoc {
    fn of(m: &Moments) -> Self {
        StatsDoc {
            count: m.count,
            mean: m.mean(),
            std: m.sample_std(),
            min: m.min(),
            max: m.max(),
        }
    }
}

#[derive(Serialize)]
struct SeriesHead<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    name: Option<&'a str>,
    interval: &'static str,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct BucketDoc<'a> {
    start: String,
    count: u64,
    fields: FieldsDoc<'a>,
}

struct FieldsDoc<'a>(&'a BTreeMap<String, Moments>);

impl Serialize for FieldsDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(path, m)| (path, StatsDoc::of(m))))
    }
}

/// A `series` answer's `data` written bucket by bucket as the fold
/// finishes them (so that a bucket is dropped once written): `{"type"?,
/// "name", "interval", "from", "to", "buckets": [...]}`.
#[derive(Debug)]
pub struct SeriesJson {
    buckets: usize,
}

impl SeriesJson {
    /// Writes the document's head to `out`.
    pub fn begin(out: &mut Vec<u8>, query: &SeriesQuery, development: Option<Development>) -> Self {
        let head = SeriesHead {
            kind: development.map(Development::as_str),
            name: query.name.as_deref(),
            interval: query.interval.as_str(),
            from: format_rfc3339(query.from),
            to: format_rfc3339(query.to),
        };
        let start = out.len();
        if serde_json::to_writer(&mut *out, &head).is_ok() {
            out.pop(); // the head's closing brace
        } else {
            out.truncate(start);
            out.push(b'{');
        }
        out.extend_from_slice(b",\"buckets\":[");
        SeriesJson { buckets: 0 }
    }

    /// Writes the next bucket.
    pub fn bucket(&mut self, out: &mut Vec<u8>, bucket: &Bucket) {
        if self.buckets > 0 {
            out.push(b',');
        }
        self.buckets += 1;
        let doc = BucketDoc {
            start: format_rfc3339(bucket.start),
            count: bucket.summary.events,
            fields: FieldsDoc(&bucket.summary.fields),
        };
        let start = out.len();
        if serde_json::to_writer(&mut *out, &doc).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"null");
        }
    }

    /// Closes the document.
    pub fn end(self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"]}");
    }
}

/// A `series` answer's `data` (with `type` for a development view).
pub fn render_series(
    query: &SeriesQuery,
    buckets: &[Bucket],
    development: Option<Development>,
) -> String {
    let mut out = Vec::new();
    let mut doc = SeriesJson::begin(&mut out, query, development);
    for bucket in buckets {
        doc.bucket(&mut out, bucket);
    }
    doc.end(&mut out);
    String::from_utf8(out).unwrap_or_else(|_| String::from("null"))
}

/// A text cell as a spreadsheet reads it as text, never as a formula
/// (OWASP, "CSV Injection"): a cell starting with `=`, `+`, `-`, `@`, a
/// tab or a carriage return gets a leading `'`. Only text cells (source
/// names, field paths) pass here; numbers are written as numbers.
pub fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A `series` answer as CSV, written bucket by bucket: a header, then
/// one row per bucket and field (`start,name,field,count,mean,std,min,max`;
/// `name` empty for all events; numbers as in the JSON answer, a null as
/// an empty cell); a bucket whose events carry none of the fields asked
/// for is one row with an empty `field` and the bucket's event count.
/// Names and paths that a spreadsheet would take for a formula are
/// escaped ([`spreadsheet_safe`]).
#[derive(Debug)]
pub struct SeriesCsv {
    out: csv::Writer<Vec<u8>>,
    name: String,
}

impl SeriesCsv {
    /// The header row.
    pub fn begin(query: &SeriesQuery) -> Self {
        let mut out = csv::Writer::from_writer(Vec::new());
        let _ = out.write_record([
            "start", "name", "field", "count", "mean", "std", "min", "max",
        ]);
        SeriesCsv {
            out,
            name: spreadsheet_safe(query.name.as_deref().unwrap_or("")).into_owned(),
        }
    }

    /// The next bucket's rows.
    pub fn bucket(&mut self, bucket: &Bucket) {
        let number = |v: Option<f64>| {
            v.map_or_else(String::new, |v| {
                serde_json::to_string(&v).unwrap_or_default()
            })
        };
        let start = format_rfc3339(bucket.start);
        let name = self.name.as_str();
        if bucket.summary.fields.is_empty() {
            // Events, none with a field asked for: the count alone.
            let count = bucket.summary.events.to_string();
            let _ = self
                .out
                .write_record([start.as_str(), name, "", &count, "", "", "", ""]);
        }
        for (path, m) in &bucket.summary.fields {
            let _ = self.out.write_record([
                start.as_str(),
                name,
                &spreadsheet_safe(path),
                &m.count.to_string(),
                &number(m.mean()),
                &number(m.sample_std()),
                &number(m.min()),
                &number(m.max()),
            ]);
        }
    }

    /// About how much CSV text is held.
    pub fn len(&self) -> usize {
        self.out.get_ref().len()
    }

    /// Whether no text is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CSV text written so far, taken out.
    pub fn take_text(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.out, csv::Writer::from_writer(Vec::new()))
            .into_inner()
            .unwrap_or_default()
    }

    /// The rest of the CSV text.
    pub fn end(self) -> Vec<u8> {
        self.out.into_inner().unwrap_or_default()
    }
}

/// A `series` answer as CSV ([`SeriesCsv`]).
pub fn render_series_csv(query: &SeriesQuery, buckets: &[Bucket]) -> String {
    let mut csv = SeriesCsv::begin(query);
    for bucket in buckets {
        csv.bucket(bucket);
    }
    String::from_utf8(csv.end()).unwrap_or_default()
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
        Statistic::All => window_doc(kind, end, summary, Some(fields_dropped), StatsDoc::of),
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

/// A stats row as [`derive_window`] reads it back.
#[derive(serde::Deserialize)]
struct StatsDocIn {
    window_start: String,
    window_end: String,
    count: u64,
    fields: BTreeMap<String, StatsFieldIn>,
}

#[derive(serde::Deserialize)]
struct StatsFieldIn {
    count: u64,
    mean: Option<f64>,
    std: Option<f64>,
}

/// The v1 row `kind` (an average or a deviation) from the stats row of
/// the same window (`kind.stats_row()`), exactly as [`render_window`]
/// renders it: a store that keeps only the stats rows answers the v1
/// kinds from them. `None` if `stats` is not a stats row.
pub fn derive_window(kind: ExposeKind, stats: &str) -> Option<String> {
    let parsed: StatsDocIn = serde_json::from_str(stats).ok()?;
    let value = match kind.statistic()? {
        Statistic::Mean => |f: &StatsFieldIn| f.mean,
        Statistic::SampleStd => |f: &StatsFieldIn| f.std,
        Statistic::All => return None,
    };
    serde_json::to_string(&WindowDoc {
        kind: kind.as_str(),
        window_start: parsed.window_start,
        window_end: parsed.window_end,
        count: parsed.count,
        fields: parsed
            .fields
            .iter()
            .map(|(path, f)| {
                let doc = ValueDoc {
                    count: f.count,
                    value: value(f),
                };
                (path.as_str(), doc)
            })
            .collect(),
        fields_dropped: None,
    })
    .ok()
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
