//! A four-level table walker that maps ranges (with 1 GiB and 2 MiB blocks where alignment
//! allows) and translates addresses. It reaches table memory only through `TableAccess`, so
//! the same code runs on the boot tables, on frames from the buddy, and on the host in tests.
//! It does no TLB maintenance: callers own that, because they know what changed.

use super::descriptor::{self, Attributes, Decoded};
use core::fmt;
use levitate_mm::addr::{PhysAddr, VirtAddr, PAGE_SIZE};

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Bytes mapped by one entry at each level (0..=3).
pub const LEVEL_SIZE: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];

/// Where translation tables come from and how to reach them.
pub trait TableAccess {
    /// A new, zeroed table frame; `None` when none is left.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// The table at physical address `pa` (a frame this access handed out, or the root).
    fn table(&mut self, pa: PhysAddr) -> &mut [u64; ENTRIES];
}

/// Why a mapping failed. The tables are left consistent: a range that fails halfway keeps
/// the part already mapped, which the caller may unmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or size is not page aligned.
    Misaligned {
        /// The virtual address requested.
        va: VirtAddr,
        /// The physical address requested.
        pa: PhysAddr,
        /// The size requested.
        size: u64,
    },
    /// Something is already mapped at this address.
    AlreadyMapped(VirtAddr),
    /// No frame was available for a table.
    OutOfTables,
    /// A fixed virtual window (MMIO, boot) has no room left.
    WindowFull,
    /// The virtual address lies in neither 48-bit half (bits [63:48] not all equal).
    NotCanonical(VirtAddr),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { va, pa, size } => {
                write!(f, "misaligned mapping {va} -> {pa} size {size:#x}")
            }
            Self::AlreadyMapped(va) => write!(f, "{va} is already mapped"),
            Self::OutOfTables => write!(f, "no frame left for a translation table"),
            Self::WindowFull => write!(f, "the virtual window has no room left"),
            Self::NotCanonical(va) => write!(f, "{va} is not a canonical 48-bit address"),
        }
    }
}

fn index(va: u64, level: usize) -> usize {
    ((va >> (39 - 9 * level)) & 0x1ff) as usize
}

/// With 48-bit regions (T0SZ = T1SZ = 16) bits [63:48] select the table base: all zeros for
/// TTBR0, all ones for TTBR1 (ARM ARM D8.2.4). Anything else faults.
fn canonical(va: VirtAddr) -> bool {
    let top = va.as_u64() >> 48;
    top == 0 || top == 0xffff
}

/// Maps `size` bytes at `va` to `pa` with `attrs` in the tables rooted at `root`.
pub fn map(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: VirtAddr,
    pa: PhysAddr,
    size: u64,
    attrs: Attributes,
) -> Result<(), MapError> {
    if !va.is_aligned(PAGE_SIZE) || !pa.is_aligned(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::Misaligned { va, pa, size });
    }
    let last = va.checked_add(size.saturating_sub(1)).unwrap_or(va);
    if !canonical(va) || !canonical(last) {
        return Err(MapError::NotCanonical(va));
    }
    let mut done = 0;
    while done < size {
        let (v, p, left) = (va.as_u64() + done, pa.as_u64() + done, size - done);
        // The largest block that fits: 1 GiB at level 1, 2 MiB at level 2, else a page.
        let level = (1..=3)
            .find(|&l| {
                let s = LEVEL_SIZE[l];
                v % s == 0 && p % s == 0 && left >= s
            })
            .unwrap_or(3);
        map_one(access, root, v, PhysAddr::new(p), level, attrs)?;
        done += LEVEL_SIZE[level];
    }
    Ok(())
}

fn map_one(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: u64,
    pa: PhysAddr,
    leaf_level: usize,
    attrs: Attributes,
) -> Result<(), MapError> {
    let mut table_pa = root;
    for level in 0..leaf_level {
        let i = index(va, level);
        let entry = access.table(table_pa)[i];
        table_pa = match descriptor::decode(entry, level) {
            Decoded::Table(next) => next,
            Decoded::Leaf(..) => return Err(MapError::AlreadyMapped(VirtAddr::new(va))),
            Decoded::Invalid => {
                let next = access.alloc_table().ok_or(MapError::OutOfTables)?;
                access.table(table_pa)[i] = descriptor::table(next);
                next
            }
        };
    }
    let slot = &mut access.table(table_pa)[index(va, leaf_level)];
    if descriptor::decode(*slot, leaf_level) != Decoded::Invalid {
        return Err(MapError::AlreadyMapped(VirtAddr::new(va)));
    }
    *slot = descriptor::leaf(pa, attrs, leaf_level);
    Ok(())
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address `va` maps to.
    pub pa: PhysAddr,
    /// The mapping's attributes.
    pub attrs: Attributes,
    /// The level of the leaf (1 = 1 GiB block, 2 = 2 MiB block, 3 = page).
    pub level: usize,
}

/// Translates `va` through the tables rooted at `root`.
pub fn translate(
    access: &mut impl TableAccess,
    root: PhysAddr,
    va: VirtAddr,
) -> Option<Translation> {
    if !canonical(va) {
        return None;
    }
    let mut table_pa = root;
    for (level, &level_size) in LEVEL_SIZE.iter().enumerate() {
        let entry = access.table(table_pa)[index(va.as_u64(), level)];
        match descriptor::decode(entry, level) {
            Decoded::Invalid => return None,
            Decoded::Table(next) if level < 3 => table_pa = next,
            Decoded::Table(_) => return None,
            Decoded::Leaf(base, attrs) => {
                let offset = va.as_u64() & (level_size - 1);
                return Some(Translation {
                    pa: base + offset,
                    attrs,
                    level,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    /// Tables in host memory; "physical" address = 0x1000_0000 + index * 4096.
    struct HostTables {
        frames: Vec<Box<[u64; ENTRIES]>>,
        limit: usize,
    }

    const BASE: u64 = 0x1000_0000;

    impl HostTables {
        fn new(limit: usize) -> (Self, PhysAddr) {
            let mut t = Self {
                frames: Vec::new(),
                limit,
            };
            let root = t.alloc_table().unwrap();
            (t, root)
        }
    }

    impl TableAccess for HostTables {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            if self.frames.len() == self.limit {
                return None;
            }
            self.frames.push(Box::new([0; ENTRIES]));
            Some(PhysAddr::new(
                BASE + (self.frames.len() as u64 - 1) * PAGE_SIZE,
            ))
        }
        fn table(&mut self, pa: PhysAddr) -> &mut [u64; ENTRIES] {
            &mut self.frames[((pa.as_u64() - BASE) / PAGE_SIZE) as usize]
        }
    }

    #[test]
    fn maps_pages_and_blocks() {
        let (mut t, root) = HostTables::new(16);
        let va = VirtAddr::new(0xffff_0000_4000_0000);
        let pa = PhysAddr::new(0x4000_0000);
        // 1 GiB + 2 MiB + 4 KiB: one 1 GiB block, one 2 MiB block, one page.
        let size = (1 << 30) + (1 << 21) + 4096;
        map(&mut t, root, va, pa, size, Attributes::KERNEL_DATA).unwrap();
        let tr = translate(&mut t, root, va + 0x1234).unwrap();
        assert_eq!((tr.pa, tr.level), (pa + 0x1234, 1));
        let tr = translate(&mut t, root, va + (1 << 30) + 0x10).unwrap();
        assert_eq!((tr.pa, tr.level), (pa + (1 << 30) + 0x10, 2));
        let tr = translate(&mut t, root, va + (1 << 30) + (1 << 21)).unwrap();
        assert_eq!((tr.pa, tr.level), (pa + (1 << 30) + (1 << 21), 3));
        assert_eq!(translate(&mut t, root, va + size), None);
        assert_eq!(tr.attrs, Attributes::KERNEL_DATA);
    }

    #[test]
    fn refuses_overlap_misalignment_and_exhaustion() {
        let (mut t, root) = HostTables::new(4);
        let va = VirtAddr::new(0xffff_f000_0000_0000);
        map(
            &mut t,
            root,
            va,
            PhysAddr::new(0x900_0000),
            4096,
            Attributes::DEVICE,
        )
        .unwrap();
        assert_eq!(
            map(
                &mut t,
                root,
                va,
                PhysAddr::new(0x900_0000),
                4096,
                Attributes::DEVICE
            ),
            Err(MapError::AlreadyMapped(va))
        );
        assert!(matches!(
            map(
                &mut t,
                root,
                va + 8,
                PhysAddr::new(0),
                4096,
                Attributes::DEVICE
            ),
            Err(MapError::Misaligned { .. })
        ));
        assert_eq!(
            map(
                &mut t,
                root,
                VirtAddr::new(0x0001_0000_0000_0000),
                PhysAddr::new(0),
                4096,
                Attributes::DEVICE
            ),
            Err(MapError::NotCanonical(VirtAddr::new(0x0001_0000_0000_0000)))
        );
        // Root + 3 tables used; a far-away address needs 3 more.
        assert_eq!(
            map(
                &mut t,
                root,
                VirtAddr::new(0xffff_0000_0000_0000),
                PhysAddr::new(0),
                4096,
                Attributes::DEVICE
            ),
            Err(MapError::OutOfTables)
        );
    }
}
