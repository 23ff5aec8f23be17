use super::*;
use crate::domain::fields::Fields;
use expect_test::expect;

#[test]
fn latest_row_carries_data_as_sent() {
    let latest = EventRef {
        received_at: 7,
        event_time: 1_619_863_670_000,
        event_id: "id-1",
        name: "_ws_source_meteo",
        data: r#"{"b": 1.50, "a": [1, {"c": null}]}"#,
    };
    expect![[r#"{"type":"latest","event_id":"id-1","event_time":"2021-05-01T10:07:50.000Z","name":"_ws_source_meteo","data":{"b": 1.50, "a": [1, {"c": null}]}}"#]]
        .assert_eq(&render_latest(&latest));
}

#[test]
fn window_rows_report_mean_or_deviation() {
    let mut summary = Summary::default();
    let mut one = Fields::new();
    one.insert("a.b".into(), 1.0);
    one.insert("solo".into(), 5.0);
    summary.record(&one);
    let mut two = Fields::new();
    two.insert("a.b".into(), 3.0);
    summary.record(&two);
    summary.record(&Fields::new());
    let end = 1_619_863_680_000;
    expect![[r#"{"type":"24h_average","window_start":"2021-04-30T10:08:00.000Z","window_end":"2021-05-01T10:08:00.000Z","count":3,"fields":{"a.b":{"count":2,"value":2.0},"solo":{"count":1,"value":5.0}}}"#]]
        .assert_eq(&render_window(ExposeKind::DayAverage, end, &summary, 0));
    expect![[r#"{"type":"7d_devt","window_start":"2021-04-24T10:08:00.000Z","window_end":"2021-05-01T10:08:00.000Z","count":3,"fields":{"a.b":{"count":2,"value":1.4142135623730951},"solo":{"count":1,"value":null}}}"#]]
        .assert_eq(&render_window(ExposeKind::WeekDevt, end, &summary, 0));
}

#[test]
fn an_empty_window_has_no_fields() {
    expect![[r#"{"type":"24h_devt","window_start":"1969-12-31T00:01:00.000Z","window_end":"1970-01-01T00:01:00.000Z","count":0,"fields":{}}"#]]
        .assert_eq(&render_window(ExposeKind::DayDevt, 60_000, &Summary::default(), 0));
}

#[test]
fn stats_rows_carry_every_statistic_and_the_drops() {
    let mut summary = Summary::default();
    for v in [1e308, -1e308] {
        summary.record(&Fields::from([("x".to_owned(), v)]));
    }
    summary.record(&Fields::from([("y".to_owned(), 2.5)]));
    expect![[r#"{"type":"24h_stats","window_start":"1969-12-31T00:01:00.000Z","window_end":"1970-01-01T00:01:00.000Z","count":3,"fields":{"x":{"count":2,"mean":0.0,"std":1.4142135623730951e+308,"min":-1e+308,"max":1e+308},"y":{"count":1,"mean":2.5,"std":null,"min":2.5,"max":2.5}},"fields_dropped":4}"#]]
        .assert_eq(&render_window(ExposeKind::DayStats, 60_000, &summary, 4));
}

proptest::proptest! {
    /// The v1 rows a store derives from the stats rows are the rows
    /// rendered directly, byte for byte, for values across the f64 range.
    #[test]
    fn v1_rows_derived_from_stats_rows_are_the_rendered_ones(
        events in proptest::collection::vec(
            proptest::collection::btree_map(
                "[a-c]{1,2}",
                proptest::prop_oneof![
                    proptest::num::f64::NORMAL,
                    proptest::num::f64::SUBNORMAL,
                    proptest::num::f64::ZERO,
                    -1e6..1e6f64,
                ],
                0..4,
            ),
            0..12,
        ),
        end in -1_000_000_000_000i64..1_000_000_000_000,
        dropped in 0usize..5,
    ) {
        let mut summary = Summary::default();
        for fields in &events {
            summary.record(&fields.iter().map(|(k, v)| (k.clone(), *v)).collect());
        }
        let end = end - end.rem_euclid(60_000);
        for kind in ExposeKind::ALL {
            let Some(stats) = kind.stats_row() else { continue };
            let stats_doc = render_window(stats, end, &summary, dropped);
            proptest::prop_assert_eq!(
                derive_window(kind, &stats_doc),
                Some(render_window(kind, end, &summary, dropped))
            );
        }
    }
}

#[test]
fn only_the_v1_window_kinds_are_derived() {
    let stats = render_window(ExposeKind::DayStats, 60_000, &Summary::default(), 0);
    assert_eq!(derive_window(ExposeKind::DayStats, &stats), None);
    assert_eq!(derive_window(ExposeKind::Latest, &stats), None);
    assert_eq!(derive_window(ExposeKind::DayAverage, "not json"), None);
    assert_eq!(
        ExposeKind::WeekDevt.stats_row(),
        Some(ExposeKind::WeekStats)
    );
    assert_eq!(ExposeKind::WeekStats.stats_row(), None);
}

#[test]
fn csv_cells_a_spreadsheet_would_run_are_escaped() {
    use crate::domain::series::{Bucket, Interval, SeriesQuery};
    let mut summary = Summary::default();
    let mut fields = Fields::new();
    fields.insert("=HYPERLINK(\"http://evil/\")".into(), -1.5);
    fields.insert("plain".into(), 2.0);
    summary.record(&fields);
    let query = SeriesQuery::new(
        Some("=cmd|' /C calc'!A0".into()),
        None,
        Interval::M1,
        0,
        60_000,
    )
    .expect("a valid query");
    let csv = render_series_csv(&query, &[Bucket { start: 0, summary }]);
    expect![[r#"
        start,name,field,count,mean,std,min,max
        1970-01-01T00:00:00.000Z,'=cmd|' /C calc'!A0,"'=HYPERLINK(""http://evil/"")",1,-1.5,,-1.5,-1.5
        1970-01-01T00:00:00.000Z,'=cmd|' /C calc'!A0,plain,1,2.0,,2.0,2.0
    "#]]
    .assert_eq(&csv);
    for risky in ["=1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
        assert!(spreadsheet_safe(risky).starts_with('\''), "{risky:?}");
    }
    assert_eq!(spreadsheet_safe("temp.inside"), "temp.inside");
}
