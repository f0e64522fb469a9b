//! The scenario harness: boot a kernel Image in QEMU with piped input, collect what it
//! printed, and check the outcome; plus the small tools scenarios share (QEMU's own tree,
//! a relocating stub bootloader, byte patches).

use crate::qemu::RunOptions;
use crate::{bail, Result};
use std::io::{Read, Write};
use std::path::Path;
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
