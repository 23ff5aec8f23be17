//! The canonical fold of a window, and a cache that keeps it cheap.
//!
//! A window `[end - span, end)` is read as its [`Pieces`]: the leading
//! partial hour's minutes, the whole hours, the trailing partial hour's
//! minutes. Each piece is folded left to right from an empty summary, and
//! the window is the empty summary merged with each piece in that order.
//! The result is a function of the stored summaries and the window alone,
//! so the rows a rebuild renders equal those of incremental processing.
//!
//! [`WindowCache`] keeps the fold of each piece (for the trailing piece:
//! all of it but its last minute, where new events land) and extends it
//! left to right as the window moves, so that rendering in steady state
//! reads one or two summaries per window instead of about 290. A change to
//! a stored summary must be reported ([`WindowCache::invalidate`]) before
//! the next fold.

use crate::domain::summary::Summary;
use crate::domain::tiers::{Pieces, Tier, BLOCK_BUCKETS};
use crate::domain::time::{bucket_of, Millis};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// A window's pieces in canonical order: `(tier, index range)`.
pub fn pieces(end: Millis, span: Millis) -> Vec<(Tier, Range<i64>)> {
    let pieces = Pieces::of(end, span);
    let hours_start = pieces.hours.start * BLOCK_BUCKETS;
    let mut out: Vec<(Tier, Range<i64>)> = Vec::with_capacity(3);
    let (lead, trail): (Vec<_>, Vec<_>) = pieces
        .minutes
        .into_iter()
        .partition(|r| !pieces.hours.is_empty() && r.start < hours_start);
    out.extend(lead.into_iter().map(|r| (Tier::Minute, r)));
    if !pieces.hours.is_empty() {
        out.push((Tier::Hour, pieces.hours));
    }
    out.extend(trail.into_iter().map(|r| (Tier::Minute, r)));
    out
}

/// Folds of window pieces, by tier and first index (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct WindowCache {
    /// `(tier, start)` -> `(end, fold of [start, end))`.
    folds: BTreeMap<(Tier, i64), (i64, Summary)>,
    used: BTreeSet<(Tier, i64)>,
}

/// Where a piece's cached part ends: before the last minute of a piece
/// that ends at the window's end (the minute still receiving events).
fn cached_end(tier: Tier, range: &Range<i64>, window_end: i64) -> i64 {
    if tier == Tier::Minute && range.end == window_end && range.end - range.start > 1 {
        range.end - 1
    } else {
        range.end
    }
}

impl WindowCache {
    /// Forgets every fold that includes summary `(tier, index)`.
    pub fn invalidate(&mut self, tier: Tier, index: i64) {
        self.folds
            .retain(|(t, start), (end, _)| !(*t == tier && *start <= index && index < *end));
    }

    /// The stored summaries [`WindowCache::fold`] will read for this
    /// window, as `(tier, index range)`: load them before folding.
    pub fn reads(&self, end: Millis, span: Millis) -> Vec<(Tier, Range<i64>)> {
        let window_end = bucket_of(end);
        let mut out = Vec::new();
        for (tier, range) in pieces(end, span) {
            let cut = cached_end(tier, &range, window_end);
            match self.folds.get(&(tier, range.start)) {
                Some((done, _)) if *done <= cut => out.push((tier, *done..cut)),
                _ => out.push((tier, range.start..cut)),
            }
            out.push((tier, cut..range.end));
        }
        out.retain(|(_, r)| !r.is_empty());
        out
    }

    /// The canonical fold of the window `[end - span, end)`. `stored(tier,
    /// range)` gives the stored summaries with index in `range`, in index
    /// order (absent ones left out); it is asked only for [`Self::reads`].
    pub fn fold<'s, I>(
        &mut self,
        end: Millis,
        span: Millis,
        stored: &mut impl FnMut(Tier, Range<i64>) -> I,
    ) -> Summary
    where
        I: Iterator<Item = &'s Summary>,
    {
        let window_end = bucket_of(end);
        let mut window = Summary::default();
        for (tier, range) in pieces(end, span) {
            let cut = cached_end(tier, &range, window_end);
            let key = (tier, range.start);
            let (from, mut piece) = match self.folds.remove(&key) {
                Some((done, fold)) if done <= cut => (done, fold),
                _ => (range.start, Summary::default()),
            };
            for summary in stored(tier, from..cut) {
                piece.merge(summary);
            }
            self.folds.insert(key, (cut, piece.clone()));
            self.used.insert(key);
            for summary in stored(tier, cut..range.end) {
                piece.merge(summary);
            }
            window.merge(&piece);
        }
        window
    }

    /// Drops the folds no window used since the last call.
    pub fn retain_used(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.folds.retain(|key, _| used.contains(key));
    }
}

/// The canonical fold of a window over summaries held in a map, without a
/// cache (for callers that read every piece anyway).
pub fn fold_map(map: &BTreeMap<(Tier, i64), Summary>, end: Millis, span: Millis) -> Summary {
    WindowCache::default().fold(end, span, &mut |tier, range: Range<i64>| {
        map.range((tier, range.start)..(tier, range.end))
            .map(|(_, s)| s)
    })
}

#[cfg(test)]
mod tests;
