//! Why a memory map could not be built or changed, and which invariant a map breaks.

use crate::region::Region;
use core::fmt;

/// The map cannot be built (or a reservation cannot be recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// No RAM at all: no enabled `device_type = "memory"` node with a non-empty `reg`.
    NoMemory,
    /// RAM exists, but not one whole page of it is left once everything reserved is taken out.
    NoUsableMemory,
    /// More items than a fixed-capacity list holds. Nothing is dropped silently: the caller
    /// learns the map is incomplete.
    TooMany {
        /// What overflowed ("RAM ranges", "reservations", ...).
        what: &'static str,
        /// Its capacity.
        capacity: usize,
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
            MemMapError::TooMany { what, capacity } => {
                write!(f, "more {what} than the memory map can hold ({capacity})")
            }
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
