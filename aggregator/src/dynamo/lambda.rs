//! The `sygno-aggregator` Lambda function's handler.
//!
//! Two kinds of invocation: a DynamoDB Streams batch (`Records`), applied
//! with [`crate::dynamo::Aggregator::apply`]; anything else (the EventBridge schedule)
//! rolls the windows forward with [`crate::dynamo::Aggregator::roll`].
//!
//! The answer to a batch is a partial batch response
//! (`ReportBatchItemFailures`): when a commit fails, the first event not
//! committed is reported, so Lambda retries from there (events before it
//! are committed; events a retry delivers again are skipped by their
//! applied marks). A record that can never be decoded is logged
//! without its payload, counted in `sygno_aggregator_poison_records_total`
//! (printed as CloudWatch embedded metric format by the function's
//! binary after each invocation), skipped, and reported as failed so
//! that after the mapping's bounded retries it lands in the on-failure
//! destination instead of vanishing; everything else in the batch is
//! applied meanwhile. An event DynamoDB refuses to aggregate (a commit too
//! large even alone) is passed over and counted in
//! `sygno_aggregator_rejected_events_total`.

use crate::dynamo::records::{decode, Record};
use crate::dynamo::Aggregator;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::Serialize;
use serde_json::Value;
use sygno_shared::domain::time::Millis;

/// What an invocation answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Response {
    /// To a stream batch: the records to retry from
    /// (`ReportBatchItemFailures`).
    Batch(DynamoDbEventResponse),
    /// To the schedule: whether the windows were rolled.
    Rolled { rolled: bool },
}

impl Response {
    /// The sequence numbers reported as failed (none for a roll).
    pub fn failures(&self) -> Vec<&str> {
        match self {
            Response::Batch(batch) => batch
                .batch_item_failures
                .iter()
                .filter_map(|f| f.item_identifier.as_deref())
                .collect(),
            Response::Rolled { .. } => Vec::new(),
        }
    }
}

/// Handles one invocation; never fails (failures are reported per record).
pub async fn handle(aggregator: &Aggregator, payload: &Value, now: Millis) -> Response {
    let Some(records) = payload.get("Records").and_then(Value::as_array) else {
        let rolled = aggregator.roll(now).await.unwrap_or_else(|e| {
            tracing::error!(error.cause_chain = ?e, "rolling the windows failed");
            false
        });
        return Response::Rolled { rolled };
    };
    let mut failures = Vec::new();
    let mut events = Vec::with_capacity(records.len());
    for record in records {
        match decode(record) {
            Record::Event(event) => events.push(event),
            Record::Ignored => {}
            Record::Poison { sequence, reason } => {
                super::records::report_poison(sequence.as_deref(), &reason);
                if let Some(sequence) = sequence {
                    failures.push(sequence);
                }
            }
        }
    }
    match aggregator.apply(&events, now).await {
        Ok(outcome) => {
            tracing::info!(
                records = records.len(),
                applied = outcome.applied,
                skipped = outcome.skipped,
                commits = outcome.commits,
                "stream batch applied"
            );
        }
        Err(e) => {
            tracing::error!(
                error.cause_chain = ?e.error,
                applied = e.done.applied,
                "stream batch failed; reporting the first event not committed"
            );
            failures.push(events[e.first_unapplied].sequence.clone());
        }
    }
    Response::Batch(DynamoDbEventResponse {
        batch_item_failures: failures
            .into_iter()
            .map(|sequence| DynamoDbBatchItemFailure {
                item_identifier: Some(sequence),
            })
            .collect(),
    })
}
