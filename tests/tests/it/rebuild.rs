//! Rebuild: online while writes go on (on every store), offline with
//! `sygno rebuild` (embedded), and online from the command line (DynamoDB);
//! each ends in the rows incremental processing gives.

use crate::exact::{check_all_windows, random_body, wait_until_aggregated, write_all};
use crate::helpers::{
    eventually, now_ms, on_every_store, spawn_app, sygno_bin, Keys, StoreKind, TestStore,
};
use rand::Rng;
use std::time::Duration;

const DAY: i64 = 86_400_000;
const KINDS: [&str; 5] = ["latest", "24h_average", "24h_devt", "7d_average", "7d_devt"];

fn bodies(n: usize) -> Vec<(serde_json::Value, std::collections::BTreeMap<String, f64>)> {
    let mut rng = rand::rng();
    let now = now_ms();
    (0..n)
        .map(|_| {
            let t = now - rng.random_range(0..9 * DAY);
            random_body(&mut rng, t)
        })
        .collect()
}

async fn rebuilds_equal_incremental_processing(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let keys = Keys::random();
    let app = store.spawn(&keys).await;
    let mut sent = write_all(&app, bodies(600), 8).await;
    wait_until_aggregated(&app, &sent).await;

    // Online, while another 300 writes go on.
    let api = app.api.clone();
    let writer = tokio::spawn(async move { write_all(&api, bodies(300), 4).await });
    let (status, body) = app.admin(reqwest::Method::POST).await;
    assert_eq!(status, 202, "{body}");
    // A guard against a rebuild that never ends, not a speed target: on
    // the emulator, shared by every DynamoDB test of the suite and serving
    // one request at a time, this rebuild takes 15 s alone and has taken
    // over 30 s in CI.
    let done = eventually(
        Duration::from_secs(180),
        "the rebuild to finish",
        || async {
            let (_, body) = app.admin(reqwest::Method::GET).await;
            (body["data"]["state"] != "running").then_some(body)
        },
    )
    .await;
    assert_eq!(done["data"]["state"], "done", "{done}");
    assert!(
        done["data"]["processed"].as_u64().unwrap_or_default() >= 600,
        "{done}"
    );
    sent.extend(writer.await.expect("writer"));
    wait_until_aggregated(&app, &sent).await;
    check_all_windows(&app, &sent).await;

    let dir = match &store {
        TestStore::Embedded(dir) => dir.path(),
        TestStore::Dynamodb { .. } => {
            // Online from the command line, beside the running server.
            let output = tokio::process::Command::new(sygno_bin())
                .arg("rebuild")
                .args(store.args())
                .envs(store.env().iter().map(|(k, v)| (k, v)))
                .output()
                .await
                .expect("sygno rebuild");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "rebuild failed: {stderr}");
            assert!(
                stderr.contains("summaries and aggregates written"),
                "progress: {stderr}"
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(stdout.contains("from 900 events"), "{stdout}");
            check_all_windows(&app, &sent).await;
            app.terminate().await;
            return;
        }
    };

    // Offline: stop, rebuild, restart; compare rows within one minute.
    eventually(Duration::from_secs(61), "a fresh minute", || async {
        (now_ms() % 60_000 < 40_000).then_some(())
    })
    .await;
    let before = rows(&app).await;
    app.terminate().await;
    let output = offline_rebuild(dir).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rebuild failed: {stderr}");
    assert!(
        stderr.contains("rebuild: 900/900 events (100%)"),
        "progress: {stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("rebuilt"));

    let app = spawn_app(dir, &keys).await;
    let after = rows(&app).await;
    if now_ms() / 60_000 == before_minute(&before) {
        assert_eq!(after, before, "offline rebuild changed the rows");
    } else {
        check_all_windows(&app, &sent).await;
    }

    // A running server holds the store: an offline rebuild is refused.
    let refused = offline_rebuild(dir).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"));
    app.terminate().await;
}

/// The minute before whose end the `before` rows' windows end.
fn before_minute(rows: &[String]) -> i64 {
    let row: serde_json::Value = serde_json::from_str(&rows[1]).expect("json");
    crate::helpers::parse_ms(&row["data"]["window_end"]) / 60_000 - 1
}

/// Every row, as the server sends it.
async fn rows(app: &crate::helpers::Api) -> Vec<String> {
    let mut out = Vec::new();
    for kind in KINDS {
        out.push(app.expose_text(kind).await);
    }
    out
}

async fn offline_rebuild(dir: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(sygno_bin())
        .args(["rebuild", "--data-dir"])
        .arg(dir)
        .output()
        .await
        .expect("sygno rebuild")
}

on_every_store!(rebuilds_equal_incremental_processing);
