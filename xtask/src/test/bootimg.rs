//! Pixel 6 scenarios: the boot images checked by independent implementations (AOSP's
//! `unpack_bootimg`, Debian's `lz4` and `gzip`), the LZ4 initrd the bootloader passes read by
//! the kernel, `xtask image`/`boot` refusing bad input, `xtask memmap` on the gs101 trees, and
//! a boot with a gs101-like memory layout (two RAM banks around a hole, every kind of
//! reserved-memory node the phone uses) in which nothing reserved is ever handed out.

use super::harness::{
    boot, boot_with_monitor, check, check_commands, command_outputs, compile_dts, memcheck_says,
    qemu_dts, stress_says, Expect, Outcome, Says, Tally,
};
use crate::bootimg::{self, Board, ImageOptions, KernelFormat};
use crate::qemu::RunOptions;
use crate::{bail, deps, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(tally: &mut Tally, image: &Path, work: &Path, base: &RunOptions) -> Result<()> {
    println!("== Pixel 6: boot images, LZ4 initrd, gs101 memory layout");
    let work = work.join("pixel6");
    std::fs::create_dir_all(&work)?;
    let initrd = base
        .initrd
        .clone()
        .ok_or("the scenarios' base options carry the initramfs")?;
    unpacked_by_aosp(tally, image, &initrd, &work)?;
    bad_input(tally, image, &initrd, &work)?;
    memmap_of_gs101_trees(tally)?;
    lz4_initrd(tally, image, &initrd, &work, base)?;
    gs101_layout(tally, image, &initrd, &work, base)?;
    Ok(())
}

fn options(image: &Path, initrd: &Path, out: &Path, format: KernelFormat) -> ImageOptions {
    ImageOptions {
        board: Board::Pixel6,
        format,
        vendor_boot: true,
        dtb: None,
        cmdline: "loglevel=debug".into(),
        release: false,
        kernel: Some(image.to_path_buf()),
        initrd: Some(initrd.to_path_buf()),
        out: Some(out.to_path_buf()),
    }
}

/// `unpack_bootimg --format info` output: the `key: value` lines at the top level, and the
/// vendor ramdisk table's entry fields as `vendor_ramdisk00.key`.
fn info_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut entry: Option<String> = None;
    let mut board_ids = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_suffix(": {") {
            entry = Some(name.to_string());
            continue;
        }
        if trimmed.starts_with("0x")
            && trimmed.ends_with([
                ',', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f',
            ])
        {
            board_ids.extend(
                trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
            continue;
        }
        if trimmed == "}" {
            if let Some(e) = entry.take() {
                fields.insert(format!("{e}.board_id"), board_ids.join(","));
                board_ids.clear();
            }
            continue;
        }
        if let Some((k, v)) = trimmed.split_once(':') {
            let key = match &entry {
                Some(e) => format!("{e}.{k}"),
                None => k.to_string(),
            };
            fields.insert(key, v.trim().trim_end_matches('[').trim().to_string());
        }
    }
    fields
}

/// Compares every field `unpack_bootimg` printed with what was packed; a field it prints
/// that is not expected is a failure too (a new field must be looked at).
fn compare(
    printed: &BTreeMap<String, String>,
    want: &[(&str, String)],
) -> std::result::Result<(), String> {
    let mut problems = Vec::new();
    for (k, v) in want {
        match printed.get(*k) {
            Some(got) if got == v => {}
            Some(got) => problems.push(format!("{k}: printed {got:?}, packed {v:?}")),
            None => problems.push(format!("{k}: not printed")),
        }
    }
    for k in printed.keys() {
        if !want.iter().any(|(w, _)| w == k) {
            problems.push(format!("unexpected field {k:?} = {:?}", printed[k]));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn unpack(tool: &Path, img: &Path, out: &Path) -> Result<String> {
    let _ = std::fs::remove_dir_all(out);
    let o = Command::new("python3")
        .arg(tool)
        .arg("--boot_img")
        .arg(img)
        .arg("--out")
        .arg(out)
        .args(["--format", "info"])
        .output()?;
    if !o.status.success() {
        bail!(
            "unpack_bootimg {} failed: {}",
            img.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn same_file(path: &Path, want: &[u8]) -> std::result::Result<(), String> {
    match std::fs::read(path) {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(format!(
            "{} differs from what was packed ({} bytes, want {})",
            path.display(),
            got.len(),
            want.len()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Runs a decompressor (`lz4 -d -c FILE`, `gzip -d -c < FILE`) and returns its output.
fn decompress(tool: &str, file: &Path) -> std::result::Result<Vec<u8>, String> {
    let out = Command::new(tool)
        .args(["-d", "-c"])
        .stdin(std::fs::File::open(file).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} -d refused {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// The arm64 Image header of `bytes`: `image_size` when the magic is there (booting.rst).
fn arm64_image_size(bytes: &[u8]) -> Option<u64> {
    (bytes.get(0x38..0x3c)? == b"ARM\x64")
        .then(|| u64::from_le_bytes(bytes[0x10..0x18].try_into().unwrap()))
}

/// Both images through AOSP's own parser, every printed field checked; the kernel and
/// ramdisk it extracts through Debian's lz4 (and gzip), back to the Image and the CPIO.
fn unpacked_by_aosp(tally: &mut Tally, image: &Path, initrd: &Path, work: &Path) -> Result<()> {
    let tool = deps::ensure_unpack_bootimg()?;
    deps::ensure_lz4()?;
    let kernel = std::fs::read(image)?;
    let cpio = std::fs::read(initrd)?;
    let want_size = arm64_image_size(&kernel).ok_or("the built kernel has no arm64 header")?;
    let dtb = std::fs::read(bootimg::default_dtb())?;
    for format in [KernelFormat::Lz4, KernelFormat::Gz, KernelFormat::Raw] {
        let label = format!("{format:?}").to_lowercase();
        let out = work.join(format!("images-{label}"));
        let written = bootimg::make(&options(image, initrd, &out, format))?;
        let boot = written.boot.ok_or("no boot.img written")?;
        let packed_kernel = bootimg::pack_kernel(&kernel, format)?;
        let ramdisk = bootimg::lz4_legacy(&cpio);
        let unpacked = out.join("unpacked-boot");
        let info = unpack(&tool, &boot, &unpacked)?;
        let mut result = compare(
            &info_fields(&info),
            &[
                ("boot magic", "ANDROID!".into()),
                ("kernel_size", packed_kernel.len().to_string()),
                ("ramdisk size", ramdisk.len().to_string()),
                ("os version", "12.0.0".into()),
                ("os patch level", "2021-10".into()),
                ("boot image header version", "4".into()),
                ("command line args", "loglevel=debug".into()),
                ("boot.img signature size", "0".into()),
            ],
        )
        .and_then(|()| same_file(&unpacked.join("kernel"), &packed_kernel))
        .and_then(|()| same_file(&unpacked.join("ramdisk"), &ramdisk));
        // The independent decompressors give back the Image, with its header intact.
        if result.is_ok() {
            let back = match format {
                KernelFormat::Lz4 => decompress("lz4", &unpacked.join("kernel")),
                KernelFormat::Gz => decompress("gzip", &unpacked.join("kernel")),
                KernelFormat::Raw => {
                    std::fs::read(unpacked.join("kernel")).map_err(|e| e.to_string())
                }
            };
            result = back.and_then(|b| match arm64_image_size(&b) {
                Some(size) if size == want_size && b == kernel => Ok(()),
                Some(size) => Err(format!(
                    "decompressed kernel: image_size {size:#x} (want {want_size:#x}), {} bytes (want {})",
                    b.len(),
                    kernel.len()
                )),
                None => Err("the decompressed kernel has no arm64 Image header".into()),
            });
        }
        if result.is_ok() {
            result = decompress("lz4", &unpacked.join("ramdisk")).and_then(|b| {
                (b == cpio)
                    .then_some(())
                    .ok_or_else(|| "lz4 -d of the ramdisk is not the CPIO".to_string())
            });
        }
        tally.record(
            &format!("boot.img ({label} kernel) read by unpack_bootimg, kernel and ramdisk by Debian's tools"),
            result,
        );
        if format != KernelFormat::Lz4 {
            continue;
        }
        let vendor = written.vendor_boot.ok_or("no vendor_boot.img written")?;
        let unpacked = out.join("unpacked-vendor");
        let info = unpack(&tool, &vendor, &unpacked)?;
        let empty = crate::initramfs::pack_entries(&[])?;
        let vendor_ramdisk = bootimg::lz4_legacy(&empty);
        let size = vendor_ramdisk.len().to_string();
        let zeros = vec!["0x00000000"; 16].join(",");
        let result = compare(
            &info_fields(&info),
            &[
                ("boot magic", "VNDRBOOT".into()),
                ("vendor boot image header version", "4".into()),
                ("page size", "0x00001000".into()),
                ("kernel load address", "0x10008000".into()),
                ("ramdisk load address", "0x11000000".into()),
                ("vendor ramdisk total size", size.clone()),
                ("vendor command line args", String::new()),
                ("kernel tags load address", "0x10000100".into()),
                ("product name", String::new()),
                ("vendor boot image header size", "2128".into()),
                ("dtb size", dtb.len().to_string()),
                ("dtb address", "0x0000000011f00000".into()),
                ("vendor ramdisk table size", "108".into()),
                ("vendor ramdisk table", String::new()),
                ("vendor_ramdisk00.size", size),
                ("vendor_ramdisk00.offset", "0".into()),
                ("vendor_ramdisk00.type", "0x1".into()),
                ("vendor_ramdisk00.name", String::new()),
                ("vendor_ramdisk00.board_id", zeros),
                ("vendor bootconfig size", "0".into()),
            ],
        )
        .and_then(|()| same_file(&unpacked.join("dtb"), &dtb))
        .and_then(|()| same_file(&unpacked.join("vendor_ramdisk00"), &vendor_ramdisk));
        tally.record(
            "vendor_boot.img read by unpack_bootimg (every field, the dtb, the ramdisk table)",
            result,
        );
    }
    Ok(())
}

/// Runs this xtask binary with `args`; returns (exit code, stderr).
fn xtask(args: &[&std::ffi::OsStr]) -> Result<(Option<i32>, String)> {
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn refused((code, err): (Option<i32>, String), want: &str) -> std::result::Result<(), String> {
    let one_error = err.lines().filter(|l| l.starts_with("error: ")).count() == 1;
    if code == Some(1) && one_error && err.contains(want) {
        Ok(())
    } else {
        Err(format!(
            "status {code:?}, stderr {err:?} (want an error with {want:?})"
        ))
    }
}

/// `--dtb` that is not a tree, a kernel too big for the 64 MiB boot partition, a file that is
/// not a kernel, and `boot` with no phone attached: one clear `error:` line, exit 1.
fn bad_input(tally: &mut Tally, image: &Path, initrd: &Path, work: &Path) -> Result<()> {
    let out = work.join("bad");
    std::fs::create_dir_all(&out)?;
    let garbage = out.join("not-a-tree.dtb");
    std::fs::write(
        &garbage,
        b"\xd0\x0d\xfe\xed this is not a flattened device tree",
    )?;
    let truncated = out.join("truncated.dtb");
    let dtb = std::fs::read(bootimg::default_dtb())?;
    std::fs::write(&truncated, &dtb[..dtb.len() / 2])?;
    let mut big = std::fs::read(image)?;
    big.resize(65 << 20, 0);
    let big_path = out.join("huge-Image");
    std::fs::write(&big_path, &big)?;
    let image_args = |extra: &[&std::ffi::OsStr]| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![
            "image".into(),
            "--board".into(),
            "pixel6".into(),
            "--initrd".into(),
            initrd.into(),
            "--out".into(),
            out.clone().into(),
        ];
        v.extend(extra.iter().map(|s| s.to_os_string()));
        v
    };
    let run = |extra: &[&std::ffi::OsStr]| {
        let args = image_args(extra);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        xtask(&refs)
    };
    let kernel: &std::ffi::OsStr = image.as_os_str();
    let cases: [(&str, Vec<&std::ffi::OsStr>, &str); 5] = [
        (
            "--dtb that is not a device tree",
            vec![
                "--kernel".as_ref(),
                kernel,
                "--vendor-boot".as_ref(),
                "--dtb".as_ref(),
                garbage.as_os_str(),
            ],
            "not-a-tree.dtb is not a device tree",
        ),
        (
            "--dtb cut in half",
            vec![
                "--kernel".as_ref(),
                kernel,
                "--vendor-boot".as_ref(),
                "--dtb".as_ref(),
                truncated.as_os_str(),
            ],
            "truncated.dtb is not a device tree",
        ),
        (
            "a kernel too big for the 64 MiB boot partition",
            vec![
                "--kernel".as_ref(),
                big_path.as_os_str(),
                "--kernel-format".as_ref(),
                "raw".as_ref(),
            ],
            "more than the 64 MiB boot partition",
        ),
        (
            "a kernel file that is not an arm64 Image",
            vec!["--kernel".as_ref(), garbage.as_os_str()],
            "not an arm64 Image",
        ),
        (
            "an unknown board",
            vec!["--board".as_ref(), "pixel7".as_ref()],
            "unknown board `pixel7`",
        ),
    ];
    for (label, extra, want) in cases {
        let _ = std::fs::remove_file(out.join("boot.img"));
        let mut result = refused(run(&extra)?, want);
        if result.is_ok() && out.join("boot.img").exists() {
            result = Err("boot.img was written anyway".into());
        }
        tally.record(&format!("xtask image refuses {label}"), result);
    }
    // No phone on this machine: `boot` must say so and stop, not wait for one.
    deps::ensure_fastboot()?;
    let started = Instant::now();
    let result = refused(
        xtask(&[
            "boot".as_ref(),
            "--board".as_ref(),
            "pixel6".as_ref(),
            "--kernel".as_ref(),
            kernel,
            "--initrd".as_ref(),
            initrd.as_os_str(),
        ])?,
        "no device in fastboot mode",
    );
    let result = result.and_then(|()| {
        // Generous: the point is that it returns at all, not how fast.
        (started.elapsed() < Duration::from_secs(60))
            .then_some(())
            .ok_or_else(|| "took over a minute".to_string())
    });
    tally.record(
        "xtask boot --board pixel6 with no phone says so and exits 1",
        result,
    );
    Ok(())
}

/// `xtask memmap` on every gs101 tree in ../shared/dtbs: the mainline tree has no /memory
/// (the bootloader adds it) and is a clean error; the copies with /memory give the 8 GiB map.
fn memmap_of_gs101_trees(tally: &mut Tally) -> Result<()> {
    // The project's copies of ../shared/dtbs (identical), present in every clone.
    let dir = crate::workspace_root().join("levitate-mm/tests/dtbs");
    for (name, want, ok) in [
        (
            "gs101-oriole.dtb",
            "the device tree describes no RAM",
            false,
        ),
        (
            "gs101-oriole.SYNTHETIC-memory.dtb",
            "total: RAM 8 GiB, reserved 142.5 MiB, usable 7.8 GiB, no-map 110.9 MiB",
            true,
        ),
        (
            "gs101-oriole.SYNTHETIC-memory-fb.dtb",
            "total: RAM 8 GiB, reserved 142.5 MiB, usable 7.8 GiB, no-map 110.9 MiB",
            true,
        ),
    ] {
        let path = dir.join(name);
        if !path.exists() {
            tally.record(
                &format!("xtask memmap {name}"),
                Err(format!("{} is missing", path.display())),
            );
            continue;
        }
        let out = Command::new(std::env::current_exe()?)
            .arg("memmap")
            .arg(&path)
            .output()?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let result = if ok {
            let banks = stdout.contains("0x000080000000-0x0000ffffffff      2 GiB")
                && stdout.contains("0x000880000000-0x0009ffffffff      6 GiB");
            (out.status.success() && stdout.lines().any(|l| l == want) && banks)
                .then_some(())
                .ok_or_else(|| format!("status {:?}: {stdout}{stderr}", out.status.code()))
        } else {
            (out.status.code() == Some(1) && stderr.contains(want))
                .then_some(())
                .ok_or_else(|| format!("status {:?}: {stderr}", out.status.code()))
        };
        tally.record(&format!("xtask memmap {name} (gs101)"), result);
    }
    Ok(())
}

/// The kernel reads the initrd as the Pixel bootloader passes it: LZ4 legacy, and the vendor
/// ramdisk and boot ramdisk concatenated; a corrupt LZ4 initrd is refused by name.
fn lz4_initrd(
    tally: &mut Tally,
    image: &Path,
    initrd: &Path,
    work: &Path,
    base: &RunOptions,
) -> Result<()> {
    let cpio = std::fs::read(initrd)?;
    let lz4 = bootimg::lz4_legacy(&cpio);
    let mut concatenated = bootimg::lz4_legacy(&crate::initramfs::pack_entries(&[(
        "vendor.txt",
        levitate_mm::cpio::S_IFREG | 0o644,
        b"from the vendor ramdisk\n",
    )])?);
    concatenated.extend_from_slice(&lz4);
    let mut corrupt = lz4.clone();
    let last = corrupt.len() - 1;
    corrupt.truncate(last - 3);
    for (label, bytes, cmds, says) in [
        (
            "an LZ4 legacy initrd is decompressed and read",
            lz4.clone(),
            "cat hello.txt\npoweroff\n",
            vec![Says::new("cat hello.txt", &["Hello"])],
        ),
        (
            "vendor and boot LZ4 ramdisks concatenated are both read",
            concatenated,
            "cat hello.txt\ncat vendor.txt\npoweroff\n",
            vec![
                Says::new("cat hello.txt", &["Hello"]),
                Says::new("cat vendor.txt", &["from the vendor ramdisk"]),
            ],
        ),
    ] {
        let path = work.join("initrd.cpio.lz4");
        std::fs::write(&path, &bytes)?;
        let opts = RunOptions {
            initrd: Some(path),
            ..base.clone()
        };
        let out = boot(image, &opts, cmds)?;
        tally.record(
            label,
            check_commands(
                &out,
                &Expect {
                    code: 0,
                    contains: &["initramfs: LZ4 legacy"],
                    absent: &["PANIC", "corrupt initramfs"],
                },
                &says,
            ),
        );
    }
    let path = work.join("corrupt.cpio.lz4");
    std::fs::write(&path, &corrupt)?;
    let opts = RunOptions {
        initrd: Some(path),
        ..base.clone()
    };
    let out = boot(image, &opts, "ls\npoweroff\n")?;
    tally.record(
        "a truncated LZ4 initrd is refused by name, the shell still runs",
        check(
            &out,
            &Expect {
                code: 0,
                contains: &[
                    "corrupt initramfs: LZ4 stream truncated",
                    "the initrd is not used",
                ],
                absent: &["PANIC"],
            },
        ),
    );
    Ok(())
}

/// The stub bootloader (as hardware.rs has it): an arm64 Image QEMU enters with x0 = its
/// own tree, which loads x0 = `dtb` and jumps to `target`.
fn stub_with_dtb(target: u64, dtb: u64) -> Vec<u8> {
    let mut img = vec![0u8; 0x60];
    let mut put32 = |at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(0x00, 0x1400_0010); // b +0x40
    put32(0x40, 0x5800_0080); // ldr x0, #0x10   (literal at 0x50)
    put32(0x44, 0x5800_00b0); // ldr x16, #0x14  (literal at 0x58)
    put32(0x48, 0xd61f_0200); // br x16
    img[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    img[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes()); // flags: LE, 4K, anywhere
    img[0x38..0x3c].copy_from_slice(b"ARM\x64");
    img[0x50..0x58].copy_from_slice(&dtb.to_le_bytes());
    img[0x58..0x60].copy_from_slice(&target.to_le_bytes());
    img
}

fn loader(file: &Path, addr: u64) -> Vec<std::ffi::OsString> {
    vec![
        "-device".into(),
        format!("loader,file={},addr={addr:#x},force-raw=on", file.display()).into(),
    ]
}

/// The gs101-like layout inside QEMU's 1 GiB at 0x4000_0000.
const BANK0: (u64, u64) = (0x4000_0000, 0x1000_0000); // 256 MiB
const BANK1: (u64, u64) = (0x6000_0000, 0x2000_0000); // 512 MiB, after a 256 MiB hole
const KERNEL_AT: u64 = 0x7000_0000;
const TREE_AT: u64 = 0x4400_0000;
const INITRD_AT: u64 = 0x4a00_0000;
/// Static reservations: (node name, base, size, extra properties, stays reserved).
const STATIC: [(&str, u64, u32, &str, bool); 4] = [
    ("abox", 0x4200_0000, 0x40_0000, "no-map;", true),
    (
        "ramoops",
        0x4300_0000,
        0x20_0000,
        "compatible = \"ramoops\";",
        true,
    ),
    (
        "cma",
        0x6600_0000,
        0x80_0000,
        "compatible = \"shared-dma-pool\"; reusable;",
        true,
    ),
    (
        "unused",
        0x6700_0000,
        0x10_0000,
        "status = \"disabled\";",
        false,
    ),
];
/// The dynamic region's alloc-range.
const ALLOC_RANGE: (u64, u32) = (0x6800_0000, 0x100_0000);
/// Pieces of the hole (QEMU RAM the tree does not call RAM) that are filled and checked.
const HOLE: [(u64, u32); 2] = [(0x5000_0000, 0x10_0000), (0x5ff0_0000, 0x10_0000)];

/// The pattern a filled range holds: a per-range byte mixed with the offset, so a shifted or
/// partial copy does not look intact.
fn pattern(base: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| ((base >> 20) as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7) ^ 0x5a)
        .collect()
}

/// QEMU's own tree with the RAM, reservations and chosen node replaced.
fn gs101_like_tree(work: &Path, initrd_len: u64) -> Result<PathBuf> {
    let mut text = qemu_dts(work)?;
    let mut reserved = String::new();
    for (name, base, size, props, _) in STATIC {
        reserved.push_str(&format!(
            "        {name}@{base:x} {{ reg = <0x0 {base:#x} {size:#x}>; {props} }};\n"
        ));
    }
    let (range, range_size) = ALLOC_RANGE;
    reserved.push_str(&format!(
        "        dyn_pool {{ compatible = \"shared-dma-pool\"; no-map; size = <0x200000>; \
         alignment = <0x200000>; alloc-ranges = <0x0 {range:#x} {range_size:#x}>; }};\n"
    ));
    // A carve-out in the hole, as phones describe firmware memory the kernel never owns.
    let (hole, hole_size) = HOLE[0];
    reserved.push_str(&format!(
        "        tz@{hole:x} {{ reg = <0x0 {hole:#x} {hole_size:#x}>; no-map; }};\n"
    ));
    let initrd_end = INITRD_AT + initrd_len;
    text.push_str(&format!(
        r#"
/ {{
    /delete-node/ memory@40000000;
    memory@40000000 {{
        device_type = "memory";
        reg = <0x0 {:#x} 0x0 {:#x}>, <0x0 {:#x} 0x0 {:#x}>;
    }};
    reserved-memory {{
        #address-cells = <2>;
        #size-cells = <1>;
        ranges;
{reserved}    }};
    chosen {{
        bootargs = "semihosting poison";
        linux,initrd-start = <0x0 {INITRD_AT:#x}>;
        linux,initrd-end = <0x0 {initrd_end:#x}>;
    }};
}};
"#,
        BANK0.0, BANK0.1, BANK1.0, BANK1.1
    ));
    compile_dts(work, "gs101-like", &text)
}

/// Boots with a QEMU monitor ([`boot_with_monitor`]): once `commands` have all run, saves
/// each of `dumps` (physical ranges) with `pmemsave`. Returns the outcome and the saved bytes
/// (none when the shell never finished).
fn boot_then_dump(
    stub: &Path,
    opts: &RunOptions,
    commands: &[&str],
    dumps: &[(u64, u64)],
    work: &Path,
) -> Result<(Outcome, Vec<Vec<u8>>)> {
    let (out, saved) = boot_with_monitor(stub, opts, commands, |monitor, _| {
        dumps
            .iter()
            .enumerate()
            .map(|(i, &(base, size))| {
                monitor.pmemsave(base, size, &work.join(format!("dump-{i}.bin")))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok((out, saved.unwrap_or_else(|| vec![Vec::new(); dumps.len()])))
}

/// The dynamic region's base as the shell's `memmap` prints it (the line naming `dyn_pool`).
fn dynamic_base(memmap: &str) -> Option<u64> {
    let line = memmap.lines().find(|l| l.contains("dyn_pool"))?;
    let start = line.trim().split('-').next()?;
    u64::from_str_radix(start.trim_start_matches("0x"), 16).ok()
}

/// A gs101-like layout as far as QEMU virt allows: two RAM banks with a 256 MiB hole, the
/// phone's kinds of reserved-memory node (no-map, mapped, reusable, disabled, dynamic with
/// alloc-ranges, one in the hole) with `#size-cells = <1>`, the tree and an LZ4 initrd placed
/// by a stub bootloader. Every reserved range and the hole is filled with a pattern before
/// boot; `poison` makes the kernel overwrite every free frame at boot and every freed frame
/// later, and `stress frames` churns the allocator. Afterwards the patterns are read back
/// through the QEMU monitor: each must be intact, and the disabled node's range (handed to the
/// allocator) must have been poisoned, which shows the check can fail.
fn gs101_layout(
    tally: &mut Tally,
    image: &Path,
    initrd: &Path,
    work: &Path,
    base: &RunOptions,
) -> Result<()> {
    let lz4 = bootimg::lz4_legacy(&std::fs::read(initrd)?);
    let initrd_path = work.join("gs101-initrd.lz4");
    std::fs::write(&initrd_path, &lz4)?;
    let tree = gs101_like_tree(work, lz4.len() as u64)?;
    let stub = work.join("gs101-stub.img");
    std::fs::write(&stub, stub_with_dtb(KERNEL_AT, TREE_AT))?;
    let mut filled: Vec<(String, u64, u64, bool)> = STATIC
        .iter()
        .map(|&(name, base, size, _, reserved)| (name.to_string(), base, u64::from(size), reserved))
        .collect();
    filled.push((
        "alloc-range".into(),
        ALLOC_RANGE.0,
        u64::from(ALLOC_RANGE.1),
        false,
    ));
    for (i, (base, size)) in HOLE.iter().enumerate() {
        filled.push((format!("hole piece {i}"), *base, u64::from(*size), true));
    }
    let mut opts = RunOptions {
        initrd: None,
        ..base.clone()
    };
    opts.extra = loader(image, KERNEL_AT);
    opts.extra.extend(loader(&tree, TREE_AT));
    opts.extra.extend(loader(&initrd_path, INITRD_AT));
    for (name, base, size, _) in &filled {
        let file = work.join(format!("pattern-{base:x}.bin"));
        std::fs::write(&file, pattern(*base, *size as usize))?;
        opts.extra.extend(loader(&file, *base));
        let _ = name;
    }
    let commands = ["memmap", "stress frames 3000", "memcheck", "cat hello.txt"];
    let dumps: Vec<(u64, u64)> = filled.iter().map(|(_, b, s, _)| (*b, *s)).collect();
    let (out, saved) = boot_then_dump(&stub, &opts, &commands, &dumps, work)?;
    let says = [
        Says {
            cmd: "memmap",
            contains: &[
                "0x000040000000-0x00004fffffff    256 MiB",
                "0x000060000000-0x00007fffffff    512 MiB",
                "abox@42000000",
                "ramoops@43000000",
                "cma@66000000",
                "dyn_pool",
                "initrd",
            ],
            absent: &["unused@67000000"],
            verify: None,
        },
        stress_says("stress frames 3000"),
        memcheck_says(),
        Says::new("cat hello.txt", &["Hello"]),
    ];
    let commands_ok = check_commands(
        &out,
        &Expect {
            code: 0,
            contains: &["initramfs: LZ4 legacy"],
            absent: &["PANIC"],
        },
        &says,
    );
    // The memory is checked whatever the shell said: it is the independent witness.
    let mut problems = Vec::new();
    if out.timed_out || saved.iter().all(Vec::is_empty) {
        problems.push("no memory was saved (the shell never finished its commands)".to_string());
    } else {
        let memmap = command_outputs(&out.output, "memmap")
            .first()
            .copied()
            .unwrap_or("");
        let last_start = ALLOC_RANGE.0 + u64::from(ALLOC_RANGE.1) - 0x20_0000;
        let dynamic = dynamic_base(memmap).filter(|b| (ALLOC_RANGE.0..=last_start).contains(b));
        if dynamic.is_none() {
            problems.push(format!(
                "dyn_pool at {:x?}, not inside its alloc-range",
                dynamic_base(memmap)
            ));
        }
        for ((name, base, size, reserved), bytes) in filled.iter().zip(&saved) {
            let want = pattern(*base, *size as usize);
            if bytes.len() != want.len() {
                problems.push(format!("{name}: pmemsave gave {} bytes", bytes.len()));
                continue;
            }
            if name == "alloc-range" {
                // Only the dynamic region's 2 MiB inside the range is reserved.
                if let Some(d) = dynamic {
                    let at = (d - base) as usize;
                    if bytes[at..at + 0x20_0000] != want[at..at + 0x20_0000] {
                        problems.push(format!("dyn_pool at {d:#x} was written"));
                    }
                    if bytes == &want {
                        problems.push("the rest of the alloc-range was never poisoned".into());
                    }
                }
                continue;
            }
            match (reserved, bytes == &want) {
                (true, false) => {
                    let first = bytes
                        .iter()
                        .zip(&want)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    problems.push(format!(
                        "{name} ({base:#x}, reserved) was written: first at {:#x}",
                        base + first as u64
                    ));
                }
                (false, true) => problems.push(format!(
                    "{name} ({base:#x}, released by status = \"disabled\") was never poisoned: \
                     the check could not have seen a reserved frame handed out"
                )),
                _ => {}
            }
        }
    }
    let result = match (commands_ok, problems.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => Err(problems.join("; ")),
        (Err(e), _) => Err(format!(
            "{}{e}",
            problems
                .iter()
                .map(|p| format!("{p}; "))
                .collect::<String>()
        )),
    };
    tally.record(
        "gs101-like layout: two banks, every reserved-memory kind, nothing reserved handed out",
        result,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_bootimg_info_is_read_field_by_field() {
        let text = "boot magic: VNDRBOOT\nvendor ramdisk table: [\n    vendor_ramdisk00: {\n        size: 53\n        name: \n        board_id: [\n            0x00000000, 0x00000001,\n        ]\n    }\n]\nvendor bootconfig size: 0\n";
        let f = info_fields(text);
        assert_eq!(f["boot magic"], "VNDRBOOT");
        assert_eq!(f["vendor_ramdisk00.size"], "53");
        assert_eq!(f["vendor_ramdisk00.name"], "");
        assert_eq!(f["vendor_ramdisk00.board_id"], "0x00000000,0x00000001");
        assert_eq!(f["vendor bootconfig size"], "0");
        assert!(compare(&f, &[("boot magic", "VNDRBOOT".into())]).is_err());
    }

    #[test]
    fn the_dynamic_region_is_read_off_memmap() {
        let memmap =
            "  0x000068000000-0x0000681fffff      2 MiB  reserved-memory dyn_pool (no-map)\n";
        assert_eq!(dynamic_base(memmap), Some(0x6800_0000));
        assert_eq!(dynamic_base("nothing"), None);
    }
}
