//! GICv2 register blocks (Arm IHI 0048B.b, "GIC Architecture Specification v2"): the
//! distributor (4.3) and the memory-mapped CPU interface (4.4).
//!
//! Every field is accessed as a whole 32-bit word, even the byte-sized priority and target
//! fields (4.3.11, 4.3.12 allow byte access, but some SoCs' interconnects accept only 32-bit
//! accesses, as gs101's peripherals do).

use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    /// Distributor (GICD), IHI 0048B 4.1.2 Table 4-1.
    pub Distributor {
        /// GICD_CTLR (4.3.1): bit 0 enables forwarding (Group 1 in the Non-secure view).
        (0x000 => pub ctlr: ReadWrite<u32>),
        /// GICD_TYPER (4.3.2): bits 4:0 ITLinesNumber, (N+1)*32 interrupt IDs; bits 7:5
        /// CPUNumber.
        (0x004 => pub typer: ReadOnly<u32>),
        /// GICD_IIDR (4.3.3).
        (0x008 => pub iidr: ReadOnly<u32>),
        (0x00c => _reserved0),
        /// GICD_IGROUPRn (4.3.4): one bit per ID, the interrupt's group.
        (0x080 => pub igroupr: [ReadWrite<u32>; 32]),
        /// GICD_ISENABLERn (4.3.5): write 1 to enable forwarding of an ID. Word 0 (SGIs and
        /// PPIs) is banked per CPU.
        (0x100 => pub isenabler: [ReadWrite<u32>; 32]),
        /// GICD_ICENABLERn (4.3.6): write 1 to disable; reads give the enable bits.
        (0x180 => pub icenabler: [ReadWrite<u32>; 32]),
        /// GICD_ISPENDRn (4.3.7): write 1 to make an ID pending.
        (0x200 => pub ispendr: [ReadWrite<u32>; 32]),
        /// GICD_ICPENDRn (4.3.8): write 1 to clear pending.
        (0x280 => pub icpendr: [ReadWrite<u32>; 32]),
        /// GICD_ISACTIVERn (4.3.9).
        (0x300 => pub isactiver: [ReadWrite<u32>; 32]),
        /// GICD_ICACTIVERn (4.3.10).
        (0x380 => pub icactiver: [ReadWrite<u32>; 32]),
        /// GICD_IPRIORITYRn (4.3.11): one byte per ID, lower is more urgent.
        (0x400 => pub ipriorityr: [ReadWrite<u32>; 255]),
        (0x7fc => _reserved1),
        /// GICD_ITARGETSRn (4.3.12): one byte per ID, a CPU-interface bit mask. Words 0-7
        /// are read-only and banked: each byte reads as the reading CPU's own bit.
        (0x800 => pub itargetsr: [ReadWrite<u32>; 255]),
        (0xbfc => _reserved2),
        /// GICD_ICFGRn (4.3.13): two bits per ID; bit 1 of each pair set = edge-triggered.
        (0xc00 => pub icfgr: [ReadWrite<u32>; 64]),
        (0xd00 => _reserved3),
        /// GICD_SGIR (4.3.15): bits 25:24 target filter (0b10: this CPU only), 3:0 SGI ID.
        (0xf00 => pub sgir: WriteOnly<u32>),
        (0xf04 => _reserved4),
        (0x1000 => @END),
    }
}

register_structs! {
    /// CPU interface (GICC), IHI 0048B 4.1.3 Table 4-2.
    pub CpuInterface {
        /// GICC_CTLR (4.4.1): bit 0 enables signalling (Group 1 in the Non-secure view).
        (0x000 => pub ctlr: ReadWrite<u32>),
        /// GICC_PMR (4.4.2): only priorities below this value are signalled.
        (0x004 => pub pmr: ReadWrite<u32>),
        /// GICC_BPR (4.4.3): priority grouping for preemption.
        (0x008 => pub bpr: ReadWrite<u32>),
        /// GICC_IAR (4.4.4): reading acknowledges; bits 9:0 the ID (1023: spurious), 12:10
        /// the requesting CPU of an SGI.
        (0x00c => pub iar: ReadOnly<u32>),
        /// GICC_EOIR (4.4.5): write the value IAR returned to end the interrupt.
        (0x010 => pub eoir: WriteOnly<u32>),
        /// GICC_RPR (4.4.6): running priority.
        (0x014 => pub rpr: ReadOnly<u32>),
        /// GICC_HPPIR (4.4.7): highest priority pending interrupt.
        (0x018 => pub hppir: ReadOnly<u32>),
        (0x01c => _reserved0),
        (0x020 => @END),
    }
}

/// Bytes of the distributor the driver touches (4 KiB; trees often give 64 KiB).
pub const DIST_SIZE: u64 = 0x1000;
/// Bytes of the CPU interface the driver touches.
pub const CPU_SIZE: u64 = 0x1000;
