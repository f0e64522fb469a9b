//! The kernel heap, `linked_list_allocator` behind a spin lock as the global allocator.
//!
//! For now it is backed by a fixed arena in BSS so the shell and tests can use `alloc`; the
//! buddy issue moves it to a virtual heap region that grows by mapping frames on demand.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use linked_list_allocator::Heap;
use spin::Mutex;

const ARENA_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: the arena is handed to the heap once, in `init`; afterwards only the heap, behind
// its lock, touches it.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));

/// Interrupt handlers do not allocate (none exist yet) and the lock is never held across
/// anything that could fault, so it cannot deadlock.
struct KernelHeap(Mutex<Heap>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Mutex::new(Heap::empty()));

/// Hands the arena to the heap. Called once, early in boot.
pub fn init() {
    let mut heap = HEAP.0.lock();
    if heap.size() == 0 {
        // SAFETY: the arena is a static region of ARENA_SIZE bytes used by nothing else, and
        // the size check above makes this run once.
        unsafe { heap.init(ARENA.0.get().cast::<u8>(), ARENA_SIZE) };
    }
}

/// Heap statistics: (size, used, free) in bytes.
pub fn stats() -> (usize, usize, usize) {
    let heap = HEAP.0.lock();
    (heap.size(), heap.used(), heap.free())
}

// SAFETY: allocations come from linked_list_allocator, which returns blocks that fit the
// layout and never overlap; deallocation hands back exactly what it returned.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout.
            unsafe { self.0.lock().deallocate(p, layout) };
        }
    }
}

levitate_hal::ktest!(
    fn heap_allocates_and_frees() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        let (_, used_before, _) = stats();
        let v: Vec<u64> = (0..1000).collect();
        levitate_hal::kassert_eq!(v.iter().sum::<u64>(), 499_500);
        let (_, used_during, _) = stats();
        levitate_hal::kassert!(used_during >= used_before + 8000);
        drop(v);
        levitate_hal::kassert_eq!(stats().1, used_before);
        Ok(())
    }
);
