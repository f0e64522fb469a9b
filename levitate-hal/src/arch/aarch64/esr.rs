//! Decoding of ESR_EL1 (Exception Syndrome Register) into words for fault reports
//! (ARM ARM D17.2.37, "ESR_EL1, Exception Syndrome Register (EL1)").

/// The exception class, ESR_EL1 bits [31:26].
pub fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// The instruction-specific syndrome, ESR_EL1 bits [24:0].
pub fn iss(esr: u64) -> u32 {
    (esr & 0x1ff_ffff) as u32
}

/// Exception class values the kernel acts on.
pub mod ec {
    /// SVC from AArch64.
    pub const SVC64: u8 = 0x15;
    /// Instruction abort from a lower exception level.
    pub const IABT_LOWER: u8 = 0x20;
    /// Instruction abort taken without a change in exception level.
    pub const IABT_CURRENT: u8 = 0x21;
    /// Data abort from a lower exception level.
    pub const DABT_LOWER: u8 = 0x24;
    /// Data abort taken without a change in exception level.
    pub const DABT_CURRENT: u8 = 0x25;
    /// BRK instruction in AArch64 state.
    pub const BRK64: u8 = 0x3c;
}

/// The exception class in words.
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "trapped WFI/WFE",
        0x07 => "access to SIMD/floating point trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC instruction (AArch64)",
        0x16 => "HVC instruction (AArch64)",
        0x17 => "SMC instruction (AArch64)",
        0x18 => "trapped MSR/MRS/system instruction",
        0x19 => "access to SVE trapped",
        0x20 => "instruction abort from a lower exception level",
        0x21 => "instruction abort (kernel)",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower exception level",
        0x25 => "data abort (kernel)",
        0x26 => "SP alignment fault",
        0x2c => "floating point exception",
        0x2f => "SError interrupt",
        0x30 => "breakpoint from a lower exception level",
        0x31 => "breakpoint (kernel)",
        0x32 => "software step from a lower exception level",
        0x33 => "software step (kernel)",
        0x34 => "watchpoint from a lower exception level",
        0x35 => "watchpoint (kernel)",
        0x3c => "BRK instruction (AArch64)",
        _ => "reserved or unhandled exception class",
    }
}

/// Whether this class carries a fault status code and a valid FAR (aborts).
pub fn is_abort(ec: u8) -> bool {
    matches!(
        ec,
        ec::IABT_LOWER | ec::IABT_CURRENT | ec::DABT_LOWER | ec::DABT_CURRENT
    )
}

/// The data/instruction fault status code (ISS bits [5:0]) in words.
pub fn fault_status_name(fsc: u8) -> &'static str {
    match fsc {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x11 => "synchronous tag check fault",
        0x14..=0x17 => "synchronous external abort on table walk",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// The translation level a fault status code names, when it names one.
pub fn fault_level(fsc: u8) -> Option<u8> {
    match fsc {
        0x00..=0x0f | 0x14..=0x17 => Some(fsc & 3),
        _ => None,
    }
}

/// A one-line description of an ESR value, e.g.
/// `data abort (kernel): translation fault at level 3, write`.
pub struct Describe(pub u64);

impl core::fmt::Display for Describe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ec = exception_class(self.0);
        write!(f, "{}", class_name(ec))?;
        if is_abort(ec) {
            let fsc = (iss(self.0) & 0x3f) as u8;
            write!(f, ": {}", fault_status_name(fsc))?;
            if let Some(level) = fault_level(fsc) {
                write!(f, " at level {level}")?;
            }
            if matches!(ec, ec::DABT_LOWER | ec::DABT_CURRENT) {
                let write = iss(self.0) & (1 << 6) != 0;
                write!(f, ", {}", if write { "write" } else { "read" })?;
            }
        } else if ec == ec::BRK64 || ec == ec::SVC64 {
            write!(f, " #{:#x}", iss(self.0) & 0xffff)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_data_abort() {
        // EC=0x25, IL=1, WnR=1, DFSC=0b000111 (translation fault, level 3).
        let esr = (0x25u64 << 26) | (1 << 25) | (1 << 6) | 0x07;
        assert_eq!(exception_class(esr), ec::DABT_CURRENT);
        let text = std::format!("{}", Describe(esr));
        assert_eq!(
            text,
            "data abort (kernel): translation fault at level 3, write"
        );
    }

    #[test]
    fn decodes_permission_fault_on_fetch() {
        let esr = (0x21u64 << 26) | (1 << 25) | 0x0f;
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "instruction abort (kernel): permission fault at level 3"
        );
    }

    #[test]
    fn decodes_brk() {
        let esr = (0x3cu64 << 26) | (1 << 25) | 0x1234;
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "BRK instruction (AArch64) #0x1234"
        );
    }

    #[test]
    fn every_class_has_words() {
        for ec in 0..64u8 {
            assert!(!class_name(ec).is_empty());
        }
        assert_eq!(class_name(0), "unknown reason (undefined instruction)");
    }
}
