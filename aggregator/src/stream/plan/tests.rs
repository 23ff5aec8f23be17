use super::*;
use sygno_shared::domain::time::MINUTE_MS;
use sygno_shared::store::dynamo::state::NextGeneration;

fn event(shard: u8, sequence: u64, event_time: i64, received_at: i64, x: f64) -> StreamEvent {
    StreamEvent {
        sequence: sequence.to_string(),
        item: EventItem {
            pk: format!("log#{shard:02}"),
            event_id: format!("e{sequence}"),
            event_time,
            received_at,
            name: "n".into(),
            data: format!(r#"{{"x":{x}}}"#),
        },
    }
}

fn count(plan: &Plan, generation: u64) -> u64 {
    plan.deltas
        .iter()
        .filter(|(k, _)| {
            k.generation == generation && k.tier == sygno_shared::domain::tiers::Tier::Minute
        })
        .map(|(_, s)| s.events)
        .sum()
}

#[test]
fn sequences_compare_as_numbers() {
    assert_eq!(compare_sequences("9", "10"), Ordering::Less);
    assert_eq!(compare_sequences("0010", "10"), Ordering::Equal);
    assert_eq!(
        compare_sequences("1100000000017454423010", "1100000000017454423009"),
        Ordering::Greater
    );
}

#[test]
fn events_at_or_below_their_shard_checkpoint_are_skipped() {
    let batch = vec![
        event(1, 10, 0, 1, 1.0),
        event(2, 5, 0, 1, 2.0),
        event(1, 11, 0, 1, 3.0),
    ];
    let first = plan(&AggState::default(), &batch);
    assert_eq!((first.applied, first.skipped), (3, 0));
    assert_eq!(first.state.checkpoints["log#01"], "11");
    assert_eq!(first.state.checkpoints["log#02"], "5");
    // The same batch again, and a bisected half: nothing new.
    let again = plan(&first.state, &batch);
    assert_eq!((again.applied, again.skipped), (0, 3));
    assert!(again.is_empty());
    let half = plan(&first.state, &batch[1..]);
    assert_eq!((half.applied, half.skipped), (0, 2));
    // Shard 2 moving on does not depend on shard 1.
    let later = plan(&first.state, &[event(2, 6, 0, 1, 1.0)]);
    assert_eq!(later.applied, 1);
}

#[test]
fn deltas_count_each_new_event_in_its_minute_and_hour() {
    let batch = vec![
        event(1, 1, 0, 1, 1.0),
        event(1, 2, MINUTE_MS, 1, 3.0),
        event(1, 3, 61 * MINUTE_MS, 1, 5.0),
    ];
    let p = plan(&AggState::default(), &batch);
    let [m0, h0] = TierKey::of_event(0, 0);
    let [m61, h1] = TierKey::of_event(0, 61 * MINUTE_MS);
    assert_eq!(p.deltas[&m0].events, 1);
    assert_eq!(p.deltas[&h0].events, 2);
    assert_eq!(p.deltas[&h0].fields["x"].mean, 2.0);
    assert_eq!(p.deltas[&m61].events, 1);
    assert_eq!(p.deltas[&h1].events, 1);
    assert_eq!(p.deltas.len(), 5);
    assert_eq!(
        p.state.latest.as_ref().map(|l| l.event_id.as_str()),
        Some("e3")
    );
}

#[test]
fn a_rebuild_splits_events_between_generations_by_received_at() {
    let state = AggState {
        generation: 1,
        floor: 100,
        next: Some(NextGeneration {
            generation: 2,
            cut: 200,
            started_at: 150,
            latest: None,
        }),
        ..AggState::default()
    };
    let batch = vec![
        event(1, 1, 0, 50, 1.0),  // in the rebuild that made generation 1
        event(1, 2, 0, 150, 1.0), // generation 1; the next rebuild reads it
        event(1, 3, 0, 250, 1.0), // both
    ];
    let p = plan(&state, &batch);
    assert_eq!(p.applied, 3);
    assert_eq!(count(&p, 1), 2);
    assert_eq!(count(&p, 2), 1);
    assert_eq!(
        p.state.next.and_then(|n| n.latest).map(|l| l.event_id),
        Some("e3".to_owned())
    );
}

#[test]
fn unreadable_data_counts_without_fields() {
    let mut bad = event(1, 1, 0, 1, 1.0);
    bad.item.data = "not json".into();
    let p = plan(&AggState::default(), &[bad]);
    assert_eq!((p.applied, p.unreadable), (1, 1));
    let [minute, _] = TierKey::of_event(0, 0);
    assert_eq!(p.deltas[&minute].events, 1);
    assert!(p.deltas[&minute].fields.is_empty());
}

#[test]
fn latest_ties_go_to_the_greater_event_id() {
    let a = event(1, 1, 5, 1, 1.0);
    let mut b = event(2, 1, 5, 1, 1.0);
    b.item.event_id = "e0".into();
    let p = plan(&AggState::default(), &[a.clone(), b.clone()]);
    let q = plan(&AggState::default(), &[b, a]);
    assert_eq!(p.state.latest, q.state.latest);
    assert_eq!(p.state.latest.map(|l| l.event_id), Some("e1".to_owned()));
}

#[test]
fn runs_bound_the_summaries_per_commit() {
    // 200 events, each in its own minute and hour.
    let batch: Vec<StreamEvent> = (0..200)
        .map(|i| event(1, i + 1, i as i64 * 60 * MINUTE_MS, 1, 1.0))
        .collect();
    let cut = runs(&batch, 98);
    assert!(cut.len() > 1);
    assert_eq!(cut.first().map(|r| r.start), Some(0));
    assert_eq!(cut.last().map(|r| r.end), Some(200));
    for pair in cut.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    for run in &cut {
        let p = plan(&AggState::default(), &batch[run.clone()]);
        assert!(p.deltas.len() * 2 <= 98, "{} summaries", p.deltas.len());
    }
    // Events in one minute stay in one run.
    let same: Vec<StreamEvent> = (0..1000).map(|i| event(1, i + 1, 0, 1, 1.0)).collect();
    assert_eq!(runs(&same, 98), vec![0..1000]);
    assert!(runs(&[], 98).is_empty());
}
