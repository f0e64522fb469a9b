//! In-kernel tests (`ktest`): tests written next to the code they test and compiled in with the
//! `ktest` feature. Each `ktest!` places a descriptor in the `.ktest` linker section; the
//! kernel's runner walks the section, runs each test, reports it on the console and powers off.
//!
//! ```ignore
//! levitate_hal::ktest!(fn timer_is_monotonic() -> KtestResult {
//!     let a = timer::ticks();
//!     kassert!(timer::ticks() >= a);
//!     Ok(())
//! });
//! ```

/// What a test returns: `Err` carries the failure message.
pub type KtestResult = Result<(), KtestFailure>;

/// A failed assertion: where and what.
#[derive(Debug)]
pub struct KtestFailure {
    /// Source file of the failed check.
    pub file: &'static str,
    /// Line of the failed check.
    pub line: u32,
    /// What went wrong.
    pub message: KtestMessage,
}

/// The text of a failure, kept allocation-free so tests can run before the heap exists.
// Failures are rare and must not need the heap, so the values are stored inline.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum KtestMessage {
    /// A static description.
    Static(&'static str),
    /// Two values that should have been equal.
    NotEqual {
        /// The expressions compared.
        what: &'static str,
        /// `{:?}` of the left value, truncated.
        left: Snippet,
        /// `{:?}` of the right value, truncated.
        right: Snippet,
    },
}

/// A short, fixed-capacity rendering of a value for failure messages.
#[derive(Clone, Copy)]
pub struct Snippet {
    buf: [u8; 96],
    len: usize,
}

impl Snippet {
    /// Renders `value` with `{:?}`, cut at 96 bytes.
    pub fn of(value: &dyn core::fmt::Debug) -> Self {
        let mut s = Snippet {
            buf: [0; 96],
            len: 0,
        };
        let _ = core::fmt::write(&mut s, format_args!("{value:?}"));
        s
    }
}

impl core::fmt::Write for Snippet {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                return Err(core::fmt::Error);
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl core::fmt::Debug for Snippet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Truncation may split a UTF-8 sequence; show what is valid.
        let text = match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(t) => t,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        };
        f.write_str(text)
    }
}

impl core::fmt::Display for KtestFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        match &self.message {
            KtestMessage::Static(s) => f.write_str(s),
            KtestMessage::NotEqual { what, left, right } => {
                write!(f, "{what}: left {left:?}, right {right:?}")
            }
        }
    }
}

/// One registered test.
#[repr(C)]
pub struct Ktest {
    /// `module::path::name`.
    pub name: &'static str,
    /// The test body.
    pub run: fn() -> KtestResult,
}

/// Registers an in-kernel test. Compiled only with the `ktest` feature of the calling crate.
#[macro_export]
macro_rules! ktest {
    (fn $name:ident() -> KtestResult $body:block) => {
        #[cfg(feature = "ktest")]
        const _: () = {
            fn $name() -> $crate::ktest::KtestResult $body
            #[used]
            #[link_section = ".ktest"]
            static DESCRIPTOR: $crate::ktest::Ktest = $crate::ktest::Ktest {
                name: concat!(module_path!(), "::", stringify!($name)),
                run: $name,
            };
        };
    };
}

/// Fails the test unless the condition holds.
#[macro_export]
macro_rules! kassert {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::ktest::KtestFailure {
                file: file!(),
                line: line!(),
                message: $crate::ktest::KtestMessage::Static(concat!(
                    "assertion failed: ",
                    stringify!($cond)
                )),
            });
        }
    };
    ($cond:expr, $msg:literal) => {
        if !$cond {
            return Err($crate::ktest::KtestFailure {
                file: file!(),
                line: line!(),
                message: $crate::ktest::KtestMessage::Static($msg),
            });
        }
    };
}

/// Fails the test unless both values are equal.
#[macro_export]
macro_rules! kassert_eq {
    ($left:expr, $right:expr) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::ktest::KtestFailure {
                        file: file!(),
                        line: line!(),
                        message: $crate::ktest::KtestMessage::NotEqual {
                            what: concat!(stringify!($left), " == ", stringify!($right)),
                            left: $crate::ktest::Snippet::of(l),
                            right: $crate::ktest::Snippet::of(r),
                        },
                    });
                }
            }
        }
    };
}

/// Every test linked into the kernel, in link order.
#[cfg(target_os = "none")]
pub fn registered() -> &'static [Ktest] {
    extern "C" {
        static __ktest_start: u8;
        static __ktest_end: u8;
    }
    // SAFETY: the linker script gathers every `.ktest` descriptor (each a `Ktest`, placed by
    // `ktest!` with the section's natural alignment) between these two symbols, in the
    // read-only part of the image.
    unsafe {
        let start = core::ptr::addr_of!(__ktest_start).cast::<Ktest>();
        let end = core::ptr::addr_of!(__ktest_end);
        let count = (end as usize - start as usize) / core::mem::size_of::<Ktest>();
        core::slice::from_raw_parts(start, count)
    }
}
