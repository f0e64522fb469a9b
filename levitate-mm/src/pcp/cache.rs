//! One CPU's cache of order-0 frames: a ring of parked frames used as a stack at its hot end
//! (the frame freed last is handed out first, still in the CPU's caches) and drained at its
//! cold end, with Linux's per-CPU page list watermarks: refill `batch` frames when empty,
//! drain `batch` when more than `high` are parked.
//!
//! Not synchronized: every operation takes `&mut self`. The kernel keeps one per CPU behind a
//! spin lock (interrupts masked) that its own CPU takes, and another CPU only to free a frame
//! this cache handed out, or to drain it: uncontended on the common path; see
//! `pcp::CacheAccess`.

use super::state::{self, FrameState, FrameStates, NotTaken, MAX_CACHES};
use super::{BuddyAccess, Drained, PcpError};
use crate::addr::{Pfn, PhysAddr};
use crate::buddy::{AllocError, Buddy, FrameMemory, FreeError, Holder, Owner, Request, POISON};
use crate::mem_map::Layout;
use core::fmt;

/// Frames one cache can hold.
pub const CAPACITY: usize = 256;

/// A cache's watermarks, in frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// More parked frames than this after a free drains `batch` of them to the buddy.
    pub high: u16,
    /// Frames taken from the buddy when the cache is empty, and given back per drain.
    pub batch: u16,
}

impl Limits {
    /// Linux's ratio (`high` a few batches, so a CPU that frees what it allocates rarely
    /// reaches the buddy), sized for [`CAPACITY`].
    pub const DEFAULT: Limits = Limits {
        high: 160,
        batch: 32,
    };

    /// The limits if `1 <= batch <= high < CAPACITY`: a refill fits under `high`, and a
    /// free (at most `high` parked before it) always finds room.
    pub const fn check(self) -> Result<Self, PcpError> {
        if self.batch == 0 || self.batch > self.high || self.high as usize >= CAPACITY {
            Err(PcpError::Limits {
                high: self.high,
                batch: self.batch,
            })
        } else {
            Ok(self)
        }
    }
}

/// A cache's counters. The kernel adds them up across CPUs (`+=`) for `meminfo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Frames handed out of the cache.
    pub hits: u64,
    /// Frames freed into the cache.
    pub frees: u64,
    /// Times the cache took frames from the buddy, and how many it took.
    pub refills: u64,
    /// Frames taken by refills.
    pub refilled: u64,
    /// Times the cache gave frames back to the buddy, and how many it gave.
    pub drains: u64,
    /// Frames given back by drains.
    pub drained: u64,
    /// Frees refused because the frame was already parked (in this cache or another).
    pub double_frees: u64,
    /// Frames whose state byte or buddy record was not what the cache expected: memory
    /// corruption, or a frame freed to the buddy behind the caches' back. Never handed out.
    pub conflicts: u64,
    /// Parked frames found written while parked (poisoning).
    pub use_after_free: u64,
    /// Frames handed out minus frames freed here, per owner (index `Owner as usize`). One
    /// CPU's figure goes negative when it frees what another allocated; the sum over all
    /// caches is what the owners hold.
    pub handed_out: [i64; Owner::COUNT],
}

impl CacheStats {
    const ZERO: CacheStats = CacheStats {
        hits: 0,
        frees: 0,
        refills: 0,
        refilled: 0,
        drains: 0,
        drained: 0,
        double_frees: 0,
        conflicts: 0,
        use_after_free: 0,
        handed_out: [0; Owner::COUNT],
    };

    /// Frames handed out to `owner` (meaningful summed over all caches).
    pub fn handed_out_to(&self, owner: Owner) -> i64 {
        self.handed_out[owner as usize]
    }

    /// Frames handed out to anyone (meaningful summed over all caches).
    pub fn handed_out_total(&self) -> i64 {
        self.handed_out.iter().sum()
    }
}

impl core::ops::AddAssign for CacheStats {
    fn add_assign(&mut self, other: CacheStats) {
        self.hits += other.hits;
        self.frees += other.frees;
        self.refills += other.refills;
        self.refilled += other.refilled;
        self.drains += other.drains;
        self.drained += other.drained;
        self.double_frees += other.double_frees;
        self.conflicts += other.conflicts;
        self.use_after_free += other.use_after_free;
        for (sum, n) in self.handed_out.iter_mut().zip(other.handed_out) {
            *sum += n;
        }
    }
}

/// A parked frame with its mem_map index, so a pop needs no section lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    pfn: u64,
    index: u32,
    /// Parked filled with the poison (as its state byte says): such a frame stays in the ring,
    /// where leaving checks it, and is never moved to the stash. Kept here so moving frames
    /// to the stash reads no state byte (those lines are usually cold).
    poisoned: bool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        pfn: 0,
        index: 0,
        poisoned: false,
    };

    #[inline]
    fn addr(self) -> PhysAddr {
        Pfn::new(self.pfn).addr()
    }
}

/// One CPU's cache; see the module docs.
///
/// Aligned to 128 bytes (two 64-byte lines, for CPUs whose prefetcher fetches line pairs, and
/// Apple-class cores with 128-byte lines): the kernel keeps the caches in one array, each in
/// its own lock, and without this one CPU's counters shared a line with the next CPU's lock
/// (false sharing: two CPUs ran slower than one in `cargo xtask bench`).
#[repr(align(128))]
pub struct CpuCache {
    id: u8,
    limits: Limits,
    /// A ring: `len` frames from `cold`, the hot end at `cold + len - 1`.
    slots: [Slot; CAPACITY],
    cold: usize,
    len: usize,
    /// The section of the last frame refilled here: refills mostly stay in one section, so
    /// a refill finds a frame's index in O(1) instead of a binary search. (A free looks the
    /// index up before it knows which cache to lock, with `Layout::index_of`.)
    section_hint: usize,
    stats: CacheStats,
}

impl fmt::Debug for CpuCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuCache")
            .field("id", &self.id)
            .field("limits", &self.limits)
            .field("len", &self.len)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl CpuCache {
    /// An empty cache with id `id` (below [`MAX_CACHES`], distinct per cache: the state bytes
    /// name it) and the given limits. `const` so the kernel can put one per CPU in a static.
    pub const fn new(id: u8, limits: Limits) -> Result<Self, PcpError> {
        if id as usize >= MAX_CACHES {
            return Err(PcpError::CacheId { id });
        }
        let limits = match limits.check() {
            Ok(l) => l,
            Err(e) => return Err(e),
        };
        Ok(Self {
            id,
            limits,
            slots: [Slot::EMPTY; CAPACITY],
            cold: 0,
            len: 0,
            section_hint: 0,
            stats: CacheStats::ZERO,
        })
    }

    /// The id in the state bytes of the frames parked here.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The watermarks.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Frames parked.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no frame is parked.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The parked frames, coldest first.
    pub fn frames(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        (0..self.len).map(|i| self.slot(i).addr())
    }

    /// The `i`-th parked frame from the cold end.
    #[inline]
    fn slot(&self, i: usize) -> Slot {
        self.slots[(self.cold + i) % CAPACITY]
    }

    /// Parks a frame at the hot end (the caller keeps `len` below `CAPACITY`).
    #[inline]
    fn push(&mut self, slot: Slot) {
        debug_assert!(self.len < CAPACITY);
        self.slots[(self.cold + self.len) % CAPACITY] = slot;
        self.len += 1;
    }

    #[inline]
    fn pop_hot(&mut self) -> Option<Slot> {
        self.len = self.len.checked_sub(1)?;
        Some(self.slot(self.len))
    }

    #[inline]
    fn pop_cold(&mut self) -> Option<Slot> {
        let slot = (self.len > 0).then(|| self.slot(0))?;
        self.cold = (self.cold + 1) % CAPACITY;
        self.len -= 1;
        Some(slot)
    }

    /// The mem_map index of `pfn`: O(1) when it lies in the section of the last lookup,
    /// O(log sections) otherwise.
    #[inline]
    fn index_of(&mut self, layout: &Layout, pfn: Pfn) -> Option<u32> {
        if let Some(s) = layout.sections().get(self.section_hint) {
            if s.contains(pfn.as_u64()) {
                return Some(s.index_of(pfn.as_u64()) as u32);
            }
        }
        let (i, s) = layout.section_of(pfn)?;
        self.section_hint = i;
        Some(s.index_of(pfn.as_u64()) as u32)
    }

    /// Hands out a frame for `owner`, refilling from the buddy first when empty. Fails with
    /// the buddy's `OutOfMemory` when the buddy has no frame either (the caller then drains
    /// every cache and retries), or `UseAfterFree` when poisoning finds a frame written while
    /// free (the frame is poisoned again and stays free: a retry succeeds).
    pub(super) fn alloc<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        owner: Owner,
        zero: bool,
        mem: &mut M,
    ) -> Result<PhysAddr, AllocError> {
        // Each round either hands out a frame, fails, or consumes buddy frames (a refill
        // adds frames; only corruption makes a pop discard them): it ends.
        loop {
            if self.is_empty() {
                self.refill(states, buddy, mem)?;
            }
            if let Some(result) = self.pop(states, owner, zero, mem) {
                return result;
            }
        }
    }

    /// The fast path: the hot frame, checked against the poison if it was filled. `None` when
    /// the cache is empty (or held nothing it could hand out).
    fn pop<M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        owner: Owner,
        zero: bool,
        mem: &mut M,
    ) -> Option<Result<PhysAddr, AllocError>> {
        loop {
            let slot = self.pop_hot()?;
            let FrameState::Parked { cache, poisoned } = states.read(slot.index).1 else {
                self.stats.conflicts += 1;
                continue;
            };
            if cache != self.id {
                self.stats.conflicts += 1;
                continue;
            }
            let pfn = Pfn::new(slot.pfn);
            if poisoned {
                if let Some(addr) = mem.find_not(pfn, 1, POISON) {
                    // As the buddy does: poison again and keep the frame free (back at the hot
                    // end, so a retry takes it), and name the first byte written.
                    mem.fill(pfn, 1, POISON);
                    self.push(slot);
                    self.stats.use_after_free += 1;
                    return Some(Err(AllocError::UseAfterFree {
                        addr,
                        block: slot.addr(),
                        order: 0,
                    }));
                }
            }
            // A plain store, not a compare-and-swap: a parked frame's byte changes only under
            // the lock of the cache that holds it (this one; see state.rs), and a racing free
            // of a parked frame only reads it (a double free).
            states.hand_out(slot.index, owner);
            if zero {
                mem.fill(pfn, 1, 0);
            }
            self.stats.hits += 1;
            self.stats.handed_out[owner as usize] += 1;
            return Some(Ok(slot.addr()));
        }
    }

    /// Takes up to `batch` frames from the buddy (as owner frame cache) in one lock hold.
    /// Fails only when it could take none, or when poisoning caught a use after free (the
    /// frames taken so far stay parked).
    pub(super) fn refill<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        mem: &mut M,
    ) -> Result<(), AllocError> {
        buddy.with_buddy(|b| {
            let poisoned = b.poisoning();
            states.set_poisoning(poisoned);
            let batch = usize::from(self.limits.batch);
            // Whole blocks at once (none with poisoning on), then one frame at a time for
            // the rest, which checks the poison and says why the buddy has none.
            let mut taken = b.alloc_singles(batch, Owner::FrameCache, |addr| {
                self.park_from_buddy(states, addr.pfn(), poisoned)
            }) as u64;
            while taken < batch as u64 {
                let block = match b.alloc(Request::new(0, Owner::FrameCache), mem) {
                    Ok(block) => block,
                    Err(e @ AllocError::UseAfterFree { .. }) => return Err(e),
                    Err(e) if taken == 0 => return Err(e),
                    Err(_) => break,
                };
                taken += 1;
                self.park_from_buddy(states, block.pfn(), poisoned);
            }
            self.stats.refills += 1;
            self.stats.refilled += taken;
            Ok(())
        })
    }

    /// Parks a frame the buddy just allocated to the frame cache (the buddy's lock held).
    /// The byte moves "buddy" -> "parked here" with a load and a plain store: a byte that says
    /// "buddy" is written only under the buddy's lock (state.rs), which the caller holds.
    #[inline]
    fn park_from_buddy(&mut self, states: &FrameStates<'_>, pfn: Pfn, poisoned: bool) {
        let Some(index) = self.index_of(states.layout(), pfn) else {
            // The states' layout is not the buddy's: a wiring bug. Keep the frame allocated
            // rather than park a frame the states cannot describe.
            self.stats.conflicts += 1;
            return;
        };
        if states.load(index) != state::BUDDY {
            // The buddy had this frame free while its byte says a cache or a holder has it:
            // it was freed to the buddy behind the caches' back. Allocated to the frame cache
            // again, it is back where its byte says: leave it.
            self.stats.conflicts += 1;
            return;
        }
        states.publish(index, state::parked(self.id, poisoned));
        self.push(Slot {
            pfn: pfn.as_u64(),
            index,
            poisoned,
        });
    }

    /// The free of the frame at mem_map `index`, whose byte said "handed out", into this
    /// (locked) cache: a compare-and-swap moves it to "parked here", so of two racing frees of
    /// one frame, on any CPUs, exactly one wins (the other reads "parked" and is refused as a
    /// double free). `None` when the byte changed before the swap: the caller reads it again
    /// and starts over.
    pub(super) fn free_handed_out<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        addr: PhysAddr,
        index: u32,
        mem: &mut M,
    ) -> Option<Result<Owner, FreeError>> {
        let poisoned = states.poisoning();
        let owner = match states.take_handed_out(index, state::parked(self.id, poisoned)) {
            Ok(owner) => owner,
            Err(NotTaken::State(_)) => return None,
            Err(NotTaken::Owner(_)) => return Some(Err(self.lost(addr))),
        };
        if poisoned {
            mem.fill(addr.pfn(), 1, POISON);
        }
        self.park(
            states,
            buddy,
            Slot {
                pfn: addr.pfn().as_u64(),
                index,
                poisoned,
            },
            mem,
        );
        self.stats.frees += 1;
        self.stats.handed_out[owner as usize] -= 1;
        Some(Ok(owner))
    }

    /// Parks a frame from this CPU's stash (already parked under this id: no byte changes),
    /// draining the coldest batch above `high`.
    pub(super) fn park_from_stash<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        pfn: Pfn,
        index: u32,
        mem: &mut M,
    ) {
        let slot = Slot {
            pfn: pfn.as_u64(),
            index,
            poisoned: false,
        };
        self.park(states, buddy, slot, mem);
    }

    /// Takes the hot frame for this CPU's stash if it was parked unpoisoned (a stash holds no
    /// poisoned frames: they are checked when they leave, which only the ring does), as a
    /// stash slot (`hot::pack`; `None` for a frame number the slot cannot hold). Reads no
    /// state byte: the stash's pop checks the byte of each frame it hands out.
    pub(super) fn unpark_to_stash(&mut self) -> Option<u64> {
        let top = self.len.checked_sub(1)?;
        let slot = self.slot(top);
        if slot.poisoned {
            return None;
        }
        let packed = super::hot::pack(Pfn::new(slot.pfn), slot.index)?;
        self.len = top;
        Some(packed)
    }

    /// The free of the frame at mem_map `index` whose state `current` (read without a lock)
    /// was not "handed out", on the caller's own cache: a frame already parked is a double
    /// free (it was parked when the free read it); one the buddy holds goes to the buddy's
    /// free, which checks everything and counts the misuse; a byte no transition writes is a
    /// conflict.
    pub(super) fn free_not_handed_out<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        addr: PhysAddr,
        index: u32,
        current: FrameState,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        match current {
            FrameState::Parked { .. } => {
                self.stats.double_frees += 1;
                Err(double_free(addr))
            }
            FrameState::Buddy => self.free_to_buddy(states, buddy, addr, index, mem),
            FrameState::HandedOut { .. } | FrameState::Invalid(_) | FrameState::InvalidOwner(_) => {
                Err(self.lost(addr))
            }
        }
    }

    /// A frame whose byte no transition writes (an invalid state): counted as a conflict, and
    /// refused without touching it.
    pub(super) fn lost(&mut self, addr: PhysAddr) -> FreeError {
        self.stats.conflicts += 1;
        FreeError::NeverAllocated {
            addr,
            order: 0,
            now: Holder::Lost,
        }
    }

    /// Parks a frame just freed, then drains the coldest `batch` when above `high`.
    fn park<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        slot: Slot,
        mem: &mut M,
    ) {
        if self.len == CAPACITY {
            // Unreachable with checked limits (`high < CAPACITY`); never overwrite a frame.
            buddy.with_buddy(|b| self.drain_cold(usize::from(self.limits.batch), states, b, mem));
        }
        self.push(slot);
        if self.len > usize::from(self.limits.high) {
            buddy.with_buddy(|b| self.drain_cold(usize::from(self.limits.batch), states, b, mem));
        }
    }

    /// A free of a frame whose byte said "buddy". Only the buddy lock moves a frame into or out
    /// of that state, so the byte is read again under it: if a refill took the frame from the
    /// buddy in between, the frame was free when the caller freed it, and the buddy must not
    /// see this free (it would accept it: the frame is now allocated to the frame cache).
    fn free_to_buddy<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        addr: PhysAddr,
        index: u32,
        mem: &mut M,
    ) -> Result<Owner, FreeError> {
        buddy.with_buddy(|b| {
            if states.load(index) == state::BUDDY {
                b.free(addr, 0, mem)
            } else {
                self.stats.double_frees += 1;
                Err(double_free(addr))
            }
        })
    }

    /// Gives every parked frame back to the buddy (a drain of all caches, or a CPU going
    /// offline).
    pub fn drain<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &mut self,
        states: &FrameStates<'_>,
        buddy: &mut B,
        mem: &mut M,
    ) -> Drained {
        if self.is_empty() {
            return Drained::default();
        }
        buddy.with_buddy(|b| self.drain_cold(CAPACITY, states, b, mem))
    }

    /// Gives the `count` coldest frames back to the (locked) buddy. A poisoned frame is
    /// checked first: the buddy's free poisons it again, so this is the last chance to see a
    /// write made while it was parked.
    fn drain_cold<M: FrameMemory + ?Sized>(
        &mut self,
        count: usize,
        states: &FrameStates<'_>,
        b: &mut Buddy<'_>,
        mem: &mut M,
    ) -> Drained {
        states.set_poisoning(b.poisoning());
        let mut report = Drained::default();
        for _ in 0..count {
            let Some(slot) = self.pop_cold() else { break };
            let FrameState::Parked { cache, poisoned } = states.read(slot.index).1 else {
                self.stats.conflicts += 1;
                continue;
            };
            let addr = slot.addr();
            if cache != self.id {
                self.stats.conflicts += 1;
                continue;
            }
            if b.owner_of(addr) != Some((Owner::FrameCache, 0, addr)) {
                // Freed to the buddy behind the caches' back (and maybe allocated from it
                // since): the buddy holds it, so say so, and free nothing, which could free
                // somebody else's block.
                states.publish(slot.index, state::BUDDY);
                self.stats.conflicts += 1;
                continue;
            }
            if poisoned {
                if let Some(bad) = mem.find_not(addr.pfn(), 1, POISON) {
                    self.stats.use_after_free += 1;
                    report
                        .use_after_free
                        .get_or_insert(AllocError::UseAfterFree {
                            addr: bad,
                            block: addr,
                            order: 0,
                        });
                }
            }
            // A plain store: a byte that says "parked here" changes only under this cache's
            // lock, which the caller holds (state.rs; racing frees of the frame only read it).
            states.publish(slot.index, state::BUDDY);
            if b.free(addr, 0, mem).is_ok() {
                report.frames += 1;
            } else {
                self.stats.conflicts += 1;
            }
        }
        self.stats.drains += 1;
        self.stats.drained += report.frames;
        report
    }

    /// Each parked frame with its mem_map index, coldest first (for `validate`).
    pub(super) fn slots(&self) -> impl Iterator<Item = (PhysAddr, u32)> + '_ {
        (0..self.len).map(|i| {
            let s = self.slot(i);
            (s.addr(), s.index)
        })
    }

    /// Parks a frame without any check or state change: lets tests corrupt a cache.
    #[cfg(test)]
    pub(super) fn push_unchecked(&mut self, addr: PhysAddr, index: u32) {
        self.push(Slot {
            pfn: addr.pfn().as_u64(),
            index,
            poisoned: false,
        });
    }

    /// Takes the hot frame without any check or state change: lets tests corrupt a cache.
    #[cfg(test)]
    pub(super) fn pop_hot_for_test(&mut self) -> PhysAddr {
        self.pop_hot().map(Slot::addr).unwrap_or_default()
    }
}

/// A free of a parked frame: from the buddy's point of view it is an order-0 block allocated
/// to the frame cache.
fn double_free(addr: PhysAddr) -> FreeError {
    FreeError::DoubleFree {
        addr,
        order: 0,
        now: Holder::Allocated {
            block: addr,
            order: 0,
            owner: Owner::FrameCache,
        },
    }
}
