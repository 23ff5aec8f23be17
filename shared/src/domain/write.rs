//! Validation of a `write_raw` request: from body bytes to a [`WriteCommand`].
//!
//! The order of checks follows the contract: JSON syntax first (400), then
//! schema and values (422). Size and authentication are the shell's, earlier.

use crate::domain::fields::{self, Fields, MAX_EVENT_FIELDS, MAX_PATH_BYTES};
use crate::domain::time::{parse_rfc3339, Millis, MINUTE_MS};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Deepest accepted `data`, counting `data` itself as level 1.
pub const MAX_DEPTH: usize = 32;
/// How far in the future an `event_time` may lie.
pub const MAX_FUTURE_MS: Millis = 5 * MINUTE_MS;
/// `name` when neither the request nor its table gives one.
pub const DEFAULT_NAME: &str = "raw";
pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A validated write.
#[derive(Debug)]
pub struct WriteCommand {
    pub event_time: Millis,
    pub name: String,
    /// `data` exactly as sent.
    pub data: Box<RawValue>,
    pub fields: Fields,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Not JSON (400).
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not what the contract accepts (422). The text names the field.
    #[error("{0}")]
    Invalid(String),
    /// Within the schema but over one of the contract's limits (422 with
    /// its own code: `too_many_fields`, `field_path_too_long`,
    /// `field_collision`).
    #[error("{message}")]
    Limit { code: &'static str, message: String },
}

fn invalid(text: impl Into<String>) -> WriteError {
    WriteError::Invalid(text.into())
}

/// The earliest and latest instants an `event_time` may name: years 0001
/// to 9999 in UTC, so that every stored time formats as RFC 3339.
pub const MIN_EVENT_TIME: Millis = -62_135_596_800_000;
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// Validates a `write_raw` body received at `now`.
pub fn parse_write(body: &[u8], now: Millis) -> Result<WriteCommand, WriteError> {
    check_syntax(body)?;
    parse_event(body, now)
}

/// Largest accepted `write_batch` body.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;
/// Most events in one `write_batch`.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Why a batch was refused: the error, and the index of the first bad
/// event (`None` when the batch itself is malformed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub index: Option<usize>,
    pub error: WriteError,
}

impl From<WriteError> for BatchError {
    fn from(error: WriteError) -> Self {
        BatchError { index: None, error }
    }
}

/// Validates a `write_batch` body received at `now`: `{"events": [...]}`,
/// 1 to [`MAX_BATCH_EVENTS`] events, each checked as [`parse_write`]
/// checks one, and each at most [`MAX_BODY_BYTES`] as written. Syntax anywhere in the body comes first (400).
pub fn parse_batch(body: &[u8], now: Millis) -> Result<Vec<WriteCommand>, BatchError> {
    check_syntax(body)?;
    let mut top: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|e| classify(&e, body, "body must be a JSON object"))?;
    if let Some(unknown) = top.keys().find(|k| k.as_str() != "events") {
        return Err(invalid(format!("unknown field `{unknown}`: allowed is `events`")).into());
    }
    let raw = top
        .remove("events")
        .ok_or_else(|| invalid("`events` is required"))?;
    let events: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|e| classify(&e, raw.get().as_bytes(), "`events` must be an array"))?;
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(WriteError::Limit {
            code: "too_many_events",
            message: format!(
                "`events` holds {} events; a batch holds 1 to {MAX_BATCH_EVENTS}",
                events.len()
            ),
        }
        .into());
    }
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let text = event.get().as_bytes();
            if text.len() > MAX_BODY_BYTES {
                return Err(BatchError {
                    index: Some(index),
                    error: WriteError::Limit {
                        code: "event_too_large",
                        message: format!(
                            "events[{index}] is {} bytes; an event is at most {MAX_BODY_BYTES}, as a write_raw body",
                            text.len()
                        ),
                    },
                });
            }
            parse_event(text, now).map_err(|error| BatchError {
                index: Some(index),
                error: match error {
                    WriteError::Invalid(text) => {
                        WriteError::Invalid(format!("events[{index}]: {text}"))
                    }
                    WriteError::Limit { code, message } => WriteError::Limit {
                        code,
                        message: format!("events[{index}]: {message}"),
                    },
                    syntax @ WriteError::Syntax(_) => syntax,
                },
            })
        })
        .collect()
}

/// The idempotency key of the `index`-th event of a batch sent with
/// `batch_key`: as if that event had been written alone with its own key.
/// The space cannot occur in a key a client sends (visible ASCII only), so
/// it never names a `write_raw` key's event.
pub fn batch_event_key(batch_key: &str, index: usize) -> String {
    format!("{batch_key} {index}")
}

/// [`parse_write`] after the numbers' check.
fn parse_event(body: &[u8], now: Millis) -> Result<WriteCommand, WriteError> {
    let mut top: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|e| classify(&e, body, "body must be a JSON object"))?;
    if let Some(unknown) = top
        .keys()
        .find(|k| !matches!(k.as_str(), "data" | "event_time" | "name"))
    {
        return Err(invalid(format!(
            "unknown field `{unknown}`: allowed are `data`, `event_time` and `name`"
        )));
    }
    let raw_data = top
        .remove("data")
        .ok_or_else(|| invalid("`data` is required"))?;
    let data: Value = serde_json::from_str(raw_data.get()).map_err(|e| {
        classify(
            &e,
            raw_data.get().as_bytes(),
            "`data` must be a JSON object",
        )
    })?;
    let Value::Object(object) = &data else {
        return Err(invalid("`data` must be a JSON object"));
    };
    if depth(&data) > MAX_DEPTH {
        return Err(too_deep());
    }
    let extracted = fields::extract(object).map_err(|e| match e.code() {
        "invalid_body" => invalid(e.to_string()),
        code => WriteError::Limit {
            code,
            message: e.to_string(),
        },
    })?;
    check_field_limits(&extracted.fields)?;
    let table = extracted.table.unwrap_or_default();

    let event_time = match optional_string(&top, "event_time")? {
        Some(text) => parse_time(&text, "event_time")?,
        None => match table.ts {
            Some(Value::String(text)) => parse_time(text, "data.ts")?,
            Some(_) => return Err(invalid("`data.ts` must be an RFC 3339 timestamp string")),
            None => now,
        },
    };
    if !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&event_time) {
        return Err(invalid(
            "`event_time` must lie in the years 0001 to 9999 (UTC)",
        ));
    }
    if event_time > now + MAX_FUTURE_MS {
        return Err(invalid(
            "`event_time` lies more than 5 minutes in the future",
        ));
    }
    let name = match optional_string(&top, "name")? {
        Some(name) => check_name(name, "name")?,
        None => match table.name {
            Some(Value::String(name)) => check_name(name.clone(), "data.name")?,
            Some(_) => return Err(invalid("`data.name` must be a string")),
            None => DEFAULT_NAME.to_owned(),
        },
    };
    Ok(WriteCommand {
        event_time,
        name,
        fields: extracted.fields,
        data: raw_data,
    })
}

/// The contract's limits on an event's fields.
fn check_field_limits(fields: &Fields) -> Result<(), WriteError> {
    if fields.len() > MAX_EVENT_FIELDS {
        return Err(WriteError::Limit {
            code: "too_many_fields",
            message: format!(
                "`data` has {} numeric fields; at most {MAX_EVENT_FIELDS} are accepted",
                fields.len()
            ),
        });
    }
    if let Some(path) = fields.keys().find(|p| p.len() > MAX_PATH_BYTES) {
        let shown: String = path.chars().take(64).collect();
        return Err(WriteError::Limit {
            code: "field_path_too_long",
            message: format!(
                "field path `{shown}...` is {} bytes; at most {MAX_PATH_BYTES} are accepted",
                path.len()
            ),
        });
    }
    Ok(())
}

/// Checks a request body's JSON syntax before its schema (400 before 422):
/// a number outside the f64 range anywhere in it, trailing characters,
/// invalid UTF-8 or a truncated document is a syntax error, even where
/// the schema would have stopped first or skipped the offending part
/// (serde_json reports an out-of-range number as a data error, and does
/// not read the numbers of fields it does not keep). A document too deep
/// for serde_json's recursion limit passes: [`classify`] judges it where
/// the body is read for real.
pub fn check_syntax(body: &[u8]) -> Result<(), WriteError> {
    use serde_json::error::Category;
    match serde_json::from_slice::<Value>(body) {
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => Ok(()),
        Err(e)
            if e.to_string().starts_with("number out of range")
                || matches!(e.classify(), Category::Syntax | Category::Eof) =>
        {
            Err(WriteError::Syntax(e.to_string()))
        }
        _ => Ok(()),
    }
}

/// A request body read as `T`: its syntax checked first ([`check_syntax`],
/// a 400), then its shape ([`classify`]: a 422 naming `shape`).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, WriteError> {
    check_syntax(body)?;
    serde_json::from_slice(body).map_err(|e| classify(&e, body, shape))
}

/// Validates an `Idempotency-Key` header: 1 to 128 visible ASCII characters.
pub fn parse_idempotency_key(value: &[u8]) -> Result<String, WriteError> {
    let visible = value.iter().all(|b| (0x21..=0x7e).contains(b));
    if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY_LEN || !visible {
        return Err(invalid(
            "`Idempotency-Key` header must be 1 to 128 visible ASCII characters",
        ));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

fn too_deep() -> WriteError {
    invalid(format!("`data` is nested deeper than {MAX_DEPTH} levels"))
}

/// Maps a serde_json error: syntax is a 400; a well-formed document of the
/// wrong shape is a 422; a document too deep for serde_json's recursion
/// limit is validated again without that limit, and is then a 422 for its
/// depth if it is well formed.
pub fn classify(error: &serde_json::Error, text: &[u8], shape: &str) -> WriteError {
    use serde_json::error::Category;
    if error.to_string().starts_with("recursion limit exceeded") {
        return if is_valid_json(text) {
            too_deep()
        } else {
            WriteError::Syntax(error.to_string())
        };
    }
    match error.classify() {
        Category::Data => invalid(shape),
        Category::Syntax | Category::Eof | Category::Io => WriteError::Syntax(error.to_string()),
    }
}

/// Checks syntax at any depth, growing the stack on the heap as needed.
fn is_valid_json(text: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    let ok = IgnoredAny::deserialize(serde_stacker::Deserializer::new(&mut de)).is_ok();
    ok && de.end().is_ok()
}

fn optional_string(
    top: &BTreeMap<String, Box<RawValue>>,
    key: &str,
) -> Result<Option<String>, WriteError> {
    let Some(raw) = top.get(key) else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::String(s)) => Ok(Some(s)),
        Ok(_) => Err(invalid(format!("`{key}` must be a string"))),
        Err(e) => Err(WriteError::Syntax(e.to_string())),
    }
}

fn parse_time(text: &str, field: &str) -> Result<Millis, WriteError> {
    parse_rfc3339(text).ok_or_else(|| {
        invalid(format!(
            "`{field}` must be an RFC 3339 timestamp such as 2021-05-01T12:07:50+02:00"
        ))
    })
}

fn check_name(name: String, field: &str) -> Result<String, WriteError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(invalid(format!(
            "`{field}` must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name)
}

/// Nesting depth: a scalar is 0, an object or array one more than its deepest child.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
