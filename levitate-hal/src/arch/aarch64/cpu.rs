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

/// Moves the current thread of execution onto the stack whose top is `top` and calls `entry`
/// there, with an empty frame-pointer chain. Never returns.
///
/// # Safety
/// `top` must be the 16-byte aligned top of a mapped, writable stack that nothing else uses,
/// large enough for `entry`. Everything on the old stack is abandoned: no reference into it may
/// be used afterwards.
pub unsafe fn switch_stack(top: u64, entry: extern "C" fn() -> !) -> ! {
    // SAFETY: forwarded from this function's contract; the kernel runs on SP_EL0, so `sp` here
    // is the kernel stack pointer, and exceptions keep using SP_EL1.
    unsafe {
        core::arch::asm!(
            "mov sp, {top}",
            "mov x29, xzr",
            "mov x30, xzr",
            "br {entry}",
            top = in(reg) top,
            entry = in(reg) entry,
            options(noreturn)
        )
    }
}
