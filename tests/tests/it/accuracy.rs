//! Thousands of random events over 9 days, checked against the exact
//! reference; window edges; events in the future.

use crate::exact::{check_all_windows, random_body, wait_until_aggregated, write_all};
use crate::helpers::{now_ms, on_every_store, parse_ms, rfc3339, Keys, StoreKind, TestStore};
use rand::Rng;

const DAY: i64 = 86_400_000;

async fn windows_match_the_exact_statistics_of_thousands_of_events(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let app = store.spawn(&Keys::random()).await;
    let mut rng = rand::rng();
    let now = now_ms();
    let mut bodies = Vec::new();
    for _ in 0..3000 {
        let t = now - rng.random_range(0..9 * DAY);
        bodies.push(random_body(&mut rng, t));
    }
    // Window edges for the windows that end at the next minute boundary
    // (and the one after, in case the minute turns during the test).
    let next_boundary = (now / 60_000 + 1) * 60_000;
    for end in [next_boundary, next_boundary + 60_000] {
        for t in [
            end - DAY - 1,
            end - DAY,
            end - DAY + 1,
            end - 7 * DAY - 1,
            end - 7 * DAY,
            end - 1,
        ] {
            bodies.push(random_body(&mut rng, t));
        }
    }
    // A few minutes ahead: accepted, outside the window until its minute comes.
    bodies.push(random_body(&mut rng, now + 4 * 60_000));
    let sent = write_all(&app, bodies, 16).await;
    assert_eq!(sent.len(), 3000 + 12 + 1);
    wait_until_aggregated(&app, &sent).await;
    check_all_windows(&app, &sent).await;

    // latest: the greatest event_time, here the one 4 minutes ahead.
    let (status, body) = app.expose("latest").await;
    assert_eq!(status, 200);
    assert_eq!(
        parse_ms(&body["data"]["event_time"]),
        sent.iter().map(|s| s.event_time).max().unwrap_or_default()
    );
    app.terminate().await;
}

async fn an_acknowledged_write_is_visible_within_a_second(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let app = store.spawn(&Keys::random()).await;
    let mut rng = rand::rng();
    for i in 0..5 {
        let (body, _) = random_body(&mut rng, now_ms());
        let (status, answer) = app.write_raw(&body, None).await;
        assert_eq!(status, 200);
        let acked = std::time::Instant::now();
        let id = answer["data"]["event_id"].clone();
        loop {
            let (_, latest) = app.expose("latest").await;
            if latest["data"]["event_id"] == id {
                break;
            }
            assert!(
                acked.elapsed().as_millis() < 1000,
                "write {i} not visible after 1 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    app.terminate().await;
}

async fn an_empty_store_reports_empty_windows_and_no_latest(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let app = store.spawn(&Keys::random()).await;
    let (status, body) = app.expose("latest").await;
    assert_eq!(status, 404);
    assert_eq!(body["data"]["error"], "not_found");
    let (status, body) = app.expose("7d_devt").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["count"], 0);
    assert_eq!(body["data"]["fields"], serde_json::json!({}));
    let end = parse_ms(&body["data"]["window_end"]);
    assert!(
        (end - now_ms()).abs() <= 60_000,
        "window_end {} is not within 60 s of now",
        rfc3339(end)
    );
    app.terminate().await;
}

on_every_store!(
    windows_match_the_exact_statistics_of_thousands_of_events,
    an_acknowledged_write_is_visible_within_a_second,
    an_empty_store_reports_empty_windows_and_no_latest
);
