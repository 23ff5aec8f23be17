//! The incremental worker.

use crate::control::RebuildRequests;
use crate::rebuild::{self, Rebuilt};
use std::sync::Arc;
use std::time::Duration;
use sygno_shared::domain::aggregates::{Aggregates, Applied, Latest};
use sygno_shared::domain::event::LoggedEvent;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::series::{Series, Summary};
use sygno_shared::domain::time::{bucket_of, window_end, Millis, WEEK_MS};
use sygno_shared::store::{AggregateCommit, AggregateStore, ChangeFeed, Result};
use sygno_shared::views::{render_latest, render_window};
use tokio::sync::watch;

/// Events read from the feed per step.
pub const BATCH: usize = 4096;

/// Milliseconds since the epoch, now. Injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The first bucket held in memory for windows ending at `end`: the start
/// of the longest window. Older buckets stay in storage and are read back
/// only when a late event lands in one.
pub fn horizon(end: Millis) -> i64 {
    bucket_of(end - WEEK_MS)
}

/// Folds the change feed into the aggregate store, one batch per step.
pub struct Worker {
    state: Aggregates,
    feed: Arc<dyn ChangeFeed>,
    store: Arc<dyn AggregateStore>,
    /// Where the committed window rows end; `None` before the first commit.
    published_end: Option<Millis>,
    /// The latest time seen: windows never move back, even if the clock
    /// does, since buckets before the horizon are no longer in memory.
    latest_now: Millis,
    /// Set after a failed commit: memory is ahead of storage until reloaded.
    needs_reload: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("checkpoint", &self.state.checkpoint)
            .field("published_end", &self.published_end)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Loads the worker's state from the store.
    pub async fn start(
        feed: Arc<dyn ChangeFeed>,
        store: Arc<dyn AggregateStore>,
        now: Millis,
    ) -> Result<Self> {
        let state = load_state(store.as_ref(), now).await?;
        Ok(Worker {
            state,
            feed,
            store,
            published_end: None,
            latest_now: now,
            needs_reload: false,
        })
    }

    /// Sequence number of the last event committed.
    pub fn checkpoint(&self) -> u64 {
        self.state.checkpoint
    }

    /// Applies the next batch of the feed and commits it with its rows and
    /// checkpoint; also commits when only the clock moved the windows.
    /// Returns the number of events read (0: caught up).
    pub async fn step(&mut self, now: Millis) -> Result<usize> {
        let now = now.max(self.latest_now);
        self.latest_now = now;
        if self.needs_reload {
            self.state = load_state(self.store.as_ref(), now).await?;
            self.published_end = None;
            self.needs_reload = false;
        }
        let events = self.feed.read_after(self.state.checkpoint, BATCH).await?;
        let end = window_end(now);
        if events.is_empty() && self.published_end == Some(end) {
            return Ok(0);
        }
        let horizon = horizon(end);
        let cold = self.state.buckets_to_load(&events, horizon);
        if !cold.is_empty() {
            for (bucket, summary) in self.store.load_buckets(&cold).await? {
                self.state.series.load(bucket, summary);
            }
        }
        let expected = self.state.checkpoint;
        apply_all(&mut self.state, &events);
        let latest = self.state.take_latest_change().cloned();
        let views = render_rows(&mut self.state, end, latest.as_ref());
        let commit = AggregateCommit {
            expected_checkpoint: Some(expected),
            checkpoint: self.state.checkpoint,
            replace_all: false,
            buckets: self.state.series.take_dirty(),
            latest,
            views,
        };
        if let Err(e) = self.store.commit(commit).await {
            self.needs_reload = true;
            return Err(e);
        }
        self.published_end = Some(end);
        self.state.series.evict_before(horizon);
        Ok(events.len())
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
        self.state = rebuilt.state;
        self.published_end = Some(rebuilt.window_end);
        self.latest_now = self.latest_now.max(rebuilt.window_end - 1);
        self.needs_reload = false;
    }
}

/// Applies events in order, logging any whose data cannot be read.
pub(crate) fn apply_all(state: &mut Aggregates, events: &[LoggedEvent]) {
    for event in events {
        if state.apply(event) == Applied::Unreadable {
            tracing::warn!(
                seq = event.seq,
                "event data could not be read; counted without fields"
            );
        }
    }
}

/// The four window rows ending at `end`, and the `latest` row when given.
pub(crate) fn render_rows(
    state: &mut Aggregates,
    end: Millis,
    latest: Option<&Latest>,
) -> Vec<(ExposeKind, String)> {
    render_rows_with(end, latest, |span| state.window(end, span))
}

/// `render_rows` over any source of window summaries: `window(span)` is
/// the summary of `[end - span, end)`.
pub fn render_rows_with(
    end: Millis,
    latest: Option<&Latest>,
    mut window: impl FnMut(Millis) -> Summary,
) -> Vec<(ExposeKind, String)> {
    let mut views = Vec::with_capacity(5);
    if let Some(latest) = latest {
        views.push((ExposeKind::Latest, render_latest(latest)));
    }
    for (average, devt) in [
        (ExposeKind::DayAverage, ExposeKind::DayDevt),
        (ExposeKind::WeekAverage, ExposeKind::WeekDevt),
    ] {
        let span = average.span().unwrap_or_default();
        let summary = window(span);
        views.push((average, render_window(average, end, &summary)));
        views.push((devt, render_window(devt, end, &summary)));
    }
    views
}

async fn load_state(store: &dyn AggregateStore, now: Millis) -> Result<Aggregates> {
    let stored = store.load(horizon(window_end(now))).await?;
    let mut series = Series::default();
    for (bucket, summary) in stored.buckets {
        series.load(bucket, summary);
    }
    Ok(Aggregates::new(stored.checkpoint, stored.latest, series))
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
        let pause = match worker.step(clock()).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {
                let now = clock();
                Duration::from_millis(u64::try_from(window_end(now) - now).unwrap_or(1000))
            }
            Err(e) => {
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
                    requests.status(),
                    &clock,
                ).await;
                match outcome {
                    Some(rebuilt) => worker.adopt(rebuilt),
                    None => worker.needs_reload = true,
                }
            }
            () = feed.wait_beyond(checkpoint) => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!(checkpoint = worker.checkpoint(), "aggregator stopped");
}

#[cfg(test)]
mod tests;
