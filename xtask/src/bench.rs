//! `cargo xtask bench [--quick | --smoke] [--json FILE] [--svg FILE]`: builds the host benchmark
//! (`bench/`, crate levitate-bench) with the release profile and runs it. Every allocator
//! runs in that one process, repetitions interleaved; see bench/src/main.rs and
//! docs/performance.md. Numbers only: nothing here fails on time. `--boot` measures boot cost
//! in QEMU instead (bench_boot.rs).

use crate::{bail, Result};
use lexopt::ValueExt;
use std::process::{Command, ExitCode};

const USAGE: &str =
    "usage: cargo xtask bench [--quick | --smoke] [--json FILE] [--svg FILE] | --boot [--quick] \
     [--json FILE]";

/// Parses the options and runs the bench.
pub fn run(parser: &mut lexopt::Parser) -> Result<ExitCode> {
    let mut args: Vec<String> = Vec::new();
    let mut boot = false;
    while let Some(arg) = parser.next()? {
        match arg {
            lexopt::Arg::Long("boot") => boot = true,
            lexopt::Arg::Long("quick") => args.push("--quick".into()),
            lexopt::Arg::Long("smoke") => args.push("--smoke".into()),
            lexopt::Arg::Long("json") => {
                let file = parser.value()?.string()?;
                // The bench runs in the workspace root; keep a relative path relative to the
                // caller's directory.
                let path = std::env::current_dir()?.join(file);
                args.push("--json".into());
                args.push(path.display().to_string());
            }
            lexopt::Arg::Long("svg") => {
                let path = std::env::current_dir()?.join(parser.value()?.string()?);
                args.push("--svg".into());
                args.push(path.display().to_string());
            }
            lexopt::Arg::Long("help") | lexopt::Arg::Short('h') => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("{} ({USAGE})", other.unexpected()),
        }
    }
    if boot {
        let mut quick = false;
        let mut json = None;
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            match a.as_str() {
                "--quick" => quick = true,
                "--json" => json = rest.next().map(std::path::PathBuf::from),
                _ => bail!("--boot takes only --quick and --json FILE ({USAGE})"),
            }
        }
        return crate::bench_boot::run(quick, json);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["run", "--release", "-q", "-p", "levitate-bench", "--"])
        .args(&args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        bail!("the bench failed ({status})");
    }
    Ok(ExitCode::SUCCESS)
}
