//! Physical memory at boot: the memory map from the device tree, the linear map of RAM, and
//! the mem_map. Everything here runs once, on the boot CPU, before any frame allocator.

use super::physmem::{linear, linear_ranges};
use super::{frames, heap, paging, physmem, pressure};
use crate::boottime::{self, Phase};
use crate::devicetree::DeviceTree;
use core::fmt;
use levitate_hal::arch::aarch64::mmu::table;
use levitate_hal::arch::aarch64::mmu::tlb::KernelTlb;
use levitate_hal::arch::aarch64::mmu::{early, Attributes, MapError};
use levitate_hal::layout;
use levitate_hal::VirtAddr;
use levitate_mm::addr::PhysAddr;
use levitate_mm::addr::PAGE_SIZE;
use levitate_mm::buddy::{Owner, Request, MAX_ORDER};
use levitate_mm::mem_map::{self, Page};
use levitate_mm::memmap::{
    Addressable, BuildOptions, KnownRegions, MemMapError, MemoryMap, Source,
};
use levitate_mm::region::Region;
use levitate_mm::report::Span;

/// Why memory could not be set up.
#[derive(Debug)]
pub enum MemoryError {
    /// The device tree's memory description is unusable.
    Map(MemMapError),
    /// The mem_map could not be laid out or placed.
    MemMap(mem_map::MemMapError),
    /// Building the linear map failed.
    Linear(Region, MapError),
    /// A range to reach through the linear map ends past its window (the memory map keeps RAM
    /// inside, so this is a broken invariant, reported rather than mapped over the heap).
    OutsideLinearMap(Region),
    /// A range set overflowed.
    TooManyRanges,
    /// The frame allocator could not be built.
    Frames(frames::InitError),
    /// The final page tables could not be built.
    Paging(super::paging::PagingError),
    /// The kernel image (BSS included) does not lie inside the RAM the tree describes.
    ImageOutsideRam(Region),
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(e) => write!(f, "{e}"),
            Self::MemMap(e) => write!(f, "{e}"),
            Self::Linear(r, e) => write!(f, "cannot map RAM {r:?} into the linear map: {e}"),
            Self::OutsideLinearMap(r) => write!(
                f,
                "RAM {r:?} ends past the linear map's {} window",
                levitate_mm::report::Size(layout::LINEAR_SIZE)
            ),
            Self::TooManyRanges => write!(f, "too many separate RAM ranges to map"),
            Self::Frames(e) => write!(f, "{e}"),
            Self::Paging(e) => write!(f, "{e}"),
            Self::ImageOutsideRam(r) => write!(
                f,
                "the kernel image {} ({} with BSS) does not lie inside the RAM the device \
                 tree describes: the bootloader placed it wrongly or the tree is wrong",
                Span(*r),
                levitate_mm::report::Size(r.size)
            ),
        }
    }
}

/// The linear-map address of `region`, checked at both ends: a range whose start is in the
/// window may still run out of it (into the heap's addresses).
fn linear_range(region: Region) -> Result<*mut u8, MemoryError> {
    if region.end() > layout::LINEAR_SIZE {
        return Err(MemoryError::OutsideLinearMap(region));
    }
    Ok(linear(region.base))
}

// `cargo xtask memmap` models the same window (xtask/src/memmap.rs, LINEAR_END); change both.
const _: () = assert!(layout::LINEAR_SIZE == 1 << 47);

/// Where RAM may lie on this CPU: below its physical address range and inside the linear map.
///
/// ID_AA64MMFR0_EL1.PARange (ARM ARM D19.2) gives the physical address size; boot.S programs
/// TCR_EL1.IPS from it capped at 48 bits (4 KiB-granule descriptors without FEAT_LPA2 hold a
/// 48-bit output address), so the kernel can address at most 48 bits whatever the CPU has.
/// A frame above the limit would be mapped with an output address the walk rejects (an
/// address size fault, D8.3) the first time it is touched.
fn addressable() -> Addressable {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
    let parange = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) as u8;
    // Reserved encodings are newer, larger sizes; the cap applies to them as well.
    let cpu_bits = Addressable::pa_bits_from_parange(parange);
    let addressable = Addressable {
        pa_bits: cpu_bits.unwrap_or(48).min(48),
        linear_end: layout::LINEAR_SIZE,
    };
    log::info!(
        "memory: CPU physical addresses {} bits (ID_AA64MMFR0_EL1.PARange = {parange}), {} used; \
         RAM must lie below {:#x}",
        cpu_bits.map_or(">52".into(), |b| alloc::format!("{b}")),
        addressable.pa_bits,
        addressable.limit().map_or(u64::MAX, |l| l.end())
    );
    addressable
}

/// Builds the memory map, maps RAM (except no-map regions) into the linear map, places the
/// mem_map, starts the buddy allocator over it, switches to the final page tables and lets the
/// heap grow.
pub fn init(dt: &DeviceTree, image: Region, poison: bool) -> Result<(), MemoryError> {
    let fdt = crate::devicetree::fdt();
    let mut map = physmem::map();
    let known = KnownRegions {
        dtb: Some(Region::new(dt.phys, dt.original_size as u64)),
        kernel: Some(image),
    };
    let options = BuildOptions {
        addressable: addressable(),
        ram: None,
    };
    map.load_fdt_with(&fdt, &known, &options)
        .map_err(MemoryError::Map)?;
    // Memory the tree does not call RAM may be a device or nothing at all: the image's
    // data and stacks there cannot be trusted (booting.rst: the image must lie in usable
    // RAM). Banks are disjoint, so the image is inside RAM exactly when its overlaps with
    // them add up to its whole size.
    let inside: u64 = map.memory().iter().map(|r| r.intersect(&image).size).sum();
    if inside != image.size {
        return Err(MemoryError::ImageOutsideRam(image));
    }
    boottime::mark(Phase::MemoryMap);

    // The boot tables get the linear map first: the mem_map and the buddy's frames (page
    // tables among them) are reached through it before the final tables exist.
    let mapped = linear_ranges(&map).map_err(|_| MemoryError::TooManyRanges)?;
    for r in mapped.iter() {
        // early::map_linear checks only where a range starts; the end decides too.
        linear_range(*r)?;
        early::map_linear(r.base, r.size, Attributes::KERNEL_DATA)
            .map_err(|e| MemoryError::Linear(*r, e))?;
    }

    let placement = mem_map::place(&mut map).map_err(MemoryError::MemMap)?;
    if let Err(e) = map.validate() {
        panic!("memory map invariant broken after placing the mem_map: {e}");
    }
    let frames = placement.layout.frames() as usize;
    let pages_at = linear_range(placement.region)?;
    // SAFETY: the mem_map's frames were just reserved for it alone (so nothing else uses
    // them), they are RAM outside every no-map region and so lie in the linear map mapped
    // above (both ends checked by linear_range), and `Page` is atomic integers (the layout and
    // validity of plain integers), valid for any bit pattern (Buddy::new resets every entry
    // before reading one). Shared from here on: the buddy and the per-CPU caches' state bytes
    // both live in it, each field an atomic.
    let pages = unsafe { core::slice::from_raw_parts(pages_at.cast::<Page>(), frames) };
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
    let placement = physmem::set_mem_map(placement);
    boottime::mark(Phase::MemMap);
    // The watermarks and reclaim listen from the first frame operation on.
    pressure::init();
    frames::init(pages, &placement.layout, map.memory(), poison).map_err(MemoryError::Frames)?;
    boottime::mark(Phase::Buddy);
    paging::init(&map).map_err(MemoryError::Paging)?;
    boottime::mark(Phase::Paging);
    let usable: u64 = map.usable().iter().map(|r| r.size).sum();
    let limit = levitate_mm::slab::segments::limit_for(usable);
    heap::enable_growth(
        layout::HEAP_BASE as usize,
        layout::HEAP_SIZE as usize,
        limit as usize,
        grow_heap,
        |at, bytes| try_release_heap_range(at as u64, bytes as u64),
    );
    boottime::mark(Phase::Heap);
    log::info!(
        "frames: buddy over {} frames{}; final page tables live ({} table frames); heap may grow to {}",
        frames,
        if poison { ", poisoning freed frames" } else { "" },
        paging::table_frames(),
        levitate_mm::report::Size(limit)
    );
    Ok(())
}

/// Maps `bytes` of fresh frames at `at` for the heap: the largest blocks that fit, so a big
/// growth costs few allocations. On failure everything mapped so far is given back.
fn grow_heap(at: usize, bytes: usize) -> bool {
    let (start, bytes) = (at as u64, bytes as u64);
    let mut done = 0;
    while done < bytes {
        let left = (bytes - done) / PAGE_SIZE;
        // Largest order that fits what is left and keeps the VA aligned like the block.
        let mut order = (63 - left.leading_zeros()).min(u32::from(MAX_ORDER)) as u8;
        while order > 0 && (start + done) % (PAGE_SIZE << order) != 0 {
            order -= 1;
        }
        let block = loop {
            match frames::alloc(Request::new(order, Owner::Heap)) {
                Ok(b) => break Some(b),
                Err(_) if order > 0 => order -= 1,
                Err(_) => break None,
            }
        };
        let mapped = block.and_then(|b| {
            let (pa, size) = (b.addr, b.bytes());
            match paging::map(
                VirtAddr::new(start + done),
                pa,
                size,
                Attributes::KERNEL_DATA,
            ) {
                // The heap owns the frames now; `release_heap_range` frees them by address.
                Ok(()) => Some(size),
                Err(e) => {
                    log::error!(
                        "heap: cannot map {size:#x} bytes at {:#x}: {e}",
                        start + done
                    );
                    let _ = frames::free(b);
                    None
                }
            }
        });
        match mapped {
            Some(size) => done += size,
            None => {
                release_heap_range(start, done);
                return false;
            }
        }
    }
    true
}

/// Unmaps `[start, start + bytes)` of the heap region and frees its frames, waiting for the
/// page tables (heap growth rolling back).
fn release_heap_range(start: u64, bytes: u64) {
    paging::with_tables(|t, root| release_locked(t, root, start, bytes));
}

/// Unmaps and frees a wholly free heap segment for reclaim; false, with nothing done, when the
/// page tables are busy (the reclaim may run inside a page-table edit's frame allocation).
fn try_release_heap_range(start: u64, bytes: u64) -> bool {
    paging::try_with_tables(|t, root| release_locked(t, root, start, bytes)).is_some()
}

/// The release itself, with the tables held: each mapped block is unmapped, then its frames
/// freed (tables, then frames: the lock order).
fn release_locked(t: &mut paging::BuddyTables, root: PhysAddr, start: u64, bytes: u64) {
    let mut at = start;
    while at < start + bytes {
        let Some(tr) = table::translate(t, root, VirtAddr::new(at)) else {
            at += PAGE_SIZE;
            continue;
        };
        let Some((_, order, block_start)) = frames::with(|b| b.owner_of(tr.pa)) else {
            at += PAGE_SIZE;
            continue;
        };
        let size = PAGE_SIZE << order;
        if table::unmap(t, root, VirtAddr::new(at), size, &mut KernelTlb).is_ok() {
            let _ = frames::free_raw(block_start, order);
        }
        at += size;
    }
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
        let map = physmem::map();
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
        let placement = physmem::mem_map().unwrap();
        let map = physmem::map();
        let usable_frames: u64 = map.usable().iter().map(|r| r.pages()).sum();
        let layout = &placement.layout;
        levitate_hal::kassert_eq!(layout.frames(), usable_frames);
        levitate_hal::kassert!(layout.bytes() <= placement.region.size);
        for r in map.usable() {
            for addr in [r.base.as_u64(), r.end() - 4096] {
                let pfn = PhysAddr::new(addr).pfn();
                let index = layout.index_of(pfn);
                levitate_hal::kassert!(index.is_some(), "usable frame missing from the mem_map");
                levitate_hal::kassert_eq!(layout.pfn_of(index.unwrap()), Some(pfn));
            }
        }
        levitate_hal::kassert_eq!(layout.index_of(placement.region.base.pfn()), None);
        // Every usable frame is the buddy's: free or allocated.
        let stats = frames::stats().unwrap();
        levitate_hal::kassert_eq!(stats.free_frames + stats.allocated_frames(), usable_frames);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn usable_ram_is_mapped_and_writable() -> KtestResult {
        // The first and last frame of every usable range is in the linear map, read-write
        // (checked through the live tables), and a frame the buddy hands out can be written.
        let map = physmem::map();
        for r in map.usable() {
            for addr in [r.base.as_u64(), r.end() - 4096] {
                let va = layout::phys_to_linear(PhysAddr::new(addr)).unwrap();
                let t = paging::translate(va);
                levitate_hal::kassert!(t.is_some_and(|t| t.pa.as_u64() == addr
                    && t.attrs.writable
                    && !t.attrs.executable));
            }
        }
        drop(map);
        let block = frames::alloc(Request::new(0, Owner::Test)).unwrap();
        let p = linear(block.addr).cast::<u64>();
        // SAFETY: a frame just allocated for this test, mapped in the linear map.
        let back = unsafe {
            p.write_volatile(0x5a5a_a5a5_1234_5678);
            p.read_volatile()
        };
        levitate_hal::kassert_eq!(back, 0x5a5a_a5a5_1234_5678);
        levitate_hal::kassert!(frames::free(block).is_ok());
        Ok(())
    }
);
