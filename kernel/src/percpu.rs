//! The running CPU's identity, below everything that keeps per-CPU state (the memory manager's
//! frame caches, the interrupt and SMP code): its logical index, held in TPIDR_EL1.
//!
//! TPIDR_EL1 is the EL1 software thread ID register (ARM ARM D19.2, "TPIDR_EL1"): the hardware
//! gives it no meaning, only EL1 can write it, and it is per CPU. Levitate keeps the logical
//! CPU number there (0 = the boot CPU) rather than a pointer, so asking "which CPU am I" is one
//! register read, no memory load, and owes nothing to the module that owns the per-CPU
//! records (`smp`, above the memory manager). Per-CPU data is arrays indexed by it.

use core::sync::atomic::{AtomicU32, Ordering};
use levitate_hal::arch::aarch64::cpu;

/// Most CPUs Levitate drives (the Pixel 6 has 8).
pub const MAX_CPUS: usize = 16;

/// Bit `i`: CPU `i` runs kernel code (set by `smp` as each CPU comes online, the boot CPU's
/// by `set_boot_cpu`). Lets the layers below `smp` (the frame allocator's stash holds) know
/// whom to wait for without reaching up into `smp`.
static ONLINE: AtomicU32 = AtomicU32::new(0);
const _: () = assert!(MAX_CPUS <= 32);

/// Records CPU `index` as running (from then on other CPUs may wait for it to answer).
pub fn mark_online(index: usize) {
    if index < MAX_CPUS {
        ONLINE.fetch_or(1 << index, Ordering::Release);
    }
}

/// Whether CPU `index` runs kernel code.
pub fn is_online(index: usize) -> bool {
    index < MAX_CPUS && ONLINE.load(Ordering::Acquire) & (1 << index) != 0
}

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
    mark_online(0);
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
