//! `kill -9` during concurrent writes: every acknowledged event survives.

use crate::helpers::{eventually, spawn_app, Keys};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app(dir.path(), &keys).await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
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
                attempted.fetch_add(1, Ordering::SeqCst);
                let request = api
                    .client
                    .post(format!("{}/source/write_raw", api.base))
                    .header("x-api-key", &api.keys.write)
                    .header("Idempotency-Key", &key)
                    .json(&json!({"data": {"writer": writer, "i": i}}))
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
                let id = body["data"]["event_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                acked.lock().expect("acked").push((key, id));
                i += 1;
            }
        });
    }
    // Kill once a good number of writes are acknowledged, mid-stream.
    eventually(
        Duration::from_secs(30),
        "500 acknowledged writes",
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
    for (key, id) in &acked {
        let (status, body) = app
            .write_raw(&json!({"data": {"replay": true}}), Some(key))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["data"]["duplicate"], true,
            "acknowledged event {key} was lost"
        );
        assert_eq!(body["data"]["event_id"].as_str(), Some(id.as_str()));
    }
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
            (count >= acked.len() && count == writers).then_some(count)
        },
    )
    .await;
    assert!(
        counted <= attempted,
        "{counted} counted but only {attempted} attempted"
    );
    app.terminate().await;
}
