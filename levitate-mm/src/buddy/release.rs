//! Freeing: check everything first (a refused free changes nothing), then merge the block
//! with its free buddy for as long as there is one, O(1) per order.

use super::allocate::Block;
use super::zone::Zone;
use super::{
    Buddy, FrameMemory, FreeError, Owner, FLAG_EVER_ALLOCATED, MAX_ORDER, POISON, STATE_ALLOCATED,
    STATE_FREE, STATE_TAIL,
};
use crate::addr::PhysAddr;
use crate::mem_map::Section;

impl<'m> Buddy<'m> {
    /// Frees the block of 2^`order` frames at `addr` and returns its owner. A free that is
    /// not exactly the start and order of an allocated block is refused with the reason (and
    /// counted in [`super::Stats::misuse`]); the allocator is then unchanged.
    // Inlined into the caller's lock closure: the result then stays in registers instead of
    // being stored and reloaded through each layer (measured: a few ns per call in `mixed`).
    #[inline(always)]
    pub fn free<M: FrameMemory + ?Sized>(
        &mut self,
        addr: PhysAddr,
        order: u8,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        // The common case in a few compares: a managed, page-aligned address heading an
        // allocated block of this order. Anything else takes `check_free`, which names it.
        let fast = match self.locate(addr.pfn()) {
            Some((section, index))
                if order <= MAX_ORDER && addr.page_offset() == 0 && {
                    let page = &self.pages[index as usize];
                    page.state() == STATE_ALLOCATED && page.order() == order
                } =>
            {
                Some((section, index))
            }
            _ => None,
        };
        let (section, index) = match fast {
            Some(found) => found,
            None => match self.check_free(addr, order) {
                Ok(found) => found,
                Err(e) => {
                    self.misuse.record(e.kind());
                    return Err(e);
                }
            },
        };
        let owner = Owner::from_u8(self.pages[index as usize].owner()).unwrap_or(Owner::Other);
        let frames = 1u64 << order;
        let held = &mut self.allocated[owner.index()];
        *held = held.saturating_sub(frames);
        if self.poisoning {
            mem.fill(addr.pfn(), frames, POISON);
        }
        self.release(section, addr.pfn().as_u64(), index, order);
        Ok(owner)
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

    /// Everything a free must pass, in the order that names the bug best: the address must be
    /// managed, then it must head an allocated block of that order. Otherwise the frame's
    /// current block says whether it is a double free or was never allocated.
    #[cold]
    #[inline(never)]
    fn check_free(&self, addr: PhysAddr, order: u8) -> Result<(&'m Section, u32), FreeError> {
        if order > MAX_ORDER {
            return Err(FreeError::BadOrder { addr, order });
        }
        let Some((section, index)) = self.locate(addr.pfn()) else {
            return Err(if self.ram.contains(addr.as_u64()) {
                FreeError::Reserved { addr, order }
            } else {
                FreeError::OutsideRam { addr, order }
            });
        };
        if addr.page_offset() != 0 {
            return Err(FreeError::Misaligned { addr, order });
        }
        let page = &self.pages[index as usize];
        if page.state() == STATE_ALLOCATED {
            if page.order() == order {
                return Ok((section, index));
            }
            return Err(FreeError::WrongOrder {
                addr,
                order,
                actual: page.order(),
                owner: Owner::from_u8(page.owner()).unwrap_or(Owner::Other),
            });
        }
        let now = self.holder_of(section, addr.pfn(), index);
        if page.flags() & FLAG_EVER_ALLOCATED != 0 {
            Err(FreeError::DoubleFree { addr, order, now })
        } else if !addr.pfn().as_u64().is_multiple_of(1 << order) {
            Err(FreeError::Misaligned { addr, order })
        } else {
            Err(FreeError::NeverAllocated { addr, order, now })
        }
    }

    /// Puts the block of `order` at frame `pfn` (mem_map `index`, in `section`) back, merged
    /// with its buddies. A buddy outside the section is never merged: blocks stay inside their
    /// section, which is what keeps index arithmetic valid. Nothing merges past
    /// [`MAX_ORDER`], so two free 1 GiB buddies stay two blocks.
    #[inline]
    pub(super) fn release(&mut self, section: &Section, pfn: u64, index: u32, order: u8) {
        let area = &mut self.zones[Zone::of_pfn(pfn).index()];
        let end = section.start + section.frames;
        let (mut pfn, mut index, mut order) = (pfn, index, order);
        while order < MAX_ORDER {
            let buddy = pfn ^ (1 << order);
            if buddy < section.start || buddy >= end {
                break;
            }
            let buddy_index = (section.first_index + (buddy - section.start)) as u32;
            let page = &self.pages[buddy_index as usize];
            if page.state() != STATE_FREE || page.order() != order {
                break;
            }
            area.unlink(self.pages, order, buddy_index);
            // The upper of the two heads is inside the merged block now.
            let upper = index.max(buddy_index);
            self.pages[upper as usize].set_state(STATE_TAIL);
            if buddy < pfn {
                pfn = buddy;
                index = buddy_index;
            }
            order += 1;
        }
        area.push(self.pages, order, index);
    }
}
