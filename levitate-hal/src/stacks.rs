//! The registry of kernel stacks: where each one is and where its guard page is, so a fault in
//! a guard page is reported as "stack overflow on <name>" and backtraces know which memory may
//! hold frame records.

use crate::sync::IrqSafeMutex;
use core::ops::Range;

/// Most stacks the registry holds (boot, exception, per-CPU and thread stacks).
pub const MAX_STACKS: usize = 64;

/// One kernel stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackInfo {
    /// What it is for ("boot", "exception cpu0", ...).
    pub name: &'static str,
    /// The usable stack, `[bottom, top)`.
    pub stack: Range<u64>,
    /// The unmapped guard page(s) just below it.
    pub guard: Range<u64>,
}

/// The registry is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryFull;

/// Protects the table of registered stacks. Taken briefly to add, remove or look up a stack;
/// a leaf in the lock order (nothing is taken under it). IRQ-safe: taken with IRQ+FIQ masked
/// on this CPU, so an interrupt handler (or the fault path it may end in) never finds it held
/// by the code it interrupted; other CPUs wait a few dozen loads at most. The fault and
/// backtrace paths only `try_lock`, so a fault while the lock is held cannot deadlock: it
/// just reports without a stack name.
static STACKS: IrqSafeMutex<[Option<StackInfo>; MAX_STACKS]> =
    IrqSafeMutex::new([const { None }; MAX_STACKS]);

/// Records a stack.
pub fn register(info: StackInfo) -> Result<(), RegistryFull> {
    let mut stacks = STACKS.lock();
    let slot = stacks
        .iter_mut()
        .find(|s| s.is_none())
        .ok_or(RegistryFull)?;
    *slot = Some(info);
    Ok(())
}

/// Forgets the stack whose usable range starts at `bottom`.
pub fn unregister(bottom: u64) {
    let mut stacks = STACKS.lock();
    if let Some(slot) = stacks
        .iter_mut()
        .find(|s| s.as_ref().is_some_and(|s| s.stack.start == bottom))
    {
        *slot = None;
    }
}

/// The stack whose guard page holds `addr`, if the registry can be read without waiting.
pub fn guard_hit(addr: u64) -> Option<StackInfo> {
    let stacks = STACKS.try_lock()?;
    stacks
        .iter()
        .flatten()
        .find(|s| s.guard.contains(&addr))
        .cloned()
}

/// Most bytes an A64 store reaches below SP before SP itself moves: `stp` with pre-index
/// writeback takes a 7-bit signed offset scaled by 8, so down to SP - 512 (ARM ARM C6.2, STP);
/// the fault happens before the writeback. A push that overflows a stack can therefore fault
/// with SP still this far above the stack's bottom. (AAPCS64 has no red zone: nothing else
/// stores below SP.)
pub const MAX_STORE_BELOW_SP: u64 = 512;

/// What a fault has to do with the kernel stacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackFault {
    /// The stack overflowed: its stack pointer ran into (or past) the guard page.
    Overflow(StackInfo),
    /// The faulting address is in this stack's guard page, but the stack pointer is nowhere
    /// near that stack's bottom: an ordinary bad pointer that happens to point there.
    GuardTouched(StackInfo),
}

/// Classifies a fault taken with stack pointer `sp` at address `far` (`None` when the
/// exception is no abort, so FAR_EL1 is UNKNOWN), if the registry can be read without waiting.
pub fn classify(far: Option<u64>, sp: u64) -> Option<StackFault> {
    let stacks = STACKS.try_lock()?;
    classify_in(stacks.iter().flatten(), far, sp)
}

/// The rule behind `classify`: an overflow is the stack pointer reaching the guard, not the
/// faulting address alone (Linux's arm64 entry code decides the same way, from SP). Stack `s`
/// overflowed when
/// - SP lies in its guard page (a frame was allocated below the bottom), or
/// - FAR lies in its guard page and SP is at most `MAX_STORE_BELOW_SP` above the bottom (a
///   push that faulted before its writeback), or
/// - FAR lies in its guard page, SP is below it, below FAR, and in no registered stack (a
///   frame larger than the guard jumped over it, and a store into the frame hit the guard).
///
/// Any other fault in a guard page is `GuardTouched`.
fn classify_in<'a>(
    stacks: impl Iterator<Item = &'a StackInfo> + Clone,
    far: Option<u64>,
    sp: u64,
) -> Option<StackFault> {
    if let Some(s) = stacks.clone().find(|s| s.guard.contains(&sp)) {
        return Some(StackFault::Overflow(s.clone()));
    }
    let far = far?;
    let s = stacks.clone().find(|s| s.guard.contains(&far))?;
    let bottom = s.stack.start;
    let pushing_at_bottom = (bottom..bottom.saturating_add(MAX_STORE_BELOW_SP)).contains(&sp);
    let jumped_over =
        sp < s.guard.start && sp < far && !stacks.clone().any(|t| t.stack.contains(&sp));
    Some(if pushing_at_bottom || jumped_over {
        StackFault::Overflow(s.clone())
    } else {
        StackFault::GuardTouched(s.clone())
    })
}

/// Copies the usable ranges of every registered stack into `out`; returns how many.
pub fn ranges(out: &mut [Range<u64>]) -> usize {
    let Some(stacks) = STACKS.try_lock() else {
        return 0;
    };
    let mut n = 0;
    for s in stacks.iter().flatten() {
        if n == out.len() {
            break;
        }
        out[n] = s.stack.clone();
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_hits_name_the_stack() {
        register(StackInfo {
            name: "test-a",
            stack: 0x10_1000..0x10_5000,
            guard: 0x10_0000..0x10_1000,
        })
        .unwrap();
        assert_eq!(guard_hit(0x10_0ff8).map(|s| s.name), Some("test-a"));
        assert_eq!(
            guard_hit(0x10_1000),
            None,
            "the stack itself is not the guard"
        );
        let mut out = [0..0, 0..0, 0..0];
        let n = ranges(&mut out);
        assert!(out[..n].contains(&(0x10_1000..0x10_5000)));
        unregister(0x10_1000);
        assert_eq!(guard_hit(0x10_0ff8), None);
    }

    #[test]
    fn an_overflow_needs_the_stack_pointer_at_the_guard() {
        let a = StackInfo {
            name: "a",
            stack: 0x20_1000..0x21_1000,
            guard: 0x20_0000..0x20_1000,
        };
        let b = StackInfo {
            name: "b",
            stack: 0x40_1000..0x41_1000,
            guard: 0x40_0000..0x40_1000,
        };
        let all = [a.clone(), b.clone()];
        let classify = |far, sp| classify_in(all.iter(), far, sp);
        let overflow = Some(StackFault::Overflow(a.clone()));
        let touched = Some(StackFault::GuardTouched(a.clone()));
        // `sub sp, sp, #N` took SP into the guard; the store faults there.
        assert_eq!(classify(Some(0x20_0ff0), 0x20_0ff0), overflow);
        // SP in the guard is an overflow whatever FAR says (or when there is none).
        assert_eq!(classify(None, 0x20_0800), overflow);
        // `stp x29, x30, [sp, #-16]!` at the very bottom: SP has not moved yet.
        assert_eq!(classify(Some(0x20_0ff0), 0x20_1000), overflow);
        assert_eq!(classify(Some(0x20_0e00), 0x20_11f8), overflow);
        // A frame larger than the guard: SP jumped below it, a store into the frame hit it.
        assert_eq!(classify(Some(0x20_0100), 0x1f_f000), overflow);
        // A read of the guard from deep inside the stack: a bad pointer, not an overflow.
        assert_eq!(classify(Some(0x20_0000), 0x21_0d50), touched);
        assert_eq!(classify(Some(0x20_0ff8), 0x20_1200), touched);
        // ... or from another stack, below or above.
        assert_eq!(classify(Some(0x20_0000), 0x40_8000), touched);
        let c = [
            a.clone(),
            StackInfo {
                name: "low",
                stack: 0x10_0000..0x1f_f800,
                guard: 0x0f_f000..0x10_0000,
            },
        ];
        assert_eq!(
            classify_in(c.iter(), Some(0x20_0100), 0x1f_f000),
            Some(StackFault::GuardTouched(a.clone()))
        );
        // Nothing to do with a guard page.
        assert_eq!(classify(Some(0x30_0000), 0x21_0000), None);
        assert_eq!(classify(None, 0x21_0000), None);
        assert_eq!(classify(Some(0x41_0000), 0x21_0000), None);
        let _ = b;
    }
}

crate::ktest!(
    fn the_stack_registry_masks_interrupts_while_held() -> KtestResult {
        use crate::sync::{irqs_masked, with_irqs_unmasked};
        let (inside, outside) = with_irqs_unmasked(|| {
            let inside = {
                let _held = STACKS.lock();
                irqs_masked()
            };
            (inside, irqs_masked())
        });
        crate::kassert!(inside, "IRQs open while the stack registry is held");
        crate::kassert!(
            !outside,
            "IRQs still masked after the stack registry was released"
        );
        Ok(())
    }
);
