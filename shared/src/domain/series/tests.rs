use super::*;
use crate::domain::stats::tests::assert_close;
use proptest::prelude::*;

fn fields(pairs: &[(&str, f64)]) -> Fields {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn summarize_is_half_open() {
    let mut s = Series::default();
    s.record(10, &fields(&[("x", 1.0)]));
    s.record(11, &fields(&[("x", 2.0)]));
    s.record(12, &fields(&[("x", 4.0)]));
    let w = s.summarize(11, 12);
    assert_eq!(w.events, 1);
    assert_eq!(w.fields["x"].mean, 2.0);
    assert_eq!(s.summarize(10, 13).events, 3);
    assert_eq!(s.summarize(13, 20).events, 0);
    assert_eq!(s.summarize(12, 12).events, 0);
}

#[test]
fn events_without_a_field_count_as_events_only() {
    let mut s = Series::default();
    s.record(0, &fields(&[("x", 1.0)]));
    s.record(0, &fields(&[]));
    let w = s.summarize(0, 1);
    assert_eq!(w.events, 2);
    assert_eq!(w.fields["x"].count, 1);
}

#[test]
fn blocks_follow_late_changes() {
    let mut s = Series::default();
    for b in 0..180 {
        s.record(b, &fields(&[("x", b as f64)]));
    }
    let before = s.summarize(0, 180);
    assert_eq!(before.events, 180);
    // A late event into a block already folded must show in the next fold.
    s.record(70, &fields(&[("x", 1000.0)]));
    let after = s.summarize(0, 180);
    assert_eq!(after.events, 181);
    assert_eq!(after.fields["x"].count, 181);
}

#[test]
fn eviction_keeps_unwritten_buckets() {
    let mut s = Series::default();
    s.record(5, &fields(&[("x", 1.0)]));
    s.record(100, &fields(&[("x", 1.0)]));
    s.evict_before(50);
    assert!(s.contains(5), "dirty bucket 5 must stay until written");
    assert_eq!(s.take_dirty().len(), 2);
    s.evict_before(50);
    assert!(!s.contains(5));
    assert!(s.contains(100));
}

proptest! {
    /// Any range folds to the statistics of exactly the events in it,
    /// whichever way it cuts through blocks.
    #[test]
    fn summarize_matches_exact_over_any_range(
        events in proptest::collection::vec((0i64..400, 0.0f64..100.0), 1..300),
        start in 0i64..400,
        len in 0i64..400,
    ) {
        let mut s = Series::default();
        for (bucket, v) in &events {
            s.record(*bucket, &fields(&[("x", *v)]));
        }
        let end = start + len;
        let w = s.summarize(start, end);
        let inside: Vec<f64> = events.iter().filter(|(b, _)| (start..end).contains(b)).map(|(_, v)| *v).collect();
        prop_assert_eq!(w.events, inside.len() as u64);
        if inside.is_empty() {
            prop_assert!(!w.fields.contains_key("x"));
        } else {
            assert_close(&w.fields["x"], &inside);
        }
    }

    /// The fold depends on bucket contents only: caching, eviction and
    /// reloading never change a single bit.
    #[test]
    fn the_fold_is_canonical(
        events in proptest::collection::vec((0i64..300, -50.0f64..50.0), 1..200),
        probes in proptest::collection::vec((0i64..300, 0i64..300), 1..6),
    ) {
        let mut warm = Series::default();
        let mut cold = Series::default();
        for (i, (bucket, v)) in events.iter().enumerate() {
            warm.record(*bucket, &fields(&[("x", *v)]));
            cold.record(*bucket, &fields(&[("x", *v)]));
            if i % 17 == 0 {
                let (a, b) = probes[i % probes.len()];
                warm.summarize(a.min(b), a.max(b));
            }
        }
        // Round-trip `cold` through "storage": write all, evict, reload.
        let stored = cold.take_dirty();
        let mut reloaded = Series::default();
        for (b, s) in stored {
            reloaded.load(b, s);
        }
        for (a, b) in probes {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert_eq!(warm.summarize(lo, hi), reloaded.summarize(lo, hi));
        }
    }
}
