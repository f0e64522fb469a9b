//! Exception handling: the saved context (`TrapFrame`, laid out by vectors.S), the Rust side of
//! the vector table, fault reports, and a fault catcher that lets tests provoke faults on purpose.
//!
//! Every exception the kernel does not expect is fatal: the handler prints a decoded report
//! (class in words, FAR, ELR and the faulting function's name from the kernel symbol table)
//! and panics; the panic handler adds the backtrace through the interrupted code.

use super::esr;
use crate::stacks::StackFault;
use core::fmt;

/// The context saved on exception entry. Layout shared with vectors.S.
#[repr(C)]
#[derive(Clone)]
pub struct TrapFrame {
    /// General-purpose registers x0..x30.
    pub x: [u64; 31],
    /// The stack pointer when the exception was taken.
    pub sp: u64,
    /// Exception link register: where execution resumes.
    pub elr: u64,
    /// Saved program status.
    pub spsr: u64,
    /// Exception syndrome.
    pub esr: u64,
    /// Fault address (valid for aborts and watchpoints).
    pub far: u64,
    /// Floating-point status.
    pub fpsr: u64,
    /// Floating-point control.
    pub fpcr: u64,
    /// A frame record `{x29, elr + 4}` so a backtrace from the handler reaches the interrupted
    /// code (backtraces show the instruction before each return address).
    pub frame_record: [u64; 2],
    /// SIMD/FP registers q0..q31.
    pub q: [u128; 32],
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 832);
const _: () = assert!(core::mem::offset_of!(TrapFrame, frame_record) == 304);

/// Which vector-table entry was taken (its index, 0..16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapKind(pub u64);

impl TrapKind {
    /// Synchronous exception (fault, BRK, SVC ...).
    pub fn is_sync(self) -> bool {
        self.0.is_multiple_of(4)
    }
    /// SError: an asynchronous abort, usually a bus error.
    pub fn is_serror(self) -> bool {
        self.0 % 4 == 3
    }
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.0 / 4 {
            0 => "EL1 (kernel stack)",
            1 => "EL1 (exception stack)",
            2 => "EL0 (AArch64)",
            _ => "EL0 (AArch32)",
        };
        let kind = ["synchronous exception", "IRQ", "FIQ", "SError"][(self.0 % 4) as usize];
        write!(f, "{kind} from {source}")
    }
}

/// A multi-line fault report for an unexpected exception.
pub struct FaultReport<'a> {
    /// Which vector was taken.
    pub kind: TrapKind,
    /// The saved context.
    pub frame: &'a TrapFrame,
}

impl fmt::Display for FaultReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = self.frame;
        writeln!(f, "unhandled {}", self.kind)?;
        // FAR_EL1 holds the faulting address only for aborts here (ARM ARM, FAR_EL1: UNKNOWN
        // for other synchronous exceptions such as BRK or undefined instructions).
        let abort = self.kind.is_sync() && esr::is_abort(esr::exception_class(fr.esr));
        let stack = self
            .kind
            .is_sync()
            .then(|| crate::stacks::classify(abort.then_some(fr.far), fr.sp))
            .flatten();
        match stack {
            Some(StackFault::Overflow(s)) => writeln!(
                f,
                "  kernel stack overflow: stack '{}' ({:#x}..{:#x}) ran into its guard page",
                s.name, s.stack.start, s.stack.end
            )?,
            Some(StackFault::GuardTouched(s)) => writeln!(
                f,
                "  FAR is in the guard page below stack '{}' ({:#x}..{:#x}), but SP is not at \
                 that stack's bottom: a bad address, not a stack overflow",
                s.name, s.stack.start, s.stack.end
            )?,
            None => {}
        }
        if self.kind.is_sync() || self.kind.is_serror() {
            writeln!(f, "  ESR  {:#018x}  {}", fr.esr, esr::Describe(fr.esr))?;
        }
        if abort {
            writeln!(f, "  FAR  {:#018x}  (faulting address)", fr.far)?;
        }
        write!(f, "  ELR  {:#018x}", fr.elr)?;
        match crate::ksyms::resolve(fr.elr) {
            Some((name, off)) => writeln!(f, "  in {name}+{off:#x}")?,
            None => writeln!(f, "  (no symbol)")?,
        }
        writeln!(f, "  SPSR {:#018x}  SP {:#018x}", fr.spsr, fr.sp)?;
        for row in 0..8 {
            for col in 0..4 {
                let i = row * 4 + col;
                if i < 31 {
                    write!(f, "  x{i:<2} {:#018x}", fr.x[i])?;
                }
            }
            if row < 7 {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// What a caught fault looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtFault {
    /// ESR_EL1 at the fault.
    pub esr: u64,
    /// FAR_EL1 at the fault.
    pub far: u64,
    /// Address of the faulting instruction.
    pub elr: u64,
}

impl CaughtFault {
    /// The exception class of the fault.
    pub fn class(&self) -> u8 {
        esr::exception_class(self.esr)
    }
}

#[cfg(target_os = "none")]
pub use imp::catch_fault;

#[cfg(target_os = "none")]
mod imp {
    use super::{CaughtFault, FaultReport, TrapFrame, TrapKind};
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    // Fault catching is armed by one CPU at a time (tests, and later probing code); the
    // atomics make the state visible to the handler, which runs on the same CPU.
    static CATCH_ARMED: AtomicBool = AtomicBool::new(false);
    static CAUGHT: AtomicBool = AtomicBool::new(false);
    static CAUGHT_ESR: AtomicU64 = AtomicU64::new(0);
    static CAUGHT_FAR: AtomicU64 = AtomicU64::new(0);
    static CAUGHT_ELR: AtomicU64 = AtomicU64::new(0);

    /// Runs `f`; if it takes a synchronous exception at EL1, records the fault, skips the
    /// faulting instruction and lets `f` continue. Returns the first fault taken, if any.
    /// Meant for code that provokes a fault on purpose (tests of the exception path and of
    /// page protections): the skipped instruction has no effect, so `f` must not rely on it.
    pub fn catch_fault(f: impl FnOnce()) -> Option<CaughtFault> {
        CAUGHT.store(false, Ordering::SeqCst);
        CATCH_ARMED.store(true, Ordering::SeqCst);
        f();
        CATCH_ARMED.store(false, Ordering::SeqCst);
        CAUGHT.load(Ordering::SeqCst).then(|| CaughtFault {
            esr: CAUGHT_ESR.load(Ordering::SeqCst),
            far: CAUGHT_FAR.load(Ordering::SeqCst),
            elr: CAUGHT_ELR.load(Ordering::SeqCst),
        })
    }

    /// Called by vectors.S with the vector index and the saved context.
    #[no_mangle]
    extern "C" fn levitate_trap(kind: u64, frame: &mut TrapFrame) {
        let kind = TrapKind(kind);
        // Kernel code runs on SP_EL0, so its synchronous exceptions arrive at vector 0;
        // vector 4 is a fault inside a handler.
        if (kind.0 == 0 || kind.0 == 4) && CATCH_ARMED.swap(false, Ordering::SeqCst) {
            CAUGHT_ESR.store(frame.esr, Ordering::SeqCst);
            CAUGHT_FAR.store(frame.far, Ordering::SeqCst);
            CAUGHT_ELR.store(frame.elr, Ordering::SeqCst);
            CAUGHT.store(true, Ordering::SeqCst);
            frame.elr += 4; // every A64 instruction is 4 bytes
            return;
        }
        panic!("{}", FaultReport { kind, frame });
    }
}
