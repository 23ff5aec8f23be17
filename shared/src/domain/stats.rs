//! Mergeable moments: count, mean and M2 (the sum of squared deviations from
//! the mean), updated one value at a time with Welford's method and merged
//! with Chan, Golub and LeVeque's pairwise formula. Never sum-of-squares,
//! which loses all precision when the mean is large against the deviation.
//!
//! Floating-point merge is not associative to the last bit, so every caller
//! that needs reproducible rows folds in one canonical order (see
//! [`crate::domain::series`]).

/// Moments of a set of `f64` values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from `mean`.
    pub m2: f64,
}

impl Moments {
    /// The moments of one value.
    pub fn of(value: f64) -> Self {
        Moments {
            count: 1,
            mean: value,
            m2: 0.0,
        }
    }

    /// Welford's update with one more value.
    pub fn push(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    /// Chan et al.'s pairwise merge: afterwards `self` describes both sets.
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
        let delta = other.mean - self.mean;
        self.mean += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        self.count += other.count;
    }

    /// Arithmetic mean; `None` for an empty set.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Sample standard deviation (divisor n - 1); `None` below two values.
    pub fn sample_std(&self) -> Option<f64> {
        (self.count >= 2).then(|| (self.m2.max(0.0) / (self.count - 1) as f64).sqrt())
    }
}

#[cfg(test)]
pub(crate) mod tests;
