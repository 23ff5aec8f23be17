//! How a running server asks its worker for a rebuild, and watches it.

use serde::Serialize;
use std::sync::Arc;
use sygno_shared::domain::time::{format_rfc3339, Millis};
use tokio::sync::{mpsc, watch};

/// Where a rebuild stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RebuildState {
    /// None was asked for since the server started.
    Idle,
    Running,
    Done,
    Failed,
}

/// The last rebuild's progress, as `GET /admin/rebuild` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RebuildStatus {
    pub state: RebuildState,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Events read from the log so far.
    pub processed: u64,
    /// The log's head when the rebuild started.
    pub target: u64,
    /// The checkpoint the rebuilt rows were committed at.
    pub checkpoint: u64,
    pub error: Option<String>,
}

impl Default for RebuildStatus {
    fn default() -> Self {
        RebuildStatus {
            state: RebuildState::Idle,
            started_at: None,
            finished_at: None,
            processed: 0,
            target: 0,
            checkpoint: 0,
            error: None,
        }
    }
}

/// Why a rebuild could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("a rebuild is already running")]
    Running(Box<RebuildStatus>),
    #[error("the aggregator is not running")]
    NoWorker,
}

/// The server's side: start a rebuild, read its status. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RebuildHandle {
    requests: mpsc::Sender<()>,
    status: Arc<watch::Sender<RebuildStatus>>,
}

/// The worker's side.
#[derive(Debug)]
pub struct RebuildRequests {
    requests: mpsc::Receiver<()>,
    status: Arc<watch::Sender<RebuildStatus>>,
}

impl RebuildRequests {
    pub(crate) async fn next(&mut self) -> Option<()> {
        self.requests.recv().await
    }

    pub(crate) fn status(&self) -> &watch::Sender<RebuildStatus> {
        &self.status
    }
}

/// A connected handle and request stream.
pub fn channel() -> (RebuildHandle, RebuildRequests) {
    let (tx, rx) = mpsc::channel(1);
    let status = Arc::new(watch::Sender::new(RebuildStatus::default()));
    (
        RebuildHandle {
            requests: tx,
            status: Arc::clone(&status),
        },
        RebuildRequests {
            requests: rx,
            status,
        },
    )
}

impl RebuildHandle {
    /// Asks the worker for a rebuild, unless one is running.
    pub fn start(&self, now: Millis) -> Result<RebuildStatus, StartError> {
        let started = self.status.send_if_modified(|s| {
            if s.state == RebuildState::Running {
                return false;
            }
            *s = RebuildStatus {
                state: RebuildState::Running,
                started_at: Some(format_rfc3339(now)),
                ..RebuildStatus::default()
            };
            true
        });
        if !started {
            return Err(StartError::Running(Box::new(self.status())));
        }
        if self.requests.try_send(()).is_err() {
            self.status.send_modify(|s| {
                s.state = RebuildState::Failed;
                s.error = Some(StartError::NoWorker.to_string());
            });
            return Err(StartError::NoWorker);
        }
        Ok(self.status())
    }

    pub fn status(&self) -> RebuildStatus {
        self.status.borrow().clone()
    }
}
