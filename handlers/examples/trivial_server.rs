//! The baseline for load tests: an axum handler that returns a fixed JSON
//! body, nothing else. `scripts/load` compares `expose` against it in the
//! same run. Usage: `trivial_server 127.0.0.1:5099`.

use axum::routing::get;
use axum::Router;

const BODY: &str = r#"{"status":200,"description":"ok","data":{"fixed":true}}"#;

async fn fixed() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        BODY,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5099".to_owned());
    let app = Router::new().route("/", get(fixed).post(fixed));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
