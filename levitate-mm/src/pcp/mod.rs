//! Per-CPU caches of order-0 frames in front of the buddy (Linux's per-CPU page lists): most
//! single-frame allocations and frees touch only the calling CPU's cache, in O(1), without
//! the buddy's global lock. Caches refill from and drain to the buddy in batches.
//!
//! ```text
//! pcp::alloc / pcp::free (order 0, no address limit)
//!   -> this CPU's CpuCache (its own lock, uncontended)    hit: O(1)
//!   -> Buddy (global lock): refill `batch` when empty, drain `batch` above `high`
//! pcp::alloc / pcp::free (any other request) -> Buddy
//! ```
//!
//! # Design
//!
//! * **A state byte per frame** ([`FrameStates`]): buddy, parked in cache N, handed out to an
//!   owner; and a home byte, the cache that handed the frame out. The buddy sees a cached
//!   frame as an order-0 block allocated to [`Owner::FrameCache`], whether it is parked or
//!   handed out, so it cannot see a double free into a cache; the byte can. A free goes to
//!   the frame's home cache, on whichever CPU it runs, and under that cache's lock moves
//!   "handed out" to "parked" with a plain store: every byte is written only under the lock
//!   of the one cache it names (state.rs), so two frees of one frame, on any CPUs, meet on
//!   one lock and cannot both succeed; a frame already parked is refused as
//!   [`FreeError::DoubleFree`]; a frame the buddy holds goes to the buddy's free with all its
//!   checks. A pair is therefore two lock acquisitions and no other read-modify-write.
//! * **Lock order: one cache, then the buddy.** The common path takes only the local cache
//!   (a frame freed on another CPU than it was allocated on takes its home cache instead).
//!   Refills and drains take the buddy inside it. A drain of all caches
//!   ([`drain_all`]) takes them one at a time with nothing else held, and [`alloc`] calls it
//!   only after releasing its own cache: no CPU ever holds two caches, so two CPUs running
//!   out of memory at once cannot deadlock. The kernel provides the locking through
//!   [`CacheAccess`] and [`BuddyAccess`].
//! * **No stranded frames.** Before [`alloc`] reports `OutOfMemory` (for any request, since
//!   parked frames also keep the buddy from merging larger blocks) it drains every cache and
//!   retries once. A sequential caller therefore gets `OutOfMemory` only when every cache is
//!   empty and the buddy cannot serve the request; concurrently, a frame another CPU parks
//!   after the drain may be missed by this attempt.
//! * **Poisoning** follows the buddy's switch: a frame freed into a cache is filled with
//!   [`POISON`](crate::buddy::POISON) and checked when handed out again (a mismatch fails the
//!   allocation with `UseAfterFree`, the frame poisoned again and kept: a retry succeeds) or
//!   when drained (counted, and reported by the drain).
//! * **Accounting.** The buddy counts all cached frames as frame cache; each cache counts
//!   frames handed out per owner (read from the state byte at free, in the home cache, so a
//!   free on another CPU debits the right owner and cache); `meminfo` adds [`CacheStats`]
//!   over all CPUs.
//!
//! # Limits
//!
//! * A stale free of a frame that was handed out again is accepted, as in the buddy: nothing
//!   tells it from the new holder's free. [`free`] returns the owner for a caller to compare.
//! * A frame parked since a refill and never handed out, when freed, is reported as a double
//!   free (it may have been allocated and freed before it went to the cache).
//! * A cached frame freed directly to the buddy (not through [`free`]) is not seen on the
//!   common path; a refill or drain that meets it counts a conflict and leaves it to the
//!   buddy, and [`validate`] reports it. The kernel must route every free through [`free`].
//! * At most [`MAX_CACHES`] caches (the id's bits in the state byte).
//! * The buddy's misuse counters count the misuse it refuses; the double frees the caches
//!   refuse are counted per cache ([`CacheStats::double_frees`]).

mod cache;
mod state;
mod validate;

#[cfg(test)]
mod tests;

use cache::AtHome;
pub use cache::{CacheStats, CpuCache, Limits, CAPACITY};
pub use state::{FrameState, FrameStates, MAX_CACHES};
pub use validate::{validate, Violation};

use crate::addr::PhysAddr;
use crate::buddy::{AllocError, Block, Buddy, FrameMemory, FreeError, Owner, Request};
use core::fmt;

/// How the caches reach the buddy: the kernel implements it over its spin lock (interrupts
/// masked), tests over a `std::sync::Mutex` or the buddy itself.
pub trait BuddyAccess {
    /// Runs `f` with the buddy locked.
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R;
}

/// A buddy nobody else reaches (one CPU, or a test).
impl BuddyAccess for Buddy<'_> {
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R {
        f(self)
    }
}

/// How the front reaches the per-CPU caches. The kernel keeps one [`CpuCache`] per CPU, each
/// behind its own spin lock taken with interrupts masked (an interrupt handler that
/// allocates cannot then deadlock against its own CPU).
///
/// Callers hold at most one cache at a time; a cache's closure may lock the buddy, never
/// another cache.
pub trait CacheAccess {
    /// Runs `f` on the calling CPU's cache.
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R;

    /// Runs `f` on the cache whose id is `id`, locked as [`Self::with_local`] locks the
    /// caller's own (interrupts masked in the kernel); `None` when no cache has that id. An
    /// order-0 free locks the cache that handed the frame out (its home), which is usually
    /// the caller's own. The caller holds no other cache.
    fn with_cache<R>(&mut self, id: u8, f: impl FnOnce(&mut CpuCache) -> R) -> Option<R>;

    /// Runs `f` on every cache, the caller's included, locking each in turn (a drain of all
    /// caches; Linux's `drain_all_pages`).
    fn for_each_cache(&mut self, f: impl FnMut(&mut CpuCache));
}

/// A single cache is its own local cache (one CPU, or a test).
impl CacheAccess for CpuCache {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        f(self)
    }

    fn with_cache<R>(&mut self, id: u8, f: impl FnOnce(&mut CpuCache) -> R) -> Option<R> {
        (self.id() == id).then(|| f(self))
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        f(self)
    }
}

/// What a drain gave back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Frames returned to the buddy.
    pub frames: u64,
    /// The first parked frame found written while parked (poisoning), if any.
    pub use_after_free: Option<AllocError>,
}

impl core::ops::AddAssign for Drained {
    fn add_assign(&mut self, other: Drained) {
        self.frames += other.frames;
        self.use_after_free = self.use_after_free.or(other.use_after_free);
    }
}

/// Why a cache or the state table cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcpError {
    /// A cache id at or above [`MAX_CACHES`].
    CacheId {
        /// The id given.
        id: u8,
    },
    /// Watermarks outside `1 <= batch <= high < CAPACITY`.
    Limits {
        /// `high` given.
        high: u16,
        /// `batch` given.
        batch: u16,
    },
    /// The state array is shorter than the layout.
    StatesTooSmall {
        /// Entries the layout needs (one per frame).
        needed: u64,
        /// Entries given.
        got: u64,
    },
}

impl fmt::Display for PcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::CacheId { id } => write!(
                f,
                "frame cache: id {id} is not below the {MAX_CACHES} caches the state byte names"
            ),
            Self::Limits { high, batch } => write!(
                f,
                "frame cache: high {high} and batch {batch} are not 1 <= batch <= high < \
                 {CAPACITY}"
            ),
            Self::StatesTooSmall { needed, got } => write!(
                f,
                "frame cache: the state array has {got} entries but the layout needs {needed}"
            ),
        }
    }
}

/// Allocates a block: order 0 without an address limit from the calling CPU's cache, any
/// other request from the buddy. When either runs out, drains every cache and tries once
/// more before it reports `OutOfMemory` (or the `UseAfterFree` the drain found, if any).
///
/// [`Owner::FrameCache`] belongs to the caches: a request for it that the buddy serves
/// directly would count as a cached frame that no cache holds (`validate` reports it).
#[inline]
pub fn alloc<C, B, M>(
    caches: &mut C,
    states: &FrameStates<'_>,
    buddy: &mut B,
    req: Request,
    mem: &mut M,
) -> Result<Block, AllocError>
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    let first = try_alloc(caches, states, buddy, req, mem);
    if !matches!(first, Err(AllocError::OutOfMemory { .. })) {
        return first;
    }
    // Our cache is released here: the drain may lock every cache, one at a time.
    let drained = drain_all(caches, states, buddy, mem);
    if let Some(e) = drained.use_after_free {
        // Reported like the buddy's own check: this call fails, the frame is poisoned again
        // and free, a retry succeeds.
        return Err(e);
    }
    if drained.frames == 0 {
        return first;
    }
    try_alloc(caches, states, buddy, req, mem)
}

#[inline]
fn try_alloc<C, B, M>(
    caches: &mut C,
    states: &FrameStates<'_>,
    buddy: &mut B,
    req: Request,
    mem: &mut M,
) -> Result<Block, AllocError>
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    if req.order == 0 && req.below.is_none() {
        caches
            .with_local(|cache| cache.alloc(states, buddy, req.owner, req.zero, mem))
            .map(|addr| Block { addr, order: 0 })
    } else {
        buddy.with_buddy(|b| b.alloc(req, mem))
    }
}

/// Frees the block of 2^`order` frames at `addr` and returns its owner. Order 0 goes to the
/// calling CPU's cache whichever CPU allocated the frame (a frame the buddy holds, or an
/// address that is no managed frame, is passed on to the buddy's free); other orders go to
/// the buddy. A refused free changes nothing but the misuse counters.
#[inline]
pub fn free<C, B, M>(
    caches: &mut C,
    states: &FrameStates<'_>,
    buddy: &mut B,
    addr: PhysAddr,
    order: u8,
    mem: &mut M,
) -> Result<Owner, FreeError>
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    if order != 0 {
        return buddy.with_buddy(|b| b.free(addr, order, mem));
    }
    let index = if addr.page_offset() == 0 {
        states.layout().index_of(addr.pfn())
    } else {
        None
    };
    let Some(index) = index else {
        // Misaligned, reserved or outside RAM: the buddy names which, and counts it.
        return buddy.with_buddy(|b| b.free(addr, 0, mem));
    };
    let index = index as u32;
    // Each round either frees, refuses, or saw the byte change under it (another CPU's
    // transition of this very frame, which a racing free or stale pointer alone causes).
    loop {
        // Read without a lock, only to choose the lock: `free_at_home` and
        // `free_not_handed_out` decide on what they read under it (or, for a parked frame,
        // on this read: the frame was parked when it was made, so the free is a double free).
        let current = states.load(index);
        if let FrameState::HandedOut { .. } = FrameState::decode(current) {
            let home = states.home(index);
            let at_home = caches.with_cache(home, |cache| {
                // A cache at another place than its id would send every free of its frames
                // round this loop for ever: treat it as a home nobody has.
                (cache.id() == home).then(|| cache.free_at_home(states, buddy, addr, index, mem))
            });
            match at_home.flatten() {
                Some(AtHome::Freed(result)) => return result,
                Some(AtHome::Moved) => continue,
                // A home byte that names no cache: only corruption writes one.
                None => return Err(caches.with_local(|cache| cache.lost(addr))),
            }
        }
        return caches.with_local(|cache| {
            cache.free_not_handed_out(states, buddy, addr, index, current, mem)
        });
    }
}

/// Gives every parked frame of every cache back to the buddy (low memory, `memcheck`, CPU
/// offline). Call it holding no cache.
pub fn drain_all<C, B, M>(
    caches: &mut C,
    states: &FrameStates<'_>,
    buddy: &mut B,
    mem: &mut M,
) -> Drained
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    let mut total = Drained::default();
    caches.for_each_cache(|cache| total += cache.drain(states, buddy, mem));
    total
}

/// Turns the buddy's poisoning on or off and tells the caches' free path (which runs under a
/// per-CPU cache lock, never the buddy's). Frames parked before it was turned on are not
/// poisoned and not checked until they cycle.
pub fn set_poisoning<B, M>(states: &FrameStates<'_>, buddy: &mut B, on: bool, mem: &mut M)
where
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    buddy.with_buddy(|b| {
        b.set_poisoning(on, mem);
        states.set_poisoning(on);
    });
}
