//! The pure core of Sygno: no I/O, no clock reads, no random ids.
//!
//! # Layout
//! - [`time`]: millisecond timestamps, RFC 3339 parsing and formatting, buckets.
//! - [`write`](mod@write): turns a `write_raw` body into a validated [`write::WriteCommand`].
//! - [`fields`]: the numeric fields of an event (flattened paths, `rows` tables).
//! - [`stats`]: [`stats::Moments`] (count, mean, deviation, min, max),
//!   overflow-free over the whole f64 range, and their merge.
//! - [`summary`]: [`summary::Summary`], the statistics of a set of events.
//! - [`tiers`]: minute and hour summaries, and how a window splits into them.
//! - [`series`]: statistics bucket by bucket, folded from those summaries.
//! - [`window`]: the canonical fold of a window, and its cache.
//! - [`limit`]: the per-aggregate field limit.
//! - [`fold`]: the one fold of an event into the aggregates (sources,
//!   summaries, `latest`, field limit), called by every store.
//! - [`expose`]: the kinds of materialized rows `expose` can ask for.
//! - [`auth`]: API keys, roles and key ids.
//! - [`event`]: events as appended to and read back from the log.

pub mod auth;
pub mod event;
pub mod expose;
pub mod fields;
pub mod fold;
pub mod limit;
pub mod series;
pub mod stats;
pub mod summary;
pub mod tiers;
pub mod time;
pub mod window;
pub mod write;

#[cfg(test)]
mod tidy_tests;
