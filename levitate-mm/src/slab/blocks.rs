//! The large-object heap's block records: one per live block in its segments, in one
//! address-sorted table kept outside the blocks, so that a free there is checked against what
//! was handed out (a live block's start, its size, its alignment) before linked_list_allocator
//! sees it (that crate trusts its caller: a double free panics in its overlap assertion, or,
//! when the block's hole was reused, corrupts its hole list silently). Pure bookkeeping over
//! a slice of records the shell (`levitate-heap`) maps page by page in its record area.
//!
//! * **Sorted table**: a free binary-searches the record of the greatest start at or below its
//!   address, so it tells a live block's start from an address inside a live block and from
//!   one where no block lives (freed already, or never handed out). Insertion and removal
//!   shift the records after it (one `copy_within`); the blocks here are the rare ones (over
//!   256 KiB, aligned past a page, fallbacks near the limit), and linked_list_allocator's own
//!   walk on the same path is linear in its holes anyway.
//! * **Bounded by the live blocks**: the table grows a page ([`RECORDS_PER_PAGE`] records) at
//!   a time when an allocation finds it full ([`BlockTable::grow_page`]), and a free that
//!   leaves more than a spare page beyond the need gives its last pages back
//!   ([`BlockTable::surplus_page`]). At most `max_pages` pages: past that a segment
//!   allocation fails cleanly instead of going unrecorded.

use super::PAGE;
use core::fmt;

/// Records in one page of the table.
pub const RECORDS_PER_PAGE: usize = PAGE / core::mem::size_of::<BlockRecord>();
/// Bits of a record's packed word that hold log2 of the alignment.
const ALIGN_BITS: u32 = 6;
/// Sizes a record can hold (far beyond any window).
pub const MAX_RECORDED_SIZE: usize = (u64::MAX >> ALIGN_BITS) as usize;

/// One live segment block: its first byte, its size and its alignment as allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockRecord {
    start: u64,
    /// `size << ALIGN_BITS | log2(align)`.
    packed: u64,
}

impl BlockRecord {
    /// The block's first byte.
    #[inline]
    pub fn start(&self) -> usize {
        self.start as usize
    }

    /// Its size as allocated.
    #[inline]
    pub fn size(&self) -> usize {
        (self.packed >> ALIGN_BITS) as usize
    }

    /// Its alignment as allocated.
    #[inline]
    pub fn align(&self) -> usize {
        1 << (self.packed & ((1 << ALIGN_BITS) - 1))
    }

    /// One past its last byte (a zero-sized block still covers its start).
    #[inline]
    fn end(&self) -> usize {
        self.start().saturating_add(self.size().max(1))
    }
}

/// A segment free refused, and why. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockMisuse {
    /// Inside the live block that starts at `block`, not at its start.
    Inside { addr: usize, block: usize },
    /// No live block starts or lies there: freed already (a double free) or never handed out.
    NotLive { addr: usize },
    /// A live block's start, but it was allocated with another size or alignment.
    WrongLayout {
        addr: usize,
        size: usize,
        align: usize,
        block_size: usize,
        block_align: usize,
    },
}

impl fmt::Display for BlockMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Inside { addr, block } => write!(
                f,
                "{addr:#x} is inside the large block at {block:#x}, not at its start"
            ),
            Self::NotLive { addr } => write!(
                f,
                "no live large block at {addr:#x} (a double free, or never allocated)"
            ),
            Self::WrongLayout {
                addr,
                size,
                align,
                block_size,
                block_align,
            } => write!(
                f,
                "free of {addr:#x} with size {size} align {align}, but it was allocated with \
                 size {block_size} align {block_align}"
            ),
        }
    }
}

/// Why a record could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// No free record slot (the caller maps a page first, [`BlockTable::grow_page`]).
    Full,
    /// The block overlaps a live one (the allocator under the table is broken) or its size
    /// cannot be recorded.
    Overlap,
}

/// The table reached its most pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull {
    /// Records live.
    pub records: usize,
}

/// The table's bookkeeping; its records live in the slice the shell passes in (the first
/// `pages() * RECORDS_PER_PAGE` records of its area, all mapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTable {
    len: usize,
    pages: usize,
    max_pages: usize,
}

impl BlockTable {
    /// No room for any record (`const`, for a static).
    pub const fn empty() -> Self {
        Self {
            len: 0,
            pages: 0,
            max_pages: 0,
        }
    }

    /// A table that may grow to `max_pages` pages (nothing mapped yet).
    pub const fn new(max_pages: usize) -> Self {
        Self {
            len: 0,
            pages: 0,
            max_pages,
        }
    }

    /// Records live (blocks in segments).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No live record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pages mapped for the table.
    #[inline]
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Records the mapped pages hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.pages * RECORDS_PER_PAGE
    }

    /// Whether one more record fits without a new page.
    #[inline]
    pub fn has_room(&self) -> bool {
        self.len < self.capacity()
    }

    /// The index of the page to map so one more record fits, or why there is none.
    pub fn grow_page(&self) -> Result<usize, TableFull> {
        if self.pages < self.max_pages {
            Ok(self.pages)
        } else {
            Err(TableFull { records: self.len })
        }
    }

    /// The shell mapped page [`Self::grow_page`].
    pub fn page_mapped(&mut self) {
        debug_assert!(self.pages < self.max_pages);
        self.pages += 1;
    }

    /// The index of the last page when it is not needed: the table keeps its records, room
    /// for one more (so the next allocation maps nothing) and `spare` pages beyond.
    pub fn surplus_page(&self, spare: usize) -> Option<usize> {
        let keep = (self.len + 1).div_ceil(RECORDS_PER_PAGE) + spare;
        (self.pages > keep).then(|| self.pages - 1)
    }

    /// The shell unmapped page [`Self::surplus_page`].
    pub fn page_unmapped(&mut self) {
        debug_assert!(self.pages > 0 && self.len <= (self.pages - 1) * RECORDS_PER_PAGE);
        self.pages -= 1;
    }

    /// The live records, by address.
    pub fn live<'r>(&self, recs: &'r [BlockRecord]) -> &'r [BlockRecord] {
        &recs[..self.len.min(recs.len())]
    }

    /// Records a block handed out at `start` (`size` bytes aligned to `align`).
    pub fn insert(
        &mut self,
        recs: &mut [BlockRecord],
        start: usize,
        size: usize,
        align: usize,
    ) -> Result<(), InsertError> {
        if !self.has_room() || recs.len() <= self.len {
            return Err(InsertError::Full);
        }
        if size > MAX_RECORDED_SIZE || !align.is_power_of_two() {
            return Err(InsertError::Overlap);
        }
        let rec = BlockRecord {
            start: start as u64,
            packed: (size as u64) << ALIGN_BITS | u64::from(align.trailing_zeros()),
        };
        let live = &recs[..self.len];
        let i = live.partition_point(|r| r.start() < start);
        if (i > 0 && live[i - 1].end() > start) || (i < live.len() && rec.end() > live[i].start()) {
            return Err(InsertError::Overlap);
        }
        recs.copy_within(i..self.len, i + 1);
        recs[i] = rec;
        self.len += 1;
        Ok(())
    }

    /// The index of the live block a free of `addr` with this layout may give back, or why
    /// the free is refused.
    #[inline]
    pub fn find(
        &self,
        recs: &[BlockRecord],
        addr: usize,
        size: usize,
        align: usize,
    ) -> Result<usize, BlockMisuse> {
        let live = self.live(recs);
        let i = live.partition_point(|r| r.start() <= addr);
        let Some(r) = i.checked_sub(1).map(|j| live[j]) else {
            return Err(BlockMisuse::NotLive { addr });
        };
        if r.start() != addr {
            return Err(if addr < r.end() {
                BlockMisuse::Inside {
                    addr,
                    block: r.start(),
                }
            } else {
                BlockMisuse::NotLive { addr }
            });
        }
        if r.size() != size || r.align() != align {
            return Err(BlockMisuse::WrongLayout {
                addr,
                size,
                align,
                block_size: r.size(),
                block_align: r.align(),
            });
        }
        Ok(i - 1)
    }

    /// Drops record `i` (from [`Self::find`]; the block is being freed).
    pub fn remove(&mut self, recs: &mut [BlockRecord], i: usize) -> Option<BlockRecord> {
        if i >= self.len || recs.len() < self.len {
            return None;
        }
        let r = recs[i];
        recs.copy_within(i + 1..self.len, i);
        self.len -= 1;
        Some(r)
    }

    /// The live records that start in `[lo, hi)`.
    pub fn within<'r>(&self, recs: &'r [BlockRecord], lo: usize, hi: usize) -> &'r [BlockRecord] {
        let live = self.live(recs);
        let a = live.partition_point(|r| r.start() < lo);
        let b = live.partition_point(|r| r.start() < hi);
        &live[a..b.max(a)]
    }

    /// Checks the invariants: within its pages, sorted, disjoint, each start aligned as its
    /// record says.
    pub fn validate(&self, recs: &[BlockRecord]) -> Result<(), &'static str> {
        if self.pages > self.max_pages || self.len > self.capacity() || recs.len() < self.len {
            return Err("the block table holds more than its pages");
        }
        let live = &recs[..self.len];
        if live.windows(2).any(|w| w[0].end() > w[1].start()) {
            return Err("block records out of order or overlapping");
        }
        if live.iter().any(|r| !r.start().is_multiple_of(r.align())) {
            return Err("a block record's start is not aligned as recorded");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn table(pages: usize) -> (BlockTable, Vec<BlockRecord>) {
        (
            BlockTable::new(pages),
            vec![BlockRecord::default(); pages * RECORDS_PER_PAGE],
        )
    }

    fn grow(t: &mut BlockTable) {
        t.grow_page().unwrap();
        t.page_mapped();
    }

    #[test]
    fn a_free_must_match_a_live_start_and_layout() {
        let (mut t, mut r) = table(1);
        assert_eq!(t.insert(&mut r, 0x1000, 64, 8), Err(InsertError::Full));
        grow(&mut t);
        t.insert(&mut r, 0x4000, 0x2000, 0x2000).unwrap();
        t.insert(&mut r, 0x1000, 64, 8).unwrap();
        t.insert(&mut r, 0x9000, 0, 0x1000).unwrap();
        t.validate(&r).unwrap();
        assert_eq!(t.find(&r, 0x4000, 0x2000, 0x2000), Ok(1));
        assert_eq!(
            t.find(&r, 0x4008, 0x2000, 0x2000),
            Err(BlockMisuse::Inside {
                addr: 0x4008,
                block: 0x4000
            })
        );
        assert_eq!(
            t.find(&r, 0x6000, 16, 8),
            Err(BlockMisuse::NotLive { addr: 0x6000 })
        );
        assert_eq!(
            t.find(&r, 0x800, 16, 8),
            Err(BlockMisuse::NotLive { addr: 0x800 })
        );
        assert!(matches!(
            t.find(&r, 0x4000, 0x2001, 0x2000),
            Err(BlockMisuse::WrongLayout {
                block_size: 0x2000,
                ..
            })
        ));
        assert!(matches!(
            t.find(&r, 0x4000, 0x2000, 0x1000),
            Err(BlockMisuse::WrongLayout {
                block_align: 0x2000,
                ..
            })
        ));
        assert_eq!(t.find(&r, 0x9000, 0, 0x1000), Ok(2));
        // Overlapping blocks are a broken allocator, not recorded.
        assert_eq!(t.insert(&mut r, 0x1020, 8, 8), Err(InsertError::Overlap));
        assert_eq!(t.insert(&mut r, 0x3ff8, 16, 8), Err(InsertError::Overlap));
        let i = t.find(&r, 0x4000, 0x2000, 0x2000).unwrap();
        assert_eq!(t.remove(&mut r, i).unwrap().start(), 0x4000);
        assert_eq!(
            t.find(&r, 0x4000, 0x2000, 0x2000),
            Err(BlockMisuse::NotLive { addr: 0x4000 })
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.within(&r, 0x1000, 0x9000).len(), 1);
        assert_eq!(t.within(&r, 0, usize::MAX).len(), 2);
        t.validate(&r).unwrap();
    }

    #[test]
    fn pages_follow_the_live_records() {
        let (mut t, mut r) = table(3);
        assert_eq!(t.surplus_page(0), None);
        for i in 0..RECORDS_PER_PAGE + 1 {
            if !t.has_room() {
                grow(&mut t);
            }
            t.insert(&mut r, 0x10_0000 + i * 64, 32, 16).unwrap();
        }
        assert_eq!(t.pages(), 2);
        grow(&mut t);
        assert_eq!(t.grow_page(), Err(TableFull { records: 257 }));
        // 257 records and room for one more need two pages: the third is a spare.
        assert_eq!(t.surplus_page(1), None);
        assert_eq!(t.surplus_page(0), Some(2));
        t.page_unmapped();
        while t.len() > 1 {
            let start = t.live(&r)[0].start();
            let i = t.find(&r, start, 32, 16).unwrap();
            t.remove(&mut r, i);
        }
        assert_eq!(t.surplus_page(0), Some(1));
        t.page_unmapped();
        assert_eq!(t.surplus_page(0), None);
        t.validate(&r).unwrap();
    }
}
