//! The numeric fields of an event.
//!
//! Every numeric leaf of the event's `data` object is a field, nested objects
//! flattened with `.` (`{"a": {"b": 1}}` gives `a.b`); strings, booleans,
//! nulls and arrays are not aggregated. A climate computer's table
//! (`data.rows` whose first row is `["Variable", "Value"]`) instead gives one
//! field per `[name, value]` row, the value flattened the same way, and may
//! carry the event's time (`data.ts`) and name (`data.name`).
//!
//! Two leaves that flatten to one path by different spellings
//! (`{"a.b": 1, "a": {"b": 2}}`) are a [`FieldError::Collision`]; the same
//! spelling twice (a table row repeated) keeps the last value, as v1 did.
//! The write path also refuses events over [`MAX_EVENT_FIELDS`] fields or
//! with a path over [`MAX_PATH_BYTES`] bytes; the aggregator, which may read
//! events stored before those limits, leaves such paths out instead.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Field path to value, sorted by path, each path once.
pub type Fields = BTreeMap<String, f64>;

/// What a climate computer's table says beside its rows.
#[derive(Debug, Default, PartialEq)]
pub struct TableMeta<'a> {
    pub ts: Option<&'a Value>,
    pub name: Option<&'a Value>,
}

/// The fields of one event, and the table's metadata when it was a table.
#[derive(Debug, Default, PartialEq)]
pub struct Extracted<'a> {
    pub fields: Fields,
    pub table: Option<TableMeta<'a>>,
}

/// Most numeric fields one event may have.
pub const MAX_EVENT_FIELDS: usize = 1_000;
/// Longest field path, in bytes.
pub const MAX_PATH_BYTES: usize = 256;

/// Why an event's fields cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A table row that is not a `[string, value]` pair.
    #[error("data.rows[{row}] must be a [name, value] pair with a string name")]
    MalformedRow { row: usize },
    /// Two spellings of one path.
    #[error("two fields flatten to the same path `{path}` (e.g. {{\"a.b\": 1}} and {{\"a\": {{\"b\": 2}}}})")]
    Collision { path: String },
}

impl FieldError {
    /// The stable error code the contract gives this failure.
    pub fn code(&self) -> &'static str {
        match self {
            FieldError::MalformedRow { .. } => "invalid_body",
            FieldError::Collision { .. } => "field_collision",
        }
    }
}

const TABLE_HEADER: [&str; 2] = ["Variable", "Value"];

/// Extracts the fields of an event's `data` object.
pub fn extract(data: &Map<String, Value>) -> Result<Extracted<'_>, FieldError> {
    let mut out = Flattened::default();
    let Some(rows) = table_rows(data) else {
        for (key, value) in data {
            out.flatten(key, value, Spelling::default().then(key));
        }
        return out.finish(None);
    };
    for (row, entry) in rows.iter().enumerate().skip(1) {
        match entry.as_array().map(Vec::as_slice) {
            Some([Value::String(name), value]) => {
                out.flatten(name, value, Spelling::default().then(name));
            }
            _ => return Err(FieldError::MalformedRow { row }),
        }
    }
    out.finish(Some(TableMeta {
        ts: data.get("ts"),
        name: data.get("name"),
    }))
}

fn table_rows(data: &Map<String, Value>) -> Option<&Vec<Value>> {
    let rows = data.get("rows")?.as_array()?;
    let header = rows.first()?.as_array()?;
    let is_header = header.len() == 2
        && header
            .iter()
            .zip(TABLE_HEADER)
            .all(|(cell, want)| cell.as_str() == Some(want));
    is_header.then_some(rows)
}

/// Where the segments of a path end: two spellings of one path differ in
/// it. Kept as a running hash of the segment lengths (no allocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Spelling(u64);

impl Spelling {
    fn then(self, segment: &str) -> Spelling {
        let mixed = (self.0 ^ segment.len() as u64 ^ 0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(0x1000_0000_01b3)
            .rotate_left(29);
        Spelling(mixed)
    }
}

#[derive(Default)]
struct Flattened {
    fields: BTreeMap<String, (f64, Spelling)>,
    collision: Option<String>,
}

impl Flattened {
    fn flatten(&mut self, path: &str, value: &Value, spelling: Spelling) {
        match value {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    if let Some((_, earlier)) = self.fields.insert(path.to_owned(), (x, spelling)) {
                        if earlier != spelling && self.collision.is_none() {
                            self.collision = Some(path.to_owned());
                        }
                    }
                }
            }
            Value::Object(map) => {
                for (key, child) in map {
                    self.flatten(&format!("{path}.{key}"), child, spelling.then(key));
                }
            }
            Value::Null | Value::Bool(_) | Value::String(_) | Value::Array(_) => {}
        }
    }

    fn finish(self, table: Option<TableMeta<'_>>) -> Result<Extracted<'_>, FieldError> {
        if let Some(path) = self.collision {
            return Err(FieldError::Collision { path });
        }
        Ok(Extracted {
            fields: self.fields.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            table,
        })
    }
}

/// The fields of a stored event's raw `data` as the aggregator takes them:
/// `None` if `data` is not a JSON object. Events stored before the write
/// limits existed may break them: a collision keeps the last value, and
/// paths over [`MAX_PATH_BYTES`] are left out (the aggregator's field limit
/// bounds the rest).
pub fn of_stored(data: &str) -> Option<Fields> {
    let value: Map<String, Value> = serde_json::from_str(data).ok()?;
    let mut out = Flattened::default();
    match table_rows(&value) {
        None => {
            for (key, child) in &value {
                out.flatten(key, child, Spelling::default());
            }
        }
        Some(rows) => {
            for entry in rows.iter().skip(1) {
                if let Some([Value::String(name), child]) = entry.as_array().map(Vec::as_slice) {
                    out.flatten(name, child, Spelling::default());
                }
            }
        }
    }
    Some(
        out.fields
            .into_iter()
            .filter(|(k, _)| k.len() <= MAX_PATH_BYTES)
            .map(|(k, (v, _))| (k, v))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
