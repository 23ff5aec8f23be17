//! Events as the log holds them.

use crate::domain::time::Millis;

/// An accepted write, ready to append. Built by the write path from a
/// validated [`crate::domain::write::WriteCommand`] plus the shell's id and clock.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: String,
    pub event_time: Millis,
    pub received_at: Millis,
    pub name: String,
    /// The key id of the writer (see [`crate::domain::auth::KeyId`]).
    pub user_id: String,
    /// The raw `data` object exactly as the client sent it.
    pub data: String,
    /// Scoped to `user_id`: the same key from another writer is another event.
    pub idempotency_key: Option<String>,
}

/// What an append answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub event_id: String,
    pub event_time: Millis,
    /// True when the idempotency key had been seen: nothing was appended.
    pub duplicate: bool,
}

/// An event read back from the log's change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the change feed: strictly increasing, never reused.
    pub seq: u64,
    pub event_id: String,
    pub event_time: Millis,
    pub received_at: Millis,
    pub name: String,
    pub user_id: String,
    pub data: String,
}

impl LoggedEvent {
    /// As the fold reads it.
    pub fn as_ref(&self) -> crate::domain::fold::EventRef<'_> {
        crate::domain::fold::EventRef {
            event_id: &self.event_id,
            event_time: self.event_time,
            received_at: self.received_at,
            name: &self.name,
            data: &self.data,
        }
    }
}
