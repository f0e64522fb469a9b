//! The kernel's memory glue: the frame allocator, page tables, heap, kernel stacks, memory
//! pressure and the boot-time setup that wires levitate-mm's mechanisms to the hardware.

pub mod frames;
pub mod heap;
pub mod memory;
pub mod paging;
pub mod pressure;
pub mod stacks;
