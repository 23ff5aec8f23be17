//! The exact reference: what a window row must say, computed with rational
//! arithmetic on the same f64 inputs.

use crate::helpers::{parse_ms, Api};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{ToPrimitive, Zero};
use serde_json::Value;
use std::collections::BTreeMap;

/// An acknowledged event: its time as the server stored it, its fields,
/// and its source.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub(crate) event_time: i64,
    pub(crate) fields: BTreeMap<String, f64>,
    pub(crate) name: String,
}

fn exact_stats(values: &[f64]) -> (f64, Option<f64>) {
    let xs: Vec<BigRational> = values
        .iter()
        .map(|v| BigRational::from_float(*v).expect("finite"))
        .collect();
    let n = BigRational::from_integer(BigInt::from(xs.len()));
    let mean = xs.iter().fold(BigRational::zero(), |a, x| a + x) / &n;
    let ss = xs
        .iter()
        .fold(BigRational::zero(), |a, x| a + (x - &mean) * (x - &mean));
    let std = (xs.len() >= 2).then(|| {
        (ss / (n - BigRational::from_integer(BigInt::from(1))))
            .to_f64()
            .expect("f64")
            .sqrt()
    });
    (mean.to_f64().expect("f64"), std)
}

/// Events in `[start, end)`.
pub(crate) fn in_window(events: &[Sent], start: i64, end: i64) -> Vec<&Sent> {
    events
        .iter()
        .filter(|e| e.event_time >= start && e.event_time < end)
        .collect()
}

/// What a window row reports per field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stat {
    Mean,
    Devt,
    /// `count`, `mean`, `std`, `min`, `max` (the `_stats` types).
    All,
}

/// Every window type: name, span, what it reports.
pub(crate) const WINDOW_TYPES: [(&str, i64, Stat); 6] = [
    ("24h_average", 86_400_000, Stat::Mean),
    ("24h_devt", 86_400_000, Stat::Devt),
    ("24h_stats", 86_400_000, Stat::All),
    ("7d_average", 604_800_000, Stat::Mean),
    ("7d_devt", 604_800_000, Stat::Devt),
    ("7d_stats", 604_800_000, Stat::All),
];

#[track_caller]
fn check_close(name: &str, got: &Value, want: Option<f64>, tolerance: f64) {
    match (got.as_f64(), want) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= tolerance, "{name}: {g} vs exact {w}"),
        (None, None) => assert!(got.is_null(), "{name}: {got}"),
        other => panic!("{name}: value presence differs: {other:?}"),
    }
}

/// Asserts a window row against the exact statistics of `events`.
#[track_caller]
pub(crate) fn check_window(row: &Value, events: &[Sent], span_ms: i64, devt: bool) {
    check_window_stat(
        row,
        events,
        span_ms,
        if devt { Stat::Devt } else { Stat::Mean },
    );
}

/// Asserts a window row of any type against the exact statistics.
#[track_caller]
pub(crate) fn check_window_stat(row: &Value, events: &[Sent], span_ms: i64, stat: Stat) {
    let start = parse_ms(&row["window_start"]);
    let end = parse_ms(&row["window_end"]);
    assert_eq!(end - start, span_ms, "window length: {row}");
    let inside = in_window(events, start, end);
    assert_eq!(
        row["count"].as_u64(),
        Some(inside.len() as u64),
        "event count"
    );
    let mut by_field: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for e in &inside {
        for (k, v) in &e.fields {
            by_field.entry(k).or_default().push(*v);
        }
    }
    let fields = row["fields"].as_object().expect("fields");
    assert_eq!(
        fields.len(),
        by_field.len(),
        "field set: {:?}",
        fields.keys().collect::<Vec<_>>()
    );
    for (name, values) in by_field {
        let got = &fields[name];
        assert_eq!(
            got["count"].as_u64(),
            Some(values.len() as u64),
            "{name} count"
        );
        let (mean, std) = exact_stats(&values);
        let scale = mean.abs().max(std.unwrap_or(0.0));
        let std_tolerance = 1e-9 * std.unwrap_or(0.0);
        match stat {
            Stat::Mean => check_close(name, &got["value"], Some(mean), 1e-9 * scale),
            Stat::Devt => check_close(name, &got["value"], std, std_tolerance),
            Stat::All => {
                check_field_stats(name, got, &values);
                assert_eq!(row["fields_dropped"], 0, "{name}: nothing dropped");
            }
        }
    }
}

/// Asserts one field's `{count, mean, std, min, max}` against the exact
/// statistics of `values` (1e-9; min and max exact).
#[track_caller]
pub(crate) fn check_field_stats(name: &str, got: &Value, values: &[f64]) {
    assert_eq!(
        got["count"].as_u64(),
        Some(values.len() as u64),
        "{name} count"
    );
    let (mean, std) = exact_stats(values);
    let scale = mean.abs().max(std.unwrap_or(0.0));
    check_close(name, &got["mean"], Some(mean), 1e-9 * scale);
    check_close(name, &got["std"], std, 1e-9 * std.unwrap_or(0.0));
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(got["min"].as_f64(), Some(min), "{name} min");
    assert_eq!(got["max"].as_f64(), Some(max), "{name} max");
}

/// Reads the four window rows and checks each against the exact reference.
pub(crate) async fn check_all_windows(app: &Api, events: &[Sent]) {
    for (kind, span, devt) in [
        ("24h_average", 86_400_000, false),
        ("24h_devt", 86_400_000, true),
        ("7d_average", 604_800_000, false),
        ("7d_devt", 604_800_000, true),
    ] {
        let (status, body) = app.expose(kind).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["type"], kind);
        check_window(&body["data"], events, span, devt);
    }
}

/// Waits until the 24 h and 7 d rows count exactly the events in them.
/// (Generous: on DynamoDB the test server is moto, an emulator in Python
/// serving one request at a time, some 30 per second with thousands of
/// items, shared by every DynamoDB test of a run. The bound guards
/// against aggregation that never finishes; it is no speed target (the
/// DynamoDB path's speed is a benchmark of its own): 120 s failed a full
/// run here once, with 3,013 events over 40 days beside the rebuild and
/// sources tests on the same emulator.)
pub(crate) async fn wait_until_aggregated(app: &Api, events: &[Sent]) {
    crate::helpers::eventually(
        std::time::Duration::from_secs(600),
        "the rows to count every event",
        || async {
            for kind in ["24h_average", "7d_average"] {
                let (_, body) = app.expose(kind).await;
                let row = &body["data"];
                let inside = in_window(
                    events,
                    parse_ms(&row["window_start"]),
                    parse_ms(&row["window_end"]),
                );
                if row["count"].as_u64() != Some(inside.len() as u64) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
}

/// A random event at `t`: nested numeric fields, each sometimes missing,
/// beside strings, booleans, nulls and arrays that are not aggregated.
pub(crate) fn random_body(rng: &mut impl rand::Rng, t: i64) -> (Value, BTreeMap<String, f64>) {
    let mut fields = BTreeMap::new();
    let present: [bool; 5] = std::array::from_fn(|_| rng.random_bool(0.8));
    let values = [
        20.0 + rng.random_range(-5.0..5.0),
        rng.random_range(30.0..90.0),
        400.0 + rng.random_range(-100.0..100.0),
        // Mean 1e6, deviation about 60: near the contract's 1e4 ratio.
        1e6 + rng.random_range(-100.0..100.0),
        f64::from(rng.random_range(0u8..10)),
    ];
    let names = ["temp", "env.hum", "env.co2.ppm", "big", "count"];
    let mut picked = [None; 5];
    for i in 0..5 {
        if present[i] {
            fields.insert(names[i].to_owned(), values[i]);
            picked[i] = Some(values[i]);
        }
    }
    let [temp, hum, ppm, big, count] = picked;
    let mut env = serde_json::Map::new();
    if let Some(h) = hum {
        env.insert("hum".into(), serde_json::json!(h));
    }
    if let Some(p) = ppm {
        env.insert("co2".into(), serde_json::json!({ "ppm": p, "unit": "ppm" }));
    }
    let mut data = serde_json::Map::new();
    data.insert("env".into(), Value::Object(env));
    data.insert("label".into(), serde_json::json!("sensor-7"));
    data.insert("ok".into(), serde_json::json!(true));
    data.insert("none".into(), Value::Null);
    data.insert("list".into(), serde_json::json!([1, 2, 3]));
    for (name, value) in [("temp", temp), ("big", big)] {
        if let Some(v) = value {
            data.insert(name.into(), serde_json::json!(v));
        }
    }
    if let Some(c) = count {
        // An integer in JSON: still a number.
        data.insert("count".into(), serde_json::json!(c as i64));
    }
    let body = serde_json::json!({ "data": data, "event_time": crate::helpers::rfc3339(t) });
    (body, fields)
}

/// Posts every body with `concurrency` requests in flight; returns what was
/// acknowledged, with the event time the server reported.
pub(crate) async fn write_all(
    api: &Api,
    bodies: Vec<(Value, BTreeMap<String, f64>)>,
    concurrency: usize,
) -> Vec<Sent> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let api = api.clone();
        let queue = std::sync::Arc::clone(&queue);
        tasks.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some((body, fields)) = next else { break };
                let (status, answer) = api.write_raw(&body, None).await;
                assert_eq!(status, 200, "{answer}");
                // The source: `name`, or a climate computer table's own.
                let table_name = body["data"]["rows"]
                    .is_array()
                    .then(|| body["data"]["name"].as_str())
                    .flatten();
                let name = body["name"]
                    .as_str()
                    .or(table_name)
                    .unwrap_or("raw")
                    .to_owned();
                sent.push(Sent {
                    event_time: parse_ms(&answer["data"]["event_time"]),
                    fields,
                    name,
                });
            }
            sent
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("writer task"));
    }
    all
}
