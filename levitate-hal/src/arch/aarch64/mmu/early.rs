//! The early mapper: adds mappings to the boot tables (built by boot.S) before any frame
//! allocator exists, taking new tables from a small static pool inside the image. It maps the
//! device tree into the linear window and MMIO into the MMIO window (`ioremap`). The memory
//! issues replace these tables with ones built from the buddy allocator.

use super::descriptor::Attributes;
use super::table::{self, MapError, TableAccess, ENTRIES};
use crate::layout::{self, BOOT_WINDOW_BASE, BOOT_WINDOW_SIZE, KIMAGE_VBASE, MMIO_BASE, MMIO_SIZE};
use aarch64_cpu::registers::TTBR1_EL1;
use core::cell::UnsafeCell;
use levitate_mm::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use spin::Mutex;

/// Tables in the static pool (512 KiB): the DTB (up to 2 MiB in pages), MMIO windows, and the
/// linear map of RAM, where every range edge that is not 2 MiB aligned (around no-map
/// regions, say) costs a page table. The buddy issue replaces this pool.
const POOL_TABLES: usize = 128;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u64; ENTRIES]; POOL_TABLES]>);

// SAFETY: the pool is only reached through `EarlyMapper`, which lives inside `MAPPER`'s lock,
// so no two CPUs touch it at once.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([[0; ENTRIES]; POOL_TABLES]));

struct EarlyMapper {
    /// Physical address the image was loaded at (boot.S's x20).
    image_phys: u64,
    /// Size of the image including BSS.
    image_size: u64,
    /// Pool tables handed out so far.
    used: usize,
    /// Next free address in the MMIO window.
    mmio_next: u64,
    /// Next free address in the boot window.
    boot_next: u64,
    /// The MMIO windows mapped so far, for the final tables to map again.
    mmio: [Option<WindowMapping>; MAX_MMIO_WINDOWS],
}

/// Most MMIO windows the early mapper records.
const MAX_MMIO_WINDOWS: usize = 16;

/// One device window mapped by `ioremap`: the final page tables must map it again at the same
/// address, since drivers keep using it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowMapping {
    /// Virtual start (page aligned).
    pub va: VirtAddr,
    /// Physical start (page aligned).
    pub pa: PhysAddr,
    /// Length in bytes (whole pages).
    pub size: u64,
    /// Its attributes.
    pub attrs: Attributes,
}

/// Interrupts are masked during early boot and the lock is held only around table edits, so
/// neither an interrupt handler nor another CPU can deadlock on it.
static MAPPER: Mutex<Option<EarlyMapper>> = Mutex::new(None);

impl EarlyMapper {
    fn image_va(&self, pa: PhysAddr) -> u64 {
        let pa = pa.as_u64();
        assert!(
            pa >= self.image_phys && pa + PAGE_SIZE <= self.image_phys + self.image_size,
            "early mapper invariant: table {pa:#x} lies outside the kernel image"
        );
        pa - self.image_phys + KIMAGE_VBASE
    }

    fn root(&self) -> PhysAddr {
        PhysAddr::new(TTBR1_EL1.get_baddr())
    }
}

impl TableAccess for EarlyMapper {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if self.used == POOL_TABLES {
            return None;
        }
        let base = POOL.0.get() as u64;
        let va = base + self.used as u64 * PAGE_SIZE;
        self.used += 1;
        // The pool sits in BSS, zeroed at boot, and each table is handed out once.
        Some(PhysAddr::new(va - KIMAGE_VBASE + self.image_phys))
    }

    /// The pool is a bump allocator: a freed table is leaked (it stays inside the image). The
    /// early mapper never unmaps, so only later page-table code on these tables can free one.
    fn free_table(&mut self, _pa: PhysAddr) {}

    fn table(&mut self, pa: PhysAddr) -> &mut [u64; ENTRIES] {
        let va = self.image_va(pa);
        // SAFETY: `va` is a page-aligned table inside the mapped kernel image (checked above):
        // one of boot.S's tables or a pool table. `&mut self` is only reachable under
        // `MAPPER`'s lock, so this is the only reference to it.
        unsafe { &mut *(va as *mut [u64; ENTRIES]) }
    }

    fn publish(&mut self) {
        super::tlb::publish_table_stores();
    }
}

/// Size of the kernel image in memory, BSS (boot tables, stack, table pool) included.
pub fn image_size() -> u64 {
    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    // Linker-script symbols: only their addresses are used.
    core::ptr::addr_of!(__image_end) as u64 - core::ptr::addr_of!(__image_start) as u64
}

/// Sets the early mapper up. `image_phys` is where the bootloader put the image.
pub fn init(image_phys: PhysAddr) {
    *MAPPER.lock() = Some(EarlyMapper {
        image_phys: image_phys.as_u64(),
        image_size: image_size(),
        used: 0,
        mmio_next: MMIO_BASE,
        boot_next: BOOT_WINDOW_BASE,
        mmio: [None; MAX_MMIO_WINDOWS],
    });
}

/// Where the image was loaded, once `init` ran.
pub fn image_phys() -> Option<PhysAddr> {
    MAPPER.lock().as_ref().map(|m| PhysAddr::new(m.image_phys))
}

fn publish() {
    // New entries replace invalid ones, which the TLB never caches: a barrier that makes the
    // stores visible to the table walker is enough (ARM ARM D8.14, "break-before-make" is
    // needed only when changing a valid entry).
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb ishst", "isb", options(nostack)) };
}

fn with_mapper<T>(f: impl FnOnce(&mut EarlyMapper) -> Result<T, MapError>) -> Result<T, MapError> {
    let mut guard = MAPPER.lock();
    let mapper = guard
        .as_mut()
        .expect("early mapper invariant: mmu::early::init must run first");
    let result = f(mapper);
    publish();
    result
}

/// `[pa, pa + size)` rounded out to whole pages, as (first page, length).
fn page_span(pa: PhysAddr, size: u64) -> Result<(PhysAddr, u64), MapError> {
    let start = pa.align_down(PAGE_SIZE);
    let end = pa
        .checked_add(size)
        .and_then(|e| e.checked_align_up(PAGE_SIZE))
        .ok_or(MapError::Misaligned {
            va: VirtAddr::new(0),
            pa,
            size,
        })?;
    Ok((start, end - start))
}

/// Maps physical `[pa, pa + size)` into the linear window (rounded out to pages).
pub fn map_linear(pa: PhysAddr, size: u64, attrs: Attributes) -> Result<VirtAddr, MapError> {
    let (start, len) = page_span(pa, size)?;
    // The whole range must fit the window: past its end lie the heap and the stacks.
    let va_start =
        layout::phys_range_to_linear(start, len).ok_or(MapError::PhysOutOfRange(start))?;
    with_mapper(|m| {
        let root = m.root();
        table::map(m, root, va_start, start, len, attrs)
    })?;
    Ok(va_start + (pa - start))
}

/// The bump-allocated virtual windows.
#[derive(Clone, Copy)]
enum Window {
    /// Device registers.
    Mmio,
    /// Read-only views of boot data (the bootloader's device tree).
    Boot,
}

/// Maps `[pa, pa + size)` at the next free address of `window`, leaving an unmapped page after
/// it so an overrun faults, and returns the virtual address of `pa`.
fn map_in_window(
    window: Window,
    pa: PhysAddr,
    size: u64,
    attrs: Attributes,
) -> Result<VirtAddr, MapError> {
    let (start, len) = page_span(pa, size)?;
    with_mapper(|m| {
        let (next, limit) = match window {
            Window::Mmio => (m.mmio_next, MMIO_BASE + MMIO_SIZE),
            Window::Boot => (m.boot_next, BOOT_WINDOW_BASE + BOOT_WINDOW_SIZE),
        };
        if len > limit - next {
            return Err(MapError::WindowFull);
        }
        let record = WindowMapping {
            va: VirtAddr::new(next),
            pa: start,
            size: len,
            attrs,
        };
        let slot = match window {
            Window::Mmio => Some(
                m.mmio
                    .iter()
                    .position(Option::is_none)
                    .ok_or(MapError::WindowFull)?,
            ),
            Window::Boot => None,
        };
        let root = m.root();
        table::map(m, root, VirtAddr::new(next), start, len, attrs)?;
        let after = next + len + PAGE_SIZE;
        match window {
            Window::Mmio => m.mmio_next = after,
            Window::Boot => m.boot_next = after,
        }
        if let Some(i) = slot {
            m.mmio[i] = Some(record);
        }
        Ok(VirtAddr::new(next) + (pa - start))
    })
}

/// Maps physical `[pa, pa + size)` read-only into the boot window (outside the linear map, so
/// the linear map can later cover the same RAM with blocks) and returns the address of `pa`.
pub fn map_boot_window(pa: PhysAddr, size: u64) -> Result<VirtAddr, MapError> {
    map_in_window(Window::Boot, pa, size, Attributes::KERNEL_RO)
}

/// Maps device registers at physical `[pa, pa + size)` into the MMIO window as Device-nGnRE
/// and returns the virtual address of `pa`.
pub fn ioremap(pa: PhysAddr, size: u64) -> Result<VirtAddr, MapError> {
    map_in_window(Window::Mmio, pa, size, Attributes::DEVICE)
}

/// The MMIO windows `ioremap` has mapped.
pub fn windows() -> impl Iterator<Item = WindowMapping> {
    let copy = MAPPER
        .lock()
        .as_ref()
        .map_or([None; MAX_MMIO_WINDOWS], |m| m.mmio);
    copy.into_iter().flatten()
}

/// How many pool tables are in use, and how many exist.
pub fn pool_usage() -> (usize, usize) {
    MAPPER
        .lock()
        .as_ref()
        .map_or((0, POOL_TABLES), |m| (m.used, POOL_TABLES))
}
