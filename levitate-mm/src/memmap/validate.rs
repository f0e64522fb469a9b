//! The map's invariants, checked in one pass (`validate`), and its byte totals.
//!
//! An invariant checker run after every operation in the property tests catches more than
//! example tests do; the kernel can run it once at boot for the same reason.

use super::{InvariantViolation, MemoryMap, MAX_RESERVED};
use crate::addr::PAGE_SIZE;
use crate::region::{Region, RegionSet};

/// Byte totals of a map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// RAM (whole pages).
    pub memory: u64,
    /// RAM that is not usable: pages holding reserved bytes.
    pub reserved: u64,
    /// RAM the page allocator may use.
    pub usable: u64,
    /// RAM in pages that hold `no-map` bytes (never mapped).
    pub no_map: u64,
}

/// Whether `list` is sorted, disjoint, and made of non-empty page-aligned ranges.
fn check_page_list(list: &[Region], name: &'static str) -> Result<(), InvariantViolation> {
    for (index, r) in list.iter().enumerate() {
        if r.is_empty() || !r.base.is_aligned(PAGE_SIZE) || !r.size.is_multiple_of(PAGE_SIZE) {
            return Err(InvariantViolation::NotPageAligned {
                list: name,
                region: *r,
            });
        }
        if index > 0 && list[index - 1].end() > r.base.as_u64() {
            return Err(InvariantViolation::Unsorted { list: name, index });
        }
    }
    Ok(())
}

/// Whether `r` lies wholly inside one range of `sorted`.
fn inside_one(sorted: &[Region], r: &Region) -> bool {
    let i = sorted.partition_point(|m| m.base <= r.base);
    i > 0 && r.end() <= sorted[i - 1].end()
}

/// The first part of `gap` that no range of `sorted` (merged) covers.
fn first_uncovered(sorted: &[Region], gap: Region) -> Region {
    let mut start = gap.base.as_u64();
    if let Some(p) = sorted.iter().find(|p| p.contains(start)) {
        start = p.end();
    }
    let end = sorted
        .iter()
        .map(|p| p.base.as_u64())
        .find(|&b| b > start)
        .map_or(gap.end(), |b| b.min(gap.end()));
    Region::from_bounds(start, end)
}

impl MemoryMap<'_> {
    /// The pages holding reserved bytes, merged. Each reservation adds at most one range, so
    /// the set cannot overflow.
    fn reserved_pages(&self, only_no_map: bool) -> RegionSet<MAX_RESERVED> {
        let mut pages = RegionSet::new();
        for r in self.reserved().iter().filter(|r| r.no_map || !only_no_map) {
            let _ = pages.insert(r.region.page_outward());
        }
        pages
    }

    /// Byte totals: RAM, RAM not usable, usable, and RAM in no-map pages.
    pub fn totals(&self) -> Totals {
        let memory = self.memory.total();
        let usable = self.usable.total();
        Totals {
            memory,
            reserved: memory.saturating_sub(usable),
            usable,
            no_map: self.reserved_pages(true).total(),
        }
    }

    /// Checks every invariant of the map:
    /// * memory and usable ranges are non-empty, page aligned, sorted and disjoint;
    /// * reservations are non-empty, sorted by base, each inside one RAM range;
    /// * every usable range lies inside one RAM range;
    /// * no usable page holds a reserved byte (usable ∩ reserved = ∅, page level);
    /// * every RAM page is usable or holds a reserved byte (usable ∪ reserved ⊇ RAM).
    pub fn validate(&self) -> Result<(), InvariantViolation> {
        check_page_list(self.memory(), "memory")?;
        check_page_list(self.usable(), "usable")?;
        let reserved = self.reserved();
        for (index, r) in reserved.iter().enumerate() {
            if r.region.is_empty() || (index > 0 && reserved[index - 1].region.base > r.region.base)
            {
                return Err(InvariantViolation::Unsorted {
                    list: "reserved",
                    index,
                });
            }
            if !inside_one(self.memory(), &r.region) {
                return Err(InvariantViolation::ReservedOutsideMemory { region: r.region });
            }
        }
        for u in self.usable() {
            if !inside_one(self.memory(), u) {
                return Err(InvariantViolation::UsableOutsideMemory { region: *u });
            }
        }
        let pages = self.reserved_pages(false);
        for u in self.usable() {
            if let Some(p) = pages.iter().find(|p| p.overlaps(u)) {
                return Err(InvariantViolation::UsableReserved {
                    usable: *u,
                    reserved: *p,
                });
            }
        }
        // Walk each RAM range; every gap between usable ranges must be reserved pages. The
        // merged reserved pages are non-adjacent, so a covered gap lies inside one of them.
        let usable = self.usable();
        let mut next_usable = 0;
        for m in self.memory() {
            let mut at = m.base.as_u64();
            loop {
                let gap_end = match usable.get(next_usable) {
                    Some(u) if u.base.as_u64() < m.end() => u.base.as_u64(),
                    _ => m.end(),
                };
                let gap = Region::from_bounds(at, gap_end);
                if !gap.is_empty() && !inside_one(pages.as_slice(), &gap) {
                    return Err(InvariantViolation::PagesLost {
                        region: first_uncovered(pages.as_slice(), gap),
                    });
                }
                match usable.get(next_usable) {
                    Some(u) if u.base.as_u64() < m.end() => {
                        at = u.end();
                        next_usable += 1;
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }
}
