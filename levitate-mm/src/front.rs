//! The frame allocator's front: the one implementation of "which layer serves this request,
//! and what happens before `OutOfMemory`", shared by the kernel (kernel/src/mm/frames.rs) and
//! the host bench (bench/src/frames.rs), so both run the same code paths. The caller supplies
//! the locking through [`CacheAccess`], [`RunsAccess`] and [`BuddyAccess`].
//!
//! ```text
//! Front::alloc(order, ...)     order 0, no limit -> this CPU's cache (pcp); else -> buddy
//! Front::alloc_frames(n, ...)  1 -> as order 0; 2..=511 -> bitmap layer (exact; the buddy's
//!                              lock only to take or give back a chunk, or with poisoning on);
//!                              more -> buddy
//! before OutOfMemory           drain every CPU's cache and release the bitmap layer's idle
//!                              chunk, then try once more
//! ```
//!
//! Lock order (outermost first): the bitmap layer, one per-CPU cache, the buddy. The retry
//! path takes them one at a time with nothing held: the cache drain locks one cache at a time
//! (then the buddy), the idle chunk's release the bitmap layer then the buddy.

use crate::addr::PhysAddr;
use crate::bitmap::{self, FrameError, Run, SmallRuns};
use crate::buddy::{AllocError, Block, FrameMemory, FreeError, Owner, Request};
use crate::pcp::{self, BuddyAccess, CacheAccess, Drained, FrameStates};

/// How the front reaches the bitmap layer: the kernel over its spin lock (interrupts
/// masked), tests and the bench over theirs. Taken before a cache or the buddy.
pub trait RunsAccess {
    /// Runs `f` with the bitmap layer locked.
    fn with_runs<R>(&mut self, f: impl FnOnce(&mut SmallRuns) -> R) -> R;
}

/// A bitmap layer nobody else reaches (one CPU, or a test).
impl RunsAccess for SmallRuns {
    fn with_runs<R>(&mut self, f: impl FnOnce(&mut SmallRuns) -> R) -> R {
        f(self)
    }
}

/// The three layers as one allocator, for one call (the access objects are usually
/// zero-sized handles on the caller's locks).
pub struct Front<'s, 'm, C, R, B> {
    /// The per-CPU caches.
    pub caches: C,
    /// The bitmap layer.
    pub runs: R,
    /// The buddy.
    pub buddy: B,
    /// The per-frame state bytes the caches use (inside the mem_map entries).
    pub states: &'s FrameStates<'m>,
}

impl<C: CacheAccess, R: RunsAccess, B: BuddyAccess> Front<'_, '_, C, R, B> {
    /// A block of 2^order frames: order 0 without an address limit from this CPU's cache,
    /// anything else from the buddy. Before it reports `OutOfMemory` every cache is drained
    /// (by [`pcp::alloc`]) and the bitmap layer's idle chunk released, and the request tried
    /// once more: parked frames and the idle chunk are free memory, and once back in the buddy
    /// they may merge into the block asked for.
    ///
    /// The route is [`pcp::for_buddy`]; the two routes are [`Self::alloc_cached`] and
    /// [`Self::alloc_from_buddy`]. A hot caller calls those itself, each from a function of
    /// its own (the kernel's `frames::alloc`, the bench's wrapper), rather than this: a
    /// function that holds both routes inline saves the callee-saved registers the buddy route
    /// needs on every call, the order-0 route's too, and those stores are paid again at the
    /// order-0 free's compare-and-swap, which on x86 waits until every earlier store is done
    /// (a locked instruction). Measured on an AMD EPYC guest, order-0 alloc+free pair:
    /// 1.56-1.62x the bench's reference through one function, 1.40x through two (arm64,
    /// whose swap is release-ordered but not a full barrier, is unmeasured).
    #[inline(always)]
    pub fn alloc<M: FrameMemory + ?Sized>(
        self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        if pcp::for_buddy(&req) {
            self.alloc_from_buddy(req, mem)
        } else {
            self.alloc_cached(req, mem)
        }
    }

    /// [`Self::alloc`] by the buddy route: the buddy's fast path inline (through a call of
    /// its own, a buddy request paid a call level and its result copied through memory:
    /// bench `mixed` on an AMD EPYC guest, an order-1 allocation 2x the reference's), then
    /// the out-of-memory retry. Any request is served right; an order-0 one without a limit
    /// gets a frame the buddy hands out itself (or, after an out-of-memory drain, whatever
    /// the retry's usual route gives).
    ///
    /// Takes the front by value (it is a per-call handle; the kernel builds one per call), so
    /// it stays in registers.
    #[inline(always)]
    pub fn alloc_from_buddy<M: FrameMemory + ?Sized>(
        mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        let first = self.buddy.with_buddy(|b| b.alloc(req, mem));
        self.or_after_oom(req, mem, first)
    }

    /// [`Self::alloc`] by the cache route: the stash pop inline, everything else (the ring,
    /// a refill, the out-of-memory path) out of line, entered only when the pop missed, so the
    /// common case keeps the front in registers and pays for no stack frame of the slow paths.
    /// Any request is served right; one for the buddy route takes the slow path there.
    #[inline(always)]
    pub fn alloc_cached<M: FrameMemory + ?Sized>(
        mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        if pcp::for_buddy(&req) {
            return self.alloc_cold(req, mem);
        }
        match pcp::alloc_hot(&mut self.caches, self.states, req, mem) {
            Some(block) => Ok(block),
            None => self.alloc_single_cold(req.owner, req.zero, mem),
        }
    }

    #[inline(never)]
    fn alloc_cold<M: FrameMemory + ?Sized>(
        mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        self.alloc_slow(req, mem)
    }

    /// [`Self::alloc_cold`] for a single frame, its request passed in registers: with the
    /// request itself (by reference: it is three words), its stores were hoisted into the
    /// hot path.
    #[inline(never)]
    fn alloc_single_cold<M: FrameMemory + ?Sized>(
        mut self,
        owner: Owner,
        zero: bool,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        let req = Request {
            order: 0,
            owner,
            zero,
            below: None,
        };
        self.alloc_slow(req, mem)
    }

    /// [`Self::alloc`] for a caller that keeps the front (`alloc_frames`). The same two
    /// steps as `alloc`, on a borrowed front: `alloc` does not call this, since through it the
    /// front would escape into the slow path's calls again.
    #[inline]
    fn alloc_one<M: FrameMemory + ?Sized>(
        &mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        match pcp::alloc_hot(&mut self.caches, self.states, req, mem) {
            Some(block) => Ok(block),
            None => self.alloc_slow(req, mem),
        }
    }

    /// [`Self::alloc`] past the stash: the ring or the buddy, then the out-of-memory path.
    #[inline]
    fn alloc_slow<M: FrameMemory + ?Sized>(
        &mut self,
        req: Request,
        mem: &mut M,
    ) -> Result<Block, AllocError> {
        let first = pcp::try_alloc_slow(&mut self.caches, self.states, &mut self.buddy, req, mem);
        self.or_after_oom(req, mem, first)
    }

    /// `first`, the first attempt's answer, unless it ran out of memory: then
    /// [`Self::alloc_after_oom`]'s.
    #[inline(always)]
    fn or_after_oom<M: FrameMemory + ?Sized>(
        &mut self,
        req: Request,
        mem: &mut M,
        first: Result<Block, AllocError>,
    ) -> Result<Block, AllocError> {
        match first {
            Err(e @ AllocError::OutOfMemory { .. }) => self.alloc_after_oom(req, mem, e),
            done => done,
        }
    }

    /// [`Self::alloc`] once its first attempt ran out of memory: the caches drained and the
    /// request retried ([`pcp::retry_after_drain`]), then the idle chunk released and one more
    /// attempt.
    #[cold]
    #[inline(never)]
    fn alloc_after_oom<M: FrameMemory + ?Sized>(
        &mut self,
        req: Request,
        mem: &mut M,
        first: AllocError,
    ) -> Result<Block, AllocError> {
        let (caches, states, buddy) = (&mut self.caches, self.states, &mut self.buddy);
        let again = pcp::retry_after_drain(caches, states, buddy, req, mem, first);
        if !matches!(again, Err(AllocError::OutOfMemory { .. })) {
            return again;
        }
        if self.release_idle_chunk(mem) == 0 {
            return again;
        }
        pcp::try_alloc(&mut self.caches, self.states, &mut self.buddy, req, mem)
    }

    /// Frees the block of 2^`order` frames at `addr` ([`pcp::free`]: order 0 to this CPU's
    /// stash or cache, with the state byte's double-free check; other orders to the buddy).
    /// The two routes are [`Self::free_cached`] and [`Self::free_to_buddy`]; a hot caller
    /// calls them from functions of their own, for the reason [`Self::alloc`] gives.
    #[inline(always)]
    pub fn free<M: FrameMemory + ?Sized>(
        self,
        addr: PhysAddr,
        order: u8,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        if order != 0 {
            self.free_to_buddy(addr, order, mem)
        } else {
            self.free_cached(addr, mem)
        }
    }

    /// [`Self::free`] of a block of order above 0: the buddy's, inline for the reason
    /// [`Self::alloc_from_buddy`] is. An order-0 free is sent the cache route's slow way (a
    /// frame handed out by a cache is one the buddy sees as the caches'), so any free is
    /// served right; [`Self::free_cached`] is its fast way.
    #[inline(always)]
    pub fn free_to_buddy<M: FrameMemory + ?Sized>(
        mut self,
        addr: PhysAddr,
        order: u8,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        if order == 0 {
            return self.free_cold(addr, order, mem);
        }
        self.buddy.with_buddy(|b| b.free(addr, order, mem))
    }

    /// [`Self::free`] of a single frame: the stash push inline, the rest out of line.
    #[inline(always)]
    pub fn free_cached<M: FrameMemory + ?Sized>(
        mut self,
        addr: PhysAddr,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        match pcp::free_hot(&mut self.caches, self.states, addr, 0) {
            Some(owner) => Ok(owner),
            None => self.free_cold(addr, 0, mem),
        }
    }

    #[inline(never)]
    fn free_cold<M: FrameMemory + ?Sized>(
        mut self,
        addr: PhysAddr,
        order: u8,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        pcp::free_slow(
            &mut self.caches,
            self.states,
            &mut self.buddy,
            addr,
            order,
            mem,
        )
    }

    /// [`Self::free`] for a caller that keeps the front (`free_frames`): [`pcp::free`], the
    /// same two steps on a borrowed front (see [`Self::alloc_one`]).
    #[inline]
    fn free_one<M: FrameMemory + ?Sized>(
        &mut self,
        addr: PhysAddr,
        order: u8,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        pcp::free(
            &mut self.caches,
            self.states,
            &mut self.buddy,
            addr,
            order,
            mem,
        )
    }

    /// `n` contiguous frames at their exact cost: one frame through this CPU's cache,
    /// 2..=511 from the bitmap layer, more from the buddy (rounded to a power of two only
    /// there). The same promise as [`Self::alloc`] before `OutOfMemory`.
    pub fn alloc_frames<M: FrameMemory + ?Sized>(
        &mut self,
        n: u64,
        owner: Owner,
        zero: bool,
        mem: &mut M,
    ) -> Result<Run, FrameError> {
        if n == 1 {
            let req = Request {
                order: 0,
                owner,
                zero,
                below: None,
            };
            return self
                .alloc_one(req, mem)
                .map(|b| Run {
                    addr: b.addr,
                    frames: 1,
                })
                .map_err(FrameError::Alloc);
        }
        let first = self.try_run(n, owner, zero, mem);
        if !matches!(
            first,
            Err(FrameError::Alloc(AllocError::OutOfMemory { .. }))
        ) {
            return first;
        }
        // The bitmap layer's lock is released here: the drain takes one cache at a time.
        let released = self.release_cached(mem);
        if let Some(e) = released.use_after_free {
            // As in `pcp::alloc`: this call fails, the frame is poisoned again, a retry works.
            return Err(FrameError::Alloc(e));
        }
        if released.frames == 0 {
            return first;
        }
        self.try_run(n, owner, zero, mem)
    }

    fn try_run<M: FrameMemory + ?Sized>(
        &mut self,
        n: u64,
        owner: Owner,
        zero: bool,
        mem: &mut M,
    ) -> Result<Run, FrameError> {
        let (buddy, states) = (&mut self.buddy, self.states);
        self.runs.with_runs(|runs| {
            // A listed chunk with room needs no buddy lock (poisoning off).
            if let Some(addr) = runs.alloc_listed(n, owner, zero, states.poisoning(), mem) {
                return Ok(Run { addr, frames: n });
            }
            buddy.with_buddy(|b| bitmap::alloc_frames(runs, b, n, owner, zero, mem))
        })
    }

    /// Frees `n` frames at `addr` as [`Self::alloc_frames`] gave them (the same `n`).
    pub fn free_frames<M: FrameMemory + ?Sized>(
        &mut self,
        addr: PhysAddr,
        n: u64,
        mem: &mut M,
    ) -> Result<Owner, FrameError> {
        if n == 1 {
            return self.free_one(addr, 0, mem).map_err(FrameError::Free);
        }
        let (buddy, states) = (&mut self.buddy, self.states);
        self.runs.with_runs(|runs| {
            // A run whose chunk stays needs no buddy lock (poisoning off); everything else,
            // misuse included, goes the full way, which names it.
            if let Some(owner) = runs.free_listed(addr, n, states.poisoning()) {
                return Ok(owner);
            }
            buddy.with_buddy(|b| bitmap::free_frames(runs, b, addr, n, mem))
        })
    }

    /// Gives back everything the front holds free for speed: every frame parked in a per-CPU
    /// cache and the bitmap layer's idle chunk (out of memory, memory pressure, `memcheck`).
    /// Call it holding none of the front's locks.
    pub fn release_cached<M: FrameMemory + ?Sized>(&mut self, mem: &mut M) -> Drained {
        let mut released = pcp::drain_all(&mut self.caches, self.states, &mut self.buddy, mem);
        released.frames += self.release_idle_chunk(mem);
        released
    }

    fn release_idle_chunk<M: FrameMemory + ?Sized>(&mut self, mem: &mut M) -> u64 {
        let buddy = &mut self.buddy;
        self.runs
            .with_runs(|runs| buddy.with_buddy(|b| runs.release_idle(b, mem)))
    }
}
