//! Interrupt safety: `irqstat` (masked intervals per CPU, the tick's allocation stress),
//! allocation from the tick stress while `stress frames`/`stress heap` run on every CPU, and
//! `fault serror` (on QEMU a bad device write is a synchronous external abort, decoded, taken
//! with SError unmasked).

use super::harness::{boot, check_commands, memcheck_says, stress_says, Expect, Says, Tally};
use crate::qemu::RunOptions;
use crate::Result;
use std::path::Path;

/// Runs this file's scenarios on the normal build `image`.
pub fn run(tally: &mut Tally, image: &Path, _work: &Path, base: &RunOptions) -> Result<()> {
    println!("== interrupt safety");
    irqstat_and_tick_stress(tally, image, base)?;
    fault_serror(tally, image, base)?;
    Ok(())
}

/// `irqstat`'s table: a header, then one row per online CPU (`cpuN`, microseconds, sections).
fn irqstat_rows(text: &str, cpus: usize) -> std::result::Result<(), String> {
    let mut lines = text.lines();
    if !lines
        .next()
        .is_some_and(|l| l.starts_with("CPU     longest masked  sections  where"))
    {
        return Err("no header line".into());
    }
    for cpu in 0..cpus {
        let Some(line) = lines.next() else {
            return Err(format!("no row for cpu{cpu}"));
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ok = fields.len() == 5
            && fields[0] == format!("cpu{cpu}")
            && fields[1].parse::<u64>().is_ok()
            && fields[2] == "us"
            && fields[3].parse::<u64>().is_ok();
        if !ok {
            return Err(format!("bad row {line:?}"));
        }
    }
    Ok(())
}

/// Per-CPU tick-stress lines: `cpuN   tick stress: R runs, A allocations, F refused, E errors`;
/// returns (CPUs with allocations, total errors).
fn tick_stress_lines(text: &str) -> (usize, u64, usize) {
    let (mut with_allocations, mut errors, mut lines) = (0, 0, 0);
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(" tick stress: ") else {
            continue;
        };
        let numbers: Vec<u64> = rest
            .split(", ")
            .filter_map(|part| part.split(' ').next()?.parse().ok())
            .collect();
        if let [_, allocations, _, e] = numbers[..] {
            lines += 1;
            with_allocations += usize::from(allocations > 0);
            errors += e;
        }
    }
    (with_allocations, errors, lines)
}

fn irqstat_and_tick_stress(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let opts = RunOptions {
        smp: 4,
        ..base.clone()
    };
    let out = boot(
        image,
        &opts,
        "irqstat\nirqstat bogus\nirqstat stress on\nstress frames 4000\nstress heap 2M\n\
         memcheck\nirqstat stress off\nirqstat\nirqstat reset\npoweroff\n",
    )?;
    tally.record(
        "irqstat: one row per CPU with the longest masked interval; bad arguments are usage",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["powering off"],
                absent: &["PANIC"],
            },
            &[
                Says {
                    cmd: "irqstat",
                    contains: &["tick stress: "],
                    absent: &[],
                    verify: Some(|t| irqstat_rows(t, 4)),
                },
                Says::new("irqstat bogus", &["usage: irqstat [reset | stress on|off]"]),
                Says::new("irqstat reset", &["irqstat: reset"]),
            ],
        ),
    );
    tally.record(
        "tick stress: allocations from masked (interrupt) context on every CPU during stress \
         frames/heap; errors 0, MemFree restored, memcheck ok",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["powering off"],
                absent: &["PANIC"],
            },
            &[
                Says {
                    cmd: "stress frames 4000",
                    contains: &[
                        "(back to its starting value)",
                        "tick stress: ",
                        " allocations in interrupt context (masked), 0 errors",
                    ],
                    absent: &[],
                    verify: stress_says("stress frames 4000").verify,
                },
                Says {
                    cmd: "stress heap 2M",
                    contains: &[" allocations in interrupt context (masked), 0 errors"],
                    absent: &[],
                    verify: stress_says("stress heap 2M").verify,
                },
                memcheck_says(),
            ],
        )
        .and_then(|()| {
            // The second `irqstat` (after the stress) counts the tick's own allocations.
            let runs = super::harness::command_outputs(&out.output, "irqstat");
            let after = runs.get(1).ok_or("the second irqstat did not run")?;
            match tick_stress_lines(after) {
                (4, 0, 4) => Ok(()),
                (cpus, errors, lines) => Err(format!(
                    "tick stress lines {lines}, CPUs with allocations {cpus} (want 4), errors {errors}"
                )),
            }
        }),
    );
    Ok(())
}

/// The SPSR a fault report printed: `  SPSR 0x... `.
fn reported_spsr(text: &str) -> Option<u64> {
    let at = text.find("  SPSR 0x")? + "  SPSR 0x".len();
    let hex: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&hex, 16).ok()
}

fn fault_serror(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let out = boot(
        image,
        base,
        "fault serror 0x40000000\nfault serror 0xb000000\n",
    )?;
    tally.record(
        "fault serror: a write to an unassigned address is a decoded synchronous external \
         abort on QEMU, taken with SError unmasked (SPSR.A clear); RAM is refused",
        check_commands(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "KERNEL PANIC: unhandled synchronous exception from EL1",
                    "data abort (kernel): synchronous external abort, write",
                    "FAR  0xfffff0f000000000  (faulting address)",
                ],
                absent: &[],
            },
            &[
                Says::new(
                    "fault serror 0x40000000",
                    &["fault: 0x40000000 is RAM: give a device or unassigned physical address"],
                ),
                Says::new(
                    "fault serror 0xb000000",
                    &["writing a word to device address 0xb000000"],
                ),
            ],
        )
        .and_then(|()| match reported_spsr(&out.output) {
            // SPSR_EL1 bit 8 is the interrupted PSTATE.A (ARM ARM C5.2.18).
            Some(spsr) if spsr & (1 << 8) == 0 => Ok(()),
            Some(spsr) => Err(format!(
                "SError was masked when the fault came: SPSR {spsr:#x}"
            )),
            None => Err("no SPSR in the report".into()),
        }),
    );
    Ok(())
}
