//! MMIO device drivers. Each register block is a tock-registers `register_structs!`
//! transcription of its data sheet; `mmio::MmioBlock` is the one audited way to reach one.

pub mod bus;
pub mod exynos_uart;
#[cfg(target_os = "none")]
pub mod fw_cfg;
pub mod gic;
pub mod mmio;
pub mod pl011;
pub mod samsung_wdt;
