//! The front: one call for any number of frames, sent to the layer that serves it best. Runs
//! shorter than a chunk come from the bitmap layer at their exact length; longer ones from
//! the buddy, rounded up to a power of two there only.

use super::allocate::order_for;
use super::{FrameError, RunMisuse, SmallRuns, CHUNK_FRAMES};
use crate::addr::{Pfn, PhysAddr, PAGE_SIZE};
use crate::buddy::{Buddy, FrameMemory, Owner, Request, MAX_ORDER};

/// Frames handed out by [`alloc_frames`]: `frames` contiguous frames from `addr`. Not
/// `Clone`: one run, one owner, one free ([`free_run`]).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a run that is dropped is never freed"]
pub struct Run {
    /// Its first byte.
    pub addr: PhysAddr,
    /// Its length in frames, as asked for (the length to free it with).
    pub frames: u64,
}

impl Run {
    /// Its first frame.
    pub const fn pfn(&self) -> Pfn {
        self.addr.pfn()
    }

    /// Size in bytes.
    pub const fn bytes(&self) -> u64 {
        self.frames * PAGE_SIZE
    }
}

/// Allocates `frames` contiguous frames for `owner`, zeroed if asked. Below [`CHUNK_FRAMES`]
/// they come from `runs` and cost exactly `frames`; when the layer cannot take another chunk
/// (every slot in use, or the buddy has no free 2 MiB block) the buddy serves them rounded up
/// to a power of two, and [`super::BitmapStats::fallbacks`] counts it. From [`CHUNK_FRAMES`]
/// up the buddy serves them rounded up. A use after free found by poisoning is reported, not
/// worked around. `owner` is not [`Owner::Bitmap`]: that names the layer's chunks in the
/// buddy, and [`SmallRuns::validate`] counts every buddy frame of it as a chunk's.
pub fn alloc_frames<const N: usize, M: FrameMemory + ?Sized>(
    runs: &mut SmallRuns<N>,
    buddy: &mut Buddy<'_>,
    frames: u64,
    owner: Owner,
    zero: bool,
    mem: &mut M,
) -> Result<Run, FrameError> {
    if frames == 0 || frames > 1 << MAX_ORDER {
        runs.misuse.record(RunMisuse::BadLength);
        return Err(FrameError::BadLength { frames });
    }
    if frames < CHUNK_FRAMES {
        match runs.alloc(frames, owner, zero, buddy, mem) {
            Ok(addr) => return Ok(Run { addr, frames }),
            Err(FrameError::ChunksFull { .. } | FrameError::NoFreeChunk { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut request = Request::new(order_for(frames), owner);
    request.zero = zero;
    match buddy.alloc(request, mem) {
        Ok(block) => {
            if frames < CHUNK_FRAMES {
                runs.fallbacks += 1;
            }
            Ok(Run {
                addr: block.addr,
                frames,
            })
        }
        Err(e) => {
            if frames < CHUNK_FRAMES {
                runs.failures += 1;
            }
            Err(FrameError::Alloc(e))
        }
    }
}

/// Frees `frames` frames at `addr` as [`alloc_frames`] gave them, and returns their owner.
/// An address in one of the chunks is the bitmap layer's to check, whatever the length (a
/// small run freed with a large length is [`FrameError::WrongLength`]); any other address goes
/// to the buddy as a block of the rounded-up order, which refuses it unless it is exactly
/// such a block ([`FrameError::Free`]). So a small run freed again after its chunk went back
/// to the buddy is refused by the buddy, in its words.
pub fn free_frames<const N: usize, M: FrameMemory + ?Sized>(
    runs: &mut SmallRuns<N>,
    buddy: &mut Buddy<'_>,
    addr: PhysAddr,
    frames: u64,
    mem: &mut M,
) -> Result<Owner, FrameError> {
    if frames == 0 || frames > 1 << MAX_ORDER {
        runs.misuse.record(RunMisuse::BadLength);
        return Err(FrameError::BadLength { frames });
    }
    match runs.free_unrecorded(addr, frames, buddy, mem) {
        Err(FrameError::NotInChunk { .. }) => buddy
            .free(addr, order_for(frames), mem)
            .map_err(FrameError::Free),
        Err(e) => {
            runs.record(&e);
            Err(e)
        }
        Ok(owner) => Ok(owner),
    }
}

/// [`free_frames`] for a [`Run`] from [`alloc_frames`], consuming it.
pub fn free_run<const N: usize, M: FrameMemory + ?Sized>(
    runs: &mut SmallRuns<N>,
    buddy: &mut Buddy<'_>,
    run: Run,
    mem: &mut M,
) -> Result<Owner, FrameError> {
    free_frames(runs, buddy, run.addr, run.frames, mem)
}
