//! Test support for code that runs on the DynamoDB store: a client for the
//! DynamoDB wire-protocol server the test script starts (moto's server
//! mode), named by `SYGNO_TEST_DYNAMODB_ENDPOINT`, fresh tables, and a log
//! of the requests sent. In CI a missing server fails the test; elsewhere
//! the test says it was skipped.
//!
//! Compiled into the library (not only under `cfg(test)`) so the
//! aggregator's and the handlers' tests use the same helpers.

use super::DynamoStore;
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::Client;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The environment variable naming the test server's endpoint.
pub const ENDPOINT_VAR: &str = "SYGNO_TEST_DYNAMODB_ENDPOINT";

static TABLES: AtomicU64 = AtomicU64::new(0);

/// Records the operation of every request sent (retries included), and
/// estimates the capacity units each consumed.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    operations: Arc<Mutex<Vec<String>>>,
    units: Arc<Mutex<Capacity>>,
    /// Requests sent whose responses are not read yet (sequential use
    /// pairs them exactly; concurrent requests only blur the estimate).
    pending: Arc<Mutex<std::collections::VecDeque<(String, serde_json::Value)>>>,
}

/// Capacity units, estimated from the items' sizes by DynamoDB's rules:
/// a write is 1 unit per KB of item (twice that in a transaction); a read
/// is 1 unit per 4 KB read, half that when eventually consistent. Sizes
/// are the items' JSON on the wire, a slight overestimate (DynamoDB counts
/// names and values, not the JSON around them); moto reports no real figure.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    pub write: f64,
    pub read: f64,
}

impl RequestLog {
    /// The operations sent since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.operations.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The capacity consumed since the last call.
    pub fn take_capacity(&self) -> Capacity {
        std::mem::take(&mut *self.units.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn add(&self, write: f64, read: f64) {
        let mut units = self.units.lock().unwrap_or_else(|p| p.into_inner());
        units.write += write;
        units.read += read;
    }
}

fn write_units(operation: &str, body: &serde_json::Value) -> f64 {
    let kb = |item: &serde_json::Value| (item.to_string().len() as f64 / 1024.0).ceil();
    match operation {
        "PutItem" => kb(&body["Item"]),
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .map(|items| items.iter().map(|i| 2.0 * kb(&i["Put"]["Item"])).sum())
            .unwrap_or_default(),
        _ => 0.0,
    }
}

fn read_units(operation: &str, request: &serde_json::Value, response_len: usize) -> f64 {
    let consistent = request["ConsistentRead"] == true
        || request["RequestItems"]
            .as_object()
            .is_some_and(|t| t.values().any(|k| k["ConsistentRead"] == true));
    let factor = if consistent { 1.0 } else { 0.5 };
    match operation {
        "GetItem" | "Query" | "BatchGetItem" | "Scan" => {
            factor * (response_len.max(1) as f64 / 4096.0).ceil()
        }
        _ => 0.0,
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
        let body: serde_json::Value = context
            .request()
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        self.add(write_units(&operation, &body), 0.0);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((operation.clone(), body));
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(operation);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let sent = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if let Some((operation, body)) = sent {
            let len = context.response().body().bytes().map_or(0, <[u8]>::len);
            self.add(0.0, read_units(&operation, &body, len));
        }
        Ok(())
    }
}

/// The test server's endpoint; `None` (after saying the test is skipped)
/// when there is none outside CI.
pub fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) => Some(endpoint),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{ENDPOINT_VAR} is not set: run the tests with scripts/test"
            );
            eprintln!("skipped: no DynamoDB test server (run scripts/test)");
            None
        }
    }
}

/// Credentials made up for the run (the test server accepts any).
pub fn credentials() -> Credentials {
    let secret = format!("test-secret-{}", std::process::id());
    Credentials::new("sygno-test", secret, None, None, "sygno-tests")
}

/// A client for the test server whose requests are recorded in `log`.
pub fn client(log: &RequestLog) -> Option<Client> {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint()?)
        .credentials_provider(credentials())
        .interceptor(log.clone())
        .build();
    Some(Client::from_conf(config))
}

/// A name no other test of this run uses.
pub fn table_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::SeqCst)
    )
}

/// A store on a fresh table, and the log of its requests.
pub async fn fresh_store(prefix: &str) -> Option<(DynamoStore, RequestLog)> {
    let log = RequestLog::default();
    let store = DynamoStore::new(client(&log)?, &table_name(prefix));
    store.create_table().await.expect("create the test table");
    log.take();
    Some((store, log))
}
