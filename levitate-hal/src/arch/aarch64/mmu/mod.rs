//! The MMU: stage 1 descriptors (`descriptor`), a generic table walker that maps and translates
//! (`table`), and the early mapper that extends the boot tables before a frame allocator
//! exists (`early`). 4 KiB granule, 48-bit virtual addresses, four levels (ARM ARM D8).

pub mod descriptor;
pub mod table;
pub mod walk;

#[cfg(target_os = "none")]
pub mod early;
#[cfg(target_os = "none")]
pub mod tlb;

pub use descriptor::{Attributes, MemoryKind};
pub use table::{MapError, TableAccess};
