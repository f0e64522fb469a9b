//! Freeing: check everything first (a refused free changes nothing), then merge the block
//! with its free buddy for as long as there is one, O(1) per order.

use super::allocate::Block;
use super::zone::Zone;
use super::{
    Buddy, FrameMemory, FreeError, Owner, FLAG_EVER_ALLOCATED, MAX_ORDER, POISON, STATE_ALLOCATED,
    STATE_FREE, STATE_TAIL,
};
use crate::addr::PhysAddr;
use crate::mem_map::{Page, Section};

impl<'m> Buddy<'m> {
    /// Frees the block of 2^`order` frames at `addr` and returns its owner. A free that is
    /// not exactly the start and order of an allocated block is refused with the reason (and
    /// counted in [`super::Stats::misuse`]); the allocator is then unchanged.
    // The common case is inlined into the caller's lock closure and kept small: a page-aligned
    // address in the main section heading an allocated block of this order, poisoning off.
    // Anything else (other sections, poisoning, every refusal) is `free_slow`, out of line,
    // which returns the owner in a register and leaves a refusal in `self.free_refused`; it
    // is copied out field by field (`FreeError::by_fields`), so the `Result` is built in
    // registers and stored once, where the caller reads it (see `Buddy::alloc`).
    #[inline(always)]
    pub fn free<M: FrameMemory + ?Sized>(
        &mut self,
        addr: PhysAddr,
        order: u8,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        let pfn = addr.pfn().as_u64();
        let main = self.main;
        let offset = pfn.wrapping_sub(main.start);
        if offset < main.frames && addr.page_offset() == 0 && order <= MAX_ORDER && !self.poisoning
        {
            let index = (main.first_index + offset) as u32;
            if self.heads_allocated(index, order) {
                let owner = self.take_owner(index, order);
                self.release(main, pfn, index, order);
                return Ok(owner);
            }
        }
        match self.free_slow(addr, order, mem) {
            Some(owner) => Ok(owner),
            None => Err(self.free_refused.by_fields()),
        }
    }

    /// Whether mem_map `index` heads an allocated block of `order`: the one check that makes
    /// a managed, aligned address a valid free.
    #[inline(always)]
    fn heads_allocated(&self, index: u32, order: u8) -> bool {
        let page = &self.pages[index as usize];
        page.state() == STATE_ALLOCATED && page.order() == order
    }

    /// The owner of the allocated head at `index`, whose frames its count gives back.
    #[inline(always)]
    fn take_owner(&mut self, index: u32, order: u8) -> Owner {
        let owner = Owner::from_u8(self.pages[index as usize].owner()).unwrap_or(Owner::Other);
        let held = &mut self.allocated[owner.index()];
        *held = held.saturating_sub(1 << order);
        owner
    }

    /// Everything [`Self::free`] does not do inline: a free in another section than the main
    /// one (found in O(log sections)), a free with poisoning on, and every refusal. `None`
    /// when refused, with the reason in `self.free_refused`.
    #[inline(never)]
    fn free_slow<M: FrameMemory + ?Sized>(
        &mut self,
        addr: PhysAddr,
        order: u8,
        mem: &mut M,
    ) -> Option<Owner> {
        let valid = match self.locate(addr.pfn()) {
            Some((section, index))
                if order <= MAX_ORDER
                    && addr.page_offset() == 0
                    && self.heads_allocated(index, order) =>
            {
                Some((section, index))
            }
            _ => None,
        };
        let Some((section, index)) = valid else {
            return self.refuse_free(addr, order);
        };
        let owner = self.take_owner(index, order);
        if self.poisoning {
            mem.fill(addr.pfn(), 1 << order, POISON);
        }
        self.release(section, addr.pfn().as_u64(), index, order);
        Some(owner)
    }

    /// Refuses a free that is not the head of an allocated block of its order: names the
    /// misuse, counts it, and changes nothing else.
    #[cold]
    #[inline(never)]
    fn refuse_free(&mut self, addr: PhysAddr, order: u8) -> Option<Owner> {
        let e = self.misuse_of(addr, order);
        self.misuse.record(e.kind());
        self.free_refused = e;
        None
    }

    /// [`Self::free`] for a [`Block`] from [`Self::alloc`], consuming it. A block freed this way
    /// has the right address and order, so only a stale copy of its address can double-free it.
    pub fn free_block<M: FrameMemory + ?Sized>(
        &mut self,
        block: Block,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        self.free(block.addr, block.order, mem)
    }

    /// What is wrong with freeing `addr` at `order`, in the order that names the bug best: the
    /// order, then whether the address is managed, its alignment, an allocated block of
    /// another order; otherwise the frame's current block says whether it is a double free or
    /// was never allocated. Called only for a free that does not head an allocated block of
    /// its order.
    fn misuse_of(&self, addr: PhysAddr, order: u8) -> FreeError {
        if order > MAX_ORDER {
            return FreeError::BadOrder { addr, order };
        }
        let Some((section, index)) = self.locate(addr.pfn()) else {
            return if self.ram.contains(addr.as_u64()) {
                FreeError::Reserved { addr, order }
            } else {
                FreeError::OutsideRam { addr, order }
            };
        };
        if addr.page_offset() != 0 {
            return FreeError::Misaligned { addr, order };
        }
        let page = &self.pages[index as usize];
        if page.state() == STATE_ALLOCATED {
            // Of another order: `free` and `free_slow` accept an allocated head of this one.
            return FreeError::WrongOrder {
                addr,
                order,
                actual: page.order(),
                owner: Owner::from_u8(page.owner()).unwrap_or(Owner::Other),
            };
        }
        let now = self.holder_of(section, addr.pfn(), index);
        if page.flags() & FLAG_EVER_ALLOCATED != 0 {
            FreeError::DoubleFree { addr, order, now }
        } else if !addr.pfn().as_u64().is_multiple_of(1 << order) {
            FreeError::Misaligned { addr, order }
        } else {
            FreeError::NeverAllocated { addr, order, now }
        }
    }

    /// Puts the block of `order` at frame `pfn` (mem_map `index`, in `section`) back, merged
    /// with its buddies. A buddy outside the section is never merged: blocks stay inside their
    /// section, which is what keeps index arithmetic valid. Nothing merges past
    /// [`MAX_ORDER`], so two free 1 GiB buddies stay two blocks. Most frees find their buddy
    /// in use (~98 % in the bench's `mixed`): that check and the push are inline, the merging
    /// loop is not.
    #[inline(always)]
    pub(super) fn release(&mut self, section: &Section, pfn: u64, index: u32, order: u8) {
        if free_buddy(self.pages, section, pfn, order).is_some() {
            self.merge(section, pfn, index, order);
        } else {
            self.zones[Zone::of_pfn(pfn).index()].push(self.pages, order, index);
        }
    }

    /// [`Self::release`] once the block has a free buddy: merge for as long as there is one.
    #[inline(never)]
    fn merge(&mut self, section: &Section, pfn: u64, index: u32, order: u8) {
        let pages = self.pages;
        let area = &mut self.zones[Zone::of_pfn(pfn).index()];
        let (mut pfn, mut index, mut order) = (pfn, index, order);
        while let Some(buddy_index) = free_buddy(pages, section, pfn, order) {
            area.unlink(pages, order, buddy_index);
            // The upper of the two heads is inside the merged block now.
            pages[index.max(buddy_index) as usize].set_state(STATE_TAIL);
            index = index.min(buddy_index);
            pfn &= !(1u64 << order);
            order += 1;
        }
        area.push(pages, order, index);
    }
}

/// The mem_map index of the buddy of the block of `order` at `pfn` (in `section`), if it is a
/// free block of the same order that may merge with it.
#[inline(always)]
fn free_buddy(pages: &[Page], section: &Section, pfn: u64, order: u8) -> Option<u32> {
    if order >= MAX_ORDER {
        return None;
    }
    let buddy = pfn ^ (1 << order);
    let offset = buddy.wrapping_sub(section.start);
    if offset >= section.frames {
        return None;
    }
    let buddy_index = (section.first_index + offset) as u32;
    let page = &pages[buddy_index as usize];
    (page.state() == STATE_FREE && page.order() == order).then_some(buddy_index)
}
