//! Sygno's aggregation worker: folds the event log's change feed into the
//! materialized rows that `expose` serves, and rebuilds them from the log.
//!
//! # Layout
//! - [`embedded`]: the aggregator on the embedded store: the worker
//!   ([`embedded::Worker`], [`embedded::worker::run`]) and its rebuild.
//! - [`stream`]: the aggregator on DynamoDB, fed by DynamoDB Streams (the
//!   `sygno-aggregator` Lambda function, or a local poller), and its
//!   online rebuild.
//! - [`control`]: [`RebuildHandle`], how a running server asks its worker for
//!   a rebuild and reports progress.
//! - [`render`]: rows from stored summaries, shared by both stores.
//!
//! The fold itself (sources, summaries, windows, `latest`, the field limit)
//! is pure and lives in `sygno_shared::domain`, written once; this crate is
//! the shell around it for each store.

pub mod control;
pub mod embedded;
pub mod render;
pub mod stream;

pub use control::{RebuildHandle, RebuildState, RebuildStatus};
pub use embedded::{Clock, Worker};
