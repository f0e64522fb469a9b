//! Real-hardware rules QEMU can show: the parking vectors, the image-fits-in-RAM check, the
//! panic path with the console lock held, secondary CPU slots.

use super::harness::{boot, check, qemu_dtb_with, relocating_stub, tree_stub, Expect, Tally};
use crate::qemu::RunOptions;
use crate::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where the scenarios load the kernel: the last 2 MiB of QEMU's default 1 GiB of RAM.
const LOAD_AT: u64 = 0x7fe0_0000;
/// Where the image-outside-RAM scenario loads the kernel: 8 MiB below the end of real RAM, so
/// the whole image is in QEMU's RAM while the tree says RAM ends 1 MiB into it.
const SHORT_LOAD_AT: u64 = 0x7f80_0000;
/// Where the stub bootloader's device tree goes (away from the kernel and QEMU's own tree).
const DTB_AT: u64 = 0x4400_0000;

pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== real-hardware rules");
    early_fault_parks(tally, image, work, base)?;
    image_outside_ram(tally, image, work, base)?;
    panic_under_console_lock(tally, image, base)?;
    late_cpus(tally, image, base)?;
    Ok(())
}

/// `-device loader` arguments that put `file` at `addr` as raw bytes.
fn loader(file: &Path, addr: u64) -> Vec<std::ffi::OsString> {
    vec![
        "-device".into(),
        format!("loader,file={},addr={addr:#x},force-raw=on", file.display()).into(),
    ]
}

/// The image's `image_size` header field (bytes in memory, BSS included).
fn image_size(image: &Path) -> Result<(u64, u64)> {
    let bytes = std::fs::read(image)?;
    if bytes.len() < 0x40 || &bytes[0x38..0x3c] != b"ARM\x64" {
        bail!("{} is not an arm64 Image", image.display());
    }
    let size = u64::from_le_bytes(bytes[0x10..0x18].try_into().unwrap());
    Ok((bytes.len() as u64, size))
}

/// The kernel is loaded so that its file fits in RAM but its BSS runs past the end: zeroing
/// BSS takes a data abort before any vector table of the kernel's is installed. The CPU must
/// take exactly that one exception, into the parking vectors (offset 0x200: current EL with
/// SP_ELx, synchronous), and stay there; an empty or stale VBAR would loop on exceptions.
fn early_fault_parks(
    tally: &mut Tally,
    image: &Path,
    work: &Path,
    base: &RunOptions,
) -> Result<()> {
    let (file_len, mem_size) = image_size(image)?;
    // RAM ends at the first 64 KiB boundary after the file: BSS (page tables, stacks, the
    // early pool) is far larger than that slack.
    let ram_end = LOAD_AT + file_len.div_ceil(0x1_0000) * 0x1_0000;
    if LOAD_AT + mem_size <= ram_end {
        bail!("the image's BSS is too small for the early-fault scenario");
    }
    let stub = work.join("relocating-stub-park.img");
    std::fs::write(&stub, relocating_stub(LOAD_AT))?;
    for (label, el2) in [("EL1", false), ("EL2", true)] {
        let log = work.join(format!("park-{label}.log"));
        let _ = std::fs::remove_file(&log);
        let mut opts = RunOptions {
            el2,
            initrd: None,
            ..base.clone()
        };
        opts.extra = loader(image, LOAD_AT);
        opts.extra.extend([
            "-m".into(),
            format!("{}K", (ram_end - 0x4000_0000) / 1024).into(),
            "-d".into(),
            "int".into(),
            "-D".into(),
            log.clone().into(),
        ]);
        let mut child = opts
            .command(&stub)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;
        // Long enough for a fault loop to take thousands of exceptions.
        std::thread::sleep(Duration::from_secs(3));
        let exited = child.try_wait()?;
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let taken: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Taking exception"))
            .collect();
        let target = text
            .lines()
            .find_map(|l| l.strip_prefix("...to EL1 PC "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pc| u64::from_str_radix(pc.trim_start_matches("0x"), 16).ok());
        let result = match (exited, taken.len(), target) {
            (Some(status), ..) => Err(format!("QEMU exited ({status}) instead of parking")),
            (None, 1, Some(pc)) if pc & 0x7ff == 0x200 && (LOAD_AT..LOAD_AT + (2 << 20)).contains(&pc) => {
                Ok(())
            }
            (None, n, pc) => Err(format!(
                "{n} exceptions taken, the first to {pc:x?} (want one, into the image's parking vectors at +0x200)\n{}",
                text.lines().take(12).collect::<Vec<_>>().join("\n")
            )),
        };
        tally.record(
            &format!("a fault before the vectors parks the CPU (entered at {label})"),
            result,
        );
    }
    Ok(())
}

/// QEMU's tree with its RAM cut short so that the kernel at `LOAD_AT` starts inside RAM and
/// ends outside it, and `semihosting` in bootargs (the stub passes the tree as it is).
fn short_ram_dtb(work: &Path) -> Result<PathBuf> {
    // RAM 0x40000000..SHORT_LOAD_AT + 1 MiB: the image's first MiB is inside, the rest is
    // not.
    let size = SHORT_LOAD_AT + (1 << 20) - 0x4000_0000;
    qemu_dtb_with(
        work,
        "virt-short-ram",
        &format!(
            r#"
/ {{
    memory@40000000 {{
        reg = <0x0 0x40000000 0x0 {size:#x}>;
    }};
    chosen {{
        bootargs = "semihosting";
    }};
}};
"#
        ),
    )
}

/// A tree that says RAM ends inside the kernel image: boot refuses, naming the image.
fn image_outside_ram(
    tally: &mut Tally,
    image: &Path,
    work: &Path,
    base: &RunOptions,
) -> Result<()> {
    let dtb = short_ram_dtb(work)?;
    let stub = work.join("dtb-stub.img");
    std::fs::write(&stub, tree_stub(DTB_AT, SHORT_LOAD_AT))?;
    let mut opts = RunOptions {
        initrd: None,
        ..base.clone()
    };
    opts.extra = loader(image, SHORT_LOAD_AT);
    opts.extra.extend(loader(&dtb, DTB_AT));
    let out = boot(&stub, &opts, "")?;
    tally.record(
        "an image reaching past the RAM the tree describes is refused",
        check(
            &out,
            &Expect {
                code: 2,
                contains: &[
                    "image at 0x7f800000",
                    "boot failed: memory: the kernel image 0x00007f800000-",
                    "does not lie inside the RAM the device tree describes",
                ],
                absent: &["levitate> ", "PANIC"],
            },
        ),
    );
    Ok(())
}

/// A panic while the console lock is held, by this CPU (inside a `Display` during
/// `println!`) or by another CPU that never lets go, still prints its report and ends the run
/// with status 3.
fn panic_under_console_lock(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let out = boot(image, base, "panic --while-printing from a Display\n")?;
    tally.record(
        "a panic inside println! (console lock held) still reports",
        check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "KERNEL PANIC: inside Display while printing: from a Display",
                    "backtrace:",
                    "PanicsWhenShown as core::fmt::Display>::fmt",
                ],
                absent: &["nested panic"],
            },
        ),
    );
    let opts = RunOptions {
        smp: 2,
        ..base.clone()
    };
    let out = boot(image, &opts, "panic --console-stuck on purpose\n")?;
    tally.record(
        "a panic while another CPU holds the console forever still reports",
        check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "KERNEL PANIC: with the console held by cpu1 forever: on purpose",
                    "backtrace:",
                    "levitate::shell::commands::panic",
                ],
                absent: &["nested panic"],
            },
        ),
    );
    Ok(())
}

/// Checks a boot with late CPUs: every listed CPU is either online in a slot of its own or
/// given up in a slot of its own; `cpus` lists exactly the online ones, with distinct MPIDRs.
fn late_cpu_slots(output: &str) -> std::result::Result<(), String> {
    let given_up: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split("slot ").nth(1))
        .filter_map(|rest| rest.strip_suffix(" is given up, not reused"))
        .collect();
    let online: usize = output
        .lines()
        .find_map(|l| l.split("smp: ").nth(1)?.strip_suffix(" CPUs online"))
        .and_then(|n| n.parse().ok())
        .ok_or("no `smp: N CPUs online` line")?;
    // The first `cpus` listing: lines "cpuN   MPIDR 0x...".
    let listing: Vec<(&str, &str)> = output
        .lines()
        .skip_while(|l| !l.ends_with("levitate> cpus"))
        .skip(1)
        .take_while(|l| l.starts_with("cpu"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.nth(1)?))
        })
        .collect();
    let mut slots: Vec<&str> = listing.iter().map(|(slot, _)| *slot).collect();
    slots.extend(&given_up);
    let mut unique = slots.clone();
    unique.sort();
    unique.dedup();
    let mut mpidrs: Vec<&str> = listing.iter().map(|(_, m)| *m).collect();
    mpidrs.sort();
    mpidrs.dedup();
    if given_up.is_empty() {
        Err("no CPU missed a 0 ms deadline".into())
    } else if online + given_up.len() != 4 || listing.len() != online {
        Err(format!(
            "{online} online + {} given up != 4 CPUs, or `cpus` lists {} ({listing:?})",
            given_up.len(),
            listing.len()
        ))
    } else if unique.len() != slots.len() || mpidrs.len() != listing.len() {
        Err(format!(
            "a slot or MPIDR appears twice: {slots:?}, {listing:?}"
        ))
    } else {
        Ok(())
    }
}

/// Secondary CPUs that miss their start-up deadline (`smp_timeout_ms=0` makes every one
/// late) are given up slot by slot: no two CPUs share a per-CPU slot, the late ones turn
/// themselves off, and the one CPU left works. And a 17th CPU keeps its warning.
fn late_cpus(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let opts = RunOptions {
        smp: 4,
        bootargs: "smp_timeout_ms=0".into(),
        ..base.clone()
    };
    let out = boot(
        image,
        &opts,
        "cpus\nstress frames 1000\ncpus\nmemcheck\npoweroff\n",
    )?;
    let mut result = check(
        &out,
        &Expect {
            code: 0,
            contains: &[
                "did not come online within 0 ms",
                "errors: 0",
                "memcheck: ok",
            ],
            absent: &["PANIC"],
        },
    );
    if result.is_ok() {
        result = late_cpu_slots(&out.output);
    }
    tally.record("CPUs that miss their deadline never share a slot", result);

    let opts = RunOptions {
        smp: 17,
        gic: Some(3),
        ..base.clone()
    };
    let out = boot(image, &opts, "cpus\npoweroff\n")?;
    tally.record(
        "a 17th CPU is left off with a warning",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "smp: more than 16 CPUs; the rest stay off",
                    "smp: 16 CPUs online",
                    "cpu15  MPIDR",
                    "16 online",
                ],
                absent: &["PANIC", "cpu16"],
            },
        ),
    );
    Ok(())
}
