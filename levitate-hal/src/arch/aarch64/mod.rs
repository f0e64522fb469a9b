//! aarch64 support: boot entry, exception vectors, system registers, PSCI, the generic timer,
//! semihosting and the MMU. Modules that execute aarch64 instructions compile only for the
//! bare-metal target; their pure halves (decoders, descriptor encodings) are host-tested.

pub mod esr;
pub mod exception;
pub mod mmu;
pub mod psci;

#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
pub mod semihosting;
#[cfg(target_os = "none")]
pub mod timer;
