//! Idempotency keys: one event per key and writer, even under concurrency.

use crate::helpers::{on_every_store, Keys, StoreKind, TestStore};
use serde_json::json;

async fn a_repeated_key_returns_the_first_event_and_appends_nothing(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let app = store.spawn(&Keys::random()).await;
    let body = json!({"data": {"x": 1}});
    // Twenty concurrent requests with one key: exactly one event.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let api = app.api.clone();
        let body = body.clone();
        tasks.spawn(async move { api.write_raw(&body, Some("order-42")).await });
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut fresh = 0;
    while let Some(done) = tasks.join_next().await {
        let (status, answer) = done.expect("task");
        assert_eq!(status, 200, "{answer}");
        ids.insert(
            answer["data"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        if answer["data"]["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(ids.len(), 1, "every answer names the same event");
    assert_eq!(fresh, 1);

    // The same key from another writer is another event.
    let (status, other) = app
        .post(
            "/source/write_raw",
            &app.keys.write2,
            &body,
            Some("order-42"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(other["data"]["duplicate"], false);
    assert!(!ids.contains(other["data"]["event_id"].as_str().unwrap_or_default()));

    crate::helpers::eventually(
        std::time::Duration::from_secs(5),
        "two events counted",
        || async {
            let (_, row) = app.expose("24h_average").await;
            (row["data"]["count"] == 2).then_some(())
        },
    )
    .await;
    app.terminate().await;
}

on_every_store!(a_repeated_key_returns_the_first_event_and_appends_nothing);
