//! Against a real DynamoDB wire-protocol server (moto's server mode, started
//! by `scripts/test`), named by `SYGNO_TEST_DYNAMODB_ENDPOINT`. In CI a
//! missing server fails the test; elsewhere the test says it was skipped.

use super::*;
use crate::store::contract_tests::{self, new_event};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_dynamodb::error::BoxError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static TABLES: AtomicU64 = AtomicU64::new(0);

/// Records the operation of every request sent (retries included).
#[derive(Debug, Clone, Default)]
struct RequestLog(Arc<Mutex<Vec<String>>>);

impl RequestLog {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Intercept for RequestLog {
    fn name(&self) -> &'static str {
        "RequestLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("?");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(operation);
        Ok(())
    }
}

/// A client for the test server, with credentials made up for the run.
pub(crate) fn test_client() -> Option<Client> {
    test_client_logged(&RequestLog::default())
}

fn test_client_logged(log: &RequestLog) -> Option<Client> {
    let Ok(endpoint) = std::env::var("SYGNO_TEST_DYNAMODB_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "SYGNO_TEST_DYNAMODB_ENDPOINT is not set: run the tests with scripts/test"
        );
        eprintln!("skipped: no DynamoDB test server (run scripts/test)");
        return None;
    };
    let secret = format!("test-secret-{}", std::process::id());
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "sygno-test",
            secret,
            None,
            None,
            "sygno-tests",
        ))
        .interceptor(log.clone())
        .build();
    Some(Client::from_conf(config))
}

/// A store on a fresh table.
async fn store() -> Option<DynamoStore> {
    let client = test_client()?;
    let table = format!(
        "sygno-test-{}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::SeqCst)
    );
    let store = DynamoStore::new(client, &table);
    store.create_table().await.expect("create table");
    Some(store)
}

#[tokio::test]
async fn create_table_is_idempotent_with_stream_and_ttl() {
    let Some(store) = store().await else { return };
    store
        .create_table()
        .await
        .expect("second create is a no-op");
    let table = store
        .client()
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let stream = table.stream_specification().expect("stream");
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewImage));
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .expect("ttl");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE));
}

#[tokio::test]
async fn an_append_is_one_item_stored_as_sent() {
    let Some(store) = store().await else { return };
    let appended = store
        .append(new_event("id-1", "u1", None))
        .await
        .expect("append");
    assert!(!appended.duplicate);
    let item = store
        .client()
        .get_item()
        .table_name(store.table())
        .key(PK, s("ev#id-1"))
        .key(SK, s(EVENT_SK))
        .send()
        .await
        .expect("get")
        .item
        .expect("stored");
    assert_eq!(
        get_s(&item, "data").expect("data"),
        r#"{"x": 1.50, "n": {"y": 2}}"#
    );
    assert_eq!(get_n(&item, "event_time").expect("time"), 1_764_000_000_123);
    assert_eq!(get_s(&item, "user_id").expect("user"), "u1");
}

#[tokio::test]
async fn idempotency_is_a_conditional_write_scoped_per_writer() {
    let Some(store) = store().await else { return };
    contract_tests::idempotency_is_scoped_per_writer(&store).await;
    contract_tests::concurrent_repeats_append_once_per_key(Arc::new(store), 10, 1).await;
}

#[tokio::test]
async fn an_event_id_is_never_overwritten() {
    let Some(store) = store().await else { return };
    store
        .append(new_event("same", "u1", None))
        .await
        .expect("append");
    let mut clash = new_event("same", "u1", None);
    clash.data = r#"{"other": true}"#.into();
    assert!(matches!(
        store.append(clash).await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn rows_read_back_with_one_get() {
    let Some(store) = store().await else { return };
    assert!(store
        .view(ExposeKind::DayAverage)
        .await
        .expect("view")
        .is_none());
    store
        .put_view(ExposeKind::DayAverage, r#"{"type":"24h_average"}"#)
        .await
        .expect("put");
    assert_eq!(
        store
            .view(ExposeKind::DayAverage)
            .await
            .expect("view")
            .as_deref(),
        Some(r#"{"type":"24h_average"}"#)
    );
    assert!(store
        .view(ExposeKind::WeekDevt)
        .await
        .expect("view")
        .is_none());
}

#[tokio::test]
async fn ping_fails_for_a_missing_table() {
    let Some(store) = store().await else { return };
    store.ping().await.expect("ping");
    let missing = DynamoStore::new(store.client().clone(), "no-such-table");
    assert!(matches!(
        missing.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// The request budget of the write and read paths, measured on the wire.
#[tokio::test]
async fn one_request_per_append_and_per_read() {
    let log = RequestLog::default();
    let Some(client) = test_client_logged(&log) else {
        return;
    };
    let store = DynamoStore::new(client, &format!("sygno-count-{}", std::process::id()));
    store.create_table().await.expect("create");
    log.take();
    for i in 0..20 {
        store
            .append(new_event(&format!("e{i}"), "u", None))
            .await
            .expect("append");
    }
    assert_eq!(log.take(), vec!["PutItem"; 20], "one write per event");
    store
        .append(new_event("k1", "u", Some("key")))
        .await
        .expect("append");
    assert_eq!(log.take(), ["PutItem"], "one write per keyed event");
    let duplicate = store
        .append(new_event("k2", "u", Some("key")))
        .await
        .expect("append");
    assert!(duplicate.duplicate);
    let repeat = log.take();
    assert!(
        repeat == ["PutItem"] || repeat == ["PutItem", "GetItem"],
        "a repeat is one failed conditional write (plus a read where the server does not return the item): {repeat:?}"
    );
    store.view(ExposeKind::DayDevt).await.expect("view");
    assert_eq!(log.take(), ["GetItem"], "one read per expose");
}
