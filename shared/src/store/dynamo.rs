//! The DynamoDB store: the event log, the aggregates and the rendered rows
//! in one table.
//!
//! # Table
//! Keys `pk` (hash, S) and `sk` (range, S); on-demand billing; a stream of
//! NEW_IMAGE records feeds the aggregator; TTL on `expires_at`.
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | event, no idempotency key | `log#<shard>` | `ev#<event_id>` | `kind` = `event`, `event_id`, `event_time` (N, ms), `received_at` (N, ms), `name`, `user_id`, `data` (S, raw JSON) |
//! | event with an idempotency key | `log#<shard>` | `idem#<user_id>#<sha256(key)>` | the same |
//! | rendered row | `rows` | `v#<scope>#<kind>` | `doc` (S): the `expose` data document; `version` (N), `wend` (N) |
//! | `sources` entry | `rows` | `s#<name>` | `doc` (S); `version` (N), `wend` (N) |
//! | aggregator state | `agg` | `state` | see [`state`] |
//! | scope state | `scope#<generation>` | `<scope>` | see [`state`] |
//! | minute / hour summary | `m#<generation>#<scope>` / `h#<generation>#<scope>` | the index, sortable | `sum` (B, [`crate::store::codec`]) |
//! | applied marks | `ap#<second of receipt>` | `c#<commit>` | see [`state`] |
//! | a source the log took, their count | `src` | `n#<name>`, `count` | see [`sources`] |
//!
//! `<scope>` is `all` (every event) or `s:<name>` (one source).
//!
//! `<shard>` is two decimal digits, a hash of `sk` modulo [`LOG_SHARDS`]:
//! write sharding. DynamoDB serves at most 1,000 writes/s per partition key
//! value, so the log spreads one source over 16 of them (16,000 events/s).
//!
//! An append is one conditional `PutItem` (`attribute_not_exists(pk)`): it
//! never overwrites. With an `Idempotency-Key` the event's own key is
//! derived from the writer and the key, so a repeat fails the condition and
//! reads the first event back: idempotency costs no second write and no
//! separate record, and lasts as long as the log (no TTL needed for it).
//! A condition failure on the item the same request wrote (an SDK retry
//! after a lost response: same id, receipt time and data) is a success.
//! An event item holds at most 64 KiB of `data` plus under 1 KiB of other
//! attributes, far below DynamoDB's 400 KB item limit.

use crate::domain::event::{Appended, NewEvent};
use crate::domain::expose::ExposeKind;
use crate::domain::fold::Scope;
use crate::domain::limit::DEFAULT_MAX_SOURCES;
use crate::domain::series::Retention;
use crate::domain::summary::Summary;
use crate::domain::tiers::Tier;
use crate::store::{EventLog, Result, StoreError, ViewStore};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, StreamSpecification, StreamViewType,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const PK: &str = "pk";
const SK: &str = "sk";
const ROWS_KEY: &str = "rows";
/// How many partition keys the event log is spread over. Fixed for the
/// life of a table: an idempotency key must always map to the same shard.
pub const LOG_SHARDS: u8 = 16;
/// TTL attribute (epoch seconds) for items that expire.
pub const TTL_ATTRIBUTE: &str = "expires_at";

type Item = HashMap<String, AttributeValue>;

/// A Sygno table. Cheap to clone; build one per process (cold start).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    /// Summaries older than kept carry a TTL (`expires_at`): DynamoDB
    /// deletes them.
    retention: Retention,
    /// The most distinct sources the log takes ([`sources`]).
    max_sources: usize,
    /// Sources known to have their item ([`sources`]).
    known_sources: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Every item `query` matches, page after page.
async fn query_all(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<Item>> {
    query
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(unavailable)
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::unavailable(e)
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("item lacks string attribute {name}")))
}

fn get_n(item: &Item, name: &str) -> Result<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("item lacks integer attribute {name}")))
}

/// What identifies one append request's item: an SDK retry of the same
/// request sends the same id, receipt time and data.
#[derive(Debug, PartialEq)]
struct Sent {
    event_id: String,
    received_at: i64,
    data_hash: u64,
    keyed: bool,
}

/// The key (`pk`, `sk`) of an event's item.
fn event_key(event: &NewEvent) -> (String, String) {
    let sk = match &event.idempotency_key {
        Some(key) => format!(
            "idem#{}#{}",
            event.user_id,
            hex::encode(Sha256::digest(key.as_bytes()))
        ),
        None => format!("ev#{}", event.event_id),
    };
    let shard = Sha256::digest(sk.as_bytes())[0] % LOG_SHARDS;
    (log_partition(shard), sk)
}

/// The standard AWS configuration (environment, profile, instance or
/// Lambda role), with timeouts: the SDK sets none by default, and a request
/// that hangs must fail and be retried rather than stall a poller or a
/// rebuild. Every Sygno client is built from it.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(20))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}

/// The partition key of log shard `shard`.
pub fn log_partition(shard: u8) -> String {
    format!("log#{shard:02}")
}

impl DynamoStore {
    /// Summaries written from now on expire as `retention` says.
    pub fn with_retention(self, retention: Retention) -> Self {
        DynamoStore { retention, ..self }
    }

    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// The most distinct sources the log takes (default
    /// [`DEFAULT_MAX_SOURCES`]): a batch naming a new source past it is
    /// refused before anything is put.
    pub fn with_max_sources(self, max_sources: usize) -> Self {
        DynamoStore {
            max_sources,
            ..self
        }
    }

    pub fn new(client: Client, table: &str) -> Self {
        DynamoStore {
            client,
            table: Arc::from(table),
            retention: Retention::default(),
            max_sources: DEFAULT_MAX_SOURCES,
            known_sources: Arc::default(),
        }
    }

    /// A store on `table` with the standard AWS configuration chain
    /// (region, credentials, and `AWS_ENDPOINT_URL_DYNAMODB` /
    /// `AWS_ENDPOINT_URL` for a local DynamoDB server).
    pub async fn from_env(table: &str) -> Self {
        DynamoStore::new(Client::new(&sdk_config().await), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table with its stream and TTL, and waits until it is
    /// active. Idempotent: an existing table is left as it is, and its TTL
    /// is switched on if it was off.
    pub async fn create_table(&self) -> Result<()> {
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(unavailable)
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)
        };
        let stream = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewImage)
            .build()
            .map_err(unavailable)?;
        let created = self
            .client
            .create_table()
            .table_name(&*self.table)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .attribute_definitions(attribute(PK)?)
            .attribute_definitions(attribute(SK)?)
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(stream)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), CreateTableError::ResourceInUseException(_)) => {}
            Err(e) => return Err(unavailable(e)),
        }
        self.wait_until_active().await?;
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&*self.table)
            .send()
            .await
            .map_err(unavailable)?;
        let status = ttl
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status());
        if !matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(unavailable)?;
            self.client
                .update_time_to_live()
                .table_name(&*self.table)
                .time_to_live_specification(spec)
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// The ARN of the table's stream (the aggregator's input).
    pub async fn stream_arn(&self) -> Result<String> {
        let described = self
            .client
            .describe_table()
            .table_name(&*self.table)
            .send()
            .await
            .map_err(unavailable)?;
        described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_owned)
            .ok_or_else(|| {
                StoreError::Unavailable(
                    format!(
                        "table {} has no stream (sygno table create adds it)",
                        self.table
                    )
                    .into(),
                )
            })
    }

    async fn wait_until_active(&self) -> Result<()> {
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&*self.table)
                .send()
                .await
                .map_err(unavailable)?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Unavailable(
            format!("table {} did not become active within a minute", self.table).into(),
        ))
    }

    /// The answer to an append whose condition failed: the item at its
    /// key is either this very event (an earlier attempt of the same
    /// request stored it and its response was lost, so the SDK retried:
    /// a success), or the first event of its Idempotency-Key (a
    /// duplicate), or, without a key, another event of the same id (a
    /// conflict; ids are generated per request, so never expected).
    async fn already_stored(
        &self,
        (pk, sk): (String, String),
        found: Option<Item>,
        sent: &Sent,
    ) -> Result<Appended> {
        let item = match found {
            Some(item) if item.contains_key("event_id") => item,
            _ => self
                .client
                .get_item()
                .table_name(&*self.table)
                .key(PK, s(pk))
                .key(SK, s(sk))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?
                .item
                .ok_or_else(|| {
                    StoreError::Conflict("the first event of this key vanished".into())
                })?,
        };
        let stored = Sent {
            event_id: get_s(&item, "event_id")?.to_owned(),
            received_at: get_n(&item, "received_at")?,
            data_hash: xxhash_rust::xxh3::xxh3_64(get_s(&item, "data")?.as_bytes()),
            keyed: sent.keyed,
        };
        let ours = stored == *sent;
        if !ours && !sent.keyed {
            return Err(StoreError::Conflict(
                "another event with this id already exists".into(),
            ));
        }
        Ok(Appended {
            event_id: stored.event_id,
            event_time: get_n(&item, "event_time")?,
            duplicate: !ours,
        })
    }
}

/// Reads of a series' summaries before giving up on a moving generation
/// or torn summaries.
pub const SERIES_READ_ATTEMPTS: usize = 3;

/// How many of a batch's conditional puts are in flight at once.
pub const BATCH_PUTS_IN_FLIGHT: usize = 32;

#[async_trait]
impl EventLog for DynamoStore {
    /// One conditional `PutItem` per event (DynamoDB's batch write takes
    /// no conditions), [`BATCH_PUTS_IN_FLIGHT`] at a time, answers in
    /// request order. Every put is tried and answered before the batch
    /// is (none is dropped half-sent); any failure fails the batch, and
    /// the events put stay (each is whole).
    async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>> {
        self.admit_sources(events.iter().map(|e| e.name.as_str()).collect())
            .await?;
        let answers: Vec<Result<Appended>> = futures::stream::iter(events)
            .map(|event| self.append_one(event))
            .buffered(BATCH_PUTS_IN_FLIGHT)
            .collect()
            .await;
        answers.into_iter().collect()
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .describe_table()
            .table_name(&*self.table)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl DynamoStore {
    /// One event's conditional put; a condition failure on the item this
    /// same request wrote (an SDK retry after a lost response) is a success.
    async fn append_one(&self, event: NewEvent) -> Result<Appended> {
        let key = event_key(&event);
        let sent = Sent {
            event_id: event.event_id.clone(),
            received_at: event.received_at,
            data_hash: xxhash_rust::xxh3::xxh3_64(event.data.as_bytes()),
            keyed: event.idempotency_key.is_some(),
        };
        let put = self
            .client
            .put_item()
            .table_name(&*self.table)
            .item(PK, s(key.0.clone()))
            .item(SK, s(key.1.clone()))
            .item("kind", s("event"))
            .item("event_id", s(event.event_id.clone()))
            .item("event_time", n(event.event_time))
            .item("received_at", n(event.received_at))
            .item("name", s(event.name))
            .item("user_id", s(event.user_id))
            .item("data", s(event.data))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Appended {
                event_id: event.event_id,
                event_time: event.event_time,
                duplicate: false,
            }),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    self.already_stored(key, failed.item, &sent).await
                }
                other => Err(unavailable(other)),
            },
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl DynamoStore {
    /// [`Self::query_summaries_with`] of an aggregate as reads see it: the
    /// all-events aggregate's parts ([`state::ALL_EVENTS_PARTS`], a
    /// `Query` each, two at a time) merged index by index, part 0 first.
    async fn query_merged_summaries(
        &self,
        generation: u64,
        scope: &Scope,
        tier: Tier,
        range: std::ops::Range<i64>,
        consistent: bool,
    ) -> Result<Vec<(i64, Summary)>> {
        if !scope.is_all_events() {
            return self
                .query_summaries_with(generation, scope, tier, range, consistent)
                .await;
        }
        let parts: Vec<_> = state::all_event_parts()
            .map(|part| {
                let range = range.clone();
                async move {
                    self.query_summaries_with(generation, &part, tier, range, consistent)
                        .await
                }
            })
            .collect();
        // Two at a time, each merged as it comes: memory for two parts'
        // summaries at most besides the merged ones.
        let mut pending = futures::stream::iter(parts).buffered(2);
        let mut merged: std::collections::BTreeMap<i64, Summary> = Default::default();
        while let Some(part) = pending.next().await {
            for (index, summary) in part? {
                merged.entry(index).or_default().merge(&summary);
            }
        }
        Ok(merged.into_iter().collect())
    }
}

#[async_trait]
impl ViewStore for DynamoStore {
    /// A `GetItem` of the state item (the live generation), one paged,
    /// eventually consistent `Query` of the summaries' partition (of each
    /// of the all-events aggregate's parts, two at a time), and the
    /// state again: if a rebuild switched generations meanwhile (and may
    /// be deleting the one read), or a summary was read across two
    /// commits (its chunks' versions differ), the read is made again, at
    /// most [`SERIES_READ_ATTEMPTS`] times, the last strongly consistent.
    async fn summaries(
        &self,
        scope: &Scope,
        tier: Tier,
        range: std::ops::Range<i64>,
    ) -> Result<Vec<(i64, Summary)>> {
        let mut attempt = 1;
        loop {
            let last = attempt == SERIES_READ_ATTEMPTS;
            let generation = self.read_state().await?.generation;
            let read = self
                .query_merged_summaries(generation, scope, tier, range.clone(), last)
                .await;
            let moved = self.read_state().await?.generation != generation;
            match read {
                Ok(summaries) if !moved => return Ok(summaries),
                Err(StoreError::Conflict(_)) | Ok(_) if !last => attempt += 1,
                Ok(_) => {
                    return Err(StoreError::Conflict(
                        "the live generation kept changing during a series read".into(),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One eventually consistent `GetItem` (and a `BatchGetItem` for the
    /// rest of a row too large for one item). The v1 window kinds are
    /// not stored: they are read from the stats row of their window
    /// (`views::derive_window`), which holds their figures.
    async fn view(&self, scope: &Scope, kind: ExposeKind) -> Result<Option<Arc<str>>> {
        let Some(stats) = kind.stats_row() else {
            let doc = self.read_row(&state::view_sk(scope, kind)).await?;
            return Ok(doc.map(Arc::from));
        };
        let Some(doc) = self.read_row(&state::view_sk(scope, stats)).await? else {
            return Ok(None);
        };
        let derived = crate::views::derive_window(kind, &doc).ok_or_else(|| {
            StoreError::Corrupt(format!("a {} row that does not read", stats.as_str()))
        })?;
        Ok(Some(Arc::from(derived)))
    }

    /// One paged `Query` of the `sources` entries.
    async fn sources_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Arc<str>)>> {
        // Sort keys after `s#AFTER` (its successor is `s#AFTER\0`) and
        // before `s$`, the first key past the prefix: DynamoDB, like
        // the embedded store, orders them by their UTF-8 bytes.
        let low = match after {
            Some(after) => format!("{}{after}\0", state::SOURCE_PREFIX),
            None => state::SOURCE_PREFIX.to_owned(),
        };
        let high = "s$";
        debug_assert!(state::SOURCE_PREFIX == "s#");
        let page_size = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let mut pages = self
            .client
            .query()
            .table_name(&*self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", s(ROWS_KEY))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high))
            .projection_expression("sk, doc")
            .limit(page_size)
            .into_paginator()
            .items()
            .send();
        let mut items: Vec<Item> = Vec::with_capacity(limit.min(1_000));
        while items.len() < limit {
            match pages.next().await {
                Some(item) => items.push(item.map_err(unavailable)?),
                None => break,
            }
        }
        items
            .iter()
            .map(|item| {
                let sk = get_s(item, "sk")?;
                let name = sk.strip_prefix(state::SOURCE_PREFIX).unwrap_or(sk);
                Ok((name.to_owned(), Arc::from(get_s(item, "doc")?)))
            })
            .collect()
    }
}

pub mod sources;
pub mod state;
pub mod testing;

#[cfg(test)]
mod tests;
