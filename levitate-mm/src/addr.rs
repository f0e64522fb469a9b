//! Typed addresses: physical and virtual addresses and page frame numbers never travel as bare
//! integers across an API boundary.

use core::fmt;

/// Size of the base page (4 KiB granule).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

/// A virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(u64);

/// A physical page frame number (physical address >> 12).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Pfn(u64);

macro_rules! address_ops {
    ($t:ident, $prefix:literal) => {
        impl $t {
            /// Wraps a raw address.
            #[inline]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }
            /// The raw address.
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// The raw address as a `usize` (addresses fit a `usize` on every target we build).
            #[inline]
            pub const fn as_usize(self) -> usize {
                self.0 as usize
            }
            /// Rounds down to a multiple of `align` (a power of two).
            #[inline]
            pub const fn align_down(self, align: u64) -> Self {
                debug_assert!(align.is_power_of_two());
                Self(self.0 & !(align - 1))
            }
            /// Rounds up to a multiple of `align` (a power of two); `None` on overflow.
            pub const fn checked_align_up(self, align: u64) -> Option<Self> {
                debug_assert!(align.is_power_of_two());
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }
            /// Whether the address is a multiple of `align` (a power of two).
            #[inline]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Adds a byte offset; `None` on overflow.
            #[inline]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// The offset of this address within its page.
            #[inline]
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
        }

        impl core::ops::Add<u64> for $t {
            type Output = Self;
            fn add(self, rhs: u64) -> Self {
                Self(self.0 + rhs)
            }
        }

        impl core::ops::Sub<$t> for $t {
            type Output = u64;
            fn sub(self, rhs: $t) -> u64 {
                self.0 - rhs.0
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_ops!(PhysAddr, "PhysAddr");
address_ops!(VirtAddr, "VirtAddr");

impl PhysAddr {
    /// The frame that contains this address.
    #[inline]
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl VirtAddr {
    /// A pointer-sized integer view, for code that must hand the address to hardware or asm.
    pub fn from_usize(raw: usize) -> Self {
        Self(raw as u64)
    }
}

impl Pfn {
    /// Wraps a raw frame number.
    #[inline]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw frame number.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The physical address of the first byte of the frame.
    #[inline]
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        let a = PhysAddr::new(0x4000_1234);
        assert_eq!(a.align_down(PAGE_SIZE), PhysAddr::new(0x4000_1000));
        assert_eq!(
            a.checked_align_up(PAGE_SIZE),
            Some(PhysAddr::new(0x4000_2000))
        );
        assert!(!a.is_aligned(PAGE_SIZE));
        assert_eq!(PhysAddr::new(u64::MAX).checked_align_up(PAGE_SIZE), None);
        assert_eq!(a.pfn(), Pfn::new(0x40001));
        assert_eq!(a.pfn().addr(), PhysAddr::new(0x4000_1000));
        assert_eq!(a.page_offset(), 0x234);
    }
}
