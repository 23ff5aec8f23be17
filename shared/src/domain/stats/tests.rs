use super::Moments;
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{ToPrimitive, Zero};
use proptest::prelude::*;

/// Mean and sample standard deviation computed exactly on the same f64
/// inputs (rational arithmetic); only the final square root is rounded.
pub(crate) fn exact(values: &[f64]) -> (f64, Option<f64>) {
    let xs: Vec<BigRational> = values
        .iter()
        .map(|v| BigRational::from_float(*v).expect("finite"))
        .collect();
    let n = BigRational::from_integer(BigInt::from(xs.len()));
    let sum: BigRational = xs.iter().fold(BigRational::zero(), |a, x| a + x);
    let mean = sum / &n;
    let ss = xs
        .iter()
        .fold(BigRational::zero(), |a, x| a + (x - &mean) * (x - &mean));
    let std = (xs.len() >= 2).then(|| {
        let var = ss / (n - BigRational::from_integer(BigInt::from(1)));
        var.to_f64().expect("representable").sqrt()
    });
    (mean.to_f64().expect("representable"), std)
}

/// The contract's accuracy: relative error at most 1e-9, scaled by the
/// larger of |mean| and the deviation (a mean near zero is judged against
/// the spread of the data).
#[track_caller]
pub(crate) fn assert_close(got: &Moments, values: &[f64]) {
    let (mean, std) = exact(values);
    assert_eq!(got.count, values.len() as u64);
    let scale = mean.abs().max(std.unwrap_or(0.0));
    let got_mean = got.mean().expect("non-empty");
    assert!(
        (got_mean - mean).abs() <= 1e-9 * scale,
        "mean {got_mean} vs exact {mean}"
    );
    match (got.sample_std(), std) {
        (Some(g), Some(e)) => assert!((g - e).abs() <= 1e-9 * e, "std {g} vs exact {e}"),
        (None, None) => {}
        other => panic!("std presence differs: {other:?}"),
    }
}

fn moments_of(values: &[f64]) -> Moments {
    let mut m = Moments::default();
    for v in values {
        m.push(*v);
    }
    m
}

/// Data whose mean is at most 1e4 times its deviation, over many scales.
fn data() -> impl Strategy<Value = Vec<f64>> {
    (-6i32..6, 0.0f64..1e4, 2usize..400).prop_flat_map(|(exp, ratio, n)| {
        let scale = 10f64.powi(exp);
        let center = scale * ratio * 0.5;
        proptest::collection::vec(-1.0f64..1.0, n)
            .prop_map(move |us| us.into_iter().map(|u| center + scale * u).collect())
    })
}

fn ratio_ok(values: &[f64]) -> bool {
    let (mean, std) = exact(values);
    std.is_some_and(|s| s > 0.0 && mean.abs() <= 1e4 * s)
}

proptest! {
    #[test]
    fn welford_matches_exact(values in data()) {
        prop_assume!(ratio_ok(&values));
        assert_close(&moments_of(&values), &values);
    }

    #[test]
    fn merge_in_any_split_and_order_matches_exact(
        values in data(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        order in any::<u64>(),
    ) {
        prop_assume!(ratio_ok(&values));
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(values.len())).collect();
        points.extend([0, values.len()]);
        points.sort_unstable();
        points.dedup();
        let mut parts: Vec<Moments> = points.windows(2).map(|w| moments_of(&values[w[0]..w[1]])).collect();
        // A deterministic shuffle from `order`.
        let mut seed = order;
        for i in (1..parts.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            parts.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let mut left = Moments::default();
        for p in &parts {
            left.merge(p);
        }
        assert_close(&left, &values);
        let mut right = Moments::default();
        for p in parts.iter().rev() {
            right.merge(p);
        }
        assert_close(&right, &values);
    }

    #[test]
    fn merge_is_associative_within_tolerance(a in data(), b in data(), c in data()) {
        let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
        prop_assume!(ratio_ok(&all));
        let (ma, mb, mc) = (moments_of(&a), moments_of(&b), moments_of(&c));
        let mut ab_c = ma;
        ab_c.merge(&mb);
        ab_c.merge(&mc);
        let mut bc = mb;
        bc.merge(&mc);
        let mut a_bc = ma;
        a_bc.merge(&bc);
        assert_close(&ab_c, &all);
        assert_close(&a_bc, &all);
    }
}

#[test]
fn sum_of_squares_would_fail_where_welford_holds() {
    // Mean 1e9, deviation 1e5 (ratio 1e4): E[x^2] - E[x]^2 cancels badly in
    // f64; Welford keeps the contract's 1e-9.
    let values: Vec<f64> = (0..1000)
        .map(|i| 1e9 + 1e5 * ((i % 7) as f64 - 3.0))
        .collect();
    assert_close(&moments_of(&values), &values);
}

#[test]
fn fewer_than_two_values_have_no_deviation() {
    assert_eq!(Moments::default().mean(), None);
    assert_eq!(Moments::default().sample_std(), None);
    let one = Moments::of(4.5);
    assert_eq!(one.mean(), Some(4.5));
    assert_eq!(one.sample_std(), None);
}

#[test]
fn merging_empty_changes_nothing() {
    let mut m = moments_of(&[1.0, 2.0, 4.0]);
    let before = m;
    m.merge(&Moments::default());
    assert_eq!(m, before);
    let mut empty = Moments::default();
    empty.merge(&before);
    assert_eq!(empty, before);
}

#[test]
fn statrs_agrees_on_a_plain_sample() {
    use statrs::statistics::Statistics;
    let values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
    let m = moments_of(&values);
    assert!((m.mean().unwrap_or_default() - values.mean()).abs() < 1e-12);
    assert!((m.sample_std().unwrap_or_default() - values.std_dev()).abs() < 1e-12);
}
