//! Sygno's HTTP layer and its local server.
//!
//! # Layout
//! - [`routes`]: [`app`], the one router every entry point serves (the
//!   local server and the Lambda functions), and one module per route.
//! - [`error`]: [`error::ApiError`] and the contract's response envelope.
//! - [`auth`]: the `x-api-key` check (401 / 403).
//! - [`observe`]: request ids, spans, failed-request log lines, request
//!   metrics, and the Prometheus recorder.
//! - [`body`]: reading a request body under the size limit (413, 415),
//!   the body deadline (408) and the memory budget of bodies.
//! - [`reads`]: the budget of heavy reads (series, Grafana: 503 `busy`).
//! - [`openapi`]: the OpenAPI document, generated from the handlers.
//! - [`lambda`]: the same router behind API Gateway (stage prefixes).
//! - [`local`]: `sygno serve`: the router, the embedded store and the
//!   aggregation worker in one process.
//! - [`server`]: the local server's connections (timeouts, the cap on
//!   open connections, graceful shutdown).

pub mod auth;
pub mod body;
pub mod error;
pub mod lambda;
pub mod local;
pub mod observe;
pub mod openapi;
pub mod reads;
pub mod routes;
pub mod server;

pub use routes::{app, AppState};

#[cfg(test)]
mod test_support;
