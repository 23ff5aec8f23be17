//! The stream aggregator: folds DynamoDB Streams records of the event log
//! into the DynamoDB store's summaries and rows, exactly once.
//!
//! Every commit is one `TransactWriteItems`: the state item (conditional on
//! the version read, carrying one stream checkpoint per log shard), the
//! touched minute and hour summaries, and the re-rendered rows. See
//! `sygno_shared::store::dynamo::state` for why that is exactly once under
//! redelivery, bisection and parallel shards.
//!
//! # Layout
//! - [`plan`](mod@plan): pure: which events are new and what they change.
//! - [`records`]: stream records (as Lambda delivers them) to events.
//! - [`lambda`]: the `sygno-aggregator` Lambda function's handler.
//! - [`poller`]: the same, driven by a DynamoDB Streams poller (`sygno
//!   serve --store dynamodb`).
//! - [`rebuild`]: an online rebuild from the log into a new generation.
//! - here: [`apply`], [`roll`] and rendering, over the store.

pub mod lambda;
pub mod plan;
pub mod poller;
pub mod rebuild;
pub mod records;

use crate::worker::render_rows_with;
use plan::{plan, runs, StreamEvent};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::series::Summary;
use sygno_shared::domain::tiers::{Pieces, Tier, TierKey};
use sygno_shared::domain::time::{window_end, Millis, DAY_MS, WEEK_MS};
use sygno_shared::store::dynamo::state::{AggState, StateCommit, MAX_SUMMARIES_PER_COMMIT};
use sygno_shared::store::dynamo::DynamoStore;
use sygno_shared::store::{Result, StoreError};

/// Attempts per commit before giving up (each conflict means another
/// commit landed first, so the system as a whole made progress).
const COMMIT_ATTEMPTS: u32 = 40;

/// What a call to [`apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: usize,
    pub skipped: usize,
    pub unreadable: usize,
    /// Transactions written.
    pub commits: usize,
}

/// [`apply`] stopped: events before `first_unapplied` are committed.
#[derive(Debug, thiserror::Error)]
#[error("applying stream events failed at event {first_unapplied}")]
pub struct ApplyError {
    pub first_unapplied: usize,
    pub done: Outcome,
    #[source]
    pub error: StoreError,
}

/// Applies `events` (in stream order) and re-renders the rows, committing
/// runs of events that each fit one transaction. Only the last run renders
/// the rows (rendering reads a week of summaries), and it commits whenever
/// an earlier run did, so the rows always end up re-rendered.
pub async fn apply(
    store: &DynamoStore,
    events: &[StreamEvent],
    now: Millis,
) -> Result<Outcome, ApplyError> {
    let mut done = Outcome::default();
    let runs = runs(events, MAX_SUMMARIES_PER_COMMIT);
    let last = runs.len().saturating_sub(1);
    for (i, run) in runs.into_iter().enumerate() {
        let start = run.start;
        let render = match (i == last, done.commits) {
            (false, _) => Render::Never,
            (true, 0) => Render::IfChanged,
            (true, _) => Render::Always,
        };
        match commit_run(store, &events[run], now, render).await {
            Ok(outcome) => {
                done.applied += outcome.applied;
                done.skipped += outcome.skipped;
                done.unreadable += outcome.unreadable;
                done.commits += outcome.commits;
            }
            Err(error) => {
                return Err(ApplyError {
                    first_unapplied: start,
                    done,
                    error,
                })
            }
        }
    }
    Ok(done)
}

/// Whether a run's commit re-renders the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    /// No: a later run will.
    Never,
    /// Only if this run changes something.
    IfChanged,
    /// Yes, committing even if this run changes nothing (an earlier did).
    Always,
}

async fn commit_run(
    store: &DynamoStore,
    events: &[StreamEvent],
    now: Millis,
    render_rows: Render,
) -> Result<Outcome> {
    retry_conflicts(|| async {
        let state = store.read_state().await?;
        let plan = plan(&state, events);
        let commit = !plan.is_empty() || render_rows == Render::Always;
        let outcome = Outcome {
            applied: plan.applied,
            skipped: plan.skipped,
            unreadable: plan.unreadable,
            commits: usize::from(commit),
        };
        if !commit {
            return Ok(outcome);
        }
        let keys: Vec<TierKey> = plan.deltas.keys().copied().collect();
        let mut merged = store.read_summaries(&keys).await?;
        for (key, delta) in &plan.deltas {
            merged.entry(*key).or_default().merge(delta);
        }
        let mut next = plan.state;
        next.version = state.version + 1;
        let rows = if render_rows == Render::Never {
            None
        } else {
            let end = window_end(now).max(state.rendered_end);
            next.rendered_end = end;
            Some(render(store, &next, &merged, end).await?)
        };
        let summaries: Vec<(TierKey, Summary)> = merged.into_iter().collect();
        store
            .commit_state(StateCommit {
                state: &next,
                summaries: &summaries,
                rows: rows.as_deref(),
            })
            .await?;
        Ok(outcome)
    })
    .await
}

/// Re-renders the rows if the windows moved past the stored ones (no
/// events needed). Returns whether it committed.
pub async fn roll(store: &DynamoStore, now: Millis) -> Result<bool> {
    let end = window_end(now);
    retry_conflicts(|| async {
        let state = store.read_state().await?;
        if state.rendered_end >= end {
            return Ok(false);
        }
        let mut next = state.clone();
        next.version += 1;
        next.rendered_end = end;
        let rows = render(store, &next, &HashMap::new(), end).await?;
        store
            .commit_state(StateCommit {
                state: &next,
                summaries: &[],
                rows: Some(&rows),
            })
            .await?;
        Ok(true)
    })
    .await
}

/// Runs `attempt` again while it fails with a conflict, with jittered
/// backoff.
pub(crate) async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(StoreError::Conflict(why)) if tries + 1 < COMMIT_ATTEMPTS => {
                tries += 1;
                tracing::debug!(%why, tries, "aggregate commit conflicted; retrying");
                let jitter = rand::rng().random_range(0..10 * u64::from(tries.min(10)) + 5);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
            other => return other,
        }
    }
}

/// The five rows of `state`'s live generation with windows ending at
/// `end`; `fresh` holds summaries about to be committed, which win over
/// the stored ones.
pub(crate) async fn render(
    store: &DynamoStore,
    state: &AggState,
    fresh: &HashMap<TierKey, Summary>,
    end: Millis,
) -> Result<Vec<(ExposeKind, String)>> {
    let generation = state.generation;
    let windows = [Pieces::of(end, DAY_MS), Pieces::of(end, WEEK_MS)];
    let mut stored: BTreeMap<(Tier, i64), Summary> = BTreeMap::new();
    let mut minute_ranges: Vec<std::ops::Range<i64>> =
        windows.iter().flat_map(|w| w.minutes.clone()).collect();
    minute_ranges.sort_by_key(|r| (r.start, r.end));
    minute_ranges.dedup();
    for range in minute_ranges {
        for (index, summary) in store
            .query_summaries(generation, Tier::Minute, range)
            .await?
        {
            stored.insert((Tier::Minute, index), summary);
        }
    }
    let hours = windows
        .iter()
        .map(|w| w.hours.clone())
        .filter(|r| !r.is_empty())
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end));
    if let Some(hours) = hours {
        for (index, summary) in store.query_summaries(generation, Tier::Hour, hours).await? {
            stored.insert((Tier::Hour, index), summary);
        }
    }
    for (key, summary) in fresh {
        if key.generation == generation {
            stored.insert((key.tier, key.index), summary.clone());
        }
    }
    let fold = |pieces: &Pieces| {
        let mut out = Summary::default();
        let ranges = pieces
            .minutes
            .iter()
            .map(|r| (Tier::Minute, r.clone()))
            .chain(std::iter::once((Tier::Hour, pieces.hours.clone())));
        for (tier, range) in ranges {
            for (_, summary) in stored.range((tier, range.start)..(tier, range.end)) {
                out.merge(summary);
            }
        }
        out
    };
    let latest = state.latest.as_ref().map(|l| l.to_latest());
    Ok(render_rows_with(end, latest.as_ref(), |span| {
        if span == DAY_MS {
            fold(&windows[0])
        } else {
            fold(&windows[1])
        }
    }))
}

#[cfg(test)]
mod tests;
