//! `cargo xtask gdb`: attach gdb-multiarch, with the kernel's symbols, to a QEMU started by
//! `cargo xtask run --gdb`.

use crate::kernel::{self, Variant};
use crate::{bail, deps, Result};
use std::process::{Command, ExitCode};

/// Runs gdb against localhost:1234.
pub fn run(parser: &mut lexopt::Parser) -> Result<ExitCode> {
    let mut release = false;
    while let Some(arg) = parser.next()? {
        match arg {
            lexopt::Arg::Long("release") => release = true,
            other => bail!(
                "{} (usage: cargo xtask gdb [--release])",
                other.unexpected()
            ),
        }
    }
    deps::ensure_gdb()?;
    let elf = kernel::paths(Variant {
        release,
        ktest: false,
    })
    .elf;
    if !elf.is_file() {
        bail!(
            "{} does not exist; start the kernel with `cargo xtask run --gdb` first",
            elf.display()
        );
    }
    let status = Command::new("gdb-multiarch")
        .arg("-q")
        .arg(&elf)
        .args([
            "-ex",
            "set architecture aarch64",
            "-ex",
            "target remote localhost:1234",
        ])
        .status()
        .map_err(|e| format!("cannot start gdb-multiarch: {e}"))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
