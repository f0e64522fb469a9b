//! `cargo xtask test`: host unit tests, then QEMU boots in a small matrix running the in-kernel
//! suites, then shell and bad-input scenarios on the normal build. Ends with one line,
//! `N passed, N failed`, counting host tests, kernel tests and scenarios together.

use crate::kernel::{self, Variant};
use crate::qemu::RunOptions;
use crate::{bail, deps, workspace_root, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A boot that has not finished by then has hung.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, result: std::result::Result<(), String>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("scenario {name} ... ok");
            }
            Err(why) => {
                self.failed += 1;
                println!("scenario {name} ... FAILED: {why}");
                self.failures.push(format!("{name}: {why}"));
            }
        }
    }
}

/// What a QEMU run produced.
pub struct Outcome {
    /// Exit status (None when killed after the timeout).
    pub code: Option<i32>,
    /// Everything the guest printed (stdout and stderr of QEMU).
    pub output: String,
    /// The run hit the timeout.
    pub timed_out: bool,
}

/// Boots `image` with `opts`, feeding `input` to the console, and collects the output.
pub fn boot(image: &Path, opts: &RunOptions, input: &str) -> Result<Outcome> {
    let mut child = opts
        .command(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let sink = Arc::clone(&output);
        readers.push(std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }));
    }
    // Keep stdin open while the guest runs: the UART reads it as the user would type.
    let mut stdin = child.stdin.take();
    if let Some(s) = stdin.as_mut() {
        let _ = s.write_all(input.as_bytes());
        let _ = s.flush();
    }
    let start = Instant::now();
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (status.code(), false);
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    for r in readers {
        let _ = r.join();
    }
    let bytes = output.lock().unwrap().clone();
    Ok(Outcome {
        code,
        output: String::from_utf8_lossy(&bytes).replace('\r', ""),
        timed_out,
    })
}

/// Runs the host test suites, streaming their output; returns (passed, failed).
fn host_tests(tally: &mut Tally) -> Result<()> {
    println!("== host tests (cargo test --workspace)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--no-fail-fast", "--color", "never"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let (mut passed, mut failed) = (0, 0);
    for line in text.lines() {
        // "test result: ok. 12 passed; 0 failed; 0 ignored; ..."
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let part = part.trim();
                if let Some(n) = part.strip_suffix(" passed") {
                    passed += n.trim().parse::<usize>().unwrap_or(0);
                }
                if let Some(n) = part.strip_suffix(" failed") {
                    failed += n.trim().parse::<usize>().unwrap_or(0);
                }
            }
        }
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            tally.failures.push(format!("host test {name}"));
        }
    }
    if !out.status.success() && failed == 0 {
        // A build failure runs no tests; count it so the run cannot look green.
        failed = 1;
        tally
            .failures
            .push("host tests did not build or run".into());
    }
    tally.passed += passed;
    tally.failed += failed;
    Ok(())
}

/// Boots the ktest kernel in one configuration and counts its tests.
fn kernel_suite(tally: &mut Tally, image: &Path, label: &str, opts: &RunOptions) -> Result<()> {
    println!("== in-kernel tests: {label}");
    let out = boot(image, opts, "")?;
    let (mut passed, mut failed, mut summary) = (0, 0, false);
    for line in out.output.lines() {
        let Some(rest) = line.strip_prefix("ktest: ") else {
            continue;
        };
        println!("  {line}");
        if rest.starts_with("result: ") {
            summary = true;
        } else if rest.ends_with(" ... ok") {
            passed += 1;
        } else if let Some((name, _)) = rest.split_once(" ... FAILED") {
            failed += 1;
            tally.failures.push(format!("ktest [{label}] {name}"));
        }
    }
    tally.passed += passed;
    tally.failed += failed;
    let problem = if out.timed_out {
        Some(format!("timed out after {}s", BOOT_TIMEOUT.as_secs()))
    } else if !summary {
        Some(format!(
            "ended without a summary (exit status {:?})",
            out.code
        ))
    } else if out.code != Some(0) && failed == 0 {
        Some(format!("exit status {:?} with no failing test", out.code))
    } else {
        None
    };
    if let Some(why) = problem {
        println!("{}", tail(&out.output, 30));
        tally.record(&format!("kernel boot [{label}]"), Err(why));
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Checks on one run's outcome.
struct Expect<'a> {
    code: i32,
    contains: &'a [&'a str],
    absent: &'a [&'a str],
}

fn check(out: &Outcome, e: &Expect<'_>) -> std::result::Result<(), String> {
    let mut problems = Vec::new();
    if out.timed_out {
        problems.push(format!("timed out after {}s", BOOT_TIMEOUT.as_secs()));
    } else if out.code != Some(e.code) {
        problems.push(format!("exit status {:?}, expected {}", out.code, e.code));
    }
    for want in e.contains {
        if !out.output.contains(want) {
            problems.push(format!("output lacks {want:?}"));
        }
    }
    for unwanted in e.absent {
        if out.output.contains(unwanted) {
            problems.push(format!("output has {unwanted:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n--- output tail ---\n{}",
            problems.join("; "),
            tail(&out.output, 25)
        ))
    }
}

/// QEMU's own device tree for the default machine, dumped once.
fn dump_qemu_dtb(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("qemu-virt-default.dtb");
    let status = Command::new("qemu-system-aarch64")
        .args([
            "-M",
            &format!("virt,dumpdtb={}", path.display()),
            "-cpu",
            "cortex-a76",
            "-m",
            "1024M",
            "-nographic",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("qemu-system-aarch64 could not dump its device tree");
    }
    Ok(std::fs::read(&path)?)
}

/// A minimal "bootloader": an arm64 Image that QEMU enters with x0 = DTB and that jumps to
/// `target`, where `-device loader` put the real kernel. It proves the kernel's early code
/// runs wherever it is loaded, not only at QEMU's own address.
fn relocating_stub(target: u64) -> Vec<u8> {
    let mut img = vec![0u8; 0x50];
    let mut put32 = |at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(0x00, 0x1400_0010); // b +0x40
    put32(0x40, 0x5800_0050); // ldr x16, #8   (the literal below)
    put32(0x44, 0xd61f_0200); // br x16        (x0-x3 untouched)
    img[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    img[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes()); // flags: LE, 4K, anywhere
    img[0x38..0x3c].copy_from_slice(b"ARM\x64");
    img[0x48..0x50].copy_from_slice(&target.to_le_bytes());
    img
}

/// Replaces every occurrence of `from` with `to` (same length) in a blob.
fn patch_bytes(blob: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "patches keep the blob's layout");
    let mut out = blob.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

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

fn memory_scenarios(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
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

fn frame_scenarios(tally: &mut Tally, image: &Path, base: &RunOptions) -> Result<()> {
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

fn memmap_cli(tally: &mut Tally, work: &Path) -> Result<()> {
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

fn scenarios(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
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

/// `cargo xtask test [--quick]`.
pub fn run(parser: &mut lexopt::Parser) -> Result<ExitCode> {
    let mut quick = false;
    while let Some(arg) = parser.next()? {
        match arg {
            lexopt::Arg::Long("quick") => quick = true,
            other => bail!("{} (usage: cargo xtask test [--quick])", other.unexpected()),
        }
    }
    let started = Instant::now();
    deps::ensure_target()?;
    deps::ensure_qemu()?;
    let initramfs = crate::initramfs::default_archive()?;
    let base = RunOptions {
        initrd: Some(initramfs),
        ..RunOptions::default()
    };
    let mut tally = Tally::default();
    host_tests(&mut tally)?;

    let ktest = kernel::build(Variant {
        release: false,
        ktest: true,
    })?;
    let normal = kernel::build(Variant {
        release: false,
        ktest: false,
    })?;
    let mut matrix: Vec<(&str, RunOptions)> = vec![("default", base.clone())];
    if !quick {
        matrix.push((
            "--el2 --gic 3",
            RunOptions {
                el2: true,
                gic: Some(3),
                ..base.clone()
            },
        ));
        matrix.push((
            "--mem 128M",
            RunOptions {
                mem_mib: 128,
                ..base.clone()
            },
        ));
        matrix.push((
            "--mem 8G",
            RunOptions {
                mem_mib: 8192,
                ..base.clone()
            },
        ));
        matrix.push((
            "--bootargs poison",
            RunOptions {
                bootargs: "poison".into(),
                ..base.clone()
            },
        ));
        matrix.push((
            "--smp 4",
            RunOptions {
                smp: 4,
                ..base.clone()
            },
        ));
    }
    for (label, opts) in &matrix {
        kernel_suite(&mut tally, &ktest.image, label, opts)?;
    }
    let work: PathBuf = workspace_root().join("target").join("xtask-test");
    std::fs::create_dir_all(&work)?;
    scenarios(&mut tally, &normal.image, &work, &base)?;
    memory_scenarios(&mut tally, &normal.image, &work, &base)?;
    frame_scenarios(&mut tally, &normal.image, &base)?;
    memmap_cli(&mut tally, &work)?;

    println!();
    if !tally.failures.is_empty() {
        println!("failures:");
        for f in &tally.failures {
            println!("  {}", f.lines().next().unwrap_or(""));
        }
    }
    println!("took {:.0}s", started.elapsed().as_secs_f64());
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
