//! Tracing set-up: human-readable lines locally, JSON where logs are
//! collected (`SYGNO_LOG_FORMAT=json`, and always on Lambda). `RUST_LOG`
//! filters (default `info`). Logs go to stderr; stdout is the program's output.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls
/// do nothing), so tests may call it freely.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// True when `SYGNO_LOG_FORMAT` asks for JSON.
pub fn json_requested() -> bool {
    std::env::var("SYGNO_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}
