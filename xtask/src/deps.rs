//! Installs what a fresh machine lacks: the Rust target via rustup, QEMU and gdb via apt when
//! running as root. Otherwise stops with the exact command to run.

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
