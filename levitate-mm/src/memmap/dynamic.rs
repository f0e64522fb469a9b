//! Placing dynamic `/reserved-memory` regions (`size`, optional `alignment` and `alloc-ranges`,
//! no `reg`), the way Linux does.
//!
//! Linux (`drivers/of/of_reserved_mem.c`, `__reserved_mem_alloc_size`) allocates each dynamic
//! node, in tree order, once every static reservation, the kernel, the initrd and the DTB are
//! already in memblock. With `alloc-ranges` it tries the listed ranges in order and takes the
//! first that has room; without, it allocates anywhere. Each attempt is a memblock allocation,
//! which on arm64 runs top-down: the highest suitable address in the free ranges wins. We do
//! the same over our usable ranges, which are exactly RAM minus everything reserved so far.
//!
//! Differences, all deliberate:
//! * Everything is page granular here, so the base is aligned to at least 4 KiB and the pages
//!   the region touches must be free (Linux's default alignment is `SMP_CACHE_BYTES`).
//! * An `alignment` that is not a power of two is honoured exactly (the base is a multiple of
//!   both it and the page size); Linux's `round_down` assumes a power of two.
//! * memblock never hands out page 0 (its allocator returns 0 for failure); we have no such
//!   sentinel, so a region may land at physical 0 when RAM starts there.
//! * Linux raises the alignment of reusable `shared-dma-pool` (CMA) regions to its pageblock
//!   size; that is a CMA policy, not part of the binding, and we have no CMA.

use super::source::DynamicRequest;
use crate::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use crate::region::Region;

/// The alignment a request is placed with: a multiple of both its `alignment` and the page
/// size (their least common multiple). `None` when that does not fit in 64 bits.
pub(super) fn effective_alignment(alignment: u64) -> Option<u64> {
    if alignment <= 1 {
        return Some(PAGE_SIZE);
    }
    // gcd(alignment, 2^12) is the largest power of two dividing both.
    let gcd = 1u64 << alignment.trailing_zeros().min(PAGE_SHIFT);
    (alignment / gcd).checked_mul(PAGE_SIZE)
}

/// The highest place for `request` inside `usable` (sorted, disjoint, page aligned), in the
/// first alloc-range that has room. The region returned has the requested size; the pages it
/// touches all lie in one usable range and inside the alloc-range.
pub(super) fn find_place(usable: &[Region], request: &DynamicRequest<'_>) -> Option<Region> {
    if request.size == 0 {
        return None;
    }
    let align = effective_alignment(request.alignment)?;
    // Whole pages: a partial last page is reserved too, so it must be free.
    let need = request.size.checked_next_multiple_of(PAGE_SIZE)?;
    for window in request.alloc_ranges.iter() {
        for free in usable.iter().rev() {
            // Inward to pages: an alloc-range that ends mid-page must not lend us that page.
            let room = free.intersect(&window).page_inward();
            if room.size < need {
                continue;
            }
            let highest = room.end() - need;
            let base = highest - highest % align;
            if base >= room.base.as_u64() {
                return Some(Region::new(PhysAddr::new(base), request.size));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memmap::source::AllocRanges;

    fn r(a: u64, b: u64) -> Region {
        Region::from_bounds(a, b)
    }

    #[test]
    fn alignment_is_a_common_multiple_of_the_page() {
        assert_eq!(effective_alignment(0), Some(PAGE_SIZE));
        assert_eq!(effective_alignment(1), Some(PAGE_SIZE));
        assert_eq!(effective_alignment(64), Some(PAGE_SIZE));
        assert_eq!(effective_alignment(0x40_0000), Some(0x40_0000));
        assert_eq!(effective_alignment(0x3000), Some(0x3000));
        assert_eq!(effective_alignment(3), Some(3 * PAGE_SIZE));
        assert_eq!(effective_alignment(u64::MAX), None);
        assert_eq!(effective_alignment(1 << 63), Some(1 << 63));
    }

    #[test]
    fn top_down_in_first_fitting_alloc_range() {
        let usable = [r(0x1000, 0x10_0000), r(0x20_0000, 0x40_0000)];
        let mut req = DynamicRequest::new("x", 0x1_0000);
        assert_eq!(find_place(&usable, &req), Some(r(0x3f_0000, 0x40_0000)));
        req.alignment = 0x10_0000;
        assert_eq!(find_place(&usable, &req), Some(r(0x30_0000, 0x31_0000)));
        // First range too small, second fits: the second is used, top-down inside it.
        let windows = [r(0x20_0000, 0x20_8000), r(0, 0x8_0000)];
        req.alloc_ranges = AllocRanges::Listed(&windows);
        req.alignment = 0;
        assert_eq!(find_place(&usable, &req), Some(r(0x7_0000, 0x8_0000)));
        // A partial last page needs the whole page free.
        let req = DynamicRequest::new("y", 0x1001);
        assert_eq!(find_place(&[r(0, 0x2000)], &req), Some(r(0, 0x1001)));
        assert_eq!(find_place(&[r(0, 0x1000)], &req), None);
        // Alloc-range ending mid-page: the page is not lent.
        let windows = [r(0, 0x2fff)];
        let mut req = DynamicRequest::new("z", 0x1000);
        req.alloc_ranges = AllocRanges::Listed(&windows);
        assert_eq!(find_place(&[r(0, 0x10000)], &req), Some(r(0x1000, 0x2000)));
    }
}
