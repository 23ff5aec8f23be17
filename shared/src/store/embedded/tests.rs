use super::*;
use crate::domain::stats::Moments;
use crate::store::contract_tests::{self, new_event};

fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    (dir, store)
}

#[tokio::test]
async fn appends_read_back_in_order_and_survive_reopen() {
    let (dir, store) = store();
    for i in 0..5 {
        store
            .append(new_event(&format!("e{i}"), "u", None))
            .await
            .expect("append");
    }
    let events = store.read_after(0, 100).await.expect("read");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        store.read_after(3, 1).await.expect("read")[0].event_id,
        "e3"
    );
    drop(store);
    let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.head().await.expect("head"), 5);
    assert_eq!(reopened.read_after(0, 100).await.expect("read"), events);
}

#[tokio::test]
async fn idempotency_is_scoped_per_writer() {
    let (_dir, store) = store();
    contract_tests::idempotency_is_scoped_per_writer(&store).await;
    assert_eq!(store.head().await.expect("head"), 2);
}

#[tokio::test]
async fn concurrent_appends_share_commits_and_all_land() {
    let (_dir, store) = store();
    contract_tests::concurrent_repeats_append_once_per_key(Arc::new(store.clone()), 200, 150).await;
    assert_eq!(store.head().await.expect("head"), 150);
}

#[tokio::test]
async fn the_log_is_append_only() {
    let (dir, store) = store();
    store
        .append(new_event("a", "u", None))
        .await
        .expect("append");
    drop(store);
    let conn = Connection::open(dir.path().join("events.db")).expect("open");
    assert!(conn.execute("UPDATE events SET name = 'x'", []).is_err());
    assert!(conn.execute("DELETE FROM events", []).is_err());
}

#[tokio::test]
async fn a_second_process_cannot_open_the_store() {
    let (dir, _store) = store();
    assert!(matches!(
        EmbeddedStore::open(dir.path()),
        Err(StoreError::Locked(_))
    ));
}

#[tokio::test]
async fn aggregate_commits_are_checked_against_the_checkpoint() {
    let (dir, store) = store();
    let mut summary = Summary {
        events: 2,
        ..Summary::default()
    };
    summary.fields.insert(
        "x".into(),
        Moments {
            count: 2,
            mean: 0.1 + 0.2,
            m2: 1.0 / 3.0,
        },
    );
    let commit = AggregateCommit {
        expected_checkpoint: Some(0),
        checkpoint: 9,
        buckets: vec![(5, summary.clone()), (100, Summary::default())],
        views: vec![(ExposeKind::DayAverage, "{\"doc\":1}".into())],
        ..AggregateCommit::default()
    };
    store.commit(commit).await.expect("commit");
    let stale = AggregateCommit {
        expected_checkpoint: Some(0),
        checkpoint: 10,
        ..AggregateCommit::default()
    };
    assert!(matches!(
        store.commit(stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .view(ExposeKind::DayAverage)
            .await
            .expect("view")
            .as_deref(),
        Some("{\"doc\":1}")
    );
    drop(store);
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    let loaded = store.load(10).await.expect("load");
    assert_eq!(loaded.checkpoint, 9);
    assert_eq!(loaded.buckets, vec![(100, Summary::default())]);
    assert_eq!(
        store.load_buckets(&[5, 6]).await.expect("load"),
        vec![(5, summary)],
        "f64s read back bit for bit"
    );
    assert!(
        store
            .view(ExposeKind::DayAverage)
            .await
            .expect("view")
            .is_some(),
        "rows are read at open"
    );
}
