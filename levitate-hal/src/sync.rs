//! Interrupt-safe locking: `IrqGuard` masks IRQ and FIQ on this CPU for as long as it lives
//! (nestable, restoring the DAIF it found), `IrqSafeMutex<T>` is a spin lock taken under such a
//! guard: the kernel's equivalent of Linux's `spin_lock_irqsave` / `local_lock_irqsave`.
//!
//! Why: a lock that an interrupt handler may take must never be held by the code the handler
//! interrupted on the same CPU, or the handler spins forever on a lock whose holder cannot run.
//! Masking IRQ+FIQ before taking the lock closes that window; other CPUs simply wait. SError
//! (DAIF.A) and debug (DAIF.D) stay as they were: an SError inside a critical section is still
//! taken and reported.
//!
//! The guard also measures: when the outermost guard on a CPU (the one that found IRQs
//! unmasked) restores them, it records how long they were masked, from the generic timer's
//! counter, and keeps the longest interval per CPU with the place that caused it (`irqstat`).
//! Cost: a DAIF read, two DAIF writes, and for the outermost guard two counter reads.
//!
//! Guards must be dropped in the reverse order of their creation (the normal order of scopes).
//! Code that holds several guards in an array or drops them out of order takes one outer
//! `IrqGuard` first, so every inner one restores a masked state (see `frames::validate`).

use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// DAIF.I: IRQs masked (bit 7 of the DAIF register, as MRS reads it; ARM ARM C5.2.2).
pub const DAIF_I: u64 = 1 << 7;
/// DAIF.F: FIQs masked.
pub const DAIF_F: u64 = 1 << 6;
/// DAIF.A: SError (asynchronous abort) masked.
pub const DAIF_A: u64 = 1 << 8;
/// DAIF.D: debug exceptions masked.
pub const DAIF_D: u64 = 1 << 9;

/// Most CPUs the masked-interval recorder keeps figures for (the kernel's `smp::MAX_CPUS` must
/// not exceed it; the kernel checks this at compile time).
pub const MAX_CPUS: usize = 16;

/// The DAIF register, raw.
#[cfg(target_os = "none")]
mod daif {
    #[inline(always)]
    pub fn read() -> u64 {
        let v: u64;
        // SAFETY: reads PSTATE.DAIF; no memory access.
        unsafe {
            core::arch::asm!("mrs {}, daif", out(reg) v, options(nomem, nostack, preserves_flags))
        };
        v
    }

    #[inline(always)]
    pub fn mask_irq_fiq() {
        // SAFETY: sets PSTATE.I and PSTATE.F (DAIFSet immediate 0b0011). Not `nomem`: the
        // compiler must not move memory accesses of the critical section above it.
        unsafe { core::arch::asm!("msr daifset, #3", options(nostack, preserves_flags)) };
    }

    #[inline(always)]
    pub fn write(v: u64) {
        // SAFETY: restores a DAIF value read earlier on this CPU. Not `nomem`: the critical
        // section's accesses must stay before it.
        unsafe { core::arch::asm!("msr daif, {}", in(reg) v, options(nostack, preserves_flags)) };
    }

    #[inline(always)]
    pub fn ticks() -> u64 {
        crate::arch::aarch64::timer::ticks()
    }
}

/// Host stand-in: a per-thread DAIF and a fake counter, so the nesting and recording logic is
/// tested by `cargo test` (hosts builds outside tests never mask anything).
#[cfg(not(target_os = "none"))]
mod daif {
    #[cfg(test)]
    std::thread_local! {
        pub static DAIF: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
        pub static TICKS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
        /// The CPU slot this test thread records into (tests run in parallel threads).
        pub static TEST_CPU: core::cell::Cell<Option<usize>> = const { core::cell::Cell::new(None) };
    }

    pub fn read() -> u64 {
        #[cfg(test)]
        return DAIF.with(|d| d.get());
        #[cfg(not(test))]
        0
    }

    pub fn mask_irq_fiq() {
        #[cfg(test)]
        DAIF.with(|d| d.set(d.get() | super::DAIF_I | super::DAIF_F));
    }

    pub fn write(_v: u64) {
        #[cfg(test)]
        DAIF.with(|d| d.set(_v));
    }

    pub fn ticks() -> u64 {
        #[cfg(test)]
        return TICKS.with(|t| t.get());
        #[cfg(not(test))]
        0
    }
}

/// The DAIF register as MRS reads it (bits 9..6: D, A, I, F).
pub fn daif() -> u64 {
    daif::read()
}

/// Whether IRQs are masked on this CPU right now.
pub fn irqs_masked() -> bool {
    daif::read() & DAIF_I != 0
}

/// IRQ and FIQ masked on this CPU until drop, which restores the DAIF value found at creation.
/// Nestable. Not `Send`: it must be dropped on the CPU that made it.
#[must_use = "interrupts are unmasked again as soon as the guard is dropped"]
pub struct IrqGuard {
    saved: u64,
    /// Counter value when this guard masked IRQs; meaningful only when `saved` had them
    /// unmasked (this is the outermost guard).
    start: u64,
    place: &'static Location<'static>,
    _not_send: core::marker::PhantomData<*const ()>,
}

impl IrqGuard {
    /// Masks IRQ and FIQ; the caller's location names the section in `irqstat`.
    // No `Default`: masking interrupts should read as what it is at the call site.
    #[allow(clippy::new_without_default)]
    #[track_caller]
    #[inline]
    pub fn new() -> Self {
        Self::at(Location::caller())
    }

    /// Masks IRQ and FIQ, naming the section `place`.
    #[inline]
    pub fn at(place: &'static Location<'static>) -> Self {
        let saved = daif::read();
        daif::mask_irq_fiq();
        let start = if saved & DAIF_I == 0 {
            daif::ticks()
        } else {
            0
        };
        Self {
            saved,
            start,
            place,
            _not_send: core::marker::PhantomData,
        }
    }

    /// Whether this guard is the one that masked IRQs (they were unmasked when it was made).
    pub fn is_outermost(&self) -> bool {
        self.saved & DAIF_I == 0
    }

    /// The DAIF value the guard restores.
    pub fn saved(&self) -> u64 {
        self.saved
    }
}

impl Drop for IrqGuard {
    #[inline]
    fn drop(&mut self) {
        if self.saved & DAIF_I == 0 {
            // Still masked here: nothing on this CPU can interleave with the update.
            record_masked(self.start, daif::ticks(), self.place);
        }
        daif::write(self.saved);
    }
}

/// Runs `f` with IRQ and FIQ unmasked on this CPU, then restores DAIF exactly. For in-kernel
/// tests of the guard (an outermost guard needs interrupts open to find). Before an interrupt
/// controller is set up no interrupt can be signalled, so this changes nothing else; once one
/// is, handlers may run during `f`, as they would anyway.
#[cfg(all(target_os = "none", feature = "ktest"))]
pub fn with_irqs_unmasked<R>(f: impl FnOnce() -> R) -> R {
    let saved = daif::read();
    // SAFETY: clears PSTATE.I and PSTATE.F (DAIFClr #3); the real vectors are installed, so
    // an interrupt, if one is signalled, is taken and handled. Not `nomem`: `f`'s accesses
    // must not move across it.
    unsafe { core::arch::asm!("msr daifclr, #3", options(nostack, preserves_flags)) };
    let r = f();
    daif::write(saved);
    r
}

/// One CPU's longest masked interval, on its own cache line (only that CPU writes it, except
/// for a reset from the shell).
#[repr(align(64))]
struct CpuMasked {
    longest: AtomicU64,
    place: AtomicPtr<Location<'static>>,
    /// Outermost masked sections recorded since boot (or the last reset).
    sections: AtomicU64,
}

static MASKED: [CpuMasked; MAX_CPUS] = [const {
    CpuMasked {
        longest: AtomicU64::new(0),
        place: AtomicPtr::new(core::ptr::null_mut()),
        sections: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// How the recorder learns this CPU's index (the kernel's per-CPU data). Until it is set,
/// everything counts for CPU 0 (only the boot CPU runs then).
static CPU_INDEX: spin::Once<fn() -> usize> = spin::Once::new();

/// Tells the recorder how to find the running CPU's index. The function must take no lock
/// and be callable with interrupts masked, from any context (it runs inside every outermost
/// guard's drop).
pub fn set_cpu_index(f: fn() -> usize) {
    CPU_INDEX.call_once(|| f);
}

fn cpu_index() -> usize {
    #[cfg(test)]
    if let Some(cpu) = daif::TEST_CPU.with(|c| c.get()) {
        return cpu;
    }
    CPU_INDEX.get().map_or(0, |f| f()).min(MAX_CPUS - 1)
}

/// Records a section that kept IRQs masked from counter value `start` to `end` on this CPU,
/// named `place`. Called by the outermost `IrqGuard`; the exception path may call it too for
/// time spent in a handler. Must be called with IRQs still masked.
pub fn record_masked(start: u64, end: u64, place: &'static Location<'static>) {
    let slot = &MASKED[cpu_index()];
    let took = end.wrapping_sub(start);
    slot.sections.fetch_add(1, Ordering::Relaxed);
    if took > slot.longest.load(Ordering::Relaxed) {
        // Place first, so a reader that sees the new length sees (at worst) a newer place.
        slot.place.store(
            place as *const Location<'static> as *mut _,
            Ordering::Relaxed,
        );
        slot.longest.store(took, Ordering::Release);
    }
}

/// One CPU's longest masked interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskedRecord {
    /// Counter ticks the longest section kept IRQs masked.
    pub ticks: u64,
    /// Where that section began (the guard's creator), if any section was recorded.
    pub place: Option<&'static Location<'static>>,
    /// Outermost masked sections recorded.
    pub sections: u64,
}

impl MaskedRecord {
    /// The longest interval in microseconds at counter frequency `hz` (0 when `hz` is 0).
    pub fn micros(&self, hz: u64) -> u64 {
        (u128::from(self.ticks) * 1_000_000)
            .checked_div(u128::from(hz))
            .unwrap_or(0) as u64
    }
}

/// CPU `cpu`'s record (all zero for an index past `MAX_CPUS`).
pub fn masked_record(cpu: usize) -> MaskedRecord {
    let Some(slot) = MASKED.get(cpu) else {
        return MaskedRecord {
            ticks: 0,
            place: None,
            sections: 0,
        };
    };
    let ticks = slot.longest.load(Ordering::Acquire);
    let place = slot.place.load(Ordering::Relaxed);
    MaskedRecord {
        ticks,
        // SAFETY: the pointer is null or came from a `&'static Location<'static>` in
        // `record_masked`; locations are immutable and live forever.
        place: unsafe { place.cast_const().as_ref() },
        sections: slot.sections.load(Ordering::Relaxed),
    }
}

/// Forgets every CPU's record (`irqstat reset`). A section ending on another CPU meanwhile
/// may survive the reset; the figures are diagnostics, not accounting.
pub fn reset_masked() {
    for slot in &MASKED {
        slot.longest.store(0, Ordering::Relaxed);
        slot.place.store(core::ptr::null_mut(), Ordering::Relaxed);
        slot.sections.store(0, Ordering::Relaxed);
    }
}

/// A spin lock taken with IRQ and FIQ masked on this CPU (Linux `spin_lock_irqsave`): while a
/// CPU holds it, no interrupt handler on that CPU can run and try to take it again; other CPUs
/// spin (with their own interrupts masked, as Linux does). The guard unlocks first, then
/// restores the CPU's interrupt state.
pub struct IrqSafeMutex<T: ?Sized> {
    inner: spin::Mutex<T>,
}

/// The held lock: unlocks, then restores DAIF, on drop.
pub struct IrqSafeMutexGuard<'a, T: ?Sized> {
    // Field order is drop order: the lock is released before interrupts are unmasked.
    guard: spin::MutexGuard<'a, T>,
    irq: IrqGuard,
}

impl<T> IrqSafeMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::Mutex::new(value),
        }
    }

    /// The value, taking the mutex apart.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> IrqSafeMutex<T> {
    /// Masks IRQ+FIQ, then spins until the lock is free. The caller names the section.
    #[track_caller]
    #[inline]
    pub fn lock(&self) -> IrqSafeMutexGuard<'_, T> {
        let irq = IrqGuard::at(Location::caller());
        IrqSafeMutexGuard {
            guard: self.inner.lock(),
            irq,
        }
    }

    /// Masks IRQ+FIQ and takes the lock if it is free; otherwise restores DAIF and returns
    /// `None` at once (no waiting with interrupts masked).
    #[track_caller]
    #[inline]
    pub fn try_lock(&self) -> Option<IrqSafeMutexGuard<'_, T>> {
        let irq = IrqGuard::at(Location::caller());
        let guard = self.inner.try_lock()?;
        Some(IrqSafeMutexGuard { guard, irq })
    }

    /// Whether some CPU holds the lock (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// The value, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Releases the lock without a guard (the panic path's takeover).
    ///
    /// # Safety
    /// As `spin::Mutex::force_unlock`: the holder must never touch the value again, or its
    /// accesses race with the new holder's. The holder's `IrqGuard` is not dropped by this.
    pub unsafe fn force_unlock(&self) {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.inner.force_unlock() }
    }
}

impl<T: ?Sized> IrqSafeMutexGuard<'_, T> {
    /// The interrupt guard this lock holds (tests check it masked IRQs).
    pub fn irq_guard(&self) -> &IrqGuard {
        &self.irq
    }
}

impl<T: ?Sized> Deref for IrqSafeMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for IrqSafeMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

crate::ktest!(
    fn irq_guards_nest_and_restore_daif_exactly() -> KtestResult {
        use crate::{kassert, kassert_eq};
        let entry = daif();
        let nested = with_irqs_unmasked(|| {
            let open = daif();
            let outer = IrqGuard::new();
            let in_outer = daif();
            let inner = IrqGuard::new();
            let in_inner = daif();
            let inner_outermost = inner.is_outermost();
            drop(inner);
            let after_inner = daif();
            let outer_outermost = outer.is_outermost();
            drop(outer);
            (
                open,
                in_outer,
                in_inner,
                after_inner,
                daif(),
                inner_outermost,
                outer_outermost,
            )
        });
        let (open, in_outer, in_inner, after_inner, closed, inner_outermost, outer_outermost) =
            nested;
        kassert_eq!(open & (DAIF_I | DAIF_F), 0);
        kassert_eq!(in_outer, open | DAIF_I | DAIF_F);
        kassert_eq!(in_inner, in_outer);
        kassert_eq!(after_inner, in_outer);
        kassert_eq!(closed, open);
        kassert!(outer_outermost && !inner_outermost);
        kassert_eq!(daif(), entry);
        // Made with everything masked, a guard restores that state and records nothing.
        drop(IrqGuard::new());
        kassert_eq!(daif(), entry);
        // SError stays as it was (unmasked since boot, boot.S), under a guard too.
        kassert_eq!(entry & DAIF_A, 0);
        let g = IrqGuard::new();
        kassert_eq!(daif() & DAIF_A, 0);
        drop(g);
        Ok(())
    }
);

crate::ktest!(
    fn the_recorder_keeps_a_long_masked_section() -> KtestResult {
        use crate::{kassert, kassert_eq};
        let hz = crate::arch::aarch64::timer::frequency();
        kassert!(hz > 0);
        let masked = hz / 200; // 5 ms in counter ticks
        reset_masked();
        let cpu = cpu_index();
        let (line, spun) = with_irqs_unmasked(|| {
            let line = line!() + 1;
            let guard = IrqGuard::new();
            let start = daif::ticks();
            while daif::ticks().wrapping_sub(start) < masked {
                core::hint::spin_loop();
            }
            let spun = daif::ticks().wrapping_sub(start);
            drop(guard);
            (line, spun)
        });
        let r = masked_record(cpu);
        // At least what we masked; no upper bound (the machine is shared).
        kassert!(r.ticks >= masked, "the recorder missed the masked section");
        kassert!(spun >= masked);
        kassert!(r.micros(hz) >= 5000);
        kassert!(r.sections >= 1);
        let place = r.place.map(|p| (p.file(), p.line()));
        kassert_eq!(place, Some((file!(), line)));
        Ok(())
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn set_daif(v: u64) {
        daif::DAIF.with(|d| d.set(v));
    }

    fn advance(ticks: u64) {
        daif::TICKS.with(|t| t.set(t.get() + ticks));
    }

    #[test]
    fn guards_nest_and_restore_daif_exactly() {
        set_daif(DAIF_A); // SError masked, IRQs open: an unusual state, restored as found
        {
            let outer = IrqGuard::new();
            assert!(outer.is_outermost());
            assert_eq!(daif(), DAIF_A | DAIF_I | DAIF_F);
            {
                let inner = IrqGuard::new();
                assert!(!inner.is_outermost());
                assert!(irqs_masked());
            }
            assert_eq!(daif(), DAIF_A | DAIF_I | DAIF_F, "inner drop unmasked");
        }
        assert_eq!(daif(), DAIF_A);
        set_daif(DAIF_D | DAIF_I);
        drop(IrqGuard::new());
        assert_eq!(
            daif(),
            DAIF_D | DAIF_I,
            "an already-masked state stays masked"
        );
        set_daif(0);
    }

    #[test]
    fn mutex_masks_while_held_and_try_lock_restores() {
        set_daif(0);
        let m = IrqSafeMutex::new(5u32);
        {
            let mut g = m.lock();
            *g += 1;
            assert!(irqs_masked());
            assert!(g.irq_guard().is_outermost());
            assert!(m.try_lock().is_none());
            assert!(
                irqs_masked(),
                "a failed try_lock unmasked inside the held lock"
            );
        }
        assert_eq!(daif(), 0);
        assert!(m.try_lock().is_some_and(|g| *g == 6));
        assert_eq!(daif(), 0);
    }

    #[test]
    fn only_the_outermost_guard_records_and_the_longest_wins() {
        set_daif(0);
        // A slot of its own: the other tests record into slot 0 meanwhile.
        const CPU: usize = 3;
        daif::TEST_CPU.with(|c| c.set(Some(CPU)));
        let outer = IrqGuard::new();
        advance(700);
        {
            let _inner = IrqGuard::new();
            advance(5000);
        }
        // The inner guard restored a masked state: nothing recorded yet.
        assert_eq!(masked_record(CPU).sections, 0);
        let line = Location::caller().line();
        drop(outer);
        let r = masked_record(CPU);
        assert_eq!(r.ticks, 5700);
        assert_eq!(r.sections, 1);
        assert!(r
            .place
            .is_some_and(|p| p.file().ends_with("sync.rs") && p.line() < line));
        // A shorter section does not replace it.
        let g = IrqGuard::new();
        advance(10);
        drop(g);
        assert_eq!(masked_record(CPU).ticks, 5700);
        assert_eq!(masked_record(CPU).sections, 2);
        assert_eq!(r.micros(1_000_000), 5700);
        assert_eq!(r.micros(0), 0);
        assert_eq!(masked_record(MAX_CPUS).sections, 0);
        reset_masked();
        assert_eq!(masked_record(CPU).place, None);
    }
}
