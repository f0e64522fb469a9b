//! Helpers shared by the integration tests: the real device-tree blobs, a walk over every
//! `fdt` accessor, a deterministic PRNG, the blob mutations the fuzz tests apply, and a host
//! model of frame contents (`frame_memory`).
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

pub use levitate_mm::addr::{Pfn, PhysAddr};
pub use levitate_mm::buddy::FrameMemory;
pub use std::collections::HashMap;

pub mod frame_memory;

pub const DTBS: &[(&str, &[u8])] = &[
    (
        "qemu-virt-1g.dtb",
        include_bytes!("../dtbs/qemu-virt-1g.dtb"),
    ),
    (
        "qemu-virt-el2-gicv3-2g.dtb",
        include_bytes!("../dtbs/qemu-virt-el2-gicv3-2g.dtb"),
    ),
    ("juno.dtb", include_bytes!("../dtbs/juno.dtb")),
    (
        "fvp-base-revc.dtb",
        include_bytes!("../dtbs/fvp-base-revc.dtb"),
    ),
    (
        "bcm2837-rpi-3-b.dtb",
        include_bytes!("../dtbs/bcm2837-rpi-3-b.dtb"),
    ),
    (
        "meson-g12b-odroid-n2.dtb",
        include_bytes!("../dtbs/meson-g12b-odroid-n2.dtb"),
    ),
    (
        "gs101-oriole.dtb",
        include_bytes!("../dtbs/gs101-oriole.dtb"),
    ),
    (
        "gs101-oriole.SYNTHETIC-memory.dtb",
        include_bytes!("../dtbs/gs101-oriole.SYNTHETIC-memory.dtb"),
    ),
];

pub const QEMU_VIRT: &[u8] = include_bytes!("../dtbs/qemu-virt-1g.dtb");

/// Exercises every `fdt` accessor that a kernel might use, avoiding only the accessors that
/// panic by design when a node or property is missing (those are guarded by existence checks,
/// as a caller would do). `thorough` adds the O(n^2) interrupt lookups. Returns a value derived
/// from everything read so the work cannot be optimised away.
pub fn walk(blob: &[u8], thorough: bool) -> usize {
    let fdt = fdt::Fdt::new(blob).expect("fdt::Fdt::new rejected a blob that check accepted");
    let mut sink = fdt.total_size();
    for r in fdt.memory_reservations() {
        sink ^= r.address() as usize ^ r.size();
    }
    for s in fdt.strings() {
        sink ^= s.len();
    }
    for node in fdt.all_nodes() {
        sink ^= node.name.len();
        for p in node.properties() {
            sink ^= p.name.len() ^ p.value.len();
            sink ^= p.as_usize().unwrap_or(0) ^ p.as_str().map_or(0, str::len);
        }
        if let Some(c) = node.compatible() {
            sink ^= c.first().len();
            sink ^= c.all().map(str::len).sum::<usize>();
        }
        let cells = node.cell_sizes();
        sink ^= cells.address_cells ^ cells.size_cells;
        if let Some(reg) = node.reg() {
            for r in reg {
                sink ^= r.starting_address as usize ^ r.size.unwrap_or(0);
            }
        }
        if let Some(raw) = node.raw_reg() {
            // raw_reg never ends when both parent cells are 0; check forbids `reg` there.
            let len = node.property("reg").map_or(0, |p| p.value.len());
            let n = raw.take(len + 2).count();
            assert!(n <= len + 1, "raw_reg of {} does not terminate", node.name);
        }
        sink ^= node.interrupt_cells().unwrap_or(0);
        if thorough {
            // O(subtree) per node. The root's children() below already runs fdt's
            // skip_current_node over the whole tree.
            for child in node.children() {
                sink ^= child.name.len();
            }
            if let Some(irqs) = node.interrupts() {
                sink ^= irqs.sum::<usize>();
            }
            sink ^= node.interrupt_parent().map_or(0, |n| n.name.len());
        }
    }

    let root = fdt.root();
    for child in fdt
        .find_node("/")
        .expect("checked blobs have a root")
        .children()
    {
        sink ^= child.name.len();
    }
    sink ^= root.cell_sizes().address_cells;
    sink ^= root.properties().count();
    if root.property("model").is_some() {
        sink ^= root.model().len();
    }
    if root.property("compatible").is_some() {
        sink ^= root.compatible().first().len();
    }
    for path in [
        "/",
        "/memory",
        "/chosen",
        "/cpus",
        "/aliases",
        "/soc",
        "/cpus/cpu@0",
        "serial0",
    ] {
        sink ^= fdt.find_node(path).map_or(0, |n| n.name.len());
    }
    if thorough {
        for path in ["/does/not/exist", "nope", "/chosen/x", "", "/memory@0"] {
            sink ^= fdt.find_node(path).map_or(0, |n| n.name.len());
        }
        sink ^= fdt
            .find_compatible(&["arm,pl011", "none"])
            .map_or(0, |n| n.name.len());
        sink ^= fdt.find_phandle(1).map_or(0, |n| n.name.len());
    }
    for node in fdt.find_all_nodes("/memory") {
        sink ^= node.reg().map_or(0, Iterator::count);
    }
    if fdt.find_node("/memory").is_some() {
        let memory = fdt.memory();
        // XOR, not a sum: a checked tree may describe banks whose sizes add past usize.
        sink ^= memory.regions().fold(0, |acc, r| acc ^ r.size.unwrap_or(0));
        sink ^= memory.initial_mapped_area().map_or(0, |m| m.size);
    }
    if fdt.find_node("/chosen").is_some() {
        let chosen = fdt.chosen();
        sink ^= chosen.bootargs().map_or(0, str::len);
        sink ^= chosen.stdout().map_or(0, |n| n.name.len());
        sink ^= chosen.stdin().map_or(0, |n| n.name.len());
    }
    if let Some(cpus) = fdt.find_node("/cpus") {
        for cpu in fdt.cpus() {
            let ids = cpu.ids();
            sink ^= ids.first() ^ ids.all().count();
            sink ^= cpu.properties().count();
            let has = |name| cpu.property(name).is_some() || cpus.property(name).is_some();
            if has("clock-frequency") {
                sink ^= cpu.clock_frequency();
            }
            if has("timebase-frequency") {
                sink ^= cpu.timebase_frequency();
            }
        }
    }
    if let Some(aliases) = fdt.aliases() {
        for (name, path) in aliases.all() {
            sink ^= path.len() ^ aliases.resolve(name).map_or(0, str::len);
            sink ^= aliases.resolve_node(name).map_or(0, |n| n.name.len());
        }
    }
    sink
}

/// Runs [`walk`] and returns the panic message if `fdt` panicked.
pub fn walk_caught(blob: &[u8], thorough: bool) -> Result<usize, String> {
    catch_unwind(AssertUnwindSafe(|| walk(blob, thorough))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "<non-string panic>".into())
    })
}

/// SplitMix64: a small deterministic PRNG, so failures reproduce exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

pub fn be32(blob: &[u8], off: usize) -> usize {
    u32::from_be_bytes(blob[off..off + 4].try_into().unwrap()) as usize
}

pub fn set32(blob: &mut [u8], off: usize, v: u32) {
    blob[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// A random byte overwrite anywhere in `blob`.
pub fn mutate_anywhere(rng: &mut Rng, blob: &mut [u8]) -> String {
    let at = rng.below(blob.len());
    let byte = rng.next() as u8;
    blob[at] = byte;
    format!("byte {at:#x} = {byte:#04x}")
}

/// One random mutation of `blob`, described for failure messages.
pub fn mutate(rng: &mut Rng, blob: &mut [u8]) -> String {
    let off_struct = be32(blob, 8);
    // An earlier mutation may have broken the header; then aim at the whole blob instead.
    let size_struct = match be32(blob, 36) {
        size if size >= 4 && off_struct.saturating_add(size) <= blob.len() => size,
        _ => return mutate_anywhere(rng, blob),
    };
    match rng.below(6) {
        0 => {
            let bit = rng.below(blob.len() * 8);
            blob[bit / 8] ^= 1 << (bit % 8);
            format!("flip bit {bit}")
        }
        1 => {
            let n = 2 + rng.below(7);
            let bits: Vec<usize> = (0..n).map(|_| rng.below(blob.len() * 8)).collect();
            for &bit in &bits {
                blob[bit / 8] ^= 1 << (bit % 8);
            }
            format!("flip bits {bits:?}")
        }
        2 => {
            let at = rng.below(blob.len());
            let n = (1 + rng.below(8)).min(blob.len() - at);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            blob[at..at + n].copy_from_slice(&bytes);
            format!("overwrite {at:#x} with {bytes:02x?}")
        }
        3 => {
            // A header field set to a value near another field or to an edge value.
            let field = rng.below(10);
            let pick = be32(blob, 4 * rng.below(10)) as u32;
            let value = match rng.below(4) {
                0 => pick,
                1 => pick.wrapping_add(rng.below(17) as u32).wrapping_sub(8),
                2 => [0, 1, 16, 17, 40, u32::MAX, 0x8000_0000][rng.below(7)],
                _ => rng.next() as u32,
            };
            set32(blob, 4 * field, value);
            format!("header word {field} = {value:#x}")
        }
        _ => {
            // A structure-block word set to a token or a small length: most likely to change
            // the structure rather than a property value.
            let at = off_struct + 4 * rng.below(size_struct / 4);
            let value = match rng.below(3) {
                0 => 1 + rng.below(9) as u32,
                1 => rng.below(64) as u32,
                _ => (rng.next() % 0x1_0000) as u32,
            };
            set32(blob, at, value);
            format!("struct word at {at:#x} = {value:#x}")
        }
    }
}
