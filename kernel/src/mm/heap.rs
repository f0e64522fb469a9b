//! The kernel heap: `linked_list_allocator` behind the `#[global_allocator]`.
//!
//! Two parts. A small arena in BSS serves the allocations boot makes before any frame allocator
//! exists (the packed device tree, early strings). Once memory is set up, the main heap lives
//! in the heap region as segments: when an allocation fits no segment, `grow` maps fresh frames
//! for a new one (at least 64 KiB, in proportion to the request) up to a limit; past it the
//! allocation fails cleanly with a message naming the request. Under memory pressure,
//! `try_reclaim` unmaps segments that became wholly free and returns their frames. Frees go back
//! to whichever part the block came from.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use levitate_hal::sync::IrqSafeMutex;
use linked_list_allocator::Heap;

const BOOT_ARENA_SIZE: usize = 512 << 10;
/// Smallest growth step.
const MIN_GROWTH: usize = 64 << 10;
/// Most live segments; past it the newest segment is extended instead.
const MAX_SEGMENTS: usize = 64;

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

/// One mapped stretch of the main heap.
struct Segment {
    heap: Heap,
    start: usize,
}

impl Segment {
    fn contains(&self, p: usize) -> bool {
        (self.start..self.start + self.heap.size()).contains(&p)
    }
}

struct State {
    boot: Heap,
    segments: [Option<Segment>; MAX_SEGMENTS],
    /// Next unused address of the heap region (segments are never placed twice).
    next: usize,
    /// End of the heap region's address space.
    region_end: usize,
    /// Most bytes mapped at once.
    limit: usize,
    grow: Option<GrowFn>,
    release: Option<ReleaseFn>,
    growths: u64,
    releases: u64,
    failures: u64,
}

/// The lock protects every segment's free list, the boot arena's, and the growth state. It is
/// an `IrqSafeMutex`: taken with IRQ+FIQ masked on this CPU, because interrupt handlers may
/// allocate (the tick's `irqstress` does), so a handler never finds it held by the code it
/// interrupted; another CPU holding it finishes and releases it (nothing under it waits for an
/// interrupt). It is never held across anything that could fault. Lock order: the outermost
/// allocator lock: growing maps frames under it (heap, then page tables, then frames), and the
/// page-table and frame locks never take this one (reclaim only try-locks it). Masked time: a
/// list walk per allocation; a growth adds allocating and mapping frames for up to twice the
/// request, a reclaim unmapping whole segments; docs/interrupts.md has the figures.
struct KernelHeap(IrqSafeMutex<State>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqSafeMutex::new(State {
    boot: Heap::empty(),
    segments: [const { None }; MAX_SEGMENTS],
    next: 0,
    region_end: 0,
    limit: 0,
    grow: None,
    release: None,
    growths: 0,
    releases: 0,
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

/// Starts the main heap in `[base, base + region)`, allowed to map up to `limit` bytes through
/// `grow`, giving wholly free segments back through `release`.
pub fn enable_growth(base: usize, region: usize, limit: usize, grow: GrowFn, release: ReleaseFn) {
    let mut s = HEAP.0.lock();
    s.next = base;
    s.region_end = base + region;
    s.limit = limit;
    s.grow = Some(grow);
    s.release = Some(release);
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
    /// Wholly free segments given back to the frame allocator.
    pub releases: u64,
    /// Allocations refused at the limit or for want of frames.
    pub failures: u64,
    /// The main heap's growth limit.
    pub limit: usize,
    /// The boot arena's size.
    pub boot_size: usize,
    /// Live segments.
    pub segments: usize,
}

/// Current statistics.
pub fn stats() -> Stats {
    let s = HEAP.0.lock();
    let live = s.segments.iter().flatten();
    let (mut size, mut used, mut free, mut segments) = (0, s.boot.used(), s.boot.free(), 0);
    for seg in live {
        size += seg.heap.size();
        used += seg.heap.used();
        free += seg.heap.free();
        segments += 1;
    }
    Stats {
        size,
        used,
        free,
        growths: s.growths,
        releases: s.releases,
        failures: s.failures,
        limit: s.limit,
        boot_size: s.boot.size(),
        segments,
    }
}

/// Gives wholly free segments back to the frame allocator, keeping the newest one (the next
/// small allocation would only grow again). Returns the bytes released, or `None` when the
/// heap or the page tables are busy (the caller may hold either: frame allocations happen
/// under heap growth and under page-table edits).
pub fn try_reclaim() -> Option<usize> {
    let mut s = HEAP.0.try_lock()?;
    let Some(release) = s.release else {
        return Some(0);
    };
    let newest = s
        .segments
        .iter()
        .flatten()
        .map(|seg| seg.start)
        .max()
        .unwrap_or(0);
    let mut released = 0;
    for slot in 0..MAX_SEGMENTS {
        let empty = s.segments[slot]
            .as_ref()
            .is_some_and(|seg| seg.heap.used() == 0 && seg.start != newest);
        if !empty {
            continue;
        }
        let (start, size) = s.segments[slot]
            .as_ref()
            .map(|seg| (seg.start, seg.heap.size()))
            .expect("checked just above");
        if !release(start, size) {
            return None;
        }
        s.segments[slot] = None;
        released += size;
        s.releases += 1;
    }
    Some(released)
}

impl State {
    fn mapped(&self) -> usize {
        self.segments
            .iter()
            .flatten()
            .map(|seg| seg.heap.size())
            .sum()
    }

    /// Adds memory enough for `layout`: a new segment, or (all slots taken) more at the end of
    /// the newest one. False when it cannot.
    fn grow_for(&mut self, layout: Layout) -> bool {
        let Some(grow) = self.grow else { return false };
        // Worst case the block needs its size plus alignment padding; grow by twice that so a
        // run of similar requests does not grow every time, and by at least MIN_GROWTH.
        let need = layout
            .size()
            .saturating_add(layout.align())
            .saturating_mul(2);
        let step = need.max(MIN_GROWTH).next_multiple_of(4096);
        let mapped = self.mapped();
        if mapped.saturating_add(step) > self.limit
            || self.next.saturating_add(step) > self.region_end
        {
            log::error!(
                "heap: cannot grow by {step} bytes for a {}-byte allocation (align {}): {mapped} of the {}-byte limit mapped",
                layout.size(),
                layout.align(),
                self.limit
            );
            return false;
        }
        let at = self.next;
        if !grow(at, step) {
            log::error!(
                "heap: out of frames growing by {step} bytes for a {}-byte allocation (align {})",
                layout.size(),
                layout.align()
            );
            return false;
        }
        self.next += step;
        self.growths += 1;
        match self.segments.iter().position(Option::is_none) {
            Some(slot) => {
                let mut heap = Heap::empty();
                // SAFETY: `grow` just mapped [at, at + step) for this segment alone.
                unsafe { heap.init(at as *mut u8, step) };
                self.segments[slot] = Some(Segment { heap, start: at });
            }
            None => {
                // Every slot is taken: the newest segment ends at `at`, so extend it.
                let newest = self
                    .segments
                    .iter_mut()
                    .flatten()
                    .max_by_key(|seg| seg.start)
                    .expect("all slots are full, so one exists");
                // SAFETY: `grow` just mapped [at, at + step), directly after this segment's
                // end (segments are placed in address order and never reused).
                unsafe { newest.heap.extend(step) };
            }
        }
        true
    }

    fn alloc_main(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.segments
            .iter_mut()
            .flatten()
            .find_map(|seg| seg.heap.allocate_first_fit(layout).ok())
    }
}

// SAFETY: blocks come from linked_list_allocator, which returns blocks that fit the layout and
// never overlap; each block goes back to the heap (boot or main) whose range holds it.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut s = self.0.lock();
        if s.grow.is_some() {
            if let Some(p) = s.alloc_main(layout) {
                return p.as_ptr();
            }
            if s.grow_for(layout) {
                if let Some(p) = s.alloc_main(layout) {
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
        let at = ptr as usize;
        let heap = if (boot..boot + BOOT_ARENA_SIZE).contains(&at) {
            Some(&mut s.boot)
        } else {
            s.segments
                .iter_mut()
                .flatten()
                .find(|seg| seg.contains(at))
                .map(|seg| &mut seg.heap)
        };
        match heap {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout, from
            // the heap whose range holds it.
            Some(heap) => unsafe { heap.deallocate(p, layout) },
            None => panic!("heap invariant: freeing {ptr:p}, which no heap segment holds"),
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
