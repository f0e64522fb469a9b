//! The boot entry (boot.S: arm64 Image header, EL2 -> EL1, BSS, early tables, MMU on) and the
//! exception vector table (vectors.S). Both are assembly because they run before any Rust
//! invariant holds: with the MMU off, or with no valid stack frame.

core::arch::global_asm!(include_str!("boot.S"), options(raw));
core::arch::global_asm!(include_str!("vectors.S"), options(raw));
