//! `cargo xtask run`: boot the kernel Image on `qemu-system-aarch64 -M virt`, and the QEMU
//! command line shared with `cargo xtask test`. Before anything is built or booted, `run`
//! checks a `--dtb` and an `--initrd` with the kernel's own code ([`preflight`]): a tree the
//! kernel would refuse halts it before it has a console, so QEMU would sit there forever.

use crate::kernel::{self, Variant};
use crate::{bail, deps, Result};
use levitate_mm::addr::PhysAddr;
use levitate_mm::cpio::{Archive, Checksums};
use levitate_mm::lz4;
use levitate_mm::memmap::{BuildOptions, KnownRegions};
use levitate_mm::region::Region;
use lexopt::ValueExt;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// How to boot.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// CPUs.
    pub smp: u32,
    /// QEMU CPU model.
    pub cpu: String,
    /// Enter at EL2.
    pub el2: bool,
    /// GIC version.
    pub gic: Option<u8>,
    /// Device tree to pass instead of QEMU's own.
    pub dtb: Option<PathBuf>,
    /// initrd to pass; `run` packs `initramfs/` when none is given.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (xtask adds `semihosting`).
    pub bootargs: String,
    /// Release build.
    pub release: bool,
    /// Wait for gdb.
    pub gdb: bool,
    /// Extra QEMU arguments.
    pub extra: Vec<OsString>,
    /// stdin is a terminal (not a pipe).
    pub interactive: bool,
    /// `--display`: show the screen console in a QEMU window (VNC without `$DISPLAY`).
    pub display: bool,
    /// `--screenshot FILE.png`: after the piped commands, save the screen as a PNG.
    pub screenshot: Option<PathBuf>,
    /// Add QEMU's `ramfb` display device (the kernel's screen console on QEMU).
    pub ramfb: bool,
    /// How QEMU shows its display; [`Viewer::None`] unless `--display` chose one.
    pub viewer: Viewer,
    /// An HMP monitor on this unix socket instead of none (for `screendump`, `pmemsave`).
    pub monitor: Option<PathBuf>,
}

/// Where QEMU shows the display.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Viewer {
    /// Nowhere (`-display none`, or `-nographic` on a terminal).
    #[default]
    None,
    /// A window of this QEMU display backend (`gtk`, `sdl`).
    Window(String),
    /// A VNC server on 127.0.0.1, this display number (TCP port 5900 + N).
    Vnc(u16),
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            mem_mib: 1024,
            smp: 1,
            cpu: "cortex-a76".into(),
            el2: false,
            gic: None,
            dtb: None,
            initrd: None,
            bootargs: String::new(),
            release: false,
            gdb: false,
            extra: Vec::new(),
            interactive: false,
            display: false,
            screenshot: None,
            ramfb: false,
            viewer: Viewer::None,
            monitor: None,
        }
    }
}

/// Parses a size such as `128M`, `1G`, `512MiB` or `1073741824` into MiB.
pub fn parse_mem(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("bad --mem `{s}`: expected a number with K, M, G or T (e.g. 128M, 8G)")
    })?;
    let mult: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => bail!("bad --mem `{s}`: unknown unit `{unit}` (use K, M, G or T)"),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("--mem `{s}` is too large"))?;
    if bytes % (1 << 20) != 0 {
        bail!("--mem `{s}` is not a whole number of MiB");
    }
    let mib = bytes >> 20;
    if mib < 32 {
        bail!("--mem `{s}` is too small: Levitate needs at least 32M");
    }
    Ok(mib)
}

impl RunOptions {
    /// Parses `run`'s arguments: flags, then optionally `--` and arguments for QEMU.
    pub fn parse(args: Vec<OsString>) -> Result<Self> {
        use lexopt::Arg::Long;
        let mut o = Self {
            interactive: std::io::IsTerminal::is_terminal(&std::io::stdin()),
            ..Self::default()
        };
        let (ours, qemu) = match args.iter().position(|a| a == "--") {
            Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
            None => (args, Vec::new()),
        };
        o.extra = qemu;
        let parser = &mut lexopt::Parser::from_args(ours);
        while let Some(arg) = parser.next()? {
            match arg {
                Long("mem") => o.mem_mib = parse_mem(&parser.value()?.string()?)?,
                Long("smp") => {
                    let v = parser.value()?.string()?;
                    o.smp = match v.parse::<u32>() {
                        Ok(n) if (1..=512).contains(&n) => n,
                        _ => bail!("bad --smp `{v}`: expected a CPU count from 1 to 512"),
                    };
                }
                Long("cpu") => o.cpu = parser.value()?.string()?,
                Long("el2") => o.el2 = true,
                Long("gic") => {
                    let v = parser.value()?.string()?;
                    o.gic = Some(match v.as_str() {
                        "2" => 2,
                        "3" => 3,
                        _ => bail!("bad --gic `{v}`: expected 2 or 3"),
                    });
                }
                Long("dtb") => o.dtb = Some(existing_file(parser.value()?.into(), "--dtb")?),
                Long("initrd") => {
                    o.initrd = Some(existing_file(parser.value()?.into(), "--initrd")?)
                }
                Long("bootargs") => o.bootargs = parser.value()?.string()?,
                Long("release") => o.release = true,
                Long("gdb") => o.gdb = true,
                Long("display") => o.display = true,
                Long("screenshot") => o.screenshot = Some(parser.value()?.into()),
                other => bail!("{} (try `cargo xtask help`)", other.unexpected()),
            }
        }
        if o.display && o.screenshot.is_some() {
            bail!("--display and --screenshot do not go together (a screenshot is taken without a window)");
        }
        if let Some(png) = &o.screenshot {
            let is_png = png
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if !is_png {
                bail!("--screenshot {}: the file must end in .png", png.display());
            }
        }
        if o.gic == Some(2) && o.smp > 8 {
            bail!("--gic 2 supports at most 8 CPUs (got --smp {})", o.smp);
        }
        Ok(o)
    }

    /// The kernel command line QEMU passes.
    pub fn cmdline(&self) -> String {
        // Semihosting lets a panic or failed test end QEMU with a non-zero status. Only xtask
        // passes it, so an image booted on a phone never executes a semihosting trap.
        let mut s = self.bootargs.trim().to_string();
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str("semihosting");
        s
    }

    /// Console, monitor and display wiring. A terminal without a monitor socket gets
    /// `-nographic` (serial and monitor multiplexed, Ctrl-A X quits), or the same multiplexer
    /// as `-serial mon:stdio` beside a window. A pipe gets the serial port alone: QEMU's
    /// multiplexer drops input beyond its 32-byte buffer when the guest reads slower than the
    /// pipe writes, a direct backend waits. A monitor socket, when asked for, replaces the
    /// multiplexed monitor.
    fn console_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));
        match (&self.monitor, self.interactive, &self.viewer) {
            (None, true, Viewer::None) => push(&["-nographic"]),
            (None, true, _) => push(&["-serial", "mon:stdio"]),
            (None, false, _) => push(&["-monitor", "none", "-serial", "stdio"]),
            (Some(socket), _, _) => push(&[
                "-monitor",
                &format!("unix:{},server=on,wait=off", socket.display()),
                "-serial",
                "stdio",
            ]),
        }
        match (&self.viewer, self.interactive && self.monitor.is_none()) {
            (Viewer::None, true) => {} // -nographic
            (Viewer::None, false) => push(&["-display", "none"]),
            (Viewer::Window(backend), _) => push(&["-display", backend]),
            (Viewer::Vnc(n), _) => push(&["-display", "none", "-vnc", &format!("127.0.0.1:{n}")]),
        }
        args
    }

    /// The QEMU command for `image`.
    pub fn command(&self, image: &Path) -> Command {
        let mut machine = String::from("virt");
        if self.el2 {
            machine.push_str(",virtualization=on");
        }
        if let Some(g) = self.gic {
            machine.push_str(&format!(",gic-version={g}"));
        }
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-M", &machine, "-cpu", &self.cpu])
            .args(["-m", &format!("{}M", self.mem_mib)])
            .args(["-smp", &self.smp.to_string()])
            .args(self.console_args())
            .args(["-no-reboot"])
            .args(if self.ramfb {
                &["-device", "ramfb"][..]
            } else {
                &[]
            })
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-kernel")
            .arg(image)
            .args(["-append", &self.cmdline()]);
        if let Some(dtb) = &self.dtb {
            cmd.arg("-dtb").arg(dtb);
        }
        if let Some(initrd) = &self.initrd {
            cmd.arg("-initrd").arg(initrd);
        }
        if self.gdb {
            cmd.args(["-s", "-S"]);
        }
        cmd.args(&self.extra);
        cmd
    }
}

fn existing_file(path: PathBuf, flag: &str) -> Result<PathBuf> {
    if !path.is_file() {
        bail!("{flag} {}: no such file", path.display());
    }
    Ok(path)
}

/// Where QEMU's virt machine puts RAM (hw/arm/virt.c, `VIRT_MEM`).
const QEMU_VIRT_RAM_BASE: u64 = 0x4000_0000;

/// Refuses what the kernel would refuse, with the `error:` line `cargo xtask memmap` prints:
/// a `--dtb` that fails the kernel's device-tree check or memory map, and an `--initrd` that is
/// not a valid CPIO newc archive (an empty file is fine: no initramfs).
///
/// QEMU's `-dtb` replaces every memory node with one for `--mem` at `QEMU_VIRT_RAM_BASE`,
/// so the map is built with that RAM and the tree's reservations. The kernel's and QEMU's own
/// placements (image, blob, initrd) are not modelled; the RAM limits are a 48-bit CPU's (QEMU
/// cannot give a 40-bit CPU RAM past 1 TiB anyway).
pub fn preflight(opts: &RunOptions) -> Result<()> {
    if let Some(path) = &opts.dtb {
        let blob =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let ram = [Region::new(
            PhysAddr::new(QEMU_VIRT_RAM_BASE),
            opts.mem_mib << 20,
        )];
        let options = BuildOptions {
            addressable: crate::memmap::kernel_addressable(crate::memmap::DEFAULT_PA_BITS),
            ram: Some(&ram),
        };
        crate::memmap::check_tree(&blob, &KnownRegions::default(), &options)
            .map_err(|e| format!("{}: {}", path.display(), e.0))?;
    }
    if let Some(path) = &opts.initrd {
        check_initrd(path)?;
    }
    Ok(())
}

/// Parses an initrd with the kernel's CPIO reader.
fn check_initrd(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.is_empty() {
        return Ok(());
    }
    // As the kernel does (kernel/src/initramfs.rs): an LZ4-legacy initrd is decompressed
    // first, then read with the same CPIO reader and reported with the same message.
    let bytes = if lz4::is_legacy(&bytes) {
        let len = lz4::legacy_decoded_len(&bytes).map_err(|e| {
            format!(
                "{}: corrupt initramfs: {e}; the initrd is not used",
                path.display()
            )
        })?;
        let mut out = vec![0; len];
        lz4::decode_legacy(&bytes, &mut out).map_err(|e| {
            format!(
                "{}: corrupt initramfs: {e}; the initrd is not used",
                path.display()
            )
        })?;
        out
    } else {
        bytes
    };
    Archive::open(&bytes, Checksums::Verify)
        .map_err(|e| format!("{}: corrupt initramfs: {e}", path.display()))?;
    Ok(())
}

/// `cargo xtask run`.
pub fn run(opts: &RunOptions) -> Result<ExitCode> {
    preflight(opts)?;
    if let Some(png) = &opts.screenshot {
        crate::display::check_writable(png)?;
    }
    deps::ensure_qemu()?;
    if opts.display || opts.screenshot.is_some() {
        crate::display::ensure_ramfb()?;
    }
    let built = kernel::build(Variant {
        release: opts.release,
        ktest: false,
    })?;
    let mut opts = opts.clone();
    if opts.initrd.is_none() {
        opts.initrd = Some(crate::initramfs::default_archive()?);
    }
    if let Some(png) = &opts.screenshot {
        return crate::display::screenshot(&built.image, &opts, png);
    }
    if opts.display {
        opts.ramfb = true;
        opts.viewer = crate::display::choose_viewer()?;
    }
    if opts.gdb {
        eprintln!("xtask: QEMU waits for gdb on :1234; run `cargo xtask gdb` in another terminal");
    }
    eprintln!("xtask: booting (exit with `poweroff`, or Ctrl-A X)");
    let status = opts
        .command(&built.image)
        .status()
        .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => {
            eprintln!("xtask: QEMU exited with status {code}");
            ExitCode::from(code.clamp(1, 255) as u8)
        }
        None => bail!("QEMU was killed by a signal"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_sizes() {
        assert_eq!(parse_mem("1G").unwrap(), 1024);
        assert_eq!(parse_mem("128M").unwrap(), 128);
        assert_eq!(parse_mem("8g").unwrap(), 8192);
        assert_eq!(parse_mem("512MiB").unwrap(), 512);
        assert_eq!(parse_mem("1073741824").unwrap(), 1024);
        assert!(parse_mem("12X").is_err());
        assert!(parse_mem("M").is_err());
        assert!(parse_mem("16M").is_err(), "too small");
        assert!(parse_mem("1000K").is_err(), "not whole MiB");
        assert!(parse_mem("99999999999T").is_err(), "overflow");
    }

    fn parse(args: &[&str]) -> Result<RunOptions> {
        RunOptions::parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn run_flags() {
        let o = parse(&[
            "--mem",
            "128M",
            "--smp",
            "4",
            "--el2",
            "--gic",
            "3",
            "--bootargs",
            "loglevel=debug",
            "--",
            "-d",
            "int",
        ])
        .unwrap();
        assert_eq!((o.mem_mib, o.smp, o.el2, o.gic), (128, 4, true, Some(3)));
        assert_eq!(o.cmdline(), "loglevel=debug semihosting");
        assert_eq!(o.extra, [OsString::from("-d"), OsString::from("int")]);
        let cmd = o.command(Path::new("k.img"));
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args
            .windows(2)
            .any(|w| w == ["-M", "virt,virtualization=on,gic-version=3"]));
        assert!(args.ends_with(&["-d".to_string(), "int".to_string()]));
    }

    fn args_of(o: &RunOptions) -> Vec<String> {
        o.command(Path::new("k.img"))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn display_flags_and_viewers() {
        let o = parse(&["--display"]).unwrap();
        assert!(o.display && o.screenshot.is_none());
        let o = parse(&["--screenshot", "out/shot.PNG"]).unwrap();
        assert_eq!(o.screenshot.as_deref(), Some(Path::new("out/shot.PNG")));
        for bad in [
            &["--screenshot", "shot.ppm"][..],
            &["--display", "--screenshot", "a.png"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let has = |args: &[String], want: &[&str]| args.windows(want.len()).any(|w| w == want);
        // Default: no display device, serial on stdio, no monitor (a pipe) or -nographic.
        let piped = RunOptions::default();
        let a = args_of(&piped);
        assert!(!a.iter().any(|x| x == "ramfb") && has(&a, &["-display", "none"]));
        assert!(has(&a, &["-monitor", "none"]) && has(&a, &["-serial", "stdio"]));
        let tty = RunOptions {
            interactive: true,
            ..RunOptions::default()
        };
        assert!(has(&args_of(&tty), &["-nographic"]));
        // A window beside the terminal: serial and monitor multiplexed on it.
        let window = RunOptions {
            interactive: true,
            ramfb: true,
            viewer: Viewer::Window("gtk".into()),
            ..RunOptions::default()
        };
        let a = args_of(&window);
        assert!(has(&a, &["-device", "ramfb"]) && has(&a, &["-display", "gtk"]));
        assert!(has(&a, &["-serial", "mon:stdio"]) && !a.iter().any(|x| x == "-nographic"));
        let vnc = RunOptions {
            ramfb: true,
            viewer: Viewer::Vnc(3),
            ..RunOptions::default()
        };
        let a = args_of(&vnc);
        assert!(has(&a, &["-display", "none", "-vnc", "127.0.0.1:3"]));
        // A monitor socket replaces the multiplexed monitor, on a terminal too.
        let monitored = RunOptions {
            interactive: true,
            monitor: Some(PathBuf::from("/tmp/m.sock")),
            ..RunOptions::default()
        };
        let a = args_of(&monitored);
        assert!(has(
            &a,
            &["-monitor", "unix:/tmp/m.sock,server=on,wait=off"]
        ));
        assert!(has(&a, &["-serial", "stdio"]) && !a.iter().any(|x| x == "-nographic"));
    }

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = crate::target_dir().join("xtask-unit");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn preflight_refuses_what_the_kernel_would() {
        let root = crate::workspace_root();
        let good = root.join("levitate-mm/tests/dtbs/qemu-virt-1g.dtb");
        let blob = std::fs::read(&good).unwrap();
        let check = |dtb: Option<PathBuf>, initrd: Option<PathBuf>| {
            preflight(&RunOptions {
                dtb,
                initrd,
                ..RunOptions::default()
            })
        };
        assert!(check(Some(good.clone()), None).is_ok());
        // Same error line as `xtask memmap` (its `render` on the same bytes).
        let cut = temp("preflight-truncated.dtb", &blob[..blob.len() / 2]);
        let e = check(Some(cut.clone()), None).unwrap_err().0;
        assert_eq!(
            e,
            format!(
                "{}: corrupt device tree: blob truncated: header says {} bytes, buffer has {}",
                cut.display(),
                blob.len(),
                blob.len() / 2
            )
        );
        // No /memory is fine: QEMU adds its own.
        let no_memory = root.join("levitate-mm/tests/dtbs/gs101-oriole.dtb");
        assert!(check(Some(no_memory), None).is_ok());
        // A header claiming more than the kernel maps.
        let mut huge = blob.clone();
        huge[4..8].copy_from_slice(&(9u32 << 20).to_be_bytes());
        let e = check(Some(temp("preflight-huge.dtb", &huge)), None)
            .unwrap_err()
            .0;
        assert!(
            e.ends_with("device tree claims 9437184 bytes, more than the 8 MiB the kernel accepts"),
            "{e}"
        );

        let empty = temp("preflight-empty.cpio", b"");
        assert!(check(None, Some(empty)).is_ok());
        let mut trailer = b"070701".to_vec();
        for field in 0..13 {
            // namesize (field 11) = 11 for "TRAILER!!!\0"; everything else 0.
            let v: u32 = if field == 11 { 11 } else { 0 };
            trailer.extend(format!("{v:08x}").bytes());
        }
        trailer.extend(b"TRAILER!!!\0");
        while !trailer.len().is_multiple_of(4) {
            trailer.push(0);
        }
        assert!(check(None, Some(temp("preflight-trailer.cpio", &trailer))).is_ok());
        let junk = temp("preflight-junk.cpio", &[b'x'; 200]);
        let e = check(None, Some(junk.clone())).unwrap_err().0;
        assert!(
            e.starts_with(&format!("{}: corrupt initramfs: ", junk.display())),
            "{e}"
        );
        // An LZ4-legacy initrd is checked as the kernel reads it: decompressed, then parsed.
        let packed = crate::bootimg::lz4_legacy(&trailer);
        assert!(check(None, Some(temp("preflight-trailer.cpio.lz4", &packed))).is_ok());
        let cut = temp("preflight-cut.cpio.lz4", &packed[..packed.len() - 3]);
        let e = check(None, Some(cut.clone())).unwrap_err().0;
        assert!(
            e.starts_with(&format!("{}: corrupt initramfs: ", cut.display()))
                && e.ends_with("; the initrd is not used"),
            "{e}"
        );
        let junk_inside = temp(
            "preflight-junk.cpio.lz4",
            &crate::bootimg::lz4_legacy(&[b'x'; 200]),
        );
        let e = check(None, Some(junk_inside)).unwrap_err().0;
        assert!(e.contains("corrupt initramfs: bad magic"), "{e}");
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        assert!(parse(&["--gic", "4"])
            .unwrap_err()
            .0
            .contains("expected 2 or 3"));
        assert!(parse(&["--smp", "0"]).unwrap_err().0.contains("--smp"));
        assert!(parse(&["--dtb", "/no/such.dtb"])
            .unwrap_err()
            .0
            .contains("no such file"));
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--gic", "2", "--smp", "16"]).is_err());
    }
}
