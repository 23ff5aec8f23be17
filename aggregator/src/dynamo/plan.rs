//! What a batch of stream events changes, decided without I/O: which events
//! are new (no applied mark stored for their second of receipt), which
//! generations each one counts in, and, through the one fold
//! (`sygno_shared::domain::fold`), the summary deltas and scope states of
//! every aggregate it touches.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use sygno_shared::domain::fold::{fold_into, keys_of, Batch, Scope, ScopeState, SummaryKey};
use sygno_shared::domain::summary::Summary;
use sygno_shared::store::dynamo::state::{
    applied_mark, received_second, AggState, AppliedSets, EventItem, NewMarks,
};
use sygno_shared::views::render_latest;

/// An event item as the stream delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// The stream record's sequence number (decimal digits).
    pub sequence: String,
    pub item: EventItem,
}

/// The seconds of receipt whose applied marks [`plan`] needs.
pub fn seconds_needed(events: &[StreamEvent]) -> BTreeSet<i64> {
    events
        .iter()
        .map(|e| received_second(e.item.received_at))
        .collect()
}

/// The effect of a batch on the aggregates.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The marks read, with this batch's.
    pub applied_sets: AppliedSets,
    /// This batch's marks: the events it applies, by second of receipt.
    pub new_marks: NewMarks,
    /// Per generation: the touched scope states (whole, updated) and what
    /// to merge into each touched summary.
    pub batches: BTreeMap<u64, Batch>,
    /// Per generation and aggregate: the new `latest` row.
    pub latest: BTreeMap<(u64, Scope), String>,
    /// Events new to the aggregates.
    pub applied: usize,
    /// Events marked applied already (redelivered), or twice in the batch.
    pub skipped: usize,
    /// New events whose `data` could not be read: counted without fields.
    pub unreadable: usize,
    /// Aggregates that dropped their first field in this batch.
    pub first_drops: Vec<Scope>,
}

impl Plan {
    /// True when committing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.applied == 0
    }

    /// Every summary delta, by generation.
    pub fn deltas(&self) -> impl Iterator<Item = ((u64, SummaryKey), &Summary)> {
        self.batches.iter().flat_map(|(g, batch)| {
            batch
                .summaries
                .iter()
                .map(move |(key, summary)| ((*g, key.clone()), summary))
        })
    }
}

/// The generations `state` folds new events into: the live one, and a
/// rebuild's next one.
pub fn generations(state: &AggState) -> Vec<u64> {
    let mut out = vec![state.generation];
    out.extend(state.next.as_ref().map(|n| n.generation));
    out
}

/// The aggregates a commit folds `event` into: its source's, and `all`,
/// the part of the all-events aggregate the committing aggregator writes
/// (`Scope::all_part`).
fn scopes_of(event: &StreamEvent, all: &Scope) -> [Scope; 2] {
    [all.clone(), Scope::Source(event.item.name.clone())]
}

/// The scope states [`plan`] needs for `events`: every aggregate they
/// count in (the all-events aggregate's part `all`), in every generation.
pub fn scopes_needed(state: &AggState, events: &[StreamEvent], all: &Scope) -> Vec<(u64, Scope)> {
    let names: BTreeSet<&str> = events.iter().map(|e| e.item.name.as_str()).collect();
    let mut out = Vec::new();
    for generation in generations(state) {
        out.push((generation, all.clone()));
        for name in &names {
            out.push((generation, Scope::Source((*name).to_owned())));
        }
    }
    out
}

/// Folds `events` (in stream order) into a plan over `state`, the stored
/// scope states `scopes` (absent: new aggregates) and the applied marks
/// `applied` of the events' seconds of receipt ([`seconds_needed`]); the
/// all-events aggregate's share goes to its part `all`.
///
/// An event counts in the live generation unless the rebuild that made it
/// already read it (`received_at <= floor`), and in a rebuild's next
/// generation when received after the rebuild's cut (the rebuild reads the
/// log up to the cut itself).
pub fn plan(
    state: &AggState,
    scopes: &BTreeMap<(u64, Scope), ScopeState>,
    applied: &AppliedSets,
    events: &[StreamEvent],
    all: &Scope,
    max_fields: usize,
) -> Plan {
    let mut plan = Plan::default();
    for event in events {
        let second = received_second(event.item.received_at);
        let marks = plan
            .applied_sets
            .entry(second)
            .or_insert_with(|| applied.get(&second).cloned().unwrap_or_default());
        let mark = applied_mark(&event.item.event_id);
        if !marks.insert(mark) {
            plan.skipped += 1;
            continue;
        }
        plan.new_marks.entry(second).or_default().push(mark);
        plan.applied += 1;
        let mut targets = Vec::with_capacity(2);
        if event.item.received_at > state.floor {
            targets.push(state.generation);
        }
        if let Some(next) = &state.next {
            if event.item.received_at > next.cut {
                targets.push(next.generation);
            }
        }
        let mut unreadable = false;
        for generation in targets {
            let batch = plan.batches.entry(generation).or_default();
            let targets = scopes_of(event, all);
            for scope in &targets {
                if let std::collections::btree_map::Entry::Vacant(entry) =
                    batch.scopes.entry(scope.clone())
                {
                    let stored = scopes.get(&(generation, entry.key().clone()));
                    entry.insert(stored.cloned().unwrap_or_default());
                }
            }
            let folded = fold_into(batch, &event.item.as_ref(), targets, max_fields);
            unreadable |= folded.unreadable;
            if !folded.latest_of.is_empty() {
                let doc = render_latest(&event.item.as_ref());
                for scope in folded.latest_of {
                    plan.latest.insert((generation, scope), doc.clone());
                }
            }
            if generation == state.generation {
                plan.first_drops.extend(folded.first_drop);
            }
        }
        plan.unreadable += usize::from(unreadable);
    }
    plan
}

/// Cuts `events` into consecutive runs that each write at most
/// `max_items` items (scope states and summaries, counting two
/// generations, a rebuild in progress, for every event; and a marks item
/// per second of receipt). Each run is committed on its own.
pub fn runs(events: &[StreamEvent], max_items: usize) -> Vec<Range<usize>> {
    let per_generation = (max_items / 2).max(6);
    let mut out = Vec::new();
    let mut start = 0;
    let mut touched: BTreeSet<SummaryKey> = BTreeSet::new();
    let mut scopes: BTreeSet<Scope> = BTreeSet::new();
    let mut seconds: BTreeSet<i64> = BTreeSet::new();
    for (i, event) in events.iter().enumerate() {
        let second = received_second(event.item.received_at);
        let new_second = usize::from(!seconds.contains(&second));
        let keys = keys_of([event.item.as_ref()]);
        let new_keys = keys.iter().filter(|k| !touched.contains(*k)).count();
        let new_scopes = Scope::of_event(&event.item.name)
            .iter()
            .filter(|s| !scopes.contains(*s))
            .count();
        let items = touched.len() + scopes.len() + seconds.len();
        if items + new_keys + new_scopes + new_second > per_generation && i > start {
            out.push(start..i);
            start = i;
            touched.clear();
            scopes.clear();
            seconds.clear();
        }
        seconds.insert(second);
        scopes.extend(keys.iter().map(|k| k.scope.clone()));
        touched.extend(keys);
    }
    if start < events.len() {
        out.push(start..events.len());
    }
    out
}

#[cfg(test)]
mod tests;
