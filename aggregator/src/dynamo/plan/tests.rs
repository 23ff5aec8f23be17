use super::*;
use sygno_shared::domain::tiers::Tier;
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

/// DynamoDB's items per transaction.
const MAX_ITEMS: usize = 100;

/// Without stored scope states or applied marks, at the default field
/// limit.
fn plan(state: &AggState, events: &[StreamEvent]) -> Plan {
    super::plan(
        state,
        &BTreeMap::new(),
        &AppliedSets::new(),
        events,
        &Scope::All,
        2_000,
    )
}

/// Over the applied marks a previous plan stored.
fn plan_after(previous: &Plan, events: &[StreamEvent]) -> Plan {
    super::plan(
        &AggState::default(),
        &BTreeMap::new(),
        &previous.applied_sets,
        events,
        &Scope::All,
        2_000,
    )
}

/// Events counted in `generation`'s all-events minute summaries.
fn count(plan: &Plan, generation: u64) -> u64 {
    plan.deltas()
        .filter(|((g, k), _)| *g == generation && k.tier == Tier::Minute && k.scope == Scope::All)
        .map(|(_, s)| s.events)
        .sum()
}

fn key(scope: Scope, tier: Tier, index: i64) -> SummaryKey {
    SummaryKey { scope, tier, index }
}

fn latest_id(plan: &Plan, generation: u64) -> Option<String> {
    plan.batches[&generation].scopes[&Scope::All]
        .latest
        .as_ref()
        .map(|l| l.event_id.clone())
}

#[test]
fn events_marked_applied_are_skipped_in_any_order() {
    let batch = vec![
        event(1, 10, 0, 1_000, 1.0),
        event(2, 5, 0, 1_500, 2.0),
        event(1, 11, 0, 2_000, 3.0),
    ];
    let first = plan(&AggState::default(), &batch);
    assert_eq!((first.applied, first.skipped), (3, 0));
    let shape: Vec<(i64, usize)> = first
        .new_marks
        .iter()
        .map(|(second, marks)| (*second, marks.len()))
        .collect();
    assert_eq!(shape, [(1, 2), (2, 1)]);
    // The same batch again, reversed, and a bisected half: nothing new,
    // nothing to store.
    let mut reversed = batch.clone();
    reversed.reverse();
    let again = plan_after(&first, &reversed);
    assert_eq!((again.applied, again.skipped), (0, 3));
    assert!(again.is_empty());
    assert!(again.new_marks.is_empty());
    let half = plan_after(&first, &batch[1..]);
    assert_eq!((half.applied, half.skipped), (0, 2));
    // A record with a smaller sequence number (a new stream after a
    // restore, or another shard) is new if its event is.
    let later = plan_after(&first, &[event(2, 1, 0, 1_000, 1.0)]);
    assert_eq!(later.applied, 1);
    // A record delivered twice within one batch counts once.
    let twice = plan(&AggState::default(), &[batch[0].clone(), batch[0].clone()]);
    assert_eq!((twice.applied, twice.skipped), (1, 1));
}

#[test]
fn deltas_count_each_new_event_in_its_minute_and_hour() {
    let batch = vec![
        event(1, 1, 0, 1, 1.0),
        event(1, 2, MINUTE_MS, 1, 3.0),
        event(1, 3, 61 * MINUTE_MS, 1, 5.0),
    ];
    let p = plan(&AggState::default(), &batch);
    let deltas = &p.batches[&0].summaries;
    let source = Scope::Source("n".into());
    assert_eq!(deltas[&key(Scope::All, Tier::Minute, 0)].events, 1);
    assert_eq!(deltas[&key(Scope::All, Tier::Hour, 0)].events, 2);
    assert_eq!(
        deltas[&key(Scope::All, Tier::Hour, 0)].fields["x"].mean,
        2.0
    );
    assert_eq!(deltas[&key(Scope::All, Tier::Minute, 61)].events, 1);
    assert_eq!(deltas[&key(source.clone(), Tier::Hour, 1)].events, 1);
    assert_eq!(
        deltas.len(),
        10,
        "five summaries each for all events and the source"
    );
    assert_eq!(latest_id(&p, 0).as_deref(), Some("e3"));
    assert_eq!(p.latest.len(), 2, "latest rows of both aggregates");
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
            alive_at: 150,
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
    assert_eq!(latest_id(&p, 2).as_deref(), Some("e3"));
    assert_eq!(latest_id(&p, 1).as_deref(), Some("e3"));
}

#[test]
fn unreadable_data_counts_without_fields() {
    let mut bad = event(1, 1, 0, 1, 1.0);
    bad.item.data = "not json".into();
    let p = plan(&AggState::default(), &[bad]);
    assert_eq!((p.applied, p.unreadable), (1, 1));
    let minute = &p.batches[&0].summaries[&key(Scope::All, Tier::Minute, 0)];
    assert_eq!(minute.events, 1);
    assert!(minute.fields.is_empty());
}

#[test]
fn latest_ties_go_to_the_later_received_then_the_greater_event_id() {
    let a = event(1, 1, 5, 1, 1.0);
    let mut b = event(2, 1, 5, 1, 1.0);
    b.item.event_id = "e0".into();
    let p = plan(&AggState::default(), &[a.clone(), b.clone()]);
    let q = plan(&AggState::default(), &[b.clone(), a.clone()]);
    assert_eq!(latest_id(&p, 0), latest_id(&q, 0));
    assert_eq!(latest_id(&p, 0).as_deref(), Some("e1"));
    // Stored later wins over the id.
    b.item.received_at = 2;
    let r = plan(&AggState::default(), &[b, a]);
    assert_eq!(latest_id(&r, 0).as_deref(), Some("e0"));
}

#[test]
fn stored_scope_states_carry_on() {
    let first = plan(&AggState::default(), &[event(1, 1, 0, 1, 1.0)]);
    let stored: BTreeMap<(u64, Scope), ScopeState> = first.batches[&0]
        .scopes
        .iter()
        .map(|(s, st)| ((0, s.clone()), st.clone()))
        .collect();
    let second = super::plan(
        &AggState::default(),
        &stored,
        &first.applied_sets,
        &[event(1, 2, 0, 1, 1.0)],
        &Scope::All,
        2_000,
    );
    assert_eq!(second.batches[&0].scopes[&Scope::All].events, 2);
    assert_eq!(
        second.batches[&0].scopes[&Scope::Source("n".into())].events,
        2
    );
    assert_eq!(
        scopes_needed(&AggState::default(), &[event(1, 2, 0, 1, 1.0)], &Scope::All).len(),
        2
    );
}

/// The all-events share of a batch goes to the part its aggregator
/// writes, with the same deltas the unsplit aggregate would get.
#[test]
fn the_all_events_share_goes_to_the_aggregators_part() {
    let batch = vec![event(1, 1, 0, 1, 1.0), event(2, 2, MINUTE_MS, 1, 3.0)];
    let part = Scope::AllPart(3);
    let whole = plan(&AggState::default(), &batch);
    let split = super::plan(
        &AggState::default(),
        &BTreeMap::new(),
        &AppliedSets::new(),
        &batch,
        &part,
        2_000,
    );
    let scopes: Vec<&Scope> = split.batches[&0].scopes.keys().collect();
    assert_eq!(scopes, [&Scope::Source("n".into()), &part]);
    assert_eq!(
        split.batches[&0].scopes[&part],
        whole.batches[&0].scopes[&Scope::All]
    );
    for (key, delta) in &whole.batches[&0].summaries {
        let key = match key.scope {
            Scope::All => SummaryKey {
                scope: part.clone(),
                ..key.clone()
            },
            _ => key.clone(),
        };
        assert_eq!(split.batches[&0].summaries[&key], *delta);
    }
    assert_eq!(split.latest.keys().filter(|(_, s)| *s == part).count(), 1);
    assert_eq!(
        scopes_needed(&AggState::default(), &batch, &part),
        [(0, part.clone()), (0, Scope::Source("n".into()))]
    );
}

#[test]
fn runs_bound_the_summaries_per_commit() {
    // 200 events, each in its own minute and hour.
    let batch: Vec<StreamEvent> = (0..200)
        .map(|i| event(1, i + 1, i as i64 * 60 * MINUTE_MS, 1, 1.0))
        .collect();
    let cut = runs(&batch, 99);
    assert!(cut.len() > 1);
    assert_eq!(cut.first().map(|r| r.start), Some(0));
    assert_eq!(cut.last().map(|r| r.end), Some(200));
    for pair in cut.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    for run in &cut {
        let p = plan(&AggState::default(), &batch[run.clone()]);
        let items = p.deltas().count() + p.batches[&0].scopes.len();
        assert!(items * 2 < MAX_ITEMS, "{items} items");
    }
    // Events in one minute stay in one run.
    let same: Vec<StreamEvent> = (0..1000).map(|i| event(1, i + 1, 0, 1, 1.0)).collect();
    assert_eq!(runs(&same, 99), vec![0..1000]);
    assert!(runs(&[], 99).is_empty());
}
