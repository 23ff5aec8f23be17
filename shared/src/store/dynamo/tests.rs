//! The DynamoDB adapter against a real DynamoDB wire-protocol server (see
//! [`super::testing`]).

use super::state::{row_version, AggState, Commit, RowsWrite, ScopeItem, Versioned};
use super::testing::fresh_store;
use super::*;
use crate::domain::fold::{ScopeState, SummaryKey};
use crate::domain::summary::Summary;
use crate::domain::tiers::Tier;
use crate::store::contract_tests::{self, new_event};

async fn store() -> Option<DynamoStore> {
    fresh_store("sygno-test").await.map(|(store, _)| store)
}

/// Arms the test server (scripts/moto_server.py) to lose the response of
/// the next PutItem carrying `text`: the item is stored, the answer is a
/// 500, and the SDK retries.
fn lose_next_put_response(text: &str) {
    test_server_fault("lose-response", text, "armed");
}

/// Sends `POST /_sygno/<fault>` with `text` to the test server
/// (scripts/moto_server.py) and checks its answer.
fn test_server_fault(fault: &str, text: &str, expected: &str) {
    use std::io::{Read, Write};
    let endpoint = std::env::var(super::testing::ENDPOINT_VAR).expect("endpoint");
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).expect("connect");
    write!(
        conn,
        "POST /_sygno/{fault} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    )
    .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read");
    assert!(answer.contains(expected), "{answer}");
}

/// A batch whose puts fail midway (DynamoDB throttles some of them) is a
/// failure that stored part of it; retried with the same idempotency keys
/// once the store recovers, it completes: every event once, the ones the
/// first attempt stored answered as duplicates.
#[tokio::test]
async fn a_batch_that_failed_midway_completes_on_retry_without_duplicates() {
    let Some((store, _log)) = fresh_store("sygno-test").await else {
        return;
    };
    let marker = format!("refuse-{}", uuid::Uuid::now_v7());
    let batch = |attempt: &str| -> Vec<NewEvent> {
        (0..40)
            .map(|i| {
                let mut e = new_event(&format!("{attempt}-{i}"), "u", Some(&format!("b {i}")));
                if (15..20).contains(&i) {
                    e.data = format!(r#"{{"x": {i}, "tag": "{marker}"}}"#);
                }
                e
            })
            .collect()
    };
    test_server_fault("refuse-puts", &marker, "armed");
    let failed = store.append_batch(batch("first")).await;
    test_server_fault("clear-faults", "", "cleared");
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    let stored = count_events(&store).await;
    assert!(
        (1..40).contains(&stored),
        "part of the batch was stored: {stored}"
    );

    let retried = store.append_batch(batch("retry")).await.expect("the retry");
    assert_eq!(retried.len(), 40);
    assert_eq!(count_events(&store).await, 40, "every event once");
    let fresh: Vec<usize> = (0..40).filter(|&i| !retried[i].duplicate).collect();
    assert_eq!(fresh.len(), 40 - stored);
    assert!((15..20).all(|i| fresh.contains(&i)), "{fresh:?}");
    for (i, appended) in retried.iter().enumerate() {
        let attempt = if appended.duplicate { "first" } else { "retry" };
        assert_eq!(appended.event_id, format!("{attempt}-{i}"));
    }
}

/// How many events the table's log holds (a consistent scan).
async fn count_events(store: &DynamoStore) -> usize {
    let items: Vec<_> = store
        .client
        .scan()
        .table_name(&*store.table)
        .consistent_read(true)
        .filter_expression("kind = :event")
        .expression_attribute_values(":event", s("event"))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("scan");
    items.len()
}

/// An append whose first attempt stored the event but whose response was
/// lost: the SDK's retry fails its condition on the item the first
/// attempt wrote, which is this very event: a success, not a 503, and
/// one event in the log (with an Idempotency-Key or without).
#[tokio::test]
async fn an_append_retried_after_a_lost_response_succeeds_once() {
    let Some((store, log)) = fresh_store("sygno-test").await else {
        return;
    };
    for (id, key) in [("lost-1", None), ("lost-2", Some("k"))] {
        lose_next_put_response(id);
        let appended = store
            .append(new_event(id, "u", key))
            .await
            .expect("a retried append succeeds");
        assert_eq!(
            (appended.event_id.as_str(), appended.duplicate),
            (id, false)
        );
        let puts = log.take().iter().filter(|op| *op == "PutItem").count();
        assert!(
            puts >= 2,
            "the first attempt's response was lost: {puts} PutItem"
        );
    }
    // A real repeat of the Idempotency-Key is still a duplicate.
    let again = store
        .append(new_event("lost-3", "u", Some("k")))
        .await
        .expect("append");
    assert_eq!((again.event_id.as_str(), again.duplicate), ("lost-2", true));
    let mut ids = Vec::new();
    for shard in 0..LOG_SHARDS {
        let page = store.read_log_page(shard, None).await.expect("page");
        ids.extend(page.events.into_iter().map(|e| e.event_id));
    }
    ids.sort();
    assert_eq!(ids, ["lost-1", "lost-2"]);
}

#[tokio::test]
async fn create_table_is_idempotent_with_stream_and_ttl() {
    let Some(store) = store().await else { return };
    store
        .create_table()
        .await
        .expect("second create is a no-op");
    let table = store
        .client()
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let stream = table.stream_specification().expect("stream");
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewImage));
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .expect("ttl");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE));
}

#[tokio::test]
async fn an_append_is_one_item_stored_as_sent() {
    let Some(store) = store().await else { return };
    let event = new_event("id-1", "u1", None);
    let key = event_key(&event);
    assert!(key.0.starts_with("log#") && key.1 == "ev#id-1", "{key:?}");
    let appended = store.append(event).await.expect("append");
    assert!(!appended.duplicate);
    let item = store
        .client()
        .get_item()
        .table_name(store.table())
        .key(PK, s(key.0))
        .key(SK, s(key.1))
        .send()
        .await
        .expect("get")
        .item
        .expect("stored");
    assert_eq!(
        get_s(&item, "data").expect("data"),
        r#"{"x": 1.50, "n": {"y": 2}}"#
    );
    assert_eq!(get_n(&item, "event_time").expect("time"), 1_764_000_000_123);
    assert_eq!(get_s(&item, "user_id").expect("user"), "u1");
}

#[tokio::test]
async fn idempotency_is_a_conditional_write_scoped_per_writer() {
    let Some(store) = store().await else { return };
    contract_tests::idempotency_is_scoped_per_writer(&store).await;
    contract_tests::batches_answer_in_order_and_repeat_as_duplicates(&store).await;
    contract_tests::concurrent_repeats_append_once_per_key(Arc::new(store), 10, 1).await;
}

#[tokio::test]
async fn an_event_id_is_never_overwritten() {
    let Some(store) = store().await else { return };
    store
        .append(new_event("same", "u1", None))
        .await
        .expect("append");
    let mut clash = new_event("same", "u1", None);
    clash.data = r#"{"other": true}"#.into();
    assert!(matches!(
        store.append(clash).await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn rows_read_back_with_one_get_and_never_go_back_a_version() {
    let Some(store) = store().await else { return };
    let gh = Scope::Source("gh".into());
    assert!(store
        .view(&gh, ExposeKind::DayStats)
        .await
        .expect("view")
        .is_none());
    let rows = |version: u64, end: i64, doc: &str| RowsWrite {
        end,
        versions: [(gh.clone(), version)].into_iter().collect(),
        views: vec![(gh.clone(), ExposeKind::DayStats, doc.to_owned())],
        sources: vec![("gh".into(), format!(r#"{{"name":"gh","v":{version}}}"#))],
    };
    store
        .write_rows(rows(2, 60_000, r#"{"v":2}"#))
        .await
        .expect("write");
    // An older render arriving late changes nothing, nor does one of the
    // same version with windows ending earlier.
    for (version, end) in [(1, 120_000), (2, 0)] {
        store
            .write_rows(rows(version, end, r#"{"v":1}"#))
            .await
            .expect("write");
    }
    let got = store.view(&gh, ExposeKind::DayStats).await.expect("view");
    assert_eq!(got.as_deref(), Some(r#"{"v":2}"#));
    // The same version with windows ending later (a roll) replaces it.
    store
        .write_rows(rows(2, 120_000, r#"{"v":2,"rolled":true}"#))
        .await
        .expect("write");
    let got = store.view(&gh, ExposeKind::DayStats).await.expect("view");
    assert_eq!(got.as_deref(), Some(r#"{"v":2,"rolled":true}"#));
    // Any generation's rows rank above those of earlier ones and above
    // the state versions earlier releases stamped.
    assert!(row_version(0, 1) > (1 << 40) - 1);
    assert!(row_version(1, 1) > row_version(0, (1 << 40) - 1));
    assert!(store
        .view(&Scope::All, ExposeKind::DayStats)
        .await
        .expect("view")
        .is_none());
    assert!(store
        .view(&gh, ExposeKind::WeekDevt)
        .await
        .expect("view")
        .is_none());
    let sources = store.sources_page(None, usize::MAX).await.expect("sources");
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].0, "gh");
    assert_eq!(&*sources[0].1, r#"{"name":"gh","v":2}"#);
}

/// A `latest` row keeps the latest event by the fold's order, whatever
/// order the writes land in (ties on time go to the later receipt, then
/// the greater id).
#[tokio::test]
async fn latest_rows_keep_the_latest_event_in_any_order() {
    use crate::domain::fold::LatestKey;
    let Some(store) = store().await else { return };
    let key = |event_time: i64, received_at: i64, id: &str| LatestKey {
        event_time,
        received_at,
        event_id: id.into(),
    };
    let keys = [
        key(-5, 9, "a"),
        key(7, 1, "b"),
        key(7, 2, "a"),
        key(7, 2, "c"),
        key(6, 100, "z"),
    ];
    let winner = keys.iter().max().cloned().expect("keys");
    for order in [[0, 1, 2, 3, 4], [3, 4, 2, 0, 1], [4, 3, 2, 1, 0]] {
        let scope = Scope::Source(format!("gh{}", order[0]));
        for i in order {
            let doc = format!(r#"{{"id":"{}"}}"#, keys[i].event_id);
            store
                .write_latest(&[(scope.clone(), keys[i].clone(), doc)])
                .await
                .expect("write");
        }
        let got = store.view(&scope, ExposeKind::Latest).await.expect("view");
        assert_eq!(
            got.as_deref(),
            Some(format!(r#"{{"id":"{}"}}"#, winner.event_id).as_str()),
            "{order:?}"
        );
    }
}

/// The v1 window rows are not stored: a read derives them from the stats
/// row of their window, and a rows write leaves them out.
#[tokio::test]
async fn v1_window_rows_are_read_from_the_stats_rows() {
    let Some((store, log)) = fresh_store("sygno-derive").await else {
        return;
    };
    let gh = Scope::Source("gh".into());
    let mut summary = Summary::default();
    for v in [1.0, 2.5, 4.0] {
        summary.record(&[("x".to_owned(), v)].into_iter().collect());
    }
    let end = 120_000;
    let views: Vec<(Scope, ExposeKind, String)> = ExposeKind::ALL
        .into_iter()
        .filter(|k| *k != ExposeKind::Latest)
        .map(|k| {
            (
                gh.clone(),
                k,
                crate::views::render_window(k, end, &summary, 0),
            )
        })
        .collect();
    log.take();
    store
        .write_rows(RowsWrite {
            end,
            versions: [(gh.clone(), 1)].into_iter().collect(),
            views: views.clone(),
            sources: vec![],
        })
        .await
        .expect("write");
    assert_eq!(log.take(), ["PutItem", "PutItem"], "the two stats rows");
    for (_, kind, doc) in &views {
        let read = store.view(&gh, *kind).await.expect("view");
        assert_eq!(read.as_deref(), Some(doc.as_str()), "{kind:?}");
        assert_eq!(log.take(), ["GetItem"], "one read per expose");
    }
}

#[tokio::test]
async fn ping_fails_for_a_missing_table() {
    let Some(store) = store().await else { return };
    store.ping().await.expect("ping");
    let missing = DynamoStore::new(store.client().clone(), "no-such-table");
    assert!(matches!(
        missing.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// The request budget of the write and read paths, measured on the wire.
#[tokio::test]
async fn one_request_per_append_and_per_read() {
    let Some((store, log)) = fresh_store("sygno-count").await else {
        return;
    };
    for i in 0..20 {
        store
            .append(new_event(&format!("e{i}"), "u", None))
            .await
            .expect("append");
    }
    // A source new to the table costs its registration once (its item,
    // its `sources` entry and the count read, one transaction: see
    // `sources`); then one write per event.
    let mut registration = vec!["GetItem", "GetItem", "GetItem", "TransactWriteItems"];
    registration.extend(vec!["PutItem"; 20]);
    assert_eq!(log.take(), registration, "one write per event");
    let units = log.take_capacity();
    eprintln!("append: ~{:.2} WCU per event", (units.write - 4.0) / 20.0);
    assert_eq!(
        units.write, 24.0,
        "an event item under 1 KB costs one unit; a registration, two items in a transaction, four"
    );
    store
        .append(new_event("k1", "u", Some("key")))
        .await
        .expect("append");
    assert_eq!(log.take(), ["PutItem"], "one write per keyed event");
    let duplicate = store
        .append(new_event("k2", "u", Some("key")))
        .await
        .expect("append");
    assert!(duplicate.duplicate);
    let repeat = log.take();
    assert!(
        repeat == ["PutItem"] || repeat == ["PutItem", "GetItem"],
        "a repeat is one failed conditional write (plus a read where the server does not return the item): {repeat:?}"
    );
    log.take_capacity();
    store
        .view(&Scope::All, ExposeKind::DayDevt)
        .await
        .expect("view");
    assert_eq!(log.take(), ["GetItem"], "one read per expose");
    eprintln!("expose: ~{:.2} RCU", log.take_capacity().read);
}

fn summary_of(values: &[f64]) -> Summary {
    let mut summary = Summary::default();
    for v in values {
        summary.record(&[("x".to_owned(), *v)].into_iter().collect());
    }
    summary
}

fn minute(index: i64) -> (u64, SummaryKey) {
    (
        1,
        SummaryKey {
            scope: Scope::Source("gh".into()),
            tier: Tier::Minute,
            index,
        },
    )
}

/// Versions as a commit writes them: none read (a new item).
fn fresh<K>(items: Vec<(K, Summary)>) -> Vec<(K, Versioned<Summary>)> {
    items
        .into_iter()
        .map(|(k, value)| (k, Versioned { value, version: 0 }))
        .collect()
}

/// Each commit's marks are an item of its own: commits adding marks to
/// the same second never contend, and a read finds them all.
#[tokio::test]
async fn marks_of_commits_in_one_second_are_all_kept() {
    let Some(store) = store().await else { return };
    let commit = |marks: &[u64]| {
        let store = store.clone();
        let marks = [(5, marks.to_vec())].into_iter().collect();
        async move {
            store
                .commit(Commit {
                    marks,
                    ..Commit::default()
                })
                .await
        }
    };
    let (a, b) = tokio::join!(commit(&[1, 2]), commit(&[3]));
    a.expect("first");
    b.expect("second");
    commit(&[4]).await.expect("third");
    let seconds = [4, 5].into_iter().collect();
    let read = store.read_applied(&seconds).await.expect("read");
    assert_eq!(read.marks.len(), 1, "no marks in second 4: {read:?}");
    assert_eq!(
        read.marks[&5].iter().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(read.items.len(), 3, "one item a commit: {read:?}");
    // A commit's scope items name its marks items, and a read finds them.
    let gh = (1, Scope::Source("gh".into()));
    store
        .commit(Commit {
            marks: [(7, vec![9]), (8, vec![10])].into_iter().collect(),
            scopes: &[(gh.clone(), ScopeItem::default())],
            ..Commit::default()
        })
        .await
        .expect("commit");
    let item = store
        .read_scopes(std::slice::from_ref(&gh))
        .await
        .expect("read")[&gh]
        .clone();
    assert_eq!(
        item.last_marks.iter().map(|k| k.0).collect::<Vec<_>>(),
        [7, 8]
    );
    let read = store
        .read_applied(&[7, 8].into_iter().collect())
        .await
        .expect("read");
    assert!(item.last_marks.iter().all(|k| read.items.contains(k)));
    // A commit without marks keeps the names it read.
    store
        .commit(Commit {
            scopes: &[(gh.clone(), item.clone())],
            ..Commit::default()
        })
        .await
        .expect("commit");
    let again = store
        .read_scopes(std::slice::from_ref(&gh))
        .await
        .expect("read")[&gh]
        .clone();
    assert_eq!(again.last_marks, item.last_marks);
}

/// The state item is written only as read: a writer that read an older
/// version loses, and nothing it sent lands.
#[tokio::test]
async fn state_writes_are_conditional_on_the_version_read() {
    let Some(store) = store().await else { return };
    assert_eq!(store.read_state().await.expect("read"), AggState::default());
    let mut state = AggState {
        version: 1,
        rendered_end: 60_000,
        ..AggState::default()
    };
    store.write_state(&state).await.expect("first write");
    assert_eq!(store.read_state().await.expect("read"), state);
    let stale = AggState {
        rendered_end: 0,
        ..state.clone()
    };
    assert!(matches!(
        store.write_state(&stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.read_state().await.expect("read"), state);
    state.version = 2;
    store.write_state(&state).await.expect("next write");
    assert!(matches!(
        store.write_state(&state).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Each summary and scope item a commit replaces is conditional on the
/// version read: a commit planned on a stale read is refused whole, and
/// commits of different aggregates never meet.
#[tokio::test]
async fn aggregate_commits_are_conditional_on_each_items_version() {
    let Some(store) = store().await else { return };
    let gh = Scope::Source("gh".into());
    let commit = |key: (u64, SummaryKey), values: &[f64], version: u64| {
        let store = store.clone();
        let summary = Versioned {
            value: summary_of(values),
            version,
        };
        let scope = (key.0, key.1.scope.clone());
        let item = ScopeItem {
            version,
            ..ScopeItem::default()
        };
        async move {
            store
                .commit(Commit {
                    scopes: &[(scope, item)],
                    summaries: &[(key, summary)],
                    ..Commit::default()
                })
                .await
        }
    };
    commit(minute(5), &[1.0], 0).await.expect("first commit");
    // Planned as if the summary were new: refused, and nothing lands.
    assert!(matches!(
        commit(minute(5), &[2.0], 0).await,
        Err(StoreError::Conflict(_))
    ));
    let read = store.read_summaries(&[minute(5)]).await.expect("read");
    assert_eq!(read[&minute(5)].value, summary_of(&[1.0]));
    assert_eq!(read[&minute(5)].version, 1);
    let scopes = store.read_scopes(&[(1, gh.clone())]).await.expect("read");
    assert_eq!(scopes[&(1, gh.clone())].version, 1);
    commit(minute(5), &[1.0, 2.0], 1).await.expect("as read");
    // Another aggregate's commit does not care what this one did.
    let mut other = minute(5);
    other.1.scope = Scope::Source("other".into());
    commit(other, &[3.0], 0).await.expect("another aggregate");
    let read = store.read_summaries(&[minute(5)]).await.expect("read");
    assert_eq!(
        (read[&minute(5)].value.events, read[&minute(5)].version),
        (2, 2)
    );
}

#[tokio::test]
async fn summaries_read_back_by_key_and_by_index_range() {
    let Some(store) = store().await else { return };
    let gh = Scope::Source("gh".into());
    let summaries: Vec<((u64, SummaryKey), Summary)> = [-61, -1, 0, 1, 59, 60, 120]
        .iter()
        .map(|i| (minute(*i), summary_of(&[*i as f64, 0.5])))
        .collect();
    let hour = (
        1,
        SummaryKey {
            scope: gh.clone(),
            tier: Tier::Hour,
            index: 0,
        },
    );
    let other = (
        1,
        SummaryKey {
            scope: Scope::All,
            tier: Tier::Minute,
            index: 0,
        },
    );
    let mut all = summaries.clone();
    all.push((hour.clone(), summary_of(&[7.0])));
    all.push((other, summary_of(&[9.0])));
    let mut scope_state = ScopeState {
        events: 7,
        first_event_time: Some(-3),
        ..ScopeState::default()
    };
    scope_state
        .fields
        .admit(&[("x".to_owned(), 1.0)].into_iter().collect(), 5, 10);
    let mut scope_item = ScopeItem {
        state: scope_state,
        latest: Some(r#"{"type":"latest"}"#.into()),
        version: 0,
        last_marks: Vec::new(),
    };
    store
        .commit(Commit {
            scopes: &[((1, gh.clone()), scope_item.clone())],
            summaries: &fresh(all),
            ..Commit::default()
        })
        .await
        .expect("commit");
    scope_item.version = 1;
    let ranged = store
        .query_summaries(1, &gh, Tier::Minute, -1..60)
        .await
        .expect("query");
    let expected: Vec<(i64, Summary)> = summaries
        .iter()
        .filter(|((_, k), _)| (-1..60).contains(&k.index))
        .map(|((_, k), s)| (k.index, s.clone()))
        .collect();
    assert_eq!(
        ranged, expected,
        "in index order, bit for bit, one aggregate's"
    );
    assert!(store
        .query_summaries(2, &gh, Tier::Minute, -100..200)
        .await
        .expect("query")
        .is_empty());
    let by_key = store
        .read_summaries(&[minute(-61), minute(3), hour.clone()])
        .await
        .expect("read");
    assert_eq!(by_key.len(), 2);
    assert_eq!(by_key[&hour].value, summary_of(&[7.0]));
    let scopes = store.query_scopes(1).await.expect("scopes");
    assert_eq!(scopes, vec![(gh.clone(), scope_item.clone())]);
    let read = store
        .read_scopes(&[(1, gh.clone()), (1, Scope::All)])
        .await
        .expect("scopes");
    assert_eq!(read.len(), 1);
    assert_eq!(read[&(1, gh)], scope_item);
    // The source's eight summaries and its scope item (all events had no
    // scope item here, so its summary is not found).
    assert_eq!(store.delete_generation(1).await.expect("delete"), 9);
    assert!(store.query_scopes(1).await.expect("scopes").is_empty());
}

#[tokio::test]
async fn the_log_reads_back_shard_by_shard() {
    let Some(store) = store().await else { return };
    for i in 0..40 {
        store
            .append(new_event(&format!("e{i}"), "u", None))
            .await
            .expect("append");
    }
    let mut ids = Vec::new();
    let mut shards_used = 0;
    for shard in 0..LOG_SHARDS {
        let page = store.read_log_page(shard, None).await.expect("page");
        assert!(page.cursor.is_none());
        assert!(page.skipped.is_empty());
        shards_used += usize::from(!page.events.is_empty());
        for item in page.events {
            assert_eq!(item.pk, log_partition(shard));
            assert_eq!(item.event_time, 1_764_000_000_123);
            ids.push(item.event_id);
        }
    }
    ids.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("e{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        shards_used > 4,
        "40 events spread over {shards_used} shards"
    );
}

/// A path of `MAX_PATH_BYTES` bytes, unique per `i`.
fn long_path(i: usize) -> String {
    let head = format!("field.{i:05}.");
    let fill = crate::domain::fields::MAX_PATH_BYTES - head.len();
    format!("{head}{}", "x".repeat(fill))
}

/// At the limits (2,000 fields of 256-byte paths in one summary, a
/// 7-day stats row of those), every item stays under DynamoDB's 400 KB
/// (the test server refuses larger ones, as DynamoDB does) and everything
/// reads back whole.
#[tokio::test]
async fn summaries_and_rows_at_the_limits_are_split_under_the_item_limit() {
    let Some(store) = store().await else { return };
    let mut wide = Summary::default();
    let fields: crate::domain::fields::Fields = (0..2_000)
        .map(|i| (long_path(i), -1.234_567_890_123_456_7e-300 * i as f64))
        .collect();
    wide.record(&fields);
    wide.record(&fields);
    let gh = Scope::Source("gh".into());
    let key = |tier, index| {
        (
            3,
            SummaryKey {
                scope: gh.clone(),
                tier,
                index,
            },
        )
    };
    let summaries = [
        (key(Tier::Minute, 10), wide.clone()),
        (key(Tier::Hour, 0), wide.clone()),
    ];
    store
        .commit(Commit {
            summaries: &fresh(summaries.to_vec()),
            ..Commit::default()
        })
        .await
        .expect("a commit at the limits");
    let by_key = store
        .read_summaries(&[key(Tier::Minute, 10), key(Tier::Hour, 0)])
        .await
        .expect("read");
    assert_eq!(by_key[&key(Tier::Minute, 10)].value, wide, "bit for bit");
    let ranged = store
        .query_summaries(3, &gh, Tier::Minute, 0..60)
        .await
        .expect("query");
    assert_eq!(ranged, vec![(10, wide.clone())]);
    // A row of about 800 KB.
    let doc = crate::views::render_window(ExposeKind::WeekStats, 60_000, &wide, 7);
    assert!(
        doc.len() > 2 * state::MAX_CHUNK_BYTES,
        "{} bytes",
        doc.len()
    );
    store
        .write_rows(RowsWrite {
            end: 60_000,
            versions: [(gh.clone(), 5)].into_iter().collect(),
            views: vec![(gh.clone(), ExposeKind::WeekStats, doc.clone())],
            sources: vec![],
        })
        .await
        .expect("rows");
    let read = store.view(&gh, ExposeKind::WeekStats).await.expect("view");
    assert_eq!(read.as_deref(), Some(doc.as_str()));
    eprintln!(
        "at the limits: a summary of {} bytes in {} items, a row of {} bytes in {} items",
        crate::store::codec::encode_summary(&wide).len(),
        crate::store::codec::encode_summary(&wide)
            .len()
            .div_ceil(state::MAX_CHUNK_BYTES),
        doc.len(),
        doc.len().div_ceil(state::MAX_CHUNK_BYTES)
    );
}

/// The largest transaction one event can make at the limits: its source
/// and the all-events aggregate each with a minute and an hour summary of
/// 2,000 fields whose 256-byte paths are control characters (six bytes
/// each in JSON), and both scope items with a full field limit (2,000
/// admitted, 10,000 dropped) and a 64 KiB `latest` row. DynamoDB takes it
/// (the test server refuses transactions over 4 MB, as DynamoDB does).
#[tokio::test]
async fn one_events_largest_commit_fits_one_transaction() {
    let Some(store) = store().await else { return };
    let path = |i: usize| {
        let head = format!("{i:05}");
        let fill = crate::domain::fields::MAX_PATH_BYTES - head.len();
        format!("{head}{}", "\u{1}".repeat(fill))
    };
    let fields: crate::domain::fields::Fields = (0..2_000)
        .map(|i| (path(i), -1.234_567_890_123_456_7e-300 * i as f64))
        .collect();
    let mut wide = Summary::default();
    wide.record(&fields);
    let mut state = ScopeState::default();
    state.fields.admit(&fields, 60_000, 2_000);
    let more: crate::domain::fields::Fields =
        (0..10_000).map(|i| (format!("more.{i}"), 1.0)).collect();
    state.fields.admit(&more, 60_000, 2_000);
    assert_eq!(
        (state.fields.admitted.len(), state.fields.dropped.len()),
        (2_000, 10_000)
    );
    let latest = format!(r#"{{"data":"{}"}}"#, "x".repeat(65_536));
    let scopes = [Scope::All, Scope::Source("gh".into())];
    let summaries: Vec<_> = scopes
        .iter()
        .flat_map(|scope| {
            [Tier::Minute, Tier::Hour].map(|tier| {
                let key = SummaryKey {
                    scope: scope.clone(),
                    tier,
                    index: 1,
                };
                ((3, key), wide.clone())
            })
        })
        .collect();
    let items: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let item = ScopeItem {
                state: state.clone(),
                latest: Some(latest.clone()),
                version: 0,
                last_marks: Vec::new(),
            };
            ((3, scope.clone()), item)
        })
        .collect();
    store
        .commit(Commit {
            scopes: &items,
            summaries: &fresh(summaries.clone()),
            ..Commit::default()
        })
        .await
        .expect("one transaction");
    let summary_bytes = crate::store::codec::encode_summary(&wide).len();
    let limit_bytes = crate::store::codec::encode_limit(&state.fields).len();
    let total = 4 * summary_bytes + 2 * (limit_bytes + latest.len());
    assert!(total < 3_500_000, "{total} bytes");
    eprintln!(
        "largest commit of one event: about {total} bytes \
         (4 summaries of {summary_bytes}, 2 field limits of {limit_bytes}, 2 latest rows of {})",
        latest.len()
    );
    let read = store
        .read_summaries(&[summaries[3].0.clone()])
        .await
        .expect("read");
    assert_eq!(read[&summaries[3].0].value, wide, "bit for bit");
}

/// The test server enforces DynamoDB's size limits (scripts/moto_server.py):
/// a PutItem over 400 KB is refused, a transaction holding one is cancelled
/// with the reason ValidationError (a `Rejected` commit, never retried as a
/// conflict), and a transaction over 4 MB is refused whole.
#[tokio::test]
async fn the_test_server_refuses_what_dynamodb_refuses() {
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
    let Some(store) = store().await else { return };
    let item = |sk: &str, bytes: usize| -> Item {
        HashMap::from([
            (PK.to_owned(), s("big")),
            (SK.to_owned(), s(sk)),
            ("blob".to_owned(), s("x".repeat(bytes))),
        ])
    };
    let put = store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item("one", 420_000)))
        .send()
        .await;
    assert!(put.is_err(), "an item over 400 KB is refused");
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item("fits", 390_000)))
        .send()
        .await
        .expect("an item under 400 KB is stored");
    let transact = |items: Vec<Item>| {
        let writes: Vec<TransactWriteItem> = items
            .into_iter()
            .map(|i| {
                let put = Put::builder()
                    .table_name(store.table())
                    .set_item(Some(i))
                    .build()
                    .expect("put");
                TransactWriteItem::builder().put(put).build()
            })
            .collect();
        store
            .client()
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
    };
    let one_big = transact(vec![item("a", 10), item("b", 420_000)]).await;
    let error =
        super::state::classify_transaction(one_big.expect_err("cancelled").into_service_error());
    assert!(matches!(error, StoreError::Rejected(_)), "{error:?}");
    let too_much = transact((0..11).map(|i| item(&format!("t{i}"), 390_000)).collect()).await;
    let error =
        super::state::classify_transaction(too_much.expect_err("over 4 MB").into_service_error());
    assert!(matches!(error, StoreError::Rejected(_)), "{error:?}");
    let stored = store
        .client()
        .get_item()
        .table_name(store.table())
        .key(PK, s("big"))
        .key(SK, s("a"))
        .send()
        .await
        .expect("get");
    assert!(
        stored.item.is_none(),
        "nothing of a refused transaction is written"
    );
}

/// Minute summaries carry a TTL of their retention past their minute
/// (DynamoDB deletes them then); hour summaries, kept as long as the log,
/// carry none unless an hour retention is configured.
#[tokio::test]
async fn summaries_expire_after_their_retention() {
    let Some(store) = store().await else { return };
    let hour = (
        1,
        SummaryKey {
            scope: Scope::Source("gh".into()),
            tier: Tier::Hour,
            index: 3,
        },
    );
    let commit = |store: DynamoStore, version: u64| {
        let summaries = [minute(200), hour.clone()].map(|key| {
            let value = summary_of(&[1.0]);
            (key, Versioned { value, version })
        });
        async move {
            store
                .commit(Commit {
                    summaries: &summaries,
                    ..Commit::default()
                })
                .await
                .expect("commit");
        }
    };
    let expiry = |store: &DynamoStore, pk: String, index: i64| {
        let store = store.clone();
        async move {
            let item = store
                .client
                .get_item()
                .table_name(&*store.table)
                .key("pk", s(pk))
                .key("sk", s(format!("{:020}", (index as u64) ^ (1 << 63))))
                .send()
                .await
                .expect("get")
                .item
                .expect("stored");
            item.get(super::TTL_ATTRIBUTE)
                .map(|v| v.as_n().cloned().unwrap_or_default())
        }
    };
    commit(store.clone(), 0).await;
    let minute_pk = "m#1#s:gh".to_owned();
    assert_eq!(
        expiry(&store, minute_pk.clone(), 200).await,
        Some(((201 * 60_000 + 35 * 86_400_000_i64) / 1000).to_string())
    );
    assert_eq!(expiry(&store, "h#1#s:gh".into(), 3).await, None);

    let both = store
        .clone()
        .with_retention(crate::domain::series::Retention {
            minutes: Some(86_400_000 * 10),
            hours: Some(86_400_000 * 400),
        });
    commit(both.clone(), 1).await;
    assert_eq!(
        expiry(&both, minute_pk, 200).await,
        Some(((201 * 60_000 + 10 * 86_400_000_i64) / 1000).to_string())
    );
    assert_eq!(
        expiry(&both, "h#1#s:gh".into(), 3).await,
        Some(((4 * 3_600_000 + 400 * 86_400_000_i64) / 1000).to_string())
    );
}

/// What a series costs on DynamoDB: requests and read units for a day at
/// one minute (1,440 minute summaries) and 35 days at one hour (840 hour
/// summaries), 20 fields each; the same whatever the events in them.
/// `bash scripts/test -p sygno-shared -- --nocapture series_requests`
#[tokio::test]
async fn series_requests_and_read_units() {
    let Some((store, log)) = fresh_store("sygno-series").await else {
        return;
    };
    let scope = Scope::Source("gh".into());
    let fields: Vec<f64> = (0..20).map(f64::from).collect();
    let summary = {
        let mut s = Summary::default();
        for _ in 0..100 {
            let event: crate::domain::fields::Fields = fields
                .iter()
                .map(|v| (format!("field_{v:02}"), *v))
                .collect();
            s.record(&event);
        }
        s
    };
    let minutes: Vec<(u64, SummaryKey)> = (0..1440)
        .map(|i| {
            (
                0,
                SummaryKey {
                    scope: scope.clone(),
                    tier: Tier::Minute,
                    index: 1_000_000 + i,
                },
            )
        })
        .collect();
    let hours: Vec<(u64, SummaryKey)> = (0..840)
        .map(|i| {
            (
                0,
                SummaryKey {
                    scope: scope.clone(),
                    tier: Tier::Hour,
                    index: 10_000 + i,
                },
            )
        })
        .collect();
    for chunk in minutes.chunks(90).chain(hours.chunks(90)) {
        let summaries = fresh(chunk.iter().map(|k| (k.clone(), summary.clone())).collect());
        store
            .commit(Commit {
                summaries: &summaries,
                ..Commit::default()
            })
            .await
            .expect("commit");
    }
    log.take();
    log.take_capacity();
    for (what, tier, range, expected) in [
        ("1 day at 1m", Tier::Minute, 1_000_000..1_001_440, 1440),
        ("35 days at 1h", Tier::Hour, 10_000..10_840, 840),
    ] {
        let read = store
            .summaries(&scope, tier, range)
            .await
            .expect("series read");
        assert_eq!(read.len(), expected);
        let requests = log.take();
        let units = log.take_capacity();
        eprintln!(
            "series of {what}: {} requests ({}), ~{:.0} RCU",
            requests.len(),
            requests.join(", "),
            units.read
        );
        let n = requests.len();
        assert_eq!(
            (requests[0].as_str(), requests[n - 1].as_str()),
            ("GetItem", "GetItem"),
            "the live generation, before and after: {requests:?}"
        );
        assert!(
            requests[1..n - 1].iter().all(|r| r == "Query"),
            "{requests:?}"
        );
    }
}

/// The bound on sources holds across processes (a second store, its
/// cache empty, finds the count and the sources' items), and a refused
/// batch puts no event.
#[tokio::test]
async fn sources_past_the_bound_are_refused_across_processes() {
    let Some(store) = store().await else { return };
    let store = store.with_max_sources(3);
    let refused = contract_tests::sources_past_the_bound_are_refused(&store).await;
    let events = store
        .client
        .scan()
        .table_name(&*store.table)
        .filter_expression("kind = :event")
        .expression_attribute_values(":event", s("event"))
        .send()
        .await
        .expect("scan");
    let ids: Vec<&str> = events
        .items()
        .iter()
        .map(|item| get_s(item, "event_id").expect("id"))
        .collect();
    assert_eq!(ids.len(), 6, "s1 to s6: {ids:?}");
    assert!(ids.iter().all(|id| !refused.contains(id)), "{ids:?}");
    let other = DynamoStore::new(store.client.clone(), &store.table).with_max_sources(3);
    contract_tests::bound_holds(&other, 3, ("r7", "d"), Some(("s7", "c"))).await;
}

/// A source written before the bound existed (a `sources` entry, no
/// source item) stays writable whatever the bound, and counts.
#[tokio::test]
async fn sources_from_before_the_bound_stay_writable() {
    let Some(store) = store().await else { return };
    let store = store.with_max_sources(1);
    store
        .client
        .put_item()
        .table_name(&*store.table)
        .item("pk", s(ROWS_KEY))
        .item("sk", s(state::source_sk("old")))
        .item("doc", s("{}"))
        .send()
        .await
        .expect("an old sources entry");
    store
        .append(contract_tests::named("n1", "new"))
        .await
        .expect("the one new source");
    store
        .append(contract_tests::named("o1", "old"))
        .await
        .expect("an old source, past the bound");
    contract_tests::bound_holds(&store, 1, ("n2", "newer"), None).await;
}
