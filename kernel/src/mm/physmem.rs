//! What physical memory there is and how the kernel reaches it: the memory map (RAM, reserved
//! regions, what is usable), where the mem_map lies, and the linear map of RAM. The bottom of
//! the memory manager: every layer above reads these, and `memory::init` fills them once at
//! boot.

use levitate_hal::layout;
use levitate_hal::sync::{IrqSafeMutex, IrqSafeMutexGuard};
use levitate_mm::addr::PhysAddr;
use levitate_mm::mem_map::Placement;
use levitate_mm::memmap::{self, MemoryMap};
use levitate_mm::region::RegionSet;
use spin::Once;

/// The memory map. A static, not a local: it is about 20 KiB and boot runs on a 64 KiB stack.
/// The lock protects the map's region lists. Only boot and shell commands take it, and they
/// take no other lock under it but the console (printing `memmap`) and the heap; no interrupt
/// handler reads the map. It is still an `IrqSafeMutex` (IRQ+FIQ masked while held), so a
/// future handler that looks at the map cannot deadlock on it; other CPUs wait.
static MAP: IrqSafeMutex<MemoryMap<'static>> = IrqSafeMutex::new(MemoryMap::new());

/// Where the mem_map is and how frames index it (the array itself belongs to the buddy).
static MEM_MAP: Once<Placement> = Once::new();

/// The memory map, for reading.
pub fn map() -> IrqSafeMutexGuard<'static, MemoryMap<'static>> {
    MAP.lock()
}

/// The mem_map's placement, once `memory::init` placed it.
pub fn mem_map() -> Option<&'static Placement> {
    MEM_MAP.get()
}

/// RAM minus `no-map` regions, page aligned: what the linear map covers. No-map pages must
/// never be touched, not even by speculation through a cacheable mapping.
pub fn linear_ranges(
    map: &MemoryMap<'_>,
) -> Result<RegionSet<{ memmap::MAX_USABLE }>, levitate_mm::region::CapacityExceeded> {
    let mut mapped = RegionSet::<{ memmap::MAX_USABLE }>::new();
    for r in map.memory() {
        mapped.insert(*r)?;
    }
    for r in map.reserved().iter().filter(|r| r.no_map) {
        mapped.remove(r.region.page_outward())?;
    }
    Ok(mapped)
}

/// The linear-map address of physical memory that `memory::init` mapped.
pub fn linear(pa: PhysAddr) -> *mut u8 {
    layout::phys_to_linear(pa)
        .expect("linear map invariant: RAM lies below the 128 TiB linear window")
        .as_u64() as *mut u8
}

/// Records where `memory::init` placed the mem_map (once; later calls keep the first).
pub(super) fn set_mem_map(placement: Placement) -> &'static Placement {
    MEM_MAP.call_once(|| placement)
}
