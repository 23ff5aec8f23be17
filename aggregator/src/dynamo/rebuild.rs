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
//! 6. It waits the settling time again and deletes the summaries of every
//!    older generation (the one it replaced, and any a dead rebuild left
//!    half-built): by then no commit can write them, since every commit
//!    reads the state item at most `STATE_READ_MAX_AGE` before it is sent
//!    and a request times out after 20 s.
//!
//! Each event is therefore counted once in `g`. A running rebuild renews
//! its sign of life (`alive_at`) between its steps (settling, each log
//! page, each merge) once [`HEARTBEAT`] has passed; one that dies (a
//! stopped server, a timeout) leaves its generation unfinished and the
//! state marked. The next rebuild refuses to start while the mark is
//! younger than [`LEASE`] (unless forced) and takes over after that, so an
//! abandoned rebuild never blocks later ones, including those started over
//! HTTP (which cannot force); no generation is ever reused.

use crate::control::{RebuildRequests, RebuildState};
use crate::dynamo::{publish, retry_conflicts_with, Cache, Publish, REBUILD_PATIENCE};
use crate::Clock;
use std::collections::BTreeMap;
use std::time::Duration;
use sygno_shared::domain::fold::{fold, Batch, LatestKey, Scope, ScopeState, SummaryKey};
use sygno_shared::domain::summary::Summary;
use sygno_shared::domain::time::{format_rfc3339, window_end, Millis};
use sygno_shared::store::dynamo::state::{
    Commit, NextGeneration, ScopeItem, Versioned, MAX_TRANSACTION_ITEMS,
};
use sygno_shared::store::dynamo::{DynamoStore, LOG_SHARDS};
use sygno_shared::store::StoreError;
use sygno_shared::views::render_latest;

/// How often a running rebuild renews its sign of life.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// How long after its last sign of life a rebuild counts as abandoned.
pub const LEASE: Duration = Duration::from_secs(120);

/// Timing of a rebuild.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `SYGNO_MAX_FIELDS`: distinct fields per aggregate and window.
    pub max_fields: usize,
    /// How far ahead of this machine's clock the cut lies: more than the
    /// clock skew between this machine and the writers.
    pub margin: Duration,
    /// How long after the cut the log is read, and after the switch the
    /// old generation is deleted: more than any write or commit takes
    /// (`crate::dynamo::STATE_READ_MAX_AGE` plus a request's 20 s).
    pub settle: Duration,
    /// Start even if another rebuild seems to be running (it was abandoned).
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_fields: sygno_shared::domain::limit::DEFAULT_MAX_FIELDS,
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
    /// Log items that could not be aggregated (not events, or `data` not
    /// a JSON object), skipped and logged by key, as the stream does.
    pub skipped: u64,
    /// Summaries written.
    pub summaries: usize,
    pub cut: Millis,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(
        "a rebuild is already in progress (generation {generation}, started {started}); \
         if it was abandoned, it is taken over two minutes after its last sign of life, \
         or run again with --force"
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
    let mut lease = Lease::new(generation);
    progress(Progress::Started { generation, cut });

    let ready_at = cut + millis(options.settle);
    loop {
        lease.renew_if_due(store, clock).await;
        let now = clock();
        if now >= ready_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(
            u64::try_from(ready_at - now + 1).unwrap_or(1).min(1_000),
        ))
        .await;
    }

    let (rebuilt, latest, events, skipped) =
        read_log(store, clock, &mut lease, cut, options.max_fields, progress).await?;
    let total = rebuilt.summaries.len() + rebuilt.scopes.len();
    let mut merged = 0;
    let keys: Vec<SummaryKey> = rebuilt.summaries.keys().cloned().collect();
    let scopes: Vec<Scope> = rebuilt.scopes.keys().cloned().collect();
    let mut done = |n: usize| {
        merged += n;
        progress(Progress::Merged(merged, total));
    };
    in_transactions(
        &keys,
        |chunk| merge_summaries(store, generation, chunk, &rebuilt.summaries),
        &mut done,
        (store, clock, &mut lease),
    )
    .await?;
    in_transactions(
        &scopes,
        |chunk| merge_scopes(store, generation, chunk, &rebuilt.scopes, &latest),
        &mut done,
        (store, clock, &mut lease),
    )
    .await?;
    switch(store, clock, generation, cut, options.max_fields).await?;
    // A commit planned on the state before the switch may still write
    // the old generation for a while (`STATE_READ_MAX_AGE` plus a
    // request's timeout): delete it once no such commit can be left.
    tokio::time::sleep(options.settle).await;
    let mut deleted = 0;
    for old in 0..generation {
        deleted += store.delete_generation(old).await?;
    }
    progress(Progress::Cleaned { deleted });
    Ok(Report {
        generation,
        events,
        skipped,
        summaries: rebuilt.summaries.len(),
        cut,
    })
}

/// A running rebuild's claim on its generation, renewed between its steps.
struct Lease {
    generation: u64,
    renewed: std::time::Instant,
}

impl Lease {
    fn new(generation: u64) -> Self {
        Lease {
            generation,
            renewed: std::time::Instant::now(),
        }
    }

    /// Renews the sign of life if [`HEARTBEAT`] has passed since the last.
    async fn renew_if_due(&mut self, store: &DynamoStore, clock: &Clock) {
        if self.renewed.elapsed() < HEARTBEAT {
            return;
        }
        self.renewed = std::time::Instant::now();
        let generation = self.generation;
        let renewed = retry_conflicts_with(REBUILD_PATIENCE, || async {
            let state = store.read_state().await?;
            let Some(next) = state.next.as_ref().filter(|n| n.generation == generation) else {
                return Ok(false);
            };
            let mut renewed = state.clone();
            renewed.version += 1;
            renewed.next = Some(NextGeneration {
                alive_at: clock(),
                ..next.clone()
            });
            store.write_state(&renewed).await?;
            Ok(true)
        })
        .await;
        if let Err(e) = renewed {
            // Superseded or switched shows at the switch; this is a warning.
            tracing::warn!(error.cause_chain = ?e, "renewing the rebuild's lease failed");
        }
    }
}

/// Runs `merge` over `items` a transaction's worth at a time, halving a
/// chunk DynamoDB refuses for its size (wide summaries are several items
/// each, and a transaction takes 100 items and 4 MB); `done(n)` after each
/// committed chunk of `n`.
async fn in_transactions<'a, T, F, Fut>(
    items: &'a [T],
    mut merge: F,
    done: &mut impl FnMut(usize),
    (store, clock, lease): (&DynamoStore, &Clock, &mut Lease),
) -> Result<(), RebuildError>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<(), RebuildError>>,
{
    let mut pending: Vec<&[T]> = items.chunks(MAX_TRANSACTION_ITEMS - 1).rev().collect();
    while let Some(chunk) = pending.pop() {
        lease.renew_if_due(store, clock).await;
        match merge(chunk).await {
            Err(RebuildError::Store(StoreError::Rejected(_))) if chunk.len() > 1 => {
                let (head, tail) = chunk.split_at(chunk.len() / 2);
                pending.extend([tail, head]);
            }
            outcome => {
                outcome?;
                done(chunk.len());
            }
        }
    }
    Ok(())
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
    let started = retry_conflicts_with(REBUILD_PATIENCE, || async {
        let state = store.read_state().await?;
        let now = clock();
        if let (Some(next), false) = (&state.next, force) {
            if now.saturating_sub(next.alive_at) < millis(LEASE) {
                return Ok(Err(RebuildError::InProgress {
                    generation: next.generation,
                    started: format_rfc3339(next.started_at),
                }));
            }
            tracing::warn!(
                generation = next.generation,
                alive_at = %format_rfc3339(next.alive_at),
                "taking over an abandoned rebuild"
            );
        }
        let generation = state.allocated.max(state.generation) + 1;
        let cut = now + margin;
        let mut next = state.clone();
        next.version += 1;
        next.allocated = generation;
        next.next = Some(NextGeneration {
            generation,
            cut,
            started_at: now,
            alive_at: now,
        });
        store.write_state(&next).await?;
        Ok(Ok((generation, cut)))
    })
    .await?;
    started
}

/// The log up to the cut, folded: scope states and summaries, the
/// `latest` row of each aggregate, and the events read.
/// The fold of the log: summaries and states, `latest` rows, events read
/// and items skipped.
type Folded = (Batch, BTreeMap<Scope, (LatestKey, String)>, u64, u64);

/// Reads every log shard (a paged `Query` each) and folds the events
/// received at or before `cut` with the one fold. Shards are read one
/// after another, so where an aggregate reached its field limit, which
/// fields it kept may differ from what the stream's order kept.
async fn read_log(
    store: &DynamoStore,
    clock: &Clock,
    lease: &mut Lease,
    cut: Millis,
    max_fields: usize,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Folded, RebuildError> {
    let mut batch = Batch::default();
    let mut latest: BTreeMap<Scope, (LatestKey, String)> = BTreeMap::new();
    let mut events = 0u64;
    let mut skipped = 0u64;
    for shard in 0..LOG_SHARDS {
        let mut cursor = None;
        loop {
            lease.renew_if_due(store, clock).await;
            let page = store.read_log_page(shard, cursor).await?;
            for (sk, why) in &page.skipped {
                skipped += 1;
                tracing::warn!(shard, sk = %sk, reason = why, "a log item that cannot be aggregated was skipped");
            }
            for item in page.events.iter().filter(|i| i.received_at <= cut) {
                let folded = fold(&mut batch, &item.as_ref(), max_fields);
                if !folded.latest_of.is_empty() {
                    let key = LatestKey::of(&item.as_ref());
                    let doc = render_latest(&item.as_ref());
                    for scope in folded.latest_of {
                        latest.insert(scope, (key.clone(), doc.clone()));
                    }
                }
                events += 1;
            }
            progress(Progress::Read(events));
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok((batch, latest, events, skipped))
}

/// Merges rebuilt summaries into the next generation's (which hold the
/// events received after the cut), one transaction per call.
async fn merge_summaries(
    store: &DynamoStore,
    generation: u64,
    keys: &[SummaryKey],
    rebuilt: &BTreeMap<SummaryKey, Summary>,
) -> Result<(), RebuildError> {
    let ours = retry_conflicts_with(REBUILD_PATIENCE, || async {
        let state = store.read_state().await?;
        if state.next.as_ref().map(|n| n.generation) != Some(generation) {
            return Ok(false);
        }
        let wanted: Vec<(u64, SummaryKey)> = keys.iter().map(|k| (generation, k.clone())).collect();
        let mut stored = store.read_summaries(&wanted).await?;
        for key in &wanted {
            if let Some(summary) = rebuilt.get(&key.1) {
                stored.entry(key.clone()).or_default().value.merge(summary);
            }
        }
        let summaries: Vec<((u64, SummaryKey), Versioned<Summary>)> = stored.into_iter().collect();
        store
            .commit(Commit {
                summaries: &summaries,
                ..Commit::default()
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

/// Merges rebuilt scope states into the next generation's (the events
/// received after the cut), one transaction per call.
async fn merge_scopes(
    store: &DynamoStore,
    generation: u64,
    scopes: &[Scope],
    rebuilt: &BTreeMap<Scope, ScopeState>,
    latest: &BTreeMap<Scope, (LatestKey, String)>,
) -> Result<(), RebuildError> {
    let ours = retry_conflicts_with(REBUILD_PATIENCE, || async {
        let state = store.read_state().await?;
        if state.next.as_ref().map(|n| n.generation) != Some(generation) {
            return Ok(false);
        }
        let wanted: Vec<(u64, Scope)> = scopes.iter().map(|s| (generation, s.clone())).collect();
        let stored = store.read_scopes(&wanted).await?;
        let mut items: Vec<((u64, Scope), ScopeItem)> = Vec::with_capacity(wanted.len());
        for key in wanted {
            let mut item: ScopeItem = stored.get(&key).cloned().unwrap_or_default();
            if let Some(ours) = rebuilt.get(&key.1) {
                if let Some((latest_key, doc)) = latest.get(&key.1) {
                    if item.state.latest.as_ref().is_none_or(|l| l < latest_key) {
                        item.latest = Some(doc.clone());
                    }
                }
                item.state.merge(ours);
            }
            items.push((key, item));
        }
        store
            .commit(Commit {
                scopes: &items,
                ..Commit::default()
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

/// Makes `generation` live and renders every aggregate's rows from it.
async fn switch(
    store: &DynamoStore,
    clock: &Clock,
    generation: u64,
    cut: Millis,
    max_fields: usize,
) -> Result<(), RebuildError> {
    let switched = retry_conflicts_with(REBUILD_PATIENCE, || async {
        let state = store.read_state().await?;
        if state
            .next
            .as_ref()
            .is_none_or(|n| n.generation != generation)
        {
            return Ok(None);
        }
        let mut next = state.clone();
        next.version += 1;
        next.generation = generation;
        next.floor = cut;
        next.next = None;
        let end = window_end(clock()).max(state.rendered_end);
        next.rendered_end = end;
        store.write_state(&next).await?;
        Ok(Some(end))
    })
    .await?;
    let Some(end) = switched else {
        return Err(RebuildError::Superseded(generation));
    };
    let items: BTreeMap<Scope, ScopeItem> =
        store.query_scopes(generation).await?.into_iter().collect();
    publish(
        store,
        &mut Cache::default(),
        Publish {
            generation,
            items: &items,
            fresh: &BTreeMap::new(),
            end,
            latest: true,
            max_fields,
        },
    )
    .await?;
    Ok(())
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
