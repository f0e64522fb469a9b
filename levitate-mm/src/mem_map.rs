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
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Per-frame metadata: the buddy's block record ([`crate::buddy`]) and the per-CPU caches'
/// state byte ([`crate::pcp`]), 16 bytes in all. Only the first frame of a block (its head)
/// carries the block's state; every other frame of a block is a tail, so allocating or
/// freeing a 1 GiB block writes one entry, not 262144.
///
/// Every field is an atomic so that the caches may change their state byte (compare-and-swap,
/// from any CPU, under no buddy lock) in an entry whose other fields the buddy writes under
/// its lock: the buddy's fields are read and written with relaxed loads and stores (plain
/// moves on aarch64 and x86; the buddy's lock orders them), the state byte with
/// acquire/release (`pcp::FrameStates`). Byte-wide atomics never disturb their neighbours,
/// so the buddy's stores and a cache's compare-and-swap on the same entry do not race.
/// Keeping the state byte here, not in an array of its own, saves a byte per frame and puts
/// the state of one cache's refill batch (32 consecutive frames, 512 bytes) on lines no
/// other CPU's batch shares.
#[repr(C)]
pub struct Page {
    /// Free head: next block on the same free list, as a mem_map index ([`Page::NONE`] =
    /// end). Meaningless in other states.
    next: AtomicU32,
    /// Free head: previous block on the same free list ([`Page::NONE`] = first).
    prev: AtomicU32,
    /// Head: order of the block this frame starts.
    order: AtomicU8,
    /// 0: tail (inside a block, or not yet set up), 1: head of a free block, 2: head of an
    /// allocated block.
    state: AtomicU8,
    /// Allocated head: the `buddy::Owner` (page tables, heap, stacks, ...) as its `u8`.
    owner: AtomicU8,
    /// Bit 0: this frame has started an allocated block since boot. Kept when the frame
    /// becomes a tail, so the buddy tells a double free from a free of an address never
    /// handed out even after coalescing. Other bits are free.
    flags: AtomicU8,
    /// The per-CPU caches' state byte (`pcp::FrameState`): buddy, parked, handed out.
    cache_state: AtomicU8,
    /// Handed out by a per-CPU cache: whom to (the `buddy::Owner` as its `u8`). Apart from
    /// the state byte so a free's compare-and-swap expects one constant (`pcp::state`).
    cache_owner: AtomicU8,
    /// Spare bytes (reference count or allocation site, later).
    _spare: [u8; 2],
}

impl Page {
    /// "No frame" in a link.
    pub const NONE: u32 = u32::MAX;

    /// A page nobody has touched yet.
    pub const fn new() -> Page {
        Page {
            next: AtomicU32::new(Page::NONE),
            prev: AtomicU32::new(Page::NONE),
            order: AtomicU8::new(0),
            state: AtomicU8::new(0),
            owner: AtomicU8::new(0),
            flags: AtomicU8::new(0),
            cache_state: AtomicU8::new(0),
            cache_owner: AtomicU8::new(0),
            _spare: [0; 2],
        }
    }

    /// Back to [`Page::new`]'s contents.
    pub fn reset(&self) {
        self.set_next(Page::NONE);
        self.set_prev(Page::NONE);
        self.set_order(0);
        self.set_state(0);
        self.set_owner(0);
        self.set_flags(0);
        self.cache_state.store(0, Ordering::Relaxed);
        self.cache_owner.store(0, Ordering::Relaxed);
    }

    /// Next block on the free list.
    #[inline]
    pub fn next(&self) -> u32 {
        self.next.load(Ordering::Relaxed)
    }
    /// Previous block on the free list.
    #[inline]
    pub fn prev(&self) -> u32 {
        self.prev.load(Ordering::Relaxed)
    }
    /// The head's order.
    #[inline]
    pub fn order(&self) -> u8 {
        self.order.load(Ordering::Relaxed)
    }
    /// Tail (0), free head (1), allocated head (2).
    #[inline]
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }
    /// The allocated head's owner.
    #[inline]
    pub fn owner(&self) -> u8 {
        self.owner.load(Ordering::Relaxed)
    }
    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }
    /// Sets `next`.
    #[inline]
    pub fn set_next(&self, v: u32) {
        self.next.store(v, Ordering::Relaxed)
    }
    /// Sets `prev`.
    #[inline]
    pub fn set_prev(&self, v: u32) {
        self.prev.store(v, Ordering::Relaxed)
    }
    /// Sets `order`.
    #[inline]
    pub fn set_order(&self, v: u8) {
        self.order.store(v, Ordering::Relaxed)
    }
    /// Sets `state`.
    #[inline]
    pub fn set_state(&self, v: u8) {
        self.state.store(v, Ordering::Relaxed)
    }
    /// Sets `owner`.
    #[inline]
    pub fn set_owner(&self, v: u8) {
        self.owner.store(v, Ordering::Relaxed)
    }
    /// Sets `flags`.
    #[inline]
    pub fn set_flags(&self, v: u8) {
        self.flags.store(v, Ordering::Relaxed)
    }
    /// The per-CPU caches' state byte.
    #[inline]
    pub fn cache_state(&self) -> &AtomicU8 {
        &self.cache_state
    }
    /// The per-CPU caches' owner byte of a frame they handed out.
    #[inline]
    pub fn cache_owner(&self) -> &AtomicU8 {
        &self.cache_owner
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::new()
    }
}

/// A snapshot (tests build arrays with `vec![Page::new(); n]`).
impl Clone for Page {
    fn clone(&self) -> Self {
        let p = Page::new();
        p.set_next(self.next());
        p.set_prev(self.prev());
        p.set_order(self.order());
        p.set_state(self.state());
        p.set_owner(self.owner());
        p.set_flags(self.flags());
        p.cache_state
            .store(self.cache_state.load(Ordering::Relaxed), Ordering::Relaxed);
        p.cache_owner
            .store(self.cache_owner.load(Ordering::Relaxed), Ordering::Relaxed);
        p
    }
}

/// Compares snapshots of the fields (tests check that a refused free changed nothing).
impl PartialEq for Page {
    fn eq(&self, other: &Self) -> bool {
        self.next() == other.next()
            && self.prev() == other.prev()
            && self.order() == other.order()
            && self.state() == other.state()
            && self.owner() == other.owner()
            && self.flags() == other.flags()
            && self.cache_state.load(Ordering::Relaxed) == other.cache_state.load(Ordering::Relaxed)
            && self.cache_owner.load(Ordering::Relaxed) == other.cache_owner.load(Ordering::Relaxed)
    }
}

impl Eq for Page {}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("next", &self.next())
            .field("prev", &self.prev())
            .field("order", &self.order())
            .field("state", &self.state())
            .field("owner", &self.owner())
            .field("flags", &self.flags())
            .field("cache_state", &self.cache_state.load(Ordering::Relaxed))
            .field("cache_owner", &self.cache_owner.load(Ordering::Relaxed))
            .finish()
    }
}

/// Bytes of metadata per frame.
pub const PAGE_STRUCT_SIZE: u64 = core::mem::size_of::<Page>() as u64;
const _: () = assert!(
    core::mem::size_of::<Page>() <= 16,
    "struct Page must stay within 16 bytes"
);
const _: () = assert!(
    core::mem::align_of::<Page>() <= 16,
    "struct Page must not need more than the 16-byte alignment of its array"
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

impl Section {
    /// Whether frame number `pfn` lies in the section.
    #[inline]
    pub fn contains(&self, pfn: u64) -> bool {
        pfn.wrapping_sub(self.start) < self.frames
    }

    /// The array index of frame number `pfn`, which the section holds ([`Self::contains`]).
    #[inline]
    pub fn index_of(&self, pfn: u64) -> u64 {
        self.first_index + (pfn - self.start)
    }
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
        let (_, s) = self.section_of(pfn)?;
        Some(s.index_of(pfn.as_u64()))
    }

    /// The section holding frame `pfn`, with its position in [`Self::sections`] (a binary
    /// search), if the frame is usable. For callers that remember a section to skip the
    /// search next time.
    #[inline]
    pub fn section_of(&self, pfn: Pfn) -> Option<(usize, &Section)> {
        let pfn = pfn.as_u64();
        let i = self
            .sections()
            .partition_point(|s| s.start <= pfn)
            .checked_sub(1)?;
        let s = self.sections().get(i)?;
        s.contains(pfn).then_some((i, s))
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
