//! The kernel heap: the `#[global_allocator]`, an adapter over the `levitate-heap` crate.
//!
//! Two parts. A small arena in BSS serves the allocations boot makes before any frame allocator
//! exists (the packed device tree, early strings), through linked_list_allocator. Once memory is
//! set up, the main heap is `levitate_heap::Heap` over the heap region: size-class slabs
//! (16 B to 2 KiB, one page each, mapped one frame at a time), page runs in 1 MiB spans for
//! 2-256 KiB, linked_list_allocator segments for large and odd blocks. Its policy (growth by
//! twice the need or exactly the need near the limit, empty segments, spans and slab pages
//! given back when a free empties them beyond a small reserve, under pressure too, and
//! everything empty at the limit) lives in `levitate_mm::slab`, host-tested and benchmarked
//! as the kernel runs it. This file provides
//! the lock, the mapping of heap pages ([`KernelMapper`] over the memory module's grow and
//! release functions: frames and page tables) and the figures for `heap` and `meminfo`.
//!
//! Misuse (a free of an address in no part of the heap, not at an object's start, of an object
//! already free, with a layout of another class, misaligned or running past its segment; for
//! segment blocks any layout but the one allocated, checked against a record per block) is
//! refused, counted and logged, never followed: the memory stays as it was.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use levitate_hal::sync::IrqSafeMutex;
use linked_list_allocator::Heap as ListHeap;

const BOOT_ARENA_SIZE: usize = 512 << 10;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; BOOT_ARENA_SIZE]>);

// SAFETY: the arena is handed to the boot heap once, in `init`; afterwards only that heap,
// behind its lock, touches it.
unsafe impl Sync for Arena {}

static BOOT_ARENA: Arena = Arena(UnsafeCell::new([0; BOOT_ARENA_SIZE]));

/// Maps `bytes` (a multiple of the page size) of fresh memory at `at`; returns false when it
/// cannot (out of frames). Provided by the memory module once frames exist.
pub type GrowFn = fn(at: usize, bytes: usize) -> bool;
/// Unmaps `[at, at + bytes)` of the heap region and frees its frames; false (and nothing done)
/// when the page tables are busy.
pub type ReleaseFn = fn(at: usize, bytes: usize) -> bool;

/// The heap's pages, mapped by the memory module: fresh frames (owner `heap`) into the heap
/// region, given back by unmapping. Before `enable_growth` it maps nothing.
pub struct KernelMapper {
    grow: Option<GrowFn>,
    release: Option<ReleaseFn>,
}

impl levitate_heap::Mapper for KernelMapper {
    fn map(&mut self, at: usize, bytes: usize) -> bool {
        self.grow.is_some_and(|grow| grow(at, bytes))
    }

    fn unmap(&mut self, at: usize, bytes: usize) -> bool {
        self.release.is_some_and(|release| release(at, bytes))
    }
}

struct State {
    boot: ListHeap,
    main: levitate_heap::Heap<KernelMapper>,
    /// `enable_growth` ran: the main heap has its window.
    enabled: bool,
    /// Boot-arena allocations refused.
    boot_failures: u64,
}

/// The lock protects the boot arena's free list and the whole main heap (slabs, segments,
/// counters). It is an `IrqSafeMutex`: taken with IRQ+FIQ masked on this CPU, because
/// interrupt handlers may allocate (the tick's `irqstress` does), so a handler never finds it
/// held by the code it interrupted; another CPU holding it finishes and releases it (nothing
/// under it waits for an interrupt). It is never held across anything that could fault. Lock
/// order: the outermost allocator lock: growing maps frames under it (heap, then page tables,
/// then frames), and a free that empties a segment or slab page unmaps under it through the
/// release function, which only try-locks the page tables; the page-table and frame locks
/// never take this one (reclaim only try-locks it). Masked time: a slab allocation or free is
/// a few dozen instructions; a large block a first-fit walk; a growth adds allocating and
/// mapping frames for up to twice the request, a release unmapping one segment or a few slab
/// pages; docs/interrupts.md has the figures.
struct KernelHeap(IrqSafeMutex<State>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqSafeMutex::new(State {
    boot: ListHeap::empty(),
    main: levitate_heap::Heap::new(KernelMapper {
        grow: None,
        release: None,
    }),
    enabled: false,
    boot_failures: 0,
}));

/// Hands the boot arena to the heap. Called once, first thing at boot.
pub fn init() {
    let mut s = HEAP.0.lock();
    if s.boot.size() == 0 {
        // SAFETY: the arena is a static region of BOOT_ARENA_SIZE bytes used by nothing else,
        // and the size check above makes this run once.
        unsafe {
            s.boot
                .init(BOOT_ARENA.0.get().cast::<u8>(), BOOT_ARENA_SIZE)
        };
    }
}

/// Starts the main heap in `[base, base + region)` (2 MiB aligned), allowed to map up to
/// `limit` bytes through `grow`, giving memory back through `release`. Called once.
pub fn enable_growth(base: usize, region: usize, limit: usize, grow: GrowFn, release: ReleaseFn) {
    let mut s = HEAP.0.lock();
    if s.enabled {
        return;
    }
    let mapper = s.main.mapper_mut();
    mapper.grow = Some(grow);
    mapper.release = Some(release);
    // SAFETY: the heap region is reserved for the heap alone (docs/boot.md's map; nothing else
    // maps there), and what `grow` maps there stays mapped until the heap itself unmaps it
    // through `release`; the heap lives in this static for the kernel's life.
    unsafe { s.main.init(base, region, limit) };
    s.enabled = true;
    // The reserve segment now, at boot, rather than inside the first caller that needs one.
    s.main.prime();
}

/// Heap statistics.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Bytes the main heap has mapped (slab pages, their records, segments).
    pub size: usize,
    /// Bytes in use (both parts).
    pub used: usize,
    /// Bytes free (both parts: mapped or in the arena, not in a live block).
    pub free: usize,
    /// Segments the main heap mapped.
    pub growths: u64,
    /// Empty segments given back to the frame allocator.
    pub releases: u64,
    /// Allocations refused at the limit or for want of frames.
    pub failures: u64,
    /// The main heap's growth limit.
    pub limit: usize,
    /// The boot arena's size.
    pub boot_size: usize,
    /// Live segments.
    pub segments: usize,
    /// Bytes in live segments.
    pub segment_bytes: usize,
    /// Slab pages serving a class, and mapped but empty.
    pub slab_pages: u64,
    pub empty_slab_pages: u64,
    /// Small objects live.
    pub objects: u64,
    /// Slab pages given back.
    pub released_pages: u64,
    /// Bytes of records: slab and span chunks (kept for the heap's life) and the large
    /// blocks' table (it follows the live large blocks).
    pub record_bytes: usize,
    /// Small requests served by segments (the slabs had no room).
    pub slab_fallbacks: u64,
    /// Frees refused as misuse.
    pub refused: u64,
}

/// Current statistics.
pub fn stats() -> Stats {
    let s = HEAP.0.lock();
    let m = s.main.stats();
    let records = m.record_bytes;
    Stats {
        size: m.mapped,
        used: s.boot.used() + m.used,
        free: s.boot.free() + m.mapped.saturating_sub(m.used + records),
        growths: m.growths,
        releases: m.releases,
        failures: m.failures + s.boot_failures,
        limit: m.limit,
        boot_size: s.boot.size(),
        segments: m.segments,
        segment_bytes: m.segment_bytes,
        slab_pages: m.slab.slab_pages,
        empty_slab_pages: m.slab.empty_pages,
        objects: m.slab.objects,
        released_pages: m.slab.released_pages,
        record_bytes: records,
        slab_fallbacks: m.slab_fallbacks,
        refused: m.refused,
    }
}

/// Gives empty segments and slab pages back to the frame allocator (memory pressure), all but
/// the heap's small idle reserve (one segment of at most 1 MiB, 16 slab pages), which spares
/// the next allocation, maybe in an interrupt handler, a mapping; a request at the heap's
/// limit takes the reserve too. Returns the bytes released, or `None` when the heap or the
/// page tables are busy
/// (the caller may hold either: frame allocations happen under heap growth and under
/// page-table edits), so the reclaim is tried again later.
pub fn try_reclaim() -> Option<usize> {
    let mut s = HEAP.0.try_lock()?;
    let r = s.main.reclaim();
    if r.busy && r.bytes == 0 {
        return None;
    }
    Some(r.bytes)
}

// SAFETY: blocks come from the boot arena's linked_list_allocator or from levitate_heap, which
// return blocks that fit the layout and never overlap; each block goes back to the part whose
// range holds it, and levitate_heap refuses frees it can tell are wrong.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut s = self.0.lock();
        if s.enabled {
            if let Some(p) = s.main.alloc(layout) {
                return p.as_ptr();
            }
        }
        match s.boot.allocate_first_fit(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => {
                let why = s.main.last_error();
                let enabled = s.enabled;
                s.boot_failures += u64::from(!enabled);
                drop(s);
                match why {
                    Some(e) if enabled => log::error!(
                        "heap: a {}-byte allocation (align {}) failed: {e}",
                        layout.size(),
                        layout.align()
                    ),
                    _ => log::error!(
                        "heap: a {}-byte allocation (align {}) failed in the boot arena",
                        layout.size(),
                        layout.align()
                    ),
                }
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        let mut s = self.0.lock();
        let boot = BOOT_ARENA.0.get() as usize;
        if (boot..boot + BOOT_ARENA_SIZE).contains(&(ptr as usize)) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout, and
            // the boot arena's range holds it, so it came from the boot heap.
            unsafe { s.boot.deallocate(p, layout) };
            return;
        }
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout; the main
        // heap checks what it can and refuses the rest.
        let refused = unsafe { s.main.free(p, layout) };
        drop(s);
        if let Err(m) = refused {
            log::error!("heap: refused a free ({m}); nothing changed");
        }
    }
}

levitate_hal::ktest!(
    fn heap_allocates_and_frees() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        let before = stats().used;
        let v: Vec<u64> = (0..1000).collect();
        levitate_hal::kassert_eq!(v.iter().sum::<u64>(), 499_500);
        levitate_hal::kassert!(stats().used >= before + 8000);
        drop(v);
        levitate_hal::kassert_eq!(stats().used, before);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn heap_grows_on_demand() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        let before = stats();
        // Bigger than everything mapped so far: the heap must grow.
        let n = before.size + (4 << 20);
        let mut v: Vec<u8> = Vec::new();
        levitate_hal::kassert!(v.try_reserve_exact(n).is_ok(), "the heap did not grow");
        v.extend((0..n).map(|i| i as u8));
        levitate_hal::kassert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        let after = stats();
        levitate_hal::kassert!(after.growths > before.growths);
        levitate_hal::kassert!(after.size >= before.size + n);
        drop(v);
        // A request past the limit fails cleanly instead of panicking.
        let mut huge: Vec<u8> = Vec::new();
        levitate_hal::kassert!(huge.try_reserve_exact(after.limit + 1).is_err());
        levitate_hal::kassert_eq!(stats().failures, after.failures + 1);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn heap_refuses_every_misuse() -> KtestResult {
        let small = Layout::from_size_align(40, 8).unwrap();
        let large = Layout::from_size_align(10_000, 64).unwrap();
        let before = stats();
        // SAFETY: layouts of non-zero size.
        let (a, b) = unsafe { (HEAP.alloc(small), HEAP.alloc(large)) };
        levitate_hal::kassert!(!a.is_null() && !b.is_null());
        // SAFETY: `a` and `b` are live blocks of these sizes.
        unsafe {
            a.write_bytes(0x5a, 40);
            b.write_bytes(0x3c, 10_000);
        }
        let local = 0u64;
        let foreign = core::ptr::addr_of!(local) as *mut u8;
        // SAFETY (each dealloc below but the last two): a free the heap must refuse before
        // touching memory; the test checks that it did and that the blocks are intact.
        unsafe {
            HEAP.dealloc(a.wrapping_add(8), small); // not at an object's start
            HEAP.dealloc(a, Layout::from_size_align(1000, 8).unwrap()); // another class
            HEAP.dealloc(foreign, small); // in no part of the heap
            HEAP.dealloc(b.wrapping_add(8), large); // misaligned for its layout
            HEAP.dealloc(b, Layout::from_size_align(1 << 40, 64).unwrap()); // past its segment
        }
        let refused = stats().refused - before.refused;
        // SAFETY: live blocks of these sizes (the refused frees changed nothing).
        let intact = unsafe {
            core::slice::from_raw_parts(a, 40)
                .iter()
                .all(|&x| x == 0x5a)
                && core::slice::from_raw_parts(b, 10_000)
                    .iter()
                    .all(|&x| x == 0x3c)
        };
        // SAFETY: the real frees of the live blocks, then a double free to be refused.
        unsafe {
            HEAP.dealloc(a, small);
            HEAP.dealloc(b, large);
            HEAP.dealloc(a, small);
        }
        levitate_hal::kassert_eq!(refused, 5);
        levitate_hal::kassert!(intact, "a refused free changed a live block");
        levitate_hal::kassert_eq!(stats().refused - before.refused, 6);
        levitate_hal::kassert_eq!(stats().used, before.used);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn heap_refuses_large_block_misuse() -> KtestResult {
        // A block over 256 KiB (alone in its segment) and one aligned past a page (in a shared
        // segment): both live in linked_list_allocator segments, whose frees the block records
        // check (a misuse there used to reach linked_list_allocator: a panic or a corrupt list).
        let huge = Layout::from_size_align(300 << 10, 8).unwrap();
        let aligned = Layout::from_size_align(5000, 8192).unwrap();
        let before = stats();
        // SAFETY: layouts of non-zero size.
        let (a, b) = unsafe { (HEAP.alloc(huge), HEAP.alloc(aligned)) };
        levitate_hal::kassert!(!a.is_null() && !b.is_null());
        // SAFETY: `a` and `b` are live blocks of these sizes.
        unsafe {
            a.write_bytes(0x6b, huge.size());
            b.write_bytes(0x4d, aligned.size());
        }
        let inside = Layout::from_size_align(16, 8).unwrap();
        // SAFETY (each dealloc below but the two real frees): a free the heap must refuse
        // before touching memory; the test checks that it did and that the blocks are intact.
        unsafe {
            HEAP.dealloc(a.wrapping_add(4096), inside); // inside the big block
            HEAP.dealloc(a, Layout::from_size_align(huge.size() - 8, 8).unwrap()); // size
            HEAP.dealloc(a, Layout::from_size_align(huge.size(), 16).unwrap()); // alignment
            HEAP.dealloc(b.wrapping_add(16), inside); // inside the aligned block
            HEAP.dealloc(b, Layout::from_size_align(4000, 8192).unwrap()); // size
        }
        let refused = stats().refused - before.refused;
        // SAFETY: live blocks of these sizes (the refused frees changed nothing).
        let intact = unsafe {
            core::slice::from_raw_parts(a, huge.size())
                .iter()
                .all(|&x| x == 0x6b)
                && core::slice::from_raw_parts(b, aligned.size())
                    .iter()
                    .all(|&x| x == 0x4d)
        };
        // SAFETY: the real frees of the live blocks, then double frees to be refused.
        unsafe {
            HEAP.dealloc(a, huge);
            HEAP.dealloc(b, aligned);
            HEAP.dealloc(b, aligned);
            HEAP.dealloc(a, huge);
        }
        levitate_hal::kassert_eq!(refused, 5);
        levitate_hal::kassert!(intact, "a refused free changed a large block");
        levitate_hal::kassert_eq!(stats().refused - before.refused, 7);
        levitate_hal::kassert_eq!(stats().used, before.used);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn heap_grows_by_the_exact_need_near_its_limit() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        let before = stats();
        // More than half the room left: twice this (the generous step) cannot fit, the need
        // can (the 56 MB request with 89 MB of room).
        let room = before.limit - before.size;
        let n = room / 8 * 5;
        let mut v: Vec<u8> = Vec::new();
        levitate_hal::kassert!(
            v.try_reserve_exact(n).is_ok(),
            "a request of 5/8 of the room failed"
        );
        v.resize(n, 0xa5);
        levitate_hal::kassert!(v.iter().step_by(4096).all(|&b| b == 0xa5));
        let grown = stats();
        drop(v);
        let after = stats();
        levitate_hal::kassert!(
            grown.size <= before.size + n + (64 << 10),
            "grew by more than the need"
        );
        levitate_hal::kassert_eq!(grown.failures, before.failures);
        // The emptied segment went back at once, at low pressure.
        levitate_hal::kassert!(after.releases > before.releases);
        levitate_hal::kassert!(after.size <= before.size + (1 << 20));
        Ok(())
    }
);

levitate_hal::ktest!(
    fn heap_gives_idle_slab_pages_back() -> KtestResult {
        extern crate alloc;
        use alloc::boxed::Box;
        use alloc::vec::Vec;
        let before = stats();
        // 4 MiB of small objects in 1 KiB slots, then all freed.
        let mut v: Vec<Box<[u8; 1000]>> = Vec::new();
        levitate_hal::kassert!(v.try_reserve_exact(4096).is_ok());
        for i in 0..4096 {
            v.push(Box::new([i as u8; 1000]));
        }
        let full = stats();
        levitate_hal::kassert!(full.slab_pages >= before.slab_pages + 1024);
        levitate_hal::kassert!(v.iter().enumerate().all(|(i, b)| b[999] == i as u8));
        drop(v);
        let after = stats();
        levitate_hal::kassert!(
            after.empty_slab_pages <= levitate_heap::SLAB_RETAIN_HIGH as u64,
            "more empty slab pages kept than the reserve"
        );
        levitate_hal::kassert!(after.released_pages >= before.released_pages + 900);
        levitate_hal::kassert!(after.size <= before.size + (1 << 20));
        Ok(())
    }
);

levitate_hal::ktest!(
    fn the_heap_lock_masks_interrupts_while_held() -> KtestResult {
        use levitate_hal::sync::{irqs_masked, with_irqs_unmasked};
        let (inside, after) = with_irqs_unmasked(|| {
            let inside = {
                let _held = HEAP.0.lock();
                irqs_masked()
            };
            (inside, irqs_masked())
        });
        levitate_hal::kassert!(inside, "IRQs open while the heap lock is held");
        levitate_hal::kassert!(!after, "IRQs still masked after the heap lock was released");
        // An allocation through the global allocator leaves the interrupt state as it was.
        let restored = with_irqs_unmasked(|| {
            let v: alloc::vec::Vec<u8> = alloc::vec![1; 100];
            drop(v);
            !irqs_masked()
        });
        levitate_hal::kassert!(restored);
        Ok(())
    }
);
