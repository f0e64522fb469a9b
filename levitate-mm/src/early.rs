//! The early allocator (after Linux's memblock): hands out physical memory before the buddy
//! allocator exists, for the mem_map and early page tables. Every allocation becomes a
//! reservation in the memory map (source `early`, or the caller's), so nothing it hands out can
//! later be handed out again, and the map shows where it went.
//!
//! Policy: lowest-address first fit, which puts the mem_map in the first usable hole large
//! enough (Linux's memblock defaults to top-down; bottom-up keeps early structures together
//! near the kernel and is what our layout promises).

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::memmap::{MemMapError, MemoryMap, Source};
use crate::region::Region;
use core::fmt;

/// Why an early allocation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EarlyAllocError {
    /// No usable range has `size` bytes at the alignment, below the limit.
    OutOfMemory {
        /// Bytes requested.
        size: u64,
        /// Alignment requested.
        align: u64,
        /// Largest usable range, in bytes.
        largest: u64,
    },
    /// The request itself is malformed (zero size, alignment not a power of two).
    BadRequest {
        /// Bytes requested.
        size: u64,
        /// Alignment requested.
        align: u64,
    },
    /// Recording the reservation failed.
    Map(MemMapError),
}

impl fmt::Display for EarlyAllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory {
                size,
                align,
                largest,
            } => write!(
                f,
                "no usable range holds {size:#x} bytes aligned to {align:#x} (largest free range {largest:#x} bytes)"
            ),
            Self::BadRequest { size, align } => {
                write!(f, "bad early allocation request: size {size:#x}, alignment {align:#x}")
            }
            Self::Map(e) => write!(f, "{e}"),
        }
    }
}

/// Finds the lowest `size` bytes aligned to `align` inside `usable`, below `limit` (exclusive).
pub fn find_first_fit(usable: &[Region], size: u64, align: u64, limit: u64) -> Option<Region> {
    usable.iter().find_map(|r| {
        let start = r.base.as_u64().checked_next_multiple_of(align)?;
        let end = start.checked_add(size)?;
        (end <= r.end() && end <= limit).then(|| Region::new(PhysAddr::new(start), size))
    })
}

/// Allocates `size` bytes (rounded up to pages) aligned to `align` (at least a page) from the
/// map's usable memory below `limit`, and reserves them under `name`/`source`.
pub fn alloc<'a>(
    map: &mut MemoryMap<'a>,
    size: u64,
    align: u64,
    limit: u64,
    name: &'a str,
    source: Source,
) -> Result<Region, EarlyAllocError> {
    if size == 0 || !align.is_power_of_two() {
        return Err(EarlyAllocError::BadRequest { size, align });
    }
    let align = align.max(PAGE_SIZE);
    let size = size
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(EarlyAllocError::BadRequest { size, align })?;
    let Some(region) = find_first_fit(map.usable(), size, align, limit) else {
        let largest = map.usable().iter().map(|r| r.size).max().unwrap_or(0);
        return Err(EarlyAllocError::OutOfMemory {
            size,
            align,
            largest,
        });
    };
    map.reserve(region, name, source)
        .map_err(EarlyAllocError::Map)?;
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u64, b: u64) -> Region {
        Region::from_bounds(a, b)
    }

    #[test]
    fn first_fit_respects_alignment_and_limit() {
        let usable = [r(0x1000, 0x3000), r(0x10_0000, 0x40_0000)];
        assert_eq!(
            find_first_fit(&usable, 0x1000, 0x1000, u64::MAX),
            Some(r(0x1000, 0x2000))
        );
        assert_eq!(
            find_first_fit(&usable, 0x3000, 0x1000, u64::MAX),
            Some(r(0x10_0000, 0x10_3000))
        );
        assert_eq!(
            find_first_fit(&usable, 0x1000, 0x20_0000, u64::MAX),
            Some(r(0x20_0000, 0x20_1000))
        );
        assert_eq!(find_first_fit(&usable, 0x3000, 0x1000, 0x10_2000), None);
        assert_eq!(find_first_fit(&usable, 0x40_0000, 0x1000, u64::MAX), None);
        // Alignment that overflows near the top of the address space is no fit, not a panic.
        let top = [r(u64::MAX - 0x2000, u64::MAX)];
        assert_eq!(find_first_fit(&top, 0x1000, 1 << 63, u64::MAX), None);
    }
}
