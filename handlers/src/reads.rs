//! The budget of heavy reads: `series`, the development views of
//! `expose` and Grafana queries fold stored summaries into answers of up
//! to `MAX_SERIES_CELLS` (1,000,000) statistics, tens of MB of text and
//! most of a second of CPU. So that no key holder can exhaust memory or
//! the cores with them, at most [`HEAVY_READ_SLOTS`] run at once; a read
//! that cannot start within [`HEAVY_READ_WAIT`] answers 503 `busy` with
//! `Retry-After: 1`, counted in `sygno_http_heavy_reads_shed_total`.
//!
//! A read takes its slot whole before it starts, never piece by piece as
//! its answer grows: reads that each held part of a shared budget and
//! waited for more could wait on each other until all gave up (measured:
//! 32 of the largest series, 4 slots sharing two answers' worth of
//! statistics, took 155 s instead of 14 s, mostly in 503s and retries).
//! Memory: a slot holds one answer's text and its fold's working set (a
//! read's summaries, the unfinished buckets), so the slots bound it.
//!
//! `MAX_SERIES_CELLS`: `sygno_shared::domain::series::MAX_SERIES_CELLS`.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use std::sync::Arc;
use std::time::Duration;
use sygno_shared::telemetry::metric;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Heavy reads running at once: one per core of the machine the defaults
/// were measured on (they are CPU-bound: more at once only shares the
/// cores and multiplies the memory held).
pub const HEAVY_READ_SLOTS: usize = 2;
/// How long a heavy read waits for its slot before 503 (the largest
/// series takes about a second here).
pub const HEAVY_READ_WAIT: Duration = Duration::from_secs(2);

/// The budget, shared by every request of a process.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl Default for ReadBudget {
    fn default() -> Self {
        ReadBudget::new(HEAVY_READ_SLOTS, HEAVY_READ_WAIT)
    }
}

/// One heavy read's slot (given back when dropped).
#[derive(Debug)]
pub struct HeavyRead {
    _slot: OwnedSemaphorePermit,
}

impl ReadBudget {
    pub fn new(slots: usize, wait: Duration) -> Self {
        ReadBudget {
            slots: Arc::new(Semaphore::new(slots)),
            wait,
        }
    }

    /// A slot for a heavy read of `route`, or 503 `busy`.
    pub async fn begin(&self, route: &'static str) -> Result<HeavyRead, ApiError> {
        let slot = tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok);
        match slot {
            Some(slot) => Ok(HeavyRead { _slot: slot }),
            None => {
                metrics::counter!(metric::READS_SHED, "route" => route).increment(1);
                Err(ApiError::busy())
            }
        }
    }
}

impl HeavyRead {
    /// `response`, holding this read's slot until its body is sent or
    /// dropped (a client too slow to read it is cut off: `crate::server`'s
    /// write stall rule), so that the slots bound the answers held, sent
    /// or not.
    pub fn hold_until_sent(self, response: Response) -> Response {
        use futures::StreamExt;
        let (mut parts, body) = response.into_parts();
        if let Some(len) = hyper::body::Body::size_hint(&body).exact() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let held = body.into_data_stream().map(move |piece| {
            let _slot = &self;
            piece
        });
        Response::from_parts(parts, Body::from_stream(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn reads_past_the_slots_are_shed_and_slots_come_back() {
        let budget = ReadBudget::new(2, Duration::from_millis(50));
        let first = budget.begin("a").await.expect("a slot");
        let _second = budget.begin("a").await.expect("a slot");
        let third = budget.begin("a").await.expect_err("no slot left");
        assert_eq!(
            (third.status, third.code),
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        );
        drop(first);
        budget.begin("a").await.expect("the slot came back");
    }
}
