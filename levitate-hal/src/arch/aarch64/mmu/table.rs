//! A four-level table walker (4 KiB granule, 48-bit VA, ARM ARM D8) that maps ranges with
//! 1 GiB and 2 MiB blocks where alignment allows, unmaps and re-protects ranges (splitting
//! blocks they cover only in part), translates, and counts tables. It reaches table memory
//! only through `TableAccess`, so the same code runs on the boot tables, on frames from the
//! buddy, and on the host in tests.
//!
//! TLB maintenance: `map` only fills invalid entries, which no TLB or walk cache holds, so it
//! needs none (its caller publishes the stores with a DSB). `unmap` and `protect` change live
//! entries and call the `TlbFlush` they are given at the moments the architecture requires:
//!
//! - break-before-make (ARM ARM D8.16.1) when a block is split (a change of block size) or a
//!   leaf's memory type changes: write the invalid descriptor, flush, then write the new one;
//! - before a table frame goes back to `free_table`: its parent entry is cleared and flushed
//!   first, because walk caches may hold it (ARM ARM D8.13);
//! - once at the end, for every cleared leaf and every permission change, which need no break
//!   (D8.16.1 lists permissions among the changes that may be made in place).
//!
//! Publishing a new table: a table frame is zeroed and filled while nothing links it, then one
//! store links it into the live tree. Another CPU's walker (or this CPU's, speculatively) may
//! follow that link the moment it is visible, and the architecture does not order a walk
//! after this CPU's earlier plain stores: without a barrier it may read the frame's previous
//! contents (stale descriptors from its last owner) and cache them (ARM ARM DDI 0487, D8.2
//! "translation table walks" and B2.3, ordering: stores become visible to walks only once a
//! DSB completes them; Linux's arm64 `pmd_populate`/`set_pud` issue `dsb ishst` for this). So
//! every link of a new table is preceded by `TableAccess::publish` (a `dsb ishst` on the
//! hardware), or by a `TlbFlush`, which begins with one. Host tests check this order for
//! every operation.
//!
//! Errors are found before anything changes: a hole in an `unmap`/`protect` range or a mapped
//! page in a `map` range leaves the tables untouched. Only running out of tables can stop an
//! operation halfway (see each function).
//!
//! The caller's part: hold the lock that serialises changes to a tree; never split (by
//! unmapping or re-protecting part of it) a block that the CPU needs during the break, i.e.
//! one holding the running code, the stack, or the tables themselves when `TableAccess`
//! reaches them through that block (tables reached through a linear map of 1 GiB blocks are);
//! and do the cache maintenance a change of cacheability needs.

use super::descriptor::{self, Attributes, Decoded};
use super::walk;
use core::fmt;
use levitate_mm::addr::{PhysAddr, VirtAddr, PAGE_SIZE};

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Bytes mapped by one entry at each level (0..=3).
pub const LEVEL_SIZE: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];
/// One past the largest physical address a descriptor can hold (48-bit output addresses).
const PA_LIMIT: u64 = 1 << 48;

/// Where translation tables come from and how to reach them.
pub trait TableAccess {
    /// A new, zeroed table frame; `None` when none is left.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Takes back a table frame `alloc_table` handed out. The walker frees a table only once
    /// every entry in it is invalid, its parent entry is cleared, and the TLB has been
    /// flushed, so no walker (nor walk cache) can still reach it.
    fn free_table(&mut self, pa: PhysAddr);
    /// The table at physical address `pa` (a frame this access handed out, or the root).
    fn table(&mut self, pa: PhysAddr) -> &mut [u64; ENTRIES];
    /// Makes every store this CPU made to table memory so far (zeroing and filling new
    /// tables) visible to every table walker that may use the tree, before any later store:
    /// `dsb ishst` on the hardware. The walker calls it between filling a new table and the
    /// store that links it (see the module docs).
    fn publish(&mut self);
}

/// TLB maintenance for the tables `unmap` and `protect` change (ARM ARM D8.13).
///
/// Every method must, in order: make the table stores already made visible to the table
/// walker (`dsb ishst`), invalidate the cached translations named, at every level (walk-cache
/// entries too: freed tables are flushed through this; a last-level-only TLBI is not
/// enough), and wait until that is complete everywhere the tables are used (`dsb ish; isb`).
/// When a method returns, no CPU may translate through the old entries.
pub trait TlbFlush {
    /// Drops every cached translation of `va` (leaf and walk-cache entries).
    fn flush_va(&mut self, va: VirtAddr);
    /// Drops every cached translation of every address in `[va, va + size)`.
    fn flush_range(&mut self, va: VirtAddr, size: u64);
    /// Drops every cached translation.
    fn flush_all(&mut self);
}

/// The `TlbFlush` for a tree no CPU has loaded yet (no TTBR ever pointed at it, as while the
/// kernel builds its final tables): nothing can be cached, so there is nothing to flush.
/// Using it on live tables breaks break-before-make.
pub struct InactiveTables;

impl TlbFlush for InactiveTables {
    fn flush_va(&mut self, _va: VirtAddr) {}
    fn flush_range(&mut self, _va: VirtAddr, _size: u64) {}
    fn flush_all(&mut self) {}
}

/// Why a mapping or a change of attributes failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or size is not page aligned (`pa` is 0 for `protect`).
    Misaligned {
        /// The virtual address requested.
        va: VirtAddr,
        /// The physical address requested.
        pa: PhysAddr,
        /// The size requested.
        size: u64,
    },
    /// Something is already mapped at this address (`map`).
    AlreadyMapped(VirtAddr),
    /// Nothing is mapped at this address (`protect`).
    NotMapped(VirtAddr),
    /// No frame was available for a table.
    OutOfTables,
    /// A fixed virtual window (MMIO, boot) has no room left.
    WindowFull,
    /// The virtual range does not lie inside one 48-bit half (bits [63:48] all zeros or all
    /// ones from its first byte to its last).
    NotCanonical(VirtAddr),
    /// The physical range reaches past the 48-bit output address space.
    PhysOutOfRange(PhysAddr),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { va, pa, size } => {
                write!(f, "misaligned mapping {va} -> {pa} size {size:#x}")
            }
            Self::AlreadyMapped(va) => write!(f, "{va} is already mapped"),
            Self::NotMapped(va) => write!(f, "{va} is not mapped"),
            Self::OutOfTables => write!(f, "no frame left for a translation table"),
            Self::WindowFull => write!(f, "the virtual window has no room left"),
            Self::NotCanonical(va) => write!(f, "{va} is not a canonical 48-bit range"),
            Self::PhysOutOfRange(pa) => write!(f, "{pa} lies past the 48-bit physical space"),
        }
    }
}

/// Why an unmap failed. Nothing was unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// The address or size is not page aligned.
    Misaligned {
        /// The virtual address requested.
        va: VirtAddr,
        /// The size requested.
        size: u64,
    },
    /// The virtual range does not lie inside one 48-bit half.
    NotCanonical(VirtAddr),
    /// Nothing is mapped at this address inside the range: for the kernel, unmapping a hole
    /// is a bug (a double unmap, or a wrong size), so it is refused rather than skipped.
    NotMapped(VirtAddr),
    /// A block the range covers in part had to be split and no frame was left for the new
    /// table. Blocks split before that stay split (they translate exactly as before).
    OutOfTables,
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { va, size } => write!(f, "misaligned unmap {va} size {size:#x}"),
            Self::NotCanonical(va) => write!(f, "{va} is not a canonical 48-bit range"),
            Self::NotMapped(va) => write!(f, "{va} is not mapped"),
            Self::OutOfTables => write!(f, "no frame left to split a block"),
        }
    }
}

/// What an unmap did, for the caller's accounting of table frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unmapped {
    /// Leaf entries (blocks and pages) cleared.
    pub leaves: usize,
    /// Tables allocated to split blocks the range covered only in part.
    pub tables_allocated: usize,
    /// Tables that became empty and went back through `free_table`.
    pub tables_freed: usize,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address `va` maps to.
    pub pa: PhysAddr,
    /// The mapping's attributes.
    pub attrs: Attributes,
    /// The level of the leaf (1 = 1 GiB block, 2 = 2 MiB block, 3 = page).
    pub level: usize,
}

/// The index of `va`'s entry in its level `level` table.
pub(super) fn index(va: u64, level: usize) -> usize {
    ((va >> (39 - 9 * level)) & 0x1ff) as usize
}

/// With 48-bit regions (T0SZ = T1SZ = 16) bits [63:48] select the table base: all zeros for
/// TTBR0, all ones for TTBR1 (ARM ARM D8.2.4). Anything else faults.
pub(super) fn canonical(va: VirtAddr) -> bool {
    let top = va.as_u64() >> 48;
    top == 0 || top == 0xffff
}

/// A non-empty, page-aligned virtual range inside one half, as its first and last byte (an
/// inclusive end, so the range may end at the top of the address space).
#[derive(Clone, Copy)]
struct Range {
    first: u64,
    last: u64,
}

enum RangeError {
    Misaligned,
    NotCanonical,
}

impl Range {
    /// `[va, va + size)`, or `None` when `size` is 0.
    fn new(va: VirtAddr, size: u64) -> Result<Option<Self>, RangeError> {
        if !va.is_aligned(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(RangeError::Misaligned);
        }
        if !canonical(va) {
            return Err(RangeError::NotCanonical);
        }
        if size == 0 {
            return Ok(None);
        }
        let last = va
            .as_u64()
            .checked_add(size - 1)
            .ok_or(RangeError::NotCanonical)?;
        // Both ends canonical and in the same half: a range cannot jump the hole between them.
        if last >> 48 != va.as_u64() >> 48 {
            return Err(RangeError::NotCanonical);
        }
        Ok(Some(Self {
            first: va.as_u64(),
            last,
        }))
    }

    /// The address just past the range, unless the range ends at the top of its half (where
    /// no mapping can straddle the end).
    fn end(self) -> Option<u64> {
        let end = self.last.checked_add(1)?;
        canonical(VirtAddr::new(end)).then_some(end)
    }
}

/// Writes one descriptor of a table the walker may be reading. Every such store goes through
/// here: a volatile 64-bit store is one single-copy-atomic `str` (ARM ARM B2.2.1), so the
/// walker sees either the old or the new descriptor, never a mix, and the compiler neither
/// tears, merges nor drops it.
fn store(access: &mut impl TableAccess, table: PhysAddr, index: usize, value: u64) {
    let slot = &mut access.table(table)[index];
    #[cfg(test)]
    testing::record(testing::Event::Store {
        table,
        index,
        old: *slot,
        new: value,
    });
    // SAFETY: `slot` comes from a `&mut u64`, so it is valid, aligned and not aliased.
    unsafe { core::ptr::write_volatile(slot, value) };
}

/// Writes one descriptor of a table no walker can reach yet (a new table before it is linked):
/// a plain store, published later by `TableAccess::publish`.
fn fill(access: &mut impl TableAccess, table: PhysAddr, index: usize, value: u64) {
    #[cfg(test)]
    testing::record(testing::Event::Fill { table });
    access.table(table)[index] = value;
}

/// Calls `visit(i, entry_va, lo, hi)` for each entry of a level `level` table that overlaps
/// `[first, last]` (which lies inside that table's span), in address order, with the part
/// `[lo, hi]` of the range that entry covers.
fn for_each_entry(
    level: usize,
    first: u64,
    last: u64,
    mut visit: impl FnMut(usize, u64, u64, u64),
) {
    let size = LEVEL_SIZE[level];
    let mut entry_va = first & !(size - 1);
    loop {
        // `entry_va + size - 1` cannot overflow: the last entry of the top table ends at
        // u64::MAX.
        let (lo, hi) = (first.max(entry_va), last.min(entry_va + (size - 1)));
        visit(index(entry_va, level), entry_va, lo, hi);
        if hi == last {
            return;
        }
        entry_va = hi + 1;
    }
}

/// The first address in `[first, last]` under `table` (at `level`) that is mapped
/// (`mapped`) or unmapped (`!mapped`).
fn find(
    access: &mut impl TableAccess,
    table: PhysAddr,
    level: usize,
    first: u64,
    last: u64,
    mapped: bool,
) -> Option<u64> {
    let mut found = None;
    for_each_entry(level, first, last, |i, _, lo, hi| {
        if found.is_some() {
            return;
        }
        found = match descriptor::decode(access.table(table)[i], level) {
            Decoded::Invalid => (!mapped).then_some(lo),
            Decoded::Leaf(..) => mapped.then_some(lo),
            Decoded::Table(next) => find(access, next, level + 1, lo, hi, mapped),
        };
    });
    found
}

/// Maps `size` bytes at `va` to `pa` with `attrs` in the tables rooted at `root`, with the
/// largest leaves alignment allows (1 GiB, 2 MiB, 4 KiB).
///
/// Only invalid entries are written, which no TLB caches: no invalidation is needed, but the
/// caller must make the stores visible (`dsb ishst; isb`) before using the mapping.
///
/// If anything in the range is mapped already (even identically), nothing is written and the
/// first mapped address is reported. On `OutOfTables` the pieces mapped before the failure
/// stay mapped (`translate` shows which) and no empty table is left behind.
pub fn map(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: VirtAddr,
    pa: PhysAddr,
    size: u64,
    attrs: Attributes,
) -> Result<(), MapError> {
    if !pa.is_aligned(PAGE_SIZE) {
        return Err(MapError::Misaligned { va, pa, size });
    }
    let range = match Range::new(va, size) {
        Err(RangeError::Misaligned) => return Err(MapError::Misaligned { va, pa, size }),
        Err(RangeError::NotCanonical) => return Err(MapError::NotCanonical(va)),
        Ok(None) => return Ok(()),
        Ok(Some(range)) => range,
    };
    if pa.as_u64() >= PA_LIMIT || PA_LIMIT - pa.as_u64() < size {
        return Err(MapError::PhysOutOfRange(pa));
    }
    if let Some(mapped) = find(access, root, 0, range.first, range.last, true) {
        return Err(MapError::AlreadyMapped(VirtAddr::new(mapped)));
    }
    let mut done = 0;
    while done < size {
        let (v, p, left) = (va.as_u64() + done, pa.as_u64() + done, size - done);
        // The largest block that fits: 1 GiB at level 1, 2 MiB at level 2, else a page.
        let level = (1..=3)
            .find(|&l| {
                let s = LEVEL_SIZE[l];
                v % s == 0 && p % s == 0 && left >= s
            })
            .unwrap_or(3);
        map_one(access, root, v, PhysAddr::new(p), level, attrs)?;
        done += LEVEL_SIZE[level];
    }
    Ok(())
}

/// Maps one leaf at `leaf_level`, creating the tables above it.
fn map_one(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: u64,
    pa: PhysAddr,
    leaf_level: usize,
    attrs: Attributes,
) -> Result<(), MapError> {
    let mut table = root;
    let mut level = 0;
    while level < leaf_level {
        match descriptor::decode(access.table(table)[index(va, level)], level) {
            Decoded::Table(next) => (table, level) = (next, level + 1),
            Decoded::Invalid => break,
            // `map` checked the range is free; only a damaged tree gets here.
            Decoded::Leaf(..) => return Err(MapError::AlreadyMapped(VirtAddr::new(va))),
        }
    }
    // Tables for the missing levels, all allocated before any is linked, so running out
    // leaves no empty table in the tree.
    let missing = leaf_level - level;
    let mut new = [PhysAddr::new(0); 3];
    for k in 0..missing {
        match access.alloc_table() {
            Some(t) => new[k] = t,
            None => {
                for &t in &new[..k] {
                    access.free_table(t);
                }
                return Err(MapError::OutOfTables);
            }
        }
    }
    let leaf = descriptor::leaf(pa, attrs, leaf_level);
    if missing == 0 {
        if access.table(table)[index(va, leaf_level)] != descriptor::INVALID {
            // An empty table where a block should go: only a damaged tree gets here.
            return Err(MapError::AlreadyMapped(VirtAddr::new(va)));
        }
        store(access, table, index(va, leaf_level), leaf);
        return Ok(());
    }
    // The new tables are unreachable until the last store links them, so plain stores fill
    // them; `publish` makes the zeroing and the fills visible to every walker before the link
    // can be.
    fill(access, new[missing - 1], index(va, leaf_level), leaf);
    for k in 1..missing {
        fill(
            access,
            new[k - 1],
            index(va, level + k),
            descriptor::table(new[k]),
        );
    }
    access.publish();
    store(access, table, index(va, level), descriptor::table(new[0]));
    Ok(())
}

/// No frame was left to split a block.
struct OutOfTables;

/// Makes `at` a leaf boundary: splits (by break-before-make) every block that contains both
/// `at` and the page before it, level by level, and returns how many tables that took. A
/// block that `unless` would not change is left whole (protecting part of a block to what it
/// already is needs no split).
fn ensure_boundary(
    access: &mut impl TableAccess,
    root: PhysAddr,
    at: u64,
    unless: Option<Attributes>,
    tlb: &mut impl TlbFlush,
) -> Result<usize, OutOfTables> {
    let mut allocated = 0;
    let mut table = root;
    // Pages (level 3) always end on a page boundary.
    for (level, &size) in LEVEL_SIZE[..3].iter().enumerate() {
        let i = index(at, level);
        let raw = access.table(table)[i];
        table = match descriptor::decode(raw, level) {
            Decoded::Invalid => break,
            Decoded::Table(next) => next,
            Decoded::Leaf(..) => {
                let unchanged = unless.is_some_and(|a| descriptor::with_attributes(raw, a) == raw);
                if at.is_multiple_of(size) || unchanged {
                    break;
                }
                allocated += 1;
                split_block(access, table, i, level, at & !(size - 1), tlb)?
            }
        };
    }
    Ok(allocated)
}

/// Replaces the block in entry `i` of `parent` (at `level`, mapping `block_va`) with a table of
/// next-level leaves that map the same memory with the same attributes, and returns it.
///
/// A change of block size needs break-before-make (ARM ARM D8.16.1): the new table is filled
/// while unreachable, the block is invalidated and flushed from every TLB, and only then is
/// the table linked. In between, the whole block is unmapped: the caller must not need it
/// (its code, stack, or the tables themselves) until the split returns.
fn split_block(
    access: &mut impl TableAccess,
    parent: PhysAddr,
    i: usize,
    level: usize,
    block_va: u64,
    tlb: &mut impl TlbFlush,
) -> Result<PhysAddr, OutOfTables> {
    let raw = access.table(parent)[i];
    let Decoded::Leaf(pa, _) = descriptor::decode(raw, level) else {
        unreachable!("split_block on a non-leaf");
    };
    let new = access.alloc_table().ok_or(OutOfTables)?;
    let step = LEVEL_SIZE[level + 1];
    for j in 0..ENTRIES {
        let leaf = descriptor::split_leaf(raw, level + 1, pa + j as u64 * step);
        fill(access, new, j, leaf);
    }
    store(access, parent, i, descriptor::INVALID);
    // The flush begins with `dsb ishst` (the `TlbFlush` contract), which also publishes the
    // new table's fills before the link below.
    tlb.flush_range(VirtAddr::new(block_va), LEVEL_SIZE[level]);
    store(access, parent, i, descriptor::table(new));
    Ok(new)
}

/// Removes the mappings of `[va, va + size)` from the tables rooted at `root`, splitting
/// blocks the range covers only in part (by break-before-make, see `split_block`), and frees
/// every table that becomes empty (the root stays). The TLB is flushed through `tlb`.
///
/// The whole range must be mapped: a hole is `NotMapped` (the first unmapped address) and
/// nothing changes. On `OutOfTables` nothing is unmapped either, though blocks already split
/// stay split.
pub fn unmap(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    tlb: &mut impl TlbFlush,
) -> Result<Unmapped, UnmapError> {
    let range = match Range::new(va, size) {
        Err(RangeError::Misaligned) => return Err(UnmapError::Misaligned { va, size }),
        Err(RangeError::NotCanonical) => return Err(UnmapError::NotCanonical(va)),
        Ok(None) => return Ok(Unmapped::default()),
        Ok(Some(range)) => range,
    };
    if let Some(hole) = find(access, root, 0, range.first, range.last, false) {
        return Err(UnmapError::NotMapped(VirtAddr::new(hole)));
    }
    let mut done = Unmapped::default();
    for at in [Some(range.first), range.end()].into_iter().flatten() {
        done.tables_allocated += ensure_boundary(access, root, at, None, tlb)
            .map_err(|OutOfTables| UnmapError::OutOfTables)?;
    }
    clear(access, root, 0, range.first, range.last, tlb, &mut done);
    tlb.flush_range(va, size);
    Ok(done)
}

/// Clears every leaf in `[first, last]` under `table` (at `level`); the range starts and ends
/// on leaf boundaries. Frees the tables below that become empty, and says whether `table`
/// itself is now empty.
fn clear(
    access: &mut impl TableAccess,
    table: PhysAddr,
    level: usize,
    first: u64,
    last: u64,
    tlb: &mut impl TlbFlush,
    done: &mut Unmapped,
) -> bool {
    for_each_entry(level, first, last, |i, entry_va, lo, hi| {
        match descriptor::decode(access.table(table)[i], level) {
            Decoded::Invalid => {}
            Decoded::Leaf(..) => {
                debug_assert!(lo == entry_va && hi - lo == LEVEL_SIZE[level] - 1);
                store(access, table, i, descriptor::INVALID);
                done.leaves += 1;
            }
            Decoded::Table(next) => {
                if clear(access, next, level + 1, lo, hi, tlb, done) {
                    store(access, table, i, descriptor::INVALID);
                    // Walk caches may still point at `next`: drop them before the frame can
                    // be reused. The leaves it held are flushed with the whole range.
                    tlb.flush_va(VirtAddr::new(lo));
                    access.free_table(next);
                    done.tables_freed += 1;
                }
            }
        }
    });
    access
        .table(table)
        .iter()
        .all(|&raw| raw == descriptor::INVALID)
}

/// Gives every page of `[va, va + size)` the attributes `attrs`, splitting blocks the range
/// covers only in part (unless they already have `attrs`), and flushes the TLB through `tlb`.
/// Permission changes are made in place; a change of memory type goes through
/// break-before-make (ARM ARM D8.16.1), during which that leaf is unmapped. Cache contents
/// are not touched: going from cacheable to not, clean and invalidate the range to PoC.
///
/// The whole range must be mapped: a hole is `NotMapped` (the first unmapped address) and
/// nothing changes. On `OutOfTables` no attribute changed, though blocks already split stay
/// split.
pub fn protect(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    attrs: Attributes,
    tlb: &mut impl TlbFlush,
) -> Result<(), MapError> {
    let pa = PhysAddr::new(0);
    let range = match Range::new(va, size) {
        Err(RangeError::Misaligned) => return Err(MapError::Misaligned { va, pa, size }),
        Err(RangeError::NotCanonical) => return Err(MapError::NotCanonical(va)),
        Ok(None) => return Ok(()),
        Ok(Some(range)) => range,
    };
    if let Some(hole) = find(access, root, 0, range.first, range.last, false) {
        return Err(MapError::NotMapped(VirtAddr::new(hole)));
    }
    for at in [Some(range.first), range.end()].into_iter().flatten() {
        ensure_boundary(access, root, at, Some(attrs), tlb)
            .map_err(|OutOfTables| MapError::OutOfTables)?;
    }
    let mut changed = false;
    reprotect(
        access,
        root,
        0,
        range.first,
        range.last,
        attrs,
        tlb,
        &mut changed,
    );
    if changed {
        // Publishes the permission changes, and the last "make" store of a break-before-make.
        tlb.flush_range(va, size);
    }
    Ok(())
}

/// Rewrites the leaves in `[first, last]` under `table` (at `level`) with `attrs`.
#[allow(clippy::too_many_arguments)]
fn reprotect(
    access: &mut impl TableAccess,
    table: PhysAddr,
    level: usize,
    first: u64,
    last: u64,
    attrs: Attributes,
    tlb: &mut impl TlbFlush,
    changed: &mut bool,
) {
    for_each_entry(level, first, last, |i, entry_va, lo, hi| {
        let raw = access.table(table)[i];
        match descriptor::decode(raw, level) {
            Decoded::Invalid => {}
            Decoded::Table(next) => reprotect(access, next, level + 1, lo, hi, attrs, tlb, changed),
            Decoded::Leaf(..) => {
                let new = descriptor::with_attributes(raw, attrs);
                if new == raw {
                    return;
                }
                debug_assert!(lo == entry_va && hi - lo == LEVEL_SIZE[level] - 1);
                if descriptor::needs_break_before_make(raw, new) {
                    store(access, table, i, descriptor::INVALID);
                    tlb.flush_range(VirtAddr::new(entry_va), LEVEL_SIZE[level]);
                }
                store(access, table, i, new);
                *changed = true;
            }
        }
    });
}

/// Translates `va` through the tables rooted at `root`.
pub fn translate(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: VirtAddr,
) -> Option<Translation> {
    walk::walk(access, root, va).translation()
}

/// How many table frames the tree rooted at `root` uses, the root included.
pub fn count_tables(access: &mut impl TableAccess, root: PhysAddr) -> usize {
    fn below(access: &mut impl TableAccess, table: PhysAddr, level: usize) -> usize {
        let mut count = 0;
        for i in 0..ENTRIES {
            if let Decoded::Table(next) = descriptor::decode(access.table(table)[i], level) {
                count += 1 + below(access, next, level + 1);
            }
        }
        count
    }
    1 + below(access, root, 0)
}

/// Host-side test support shared by the walker's tests: tables in `Vec` memory that record
/// allocations and frees, a recording `TlbFlush`, and an event trace in which `store` also
/// writes, so tests can check the order of stores and flushes (break-before-make).
#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use std::boxed::Box;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::vec::Vec;

    /// One step of a table operation, in program order.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Event {
        Alloc(PhysAddr),
        Free(PhysAddr),
        /// A store to a (possibly live) table through `store`.
        Store {
            table: PhysAddr,
            index: usize,
            old: u64,
            new: u64,
        },
        /// A plain store into a table no walker can reach yet (through `fill`).
        Fill {
            table: PhysAddr,
        },
        /// `TableAccess::publish`.
        Publish,
        FlushVa(VirtAddr),
        FlushRange(VirtAddr, u64),
        FlushAll,
    }

    std::thread_local! {
        // Each test runs on its own thread, so each sees only its own events.
        static TRACE: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
    }

    pub fn record(event: Event) {
        TRACE.with(|t| t.borrow_mut().push(event));
    }

    /// The events recorded since the last call.
    pub fn take() -> Vec<Event> {
        TRACE.with(|t| core::mem::take(&mut *t.borrow_mut()))
    }

    /// Fake physical address of the first frame.
    const BASE: u64 = 0x1000_0000;

    /// Tables in host memory; frame `n` has "physical" address `BASE + n * 4096`. Frames are
    /// never reused, and a freed frame is gone: touching it again panics.
    pub struct HostTables {
        frames: Vec<Option<Box<[u64; ENTRIES]>>>,
        limit: usize,
        root: PhysAddr,
        /// Frames allocated and not freed.
        pub live: usize,
    }

    impl HostTables {
        /// Tables with at most `limit` live frames, and a root table.
        pub fn new(limit: usize) -> (Self, PhysAddr) {
            let mut t = Self {
                frames: Vec::new(),
                limit,
                root: PhysAddr::new(0),
                live: 0,
            };
            let root = t.alloc_table().unwrap();
            t.root = root;
            take();
            (t, root)
        }

        fn frame(pa: PhysAddr) -> usize {
            assert!(
                pa.as_u64() >= BASE && pa.is_aligned(PAGE_SIZE),
                "bad table {pa}"
            );
            ((pa.as_u64() - BASE) / PAGE_SIZE) as usize
        }
    }

    impl TableAccess for HostTables {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            if self.live == self.limit {
                return None;
            }
            self.frames.push(Some(Box::new([0; ENTRIES])));
            self.live += 1;
            let pa = PhysAddr::new(BASE + (self.frames.len() as u64 - 1) * PAGE_SIZE);
            record(Event::Alloc(pa));
            Some(pa)
        }

        fn free_table(&mut self, pa: PhysAddr) {
            assert_ne!(pa, self.root, "freeing the root");
            let frame = self.frames[Self::frame(pa)]
                .take()
                .unwrap_or_else(|| panic!("double free of {pa}"));
            assert!(frame.iter().all(|&e| e == 0), "freeing non-empty {pa}");
            self.live -= 1;
            record(Event::Free(pa));
        }

        fn table(&mut self, pa: PhysAddr) -> &mut [u64; ENTRIES] {
            self.frames[Self::frame(pa)]
                .as_mut()
                .unwrap_or_else(|| panic!("use of freed table {pa}"))
        }

        fn publish(&mut self) {
            record(Event::Publish);
        }
    }

    /// A `TlbFlush` that records what it is asked to do.
    pub struct Recorder;

    impl TlbFlush for Recorder {
        fn flush_va(&mut self, va: VirtAddr) {
            record(Event::FlushVa(va));
        }
        fn flush_range(&mut self, va: VirtAddr, size: u64) {
            record(Event::FlushRange(va, size));
        }
        fn flush_all(&mut self) {
            record(Event::FlushAll);
        }
    }

    /// Every table reachable from `root` (whose span starts at `root_va`): its level and the
    /// first address it maps.
    pub fn table_spans(
        t: &mut HostTables,
        root: PhysAddr,
        root_va: u64,
    ) -> HashMap<PhysAddr, (usize, u64)> {
        fn visit(
            t: &mut HostTables,
            table: PhysAddr,
            level: usize,
            base: u64,
            spans: &mut HashMap<PhysAddr, (usize, u64)>,
        ) {
            spans.insert(table, (level, base));
            for i in 0..ENTRIES {
                if let Decoded::Table(next) = descriptor::decode(t.table(table)[i], level) {
                    visit(
                        t,
                        next,
                        level + 1,
                        base + i as u64 * LEVEL_SIZE[level],
                        spans,
                    );
                }
            }
        }
        let mut spans = HashMap::new();
        visit(t, root, 0, root_va, &mut spans);
        spans
    }

    /// Checks one operation's events against the TLB rules (ARM ARM D8.13, D8.16.1), given
    /// the tables that existed before and after it (`table_spans`; frames are never reused):
    ///
    /// - a valid entry is never replaced by another valid one that needs break-before-make;
    /// - an entry invalidated is flushed (every address it covered, or its walk-cache entry
    ///   for a table) before a new valid entry is written there, before the table it pointed
    ///   to is freed, and before the operation returns;
    /// - a table allocated or filled in the operation is published (`publish`, or a flush,
    ///   which begins with a DSB) after its last fill and before a store links it.
    pub fn check_tlb_rules(
        events: &[Event],
        mut spans: HashMap<PhysAddr, (usize, u64)>,
        after: HashMap<PhysAddr, (usize, u64)>,
    ) {
        spans.extend(after);
        struct Stale {
            table: PhysAddr,
            index: usize,
            va: u64,
            size: u64,
            /// The table the entry pointed to, if it was a table descriptor.
            child: Option<PhysAddr>,
        }
        let mut stale: Vec<Stale> = Vec::new();
        // Tables written (zeroed or filled) since the last barrier.
        let mut unpublished: Vec<PhysAddr> = Vec::new();
        for (n, event) in events.iter().enumerate() {
            if matches!(
                event,
                Event::Publish | Event::FlushVa(_) | Event::FlushRange(..) | Event::FlushAll
            ) {
                unpublished.clear();
            }
            match *event {
                Event::Store {
                    table,
                    index,
                    old,
                    new,
                } => {
                    let (level, base) = spans[&table];
                    let (va, size) = (base + index as u64 * LEVEL_SIZE[level], LEVEL_SIZE[level]);
                    if let Decoded::Table(child) = descriptor::decode(new, level) {
                        assert!(
                            !unpublished.contains(&child),
                            "event {n}: table {child} linked at {va:#x} before it was published"
                        );
                    }
                    assert!(
                        !descriptor::needs_break_before_make(old, new),
                        "event {n}: {old:#x} -> {new:#x} at {va:#x} without a break"
                    );
                    if new != descriptor::INVALID {
                        assert!(
                            !stale.iter().any(|s| (s.table, s.index) == (table, index)),
                            "event {n}: make at {va:#x} before the break was flushed"
                        );
                    }
                    if old != descriptor::INVALID {
                        let child = match descriptor::decode(old, level) {
                            Decoded::Table(child) => Some(child),
                            _ => None,
                        };
                        stale.push(Stale {
                            table,
                            index,
                            va,
                            size,
                            child,
                        });
                    }
                }
                // A single-address flush drops walk-cache entries on the way to it and the
                // page that holds it: enough for a table entry or a page, not for a block.
                Event::FlushVa(v) => stale.retain(|s| {
                    !(s.va..=s.va + (s.size - 1)).contains(&v.as_u64())
                        || (s.child.is_none() && s.size > PAGE_SIZE)
                }),
                Event::FlushRange(v, size) => stale
                    .retain(|s| s.va < v.as_u64() || s.va + (s.size - 1) > v.as_u64() + (size - 1)),
                Event::FlushAll => stale.clear(),
                Event::Free(pa) => assert!(
                    !stale.iter().any(|s| s.child == Some(pa)),
                    "event {n}: {pa} freed while walk caches may hold it"
                ),
                Event::Alloc(pa) | Event::Fill { table: pa } => unpublished.push(pa),
                Event::Publish => {}
            }
        }
        if let Some(s) = stale.first() {
            panic!("{:#x} (size {:#x}) changed but never flushed", s.va, s.size);
        }
    }

    /// Checks the tree's invariants and returns its table count: no table but the root is
    /// empty, no table is reached twice, leaves are aligned to their size, and every live
    /// frame is in the tree (nothing leaked).
    pub fn validate(t: &mut HostTables, root: PhysAddr) -> usize {
        fn check(
            t: &mut HostTables,
            table: PhysAddr,
            level: usize,
            seen: &mut Vec<PhysAddr>,
        ) -> usize {
            assert!(!seen.contains(&table), "{table} reached twice");
            seen.push(table);
            let mut count = 1;
            let mut valid = 0;
            for i in 0..ENTRIES {
                let raw = t.table(table)[i];
                match descriptor::decode(raw, level) {
                    Decoded::Invalid => assert_eq!(raw, 0, "L{level}[{i}] reserved {raw:#x}"),
                    Decoded::Table(next) => count += check(t, next, level + 1, seen),
                    Decoded::Leaf(pa, _) => {
                        assert!(pa.is_aligned(LEVEL_SIZE[level]), "misaligned leaf {pa}")
                    }
                }
                valid += usize::from(raw != 0);
            }
            assert!(
                level == 0 || valid > 0,
                "empty table {table} at level {level}"
            );
            count
        }
        let count = check(t, root, 0, &mut Vec::new());
        assert_eq!(count, count_tables(t, root));
        assert_eq!(count, t.live, "table frames leaked");
        count
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{self, validate, Event, HostTables, Recorder};
    use super::*;
    use crate::arch::aarch64::mmu::descriptor::MemoryKind;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    const GIB: u64 = 1 << 30;
    const MIB2: u64 = 1 << 21;
    const PAGE: u64 = PAGE_SIZE;

    fn va(raw: u64) -> VirtAddr {
        VirtAddr::new(raw)
    }

    fn pa(raw: u64) -> PhysAddr {
        PhysAddr::new(raw)
    }

    fn tr(t: &mut HostTables, root: PhysAddr, v: u64) -> Option<(PhysAddr, Attributes, usize)> {
        translate(t, root, va(v)).map(|tr| (tr.pa, tr.attrs, tr.level))
    }

    fn stores(events: &[Event]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Event::Store { .. }))
            .count()
    }

    #[test]
    fn maps_pages_and_blocks() {
        let (mut t, root) = HostTables::new(16);
        let va = VirtAddr::new(0xffff_0000_4000_0000);
        let pa = PhysAddr::new(0x4000_0000);
        // 1 GiB + 2 MiB + 4 KiB: one 1 GiB block, one 2 MiB block, one page.
        let size = (1 << 30) + (1 << 21) + 4096;
        map(&mut t, root, va, pa, size, Attributes::KERNEL_DATA).unwrap();
        let tr = translate(&mut t, root, va + 0x1234).unwrap();
        assert_eq!((tr.pa, tr.level), (pa + 0x1234, 1));
        let tr = translate(&mut t, root, va + (1 << 30) + 0x10).unwrap();
        assert_eq!((tr.pa, tr.level), (pa + (1 << 30) + 0x10, 2));
        let tr = translate(&mut t, root, va + (1 << 30) + (1 << 21)).unwrap();
        assert_eq!((tr.pa, tr.level), (pa + (1 << 30) + (1 << 21), 3));
        assert_eq!(translate(&mut t, root, va + size), None);
        assert_eq!(tr.attrs, Attributes::KERNEL_DATA);
        // Root, L1, L2, L3.
        assert_eq!(validate(&mut t, root), 4);
    }

    #[test]
    fn refuses_overlap_misalignment_and_exhaustion() {
        let (mut t, root) = HostTables::new(4);
        let va = VirtAddr::new(0xffff_f000_0000_0000);
        map(&mut t, root, va, pa(0x900_0000), 4096, Attributes::DEVICE).unwrap();
        assert_eq!(
            map(&mut t, root, va, pa(0x900_0000), 4096, Attributes::DEVICE),
            Err(MapError::AlreadyMapped(va))
        );
        assert!(matches!(
            map(&mut t, root, va + 8, pa(0), 4096, Attributes::DEVICE),
            Err(MapError::Misaligned { .. })
        ));
        let lower_top = VirtAddr::new(0x0001_0000_0000_0000);
        assert_eq!(
            map(&mut t, root, lower_top, pa(0), 4096, Attributes::DEVICE),
            Err(MapError::NotCanonical(lower_top))
        );
        // Root + 3 tables used; a far-away address needs 3 more, and none is left behind.
        testing::take();
        assert_eq!(
            map(
                &mut t,
                root,
                VirtAddr::new(0xffff_0000_0000_0000),
                pa(0),
                4096,
                Attributes::DEVICE
            ),
            Err(MapError::OutOfTables)
        );
        assert_eq!(validate(&mut t, root), 4);
        assert_eq!(stores(&testing::take()), 0);
    }

    #[test]
    fn refuses_ranges_outside_one_half_or_past_48_bit_pa() {
        let (mut t, root) = HostTables::new(16);
        // Both ends canonical, but the range would cross the hole between the halves.
        let low = va(0x0000_ffff_ffff_f000);
        assert_eq!(
            map(
                &mut t,
                root,
                low,
                pa(0),
                0xffff_0000_0000_1000 - low.as_u64(),
                Attributes::KERNEL_DATA
            ),
            Err(MapError::NotCanonical(low))
        );
        // Wrapping past the top of the address space.
        let top = va(0xffff_ffff_ffff_f000);
        assert_eq!(
            map(&mut t, root, top, pa(0), 2 * PAGE, Attributes::KERNEL_DATA),
            Err(MapError::NotCanonical(top))
        );
        assert_eq!(
            map(
                &mut t,
                root,
                top,
                pa((1 << 48) - PAGE),
                2 * PAGE,
                Attributes::KERNEL_DATA
            ),
            Err(MapError::NotCanonical(top))
        );
        assert_eq!(
            map(
                &mut t,
                root,
                va(0xffff_0000_0000_0000),
                pa((1 << 48) - PAGE),
                2 * PAGE,
                Attributes::KERNEL_DATA
            ),
            Err(MapError::PhysOutOfRange(pa((1 << 48) - PAGE)))
        );
        // The very last page of each half works, both ways.
        for last in [0x0000_ffff_ffff_f000, 0xffff_ffff_ffff_f000] {
            map(
                &mut t,
                root,
                va(last),
                pa(0x5000),
                PAGE,
                Attributes::KERNEL_DATA,
            )
            .unwrap();
            assert_eq!(tr(&mut t, root, last + 0xfff).unwrap().0, pa(0x5fff));
            unmap(&mut t, root, va(last), PAGE, &mut Recorder).unwrap();
        }
        assert_eq!(validate(&mut t, root), 1);
    }

    #[test]
    fn map_over_identical_mapping_is_already_mapped_and_changes_nothing() {
        let (mut t, root) = HostTables::new(16);
        let base = 0xffff_0000_4000_0000;
        map(
            &mut t,
            root,
            va(base),
            pa(0x4000_0000),
            GIB,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        testing::take();
        assert_eq!(
            map(
                &mut t,
                root,
                va(base),
                pa(0x4000_0000),
                GIB,
                Attributes::KERNEL_DATA
            ),
            Err(MapError::AlreadyMapped(va(base)))
        );
        // A range that starts free and runs into the block reports the block's first page.
        assert_eq!(
            map(
                &mut t,
                root,
                va(base - 2 * PAGE),
                pa(0),
                3 * PAGE,
                Attributes::KERNEL_DATA
            ),
            Err(MapError::AlreadyMapped(va(base)))
        );
        assert!(testing::take()
            .iter()
            .all(|e| !matches!(e, Event::Store { .. } | Event::Alloc(_))));
    }

    #[test]
    fn unmap_round_trip_returns_every_table() {
        let (mut t, root) = HostTables::new(64);
        let regions = [
            // 1 GiB + 2 MiB + a page: one of each leaf size.
            (0xffff_0000_4000_0000, 0x4000_0000, GIB + MIB2 + PAGE),
            // Misaligned physical address: pages only.
            (0xffff_0000_0000_0000, 0x1234_5000, 3 * MIB2),
            // The kernel image slot and the MMIO window.
            (0xffff_ffff_8000_0000, 0x4020_0000, 6 * MIB2),
            (0xffff_f000_0000_0000, 0x0900_0000, 4 * PAGE),
        ];
        for &(v, p, size) in &regions {
            map(&mut t, root, va(v), pa(p), size, Attributes::KERNEL_DATA).unwrap();
        }
        let tables = validate(&mut t, root);
        let mut freed = 0;
        for &(v, p, size) in &regions {
            assert_eq!(tr(&mut t, root, v + size - 1).unwrap().0, pa(p + size - 1));
            let done = unmap(&mut t, root, va(v), size, &mut Recorder).unwrap();
            assert_eq!(done.tables_allocated, 0);
            freed += done.tables_freed;
            assert_eq!(tr(&mut t, root, v), None);
            assert_eq!(tr(&mut t, root, v + size - 1), None);
            validate(&mut t, root);
        }
        assert_eq!(freed, tables - 1);
        assert_eq!(count_tables(&mut t, root), 1);
        assert_eq!(t.live, 1);
        // And the space can be mapped again, with blocks.
        map(
            &mut t,
            root,
            va(regions[0].0),
            pa(0x4000_0000),
            GIB,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        assert_eq!(tr(&mut t, root, regions[0].0).unwrap().2, 1);
    }

    #[test]
    fn unmapping_a_page_in_a_gib_block_splits_twice_and_keeps_the_rest() {
        let (mut t, root) = HostTables::new(16);
        let (base, phys) = (0xffff_0000_4000_0000, 0x4000_0000);
        let attrs = Attributes::KERNEL_TEXT;
        map(&mut t, root, va(base), pa(phys), GIB, attrs).unwrap();
        assert_eq!(validate(&mut t, root), 2);
        let hole = base + 0x1234_5000;
        let done = unmap(&mut t, root, va(hole), PAGE, &mut Recorder).unwrap();
        assert_eq!(
            done,
            Unmapped {
                leaves: 1,
                tables_allocated: 2,
                tables_freed: 0
            }
        );
        assert_eq!(validate(&mut t, root), 4);
        assert_eq!(tr(&mut t, root, hole), None);
        assert_eq!(tr(&mut t, root, hole + PAGE - 1), None);
        // Pages around the hole, 2 MiB blocks elsewhere; same addresses and attributes.
        for (v, level) in [
            (hole - 1, 3),
            (hole + PAGE, 3),
            (hole & !(MIB2 - 1), 3),
            ((hole & !(MIB2 - 1)) - 1, 2),
            ((hole & !(MIB2 - 1)) + MIB2, 2),
            (base, 2),
            (base + GIB - 1, 2),
        ] {
            assert_eq!(
                tr(&mut t, root, v),
                Some((pa(v - base + phys), attrs, level)),
                "{v:#x}"
            );
        }
        // Unmapping the rest gives every table back.
        unmap(&mut t, root, va(base), hole - base, &mut Recorder).unwrap();
        let done = unmap(
            &mut t,
            root,
            va(hole + PAGE),
            base + GIB - hole - PAGE,
            &mut Recorder,
        );
        assert_eq!(done.unwrap().tables_freed, 3);
        assert_eq!(validate(&mut t, root), 1);
    }

    #[test]
    fn unmapping_a_hole_is_an_error_and_changes_nothing() {
        let (mut t, root) = HostTables::new(16);
        let base = 0xffff_0000_4000_0000;
        map(
            &mut t,
            root,
            va(base),
            pa(0x4000_0000),
            MIB2,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        map(
            &mut t,
            root,
            va(base + MIB2 + PAGE),
            pa(0),
            PAGE,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        testing::take();
        // Starts inside the block, runs over the unmapped page after it.
        assert_eq!(
            unmap(&mut t, root, va(base + PAGE), MIB2 + PAGE, &mut Recorder),
            Err(UnmapError::NotMapped(va(base + MIB2)))
        );
        assert_eq!(
            protect(
                &mut t,
                root,
                va(base + PAGE),
                MIB2,
                Attributes::KERNEL_RO,
                &mut Recorder
            ),
            Err(MapError::NotMapped(va(base + MIB2)))
        );
        assert_eq!(
            unmap(&mut t, root, va(0xffff_8000_0000_0000), PAGE, &mut Recorder),
            Err(UnmapError::NotMapped(va(0xffff_8000_0000_0000)))
        );
        assert!(testing::take().is_empty());
        assert_eq!(tr(&mut t, root, base + PAGE).unwrap().2, 2);
        assert!(matches!(
            unmap(&mut t, root, va(base + 1), PAGE, &mut Recorder),
            Err(UnmapError::Misaligned { .. })
        ));
        assert_eq!(
            unmap(&mut t, root, va(base), 0, &mut Recorder),
            Ok(Unmapped::default())
        );
    }

    #[test]
    fn unmap_out_of_tables_unmaps_nothing() {
        // Root, L1, L2: no frame left to split the block.
        let (mut t, root) = HostTables::new(3);
        let base = 0xffff_0000_4020_0000;
        map(
            &mut t,
            root,
            va(base),
            pa(0x4020_0000),
            MIB2,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        assert_eq!(
            unmap(&mut t, root, va(base + PAGE), PAGE, &mut Recorder),
            Err(UnmapError::OutOfTables)
        );
        assert_eq!(tr(&mut t, root, base + PAGE).unwrap().2, 2);
        assert_eq!(validate(&mut t, root), 3);
    }

    #[test]
    fn new_tables_are_published_before_they_are_linked() {
        let (mut t, root) = HostTables::new(16);
        map(
            &mut t,
            root,
            va(0xffff_0000_4000_0000),
            pa(0x4000_0000),
            PAGE,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        let events = testing::take();
        let allocs: Vec<PhysAddr> = events
            .iter()
            .filter_map(|e| match e {
                Event::Alloc(pa) => Some(*pa),
                _ => None,
            })
            .collect();
        assert_eq!(allocs.len(), 3, "L1, L2 and L3 tables: {events:?}");
        // Allocate all three, fill them, one barrier, then the one store that links them.
        assert_eq!(
            events[3..],
            [
                Event::Fill { table: allocs[2] },
                Event::Fill { table: allocs[0] },
                Event::Fill { table: allocs[1] },
                Event::Publish,
                Event::Store {
                    table: root,
                    index: index(0xffff_0000_4000_0000, 0),
                    old: 0,
                    new: descriptor::table(allocs[0]),
                },
            ]
        );
    }

    #[test]
    fn split_follows_break_before_make() {
        let (mut t, root) = HostTables::new(16);
        let (base, phys) = (0xffff_0000_4020_0000, 0x4020_0000);
        map(
            &mut t,
            root,
            va(base),
            pa(phys),
            MIB2,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        let l1 = match descriptor::decode(t.table(root)[0], 0) {
            Decoded::Table(l1) => l1,
            other => panic!("{other:?}"),
        };
        let Decoded::Table(l2) = descriptor::decode(t.table(l1)[1], 1) else {
            panic!("no L2 table");
        };
        let block = t.table(l2)[1];
        testing::take();
        unmap(&mut t, root, va(base + 5 * PAGE), PAGE, &mut Recorder).unwrap();
        let events = testing::take();
        // The 512 fills of the new table come right after its allocation.
        let fills = events
            .iter()
            .filter(|e| matches!(e, Event::Fill { .. }))
            .count();
        assert_eq!(fills, ENTRIES);
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| !matches!(e, Event::Fill { .. }))
            .collect();
        let Event::Alloc(l3) = events[0] else {
            panic!("{events:?}");
        };
        let page5 = descriptor::leaf(pa(phys + 5 * PAGE), Attributes::KERNEL_DATA, 3);
        assert_eq!(
            events[1..],
            [
                // Break: the block goes invalid and every TLB forgets it...
                Event::Store {
                    table: l2,
                    index: 1,
                    old: block,
                    new: descriptor::INVALID
                },
                Event::FlushRange(va(base), MIB2),
                // ...make: only then is the (already filled) table linked.
                Event::Store {
                    table: l2,
                    index: 1,
                    old: 0,
                    new: descriptor::table(l3)
                },
                // The unmap itself, flushed once at the end.
                Event::Store {
                    table: l3,
                    index: 5,
                    old: page5,
                    new: descriptor::INVALID
                },
                Event::FlushRange(va(base + 5 * PAGE), PAGE),
            ]
        );
        for j in [0, 4, 6, 511] {
            let expected = descriptor::leaf(pa(phys + j as u64 * PAGE), Attributes::KERNEL_DATA, 3);
            assert_eq!(t.table(l3)[j], expected);
        }
    }

    #[test]
    fn empty_tables_are_unlinked_and_flushed_before_they_are_freed() {
        let (mut t, root) = HostTables::new(16);
        let base = 0xffff_0000_4000_0000;
        map(
            &mut t,
            root,
            va(base),
            pa(0x8000_0000),
            MIB2,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        map(
            &mut t,
            root,
            va(base + MIB2),
            pa(0x1000),
            PAGE,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        let Decoded::Table(l1) = descriptor::decode(t.table(root)[0], 0) else {
            panic!()
        };
        let Decoded::Table(l2) = descriptor::decode(t.table(l1)[1], 1) else {
            panic!()
        };
        let Decoded::Table(l3) = descriptor::decode(t.table(l2)[1], 2) else {
            panic!()
        };
        testing::take();
        let done = unmap(&mut t, root, va(base + MIB2), PAGE, &mut Recorder).unwrap();
        assert_eq!(done.tables_freed, 1);
        let page = descriptor::leaf(pa(0x1000), Attributes::KERNEL_DATA, 3);
        assert_eq!(
            testing::take(),
            [
                Event::Store {
                    table: l3,
                    index: 0,
                    old: page,
                    new: 0
                },
                Event::Store {
                    table: l2,
                    index: 1,
                    old: descriptor::table(l3),
                    new: 0
                },
                Event::FlushVa(va(base + MIB2)),
                Event::Free(l3),
                Event::FlushRange(va(base + MIB2), PAGE),
            ]
        );
        validate(&mut t, root);
    }

    #[test]
    fn protect_part_of_a_block_changes_permissions_in_place() {
        let (mut t, root) = HostTables::new(16);
        let (base, phys) = (0xffff_0000_4020_0000, 0x4020_0000);
        map(
            &mut t,
            root,
            va(base),
            pa(phys),
            MIB2,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        testing::take();
        protect(
            &mut t,
            root,
            va(base + 4 * PAGE),
            2 * PAGE,
            Attributes::KERNEL_RO,
            &mut Recorder,
        )
        .unwrap();
        let events = testing::take();
        // One split (with its break), then two in-place rewrites and one flush for both.
        let breaks = events
            .iter()
            .filter(|e| matches!(e, Event::Store { old, new: 0, .. } if *old != 0))
            .count();
        assert_eq!(breaks, 1);
        assert_eq!(stores(&events), 4);
        assert_eq!(
            events.last(),
            Some(&Event::FlushRange(va(base + 4 * PAGE), 2 * PAGE))
        );
        for (v, attrs) in [
            (base + 3 * PAGE, Attributes::KERNEL_DATA),
            (base + 4 * PAGE, Attributes::KERNEL_RO),
            (base + 6 * PAGE - 1, Attributes::KERNEL_RO),
            (base + 6 * PAGE, Attributes::KERNEL_DATA),
        ] {
            assert_eq!(tr(&mut t, root, v), Some((pa(v - base + phys), attrs, 3)));
        }
        assert_eq!(validate(&mut t, root), 4);
        // Protecting to what is already there changes (and splits) nothing.
        map(
            &mut t,
            root,
            va(base + MIB2),
            pa(phys + MIB2),
            MIB2,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        testing::take();
        protect(
            &mut t,
            root,
            va(base + MIB2 + PAGE),
            PAGE,
            Attributes::KERNEL_DATA,
            &mut Recorder,
        )
        .unwrap();
        assert!(testing::take().is_empty());
        // A whole block changes without a split.
        protect(
            &mut t,
            root,
            va(base + MIB2),
            MIB2,
            Attributes::KERNEL_TEXT,
            &mut Recorder,
        )
        .unwrap();
        assert_eq!(
            tr(&mut t, root, base + MIB2).unwrap().1,
            Attributes::KERNEL_TEXT
        );
        assert_eq!(validate(&mut t, root), 4);
    }

    #[test]
    fn protect_memory_type_uses_break_before_make() {
        let (mut t, root) = HostTables::new(16);
        let base = 0xffff_f000_0000_0000;
        map(
            &mut t,
            root,
            va(base),
            pa(0x900_0000),
            2 * PAGE,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        let Decoded::Table(l3) = walk::walk(&mut t, root, va(base)).steps()[2].decoded else {
            panic!("no L3 table");
        };
        let old = t.table(l3)[1];
        let uncached = Attributes {
            kind: MemoryKind::NormalUncached,
            ..Attributes::KERNEL_DATA
        };
        let new = descriptor::leaf(pa(0x900_1000), uncached, 3);
        testing::take();
        protect(&mut t, root, va(base + PAGE), PAGE, uncached, &mut Recorder).unwrap();
        assert_eq!(
            testing::take(),
            [
                Event::Store {
                    table: l3,
                    index: 1,
                    old,
                    new: 0
                },
                Event::FlushRange(va(base + PAGE), PAGE),
                Event::Store {
                    table: l3,
                    index: 1,
                    old: 0,
                    new
                },
                Event::FlushRange(va(base + PAGE), PAGE),
            ]
        );
        assert_eq!(tr(&mut t, root, base + PAGE).unwrap().1, uncached);
        assert_eq!(tr(&mut t, root, base).unwrap().1, Attributes::KERNEL_DATA);
    }

    /// xorshift64*: a deterministic stream, so a failure replays exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The reference: what each mapped page translates to.
    type Model = BTreeMap<u64, (u64, Attributes)>;

    /// The first page of `[start, end)` the model has (`mapped`) or lacks (`!mapped`).
    fn model_find(model: &Model, start: u64, end: u64, mapped: bool) -> Option<u64> {
        if mapped {
            return model.range(start..end).next().map(|(&v, _)| v);
        }
        let mut expected = start;
        for &v in model.range(start..end).map(|(v, _)| v) {
            if v != expected {
                return Some(expected);
            }
            expected += PAGE;
        }
        (expected < end).then_some(expected)
    }

    /// Random map/unmap/protect operations in a 2 GiB window that straddles an L0 boundary,
    /// checked against a page-level model (a `BTreeMap` rather than a `HashMap`, for range
    /// queries and a deterministic order): results and errors, sampled translations, the
    /// tree's invariants and table count (no leak) and the TLB rules of every operation's
    /// event trace, and no store on a refused operation. At the end everything is unmapped and
    /// only the root must remain.
    #[test]
    fn random_operations_match_a_page_model() {
        const WINDOW: u64 = 0xffff_0080_0000_0000 - GIB;
        const WINDOW_SIZE: u64 = 2 * GIB;
        // The first address the root maps (upper half).
        const ROOT_VA: u64 = 0xffff_0000_0000_0000;
        let kinds = [
            Attributes::KERNEL_DATA,
            Attributes::KERNEL_RO,
            Attributes::KERNEL_TEXT,
            Attributes::DEVICE,
            Attributes {
                kind: MemoryKind::NormalUncached,
                ..Attributes::KERNEL_DATA
            },
        ];
        for seed in 1..=4u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut t, root) = HostTables::new(usize::MAX);
            let mut model = Model::new();
            for step in 0..250 {
                // A range of 4 KiB, 2 MiB or (rarely) 1 GiB units, often near a 2 MiB edge.
                let unit = match rng.below(100) {
                    0..=2 => GIB,
                    3..=40 => MIB2,
                    _ => PAGE,
                };
                let count = 1 + rng.below(if unit == PAGE { 40 } else { 3 });
                // 0 = map, 1 = unmap, 2 = protect.
                let op = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2][rng.below(10) as usize];
                let mut start = WINDOW + rng.below(WINDOW_SIZE / unit) * unit;
                if unit == PAGE && rng.below(2) == 0 {
                    start = (start & !(MIB2 - 1))
                        .saturating_sub(rng.below(8) * PAGE)
                        .max(WINDOW);
                }
                let mut size = (count * unit).min(WINDOW + WINDOW_SIZE - start);
                let anchor = model.range(start..).next().or(model.iter().next());
                let anchored = rng.below(4) != 0;
                if let (1 | 2, Some((&v, _)), true) = (op, anchor, anchored) {
                    // Mostly unmap or protect something that is mapped: from a mapped page
                    // (block-aligned if that is mapped too) to the end of its run, at most.
                    start = if model.contains_key(&(v & !(unit - 1))) {
                        v & !(unit - 1)
                    } else {
                        v
                    };
                    let mut run = start;
                    while run - start < count * unit && model.contains_key(&run) {
                        run += PAGE;
                    }
                    size = run - start;
                }
                let end = start + size;
                let attrs = kinds[rng.below(kinds.len() as u64) as usize];
                let spans = testing::table_spans(&mut t, root, ROOT_VA);
                testing::take();
                let refused = match op {
                    0 => {
                        // A physical address congruent to the VA modulo 1 GiB lets blocks fit
                        // wherever the VA allows; else only pages do (never for 1 GiB units:
                        // a GiB of pages is slow to model).
                        let phys = if unit == GIB || rng.below(4) != 0 {
                            start % GIB + rng.below(16) * GIB
                        } else {
                            start % GIB + 16 * GIB + (1 + rng.below(511)) * PAGE
                        };
                        let got = map(&mut t, root, va(start), pa(phys), size, attrs);
                        match model_find(&model, start, end, true) {
                            Some(v) => assert_eq!(got, Err(MapError::AlreadyMapped(va(v)))),
                            None => {
                                assert_eq!(got, Ok(()), "seed {seed} step {step}");
                                for v in (start..end).step_by(PAGE as usize) {
                                    model.insert(v, (phys + v - start, attrs));
                                }
                            }
                        }
                        got.is_err()
                    }
                    1 => {
                        let got = unmap(&mut t, root, va(start), size, &mut Recorder);
                        match model_find(&model, start, end, false) {
                            Some(v) => assert_eq!(got, Err(UnmapError::NotMapped(va(v)))),
                            None => {
                                assert!(got.is_ok(), "seed {seed} step {step}: {got:?}");
                                let keys: Vec<u64> =
                                    model.range(start..end).map(|(&v, _)| v).collect();
                                for v in keys {
                                    model.remove(&v);
                                }
                            }
                        }
                        got.is_err()
                    }
                    _ => {
                        let got = protect(&mut t, root, va(start), size, attrs, &mut Recorder);
                        match model_find(&model, start, end, false) {
                            Some(v) => assert_eq!(got, Err(MapError::NotMapped(va(v)))),
                            None => {
                                assert_eq!(got, Ok(()), "seed {seed} step {step}");
                                for (_, entry) in model.range_mut(start..end) {
                                    entry.1 = attrs;
                                }
                            }
                        }
                        got.is_err()
                    }
                };
                let events = testing::take();
                let after = testing::table_spans(&mut t, root, ROOT_VA);
                testing::check_tlb_rules(&events, spans, after);
                if refused {
                    assert_eq!(
                        stores(&events),
                        0,
                        "seed {seed} step {step}: refused op wrote"
                    );
                }
                validate(&mut t, root);
                let mut samples: Vec<u64> =
                    (0..24).map(|_| WINDOW + rng.below(WINDOW_SIZE)).collect();
                samples.extend([start.saturating_sub(1), start, end - 1, end]);
                for v in samples {
                    let expected = model
                        .get(&(v & !(PAGE - 1)))
                        .map(|&(p, a)| (pa(p + (v & (PAGE - 1))), a));
                    let got = tr(&mut t, root, v).map(|(p, a, _)| (p, a));
                    assert_eq!(got, expected, "seed {seed} step {step} va {v:#x}");
                }
            }
            // Unmap what is left, run by run.
            while let Some((&first, _)) = model.iter().next() {
                let mut end = first;
                while model.remove(&end).is_some() {
                    end += PAGE;
                }
                unmap(&mut t, root, va(first), end - first, &mut Recorder).unwrap();
            }
            assert_eq!(validate(&mut t, root), 1, "seed {seed}");
        }
    }
}
