//! The measurement method, the same as the CPython script's: untimed warm-up repetitions, then
//! timed repetitions, summarised by their median, minimum and maximum.

use serde::Serialize;

/// The summary of a case's timed repetitions, in the case's unit.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The median of the samples (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// Every timed sample, in the order measured.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none or one is not a finite number.
    pub fn of(samples: Vec<f64>) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples,
        })
    }
}

/// Runs `once` `warmup` times and throws the figures away, then `reps` times and summarises.
///
/// The first error of any repetition ends the measurement and is returned.
pub fn measure(
    warmup: usize,
    reps: usize,
    mut once: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(reps >= 1, "at least one timed repetition is needed");
    for _ in 0..warmup {
        once()?;
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        samples.push(once()?);
    }
    Summary::of(samples).ok_or_else(|| anyhow::anyhow!("a repetition gave a non-finite figure"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Summary::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.samples, vec![3.0, 1.0, 2.0]);
        let s = Summary::of(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn empty_or_non_finite_samples_are_refused() {
        assert!(Summary::of(vec![]).is_none());
        assert!(Summary::of(vec![1.0, f64::NAN]).is_none());
        assert!(measure(0, 0, || Ok(1.0)).is_err());
    }

    #[test]
    fn warmup_figures_are_discarded_and_errors_propagate() {
        let mut calls = 0;
        let s = measure(2, 3, || {
            calls += 1;
            Ok(calls as f64)
        })
        .unwrap();
        assert_eq!(s.samples, vec![3.0, 4.0, 5.0]);
        let r = measure(0, 3, || anyhow::bail!("broken"));
        assert_eq!(r.unwrap_err().to_string(), "broken");
    }
}
