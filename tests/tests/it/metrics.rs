//! `GET /metrics`: the Prometheus text format, read by a parser of that
//! format; the counters move as requests are made; role `read`.

use crate::helpers::{eventually, spawn_app_with, Keys, TestApp};
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use std::time::Duration;

async fn scrape(app: &TestApp, key: &str) -> (u16, String) {
    let response = app
        .client
        .get(format!("{}/metrics", app.base))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text"))
}

/// Every sample of the page, parsed; each line that is not a comment or
/// blank must have become a sample.
fn parse(text: &str) -> Scrape {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    let samples: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    // (A histogram's _sum and _count lines parse as samples of their own.)
    assert_eq!(lines, samples, "unparsed lines in:\n{text}");
    scrape
}

/// The value of `metric` with `labels`; 0 if absent.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app_with(dir.path(), &keys, &[], None).await;
    let (status, _) = scrape(&app, "not-a-key").await;
    assert_eq!(status, 401);
    let (status, _) = scrape(&app, &keys.write).await;
    assert_eq!(status, 403, "role read");

    let (status, text) = scrape(&app, &keys.read).await;
    assert_eq!(status, 200);
    let before = parse(&text);
    let writes = [
        ("route", "/source/write_raw"),
        ("method", "POST"),
        ("status", "200"),
    ];
    for i in 0..3 {
        let (status, _) = app.write_raw(&json!({"data": {"i": i}}), None).await;
        assert_eq!(status, 200);
    }
    let (status, _) = app
        .post(
            "/source/write_batch",
            &keys.write,
            &json!({"events": [{"data": {"i": 3}}, {"data": {"i": 4}}]}),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.write_raw(&json!({"data": 1}), None).await;
    assert_eq!(status, 422);

    let after = eventually(
        Duration::from_secs(10),
        "the aggregator's metrics",
        || async {
            let after = parse(&scrape(&app, &keys.read).await.1);
            (value(&after, "sygno_aggregator_events_total", &[]) >= 5.0).then_some(after)
        },
    )
    .await;
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(moved("sygno_http_requests_total", &writes), 3.0);
    assert_eq!(
        moved(
            "sygno_http_requests_total",
            &[("route", "/source/write_raw"), ("status", "422")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "sygno_http_request_duration_seconds",
            &[("route", "/source/write_batch")]
        ),
        1.0,
        "one latency observation"
    );
    assert_eq!(moved("sygno_events_appended_total", &[]), 5.0);
    assert_eq!(value(&after, "sygno_aggregator_events_total", &[]), 5.0);
    assert!(value(&after, "sygno_aggregator_commit_duration_seconds", &[]) >= 1.0);
    assert!(value(&after, "sygno_aggregator_batch_events", &[]) >= 1.0);
    assert_eq!(value(&after, "sygno_aggregator_lag_events", &[]), 0.0);
    assert_eq!(
        value(&after, "sygno_rebuild_state", &[("state", "idle")]),
        1.0
    );
    app.terminate().await;

    let app = spawn_app_with(dir.path(), &keys, &["--no-metrics"], None).await;
    let (status, body) = scrape(&app, &keys.read).await;
    assert_eq!(status, 404, "{body}");
    app.terminate().await;
}
