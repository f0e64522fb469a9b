//! The invariant checker. O(N + chunks x 512): property tests run it after every operation and
//! the kernel's `memcheck` on demand, next to `Buddy::validate`.
//!
//! Together the checks mean: every chunk held is a 2 MiB block the buddy has allocated to
//! owner `bitmap`, found by its base and by nothing else; inside a chunk, every used frame is
//! in exactly one run (runs start at `starts` bits and every used stretch begins with one),
//! the free count, hint and bound are true; every chunk with free frames is on exactly the
//! list of its bound and no other chunk is; the totals, per owner and in all, are the sums of
//! the run lengths, and the buddy's `bitmap` total is the chunks held (so nothing else may
//! allocate from the buddy for owner `bitmap`).

use super::bits::{self, BITS, WORDS};
use super::chunk::NIL;
use super::{SmallRuns, CHUNK_FRAMES, CHUNK_ORDER};
use crate::addr::{Pfn, PhysAddr};
use crate::buddy::{Buddy, Owner};
use core::fmt;

/// A broken invariant, with where it is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitmapViolation {
    /// The table of chunk bases or the slot bookkeeping is inconsistent.
    Index {
        /// What is wrong.
        why: &'static str,
    },
    /// The buddy does not hold this chunk as an allocated order-9 block of owner `bitmap`.
    NotHeld {
        /// The chunk's first byte.
        chunk: PhysAddr,
    },
    /// A chunk's maps, counts or hints are inconsistent.
    BadChunk {
        /// The chunk's first byte.
        chunk: PhysAddr,
        /// What is wrong.
        why: &'static str,
    },
    /// The list of chunks whose free-run bound is `bound` is broken.
    BadList {
        /// The list's bound.
        bound: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A counter disagrees with the chunks.
    Counter {
        /// Which counter.
        what: &'static str,
        /// What the chunks hold.
        counted: u64,
        /// The counter.
        recorded: u64,
    },
    /// An owner's frame total disagrees with its runs.
    OwnerFrames {
        /// The owner.
        owner: Owner,
        /// Frames in runs whose start names it.
        counted: u64,
        /// Its counter.
        recorded: u64,
    },
}

impl fmt::Display for BitmapViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Index { why } => write!(f, "bitmap: chunk table: {why}"),
            Self::NotHeld { chunk } => write!(
                f,
                "bitmap: chunk {chunk} is not an allocated order-{CHUNK_ORDER} block of owner \
                 bitmap in the buddy"
            ),
            Self::BadChunk { chunk, why } => write!(f, "bitmap: chunk {chunk}: {why}"),
            Self::BadList { bound, why } => {
                write!(f, "bitmap: list of chunks with bound {bound}: {why}")
            }
            Self::Counter {
                what,
                counted,
                recorded,
            } => write!(f, "bitmap: {what}: {counted} counted, {recorded} recorded"),
            Self::OwnerFrames {
                owner,
                counted,
                recorded,
            } => write!(
                f,
                "bitmap: {counted} frames in runs of {owner}, counter says {recorded}"
            ),
        }
    }
}

impl<const N: usize> SmallRuns<N> {
    /// Checks every invariant (see the module docs), against `buddy` for the chunks.
    pub fn validate(&self, buddy: &Buddy<'_>) -> Result<(), BitmapViolation> {
        self.validate_slots()?;
        let mut owned = [0u64; Owner::COUNT];
        let mut with_free = 0;
        for slot in self.held_slots() {
            let counted = self.validate_chunk(slot, buddy)?;
            for (sum, n) in owned.iter_mut().zip(counted) {
                *sum += n;
            }
            with_free += u64::from(self.chunks[usize::from(slot)].free > 0);
        }
        let listed = self.validate_lists()?;
        let counters = [
            ("chunks with free frames on the lists", with_free, listed),
            ("frames in runs", owned.iter().sum(), self.in_use),
            (
                "frames the buddy holds for owner bitmap",
                self.held as u64 * CHUNK_FRAMES,
                buddy.stats().allocated_to(Owner::Bitmap),
            ),
        ];
        for (what, counted, recorded) in counters {
            if counted != recorded {
                return Err(BitmapViolation::Counter {
                    what,
                    counted,
                    recorded,
                });
            }
        }
        for owner in Owner::ALL {
            let (counted, recorded) = (owned[owner as usize], self.allocated[owner as usize]);
            if counted != recorded {
                return Err(BitmapViolation::OwnerFrames {
                    owner,
                    counted,
                    recorded,
                });
            }
        }
        Ok(())
    }

    /// The sorted bases, the slots they name, the spare stack and the never-used slots.
    fn validate_slots(&self) -> Result<(), BitmapViolation> {
        let bad = |why| Err(BitmapViolation::Index { why });
        let fresh = usize::from(self.fresh);
        if self.held > fresh || fresh > N {
            return bad("more chunks held than slots used");
        }
        for i in 0..self.held {
            let (key, slot) = (self.keys[i], usize::from(self.slots[i]));
            if key % CHUNK_FRAMES != 0 {
                return bad("a chunk base is not 2 MiB aligned");
            }
            if i > 0 && self.keys[i - 1] >= key {
                return bad("chunk bases are not sorted and distinct");
            }
            // Distinct bases, each matching its slot's, make the held slots distinct too.
            if slot >= fresh || self.chunks[slot].base != key {
                return bad("a base names a slot that does not hold it");
            }
        }
        let (mut spare, mut slot) = (0, self.spare);
        while slot != NIL {
            spare += 1;
            // A walk longer than the slots used is a cycle.
            if usize::from(slot) >= fresh || spare > fresh {
                return bad("the spare slot stack is broken");
            }
            if self.chunks[usize::from(slot)].base != u64::MAX {
                return bad("a spare slot holds a chunk");
            }
            slot = self.chunks[usize::from(slot)].next;
        }
        if self.held + spare != fresh {
            return bad("a slot is neither held nor spare");
        }
        if self.chunks[fresh..].iter().any(|c| c.base != u64::MAX) {
            return bad("a never-used slot holds a chunk");
        }
        Ok(())
    }

    /// One chunk; returns its frames in runs per owner.
    fn validate_chunk(
        &self,
        slot: u16,
        buddy: &Buddy<'_>,
    ) -> Result<[u64; Owner::COUNT], BitmapViolation> {
        let c = &self.chunks[usize::from(slot)];
        let chunk = Pfn::new(c.base).addr();
        let bad = |why| Err(BitmapViolation::BadChunk { chunk, why });
        if buddy.owner_of(chunk) != Some((Owner::Bitmap, CHUNK_ORDER, chunk)) {
            return Err(BitmapViolation::NotHeld { chunk });
        }
        for w in 0..WORDS {
            let (used, starts) = (c.used[w], c.starts[w]);
            if starts & !used != 0 {
                return bad("a run starts at a free frame");
            }
            if starts & !c.ever[w] != 0 {
                return bad("a run start is not marked as ever started");
            }
            // A used frame after a free one (or at frame 0) must start a run.
            let previous_used = (used << 1) | if w > 0 { c.used[w - 1] >> 63 } else { 0 };
            if used & !previous_used & !starts != 0 {
                return bad("used frames without a run start");
            }
        }
        let free = BITS - bits::count(&c.used);
        if u32::from(c.free) != free {
            return bad("the free count disagrees with the map");
        }
        if free == BITS && self.idle != slot {
            return bad("wholly free but not given back to the buddy (and not the idle chunk)");
        }
        if free != BITS && self.idle == slot {
            return bad("the idle chunk is not wholly free");
        }
        if u32::from(c.hint) > BITS || !bits::all_set(&c.used, 0, u32::from(c.hint)) {
            return bad("a free frame below the hint");
        }
        let bound = u32::from(c.bound);
        if free > 0 && (bound == 0 || bound > BITS || bits::longest_free(&c.used) > bound) {
            return bad("the free-run bound is below the longest free run");
        }
        let mut owned = [0u64; Owner::COUNT];
        let mut start = bits::next_set(0, |w| c.starts[w]);
        while start < BITS {
            let Some(owner) = Owner::from_u8(c.raw_owner_at(start)) else {
                return bad("a run with an unknown owner");
            };
            owned[owner as usize] += u64::from(c.run_end(start) - start);
            start = bits::next_set(start + 1, |w| c.starts[w]);
        }
        Ok(owned)
    }

    /// Every list: links, keys, membership, the non-empty mask. Returns the chunks listed.
    fn validate_lists(&self) -> Result<u64, BitmapViolation> {
        let mut listed = 0;
        for list in 0..BITS {
            let bound = list + 1;
            let bad = |why| Err(BitmapViolation::BadList { bound, why });
            let (mut slot, mut prev) = (self.heads[list as usize], NIL);
            if bits::get(&self.listed, list) != (slot != NIL) {
                return bad("the non-empty mask disagrees with the list");
            }
            while slot != NIL {
                let Some(c) = self.chunks.get(usize::from(slot)) else {
                    return bad("a link outside the table");
                };
                if c.base == u64::MAX {
                    return bad("an unused slot on the list");
                }
                if c.prev != prev {
                    return bad("a back link does not match");
                }
                if u32::from(c.bound) != bound {
                    return bad("a chunk with another bound");
                }
                if c.free == 0 {
                    return bad("a full chunk");
                }
                listed += 1;
                if listed > self.held as u64 {
                    return bad("more entries than chunks (a cycle)");
                }
                prev = slot;
                slot = c.next;
            }
        }
        Ok(listed)
    }
}
