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

/// The stream aggregator of one Lambda container or one poller: the store,
/// and the summaries its last commit rendered the rows from. Those stay
/// valid while the state item's version is the one committed with them
/// (summaries change only in commits, and every commit bumps the version),
/// so while no other shard's invocation commits in between, a commit in the
/// same minute reads only the state item instead of a week of summaries.
#[derive(Debug)]
pub struct Aggregator {
    store: DynamoStore,
    rendered: tokio::sync::Mutex<Option<Rendered>>,
}

/// Stored summaries of one generation by tier and index.
type Summaries = BTreeMap<(Tier, i64), Summary>;

/// Rendered rows, by kind.
type Rows = Vec<(ExposeKind, String)>;

/// What the rows were last rendered from.
#[derive(Debug)]
struct Rendered {
    version: u64,
    generation: u64,
    end: Millis,
    /// Every stored summary of the windows' pieces (absent: none stored).
    summaries: Summaries,
}

impl Rendered {
    /// The cache, if it still describes `state` with windows ending at `end`.
    fn valid_for(held: Option<Rendered>, state: &AggState, end: Millis) -> Option<Rendered> {
        held.filter(|h| {
            h.version == state.version && h.generation == state.generation && h.end == end
        })
    }

    /// True when `key` lies in the windows' pieces, so its stored summary
    /// (or its absence) is known.
    fn covers(&self, key: &TierKey) -> bool {
        key.generation == self.generation
            && match key.tier {
                Tier::Minute => window_pieces(self.end)
                    .iter()
                    .any(|p| p.minutes.iter().any(|r| r.contains(&key.index))),
                Tier::Hour => hours_read(self.end).contains(&key.index),
            }
    }
}

fn window_pieces(end: Millis) -> [Pieces; 2] {
    [Pieces::of(end, DAY_MS), Pieces::of(end, WEEK_MS)]
}

/// The hour summaries [`read_window`] reads: the windows' whole hours and
/// the partial hour at either end (not folded, but the hours new events
/// land in, so a cached commit need not read them).
fn hours_read(end: Millis) -> std::ops::Range<i64> {
    let [day, week] = window_pieces(end);
    let whole = [day.hours, week.hours]
        .into_iter()
        .filter(|r| !r.is_empty())
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end));
    match whole {
        Some(hours) => hours.start - 1..hours.end + 1,
        None => 0..0,
    }
}

impl Aggregator {
    pub fn new(store: DynamoStore) -> Self {
        Aggregator {
            store,
            rendered: tokio::sync::Mutex::new(None),
        }
    }

    pub fn store(&self) -> &DynamoStore {
        &self.store
    }

    /// See [`apply`].
    pub async fn apply(&self, events: &[StreamEvent], now: Millis) -> Result<Outcome, ApplyError> {
        let mut rendered = self.rendered.lock().await;
        apply(&self.store, &mut rendered, events, now).await
    }

    /// See [`roll`].
    pub async fn roll(&self, now: Millis) -> Result<bool> {
        let mut rendered = self.rendered.lock().await;
        roll(&self.store, &mut rendered, now).await
    }
}

/// Applies `events` (in stream order) and re-renders the rows, committing
/// runs of events that each fit one transaction. Only the last run renders
/// the rows (rendering reads a week of summaries), and it commits whenever
/// an earlier run did, so the rows always end up re-rendered.
async fn apply(
    store: &DynamoStore,
    rendered: &mut Option<Rendered>,
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
        match commit_run(store, rendered, &events[run], now, render).await {
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
    rendered: &mut Option<Rendered>,
    events: &[StreamEvent],
    now: Millis,
    render_rows: Render,
) -> Result<Outcome> {
    let mut tries = 0;
    loop {
        let result = commit_attempt(store, rendered, events, now, render_rows).await;
        if !retry_after(&result, &mut tries).await {
            return result;
        }
    }
}

async fn commit_attempt(
    store: &DynamoStore,
    rendered: &mut Option<Rendered>,
    events: &[StreamEvent],
    now: Millis,
    render_rows: Render,
) -> Result<Outcome> {
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
    let end = window_end(now).max(state.rendered_end);
    let cached = Rendered::valid_for(rendered.take(), &state, end);
    let (known, unknown): (Vec<TierKey>, Vec<TierKey>) = plan
        .deltas
        .keys()
        .partition(|k| cached.as_ref().is_some_and(|c| c.covers(k)));
    let mut merged = store.read_summaries(&unknown).await?;
    if let Some(cached) = &cached {
        for key in known {
            if let Some(summary) = cached.summaries.get(&(key.tier, key.index)) {
                merged.insert(key, summary.clone());
            }
        }
    }
    for (key, delta) in &plan.deltas {
        merged.entry(*key).or_default().merge(delta);
    }
    let mut next = plan.state;
    next.version = state.version + 1;
    let (rows, window) = if render_rows == Render::Never {
        (None, None)
    } else {
        next.rendered_end = end;
        let stored = match cached {
            Some(cached) => cached.summaries,
            None => read_window(store, next.generation, end).await?,
        };
        let (rows, window) = render_from(&next, stored, &merged, end);
        (Some(rows), Some(window))
    };
    let summaries: Vec<(TierKey, Summary)> = merged.into_iter().collect();
    store
        .commit_state(StateCommit {
            state: &next,
            summaries: &summaries,
            rows: rows.as_deref(),
        })
        .await?;
    *rendered = window.map(|summaries| Rendered {
        version: next.version,
        generation: next.generation,
        end,
        summaries,
    });
    Ok(outcome)
}

/// Re-renders the rows if the windows moved past the stored ones (no
/// events needed). Returns whether it committed.
async fn roll(store: &DynamoStore, rendered: &mut Option<Rendered>, now: Millis) -> Result<bool> {
    let mut tries = 0;
    loop {
        let result = roll_attempt(store, rendered, window_end(now)).await;
        if !retry_after(&result, &mut tries).await {
            return result;
        }
    }
}

async fn roll_attempt(
    store: &DynamoStore,
    rendered: &mut Option<Rendered>,
    end: Millis,
) -> Result<bool> {
    let state = store.read_state().await?;
    if state.rendered_end >= end {
        return Ok(false);
    }
    let mut next = state.clone();
    next.version += 1;
    next.rendered_end = end;
    *rendered = None;
    let stored = read_window(store, next.generation, end).await?;
    let (rows, window) = render_from(&next, stored, &HashMap::new(), end);
    store
        .commit_state(StateCommit {
            state: &next,
            summaries: &[],
            rows: Some(&rows),
        })
        .await?;
    *rendered = Some(Rendered {
        version: next.version,
        generation: next.generation,
        end,
        summaries: window,
    });
    Ok(true)
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
        let result = attempt().await;
        if !retry_after(&result, &mut tries).await {
            return result;
        }
    }
}

/// Whether to try a commit again after `result`: yes after a conflict,
/// while attempts remain, once a jittered pause has passed. (The commits
/// that keep a render cache loop on this themselves: a closure lending
/// them the cache would not be `Send`.)
async fn retry_after<T>(result: &Result<T>, tries: &mut u32) -> bool {
    let Err(StoreError::Conflict(why)) = result else {
        return false;
    };
    if *tries + 1 >= COMMIT_ATTEMPTS {
        return false;
    }
    *tries += 1;
    tracing::debug!(%why, tries = *tries, "aggregate commit conflicted; retrying");
    let jitter = rand::rng().random_range(0..10 * u64::from((*tries).min(10)) + 5);
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    true
}

/// The five rows of `state`'s live generation with windows ending at
/// `end`, read from the store (`fresh`: summaries about to be committed,
/// which win over the stored ones).
pub(crate) async fn render(
    store: &DynamoStore,
    state: &AggState,
    fresh: &HashMap<TierKey, Summary>,
    end: Millis,
) -> Result<Rows> {
    let stored = read_window(store, state.generation, end).await?;
    Ok(render_from(state, stored, fresh, end).0)
}

/// Every stored summary of `generation` in the pieces of the windows
/// ending at `end`: up to three minute ranges and one hour range.
async fn read_window(store: &DynamoStore, generation: u64, end: Millis) -> Result<Summaries> {
    let windows = window_pieces(end);
    let mut stored = BTreeMap::new();
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
    for (index, summary) in store
        .query_summaries(generation, Tier::Hour, hours_read(end))
        .await?
    {
        stored.insert((Tier::Hour, index), summary);
    }
    Ok(stored)
}

/// The rows from `stored` with `fresh` laid over it; also returns the
/// summaries of the windows' pieces as they will be once committed.
fn render_from(
    state: &AggState,
    mut stored: Summaries,
    fresh: &HashMap<TierKey, Summary>,
    end: Millis,
) -> (Rows, Summaries) {
    let windows = window_pieces(end);
    for (key, summary) in fresh {
        if key.generation == state.generation {
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
    let rows = render_rows_with(end, latest.as_ref(), |span| {
        if span == DAY_MS {
            fold(&windows[0])
        } else {
            fold(&windows[1])
        }
    });
    (rows, stored)
}

#[cfg(test)]
mod tests;
