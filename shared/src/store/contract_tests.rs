//! Checks every `EventLog` adapter must pass; each adapter's tests run
//! them against a real store (SQLite on disk, DynamoDB on moto).

use crate::domain::event::NewEvent;
use crate::store::EventLog;
use std::sync::Arc;

pub(crate) fn new_event(id: &str, user: &str, key: Option<&str>) -> NewEvent {
    NewEvent {
        event_id: id.into(),
        event_time: 1_764_000_000_123,
        received_at: 1_764_000_000_456,
        name: "raw".into(),
        user_id: user.into(),
        data: r#"{"x": 1.50, "n": {"y": 2}}"#.into(),
        idempotency_key: key.map(str::to_owned),
    }
}

/// The same key from the same writer returns the first event; the same key
/// from another writer is another event.
pub(crate) async fn idempotency_is_scoped_per_writer(log: &dyn EventLog) {
    let first = log
        .append(new_event("a", "u1", Some("order-1")))
        .await
        .expect("append");
    assert!(!first.duplicate);
    let again = log
        .append(new_event("b", "u1", Some("order-1")))
        .await
        .expect("append");
    assert!(again.duplicate);
    assert_eq!(again.event_id, "a");
    assert_eq!(again.event_time, first.event_time);
    let other = log
        .append(new_event("c", "u2", Some("order-1")))
        .await
        .expect("append");
    assert!(!other.duplicate, "another writer's key is another event");
}

/// `appends` concurrent appends cycling over `keys` idempotency keys of one
/// writer: exactly `keys` of them are new.
pub(crate) async fn concurrent_repeats_append_once_per_key(
    log: Arc<dyn EventLog>,
    appends: usize,
    keys: usize,
) {
    let tasks: Vec<_> = (0..appends)
        .map(|i| {
            let log = Arc::clone(&log);
            let key = format!("k{}", i % keys);
            tokio::spawn(async move {
                log.append(new_event(&format!("e{i}"), "u", Some(&key)))
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        if !task.await.expect("join").expect("append").duplicate {
            fresh += 1;
        }
    }
    assert_eq!(fresh, keys);
}

/// A batch is answered in order; repeated with the same keys (as a
/// client's retry, with new event ids), every event is a duplicate naming
/// the first; a batch of which an earlier attempt stored a part stores
/// only the rest.
pub(crate) async fn batches_answer_in_order_and_repeat_as_duplicates(log: &dyn EventLog) {
    let batch = |attempt: &str, keys: &str| -> Vec<NewEvent> {
        (0..5)
            .map(|i| new_event(&format!("{attempt}{i}"), "u9", Some(&format!("{keys} {i}"))))
            .collect()
    };
    let first = log.append_batch(batch("a", "batch")).await.expect("batch");
    let ids: Vec<&str> = first.iter().map(|a| a.event_id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1", "a2", "a3", "a4"]);
    assert!(first.iter().all(|a| !a.duplicate));
    let again = log.append_batch(batch("b", "batch")).await.expect("repeat");
    assert_eq!(
        again
            .iter()
            .map(|a| a.event_id.as_str())
            .collect::<Vec<_>>(),
        ids
    );
    assert!(again.iter().all(|a| a.duplicate));

    log.append(new_event("c3", "u9", Some("part 3")))
        .await
        .expect("a part stored earlier");
    let rest = log.append_batch(batch("d", "part")).await.expect("rest");
    let dup: Vec<bool> = rest.iter().map(|a| a.duplicate).collect();
    assert_eq!(dup, [false, false, false, true, false]);
    assert_eq!(rest[3].event_id, "c3");
}

/// An event of source `name`.
pub(crate) fn named(id: &str, name: &str) -> NewEvent {
    NewEvent {
        name: name.into(),
        ..new_event(id, "u1", None)
    }
}

/// With a bound of 3 sources (set by the caller): a batch naming new
/// sources past it is refused whole; sources the log has stay writable.
/// Returns the ids of the events refused (the caller checks none is
/// stored).
pub(crate) async fn sources_past_the_bound_are_refused(log: &dyn EventLog) -> Vec<&'static str> {
    let too_many = |r: crate::store::Result<Vec<crate::domain::event::Appended>>| {
        matches!(r, Err(crate::store::StoreError::TooManySources { max: 3 }))
    };
    log.append_batch(vec![named("s1", "a"), named("s2", "b"), named("s3", "a")])
        .await
        .expect("two sources");
    let refused = log
        .append_batch(vec![named("r1", "a"), named("r2", "c"), named("r3", "d")])
        .await;
    assert!(too_many(refused), "two new sources past the third place");
    log.append_batch(vec![named("s4", "c"), named("s5", "b")])
        .await
        .expect("a third source");
    assert!(
        too_many(log.append_batch(vec![named("r4", "d")]).await),
        "a fourth source"
    );
    assert!(
        too_many(
            log.append_batch(vec![named("r5", "a"), named("r6", "e")])
                .await
        ),
        "a batch with one new source past the bound"
    );
    log.append(named("s6", "a")).await.expect("a known source");
    vec!["r1", "r2", "r3", "r4", "r5", "r6"]
}

/// At a bound of `max` sources, reached: an event `(id, name)` of a new
/// source is refused; then, if given, an event of a source the log has
/// is taken.
pub(crate) async fn bound_holds(
    log: &dyn EventLog,
    max: usize,
    new: (&str, &str),
    known: Option<(&str, &str)>,
) {
    let refused = log.append(named(new.0, new.1)).await;
    assert!(
        matches!(refused, Err(crate::store::StoreError::TooManySources { max: m }) if m == max),
        "{refused:?}"
    );
    if let Some((id, name)) = known {
        log.append(named(id, name))
            .await
            .expect("a source the log has");
    }
}
