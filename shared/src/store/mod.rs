//! Storage ports and their adapters.
//!
//! The ports are small traits, injected as `Arc<dyn Trait>`:
//! - [`EventLog`]: append events (write path) and health.
//! - [`ChangeFeed`]: read the log in sequence order (aggregator).
//! - [`AggregateStore`]: the aggregator's durable state: buckets, the latest
//!   event, the rendered rows and the checkpoint, all written in one
//!   transaction per batch.
//! - [`ViewStore`]: the rendered rows (read path).
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

use crate::domain::aggregates::Latest;
use crate::domain::event::{Appended, LoggedEvent, NewEvent};
use crate::domain::expose::ExposeKind;
use crate::domain::series::Summary;
use async_trait::async_trait;
use std::sync::Arc;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong in storage.
#[derive(thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed; the caller may retry.
    #[error("the store is unavailable")]
    Unavailable(#[source] Source),
    /// A conditional write found another writer's state (e.g. the checkpoint
    /// moved under an aggregator).
    #[error("conflicting write: {0}")]
    Conflict(String),
    /// Another process holds the data directory.
    #[error("the data directory {0} is in use by another sygno process")]
    Locked(String),
    /// Stored data could not be decoded.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
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
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(Box::new(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The append-only event log, write side.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends an event durably, or returns the first event stored under the
    /// same idempotency key and writer. Returns only once durable.
    async fn append(&self, event: NewEvent) -> Result<Appended>;
    /// Succeeds when the store is reachable.
    async fn ping(&self) -> Result<()>;
}

/// The event log read in order.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Up to `limit` events with `seq > after`, in sequence order.
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<LoggedEvent>>;
    /// The greatest sequence number stored (0 for an empty log).
    async fn head(&self) -> Result<u64>;
    /// Returns once an event with `seq > after` is stored. May return early.
    async fn wait_beyond(&self, after: u64);
}

/// What the aggregator keeps between batches.
#[derive(Debug, Default)]
pub struct StoredAggregates {
    pub checkpoint: u64,
    pub latest: Option<Latest>,
    pub buckets: Vec<(i64, Summary)>,
}

/// One batch's changes, committed atomically.
#[derive(Debug, Default)]
pub struct AggregateCommit {
    /// The checkpoint this batch started from: the commit fails with
    /// [`StoreError::Conflict`] if the stored one differs (another worker
    /// moved it). `None` for a rebuild, which replaces everything.
    pub expected_checkpoint: Option<u64>,
    pub checkpoint: u64,
    /// Delete every stored bucket first (rebuild).
    pub replace_all: bool,
    pub buckets: Vec<(i64, Summary)>,
    /// `Some` when `latest` changed.
    pub latest: Option<Latest>,
    /// Rendered rows, replacing the stored ones of the same kind.
    pub views: Vec<(ExposeKind, String)>,
}

/// The aggregator's durable state.
#[async_trait]
pub trait AggregateStore: Send + Sync {
    /// Checkpoint, latest, and every bucket at or after `from_bucket`.
    async fn load(&self, from_bucket: i64) -> Result<StoredAggregates>;
    /// The stored buckets among `buckets` (missing ones are left out).
    async fn load_buckets(&self, buckets: &[i64]) -> Result<Vec<(i64, Summary)>>;
    /// Applies a batch's changes and its checkpoint in one transaction.
    async fn commit(&self, commit: AggregateCommit) -> Result<()>;
}

/// The rendered rows, read side.
#[async_trait]
pub trait ViewStore: Send + Sync {
    /// The row for `kind`, `None` if none was ever written.
    async fn view(&self, kind: ExposeKind) -> Result<Option<Arc<str>>>;
}
