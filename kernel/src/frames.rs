//! The kernel's frame allocator: three layers from levitate-mm wired to the hardware. Per-CPU
//! caches of single frames (no global lock on the common path), the bitmap layer for runs of
//! 2..=511 frames, and the buddy over the mem_map behind one lock. This module supplies their
//! side of the contract: memory through the linear map (zeroing, poisoning), locks, and misuse
//! logged with the caller's location.

use crate::memory;
use crate::smp::{self, MAX_CPUS};
use core::panic::Location;
use core::sync::atomic::AtomicU8;
use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::bitmap::{self, BitmapStats, FrameError, Run, SmallRuns};
use levitate_mm::buddy::{
    AllocError, Block, Buddy, BuddyError, FrameMemory, FreeError, Owner, Request, Stats,
};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::pcp::{
    self, BuddyAccess, CacheAccess, CacheStats, CpuCache, FrameStates, Limits, PcpError,
};
use levitate_mm::region::Region;
use spin::{Mutex, Once};

/// Interrupts are masked whenever the kernel runs today and no interrupt handler allocates,
/// so holding these locks cannot deadlock against an interrupt; other CPUs wait. Lock order:
/// heap, page tables, the bitmap layer, one per-CPU cache, then the buddy.
static BUDDY: Mutex<Option<Buddy<'static>>> = Mutex::new(None);

/// Runs of 2..=511 frames (levitate_mm::bitmap). About 480 KiB of chunk table, in BSS.
static RUNS: Mutex<SmallRuns> = Mutex::new(SmallRuns::new());

/// One order-0 frame cache per CPU. Each is taken by its own CPU on the common path
/// (uncontended) and by others only to drain it.
static CACHES: [Mutex<CpuCache>; MAX_CPUS] = {
    let mut caches = [const { Mutex::new(new_cache(0)) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        caches[i] = Mutex::new(new_cache(i as u8));
        i += 1;
    }
    caches
};

const fn new_cache(id: u8) -> CpuCache {
    match CpuCache::new(id, Limits::DEFAULT) {
        Ok(c) => c,
        Err(_) => panic!("per-CPU cache limits are valid constants"),
    }
}

/// Frees refused at the front (every layer's misuse), for `meminfo`.
static REFUSED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Frees refused so far, all layers.
pub fn refused_frees() -> u64 {
    REFUSED.load(core::sync::atomic::Ordering::Relaxed)
}

fn refused(what: &dyn core::fmt::Display, caller: &Location<'_>) {
    REFUSED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    log::error!("frame allocator refused a free: {what} (caller {caller})");
}

/// The per-frame state bytes the caches use to catch misuse across CPUs.
static STATES: Once<FrameStates<'static>> = Once::new();

/// Frame contents through the linear map.
pub struct LinearMemory;

impl FrameMemory for LinearMemory {
    fn fill(&mut self, first: Pfn, frames: u64, byte: u8) {
        let bytes = (frames * PAGE_SIZE) as usize;
        // SAFETY: the allocators only pass frames they manage: usable RAM, mapped read-write
        // in the linear map, belonging to the block being zeroed or poisoned (nobody else holds
        // them at this moment).
        unsafe { core::ptr::write_bytes(memory::linear(first.addr()), byte, bytes) };
    }

    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr> {
        let bytes = (frames * PAGE_SIZE) as usize;
        // SAFETY: as for `fill`: managed, mapped frames of a free block, read only.
        let data = unsafe { core::slice::from_raw_parts(memory::linear(first.addr()), bytes) };
        let pattern = u64::from_ne_bytes([byte; 8]);
        // Word compares first (the common case is a match), then the exact byte.
        let word = data
            .chunks_exact(8)
            .position(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])) != pattern)?;
        let at = word * 8
            + data[word * 8..]
                .iter()
                .position(|&b| b != byte)
                .unwrap_or(0);
        Some(first.addr() + at as u64)
    }
}

/// The buddy through its lock; after each use, the pressure level is brought up to date
/// (outside the lock).
struct KernelBuddy;

impl BuddyAccess for KernelBuddy {
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R {
        let (r, free, managed) = {
            let mut guard = BUDDY.lock();
            let buddy = guard
                .as_mut()
                .expect("boot order invariant: frames::init runs before any frame allocation");
            let r = f(buddy);
            (r, buddy.free_frames(), buddy.managed_frames())
        };
        crate::pressure::update(free, managed);
        r
    }
}

/// This CPU's cache, or every online CPU's in turn.
struct KernelCaches;

impl CacheAccess for KernelCaches {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        f(&mut CACHES[smp::current().index].lock())
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        for c in &CACHES[..smp::MAX_CPUS] {
            f(&mut c.lock());
        }
    }
}

fn states() -> &'static FrameStates<'static> {
    STATES
        .get()
        .expect("boot order invariant: frames::init runs before any frame allocation")
}

/// Builds the buddy over the mem_map and the per-CPU cache state over `states`. Poisoning
/// starts on when asked (feature `poison` or the `poison` boot argument).
pub fn init(
    pages: &'static mut [Page],
    layout: &'static Layout,
    ram: &[Region],
    states: &'static [AtomicU8],
    poison: bool,
) -> Result<(), InitError> {
    let buddy = Buddy::new(pages, layout, ram).map_err(InitError::Buddy)?;
    *BUDDY.lock() = Some(buddy);
    let states = FrameStates::new(layout, states).map_err(InitError::Caches)?;
    let states = STATES.call_once(|| states);
    if poison {
        pcp::set_poisoning(states, &mut KernelBuddy, true, &mut LinearMemory);
    }
    Ok(())
}

/// Why the frame allocator could not start.
#[derive(Debug, Clone)]
pub enum InitError {
    /// The buddy refused the mem_map.
    Buddy(BuddyError),
    /// The per-CPU cache state is unusable.
    Caches(PcpError),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Buddy(e) => write!(f, "{e}"),
            Self::Caches(e) => write!(f, "{e}"),
        }
    }
}

/// Runs `f` on the buddy itself (statistics, diagnostics). Panics if called before `init`.
pub fn with<R>(f: impl FnOnce(&mut Buddy<'static>) -> R) -> R {
    let mut guard = BUDDY.lock();
    f(guard
        .as_mut()
        .expect("boot order invariant: frames::init runs before any frame allocation"))
}

/// Allocates a block: single frames through this CPU's cache, the rest from the buddy.
#[track_caller]
pub fn alloc(req: Request) -> Result<Block, AllocError> {
    let caller = Location::caller();
    let result = pcp::alloc(
        &mut KernelCaches,
        states(),
        &mut KernelBuddy,
        req,
        &mut LinearMemory,
    );
    if let Err(e @ AllocError::UseAfterFree { .. }) = &result {
        log::error!("frame allocator: {e} (allocation from {caller})");
    }
    crate::pressure::reclaim_if_due();
    result
}

/// Frees a block.
#[track_caller]
pub fn free(block: Block) -> Result<Owner, FreeError> {
    free_raw(block.addr, block.order)
}

/// Frees the block of 2^`order` frames at `addr` (for callers that keep addresses, like page
/// tables). Misuse is refused, logged here with the caller, and counted.
#[track_caller]
pub fn free_raw(addr: PhysAddr, order: u8) -> Result<Owner, FreeError> {
    let caller = Location::caller();
    let result = pcp::free(
        &mut KernelCaches,
        states(),
        &mut KernelBuddy,
        addr,
        order,
        &mut LinearMemory,
    );
    if let Err(e) = &result {
        refused(e, caller);
    }
    crate::pressure::reclaim_if_due();
    result
}

/// Allocates `n` contiguous frames at their exact cost: one frame through the per-CPU cache,
/// 2..=511 from the bitmap layer, more from the buddy (rounded to a power of two only there).
#[track_caller]
pub fn alloc_frames(n: u64, owner: Owner, zero: bool) -> Result<Run, FrameError> {
    if n == 1 {
        let req = Request {
            order: 0,
            owner,
            zero,
            below: None,
        };
        return alloc(req)
            .map(|b| bitmap::Run {
                addr: b.addr,
                frames: 1,
            })
            .map_err(FrameError::Alloc);
    }
    let attempt = || {
        let mut runs = RUNS.lock();
        KernelBuddy
            .with_buddy(|b| bitmap::alloc_frames(&mut runs, b, n, owner, zero, &mut LinearMemory))
    };
    let mut result = attempt();
    if matches!(
        result,
        Err(FrameError::Alloc(AllocError::OutOfMemory { .. }))
    ) {
        // The promise `pcp::alloc` keeps for blocks, kept for runs too: parked single frames
        // are free memory, and once back in the buddy they may merge into the run or block
        // this request needs. The bitmap layer's lock is released here; the drain takes one
        // cache at a time, then the buddy (the documented lock order).
        let drained = pcp::drain_all(
            &mut KernelCaches,
            states(),
            &mut KernelBuddy,
            &mut LinearMemory,
        );
        if let Some(e) = drained.use_after_free {
            // As in `pcp::alloc`: this call fails, the frame is poisoned again, a retry works.
            result = Err(FrameError::Alloc(e));
        } else if drained.frames > 0 {
            result = attempt();
        }
    }
    crate::pressure::reclaim_if_due();
    result
}

/// Frees `n` frames at `addr` allocated by `alloc_frames` (the same `n`).
#[track_caller]
pub fn free_frames(addr: PhysAddr, n: u64) -> Result<Owner, FrameError> {
    let caller = Location::caller();
    if n == 1 {
        // free_raw logs and counts its own refusals.
        return free_raw(addr, 0).map_err(FrameError::Free);
    }
    let result = {
        let mut runs = RUNS.lock();
        KernelBuddy.with_buddy(|b| bitmap::free_frames(&mut runs, b, addr, n, &mut LinearMemory))
    };
    if let Err(e) = &result {
        refused(e, caller);
    }
    crate::pressure::reclaim_if_due();
    result
}

/// Gives every frame parked in a per-CPU cache back to the buddy. Returns how many.
pub fn drain_caches() -> u64 {
    pcp::drain_all(
        &mut KernelCaches,
        states(),
        &mut KernelBuddy,
        &mut LinearMemory,
    )
    .frames
}

/// The buddy's statistics, once it exists.
pub fn stats() -> Option<Stats> {
    BUDDY.lock().as_ref().map(|b| b.stats())
}

/// The per-CPU caches' counters, summed.
pub fn cache_stats() -> (CacheStats, u64) {
    let mut sum = CacheStats::default();
    let mut parked = 0;
    for c in &CACHES {
        let c = c.lock();
        sum += c.stats();
        parked += c.len() as u64;
    }
    (sum, parked)
}

/// The bitmap layer's counters.
pub fn run_stats() -> BitmapStats {
    RUNS.lock().stats()
}

/// Runs every allocator layer's invariant checker: the buddy, the per-CPU caches (with every
/// cache locked, so the picture is consistent), the bitmap layer.
pub fn validate() -> Result<(), alloc::string::String> {
    use alloc::format;
    let outcome = {
        // Fixed arrays, not Vecs: allocating here could grow the heap, which takes frames
        // through this CPU's cache, whose lock is held below.
        let runs = RUNS.lock();
        let guards: [spin::MutexGuard<'_, CpuCache>; MAX_CPUS] =
            core::array::from_fn(|i| CACHES[i].lock());
        let caches: [&CpuCache; MAX_CPUS] = core::array::from_fn(|i| &*guards[i]);
        let buddy = BUDDY.lock();
        match buddy.as_ref() {
            None => Err(Failure::NotRunning),
            Some(buddy) => buddy
                .validate()
                .map_err(Failure::Buddy)
                .and_then(|()| pcp::validate(&caches, states(), buddy).map_err(Failure::Caches))
                .and_then(|()| runs.validate(buddy).map_err(Failure::Runs)),
        }
    };
    // Format only once every lock is released.
    outcome.map_err(|f| match f {
        Failure::NotRunning => "the frame allocator is not running".into(),
        Failure::Buddy(e) => format!("buddy: {e}"),
        Failure::Caches(e) => format!("per-CPU caches: {e}"),
        Failure::Runs(e) => format!("bitmap layer: {e}"),
    })
}

/// Which layer's checker failed.
enum Failure {
    NotRunning,
    Buddy(levitate_mm::buddy::Violation),
    Caches(pcp::Violation),
    Runs(levitate_mm::bitmap::BitmapViolation),
}

levitate_hal::ktest!(
    fn misuse_is_refused_logged_and_harmless() -> KtestResult {
        let free_before = stats().unwrap().free_frames + cache_stats().1;
        let refused_before = refused_frees();
        let block = alloc(Request::new(0, Owner::Test));
        levitate_hal::kassert!(block.is_ok());
        let block = block.unwrap();
        let addr = block.addr;
        levitate_hal::kassert!(free_raw(addr, 1).is_err(), "wrong order accepted");
        levitate_hal::kassert!(
            free_raw(addr + 8, 0).is_err(),
            "misaligned address accepted"
        );
        levitate_hal::kassert!(free(block).is_ok());
        levitate_hal::kassert!(free_raw(addr, 0).is_err(), "double free accepted");
        levitate_hal::kassert!(
            free_raw(PhysAddr::new(0x10_0000), 0).is_err(),
            "address outside RAM accepted"
        );
        let run = alloc_frames(3, Owner::Test, false);
        levitate_hal::kassert!(run.is_ok());
        let run = run.unwrap();
        levitate_hal::kassert!(
            free_frames(run.addr, 2).is_err(),
            "wrong run length accepted"
        );
        levitate_hal::kassert!(free_frames(run.addr, 3).is_ok());
        levitate_hal::kassert!(
            free_frames(run.addr, 3).is_err(),
            "double free of a run accepted"
        );
        levitate_hal::kassert_eq!(refused_frees(), refused_before + 6);
        levitate_hal::kassert_eq!(stats().unwrap().free_frames + cache_stats().1, free_before);
        levitate_hal::kassert!(validate().is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn runs_cost_exactly_their_frames() -> KtestResult {
        let before = run_stats();
        let run = alloc_frames(3, Owner::Test, true).unwrap();
        levitate_hal::kassert_eq!(run.frames, 3);
        levitate_hal::kassert_eq!(LinearMemory.find_not(run.pfn(), 3, 0), None);
        let during = run_stats();
        levitate_hal::kassert_eq!(during.frames_in_use, before.frames_in_use + 3);
        levitate_hal::kassert!(free_frames(run.addr, 3).is_ok());
        levitate_hal::kassert_eq!(run_stats().frames_in_use, before.frames_in_use);
        levitate_hal::kassert!(validate().is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn zeroed_blocks_read_zero_and_limits_hold() -> KtestResult {
        let block = alloc(Request::new(2, Owner::Test).zeroed());
        levitate_hal::kassert!(block.is_ok());
        let block = block.unwrap();
        levitate_hal::kassert_eq!(LinearMemory.find_not(block.pfn(), 4, 0), None);
        let low = alloc(Request::new(0, Owner::Test).below(PhysAddr::new(1 << 32)));
        levitate_hal::kassert!(low.as_ref().is_ok_and(|b| b.addr.as_u64() < 1 << 32));
        levitate_hal::kassert!(free(block).is_ok());
        levitate_hal::kassert!(free(low.unwrap()).is_ok());
        levitate_hal::kassert!(validate().is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn poisoning_catches_a_write_after_free() -> KtestResult {
        if !stats().unwrap().poisoning {
            return Ok(()); // only meaningful in the `poison` boot of the matrix
        }
        // An order-1 block goes straight back to the buddy (single frames park in a cache).
        let block = alloc(Request::new(1, Owner::Test)).unwrap();
        let addr = block.addr;
        levitate_hal::kassert!(free(block).is_ok());
        // A use after free: write into the freed frame.
        // SAFETY: deliberately writing a free frame (mapped in the linear map) to check that
        // poisoning notices; the poison is restored below.
        unsafe { memory::linear(addr + 0x40).write_volatile(0x11) };
        let found = with(|b| b.find_use_after_free(&LinearMemory));
        LinearMemory.fill(addr.pfn(), 2, levitate_mm::buddy::POISON);
        levitate_hal::kassert!(
            matches!(found, Some(AllocError::UseAfterFree { addr: a, .. }) if a == addr + 0x40),
            "the write after free was not found at its address"
        );
        levitate_hal::kassert!(with(|b| b.find_use_after_free(&LinearMemory)).is_none());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn no_free_frame_is_stranded_in_a_cache_at_out_of_memory() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        // Park frames in every CPU's cache: each CPU allocates and frees a few dozen.
        smp::run_on_all(
            |_| {
                let mut v: [Option<Block>; 40] = [const { None }; 40];
                for slot in v.iter_mut() {
                    *slot = alloc(Request::new(0, Owner::Test)).ok();
                }
                for b in v.into_iter().flatten() {
                    let _ = free(b);
                }
                0
            },
            0,
        );
        let mut blocks: Vec<Block> = Vec::new();
        levitate_hal::kassert!(blocks.try_reserve_exact(16384).is_ok());
        // Exhaust memory: 2 MiB blocks first, then single frames.
        while blocks.len() < blocks.capacity() {
            match alloc(Request::new(9, Owner::Test)) {
                Ok(b) => blocks.push(b),
                Err(_) => break,
            }
        }
        let mut singles = 0;
        let exhausted = loop {
            if blocks.len() == blocks.capacity() {
                break false;
            }
            match alloc(Request::new(0, Owner::Test)) {
                Ok(b) => {
                    blocks.push(b);
                    singles += 1;
                }
                Err(AllocError::OutOfMemory { .. }) => break true,
                Err(_) => break false,
            }
        };
        let parked = cache_stats().1;
        let buddy_free = stats().unwrap().free_frames;
        let mut all_freed = true;
        for b in blocks {
            all_freed &= free(b).is_ok();
        }
        levitate_hal::kassert!(all_freed);
        levitate_hal::kassert!(exhausted, "memory did not run out (raise the reservation)");
        levitate_hal::kassert!(singles > 0);
        levitate_hal::kassert_eq!(parked, 0);
        levitate_hal::kassert_eq!(buddy_free, 0);
        levitate_hal::kassert!(validate().is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn runs_drain_the_caches_before_out_of_memory() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        use levitate_mm::buddy::MAX_ORDER;
        // Two single frames that form an aligned pair (an order-1 block once both are back in
        // the buddy), taken through this CPU's cache.
        let mut singles: Vec<Block> = Vec::new();
        levitate_hal::kassert!(singles.try_reserve_exact(256).is_ok());
        let mut pair = None;
        while pair.is_none() && singles.len() < singles.capacity() {
            let Ok(b) = alloc(Request::new(0, Owner::Test)) else {
                break;
            };
            singles.push(b);
            singles.sort_unstable_by_key(|b| b.addr);
            pair = singles.windows(2).position(|w| {
                w[0].pfn().as_u64().is_multiple_of(2) && w[1].addr == w[0].addr + PAGE_SIZE
            });
        }
        let pair = pair.map(|i| [singles.remove(i), singles.remove(i)]);
        for b in singles.drain(..) {
            let _ = free(b);
        }
        levitate_hal::kassert!(pair.is_some(), "no aligned pair among 256 cached frames");
        let Some(pair) = pair else { return Ok(()) };
        let pair_addr = pair[0].addr;
        // Exhaust memory: every block of order 1 and up, the runs the bitmap layer's chunks
        // still have room for, then single frames. Room reserved first, so nothing below grows
        // the heap.
        let mut blocks: Vec<Block> = Vec::new();
        let mut runs: Vec<Run> = Vec::new();
        levitate_hal::kassert!(blocks.try_reserve_exact(16384).is_ok());
        levitate_hal::kassert!(runs.try_reserve_exact(16384).is_ok());
        for order in (1..=MAX_ORDER).rev() {
            while blocks.len() < blocks.capacity() {
                match alloc(Request::new(order, Owner::Test)) {
                    Ok(b) => blocks.push(b),
                    Err(_) => break,
                }
            }
        }
        while runs.len() < runs.capacity() {
            match alloc_frames(2, Owner::Test, false) {
                Ok(r) => runs.push(r),
                Err(_) => break,
            }
        }
        while blocks.len() < blocks.capacity() {
            match alloc(Request::new(0, Owner::Test)) {
                Ok(b) => blocks.push(b),
                Err(_) => break,
            }
        }
        let exhausted = stats().unwrap().free_frames == 0 && cache_stats().1 == 0;
        // The pair goes back to this CPU's cache: free memory, but only a drain gives it to
        // the buddy, where it merges into the order-1 block a 2-frame run can use.
        let [a, b] = pair;
        let parked_ok = free(a).is_ok() && free(b).is_ok() && cache_stats().1 == 2;
        let run = alloc_frames(2, Owner::Test, false);
        let got = run.as_ref().map(|r| r.addr).ok();
        let mut all_freed = run.map_or(true, |r| free_frames(r.addr, 2).is_ok());
        for r in runs {
            all_freed &= free_frames(r.addr, 2).is_ok();
        }
        for b in blocks {
            all_freed &= free(b).is_ok();
        }
        levitate_hal::kassert!(exhausted, "memory did not run out (raise the reservation)");
        levitate_hal::kassert!(parked_ok, "the pair was not parked in this CPU's cache");
        levitate_hal::kassert_eq!(got, Some(pair_addr));
        levitate_hal::kassert!(all_freed);
        levitate_hal::kassert!(validate().is_ok());
        Ok(())
    }
);
