//! The kernel's frame allocator: three layers from levitate-mm wired to the hardware. Per-CPU
//! caches of single frames (no global lock on the common path), the bitmap layer for runs of
//! 2..=511 frames, and the buddy over the mem_map behind one lock. This module supplies their
//! side of the contract: memory through the linear map (zeroing, poisoning), locks, and misuse
//! logged with the caller's location.

use super::physmem;
use crate::percpu::{self, MAX_CPUS};
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use levitate_hal::arch::aarch64::{cpu, timer};
use levitate_hal::sync::{IrqGuard, IrqSafeMutex, IrqSafeMutexGuard};
use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::bitmap::{BitmapStats, FrameError, Run, SmallRuns};
use levitate_mm::buddy::{
    AllocError, Block, Buddy, BuddyError, FrameMemory, FreeError, Owner, Request, Stats,
};
use levitate_mm::front::{Front, RunsAccess};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::pcp::{
    self, BuddyAccess, CacheAccess, CacheStats, CpuCache, FrameStates, HoldFor, HotCache, Limits,
    PcpError,
};
use levitate_mm::region::Region;
use spin::Once;

// Every lock of this module is an `IrqSafeMutex`: taken with IRQ+FIQ masked on the CPU that
// holds it (Linux's spin_lock_irqsave), because interrupt handlers allocate frames (the tick's
// `irqstress` among them). A handler therefore never finds one of these held by the code it
// interrupted on its own CPU; a holder on another CPU finishes and releases it, since no path
// waits for an interrupt while holding one. Lock order (outermost first): heap, page tables,
// the bitmap layer `RUNS`, one per-CPU cache in `CACHES` (draining takes them one at a time),
// then `BUDDY`. `validate` alone takes every cache at once, in index order, under `RUNS`.
// Masked time: the common path (a cache hit) masks for well under a microsecond; a refill or
// drain moves up to a batch of frames under the buddy; `validate` walks the whole mem_map
// under every lock (docs/interrupts.md, "Locks and masking", gives the measured figures).

/// The buddy over the mem_map: every block of 2^order frames and its owner. Innermost lock.
static BUDDY: IrqSafeMutex<Option<Buddy<'static>>> = IrqSafeMutex::new(None);

/// Runs of 2..=511 frames (levitate_mm::bitmap). About 480 KiB of chunk table, in BSS. Taken
/// before the buddy (its chunks come from there).
static RUNS: IrqSafeMutex<SmallRuns> = IrqSafeMutex::new(SmallRuns::new());

/// One order-0 frame cache (the ring behind the stash) per CPU. Each is taken by its own CPU
/// when its stash is empty, full or held (uncontended), and by others only to drain it or to
/// read it (`validate`, `cache_stats`). The owner enters its cache with interrupts masked
/// (`KernelCaches::with_local`, Linux's local_lock_irqsave), so a handler on the same CPU
/// cannot interleave with the owner's half-done list operation; a draining CPU holds the
/// lock, so it cannot either.
static CACHES: [IrqSafeMutex<CpuCache>; MAX_CPUS] = {
    let mut caches = [const { IrqSafeMutex::new(new_cache(0)) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        caches[i] = IrqSafeMutex::new(new_cache(i as u8));
        i += 1;
    }
    caches
};

/// One stash of order-0 frames per CPU, in front of its ring: no lock, because only CPU `i`
/// touches `HOTS[i]` (with interrupts masked: `KernelCaches::with_hot`), so the common alloc
/// and free take no lock at all (levitate_mm::pcp::HotCache). Other CPUs only read it, or
/// ask its CPU to empty it (a hold, answered by that CPU's next allocator call, its tick, or
/// its idle loop: `serve_holds`). Every field is an atomic: a wrong CPU touching a stash
/// would lose frames, never break memory safety.
static HOTS: [HotCache; MAX_CPUS] = {
    let mut hots = [const { HotCache::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        hots[i] = HotCache::new(i as u8);
        i += 1;
    }
    hots
};

/// How long a CPU that needs the stashes' frames (out of memory, reclaim) waits for the other
/// CPUs that hold some to answer: a CPU answers at its next allocator call, its next tick
/// (10 ms at the default rate) or at once when idle (the request wakes it with an event).
/// Short, because the waiter may hold a lock (the heap's, say) that a CPU which would answer
/// spins on with interrupts masked: then the frames of that one stash are missed.
const HOLD_WAIT_FRAMES_US: u64 = 20_000;

/// The same for `validate`, which needs every stash frozen: long enough for a CPU that the
/// host does not schedule for a while (8 emulated CPUs on 2 host cores).
const HOLD_WAIT_CHECK_US: u64 = 1_000_000;

// The masked-interval recorder keeps a slot per CPU the kernel can run.
const _: () = assert!(MAX_CPUS <= levitate_hal::sync::MAX_CPUS);

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
        unsafe { core::ptr::write_bytes(physmem::linear(first.addr()), byte, bytes) };
    }

    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr> {
        let bytes = (frames * PAGE_SIZE) as usize;
        // SAFETY: as for `fill`: managed, mapped frames of a free block, read only.
        let data = unsafe { core::slice::from_raw_parts(physmem::linear(first.addr()), bytes) };
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

/// The buddy through its lock; after a use that moved the free frames by 0.1 % of RAM or more
/// (`Buddy::usage_report`), the policy above hears the new figures (`hooks::usage`, outside
/// the lock).
struct KernelBuddy;

impl BuddyAccess for KernelBuddy {
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R {
        let (r, report) = {
            let mut guard = BUDDY.lock();
            let buddy = guard
                .as_mut()
                .expect("boot order invariant: frames::init runs before any frame allocation");
            let r = f(buddy);
            (r, buddy.usage_report())
        };
        if let Some((free, managed)) = report {
            super::hooks::usage(free, managed);
        }
        r
    }
}

/// This CPU's stash and cache, or every CPU's cache in turn.
struct KernelCaches;

impl CacheAccess for KernelCaches {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        self.with_local_hot(|_, cache| f(cache))
    }

    /// Interrupts masked, then this CPU's stash: nothing else of this CPU can touch it until
    /// `f` returns (the one-owner rule of `HotCache`), and no other CPU writes it.
    #[inline(always)]
    fn with_hot<R>(&mut self, f: impl FnOnce(&HotCache) -> R) -> Option<R> {
        let irq = IrqGuard::new();
        let r = f(&HOTS[percpu::index()]);
        drop(irq);
        Some(r)
    }

    fn with_local_hot<R>(&mut self, f: impl FnOnce(Option<&HotCache>, &mut CpuCache) -> R) -> R {
        // Mask first, then pick the cache: nothing can run on this CPU between choosing it
        // and locking it (local_lock_irqsave).
        let irq = IrqGuard::new();
        let me = percpu::index();
        let mut cache = CACHES[me].lock();
        let r = f(Some(&HOTS[me]), &mut cache);
        // Lock guard first, then the outer guard: reverse order of creation (a temporary in
        // the tail expression would outlive `irq` and restore a masked state last).
        drop(cache);
        drop(irq);
        r
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        for c in &CACHES[..MAX_CPUS] {
            f(&mut c.lock());
        }
    }

    /// Holds every stash, wakes idle CPUs (an event: their idle loop answers), and waits up to
    /// `HOLD_WAIT_FRAMES_US` (a drain: only for CPUs whose stash has frames) or
    /// `HOLD_WAIT_CHECK_US` (`validate`: every CPU) for the other online CPUs to answer, answering this CPU's own
    /// holds meanwhile (two CPUs holding each other at once both get their answer). A CPU
    /// that never answers (stuck with interrupts masked) costs the wait and its stashed frames
    /// stay where they are: reported as `false`.
    fn hold_stashes(
        &mut self,
        why: HoldFor,
        _serve: &mut dyn FnMut(&HotCache, &mut CpuCache),
    ) -> bool {
        let me = percpu::index();
        let mut tickets = [None; MAX_CPUS];
        for (i, hot) in HOTS.iter().enumerate() {
            let ticket = hot.request_hold();
            let needed = why == HoldFor::Check || !hot.is_empty();
            if i != me && percpu::is_online(i) && needed {
                tickets[i] = Some(ticket);
            }
        }
        // DSB then SEV (`cpu::send_event`): SEV orders no memory access, so without the barrier
        // a CPU woken from WFE could read the hold count before our increment is visible
        // (ARM ARM, "Wait for Event mechanism and Send event": SEV is not ordered by DMB; B2.3:
        // a DSB completes every earlier memory access).
        cpu::send_event();
        let start = timer::ticks();
        let wait_us = match why {
            HoldFor::Frames => HOLD_WAIT_FRAMES_US,
            HoldFor::Check => HOLD_WAIT_CHECK_US,
        };
        let budget = timer::frequency().saturating_mul(wait_us) / 1_000_000;
        let mut round = 0u32;
        loop {
            serve_holds();
            let pending = HOTS
                .iter()
                .zip(&tickets)
                .any(|(hot, t)| t.is_some_and(|t| !hot.answered(t)));
            if !pending {
                return true;
            }
            let waited = timer::ticks().wrapping_sub(start);
            if waited > budget {
                return false;
            }
            // Wake idle CPUs again now and then: one may have gone back to sleep just before
            // the first event (its loop answers only before it waits).
            round = round.wrapping_add(1);
            if round.is_multiple_of(256) {
                cpu::send_event();
            }
            core::hint::spin_loop();
        }
    }

    fn release_stashes(&mut self) {
        HOTS.iter().for_each(HotCache::release_hold);
    }
}

/// Answers a hold on this CPU's stash, if one is pending (two loads when none is). Called by
/// the tick on every CPU and by an idle CPU's loop, so a CPU that does not allocate still
/// answers.
pub fn serve_holds() {
    if STATES.get().is_some() {
        pcp::serve_holds(
            &mut KernelCaches,
            states(),
            &mut KernelBuddy,
            &mut LinearMemory,
        );
    }
}

fn states() -> &'static FrameStates<'static> {
    STATES
        .get()
        .expect("boot order invariant: frames::init runs before any frame allocation")
}

/// Builds the buddy over the mem_map, and the per-CPU caches' state bytes inside the same
/// entries. Poisoning starts on when asked (feature `poison` or the `poison` boot argument).
pub fn init(
    pages: &'static [Page],
    layout: &'static Layout,
    ram: &[Region],
    poison: bool,
) -> Result<(), InitError> {
    let buddy = Buddy::new(pages, layout, ram).map_err(InitError::Buddy)?;
    *BUDDY.lock() = Some(buddy);
    let states = FrameStates::new(layout, pages).map_err(InitError::Caches)?;
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

/// The bitmap layer through its lock.
struct KernelRuns;

impl RunsAccess for KernelRuns {
    fn with_runs<R>(&mut self, f: impl FnOnce(&mut SmallRuns) -> R) -> R {
        f(&mut RUNS.lock())
    }
}

/// The three layers as levitate-mm's front sees them (the same front the host bench runs).
fn front() -> Front<'static, 'static, KernelCaches, KernelRuns, KernelBuddy> {
    Front {
        caches: KernelCaches,
        runs: KernelRuns,
        buddy: KernelBuddy,
        states: states(),
    }
}

/// Allocates a block: single frames through this CPU's cache, the rest from the buddy.
#[track_caller]
pub fn alloc(req: Request) -> Result<Block, AllocError> {
    let caller = Location::caller();
    let result = if pcp::for_buddy(&req) {
        alloc_from_buddy(req)
    } else {
        alloc_cached(req)
    };
    if let Err(e @ AllocError::UseAfterFree { .. }) = &result {
        log::error!("frame allocator: {e} (allocation from {caller})");
    }
    super::hooks::after_op();
    result
}

/// [`alloc`]'s two routes, each a function of its own, so the cache route's hot path saves
/// none of the registers the buddy route needs (levitate_mm::front::Front::alloc says why).
#[inline(never)]
fn alloc_cached(req: Request) -> Result<Block, AllocError> {
    front().alloc_cached(req, &mut LinearMemory)
}

#[inline(never)]
fn alloc_from_buddy(req: Request) -> Result<Block, AllocError> {
    front().alloc_from_buddy(req, &mut LinearMemory)
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
    let result = if order == 0 {
        free_cached(addr)
    } else {
        free_to_buddy(addr, order)
    };
    if let Err(e) = &result {
        refused(e, caller);
    }
    super::hooks::after_op();
    result
}

/// [`free_raw`]'s two routes, apart for the reason [`alloc`]'s are.
#[inline(never)]
fn free_cached(addr: PhysAddr) -> Result<Owner, FreeError> {
    front().free_cached(addr, &mut LinearMemory)
}

#[inline(never)]
fn free_to_buddy(addr: PhysAddr, order: u8) -> Result<Owner, FreeError> {
    front().free_to_buddy(addr, order, &mut LinearMemory)
}

/// Allocates `n` contiguous frames at their exact cost: one frame through the per-CPU cache,
/// 2..=511 from the bitmap layer, more from the buddy (rounded to a power of two only there).
/// Before `OutOfMemory` the caches are drained and the bitmap layer's idle chunk released
/// (levitate_mm::front).
#[track_caller]
pub fn alloc_frames(n: u64, owner: Owner, zero: bool) -> Result<Run, FrameError> {
    let caller = Location::caller();
    let result = front().alloc_frames(n, owner, zero, &mut LinearMemory);
    if let Err(FrameError::Alloc(e @ AllocError::UseAfterFree { .. })) = &result {
        log::error!("frame allocator: {e} (allocation from {caller})");
    }
    super::hooks::after_op();
    result
}

/// Frees `n` frames at `addr` allocated by `alloc_frames` (the same `n`).
#[track_caller]
pub fn free_frames(addr: PhysAddr, n: u64) -> Result<Owner, FrameError> {
    let caller = Location::caller();
    let result = front().free_frames(addr, n, &mut LinearMemory);
    if let Err(e) = &result {
        refused(e, caller);
    }
    super::hooks::after_op();
    result
}

/// Gives back the frames kept free for speed: every frame parked in a per-CPU cache and the
/// bitmap layer's idle chunk. Returns how many.
pub fn drain_caches() -> u64 {
    front().release_cached(&mut LinearMemory).frames
}

/// The buddy's statistics, once it exists.
pub fn stats() -> Option<Stats> {
    BUDDY.lock().as_ref().map(|b| b.stats())
}

/// The per-CPU caches' counters, stashes included, summed, and the frames they keep parked.
/// The stashes are read while their CPUs run: each figure is one the stash had a moment ago.
pub fn cache_stats() -> (CacheStats, u64) {
    let mut sum = CacheStats::default();
    let mut parked = 0;
    for (c, hot) in CACHES.iter().zip(&HOTS) {
        let c = c.lock();
        sum += c.stats();
        sum += hot.stats();
        parked += (c.len() + hot.len()) as u64;
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
    // Every stash emptied into its ring and held so until the check is done: the stashes
    // have no lock to freeze them with.
    let answered = pcp::hold_stashes(
        &mut KernelCaches,
        HoldFor::Check,
        states(),
        &mut KernelBuddy,
        &mut LinearMemory,
    );
    if !answered {
        KernelCaches.release_stashes();
        return Err(
            "per-CPU caches: not checked, a CPU did not empty its stash in time \
                    (busy with interrupts masked?)"
                .into(),
        );
    }
    let outcome = {
        // One guard around the lot: the cache guards below are dropped in index order, not
        // in reverse, so each must restore a masked state; this one unmasks last.
        let _irq = IrqGuard::new();
        // Fixed arrays, not Vecs: allocating here could grow the heap, which takes frames
        // through this CPU's cache, whose lock is held below.
        let runs = RUNS.lock();
        let guards: [IrqSafeMutexGuard<'_, CpuCache>; MAX_CPUS] =
            core::array::from_fn(|i| CACHES[i].lock());
        let caches: [&CpuCache; MAX_CPUS] = core::array::from_fn(|i| &*guards[i]);
        let hots: [&HotCache; MAX_CPUS] = core::array::from_fn(|i| &HOTS[i]);
        let buddy = BUDDY.lock();
        match buddy.as_ref() {
            None => Err(Failure::NotRunning),
            Some(buddy) => buddy
                .validate()
                .map_err(Failure::Buddy)
                .and_then(|()| {
                    pcp::validate(&caches, &hots, states(), buddy).map_err(Failure::Caches)
                })
                .and_then(|()| runs.validate(buddy).map_err(Failure::Runs)),
        }
    };
    KernelCaches.release_stashes();
    // Format only once every lock is released.
    outcome.map_err(|f| match f {
        Failure::NotRunning => "the frame allocator is not running".into(),
        Failure::Buddy(e) => format!("buddy: {e}"),
        Failure::Caches(e) => format!("per-CPU caches: {e}"),
        Failure::Runs(e) => format!("bitmap layer: {e}"),
    })
}

/// Frames the poison scan reads per hold of the buddy's lock: 1 MiB, a few milliseconds with
/// interrupts masked on QEMU (docs/interrupts.md), instead of about a second per GiB for one
/// scan of everything.
const POISON_SCAN_CHUNK: u64 = 256;

/// With poisoning on, checks that every frame the buddy keeps free still holds the poison (a
/// write into a free frame is a use after free); `None` when poisoning is off, else the frames
/// scanned or the first write found. The scan goes through physical memory in chunks of
/// `POISON_SCAN_CHUNK` frames, taking the buddy's lock once per chunk and reading, of every
/// free block, the part inside the chunk: a frame that stays free during the whole scan is
/// read exactly once (blocks may merge, split or move between chunks; whatever is free while
/// a chunk is held is free for all of that chunk's reads).
pub fn scan_poison() -> Option<Result<u64, AllocError>> {
    if !with(|b| b.poisoning()) {
        return None;
    }
    let ram: alloc::vec::Vec<Region> = physmem::map().memory().to_vec();
    let chunk = POISON_SCAN_CHUNK * PAGE_SIZE;
    let mut scanned = 0;
    for r in ram {
        let end = r.base.as_u64().saturating_add(r.size);
        let mut lo = r.base.as_u64() & !(chunk - 1);
        while lo < end {
            let hi = lo.saturating_add(chunk).min(end);
            let found = with(|b| {
                let mut n = 0;
                for blk in b.free_blocks() {
                    let start = blk.addr.as_u64();
                    let stop = start + (PAGE_SIZE << blk.order);
                    let (from, to) = (start.max(lo), stop.min(hi));
                    if from >= to {
                        continue;
                    }
                    let frames = (to - from) / PAGE_SIZE;
                    n += frames;
                    let first = PhysAddr::new(from).pfn();
                    if let Some(addr) =
                        LinearMemory.find_not(first, frames, levitate_mm::buddy::POISON)
                    {
                        return Err(AllocError::UseAfterFree {
                            addr,
                            block: blk.addr,
                            order: blk.order,
                        });
                    }
                }
                Ok(n)
            });
            match found {
                Ok(n) => scanned += n,
                Err(e) => return Some(Err(e)),
            }
            lo = hi;
        }
    }
    Some(Ok(scanned))
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
        // Free memory wherever it is kept: the buddy, the caches, free frames in bitmap chunks
        // (the run below may leave its chunk as the layer's idle chunk).
        let free_now = || stats().unwrap().free_frames + cache_stats().1 + run_stats().frames_free;
        let free_before = free_now();
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
        levitate_hal::kassert_eq!(free_now(), free_before);
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
        unsafe { physmem::linear(addr + 0x40).write_volatile(0x11) };
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

/// The stuck CPU of `a_cpu_that_never_answers_a_hold_is_reported_not_waited_for`: 1 once
/// it parked its frames and masked interrupts, 2 to let it go, 3 once it returned.
#[cfg(feature = "ktest")]
static STUCK: AtomicUsize = AtomicUsize::new(0);

/// A job for CPU 1: park eight frames in its stash, then spin with interrupts masked (so it
/// answers no hold) until told to stop, at most about three seconds.
#[cfg(feature = "ktest")]
fn park_and_get_stuck(_: usize) -> u64 {
    let mut blocks: [Option<Block>; 8] = [const { None }; 8];
    for b in blocks.iter_mut() {
        *b = alloc(Request::new(0, Owner::Test)).ok();
    }
    for b in blocks.into_iter().flatten() {
        let _ = free(b);
    }
    let irq = IrqGuard::new();
    STUCK.store(1, Ordering::Release);
    let start = timer::ticks();
    let limit = timer::frequency().saturating_mul(3);
    while STUCK.load(Ordering::Acquire) == 1 && timer::ticks().wrapping_sub(start) < limit {
        core::hint::spin_loop();
    }
    drop(irq);
    STUCK.store(3, Ordering::Release);
    0
}

levitate_hal::ktest!(
    fn a_cpu_that_never_answers_a_hold_is_reported_not_waited_for() -> KtestResult {
        if !percpu::is_online(1) {
            log::info!("ktest: one CPU only, nothing to hold");
            return Ok(());
        }
        STUCK.store(0, Ordering::Release);
        levitate_hal::kassert!(crate::smp::start_detached(1, park_and_get_stuck, 0));
        while STUCK.load(Ordering::Acquire) == 0 {
            core::hint::spin_loop();
        }
        let stashed = HOTS[1].len();
        // `validate` cannot freeze CPU 1's stash: it says so instead of checking (no false
        // alarm, no hang); a drain takes everything else and leaves that stash alone.
        let checked = validate();
        drain_caches();
        let parked_after = cache_stats().1;
        STUCK.store(2, Ordering::Release);
        while STUCK.load(Ordering::Acquire) != 3 {
            core::hint::spin_loop();
        }
        // CPU 1 answers again at its next tick or idle loop: the check and the drain work.
        let checked_after = validate();
        drain_caches();
        levitate_hal::kassert!(stashed > 0, "CPU 1 parked nothing in its stash");
        levitate_hal::kassert!(
            checked.as_ref().is_err_and(|e| e.contains("not checked")),
            "validate with a stuck CPU did not say the caches were not checked"
        );
        levitate_hal::kassert!(
            parked_after >= stashed as u64,
            "the stuck stash was drained"
        );
        levitate_hal::kassert!(
            checked_after.is_ok(),
            "validate failed once CPU 1 was free again"
        );
        levitate_hal::kassert_eq!(HOTS[1].len(), 0);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn no_free_frame_is_stranded_in_a_cache_at_out_of_memory() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        // Park frames in every CPU's cache: each CPU allocates and frees a few dozen.
        crate::smp::run_on_all(
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

// ---- Allocation from interrupt context: the tick's stress -------------------------------

/// Whether `tick_stress` does anything (`irqstat stress on|off`, or a boot argument the lead
/// may add).
static TICK_STRESS_ON: AtomicBool = AtomicBool::new(false);
/// Set while `stress frames` takes its before/after snapshots: ticks skip their work then, so
/// MemFree compares like with like.
static TICK_STRESS_PAUSED: AtomicUsize = AtomicUsize::new(0);
/// `tick_stress` calls running now, on any CPU.
static TICK_STRESS_ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// One CPU's tick-stress counts, on its own cache line (only that CPU's ticks write it).
#[repr(align(64))]
struct TickCounts {
    /// Calls that did the work.
    runs: AtomicU64,
    /// Allocations that succeeded (frames, runs and heap objects).
    allocations: AtomicU64,
    /// Allocations refused (out of memory: not an error).
    refused: AtomicU64,
    /// Wrong contents, or a free the allocator refused: always a bug.
    errors: AtomicU64,
}

static TICK_COUNTS: [TickCounts; MAX_CPUS] = [const {
    TickCounts {
        runs: AtomicU64::new(0),
        allocations: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// One CPU's tick-stress figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickStress {
    /// Calls that did the work.
    pub runs: u64,
    /// Successful allocations.
    pub allocations: u64,
    /// Allocations refused for lack of memory.
    pub refused: u64,
    /// Corruptions or refused frees seen.
    pub errors: u64,
}

/// Turns the tick's allocation stress on or off.
pub fn set_tick_stress(on: bool) {
    TICK_STRESS_ON.store(on, Ordering::Release);
}

/// Whether the tick's allocation stress is on.
pub fn tick_stress_enabled() -> bool {
    TICK_STRESS_ON.load(Ordering::Acquire)
}

/// CPU `cpu`'s tick-stress figures.
pub fn tick_stress_counts(cpu: usize) -> TickStress {
    TICK_COUNTS
        .get(cpu)
        .map_or_else(TickStress::default, |c| TickStress {
            runs: c.runs.load(Ordering::Relaxed),
            allocations: c.allocations.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        })
}

/// Zeroes every CPU's tick-stress figures.
pub fn reset_tick_stress() {
    for c in &TICK_COUNTS {
        for v in [&c.runs, &c.allocations, &c.refused, &c.errors] {
            v.store(0, Ordering::Relaxed);
        }
    }
}

/// Stops the tick's stress until the returned guard is dropped, and waits until no CPU is in
/// the middle of one: what the frame allocator counts is then only the caller's doing.
pub fn pause_tick_stress() -> TickStressPause {
    TICK_STRESS_PAUSED.fetch_add(1, Ordering::SeqCst);
    // Pairs with the increment-then-check in `tick_stress` (both SeqCst): either that call
    // sees the pause, or this loop sees it running and waits for it to finish.
    while TICK_STRESS_ACTIVE.load(Ordering::SeqCst) != 0 {
        core::hint::spin_loop();
    }
    TickStressPause(())
}

/// The tick's stress is paused while this lives.
pub struct TickStressPause(());

impl Drop for TickStressPause {
    fn drop(&mut self) {
        TICK_STRESS_PAUSED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the timer tick calls on every tick (from its interrupt handler, IRQs masked) to prove
/// the allocators safe in interrupt context: when enabled, it allocates and frees a single
/// frame, a run of 2..=8 frames and a heap object, writing each and checking what it wrote,
/// and counts the successful allocations per CPU (`irqstat`). Everything taken is given back
/// before it returns, so it holds nothing between ticks. Registered as a tick hook at boot
/// (main.rs), so with `irqstat stress on` it runs on every tick on every CPU, interleaving
/// with whatever the interrupted code was doing. Never panics: a failure is counted as an
/// error.
pub fn tick_stress() {
    if !TICK_STRESS_ON.load(Ordering::Relaxed) {
        return;
    }
    TICK_STRESS_ACTIVE.fetch_add(1, Ordering::SeqCst);
    if TICK_STRESS_PAUSED.load(Ordering::SeqCst) == 0 {
        // A handler already runs masked; the guard makes a call from thread context look
        // the same, and names this section in `irqstat`.
        let _irq = IrqGuard::new();
        tick_stress_once();
    }
    TICK_STRESS_ACTIVE.fetch_sub(1, Ordering::SeqCst);
}

fn tick_stress_once() {
    let counts = &TICK_COUNTS[percpu::index().min(MAX_CPUS - 1)];
    let run = counts.runs.fetch_add(1, Ordering::Relaxed);
    let (mut ok, mut refused, mut errors) = (0, 0, 0);
    // A pattern no stress worker writes (theirs depend on the address), checked before the
    // free: a frame handed out twice shows up here or in the worker's own check.
    let mark = 0x1e57_1c00_0000_0000 | run;
    for frames in [1, 2 + run % 7] {
        match alloc_frames(frames, Owner::Test, false) {
            Ok(r) => {
                ok += 1;
                let first = physmem::linear(r.addr).cast::<u64>();
                let last = physmem::linear(r.addr + (r.frames * PAGE_SIZE - 8)).cast::<u64>();
                // SAFETY: the run was just allocated to us: mapped RAM in the linear map that
                // nobody else may touch until we free it below; both words are inside it and
                // 8-byte aligned.
                let intact = unsafe {
                    first.write_volatile(mark);
                    last.write_volatile(!mark);
                    first.read_volatile() == mark && last.read_volatile() == !mark
                };
                errors += u64::from(!intact);
                errors += u64::from(free_frames(r.addr, r.frames).is_err());
            }
            Err(_) => refused += 1,
        }
    }
    let len = 16 + (run % 64) as usize * 8;
    let mut object: alloc::vec::Vec<u64> = alloc::vec::Vec::new();
    if object.try_reserve_exact(len).is_ok() {
        ok += 1;
        object.extend((0..len as u64).map(|i| mark ^ i));
        errors += u64::from(
            !object
                .iter()
                .enumerate()
                .all(|(i, &v)| v == mark ^ i as u64),
        );
    } else {
        refused += 1;
    }
    drop(object);
    counts.allocations.fetch_add(ok, Ordering::Relaxed);
    counts.refused.fetch_add(refused, Ordering::Relaxed);
    counts.errors.fetch_add(errors, Ordering::Relaxed);
}

levitate_hal::ktest!(
    fn allocator_locks_mask_interrupts_while_held() -> KtestResult {
        use levitate_hal::kassert;
        use levitate_hal::sync::{irqs_masked, with_irqs_unmasked};
        // Each lock, taken with IRQs open: IRQs are masked inside, open again after.
        type Check = (&'static str, fn() -> bool);
        let checks: [Check; 8] = [
            ("buddy", || with(|_| irqs_masked())),
            ("bitmap layer", || {
                let _g = RUNS.lock();
                irqs_masked()
            }),
            ("per-CPU cache", || {
                KernelCaches.with_local(|_| irqs_masked())
            }),
            ("every cache", || {
                let mut all = true;
                KernelCaches.for_each_cache(|_| all &= irqs_masked());
                all
            }),
            ("page tables", || {
                super::paging::with_tables(|_, _| irqs_masked())
            }),
            ("console", || crate::console::with_lock_held(irqs_masked)),
            ("memory map", || {
                let _g = physmem::map();
                irqs_masked()
            }),
            ("validate", || {
                // Masks for the whole check; unmasked only after the last guard.
                validate().is_ok()
            }),
        ];
        for (name, check) in checks {
            let (inside, after) = with_irqs_unmasked(|| (check(), irqs_masked()));
            if !inside || after {
                log::error!("{name}: masked inside {inside}, masked after {after}");
            }
            kassert!(inside, "an allocator lock was held with IRQs open");
            kassert!(!after, "IRQs stayed masked after a lock was released");
        }
        Ok(())
    }
);

levitate_hal::ktest!(
    fn tick_stress_allocates_and_gives_everything_back() -> KtestResult {
        use levitate_hal::{kassert, kassert_eq};
        // This CPU's own tick runs the stress too once it is on: keep it out of the count.
        let _irq = levitate_hal::sync::IrqGuard::new();
        let was = tick_stress_enabled();
        let me = percpu::index();
        let before = tick_stress_counts(me);
        drain_caches();
        let free_before = stats().unwrap().free_frames;
        // The work itself, called directly with the switch off, so no other CPU's tick runs
        // it meanwhile and the free-frame count is this test's alone.
        for _ in 0..50 {
            tick_stress_once();
        }
        drain_caches();
        let after = tick_stress_counts(me);
        kassert_eq!(after.runs, before.runs + 50);
        kassert_eq!(after.allocations, before.allocations + 150);
        kassert_eq!(after.errors, before.errors);
        kassert_eq!(stats().unwrap().free_frames, free_before);
        // The switch: paused or off, a call does nothing on this CPU.
        set_tick_stress(true);
        {
            let _p = pause_tick_stress();
            tick_stress();
        }
        set_tick_stress(false);
        tick_stress();
        set_tick_stress(was);
        kassert_eq!(tick_stress_counts(me).runs, after.runs);
        kassert!(validate().is_ok());
        Ok(())
    }
);
