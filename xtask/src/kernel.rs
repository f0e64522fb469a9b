//! Building the kernel: cargo for aarch64-unknown-none, then the flat arm64 Image with the
//! symbol table patched in (`image`).

use crate::{bail, deps, image, workspace_root, Result};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Which kernel to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Release profile.
    pub release: bool,
    /// The in-kernel test build.
    pub ktest: bool,
}

/// A built kernel.
pub struct Built {
    /// The ELF, with symbols, for gdb.
    pub elf: PathBuf,
    /// The bootable arm64 Image.
    pub image: PathBuf,
}

fn out_dir(release: bool) -> PathBuf {
    crate::target_dir()
        .join(deps::TARGET)
        .join(if release { "release" } else { "debug" })
}

/// Where a variant's files go (they exist once `build` ran).
pub fn paths(v: Variant) -> Built {
    let dir = out_dir(v.release);
    let stem = if v.ktest {
        "levitate-ktest"
    } else {
        "levitate"
    };
    Built {
        elf: dir.join(format!("{stem}.elf")),
        image: dir.join(format!("{stem}.img")),
    }
}

/// Builds the kernel ELF and Image.
pub fn build(v: Variant) -> Result<Built> {
    deps::ensure_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--package",
        "levitate-kernel",
        "--bin",
        "levitate",
        "--target",
        deps::TARGET,
    ]);
    if v.release {
        cmd.arg("--release");
    }
    if v.ktest {
        cmd.args(["--features", "ktest"]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        bail!("kernel build failed");
    }
    let linked = out_dir(v.release).join("levitate");
    let out = paths(v);
    std::fs::copy(&linked, &out.elf).map_err(|e| format!("copying {}: {e}", linked.display()))?;
    let elf = std::fs::read(&out.elf)?;
    let img = image::make_image(&elf)?;
    std::fs::write(&out.image, &img.bytes)?;
    eprintln!(
        "xtask: {} ({} KiB, {} symbols)",
        out.image.display(),
        img.bytes.len() / 1024,
        img.symbols
    );
    Ok(out)
}

/// `cargo xtask build [--release] [--ktest]`.
pub fn build_cli(parser: &mut lexopt::Parser) -> Result<ExitCode> {
    let mut v = Variant {
        release: false,
        ktest: false,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            lexopt::Arg::Long("release") => v.release = true,
            lexopt::Arg::Long("ktest") => v.ktest = true,
            other => bail!(
                "{} (usage: cargo xtask build [--release] [--ktest])",
                other.unexpected()
            ),
        }
    }
    build(v)?;
    Ok(ExitCode::SUCCESS)
}
