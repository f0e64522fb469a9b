//! Integration tests for `levitate_mm::dtb::check`. Real blobs must pass. Truncated,
//! bit-flipped, overwritten and randomly generated blobs must either be rejected or be safe to
//! walk with the `fdt` crate, which runs under `catch_unwind` so that a panic is reported
//! together with the mutation that caused it.

mod common;

use common::{be32, mutate, set32, walk_caught, Rng, DTBS, QEMU_VIRT};
use levitate_mm::dtb::check::{check, total_size, FdtError, HEADER_SIZE, MAX_DEPTH};
use proptest::prelude::*;

/// Runs `check`; if it accepts the blob, walks it with `fdt` and turns a panic into a test
/// failure naming `what` (the mutation). Returns whether `check` accepted the blob.
fn check_then_walk(blob: &[u8], what: &dyn Fn() -> String, thorough: bool) -> bool {
    if check(blob).is_err() {
        return false;
    }
    if let Err(msg) = walk_caught(blob, thorough) {
        panic!(
            "fdt panicked on a blob that check accepted ({}): {msg}",
            what()
        );
    }
    true
}

#[test]
fn real_dtbs_pass_and_walk() {
    for (name, blob) in DTBS {
        let header = check(blob).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(header.totalsize as usize, blob.len(), "{name}");
        assert_eq!(total_size(&blob[..8]), Ok(blob.len()), "{name}");
        check_then_walk(blob, &|| format!("{name} unmodified"), true);
    }
    // Spot-check that the walk sees real data.
    let fdt = fdt::Fdt::new(QEMU_VIRT).unwrap();
    let region = fdt.memory().regions().next().unwrap();
    assert_eq!(region.starting_address as usize, 0x4000_0000);
    assert_eq!(region.size, Some(0x4000_0000));
}

#[test]
fn every_truncation_is_rejected() {
    for (name, blob) in DTBS {
        for len in 0..blob.len() {
            match check(&blob[..len]) {
                Err(FdtError::BufferTooShort { .. }) if len < HEADER_SIZE => {}
                Err(FdtError::Truncated { .. }) if len >= HEADER_SIZE => {}
                other => panic!("{name} truncated to {len}: {other:?}"),
            }
        }
    }
}

/// Truncations that the header agrees with: `totalsize`, or `size_dt_struct`, is patched down
/// so that the check must find the damage inside the blob.
#[test]
fn consistent_truncations() {
    for (name, blob) in DTBS {
        // Every length for the small blobs, a dense sample for the large ones.
        let step = (blob.len() / 1500).max(1);
        for len in (HEADER_SIZE..blob.len()).step_by(step) {
            let mut cut = blob[..len].to_vec();
            set32(&mut cut, 4, len as u32);
            let accepted = check_then_walk(&cut, &|| format!("{name} cut to {len}"), false);
            assert!(!accepted, "{name} cut to {len} bytes was accepted");
        }
        let struct_size = be32(blob, 36);
        let step = (struct_size / 1500).max(1);
        for size in (0..struct_size).step_by(step) {
            let mut cut = blob.to_vec();
            set32(&mut cut, 36, size as u32);
            let what = || format!("{name} size_dt_struct {size}");
            assert!(!check_then_walk(&cut, &what, false), "{}", what());
        }
    }
}

#[test]
fn random_mutations_never_make_fdt_panic() {
    let mut rng = Rng(0x1e71_7a7e);
    for (name, blob) in DTBS {
        // The large blobs are slower to walk; spend most of the budget on the small ones.
        let cases = if blob.len() < 16_000 { 2000 } else { 500 };
        let mut accepted = 0;
        for case in 0..cases {
            let mut m = blob.to_vec();
            let mut steps = Vec::new();
            for _ in 0..1 + rng.below(3) {
                steps.push(mutate(&mut rng, &mut m));
            }
            let what = || format!("{name} case {case}: {}", steps.join("; "));
            accepted += usize::from(check_then_walk(&m, &what, false));
        }
        // Sanity: many mutations only touch values, so a good share must still pass.
        assert!(
            accepted > cases / 20,
            "{name}: only {accepted}/{cases} accepted"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random byte overwrites of the qemu blob, shrinkable by proptest.
    #[test]
    fn proptest_overwrites(writes in prop::collection::vec((0..QEMU_VIRT.len(), any::<u8>()), 1..6)) {
        let mut m = QEMU_VIRT.to_vec();
        for &(at, byte) in &writes {
            m[at] = byte;
        }
        check_then_walk(&m, &|| format!("qemu-virt-1g overwrites {writes:x?}"), false);
    }

    /// Arbitrary bytes behind a valid-looking header never panic the checker.
    #[test]
    fn proptest_garbage(body in prop::collection::vec(any::<u8>(), 0..512), rsv in 0u32..64, st in 0u32..600, sz in 0u32..600) {
        let mut m = QEMU_VIRT[..HEADER_SIZE].to_vec();
        m.extend_from_slice(&body);
        let len = m.len() as u32;
        set32(&mut m, 4, len);
        set32(&mut m, 8, HEADER_SIZE as u32 + st);
        set32(&mut m, 12, HEADER_SIZE as u32 + st + sz);
        set32(&mut m, 16, HEADER_SIZE as u32 + rsv * 8);
        set32(&mut m, 32, len.saturating_sub(HEADER_SIZE as u32 + st + sz));
        set32(&mut m, 36, sz);
        check_then_walk(&m, &|| format!("garbage body {body:02x?}"), true);
    }
}

/// A small FDT writer for generated trees (dtc layout: header, map, structure, strings).
#[derive(Default)]
struct Writer {
    structure: Vec<u8>,
    strings: Vec<u8>,
}

impl Writer {
    fn word(&mut self, v: u32) {
        self.structure.extend_from_slice(&v.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    fn begin(&mut self, name: &str) {
        self.word(1);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
    }

    fn prop(&mut self, name: &str, value: &[u8]) {
        self.prop_shifted(name, 0, value);
    }

    /// A property whose name offset is `shift` bytes past where `name` is stored.
    fn prop_shifted(&mut self, name: &str, shift: usize, value: &[u8]) {
        let mut needle = name.as_bytes().to_vec();
        needle.push(0);
        let nameoff = match self.strings.windows(needle.len()).position(|w| w == needle) {
            Some(p) => p,
            None => {
                self.strings.extend_from_slice(&needle);
                self.strings.len() - needle.len()
            }
        };
        self.word(3);
        self.word(value.len() as u32);
        self.word((nameoff + shift) as u32);
        self.structure.extend_from_slice(value);
        self.pad();
    }

    fn build(&self) -> Vec<u8> {
        let off_struct = HEADER_SIZE + 16;
        let off_strings = off_struct + self.structure.len();
        let total = off_strings + self.strings.len();
        let mut blob = Vec::with_capacity(total);
        for v in [
            0xd00d_feed,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            HEADER_SIZE as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_be_bytes());
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&self.structure);
        blob.extend_from_slice(&self.strings);
        blob
    }
}

const PROP_NAMES: &[&str] = &[
    "reg",
    "#address-cells",
    "#size-cells",
    "compatible",
    "model",
    "bootargs",
    "stdout-path",
    "stdin-path",
    "clock-frequency",
    "timebase-frequency",
    "initial_mapped_area",
    "interrupts",
    "interrupt-parent",
    "#interrupt-cells",
    "phandle",
    "device_type",
    "serial0",
    "x",
];

/// Node names that `fdt` treats specially (at depth 1, or under `/cpus`), plus ordinary ones.
const NODE_NAMES: &[&str] = &[
    "cpus", "cpu@0", "cpu", "memory@0", "memory", "aliases", "chosen", "soc", "intc", "a@1",
];

/// Alias names and path-like values, chosen so that cycles (`x = "x"`) are likely.
const ALIAS_WORDS: &[&str] = &["serial0", "x", "/chosen", "/memory", "/soc", "/cpus/cpu@0"];

/// String-ish values; the first seven are well-formed strings.
const STRING_VALUES: &[&[u8]] = &[
    b"/soc\0",
    b"/memory\0",
    b"/chosen\0",
    b"serial0\0",
    b"x\0",
    b"/cpus/cpu@0\0",
    b"arm,pl011\0x\0",
    b"\0",
    b"",
    b"/\0",
    b"no-nul",
    b"bad\xff\0",
];

/// A random value for property `name`, usually of the shape `fdt` expects, sometimes not.
fn random_value(rng: &mut Rng, name: &str) -> Vec<u8> {
    let typical = rng.chance(85);
    match name {
        "#address-cells" | "#size-cells" | "#interrupt-cells" if typical => {
            (rng.below(4) as u32).to_be_bytes().to_vec()
        }
        "reg" | "interrupts" if typical => vec![0; 4 * rng.below(7)],
        "clock-frequency" | "timebase-frequency" if typical => vec![1; 4 + 4 * rng.below(2)],
        "initial_mapped_area" if typical => vec![1; 20 + 4 * rng.below(2)],
        "compatible" | "model" | "bootargs" | "stdout-path" | "stdin-path" if typical => {
            STRING_VALUES[rng.below(7)].to_vec()
        }
        "interrupt-parent" | "phandle" if typical => (rng.below(4) as u32).to_be_bytes().to_vec(),
        _ => match rng.below(4) {
            0 | 1 => STRING_VALUES[rng.below(STRING_VALUES.len())].to_vec(),
            2 => vec![1; rng.below(25)],
            _ => (0..4 * rng.below(6)).map(|_| rng.next() as u8).collect(),
        },
    }
}

/// Writes the properties and children of the node just opened with name `name` (the root is
/// at depth 1). Mostly emits what `check` requires for special nodes so that a good share of
/// trees is accepted, and occasionally breaks a rule.
fn random_node(rng: &mut Rng, w: &mut Writer, name: &str, depth: usize, parent: &str) {
    let base = name.split('@').next().unwrap_or(name);
    let special = match (depth, base) {
        (1, _) => Some(("#address-cells", 2)),
        (2, "cpus") if rng.chance(90) => Some(("#address-cells", 1 + rng.below(2))),
        (2, "cpus") => Some(("#address-cells", rng.below(4))),
        (2, "chosen") => Some(("chosen", 0)),
        (2, "memory") => Some(("reg", 0)),
        (3, "cpu") if parent == "cpus" => Some(("reg", 1 + rng.below(3))),
        // Zero cells, under which fdt's raw_reg() never ends for a child with `reg`.
        (_, "intc") => Some(("#address-cells", 0)),
        _ if parent == "intc" => Some(("reg", 0)),
        _ => None,
    };
    if let Some((prop, cells)) = special.filter(|_| rng.chance(90)) {
        if prop == "#address-cells" {
            w.prop("#address-cells", &(cells as u32).to_be_bytes());
            w.prop("#size-cells", &(u32::from(depth == 1)).to_be_bytes());
        } else if prop == "chosen" {
            let name = ["bootargs", "stdout-path", "stdin-path"][rng.below(3)];
            w.prop(name, STRING_VALUES[rng.below(STRING_VALUES.len())]);
        } else {
            // `cells` is the size of a cpu's `reg` in cells; 0 means the default of 2.
            let cells = if cells == 0 { 2 } else { cells };
            w.prop("reg", &vec![0; 4 * cells]);
        }
    }
    let props = |rng: &mut Rng, w: &mut Writer, n: usize| {
        for _ in 0..n {
            if base == "aliases" && rng.chance(80) {
                let pick = |rng: &mut Rng, absolute: bool| {
                    let want = if rng.chance(85) { absolute } else { !absolute };
                    loop {
                        let word = ALIAS_WORDS[rng.below(ALIAS_WORDS.len())];
                        if word.starts_with('/') == want {
                            break word;
                        }
                    }
                };
                let alias = pick(rng, false);
                let mut value = pick(rng, true).as_bytes().to_vec();
                value.push(0);
                w.prop(alias, &value);
            } else {
                let prop = PROP_NAMES[rng.below(PROP_NAMES.len())];
                let value = random_value(rng, prop);
                w.prop(prop, &value);
            }
            if rng.chance(1) {
                w.word(4); // FDT_NOP between properties
            }
            if rng.chance(1) {
                // A name offset into the middle of a two-byte UTF-8 character.
                w.prop_shifted("\u{e9}", 1, &[]);
            }
        }
    };
    let n = rng.below(4);
    props(rng, w, n);
    if depth < 5 {
        for _ in 0..rng.below(4) {
            let child = if base == "cpus" && rng.chance(70) {
                "cpu@0"
            } else {
                NODE_NAMES[rng.below(NODE_NAMES.len())]
            };
            w.begin(child);
            random_node(rng, w, child, depth + 1, base);
            w.word(2);
        }
    }
    if rng.chance(1) {
        props(rng, w, 1); // a property after the children
    }
}

/// Random trees over the property and node names that `fdt` treats specially, so that the
/// semantic rules (cells, reg, strings, aliases, cpus) are exercised on accepted blobs.
#[test]
fn generated_trees_never_make_fdt_panic() {
    let mut rng = Rng(0x5eed);
    let (mut accepted, cases) = (0, 5000);
    for case in 0..cases {
        let mut w = Writer::default();
        w.begin(if rng.chance(1) { "root" } else { "" });
        random_node(&mut rng, &mut w, "", 1, "");
        w.word(2);
        w.word(9);
        let mut blob = w.build();
        let mut steps = Vec::new();
        if rng.chance(20) {
            steps.push(mutate(&mut rng, &mut blob));
        }
        let what = || format!("generated case {case}: {blob:02x?} after {steps:?}");
        accepted += usize::from(check_then_walk(&blob, &what, true));
    }
    assert!(
        accepted > cases / 5,
        "only {accepted}/{cases} generated trees accepted"
    );
}

/// The depth limit is what keeps `fdt`'s fixed parent stack from overflowing.
#[test]
fn deepest_accepted_tree_walks() {
    let nested = |levels: usize| {
        let mut w = Writer::default();
        w.begin("");
        for i in 1..levels {
            w.begin(&format!("n{i}"));
            w.prop("reg", &[0; 12]);
        }
        for _ in 0..levels {
            w.word(2);
        }
        w.word(9);
        w.build()
    };
    let blob = nested(MAX_DEPTH);
    assert!(check_then_walk(&blob, &|| "depth MAX_DEPTH".into(), true));
    assert_eq!(fdt::Fdt::new(&blob).unwrap().all_nodes().count(), MAX_DEPTH);
    assert!(matches!(
        check(&nested(MAX_DEPTH + 1)),
        Err(FdtError::TooDeep { .. })
    ));
}
