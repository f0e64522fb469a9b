//! One CPU's hot stash of order-0 frames: a small stack in front of its [`CpuCache`] that only
//! the owning CPU touches, so the common alloc and free take no lock (an alloc is a pop and
//! three plain stores, a free one compare-and-swap on the frame's state byte and a push).
//!
//! ```text
//! pcp::alloc order 0 -> HotCache::pop          owner only, no lock       (the common case)
//!                    -> CpuCache (locked)       refill: half a stash from the ring or buddy
//! pcp::free  order 0 -> HotCache::push          CAS handed out -> parked here, no lock
//!                    -> CpuCache (locked)       spill: the colder half of a full stash
//! ```
//!
//! # Who touches what
//!
//! * Every field is an atomic, so any CPU may *read* a stash at any time (statistics, the
//!   frames it holds for `meminfo`), but only its owner writes it: the owner's operations are
//!   the methods taking [`Owner`]-side work (`pop`, `push`, `spill`, `top_up`, `serve`), and the
//!   caller guarantees (through `CacheAccess::with_hot`) that they run on the owning CPU with
//!   nothing else of that CPU interleaved (the kernel masks interrupts). Breaking that rule
//!   loses or duplicates frames; it is a wiring bug, not a memory-safety one (no `unsafe`).
//! * The frames in a stash are parked under the stash's id (the same id as its CPU's ring), and
//!   only the owner writes their state bytes: a pop moves "parked" to "handed out" with a plain
//!   store. A free, on any CPU, moves "handed out" to "parked in *my* stash" with a
//!   compare-and-swap: two racing frees of one frame cannot both win, the loser reads "parked"
//!   and reports a double free. (Linux likewise frees a page to the local CPU's list, whichever
//!   CPU allocated it.)
//! * Other CPUs never take frames out of a stash. When they need every free frame (out of
//!   memory, reclaim, `validate`), they *hold* it ([`HotCache::request_hold`]): the owner, at
//!   its next operation or when it [`serve`](HotCache::serve)s requests (the kernel's timer
//!   tick), moves the whole stash into its locked ring, acknowledges, and bypasses the stash
//!   until the hold is released. Linux's `drain_all_pages` runs the drain on each CPU for the
//!   same reason.

use super::cache::{CacheStats, CpuCache};
use super::state::{self, FrameStates};
use super::BuddyAccess;
use crate::addr::{Pfn, PhysAddr};
use crate::buddy::{FrameMemory, Owner};
use crate::mem_map::Layout;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Frames one stash holds. A full stash spills half to its ring, an empty one takes half from
/// it, so a CPU that allocates and frees in bursts of up to this many never takes a lock.
pub const HOT_CAPACITY: usize = 32;

/// Frames moved between a stash and its ring at a time.
const MOVE: usize = HOT_CAPACITY / 2;

/// A stash slot: the frame number in the upper half, the mem_map index in the lower. `None`
/// for a frame number above 32 bits (physical addresses from 16 TiB up): such a frame is
/// never stashed and takes the locked ring instead.
#[inline(always)]
pub(super) fn pack(pfn: Pfn, index: u32) -> Option<u64> {
    let pfn = u32::try_from(pfn.as_u64()).ok()?;
    Some(u64::from(pfn) << 32 | u64::from(index))
}

#[inline(always)]
fn unpack(slot: u64) -> (Pfn, u32) {
    (Pfn::new(slot >> 32), slot as u32)
}

/// A relaxed load and store, for counters only their owner writes (no read-modify-write).
#[inline(always)]
fn bump_u64(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// One CPU's stash; see the module docs. Aligned to 128 bytes like [`CpuCache`], so one CPU's
/// stash shares no cache line with another's.
#[repr(align(128))]
pub struct HotCache {
    id: u8,
    /// The state byte of a frame parked here (`state::parked(id, false)`), kept so the pop
    /// and the push do not compute it.
    parked: u8,
    /// Frames stacked, the hot end at `len - 1`.
    len: AtomicUsize,
    /// Each stacked frame as one word, its frame number above its mem_map index
    /// ([`pack`]): one load per pop and one store per push.
    slots: [AtomicU64; HOT_CAPACITY],
    /// The mem_map section of the last frame freed here, copied (first frame, frames, first
    /// index): a free finds the frame's index from these three words, without following the
    /// layout (the loads of a free depend on each other; each level saved shows).
    hint_start: AtomicU64,
    hint_frames: AtomicU64,
    hint_first: AtomicU64,
    /// Pops and pushes per owner: one counter bump per operation (hits, frees and frames
    /// handed out are sums and differences of these, computed when read).
    popped: [AtomicU64; Owner::COUNT],
    pushed: [AtomicU64; Owner::COUNT],
    conflicts: AtomicU64,
    /// Holders waiting for or holding this stash empty (other CPUs' read-modify-writes).
    holds: AtomicU32,
    /// Bumped by each hold request; the owner answers with the value it saw in `answered`.
    requests: AtomicU32,
    answered: AtomicU32,
}

impl core::fmt::Debug for HotCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HotCache")
            .field("id", &self.id)
            .field("len", &self.len())
            .field("holds", &self.holds.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a hold request got: the ticket to wait on with [`HotCache::answered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldTicket(u32);

impl HotCache {
    /// An empty stash for the CPU whose ring has id `id`. `const` for the kernel's statics.
    pub const fn new(id: u8) -> Self {
        Self {
            id,
            parked: state::parked(id, false),
            len: AtomicUsize::new(0),
            slots: [const { AtomicU64::new(0) }; HOT_CAPACITY],
            hint_start: AtomicU64::new(0),
            hint_frames: AtomicU64::new(0),
            hint_first: AtomicU64::new(0),
            popped: [const { AtomicU64::new(0) }; Owner::COUNT],
            pushed: [const { AtomicU64::new(0) }; Owner::COUNT],
            conflicts: AtomicU64::new(0),
            holds: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            answered: AtomicU32::new(0),
        }
    }

    /// The id its frames are parked under (its CPU's ring's).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Frames stacked (exact for the owner, a recent value for anyone else).
    #[inline]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no frame is stacked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its counters, in the ring's shape (hits, frees, conflicts, handed out per owner; the
    /// rest zero). Add them to the ring's for the CPU's whole picture.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats {
            conflicts: self.conflicts.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for ((out, popped), pushed) in s.handed_out.iter_mut().zip(&self.popped).zip(&self.pushed) {
            let (popped, pushed) = (
                popped.load(Ordering::Relaxed),
                pushed.load(Ordering::Relaxed),
            );
            s.hits = s.hits.wrapping_add(popped);
            s.frees = s.frees.wrapping_add(pushed);
            *out = popped.wrapping_sub(pushed) as i64;
        }
        s
    }

    /// The stacked frames with their mem_map indices, coldest first (for `validate`, which
    /// reads them while every stash is held or from the owner).
    pub(super) fn slots(&self) -> impl Iterator<Item = (PhysAddr, u32)> + '_ {
        (0..self.len()).map(|i| {
            let (pfn, index) = unpack(self.slots[i].load(Ordering::Relaxed));
            (pfn.addr(), index)
        })
    }

    /// Whether a hold is pending or in force: the owner must not stack frames, and takes the
    /// locked path, which answers it. (Popping is harmless: before the answer the stash is
    /// still the owner's, after it the stash is empty.)
    #[inline(always)]
    pub(super) fn held(&self) -> bool {
        self.holds.load(Ordering::SeqCst) != 0
    }

    /// Owner: the hot frame, handed out to `owner` (its byte moved "parked" -> "handed out").
    /// `None` when the stash is empty. A frame whose byte is not "parked here, unpoisoned" is
    /// dropped from the stash and counted as a conflict (only a free behind the caches' back
    /// writes one).
    // Always inlined: this is the whole of the common allocation.
    #[inline(always)]
    pub(super) fn pop(&self, states: &FrameStates<'_>, owner: Owner) -> Option<PhysAddr> {
        let parked = self.parked;
        loop {
            let len = self.len();
            let top = len.checked_sub(1)?;
            self.len.store(top, Ordering::Relaxed);
            let (pfn, index) = unpack(self.slots.get(top)?.load(Ordering::Relaxed));
            // Plain stores: only this CPU writes the bytes of the frames it stacks (state.rs),
            // and whoever sees "handed out" sees the owner and the frame's contents before it.
            if !states.hand_out_if(index, parked, owner) {
                bump_u64(&self.conflicts);
                continue;
            }
            bump_u64(&self.popped[owner as usize]);
            return Some(pfn.addr());
        }
    }

    /// Owner: the mem_map index of `pfn` when it lies in the section the stash remembers
    /// (three loads, no search); `None` otherwise, and the locked path then remembers the
    /// frame's section ([`Self::remember_section`]).
    #[inline(always)]
    fn index_in_hint(&self, pfn: Pfn) -> Option<u32> {
        let offset = pfn
            .as_u64()
            .wrapping_sub(self.hint_start.load(Ordering::Relaxed));
        if offset < self.hint_frames.load(Ordering::Relaxed) {
            return Some((self.hint_first.load(Ordering::Relaxed) + offset) as u32);
        }
        None
    }

    /// Owner: remembers the mem_map section of `pfn` for the next frees, unless it already
    /// does (called on the locked path, when a free may have missed it). Nothing when `pfn`
    /// is no managed frame.
    pub(super) fn remember_section(&self, layout: &Layout, pfn: Pfn) {
        if self.index_in_hint(pfn).is_some() {
            return;
        }
        if let Some((_, s)) = layout.section_of(pfn) {
            self.hint_start.store(s.start, Ordering::Relaxed);
            self.hint_frames.store(s.frames, Ordering::Relaxed);
            self.hint_first.store(s.first_index, Ordering::Relaxed);
        }
    }

    /// Owner: the free of the single frame `pfn` into this stash, when it was handed out by
    /// a cache (any CPU's). `Some(owner)` when this free won the frame's byte (the
    /// compare-and-swap "handed out" -> "parked here") and stacked it; `None` when the frame
    /// is no handed-out frame of ours (misuse or the buddy's), poisoning is on, the stash is
    /// held or full, or the byte changed under us: the caller then takes the locked path,
    /// which decides on the byte it reads there and names any misuse.
    #[inline(always)]
    pub(super) fn push(&self, states: &FrameStates<'_>, pfn: Pfn) -> Option<Owner> {
        let index = self.index_in_hint(pfn)?;
        let slot = pack(pfn, index)?;
        let len = self.len();
        if len >= HOT_CAPACITY || self.held() || states.poisoning() {
            return None;
        }
        // The one read-modify-write of an alloc/free pair, from the one handed-out byte (no
        // load of it first): of two CPUs freeing this frame at once exactly one wins; the
        // other, and a free of a frame in any other state, takes the locked path, which reads
        // the byte and names the misuse.
        let owner = states.take_handed_out(index, self.parked).ok()?;
        self.stack(len, slot);
        bump_u64(&self.pushed[owner as usize]);
        Some(owner)
    }

    #[inline(always)]
    fn stack(&self, len: usize, slot: u64) {
        self.slots[len].store(slot, Ordering::Relaxed);
        self.len.store(len + 1, Ordering::Relaxed);
    }

    /// Owner, holding `ring`'s lock: moves the colder half of a full stash (all of it when
    /// `all`) into the ring, which drains to the buddy above its high mark. The frames stay
    /// parked under the same id: no state byte changes.
    pub(super) fn spill<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &self,
        all: bool,
        ring: &mut CpuCache,
        states: &FrameStates<'_>,
        buddy: &mut B,
        mem: &mut M,
    ) {
        let len = self.len();
        let n = if all { len } else { len.min(MOVE) };
        for slot in &self.slots[..n] {
            let (pfn, index) = unpack(slot.load(Ordering::Relaxed));
            ring.park_from_stash(states, buddy, pfn, index, mem);
        }
        for i in n..len {
            let slot = self.slots[i].load(Ordering::Relaxed);
            self.slots[i - n].store(slot, Ordering::Relaxed);
        }
        self.len.store(len - n, Ordering::Relaxed);
    }

    /// Owner, holding `ring`'s lock, stash empty and not held: takes up to half a stash from
    /// the ring's hot end (no state byte changes: both park under the same id).
    pub(super) fn top_up(&self, ring: &mut CpuCache) {
        let start = self.len();
        let mut len = start;
        while len < MOVE {
            let Some(slot) = ring.unpark_to_stash() else {
                break;
            };
            self.stack(len, slot);
            len += 1;
        }
        // The ring gave its hottest frame first: reverse, so it ends on top of the stash.
        let (mut lo, mut hi) = (start, len.saturating_sub(1));
        while lo < hi {
            let a = &self.slots;
            let low = a[lo].load(Ordering::Relaxed);
            a[lo].store(a[hi].load(Ordering::Relaxed), Ordering::Relaxed);
            a[hi].store(low, Ordering::Relaxed);
            lo += 1;
            hi -= 1;
        }
    }

    /// Owner, holding `ring`'s lock: answers a pending hold (the whole stash into the ring, the
    /// request acknowledged, the stash bypassed until released) or ends the bypass once every
    /// hold is released. Returns whether the stash may be used now. The kernel also calls it
    /// from each CPU's timer tick, so an idle CPU answers within a tick.
    ///
    /// Why a holder that sees its ticket answered may rely on the stash staying empty: the
    /// owner read the request counter after the holder bumped it, and the holder bumped the
    /// hold count before that (both sequentially consistent), so every later read of the count
    /// by the owner sees it non-zero until the holder releases: the owner stacks nothing
    /// (`push` checks [`Self::held`]). An operation the owner was in the middle of when the
    /// hold arrived ends before its next one answers (one CPU's operations never interleave).
    pub(super) fn serve<B: BuddyAccess, M: FrameMemory + ?Sized>(
        &self,
        ring: &mut CpuCache,
        states: &FrameStates<'_>,
        buddy: &mut B,
        mem: &mut M,
    ) -> bool {
        if !self.held() {
            return true;
        }
        let seen = self.requests.load(Ordering::SeqCst);
        if !self.is_empty() {
            self.spill(true, ring, states, buddy, mem);
        }
        self.answered.store(seen, Ordering::SeqCst);
        false
    }

    /// Any CPU: asks the owner to empty this stash into its ring and keep it empty; wait until
    /// [`Self::answered`] says yes, then every frame the stash had is in the ring (where the
    /// caller can lock it), until [`Self::release_hold`]. Holds nest.
    pub fn request_hold(&self) -> HoldTicket {
        self.holds.fetch_add(1, Ordering::SeqCst);
        HoldTicket(self.requests.fetch_add(1, Ordering::SeqCst).wrapping_add(1))
    }

    /// Whether the owner has answered the request `ticket` (or a later one).
    pub fn answered(&self, ticket: HoldTicket) -> bool {
        let got = self.answered.load(Ordering::SeqCst);
        got.wrapping_sub(ticket.0) as i32 >= 0
    }

    /// Ends one hold (answered or not). The owner uses the stash again at its next operation
    /// once no hold is left.
    pub fn release_hold(&self) {
        self.holds.fetch_sub(1, Ordering::SeqCst);
    }
}
