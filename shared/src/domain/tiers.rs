//! Two tiers of stored summaries: one per minute bucket and one per hour
//! block (the [`BLOCK_BUCKETS`] minutes it holds). A store that cannot
//! keep a week of minutes in memory (the DynamoDB aggregator, which starts
//! cold on every invocation) reads a window as at most two partial hours of
//! minutes plus the whole hours between: 168 hours and up to 118 minutes
//! for seven days, instead of 10,080 minutes.
//!
//! [`Pieces::of`] cuts a window into those reads. Pure: no I/O.

use crate::domain::time::{bucket_of, Millis};
use std::ops::Range;

/// Minutes per hour block.
pub const BLOCK_BUCKETS: i64 = 60;

/// The granularity of a stored summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// One minute bucket; the index is the bucket (see [`bucket_of`]).
    Minute,
    /// One hour block; the index is `bucket.div_euclid(60)`.
    Hour,
}

impl Tier {
    /// The index of this tier's summary that minute bucket `minute`
    /// counts in.
    pub fn index_of(self, minute: i64) -> i64 {
        match self {
            Tier::Minute => minute,
            Tier::Hour => minute.div_euclid(BLOCK_BUCKETS),
        }
    }
}

/// A window `[end - span, end)` cut into ranges of minute buckets and of
/// hour blocks that together cover it exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    pub minutes: Vec<Range<i64>>,
    pub hours: Range<i64>,
}

impl Pieces {
    /// Both ends must lie on minute boundaries.
    pub fn of(end: Millis, span: Millis) -> Pieces {
        let start = bucket_of(end - span);
        let end = bucket_of(end);
        let first_hour = start.div_euclid(BLOCK_BUCKETS) + i64::from(start % BLOCK_BUCKETS != 0);
        let last_hour = end.div_euclid(BLOCK_BUCKETS);
        if first_hour >= last_hour {
            return Pieces {
                minutes: non_empty(std::iter::once(start..end).collect()),
                hours: 0..0,
            };
        }
        Pieces {
            minutes: non_empty(vec![
                start..first_hour * BLOCK_BUCKETS,
                last_hour * BLOCK_BUCKETS..end,
            ]),
            hours: first_hour..last_hour,
        }
    }
}

fn non_empty(ranges: Vec<Range<i64>>) -> Vec<Range<i64>> {
    ranges.into_iter().filter(|r| !r.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{BUCKET_MS, DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS};
    use proptest::prelude::*;

    /// Every minute of the window, as the pieces cover it.
    fn covered(pieces: &Pieces) -> Vec<i64> {
        let mut minutes: Vec<i64> = pieces.minutes.iter().flat_map(|r| r.clone()).collect();
        for hour in pieces.hours.clone() {
            minutes.extend(hour * BLOCK_BUCKETS..(hour + 1) * BLOCK_BUCKETS);
        }
        minutes.sort_unstable();
        minutes
    }

    proptest! {
        #[test]
        fn pieces_cover_the_window_exactly_once(
            end_minute in -2_000_000i64..60_000_000,
            span_minutes in prop_oneof![Just(24 * 60), Just(7 * 24 * 60), 0i64..400],
        ) {
            let end = end_minute * MINUTE_MS;
            let pieces = Pieces::of(end, span_minutes * MINUTE_MS);
            let expected: Vec<i64> = (end_minute - span_minutes..end_minute).collect();
            prop_assert_eq!(covered(&pieces), expected);
            // At most 59 minutes on either side of the whole hours.
            for range in &pieces.minutes {
                prop_assert!(range.end - range.start < BLOCK_BUCKETS || pieces.hours.is_empty());
            }
        }
    }

    #[test]
    fn a_week_is_at_most_168_hours_and_118_minutes() {
        let end = 1_700_000_000_000 / BUCKET_MS * BUCKET_MS + 17 * MINUTE_MS;
        let week = Pieces::of(end, WEEK_MS);
        assert_eq!(week.hours.end - week.hours.start, 167);
        let minutes: i64 = week.minutes.iter().map(|r| r.end - r.start).sum();
        assert_eq!(minutes, 60);
        let on_the_hour = end - end.rem_euclid(HOUR_MS);
        let day = Pieces::of(on_the_hour, DAY_MS);
        assert_eq!(day.hours.end - day.hours.start, 24);
        assert!(day.minutes.is_empty());
    }
}
