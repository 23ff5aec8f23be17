//! The stream aggregator's items: its state, the minute and hour summaries,
//! and the rows, all written by one `TransactWriteItems` per commit.
//!
//! # The state item (`pk` `agg`, `sk` `state`)
//! - `version` (N): bumped by every commit, which is conditional on the
//!   version it read. Every aggregate write goes through it, so concurrent
//!   invocations (one per stream shard) serialize: a loser reads again and
//!   retries. Rows are therefore always rendered from one consistent state.
//! - `ckpt` (M of S): per log shard (`log#NN`), the stream sequence number
//!   of the last record applied. The stream delivers one partition key's
//!   records in order, so a record at or below its shard's checkpoint has
//!   been applied: redelivered batches, bisected batches and retries after
//!   a partial failure all apply each event exactly once.
//! - `generation` (N), `floor` (N, ms): which summaries are live, and the
//!   `received_at` at or below which events are already in them (set by a
//!   rebuild, 0 otherwise). `allocated` (N): the highest generation handed
//!   out, so an abandoned rebuild's half-written generation is never reused.
//! - `next_gen`, `next_cut`, `next_started`, `next_latest`: a rebuild in
//!   progress (see `sygno_aggregator::stream::rebuild`).
//! - `latest` (S, JSON): the latest event of the live generation.
//! - `rendered_end` (N, ms): where the windows of the stored rows end.
//!
//! # Summaries
//! `pk` `m#<generation>` (minute buckets) or `h#<generation>` (hour
//! blocks), `sk` the index as 20 digits (order-preserving for negative
//! indices), `sum` the summary in [`crate::store::codec`] form. A minute's
//! item holds one summary per field, a few KB at most.

use super::{get_n, get_s, s, unavailable, DynamoStore, Item, PK, SK};
use crate::domain::aggregates::Latest;
use crate::domain::expose::ExposeKind;
use crate::domain::series::Summary;
use crate::domain::tiers::{Tier, TierKey};
use crate::domain::time::Millis;
use crate::store::codec::{decode_summary, encode_summary};
use crate::store::{Result, StoreError};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, Put, TransactWriteItem, WriteRequest,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

const STATE_PK: &str = "agg";
const STATE_SK: &str = "state";
const ROWS_KEY: &str = super::ROWS_KEY;
const SUMMARY: &str = "sum";

/// Summaries one commit may write: DynamoDB takes 100 items per
/// transaction, two of which are the state and the rows.
pub const MAX_SUMMARIES_PER_COMMIT: usize = 98;

/// The latest event by `event_time` (ties: the greater `event_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatestEvent {
    pub event_time: Millis,
    pub event_id: String,
    pub name: String,
    pub data: String,
}

impl LatestEvent {
    /// True when `other` is later than `self`.
    pub fn is_before(&self, other: &LatestEvent) -> bool {
        (self.event_time, &self.event_id) < (other.event_time, &other.event_id)
    }

    /// The later of `current` and `candidate`.
    pub fn later(current: &mut Option<LatestEvent>, candidate: &LatestEvent) -> bool {
        if current.as_ref().is_none_or(|c| c.is_before(candidate)) {
            *current = Some(candidate.clone());
            return true;
        }
        false
    }

    /// As the views render it (no log sequence number here).
    pub fn to_latest(&self) -> Latest {
        Latest {
            seq: 0,
            event_time: self.event_time,
            event_id: self.event_id.clone(),
            name: self.name.clone(),
            data: self.data.clone(),
        }
    }
}

/// A rebuild in progress: it fills `generation` with the events received
/// at or before `cut`, while the aggregator adds those received after.
#[derive(Debug, Clone, PartialEq)]
pub struct NextGeneration {
    pub generation: u64,
    pub cut: Millis,
    pub started_at: Millis,
    pub latest: Option<LatestEvent>,
}

/// The aggregator's state item (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggState {
    pub version: u64,
    pub generation: u64,
    pub floor: Millis,
    pub allocated: u64,
    pub next: Option<NextGeneration>,
    pub checkpoints: BTreeMap<String, String>,
    pub latest: Option<LatestEvent>,
    pub rendered_end: Millis,
}

/// One commit: the new state (its `version` one above what was read),
/// summaries to replace, and optionally the rendered rows.
#[derive(Debug)]
pub struct StateCommit<'a> {
    pub state: &'a AggState,
    pub summaries: &'a [(TierKey, Summary)],
    pub rows: Option<&'a [(ExposeKind, String)]>,
}

/// An event item of the log, as the stream and a rebuild read it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventItem {
    /// The log shard (`log#NN`).
    pub pk: String,
    pub event_id: String,
    pub event_time: Millis,
    pub received_at: Millis,
    pub name: String,
    pub data: String,
}

impl EventItem {
    pub fn latest(&self) -> LatestEvent {
        LatestEvent {
            event_time: self.event_time,
            event_id: self.event_id.clone(),
            name: self.name.clone(),
            data: self.data.clone(),
        }
    }
}

/// True for a log item's partition key (the stream also carries the
/// aggregator's own writes, which it ignores).
pub fn is_log_partition(pk: &str) -> bool {
    pk.starts_with("log#")
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn tier_pk(generation: u64, tier: Tier) -> String {
    match tier {
        Tier::Minute => format!("m#{generation}"),
        Tier::Hour => format!("h#{generation}"),
    }
}

/// Order-preserving text for an index, also for negative ones.
fn index_sk(index: i64) -> String {
    format!("{:020}", (index as u64) ^ (1 << 63))
}

fn index_of(sk: &str) -> Result<i64> {
    sk.parse::<u64>()
        .map(|v| (v ^ (1 << 63)) as i64)
        .map_err(|_| StoreError::Corrupt(format!("bad summary key {sk}")))
}

fn get_u64(item: &Item, name: &str) -> Result<u64> {
    u64::try_from(get_n(item, name)?).map_err(|_| StoreError::Corrupt(format!("negative {name}")))
}

fn opt_n(item: &Item, name: &str) -> Result<Option<i64>> {
    item.contains_key(name)
        .then(|| get_n(item, name))
        .transpose()
}

fn latest_attr(item: &Item, name: &str) -> Result<Option<LatestEvent>> {
    item.contains_key(name)
        .then(|| {
            serde_json::from_str(get_s(item, name)?)
                .map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
        })
        .transpose()
}

fn summary_of(item: &Item) -> Result<Summary> {
    decode_summary(get_s(item, SUMMARY)?).map_err(|e| StoreError::Corrupt(format!("summary: {e}")))
}

fn decode_state(item: &Item) -> Result<AggState> {
    let checkpoints = match item.get("ckpt") {
        Some(AttributeValue::M(map)) => map
            .iter()
            .map(|(k, v)| match v {
                AttributeValue::S(seq) => Ok((k.clone(), seq.clone())),
                _ => Err(StoreError::Corrupt("checkpoint is not a string".into())),
            })
            .collect::<Result<_>>()?,
        _ => BTreeMap::new(),
    };
    let next = match opt_n(item, "next_gen")? {
        Some(generation) => Some(NextGeneration {
            generation: u64::try_from(generation)
                .map_err(|_| StoreError::Corrupt("negative next_gen".into()))?,
            cut: get_n(item, "next_cut")?,
            started_at: get_n(item, "next_started")?,
            latest: latest_attr(item, "next_latest")?,
        }),
        None => None,
    };
    Ok(AggState {
        version: get_u64(item, "version")?,
        generation: get_u64(item, "generation")?,
        floor: get_n(item, "floor")?,
        allocated: get_u64(item, "allocated")?,
        next,
        checkpoints,
        latest: latest_attr(item, "latest")?,
        rendered_end: get_n(item, "rendered_end")?,
    })
}

fn encode_state(state: &AggState) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(STATE_PK));
    item.insert(SK.into(), s(STATE_SK));
    item.insert("kind".into(), s("state"));
    item.insert("version".into(), n(state.version));
    item.insert("generation".into(), n(state.generation));
    item.insert("floor".into(), n(state.floor));
    item.insert("allocated".into(), n(state.allocated));
    item.insert("rendered_end".into(), n(state.rendered_end));
    item.insert(
        "ckpt".into(),
        AttributeValue::M(
            state
                .checkpoints
                .iter()
                .map(|(k, v)| (k.clone(), s(v.clone())))
                .collect(),
        ),
    );
    let json = |latest: &LatestEvent| s(serde_json::to_string(latest).unwrap_or_default());
    if let Some(latest) = &state.latest {
        item.insert("latest".into(), json(latest));
    }
    if let Some(next) = &state.next {
        item.insert("next_gen".into(), n(next.generation));
        item.insert("next_cut".into(), n(next.cut));
        item.insert("next_started".into(), n(next.started_at));
        if let Some(latest) = &next.latest {
            item.insert("next_latest".into(), json(latest));
        }
    }
    item
}

impl DynamoStore {
    /// The state item, read consistently; the default before the first commit.
    pub async fn read_state(&self) -> Result<AggState> {
        let got = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key(PK, s(STATE_PK))
            .key(SK, s(STATE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        match got.item {
            Some(item) => decode_state(&item),
            None => Ok(AggState::default()),
        }
    }

    /// The stored summaries among `keys` (consistent reads; missing ones
    /// are left out).
    pub async fn read_summaries(&self, keys: &[TierKey]) -> Result<HashMap<TierKey, Summary>> {
        let mut found = HashMap::with_capacity(keys.len());
        let by_item: HashMap<(String, String), TierKey> = keys
            .iter()
            .map(|k| ((tier_pk(k.generation, k.tier), index_sk(k.index)), *k))
            .collect();
        let mut pending: Vec<&(String, String)> = by_item.keys().collect();
        // BatchGetItem takes 100 keys per request.
        while !pending.is_empty() {
            let chunk: Vec<_> = pending.drain(..pending.len().min(100)).collect();
            let mut request = KeysAndAttributes::builder().consistent_read(true);
            for (pk, sk) in &chunk {
                request = request.keys(HashMap::from([
                    (PK.to_owned(), s(pk.clone())),
                    (SK.to_owned(), s(sk.clone())),
                ]));
            }
            let mut request = Some(request.build().map_err(unavailable)?);
            let mut attempt = 0u32;
            while let Some(keys_and_attributes) = request.take() {
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&*self.table, keys_and_attributes)
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in got
                    .responses
                    .unwrap_or_default()
                    .remove(&*self.table)
                    .unwrap_or_default()
                {
                    let key = (get_s(&item, PK)?.to_owned(), get_s(&item, SK)?.to_owned());
                    if let Some(tier_key) = by_item.get(&key) {
                        found.insert(*tier_key, summary_of(&item)?);
                    }
                }
                request = got
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&*self.table))
                    .filter(|u| !u.keys().is_empty());
                if request.is_some() {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(
                        20 * u64::from(attempt.min(20)),
                    ))
                    .await;
                }
            }
        }
        Ok(found)
    }

    /// The stored summaries of `tier` in `generation` with index in `range`,
    /// in index order (one consistent `Query`, paged).
    pub async fn query_summaries(
        &self,
        generation: u64,
        tier: Tier,
        range: Range<i64>,
    ) -> Result<Vec<(i64, Summary)>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let items = self
            .client
            .query()
            .table_name(&*self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(tier_pk(generation, tier)))
            .expression_attribute_values(":from", s(index_sk(range.start)))
            .expression_attribute_values(":to", s(index_sk(range.end - 1)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(unavailable)?;
        items
            .iter()
            .map(|item| Ok((index_of(get_s(item, SK)?)?, summary_of(item)?)))
            .collect()
    }

    /// Deletes every summary of `generation` (both tiers); returns how many.
    /// For generations no commit can reach any more (a rebuild replaced
    /// them): nothing guards against deleting a live one.
    pub async fn delete_generation(&self, generation: u64) -> Result<usize> {
        let mut deleted = 0;
        for tier in [Tier::Minute, Tier::Hour] {
            let keys = self
                .client
                .query()
                .table_name(&*self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(tier_pk(generation, tier)))
                .projection_expression("pk, sk")
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(unavailable)?;
            for chunk in keys.chunks(25) {
                self.delete_keys(chunk).await?;
                deleted += chunk.len();
            }
        }
        Ok(deleted)
    }

    /// One BatchWriteItem of deletes (at most 25 keys), retrying what the
    /// service leaves unprocessed.
    async fn delete_keys(&self, keys: &[Item]) -> Result<()> {
        let mut requests: Vec<WriteRequest> = keys
            .iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key.clone()))
                    .build()
                    .map_err(unavailable)?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<_>>()?;
        let mut attempt = 0u64;
        while !requests.is_empty() {
            let done = self
                .client
                .batch_write_item()
                .request_items(&*self.table, requests)
                .send()
                .await
                .map_err(unavailable)?;
            requests = done
                .unprocessed_items
                .and_then(|mut u| u.remove(&*self.table))
                .unwrap_or_default();
            if !requests.is_empty() {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt.min(20))).await;
            }
        }
        Ok(())
    }

    /// One page of log shard `shard`'s events, for a rebuild. Pass the
    /// returned cursor back for the next page; `None` means done.
    pub async fn read_log_page(
        &self,
        shard: u8,
        cursor: Option<Item>,
    ) -> Result<(Vec<EventItem>, Option<Item>)> {
        let page = self
            .client
            .query()
            .table_name(&*self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(super::log_partition(shard)))
            .consistent_read(true)
            .set_exclusive_start_key(cursor)
            .send()
            .await
            .map_err(unavailable)?;
        let events = page
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
                    .map_err(|e| StoreError::Corrupt(format!("event item: {e}")))
            })
            .collect::<Result<Vec<EventItem>>>()?;
        Ok((events, page.last_evaluated_key.filter(|k| !k.is_empty())))
    }

    /// Writes `commit` in one transaction, conditional on the stored state
    /// being at `commit.state.version - 1`. [`StoreError::Conflict`] when
    /// another commit came first: read again and retry.
    pub async fn commit_state(&self, commit: StateCommit<'_>) -> Result<()> {
        if commit.summaries.len() > MAX_SUMMARIES_PER_COMMIT {
            return Err(StoreError::Conflict(format!(
                "{} summaries in one commit; at most {MAX_SUMMARIES_PER_COMMIT}",
                commit.summaries.len()
            )));
        }
        let expected = commit.state.version.checked_sub(1).ok_or_else(|| {
            StoreError::Conflict("a commit's state version must be at least 1".into())
        })?;
        let state = {
            let put = Put::builder()
                .table_name(&*self.table)
                .set_item(Some(encode_state(commit.state)));
            let put = if expected == 0 {
                put.condition_expression("attribute_not_exists(pk)")
            } else {
                put.condition_expression("version = :v")
                    .expression_attribute_values(":v", n(expected))
            };
            TransactWriteItem::builder()
                .put(put.build().map_err(unavailable)?)
                .build()
        };
        let mut items = vec![state];
        for (key, summary) in commit.summaries {
            let mut item = Item::new();
            item.insert(PK.into(), s(tier_pk(key.generation, key.tier)));
            item.insert(SK.into(), s(index_sk(key.index)));
            item.insert("kind".into(), s("summary"));
            item.insert(SUMMARY.into(), s(encode_summary(summary)));
            items.push(self.put_item(item)?);
        }
        if let Some(rows) = commit.rows {
            let mut item = Item::new();
            item.insert(PK.into(), s(ROWS_KEY));
            item.insert(SK.into(), s(ROWS_KEY));
            item.insert("kind".into(), s("rows"));
            for (kind, doc) in rows {
                item.insert(kind.as_str().into(), s(doc.clone()));
            }
            items.push(self.put_item(item)?);
        }
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    let reasons: Vec<String> = cancelled
                        .cancellation_reasons()
                        .iter()
                        .filter_map(|r| r.code().map(str::to_owned))
                        .filter(|c| c != "None")
                        .collect();
                    Err(StoreError::Conflict(format!(
                        "aggregate commit cancelled: {}",
                        reasons.join(", ")
                    )))
                }
                other => Err(unavailable(other)),
            },
            Err(e) => Err(unavailable(e)),
        }
    }

    fn put_item(&self, item: Item) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .set_item(Some(item))
            .table_name(&*self.table)
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_like_the_indices() {
        let indices = [i64::MIN, -61, -1, 0, 1, 59, 60, 29_000_000, i64::MAX];
        let keys: Vec<String> = indices.iter().map(|i| index_sk(*i)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for i in indices {
            assert_eq!(index_of(&index_sk(i)).ok(), Some(i));
        }
    }

    #[test]
    fn the_state_item_round_trips() {
        let latest = LatestEvent {
            event_time: 5,
            event_id: "e".into(),
            name: "n".into(),
            data: r#"{"a":1}"#.into(),
        };
        let state = AggState {
            version: 7,
            generation: 2,
            floor: 1_000,
            allocated: 3,
            next: Some(NextGeneration {
                generation: 3,
                cut: 2_000,
                started_at: 1_500,
                latest: Some(latest.clone()),
            }),
            checkpoints: BTreeMap::from([("log#01".into(), "1100000000017454423012".into())]),
            latest: Some(latest),
            rendered_end: 60_000,
        };
        assert_eq!(decode_state(&encode_state(&state)).ok(), Some(state));
        let bare = AggState::default();
        assert_eq!(decode_state(&encode_state(&bare)).ok(), Some(bare));
    }
}
