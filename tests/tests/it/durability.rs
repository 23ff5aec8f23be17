//! `kill -9` during concurrent writes (single events or batches): every
//! acknowledged event survives, once.

use crate::helpers::{eventually, spawn_app, Keys};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn every_acknowledged_event_survives_kill_9() {
    acknowledged_writes_survive_kill_9(1).await;
}

#[tokio::test]
async fn every_acknowledged_batch_survives_kill_9() {
    acknowledged_writes_survive_kill_9(25).await;
}

/// Writers send requests of `batch` events (`write_raw` for 1, else
/// `write_batch`), each under its own Idempotency-Key, until the server is
/// killed; after a restart every acknowledged event answers as a duplicate
/// with its id, and the aggregates count each once.
async fn acknowledged_writes_survive_kill_9(batch: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app(dir.path(), &keys).await;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let attempted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..16 {
        let api = app.api.clone();
        let (acked, attempted, stop) = (
            Arc::clone(&acked),
            Arc::clone(&attempted),
            Arc::clone(&stop),
        );
        writers.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w{writer}-{i}");
                attempted.fetch_add(batch, Ordering::SeqCst);
                let request = api
                    .client
                    .post(format!("{}{}", api.base, route(batch)))
                    .header("x-api-key", &api.keys.write)
                    .header("Idempotency-Key", &key)
                    .json(&body(batch, json!({"writer": writer, "i": i})))
                    .send()
                    .await;
                // After the kill, requests fail: those were never acknowledged.
                let Ok(response) = request else { break };
                if response.status() != 200 {
                    break;
                }
                let Ok(body) = response.json::<serde_json::Value>().await else {
                    break;
                };
                acked.lock().expect("acked").push((key, ids(batch, &body)));
                i += 1;
            }
        });
    }
    // Kill once a good number of writes are acknowledged, mid-stream.
    eventually(
        Duration::from_secs(30),
        "500 acknowledged requests",
        || async { (acked.lock().expect("acked").len() >= 500).then_some(()) },
    )
    .await;
    app.kill9().await;
    stop.store(true, Ordering::SeqCst);
    while writers.join_next().await.is_some() {}
    let acked = acked.lock().expect("acked").clone();
    let attempted = attempted.load(Ordering::SeqCst);

    let app = spawn_app(dir.path(), &keys).await;
    // Each acknowledged event is still there: its key answers with its id.
    for (key, acked_ids) in &acked {
        let (status, body) = app
            .post(
                route(batch),
                &app.keys.write,
                &body(batch, json!({"replay": true})),
                Some(key),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let duplicates = match batch {
            1 => vec![body["data"]["duplicate"].clone()],
            _ => body["data"]["events"]
                .as_array()
                .map(|events| events.iter().map(|e| e["duplicate"].clone()).collect())
                .unwrap_or_default(),
        };
        assert!(
            duplicates.len() == batch && duplicates.iter().all(|d| *d == true),
            "acknowledged events of {key} were lost: {body}"
        );
        assert_eq!(&ids(batch, &body), acked_ids);
    }
    let acked_events: usize = acked.iter().map(|(_, ids)| ids.len()).sum();
    // And the aggregates count each one exactly once after the restart.
    let counted = eventually(
        Duration::from_secs(20),
        "the aggregator to catch up",
        || async {
            let (_, row) = app.expose("24h_average").await;
            let count = row["data"]["count"].as_u64().unwrap_or_default() as usize;
            let writers = row["data"]["fields"]["writer"]["count"]
                .as_u64()
                .unwrap_or_default() as usize;
            (count >= acked_events && count == writers).then_some(count)
        },
    )
    .await;
    assert!(
        counted <= attempted,
        "{counted} counted but only {attempted} attempted"
    );
    app.terminate().await;
}

/// A request's Idempotency-Key and the event ids it was answered.
type Acked = (String, Vec<String>);

fn route(batch: usize) -> &'static str {
    if batch == 1 {
        "/source/write_raw"
    } else {
        "/source/write_batch"
    }
}

/// A request body of `batch` events of `data`.
fn body(batch: usize, data: serde_json::Value) -> serde_json::Value {
    match batch {
        1 => json!({ "data": data }),
        _ => json!({ "events": vec![json!({ "data": data }); batch] }),
    }
}

/// The event ids a write answered.
fn ids(batch: usize, body: &serde_json::Value) -> Vec<String> {
    let id = |e: &serde_json::Value| e["event_id"].as_str().unwrap_or_default().to_owned();
    match batch {
        1 => vec![id(&body["data"])],
        _ => body["data"]["events"]
            .as_array()
            .map(|events| events.iter().map(id).collect())
            .unwrap_or_default(),
    }
}
