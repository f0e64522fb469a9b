//! The kernel's virtual address map (48-bit, TTBR1 half). One place for every fixed region.
//!
//! ```text
//! 0xffff_0000_0000_0000 .. 0xffff_8000_0000_0000  linear map: VA = LINEAR_BASE + PA (128 TiB)
//! 0xffff_8000_0000_0000 .. 0xffff_8100_0000_0000  kernel heap (grows on demand; memory issues)
//! 0xffff_9000_0000_0000 .. 0xffff_9001_0000_0000  screen: the scan-out framebuffer (4 GiB)
//! 0xffff_a000_0000_0000 .. 0xffff_a100_0000_0000  kernel stacks with guard pages
//! 0xffff_f000_0000_0000 .. 0xffff_f100_0000_0000  MMIO window (ioremap), Device-nGnRE
//! 0xffff_f100_0000_0000 .. 0xffff_f200_0000_0000  boot window: the bootloader's device tree
//! 0xffff_ffff_8000_0000 .. + image size            kernel image (linker.ld: KIMAGE_VBASE)
//! ```
//! The lower half (TTBR0) holds only the boot identity map and is switched off once the kernel
//! runs at its link address, so a null or user-half pointer faults.

use crate::{PhysAddr, VirtAddr};

/// Start of the linear map of physical memory.
pub const LINEAR_BASE: u64 = 0xffff_0000_0000_0000;
/// Size of the linear map window.
pub const LINEAR_SIZE: u64 = 0x0000_8000_0000_0000;
/// Start of the kernel heap region.
pub const HEAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Size of the kernel heap region.
pub const HEAP_SIZE: u64 = 0x0000_0100_0000_0000;
/// Start of the screen window: the framebuffer the display scans out, mapped once with an
/// attribute fit for scan-out (kernel/src/screen/).
pub const SCREEN_BASE: u64 = 0xffff_9000_0000_0000;
/// Size of the screen window (the largest framebuffer the kernel maps).
pub const SCREEN_SIZE: u64 = 0x0000_0001_0000_0000;
/// Start of the kernel stack region.
pub const STACKS_BASE: u64 = 0xffff_a000_0000_0000;
/// Start of the MMIO window.
pub const MMIO_BASE: u64 = 0xffff_f000_0000_0000;
/// Size of the MMIO window.
pub const MMIO_SIZE: u64 = 0x0000_0100_0000_0000;
/// Start of the boot window (read-only views of boot-time data outside the linear map).
pub const BOOT_WINDOW_BASE: u64 = 0xffff_f100_0000_0000;
/// Size of the boot window.
pub const BOOT_WINDOW_SIZE: u64 = 0x0000_0100_0000_0000;
/// Link address of the kernel image (must match linker.ld and boot.S).
pub const KIMAGE_VBASE: u64 = 0xffff_ffff_8000_0000;

/// The linear-map address of a physical address, if it lies inside the window.
pub fn phys_to_linear(pa: PhysAddr) -> Option<VirtAddr> {
    (pa.as_u64() < LINEAR_SIZE).then(|| VirtAddr::new(LINEAR_BASE + pa.as_u64()))
}

/// The linear-map address of physical `[pa, pa + size)`, if the whole range (its end, not
/// only its start) lies inside the window.
pub fn phys_range_to_linear(pa: PhysAddr, size: u64) -> Option<VirtAddr> {
    let end = pa.as_u64().checked_add(size)?;
    (pa.as_u64() < LINEAR_SIZE && end <= LINEAR_SIZE)
        .then(|| VirtAddr::new(LINEAR_BASE + pa.as_u64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ranges_are_checked_at_their_end() {
        let top = LINEAR_SIZE - 0x1000;
        assert!(phys_range_to_linear(PhysAddr::new(top), 0x1000).is_some());
        assert_eq!(phys_range_to_linear(PhysAddr::new(top), 0x2000), None);
        assert_eq!(phys_range_to_linear(PhysAddr::new(u64::MAX), 2), None);
        assert_eq!(phys_range_to_linear(PhysAddr::new(LINEAR_SIZE), 0), None);
    }

    #[test]
    fn linear_addresses() {
        let pa = PhysAddr::new(0x4000_0000);
        let va = phys_to_linear(pa).unwrap();
        assert_eq!(va.as_u64(), 0xffff_0000_4000_0000);
        assert_eq!(phys_to_linear(PhysAddr::new(LINEAR_SIZE)), None);
    }

    #[test]
    fn regions_do_not_overlap() {
        let regions = [
            (LINEAR_BASE, LINEAR_SIZE),
            (HEAP_BASE, 0x100_0000_0000),
            (SCREEN_BASE, SCREEN_SIZE),
            (STACKS_BASE, 0x100_0000_0000),
            (MMIO_BASE, MMIO_SIZE),
            (BOOT_WINDOW_BASE, BOOT_WINDOW_SIZE),
        ];
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                assert!(
                    a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0,
                    "{a:x?} overlaps {b:x?}"
                );
            }
            assert!(a.0 + a.1 <= KIMAGE_VBASE);
        }
    }
}
