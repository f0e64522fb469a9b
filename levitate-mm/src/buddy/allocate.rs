//! Allocation: take the smallest free block that is large enough, split it down to the order
//! asked for (the upper halves go back on their lists), mark the head allocated.

use super::zone::Zone;
use super::{
    AllocError, Buddy, FrameMemory, Misuse, Owner, FLAG_EVER_ALLOCATED, MAX_ORDER, POISON,
    STATE_ALLOCATED,
};
use crate::addr::{Pfn, PhysAddr, PAGE_SIZE};
use crate::mem_map::Page;

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

/// Why `alloc_slow` failed: what [`AllocError`] needs beyond the request. With the address it
/// makes a 16-byte answer written and read as two whole words.
#[derive(Clone, Copy)]
enum Failure {
    BadOrder,
    OutOfMemory,
    /// The first byte written while free.
    UseAfterFree(PhysAddr),
}

impl Buddy<'_> {
    /// Allocates a block. `mem` is touched only to zero the block or, with poisoning on, to
    /// check it. On `Err` the allocator is as it was (only the statistics count the failure).
    // The common case is inlined into the caller's lock closure and kept small: no address
    // limit, poisoning off, and a free block of exactly this order where the request is served
    // (no split; ~97 % of the allocations in the bench's `mixed`). Anything else is
    // `alloc_slow`, out of line, which answers with an address or what went wrong (two
    // words): the `Result` is built here, field by field, so it stays in registers until it
    // is stored where the caller reads it. An error copied in as one block of bytes is moved
    // on through the caller's frames in overlapping pieces, which stalls store forwarding
    // (until every store before it has reached the cache) on every call, failed or not.
    #[inline(always)]
    pub fn alloc<M: FrameMemory + ?Sized>(
        &mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        let order = req.order;
        if req.below.is_none() && !self.poisoning && order <= MAX_ORDER {
            if let Some((zone, index)) = self.exact_fit(order) {
                self.zones[zone.index()].unlink(self.pages, order, index);
                let addr = self.hand_out(index, order, req, mem);
                return Ok(Block { addr, order });
            }
        }
        match self.alloc_slow(req, mem) {
            Ok(addr) => Ok(Block { addr, order }),
            Err(Failure::BadOrder) => Err(AllocError::BadOrder { order }),
            Err(Failure::OutOfMemory) => Err(AllocError::OutOfMemory {
                order,
                below: req.below,
                free_frames: self.free_frames(),
                largest_free_order: self.largest_free_order(),
            }),
            // The block is aligned to its size and holds the byte.
            Err(Failure::UseAfterFree(addr)) => Err(AllocError::UseAfterFree {
                addr,
                block: PhysAddr::new(addr.as_u64() & !((PAGE_SIZE << order) - 1)),
                order,
            }),
        }
    }

    /// The block [`Self::take_free`] would take for `order` without a limit (the smallest
    /// usable order of Normal, else of DMA32), with its zone and mem_map index, when that
    /// block has exactly this order: it needs no split.
    #[inline(always)]
    fn exact_fit(&self, order: u8) -> Option<(Zone, u32)> {
        for zone in [Zone::Normal, Zone::Dma32] {
            let area = &self.zones[zone.index()];
            let above = area.nonempty >> order;
            if above != 0 {
                let index = area.heads[usize::from(order)];
                return (above & 1 != 0 && index != Page::NONE).then_some((zone, index));
            }
        }
        None
    }

    /// Marks the block of `order` at mem_map `index` (off its list already) allocated to the
    /// request's owner, zeroes it if asked, and returns its address.
    #[inline(always)]
    fn hand_out<M: FrameMemory + ?Sized>(
        &mut self,
        index: u32,
        order: u8,
        req: Request,
        mem: &mut M,
    ) -> PhysAddr {
        mark_allocated(&self.pages[index as usize], order, req.owner);
        let frames = 1u64 << order;
        self.allocated[req.owner.index()] += frames;
        let pfn = Pfn::new(self.pfn_of(index));
        if req.zero {
            mem.fill(pfn, frames, 0);
        }
        pfn.addr()
    }

    /// Splits the free block of `found` at mem_map `index` (off its list already) down to
    /// `order`: each step puts the upper half back on its list and keeps the lower one.
    #[inline]
    fn split(&mut self, zone: Zone, index: u32, found: u8, order: u8) {
        let area = &mut self.zones[zone.index()];
        for half in (order..found).rev() {
            area.push(self.pages, half, index + (1u32 << half));
        }
    }

    /// Up to `n` single frames for `owner` in one call, each handed out as its own order-0
    /// block (so each is freed on its own later): a per-CPU cache's refill. The smallest free
    /// blocks go first, as for `n` order-0 allocations, but a block is taken off its list
    /// once for all its frames (and a larger one split once, down to the largest power of
    /// two still missing) instead of once per frame. `each` gets every frame's address, in
    /// address order within a block. Returns how many it took: fewer than `n` when the buddy
    /// ran out, and none with poisoning on (every frame must then be checked on its way out,
    /// which [`Self::alloc`] does), so the caller asks [`Self::alloc`] for the rest, which also
    /// says why it could not.
    pub fn alloc_singles(
        &mut self,
        n: usize,
        owner: Owner,
        mut each: impl FnMut(PhysAddr),
    ) -> usize {
        if self.poisoning {
            return 0;
        }
        let mut taken = 0;
        while taken < n {
            let Some((zone, found, index)) = self.take_free(0, None) else {
                break;
            };
            // Keep the lowest 2^order frames, order = floor(log2(frames still missing)).
            let missing = n - taken;
            let order = found.min((usize::BITS - 1 - missing.leading_zeros()) as u8);
            self.split(zone, index, found, order);
            // A block lies in one section: its frames' indices are consecutive.
            let first = self.pfn_of(index);
            for i in 0..1u32 << order {
                mark_allocated(&self.pages[(index + i) as usize], 0, owner);
                each(Pfn::new(first + u64::from(i)).addr());
            }
            self.allocated[owner.index()] += 1 << order;
            taken += 1 << order;
        }
        taken
    }

    /// Everything [`Self::alloc`] does not do inline: bad orders, address limits, splits,
    /// poisoning checks, failures (counted here).
    #[inline(never)]
    fn alloc_slow<M: FrameMemory + ?Sized>(
        &mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<PhysAddr, Failure> {
        let order = req.order;
        if order > MAX_ORDER {
            return Err(self.bad_order());
        }
        let Some((zone, found, index)) = self.take_free(order, req.below) else {
            return Err(self.out_of_memory());
        };
        self.split(zone, index, found, order);
        if self.poisoning {
            let pfn = Pfn::new(self.pfn_of(index));
            if let Some(addr) = mem.find_not(pfn, 1 << order, POISON) {
                return Err(self.use_after_free(pfn, index, order, addr, mem));
            }
        }
        Ok(self.hand_out(index, order, req, mem))
    }

    #[cold]
    #[inline(never)]
    fn bad_order(&mut self) -> Failure {
        self.misuse.record(Misuse::BadOrder);
        Failure::BadOrder
    }

    #[cold]
    #[inline(never)]
    fn out_of_memory(&mut self) -> Failure {
        self.alloc_failures += 1;
        Failure::OutOfMemory
    }

    /// The order of the largest free block in any zone (as `stats().largest_free_order()`).
    #[cold]
    #[inline(never)]
    fn largest_free_order(&self) -> Option<u8> {
        self.stats().largest_free_order()
    }

    /// Poisoning found `addr` written in the block of `order` at `pfn` (mem_map `index`, off
    /// its list, split already). Restores the poison and merges the halves back: the allocator
    /// ends exactly as it began, and the report names the first byte written while free.
    #[cold]
    #[inline(never)]
    fn use_after_free<M: FrameMemory + ?Sized>(
        &mut self,
        pfn: Pfn,
        index: u32,
        order: u8,
        addr: PhysAddr,
        mem: &mut M,
    ) -> Failure {
        mem.fill(pfn, 1 << order, POISON);
        if let Some((section, _)) = self.locate(pfn) {
            self.release(section, pfn.as_u64(), index, order);
        }
        self.use_after_free += 1;
        Failure::UseAfterFree(addr)
    }

    /// Takes a free block of at least `order` (entirely below `below`, if given) off its
    /// list: its zone, order and mem_map index. Normal comes first so DMA32 stays for the
    /// devices that need it.
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
            while index != Page::NONE && left > 0 {
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

/// Marks `head` the head of an allocated block of `order` for `owner`, remembering that it
/// has started one (a later free of it after it merged away is then a double free).
#[inline(always)]
fn mark_allocated(head: &Page, order: u8, owner: Owner) {
    head.set_state(STATE_ALLOCATED);
    head.set_order(order);
    head.set_owner(owner as u8);
    head.set_flags(head.flags() | FLAG_EVER_ALLOCATED);
}
