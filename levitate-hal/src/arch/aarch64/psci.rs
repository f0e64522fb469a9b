//! PSCI (Arm Power State Coordination Interface, DEN0022) calls: power off, reset, CPU_ON,
//! CPU_OFF and AFFINITY_INFO.
//! The conduit (HVC or SMC) comes from the device tree's `/psci` node, never a guess: QEMU says
//! hvc when it enters at EL1 and smc when it emulates EL2/EL3; phones say smc.

use core::fmt;

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0`: firmware at EL2.
    Hvc,
    /// `smc #0`: firmware at EL3.
    Smc,
}

impl Conduit {
    /// Parses the `/psci` node's `method` property.
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "hvc" => Some(Self::Hvc),
            "smc" => Some(Self::Smc),
            _ => None,
        }
    }
}

/// PSCI function identifiers (SMC64 where the call takes addresses).
pub mod function {
    /// PSCI_VERSION.
    pub const VERSION: u32 = 0x8400_0000;
    /// CPU_OFF.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// CPU_ON (SMC64).
    pub const CPU_ON: u32 = 0xc400_0003;
    /// AFFINITY_INFO (SMC64).
    pub const AFFINITY_INFO: u32 = 0xc400_0004;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
}

/// A PSCI error return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PsciError(pub i64);

impl fmt::Display for PsciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.0 {
            -1 => "NOT_SUPPORTED",
            -2 => "INVALID_PARAMETERS",
            -3 => "DENIED",
            -4 => "ALREADY_ON",
            -5 => "ON_PENDING",
            -6 => "INTERNAL_FAILURE",
            -7 => "NOT_PRESENT",
            -8 => "DISABLED",
            -9 => "INVALID_ADDRESS",
            _ => "unknown error",
        };
        write!(f, "PSCI error {} ({what})", self.0)
    }
}

/// What AFFINITY_INFO says of a CPU (DEN0022 5.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityState {
    /// Running (CPU_ON completed).
    On,
    /// Off: never started, or turned off.
    Off,
    /// CPU_ON accepted, the CPU not yet running.
    OnPending,
}

impl AffinityState {
    /// Decodes AFFINITY_INFO's non-negative return value.
    pub fn from_return(ret: i64) -> Option<Self> {
        match ret {
            0 => Some(Self::On),
            1 => Some(Self::Off),
            2 => Some(Self::OnPending),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::OnPending => "on pending",
        }
    }
}

/// Converts a PSCI return value into a result.
pub fn result(ret: i64) -> Result<i64, PsciError> {
    if ret < 0 {
        Err(PsciError(ret))
    } else {
        Ok(ret)
    }
}

#[cfg(target_os = "none")]
mod imp {
    use super::{function, result, AffinityState, Conduit, PsciError};

    /// Makes a PSCI call with up to three arguments.
    pub fn call(conduit: Conduit, func: u32, a1: u64, a2: u64, a3: u64) -> i64 {
        let ret: i64;
        // SAFETY: a PSCI call follows the SMC Calling Convention: x0-x3 carry the function and
        // arguments, x0 the result, and the firmware may clobber x4-x17. It touches no memory
        // of ours.
        unsafe {
            match conduit {
                Conduit::Hvc => core::arch::asm!(
                    "hvc #0",
                    inout("x0") func as u64 => ret,
                    inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                    out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                    out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                    out("x16") _, out("x17") _,
                    options(nostack)
                ),
                Conduit::Smc => core::arch::asm!(
                    "smc #0",
                    inout("x0") func as u64 => ret,
                    inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                    out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                    out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                    out("x16") _, out("x17") _,
                    options(nostack)
                ),
            }
        }
        ret
    }

    /// The firmware's PSCI version as (major, minor).
    pub fn version(conduit: Conduit) -> Result<(u16, u16), PsciError> {
        let v = result(call(conduit, function::VERSION, 0, 0, 0))?;
        Ok(((v >> 16) as u16, v as u16))
    }

    /// Powers the system off. Returns only if the firmware refuses.
    pub fn system_off(conduit: Conduit) -> PsciError {
        PsciError(call(conduit, function::SYSTEM_OFF, 0, 0, 0))
    }

    /// Starts the CPU whose MPIDR affinity is `target` at physical address `entry` with
    /// `context` in x0, MMU off (DEN0022 5.6 CPU_ON).
    pub fn cpu_on(
        conduit: Conduit,
        target: u64,
        entry: u64,
        context: u64,
    ) -> Result<(), PsciError> {
        result(call(conduit, function::CPU_ON, target, entry, context)).map(|_| ())
    }

    /// Whether the CPU with MPIDR affinity `target` is on, off or starting (DEN0022 5.8
    /// AFFINITY_INFO, lowest affinity level 0: that CPU alone).
    pub fn affinity_info(conduit: Conduit, target: u64) -> Result<AffinityState, PsciError> {
        let ret = result(call(conduit, function::AFFINITY_INFO, target, 0, 0))?;
        AffinityState::from_return(ret).ok_or(PsciError(ret))
    }

    /// Turns the calling CPU off (DEN0022 5.5 CPU_OFF). Returns only if the firmware refuses.
    pub fn cpu_off(conduit: Conduit) -> PsciError {
        PsciError(call(conduit, function::CPU_OFF, 0, 0, 0))
    }

    /// Resets the system. Returns only if the firmware refuses.
    pub fn system_reset(conduit: Conduit) -> PsciError {
        PsciError(call(conduit, function::SYSTEM_RESET, 0, 0, 0))
    }
}

#[cfg(target_os = "none")]
pub use imp::{affinity_info, call, cpu_off, cpu_on, system_off, system_reset, version};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conduit_from_method() {
        assert_eq!(Conduit::from_method("hvc"), Some(Conduit::Hvc));
        assert_eq!(Conduit::from_method("smc"), Some(Conduit::Smc));
        assert_eq!(Conduit::from_method("svc"), None);
    }

    #[test]
    fn errors_have_names() {
        assert_eq!(result(0), Ok(0));
        assert_eq!(
            std::format!("{}", result(-3).unwrap_err()),
            "PSCI error -3 (DENIED)"
        );
    }
}
