//! The persisted forms of the aggregates, shared by the adapters.
//!
//! A [`Summary`] is compact JSON,
//! `{"e": events, "f": {"path": [count, mean, sd, min, max]}}` (see
//! [`Moments`]). serde_json is built with `float_roundtrip`, so every f64
//! reads back to the same bits.
//!
//! [`FORMAT`] names this form; stores keep it beside their summaries and
//! remake summaries written in an older form (they are derived data).

use crate::domain::fold::{LatestKey, ScopeState};
use crate::domain::limit::FieldLimit;
use crate::domain::stats::Moments;
use crate::domain::summary::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The summary format's version. 1: `[count, mean, m2]`; 2: this one.
pub const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct SummaryRecord {
    e: u64,
    f: BTreeMap<String, (u64, f64, f64, f64, f64)>,
}

pub fn encode_summary(summary: &Summary) -> String {
    let record = SummaryRecord {
        e: summary.events,
        f: summary
            .fields
            .iter()
            .map(|(k, m)| (k.clone(), (m.count, m.mean, m.sd, m.min, m.max)))
            .collect(),
    };
    // Every stored moment is finite (see `Moments`), so this serializes.
    serde_json::to_string(&record).unwrap_or_default()
}

pub fn decode_summary(text: &str) -> Result<Summary, serde_json::Error> {
    let record: SummaryRecord = serde_json::from_str(text)?;
    Ok(Summary {
        events: record.e,
        fields: record
            .f
            .into_iter()
            .map(|(k, (count, mean, sd, min, max))| {
                (
                    k,
                    Moments {
                        count,
                        mean,
                        sd,
                        min,
                        max,
                    },
                )
            })
            .collect(),
    })
}

/// The persisted form of a [`ScopeState`] without its field limit (see
/// [`encode_limit`]): compact JSON.
#[derive(Serialize, Deserialize)]
struct ScopeRecord {
    n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<i64>,
    /// `latest`: event time, received at, event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<(i64, i64, String)>,
}

pub fn encode_scope(state: &ScopeState) -> String {
    let record = ScopeRecord {
        n: state.events,
        f: state.first_event_time,
        l: state.last_event_time,
        t: state
            .latest
            .as_ref()
            .map(|k| (k.event_time, k.received_at, k.event_id.clone())),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// A scope state from [`encode_scope`] and [`encode_limit`]'s forms.
pub fn decode_scope(text: &str, limit: &[u8]) -> Result<ScopeState, CodecError> {
    let record: ScopeRecord = serde_json::from_str(text).map_err(CodecError::Json)?;
    Ok(ScopeState {
        events: record.n,
        first_event_time: record.f,
        last_event_time: record.l,
        latest: record
            .t
            .map(|(event_time, received_at, event_id)| LatestKey {
                event_time,
                received_at,
                event_id,
            }),
        fields: decode_limit(limit)?,
    })
}

/// A stored form that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("bad JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("field limit state is {0} bytes, not a whole number of entries")]
    Limit(usize),
}

/// The persisted form of a [`FieldLimit`]: little-endian binary, 16 bytes
/// of header (clock, swept), an entry count, then 16 bytes per entry
/// (hash, minute): about 190 KB at 2,000 aggregated and 10,000 dropped
/// paths, whatever the paths' length.
pub fn encode_limit(limit: &FieldLimit) -> Vec<u8> {
    let entries = limit.admitted.len() + limit.dropped.len();
    let mut out = Vec::with_capacity(24 + 16 * entries);
    out.extend(limit.clock.to_le_bytes());
    out.extend(limit.swept.to_le_bytes());
    out.extend((limit.admitted.len() as u64).to_le_bytes());
    for (hash, minute) in limit.admitted.iter().chain(&limit.dropped) {
        out.extend(hash.to_le_bytes());
        out.extend(minute.to_le_bytes());
    }
    out
}

pub fn decode_limit(bytes: &[u8]) -> Result<FieldLimit, CodecError> {
    if bytes.is_empty() {
        return Ok(FieldLimit::default());
    }
    let bad = || CodecError::Limit(bytes.len());
    if bytes.len() < 24 || !(bytes.len() - 24).is_multiple_of(16) {
        return Err(bad());
    }
    let word = |at: usize| -> [u8; 8] {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        w
    };
    let admitted_len = u64::from_le_bytes(word(16)) as usize;
    let total = (bytes.len() - 24) / 16;
    if admitted_len > total {
        return Err(bad());
    }
    let mut limit = FieldLimit {
        clock: i64::from_le_bytes(word(0)),
        swept: i64::from_le_bytes(word(8)),
        ..FieldLimit::default()
    };
    for i in 0..total {
        let at = 24 + 16 * i;
        let (hash, minute) = (
            u64::from_le_bytes(word(at)),
            i64::from_le_bytes(word(at + 8)),
        );
        if i < admitted_len {
            limit.admitted.insert(hash, minute);
        } else {
            limit.dropped.insert(hash, minute);
        }
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fields::Fields;

    #[test]
    fn summaries_scopes_and_limits_round_trip() {
        let mut summary = Summary::default();
        for v in [1e308, -1e308, 0.1, 5e-300] {
            summary.record(&Fields::from([("a.b".to_owned(), v)]));
        }
        summary.record(&Fields::new());
        let back = decode_summary(&encode_summary(&summary)).ok();
        assert_eq!(back, Some(summary));

        let mut state = ScopeState {
            events: 3,
            first_event_time: Some(-5),
            last_event_time: Some(9),
            latest: Some(LatestKey {
                event_time: 9,
                received_at: 10,
                event_id: "e".into(),
            }),
            fields: FieldLimit::default(),
        };
        let names: Fields = (0..10).map(|i| (format!("f{i}"), 1.0)).collect();
        state.fields.admit(&names, 9, 6);
        let back = decode_scope(&encode_scope(&state), &encode_limit(&state.fields)).ok();
        assert_eq!(back, Some(state));
        assert!(decode_limit(&[1, 2, 3]).is_err());
        assert_eq!(decode_limit(&[]).ok(), Some(FieldLimit::default()));
    }
}
