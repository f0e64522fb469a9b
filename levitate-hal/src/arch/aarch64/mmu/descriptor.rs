//! Stage 1 translation table descriptors for the 4 KiB granule (ARM ARM D8.3), described with
//! tock-registers bitfields so no other code handles bit positions.

use levitate_mm::addr::PhysAddr;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::registers::InMemoryRegister;

register_bitfields! {u64,
    /// A stage 1 table, block or page descriptor (VMSAv8-64, 4 KiB granule).
    pub STAGE1_DESCRIPTOR [
        /// Unprivileged execute-never.
        UXN OFFSET(54) NUMBITS(1) [],
        /// Privileged execute-never.
        PXN OFFSET(53) NUMBITS(1) [],
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

/// Builds a leaf descriptor: a block at levels 1-2, a page at level 3.
pub fn leaf(pa: PhysAddr, attrs: Attributes, level: usize) -> u64 {
    let d: InMemoryRegister<u64, STAGE1_DESCRIPTOR::Register> = InMemoryRegister::new(0);
    let ty = if level == 3 {
        STAGE1_DESCRIPTOR::TYPE::Table
    } else {
        STAGE1_DESCRIPTOR::TYPE::Block
    };
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
    d.write(
        STAGE1_DESCRIPTOR::VALID::SET
            + ty
            + STAGE1_DESCRIPTOR::ATTR_INDX.val(attrs.kind as u64)
            + sh
            + ap
            + STAGE1_DESCRIPTOR::AF::SET
            + STAGE1_DESCRIPTOR::OUTPUT_ADDR.val(pa.as_u64() >> 12)
            + STAGE1_DESCRIPTOR::UXN::SET
            + if attrs.executable {
                STAGE1_DESCRIPTOR::PXN::CLEAR
            } else {
                STAGE1_DESCRIPTOR::PXN::SET
            },
    );
    d.get()
}

/// Builds a table descriptor pointing at the next-level table at `pa`.
pub fn table(pa: PhysAddr) -> u64 {
    let d: InMemoryRegister<u64, STAGE1_DESCRIPTOR::Register> = InMemoryRegister::new(0);
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
    /// Nothing mapped.
    Invalid,
    /// A pointer to the next-level table.
    Table(PhysAddr),
    /// A block or page mapping.
    Leaf(PhysAddr, Attributes),
}

/// Decodes a descriptor found at `level`.
pub fn decode(raw: u64, level: usize) -> Decoded {
    let d: InMemoryRegister<u64, STAGE1_DESCRIPTOR::Register> = InMemoryRegister::new(raw);
    if !d.is_set(STAGE1_DESCRIPTOR::VALID) {
        return Decoded::Invalid;
    }
    let pa = PhysAddr::new(d.read(STAGE1_DESCRIPTOR::OUTPUT_ADDR) << 12);
    let is_table_bit = d.is_set(STAGE1_DESCRIPTOR::TYPE);
    if level < 3 && is_table_bit {
        return Decoded::Table(pa);
    }
    if level == 3 && !is_table_bit {
        // Reserved encoding at level 3: treat as invalid.
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
}
