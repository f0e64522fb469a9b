//! Stage 1 translation table descriptors for the 4 KiB granule (ARM ARM D8.3), described with
//! tock-registers bitfields so no other code handles bit positions.

use core::fmt;
use levitate_mm::addr::PhysAddr;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::registers::InMemoryRegister;

register_bitfields! {u64,
    /// A stage 1 table, block or page descriptor (VMSAv8-64, 4 KiB granule).
    pub STAGE1_DESCRIPTOR [
        /// Unprivileged execute-never.
        UXN OFFSET(54) NUMBITS(1) [],
        /// Privileged execute-never.
        PXN OFFSET(53) NUMBITS(1) [],
        /// Contiguous hint: this entry is one of 16 adjacent entries with the same attributes
        /// and contiguous output addresses. Levitate never sets it; splitting clears it
        /// because the pieces no longer form the group it promised.
        CONTIGUOUS OFFSET(52) NUMBITS(1) [],
        /// Output address bits [47:12] (table, block or page address).
        OUTPUT_ADDR OFFSET(12) NUMBITS(36) [],
        /// Not global: the entry belongs to one ASID.
        NG OFFSET(11) NUMBITS(1) [],
        /// Access flag; clear entries fault on first use.
        AF OFFSET(10) NUMBITS(1) [],
        /// Shareability.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Access permissions.
        AP OFFSET(6) NUMBITS(2) [
            RW_EL1 = 0b00,
            RW_EL1_EL0 = 0b01,
            RO_EL1 = 0b10,
            RO_EL1_EL0 = 0b11
        ],
        /// Index into MAIR_EL1 (see `MemoryKind`).
        ATTR_INDX OFFSET(2) NUMBITS(3) [],
        /// At levels 0-2: 1 = table, 0 = block. At level 3 it must be 1 (page).
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            Table = 1
        ],
        /// Valid.
        VALID OFFSET(0) NUMBITS(1) []
    ]
}

/// Memory types, each an index into MAIR_EL1 as boot.S programs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Device-nGnRnE: strongly ordered device memory.
    DeviceStrict = 0,
    /// Device-nGnRE: MMIO registers (posted writes allowed).
    Device = 1,
    /// Normal write-back cacheable memory: RAM.
    Normal = 2,
    /// Normal non-cacheable memory.
    NormalUncached = 3,
}

impl MemoryKind {
    fn from_index(i: u64) -> Self {
        match i {
            0 => Self::DeviceStrict,
            1 => Self::Device,
            3 => Self::NormalUncached,
            _ => Self::Normal,
        }
    }
}

/// What a mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// The memory type.
    pub kind: MemoryKind,
    /// Writable by the kernel.
    pub writable: bool,
    /// Executable by the kernel.
    pub executable: bool,
}

impl Attributes {
    /// Kernel data: normal memory, read-write, never executable.
    pub const KERNEL_DATA: Self = Self {
        kind: MemoryKind::Normal,
        writable: true,
        executable: false,
    };
    /// Kernel read-only data.
    pub const KERNEL_RO: Self = Self {
        kind: MemoryKind::Normal,
        writable: false,
        executable: false,
    };
    /// Kernel text: read-only and executable.
    pub const KERNEL_TEXT: Self = Self {
        kind: MemoryKind::Normal,
        writable: false,
        executable: true,
    };
    /// MMIO registers.
    pub const DEVICE: Self = Self {
        kind: MemoryKind::Device,
        writable: true,
        executable: false,
    };
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DeviceStrict => "device-nGnRnE",
            Self::Device => "device-nGnRE",
            Self::Normal => "normal",
            Self::NormalUncached => "normal-nc",
        })
    }
}

/// As `pt` prints it: `RW NX normal`.
impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rw = if self.writable { "RW" } else { "RO" };
        let x = if self.executable { "X" } else { "NX" };
        write!(f, "{rw} {x} {}", self.kind)
    }
}

type Descriptor = InMemoryRegister<u64, STAGE1_DESCRIPTOR::Register>;

/// The encoding of an invalid descriptor: what an unmapped entry holds, and what the "break"
/// of break-before-make writes.
pub const INVALID: u64 = 0;

/// Builds a leaf descriptor: a block at levels 1-2, a page at level 3 (level 0 has no blocks
/// with the 4 KiB granule, ARM ARM D8.3.1).
pub fn leaf(pa: PhysAddr, attrs: Attributes, level: usize) -> u64 {
    debug_assert!((1..=3).contains(&level), "no leaf at level {level}");
    let d = Descriptor::new(0);
    d.write(
        STAGE1_DESCRIPTOR::VALID::SET
            + leaf_type(level)
            + STAGE1_DESCRIPTOR::AF::SET
            + STAGE1_DESCRIPTOR::OUTPUT_ADDR.val(pa.as_u64() >> 12),
    );
    with_attributes(d.get(), attrs)
}

/// Bit 1 of a leaf: 0 for a block (levels 1-2), 1 for a page (level 3).
fn leaf_type(level: usize) -> tock_registers::fields::FieldValue<u64, STAGE1_DESCRIPTOR::Register> {
    if level == 3 {
        STAGE1_DESCRIPTOR::TYPE::Table
    } else {
        STAGE1_DESCRIPTOR::TYPE::Block
    }
}

/// The leaf `raw` with its memory type, shareability and permissions replaced by `attrs`;
/// every other bit (output address, AF, nG, ...) is kept. UXN stays set: EL0 never executes
/// kernel mappings.
pub fn with_attributes(raw: u64, attrs: Attributes) -> u64 {
    let d = Descriptor::new(raw);
    let sh = match attrs.kind {
        MemoryKind::Normal | MemoryKind::NormalUncached => STAGE1_DESCRIPTOR::SH::InnerShareable,
        // Device memory is treated as outer shareable whatever this field says.
        MemoryKind::Device | MemoryKind::DeviceStrict => STAGE1_DESCRIPTOR::SH::OuterShareable,
    };
    let ap = if attrs.writable {
        STAGE1_DESCRIPTOR::AP::RW_EL1
    } else {
        STAGE1_DESCRIPTOR::AP::RO_EL1
    };
    let pxn = if attrs.executable {
        STAGE1_DESCRIPTOR::PXN::CLEAR
    } else {
        STAGE1_DESCRIPTOR::PXN::SET
    };
    d.modify(
        STAGE1_DESCRIPTOR::ATTR_INDX.val(attrs.kind as u64)
            + sh
            + ap
            + pxn
            + STAGE1_DESCRIPTOR::UXN::SET,
    );
    d.get()
}

/// The leaf at `level` that maps `pa` with every attribute of the leaf `raw`: one entry of
/// the table that replaces the block `raw` when it is split. The contiguous hint is dropped.
pub fn split_leaf(raw: u64, level: usize, pa: PhysAddr) -> u64 {
    debug_assert!((1..=3).contains(&level), "no leaf at level {level}");
    let d = Descriptor::new(raw);
    d.modify(
        leaf_type(level)
            + STAGE1_DESCRIPTOR::CONTIGUOUS::CLEAR
            + STAGE1_DESCRIPTOR::OUTPUT_ADDR.val(pa.as_u64() >> 12),
    );
    d.get()
}

/// Whether replacing the valid descriptor `old` by the valid descriptor `new` in a live table
/// needs break-before-make (ARM ARM D8.16.1, "Using break-before-make when updating
/// translation table entries"): anything but a change of permissions (AP, PXN, UXN) does:
/// memory type, cacheability, shareability, output address, block size (leaf <-> table), nG,
/// the contiguous hint (and, conservatively, the access flag). Replacing or writing an invalid
/// descriptor never does.
pub fn needs_break_before_make(old: u64, new: u64) -> bool {
    let without_permissions = |raw: u64| {
        let d = Descriptor::new(raw);
        d.modify(
            STAGE1_DESCRIPTOR::AP.val(0)
                + STAGE1_DESCRIPTOR::PXN::CLEAR
                + STAGE1_DESCRIPTOR::UXN::CLEAR,
        );
        d.get()
    };
    let valid = |raw: u64| Descriptor::new(raw).is_set(STAGE1_DESCRIPTOR::VALID);
    valid(old) && valid(new) && without_permissions(old) != without_permissions(new)
}

/// Builds a table descriptor pointing at the next-level table at `pa`.
pub fn table(pa: PhysAddr) -> u64 {
    let d = Descriptor::new(0);
    d.write(
        STAGE1_DESCRIPTOR::VALID::SET
            + STAGE1_DESCRIPTOR::TYPE::Table
            + STAGE1_DESCRIPTOR::OUTPUT_ADDR.val(pa.as_u64() >> 12),
    );
    d.get()
}

/// A decoded descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Nothing mapped: an invalid descriptor, or an encoding the walker faults on.
    Invalid,
    /// A pointer to the next-level table.
    Table(PhysAddr),
    /// A block or page mapping.
    Leaf(PhysAddr, Attributes),
}

/// Decodes a descriptor found at `level`.
pub fn decode(raw: u64, level: usize) -> Decoded {
    let d = Descriptor::new(raw);
    if !d.is_set(STAGE1_DESCRIPTOR::VALID) {
        return Decoded::Invalid;
    }
    let pa = PhysAddr::new(d.read(STAGE1_DESCRIPTOR::OUTPUT_ADDR) << 12);
    let is_table_bit = d.is_set(STAGE1_DESCRIPTOR::TYPE);
    if level < 3 && is_table_bit {
        return Decoded::Table(pa);
    }
    if level == 0 || (level == 3 && !is_table_bit) {
        // A block at level 0 (4 KiB granule without FEAT_LPA2) and bit 1 clear at level 3 are
        // reserved encodings: the walker reports a translation fault (ARM ARM D8.3.1).
        return Decoded::Invalid;
    }
    let attrs = Attributes {
        kind: MemoryKind::from_index(d.read(STAGE1_DESCRIPTOR::ATTR_INDX)),
        writable: d.read(STAGE1_DESCRIPTOR::AP) & 0b10 == 0,
        executable: !d.is_set(STAGE1_DESCRIPTOR::PXN),
    };
    Decoded::Leaf(pa, attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `raw` with nG and the contiguous hint set: bits Levitate does not otherwise model.
    fn with_ng_contiguous(raw: u64, contiguous: bool) -> u64 {
        let d = Descriptor::new(raw);
        d.modify(STAGE1_DESCRIPTOR::NG::SET);
        if contiguous {
            d.modify(STAGE1_DESCRIPTOR::CONTIGUOUS::SET);
        }
        d.get()
    }

    #[test]
    fn matches_boot_asm_block() {
        // boot.S hand-encodes Normal RWX blocks as 0x709 | UXN; the typed encoder must agree.
        let attrs = Attributes {
            kind: MemoryKind::Normal,
            writable: true,
            executable: true,
        };
        assert_eq!(
            leaf(PhysAddr::new(0x4020_0000), attrs, 2),
            0x0040_0000_4020_0709
        );
    }

    #[test]
    fn round_trips() {
        for attrs in [
            Attributes::KERNEL_DATA,
            Attributes::KERNEL_RO,
            Attributes::KERNEL_TEXT,
            Attributes::DEVICE,
        ] {
            for level in 1..=3 {
                let pa = PhysAddr::new(0x8_8000_0000);
                assert_eq!(
                    decode(leaf(pa, attrs, level), level),
                    Decoded::Leaf(pa, attrs)
                );
            }
        }
        let t = PhysAddr::new(0x4123_4000);
        assert_eq!(decode(table(t), 0), Decoded::Table(t));
        assert_eq!(decode(0, 2), Decoded::Invalid);
        assert_eq!(table(t), 0x4123_4003);
    }

    #[test]
    fn reserved_encodings_are_invalid() {
        let pa = PhysAddr::new(0x8000_0000);
        // A level 1 block read as if it sat at level 0.
        assert_eq!(
            decode(leaf(pa, Attributes::KERNEL_DATA, 1), 0),
            Decoded::Invalid
        );
        // A block encoding at level 3.
        assert_eq!(
            decode(leaf(pa, Attributes::KERNEL_DATA, 2), 3),
            Decoded::Invalid
        );
    }

    #[test]
    fn split_leaf_keeps_every_attribute() {
        let block = leaf(PhysAddr::new(0x4000_0000), Attributes::KERNEL_TEXT, 1);
        // nG survives a split; the contiguous hint is dropped on purpose.
        let page = split_leaf(
            with_ng_contiguous(block, true),
            3,
            PhysAddr::new(0x4000_5000),
        );
        assert_eq!(
            decode(page, 3),
            Decoded::Leaf(PhysAddr::new(0x4000_5000), Attributes::KERNEL_TEXT)
        );
        let expected = leaf(PhysAddr::new(0x4000_5000), Attributes::KERNEL_TEXT, 3);
        assert_eq!(page, with_ng_contiguous(expected, false));
        let mid = split_leaf(block, 2, PhysAddr::new(0x4020_0000));
        assert_eq!(
            mid,
            leaf(PhysAddr::new(0x4020_0000), Attributes::KERNEL_TEXT, 2)
        );
    }

    #[test]
    fn with_attributes_changes_only_attributes() {
        let pa = PhysAddr::new(0x1234_5000);
        let page = with_ng_contiguous(leaf(pa, Attributes::KERNEL_DATA, 3), false);
        let ro = with_attributes(page, Attributes::KERNEL_RO);
        assert_eq!(
            ro,
            with_ng_contiguous(leaf(pa, Attributes::KERNEL_RO, 3), false)
        );
        assert_eq!(with_attributes(ro, Attributes::KERNEL_DATA), page);
    }

    #[test]
    fn break_before_make_only_for_more_than_permissions() {
        let pa = PhysAddr::new(0x4000_0000);
        let data = leaf(pa, Attributes::KERNEL_DATA, 2);
        for attrs in [Attributes::KERNEL_RO, Attributes::KERNEL_TEXT] {
            assert!(!needs_break_before_make(data, leaf(pa, attrs, 2)));
        }
        let uncached = Attributes {
            kind: MemoryKind::NormalUncached,
            ..Attributes::KERNEL_DATA
        };
        assert!(needs_break_before_make(data, leaf(pa, uncached, 2)));
        assert!(needs_break_before_make(
            data,
            leaf(pa, Attributes::DEVICE, 2)
        ));
        assert!(needs_break_before_make(
            data,
            leaf(pa + (1 << 21), Attributes::KERNEL_DATA, 2)
        ));
        assert!(needs_break_before_make(data, table(PhysAddr::new(0x1000))));
        assert!(!needs_break_before_make(data, INVALID));
        assert!(!needs_break_before_make(INVALID, data));
    }

    #[test]
    fn attributes_display() {
        assert_eq!(Attributes::KERNEL_DATA.to_string(), "RW NX normal");
        assert_eq!(Attributes::KERNEL_TEXT.to_string(), "RO X normal");
        assert_eq!(Attributes::DEVICE.to_string(), "RW NX device-nGnRE");
    }
}
