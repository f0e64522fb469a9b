//! The mem_map: one [`Page`] (16 bytes) per usable 4 KiB frame, in one array placed by the
//! early allocator in the first usable hole large enough, and itself reserved.
//!
//! It covers usable frames only: holes between RAM ranges and reserved ranges cost nothing. A
//! small sorted section table maps frame numbers to array indices and back in O(log sections)
//! (on the Pixel 6 layout, 8 GiB of RAM, the array is at most 32 MiB, not one spanning the 36 GiB
//! between the two RAM banks).

use crate::addr::{Pfn, PAGE_SIZE};
use crate::early::{self, EarlyAllocError};
use crate::memmap::{MemoryMap, Source};
use crate::region::Region;
use core::fmt;

/// Per-frame metadata, owned by the buddy allocator ([`crate::buddy`]). Only the first frame
/// of a block (its head) carries the block's state; every other frame of a block is a tail,
/// so allocating or freeing a 1 GiB block writes one entry, not 262144.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Page {
    /// Free head: next block on the same free list, as a mem_map index ([`Page::NONE`] =
    /// end). Meaningless in other states.
    pub next: u32,
    /// Free head: previous block on the same free list ([`Page::NONE`] = first).
    pub prev: u32,
    /// Head: order of the block this frame starts.
    pub order: u8,
    /// 0: tail (inside a block, or not yet set up), 1: head of a free block, 2: head of an
    /// allocated block.
    pub state: u8,
    /// Allocated head: the `buddy::Owner` (page tables, heap, stacks, ...) as its `u8`.
    pub owner: u8,
    /// Bit 0: this frame has started an allocated block since boot. Kept when the frame
    /// becomes a tail, so the buddy tells a double free from a free of an address never
    /// handed out even after coalescing. Other bits are free.
    pub flags: u8,
    /// Spare word, unused by the buddy (reference count or allocation site, later).
    pub aux: u32,
}

impl Page {
    /// "No frame" in a link.
    pub const NONE: u32 = u32::MAX;
    /// A page nobody has touched yet.
    pub const EMPTY: Page = Page {
        next: Page::NONE,
        prev: Page::NONE,
        order: 0,
        state: 0,
        owner: 0,
        flags: 0,
        aux: 0,
    };
}

/// Bytes of metadata per frame.
pub const PAGE_STRUCT_SIZE: u64 = core::mem::size_of::<Page>() as u64;
const _: () = assert!(
    core::mem::size_of::<Page>() <= 16,
    "struct Page must stay within 16 bytes"
);

/// Most separate usable ranges the section table holds.
pub const MAX_SECTIONS: usize = 256;

/// A run of consecutive usable frames and where its entries start in the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Section {
    /// First frame.
    pub start: u64,
    /// Number of frames.
    pub frames: u64,
    /// Index of the first frame's `Page`.
    pub first_index: u64,
}

/// Why the mem_map could not be laid out or placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// More usable ranges than the section table holds.
    TooManySections(usize),
    /// More frames than a 32-bit index can name (16 TiB).
    TooManyFrames(u64),
    /// No usable memory at all.
    NoUsableMemory,
    /// No usable hole is large enough.
    Alloc(EarlyAllocError),
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManySections(n) => {
                write!(f, "mem_map: more than {n} separate usable ranges")
            }
            Self::TooManyFrames(n) => write!(f, "mem_map: {n} frames exceed 32-bit indices"),
            Self::NoUsableMemory => write!(f, "mem_map: no usable memory to describe"),
            Self::Alloc(e) => write!(f, "mem_map: cannot place it: {e}"),
        }
    }
}

/// Where each usable frame's `Page` lives in the array.
#[derive(Clone)]
pub struct Layout {
    sections: [Section; MAX_SECTIONS],
    len: usize,
    frames: u64,
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("frames", &self.frames)
            .field("sections", &self.sections())
            .finish()
    }
}

impl Layout {
    /// Lays out the usable ranges (sorted, disjoint, page aligned) in address order.
    pub fn new(usable: &[Region]) -> Result<Self, MemMapError> {
        let mut layout = Layout {
            sections: [Section::default(); MAX_SECTIONS],
            len: 0,
            frames: 0,
        };
        for r in usable.iter().filter(|r| r.pages() > 0) {
            if layout.len == MAX_SECTIONS {
                return Err(MemMapError::TooManySections(MAX_SECTIONS));
            }
            layout.sections[layout.len] = Section {
                start: r.base.as_u64() / PAGE_SIZE,
                frames: r.pages(),
                first_index: layout.frames,
            };
            layout.len += 1;
            layout.frames += r.pages();
        }
        if layout.frames >= u64::from(Page::NONE) {
            return Err(MemMapError::TooManyFrames(layout.frames));
        }
        Ok(layout)
    }

    /// The sections, in address (and index) order.
    #[inline]
    pub fn sections(&self) -> &[Section] {
        &self.sections[..self.len]
    }

    /// Number of frames described.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Size of the array in bytes.
    pub fn bytes(&self) -> u64 {
        self.frames * PAGE_STRUCT_SIZE
    }

    /// The array index of a frame, if it is a usable frame.
    #[inline]
    pub fn index_of(&self, pfn: Pfn) -> Option<u64> {
        let pfn = pfn.as_u64();
        let i = self.sections().partition_point(|s| s.start <= pfn);
        let s = self.sections[..self.len].get(i.checked_sub(1)?)?;
        (pfn - s.start < s.frames).then(|| s.first_index + (pfn - s.start))
    }

    /// The frame an array index describes.
    #[inline]
    pub fn pfn_of(&self, index: u64) -> Option<Pfn> {
        if index >= self.frames {
            return None;
        }
        let i = self.sections().partition_point(|s| s.first_index <= index);
        let s = &self.sections[i - 1];
        Some(Pfn::new(s.start + (index - s.first_index)))
    }
}

/// The placed mem_map.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Physical memory holding the array (reserved as `mem_map`).
    pub region: Region,
    /// The index layout over the usable frames that remain.
    pub layout: Layout,
}

/// Places the mem_map in the first usable hole large enough, reserves it, and lays out the
/// frames that remain usable. The array is sized for the frames usable before it was placed,
/// so it is at most a few entries larger than needed, never smaller.
pub fn place(map: &mut MemoryMap<'_>) -> Result<Placement, MemMapError> {
    let before = Layout::new(map.usable())?;
    if before.frames() == 0 {
        return Err(MemMapError::NoUsableMemory);
    }
    let bytes = before.bytes().next_multiple_of(PAGE_SIZE);
    let region = early::alloc(map, bytes, PAGE_SIZE, u64::MAX, "mem_map", Source::MemMap)
        .map_err(MemMapError::Alloc)?;
    let layout = Layout::new(map.usable())?;
    debug_assert!(layout.bytes() <= region.size);
    Ok(Placement { region, layout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PhysAddr;
    use proptest::prelude::*;

    #[test]
    fn page_is_16_bytes() {
        assert_eq!(PAGE_STRUCT_SIZE, 16);
    }

    #[test]
    fn index_round_trip_across_holes() {
        let usable = [
            Region::from_bounds(0x4000_0000, 0x4020_0000),
            Region::from_bounds(0x4040_0000, 0x8000_0000),
            Region::from_bounds(0x8_8000_0000, 0x8_8000_4000),
        ];
        let l = Layout::new(&usable).unwrap();
        assert_eq!(l.frames(), 512 + (0x8000_0000 - 0x4040_0000) / 4096 + 4);
        assert_eq!(l.index_of(PhysAddr::new(0x4000_0000).pfn()), Some(0));
        assert_eq!(l.index_of(PhysAddr::new(0x4020_0000).pfn()), None, "hole");
        assert_eq!(l.index_of(PhysAddr::new(0x4040_0000).pfn()), Some(512));
        assert_eq!(
            l.index_of(PhysAddr::new(0x3fff_f000).pfn()),
            None,
            "below RAM"
        );
        assert_eq!(
            l.index_of(PhysAddr::new(0x8_8000_4000).pfn()),
            None,
            "past the end"
        );
        assert_eq!(l.pfn_of(l.frames()), None);
        assert_eq!(
            l.pfn_of(l.frames() - 1),
            Some(PhysAddr::new(0x8_8000_3000).pfn())
        );
    }

    proptest! {
        #[test]
        fn pfn_and_index_are_inverse(gaps in prop::collection::vec((1u64..50, 1u64..50), 1..20)) {
            let mut usable = std::vec::Vec::new();
            let mut at = 0x1000u64;
            for (gap, len) in gaps {
                at += gap * PAGE_SIZE;
                usable.push(Region::new(PhysAddr::new(at), len * PAGE_SIZE));
                at += len * PAGE_SIZE;
            }
            let l = Layout::new(&usable).unwrap();
            for i in 0..l.frames() {
                let pfn = l.pfn_of(i).unwrap();
                prop_assert_eq!(l.index_of(pfn), Some(i));
                prop_assert!(usable.iter().any(|r| r.contains(pfn.addr().as_u64())));
            }
            for r in &usable {
                prop_assert_eq!(l.index_of(Pfn::new(r.base.as_u64() / PAGE_SIZE - 1)), None);
            }
        }
    }
}
