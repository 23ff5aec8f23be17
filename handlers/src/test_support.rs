//! Helpers shared by the handler tests.

use axum::http::StatusCode;
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::Value;

/// A response's status and JSON body (panics, naming the body, if it is not JSON).
pub(crate) async fn json_response<B>(response: Response<B>) -> (StatusCode, Value)
where
    B: axum::body::HttpBody,
    B::Error: std::fmt::Debug,
{
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}
