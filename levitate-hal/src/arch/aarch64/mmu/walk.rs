//! One address's walk through the translation tables, level by level, the way the hardware
//! walker reads them (ARM ARM D8.2): each level's index, raw descriptor and meaning, stopping
//! at an invalid entry or a leaf. `translate` is built on it, and its `Display` is what the
//! kernel shell's `pt ADDR` prints:
//!
//! ```text
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

/// The walk of one virtual address: at most one step per level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    va: VirtAddr,
    steps: [Step; 4],
    len: usize,
}

impl Walk {
    /// The address walked.
    pub fn va(&self) -> VirtAddr {
        self.va
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

/// Walks `va` through the tables rooted at `root`.
pub fn walk(access: &mut impl TableAccess, root: PhysAddr, va: VirtAddr) -> Walk {
    let unread = Step {
        level: 0,
        index: 0,
        raw: descriptor::INVALID,
        decoded: Decoded::Invalid,
    };
    let mut walk = Walk {
        va,
        steps: [unread; 4],
        len: 0,
    };
    if !table::canonical(va) {
        return walk;
    }
    let mut table_pa = root;
    for level in 0..LEVEL_SIZE.len() {
        let index = table::index(va.as_u64(), level);
        let raw = access.table(table_pa)[index];
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

/// One line per level, no trailing newline.
impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return write!(f, "{} is not a canonical 48-bit address", self.va);
        }
        for (i, step) in self.steps().iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{step}")?;
        }
        Ok(())
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
            "L0[0] 0x0000000010001003 table -> 0x10001000\n\
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
        assert_eq!(w.to_string(), "L0[511] invalid");
    }

    #[test]
    fn non_canonical_addresses_read_no_table() {
        let (mut t, root) = HostTables::new(1);
        let w = walk(&mut t, root, VirtAddr::new(0x0001_0000_0000_0000));
        assert!(w.steps().is_empty());
        assert_eq!(w.translation(), None);
        assert_eq!(
            w.to_string(),
            "0x1000000000000 is not a canonical 48-bit address"
        );
    }

    #[test]
    fn reserved_encodings_are_shown_raw() {
        let (mut t, root) = HostTables::new(1);
        // A block descriptor in the root: reserved at level 0 with 4 KiB granules.
        let block = descriptor::leaf(PhysAddr::new(0x4000_0000), Attributes::KERNEL_DATA, 1);
        t.table(root)[3] = block;
        let w = walk(&mut t, root, VirtAddr::new(3 << 39));
        assert_eq!(w.to_string(), "L0[3] 0x0060000040000709 invalid");
    }
}
