//! The GIC driver proper (bare-metal target only): initialising the distributor once and each
//! CPU's interface, acknowledging and ending interrupts, and per-ID enable, pending and trigger
//! control, for GICv2 (IHI 0048B) and GICv3 (IHI 0069H).

use super::{bit_of, find_redistributor, mpidr_to_irouter, mpidr_to_typer_affinity};
use super::{v2, v3, RedistLayout, DEFAULT_PRIORITY};
use crate::drivers::mmio::MmioBlock;
use aarch64_cpu::asm::barrier;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};
use levitate_mm::dtb::interrupts::{IntId, Trigger};
use spin::Mutex;
use tock_registers::interfaces::{Readable, Writeable};

/// Most CPUs whose redistributor the driver records (the kernel's MAX_CPUS).
pub const MAX_CPUS: usize = 16;
/// Most redistributor regions (`#redistributor-regions`) used.
pub const MAX_REDIST_REGIONS: usize = 4;

/// Polls a "write pending" or "asleep" bit at most this often before giving up: a GIC that
/// never settles is reported, not waited on forever.
const POLL_LIMIT: u32 = 1_000_000;

/// Why a CPU's interface could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// No redistributor's GICR_TYPER names this CPU's affinity.
    NoRedistributor {
        /// The MPIDR of the CPU.
        mpidr: u64,
    },
    /// ICC_SRE_EL1.SRE reads 0: the system-register interface is disabled from a higher EL.
    NoSystemRegisters,
    /// The redistributor never reported the CPU awake (GICR_WAKER.ChildrenAsleep stayed 1).
    StillAsleep,
    /// The logical CPU number is past `MAX_CPUS`.
    TooManyCpus(usize),
}

impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRedistributor { mpidr } => {
                write!(f, "no GICv3 redistributor for MPIDR {mpidr:#x}")
            }
            Self::NoSystemRegisters => write!(
                f,
                "the GICv3 system-register interface is disabled (ICC_SRE_EL1.SRE = 0)"
            ),
            Self::StillAsleep => write!(f, "the redistributor did not wake (GICR_WAKER)"),
            Self::TooManyCpus(n) => write!(f, "CPU {n} is past the driver's {MAX_CPUS}"),
        }
    }
}

/// One mapped redistributor region.
#[derive(Clone, Copy, Debug)]
pub struct RedistRegion {
    /// Virtual address of the first redistributor.
    pub va: usize,
    /// Bytes mapped.
    pub len: usize,
}

// One instance lives in a static for the kernel's lifetime: the size difference is moot.
#[allow(clippy::large_enum_variant)]
enum Hw {
    V2 {
        dist: MmioBlock<v2::Distributor>,
        cpu: MmioBlock<v2::CpuInterface>,
    },
    V3 {
        dist: MmioBlock<v3::Distributor>,
        regions: [Option<RedistRegion>; MAX_REDIST_REGIONS],
        layout: RedistLayout,
        /// Each CPU's RD_base virtual address, 0 until its `init_cpu` found it.
        rd: [AtomicUsize; MAX_CPUS],
    },
}

/// A GICv2 or GICv3.
pub struct Gic {
    hw: Hw,
    /// Serialises read-modify-write of shared configuration registers (priorities, targets,
    /// trigger configuration). Taken only in ordinary kernel context (init, registration),
    /// never by the IRQ path, so it cannot deadlock against an interrupt. A leaf lock.
    config_lock: Mutex<()>,
}

// SAFETY: see the module comment of `gic`: every register the driver touches from more than
// one CPU at once is banked or write-1-to-set/clear; read-modify-write sequences run under
// `config_lock`. The MMIO blocks stay mapped for the kernel's lifetime (`new_*` contracts).
unsafe impl Sync for Gic {}

fn rwp_wait(read: impl Fn() -> u32, bit: u32) {
    for _ in 0..POLL_LIMIT {
        if read() & bit == 0 {
            return;
        }
        core::hint::spin_loop();
    }
    log::warn!("gic: register write still pending after {POLL_LIMIT} polls");
}

/// Replaces byte `id % 4` of a 4-byte-per-word register array entry.
fn with_byte(word: u32, id: u32, byte: u8) -> u32 {
    let shift = (id % 4) * 8;
    (word & !(0xff << shift)) | (u32::from(byte) << shift)
}

impl Gic {
    /// A GICv2 with its distributor and CPU interface mapped at `dist` and `cpu`.
    ///
    /// # Safety
    /// Both must be Device mappings of a GICv2's distributor (`v2::DIST_SIZE` bytes) and CPU
    /// interface (`v2::CPU_SIZE`), kept mapped for the kernel's lifetime and used by no other
    /// code.
    pub unsafe fn new_v2(dist: usize, cpu: usize) -> Self {
        Self {
            // SAFETY: the caller's contract.
            hw: Hw::V2 {
                dist: unsafe { MmioBlock::new(dist) },
                cpu: unsafe { MmioBlock::new(cpu) },
            },
            config_lock: Mutex::new(()),
        }
    }

    /// A GICv3 with its distributor at `dist` and redistributor regions `regions`.
    ///
    /// # Safety
    /// `dist` must map a GICv3 distributor (`v3::DIST_SIZE` bytes) and each region `len` bytes
    /// of contiguous redistributors, as Device memory for the kernel's lifetime, used by no
    /// other code.
    pub unsafe fn new_v3(dist: usize, regions: &[RedistRegion], stride: usize) -> Self {
        let mut r = [None; MAX_REDIST_REGIONS];
        for (slot, region) in r.iter_mut().zip(regions) {
            *slot = Some(*region);
        }
        Self {
            hw: Hw::V3 {
                // SAFETY: the caller's contract.
                dist: unsafe { MmioBlock::new(dist) },
                regions: r,
                layout: RedistLayout { stride },
                rd: [const { AtomicUsize::new(0) }; MAX_CPUS],
            },
            config_lock: Mutex::new(()),
        }
    }

    /// "GICv2" or "GICv3", for `irqs`.
    pub fn name(&self) -> &'static str {
        match self.hw {
            Hw::V2 { .. } => "GICv2",
            Hw::V3 { .. } => "GICv3",
        }
    }

    /// Interrupt IDs the distributor implements: 32 * (GICD_TYPER.ITLinesNumber + 1), at most
    /// 1020 (IHI 0048B 4.3.2, IHI 0069H 12.9.38).
    pub fn lines(&self) -> u32 {
        let typer = match &self.hw {
            Hw::V2 { dist, .. } => dist.typer.get(),
            Hw::V3 { dist, .. } => dist.typer.get(),
        };
        (32 * ((typer & 0x1f) + 1)).min(IntId::LIMIT)
    }

    /// Sets up the distributor once, from the boot CPU: every SPI disabled, not pending, at
    /// `DEFAULT_PRIORITY`, routed to the boot CPU, in Group 1 on GICv3; then forwarding on.
    pub fn init_distributor(&self, boot_mpidr: u64) {
        let _config = self.config_lock.lock();
        let words = (self.lines() / 32) as usize;
        let prio = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
        match &self.hw {
            Hw::V2 { dist, .. } => {
                dist.ctlr.set(0);
                // Words 0-7 of ITARGETSR are banked and read as this CPU's own bit; a
                // uniprocessor GIC may read them as zero (IHI 0048B 4.3.12): CPU interface 0.
                let me = match dist.itargetsr[0].get() & 0xff {
                    0 => 1,
                    bit => bit,
                };
                let targets = me * 0x0101_0101;
                for w in 1..words {
                    dist.icenabler[w].set(!0);
                    dist.icpendr[w].set(!0);
                }
                for w in 8..words * 8 {
                    dist.ipriorityr[w].set(prio);
                    dist.itargetsr[w].set(targets);
                }
                dist.ctlr.set(1);
            }
            Hw::V3 { dist, .. } => {
                dist.ctlr.set(0);
                rwp_wait(|| dist.ctlr.get(), 1 << 31);
                for w in 1..words {
                    dist.igroupr[w].set(!0);
                    dist.igrpmodr[w].set(0);
                    dist.icenabler[w].set(!0);
                    dist.icpendr[w].set(!0);
                }
                rwp_wait(|| dist.ctlr.get(), 1 << 31);
                for w in 8..words * 8 {
                    dist.ipriorityr[w].set(prio);
                }
                let route = mpidr_to_irouter(boot_mpidr);
                for id in 32..self.lines() {
                    dist.irouter[(id - 32) as usize].set(route);
                }
                // ARE (bit 4) and EnableGrp1 (bit 1; EnableGrp1A in the Non-secure view).
                dist.ctlr.set(1 << 4 | 1 << 1);
                rwp_wait(|| dist.ctlr.get(), 1 << 31);
            }
        }
    }

    /// Brings up the calling CPU's interface (and, on GICv3, finds and wakes its
    /// redistributor): SGIs and PPIs disabled at `DEFAULT_PRIORITY`, every priority unmasked.
    /// `cpu` is the kernel's logical number, `mpidr` this CPU's MPIDR_EL1.
    pub fn init_cpu(&self, cpu: usize, mpidr: u64) -> Result<(), GicError> {
        if cpu >= MAX_CPUS {
            return Err(GicError::TooManyCpus(cpu));
        }
        let prio = u32::from_ne_bytes([DEFAULT_PRIORITY; 4]);
        match &self.hw {
            Hw::V2 { dist, cpu: gicc } => {
                dist.icenabler[0].set(0xffff_0000);
                for w in 0..8 {
                    dist.ipriorityr[w].set(prio);
                }
                gicc.pmr.set(0xff);
                gicc.bpr.set(0);
                gicc.ctlr.set(1);
            }
            Hw::V3 {
                regions,
                layout,
                rd,
                ..
            } => {
                let affinity = mpidr_to_typer_affinity(mpidr);
                let base = regions
                    .iter()
                    .flatten()
                    .find_map(|r| {
                        find_redistributor(r.len, *layout, affinity, |off| {
                            // SAFETY: `find_redistributor` reads only offsets with a whole
                            // RD_base frame inside the mapped region (`new_v3`'s contract).
                            let frame: MmioBlock<v3::RdBase> =
                                unsafe { MmioBlock::new(r.va + off) };
                            frame.typer.get()
                        })
                        .map(|off| r.va + off)
                    })
                    .ok_or(GicError::NoRedistributor { mpidr })?;
                rd[cpu].store(base, Ordering::Release);
                let (rd_base, sgi) = self.redist(base);
                // Wake the redistributor (IHI 0069H 12.11.39).
                rd_base.waker.set(rd_base.waker.get() & !(1 << 1));
                let mut awake = false;
                for _ in 0..POLL_LIMIT {
                    if rd_base.waker.get() & (1 << 2) == 0 {
                        awake = true;
                        break;
                    }
                    core::hint::spin_loop();
                }
                if !awake {
                    return Err(GicError::StillAsleep);
                }
                sgi.igroupr0.set(!0);
                sgi.igrpmodr0.set(0);
                sgi.icenabler0.set(!0);
                rwp_wait(|| rd_base.ctlr.get(), 1 << 3);
                for w in 0..8 {
                    sgi.ipriorityr[w].set(prio);
                }
                v3::icc::set_sre(v3::icc::sre() | 1);
                barrier::isb(barrier::SY);
                if v3::icc::sre() & 1 == 0 {
                    return Err(GicError::NoSystemRegisters);
                }
                v3::icc::set_pmr(0xff);
                v3::icc::set_bpr1(0);
                v3::icc::eoi_mode_drop_and_deactivate();
                v3::icc::set_igrpen1(1);
                barrier::isb(barrier::SY);
            }
        }
        Ok(())
    }

    fn redist(&self, base: usize) -> (MmioBlock<v3::RdBase>, MmioBlock<v3::SgiBase>) {
        // SAFETY: `base` is an RD_base `init_cpu` found inside a mapped region; its SGI_base
        // frame follows it (IHI 0069H 12.10) and `find_redistributor` checked both fit.
        unsafe { (MmioBlock::new(base), MmioBlock::new(base + v3::FRAME_SIZE)) }
    }

    /// This CPU's SGI_base frame on GICv3, if `init_cpu` ran on it.
    fn sgi_frame(&self, cpu: usize) -> Option<MmioBlock<v3::SgiBase>> {
        match &self.hw {
            Hw::V3 { rd, .. } => {
                let base = rd.get(cpu)?.load(Ordering::Acquire);
                (base != 0).then(|| self.redist(base).1)
            }
            Hw::V2 { .. } => None,
        }
    }

    /// Acknowledges the highest-priority pending interrupt: the raw IAR value, which
    /// `end_of_interrupt` needs back. `intid_of` extracts the ID.
    pub fn acknowledge(&self) -> u32 {
        match &self.hw {
            Hw::V2 { cpu, .. } => cpu.iar.get(),
            Hw::V3 { .. } => {
                let iar = v3::icc::iar1() as u32;
                // Order the acknowledge before the handler's accesses (as Linux does).
                barrier::dsb(barrier::SY);
                iar
            }
        }
    }

    /// The interrupt ID in a raw IAR value.
    pub fn intid_of(&self, iar: u32) -> u32 {
        match self.hw {
            Hw::V2 { .. } => iar & 0x3ff,
            Hw::V3 { .. } => iar & 0xff_ffff,
        }
    }

    /// Ends an interrupt `acknowledge` returned (priority drop and deactivation: EOImode 0).
    pub fn end_of_interrupt(&self, iar: u32) {
        match &self.hw {
            Hw::V2 { cpu, .. } => cpu.eoir.set(iar),
            Hw::V3 { .. } => {
                v3::icc::set_eoir1(u64::from(iar));
                barrier::isb(barrier::SY);
            }
        }
    }

    /// Applies `f` to the one-bit-per-ID register array that holds `intid` for `cpu`: the
    /// distributor's for SPIs (and GICv2's banked word 0), the CPU's redistributor for GICv3
    /// SGIs and PPIs. `which` picks the register.
    fn bit_reg(&self, intid: IntId, cpu: usize, which: BitReg) -> Option<(RegRef<'_>, u32)> {
        let (word, bit) = bit_of(intid.as_u32());
        match &self.hw {
            Hw::V2 { dist, .. } => Some((RegRef::V2(dist, which, word), bit)),
            Hw::V3 { dist, .. } if !intid.is_private() => {
                Some((RegRef::V3Dist(dist, which, word), bit))
            }
            Hw::V3 { .. } => Some((RegRef::V3Sgi(self.sgi_frame(cpu)?, which), bit)),
        }
    }

    /// Enables forwarding of `intid` (for an SGI or PPI: on `cpu` only).
    pub fn enable(&self, intid: IntId, cpu: usize) {
        if let Some((r, bit)) = self.bit_reg(intid, cpu, BitReg::SetEnable) {
            r.write(bit);
        }
    }

    /// Disables forwarding of `intid` (for an SGI or PPI: on `cpu` only). Safe from the IRQ
    /// path: one write-1-to-clear store.
    pub fn disable(&self, intid: IntId, cpu: usize) {
        if let Some((r, bit)) = self.bit_reg(intid, cpu, BitReg::ClearEnable) {
            r.write(bit);
        }
    }

    /// Whether `intid` is enabled (on `cpu`, for an SGI or PPI).
    pub fn is_enabled(&self, intid: IntId, cpu: usize) -> bool {
        self.bit_reg(intid, cpu, BitReg::SetEnable)
            .is_some_and(|(r, bit)| r.read() & bit != 0)
    }

    /// Makes `intid` pending (GICD_ISPENDR / GICR_ISPENDR0): how tests raise an interrupt.
    pub fn set_pending(&self, intid: IntId, cpu: usize) {
        if let Some((r, bit)) = self.bit_reg(intid, cpu, BitReg::SetPending) {
            r.write(bit);
        }
    }

    /// Clears a pending `intid`.
    pub fn clear_pending(&self, intid: IntId, cpu: usize) {
        if let Some((r, bit)) = self.bit_reg(intid, cpu, BitReg::ClearPending) {
            r.write(bit);
        }
    }

    /// Sets `intid`'s trigger (GICD_ICFGR / GICR_ICFGR1; SGIs are always edge and are left
    /// alone). For a PPI this configures `cpu`'s copy. Ordinary kernel context only.
    pub fn configure(&self, intid: IntId, trigger: Trigger, cpu: usize) {
        let id = intid.as_u32();
        if id < 16 {
            return;
        }
        let _config = self.config_lock.lock();
        let shift = (id % 16) * 2 + 1;
        let edge = u32::from(trigger == Trigger::Edge) << shift;
        let update = |w: u32| (w & !(1 << shift)) | edge;
        match &self.hw {
            Hw::V2 { dist, .. } => {
                let r = &dist.icfgr[(id / 16) as usize];
                r.set(update(r.get()));
            }
            Hw::V3 { dist, .. } if id >= 32 => {
                let r = &dist.icfgr[(id / 16) as usize];
                r.set(update(r.get()));
            }
            Hw::V3 { .. } => {
                if let Some(sgi) = self.sgi_frame(cpu) {
                    sgi.icfgr[1].set(update(sgi.icfgr[1].get()));
                }
            }
        }
    }

    /// Sets `intid`'s priority byte. Ordinary kernel context only.
    pub fn set_priority(&self, intid: IntId, priority: u8, cpu: usize) {
        let id = intid.as_u32();
        let _config = self.config_lock.lock();
        let word = (id / 4) as usize;
        match &self.hw {
            Hw::V2 { dist, .. } => {
                let r = &dist.ipriorityr[word];
                r.set(with_byte(r.get(), id, priority));
            }
            Hw::V3 { dist, .. } if id >= 32 => {
                let r = &dist.ipriorityr[word];
                r.set(with_byte(r.get(), id, priority));
            }
            Hw::V3 { .. } => {
                if let Some(sgi) = self.sgi_frame(cpu) {
                    let r = &sgi.ipriorityr[word];
                    r.set(with_byte(r.get(), id, priority));
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum BitReg {
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
}

enum RegRef<'a> {
    V2(&'a MmioBlock<v2::Distributor>, BitReg, usize),
    V3Dist(&'a MmioBlock<v3::Distributor>, BitReg, usize),
    V3Sgi(MmioBlock<v3::SgiBase>, BitReg),
}

impl RegRef<'_> {
    fn reg(&self) -> &tock_registers::registers::ReadWrite<u32> {
        match self {
            RegRef::V2(d, which, w) => match which {
                BitReg::SetEnable => &d.isenabler[*w],
                BitReg::ClearEnable => &d.icenabler[*w],
                BitReg::SetPending => &d.ispendr[*w],
                BitReg::ClearPending => &d.icpendr[*w],
            },
            RegRef::V3Dist(d, which, w) => match which {
                BitReg::SetEnable => &d.isenabler[*w],
                BitReg::ClearEnable => &d.icenabler[*w],
                BitReg::SetPending => &d.ispendr[*w],
                BitReg::ClearPending => &d.icpendr[*w],
            },
            RegRef::V3Sgi(s, which) => match which {
                BitReg::SetEnable => &s.isenabler0,
                BitReg::ClearEnable => &s.icenabler0,
                BitReg::SetPending => &s.ispendr0,
                BitReg::ClearPending => &s.icpendr0,
            },
        }
    }
    fn write(&self, bit: u32) {
        self.reg().set(bit);
    }
    fn read(&self) -> u32 {
        self.reg().get()
    }
}
