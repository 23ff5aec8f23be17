//! The statistics of a set of events: their count and the [`Moments`] of
//! every field. One [`Summary`] is kept per minute and per hour of each
//! aggregate (see [`crate::domain::tiers`]); windows merge them.

use crate::domain::fields::Fields;
use crate::domain::stats::Moments;
use std::collections::BTreeMap;

/// Count and per-field moments of a set of events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Events in the set, with or without numeric fields.
    pub events: u64,
    pub fields: BTreeMap<String, Moments>,
}

impl Summary {
    /// Adds one event with these fields (Welford update per field).
    pub fn record(&mut self, fields: &Fields) {
        self.events += 1;
        for (path, value) in fields {
            match self.fields.get_mut(path) {
                Some(m) => m.push(*value),
                None => {
                    self.fields.insert(path.clone(), Moments::of(*value));
                }
            }
        }
    }

    /// Merges `other` into `self` (Chan et al. per field).
    pub fn merge(&mut self, other: &Summary) {
        self.events += other.events;
        for (path, m) in &other.fields {
            match self.fields.get_mut(path) {
                Some(mine) => mine.merge(m),
                None => {
                    self.fields.insert(path.clone(), *m);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
}
