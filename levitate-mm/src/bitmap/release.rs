//! Freeing a run: check everything first (a refused free changes nothing), then clear it,
//! raise the chunk's bound to the free run it merged into, and give the chunk back to the
//! buddy when it is wholly free, unless it is the first to be: that one stays, idle.

use super::bits;
use super::chunk::NIL;
use super::{FrameError, SmallRuns, CHUNK_FRAMES};
use crate::addr::PhysAddr;
use crate::buddy::{Buddy, FrameMemory, Owner, MAX_ORDER, POISON};

impl<const N: usize> SmallRuns<N> {
    /// Frees the run of `frames` frames at `addr` and returns its owner. Anything but the
    /// exact start and length of a run in one of the chunks is refused with the reason (and
    /// counted in [`super::BitmapStats::misuse`]); the layer is then unchanged. O(log N) to find
    /// the chunk, O(words) to check and clear the run.
    pub fn free<M: FrameMemory + ?Sized>(
        &mut self,
        addr: PhysAddr,
        frames: u64,
        buddy: &mut Buddy<'_>,
        mem: &mut M,
    ) -> Result<Owner, FrameError> {
        let freed = self.free_unrecorded(addr, frames, buddy, mem);
        if let Err(e) = &freed {
            self.record(e);
        }
        freed
    }

    /// Gives the idle chunk (the one wholly free chunk kept, if any) back to the buddy and
    /// returns the frames released: 0 or [`CHUNK_FRAMES`]. The front calls it before it
    /// reports `OutOfMemory`, and the kernel when it reclaims.
    pub fn release_idle<M: FrameMemory + ?Sized>(
        &mut self,
        buddy: &mut Buddy<'_>,
        mem: &mut M,
    ) -> u64 {
        if self.idle == NIL {
            return 0;
        }
        // Frees of a chunk this layer holds: only corruption makes the buddy refuse it, and
        // then the chunk stays (validate reports the disagreement).
        match self.return_chunk(self.idle, buddy, mem) {
            Ok(()) => CHUNK_FRAMES,
            Err(_) => 0,
        }
    }

    /// Counts a refusal by its kind.
    pub(super) fn record(&mut self, e: &FrameError) {
        if let Some(kind) = e.misuse() {
            self.misuse.record(kind);
        }
    }

    /// [`Self::free`] without counting a refusal: the front hands an address no chunk holds
    /// to the buddy instead, so that is not misuse here.
    pub(super) fn free_unrecorded<M: FrameMemory + ?Sized>(
        &mut self,
        addr: PhysAddr,
        frames: u64,
        buddy: &mut Buddy<'_>,
        mem: &mut M,
    ) -> Result<Owner, FrameError> {
        let (slot, start) = self.check_free(addr, frames)?;
        self.sync_poisoning(buddy, mem);
        let chunk = &self.chunks[usize::from(slot)];
        let owner = chunk.owner_at(start);
        if self.returns_chunk(slot, frames) {
            // The buddy poisons the whole chunk when poisoning is on.
            self.return_chunk(slot, buddy, mem)
                .map_err(FrameError::Free)?;
            self.count_freed(owner, frames);
        } else {
            self.give_back_run(slot, start, addr, frames, mem);
        }
        Ok(owner)
    }

    /// `Self::free_unrecorded`'s common case without the buddy: a run whose free passes every
    /// check and leaves its chunk listed (or idle), with poisoning off here and in `poisoning`
    /// (as [`Self::alloc_listed`]). `None` when the buddy is needed or the free is refused:
    /// the full path then frees it, or names and counts the misuse.
    #[inline]
    pub fn free_listed(&mut self, addr: PhysAddr, frames: u64, poisoning: bool) -> Option<Owner> {
        if poisoning || self.poisoned {
            return None;
        }
        let (slot, start) = self.check_free(addr, frames).ok()?;
        if self.returns_chunk(slot, frames) {
            return None;
        }
        let owner = self.chunks[usize::from(slot)].owner_at(start);
        self.give_back_run(slot, start, addr, frames, &mut NoFill);
        Some(owner)
    }

    /// Whether freeing `frames` in `slot` empties a chunk that must go back to the buddy (the
    /// first chunk to empty stays, idle; another one goes back at once).
    fn returns_chunk(&self, slot: u16, frames: u64) -> bool {
        let empties = u32::from(self.chunks[usize::from(slot)].free) + frames as u32 == bits::BITS;
        empties && self.idle != NIL && self.idle != slot
    }

    /// Gives a checked run back to its chunk (which stays): maps, bound, list, poison, idle
    /// mark, counters.
    fn give_back_run<M: FrameMemory + ?Sized>(
        &mut self,
        slot: u16,
        start: u32,
        addr: PhysAddr,
        frames: u64,
        mem: &mut M,
    ) {
        let n = frames as u32;
        let chunk = &mut self.chunks[usize::from(slot)];
        let owner = chunk.owner_at(start);
        let empties = u32::from(chunk.free) + n == bits::BITS;
        let was_full = chunk.free == 0;
        let merged = chunk.give_back(start, n);
        let free = u32::from(chunk.free);
        // Both are upper bounds on the longest free run: the only run that grew is the
        // merged one, and no run is longer than the chunk's free frames.
        let bound = u32::from(chunk.bound).max(merged).min(free);
        if was_full {
            chunk.bound = bound as u16;
            self.link(slot);
        } else {
            self.rebound(slot, bound);
        }
        if self.poisoned {
            mem.fill(addr.pfn(), frames, POISON);
        }
        if empties {
            self.idle = slot;
        }
        self.count_freed(owner, frames);
    }

    fn count_freed(&mut self, owner: Owner, frames: u64) {
        self.in_use = self.in_use.saturating_sub(frames);
        let held = &mut self.allocated[owner as usize];
        *held = held.saturating_sub(frames);
    }

    /// Everything a free must pass, in the order that names the bug best: the length, the
    /// chunk, the alignment, then the run. Returns the chunk's slot and the run's first frame
    /// in it.
    fn check_free(&self, addr: PhysAddr, frames: u64) -> Result<(u16, u32), FrameError> {
        if frames == 0 || frames > 1 << MAX_ORDER {
            return Err(FrameError::BadLength { frames });
        }
        let Some((slot, start)) = self.locate(addr.pfn()) else {
            return Err(FrameError::NotInChunk { addr, frames });
        };
        if addr.page_offset() != 0 {
            return Err(FrameError::Misaligned { addr, frames });
        }
        let chunk = &self.chunks[usize::from(slot)];
        if !bits::get(&chunk.starts, start) {
            let now = chunk.holder(start);
            return Err(if bits::get(&chunk.ever, start) {
                FrameError::DoubleFree { addr, frames, now }
            } else {
                FrameError::NeverAllocated { addr, frames, now }
            });
        }
        let actual = u64::from(chunk.run_end(start) - start);
        if actual != frames {
            return Err(FrameError::WrongLength {
                addr,
                frames,
                actual,
                owner: chunk.owner_at(start),
            });
        }
        Ok((slot, start))
    }
}

/// Memory for the buddy-free path, which runs only with poisoning off: nothing to fill.
struct NoFill;

impl FrameMemory for NoFill {
    fn fill(&mut self, _first: crate::addr::Pfn, _frames: u64, _byte: u8) {}
    fn find_not(&self, _first: crate::addr::Pfn, _frames: u64, _byte: u8) -> Option<PhysAddr> {
        None
    }
}
