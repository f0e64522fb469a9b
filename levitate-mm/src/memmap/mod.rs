//! The physical memory map built from the device tree (in progress).
