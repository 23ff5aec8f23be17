//! The aggregator on the embedded store: the log's change feed folded, in
//! sequence order, into the minute and hour summaries of every aggregate.
//!
//! # Layout
//! - [`worker`]: [`Worker::step`] folds one batch of the feed and commits
//!   its summaries, scope states, rows and checkpoint in one transaction;
//!   [`worker::run`] drives steps from change notifications and the clock.
//! - [`rebuild`]: every aggregate folded again from the whole log into a
//!   new generation, switched to in one transaction.
//! - here: what both do per batch (`fold_batch`) and per render
//!   ([`render`], over `crate::render`).
//!
//! # Memory
//! Nothing is held per minute or per hour between batches but the last
//! batch's summaries of the current minutes and hours (where live load
//! lands next): a batch reads the other summaries its events land in, and
//! rendering reads the windows' pieces through each aggregate's
//! [`WindowCache`], which keeps one fold per piece (about five summaries
//! per aggregate). What stays in memory is
//! the scope states (counts, `latest`'s key, the field limit: at most a
//! few tens of KB per aggregate) and those folds.

pub mod rebuild;
pub mod worker;

pub use worker::Worker;

use crate::render::{self, Rendered};
use std::collections::{BTreeMap, HashMap};
use sygno_shared::domain::event::LoggedEvent;
use sygno_shared::domain::fold::{fold, keys_of, Batch, Scope, ScopeState, SummaryKey};
use sygno_shared::domain::summary::Summary;
use sygno_shared::domain::time::Millis;
use sygno_shared::domain::window::WindowCache;
use sygno_shared::store::{AggregateStore, Result};
use sygno_shared::views::render_latest;

/// Events read from the feed per step: under live load, a batch holds
/// what arrived since the last step (see `worker::run`).
pub const BATCH: usize = 16_384;

/// Events read from the log per step of a rebuild, which carries a whole
/// batch's summaries to the next.
pub const REBUILD_BATCH: usize = 4_096;

/// A batch folded: the touched scope states and summaries (whole, ready
/// to store) and the new `latest` rows.
#[derive(Debug, Default)]
pub(crate) struct FoldedBatch {
    pub(crate) batch: Batch,
    pub(crate) latest: BTreeMap<Scope, String>,
}

/// Folds `events` (in sequence order) into the summaries of `generation`
/// and the scope states in `scopes`. A summary is taken out of `carried`
/// (the previous batch's, as committed) when there, else read from
/// `store`: consecutive batches mostly land in the same minute and hour
/// of the same aggregates, so with many sources this saves a read per
/// summary per batch. `carried` must hold only summaries as stored.
pub(crate) async fn fold_batch(
    store: &dyn AggregateStore,
    generation: u64,
    scopes: &BTreeMap<Scope, ScopeState>,
    carried: &mut BTreeMap<SummaryKey, Summary>,
    events: &[LoggedEvent],
    max_fields: usize,
) -> Result<FoldedBatch> {
    let keys = keys_of(events.iter().map(LoggedEvent::as_ref));
    let (known, missing): (Vec<SummaryKey>, Vec<SummaryKey>) =
        keys.iter().cloned().partition(|k| carried.contains_key(k));
    let mut batch = Batch {
        summaries: store
            .load_summaries(generation, &missing)
            .await?
            .into_iter()
            .collect(),
        ..Batch::default()
    };
    for key in known {
        if let Some(summary) = carried.remove(&key) {
            batch.summaries.insert(key, summary);
        }
    }
    for key in &keys {
        if !batch.scopes.contains_key(&key.scope) {
            let state = scopes.get(&key.scope).cloned().unwrap_or_default();
            batch.scopes.insert(key.scope.clone(), state);
        }
    }
    // Each aggregate's last `latest` in the batch, by index in `events`.
    let mut latest: BTreeMap<Scope, usize> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        let folded = fold(&mut batch, &event.as_ref(), max_fields);
        if folded.unreadable {
            tracing::warn!(
                seq = event.seq,
                "event data could not be read; counted without fields"
            );
        }
        for scope in folded.first_drop {
            tracing::warn!(
                source = scope.name().unwrap_or("(all events)"),
                max_fields,
                "an aggregate reached its field limit: further new fields are not aggregated"
            );
        }
        for scope in folded.latest_of {
            latest.insert(scope, i);
        }
    }
    // Rendered once per event (all events' and its source's share it).
    let mut docs: BTreeMap<usize, String> = BTreeMap::new();
    let latest = latest
        .into_iter()
        .map(|(scope, i)| {
            let doc = docs
                .entry(i)
                .or_insert_with(|| render_latest(&events[i].as_ref()));
            (scope, doc.clone())
        })
        .collect();
    Ok(FoldedBatch { batch, latest })
}

/// Renders the window rows (and `sources` entries) of `scopes`, windows
/// ending at `end`, from `generation`'s stored summaries with `fresh` (a
/// batch's summaries, not yet stored) laid over them, a chunk of
/// aggregates at a time. `caches` must have been told of every summary
/// changed since their last use.
pub(crate) async fn render(
    store: &dyn AggregateStore,
    generation: u64,
    scopes: &[(&Scope, &ScopeState)],
    fresh: &BTreeMap<SummaryKey, Summary>,
    caches: &mut HashMap<Scope, WindowCache>,
    end: Millis,
) -> Result<Rendered> {
    let mut out = Rendered::default();
    let mut fresh_of: HashMap<&Scope, Vec<(&SummaryKey, &Summary)>> = HashMap::new();
    for (key, summary) in fresh {
        fresh_of.entry(&key.scope).or_default().push((key, summary));
    }
    for chunk in crate::render::chunks(scopes) {
        let reads = render::reads(chunk, caches, end);
        let mut stored: BTreeMap<SummaryKey, Summary> = store
            .load_ranges(generation, &reads)
            .await?
            .into_iter()
            .collect();
        for (scope, _) in chunk {
            for (key, summary) in fresh_of.get(scope).into_iter().flatten() {
                stored.insert((*key).clone(), (*summary).clone());
            }
        }
        out.extend(render::rows(chunk, &stored, caches, end));
    }
    Ok(out)
}

/// Tells `caches` of every summary in `changed`.
pub(crate) fn invalidate<'a>(
    caches: &mut HashMap<Scope, WindowCache>,
    changed: impl IntoIterator<Item = &'a SummaryKey>,
) {
    for key in changed {
        if let Some(cache) = caches.get_mut(&key.scope) {
            cache.invalidate(key.tier, key.index);
        }
    }
}
