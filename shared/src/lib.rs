//! Sygno's shared library: everything the write path, the read path and the
//! aggregation worker agree on.
//!
//! # Layout
//! - [`domain`]: the pure core. Parsing and validating writes, field
//!   extraction, mergeable statistics, time buckets and windows, API keys.
//!   No I/O, no clock, no randomness: time and ids are passed in.
//! - [`views`]: renders the materialized rows that `expose` serves (the
//!   response documents of the HTTP contract).
//! - [`store`]: the storage ports (`EventLog`, `ChangeFeed`,
//!   `AggregateStore`, `ViewStore`) and their adapters (`store::embedded`,
//!   SQLite on disk; `store::dynamo`, one DynamoDB table).
//! - [`telemetry`]: tracing set-up shared by every binary, and the
//!   catalogue of metrics (names, helpers, the Lambda functions' exporter).

pub mod domain;
pub mod store;
pub mod telemetry;
pub mod views;
