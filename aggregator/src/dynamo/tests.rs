//! The stream aggregator on a real DynamoDB wire-protocol server (moto),
//! fed with the stream records the server itself produced, read back from
//! its Streams API and shaped as Lambda delivers them.

use super::lambda::{handle, Response};
use super::poller::Poller;
use super::rebuild::{self, Options, Progress};
use super::*;
use crate::Clock;
use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Region};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::sync::Arc;
use sygno_shared::domain::event::NewEvent;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::{fold, LatestKey};
use sygno_shared::domain::limit::DEFAULT_MAX_FIELDS;
use sygno_shared::domain::tiers::Tier;
use sygno_shared::domain::time::MINUTE_MS;
use sygno_shared::domain::time::{DAY_MS, WEEK_MS};
use sygno_shared::domain::window::fold_map;
use sygno_shared::store::dynamo::state::{EventItem, MAX_TRANSACTION_ITEMS};
use sygno_shared::store::dynamo::testing::{self, fresh_store, RequestLog};
use sygno_shared::store::{EventLog, ViewStore};
use sygno_shared::views::{render_latest, render_windows};

/// Now, for these tests: a fixed minute plus 30 s.
const NOW: Millis = 1_764_000_000_000 / MINUTE_MS * MINUTE_MS + 30_000;

fn streams_client() -> Option<aws_sdk_dynamodbstreams::Client> {
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(testing::endpoint()?)
        .credentials_provider(testing::credentials())
        .build();
    Some(aws_sdk_dynamodbstreams::Client::from_conf(config))
}

/// The sources events come from: event `i` is of `SOURCES[i % 3]`.
const SOURCES: [&str; 3] = ["raw", "greenhouse-1", "greenhouse-2"];

fn aggregator(store: &DynamoStore) -> Aggregator {
    Aggregator::new(store.clone(), DEFAULT_MAX_FIELDS)
}

fn options(margin: Duration, settle: Duration) -> Options {
    Options {
        max_fields: DEFAULT_MAX_FIELDS,
        margin,
        settle,
        force: false,
    }
}

/// Event `i`: spread over the last 3 hours, x = i / 7, some with a nested
/// field, of one of three sources.
fn new_event(i: usize, received_at: Millis) -> NewEvent {
    let data = if i.is_multiple_of(3) {
        format!(r#"{{"x": {}, "n": {{"y": {i}}}}}"#, i as f64 / 7.0)
    } else {
        format!(r#"{{"x": {}}}"#, i as f64 / 7.0)
    };
    NewEvent {
        event_id: format!("e{i:05}"),
        event_time: NOW - (i as i64 * 7_919 * 1000) % (3 * 3_600_000),
        received_at,
        name: SOURCES[i % 3].into(),
        user_id: "u".into(),
        data,
        idempotency_key: None,
    }
}

async fn write(store: &DynamoStore, events: impl IntoIterator<Item = NewEvent>) {
    for event in events {
        store.append(event).await.expect("append");
    }
}

/// Every record of the table's stream, as Lambda delivers them.
async fn stream_records(store: &DynamoStore) -> Vec<Value> {
    let streams = streams_client().expect("streams client");
    let arn = store.stream_arn().await.expect("stream");
    let shards = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect("describe stream")
        .stream_description
        .and_then(|d| d.shards)
        .unwrap_or_default();
    let mut out = Vec::new();
    for shard in shards {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().expect("id"))
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator;
        while let Some(it) = iterator.take() {
            let got = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .expect("records");
            let records = got.records.unwrap_or_default();
            if records.is_empty() {
                break;
            }
            // The write path's source items (partition `src`, ignored by
            // the aggregator: see `records`) are left out, so that the
            // records right after writes are the events.
            out.extend(
                records
                    .iter()
                    .map(|r| records::from_streams_api(r, &arn))
                    .filter(|r| r["dynamodb"]["Keys"]["pk"]["S"] != "src"),
            );
            iterator = got.next_shard_iterator;
        }
    }
    out
}

fn batch(records: &[Value]) -> Value {
    json!({ "Records": records })
}

/// The failures a response reports, read back as Lambda reads the JSON.
fn failures(response: &Response) -> Vec<String> {
    let json = serde_json::to_value(response).expect("serializes");
    let parsed: aws_lambda_events::event::streams::DynamoDbEventResponse =
        serde_json::from_value(json).expect("a partial batch response");
    let failures: Vec<String> = parsed
        .batch_item_failures
        .into_iter()
        .filter_map(|f| f.item_identifier)
        .collect();
    assert_eq!(response.failures(), failures);
    failures
}

async fn row(store: &DynamoStore, kind: ExposeKind) -> Value {
    scope_row(store, &Scope::All, kind).await
}

async fn scope_row(store: &DynamoStore, scope: &Scope, kind: ExposeKind) -> Value {
    let doc = store
        .view(scope, kind)
        .await
        .expect("view")
        .unwrap_or_else(|| panic!("row {scope:?} {kind:?} exists"));
    serde_json::from_str(&doc).expect("row is JSON")
}

/// Every aggregate: all events, and each source.
fn scopes() -> Vec<Scope> {
    std::iter::once(Scope::All)
        .chain(SOURCES.iter().map(|s| Scope::Source((*s).to_owned())))
        .collect()
}

/// Every row of every aggregate, in `ExposeKind::ALL` order.
async fn rows(store: &DynamoStore) -> Vec<Value> {
    let mut out = Vec::new();
    for scope in scopes() {
        for kind in ExposeKind::ALL {
            out.push(scope_row(store, &scope, kind).await);
        }
    }
    out
}

/// JSON equality with numbers equal within 1e-9 relative.
fn assert_close(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300),
                "{path}: {x} vs {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// The rows of the events, computed in memory from scratch with the one
/// fold, for every aggregate (the order of [`rows`]).
fn reference_rows(events: &[NewEvent], end: Millis) -> Vec<Value> {
    let items: Vec<EventItem> = events
        .iter()
        .map(|e| EventItem {
            pk: "log#00".into(),
            event_id: e.event_id.clone(),
            event_time: e.event_time,
            received_at: e.received_at,
            name: e.name.clone(),
            data: e.data.clone(),
        })
        .collect();
    let mut batch = sygno_shared::domain::fold::Batch::default();
    let mut latest: BTreeMap<Scope, (LatestKey, String)> = BTreeMap::new();
    for item in &items {
        for scope in fold(&mut batch, &item.as_ref(), DEFAULT_MAX_FIELDS).latest_of {
            latest.insert(
                scope,
                (LatestKey::of(&item.as_ref()), render_latest(&item.as_ref())),
            );
        }
    }
    let mut out = Vec::new();
    for scope in scopes() {
        let map: BTreeMap<(Tier, i64), Summary> = batch
            .summaries
            .iter()
            .filter(|(k, _)| k.scope == scope)
            .map(|(k, s)| ((k.tier, k.index), s.clone()))
            .collect();
        let windows = [fold_map(&map, end, DAY_MS), fold_map(&map, end, WEEK_MS)];
        let mut docs: BTreeMap<ExposeKind, String> =
            render_windows(end, &windows, 0).into_iter().collect();
        if let Some((_, doc)) = latest.get(&scope) {
            docs.insert(ExposeKind::Latest, doc.clone());
        }
        for kind in ExposeKind::ALL {
            out.push(serde_json::from_str(&docs[&kind]).expect("json"));
        }
    }
    out
}

fn assert_rows_match(actual: &[Value], expected: &[Value]) {
    // The reference renders latest first when given, as the store does.
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert_close(a, e, &format!("{}", e["type"]));
    }
}

#[tokio::test]
async fn a_batch_counts_once_however_often_and_however_split_it_is_delivered() {
    let Some((store, _)) = fresh_store("sygno-agg").await else {
        return;
    };
    let agg = aggregator(&store);
    let events: Vec<NewEvent> = (0..60).map(|i| new_event(i, NOW - 1_000)).collect();
    write(&store, events.clone()).await;
    let records = stream_records(&store).await;
    assert_eq!(records.len(), 60);

    let response = handle(&agg, &batch(&records), NOW).await;
    assert!(failures(&response).is_empty(), "{response:?}");
    let expected = reference_rows(&events, window_end(NOW));
    assert_rows_match(&rows(&store).await, &expected);
    let state = store.read_state().await.expect("state");

    // Redelivered whole, bisected, and from a middle record on.
    handle(&agg, &batch(&records), NOW).await;
    handle(&agg, &batch(&records[..30]), NOW).await;
    handle(&agg, &batch(&records[30..]), NOW).await;
    handle(&agg, &batch(&records[17..44]), NOW).await;
    assert_eq!(
        store.read_state().await.expect("state"),
        state,
        "nothing committed"
    );
    assert_rows_match(&rows(&store).await, &expected);
}

/// Delivers `records` to `agg` as Lambda does: a reported failure is
/// retried from the record it names.
async fn deliver(agg: &Aggregator, mut records: Vec<Value>) {
    for _ in 0..100 {
        let failed = failures(&handle(agg, &batch(&records), NOW).await);
        let Some(first) = failed.first() else { return };
        let from = records
            .iter()
            .position(|r| r["dynamodb"]["SequenceNumber"] == json!(first))
            .expect("a failure names a record of the batch");
        records.drain(..from);
    }
    panic!("a batch kept failing");
}

/// Runs each queue of deliveries on an aggregator instance of its own,
/// all at once (as concurrent Lambda containers).
async fn run_instances(store: &DynamoStore, queues: Vec<Vec<Vec<Value>>>) {
    let mut running = tokio::task::JoinSet::new();
    for queue in queues {
        let agg = aggregator(store);
        running.spawn(async move {
            for d in queue {
                deliver(&agg, d).await;
            }
        });
    }
    while let Some(done) = running.join_next().await {
        done.expect("an instance");
    }
}

/// DynamoDB Streams and Lambda promise at-least-once delivery and order
/// per item only: every event is its own item, so any order of first
/// delivery is legal, batches are retried, redelivered and bisected, and
/// up to ten batches of a shard run at once (ParallelizationFactor).
/// Whatever the order, split and concurrency, every event counts once.
#[tokio::test]
async fn any_order_split_redelivery_and_concurrency_count_each_event_once() {
    use rand::Rng;
    let Some((source, _)) = fresh_store("sygno-agg").await else {
        return;
    };
    let events: Vec<NewEvent> = (0..90)
        .map(|i| new_event(i, NOW - 5_000 - (i as i64 % 7) * 1_000))
        .collect();
    write(&source, events.clone()).await;
    let records = stream_records(&source).await;
    assert_eq!(records.len(), 90);
    let expected = reference_rows(&events, window_end(NOW));
    for seed in 0..4u64 {
        let Some((store, _)) = fresh_store("sygno-agg-any").await else {
            return;
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut shuffled = records.clone();
        shuffled.shuffle(&mut rng);
        let mut batches: Vec<Vec<Value>> = Vec::new();
        let mut rest = &shuffled[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..=25).min(rest.len());
            batches.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        let mut deliveries = batches.clone();
        for b in &batches {
            match rng.random_range(0..4) {
                0 => deliveries.push(b.clone()),
                1 => {
                    let (head, tail) = b.split_at(b.len() / 2);
                    deliveries.extend([head.to_vec(), tail.to_vec()]);
                }
                _ => {}
            }
        }
        deliveries.shuffle(&mut rng);
        let instances = [2, 5, 10, 3][seed as usize];
        let mut queues: Vec<Vec<Vec<Value>>> = vec![Vec::new(); instances];
        for (i, d) in deliveries.into_iter().enumerate() {
            queues[i % instances].push(d);
        }
        run_instances(&store, queues).await;
        assert_rows_match(&rows(&store).await, &expected);
    }
}

/// A table restored from a backup has a new stream whose sequence numbers
/// start over: events are known by their ids, so nothing is skipped.
#[tokio::test]
async fn a_new_stream_with_smaller_sequence_numbers_skips_nothing() {
    let Some((store, _)) = fresh_store("sygno-agg").await else {
        return;
    };
    let events: Vec<NewEvent> = (0..30).map(|i| new_event(i, NOW - 2_000)).collect();
    write(&store, events.clone()).await;
    let records = stream_records(&store).await;
    let agg = aggregator(&store);
    deliver(&agg, records[..20].to_vec()).await;
    let restored: Vec<Value> = records[20..]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r["dynamodb"]["SequenceNumber"] = json!(format!("{}", i + 1));
            r["eventSourceARN"] =
                json!("arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/restored");
            r
        })
        .collect();
    deliver(&agg, restored).await;
    assert_rows_match(
        &rows(&store).await,
        &reference_rows(&events, window_end(NOW)),
    );
}

#[tokio::test]
async fn two_shards_in_any_interleaving_give_the_rebuilds_rows() {
    let Some((source, _)) = fresh_store("sygno-agg").await else {
        return;
    };
    let source_agg = aggregator(&source);
    let events: Vec<NewEvent> = (0..120).map(|i| new_event(i, NOW - 5_000)).collect();
    write(&source, events.clone()).await;
    let records = stream_records(&source).await;
    // Two shards: the log partitions split in two, each in stream order.
    let shard_of = |r: &Value| {
        let pk = r["dynamodb"]["Keys"]["pk"]["S"].as_str().unwrap_or("");
        pk < "log#08"
    };
    let (a, b): (Vec<Value>, Vec<Value>) = records.iter().cloned().partition(shard_of);
    assert!(!a.is_empty() && !b.is_empty());
    let expected = reference_rows(&events, window_end(NOW));

    for seed in 0..3u64 {
        let Some((store, _)) = fresh_store("sygno-agg-order").await else {
            return;
        };
        let agg = aggregator(&store);
        // Batches of 7 from each shard, interleaved at random but each
        // shard in order; some batches delivered twice.
        let mut order: Vec<bool> = std::iter::repeat_n(true, a.len().div_ceil(7))
            .chain(std::iter::repeat_n(false, b.len().div_ceil(7)))
            .collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let (mut next_a, mut next_b) = (a.chunks(7), b.chunks(7));
        for from_a in order {
            let chunk = if from_a { next_a.next() } else { next_b.next() };
            let chunk = chunk.expect("a batch");
            assert!(failures(&handle(&agg, &batch(chunk), NOW).await).is_empty());
            if seed == 1 {
                handle(&agg, &batch(chunk), NOW).await;
            }
        }
        assert_rows_match(&rows(&store).await, &expected);
    }

    // Both shards at once, as two concurrent invocations: commits conflict
    // and retry, and still count every event once.
    let Some((store, _)) = fresh_store("sygno-agg-parallel").await else {
        return;
    };
    // Each shard in its own container: two aggregators, two caches.
    let run = |shard: Vec<Value>| {
        let agg = aggregator(&store);
        async move {
            for chunk in shard.chunks(5) {
                assert!(failures(&handle(&agg, &batch(chunk), NOW).await).is_empty());
            }
        }
    };
    tokio::join!(run(a.clone()), run(b.clone()));
    let parallel = rows(&store).await;
    assert_rows_match(&parallel, &expected);

    // A rebuild from the log gives the same rows; log items that cannot
    // be aggregated (garbled, `data` not an object) are skipped.
    assert!(failures(&handle(&source_agg, &batch(&records), NOW).await).is_empty());
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    let n = |v: i64| aws_sdk_dynamodb::types::AttributeValue::N(v.to_string());
    for (sk, data) in [("ev#garbled", None), ("ev#not-an-object", Some("[1]"))] {
        let mut item = HashMap::from([
            ("pk".to_owned(), s("log#00")),
            ("sk".to_owned(), s(sk)),
            ("event_id".to_owned(), s(sk)),
            ("event_time".to_owned(), n(NOW - 5_000)),
            ("received_at".to_owned(), n(NOW - 5_000)),
            ("name".to_owned(), s("raw")),
        ]);
        if let Some(data) = data {
            item.insert("data".to_owned(), s(data));
        }
        source
            .client()
            .put_item()
            .table_name(source.table())
            .set_item(Some(item))
            .send()
            .await
            .expect("put");
    }
    let clock: Clock = Arc::new(|| NOW);
    let options = options(Duration::ZERO, Duration::ZERO);
    let report = rebuild::rebuild(&source, &clock, options, &mut |_| {})
        .await
        .expect("rebuild");
    assert_eq!((report.events, report.skipped), (120, 2));
    assert_rows_match(&rows(&source).await, &expected);
}

#[tokio::test]
async fn a_poison_record_is_reported_and_the_rest_applied() {
    let Some((store, _)) = fresh_store("sygno-agg").await else {
        return;
    };
    let agg = aggregator(&store);
    let events: Vec<NewEvent> = (0..10).map(|i| new_event(i, NOW - 1_000)).collect();
    write(&store, events.clone()).await;
    let mut records = stream_records(&store).await;
    // Every kind of poison: a garbled attribute, a key-only image, `data`
    // not a JSON object, an item Sygno does not write.
    records[4]["dynamodb"]["NewImage"]["event_time"] = json!({"S": "not a number"});
    records[5]["dynamodb"]
        .as_object_mut()
        .map(|d| d.remove("NewImage"));
    records[6]["dynamodb"]["NewImage"]["data"] = json!({"S": "[1, 2]"});
    records[7]["dynamodb"]["Keys"]["pk"] = json!({"S": "someone-else#1"});
    records[7]["dynamodb"]["NewImage"]["pk"] = json!({"S": "someone-else#1"});
    let poisoned: Vec<String> = records[4..8]
        .iter()
        .map(|r| {
            r["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let response = handle(&agg, &batch(&records), NOW).await;
    assert_eq!(failures(&response), poisoned);
    let mut rest = events.clone();
    rest.drain(4..8);
    assert_rows_match(&rows(&store).await, &reference_rows(&rest, window_end(NOW)));
    assert_eq!(row(&store, ExposeKind::DayStats).await["count"], 6);
}

#[tokio::test]
async fn a_failed_commit_reports_the_first_event_not_committed() {
    let Some((store, _)) = fresh_store("sygno-agg").await else {
        return;
    };
    write(&store, (0..3).map(|i| new_event(i, NOW))).await;
    let records = stream_records(&store).await;
    let missing = aggregator(&DynamoStore::new(
        store.client().clone(),
        "sygno-no-such-table",
    ));
    let response = handle(&missing, &batch(&records), NOW).await;
    assert_eq!(
        failures(&response),
        [records[0]["dynamodb"]["SequenceNumber"]
            .as_str()
            .unwrap_or("")]
    );
}

#[tokio::test]
async fn own_writes_in_the_stream_are_ignored_and_windows_roll_on_schedule() {
    let Some((store, _)) = fresh_store("sygno-agg").await else {
        return;
    };
    let agg = aggregator(&store);
    write(&store, (0..5).map(|i| new_event(i, NOW))).await;
    handle(&agg, &batch(&stream_records(&store).await), NOW).await;
    let state = store.read_state().await.expect("state");
    // The stream now also holds the aggregator's own items.
    let all = stream_records(&store).await;
    assert!(all.len() > 5);
    handle(&agg, &batch(&all), NOW).await;
    assert_eq!(store.read_state().await.expect("state"), state);

    let day = row(&store, ExposeKind::DayAverage).await;
    assert_eq!(day["count"], 5);
    // A scheduled invocation 25 hours on: the events left the 24 h window.
    let later = NOW + 25 * 3_600_000;
    assert_eq!(
        serde_json::to_value(handle(&agg, &json!({"source": "aws.events"}), later).await)
            .expect("json"),
        json!({"rolled": true})
    );
    let day = row(&store, ExposeKind::DayAverage).await;
    assert_eq!(day["count"], 0);
    assert_eq!(row(&store, ExposeKind::WeekAverage).await["count"], 5);
    assert_eq!(
        handle(&agg, &json!({}), later).await,
        Response::Rolled { rolled: false }
    );
}

#[tokio::test]
async fn an_online_rebuild_while_writes_and_the_poller_go_on_counts_each_event_once() {
    let Some((store, _)) = fresh_store("sygno-agg-rebuild").await else {
        return;
    };
    let Some(streams) = streams_client() else {
        return;
    };
    // A clock the test moves: received_at of each write is its reading.
    // Test time runs at the real pace from a fixed start, so that the
    // rebuild's settling time means what it means in production.
    let started = std::time::Instant::now();
    let clock: Clock = Arc::new(move || NOW - 60_000 + started.elapsed().as_millis() as Millis);
    let mut events = Vec::new();
    for i in 0..40 {
        let event = new_event(i, clock());
        events.push(event.clone());
        write(&store, [event]).await;
    }
    let mut poller = Poller::new(store.clone(), streams, DEFAULT_MAX_FIELDS)
        .await
        .expect("poller");
    poller.poll_once(clock()).await.expect("poll");

    let writer = {
        let store = store.clone();
        let clock = Arc::clone(&clock);
        async move {
            let mut written = Vec::new();
            for i in 40..100 {
                let event = new_event(i, clock());
                written.push(event.clone());
                write(&store, [event]).await;
                tokio::task::yield_now().await;
            }
            written
        }
    };
    let polling = async {
        for _ in 0..30 {
            poller.poll_once(clock()).await.expect("poll");
            tokio::task::yield_now().await;
        }
    };
    let options = options(Duration::from_millis(20), Duration::from_millis(300));
    let mut seen = Vec::new();
    let mut record_progress = |p| seen.push(p);
    let rebuilding = rebuild::rebuild(&store, &clock, options, &mut record_progress);
    let (written, (), report) = tokio::join!(writer, polling, rebuilding);
    let report = report.expect("rebuild");
    events.extend(written);
    assert!(matches!(seen.first(), Some(Progress::Started { .. })));
    assert!(report.events >= 40 && report.events <= 100, "{report:?}");
    // Catch up with whatever the stream still holds.
    while poller.poll_once(NOW).await.expect("poll") > 0 {}
    // Every aggregate's rows at one window end (the switch rendered at the
    // rebuild's clock, the poller only the aggregates it touched).
    aggregator(&store).roll(NOW).await.expect("roll");
    let state = store.read_state().await.expect("state");
    assert_eq!(state.generation, report.generation);
    assert!(state.next.is_none());
    // The replaced generation is gone.
    assert!(matches!(seen.last(), Some(Progress::Cleaned { deleted }) if *deleted > 0));
    assert!(store.query_scopes(0).await.expect("scopes").is_empty());
    for scope in scopes() {
        for tier in [Tier::Minute, Tier::Hour] {
            let left = store
                .query_summaries(0, &scope, tier, i64::MIN..i64::MAX)
                .await
                .expect("query");
            assert!(
                left.is_empty(),
                "{} {tier:?} summaries of generation 0 left",
                left.len()
            );
        }
    }
    assert_eq!(state.rendered_end, window_end(NOW));
    assert_rows_match(
        &rows(&store).await,
        &reference_rows(&events, window_end(NOW)),
    );

    // A second rebuild refuses to start while one seems to be running.
    let mut stuck = state.clone();
    stuck.version += 1;
    stuck.next = Some(sygno_shared::store::dynamo::state::NextGeneration {
        generation: stuck.allocated + 1,
        cut: NOW,
        started_at: NOW,
        alive_at: NOW,
    });
    stuck.allocated += 1;
    store.write_state(&stuck).await.expect("commit");
    let refused = rebuild::rebuild(&store, &clock, options, &mut |_| {}).await;
    assert!(matches!(
        refused,
        Err(rebuild::RebuildError::InProgress { .. })
    ));
    let forced = rebuild::rebuild(
        &store,
        &clock,
        Options {
            force: true,
            ..options
        },
        &mut |_| {},
    )
    .await
    .expect("forced rebuild");
    assert_eq!(
        forced.generation,
        stuck.allocated + 1,
        "never reuses a generation"
    );
    assert_rows_match(
        &rows(&store).await,
        &reference_rows(&events, window_end(NOW)),
    );

    // A rebuild interrupted while it runs (its process stopped) blocks
    // later unforced ones (as started over HTTP) only until its lease
    // runs out: then the next takes over and ends equal.
    // Real pace from a start the test moves (a fixed clock never settles).
    let moved = Arc::new(std::sync::atomic::AtomicI64::new(NOW));
    let later: Clock = {
        let moved = Arc::clone(&moved);
        let since = std::time::Instant::now();
        Arc::new(move || {
            moved.load(std::sync::atomic::Ordering::SeqCst) + since.elapsed().as_millis() as Millis
        })
    };
    let slow = Options {
        settle: Duration::from_secs(3_600),
        ..options
    };
    let mut started = None;
    let interrupted = tokio::time::timeout(
        Duration::from_millis(300),
        rebuild::rebuild(&store, &later, slow, &mut |p| {
            if let Progress::Started { generation, .. } = p {
                started = Some(generation);
            }
        }),
    )
    .await;
    assert!(interrupted.is_err(), "still settling when stopped");
    let abandoned = started.expect("it had started");
    assert!(matches!(
        rebuild::rebuild(&store, &later, options, &mut |_| {}).await,
        Err(rebuild::RebuildError::InProgress { .. })
    ));
    moved.store(
        NOW + rebuild::LEASE.as_millis() as Millis + 1,
        std::sync::atomic::Ordering::SeqCst,
    );
    let taken_over = rebuild::rebuild(&store, &later, options, &mut |_| {})
        .await
        .expect("an abandoned rebuild is taken over");
    assert!(taken_over.generation > abandoned);
    assert_rows_match(
        &rows(&store).await,
        &reference_rows(
            &events,
            store.read_state().await.expect("state").rendered_end,
        ),
    );
}

/// A rebuild while writes go on at a steady rate (10 a second) for a
/// minute, the poller aggregating meanwhile: the rebuild finishes (it
/// does not give up on version races) and every acknowledged event is
/// counted once in the rows it leaves.
#[tokio::test]
async fn a_rebuild_under_a_minute_of_steady_writes_counts_each_event_once() {
    let Some((store, _)) = fresh_store("sygno-agg-steady").await else {
        return;
    };
    let Some(streams) = streams_client() else {
        return;
    };
    let started = std::time::Instant::now();
    let clock: Clock = Arc::new(move || NOW - 120_000 + started.elapsed().as_millis() as Millis);
    let mut poller = Poller::new(store.clone(), streams, DEFAULT_MAX_FIELDS)
        .await
        .expect("poller");
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (store, clock, writing) = (store.clone(), Arc::clone(&clock), Arc::clone(&writing));
        async move {
            let mut written = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let until = std::time::Instant::now() + Duration::from_secs(60);
            let mut i = 0;
            while std::time::Instant::now() < until {
                tick.tick().await;
                let event = new_event(i, clock());
                // Acknowledged: the append returned.
                store.append(event.clone()).await.expect("append");
                written.push(event);
                i += 1;
            }
            writing.store(false, std::sync::atomic::Ordering::SeqCst);
            written
        }
    };
    let polling = async {
        while writing.load(std::sync::atomic::Ordering::SeqCst) {
            poller.poll_once(clock()).await.expect("poll");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let rebuilding = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let options = options(Duration::from_millis(20), Duration::from_millis(300));
        rebuild::rebuild(&store, &clock, options, &mut |_| {}).await
    };
    let (written, (), report) = tokio::join!(writer, polling, rebuilding);
    let report = report.expect("the rebuild finishes under steady writes");
    assert!(written.len() >= 500, "{} writes in a minute", written.len());
    assert!(
        report.events > 0 && (report.events as usize) <= written.len(),
        "{report:?}"
    );
    while poller.poll_once(clock()).await.expect("poll") > 0 {}
    let end = clock();
    aggregator(&store).roll(end).await.expect("roll");
    let state = store.read_state().await.expect("state");
    assert_eq!(state.generation, report.generation);
    assert_rows_match(
        &rows(&store).await,
        &reference_rows(&written, window_end(end)),
    );
}

/// DynamoDB requests per accepted event on the aggregator's side, at
/// stream batch sizes 1, 100 and 1,000 (the figures are printed; the
/// issue's targets are asserted).
#[tokio::test]
async fn aggregator_requests_per_event_by_batch_size() {
    for batch_size in [1usize, 100, 1000] {
        let log = RequestLog::default();
        let Some(client) = testing::client(&log) else {
            return;
        };
        let store = DynamoStore::new(client, &testing::table_name("sygno-agg-count"));
        let agg = aggregator(&store);
        store.create_table().await.expect("create");
        let total = batch_size.clamp(100, 1000);
        // Events in the current minute, as a live stream mostly is.
        let events = (0..total).map(|i| NewEvent {
            event_time: NOW - (i as i64 % 30) * 1000,
            ..new_event(i, NOW)
        });
        write(&store, events).await;
        let records = stream_records(&store).await;
        log.take();
        log.take_capacity();
        for chunk in records.chunks(batch_size) {
            assert!(failures(&handle(&agg, &batch(chunk), NOW).await).is_empty());
        }
        let sent = log.take();
        let units = log.take_capacity();
        let count = |op: &str| sent.iter().filter(|s| *s == op).count() as f64;
        let per_event = |n: f64| n / total as f64;
        let writes = count("TransactWriteItems");
        let reads = count("GetItem") + count("BatchGetItem") + count("Query");
        eprintln!(
            "batch {batch_size:>4}: {total} events, {:.3} transactions/event, {:.3} reads/event, \
             ~{:.3} WCU/event, ~{:.3} RCU/event ({sent_len} requests)",
            per_event(writes),
            per_event(reads),
            per_event(units.write),
            per_event(units.read),
            sent_len = sent.len()
        );
        if batch_size >= 100 {
            assert!(
                per_event(writes) <= 0.1,
                "{} writes per event",
                per_event(writes)
            );
        }
    }
}

/// Commits per second and conflicts per commit with 1 and 16 sources, one
/// aggregator instance and four concurrent ones (as ParallelizationFactor
/// 4 would run), batches of 10: printed for the ARCHITECTURE.md figures;
/// every event is counted once whatever the concurrency (asserted).
#[tokio::test]
async fn commits_per_second_by_sources_and_concurrent_instances() {
    for sources in [1usize, 16] {
        for instances in [1usize, 4] {
            let log = RequestLog::default();
            let Some(client) = testing::client(&log) else {
                return;
            };
            let store = DynamoStore::new(client, &testing::table_name("sygno-agg-rate"));
            store.create_table().await.expect("create");
            let events: Vec<NewEvent> = (0..200)
                .map(|i| NewEvent {
                    name: format!("gh-{}", i % sources),
                    event_time: NOW - (i as i64 % 30) * 1000,
                    ..new_event(i, NOW - 1_000)
                })
                .collect();
            write(&store, events.clone()).await;
            let records = stream_records(&store).await;
            log.take();
            let mut queues: Vec<Vec<Vec<Value>>> = vec![Vec::new(); instances];
            for (i, chunk) in records.chunks(10).enumerate() {
                queues[i % instances].push(chunk.to_vec());
            }
            let started = std::time::Instant::now();
            run_instances(&store, queues).await;
            let elapsed = started.elapsed().as_secs_f64();
            let sent = log.take();
            // Every event was received in one second: each commit wrote
            // one marks item there.
            let commits = store
                .client()
                .query()
                .table_name(store.table())
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(
                    ":pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!(
                        "ap#{}",
                        (NOW - 1_000) / 1000
                    )),
                )
                .select(aws_sdk_dynamodb::types::Select::Count)
                .send()
                .await
                .expect("count commits")
                .count as f64;
            let transactions = sent.iter().filter(|s| *s == "TransactWriteItems").count() as f64;
            eprintln!(
                "{sources:>2} sources, {instances} instances: {:.0} commits/s, {:.2} conflicts/commit, \
                 {:.0} events/s",
                commits / elapsed,
                (transactions - commits) / commits,
                200.0 / elapsed
            );
            let all = scope_row(&store, &Scope::All, ExposeKind::DayStats).await;
            assert_eq!(
                all["count"], 200,
                "{sources} sources, {instances} instances"
            );
        }
    }
}

/// What one commit costs with a full week of 20-field history: the reads
/// are dominated by the week's hour summaries (printed; the request counts
/// that show the window cache at work are asserted).
#[tokio::test]
async fn one_commit_over_a_week_of_twenty_fields() {
    let log = RequestLog::default();
    let Some(client) = testing::client(&log) else {
        return;
    };
    let store = DynamoStore::new(client, &testing::table_name("sygno-agg-week"));
    // Writing part 0, where the seeded week is.
    let agg = aggregator(&store).with_all_events_part(0);
    store.create_table().await.expect("create");
    // One summary per hour of the week and per minute of the last hour,
    // each with 20 fields, for all events and for the event's source.
    let mut summary = Summary::default();
    for i in 0..20 {
        let fields = (0..20)
            .map(|f| (format!("sensor.field_{f:02}"), f64::from(i * f) / 3.0))
            .collect();
        summary.record(&fields);
    }
    let end_minute = window_end(NOW) / MINUTE_MS;
    let source = Scope::Source(new_event(1, NOW).name);
    let mut keys: Vec<(u64, SummaryKey)> = Vec::new();
    for scope in [Scope::All, source.clone()] {
        keys.extend((0..170).map(|h| {
            let key = SummaryKey {
                scope: scope.clone(),
                tier: Tier::Hour,
                index: end_minute / 60 - h,
            };
            (0, key)
        }));
        keys.extend((0..60).map(|m| {
            let key = SummaryKey {
                scope: scope.clone(),
                tier: Tier::Minute,
                index: end_minute - 1 - m,
            };
            (0, key)
        }));
    }
    for chunk in keys.chunks(MAX_TRANSACTION_ITEMS - 1) {
        let summaries: Vec<((u64, SummaryKey), Versioned<Summary>)> = chunk
            .iter()
            .map(|k| {
                let value = summary.clone();
                (k.clone(), Versioned { value, version: 0 })
            })
            .collect();
        store
            .commit(Commit {
                summaries: &summaries,
                ..Commit::default()
            })
            .await
            .expect("seed");
    }
    write(&store, [new_event(1, NOW)]).await;
    let records = stream_records(&store).await;
    log.take();
    log.take_capacity();
    assert!(failures(&handle(&agg, &batch(&records), NOW).await).is_empty());
    let sent = log.take();
    let units = log.take_capacity();
    let count = |sent: &[String], op: &str| sent.iter().filter(|s| *s == op).count();
    eprintln!(
        "one commit over a week of 20 fields: {} requests ({sent:?}), ~{:.1} RCU, ~{:.1} WCU",
        sent.len(),
        units.read,
        units.write
    );
    assert_eq!(count(&sent, "TransactWriteItems"), 1);
    let cold_queries = count(&sent, "Query");
    assert!(row(&store, ExposeKind::WeekAverage).await["count"].as_u64() > Some(3000));

    // The next commit in the same minute, by the same container, of an
    // event in the current minute, renders from the folds the first one
    // made: per aggregate, one Query for the current minute (and one for
    // the applied marks of the event's second).
    write(
        &store,
        [NewEvent {
            event_time: NOW - 1_000,
            ..new_event(4, NOW)
        }],
    )
    .await;
    let records = stream_records(&store).await;
    log.take();
    log.take_capacity();
    assert!(failures(&handle(&agg, &batch(&records), NOW).await).is_empty());
    let sent = log.take();
    let units = log.take_capacity();
    eprintln!(
        "the next commit, same minute: {} requests ({sent:?}), ~{:.1} RCU, ~{:.1} WCU",
        sent.len(),
        units.read,
        units.write
    );
    assert_eq!(count(&sent, "TransactWriteItems"), 1);
    assert_eq!(
        count(&sent, "Query"),
        2 + 2,
        "{sent:?} (cold: {cold_queries})"
    );
    assert!(cold_queries > 2 + 4);
    // It rendered what a cold container renders from the store.
    let state = store.read_state().await.expect("state");
    let stored = store.query_scopes(state.generation).await.expect("scopes");
    let scopes: Vec<(&Scope, &ScopeState)> = stored.iter().map(|(s, i)| (s, &i.state)).collect();
    let cold = render(
        &store,
        state.generation,
        &scopes,
        &BTreeMap::new(),
        &mut HashMap::new(),
        window_end(NOW),
        DEFAULT_MAX_FIELDS,
    )
    .await
    .expect("render");
    let rendered: std::collections::BTreeSet<&Scope> = cold.views.iter().map(|v| &v.0).collect();
    assert_eq!(
        rendered,
        [&Scope::All, &source].into(),
        "all events and the one source"
    );
    for (scope, kind, doc) in cold.views {
        let doc: Value = serde_json::from_str(&doc).expect("json");
        assert_eq!(
            scope_row(&store, &scope, kind).await,
            doc,
            "{scope:?} {kind:?}"
        );
    }
}

/// Contract v2 bounds through the Lambda handler: 20 events of 500 new
/// field names each, then a small one, in the batches Lambda makes: no
/// failure, the small event is `latest`, and the field limit keeps 2,000
/// fields and counts the rest as dropped.
#[tokio::test]
async fn wide_events_never_stall_the_stream_aggregator() {
    let Some((store, _)) = fresh_store("sygno-agg-wide").await else {
        return;
    };
    let agg = aggregator(&store);
    let wide = (0..20).map(|i| {
        let fields: Vec<String> = (0..500)
            .map(|f| format!(r#""w{i:02}_{f:03}": {f}"#))
            .collect();
        NewEvent {
            name: "wide".into(),
            data: format!("{{{}}}", fields.join(",")),
            event_time: NOW - 10_000 + i as i64,
            ..new_event(i, NOW - 5_000 + i as i64)
        }
    });
    write(&store, wide).await;
    let small = NewEvent {
        name: "wide".into(),
        data: r#"{"small": 1.5}"#.into(),
        event_time: NOW - 1_000,
        ..new_event(99, NOW)
    };
    write(&store, [small.clone()]).await;
    let records = stream_records(&store).await;
    assert_eq!(records.len(), 21);
    for chunk in records.chunks(10) {
        let response = handle(&agg, &batch(chunk), NOW).await;
        assert!(failures(&response).is_empty(), "{response:?}");
    }
    let wide = Scope::Source("wide".into());
    let latest = scope_row(&store, &wide, ExposeKind::Latest).await;
    assert_eq!(latest["event_id"], small.event_id);
    let stats = scope_row(&store, &wide, ExposeKind::DayStats).await;
    assert_eq!(stats["count"], 21);
    assert_eq!(stats["fields"].as_object().map(|f| f.len()), Some(2_000));
    assert_eq!(stats["fields_dropped"], 8_001);
    let listed = store.sources_page(None, usize::MAX).await.expect("sources");
    let entry: Value = serde_json::from_str(&listed[0].1).expect("json");
    assert_eq!(
        (entry["fields"].clone(), entry["fields_dropped"].clone()),
        (json!(2_000), json!(8_001))
    );
}

/// A rebuild's commit retries conflicts for as long as its patience lasts,
/// not a fixed number of times (under a steady write load it loses many
/// races to the stream's commits), and gives the conflict back after.
#[tokio::test]
async fn rebuild_commits_outlast_many_conflicts() {
    let tries = std::sync::atomic::AtomicU32::new(0);
    let attempt = || async {
        let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n < 3 * COMMIT_ATTEMPTS {
            Err(StoreError::Conflict("another commit came first".into()))
        } else {
            Ok(n)
        }
    };
    let won = retry_conflicts_with(REBUILD_PATIENCE, attempt).await;
    assert_eq!(won.ok(), Some(3 * COMMIT_ATTEMPTS));
    tries.store(0, std::sync::atomic::Ordering::SeqCst);
    let impatient = retry_conflicts_with(Patience::For(Duration::ZERO), attempt).await;
    assert!(matches!(impatient, Err(StoreError::Conflict(_))));
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A commit that reads a source's scope item but not yet the marks item
/// the item names (a read may see part of a transaction: `Query` is only
/// read-committed) does not plan on that read: it reads again, and rather
/// fails than count an event twice.
#[tokio::test]
async fn a_scope_item_whose_marks_are_not_visible_yet_is_read_again() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let Some((store, _)) = fresh_store("sygno-agg-marks").await else {
        return;
    };
    let agg = aggregator(&store);
    write(&store, [new_event(1, NOW - 1_000)]).await;
    let records = stream_records(&store).await;
    assert!(failures(&handle(&agg, &batch(&records), NOW).await).is_empty());
    let source = (0, Scope::Source(new_event(1, NOW).name));
    let item = store
        .read_scopes(std::slice::from_ref(&source))
        .await
        .expect("read")[&source]
        .clone();
    assert_eq!(item.last_marks.len(), 1);
    let (second, commit) = item.last_marks[0].clone();
    let key = |name: &str, value: String| (name.to_owned(), AttributeValue::S(value));
    let marks_key: HashMap<String, AttributeValue> = [
        key("pk", format!("ap#{second}")),
        key("sk", format!("c#{commit}")),
    ]
    .into();
    let hidden = store
        .client()
        .delete_item()
        .table_name(store.table())
        .set_key(Some(marks_key))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
        .send()
        .await
        .expect("delete")
        .attributes
        .expect("the marks item existed");
    // Redelivered while its marks are out of sight: not applied again.
    let response = handle(&agg, &batch(&records), NOW).await;
    assert_eq!(failures(&response).len(), 1, "reported for a retry");
    assert_eq!(
        scope_row(&store, &source.1, ExposeKind::DayStats).await["count"],
        1
    );
    // Once they are visible, the redelivery is skipped.
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(hidden))
        .send()
        .await
        .expect("put back");
    assert!(failures(&handle(&agg, &batch(&records), NOW).await).is_empty());
    assert_eq!(
        scope_row(&store, &source.1, ExposeKind::DayStats).await["count"],
        1
    );
    assert_eq!(
        scope_row(&store, &Scope::All, ExposeKind::DayStats).await["count"],
        1
    );
}

/// Commits of different sources by aggregators writing different parts of
/// the all-events aggregate share no item: four instances, each with its
/// own source and part, deliver at once, and no transaction is refused;
/// every event counts once.
#[tokio::test]
async fn commits_of_different_sources_and_parts_never_contend() {
    let log = RequestLog::default();
    let Some(client) = testing::client(&log) else {
        return;
    };
    let store = DynamoStore::new(client, &testing::table_name("sygno-agg-apart"));
    store.create_table().await.expect("create");
    let events: Vec<NewEvent> = (0..120)
        .map(|i| NewEvent {
            name: format!("gh-{}", i % 4),
            event_time: NOW - (i as i64 % 30) * 1000,
            ..new_event(i, NOW - 1_000)
        })
        .collect();
    write(&store, events).await;
    let records = stream_records(&store).await;
    log.take();
    let mut running = tokio::task::JoinSet::new();
    for k in 0..4u8 {
        let name = json!(format!("gh-{k}"));
        let mine: Vec<Value> = records
            .iter()
            .filter(|r| r["dynamodb"]["NewImage"]["name"]["S"] == name)
            .cloned()
            .collect();
        let agg = aggregator(&store).with_all_events_part(k);
        running.spawn(async move {
            for chunk in mine.chunks(5) {
                deliver(&agg, chunk.to_vec()).await;
            }
        });
    }
    while let Some(done) = running.join_next().await {
        done.expect("an instance");
    }
    let sent = log.take();
    let transactions = sent.iter().filter(|s| *s == "TransactWriteItems").count();
    assert_eq!(
        transactions,
        120 / 5,
        "one transaction a batch, none refused"
    );
    let all = scope_row(&store, &Scope::All, ExposeKind::DayStats).await;
    assert_eq!(all["count"], 120);
    for k in 0..4 {
        let source = Scope::Source(format!("gh-{k}"));
        assert_eq!(
            scope_row(&store, &source, ExposeKind::DayStats).await["count"],
            30
        );
    }
}
