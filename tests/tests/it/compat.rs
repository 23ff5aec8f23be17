//! The original clients: climate computers' `rows` tables and `/sygno/*`.

use crate::helpers::{on_every_store, Keys, StoreKind, TestStore};
use serde_json::{json, Value};

async fn a_rows_table_round_trips_unchanged(kind: StoreKind) {
    let Some(store) = TestStore::new(kind).await else {
        return;
    };
    let app = store.spawn(&Keys::random()).await;
    let ts =
        chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).expect("offset"));
    let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    // Sent as text, with its own spacing and number spelling.
    let data = format!(
        r#"{{"name": "_ws_source_meteo",  "range": {{"col1": 1, "row1": 1, "col2": 2, "row2": 22}},
  "rows": [["Variable", "Value"], ["external_temperature_c", 9.1387],
           ["wind_direction_compass", {{"type": "hortimax.synopta.enum", "key": 8789, "value": "Actief"}}],
           ["radiation", 1.50E2]],
  "ts": "{ts}", "pt": 0}}"#
    );
    let response = app
        .client
        .post(format!("{}/sygno/write_raw", app.base))
        .header("x-api-key", &app.keys.write)
        .header("content-type", "application/json")
        .body(format!(r#"{{"data": {data}}}"#))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let written: Value = response.json().await.expect("json");
    let text = crate::helpers::eventually(std::time::Duration::from_secs(5), "latest", || async {
        let text = app.expose_text("latest").await;
        text.contains(written["data"]["event_id"].as_str().unwrap_or("?"))
            .then_some(text)
    })
    .await;
    assert!(
        text.contains(&data),
        "latest must return data byte for byte: {text}"
    );
    let latest: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(latest["data"]["name"], "_ws_source_meteo");
    let expected_time = chrono::DateTime::parse_from_rfc3339(&ts)
        .expect("ts")
        .timestamp_millis();
    assert_eq!(
        crate::helpers::parse_ms(&latest["data"]["event_time"]),
        expected_time,
        "data.ts is the event time"
    );

    // The window rows follow `latest` within the freshness bound (the
    // server renders them at most every 200 ms under load).
    let body =
        crate::helpers::eventually(std::time::Duration::from_secs(5), "the window", || async {
            let (status, body) = app
                .post(
                    "/sygno/expose",
                    &app.keys.read,
                    &json!({"type": "24_average"}),
                    None,
                )
                .await;
            assert_eq!(status, 200);
            (body["data"]["count"] == 1).then_some(body)
        })
        .await;
    let fields = &body["data"]["fields"];
    assert_eq!(
        fields["external_temperature_c"],
        json!({"count": 1, "value": 9.1387})
    );
    assert_eq!(
        fields["wind_direction_compass.key"],
        json!({"count": 1, "value": 8789.0})
    );
    assert_eq!(fields["radiation"], json!({"count": 1, "value": 150.0}));
    assert!(
        fields.get("range.col1").is_none(),
        "only rows are fields of a table"
    );
    app.terminate().await;
}

on_every_store!(a_rows_table_round_trips_unchanged);
