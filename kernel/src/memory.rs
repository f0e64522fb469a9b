//! Physical memory at boot: the memory map from the device tree, the linear map of RAM, and
//! the mem_map. Everything here runs once, on the boot CPU, before any frame allocator.

use crate::devicetree::DeviceTree;
use core::fmt;
use levitate_hal::arch::aarch64::mmu::{early, Attributes, MapError};
use levitate_hal::layout;
use levitate_mm::addr::PhysAddr;
use levitate_mm::mem_map::{self, Page, Placement};
use levitate_mm::memmap::{self, KnownRegions, MemMapError, MemoryMap, Source};
use levitate_mm::region::{Region, RegionSet};
use levitate_mm::report::Span;
use spin::{Mutex, Once};

/// Why memory could not be set up.
#[derive(Debug)]
pub enum MemoryError {
    /// The device tree's memory description is unusable.
    Map(MemMapError),
    /// The mem_map could not be laid out or placed.
    MemMap(mem_map::MemMapError),
    /// Building the linear map failed.
    Linear(Region, MapError),
    /// A range set overflowed.
    TooManyRanges,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(e) => write!(f, "{e}"),
            Self::MemMap(e) => write!(f, "{e}"),
            Self::Linear(r, e) => write!(f, "cannot map RAM {r:?} into the linear map: {e}"),
            Self::TooManyRanges => write!(f, "too many separate RAM ranges to map"),
        }
    }
}

/// The memory map. A static, not a local: it is about 20 KiB and boot runs on a 64 KiB stack.
/// Only boot and shell commands (one CPU, interrupts masked) take the lock.
static MAP: Mutex<MemoryMap<'static>> = Mutex::new(MemoryMap::new());

/// The mem_map: where it is and the array itself.
pub struct MemMap {
    /// Its place and index layout.
    pub placement: Placement,
    /// One entry per usable frame, in the linear map. The buddy allocator (next) links its
    /// free lists through these; today only tests read them.
    #[allow(dead_code)]
    pub pages: Mutex<&'static mut [Page]>,
}

static MEM_MAP: Once<MemMap> = Once::new();

/// The memory map, for reading.
pub fn map() -> spin::MutexGuard<'static, MemoryMap<'static>> {
    MAP.lock()
}

/// The mem_map, once `init` placed it.
pub fn mem_map() -> Option<&'static MemMap> {
    MEM_MAP.get()
}

/// The linear-map address of physical memory that `init` mapped.
pub fn linear(pa: PhysAddr) -> *mut u8 {
    layout::phys_to_linear(pa)
        .expect("linear map invariant: RAM lies below the 128 TiB linear window")
        .as_u64() as *mut u8
}

/// Builds the memory map, maps RAM (except no-map regions) into the linear map, and places and
/// initialises the mem_map.
pub fn init(dt: &DeviceTree, image: Region) -> Result<(), MemoryError> {
    let fdt = crate::devicetree::fdt();
    let mut map = MAP.lock();
    let known = KnownRegions {
        dtb: Some(Region::new(dt.phys, dt.original_size as u64)),
        kernel: Some(image),
    };
    map.load_fdt(&fdt, &known).map_err(MemoryError::Map)?;

    // Linear map: all RAM but no-map regions, whose pages must never be touched, not even by
    // speculation through a cacheable mapping.
    let mut mapped = RegionSet::<{ memmap::MAX_USABLE }>::new();
    for r in map.memory() {
        mapped.insert(*r).map_err(|_| MemoryError::TooManyRanges)?;
    }
    for r in map.reserved().iter().filter(|r| r.no_map) {
        mapped
            .remove(r.region.page_outward())
            .map_err(|_| MemoryError::TooManyRanges)?;
    }
    for r in mapped.iter() {
        early::map_linear(r.base, r.size, Attributes::KERNEL_DATA)
            .map_err(|e| MemoryError::Linear(*r, e))?;
    }

    let placement = mem_map::place(&mut map).map_err(MemoryError::MemMap)?;
    if let Err(e) = map.validate() {
        panic!("memory map invariant broken after placing the mem_map: {e}");
    }
    let frames = placement.layout.frames() as usize;
    // SAFETY: the mem_map's frames were just reserved for it alone (so nothing else uses
    // them), they are RAM outside every no-map region and so lie in the linear map mapped
    // above, and `Page` is plain data valid for any bit pattern we write below.
    let pages = unsafe {
        core::slice::from_raw_parts_mut(linear(placement.region.base).cast::<Page>(), frames)
    };
    pages.fill(Page::EMPTY);
    log_map(&map);
    log::info!(
        "mem_map: {} for {} frames at {} ({} sections); early page tables {}/{} used",
        Span(placement.region),
        frames,
        placement.region.base,
        placement.layout.sections().len(),
        early::pool_usage().0,
        early::pool_usage().1,
    );
    MEM_MAP.call_once(|| MemMap {
        placement,
        pages: Mutex::new(pages),
    });
    Ok(())
}

fn log_map(map: &MemoryMap<'_>) {
    for r in map.memory() {
        log::info!("RAM      {}", Span(*r));
    }
    for r in map.reserved().iter().filter(|r| r.source != Source::MemMap) {
        log::info!(
            "reserved {}  {} {}{}{}",
            Span(r.region),
            r.source,
            r.name,
            if r.no_map { " [no-map]" } else { "" },
            if r.reusable { " [reusable]" } else { "" }
        );
    }
    for r in map.usable() {
        log::info!("usable   {}", Span(*r));
    }
    for w in map.warnings() {
        log::warn!("memory map: {w}");
    }
    if map.dropped_warnings() > 0 {
        log::warn!(
            "memory map: {} more warnings not kept",
            map.dropped_warnings()
        );
    }
}

levitate_hal::ktest!(
    fn live_map_is_consistent() -> KtestResult {
        let map = map();
        levitate_hal::kassert!(map.validate().is_ok(), "validate() failed on the live map");
        let has = |s: Source| map.reserved().iter().any(|r| r.source == s);
        levitate_hal::kassert!(has(Source::Kernel), "kernel image not reserved");
        levitate_hal::kassert!(has(Source::Dtb), "device tree not reserved");
        levitate_hal::kassert!(has(Source::MemMap), "mem_map not reserved");
        levitate_hal::kassert!(map.warnings().is_empty(), "QEMU's tree gave warnings");
        // The kernel image lies inside its reservation.
        let here = live_map_is_consistent as *const () as u64 - layout::KIMAGE_VBASE;
        let image = early::image_phys().unwrap().as_u64() + here;
        levitate_hal::kassert!(
            map.reserved()
                .iter()
                .any(|r| r.source == Source::Kernel && r.region.contains(image)),
            "running code is not inside the kernel reservation"
        );
        levitate_hal::kassert!(!map.usable().iter().any(|u| u.contains(image)));
        Ok(())
    }
);

levitate_hal::ktest!(
    fn mem_map_covers_every_usable_frame() -> KtestResult {
        let mm = mem_map().unwrap();
        let map = map();
        let usable_frames: u64 = map.usable().iter().map(|r| r.pages()).sum();
        let layout = &mm.placement.layout;
        levitate_hal::kassert_eq!(layout.frames(), usable_frames);
        levitate_hal::kassert!(layout.bytes() <= mm.placement.region.size);
        for r in map.usable() {
            for addr in [r.base.as_u64(), r.end() - 4096] {
                let pfn = PhysAddr::new(addr).pfn();
                let index = layout.index_of(pfn);
                levitate_hal::kassert!(index.is_some(), "usable frame missing from the mem_map");
                levitate_hal::kassert_eq!(layout.pfn_of(index.unwrap()), Some(pfn));
            }
        }
        levitate_hal::kassert_eq!(layout.index_of(mm.placement.region.base.pfn()), None);
        let pages = mm.pages.lock();
        levitate_hal::kassert_eq!(pages.len() as u64, layout.frames());
        levitate_hal::kassert!(pages.iter().all(|p| *p == Page::EMPTY));
        Ok(())
    }
);

levitate_hal::ktest!(
    fn usable_ram_is_mapped_and_writable() -> KtestResult {
        let map = map();
        for r in map.usable() {
            for addr in [r.base.as_u64(), r.end() - 8] {
                let p = linear(PhysAddr::new(addr)).cast::<u64>();
                // SAFETY: usable RAM nobody has allocated yet (no frame allocator exists), in
                // the linear map; the old value is restored.
                unsafe {
                    let old = p.read_volatile();
                    p.write_volatile(0x5a5a_a5a5_1234_5678);
                    let back = p.read_volatile();
                    p.write_volatile(old);
                    levitate_hal::kassert_eq!(back, 0x5a5a_a5a5_1234_5678);
                }
            }
        }
        Ok(())
    }
);
