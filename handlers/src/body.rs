//! Reading a JSON request body: at most a route's limit (413), within a
//! deadline (408), within a memory budget shared by all requests, and JSON if the
//! client names a content type (415). A missing Content-Type is read as
//! JSON, as the original API did.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Request bodies held in memory at once, all requests together: a
/// request waits for its share (its route's limit) before its body is
/// read, so many large bodies cannot exhaust memory.
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// The default [`BodyReader`] deadline.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads request bodies under a deadline and a shared memory budget.
#[derive(Debug, Clone)]
pub struct BodyReader {
    /// A whole body must arrive within this from when its reading starts
    /// (after the headers): a client trickling bytes cannot hold a
    /// request open longer (408 `request_timeout`, connection closed).
    pub timeout: Duration,
    /// KiB of the budget ([`BODY_BUDGET_BYTES`]).
    budget: Arc<Semaphore>,
}

impl Default for BodyReader {
    fn default() -> Self {
        BodyReader::new(DEFAULT_BODY_TIMEOUT)
    }
}

/// A body read, and its share of the budget (given back when dropped).
#[derive(Debug)]
pub struct ReadBody {
    pub bytes: Bytes,
    _share: OwnedSemaphorePermit,
}

impl std::ops::Deref for ReadBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl BodyReader {
    pub fn new(timeout: Duration) -> Self {
        BodyReader {
            timeout,
            budget: Arc::new(Semaphore::new(BODY_BUDGET_BYTES / 1024)),
        }
    }

    /// The body's bytes, after the size (at most `limit` bytes),
    /// deadline and content-type checks.
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<ReadBody, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::payload_too_large(limit));
        }
        let share = u32::try_from(limit.div_ceil(1024)).unwrap_or(u32::MAX);
        let reading = async {
            let share = Arc::clone(&self.budget)
                .acquire_many_owned(share)
                .await
                .map_err(|_| ApiError::internal())?;
            let bytes = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        ApiError::payload_too_large(limit)
                    } else {
                        ApiError::invalid_json("the request body could not be read".to_owned())
                    }
                })?
                .to_bytes();
            Ok::<_, ApiError>(ReadBody {
                bytes,
                _share: share,
            })
        };
        let body = tokio::time::timeout(self.timeout, reading)
            .await
            .map_err(|_| ApiError::request_timeout())??;
        if !is_json_or_absent(headers) {
            return Err(ApiError::unsupported_media_type());
        }
        Ok(body)
    }
}

fn is_json_or_absent(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
