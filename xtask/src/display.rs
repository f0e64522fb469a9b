//! `cargo xtask run --display` and `cargo xtask run --screenshot FILE.png`: the kernel's
//! screen console on QEMU's `ramfb` device, shown in a window (or over VNC when there is no
//! `$DISPLAY`), or saved as a PNG once the piped commands have run.
//!
//! The screenshot is taken when the shell has answered every piped line (its prompt is back
//! after the last one): a trailing `poweroff` line is held back until then, so the picture
//! shows the commands' output rather than QEMU's last frame. Then QEMU's monitor writes a
//! `screendump` (PPM), which becomes the PNG.

use crate::monitor::{self, Monitor};
use crate::picture;
use crate::qemu::{RunOptions, Viewer};
use crate::session::{Session, Waited};
use crate::{bail, Result};
use std::io::BufRead;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the kernel may take to boot to its prompt, and the shell to answer the piped
/// lines once they have all been sent: 120 s, or `$XTASK_PROMPT_TIMEOUT` seconds (the
/// scenario that boots a kernel which never prompts sets it short).
fn prompt_timeout() -> Duration {
    std::env::var("XTASK_PROMPT_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map_or(Duration::from_secs(120), Duration::from_secs)
}

/// Errors unless this QEMU has the `ramfb` device.
pub fn ensure_ramfb() -> Result<()> {
    let out = Command::new("qemu-system-aarch64")
        .args(["-M", "virt", "-device", "help"])
        .output()
        .map_err(|e| format!("cannot run qemu-system-aarch64: {e}"))?;
    if has_ramfb(&String::from_utf8_lossy(&out.stdout)) {
        Ok(())
    } else {
        bail!(
            "this qemu-system-aarch64 has no ramfb display device (`-device help` does not \
             list it); the screen console needs QEMU built with ramfb (Debian's qemu-system-arm \
             has it)"
        )
    }
}

/// Whether `-device help` output lists ramfb (`name "ramfb", bus System, ...`).
fn has_ramfb(device_help: &str) -> bool {
    device_help
        .lines()
        .any(|l| l.trim_start().starts_with("name \"ramfb\""))
}

/// The window backend to use from `-display help` output: gtk, else sdl.
fn window_backend(display_help: &str) -> Option<&'static str> {
    let listed = |name: &str| display_help.lines().any(|l| l.trim() == name);
    ["gtk", "sdl"].into_iter().find(|b| listed(b))
}

/// The first VNC display number whose port (5900 + N) on 127.0.0.1 is free now.
fn free_vnc_display() -> Result<u16> {
    (0..100u16)
        .find(|n| TcpListener::bind((Ipv4Addr::LOCALHOST, 5900 + n)).is_ok())
        .ok_or_else(|| "no free VNC port in 5900-5999 on 127.0.0.1".into())
}

/// Chooses how `--display` shows the screen: a window when `$DISPLAY` (or
/// `$WAYLAND_DISPLAY`) is set and this QEMU has gtk or sdl, VNC on 127.0.0.1 otherwise.
pub fn choose_viewer() -> Result<Viewer> {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if graphical {
        let out = Command::new("qemu-system-aarch64")
            .args(["-display", "help"])
            .output()
            .map_err(|e| format!("cannot run qemu-system-aarch64: {e}"))?;
        match window_backend(&String::from_utf8_lossy(&out.stdout)) {
            Some(b) => return Ok(Viewer::Window(b.into())),
            None => eprintln!(
                "xtask: this QEMU has no gtk or sdl display (Debian: qemu-system-gui); \
                 serving VNC instead"
            ),
        }
    }
    let n = free_vnc_display()?;
    eprintln!(
        "vnc: 127.0.0.1:{} (connect a VNC viewer to it, e.g. `vncviewer 127.0.0.1::{}`)",
        5900 + n,
        5900 + n
    );
    Ok(Viewer::Vnc(n))
}

/// Refuses a `--screenshot` path that cannot be written, before anything is built or booted:
/// the file is created (and removed again if it was not there), so every reason the OS has
/// (no such directory, no permission, a directory of that name) is found now.
pub fn check_writable(png: &Path) -> Result<()> {
    let existed = png.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(png)
        .map_err(|e| format!("--screenshot {}: cannot write it: {e}", png.display()))?;
    if !existed {
        let _ = std::fs::remove_file(png);
    }
    Ok(())
}

/// Whether a piped line is one that ends the machine: held back until the screenshot is
/// taken.
fn ends_the_machine(line: &str) -> bool {
    matches!(line.trim(), "poweroff" | "reboot")
}

/// Boots `image` with ramfb and a monitor socket, types this process's stdin into the
/// serial console, and writes `png` once the shell has answered every line.
pub fn screenshot(image: &Path, opts: &RunOptions, png: &Path) -> Result<ExitCode> {
    let socket = monitor::socket_path("screenshot");
    let _ = std::fs::remove_file(&socket);
    let opts = RunOptions {
        ramfb: true,
        monitor: Some(socket.clone()),
        viewer: Viewer::None,
        // QEMU's stdin is xtask's pipe, whatever ours is.
        interactive: false,
        ..opts.clone()
    };
    let result = drive(image, &opts, png, &socket);
    let _ = std::fs::remove_file(&socket);
    result
}

fn drive(image: &Path, opts: &RunOptions, png: &Path, socket: &Path) -> Result<ExitCode> {
    let mut session = Session::spawn(opts.command(image), true)?;
    let timeout = prompt_timeout();
    let deadline = Instant::now() + timeout;
    let mut monitor = Monitor::connect_while(socket, deadline, || Ok(!session.has_exited()?))
        .map_err(|e| crate::Error(format!("{}; no screenshot taken", e.0)))?;
    // Read stdin on a thread, so that a QEMU that dies meanwhile is noticed.
    let (lines, from_stdin) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut held: Option<String> = None;
    loop {
        match from_stdin.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(h) = held.take() {
                    session.send_line(&h);
                }
                if ends_the_machine(&line) {
                    held = Some(line);
                } else {
                    session.send_line(&line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if session.has_exited()? {
                    bail!("QEMU exited before the piped commands had run; no screenshot taken");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let deadline = Instant::now() + timeout;
    match session.wait_for_commands(deadline)? {
        Waited::Ready => {}
        Waited::Exited => {
            bail!(
                "QEMU exited before the shell had answered the piped commands; no screenshot taken"
            )
        }
        Waited::TimedOut => {
            let seen = session.prompts();
            if seen == 0 {
                bail!(
                    "the kernel showed no shell prompt (`{}`) within {}s; no screenshot taken",
                    crate::session::PROMPT.trim_end(),
                    timeout.as_secs()
                );
            }
            bail!(
                "the shell answered {} of {} piped lines within {}s; no screenshot taken",
                seen - 1,
                session.sent(),
                timeout.as_secs()
            );
        }
    }
    let text = session.text();
    if let Some(line) = text.lines().find(|l| l.contains("screen: no framebuffer")) {
        eprintln!(
            "xtask: the kernel has no screen console ({}); the screenshot shows QEMU's ramfb \
             placeholder",
            line.trim()
        );
    }
    let ppm = png.with_extension("ppm.tmp");
    let shot = settled_screendump(&mut monitor, &ppm);
    let _ = std::fs::remove_file(&ppm);
    let shot = shot?;
    picture::write_png(&shot, png)?;
    eprintln!(
        "xtask: screenshot {} ({}x{})",
        png.display(),
        shot.width,
        shot.height
    );
    match held {
        Some(line) => session.send_line(&line),
        None => monitor.quit()?,
    }
    let ended = session.finish(Instant::now() + Duration::from_secs(30))?;
    drop(monitor);
    if ended.timed_out {
        bail!("QEMU did not exit after the screenshot; killed it");
    }
    Ok(match ended.code {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => {
            eprintln!("xtask: QEMU exited with status {code}");
            ExitCode::from(code.clamp(1, 255) as u8)
        }
        None => bail!("QEMU was killed by a signal"),
    })
}

/// How long to wait for the screen to settle after the prompt: the kernel copies console
/// text to the scan-out buffer from its tick, so the last lines may reach it a tick after
/// the serial port.
const SETTLE: Duration = Duration::from_millis(100);

/// Screendumps until two in a row agree below the status band (whose uptime changes
/// every half second), at most for a couple of seconds: the screen as it stands once the
/// kernel's deferred copy has run.
fn settled_screendump(monitor: &mut Monitor, ppm: &Path) -> Result<picture::Picture> {
    let deadline = Instant::now() + 20 * SETTLE;
    std::thread::sleep(SETTLE);
    let mut last = monitor.screendump(ppm)?;
    loop {
        std::thread::sleep(SETTLE);
        let next = monitor.screendump(ppm)?;
        let band = levitate_screen::layout(next.width, next.height)
            .band
            .map_or(0, |(top, h)| top + h);
        let below = |p: &picture::Picture| p.rgb.get(band * p.width * 3..).map(<[u8]>::to_vec);
        let same =
            (last.width, last.height) == (next.width, next.height) && below(&last) == below(&next);
        if same || Instant::now() >= deadline {
            return Ok(next);
        }
        last = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramfb_and_backends_are_read_off_qemus_help() {
        let devices = "Display devices:\nname \"ramfb\", bus System, desc \"ram framebuffer \
                       standalone device\"\nname \"virtio-gpu-device\", bus virtio-bus\n";
        assert!(has_ramfb(devices));
        assert!(!has_ramfb("name \"ramfb-x\", bus System\n"));
        let displays = "Available display backend types:\nnone\ngtk\nsdl\negl-headless\n";
        assert_eq!(window_backend(displays), Some("gtk"));
        assert_eq!(window_backend("none\nsdl\n"), Some("sdl"));
        assert_eq!(window_backend("none\negl-headless\ncurses\n"), None);
    }

    #[test]
    fn only_a_trailing_poweroff_is_held() {
        assert!(ends_the_machine("poweroff"));
        assert!(ends_the_machine("  poweroff \r"));
        assert!(!ends_the_machine("meminfo"));
        assert!(!ends_the_machine("poweroff now"));
    }

    #[test]
    fn unwritable_screenshot_paths_are_refused_up_front() {
        let dir = crate::target_dir().join("xtask-unit");
        std::fs::create_dir_all(&dir).unwrap();
        let e = check_writable(&dir.join("no-such-dir/x.png"))
            .unwrap_err()
            .0;
        assert!(e.contains("cannot write it"), "{e}");
        // A directory of that name.
        let e = check_writable(&dir).unwrap_err().0;
        assert!(e.contains("cannot write it"), "{e}");
        let ok = dir.join("writable.png");
        let _ = std::fs::remove_file(&ok);
        check_writable(&ok).unwrap();
        assert!(!ok.exists(), "the probe leaves no file behind");
    }
}
