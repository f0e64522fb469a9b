//! Small CPU operations: halting, reading identification registers, and switching off the boot
//! identity map.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ReadWriteable, Readable, Writeable, DAIF, MPIDR_EL1, TCR_EL1};

/// Masks interrupts and waits forever. The clean end of a boot that cannot go on.
pub fn halt() -> ! {
    DAIF.write(DAIF::D::Masked + DAIF::A::Masked + DAIF::I::Masked + DAIF::F::Masked);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// This CPU's MPIDR_EL1 affinity fields (Aff3..Aff0), as the device tree's /cpus `reg` uses.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// Stops translation table walks through TTBR0_EL1. After boot the lower half holds only the
/// identity map of the entry code; without it a null or stray low pointer faults at once.
pub fn disable_lower_half() {
    TCR_EL1.modify(TCR_EL1::EPD0::DisableTTBR0Walks);
    barrier::isb(barrier::SY);
    // SAFETY: TLB invalidation has no memory-safety effect; it drops cached lower-half entries.
    unsafe {
        core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack));
    }
}

/// The current frame pointer (x29), where a backtrace starts.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let fp: u64;
    // SAFETY: reads a register, no memory access.
    unsafe { core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack)) };
    fp
}
