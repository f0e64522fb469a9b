//! Hostile memory maps: RAM the CPU cannot address, reserved memory that fails closed, `xtask run --dtb/--initrd` refusing what the kernel would reject.
//!
//! Trees with extra memory banks cannot go through QEMU's `-dtb` (QEMU replaces every memory
//! node), so those boots use a stub bootloader: QEMU boots the stub as the arm64 Image, two
//! `-device loader`s put the kernel and the unmodified tree in RAM, and the stub enters the
//! kernel with x0 = the tree, as a phone's bootloader would.

use super::harness::{
    boot, check, dump_qemu_dtb, qemu_dtb_with, tree_stub, Expect, Outcome, Tally,
};
use crate::qemu::RunOptions;
use crate::{deps, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the stub boots put the tree and the kernel (inside QEMU's RAM, clear of the stub at
/// its start and of QEMU's own tree at 0x4800_0000).
const TREE_AT: u64 = 0x4c00_0000;
const KERNEL_AT: u64 = 0x5000_0000;

/// Boots `image` through the stub with `tree` as the kernel's device tree, unmodified.
fn boot_with_tree(
    image: &Path,
    work: &Path,
    tree: &Path,
    cpu: &str,
    base: &RunOptions,
    input: &str,
) -> Result<Outcome> {
    let stub = work.join("tree-stub.img");
    std::fs::write(&stub, tree_stub(TREE_AT, KERNEL_AT))?;
    let loader =
        |file: &Path, at: u64| format!("loader,file={},addr={at:#x},force-raw=on", file.display());
    let opts = RunOptions {
        cpu: cpu.into(),
        // QEMU would put the initrd and its own tree's properties somewhere; this tree has none.
        initrd: None,
        extra: vec![
            "-device".into(),
            loader(image, KERNEL_AT).into(),
            "-device".into(),
            loader(tree, TREE_AT).into(),
        ],
        ..base.clone()
    };
    boot(&stub, &opts, input)
}

/// The tree carries its own command line: QEMU only edits the tree it passes itself.
const SEMIHOSTING: &str = "\n/ { chosen { bootargs = \"semihosting\"; }; };\n";

/// Runs this xtask binary with `args`, stdin closed, killed after `limit`.
struct CliRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

fn xtask(args: &[&std::ffi::OsStr], input: &str, limit: Duration) -> Result<CliRun> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    }
    let start = Instant::now();
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output()?;
    Ok(CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out,
    })
}

/// The one `error:` line a refusing command must print, and nothing else.
fn one_error_line(run: &CliRun, want: &str) -> std::result::Result<(), String> {
    if run.timed_out {
        return Err("did not exit (killed)".into());
    }
    let lines: Vec<&str> = run.stderr.lines().collect();
    if run.code == Some(1) && lines == [want] && run.stdout.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "status {:?}, stderr {:?}, stdout {:?}; wanted exactly {want:?}",
            run.code,
            run.stderr,
            super::harness::tail(&run.stdout, 10)
        ))
    }
}

/// Runs this file's scenarios on the normal build `image`.
pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== hostile memory maps");
    deps::ensure_dtc()?;
    dump_qemu_dtb(work)?;

    // ---- Item 4: RAM the CPU cannot address ----
    let bank_1t = qemu_dtb_with(
        work,
        "virt-bank-1t",
        &format!(
            "{SEMIHOSTING}/ {{ memory@10000000000 {{ device_type = \"memory\"; \
             reg = <0x100 0x0 0x0 0x40000000>; }}; }};\n"
        ),
    )?;
    let out = boot_with_tree(
        image,
        work,
        &bank_1t,
        "cortex-a76",
        base,
        "memmap\npoweroff\n",
    )?;
    tally.record(
        "RAM at 1 TiB on a 40-bit CPU (cortex-a76) is ignored with a warning",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "ID_AA64MMFR0_EL1.PARange = 2",
                    // The memmap command's table (indented), not the boot log.
                    "\n  memory node 'memory@10000000000': RAM 0x10000000000..0x10040000000 \
                     (1 GiB) lies beyond the CPU's 40-bit physical address range; ignored\n",
                    "total: RAM 1 GiB,",
                    "powering off",
                ],
                absent: &["PANIC", "boot failed"],
            },
        ),
    );

    let bank_128t = qemu_dtb_with(
        work,
        "virt-bank-128t",
        &format!(
            "{SEMIHOSTING}/ {{ memory@800000000000 {{ device_type = \"memory\"; \
             reg = <0x8000 0x0 0x0 0x40000000>; }}; }};\n"
        ),
    )?;
    let out = boot_with_tree(image, work, &bank_128t, "max", base, "memmap\npoweroff\n")?;
    tally.record(
        "RAM at 128 TiB on a 52-bit CPU (max) is ignored: past the linear map",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "ID_AA64MMFR0_EL1.PARange = 6",
                    "\n  memory node 'memory@800000000000': RAM 0x800000000000..0x800040000000 \
                     (1 GiB) lies beyond the kernel's linear map (physical 0..0x800000000000, \
                     128 TiB); ignored\n",
                    "total: RAM 1 GiB,",
                    "powering off",
                ],
                absent: &["PANIC", "boot failed", "not canonical"],
            },
        ),
    );

    // xtask memmap models the CPU with --pa-bits.
    let memmap = |args: &[&std::ffi::OsStr]| {
        let mut all: Vec<&std::ffi::OsStr> = vec!["memmap".as_ref()];
        all.extend_from_slice(args);
        xtask(&all, "", Duration::from_secs(60))
    };
    let run = memmap(&[bank_1t.as_os_str(), "--pa-bits".as_ref(), "40".as_ref()])?;
    let ok = run.code == Some(0)
        && run.stdout.contains(
            "\n  memory node 'memory@10000000000': RAM 0x10000000000..0x10040000000 (1 GiB) \
             lies beyond the CPU's 40-bit physical address range; ignored\n",
        )
        && run.stdout.contains("total: RAM 1 GiB,");
    let straddle = memmap(&[
        crate::workspace_root()
            .join("levitate-mm/tests/dtbs/qemu-virt-8g.dtb")
            .as_os_str(),
        "--pa-bits".as_ref(),
        "32".as_ref(),
        "--json".as_ref(),
    ])?;
    let ok_straddle = straddle.code == Some(0)
        && straddle
            .stdout
            .contains("\"memory\":[{\"base\":1073741824,\"size\":3221225472}]")
        && straddle.stdout.contains(
            "runs past the CPU's 32-bit physical address range; only 0x40000000..0x100000000 \
             (3 GiB) is used",
        );
    let bad = memmap(&[bank_1t.as_os_str(), "--pa-bits".as_ref(), "41".as_ref()])?;
    let ok_bad = one_error_line(
        &bad,
        "error: bad --pa-bits `41`: expected a physical address size ID_AA64MMFR0_EL1.PARange \
         can report (32, 36, 40, 42, 44, 48, 52, 56)",
    );
    tally.record(
        "xtask memmap --pa-bits: a bank past the range is ignored, one straddling it clipped",
        match (ok, ok_straddle, ok_bad) {
            (true, true, Ok(())) => Ok(()),
            (a, b, c) => Err(format!(
                "1 TiB bank ok: {a} ({:?} {}); 8 GiB at 32 bits ok: {b} ({}); bad value: {c:?}",
                run.code, run.stdout, straddle.stdout
            )),
        },
    );

    // ---- Item 10: reserved memory fails closed ----
    let broken_child = qemu_dtb_with(
        work,
        "virt-reserved-broken-reg",
        "\n/ { reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges; \
         off@48000000 { reg = <0x0 0x48000000 0x0>; status = \"disabled\"; }; \
         fw@50000000 { reg = <0x0 0x50000000 0x0 0x100000 0x7>; no-map; }; }; };\n",
    )?;
    let broken_parent = qemu_dtb_with(
        work,
        "virt-reserved-broken-parent",
        "\n/ { reserved-memory { #address-cells = <3>; #size-cells = <2>; ranges; \
         fw@50000000 { reg = <0x0 0x0 0x50000000 0x0 0x100000>; }; }; };\n",
    )?;
    let zero_size = qemu_dtb_with(
        work,
        "virt-reserved-zero-size",
        "\n/ { reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges; \
         fw@50000000 { reg = <0x0 0x50000000 0x0 0x0>; }; }; };\n",
    )?;
    let child_message = "reserved-memory node /reserved-memory/fw@50000000: reg ends with 4 bytes \
                         that do not form a whole entry; cannot tell which memory it reserves, \
                         so none is handed out (status = \"disabled\" ignores the node)";
    let parent_message = "/reserved-memory: #address-cells = 3 and #size-cells = 2 cannot \
                          describe physical memory (each must be 1 or 2); cannot tell which \
                          memory its children reserve, so none is handed out";
    let zero_message = "reserved-memory node /reserved-memory/fw@50000000: reg entry at \
                        0x50000000 has size 0; cannot tell which memory it reserves, so none is \
                        handed out (status = \"disabled\" ignores the node)";
    for (label, tree, message) in [
        ("a ragged reg", &broken_child, child_message),
        (
            "bad cell sizes on /reserved-memory",
            &broken_parent,
            parent_message,
        ),
    ] {
        // Through QEMU's -dtb: it keeps /reserved-memory as it is.
        let opts = RunOptions {
            dtb: Some(tree.clone()),
            ..base.clone()
        };
        let out = boot(image, &opts, "poweroff\n")?;
        let mut result = check(
            &out,
            &Expect {
                code: 2,
                contains: &[&format!("boot failed: memory: {message}\n")],
                absent: &["levitate> ", "off@48000000", "PANIC"],
            },
        );
        // The kernel and xtask memmap say the same thing.
        let cli = memmap(&[tree.as_os_str()])?;
        if let Err(e) = one_error_line(&cli, &format!("error: {}: {message}", tree.display())) {
            result = Err(format!("xtask memmap: {e}"));
        }
        tally.record(
            &format!(
                "reserved memory with {label}: boot refused naming the node, xtask memmap exits 1"
            ),
            result,
        );
    }
    let cli = memmap(&[zero_size.as_os_str()])?;
    tally.record(
        "xtask memmap: a reserved-memory reg entry of size 0 is refused",
        one_error_line(
            &cli,
            &format!("error: {}: {zero_message}", zero_size.display()),
        ),
    );

    // ---- Item 9: xtask run refuses what the kernel would, before QEMU starts ----
    let truncated = work.join("run-truncated.dtb");
    let qemu_tree = std::fs::read(work.join("qemu-virt-default.dtb"))?;
    std::fs::write(&truncated, &qemu_tree[..qemu_tree.len() / 3])?;
    // QEMU loads this one happily; the kernel's check refuses it and halts before it has a
    // console, so without the check `xtask run` would never return.
    let bad_cells = qemu_dtb_with(
        work,
        "run-bad-cells",
        "\n/ { odd-bus { #address-cells = <0x0 0x2>; #size-cells = <0x1>; }; };\n",
    )?;
    for (label, tree) in [
        ("a truncated tree", &truncated),
        (
            "a cell size QEMU accepts and the kernel refuses",
            &bad_cells,
        ),
        ("undecodable reserved memory", &broken_child),
    ] {
        let want = memmap(&[tree.as_os_str()])?;
        let run = xtask(
            &["run".as_ref(), "--dtb".as_ref(), tree.as_os_str()],
            "poweroff\n",
            Duration::from_secs(90),
        )?;
        let result = match want.stderr.lines().next() {
            Some(line) if line.starts_with("error: ") => one_error_line(&run, line),
            _ => Err(format!("xtask memmap accepted the tree: {:?}", want.stderr)),
        };
        tally.record(
            &format!("xtask run --dtb with {label}: memmap's error line, exit 1, no boot"),
            result,
        );
    }

    let garbage = work.join("run-garbage.initrd");
    std::fs::write(&garbage, [b'x'; 4096])?;
    let empty = work.join("run-empty.initrd");
    std::fs::write(&empty, b"")?;
    let refused = xtask(
        &["run".as_ref(), "--initrd".as_ref(), garbage.as_os_str()],
        "poweroff\n",
        Duration::from_secs(90),
    )?;
    let accepted = xtask(
        &["run".as_ref(), "--initrd".as_ref(), empty.as_os_str()],
        "poweroff\n",
        Duration::from_secs(120),
    )?;
    let prefix = format!(
        "error: {}: corrupt initramfs: bad magic at offset 0x0",
        garbage.display()
    );
    let result = if refused.code == Some(1)
        && refused.stderr.lines().count() == 1
        && refused.stderr.starts_with(&prefix)
        && !refused.stderr.contains("booting")
    {
        if accepted.code == Some(0) && accepted.stdout.contains("initramfs: none") {
            Ok(())
        } else {
            Err(format!(
                "an empty initrd did not boot: status {:?}, {}",
                accepted.code,
                super::harness::tail(&accepted.stdout, 10)
            ))
        }
    } else {
        Err(format!(
            "garbage initrd: status {:?} (killed: {}), stderr {:?}",
            refused.code, refused.timed_out, refused.stderr
        ))
    };
    tally.record(
        "xtask run --initrd: a corrupt archive is refused before booting, an empty one boots",
        result,
    );
    Ok(())
}
