//! Interrupt scenarios on the normal build: `irqs` in /proc/interrupts' layout and `uptime`
//! with ticks on every CPU (GICv2 and GICv3), the `tick=` boot argument, and trees without an
//! interrupt controller, without a timer, or with a malformed `interrupts` property.

use super::harness::{
    boot, check_commands, command_outputs, dump_qemu_dtb, patch_bytes, Expect, Says, Tally,
};
use crate::qemu::RunOptions;
use crate::Result;
use std::path::Path;

/// Two `memcheck`s between the `uptime`s give the tick some 100 ms to run.
const SHELL_INPUT: &str = "irqs\nuptime\nmemcheck\nmemcheck\nuptime\nirqs\npoweroff\n";

/// The per-CPU tick counts `uptime` printed: "tick: 100 Hz; cpu0 11 cpu1 10 ticks".
fn tick_counts(text: &str) -> Option<Vec<u64>> {
    let line = text.lines().find(|l| l.starts_with("tick: "))?;
    let (_, rest) = line.split_once("; ")?;
    let rest = rest.strip_suffix(" ticks")?;
    let words: Vec<&str> = rest.split(' ').collect();
    words
        .chunks(2)
        .map(|pair| pair.get(1).and_then(|n| n.parse().ok()))
        .collect()
}

/// The last `uptime` shows a tick count above zero on each of `cpus` CPUs.
fn every_cpu_ticked(output: &str, cpus: usize) -> std::result::Result<(), String> {
    let runs = command_outputs(output, "uptime");
    let last = runs.last().ok_or("`uptime` never ran")?;
    let counts = tick_counts(last).ok_or_else(|| format!("no tick counts in {last:?}"))?;
    if counts.len() != cpus {
        return Err(format!(
            "{} CPUs in {last:?}, expected {cpus}",
            counts.len()
        ));
    }
    if counts.contains(&0) {
        return Err(format!("a CPU took no tick: {last:?}"));
    }
    Ok(())
}

/// The `irqs` row for IntId 27 (the virtual timer on QEMU virt) has one count per CPU and a
/// nonzero total in its last run, under a header of CPU0..CPU{cpus-1}.
fn timer_row_counts(output: &str, cpus: usize) -> std::result::Result<(), String> {
    let runs = command_outputs(output, "irqs");
    let last = runs.last().ok_or("`irqs` never ran")?;
    let mut lines = last.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let want: Vec<String> = (0..cpus).map(|c| format!("CPU{c}")).collect();
    if header != want {
        return Err(format!("header {header:?}, expected {want:?}"));
    }
    let row = last
        .lines()
        .find(|l| l.trim_start().starts_with("27:"))
        .ok_or("no row for interrupt 27")?;
    let counts: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .take(cpus)
        .map(|w| w.parse().map_err(|_| format!("bad count {w:?} in {row:?}")))
        .collect::<std::result::Result<_, _>>()?;
    if counts.iter().sum::<u64>() == 0 {
        return Err(format!("no timer interrupts counted: {row:?}"));
    }
    Ok(())
}

/// The boot log line the logger printed for `what` (the warnings are boot-log facts; the
/// commands' own output is checked separately).
fn runs_ok(
    tally: &mut Tally,
    name: &str,
    out: &super::harness::Outcome,
    log: &[&str],
    says: &[Says<'_>],
    extra: impl Fn(&str) -> std::result::Result<(), String>,
) {
    let mut result = check_commands(
        out,
        &Expect {
            code: 0,
            contains: log,
            absent: &["PANIC", "unhandled"],
        },
        says,
    );
    if result.is_ok() {
        result = extra(&out.output);
    }
    tally.record(name, result);
}

pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== interrupt scenarios");
    for (gic, label) in [(None, "GICv2"), (Some(3), "GICv3")] {
        let opts = RunOptions {
            smp: 2,
            gic,
            ..base.clone()
        };
        let out = boot(image, &opts, SHELL_INPUT)?;
        let row = format!("{label}  PPI 11  Level  arch_timer");
        runs_ok(
            tally,
            &format!("irqs and uptime on {label} with 2 CPUs: ticks on both"),
            &out,
            &[&format!("interrupts: {label} at 0x8000000")],
            &[
                Says::new("irqs", &["CPU0", "CPU1", &row, " SPU:"]),
                Says::new("uptime", &["up 0:00:", "tick: 100 Hz;", " cpu1 "]),
            ],
            |o| every_cpu_ticked(o, 2).and_then(|()| timer_row_counts(o, 2)),
        );
    }

    let out = boot(image, base, "irqs panic\n")?;
    tally.record(
        "a panicking handler: the usual report, naming the interrupt",
        super::harness::check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "in the handler \"irqs_panic\" of interrupt 287 (SPI 255) on CPU 0",
                    "KERNEL PANIC: irqs panic: the handler of interrupt 287 (SPI 255) panicked",
                    "backtrace",
                ],
                absent: &["nested panic"],
            },
        ),
    );

    let opts = RunOptions {
        bootargs: "tick=250".into(),
        ..base.clone()
    };
    let out = boot(image, &opts, "uptime\npoweroff\n")?;
    runs_ok(
        tally,
        "tick=250 sets the rate",
        &out,
        &["tick: 250 Hz on the EL1 virtual timer"],
        &[Says::new("uptime", &["tick: 250 Hz;"])],
        |_| Ok(()),
    );
    let opts = RunOptions {
        bootargs: "tick=5".into(),
        ..base.clone()
    };
    let out = boot(image, &opts, "uptime\npoweroff\n")?;
    runs_ok(
        tally,
        "tick=5 (below 10) is refused and the default kept",
        &out,
        &["ignoring unknown boot argument \"tick=5\""],
        &[Says::new("uptime", &["tick: 100 Hz;"])],
        |_| Ok(()),
    );

    let qemu_dtb = dump_qemu_dtb(work)?;
    let no_gic = work.join("virt-no-gic.dtb");
    std::fs::write(
        &no_gic,
        patch_bytes(&qemu_dtb, b"arm,cortex-a15-gic\0", b"arm,cortex-a15-gix\0"),
    )?;
    let opts = RunOptions {
        dtb: Some(no_gic),
        ..base.clone()
    };
    let out = boot(image, &opts, "irqs\nuptime\npoweroff\n")?;
    runs_ok(
        tally,
        "no interrupt controller: a warning, no ticks, irqs says so",
        &out,
        &["WARN  interrupts: no GICv2/GICv3 node in the device tree: running without interrupts"],
        &[
            Says::new("irqs", &["no interrupt controller: interrupts are off"]),
            Says::new("uptime", &["tick: off"]),
        ],
        |_| Ok(()),
    );

    let no_timer = work.join("virt-no-timer.dtb");
    std::fs::write(
        &no_timer,
        patch_bytes(
            &qemu_dtb,
            b"arm,armv8-timer\0arm,armv7-timer\0",
            b"arm,armv8-timex\0arm,armv7-timex\0",
        ),
    )?;
    let opts = RunOptions {
        dtb: Some(no_timer),
        ..base.clone()
    };
    let out = boot(image, &opts, "irqs\nuptime\npoweroff\n")?;
    let mut says = vec![
        Says::new("irqs", &["CPU0", " SPU:"]),
        Says::new("uptime", &["tick: off"]),
    ];
    says[0].absent = &["arch_timer"];
    runs_ok(
        tally,
        "no timer node: a warning, no ticks",
        &out,
        &["WARN  tick: no arm,armv8-timer node in the device tree: running without a tick"],
        &says,
        |_| Ok(()),
    );

    // The virtual timer's entry <1 11 0x104> (PPI 11, CPU mask 1, level high) of the
    // one-CPU GICv2 tree, with its type cell made 7.
    let entry: Vec<u8> = [1u32, 11, 0x104]
        .iter()
        .flat_map(|c| c.to_be_bytes())
        .collect();
    let bad_entry: Vec<u8> = [7u32, 11, 0x104]
        .iter()
        .flat_map(|c| c.to_be_bytes())
        .collect();
    let occurrences = qemu_dtb
        .windows(entry.len())
        .filter(|w| *w == entry)
        .count();
    if occurrences != 1 {
        tally.record(
            "malformed timer `interrupts`: an error naming the node",
            Err(format!(
                "the timer entry occurs {occurrences} times in QEMU's tree, expected once"
            )),
        );
        return Ok(());
    }
    let bad = work.join("virt-bad-timer-interrupts.dtb");
    std::fs::write(&bad, patch_bytes(&qemu_dtb, &entry, &bad_entry))?;
    let opts = RunOptions {
        dtb: Some(bad),
        ..base.clone()
    };
    let out = boot(image, &opts, "uptime\npoweroff\n")?;
    runs_ok(
        tally,
        "malformed timer `interrupts`: an error naming the node",
        &out,
        &["ERROR tick: /timer: bad `interrupts`: interrupt type 7 is not 0 (SPI) or 1 (PPI)"],
        &[Says::new("uptime", &["tick: off"])],
        |_| Ok(()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tick_counts() {
        assert_eq!(
            tick_counts("up 0:00:00.41\ntick: 100 Hz; cpu0 11 cpu1 10 ticks\n"),
            Some(vec![11, 10])
        );
        assert_eq!(tick_counts("tick: off (no ...)\n"), None);
        assert!(
            every_cpu_ticked("levitate> uptime\ntick: 100 Hz; cpu0 3 cpu1 0 ticks\n", 2).is_err()
        );
        assert!(
            every_cpu_ticked("levitate> uptime\ntick: 100 Hz; cpu0 3 cpu1 1 ticks\n", 2).is_ok()
        );
    }

    #[test]
    fn reads_timer_row() {
        let good = "levitate> irqs\n            CPU0       CPU1\n  27:          4          1  \
                    GICv2  PPI 11  Level  arch_timer\n SPU:          0          0  spurious\n";
        assert!(timer_row_counts(good, 2).is_ok());
        assert!(timer_row_counts(good, 3).is_err());
        let zero = good.replace("4          1", "0          0");
        assert!(timer_row_counts(&zero, 2).is_err());
    }
}
