//! The budget of heavy reads: `series`, the development views of
//! `expose` and Grafana queries fold stored summaries into answers that
//! may hold up to `MAX_SERIES_CELLS` statistics (tens of MB). So that no
//! key holder can exhaust memory or every core with them:
//! - at most [`HEAVY_READ_SLOTS`] run at once;
//! - together they hold at most [`HEAVY_READ_CELLS`] statistics, each
//!   reserving its statistics as its fold grows (a small series reserves
//!   little, the largest half the budget);
//! - a read that cannot get its slot or its statistics within
//!   [`HEAVY_READ_WAIT`] answers 503 `busy` with `Retry-After: 1`,
//!   counted in `sygno_http_heavy_reads_shed_total`.
//!
//! `MAX_SERIES_CELLS`: `sygno_shared::domain::series::MAX_SERIES_CELLS`.

use crate::error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use sygno_shared::telemetry::metric;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Heavy reads running at once (two per core of the machine the
/// defaults were measured on; they are CPU-bound).
pub const HEAVY_READ_SLOTS: usize = 4;
/// Statistics held by heavy reads at once: two of the largest answers.
pub const HEAVY_READ_CELLS: usize = 2 * sygno_shared::domain::series::MAX_SERIES_CELLS;
/// How long a heavy read waits for its slot or statistics before 503.
pub const HEAVY_READ_WAIT: Duration = Duration::from_secs(2);

/// The budget, shared by every request of a process.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    slots: Arc<Semaphore>,
    cells: Arc<Semaphore>,
    wait: Duration,
}

impl Default for ReadBudget {
    fn default() -> Self {
        ReadBudget::new(HEAVY_READ_SLOTS, HEAVY_READ_CELLS, HEAVY_READ_WAIT)
    }
}

/// One heavy read's slot and the statistics it holds (given back when
/// dropped).
#[derive(Debug)]
pub struct HeavyRead {
    route: &'static str,
    _slot: OwnedSemaphorePermit,
    cells: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    wait: Duration,
}

impl ReadBudget {
    pub fn new(slots: usize, cells: usize, wait: Duration) -> Self {
        ReadBudget {
            slots: Arc::new(Semaphore::new(slots)),
            cells: Arc::new(Semaphore::new(cells)),
            wait,
        }
    }

    /// A slot for a heavy read of `route`, or 503 `busy`.
    pub async fn begin(&self, route: &'static str) -> Result<HeavyRead, ApiError> {
        let slot = tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| shed(route))?;
        Ok(HeavyRead {
            route,
            _slot: slot,
            cells: Arc::clone(&self.cells),
            held: None,
            wait: self.wait,
        })
    }
}

impl HeavyRead {
    /// Statistics held so far.
    pub fn held(&self) -> usize {
        self.held
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Holds `cells` statistics in all (more than held so far: reserves
    /// the difference), or 503 `busy`.
    pub async fn hold(&mut self, cells: usize) -> Result<(), ApiError> {
        let Some(more) = cells.checked_sub(self.held()).filter(|more| *more > 0) else {
            return Ok(());
        };
        let more = u32::try_from(more).map_err(|_| shed(self.route))?;
        let permit =
            tokio::time::timeout(self.wait, Arc::clone(&self.cells).acquire_many_owned(more))
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| shed(self.route))?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }
}

fn shed(route: &'static str) -> ApiError {
    metrics::counter!(metric::READS_SHED, "route" => route).increment(1);
    ApiError::busy()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn reads_past_the_slots_or_statistics_are_shed() {
        let budget = ReadBudget::new(2, 100, Duration::from_millis(50));
        let mut first = budget.begin("a").await.expect("a slot");
        let _second = budget.begin("a").await.expect("a slot");
        let third = budget.begin("a").await.expect_err("no slot left");
        assert_eq!(
            (third.status, third.code),
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        );
        first.hold(60).await.expect("60 of 100");
        first.hold(60).await.expect("already held");
        first.hold(90).await.expect("30 more");
        drop(first);
        let mut again = budget.begin("a").await.expect("the slot came back");
        again.hold(100).await.expect("the statistics came back");
        let mut other = ReadBudget {
            slots: Arc::new(Semaphore::new(1)),
            ..budget.clone()
        }
        .begin("a")
        .await
        .expect("a slot");
        assert_eq!(other.hold(1).await.expect_err("spent").code, "busy");
    }
}
