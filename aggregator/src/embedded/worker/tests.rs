use super::*;
use crate::embedded::rebuild;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use sygno_shared::domain::event::NewEvent;
use sygno_shared::domain::fold::SummaryKey;
use sygno_shared::domain::limit::DEFAULT_MAX_FIELDS;
use sygno_shared::domain::tiers::Tier;
use sygno_shared::domain::time::bucket_of;
use sygno_shared::domain::time::{DAY_MS, MINUTE_MS};
use sygno_shared::store::embedded::EmbeddedStore;
use sygno_shared::store::{ChangeFeed, EventLog, StoreError, ViewStore};

const T0: Millis = 1_764_000_000_000;
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

struct Fixture {
    dir: tempfile::TempDir,
    store: EmbeddedStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    Fixture { dir, store }
}

impl Fixture {
    async fn worker(&self, now: Millis) -> Worker {
        Worker::start(
            Arc::new(self.store.clone()),
            Arc::new(self.store.clone()),
            DEFAULT_MAX_FIELDS,
            now,
        )
        .await
        .expect("worker")
    }

    async fn write(&self, t: Millis, x: f64) {
        self.write_as("raw", t, &format!(r#"{{"x": {x}}}"#)).await;
    }

    async fn write_as(&self, name: &str, t: Millis, data: &str) {
        self.store
            .append(NewEvent {
                event_id: format!("id-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
                event_time: t,
                received_at: t,
                name: name.into(),
                user_id: "u".into(),
                data: data.into(),
                idempotency_key: None,
            })
            .await
            .expect("append");
    }

    async fn row(&self, kind: ExposeKind) -> serde_json::Value {
        let doc = self
            .store
            .view(&Scope::All, kind)
            .await
            .expect("view")
            .expect("row exists");
        serde_json::from_str(&doc).expect("json")
    }

    /// Every row of every aggregate, and the sources list.
    async fn rows(&self) -> Vec<String> {
        rows_of(&self.store).await
    }

    /// Rebuilds at `now` and checks the rows equal `incremental`'s.
    async fn assert_a_rebuild_gives(&self, incremental: Vec<String>, now: Millis) {
        rebuild::rebuild(
            &self.store,
            &self.store,
            DEFAULT_MAX_FIELDS,
            now,
            &mut |_, _| {},
        )
        .await
        .expect("rebuild");
        assert_eq!(self.rows().await, incremental, "bit-for-bit equal rows");
    }
}

/// An event of source `raw` a second before `T0`, received at
/// `received_at`, with `x` its one field.
fn raw_event(event_id: String, received_at: Millis, x: u64) -> NewEvent {
    NewEvent {
        event_id,
        event_time: T0 - 1_000,
        received_at,
        name: "raw".into(),
        user_id: "u".into(),
        data: format!(r#"{{"x": {x}}}"#),
        idempotency_key: None,
    }
}

async fn rows_of(store: &EmbeddedStore) -> Vec<String> {
    let mut out = Vec::new();
    let scopes = [
        Scope::All,
        Scope::Source("raw".into()),
        Scope::Source("b".into()),
    ];
    for scope in &scopes {
        for kind in ExposeKind::ALL {
            if let Some(doc) = store.view(scope, kind).await.expect("view") {
                out.push(doc.to_string());
            }
        }
    }
    for (_, doc) in store.sources_page(None, usize::MAX).await.expect("sources") {
        out.push(doc.to_string());
    }
    out
}

#[tokio::test]
async fn a_step_applies_a_batch_and_commits_its_checkpoint() {
    let f = fixture();
    for i in 0..10 {
        f.write(T0 - i * MINUTE_MS, i as f64).await;
    }
    let mut worker = f.worker(T0).await;
    assert_eq!(worker.step(T0).await.expect("step"), 10);
    assert_eq!(worker.step(T0).await.expect("step"), 0, "caught up");
    let row = f.row(ExposeKind::DayAverage).await;
    assert_eq!(row["count"], 10);
    assert_eq!(row["fields"]["x"]["value"], 4.5);
    assert_eq!(f.store.load().await.expect("load").checkpoint, 10);
}

#[tokio::test]
async fn restarting_applies_every_event_exactly_once() {
    let f = fixture();
    for i in 0..5 {
        f.write(T0, i as f64).await;
    }
    let mut first = f.worker(T0).await;
    first.step(T0).await.expect("step");
    drop(first);
    for i in 5..8 {
        f.write(T0, i as f64).await;
    }
    // A new worker (a restart) resumes from the committed checkpoint.
    let mut second = f.worker(T0).await;
    assert_eq!(second.step(T0).await.expect("step"), 3);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], 8);
}

#[tokio::test]
async fn a_worker_with_a_stale_checkpoint_cannot_double_apply() {
    let f = fixture();
    f.write(T0, 1.0).await;
    let mut a = f.worker(T0).await;
    let mut b = f.worker(T0).await;
    a.step(T0).await.expect("step");
    // `b` read checkpoint 0 before `a` committed: its commit must fail...
    assert!(matches!(b.step(T0).await, Err(StoreError::Conflict(_))));
    // ...and it recovers by reloading, applying nothing twice.
    assert_eq!(b.step(T0).await.expect("step"), 0);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], 1);
}

#[tokio::test]
async fn windows_roll_forward_without_events() {
    let f = fixture();
    f.write(T0, 1.0).await;
    let mut worker = f.worker(T0).await;
    worker.step(T0).await.expect("step");
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], 1);
    let later = T0 + DAY_MS + MINUTE_MS;
    assert_eq!(worker.step(later).await.expect("step"), 0);
    let row = f.row(ExposeKind::DayAverage).await;
    assert_eq!(row["count"], 0, "the event left the 24 h window: {row}");
    assert_eq!(
        row["window_end"],
        serde_json::json!(sygno_shared::domain::time::format_rfc3339(window_end(
            later
        )))
    );
    assert_eq!(f.row(ExposeKind::WeekAverage).await["count"], 1);
}

#[tokio::test]
async fn late_events_before_the_horizon_are_stored_in_their_bucket() {
    let f = fixture();
    let old = T0 - 8 * DAY_MS;
    f.write(old, 1.0).await;
    let mut worker = f.worker(T0 - 8 * DAY_MS).await;
    worker.step(old).await.expect("step");
    // Time moves on: bucket `old` is evicted from memory; then a late event
    // for the same bucket arrives and must be merged with the stored one.
    worker.step(T0).await.expect("step");
    f.write(old, 3.0).await;
    worker.step(T0).await.expect("step");
    let key = SummaryKey {
        scope: Scope::All,
        tier: Tier::Minute,
        index: bucket_of(old),
    };
    let stored = f.store.load_summaries(0, &[key]).await.expect("load");
    assert_eq!(stored[0].1.events, 2);
    assert_eq!(stored[0].1.fields["x"].mean, 2.0);
}

#[tokio::test]
async fn rebuild_gives_the_rows_incremental_processing_gave() {
    let f = fixture();
    let clock_ms = Arc::new(AtomicI64::new(T0));
    let mut worker = f.worker(T0).await;
    // Events spread over 9 days, in small batches, with the clock moving.
    for i in 0..300i64 {
        let t = T0 - (i * 7_919 * 1_000) % (9 * DAY_MS);
        let name = if i % 4 == 0 { "b" } else { "raw" };
        let data = format!(
            r#"{{"x": {}, "f{}": 1}}"#,
            (i % 13) as f64 * 1.5 + 0.1,
            i % 5
        );
        f.write_as(name, t, &data).await;
        if i % 37 == 0 {
            worker
                .step(clock_ms.load(Ordering::SeqCst))
                .await
                .expect("step");
        }
    }
    let clock: Clock = {
        let c = Arc::clone(&clock_ms);
        Arc::new(move || c.load(Ordering::SeqCst))
    };
    worker.catch_up(&clock).await.expect("catch up");
    let incremental = f.rows().await;
    assert_eq!(
        incremental.len(),
        3 * 7 + 2,
        "three aggregates, two sources"
    );
    let rebuilt = rebuild::rebuild(&f.store, &f.store, DEFAULT_MAX_FIELDS, T0, &mut |_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.checkpoint, 300);
    assert_eq!(f.rows().await, incremental, "bit-for-bit equal rows");
    drop(worker);
    // The same after a restart from the rebuilt store.
    drop(f.store);
    let store = EmbeddedStore::open(f.dir.path()).expect("reopen");
    assert_eq!(rows_of(&store).await, incremental);
}

#[tokio::test]
async fn summaries_carried_from_batch_to_batch_equal_a_rebuild() {
    // Many small batches landing in the same minutes and hours: each
    // batch takes the previous one's summaries from memory, not storage.
    let f = fixture();
    let mut worker = f.worker(T0).await;
    for i in 0..120i64 {
        let t = T0 - 3 * MINUTE_MS + (i % 3) * MINUTE_MS;
        let name = if i % 2 == 0 { "b" } else { "raw" };
        f.write_as(
            name,
            t,
            &format!(r#"{{"x": {}, "y": -{i}}}"#, i as f64 / 7.0),
        )
        .await;
        if i % 3 == 2 {
            assert_eq!(worker.step(T0).await.expect("step"), 3);
        }
    }
    let incremental = f.rows().await;
    let stats = f.row(ExposeKind::DayStats).await;
    assert_eq!(stats["count"], 120, "{stats}");
    assert_eq!(stats["fields"]["x"]["count"], 120, "{stats}");
    assert_eq!(stats["fields"]["y"]["min"], -119.0, "{stats}");
    f.assert_a_rebuild_gives(incremental, T0).await;
}

#[tokio::test]
async fn a_rebuild_request_is_served_while_writes_keep_coming() {
    let f = fixture();
    let worker = f.worker(T0).await.render_every(Duration::from_millis(200));
    let (handle, requests) = crate::control::channel();
    let (stop, stopped) = watch::channel(false);
    let clock: Clock = Arc::new(|| T0);
    let task = tokio::spawn(run(worker, clock, requests, stopped));
    // A write every 5 ms: every step reads events, every pause is paced.
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (store, writing) = (f.store.clone(), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                store
                    .append(raw_event(format!("live-{n}"), T0 - 1_000, n))
                    .await
                    .expect("append");
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.start(T0).expect("start");
    let mut done = false;
    for _ in 0..500 {
        if handle.status().state != crate::control::RebuildState::Running {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(done, "the rebuild waited for the writes to stop");
    assert_eq!(handle.status().state, crate::control::RebuildState::Done);
    stop.send(true).expect("worker listening");
    task.await.expect("worker");
    assert!(written > 0);
}

#[tokio::test]
async fn run_catches_up_then_stops_with_its_checkpoint_committed() {
    let f = fixture();
    for i in 0..50 {
        f.write(T0, i as f64).await;
    }
    let worker = f.worker(T0).await;
    let (_handle, requests) = crate::control::channel();
    let (stop, stopped) = watch::channel(false);
    let clock: Clock = Arc::new(|| T0);
    let task = tokio::spawn(run(worker, clock, requests, stopped));
    // Poll until the rows show every event, then write more while it runs.
    let wait_for = |n: u64| {
        let store = f.store.clone();
        async move {
            for _ in 0..500 {
                let row = store.view(&Scope::All, ExposeKind::DayAverage).await;
                if let Some(doc) = row.expect("view") {
                    let row: serde_json::Value = serde_json::from_str(&doc).expect("json");
                    if row["count"] == n {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("rows never reached {n} events");
        }
    };
    wait_for(50).await;
    f.write(T0, 1.0).await;
    wait_for(51).await;
    stop.send(true).expect("worker listening");
    task.await.expect("run");
    assert_eq!(f.store.load().await.expect("load").checkpoint, 51);
}

#[tokio::test]
async fn a_clock_stepping_back_never_moves_the_windows_back() {
    let f = fixture();
    f.write(T0 - 7 * DAY_MS + MINUTE_MS, 1.0).await;
    let mut worker = f.worker(T0).await;
    worker.step(T0).await.expect("step");
    let later = T0 + 2 * MINUTE_MS;
    worker.step(later).await.expect("step");
    let row = f.row(ExposeKind::WeekAverage).await;
    // The clock jumps back 10 minutes: rows keep their newest window end.
    worker.step(later - 10 * MINUTE_MS).await.expect("step");
    assert_eq!(f.row(ExposeKind::WeekAverage).await, row);
}

#[tokio::test]
async fn a_backlog_is_rendered_once_caught_up_and_latest_goes_on() {
    let f = fixture();
    let total = 2 * BATCH + 10;
    let mut writers = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let store = f.store.clone();
        writers.spawn(async move {
            for i in (chunk..total).step_by(8) {
                store
                    .append(raw_event(format!("backlog-{i:06}"), i as Millis, i as u64))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let mut worker = f.worker(T0).await;
    // The first batch renders (nothing was published yet).
    assert_eq!(worker.step(T0).await.expect("step"), BATCH);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], BATCH);
    // A full batch behind which more wait, in the same second: folded and
    // committed, `latest` written, window rows left for later.
    assert_eq!(worker.step(T0 + 10).await.expect("step"), BATCH);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], BATCH);
    assert_eq!(
        f.store.load().await.expect("load").checkpoint,
        2 * BATCH as u64
    );
    // latest: of the events folded, the one received last.
    let folded = f.store.read_after(0, 2 * BATCH).await.expect("read");
    let newest = folded
        .iter()
        .map(|e| e.received_at)
        .max()
        .unwrap_or_default();
    let latest = f.row(ExposeKind::Latest).await;
    assert_eq!(latest["data"]["x"], newest, "{latest}");
    // Caught up: every aggregate rendered.
    assert_eq!(worker.step(T0 + 20).await.expect("step"), 10);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], total);
    let source = f
        .store
        .view(&Scope::Source("raw".into()), ExposeKind::DayStats)
        .await
        .expect("view")
        .expect("row");
    let source: serde_json::Value = serde_json::from_str(&source).expect("json");
    assert_eq!(source["count"], total);
    // The current minute's summaries were carried across the full
    // batches: the rows equal a rebuild's.
    let incremental = f.rows().await;
    f.assert_a_rebuild_gives(incremental, T0 + 20).await;
}

#[tokio::test]
async fn a_full_batch_of_fresh_events_is_live_load() {
    // Wide events fill batches at the read's byte budget; received just
    // now, they are live load: each batch's rows are rendered with it.
    let f = fixture();
    let mut worker = f.worker(T0).await;
    let pad = "p".repeat(60_000);
    let per_batch = sygno_shared::store::MAX_READ_BYTES / 60_000 + 1;
    for i in 0..2 * per_batch {
        let data = format!(r#"{{"x": {i}, "pad": "{pad}"}}"#);
        f.write_as("raw", T0 - 10, &data).await;
    }
    let first = worker.step(T0).await.expect("step");
    assert!(first < 2 * per_batch, "cut at the byte budget: {first}");
    assert!(worker.behind(), "more to read at once");
    let second = worker.step(T0 + 10).await.expect("step");
    assert_eq!(first + second, 2 * per_batch);
    assert_eq!(
        f.row(ExposeKind::DayAverage).await["count"],
        2 * per_batch,
        "the second full batch rendered at once"
    );
}

#[tokio::test]
async fn live_rows_render_at_most_once_an_interval_and_never_stay_behind() {
    let f = fixture();
    let mut worker = f.worker(T0).await.render_every(Duration::from_millis(300));
    f.write(T0 - 1_000, 1.0).await;
    assert_eq!(worker.step(T0).await.expect("step"), 1);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], 1);
    assert_eq!(worker.render_pending(), None);
    // Within the interval: folded and committed, latest written, window
    // rows due later.
    f.write(T0 - 500, 3.0).await;
    assert_eq!(worker.step(T0).await.expect("step"), 1);
    assert_eq!(f.row(ExposeKind::Latest).await["data"]["x"], 3.0);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], 1);
    let wait = worker.render_pending().expect("rows pending");
    assert!(wait <= Duration::from_millis(300));
    // Nothing new arrives; once due, a step renders them.
    assert_eq!(worker.step(T0).await.expect("step"), 0);
    tokio::time::sleep(wait).await;
    assert_eq!(worker.step(T0).await.expect("step"), 0);
    assert_eq!(f.row(ExposeKind::DayAverage).await["count"], 2);
    assert_eq!(worker.render_pending(), None);
}

/// Minute summaries past their retention are deleted by the worker (hour
/// summaries are kept); series over the recent minutes still read them.
#[tokio::test]
async fn minute_summaries_past_their_retention_are_pruned() {
    let f = fixture();
    let now = T0 + 40 * DAY_MS;
    f.write(T0, 1.0).await; // 40 days old
    f.write(now - DAY_MS, 2.0).await; // a day old
    let mut worker = f.worker(now).await;
    worker.step(now).await.expect("step");
    // The first step pruned before folding; the next hour's prunes what
    // the fold wrote for the old minute.
    worker.step(now + HOUR_MS).await.expect("step");
    let minute = |t: Millis| bucket_of(t);
    let summaries = |tier, index: i64| {
        let store = f.store.clone();
        async move {
            store
                .summaries(&Scope::All, tier, index..index + 1)
                .await
                .expect("read")
        }
    };
    assert!(
        summaries(Tier::Minute, minute(T0)).await.is_empty(),
        "40 days old: pruned"
    );
    assert_eq!(summaries(Tier::Minute, minute(now - DAY_MS)).await.len(), 1);
    assert_eq!(
        summaries(Tier::Hour, minute(T0) / 60).await.len(),
        1,
        "hours are kept"
    );
}
