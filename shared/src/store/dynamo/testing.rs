//! Test support for code that runs on the DynamoDB store: a client for the
//! DynamoDB wire-protocol server the test script starts (moto's server
//! mode), named by `SYGNO_TEST_DYNAMODB_ENDPOINT`, fresh tables, and a log
//! of the requests sent. In CI a missing server fails the test; elsewhere
//! the test says it was skipped.
//!
//! Compiled into the library (not only under `cfg(test)`) so the
//! aggregator's and the handlers' tests use the same helpers.

use super::DynamoStore;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
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

/// Records the operation of every request sent (retries included).
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<String>>>);

impl RequestLog {
    /// The operations sent since the last call.
    pub fn take(&self) -> Vec<String> {
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
