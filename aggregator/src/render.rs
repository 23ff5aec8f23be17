//! Rows from stored summaries, for both stores: which summaries a set of
//! aggregates' windows need ([`reads`]), and the rows and `sources`
//! entries folded from them through each aggregate's
//! [`WindowCache`] ([`rows`]). The stores only load what [`reads`] asks.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use sygno_shared::domain::expose::ExposeKind;
use sygno_shared::domain::fold::{Scope, ScopeState, SummaryKey};
use sygno_shared::domain::summary::Summary;
use sygno_shared::domain::tiers::Tier;
use sygno_shared::domain::time::{Millis, DAY_MS, WEEK_MS};
use sygno_shared::domain::window::WindowCache;
use sygno_shared::views::{render_source, render_windows};

/// Fields of the aggregates rendered together: their summaries are loaded
/// at once, so this bounds the memory a render holds (a cold aggregate's
/// windows are up to ~290 summaries of its fields, ~100 bytes a field in
/// memory: ~30 MB at this budget). An aggregate wider than the budget is
/// rendered alone.
pub const RENDER_FIELDS: usize = 1_000;

/// `scopes` cut into consecutive chunks of at most [`RENDER_FIELDS`]
/// fields (counting an aggregate without fields as one).
pub fn chunks<'a, 'b>(
    scopes: &'b [(&'a Scope, &'a ScopeState)],
) -> Vec<&'b [(&'a Scope, &'a ScopeState)]> {
    let mut out = Vec::new();
    let (mut start, mut fields) = (0, 0);
    for (i, (_, state)) in scopes.iter().enumerate() {
        let width = state.fields.aggregated().max(1);
        if fields + width > RENDER_FIELDS && i > start {
            out.push(&scopes[start..i]);
            (start, fields) = (i, 0);
        }
        fields += width;
    }
    if start < scopes.len() {
        out.push(&scopes[start..]);
    }
    out
}

const SPANS: [Millis; 2] = [DAY_MS, WEEK_MS];

/// Rendered rows and `sources` entries.
#[derive(Debug, Default)]
pub struct Rendered {
    pub views: Vec<(Scope, ExposeKind, String)>,
    pub sources: Vec<(String, String)>,
}

impl Rendered {
    pub fn extend(&mut self, other: Rendered) {
        self.views.extend(other.views);
        self.sources.extend(other.sources);
    }
}

/// The stored summaries the windows ending at `end` of `scopes` need, as
/// `(scope, tier, index range)`, given what their caches hold.
pub fn reads(
    scopes: &[(&Scope, &ScopeState)],
    caches: &mut HashMap<Scope, WindowCache>,
    end: Millis,
) -> Vec<(Scope, Tier, Range<i64>)> {
    let mut out = Vec::new();
    for (scope, _) in scopes {
        let cache = caches.entry((*scope).clone()).or_default();
        let mut ranges: Vec<(Tier, Range<i64>)> = SPANS
            .iter()
            .flat_map(|span| cache.reads(end, *span))
            .collect();
        ranges.sort_by_key(|(t, r)| (*t, r.start, r.end));
        ranges.dedup();
        out.extend(ranges.into_iter().map(|(t, r)| ((*scope).clone(), t, r)));
    }
    out
}

/// The 24-hour and 7-day windows of `scope` ending at `end`, folded
/// through its cache from `stored`.
pub fn windows_of(
    scope: &Scope,
    stored: &BTreeMap<SummaryKey, Summary>,
    caches: &mut HashMap<Scope, WindowCache>,
    end: Millis,
) -> [Summary; 2] {
    let cache = caches.entry(scope.clone()).or_default();
    let windows = SPANS.map(|span| {
        cache.fold(end, span, &mut |tier, range: Range<i64>| {
            let key = |index| SummaryKey {
                scope: scope.clone(),
                tier,
                index,
            };
            stored
                .range(key(range.start)..key(range.end))
                .map(|(_, s)| s)
        })
    });
    cache.retain_used();
    windows
}

/// The rows of `scopes` with windows ending at `end`, from `stored`
/// (everything [`reads`] asked for, and any fresher summaries laid over).
pub fn rows(
    scopes: &[(&Scope, &ScopeState)],
    stored: &BTreeMap<SummaryKey, Summary>,
    caches: &mut HashMap<Scope, WindowCache>,
    end: Millis,
) -> Rendered {
    let mut out = Rendered::default();
    for (scope, state) in scopes {
        let windows = windows_of(scope, stored, caches, end);
        for (kind, doc) in render_windows(end, &windows, state.fields.dropped_before(end)) {
            out.views.push(((*scope).clone(), kind, doc));
        }
        if let Some(name) = scope.name() {
            out.sources.push((
                name.to_owned(),
                render_source(name, state, &windows[1], end),
            ));
        }
    }
    out
}

/// The all-events aggregate's rows, from its `parts` (a store that keeps
/// it in parts: `Scope::all_part`): each part's windows ([`windows_of`])
/// and scope state, merged part by part in order. Each part takes at most
/// `max_fields` fields, so their union may hold more: the rows then keep
/// the `max_fields` fields with the most values in the 7-day window (ties
/// by path) and count the others as dropped, with the paths every part
/// dropped.
pub fn merged_rows(
    parts: &[([Summary; 2], &ScopeState)],
    end: Millis,
    max_fields: usize,
) -> Rendered {
    let mut merged = [Summary::default(), Summary::default()];
    let mut state = ScopeState::default();
    for (windows, part_state) in parts {
        for (window, part_window) in merged.iter_mut().zip(windows) {
            window.merge(part_window);
        }
        state.merge(part_state);
    }
    // Paths some part dropped and none aggregated.
    let mut dropped = state.fields.dropped_before(end);
    let fields = merged[1].fields.len();
    if fields > max_fields {
        let mut ranked: Vec<(&String, u64)> =
            merged[1].fields.iter().map(|(p, m)| (p, m.count)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let kept: std::collections::BTreeSet<String> = ranked
            .into_iter()
            .take(max_fields)
            .map(|(p, _)| p.clone())
            .collect();
        for window in &mut merged {
            window.fields.retain(|path, _| kept.contains(path));
        }
        dropped += fields - max_fields;
    }
    let mut out = Rendered::default();
    for (kind, doc) in render_windows(end, &merged, dropped) {
        out.views.push((Scope::All, kind, doc));
    }
    out
}
