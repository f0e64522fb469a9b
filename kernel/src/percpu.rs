//! The running CPU's identity, below everything that keeps per-CPU state (the memory manager's
//! frame caches, the interrupt and SMP code): its logical index, held in TPIDR_EL1.
//!
//! TPIDR_EL1 is the EL1 software thread ID register (ARM ARM D19.2, "TPIDR_EL1"): the hardware
//! gives it no meaning, only EL1 can write it, and it is per CPU. Levitate keeps the logical
//! CPU number there (0 = the boot CPU) rather than a pointer, so asking "which CPU am I" is one
//! register read, no memory load, and owes nothing to the module that owns the per-CPU
//! records (`smp`, above the memory manager). Per-CPU data is arrays indexed by it.

use levitate_hal::arch::aarch64::cpu;

/// Most CPUs Levitate drives (the Pixel 6 has 8).
pub const MAX_CPUS: usize = 16;

/// This CPU's logical index. Valid once `set_boot_cpu` ran (the boot CPU, first thing at
/// boot) or boot.S set TPIDR_EL1 from the start block (a secondary, before any Rust code).
#[inline]
pub fn index() -> usize {
    cpu::percpu() as usize
}

/// Makes the running CPU CPU 0 and tells the HAL's masked-interval recorder how to find the
/// running CPU (it takes no lock and reads one register, as the recorder requires).
pub fn set_boot_cpu() {
    cpu::set_percpu(0);
    levitate_hal::sync::set_cpu_index(index);
}

/// The value a secondary CPU's boot.S start block puts in TPIDR_EL1 for CPU `index`.
pub fn tpidr_for(index: usize) -> u64 {
    assert!(
        index < MAX_CPUS,
        "per-CPU invariant: CPU index {index} out of range"
    );
    index as u64
}
