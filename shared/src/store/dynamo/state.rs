//! The stream aggregator's items: its state, each aggregate's scope state
//! and minute and hour summaries (written by one `TransactWriteItems` per
//! commit), and the rendered rows (written after it).
//!
//! # The state item (`pk` `agg`, `sk` `state`)
//! Which generation is live and what a rebuild is doing; stream commits
//! read it but never write it, so they do not contend on it.
//! - `version` (N): bumped by every write of the state item (a rebuild's
//!   steps, the minute's roll), each conditional on the version it read.
//! - `generation` (N), `floor` (N, ms): which summaries are live, and the
//!   `received_at` at or below which events are already in them (set by a
//!   rebuild, 0 otherwise). `allocated` (N): the highest generation handed
//!   out, so an abandoned rebuild's half-written generation is never reused.
//! - `next_gen`, `next_cut`, `next_started`, `next_alive`: a rebuild in
//!   progress and its last sign of life (see
//!   `sygno_aggregator::dynamo::rebuild`).
//! - `rendered_end` (N, ms): where the windows of every aggregate's rows
//!   were last rendered (by a roll, which renders them all).
//!
//! # Applied marks (`pk` `ap#<second>`, `sk` `c#<commit>`)
//! `marks` (B): 64-bit marks ([`applied_mark`]) of the events one commit
//! applied that were received in that second, written in that commit's
//! transaction under a key of its own (so commits never contend on marks,
//! and each event's mark is written once); `expires_at` (TTL) 2 days on.
//! A commit reads every mark of its events' seconds (a `Query` a second).
//! Every scope item a commit writes names its marks items (`lm`); a commit
//! that reads a scope item also reads the marks items it names and, if
//! one is missing (a read may see part of a transaction), reads again.
//! An event whose mark is stored has been applied, whatever order,
//! batching or concurrency its stream record arrives in (see
//! ARCHITECTURE.md, "The stream aggregator"). (Tables written by earlier
//! versions also hold one set per second, `sk` `ids`: read the same way.)
//!
//! # Aggregates
//! An aggregate is all events (`all`, and its parts `all~NN`:
//! [`ALL_EVENTS_PARTS`]) or one source's (`s:<name>`): [`scope_sk`]. Per
//! generation `g`:
//! - scope state: `pk` `scope#<g>`, `sk` the scope; `state` (S,
//!   [`crate::store::codec`]), `limit` (B, the field limit), `latest` (S,
//!   the rendered `latest` row, at most the event's 64 KiB plus its frame),
//!   `version` (N), `lm` (S: the last commit's marks items).
//! - summaries: `pk` `m#<g>#<scope>` (minute buckets) or `h#<g>#<scope>`
//!   (hour blocks), `sk` the index as 20 digits (order-preserving for
//!   negative indices), `sum` the summary in [`crate::store::codec`]'s
//!   binary form (B; a JSON string, S, from earlier versions still reads),
//!   `version` (N, on every chunk).
//!
//! Every scope item and summary a commit replaces is conditional on the
//! `version` it read (absent: on there being none) and written one above
//! it ([`Versioned`]), so two commits that touch one item serialize and
//! commits of different aggregates do not meet at all.
//!
//! # Rows (`pk` `rows`)
//! `sk` `v#<scope>#<kind>` holds one `expose` document in `doc`; `sk`
//! `s#<name>` one `sources` entry. Each carries the [`row_version`] of
//! the scope item it was rendered from and its windows' end (`wend`), and
//! is written after the commit, conditional on the stored row being older
//! (a lower version, or the same one with an earlier end), so a slower
//! writer never puts older rows over newer ones. A `latest` row carries
//! its event's order (`lkey`) instead and keeps the latest event's.

use super::{get_n, get_s, query_all, s, unavailable, DynamoStore, Item, PK, SK};
use crate::domain::expose::ExposeKind;
use crate::domain::fold::{LatestKey, Scope, ScopeState, SummaryKey};
use crate::domain::summary::Summary;
use crate::domain::tiers::Tier;
use crate::domain::time::Millis;
use crate::store::codec::{self, decode_summary, encode_summary};
use crate::store::{Result, StoreError};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, Put, TransactWriteItem, WriteRequest,
};
use futures::StreamExt;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

const STATE_PK: &str = "agg";
const STATE_SK: &str = "state";
const ROWS_KEY: &str = super::ROWS_KEY;
const SUMMARY: &str = "sum";

/// Items one transaction may hold (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// A rebuild in progress: it fills `generation` with the events received
/// at or before `cut`, while the aggregator adds those received after.
#[derive(Debug, Clone, PartialEq)]
pub struct NextGeneration {
    pub generation: u64,
    pub cut: Millis,
    pub started_at: Millis,
    /// The rebuild's last sign of life (it renews this while it runs).
    pub alive_at: Millis,
}

/// The aggregator's state item (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggState {
    pub version: u64,
    pub generation: u64,
    pub floor: Millis,
    pub allocated: u64,
    pub next: Option<NextGeneration>,
    pub rendered_end: Millis,
}

/// How long applied marks are kept (TTL): the stream keeps records 24
/// hours, and a redelivery or a poller restarting from the trim horizon
/// reads nothing older; twice that for margin.
pub const APPLIED_TTL_SECONDS: i64 = 2 * 24 * 3600;

/// The second of receipt an event's applied mark is kept under.
pub fn received_second(received_at: Millis) -> i64 {
    received_at.div_euclid(1000)
}

/// The mark an applied event leaves in its second's set (see the module
/// docs): 64 bits of its id's hash.
pub fn applied_mark(event_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(event_id.as_bytes())
}

/// Applied marks by second of receipt.
pub type AppliedSets = BTreeMap<i64, BTreeSet<u64>>;

/// The marks one commit adds, by second of receipt: each second's marks
/// are one item of the commit's own (see the module docs).
pub type NewMarks = BTreeMap<i64, Vec<u64>>;

/// A stored item's content and the `version` it was read at (0: there was
/// none). A commit writes it at `version + 1`, conditional on `version`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// An aggregate's state item: the scope state and its `latest` row, the
/// version it was read at (0: not stored yet), and the keys of the marks
/// items the commit that wrote it stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeItem {
    pub state: ScopeState,
    /// The rendered `latest` row.
    pub latest: Option<String>,
    pub version: u64,
    /// The marks items of the last commit that applied events here: a
    /// commit reading this item checks it also reads them (see the module
    /// docs).
    pub last_marks: Vec<MarksKey>,
}

/// A marks item's key: the second of receipt and the commit's id.
pub type MarksKey = (i64, String);

/// When the commit that wrote a marks item (or a scope item naming it)
/// was made, by its clock: commit ids are UUIDv7, time first.
pub fn commit_time(key: &MarksKey) -> Option<Millis> {
    let (seconds, nanos) = uuid::Uuid::try_parse(&key.1)
        .ok()?
        .get_timestamp()?
        .to_unix();
    Millis::try_from(seconds)
        .ok()?
        .checked_mul(1000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

/// How long after it was made a commit's transaction may still be landing
/// (a request times out after 20 s; the rest is a margin for clock skew
/// between machines): older commits are wholly visible to every read.
pub const COMMIT_IN_FLIGHT_MS: Millis = 5 * 60 * 1000;

/// True if the commit that wrote `item` may still be landing at `now`: a
/// read may see part of it (see the module docs).
pub fn recently_committed(item: &ScopeItem, now: Millis) -> bool {
    item.last_marks
        .iter()
        .any(|key| commit_time(key).is_none_or(|t| t > now - COMMIT_IN_FLIGHT_MS))
}

/// Marks read: every mark by second, and the marks items they came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub marks: AppliedSets,
    pub items: BTreeSet<MarksKey>,
}

/// The version rows rendered from an aggregate's scope item at `version`
/// in `generation` carry: newer generations rank above older ones (a
/// rebuild's rows replace the old), and every one above the state
/// versions earlier releases stamped on rows (below 2^40).
pub fn row_version(generation: u64, version: u64) -> u64 {
    (generation.saturating_add(1) << 40) | (version & ((1 << 40) - 1))
}

/// A page of the log (see [`DynamoStore::read_log_page`]).
#[derive(Debug, Default)]
pub struct LogPage {
    pub events: Vec<EventItem>,
    /// Items skipped: sort key, and why.
    pub skipped: Vec<(String, &'static str)>,
    /// Where the next page starts; `None`: the shard is done.
    pub cursor: Option<Item>,
}

/// One commit of the stream or a rebuild: one transaction of the
/// applied marks, scope items and summaries it replaces, each written one
/// version above the one read and conditional on it.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    pub marks: NewMarks,
    pub scopes: &'a [((u64, Scope), ScopeItem)],
    pub summaries: &'a [((u64, SummaryKey), Versioned<Summary>)],
}

/// Rendered rows: `expose` documents and `sources` entries of windows
/// ending at `end`, each aggregate's at its [`row_version`] in `versions`.
#[derive(Debug, Default)]
pub struct RowsWrite {
    pub end: Millis,
    pub versions: BTreeMap<Scope, u64>,
    pub views: Vec<(Scope, ExposeKind, String)>,
    pub sources: Vec<(String, String)>,
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
    /// Why this item cannot be aggregated, if it cannot: its `data` is not
    /// a JSON object (the write path stores nothing else, so the item was
    /// written by something else or damaged).
    pub fn defect(&self) -> Option<&'static str> {
        crate::domain::fields::of_stored(&self.data)
            .is_none()
            .then_some("the event's data is not a JSON object")
    }

    /// As the fold reads it.
    pub fn as_ref(&self) -> crate::domain::fold::EventRef<'_> {
        crate::domain::fold::EventRef {
            event_id: &self.event_id,
            event_time: self.event_time,
            received_at: self.received_at,
            name: &self.name,
            data: &self.data,
        }
    }
}

/// True for a log item's partition key (the stream also carries the
/// aggregator's own writes, which it ignores).
pub fn is_log_partition(pk: &str) -> bool {
    pk.starts_with("log#")
}

/// What a partition key names in Sygno's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// The event log.
    Log,
    /// The aggregator's own items (state, scope states, summaries, rows).
    Aggregates,
    /// The sources the log took ([`super::sources`]): the write path's.
    Sources,
    /// Nothing Sygno writes.
    Foreign,
}

/// The aggregator's partition keys, as IAM `dynamodb:LeadingKeys`
/// patterns (`*` ending a prefix): the template grants the aggregator
/// these and nothing else (checked by the infra tests).
pub const AGGREGATOR_KEY_PATTERNS: [&str; 6] =
    [STATE_PK, ROWS_KEY, "scope#*", "m#*", "h#*", "ap#*"];

impl Partition {
    pub fn of(pk: &str) -> Partition {
        let matches = |pattern: &&str| match pattern.strip_suffix('*') {
            Some(prefix) => pk.starts_with(prefix),
            None => pk == *pattern,
        };
        if is_log_partition(pk) {
            Partition::Log
        } else if pk == super::sources::SOURCES_PK {
            Partition::Sources
        } else if AGGREGATOR_KEY_PATTERNS.iter().any(matches) {
            Partition::Aggregates
        } else {
            Partition::Foreign
        }
    }
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// An aggregate as keys name it: `all`, or `s:` and the source's name.
pub fn scope_sk(scope: &Scope) -> String {
    match scope {
        Scope::All => ALL_EVENTS_SK.to_owned(),
        Scope::AllPart(part) => format!("{ALL_EVENTS_SK}~{part:02}"),
        Scope::Source(name) => format!("s:{name}"),
    }
}

/// The all-events aggregate's key, and its parts' prefix.
const ALL_EVENTS_SK: &str = "all";

/// Parts the all-events aggregate is kept in: each commit writes one of
/// them (its aggregator's, [`Scope::all_part`]), so commits of different
/// parts never contend; reads merge them. Part 0 is `all` itself.
pub const ALL_EVENTS_PARTS: u8 = 8;

/// Every part of the all-events aggregate, part 0 first.
pub fn all_event_parts() -> impl Iterator<Item = Scope> {
    (0..ALL_EVENTS_PARTS).map(Scope::all_part)
}

fn scope_of_sk(sk: &str) -> Result<Scope> {
    let bad = || StoreError::Corrupt(format!("bad scope key {sk}"));
    if sk == ALL_EVENTS_SK {
        return Ok(Scope::All);
    }
    if let Some(part) = sk.strip_prefix("all~") {
        return match part.parse::<u8>() {
            Ok(n) if n > 0 && part.len() == 2 => Ok(Scope::AllPart(n)),
            _ => Err(bad()),
        };
    }
    sk.strip_prefix("s:")
        .map(|name| Scope::Source(name.to_owned()))
        .ok_or_else(bad)
}

fn scope_pk(generation: u64) -> String {
    format!("scope#{generation}")
}

fn tier_pk(generation: u64, scope: &Scope, tier: Tier) -> String {
    let scope = scope_sk(scope);
    match tier {
        Tier::Minute => format!("m#{generation}#{scope}"),
        Tier::Hour => format!("h#{generation}#{scope}"),
    }
}

/// The `sk` of an aggregate's `expose` row.
pub(crate) fn view_sk(scope: &Scope, kind: ExposeKind) -> String {
    format!("v#{}#{}", scope_sk(scope), kind.as_str())
}

/// The `sk` of a source's `sources` entry.
pub(crate) fn source_sk(name: &str) -> String {
    format!("{SOURCE_PREFIX}{name}")
}

pub(crate) const SOURCE_PREFIX: &str = "s#";

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

/// An item's `version` as a commit reads it: 0 when it has none (absent,
/// or written before items carried one).
fn stored_version(item: &Item) -> Result<u64> {
    match item.get(VERSION) {
        Some(_) => get_u64(item, VERSION),
        None => Ok(0),
    }
}

fn scope_item_of(item: &Item) -> Result<ScopeItem> {
    let limit = match item.get("limit") {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        _ => Vec::new(),
    };
    let state = codec::decode_scope(get_s(item, "state")?, &limit)
        .map_err(|e| StoreError::Corrupt(format!("scope state: {e}")))?;
    let latest = item.get("latest").and_then(|v| v.as_s().ok()).cloned();
    let version = stored_version(item)?;
    let last_marks = match item.get(LAST_MARKS) {
        Some(value) => decode_marks_keys(value.as_s().map_err(|_| bad_last_marks())?)?,
        None => Vec::new(),
    };
    Ok(ScopeItem {
        state,
        latest,
        version,
        last_marks,
    })
}

/// A conditional row write's outcome: a newer stored row (the condition
/// failed) is not an error.
fn unless_newer<T>(sent: std::result::Result<T, SdkError<PutItemError>>) -> Result<()> {
    match sent {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e)) => match e.into_err() {
            PutItemError::ConditionalCheckFailedException(_) => Ok(()),
            other => Err(unavailable(other)),
        },
        Err(e) => Err(unavailable(e)),
    }
}

/// Runs `writes` eight at a time (rows of many aggregates are many
/// requests), stopping at the first error.
async fn a_few_at_a_time(writes: Vec<impl std::future::Future<Output = Result<()>>>) -> Result<()> {
    let mut pending = futures::stream::iter(writes).buffer_unordered(8);
    while let Some(result) = pending.next().await {
        result?;
    }
    Ok(())
}

/// A scope item's attribute naming its last commit's marks items.
const LAST_MARKS: &str = "lm";

fn bad_last_marks() -> StoreError {
    StoreError::Corrupt("bad last marks keys".into())
}

/// `second/commit` pairs joined by `,` (commit ids are hex).
fn encode_marks_keys(keys: &[MarksKey]) -> String {
    let pairs: Vec<String> = keys.iter().map(|(s, c)| format!("{s}/{c}")).collect();
    pairs.join(",")
}

fn decode_marks_keys(text: &str) -> Result<Vec<MarksKey>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (second, commit) = pair.split_once('/').ok_or_else(bad_last_marks)?;
            let second = second.parse().map_err(|_| bad_last_marks())?;
            Ok((second, commit.to_owned()))
        })
        .collect()
}

/// Sorts a failed transaction by cause: another writer came first
/// (`Conflict`: read again and retry), DynamoDB refused it for what it is
/// (`Rejected`: retrying cannot help), or the service failed or throttled
/// (`Unavailable`: retry later).
pub(crate) fn classify_transaction(error: TransactWriteItemsError) -> StoreError {
    match error {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            let codes: Vec<String> = cancelled
                .cancellation_reasons()
                .iter()
                .filter_map(|r| r.code().map(str::to_owned))
                .filter(|c| c != "None")
                .collect();
            let conflict = |c: &String| c == "ConditionalCheckFailed" || c == "TransactionConflict";
            let refused =
                |c: &String| c == "ValidationError" || c == "ItemCollectionSizeLimitExceeded";
            if codes.iter().any(refused) {
                StoreError::Rejected(Box::new(cancelled))
            } else if !codes.is_empty() && codes.iter().all(conflict) {
                StoreError::Conflict(Box::new(cancelled))
            } else {
                StoreError::unavailable(cancelled)
            }
        }
        TransactWriteItemsError::TransactionInProgressException(e) => {
            StoreError::Conflict(Box::new(e))
        }
        e @ (TransactWriteItemsError::ProvisionedThroughputExceededException(_)
        | TransactWriteItemsError::RequestLimitExceeded(_)
        | TransactWriteItemsError::ThrottlingException(_)
        | TransactWriteItemsError::InternalServerError(_)) => StoreError::unavailable(e),
        other if is_validation(&other) => StoreError::Rejected(Box::new(other)),
        other => StoreError::unavailable(other),
    }
}

/// A `ValidationException` (an item or the transaction over DynamoDB's
/// size limits, a malformed request): the service's error code says so.
fn is_validation(error: &TransactWriteItemsError) -> bool {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    error.code() == Some("ValidationException")
}

/// A summary item's `sum`: binary, or the JSON string of earlier versions.
fn summary_of(item: &Item) -> Result<Summary> {
    let bytes = match item.get(SUMMARY) {
        Some(AttributeValue::B(blob)) => blob.as_ref(),
        Some(AttributeValue::S(text)) => text.as_bytes(),
        _ => return Err(StoreError::Corrupt("summary item without `sum`".into())),
    };
    decode_summary(bytes).map_err(|e| StoreError::Corrupt(format!("summary: {e}")))
}

/// The largest payload (a summary's bytes, a row's text) one item carries:
/// DynamoDB takes 400 KB per item, and the rest of an item (keys, version,
/// chunk count) is under 1 KB.
pub const MAX_CHUNK_BYTES: usize = 300 * 1024;
/// DynamoDB's limits: an item, and the items of one transaction together
/// (with a margin for what this estimate leaves out).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
pub const MAX_TRANSACTION_BYTES: usize = 4_000_000;

const CHUNKS: &str = "chunks";
const VERSION: &str = "version";
/// A row's windows' end (ms).
const WINDOW_END: &str = "wend";
/// A `latest` row's event, as text ordered like [`LatestKey`].
const LATEST_ORDER: &str = "lkey";

/// `key` as text whose order is the key's: times as order-preserving
/// digits, then the event id.
fn latest_order(key: &LatestKey) -> String {
    format!(
        "{}#{}#{}",
        index_sk(key.event_time),
        index_sk(key.received_at),
        key.event_id
    )
}

/// The `sk` of chunk `chunk` of a summary: the index for chunk 0, then
/// `<index>#01`, `<index>#02`...
fn chunk_sk(index: i64, chunk: usize) -> String {
    if chunk == 0 {
        index_sk(index)
    } else {
        format!("{}#{chunk:02}", index_sk(index))
    }
}

fn parse_chunk_sk(sk: &str) -> Result<(i64, usize)> {
    match sk.split_once('#') {
        None => Ok((index_of(sk)?, 0)),
        Some((index, chunk)) => Ok((
            index_of(index)?,
            chunk
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("bad chunk key {sk}")))?,
        )),
    }
}

/// The `sk` of chunk `chunk` of the row at `sk`.
fn row_chunk_sk(sk: &str, chunk: usize) -> String {
    if chunk == 0 {
        sk.to_owned()
    } else {
        format!("{sk}#{chunk:02}")
    }
}

fn chunk_count(item: &Item) -> Result<usize> {
    match item.get(CHUNKS) {
        None => Ok(1),
        Some(_) => usize::try_from(get_n(item, CHUNKS)?)
            .ok()
            .filter(|c| *c >= 1)
            .ok_or_else(|| StoreError::Corrupt("bad chunk count".into())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("an item changed while its chunks were read")]
struct Torn;

fn torn_error() -> Torn {
    Torn
}

/// A summary read across two commits: the reader retries (a conflict).
fn torn() -> StoreError {
    StoreError::Conflict("a summary changed while its chunks were read".into())
}

/// A summary's chunks, `parts[0]` first: the union of their fields (each
/// field is in one chunk), all written by one commit.
fn join_summary(parts: &[Item]) -> Result<Summary> {
    let Some(first) = parts.first() else {
        return Err(torn());
    };
    let expected = chunk_count(first)?;
    if parts.len() < expected {
        return Err(torn());
    }
    let version = first.get(VERSION);
    let mut summary = summary_of(first)?;
    for part in &parts[1..expected] {
        if part.get(VERSION) != version {
            return Err(torn());
        }
        let more = summary_of(part)?;
        summary.events += more.events;
        summary.fields.extend(more.fields);
    }
    Ok(summary)
}

/// A summary's stored form in pieces of at most [`MAX_CHUNK_BYTES`],
/// split between fields; the first carries the event count.
fn summary_chunks(summary: &Summary) -> Vec<Vec<u8>> {
    let mut chunks: Vec<Summary> = vec![Summary {
        events: summary.events,
        ..Summary::default()
    }];
    let mut size = codec::SUMMARY_HEADER_BYTES;
    for (path, moments) in &summary.fields {
        let cost = path.len() + codec::SUMMARY_FIELD_BYTES;
        if size + cost > MAX_CHUNK_BYTES && size > codec::SUMMARY_HEADER_BYTES {
            chunks.push(Summary::default());
            size = codec::SUMMARY_HEADER_BYTES;
        }
        if let Some(last) = chunks.last_mut() {
            last.fields.insert(path.clone(), *moments);
        }
        size += cost;
    }
    chunks.iter().map(encode_summary).collect()
}

/// A row's text in pieces of at most [`MAX_CHUNK_BYTES`], cut between
/// characters.
fn text_chunks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > MAX_CHUNK_BYTES {
        let mut cut = MAX_CHUNK_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// An item's size as DynamoDB counts it (attribute names and values),
/// closely enough to stay under its limits.
fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_bytes(value))
        .sum()
}

fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number.len() / 2 + 2,
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        _ => 1,
    }
}

fn decode_state(item: &Item) -> Result<AggState> {
    let next = match opt_n(item, "next_gen")? {
        Some(generation) => Some(NextGeneration {
            generation: u64::try_from(generation)
                .map_err(|_| StoreError::Corrupt("negative next_gen".into()))?,
            cut: get_n(item, "next_cut")?,
            started_at: get_n(item, "next_started")?,
            alive_at: match opt_n(item, "next_alive")? {
                Some(at) => at,
                None => get_n(item, "next_started")?,
            },
        }),
        None => None,
    };
    Ok(AggState {
        version: get_u64(item, "version")?,
        generation: get_u64(item, "generation")?,
        floor: get_n(item, "floor")?,
        allocated: get_u64(item, "allocated")?,
        next,
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
    if let Some(next) = &state.next {
        item.insert("next_gen".into(), n(next.generation));
        item.insert("next_cut".into(), n(next.cut));
        item.insert("next_started".into(), n(next.started_at));
        item.insert("next_alive".into(), n(next.alive_at));
    }
    item
}

/// The partition of the applied marks of events received in `second`.
fn applied_pk(second: i64) -> String {
    format!("{APPLIED_PREFIX}{second}")
}

/// Applied marks' partition keys (see [`AGGREGATOR_KEY_PATTERNS`]).
const APPLIED_PREFIX: &str = "ap#";
/// The `sk` prefix of one commit's marks item.
const COMMIT_MARKS_PREFIX: &str = "c#";
const MARKS: &str = "marks";

impl DynamoStore {
    /// Every applied mark of events received in `seconds` (a consistent,
    /// paged `Query` a second, a few at once).
    pub async fn read_applied(&self, seconds: &BTreeSet<i64>) -> Result<Applied> {
        let reads: Vec<_> = seconds
            .iter()
            .map(|second| async move {
                let items: Vec<Item> = query_all(
                    self.client
                        .query()
                        .table_name(&*self.table)
                        .key_condition_expression("pk = :pk")
                        .expression_attribute_values(":pk", s(applied_pk(*second)))
                        .consistent_read(true),
                )
                .await?;
                let mut marks = BTreeSet::new();
                let mut commits = Vec::new();
                for item in &items {
                    if let Some(commit) = get_s(item, SK)?.strip_prefix(COMMIT_MARKS_PREFIX) {
                        commits.push((*second, commit.to_owned()));
                    }
                    let Some(AttributeValue::B(bytes)) = item.get(MARKS) else {
                        return Err(StoreError::Corrupt(
                            "applied marks item without marks".into(),
                        ));
                    };
                    let bytes = bytes.as_ref();
                    if !bytes.len().is_multiple_of(8) {
                        return Err(StoreError::Corrupt("applied marks of partial marks".into()));
                    }
                    marks.extend(
                        bytes
                            .chunks_exact(8)
                            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
                    );
                }
                Ok((*second, marks, commits))
            })
            .collect();
        let mut pending = futures::stream::iter(reads).buffer_unordered(8);
        let mut out = Applied::default();
        while let Some(read) = pending.next().await {
            let (second, marks, commits) = read?;
            if !marks.is_empty() {
                out.marks.insert(second, marks);
            }
            out.items.extend(commits);
        }
        Ok(out)
    }

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

    /// The stored summaries among `keys`, by generation (consistent
    /// reads; missing ones are left out).
    pub async fn read_summaries(
        &self,
        keys: &[(u64, SummaryKey)],
    ) -> Result<HashMap<(u64, SummaryKey), Versioned<Summary>>> {
        let partition = |k: &(u64, SummaryKey)| tier_pk(k.0, &k.1.scope, k.1.tier);
        let by_item: HashMap<(String, String), &(u64, SummaryKey)> = keys
            .iter()
            .map(|k| ((partition(k), index_sk(k.1.index)), k))
            .collect();
        let mut firsts: HashMap<(u64, SummaryKey), Item> = HashMap::with_capacity(keys.len());
        for item in self.batch_get(by_item.keys().cloned().collect()).await? {
            let key = (get_s(&item, PK)?.to_owned(), get_s(&item, SK)?.to_owned());
            if let Some(key) = by_item.get(&key) {
                firsts.insert((*key).clone(), item);
            }
        }
        // Summaries written in several items: read the other chunks.
        let mut rest: Vec<(String, String)> = Vec::new();
        for (key, first) in &firsts {
            for chunk in 1..chunk_count(first)? {
                rest.push((partition(key), chunk_sk(key.1.index, chunk)));
            }
        }
        let mut chunks: HashMap<(String, String), Item> = HashMap::new();
        if !rest.is_empty() {
            for item in self.batch_get(rest).await? {
                let key = (get_s(&item, PK)?.to_owned(), get_s(&item, SK)?.to_owned());
                chunks.insert(key, item);
            }
        }
        let mut found = HashMap::with_capacity(firsts.len());
        for (key, first) in firsts {
            let mut parts = vec![first];
            for chunk in 1..chunk_count(&parts[0])? {
                let chunk_key = (partition(&key), chunk_sk(key.1.index, chunk));
                parts.push(chunks.remove(&chunk_key).ok_or_else(torn)?);
            }
            let version = stored_version(&parts[0])?;
            let value = join_summary(&parts)?;
            found.insert(key, Versioned { value, version });
        }
        Ok(found)
    }

    /// The stored scope items among `keys` (consistent reads; missing ones
    /// are left out).
    pub async fn read_scopes(
        &self,
        keys: &[(u64, Scope)],
    ) -> Result<HashMap<(u64, Scope), ScopeItem>> {
        let by_item: HashMap<(String, String), &(u64, Scope)> = keys
            .iter()
            .map(|k| ((scope_pk(k.0), scope_sk(&k.1)), k))
            .collect();
        let mut found = HashMap::with_capacity(keys.len());
        for item in self.batch_get(by_item.keys().cloned().collect()).await? {
            let key = (get_s(&item, PK)?.to_owned(), get_s(&item, SK)?.to_owned());
            if let Some(key) = by_item.get(&key) {
                found.insert((*key).clone(), scope_item_of(&item)?);
            }
        }
        Ok(found)
    }

    /// Every aggregate's scope item in `generation` (one paged `Query`).
    pub async fn query_scopes(&self, generation: u64) -> Result<Vec<(Scope, ScopeItem)>> {
        self.query_scopes_from(generation, "", false).await
    }

    /// The scope items of the all-events aggregate's parts in `generation`
    /// without their `latest` rows (one consistent `Query`; parts never
    /// written are left out).
    pub async fn read_all_event_parts(&self, generation: u64) -> Result<Vec<(Scope, ScopeItem)>> {
        self.query_scopes_from(generation, ALL_EVENTS_SK, true)
            .await
    }

    /// The scope items in `generation` whose key begins with `prefix`,
    /// all of them or `without_latest`.
    async fn query_scopes_from(
        &self,
        generation: u64,
        prefix: &str,
        without_latest: bool,
    ) -> Result<Vec<(Scope, ScopeItem)>> {
        // (DynamoDB refuses an empty key value: no prefix, no condition.)
        let query = self
            .client
            .query()
            .table_name(&*self.table)
            .expression_attribute_values(":pk", s(scope_pk(generation)));
        let query = if without_latest {
            query
                .projection_expression("pk, sk, #state, #limit, #version, #last")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#limit", "limit")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_names("#last", LAST_MARKS)
        } else {
            query
        };
        let query = if prefix.is_empty() {
            query.key_condition_expression("pk = :pk")
        } else {
            query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix))
        };
        let items: Vec<Item> = query_all(query.consistent_read(true)).await?;
        items
            .iter()
            .map(|item| Ok((scope_of_sk(get_s(item, SK)?)?, scope_item_of(item)?)))
            .collect()
    }

    /// Consistent `BatchGetItem`s of `keys` (100 a request), retrying what
    /// the service leaves unprocessed.
    async fn batch_get(&self, keys: Vec<(String, String)>) -> Result<Vec<Item>> {
        self.batch_get_with(keys, true).await
    }

    async fn batch_get_with(
        &self,
        keys: Vec<(String, String)>,
        consistent: bool,
    ) -> Result<Vec<Item>> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut request = KeysAndAttributes::builder().consistent_read(consistent);
            for (pk, sk) in chunk {
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
                found.extend(
                    got.responses
                        .unwrap_or_default()
                        .remove(&*self.table)
                        .unwrap_or_default(),
                );
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

    /// The stored summaries of one aggregate's `tier` in `generation` with
    /// index in `range`, in index order (one consistent `Query`, paged).
    pub async fn query_summaries(
        &self,
        generation: u64,
        scope: &Scope,
        tier: Tier,
        range: Range<i64>,
    ) -> Result<Vec<(i64, Summary)>> {
        self.query_summaries_with(generation, scope, tier, range, true)
            .await
    }

    /// [`Self::query_summaries`], strongly consistent or not (half the
    /// read units: the read path's choice; a summary torn across two
    /// commits is still detected by its chunks' versions).
    pub async fn query_summaries_with(
        &self,
        generation: u64,
        scope: &Scope,
        tier: Tier,
        range: Range<i64>,
        consistent: bool,
    ) -> Result<Vec<(i64, Summary)>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let items = query_all(
            self.client
                .query()
                .table_name(&*self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(tier_pk(generation, scope, tier)))
                .expression_attribute_values(":from", s(index_sk(range.start)))
                // Past every chunk of the last index (`#` and digits < `~`).
                .expression_attribute_values(":to", s(format!("{}#~", index_sk(range.end - 1))))
                .consistent_read(consistent),
        )
        .await?;
        // Items come in key order: each index's chunk 0, then its others.
        let mut out: Vec<(i64, Summary)> = Vec::new();
        let mut parts: Vec<Item> = Vec::new();
        let mut current: Option<i64> = None;
        for item in items {
            let (index, chunk) = parse_chunk_sk(get_s(&item, SK)?)?;
            if chunk == 0 {
                if let Some(done) = current.take() {
                    out.push((done, join_summary(&parts)?));
                }
                parts.clear();
                current = Some(index);
            }
            if current == Some(index) {
                parts.push(item);
            }
        }
        if let Some(done) = current {
            out.push((done, join_summary(&parts)?));
        }
        Ok(out)
    }

    /// Deletes every summary and scope item of `generation`; returns how
    /// many items. For generations no commit can reach any more (a rebuild
    /// replaced them): nothing guards against deleting a live one.
    pub async fn delete_generation(&self, generation: u64) -> Result<usize> {
        let mut deleted = 0;
        let scopes = self.query_scopes(generation).await?;
        let mut partitions: Vec<String> = Vec::new();
        for (scope, _) in &scopes {
            for tier in [Tier::Minute, Tier::Hour] {
                partitions.push(tier_pk(generation, scope, tier));
            }
        }
        partitions.push(scope_pk(generation));
        for pk in partitions {
            let keys = query_all(
                self.client
                    .query()
                    .table_name(&*self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(pk))
                    .projection_expression("pk, sk"),
            )
            .await?;
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
    /// returned cursor back for the next page; `None` means done. Items
    /// that are not events, or events that cannot be aggregated
    /// ([`EventItem::defect`]), are returned apart by sort key.
    pub async fn read_log_page(&self, shard: u8, cursor: Option<Item>) -> Result<LogPage> {
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
        let mut out = LogPage {
            cursor: page.last_evaluated_key.filter(|k| !k.is_empty()),
            ..LogPage::default()
        };
        for item in page.items.unwrap_or_default() {
            let sk = get_s(&item, SK).unwrap_or("?").to_owned();
            match serde_dynamo::aws_sdk_dynamodb_1::from_item::<EventItem>(item) {
                Ok(event) => match event.defect() {
                    None => out.events.push(event),
                    Some(why) => out.skipped.push((sk, why)),
                },
                Err(_) => out.skipped.push((sk, "not an event item")),
            }
        }
        Ok(out)
    }

    /// Writes the state item, conditional on the stored one being at
    /// `state.version - 1` (absent for 1): [`StoreError::Conflict`] when
    /// another writer came first (read again and retry).
    pub async fn write_state(&self, state: &AggState) -> Result<()> {
        let expected = state
            .version
            .checked_sub(1)
            .ok_or_else(|| StoreError::Conflict("a state's version must be at least 1".into()))?;
        let sent = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(encode_state(state)))
            .set_condition_expression(Some(if expected == 0 {
                "attribute_not_exists(version)".to_owned()
            } else {
                "version = :v".to_owned()
            }))
            .set_expression_attribute_values(
                (expected > 0).then(|| HashMap::from([(":v".to_owned(), n(expected))])),
            )
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(e) => {
                    Err(StoreError::Conflict(Box::new(e)))
                }
                other => Err(unavailable(other)),
            },
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Writes `commit` in one transaction: its marks (each second's under
    /// a new key), and its scope items and summaries, each one version
    /// above the one read and conditional on it. [`StoreError::Conflict`]
    /// when another commit changed one of them first (read again and
    /// retry); [`StoreError::Rejected`] when DynamoDB refuses the
    /// transaction for a reason a retry cannot fix (its size, a validation
    /// error).
    pub async fn commit(&self, commit: Commit<'_>) -> Result<()> {
        let mut items_bytes = Vec::new();
        let mut writes = Vec::new();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let marks_keys: Vec<MarksKey> = commit.marks.keys().map(|s| (*s, id.clone())).collect();
        for (second, marks) in &commit.marks {
            let mut item = Item::new();
            item.insert(PK.into(), s(applied_pk(*second)));
            item.insert(SK.into(), s(format!("{COMMIT_MARKS_PREFIX}{id}")));
            item.insert("kind".into(), s("applied"));
            let bytes: Vec<u8> = marks.iter().flat_map(|m| m.to_le_bytes()).collect();
            item.insert(MARKS.into(), AttributeValue::B(bytes.into()));
            item.insert(
                super::TTL_ATTRIBUTE.into(),
                n(second.saturating_add(APPLIED_TTL_SECONDS)),
            );
            items_bytes.push(item_bytes(&item));
            writes.push(self.put_expecting(item, PK, 0)?);
        }
        for ((generation, scope), scope_item) in commit.scopes {
            let mut item = Item::new();
            item.insert(PK.into(), s(scope_pk(*generation)));
            item.insert(SK.into(), s(scope_sk(scope)));
            item.insert("kind".into(), s("scope"));
            item.insert("state".into(), s(codec::encode_scope(&scope_item.state)));
            item.insert(
                "limit".into(),
                AttributeValue::B(codec::encode_limit(&scope_item.state.fields).into()),
            );
            if let Some(latest) = &scope_item.latest {
                item.insert("latest".into(), s(latest.clone()));
            }
            item.insert(VERSION.into(), n(scope_item.version + 1));
            // This commit's marks items, or (none) the last commit's.
            let last = if marks_keys.is_empty() {
                &scope_item.last_marks
            } else {
                &marks_keys
            };
            if !last.is_empty() {
                item.insert(LAST_MARKS.into(), s(encode_marks_keys(last)));
            }
            items_bytes.push(item_bytes(&item));
            writes.push(self.put_expecting(item, VERSION, scope_item.version)?);
        }
        for ((generation, key), summary) in commit.summaries {
            let chunks = summary_chunks(&summary.value);
            for (chunk, bytes) in chunks.iter().enumerate() {
                let mut item = Item::new();
                item.insert(PK.into(), s(tier_pk(*generation, &key.scope, key.tier)));
                item.insert(SK.into(), s(chunk_sk(key.index, chunk)));
                item.insert("kind".into(), s("summary"));
                item.insert(VERSION.into(), n(summary.version + 1));
                if chunk == 0 {
                    item.insert(CHUNKS.into(), n(chunks.len()));
                }
                if let Some(expires) = self.retention().expires_at(key.tier, key.index) {
                    item.insert(super::TTL_ATTRIBUTE.into(), n(expires));
                }
                item.insert(SUMMARY.into(), AttributeValue::B(bytes.clone().into()));
                items_bytes.push(item_bytes(&item));
                // Chunk 0 carries the condition; the others are written
                // with it or not at all.
                writes.push(if chunk == 0 {
                    self.put_expecting(item, VERSION, summary.version)?
                } else {
                    self.put_item(item)?
                });
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        if writes.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Rejected(
                format!(
                    "{} items in one commit; at most {MAX_TRANSACTION_ITEMS}",
                    writes.len()
                )
                .into(),
            ));
        }
        let total: usize = items_bytes.iter().sum();
        let largest = items_bytes.iter().copied().max().unwrap_or_default();
        if total > MAX_TRANSACTION_BYTES || largest > MAX_ITEM_BYTES {
            return Err(StoreError::Rejected(
                format!(
                    "a commit of {total} bytes whose largest item is {largest} bytes; \
                     DynamoDB takes {MAX_TRANSACTION_BYTES} and {MAX_ITEM_BYTES}"
                )
                .into(),
            ));
        }
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => Err(classify_transaction(e.into_err())),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Writes `latest` rows, each conditional on the stored one being of
    /// an earlier event by the fold's order ([`LatestKey`], kept in
    /// `lkey`): whatever order commits land in, the row ends up the
    /// latest event's (losing is not an error). They need no render, so a
    /// commit writes them first.
    pub async fn write_latest(&self, rows: &[(Scope, LatestKey, String)]) -> Result<()> {
        let writes: Vec<_> = rows
            .iter()
            .map(|(scope, key, doc)| async move {
                let mut item = Item::new();
                item.insert(PK.into(), s(ROWS_KEY));
                item.insert(SK.into(), s(view_sk(scope, ExposeKind::Latest)));
                item.insert("kind".into(), s("row"));
                item.insert("doc".into(), s(doc.clone()));
                let order = latest_order(key);
                item.insert(LATEST_ORDER.into(), s(order.clone()));
                let sent = self
                    .client
                    .put_item()
                    .table_name(&*self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(#o) OR #o < :o")
                    .expression_attribute_names("#o", LATEST_ORDER)
                    .expression_attribute_values(":o", s(order))
                    .send()
                    .await;
                unless_newer(sent)
            })
            .collect();
        a_few_at_a_time(writes).await
    }

    /// Writes rendered rows (but the v1 window kinds, which reads derive
    /// from the stats rows), each conditional on the stored one being of
    /// a lower version (a newer render wins; losing is not an error). A
    /// row larger than an item takes several (its chunk 0 last, so that a
    /// reader finding it finds the others at its version or newer).
    pub async fn write_rows(&self, rows: RowsWrite) -> Result<()> {
        let end = rows.end;
        let version = |scope: &Scope| rows.versions.get(scope).copied().unwrap_or_default();
        let mut docs: Vec<(String, u64, String)> =
            Vec::with_capacity(rows.views.len() + rows.sources.len());
        // The v1 window kinds are read from the stats rows: not stored.
        for (scope, kind, doc) in rows.views {
            if kind.stats_row().is_none() {
                docs.push((view_sk(&scope, kind), version(&scope), doc));
            }
        }
        for (name, doc) in rows.sources {
            let version = version(&Scope::Source(name.clone()));
            docs.push((source_sk(&name), version, doc));
        }
        let writes: Vec<_> = docs
            .into_iter()
            .map(|(sk, version, doc)| async move {
                let chunks = text_chunks(&doc);
                for (chunk, text) in chunks.iter().enumerate().rev() {
                    let mut item = Item::new();
                    item.insert(PK.into(), s(ROWS_KEY));
                    item.insert(SK.into(), s(row_chunk_sk(&sk, chunk)));
                    item.insert("kind".into(), s("row"));
                    item.insert("doc".into(), s(*text));
                    item.insert(VERSION.into(), n(version));
                    item.insert(WINDOW_END.into(), n(end));
                    if chunk == 0 {
                        item.insert(CHUNKS.into(), n(chunks.len()));
                    }
                    self.put_row(item, version, end).await?;
                }
                Ok::<(), StoreError>(())
            })
            .collect();
        a_few_at_a_time(writes).await
    }

    /// Puts a row's chunk unless the stored one is as new: a higher
    /// version, or the same with windows ending as late (losing is not an
    /// error).
    async fn put_row(&self, item: Item, version: u64, end: Millis) -> Result<()> {
        let sent = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR version < :v \
                 OR (version = :v AND (attribute_not_exists(wend) OR wend < :e))",
            )
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":e", n(end))
            .send()
            .await;
        unless_newer(sent)
    }

    /// A rendered row, reassembled from its chunks (eventually consistent
    /// reads; a row caught between two writes is read again).
    pub(crate) async fn read_row(&self, sk: &str) -> Result<Option<String>> {
        for _ in 0..5 {
            let got = self
                .client
                .get_item()
                .table_name(&*self.table)
                .key(PK, s(ROWS_KEY))
                .key(SK, s(sk))
                .send()
                .await
                .map_err(unavailable)?;
            let Some(first) = got.item else {
                return Ok(None);
            };
            let chunks = chunk_count(&first)?;
            let mut doc = get_s(&first, "doc")?.to_owned();
            if chunks == 1 {
                return Ok(Some(doc));
            }
            let stamp = |item: &Item| (item.get(VERSION).cloned(), item.get(WINDOW_END).cloned());
            let version = stamp(&first);
            let keys = (1..chunks).map(|c| (ROWS_KEY.to_owned(), row_chunk_sk(sk, c)));
            let mut rest: BTreeMap<String, Item> = BTreeMap::new();
            for item in self.batch_get_with(keys.collect(), false).await? {
                rest.insert(get_s(&item, SK)?.to_owned(), item);
            }
            let mut whole = true;
            for c in 1..chunks {
                match rest.get(&row_chunk_sk(sk, c)) {
                    Some(item) if stamp(item) == version => {
                        doc.push_str(get_s(item, "doc")?);
                    }
                    _ => whole = false,
                }
            }
            if whole {
                return Ok(Some(doc));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(StoreError::unavailable(torn_error()))
    }

    /// A transaction's `Put` of `item`, conditional on the stored item's
    /// `attribute` being `expected` (0: on its having none, or there being
    /// no item).
    fn put_expecting(
        &self,
        item: Item,
        attribute: &str,
        expected: u64,
    ) -> Result<TransactWriteItem> {
        let put = Put::builder().table_name(&*self.table).set_item(Some(item));
        let put = if expected == 0 {
            put.condition_expression("attribute_not_exists(#a)")
                .expression_attribute_names("#a", attribute)
        } else {
            put.condition_expression("#a = :a")
                .expression_attribute_names("#a", attribute)
                .expression_attribute_values(":a", n(expected))
        };
        Ok(TransactWriteItem::builder()
            .put(put.build().map_err(unavailable)?)
            .build())
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
        let state = AggState {
            version: 7,
            generation: 2,
            floor: 1_000,
            allocated: 3,
            next: Some(NextGeneration {
                generation: 3,
                cut: 2_000,
                started_at: 1_500,
                alive_at: 1_700,
            }),
            rendered_end: 60_000,
        };
        assert_eq!(decode_state(&encode_state(&state)).ok(), Some(state));
        let bare = AggState::default();
        assert_eq!(decode_state(&encode_state(&bare)).ok(), Some(bare));
    }

    #[test]
    fn scope_keys_round_trip_and_never_collide() {
        for scope in [
            Scope::All,
            Scope::AllPart(1),
            Scope::AllPart(ALL_EVENTS_PARTS - 1),
            Scope::Source("all".into()),
            Scope::Source("all~01".into()),
            Scope::Source("s:x#v#1".into()),
        ] {
            assert_eq!(scope_of_sk(&scope_sk(&scope)).ok(), Some(scope));
        }
        for bad in ["all~00", "all~1", "all~x1", "all~"] {
            assert!(scope_of_sk(bad).is_err(), "{bad}");
        }
        assert_ne!(
            scope_sk(&Scope::All),
            scope_sk(&Scope::Source("all".into()))
        );
        // A row's key names its scope and kind; a source's entry is apart.
        let row = view_sk(&Scope::Source("a".into()), ExposeKind::WeekStats);
        assert!(!row.starts_with(SOURCE_PREFIX));
    }
}
