//! Helpers shared by the unit tests of several modules (compiled only for tests).

pub(crate) use crate::addr::{Pfn, PhysAddr};
pub(crate) use crate::buddy::FrameMemory;
pub(crate) use std::collections::HashMap;

// Not every test uses every helper.
#[allow(dead_code)]
#[path = "../tests/common/frame_memory.rs"]
pub(crate) mod frame_memory;
