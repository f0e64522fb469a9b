//! Console driver selection and the SoC watchdog in QEMU: the `console` and `watchdog`
//! commands on virt, a stdout-path naming a disabled gs101 UART (the kernel must fall back
//! to the first node a driver accepts), and a gs101 watchdog node backed by reserved RAM
//! preloaded as a bootloader would leave the watchdog (running, reset on, 30 s), which the
//! kernel must find, decode and stop, next to a second (downstream-named, stopped) instance.

use super::harness::{boot, check, check_commands, dump_qemu_dtb, Expect, Says, Tally};
use crate::qemu::RunOptions;
use crate::{bail, deps, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs this file's scenarios on the normal build `image`.
pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== console drivers and watchdog");
    virt_console_and_no_watchdog(tally, image, base)?;
    disabled_stdout_path_falls_back(tally, image, work, base)?;
    bootloader_watchdog_is_stopped(tally, image, work, base)?;
    Ok(())
}

fn virt_console_and_no_watchdog(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let out = boot(image, base, "console\nwatchdog\npoweroff\n")?;
    tally.record(
        "console names its driver; virt has no watchdog",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["console: PL011 at 0x9000000 (from stdout-path, arm,pl011)"],
                absent: &["PANIC"],
            },
            &[
                Says::new(
                    "console",
                    &[
                        "console: PL011 at 0x9000000 (arm,pl011, node pl011@9000000, from stdout-path)",
                        "dropped bytes 0",
                    ],
                ),
                Says::new(
                    "watchdog",
                    &["watchdog: not found (no enabled node compatible with google,gs101-wdt"],
                ),
            ],
        ),
    );
    Ok(())
}

/// QEMU's own tree decompiled, edited by `edit`, and compiled again.
fn edited_tree(work: &Path, name: &str, edit: impl FnOnce(String) -> String) -> Result<PathBuf> {
    deps::ensure_dtc()?;
    dump_qemu_dtb(work)?;
    let base = work.join("qemu-virt-default.dtb");
    let dts = work.join(format!("{name}.dts"));
    let dtb = work.join(format!("{name}.dtb"));
    let status = Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts", "-o"])
        .arg(&dts)
        .arg(&base)
        .status()?;
    if !status.success() {
        bail!("dtc could not decompile QEMU's tree");
    }
    let text = std::fs::read_to_string(&dts)?;
    std::fs::write(&dts, edit(text))?;
    let status = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(&dtb)
        .arg(&dts)
        .status()?;
    if !status.success() {
        bail!("dtc could not compile {}", dts.display());
    }
    Ok(dtb)
}

/// Inserts `nodes` at the end of the root node.
fn add_to_root(text: String, nodes: &str) -> String {
    let end = text.trim_end().rfind("};").unwrap_or(text.len());
    format!("{}{nodes}\n{}", &text[..end], &text[end..])
}

fn disabled_stdout_path_falls_back(
    tally: &mut Tally,
    image: &Path,
    work: &Path,
    base: &RunOptions,
) -> Result<()> {
    let dtb = edited_tree(work, "virt-disabled-gs101-uart", |text| {
        let text = text.replace(
            "stdout-path = \"/pl011@9000000\";",
            "stdout-path = \"/serial@7fe10000\";",
        );
        add_to_root(
            text,
            "\tserial@7fe10000 {\n\t\tcompatible = \"google,gs101-uart\";\n\
             \t\treg = <0x00 0x7fe10000 0x00 0xc0>;\n\t\tstatus = \"disabled\";\n\t};\n",
        )
    })?;
    let opts = RunOptions {
        dtb: Some(dtb),
        ..base.clone()
    };
    let out = boot(image, &opts, "console\npoweroff\n")?;
    tally.record(
        "stdout-path naming a disabled gs101 UART falls back to the first accepted node",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["console: PL011 at 0x9000000 (from first arm,pl011 node)"],
                absent: &["PANIC"],
            },
            &[Says::new(
                "console",
                &["PL011 at 0x9000000", "from the first node a driver accepts"],
            )],
        ),
    );
    Ok(())
}

/// WTCON/WTDAT/WTCNT as a bootloader leaves a running watchdog: enabled, reset on,
/// prescaler 256, divider 128, reload 22500 ticks (30 s at 24.576 MHz).
fn running_watchdog_registers() -> Vec<u8> {
    let wtcon: u32 = 0xff << 8 | 1 << 5 | 3 << 3 | 1;
    let wtdat: u32 = 22_500;
    let wtcnt: u32 = 22_400;
    [wtcon, wtdat, wtcnt, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn bootloader_watchdog_is_stopped(
    tally: &mut Tally,
    image: &Path,
    work: &Path,
    base: &RunOptions,
) -> Result<()> {
    let dtb = edited_tree(work, "virt-gs101-watchdog", |text| {
        add_to_root(
            text,
            "\treserved-memory {\n\t\t#address-cells = <0x02>;\n\t\t#size-cells = <0x02>;\n\
             \t\tranges;\n\t\tfake-watchdog@7fe00000 {\n\t\t\treg = <0x00 0x7fe00000 0x00 0x2000>;\n\
             \t\t\tno-map;\n\t\t};\n\t};\n\
             \toscclk: clock-oscclk {\n\t\tcompatible = \"fixed-clock\";\n\t\t#clock-cells = <0x00>;\n\
             \t\tclock-frequency = <24576000>;\n\t};\n\
             \twatchdog@7fe00000 {\n\t\tcompatible = \"google,gs101-wdt\";\n\
             \t\treg = <0x00 0x7fe00000 0x00 0x100>;\n\t\tclocks = <&oscclk>, <&oscclk>;\n\
             \t\tclock-names = \"watchdog\", \"watchdog_src\";\n\t\ttimeout-sec = <30>;\n\t};\n\
             \twatchdog@7fe01000 {\n\t\tcompatible = \"google,gs101-cl1-wdt\";\n\
             \t\treg = <0x00 0x7fe01000 0x00 0x100>;\n\t};\n",
        )
    })?;
    let regs = work.join("gs101-watchdog-running.bin");
    std::fs::write(&regs, running_watchdog_registers())?;
    let mut opts = RunOptions {
        dtb: Some(dtb),
        ..base.clone()
    };
    opts.extra.push("-device".into());
    opts.extra.push(
        format!(
            "loader,file={},addr=0x7fe00000,force-raw=on",
            regs.display()
        )
        .into(),
    );
    let out = boot(image, &opts, "watchdog\npoweroff\n")?;
    tally.record(
        "a running gs101 watchdog is found, decoded and stopped",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "watchdog at 0x7fe00000: was running, stopped",
                    "watchdog at 0x7fe01000: found stopped",
                ],
                absent: &["PANIC"],
            },
            &[Says {
                cmd: "watchdog",
                contains: &[
                    "watchdog: google,gs101-wdt at 0x7fe00000 (node watchdog@7fe00000)",
                    "at boot: running, reset on, interrupt off",
                    "now: stopped, reset off (stopped at boot through WTCON)",
                    "timeout: 30.0 s (reload 22500 ticks of 32768 cycles at 24576000 Hz)",
                    "the tree's timeout-sec is 30 s",
                    "watchdog: google,gs101-cl1-wdt at 0x7fe01000 (node watchdog@7fe01000)",
                    "timeout: unknown (reload 0 ticks of 16 cycles; no fixed source clock)",
                    "last service: never",
                ],
                absent: &["would not stop"],
                verify: None,
            }],
        ),
    );
    // The same tree with the watchdog found already stopped (no preload).
    let stopped = check(
        &boot(
            image,
            &RunOptions {
                extra: base.extra.clone(),
                ..opts.clone()
            },
            "poweroff\n",
        )?,
        &Expect {
            code: 0,
            contains: &["watchdog at 0x7fe00000: found stopped"],
            absent: &["PANIC"],
        },
    );
    tally.record("a stopped gs101 watchdog is left stopped", stopped);
    Ok(())
}
