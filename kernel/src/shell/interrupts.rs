//! Shell commands about interrupts and time: `irqs` (counts as in /proc/interrupts) and
//! `uptime`.

use super::CmdError;
use crate::{print, println, smp, tick};
use levitate_hal::arch::aarch64::timer;

fn no_args(args: &[&str]) -> Result<(), CmdError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(CmdError::Usage)
    }
}

/// `irqs [panic]`: interrupt counts per ID and per CPU, in /proc/interrupts' layout; `panic`
/// makes an interrupt whose handler panics (to see that report).
pub fn irqs(args: &[&str]) -> Result<(), CmdError> {
    if args == ["panic"] {
        crate::irq::provoke_handler_panic()
            .map_err(|e| CmdError::Failed(alloc::format!("cannot provoke it: {e}")))?;
        return Err(CmdError::Failed(
            "the interrupt did not arrive (interrupts masked on this CPU?)".into(),
        ));
    }
    no_args(args)?;
    // Built first, printed in one go: formatting takes no console lock per row.
    let mut text = alloc::string::String::new();
    crate::irq::write_table(&mut text)
        .map_err(|_| CmdError::Failed("cannot format the table".into()))?;
    print!("{text}");
    Ok(())
}

/// `uptime`: time since the counter started, and the tick each CPU took.
pub fn uptime(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    let ns = timer::uptime_ns();
    let secs = ns / 1_000_000_000;
    println!(
        "up {}:{:02}:{:02}.{:02} ({}.{:03} s, counter at {} Hz)",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ns / 10_000_000 % 100,
        secs,
        ns / 1_000_000 % 1000,
        timer::frequency()
    );
    match tick::hz() {
        None => println!("tick: off (no interrupt controller or timer in the device tree)"),
        Some(hz) => {
            print!("tick: {hz} Hz;");
            for c in smp::cpus() {
                print!(" cpu{} {}", c.index, tick::ticks(c.index));
            }
            println!(" ticks");
        }
    }
    Ok(())
}
