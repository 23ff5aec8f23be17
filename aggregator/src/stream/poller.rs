//! A DynamoDB Streams poller that does locally what the Lambda event source
//! mapping does on AWS: reads every shard of the table's stream in order
//! and hands each batch to [`crate::stream::apply`]; rolls the windows
//! every minute. Used by `sygno serve --store dynamodb`.
//!
//! Shards are read from the trim horizon at start: events already applied
//! are skipped by their checkpoints, so a restart never double counts. A
//! child shard is read only once its parent is drained, as Lambda does. A
//! batch that fails is retried (the iterator does not move) after a pause.

use crate::stream::records::{decode, from_streams_api, Record};
use crate::stream::{apply, roll};
use crate::worker::Clock;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use sygno_shared::domain::time::window_end;
use sygno_shared::store::dynamo::DynamoStore;
use sygno_shared::store::{Result, StoreError};
use tokio::sync::watch;

/// Records per GetRecords call (the API's maximum).
const BATCH: i32 = 1000;
/// Pause when every shard was empty.
const IDLE: Duration = Duration::from_millis(200);

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable(e)
}

/// Reads the table's stream.
#[derive(Debug)]
pub struct Poller {
    store: DynamoStore,
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    /// Open iterators by shard id.
    iterators: BTreeMap<String, String>,
    /// Shards read to their end.
    drained: BTreeSet<String>,
    /// Where the windows were last rolled to.
    rolled_end: i64,
}

impl Poller {
    /// Finds the table's stream.
    pub async fn new(store: DynamoStore, streams: aws_sdk_dynamodbstreams::Client) -> Result<Self> {
        let described = store
            .client()
            .describe_table()
            .table_name(store.table())
            .send()
            .await
            .map_err(unavailable)?;
        let stream_arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| {
                StoreError::Unavailable(
                    format!(
                        "table {} has no stream (sygno table create adds it)",
                        store.table()
                    )
                    .into(),
                )
            })?
            .to_owned();
        Ok(Poller {
            store,
            streams,
            stream_arn,
            iterators: BTreeMap::new(),
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
            if self.iterators.contains_key(id) || self.drained.contains(id) {
                continue;
            }
            let parent_pending = shard
                .parent_shard_id()
                .is_some_and(|p| known.contains(p) && !self.drained.contains(p));
            if parent_pending {
                continue;
            }
            let iterator = self
                .streams
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(unavailable)?
                .shard_iterator;
            match iterator {
                Some(iterator) => {
                    self.iterators.insert(id.to_owned(), iterator);
                }
                None => {
                    self.drained.insert(id.to_owned());
                }
            }
        }
        Ok(())
    }

    /// Reads one batch from every open shard and applies it. Returns the
    /// records read.
    pub async fn poll_once(&mut self, now: i64) -> Result<usize> {
        self.discover().await?;
        let mut read = 0;
        let shards: Vec<(String, String)> = self
            .iterators
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (shard, iterator) in shards {
            let got = self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(BATCH)
                .send()
                .await
                .map_err(unavailable)?;
            let records = got.records.unwrap_or_default();
            read += records.len();
            let events: Vec<_> = records
                .iter()
                .filter_map(|r| match decode(&from_streams_api(r, &self.stream_arn)) {
                    Record::Event(event) => Some(event),
                    Record::Ignored => None,
                    Record::Poison { sequence, reason } => {
                        tracing::warn!(sequence = sequence.as_deref().unwrap_or("?"), %reason, "undecodable stream record skipped");
                        None
                    }
                })
                .collect();
            if !events.is_empty() {
                apply(&self.store, &events, now)
                    .await
                    .map_err(|e| e.error)?;
            }
            match got.next_shard_iterator {
                Some(next) => {
                    self.iterators.insert(shard, next);
                }
                None => {
                    self.iterators.remove(&shard);
                    self.drained.insert(shard);
                }
            }
        }
        Ok(read)
    }
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
                    match roll(&poller.store, now).await {
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
