//! What the bitmap layer and the front refuse, and why, in one line each. A refused call
//! leaves both layers as they were; only the statistics count it.

use crate::addr::PhysAddr;
use crate::buddy::{AllocError, FreeError, Owner, MAX_ORDER};
use core::fmt;

/// A kind of misuse the bitmap layer refuses, for the per-kind counters. Frees the front
/// hands to the buddy are counted by the buddy, in its own kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum RunMisuse {
    /// A length of 0, or above what the buddy can serve (allocation or free).
    BadLength = 0,
    /// Freeing an address that no chunk of the layer holds.
    NotInChunk = 1,
    /// Freeing an address that is not the start of a frame.
    Misaligned = 2,
    /// Freeing a run with another length than it was allocated with.
    WrongLength = 3,
    /// Freeing an address that started a run which has been freed since.
    DoubleFree = 4,
    /// Freeing an address that has not started a run since its chunk was taken.
    NeverAllocated = 5,
}

impl RunMisuse {
    /// Number of kinds.
    pub const COUNT: usize = 6;
    /// Every kind, in `repr` order.
    pub const ALL: [RunMisuse; RunMisuse::COUNT] = [
        RunMisuse::BadLength,
        RunMisuse::NotInChunk,
        RunMisuse::Misaligned,
        RunMisuse::WrongLength,
        RunMisuse::DoubleFree,
        RunMisuse::NeverAllocated,
    ];

    /// The short name the shell and logs print.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunMisuse::BadLength => "bad-length",
            RunMisuse::NotInChunk => "not-in-chunk",
            RunMisuse::Misaligned => "misaligned",
            RunMisuse::WrongLength => "wrong-length",
            RunMisuse::DoubleFree => "double-free",
            RunMisuse::NeverAllocated => "never-allocated",
        }
    }
}

impl fmt::Display for RunMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What holds a frame inside a chunk right now, as a refused free reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunHolder {
    /// The frame is free.
    Free,
    /// The frame lies inside this allocated run (but does not start it).
    Run {
        /// The run's first byte.
        addr: PhysAddr,
        /// Its length in frames.
        frames: u64,
        /// Its owner.
        owner: Owner,
    },
}

/// Why an allocation or free of frames failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A length of 0, or above 2^[`MAX_ORDER`] frames (or, for [`super::SmallRuns::alloc`], 512
    /// or more: those are the buddy's).
    BadLength {
        /// The length given.
        frames: u64,
    },
    /// [`super::SmallRuns::alloc`] only: every chunk slot is in use and no chunk has the run.
    /// The front serves the request from the buddy instead.
    ChunksFull {
        /// The length asked for.
        frames: u64,
    },
    /// [`super::SmallRuns::alloc`] only: no chunk has the run and the buddy has no free 2 MiB
    /// block for a new one. The front serves the request from the buddy instead.
    NoFreeChunk {
        /// The length asked for.
        frames: u64,
    },
    /// The buddy refused an allocation: out of memory (for a chunk, a fallback or a large
    /// request), or it found a use after free in a block it was about to hand out.
    Alloc(AllocError),
    /// The buddy refused a free the front handed to it (a large run, or a small one that no
    /// chunk holds).
    Free(FreeError),
    /// Poisoning found a byte written while its frame was free in a chunk. The run was filled
    /// with the poison again and stays free, so a retry succeeds.
    UseAfterFree {
        /// The first byte that does not hold the poison.
        addr: PhysAddr,
        /// The run the allocation would have returned.
        run: PhysAddr,
        /// Its length in frames.
        frames: u64,
    },
    /// [`super::SmallRuns::free`] only: no chunk holds the address.
    NotInChunk {
        /// The address given.
        addr: PhysAddr,
        /// The length given.
        frames: u64,
    },
    /// The address is inside a chunk but not at the start of a frame.
    Misaligned {
        /// The address given.
        addr: PhysAddr,
        /// The length given.
        frames: u64,
    },
    /// The address starts a run of another length.
    WrongLength {
        /// The address given.
        addr: PhysAddr,
        /// The length given.
        frames: u64,
        /// The run's length.
        actual: u64,
        /// The run's owner.
        owner: Owner,
    },
    /// The address started a run that has been freed since; `now` holds the frame.
    DoubleFree {
        /// The address given.
        addr: PhysAddr,
        /// The length given.
        frames: u64,
        /// What holds the frame now.
        now: RunHolder,
    },
    /// The address has not started a run since its chunk was taken; `now` holds the frame.
    NeverAllocated {
        /// The address given.
        addr: PhysAddr,
        /// The length given.
        frames: u64,
        /// What holds the frame now.
        now: RunHolder,
    },
}

impl FrameError {
    /// The kind of misuse, for refusals the bitmap layer counts; `None` for failures (out of
    /// memory, use after free) and for the buddy's refusals (the buddy counts those).
    pub const fn misuse(&self) -> Option<RunMisuse> {
        match self {
            Self::BadLength { .. } => Some(RunMisuse::BadLength),
            Self::NotInChunk { .. } => Some(RunMisuse::NotInChunk),
            Self::Misaligned { .. } => Some(RunMisuse::Misaligned),
            Self::WrongLength { .. } => Some(RunMisuse::WrongLength),
            Self::DoubleFree { .. } => Some(RunMisuse::DoubleFree),
            Self::NeverAllocated { .. } => Some(RunMisuse::NeverAllocated),
            Self::ChunksFull { .. }
            | Self::NoFreeChunk { .. }
            | Self::Alloc(_)
            | Self::Free(_)
            | Self::UseAfterFree { .. } => None,
        }
    }
}

/// "1 frame", "3 frames".
struct Frames(u64);

impl fmt::Display for Frames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("1 frame"),
            n => write!(f, "{n} frames"),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadLength { frames } => write!(
                f,
                "bad run length: {frames} frames (1 to {} allowed)",
                1u64 << MAX_ORDER
            ),
            Self::ChunksFull { frames } => write!(
                f,
                "bitmap layer: every chunk slot is in use and no chunk has {} free in a row",
                Frames(frames)
            ),
            Self::NoFreeChunk { frames } => write!(
                f,
                "bitmap layer: no chunk has {} free in a row and the buddy has no free 2 MiB \
                 block",
                Frames(frames)
            ),
            Self::Alloc(e) => e.fmt(f),
            Self::Free(e) => e.fmt(f),
            Self::UseAfterFree { addr, run, frames } => write!(
                f,
                "use after free: {addr} was written while free (run of {} at {run} in a \
                 bitmap chunk); poisoned again and kept free",
                Frames(frames)
            ),
            Self::NotInChunk { addr, frames } => write!(
                f,
                "free of {addr} ({}): no chunk of the bitmap layer holds it",
                Frames(frames)
            ),
            Self::Misaligned { addr, frames } => write!(
                f,
                "free of {addr} ({}): not the start of a frame",
                Frames(frames)
            ),
            Self::WrongLength {
                addr,
                frames,
                actual,
                owner,
            } => write!(
                f,
                "free of {addr} ({}): the run was allocated with {} (owner {owner})",
                Frames(frames),
                Frames(actual)
            ),
            Self::DoubleFree { addr, frames, now } => {
                write!(f, "double free of {addr} ({}): ", Frames(frames))?;
                match now {
                    RunHolder::Free => f.write_str("the frame is already free"),
                    RunHolder::Run {
                        addr: run,
                        frames: n,
                        owner,
                    } => write!(
                        f,
                        "freed before, now inside the run of {} at {run} allocated to {owner}",
                        Frames(n)
                    ),
                }
            }
            Self::NeverAllocated { addr, frames, now } => {
                write!(f, "free of {addr} ({}): never allocated; ", Frames(frames))?;
                match now {
                    RunHolder::Free => f.write_str("the frame is free"),
                    RunHolder::Run {
                        addr: run,
                        frames: n,
                        owner,
                    } => write!(
                        f,
                        "it is inside the run of {} at {run} allocated to {owner}",
                        Frames(n)
                    ),
                }
            }
        }
    }
}
