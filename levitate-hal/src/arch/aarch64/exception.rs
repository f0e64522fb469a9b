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
        if self.kind.is_serror() {
            // An SError is asynchronous (ARM ARM D1.3.5 "Asynchronous exception types"): it
            // is taken when DAIF.A allows, after the access that raised it completed with an
            // error, so ELR names the code running then, and FAR holds nothing for it.
            writeln!(
                f,
                "  asynchronous abort: the access that caused it came at or before ELR (no \
                 faulting address is recorded); usually a device rejected a write"
            )?;
        }
        if abort && esr::far_valid(fr.esr) {
            writeln!(f, "  FAR  {:#018x}  (faulting address)", fr.far)?;
        } else if abort {
            writeln!(f, "  FAR  not valid for this abort (ESR.FnV set)")?;
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
pub use imp::{catch_fault, set_irq_handler};

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

    /// Overwrites every caller-saved register (x0-x18, q0-q31) before a caught trap returns,
    /// as a longer handler might: the interrupted code then sees its own values only if
    /// vectors.S restores them from the frame, so a missing restore shows in the brk test.
    #[inline(never)]
    fn scramble_caller_saved() {
        // SAFETY: writes registers only, each declared clobbered (all are caller-saved in
        // AAPCS64, so the compiler already treats them as lost across this call); no memory
        // is touched.
        unsafe {
            core::arch::asm!(
                "mov x0, #0xdead",
                "mov x1, x0", "mov x2, x0", "mov x3, x0", "mov x4, x0", "mov x5, x0",
                "mov x6, x0", "mov x7, x0", "mov x8, x0", "mov x9, x0", "mov x10, x0",
                "mov x11, x0", "mov x12, x0", "mov x13, x0", "mov x14, x0", "mov x15, x0",
                "mov x16, x0", "mov x17, x0", "mov x18, x0",
                "dup v0.2d, x0", "dup v1.2d, x0", "dup v2.2d, x0", "dup v3.2d, x0",
                "dup v4.2d, x0", "dup v5.2d, x0", "dup v6.2d, x0", "dup v7.2d, x0",
                "dup v8.2d, x0", "dup v9.2d, x0", "dup v10.2d, x0", "dup v11.2d, x0",
                "dup v12.2d, x0", "dup v13.2d, x0", "dup v14.2d, x0", "dup v15.2d, x0",
                "dup v16.2d, x0", "dup v17.2d, x0", "dup v18.2d, x0", "dup v19.2d, x0",
                "dup v20.2d, x0", "dup v21.2d, x0", "dup v22.2d, x0", "dup v23.2d, x0",
                "dup v24.2d, x0", "dup v25.2d, x0", "dup v26.2d, x0", "dup v27.2d, x0",
                "dup v28.2d, x0", "dup v29.2d, x0", "dup v30.2d, x0", "dup v31.2d, x0",
                out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x4") _,
                out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _,
                out("x15") _, out("x16") _, out("x17") _, out("x18") _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _,
                out("v5") _, out("v6") _, out("v7") _, out("v8") _, out("v9") _,
                out("v10") _, out("v11") _, out("v12") _, out("v13") _, out("v14") _,
                out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _,
                out("v25") _, out("v26") _, out("v27") _, out("v28") _, out("v29") _,
                out("v30") _, out("v31") _,
                options(nostack, nomem)
            );
        }
    }

    /// The kernel's interrupt dispatcher, installed once its interrupt controller is up.
    static IRQ_HANDLER: spin::Once<fn(&mut TrapFrame)> = spin::Once::new();

    /// Installs the function the IRQ vectors call (the kernel's `irq` module: acknowledge,
    /// dispatch, end of interrupt). It runs on the exception stack with interrupts masked
    /// (PSTATE.I is set on exception entry, ARM ARM D1.3.4) and must return: vectors.S then
    /// restores the interrupted context from the frame. Later calls are ignored.
    pub fn set_irq_handler(handler: fn(&mut TrapFrame)) {
        IRQ_HANDLER.call_once(|| handler);
    }

    /// Called by vectors.S for an IRQ taken from EL1 (vectors 1 and 5). With no dispatcher
    /// installed an IRQ is as unexpected as any other exception: a fault report and a panic.
    #[no_mangle]
    extern "C" fn levitate_irq(kind: u64, frame: &mut TrapFrame) {
        match IRQ_HANDLER.get() {
            Some(handler) => handler(frame),
            None => panic!(
                "{}",
                FaultReport {
                    kind: TrapKind(kind),
                    frame
                }
            ),
        }
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
            scramble_caller_saved();
            return;
        }
        panic!("{}", FaultReport { kind, frame });
    }
}
