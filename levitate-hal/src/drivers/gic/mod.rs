//! The Arm Generic Interrupt Controller, versions 2 and 3: the register blocks (`v2`, `v3`),
//! the redistributor search (pure, host-tested), and one `Gic` the kernel drives without caring
//! which version the device tree described.
//!
//! Concurrency: registers the IRQ path touches are either banked per CPU (IAR/EOIR, the GICv2
//! SGI/PPI enable word, a GICv3 CPU's own redistributor) or write-1-to-set/clear
//! (ISENABLER/ICENABLER/ISPENDR), so any CPU may use them at any time without a lock.
//! Read-modify-write registers (priorities, targets, configuration) are written only by
//! `init_distributor`, `init_cpu` and `configure`, which run in ordinary kernel context under
//! `config_lock` (never from an interrupt handler).

pub mod v2;
pub mod v3;

/// The devicetree `compatible` strings of a GICv2 (Linux binding arm,gic.yaml).
pub const COMPATIBLE_V2: &[&str] = &["arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic"];
/// The devicetree `compatible` string of a GICv3 (Linux binding arm,gic-v3.yaml).
pub const COMPATIBLE_V3: &[&str] = &["arm,gic-v3"];

/// Priority every interrupt gets: the middle of the range, so firmware's and a future
/// kernel's more urgent ones fit above it. Lower is more urgent (IHI 0069 4.8).
pub const DEFAULT_PRIORITY: u8 = 0xa0;

/// MPIDR_EL1's affinity fields in the layout of GICR_TYPER[63:32] (Aff3.Aff2.Aff1.Aff0).
pub fn mpidr_to_typer_affinity(mpidr: u64) -> u32 {
    let aff3 = (mpidr >> 32) & 0xff;
    let aff210 = mpidr & 0xff_ffff;
    ((aff3 << 24) | aff210) as u32
}

/// MPIDR_EL1's affinity in GICD_IROUTER's layout (Aff3 at 39:32, Aff2.Aff1.Aff0 at 23:0).
pub fn mpidr_to_irouter(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// Where a redistributor search looks: each region's mapped length and the stride between
/// redistributors (`redistributor-stride`, or 0 to go by GICR_TYPER.VLPIS).
#[derive(Clone, Copy, Debug)]
pub struct RedistLayout {
    /// Bytes between redistributors, 0 for "two frames, or four with VLPIS".
    pub stride: usize,
}

/// Finds the offset of the redistributor whose GICR_TYPER affinity is `affinity` in a region
/// of `len` bytes, reading GICR_TYPER at an offset with `typer` (IHI 0069 9.1: redistributors
/// are contiguous, each GICR_TYPER says whether it is the last of its region).
pub fn find_redistributor(
    len: usize,
    layout: RedistLayout,
    affinity: u32,
    mut typer: impl FnMut(usize) -> u64,
) -> Option<usize> {
    const LAST: u64 = 1 << 4;
    const VLPIS: u64 = 1 << 1;
    let mut at: usize = 0;
    while at.checked_add(2 * v3::FRAME_SIZE)? <= len {
        let t = typer(at);
        if (t >> 32) as u32 == affinity {
            return Some(at);
        }
        if t & LAST != 0 {
            return None;
        }
        let step = match layout.stride {
            0 if t & VLPIS != 0 => 4 * v3::FRAME_SIZE,
            0 => 2 * v3::FRAME_SIZE,
            s => s,
        };
        at += step;
    }
    None
}

/// Which word and bit of a one-bit-per-ID register array holds `id`.
pub fn bit_of(id: u32) -> (usize, u32) {
    ((id / 32) as usize, 1 << (id % 32))
}

#[cfg(target_os = "none")]
mod imp;
#[cfg(target_os = "none")]
pub use imp::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_layouts() {
        assert_eq!(mpidr_to_typer_affinity(0x8000_0000), 0);
        assert_eq!(mpidr_to_typer_affinity(0x0000_00ab_8001_0203), 0xab01_0203);
        assert_eq!(mpidr_to_irouter(0x0000_00ab_8001_0203), 0xab_0001_0203);
    }

    fn fake(typers: &[u64], frames_each: usize) -> impl FnMut(usize) -> u64 + '_ {
        move |off| typers[off / (frames_each * v3::FRAME_SIZE)]
    }

    #[test]
    fn redistributor_search() {
        let aff = |a: u64| a << 32;
        let typers = [aff(0), aff(1), aff(2), aff(3) | 1 << 4];
        let len = 4 * 2 * v3::FRAME_SIZE;
        let l = RedistLayout { stride: 0 };
        assert_eq!(
            find_redistributor(len, l, 2, fake(&typers, 2)),
            Some(0x40000)
        );
        assert_eq!(find_redistributor(len, l, 7, fake(&typers, 2)), None);
        // A short mapping stops the search before it reads past the end.
        assert_eq!(find_redistributor(0x30000, l, 3, fake(&typers, 2)), None);
        // GICv4 redistributors (VLPIS) take four frames each.
        let v4 = [aff(0) | 2, aff(1) | 2 | 1 << 4];
        assert_eq!(
            find_redistributor(8 * v3::FRAME_SIZE, l, 1, fake(&v4, 4)),
            Some(0x40000)
        );
        // An explicit stride wins.
        let s = RedistLayout { stride: 0x40000 };
        assert_eq!(
            find_redistributor(len * 2, s, 3, fake(&typers, 4)),
            Some(0xc0000)
        );
        // No Last bit anywhere: the region's end bounds the search.
        let endless = [aff(0), aff(0), aff(0)];
        assert_eq!(
            find_redistributor(3 * 0x20000, l, 5, fake(&endless, 2)),
            None
        );
    }

    #[test]
    fn bits() {
        assert_eq!(bit_of(0), (0, 1));
        assert_eq!(bit_of(33), (1, 2));
        assert_eq!(bit_of(1019), (31, 1 << 27));
    }
}
