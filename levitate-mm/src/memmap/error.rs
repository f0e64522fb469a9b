//! Why a memory map could not be built or changed, and which invariant a map breaks.

use super::addressable::Limit;
use super::warning::Problem;
use crate::region::Region;
use core::fmt;

/// A node's path, copied out of the blob so that an error does not borrow it (the kernel
/// reports boot errors after the map is gone, `xtask` after the file buffer is). Paths longer
/// than [`NodePath::CAPACITY`] bytes are cut at a character boundary and end in `...`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodePath {
    bytes: [u8; NodePath::CAPACITY],
    len: u8,
    truncated: bool,
}

impl NodePath {
    /// Most bytes kept: `/reserved-memory/` and a child's name of 31 characters (Devicetree
    /// Specification v0.4, 2.2.1) with a 64-bit unit address fit. Kept small so that errors
    /// stay cheap to return.
    pub const CAPACITY: usize = 64;

    /// The path `/a/b` of the names given, root first.
    pub fn new(names: &[&str]) -> Self {
        let mut path = Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
            truncated: false,
        };
        for name in names {
            path.push("/");
            path.push(name);
        }
        path
    }

    fn push(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let len = usize::from(self.len);
        let mut take = s.len().min(Self::CAPACITY - len);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[len..len + take].copy_from_slice(&s.as_bytes()[..take]);
        // At most CAPACITY (64), so it fits the u8.
        self.len = (len + take) as u8;
        self.truncated = take < s.len();
    }

    /// The path as kept (without the `...` of a cut one).
    pub fn as_str(&self) -> &str {
        // Only whole characters of `&str`s were copied in.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether the path was cut.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The map cannot be built (or a reservation cannot be recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// No RAM at all: no enabled `device_type = "memory"` node with a non-empty `reg`.
    NoMemory,
    /// RAM exists, but not one whole page of it is left once everything reserved is taken out.
    NoUsableMemory,
    /// RAM exists, but all of it lies beyond what the CPU or the linear map can reach.
    NoAddressableMemory {
        /// The limit the RAM ran into.
        limit: Limit,
    },
    /// More items than a fixed-capacity list holds. Nothing is dropped silently: the caller
    /// learns the map is incomplete.
    TooMany {
        /// What overflowed ("RAM ranges", "reservations", ...).
        what: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// An enabled `/reserved-memory` child (Devicetree Specification v0.4, 3.5) whose
    /// reservation cannot be decoded. Ignoring it would hand its memory out, so the map fails
    /// closed: there is no map until the node is fixed or disabled.
    BadReservedMemory {
        /// The child's path, `/reserved-memory/name@unit`.
        node: NodePath,
        /// What cannot be decoded.
        problem: Problem,
    },
    /// A `/reserved-memory` node whose own properties (cell sizes, `ranges`) leave its
    /// enabled children's addresses undecodable; fails closed like
    /// [`MemMapError::BadReservedMemory`].
    BadReservedMemoryParent {
        /// The node's path.
        node: NodePath,
        /// What cannot be decoded.
        problem: Problem,
    },
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemMapError::NoMemory => f.write_str(
                "the device tree describes no RAM (no enabled device_type = \"memory\" node \
                 with a non-empty reg)",
            ),
            MemMapError::NoUsableMemory => {
                f.write_str("no whole page of RAM is left usable once reservations are taken out")
            }
            MemMapError::NoAddressableMemory { limit } => match limit {
                Limit::PhysAddrBits(bits) => write!(
                    f,
                    "all RAM lies beyond the CPU's {bits}-bit physical address range"
                ),
                Limit::LinearMap(end) => write!(
                    f,
                    "all RAM lies beyond the kernel's linear map (physical 0..{end:#x})"
                ),
            },
            MemMapError::TooMany { what, capacity } => {
                write!(f, "more {what} than the memory map can hold ({capacity})")
            }
            MemMapError::BadReservedMemory { node, problem } => write!(
                f,
                "reserved-memory node {node}: {problem}; cannot tell which memory it reserves, \
                 so none is handed out (status = \"disabled\" ignores the node)"
            ),
            MemMapError::BadReservedMemoryParent { node, problem } => write!(
                f,
                "{node}: {problem}; cannot tell which memory its children reserve, so none is \
                 handed out"
            ),
        }
    }
}

/// A broken invariant of a [`super::MemoryMap`]; see `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvariantViolation {
    /// A RAM or usable range that is empty or not page aligned.
    NotPageAligned {
        /// "memory" or "usable".
        list: &'static str,
        /// The range.
        region: Region,
    },
    /// Ranges out of order, overlapping, or (for reservations) empty.
    Unsorted {
        /// "memory", "usable" or "reserved".
        list: &'static str,
        /// Index of the offending entry.
        index: usize,
    },
    /// A usable range not wholly inside one RAM range.
    UsableOutsideMemory {
        /// The range.
        region: Region,
    },
    /// A reservation not wholly inside one RAM range.
    ReservedOutsideMemory {
        /// The range.
        region: Region,
    },
    /// A usable page that holds reserved bytes.
    UsableReserved {
        /// The usable range.
        usable: Region,
        /// The page-rounded reserved range it meets.
        reserved: Region,
    },
    /// RAM pages that are neither usable nor reserved (lost).
    PagesLost {
        /// The lost pages.
        region: Region,
    },
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPageAligned { list, region } => {
                write!(f, "{list} range {region:?} is empty or not page aligned")
            }
            Self::Unsorted { list, index } => {
                write!(
                    f,
                    "{list} entry {index} is empty, out of order or overlapping"
                )
            }
            Self::UsableOutsideMemory { region } => {
                write!(f, "usable range {region:?} is not inside one RAM range")
            }
            Self::ReservedOutsideMemory { region } => {
                write!(f, "reservation {region:?} is not inside one RAM range")
            }
            Self::UsableReserved { usable, reserved } => {
                write!(
                    f,
                    "usable range {usable:?} meets reserved pages {reserved:?}"
                )
            }
            Self::PagesLost { region } => {
                write!(f, "RAM pages {region:?} are neither usable nor reserved")
            }
        }
    }
}
