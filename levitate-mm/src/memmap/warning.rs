//! Things in the device tree (or in the parts handed to the map) that the map worked around:
//! each is reported once, as one line naming the node or entry, and never stops the boot.

use super::source::Source;
use crate::region::Region;
use core::fmt;

/// What is wrong with a property. The warning that carries it says what was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `#address-cells`/`#size-cells` that cannot describe a 64-bit physical range (each must
    /// be 1 or 2). The node is ignored.
    CellSizes {
        /// `#address-cells` in force.
        address_cells: usize,
        /// `#size-cells` in force.
        size_cells: usize,
    },
    /// A `reg`-like value (`reg`, `alloc-ranges`) whose length is not a whole number of
    /// entries. The whole entries are used and the tail is ignored (Linux rejects such an
    /// `alloc-ranges`; the whole entries are unambiguous, so we keep them).
    TrailingBytes {
        /// The property.
        property: &'static str,
        /// Bytes past the last whole entry.
        bytes: usize,
    },
    /// A number property (`size`, `alignment`, initrd bounds) that is neither 4 nor 8 bytes
    /// long. The node (or the initrd) is ignored.
    BadLength {
        /// The property.
        property: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A required property is absent. The node is ignored.
    Missing {
        /// The property.
        property: &'static str,
    },
    /// A dynamic region of size 0. Nothing is reserved.
    ZeroSize,
    /// Only one of `linux,initrd-start`/`linux,initrd-end`. No initrd is reserved.
    Unpaired {
        /// The property present.
        present: &'static str,
        /// The property missing.
        missing: &'static str,
    },
    /// `linux,initrd-end` is not above `linux,initrd-start`. No initrd is reserved.
    EmptyRange {
        /// `linux,initrd-start`.
        start: u64,
        /// `linux,initrd-end`.
        end: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::CellSizes {
                address_cells,
                size_cells,
            } => write!(
                f,
                "#address-cells = {address_cells} and #size-cells = {size_cells} cannot \
                 describe physical memory (each must be 1 or 2)"
            ),
            Problem::TrailingBytes { property, bytes } => write!(
                f,
                "{property} ends with {bytes} bytes that do not form a whole entry"
            ),
            Problem::BadLength { property, len } => {
                write!(f, "{property} is {len} bytes long, not 4 or 8")
            }
            Problem::Missing { property } => write!(f, "no {property} property"),
            Problem::ZeroSize => f.write_str("size is 0"),
            Problem::Unpaired { present, missing } => write!(f, "{present} without {missing}"),
            Problem::EmptyRange { start, end } => write!(
                f,
                "linux,initrd-end {end:#x} is not above linux,initrd-start {start:#x}"
            ),
        }
    }
}

/// Something the map worked around. `Display` gives one line naming the node or entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning<'a> {
    /// A `device_type = "memory"` node (spec 3.4) with a property that cannot be decoded.
    BadMemoryNode {
        /// Node name.
        node: &'a str,
        /// What is wrong and what was done.
        problem: Problem,
    },
    /// A `/reserved-memory` child (spec 3.5) with a property that cannot be decoded.
    BadReservedMemoryNode {
        /// Node name.
        node: &'a str,
        /// What is wrong and what was done.
        problem: Problem,
    },
    /// `/chosen` initrd properties that cannot be used.
    BadInitrd {
        /// What is wrong and what was done.
        problem: Problem,
    },
    /// A RAM range whose end would pass 2^64; clipped at the top of the address space.
    MemoryPastTop {
        /// Node name (empty for RAM given to `from_parts`).
        node: &'a str,
        /// Base as given.
        base: u64,
        /// Size as given.
        size: u64,
    },
    /// A reservation whose end would pass 2^64; clipped at the top of the address space.
    ReservationPastTop {
        /// Reservation name.
        name: &'a str,
        /// Its origin.
        source: Source,
        /// Base as given.
        base: u64,
        /// Size as given.
        size: u64,
    },
    /// A reservation with no byte in RAM; ignored (not listed).
    OutsideMemory {
        /// Reservation name.
        name: &'a str,
        /// Its origin.
        source: Source,
        /// The range.
        region: Region,
    },
    /// A reservation partly outside RAM; only the part inside RAM is kept.
    PartlyOutsideMemory {
        /// Reservation name.
        name: &'a str,
        /// Its origin.
        source: Source,
        /// The range as given (clipped at 2^64).
        region: Region,
        /// Bytes kept (inside RAM).
        kept: u64,
    },
    /// Two reservations share bytes; both are kept.
    Overlap {
        /// The reservation being added.
        name: &'a str,
        /// Its origin.
        source: Source,
        /// The reservation already in the map.
        other: &'a str,
        /// Its origin.
        other_source: Source,
        /// The shared bytes.
        overlap: Region,
    },
    /// A dynamic region that fits nowhere it may go; nothing reserved.
    DynamicUnplaced {
        /// Node name.
        node: &'a str,
        /// Bytes wanted.
        size: u64,
        /// Alignment used (page alignment at least).
        alignment: u64,
        /// Whether `alloc-ranges` constrained it.
        in_alloc_ranges: bool,
    },
    /// A `/reserved-memory` child with neither `reg` nor `size` (nor `iommu-addresses`, which
    /// describes IO virtual addresses and needs no physical memory); ignored.
    NoRegOrSize {
        /// Node name.
        node: &'a str,
    },
}

impl Warning<'_> {
    /// What was done about a `Bad*` warning's problem.
    fn consequence(&self) -> &'static str {
        match self {
            Warning::BadInitrd { .. } => "no initrd reserved",
            Warning::BadMemoryNode {
                problem: Problem::TrailingBytes { .. },
                ..
            }
            | Warning::BadReservedMemoryNode {
                problem: Problem::TrailingBytes { .. },
                ..
            } => "the partial entry is ignored",
            Warning::BadReservedMemoryNode {
                problem: Problem::ZeroSize,
                ..
            } => "nothing reserved",
            _ => "node ignored",
        }
    }

    /// A stable identifier of the kind of warning, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Warning::BadMemoryNode { .. } => "bad_memory_node",
            Warning::BadReservedMemoryNode { .. } => "bad_reserved_memory_node",
            Warning::BadInitrd { .. } => "bad_initrd",
            Warning::MemoryPastTop { .. } => "memory_past_top",
            Warning::ReservationPastTop { .. } => "reservation_past_top",
            Warning::OutsideMemory { .. } => "outside_memory",
            Warning::PartlyOutsideMemory { .. } => "partly_outside_memory",
            Warning::Overlap { .. } => "overlap",
            Warning::DynamicUnplaced { .. } => "dynamic_unplaced",
            Warning::NoRegOrSize { .. } => "no_reg_or_size",
        }
    }
}

/// A byte count in the largest binary unit that divides it exactly ("16 MiB", "56 KiB"), else
/// in bytes.
pub(super) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (unit, shift) in UNITS {
            if self.0 != 0 && self.0.trailing_zeros() >= shift {
                return write!(f, "{} {unit}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// A range as `0x80000000..0x80010000 (64 KiB)`.
struct Span(Region);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "{:#x}..{:#x} ({})",
            r.base.as_u64(),
            r.end(),
            Bytes(r.size)
        )
    }
}

/// How a reservation is named in a message: by the tree construct it comes from.
struct Subject<'a>(&'a str, Source);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Source::MemReserve => f.write_str("/memreserve/ entry"),
            Source::ReservedMemory | Source::Dynamic => {
                write!(f, "reserved-memory node '{}'", self.0)
            }
            Source::Initrd => f.write_str("initrd"),
            Source::Dtb => f.write_str("device tree blob"),
            Source::Kernel => f.write_str("kernel image"),
            Source::Early | Source::MemMap => write!(f, "{} reservation '{}'", self.1, self.0),
        }
    }
}

impl fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Warning::BadMemoryNode { node, problem } => {
                write!(f, "memory node '{node}': {problem}; {}", self.consequence())
            }
            Warning::BadReservedMemoryNode { node, problem } => write!(
                f,
                "reserved-memory node '{node}': {problem}; {}",
                self.consequence()
            ),
            Warning::BadInitrd { problem } => {
                write!(f, "/chosen: {problem}; {}", self.consequence())
            }
            Warning::MemoryPastTop { node, base, size } => {
                if node.is_empty() {
                    f.write_str("RAM range")?;
                } else {
                    write!(f, "memory node '{node}': reg entry")?;
                }
                write!(
                    f,
                    " {base:#x} + {size:#x} runs past the top of the 64-bit address space; clipped"
                )
            }
            Warning::ReservationPastTop {
                name,
                source,
                base,
                size,
            } => write!(
                f,
                "{} {base:#x} + {size:#x} runs past the top of the 64-bit address space; clipped",
                Subject(name, source)
            ),
            Warning::OutsideMemory {
                name,
                source,
                region,
            } => write!(
                f,
                "{} {} lies wholly outside RAM; ignored",
                Subject(name, source),
                Span(region)
            ),
            Warning::PartlyOutsideMemory {
                name,
                source,
                region,
                kept,
            } => write!(
                f,
                "{} {} lies partly outside RAM; only the {} inside RAM is reserved",
                Subject(name, source),
                Span(region),
                Bytes(kept)
            ),
            Warning::Overlap {
                name,
                source,
                other,
                other_source,
                overlap,
            } => write!(
                f,
                "{} overlaps {} at {}; both kept",
                Subject(name, source),
                Subject(other, other_source),
                Span(overlap)
            ),
            Warning::DynamicUnplaced {
                node,
                size,
                alignment,
                in_alloc_ranges,
            } => write!(
                f,
                "reserved-memory node '{node}': cannot place {} dynamic region (aligned to {}) \
                 {}; nothing reserved",
                Bytes(size),
                Bytes(alignment),
                if in_alloc_ranges {
                    "in its alloc-ranges"
                } else {
                    "in free RAM"
                }
            ),
            Warning::NoRegOrSize { node } => {
                write!(
                    f,
                    "reserved-memory node '{node}': neither reg nor size; ignored"
                )
            }
        }
    }
}
