use super::*;
use crate::domain::fields::Fields;
use crate::domain::stats::tests::assert_close;
use crate::domain::time::WEEK_MS;
use proptest::prelude::*;

/// A whole series folded at once.
fn fold_series(query: &SeriesQuery, stored: &[(i64, Summary)]) -> Result<Vec<Bucket>, SeriesError> {
    let mut fold = SeriesFold::new(query);
    for (index, summary) in stored {
        fold.push(*index, summary)?;
    }
    Ok(fold.finish())
}

const T0: Millis = 1_764_000_000_000; // 2025-11-24T16:00:00Z

fn query(interval: Interval, from: Millis, to: Millis) -> SeriesQuery {
    SeriesQuery::new(None, None, interval, from, to).expect("valid")
}

#[test]
fn ranges_are_rounded_outward_and_bounded() {
    let q = query(Interval::M15, T0 + 7 * MINUTE_MS, T0 + 31 * MINUTE_MS);
    assert_eq!((q.from, q.to), (T0, T0 + 45 * MINUTE_MS));
    assert_eq!(
        q.reads(),
        (Tier::Minute, T0 / MINUTE_MS..T0 / MINUTE_MS + 45)
    );
    let q = query(Interval::D1, T0, T0 + 1);
    assert_eq!(q.from % DAY_MS, 0);
    assert_eq!(q.to - q.from, DAY_MS);
    assert_eq!(q.reads().0, Tier::Hour);
    // Exactly 10,000 buckets; one more is refused.
    assert!(SeriesQuery::new(None, None, Interval::M1, T0, T0 + 10_000 * MINUTE_MS).is_ok());
    let e = SeriesQuery::new(None, None, Interval::M1, T0, T0 + 10_001 * MINUTE_MS)
        .expect_err("too many");
    assert_eq!(e.code, "too_many_buckets");
    let e = SeriesQuery::new(None, None, Interval::H1, T0, T0 - HOUR_MS).expect_err("reversed");
    assert_eq!(e.code, "invalid_body");
    assert!(query(Interval::H1, T0, T0).reads().1.is_empty());
    // Rounded outward past year 9999 or before year 1: refused, not
    // answered in a form RFC 3339 lacks.
    let late = crate::domain::time::parse_rfc3339("9999-12-31T12:00:00Z").expect("time");
    assert!(SeriesQuery::new(None, None, Interval::D1, late, late + HOUR_MS).is_err());
    assert!(SeriesQuery::new(None, None, Interval::H1, late, late + HOUR_MS).is_ok());
    let early = crate::domain::time::parse_rfc3339("0001-01-01T00:30:00Z").expect("time");
    assert!(SeriesQuery::new(None, None, Interval::D1, early, early + HOUR_MS).is_ok());
    assert!(SeriesQuery::new(None, None, Interval::D1, early - DAY_MS, early).is_err());
}

#[test]
fn bodies_are_checked() {
    let ok = parse_series(
        br#"{"name": "gh-1", "fields": ["t", "a.b"], "interval": "1h",
             "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00+01:00"}"#,
    )
    .expect("valid");
    assert_eq!(ok.name.as_deref(), Some("gh-1"));
    assert_eq!(ok.fields.map(|f| f.len()), Some(2));
    assert_eq!(ok.to - ok.from, 23 * HOUR_MS);
    for (body, code) in [
        (
            r#"{"interval": "2m", "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z"}"#,
            "invalid_body",
        ),
        (
            r#"{"interval": "1m", "from": "yesterday", "to": "2026-11-21T00:00:00Z"}"#,
            "invalid_body",
        ),
        (
            r#"{"interval": "1m", "from": "2026-11-20T00:00:00Z"}"#,
            "invalid_body",
        ),
        (
            r#"{"interval": "1m", "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "x": 1}"#,
            "invalid_body",
        ),
        (
            r#"{"interval": "1m", "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "fields": [1]}"#,
            "invalid_body",
        ),
        (
            r#"{"interval": "1m", "from": "2026-11-01T00:00:00Z", "to": "2026-11-21T00:00:00Z"}"#,
            "too_many_buckets",
        ),
        (r#"[]"#, ""),
    ] {
        match parse_series(body.as_bytes()) {
            Err(SeriesRequestError::Series(e)) => assert_eq!(e.code, code, "{body}"),
            Err(SeriesRequestError::Write(WriteError::Invalid(_))) => {
                assert_eq!(code, "", "{body}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let many: Vec<String> = (0..101).map(|i| format!("\"f{i}\"")).collect();
    let body = format!(
        r#"{{"interval": "1h", "from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "fields": [{}]}}"#,
        many.join(",")
    );
    assert!(
        matches!(parse_series(body.as_bytes()), Err(SeriesRequestError::Series(e)) if e.code == "invalid_body")
    );
    assert!(matches!(
        parse_series(b"{"),
        Err(SeriesRequestError::Write(WriteError::Syntax(_)))
    ));
}

#[test]
fn retention_refuses_finer_than_kept_and_names_what_is() {
    let now = T0 + 40 * DAY_MS;
    let retention = Retention::default();
    let old = query(Interval::M5, T0, T0 + DAY_MS);
    let e = old
        .check_retention(&retention, now)
        .expect_err("minutes are gone");
    assert_eq!(e.code, "resolution_unavailable");
    assert!(e.message.contains("1h or more"), "{}", e.message);
    assert!(query(Interval::H1, T0, T0 + DAY_MS)
        .check_retention(&retention, now)
        .is_ok());
    assert!(query(Interval::M15, now - 34 * DAY_MS, now)
        .check_retention(&retention, now)
        .is_ok());
    let short = Retention {
        minutes: Some(DAY_MS),
        hours: Some(WEEK_MS),
    };
    let e = query(Interval::D1, now - 8 * DAY_MS, now)
        .check_retention(&short, now)
        .expect_err("hours gone");
    assert!(e.message.contains("hour summaries"), "{}", e.message);
}

/// Events over 40 days in minute and hour summaries, as the stores keep
/// them (each summary the fold of its events).
fn stored(events: &[(Millis, Fields)]) -> [BTreeMap<i64, Summary>; 2] {
    let mut minutes: BTreeMap<i64, Summary> = BTreeMap::new();
    let mut hours: BTreeMap<i64, Summary> = BTreeMap::new();
    for (time, fields) in events {
        minutes
            .entry(time.div_euclid(MINUTE_MS))
            .or_default()
            .record(fields);
        hours
            .entry(time.div_euclid(HOUR_MS))
            .or_default()
            .record(fields);
    }
    [minutes, hours]
}

fn event_strategy() -> impl Strategy<Value = (Millis, Fields)> {
    let value = prop_oneof![
        -1e6f64..1e6,
        (-1e300f64..1e300),
        Just(1e308),
        Just(-1e308),
        (1e-300f64..1e-290),
    ];
    (
        0..40 * DAY_MS,
        proptest::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("c.d")],
            value,
            0..3,
        ),
    )
        .prop_map(|(offset, fields)| {
            let fields: Fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            (T0 + offset, fields)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every bucket of any series equals the exact statistics of its
    /// events (1e-9; min and max exact), its count is all its events, and
    /// no non-empty bucket is missing.
    #[test]
    fn every_bucket_is_exact(
        events in proptest::collection::vec(event_strategy(), 1..300),
        interval in proptest::sample::select(Interval::ALL.to_vec()),
        from_offset in 0..41 * DAY_MS,
        span in 0..12 * DAY_MS,
        only_a in any::<bool>(),
    ) {
        let fields = only_a.then(|| BTreeSet::from(["a".to_owned()]));
        let width = interval.ms();
        let span = span.min((MAX_BUCKETS - 2) * width);
        let q = SeriesQuery::new(None, fields, interval, T0 + from_offset - DAY_MS, T0 + from_offset - DAY_MS + span)
            .expect("within bounds");
        let [minutes, hours] = stored(&events);
        let (tier, range) = q.reads();
        let tier_map = if tier == Tier::Minute { &minutes } else { &hours };
        let read: Vec<(i64, Summary)> = tier_map.range(range).map(|(i, s)| (*i, s.clone())).collect();
        let buckets = fold_series(&q, &read).expect("within bounds");

        let mut expected: BTreeMap<Millis, Vec<&(Millis, Fields)>> = BTreeMap::new();
        for event in &events {
            if (q.from..q.to).contains(&event.0) {
                expected.entry(event.0.div_euclid(width) * width).or_default().push(event);
            }
        }
        prop_assert_eq!(buckets.iter().map(|b| b.start).collect::<Vec<_>>(), expected.keys().copied().collect::<Vec<_>>());
        for bucket in &buckets {
            let in_bucket = &expected[&bucket.start];
            prop_assert_eq!(bucket.summary.events, in_bucket.len() as u64);
            let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for (_, fields) in in_bucket {
                for (path, value) in fields {
                    if !only_a || path == "a" {
                        values.entry(path).or_default().push(*value);
                    }
                }
            }
            prop_assert_eq!(bucket.summary.fields.keys().map(String::as_str).collect::<Vec<_>>(), values.keys().copied().collect::<Vec<_>>());
            for (path, values) in values {
                assert_close(&bucket.summary.fields[path], &values);
            }
        }
    }
}

#[test]
fn development_views_are_their_series() {
    let end = T0 + 17 * MINUTE_MS;
    let day = Development::Day.query(Some("gh".into()), end);
    assert_eq!(day.interval, Interval::M15);
    assert_eq!((day.to - day.from) / day.interval.ms(), 97);
    let week = Development::Week.query(None, end);
    assert_eq!(week.interval, Interval::D1);
    assert_eq!((week.to - week.from) / DAY_MS, 8);
    assert_eq!(
        Development::parse("7d_development"),
        Some(Development::Week)
    );
    assert_eq!(Development::parse("7d_devt"), None);
}

#[test]
fn retention_is_configured_in_days() {
    assert_eq!(Retention::from_days(None, None), Ok(Retention::default()));
    let r = Retention::from_days(Some("40"), Some("400")).expect("valid");
    assert_eq!(
        (r.minutes, r.hours),
        (Some(40 * DAY_MS), Some(400 * DAY_MS))
    );
    assert!(
        Retention::from_days(Some("7"), None).is_err(),
        "windows need 8"
    );
    assert!(Retention::from_days(Some("40"), Some("39")).is_err());
    assert!(Retention::from_days(Some("x"), None).is_err());
    // A minute summary expires its retention after the minute ends.
    let r = Retention::default();
    assert_eq!(
        r.expires_at(Tier::Minute, 10),
        Some((11 * MINUTE_MS + 35 * DAY_MS) / 1000)
    );
    assert_eq!(r.expires_at(Tier::Hour, 10), None);
    assert_eq!(
        r.first_kept_index(Tier::Minute, 36 * DAY_MS),
        Some(DAY_MS / MINUTE_MS)
    );
}

#[test]
fn grafana_gets_the_finest_interval_within_its_points() {
    let now = T0 + 60 * DAY_MS;
    let r = Retention::default();
    let day_ago = now - DAY_MS;
    assert_eq!(finest_interval(day_ago, now, 2000, &r, now), Interval::M1);
    assert_eq!(finest_interval(day_ago, now, 1000, &r, now), Interval::M5);
    assert_eq!(finest_interval(day_ago, now, 100, &r, now), Interval::M15);
    assert_eq!(finest_interval(day_ago, now, 20, &r, now), Interval::H6);
    assert_eq!(finest_interval(day_ago, now, 1, &r, now), Interval::D1);
    // Older than the minutes kept: hours at best.
    assert_eq!(
        finest_interval(T0, T0 + HOUR_MS, 10_000, &r, now),
        Interval::H1
    );
}

#[test]
fn a_fold_is_read_in_chunks_and_bounded() {
    let q = query(Interval::M15, T0, T0 + 3 * DAY_MS);
    let chunks: Vec<_> = SeriesFold::new(&q).chunks().collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[0].end, chunks[1].start);
    assert_eq!(chunks[2].end, q.reads().1.end);
    // 10,000 hour buckets of 101 fields pass the budget of statistics.
    let wide: Fields = (0..101).map(|i| (format!("f{i}"), 1.0)).collect();
    let mut summary = Summary::default();
    summary.record(&wide);
    let q = query(Interval::H1, T0, T0 + 10_000 * HOUR_MS);
    let mut fold = SeriesFold::new(&q);
    let first = q.reads().1.start;
    let mut refused = None;
    for i in 0..10_000 {
        if let Err(e) = fold.push(first + i, &summary) {
            refused = Some((i, e));
            break;
        }
    }
    let (at, e) = refused.expect("over the budget");
    assert_eq!(e.code, "too_many_statistics");
    assert_eq!(at, (MAX_SERIES_CELLS / 101) as i64);
}

#[test]
fn reads_shrink_for_wide_summaries_and_finished_buckets_come_out_in_order() {
    let q = query(Interval::M15, T0, T0 + 3 * DAY_MS);
    let (_, range) = q.reads();
    let mut fold = SeriesFold::new(&q);
    let first = fold.next_read(range.start).expect("a first read");
    assert_eq!(first, range.start..range.start + MIN_READ_CHUNK);
    // Narrow summaries: a day of minutes at a time.
    let narrow: Fields = (0..3).map(|i| (format!("f{i}"), 1.0)).collect();
    let mut summary = Summary::default();
    summary.record(&narrow);
    for i in first.clone() {
        fold.push(i, &summary).expect("within the budget");
    }
    let next = fold.next_read(first.end).expect("more");
    assert_eq!(next, first.end..first.end + READ_CHUNK);
    // An hour of 15-minute buckets is finished; nothing of the next.
    let done = fold.take_finished(first.end);
    assert_eq!(done.len(), 4);
    assert!(done.windows(2).all(|w| w[0].start < w[1].start));
    assert!(fold.take_finished(first.end).is_empty());
    // Wide summaries: fewer at a time, never under an hour's worth.
    let wide: Fields = (0..5_000).map(|i| (format!("f{i}"), 1.0)).collect();
    let mut wide_summary = Summary::default();
    wide_summary.record(&wide);
    let mut fold = SeriesFold::new(&q);
    fold.push(range.start, &wide_summary).expect("one");
    let next = fold.next_read(range.start + 1).expect("more");
    assert_eq!(next.end - next.start, MIN_READ_CHUNK);
    assert_eq!(fold.next_read(range.end), None);
}
