//! The `log` backend: every record goes to the console as
//! `[    1.234567] INFO  message`, stamped from the generic timer.
//!
//! Interrupt safety: the logger has no lock of its own. A record is formatted straight into
//! the console under the console's `IrqSafeMutex` (IRQ+FIQ masked while held, a leaf in the
//! lock order), and the timestamp is a counter read; so interrupt handlers may log, on any
//! CPU, whatever the interrupted code was doing, except printing a panic report (then other
//! CPUs' lines are dropped, see console.rs).

use levitate_hal::arch::aarch64::timer;
use log::{LevelFilter, Log, Metadata, Record};

struct KernelLogger;

static LOGGER: KernelLogger = KernelLogger;

impl Log for KernelLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ns = timer::uptime_ns();
        crate::println!(
            "[{:5}.{:06}] {:<5} {}",
            ns / 1_000_000_000,
            (ns % 1_000_000_000) / 1000,
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Installs the logger with the given maximum level.
pub fn init(level: LevelFilter) {
    // set_logger fails only if a logger is already set, which would be a second call: keep
    // the first and just adjust the level.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
