//! The aggregator Lambda function: DynamoDB Streams batches of the event
//! log in, partial batch responses out; an EventBridge schedule rolls the
//! windows. Configured by SYGNO_TABLE, SYGNO_MAX_FIELDS (default 2,000
//! fields per aggregate), SYGNO_MINUTE_RETENTION_DAYS (default 35) and
//! SYGNO_HOUR_RETENTION_DAYS (default: as long as the log), and the standard AWS environment
//! (region, credentials, AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use sygno_aggregator::dynamo::lambda::{handle, Response};
use sygno_aggregator::dynamo::Aggregator;
use sygno_shared::domain::limit::parse_max_fields;
use sygno_shared::domain::series::Retention;
use sygno_shared::store::dynamo::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sygno_shared::telemetry::init(true);
    sygno_shared::telemetry::install_cloudwatch();
    let table = std::env::var("SYGNO_TABLE").map_err(|_| "SYGNO_TABLE is not set")?;
    let max_fields = parse_max_fields(std::env::var("SYGNO_MAX_FIELDS").ok().as_deref())?;
    // One client per cold start, shared by every invocation.
    let retention = Retention::from_vars(|name| std::env::var(name).ok())?;
    // Summaries carry a TTL past their retention: DynamoDB deletes them.
    let store = DynamoStore::from_env(&table)
        .await
        .with_retention(retention);
    let aggregator = Aggregator::new(store, max_fields);
    let aggregator = &aggregator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = chrono::Utc::now().timestamp_millis();
        let response = handle(aggregator, &event.payload, now).await;
        // The invocation's metrics, as one embedded metric format line.
        sygno_shared::telemetry::flush_cloudwatch();
        Ok::<Response, Error>(response)
    }))
    .await
}
