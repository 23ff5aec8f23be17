//! Rebuild: every aggregate recomputed from the whole event log.
//!
//! The log is read from the first event up to its head, folded into fresh
//! state with the same code as incremental processing, and the result
//! replaces every stored bucket and row in one transaction with the
//! checkpoint at the last event read. Rows therefore equal, bit for bit,
//! what incremental processing of the same events gives. Writes may go on
//! meanwhile: events past the checkpoint are picked up by the next step.

use crate::control::{RebuildState, RebuildStatus};
use crate::worker::{apply_all, horizon, render_rows, Clock, BATCH};
use sygno_shared::domain::aggregates::Aggregates;
use sygno_shared::domain::time::{format_rfc3339, window_end, Millis};
use sygno_shared::store::{AggregateCommit, AggregateStore, ChangeFeed, Result};
use tokio::sync::watch;

/// The outcome of a rebuild.
#[derive(Debug)]
pub struct Rebuilt {
    /// The state after the rebuild, trimmed to the windows' horizon.
    pub state: Aggregates,
    /// Where the committed window rows end.
    pub window_end: Millis,
    /// Buckets written.
    pub buckets: usize,
}

/// Rebuilds from the log. `progress(events_read, target)` is called after
/// every batch; `target` is the log's head when the rebuild started.
pub async fn rebuild(
    feed: &dyn ChangeFeed,
    store: &dyn AggregateStore,
    now: Millis,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Rebuilt> {
    let target = feed.head().await?;
    let mut state = Aggregates::default();
    let mut read = 0u64;
    while state.checkpoint < target {
        let events = feed.read_after(state.checkpoint, BATCH).await?;
        if events.is_empty() {
            break;
        }
        read += events.len() as u64;
        apply_all(&mut state, &events);
        progress(read, target.max(read));
    }
    let end = window_end(now);
    state.take_latest_change();
    let latest = state.latest.clone();
    let views = render_rows(&mut state, end, latest.as_ref());
    // Fresh state: every bucket folded is dirty, so this is all of them.
    let buckets = state.series.take_dirty();
    let written = buckets.len();
    store
        .commit(AggregateCommit {
            expected_checkpoint: None,
            checkpoint: state.checkpoint,
            replace_all: true,
            buckets,
            latest,
            views,
        })
        .await?;
    state.series.evict_before(horizon(end));
    Ok(Rebuilt {
        state,
        window_end: end,
        buckets: written,
    })
}

/// Runs [`rebuild`] inside a running worker, reporting through `status`.
/// Returns `None` (and reports the failure) if it failed.
pub(crate) async fn rebuild_with_status(
    feed: &dyn ChangeFeed,
    store: &dyn AggregateStore,
    status: &watch::Sender<RebuildStatus>,
    clock: &Clock,
) -> Option<Rebuilt> {
    tracing::info!("rebuild started");
    let mut report = |processed: u64, target: u64| {
        status.send_modify(|s| {
            s.processed = processed;
            s.target = target;
        });
    };
    let outcome = rebuild(feed, store, clock(), &mut report).await;
    let finished_at = Some(format_rfc3339(clock()));
    match outcome {
        Ok(rebuilt) => {
            tracing::info!(
                checkpoint = rebuilt.state.checkpoint,
                buckets = rebuilt.buckets,
                "rebuild finished"
            );
            status.send_modify(|s| {
                s.state = RebuildState::Done;
                s.finished_at = finished_at;
                s.checkpoint = rebuilt.state.checkpoint;
            });
            Some(rebuilt)
        }
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, "rebuild failed");
            status.send_modify(|s| {
                s.state = RebuildState::Failed;
                s.finished_at = finished_at;
                s.error = Some(e.to_string());
            });
            None
        }
    }
}
