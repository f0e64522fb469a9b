//! The kernel's final translation tables, built from buddy frames (no static pool): the image
//! with W^X permissions (text read-only and executable, rodata read-only, data and BSS
//! writable and never executable, stack guard pages left out), a linear map of all RAM except
//! `no-map` regions, and the MMIO windows as Device-nGnRE. Boot switches TTBR1 to them; from
//! then on the heap and stacks map and unmap through here.

use super::frames;
use super::physmem;
use core::fmt;
use levitate_hal::arch::aarch64::cpu;
use levitate_hal::arch::aarch64::mmu::table::{
    self, MapError, TableAccess, Translation, UnmapError, Unmapped, ENTRIES,
};
use levitate_hal::arch::aarch64::mmu::tlb::{self, KernelTlb};
use levitate_hal::arch::aarch64::mmu::walk::{self, Walk};
use levitate_hal::arch::aarch64::mmu::{early, Attributes};
use levitate_hal::layout::{self, KIMAGE_VBASE};
use levitate_hal::sync::IrqSafeMutex;
use levitate_mm::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use levitate_mm::buddy::{Block, Owner, Request};
use levitate_mm::memmap::MemoryMap;
use levitate_mm::region::{Region, RegionSet};

/// Tables whose frames come from the buddy and are reached through the linear map.
pub struct BuddyTables;

impl TableAccess for BuddyTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        // The table owns the frame from here; `free_table` gives it back by address.
        let Block { addr, .. } = frames::alloc(Request::new(0, Owner::PageTable).zeroed()).ok()?;
        Some(addr)
    }

    fn free_table(&mut self, pa: PhysAddr) {
        // A refused free is logged and counted by `frames`; the tables stay consistent.
        let _ = frames::free_raw(pa, 0);
    }

    fn table(&mut self, pa: PhysAddr) -> &mut [u64; ENTRIES] {
        // SAFETY: `pa` is a table frame this access allocated from the buddy (or the root):
        // usable RAM, mapped in the linear map, page aligned, and reached only under
        // `KERNEL`'s lock, so this is the only reference.
        unsafe { &mut *physmem::linear(pa).cast::<[u64; ENTRIES]>() }
    }

    fn publish(&mut self) {
        tlb::publish_table_stores();
    }
}

/// The root of the kernel's tables once they exist; holding the lock is the right to edit
/// the tables (every table frame is reached only under it). Lock order: heap, then this, then
/// frames (table frames come from the frame allocator). IRQ-safe (`IrqSafeMutex`: IRQ+FIQ
/// masked on this CPU while held), because an interrupt handler that allocates may grow the
/// heap, which maps pages: it never finds the lock held by the code it interrupted, and a
/// holder on another CPU finishes without waiting for an interrupt. Reclaim, which runs inside
/// frame operations made under this lock, only try-locks it.
static KERNEL: IrqSafeMutex<Option<PhysAddr>> = IrqSafeMutex::new(None);

/// Why the final tables could not be built.
#[derive(Debug)]
pub enum PagingError {
    /// Mapping a region failed.
    Map(&'static str, MapError),
    /// No frame for the root table.
    NoRoot,
    /// A range set overflowed.
    TooManyRanges,
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(what, e) => write!(f, "mapping {what}: {e}"),
            Self::NoRoot => write!(f, "no frame for the root translation table"),
            Self::TooManyRanges => write!(f, "too many separate ranges to map"),
        }
    }
}

/// Image section boundaries from linker.ld and boot.S.
#[derive(Clone, Copy)]
struct ImageLayout {
    text: (u64, u64),
    rodata: (u64, u64),
    data: (u64, u64),
    guards: [(u64, u64); 2],
}

fn image_layout() -> ImageLayout {
    extern "C" {
        static __image_start: u8;
        static __text_end: u8;
        static __rodata_end: u8;
        static __image_end: u8;
        static __exception_stack_guard: u8;
        static __exception_stack_bottom: u8;
        static __boot_stack_guard: u8;
        static __boot_stack_bottom: u8;
    }
    let a = |p: *const u8| p as u64;
    ImageLayout {
        text: (a(&raw const __image_start), a(&raw const __text_end)),
        rodata: (a(&raw const __text_end), a(&raw const __rodata_end)),
        data: (a(&raw const __rodata_end), a(&raw const __image_end)),
        guards: [
            (
                a(&raw const __exception_stack_guard),
                a(&raw const __exception_stack_bottom),
            ),
            (
                a(&raw const __boot_stack_guard),
                a(&raw const __boot_stack_bottom),
            ),
        ],
    }
}

/// Builds the final tables and switches TTBR1 to them.
pub fn init(map: &MemoryMap<'_>) -> Result<(), PagingError> {
    let image_phys = early::image_phys().expect("boot order invariant: early mapper set up");
    let phys_of = |va: u64| PhysAddr::new(va - KIMAGE_VBASE + image_phys.as_u64());
    let mut access = BuddyTables;
    let root = access.alloc_table().ok_or(PagingError::NoRoot)?;
    let mut map_range =
        |what: &'static str, va: u64, pa: PhysAddr, size: u64, attrs: Attributes| {
            table::map(&mut access, root, VirtAddr::new(va), pa, size, attrs)
                .map_err(|e| PagingError::Map(what, e))
        };

    let img = image_layout();
    map_range(
        "kernel text",
        img.text.0,
        phys_of(img.text.0),
        img.text.1 - img.text.0,
        Attributes::KERNEL_TEXT,
    )?;
    map_range(
        "kernel rodata",
        img.rodata.0,
        phys_of(img.rodata.0),
        img.rodata.1 - img.rodata.0,
        Attributes::KERNEL_RO,
    )?;
    let mut data = RegionSet::<8>::new();
    data.insert(Region::from_bounds(img.data.0, img.data.1))
        .map_err(|_| PagingError::TooManyRanges)?;
    for (start, end) in img.guards {
        data.remove(Region::from_bounds(start, end))
            .map_err(|_| PagingError::TooManyRanges)?;
    }
    for r in data.iter() {
        let va = r.base.as_u64();
        map_range(
            "kernel data",
            va,
            phys_of(va),
            r.size,
            Attributes::KERNEL_DATA,
        )?;
    }

    for r in physmem::linear_ranges(map)
        .map_err(|_| PagingError::TooManyRanges)?
        .iter()
    {
        let va = layout::phys_range_to_linear(r.base, r.size)
            .expect("memory map invariant: RAM was clipped to the linear window");
        map_range(
            "the linear map",
            va.as_u64(),
            r.base,
            r.size,
            Attributes::KERNEL_DATA,
        )?;
    }
    for w in early::windows() {
        map_range("an MMIO window", w.va.as_u64(), w.pa, w.size, w.attrs)?;
    }

    switch_ttbr1(root, image_phys);
    *KERNEL.lock() = Some(root);
    Ok(())
}

/// Replaces the boot tables with the final ones by break-before-make through the identity
/// map (boot.S's `levitate_replace_ttbr1`; the sequence and the rule are in docs/paging.md).
fn switch_ttbr1(root: PhysAddr, image_phys: PhysAddr) {
    extern "C" {
        fn levitate_replace_ttbr1(root: u64);
    }
    let link = levitate_replace_ttbr1 as *const () as u64;
    // The routine lives in .text.head, in the first 2 MiB of the image, which the boot
    // identity map (TTBR0) maps at its physical address.
    let identity = link - KIMAGE_VBASE + image_phys.as_u64();
    // Boot turned TTBR0 walks off (null pointers fault); the identity map must be reachable
    // for the switch, and is dropped again (TLB entries included) right after.
    cpu::enable_lower_half();
    // SAFETY: `identity` is the routine's identity-mapped address (TTBR0 still holds the boot
    // identity map, executable at EL1). It touches no memory: it switches TTBR1 to an empty
    // table, invalidates the TLB, installs `root` and returns to our (kernel VA) return
    // address. The new tables map the image, its stacks and every MMIO window at the same
    // virtual addresses with the same physical addresses and memory types as the boot tables,
    // so the code, stack and console in use keep working once it returns. Only x0-x2 and x30
    // change (declared); interrupts stay masked across it (it masks them itself).
    unsafe {
        core::arch::asm!(
            "blr {entry}",
            entry = in(reg) identity,
            inout("x0") root.as_u64() => _,
            out("x1") _,
            out("x2") _,
            out("x30") _,
            options(nostack)
        );
    }
    cpu::disable_lower_half();
}

/// Runs `f` with the kernel's tables locked, for a sequence of edits under one lock.
pub fn with_tables<R>(f: impl FnOnce(&mut BuddyTables, PhysAddr) -> R) -> R {
    let guard = KERNEL.lock();
    let root =
        guard.expect("boot order invariant: paging::init runs before kernel mappings change");
    f(&mut BuddyTables, root)
}

/// Like `with_tables`, but `None` instead of waiting when the tables are locked (reclaim runs
/// inside frame allocations that page-table edits make).
pub fn try_with_tables<R>(f: impl FnOnce(&mut BuddyTables, PhysAddr) -> R) -> Option<R> {
    let guard = KERNEL.try_lock()?;
    let root = (*guard)?;
    Some(f(&mut BuddyTables, root))
}

/// Maps `[va, va + size)` to `[pa, pa + size)`. New entries need no TLB maintenance.
pub fn map(va: VirtAddr, pa: PhysAddr, size: u64, attrs: Attributes) -> Result<(), MapError> {
    let r = with_tables(|t, root| table::map(t, root, va, pa, size, attrs));
    // SAFETY: a barrier only: make the new entries visible to the table walker.
    unsafe { core::arch::asm!("dsb ishst", "isb", options(nostack)) };
    r
}

/// Unmaps `[va, va + size)`, returning emptied tables to the buddy. (The heap's release
/// runs several unmaps under one `with_tables`; only tests call this yet.)
#[cfg_attr(not(feature = "ktest"), allow(dead_code))]
pub fn unmap(va: VirtAddr, size: u64) -> Result<Unmapped, UnmapError> {
    with_tables(|t, root| table::unmap(t, root, va, size, &mut KernelTlb))
}

/// Changes the attributes of `[va, va + size)`. (Only tests use it so far.)
#[cfg_attr(not(feature = "ktest"), allow(dead_code))]
pub fn protect(va: VirtAddr, size: u64, attrs: Attributes) -> Result<(), MapError> {
    with_tables(|t, root| table::protect(t, root, va, size, attrs, &mut KernelTlb))
}

/// Translates a kernel virtual address. (Only tests call it yet.)
#[cfg_attr(not(feature = "ktest"), allow(dead_code))]
pub fn translate(va: VirtAddr) -> Option<Translation> {
    with_tables(|t, root| table::translate(t, root, va))
}

/// The walk to `va`, one step per level.
pub fn walk(va: VirtAddr) -> Walk {
    with_tables(|t, root| walk::walk(t, root, va))
}

/// Table frames the kernel's tables use.
pub fn table_frames() -> usize {
    with_tables(table::count_tables)
}

/// The physical root of the kernel's tables (what TTBR1 holds).
pub fn root() -> PhysAddr {
    KERNEL
        .lock()
        .expect("boot order invariant: paging::init ran")
}

/// Whether the final tables are live.
pub fn ready() -> bool {
    KERNEL.lock().is_some()
}

const _: () = assert!(PAGE_SIZE == 4096);

/// A virtual window only the page-table tests use.
#[cfg(feature = "ktest")]
const TEST_VA: u64 = layout::STACKS_BASE + (0x80 << 32);

levitate_hal::ktest!(
    fn map_translate_unmap_returns_tables() -> KtestResult {
        use levitate_hal::arch::aarch64::exception::catch_fault;
        let tables_before = table_frames();
        let block = frames::alloc(Request::new(0, Owner::Test).zeroed()).unwrap();
        let va = VirtAddr::new(TEST_VA);
        levitate_hal::kassert!(map(va, block.addr, PAGE_SIZE, Attributes::KERNEL_DATA).is_ok());
        levitate_hal::kassert!(table_frames() > tables_before, "no table was allocated");
        let t = translate(va + 0x123);
        levitate_hal::kassert!(t.is_some_and(|t| t.pa == block.addr + 0x123 && t.level == 3));
        // The mapping reaches the frame: write through it, read through the linear map.
        let p = va.as_u64() as *mut u64;
        // SAFETY: `va` was just mapped to a frame allocated for this test.
        unsafe { p.write_volatile(0xfeed_f00d) };
        // SAFETY: the same frame through the linear map.
        let back = unsafe { physmem::linear(block.addr).cast::<u64>().read_volatile() };
        levitate_hal::kassert_eq!(back, 0xfeed_f00d);
        levitate_hal::kassert!(
            map(va, block.addr, PAGE_SIZE, Attributes::KERNEL_DATA).is_err(),
            "double map accepted"
        );
        let un = unmap(va, PAGE_SIZE);
        levitate_hal::kassert!(un.is_ok());
        levitate_hal::kassert_eq!(table_frames(), tables_before);
        levitate_hal::kassert!(translate(va).is_none());
        // SAFETY: reading an address just unmapped: the fault is caught and the load skipped.
        let fault = catch_fault(|| unsafe {
            core::ptr::read_volatile(core::hint::black_box(p));
        });
        levitate_hal::kassert!(
            fault.is_some_and(|f| f.far == va.as_u64()),
            "unmapped page did not fault"
        );
        levitate_hal::kassert!(unmap(va, PAGE_SIZE).is_err(), "unmapping a hole accepted");
        levitate_hal::kassert!(frames::free(block).is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn kernel_image_is_w_xor_x_and_guards_are_unmapped() -> KtestResult {
        use levitate_hal::arch::aarch64::esr;
        use levitate_hal::arch::aarch64::exception::catch_fault;
        let img = image_layout();
        let text = translate(VirtAddr::new(img.text.0 + 0x1000)).unwrap().attrs;
        levitate_hal::kassert!(text.executable && !text.writable, "text is not RX");
        let ro = translate(VirtAddr::new(img.rodata.0)).unwrap().attrs;
        levitate_hal::kassert!(!ro.executable && !ro.writable, "rodata is not RO");
        let data = translate(VirtAddr::new(img.data.0)).unwrap().attrs;
        levitate_hal::kassert!(!data.executable && data.writable, "data is not RW NX");
        for (guard, _) in img.guards {
            levitate_hal::kassert!(
                translate(VirtAddr::new(guard)).is_none(),
                "a stack guard page is mapped"
            );
        }
        // Writing to text faults with a permission fault.
        let target = kernel_image_is_w_xor_x_and_guards_are_unmapped as *const () as *mut u32;
        // SAFETY: text is read-only, so the store faults; catch_fault skips it.
        let fault = catch_fault(|| unsafe { target.write_volatile(0) });
        levitate_hal::kassert!(fault.is_some(), "writing to text did not fault");
        let fsc = (esr::iss(fault.unwrap().esr) & 0x3f) as u8;
        levitate_hal::kassert_eq!(esr::fault_status_name(fsc), "permission fault");
        Ok(())
    }
);

levitate_hal::ktest!(
    fn protect_makes_a_page_read_only() -> KtestResult {
        use levitate_hal::arch::aarch64::exception::catch_fault;
        let block = frames::alloc(Request::new(0, Owner::Test).zeroed()).unwrap();
        let va = VirtAddr::new(TEST_VA + 0x20_0000);
        levitate_hal::kassert!(map(va, block.addr, PAGE_SIZE, Attributes::KERNEL_DATA).is_ok());
        levitate_hal::kassert!(protect(va, PAGE_SIZE, Attributes::KERNEL_RO).is_ok());
        let p = va.as_u64() as *mut u64;
        // SAFETY: the page is mapped read-only now: the store faults and is skipped.
        let fault = catch_fault(|| unsafe { p.write_volatile(1) });
        levitate_hal::kassert!(fault.is_some(), "a read-only page accepted a write");
        levitate_hal::kassert!(protect(va, PAGE_SIZE, Attributes::KERNEL_DATA).is_ok());
        // SAFETY: writable again.
        let fault = catch_fault(|| unsafe { p.write_volatile(2) });
        levitate_hal::kassert!(fault.is_none(), "restored write permission did not take");
        levitate_hal::kassert!(unmap(va, PAGE_SIZE).is_ok());
        levitate_hal::kassert!(frames::free(block).is_ok());
        Ok(())
    }
);
