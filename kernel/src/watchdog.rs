//! The SoC watchdogs the bootloader may have left running (gs101: `google,gs101-wdt`, 30 s in
//! the mainline tree; the downstream trees name one per cluster and may run both): found
//! through the device tree, stopped at boot the way Linux's s3c2410_wdt probe does
//! (levitate-hal's `samsung_wdt` says why that is safe without the PMU), and serviced while
//! one still runs.
//!
//! Servicing: [`service`] is the hook the timer tick calls on every tick once interrupts
//! exist; it takes no lock it could wait on, so it is safe from interrupt context on any CPU.
//! Until the tick lands, the shell's idle poll calls it too (the interim: a long command does
//! not pass through the idle poll, so a watchdog that refuses to stop could still expire
//! during one; with the watchdog stopped, as it is whenever WTCON accepts the write, nothing
//! depends on servicing).

use crate::devicetree;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use levitate_hal::arch::aarch64::mmu::early;
use levitate_hal::arch::aarch64::timer;
use levitate_hal::drivers::bus::MmioBus;
use levitate_hal::drivers::samsung_wdt::{self, SamsungWdt, State};
use levitate_mm::addr::PhysAddr;
use levitate_mm::dtb::devices;
use spin::Mutex;

/// What boot found and did.
struct Watchdog {
    wdt: SamsungWdt<MmioBus>,
    phys: PhysAddr,
    compatible: &'static str,
    node: &'static str,
    /// The counter's source clock, when the tree names a fixed clock for it.
    source_hz: Option<u32>,
    /// The tree's `timeout-sec` (what Linux would program; not necessarily ABL's setting).
    tree_timeout_s: Option<u32>,
    /// The registers as the bootloader left them.
    found: State,
    /// `stop` read back stopped.
    stopped: bool,
}

/// Most watchdogs handled (gs101 has one per CPU cluster that can reset: two).
const MAX_WATCHDOGS: usize = 2;

/// The watchdogs the tree has. Protects their registers. Lock order: this, then the heap's
/// (`report` formats into a `String` while holding it); nothing else is taken under it
/// (`init` maps and logs before it takes the lock).
/// `service` (the tick hook, interrupt context) takes only this one and only with
/// `try_lock`, so an interrupt on a CPU that holds it skips one service instead of
/// deadlocking.
static WATCHDOGS: Mutex<[Option<Watchdog>; MAX_WATCHDOGS]> = Mutex::new([None, None]);

/// The watchdog still runs after boot tried to stop it: `service` has work to do. Lets the
/// hook return without touching the lock or the device in the common case.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// `timer::ticks()` at the last service, 0 if never.
static LAST_SERVICE: AtomicU64 = AtomicU64::new(0);
/// The shortest time between two reloads: three orders of magnitude below the 30 s the tree
/// asks for. A watchdog a bootloader set much shorter would have reset the board before the
/// kernel could reach it.
const SERVICE_INTERVAL_MS: u64 = 10;
/// Services done.
static SERVICES: AtomicU64 = AtomicU64::new(0);

/// Looks for the watchdogs in the tree, maps each and stops it (or, if it will not stop,
/// starts servicing it), logging one line per watchdog.
pub fn init() {
    let fdt = devicetree::fdt();
    // Built without the lock held: mapping and logging take other locks.
    let mut slots: [Option<Watchdog>; MAX_WATCHDOGS] = [None, None];
    let mut used = 0;
    let mut running = false;
    devices::each_enabled(&fdt, samsung_wdt::COMPATIBLE, |found| {
        if used == MAX_WATCHDOGS {
            log::warn!(
                "watchdog at {}: more than {MAX_WATCHDOGS} watchdogs; this one is left alone",
                found.phys
            );
            return true;
        }
        let va = match early::ioremap(found.phys, samsung_wdt::MMIO_SIZE) {
            Ok(va) => va,
            Err(e) => {
                log::warn!("watchdog at {}: cannot map it: {e}", found.phys);
                return true;
            }
        };
        // SAFETY: `va` maps the watchdog's register page as Device memory, just mapped for
        // this driver alone and never unmapped.
        let bus = unsafe { MmioBus::new(va.as_usize(), samsung_wdt::MMIO_SIZE as usize) };
        let mut wdt = SamsungWdt::new(bus);
        let state = wdt.state();
        let stopped = !state.enabled || wdt.stop();
        running |= !stopped;
        log::info!(
            "{}",
            BootLine {
                phys: found.phys,
                was_enabled: state.enabled,
                stopped,
            }
        );
        slots[used] = Some(Watchdog {
            wdt,
            phys: found.phys,
            compatible: found.compatible,
            node: found.node.node.name,
            source_hz: devices::fixed_clock_rate(&fdt, &found.node, "watchdog_src"),
            tree_timeout_s: devices::u32_property(&found.node, "timeout-sec"),
            found: state,
            stopped,
        });
        used += 1;
        true
    });
    *WATCHDOGS.lock() = slots;
    RUNNING.store(running, Ordering::Release);
    service();
}

/// The boot log's watchdog line.
struct BootLine {
    phys: PhysAddr,
    was_enabled: bool,
    stopped: bool,
}

impl fmt::Display for BootLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.was_enabled, self.stopped) {
            (false, _) => write!(f, "watchdog at {}: found stopped", self.phys),
            (true, true) => write!(f, "watchdog at {}: was running, stopped", self.phys),
            (true, false) => write!(
                f,
                "watchdog at {}: running and would not stop: serviced from now on",
                self.phys
            ),
        }
    }
}

/// Restarts a running watchdog's countdown. The timer tick's hook (call it on every tick):
/// cheap when there is nothing to do, at most one register write per call, never waits for
/// a lock, callable from interrupt context on any CPU.
pub fn service() {
    if !RUNNING.load(Ordering::Acquire) {
        return;
    }
    // At most one reload per SERVICE_INTERVAL_MS however often the hook runs.
    let last = LAST_SERVICE.load(Ordering::Relaxed);
    let interval = timer::frequency() / 1000 * SERVICE_INTERVAL_MS;
    if last != 0 && timer::ticks().wrapping_sub(last) < interval {
        return;
    }
    let Some(mut held) = WATCHDOGS.try_lock() else {
        return; // the shell is reading them; the next tick services them
    };
    let mut serviced = false;
    for w in held.iter_mut().flatten() {
        serviced |= w.wdt.service();
    }
    if serviced {
        // 0 means "never": a service at tick 0 is recorded as 1.
        LAST_SERVICE.store(timer::ticks().max(1), Ordering::Relaxed);
        SERVICES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Milliseconds as "12.3 s".
struct Seconds(u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} s", self.0 / 1000, self.0 % 1000 / 100)
    }
}

/// The `watchdog` command's report: every watchdog found, then the servicing record.
pub fn report(out: &mut dyn fmt::Write) -> fmt::Result {
    let mut held = WATCHDOGS.lock();
    if held.iter().all(Option::is_none) {
        let names = samsung_wdt::COMPATIBLE.join(", ");
        return writeln!(
            out,
            "watchdog: not found (no enabled node compatible with {names})"
        );
    }
    for w in held.iter_mut().flatten() {
        report_one(w, out)?;
    }
    let last = LAST_SERVICE.load(Ordering::Relaxed);
    let count = SERVICES.load(Ordering::Relaxed);
    if last == 0 {
        writeln!(out, "  last service: never (serviced 0 times)")
    } else {
        let ago_ms = timer::ticks().saturating_sub(last) * 1000 / timer::frequency().max(1);
        writeln!(
            out,
            "  last service: {} ago (serviced {count} times, from the timer tick)",
            Seconds(ago_ms)
        )
    }
}

fn report_one(w: &mut Watchdog, out: &mut dyn fmt::Write) -> fmt::Result {
    let now = w.wdt.state();
    writeln!(
        out,
        "watchdog: {} at {} (node {})",
        w.compatible, w.phys, w.node
    )?;
    let onoff = |b: bool| if b { "on" } else { "off" };
    writeln!(
        out,
        "  at boot: {}, reset {}, interrupt {}",
        if w.found.enabled {
            "running"
        } else {
            "stopped"
        },
        onoff(w.found.reset_enabled),
        onoff(w.found.irq_enabled)
    )?;
    writeln!(
        out,
        "  now: {}, reset {}{}",
        if now.enabled { "enabled" } else { "stopped" },
        onoff(now.reset_enabled),
        if w.stopped {
            " (stopped at boot through WTCON)"
        } else {
            " (would not stop: serviced)"
        }
    )?;
    match w.source_hz.and_then(|hz| now.ticks_to_ms(now.reload, hz)) {
        Some(ms) => write!(
            out,
            "  timeout: {} (reload {} ticks of {} cycles at {} Hz)",
            Seconds(ms),
            now.reload,
            now.cycles_per_tick,
            w.source_hz.unwrap_or(0)
        )?,
        None => write!(
            out,
            "  timeout: unknown (reload {} ticks of {} cycles; no fixed source clock)",
            now.reload, now.cycles_per_tick
        )?,
    }
    match w.tree_timeout_s {
        Some(s) => writeln!(out, "; the tree's timeout-sec is {s} s"),
        None => writeln!(out),
    }
}
