//! Allocation: take the smallest free block that is large enough, split it down to the order
//! asked for (the upper halves go back on their lists), mark the head allocated.

use super::zone::Zone;
use super::{
    AllocError, Buddy, FrameMemory, Misuse, Owner, FLAG_EVER_ALLOCATED, MAX_ORDER, POISON,
    STATE_ALLOCATED,
};
use crate::addr::{Pfn, PhysAddr, PAGE_SIZE};

/// What to allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The block holds 2^order frames.
    pub order: u8,
    /// Recorded in the block's head and counted in the statistics.
    pub owner: Owner,
    /// Fill the block with zeroes before returning it.
    pub zero: bool,
    /// Every byte of the block must lie below this address (for devices that address fewer
    /// bits than the CPU).
    pub below: Option<PhysAddr>,
}

impl Request {
    /// A block of 2^`order` frames for `owner`, anywhere, contents unspecified.
    pub const fn new(order: u8, owner: Owner) -> Self {
        Self {
            order,
            owner,
            zero: false,
            below: None,
        }
    }

    /// The same request, zeroed.
    pub const fn zeroed(self) -> Self {
        Self { zero: true, ..self }
    }

    /// The same request, entirely below `limit`.
    pub const fn below(self, limit: PhysAddr) -> Self {
        Self {
            below: Some(limit),
            ..self
        }
    }
}

/// An allocated block: 2^order frames from `addr`, aligned to their size. Not `Clone`: one
/// block, one owner, one free.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a block that is dropped is never freed"]
pub struct Block {
    /// Its first byte.
    pub addr: PhysAddr,
    /// Its order.
    pub order: u8,
}

impl Block {
    /// Its first frame.
    pub const fn pfn(&self) -> Pfn {
        self.addr.pfn()
    }

    /// Number of frames.
    pub const fn frames(&self) -> u64 {
        1 << self.order
    }

    /// Size in bytes.
    pub const fn bytes(&self) -> u64 {
        PAGE_SIZE << self.order
    }
}

impl Buddy<'_> {
    /// Allocates a block. `mem` is touched only to zero the block or, with poisoning on, to
    /// check it. On `Err` the allocator is as it was (only the statistics count the failure).
    // Inlined into the caller's lock closure: the result then stays in registers instead of
    // being stored and reloaded through each layer (measured: a few ns per call in `mixed`).
    #[inline(always)]
    pub fn alloc<M: FrameMemory + ?Sized>(
        &mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        let order = req.order;
        if order > MAX_ORDER {
            self.misuse.record(Misuse::BadOrder);
            return Err(AllocError::BadOrder { order });
        }
        let Some((zone, found, index)) = self.take_free(order, req.below) else {
            self.alloc_failures += 1;
            let stats = self.stats();
            return Err(AllocError::OutOfMemory {
                order,
                below: req.below,
                free_frames: stats.free_frames,
                largest_free_order: stats.largest_free_order(),
            });
        };
        let pfn = self.pfn_of(index);
        // Split down: each step puts the upper half back and keeps the lower one.
        let area = &mut self.zones[zone.index()];
        for half in (order..found).rev() {
            area.push(self.pages, half, index + (1u32 << half));
        }
        let frames = 1u64 << order;
        if self.poisoning {
            if let Some(addr) = mem.find_not(Pfn::new(pfn), frames, POISON) {
                // Restore the poison and merge the halves back: the allocator ends exactly as
                // it began, and the report names the first byte written while free.
                mem.fill(Pfn::new(pfn), frames, POISON);
                if let Some((section, _)) = self.locate(Pfn::new(pfn)) {
                    self.release(section, pfn, index, order);
                }
                self.use_after_free += 1;
                return Err(AllocError::UseAfterFree {
                    addr,
                    block: Pfn::new(pfn).addr(),
                    order,
                });
            }
        }
        let head = &self.pages[index as usize];
        head.set_state(STATE_ALLOCATED);
        head.set_order(order);
        head.set_owner(req.owner as u8);
        head.set_flags(head.flags() | FLAG_EVER_ALLOCATED);
        self.allocated[req.owner.index()] += frames;
        if req.zero {
            mem.fill(Pfn::new(pfn), frames, 0);
        }
        Ok(Block {
            addr: Pfn::new(pfn).addr(),
            order,
        })
    }

    /// Takes a free block of at least `order` (entirely below `below`, if given) off its
    /// list: its zone, order and mem_map index. Normal comes first so DMA32 stays for the
    /// devices that need it.
    #[inline]
    fn take_free(&mut self, order: u8, below: Option<PhysAddr>) -> Option<(Zone, u8, u32)> {
        if below.is_none() {
            // No limit: the smallest usable order of Normal, then of DMA32, O(1) each (an
            // empty zone has no list bits set).
            for zone in [Zone::Normal, Zone::Dma32] {
                let area = &mut self.zones[zone.index()];
                if let Some(found) = area.smallest_free_order(order) {
                    if let Some(index) = area.pop(self.pages, found) {
                        return Some((zone, found, index));
                    }
                }
            }
            return None;
        }
        self.take_free_limited(order, below)
    }

    /// [`Self::take_free`] with an address limit.
    fn take_free_limited(&mut self, order: u8, below: Option<PhysAddr>) -> Option<(Zone, u8, u32)> {
        for zone in [Zone::Normal, Zone::Dma32] {
            let area = &self.zones[zone.index()];
            if area.managed == 0 {
                continue;
            }
            let limit = below.map_or(u64::MAX, PhysAddr::as_u64);
            let taken = if limit >= Pfn::new(area.end_pfn).addr().as_u64() {
                // Every block of the zone ends below the limit: O(1).
                let area = &mut self.zones[zone.index()];
                area.smallest_free_order(order).and_then(|found| {
                    area.pop(self.pages, found)
                        .map(|index| (zone, found, index))
                })
            } else if limit > Pfn::new(area.first_pfn).addr().as_u64() {
                self.take_free_below(zone, order, limit)
            } else {
                None
            };
            if taken.is_some() {
                return taken;
            }
        }
        None
    }

    /// The slow path for a limit inside `zone`: the first block, smallest order first, whose
    /// lowest 2^`order` frames end at or below `limit` (the split keeps the lowest part). Walks
    /// the zone's lists: O(free blocks of order >= `order`).
    fn take_free_below(&mut self, zone: Zone, order: u8, limit: u64) -> Option<(Zone, u8, u32)> {
        let size = PAGE_SIZE << order;
        let area = &self.zones[zone.index()];
        for found in order..=MAX_ORDER {
            let mut index = area.heads[usize::from(found)];
            let mut left = area.counts[usize::from(found)];
            while index != crate::mem_map::Page::NONE && left > 0 {
                let start = Pfn::new(self.pfn_of(index)).addr().as_u64();
                if start.saturating_add(size) <= limit {
                    self.zones[zone.index()].unlink(self.pages, found, index);
                    return Some((zone, found, index));
                }
                index = self.pages[index as usize].next();
                left -= 1;
            }
        }
        None
    }
}
