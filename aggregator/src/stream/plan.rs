//! What a batch of stream events changes, decided without I/O: which events
//! are new (past their log shard's checkpoint), which generations each one
//! counts in, the minute and hour deltas, and the new checkpoints and
//! latest events.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use sygno_shared::domain::aggregates::event_fields;
use sygno_shared::domain::fields::Fields;
use sygno_shared::domain::series::Summary;
use sygno_shared::domain::tiers::TierKey;
use sygno_shared::store::dynamo::state::{AggState, EventItem, LatestEvent};

/// An event item as the stream delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// The stream record's sequence number (decimal digits).
    pub sequence: String,
    pub item: EventItem,
}

/// Compares two stream sequence numbers (decimal strings of any length).
pub fn compare_sequences(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The effect of a batch on the aggregates.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The state with checkpoints and latest events moved; its `version`
    /// is still the one read.
    pub state: AggState,
    /// What to merge into each touched summary.
    pub deltas: BTreeMap<TierKey, Summary>,
    /// Events new to the aggregates.
    pub applied: usize,
    /// Events at or below their shard's checkpoint: applied before.
    pub skipped: usize,
    /// New events whose `data` could not be read: counted without fields.
    pub unreadable: usize,
}

impl Plan {
    /// True when committing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.applied == 0
    }
}

/// Folds `events` (in stream order) into a plan over `state`.
///
/// An event counts in the live generation unless the rebuild that made it
/// already read it (`received_at <= floor`), and in a rebuild's next
/// generation when received after the rebuild's cut (the rebuild reads the
/// log up to the cut itself).
pub fn plan(state: &AggState, events: &[StreamEvent]) -> Plan {
    let mut plan = Plan {
        state: state.clone(),
        ..Plan::default()
    };
    for event in events {
        let shard = &event.item.pk;
        if plan
            .state
            .checkpoints
            .get(shard)
            .is_some_and(|done| compare_sequences(&event.sequence, done) != Ordering::Greater)
        {
            plan.skipped += 1;
            continue;
        }
        plan.state
            .checkpoints
            .insert(shard.clone(), event.sequence.clone());
        plan.applied += 1;
        let fields = match event_fields(&event.item.data) {
            Some(fields) => fields,
            None => {
                plan.unreadable += 1;
                Fields::new()
            }
        };
        let latest = event.item.latest();
        if event.item.received_at > plan.state.floor {
            record(
                &mut plan.deltas,
                plan.state.generation,
                &event.item,
                &fields,
            );
            LatestEvent::later(&mut plan.state.latest, &latest);
        }
        if let Some(next) = plan.state.next.as_mut() {
            if event.item.received_at > next.cut {
                record(&mut plan.deltas, next.generation, &event.item, &fields);
                LatestEvent::later(&mut next.latest, &latest);
            }
        }
    }
    plan
}

fn record(
    deltas: &mut BTreeMap<TierKey, Summary>,
    generation: u64,
    item: &EventItem,
    fields: &Fields,
) {
    for key in TierKey::of_event(generation, item.event_time) {
        deltas.entry(key).or_default().record(fields);
    }
}

/// Cuts `events` into consecutive runs that each touch at most
/// `max_summaries` summaries, counting two generations (a rebuild in
/// progress) for every event. Each run is committed on its own.
pub fn runs(events: &[StreamEvent], max_summaries: usize) -> Vec<Range<usize>> {
    let per_generation = (max_summaries / 2).max(2);
    let mut out = Vec::new();
    let mut start = 0;
    let mut touched = BTreeSet::new();
    for (i, event) in events.iter().enumerate() {
        let keys = TierKey::of_event(0, event.item.event_time);
        let new = keys.iter().filter(|k| !touched.contains(*k)).count();
        if touched.len() + new > per_generation && i > start {
            out.push(start..i);
            start = i;
            touched.clear();
        }
        touched.extend(keys);
    }
    if start < events.len() {
        out.push(start..events.len());
    }
    out
}

#[cfg(test)]
mod tests;
