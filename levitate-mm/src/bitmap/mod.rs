//! The bitmap layer: runs of 1 to 511 contiguous frames, each costing exactly its length,
//! carved out of 2 MiB chunks that the buddy hands out whole (order 9, owner
//! [`Owner::Bitmap`]); and the front ([`alloc_frames`], [`free_frames`]) that sends a request
//! to this layer or to the buddy by its length. No allocation, no unsafe code: all state sits
//! in [`SmallRuns`], a fixed table of at most `N` chunks.
//!
//! # Design
//!
//! * **One chunk, three 512-bit maps.** Frames in use, the first frame of every run, and
//!   frames that ever started a run (tells a double free from a stray address, like the
//!   buddy's flag). A run's length is recorded nowhere: it ends at the next run start or free
//!   frame, so a free of `n` frames is checked exactly (the address starts a run and the run
//!   is `n` long). Owners sit in four bits per frame, read at run starts only, for per-owner
//!   accounting the buddy cannot see inside a chunk.
//! * **Searching a chunk** is first fit from a hint (every frame below it is in use), a word
//!   at a time: runs of up to 64 inside a word by shift-and doubling, longer runs and runs
//!   across words by carrying a word's top free bits (leading zeros) into the next words'
//!   bottom free bits (trailing zeros). At most 8 words, O(log n) operations each; the hint
//!   makes repeated small allocations O(1).
//! * **Finding a chunk** never walks the table. Each chunk with free frames sits on one of
//!   512 lists, keyed by an upper bound on its longest free run; a 512-bit mask of non-empty
//!   lists gives the lowest list that can hold `n` frames in at most 8 words (best fit by
//!   bound, which keeps long free runs for long requests). The bound is only an upper bound
//!   (allocations leave it as is, so they never relink a chunk): a search that fails lowers it
//!   below `n` and moves the chunk, so each failure is paid for by an earlier allocation's
//!   staleness, and a free raises it to the free run it merged into. A full chunk is on no
//!   list.
//! * **Finding the chunk of an address** (a free) is a binary search of the sorted chunk
//!   bases: O(log N), in an 8-byte-per-chunk array.
//! * **Chunks come and go whole, with one kept idle.** A chunk is taken from the buddy when no
//!   listed chunk has the run. When its last run is freed, the first wholly free chunk stays
//!   (the idle chunk, listed like any other): alloc/free pairs at a chunk boundary would
//!   otherwise take and return 2 MiB every time. A second chunk that empties goes back at
//!   once. [`SmallRuns::release_idle`] gives the idle chunk back; the front calls it before
//!   any allocation reports `OutOfMemory` and whenever the kernel reclaims, so the idle chunk
//!   never makes an allocation fail that could succeed. When all `N` slots are in use (or the
//!   buddy has no free 2 MiB block) the front serves a small request from the buddy rounded
//!   up to a power of two, and counts it; [`free_frames`] hands any address that no chunk
//!   holds to the buddy, which checks it as a block of the rounded-up order. So a small run
//!   freed again after its chunk went back is refused by the buddy, in its words; as with the
//!   buddy alone, a stale free that matches a block handed out since cannot be caught.
//! * **Misuse is refused, never obeyed**: length, chunk, alignment, run start, exact length are
//!   checked before anything changes; each refusal is a [`FrameError`] counted per
//!   [`RunMisuse`] kind.
//! * **Poisoning** follows the buddy's switch: freed runs are filled with [`POISON`],
//!   allocations check their frames first and report a write with its address
//!   ([`FrameError::UseAfterFree`]), leaving the run free and poisoned again. When the buddy's
//!   switch turns on, the next call poisons the free frames of every chunk (the buddy only
//!   poisons its own free blocks).
//!
//! Memory: a chunk slot is 488 bytes (three maps, the owner nibbles, hints, links and its
//! entry in the sorted bases), so the default [`MAX_CHUNKS`] costs 483 KiB of static memory
//! (0.02 % of the 2 GiB it can hold in small runs); smaller kernels can pick a smaller `N`.

mod allocate;
mod bits;
mod chunk;
mod error;
mod front;
mod release;
mod stats;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{FrameError, RunHolder, RunMisuse};
pub use front::{alloc_frames, free_frames, free_run, Run};
pub use stats::{BitmapStats, RunMisuseCounts};
pub use validate::BitmapViolation;

use crate::addr::{Pfn, PhysAddr};
use crate::buddy::{Buddy, FrameMemory, Owner, POISON};
use bits::{Bits, BITS, WORDS};
use chunk::{Chunk, NIL};

/// Frames in a chunk (2 MiB): runs shorter than this come from chunks, longer ones from the
/// buddy.
pub const CHUNK_FRAMES: u64 = BITS as u64;
/// The buddy order of a chunk.
pub const CHUNK_ORDER: u8 = 9;
/// Chunk slots in the default [`SmallRuns`]: 2 GiB in small runs, 483 KiB of table.
pub const MAX_CHUNKS: usize = 1024;

/// The bitmap layer's state: at most `N` chunks (`N` below 65535), each with its maps, hints and
/// list links, the sorted chunk bases, the lists by free-run bound, and the counters.
#[derive(Clone, PartialEq, Eq)]
pub struct SmallRuns<const N: usize = MAX_CHUNKS> {
    chunks: [Chunk; N],
    /// Base frame numbers of the chunks held, sorted; `slots[i]` is the slot of `keys[i]`.
    keys: [u64; N],
    slots: [u16; N],
    /// Chunks held (the used part of `keys` and `slots`).
    held: usize,
    /// Slots freed since they were first used, a stack linked through `Chunk::next`.
    spare: u16,
    /// The one wholly free chunk kept (hysteresis), or [`NIL`].
    idle: u16,
    /// Slots from here on have never been used.
    fresh: u16,
    /// Per free-run bound `b` (1..=512), the first chunk on list `b - 1`.
    heads: [u16; BITS as usize],
    /// Bit `b - 1` is set when list `b` is not empty.
    listed: Bits,
    /// Frames in runs, in all and per owner.
    in_use: u64,
    allocated: [u64; Owner::COUNT],
    misuse: RunMisuseCounts,
    fallbacks: u64,
    failures: u64,
    chunks_taken: u64,
    chunks_returned: u64,
    use_after_free: u64,
    /// Whether the free frames of every chunk hold the poison (follows `Buddy::poisoning`).
    poisoned: bool,
}

impl<const N: usize> core::fmt::Debug for SmallRuns<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmallRuns")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<const N: usize> Default for SmallRuns<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SmallRuns<N> {
    /// Slot indices are `u16` with [`NIL`] reserved.
    const CAPACITY_OK: () = assert!(N > 0 && N < NIL as usize, "1 to 65534 chunks");

    /// An empty layer holding no chunk. `const`, so the kernel can keep it in a static.
    pub const fn new() -> Self {
        let () = Self::CAPACITY_OK;
        Self {
            chunks: [Chunk::EMPTY; N],
            keys: [0; N],
            slots: [0; N],
            held: 0,
            spare: NIL,
            idle: NIL,
            fresh: 0,
            heads: [NIL; BITS as usize],
            listed: [0; WORDS],
            in_use: 0,
            allocated: [0; Owner::COUNT],
            misuse: RunMisuseCounts::ZERO,
            fallbacks: 0,
            failures: 0,
            chunks_taken: 0,
            chunks_returned: 0,
            use_after_free: 0,
            poisoned: false,
        }
    }

    /// The run that holds `addr`: its first byte, length and owner; `None` when no chunk holds
    /// the address or its frame is free. For diagnostics: O(log N).
    pub fn run_of(&self, addr: PhysAddr) -> Option<(PhysAddr, u64, Owner)> {
        let (slot, i) = self.locate(addr.pfn())?;
        let chunk = &self.chunks[usize::from(slot)];
        let (start, frames) = chunk.run_holding(i)?;
        Some((
            chunk.pfn(start).addr(),
            u64::from(frames),
            chunk.owner_at(start),
        ))
    }

    /// Whether a chunk of this layer holds `addr`.
    pub fn holds(&self, addr: PhysAddr) -> bool {
        self.locate(addr.pfn()).is_some()
    }

    /// Checks every free frame of every chunk for the poison (the shell's `memcheck`, next to
    /// [`Buddy::find_use_after_free`]): the first byte written while free, with its free run.
    /// `None` also when the chunks are not poisoned.
    pub fn find_use_after_free<M: FrameMemory + ?Sized>(&self, mem: &M) -> Option<FrameError> {
        if !self.poisoned {
            return None;
        }
        self.free_runs().find_map(|(run, frames)| {
            mem.find_not(run, frames, POISON)
                .map(|addr| FrameError::UseAfterFree {
                    addr,
                    run: run.addr(),
                    frames,
                })
        })
    }

    /// The slot of the chunk that holds `pfn` and the frame's index in it. O(log N).
    fn locate(&self, pfn: Pfn) -> Option<(u16, u32)> {
        let base = pfn.as_u64() & !(CHUNK_FRAMES - 1);
        let i = self.keys[..self.held].binary_search(&base).ok()?;
        Some((self.slots[i], (pfn.as_u64() - base) as u32))
    }

    /// The slots of the chunks held, in address order.
    fn held_slots(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots[..self.held].iter().copied()
    }

    /// Every maximal free run inside the chunks, as (first frame, length).
    fn free_runs(&self) -> impl Iterator<Item = (Pfn, u64)> + '_ {
        self.held_slots().flat_map(move |slot| {
            let chunk = &self.chunks[usize::from(slot)];
            let mut at = 0;
            core::iter::from_fn(move || {
                let start = bits::next_set(at, |w| !chunk.used[w]);
                if start >= BITS {
                    return None;
                }
                let end = bits::next_set(start, |w| chunk.used[w]);
                at = end;
                Some((chunk.pfn(start), u64::from(end - start)))
            })
        })
    }

    /// Makes the chunks' free frames agree with the buddy's poisoning switch: when it has been
    /// turned on since the last call, fill them with the poison (once, O(chunks)).
    fn sync_poisoning<M: FrameMemory + ?Sized>(&mut self, buddy: &Buddy<'_>, mem: &mut M) {
        let on = buddy.poisoning();
        if on && !self.poisoned {
            for (first, frames) in self.free_runs() {
                mem.fill(first, frames, POISON);
            }
        }
        self.poisoned = on;
    }

    /// The head of the lowest non-empty list whose bound is at least `n`.
    fn first_listed(&self, n: u32) -> Option<u16> {
        let list = bits::next_set(n - 1, |w| self.listed[w]);
        (list < BITS).then(|| self.heads[list as usize])
    }

    /// Puts a chunk with free frames on the list of its bound, first (most recently touched
    /// chunks are tried first: their maps are likely in the cache).
    fn link(&mut self, slot: u16) {
        let list = usize::from(self.chunks[usize::from(slot)].bound - 1);
        let head = self.heads[list];
        let chunk = &mut self.chunks[usize::from(slot)];
        chunk.prev = NIL;
        chunk.next = head;
        if head != NIL {
            self.chunks[usize::from(head)].prev = slot;
        }
        self.heads[list] = slot;
        bits::set(&mut self.listed, list as u32);
    }

    /// Takes a chunk off its list.
    fn unlink(&mut self, slot: u16) {
        let chunk = self.chunks[usize::from(slot)];
        let list = usize::from(chunk.bound - 1);
        if chunk.prev == NIL {
            self.heads[list] = chunk.next;
        } else {
            self.chunks[usize::from(chunk.prev)].next = chunk.next;
        }
        if chunk.next != NIL {
            self.chunks[usize::from(chunk.next)].prev = chunk.prev;
        }
        if self.heads[list] == NIL {
            bits::clear(&mut self.listed, list as u32);
        }
        let chunk = &mut self.chunks[usize::from(slot)];
        chunk.next = NIL;
        chunk.prev = NIL;
    }

    /// Records a new bound for a listed chunk and moves it to that list.
    fn rebound(&mut self, slot: u16, bound: u32) {
        if u32::from(self.chunks[usize::from(slot)].bound) != bound {
            self.unlink(slot);
            self.chunks[usize::from(slot)].bound = bound as u16;
            self.link(slot);
        }
    }

    /// Files a chunk just taken from the buddy: a slot, its place among the sorted bases, and
    /// the list of fully free chunks. The caller checked that a slot is free.
    fn add_chunk(&mut self, base: Pfn) -> u16 {
        let slot = if self.spare != NIL {
            let slot = self.spare;
            self.spare = self.chunks[usize::from(slot)].next;
            slot
        } else {
            self.fresh += 1;
            self.fresh - 1
        };
        self.chunks[usize::from(slot)] = Chunk::fresh(base);
        let at = self.keys[..self.held].partition_point(|&k| k < base.as_u64());
        self.keys.copy_within(at..self.held, at + 1);
        self.slots.copy_within(at..self.held, at + 1);
        self.keys[at] = base.as_u64();
        self.slots[at] = slot;
        self.held += 1;
        self.chunks_taken += 1;
        self.link(slot);
        slot
    }

    /// Forgets a wholly free chunk (the caller gives it back to the buddy).
    fn remove_chunk(&mut self, slot: u16) {
        if self.idle == slot {
            self.idle = NIL;
        }
        self.unlink(slot);
        let base = self.chunks[usize::from(slot)].base;
        if let Ok(at) = self.keys[..self.held].binary_search(&base) {
            self.keys.copy_within(at + 1..self.held, at);
            self.slots.copy_within(at + 1..self.held, at);
            self.held -= 1;
        }
        self.chunks[usize::from(slot)] = Chunk::spare(self.spare);
        self.spare = slot;
        self.chunks_returned += 1;
    }
}
