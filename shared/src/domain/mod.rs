//! The pure core of Sygno: no I/O, no clock reads, no random ids.
//!
//! # Layout
//! - [`time`]: millisecond timestamps, RFC 3339 parsing and formatting, buckets.
//! - [`write`]: turns a `write_raw` body into a validated [`write::WriteCommand`].
//! - [`fields`]: the numeric fields of an event (flattened paths, `rows` tables).
//! - [`stats`]: [`stats::Moments`], Welford updates and Chan et al.'s merge.
//! - [`series`]: per-bucket [`series::Summary`]s and the canonical window fold.
//! - [`tiers`]: minute and hour summaries, and how a window splits into them.
//! - [`aggregates`]: the aggregation state folded from the event log.
//! - [`expose`]: the kinds of materialized rows `expose` can ask for.
//! - [`auth`]: API keys, roles and key ids.
//! - [`event`]: events as appended to and read back from the log.

pub mod aggregates;
pub mod auth;
pub mod event;
pub mod expose;
pub mod fields;
pub mod series;
pub mod stats;
pub mod tiers;
pub mod time;
pub mod write;

#[cfg(test)]
mod tidy_tests;
