//! The periodic tick: the generic timer's EL1 virtual timer (its PPI from the device tree)
//! interrupting every online CPU `tick=HZ` times a second (default 100), and the tick hooks
//! other code runs on every tick (docs/interrupts.md).
//!
//! ```ignore
//! tick::register_tick_hook(my_hook)?; // fn my_hook(), on every tick on every CPU
//! ```
//!
//! The tick handler only counts, re-arms the timer and calls the hooks: it takes no lock
//! (non-interrupt code could hold it on this CPU). Hooks obey the same rule until the
//! interrupt-safe locks land; they run in interrupt context with interrupts masked.

use crate::irq::{self, IntId, RegisterError};
use crate::smp::{self, MAX_CPUS};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use levitate_hal::arch::aarch64::timer::{self, virt};
use levitate_mm::dtb::interrupts::Specifier;
use spin::Once;

/// Default tick rate (Linux's HZ=100 for many arm64 configs).
pub const DEFAULT_HZ: u32 = 100;
/// The `tick=` range: fast enough for watchdogs, slow enough for TCG.
pub const HZ_RANGE: core::ops::RangeInclusive<u32> = 10..=1000;

/// The timer PPI, once registered.
static INTID: Once<IntId> = Once::new();
/// Counter ticks between timer interrupts.
static PERIOD: AtomicU64 = AtomicU64::new(0);
/// The configured rate.
static HZ: AtomicU64 = AtomicU64::new(0);
/// Ticks taken per CPU.
static TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Each CPU's next deadline (virtual count); only that CPU writes its entry.
static DEADLINE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Whether each CPU's tick runs.
static RUNNING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Most tick hooks.
pub const MAX_HOOKS: usize = 8;
/// The hooks, filled in order; the handler reads them lock-free.
static HOOKS: [Once<fn()>; MAX_HOOKS] = [const { Once::new() }; MAX_HOOKS];

/// Why `register_tick_hook` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookError {
    /// All `MAX_HOOKS` slots are used.
    Full,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {MAX_HOOKS} tick hook slots are used")
    }
}

/// Runs `hook` on every tick on every CPU (in interrupt context: interrupts masked, on the
/// exception stack; it must be short and take only `IrqSafeMutex` locks, or try-lock). Hooks
/// cannot be removed. Works before the tick starts and when there is no tick (never called).
pub fn register_tick_hook(hook: fn()) -> Result<(), HookError> {
    for slot in &HOOKS {
        let mut ours = false;
        slot.call_once(|| {
            ours = true;
            hook
        });
        if ours {
            return Ok(());
        }
    }
    Err(HookError::Full)
}

/// Why the tick could not be set up.
#[derive(Debug)]
pub enum TickError {
    /// The counter frequency (CNTFRQ_EL0) is 0: firmware did not program it.
    NoFrequency,
    /// The PPI could not be registered.
    Register(RegisterError),
    /// The timer's interrupt is an SPI: a per-CPU tick needs a PPI.
    NotPrivate(IntId),
}

impl fmt::Display for TickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFrequency => write!(f, "CNTFRQ_EL0 is 0"),
            Self::Register(e) => write!(f, "{e}"),
            Self::NotPrivate(id) => write!(f, "the timer interrupt {id} is not a PPI"),
        }
    }
}

/// Registers the tick's handler for the virtual timer interrupt `spec` at `hz` ticks a second
/// (the boot CPU, once). Each CPU then calls `start_this_cpu`.
pub fn init(spec: Specifier, hz: u32) -> Result<(), TickError> {
    if !spec.intid.is_private() {
        return Err(TickError::NotPrivate(spec.intid));
    }
    let freq = timer::frequency();
    if freq == 0 {
        return Err(TickError::NoFrequency);
    }
    PERIOD.store((freq / u64::from(hz)).max(1), Ordering::Relaxed);
    HZ.store(u64::from(hz), Ordering::Relaxed);
    irq::register(spec.intid, spec.trigger, "arch_timer", on_tick).map_err(TickError::Register)?;
    INTID.call_once(|| spec.intid);
    Ok(())
}

/// Starts the tick on the calling CPU (after `irq::init_this_cpu`, before unmasking).
pub fn start_this_cpu() {
    let Some(&intid) = INTID.get() else { return };
    let me = smp::current().index;
    irq::enable_this_cpu(intid);
    let next = virt::count() + PERIOD.load(Ordering::Relaxed);
    DEADLINE[me].store(next, Ordering::Relaxed);
    RUNNING[me].store(true, Ordering::Release);
    virt::fire_at(next);
}

/// The tick's interrupt handler: count, re-arm, hooks. Nothing else (see the module doc).
fn on_tick(_: IntId) {
    let me = smp::current().index;
    TICKS[me].fetch_add(1, Ordering::Relaxed);
    let period = PERIOD.load(Ordering::Relaxed);
    // Deadlines advance by whole periods so the rate does not drift; when this CPU was held
    // up (an emulator's vCPU descheduled) past the next one, skip ahead instead of firing a
    // burst of late ticks.
    let now = virt::count();
    let mut next = DEADLINE[me].load(Ordering::Relaxed) + period;
    if next <= now {
        next = now + period;
    }
    DEADLINE[me].store(next, Ordering::Relaxed);
    // Writing the compare value deasserts the timer's (level) output before the EOI.
    virt::fire_at(next);
    for hook in HOOKS.iter().map_while(Once::get) {
        hook();
    }
}

/// The timer's interrupt ID, once the tick is registered.
#[cfg_attr(not(feature = "ktest"), allow(dead_code))] // used by the in-kernel tests
pub fn intid() -> Option<IntId> {
    INTID.get().copied()
}

/// The tick rate, or `None` when there is no tick.
pub fn hz() -> Option<u32> {
    INTID.get().map(|_| HZ.load(Ordering::Relaxed) as u32)
}

/// Ticks CPU `cpu` took.
pub fn ticks(cpu: usize) -> u64 {
    TICKS.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed))
}

/// Whether CPU `cpu`'s tick runs.
#[cfg_attr(not(feature = "ktest"), allow(dead_code))] // used by the in-kernel tests
pub fn running(cpu: usize) -> bool {
    RUNNING.get(cpu).is_some_and(|r| r.load(Ordering::Acquire))
}

/// Sets up interrupts and the tick on the boot CPU: finds the timer, registers the tick,
/// brings up this CPU's interface and unmasks. Without a controller there is nothing to do;
/// on any problem with the timer it warns and carries on without a tick.
pub fn start_boot_cpu(hz: u32) {
    if irq::controller().is_none() {
        return;
    }
    match crate::devicetree::find_timer_irq(irq::controller_phandle()) {
        Ok(Some(spec)) => match init(spec, hz) {
            Ok(()) => log::info!(
                "tick: {hz} Hz on the EL1 virtual timer, interrupt {}, {} ({} Hz counter)",
                spec.intid,
                spec.trigger.as_str(),
                timer::frequency()
            ),
            Err(e) => log::warn!("tick: {e}: running without a tick"),
        },
        Ok(None) => {
            log::warn!("tick: no arm,armv8-timer node in the device tree: running without a tick")
        }
        Err(e) => log::error!("tick: {e}: running without a tick"),
    }
    start_cpu_interrupts();
}

/// The per-CPU half, run by every CPU (the boot CPU through `start_boot_cpu`, secondaries
/// from `smp::secondary_main`): CPU interface, tick, then IRQs unmasked.
pub fn start_cpu_interrupts() {
    if irq::controller().is_none() {
        return;
    }
    if let Err(e) = irq::init_this_cpu() {
        log::error!(
            "interrupts: CPU {}: {e}: interrupts stay masked on it",
            smp::current().index
        );
        return;
    }
    start_this_cpu();
    irq::unmask_this_cpu();
}

levitate_hal::ktest!(
    fn ticks_arrive_on_every_cpu_at_roughly_the_rate() -> KtestResult {
        use levitate_hal::kassert;
        let hz = crate::irq::ktests::need(hz(), "no tick")?;
        let cpus: alloc::vec::Vec<usize> = smp::cpus().map(|c| c.index).collect();
        let before: alloc::vec::Vec<u64> = cpus.iter().map(|&c| ticks(c)).collect();
        let start = timer::ticks();
        let wait = timer::frequency() / 2; // half a second of counter time
        while timer::ticks().wrapping_sub(start) < wait {
            aarch64_cpu::asm::wfe();
        }
        let elapsed = timer::ticks().wrapping_sub(start);
        let expected = u64::from(hz) * elapsed / timer::frequency();
        for (i, &c) in cpus.iter().enumerate() {
            kassert!(running(c), "a CPU's tick is not running");
            let got = ticks(c) - before[i];
            // Loose on purpose: the host is shared and TCG vCPUs get descheduled. At least a
            // fifth of the ticks, and no runaway (a re-arm bug fires far more).
            kassert!(
                got * 5 >= expected,
                "a CPU took under 20% of the expected ticks"
            );
            kassert!(
                got <= expected * 3 + 10,
                "a CPU took over 3x the expected ticks"
            );
        }
        Ok(())
    }
);

levitate_hal::ktest!(
    fn tick_hooks_run() -> KtestResult {
        use levitate_hal::kassert;
        static HOOKED: AtomicU64 = AtomicU64::new(0);
        fn hook() {
            HOOKED.fetch_add(1, Ordering::Relaxed);
        }
        kassert!(register_tick_hook(hook).is_ok());
        let start = timer::ticks();
        while HOOKED.load(Ordering::Relaxed) == 0
            && timer::ticks().wrapping_sub(start) < timer::frequency()
        {
            aarch64_cpu::asm::wfe();
        }
        kassert!(HOOKED.load(Ordering::Relaxed) > 0, "the hook never ran");
        Ok(())
    }
);
