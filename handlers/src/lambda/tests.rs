//! The Lambda HTTP entry: API Gateway REST (v1) and HTTP API (v2) payloads,
//! with and without a stage prefix, through the same router. The store is a
//! temporary embedded one: what is under test is the payload handling.

use super::*;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use sygno_aggregator::Worker;
use sygno_shared::domain::limit::DEFAULT_MAX_FIELDS;
use sygno_shared::store::embedded::EmbeddedStore;
use sygno_shared::store::{AggregateStore, ChangeFeed};

const V2_WRITE: &str = include_str!("fixtures/apigw_v2_write_raw.json");
const V2_EXPOSE_DEFAULT_STAGE: &str =
    include_str!("fixtures/apigw_v2_expose_default_stage_base64.json");
const V1_EXPOSE: &str = include_str!("fixtures/apigw_v1_expose.json");

struct Harness {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    service: LambdaService,
    write_key: String,
    read_key: String,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let (write_key, read_key) = (
        format!("w-{}", std::process::id()),
        format!("r-{}", std::process::id()),
    );
    let keys = ApiKeys::parse(&format!("write={write_key},read={read_key}")).expect("keys");
    let service = service(AppState::on_store(keys, store.clone(), None));
    Harness {
        _dir: dir,
        store,
        service,
        write_key,
        read_key,
    }
}

async fn invoke(h: &Harness, fixture: &str, key: &str) -> (StatusCode, Value) {
    let event = fixture.replace("{{KEY}}", key);
    let request = lambda_http::request::from_str(&event).expect("a valid API Gateway payload");
    let response = h
        .service
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    crate::test_support::json_response(response).await
}

async fn aggregate(h: &Harness) {
    let feed: Arc<dyn ChangeFeed> = Arc::new(h.store.clone());
    let aggregates: Arc<dyn AggregateStore> = Arc::new(h.store.clone());
    let now = chrono::Utc::now().timestamp_millis();
    let mut worker = Worker::start(feed, aggregates, DEFAULT_MAX_FIELDS, now)
        .await
        .expect("worker");
    worker.step(now).await.expect("step");
}

#[tokio::test]
async fn v2_with_a_stage_prefix_writes_and_v1_with_a_stage_reads() {
    let h = harness();
    let (status, body) = invoke(&h, V2_WRITE, &h.write_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(body["data"]["duplicate"], false);
    // The fixture carries an Idempotency-Key: a redelivery appends nothing.
    let (_, again) = invoke(&h, V2_WRITE, &h.write_key).await;
    assert_eq!(again["data"]["duplicate"], true);
    assert_eq!(again["data"]["event_id"], body["data"]["event_id"]);
    assert_eq!(h.store.head().await.expect("head"), 1);

    aggregate(&h).await;
    let (status, latest) = invoke(&h, V1_EXPOSE, &h.read_key).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest["data"]["event_id"], body["data"]["event_id"]);
    assert_eq!(latest["data"]["name"], "_ws_source_meteo");
}

#[tokio::test]
async fn v2_default_stage_with_a_base64_body_reaches_the_legacy_route() {
    let h = harness();
    invoke(&h, V2_WRITE, &h.write_key).await;
    aggregate(&h).await;
    let (status, body) = invoke(&h, V2_EXPOSE_DEFAULT_STAGE, &h.read_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["type"], "24h_average");
    assert_eq!(
        body["data"]["fields"]["external_temperature_c"],
        json!({"count": 1, "value": 9.1387})
    );
}

#[tokio::test]
async fn lambda_requests_get_the_contract_errors() {
    let h = harness();
    let (status, body) = invoke(&h, V2_WRITE, "not-a-key").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["data"]["error"], "unauthorized");
    let (status, body) = invoke(&h, V1_EXPOSE, &h.write_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["data"]["error"], "forbidden");
    let (status, body) = invoke(&h, V1_EXPOSE, &h.read_key).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "routed: no event yet, not an unknown route"
    );
    assert_eq!(body["description"], "no event has been written yet");
    let unknown = V1_EXPOSE.replace("/source/expose", "/source/nothing");
    let (status, body) = invoke(&h, &unknown, &h.read_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["description"], "no route for POST /source/nothing");
}

#[test]
fn only_the_named_stage_is_stripped() {
    let with = |path: &str, stage: Option<&str>| {
        let mut event: Value = serde_json::from_str(V2_WRITE).expect("json");
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        event["requestContext"]["stage"] = stage.map_or(Value::Null, |s| json!(s));
        let request = lambda_http::request::from_str(&event.to_string()).expect("payload");
        strip_stage(request).uri().path().to_owned()
    };
    assert_eq!(with("/prod/source/expose", Some("prod")), "/source/expose");
    assert_eq!(
        with("/production/source/expose", Some("prod")),
        "/production/source/expose",
        "a path merely starting with the stage's letters keeps them (lambda_http adds /prod; only that goes)"
    );
    assert_eq!(with("/source/expose", Some("$default")), "/source/expose");
}

#[test]
fn configuration_errors_are_clear_and_keep_secrets() {
    let config_with = |table: Option<&str>, keys: Option<&str>, parameter: Option<&str>| {
        let (table, keys) = (table.map(str::to_owned), keys.map(str::to_owned));
        let parameter = parameter.map(str::to_owned);
        LambdaConfig::from_vars(move |name| match name {
            "SYGNO_TABLE" => table.clone(),
            "SYGNO_API_KEYS" => keys.clone(),
            "SYGNO_API_KEYS_PARAMETER" => parameter.clone(),
            _ => None,
        })
    };
    let config = |table: Option<&str>, keys: Option<&str>| config_with(table, keys, None);
    assert!(matches!(
        config(None, Some("write=k")),
        Err(ConfigError::NoTable)
    ));
    assert!(matches!(
        config(Some(""), Some("write=k")),
        Err(ConfigError::NoTable)
    ));
    assert!(matches!(config(Some("t"), None), Err(ConfigError::NoKeys)));
    assert!(matches!(
        config(Some("t"), Some(" , ")),
        Err(ConfigError::NoKeys)
    ));
    let bad = config(Some("t"), Some("write=s3cret,wrte=other-s3cret")).expect_err("malformed");
    let text = bad.to_string();
    assert!(
        text.contains("entry 2") && !text.contains("s3cret"),
        "{text}"
    );
    let ok = config(Some("sygno-prod"), Some("write=k")).expect("valid");
    assert_eq!(ok.table, "sygno-prod");
    assert!(matches!(&ok.keys, KeySource::Inline(keys) if keys.authenticate(b"k").is_some()));
    let from_ssm = config_with(Some("t"), None, Some("/sygno/prod/api-keys")).expect("valid");
    assert!(matches!(&from_ssm.keys, KeySource::Parameter(name) if name == "/sygno/prod/api-keys"));
    assert!(matches!(
        config_with(Some("t"), Some("write=k"), Some("/p")),
        Err(ConfigError::BothKeySources)
    ));
}

/// Keys from an SSM SecureString on the test server (moto serves SSM too).
#[tokio::test]
async fn keys_come_from_an_ssm_secure_string() {
    let Some(endpoint) = sygno_shared::store::dynamo::testing::endpoint() else {
        return;
    };
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(sygno_shared::store::dynamo::testing::credentials())
        .build();
    let ssm = aws_sdk_ssm::Client::from_conf(config);
    let name = format!("/sygno-test/{}/api-keys", std::process::id());
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"the-write-key"));
    ssm.put_parameter()
        .name(&name)
        .value(format!("write=sha256:{digest},read=s3cret-read"))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
    let keys = keys_from_parameter(&ssm, &name).await.expect("keys");
    assert!(keys.authenticate(b"the-write-key").is_some());
    assert!(keys.authenticate(b"s3cret-read").is_some());
    assert!(keys.authenticate(b"other").is_none());

    let missing = keys_from_parameter(&ssm, "/sygno-test/none")
        .await
        .expect_err("missing");
    assert!(
        missing.to_string().contains("/sygno-test/none"),
        "{missing}"
    );
    ssm.put_parameter()
        .name(&name)
        .value("wrte=s3cret-typo")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
    let bad = keys_from_parameter(&ssm, &name)
        .await
        .expect_err("malformed");
    assert!(!format!("{bad:?}").contains("s3cret"), "{bad:?}");
}

/// `write_batch` through the write function: the same payload shapes, a
/// batch body, a repeat under the same Idempotency-Key.
#[tokio::test]
async fn a_batch_through_api_gateway_is_stored_once() {
    let h = harness();
    let mut event: Value = serde_json::from_str(V2_WRITE).expect("fixture");
    for path in ["/rawPath", "/requestContext/http/path"] {
        *event.pointer_mut(path).expect(path) = json!("/prod/source/write_batch");
    }
    let batch = json!({"events": [{"data": {"t": 1}}, {"data": {"t": 2}, "name": "gh-2"}]});
    event["body"] = json!(batch.to_string());
    let event = event.to_string();
    let (status, body) = invoke(&h, &event, &h.write_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["events"].as_array().map(Vec::len), Some(2));
    let (_, again) = invoke(&h, &event, &h.write_key).await;
    assert_eq!(again["data"]["events"][1]["duplicate"], true, "{again}");
    assert_eq!(
        again["data"]["events"][1]["event_id"],
        body["data"]["events"][1]["event_id"]
    );
    assert_eq!(h.store.head().await.expect("head"), 2);
}

/// `event` (an API Gateway payload) sent to `path` with `body`.
fn retarget(event: &str, path: &str, body: &Value) -> String {
    let mut event: Value = serde_json::from_str(event).expect("fixture");
    for pointer in ["/rawPath", "/requestContext/http/path", "/path"] {
        if let Some(p) = event.pointer_mut(pointer) {
            *p = json!(path);
        }
    }
    if let Some(p) = event.pointer_mut("/pathParameters/proxy") {
        *p = json!(path.trim_start_matches('/'));
    }
    event["body"] = json!(body.to_string());
    event.to_string()
}

/// The read function serves `series` (REST, v1) and the Grafana query
/// (HTTP API, v2), from the stored summaries.
#[tokio::test]
async fn series_and_grafana_through_api_gateway() {
    let h = harness();
    invoke(&h, V2_WRITE, &h.write_key).await;
    aggregate(&h).await;
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::days(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let series = json!({"interval": "1h", "from": from, "to": to, "name": "_ws_source_meteo"});
    let (status, body) = invoke(
        &h,
        &retarget(V1_EXPOSE, "/source/series", &series),
        &h.read_key,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bucket = &body["data"]["buckets"][0];
    assert_eq!(bucket["count"], 1);
    assert_eq!(bucket["fields"]["external_temperature_c"]["mean"], 9.1387);

    let query = json!({
        "range": {"from": from, "to": to}, "maxDataPoints": 50,
        "targets": [{"target": "[\"_ws_source_meteo\",\"external_temperature_c\"]", "refId": "A"}]
    });
    let v2 = retarget(V2_EXPOSE_DEFAULT_STAGE, "/grafana/query", &query)
        .replace("\"isBase64Encoded\":true", "\"isBase64Encoded\":false");
    let (status, answer) = invoke(&h, &v2, &h.read_key).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer[0]["datapoints"][0][0], 9.1387, "{answer}");
}
