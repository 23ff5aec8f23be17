//! The stream aggregator: folds DynamoDB Streams records of the event log
//! into the DynamoDB store's summaries and rows, exactly once.
//!
//! Every commit is one `TransactWriteItems`: the applied marks of its
//! events (an item of its own per second of receipt) and the touched
//! aggregates' scope items and minute and hour summaries, each conditional
//! on the version read, so only commits that touch one aggregate contend;
//! the re-rendered rows follow it (conditional on their version). An event
//! whose mark is stored is skipped, so each applies exactly once in any
//! order, batching and concurrency of delivery (see ARCHITECTURE.md, "The
//! stream aggregator").
//!
//! # Layout
//! - [`plan`](mod@plan): pure: which events are new and what they change.
//! - [`records`]: stream records (as Lambda delivers them) to events.
//! - [`lambda`]: the `sygno-aggregator` Lambda function's handler.
//! - [`poller`]: the same, driven by a DynamoDB Streams poller (`sygno
//!   serve --store dynamodb`).
//! - [`rebuild`]: an online rebuild from the log into a new generation.
//! - here: [`Aggregator::apply`], [`Aggregator::roll`] and rendering,
//!   over the store.

pub mod lambda;
pub mod plan;
pub mod poller;
pub mod rebuild;
pub mod records;

use plan::{plan, runs, scopes_needed, seconds_needed, StreamEvent};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::Duration;
use sygno_shared::domain::fold::{LatestKey, Scope, ScopeState, SummaryKey};
use sygno_shared::domain::summary::Summary;
use sygno_shared::domain::time::{window_end, Millis};
use sygno_shared::domain::window::WindowCache;
use sygno_shared::store::dynamo::state::{
    recently_committed, row_version, AggState, Commit, MarksKey, RowsWrite, ScopeItem, Versioned,
    ALL_EVENTS_PARTS, MAX_TRANSACTION_ITEMS,
};
use sygno_shared::store::dynamo::DynamoStore;
use sygno_shared::store::{Result, StoreError};
use sygno_shared::telemetry::{self, metric};

/// Attempts per commit before giving up (each conflict means another
/// commit landed first, so the system as a whole made progress).
const COMMIT_ATTEMPTS: u32 = 40;

/// What a call to [`Aggregator::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: usize,
    pub skipped: usize,
    pub unreadable: usize,
    /// Events DynamoDB refused to aggregate (see [`Aggregator::apply`]).
    pub rejected: usize,
    /// Transactions written.
    pub commits: usize,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.applied += other.applied;
        self.skipped += other.skipped;
        self.unreadable += other.unreadable;
        self.rejected += other.rejected;
        self.commits += other.commits;
    }
}

/// [`Aggregator::apply`] stopped: events before `first_unapplied` are
/// committed.
#[derive(Debug, thiserror::Error)]
#[error("applying stream events failed at event {first_unapplied}")]
pub struct ApplyError {
    pub first_unapplied: usize,
    pub done: Outcome,
    #[source]
    pub error: StoreError,
}

/// How old the state item's read may be when a commit planned on it is
/// sent: older, the commit reads it again and goes on only if the
/// generations it planned on still hold. With the client's 20 s
/// operation timeout this bounds how long after a rebuild's switch a
/// commit can still write the generation it replaced (the rebuild waits
/// its settling time, 30 s by default, before deleting it).
pub const STATE_READ_MAX_AGE: Duration = Duration::from_secs(5);

/// The stream aggregator of one Lambda container or one poller: the store,
/// the field limit, and the window folds of its last render. An
/// aggregate's fold stays valid while its scope item's version is the one
/// this container last committed or rendered (its summaries change only
/// in commits, and every commit bumps it), so while no other invocation
/// commits that aggregate in between, rendering reads one or two
/// summaries per window instead of a week's.
#[derive(Debug)]
pub struct Aggregator {
    store: DynamoStore,
    max_fields: usize,
    /// The part of the all-events aggregate this aggregator's commits
    /// write (`ALL_EVENTS_PARTS`): chosen at random per container, so
    /// concurrent containers rarely share one.
    all: Scope,
    cache: tokio::sync::Mutex<Cache>,
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// The live generation the folds describe.
    generation: Option<u64>,
    /// Per aggregate, the scope item version its fold describes.
    versions: HashMap<Scope, u64>,
    windows: HashMap<Scope, WindowCache>,
}

impl Cache {
    /// Forgets every fold if the live generation is not theirs.
    fn check_generation(&mut self, generation: u64) {
        if self.generation != Some(generation) {
            self.windows.clear();
            self.versions.clear();
            self.generation = Some(generation);
        }
    }

    /// Forgets `scope`'s fold unless it describes `version` (0: absent).
    fn check(&mut self, scope: &Scope, version: u64) {
        if self.versions.get(scope) != Some(&version) {
            self.windows.remove(scope);
            self.versions.remove(scope);
        }
    }
}

impl Aggregator {
    pub fn new(store: DynamoStore, max_fields: usize) -> Self {
        let part = rand::rng().random_range(0..ALL_EVENTS_PARTS);
        Aggregator {
            store,
            max_fields,
            all: Scope::all_part(part),
            cache: tokio::sync::Mutex::new(Cache::default()),
        }
    }

    /// The same, writing part `part` of the all-events aggregate.
    pub fn with_all_events_part(self, part: u8) -> Self {
        Aggregator {
            all: Scope::all_part(part),
            ..self
        }
    }

    pub fn store(&self) -> &DynamoStore {
        &self.store
    }

    /// Applies `events` (in stream order) and re-renders the rows of the
    /// aggregates they touch, committing runs of events that each fit one
    /// transaction. Only the last run renders (rendering reads windows).
    ///
    /// A run that DynamoDB refuses for what it is (`StoreError::Rejected`:
    /// an item or the transaction over its size limits) is split in
    /// halves and retried; a single event it still refuses is logged,
    /// counted in `Outcome::rejected` and passed over (marked applied), so
    /// that it cannot stop the stream. It stays in the log.
    pub async fn apply(&self, events: &[StreamEvent], now: Millis) -> Result<Outcome, ApplyError> {
        telemetry::aggregator_read(events.iter().map(|e| e.item.received_at).min(), now);
        let result = self.apply_runs(events, now).await;
        match &result {
            Ok(done) => telemetry::aggregator_batch(done.applied),
            Err(e) => {
                telemetry::aggregator_batch(e.done.applied);
                telemetry::storage_error(&e.error, "aggregator");
            }
        }
        result
    }

    async fn apply_runs(&self, events: &[StreamEvent], now: Millis) -> Result<Outcome, ApplyError> {
        let mut cache = self.cache.lock().await;
        let mut done = Outcome::default();
        // Live aggregates committed to so far: the last run renders them all.
        let mut touched: BTreeSet<Scope> = BTreeSet::new();
        let runs = runs(events, MAX_TRANSACTION_ITEMS - 1);
        let last = runs.len().saturating_sub(1);
        for (i, run) in runs.into_iter().enumerate() {
            let render = match (i == last, done.commits) {
                (false, _) => Render::Never,
                (true, 0) => Render::IfChanged,
                (true, _) => Render::Always,
            };
            let result = self
                .commit_splitting(&mut cache, &mut touched, &events[run.clone()], now, render)
                .await;
            match result {
                Ok(outcome) => done.add(outcome),
                Err((offset, error)) => {
                    return Err(ApplyError {
                        first_unapplied: run.start + offset,
                        done,
                        error,
                    })
                }
            }
        }
        Ok(done)
    }

    /// Commits `events`, halving them while DynamoDB rejects the commit.
    /// On failure, the offset of the first event not committed.
    async fn commit_splitting(
        &self,
        cache: &mut Cache,
        touched: &mut BTreeSet<Scope>,
        events: &[StreamEvent],
        now: Millis,
        render: Render,
    ) -> Result<Outcome, (usize, StoreError)> {
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(4);
        pending.push(0..events.len());
        let mut done = Outcome::default();
        while let Some(range) = pending.pop() {
            // Render only with the batch's last piece.
            let piece_render = if range.end == events.len() && pending.is_empty() {
                if done.commits > 0 && render != Render::Never {
                    Render::Always
                } else {
                    render
                }
            } else {
                Render::Never
            };
            let piece = &events[range.clone()];
            match self
                .commit_run(cache, touched, piece, now, piece_render)
                .await
            {
                Ok(outcome) => done.add(outcome),
                Err(StoreError::Rejected(why)) if piece.len() > 1 => {
                    tracing::warn!(events = piece.len(), error = %why, "commit refused; splitting it");
                    let mid = range.start + piece.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                Err(StoreError::Rejected(why)) => {
                    let skipped = self.pass_over(&piece[0]).await;
                    match skipped {
                        Ok(outcome) => {
                            metrics::counter!(metric::REJECTED_EVENTS).increment(1);
                            tracing::error!(
                                sequence = %piece[0].sequence,
                                error = %why,
                                "DynamoDB refused to aggregate an event; passed over (it stays in the log)"
                            );
                            done.add(outcome);
                        }
                        Err(e) => return Err((range.start, e)),
                    }
                }
                Err(e) => return Err((range.start, e)),
            }
        }
        Ok(done)
    }

    async fn commit_run(
        &self,
        cache: &mut Cache,
        touched: &mut BTreeSet<Scope>,
        events: &[StreamEvent],
        now: Millis,
        render: Render,
    ) -> Result<Outcome> {
        let mut retries = Retries::new(STREAM_PATIENCE);
        loop {
            let result = self
                .commit_attempt(cache, touched, events, now, render)
                .await;
            if !retries.again(&result).await {
                return result;
            }
        }
    }

    async fn commit_attempt(
        &self,
        cache: &mut Cache,
        touched: &mut BTreeSet<Scope>,
        events: &[StreamEvent],
        now: Millis,
        mode: Render,
    ) -> Result<Outcome> {
        let store = &self.store;
        let state = store.read_state().await?;
        let read_at = std::time::Instant::now();
        cache.check_generation(state.generation);
        let live = state.generation;
        let needed = scopes_needed(&state, events, &self.all);
        let stored_scopes = store.read_scopes(&needed).await?;
        // The marks after the scope items: a commit that applied one of
        // these events wrote its source's scope item, so either this
        // commit's condition on that item fails, or that commit is the
        // item's last (or an earlier one) and its marks are read here:
        // checked, since a read may see part of a transaction (one that
        // may still be landing: made within `COMMIT_IN_FLIGHT_MS`).
        let last_marks: Vec<&MarksKey> = stored_scopes
            .values()
            .filter(|item| recently_committed(item, now))
            .flat_map(|item| &item.last_marks)
            .collect();
        let mut seconds = seconds_needed(events);
        seconds.extend(last_marks.iter().map(|(second, _)| *second));
        let applied = store.read_applied(&seconds).await?;
        if last_marks.iter().any(|key| !applied.items.contains(*key)) {
            return Err(StoreError::Conflict(
                "an aggregate's last commit is not wholly visible yet".into(),
            ));
        }
        let applied = applied.marks;
        let version_of = |key: &(u64, Scope)| stored_scopes.get(key).map_or(0, |i| i.version);
        for key in needed.iter().filter(|(g, _)| *g == live) {
            cache.check(&key.1, version_of(key));
        }
        let states: BTreeMap<(u64, Scope), ScopeState> = stored_scopes
            .iter()
            .map(|(k, item)| (k.clone(), item.state.clone()))
            .collect();
        let plan = plan(
            &state,
            &states,
            &applied,
            events,
            &self.all,
            self.max_fields,
        );
        let commit = !plan.is_empty() || mode == Render::Always;
        let outcome = Outcome {
            applied: plan.applied,
            skipped: plan.skipped,
            unreadable: plan.unreadable,
            rejected: 0,
            commits: usize::from(commit),
        };
        if !commit {
            return Ok(outcome);
        }
        for scope in &plan.first_drops {
            tracing::warn!(
                source = scope.name().unwrap_or("(all events)"),
                max_fields = self.max_fields,
                "an aggregate reached its field limit: further new fields are not aggregated"
            );
        }
        let keys: Vec<(u64, SummaryKey)> = plan.deltas().map(|(k, _)| k).collect();
        let mut merged = store.read_summaries(&keys).await?;
        for (key, delta) in plan.deltas() {
            merged.entry(key).or_default().value.merge(delta);
        }
        let mut scope_items: Vec<((u64, Scope), ScopeItem)> = Vec::new();
        for (generation, batch) in &plan.batches {
            for (scope, scope_state) in &batch.scopes {
                let key = (*generation, scope.clone());
                let latest = plan
                    .latest
                    .get(&key)
                    .cloned()
                    .or_else(|| stored_scopes.get(&key).and_then(|i| i.latest.clone()));
                let item = ScopeItem {
                    state: scope_state.clone(),
                    latest,
                    version: version_of(&key),
                    last_marks: stored_scopes
                        .get(&key)
                        .map(|i| i.last_marks.clone())
                        .unwrap_or_default(),
                };
                scope_items.push((key, item));
            }
        }
        let summaries: Vec<((u64, SummaryKey), Versioned<Summary>)> = merged.into_iter().collect();
        if read_at.elapsed() > STATE_READ_MAX_AGE {
            // Planning took long: go on only if the generations it planned
            // on still hold (a rebuild may be deleting an older one).
            let again = store.read_state().await?;
            let layout = |s: &AggState| {
                (
                    s.generation,
                    s.floor,
                    s.next.as_ref().map(|n| (n.generation, n.cut)),
                )
            };
            if layout(&again) != layout(&state) {
                return Err(StoreError::Conflict(
                    "the live generation changed while the commit was planned".into(),
                ));
            }
        }
        let committing = std::time::Instant::now();
        store
            .commit(Commit {
                marks: plan.new_marks.clone(),
                scopes: &scope_items,
                summaries: &summaries,
            })
            .await?;
        telemetry::aggregator_commit(committing.elapsed());
        // Stored now one version above the one read.
        for (_, item) in &mut scope_items {
            item.version += 1;
        }
        touched.extend(
            scope_items
                .iter()
                .filter(|((g, _), _)| *g == live)
                .map(|((_, scope), _)| scope.clone()),
        );
        invalidate(
            &mut cache.windows,
            summaries
                .iter()
                .filter(|((g, _), _)| *g == live)
                .map(|((_, k), _)| k),
        );
        for ((g, scope), item) in &scope_items {
            if *g == live {
                cache.versions.insert(scope.clone(), item.version);
            }
        }
        // The `latest` rows at once (they need no render), for the live
        // aggregates whose `latest` this commit changed.
        let changed_latest = scope_items
            .iter()
            .filter(|(key, _)| key.0 == live && plan.latest.contains_key(key))
            .map(|((_, scope), item)| (scope, item));
        if let Err(e) = store.write_latest(&latest_rows(changed_latest)).await {
            tracing::warn!(error.cause_chain = ?e, "latest rows could not be written; the next roll will");
        }
        if mode == Render::Never {
            return Ok(outcome);
        }
        // Rows of every live aggregate the batch changed: this commit's
        // scope items, those of earlier runs read back, and, for the
        // all-events aggregate, every part, read after this commit (so of
        // two commits to different parts at once, at least one renders
        // both: see ARCHITECTURE.md).
        let mut items: BTreeMap<Scope, ScopeItem> = scope_items
            .into_iter()
            .filter(|((g, _), _)| *g == live)
            .map(|((_, scope), item)| (scope, item))
            .collect();
        // What this commit wrote: its summaries are laid over what the
        // render reads, unless another commit changed their aggregate
        // since (then the store's are the newer).
        let committed: HashMap<Scope, u64> = items
            .iter()
            .map(|(scope, item)| (scope.clone(), item.version))
            .collect();
        let earlier: Vec<(u64, Scope)> = touched
            .iter()
            .filter(|s| !s.is_all_events() && !items.contains_key(*s))
            .map(|s| (live, s.clone()))
            .collect();
        let read = async {
            let mut read = Vec::new();
            if !earlier.is_empty() {
                let found = store.read_scopes(&earlier).await?;
                read.extend(found.into_iter().map(|((_, scope), item)| (scope, item)));
            }
            if touched.iter().any(Scope::is_all_events) {
                read.extend(store.read_all_event_parts(live).await?);
            }
            Ok::<_, StoreError>(read)
        };
        match read.await {
            Ok(read) => {
                for (scope, item) in read {
                    cache.check(&scope, item.version);
                    items.insert(scope, item);
                }
            }
            Err(e) => {
                // The events are committed; the next render or roll
                // writes the rows.
                tracing::warn!(error.cause_chain = ?e, "rows could not be rendered; the next render will");
                return Ok(outcome);
            }
        }
        let fresh: BTreeMap<SummaryKey, Summary> = summaries
            .into_iter()
            .filter(|((g, k), _)| {
                *g == live
                    && items.get(&k.scope).map(|i| i.version) == committed.get(&k.scope).copied()
            })
            .map(|((_, k), s)| (k, s.value))
            .collect();
        let published = publish(
            store,
            cache,
            Publish {
                generation: live,
                items: &items,
                fresh: &fresh,
                end: window_end(now),
                latest: false,
                max_fields: self.max_fields,
            },
        )
        .await;
        if let Err(e) = published {
            // The events are committed; the next render or roll writes the rows.
            tracing::warn!(error.cause_chain = ?e, "rows could not be written; the next render will");
        }
        Ok(outcome)
    }

    /// Marks `event` applied without aggregating it.
    async fn pass_over(&self, event: &StreamEvent) -> Result<Outcome> {
        retry_conflicts(|| async {
            let state = self.store.read_state().await?;
            let events = std::slice::from_ref(event);
            let applied = self
                .store
                .read_applied(&seconds_needed(events))
                .await?
                .marks;
            let plan = plan(&state, &BTreeMap::new(), &applied, events, &self.all, 0);
            if plan.is_empty() {
                return Ok(Outcome {
                    skipped: 1,
                    ..Outcome::default()
                });
            }
            self.store
                .commit(Commit {
                    marks: plan.new_marks,
                    ..Commit::default()
                })
                .await?;
            Ok(Outcome {
                rejected: 1,
                commits: 1,
                ..Outcome::default()
            })
        })
        .await
    }

    /// Re-renders every aggregate's rows if the windows moved past the
    /// stored ones (no events needed). Returns whether it did.
    pub async fn roll(&self, now: Millis) -> Result<bool> {
        let mut cache = self.cache.lock().await;
        let end = window_end(now);
        let mut retries = Retries::new(STREAM_PATIENCE);
        loop {
            let result = self.roll_attempt(&mut cache, end).await;
            if !retries.again(&result).await {
                return result;
            }
        }
    }

    async fn roll_attempt(&self, cache: &mut Cache, end: Millis) -> Result<bool> {
        let store = &self.store;
        let state = store.read_state().await?;
        if state.rendered_end >= end {
            return Ok(false);
        }
        cache.check_generation(state.generation);
        let mut next = state.clone();
        next.version += 1;
        next.rendered_end = end;
        store.write_state(&next).await?;
        // `rendered_end` is written: a failure from here on leaves the
        // rows behind until the next batch renders its aggregates or the
        // next minute's roll renders them all.
        let items: BTreeMap<Scope, ScopeItem> = store
            .query_scopes(next.generation)
            .await?
            .into_iter()
            .collect();
        for (scope, item) in &items {
            cache.check(scope, item.version);
        }
        publish(
            store,
            cache,
            Publish {
                generation: next.generation,
                items: &items,
                fresh: &BTreeMap::new(),
                end,
                // Again, in case a commit's write of them failed.
                latest: true,
                max_fields: self.max_fields,
            },
        )
        .await?;
        Ok(true)
    }
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

/// Tells `caches` of every summary in `changed`.
fn invalidate<'a>(
    caches: &mut HashMap<Scope, WindowCache>,
    changed: impl IntoIterator<Item = &'a SummaryKey>,
) {
    for key in changed {
        if let Some(cache) = caches.get_mut(&key.scope) {
            cache.invalidate(key.tier, key.index);
        }
    }
}

/// The window rows and `sources` entries of `scopes` in `generation`,
/// windows ending at `end`, read from the store (`fresh`: summaries just
/// committed, which win over what a read returns) through `caches`, a
/// chunk of aggregates at a time (`crate::render::chunks`). The parts of
/// the all-events aggregate among `scopes` are rendered together, as the
/// all-events rows (`crate::render::merged_rows`): pass all of them.
pub(crate) async fn render(
    store: &DynamoStore,
    generation: u64,
    scopes: &[(&Scope, &ScopeState)],
    fresh: &BTreeMap<SummaryKey, Summary>,
    caches: &mut HashMap<Scope, WindowCache>,
    end: Millis,
    max_fields: usize,
) -> Result<RowsWrite> {
    let mut out = RowsWrite {
        end,
        ..RowsWrite::default()
    };
    let (parts, sources): (Vec<_>, Vec<_>) = scopes
        .iter()
        .copied()
        .partition(|(scope, _)| scope.is_all_events());
    for chunk in crate::render::chunks(&sources) {
        let stored = read_windows(store, generation, chunk, fresh, caches, end).await?;
        let rendered = crate::render::rows(chunk, &stored, caches, end);
        out.views.extend(rendered.views);
        out.sources.extend(rendered.sources);
    }
    if !parts.is_empty() {
        // A part at a time: only one part's summaries are held at once.
        let mut windows = Vec::with_capacity(parts.len());
        for part in &parts {
            let one = std::slice::from_ref(part);
            let stored = read_windows(store, generation, one, fresh, caches, end).await?;
            let folded = crate::render::windows_of(part.0, &stored, caches, end);
            windows.push((folded, part.1));
        }
        let rendered = crate::render::merged_rows(&windows, end, max_fields);
        out.views.extend(rendered.views);
    }
    Ok(out)
}

/// What the windows of `scopes` need that their caches lack, read from
/// the store, with `fresh` laid over.
async fn read_windows(
    store: &DynamoStore,
    generation: u64,
    scopes: &[(&Scope, &ScopeState)],
    fresh: &BTreeMap<SummaryKey, Summary>,
    caches: &mut HashMap<Scope, WindowCache>,
    end: Millis,
) -> Result<BTreeMap<SummaryKey, Summary>> {
    let mut stored: BTreeMap<SummaryKey, Summary> = BTreeMap::new();
    for (scope, tier, range) in crate::render::reads(scopes, caches, end) {
        for (index, summary) in store
            .query_summaries(generation, &scope, tier, range)
            .await?
        {
            let key = SummaryKey {
                scope: scope.clone(),
                tier,
                index,
            };
            stored.insert(key, summary);
        }
    }
    for (key, summary) in fresh {
        if scopes.iter().any(|(s, _)| **s == key.scope) {
            stored.insert(key.clone(), summary.clone());
        }
    }
    Ok(stored)
}

/// Rows to render and write: the aggregates `items` of `generation`
/// (sources, and every part of the all-events aggregate if it is among
/// them), windows ending at `end`.
pub(crate) struct Publish<'a> {
    pub generation: u64,
    pub items: &'a BTreeMap<Scope, ScopeItem>,
    pub fresh: &'a BTreeMap<SummaryKey, Summary>,
    pub end: Millis,
    /// Whether to write the `latest` rows too, first (events change them;
    /// the windows' end does not).
    pub latest: bool,
    pub max_fields: usize,
}

/// The `latest` rows of `items` (every part of the all-events aggregate
/// offers its own: the stored row keeps the latest of them).
fn latest_rows<'a>(
    items: impl Iterator<Item = (&'a Scope, &'a ScopeItem)>,
) -> Vec<(Scope, LatestKey, String)> {
    items
        .filter_map(|(scope, item)| {
            let key = item.state.latest.clone()?;
            let doc = item.latest.clone()?;
            let scope = if scope.is_all_events() {
                Scope::All
            } else {
                scope.clone()
            };
            Some((scope, key, doc))
        })
        .collect()
}

/// Attempts at rendering and writing a commit's rows.
const PUBLISH_ATTEMPTS: u32 = 5;

/// Renders and writes rows, each aggregate's at the version of its scope
/// item (the all-events aggregate's at the sum of its parts' versions:
/// a render that saw more commits ranks higher), trying again when a
/// summary was caught between two commits' chunks (a conflict) or the
/// store did not answer: the commit stands whatever happens here, so a
/// retry of the commit would find nothing to do and render nothing.
pub(crate) async fn publish(
    store: &DynamoStore,
    cache: &mut Cache,
    rows: Publish<'_>,
) -> Result<()> {
    let scopes: Vec<(&Scope, &ScopeState)> =
        rows.items.iter().map(|(s, i)| (s, &i.state)).collect();
    let mut versions: BTreeMap<Scope, u64> = BTreeMap::new();
    let mut parts_version = None::<u64>;
    for (scope, item) in rows.items {
        if scope.is_all_events() {
            parts_version = Some(parts_version.unwrap_or(0) + item.version);
        } else {
            versions.insert(scope.clone(), row_version(rows.generation, item.version));
        }
    }
    if let Some(sum) = parts_version {
        versions.insert(Scope::All, row_version(rows.generation, sum));
    }
    if rows.latest {
        if let Err(e) = store.write_latest(&latest_rows(rows.items.iter())).await {
            tracing::warn!(error.cause_chain = ?e, "latest rows could not be written; the next roll will");
        }
    }
    let mut attempt = 1;
    loop {
        let written = async {
            let mut out = render(
                store,
                rows.generation,
                &scopes,
                rows.fresh,
                &mut cache.windows,
                rows.end,
                rows.max_fields,
            )
            .await?;
            out.versions = versions.clone();
            store.write_rows(out).await
        }
        .await;
        match written {
            Ok(()) => {
                // The folds hold at least what these versions stored,
                // unless another container's commit may still have been
                // landing when they were read (a read may see part of a
                // transaction): those are read again next time.
                for (scope, item) in rows.items {
                    let ours = cache.versions.get(scope) == Some(&item.version);
                    if ours || !recently_committed(item, rows.end) {
                        cache.versions.insert(scope.clone(), item.version);
                    } else {
                        cache.versions.remove(scope);
                    }
                }
                return Ok(());
            }
            Err(StoreError::Conflict(_) | StoreError::Unavailable(_))
                if attempt < PUBLISH_ATTEMPTS =>
            {
                tracing::debug!(attempt, "rendering rows failed; trying again");
                let jitter = rand::rng().random_range(0..20 * u64::from(attempt));
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long a commit that conflicts is tried again. Each conflict means
/// another commit landed, so the system as a whole moved on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience {
    /// At most this many attempts (the stream's commits: Lambda retries
    /// the batch after that).
    Attempts(u32),
    /// For this long from the first attempt: a rebuild, racing the
    /// stream's commits for the state item, waits out a steady write load
    /// instead of giving up after a fixed number of races.
    For(Duration),
}

/// How long a rebuild's commit keeps retrying conflicts.
pub(crate) const REBUILD_PATIENCE: Patience = Patience::For(Duration::from_secs(600));

/// The stream's commits' patience.
const STREAM_PATIENCE: Patience = Patience::Attempts(COMMIT_ATTEMPTS);

/// The retries of one commit. (The commits that keep a render cache loop
/// on [`Retries::again`] themselves: a closure lending them the cache
/// would not be `Send`.)
struct Retries {
    patience: Patience,
    tries: u32,
    started: std::time::Instant,
}

impl Retries {
    fn new(patience: Patience) -> Self {
        Retries {
            patience,
            tries: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Whether to try a commit again after `result`: yes after a conflict
    /// while patience lasts, once a jittered pause has passed.
    async fn again<T>(&mut self, result: &Result<T>) -> bool {
        let Err(StoreError::Conflict(why)) = result else {
            return false;
        };
        let more = match self.patience {
            Patience::Attempts(attempts) => self.tries + 1 < attempts,
            Patience::For(patience) => self.started.elapsed() < patience,
        };
        if !more {
            return false;
        }
        self.tries += 1;
        metrics::counter!(metric::COMMIT_CONFLICTS).increment(1);
        tracing::debug!(%why, tries = self.tries, "aggregate commit conflicted; retrying");
        let jitter = rand::rng().random_range(0..10 * u64::from(self.tries.min(10)) + 5);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        true
    }
}

/// Runs `attempt` again while it fails with a conflict and `patience`
/// lasts, with jittered backoff.
pub(crate) async fn retry_conflicts_with<T, F, Fut>(patience: Patience, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut retries = Retries::new(patience);
    loop {
        let result = attempt().await;
        if !retries.again(&result).await {
            return result;
        }
    }
}

/// [`retry_conflicts_with`] the stream's patience.
pub(crate) async fn retry_conflicts<T, F, Fut>(attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry_conflicts_with(STREAM_PATIENCE, attempt).await
}

#[cfg(test)]
mod tests;
