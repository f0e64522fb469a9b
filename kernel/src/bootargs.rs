//! Kernel command line (`/chosen/bootargs`): the options Levitate understands.
//!
//! - `loglevel=error|warn|info|debug|trace` (default info)
//! - `semihosting`: QEMU semihosting is enabled, so a panic or test failure may end the
//!   emulation with an exit status. Only xtask passes it; a phone never does.
//! - `poison`: fill freed frames with a pattern and check it on allocation (also the
//!   `poison` cargo feature).
//! - `smp_timeout_ms=N`: how long a secondary CPU has to come online after PSCI CPU_ON
//!   (default 1000); one that misses it is given up and its slot never reused.
//! - `tick=HZ`: timer tick rate on every CPU, 10 to 1000 (default 100).
//! - `screen=WxH`: the mode the kernel sets up QEMU's ramfb in, each side 16 to 4096
//!   (default 1024x768); a framebuffer the firmware describes keeps its own size.

use log::LevelFilter;

/// Parsed boot arguments.
#[derive(Clone, Copy, Debug)]
pub struct BootArgs {
    /// Maximum log level.
    pub log_level: LevelFilter,
    /// QEMU semihosting may be used.
    pub semihosting: bool,
    /// Fill freed frames with a pattern and check it on allocation (use-after-free detection).
    pub poison: bool,
    /// Milliseconds a secondary CPU has to come online after CPU_ON.
    pub cpu_start_timeout_ms: u64,
    /// Timer ticks a second on each CPU.
    pub tick_hz: u32,
    /// The ramfb mode asked for (`screen=WxH`).
    pub screen: Option<(u32, u32)>,
}

/// An option the kernel did not understand, reported once the logger runs.
#[derive(Clone, Copy, Debug)]
pub struct Unknown<'a>(pub &'a str);

impl BootArgs {
    /// Parses a command line; unknown or malformed words are passed to `unknown`.
    pub fn parse<'a>(cmdline: &'a str, mut unknown: impl FnMut(Unknown<'a>)) -> Self {
        let mut args = BootArgs {
            log_level: LevelFilter::Info,
            semihosting: false,
            poison: false,
            cpu_start_timeout_ms: 1000,
            tick_hz: crate::tick::DEFAULT_HZ,
            screen: None,
        };
        for word in cmdline.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("loglevel", level)) => match parse_level(level) {
                    Some(l) => args.log_level = l,
                    None => unknown(Unknown(word)),
                },
                Some(("smp_timeout_ms", ms)) => match ms.parse::<u64>() {
                    Ok(ms) if ms <= 60_000 => args.cpu_start_timeout_ms = ms,
                    _ => unknown(Unknown(word)),
                },
                Some(("tick", hz)) => match hz.parse::<u32>() {
                    Ok(hz) if crate::tick::HZ_RANGE.contains(&hz) => args.tick_hz = hz,
                    _ => unknown(Unknown(word)),
                },
                Some(("screen", mode)) => match levitate_mm::fw_cfg::parse_mode(mode) {
                    Some(m) => args.screen = Some(m),
                    None => unknown(Unknown(word)),
                },
                None if word == "semihosting" => args.semihosting = true,
                None if word == "poison" => args.poison = true,
                _ => unknown(Unknown(word)),
            }
        }
        args
    }
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

levitate_hal::ktest!(
    fn parses_levels_and_flags() -> KtestResult {
        let mut bad = 0;
        let a = BootArgs::parse(
            "  loglevel=debug semihosting foo=bar loglevel=loud smp_timeout_ms=5 smp_timeout_ms=x ",
            |_| bad += 1,
        );
        levitate_hal::kassert_eq!(a.log_level, LevelFilter::Debug);
        levitate_hal::kassert!(a.semihosting);
        levitate_hal::kassert_eq!(bad, 3);
        levitate_hal::kassert_eq!(a.cpu_start_timeout_ms, 5);
        let d = BootArgs::parse("", |_| {});
        levitate_hal::kassert_eq!(d.log_level, LevelFilter::Info);
        levitate_hal::kassert!(!d.semihosting);
        levitate_hal::kassert_eq!(d.cpu_start_timeout_ms, 1000);
        levitate_hal::kassert_eq!(d.tick_hz, 100);
        let mut bad = 0;
        let t = BootArgs::parse("tick=250 tick=0 tick=1001 tick=9 tick=x tick=", |_| {
            bad += 1
        });
        levitate_hal::kassert_eq!(t.tick_hz, 250);
        levitate_hal::kassert_eq!(bad, 5);
        levitate_hal::kassert_eq!(BootArgs::parse("tick=10 tick=1000", |_| {}).tick_hz, 1000);
        Ok(())
    }
);
