//! Hostile initramfs input and console lines: large and concatenated archives, over-long lines, control characters in `cat`, OSC sequences.

use super::harness::Tally;
use crate::qemu::RunOptions;
use crate::Result;
use std::path::Path;

/// Runs this file's scenarios on the normal build `image`.
pub fn run(_tally: &mut Tally, _image: &Path, _work: &Path, _base: &RunOptions) -> Result<()> {
    Ok(())
}
