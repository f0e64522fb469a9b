//! Integration tests for `levitate_mm::dtb::pack`: blobs with `FDT_NOP` tokens where libfdt
//! (and so QEMU, U-Boot and Android boot loaders) leaves them must pack into a blob that passes
//! the strict `check` and that the `fdt` crate reads as the same tree minus what was NOPed out.
//! Mutated blobs must never make `pack` or the `fdt` walk of its output panic.

mod common;

use common::{mutate, walk_caught, Rng, DTBS, QEMU_VIRT};
use levitate_mm::dtb::check::{check, check_relaxed, FdtError, Header, FDT_MAGIC, HEADER_SIZE};
use levitate_mm::dtb::pack::{pack_into, packed_size};
use proptest::prelude::*;
use std::collections::HashSet;
use std::mem::discriminant;
use std::ops::Range;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// One structure-block token of a valid blob: `at..end` covers its operands and padding.
#[derive(Debug, Clone)]
struct Token {
    at: usize,
    end: usize,
    tag: u32,
}

/// Where a node lies in the structure block, from its `FDT_BEGIN_NODE` through its
/// `FDT_END_NODE` (what `fdt_nop_node` overwrites), and where its properties lie (what
/// `fdt_nop_property` overwrites: tag, length, name offset, value and padding).
#[derive(Debug, Clone)]
struct Span {
    name: String,
    depth: usize,
    nodes: Range<usize>,
    props: Vec<Range<usize>>,
}

/// A blob split into its blocks, to edit the structure block as libfdt does and to rebuild it
/// in dtc's layout (header, map, structure, strings), which is also the packer's layout.
#[derive(Debug, Clone)]
struct Blob {
    boot_cpuid_phys: u32,
    rsvmap: Vec<u8>,
    structure: Vec<u8>,
    strings: Vec<u8>,
}

impl Blob {
    /// Splits a blob that passes `check_relaxed`.
    fn parse(blob: &[u8]) -> Self {
        let h = check_relaxed(blob).expect("Blob::parse needs a valid blob");
        let rsv = h.off_mem_rsvmap as usize;
        let mut rsv_end = rsv;
        loop {
            rsv_end += 16;
            if blob[rsv_end - 16..rsv_end].iter().all(|&b| b == 0) {
                break;
            }
        }
        let st = h.off_dt_struct as usize;
        let sz = h.off_dt_strings as usize;
        Self {
            boot_cpuid_phys: h.boot_cpuid_phys,
            rsvmap: blob[rsv..rsv_end].to_vec(),
            structure: blob[st..st + h.size_dt_struct as usize].to_vec(),
            strings: blob[sz..sz + h.size_dt_strings as usize].to_vec(),
        }
    }

    fn build(&self) -> Vec<u8> {
        let off_struct = HEADER_SIZE + self.rsvmap.len();
        let off_strings = off_struct + self.structure.len();
        let total = off_strings + self.strings.len();
        let mut blob = Vec::with_capacity(total);
        for v in [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            HEADER_SIZE as u32,
            17,
            16,
            self.boot_cpuid_phys,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_be_bytes());
        }
        blob.extend_from_slice(&self.rsvmap);
        blob.extend_from_slice(&self.structure);
        blob.extend_from_slice(&self.strings);
        blob
    }

    /// The tokens up to and including `FDT_END`, NOPs included.
    fn tokens(&self) -> Vec<Token> {
        let s = &self.structure;
        let mut tokens = Vec::new();
        let mut at = 0;
        loop {
            let tag = word(s, at);
            let end = match tag {
                FDT_BEGIN_NODE => {
                    let len = s[at + 4..].iter().position(|&b| b == 0).unwrap();
                    align4(at + 4 + len + 1)
                }
                FDT_PROP => align4(at + 12 + word(s, at + 4) as usize),
                _ => at + 4,
            };
            tokens.push(Token { at, end, tag });
            if tag == FDT_END {
                return tokens;
            }
            at = end;
        }
    }

    /// Every node, depth first (the order of the `fdt` walks).
    fn spans(&self) -> Vec<Span> {
        let mut spans: Vec<Span> = Vec::new();
        let mut open = Vec::new();
        for t in self.tokens() {
            match t.tag {
                FDT_BEGIN_NODE => {
                    let name = &self.structure[t.at + 4..];
                    let len = name.iter().position(|&b| b == 0).unwrap();
                    spans.push(Span {
                        name: String::from_utf8(name[..len].to_vec()).unwrap(),
                        depth: open.len(),
                        nodes: t.at..0,
                        props: Vec::new(),
                    });
                    open.push(spans.len() - 1);
                }
                FDT_PROP => spans[*open.last().unwrap()].props.push(t.at..t.end),
                FDT_END_NODE => spans[open.pop().unwrap()].nodes.end = t.end,
                _ => {}
            }
        }
        spans
    }

    /// Overwrites `range` with `FDT_NOP` words, as `fdt_nop_property`/`fdt_nop_node` do.
    fn nop(&mut self, range: Range<usize>) {
        for w in self.structure[range].chunks_mut(4) {
            w.copy_from_slice(&FDT_NOP.to_be_bytes());
        }
    }

    /// Deletes `ranges` (which may overlap or nest) from the structure block, as libfdt's
    /// `fdt_del_node`/`fdt_delprop` do.
    fn remove(&mut self, ranges: &[Range<usize>]) {
        let mut ranges = ranges.to_vec();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        for r in merged.into_iter().rev() {
            self.structure.drain(r);
        }
    }

    fn insert(&mut self, at: usize, bytes: &[u8]) {
        self.structure.splice(at..at, bytes.iter().copied());
    }

    /// The offset of `name` in the strings block, added if missing (`fdt_find_add_string`).
    fn string(&mut self, name: &str) -> u32 {
        let mut needle = name.as_bytes().to_vec();
        needle.push(0);
        let found = self
            .strings
            .windows(needle.len())
            .position(|w| w == needle)
            .filter(|&p| p == 0 || self.strings[p - 1] == 0);
        found.unwrap_or_else(|| {
            self.strings.extend_from_slice(&needle);
            self.strings.len() - needle.len()
        }) as u32
    }
}

/// A node as the `fdt` crate reads it.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    path: String,
    props: Vec<(String, Vec<u8>)>,
}

/// Everything the `fdt` crate reads from a blob: nodes with their paths, properties and
/// values, the memory reservations and the strings block.
#[derive(Debug, Clone, PartialEq)]
struct Tree {
    nodes: Vec<Node>,
    reservations: Vec<(usize, usize)>,
    strings: Vec<String>,
}

fn props_of(node: fdt::node::FdtNode<'_, '_>) -> Vec<(String, Vec<u8>)> {
    node.properties()
        .map(|p| (p.name.to_string(), p.value.to_vec()))
        .collect()
}

fn tree(blob: &[u8]) -> Tree {
    fn visit(node: fdt::node::FdtNode<'_, '_>, path: String, nodes: &mut Vec<Node>) {
        nodes.push(Node {
            path: path.clone(),
            props: props_of(node),
        });
        for child in node.children() {
            let sep = if path == "/" { "" } else { "/" };
            visit(child, format!("{path}{sep}{}", child.name), nodes);
        }
    }
    let fdt = fdt::Fdt::new(blob).unwrap();
    let mut nodes = Vec::new();
    visit(fdt.find_node("/").unwrap(), "/".into(), &mut nodes);
    // `all_nodes` walks the blob with different code; it must see the same nodes.
    let flat: Vec<_> = fdt.all_nodes().collect();
    assert_eq!(flat.len(), nodes.len());
    for (f, n) in flat.into_iter().zip(&nodes).skip(1) {
        assert!(n.path.ends_with(&format!("/{}", f.name)), "{}", n.path);
        assert_eq!(props_of(f), n.props, "{}", n.path);
    }
    Tree {
        nodes,
        reservations: fdt
            .memory_reservations()
            .map(|r| (r.address() as usize, r.size()))
            .collect(),
        strings: fdt.strings().map(str::to_string).collect(),
    }
}

/// Packs through both entry points, checks that they agree with each other and with
/// `check_relaxed`, and returns the packed blob.
fn pack(blob: &[u8]) -> Result<Vec<u8>, FdtError> {
    let size = packed_size(blob);
    let mut out = vec![0; blob.len()];
    let packed = pack_into(blob, &mut out);
    let relaxed = check_relaxed(blob);
    match (size, packed, relaxed) {
        (Ok(size), Ok(header), Ok(original)) => {
            assert_eq!(header.totalsize as usize, size);
            assert!(size <= original.totalsize as usize);
            assert_eq!(header.boot_cpuid_phys, original.boot_cpuid_phys);
            out.truncate(size);
            assert_eq!(check(&out), Ok(header));
            Ok(out)
        }
        (Err(a), Err(b), Err(c)) if a == b && b == c => Err(a),
        other => panic!("packed_size, pack_into and check_relaxed disagree: {other:?}"),
    }
}

/// Walks the packed blob with every `fdt` accessor, panicking with `what` if `fdt` panics.
fn walk_packed(packed: &[u8], what: &dyn Fn() -> String, thorough: bool) {
    if let Err(msg) = walk_caught(packed, thorough) {
        panic!("fdt panicked on a packed blob ({}): {msg}", what());
    }
}

#[test]
fn real_dtbs_pack_to_the_same_tree() {
    for (name, blob) in DTBS {
        let packed = pack(blob).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tree(&packed), tree(blob), "{name}");
        walk_packed(&packed, &|| name.to_string(), true);
        // dtc output has no NOPs, no gaps and nothing after FDT_END: already packed.
        assert_eq!(&packed, blob, "{name}");
        let mut short = vec![0; blob.len() - 1];
        assert_eq!(
            pack_into(blob, &mut short),
            Err(FdtError::OutputTooSmall {
                needed: blob.len(),
                got: blob.len() - 1
            }),
            "{name}"
        );
    }
}

/// NOP words added at random token boundaries (before the root, between properties, between
/// properties and children, between children, before `FDT_END_NODE`, after the root) and
/// junk after `FDT_END` are all dropped: the packed blob is the original, byte for byte.
#[test]
fn random_nop_insertions_pack_back_to_the_original() {
    let mut rng = Rng(0x0b0b_1e55);
    for (name, blob) in DTBS {
        let original = Blob::parse(blob);
        let tokens = original.tokens();
        for case in 0..20 {
            let mut b = original.clone();
            let mut at: Vec<usize> = (0..1 + rng.below(30))
                .map(|_| tokens[rng.below(tokens.len())].at)
                .collect();
            at.sort_unstable();
            for &pos in at.iter().rev() {
                b.insert(pos, &FDT_NOP.to_be_bytes());
            }
            if rng.chance(30) {
                b.structure.extend_from_slice(&[0xff; 8]);
            }
            let nopped = b.build();
            let what = || format!("{name} case {case}: NOPs at {at:?}");
            let inside = at.iter().any(|&p| p != 0 && p != tokens.last().unwrap().at);
            assert_eq!(
                matches!(check(&nopped), Err(FdtError::NopInsideNode { .. })),
                inside,
                "{}",
                what()
            );
            let packed = pack(&nopped).unwrap_or_else(|e| panic!("{}: {e}", what()));
            assert_eq!(&packed, blob, "{}", what());
        }
    }
}

/// Which parts of the tree a test NOPs out.
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// Property `.1` of node `.0` (indices in depth-first order).
    Prop(usize, usize),
    /// Node `.0` and its subtree.
    Node(usize),
}

fn random_removals(rng: &mut Rng, spans: &[Span]) -> Vec<Removal> {
    (0..1 + rng.below(3))
        .map(|_| loop {
            let i = rng.below(spans.len());
            if rng.chance(50) && i > 0 {
                break Removal::Node(i);
            }
            if !spans[i].props.is_empty() {
                break Removal::Prop(i, rng.below(spans[i].props.len()));
            }
        })
        .collect()
}

fn removal_range(spans: &[Span], r: Removal) -> Range<usize> {
    match r {
        Removal::Prop(i, j) => spans[i].props[j].clone(),
        Removal::Node(i) => spans[i].nodes.clone(),
    }
}

/// `tree` minus the removed nodes (with their subtrees) and properties.
fn tree_without(tree: &Tree, spans: &[Span], removals: &[Removal]) -> Tree {
    assert_eq!(tree.nodes.len(), spans.len());
    let mut gone_nodes = HashSet::new();
    let mut gone_props = HashSet::new();
    for &r in removals {
        match r {
            Removal::Prop(i, j) => {
                gone_props.insert((i, j));
            }
            Removal::Node(i) => {
                let outer = &spans[i].nodes;
                gone_nodes.extend((0..spans.len()).filter(|&k| {
                    outer.start <= spans[k].nodes.start && spans[k].nodes.end <= outer.end
                }));
            }
        }
    }
    let nodes = tree
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone_nodes.contains(i))
        .map(|(i, node)| Node {
            path: node.path.clone(),
            props: (node.props.iter().enumerate())
                .filter(|(j, _)| !gone_props.contains(&(i, *j)))
                .map(|(_, p)| p.clone())
                .collect(),
        })
        .collect();
    Tree {
        nodes,
        ..tree.clone()
    }
}

/// Properties and whole subtrees NOPed out as libfdt does. The packed blob must be exactly
/// the blob with those bytes deleted, be accepted exactly when that blob passes `check`
/// (removing a memory node's `reg`, say, is still an error), and read as the original tree
/// minus the removed parts.
#[test]
fn libfdt_style_nops_remove_exactly_those_parts() {
    let mut rng = Rng(0x000f_d70b);
    let (mut accepted, mut cases) = (0, 0);
    for (name, blob) in DTBS {
        let original = Blob::parse(blob);
        let spans = original.spans();
        let full = tree(blob);
        for (i, (span, node)) in spans.iter().zip(&full.nodes).enumerate() {
            assert!(i == 0 || node.path.ends_with(&format!("/{}", span.name)));
            assert_eq!(span.props.len(), node.props.len(), "{}", node.path);
        }
        for case in 0..25 {
            let removals = random_removals(&mut rng, &spans);
            let ranges: Vec<_> = removals.iter().map(|&r| removal_range(&spans, r)).collect();
            let mut nopped = original.clone();
            for r in &ranges {
                nopped.nop(r.clone());
            }
            let mut deleted = original.clone();
            deleted.remove(&ranges);
            let (nopped, deleted) = (nopped.build(), deleted.build());
            let what = || format!("{name} case {case}: {removals:?}");
            cases += 1;
            match (pack(&nopped), check(&deleted)) {
                (Ok(packed), Ok(_)) => {
                    accepted += 1;
                    assert_eq!(packed, deleted, "{}", what());
                    let expected = tree_without(&full, &spans, &removals);
                    assert_eq!(tree(&packed), expected, "{}", what());
                    walk_packed(&packed, &what, false);
                }
                (Err(a), Err(b)) => assert_eq!(discriminant(&a), discriminant(&b), "{}", what()),
                (a, b) => panic!("{}: pack {:?}, check of the deleted blob {b:?}", what(), a),
            }
        }
    }
    assert!(accepted > cases / 2, "only {accepted}/{cases} accepted");
}

/// What QEMU's `arm_load_dtb` does to a tree passed with `-dtb`: NOP out every `/memory`
/// node (`qemu_fdt_nop_node`), then add a new one (`fdt_add_subnode` puts it after the
/// root's properties and any NOPs that follow them).
#[test]
fn qemu_dtb_memory_replacement() {
    let original = Blob::parse(QEMU_VIRT);
    let spans = original.spans();
    let memory: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].depth == 1 && spans[i].name.starts_with("memory@"))
        .collect();
    assert_eq!(memory.len(), 1);
    let old = spans[memory[0]].nodes.clone();

    // The new node: 2 GiB at 0x4000_0000 (the root has #address-cells = #size-cells = 2).
    let add_memory = |b: &mut Blob| {
        let tokens = b.tokens();
        let at = tokens[1..]
            .iter()
            .find(|t| t.tag != FDT_PROP && t.tag != FDT_NOP)
            .unwrap()
            .at;
        let (device_type, reg) = (b.string("device_type"), b.string("reg"));
        let words = |words: &[u32]| words.iter().flat_map(|w| w.to_be_bytes()).collect();
        let node: Vec<u8> = [
            words(&[FDT_BEGIN_NODE]),
            b"memory@40000000\0".to_vec(),
            words(&[FDT_PROP, 7, device_type]),
            b"memory\0\0".to_vec(),
            words(&[
                FDT_PROP,
                16,
                reg,
                0,
                0x4000_0000,
                0,
                0x8000_0000,
                FDT_END_NODE,
            ]),
        ]
        .concat();
        b.insert(at, &node);
    };
    let mut nopped = original.clone();
    nopped.nop(old.clone());
    add_memory(&mut nopped);
    let nopped = nopped.build();
    let mut deleted = original.clone();
    deleted.remove(&[old]);
    add_memory(&mut deleted);
    let deleted = deleted.build();

    assert!(matches!(
        check(&nopped),
        Err(FdtError::NopInsideNode { .. })
    ));
    assert!(check_relaxed(&nopped).is_ok());
    let packed = pack(&nopped).unwrap();
    assert_eq!(packed, deleted);
    walk_packed(&packed, &|| "qemu -dtb memory".into(), true);

    let fdt = fdt::Fdt::new(&packed).unwrap();
    assert_eq!(fdt.find_all_nodes("/memory").count(), 1);
    let regions: Vec<_> = fdt
        .memory()
        .regions()
        .map(|r| (r.starting_address as usize, r.size))
        .collect();
    assert_eq!(regions, [(0x4000_0000, Some(0x8000_0000))]);

    // The same tree, with the memory node replaced and moved to the first child.
    let mut expected = tree(QEMU_VIRT);
    expected.nodes.retain(|n| !n.path.starts_with("/memory@"));
    let reg = [0, 0x4000_0000, 0, 0x8000_0000u32].map(u32::to_be_bytes);
    expected.nodes.insert(
        1,
        Node {
            path: "/memory@40000000".into(),
            props: vec![
                ("device_type".into(), b"memory\0".to_vec()),
                ("reg".into(), reg.concat()),
            ],
        },
    );
    assert_eq!(tree(&packed), expected);
}

/// Optionally NOPs out libfdt-style parts of `blob` or inserts NOP words into it, then
/// applies one to three random mutations. Returns the steps, for failure messages.
fn mutate_with_nops(rng: &mut Rng, blob: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut steps = Vec::new();
    let mut b = Blob::parse(blob);
    match rng.below(10) {
        0..=3 => {
            let spans = b.spans();
            for r in random_removals(rng, &spans) {
                b.nop(removal_range(&spans, r));
                steps.push(format!("NOP {r:?}"));
            }
        }
        4..=6 => {
            let tokens = b.tokens();
            for _ in 0..1 + rng.below(4) {
                let at = tokens[rng.below(tokens.len())].at;
                b.insert(at, &FDT_NOP.to_be_bytes());
                steps.push(format!("NOP word inserted at {at:#x}"));
            }
        }
        _ => {}
    }
    let mut m = b.build();
    for _ in 0..1 + rng.below(3) {
        steps.push(mutate(rng, &mut m));
    }
    (m, steps)
}

/// Like the `check` fuzz tests, but through `packed_size`/`pack_into`: nothing panics, the
/// two agree with `check_relaxed`, whatever `check` accepts packs, and the `fdt` walk of every
/// packed blob completes.
#[test]
fn random_mutations_through_pack_never_make_fdt_panic() {
    let mut rng = Rng(0x009a_c6ed);
    for (name, blob) in DTBS {
        let cases = if blob.len() < 16_000 { 600 } else { 150 };
        let mut accepted = 0;
        for case in 0..cases {
            let (m, steps) = mutate_with_nops(&mut rng, blob);
            let what = || format!("{name} case {case}: {}", steps.join("; "));
            let strict = check(&m);
            let Ok(packed) = pack(&m) else {
                assert!(strict.is_err(), "{}: check accepts, pack fails", what());
                continue;
            };
            accepted += 1;
            walk_packed(&packed, &what, false);
            if strict.is_ok() {
                // A blob `fdt` can already read reads the same after packing.
                assert_eq!(tree(&packed), tree(&m), "{}", what());
            }
            assert_eq!(pack(&packed).as_ref(), Ok(&packed), "{}", what());
        }
        assert!(
            accepted > cases / 20,
            "{name}: only {accepted}/{cases} accepted"
        );
    }
}

/// `pack_into` never writes past the packed size, and leaves `out` alone when it fails.
#[test]
fn pack_into_writes_only_the_copy() {
    let mut rng = Rng(0x000a_110c);
    for case in 0..200 {
        let (m, steps) = mutate_with_nops(&mut rng, QEMU_VIRT);
        let mut out = vec![0xa5; m.len() + 64];
        let result: Result<Header, FdtError> = pack_into(&m, &mut out);
        let written = result.map_or(0, |h| h.totalsize as usize);
        assert!(
            out[written..].iter().all(|&b| b == 0xa5),
            "case {case}: {steps:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random byte overwrites of the qemu blob after its memory node was NOPed out, shrinkable
    /// by proptest.
    #[test]
    fn proptest_nopped_overwrites(writes in prop::collection::vec((0..QEMU_VIRT.len(), any::<u8>()), 1..6)) {
        let mut b = Blob::parse(QEMU_VIRT);
        let spans = b.spans();
        let memory = spans.iter().find(|s| s.name.starts_with("memory@")).unwrap();
        b.nop(memory.nodes.clone());
        let mut m = b.build();
        for &(at, byte) in &writes {
            m[at] = byte;
        }
        if let Ok(packed) = pack(&m) {
            walk_packed(&packed, &|| format!("qemu-virt-1g without memory, overwrites {writes:x?}"), false);
        }
    }
}
