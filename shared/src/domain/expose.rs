//! The rows `expose` can ask for.

use crate::domain::time::{Millis, DAY_MS, WEEK_MS};

/// One materialized row of the read model (per aggregate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExposeKind {
    Latest,
    DayAverage,
    DayDevt,
    WeekAverage,
    WeekDevt,
    DayStats,
    WeekStats,
}

/// Which statistics a window row reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// v1: `value` is the mean.
    Mean,
    /// v1: `value` is the sample standard deviation.
    SampleStd,
    /// v2: count, mean, std, min and max.
    All,
}

impl ExposeKind {
    pub const ALL: [ExposeKind; 7] = [
        ExposeKind::Latest,
        ExposeKind::DayAverage,
        ExposeKind::DayDevt,
        ExposeKind::WeekAverage,
        ExposeKind::WeekDevt,
        ExposeKind::DayStats,
        ExposeKind::WeekStats,
    ];

    /// The window rows, by window: `(span, kinds)`.
    pub const WINDOWS: [(Millis, [ExposeKind; 3]); 2] = [
        (
            DAY_MS,
            [
                ExposeKind::DayAverage,
                ExposeKind::DayDevt,
                ExposeKind::DayStats,
            ],
        ),
        (
            WEEK_MS,
            [
                ExposeKind::WeekAverage,
                ExposeKind::WeekDevt,
                ExposeKind::WeekStats,
            ],
        ),
    ];

    /// Parses the `type` of an `expose` request; `24_average` is the
    /// original API's spelling of `24h_average`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "latest" => ExposeKind::Latest,
            "24h_average" | "24_average" => ExposeKind::DayAverage,
            "24h_devt" => ExposeKind::DayDevt,
            "7d_average" => ExposeKind::WeekAverage,
            "7d_devt" => ExposeKind::WeekDevt,
            "24h_stats" => ExposeKind::DayStats,
            "7d_stats" => ExposeKind::WeekStats,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExposeKind::Latest => "latest",
            ExposeKind::DayAverage => "24h_average",
            ExposeKind::DayDevt => "24h_devt",
            ExposeKind::WeekAverage => "7d_average",
            ExposeKind::WeekDevt => "7d_devt",
            ExposeKind::DayStats => "24h_stats",
            ExposeKind::WeekStats => "7d_stats",
        }
    }

    /// The window's length, `None` for `latest`.
    pub fn span(self) -> Option<Millis> {
        match self {
            ExposeKind::Latest => None,
            ExposeKind::DayAverage | ExposeKind::DayDevt | ExposeKind::DayStats => Some(DAY_MS),
            ExposeKind::WeekAverage | ExposeKind::WeekDevt | ExposeKind::WeekStats => Some(WEEK_MS),
        }
    }

    /// The stats row of the same window, for the v1 window kinds (their
    /// figures are in it: `views::derive_window`).
    pub fn stats_row(self) -> Option<ExposeKind> {
        match self {
            ExposeKind::DayAverage | ExposeKind::DayDevt => Some(ExposeKind::DayStats),
            ExposeKind::WeekAverage | ExposeKind::WeekDevt => Some(ExposeKind::WeekStats),
            _ => None,
        }
    }

    pub fn statistic(self) -> Option<Statistic> {
        match self {
            ExposeKind::Latest => None,
            ExposeKind::DayAverage | ExposeKind::WeekAverage => Some(Statistic::Mean),
            ExposeKind::DayDevt | ExposeKind::WeekDevt => Some(Statistic::SampleStd),
            ExposeKind::DayStats | ExposeKind::WeekStats => Some(Statistic::All),
        }
    }
}
