//! Sygno's aggregation worker: folds the event log's change feed into the
//! materialized rows that `expose` serves, and rebuilds them from the log.
//!
//! # Layout
//! - [`worker`]: [`Worker::step`] applies one batch of the feed and commits
//!   its bucket updates, rows and checkpoint in one transaction;
//!   [`worker::run`] drives steps from change notifications and the clock
//!   (windows roll forward every minute even when no events arrive).
//! - [`rebuild`]: recomputes every aggregate from the whole log.
//! - [`stream`]: the same fold for the DynamoDB store, fed by DynamoDB
//!   Streams (the `sygno-aggregator` Lambda function, or a local poller),
//!   and its online rebuild.
//! - [`control`]: [`RebuildHandle`], how a running server asks its worker for
//!   a rebuild and reports progress.
//!
//! The fold itself (buckets, windows, latest) is pure and lives in
//! `sygno_shared::domain`; this crate is the shell around it.

pub mod control;
pub mod rebuild;
pub mod stream;
pub mod worker;

pub use control::{RebuildHandle, RebuildState, RebuildStatus};
pub use worker::{Clock, Worker};
