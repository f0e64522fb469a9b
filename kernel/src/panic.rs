//! The panic handler: message, location and a frame-pointer backtrace with symbol names, then
//! the end of the run (a non-zero QEMU exit under semihosting, a halt otherwise).

use crate::power;
use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};
use levitate_hal::arch::aarch64::{cpu, semihosting};
use levitate_hal::{backtrace, ksyms};

static PANICS: AtomicU32 = AtomicU32::new(0);

/// Writes to the console, or through semihosting when there is no console but semihosting is
/// on, so a panic before the console exists is still seen under QEMU.
struct PanicWriter;

impl Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if crate::console::present() {
            crate::console::write_fmt_panic(format_args!("{s}"));
        } else if power::semihosting_enabled() {
            semihosting::write(s.as_bytes());
        }
        Ok(())
    }
}

/// Prints a backtrace starting at frame pointer `fp`.
pub fn print_backtrace(out: &mut impl Write, fp: u64) {
    let _ = writeln!(out, "backtrace:");
    let mut stacks = [const { 0..0 }; 16];
    let n = levitate_hal::stacks::ranges(&mut stacks);
    let mut i = 0;
    backtrace::walk(
        fp,
        &stacks[..n],
        // SAFETY: `walk` only reads 16-byte-aligned addresses inside registered kernel stacks,
        // which are mapped and readable for as long as they are registered.
        |addr| unsafe { core::ptr::read_volatile(addr as *const u64) },
        |lr| {
            // Show the call instruction, the one before the return address.
            let pc = lr.wrapping_sub(4);
            let _ = match ksyms::resolve(pc) {
                Some((name, off)) => writeln!(out, "  #{i:<2} {pc:#018x} {name}+{off:#x}"),
                None => writeln!(out, "  #{i:<2} {pc:#018x} ?"),
            };
            i += 1;
        },
    );
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut out = PanicWriter;
    if PANICS.fetch_add(1, Ordering::SeqCst) > 0 {
        // A panic while panicking: print as little as possible and stop.
        let _ = writeln!(out, "\nnested panic: {}", info.message());
        power::exit_failure(power::EXIT_PANIC);
    }
    crate::ktest_runner::report_panic(&mut out);
    crate::irq::report_panic(&mut out);
    let _ = writeln!(out, "\nKERNEL PANIC: {}", info.message());
    if let Some(loc) = info.location() {
        let _ = writeln!(out, "  at {}:{}:{}", loc.file(), loc.line(), loc.column());
    }
    print_backtrace(&mut out, cpu::frame_pointer());
    power::exit_failure(power::EXIT_PANIC)
}
