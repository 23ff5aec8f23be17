//! Contract v2 series on both stores: every bucket against the exact
//! reference at each interval, ranges not aligned to it, empty ranges,
//! the 10,000-bucket limit, unknown sources and fields, CSV (read back by
//! Python's csv module) equal to the JSON, and the development views.

use crate::exact::{check_field_stats, random_body, Sent};
use crate::helpers::{
    eventually, now_ms, on_every_store, parse_ms, rfc3339, Api, Keys, StoreKind, TestStore,
};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

async fn series(api: &Api, body: &Value) -> (u16, Value) {
    api.post("/source/series", &api.keys.read, body, None).await
}

/// Checks every bucket of a series answer against the events sent.
#[track_caller]
fn check_buckets(answer: &Value, sent: &[Sent], name: Option<&str>, fields: Option<&[&str]>) {
    let data = &answer["data"];
    let width = match data["interval"].as_str() {
        Some("1m") => MINUTE,
        Some("5m") => 5 * MINUTE,
        Some("15m") => 15 * MINUTE,
        Some("1h") => HOUR,
        Some("6h") => 6 * HOUR,
        Some("1d") => DAY,
        other => panic!("interval {other:?}"),
    };
    let (from, to) = (parse_ms(&data["from"]), parse_ms(&data["to"]));
    let mut expected: BTreeMap<i64, Vec<&Sent>> = BTreeMap::new();
    for e in sent {
        if name.is_none_or(|n| e.name == n) && (from..to).contains(&e.event_time) {
            expected
                .entry(e.event_time.div_euclid(width) * width)
                .or_default()
                .push(e);
        }
    }
    let buckets = data["buckets"].as_array().expect("buckets");
    let starts: Vec<i64> = buckets.iter().map(|b| parse_ms(&b["start"])).collect();
    assert_eq!(
        starts,
        expected.keys().copied().collect::<Vec<_>>(),
        "bucket starts"
    );
    for bucket in buckets {
        let events = &expected[&parse_ms(&bucket["start"])];
        assert_eq!(
            bucket["count"].as_u64(),
            Some(events.len() as u64),
            "{bucket}"
        );
        let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for e in events {
            for (k, v) in &e.fields {
                if fields.is_none_or(|f| f.contains(&k.as_str())) {
                    values.entry(k).or_default().push(*v);
                }
            }
        }
        let got = bucket["fields"].as_object().expect("fields");
        assert_eq!(got.len(), values.len(), "field set of {bucket}");
        for (field, values) in values {
            check_field_stats(field, &got[field], &values);
        }
    }
}

async fn series_are_exact_on_every_interval(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let keys = Keys::random();
    let app = store.spawn(&keys).await;
    let mut rng = rand::rng();
    let now = now_ms();
    // Three days of history and the last hour, two sources, by batches.
    let mut sent = Vec::new();
    for chunk in 0..4 {
        let mut events = Vec::new();
        for _ in 0..40 {
            let t = if chunk == 3 {
                now - rng.random_range(0..HOUR)
            } else {
                now - rng.random_range(HOUR..3 * DAY)
            };
            let (mut body, fields) = random_body(&mut rng, t);
            let name = if rng.random_bool(0.5) { "gh-a" } else { "gh-b" };
            body["name"] = json!(name);
            events.push(body);
            sent.push(Sent {
                event_time: t,
                fields,
                name: name.to_owned(),
            });
        }
        let (status, answer) = app
            .post(
                "/source/write_batch",
                &keys.write,
                &json!({ "events": events }),
                None,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let everything =
        json!({"interval": "1d", "from": rfc3339(now - 4 * DAY), "to": rfc3339(now + HOUR)});
    eventually(
        Duration::from_secs(120),
        "every event in the series",
        || async {
            // Gently: the DynamoDB test server serves one request at a
            // time to every test running meanwhile.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (_, answer) = series(&app, &everything).await;
            let counted: u64 = answer["data"]["buckets"]
                .as_array()
                .map(|b| b.iter().filter_map(|b| b["count"].as_u64()).sum())
                .unwrap_or(0);
            (counted == sent.len() as u64).then_some(())
        },
    )
    .await;

    // Each interval, over ranges whose ends are not on its boundaries.
    for (interval, from, to) in [
        ("1m", now - DAY - 7_777, now - 3 * HOUR + 1),
        ("5m", now - 2 * DAY + 12_345, now),
        ("15m", now - 3 * DAY, now + 5 * MINUTE),
        ("1h", now - 3 * DAY - 1, now - 1),
        ("6h", now - 4 * DAY, now + HOUR),
        ("1d", now - 4 * DAY, now + HOUR),
    ] {
        for name in [None, Some("gh-a")] {
            let mut body = json!({"interval": interval, "from": rfc3339(from), "to": rfc3339(to)});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let (status, answer) = series(&app, &body).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["data"]["name"], json!(name));
            check_buckets(&answer, &sent, name, None);
        }
    }
    // Fields: unknown ones are absent, not an error; counts stay whole.
    let body = json!({"interval": "1h", "from": rfc3339(now - 3 * DAY), "to": rfc3339(now),
                      "fields": ["temp", "no.such.field"]});
    let (status, answer) = series(&app, &body).await;
    assert_eq!(status, 200, "{answer}");
    check_buckets(&answer, &sent, None, Some(&["temp"]));

    // CSV: Python's csv module reads back what the JSON says.
    let json_body = json!({"interval": "6h", "from": rfc3339(now - 3 * DAY), "to": rfc3339(now), "name": "gh-b"});
    let (_, as_json) = series(&app, &json_body).await;
    let csv = app
        .client
        .post(format!("{}/source/series", app.base))
        .header("x-api-key", &keys.read)
        .header("accept", "text/csv")
        .json(&json_body)
        .send()
        .await
        .expect("request");
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    let text = csv.text().await.expect("text");
    let rows = python_csv(&text);
    assert_eq!(
        rows[0],
        ["start", "name", "field", "count", "mean", "std", "min", "max"]
    );
    let mut from_json = vec![rows[0].clone()];
    let cell = |v: &Value| v.as_f64().map_or_else(String::new, |f| format!("{f:e}"));
    for bucket in as_json["data"]["buckets"].as_array().expect("buckets") {
        if bucket["fields"].as_object().is_some_and(|f| f.is_empty()) {
            let start = bucket["start"].as_str().unwrap_or("").to_owned();
            let count = bucket["count"].to_string();
            from_json.push(vec![
                start,
                "gh-b".into(),
                String::new(),
                count,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for (field, s) in bucket["fields"].as_object().expect("fields") {
            from_json.push(vec![
                bucket["start"].as_str().unwrap_or("").to_owned(),
                "gh-b".to_owned(),
                field.clone(),
                s["count"].to_string(),
                cell(&s["mean"]),
                cell(&s["std"]),
                cell(&s["min"]),
                cell(&s["max"]),
            ]);
        }
    }
    let normalized: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            if i == 0 {
                return row.clone();
            }
            row.iter()
                .enumerate()
                .map(|(j, c)| {
                    if j >= 4 && !c.is_empty() {
                        format!("{:e}", c.parse::<f64>().expect("number"))
                    } else {
                        c.clone()
                    }
                })
                .collect()
        })
        .collect();
    assert!(rows.len() > 1, "the CSV has rows");
    assert_eq!(normalized, from_json);

    // Empty ranges (an aligned instant; a range without events), the
    // bucket limit, unknown sources.
    let hour = now - now.rem_euclid(HOUR);
    for (body, status, field, expected) in [
        (
            json!({"interval": "1h", "from": rfc3339(hour), "to": rfc3339(hour)}),
            200,
            "buckets",
            json!([]),
        ),
        (
            json!({"interval": "1m", "from": rfc3339(now - 30 * DAY), "to": rfc3339(now - 29 * DAY)}),
            200,
            "buckets",
            json!([]),
        ),
        (
            json!({"interval": "1m", "from": rfc3339(now - 7 * DAY), "to": rfc3339(now)}),
            422,
            "error",
            json!("too_many_buckets"),
        ),
        (
            json!({"interval": "1m", "from": rfc3339(now - 40 * DAY), "to": rfc3339(now - 39 * DAY)}),
            422,
            "error",
            json!("resolution_unavailable"),
        ),
        (
            json!({"interval": "1h", "name": "nobody", "from": rfc3339(now - DAY), "to": rfc3339(now)}),
            404,
            "error",
            json!("unknown_source"),
        ),
    ] {
        let (got, answer) = series(&app, &body).await;
        assert_eq!(
            (got, answer["data"][field].clone()),
            (status, expected),
            "{body}: {answer}"
        );
    }

    check_grafana(&app, now).await;

    // The development views are the series of their windows.
    for (kind, interval) in [("24h_development", "15m"), ("7d_development", "1d")] {
        let (status, answer) = app.expose_source(kind, "gh-a").await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["type"], kind);
        assert_eq!(answer["data"]["interval"], interval);
        check_buckets(&answer, &sent, Some("gh-a"), None);
    }
    app.terminate().await;
}

/// The Grafana data source, with the simPod plugin's own request bodies
/// (its README's examples, our metric names in them).
async fn check_grafana(app: &Api, now: i64) {
    let client = &app.client;
    let url = |path: &str| format!("{}/grafana{path}", app.base);
    let health = client
        .get(url(""))
        .header("x-api-key", &app.keys.read)
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let refused = client.get(url("")).send().await.expect("health");
    assert_eq!(refused.status(), 401);

    let post = |path: &'static str, body: Value| {
        let request = client
            .post(url(path))
            .header("x-api-key", &app.keys.read)
            .json(&body);
        async move {
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.expect("JSON")
        }
    };
    for body in [
        json!({}),
        json!({"metric": "DescribeMetricList", "payload": {"namespace": "MySQL"}}),
    ] {
        let metrics = post("/metrics", body).await;
        let values: Vec<&str> = metrics
            .as_array()
            .expect("a bare array")
            .iter()
            .filter_map(|m| m["value"].as_str())
            .collect();
        assert!(values.contains(&r#"["gh-a","temp"]"#), "{values:?}");
        assert!(values.contains(&r#"[null,"env.hum"]"#), "{values:?}");
        assert_eq!(metrics[0]["payloads"][0]["name"], "statistic");
    }
    let options = post(
        "/metric-payload-options",
        json!({"metric": "[\"gh-a\",\"temp\"]", "payload": {}, "name": "statistic"}),
    )
    .await;
    let options: Vec<&str> = options
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o["value"].as_str())
        .collect();
    assert_eq!(options, ["mean", "count", "std", "min", "max"]);

    // Three days at 100 points: the finest interval that fits is 1h.
    let (from, to) = (now - 3 * DAY, now);
    let query = json!({
        "panelId": 1,
        "range": {"from": rfc3339(from), "to": rfc3339(to), "raw": {"from": "now-3d", "to": "now"}},
        "rangeRaw": {"from": "now-3d", "to": "now"},
        "interval": "30m", "intervalMs": 1_800_000, "maxDataPoints": 100,
        "targets": [
            {"target": "[\"gh-a\",\"temp\"]", "refId": "A", "payload": {}},
            {"target": "[null,\"env.hum\"]", "refId": "B", "payload": {"statistic": "max"}},
            {"target": "[\"gh-a\",\"temp\"]", "refId": "C", "hide": true},
            {"target": "[\"nobody\",\"temp\"]", "refId": "D"}
        ],
        "filters": [{"key": "City", "operator": "=", "value": "Berlin"}]
    });
    let answer = post("/query", query).await;
    let series_of = |name: Option<&str>, field: &str| {
        let mut body =
            json!({"interval": "1h", "from": rfc3339(from), "to": rfc3339(to), "fields": [field]});
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        body
    };
    let answer = answer.as_array().expect("a bare array");
    assert_eq!(answer.len(), 3, "hidden targets are left out: {answer:?}");
    for (i, (name, field, statistic)) in [(Some("gh-a"), "temp", "mean"), (None, "env.hum", "max")]
        .into_iter()
        .enumerate()
    {
        let (_, expected) = series(app, &series_of(name, field)).await;
        let points: Vec<Value> = expected["data"]["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .filter(|b| b["fields"].get(field).is_some())
            .map(|b| json!([b["fields"][field][statistic], parse_ms(&b["start"])]))
            .collect();
        assert!(!points.is_empty());
        assert_eq!(
            answer[i]["datapoints"],
            json!(points),
            "{}",
            answer[i]["target"]
        );
    }
    assert_eq!(
        answer[2]["datapoints"],
        json!([]),
        "an unknown source plots nothing"
    );
}

/// The rows of a CSV text as Python's csv module reads them.
fn python_csv(text: &str) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys; print(json.dumps(list(csv.reader(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 ran");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("JSON rows")
}

on_every_store!(series_are_exact_on_every_interval);

/// The server's memory in MB: `VmHWM` (the peak) or `VmRSS` (now).
fn memory_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .expect("a memory figure")
}

/// 32 series at once, each of 200 buckets x 500 fields: the large-read
/// budget admits a few at a time (the others answer 503 `busy` with
/// `Retry-After` and are retried), so the server's peak memory grows by
/// a few answers' worth, not by 32 (before: 16 of the largest series at
/// once took 4 GB).
#[tokio::test]
async fn concurrent_heavy_series_hold_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = crate::helpers::spawn_app_with(dir.path(), &keys, &[], None).await;
    let start = (now_ms() / MINUTE - 200) * MINUTE;
    for chunk in 0..10 {
        let events: Vec<Value> = (0..20)
            .map(|i| {
                let n = chunk * 20 + i;
                let data: serde_json::Map<String, Value> =
                    (0..500).map(|f| (format!("f{f}"), json!(n + f))).collect();
                json!({"event_time": rfc3339(start + n * MINUTE), "data": data})
            })
            .collect();
        let (status, body) = app
            .post(
                "/source/write_batch",
                &keys.write,
                &json!({"events": events}),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    eventually(
        Duration::from_secs(120),
        "200 events aggregated",
        || async {
            let (status, body) = app.expose("24h_stats").await;
            (status == 200 && body["data"]["count"] == 200).then_some(())
        },
    )
    .await;
    let query =
        json!({"interval": "1m", "from": rfc3339(start), "to": rfc3339(start + 200 * MINUTE)});
    let pid = app.pid();
    let before = memory_mb(pid, "VmRSS");
    let (status, one) = app.post("/source/series", &keys.read, &query, None).await;
    assert_eq!(status, 200);
    let cells: usize = one["data"]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["fields"].as_object().map_or(0, |f| f.len()))
        .sum();
    assert_eq!(cells, 100_000);
    let growth_one = memory_mb(pid, "VmHWM") - before;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let asks = (0..32).map(|_| {
        let (client, base, key, query) = (
            client.clone(),
            app.base.clone(),
            keys.read.clone(),
            query.clone(),
        );
        tokio::spawn(async move {
            let mut busy = 0;
            loop {
                let response = client
                    .post(format!("{base}/source/series"))
                    .header("x-api-key", &key)
                    .json(&query)
                    .send()
                    .await
                    .expect("an answer");
                match response.status().as_u16() {
                    200 => return busy,
                    503 => {
                        assert_eq!(response.headers()["retry-after"], "1");
                        let body: Value = response.json().await.expect("JSON");
                        assert_eq!(body["data"]["error"], "busy");
                        busy += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => panic!("series answered {other}"),
                }
            }
        })
    });
    let mut busy = 0;
    for ask in asks.collect::<Vec<_>>() {
        busy += ask.await.expect("a series task");
    }
    let growth_all = memory_mb(pid, "VmHWM") - before;
    eprintln!("series memory: one alone +{growth_one:.0} MB, 32 at once +{growth_all:.0} MB, {busy} busy answers retried");
    assert!(
        growth_all <= 7.0 * growth_one.max(1.0) + 64.0,
        "peak grew {growth_all:.0} MB under 32 series at once; one alone: {growth_one:.0} MB ({busy} busy answers)"
    );
    app.terminate().await;
}
