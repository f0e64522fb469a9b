//! The shell, boot and memory scenarios on the normal build, and `xtask memmap` on real
//! trees.

use super::harness::{boot, check, dump_qemu_dtb, patch_bytes, relocating_stub, Expect, Tally};
use crate::qemu::RunOptions;
use crate::{bail, deps, workspace_root, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A QEMU tree for `mem_mib` of RAM with a /reserved-memory node of every kind added
/// (static no-map, static mapped, disabled, dynamic with alloc-ranges), built with dtc.
fn reserved_memory_dtb(work: &Path) -> Result<PathBuf> {
    deps::ensure_dtc()?;
    let base = work.join("qemu-virt-default.dtb");
    let dts = work.join("virt-reserved.dts");
    let out = work.join("virt-reserved.dtb");
    let status = Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts", "-o"])
        .arg(&dts)
        .arg(&base)
        .status()?;
    if !status.success() {
        bail!("dtc could not decompile QEMU's tree");
    }
    let mut text = std::fs::read_to_string(&dts)?;
    text.push_str(RESERVED_MEMORY_OVERLAY);
    std::fs::write(&dts, text)?;
    let status = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(&out)
        .arg(&dts)
        .status()?;
    if !status.success() {
        bail!("dtc could not compile the reserved-memory test tree");
    }
    Ok(out)
}

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
        tally.record(
            &format!("memmap with --mem {mem_mib}M"),
            check(
                &out,
                &Expect {
                    code: 0,
                    contains: &[
                        ram_line,
                        "kernel          kernel",
                        "dtb             dtb",
                        "initrd          initrd",
                        "mem_map         mem_map",
                        "frames x 16 bytes",
                    ],
                    absent: &["warnings", "WARN"],
                },
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
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "initramfs: 9 entries",
                    "hello.txt",
                    "etc/",
                    "motd",
                    "Hello from the initramfs.",
                    "cat: nope: no such file or directory",
                    "ls: /nope: no such file or directory",
                    "usage: cat PATH",
                ],
                absent: &[],
            },
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
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "corrupt initramfs: bad magic at offset 0x0",
                    "ls: corrupt initramfs",
                ],
                absent: &["PANIC"],
            },
        ),
    );

    let dtb = reserved_memory_dtb(work)?;
    let opts = RunOptions {
        dtb: Some(dtb),
        ..base.clone()
    };
    let out = boot(image, &opts, "memmap\nfault 0xffff000050000000\n")?;
    tally.record(
        "reserved-memory: static no-map, mapped, disabled, dynamic",
        check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "0x000050000000-0x0000500fffff      1 MiB  reserved-memory fw@50000000 [no-map]",
                    "0x000051000000-0x0000511fffff      2 MiB  reserved-memory shared@51000000\n",
                    "0x000060c00000-0x000060ffffff      4 MiB  dynamic         pool [reusable]",
                    "no-map 1 MiB",
                    // The no-map region is not in the linear map: touching it faults.
                    "FAR  0xffff000050000000",
                    "translation fault",
                ],
                absent: &["gone@52000000", "warnings"],
            },
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
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "MemTotal:            1048576 kB",
                    "PageTables:",
                    "KernelHeap:",
                    "Fragmentation:",
                    "Node 0, zone    DMA32",
                    "memcheck: ok",
                    "L3[0] ",
                    "page 4 KiB -> 0x40200000 RO X normal",
                    "block 1 GiB -> 0x40000000 RW NX normal",
                    "L1[0] invalid",
                    "stress frames: 3000 operations",
                    "(back to its starting value)",
                    "stress heap: ",
                    "growths:",
                ],
                absent: &["errors: 1", "errors: 2", "CHANGED", "unknown command"],
            },
        ),
    );
    if !out.output.contains("errors: 0") {
        tally.record(
            "stress reports errors: 0",
            Err("no `errors: 0` line".into()),
        );
    }

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
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "4 online",
                    "cpu3   MPIDR 0x0000000003",
                    "on each of 4 CPUs",
                    "on another CPU than the allocation",
                    "errors: 0",
                    "(back to its starting value)",
                    "jobs 1",
                    "memcheck: ok",
                ],
                absent: &[],
            },
        ),
    );

    let out = boot(image, base, "fault stack\n")?;
    tally.record(
        "stack overflow is reported with the stack's name",
        check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "kernel stack overflow: stack 'boot'",
                    "ran into its guard page",
                    "levitate::shell::commands::recurse",
                ],
                absent: &["nested panic"],
            },
        ),
    );

    let out = boot(image, base, "fault text\n")?;
    tally.record(
        "writing to kernel text is a permission fault",
        check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "permission fault at level 3, write",
                    "in levitate::shell::commands::fault",
                ],
                absent: &[],
            },
        ),
    );
    Ok(())
}

pub fn memmap_cli(tally: &mut Tally, work: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let dtbs = workspace_root().join("levitate-mm/tests/dtbs");
    let run = |args: &[&std::ffi::OsStr]| Command::new(&exe).arg("memmap").args(args).output();
    for name in [
        "qemu-virt-1g.dtb",
        "gs101-oriole.SYNTHETIC-memory.dtb",
        "meson-g12b-odroid-n2.dtb",
    ] {
        let svg = work.join(format!("{name}.svg"));
        let out = run(&[
            dtbs.join(name).as_os_str(),
            "--svg".as_ref(),
            svg.as_os_str(),
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success() && text.contains("mem_map") && svg.is_file();
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
    let names = ["help", "version", "dtb", "poweroff", "reboot", "panic"];
    let out = boot(image, &default, "help\nversion\npoweroff\n")?;
    let mut want: Vec<&str> = names.to_vec();
    want.extend([
        "levitate> ",
        "Levitate 0.1.0",
        "powering off",
        "entered at EL1",
    ]);
    tally.record(
        "help, version and poweroff through a pipe",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &want,
                absent: &["unknown command"],
            },
        ),
    );

    let out = boot(
        image,
        &default,
        "bogus\nversion extra\npoweroff now\nhelx\x7fp\npoweroff\n",
    )?;
    tally.record(
        "unknown commands, usage errors and backspace",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "unknown command: bogus (try help)",
                    "usage: version",
                    "usage: poweroff",
                    "list the commands",
                ],
                absent: &["unknown command: help"],
            },
        ),
    );

    let out = boot(image, &default, "dtb\npoweroff\n")?;
    tally.record(
        "dtb command on QEMU's tree",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "linux,dummy-virt",
                    "memory@40000000",
                    "0x0040000000..0x0080000000  1 GiB",
                    "stdout-path",
                    "memreserve:",
                ],
                absent: &[],
            },
        ),
    );

    let out = boot(image, &default, "panic on purpose\nversion\n")?;
    tally.record(
        "panic prints message, location, backtrace and exits non-zero",
        check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "KERNEL PANIC: on purpose",
                    "kernel/src/shell/commands.rs",
                    "backtrace:",
                    "levitate::shell::commands::panic",
                    "levitate::shell::run",
                    "levitate::continue_boot",
                ],
                absent: &["levitate> version"],
            },
        ),
    );

    let out = boot(image, &default, "fault\n")?;
    tally.record(
        "unhandled data abort prints a decoded report",
        check(
            &out,
            &Expect {
                code: 3,
                contains: &[
                    "unhandled synchronous exception from EL1",
                    "data abort (kernel): translation fault",
                    "FAR  0x0000000000000000",
                    "in levitate::shell::commands::fault",
                    "backtrace:",
                    "trap_entry",
                ],
                absent: &[],
            },
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
        check(
            &out,
            &Expect {
                code: 0,
                contains: &["entered at EL2, running at EL1", "PSCI via Smc"],
                absent: &[],
            },
        ),
    );

    let quiet = RunOptions {
        bootargs: "loglevel=warn".into(),
        ..base.clone()
    };
    let out = boot(image, &quiet, "poweroff\n")?;
    tally.record(
        "loglevel=warn hides info messages",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &["levitate> "],
                absent: &[" INFO "],
            },
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
