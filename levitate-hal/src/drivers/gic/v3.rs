//! GICv3 register blocks (Arm IHI 0069H, "GIC Architecture Specification v3 and v4"): the
//! distributor (12.9), the redistributor's RD_base and SGI_base frames (12.10, 12.11), and the
//! system-register CPU interface (12.2), by encoded name (see `icc`).

use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_structs! {
    /// Distributor (GICD), IHI 0069H 12.8 Table 12-25.
    pub Distributor {
        /// GICD_CTLR (12.9.4). With one security state or from the Non-secure side: bit 1
        /// EnableGrp1(A), bit 4 ARE (affinity routing), bit 31 RWP (a write is in progress).
        (0x0000 => pub ctlr: ReadWrite<u32>),
        /// GICD_TYPER (12.9.38): bits 4:0 ITLinesNumber, 32*(N+1) interrupt IDs.
        (0x0004 => pub typer: ReadOnly<u32>),
        /// GICD_IIDR (12.9.24).
        (0x0008 => pub iidr: ReadOnly<u32>),
        (0x000c => _reserved0),
        /// GICD_IGROUPRn (12.9.15): 1 = Group 1 (Non-secure when two security states).
        (0x0080 => pub igroupr: [ReadWrite<u32>; 32]),
        /// GICD_ISENABLERn (12.9.20): write 1 to enable an SPI (word 0 is RES0 with ARE).
        (0x0100 => pub isenabler: [ReadWrite<u32>; 32]),
        /// GICD_ICENABLERn (12.9.7): write 1 to disable; reads give the enable bits.
        (0x0180 => pub icenabler: [ReadWrite<u32>; 32]),
        /// GICD_ISPENDRn (12.9.22): write 1 to make an SPI pending.
        (0x0200 => pub ispendr: [ReadWrite<u32>; 32]),
        /// GICD_ICPENDRn (12.9.9).
        (0x0280 => pub icpendr: [ReadWrite<u32>; 32]),
        /// GICD_ISACTIVERn (12.9.18).
        (0x0300 => pub isactiver: [ReadWrite<u32>; 32]),
        /// GICD_ICACTIVERn (12.9.5).
        (0x0380 => pub icactiver: [ReadWrite<u32>; 32]),
        /// GICD_IPRIORITYRn (12.9.17): a byte per ID, lower is more urgent.
        (0x0400 => pub ipriorityr: [ReadWrite<u32>; 255]),
        (0x07fc => _reserved1),
        /// GICD_ICFGRn (12.9.10): two bits per ID; bit 1 of each pair set = edge-triggered.
        (0x0c00 => pub icfgr: [ReadWrite<u32>; 64]),
        /// GICD_IGRPMODRn (12.9.16): with IGROUPR, selects Secure Group 1; 0 for Non-secure.
        (0x0d00 => pub igrpmodr: [ReadWrite<u32>; 32]),
        (0x0d80 => _reserved2),
        /// GICD_IROUTER<n> for n = 32..1019 (12.9.35): the affinity an SPI is routed to
        /// (bits 39:32 Aff3, 23:0 Aff2.Aff1.Aff0; bit 31 Interrupt_Routing_Mode = any CPU).
        (0x6100 => pub irouter: [ReadWrite<u64>; 988]),
        (0x7fe0 => _reserved3),
        (0x10000 => @END),
    }
}

register_structs! {
    /// Redistributor RD_base frame (12.10, Table 12-27).
    pub RdBase {
        /// GICR_CTLR (12.11.2).
        (0x0000 => pub ctlr: ReadWrite<u32>),
        /// GICR_IIDR (12.11.16).
        (0x0004 => pub iidr: ReadOnly<u32>),
        /// GICR_TYPER (12.11.37): bits 63:32 the affinity (Aff3.Aff2.Aff1.Aff0) of the PE
        /// this redistributor serves, bit 4 Last (the last in its region), bit 1 VLPIS (GICv4:
        /// two more frames, a stride of 256 KiB).
        (0x0008 => pub typer: ReadOnly<u64>),
        /// GICR_STATUSR (12.11.35).
        (0x0010 => pub statusr: ReadWrite<u32>),
        /// GICR_WAKER (12.11.39): bit 1 ProcessorSleep (clear it to wake the PE's interface),
        /// bit 2 ChildrenAsleep (reads 0 once awake).
        (0x0014 => pub waker: ReadWrite<u32>),
        (0x0018 => _reserved0),
        (0x10000 => @END),
    }
}

register_structs! {
    /// Redistributor SGI_base frame, 64 KiB after RD_base (12.10, Table 12-29): the banked
    /// state of this PE's SGIs and PPIs (IDs 0-31).
    pub SgiBase {
        (0x0000 => _reserved0),
        /// GICR_IGROUPR0 (12.11.9).
        (0x0080 => pub igroupr0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        /// GICR_ISENABLER0 (12.11.27).
        (0x0100 => pub isenabler0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        /// GICR_ICENABLER0 (12.11.5).
        (0x0180 => pub icenabler0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        /// GICR_ISPENDR0 (12.11.31).
        (0x0200 => pub ispendr0: ReadWrite<u32>),
        (0x0204 => _reserved4),
        /// GICR_ICPENDR0 (12.11.7).
        (0x0280 => pub icpendr0: ReadWrite<u32>),
        (0x0284 => _reserved5),
        /// GICR_ISACTIVER0 (12.11.25).
        (0x0300 => pub isactiver0: ReadWrite<u32>),
        (0x0304 => _reserved6),
        /// GICR_ICACTIVER0 (12.11.3).
        (0x0380 => pub icactiver0: ReadWrite<u32>),
        (0x0384 => _reserved7),
        /// GICR_IPRIORITYR<n> (12.11.22): a byte per ID 0-31.
        (0x0400 => pub ipriorityr: [ReadWrite<u32>; 8]),
        (0x0420 => _reserved8),
        /// GICR_ICFGR0 (SGIs, read-only edge) and GICR_ICFGR1 (PPIs) (12.11.13, 12.11.14).
        (0x0c00 => pub icfgr: [ReadWrite<u32>; 2]),
        (0x0c08 => _reserved9),
        /// GICR_IGRPMODR0 (12.11.11).
        (0x0d00 => pub igrpmodr0: ReadWrite<u32>),
        (0x0d04 => _reserved10),
        (0x10000 => @END),
    }
}

/// Size of the distributor.
pub const DIST_SIZE: u64 = 0x1_0000;
/// Size of one RD_base or SGI_base frame.
pub const FRAME_SIZE: usize = 0x1_0000;

/// The system-register CPU interface (IHI 0069H 12.2). aarch64-cpu 10 has none of the EL1
/// ICC registers in writable form (its ICC_CTLR_EL1 is read-only), so all are named by their
/// encodings (op0_op1_CRn_CRm_op2, IHI 0069H Table 12-1), which any assembler accepts.
#[cfg(target_arch = "aarch64")]
pub mod icc {
    use aarch64_cpu::asm::barrier;

    macro_rules! sysreg {
        ($read:ident, $write:ident, $enc:literal, $doc:literal) => {
            #[doc = $doc]
            #[allow(dead_code)]
            #[inline(always)]
            pub fn $read() -> u64 {
                let v: u64;
                // SAFETY: reads a GIC CPU-interface register, which has no memory effects;
                // only called once ICC_SRE_EL1.SRE is set (or to set it).
                unsafe { core::arch::asm!(concat!("mrs {}, ", $enc), out(reg) v, options(nomem, nostack)) };
                v
            }
            #[doc = $doc]
            #[allow(dead_code)]
            #[inline(always)]
            pub fn $write(v: u64) {
                // SAFETY: writes a GIC CPU-interface register; the callers' contracts (the
                // driver) say which values are legal. No memory is touched.
                unsafe { core::arch::asm!(concat!("msr ", $enc, ", {}"), in(reg) v, options(nomem, nostack)) };
            }
        };
    }

    sysreg!(
        sre,
        set_sre,
        "S3_0_C12_C12_5",
        "ICC_SRE_EL1 (12.2.15): bit 0 SRE enables the system-register interface."
    );
    sysreg!(
        pmr,
        set_pmr,
        "S3_0_C4_C6_0",
        "ICC_PMR_EL1 (12.2.11): priority mask."
    );
    sysreg!(
        bpr1,
        set_bpr1,
        "S3_0_C12_C12_3",
        "ICC_BPR1_EL1 (12.2.5): Group 1 binary point."
    );
    sysreg!(
        igrpen1,
        set_igrpen1,
        "S3_0_C12_C12_7",
        "ICC_IGRPEN1_EL1 (12.2.13): bit 0 enables Group 1."
    );
    sysreg!(
        iar1,
        _set_iar1,
        "S3_0_C12_C12_0",
        "ICC_IAR1_EL1 (12.2.10): acknowledge; bits 23:0 the ID."
    );
    sysreg!(
        _eoir1,
        set_eoir1,
        "S3_0_C12_C12_1",
        "ICC_EOIR1_EL1 (12.2.8): end of interrupt."
    );
    sysreg!(
        ctlr,
        set_ctlr,
        "S3_0_C12_C12_4",
        "ICC_CTLR_EL1 (12.2.6): bit 1 EOImode."
    );
    sysreg!(
        _sgi1r,
        set_sgi1r,
        "S3_0_C12_C11_5",
        "ICC_SGI1R_EL1 (12.2.19): generate a Group 1 SGI."
    );

    /// Sets ICC_CTLR_EL1.EOImode to 0: a write to EOIR both drops priority and deactivates.
    pub fn eoi_mode_drop_and_deactivate() {
        set_ctlr(ctlr() & !(1 << 1));
        barrier::isb(barrier::SY);
    }
}
