//! The rows `expose` can ask for.

use crate::domain::time::{Millis, DAY_MS, WEEK_MS};

/// One materialized row of the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExposeKind {
    Latest,
    DayAverage,
    DayDevt,
    WeekAverage,
    WeekDevt,
}

/// Which statistic a window row reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Mean,
    SampleStd,
}

impl ExposeKind {
    pub const ALL: [ExposeKind; 5] = [
        ExposeKind::Latest,
        ExposeKind::DayAverage,
        ExposeKind::DayDevt,
        ExposeKind::WeekAverage,
        ExposeKind::WeekDevt,
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
        }
    }

    /// The window's length, `None` for `latest`.
    pub fn span(self) -> Option<Millis> {
        match self {
            ExposeKind::Latest => None,
            ExposeKind::DayAverage | ExposeKind::DayDevt => Some(DAY_MS),
            ExposeKind::WeekAverage | ExposeKind::WeekDevt => Some(WEEK_MS),
        }
    }

    pub fn statistic(self) -> Option<Statistic> {
        match self {
            ExposeKind::Latest => None,
            ExposeKind::DayAverage | ExposeKind::WeekAverage => Some(Statistic::Mean),
            ExposeKind::DayDevt | ExposeKind::WeekDevt => Some(Statistic::SampleStd),
        }
    }
}
