//! The persisted forms of the aggregates, shared by the adapters.
//!
//! A [`Summary`] is little-endian binary (see [`encode_summary`]): its
//! size is the paths' bytes plus a fixed 42 bytes per field, whatever the
//! paths hold (JSON would escape a control character to six bytes, and
//! DynamoDB's 4 MB transaction is sized by the worst case) and every f64
//! reads back to the same bits. Summaries written by earlier versions as
//! JSON, `{"e": events, "f": {"path": [count, mean, sd, min, max]}}`,
//! still read.

use crate::domain::fold::{LatestKey, ScopeState};
use crate::domain::limit::FieldLimit;
use crate::domain::stats::Moments;
use crate::domain::summary::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The first byte of a binary summary (never `{`, which starts the JSON
/// form of earlier versions).
const SUMMARY_MAGIC: u8 = 0xB3;

/// Bytes a summary's field takes besides its path: the path's length
/// (u16), count (u64) and mean, sd, min, max (f64).
pub const SUMMARY_FIELD_BYTES: usize = 2 + 8 + 4 * 8;

/// Bytes a summary takes besides its fields: magic, events (u64).
pub const SUMMARY_HEADER_BYTES: usize = 1 + 8;

/// `summary` as bytes: `SUMMARY_MAGIC`, events, then per field (in path
/// order) the path's length and bytes, count, mean, sd, min, max. Paths
/// are at most 256 bytes (the write path's limit), so their length fits.
pub fn encode_summary(summary: &Summary) -> Vec<u8> {
    let paths: usize = summary.fields.keys().map(String::len).sum();
    let mut out = Vec::with_capacity(
        SUMMARY_HEADER_BYTES + paths + SUMMARY_FIELD_BYTES * summary.fields.len(),
    );
    out.push(SUMMARY_MAGIC);
    out.extend(summary.events.to_le_bytes());
    for (path, m) in &summary.fields {
        let len = u16::try_from(path.len()).unwrap_or(u16::MAX);
        out.extend(len.to_le_bytes());
        out.extend(&path.as_bytes()[..usize::from(len)]);
        out.extend(m.count.to_le_bytes());
        for x in [m.mean, m.sd, m.min, m.max] {
            out.extend(x.to_le_bytes());
        }
    }
    out
}

/// A summary in either stored form (binary, or the JSON of earlier
/// versions).
pub fn decode_summary(bytes: &[u8]) -> Result<Summary, CodecError> {
    match bytes.first() {
        Some(&SUMMARY_MAGIC) => {
            decode_binary_summary(&bytes[1..]).ok_or(CodecError::Summary(bytes.len()))
        }
        _ => decode_json_summary(bytes).map_err(CodecError::Json),
    }
}

fn decode_binary_summary(mut rest: &[u8]) -> Option<Summary> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn word(rest: &mut &[u8]) -> Option<[u8; 8]> {
        take(rest, 8)?.try_into().ok()
    }
    let mut summary = Summary {
        events: u64::from_le_bytes(word(&mut rest)?),
        ..Summary::default()
    };
    while !rest.is_empty() {
        let len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
        let path = std::str::from_utf8(take(&mut rest, usize::from(len))?).ok()?;
        let count = u64::from_le_bytes(word(&mut rest)?);
        let mut x = [0.0; 4];
        for v in &mut x {
            *v = f64::from_le_bytes(word(&mut rest)?);
        }
        let [mean, sd, min, max] = x;
        summary.fields.insert(
            path.to_owned(),
            Moments {
                count,
                mean,
                sd,
                min,
                max,
            },
        );
    }
    Some(summary)
}

#[derive(Deserialize)]
struct JsonSummary {
    e: u64,
    f: BTreeMap<String, (u64, f64, f64, f64, f64)>,
}

fn decode_json_summary(bytes: &[u8]) -> Result<Summary, serde_json::Error> {
    let record: JsonSummary = serde_json::from_slice(bytes)?;
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
    #[error("a binary summary of {0} bytes is cut short or not UTF-8")]
    Summary(usize),
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
        summary.record(&Fields::from([("q\"\u{1}é".to_owned(), f64::MIN_POSITIVE)]));
        let bytes = encode_summary(&summary);
        assert_eq!(
            bytes.len(),
            SUMMARY_HEADER_BYTES + 3 + 5 + 2 * SUMMARY_FIELD_BYTES,
            "paths' bytes plus a fixed size per field"
        );
        assert_eq!(decode_summary(&bytes).ok(), Some(summary.clone()));
        for cut in 1..bytes.len() {
            let partial = decode_summary(&bytes[..cut]);
            assert!(
                partial.is_err()
                    || cut == SUMMARY_HEADER_BYTES
                    || cut == SUMMARY_HEADER_BYTES + 3 + SUMMARY_FIELD_BYTES,
                "cut at {cut}: {partial:?}"
            );
        }
        let json = br#"{"e":2,"f":{"a":[2,1.5,0.5,1.0,2.0]}}"#;
        let legacy = decode_summary(json).expect("the JSON form of earlier versions");
        assert_eq!((legacy.events, legacy.fields["a"].sd), (2, 0.5));

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
