//! Unit tests of the memory map, one group per rule: RAM, reservations, dynamic placement,
//! initrd and known regions, awkward maps, capacity, kernel-time reservations, invariants and
//! messages. Trees are written with [`builder::Tree`]; `from_parts` covers what a tree cannot
//! express.

pub(crate) mod builder;
mod fail_closed;

use super::*;
use crate::addr::PhysAddr;
use crate::dtb::check::check;
use builder::{cells, Tree};
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

fn r(start: u64, end: u64) -> Region {
    Region::from_bounds(start, end)
}

/// Builds the map of a tree that must pass `dtb::check`, and validates it when built.
fn map_of<'a>(blob: &'a [u8], known: &KnownRegions) -> Result<MemoryMap<'a>, MemMapError> {
    check(blob).expect("test trees must pass dtb::check");
    map_unchecked(blob, known)
}

/// Like [`map_of`] for trees `dtb::check` rejects but the code must still survive.
fn map_unchecked<'a>(blob: &'a [u8], known: &KnownRegions) -> Result<MemoryMap<'a>, MemMapError> {
    let fdt = fdt::Fdt::new(blob).unwrap();
    let map = MemoryMap::from_fdt(&fdt, known);
    if let Ok(m) = &map {
        m.validate().unwrap();
    }
    map
}

fn texts(map: &MemoryMap<'_>) -> Vec<String> {
    map.warnings().iter().map(ToString::to_string).collect()
}

fn regions<'a>(map: &MemoryMap<'a>) -> Vec<(Region, &'a str, Source)> {
    map.reserved()
        .iter()
        .map(|x| (x.region, x.name, x.source))
        .collect()
}

/// 1 GiB of RAM at 0x4000_0000, root cells 2/2.
fn qemu_like() -> Tree {
    Tree::new(2, 2).memory("memory@40000000", &[0, 0x4000_0000, 0, 0x4000_0000])
}

const NONE: KnownRegions = KnownRegions {
    dtb: None,
    kernel: None,
};

// ---- RAM (spec 3.4) ----

#[test]
fn ram_from_every_enabled_memory_node_and_entry() {
    let blob = Tree::new(2, 2)
        // Two adjacent entries in one node; the end is not page aligned.
        .memory(
            "memory@40000000",
            &[
                0,
                0x4000_0000,
                0,
                0x1000_0000,
                0,
                0x5000_0000,
                0,
                0x1000_0800,
            ],
        )
        // A second node: unaligned start, and a zero-size placeholder entry.
        .memory(
            "memory@100000800",
            &[1, 0x800, 0, 0x2000_0000, 0, 0x9000_0000, 0, 0],
        )
        .begin("memory@80000000")
        .string("device_type", "memory")
        .cells("reg", &[0, 0x8000_0000, 0, 0x1000_0000])
        .string("status", "disabled")
        .end()
        .begin("memory@c0000000")
        .string("device_type", "memory")
        .cells("reg", &[0, 0xc000_0000, 0, 0x1000])
        .string("status", "okay")
        .end()
        .begin("sram@d0000000")
        .cells("reg", &[0, 0xd000_0000, 0, 0x1000])
        .end()
        // Memory nodes belong under the root (3.4); Linux looks nowhere else either.
        .begin("soc")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .memory("memory@e0000000", &[0, 0xe000_0000, 0, 0x1000])
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(
        map.memory(),
        [
            r(0x4000_0000, 0x6000_0000),
            r(0xc000_0000, 0xc000_1000),
            r(0x1_0000_1000, 0x1_2000_0000)
        ]
    );
    assert_eq!(map.usable(), map.memory());
    assert!(map.reserved().is_empty());
    assert!(map.warnings().is_empty(), "{:?}", texts(&map));
}

#[test]
fn ram_cell_sizes_come_from_the_root() {
    // Raspberry Pi 3: one cell each, RAM at physical 0.
    let blob = Tree::new(1, 1)
        .memory("memory@0", &[0, 0x4000_0000])
        .build();
    assert_eq!(map_of(&blob, &NONE).unwrap().memory(), [r(0, 0x4000_0000)]);
    // Pixel 6: two address cells, one size cell.
    let blob = Tree::new(2, 1)
        .memory(
            "memory@80000000",
            &[0, 0x8000_0000, 0x8000_0000, 8, 0x8000_0000, 0x8000_0000],
        )
        .build();
    assert_eq!(
        map_of(&blob, &NONE).unwrap().memory(),
        [
            r(0x8000_0000, 0x1_0000_0000),
            r(0x8_8000_0000, 0x9_0000_0000)
        ]
    );
}

#[test]
fn ram_is_merged_before_it_is_rounded() {
    // Two ranges meeting mid-page: merged first, so the page they share is kept.
    let map = MemoryMap::from_parts(&[r(0x1800, 0x3000), r(0x1000, 0x1800)], &[], &[]).unwrap();
    assert_eq!(map.memory(), [r(0x1000, 0x3000)]);
    let map = MemoryMap::from_parts(&[r(0x1001, 0x3fff), r(0x9000, 0x9000)], &[], &[]).unwrap();
    assert_eq!(map.memory(), [r(0x2000, 0x3000)]);
}

#[test]
fn no_ram_is_a_clean_error() {
    let cases = [
        Tree::new(2, 2).build(),
        Tree::new(2, 2)
            .memory("memory@0", &[0, 0x4000_0000, 0, 0])
            .build(),
        Tree::new(2, 2)
            .begin("memory@0")
            .string("device_type", "memory")
            .cells("reg", &[0, 0, 0, 0x1000_0000])
            .string("status", "disabled")
            .end()
            .build(),
        // Not a memory node: the device_type is another string.
        Tree::new(2, 2)
            .begin("memory@0")
            .string("device_type", "memoryx")
            .cells("reg", &[0, 0, 0, 0x1000_0000])
            .end()
            .build(),
    ];
    for blob in &cases {
        assert_eq!(map_of(blob, &NONE).unwrap_err(), MemMapError::NoMemory);
    }
    assert_eq!(
        MemMapError::NoMemory.to_string(),
        "the device tree describes no RAM (no enabled device_type = \"memory\" node with a \
         non-empty reg)"
    );
    // RAM, but not one whole page of it.
    let blob = Tree::new(2, 2)
        .memory("memory@100", &[0, 0x100, 0, 0x800])
        .build();
    assert_eq!(
        map_of(&blob, &NONE).unwrap_err(),
        MemMapError::NoUsableMemory
    );
    // RAM, all of it reserved.
    let blob = qemu_like().memreserve(0x4000_0000, 0x4000_0000).build();
    assert_eq!(
        map_of(&blob, &NONE).unwrap_err(),
        MemMapError::NoUsableMemory
    );
}

#[test]
fn odd_memory_nodes_warn() {
    let blob = Tree::new(2, 1)
        // Named so that dtb::check does not insist on a reg.
        .begin("ram")
        .string("device_type", "memory")
        .end()
        // Three cells per entry: one whole entry and 4 stray bytes.
        .memory("memory@40000000", &[0, 0x4000_0000, 0x1000_0000, 7])
        // Runs past 2^64: clipped at the top.
        .memory(
            "memory@ffffffffffff0000",
            &[0xffff_ffff, 0xffff_0000, 0x10_0000],
        )
        .begin("memory@50000000")
        .prop("device_type", b"memory\0\0")
        .cells("reg", &[0, 0x5000_0000, 0x1000])
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(
        map.memory(),
        [
            r(0x4000_0000, 0x5000_1000),
            r(0xffff_ffff_ffff_0000, 0xffff_ffff_ffff_f000)
        ]
    );
    assert_eq!(
        texts(&map),
        [
            "memory node 'ram': no reg property; node ignored",
            "memory node 'memory@40000000': reg ends with 4 bytes that do not form a whole \
             entry; the partial entry is ignored",
            "memory node 'memory@ffffffffffff0000': reg entry 0xffffffffffff0000 + 0x100000 \
             runs past the top of the 64-bit address space; clipped",
        ]
    );
}

#[test]
fn unsupported_root_cell_sizes_are_a_warning_not_a_panic() {
    // dtb::check rejects #size-cells = 3 at the root; the map must still cope.
    let blob = Tree::new(2, 3)
        .memory("memory@0", &[0, 0, 0, 0, 0x1000_0000])
        .build();
    assert!(check(&blob).is_err());
    let fdt = fdt::Fdt::new(&blob).unwrap();
    assert_eq!(
        MemoryMap::from_fdt(&fdt, &NONE).unwrap_err(),
        MemMapError::NoMemory
    );
}

// ---- Reservations (spec 5.3, 3.5) ----

#[test]
fn memreserve_entries() {
    let blob = qemu_like()
        .memreserve(0x4000_0000, 0x1_0000)
        .memreserve(0x4800_0000, 0) // size 0: nothing
        .memreserve(0x1000, 0x1000) // no RAM there
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(
        regions(&map),
        [(
            r(0x4000_0000, 0x4001_0000),
            "/memreserve/",
            Source::MemReserve
        )]
    );
    assert_eq!(map.usable(), [r(0x4001_0000, 0x8000_0000)]);
    assert_eq!(
        texts(&map),
        [
            "/memreserve/ entry at 0x48000000 has size 0; nothing reserved",
            "/memreserve/ entry 0x1000..0x2000 (4 KiB) lies wholly outside RAM; ignored"
        ]
    );
}

#[test]
fn memreserve_entries_past_the_end_reserve_what_they_cover() {
    // Running past the end of RAM: the part inside is reserved. Past 2^64: clipped there, so
    // everything from its base up stays reserved (more, never less).
    let blob = qemu_like()
        .memreserve(0x7fff_0000, 0x2_0000)
        .memreserve(0x6000_0000, u64::MAX)
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(map.usable(), [r(0x4000_0000, 0x6000_0000)]);
    let kinds: Vec<&str> = map.warnings().iter().map(Warning::kind).collect();
    assert_eq!(
        kinds,
        [
            "partly_outside_memory",
            "reservation_past_top",
            "partly_outside_memory",
            "overlap"
        ]
    );
}

#[test]
fn static_reserved_memory_children() {
    let blob = Tree::new(2, 2)
        .memory("memory@80000000", &[0, 0x8000_0000, 0, 0x4000_0000])
        .begin("reserved-memory")
        // Its own cell sizes, not the root's.
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .prop("ranges", &[])
        .begin("fw@80000000")
        .cells("reg", &[0x8000_0000, 0x10_0000, 0x8100_0000, 0x2000])
        .prop("no-map", &[])
        .end()
        .begin("pool@90000000")
        .cells("reg", &[0x9000_0000, 0x100_0000])
        .cells("size", &[0x1000]) // reg wins
        .prop("reusable", &[])
        .end()
        .begin("off@a0000000")
        .cells("reg", &[0xa000_0000, 0x1000])
        .string("status", "disabled")
        .end()
        // Not okay, not disabled: Linux would skip it; it stays reserved here.
        .begin("garbled@a1000000")
        .cells("reg", &[0xa100_0000, 0x1000])
        .prop("status", &[0xff, 0])
        .end()
        .begin("firmware@a2000000")
        .cells("reg", &[0xa200_0000, 0x1000])
        .string("status", "reserved")
        .end()
        // Undecodable, but disabled: ignored.
        .begin("off-and-broken@b0000000")
        .cells("reg", &[0xb000_0000, 0, 7])
        .string("status", "disabled")
        .end()
        .begin("okay@b1000000")
        .cells("reg", &[0xb100_0000, 0x800])
        .string("status", "okay")
        .end()
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    let got: Vec<_> = map
        .reserved()
        .iter()
        .map(|x| (x.region, x.name, x.no_map, x.reusable))
        .collect();
    assert_eq!(
        got,
        [
            (r(0x8000_0000, 0x8010_0000), "fw@80000000", true, false),
            (r(0x8100_0000, 0x8100_2000), "fw@80000000", true, false),
            (r(0x9000_0000, 0x9100_0000), "pool@90000000", false, true),
            (
                r(0xa100_0000, 0xa100_1000),
                "garbled@a1000000",
                false,
                false
            ),
            (
                r(0xa200_0000, 0xa200_1000),
                "firmware@a2000000",
                false,
                false
            ),
            (r(0xb100_0000, 0xb100_0800), "okay@b1000000", false, false),
        ]
    );
    assert!(map
        .reserved()
        .iter()
        .all(|x| x.source == Source::ReservedMemory));
    assert_eq!(
        map.usable(),
        [
            r(0x8010_0000, 0x8100_0000),
            r(0x8100_2000, 0x9000_0000),
            r(0x9100_0000, 0xa100_0000),
            r(0xa100_1000, 0xa200_0000),
            r(0xa200_1000, 0xb100_0000),
            r(0xb100_1000, 0xc000_0000),
        ]
    );
    assert_eq!(
        texts(&map),
        [
            "reserved-memory node 'garbled@a1000000': status (not a string) is neither \
             \"okay\" nor \"disabled\"; kept reserved",
            "reserved-memory node 'firmware@a2000000': status \"reserved\" is neither \
             \"okay\" nor \"disabled\"; kept reserved",
        ]
    );
    let reserved = 0x10_0000 + 0x2000 + 0x100_0000 + 3 * 0x1000;
    assert_eq!(
        map.totals(),
        Totals {
            memory: 0x4000_0000,
            reserved,
            usable: 0x4000_0000 - reserved,
            no_map: 0x10_0000 + 0x2000,
        }
    );
}

/// The error for `/reserved-memory` holding `child`, in QEMU-like RAM.
/// Adds one child node's begin and properties to a tree (the caller closes it).
type Child = fn(Tree) -> Tree;
/// Properties of `/reserved-memory` itself.
type Props<'p> = &'p [(&'p str, &'p [u8])];

fn reserved_memory_error(parent_props: Props<'_>, child: Child) -> MemMapError {
    let mut t = qemu_like().begin("reserved-memory");
    for (name, value) in parent_props {
        t = t.prop(name, value);
    }
    let blob = child(t).end().end().build();
    // Unchecked: `dtb::check` already refuses some of these (a cell-size property that is
    // not one cell); the map must fail closed on its own too.
    map_unchecked(&blob, &NONE).expect_err("an undecodable reservation must be an error")
}

const CELLS_2_2: Props<'static> = &[
    ("#address-cells", &[0, 0, 0, 2]),
    ("#size-cells", &[0, 0, 0, 2]),
    ("ranges", &[]),
];

#[test]
fn undecodable_static_children_fail_closed() {
    let cases: [(Child, &str); 3] = [
        (
            |t: Tree| {
                t.begin("fw@50000000")
                    .cells("reg", &[0, 0x5000_0000, 0, 0x10_0000, 7])
            },
            "reserved-memory node /reserved-memory/fw@50000000: reg ends with 4 bytes that do \
             not form a whole entry",
        ),
        (
            |t: Tree| t.begin("fw@50000000").prop("reg", &[]),
            "reserved-memory node /reserved-memory/fw@50000000: reg holds no entry",
        ),
        (
            |t: Tree| {
                t.begin("fw@50000000")
                    .cells("reg", &[0, 0x4800_0000, 0, 0x1000, 0, 0x5000_0000, 0, 0])
            },
            "reserved-memory node /reserved-memory/fw@50000000: reg entry at 0x50000000 has \
             size 0",
        ),
    ];
    for (child, want) in cases {
        let e = reserved_memory_error(CELLS_2_2, child).to_string();
        assert!(e.starts_with(want), "{e}");
        assert!(
            e.ends_with(
                "; cannot tell which memory it reserves, so none is handed out \
                 (status = \"disabled\" ignores the node)"
            ),
            "{e}"
        );
    }
    // The error leaves no map behind when loading in place.
    let blob = qemu_like()
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[])
        .begin("ok@48000000")
        .cells("reg", &[0, 0x4800_0000, 0, 0x1000])
        .end()
        .begin("bad@50000000")
        .cells("reg", &[0, 0x5000_0000, 0, 0])
        .end()
        .end()
        .build();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let mut map = MemoryMap::new();
    let e = map.load_fdt(&fdt, &NONE).unwrap_err();
    assert!(matches!(
        e,
        MemMapError::BadReservedMemory {
            problem: Problem::ZeroSizeEntry {
                base: 0x5000_0000,
                ..
            },
            ..
        }
    ));
    assert!(map.memory().is_empty() && map.usable().is_empty());
}

#[test]
fn undecodable_dynamic_children_fail_closed() {
    let cases: [(Child, &str); 4] = [
        (
            |t: Tree| t.begin("a").prop("size", &[1, 2, 3]),
            "reserved-memory node /reserved-memory/a: size is 3 bytes long, not 4 or 8",
        ),
        (
            |t: Tree| {
                t.begin("b")
                    .cells("size", &[0x1000])
                    .prop("alignment", &[0, 0])
            },
            "reserved-memory node /reserved-memory/b: alignment is 2 bytes long, not 4 or 8",
        ),
        (
            |t: Tree| {
                t.begin("f")
                    .cells("size", &[0x1000])
                    .cells("alloc-ranges", &[0, 0x4000_0000, 0, 0x1000, 5])
            },
            "reserved-memory node /reserved-memory/f: alloc-ranges ends with 4 bytes that do \
             not form a whole entry",
        ),
        (
            |t: Tree| {
                t.begin("g")
                    .cells("size", &[0x1000])
                    .prop("alloc-ranges", &[])
            },
            "reserved-memory node /reserved-memory/g: alloc-ranges holds no entry",
        ),
    ];
    for (child, want) in cases {
        let e = reserved_memory_error(CELLS_2_2, child).to_string();
        assert!(e.starts_with(want), "{e}");
    }
}

#[test]
fn reserved_memory_parent_that_cannot_address_its_children_fails_closed() {
    let static_child: Child = |t| {
        t.begin("fw@0")
            .cells("reg", &[0, 0, 0x4000_0000, 0, 0x1000])
    };
    let dynamic_child: Child = |t| {
        t.begin("pool")
            .cells("size", &[0x1000])
            .cells("alloc-ranges", &[0, 0, 0x4000_0000, 0, 0x1000])
    };
    let cases: [(Props<'_>, &str); 5] = [
        (
            &[
                ("#address-cells", &[0, 0, 0, 3]),
                ("#size-cells", &[0, 0, 0, 2]),
            ],
            "#address-cells = 3 and #size-cells = 2 cannot describe physical memory (each must \
             be 1 or 2)",
        ),
        (
            &[("#size-cells", &[0, 0, 0, 2])],
            "no #address-cells property",
        ),
        (
            &[("#address-cells", &[0, 0, 0, 2])],
            "no #size-cells property",
        ),
        (
            &[
                ("#address-cells", &[0, 0, 0, 0, 0, 0, 0, 2]),
                ("#size-cells", &[0, 0, 0, 2]),
            ],
            "#address-cells is 8 bytes long, not one cell",
        ),
        (
            &[
                ("#address-cells", &[0, 0, 0, 2]),
                ("#size-cells", &[0, 0, 0, 2]),
                (
                    "ranges",
                    &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                ),
            ],
            "ranges is not empty",
        ),
    ];
    for (parent, want) in cases {
        for child in [static_child, dynamic_child] {
            let e = reserved_memory_error(parent, child);
            assert!(
                matches!(e, MemMapError::BadReservedMemoryParent { node, .. }
                    if node.as_str() == "/reserved-memory"),
                "{e:?}"
            );
            let e = e.to_string();
            assert!(e.starts_with(&format!("/reserved-memory: {want}")), "{e}");
            assert!(
                e.ends_with("cannot tell which memory its children reserve, so none is handed out"),
                "{e}"
            );
        }
    }
    // Children that need no cells (a dynamic size anywhere) or are disabled do not care.
    let blob = qemu_like()
        .begin("reserved-memory")
        .cells("#address-cells", &[3])
        .begin("pool")
        .cells("size", &[0x1000])
        .end()
        .begin("off@0")
        .cells("reg", &[0, 0, 0x4000_0000, 0, 0x1000])
        .string("status", "disabled")
        .end()
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(
        regions(&map),
        [(r(0x7fff_f000, 0x8000_0000), "pool", Source::Dynamic)]
    );
    assert_eq!(
        texts(&map),
        [
            "'reserved-memory' has no ranges property; its children's addresses are taken as \
          physical addresses"
        ]
    );
}

#[test]
fn every_reserved_memory_node_is_read() {
    // Linux reads only `/reserved-memory`; a second node must not leave its memory usable.
    let blob = qemu_like()
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[])
        .begin("a@48000000")
        .cells("reg", &[0, 0x4800_0000, 0, 0x1000])
        .end()
        .end()
        .begin("reserved-memory@1")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .prop("ranges", &[])
        .begin("b@50000000")
        .cells("reg", &[0x5000_0000, 0x1000])
        .end()
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    let names: Vec<&str> = map.reserved().iter().map(|x| x.name).collect();
    assert_eq!(names, ["a@48000000", "b@50000000"]);
}

// ---- Dynamic placement ----

#[test]
fn dynamic_regions_are_placed_top_down_after_everything_static() {
    let known = KnownRegions {
        kernel: Some(r(0x4020_0000, 0x4040_0000)),
        dtb: Some(r(0x4800_0000, 0x4801_0000)),
    };
    let blob = qemu_like()
        .begin("chosen")
        .cells("linux,initrd-start", &[0x7f00_0000])
        .cells("linux,initrd-end", &[0, 0x7f80_0000])
        .end()
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[])
        // Before the static node in the tree, but placed after it.
        .begin("cma")
        .cells("size", &[0, 0x400_0000])
        .cells("alignment", &[0, 0x40_0000])
        .prop("reusable", &[])
        .end()
        .begin("static@7c000000")
        .cells("reg", &[0, 0x7c00_0000, 0, 0x100_0000])
        .end()
        // First alloc-range too small, the second is used (top-down inside it). A one-cell
        // size is accepted (reserved-memory.yaml allows uint32 or uint64).
        .begin("dma")
        .cells("size", &[0x10_0000])
        .cells(
            "alloc-ranges",
            &[0, 0x4000_0000, 0, 0x8_0000, 0, 0x5000_0000, 0, 0x1000_0000],
        )
        .prop("no-map", &[])
        .end()
        .begin("huge")
        .cells("size", &[0, 0x8000_0000])
        .end()
        .begin("limited")
        .cells("size", &[0x1000_0000])
        .cells("alloc-ranges", &[0, 0x4000_0000, 0, 0x100_0000])
        .end()
        .end()
        .build();
    let map = map_of(&blob, &known).unwrap();
    assert_eq!(
        regions(&map),
        [
            (r(0x4020_0000, 0x4040_0000), "kernel", Source::Kernel),
            (r(0x4800_0000, 0x4801_0000), "dtb", Source::Dtb),
            (r(0x5ff0_0000, 0x6000_0000), "dma", Source::Dynamic),
            (r(0x7800_0000, 0x7c00_0000), "cma", Source::Dynamic),
            (
                r(0x7c00_0000, 0x7d00_0000),
                "static@7c000000",
                Source::ReservedMemory
            ),
            (r(0x7f00_0000, 0x7f80_0000), "initrd", Source::Initrd),
        ]
    );
    let dma = map.reserved().iter().find(|x| x.name == "dma").unwrap();
    assert!(dma.no_map && !dma.reusable);
    let cma = map.reserved().iter().find(|x| x.name == "cma").unwrap();
    assert!(cma.reusable && !cma.no_map);
    assert_eq!(
        texts(&map),
        [
            "reserved-memory node 'huge': cannot place 2 GiB dynamic region (aligned to 4 KiB) \
             in free RAM; nothing reserved",
            "reserved-memory node 'limited': cannot place 256 MiB dynamic region (aligned to \
             4 KiB) in its alloc-ranges; nothing reserved",
        ]
    );
}

#[test]
fn later_dynamic_regions_avoid_earlier_ones() {
    let blob = qemu_like()
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .begin("a")
        .cells("size", &[0, 0x1000_0000])
        .end()
        .begin("b")
        .cells("size", &[0, 0x1000_0000])
        .end()
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(
        regions(&map),
        [
            (r(0x6000_0000, 0x7000_0000), "b", Source::Dynamic),
            (r(0x7000_0000, 0x8000_0000), "a", Source::Dynamic),
        ]
    );
}

#[test]
fn dynamic_nodes_that_reserve_nothing_warn() {
    let blob = qemu_like()
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[])
        .begin("c")
        .string("compatible", "vendor,thing")
        .end()
        .begin("d")
        .cells("iommu-addresses", &[1, 0, 0, 0, 0x1000])
        .end()
        .begin("e")
        .cells("size", &[0])
        .end()
        .begin("f")
        .cells("size", &[0x1000])
        .cells("alloc-ranges", &[0, 0x4000_0000, 0, 0x1000])
        .end()
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(
        regions(&map),
        [(r(0x4000_0000, 0x4000_1000), "f", Source::Dynamic)]
    );
    assert_eq!(
        texts(&map),
        [
            "reserved-memory node 'c': neither reg nor size; ignored",
            "reserved-memory node 'e': size is 0; nothing reserved",
        ]
    );
}

#[test]
fn too_many_dynamic_nodes_is_an_error() {
    let mut t = qemu_like()
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2]);
    let names: Vec<String> = (0..=MAX_DYNAMIC).map(|i| format!("pool{i}")).collect();
    for name in &names {
        t = t.begin(name).cells("size", &[0x1000]).end();
    }
    let blob = t.end().build();
    assert_eq!(
        map_of(&blob, &NONE).unwrap_err(),
        MemMapError::TooMany {
            what: "dynamic reserved-memory nodes",
            capacity: MAX_DYNAMIC
        }
    );
}

// ---- initrd, DTB and kernel ----

#[test]
fn initrd_properties() {
    let with_chosen = |props: &[(&str, Vec<u8>)]| {
        let mut t = qemu_like().begin("chosen");
        for (name, value) in props {
            t = t.prop(name, value);
        }
        t.end().build()
    };
    let start = "linux,initrd-start";
    let end = "linux,initrd-end";
    let blob = with_chosen(&[
        (start, cells(&[0, 0x4400_0000])),
        (end, cells(&[0x4400_1800])),
    ]);
    let map = map_of(&blob, &NONE).unwrap();
    assert_eq!(
        regions(&map),
        [(r(0x4400_0000, 0x4400_1800), "initrd", Source::Initrd)]
    );
    assert_eq!(
        map.usable(),
        [r(0x4000_0000, 0x4400_0000), r(0x4400_2000, 0x8000_0000)]
    );

    type Props<'p> = &'p [(&'p str, Vec<u8>)];
    let cases: [(Props<'_>, &str); 4] = [
        (
            &[(start, cells(&[0x4400_0000]))],
            "/chosen: linux,initrd-start without linux,initrd-end; no initrd reserved",
        ),
        (
            &[(end, cells(&[0x4400_0000]))],
            "/chosen: linux,initrd-end without linux,initrd-start; no initrd reserved",
        ),
        (
            &[(start, cells(&[0x4400_0000])), (end, cells(&[0x4400_0000]))],
            "/chosen: linux,initrd-end 0x44000000 is not above linux,initrd-start 0x44000000; \
             no initrd reserved",
        ),
        (
            &[(start, vec![0x44, 0]), (end, cells(&[0x4500_0000]))],
            "/chosen: linux,initrd-start is 2 bytes long, not 4 or 8; no initrd reserved",
        ),
    ];
    for (props, message) in cases {
        let blob = with_chosen(props);
        let map = map_of(&blob, &NONE).unwrap();
        assert!(map.reserved().is_empty());
        assert_eq!(texts(&map), [message]);
    }
}

#[test]
fn known_regions_are_reserved_and_overlaps_reported() {
    // A boot loader that lists the blob in /memreserve/ as well: both kept, one warning.
    let blob = qemu_like().memreserve(0x4800_0000, 0x2000).build();
    let known = KnownRegions {
        dtb: Some(r(0x4800_0000, 0x4800_1800)),
        kernel: Some(r(0x4008_0000, 0x4100_0000)),
    };
    let map = map_of(&blob, &known).unwrap();
    assert_eq!(
        regions(&map),
        [
            (r(0x4008_0000, 0x4100_0000), "kernel", Source::Kernel),
            (r(0x4800_0000, 0x4800_1800), "dtb", Source::Dtb),
            (
                r(0x4800_0000, 0x4800_2000),
                "/memreserve/",
                Source::MemReserve
            ),
        ]
    );
    assert_eq!(
        texts(&map),
        [
            "/memreserve/ entry overlaps device tree blob at 0x48000000..0x48001800 (6 KiB); \
          both kept"
        ]
    );
}

// ---- Awkward maps ----

#[test]
fn reservations_are_clipped_to_ram() {
    let ram = [
        r(0x3000_0000, 0x4000_0000),
        r(0, 0x1000),
        r(0x1000_0000, 0x2000_0000),
    ];
    let res = |region, name| Reservation::new(region, name, Source::ReservedMemory);
    let reservations = [
        res(r(0, 0x800), "zero"),
        res(r(0x1ff0_0000, 0x3010_0000), "hole"),
        res(r(0x5000_0000, 0x5000_1000), "away"),
        res(
            Region {
                base: PhysAddr::new(u64::MAX - 0xfff),
                size: 0x1_0000,
            },
            "top",
        ),
        res(r(0x3800_0000, 0x3900_0000), "first"),
        res(r(0x3880_0000, 0x3a00_0000), "second"),
        res(r(0x3fff_f800, 0x4000_0800), "edge"),
    ];
    let map = MemoryMap::from_parts(&ram, &reservations, &[]).unwrap();
    map.validate().unwrap();
    assert_eq!(
        map.memory(),
        [
            r(0, 0x1000),
            r(0x1000_0000, 0x2000_0000),
            r(0x3000_0000, 0x4000_0000)
        ]
    );
    let got: Vec<_> = map.reserved().iter().map(|x| (x.region, x.name)).collect();
    assert_eq!(
        got,
        [
            (r(0, 0x800), "zero"),
            (r(0x1ff0_0000, 0x2000_0000), "hole"),
            (r(0x3000_0000, 0x3010_0000), "hole"),
            (r(0x3800_0000, 0x3900_0000), "first"),
            (r(0x3880_0000, 0x3a00_0000), "second"),
            (r(0x3fff_f800, 0x4000_0000), "edge"),
        ]
    );
    assert_eq!(
        map.usable(),
        [
            r(0x1000_0000, 0x1ff0_0000),
            r(0x3010_0000, 0x3800_0000),
            r(0x3a00_0000, 0x3fff_f000)
        ]
    );
    assert_eq!(
        texts(&map),
        [
            "reserved-memory node 'hole' 0x1ff00000..0x30100000 (258 MiB) lies partly outside \
             RAM; only the 2 MiB inside RAM is reserved",
            "reserved-memory node 'away' 0x50000000..0x50001000 (4 KiB) lies wholly outside \
             RAM; ignored",
            "reserved-memory node 'top' 0xfffffffffffff000 + 0x10000 runs past the top of the \
             64-bit address space; clipped",
            "reserved-memory node 'top' 0xfffffffffffff000..0xffffffffffffffff (4095 bytes) \
             lies wholly outside RAM; ignored",
            "reserved-memory node 'second' overlaps reserved-memory node 'first' at \
             0x38800000..0x39000000 (8 MiB); both kept",
            "reserved-memory node 'edge' 0x3ffff800..0x40000800 (4 KiB) lies partly outside \
             RAM; only the 2 KiB inside RAM is reserved",
        ]
    );
}

#[test]
fn ram_at_the_top_of_the_address_space() {
    let top = Region {
        base: PhysAddr::new(u64::MAX - 0x1_ffff),
        size: 0x10_0000,
    };
    let reservations = [Reservation::new(
        Region {
            base: PhysAddr::new(u64::MAX - 0x800),
            size: 0x1000,
        },
        "last",
        Source::MemReserve,
    )];
    let map = MemoryMap::from_parts(&[top], &reservations, &[]).unwrap();
    map.validate().unwrap();
    // The last, partial page of the address space cannot be RAM we hand out.
    assert_eq!(
        map.memory(),
        [r(0xffff_ffff_fffe_0000, 0xffff_ffff_ffff_f000)]
    );
    assert_eq!(map.usable(), map.memory());
    // RAM clipped; the reservation clipped, then outside RAM.
    let kinds: Vec<&str> = map.warnings().iter().map(Warning::kind).collect();
    assert_eq!(
        kinds,
        ["memory_past_top", "reservation_past_top", "outside_memory"]
    );
}

// ---- RAM the CPU or the linear map cannot reach ----

/// A 40-bit CPU with the kernel's 128 TiB linear map (QEMU's cortex-a76).
const CORTEX_A76: Addressable = Addressable {
    pa_bits: 40,
    linear_end: 1 << 47,
};

fn map_within<'a>(blob: &'a [u8], addressable: Addressable) -> Result<MemoryMap<'a>, MemMapError> {
    check(blob).expect("test trees must pass dtb::check");
    let fdt = fdt::Fdt::new(blob).unwrap();
    let options = BuildOptions {
        addressable,
        ram: None,
    };
    let map = MemoryMap::from_fdt_with(&fdt, &NONE, &options);
    if let Ok(m) = &map {
        m.validate().unwrap();
    }
    map
}

#[test]
fn ram_beyond_the_physical_address_range_is_ignored_or_clipped() {
    const TIB: u64 = 1 << 40;
    let blob = qemu_like()
        // Wholly beyond 40 bits: the bank at 1 TiB that used to panic the boot.
        .memory("memory@10000000000", &[0x100, 0, 0, 0x4000_0000])
        // Starts in range, ends beyond: only the start is usable. A start-only check would
        // keep all of it.
        .memory("memory@ffc0000000", &[0xff, 0xc000_0000, 0, 0x8000_0000])
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[])
        .begin("fw@10000000000")
        .cells("reg", &[0x100, 0, 0, 0x1000])
        .end()
        .end()
        .build();
    let map = map_within(&blob, CORTEX_A76).unwrap();
    assert_eq!(
        map.memory(),
        [r(0x4000_0000, 0x8000_0000), r(TIB - 0x4000_0000, TIB)]
    );
    assert_eq!(
        texts(&map),
        [
            "memory node 'memory@10000000000': RAM 0x10000000000..0x10040000000 (1 GiB) lies \
             beyond the CPU's 40-bit physical address range; ignored",
            "memory node 'memory@ffc0000000': RAM 0xffc0000000..0x10040000000 (2 GiB) runs past \
             the CPU's 40-bit physical address range; only 0xffc0000000..0x10000000000 (1 GiB) \
             is used",
            "reserved-memory node 'fw@10000000000' 0x10000000000..0x10000001000 (4 KiB) lies \
             wholly outside RAM; ignored",
        ]
    );
    // Without a limit the same tree keeps everything (what the kernel did before).
    let all = map_within(&blob, Addressable::ANY).unwrap();
    assert_eq!(all.totals().memory, 3 << 30, "the two high banks overlap");
    assert!(all
        .warnings()
        .iter()
        .all(|w| w.kind() != "unaddressable_memory"));
}

#[test]
fn ram_beyond_the_linear_map_is_ignored_or_clipped() {
    const LINEAR: u64 = 1 << 47;
    let cpu_48 = Addressable {
        pa_bits: 48,
        linear_end: LINEAR,
    };
    let blob = qemu_like()
        // At 128 TiB: used to stop the boot with "0x0 is not canonical".
        .memory("memory@800000000000", &[0x8000, 0, 0, 0x4000_0000])
        .memory(
            "memory@7fffc0000000",
            &[0x7fff, 0xc000_0000, 0, 0x8000_0000],
        )
        .build();
    let map = map_within(&blob, cpu_48).unwrap();
    assert_eq!(
        map.memory(),
        [r(0x4000_0000, 0x8000_0000), r(LINEAR - 0x4000_0000, LINEAR)]
    );
    assert_eq!(
        texts(&map),
        [
            "memory node 'memory@800000000000': RAM 0x800000000000..0x800040000000 (1 GiB) lies \
             beyond the kernel's linear map (physical 0..0x800000000000, 128 TiB); ignored",
            "memory node 'memory@7fffc0000000': RAM 0x7fffc0000000..0x800040000000 (2 GiB) runs \
             past the kernel's linear map (physical 0..0x800000000000, 128 TiB); only \
             0x7fffc0000000..0x800000000000 (1 GiB) is used",
        ]
    );
}

#[test]
fn no_ram_in_reach_says_why() {
    let blob = Tree::new(2, 2)
        .memory("memory@10000000000", &[0x100, 0, 0, 0x4000_0000])
        .build();
    let e = map_within(&blob, CORTEX_A76).unwrap_err();
    assert_eq!(
        e,
        MemMapError::NoAddressableMemory {
            limit: Limit::PhysAddrBits(40)
        }
    );
    assert_eq!(
        e.to_string(),
        "all RAM lies beyond the CPU's 40-bit physical address range"
    );
}

#[test]
fn ram_given_by_the_caller_replaces_the_memory_nodes() {
    // What QEMU's -dtb does: its own RAM, the tree's reservations.
    let blob = Tree::new(2, 2)
        .memory("memory@0", &[0, 0, 0, 0x1000_0000])
        .memreserve(0x4000_0000, 0x1000)
        .build();
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let ram = [
        r(0x4000_0000, 0x4800_0000),
        r(0x100_0000_0000, 0x100_1000_0000),
    ];
    let options = BuildOptions {
        addressable: CORTEX_A76,
        ram: Some(&ram),
    };
    let map = MemoryMap::from_fdt_with(&fdt, &NONE, &options).unwrap();
    assert_eq!(map.memory(), [r(0x4000_0000, 0x4800_0000)]);
    assert_eq!(map.usable(), [r(0x4000_1000, 0x4800_0000)]);
    assert_eq!(
        texts(&map),
        [
            "RAM 0x10000000000..0x10010000000 (256 MiB) lies beyond the CPU's 40-bit physical \
          address range; ignored"
        ]
    );
}

// ---- Capacity ----

#[test]
fn capacity_overflow_is_an_error() {
    let ram: Vec<Region> = (0..=MAX_MEMORY as u64)
        .map(|i| r(i * 0x10_0000, i * 0x10_0000 + 0x1000))
        .collect();
    assert_eq!(
        MemoryMap::from_parts(&ram, &[], &[]).unwrap_err(),
        MemMapError::TooMany {
            what: "RAM ranges",
            capacity: MAX_MEMORY
        }
    );
    let reservations: Vec<Reservation<'_>> = (0..=MAX_RESERVED as u64)
        .map(|i| Reservation::new(r(i * 0x2000, i * 0x2000 + 1), "x", Source::Early))
        .collect();
    let err = MemoryMap::from_parts(&[r(0, 1 << 30)], &reservations, &[]).unwrap_err();
    assert_eq!(
        err,
        MemMapError::TooMany {
            what: "reservations",
            capacity: MAX_RESERVED
        }
    );
    assert_eq!(
        err.to_string(),
        "more reservations than the memory map can hold (256)"
    );
}

#[test]
fn warnings_beyond_capacity_are_counted() {
    let reservations: Vec<Reservation<'_>> = (0..MAX_WARNINGS as u64 + 6)
        .map(|i| Reservation::new(r(i * 0x1000, i * 0x1000 + 1), "x", Source::MemReserve))
        .collect();
    let map = MemoryMap::from_parts(&[r(1 << 40, 1 << 41)], &reservations, &[]).unwrap();
    assert_eq!(map.warnings().len(), MAX_WARNINGS);
    assert_eq!(map.dropped_warnings(), 6);
}

// ---- Kernel-time reservations ----

#[test]
fn reserve_updates_usable_and_fails_cleanly() {
    let mut map = MemoryMap::from_parts(&[r(0, 0x10_0000)], &[], &[]).unwrap();
    map.reserve(r(0x2000, 0x3000), "page tables", Source::Early)
        .unwrap();
    map.reserve(r(0x8_0000, 0x8_8000), "mem_map", Source::MemMap)
        .unwrap();
    map.validate().unwrap();
    assert_eq!(
        map.usable(),
        [r(0, 0x2000), r(0x3000, 0x8_0000), r(0x8_8000, 0x10_0000)]
    );
    map.reserve(r(0x2800, 0x2900), "again", Source::Early)
        .unwrap();
    map.reserve(r(0x100_0000, 0x100_1000), "away", Source::Early)
        .unwrap();
    assert_eq!(
        texts(&map),
        [
            "early reservation 'again' overlaps early reservation 'page tables' at \
             0x2800..0x2900 (256 bytes); both kept",
            "early reservation 'away' 0x1000000..0x1001000 (4 KiB) lies wholly outside RAM; \
             ignored",
        ]
    );
    // Fill the list, then one more: an error, and the map is unchanged.
    while map.reserved().len() < MAX_RESERVED {
        let at = 0xf_0000 + map.reserved().len() as u64;
        map.reserve(r(at, at + 1), "fill", Source::Early).unwrap();
    }
    let before = format!("{map:?}");
    assert_eq!(
        map.reserve(r(0x4000, 0x5000), "late", Source::Early),
        Err(MemMapError::TooMany {
            what: "reservations",
            capacity: MAX_RESERVED
        })
    );
    assert_eq!(format!("{map:?}"), before);
    map.validate().unwrap();
    assert_eq!(
        map.reserve(r(0x4000, 0x4000), "empty", Source::Early),
        Ok(())
    );
}

#[test]
fn a_split_reservation_needs_a_slot_per_piece() {
    let mut reservations: Vec<Reservation<'_>> = (0..MAX_RESERVED as u64 - 1)
        .map(|i| Reservation::new(r(i * 0x1000, i * 0x1000 + 1), "x", Source::Early))
        .collect();
    reservations.push(Reservation::new(
        r(0x3f_e000, 0x40_1000),
        "across",
        Source::Early,
    ));
    let ram = [r(0, 0x3f_f000), r(0x40_0000, 0x80_0000)];
    // 255 single pieces fit; the last needs 2 slots where 1 is left.
    assert_eq!(
        MemoryMap::from_parts(&ram, &reservations, &[]).unwrap_err(),
        MemMapError::TooMany {
            what: "reservations",
            capacity: MAX_RESERVED
        }
    );
    reservations.remove(0);
    let map = MemoryMap::from_parts(&ram, &reservations, &[]).unwrap();
    assert_eq!(map.reserved().len(), MAX_RESERVED);
    map.validate().unwrap();
}

// ---- Invariants ----

#[test]
fn validate_catches_broken_maps() {
    let good = MemoryMap::from_parts(
        &[r(0, 0x10_0000)],
        &[Reservation::new(r(0x2000, 0x2800), "x", Source::Early)],
        &[],
    )
    .unwrap();
    good.validate().unwrap();

    let mut m = good.clone();
    m.usable.insert(r(0x2000, 0x3000)).unwrap();
    assert_eq!(
        m.validate(),
        Err(InvariantViolation::UsableReserved {
            usable: r(0, 0x10_0000),
            reserved: r(0x2000, 0x3000)
        })
    );
    let mut m = good.clone();
    m.usable.remove(r(0x5000, 0x7000)).unwrap();
    assert_eq!(
        m.validate(),
        Err(InvariantViolation::PagesLost {
            region: r(0x5000, 0x7000)
        })
    );
    let mut m = good.clone();
    m.usable.insert(r(0x20_0000, 0x20_1000)).unwrap();
    assert_eq!(
        m.validate(),
        Err(InvariantViolation::UsableOutsideMemory {
            region: r(0x20_0000, 0x20_1000)
        })
    );
    let mut m = good.clone();
    m.usable.insert(r(0x10_0000, 0x10_0800)).unwrap();
    assert!(matches!(
        m.validate(),
        Err(InvariantViolation::NotPageAligned { list: "usable", .. })
    ));
    let mut m = good.clone();
    m.memory = RegionSet::new();
    m.memory.insert(r(0, 0x10_0800)).unwrap();
    assert!(matches!(
        m.validate(),
        Err(InvariantViolation::NotPageAligned { list: "memory", .. })
    ));
    let mut m = good.clone();
    let _ = m.reserved.push(Reservation::new(
        r(0x30_0000, 0x30_1000),
        "y",
        Source::Early,
    ));
    assert_eq!(
        m.validate(),
        Err(InvariantViolation::ReservedOutsideMemory {
            region: r(0x30_0000, 0x30_1000)
        })
    );
    let mut m = good.clone();
    let _ = m
        .reserved
        .push(Reservation::new(r(0x1000, 0x1800), "z", Source::Early));
    assert_eq!(
        m.validate(),
        Err(InvariantViolation::Unsorted {
            list: "reserved",
            index: 1
        })
    );
    for e in [
        InvariantViolation::PagesLost {
            region: r(0, 0x1000),
        },
        InvariantViolation::Unsorted {
            list: "usable",
            index: 3,
        },
    ] {
        assert!(!e.to_string().contains('\n'));
    }
}

// ---- Names and messages ----

#[test]
fn source_names() {
    let all = [
        (Source::MemReserve, "memreserve"),
        (Source::ReservedMemory, "reserved-memory"),
        (Source::Dynamic, "dynamic"),
        (Source::Initrd, "initrd"),
        (Source::Dtb, "dtb"),
        (Source::Kernel, "kernel"),
        (Source::Early, "early"),
        (Source::MemMap, "mem_map"),
    ];
    for (source, name) in all {
        assert_eq!(source.as_str(), name);
        assert_eq!(source.to_string(), name);
    }
}

#[test]
fn every_warning_is_one_line_with_a_distinct_kind() {
    let region = r(0x1000, 0x2000);
    let warnings = [
        Warning::BadMemoryNode {
            node: "m",
            problem: Problem::Missing { property: "reg" },
        },
        Warning::BadReservedMemoryNode {
            node: "n",
            problem: Problem::CellSizes {
                address_cells: 3,
                size_cells: 0,
            },
        },
        Warning::BadInitrd {
            problem: Problem::Unpaired {
                present: "a",
                missing: "b",
            },
        },
        Warning::MemoryPastTop {
            node: "",
            base: 1,
            size: u64::MAX,
        },
        Warning::ReservationPastTop {
            name: "k",
            source: Source::Kernel,
            base: 1,
            size: u64::MAX,
        },
        Warning::OutsideMemory {
            name: "i",
            source: Source::Initrd,
            region,
        },
        Warning::PartlyOutsideMemory {
            name: "d",
            source: Source::Dtb,
            region,
            kept: 1,
        },
        Warning::Overlap {
            name: "a",
            source: Source::MemMap,
            other: "b",
            other_source: Source::Dynamic,
            overlap: region,
        },
        Warning::DynamicUnplaced {
            node: "foo@0",
            size: 16 << 20,
            alignment: 4096,
            in_alloc_ranges: true,
        },
        Warning::NoRegOrSize { node: "x" },
        Warning::Unaddressable {
            node: "memory@0",
            region,
            kept: Region::default(),
            limit: Limit::PhysAddrBits(32),
        },
        Warning::OddReservedStatus {
            node: "y",
            status: Some("fail"),
        },
        Warning::NoRanges {
            node: "reserved-memory",
        },
        Warning::EmptyMemReserve { base: 0x1000 },
    ];
    let mut kinds: Vec<&str> = warnings.iter().map(Warning::kind).collect();
    for w in &warnings {
        let line = w.to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line}");
    }
    assert_eq!(
        warnings[3].to_string(),
        "RAM range 0x1 + 0xffffffffffffffff runs past the top of the 64-bit address space; \
         clipped"
    );
    assert_eq!(
        warnings[8].to_string(),
        "reserved-memory node 'foo@0': cannot place 16 MiB dynamic region (aligned to 4 KiB) \
         in its alloc-ranges; nothing reserved"
    );
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), warnings.len());
}

#[test]
fn size_of_the_map() {
    // The kernel builds the map on its boot stack before any heap exists: keep it modest.
    let size = core::mem::size_of::<MemoryMap<'static>>();
    std::eprintln!("MemoryMap is {size} bytes");
    assert!(size <= 24 * 1024, "{size}");
}

#[test]
fn node_paths_are_cut_at_a_character_boundary() {
    let p = NodePath::new(&["reserved-memory", "fw@50000000"]);
    assert_eq!(p.to_string(), "/reserved-memory/fw@50000000");
    assert!(!p.is_truncated());
    let long = "é".repeat(40); // 80 bytes
    let p = NodePath::new(&["reserved-memory", &long]);
    assert!(p.is_truncated());
    assert!(p.as_str().len() <= NodePath::CAPACITY);
    assert!(p.to_string().ends_with("é..."), "{p}");
    assert_eq!(format!("{p:?}"), format!("\"{p}\""));
}

// ---- the framebuffer the display scans out ----

/// QEMU-like RAM and a simple-framebuffer node at 0x4800_0000 (640x480 x8r8g8b8), with a
/// `/reserved-memory` node covering it when `reserved`.
fn with_framebuffer(reserved: bool) -> Vec<u8> {
    let mut t = qemu_like();
    if reserved {
        t = t
            .begin("reserved-memory")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .prop("ranges", &[])
            .begin("splash@48000000")
            .cells("reg", &[0, 0x4800_0000, 0, 0x12_c000])
            .prop("no-map", &[])
            .end()
            .end();
    }
    t.begin("chosen")
        .begin("framebuffer@48000000")
        .string("compatible", "simple-framebuffer")
        .cells("reg", &[0, 0x4800_0000, 0, 0x12_c000])
        .cells("width", &[640])
        .cells("height", &[480])
        .cells("stride", &[2560])
        .string("format", "x8r8g8b8")
        .end()
        .end()
        .build()
}

#[test]
fn an_unreserved_framebuffer_is_reserved_no_map() {
    let blob = with_framebuffer(false);
    let map = map_of(&blob, &NONE).unwrap();
    let fb = map
        .reserved()
        .iter()
        .find(|x| x.source == Source::Framebuffer)
        .expect("framebuffer reserved");
    assert_eq!(fb.region, r(0x4800_0000, 0x4812_c000));
    assert_eq!(fb.name, "framebuffer@48000000");
    assert!(fb.no_map);
    assert!(map
        .usable()
        .iter()
        .all(|u| !u.overlaps(&r(0x4800_0000, 0x4812_c000))));
    assert!(map.warnings().is_empty(), "{:?}", texts(&map));
}

#[test]
fn a_framebuffer_the_tree_reserved_is_not_reserved_twice() {
    let blob = with_framebuffer(true);
    let map = map_of(&blob, &NONE).unwrap();
    assert!(map
        .reserved()
        .iter()
        .all(|x| x.source != Source::Framebuffer));
    assert!(map.warnings().is_empty(), "{:?}", texts(&map));
}

#[test]
fn a_dynamic_region_is_never_placed_on_the_framebuffer() {
    // RAM is 16 MiB at 0x4800_0000 - 0x1000000, and the buffer sits at its top, where
    // top-down placement would go first.
    let blob = Tree::new(2, 2)
        .memory("memory@47000000", &[0, 0x4700_0000, 0, 0x114_c000])
        .begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[])
        .begin("pool")
        .cells("size", &[0, 0x10_0000])
        .end()
        .end()
        .begin("chosen")
        .begin("framebuffer@48000000")
        .string("compatible", "simple-framebuffer")
        .cells("reg", &[0, 0x4802_0000, 0, 0x12_c000])
        .cells("width", &[640])
        .cells("height", &[480])
        .cells("stride", &[2560])
        .string("format", "x8r8g8b8")
        .end()
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    let fb = r(0x4802_0000, 0x4814_c000);
    let pool = map.reserved().iter().find(|x| x.name == "pool").unwrap();
    assert!(!pool.region.overlaps(&fb), "{pool:?}");
    assert!(map
        .reserved()
        .iter()
        .any(|x| x.source == Source::Framebuffer));
}

#[test]
fn a_bad_framebuffer_node_still_keeps_its_memory() {
    let blob = qemu_like()
        .begin("chosen")
        .begin("framebuffer@48000000")
        .string("compatible", "simple-framebuffer")
        .cells("reg", &[0, 0x4800_0000, 0, 0x1000])
        .cells("width", &[640])
        .cells("height", &[480])
        .cells("stride", &[2560])
        .string("format", "x8r8g8b8")
        .end()
        .end()
        .build();
    let map = map_of(&blob, &NONE).unwrap();
    assert!(map
        .reserved()
        .iter()
        .any(|x| x.source == Source::Framebuffer && x.region == r(0x4800_0000, 0x4800_1000)));
}
