//! `cargo xtask boot`: boots the kernel on a board. QEMU: as `cargo xtask run`. Pixel 6: builds
//! the images, checks that a phone is in fastboot mode, then `fastboot flash vendor_boot`
//! (only with `--vendor-boot`, said first) and `fastboot boot boot.img`. Every fastboot call
//! has a timeout: fastboot itself waits forever for a device.

use super::{make, Board, ImageOptions};
use crate::{bail, deps, Result};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `fastboot devices` answers at once when the USB stack is there.
const LIST_TIMEOUT: Duration = Duration::from_secs(15);
/// Sending a 64 MiB image over USB 2 takes a few seconds; flashing a little more.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

const USAGE: &str = "cargo xtask boot [--board qemu|pixel6] [--vendor-boot] [--dtb FILE] \
[--kernel-format lz4|gz|raw] [--cmdline ARGS] [--release] [--kernel IMAGE] [--initrd CPIO]";

/// What a fastboot call printed, or that it ran out of time.
struct Output {
    ok: bool,
    text: String,
}

/// Runs `fastboot ARGS` with a deadline; its output is collected (fastboot writes progress
/// to stderr) and shown when `show` is set.
fn fastboot(args: &[&std::ffi::OsStr], timeout: Duration, show: bool) -> Result<Output> {
    let mut cmd = Command::new("fastboot");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run fastboot: {e}"))?;
    // Readers on their own threads, so a chatty fastboot never blocks on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut s| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        })
    })
    .collect();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text: String = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    if show {
        eprint!("{text}");
    }
    match status {
        None => bail!(
            "`fastboot {}` did not finish within {} s (is the phone still in fastboot mode?)",
            shown.join(" "),
            timeout.as_secs()
        ),
        Some(s) => Ok(Output {
            ok: s.success(),
            text,
        }),
    }
}

/// The serial numbers `fastboot devices` lists (lines "SERIAL\tfastboot").
fn parse_devices(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let serial = words.next()?;
            (words.next() == Some("fastboot")).then(|| serial.to_string())
        })
        .collect()
}

/// The one phone to talk to: `$ANDROID_SERIAL` if set (and attached), else the only one.
fn pick_device() -> Result<String> {
    let out = fastboot(&["devices".as_ref()], LIST_TIMEOUT, false)?;
    let devices = parse_devices(&out.text);
    let wanted = std::env::var("ANDROID_SERIAL")
        .ok()
        .filter(|s| !s.is_empty());
    match (devices.as_slice(), wanted) {
        ([], _) => bail!(
            "no device in fastboot mode (`fastboot devices` lists none): connect the Pixel 6 over \
             USB and start it into the bootloader (power + volume down, or `adb reboot bootloader`)"
        ),
        (_, Some(w)) if devices.contains(&w) => Ok(w),
        (_, Some(w)) => bail!(
            "ANDROID_SERIAL={w} is not in fastboot mode; attached: {}",
            devices.join(", ")
        ),
        ([one], None) => Ok(one.clone()),
        (many, None) => bail!(
            "{} devices in fastboot mode ({}): choose one with ANDROID_SERIAL=SERIAL",
            many.len(),
            many.join(", ")
        ),
    }
}

fn run_step(serial: &str, args: &[&std::ffi::OsStr], what: &str) -> Result<()> {
    let mut full: Vec<&std::ffi::OsStr> = vec!["-s".as_ref(), serial.as_ref()];
    full.extend_from_slice(args);
    let out = fastboot(&full, TRANSFER_TIMEOUT, true)?;
    if !out.ok {
        bail!("{what} failed (fastboot said: {})", out.text.trim());
    }
    Ok(())
}

/// `cargo xtask boot`.
pub fn run(parser: &mut lexopt::Parser) -> Result<ExitCode> {
    let o = ImageOptions::parse(parser, USAGE)?;
    if o.board == Board::Qemu {
        if o.kernel.is_some() || o.out.is_some() || o.format != super::KernelFormat::Lz4 {
            bail!("--kernel, --out and --kernel-format are for --board pixel6");
        }
        let opts = crate::qemu::RunOptions {
            release: o.release,
            initrd: o.initrd.clone(),
            ..Default::default()
        };
        return crate::qemu::run(&opts);
    }
    deps::ensure_fastboot()?;
    // Ask for the phone before building: no device is the common mistake, and it is cheap.
    let serial = pick_device()?;
    let written = make(&o)?;
    let boot = written.boot.expect("pixel6 images include boot.img");
    if let Some(vendor) = &written.vendor_boot {
        eprintln!(
            "xtask: flashing {} to the vendor_boot partition of {serial} (this replaces the \
             phone's vendor_boot; to go back, flash the stock vendor_boot.img from the factory \
             image: fastboot flash vendor_boot vendor_boot.img)",
            vendor.display()
        );
        run_step(
            &serial,
            &["flash".as_ref(), "vendor_boot".as_ref(), vendor.as_os_str()],
            "flashing vendor_boot",
        )?;
    }
    eprintln!(
        "xtask: fastboot boot {} on {serial} (RAM only: nothing is flashed; the next reboot \
         starts the installed system)",
        boot.display()
    );
    run_step(
        &serial,
        &["boot".as_ref(), Path::new(&boot).as_os_str()],
        "fastboot boot",
    )?;
    eprintln!("xtask: booted; the console is the UART on the USB-C SBU pins (docs/pixel6.md)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_read_from_fastboots_listing() {
        assert!(parse_devices("").is_empty());
        assert_eq!(
            parse_devices("1A2B3C4D\tfastboot\nnoise line\n99\tfastboot\n"),
            ["1A2B3C4D", "99"]
        );
        // Devices in other states (recovery, unauthorized) are not in fastboot mode.
        assert!(parse_devices("1A2B\tunauthorized\n").is_empty());
    }
}
