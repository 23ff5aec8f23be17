//! Storage ports and their adapters.
//!
//! The ports are small traits, injected as `Arc<dyn Trait>`:
//! - [`EventLog`]: append events (write path) and health.
//! - [`ChangeFeed`]: read the log in sequence order (aggregator).
//! - [`AggregateStore`]: the aggregator's durable state: minute and hour
//!   summaries per aggregate, scope states, the rendered rows and the
//!   checkpoint, all written in one transaction per batch.
//! - [`ViewStore`]: the rendered rows and the sources list (read path).
//!
//! Adapters: [`embedded`] (SQLite on disk, the local default: all four
//! ports) and [`dynamo`] (one DynamoDB table: `EventLog` and `ViewStore`;
//! its aggregates are kept by the stream aggregator through
//! [`dynamo::state`], since a stream has no single sequence to checkpoint).
//! [`codec`] holds the persisted form of summaries, shared by adapters.

pub mod codec;
#[cfg(test)]
pub(crate) mod contract_tests;
pub mod dynamo;
pub mod embedded;

use crate::domain::event::{Appended, LoggedEvent, NewEvent};
use crate::domain::expose::ExposeKind;
use crate::domain::fold::{Scope, ScopeState, SummaryKey};
use crate::domain::summary::Summary;
use crate::domain::tiers::Tier;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong in storage.
#[derive(thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed; the caller may retry.
    #[error("the store is unavailable")]
    Unavailable(#[source] Source),
    /// A conditional write found another writer's state (e.g. the checkpoint
    /// moved under an aggregator); the cause is kept (DynamoDB's
    /// cancellation reasons, or what the check found).
    #[error("conflicting write")]
    Conflict(#[source] Source),
    /// The store refused the write for what it is (too large, invalid):
    /// retrying the same write cannot succeed.
    #[error("the store refused the write")]
    Rejected(#[source] Source),
    /// Another process holds the data directory.
    #[error("the data directory {0} is in use by another sygno process")]
    Locked(String),
    /// Stored data could not be decoded.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The write names a source the log has never had, and the log holds
    /// as many sources as it may (`SYGNO_MAX_SOURCES`): nothing of the
    /// write was stored.
    #[error("the log holds its most sources ({max})")]
    TooManySources { max: usize },
}

impl std::fmt::Debug for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        error_chain_fmt(self, f)
    }
}

/// Writes an error and its chain of sources, one per line.
pub fn error_chain_fmt(
    e: &impl std::error::Error,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    write!(f, "{e}")?;
    let mut current = e.source();
    while let Some(cause) = current {
        write!(f, "\n  caused by: {cause}")?;
        current = cause.source();
    }
    Ok(())
}

impl StoreError {
    /// The variant's name, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict(_) => "conflict",
            StoreError::Rejected(_) => "rejected",
            StoreError::Locked(_) => "locked",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::TooManySources { .. } => "too_many_sources",
        }
    }

    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(Box::new(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The append-only event log, write side.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends events durably, in order, answering each as [`Self::append`]
    /// does. Returns only once every one is durable. A batch naming a
    /// source the log has never had, once it holds its most sources, is
    /// refused whole ([`StoreError::TooManySources`]). On an error, the
    /// embedded store has stored none of them; DynamoDB may have stored
    /// some (each event is its own item): a retry with the same
    /// idempotency keys completes the batch without duplicates.
    async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>>;
    /// Appends an event durably, or returns the first event stored under the
    /// same idempotency key and writer. Returns only once durable.
    async fn append(&self, event: NewEvent) -> Result<Appended> {
        self.append_batch(vec![event])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an append answered nothing".into()))
    }
    /// Succeeds when the store is reachable.
    async fn ping(&self) -> Result<()>;
}

/// How much event `data` one [`ChangeFeed::read_after`] returns at most
/// (past the first event).
pub const MAX_READ_BYTES: usize = 4 * 1024 * 1024;

/// The event log read in order.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Up to `limit` events with `seq > after`, in sequence order, and at
    /// most about [`MAX_READ_BYTES`] of their `data` (at least one event):
    /// a batch of wide events stays small in memory.
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<LoggedEvent>>;
    /// The greatest sequence number stored (0 for an empty log).
    async fn head(&self) -> Result<u64>;
    /// Returns once an event with `seq > after` is stored. May return early.
    async fn wait_beyond(&self, after: u64);
}

/// What the embedded aggregator keeps between batches (its summaries are
/// read as needed, never all at once).
#[derive(Debug, Default)]
pub struct StoredAggregates {
    pub checkpoint: u64,
    /// The live generation of summaries.
    pub generation: u64,
    /// The highest generation with any summary (a rebuild that died may
    /// have left one above the live one).
    pub max_generation: u64,
    pub scopes: BTreeMap<Scope, ScopeState>,
}

/// One batch's changes, committed atomically.
#[derive(Debug, Default)]
pub struct AggregateCommit {
    /// The checkpoint this batch started from: the commit fails with
    /// [`StoreError::Conflict`] if the stored one differs (another worker
    /// moved it). `None` for a rebuild, which writes a generation no
    /// worker reads.
    pub expected_checkpoint: Option<u64>,
    /// The new checkpoint; `None` leaves it (a rebuild's steps).
    pub checkpoint: Option<u64>,
    /// The generation `summaries` belong to.
    pub generation: u64,
    /// Make `generation` the live one: every scope state, row and source
    /// entry is replaced by this commit's, and every other generation's
    /// summaries are deleted (the end of a rebuild).
    pub switch: bool,
    /// Summaries to replace, whole.
    pub summaries: Vec<(SummaryKey, Summary)>,
    /// Scope states to replace.
    pub scopes: Vec<(Scope, ScopeState)>,
    /// Rendered rows, replacing the stored ones of the same scope and kind.
    pub views: Vec<(Scope, ExposeKind, String)>,
    /// Rendered `sources` entries, by source name.
    pub sources: Vec<(String, String)>,
}

/// The aggregator's durable state.
#[async_trait]
pub trait AggregateStore: Send + Sync {
    /// Checkpoint, generations and every scope state.
    async fn load(&self) -> Result<StoredAggregates>;
    /// The stored summaries among `keys` in `generation` (missing ones are
    /// left out).
    async fn load_summaries(
        &self,
        generation: u64,
        keys: &[SummaryKey],
    ) -> Result<Vec<(SummaryKey, Summary)>>;
    /// The stored summaries of `generation` in each `(scope, tier, index
    /// range)`.
    async fn load_ranges(
        &self,
        generation: u64,
        ranges: &[(Scope, Tier, Range<i64>)],
    ) -> Result<Vec<(SummaryKey, Summary)>>;
    /// Applies a batch's changes and its checkpoint in one transaction.
    async fn commit(&self, commit: AggregateCommit) -> Result<()>;
    /// Deletes `generation`'s `tier` summaries with index below `before`
    /// (retention), oldest first, a bounded part of them per call; returns
    /// how many (0: none are left).
    async fn prune(&self, generation: u64, tier: Tier, before: i64) -> Result<u64>;
}

/// The rendered rows, read side.
#[async_trait]
pub trait ViewStore: Send + Sync {
    /// The row for `kind` of `scope`'s aggregate, `None` if none was ever
    /// written (for a source: no event of it was aggregated yet).
    async fn view(&self, scope: &Scope, kind: ExposeKind) -> Result<Option<Arc<str>>>;
    /// Up to `limit` sources' `sources` entries with names after `after`
    /// (all: `None`), sorted by name, each with its name.
    async fn sources_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Arc<str>)>>;
    /// The live summaries of `scope`'s aggregate in `tier` with index in
    /// `range`, in index order (absent ones left out): what a series folds.
    async fn summaries(
        &self,
        scope: &Scope,
        tier: Tier,
        range: Range<i64>,
    ) -> Result<Vec<(i64, Summary)>>;
}
