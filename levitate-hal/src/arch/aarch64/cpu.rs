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

/// Lets translation table walks through TTBR0_EL1 (the boot identity map) happen again, for
/// code that must run from the identity map (the TTBR1 switch). Undo with
/// `disable_lower_half`, which also drops the entries cached meanwhile.
pub fn enable_lower_half() {
    TCR_EL1.modify(TCR_EL1::EPD0::EnableTTBR0Walks);
    barrier::isb(barrier::SY);
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

/// Sets TPIDR_EL1, the per-CPU data pointer.
pub fn set_percpu(ptr: u64) {
    use aarch64_cpu::registers::TPIDR_EL1;
    TPIDR_EL1.set(ptr);
}

/// Reads TPIDR_EL1, the per-CPU data pointer.
pub fn percpu() -> u64 {
    use aarch64_cpu::registers::TPIDR_EL1;
    TPIDR_EL1.get()
}

/// Wakes CPUs waiting in WFE.
pub fn send_event() {
    // SAFETY: SEV only signals an event; the DSB first makes earlier stores visible to the
    // woken CPUs.
    unsafe { core::arch::asm!("dsb ish", "sev", options(nostack)) };
}

/// Cleans the data cache lines covering `[start, start + len)` to the point of coherency, so a
/// CPU running with its MMU and caches off (a secondary starting up) reads what was written.
pub fn clean_dcache_to_poc(start: u64, len: u64) {
    let ctr: u64;
    // SAFETY: reads the cache type register.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let line = 4u64 << ((ctr >> 16) & 0xf); // DminLine: log2 of words per line
    let mut at = start & !(line - 1);
    while at < start + len {
        // SAFETY: cache maintenance by VA on mapped kernel memory has no other effect.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) at, options(nostack)) };
        at += line;
    }
    // SAFETY: barrier only.
    unsafe { core::arch::asm!("dsb sy", options(nostack)) };
}
