use super::*;
use crate::domain::fields::Fields;
use crate::domain::time::{DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS};
use proptest::prelude::*;

fn one(v: f64) -> Summary {
    let mut s = Summary::default();
    s.record(&Fields::from([("x".to_owned(), v)]));
    s
}

#[test]
fn pieces_come_lead_hours_trail() {
    let end = 100 * DAY_MS + 17 * MINUTE_MS;
    let p = pieces(end, DAY_MS);
    let tiers: Vec<Tier> = p.iter().map(|(t, _)| *t).collect();
    assert_eq!(tiers, [Tier::Minute, Tier::Hour, Tier::Minute]);
    assert!(p[0].1.end <= p[1].1.start * BLOCK_BUCKETS);
    let on_the_hour = pieces(100 * DAY_MS, DAY_MS);
    assert_eq!(on_the_hour, vec![(Tier::Hour, 2400 - 24..2400)]);
}

proptest! {
    /// Any sequence of changes and moving window ends: the cache folds
    /// exactly what an uncached fold of the same summaries gives.
    #[test]
    fn the_cache_never_changes_a_bit(
        steps in proptest::collection::vec((0i64..(3 * HOUR_MS), 0i64..20, -100.0f64..100.0), 1..60),
    ) {
        let mut map: BTreeMap<(Tier, i64), Summary> = BTreeMap::new();
        let mut cache = WindowCache::default();
        let mut now = 10 * DAY_MS;
        for (advance, back, value) in steps {
            now += advance;
            // A change somewhere in the last 20 hours, in both tiers.
            let t = now - back * HOUR_MS - advance / 3;
            let minute = bucket_of(t);
            for key in [(Tier::Minute, minute), (Tier::Hour, minute.div_euclid(BLOCK_BUCKETS))] {
                map.entry(key).or_default().merge(&one(value));
                cache.invalidate(key.0, key.1);
            }
            let end = crate::domain::time::window_end(now);
            for span in [DAY_MS, WEEK_MS] {
                let reads = cache.reads(end, span);
                let mut asked = Vec::new();
                let got = cache.fold(end, span, &mut |tier, range: std::ops::Range<i64>| {
                    asked.push((tier, range.clone()));
                    map.range((tier, range.start)..(tier, range.end)).map(|(_, s)| s)
                });
                asked.retain(|(_, r)| !r.is_empty());
                prop_assert_eq!(&asked, &reads, "fold reads what reads() announced");
                prop_assert_eq!(got, fold_map(&map, end, span));
            }
            cache.retain_used();
        }
    }
}
