//! The heap workloads (f): each runs once per repetition per heap and returns nanoseconds per
//! operation samples. Every block gets its first and last byte written, as a user would.

use crate::heap::Heap;
use crate::measure::{since, Rng};
use core::alloc::Layout;
use core::ptr::NonNull;
use std::time::Instant;

fn touch(p: NonNull<u8>, size: usize) {
    // SAFETY: `p` is a live block of `size` bytes from the heap under test.
    unsafe {
        p.as_ptr().write_volatile(1);
        p.as_ptr().add(size - 1).write_volatile(2);
    }
}

/// Waits until the user's writes so far (a `touch`) have reached the cache, before the next
/// timed operation starts its clock. Without it, a write that missed the cache is still
/// pending when the clock starts and is charged to whichever operation is timed next (on
/// x86 a stalled store holds every later store behind it). That charge is lopsided: a heap
/// with headers inside its blocks (talc, rlsf, linked_list_allocator, buddy_system_allocator)
/// brings the block's first and last lines into the cache during its own timed `alloc`, so
/// the user's touch hits; Levitate keeps its records outside the blocks, so the touch misses
/// and the miss landed in the next `free` (measured on an AMD EPYC guest, heap-large: that
/// free took 150 ns with the miss pending, 55 ns without; talc's 40-60 either way). The
/// untimed `*-loop` workloads keep the user's writes inside the measurement instead, for
/// every heap alike.
fn settle() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

fn alloc(h: &mut dyn Heap, layout: Layout) -> NonNull<u8> {
    let p = h
        .alloc(layout)
        .expect("the arena is large enough for every workload");
    touch(p, layout.size());
    p
}

/// How [`steady`] measures its `ops` replacements.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Each alloc and each free on its own clock (clock cost subtracted), the user's writes
    /// settled before the next clock starts: the distribution of single operations.
    PerOperation,
    /// One clock around all of them, the user's writes included and nothing settled: one
    /// sample, the mean ns per operation of the whole loop as a program would see it.
    Loop,
}

/// `live` blocks of `lo..=hi` bytes, `live` untimed replacements (free a random block,
/// allocate a new random size) to reach a steady state, then `ops` measured ones (see
/// [`Timing`]). For Levitate's heap, `waste` gets the bytes lost to class rounding of the
/// live blocks at the end.
#[allow(clippy::too_many_arguments)]
pub fn steady(
    h: &mut dyn Heap,
    live: usize,
    (lo, hi): (usize, usize),
    ops: usize,
    seed: u64,
    clock: f64,
    timing: Timing,
    waste: &mut Option<f64>,
) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let size = |rng: &mut Rng| lo + rng.below((hi - lo + 1) as u64) as usize;
    let mut blocks: Vec<(NonNull<u8>, Layout)> = (0..live)
        .map(|_| {
            let layout = Layout::from_size_align(size(&mut rng), 8).expect("layout");
            (alloc(h, layout), layout)
        })
        .collect();
    // One untimed replacement: free a random block, allocate a new random size (touched).
    let replace = |h: &mut dyn Heap, rng: &mut Rng, blocks: &mut [(NonNull<u8>, Layout)]| {
        let i = rng.below(live as u64) as usize;
        let (p, layout) = blocks[i];
        // SAFETY: a live block of this heap, freed once (replaced below).
        unsafe { h.free(p, layout) };
        let layout = Layout::from_size_align(size(rng), 8).expect("layout");
        blocks[i] = (alloc(h, layout), layout);
    };
    // Bring the heap to its steady state first: `live` replacements, untimed (a first-fit
    // list is fast while its holes are few, slow once every block has been replaced once).
    for _ in 0..live {
        replace(h, &mut rng, &mut blocks);
    }
    let mut samples = Vec::with_capacity(2 * ops);
    match timing {
        Timing::Loop => {
            let t = Instant::now();
            for _ in 0..ops {
                replace(h, &mut rng, &mut blocks);
            }
            samples.push(since(t) / (2 * ops) as f64);
        }
        Timing::PerOperation => {
            for _ in 0..ops {
                let i = rng.below(live as u64) as usize;
                let (p, layout) = blocks[i];
                let t = Instant::now();
                // SAFETY: a live block of this heap, freed once (replaced below).
                unsafe { h.free(p, layout) };
                samples.push((since(t) - clock).max(0.0));
                let layout = Layout::from_size_align(size(&mut rng), 8).expect("layout");
                let t = Instant::now();
                let p = h.alloc(layout);
                samples.push((since(t) - clock).max(0.0));
                let p = p.expect("the arena is large enough");
                touch(p, layout.size());
                settle();
                blocks[i] = (p, layout);
            }
        }
    }
    if let Some(l) = h.as_levitate() {
        *waste = l.rounding_waste();
    }
    for (p, layout) in blocks {
        // SAFETY: live blocks of this heap, each freed once.
        unsafe { h.free(p, layout) };
    }
    samples
}

/// A realistic mix, `rounds` times: a `Vec<u64>` grown by doubling to 1024 elements (each
/// step a new block, the copy, the old one freed), eight strings built the same way to
/// 100-300 bytes, and 32 boxed 48-byte structs, all freed at the end. ns per operation
/// (alloc or free), one sample per round.
pub fn mix(h: &mut dyn Heap, rounds: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut ops = 0usize;
        let t = Instant::now();
        let grow = |h: &mut dyn Heap, ops: &mut usize, end: usize, align: usize| {
            let mut cur: Option<(NonNull<u8>, Layout)> = None;
            let mut cap = 8;
            while cap <= end {
                let layout = Layout::from_size_align(cap, align).expect("layout");
                let p = alloc(h, layout);
                *ops += 1;
                if let Some((old, old_layout)) = cur {
                    // SAFETY: distinct live blocks of `old_layout.size()` and more bytes.
                    unsafe {
                        core::ptr::copy_nonoverlapping(old.as_ptr(), p.as_ptr(), old_layout.size());
                        h.free(old, old_layout);
                    }
                    *ops += 1;
                }
                cur = Some((p, layout));
                cap *= 2;
            }
            cur.expect("at least one step")
        };
        let vec = grow(h, &mut ops, 8 * 1024, 8);
        let strings: Vec<_> = (0..8)
            .map(|_| grow(h, &mut ops, 100 + rng.below(200) as usize, 1))
            .collect();
        let boxes: Vec<_> = (0..32)
            .map(|_| {
                ops += 1;
                let layout = Layout::from_size_align(48, 8).expect("layout");
                (alloc(h, layout), layout)
            })
            .collect();
        for (p, layout) in boxes.into_iter().chain(strings).chain([vec]) {
            ops += 1;
            // SAFETY: live blocks, each freed once.
            unsafe { h.free(p, layout) };
        }
        samples.push(since(t) / ops as f64);
    }
    samples
}

/// Grows to 16 MiB of live small blocks (16-512 B) and frees everything: ns per operation,
/// one sample per round. For Levitate's heap, `reclaimed` gets the share of the memory it
/// mapped for this that it holds no longer after a reclaim.
pub fn grow_and_free(h: &mut dyn Heap, seed: u64, reclaimed: &mut Option<f64>) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut blocks = Vec::new();
    let mut bytes = 0;
    if let Some(l) = h.as_levitate() {
        l.mark();
    }
    let t = Instant::now();
    while bytes < 16 << 20 {
        let size = 16 + rng.below(497) as usize;
        let layout = Layout::from_size_align(size, 8).expect("layout");
        blocks.push((alloc(h, layout), layout));
        bytes += size;
    }
    let ops = 2 * blocks.len();
    for (p, layout) in blocks {
        // SAFETY: live blocks, each freed once.
        unsafe { h.free(p, layout) };
    }
    let sample = since(t) / ops as f64;
    if let Some(l) = h.as_levitate() {
        *reclaimed = Some(l.reclaim());
    }
    vec![sample]
}
