//! Per-CPU caches of order-0 frames in front of the buddy (Linux's per-CPU page lists, with a
//! lock-free stash on top): most single-frame allocations and frees touch only the calling
//! CPU's stash, in O(1), with no lock at all. Behind each stash a locked ring refills from and
//! drains to the buddy in batches.
//!
//! ```text
//! pcp::alloc / pcp::free (order 0, no address limit)
//!   -> this CPU's HotCache (no lock: this CPU only)        hit: a pop / one CAS and a push
//!   -> this CPU's CpuCache (its own lock, uncontended)     half a stash at a time
//!   -> Buddy (global lock): refill `batch` when empty, drain `batch` above `high`
//! pcp::alloc / pcp::free (any other request) -> Buddy
//! ```
//!
//! # Design
//!
//! * **A state byte per frame** ([`FrameStates`]): buddy, parked in cache N, handed out to an
//!   owner. The buddy sees a cached frame as an order-0 block allocated to
//!   [`Owner::FrameCache`], whether it is parked or handed out, so it cannot see a double free
//!   into a cache; the byte can. A free, on whichever CPU it runs, moves "handed out" to
//!   "parked in this CPU's cache" with a compare-and-swap, so of two frees of one frame, on
//!   any CPUs, exactly one succeeds; a frame already parked is refused as
//!   [`FreeError::DoubleFree`]; a frame the buddy holds goes to the buddy's free with all its
//!   checks. A parked frame's byte is written only by its own CPU or under its ring's lock
//!   (state.rs), so a pop is a plain store. A pair is one compare-and-swap and no lock.
//! * **Stashes** ([`HotCache`], hot.rs): owner-only, every field an atomic; other CPUs never
//!   take frames out of one, they *hold* it ([`hold_stashes`]) and its owner moves them into
//!   its ring at its next locked call or when it [`serve_holds`]. Callers without stashes
//!   (tests of the ring alone) leave [`CacheAccess::with_hot`] at its default.
//! * **Lock order: one ring, then the buddy.** The common path takes no lock; refills and
//!   drains take the buddy inside the ring's lock. A drain of all caches ([`drain_all`]) takes
//!   the rings one at a time with nothing else held, and [`alloc`] calls it only after
//!   releasing its own: no CPU ever holds two rings, so two CPUs running out of memory at once
//!   cannot deadlock. The kernel provides the locking through [`CacheAccess`] and
//!   [`BuddyAccess`].
//! * **No stranded frames.** Before [`alloc`] reports `OutOfMemory` (for any request, since
//!   parked frames also keep the buddy from merging larger blocks) it holds every stash,
//!   drains every ring and retries once. A sequential caller therefore gets `OutOfMemory`
//!   only when every cache is empty and the buddy cannot serve the request; concurrently, a
//!   frame another CPU parks after the drain may be missed by this attempt, and so are the
//!   frames of a stash whose CPU does not answer the hold in time ([`Drained::unanswered`]).
//! * **Poisoning** follows the buddy's switch: frees then bypass the stash, and a frame freed
//!   into a ring is filled with [`POISON`](crate::buddy::POISON) and checked when handed out
//!   again (a mismatch fails the allocation with `UseAfterFree`, the frame poisoned again and
//!   kept: a retry succeeds) or when drained (counted, and reported by the drain).
//! * **Accounting.** The buddy counts all cached frames as frame cache; each stash and ring
//!   counts frames handed out per owner (read from the state byte at free, so a free on
//!   another CPU debits the right owner; one CPU's figure goes negative when it frees what
//!   another allocated); `meminfo` adds [`CacheStats`] over all CPUs.
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
mod hot;
mod state;
mod validate;

#[cfg(test)]
mod tests;

pub use cache::{CacheStats, CpuCache, Limits, CAPACITY};
pub use hot::{HoldTicket, HotCache, HOT_CAPACITY};
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

/// How the front reaches the per-CPU caches. The kernel keeps one [`CpuCache`] (the ring) per
/// CPU behind its own spin lock taken with interrupts masked (an interrupt handler that
/// allocates cannot then deadlock against its own CPU), and one [`HotCache`] (the stash) per
/// CPU that only that CPU touches, with interrupts masked and no lock.
///
/// Callers hold at most one ring at a time; a ring's closure may lock the buddy, never another
/// ring. Implementations without stashes (tests) provide only the ring methods.
pub trait CacheAccess {
    /// Runs `f` on the calling CPU's ring, locked.
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R;

    /// Runs `f` on the calling CPU's stash as its owner (nothing else of this CPU may touch the
    /// stash meanwhile: the kernel masks interrupts). `None` when the caller has no stashes.
    #[inline]
    fn with_hot<R>(&mut self, f: impl FnOnce(&HotCache) -> R) -> Option<R> {
        let _ = f;
        None
    }

    /// Runs `f` on the calling CPU's stash (as its owner, if there are stashes) and its locked
    /// ring, in that order (the stash is no lock: nothing to order).
    fn with_local_hot<R>(&mut self, f: impl FnOnce(Option<&HotCache>, &mut CpuCache) -> R) -> R {
        self.with_local(|ring| f(None, ring))
    }

    /// Runs `f` on every ring, the caller's included, locking each in turn (a drain of all
    /// caches; Linux's `drain_all_pages`).
    fn for_each_cache(&mut self, f: impl FnMut(&mut CpuCache));

    /// Holds every stash ([`HotCache::request_hold`]) until [`Self::release_stashes`], and
    /// waits (as long as the implementation sees fit) until each owner has answered, which
    /// moves every stashed frame into its CPU's ring. `serve(stash, ring)` does what an owner
    /// does to answer: an implementation that plays every CPU on one thread (tests) calls it
    /// for each stash; the kernel for none (each CPU answers for itself, the caller's own
    /// stash is served by the caller afterwards). Returns whether every other stash answered.
    /// `why` says what the caller needs: [`HoldFor::Frames`] only the frames (a stash that
    /// is empty need not be waited for, and a short wait is enough), [`HoldFor::Check`] every
    /// stash frozen (`validate`).
    fn hold_stashes(
        &mut self,
        why: HoldFor,
        serve: &mut dyn FnMut(&HotCache, &mut CpuCache),
    ) -> bool {
        let _ = (why, serve);
        true
    }

    /// Ends the holds [`Self::hold_stashes`] took.
    fn release_stashes(&mut self) {}
}

/// A single cache is its own local cache (one CPU, or a test).
impl CacheAccess for CpuCache {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        f(self)
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        f(self)
    }
}

/// Why every stash is held ([`CacheAccess::hold_stashes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldFor {
    /// To drain their frames (out of memory, reclaim): stashes that are empty need no answer.
    Frames,
    /// To check the invariants: every stash must be frozen, empty or not.
    Check,
}

/// What a drain gave back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Frames returned to the buddy.
    pub frames: u64,
    /// The first parked frame found written while parked (poisoning), if any.
    pub use_after_free: Option<AllocError>,
    /// Some CPU did not answer the hold on its stash in time: its stashed frames (at most
    /// [`HOT_CAPACITY`]) were not drained.
    pub unanswered: bool,
}

impl core::ops::AddAssign for Drained {
    fn add_assign(&mut self, other: Drained) {
        self.frames += other.frames;
        self.use_after_free = self.use_after_free.or(other.use_after_free);
        self.unanswered |= other.unanswered;
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
    match try_alloc(caches, states, buddy, req, mem) {
        Err(e @ AllocError::OutOfMemory { .. }) => {
            retry_after_drain(caches, states, buddy, req, mem, e)
        }
        done => done,
    }
}

/// One attempt of [`alloc`], without the drain: [`alloc_hot`], else [`try_alloc_slow`].
#[inline]
pub fn try_alloc<C, B, M>(
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
    match alloc_hot(caches, states, req, mem) {
        Some(block) => Ok(block),
        None => try_alloc_slow(caches, states, buddy, req, mem),
    }
}

/// Whether `req` is the buddy's alone: the caches hold single frames and serve no address
/// limit, so an order above 0 or a limit goes straight to the buddy (one lock), from every
/// caller ([`try_alloc_slow`], and `Front::alloc`, which inlines that call).
#[inline(always)]
pub fn for_buddy(req: &Request) -> bool {
    req.order != 0 || req.below.is_some()
}

/// The common allocation, inlined into the caller: an order-0 request without an address
/// limit from this CPU's stash (a pop and three stores, `HotCache::pop`). `None` when it does
/// not apply (other orders, a limit, no stashes) or the stash is empty or held: the caller
/// then takes [`try_alloc_slow`]. The front calls the two itself so that only this part is
/// inlined.
#[inline(always)]
pub fn alloc_hot<C, M>(
    caches: &mut C,
    states: &FrameStates<'_>,
    req: Request,
    mem: &mut M,
) -> Option<Block>
where
    C: CacheAccess,
    M: FrameMemory + ?Sized,
{
    if for_buddy(&req) {
        return None;
    }
    let addr = caches.with_hot(|hot| hot.pop(states, req.owner))??;
    if req.zero {
        mem.fill(addr.pfn(), 1, 0);
    }
    Some(Block { addr, order: 0 })
}

/// [`try_alloc`] without its stash fast path: other orders and limits from the buddy, order
/// 0 from this CPU's locked ring (which refills the stash).
// Inlined into its callers' own out-of-line slow paths (`Front::alloc_cold`): one call
// level between the caller and the buddy.
#[inline]
pub fn try_alloc_slow<C, B, M>(
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
    if for_buddy(&req) {
        return buddy.with_buddy(|b| b.alloc(req, mem));
    }
    alloc_local(caches, states, buddy, req, mem)
}

/// [`alloc`] after its first attempt failed with `first` (out of memory): drains every cache
/// and tries once more; `first` again when the drain found nothing.
#[cold]
#[inline(never)]
pub fn retry_after_drain<C, B, M>(
    caches: &mut C,
    states: &FrameStates<'_>,
    buddy: &mut B,
    req: Request,
    mem: &mut M,
    first: AllocError,
) -> Result<Block, AllocError>
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    // Our cache is released here: the drain may lock every cache, one at a time.
    let drained = drain_all(caches, states, buddy, mem);
    if let Some(e) = drained.use_after_free {
        // Reported like the buddy's own check: this call fails, the frame is poisoned again
        // and free, a retry succeeds.
        return Err(e);
    }
    if drained.frames == 0 {
        return Err(first);
    }
    try_alloc(caches, states, buddy, req, mem)
}

/// The locked path of an order-0 allocation: serves a pending hold, refills the stash from
/// the ring (and the ring from the buddy), or hands out from the ring when the stash is held.
#[inline(never)]
fn alloc_local<C, B, M>(
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
    caches
        .with_local_hot(|hot, ring| {
            if let Some(hot) = hot {
                if hot.serve(ring, states, buddy, mem) && !states.poisoning() {
                    if ring.is_empty() {
                        ring.refill(states, buddy, mem)?;
                    }
                    hot.top_up(ring);
                    if let Some(addr) = hot.pop(states, req.owner) {
                        if req.zero {
                            mem.fill(addr.pfn(), 1, 0);
                        }
                        return Ok(addr);
                    }
                }
            }
            ring.alloc(states, buddy, req.owner, req.zero, mem)
        })
        .map(|addr| Block { addr, order: 0 })
}

/// Frees the block of 2^`order` frames at `addr` and returns its owner. Order 0 goes to the
/// calling CPU's stash or cache whichever CPU allocated the frame (a frame the buddy holds,
/// or an address that is no managed frame, is passed on to the buddy's free); other orders go
/// to the buddy. A refused free changes nothing but the misuse counters.
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
    match free_hot(caches, states, addr, order) {
        Some(owner) => Ok(owner),
        None => free_slow(caches, states, buddy, addr, order, mem),
    }
}

/// The common free, inlined into the caller: a single frame handed out by a cache, into this
/// CPU's stash (one compare-and-swap on its state byte, `HotCache::push`). `None` when it
/// does not apply (other orders, misuse, poisoning, a full or held stash, no stashes): the
/// caller then takes [`free_slow`], which handles and names every case. [`free`] is the two
/// in a row; the front calls them itself so that only this part is inlined.
#[inline(always)]
pub fn free_hot<C: CacheAccess>(
    caches: &mut C,
    states: &FrameStates<'_>,
    addr: PhysAddr,
    order: u8,
) -> Option<Owner> {
    if order != 0 || addr.page_offset() != 0 {
        return None;
    }
    caches.with_hot(|hot| hot.push(states, addr.pfn()))?
}

/// [`free`] without its stash fast path (which `free_hot` is): other orders, misuse (named
/// and counted), poisoning, a full or held stash.
// Inlined into its callers' own out-of-line slow paths (`Front::free_cold`).
#[inline]
pub fn free_slow<C, B, M>(
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
    free_local(caches, states, buddy, addr, mem)
}

/// The locked path of an order-0 free.
#[inline]
fn free_local<C, B, M>(
    caches: &mut C,
    states: &FrameStates<'_>,
    buddy: &mut B,
    addr: PhysAddr,
    mem: &mut M,
) -> Result<Owner, FreeError>
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
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
    caches.with_local_hot(|hot, ring| {
        // Each round either frees, refuses, or saw the byte change under it (another CPU's
        // transition of this very frame, which a racing free or stale pointer alone causes).
        loop {
            let (current, state) = states.read(index);
            if !matches!(state, FrameState::HandedOut { .. }) {
                return ring.free_not_handed_out(states, buddy, addr, index, state, mem);
            }
            if let Some(hot) = hot {
                if hot.serve(ring, states, buddy, mem)
                    && !states.poisoning()
                    && hot::pack(addr.pfn(), index).is_some()
                {
                    if hot.len() == HOT_CAPACITY {
                        hot.spill(false, ring, states, buddy, mem);
                    }
                    // A free outside the remembered section comes here once; later ones of
                    // that section take the stash at once.
                    hot.remember_section(states.layout(), addr.pfn());
                    // `push` reads the byte again. When it declines, the loop reads the byte
                    // once more if it changed meanwhile; otherwise (a hold or poisoning just
                    // arrived, or any other refusal) the ring takes the frame: the loop never
                    // waits on the stash.
                    if let Some(owner) = hot.push(states, addr.pfn()) {
                        return Ok(owner);
                    }
                    if states.load(index) != current {
                        continue;
                    }
                }
            }
            if let Some(result) = ring.free_handed_out(states, buddy, addr, index, mem) {
                return result;
            }
        }
    })
}

/// Gives every parked frame of every cache back to the buddy (low memory, `memcheck`, CPU
/// offline): every stash is held and emptied into its ring first. Call it holding no cache.
/// `use_after_free` aside, the report's `all_answered` says whether every stash answered.
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
    let answered = hold_stashes(caches, HoldFor::Frames, states, buddy, mem);
    let mut total = Drained::default();
    caches.for_each_cache(|cache| total += cache.drain(states, buddy, mem));
    caches.release_stashes();
    total.unanswered = !answered;
    total
}

/// Holds every stash ([`CacheAccess::hold_stashes`]) and serves the caller's own, so that
/// every stashed frame is in a ring until [`CacheAccess::release_stashes`]. Whether every
/// other CPU answered.
pub fn hold_stashes<C, B, M>(
    caches: &mut C,
    why: HoldFor,
    states: &FrameStates<'_>,
    buddy: &mut B,
    mem: &mut M,
) -> bool
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    let answered = caches.hold_stashes(why, &mut |hot, ring| {
        hot.serve(ring, states, buddy, mem);
    });
    serve_own(caches, states, buddy, mem);
    answered
}

/// This CPU answers the holds on its own stash (if it has one).
fn serve_own<C, B, M>(caches: &mut C, states: &FrameStates<'_>, buddy: &mut B, mem: &mut M)
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    caches.with_local_hot(|hot, ring| {
        if let Some(hot) = hot {
            hot.serve(ring, states, buddy, mem);
        }
    });
}

/// The owner's answer to a hold request, outside any allocation: the kernel calls it from
/// each CPU's timer tick, so an idle CPU empties its stash within a tick of being asked.
/// Cheap when nothing is asked (two loads, no lock).
pub fn serve_holds<C, B, M>(caches: &mut C, states: &FrameStates<'_>, buddy: &mut B, mem: &mut M)
where
    C: CacheAccess,
    B: BuddyAccess,
    M: FrameMemory + ?Sized,
{
    if caches.with_hot(|hot| hot.held()) == Some(true) {
        serve_own(caches, states, buddy, mem);
    }
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
