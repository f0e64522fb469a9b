//! Zones and their free lists. A zone keeps one doubly linked list per order, threaded through
//! the head `Page` of each free block by mem_map index, so pushing, popping and unlinking a
//! block are O(1) and coalescing never searches a list.
//!
//! Two zones, as Linux has on arm64: DMA32 (below 4 GiB) and Normal (above). A block never
//! crosses 4 GiB (the largest is 1 GiB and blocks are aligned to their size), so the zone of
//! a block is the zone of its first frame, and a request for memory below 4 GiB is served
//! from DMA32's lists in O(1).

use super::{ORDERS, STATE_FREE};
use crate::addr::PAGE_SHIFT;
use crate::mem_map::Page;
use core::fmt;

/// A range of physical memory with its own free lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Zone {
    /// Below 4 GiB: what 32-bit devices can address.
    Dma32 = 0,
    /// From 4 GiB up.
    Normal = 1,
}

/// Number of zones.
pub const ZONES: usize = 2;

/// First frame of the Normal zone (4 GiB).
pub(super) const NORMAL_START_PFN: u64 = 1 << (32 - PAGE_SHIFT);

impl Zone {
    /// Every zone, in address order (the order /proc/buddyinfo prints them).
    pub const ALL: [Zone; ZONES] = [Zone::Dma32, Zone::Normal];

    /// The name /proc/buddyinfo prints.
    pub const fn as_str(self) -> &'static str {
        match self {
            Zone::Dma32 => "DMA32",
            Zone::Normal => "Normal",
        }
    }

    /// The zone a frame belongs to.
    pub const fn of_pfn(pfn: u64) -> Zone {
        if pfn < NORMAL_START_PFN {
            Zone::Dma32
        } else {
            Zone::Normal
        }
    }

    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One zone's free lists and totals.
#[derive(Clone, Debug)]
pub(super) struct FreeArea {
    /// First free block of each order ([`Page::NONE`] = empty list).
    pub heads: [u32; ORDERS],
    /// Blocks on each list.
    pub counts: [u64; ORDERS],
    /// Bit `k` set when list `k` is non-empty: the smallest usable order is one
    /// `trailing_zeros` away, without walking empty lists.
    pub nonempty: u32,
    /// Frames on all lists.
    pub free_frames: u64,
    /// Frames the zone manages, free or not.
    pub managed: u64,
    /// Lowest managed frame (`u64::MAX` while the zone is empty).
    pub first_pfn: u64,
    /// One past the highest managed frame (0 while the zone is empty).
    pub end_pfn: u64,
}

impl FreeArea {
    pub const EMPTY: FreeArea = FreeArea {
        heads: [Page::NONE; ORDERS],
        counts: [0; ORDERS],
        nonempty: 0,
        free_frames: 0,
        managed: 0,
        first_pfn: u64::MAX,
        end_pfn: 0,
    };

    /// Makes `index` the head of a free block of `order` and puts it first on its list
    /// (last freed, first reused: its cache lines are the likeliest to be warm).
    #[inline]
    pub fn push(&mut self, pages: &[Page], order: u8, index: u32) {
        let o = usize::from(order);
        let old_head = self.heads[o];
        let page = &pages[index as usize];
        page.set_state(STATE_FREE);
        page.set_order(order);
        page.set_next(old_head);
        page.set_prev(Page::NONE);
        if old_head != Page::NONE {
            pages[old_head as usize].set_prev(index);
        }
        self.heads[o] = index;
        self.counts[o] += 1;
        self.nonempty |= 1 << o;
        self.free_frames += 1 << o;
    }

    /// Takes the free block headed by `index` off list `order`. The caller gives the head
    /// its next state.
    #[inline]
    pub fn unlink(&mut self, pages: &[Page], order: u8, index: u32) {
        let o = usize::from(order);
        let page = &pages[index as usize];
        let (next, prev) = (page.next(), page.prev());
        if prev == Page::NONE {
            self.heads[o] = next;
        } else {
            pages[prev as usize].set_next(next);
        }
        if next != Page::NONE {
            pages[next as usize].set_prev(prev);
        }
        self.counts[o] -= 1;
        if self.heads[o] == Page::NONE {
            self.nonempty &= !(1 << o);
        }
        self.free_frames -= 1 << o;
    }

    /// Takes the first block off list `order`.
    #[inline]
    pub fn pop(&mut self, pages: &[Page], order: u8) -> Option<u32> {
        let head = self.heads[usize::from(order)];
        if head == Page::NONE {
            return None;
        }
        self.unlink(pages, order, head);
        Some(head)
    }

    /// The smallest order at least `order` with a free block.
    #[inline]
    pub fn smallest_free_order(&self, order: u8) -> Option<u8> {
        let above = self.nonempty >> order;
        (above != 0).then(|| order + above.trailing_zeros() as u8)
    }
}
