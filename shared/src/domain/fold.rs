//! The fold: how one event changes the aggregates. Written once, called by
//! every path that aggregates (the embedded worker and its rebuild, the
//! DynamoDB stream aggregator and its rebuild).
//!
//! Every event counts in two aggregates ([`Scope`]s): all events, and its
//! source's (its `name`). In each it lands in the summary of its minute
//! and of its hour ([`SummaryKey::of_event`]), moves the aggregate's counts
//! and `latest`, and passes its fields through the aggregate's
//! [`FieldLimit`]. [`fold`] applies that to a [`Batch`]: the scope states
//! and summaries a caller loaded (the embedded store: the stored summaries,
//! updated in place; DynamoDB: empty ones, which become deltas to merge).
//!
//! # `latest`
//! The event with the greatest `event_time`; ties go to the later
//! `received_at` (the one stored last), then to the greater `event_id`
//! ([`LatestKey`]). The same order on both stores.

use crate::domain::fields::{self, Fields};
use crate::domain::limit::FieldLimit;
use crate::domain::summary::Summary;
use crate::domain::tiers::Tier;
use crate::domain::time::{bucket_of, Millis};
use std::collections::{BTreeMap, BTreeSet};

/// Which events an aggregate covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every event: what `expose` answers without a `name`.
    All,
    /// One source's events.
    Source(String),
    /// Part `n` (1 and up) of the all-events aggregate, on a store that
    /// keeps it in parts, merged when read ([`Scope::all_part`]; the
    /// DynamoDB store, so that commits of different parts never contend).
    AllPart(u8),
}

impl Scope {
    /// The two aggregates an event of source `name` counts in.
    pub fn of_event(name: &str) -> [Scope; 2] {
        [Scope::All, Scope::Source(name.to_owned())]
    }

    /// Part `part` of the all-events aggregate: part 0 is [`Scope::All`]
    /// itself (a store that does not split it has that part alone).
    pub fn all_part(part: u8) -> Scope {
        match part {
            0 => Scope::All,
            n => Scope::AllPart(n),
        }
    }

    /// True for the all-events aggregate and each of its parts.
    pub fn is_all_events(&self) -> bool {
        matches!(self, Scope::All | Scope::AllPart(_))
    }

    /// The source's name; `None` for all events (or a part of them).
    pub fn name(&self) -> Option<&str> {
        match self {
            Scope::All | Scope::AllPart(_) => None,
            Scope::Source(name) => Some(name),
        }
    }

    /// From an optional source name.
    pub fn from_name(name: Option<&str>) -> Scope {
        name.map_or(Scope::All, |n| Scope::Source(n.to_owned()))
    }
}

/// One stored summary of one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SummaryKey {
    pub scope: Scope,
    pub tier: Tier,
    /// The minute bucket, or the hour block (`minute.div_euclid(60)`).
    pub index: i64,
}

impl SummaryKey {
    /// The minute and the hour an event at `event_time` counts in.
    pub fn of_event(scope: &Scope, event_time: Millis) -> [SummaryKey; 2] {
        SummaryKey::of_minute(scope, bucket_of(event_time))
    }

    /// The minute and the hour minute bucket `minute` counts in.
    pub fn of_minute(scope: &Scope, minute: i64) -> [SummaryKey; 2] {
        [Tier::Minute, Tier::Hour].map(|tier| SummaryKey {
            scope: scope.clone(),
            tier,
            index: tier.index_of(minute),
        })
    }
}

/// An event as the fold reads it, from either store's log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRef<'a> {
    pub event_id: &'a str,
    pub event_time: Millis,
    pub received_at: Millis,
    pub name: &'a str,
    /// The raw `data` as stored.
    pub data: &'a str,
}

/// What orders events for `latest` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LatestKey {
    pub event_time: Millis,
    pub received_at: Millis,
    pub event_id: String,
}

impl LatestKey {
    pub fn of(event: &EventRef<'_>) -> Self {
        LatestKey {
            event_time: event.event_time,
            received_at: event.received_at,
            event_id: event.event_id.to_owned(),
        }
    }
}

/// What an aggregate keeps besides its summaries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeState {
    /// Events folded in.
    pub events: u64,
    pub first_event_time: Option<Millis>,
    pub last_event_time: Option<Millis>,
    pub latest: Option<LatestKey>,
    pub fields: FieldLimit,
}

impl ScopeState {
    /// Adds another part of the same aggregate's events (a rebuild's).
    pub fn merge(&mut self, other: &ScopeState) {
        self.events += other.events;
        self.first_event_time = match (self.first_event_time, other.first_event_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_event_time = match (self.last_event_time, other.last_event_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if other.latest > self.latest {
            self.latest = other.latest.clone();
        }
        self.fields.merge(&other.fields);
    }
}

/// Scope states and summaries that a batch of events is folded into.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub scopes: BTreeMap<Scope, ScopeState>,
    pub summaries: BTreeMap<SummaryKey, Summary>,
}

/// What folding one event did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    /// `data` was not a JSON object: counted as an event without fields
    /// (the write path validates `data`, so this means a damaged log).
    pub unreadable: bool,
    /// The aggregates whose `latest` this event now is.
    pub latest_of: Vec<Scope>,
    /// The aggregates in which this event dropped the first field.
    pub first_drop: Vec<Scope>,
}

/// Every summary the events of `events` land in, each once, sorted.
pub fn keys_of<'a>(events: impl IntoIterator<Item = EventRef<'a>>) -> Vec<SummaryKey> {
    // The distinct (source, minute) pairs first, borrowed: a batch holds
    // thousands of events and far fewer pairs.
    let landed: BTreeSet<(&str, i64)> = events
        .into_iter()
        .map(|e| (e.name, bucket_of(e.event_time)))
        .collect();
    let mut keys: Vec<SummaryKey> = landed
        .into_iter()
        .flat_map(|(name, minute)| {
            Scope::of_event(name)
                .into_iter()
                .flat_map(move |scope| SummaryKey::of_minute(&scope, minute))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Folds one event into `batch`, each aggregate taking at most
/// `max_fields` distinct fields in its window.
pub fn fold(batch: &mut Batch, event: &EventRef<'_>, max_fields: usize) -> Folded {
    fold_into(batch, event, Scope::of_event(event.name), max_fields)
}

/// [`fold`] into the aggregates `scopes` (the event's source's, and the
/// all-events aggregate or the part of it a store's commit writes).
pub fn fold_into(
    batch: &mut Batch,
    event: &EventRef<'_>,
    scopes: [Scope; 2],
    max_fields: usize,
) -> Folded {
    let parsed = fields::of_stored(event.data);
    let mut folded = Folded {
        unreadable: parsed.is_none(),
        ..Folded::default()
    };
    let fields: Fields = parsed.unwrap_or_default();
    let key = LatestKey::of(event);
    for scope in scopes {
        let state = batch.scopes.entry(scope.clone()).or_default();
        state.events += 1;
        state.first_event_time = Some(
            state
                .first_event_time
                .map_or(event.event_time, |t| t.min(event.event_time)),
        );
        state.last_event_time = Some(
            state
                .last_event_time
                .map_or(event.event_time, |t| t.max(event.event_time)),
        );
        if state.latest.as_ref().is_none_or(|l| *l < key) {
            state.latest = Some(key.clone());
            folded.latest_of.push(scope.clone());
        }
        let admitted = state.fields.admit(&fields, event.event_time, max_fields);
        if admitted.first_drop {
            folded.first_drop.push(scope.clone());
        }
        let taken = admitted.subset.as_ref().unwrap_or(&fields);
        for summary in SummaryKey::of_event(&scope, event.event_time) {
            batch.summaries.entry(summary).or_default().record(taken);
        }
    }
    folded
}

#[cfg(test)]
mod tests;
