//! Allocating a run: find a listed chunk that has it (lowest bound first), or take a fresh
//! chunk from the buddy; check the poison, mark the run, zero it if asked.

use super::bits::{self, BITS};
use super::{FrameError, RunMisuse, SmallRuns, CHUNK_FRAMES, CHUNK_ORDER};
use crate::addr::{PhysAddr, PAGE_SHIFT};
use crate::buddy::{Buddy, FrameMemory, FreeError, Owner, Request, POISON};

/// Where a run was found: the chunk's slot, the run's first frame in it, and the first free
/// frame the search saw (for the chunk's hint).
struct Spot {
    slot: u16,
    start: u32,
    first_free: u32,
}

impl<const N: usize> SmallRuns<N> {
    /// Allocates a run of `frames` (1 to 511) contiguous frames for `owner`, zeroed if asked,
    /// from a chunk: exactly `frames` frames are used. Takes a chunk from the buddy when no
    /// chunk has the run; when every slot is in use that fails with
    /// [`FrameError::ChunksFull`], when the buddy has no free 2 MiB block with
    /// [`FrameError::NoFreeChunk`] (the front then asks the buddy). `mem` is touched only to
    /// zero the run or, with the buddy's poisoning on, to check it. On `Err` the layer's runs
    /// are as they were.
    pub fn alloc<M: FrameMemory + ?Sized>(
        &mut self,
        frames: u64,
        owner: Owner,
        zero: bool,
        buddy: &mut Buddy<'_>,
        mem: &mut M,
    ) -> Result<PhysAddr, FrameError> {
        if frames == 0 || frames >= CHUNK_FRAMES {
            self.misuse.record(RunMisuse::BadLength);
            return Err(FrameError::BadLength { frames });
        }
        let n = frames as u32;
        self.sync_poisoning(buddy, mem);
        let spot = match self.find_spot(n) {
            Some(spot) => spot,
            None => self.take_chunk(frames, buddy, mem)?,
        };
        let slot = usize::from(spot.slot);
        let first = self.chunks[slot].pfn(spot.start);
        if self.poisoned {
            if let Some(addr) = mem.find_not(first, frames, POISON) {
                // Poisoned again and left free: the layer is as before and a retry succeeds.
                mem.fill(first, frames, POISON);
                self.use_after_free += 1;
                if u32::from(self.chunks[slot].free) == BITS {
                    // A fresh chunk: the buddy checked its poison a moment ago, so only a
                    // concurrent writer gets here. Keep nothing wholly free.
                    let _ = self.return_chunk(spot.slot, buddy, mem);
                }
                return Err(FrameError::UseAfterFree {
                    addr,
                    run: first.addr(),
                    frames,
                });
            }
        }
        Ok(self.take_spot(spot, frames, owner, zero, mem))
    }

    /// [`Self::alloc`]'s common case without the buddy: a run from a chunk already listed,
    /// with poisoning off both in this layer and in `poisoning` (the caller's lock-free view of
    /// the buddy's switch, `FrameStates::poisoning`). `None` when the buddy is needed: a bad
    /// length (the full path names it), no listed chunk with the run (a chunk must be taken),
    /// or poisoning (the switch is synchronised and runs checked under the buddy's lock).
    /// A switch turned on a moment ago and not yet seen is harmless: the layer's free runs are
    /// filled when the next locked call synchronises it.
    #[inline]
    pub fn alloc_listed<M: FrameMemory + ?Sized>(
        &mut self,
        frames: u64,
        owner: Owner,
        zero: bool,
        poisoning: bool,
        mem: &mut M,
    ) -> Option<PhysAddr> {
        if poisoning || self.poisoned || frames == 0 || frames >= CHUNK_FRAMES {
            return None;
        }
        let spot = self.find_spot(frames as u32)?;
        Some(self.take_spot(spot, frames, owner, zero, mem))
    }

    /// Marks the run at `spot` taken for `owner` (zeroed if asked): the end of both allocation
    /// paths, after any poison check.
    fn take_spot<M: FrameMemory + ?Sized>(
        &mut self,
        spot: Spot,
        frames: u64,
        owner: Owner,
        zero: bool,
        mem: &mut M,
    ) -> PhysAddr {
        let slot = usize::from(spot.slot);
        let first = self.chunks[slot].pfn(spot.start);
        let chunk = &mut self.chunks[slot];
        chunk.take(spot.start, frames as u32, owner, spot.first_free);
        if self.idle == spot.slot {
            self.idle = super::chunk::NIL;
        }
        if chunk.free == 0 {
            self.unlink(spot.slot);
        }
        self.in_use += frames;
        self.allocated[owner as usize] += frames;
        if zero {
            mem.fill(first, frames, 0);
        }
        first.addr()
    }

    /// A listed chunk with a free run of `n`: the head of the lowest list whose bound is at
    /// least `n`. A chunk that turns out not to have one gets the bound it has shown (below
    /// `n`, and never above its free frames) and moves down; the loop ends because every
    /// failure takes a chunk out of the lists it looks at.
    fn find_spot(&mut self, n: u32) -> Option<Spot> {
        loop {
            let slot = self.first_listed(n)?;
            let chunk = &mut self.chunks[usize::from(slot)];
            let free = u32::from(chunk.free);
            if free >= n {
                let search = bits::find_run(&chunk.used, n, u32::from(chunk.hint));
                if let Some(start) = search.found {
                    return Some(Spot {
                        slot,
                        start,
                        first_free: search.first_free,
                    });
                }
                // Every frame below the hint is used, so the first free frame seen is the
                // chunk's first free frame.
                chunk.hint = search.first_free as u16;
            }
            self.rebound(slot, (n - 1).min(free));
        }
    }

    /// Takes a 2 MiB block from the buddy as a new chunk; the run is at its start.
    fn take_chunk<M: FrameMemory + ?Sized>(
        &mut self,
        frames: u64,
        buddy: &mut Buddy<'_>,
        mem: &mut M,
    ) -> Result<Spot, FrameError> {
        if self.held == N {
            return Err(FrameError::ChunksFull { frames });
        }
        // Asking anyway would fail and count as an allocation failure in the buddy's figures,
        // on every small request while memory is fragmented.
        if buddy.stats().largest_free_order() < Some(CHUNK_ORDER) {
            return Err(FrameError::NoFreeChunk { frames });
        }
        let block = buddy
            .alloc(Request::new(CHUNK_ORDER, Owner::Bitmap), mem)
            .map_err(FrameError::Alloc)?;
        debug_assert_eq!(block.order, CHUNK_ORDER);
        let slot = self.add_chunk(block.pfn());
        Ok(Spot {
            slot,
            start: 0,
            first_free: 0,
        })
    }

    /// Gives a wholly free chunk back to the buddy, then forgets it. The buddy allocated it to
    /// us whole (`validate` checks that it still says so), so a refusal means the buddy is
    /// corrupt: the chunk is then kept, and the layer is unchanged.
    pub(super) fn return_chunk<M: FrameMemory + ?Sized>(
        &mut self,
        slot: u16,
        buddy: &mut Buddy<'_>,
        mem: &mut M,
    ) -> Result<(), FreeError> {
        let base = self.chunks[usize::from(slot)].pfn(0).addr();
        buddy.free(base, CHUNK_ORDER, mem)?;
        self.remove_chunk(slot);
        Ok(())
    }
}

/// The buddy order that holds `frames` frames (1 to 2^18): the power of two at or above.
pub(super) const fn order_for(frames: u64) -> u8 {
    if frames <= 1 {
        0
    } else {
        (64 - (frames - 1).leading_zeros()) as u8
    }
}

const _: () = assert!(CHUNK_FRAMES == 1 << CHUNK_ORDER && CHUNK_ORDER as u32 + PAGE_SHIFT == 21);
