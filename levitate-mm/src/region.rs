//! Physical address ranges and small fixed-capacity sets of them (no allocation: the memory map
//! is built before any heap exists).

use crate::addr::{PhysAddr, PAGE_SIZE};
use core::fmt;

/// A half-open physical range `[base, base + size)`. The end never exceeds `u64::MAX`
/// (constructors clip), so `end()` cannot overflow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Region {
    /// First byte.
    pub base: PhysAddr,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// A range of `size` bytes at `base`, clipped at the top of the address space.
    pub const fn new(base: PhysAddr, size: u64) -> Self {
        let room = u64::MAX - base.as_u64();
        Self {
            base,
            size: if size > room { room } else { size },
        }
    }

    /// The range `[start, end)`; empty when `end <= start`.
    pub const fn from_bounds(start: u64, end: u64) -> Self {
        Self {
            base: PhysAddr::new(start),
            size: end.saturating_sub(start),
        }
    }

    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.base.as_u64() + self.size
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Whether `addr` lies inside.
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.base.as_u64() && addr < self.end()
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(&self, other: &Region) -> bool {
        self.base.as_u64() < other.end() && other.base.as_u64() < self.end()
    }

    /// The common part, possibly empty.
    pub fn intersect(&self, other: &Region) -> Region {
        let start = self.base.as_u64().max(other.base.as_u64());
        let end = self.end().min(other.end());
        Region::from_bounds(start, end)
    }

    /// Shrunk to whole pages (RAM: never claim a partial page).
    pub fn page_inward(&self) -> Region {
        let start = self
            .base
            .as_u64()
            .div_ceil(PAGE_SIZE)
            .saturating_mul(PAGE_SIZE);
        let end = self.end() / PAGE_SIZE * PAGE_SIZE;
        Region::from_bounds(start, end)
    }

    /// Grown to whole pages (reservations: never hand out a page that holds reserved bytes).
    /// The last partial page of the address space cannot be represented and is dropped.
    pub fn page_outward(&self) -> Region {
        let start = self.base.as_u64() / PAGE_SIZE * PAGE_SIZE;
        let end = self
            .end()
            .checked_next_multiple_of(PAGE_SIZE)
            .unwrap_or(u64::MAX / PAGE_SIZE * PAGE_SIZE);
        Region::from_bounds(start, end)
    }

    /// Number of whole pages.
    pub const fn pages(&self) -> u64 {
        self.size / PAGE_SIZE
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}..{:#x})", self.base.as_u64(), self.end())
    }
}

/// The set is full: more disjoint ranges than its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityExceeded {
    /// The capacity that was exceeded.
    pub capacity: usize,
}

impl fmt::Display for CapacityExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {} separate ranges", self.capacity)
    }
}

/// A set of disjoint, non-adjacent, sorted ranges with room for `N` of them.
#[derive(Clone)]
pub struct RegionSet<const N: usize> {
    ranges: [Region; N],
    len: usize,
}

impl<const N: usize> Default for RegionSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for RegionSet<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<const N: usize> PartialEq for RegionSet<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> RegionSet<N> {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            ranges: [Region {
                base: PhysAddr::new(0),
                size: 0,
            }; N],
            len: 0,
        }
    }

    /// The ranges, sorted by address.
    pub fn as_slice(&self) -> &[Region] {
        &self.ranges[..self.len]
    }

    /// Iterates over the ranges in address order.
    pub fn iter(&self) -> core::slice::Iter<'_, Region> {
        self.as_slice().iter()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.iter().map(|r| r.size).sum()
    }

    /// Whether `addr` is covered.
    pub fn contains(&self, addr: u64) -> bool {
        // Last range starting at or before addr.
        let i = self.as_slice().partition_point(|r| r.base.as_u64() <= addr);
        i > 0 && self.ranges[i - 1].contains(addr)
    }

    /// Whether any byte of `r` is covered.
    pub fn overlaps(&self, r: &Region) -> bool {
        self.iter().any(|x| x.overlaps(r))
    }

    /// Adds a range, merging with overlapping or adjacent ones. On `Err` the set is unchanged.
    pub fn insert(&mut self, r: Region) -> Result<(), CapacityExceeded> {
        if r.is_empty() {
            return Ok(());
        }
        let (mut start, mut end) = (r.base.as_u64(), r.end());
        // Ranges [first, last) touch or overlap r.
        let first = self.as_slice().partition_point(|x| x.end() < start);
        let last = self.as_slice().partition_point(|x| x.base.as_u64() <= end);
        if first < last {
            start = start.min(self.ranges[first].base.as_u64());
            end = end.max(self.ranges[last - 1].end());
        }
        let merged = Region::from_bounds(start, end);
        let removed = last - first;
        if removed == 0 && self.len == N {
            return Err(CapacityExceeded { capacity: N });
        }
        // Replace ranges[first..last] by the merged range.
        let new_len = self.len - removed + 1;
        if removed == 0 {
            self.ranges.copy_within(first..self.len, first + 1);
        } else {
            self.ranges.copy_within(last..self.len, first + 1);
        }
        self.ranges[first] = merged;
        self.len = new_len;
        Ok(())
    }

    /// Removes every byte of `r`. Splitting a range needs one more slot; on `Err` the set is
    /// unchanged.
    pub fn remove(&mut self, r: Region) -> Result<(), CapacityExceeded> {
        if r.is_empty() {
            return Ok(());
        }
        let (start, end) = (r.base.as_u64(), r.end());
        let mut out = Self::new();
        for x in self.iter() {
            let left = Region::from_bounds(x.base.as_u64(), x.end().min(start));
            let right = Region::from_bounds(x.base.as_u64().max(end), x.end());
            for piece in [left, right] {
                if !piece.is_empty() {
                    if out.len == N {
                        return Err(CapacityExceeded { capacity: N });
                    }
                    out.ranges[out.len] = piece;
                    out.len += 1;
                }
            }
        }
        *self = out;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    fn r(a: u64, b: u64) -> Region {
        Region::from_bounds(a, b)
    }

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut s = RegionSet::<8>::new();
        s.insert(r(10, 20)).unwrap();
        s.insert(r(30, 40)).unwrap();
        s.insert(r(20, 30)).unwrap(); // adjacent on both sides
        assert_eq!(s.as_slice(), [r(10, 40)]);
        s.remove(r(15, 25)).unwrap();
        assert_eq!(s.as_slice(), [r(10, 15), r(25, 40)]);
        assert!(s.contains(10) && !s.contains(15) && s.contains(39) && !s.contains(40));
        s.remove(r(0, 100)).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn capacity_errors_leave_set_unchanged() {
        let mut s = RegionSet::<2>::new();
        s.insert(r(0, 10)).unwrap();
        s.insert(r(20, 30)).unwrap();
        let before = s.clone();
        assert_eq!(s.insert(r(40, 50)), Err(CapacityExceeded { capacity: 2 }));
        assert_eq!(s.remove(r(2, 4)), Err(CapacityExceeded { capacity: 2 }));
        assert_eq!(s, before);
    }

    #[test]
    fn page_rounding_and_top_of_address_space() {
        assert_eq!(r(0x1001, 0x3fff).page_inward(), r(0x2000, 0x3000));
        assert_eq!(r(0x1001, 0x3fff).page_outward(), r(0x1000, 0x4000));
        assert!(r(0x1001, 0x1fff).page_inward().is_empty());
        let top = Region::new(PhysAddr::new(u64::MAX - 0x1800), 0x10000);
        assert_eq!(top.end(), u64::MAX);
        assert_eq!(top.page_outward().end(), u64::MAX / PAGE_SIZE * PAGE_SIZE);
    }

    /// Model: a set of "pages" (units of 1) in a small universe.
    fn model(s: &RegionSet<64>) -> BTreeSet<u64> {
        s.iter().flat_map(|x| x.base.as_u64()..x.end()).collect()
    }

    proptest! {
        #[test]
        fn matches_model(ops in prop::collection::vec((any::<bool>(), 0u64..200, 0u64..40), 0..60)) {
            let mut s = RegionSet::<64>::new();
            let mut m = BTreeSet::new();
            for (add, start, len) in ops {
                let reg = r(start, start + len);
                if add {
                    if s.insert(reg).is_ok() { m.extend(start..start + len); }
                } else if s.remove(reg).is_ok() {
                    for p in start..start + len { m.remove(&p); }
                }
                prop_assert_eq!(model(&s), m.clone());
                // Sorted, disjoint, non-adjacent, non-empty.
                let v: Vec<_> = s.iter().copied().collect();
                for w in v.windows(2) { prop_assert!(w[0].end() < w[1].base.as_u64()); }
                prop_assert!(v.iter().all(|x| !x.is_empty()));
            }
        }
    }
}
