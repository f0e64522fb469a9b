//! `cargo xtask test`: host unit tests, then QEMU boots in a small matrix running the in-kernel
//! suites, then shell and bad-input scenarios on the normal build. Ends with one line,
//! `N passed, N failed`, counting host tests, kernel tests and scenarios together.

mod bootimg;
mod boottime;
mod console_drivers;
mod hardware;
mod harness;
mod heap;
mod initramfs_hostile;
mod interrupts;
mod irq_safety;
mod memmap_hostile;
mod scenarios;
mod screen;
mod shell_hostile;

pub use harness::boot;

use crate::image;
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

/// What a ktest boot reported, held against the tests its image registers.
#[derive(Debug, Default, PartialEq)]
struct KtestReport {
    passed: usize,
    /// The tests that reported FAILED.
    failed: Vec<String>,
    /// Why the boot as a whole does not account for every registered test.
    problems: Vec<String>,
}

/// Reads the runner's lines (kernel/src/ktest_runner.rs): `ktest: running N tests`, one
/// `ktest: NAME ... ok` or `... FAILED: why` per test, `ktest: result: P passed, F failed`.
/// Every registered test must report exactly once, nothing unregistered may report, and the
/// kernel's own count and summary must agree with what was seen.
fn ktest_report(output: &str, registered: &[String]) -> KtestReport {
    let mut report = KtestReport::default();
    if registered.is_empty() {
        report
            .problems
            .push("the ktest image registers no tests (.ktest is empty)".into());
    }
    let mut seen: Vec<&str> = Vec::new();
    let (mut announced, mut summary) = (None, None);
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("ktest: ") else {
            continue;
        };
        let (name, ok) = if let Some(n) = rest.strip_prefix("running ") {
            announced = n
                .strip_suffix(" tests")
                .and_then(|n| n.parse::<usize>().ok());
            if announced.is_none() {
                report.problems.push(format!("unreadable {line:?}"));
            }
            continue;
        } else if let Some(r) = rest.strip_prefix("result: ") {
            summary = Some(parse_summary(r).ok_or_else(|| format!("unreadable {line:?}")));
            continue;
        } else if let Some(name) = rest.strip_suffix(" ... ok") {
            (name, true)
        } else if let Some((name, _)) = rest.split_once(" ... FAILED") {
            (name, false)
        } else {
            report.problems.push(format!("unexpected line {line:?}"));
            continue;
        };
        if !registered.iter().any(|r| r == name) {
            report
                .problems
                .push(format!("{name} reported but not registered in .ktest"));
        } else if seen.contains(&name) {
            report.problems.push(format!("{name} reported twice"));
        }
        seen.push(name);
        if ok {
            report.passed += 1;
        } else {
            report.failed.push(name.to_string());
        }
    }
    match announced {
        Some(n) if n == registered.len() => {}
        Some(n) => report.problems.push(format!(
            "the kernel runs {n} tests, the image registers {}",
            registered.len()
        )),
        None => report
            .problems
            .push("no `ktest: running N tests` line".into()),
    }
    let missing: Vec<&str> = registered
        .iter()
        .map(String::as_str)
        .filter(|r| !seen.contains(r))
        .collect();
    if !missing.is_empty() {
        report.problems.push(format!(
            "{} of {} registered tests never reported (first: {})",
            missing.len(),
            registered.len(),
            missing[..missing.len().min(3)].join(", ")
        ));
    }
    match summary {
        None => report.problems.push("no `ktest: result:` summary".into()),
        Some(Err(why)) => report.problems.push(why),
        Some(Ok((p, f))) if (p, f) != (report.passed, report.failed.len()) => {
            report.problems.push(format!(
                "the summary says {p} passed, {f} failed; the lines say {} passed, {} failed",
                report.passed,
                report.failed.len()
            ))
        }
        Some(Ok(_)) => {}
    }
    report
}

/// "P passed, F failed".
fn parse_summary(s: &str) -> Option<(usize, usize)> {
    let (p, f) = s.split_once(", ")?;
    Some((
        p.strip_suffix(" passed")?.parse().ok()?,
        f.strip_suffix(" failed")?.parse().ok()?,
    ))
}

/// Boots the ktest kernel in one configuration and counts its tests against `registered`,
/// the names the image's `.ktest` section holds.
fn kernel_suite(
    tally: &mut Tally,
    image: &Path,
    registered: &[String],
    label: &str,
    opts: &RunOptions,
) -> Result<()> {
    println!("== in-kernel tests: {label}");
    let out = boot(image, opts, "")?;
    for line in out.output.lines().filter(|l| l.starts_with("ktest: ")) {
        println!("  {line}");
    }
    let report = ktest_report(&out.output, registered);
    tally.passed += report.passed;
    tally.failed += report.failed.len();
    for name in &report.failed {
        tally.failures.push(format!("ktest [{label}] {name}"));
    }
    let mut problems = report.problems;
    if out.timed_out {
        problems.push(format!("timed out after {}s", BOOT_TIMEOUT.as_secs()));
    } else {
        // ktest_runner: power off (0) when all passed, EXIT_TEST_FAILED (1) otherwise.
        let want = if report.failed.is_empty() { 0 } else { 1 };
        if out.code != Some(want) {
            problems.push(format!("exit status {:?}, expected {want}", out.code));
        }
    }
    // The boot path parks on anything but EL1 or EL2; which one it reports must be the one
    // this configuration entered at.
    let entered = if opts.el2 {
        "entered at EL2, running at EL1"
    } else {
        "entered at EL1, running at EL1"
    };
    if !out.output.contains(entered) {
        problems.push(format!("the boot log lacks {entered:?}"));
    }
    if !problems.is_empty() {
        println!("{}", tail(&out.output, 30));
        tally.record(&format!("kernel boot [{label}]"), Err(problems.join("; ")));
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
    // Before the host tests: levitate-mm's dtb_devices test builds trees with dtc too.
    deps::ensure_dtc()?;
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
        // Four CPUs here too, so ticks and the redistributor search are checked on every CPU
        // of a GICv3 (`--smp 4` below covers GICv2), at no extra boot.
        matrix.push((
            "--el2 --gic 3 --smp 4",
            RunOptions {
                el2: true,
                gic: Some(3),
                smp: 4,
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
    let registered = image::ktest_names(&std::fs::read(&ktest.elf)?)?;
    println!(
        "== the ktest image registers {} in-kernel tests",
        registered.len()
    );
    for (label, opts) in &matrix {
        kernel_suite(&mut tally, &ktest.image, &registered, label, opts)?;
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
    interrupts::run(&mut tally, &normal.image, &work, &base)?;
    bootimg::run(&mut tally, &normal.image, &work, &base)?;
    console_drivers::run(&mut tally, &normal.image, &work, &base)?;
    irq_safety::run(&mut tally, &normal.image, &work, &base)?;
    boottime::run(&mut tally, &normal.image, &work, &base)?;
    heap::run(&mut tally, &normal.image, &work, &base)?;
    screen::run(&mut tally, &normal.image, &work, &base)?;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_boot_that_reports_every_registered_test_is_clean() {
        let out =
            "ktest: running 2 tests\nktest: a::x ... ok\nktest: b::y ... FAILED: f.rs:1: no\n\
                   ktest: result: 1 passed, 1 failed\n";
        let r = ktest_report(out, &names(&["a::x", "b::y"]));
        assert_eq!(
            r,
            KtestReport {
                passed: 1,
                failed: names(&["b::y"]),
                problems: vec![]
            }
        );
    }

    #[test]
    fn boots_that_do_not_account_for_every_test_are_problems() {
        let two = names(&["a::x", "b::y"]);
        let cases: [(&str, &[String], &str); 7] = [
            // No tests registered: "0 passed, 0 failed" is not a pass.
            (
                "ktest: running 0 tests\nktest: result: 0 passed, 0 failed\n",
                &[],
                "registers no tests",
            ),
            // A test that never reported (a runner that skipped it).
            (
                "ktest: running 2 tests\nktest: a::x ... ok\nktest: result: 1 passed, 0 failed\n",
                &two,
                "never reported (first: b::y)",
            ),
            // The kernel ran fewer than the image holds.
            (
                "ktest: running 1 tests\nktest: a::x ... ok\nktest: b::y ... ok\nktest: result: 2 passed, 0 failed\n",
                &two,
                "runs 1 tests",
            ),
            // A summary that disagrees with the lines.
            (
                "ktest: running 2 tests\nktest: a::x ... ok\nktest: b::y ... ok\nktest: result: 3 passed, 0 failed\n",
                &two,
                "the summary says 3 passed",
            ),
            // A panic ends the boot without a summary.
            (
                "ktest: running 2 tests\nktest: a::x ... ok\nktest: b::y ... FAILED: panicked\n",
                &two,
                "no `ktest: result:` summary",
            ),
            (
                "ktest: running 2 tests\nktest: a::x ... ok\nktest: a::x ... ok\nktest: result: 2 passed, 0 failed\n",
                &two,
                "a::x reported twice",
            ),
            (
                "ktest: running 2 tests\nktest: a::x ... ok\nktest: c::z ... ok\nktest: result: 2 passed, 0 failed\n",
                &two,
                "c::z reported but not registered",
            ),
        ];
        for (out, registered, want) in cases {
            let r = ktest_report(out, registered);
            assert!(
                r.problems.iter().any(|p| p.contains(want)),
                "{out:?}: {:?}",
                r.problems
            );
        }
    }
}
