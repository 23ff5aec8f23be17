//! The field limit of one aggregate: at most `max_fields` distinct field
//! paths within its 7-day window.
//!
//! Paths are kept as 64-bit hashes (xxh3) with the last minute an event
//! carried them, so the state is small and of fixed size per path whatever
//! the path's length (it is stored with every aggregate on DynamoDB, whose
//! items are limited to 400 KB). A path already aggregated stays
//! aggregated while events keep carrying it; a new path is taken while
//! fewer than `max_fields` are aggregated, and dropped otherwise. Paths
//! leave when no event has carried them for 7 days.
//!
//! "7 days" is measured from the latest `event_time` the aggregate has
//! seen (its clock), not from the wall clock, so the decisions are a
//! function of the events in the order folded: a rebuild of the same log
//! decides the same.

use crate::domain::fields::Fields;
use crate::domain::time::{bucket_of, Millis, MINUTE_MS, WEEK_MS};
use std::collections::BTreeMap;

/// Distinct dropped paths remembered per aggregate. Past this,
/// `fields_dropped` stops growing (it is then a lower bound) so that a
/// writer inventing names without end cannot grow the state.
pub const MAX_DROPPED_TRACKED: usize = 10_000;

/// Default of `SYGNO_MAX_FIELDS`.
pub const DEFAULT_MAX_FIELDS: usize = 2_000;
/// The largest `SYGNO_MAX_FIELDS` accepted: the DynamoDB store's items are
/// sized for the default (see ARCHITECTURE.md, "Limits").
pub const MAX_MAX_FIELDS: usize = 2_000;

/// Default of `SYGNO_MAX_SOURCES`: the distinct sources the log takes.
/// Each source costs the embedded server about 25 KB of memory (its scope
/// state, window folds and rows: 261 MB with 10,000 sources of 20 fields,
/// `scripts/bench-hostile sources`) and every minute's roll renders it.
pub const DEFAULT_MAX_SOURCES: usize = 10_000;
/// The largest `SYGNO_MAX_SOURCES` accepted.
pub const MAX_MAX_SOURCES: usize = 1_000_000;

/// Parses `SYGNO_MAX_SOURCES` (absent: the default).
pub fn parse_max_sources(value: Option<&str>) -> Result<usize, String> {
    parse_bounded(
        "SYGNO_MAX_SOURCES",
        value,
        DEFAULT_MAX_SOURCES,
        MAX_MAX_SOURCES,
    )
}

/// Parses `SYGNO_MAX_FIELDS` (absent: the default).
pub fn parse_max_fields(value: Option<&str>) -> Result<usize, String> {
    parse_bounded(
        "SYGNO_MAX_FIELDS",
        value,
        DEFAULT_MAX_FIELDS,
        MAX_MAX_FIELDS,
    )
}

/// A whole number from 1 to `max` in setting `name` (absent or blank:
/// `default`), or a message naming the setting and what it got.
fn parse_bounded(
    name: &str,
    value: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} must be a whole number from 1 to {max}, not {text:?}"
        )),
    }
}

/// The field limit's state (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldLimit {
    /// Hash of an aggregated path -> the last minute an event carried it.
    pub admitted: BTreeMap<u64, i64>,
    /// Hash of a dropped path -> the last minute an event carried it.
    pub dropped: BTreeMap<u64, i64>,
    /// The latest `event_time` seen (`Millis::MIN` before any: event
    /// times go back to year 1).
    pub clock: Millis,
    /// When entries older than the window were last removed
    /// (`Millis::MIN`: never).
    pub swept: Millis,
}

impl Default for FieldLimit {
    fn default() -> Self {
        FieldLimit {
            admitted: BTreeMap::new(),
            dropped: BTreeMap::new(),
            clock: Millis::MIN,
            swept: Millis::MIN,
        }
    }
}

/// What [`FieldLimit::admit`] decided for one event.
#[derive(Debug, Default, PartialEq)]
pub struct Admitted {
    /// The fields to aggregate when some were dropped (`None`: all of them).
    pub subset: Option<Fields>,
    /// True when this event dropped the aggregate's first field.
    pub first_drop: bool,
}

/// The stable hash a path is kept by.
pub fn path_hash(path: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(path.as_bytes())
}

impl FieldLimit {
    /// Decides which of an event's fields this aggregate takes.
    pub fn admit(&mut self, fields: &Fields, event_time: Millis, max_fields: usize) -> Admitted {
        if event_time > self.clock {
            self.clock = event_time;
        }
        if self.clock.saturating_sub(self.swept) >= MINUTE_MS {
            self.sweep();
        }
        let minute = bucket_of(event_time);
        let had_drops = !self.dropped.is_empty();
        // Built only once a field is dropped: the fields kept so far.
        let mut subset: Option<Fields> = None;
        for (i, (path, value)) in fields.iter().enumerate() {
            let hash = path_hash(path);
            let keep = if let Some(last) = self.admitted.get_mut(&hash) {
                *last = (*last).max(minute);
                true
            } else if self.admitted.len() < max_fields {
                self.admitted.insert(hash, minute);
                // Aggregated from now on: no longer counted as dropped.
                self.dropped.remove(&hash);
                true
            } else {
                if let Some(last) = self.dropped.get_mut(&hash) {
                    *last = (*last).max(minute);
                } else if self.dropped.len() < MAX_DROPPED_TRACKED {
                    self.dropped.insert(hash, minute);
                }
                false
            };
            match (&mut subset, keep) {
                (Some(kept), true) => {
                    kept.insert(path.clone(), *value);
                }
                (None, false) => {
                    subset = Some(
                        fields
                            .iter()
                            .take(i)
                            .map(|(k, v)| (k.clone(), *v))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        let first_drop = subset.is_some() && !had_drops;
        Admitted { subset, first_drop }
    }

    /// Adds what `other` saw (a rebuild's part of the log) to `self`:
    /// every path either aggregated stays aggregated (so the union may
    /// briefly exceed the limit by what the two parts admitted apart).
    pub fn merge(&mut self, other: &FieldLimit) {
        for (hash, minute) in &other.admitted {
            let last = self.admitted.entry(*hash).or_insert(*minute);
            *last = (*last).max(*minute);
            self.dropped.remove(hash);
        }
        for (hash, minute) in &other.dropped {
            if !self.admitted.contains_key(hash) {
                let last = self.dropped.entry(*hash).or_insert(*minute);
                *last = (*last).max(*minute);
            }
        }
        self.clock = self.clock.max(other.clock);
        self.swept = self.swept.min(other.swept);
    }

    /// Paths aggregated within the window.
    pub fn aggregated(&self) -> usize {
        let from = self.window_start();
        self.admitted.values().filter(|m| **m >= from).count()
    }

    /// Distinct paths dropped within the window (see [`MAX_DROPPED_TRACKED`]).
    pub fn dropped(&self) -> usize {
        let from = self.window_start();
        self.dropped.values().filter(|m| **m >= from).count()
    }

    /// Distinct paths dropped within the 7-day window ending at `end` (a
    /// rendered window's: an idle aggregate's old drops age out of its
    /// rows although no event moved its clock).
    pub fn dropped_before(&self, end: Millis) -> usize {
        let from = self
            .window_start()
            .max(bucket_of(end.saturating_sub(WEEK_MS)));
        self.dropped.values().filter(|m| **m >= from).count()
    }

    fn window_start(&self) -> i64 {
        bucket_of(self.clock.saturating_sub(WEEK_MS))
    }

    fn sweep(&mut self) {
        let from = self.window_start();
        self.admitted.retain(|_, m| *m >= from);
        self.dropped.retain(|_, m| *m >= from);
        self.swept = self.clock;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::DAY_MS;

    fn fields(names: &[&str]) -> Fields {
        names.iter().map(|n| ((*n).to_owned(), 1.0)).collect()
    }

    #[test]
    fn paths_past_the_limit_are_dropped_and_counted() {
        let mut limit = FieldLimit::default();
        assert_eq!(limit.admit(&fields(&["a", "b"]), 0, 3), Admitted::default());
        let second = limit.admit(&fields(&["a", "c", "d", "e"]), 1, 3);
        assert_eq!(second.subset, Some(fields(&["a", "c"])));
        assert!(second.first_drop);
        assert_eq!((limit.aggregated(), limit.dropped()), (3, 2));
        // Known paths stay aggregated; a repeat drop is not a first drop.
        let third = limit.admit(&fields(&["b", "d"]), 2, 3);
        assert_eq!(third.subset, Some(fields(&["b"])));
        assert!(!third.first_drop);
        assert_eq!(limit.dropped(), 2);
    }

    #[test]
    fn paths_unseen_for_a_week_make_room() {
        let mut limit = FieldLimit::default();
        limit.admit(&fields(&["a", "b"]), 0, 2);
        assert!(limit.admit(&fields(&["c"]), DAY_MS, 2).subset.is_some());
        // Eight days on, `a` and `b` have left the window: `c` is taken.
        let later = limit.admit(&fields(&["c"]), 8 * DAY_MS, 2);
        assert_eq!(later.subset, None);
        assert_eq!((limit.aggregated(), limit.dropped()), (1, 0));
    }

    #[test]
    fn events_before_1970_sweep_and_count_like_any_others() {
        let mut limit = FieldLimit::default();
        let y1900 = -2_208_988_800_000;
        limit.admit(&fields(&["a", "b"]), y1900, 2);
        assert_eq!(limit.aggregated(), 2);
        assert!(limit
            .admit(&fields(&["c"]), y1900 + DAY_MS, 2)
            .subset
            .is_some());
        assert_eq!(limit.dropped(), 1);
        let later = limit.admit(&fields(&["c"]), y1900 + 9 * DAY_MS, 2);
        assert_eq!(later.subset, None, "a and b left the window");
        assert_eq!((limit.aggregated(), limit.dropped()), (1, 0));
    }

    #[test]
    fn drops_age_out_of_a_window_ending_after_the_last_event() {
        let mut limit = FieldLimit::default();
        limit.admit(&fields(&["a", "b"]), 0, 1);
        assert_eq!(limit.dropped_before(DAY_MS), 1);
        assert_eq!(limit.dropped_before(8 * DAY_MS), 0, "an idle week later");
    }

    #[test]
    fn dropped_paths_are_remembered_up_to_a_bound() {
        let mut limit = FieldLimit::default();
        let many: Vec<String> = (0..MAX_DROPPED_TRACKED + 500)
            .map(|i| format!("f{i}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        limit.admit(&fields(&refs), 0, 0);
        assert_eq!(limit.dropped(), MAX_DROPPED_TRACKED);
        assert_eq!(limit.aggregated(), 0);
    }
}
