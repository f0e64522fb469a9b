//! The buddy frame allocator: blocks of 2^order frames (order 0 to [`MAX_ORDER`], 4 KiB to
//! 1 GiB) over the mem_map, split on allocation and coalesced on free. Everything else that
//! hands out physical memory (page tables, per-CPU caches, the bitmap layer, the heap) is
//! built on it, so it allocates nothing itself and keeps all its state in the `Page` array
//! and in this struct.
//!
//! # Design
//!
//! * **Free lists through the mem_map.** Each zone has one doubly linked list per order,
//!   linked by mem_map index through the `next`/`prev` of each free block's head `Page`
//!   ([`Page::NONE`] ends a list), so a block leaves its list in O(1) and coalescing never
//!   searches. A bit mask of non-empty lists finds the smallest usable order in one
//!   instruction.
//! * **Only head frames carry state.** A `Page` is a free head (`state` FREE, `order`, links),
//!   an allocated head (ALLOCATED, `order`, `owner`) or a tail (anything inside a block but its
//!   first frame). Allocating and freeing write one or two `Page`s per order split or merged,
//!   never the 262144 tails of an order-18 block; a merge turns the absorbed head into a tail.
//! * **Sections.** The mem_map covers usable frames only, in sections (runs of consecutive
//!   usable frames). A block never leaves its section: the frames are added per section as
//!   maximal aligned blocks, and a buddy outside the section is never merged. So a free finds
//!   the section once (O(log sections)) and then does buddy arithmetic on frame numbers and
//!   mem_map indices alike; an allocation looks up its frame number once.
//! * **Zones.** DMA32 (below 4 GiB) and Normal (above); see [`Zone`]. A plain request takes
//!   from Normal and falls back to DMA32; `below: 4 GiB` (or any limit at or above the top of
//!   a zone) is O(1) in the zones it covers; a limit inside a zone walks that zone's lists for
//!   a block that starts low enough (O(free blocks)), Normal before DMA32.
//! * **Misuse is refused, never obeyed.** A free is checked before anything changes: order,
//!   RAM, reserved, alignment, then the `Page` at the address. Only the head of an allocated
//!   block of the same order is freed. Otherwise the frame's block is found by walking up the
//!   orders (the first head at or below the frame whose block covers it; at most 19 steps, on
//!   the error path only), so a double free is caught even after the block merged with its
//!   buddies. A flag on the head of every block ever allocated (kept when the head becomes a
//!   tail) tells a double free from a free of an address never handed out. Each refusal is a
//!   [`FreeError`] and counts in [`Stats::misuse`]; the lists and pages are unchanged.
//! * **Fast paths.** `alloc` and `free` are inlined into the caller's lock closure, and only
//!   their common case is: a request without a limit served by a free block of exactly its
//!   order (pop, mark), and a free of an allocated head in the largest section whose buddy is
//!   in use (check, push); with poisoning off. Splits, merges, limits, poisoning, the other
//!   sections and every refusal run out of line and answer in a word or two, so the caller's
//!   `Result` is built in registers: a multi-word error copied between frames as a block of
//!   bytes stalls store forwarding on every call. The checks themselves are the same on
//!   both paths.
//! * **Poisoning** (a runtime switch): freed blocks are filled with [`POISON`], and an
//!   allocation checks its frames first. A mismatch fails the allocation with
//!   [`AllocError::UseAfterFree`] naming the first bad byte, after filling the block with the
//!   poison again and putting it back, so the allocator is exactly as before the call and a
//!   retry succeeds. The allocator reaches memory only through [`FrameMemory`].
//!
//! `Page` fields: `next`/`prev` link free heads; `order` is a head's order; `state` is
//! tail (0), free (1) or allocated (2); `owner` is an allocated head's [`Owner`]; bit 0 of
//! `flags` is set on a frame once it has started an allocated block. `aux` is unused.

mod allocate;
mod error;
mod memory;
mod owner;
mod release;
mod stats;
mod validate;
mod zone;

#[cfg(test)]
mod tests;

pub use allocate::{Block, Request};
pub use error::{AllocError, BuddyError, FreeError, Holder, Misuse};
pub use memory::{FrameMemory, NullMemory, POISON};
pub use owner::Owner;
pub use stats::{BuddyInfo, MisuseCounts, Stats, ZoneStats};
pub use validate::Violation;
pub use zone::{Zone, ZONES};

use crate::addr::{Pfn, PhysAddr};
use crate::mem_map::{Layout, Page, Section};
use crate::memmap::MAX_MEMORY;
use crate::region::{Region, RegionSet};
use zone::FreeArea;

/// The largest order: a block of 2^18 frames is 1 GiB.
pub const MAX_ORDER: u8 = 18;
/// Number of orders.
pub const ORDERS: usize = MAX_ORDER as usize + 1;
/// The order the fragmentation figure is taken at (2 MiB, a block-mapped page).
pub const FRAGMENTATION_ORDER: u8 = 9;

/// [`Buddy::usage_report`] reports once the free frames moved by 1/2^this of the managed ones
/// (1/1024: 0.1 %, finer than the pressure watermarks' 2-point hysteresis).
const USAGE_REPORT_SHIFT: u32 = 10;

/// `Page::state` of a frame that does not start a block.
const STATE_TAIL: u8 = 0;
/// `Page::state` of the head of a free block.
const STATE_FREE: u8 = 1;
/// `Page::state` of the head of an allocated block.
const STATE_ALLOCATED: u8 = 2;
/// `Page::flags` bit: this frame has started an allocated block since boot.
const FLAG_EVER_ALLOCATED: u8 = 1 << 0;

/// The buddy allocator over one mem_map.
pub struct Buddy<'m> {
    /// One entry per usable frame, exactly `layout.frames()` long.
    pages: &'m [Page],
    layout: &'m Layout,
    /// The largest section: most frames lie in it, so [`Self::locate`] and [`Self::pfn_of`]
    /// try it first (two compares) before searching the sections.
    main: &'m Section,
    /// Free frames at the last [`Self::usage_report`] (`u64::MAX` before the first).
    reported_free: u64,
    /// How far the free frames must move before [`Self::usage_report`] reports again.
    report_step: u64,
    /// RAM, to tell a reserved frame from an address that is not memory at all.
    ram: RegionSet<MAX_MEMORY>,
    zones: [FreeArea; ZONES],
    poisoning: bool,
    /// Frames allocated, per owner.
    allocated: [u64; Owner::COUNT],
    misuse: MisuseCounts,
    /// The reason for the last refused free, left by the out-of-line path for [`Self::free`]
    /// to return (so that path answers in a register).
    free_refused: FreeError,
    alloc_failures: u64,
    use_after_free: u64,
}

impl core::fmt::Debug for Buddy<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Buddy")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<'m> Buddy<'m> {
    /// Builds the allocator with every frame of `layout` free, added as maximal aligned blocks,
    /// each section separately. `pages` is the mem_map (its contents are overwritten; it may be
    /// longer than the layout) and `ram` the RAM ranges (`MemoryMap::memory`), used only to
    /// classify refused frees.
    pub fn new(pages: &'m [Page], layout: &'m Layout, ram: &[Region]) -> Result<Self, BuddyError> {
        let frames = layout.frames();
        if frames == 0 {
            return Err(BuddyError::NoFrames);
        }
        let got = pages.len() as u64;
        if got < frames {
            return Err(BuddyError::MemMapTooSmall {
                needed: frames,
                got,
            });
        }
        let mut ram_set = RegionSet::new();
        for r in ram {
            ram_set
                .insert(*r)
                .map_err(|e| BuddyError::TooManyRamRanges {
                    capacity: e.capacity,
                })?;
        }
        for s in layout.sections() {
            let section = section_region(s);
            if !ram_set
                .iter()
                .any(|r| r.base <= section.base && section.end() <= r.end())
            {
                return Err(BuddyError::SectionOutsideRam {
                    base: section.base,
                    size: section.size,
                });
            }
        }
        let pages = &pages[..frames as usize];
        for page in pages {
            page.reset();
        }
        let main = layout
            .sections()
            .iter()
            .max_by_key(|s| s.frames)
            .ok_or(BuddyError::NoFrames)?;
        let mut buddy = Buddy {
            pages,
            layout,
            main,
            reported_free: u64::MAX,
            report_step: (frames >> USAGE_REPORT_SHIFT).max(1),
            ram: ram_set,
            zones: [FreeArea::EMPTY; ZONES],
            poisoning: false,
            allocated: [0; Owner::COUNT],
            misuse: MisuseCounts::default(),
            free_refused: FreeError::BadOrder {
                addr: PhysAddr::new(0),
                order: 0,
            },
            alloc_failures: 0,
            use_after_free: 0,
        };
        for s in layout.sections() {
            buddy.add_section(s);
        }
        Ok(buddy)
    }

    /// Adds a section's frames as maximal aligned blocks: at each step the largest block that
    /// is aligned to its size and fits, capped at [`MAX_ORDER`] (a 3 GiB range is three 1 GiB
    /// blocks, never one).
    fn add_section(&mut self, s: &Section) {
        let end = s.start + s.frames;
        let mut pfn = s.start;
        while pfn < end {
            let order = max_block_order(pfn, end - pfn);
            let frames = 1u64 << order;
            let zone = &mut self.zones[Zone::of_pfn(pfn).index()];
            zone.managed += frames;
            zone.first_pfn = zone.first_pfn.min(pfn);
            zone.end_pfn = zone.end_pfn.max(pfn + frames);
            let index = (s.first_index + (pfn - s.start)) as u32;
            zone.push(self.pages, order, index);
            pfn += frames;
        }
    }

    /// Turns poisoning on or off. Turning it on fills every free frame with [`POISON`] (this
    /// touches all free memory once); from then on every free poisons and every allocation
    /// checks.
    pub fn set_poisoning<M: FrameMemory + ?Sized>(&mut self, on: bool, mem: &mut M) {
        if on && !self.poisoning {
            for block in self.free_blocks() {
                mem.fill(block.addr.pfn(), 1 << block.order, POISON);
            }
        }
        self.poisoning = on;
    }

    /// Whether poisoning is on.
    pub fn poisoning(&self) -> bool {
        self.poisoning
    }

    /// Checks every free frame for the poison (the shell's `memcheck`): the first byte written
    /// while free, with its block. `None` also when poisoning is off.
    pub fn find_use_after_free<M: FrameMemory + ?Sized>(&self, mem: &M) -> Option<AllocError> {
        if !self.poisoning {
            return None;
        }
        self.free_blocks().find_map(|b| {
            mem.find_not(b.addr.pfn(), 1 << b.order, POISON)
                .map(|addr| AllocError::UseAfterFree {
                    addr,
                    block: b.addr,
                    order: b.order,
                })
        })
    }

    /// The owner, order and first frame of the allocated block that holds `addr`; `None` when
    /// the frame is free or not managed. For diagnostics: O(log sections + orders).
    pub fn owner_of(&self, addr: PhysAddr) -> Option<(Owner, u8, PhysAddr)> {
        let (section, index) = self.locate(addr.pfn())?;
        match self.holder_of(section, addr.pfn(), index) {
            Holder::Allocated {
                block,
                order,
                owner,
            } => Some((owner, order, block)),
            Holder::Free { .. } | Holder::Lost => None,
        }
    }

    /// Every free block, zone by zone, order by order, in list order. Walking it costs
    /// O(free blocks x log sections).
    pub fn free_blocks(&self) -> FreeBlocks<'_, 'm> {
        FreeBlocks {
            buddy: self,
            zone: 0,
            order: 0,
            next: self.zones[0].heads[0],
            left: self.layout.frames(),
        }
    }

    /// The section holding `pfn` and the frame's mem_map index: the main section in O(1),
    /// any other in O(log sections).
    #[inline]
    fn locate(&self, pfn: Pfn) -> Option<(&'m Section, u32)> {
        let main = self.main;
        let offset = pfn.as_u64().wrapping_sub(main.start);
        if offset < main.frames {
            return Some((main, (main.first_index + offset) as u32));
        }
        self.locate_elsewhere(pfn.as_u64())
    }

    /// [`Self::locate`] outside the main section (out of line: one-section machines never
    /// come here, and the search would only bloat the inlined fast paths).
    #[inline(never)]
    fn locate_elsewhere(&self, pfn: u64) -> Option<(&'m Section, u32)> {
        let layout: &'m Layout = self.layout;
        let (_, s) = layout.section_of(Pfn::new(pfn))?;
        Some((s, s.index_of(pfn) as u32))
    }

    /// The frame a mem_map index describes (the index is one of ours: always in range).
    #[inline]
    fn pfn_of(&self, index: u32) -> u64 {
        let index = u64::from(index);
        let main = self.main;
        let offset = index.wrapping_sub(main.first_index);
        if offset < main.frames {
            return main.start + offset;
        }
        self.pfn_of_elsewhere(index)
    }

    /// [`Self::pfn_of`] outside the main section, out of line as [`Self::locate_elsewhere`].
    #[inline(never)]
    fn pfn_of_elsewhere(&self, index: u64) -> u64 {
        let sections = self.layout.sections();
        let i = sections
            .partition_point(|s| s.first_index <= index)
            .saturating_sub(1);
        let s = &sections[i];
        s.start + (index - s.first_index)
    }

    /// The block that holds frame `pfn` (mem_map `index`, in `section`): walking up the orders,
    /// the first head at or below the frame whose block covers it. Only tails lie between a
    /// block's head and a frame inside it, so the first covering head is the block's.
    fn holder_of(&self, section: &Section, pfn: Pfn, index: u32) -> Holder {
        let pfn = pfn.as_u64();
        for order in 0..=MAX_ORDER {
            let head = pfn & !((1u64 << order) - 1);
            if head < section.start {
                break;
            }
            let page = &self.pages[(index - (pfn - head) as u32) as usize];
            let (state, order) = (page.state(), page.order());
            let covers = order <= MAX_ORDER && head + (1u64 << order) > pfn;
            if state == STATE_TAIL || !covers {
                continue;
            }
            let block = Pfn::new(head).addr();
            return match state {
                STATE_FREE => Holder::Free { block, order },
                STATE_ALLOCATED => Holder::Allocated {
                    block,
                    order,
                    owner: Owner::from_u8(page.owner()).unwrap_or(Owner::Other),
                },
                _ => Holder::Lost,
            };
        }
        Holder::Lost
    }
}

/// Iterator over the free blocks; see [`Buddy::free_blocks`].
pub struct FreeBlocks<'b, 'm> {
    buddy: &'b Buddy<'m>,
    zone: usize,
    order: u8,
    next: u32,
    /// Blocks still allowed: a corrupt (cyclic) list cannot make the walk endless.
    left: u64,
}

/// A free block, as [`Buddy::free_blocks`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FreeBlock {
    /// Its zone.
    pub zone: Zone,
    /// Its first byte.
    pub addr: PhysAddr,
    /// Its order.
    pub order: u8,
}

impl Iterator for FreeBlocks<'_, '_> {
    type Item = FreeBlock;

    fn next(&mut self) -> Option<FreeBlock> {
        while self.next == Page::NONE {
            if self.order < MAX_ORDER {
                self.order += 1;
            } else if self.zone + 1 < ZONES {
                self.zone += 1;
                self.order = 0;
            } else {
                return None;
            }
            self.next = self.buddy.zones[self.zone].heads[usize::from(self.order)];
        }
        let index = self.next;
        let page = self.buddy.pages.get(index as usize)?;
        self.left = self.left.checked_sub(1)?;
        self.next = page.next();
        Some(FreeBlock {
            zone: Zone::ALL[self.zone],
            addr: Pfn::new(self.buddy.pfn_of(index)).addr(),
            order: self.order,
        })
    }
}

/// The largest order of a block that starts at `pfn` (aligned to its size) and fits in
/// `room` frames (at least 1).
fn max_block_order(pfn: u64, room: u64) -> u8 {
    let aligned = pfn.trailing_zeros().min(u32::from(MAX_ORDER));
    let fits = 63 - room.leading_zeros();
    aligned.min(fits) as u8
}

/// A section as a byte range.
fn section_region(s: &Section) -> Region {
    Region::new(
        Pfn::new(s.start).addr(),
        s.frames << crate::addr::PAGE_SHIFT,
    )
}
