//! Online rebuild of the DynamoDB store's aggregates from the event log,
//! while writes and the stream aggregator go on.
//!
//! The rebuild fills a fresh generation of summaries and then switches the
//! live generation to it in one commit:
//! 1. It allocates generation `g` and records a cut `c` a little ahead of
//!    its clock (the margin covers clock skew between machines). From then
//!    on the aggregator adds events received after `c` to `g` as well as to
//!    the live generation.
//! 2. It waits until `c` plus a settling time has passed, so every event
//!    received at or before `c` is in the log (a write stamps
//!    `received_at` before its put; the settling time bounds a put's
//!    duration).
//! 3. It reads every log shard (paged queries) and folds the events
//!    received at or before `c` into minute and hour summaries.
//! 4. It merges them into `g` (the aggregator's additions are disjoint:
//!    received after `c`), a transaction's worth at a time.
//! 5. It makes `g` live with `floor = c`, re-rendering the rows in the same
//!    commit. Stream records of events received at or before `c` that
//!    arrive later are then skipped: the rebuild counted them.
//!
//! 6. It deletes the summaries of every older generation (the one it
//!    replaced, and any a dead rebuild left half-built): after the switch no
//!    commit can write them, since every commit re-reads the state.
//!
//! Each event is therefore counted once in `g`. A rebuild that dies leaves
//! its generation unfinished and the state marked: the next one refuses to
//! start unless forced, and never reuses a generation.

use crate::control::{RebuildRequests, RebuildState};
use crate::stream::{render, retry_conflicts};
use crate::worker::Clock;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use sygno_shared::domain::aggregates::event_fields;
use sygno_shared::domain::series::Summary;
use sygno_shared::domain::tiers::TierKey;
use sygno_shared::domain::time::{format_rfc3339, window_end, Millis};
use sygno_shared::store::dynamo::state::{
    LatestEvent, NextGeneration, StateCommit, MAX_SUMMARIES_PER_COMMIT,
};
use sygno_shared::store::dynamo::{DynamoStore, LOG_SHARDS};
use sygno_shared::store::StoreError;

/// Timing of a rebuild.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How far ahead of this machine's clock the cut lies: more than the
    /// clock skew between this machine and the writers.
    pub margin: Duration,
    /// How long after the cut the log is read: more than any write takes.
    pub settle: Duration,
    /// Start even if another rebuild seems to be running (it was abandoned).
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            margin: Duration::from_secs(5),
            settle: Duration::from_secs(30),
            force: false,
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub generation: u64,
    /// Events read from the log (at or before the cut).
    pub events: u64,
    /// Summaries written.
    pub summaries: usize,
    pub cut: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(
        "a rebuild is already in progress (generation {generation}, started {started}); \
         if it was abandoned, run again with --force"
    )]
    InProgress { generation: u64, started: String },
    #[error("another rebuild took over generation {0}")]
    Superseded(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Progress of a rebuild, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Generation allocated; waiting for the cut to settle.
    Started { generation: u64, cut: Millis },
    /// Events read from the log so far.
    Read(u64),
    /// Summaries merged so far, of the total.
    Merged(usize, usize),
    /// Generation `g` is live; older generations' summaries deleted.
    Cleaned { deleted: usize },
}

/// Rebuilds every aggregate from the log (see the module docs).
pub async fn rebuild(
    store: &DynamoStore,
    clock: &Clock,
    options: Options,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report, RebuildError> {
    let margin = millis(options.margin);
    let (generation, cut) = start(store, clock, margin, options.force).await?;
    progress(Progress::Started { generation, cut });

    let ready_at = cut + millis(options.settle);
    loop {
        let now = clock();
        if now >= ready_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(
            u64::try_from(ready_at - now + 1).unwrap_or(1).min(1_000),
        ))
        .await;
    }

    let (summaries, latest, events) = read_log(store, generation, cut, progress).await?;
    let total = summaries.len();
    let keys: Vec<TierKey> = summaries.keys().copied().collect();
    let mut merged = 0;
    for chunk in keys.chunks(MAX_SUMMARIES_PER_COMMIT) {
        merge(store, generation, chunk, &summaries).await?;
        merged += chunk.len();
        progress(Progress::Merged(merged, total));
    }
    switch(store, clock, generation, cut, latest).await?;
    let mut deleted = 0;
    for old in 0..generation {
        deleted += store.delete_generation(old).await?;
    }
    progress(Progress::Cleaned { deleted });
    Ok(Report {
        generation,
        events,
        summaries: total,
        cut,
    })
}

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX / 4)
}

/// Allocates the next generation and sets the cut.
async fn start(
    store: &DynamoStore,
    clock: &Clock,
    margin: Millis,
    force: bool,
) -> Result<(u64, Millis), RebuildError> {
    let started = retry_conflicts(|| async {
        let state = store.read_state().await?;
        if let (Some(next), false) = (&state.next, force) {
            return Ok(Err(RebuildError::InProgress {
                generation: next.generation,
                started: format_rfc3339(next.started_at),
            }));
        }
        let now = clock();
        let generation = state.allocated.max(state.generation) + 1;
        let cut = now + margin;
        let mut next = state.clone();
        next.version += 1;
        next.allocated = generation;
        next.next = Some(NextGeneration {
            generation,
            cut,
            started_at: now,
            latest: None,
        });
        store
            .commit_state(StateCommit {
                state: &next,
                summaries: &[],
                rows: None,
            })
            .await?;
        Ok(Ok((generation, cut)))
    })
    .await?;
    started
}

type Folded = (BTreeMap<TierKey, Summary>, Option<LatestEvent>, u64);

/// Folds every event received at or before `cut` into `generation`.
async fn read_log(
    store: &DynamoStore,
    generation: u64,
    cut: Millis,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Folded, RebuildError> {
    let mut summaries: BTreeMap<TierKey, Summary> = BTreeMap::new();
    let mut latest = None;
    let mut events = 0u64;
    for shard in 0..LOG_SHARDS {
        let mut cursor = None;
        loop {
            let (items, next) = store.read_log_page(shard, cursor).await?;
            for item in items.iter().filter(|i| i.received_at <= cut) {
                let fields = event_fields(&item.data).unwrap_or_default();
                for key in TierKey::of_event(generation, item.event_time) {
                    summaries.entry(key).or_default().record(&fields);
                }
                LatestEvent::later(&mut latest, &item.latest());
                events += 1;
            }
            progress(Progress::Read(events));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok((summaries, latest, events))
}

/// Adds the rebuilt summaries of `keys` to what `generation` holds.
async fn merge(
    store: &DynamoStore,
    generation: u64,
    keys: &[TierKey],
    rebuilt: &BTreeMap<TierKey, Summary>,
) -> Result<(), RebuildError> {
    let ours = retry_conflicts(|| async {
        let state = store.read_state().await?;
        if state.next.as_ref().map(|n| n.generation) != Some(generation) {
            return Ok(false);
        }
        let mut stored: HashMap<TierKey, Summary> = store.read_summaries(keys).await?;
        for key in keys {
            if let Some(summary) = rebuilt.get(key) {
                stored.entry(*key).or_default().merge(summary);
            }
        }
        let mut next = state;
        next.version += 1;
        let summaries: Vec<(TierKey, Summary)> = stored.into_iter().collect();
        store
            .commit_state(StateCommit {
                state: &next,
                summaries: &summaries,
                rows: None,
            })
            .await?;
        Ok(true)
    })
    .await?;
    if ours {
        Ok(())
    } else {
        Err(RebuildError::Superseded(generation))
    }
}

/// Makes `generation` live and renders its rows.
async fn switch(
    store: &DynamoStore,
    clock: &Clock,
    generation: u64,
    cut: Millis,
    latest: Option<LatestEvent>,
) -> Result<(), RebuildError> {
    let ours = retry_conflicts(|| async {
        let state = store.read_state().await?;
        let Some(next_generation) = state.next.clone().filter(|n| n.generation == generation)
        else {
            return Ok(false);
        };
        let mut next = state.clone();
        next.version += 1;
        next.generation = generation;
        next.floor = cut;
        next.latest = next_generation.latest;
        if let Some(latest) = &latest {
            LatestEvent::later(&mut next.latest, latest);
        }
        next.next = None;
        let end = window_end(clock()).max(state.rendered_end);
        let rows = render(store, &next, &HashMap::new(), end).await?;
        next.rendered_end = end;
        store
            .commit_state(StateCommit {
                state: &next,
                summaries: &[],
                rows: Some(&rows),
            })
            .await?;
        Ok(true)
    })
    .await?;
    if ours {
        Ok(())
    } else {
        Err(RebuildError::Superseded(generation))
    }
}

/// Serves `POST /admin/rebuild` for a server on the DynamoDB store: runs a
/// rebuild per request, reporting through the request's status
/// (`processed` = events read, `checkpoint` = the new generation).
pub async fn serve_requests(
    store: DynamoStore,
    clock: Clock,
    options: Options,
    mut requests: RebuildRequests,
) {
    while requests.next().await.is_some() {
        tracing::info!("rebuild started");
        let status = requests.status();
        let mut report = |p: Progress| {
            if let Progress::Read(read) = p {
                status.send_modify(|s| {
                    s.processed = read;
                    s.target = read;
                });
            }
        };
        let outcome = rebuild(&store, &clock, options, &mut report).await;
        let finished_at = Some(format_rfc3339(clock()));
        match outcome {
            Ok(done) => {
                tracing::info!(
                    generation = done.generation,
                    events = done.events,
                    "rebuild finished"
                );
                status.send_modify(|s| {
                    s.state = RebuildState::Done;
                    s.finished_at = finished_at;
                    s.processed = done.events;
                    s.target = done.events;
                    s.checkpoint = done.generation;
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "rebuild failed");
                status.send_modify(|s| {
                    s.state = RebuildState::Failed;
                    s.finished_at = finished_at;
                    s.error = Some(e.to_string());
                });
            }
        }
    }
}
