//! One address's walk through the translation tables, level by level, the way the hardware
//! walker reads them (ARM ARM D8.2): which half of the address space the address is in (so
//! which table base register the walker starts from), then each level's index, raw descriptor
//! and meaning, stopping at an invalid entry or a leaf. `translate` is built on it, and its
//! `Display` is what the kernel shell's `pt ADDR` prints:
//!
//! ```text
//! 0xffff000040200123: upper half, TTBR1_EL1 -> root 0x10000000
//! L0[0] 0x0000000010001003 table -> 0x10001000
//! L1[1] 0x0000000010002003 table -> 0x10002000
//! L2[1] 0x0060000040200709 block 2 MiB -> 0x40200000 RW NX normal
//! ```

use super::descriptor::{self, Decoded};
use super::table::{self, TableAccess, Translation, LEVEL_SIZE};
use core::fmt;
use levitate_mm::addr::{PhysAddr, VirtAddr};

/// One level of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The table level, 0 to 3.
    pub level: usize,
    /// The entry's index in that level's table.
    pub index: usize,
    /// The descriptor as stored.
    pub raw: u64,
    /// What the walker makes of it.
    pub decoded: Decoded,
}

/// Which table base register the walker starts from. With 48-bit regions (T0SZ = T1SZ = 16)
/// bits [63:48] of the address select it: all zeros TTBR0_EL1, all ones TTBR1_EL1; an address
/// with any other top bits is in neither region and faults without a table being read (ARM ARM
/// D8.2.4; TCR_EL1.TBI0/TBI1 are off, so the top byte takes part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// The lower half, translated through TTBR0_EL1 (after boot: the identity map of the entry
    /// code, with TCR_EL1.EPD0 set). The value is the n of TTBRn_EL1 and TCR_EL1.EPDn.
    Lower = 0,
    /// The upper half, translated through TTBR1_EL1 (the kernel's tables).
    Upper = 1,
}

impl Half {
    /// The half `va` is in; `None` when it is in neither (a non-canonical address).
    pub fn of(va: VirtAddr) -> Option<Half> {
        match va.as_u64() >> 48 {
            0 => Some(Half::Lower),
            0xffff => Some(Half::Upper),
            _ => None,
        }
    }

    /// The register holding this half's table base.
    pub fn register(self) -> &'static str {
        match self {
            Half::Lower => "TTBR0_EL1",
            Half::Upper => "TTBR1_EL1",
        }
    }

    /// "lower" or "upper".
    pub fn name(self) -> &'static str {
        match self {
            Half::Lower => "lower",
            Half::Upper => "upper",
        }
    }
}

/// Reads descriptors for a walk. A reader may refuse a table it cannot reach safely (memory
/// outside what it maps): the walk then stops and says so, instead of guessing.
pub trait ReadTables {
    /// Entry `index` of the table at `table`, or `None` when that memory cannot be read.
    fn entry(&mut self, table: PhysAddr, index: usize) -> Option<u64>;
}

/// A `TableAccess` reads the tables it built.
pub struct Access<'a, A: TableAccess>(pub &'a mut A);

impl<A: TableAccess> ReadTables for Access<'_, A> {
    fn entry(&mut self, table: PhysAddr, index: usize) -> Option<u64> {
        Some(self.0.table(table)[index])
    }
}

/// The walk of one virtual address: at most one step per level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    va: VirtAddr,
    half: Option<Half>,
    root: PhysAddr,
    steps: [Step; 4],
    len: usize,
    unreadable: Option<PhysAddr>,
}

impl Walk {
    /// The address walked.
    pub fn va(&self) -> VirtAddr {
        self.va
    }

    /// The half it is in (which base register the walk started from); `None` when it is in
    /// neither.
    pub fn half(&self) -> Option<Half> {
        self.half
    }

    /// The table the walk started from.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The table the reader could not read, if the walk stopped there.
    pub fn unreadable(&self) -> Option<PhysAddr> {
        self.unreadable
    }

    /// The levels read, root first; empty when the address is not canonical (the walker
    /// faults before reading any table).
    pub fn steps(&self) -> &[Step] {
        &self.steps[..self.len]
    }

    /// Where the address leads, if it ends at a leaf.
    pub fn translation(&self) -> Option<Translation> {
        let last = self.steps().last()?;
        match last.decoded {
            Decoded::Leaf(base, attrs) => Some(Translation {
                pa: base + (self.va.as_u64() & (LEVEL_SIZE[last.level] - 1)),
                attrs,
                level: last.level,
            }),
            Decoded::Invalid | Decoded::Table(_) => None,
        }
    }
}

/// Walks `va` through the tables rooted at `root` (the caller picks the root for `va`'s half).
pub fn walk(access: &mut impl TableAccess, root: PhysAddr, va: VirtAddr) -> Walk {
    walk_with(&mut Access(access), root, va)
}

/// Walks `va` through the tables rooted at `root`, reading them through `reader`.
pub fn walk_with(reader: &mut impl ReadTables, root: PhysAddr, va: VirtAddr) -> Walk {
    let unread = Step {
        level: 0,
        index: 0,
        raw: descriptor::INVALID,
        decoded: Decoded::Invalid,
    };
    let half = Half::of(va);
    let mut walk = Walk {
        va,
        half,
        root,
        steps: [unread; 4],
        len: 0,
        unreadable: None,
    };
    if half.is_none() {
        return walk;
    }
    debug_assert!(table::canonical(va));
    let mut table_pa = root;
    for level in 0..LEVEL_SIZE.len() {
        let index = table::index(va.as_u64(), level);
        let Some(raw) = reader.entry(table_pa, index) else {
            walk.unreadable = Some(table_pa);
            break;
        };
        let decoded = descriptor::decode(raw, level);
        walk.steps[level] = Step {
            level,
            index,
            raw,
            decoded,
        };
        walk.len = level + 1;
        match decoded {
            // `decode` never reports a table at level 3: that encoding is a page.
            Decoded::Table(next) => table_pa = next,
            Decoded::Invalid | Decoded::Leaf(..) => break,
        }
    }
    walk
}

/// `L2[1] 0x0060000040200709 block 2 MiB -> 0x40200000 RW NX normal`; an all-zero invalid
/// entry prints as `L3[5] invalid`.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}[{}] ", self.level, self.index)?;
        if self.raw != descriptor::INVALID {
            write!(f, "{:#018x} ", self.raw)?;
        }
        match self.decoded {
            Decoded::Invalid => write!(f, "invalid"),
            Decoded::Table(next) => write!(f, "table -> {next}"),
            Decoded::Leaf(pa, attrs) => {
                let size = match self.level {
                    1 => "block 1 GiB",
                    2 => "block 2 MiB",
                    _ => "page 4 KiB",
                };
                write!(f, "{size} -> {pa} {attrs}")
            }
        }
    }
}

/// A line naming the half and the table base, then one line per level; no trailing newline.
impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(half) = self.half else {
            return write!(
                f,
                "{} is in neither half: bits 63:48 are neither all zeros (TTBR0_EL1) nor all \
                 ones (TTBR1_EL1), so no table translates it and any access faults (translation \
                 fault, level 0)",
                self.va
            );
        };
        write!(
            f,
            "{}: {} half, {} -> root {}",
            self.va,
            half.name(),
            half.register(),
            self.root
        )?;
        for step in self.steps() {
            write!(f, "\n{step}")?;
        }
        if let Some(pa) = self.unreadable {
            write!(
                f,
                "\nthe table at {pa} is outside the memory the kernel can read: the walk stops"
            )?;
        }
        Ok(())
    }
}

/// The table base registers as the hardware holds them now.
#[cfg(target_os = "none")]
pub mod live {
    use super::Half;
    use aarch64_cpu::registers::{Readable, TCR_EL1, TTBR0_EL1, TTBR1_EL1};
    use levitate_mm::addr::PhysAddr;

    /// The root table `half`'s base register points to (BADDR, without ASID and CnP).
    pub fn root(half: Half) -> PhysAddr {
        PhysAddr::new(match half {
            Half::Lower => TTBR0_EL1.get_baddr(),
            Half::Upper => TTBR1_EL1.get_baddr(),
        })
    }

    /// Whether TCR_EL1.EPD0/EPD1 stops the walker from reading `half`'s tables: every
    /// address in that half then takes a translation fault (ARM ARM D8.2, "TCR_EL1.EPDn").
    pub fn walks_disabled(half: Half) -> bool {
        match half {
            Half::Lower => TCR_EL1.is_set(TCR_EL1::EPD0),
            Half::Upper => TCR_EL1.is_set(TCR_EL1::EPD1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::descriptor::Attributes;
    use super::super::table::testing::HostTables;
    use super::super::table::{map, translate};
    use super::*;
    use std::string::ToString;

    #[test]
    fn prints_one_line_per_level() {
        let (mut t, root) = HostTables::new(16);
        let base = VirtAddr::new(0xffff_0000_4020_0000);
        map(
            &mut t,
            root,
            base,
            PhysAddr::new(0x4020_0000),
            1 << 21,
            Attributes::KERNEL_DATA,
        )
        .unwrap();
        let page = base + (1 << 21);
        map(
            &mut t,
            root,
            page,
            PhysAddr::new(0x900_0000),
            4096,
            Attributes::DEVICE,
        )
        .unwrap();
        // HostTables hands out 0x1000_0000, 0x1000_1000, ... root first.
        assert_eq!(
            walk(&mut t, root, base + 0x123).to_string(),
            "0xffff000040200123: upper half, TTBR1_EL1 -> root 0x10000000\n\
             L0[0] 0x0000000010001003 table -> 0x10001000\n\
             L1[1] 0x0000000010002003 table -> 0x10002000\n\
             L2[1] 0x0060000040200709 block 2 MiB -> 0x40200000 RW NX normal"
        );
        let w = walk(&mut t, root, page + 0x10);
        assert_eq!(
            w.steps()[3].to_string(),
            "L3[0] 0x0060000009000607 page 4 KiB -> 0x9000000 RW NX device-nGnRE"
        );
        assert_eq!(w.translation(), translate(&mut t, root, page + 0x10));
        assert_eq!(w.translation().unwrap().pa, PhysAddr::new(0x900_0010));
        // Stops at the first invalid entry.
        let w = walk(&mut t, root, page + 5 * 4096);
        assert_eq!(w.steps().len(), 4);
        assert_eq!(w.steps()[3].to_string(), "L3[5] invalid");
        assert_eq!(w.translation(), None);
        let w = walk(&mut t, root, VirtAddr::new(0xffff_ff80_0000_0000));
        assert_eq!(w.steps().len(), 1);
        assert_eq!(w.steps()[0].to_string(), "L0[511] invalid");
    }

    #[test]
    fn the_top_bits_choose_the_base_register() {
        let (mut t, root) = HostTables::new(1);
        for (va, half) in [
            (0x0u64, Some(Half::Lower)),
            (0x0000_ffff_ffff_ffff, Some(Half::Lower)),
            (0x0001_0000_0000_0000, None),
            (0x8000_0000_0000_0000, None),
            (0xfffe_ffff_ffff_ffff, None),
            (0xffff_0000_0000_0000, Some(Half::Upper)),
            (u64::MAX, Some(Half::Upper)),
        ] {
            assert_eq!(Half::of(VirtAddr::new(va)), half, "{va:#x}");
            assert_eq!(walk(&mut t, root, VirtAddr::new(va)).half(), half);
        }
        let w = walk(&mut t, root, VirtAddr::new(0x4020_0000));
        assert!(w
            .to_string()
            .starts_with("0x40200000: lower half, TTBR0_EL1 -> root 0x10000000\nL0[0] invalid"));
    }

    #[test]
    fn a_table_the_reader_cannot_reach_stops_the_walk() {
        // Only the root (at 0x1000) is readable; its entry 0 links a table elsewhere.
        struct RootOnly;
        impl ReadTables for RootOnly {
            fn entry(&mut self, table: PhysAddr, index: usize) -> Option<u64> {
                (table == PhysAddr::new(0x1000)).then_some(if index == 0 { 0x7000_0003 } else { 0 })
            }
        }
        let w = walk_with(&mut RootOnly, PhysAddr::new(0x1000), VirtAddr::new(0x1234));
        assert_eq!(w.steps().len(), 1);
        assert_eq!(w.unreadable(), Some(PhysAddr::new(0x7000_0000)));
        assert_eq!(w.translation(), None);
        assert!(w.to_string().ends_with(
            "L0[0] 0x0000000070000003 table -> 0x70000000\n\
             the table at 0x70000000 is outside the memory the kernel can read: the walk stops"
        ));
    }

    #[test]
    fn non_canonical_addresses_read_no_table() {
        let (mut t, root) = HostTables::new(1);
        let w = walk(&mut t, root, VirtAddr::new(0x0001_0000_0000_0000));
        assert!(w.steps().is_empty());
        assert_eq!(w.translation(), None);
        assert!(w.to_string().starts_with(
            "0x1000000000000 is in neither half: bits 63:48 are neither all zeros (TTBR0_EL1)"
        ));
    }

    #[test]
    fn reserved_encodings_are_shown_raw() {
        let (mut t, root) = HostTables::new(1);
        // A block descriptor in the root: reserved at level 0 with 4 KiB granules.
        let block = descriptor::leaf(PhysAddr::new(0x4000_0000), Attributes::KERNEL_DATA, 1);
        t.table(root)[3] = block;
        let w = walk(&mut t, root, VirtAddr::new(3 << 39));
        assert_eq!(w.steps()[0].to_string(), "L0[3] 0x0060000040000709 invalid");
    }
}
