//! The aggregation state: what the worker folds from the event log.
//!
//! `apply` is the fold. It is idempotent per sequence number: an event at or
//! below the checkpoint is skipped, so a redelivered batch changes nothing.

use crate::domain::event::LoggedEvent;
use crate::domain::fields::{self, Fields};
use crate::domain::series::{Series, Summary};
use crate::domain::time::{bucket_of, Millis};

/// The event with the greatest `event_time` (ties: the greater `seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub seq: u64,
    pub event_time: Millis,
    pub event_id: String,
    pub name: String,
    /// Raw `data` as the client sent it.
    pub data: String,
}

impl Latest {
    fn of(event: &LoggedEvent) -> Self {
        Latest {
            seq: event.seq,
            event_time: event.event_time,
            event_id: event.event_id.clone(),
            name: event.name.clone(),
            data: event.data.clone(),
        }
    }

    fn is_before(&self, event: &LoggedEvent) -> bool {
        (self.event_time, self.seq) < (event.event_time, event.seq)
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Folded in.
    Applied,
    /// At or below the checkpoint: already folded in.
    Skipped,
    /// Folded in as an event without fields: its `data` could not be read.
    /// (The write path validates `data`, so this means a damaged log.)
    Unreadable,
}

/// Aggregates folded from the log up to `checkpoint`.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    pub series: Series,
    pub latest: Option<Latest>,
    /// Sequence number of the last event folded in; 0 before the first.
    pub checkpoint: u64,
    /// Set when `latest` changed since the last [`Aggregates::take_latest_change`].
    latest_changed: bool,
}

impl Aggregates {
    pub fn new(checkpoint: u64, latest: Option<Latest>, series: Series) -> Self {
        Aggregates {
            series,
            latest,
            checkpoint,
            latest_changed: false,
        }
    }

    /// Folds one event in. Events must come in sequence order.
    pub fn apply(&mut self, event: &LoggedEvent) -> Applied {
        if event.seq <= self.checkpoint {
            return Applied::Skipped;
        }
        let (fields, outcome) = match event_fields(&event.data) {
            Some(fields) => (fields, Applied::Applied),
            None => (Fields::new(), Applied::Unreadable),
        };
        self.series.record(bucket_of(event.event_time), &fields);
        if self.latest.as_ref().is_none_or(|l| l.is_before(event)) {
            self.latest = Some(Latest::of(event));
            self.latest_changed = true;
        }
        self.checkpoint = event.seq;
        outcome
    }

    /// Buckets these events fall in that are neither held in memory nor
    /// new: they must be read from storage before the events are applied.
    /// Everything at or after `horizon` is held, so only older buckets count.
    pub fn buckets_to_load(&self, events: &[LoggedEvent], horizon: i64) -> Vec<i64> {
        let mut wanted: Vec<i64> = events
            .iter()
            .filter(|e| e.seq > self.checkpoint)
            .map(|e| bucket_of(e.event_time))
            .filter(|b| *b < horizon && !self.series.contains(*b))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// `latest` if it changed since the last call.
    pub fn take_latest_change(&mut self) -> Option<&Latest> {
        std::mem::take(&mut self.latest_changed)
            .then_some(self.latest.as_ref())
            .flatten()
    }

    /// The summary of events with `event_time` in `[end - span, end)`.
    /// Both ends must lie on bucket boundaries.
    pub fn window(&mut self, end: Millis, span: Millis) -> Summary {
        self.series.summarize(bucket_of(end - span), bucket_of(end))
    }
}

/// The fields of a stored event's raw `data`, `None` if it is not a JSON object.
pub fn event_fields(data: &str) -> Option<Fields> {
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(data).ok()?;
    fields::extract(&value).ok().map(|e| e.fields)
}

#[cfg(test)]
mod tests;
