use super::*;
use crate::domain::time::{format_rfc3339, MINUTE_MS};

const NOW: Millis = 1_764_000_000_000;

fn ok(body: &str) -> WriteCommand {
    match parse_write(body.as_bytes(), NOW) {
        Ok(c) => c,
        Err(e) => panic!("{body}: {e}"),
    }
}

#[track_caller]
fn err(body: &str) -> WriteError {
    match parse_write(body.as_bytes(), NOW) {
        Ok(c) => panic!("{body} was accepted: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn defaults_are_now_and_raw() {
    let c = ok(r#"{"data": {"x": 1}}"#);
    assert_eq!(c.event_time, NOW);
    assert_eq!(c.name, "raw");
    assert_eq!(c.fields.get("x"), Some(&1.0));
}

#[test]
fn data_is_kept_exactly_as_sent() {
    let c = ok(r#"{"data": {"b": 1.50, "a" : [1,2]}}"#);
    assert_eq!(c.data.get(), r#"{"b": 1.50, "a" : [1,2]}"#);
}

#[test]
fn event_time_and_name_are_read() {
    let c = ok(r#"{"data": {}, "event_time": "2025-01-01T00:00:00.1234+01:00", "name": "n"}"#);
    assert_eq!(format_rfc3339(c.event_time), "2024-12-31T23:00:00.123Z");
    assert_eq!(c.name, "n");
}

#[test]
fn a_table_gives_time_and_name_unless_the_request_does() {
    let table = r#"{"name": "_ws_source_meteo", "rows": [["Variable", "Value"], ["t", 9.5]], "ts": "2021-05-01T12:07:50+02:00"}"#;
    let c = ok(&format!(r#"{{"data": {table}}}"#));
    assert_eq!(format_rfc3339(c.event_time), "2021-05-01T10:07:50.000Z");
    assert_eq!(c.name, "_ws_source_meteo");
    let c = ok(&format!(
        r#"{{"data": {table}, "name": "top", "event_time": "2021-01-01T00:00:00Z"}}"#
    ));
    assert_eq!(c.name, "top");
    assert_eq!(format_rfc3339(c.event_time), "2021-01-01T00:00:00.000Z");
}

#[test]
fn up_to_five_minutes_ahead_is_accepted() {
    let at = format_rfc3339(NOW + 5 * MINUTE_MS);
    ok(&format!(r#"{{"data": {{}}, "event_time": "{at}"}}"#));
    let beyond = format_rfc3339(NOW + 5 * MINUTE_MS + 1);
    err(&format!(r#"{{"data": {{}}, "event_time": "{beyond}"}}"#));
}

#[test]
fn depth_limit_counts_data_as_level_one() {
    let nest = |levels: usize| {
        format!(
            r#"{{"data": {}1{}}}"#,
            "{\"a\":".repeat(levels),
            "}".repeat(levels)
        )
    };
    ok(&nest(32));
    assert!(matches!(err(&nest(33)), WriteError::Invalid(_)));
    // Deeper than serde_json's own limit: still a 422, not a 400.
    assert!(matches!(err(&nest(500)), WriteError::Invalid(_)));
    let broken = format!(r#"{{"data": {}1{}"#, "[".repeat(500), "]".repeat(499));
    assert!(matches!(err(&broken), WriteError::Syntax(_)));
}

#[test]
fn bad_bodies_are_classified() {
    let syntax = [
        "",
        "{",
        "not json",
        r#"{"data": {"x": NaN}}"#,
        r#"{"data": {"x": Infinity}}"#,
        r#"{"data": {"x": 1e400}}"#,
        r#"{"data": {}} trailing"#,
        r#"{"data": {"x": 1,}}"#,
    ];
    for body in syntax {
        assert!(matches!(err(body), WriteError::Syntax(_)), "{body}");
    }
    let invalid = [
        "[]",
        "1",
        r#""text""#,
        "null",
        "{}",
        r#"{"data": null}"#,
        r#"{"data": [1]}"#,
        r#"{"data": "x"}"#,
        r#"{"data": {}, "extra": 1}"#,
        r#"{"data": {}, "event_time": "yesterday"}"#,
        r#"{"data": {}, "event_time": 5}"#,
        r#"{"data": {}, "name": ""}"#,
        r#"{"data": {}, "name": 7}"#,
        r#"{"data": {"rows": [["Variable", "Value"], ["a"]]}}"#,
        r#"{"data": {"rows": [["Variable", "Value"]], "ts": "bad"}}"#,
        r#"{"data": {"rows": [["Variable", "Value"]], "ts": 5}}"#,
        r#"{"data": {"rows": [["Variable", "Value"]], "name": 5}}"#,
    ];
    for body in invalid {
        assert!(matches!(err(body), WriteError::Invalid(_)), "{body}");
    }
    let long_name = "n".repeat(129);
    assert!(matches!(
        err(&format!(r#"{{"data": {{}}, "name": "{long_name}"}}"#)),
        WriteError::Invalid(_)
    ));
    ok(&format!(
        r#"{{"data": {{}}, "name": "{}"}}"#,
        "é".repeat(128)
    ));
}

#[test]
fn idempotency_keys_are_visible_ascii() {
    assert_eq!(
        parse_idempotency_key(b"abc-123_!~").as_deref(),
        Ok("abc-123_!~")
    );
    assert!(parse_idempotency_key(&[b'k'; 128]).is_ok());
    for bad in [
        &b""[..],
        &[b'k'; 129],
        b"has space",
        b"tab\t",
        "é".as_bytes(),
        b"\x7f",
    ] {
        assert!(parse_idempotency_key(bad).is_err(), "{bad:?}");
    }
}

#[track_caller]
fn batch_err(body: &str) -> BatchError {
    match parse_batch(body.as_bytes(), NOW) {
        Ok(c) => panic!("{body} was accepted: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_batch_is_checked_event_by_event() {
    let batch = parse_batch(
        br#"{"events": [{"data": {"x": 1}}, {"data": {"y": 2}, "name": "gh-1"}]}"#,
        NOW,
    )
    .expect("a valid batch");
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[1].name, "gh-1");
    assert_eq!(batch[1].fields.get("y"), Some(&2.0));

    let e = batch_err(r#"{"events": [{"data": {}}, {"data": {}}, {"data": 3}]}"#);
    assert_eq!(e.index, Some(2));
    assert!(
        matches!(&e.error, WriteError::Invalid(t) if t.starts_with("events[2]: ")),
        "{e:?}"
    );

    let wide: Vec<String> = (0..1001).map(|i| format!("\"f{i}\": 1")).collect();
    let body = format!(
        r#"{{"events": [{{"data": {{}}}}, {{"data": {{{}}}}}]}}"#,
        wide.join(",")
    );
    let e = batch_err(&body);
    assert_eq!(e.index, Some(1));
    assert!(matches!(
        e.error,
        WriteError::Limit {
            code: "too_many_fields",
            ..
        }
    ));
}

#[test]
fn a_batch_event_is_at_most_a_write_raw_body() {
    let pad = |n: usize| format!(r#"{{"data": {{"s": "{}"}}}}"#, "x".repeat(n));
    let fits = pad(MAX_BODY_BYTES - pad(0).len());
    assert_eq!(fits.len(), MAX_BODY_BYTES);
    let over = pad(MAX_BODY_BYTES - pad(0).len() + 1);
    let body = format!(r#"{{"events": [{fits}, {over}]}}"#);
    let e = batch_err(&body);
    assert_eq!(e.index, Some(1));
    assert!(
        matches!(
            e.error,
            WriteError::Limit {
                code: "event_too_large",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(parse_batch(format!(r#"{{"events": [{fits}]}}"#).as_bytes(), NOW).is_ok());
}

#[test]
fn a_malformed_batch_names_no_event() {
    for (body, syntax) in [
        (r#"{"events": [{"data": {}}"#, true),
        (r#"{"events": [{"data": {"x": 1e999}}]}"#, true),
        (r#"{"events": []}"#, false),
        (r#"{"events": {}}"#, false),
        (r#"{"event": [{"data": {}}]}"#, false),
        (r#"[]"#, false),
    ] {
        let e = batch_err(body);
        assert_eq!(e.index, None, "{body}");
        assert_eq!(
            matches!(e.error, WriteError::Syntax(_)),
            syntax,
            "{body}: {e:?}"
        );
    }
    let many = vec![r#"{"data": {}}"#; MAX_BATCH_EVENTS + 1].join(",");
    let e = batch_err(&format!(r#"{{"events": [{many}]}}"#));
    assert!(matches!(
        e.error,
        WriteError::Limit {
            code: "too_many_events",
            ..
        }
    ));
    assert_eq!(e.index, None);
}

#[test]
fn batch_event_keys_never_name_a_single_write_key() {
    let key = batch_event_key("order-7", 3);
    assert_eq!(key, "order-7 3");
    assert!(parse_idempotency_key(key.as_bytes()).is_err());
}
