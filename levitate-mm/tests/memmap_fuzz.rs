//! Fuzz-style tests of `MemoryMap::from_fdt` on damaged real device trees: truncated blobs,
//! random bit flips, values of the properties the map reads overwritten with edge values,
//! and those properties shortened or lengthened (the blob re-laid out so it stays well
//! formed). Whenever `dtb::check::check` accepts a blob, `from_fdt` must return `Ok` with a
//! map that passes `validate()`, or `Err`: a panic (caught with `catch_unwind`) fails the test
//! and names the mutation. Deterministic (SplitMix64), so failures reproduce.

use levitate_mm::addr::PhysAddr;
use levitate_mm::dtb::check::check;
use levitate_mm::memmap::{KnownRegions, MemoryMap};
use levitate_mm::region::Region;
use std::panic::{catch_unwind, AssertUnwindSafe};

const BLOBS: &[(&str, &[u8])] = &[
    ("qemu-virt-1g", include_bytes!("dtbs/qemu-virt-1g.dtb")),
    ("qemu-virt-128m", include_bytes!("dtbs/qemu-virt-128m.dtb")),
    ("qemu-virt-8g", include_bytes!("dtbs/qemu-virt-8g.dtb")),
    (
        "qemu-virt-el2-gicv3-2g",
        include_bytes!("dtbs/qemu-virt-el2-gicv3-2g.dtb"),
    ),
    ("juno", include_bytes!("dtbs/juno.dtb")),
    ("fvp-base-revc", include_bytes!("dtbs/fvp-base-revc.dtb")),
    (
        "bcm2837-rpi-3-b",
        include_bytes!("dtbs/bcm2837-rpi-3-b.dtb"),
    ),
    (
        "meson-g12b-odroid-n2",
        include_bytes!("dtbs/meson-g12b-odroid-n2.dtb"),
    ),
    (
        "meson-g12b-odroid-n2.SYNTHETIC-alloc-ranges",
        include_bytes!("dtbs/meson-g12b-odroid-n2.SYNTHETIC-alloc-ranges.dtb"),
    ),
    ("gs101-oriole", include_bytes!("dtbs/gs101-oriole.dtb")),
    (
        "gs101-oriole.SYNTHETIC-memory",
        include_bytes!("dtbs/gs101-oriole.SYNTHETIC-memory.dtb"),
    ),
];

const NONE: KnownRegions = KnownRegions {
    dtb: None,
    kernel: None,
};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A 32-bit cell value that tends to hit edges.
    fn cell(&mut self) -> u32 {
        match self.below(8) {
            0 => 0,
            1 => 1,
            2 => u32::MAX,
            3 => 0x8000_0000,
            4 => 0x1000,
            5 => u32::MAX - self.below(0x2000) as u32,
            _ => self.next() as u32,
        }
    }
}

fn be32(blob: &[u8], at: usize) -> usize {
    u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize
}

fn set32(blob: &mut [u8], at: usize, value: usize) {
    blob[at..at + 4].copy_from_slice(&(value as u32).to_be_bytes());
}

/// Runs `from_fdt` on `blob` if `check` accepts it. A panic, or a map that fails
/// `validate()`, fails the test with `what` in the message. Returns whether `check` accepted.
fn survives(blob: &[u8], known: &KnownRegions, what: &dyn Fn() -> String) -> bool {
    if check(blob).is_err() {
        return false;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let Ok(fdt) = fdt::Fdt::new(blob) else {
            return Ok(0);
        };
        match MemoryMap::from_fdt(&fdt, known) {
            Ok(map) => {
                // Every message must format; totals must add up.
                let lines: usize = map.warnings().iter().map(|w| w.to_string().len()).sum();
                let t = map.totals();
                assert_eq!(t.memory, t.reserved + t.usable);
                map.validate().map(|()| lines).map_err(|e| e.to_string())
            }
            Err(e) => Ok(e.to_string().len()),
        }
    }));
    match outcome {
        Ok(Ok(_)) => true,
        Ok(Err(violation)) => panic!("invalid map ({}): {violation}", what()),
        Err(_) => panic!("from_fdt panicked ({})", what()),
    }
}

/// A property in the structure block: its name, where its value starts, its length, and
/// whether the memory map reads it.
struct Prop {
    value_at: usize,
    len: usize,
    relevant: bool,
}

/// Lists the properties of a well-formed blob (as dtc lays them out).
fn properties(blob: &[u8]) -> Vec<Prop> {
    let off_struct = be32(blob, 8);
    let off_strings = be32(blob, 12);
    let end = off_struct + be32(blob, 36);
    let mut at = off_struct;
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    while at + 4 <= end {
        let token = be32(blob, at);
        at += 4;
        match token {
            1 => {
                let name_end = at + blob[at..].iter().position(|&b| b == 0).unwrap();
                stack.push(String::from_utf8_lossy(&blob[at..name_end]).into_owned());
                at = (name_end + 1).next_multiple_of(4);
            }
            2 => {
                stack.pop();
            }
            3 => {
                let len = be32(blob, at);
                let nameoff = off_strings + be32(blob, at + 4);
                let name_end = nameoff + blob[nameoff..].iter().position(|&b| b == 0).unwrap();
                let name = String::from_utf8_lossy(&blob[nameoff..name_end]).into_owned();
                let node = stack.last().map_or("", String::as_str);
                let parent = stack.len().checked_sub(2).map_or("", |i| stack[i].as_str());
                let relevant = match stack.len() {
                    1 => name == "#address-cells" || name == "#size-cells",
                    2 => ["memory", "chosen", "reserved-memory"]
                        .iter()
                        .any(|n| node.starts_with(n)),
                    3 => parent.starts_with("reserved-memory"),
                    _ => false,
                };
                out.push(Prop {
                    value_at: at + 8,
                    len,
                    relevant,
                });
                at = (at + 8 + len).next_multiple_of(4);
            }
            4 => {}
            _ => break,
        }
    }
    out
}

/// A copy of `blob` with one property's value replaced by `value` (of any length), the
/// structure block and header adjusted so the blob stays well formed.
fn resize(blob: &[u8], prop: &Prop, value: &[u8]) -> Vec<u8> {
    let old = prop.len.next_multiple_of(4);
    let new = value.len().next_multiple_of(4);
    let mut out = blob[..prop.value_at].to_vec();
    out.extend_from_slice(value);
    out.resize(prop.value_at + new, 0);
    out.extend_from_slice(&blob[prop.value_at + old..]);
    set32(&mut out, prop.value_at - 8, value.len());
    let delta = |v: usize| v + new - old;
    set32(&mut out, 4, delta(be32(blob, 4))); // totalsize
    set32(&mut out, 12, delta(be32(blob, 12))); // off_dt_strings (after the structure block)
    set32(&mut out, 36, delta(be32(blob, 36))); // size_dt_struct
    out
}

#[test]
fn real_trees_are_laid_out_as_the_mutations_expect() {
    for (name, blob) in BLOBS {
        check(blob).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            be32(blob, 12) > be32(blob, 8),
            "{name}: strings after structure"
        );
        assert!(properties(blob).iter().any(|p| p.relevant), "{name}");
        assert!(survives(blob, &NONE, &|| format!("{name} unmodified")));
    }
}

#[test]
fn truncated_trees() {
    for (name, blob) in BLOBS {
        let step = (blob.len() / 200).max(1);
        for len in (0..blob.len())
            .step_by(step)
            .chain(blob.len() - 64..blob.len())
        {
            let cut = &blob[..len];
            assert!(!survives(cut, &NONE, &|| format!("{name} cut to {len}")));
            // The same cut with a header that claims it: mostly rejected, never a panic.
            if len >= 40 {
                let mut fixed = cut.to_vec();
                set32(&mut fixed, 4, len);
                let strings_at = be32(&fixed, 12).min(len);
                let strings_size = be32(&fixed, 32).min(len - strings_at);
                set32(&mut fixed, 32, strings_size);
                let struct_at = be32(&fixed, 8).min(len);
                let struct_size = be32(&fixed, 36).min(len - struct_at);
                set32(&mut fixed, 36, struct_size);
                survives(&fixed, &NONE, &|| {
                    format!("{name} cut to {len}, header fixed")
                });
            }
        }
    }
}

#[test]
fn bit_flipped_trees() {
    let mut rng = Rng(0x6d65_6d6d_6170);
    for (name, blob) in BLOBS {
        for round in 0..600 {
            let mut b = blob.to_vec();
            let flips: Vec<usize> = (0..1 + rng.below(8))
                .map(|_| rng.below(b.len() * 8))
                .collect();
            for &bit in &flips {
                b[bit / 8] ^= 1 << (bit % 8);
            }
            survives(&b, &NONE, &|| {
                format!("{name} round {round}: flip bits {flips:?}")
            });
        }
    }
}

#[test]
fn memory_map_properties_overwritten() {
    let mut rng = Rng(0x7265_7365_7276_6564);
    let mut accepted = 0;
    let mut total = 0;
    for (name, blob) in BLOBS {
        let props = properties(blob);
        let relevant: Vec<&Prop> = props.iter().filter(|p| p.relevant && p.len > 0).collect();
        let rsvmap = be32(blob, 16);
        for round in 0..1500 {
            let mut b = blob.to_vec();
            let what = if rng.below(10) == 0 {
                // A /memreserve/ entry (or the terminator) word.
                let at = rsvmap + 4 * rng.below(8);
                let v = rng.cell();
                set32(&mut b, at, v as usize);
                format!("rsvmap word at {at:#x} = {v:#x}")
            } else {
                let p = relevant[rng.below(relevant.len())];
                let mut changes = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    if p.len >= 4 && rng.below(4) != 0 {
                        let at = p.value_at + 4 * rng.below(p.len / 4);
                        let v = rng.cell();
                        set32(&mut b, at, v as usize);
                        changes.push(format!("cell at {at:#x} = {v:#x}"));
                    } else {
                        let at = p.value_at + rng.below(p.len);
                        b[at] = rng.next() as u8;
                        changes.push(format!("byte at {at:#x} = {:#04x}", b[at]));
                    }
                }
                changes.join(", ")
            };
            total += 1;
            if survives(&b, &NONE, &|| format!("{name} round {round}: {what}")) {
                accepted += 1;
            }
        }
    }
    // The mutations must mostly reach from_fdt, not stop at check.
    assert!(accepted * 2 > total, "only {accepted} of {total} accepted");
}

#[test]
fn memory_map_properties_resized() {
    let mut rng = Rng(0x7265_7369_7a65);
    let mut accepted = 0;
    let mut total = 0;
    for (name, blob) in BLOBS {
        let props = properties(blob);
        let relevant: Vec<&Prop> = props.iter().filter(|p| p.relevant).collect();
        for round in 0..500 {
            let p = relevant[rng.below(relevant.len())];
            let mut value = blob[p.value_at..p.value_at + p.len].to_vec();
            if rng.below(2) == 0 {
                value.truncate(p.len.saturating_sub(1 + rng.below(12)));
            } else {
                for _ in 0..1 + rng.below(12) {
                    value.push(rng.next() as u8);
                }
            }
            let b = resize(blob, p, &value);
            total += 1;
            let what = || {
                format!(
                    "{name} round {round}: property at {:#x} resized {} -> {}",
                    p.value_at,
                    p.len,
                    value.len()
                )
            };
            if survives(&b, &NONE, &what) {
                accepted += 1;
            }
        }
    }
    assert!(accepted * 2 > total, "only {accepted} of {total} accepted");
}

#[test]
fn odd_known_regions() {
    let mut rng = Rng(0x006b_6e6f_776e);
    for (name, blob) in BLOBS {
        for round in 0..40 {
            let mut region = || {
                let base = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX - rng.below(0x10000) as u64,
                    2 => u64::from(rng.cell()) << 4,
                    _ => rng.next(),
                };
                let size = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => rng.below(1 << 30) as u64,
                };
                (rng.below(4) != 0).then_some(Region {
                    base: PhysAddr::new(base),
                    size,
                })
            };
            let known = KnownRegions {
                dtb: region(),
                kernel: region(),
            };
            survives(blob, &known, &|| format!("{name} round {round}: {known:?}"));
        }
    }
}
