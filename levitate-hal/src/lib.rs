//! Levitate's hardware layer: everything that touches the CPU or a device.
//!
//! Convention (after the rust-raspberrypi-OS-tutorials): generic interfaces live at the crate
//! root (`console`, `layout`, `ksyms`, `ktest`), the aarch64 half in `arch::aarch64`, MMIO
//! devices in `drivers`. Pure logic (ESR decoding, descriptor encoding, symbol tables) compiles
//! on every target so `cargo test` checks it on the host; the parts that execute aarch64
//! instructions or touch MMIO compile only for the bare-metal target (`target_os = "none"`).
#![cfg_attr(not(test), no_std)]
// In-kernel tests return `KtestResult`, whose failure holds its message inline (no heap).
#![cfg_attr(feature = "ktest", allow(clippy::result_large_err))]

pub mod arch;
pub mod backtrace;
pub mod console;
pub mod drivers;
pub mod irq;
pub mod ksyms;
pub mod ktest;
pub mod layout;
pub mod stacks;
pub mod sync;

pub use levitate_mm::addr::{PhysAddr, VirtAddr};
