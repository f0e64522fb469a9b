//! Who holds an allocated block. The owner is recorded in the block's head `Page`, so the
//! per-owner totals in the statistics and `owner_of` in a diagnostic cost nothing extra.

use core::fmt;

/// The subsystem an allocated block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Owner {
    /// The kernel itself (boot structures, anything without a better name).
    Kernel = 0,
    /// Page-table frames.
    PageTable = 1,
    /// Frames mapped into the kernel heap.
    Heap = 2,
    /// Kernel and exception stacks.
    Stack = 3,
    /// Buffers for devices (often below 4 GiB).
    Dma = 4,
    /// Frames parked in the per-CPU order-0 caches.
    FrameCache = 5,
    /// 2 MiB chunks held by the bitmap layer.
    Bitmap = 6,
    /// Tests and stress commands.
    Test = 7,
    /// Anything else.
    Other = 8,
}

impl Owner {
    /// Number of owners (the length of the per-owner arrays in the statistics).
    pub const COUNT: usize = 9;
    /// Every owner, in `repr` order (index `i` holds the owner whose value is `i`).
    pub const ALL: [Owner; Owner::COUNT] = [
        Owner::Kernel,
        Owner::PageTable,
        Owner::Heap,
        Owner::Stack,
        Owner::Dma,
        Owner::FrameCache,
        Owner::Bitmap,
        Owner::Test,
        Owner::Other,
    ];

    /// The short name the shell and logs print.
    pub const fn as_str(self) -> &'static str {
        match self {
            Owner::Kernel => "kernel",
            Owner::PageTable => "page-table",
            Owner::Heap => "heap",
            Owner::Stack => "stack",
            Owner::Dma => "dma",
            Owner::FrameCache => "frame-cache",
            Owner::Bitmap => "bitmap",
            Owner::Test => "test",
            Owner::Other => "other",
        }
    }

    /// The owner stored as `value` in a `Page`, if it is one.
    #[inline]
    // A match, not `ALL[value]`: the compiler sees it is the identity and emits a compare
    // (the table was a dependent load on the frame free's path, after its swap).
    pub const fn from_u8(value: u8) -> Option<Owner> {
        Some(match value {
            0 => Owner::Kernel,
            1 => Owner::PageTable,
            2 => Owner::Heap,
            3 => Owner::Stack,
            4 => Owner::Dma,
            5 => Owner::FrameCache,
            6 => Owner::Bitmap,
            7 => Owner::Test,
            8 => Owner::Other,
            _ => return None,
        })
    }

    /// Index into the per-owner arrays.
    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
