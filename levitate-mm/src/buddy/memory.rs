//! The one way the allocator reaches the memory it manages. `levitate-mm` never touches
//! physical memory itself (no unsafe code, no hardware): the kernel implements
//! [`FrameMemory`] over its linear map, tests over a map in host memory.

use crate::addr::{Pfn, PhysAddr};

/// The byte freed frames are filled with while poisoning is on (Linux's `PAGE_POISON`).
pub const POISON: u8 = 0xaa;

/// Byte access to whole frames.
pub trait FrameMemory {
    /// Writes `byte` to every byte of the `frames` frames starting at `first`.
    fn fill(&mut self, first: Pfn, frames: u64, byte: u8);

    /// The lowest address in the `frames` frames starting at `first` whose byte is not
    /// `byte`, if there is one.
    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr>;
}

/// A [`FrameMemory`] that has no memory behind it: fills do nothing and every frame reads
/// back as whatever was asked for. For callers that neither zero nor poison (benchmarks of
/// the bookkeeping alone, tests of huge layouts); zeroing through it zeroes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullMemory;

impl FrameMemory for NullMemory {
    fn fill(&mut self, _first: Pfn, _frames: u64, _byte: u8) {}

    fn find_not(&self, _first: Pfn, _frames: u64, _byte: u8) -> Option<PhysAddr> {
        None
    }
}
