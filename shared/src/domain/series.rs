//! Series: the statistics of an aggregate bucket by bucket, at one of a
//! few intervals, folded from the stored minute or hour summaries (the
//! tiers the windows use), never from events: a series costs what its
//! range holds in summaries, whatever the events in them.
//!
//! [`parse_series`] validates a `series` body into a [`SeriesQuery`];
//! [`SeriesQuery::reads`] says which stored summaries to load;
//! [`SeriesFold`] merges them into buckets, in index order, with the
//! same [`Summary::merge`] the windows use. Pure: no I/O, time passed in.

use crate::domain::summary::Summary;
use crate::domain::tiers::Tier;
use crate::domain::time::{format_rfc3339, parse_rfc3339, Millis, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::domain::write::{
    parse_json, WriteError, MAX_EVENT_TIME, MAX_NAME_CHARS, MIN_EVENT_TIME,
};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// Most buckets one series answers.
pub const MAX_BUCKETS: i64 = 10_000;
/// Most fields one series names.
pub const MAX_SERIES_FIELDS: usize = 100;
/// How long minute summaries are kept by default (the contract: at least
/// 35 days).
pub const DEFAULT_MINUTE_RETENTION_MS: Millis = 35 * DAY_MS;

/// A series' bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interval {
    M1,
    M5,
    M15,
    H1,
    H6,
    D1,
}

impl Interval {
    /// Finest first.
    pub const ALL: [Interval; 6] = [
        Interval::M1,
        Interval::M5,
        Interval::M15,
        Interval::H1,
        Interval::H6,
        Interval::D1,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Interval::ALL.into_iter().find(|i| i.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::H1 => "1h",
            Interval::H6 => "6h",
            Interval::D1 => "1d",
        }
    }

    pub fn ms(self) -> Millis {
        match self {
            Interval::M1 => MINUTE_MS,
            Interval::M5 => 5 * MINUTE_MS,
            Interval::M15 => 15 * MINUTE_MS,
            Interval::H1 => HOUR_MS,
            Interval::H6 => 6 * HOUR_MS,
            Interval::D1 => DAY_MS,
        }
    }

    /// The stored summaries its buckets are folded from: minutes below an
    /// hour, hours from an hour on (every such bucket holds whole hours).
    pub fn tier(self) -> Tier {
        if self.ms() < HOUR_MS {
            Tier::Minute
        } else {
            Tier::Hour
        }
    }
}

fn tier_ms(tier: Tier) -> Millis {
    match tier {
        Tier::Minute => MINUTE_MS,
        Tier::Hour => HOUR_MS,
    }
}

/// A validated series request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// A source, or `None` for all events.
    pub name: Option<String>,
    /// The fields to answer; `None`: all.
    pub fields: Option<BTreeSet<String>>,
    pub interval: Interval,
    /// Rounded down to the interval.
    pub from: Millis,
    /// Rounded up to the interval.
    pub to: Millis,
}

/// Why a series request was refused (422), with its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SeriesError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> SeriesError {
    SeriesError {
        code: "invalid_body",
        message: message.into(),
    }
}

/// How long each tier of summaries is kept (`None`: as long as the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub minutes: Option<Millis>,
    pub hours: Option<Millis>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minutes: Some(DEFAULT_MINUTE_RETENTION_MS),
            hours: None,
        }
    }
}

/// The fewest days minute summaries may be kept: the windows read the
/// minutes of partial hours up to 7 days back.
pub const MIN_MINUTE_RETENTION_DAYS: u32 = 8;

impl Retention {
    /// From `SYGNO_MINUTE_RETENTION_DAYS` (default 35, at least
    /// [`MIN_MINUTE_RETENTION_DAYS`]) and `SYGNO_HOUR_RETENTION_DAYS`
    /// (default: as long as the log; at least the minutes').
    pub fn from_days(minutes: Option<&str>, hours: Option<&str>) -> Result<Self, String> {
        let days = |text: Option<&str>, name: &str, min: u32| -> Result<Option<Millis>, String> {
            let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
                return Ok(None);
            };
            match text.parse::<u32>() {
                Ok(d) if d >= min && d <= 1_000_000 => Ok(Some(Millis::from(d) * DAY_MS)),
                _ => Err(format!(
                    "{name} must be a whole number of days from {min}, not {text:?}"
                )),
            }
        };
        let minutes = days(
            minutes,
            "SYGNO_MINUTE_RETENTION_DAYS",
            MIN_MINUTE_RETENTION_DAYS,
        )?
        .unwrap_or(DEFAULT_MINUTE_RETENTION_MS);
        let hours = days(hours, "SYGNO_HOUR_RETENTION_DAYS", 1)?;
        if hours.is_some_and(|h| h < minutes) {
            return Err(
                "SYGNO_HOUR_RETENTION_DAYS must be at least SYGNO_MINUTE_RETENTION_DAYS".into(),
            );
        }
        Ok(Retention {
            minutes: Some(minutes),
            hours,
        })
    }

    /// [`Self::from_days`] of the variables `SYGNO_MINUTE_RETENTION_DAYS`
    /// and `SYGNO_HOUR_RETENTION_DAYS` as `var` reads them (the Lambda
    /// functions' configuration).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        Retention::from_days(
            var("SYGNO_MINUTE_RETENTION_DAYS").as_deref(),
            var("SYGNO_HOUR_RETENTION_DAYS").as_deref(),
        )
    }

    /// How long `tier` summaries are kept (`None`: as long as the log).
    pub fn keep(&self, tier: Tier) -> Option<Millis> {
        match tier {
            Tier::Minute => self.minutes,
            Tier::Hour => self.hours,
        }
    }

    /// The first index of `tier` whose summaries are kept at `now`.
    pub fn first_kept_index(&self, tier: Tier, now: Millis) -> Option<i64> {
        self.kept_from(tier, now)
            .map(|t| t.div_euclid(tier_ms(tier)))
    }

    /// When the summary `(tier, index)` may be deleted, in seconds since
    /// the epoch (a DynamoDB TTL), `None` if kept as long as the log.
    pub fn expires_at(&self, tier: Tier, index: i64) -> Option<i64> {
        let end = (index + 1) * tier_ms(tier);
        self.keep(tier).map(|keep| (end + keep).div_euclid(1000))
    }

    /// The first instant whose `tier` summaries are kept at `now`.
    pub fn kept_from(&self, tier: Tier, now: Millis) -> Option<Millis> {
        let keep = self.keep(tier)?;
        let unit = tier_ms(tier);
        Some((now - keep).div_euclid(unit) * unit)
    }
}

impl SeriesQuery {
    /// The query over `[from, to)` (rounded outward to the interval).
    pub fn new(
        name: Option<String>,
        fields: Option<BTreeSet<String>>,
        interval: Interval,
        from: Millis,
        to: Millis,
    ) -> Result<Self, SeriesError> {
        let width = interval.ms();
        let from = from.div_euclid(width) * width;
        let to = to.div_euclid(width) * width + if to.rem_euclid(width) == 0 { 0 } else { width };
        if to < from {
            return Err(invalid("`to` lies before `from`"));
        }
        if from < MIN_EVENT_TIME || to > MAX_EVENT_TIME {
            return Err(invalid(format!(
                "the range, rounded to {}, must lie in the years 0001 to 9999",
                interval.as_str()
            )));
        }
        let buckets = (to - from) / width;
        if buckets > MAX_BUCKETS {
            return Err(SeriesError {
                code: "too_many_buckets",
                message: format!(
                    "{buckets} buckets of {} asked for; at most {MAX_BUCKETS}: narrow the range or widen the interval",
                    interval.as_str()
                ),
            });
        }
        Ok(SeriesQuery {
            name,
            fields,
            interval,
            from,
            to,
        })
    }

    /// The stored summaries to read: their tier and index range.
    pub fn reads(&self) -> (Tier, Range<i64>) {
        let tier = self.interval.tier();
        let unit = tier_ms(tier);
        (tier, self.from / unit..self.to / unit)
    }

    /// Refuses a range older than its tier's summaries are kept at `now`
    /// (422 `resolution_unavailable`, naming what is kept).
    pub fn check_retention(&self, retention: &Retention, now: Millis) -> Result<(), SeriesError> {
        let tier = self.interval.tier();
        let Some(kept_from) = retention.kept_from(tier, now) else {
            return Ok(());
        };
        if self.from >= kept_from || self.from >= self.to {
            return Ok(());
        }
        let coarser = match (tier, retention.kept_from(Tier::Hour, now)) {
            (Tier::Minute, None) => {
                "; intervals of 1h or more reach back as far as the log".to_owned()
            }
            (Tier::Minute, Some(hours)) => format!(
                "; intervals of 1h or more reach back to {}",
                format_rfc3339(hours)
            ),
            (Tier::Hour, _) => String::new(),
        };
        let what = match tier {
            Tier::Minute => "minute summaries (intervals 1m, 5m, 15m)",
            Tier::Hour => "hour summaries (intervals 1h, 6h, 1d)",
        };
        Err(SeriesError {
            code: "resolution_unavailable",
            message: format!(
                "{what} are kept from {} on{coarser}",
                format_rfc3339(kept_from)
            ),
        })
    }
}

/// Validates a `series` body: `{"name"?, "fields"?, "interval", "from",
/// "to"}`. Syntax first (400), then schema and values (422).
pub fn parse_series(body: &[u8]) -> Result<SeriesQuery, SeriesRequestError> {
    let top: BTreeMap<String, Box<RawValue>> =
        parse_json(body, "body must be a JSON object").map_err(SeriesRequestError::Write)?;
    if let Some(unknown) = top
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "fields" | "interval" | "from" | "to"))
    {
        return Err(invalid(format!(
            "unknown field `{unknown}`: allowed are `name`, `fields`, `interval`, `from` and `to`"
        ))
        .into());
    }
    let value = |key: &str| -> Result<Option<Value>, SeriesRequestError> {
        top.get(key)
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
            .transpose()
            .map_err(|e| SeriesRequestError::Write(WriteError::Syntax(e.to_string())))
            .map(|v| v.filter(|v| !v.is_null()))
    };
    let name = match value("name")? {
        None => None,
        Some(Value::String(name)) if (1..=MAX_NAME_CHARS).contains(&name.chars().count()) => {
            Some(name)
        }
        Some(_) => {
            return Err(invalid(format!(
                "`name` must be a string of 1 to {MAX_NAME_CHARS} characters"
            ))
            .into())
        }
    };
    let fields = match value("fields")? {
        None => None,
        Some(Value::Array(items)) => {
            if items.len() > MAX_SERIES_FIELDS {
                return Err(invalid(format!(
                    "`fields` names {} fields; at most {MAX_SERIES_FIELDS}",
                    items.len()
                ))
                .into());
            }
            let mut fields = BTreeSet::new();
            for item in items {
                let Value::String(path) = item else {
                    return Err(
                        invalid("`fields` must be an array of field paths (strings)").into(),
                    );
                };
                fields.insert(path);
            }
            Some(fields)
        }
        Some(_) => {
            return Err(invalid("`fields` must be an array of field paths (strings)").into())
        }
    };
    let interval = match value("interval")? {
        Some(Value::String(text)) => Interval::parse(&text),
        _ => None,
    }
    .ok_or_else(|| invalid("`interval` must be one of 1m, 5m, 15m, 1h, 6h, 1d"))?;
    let time = |key: &str| -> Result<Millis, SeriesRequestError> {
        match value(key)? {
            Some(Value::String(text)) => parse_rfc3339(&text),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(format!(
                "`{key}` must be an RFC 3339 timestamp such as 2026-11-25T00:00:00Z"
            ))
            .into()
        })
    };
    let (from, to) = (time("from")?, time("to")?);
    Ok(SeriesQuery::new(name, fields, interval, from, to)?)
}

/// A refused `series` body: a syntax error (400) or a schema or value
/// error (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesRequestError {
    #[error(transparent)]
    Write(WriteError),
    #[error(transparent)]
    Series(#[from] SeriesError),
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub start: Millis,
    pub summary: Summary,
}

/// Most statistics (bucket × field cells) one series answers: 10,000
/// buckets of 100 fields. A series of every field of a wide source asks
/// for more: 422, naming the way out (fewer fields, a coarser interval).
pub const MAX_SERIES_CELLS: usize = 1_000_000;
/// Most summaries read per store request when a series is folded
/// piecewise (a day of minutes).
pub const READ_CHUNK: i64 = 1_440;
/// Fewest summaries read per store request (an hour of minutes): the
/// first read, and every read of very wide summaries.
pub const MIN_READ_CHUNK: i64 = 60;
/// Field statistics one store request aims at: the summaries of a read
/// are held at once, so wide summaries are read fewer at a time.
pub const READ_CELLS: usize = 100_000;

/// The fold of a series, fed its tier's summaries in index order, piece
/// by piece (memory: the unfinished buckets and one read's summaries,
/// never the range's; finished buckets are taken out as they are):
/// each bucket is the empty summary merged with its summaries in index
/// order; empty buckets are left out; fields not asked for are dropped
/// (a bucket's event count is all its events).
#[derive(Debug)]
pub struct SeriesFold<'q> {
    query: &'q SeriesQuery,
    buckets: Vec<Bucket>,
    /// Fields put in buckets so far (taken out or not).
    cells: usize,
    /// Whether a summary was pushed, and the widest one's fields.
    summaries_seen: usize,
    widest: usize,
}

impl<'q> SeriesFold<'q> {
    pub fn new(query: &'q SeriesQuery) -> Self {
        SeriesFold {
            query,
            buckets: Vec::new(),
            cells: 0,
            summaries_seen: 0,
            widest: 0,
        }
    }

    /// The next index range to read from `at` (none past the query's
    /// range): [`MIN_READ_CHUNK`] summaries first, then as many as hold
    /// about [`READ_CELLS`] field statistics at the widest seen so far,
    /// between [`MIN_READ_CHUNK`] and [`READ_CHUNK`].
    pub fn next_read(&self, at: i64) -> Option<Range<i64>> {
        let (_, range) = self.query.reads();
        let at = at.max(range.start);
        if at >= range.end {
            return None;
        }
        let len = if self.summaries_seen == 0 {
            MIN_READ_CHUNK
        } else {
            let width = self.widest.max(1);
            i64::try_from(READ_CELLS / width)
                .unwrap_or(READ_CHUNK)
                .clamp(MIN_READ_CHUNK, READ_CHUNK)
        };
        Some(at..(at + len).min(range.end))
    }

    /// Takes out the buckets that no summary from index `next` on can
    /// change (all but those ending after its start), in order.
    pub fn take_finished(&mut self, next: i64) -> Vec<Bucket> {
        let (tier, _) = self.query.reads();
        let before = next.saturating_mul(tier_ms(tier));
        let width = self.query.interval.ms();
        let done = self
            .buckets
            .iter()
            .take_while(|b| b.start + width <= before)
            .count();
        self.buckets.drain(..done).collect()
    }

    /// The index ranges to read, in order, [`READ_CHUNK`] at a time.
    pub fn chunks(&self) -> impl Iterator<Item = Range<i64>> {
        let (_, range) = self.query.reads();
        (range.start..range.end)
            .step_by(READ_CHUNK as usize)
            .map(move |start| start..(start + READ_CHUNK).min(range.end))
    }

    /// Merges the next summary (index order): into the bucket it falls
    /// in, the fields not asked for dropped; an empty summary or one out
    /// of the range is ignored.
    pub fn push(&mut self, index: i64, summary: &Summary) -> Result<(), SeriesError> {
        let (tier, range) = self.query.reads();
        if !range.contains(&index) || summary.is_empty() {
            return Ok(());
        }
        self.summaries_seen += 1;
        self.widest = self.widest.max(summary.fields.len());
        let width = self.query.interval.ms();
        let start = (index * tier_ms(tier)).div_euclid(width) * width;
        if self.buckets.last().is_none_or(|b| b.start != start) {
            self.buckets.push(Bucket {
                start,
                summary: Summary::default(),
            });
        }
        let Some(bucket) = self.buckets.last_mut() else {
            return Ok(());
        };
        let before = bucket.summary.fields.len();
        match &self.query.fields {
            None => bucket.summary.merge(summary),
            Some(fields) => {
                let mut kept = Summary {
                    events: summary.events,
                    fields: BTreeMap::new(),
                };
                for (path, m) in &summary.fields {
                    if fields.contains(path) {
                        kept.fields.insert(path.clone(), *m);
                    }
                }
                bucket.summary.merge(&kept);
            }
        }
        self.cells += bucket.summary.fields.len() - before;
        if self.cells > MAX_SERIES_CELLS {
            return Err(SeriesError {
                code: "too_many_statistics",
                message: format!(
                    "the answer would hold more than {MAX_SERIES_CELLS} statistics (buckets x fields): name fewer `fields` or choose a coarser interval"
                ),
            });
        }
        Ok(())
    }

    /// Statistics (bucket × field) folded so far, taken out or not.
    pub fn cells(&self) -> usize {
        self.cells
    }

    /// The buckets with events not taken out yet, in order.
    pub fn finish(self) -> Vec<Bucket> {
        self.buckets
    }
}

/// The finest interval whose buckets over `[from, to)` number at most
/// `max_points` and whose summaries are kept that far back at `now`
/// (Grafana's choice of resolution); the coarsest, 1d, when none fits.
pub fn finest_interval(
    from: Millis,
    to: Millis,
    max_points: i64,
    retention: &Retention,
    now: Millis,
) -> Interval {
    Interval::ALL
        .into_iter()
        .find(|&interval| {
            SeriesQuery::new(None, None, interval, from, to).is_ok_and(|q| {
                (q.to - q.from) / interval.ms() <= max_points.max(1)
                    && q.check_retention(retention, now).is_ok()
            })
        })
        .unwrap_or(Interval::D1)
}

/// The original service's development views, as `expose` types: the
/// series of the window ending at the request's window end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Development {
    /// 15-minute buckets of the last 24 hours.
    Day,
    /// 1-day buckets of the last 7 days.
    Week,
}

impl Development {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "24h_development" => Some(Development::Day),
            "7d_development" => Some(Development::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Development::Day => "24h_development",
            Development::Week => "7d_development",
        }
    }

    /// Its series for the window ending at `end`.
    pub fn query(self, name: Option<String>, end: Millis) -> SeriesQuery {
        let (interval, span) = match self {
            Development::Day => (Interval::M15, DAY_MS),
            Development::Week => (Interval::D1, 7 * DAY_MS),
        };
        // At most 97 and 8 buckets: always within MAX_BUCKETS.
        SeriesQuery::new(name, None, interval, end - span, end).unwrap_or(SeriesQuery {
            name: None,
            fields: None,
            interval,
            from: end,
            to: end,
        })
    }
}

#[cfg(test)]
mod tests;
