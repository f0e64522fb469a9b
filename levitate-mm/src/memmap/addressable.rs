//! Which physical addresses RAM may occupy: below the CPU's physical address range
//! (ID_AA64MMFR0_EL1.PARange) and inside the kernel's linear map. RAM beyond either is dropped,
//! or clipped when only its tail is beyond, with a warning, before anything is placed in it:
//! a frame the CPU cannot address faults (an address size fault, ARM ARM D8.3) the first time
//! it is touched, and a frame outside the linear map has no kernel address at all.

use crate::region::Region;

/// The bound a piece of RAM ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The CPU implements this many physical address bits (`1 << bits` is the first address
    /// it cannot reach).
    PhysAddrBits(u8),
    /// The kernel's linear map covers physical addresses below this one.
    LinearMap(u64),
}

impl Limit {
    /// The first physical address past the limit.
    pub const fn end(self) -> u64 {
        match self {
            Limit::PhysAddrBits(bits) if bits >= 64 => u64::MAX,
            Limit::PhysAddrBits(bits) => 1 << bits,
            Limit::LinearMap(end) => end,
        }
    }
}

/// The physical address window RAM must lie in to be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addressable {
    /// Physical address bits the CPU implements (decode ID_AA64MMFR0_EL1.PARange with
    /// [`Self::pa_bits_from_parange`]); 64 means no limit.
    pub pa_bits: u8,
    /// One past the highest physical address the kernel's linear map reaches; `u64::MAX`
    /// means no limit (the last byte of the address space is never RAM: regions end there).
    pub linear_end: u64,
}

impl Default for Addressable {
    fn default() -> Self {
        Self::ANY
    }
}

impl Addressable {
    /// No limit beyond the 64-bit address space (host tools that model no particular CPU).
    pub const ANY: Self = Self {
        pa_bits: 64,
        linear_end: u64::MAX,
    };

    /// The number of physical address bits an ID_AA64MMFR0_EL1.PARange value (bits `[3:0]`)
    /// stands for (ARM ARM D19.2, ID_AA64MMFR0_EL1: 0b0000 32 bits ... 0b0110 52 bits with
    /// FEAT_LPA, 0b0111 56 bits with FEAT_D128). `None` for values the architecture reserves.
    pub const fn pa_bits_from_parange(parange: u8) -> Option<u8> {
        match parange {
            0 => Some(32),
            1 => Some(36),
            2 => Some(40),
            3 => Some(42),
            4 => Some(44),
            5 => Some(48),
            6 => Some(52),
            7 => Some(56),
            _ => None,
        }
    }

    /// The tighter bound, the CPU's when both are equal; `None` when nothing below 2^64
    /// limits RAM.
    pub const fn limit(&self) -> Option<Limit> {
        let cpu = Limit::PhysAddrBits(self.pa_bits);
        let linear = Limit::LinearMap(self.linear_end);
        let tighter = if cpu.end() <= linear.end() {
            cpu
        } else {
            linear
        };
        if tighter.end() == u64::MAX {
            None
        } else {
            Some(tighter)
        }
    }

    /// The part of `region` below the limit (possibly empty), and the limit when it cut
    /// something off.
    pub fn clip(&self, region: Region) -> (Region, Option<Limit>) {
        match self.limit() {
            Some(limit) if region.end() > limit.end() => (
                Region::from_bounds(region.base.as_u64(), limit.end()),
                Some(limit),
            ),
            _ => (region, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u64, b: u64) -> Region {
        Region::from_bounds(a, b)
    }

    #[test]
    fn parange_values() {
        let decoded: [Option<u8>; 9] =
            core::array::from_fn(|i| Addressable::pa_bits_from_parange(i as u8));
        assert_eq!(
            decoded,
            [
                Some(32),
                Some(36),
                Some(40),
                Some(42),
                Some(44),
                Some(48),
                Some(52),
                Some(56),
                None
            ]
        );
        assert_eq!(Addressable::pa_bits_from_parange(0xf), None);
    }

    #[test]
    fn tighter_limit_wins() {
        let linear = 1 << 47;
        let a = |pa_bits| Addressable {
            pa_bits,
            linear_end: linear,
        };
        assert_eq!(a(40).limit(), Some(Limit::PhysAddrBits(40)));
        assert_eq!(a(47).limit(), Some(Limit::PhysAddrBits(47)));
        assert_eq!(a(48).limit(), Some(Limit::LinearMap(linear)));
        assert_eq!(a(64).limit(), Some(Limit::LinearMap(linear)));
        assert_eq!(Addressable::ANY.limit(), None);
    }

    #[test]
    fn clip_looks_at_the_end() {
        let a = Addressable {
            pa_bits: 40,
            linear_end: 1 << 47,
        };
        let tib = 1u64 << 40;
        // Wholly below, ending exactly at the limit, straddling, wholly above.
        assert_eq!(a.clip(r(0, 0x1000)), (r(0, 0x1000), None));
        assert_eq!(a.clip(r(tib - 0x1000, tib)), (r(tib - 0x1000, tib), None));
        let cut = Some(Limit::PhysAddrBits(40));
        assert_eq!(
            a.clip(r(tib - 0x1000, tib + 1)),
            (r(tib - 0x1000, tib), cut)
        );
        assert!(a.clip(r(tib, tib + 0x1000)).0.is_empty());
        assert_eq!(a.clip(r(tib, tib + 0x1000)).1, cut);
        assert!(a.clip(r(u64::MAX - 1, u64::MAX)).0.is_empty());
        let any = Addressable::ANY;
        assert_eq!(any.clip(r(u64::MAX - 1, u64::MAX)).1, None);
    }
}
