//! The bound on sources (`SYGNO_MAX_SOURCES`) on DynamoDB: every source
//! the log has taken is an item of its own, counted by one counter item,
//! both in the partition [`SOURCES_PK`]:
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | a source the log took | `src` | `n#<name>` | |
//! | how many | `src` | `count` | `n` (N) |
//!
//! A write naming a source this process has not seen reads its item
//! (strongly consistent); a source without one is registered by one
//! transaction: its item (`attribute_not_exists`) and the counter's
//! increment, conditional on the counter being below the bound. So the
//! bound holds across any number of concurrent writers. Known names are
//! cached for the process's life (sources are never removed). A batch
//! whose new sources do not all fit is refused before any event is put;
//! when concurrent writers take the last places between its check and
//! its registrations, some of its sources may be registered without
//! events (they count, and stay writable).
//!
//! Tables from before the bound have events of sources without items: a
//! source without its item but with a `sources` entry (`rows`, `s#<name>`:
//! the aggregator has seen it) is an old one, registered and counted at
//! its next write whatever the bound, so no source that took writes
//! before an upgrade is refused after it.

use super::{get_n, s, unavailable, DynamoStore};
use crate::store::{Result, StoreError};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use futures::StreamExt;
use std::collections::BTreeSet;

/// The partition of the source items (the write function's, beside the
/// log's `log#NN`).
pub const SOURCES_PK: &str = "src";
const COUNT_SK: &str = "count";
/// Registrations tried again when concurrent ones meet on the counter.
const REGISTER_ATTEMPTS: u32 = 8;

fn source_sk(name: &str) -> String {
    format!("n#{name}")
}

impl DynamoStore {
    /// Admits the sources `names` (each distinct): known, or registered
    /// now if the bound allows, else [`StoreError::TooManySources`].
    pub(crate) async fn admit_sources(&self, names: BTreeSet<&str>) -> Result<()> {
        let unknown: Vec<String> = {
            let known = self.known_sources.lock().unwrap_or_else(|p| p.into_inner());
            names
                .into_iter()
                .filter(|n| !known.contains(*n))
                .map(str::to_owned)
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let found: Vec<(String, bool)> = futures::stream::iter(unknown)
            .map(|name: String| async move {
                let exists = self.source_item_exists(&name).await?;
                Ok::<_, StoreError>((name, exists))
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let (known, unregistered): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|(_, exists)| *exists);
        self.remember(known.iter().map(|(n, _)| n.as_str()));
        let mut new = Vec::new();
        for (name, _) in unregistered {
            if self.source_row_exists(&name).await? {
                // Written before the bound: registered whatever it says.
                self.register_source(&name, None).await?;
                self.remember(std::iter::once(name.as_str()));
            } else {
                new.push(name);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let max = self.max_sources;
        if self.source_count().await? + new.len() > max {
            return Err(StoreError::TooManySources { max });
        }
        for name in new {
            self.register_source(&name, Some(max)).await?;
            self.remember(std::iter::once(name.as_str()));
        }
        Ok(())
    }

    fn remember<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut known = self.known_sources.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(names.map(str::to_owned));
    }

    /// Whether the aggregator has a `sources` entry for `name`.
    async fn source_row_exists(&self, name: &str) -> Result<bool> {
        let got = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key("pk", s(super::ROWS_KEY))
            .key("sk", s(super::state::source_sk(name)))
            .projection_expression("pk")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(got.item().is_some())
    }

    async fn source_item_exists(&self, name: &str) -> Result<bool> {
        let got = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key("pk", s(SOURCES_PK))
            .key("sk", s(source_sk(name)))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(got.item().is_some())
    }

    /// The counter's value (0 before the first source).
    async fn source_count(&self) -> Result<usize> {
        let got = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key("pk", s(SOURCES_PK))
            .key("sk", s(COUNT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let count = got.item().map(|item| get_n(item, "n")).transpose()?;
        Ok(usize::try_from(count.unwrap_or(0)).unwrap_or(0))
    }

    /// Registers `name`: its item and the counter's increment, if below
    /// the bound `max` (none: whatever the count). A source registered
    /// meanwhile by another writer is fine.
    async fn register_source(&self, name: &str, max: Option<usize>) -> Result<()> {
        for attempt in 1..=REGISTER_ATTEMPTS {
            let item = Put::builder()
                .table_name(&*self.table)
                .item("pk", s(SOURCES_PK))
                .item("sk", s(source_sk(name)))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(unavailable)?;
            let mut count = Update::builder()
                .table_name(&*self.table)
                .key("pk", s(SOURCES_PK))
                .key("sk", s(COUNT_SK))
                .update_expression("SET n = if_not_exists(n, :zero) + :one")
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .expression_attribute_values(":one", AttributeValue::N("1".into()));
            if let Some(max) = max {
                count = count
                    .condition_expression("attribute_not_exists(n) OR n < :max")
                    .expression_attribute_values(":max", AttributeValue::N(max.to_string()));
            }
            let count = count.build().map_err(unavailable)?;
            let sent = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(item).build())
                .transact_items(TransactWriteItem::builder().update(count).build())
                .send()
                .await;
            let cancelled = match sent {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(e)) => match e.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => c,
                    other => return Err(super::state::classify_transaction(other)),
                },
                Err(e) => return Err(unavailable(e)),
            };
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            match codes.as_slice() {
                ["ConditionalCheckFailed", _] => return Ok(()), // registered meanwhile
                [_, "ConditionalCheckFailed"] => {
                    return Err(StoreError::TooManySources {
                        max: max.unwrap_or_default(),
                    })
                }
                _ if codes.contains(&"TransactionConflict") && attempt < REGISTER_ATTEMPTS => {
                    let pause = 5 * u64::from(attempt);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                _ => {
                    return Err(super::state::classify_transaction(
                        TransactWriteItemsError::TransactionCanceledException(cancelled),
                    ))
                }
            }
        }
        Err(StoreError::unavailable(std::io::Error::other(
            "registering a source kept conflicting",
        )))
    }
}
