//! `cargo xtask bench --boot [--quick] [--json FILE]`: boot cost. Boots the release kernel in QEMU at 128 MiB,
//! 1 GiB and 8 GiB of RAM, several times each (sizes interleaved), and reports the median time
//! to each boot phase and to the first prompt, as the kernel measured them (`boottime`: the
//! counter since the kernel's first instruction), the 8 GiB / 128 MiB ratio against the target
//! "8 GiB under 3x the 128 MiB time", and for context the wall-clock time from starting the
//! QEMU process to the boot line on its console (QEMU's own start-up and image loading
//! included). Numbers only: a missed target is reported, never an error (the machine is
//! shared; nothing in `cargo xtask test` depends on speed).

use crate::kernel::{self, Variant};
use crate::qemu::RunOptions;
use crate::{bail, Result};
use std::io::{Read, Write};
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// RAM sizes booted, in MiB, with their labels.
const SIZES: [(u64, &str); 3] = [(128, "128M"), (1024, "1G"), (8192, "8G")];
/// The target: the 8 GiB boot under this many times the 128 MiB boot.
const TARGET_RATIO: f64 = 3.0;
/// A boot that has not reached the prompt and powered off by then has hung.
const TIMEOUT: Duration = Duration::from_secs(180);

/// What one boot measured.
struct Boot {
    /// (phase, ms since kernel entry) in boot order, from `boottime`.
    phases: Vec<(String, f64)>,
    /// Wall clock from spawning QEMU to the boot line on its console.
    wall_ms: f64,
}

/// Runs the boot bench; with `json`, also writes the medians there:
/// `{"reps":N,"sizes":[{"size":"128M","mem_mib":128,"phases":{"early":MS,...},
/// "prompt_ms":MS,"qemu_wall_ms":MS}],"ratio_8g_128m":X,"target_ratio":3.0,"pass":true}`.
pub fn run(quick: bool, json: Option<std::path::PathBuf>) -> Result<ExitCode> {
    let reps = if quick { 3 } else { 7 };
    crate::deps::ensure_qemu()?;
    let built = kernel::build(Variant {
        release: true,
        ktest: false,
    })?;
    let base = RunOptions {
        initrd: Some(crate::initramfs::default_archive()?),
        smp: 2,
        release: true,
        ..RunOptions::default()
    };
    println!(
        "boot bench: release kernel, QEMU virt {} x{} CPUs, {reps} boots per size (interleaved)",
        base.cpu, base.smp
    );
    let mut boots: Vec<Vec<Boot>> = SIZES.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for (i, (mem_mib, label)) in SIZES.iter().enumerate() {
            let opts = RunOptions {
                mem_mib: *mem_mib,
                ..base.clone()
            };
            let b = boot_once(&built.image, &opts)
                .map_err(|e| format!("boot {} at {label}: {}", rep + 1, e.0))?;
            boots[i].push(b);
        }
        eprint!(".");
    }
    eprintln!();
    let names: Vec<String> = boots[0][0].phases.iter().map(|(n, _)| n.clone()).collect();
    for (i, runs) in boots.iter().enumerate() {
        for b in runs {
            let these: Vec<&String> = b.phases.iter().map(|(n, _)| n).collect();
            if these != names.iter().collect::<Vec<_>>() {
                bail!("the {} boots listed other phases: {these:?}", SIZES[i].1);
            }
        }
    }
    let median_at =
        |size: usize, phase: usize| median(boots[size].iter().map(|b| b.phases[phase].1).collect());
    println!();
    print!("{:<12}", "ms to");
    for (_, label) in SIZES {
        print!("{:>18}", label);
    }
    println!("   (since kernel entry; + the phase itself)");
    for (p, name) in names.iter().enumerate() {
        print!("{name:<12}");
        for s in 0..SIZES.len() {
            let at = median_at(s, p);
            let took = at - if p == 0 { 0.0 } else { median_at(s, p - 1) };
            print!("{:>18}", format!("{at:.1} (+{took:.1})"));
        }
        println!();
    }
    print!("{:<12}", "QEMU wall");
    for runs in &boots {
        let wall = median(runs.iter().map(|b| b.wall_ms).collect());
        print!("{:>18}", format!("{wall:.1}"));
    }
    println!("   (QEMU process start -> boot line; QEMU start-up and loading included)");
    let last = names.len() - 1;
    let (small, big) = (median_at(0, last), median_at(SIZES.len() - 1, last));
    let ratio = big / small;
    println!(
        "\n8G / 128M time to the prompt: {big:.1} / {small:.1} ms = {ratio:.2}x (target under \
         {TARGET_RATIO}x): {}",
        if ratio < TARGET_RATIO { "pass" } else { "FAIL" }
    );
    if let Some(path) = json {
        let sizes: Vec<String> = SIZES
            .iter()
            .enumerate()
            .map(|(s, (mem_mib, label))| {
                let phases: Vec<String> = names
                    .iter()
                    .enumerate()
                    .map(|(p, name)| format!("{}:{:.3}", json_string(name), median_at(s, p)))
                    .collect();
                let wall = median(boots[s].iter().map(|b| b.wall_ms).collect());
                format!(
                    "{{\"size\":{},\"mem_mib\":{mem_mib},\"phases\":{{{}}},\"prompt_ms\":{:.3},\
                     \"qemu_wall_ms\":{wall:.3}}}",
                    json_string(label),
                    phases.join(","),
                    median_at(s, last)
                )
            })
            .collect();
        let text = format!(
            "{{\"reps\":{reps},\"sizes\":[{}],\"ratio_8g_128m\":{ratio:.4},\
             \"target_ratio\":{TARGET_RATIO:.1},\"pass\":{}}}\n",
            sizes.join(","),
            ratio < TARGET_RATIO
        );
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` as a JSON string (phase names and labels are plain words; quotes and backslashes are
/// escaped anyway).
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Boots once: waits for the boot line, runs `boottime`, powers off.
fn boot_once(image: &std::path::Path, opts: &RunOptions) -> Result<Boot> {
    let started = Instant::now();
    let mut child = opts
        .command(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take();
    let mut sent = false;
    let mut text = String::new();
    let mut wall_ms = None;
    let result = loop {
        if started.elapsed() > TIMEOUT {
            break Err(format!("no poweroff within {}s", TIMEOUT.as_secs()));
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes).replace('\r', "")),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        }
        if wall_ms.is_none() && text.contains("\nboot: ") {
            wall_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        if !sent && wall_ms.is_some() && text.contains(PROMPT) {
            // Typed only at the prompt, so the input cannot overrun the UART while boot runs.
            // The pipe stays open until QEMU exits (closing it ends the console input).
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(b"boottime\npoweroff\n");
                let _ = s.flush();
            }
            sent = true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Drain what is left.
            while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
                text.push_str(&String::from_utf8_lossy(&bytes).replace('\r', ""));
            }
            break Ok(());
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let _ = reader.join();
    result?;
    let wall_ms = wall_ms.ok_or("no boot line on the console")?;
    let phases = phase_rows(&text)?;
    if phases.is_empty() {
        bail!("`boottime` printed no phases");
    }
    Ok(Boot { phases, wall_ms })
}

const PROMPT: &str = "levitate> ";

/// The rows `boottime` prints after its echo: `  NAME  MS  +DELTA  what`.
fn phase_rows(text: &str) -> Result<Vec<(String, f64)>> {
    let Some(at) = text.find("levitate> boottime\n") else {
        bail!("`boottime` was not echoed");
    };
    let mut rows = Vec::new();
    for line in text[at..].lines().skip(2) {
        if !line.starts_with("  ") {
            break;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match (f.first(), f.get(1).and_then(|v| v.parse::<f64>().ok())) {
            (Some(name), Some(ms)) => rows.push((name.to_string(), ms)),
            _ => bail!("a phase without a time: {line:?}"),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_strings_are_quoted_and_escaped() {
        assert_eq!(json_string("mem_map"), "\"mem_map\"");
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
