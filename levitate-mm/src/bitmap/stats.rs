//! The bitmap layer's figures: chunks held, frames in runs (per owner, for meminfo: the
//! buddy sees only whole chunks owned by `bitmap`), free frames inside chunks, fallbacks
//! to the buddy, misuse counts. A `BitmapStats` is a copy, taken in O(1).

use super::{RunMisuse, SmallRuns, CHUNK_FRAMES};
use crate::buddy::Owner;

/// Refused calls, per kind of misuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunMisuseCounts([u64; RunMisuse::COUNT]);

impl RunMisuseCounts {
    /// No refusal yet.
    pub const ZERO: RunMisuseCounts = RunMisuseCounts([0; RunMisuse::COUNT]);

    /// How many calls were refused for `kind`.
    pub const fn get(&self, kind: RunMisuse) -> u64 {
        self.0[kind as usize]
    }

    /// All refused calls.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (RunMisuse, u64)> + '_ {
        RunMisuse::ALL.iter().map(|&k| (k, self.get(k)))
    }

    pub(super) fn record(&mut self, kind: RunMisuse) {
        self.0[kind as usize] += 1;
    }
}

/// A snapshot of the bitmap layer's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapStats {
    /// Chunks held (each 2 MiB, allocated from the buddy to owner `bitmap`).
    pub chunks: u64,
    /// Chunk slots in all.
    pub capacity: u64,
    /// Frames in runs: the sum of the lengths of the live runs.
    pub frames_in_use: u64,
    /// Free frames inside the chunks (memory the buddy counts as allocated).
    pub frames_free: u64,
    /// Frames in runs, per owner (index: `Owner as usize`).
    pub allocated: [u64; Owner::COUNT],
    /// Small requests served by the buddy, rounded up, because no chunk could be taken.
    pub fallbacks: u64,
    /// Small requests that failed even in the buddy.
    pub failures: u64,
    /// Chunks taken from the buddy since boot.
    pub chunks_taken: u64,
    /// Chunks given back since boot.
    pub chunks_returned: u64,
    /// Wholly free chunks kept (0 or 1: the idle chunk, see [`SmallRuns::release_idle`]).
    pub idle_chunks: u64,
    /// Allocations that found a write into a free frame of a chunk (poisoning).
    pub use_after_free: u64,
    /// Refused calls, per kind.
    pub misuse: RunMisuseCounts,
}

impl BitmapStats {
    /// Frames in runs of `owner`.
    pub fn allocated_to(&self, owner: Owner) -> u64 {
        self.allocated[owner as usize]
    }
}

impl<const N: usize> SmallRuns<N> {
    /// The figures now.
    pub fn stats(&self) -> BitmapStats {
        let chunks = self.held as u64;
        BitmapStats {
            chunks,
            capacity: N as u64,
            frames_in_use: self.in_use,
            frames_free: (chunks * CHUNK_FRAMES).saturating_sub(self.in_use),
            allocated: self.allocated,
            fallbacks: self.fallbacks,
            failures: self.failures,
            chunks_taken: self.chunks_taken,
            chunks_returned: self.chunks_returned,
            idle_chunks: u64::from(self.idle != super::chunk::NIL),
            use_after_free: self.use_after_free,
            misuse: self.misuse,
        }
    }
}
