//! Kernel command line (`/chosen/bootargs`): the options Levitate understands.
//!
//! - `loglevel=error|warn|info|debug|trace` (default info)
//! - `semihosting`: QEMU semihosting is enabled, so a panic or test failure may end the
//!   emulation with an exit status. Only xtask passes it; a phone never does.
//! - `poison`: fill freed frames with a pattern and check it on allocation (also the
//!   `poison` cargo feature).

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
        };
        for word in cmdline.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("loglevel", level)) => match parse_level(level) {
                    Some(l) => args.log_level = l,
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
            "  loglevel=debug semihosting foo=bar loglevel=loud ",
            |_| bad += 1,
        );
        levitate_hal::kassert_eq!(a.log_level, LevelFilter::Debug);
        levitate_hal::kassert!(a.semihosting);
        levitate_hal::kassert_eq!(bad, 2);
        let d = BootArgs::parse("", |_| {});
        levitate_hal::kassert_eq!(d.log_level, LevelFilter::Info);
        levitate_hal::kassert!(!d.semihosting);
        Ok(())
    }
);
