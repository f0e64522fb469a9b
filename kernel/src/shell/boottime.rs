//! The boot-time report: the line at the first prompt and the `boottime` command.

use super::CmdError;
use crate::boottime::{self, Ms, Phase};
use crate::println;

/// Marks the shell phase, logs the phases once and prints the boot line, just before the
/// first prompt.
pub fn first_prompt() {
    boottime::mark(Phase::Shell);
    let mut line = alloc::string::String::new();
    for p in Phase::ALL {
        if let Some(us) = boottime::phase_us(p) {
            let sep = if line.is_empty() { "" } else { ", " };
            line.push_str(&alloc::format!("{sep}{} {} ms", p.name(), Ms(us)));
        }
    }
    log::info!("boot phases (since kernel entry): {line}");
    let total = boottime::phase_us(Phase::Shell).unwrap_or(0);
    println!(
        "boot: {} ms to the shell (kernel entry -> first prompt; not counted: what ran before \
         the kernel, QEMU's start-up or a bootloader; the counter read {} ms at entry)",
        Ms(total),
        Ms(boottime::entry_counter_us())
    );
}

/// `boottime`: every phase's end, since kernel entry, with the time it took.
pub fn boottime(args: &[&str]) -> Result<(), CmdError> {
    if !args.is_empty() {
        return Err(CmdError::Usage);
    }
    println!(
        "boot phases, ms since kernel entry (counter {} Hz, {} ms at entry):",
        levitate_hal::arch::aarch64::timer::frequency(),
        Ms(boottime::entry_counter_us())
    );
    let mut last = 0;
    for p in Phase::ALL {
        match boottime::phase_us(p) {
            Some(us) => {
                println!(
                    "  {:<12} {:>9} {:>9}  {}",
                    p.name(),
                    Ms(us),
                    alloc::format!("+{}", Ms(us.saturating_sub(last))),
                    p.what()
                );
                last = us;
            }
            None => println!("  {:<12} {:>9} {:>9}  {}", p.name(), "-", "", p.what()),
        }
    }
    println!("now: {} ms since kernel entry", Ms(boottime::now_us()));
    Ok(())
}
