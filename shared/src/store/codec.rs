//! The persisted form of a bucket [`Summary`]: compact JSON,
//! `{"e": events, "f": {"path": [count, mean, m2]}}`. serde_json is built
//! with `float_roundtrip`, so every f64 reads back to the same bits.

use crate::domain::series::Summary;
use crate::domain::stats::Moments;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize)]
struct SummaryRecord {
    e: u64,
    /// Non-finite values (an overflowed mean) are stored as null.
    f: BTreeMap<String, (u64, Option<f64>, Option<f64>)>,
}

pub fn encode_summary(summary: &Summary) -> String {
    let record = SummaryRecord {
        e: summary.events,
        f: summary
            .fields
            .iter()
            .map(|(k, m)| (k.clone(), (m.count, finite(m.mean), finite(m.m2))))
            .collect(),
    };
    // A map of strings to numbers always serializes; non-finite floats become null.
    serde_json::to_string(&record).unwrap_or_default()
}

pub fn decode_summary(text: &str) -> Result<Summary, serde_json::Error> {
    let record: SummaryRecord = serde_json::from_str(text)?;
    Ok(Summary {
        events: record.e,
        fields: record
            .f
            .into_iter()
            .map(|(k, (count, mean, m2))| {
                let mean = mean.unwrap_or(f64::NAN);
                let m2 = m2.unwrap_or(f64::NAN);
                (k, Moments { count, mean, m2 })
            })
            .collect(),
    })
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}
