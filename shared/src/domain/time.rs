//! Time as Sygno counts it: milliseconds since the Unix epoch, UTC.
//!
//! Statistics are kept per one-minute bucket; windows start and end on bucket
//! boundaries (see [`window_end`]).

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

pub const SECOND_MS: Millis = 1_000;
pub const MINUTE_MS: Millis = 60 * SECOND_MS;
pub const HOUR_MS: Millis = 60 * MINUTE_MS;
pub const DAY_MS: Millis = 24 * HOUR_MS;
pub const WEEK_MS: Millis = 7 * DAY_MS;

/// Width of one statistics bucket. The contract allows at most 60 s.
pub const BUCKET_MS: Millis = MINUTE_MS;

/// Parses an RFC 3339 timestamp; sub-millisecond digits are truncated toward
/// the past so that an event never moves into a later bucket.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats as RFC 3339 UTC with millisecond precision (`2021-05-01T10:07:50.000Z`).
pub fn format_rfc3339(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        // Unreachable for times that passed `parse_rfc3339` or came from a clock.
        None => String::from("invalid-time"),
    }
}

/// The bucket index holding instant `ms` (floor division, also before 1970).
pub fn bucket_of(ms: Millis) -> i64 {
    ms.div_euclid(BUCKET_MS)
}

/// The start instant of bucket `bucket`.
pub fn bucket_start(bucket: i64) -> Millis {
    bucket * BUCKET_MS
}

/// Where windows end for a request at `now`: the first bucket boundary
/// strictly after `now`. So `now < window_end <= now + 60 s`, and every event
/// stamped at or before `now` is inside the window that ends there.
pub fn window_end(now: Millis) -> Millis {
    bucket_start(bucket_of(now) + 1)
}
