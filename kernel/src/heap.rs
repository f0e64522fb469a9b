//! The kernel heap: `linked_list_allocator` behind the `#[global_allocator]`.
//!
//! Two parts. A small arena in BSS serves the allocations boot makes before any frame allocator
//! exists (the packed device tree, early strings). Once memory is set up, the main heap lives at
//! `layout::HEAP_BASE` and grows on demand: when an allocation does not fit, `grow` maps fresh
//! frames at its end (at least 64 KiB, in proportion to the request) up to a limit; past it the
//! allocation fails cleanly with a message naming the request. Frees go back to whichever part
//! the block came from.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use linked_list_allocator::Heap;
use spin::Mutex;

const BOOT_ARENA_SIZE: usize = 512 << 10;
/// Smallest growth step.
pub const MIN_GROWTH: usize = 64 << 10;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; BOOT_ARENA_SIZE]>);

// SAFETY: the arena is handed to the boot heap once, in `init`; afterwards only that heap,
// behind its lock, touches it.
unsafe impl Sync for Arena {}

static BOOT_ARENA: Arena = Arena(UnsafeCell::new([0; BOOT_ARENA_SIZE]));

/// Maps `bytes` (a multiple of the page size) of fresh memory at `at`; returns false when it
/// cannot (out of frames). Provided by the memory module once frames exist.
pub type GrowFn = fn(at: usize, bytes: usize) -> bool;

struct State {
    boot: Heap,
    main: Heap,
    /// Start of the main heap region (0 until `enable_growth`).
    base: usize,
    /// Most bytes the main heap may reach.
    limit: usize,
    grow: Option<GrowFn>,
    growths: u64,
    failures: u64,
}

/// Interrupt handlers do not allocate (none exist yet) and the lock is never held across
/// anything that could fault, so it cannot deadlock; growing maps frames under it, and the
/// page-table and frame locks never take this one (lock order: heap, then tables, then frames).
struct KernelHeap(Mutex<State>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Mutex::new(State {
    boot: Heap::empty(),
    main: Heap::empty(),
    base: 0,
    limit: 0,
    grow: None,
    growths: 0,
    failures: 0,
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

/// Starts the main heap at `base` (nothing mapped yet), allowed to grow to `limit` bytes
/// through `grow`.
pub fn enable_growth(base: usize, limit: usize, grow: GrowFn) {
    let mut s = HEAP.0.lock();
    s.base = base;
    s.limit = limit;
    s.grow = Some(grow);
}

/// Heap statistics.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Bytes the main heap has mapped.
    pub size: usize,
    /// Bytes in use (both parts).
    pub used: usize,
    /// Bytes free (both parts).
    pub free: usize,
    /// Times the main heap grew.
    pub growths: u64,
    /// Allocations refused at the limit or for want of frames.
    pub failures: u64,
    /// The main heap's growth limit.
    pub limit: usize,
    /// The boot arena's size.
    pub boot_size: usize,
}

/// Current statistics.
pub fn stats() -> Stats {
    let s = HEAP.0.lock();
    Stats {
        size: s.main.size(),
        used: s.main.used() + s.boot.used(),
        free: s.main.free() + s.boot.free(),
        growths: s.growths,
        failures: s.failures,
        limit: s.limit,
        boot_size: s.boot.size(),
    }
}

impl State {
    /// Grows the main heap enough for `layout`; false when it cannot.
    fn grow_for(&mut self, layout: Layout) -> bool {
        let Some(grow) = self.grow else { return false };
        // Worst case the block needs its size plus alignment padding; grow by twice that so a
        // run of similar requests does not grow every time, and by at least MIN_GROWTH.
        let need = layout
            .size()
            .saturating_add(layout.align())
            .saturating_mul(2);
        let step = need.max(MIN_GROWTH).next_multiple_of(4096);
        let size = self.main.size();
        if size.saturating_add(step) > self.limit {
            log::error!(
                "heap: cannot grow by {step} bytes for a {}-byte allocation (align {}): the heap is at {size} of its {}-byte limit",
                layout.size(),
                layout.align(),
                self.limit
            );
            return false;
        }
        let at = self.base + size;
        if !grow(at, step) {
            log::error!(
                "heap: out of frames growing by {step} bytes for a {}-byte allocation (align {})",
                layout.size(),
                layout.align()
            );
            return false;
        }
        if size == 0 {
            // SAFETY: `grow` just mapped [base, base + step) for the heap alone.
            unsafe { self.main.init(self.base as *mut u8, step) };
        } else {
            // SAFETY: `grow` just mapped [at, at + step), directly after the heap's end.
            unsafe { self.main.extend(step) };
        }
        self.growths += 1;
        true
    }
}

// SAFETY: blocks come from linked_list_allocator, which returns blocks that fit the layout and
// never overlap; each block goes back to the heap (boot or main) whose range holds it.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut s = self.0.lock();
        if s.grow.is_some() {
            if let Ok(p) = s.main.allocate_first_fit(layout) {
                return p.as_ptr();
            }
            if s.grow_for(layout) {
                if let Ok(p) = s.main.allocate_first_fit(layout) {
                    return p.as_ptr();
                }
            }
        }
        match s.boot.allocate_first_fit(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => {
                s.failures += 1;
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        let mut s = self.0.lock();
        let boot = BOOT_ARENA.0.get() as usize;
        let heap = if (boot..boot + BOOT_ARENA_SIZE).contains(&(ptr as usize)) {
            &mut s.boot
        } else {
            &mut s.main
        };
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout, from the
        // heap whose range holds it.
        unsafe { heap.deallocate(p, layout) };
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
