//! The DynamoDB adapter against a real DynamoDB wire-protocol server (see
//! [`super::testing`]).

use super::state::{AggState, StateCommit};
use super::testing::fresh_store;
use super::*;
use crate::domain::series::Summary;
use crate::domain::tiers::{Tier, TierKey};
use crate::store::contract_tests::{self, new_event};

async fn store() -> Option<DynamoStore> {
    fresh_store("sygno-test").await.map(|(store, _)| store)
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
async fn rows_read_back_with_one_get() {
    let Some(store) = store().await else { return };
    assert!(store
        .view(ExposeKind::DayAverage)
        .await
        .expect("view")
        .is_none());
    let rows = [(
        ExposeKind::DayAverage,
        r#"{"type":"24h_average"}"#.to_owned(),
    )];
    let state = AggState {
        version: 1,
        ..AggState::default()
    };
    store
        .commit_state(StateCommit {
            state: &state,
            summaries: &[],
            rows: Some(&rows),
        })
        .await
        .expect("commit");
    assert_eq!(
        store
            .view(ExposeKind::DayAverage)
            .await
            .expect("view")
            .as_deref(),
        Some(r#"{"type":"24h_average"}"#)
    );
    assert!(store
        .view(ExposeKind::WeekDevt)
        .await
        .expect("view")
        .is_none());
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
    assert_eq!(log.take(), vec!["PutItem"; 20], "one write per event");
    let units = log.take_capacity();
    eprintln!("append: ~{:.2} WCU per event", units.write / 20.0);
    assert_eq!(units.write, 20.0, "an event item under 1 KB costs one unit");
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
    store.view(ExposeKind::DayDevt).await.expect("view");
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

fn minute(index: i64) -> TierKey {
    TierKey {
        generation: 1,
        tier: Tier::Minute,
        index,
    }
}

#[tokio::test]
async fn aggregate_commits_are_conditional_on_the_state_version() {
    let Some(store) = store().await else { return };
    assert_eq!(store.read_state().await.expect("read"), AggState::default());
    let mut state = AggState {
        version: 1,
        checkpoints: [("log#03".to_owned(), "1100000000017454423012".to_owned())].into(),
        ..AggState::default()
    };
    let commit = |state: &AggState| {
        let state = state.clone();
        let store = store.clone();
        async move {
            store
                .commit_state(StateCommit {
                    state: &state,
                    summaries: &[(minute(5), summary_of(&[1.0]))],
                    rows: None,
                })
                .await
        }
    };
    commit(&state).await.expect("first commit");
    assert_eq!(store.read_state().await.expect("read"), state);
    // A second writer that read version 0 loses, and nothing it sent lands.
    let mut stale = state.clone();
    stale.checkpoints.clear();
    assert!(matches!(commit(&stale).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.read_state().await.expect("read"), state);
    state.version = 2;
    commit(&state).await.expect("next commit");
    state.version = 2;
    assert!(matches!(commit(&state).await, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn summaries_read_back_by_key_and_by_index_range() {
    let Some(store) = store().await else { return };
    let summaries: Vec<(TierKey, Summary)> = [-61, -1, 0, 1, 59, 60, 120]
        .iter()
        .map(|i| (minute(*i), summary_of(&[*i as f64, 0.5])))
        .collect();
    let hour = TierKey {
        generation: 1,
        tier: Tier::Hour,
        index: 0,
    };
    let mut all = summaries.clone();
    all.push((hour, summary_of(&[7.0])));
    store
        .commit_state(StateCommit {
            state: &AggState {
                version: 1,
                ..AggState::default()
            },
            summaries: &all,
            rows: None,
        })
        .await
        .expect("commit");
    let ranged = store
        .query_summaries(1, Tier::Minute, -1..60)
        .await
        .expect("query");
    let expected: Vec<(i64, Summary)> = summaries
        .iter()
        .filter(|(k, _)| (-1..60).contains(&k.index))
        .map(|(k, s)| (k.index, s.clone()))
        .collect();
    assert_eq!(ranged, expected, "in index order, bit for bit");
    assert!(store
        .query_summaries(2, Tier::Minute, -100..200)
        .await
        .expect("query")
        .is_empty());
    let by_key = store
        .read_summaries(&[minute(-61), minute(3), hour])
        .await
        .expect("read");
    assert_eq!(by_key.len(), 2);
    assert_eq!(by_key[&hour], summary_of(&[7.0]));
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
        let (items, cursor) = store.read_log_page(shard, None).await.expect("page");
        assert!(cursor.is_none());
        shards_used += usize::from(!items.is_empty());
        for item in items {
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
