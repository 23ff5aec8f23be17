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
        exact_sqrt(&var)
    });
    (mean.to_f64().expect("representable"), std)
}

/// The square root of a non-negative rational far outside the f64 range
/// (a variance of values near 1e308 is near 1e616): scaled by a power of
/// four into range, rooted, scaled back by the power of two.
fn exact_sqrt(x: &BigRational) -> f64 {
    if x.is_zero() {
        return 0.0;
    }
    let four = BigRational::from_integer(BigInt::from(4));
    let (mut scaled, mut k) = (x.clone(), 0i32);
    let (low, high) = (
        BigRational::from_float(1e-200).expect("finite"),
        BigRational::from_float(1e200).expect("finite"),
    );
    while scaled > high {
        scaled /= &four;
        k += 1;
    }
    while scaled < low {
        scaled *= &four;
        k -= 1;
    }
    scaled.to_f64().expect("in range").sqrt() * 2f64.powi(k)
}

/// The contract's accuracy: relative error at most 1e-9, scaled by the
/// larger of |mean| and the deviation (a mean near zero is judged against
/// the spread of the data). Minimum and maximum are exact.
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
        (None, Some(e)) if !e.is_finite() => {}
        other => panic!("std presence differs: {other:?}"),
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!((got.min(), got.max()), (Some(min), Some(max)));
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

/// Values from 1e-300 to 1e308 in magnitude, both signs, some of them
/// equal: the whole finite range at once.
fn extreme() -> impl Strategy<Value = Vec<f64>> {
    let value = (-300i32..=307, 1.0f64..9.99, any::<bool>()).prop_map(|(e, m, neg)| {
        if neg {
            -m * 10f64.powi(e)
        } else {
            m * 10f64.powi(e)
        }
    });
    proptest::collection::vec(value, 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn extreme_magnitudes_match_exact(values in extreme(), cut in any::<prop::sample::Index>()) {
        assert_close(&moments_of(&values), &values);
        let cut = cut.index(values.len());
        let mut merged = moments_of(&values[..cut]);
        merged.merge(&moments_of(&values[cut..]));
        assert_close(&merged, &values);
    }

    #[test]
    fn one_magnitude_band_anywhere_in_the_range(values in data(), exp in -290i32..290) {
        let scaled: Vec<f64> = values.iter().map(|v| v * 10f64.powi(exp)).collect();
        prop_assume!(scaled.iter().all(|v| v.is_finite()) && ratio_ok(&scaled));
        assert_close(&moments_of(&scaled), &scaled);
    }
}

#[test]
fn the_contracts_extreme_examples() {
    let m = moments_of(&[1e308, -1e308]);
    assert_eq!(m.mean(), Some(0.0));
    let std = m.sample_std().expect("two values");
    assert!(
        (std - std::f64::consts::SQRT_2 * 1e308).abs() <= 1e-15 * std,
        "{std}"
    );
    let m = moments_of(&[1e160, 3e160]);
    let std = m.sample_std().expect("two values");
    assert!(
        (std - std::f64::consts::SQRT_2 * 1e160).abs() <= 1e-15 * std,
        "{std}"
    );
    // Hundreds of values at the top of the range: nothing overflows.
    let many: Vec<f64> = (0..500)
        .map(|i| if i % 2 == 0 { f64::MAX } else { -f64::MAX })
        .collect();
    assert_close(&moments_of(&many), &many);
    // The sample deviation of two values spanning the whole range exceeds
    // f64::MAX: absent, not infinite.
    assert_eq!(moments_of(&[f64::MAX, -f64::MAX]).sample_std(), None);
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

#[test]
fn subnormal_means_keep_their_last_bit() {
    let (a, b) = (f64::from_bits(1), f64::from_bits(3));
    let m = moments_of(&[a, b]);
    assert_eq!(m.mean(), Some(f64::from_bits(2)));
}
