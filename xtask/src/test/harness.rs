//! The scenario harness: boot a kernel Image in QEMU with piped input, collect what it
//! printed, and check the outcome; plus the small tools scenarios share (QEMU's own tree,
//! a relocating stub bootloader, byte patches).

use crate::qemu::RunOptions;
use crate::{bail, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A boot that has not finished by then has hung.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn record(&mut self, name: &str, result: std::result::Result<(), String>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("scenario {name} ... ok");
            }
            Err(why) => {
                self.failed += 1;
                println!("scenario {name} ... FAILED: {why}");
                self.failures.push(format!("{name}: {why}"));
            }
        }
    }
}

/// What a QEMU run produced.
pub struct Outcome {
    /// Exit status (None when killed after the timeout).
    pub code: Option<i32>,
    /// Everything the guest printed (stdout and stderr of QEMU).
    pub output: String,
    /// The run hit the timeout.
    pub timed_out: bool,
}

/// Boots `image` with `opts`, feeding `input` to the console, and collects the output.
pub fn boot(image: &Path, opts: &RunOptions, input: &str) -> Result<Outcome> {
    let mut child = opts
        .command(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let sink = Arc::clone(&output);
        readers.push(std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }));
    }
    // Keep stdin open while the guest runs: the UART reads it as the user would type.
    let mut stdin = child.stdin.take();
    if let Some(s) = stdin.as_mut() {
        let _ = s.write_all(input.as_bytes());
        let _ = s.flush();
    }
    let start = Instant::now();
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (status.code(), false);
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    for r in readers {
        let _ = r.join();
    }
    let bytes = output.lock().unwrap().clone();
    Ok(Outcome {
        code,
        output: String::from_utf8_lossy(&bytes).replace('\r', ""),
        timed_out,
    })
}

/// Boots `image` with `opts` and an HMP monitor on a unix socket, types `commands` (one
/// line each) and, once the shell has answered them all (the prompt after the last one is
/// printed), calls `inspect` with the monitor, for `screendump` or `pmemsave`; then quits
/// QEMU through the monitor (exit status 0). `inspect` gets the output so far. Returns the
/// outcome and what `inspect` returned: `None` when the shell never finished the commands
/// (the outcome shows why: a timeout, an early exit). An error from `inspect` is returned
/// once QEMU is gone.
pub fn boot_with_monitor<T>(
    image: &Path,
    opts: &RunOptions,
    commands: &[&str],
    inspect: impl FnOnce(&mut crate::monitor::Monitor, &str) -> Result<T>,
) -> Result<(Outcome, Option<T>)> {
    use crate::session::{Session, Waited};
    static BOOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = crate::monitor::socket_path(&format!("boot{n}"));
    let _ = std::fs::remove_file(&socket);
    let opts = RunOptions {
        monitor: Some(socket.clone()),
        interactive: false,
        ..opts.clone()
    };
    let start = Instant::now();
    let deadline = start + BOOT_TIMEOUT;
    let mut session = Session::spawn(opts.command(image), false)?;
    type Inspected<T> = (Option<Result<T>>, crate::monitor::Monitor);
    let result = (|| -> Result<Inspected<T>> {
        let mut monitor = crate::monitor::Monitor::connect(&socket, deadline)?;
        for c in commands {
            session.send_line(c);
        }
        if session.wait_for_commands(deadline)? != Waited::Ready {
            return Ok((None, monitor));
        }
        let found = inspect(&mut monitor, &session.text());
        // Quit whatever `inspect` made of it: QEMU must not outlive the scenario.
        monitor.quit()?;
        Ok((Some(found), monitor))
    })();
    // On an error nothing more will come: stop QEMU now rather than at the deadline.
    let ended = session.finish(if result.is_err() {
        Instant::now()
    } else {
        deadline
    })?;
    let _ = std::fs::remove_file(&socket);
    let outcome = Outcome {
        code: ended.code,
        output: ended.output,
        timed_out: ended.timed_out,
    };
    let (found, monitor) = result?;
    drop(monitor);
    Ok((outcome, found.transpose()?))
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Checks on one run's outcome.
pub struct Expect<'a> {
    pub code: i32,
    pub contains: &'a [&'a str],
    pub absent: &'a [&'a str],
}

pub fn check(out: &Outcome, e: &Expect<'_>) -> std::result::Result<(), String> {
    verdict(out, expect_problems(out, e))
}

fn expect_problems(out: &Outcome, e: &Expect<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    if out.timed_out {
        problems.push(format!("timed out after {}s", BOOT_TIMEOUT.as_secs()));
    } else if out.code != Some(e.code) {
        problems.push(format!("exit status {:?}, expected {}", out.code, e.code));
    }
    for want in e.contains {
        if !out.output.contains(want) {
            problems.push(format!("output lacks {want:?}"));
        }
    }
    for unwanted in e.absent {
        if out.output.contains(unwanted) {
            problems.push(format!("output has {unwanted:?}"));
        }
    }
    problems
}

fn verdict(out: &Outcome, problems: Vec<String>) -> std::result::Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n--- output tail ---\n{}",
            problems.join("; "),
            tail(&out.output, 25)
        ))
    }
}

/// The shell's prompt, which starts every echoed command line.
pub const PROMPT: &str = crate::session::PROMPT;

/// A console line as a terminal shows it: the line editor answers a backspace with
/// "\x08 \x08" (back, blank, back), so each \x08 takes back the character before it.
fn as_displayed(line: &str) -> String {
    let mut shown = String::new();
    for c in line.chars() {
        if c == '\x08' {
            shown.pop();
        } else {
            shown.push(c);
        }
    }
    shown
}

/// What each run of the shell command `cmd` printed, in order: the text after its echo line
/// (`levitate> CMD`, after line editing) up to the next prompt, or to the end of the output
/// for the last command. Only the command's own output, never the boot log or the echo.
pub fn command_outputs<'a>(output: &'a str, cmd: &str) -> Vec<&'a str> {
    let mut runs = Vec::new();
    let mut at = 0;
    while at < output.len() {
        let rest = &output[at..];
        let line_len = rest.find('\n').map_or(rest.len(), |n| n + 1);
        let line = &rest[..line_len];
        at += line_len;
        let Some(typed) = line.strip_prefix(PROMPT) else {
            continue;
        };
        if as_displayed(typed.trim_end_matches('\n')).trim_end() != cmd {
            continue;
        }
        let body = &output[at..];
        let end = body
            .match_indices(PROMPT)
            .find(|&(i, _)| i == 0 || body.as_bytes()[i - 1] == b'\n')
            .map_or(body.len(), |(i, _)| i);
        runs.push(&body[..end]);
    }
    runs
}

/// A check on one command's output: `Err` says what is wrong with it.
pub type Verify = fn(&str) -> std::result::Result<(), String>;

/// Checks on what one shell command printed, applied to every run of it in the boot.
pub struct Says<'a> {
    /// The command line as typed (after line editing), without the prompt.
    pub cmd: &'a str,
    /// Text every run's output must contain.
    pub contains: &'a [&'a str],
    /// Text no run's output may contain.
    pub absent: &'a [&'a str],
    /// A further check on each run's output (e.g. [`stress_ok`]).
    pub verify: Option<Verify>,
}

impl<'a> Says<'a> {
    /// Every run of `cmd` prints each of `contains`.
    pub fn new(cmd: &'a str, contains: &'a [&'a str]) -> Self {
        Says {
            cmd,
            contains,
            absent: &[],
            verify: None,
        }
    }
}

/// [`check`] on the whole run, plus checks on the text each command itself printed. A
/// command in `says` that was never echoed is a failure.
pub fn check_commands(
    out: &Outcome,
    e: &Expect<'_>,
    says: &[Says<'_>],
) -> std::result::Result<(), String> {
    let mut problems = expect_problems(out, e);
    problems.extend(command_problems(&out.output, says));
    verdict(out, problems)
}

fn command_problems(output: &str, says: &[Says<'_>]) -> Vec<String> {
    let mut problems = Vec::new();
    for s in says {
        let runs = command_outputs(output, s.cmd);
        if runs.is_empty() {
            problems.push(format!("`{}` never ran (no echo of it)", s.cmd));
        }
        for (i, text) in runs.iter().enumerate() {
            let which = if runs.len() > 1 {
                format!("`{}` (run {})", s.cmd, i + 1)
            } else {
                format!("`{}`", s.cmd)
            };
            for want in s.contains {
                if !text.contains(want) {
                    problems.push(format!("{which} did not print {want:?}"));
                }
            }
            for unwanted in s.absent {
                if text.contains(unwanted) {
                    problems.push(format!("{which} printed {unwanted:?}"));
                }
            }
            if let Some(Err(why)) = s.verify.map(|f| f(text)) {
                problems.push(format!("{which}: {why}"));
            }
        }
    }
    problems
}

/// The verdict on one `stress frames` / `stress heap` output (kernel/src/shell/mm.rs): its
/// summary line is there, every `errors: N` line reads as the number 0, and no line reports
/// a failure (the shell's `stress: why` form, a changed MemFree, a failed allocation).
pub fn stress_ok(text: &str) -> std::result::Result<(), String> {
    let mut problems = Vec::new();
    let mut summaries = 0;
    let mut error_lines = 0;
    for line in text.lines() {
        if line.starts_with("stress frames: ") || line.starts_with("stress heap: ") {
            summaries += 1;
        }
        if let Some(n) = line.strip_prefix("errors: ") {
            error_lines += 1;
            match n.trim().parse::<u64>() {
                Ok(0) => {}
                Ok(n) => problems.push(format!("{n} errors")),
                Err(_) => problems.push(format!("unreadable error count {line:?}")),
            }
        }
        let failed = line.starts_with("stress: ")
            || line.starts_with("usage: ")
            || line.contains("CHANGED")
            || line.contains("failed")
            || line.contains("FAILED")
            || line.contains("corrupt")
            || line.contains(" lost");
        if failed {
            problems.push(format!("failure line {line:?}"));
        }
    }
    if summaries == 0 {
        problems.push("no summary line".into());
    }
    if error_lines == 0 {
        problems.push("no `errors: N` line".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// A memory-stress command's checks.
pub fn stress_says(cmd: &str) -> Says<'_> {
    Says {
        cmd,
        contains: &[],
        absent: &[],
        verify: Some(stress_ok),
    }
}

/// `memcheck`'s checks: every run reports ok, and no line of it reports a problem.
pub fn memcheck_says() -> Says<'static> {
    Says {
        cmd: "memcheck",
        contains: &["memcheck: ok ("],
        absent: &[],
        verify: Some(memcheck_ok),
    }
}

fn memcheck_ok(text: &str) -> std::result::Result<(), String> {
    match text
        .lines()
        .find(|l| l.starts_with("memcheck: ") && !l.starts_with("memcheck: ok ("))
    {
        Some(line) => Err(format!("failure line {line:?}")),
        None => Ok(()),
    }
}

/// QEMU's own device tree for the default machine, dumped once.
pub fn dump_qemu_dtb(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("qemu-virt-default.dtb");
    let status = Command::new("qemu-system-aarch64")
        .args([
            "-M",
            &format!("virt,dumpdtb={}", path.display()),
            "-cpu",
            "cortex-a76",
            "-m",
            "1024M",
            "-nographic",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("qemu-system-aarch64 could not dump its device tree");
    }
    Ok(std::fs::read(&path)?)
}

/// QEMU's own tree for the default machine (dumped into `work` if not there yet) as dtc
/// source.
pub fn qemu_dts(work: &Path) -> Result<String> {
    crate::deps::ensure_dtc()?;
    let base = work.join("qemu-virt-default.dtb");
    if !base.is_file() {
        dump_qemu_dtb(work)?;
    }
    let out = Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts"])
        .arg(&base)
        .output()?;
    if !out.status.success() {
        bail!("dtc could not decompile QEMU's tree");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Compiles dtc `source` into `work/NAME.dtb` (the source is kept next to it, `NAME.dts`).
pub fn compile_dts(work: &Path, name: &str, source: &str) -> Result<PathBuf> {
    crate::deps::ensure_dtc()?;
    let dts = work.join(format!("{name}.dts"));
    let out = work.join(format!("{name}.dtb"));
    std::fs::write(&dts, source)?;
    let status = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(&out)
        .arg(&dts)
        .status()?;
    if !status.success() {
        bail!("dtc could not compile {}", dts.display());
    }
    Ok(out)
}

/// QEMU's own tree with `overlay` appended (dtc merges a second root block into the first,
/// its properties replacing those of the same name), compiled to `work/NAME.dtb`.
pub fn qemu_dtb_with(work: &Path, name: &str, overlay: &str) -> Result<PathBuf> {
    compile_dts(work, name, &(qemu_dts(work)? + overlay))
}

/// An arm64 Image "bootloader" that enters `kernel` with x0 = `tree` (a tree put there by
/// `-device loader`, passed unmodified, as a phone's bootloader would; QEMU's `-dtb` would
/// replace its memory nodes) and x1-x3 = 0 as QEMU left them.
pub fn tree_stub(tree: u64, kernel: u64) -> Vec<u8> {
    let mut img = vec![0u8; 0x60];
    let mut put32 = |at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(0x00, 0x1400_0010); // b +0x40
    put32(0x40, 0x5800_0080); // ldr x0, #0x10   (tree, at 0x50)
    put32(0x44, 0x5800_00b0); // ldr x16, #0x14  (kernel, at 0x58)
    put32(0x48, 0xd61f_0200); // br x16
    img[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    img[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes()); // flags: LE, 4K, anywhere
    img[0x38..0x3c].copy_from_slice(b"ARM\x64");
    img[0x50..0x58].copy_from_slice(&tree.to_le_bytes());
    img[0x58..0x60].copy_from_slice(&kernel.to_le_bytes());
    img
}

/// A minimal "bootloader": an arm64 Image that QEMU enters with x0 = DTB and that jumps to
/// `target`, where `-device loader` put the real kernel. It proves the kernel's early code
/// runs wherever it is loaded, not only at QEMU's own address.
pub fn relocating_stub(target: u64) -> Vec<u8> {
    let mut img = vec![0u8; 0x50];
    let mut put32 = |at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(0x00, 0x1400_0010); // b +0x40
    put32(0x40, 0x5800_0050); // ldr x16, #8   (the literal below)
    put32(0x44, 0xd61f_0200); // br x16        (x0-x3 untouched)
    img[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    img[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes()); // flags: LE, 4K, anywhere
    img[0x38..0x3c].copy_from_slice(b"ARM\x64");
    img[0x48..0x50].copy_from_slice(&target.to_le_bytes());
    img
}

/// Replaces every occurrence of `from` with `to` (same length) in a blob.
pub fn patch_bytes(blob: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "patches keep the blob's layout");
    let mut out = blob.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[    0.02] INFO  Levitate 0.1.0 (git abc) aarch64
levitate> version
Levitate 0.1.0 (git abc) aarch64
levitate> helx\x08 \x08p
  help                   list the commands
levitate> memcheck
memcheck: ok (10 free frames in 2 blocks, 3 allocated)
levitate> stress frames 10
stress frames: 10 operations on each of 1 CPUs: ...
errors: 0
MemFree: 4 kB before, 4 kB after (back to its starting value)
levitate> memcheck
memcheck: frame allocator: buddy: broken
levitate> poweroff
powering off
";

    fn outcome(output: &str) -> Outcome {
        Outcome {
            code: Some(0),
            output: output.into(),
            timed_out: false,
        }
    }

    #[test]
    fn command_output_is_the_text_between_echo_and_next_prompt() {
        assert_eq!(
            command_outputs(LOG, "version"),
            ["Levitate 0.1.0 (git abc) aarch64\n"]
        );
        // The echo itself and the boot log are not the command's output.
        assert!(command_outputs(LOG, "Levitate 0.1.0").is_empty());
        // Line editing is applied to the echo.
        assert_eq!(command_outputs(LOG, "help").len(), 1);
        assert!(command_outputs(LOG, "helx").is_empty());
        // The last command runs to the end of the output.
        assert_eq!(command_outputs(LOG, "poweroff"), ["powering off\n"]);
        assert_eq!(command_outputs(LOG, "memcheck").len(), 2);
        assert!(command_outputs(LOG, "stress").is_empty());
    }

    #[test]
    fn every_run_of_a_command_is_checked() {
        let out = outcome(LOG);
        let e = Expect {
            code: 0,
            contains: &[],
            absent: &[],
        };
        let version = Says::new("version", &["Levitate 0.1.0"]);
        assert!(check_commands(&out, &e, &[version]).is_ok());
        // The second memcheck failed: found although the first is fine.
        let err = check_commands(&out, &e, &[memcheck_says()]).unwrap_err();
        assert!(err.contains("`memcheck` (run 2)"), "{err}");
        assert!(!err.contains("(run 1)"), "{err}");
        // Text only the boot log has does not count as the command's output.
        let err = check_commands(&out, &e, &[Says::new("poweroff", &["INFO"])]).unwrap_err();
        assert!(err.contains("did not print"), "{err}");
        let err = check_commands(&out, &e, &[Says::new("meminfo", &[])]).unwrap_err();
        assert!(err.contains("never ran"), "{err}");
        assert!(check_commands(&out, &e, &[stress_says("stress frames 10")]).is_ok());
    }

    #[test]
    fn stress_errors_are_read_as_numbers() {
        let ok = "stress heap: 3 allocations\nerrors: 0\n";
        assert!(stress_ok(ok).is_ok());
        for bad in [
            "stress heap: 3 allocations\nerrors: 10\n",
            "stress heap: 3 allocations\nerrors: 3\n",
            "stress heap: 3 allocations\nerrors: x\n",
            "stress heap: 3 allocations\n",
            "errors: 0\n",
            "stress heap: 3 allocations\nerrors: 0\nstress: heap memory was corrupted\n",
            "stress frames: 3\nerrors: 0\nMemFree: 4 kB before, 0 kB after (CHANGED)\n",
            "stress heap: a 12-byte allocation failed after 0 bytes\nstress heap: 1\nerrors: 0\n",
        ] {
            assert!(stress_ok(bad).is_err(), "{bad:?}");
        }
    }
}
