//! Rebuild: every aggregate folded again from the whole event log.
//!
//! The log is read from the first event up to its head and folded, batch
//! by batch and with the same code as incremental processing, into a new
//! generation of summaries that nothing reads yet. A last transaction
//! renders every row from it and makes it live, replacing every scope
//! state, row and `sources` entry and deleting the older generations. So
//! the rows equal, bit for bit, what incremental processing of the same
//! events gives, and a rebuild cut short leaves the live aggregates as
//! they were (its generation is deleted by the next switch). Memory holds
//! the scope states and the `latest` rows, never the summaries. Writes
//! may go on: events past the rebuild's checkpoint are folded by the next
//! step.

use super::{fold_batch, render, REBUILD_BATCH};
use crate::control::{RebuildState, RebuildStatus};
use crate::Clock;
use std::collections::{BTreeMap, HashMap};
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::{Scope, ScopeState};
use sygno_shared::domain::time::{format_rfc3339, window_end, Millis};
use sygno_shared::domain::window::WindowCache;
use sygno_shared::store::{AggregateCommit, AggregateStore, ChangeFeed, Result};
use tokio::sync::watch;

/// The outcome of a rebuild.
#[derive(Debug)]
pub struct Rebuilt {
    pub checkpoint: u64,
    /// The generation now live.
    pub generation: u64,
    pub scopes: BTreeMap<Scope, ScopeState>,
    /// The window folds the final render made (a worker adopts them).
    pub(crate) caches: HashMap<Scope, WindowCache>,
    /// Where the committed window rows end.
    pub window_end: Millis,
    /// Summaries written.
    pub summaries: usize,
}

/// Rebuilds from the log. `progress(events_read, target)` is called after
/// every batch; `target` is the log's head when the rebuild started.
pub async fn rebuild(
    feed: &dyn ChangeFeed,
    store: &dyn AggregateStore,
    max_fields: usize,
    now: Millis,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Rebuilt> {
    let target = feed.head().await?;
    let generation = store.load().await?.max_generation + 1;
    let mut scopes: BTreeMap<Scope, ScopeState> = BTreeMap::new();
    let mut latest: BTreeMap<Scope, String> = BTreeMap::new();
    let mut checkpoint = 0;
    let mut read = 0u64;
    let mut summaries = 0;
    let mut carried = BTreeMap::new();
    while checkpoint < target {
        let events = feed.read_after(checkpoint, REBUILD_BATCH).await?;
        let Some(last) = events.last() else {
            break;
        };
        let last = last.seq;
        let folded = fold_batch(
            store,
            generation,
            &scopes,
            &mut carried,
            &events,
            max_fields,
        )
        .await?;
        summaries += folded.batch.summaries.len();
        store
            .commit(AggregateCommit {
                generation,
                summaries: folded.batch.summaries.clone().into_iter().collect(),
                ..AggregateCommit::default()
            })
            .await?;
        carried = folded.batch.summaries;
        scopes.extend(folded.batch.scopes);
        latest.extend(folded.latest);
        checkpoint = last;
        read += events.len() as u64;
        progress(read, target.max(read));
    }
    let end = window_end(now);
    let mut caches = HashMap::new();
    let all: Vec<(&Scope, &ScopeState)> = scopes.iter().collect();
    let rendered = render(store, generation, &all, &BTreeMap::new(), &mut caches, end).await?;
    let mut views = rendered.views;
    views.extend(
        latest
            .into_iter()
            .map(|(scope, doc)| (scope, ExposeKind::Latest, doc)),
    );
    store
        .commit(AggregateCommit {
            expected_checkpoint: None,
            checkpoint: Some(checkpoint),
            generation,
            switch: true,
            summaries: Vec::new(),
            scopes: scopes
                .iter()
                .map(|(s, st)| (s.clone(), st.clone()))
                .collect(),
            views,
            sources: rendered.sources,
        })
        .await?;
    Ok(Rebuilt {
        checkpoint,
        generation,
        scopes,
        caches,
        window_end: end,
        summaries,
    })
}

/// Runs [`rebuild`] inside a running worker, reporting through `status`.
/// Returns `None` (and reports the failure) if it failed.
pub(crate) async fn rebuild_with_status(
    feed: &dyn ChangeFeed,
    store: &dyn AggregateStore,
    max_fields: usize,
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
    let outcome = rebuild(feed, store, max_fields, clock(), &mut report).await;
    let finished_at = Some(format_rfc3339(clock()));
    match outcome {
        Ok(rebuilt) => {
            tracing::info!(
                checkpoint = rebuilt.checkpoint,
                summaries = rebuilt.summaries,
                "rebuild finished"
            );
            status.send_modify(|s| {
                s.state = RebuildState::Done;
                s.finished_at = finished_at;
                s.checkpoint = rebuilt.checkpoint;
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
