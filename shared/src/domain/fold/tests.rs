use super::*;
use crate::domain::time::{window_end, DAY_MS, WEEK_MS};
use crate::domain::window::{fold_map, WindowCache};
use proptest::prelude::*;

struct Owned {
    id: String,
    time: Millis,
    received: Millis,
    name: String,
    data: String,
}

impl Owned {
    fn new(i: usize, time: Millis, name: &str, data: &str) -> Self {
        Owned {
            id: format!("e{i:06}"),
            time,
            received: i as Millis,
            name: name.into(),
            data: data.into(),
        }
    }

    fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            event_id: &self.id,
            event_time: self.time,
            received_at: self.received,
            name: &self.name,
            data: &self.data,
        }
    }
}

fn window(batch: &Batch, scope: &Scope, end: Millis, span: Millis) -> Summary {
    let map = batch
        .summaries
        .iter()
        .filter(|(k, _)| k.scope == *scope)
        .map(|(k, s)| ((k.tier, k.index), s.clone()))
        .collect();
    fold_map(&map, end, span)
}

#[test]
fn an_event_counts_in_all_events_and_in_its_source() {
    let mut batch = Batch::default();
    let a = Owned::new(1, 0, "gh1", r#"{"t": 1}"#);
    let b = Owned::new(2, 0, "gh2", r#"{"t": 3, "h": 5}"#);
    fold(&mut batch, &a.as_ref(), 10);
    fold(&mut batch, &b.as_ref(), 10);
    let end = window_end(0);
    let all = window(&batch, &Scope::All, end, DAY_MS);
    assert_eq!(
        (all.events, all.fields["t"].mean, all.fields["h"].count),
        (2, 2.0, 1)
    );
    let gh1 = window(&batch, &Scope::Source("gh1".into()), end, DAY_MS);
    assert_eq!((gh1.events, gh1.fields.len()), (1, 1));
    assert_eq!(batch.scopes[&Scope::All].events, 2);
    assert_eq!(batch.scopes[&Scope::Source("gh2".into())].events, 1);
    // Four summaries per source (minute and hour), two for all events.
    assert_eq!(batch.summaries.len(), 6);
}

#[test]
fn latest_is_greatest_event_time_then_received_at_then_event_id() {
    let mut batch = Batch::default();
    let first = Owned::new(1, 100, "s", "{}");
    let older = Owned::new(2, 50, "s", "{}");
    let tie = Owned::new(3, 100, "s", "{}");
    assert_eq!(fold(&mut batch, &first.as_ref(), 10).latest_of.len(), 2);
    assert!(fold(&mut batch, &older.as_ref(), 10).latest_of.is_empty());
    assert_eq!(fold(&mut batch, &tie.as_ref(), 10).latest_of.len(), 2);
    let latest = batch.scopes[&Scope::All].latest.clone();
    assert_eq!(latest.map(|l| l.event_id), Some(tie.id.clone()));
    // Same time and received_at: the greater event id.
    let mut same = Owned::new(3, 100, "s", "{}");
    same.id = "e999999".into();
    assert_eq!(fold(&mut batch, &same.as_ref(), 10).latest_of.len(), 2);
}

#[test]
fn unreadable_data_counts_without_fields() {
    let mut batch = Batch::default();
    let e = Owned::new(1, 0, "s", "not json");
    assert!(fold(&mut batch, &e.as_ref(), 10).unreadable);
    let w = window(&batch, &Scope::All, window_end(0), DAY_MS);
    assert_eq!((w.events, w.fields.len()), (1, 0));
}

#[test]
fn each_aggregate_has_its_own_field_limit() {
    let mut batch = Batch::default();
    let a = Owned::new(1, 0, "a", r#"{"x": 1, "y": 2}"#);
    let b = Owned::new(2, 0, "b", r#"{"z": 3}"#);
    assert!(fold(&mut batch, &a.as_ref(), 2).first_drop.is_empty());
    // All events already holds x and y: z is dropped there, not in b.
    let folded = fold(&mut batch, &b.as_ref(), 2);
    assert_eq!(folded.first_drop, vec![Scope::All]);
    let end = window_end(0);
    assert!(!window(&batch, &Scope::All, end, DAY_MS)
        .fields
        .contains_key("z"));
    assert!(window(&batch, &Scope::Source("b".into()), end, DAY_MS)
        .fields
        .contains_key("z"));
    assert_eq!(batch.scopes[&Scope::All].fields.dropped(), 1);
}

#[test]
fn window_edges_start_inclusive_end_exclusive() {
    let now = 10 * DAY_MS + 30_000;
    let end = window_end(now);
    let start = end - DAY_MS;
    let mut batch = Batch::default();
    for (i, t) in [start - 1, start, end - 1, end].into_iter().enumerate() {
        let e = Owned::new(i, t, "s", &format!(r#"{{"x": {i}}}"#));
        fold(&mut batch, &e.as_ref(), 10);
    }
    let w = window(&batch, &Scope::All, end, DAY_MS);
    assert_eq!((w.events, w.fields["x"].mean), (2, 1.5));
}

#[test]
fn buckets_leave_the_window_as_time_passes() {
    let t0 = 20 * DAY_MS;
    let mut batch = Batch::default();
    fold(
        &mut batch,
        &Owned::new(1, t0, "s", r#"{"x": 1}"#).as_ref(),
        10,
    );
    let count = |end, span| window(&batch, &Scope::All, end, span).events;
    assert_eq!(count(window_end(t0 + DAY_MS - 1), DAY_MS), 1);
    assert_eq!(count(window_end(t0 + DAY_MS), DAY_MS), 0);
    assert_eq!(count(window_end(t0 + DAY_MS), WEEK_MS), 1);
    assert_eq!(count(window_end(t0 + WEEK_MS), WEEK_MS), 0);
}

/// The embedded worker's way: batches folded into summaries loaded from
/// storage, rows from a window cache told of every change, the clock
/// moving on between batches.
fn incremental(
    events: &[Owned],
    batches: &[usize],
    step: Millis,
    max: usize,
) -> (Batch, Vec<Summary>) {
    let mut storage = Batch::default();
    let mut caches: BTreeMap<Scope, WindowCache> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut rest = events;
    let mut sizes = batches.iter().cycle();
    let mut now = 0;
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        let keys = keys_of(chunk.iter().map(Owned::as_ref));
        let mut batch = Batch {
            scopes: storage.scopes.clone(),
            summaries: keys
                .iter()
                .filter_map(|k| storage.summaries.get(k).map(|s| (k.clone(), s.clone())))
                .collect(),
        };
        for e in chunk {
            fold(&mut batch, &e.as_ref(), max);
        }
        for key in batch.summaries.keys() {
            caches
                .entry(key.scope.clone())
                .or_default()
                .invalidate(key.tier, key.index);
        }
        storage.scopes = batch.scopes;
        storage.summaries.extend(batch.summaries);
        now += step;
        let end = window_end(now);
        for (scope, cache) in &mut caches {
            for span in [DAY_MS, WEEK_MS] {
                rows.push(
                    cache.fold(end, span, &mut |tier, range: std::ops::Range<i64>| {
                        storage
                            .summaries
                            .iter()
                            .filter(move |(k, _)| {
                                k.scope == *scope && k.tier == tier && range.contains(&k.index)
                            })
                            .map(|(_, s)| s)
                    }),
                );
            }
            cache.retain_used();
        }
        rest = tail;
    }
    (storage, rows)
}

proptest! {
    #[test]
    fn incremental_equals_one_pass_bit_for_bit(
        raw in proptest::collection::vec((0i64..(9 * DAY_MS), -1000.0f64..1000.0, 0usize..3, 0usize..4), 1..120),
        batches in proptest::collection::vec(1usize..20, 1..5),
        max in 1usize..5,
    ) {
        let events: Vec<Owned> = raw.iter().enumerate().map(|(i, (t, v, source, field))| {
            let data = format!(r#"{{"x{field}": {v}, "n": {{"y": {}}}, "s": "text"}}"#, v * 2.0);
            Owned::new(i, *t, &format!("s{source}"), &data)
        }).collect();
        let step = 9 * DAY_MS / events.len() as Millis;
        let (inc, _) = incremental(&events, &batches, step, max);
        let mut once = Batch::default();
        for e in &events {
            fold(&mut once, &e.as_ref(), max);
        }
        prop_assert_eq!(&inc.scopes, &once.scopes);
        prop_assert_eq!(&inc.summaries, &once.summaries);
        let end = window_end(9 * DAY_MS);
        for scope in once.scopes.keys() {
            for span in [DAY_MS, WEEK_MS] {
                prop_assert_eq!(window(&inc, scope, end, span), window(&once, scope, end, span));
            }
        }
    }

    #[test]
    fn cached_windows_equal_uncached_bit_for_bit(
        raw in proptest::collection::vec((0i64..(9 * DAY_MS), -1000.0f64..1000.0), 1..150),
        batches in proptest::collection::vec(1usize..30, 1..5),
    ) {
        let mut events: Vec<Owned> = raw.iter().enumerate().map(|(i, (t, v))| {
            Owned::new(i, *t, "s", &format!(r#"{{"x": {v}}}"#))
        }).collect();
        // Mostly in time order, as live data is, with late ones mixed in.
        events.sort_by_key(|e| e.time / (3 * 3_600_000));
        let step = 9 * DAY_MS / events.len() as Millis;
        let (storage, rows) = incremental(&events, &batches, step, 10);
        // Re-render every step's windows without a cache, from the same
        // final storage only where nothing changed later: compare the last.
        let last_end = window_end(step * rows.len().div_ceil(4) as Millis);
        let scope = Scope::Source("s".into());
        let uncached = [window(&storage, &scope, last_end, DAY_MS), window(&storage, &scope, last_end, WEEK_MS)];
        let n = rows.len();
        prop_assert_eq!(&rows[n - 2..], &uncached[..]);
    }
}
