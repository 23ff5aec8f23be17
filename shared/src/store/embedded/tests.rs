use super::*;
use crate::domain::stats::Moments;
use crate::domain::tiers::Tier;
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
async fn batches_answer_in_order_and_repeat_as_duplicates() {
    let (_dir, store) = store();
    contract_tests::batches_answer_in_order_and_repeat_as_duplicates(&store).await;
    assert_eq!(store.head().await.expect("head"), 10);
}

/// A batch is one transaction: an event that cannot be stored (here a
/// reused event id) fails the whole batch and stores none of it, while
/// the appends committed in the same group are untouched.
#[tokio::test]
async fn a_batch_is_stored_whole_or_not_at_all() {
    let (_dir, store) = store();
    let bad = vec![
        new_event("x1", "u", None),
        new_event("x2", "u", None),
        new_event("x1", "u", None),
    ];
    let (batch, single) = tokio::join!(
        store.append_batch(bad),
        store.append(new_event("alone", "u", None))
    );
    assert!(batch.is_err(), "{batch:?}");
    assert!(!single.expect("the single append").duplicate);
    let stored: Vec<String> = store
        .read_after(0, 100)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(stored, ["alone"]);
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

fn key(scope: &Scope, tier: Tier, index: i64) -> SummaryKey {
    SummaryKey {
        scope: scope.clone(),
        tier,
        index,
    }
}

#[tokio::test]
async fn a_stored_row_that_does_not_read_is_skipped_at_open() {
    let (dir, store) = store();
    let source = Scope::Source("gh".into());
    let commit = AggregateCommit {
        expected_checkpoint: Some(0),
        checkpoint: Some(1),
        views: vec![(source.clone(), ExposeKind::DayStats, "{\"not\":".into())],
        ..AggregateCommit::default()
    };
    store.commit(commit).await.expect("commit");
    drop(store);
    let store = EmbeddedStore::open(dir.path()).expect("opens all the same");
    assert_eq!(
        store
            .view(&source, ExposeKind::DayAverage)
            .await
            .expect("view"),
        None,
        "nothing derived from it"
    );
    assert_eq!(store.load().await.expect("load").checkpoint, 1);
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
            sd: 1.0 / 3.0,
            min: -1e308,
            max: 5e-324,
        },
    );
    let source = Scope::Source("gh".into());
    let mut state = crate::domain::fold::ScopeState {
        events: 2,
        ..Default::default()
    };
    state.fields.admit(
        &crate::domain::fields::Fields::from([("x".to_owned(), 1.0)]),
        0,
        10,
    );
    let rows: Vec<(Scope, ExposeKind, String)> =
        crate::views::render_windows(60_000, &[summary.clone(), summary.clone()], 0)
            .into_iter()
            .map(|(kind, doc)| (source.clone(), kind, doc))
            .collect();
    let commit = AggregateCommit {
        expected_checkpoint: Some(0),
        checkpoint: Some(9),
        summaries: vec![
            (key(&source, Tier::Minute, 5), summary.clone()),
            (key(&Scope::All, Tier::Hour, 100), Summary::default()),
        ],
        scopes: vec![(source.clone(), state.clone())],
        views: rows.clone(),
        sources: vec![("gh".into(), "{\"name\":\"gh\"}".into())],
        ..AggregateCommit::default()
    };
    store.commit(commit).await.expect("commit");
    let stale = AggregateCommit {
        expected_checkpoint: Some(0),
        checkpoint: Some(10),
        ..AggregateCommit::default()
    };
    assert!(matches!(
        store.commit(stale).await,
        Err(StoreError::Conflict(_))
    ));
    let view = store
        .view(&source, ExposeKind::DayAverage)
        .await
        .expect("view");
    assert_eq!(view.as_deref(), Some(rows[0].2.as_str()));
    assert_eq!(
        store
            .view(&Scope::All, ExposeKind::DayAverage)
            .await
            .expect("view"),
        None
    );
    drop(store);
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    let loaded = store.load().await.expect("load");
    assert_eq!((loaded.checkpoint, loaded.generation), (9, 0));
    assert_eq!(loaded.scopes.get(&source), Some(&state));
    assert_eq!(
        store
            .load_summaries(
                0,
                &[key(&source, Tier::Minute, 5), key(&source, Tier::Minute, 6)]
            )
            .await
            .expect("load"),
        vec![(key(&source, Tier::Minute, 5), summary)],
        "f64s read back bit for bit"
    );
    let ranged = store
        .load_ranges(
            0,
            &[
                (Scope::All, Tier::Hour, 0..101),
                (source.clone(), Tier::Hour, 0..101),
            ],
        )
        .await
        .expect("ranges");
    assert_eq!(
        ranged,
        vec![(key(&Scope::All, Tier::Hour, 100), Summary::default())]
    );
    // Only the stats rows are stored: the v1 window rows are derived
    // from them at open, byte for byte as rendered.
    for (_, kind, doc) in &rows {
        let view = store.view(&source, *kind).await.expect("view");
        assert_eq!(view.as_deref(), Some(doc.as_str()), "{kind:?} read at open");
    }
    let stored: i64 = store
        .with_aggregates(|c| {
            c.query_row("SELECT count(*) FROM views", [], |r| r.get(0))
                .map_err(sql_err)
        })
        .await
        .expect("count");
    assert_eq!(stored, 2, "the two stats rows");
    assert_eq!(
        store
            .sources_page(None, usize::MAX)
            .await
            .expect("sources")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_switch_replaces_everything_with_the_new_generation() {
    let (_dir, store) = store();
    let old = AggregateCommit {
        expected_checkpoint: Some(0),
        checkpoint: Some(3),
        summaries: vec![(key(&Scope::All, Tier::Minute, 1), Summary::default())],
        views: vec![(Scope::Source("old".into()), ExposeKind::Latest, "{}".into())],
        sources: vec![("old".into(), "{}".into())],
        ..AggregateCommit::default()
    };
    store.commit(old).await.expect("commit");
    // A rebuild's step writes its generation without touching the live one.
    let step = AggregateCommit {
        generation: 1,
        summaries: vec![(key(&Scope::All, Tier::Minute, 2), Summary::default())],
        ..AggregateCommit::default()
    };
    store.commit(step).await.expect("step");
    let loaded = store.load().await.expect("load");
    assert_eq!(
        (loaded.checkpoint, loaded.generation, loaded.max_generation),
        (3, 0, 1)
    );
    let switch = AggregateCommit {
        checkpoint: Some(4),
        generation: 1,
        switch: true,
        sources: vec![("new".into(), "{}".into())],
        ..AggregateCommit::default()
    };
    store.commit(switch).await.expect("switch");
    let loaded = store.load().await.expect("load");
    assert_eq!(
        (loaded.checkpoint, loaded.generation, loaded.max_generation),
        (4, 1, 1)
    );
    assert!(store
        .load_summaries(0, &[key(&Scope::All, Tier::Minute, 1)])
        .await
        .expect("load")
        .is_empty());
    assert_eq!(
        store
            .sources_page(None, usize::MAX)
            .await
            .expect("sources")
            .len(),
        1
    );
    assert_eq!(
        store
            .view(&Scope::Source("old".into()), ExposeKind::Latest)
            .await
            .expect("view"),
        None
    );
}

#[tokio::test]
async fn aggregates_of_the_first_format_are_dropped_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let conn = Connection::open(dir.path().join("aggregates.db")).expect("open");
        conn.execute_batch(
            "CREATE TABLE checkpoint (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
             INSERT INTO checkpoint VALUES (0, 42);
             CREATE TABLE buckets (bucket INTEGER PRIMARY KEY, summary TEXT NOT NULL);
             CREATE TABLE views (kind TEXT PRIMARY KEY, doc TEXT NOT NULL);",
        )
        .expect("v1 tables");
    }
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.checkpoint, 0, "folded again from the start");
}

#[tokio::test]
async fn sources_past_the_bound_are_refused_and_the_bound_survives_a_reopen() {
    let (dir, store) = store();
    store.set_max_sources(3);
    let refused = contract_tests::sources_past_the_bound_are_refused(&store).await;
    let stored = store.read_after(0, 100).await.expect("read");
    assert_eq!(stored.len(), 6, "s1 to s6");
    assert!(stored
        .iter()
        .all(|e| !refused.contains(&e.event_id.as_str())));
    drop(store);
    let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
    reopened.set_max_sources(3);
    contract_tests::bound_holds(&reopened, 3, ("r7", "d"), Some(("s7", "c"))).await;
}

/// 100,000 sources, a batch of 1,000 new ones at a time: every one is
/// taken up to the bound, the next is refused, and a store whose log
/// predates `log_sources` (the table emptied) counts its sources again
/// from the events at open.
#[tokio::test]
async fn a_hundred_thousand_sources_fill_the_bound_exactly() {
    let (dir, store) = store();
    store.set_max_sources(100_000);
    for batch in 0..100 {
        let events = (0..1_000)
            .map(|i| {
                let n = batch * 1_000 + i;
                contract_tests::named(&format!("e{n}"), &format!("source-{n}"))
            })
            .collect();
        store.append_batch(events).await.expect("within the bound");
    }
    contract_tests::bound_holds(&store, 100_000, ("x", "one-too-many"), None).await;
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("events.db")).expect("open");
    conn.execute("DELETE FROM log_sources", [])
        .expect("empty it");
    drop(conn);
    let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
    reopened.set_max_sources(100_000);
    contract_tests::bound_holds(
        &reopened,
        100_000,
        ("x", "one-too-many"),
        Some(("y", "source-99999")),
    )
    .await;
}
