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
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
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

/// The service's metrics, each named here once. Code records them
/// through the `metrics` facade (a no-op until a recorder is installed);
/// `sygno serve` exposes them at `GET /metrics` in the Prometheus text
/// format, the Lambda functions print them as CloudWatch embedded metric
/// format lines after each invocation ([`install_cloudwatch`]).
pub mod metric {
    /// Counter, labels `route` (the matched route, `unmatched` for none),
    /// `method`, `status`.
    pub const HTTP_REQUESTS: &str = "sygno_http_requests_total";
    /// Histogram (seconds), labels `route`, `method`.
    pub const HTTP_DURATION: &str = "sygno_http_request_duration_seconds";
    /// Counter: events appended to the log (not duplicates).
    pub const EVENTS_APPENDED: &str = "sygno_events_appended_total";
    /// Counter: writes answered as duplicates of an earlier request's.
    pub const EVENTS_DUPLICATE: &str = "sygno_events_duplicate_total";
    /// Counter, labels `kind` (see `StoreError::kind`) and `path`
    /// (`request`, `aggregator`).
    pub const STORAGE_ERRORS: &str = "sygno_storage_errors_total";
    /// Counter, label `route`: heavy reads (series, development views,
    /// Grafana queries) answered 503 `busy` because the read budget was
    /// spent (`handlers::reads`).
    pub const READS_SHED: &str = "sygno_http_heavy_reads_shed_total";
    /// Counter: events the aggregator applied.
    pub const AGGREGATED: &str = "sygno_aggregator_events_total";
    /// Histogram: events per aggregator batch (a worker step, a stream batch).
    pub const BATCH_EVENTS: &str = "sygno_aggregator_batch_events";
    /// Histogram (seconds): one aggregate commit.
    pub const COMMIT_DURATION: &str = "sygno_aggregator_commit_duration_seconds";
    /// Counter: DynamoDB commits that met another's and were tried again.
    pub const COMMIT_CONFLICTS: &str = "sygno_aggregator_commit_conflicts_total";
    /// Gauge: events in the log not yet aggregated (embedded store).
    pub const LAG_EVENTS: &str = "sygno_aggregator_lag_events";
    /// Gauge: age of the oldest event a batch applied, when it was read
    /// (0 once nothing waits).
    pub const LAG_SECONDS: &str = "sygno_aggregator_lag_seconds";
    /// Counter: stream records that could not be decoded (reported, skipped).
    pub const POISON_RECORDS: &str = "sygno_aggregator_poison_records_total";
    /// Counter: events DynamoDB refused to aggregate (passed over, kept in the log).
    pub const REJECTED_EVENTS: &str = "sygno_aggregator_rejected_events_total";
    /// Gauge, label `state` (`idle`, `running`, `done`, `failed`): 1 for
    /// the rebuild's current state, 0 for the others.
    pub const REBUILD_STATE: &str = "sygno_rebuild_state";
    /// Gauge: events the current or last rebuild has read.
    pub const REBUILD_PROCESSED: &str = "sygno_rebuild_processed_events";

    /// Histogram buckets for durations, in seconds.
    pub const DURATION_BUCKETS: [f64; 14] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    /// Histogram buckets for batch sizes, in events.
    pub const BATCH_BUCKETS: [f64; 12] = [
        1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    ];
}

/// Describes every metric to the installed recorder (help texts).
pub fn describe_metrics() {
    use metric::*;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route, method and status"
    );
    describe_counter!(
        READS_SHED,
        "Heavy reads (series, Grafana queries) refused with 503 busy: too many at once"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route and method"
    );
    describe_counter!(EVENTS_APPENDED, "Events appended to the log");
    describe_counter!(
        EVENTS_DUPLICATE,
        "Writes answered as duplicates (Idempotency-Key seen)"
    );
    describe_counter!(STORAGE_ERRORS, "Storage errors, by kind and path");
    describe_counter!(AGGREGATED, "Events the aggregator applied");
    describe_histogram!(BATCH_EVENTS, "Events per aggregator batch");
    describe_histogram!(COMMIT_DURATION, Unit::Seconds, "Aggregate commit latency");
    describe_counter!(
        COMMIT_CONFLICTS,
        "DynamoDB aggregate commits retried after a conflict"
    );
    describe_gauge!(LAG_EVENTS, "Events in the log not yet aggregated");
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest event of the last aggregator batch when read"
    );
    describe_counter!(POISON_RECORDS, "Stream records that could not be decoded");
    describe_counter!(
        REJECTED_EVENTS,
        "Events DynamoDB refused to aggregate (kept in the log)"
    );
    describe_gauge!(REBUILD_STATE, "1 for the rebuild's current state");
    describe_gauge!(
        REBUILD_PROCESSED,
        "Events the current or last rebuild has read"
    );
}

/// Counts a write's answers: events appended and duplicates.
pub fn appended(answers: &[crate::domain::event::Appended]) {
    let duplicates = answers.iter().filter(|a| a.duplicate).count() as u64;
    metrics::counter!(metric::EVENTS_APPENDED).increment(answers.len() as u64 - duplicates);
    if duplicates > 0 {
        metrics::counter!(metric::EVENTS_DUPLICATE).increment(duplicates);
    }
}

/// Counts a storage error met on `path` (`request` or `aggregator`).
pub fn storage_error(error: &crate::store::StoreError, path: &'static str) {
    metrics::counter!(metric::STORAGE_ERRORS, "kind" => error.kind(), "path" => path).increment(1);
}

/// An aggregator batch read: how old its oldest event (`received_at`,
/// ms) was at `now`; `None` for an empty batch (nothing waits).
pub fn aggregator_read(oldest_received_at: Option<i64>, now: i64) {
    let lag = oldest_received_at.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
    metrics::gauge!(metric::LAG_SECONDS).set(lag);
}

/// An aggregator batch of `events` applied (committed).
pub fn aggregator_batch(events: usize) {
    if events > 0 {
        metrics::counter!(metric::AGGREGATED).increment(events as u64);
        metrics::histogram!(metric::BATCH_EVENTS).record(events as f64);
    }
}

/// One aggregate commit's duration.
pub fn aggregator_commit(took: std::time::Duration) {
    metrics::histogram!(metric::COMMIT_DURATION).record(took.as_secs_f64());
}

/// Installs the CloudWatch embedded metric format recorder (the Lambda
/// functions), namespace `Sygno`; print with [`flush_cloudwatch`] after
/// each invocation. Later calls do nothing.
pub fn install_cloudwatch() {
    CLOUDWATCH.get_or_init(|| {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace("Sygno")
            .init()
            .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
            .ok();
        describe_metrics();
        collector
    });
}

/// The CloudWatch recorder, once installed.
static CLOUDWATCH: std::sync::OnceLock<Option<&'static metrics_cloudwatch_embedded::Collector>> =
    std::sync::OnceLock::new();

/// Prints the metrics recorded since the last flush as one CloudWatch
/// embedded metric format document on stdout (where Lambda's log
/// collection picks it up).
pub fn flush_cloudwatch() {
    flush_cloudwatch_to(std::io::stdout().lock());
}

fn flush_cloudwatch_to(out: impl std::io::Write) {
    if let Some(collector) = CLOUDWATCH.get().copied().flatten() {
        if let Err(e) = collector.flush(out) {
            tracing::warn!(error = %e, "metrics could not be written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lambda functions' metrics: one embedded metric format document
    /// per flush, in the `Sygno` namespace, with the values recorded since
    /// the last flush.
    #[test]
    fn cloudwatch_documents_carry_the_recorded_metrics() {
        install_cloudwatch();
        let failed = crate::store::StoreError::Rejected("too large".into());
        storage_error(&failed, "aggregator");
        aggregator_batch(7);
        let mut out = Vec::new();
        flush_cloudwatch_to(&mut out);
        let text = String::from_utf8(out).expect("UTF-8");
        let docs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
            .collect();
        let find = |name: &str| docs.iter().find(|d| d.get(name).is_some()).cloned();
        let batch = find(metric::AGGREGATED).expect("events counter");
        assert_eq!(batch[metric::AGGREGATED], 7);
        assert_eq!(batch["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Sygno");
        let errors = find(metric::STORAGE_ERRORS).expect("storage errors");
        assert_eq!(errors["kind"], "rejected");
        assert_eq!(errors["path"], "aggregator");
    }
}
