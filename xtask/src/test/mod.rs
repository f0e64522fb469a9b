//! `cargo xtask test`: host unit tests, then QEMU boots in a small matrix running the in-kernel
//! suites, then shell and bad-input scenarios on the normal build. Ends with one line,
//! `N passed, N failed`, counting host tests, kernel tests and scenarios together.

mod hardware;
mod harness;
mod initramfs_hostile;
mod memmap_hostile;
mod scenarios;
mod shell_hostile;

pub use harness::boot;

use crate::kernel::{self, Variant};
use crate::qemu::RunOptions;
use crate::{bail, deps, workspace_root, Result};
use harness::{tail, Tally, BOOT_TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

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
    let work: PathBuf = crate::target_dir().join("xtask-test");
    std::fs::create_dir_all(&work)?;
    scenarios::scenarios(&mut tally, &normal.image, &work, &base)?;
    scenarios::memory_scenarios(&mut tally, &normal.image, &work, &base)?;
    scenarios::frame_scenarios(&mut tally, &normal.image, &base)?;
    scenarios::memmap_cli(&mut tally, &work)?;
    hardware::run(&mut tally, &normal.image, &work, &base)?;
    memmap_hostile::run(&mut tally, &normal.image, &work, &base)?;
    shell_hostile::run(&mut tally, &normal.image, &work, &base)?;
    initramfs_hostile::run(&mut tally, &normal.image, &work, &base)?;

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
