//! Installs what a fresh machine lacks: the Rust target via rustup, QEMU, gdb, fastboot and lz4
//! via apt when running as root, and AOSP's `unpack_bootimg` fetched into target/ without
//! touching the machine's apt configuration. Otherwise stops with the exact command to run.

use crate::{bail, Result};
use std::process::{Command, Stdio};

/// The kernel's Rust target.
pub const TARGET: &str = "aarch64-unknown-none";

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure the aarch64 target's standard library is installed.
pub fn ensure_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(crate::workspace_root())
        .output();
    let installed = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == TARGET),
        // No rustup: trust that the toolchain has the target; cargo will say if not.
        _ => return Ok(()),
    };
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing the {TARGET} target (rustup target add {TARGET})");
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .current_dir(crate::workspace_root())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("could not install the {TARGET} target; run: rustup target add {TARGET}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure `program` runs; if not, installs Debian `package` as root or explains how.
fn ensure_program(program: &str, probe: &[&str], package: &str) -> Result<()> {
    if succeeds(Command::new(program).args(probe)) {
        return Ok(());
    }
    let cmd = format!("apt-get install -y {package}");
    if !is_root() {
        bail!("{program} is not installed; run: sudo {cmd}");
    }
    eprintln!("xtask: {program} is missing; running: {cmd}");
    let update_ok = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .is_ok_and(|s| s.success());
    let install_ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !(update_ok && install_ok && succeeds(Command::new(program).args(probe))) {
        bail!("installing {package} failed; run: {cmd}");
    }
    Ok(())
}

/// QEMU for aarch64.
pub fn ensure_qemu() -> Result<()> {
    ensure_program("qemu-system-aarch64", &["--version"], "qemu-system-arm")
}

/// The device-tree compiler, for tests that build trees.
pub fn ensure_dtc() -> Result<()> {
    ensure_program("dtc", &["--version"], "device-tree-compiler")
}

/// gdb that understands aarch64.
pub fn ensure_gdb() -> Result<()> {
    ensure_program("gdb-multiarch", &["--version"], "gdb-multiarch")
}

/// Android's fastboot (Debian package `fastboot`).
pub fn ensure_fastboot() -> Result<()> {
    ensure_program("fastboot", &["--version"], "fastboot")
}

/// The reference LZ4 tool, for tests that decompress what xtask compressed.
pub fn ensure_lz4() -> Result<()> {
    ensure_program("lz4", &["--version"], "lz4")
}

/// The `mkbootimg` package that reads boot image header v4: bookworm's 29 stops at v3, the
/// 34 of bookworm-backports reads v4. It is `Architecture: all` (python scripts).
const MKBOOTIMG_SUITE: &str = "bookworm-backports";
const MKBOOTIMG_MIN_VERSION: &str = "1:34";

/// The Debian archive this machine's apt already uses: the first `URIs:` (deb822) or `deb`
/// line whose suite is a plain `bookworm*` suite of the main archive (not -security).
fn debian_mirror() -> Option<String> {
    let mut found = None;
    let sources = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ];
    for file in sources {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        // deb822 stanzas: URIs and Suites lines.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
                if suites.split_whitespace().any(|s| s == "bookworm") {
                    found = found.or(uris.split_whitespace().next().map(String::from));
                }
            }
        }
        // One-line format: deb [opts] URI SUITE COMPONENTS.
        for line in text.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.first() == Some(&"deb") && words.get(2) == Some(&"bookworm") {
                found = found.or(words.get(1).map(|s| s.to_string()));
            }
        }
    }
    found
}

/// AOSP's `unpack_bootimg` from Debian's `mkbootimg` 34, unpacked under
/// `target/tools/mkbootimg` (downloaded once, with a private apt sources list, lists and
/// cache: the machine's own apt state is not changed). Needs python3 to run.
pub fn ensure_unpack_bootimg() -> Result<std::path::PathBuf> {
    let root = crate::target_dir().join("tools").join("mkbootimg");
    let tool = root.join("root/usr/bin/unpack_bootimg");
    if tool.exists() {
        return Ok(tool);
    }
    ensure_program("python3", &["--version"], "python3")?;
    let Some(mirror) = debian_mirror() else {
        bail!(
            "cannot find this machine's Debian archive in /etc/apt; install mkbootimg \
             ({MKBOOTIMG_MIN_VERSION} or later, from {MKBOOTIMG_SUITE}) and put unpack_bootimg at {}",
            tool.display()
        );
    };
    eprintln!(
        "xtask: fetching mkbootimg from {MKBOOTIMG_SUITE} into {}",
        root.display()
    );
    let apt = root.join("apt");
    for dir in ["lists/partial", "cache/archives/partial", "download"] {
        std::fs::create_dir_all(apt.join(dir))?;
    }
    let list = apt.join("sources.list");
    std::fs::write(
        &list,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {MKBOOTIMG_SUITE} main\n"
        ),
    )?;
    let private = |cmd: &mut Command| {
        cmd.arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", list.display()))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            .args(["-o", "Debug::NoLocking=1", "-qq"]);
    };
    let mut update = Command::new("apt-get");
    private(&mut update);
    update.arg("update");
    if !update.status().is_ok_and(|s| s.success()) {
        bail!("apt-get update with the private {MKBOOTIMG_SUITE} list failed");
    }
    let download_dir = apt.join("download");
    let mut download = Command::new("apt-get");
    private(&mut download);
    download
        .args(["download", &format!("mkbootimg/{MKBOOTIMG_SUITE}")])
        .current_dir(&download_dir);
    if !download.status().is_ok_and(|s| s.success()) {
        bail!("apt-get download mkbootimg/{MKBOOTIMG_SUITE} failed");
    }
    let deb = std::fs::read_dir(&download_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let extract = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(root.join("root"))
        .status();
    if !extract.is_ok_and(|s| s.success()) || !tool.exists() {
        bail!("dpkg -x {} gave no usr/bin/unpack_bootimg", deb.display());
    }
    Ok(tool)
}
