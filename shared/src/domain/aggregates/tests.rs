use super::*;
use crate::domain::time::{bucket_of, window_end, DAY_MS, MINUTE_MS, WEEK_MS};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn event(seq: u64, t: Millis, data: &str) -> LoggedEvent {
    LoggedEvent {
        seq,
        event_id: format!("e{seq}"),
        event_time: t,
        name: "raw".into(),
        user_id: "u".into(),
        data: data.into(),
    }
}

#[test]
fn redelivered_events_are_skipped() {
    let mut a = Aggregates::default();
    let e = event(1, 0, r#"{"x": 1}"#);
    assert_eq!(a.apply(&e), Applied::Applied);
    assert_eq!(a.apply(&e), Applied::Skipped);
    assert_eq!(a.window(MINUTE_MS, DAY_MS).events, 1);
}

#[test]
fn latest_is_greatest_event_time_then_last_stored() {
    let mut a = Aggregates::default();
    a.apply(&event(1, 100, "{}"));
    a.apply(&event(2, 50, "{}"));
    assert_eq!(
        a.latest.as_ref().map(|l| l.seq),
        Some(1),
        "an older event does not replace latest"
    );
    a.apply(&event(3, 100, "{}"));
    assert_eq!(
        a.latest.as_ref().map(|l| l.seq),
        Some(3),
        "a tie goes to the one stored last"
    );
    assert!(a.take_latest_change().is_some());
    assert!(a.take_latest_change().is_none());
}

#[test]
fn unreadable_data_counts_without_fields() {
    let mut a = Aggregates::default();
    assert_eq!(a.apply(&event(1, 0, "not json")), Applied::Unreadable);
    let w = a.window(MINUTE_MS, DAY_MS);
    assert_eq!(w.events, 1);
    assert!(w.fields.is_empty());
}

#[test]
fn window_edges_start_inclusive_end_exclusive() {
    let now = 10 * DAY_MS + 30_000;
    let end = window_end(now);
    let start = end - DAY_MS;
    let mut a = Aggregates::default();
    a.apply(&event(1, start - 1, r#"{"x": 1}"#));
    a.apply(&event(2, start, r#"{"x": 2}"#));
    a.apply(&event(3, end - 1, r#"{"x": 3}"#));
    a.apply(&event(4, end, r#"{"x": 4}"#));
    let w = a.window(end, DAY_MS);
    assert_eq!(w.events, 2);
    assert_eq!(w.fields["x"].mean, 2.5);
}

#[test]
fn buckets_leave_the_window_as_time_passes() {
    let mut a = Aggregates::default();
    let t0 = 20 * DAY_MS;
    a.apply(&event(1, t0, r#"{"x": 1}"#));
    let end0 = window_end(t0);
    assert_eq!(a.window(end0, DAY_MS).events, 1);
    // No new events; only the clock moves.
    let later = window_end(t0 + DAY_MS - 1);
    assert_eq!(
        a.window(later, DAY_MS).events,
        1,
        "still inside just before 24 h"
    );
    let after = window_end(t0 + DAY_MS);
    assert_eq!(
        a.window(after, DAY_MS).events,
        0,
        "gone once 24 h have passed"
    );
    assert_eq!(
        a.window(after, WEEK_MS).events,
        1,
        "still in the 7 d window"
    );
    assert_eq!(a.window(window_end(t0 + WEEK_MS), WEEK_MS).events, 0);
}

#[test]
fn late_events_land_in_their_own_bucket() {
    let now = 30 * DAY_MS;
    let mut a = Aggregates::default();
    a.apply(&event(1, now, r#"{"x": 10}"#));
    a.apply(&event(2, now - 3 * DAY_MS, r#"{"x": 20}"#));
    let end = window_end(now);
    assert_eq!(a.window(end, DAY_MS).events, 1);
    assert_eq!(a.window(end, WEEK_MS).events, 2);
    assert!(a.series.contains(bucket_of(now - 3 * DAY_MS)));
}

/// Simulates the worker: batches, storage round trips, eviction past the
/// horizon and reloading of cold buckets for late events.
fn incremental(
    events: &[LoggedEvent],
    batches: &[usize],
    now: Millis,
) -> (Aggregates, BTreeMap<i64, Summary>) {
    let mut storage = BTreeMap::new();
    let mut state = Aggregates::default();
    let end = window_end(now);
    let horizon = bucket_of(end - WEEK_MS);
    let mut rest = events;
    let mut sizes = batches.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(n);
        for b in state.buckets_to_load(batch, horizon) {
            if let Some(s) = storage.get(&b) {
                state.series.load(b, Summary::clone(s));
            }
        }
        for e in batch {
            state.apply(e);
        }
        storage.extend(state.series.take_dirty());
        state.series.evict_before(horizon);
        rest = tail;
    }
    (state, storage)
}

proptest! {
    #[test]
    fn incremental_equals_one_pass_bit_for_bit(
        raw in proptest::collection::vec((0i64..(9 * DAY_MS), -1000.0f64..1000.0, any::<bool>()), 1..150),
        batches in proptest::collection::vec(1usize..20, 1..5),
    ) {
        let now = 9 * DAY_MS;
        let events: Vec<LoggedEvent> = raw.iter().enumerate().map(|(i, (t, v, has))| {
            let data = if *has { format!(r#"{{"x": {v}, "n": {{"y": {}}}}}"#, v * 2.0) } else { String::from(r#"{"s": "text"}"#) };
            event(i as u64 + 1, *t, &data)
        }).collect();
        let (mut inc, storage) = incremental(&events, &batches, now);
        let mut once = Aggregates::default();
        for e in &events {
            once.apply(e);
        }
        let end = window_end(now);
        for span in [DAY_MS, WEEK_MS] {
            prop_assert_eq!(inc.window(end, span), once.window(end, span));
        }
        prop_assert_eq!(inc.latest.clone(), once.latest.clone());
        // `once` was never drained: its dirty buckets are all its buckets.
        let all: BTreeMap<i64, Summary> = once.series.take_dirty().into_iter().collect();
        prop_assert_eq!(storage, all);
    }
}
