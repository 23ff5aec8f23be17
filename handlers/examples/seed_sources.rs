//! Writes a synthetic event log into an embedded store, fast (straight to
//! the store's group-committing writer, no HTTP), for `scripts/bench-sources`.
//!
//!     seed_sources DIR SOURCES FIELDS_PER_SOURCE FIELDS_PER_EVENT DAYS EVERY_MINUTES
//!
//! Every source posts one event every EVERY_MINUTES minutes over the last
//! DAYS days (event times in the past); each event carries FIELDS_PER_EVENT
//! of its source's FIELDS_PER_SOURCE field names, in rotation. Prints the
//! number of events written.

use std::sync::Arc;
use sygno_shared::domain::event::NewEvent;
use sygno_shared::store::embedded::EmbeddedStore;
use sygno_shared::store::EventLog;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, sources, per_source, per_event, days, every] = args.as_slice() else {
        return Err(
            "usage: seed_sources DIR SOURCES FIELDS_PER_SOURCE FIELDS_PER_EVENT DAYS EVERY_MINUTES"
                .into(),
        );
    };
    let (sources, per_source, per_event): (usize, usize, usize) =
        (sources.parse()?, per_source.parse()?, per_event.parse()?);
    let (days, every): (i64, i64) = (days.parse()?, every.parse()?);
    let store = EmbeddedStore::open(std::path::Path::new(dir))?;
    let now = chrono::Utc::now().timestamp_millis();
    let minutes = days * 24 * 60;
    let steps: Vec<i64> = (0..minutes / every).collect();
    let total = steps.len() * sources;
    let store = Arc::new(store);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..256 {
        let (store, next, steps) = (Arc::clone(&store), Arc::clone(&next), steps.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), sygno_shared::store::StoreError>(());
                }
                let (step, source) = (steps[i / sources], i % sources);
                let t = now - (minutes - step * every) * 60_000 + (source as i64 * 997) % 60_000;
                let first = (step as usize * per_event) % per_source;
                let fields: Vec<String> = (0..per_event)
                    .map(|k| {
                        let f = (first + k) % per_source;
                        format!(
                            r#""sensor_{f:04}": {}"#,
                            (f as f64 + step as f64 * 0.37).sin() * 20.0 + 21.0
                        )
                    })
                    .collect();
                store
                    .append(NewEvent {
                        event_id: format!("seed-{i:010}"),
                        event_time: t,
                        received_at: now,
                        name: format!("greenhouse-{source:04}"),
                        user_id: "seed".into(),
                        data: format!("{{{}}}", fields.join(",")),
                        idempotency_key: None,
                    })
                    .await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    use std::io::Write;
    writeln!(std::io::stdout(), "{total}")?;
    Ok(())
}
