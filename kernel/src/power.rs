//! Powering off, rebooting, and ending a run with a status. PSCI through the device tree's
//! conduit; QEMU semihosting only when the boot arguments enabled it.

use core::sync::atomic::{AtomicBool, Ordering};
use levitate_hal::arch::aarch64::psci::{self, Conduit, PsciError};
use levitate_hal::arch::aarch64::{cpu, semihosting};
use spin::Once;

/// Exit status when a kernel test failed.
pub const EXIT_TEST_FAILED: u32 = 1;
/// Exit status when boot could not complete (no console, bad device tree).
pub const EXIT_BOOT_FAILED: u32 = 2;
/// Exit status after a panic.
pub const EXIT_PANIC: u32 = 3;

static CONDUIT: Once<Option<Conduit>> = Once::new();
static SEMIHOSTING: AtomicBool = AtomicBool::new(false);

/// Records the PSCI conduit (from `/psci`) and whether semihosting may be used.
pub fn init(conduit: Option<Conduit>, semihosting: bool) {
    CONDUIT.call_once(|| conduit);
    SEMIHOSTING.store(semihosting, Ordering::SeqCst);
}

/// Whether semihosting is enabled.
pub fn semihosting_enabled() -> bool {
    SEMIHOSTING.load(Ordering::SeqCst)
}

/// The PSCI conduit, if the device tree names one.
pub fn conduit() -> Option<Conduit> {
    CONDUIT.get().copied().flatten()
}

/// Why a power operation did not happen.
#[derive(Debug)]
pub enum PowerError {
    /// The device tree has no usable `/psci` node.
    NoPsci,
    /// The firmware refused.
    Firmware(PsciError),
}

impl core::fmt::Display for PowerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoPsci => write!(f, "the device tree describes no PSCI firmware (/psci)"),
            Self::Firmware(e) => write!(f, "firmware refused: {e}"),
        }
    }
}

/// Powers the machine off. Returns only on failure.
pub fn poweroff() -> PowerError {
    match conduit() {
        Some(c) => PowerError::Firmware(psci::system_off(c)),
        None => PowerError::NoPsci,
    }
}

/// Resets the machine. Returns only on failure.
pub fn reboot() -> PowerError {
    match conduit() {
        Some(c) => PowerError::Firmware(psci::system_reset(c)),
        None => PowerError::NoPsci,
    }
}

/// Ends a run that failed: under semihosting QEMU exits with `code`; otherwise the CPU halts
/// so the console keeps the report.
pub fn exit_failure(code: u32) -> ! {
    if semihosting_enabled() {
        semihosting::exit(code);
    }
    cpu::halt()
}

/// Ends a run that succeeded: power off, else exit through semihosting, else halt.
pub fn exit_success() -> ! {
    let err = poweroff();
    log::error!("power off failed: {err}");
    if semihosting_enabled() {
        semihosting::exit(0);
    }
    cpu::halt()
}
