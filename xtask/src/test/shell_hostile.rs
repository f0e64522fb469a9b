//! Hostile shell input: checked arithmetic in `dtb`, `pt` on both halves, `stress frames` bounds and accounting, `fault ADDR` reports.

use super::harness::{boot, check, compile_dts, qemu_dts, tail, Expect, Outcome, Tally};
use crate::kernel::{self, Variant};
use crate::qemu::RunOptions;
use crate::{bail, Result};
use std::path::{Path, PathBuf};

/// Runs this file's scenarios on the normal build `image` (and a release build for `fault`).
pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== hostile shell input");
    dtb_past_the_top(tally, image, work, base)?;
    pt_both_halves(tally, image, base)?;
    stress_bounds_and_interrupt(tally, image, base)?;
    stress_accounting(tally, image, base)?;
    fault_reports(tally, image, base)?;
    Ok(())
}

/// QEMU's own tree with /memreserve/ entries added in front (QEMU's `-dtb` passes the
/// reservation block through as given), built with dtc.
fn memreserve_dtb(work: &Path, entries: &str) -> Result<PathBuf> {
    let text = qemu_dts(work)?;
    let Some(body) = text.strip_prefix("/dts-v1/;\n") else {
        bail!("dtc's output does not start with /dts-v1/;");
    };
    // The spec puts /memreserve/ lines between the version tag and the root node.
    compile_dts(
        work,
        "virt-memreserve",
        &format!("/dts-v1/;\n{entries}{body}"),
    )
}

fn dtb_past_the_top(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    let dtb = memreserve_dtb(
        work,
        "/memreserve/ 0xfffffffffffff000 0x2000;\n/memreserve/ 0x4a000000 0x10000;\n",
    )?;
    let opts = RunOptions {
        dtb: Some(dtb),
        ..base.clone()
    };
    let out = boot(image, &opts, "dtb\npoweroff\n")?;
    tally.record(
        "dtb: a /memreserve/ entry past 2^64 is clipped as boot clips it, no overflow",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "memreserve:\n  0xfffffffffffff000 + 0x2000 runs past 2^64: clipped to \
                     0xfffffffffffff000..0xffffffffffffffff",
                    "\n  0x004a000000..0x004a010000  64 KiB\n",
                    "powering off",
                ],
                absent: &["PANIC", "overflow"],
            },
        ),
    );
    Ok(())
}

fn pt_both_halves(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    // QEMU loads the Image at 0x40200000; the boot identity map holds that 2 MiB block.
    let out = boot(
        image,
        base,
        "pt 0x40200000\npt 0xffffffff80000000\npt 0x0001000000000000\npt 0xfffe000000000000\n\
         pt 0x\npoweroff\n",
    )?;
    tally.record(
        "pt walks TTBR0_EL1 for the lower half, TTBR1_EL1 for the upper, neither otherwise",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "0x40200000: lower half, TTBR0_EL1 -> root 0x",
                    "block 2 MiB -> 0x40200000 ",
                    "TCR_EL1.EPD0 = 1: the hardware reads no TTBR0_EL1 table",
                    "0xffffffff80000000: upper half, TTBR1_EL1 -> root 0x",
                    "page 4 KiB -> 0x40200000 RO X normal",
                    "0x1000000000000 is in neither half",
                    "0xfffe000000000000 is in neither half",
                    "usage: pt ADDR",
                ],
                // What the kernel's (TTBR1) tables map at index 0: the linear map, which
                // the hardware never uses for a lower-half address.
                absent: &["block 1 GiB -> 0x40000000", "PANIC"],
            },
        ),
    );
    Ok(())
}

/// Every `errors: N` line of a run, as numbers.
fn error_counts(output: &str) -> Vec<Option<u64>> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("errors: "))
        .map(|n| n.trim().parse().ok())
        .collect()
}

/// `check`, plus: exactly `stresses` `errors: N` lines, each 0.
fn check_stress(out: &Outcome, e: &Expect<'_>, stresses: usize) -> std::result::Result<(), String> {
    check(out, e)?;
    let counts = error_counts(&out.output);
    if counts.len() != stresses || counts.iter().any(|c| *c != Some(0)) {
        return Err(format!(
            "expected {stresses} `errors: 0` lines, got {counts:?}\n--- output tail ---\n{}",
            tail(&out.output, 25)
        ));
    }
    Ok(())
}

fn stress_bounds_and_interrupt(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let bad = [
        "stress frames 0",
        "stress frames 100000001",
        "stress frames 99999999999999999999999",
        "stress frames -1",
        "stress frames abc",
        "stress frames",
        "stress frames 5 6",
    ];
    let input = format!("{}\npoweroff\n", bad.join("\n"));
    let out = boot(image, base, &input)?;
    let usages = out
        .output
        .lines()
        .filter(|l| *l == "usage: stress frames N | heap BYTES")
        .count();
    let result = check(
        &out,
        &Expect {
            code: 0,
            contains: &["powering off"],
            absent: &["stress frames: ", "PANIC"],
        },
    )
    .and_then(|()| {
        if usages == bad.len() {
            Ok(())
        } else {
            Err(format!(
                "{usages} usage lines for {} bad commands\n{}",
                bad.len(),
                tail(&out.output, 20)
            ))
        }
    });
    tally.record(
        "stress frames: 0, above the bound, garbage are usage errors",
        result,
    );

    // Ctrl-C stops the longest run allowed; what was typed after it still runs.
    let out = boot(
        image,
        base,
        "stress frames 100000000\n\x03meminfo\nmemcheck\npoweroff\n",
    )?;
    tally.record(
        "stress frames: Ctrl-C stops a long run, typed-ahead commands still run",
        check_stress(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "stress frames: stopped by Ctrl-C after ",
                    "(100000000 asked for on each)",
                    "(back to its starting value)",
                    "levitate> meminfo\nMemTotal:",
                    "memcheck: ok",
                    "powering off",
                ],
                absent: &["corrupted or lost"],
            },
            1,
        ),
    );

    let out = boot(image, base, "stress frames 200000\npoweroff\n")?;
    tally.record(
        "stress frames: a long run reports its progress",
        check_stress(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "stress frames: 10% (20000 of 200000 operations on cpu0; Ctrl-C stops)",
                    "stress frames: 50% (100000 of 200000 operations on cpu0",
                    "stress frames: 90% (180000 of 200000 operations on cpu0",
                    "stress frames: 200000 operations on each of 1 CPUs",
                    "  cpu0: 200000 operations, took ",
                ],
                absent: &["stopped by Ctrl-C", "100%"],
            },
            1,
        ),
    );
    Ok(())
}

/// The line `stress frames` prints about MemFree, for each run.
fn memfree_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.starts_with("MemFree: ") && l.contains(" kB before, "))
        .collect()
}

fn stress_accounting(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    // A full heap, then a stress that fills memory: the pressure reclaim gives heap segments
    // back during the run. MemFree changes, none of it the stress's frames.
    let opts = RunOptions {
        mem_mib: 32,
        ..base.clone()
    };
    let out = boot(
        image,
        &opts,
        "stress heap 14M\nstress frames 3000\nstress frames 3000\nmemcheck\npoweroff\n",
    )?;
    let result = check_stress(
        &out,
        &Expect {
            code: 0,
            contains: &[
                "given back by the stress; owner test 0 kB before, 0 kB after",
                "memcheck: ok",
            ],
            absent: &[
                "corrupted or lost",
                "CHANGED",
                "were not given back",
                "no owner's count",
            ],
        },
        3,
    )
    .and_then(|()| {
        let lines = memfree_lines(&out.output);
        let explained = |l: &&str| {
            l.ends_with("(back to its starting value)") || l.contains("none of it the stress's: ")
        };
        if lines.len() == 2 && lines.iter().all(explained) {
            Ok(())
        } else {
            Err(format!("MemFree lines not accounted for: {lines:?}"))
        }
    });
    tally.record(
        "stress frames at --mem 32M after stress heap: heap reclaim is not reported as loss",
        result,
    );

    let opts = RunOptions {
        smp: 8,
        ..base.clone()
    };
    let out = boot(
        image,
        &opts,
        "stress frames 4000\nstress frames 4000\nmemcheck\npoweroff\n",
    )?;
    let result = check_stress(
        &out,
        &Expect {
            code: 0,
            contains: &[
                "stress frames: 4000 operations on each of 8 CPUs",
                "  cpu0: 4000 operations, took ",
                "  cpu7: 4000 operations, took ",
                "given back by the stress; owner test 0 kB before, 0 kB after",
                "memcheck: ok",
            ],
            absent: &["corrupted or lost", "CHANGED", "were not given back"],
        },
        2,
    )
    .and_then(|()| {
        // Per CPU, what it took and gave back may differ (frees on other CPUs); the totals
        // may not.
        let totals: Vec<&str> = out
            .output
            .lines()
            .filter(|l| l.starts_with("frames: ") && l.contains(" taken and "))
            .collect();
        let balanced = |l: &&str| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() > 5 && words[1] == words[4]
        };
        if totals.len() == 2 && totals.iter().all(balanced) {
            Ok(())
        } else {
            Err(format!("frame totals do not balance: {totals:?}"))
        }
    });
    tally.record(
        "stress frames at --smp 8 accounts its frames per CPU",
        result,
    );
    Ok(())
}

fn fault_reports(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let release = kernel::build(Variant {
        release: true,
        ktest: false,
    })?;
    for (label, img) in [("debug", image), ("release", release.image.as_path())] {
        let out = boot(img, base, "fault 0x1001\n")?;
        tally.record(
            &format!("fault at a misaligned unmapped address is a decoded report ({label})"),
            check(
                &out,
                &Expect {
                    code: 3,
                    contains: &[
                        "reading 0x1001\n",
                        "data abort (kernel): translation fault at level 0, read",
                        "FAR  0x0000000000001001  (faulting address)",
                        "in levitate::shell::commands::",
                    ],
                    absent: &["precondition", "stack overflow", "nested"],
                },
            ),
        );
        // Misaligned, in the linear map (Normal memory, SCTLR_EL1.A clear): the load reads.
        let out = boot(img, base, "fault 0xffff000040000001\npoweroff\n")?;
        tally.record(
            &format!("fault at a misaligned mapped address reads it ({label})"),
            check(
                &out,
                &Expect {
                    code: 0,
                    contains: &["0xffff000040000001 holds 0x", "powering off"],
                    absent: &["PANIC"],
                },
            ),
        );
    }

    // Where the shell's stack and its guard page are, from a real overflow.
    let out = boot(image, base, "fault stack\n")?;
    let marker = "kernel stack overflow: stack 'boot' (";
    let bottom = out
        .output
        .lines()
        .find_map(|l| l.trim().strip_prefix(marker))
        .and_then(|rest| rest.split("..").next())
        .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok());
    let Some(bottom) = bottom else {
        tally.record(
            "fault stack reports an overflow of the boot stack",
            Err(format!("no `{marker}` line\n{}", tail(&out.output, 20))),
        );
        return Ok(());
    };
    // A plain read of that guard page, from a shallow stack: not an overflow.
    for far in [bottom - 0x1000, bottom - 8] {
        let out = boot(image, base, &format!("fault {far:#x}\n"))?;
        let far_line = format!("FAR  {far:#018x}  (faulting address)");
        tally.record(
            &format!("a read of a guard page ({far:#x}) is not called a stack overflow"),
            check(
                &out,
                &Expect {
                    code: 3,
                    contains: &[
                        "FAR is in the guard page below stack 'boot'",
                        "a bad address, not a stack overflow",
                        &far_line,
                    ],
                    absent: &["kernel stack overflow"],
                },
            ),
        );
    }
    Ok(())
}
