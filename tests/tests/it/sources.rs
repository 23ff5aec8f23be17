//! Contract v2 sources and full statistics: several sources with
//! overlapping and disjoint fields, each source's rows and the all-events
//! rows against the exact reference, the sources listing; and the bounds:
//! wide writes never stall aggregation.

use crate::exact::{check_window_stat, in_window, random_body, write_all, Sent, WINDOW_TYPES};
use crate::helpers::{
    eventually, now_ms, on_every_store, parse_ms, rfc3339, Keys, StoreKind, TestStore,
};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const DAY: i64 = 86_400_000;

/// Sources: two share their fields (the random body's), one has fields
/// no other has, one is a climate computer posting tables.
const NAMES: [&str; 4] = ["gh-east", "gh-west", "silo", "_ws_source_meteo"];

fn body_of(rng: &mut impl Rng, source: usize, t: i64) -> (Value, BTreeMap<String, f64>) {
    match source {
        0 | 1 => {
            let (mut body, fields) = random_body(rng, t);
            body["name"] = json!(NAMES[source]);
            (body, fields)
        }
        2 => {
            let level = rng.random_range(0.0..12.5);
            let temp = -3.0 + rng.random_range(-1.0..1.0);
            let body = json!({"name": "silo", "event_time": rfc3339(t),
                              "data": {"grain": {"level_m": level}, "temp": temp}});
            let fields = BTreeMap::from([
                ("grain.level_m".to_owned(), level),
                ("temp".to_owned(), temp),
            ]);
            (body, fields)
        }
        _ => {
            let outside = 9.0 + rng.random_range(-4.0..4.0);
            let key = f64::from(rng.random_range(8000u16..9000));
            let body = json!({"data": {"name": "_ws_source_meteo",
                "rows": [["Variable", "Value"], ["external_temperature_c", outside],
                         ["wind_direction_compass", {"type": "hortimax.synopta.enum", "key": key, "value": "Actief"}],
                         ["status", "ok"]],
                "ts": rfc3339(t), "pt": 0}});
            let fields = BTreeMap::from([
                ("external_temperature_c".to_owned(), outside),
                ("wind_direction_compass.key".to_owned(), key),
            ]);
            (body, fields)
        }
    }
}

/// Waits until every aggregate's 24 h and 7 d rows count their events.
async fn wait_until_every_source_is_aggregated(app: &crate::helpers::Api, sent: &[Sent]) {
    eventually(
        Duration::from_secs(180),
        "every aggregate to count its events",
        || async {
            for name in std::iter::once(None).chain(NAMES.iter().map(|n| Some(*n))) {
                let events: Vec<Sent> = sent
                    .iter()
                    .filter(|e| name.is_none_or(|n| e.name == n))
                    .cloned()
                    .collect();
                for kind in ["24h_stats", "7d_stats"] {
                    let (status, body) = match name {
                        Some(n) => app.expose_source(kind, n).await,
                        None => app.expose(kind).await,
                    };
                    if status != 200 {
                        return None;
                    }
                    let row = &body["data"];
                    let inside = in_window(
                        &events,
                        parse_ms(&row["window_start"]),
                        parse_ms(&row["window_end"]),
                    );
                    if row["count"].as_u64() != Some(inside.len() as u64) {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await
}

async fn every_source_and_all_events_match_the_exact_statistics(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let app = store.spawn(&Keys::random()).await;
    let mut rng = rand::rng();
    let now = now_ms();
    let bodies: Vec<_> = (0..3000)
        .map(|i| {
            let t = now - rng.random_range(0..9 * DAY);
            body_of(&mut rng, i % NAMES.len(), t)
        })
        .collect();
    let sent = write_all(&app, bodies, 16).await;
    assert_eq!(sent.len(), 3000);
    wait_until_every_source_is_aggregated(&app, &sent).await;

    // Every window type of every aggregate, against the exact reference.
    for name in std::iter::once(None).chain(NAMES.iter().map(|n| Some(*n))) {
        let events: Vec<Sent> = sent
            .iter()
            .filter(|e| name.is_none_or(|n| e.name == n))
            .cloned()
            .collect();
        for (kind, span, stat) in WINDOW_TYPES {
            let (status, body) = match name {
                Some(n) => app.expose_source(kind, n).await,
                None => app.expose(kind).await,
            };
            assert_eq!(status, 200, "{name:?} {kind}: {body}");
            assert_eq!(body["data"]["type"], kind);
            check_window_stat(&body["data"], &events, span, stat);
        }
        // latest: the source's own greatest event time.
        let (status, latest) = match name {
            Some(n) => app.expose_source("latest", n).await,
            None => app.expose("latest").await,
        };
        assert_eq!(status, 200, "{latest}");
        let greatest = events
            .iter()
            .map(|e| e.event_time)
            .max()
            .unwrap_or_default();
        assert_eq!(
            parse_ms(&latest["data"]["event_time"]),
            greatest,
            "{name:?}"
        );
        if let Some(n) = name {
            assert_eq!(latest["data"]["name"], n);
        }
    }

    // The sources listing: sorted by name, counts and times exact.
    let (status, body) = app.sources().await;
    assert_eq!(status, 200, "{body}");
    let listed = body["data"]["sources"].as_array().expect("sources").clone();
    let mut names: Vec<&str> = NAMES.to_vec();
    names.sort_unstable();
    let got: Vec<&str> = listed.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(got, names);
    assert_eq!(body["data"]["next"], Value::Null, "{body}");
    // The same, a page of 3 at a time (then 1: no `next` after it); a
    // bad `limit` is a 422.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("limit", "3".to_owned())];
        query.extend(cursor.clone().map(|c| ("cursor", c)));
        let (status, page) = app.get_json("/source/sources", &query).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        paged.extend(page["data"]["sources"].as_array().expect("a page").clone());
        match page["data"]["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((pages, &paged), (2, &listed));
    for limit in ["0", "10001", "x", "-1"] {
        let (status, body) = app
            .get_json("/source/sources", &[("limit", limit.to_owned())])
            .await;
        assert_eq!(
            (status, &body["data"]["error"]),
            (422, &json!("invalid_query")),
            "{limit}"
        );
    }
    let week_start = parse_ms(&app.expose("7d_stats").await.1["data"]["window_start"]);
    for entry in &listed {
        let name = entry["name"].as_str().unwrap_or_default();
        let mine: Vec<&Sent> = sent.iter().filter(|e| e.name == name).collect();
        assert_eq!(entry["events"].as_u64(), Some(mine.len() as u64), "{entry}");
        let first = mine.iter().map(|e| e.event_time).min().unwrap_or_default();
        let last = mine.iter().map(|e| e.event_time).max().unwrap_or_default();
        assert_eq!(parse_ms(&entry["first_event_time"]), first, "{entry}");
        assert_eq!(parse_ms(&entry["last_event_time"]), last, "{entry}");
        let in_week: std::collections::BTreeSet<&String> = mine
            .iter()
            .filter(|e| e.event_time >= week_start)
            .flat_map(|e| e.fields.keys())
            .collect();
        assert_eq!(
            entry["fields"].as_u64(),
            Some(in_week.len() as u64),
            "{entry}"
        );
        assert_eq!(entry["fields_dropped"], 0, "{entry}");
    }

    // A source never written: 404 unknown_source; all events stay v1.
    let (status, body) = app.expose_source("24h_average", "nobody").await;
    assert_eq!(
        (status, body["data"]["error"].clone()),
        (404, json!("unknown_source"))
    );
    let (_, v1) = app.expose("24h_average").await;
    let row = v1["data"].as_object().expect("row");
    assert!(
        !row.contains_key("fields_dropped"),
        "v1 rows keep their v1 shape"
    );
    app.terminate().await;
}

/// A data object with `n` numeric fields named `prefix<i>`, padded with a
/// string to about `pad` bytes.
fn wide_body(name: &str, prefix: &str, n: usize, pad: usize) -> Value {
    let mut data = serde_json::Map::new();
    for i in 0..n {
        data.insert(format!("{prefix}{i:04}"), json!(i as f64 / 4.0));
    }
    let mut body = json!({ "name": name, "data": Value::Object(data) });
    let size = body.to_string().len();
    if pad > size + 16 {
        body["data"]["pad"] = json!("p".repeat(pad - size - 16));
    }
    body
}

async fn wide_writes_never_stall_aggregation(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let app = store.spawn(&Keys::random()).await;
    // At the limits: 1,000 fields and 64 KiB: accepted and aggregated.
    let at_limits = wide_body("edge", "f", 1_000, 65_536);
    assert!(at_limits.to_string().len() <= 65_536);
    let (status, body) = app.write_raw(&at_limits, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.write_raw(&wide_body("edge", "f", 1_001, 0), None).await;
    assert_eq!(
        (status, body["data"]["error"].clone()),
        (422, json!("too_many_fields"))
    );

    // 20 events of 500 new field names each, then one small event.
    for i in 0..20 {
        let (status, body) = app
            .write_raw(&wide_body("wide", &format!("w{i:02}_"), 500, 0), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, small) = app
        .write_raw(&json!({"name": "wide", "data": {"small": 1.5}}), None)
        .await;
    assert_eq!(status, 200);
    let acked = std::time::Instant::now();
    let id = small["data"]["event_id"].clone();
    // Within the freshness bound: the contract's 1 s on the embedded
    // store; on DynamoDB (the test server is moto, one request at a time,
    // ~0.5 s here) a few seconds.
    let bound = match kind {
        StoreKind::Embedded => Duration::from_secs(1),
        StoreKind::Dynamodb => Duration::from_secs(5),
    };
    loop {
        let (_, latest) = app.expose_source("latest", "wide").await;
        if latest["data"]["event_id"] == id {
            break;
        }
        assert!(
            acked.elapsed() < bound,
            "the small event is not latest after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = acked.elapsed();
    eprintln!("{kind:?}: the small event after 20 wide ones was latest in {elapsed:?}");
    let counted = eventually(
        Duration::from_secs(60),
        "the small event counted",
        || async {
            let (_, row) = app.expose_source("24h_stats", "wide").await;
            (row["data"]["count"] == 21).then_some(row)
        },
    )
    .await;
    let row = &counted["data"];
    assert!(
        row["fields"].get("small").is_none(),
        "past the limit: {row}"
    );
    // 10,000 names: 2,000 aggregated (the first four events'), the small
    // event's `small` and 7,999 others dropped.
    let fields = row["fields"].as_object().expect("fields").len();
    assert_eq!(fields, 2_000, "the source's field limit");
    assert_eq!(row["fields_dropped"], 8_001, "{}", row["fields_dropped"]);
    let (_, sources) = app.sources().await;
    let wide = sources["data"]["sources"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "wide").cloned())
        .expect("listed");
    assert_eq!(
        (
            wide["events"].clone(),
            wide["fields"].clone(),
            wide["fields_dropped"].clone()
        ),
        (json!(21), json!(2000), json!(8001))
    );
    // The all-events aggregate has its own limit, filled by `edge` first.
    let (_, all) = app.expose("24h_stats").await;
    assert_eq!(
        all["data"]["fields"].as_object().map(|f| f.len()),
        Some(2_000)
    );
    app.terminate().await;
}

on_every_store!(
    every_source_and_all_events_match_the_exact_statistics,
    wide_writes_never_stall_aggregation
);

/// `--max-sources 2`: a write or batch naming a third source is a 422
/// `too_many_sources` in the envelope, nothing of it stored; the two
/// sources stay writable.
#[tokio::test]
async fn writes_past_the_bound_on_sources_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app =
        crate::helpers::spawn_app_with(dir.path(), &keys, &["--max-sources", "2"], None).await;
    for name in ["gh-1", "gh-2"] {
        let (status, body) = app
            .write_raw(&json!({"name": name, "data": {"t": 1}}), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = app
        .write_raw(&json!({"name": "gh-3", "data": {"t": 1}}), None)
        .await;
    assert_eq!(
        (status, &body["data"]["error"]),
        (422, &json!("too_many_sources")),
        "{body}"
    );
    assert_eq!(body["status"], 422);
    let batch =
        json!({"events": [{"name": "gh-1", "data": {"t": 2}}, {"name": "gh-3", "data": {"t": 2}}]});
    let (status, body) = app
        .post("/source/write_batch", &keys.write, &batch, None)
        .await;
    assert_eq!(
        (status, &body["data"]["error"]),
        (422, &json!("too_many_sources")),
        "{body}"
    );
    let (status, body) = app
        .write_raw(&json!({"name": "gh-1", "data": {"t": 3}}), None)
        .await;
    assert_eq!(status, 200, "{body}");
    // gh-1 holds its two accepted events, not the refused batch's.
    eventually(Duration::from_secs(30), "gh-1's two events", || async {
        let (status, body) = app.expose_source("24h_stats", "gh-1").await;
        (status == 200 && body["data"]["count"] == 2).then_some(())
    })
    .await;
    let (_, sources) = app.sources().await;
    let names: Vec<&str> = sources["data"]["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["gh-1", "gh-2"]);
    app.terminate().await;
}
