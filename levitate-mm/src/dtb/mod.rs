//! Device-tree handling: [`check`] validates a flattened device tree blob before anything
//! else (in particular the `fdt` crate) is allowed to parse it.

pub mod check;
pub mod devices;
pub mod framebuffer;
pub mod interrupts;
pub mod pack;
pub mod tree;
