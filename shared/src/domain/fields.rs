//! The numeric fields of an event.
//!
//! Every numeric leaf of the event's `data` object is a field, nested objects
//! flattened with `.` (`{"a": {"b": 1}}` gives `a.b`); strings, booleans,
//! nulls and arrays are not aggregated. A climate computer's table
//! (`data.rows` whose first row is `["Variable", "Value"]`) instead gives one
//! field per `[name, value]` row, the value flattened the same way, and may
//! carry the event's time (`data.ts`) and name (`data.name`).
//!
//! When two leaves flatten to the same path the last one wins.

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

/// A table row that is not a `[string, value]` pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data.rows[{row}] must be a [name, value] pair with a string name")]
pub struct MalformedRow {
    pub row: usize,
}

const TABLE_HEADER: [&str; 2] = ["Variable", "Value"];

/// Extracts the fields of an event's `data` object.
pub fn extract(data: &Map<String, Value>) -> Result<Extracted<'_>, MalformedRow> {
    let mut fields = Fields::new();
    let Some(rows) = table_rows(data) else {
        for (key, value) in data {
            flatten(key, value, &mut fields);
        }
        return Ok(Extracted {
            fields,
            table: None,
        });
    };
    for (row, entry) in rows.iter().enumerate().skip(1) {
        match entry.as_array().map(Vec::as_slice) {
            Some([Value::String(name), value]) => flatten(name, value, &mut fields),
            _ => return Err(MalformedRow { row }),
        }
    }
    Ok(Extracted {
        fields,
        table: Some(TableMeta {
            ts: data.get("ts"),
            name: data.get("name"),
        }),
    })
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

fn flatten(path: &str, value: &Value, out: &mut Fields) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(path.to_owned(), x);
            }
        }
        Value::Object(map) => {
            for (key, child) in map {
                flatten(&format!("{path}.{key}"), child, out);
            }
        }
        Value::Null | Value::Bool(_) | Value::String(_) | Value::Array(_) => {}
    }
}

#[cfg(test)]
mod tests;
