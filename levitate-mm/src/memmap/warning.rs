//! Things in the device tree (or in the parts handed to the map) that the map worked around:
//! each is reported once, as one line naming the node or entry, and never stops the boot.
//! (What cannot be worked around without handing out reserved memory is a
//! [`super::MemMapError`] instead; [`Problem`] describes both.)

use super::addressable::Limit;
use super::source::Source;
use crate::region::Region;
use core::fmt;

/// What is wrong with a property. The warning that carries it says what was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `#address-cells`/`#size-cells` that cannot describe a 64-bit physical range (each must
    /// be 1 or 2). A memory node is ignored; reserved memory fails closed.
    CellSizes {
        /// `#address-cells` in force.
        address_cells: usize,
        /// `#size-cells` in force.
        size_cells: usize,
    },
    /// A `reg`-like value (`reg`, `alloc-ranges`) whose length is not a whole number of
    /// entries. For a memory node the whole entries are used and the tail is ignored; reserved
    /// memory fails closed (the cell sizes are likely wrong, so no entry can be trusted).
    TrailingBytes {
        /// The property.
        property: &'static str,
        /// Bytes past the last whole entry.
        bytes: usize,
    },
    /// A number property (`size`, `alignment`, initrd bounds) that is neither 4 nor 8 bytes
    /// long. The initrd is not reserved; reserved memory fails closed.
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
    /// A `reg`-like value with no entry at all: it names no memory, so what it was meant to
    /// reserve is unknown.
    NoEntries {
        /// The property.
        property: &'static str,
    },
    /// A `reg` entry of size 0 in a reservation: a placeholder the boot loader did not fill,
    /// or a misread; the memory meant is unknown (Linux reports it as a failed reservation).
    ZeroSizeEntry {
        /// The property.
        property: &'static str,
        /// The entry's address.
        base: u64,
    },
    /// A `#address-cells`/`#size-cells` property that is not one cell long.
    CellsLength {
        /// The property.
        property: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A `/reserved-memory` `ranges` that translates addresses (reserved-memory.yaml requires
    /// an empty one: child addresses are physical).
    TranslatingRanges,
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
            Problem::NoEntries { property } => write!(f, "{property} holds no entry"),
            Problem::ZeroSizeEntry { property, base } => {
                write!(f, "{property} entry at {base:#x} has size 0")
            }
            Problem::CellsLength { property, len } => {
                write!(f, "{property} is {len} bytes long, not one cell")
            }
            Problem::TranslatingRanges => f.write_str(
                "ranges is not empty (child addresses translated through ranges are not \
                 supported; the binding asks for an empty ranges)",
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
    /// A dynamic `/reserved-memory` child (spec 3.5) that asks for nothing (size 0).
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
    /// RAM the CPU cannot address or the linear map cannot reach: ignored, or clipped at the
    /// limit when only its tail is beyond.
    Unaddressable {
        /// Memory node name (empty for RAM not from a memory node).
        node: &'a str,
        /// The range as described (clipped at 2^64).
        region: Region,
        /// The part kept (empty when the whole range is beyond the limit).
        kept: Region,
        /// The limit it ran into.
        limit: Limit,
    },
    /// A `/reserved-memory` child whose `status` is neither okay nor "disabled" ("reserved",
    /// "fail", or not a string). Linux skips every node that is not okay; only "disabled"
    /// releases memory here, the rest stays reserved.
    OddReservedStatus {
        /// Node name.
        node: &'a str,
        /// The status, when it is a string.
        status: Option<&'a str>,
    },
    /// A `/reserved-memory` node without `ranges` (the binding requires an empty one): its
    /// children's addresses are taken as physical addresses, as Linux would if it accepted it.
    NoRanges {
        /// Node name.
        node: &'a str,
    },
    /// A `/memreserve/` entry of size 0 (only the `(0, 0)` entry ends the list, spec 5.3);
    /// nothing reserved.
    EmptyMemReserve {
        /// Its address.
        base: u64,
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
            } => "the partial entry is ignored",
            Warning::BadReservedMemoryNode { .. } => "nothing reserved",
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
            Warning::Unaddressable { .. } => "unaddressable_memory",
            Warning::OddReservedStatus { .. } => "odd_reserved_status",
            Warning::NoRanges { .. } => "no_ranges",
            Warning::EmptyMemReserve { .. } => "empty_memreserve",
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
            Source::Framebuffer => write!(f, "framebuffer '{}'", self.0),
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
            Warning::Unaddressable {
                node,
                region,
                kept,
                limit,
            } => {
                if node.is_empty() {
                    write!(f, "RAM {}", Span(region))?;
                } else {
                    write!(f, "memory node '{node}': RAM {}", Span(region))?;
                }
                let beyond = match limit {
                    Limit::PhysAddrBits(bits) => {
                        return if kept.is_empty() {
                            write!(
                                f,
                                " lies beyond the CPU's {bits}-bit physical address range; \
                                 ignored"
                            )
                        } else {
                            write!(
                                f,
                                " runs past the CPU's {bits}-bit physical address range; only \
                                 {} is used",
                                Span(kept)
                            )
                        };
                    }
                    Limit::LinearMap(end) => end,
                };
                if kept.is_empty() {
                    write!(
                        f,
                        " lies beyond the kernel's linear map (physical 0..{beyond:#x}, {}); ignored",
                        Bytes(beyond)
                    )
                } else {
                    write!(
                        f,
                        " runs past the kernel's linear map (physical 0..{beyond:#x}, {}); only {} \
                         is used",
                        Bytes(beyond),
                        Span(kept)
                    )
                }
            }
            Warning::OddReservedStatus { node, status } => {
                write!(f, "reserved-memory node '{node}': status ")?;
                match status {
                    Some(s) => write!(f, "\"{s}\"")?,
                    None => f.write_str("(not a string)")?,
                }
                f.write_str(" is neither \"okay\" nor \"disabled\"; kept reserved")
            }
            Warning::NoRanges { node } => write!(
                f,
                "'{node}' has no ranges property; its children's addresses are taken as \
                 physical addresses"
            ),
            Warning::EmptyMemReserve { base } => {
                write!(
                    f,
                    "/memreserve/ entry at {base:#x} has size 0; nothing reserved"
                )
            }
        }
    }
}
