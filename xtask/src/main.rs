//! `cargo xtask`: Levitate's developer commands. One module per subcommand.
//!
//! ```text
//! cargo xtask run   [--mem SIZE] [--smp N] [--cpu NAME] [--el2] [--gic 2|3] [--dtb FILE]
//!                   [--initrd FILE] [--bootargs "..."] [--release] [--gdb]
//!                   [--display | --screenshot FILE.png] [-- QEMU_ARGS]
//! cargo xtask test  [--quick]
//! cargo xtask build [--board qemu|pixel6] [--release] [--ktest]
//! cargo xtask image [--board qemu|pixel6] [--kernel-format lz4|gz|raw] [--vendor-boot]
//!                   [--dtb FILE] [--cmdline ARGS] [--release] [--kernel IMAGE] [--initrd CPIO]
//!                   [--out DIR]
//! cargo xtask boot  [--board qemu|pixel6] [--vendor-boot] [image options]
//! cargo xtask gdb   [--release]
//! cargo xtask bench [--quick | --smoke] [--json FILE] [--svg FILE] | --boot [--quick] [--json FILE]
//! cargo xtask memmap DTB [--json] [--svg FILE] [--kernel BASE:SIZE] [--dtb-base BASE]
//!                   [--pa-bits N]
//! ```

mod bench;
mod bench_boot;
mod bootimg;
mod deps;
mod display;
mod gdb;
mod image;
mod initramfs;
mod kernel;
#[cfg(test)]
mod layering;
mod memmap;
mod monitor;
mod picture;
mod qemu;
mod session;
mod test;

use lexopt::ValueExt;
use std::process::ExitCode;

/// An error for the user: printed as one `error: ...` line.
#[derive(Debug)]
pub struct Error(pub String);

impl<T: std::fmt::Display> From<T> for Error {
    fn from(e: T) -> Self {
        Error(e.to_string())
    }
}

/// Result for xtask operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Returns early with a formatted error.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::Error(format!($($arg)*))) };
}

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  run     build the kernel and boot it in QEMU (console on this terminal)
  test    host unit tests, then in-kernel tests and shell checks in a QEMU matrix
  build   build the kernel Image without running it
  image   build the images a board boots (pixel6: boot.img, vendor_boot.img)
  boot    boot on a board (qemu: as run; pixel6: fastboot boot, phone over USB)
  gdb     attach gdb-multiarch to a kernel started with `cargo xtask run --gdb`
  memmap  print the physical memory map a device tree describes (the kernel's own code)
  bench   host benchmark of the frame allocator and heaps against peer crates (release)
  help    this text

run options:
  --mem SIZE        guest RAM, e.g. 128M, 1G, 8G (default 1G)
  --smp N           number of CPUs (default 1)
  --cpu NAME        QEMU CPU model (default cortex-a76)
  --el2             enter the kernel at EL2 (virtualization=on)
  --gic 2|3         GIC version (QEMU's default when absent)
  --dtb FILE        boot with this device tree instead of QEMU's (checked first with the
                    kernel's own code: a tree it would refuse is an error, QEMU never starts)
  --initrd FILE     pass FILE as the initrd (a corrupt CPIO archive is refused the same way)
  --bootargs ARGS   kernel command line (e.g. \"loglevel=debug\")
  --release         build with the release profile
  --gdb             start halted, waiting for `cargo xtask gdb` on :1234
  --display         show the screen console (QEMU ramfb) in a window, or over VNC on
                    127.0.0.1 when there is no $DISPLAY (the address is printed)
  --screenshot FILE.png
                    boot with ramfb and no window, type the piped commands, and once the
                    shell has answered the last one (before a trailing `poweroff`) save the
                    screen as a PNG, e.g. printf 'meminfo\npoweroff\n' | cargo xtask run
                    --screenshot shot.png
  -- ARGS           pass the remaining arguments to QEMU

build options:   --release, --ktest (the in-kernel test build), --board qemu|pixel6 (the same
                 kernel binary serves both boards; the device tree tells it which it is on)
image options:
  --board qemu|pixel6   qemu (default): target/levitate/qemu/{Image,initramfs.cpio};
                        pixel6: target/levitate/pixel6/boot.img (Android boot image v4)
  --kernel-format F     lz4 (default, LZ4 legacy frame as the stock Image.lz4), gz or raw
  --vendor-boot         also vendor_boot.img (v4) holding the device tree
  --dtb FILE            the tree for vendor_boot.img (default levitate-mm/tests/dtbs/gs101-oriole.dtb)
  --cmdline ARGS        the boot.img kernel command line
  --kernel IMAGE        pack this arm64 Image instead of building one
  --initrd CPIO         pack this CPIO archive instead of initramfs/
  --out DIR             write there instead of target/levitate/BOARD
boot options:    as image; pixel6 runs `fastboot boot boot.img` (after `fastboot flash
                 vendor_boot vendor_boot.img` with --vendor-boot), exits 1 if no phone is in
                 fastboot mode; set ANDROID_SERIAL when several are
memmap:          cargo xtask memmap DTB [--json] [--svg FILE] [--kernel BASE:SIZE] [--dtb-base BASE]
                 [--pa-bits N]  (the CPU's physical address bits: 32, 36, 40, 42, 44, 48, 52
                 or 56; default 48; RAM beyond, or beyond the 128 TiB linear map, is ignored)
test options:    --quick (skip the QEMU matrix except the default configuration)
bench options:   --quick (a shorter run), --smoke (a second, to check it works), --json FILE,
                 --svg FILE; --boot [--quick] [--json FILE] (boot cost in QEMU instead)
";

fn main() -> ExitCode {
    match run_cli() {
        Ok(code) => code,
        Err(Error(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run_cli() -> Result<ExitCode> {
    let mut parser = lexopt::Parser::from_env();
    let command = match parser.next()? {
        Some(lexopt::Arg::Value(v)) => v.string()?,
        Some(lexopt::Arg::Long("help") | lexopt::Arg::Short('h')) | None => {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(other) => bail!("{} (try `cargo xtask help`)", other.unexpected()),
    };
    match command.as_str() {
        "run" => {
            let opts = qemu::RunOptions::parse(parser.raw_args()?.collect())?;
            qemu::run(&opts)
        }
        "test" => test::run(&mut parser),
        "build" => {
            // --board changes nothing in the kernel (one binary for every board); it is
            // checked here so that a misspelt board is an error.
            let mut rest = Vec::new();
            let mut args = parser.raw_args()?.peekable();
            while let Some(arg) = args.next() {
                if arg == "--board" {
                    let board = args
                        .next()
                        .ok_or("--board needs a value (qemu or pixel6)")?;
                    bootimg::Board::parse(&board.string()?)?;
                } else if let Some(b) = arg.to_str().and_then(|a| a.strip_prefix("--board=")) {
                    bootimg::Board::parse(b)?;
                } else {
                    rest.push(arg);
                }
            }
            kernel::build_cli(&mut lexopt::Parser::from_args(rest))
        }
        "image" => bootimg::image_cli(&mut parser),
        "boot" => bootimg::boot::run(&mut parser),
        "gdb" => gdb::run(&mut parser),
        "memmap" => memmap::run(&mut parser),
        "bench" => bench::run(&mut parser),
        "help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command `{other}` (try `cargo xtask help`)"),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set (relative paths are taken from the
/// workspace root, as cargo does when run there), else `target/` in the workspace.
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}
