//! Portable memory management for Levitate: typed addresses, the device-tree checks and memory
//! map, and (later) the frame allocators. No unsafe code and no hardware: everything here is
//! built and tested on the host.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod addr;
pub mod bitmap;
pub mod buddy;
pub mod cpio;
pub mod dtb;
pub mod early;
pub mod fw_cfg;
pub mod lz4;
pub mod mem_map;
pub mod memmap;
pub mod pcp;
pub mod region;
pub mod report;
pub mod slab;
#[cfg(test)]
mod test_support;
