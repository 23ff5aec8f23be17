use super::*;
use expect_test::{expect, Expect};
use serde_json::json;

#[track_caller]
fn check(data: serde_json::Value, expect: Expect) {
    let map = data.as_object().expect("object").clone();
    let actual = match extract(&map) {
        Ok(e) => format!("{:?} table={}", e.fields, e.table.is_some()),
        Err(e) => format!("error: {e}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn numeric_leaves_are_flattened_with_dots() {
    check(
        json!({"a": {"b": 1, "c": {"d": 2.5}}, "e": -3, "s": "x", "t": true, "n": null, "arr": [1, 2]}),
        expect![[r#"{"a.b": 1.0, "a.c.d": 2.5, "e": -3.0} table=false"#]],
    );
}

#[test]
fn empty_object_has_no_fields() {
    check(json!({}), expect![[r#"{} table=false"#]]);
}

#[test]
fn a_table_gives_one_field_per_row() {
    check(
        json!({"name": "_ws_source_meteo", "range": {"col1": 1},
               "rows": [["Variable", "Value"],
                        ["external_temperature_c", 9.1387],
                        ["wind_direction_compass", {"type": "hortimax.synopta.enum", "key": 8789, "value": "Actief"}],
                        ["status", "ok"]],
               "ts": "2021-05-01T12:07:50+02:00", "pt": 0}),
        expect![[
            r#"{"external_temperature_c": 9.1387, "wind_direction_compass.key": 8789.0} table=true"#
        ]],
    );
}

#[test]
fn a_malformed_row_is_named() {
    check(
        json!({"rows": [["Variable", "Value"], ["a", 1], ["b"]]}),
        expect![[r#"error: data.rows[2] must be a [name, value] pair with a string name"#]],
    );
    check(
        json!({"rows": [["Variable", "Value"], [1, 1]]}),
        expect![[r#"error: data.rows[1] must be a [name, value] pair with a string name"#]],
    );
    check(
        json!({"rows": [["Variable", "Value"], "a"]}),
        expect![[r#"error: data.rows[1] must be a [name, value] pair with a string name"#]],
    );
}

#[test]
fn rows_without_the_header_are_an_ordinary_array() {
    check(
        json!({"rows": [["a", 1]], "x": 1}),
        expect![[r#"{"x": 1.0} table=false"#]],
    );
}

#[test]
fn a_repeated_row_keeps_the_last_value() {
    check(
        json!({"rows": [["Variable", "Value"], ["a", 1], ["a", 2]]}),
        expect![[r#"{"a": 2.0} table=true"#]],
    );
}
