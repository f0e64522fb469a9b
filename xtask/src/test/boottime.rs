//! Boot time: the line the shell prints before its first prompt, and `boottime`'s phases (all
//! there, in boot order, times never decreasing, the last one the boot line's total). Only the
//! shape and order are checked, never a speed (the machine is shared).

use super::harness::{boot, check_commands, Expect, Says, Tally, PROMPT};
use crate::qemu::RunOptions;
use crate::Result;
use std::path::Path;

/// The phases `boottime` lists (kernel/src/boottime.rs `Phase::ALL`), in boot order.
const PHASES: [&str; 8] = [
    "early",
    "memory-map",
    "mem_map",
    "buddy",
    "paging",
    "heap",
    "smp",
    "shell",
];

/// Runs this file's scenarios on the normal build `image`.
pub fn run(tally: &mut Tally, image: &Path, _work: &Path, base: &RunOptions) -> Result<()> {
    println!("== boot time");
    for (label, mem_mib, smp) in [("1G, 1 CPU", 1024, 1), ("128M, 2 CPUs", 128, 2)] {
        let opts = RunOptions {
            mem_mib,
            smp,
            ..base.clone()
        };
        let out = boot(image, &opts, "boottime\npoweroff\n")?;
        let says = [Says {
            verify: Some(phases_ok),
            ..Says::new("boottime", &["boot phases, ms since kernel entry"])
        }];
        let result = check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[],
                absent: &["panicked"],
            },
            &says,
        )
        .and_then(|()| boot_line_ok(&out.output));
        tally.record(&format!("boottime ({label})"), result);
    }
    Ok(())
}

/// Milliseconds as `boottime` and the boot line print them (`312.4`).
fn ms(text: &str) -> Option<f64> {
    let (whole, tenth) = text.split_once('.')?;
    let ok = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && tenth.len() == 1
        && tenth.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| text.parse().ok()).flatten()
}

/// The phase rows of one `boottime` output: `  NAME  MS  +DELTA  what`.
fn phase_rows(text: &str) -> std::result::Result<Vec<(String, f64)>, String> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("  ")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(at)) = (fields.first(), fields.get(1)) else {
            return Err(format!("bad row {line:?}"));
        };
        let at = ms(at).ok_or_else(|| format!("phase {name} has no time: {line:?}"))?;
        rows.push((name.to_string(), at));
    }
    Ok(rows)
}

/// Every phase listed once, in order, with non-decreasing times.
fn phases_ok(text: &str) -> std::result::Result<(), String> {
    let rows = phase_rows(text)?;
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    if names != PHASES {
        return Err(format!("phases {names:?}, expected {PHASES:?}"));
    }
    for pair in rows.windows(2) {
        if pair[1].1 < pair[0].1 {
            return Err(format!(
                "{} ended at {} ms, before {} at {} ms",
                pair[1].0, pair[1].1, pair[0].0, pair[0].1
            ));
        }
    }
    Ok(())
}

/// The last line before the first prompt is the shell's boot line, and its total is the
/// `shell` phase `boottime` reports.
fn boot_line_ok(output: &str) -> std::result::Result<(), String> {
    let first_prompt = output
        .match_indices(PROMPT)
        .find(|&(i, _)| i == 0 || output.as_bytes()[i - 1] == b'\n')
        .map(|(i, _)| i)
        .ok_or("no prompt")?;
    let line = output[..first_prompt].lines().last().unwrap_or("");
    let total = line
        .strip_prefix("boot: ")
        .and_then(|rest| rest.split_once(" ms to the shell (kernel entry -> first prompt"))
        .and_then(|(n, _)| ms(n))
        .ok_or_else(|| {
            format!("the line before the first prompt is {line:?}, not the boot line")
        })?;
    let shell = super::harness::command_outputs(output, "boottime")
        .first()
        .and_then(|t| phase_rows(t).ok())
        .and_then(|rows| rows.into_iter().find(|(n, _)| n == "shell"))
        .map(|(_, at)| at);
    if shell != Some(total) {
        return Err(format!(
            "the boot line says {total} ms, `boottime`'s shell phase {shell:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "boot phases, ms since kernel entry (counter 62500000 Hz, 1.7 ms at entry):
  early          5.3      +5.3  early tables, device tree, console, logger
  memory-map     6.0      +0.7  memory map from the device tree
  mem_map        7.0      +1.0  linear map, mem_map placed
  buddy          9.1      +2.1  buddy and per-CPU caches over the mem_map
  paging        10.0      +0.9  final page tables, TTBR1 switch
  heap          10.0      +0.0  heap growth enabled
  smp           20.5     +10.5  boot stack, initramfs, tick, secondary CPUs
  shell         20.9      +0.4  first prompt
now: 30.0 ms since kernel entry
";

    #[test]
    fn phases_in_order_pass_and_out_of_order_or_missing_fail() {
        assert_eq!(phases_ok(GOOD), Ok(()));
        let swapped = GOOD.replace("  paging        10.0", "  paging         8.0");
        assert!(phases_ok(&swapped).unwrap_err().contains("before buddy"));
        let missing = GOOD.replace("  heap          10.0      +0.0  heap growth enabled\n", "");
        assert!(phases_ok(&missing).is_err());
        let unmarked = GOOD.replace("  smp           20.5     +10.5", "  smp              -");
        assert!(phases_ok(&unmarked).is_err());
    }

    #[test]
    fn the_boot_line_must_come_right_before_the_first_prompt() {
        let out = format!(
            "[ 0.1] INFO  smp: 1 CPUs online\nboot: 20.9 ms to the shell (kernel entry -> first \
             prompt; ...)\n{PROMPT}boottime\n{GOOD}{PROMPT}poweroff\n"
        );
        assert_eq!(boot_line_ok(&out), Ok(()));
        let late = out.replace("boot: 20.9", "boot: 21.9");
        assert!(boot_line_ok(&late).is_err());
        let absent = out.replace("boot: 20.9 ms", "[ 0.2] INFO 20.9 ms");
        assert!(boot_line_ok(&absent).is_err());
    }
}
