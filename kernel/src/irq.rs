//! Interrupts: the GIC found in the device tree, the dispatch table, the IRQ entry that
//! vectors.S calls, and the registration API (docs/interrupts.md).
//!
//! ```ignore
//! irq::register(intid, Trigger::Level, "my_device", my_handler)?; // fn my_handler(IntId)
//! ```
//!
//! Handlers run on the CPU's exception stack with interrupts masked on that CPU; they must be
//! short and must return. Until the interrupt-safe locks (`IrqSafe...`) land, a handler must
//! not take any lock that non-interrupt code may hold (the interrupted code on the same CPU
//! could be holding it: a deadlock). The console is such a lock: this module only ever
//! `try_lock`s it from interrupt context.

use crate::smp::{self, MAX_CPUS};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};
use levitate_hal::arch::aarch64::exception::{self, TrapFrame};
use levitate_hal::arch::aarch64::{cpu, timer};
use levitate_hal::drivers::gic::Gic;
use levitate_hal::irq::{DispatchTable, Dispatched, Registration};
pub use levitate_hal::irq::{Handler, IntId, RegisterError, Trigger};
use spin::Once;

/// The controller, once `probe` found and initialised it.
static GIC: Once<Gic> = Once::new();

/// Handlers and counts. Lock-free (see levitate_hal::irq).
static TABLE: DispatchTable<MAX_CPUS> = DispatchTable::new();

/// The interrupt each CPU is handling, plus one (0: none): the panic report names it.
static IN_HANDLER: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Interrupt IDs that arrived without a handler and whose warning is not printed yet, one bit
/// each: the IRQ path prints them only when it can take the console without waiting.
static UNREPORTED: [AtomicU32; 32] = [const { AtomicU32::new(0) }; 32];

/// The controller node's phandle (`None`: it has none, so no node can name it as parent).
static PHANDLE: Once<Option<u32>> = Once::new();

/// The controller node's phandle, for resolving `interrupts` properties.
pub fn controller_phandle() -> Option<u32> {
    PHANDLE.get().copied().flatten()
}

/// Finds the interrupt controller in the device tree, maps it and sets up its distributor.
/// Must run before the final page tables are built (they re-map `ioremap`'s windows). A tree
/// without one is not an error: the kernel runs without interrupts, as before.
pub fn probe() {
    match crate::devicetree::find_gic() {
        Ok(Some((gic, info))) => {
            gic.init_distributor(cpu::mpidr());
            let gic = GIC.call_once(|| gic);
            exception::set_irq_handler(irq_entry);
            log::info!(
                "interrupts: {} at {} ({}), {} interrupt IDs",
                gic.name(),
                info.dist,
                info.path,
                gic.lines()
            );
            PHANDLE.call_once(|| info.phandle);
        }
        Ok(None) => {
            log::warn!(
                "interrupts: no GICv2/GICv3 node in the device tree: running without \
                 interrupts (no timer tick)"
            );
        }
        Err(e) => {
            log::warn!("interrupts: {e}: running without interrupts (no timer tick)");
        }
    }
}

/// The controller, if there is one.
pub fn controller() -> Option<&'static Gic> {
    GIC.get()
}

/// Brings up the calling CPU's CPU interface (GICv3: its redistributor too) and enables the
/// private interrupts (PPIs, SGIs) already registered. Every CPU calls it once, before it
/// unmasks interrupts.
pub fn init_this_cpu() -> Result<(), levitate_hal::drivers::gic::GicError> {
    let Some(gic) = GIC.get() else { return Ok(()) };
    let me = smp::current().index;
    gic.init_cpu(me, cpu::mpidr())?;
    for id in (0..32).filter_map(IntId::new) {
        if let Some(reg) = TABLE.registration(id) {
            gic.configure(id, reg.trigger, me);
            gic.enable(id, me);
        }
    }
    Ok(())
}

/// Unmasks IRQs on the calling CPU (clears PSTATE.I). Call once its interface and tick are
/// set up.
pub fn unmask_this_cpu() {
    // SAFETY: writes DAIFClr only; what interrupts may then run is the dispatcher below,
    // which saves and restores the interrupted context in vectors.S.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nomem, nostack)) };
}

/// Whether IRQs are unmasked on this CPU.
#[cfg_attr(not(feature = "ktest"), allow(dead_code))] // used by the in-kernel tests
pub fn unmasked_here() -> bool {
    let daif: u64;
    // SAFETY: reads DAIF, no side effects.
    unsafe { core::arch::asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack)) };
    daif & (1 << 7) == 0
}

/// Registers `handler` for `intid` and enables it: an SPI at the distributor (routed to the
/// boot CPU), a PPI or SGI on the calling CPU now and on every CPU that runs
/// `init_this_cpu` later (CPUs already up must call `enable_this_cpu` themselves).
/// Errors: no controller or a number past what it implements (`OutOfRange`), or a taken ID.
pub fn register(
    intid: IntId,
    trigger: Trigger,
    name: &'static str,
    handler: Handler,
) -> Result<(), RegisterError> {
    let gic = GIC.get().ok_or(RegisterError::OutOfRange(intid.as_u32()))?;
    if intid.as_u32() >= gic.lines() {
        return Err(RegisterError::OutOfRange(intid.as_u32()));
    }
    TABLE.register(
        intid.as_u32(),
        Registration {
            name,
            trigger,
            handler,
        },
    )?;
    enable_this_cpu(intid);
    Ok(())
}

/// Configures and enables a registered `intid` on the calling CPU (for PPIs and SGIs, which
/// are banked per CPU; for an SPI this enables it for all).
pub fn enable_this_cpu(intid: IntId) {
    let (Some(gic), Some(reg)) = (GIC.get(), TABLE.registration(intid)) else {
        return;
    };
    let me = smp::current().index;
    gic.configure(intid, reg.trigger, me);
    gic.enable(intid, me);
}

/// The IRQ path, called by the HAL's `levitate_irq` for an IRQ taken at EL1 with interrupts
/// masked: acknowledge, dispatch, end. The frame (the interrupted context) is not touched.
fn irq_entry(_frame: &mut TrapFrame) {
    let Some(gic) = GIC.get() else { return };
    let me = smp::current().index;
    let iar = gic.acknowledge();
    let raw = gic.intid_of(iar);
    IN_HANDLER[me].store(raw + 1, Ordering::Relaxed);
    match TABLE.dispatch(raw, me) {
        // 1020-1023 are not active after an acknowledge, so there is nothing to end
        // (IHI 0069H 4.1.1; IHI 0048B 4.4.5: writing a spurious ID to EOIR is ignored).
        Dispatched::Spurious => {}
        Dispatched::Handled => gic.end_of_interrupt(iar),
        Dispatched::Unhandled { intid, first } => {
            // Disable before ending, so the interrupt cannot be taken again at once.
            gic.disable(intid, me);
            gic.end_of_interrupt(iar);
            if first {
                let (w, bit) = levitate_hal::drivers::gic::bit_of(intid.as_u32());
                UNREPORTED[w].fetch_or(bit, Ordering::Relaxed);
            }
        }
    }
    IN_HANDLER[me].store(0, Ordering::Relaxed);
    report_unhandled(gic, me);
}

/// Prints the warning for each newly unhandled interrupt, if the console can be had without
/// waiting (it may be held by the code this interrupt interrupted); otherwise a later
/// interrupt prints it.
fn report_unhandled(gic: &Gic, me: usize) {
    for (w, word) in UNREPORTED.iter().enumerate() {
        let bits = word.load(Ordering::Relaxed);
        if bits == 0 {
            continue;
        }
        for b in 0..32 {
            if bits & (1 << b) == 0 {
                continue;
            }
            let Some(intid) = IntId::new(w as u32 * 32 + b) else {
                continue;
            };
            let ns = timer::uptime_ns();
            let printed = crate::console::try_write_fmt(format_args!(
                "[{:5}.{:06}] WARN  irq: interrupt {intid} arrived on CPU {me} with no handler: \
                 counted and disabled at the {}\n",
                ns / 1_000_000_000,
                (ns % 1_000_000_000) / 1000,
                gic.name()
            ));
            if !printed {
                return;
            }
            word.fetch_and(!(1 << b), Ordering::Relaxed);
        }
    }
}

/// Called by the panic handler: names the interrupt whose handler was running on this CPU.
pub fn report_panic(out: &mut impl Write) {
    let me = smp::current().index;
    let Some(intid) = IN_HANDLER
        .get(me)
        .map(|v| v.load(Ordering::Relaxed))
        .and_then(|v| v.checked_sub(1))
        .and_then(IntId::new)
    else {
        return;
    };
    let name = TABLE.registration(intid).map_or("(none)", |r| r.name);
    let _ = writeln!(
        out,
        "\nin the handler \"{name}\" of interrupt {intid} on CPU {me}"
    );
}

/// For `irqs panic`: registers a handler that panics on the highest SPI the controller
/// implements and makes it pending, to show the panic report of an interrupt handler.
/// Returns only if that cannot be done.
pub fn provoke_handler_panic() -> Result<(), RegisterError> {
    fn panicking(id: IntId) {
        panic!("irqs panic: the handler of interrupt {id} panicked on purpose");
    }
    let gic = GIC.get().ok_or(RegisterError::OutOfRange(0))?;
    let id = gic
        .lines()
        .checked_sub(1)
        .and_then(IntId::new)
        .ok_or(RegisterError::OutOfRange(gic.lines()))?;
    register(id, Trigger::Edge, "irqs_panic", panicking)?;
    gic.set_pending(id, smp::current().index);
    // The SPI is routed to the boot CPU; wait for it there (a second is plenty).
    let start = timer::ticks();
    while timer::ticks().wrapping_sub(start) < timer::frequency() {
        core::hint::spin_loop();
    }
    Ok(())
}

/// How often `intid` arrived on CPU `cpu`.
#[cfg_attr(not(feature = "ktest"), allow(dead_code))] // used by the in-kernel tests
pub fn count(intid: IntId, cpu: usize) -> u64 {
    TABLE.count(intid, cpu)
}

/// Writes the `irqs` table in the layout of Linux's /proc/interrupts: a header of online
/// CPUs, then one row per interrupt that is registered or has arrived (ID, a count per CPU,
/// controller, type and number, trigger, handler), then the spurious row.
pub fn write_table(out: &mut impl Write) -> core::fmt::Result {
    let Some(gic) = GIC.get() else {
        return writeln!(out, "no interrupt controller: interrupts are off");
    };
    let cpus: alloc::vec::Vec<usize> = smp::cpus().map(|c| c.index).collect();
    write!(out, "     ")?;
    for c in &cpus {
        write!(out, " {:>10}", alloc::format!("CPU{c}"))?;
    }
    writeln!(out)?;
    for id in TABLE.active() {
        write!(out, "{:>4}:", id.as_u32())?;
        for &c in &cpus {
            write!(out, " {:>10}", TABLE.count(id, c))?;
        }
        let hw = match id.kind() {
            levitate_hal::irq::IntKind::Sgi => alloc::format!("SGI {}", id.as_u32()),
            levitate_hal::irq::IntKind::Ppi => alloc::format!("PPI {}", id.as_u32() - 16),
            levitate_hal::irq::IntKind::Spi => alloc::format!("SPI {}", id.as_u32() - 32),
        };
        match TABLE.registration(id) {
            Some(r) => writeln!(
                out,
                "  {:<6} {:<7} {:<6} {}",
                gic.name(),
                hw,
                r.trigger.as_str(),
                r.name
            )?,
            None => writeln!(
                out,
                "  {:<6} {:<7} {:<6} (no handler: disabled)",
                gic.name(),
                hw,
                "-"
            )?,
        }
    }
    write!(out, " SPU:")?;
    for &c in &cpus {
        write!(out, " {:>10}", TABLE.spurious(c))?;
    }
    writeln!(out, "  spurious")
}

levitate_hal::ktest!(
    fn registration_errors_are_typed() -> KtestResult {
        use levitate_hal::{kassert, kassert_eq};
        let gic = ktests::need(controller(), "no interrupt controller")?;
        fn nothing(_: IntId) {}
        let tick = ktests::need(crate::tick::intid(), "no tick registered")?;
        match register(tick, Trigger::Level, "again", nothing) {
            Err(RegisterError::Taken { by, .. }) => kassert_eq!(by, "arch_timer"),
            _ => kassert!(
                false,
                "registering the tick's PPI twice was not refused as taken"
            ),
        }
        if let Some(past) = IntId::new(gic.lines()) {
            kassert_eq!(
                register(past, Trigger::Level, "past", nothing),
                Err(RegisterError::OutOfRange(gic.lines()))
            );
        }
        Ok(())
    }
);

#[cfg(feature = "ktest")]
pub(crate) mod ktests {
    use super::*;
    use core::sync::atomic::AtomicU64;
    use levitate_hal::ktest::{KtestFailure, KtestMessage, KtestResult};
    use levitate_hal::{kassert, kassert_eq};

    /// `Some` value or a failed test saying `msg`.
    // KtestFailure is inline by design (no heap needed to fail a test).
    #[allow(clippy::result_large_err)]
    #[track_caller]
    pub fn need<T>(v: Option<T>, msg: &'static str) -> Result<T, KtestFailure> {
        v.ok_or(KtestFailure {
            file: core::panic::Location::caller().file(),
            line: core::panic::Location::caller().line(),
            message: KtestMessage::Static(msg),
        })
    }

    /// Waits until `done()` or `ms` milliseconds of counter time passed; true if done.
    fn wait_for(ms: u64, done: impl Fn() -> bool) -> bool {
        let start = timer::ticks();
        let limit = timer::frequency() / 1000 * ms;
        while timer::ticks().wrapping_sub(start) < limit {
            if done() {
                return true;
            }
            core::hint::spin_loop();
        }
        done()
    }

    fn total(id: IntId) -> u64 {
        (0..MAX_CPUS).map(|c| count(id, c)).sum()
    }

    /// An SPI the tree gives no device and nothing registered: the highest implemented, minus
    /// `below`.
    fn spare_spi(gic: &Gic, below: u32) -> Option<IntId> {
        IntId::new(gic.lines().checked_sub(1 + below)?)
            .filter(|id| !id.is_private() && TABLE.registration(*id).is_none())
    }

    #[allow(clippy::result_large_err)] // as `need`
    fn check_unhandled(gic: &Gic, id: IntId) -> KtestResult {
        let me = smp::current().index;
        kassert!(unmasked_here(), "interrupts are masked on the test CPU");
        let before = total(id);
        gic.enable(id, me);
        gic.set_pending(id, me);
        kassert!(
            wait_for(1000, || total(id) > before),
            "an unregistered pending interrupt never arrived"
        );
        kassert!(
            !gic.is_enabled(id, me),
            "the unhandled interrupt stayed enabled"
        );
        kassert!(TABLE.was_unhandled(id));
        // Pending again while disabled: it must not be taken (never loops).
        let after = total(id);
        gic.set_pending(id, me);
        wait_for(50, || false);
        kassert_eq!(total(id), after);
        gic.clear_pending(id, me);
        Ok(())
    }

    levitate_hal::ktest!(
        fn unregistered_spi_is_counted_then_masked() -> KtestResult {
            let gic = need(controller(), "no interrupt controller")?;
            let id = need(spare_spi(gic, 0), "no spare SPI")?;
            check_unhandled(gic, id)
        }
    );

    levitate_hal::ktest!(
        fn unregistered_ppi_is_counted_then_masked() -> KtestResult {
            let gic = need(controller(), "no interrupt controller")?;
            if gic.name() == "GICv2" && smp::online() > 1 {
                // Observed on QEMU 7.2: its GICv2 model does not deliver a PPI made pending
                // through GICD_ISPENDR0 once there is more than one CPU. The SPI test covers
                // the unhandled path there.
                return Ok(());
            }
            // PPI 4 (IntId 20): QEMU virt wires nothing to it.
            let id = IntId::ppi(4).filter(|id| TABLE.registration(*id).is_none());
            check_unhandled(gic, need(id, "PPI 4 is in use")?)
        }
    );

    static HANDLED: AtomicU64 = AtomicU64::new(0);
    fn test_handler(_: IntId) {
        HANDLED.fetch_add(1, Ordering::Relaxed);
        // A level interrupt made pending by software stays pending until cleared.
        if let (Some(gic), Some(id)) = (controller(), HANDLED_ID.get()) {
            gic.clear_pending(*id, smp::current().index);
        }
    }
    static HANDLED_ID: Once<IntId> = Once::new();

    levitate_hal::ktest!(
        fn registered_spi_runs_its_handler() -> KtestResult {
            let gic = need(controller(), "no interrupt controller")?;
            let id = need(spare_spi(gic, 1), "no spare SPI")?;
            let id = *HANDLED_ID.call_once(|| id);
            kassert!(register(id, Trigger::Edge, "ktest_spi", test_handler).is_ok());
            let me = smp::current().index;
            let before = count(id, me);
            gic.set_pending(id, me);
            kassert!(
                wait_for(1000, || HANDLED.load(Ordering::Relaxed) > 0),
                "the handler never ran"
            );
            kassert_eq!(count(id, me), before + 1);
            kassert!(gic.is_enabled(id, me), "a handled interrupt was disabled");
            Ok(())
        }
    );
}
