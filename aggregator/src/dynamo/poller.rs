//! A DynamoDB Streams poller that does locally what the Lambda event source
//! mapping does on AWS: reads every shard of the table's stream in order
//! and hands each batch to [`crate::dynamo::Aggregator::apply`]; rolls the windows
//! every minute. Used by `sygno serve --store dynamodb`.
//!
//! Shards are read from the trim horizon at start: events already applied
//! are skipped by their applied marks, so a restart never double counts. A
//! child shard is read only once its parent is drained, as Lambda does. A
//! batch that fails is retried (the iterator does not move) after a pause.
//! Shard iterators expire (after 15 minutes on DynamoDB), so one that
//! fails is replaced by a fresh one after the last sequence number read.
//! An idle shard is read four times a second, within the API's five
//! GetRecords calls per second per shard.

use crate::dynamo::records::{decode, from_streams_api, Record};
use crate::dynamo::Aggregator;
use crate::Clock;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use sygno_shared::domain::time::window_end;
use sygno_shared::store::dynamo::DynamoStore;
use sygno_shared::store::{Result, StoreError};
use tokio::sync::watch;

/// Records per GetRecords call (the API's maximum).
const BATCH: i32 = 1000;
/// Pause when every shard was empty: a write is aggregated within this
/// plus a commit (the freshness bound is a second), for a GetRecords per
/// open shard each time.
const IDLE: Duration = Duration::from_millis(100);

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable(e)
}

/// Where the poller is in one shard.
#[derive(Debug, Default)]
struct Cursor {
    /// `None`: get a fresh one after `last_sequence`.
    iterator: Option<String>,
    last_sequence: Option<String>,
}

/// Reads the table's stream.
#[derive(Debug)]
pub struct Poller {
    aggregator: Aggregator,
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    /// Open shards by id.
    cursors: BTreeMap<String, Cursor>,
    /// Shards read to their end.
    drained: BTreeSet<String>,
    /// Where the windows were last rolled to.
    rolled_end: i64,
}

impl Poller {
    /// Finds the table's stream.
    pub async fn new(
        store: DynamoStore,
        streams: aws_sdk_dynamodbstreams::Client,
        max_fields: usize,
    ) -> Result<Self> {
        let stream_arn = store.stream_arn().await?;
        Ok(Poller {
            aggregator: Aggregator::new(store, max_fields),
            streams,
            stream_arn,
            cursors: BTreeMap::new(),
            drained: BTreeSet::new(),
            rolled_end: i64::MIN,
        })
    }

    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// Opens iterators on shards that are ready to read.
    async fn discover(&mut self) -> Result<()> {
        let mut start: Option<String> = None;
        let mut shards = Vec::new();
        loop {
            let described = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            let Some(description) = described.stream_description else {
                break;
            };
            shards.extend(description.shards.unwrap_or_default());
            match description.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        let known: BTreeSet<String> = shards
            .iter()
            .filter_map(|s| s.shard_id().map(str::to_owned))
            .collect();
        for shard in &shards {
            let Some(id) = shard.shard_id() else { continue };
            if self.cursors.contains_key(id) || self.drained.contains(id) {
                continue;
            }
            let parent_pending = shard
                .parent_shard_id()
                .is_some_and(|p| known.contains(p) && !self.drained.contains(p));
            if !parent_pending {
                self.cursors.insert(id.to_owned(), Cursor::default());
            }
        }
        Ok(())
    }

    /// An iterator after the last record read from `shard`, or from its
    /// trim horizon; `None` when the shard is closed and drained.
    async fn fresh_iterator(&self, shard: &str) -> Result<Option<String>> {
        let last = self
            .cursors
            .get(shard)
            .and_then(|c| c.last_sequence.clone());
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard);
        let request = match last {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        Ok(request.send().await.map_err(unavailable)?.shard_iterator)
    }

    /// Reads one batch from every open shard and applies it. Returns the
    /// records read.
    pub async fn poll_once(&mut self, now: i64) -> Result<usize> {
        self.discover().await?;
        let mut read = 0;
        let shards: Vec<String> = self.cursors.keys().cloned().collect();
        for shard in shards {
            let iterator = match self.cursors.get(&shard).and_then(|c| c.iterator.clone()) {
                Some(iterator) => iterator,
                None => match self.fresh_iterator(&shard).await? {
                    Some(iterator) => iterator,
                    None => {
                        self.cursors.remove(&shard);
                        self.drained.insert(shard);
                        continue;
                    }
                },
            };
            let got = match self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(BATCH)
                .send()
                .await
            {
                Ok(got) => got,
                Err(e) => {
                    // Expired or otherwise unusable: start afresh next time.
                    if let Some(cursor) = self.cursors.get_mut(&shard) {
                        cursor.iterator = None;
                    }
                    return Err(unavailable(e));
                }
            };
            let records = got.records.unwrap_or_default();
            read += records.len();
            let events: Vec<_> = records
                .iter()
                .filter_map(|r| match decode(&from_streams_api(r, &self.stream_arn)) {
                    Record::Event(event) => Some(event),
                    Record::Ignored => None,
                    Record::Poison { sequence, reason } => {
                        super::records::report_poison(sequence.as_deref(), &reason);
                        None
                    }
                })
                .collect();
            if !events.is_empty() {
                self.aggregator
                    .apply(&events, now)
                    .await
                    .map_err(|e| e.error)?;
            }
            let last = records
                .last()
                .and_then(|r| r.dynamodb())
                .and_then(|d| d.sequence_number())
                .map(str::to_owned);
            match (got.next_shard_iterator, self.cursors.get_mut(&shard)) {
                (None, _) => {
                    self.cursors.remove(&shard);
                    self.drained.insert(shard);
                }
                (Some(next), Some(cursor)) => {
                    if last.is_some() {
                        cursor.last_sequence = last;
                    }
                    cursor.iterator = Some(next);
                }
                (Some(_), None) => {}
            }
        }
        Ok(read)
    }
}

/// A DynamoDB Streams client from the standard AWS configuration. The
/// endpoint is `AWS_ENDPOINT_URL_DYNAMODB_STREAMS`, else the DynamoDB
/// one (`AWS_ENDPOINT_URL_DYNAMODB`: a local DynamoDB server serves both),
/// else `AWS_ENDPOINT_URL`, else AWS's.
pub async fn streams_client_from_env() -> aws_sdk_dynamodbstreams::Client {
    let config = sygno_shared::store::dynamo::sdk_config().await;
    let mut builder = aws_sdk_dynamodbstreams::config::Builder::from(&config);
    if std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB_STREAMS").is_none() {
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB") {
            builder = builder.endpoint_url(endpoint);
        }
    }
    aws_sdk_dynamodbstreams::Client::from_conf(builder.build())
}

/// Polls until `stop` turns true, rolling the windows when the minute turns.
pub async fn run(mut poller: Poller, clock: Clock, mut stop: watch::Receiver<bool>) {
    tracing::info!(stream = poller.stream_arn(), "stream poller started");
    loop {
        if *stop.borrow() {
            break;
        }
        let now = clock();
        let pause = match poller.poll_once(now).await {
            Ok(0) => {
                let end = window_end(now);
                if end > poller.rolled_end {
                    match poller.aggregator.roll(now).await {
                        Ok(_) => poller.rolled_end = end,
                        Err(e) => {
                            tracing::error!(error.cause_chain = ?e, "rolling the windows failed")
                        }
                    }
                }
                IDLE
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(error.cause_chain = ?e, "stream poll failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("stream poller stopped");
}
