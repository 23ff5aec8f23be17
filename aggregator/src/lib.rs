//! Sygno's aggregation worker: folds the event log's change feed into the
//! materialized rows that `expose` serves, and rebuilds them from the log.
//!
//! # Layout
//! - [`embedded`]: the aggregator on the embedded store: the worker
//!   ([`embedded::Worker`], [`embedded::worker::run`]) and its rebuild.
//! - [`dynamo`]: the aggregator on DynamoDB, fed by DynamoDB Streams (the
//!   `sygno-aggregator` Lambda function, or a local poller), and its
//!   online rebuild.
//! - [`control`]: [`RebuildHandle`], how a running server asks its worker for
//!   a rebuild and reports progress.
//! - [`render`]: rows from stored summaries, shared by both stores;
//!   [`Clock`], the time both take.
//!
//! The fold itself (sources, summaries, windows, `latest`, the field limit)
//! is pure and lives in `sygno_shared::domain`, written once; this crate is
//! the shell around it for each store.

pub mod control;
pub mod dynamo;
pub mod embedded;
pub mod render;

pub use control::{RebuildHandle, RebuildState, RebuildStatus};
pub use embedded::Worker;

use std::sync::Arc;
use sygno_shared::domain::time::Millis;

/// Milliseconds since the epoch, now. Injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;
