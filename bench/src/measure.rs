//! Timing and summaries: samples in nanoseconds per operation, a small deterministic
//! generator, and the cost of reading the clock (subtracted from single-operation samples).

use std::time::Instant;

/// Nanoseconds since `t`.
pub fn since(t: Instant) -> f64 {
    t.elapsed().as_nanos() as f64
}

/// What one clock read pair costs on average (subtracted from samples that time a single
/// operation). The mean, not the median: the clock here resolves only about 10 ns, so a pair
/// reads as 30 or 40 ns and the median jumps between them from run to run, which moved the
/// estimated mean of a 10 ns operation by half; the mean of the readings (the slowest 1 %,
/// preemptions, left out) is stable to a fraction of a nanosecond.
pub fn clock_cost() -> f64 {
    let mut v: Vec<f64> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            since(t)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    let kept = &v[..v.len() * 99 / 100];
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// Median, mean and 99th percentile of samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub median: f64,
    pub mean: f64,
    pub p99: f64,
}

impl Summary {
    /// Of `samples` (sorted here). Zero when empty.
    pub fn of(samples: &mut [f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            median: at(0.5),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
            p99: at(0.99),
        }
    }
}

/// xorshift64*: the same sequence for every implementation.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
