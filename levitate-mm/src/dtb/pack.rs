//! Copies a flattened device tree without its `FDT_NOP` tokens, so that a blob edited by a
//! boot loader can be handed to the `fdt` crate.
//!
//! # Why
//!
//! Devicetree Specification v0.4 §5.4.1 defines `FDT_NOP` as a token that "will be ignored by
//! any program parsing the device tree", and libfdt uses it to delete things in place:
//! `fdt_nop_property` overwrites a whole property (tag, length, name offset, value and padding)
//! with NOP words, and `fdt_nop_node` does the same from a node's `FDT_BEGIN_NODE` through its
//! `FDT_END_NODE`. Real boot loaders do this:
//!
//! * QEMU, given `-dtb FILE`, NOPs out every existing `/memory` node (`arm_load_dtb` calls
//!   `qemu_fdt_nop_node`) before it adds its own.
//! * U-Boot and Android boot loaders edit the tree with the same libfdt calls.
//!
//! The `fdt` 0.1.5 crate cannot parse NOPs inside nodes: `skip_current_node` panics on them
//! and `all_nodes` stops early (see [`super::check`]). So [`check`](super::check::check)
//! rejects them, and this module produces a NOP-free copy instead.
//!
//! # Layout of the copy
//!
//! The packed blob is laid out as dtc lays out its output (§5.1, §5.6): the 40-byte v17
//! header, the memory reservation map (8-byte aligned, up to and including its `(0, 0)`
//! terminator), the structure block (4-byte aligned) with every `FDT_NOP` removed and nothing
//! after `FDT_END`, and the strings block unchanged. Free space between or after the blocks is
//! dropped. The header says `version` 17, `last_comp_version` 16, and keeps
//! `boot_cpuid_phys`. The copy is never larger than the original's `totalsize`.
//!
//! Nothing here allocates: the caller provides the output buffer, sized with
//! [`packed_size`].

use super::check::{self, FdtError, Header, Layout, Mode, FDT_MAGIC, HEADER_SIZE};

/// Where the blocks of a packed copy go, as offsets from its start.
struct Placement {
    rsvmap: usize,
    structure: usize,
    strings: usize,
    total: usize,
}

impl Placement {
    /// `kept` is the size of the structure block without NOPs.
    fn new(layout: &Layout<'_>, kept: usize) -> Self {
        // §5.6: the map 8-byte aligned, the structure block 4-byte aligned. With the 40-byte
        // header, 16-byte map entries and 4-byte tokens this needs no padding, but aligning
        // keeps that from being an assumption.
        let rsvmap = align_up(HEADER_SIZE, 8);
        let structure = align_up(rsvmap + layout.rsvmap.len(), 4);
        let strings = structure + kept;
        let total = strings + layout.strings.bytes().len();
        Self {
            rsvmap,
            structure,
            strings,
            total,
        }
    }
}

fn align_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// Checks `blob` with [`check::check_relaxed`] (every rule of [`check::check`], but `FDT_NOP`
/// allowed anywhere a token may start) and returns the size of its packed copy: what
/// [`pack_into`] needs and writes.
pub fn packed_size(blob: &[u8]) -> Result<usize, FdtError> {
    let layout = check::layout(blob)?;
    let kept = check::walk_struct(layout.structure, &layout.strings, Mode::AllowNops, |_| {})?;
    Ok(Placement::new(&layout, kept).total)
}

/// Checks `blob` like [`packed_size`], writes its packed copy (see the module docs) to the
/// start of `out`, checks the copy with the strict [`check::check`] and returns the copy's
/// header. Its `totalsize` is the number of bytes written. The copy is safe for the `fdt`
/// crate.
///
/// Fails with [`FdtError::OutputTooSmall`] if `out` is shorter than [`packed_size`], and with
/// the relaxed check's error if `blob` is malformed; in both cases `out` is left untouched.
/// `blob` may be longer than its `totalsize`; bytes of `out` after the copy are not touched.
pub fn pack_into(blob: &[u8], out: &mut [u8]) -> Result<Header, FdtError> {
    let layout = check::layout(blob)?;
    // Check and measure first, so `out` stays untouched on error.
    let kept = check::walk_struct(layout.structure, &layout.strings, Mode::AllowNops, |_| {})?;
    let place = Placement::new(&layout, kept);
    let got = out.len();
    let Some(out) = out.get_mut(..place.total) else {
        return Err(FdtError::OutputTooSmall {
            needed: place.total,
            got,
        });
    };

    // The second walk sees the same blob, so it succeeds and emits exactly `kept` bytes. The
    // strict check at the end would catch any mismatch.
    let mut at = place.structure;
    let struct_out = &mut out[..place.strings];
    check::walk_struct(
        layout.structure,
        &layout.strings,
        Mode::AllowNops,
        |bytes| {
            if let Some(dst) = struct_out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            at += bytes.len();
        },
    )?;
    debug_assert_eq!(at, place.strings);

    let rsvmap_end = place.rsvmap + layout.rsvmap.len();
    out[HEADER_SIZE..place.rsvmap].fill(0);
    out[place.rsvmap..rsvmap_end].copy_from_slice(layout.rsvmap);
    out[rsvmap_end..place.structure].fill(0);
    out[place.strings..].copy_from_slice(layout.strings.bytes());

    // Every size is at most the original's `totalsize`, a u32, so the casts are lossless.
    let header = [
        FDT_MAGIC,
        place.total as u32,
        place.structure as u32,
        place.strings as u32,
        place.rsvmap as u32,
        17, // version
        16, // last_comp_version
        layout.header.boot_cpuid_phys,
        layout.strings.bytes().len() as u32,
        kept as u32,
    ];
    for (i, field) in header.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&field.to_be_bytes());
    }
    check::check(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtb::check::tests::{finish, open_root, Builder};
    use std::string::{String, ToString};
    use std::vec;
    use std::vec::Vec;

    const NOP: u32 = 4;

    /// A node's path and its properties, as the `fdt` crate reads them.
    type Walked = Vec<(String, Vec<(String, Vec<u8>)>)>;

    /// Every node (depth first, with its path) and its properties, plus the memory
    /// reservations, read through the `fdt` crate.
    fn fdt_walk(blob: &[u8]) -> (Walked, Vec<(usize, usize)>) {
        fn visit(node: fdt::node::FdtNode<'_, '_>, path: String, out: &mut Walked) {
            let props = node
                .properties()
                .map(|p| (p.name.into(), p.value.to_vec()))
                .collect();
            out.push((path.clone(), props));
            for child in node.children() {
                let sep = if path == "/" { "" } else { "/" };
                visit(child, std::format!("{path}{sep}{}", child.name), out);
            }
        }
        let fdt = fdt::Fdt::new(blob).unwrap();
        let mut nodes = Vec::new();
        visit(fdt.find_node("/").unwrap(), "/".into(), &mut nodes);
        // all_nodes must agree with the recursive walk.
        let flat: Vec<_> = fdt.all_nodes().map(|n| n.properties().count()).collect();
        let expected: Vec<_> = nodes.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(flat, expected);
        let rsv = fdt
            .memory_reservations()
            .map(|r| (r.address() as usize, r.size()))
            .collect();
        (nodes, rsv)
    }

    fn pack(blob: &[u8]) -> Vec<u8> {
        let size = packed_size(blob).unwrap();
        let mut out = vec![0xa5; size + 7];
        let header = pack_into(blob, &mut out).unwrap();
        assert_eq!(header.totalsize as usize, size);
        assert!(
            out[size..].iter().all(|&b| b == 0xa5),
            "wrote past the copy"
        );
        out.truncate(size);
        assert_eq!(check::check(&out), Ok(header));
        out
    }

    /// The same tree twice: once with NOPs everywhere the spec allows them (and garbage after
    /// FDT_END), once without.
    fn with_and_without_nops() -> (Vec<u8>, Vec<u8>) {
        let build = |nops: bool| {
            let mut b = Builder::new();
            b.rsv.push((0x8000_0000, 0x1000));
            let nop = |b: &mut Builder, n: usize| {
                for _ in 0..if nops { n } else { 0 } {
                    b.nop();
                }
            };
            nop(&mut b, 2); // before the root
            b.begin("");
            nop(&mut b, 1); // before the first property
            b.prop_u32("#address-cells", 2);
            nop(&mut b, 3); // between properties
            b.prop_u32("#size-cells", 2)
                .prop("compatible", b"test,board\0");
            nop(&mut b, 1); // between properties and children
            b.begin("chosen").prop("bootargs", b"console=ttyAMA0\0");
            nop(&mut b, 1); // before FDT_END_NODE
            b.end_node();
            nop(&mut b, 2); // between children
            b.begin("soc").prop("empty", &[]);
            b.begin("uart@9000000").prop("reg", &[0; 16]).end_node();
            nop(&mut b, 1); // after the last grandchild
            b.end_node();
            b.begin("memory@40000000")
                .prop("device_type", b"memory\0")
                .prop(
                    "reg",
                    &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0],
                )
                .end_node();
            nop(&mut b, 1); // before the root's FDT_END_NODE
            b.end_node();
            nop(&mut b, 2); // after the root
            b.end();
            if nops {
                b.token(0xdead_beef); // ignored after FDT_END, dropped by pack
            }
            let mut blob = b.build();
            blob[28..32].copy_from_slice(&3u32.to_be_bytes()); // boot_cpuid_phys
            blob
        };
        (build(true), build(false))
    }

    #[test]
    fn nops_everywhere_are_removed() {
        let (nopped, clean) = with_and_without_nops();
        assert!(matches!(
            check::check(&nopped),
            Err(FdtError::NopInsideNode { .. })
        ));
        assert!(check::check_relaxed(&nopped).is_ok());
        assert!(check::check(&clean).is_ok());
        let packed = pack(&nopped);
        // The builder lays blobs out as the packer does, so the copy is byte for byte the
        // blob that never had NOPs.
        assert_eq!(packed, clean);
        assert_eq!(fdt_walk(&packed), fdt_walk(&clean));
        let (nodes, rsv) = fdt_walk(&packed);
        let paths: Vec<_> = nodes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/chosen",
                "/soc",
                "/soc/uart@9000000",
                "/memory@40000000"
            ]
        );
        assert_eq!(
            nodes[1].1,
            [("bootargs".into(), b"console=ttyAMA0\0".to_vec())]
        );
        assert_eq!(rsv, [(0x8000_0000, 0x1000)]);
        assert_eq!(check::check(&packed).unwrap().boot_cpuid_phys, 3);
        // Packing a packed blob changes nothing.
        assert_eq!(pack(&packed), packed);
    }

    #[test]
    fn header_of_the_copy() {
        let (nopped, clean) = with_and_without_nops();
        let h = pack_into(&nopped, &mut vec![0; nopped.len()]).unwrap();
        assert_eq!(h.totalsize as usize, clean.len());
        assert_eq!(h.off_mem_rsvmap, 40);
        assert_eq!(h.off_dt_struct, 40 + 2 * 16);
        assert_eq!(h.off_dt_struct + h.size_dt_struct, h.off_dt_strings);
        assert_eq!(h.off_dt_strings + h.size_dt_strings, h.totalsize);
        assert_eq!((h.version, h.last_comp_version), (17, 16));
        assert_eq!(h.boot_cpuid_phys, 3);
    }

    #[test]
    fn scattered_layout_is_compacted() {
        // Strings first, then a gap, the structure block, another gap, and the map last, in
        // a v16 header with a size_dt_struct field: still one packed, dtc-ordered copy.
        let (_, clean) = with_and_without_nops();
        let h = check::check(&clean).unwrap();
        let (rsv, st, sz) = (
            &clean[40..h.off_dt_struct as usize],
            &clean[h.off_dt_struct as usize..h.off_dt_strings as usize],
            &clean[h.off_dt_strings as usize..],
        );
        let mut blob = vec![0u8; 40];
        blob.extend_from_slice(sz);
        blob.resize(blob.len().next_multiple_of(4) + 12, 0);
        let off_struct = blob.len();
        blob.extend_from_slice(st);
        blob.resize(blob.len().next_multiple_of(8) + 64, 0);
        let off_rsv = blob.len();
        blob.extend_from_slice(rsv);
        blob.resize(blob.len() + 100, 0xff);
        let total = blob.len();
        for (i, v) in [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            40,
            off_rsv as u32,
            16,
            16,
            3,
            sz.len() as u32,
            st.len() as u32,
        ]
        .into_iter()
        .enumerate()
        {
            blob[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        }
        assert!(check::check(&blob).is_ok());
        assert_eq!(pack(&blob), clean);
    }

    #[test]
    fn output_too_small_leaves_out_untouched() {
        let (nopped, clean) = with_and_without_nops();
        let mut out = vec![0x5a; clean.len() - 1];
        assert_eq!(
            pack_into(&nopped, &mut out),
            Err(FdtError::OutputTooSmall {
                needed: clean.len(),
                got: clean.len() - 1
            })
        );
        assert!(out.iter().all(|&b| b == 0x5a));
        assert_eq!(
            FdtError::OutputTooSmall { needed: 9, got: 8 }.to_string(),
            "output buffer of 8 bytes is too small for the 9-byte packed blob"
        );
    }

    #[test]
    fn relaxed_check_keeps_every_other_rule() {
        // A NOP does not hide a property after a child, nor a missing reg.
        let mut b = open_root();
        b.begin("child").end_node().nop();
        b.prop("late", &[]);
        let blob = finish(b);
        assert!(matches!(
            packed_size(&blob),
            Err(FdtError::PropertyAfterChild { .. })
        ));
        let mut b = open_root();
        let at = b.structure.len() as u32;
        b.begin("memory@0").nop().end_node();
        let blob = finish(b);
        assert_eq!(
            check::check_relaxed(&blob),
            Err(FdtError::MissingReg { offset: at })
        );
        // Unknown tokens and tokens after the root are still errors.
        let mut b = open_root();
        b.nop().token(5);
        assert!(matches!(
            pack_into(&finish(b), &mut [0; 512]),
            Err(FdtError::UnknownToken { token: 5, .. })
        ));
        let mut b = Builder::new();
        b.begin("").end_node().nop().prop("x", &[]).end();
        assert!(matches!(
            packed_size(&b.build()),
            Err(FdtError::TokenAfterRoot { .. })
        ));
        // Only NOPs: no root node.
        let mut b = Builder::new();
        b.nop().nop().end();
        assert!(matches!(
            packed_size(&b.build()),
            Err(FdtError::RootNotFirst { .. })
        ));
    }

    #[test]
    fn nop_out_whole_property_and_node() {
        // What libfdt's fdt_nop_property / fdt_nop_node leave behind.
        let build = |keep_prop: bool, keep_node: bool| {
            let mut b = open_root();
            let prop_at = b.structure.len();
            b.prop("removed-prop", b"abcde\0");
            let prop_end = b.structure.len();
            let node_at = b.structure.len();
            b.begin("removed-node").prop("x", &[1, 2, 3]);
            b.begin("grandchild").end_node().end_node();
            let node_end = b.structure.len();
            b.begin("kept").prop("y", &[4]).end_node();
            for (keep, range) in [
                (keep_prop, prop_at..prop_end),
                (keep_node, node_at..node_end),
            ] {
                if !keep {
                    for word in b.structure[range].chunks_mut(4) {
                        word.copy_from_slice(&NOP.to_be_bytes());
                    }
                }
            }
            finish(b)
        };
        let (full, _) = fdt_walk(&build(true, true));
        for (keep_prop, keep_node) in [(false, true), (true, false), (false, false)] {
            let packed = pack(&build(keep_prop, keep_node));
            let (nodes, _) = fdt_walk(&packed);
            let mut expected = full.clone();
            if !keep_node {
                expected.retain(|(path, _)| !path.starts_with("/removed-node"));
            }
            if !keep_prop {
                expected[0].1.retain(|(name, _)| name != "removed-prop");
            }
            assert_eq!(nodes, expected, "{keep_prop} {keep_node}");
        }
    }
}
