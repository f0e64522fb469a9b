//! What the allocator refuses, and why, in one line each. Every refusal leaves the
//! allocator's free lists and pages exactly as they were; only the statistics count it.

use super::{Owner, MAX_ORDER};
use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::report::Size;
use core::fmt;

/// Why [`super::Buddy::new`] cannot build an allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuddyError {
    /// The layout describes no frame.
    NoFrames,
    /// The `Page` array is shorter than the layout.
    MemMapTooSmall {
        /// Entries the layout needs.
        needed: u64,
        /// Entries given.
        got: u64,
    },
    /// More separate RAM ranges than the allocator keeps.
    TooManyRamRanges {
        /// How many it keeps.
        capacity: usize,
    },
    /// A usable section lies outside the RAM given: the layout and RAM ranges disagree.
    SectionOutsideRam {
        /// The section's first byte.
        base: PhysAddr,
        /// Its length in bytes.
        size: u64,
    },
}

impl fmt::Display for BuddyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFrames => f.write_str("buddy: the mem_map layout has no usable frame"),
            Self::MemMapTooSmall { needed, got } => write!(
                f,
                "buddy: the mem_map has {got} entries but the layout needs {needed}"
            ),
            Self::TooManyRamRanges { capacity } => {
                write!(f, "buddy: more than {capacity} separate RAM ranges")
            }
            Self::SectionOutsideRam { base, size } => write!(
                f,
                "buddy: usable frames at {base} ({}) lie outside RAM",
                Size(*size)
            ),
        }
    }
}

/// A kind of misuse, for the per-kind counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Misuse {
    /// An order above [`MAX_ORDER`] (allocation or free).
    BadOrder = 0,
    /// Freeing an address that is not RAM.
    OutsideRam = 1,
    /// Freeing RAM the allocator does not manage (reserved: kernel, DTB, firmware, mem_map).
    Reserved = 2,
    /// Freeing an address not aligned to the block size of its order.
    Misaligned = 3,
    /// Freeing an allocated block with another order than it was allocated with.
    WrongOrder = 4,
    /// Freeing an address that was allocated and has been freed since.
    DoubleFree = 5,
    /// Freeing an address that was never the start of an allocated block.
    NeverAllocated = 6,
}

impl Misuse {
    /// Number of kinds.
    pub const COUNT: usize = 7;
    /// Every kind, in `repr` order.
    pub const ALL: [Misuse; Misuse::COUNT] = [
        Misuse::BadOrder,
        Misuse::OutsideRam,
        Misuse::Reserved,
        Misuse::Misaligned,
        Misuse::WrongOrder,
        Misuse::DoubleFree,
        Misuse::NeverAllocated,
    ];

    /// The short name the shell and logs print.
    pub const fn as_str(self) -> &'static str {
        match self {
            Misuse::BadOrder => "bad-order",
            Misuse::OutsideRam => "outside-ram",
            Misuse::Reserved => "reserved",
            Misuse::Misaligned => "misaligned",
            Misuse::WrongOrder => "wrong-order",
            Misuse::DoubleFree => "double-free",
            Misuse::NeverAllocated => "never-allocated",
        }
    }
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The block that holds a frame right now, as a refused free reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The frame lies in (or heads) this free block.
    Free {
        /// The block's first frame.
        block: PhysAddr,
        /// Its order.
        order: u8,
    },
    /// The frame lies inside this allocated block (but does not start it).
    Allocated {
        /// The block's first frame.
        block: PhysAddr,
        /// Its order.
        order: u8,
        /// Its owner.
        owner: Owner,
    },
    /// No block covers the frame: the allocator's pages are corrupt (`validate` says where).
    Lost,
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The order is above [`MAX_ORDER`].
    BadOrder {
        /// The order asked for.
        order: u8,
    },
    /// No free block is large enough (below the limit, if one was given).
    OutOfMemory {
        /// The order asked for.
        order: u8,
        /// The limit asked for.
        below: Option<PhysAddr>,
        /// Frames free in all zones.
        free_frames: u64,
        /// The largest free block's order, in any zone.
        largest_free_order: Option<u8>,
    },
    /// Poisoning found a byte written while its frame was free. The block was filled with the
    /// poison again and put back, so the allocator is as it was before the call (a retry
    /// succeeds, and may hand out the same block).
    UseAfterFree {
        /// The first byte that does not hold the poison.
        addr: PhysAddr,
        /// The block the allocation would have returned.
        block: PhysAddr,
        /// Its order.
        order: u8,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadOrder { order } => write!(
                f,
                "bad allocation request: order {order} is above the maximum {MAX_ORDER}"
            ),
            Self::OutOfMemory {
                order,
                below,
                free_frames,
                largest_free_order,
            } => {
                write!(
                    f,
                    "out of memory: order {order} ({})",
                    Size(PAGE_SIZE << order)
                )?;
                if let Some(limit) = below {
                    write!(f, " below {limit}")?;
                }
                write!(f, " requested, {free_frames} frames free, ")?;
                match largest_free_order {
                    Some(o) => write!(f, "largest free block order {o}"),
                    None => f.write_str("no free block"),
                }
            }
            Self::UseAfterFree { addr, block, order } => write!(
                f,
                "use after free: {addr} was written while free (order {order} block at {block}); \
                 poisoned again and kept free"
            ),
        }
    }
}

/// Why a free was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The order is above [`MAX_ORDER`].
    BadOrder {
        /// The address given.
        addr: PhysAddr,
        /// The order given.
        order: u8,
    },
    /// The address is not RAM.
    OutsideRam {
        /// The address given.
        addr: PhysAddr,
        /// The order given.
        order: u8,
    },
    /// The address is RAM the allocator does not manage.
    Reserved {
        /// The address given.
        addr: PhysAddr,
        /// The order given.
        order: u8,
    },
    /// The address is not aligned to the block size of the order.
    Misaligned {
        /// The address given.
        addr: PhysAddr,
        /// The order given.
        order: u8,
    },
    /// The address starts an allocated block of another order.
    WrongOrder {
        /// The address given.
        addr: PhysAddr,
        /// The order given.
        order: u8,
        /// The order the block was allocated with.
        actual: u8,
        /// The block's owner.
        owner: Owner,
    },
    /// The address was allocated and has been freed since; `now` holds it.
    DoubleFree {
        /// The address given.
        addr: PhysAddr,
        /// The order given.
        order: u8,
        /// The block that holds the frame now.
        now: Holder,
    },
    /// The address has never started an allocated block; `now` holds it.
    NeverAllocated {
        /// The address given.
        addr: PhysAddr,
        /// The order given.
        order: u8,
        /// The block that holds the frame now.
        now: Holder,
    },
}

impl Holder {
    /// A copy made field by field (see [`FreeError::by_fields`]).
    #[inline(always)]
    const fn by_fields(self) -> Self {
        match self {
            Self::Free { block, order } => Self::Free { block, order },
            Self::Allocated {
                block,
                order,
                owner,
            } => Self::Allocated {
                block,
                order,
                owner,
            },
            Self::Lost => Self::Lost,
        }
    }
}

impl FreeError {
    /// A copy made field by field. [`super::Buddy::free`] returns its stored refusal this way:
    /// a plain copy is one block of bytes, which the compiler then moves through the caller's
    /// frames in overlapping pieces that stall store forwarding (on every call, refused or
    /// not); built from its fields, each field stays a register until the result is stored
    /// where the caller reads it.
    #[inline(always)]
    pub(super) const fn by_fields(&self) -> Self {
        match *self {
            Self::BadOrder { addr, order } => Self::BadOrder { addr, order },
            Self::OutsideRam { addr, order } => Self::OutsideRam { addr, order },
            Self::Reserved { addr, order } => Self::Reserved { addr, order },
            Self::Misaligned { addr, order } => Self::Misaligned { addr, order },
            Self::WrongOrder {
                addr,
                order,
                actual,
                owner,
            } => Self::WrongOrder {
                addr,
                order,
                actual,
                owner,
            },
            Self::DoubleFree { addr, order, now } => Self::DoubleFree {
                addr,
                order,
                now: now.by_fields(),
            },
            Self::NeverAllocated { addr, order, now } => Self::NeverAllocated {
                addr,
                order,
                now: now.by_fields(),
            },
        }
    }

    /// The kind, for the misuse counters.
    pub const fn kind(&self) -> Misuse {
        match self {
            Self::BadOrder { .. } => Misuse::BadOrder,
            Self::OutsideRam { .. } => Misuse::OutsideRam,
            Self::Reserved { .. } => Misuse::Reserved,
            Self::Misaligned { .. } => Misuse::Misaligned,
            Self::WrongOrder { .. } => Misuse::WrongOrder,
            Self::DoubleFree { .. } => Misuse::DoubleFree,
            Self::NeverAllocated { .. } => Misuse::NeverAllocated,
        }
    }

    /// The address the caller gave.
    pub const fn addr(&self) -> PhysAddr {
        match *self {
            Self::BadOrder { addr, .. }
            | Self::OutsideRam { addr, .. }
            | Self::Reserved { addr, .. }
            | Self::Misaligned { addr, .. }
            | Self::WrongOrder { addr, .. }
            | Self::DoubleFree { addr, .. }
            | Self::NeverAllocated { addr, .. } => addr,
        }
    }
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadOrder { addr, order } => write!(
                f,
                "free of {addr} (order {order}): order is above the maximum {MAX_ORDER}"
            ),
            Self::OutsideRam { addr, order } => {
                write!(f, "free of {addr} (order {order}): the address is not RAM")
            }
            Self::Reserved { addr, order } => write!(
                f,
                "free of {addr} (order {order}): the frame is reserved, not managed by the \
                 allocator"
            ),
            Self::Misaligned { addr, order } => write!(
                f,
                "free of {addr} (order {order}): not aligned to {}",
                Size(PAGE_SIZE << order)
            ),
            Self::WrongOrder {
                addr,
                order,
                actual,
                owner,
            } => write!(
                f,
                "free of {addr} (order {order}): the block was allocated with order {actual} \
                 (owner {owner})"
            ),
            Self::DoubleFree { addr, order, now } => {
                write!(f, "double free of {addr} (order {order}): ")?;
                match now {
                    Holder::Free { block, order: o } if block == addr && o == order => {
                        f.write_str("the block is already free")
                    }
                    Holder::Free { block, order: o } => {
                        write!(f, "already free, in the free order-{o} block at {block}")
                    }
                    Holder::Allocated {
                        block,
                        order: o,
                        owner,
                    } => write!(
                        f,
                        "freed before, now inside the order-{o} block at {block} allocated to \
                         {owner}"
                    ),
                    Holder::Lost => f.write_str("no block holds the frame (allocator corrupt)"),
                }
            }
            Self::NeverAllocated { addr, order, now } => {
                write!(f, "free of {addr} (order {order}): never allocated; ")?;
                match now {
                    Holder::Free { block, order: o } => {
                        write!(f, "it is in the free order-{o} block at {block}")
                    }
                    Holder::Allocated {
                        block,
                        order: o,
                        owner,
                    } => write!(
                        f,
                        "it is inside the order-{o} block at {block} allocated to {owner}"
                    ),
                    Holder::Lost => f.write_str("no block holds the frame (allocator corrupt)"),
                }
            }
        }
    }
}
