//! Mergeable statistics of a set of `f64` values: count, mean, population
//! standard deviation, minimum and maximum, updated one value at a time
//! and merged with Chan, Golub and LeVeque's pairwise formula.
//!
//! # Exact over the whole finite range
//! The textbook form keeps M2, the sum of squared deviations, which
//! overflows for values above about 1.3e154 (and underflows below 1e-154).
//! [`Moments`] keeps the population deviation `sd = sqrt(M2 / n)` instead,
//! which never exceeds half the data's range, and merges it with `hypot`
//! (no intermediate square is formed). The means' difference, which can
//! reach twice `f64::MAX`, is only ever used halved. So every finite input
//! gives finite moments: `1e308` and `-1e308` have mean 0 and sample
//! deviation `sqrt(2) * 1e308`. The one result that can leave the range is
//! the *sample* deviation of data spanning nearly all of it (it is
//! `sd * sqrt(n / (n - 1))`), which is then not a finite number and is
//! reported as absent.
//!
//! Floating-point merge is not associative to the last bit, so every caller
//! that needs reproducible rows folds in one canonical order (see
//! [`crate::domain::window`]).

/// Statistics of a set of `f64` values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    /// Population standard deviation: `sqrt(sum((x - mean)^2) / count)`.
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            mean: 0.0,
            sd: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// The moments of one value.
    pub fn of(value: f64) -> Self {
        Moments {
            count: 1,
            mean: value,
            sd: 0.0,
            min: value,
            max: value,
        }
    }

    /// Adds one value (a merge with [`Moments::of`]: Welford's update).
    pub fn push(&mut self, value: f64) {
        self.merge(&Moments::of(value));
    }

    /// Chan et al.'s pairwise merge: afterwards `self` describes both sets.
    ///
    /// With `n = na + nb` and `d` the means' difference:
    /// `mean = mean_a + d * nb / n` and
    /// `sd^2 = (na sd_a^2 + nb sd_b^2) / n + (na nb / n^2) d^2`,
    /// computed as a `hypot` of three terms that cannot overflow.
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        // The means' difference overflows only for means of opposite signs
        // near the top of the range; then it is used halved (each step is
        // finite and the mean stays between the two). Otherwise it is used
        // as it is: halving first would lose the last bit of subnormal
        // means. `cross` is |d| sqrt(na nb) / n, with sqrt(na nb) / n <= 1/2.
        let diff = other.mean - self.mean;
        let weight = (na * nb).sqrt() / n;
        let cross = if diff.is_finite() {
            self.mean += diff * (nb / n);
            diff.abs() * weight
        } else {
            let half = other.mean / 2.0 - self.mean / 2.0;
            let step = half * (nb / n);
            self.mean = (self.mean + step) + step;
            half.abs() * (2.0 * weight)
        };
        self.sd = (self.sd * (na / n).sqrt())
            .hypot(other.sd * (nb / n).sqrt())
            .hypot(cross);
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Arithmetic mean; `None` for an empty set.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Sample standard deviation (divisor n - 1); `None` below two values,
    /// or where it exceeds the largest `f64`.
    pub fn sample_std(&self) -> Option<f64> {
        if self.count < 2 {
            return None;
        }
        let n = self.count as f64;
        Some(self.sd * (n / (n - 1.0)).sqrt()).filter(|s| s.is_finite())
    }

    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

#[cfg(test)]
pub(crate) mod tests;
