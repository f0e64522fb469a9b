//! The kernel's memory glue, in one place: levitate-mm's mechanisms (buddy, per-CPU caches,
//! bitmap layer, mem_map, memory map) wired to the hardware, plus the page tables, heap,
//! kernel stacks, memory pressure and the boot-time setup that starts them.
//!
//! Dependencies point one way. Each module below uses only modules listed before it (and,
//! outside `mm`, only modules that never reach back into `mm`, such as `percpu` for the
//! running CPU's index and `devicetree`); `cargo test -p xtask` checks it (xtask/src/layering.rs).
//! Bottom first:
//!
//! 1. `physmem`: the memory map, the mem_map's placement, the linear map (`linear`).
//! 2. `hooks`: where the frame allocator reports to the policy above it.
//! 3. `frames`: the frame allocator (uses physmem, hooks; `percpu` for its caches).
//! 4. `paging`: the kernel's page tables, on frames.
//! 5. `heap`: the kernel heap; it grows through functions `memory` hands it.
//! 6. `stacks`: kernel stacks, on frames and paging.
//! 7. `pressure`: policy: watermarks and reclaim; calls frames and heap, and hears from
//!    frames only through the hooks it registers.
//! 8. `memory`: boot-time setup: builds the memory map, starts frames, paging, the heap's
//!    growth and pressure.
//!
//! In-kernel tests (`ktest!` blocks) are exempt: they are compiled only into the test build
//! and run with every layer up, like integration tests (a frames test runs jobs on every CPU).

pub mod frames;
pub mod heap;
pub mod hooks;
pub mod memory;
pub mod paging;
pub mod physmem;
pub mod pressure;
pub mod stacks;
