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
    /// SError interrupt.
    pub const SERROR: u8 = 0x2f;
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
        0x13 => "synchronous external abort on table walk, level -1",
        0x14..=0x17 => "synchronous external abort on table walk",
        0x18 => "synchronous parity or ECC error",
        0x1c..=0x1f => "synchronous parity or ECC error on table walk",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// Whether a fault status code is an external abort or a parity/ECC error (the bus or memory
/// answered with an error, rather than the translation refusing the access).
pub fn is_external(fsc: u8) -> bool {
    matches!(fsc, 0x10 | 0x13..=0x18 | 0x1c..=0x1f)
}

/// Whether FAR_EL1 holds the faulting address for this abort syndrome: not when an external
/// abort sets FnV (ISS bit 10; ARM ARM D17.2.40, "FnV").
pub fn far_valid(esr: u64) -> bool {
    let fsc = (iss(esr) & 0x3f) as u8;
    !(is_external(fsc) && iss(esr) & (1 << 10) != 0)
}

/// The translation level a fault status code names, when it names one.
pub fn fault_level(fsc: u8) -> Option<u8> {
    match fsc {
        0x00..=0x0f | 0x14..=0x17 | 0x1c..=0x1f => Some(fsc & 3),
        _ => None,
    }
}

/// Asynchronous error type, SError ISS bits [12:10] (valid when DFSC is 0x11): the state the
/// error left the CPU in (ARM ARM D17.2.40, ESR_EL1, "ISS encoding for an SError interrupt";
/// the RAS extension's error types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aet {
    /// 0b000 Uncontainable: the error may have corrupted state the CPU cannot isolate.
    Uncontainable,
    /// 0b001 Unrecoverable state: contained, but execution cannot go on.
    Unrecoverable,
    /// 0b010 Restartable state (UEO): the interrupted code can resume.
    Restartable,
    /// 0b011 Recoverable state (UER): recoverable by software.
    Recoverable,
    /// 0b110 Corrected.
    Corrected,
    /// A reserved encoding.
    Reserved(u8),
}

impl Aet {
    /// From the 3-bit field.
    pub fn from_bits(bits: u8) -> Aet {
        match bits & 7 {
            0b000 => Aet::Uncontainable,
            0b001 => Aet::Unrecoverable,
            0b010 => Aet::Restartable,
            0b011 => Aet::Recoverable,
            0b110 => Aet::Corrected,
            other => Aet::Reserved(other),
        }
    }

    /// The RAS specification's short name and words.
    pub fn name(self) -> &'static str {
        match self {
            Aet::Uncontainable => "UC, uncontainable",
            Aet::Unrecoverable => "UEU, unrecoverable state",
            Aet::Restartable => "UEO, restartable state",
            Aet::Recoverable => "UER, recoverable state",
            Aet::Corrected => "CE, corrected",
            Aet::Reserved(_) => "reserved error type",
        }
    }
}

/// The syndrome of an SError interrupt (EC 0x2f), ESR_EL1.ISS decoded (ARM ARM D17.2.40,
/// "ISS encoding for an SError interrupt").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SError {
    /// IDS (bit 24) set: bits [23:0] hold an IMPLEMENTATION DEFINED syndrome.
    ImplementationDefined(u32),
    /// IDS clear: the architected fields.
    Architected {
        /// IESB (bit 13): taken at an implicit error synchronization event (FEAT_IESB).
        iesb: bool,
        /// AET (bits [12:10]), when DFSC says the field is valid (0x11).
        aet: Option<Aet>,
        /// EA (bit 9): the IMPLEMENTATION DEFINED external abort type.
        ea: bool,
        /// DFSC (bits [5:0]): 0x00 uncategorized, 0x11 asynchronous SError interrupt.
        dfsc: u8,
    },
}

/// Decodes the ISS of an SError interrupt.
pub fn serror(iss: u32) -> SError {
    if iss & (1 << 24) != 0 {
        return SError::ImplementationDefined(iss & 0xff_ffff);
    }
    let dfsc = (iss & 0x3f) as u8;
    SError::Architected {
        iesb: iss & (1 << 13) != 0,
        aet: (dfsc == 0x11).then(|| Aet::from_bits(((iss >> 10) & 7) as u8)),
        ea: iss & (1 << 9) != 0,
        dfsc,
    }
}

impl core::fmt::Display for SError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            SError::ImplementationDefined(syndrome) => {
                write!(
                    f,
                    "IMPLEMENTATION DEFINED syndrome {syndrome:#08x} (IDS set)"
                )
            }
            SError::Architected {
                iesb,
                aet,
                ea,
                dfsc,
            } => {
                match dfsc {
                    0x00 => write!(f, "uncategorized error")?,
                    0x11 => write!(f, "asynchronous SError interrupt")?,
                    other => write!(f, "reserved fault status {other:#04x}")?,
                }
                if let Some(aet) = aet {
                    write!(f, ", {}", aet.name())?;
                }
                if ea {
                    write!(f, ", external abort type 1 (EA)")?;
                }
                if iesb {
                    write!(f, ", at an error synchronization event (IESB)")?;
                }
                Ok(())
            }
        }
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
            let iss = iss(self.0);
            if matches!(ec, ec::DABT_LOWER | ec::DABT_CURRENT) {
                let write = iss & (1 << 6) != 0;
                write!(f, ", {}", if write { "write" } else { "read" })?;
                // ISV (bit 24): SAS (bits [23:22]) gives the access size.
                if iss & (1 << 24) != 0 {
                    write!(f, " of {} bytes", 1u32 << ((iss >> 22) & 3))?;
                }
            }
            if is_external(fsc) {
                // EA (bit 9) classifies external aborts (IMPLEMENTATION DEFINED); FnV (bit 10)
                // says FAR_EL1 does not hold the faulting address.
                if iss & (1 << 9) != 0 {
                    write!(f, ", external abort type 1 (EA)")?;
                }
                if iss & (1 << 10) != 0 {
                    write!(f, ", FAR not valid (FnV)")?;
                }
            }
        } else if ec == ec::SERROR {
            write!(f, ": {}", serror(iss(self.0)))?;
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
    fn decodes_a_synchronous_external_abort_on_a_store() {
        // What QEMU 7.2 reports for a store to an unassigned physical address (`fault serror
        // 0xb000000` on virt): EC 0x25, IL, WnR, DFSC 0x10, no ISV.
        let esr = 0x9600_0050;
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "data abort (kernel): synchronous external abort, write"
        );
        assert!(far_valid(esr));
        // With ISV, SAS gives the size (0b10: 4 bytes).
        let esr = (0x25u64 << 26) | (1 << 25) | (1 << 24) | (0b10 << 22) | (1 << 6) | 0x10;
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "data abort (kernel): synchronous external abort, write of 4 bytes"
        );
        // EA and FnV are named; FnV makes FAR unusable.
        let esr = (0x25u64 << 26) | (1 << 10) | (1 << 9) | 0x10;
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "data abort (kernel): synchronous external abort, read, external abort type 1 (EA), FAR not valid (FnV)"
        );
        assert!(!far_valid(esr));
        // FnV means nothing for a translation fault (the bit is RES0 there).
        assert!(far_valid((0x25u64 << 26) | (1 << 10) | 0x07));
        assert_eq!(fault_level(0x15), Some(1));
        assert_eq!(
            fault_status_name(0x15),
            "synchronous external abort on table walk"
        );
    }

    #[test]
    fn decodes_serror_syndromes() {
        let serror_esr = |iss: u64| (0x2fu64 << 26) | (1 << 25) | iss;
        // DFSC 0x11 with AET = UC and EA.
        let esr = serror_esr((1 << 9) | 0x11);
        assert_eq!(
            serror(iss(esr)),
            SError::Architected {
                iesb: false,
                aet: Some(Aet::Uncontainable),
                ea: true,
                dfsc: 0x11
            }
        );
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "SError interrupt: asynchronous SError interrupt, UC, uncontainable, external abort type 1 (EA)"
        );
        // Every AET encoding, at bits [12:10].
        let aets = [
            (0b000, Aet::Uncontainable, "UC"),
            (0b001, Aet::Unrecoverable, "UEU"),
            (0b010, Aet::Restartable, "UEO"),
            (0b011, Aet::Recoverable, "UER"),
            (0b110, Aet::Corrected, "CE"),
            (0b100, Aet::Reserved(0b100), "reserved"),
        ];
        for (bits, aet, short) in aets {
            let d = serror((bits << 10) | 0x11);
            assert!(matches!(d, SError::Architected { aet: Some(a), .. } if a == aet));
            assert!(std::format!("{d}").contains(short), "{d}");
        }
        // IESB.
        assert_eq!(
            std::format!("{}", serror((1 << 13) | (0b110 << 10) | 0x11)),
            "asynchronous SError interrupt, CE, corrected, at an error synchronization event (IESB)"
        );
        // Uncategorized: AET is not valid and not shown.
        let d = serror(0b011 << 10);
        assert!(matches!(
            d,
            SError::Architected {
                aet: None,
                dfsc: 0,
                ..
            }
        ));
        assert_eq!(std::format!("{d}"), "uncategorized error");
        // IDS: the whole field is IMPLEMENTATION DEFINED.
        assert_eq!(
            serror((1 << 24) | 0x12_3456),
            SError::ImplementationDefined(0x12_3456)
        );
        assert_eq!(
            std::format!("{}", Describe(serror_esr((1 << 24) | 0xbeef))),
            "SError interrupt: IMPLEMENTATION DEFINED syndrome 0x00beef (IDS set)"
        );
        assert_eq!(
            std::format!("{}", serror(0x3f)),
            "reserved fault status 0x3f"
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
