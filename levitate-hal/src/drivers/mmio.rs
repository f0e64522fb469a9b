//! The one audited wrapper for memory-mapped register blocks (after Tock's `StaticRef`): an
//! `unsafe` constructor states the obligations once; everything after it is safe.

use core::marker::PhantomData;
use core::ops::Deref;

/// A pointer to a mapped register block of type `T`.
pub struct MmioBlock<T> {
    base: usize,
    _marker: PhantomData<*const T>,
}

impl<T> MmioBlock<T> {
    /// Wraps the register block mapped at virtual address `base`.
    ///
    /// # Safety
    /// `base` must be the virtual address of a device register block laid out as `T`, mapped
    /// as Device memory for as long as this value exists, and not aliased by Rust references
    /// of any other type.
    pub const unsafe fn new(base: usize) -> Self {
        Self {
            base,
            _marker: PhantomData,
        }
    }

    /// The virtual address of the block.
    pub fn base(&self) -> usize {
        self.base
    }
}

impl<T> Deref for MmioBlock<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new`'s contract: `base` points at a live, mapped `T`. tock-registers types
        // use interior mutability with volatile accesses, so a shared reference is sound.
        unsafe { &*(self.base as *const T) }
    }
}

// SAFETY: a register block has no thread affinity; callers serialise access with a lock.
unsafe impl<T> Send for MmioBlock<T> {}
