//! Reading a JSON request body: at most a route's limit (413), within a
//! deadline (408), within a memory budget shared by all requests, and JSON if the
//! client names a content type (415). A missing Content-Type is read as
//! JSON, as the original API did.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sygno_shared::domain::auth::KeyId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Request bodies held in memory at once, all requests together. A body
/// reserves its declared `Content-Length` (hyper holds the body to it),
/// or its route's limit when it declares none, before it is read.
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Of [`BODY_BUDGET_BYTES`], what the bodies of one API key may hold at
/// once: whoever holds a key can fill at most a quarter of the budget
/// (say, by declaring large bodies and sending them slowly), so requests
/// with other keys are still read (and one key still sends its largest
/// body, 1 MiB, sixteen at a time).
pub const KEY_BODY_SHARE_BYTES: usize = BODY_BUDGET_BYTES / 4;
/// The default [`BodyReader`] deadline.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads request bodies under a deadline and a shared memory budget.
#[derive(Debug, Clone)]
pub struct BodyReader {
    /// A whole body must arrive within this from when its reading starts
    /// (after the headers): a client trickling bytes cannot hold a
    /// request open longer (408 `request_timeout`, connection closed).
    pub timeout: Duration,
    /// Bytes of the budget ([`BODY_BUDGET_BYTES`]).
    budget: Arc<Semaphore>,
    /// Each key's share ([`KEY_BODY_SHARE_BYTES`]), made when the key
    /// first sends a body (keys are configured: a bounded set).
    shares: Arc<Mutex<HashMap<KeyId, Arc<Semaphore>>>>,
}

impl Default for BodyReader {
    fn default() -> Self {
        BodyReader::new(DEFAULT_BODY_TIMEOUT)
    }
}

/// A body read, and its bytes of the budget (given back when dropped).
#[derive(Debug)]
pub struct ReadBody {
    pub bytes: Bytes,
    _held: [Option<OwnedSemaphorePermit>; 2],
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
            budget: Arc::new(Semaphore::new(BODY_BUDGET_BYTES)),
            shares: Arc::default(),
        }
    }

    fn share_of(&self, key: &KeyId) -> Arc<Semaphore> {
        let mut shares = self
            .shares
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(
            shares
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(KEY_BODY_SHARE_BYTES))),
        )
    }

    /// The body's bytes, sent with `key`, after the size (at most `limit`
    /// bytes), deadline and content-type checks. The body first reserves
    /// its size (its `Content-Length`, else `limit`) of `key`'s share,
    /// then of the budget, each whole at once: a request never holds part
    /// of a reservation while it waits for more, so reservations cannot
    /// wait on each other.
    pub async fn read(
        &self,
        key: &KeyId,
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
        let size = declared.map_or(limit, |len| usize::try_from(len).unwrap_or(limit));
        let share = self.share_of(key);
        let reading = async {
            let mut held: [Option<OwnedSemaphorePermit>; 2] = [None, None];
            let n = u32::try_from(size).map_err(|_| ApiError::payload_too_large(limit))?;
            if n > 0 {
                for (pool, held) in [&share, &self.budget].into_iter().zip(&mut held) {
                    let permit = Arc::clone(pool)
                        .acquire_many_owned(n)
                        .await
                        .map_err(|_| ApiError::internal())?;
                    *held = Some(permit);
                }
            }
            let bytes = Limited::new(body, size)
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
            Ok::<_, ApiError>(ReadBody { bytes, _held: held })
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
