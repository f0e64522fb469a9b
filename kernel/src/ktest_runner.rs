//! Runs the in-kernel tests (`ktest!` descriptors from every crate) and reports each on the
//! console in a format `cargo xtask test` parses:
//!
//! ```text
//! ktest: running N tests
//! ktest: <name> ... ok | FAILED: <why>
//! ktest: result: P passed, F failed
//! ```

use crate::{power, println};
use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};
use levitate_hal::ktest::registered;

const NONE: usize = usize::MAX;
static CURRENT: AtomicUsize = AtomicUsize::new(NONE);

/// Runs every registered test, prints the summary and ends the run. Only the `ktest` build
/// registers tests; the normal build never calls this.
pub fn run() -> ! {
    let tests = registered();
    println!("ktest: running {} tests", tests.len());
    let (mut passed, mut failed) = (0, 0);
    for (i, test) in tests.iter().enumerate() {
        CURRENT.store(i, Ordering::SeqCst);
        match (test.run)() {
            Ok(()) => {
                passed += 1;
                println!("ktest: {} ... ok", test.name);
            }
            Err(e) => {
                failed += 1;
                println!("ktest: {} ... FAILED: {}", test.name, e);
            }
        }
    }
    CURRENT.store(NONE, Ordering::SeqCst);
    println!("ktest: result: {passed} passed, {failed} failed");
    if failed > 0 {
        power::exit_failure(power::EXIT_TEST_FAILED);
    }
    power::exit_success()
}

/// Called by the panic handler: a panic inside a test fails that test (and ends the run).
pub fn report_panic(out: &mut impl Write) {
    let i = CURRENT.load(Ordering::SeqCst);
    if let Some(test) = registered().get(i) {
        let _ = writeln!(out, "ktest: {} ... FAILED: panicked", test.name);
    }
}
