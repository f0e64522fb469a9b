//! The frame allocators under test, behind one trait: Levitate's front wired as
//! kernel/src/mm/frames.rs wires it, the reference buddy, buddy_system_allocator and
//! bitmap-allocator. Frame
//! contents are never touched (no zeroing, no poisoning): the bench measures bookkeeping.

use crate::reference::Reference;
use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::bitmap::{self, SmallRuns};
use levitate_mm::buddy::{Buddy, FrameMemory, Owner, Request};
use levitate_mm::front::{Front, RunsAccess};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::pcp::{
    self, BuddyAccess, CacheAccess, CpuCache, FrameStates, HoldFor, HotCache, Limits,
};
use levitate_mm::region::Region;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Where the simulated RAM starts (1 GiB aligned, as on QEMU virt).
pub const BASE: u64 = 0x4000_0000;

/// A frame allocator as the workloads see it. A block is named by a handle the
/// implementation chooses (Levitate: its physical address, as the kernel's callers hold it;
/// the others: their frame number), which the workloads only keep and pass back, so nobody
/// pays for converting to another numbering. `cpu` is the calling "CPU" (a thread index).
pub trait Frames: Sync {
    /// The name in the table and the JSON.
    fn name(&self) -> &'static str;
    /// 2^`order` frames.
    fn alloc(&self, cpu: usize, order: u8) -> Option<u64>;
    /// Frees what `alloc` gave.
    fn free(&self, cpu: usize, frame: u64, order: u8);
    /// `n` contiguous frames at the allocator's best (Levitate: exact; buddies: rounded up).
    fn alloc_run(&self, cpu: usize, n: u64) -> Option<u64> {
        self.alloc(cpu, order_for(n))
    }
    /// Frees what `alloc_run` gave.
    fn free_run(&self, cpu: usize, frame: u64, n: u64) {
        self.free(cpu, frame, order_for(n))
    }
    /// Frames a run of `n` really takes.
    fn run_cost(&self, n: u64) -> u64 {
        1 << order_for(n)
    }
}

/// The smallest order that holds `n` frames.
pub fn order_for(n: u64) -> u8 {
    n.next_power_of_two().trailing_zeros() as u8
}

/// Frame contents are not simulated.
struct NoMemory;

impl FrameMemory for NoMemory {
    fn fill(&mut self, _first: Pfn, _frames: u64, _byte: u8) {}
    fn find_not(&self, _first: Pfn, _frames: u64, _byte: u8) -> Option<PhysAddr> {
        None
    }
}

/// CPUs (stashes and rings) of the bench's Levitate: the bench runs at most two threads.
pub const CPUS: usize = 2;

/// The process's Levitate ([`Levitate::instance`]).
static INSTANCE: OnceLock<Levitate> = OnceLock::new();

/// Levitate's three layers with the kernel's locks (spin mutexes), the kernel's layout of
/// the per-CPU caches (one array), the kernel's `Limits::DEFAULT`, and the kernel's work
/// around each buddy use (usage report read, pressure level stored when it moved) and after each call (the
/// reclaim check). The routing and the out-of-memory path are not mirrored: both this and
/// kernel/src/mm/frames.rs call the one implementation, `levitate_mm::front::Front`; only the
/// locks (the access objects below) are the bench's own, and they do what the kernel's do.
pub struct Levitate {
    buddy: spin::Mutex<Option<Buddy<'static>>>,
    runs: Box<spin::Mutex<SmallRuns>>,
    /// In the instance itself, as the kernel's `CACHES` and `HOTS` are static arrays: a
    /// stash's address is the instance's plus a constant, no pointer to load.
    caches: [spin::Mutex<CpuCache>; CPUS],
    /// The per-CPU stashes (owner only: thread `cpu` alone uses stash `cpu`, as a kernel CPU
    /// alone uses its own with interrupts masked).
    hots: [HotCache; CPUS],
    states: FrameStates<'static>,
    /// Stand-ins for kernel/src/mm/pressure.rs: the level stored after each buddy use, and the
    /// flag `reclaim_if_due` loads after each call.
    pressure: AtomicU64,
    due: AtomicBool,
}

impl Levitate {
    /// The process's one instance, built by the first call with `frames` frames of RAM from
    /// [`BASE`] and `cpus` caches (its mem_map leaked); later calls return it (with the same
    /// sizes: others are a bench bug). One instance, as the kernel has one allocator in its
    /// statics: the access handles below are zero-sized and reach it through [`INSTANCE`]
    /// at a fixed address, so the front built on every call is the kernel's size (this CPU's
    /// index and the states: two words, passed in registers). With a pointer in each handle it
    /// was five words, passed through memory, and its stores were paid on every call (bench
    /// `mixed` on an AMD EPYC guest: 1.62x the reference with them, 1.48x without).
    pub fn instance(frames: u64, cpus: usize) -> &'static Levitate {
        assert_eq!(
            cpus, CPUS,
            "bench bug: the bench's Levitate has {CPUS} CPUs"
        );
        let lev = INSTANCE.get_or_init(|| Self::new(frames));
        assert_eq!(
            lev.states.layout().frames(),
            frames,
            "bench bug: one Levitate per process, always of one size"
        );
        lev
    }

    /// The instance the handles reach (built before any front is).
    #[inline(always)]
    fn get() -> &'static Levitate {
        INSTANCE
            .get()
            .expect("bench bug: Levitate::instance runs before any front")
    }

    fn new(frames: u64) -> Self {
        let ram = Region::from_bounds(BASE, BASE + frames * PAGE_SIZE);
        let layout: &'static Layout = Box::leak(Box::new(Layout::new(&[ram]).expect("layout")));
        let pages: &'static [Page] = vec![Page::new(); frames as usize].leak();
        let buddy = Buddy::new(pages, layout, &[ram]).expect("buddy");
        let caches = core::array::from_fn(|i| {
            spin::Mutex::new(CpuCache::new(i as u8, Limits::DEFAULT).expect("limits"))
        });
        Self {
            buddy: spin::Mutex::new(Some(buddy)),
            runs: Box::new(spin::Mutex::new(SmallRuns::new())),
            caches,
            hots: core::array::from_fn(|i| HotCache::new(i as u8)),
            states: FrameStates::new(layout, pages).expect("states"),
            pressure: AtomicU64::new(0),
            due: AtomicBool::new(false),
        }
    }

    fn reclaim_if_due(&self) {
        if self.due.load(Ordering::Relaxed) {
            self.due.store(false, Ordering::Relaxed);
        }
    }

    /// The bitmap layer's counters (chunk churn).
    pub fn chunks_taken(&self) -> u64 {
        self.runs.lock().stats().chunks_taken
    }
}

/// The kernel's `KernelBuddy`: the lock, then the pressure update when the usage moved.
struct LockedBuddy;

impl BuddyAccess for LockedBuddy {
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R {
        let lev = Levitate::get();
        let (r, report) = {
            let mut guard = lev.buddy.lock();
            let buddy = guard.as_mut().expect("built");
            let r = f(buddy);
            (r, buddy.usage_report())
        };
        if let Some((free, managed)) = report {
            let used = managed.saturating_sub(free);
            lev.pressure
                .store(used * 100 / managed.max(1), Ordering::Relaxed);
        }
        r
    }
}

/// The kernel's `KernelCaches`, with the CPU's index the kernel reads from a register.
struct LocalCaches {
    cpu: usize,
}

impl LocalCaches {
    #[inline(always)]
    fn lev(&self) -> &'static Levitate {
        Levitate::get()
    }
}

impl CacheAccess for LocalCaches {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        f(&mut self.lev().caches[self.cpu].lock())
    }

    #[inline]
    fn with_hot<R>(&mut self, f: impl FnOnce(&HotCache) -> R) -> Option<R> {
        Some(f(&self.lev().hots[self.cpu]))
    }

    fn with_local_hot<R>(&mut self, f: impl FnOnce(Option<&HotCache>, &mut CpuCache) -> R) -> R {
        f(
            Some(&self.lev().hots[self.cpu]),
            &mut self.lev().caches[self.cpu].lock(),
        )
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        for c in self.lev().caches.iter() {
            f(&mut c.lock());
        }
    }

    /// The kernel asks each CPU to answer; the bench's workloads never run out of memory, so a
    /// drain only ever runs with no other bench thread active, and it answers for every stash
    /// itself.
    fn hold_stashes(
        &mut self,
        _why: HoldFor,
        serve: &mut dyn FnMut(&HotCache, &mut CpuCache),
    ) -> bool {
        for (hot, ring) in self.lev().hots.iter().zip(self.lev().caches.iter()) {
            hot.request_hold();
            serve(hot, &mut ring.lock());
        }
        true
    }

    fn release_stashes(&mut self) {
        self.lev().hots.iter().for_each(HotCache::release_hold);
    }
}

/// Levitate's handle is the block's physical address (see [`Frames`]).
fn addr_of(handle: u64) -> PhysAddr {
    PhysAddr::new(handle)
}

fn handle_of(addr: PhysAddr) -> u64 {
    addr.as_u64()
}

/// The kernel's `KernelRuns`.
struct LockedRuns;

impl RunsAccess for LockedRuns {
    fn with_runs<R>(&mut self, f: impl FnOnce(&mut SmallRuns) -> R) -> R {
        f(&mut Levitate::get().runs.lock())
    }
}

impl Levitate {
    /// The kernel's `front()`: levitate-mm's front over this CPU's cache, the bitmap layer
    /// and the buddy, each behind its lock.
    fn front(&self, cpu: usize) -> Front<'_, 'static, LocalCaches, LockedRuns, LockedBuddy> {
        Front {
            caches: LocalCaches { cpu },
            runs: LockedRuns,
            buddy: LockedBuddy,
            states: &self.states,
        }
    }
}

impl Frames for Levitate {
    fn name(&self) -> &'static str {
        "levitate"
    }

    /// The kernel's `frames::alloc`: the route chosen here, each route a function of its own.
    fn alloc(&self, cpu: usize, order: u8) -> Option<u64> {
        let req = Request::new(order, Owner::Test);
        if pcp::for_buddy(&req) {
            self.alloc_from_buddy(cpu, order)
        } else {
            self.alloc_cached(cpu)
        }
    }

    /// The kernel's `frames::free_raw`, routed as it routes.
    fn free(&self, cpu: usize, frame: u64, order: u8) {
        if order == 0 {
            self.free_cached(cpu, frame)
        } else {
            self.free_to_buddy(cpu, frame, order)
        }
    }

    /// The kernel's `alloc_frames`: one frame through the cache, 2..=511 from the bitmap
    /// layer, more from the buddy; the caches drained and the idle chunk released before
    /// OutOfMemory.
    fn alloc_run(&self, cpu: usize, n: u64) -> Option<u64> {
        let r = self
            .front(cpu)
            .alloc_frames(n, Owner::Test, false, &mut NoMemory);
        self.reclaim_if_due();
        r.ok().map(|r| handle_of(r.addr))
    }

    fn free_run(&self, cpu: usize, frame: u64, n: u64) {
        let r = self
            .front(cpu)
            .free_frames(addr_of(frame), n, &mut NoMemory);
        self.reclaim_if_due();
        r.expect("the bench frees only what it holds");
    }

    fn run_cost(&self, n: u64) -> u64 {
        if n < bitmap::CHUNK_FRAMES {
            n
        } else {
            1 << order_for(n)
        }
    }
}

/// The routes of [`Frames::alloc`] and [`Frames::free`], apart as in the kernel (see
/// `Front::alloc`). The requests are built inside, from registers.
impl Levitate {
    #[inline(never)]
    fn alloc_cached(&self, cpu: usize) -> Option<u64> {
        let req = Request::new(0, Owner::Test);
        let r = self.front(cpu).alloc_cached(req, &mut NoMemory);
        self.reclaim_if_due();
        r.ok().map(|b| handle_of(b.addr))
    }

    #[inline(never)]
    fn alloc_from_buddy(&self, cpu: usize, order: u8) -> Option<u64> {
        let req = Request::new(order, Owner::Test);
        let r = self.front(cpu).alloc_from_buddy(req, &mut NoMemory);
        self.reclaim_if_due();
        r.ok().map(|b| handle_of(b.addr))
    }

    #[inline(never)]
    fn free_cached(&self, cpu: usize, frame: u64) {
        let r = self.front(cpu).free_cached(addr_of(frame), &mut NoMemory);
        self.reclaim_if_due();
        r.expect("the bench frees only what it holds");
    }

    #[inline(never)]
    fn free_to_buddy(&self, cpu: usize, frame: u64, order: u8) {
        let r = self
            .front(cpu)
            .free_to_buddy(addr_of(frame), order, &mut NoMemory);
        self.reclaim_if_due();
        r.expect("the bench frees only what it holds");
    }
}

impl Frames for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn alloc(&self, cpu: usize, order: u8) -> Option<u64> {
        Reference::alloc(self, cpu, order).map(u64::from)
    }

    fn free(&self, cpu: usize, frame: u64, order: u8) {
        Reference::free(self, cpu, frame as u32, order)
    }
}

/// buddy_system_allocator's `FrameAllocator` behind one lock (it has no per-CPU front).
pub struct Bsa(spin::Mutex<buddy_system_allocator::FrameAllocator<33>>);

impl Bsa {
    /// `frames` frames from 0.
    pub fn new(frames: u64) -> Self {
        let mut a = buddy_system_allocator::FrameAllocator::new();
        a.add_frame(0, frames as usize);
        Self(spin::Mutex::new(a))
    }
}

impl Frames for Bsa {
    fn name(&self) -> &'static str {
        "buddy_system_allocator"
    }

    fn alloc(&self, _cpu: usize, order: u8) -> Option<u64> {
        self.0.lock().alloc(1 << order).map(|f| f as u64)
    }

    fn free(&self, _cpu: usize, frame: u64, order: u8) {
        self.0.lock().dealloc(frame as usize, 1 << order)
    }
}

/// bitmap-allocator 0.2 (rcore-os; the frame allocator of rCore and ArceOS): a 16-way cascade
/// of bitmaps, one bit per frame, behind one lock. It has no per-CPU front and no misuse
/// checks beyond "was this bit already free". Blocks are `2^order` frames aligned to their
/// size; runs are exactly `n` frames (first fit), like Levitate's.
pub struct BitmapAlloc(spin::Mutex<Box<bitmap_allocator::BitAlloc1M>>);

impl BitmapAlloc {
    /// `frames` frames from 0 (at most 2^20).
    pub fn new(frames: u64) -> Self {
        use bitmap_allocator::BitAlloc;
        let mut a = Box::new(bitmap_allocator::BitAlloc1M::DEFAULT);
        a.insert(0..frames as usize);
        Self(spin::Mutex::new(a))
    }
}

impl Frames for BitmapAlloc {
    fn name(&self) -> &'static str {
        "bitmap_allocator"
    }

    fn alloc(&self, _cpu: usize, order: u8) -> Option<u64> {
        use bitmap_allocator::BitAlloc;
        let mut a = self.0.lock();
        if order == 0 {
            a.alloc()
        } else {
            a.alloc_contiguous(None, 1 << order, usize::from(order))
        }
        .map(|f| f as u64)
    }

    fn free(&self, _cpu: usize, frame: u64, order: u8) {
        use bitmap_allocator::BitAlloc;
        let freed = self.0.lock().dealloc_contiguous(frame as usize, 1 << order);
        assert!(freed, "the bench frees only what it holds");
    }

    fn alloc_run(&self, _cpu: usize, n: u64) -> Option<u64> {
        use bitmap_allocator::BitAlloc;
        let got = self.0.lock().alloc_contiguous(None, n as usize, 0);
        got.map(|f| f as u64)
    }

    fn free_run(&self, _cpu: usize, frame: u64, n: u64) {
        use bitmap_allocator::BitAlloc;
        let freed = self.0.lock().dealloc_contiguous(frame as usize, n as usize);
        assert!(freed, "the bench frees only what it holds");
    }

    fn run_cost(&self, n: u64) -> u64 {
        n
    }
}
