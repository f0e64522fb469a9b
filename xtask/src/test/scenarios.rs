//! The shell, boot and memory scenarios on the normal build, and `xtask memmap` on real
//! trees.

use super::harness::{
    boot, check, check_commands, command_outputs, dump_qemu_dtb, memcheck_says, patch_bytes,
    qemu_dtb_with, relocating_stub, stress_says, Expect, Says, Tally,
};
use crate::qemu::RunOptions;
use crate::{workspace_root, Result};
use std::path::Path;
use std::process::Command;

/// Added to QEMU's tree (dtc merges a second root block into the first).
const RESERVED_MEMORY_OVERLAY: &str = r#"
/ {
    reserved-memory {
        #address-cells = <2>;
        #size-cells = <2>;
        ranges;
        fw@50000000 {
            reg = <0x0 0x50000000 0x0 0x100000>;
            no-map;
        };
        shared@51000000 {
            reg = <0x0 0x51000000 0x0 0x200000>;
        };
        gone@52000000 {
            reg = <0x0 0x52000000 0x0 0x100000>;
            status = "disabled";
        };
        pool {
            compatible = "shared-dma-pool";
            reusable;
            size = <0x0 0x400000>;
            alignment = <0x0 0x200000>;
            alloc-ranges = <0x0 0x60000000 0x0 0x1000000>;
        };
    };
};
"#;

pub fn memory_scenarios(
    tally: &mut Tally,
    image: &Path,
    work: &Path,
    base: &RunOptions,
) -> Result<()> {
    for (mem_mib, ram_line) in [
        (128, "0x000040000000-0x000047ffffff    128 MiB"),
        (1024, "0x000040000000-0x00007fffffff      1 GiB"),
        (8192, "0x000040000000-0x00023fffffff      8 GiB"),
    ] {
        let opts = RunOptions {
            mem_mib,
            ..base.clone()
        };
        let out = boot(image, &opts, "memmap\npoweroff\n")?;
        let memmap = [ram_line, "kernel          kernel", "dtb             dtb"];
        let memmap = [
            &memmap[..],
            &[
                "initrd          initrd",
                "mem_map         mem_map",
                "frames x 16 bytes",
            ],
        ]
        .concat();
        tally.record(
            &format!("memmap with --mem {mem_mib}M"),
            check_commands(
                &out,
                &Expect {
                    code: 0,
                    contains: &[],
                    absent: &["warnings", "WARN"],
                },
                &[Says::new("memmap", &memmap)],
            ),
        );
    }

    let out = boot(
        image,
        &base.clone(),
        "ls\nls /etc\ncat hello.txt\ncat nope\nls /nope\ncat\npoweroff\n",
    )?;
    tally.record(
        "initramfs: ls and cat",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["initramfs: 9 entries"],
                absent: &[],
            },
            &[
                Says::new("ls", &["hello.txt\n", "etc/\n", "usr/\n", "README\n"]),
                Says::new("ls /etc", &["motd\n"]),
                Says::new("cat hello.txt", &["Hello from the initramfs."]),
                Says::new("cat nope", &["cat: nope: no such file or directory"]),
                Says::new("ls /nope", &["ls: /nope: no such file or directory"]),
                Says::new("cat", &["usage: cat PATH"]),
            ],
        ),
    );

    let garbage = work.join("garbage.initrd");
    std::fs::write(
        &garbage,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )?;
    let opts = RunOptions {
        initrd: Some(garbage),
        ..base.clone()
    };
    let out = boot(image, &opts, "ls\npoweroff\n")?;
    tally.record(
        "corrupt initramfs is a clear error",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["corrupt initramfs: bad magic at offset 0x0"],
                absent: &["PANIC"],
            },
            &[Says::new("ls", &["ls: corrupt initramfs"])],
        ),
    );

    let dtb = qemu_dtb_with(work, "virt-reserved", RESERVED_MEMORY_OVERLAY)?;
    let opts = RunOptions {
        dtb: Some(dtb),
        ..base.clone()
    };
    let out = boot(image, &opts, "memmap\nfault 0xffff000050000000\n")?;
    tally.record(
        "reserved-memory: static no-map, mapped, disabled, dynamic",
        check_commands(
            &out,
            &Expect {
                code: 3,
                contains: &[],
                absent: &["gone@52000000", "warnings"],
            },
            &[
                Says::new(
                    "memmap",
                    &[
                        "0x000050000000-0x0000500fffff      1 MiB  reserved-memory fw@50000000 [no-map]",
                        "0x000051000000-0x0000511fffff      2 MiB  reserved-memory shared@51000000\n",
                        "0x000060c00000-0x000060ffffff      4 MiB  dynamic         pool [reusable]",
                        "no-map 1 MiB",
                    ],
                ),
                // The no-map region is not in the linear map: touching it faults.
                Says::new(
                    "fault 0xffff000050000000",
                    &["FAR  0xffff000050000000", "translation fault"],
                ),
            ],
        ),
    );
    Ok(())
}

pub fn frame_scenarios(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
    let out = boot(
        image,
        base,
        "meminfo\nbuddyinfo\nmemcheck\npt 0xffffffff80000000\npt 0xffff000040000000\npt 0x1000\nstress frames 3000\nstress heap 16M\nheap\nmemcheck\npoweroff\n",
    )?;
    tally.record(
        "meminfo, buddyinfo, memcheck, pt, stress frames and stress heap",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[],
                absent: &["unknown command", "usage:"],
            },
            &[
                Says::new(
                    "meminfo",
                    &[
                        "MemTotal:            1048576 kB",
                        "PageTables:",
                        "KernelHeap:",
                        "Fragmentation:",
                    ],
                ),
                Says::new("buddyinfo", &["Node 0, zone    DMA32"]),
                // Both runs: before the stress and after it.
                memcheck_says(),
                Says::new(
                    "pt 0xffffffff80000000",
                    &["L3[0] ", "page 4 KiB -> 0x40200000 RO X normal"],
                ),
                Says::new(
                    "pt 0xffff000040000000",
                    &["block 1 GiB -> 0x40000000 RW NX normal"],
                ),
                Says::new("pt 0x1000", &["L1[0] invalid"]),
                stress_says("stress frames 3000"),
                Says::new(
                    "stress frames 3000",
                    &[
                        "stress frames: 3000 operations",
                        "(back to its starting value)",
                    ],
                ),
                stress_says("stress heap 16M"),
                Says::new("heap", &["growths:"]),
            ],
        ),
    );

    let opts = RunOptions {
        smp: 4,
        ..base.clone()
    };
    let out = boot(
        image,
        &opts,
        "cpus\nstress frames 5000\ncpus\nmemcheck\npoweroff\n",
    )?;
    tally.record(
        "stress frames at --smp 4",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[],
                absent: &[],
            },
            &[
                Says::new("cpus", &["4 online", "cpu3   MPIDR 0x0000000003"]),
                stress_says("stress frames 5000"),
                Says {
                    cmd: "stress frames 5000",
                    contains: &["on each of 4 CPUs", "(back to its starting value)"],
                    absent: &[],
                    verify: Some(some_frees_on_another_cpu),
                },
                memcheck_says(),
            ],
        )
        .and_then(|()| every_cpu_ran_one_job(&out.output, 4)),
    );

    let poison = RunOptions {
        bootargs: "poison".into(),
        ..base.clone()
    };
    let out = boot(
        image,
        &poison,
        "memcheck\nstress frames 2000\nstress heap 4M\nmemcheck\npoweroff\n",
    )?;
    tally.record(
        "memcheck scans free frames for poison in a poison boot",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["poisoning freed frames"],
                absent: &["use after free"],
            },
            &[
                memcheck_says(),
                Says::new("memcheck", &["; poison intact in the buddy's "]),
                stress_says("stress frames 2000"),
                stress_says("stress heap 4M"),
            ],
        ),
    );

    let out = boot(image, base, "fault stack\n")?;
    tally.record(
        "stack overflow is reported with the stack's name",
        check_commands(
            &out,
            &Expect {
                code: 3,
                contains: &[],
                absent: &["nested panic"],
            },
            &[Says::new(
                "fault stack",
                &[
                    "kernel stack overflow: stack 'boot'",
                    "ran into its guard page",
                    "levitate::shell::commands::recurse",
                ],
            )],
        ),
    );

    let out = boot(image, base, "fault text\n")?;
    tally.record(
        "writing to kernel text is a permission fault",
        check_commands(
            &out,
            &Expect {
                code: 3,
                contains: &[],
                absent: &[],
            },
            &[Says::new(
                "fault text",
                &[
                    "permission fault at level 3, write",
                    "in levitate::shell::commands::fault",
                ],
            )],
        ),
    );
    Ok(())
}

pub fn memmap_cli(tally: &mut Tally, work: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let dtbs = workspace_root().join("levitate-mm/tests/dtbs");
    let run = |args: &[&std::ffi::OsStr]| Command::new(&exe).arg("memmap").args(args).output();
    // Each tree's own totals (from its memory and reserved-memory nodes), so the check cannot
    // pass on a map of some other tree.
    for (name, total) in [
        (
            "qemu-virt-1g.dtb",
            "total: RAM 1 GiB, reserved 4 MiB, usable 1020 MiB, no-map 0 B",
        ),
        (
            "gs101-oriole.SYNTHETIC-memory.dtb",
            "total: RAM 8 GiB, reserved 142.5 MiB, usable 7.8 GiB, no-map 110.9 MiB",
        ),
        (
            "meson-g12b-odroid-n2.dtb",
            "total: RAM 1 GiB, reserved 293.8 MiB, usable 730.1 MiB, no-map 35 MiB",
        ),
    ] {
        let svg = work.join(format!("{name}.svg"));
        let _ = std::fs::remove_file(&svg);
        let out = run(&[
            dtbs.join(name).as_os_str(),
            "--svg".as_ref(),
            svg.as_os_str(),
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let drawn = std::fs::read_to_string(&svg).is_ok_and(|t| t.contains("<svg"));
        let ok = out.status.success()
            && text.lines().any(|l| l == total)
            && text.contains("frames x 16 bytes")
            && drawn;
        tally.record(
            &format!("xtask memmap {name}"),
            if ok {
                Ok(())
            } else {
                Err(format!("status {:?}: {text}", out.status.code()))
            },
        );
    }
    // The tree QEMU dumps for this very machine (written by the boot scenarios).
    let dumped = work.join("qemu-virt-default.dtb");
    let out = run(&[dumped.as_os_str(), "--json".as_ref()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = out.status.success()
        && text.contains("\"memory\":[{\"base\":1073741824,\"size\":1073741824}]");
    tally.record(
        "xtask memmap on the tree QEMU dumps itself",
        if ok {
            Ok(())
        } else {
            Err(format!("status {:?}: {text}", out.status.code()))
        },
    );
    let truncated = work.join("truncated.dtb");
    let blob = std::fs::read(dtbs.join("qemu-virt-1g.dtb"))?;
    std::fs::write(&truncated, &blob[..blob.len() / 3])?;
    for (label, path) in [
        ("no /memory", dtbs.join("gs101-oriole.dtb")),
        ("truncated", truncated),
    ] {
        let out = run(&[path.as_os_str(), "--json".as_ref()])?;
        let err = String::from_utf8_lossy(&out.stderr);
        let one_line = err.lines().count() == 1 && err.starts_with("error: ");
        let result = if out.status.code() == Some(1) && one_line && out.stdout.is_empty() {
            Ok(())
        } else {
            Err(format!("status {:?}, stderr {err:?}", out.status.code()))
        };
        tally.record(
            &format!("xtask memmap on a bad tree ({label}) exits 1 with one error line"),
            result,
        );
    }
    Ok(())
}

pub fn scenarios(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== shell and boot scenarios");
    let default = base.clone();
    // The help lines start with two spaces and the command's name.
    let help = [
        "  help ",
        "  version ",
        "  dtb ",
        "  memmap ",
        "  memcheck ",
        "  stress ",
        "  poweroff ",
        "  reboot ",
        "  panic ",
        "  fault ",
    ];
    let out = boot(image, &default, "help\nversion\npoweroff\n")?;
    tally.record(
        "help, version and poweroff through a pipe",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["entered at EL1, running at EL1"],
                absent: &["unknown command"],
            },
            &[
                Says::new("help", &help),
                Says::new(
                    "version",
                    &[&format!("Levitate {} (git ", env!("CARGO_PKG_VERSION"))],
                ),
                Says::new("poweroff", &["powering off"]),
            ],
        ),
    );

    let out = boot(
        image,
        &default,
        "bogus\nversion extra\npoweroff now\nhelx\x7fp\npoweroff\n",
    )?;
    tally.record(
        "unknown commands, usage errors and backspace",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[],
                absent: &["unknown command: help"],
            },
            &[
                Says::new("bogus", &["unknown command: bogus (try help)"]),
                Says::new("version extra", &["usage: version"]),
                Says::new("poweroff now", &["usage: poweroff"]),
                // "helx", backspace, "p": the line editor ran `help`.
                Says::new("help", &["  help                   list the commands"]),
                Says::new("poweroff", &["powering off"]),
            ],
        ),
    );

    let out = boot(image, &default, "dtb\npoweroff\n")?;
    tally.record(
        "dtb command on QEMU's tree",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[],
                absent: &[],
            },
            &[Says::new(
                "dtb",
                &[
                    "model:       linux,dummy-virt",
                    "  memory@40000000\n    0x0040000000..0x0080000000  1 GiB",
                    "stdout-path          \"/pl011@9000000\"",
                    "bootargs             \"semihosting\"",
                    "memreserve:\n  (none)",
                ],
            )],
        ),
    );

    let out = boot(image, &default, "panic on purpose\nversion\n")?;
    tally.record(
        "panic prints message, location, backtrace and exits non-zero",
        check_commands(
            &out,
            &Expect {
                code: 3,
                contains: &[],
                absent: &["levitate> version"],
            },
            &[Says::new(
                "panic on purpose",
                &[
                    "KERNEL PANIC: on purpose",
                    "kernel/src/shell/commands.rs",
                    "backtrace:",
                    "levitate::shell::commands::panic",
                    "levitate::shell::run",
                    "levitate::continue_boot",
                ],
            )],
        ),
    );

    let out = boot(image, &default, "fault\n")?;
    tally.record(
        "unhandled data abort prints a decoded report",
        check_commands(
            &out,
            &Expect {
                code: 3,
                contains: &[],
                absent: &[],
            },
            &[Says::new(
                "fault",
                &[
                    "unhandled synchronous exception from EL1",
                    "data abort (kernel): translation fault",
                    "FAR  0x0000000000000000",
                    "in levitate::shell::commands::fault",
                    "backtrace:",
                    "trap_entry",
                ],
            )],
        ),
    );

    let el2 = RunOptions {
        el2: true,
        gic: Some(3),
        ..base.clone()
    };
    let out = boot(image, &el2, "poweroff\n")?;
    tally.record(
        "EL2 entry drops to EL1 and powers off via smc",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &["entered at EL2, running at EL1", "PSCI via Smc"],
                absent: &[],
            },
            &[Says::new("poweroff", &["powering off"])],
        ),
    );

    let quiet = RunOptions {
        bootargs: "loglevel=warn".into(),
        ..base.clone()
    };
    let out = boot(image, &quiet, "poweroff\n")?;
    tally.record(
        "loglevel=warn hides info messages",
        check_commands(
            &out,
            &Expect {
                code: 0,
                contains: &[],
                absent: &[" INFO "],
            },
            &[Says::new("poweroff", &["powering off"])],
        ),
    );

    for (label, load_at, el2) in [
        ("0x50000000", 0x5000_0000u64, false),
        ("0x7e000000 at EL2", 0x7e00_0000, true),
    ] {
        let stub = work.join("relocating-stub.img");
        std::fs::write(&stub, relocating_stub(load_at))?;
        let mut opts = RunOptions {
            el2,
            extra: vec![format!(
                "loader,file={},addr={load_at:#x},force-raw=on",
                image.display()
            )
            .into()],
            ..base.clone()
        };
        opts.extra.insert(0, "-device".into());
        let out = boot(&stub, &opts, "poweroff\n")?;
        let want = format!("image at {load_at:#x}");
        tally.record(
            &format!("kernel loaded at {label} by another bootloader"),
            check(
                &out,
                &Expect {
                    code: 0,
                    contains: &[&want, "levitate> "],
                    absent: &[],
                },
            ),
        );
    }

    let qemu_dtb = dump_qemu_dtb(work)?;
    let no_stdout = work.join("virt-no-stdout-path.dtb");
    std::fs::write(
        &no_stdout,
        patch_bytes(&qemu_dtb, b"stdout-path\0", b"stdout-patx\0"),
    )?;
    let opts = RunOptions {
        dtb: Some(no_stdout),
        ..base.clone()
    };
    let out = boot(image, &opts, "poweroff\n")?;
    tally.record(
        "console found without stdout-path (first arm,pl011)",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &["console: PL011 at 0x9000000 (from first arm,pl011 node)"],
                absent: &[],
            },
        ),
    );

    let no_uart = work.join("virt-no-pl011.dtb");
    std::fs::write(&no_uart, patch_bytes(&qemu_dtb, b"pl011", b"pl0xx"))?;
    let opts = RunOptions {
        dtb: Some(no_uart),
        ..base.clone()
    };
    let out = boot(image, &opts, "")?;
    tally.record(
        "no console node: clear message and clean stop",
        check(
            &out,
            &Expect {
                code: 2,
                contains: &[
                    "boot failed: no console: stdout-path /pl0xx@9000000 is not a supported UART",
                ],
                absent: &["PANIC", "nested"],
            },
        ),
    );
    Ok(())
}

/// `stress frames` on several CPUs handed frames across: "(N on another CPU than the
/// allocation)" with N > 0.
fn some_frees_on_another_cpu(text: &str) -> std::result::Result<(), String> {
    let n = text
        .split_once(" frees (")
        .and_then(|(_, rest)| rest.split_once(" on another CPU"))
        .and_then(|(n, _)| n.parse::<u64>().ok());
    match n {
        Some(n) if n > 0 => Ok(()),
        Some(_) => Err("no frame was freed on another CPU than its allocation".into()),
        None => Err("no `(N on another CPU than the allocation)` count".into()),
    }
}

/// The second `cpus` (after one `stress frames`) lists each of `cpus` CPUs with one job run.
fn every_cpu_ran_one_job(output: &str, cpus: usize) -> std::result::Result<(), String> {
    let runs = command_outputs(output, "cpus");
    let Some(after) = runs.get(1) else {
        return Err(format!("`cpus` ran {} times, expected 2", runs.len()));
    };
    let lines: Vec<&str> = after.lines().filter(|l| l.starts_with("cpu")).collect();
    let one_job = lines
        .iter()
        .filter(|l| l.trim_end().ends_with(" jobs 1"))
        .count();
    if lines.len() == cpus && one_job == cpus {
        Ok(())
    } else {
        Err(format!(
            "after the stress, {one_job} of {} CPUs listed ran one job, expected {cpus}:\n{after}",
            lines.len()
        ))
    }
}
