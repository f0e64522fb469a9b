//! Register access through a bus, so a driver runs unchanged against real MMIO on the target
//! and against a register model in host tests.
//!
//! A driver names each register as a [`BusRegister`]: an offset, a width (`u32` for every
//! register on gs101's peripheral buses, which raise an SError on narrower accesses) and a
//! tock-registers bitfield type. `BusRegister` implements tock-registers' `Readable` and
//! `Writeable`, so driver code reads `reg.is_set(UFSTAT::TX_FULL)` exactly as it would with
//! `register_structs!` registers, and each access reaches the [`RegisterBus`] at the width
//! the register type says. [`MmioBus`] is the target's bus (one volatile load or store per
//! access); a host model implements the same trait and can refuse any access that is not the
//! width the hardware accepts.

use core::marker::PhantomData;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::{RegisterLongName, UIntLike};

/// A device's register window as the driver sees it: loads and stores at byte offsets.
pub trait RegisterBus {
    /// Reads the `T`-sized register at `offset`.
    fn read<T: UIntLike>(&self, offset: usize) -> T;
    /// Writes the `T`-sized register at `offset`.
    fn write<T: UIntLike>(&self, offset: usize, value: T);
}

/// One register of a device reached through bus `B`: `T` is the access width, `R` the
/// tock-registers bitfield description.
pub struct BusRegister<'a, B: RegisterBus, T: UIntLike, R: RegisterLongName = ()> {
    bus: &'a B,
    offset: usize,
    _marker: PhantomData<(T, R)>,
}

impl<'a, B: RegisterBus, T: UIntLike, R: RegisterLongName> BusRegister<'a, B, T, R> {
    /// The register at `offset` of `bus`.
    pub const fn new(bus: &'a B, offset: usize) -> Self {
        Self {
            bus,
            offset,
            _marker: PhantomData,
        }
    }
}

impl<B: RegisterBus, T: UIntLike, R: RegisterLongName> Readable for BusRegister<'_, B, T, R> {
    type T = T;
    type R = R;
    fn get(&self) -> T {
        self.bus.read(self.offset)
    }
}

impl<B: RegisterBus, T: UIntLike, R: RegisterLongName> Writeable for BusRegister<'_, B, T, R> {
    type T = T;
    type R = R;
    fn set(&self, value: T) {
        self.bus.write(self.offset, value)
    }
}

/// A register window mapped as Device memory: every access is one volatile load or store of
/// exactly the register's width (Device-nGnRnE, so neither merged nor split).
pub struct MmioBus {
    base: usize,
    size: usize,
}

impl MmioBus {
    /// Wraps the register window of `size` bytes mapped at virtual address `base`.
    ///
    /// # Safety
    /// `[base, base + size)` must be a device's registers mapped as Device memory for as long
    /// as this value exists, with no other driver instance using them.
    pub const unsafe fn new(base: usize, size: usize) -> Self {
        Self { base, size }
    }

    /// The virtual address of the window.
    pub fn base(&self) -> usize {
        self.base
    }

    fn address<T>(&self, offset: usize) -> usize {
        let width = core::mem::size_of::<T>();
        // A driver bug (a register table outside the window or misaligned), never input.
        assert!(
            offset.is_multiple_of(width) && offset + width <= self.size,
            "register map invariant: offset {offset:#x} width {width} outside a {:#x}-byte window",
            self.size
        );
        self.base + offset
    }
}

impl RegisterBus for MmioBus {
    fn read<T: UIntLike>(&self, offset: usize) -> T {
        let at = self.address::<T>(offset) as *const T;
        // SAFETY: `new`'s contract: the window is mapped Device memory owned by this driver;
        // `address` checked the access lies inside it and is naturally aligned.
        unsafe { core::ptr::read_volatile(at) }
    }

    fn write<T: UIntLike>(&self, offset: usize, value: T) {
        let at = self.address::<T>(offset) as *mut T;
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(at, value) }
    }
}

// SAFETY: a register window has no thread affinity; callers serialise access with a lock.
unsafe impl Send for MmioBus {}

#[cfg(test)]
pub mod model {
    //! A host register model: a device's behaviour behind [`RegisterBus`], with every access
    //! checked to be 32 bits wide and aligned, as gs101's peripheral buses require.

    use super::RegisterBus;
    use core::cell::RefCell;
    use tock_registers::UIntLike;

    /// What a modelled device does on a 32-bit read or write.
    pub trait Device {
        /// A read of the register at `offset`.
        fn read(&mut self, offset: usize) -> u32;
        /// A write to the register at `offset`.
        fn write(&mut self, offset: usize, value: u32);
    }

    /// A bus in front of a modelled device that panics (failing the test) on any access that
    /// is not exactly 32 bits wide and 4-byte aligned: on the phone those raise an SError.
    pub struct Strict32<D: Device> {
        /// The modelled device.
        pub device: RefCell<D>,
    }

    impl<D: Device> Strict32<D> {
        /// A bus in front of `device`.
        pub fn new(device: D) -> Self {
            Self {
                device: RefCell::new(device),
            }
        }
    }

    fn check<T>(offset: usize) {
        let width = core::mem::size_of::<T>();
        assert_eq!(
            width, 4,
            "{width}-byte access at {offset:#x}: gs101 peripherals take only 32-bit accesses"
        );
        assert_eq!(offset % 4, 0, "misaligned access at {offset:#x}");
    }

    /// Converts between the generic access type and u32 (only ever u32 after `check`).
    fn to_u32<T: UIntLike>(value: T) -> u32 {
        let mut out = 0u32;
        for bit in 0..32 {
            let one = !(!T::zero() << 1);
            if (value >> bit) & one == one {
                out |= 1 << bit;
            }
        }
        out
    }

    fn from_u32<T: UIntLike>(value: u32) -> T {
        let one = !(!T::zero() << 1);
        let mut out = T::zero();
        for bit in 0..32 {
            if value & (1 << bit) != 0 {
                out |= one << bit;
            }
        }
        out
    }

    impl<D: Device> RegisterBus for Strict32<D> {
        fn read<T: UIntLike>(&self, offset: usize) -> T {
            check::<T>(offset);
            from_u32(self.device.borrow_mut().read(offset))
        }

        fn write<T: UIntLike>(&self, offset: usize, value: T) {
            check::<T>(offset);
            self.device.borrow_mut().write(offset, to_u32(value));
        }
    }

    #[test]
    #[should_panic(expected = "only 32-bit accesses")]
    fn byte_access_fails() {
        struct Zero;
        impl Device for Zero {
            fn read(&mut self, _: usize) -> u32 {
                0
            }
            fn write(&mut self, _: usize, _: u32) {}
        }
        Strict32::new(Zero).write::<u8>(0x20, b'x');
    }
}
