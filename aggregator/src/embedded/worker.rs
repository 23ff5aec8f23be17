//! The incremental worker.

use super::rebuild::{self, Rebuilt};
use super::{fold_batch, invalidate, render, BATCH};
use crate::control::RebuildRequests;
use crate::Clock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::{Scope, ScopeState, SummaryKey};
use sygno_shared::domain::series::Retention;
use sygno_shared::domain::summary::Summary;
use sygno_shared::domain::tiers::Tier;
use sygno_shared::domain::time::{bucket_of, window_end, Millis, HOUR_MS};
use sygno_shared::domain::window::WindowCache;
use sygno_shared::store::{AggregateCommit, AggregateStore, ChangeFeed, Result};
use sygno_shared::telemetry::{self, metric};
use tokio::sync::watch;

/// How often window rows are rendered while a backlog is folded.
pub const RENDER_EVERY_MS: Millis = 1_000;

/// How long the first event of a full batch has waited when the batch is
/// a backlog rather than live load: the contract's freshness.
pub const BACKLOG_AFTER_MS: Millis = 1_000;

/// `sygno serve`'s least interval between live renders (see
/// [`Worker::render_every`]).
pub const LIVE_RENDER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// The longest live render interval a slow render stretches it to (see
/// `Worker::live_render_interval`).
pub const MAX_LIVE_RENDER_INTERVAL: Duration = Duration::from_millis(500);

/// `sygno serve`'s least interval between the starts of two steps under
/// live load (see [`run`]).
pub const LIVE_STEP_INTERVAL: Duration = Duration::from_millis(50);

/// The longest a slow step stretches the interval between live steps to.
pub const MAX_LIVE_STEP_INTERVAL: Duration = Duration::from_millis(400);

/// Folds the change feed into the aggregate store, one batch per step.
pub struct Worker {
    feed: Arc<dyn ChangeFeed>,
    store: Arc<dyn AggregateStore>,
    /// `SYGNO_MAX_FIELDS`: distinct fields per aggregate and window.
    max_fields: usize,
    checkpoint: u64,
    generation: u64,
    scopes: BTreeMap<Scope, ScopeState>,
    caches: HashMap<Scope, WindowCache>,
    /// The last batch's summaries of the current minutes and hours, as
    /// committed (see `fold_batch` and `is_live`).
    carried: BTreeMap<SummaryKey, Summary>,
    /// Where the committed window rows end; `None` before the first commit.
    published_end: Option<Millis>,
    /// The latest time seen: windows never move back, even if the clock
    /// does.
    latest_now: Millis,
    /// Set after a failed commit: memory is ahead of storage until reloaded.
    needs_reload: bool,
    /// Aggregates folded into but not rendered since (a backlog is folded
    /// in full batches, rendered at most once a second; see `step`).
    unrendered: BTreeSet<Scope>,
    /// When rows were last rendered.
    rendered_at: Millis,
    /// How long the last render took (wall clock), in ms.
    render_cost: Millis,
    /// Live rendering's least interval (see [`Worker::render_every`]).
    live_interval: std::time::Duration,
    /// When rows were last rendered, by the wall clock.
    rendered_instant: Option<std::time::Instant>,
    /// Whether the last step read a full batch (more events were behind).
    behind: bool,
    /// How long summaries are kept; pruned about once an hour.
    retention: Retention,
    pruned_at: Option<Millis>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("checkpoint", &self.checkpoint)
            .field("generation", &self.generation)
            .field("scopes", &self.scopes.len())
            .field("published_end", &self.published_end)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Loads the worker's state from the store.
    pub async fn start(
        feed: Arc<dyn ChangeFeed>,
        store: Arc<dyn AggregateStore>,
        max_fields: usize,
        now: Millis,
    ) -> Result<Self> {
        let mut worker = Worker {
            feed,
            store,
            max_fields,
            checkpoint: 0,
            generation: 0,
            scopes: BTreeMap::new(),
            caches: HashMap::new(),
            carried: BTreeMap::new(),
            published_end: None,
            latest_now: now,
            needs_reload: true,
            unrendered: BTreeSet::new(),
            rendered_at: Millis::MIN,
            render_cost: 0,
            live_interval: std::time::Duration::ZERO,
            retention: Retention::default(),
            pruned_at: None,
            rendered_instant: None,
            behind: false,
        };
        worker.reload().await?;
        Ok(worker)
    }

    async fn reload(&mut self) -> Result<()> {
        let stored = self.store.load().await?;
        self.checkpoint = stored.checkpoint;
        self.generation = stored.generation;
        self.scopes = stored.scopes;
        self.caches.clear();
        self.carried.clear();
        self.published_end = None;
        self.needs_reload = false;
        self.unrendered.clear();
        Ok(())
    }

    /// Sequence number of the last event committed.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Renders live rows at most once per `interval` (default: with every
    /// batch). Under a steady write load each batch touches many
    /// aggregates; rendering them a few times a second instead of per
    /// batch keeps the aggregator's share of the CPU small and stays well
    /// within the contract's 1 s freshness (`latest` rows are written with
    /// every batch regardless). `sygno serve` uses [`LIVE_RENDER_INTERVAL`].
    pub fn render_every(mut self, interval: std::time::Duration) -> Self {
        self.live_interval = interval;
        self
    }

    /// Keeps summaries as `retention` says (default: minutes 35 days,
    /// hours as long as the log).
    pub fn retain(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Deletes the live generation's summaries older than kept, about once
    /// an hour; a backlog (a week of minutes a step) goes on at the next
    /// steps until none is left. A failure is logged and tried again an
    /// hour later: retention is not worth failing a step for.
    async fn prune_if_due(&mut self, now: Millis) {
        if self.pruned_at.is_some_and(|t| now - t < HOUR_MS) {
            return;
        }
        self.pruned_at = Some(now);
        for tier in [Tier::Minute, Tier::Hour] {
            let Some(before) = self.retention.first_kept_index(tier, now) else {
                continue;
            };
            // Never carried past its deletion (a clock that jumped).
            self.carried
                .retain(|key, _| key.tier != tier || key.index >= before);
            match self.store.prune(self.generation, tier, before).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(?tier, deleted, "summaries past their retention deleted");
                    // Perhaps more: again at the next step.
                    self.pruned_at = None;
                }
                Err(e) => tracing::warn!(error.cause_chain = ?e, "pruning summaries failed"),
            }
        }
    }

    /// How long until rows folded but not yet rendered are due; `None`
    /// when every aggregate's rows are current.
    pub fn render_pending(&self) -> Option<std::time::Duration> {
        if self.unrendered.is_empty() {
            return None;
        }
        let interval = self.live_render_interval();
        let elapsed = self.rendered_instant.map_or(interval, |t| t.elapsed());
        Some(interval.saturating_sub(elapsed))
    }

    /// The least interval between live renders: the configured one (none:
    /// every batch renders), or ten times the last render's duration up
    /// to [`MAX_LIVE_RENDER_INTERVAL`] when rendering is slow (many
    /// aggregates touched), so rendering takes at most about a tenth of
    /// the worker's time while rows stay within the contract's 1 s.
    fn live_render_interval(&self) -> Duration {
        if self.live_interval.is_zero() {
            return Duration::ZERO; // every batch, as configured
        }
        let cost = Duration::from_millis(u64::try_from(self.render_cost).unwrap_or(0));
        self.live_interval
            .max((cost * 10).min(MAX_LIVE_RENDER_INTERVAL))
    }

    /// Whether the last step read a full batch (more events wait behind
    /// it).
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// Aggregates known: all events and every source seen.
    pub fn scopes(&self) -> usize {
        self.scopes.len()
    }

    /// Applies the next batch of the feed and commits it with its rows and
    /// checkpoint; also commits when only the clock moved the windows.
    /// Returns the number of events read (0: caught up).
    ///
    /// Window rows are rendered with every batch except while a backlog is
    /// folded (a full batch whose first event waited over
    /// [`BACKLOG_AFTER_MS`]), where they are rendered when
    /// the minute turns and otherwise at most once per
    /// [`RENDER_EVERY_MS`] or ten times the last render's duration,
    /// whichever is longer: rendering a touched aggregate reads its changed
    /// window pieces, and a backfill touches old hours of every aggregate
    /// in every batch, so most of the time goes to folding. `latest` rows
    /// are written with every batch, so the newest event does not wait.
    pub async fn step(&mut self, now: Millis) -> Result<usize> {
        // How long events waited is read on the clock as given (after a
        // rebuild, `latest_now` may be ahead until the minute turns).
        let wall = now;
        let now = now.max(self.latest_now);
        self.latest_now = now;
        if self.needs_reload {
            self.reload().await?;
        }
        self.prune_if_due(now).await;
        let events = self.feed.read_after(self.checkpoint, BATCH).await?;
        let end = window_end(now);
        let live_due = self
            .rendered_instant
            .is_none_or(|t| t.elapsed() >= self.live_render_interval());
        let nothing_due = self.unrendered.is_empty() || !live_due;
        telemetry::aggregator_read(events.first().map(|e| e.received_at), now);
        if events.is_empty() && self.published_end == Some(end) && nothing_due {
            metrics::gauge!(metric::LAG_EVENTS).set(0.0);
            return Ok(0);
        }
        // A backlog: a full batch (or one cut at the read's byte budget)
        // whose first event has waited longer than live load makes it
        // wait. Events that merely arrived since the last step are live
        // load, rendered on the live interval, even a full batch of them
        // (wide events, bulk writes).
        let bytes: usize = events.iter().map(|e| e.data.len()).sum();
        let full = events.len() == BATCH || bytes >= sygno_shared::store::MAX_READ_BYTES;
        let waited = events
            .first()
            .map_or(0, |e| wall.saturating_sub(e.received_at));
        let backlog = full && waited > BACKLOG_AFTER_MS;
        // More events wait behind a full batch: read on without a pause.
        self.behind = full;
        let render = self.published_end != Some(end)
            || (!backlog && live_due)
            || (backlog
                && now.saturating_sub(self.rendered_at)
                    >= RENDER_EVERY_MS.max(10 * self.render_cost));
        let result = self.commit_step(&events, end, render).await;
        if result.is_ok() && render {
            self.rendered_at = now;
            self.rendered_instant = Some(std::time::Instant::now());
        }
        match &result {
            Ok(()) => telemetry::aggregator_batch(events.len()),
            Err(_) => self.needs_reload = true,
        }
        if let Ok(head) = self.feed.head().await {
            let waiting = head.saturating_sub(self.checkpoint);
            metrics::gauge!(metric::LAG_EVENTS).set(waiting as f64);
        }
        result.map(|()| events.len())
    }

    async fn commit_step(
        &mut self,
        events: &[sygno_shared::domain::event::LoggedEvent],
        end: Millis,
        render_rows: bool,
    ) -> Result<()> {
        let folded = fold_batch(
            self.store.as_ref(),
            self.generation,
            &self.scopes,
            &mut self.carried,
            events,
            self.max_fields,
        )
        .await?;
        invalidate(&mut self.caches, folded.batch.summaries.keys());
        // The windows moved: every aggregate's rows; else the touched ones
        // and those a backlog left unrendered.
        let rolled = self.published_end != Some(end);
        let mut to_render: Vec<(&Scope, &ScopeState)> = Vec::new();
        if render_rows {
            to_render.extend(folded.batch.scopes.iter());
            to_render.extend(self.scopes.iter().filter(|(scope, _)| {
                !folded.batch.scopes.contains_key(*scope)
                    && (rolled || self.unrendered.contains(*scope))
            }));
        }
        let started = std::time::Instant::now();
        let rendered = if to_render.is_empty() {
            crate::render::Rendered::default()
        } else {
            render(
                self.store.as_ref(),
                self.generation,
                &to_render,
                &folded.batch.summaries,
                &mut self.caches,
                end,
            )
            .await?
        };
        if render_rows {
            self.render_cost =
                Millis::try_from(started.elapsed().as_millis()).unwrap_or(Millis::MAX / 20);
        }
        let mut views = rendered.views;
        for (scope, doc) in folded.latest {
            views.push((scope, ExposeKind::Latest, doc));
        }
        let checkpoint = events.last().map_or(self.checkpoint, |e| e.seq);
        let batch = folded.batch;
        let committing = std::time::Instant::now();
        self.store
            .commit(AggregateCommit {
                expected_checkpoint: Some(self.checkpoint),
                checkpoint: Some(checkpoint),
                generation: self.generation,
                switch: false,
                summaries: batch.summaries.clone().into_iter().collect(),
                scopes: batch
                    .scopes
                    .iter()
                    .map(|(s, st)| (s.clone(), st.clone()))
                    .collect(),
                views,
                sources: rendered.sources,
            })
            .await?;
        telemetry::aggregator_commit(committing.elapsed());
        if render_rows {
            self.unrendered.clear();
            self.published_end = Some(end);
        } else {
            self.unrendered.extend(batch.scopes.keys().cloned());
        }
        self.scopes.extend(batch.scopes);
        // Carried: the summaries live load lands in, those of this minute
        // and hour and the ones before (also between the steps of a busy
        // feed, which read full batches back to back). Those of a
        // backlog's old minutes are dropped: little is shared between two
        // of its batches, and holding them would double a step's memory.
        self.carried = batch
            .summaries
            .into_iter()
            .filter(|(key, _)| is_live(key, end))
            .collect();
        self.checkpoint = checkpoint;
        Ok(())
    }

    /// Steps until the feed is exhausted. Returns the events applied.
    pub async fn catch_up(&mut self, clock: &Clock) -> Result<u64> {
        let mut applied = 0;
        loop {
            let n = self.step(clock()).await?;
            if n == 0 {
                return Ok(applied);
            }
            applied += n as u64;
        }
    }

    fn adopt(&mut self, rebuilt: Rebuilt) {
        self.checkpoint = rebuilt.checkpoint;
        self.generation = rebuilt.generation;
        self.scopes = rebuilt.scopes;
        self.caches = rebuilt.caches;
        self.carried.clear();
        self.published_end = Some(rebuilt.window_end);
        self.latest_now = self.latest_now.max(rebuilt.window_end - 1);
        self.needs_reload = false;
    }
}

/// Whether `key` is of the minute or hour before `end` (the current
/// window's end), of the one before that, or later.
fn is_live(key: &SummaryKey, end: Millis) -> bool {
    key.index >= key.tier.index_of(bucket_of(end) - 2)
}

/// Runs the worker until `stop` turns true: catches up at start, then
/// steps whenever the log grows, when the next minute starts (to roll the
/// windows), and on rebuild requests. A step in progress always finishes,
/// so the checkpoint is committed when this returns.
pub async fn run(
    mut worker: Worker,
    clock: Clock,
    mut requests: RebuildRequests,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(checkpoint = worker.checkpoint(), "aggregator started");
    loop {
        if *stop.borrow() {
            break;
        }
        let started = std::time::Instant::now();
        // Under live load the pause is paced: new events do not end it.
        let mut paced = false;
        let pause = match worker.step(clock()).await {
            Ok(n) if n > 0 => {
                // Under live load, the next step starts after ten times
                // this one's duration, between LIVE_STEP_INTERVAL and
                // MAX_LIVE_STEP_INTERVAL: a batch then holds what arrived
                // meanwhile, so its cost per aggregate touched (summaries,
                // a state and a `latest` row written) is shared by more
                // events when writes spread over many sources, and steps
                // of up to 40 ms take a tenth of the worker's core. A full
                // batch (more events waiting) is followed without pause.
                // Rows due sooner cut the pause short.
                let took = started.elapsed();
                let rest = (took * 10)
                    .clamp(LIVE_STEP_INTERVAL, MAX_LIVE_STEP_INTERVAL)
                    .saturating_sub(took);
                let rest = worker.render_pending().map_or(rest, |due| rest.min(due));
                if worker.behind() || rest.is_zero() {
                    continue;
                }
                paced = true;
                rest
            }
            Ok(_) => {
                let now = clock();
                let roll =
                    Duration::from_millis(u64::try_from(window_end(now) - now).unwrap_or(1000));
                // Rows folded but not rendered yet: come back when due.
                worker.render_pending().map_or(roll, |wait| wait.min(roll))
            }
            Err(e) => {
                telemetry::storage_error(&e, "aggregator");
                tracing::error!(error.cause_chain = ?e, "aggregation step failed; retrying");
                Duration::from_secs(1)
            }
        };
        let checkpoint = worker.checkpoint();
        let feed = Arc::clone(&worker.feed);
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            Some(()) = requests.next() => {
                let outcome = rebuild::rebuild_with_status(
                    worker.feed.as_ref(),
                    worker.store.as_ref(),
                    worker.max_fields,
                    requests.status(),
                    &clock,
                ).await;
                match outcome {
                    Some(rebuilt) => worker.adopt(rebuilt),
                    None => worker.needs_reload = true,
                }
            }
            () = feed.wait_beyond(checkpoint), if !paced => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!(checkpoint = worker.checkpoint(), "aggregator stopped");
}

#[cfg(test)]
mod tests;
