//! The frame workloads (a)-(e): each runs once per repetition per implementation and returns
//! nanoseconds per operation samples.

use crate::frames::Frames;
use crate::measure::{since, Rng};
use std::sync::Barrier;
use std::time::Instant;

/// Frames in the simulated RAM: 1 GiB.
pub const FRAMES: u64 = 1 << 18;
/// Pairs timed together in one sample of the order-0 workloads (one clock read per batch).
const BATCH: usize = 64;

/// Sizes of one repetition.
#[derive(Clone, Copy)]
pub struct Sizes {
    /// Samples (batches) per order-0 repetition.
    pub pair_batches: usize,
    /// Operations per repetition of `mixed` and `runs`.
    pub ops: usize,
    /// Pairs per thread in one scaling measurement.
    pub scaling_pairs: usize,
}

/// (a) an order-0 alloc+free pair on an empty range: ns per pair, per batch.
pub fn order0_empty(f: &dyn Frames, sizes: Sizes) -> Vec<f64> {
    pairs(f, sizes)
}

fn pairs(f: &dyn Frames, sizes: Sizes) -> Vec<f64> {
    // Warm the cache path once.
    let first = f.alloc(0, 0).expect("memory");
    f.free(0, first, 0);
    (0..sizes.pair_batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                let frame = f.alloc(0, 0).expect("memory");
                f.free(0, std::hint::black_box(frame), 0);
            }
            since(t) / BATCH as f64
        })
        .collect()
}

/// (b) the same pair with half of the first 128 MiB allocated, at random frames.
pub fn order0_fragmented(f: &dyn Frames, sizes: Sizes, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut held: Vec<u64> = (0..32768).map(|_| f.alloc(0, 0).expect("memory")).collect();
    // Free a random half (Fisher-Yates over the first half of the positions).
    for i in 0..held.len() / 2 {
        let j = i + rng.below((held.len() - i) as u64) as usize;
        held.swap(i, j);
    }
    let keep = held.split_off(held.len() / 2);
    for frame in held {
        f.free(0, frame, 0);
    }
    let samples = pairs(f, sizes);
    for frame in keep {
        f.free(0, frame, 0);
    }
    samples
}

/// (c) random allocations of orders 0-9 (order k with probability about 2^-(k+1)) and
/// random frees, 2k-8k blocks live: ns per single operation, clock cost subtracted.
pub fn mixed(f: &dyn Frames, sizes: Sizes, seed: u64, clock: f64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(u64, u8)> = Vec::with_capacity(8192);
    let mut samples = Vec::with_capacity(sizes.ops);
    for _ in 0..sizes.ops {
        let grow = live.len() < 2048 || (live.len() < 8192 && rng.below(2) == 0);
        if grow {
            let order = (rng.next().trailing_zeros() as u8).min(9);
            let t = Instant::now();
            let got = f.alloc(0, order);
            samples.push((since(t) - clock).max(0.0));
            live.push((got.expect("memory"), order));
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (frame, order) = live.swap_remove(i);
            let t = Instant::now();
            f.free(0, frame, order);
            samples.push((since(t) - clock).max(0.0));
        }
    }
    for (frame, order) in live {
        f.free(0, frame, order);
    }
    samples
}

/// (d) runs of 1-511 frames, 128-384 live: ns per single operation, and the frames the
/// allocator took beyond those asked for, as a fraction of those asked for.
pub fn runs(f: &dyn Frames, sizes: Sizes, seed: u64, clock: f64) -> (Vec<f64>, f64) {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(u64, u64)> = Vec::with_capacity(384);
    let mut samples = Vec::with_capacity(sizes.ops);
    let (mut asked, mut cost) = (0u64, 0u64);
    for _ in 0..sizes.ops {
        let grow = live.len() < 128 || (live.len() < 384 && rng.below(2) == 0);
        if grow {
            let n = 1 + rng.below(511);
            let t = Instant::now();
            let got = f.alloc_run(0, n);
            samples.push((since(t) - clock).max(0.0));
            live.push((got.expect("memory"), n));
            asked += n;
            cost += f.run_cost(n);
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (frame, n) = live.swap_remove(i);
            let t = Instant::now();
            f.free_run(0, frame, n);
            samples.push((since(t) - clock).max(0.0));
        }
    }
    for (frame, n) in live {
        f.free_run(0, frame, n);
    }
    (samples, (cost - asked) as f64 / asked as f64)
}

/// 2-frame alloc/free pairs with nothing else live: whether each pair takes a chunk.
pub fn boundary_pairs(f: &dyn Frames, pairs: usize) {
    for _ in 0..pairs {
        let frame = f.alloc_run(0, 2).expect("memory");
        f.free_run(0, frame, 2);
    }
}

/// (e) order-0 bursts (16 allocations, then 16 frees) on one thread, then on two at once,
/// each on its own cache: the two-thread throughput over the one-thread throughput.
pub fn scaling(f: &dyn Frames, sizes: Sizes) -> f64 {
    let work = |cpu: usize| {
        let mut held = [0u64; 16];
        for _ in 0..sizes.scaling_pairs / 16 {
            for h in held.iter_mut() {
                *h = f.alloc(cpu, 0).expect("memory");
            }
            for h in held {
                f.free(cpu, h, 0);
            }
        }
    };
    // Both cases on spawned threads released by a barrier, so they pay the same start-up.
    let timed = |threads: usize| {
        let barrier = Barrier::new(threads + 1);
        let start = std::thread::scope(|s| {
            for cpu in 0..threads {
                let barrier = &barrier;
                let work = &work;
                s.spawn(move || {
                    barrier.wait();
                    work(cpu);
                });
            }
            barrier.wait();
            Instant::now()
        });
        since(start)
    };
    let one = timed(1);
    let two = timed(2);
    2.0 * one / two
}
