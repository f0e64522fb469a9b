//! Property test: reserved memory fails closed. Random `/reserved-memory` nodes (valid or
//! broken cell sizes and `ranges`, children with every status, static children with good,
//! empty, ragged or zero-size `reg`, dynamic ones with good or bad `size` and `alloc-ranges`)
//! are checked against a simple model: the map is an error naming the first enabled child
//! (or the parent) the model cannot decode, and otherwise every byte an enabled static child
//! names inside RAM is kept out of usable memory.

use super::builder::Tree;
use super::*;
use proptest::prelude::*;
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

#[derive(Clone, Debug)]
enum Cells {
    Valid(u32, u32),
    TooMany,
    MissingAddress,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ranges {
    Empty,
    Absent,
    Translating,
}

#[derive(Clone, Debug)]
enum Kind {
    /// `reg` entries, then `extra` stray bytes (4 or 0); no entries means `reg = <>`.
    Static {
        entries: Vec<(u64, u64)>,
        extra: bool,
    },
    /// `size` of `size_len` bytes, and maybe `alloc-ranges` with stray bytes.
    Dynamic {
        size_len: usize,
        alloc: Option<bool>,
    },
}

#[derive(Clone, Debug)]
struct Child {
    status: Option<&'static str>,
    kind: Kind,
}

fn entry() -> impl Strategy<Value = (u64, u64)> {
    (
        0x3800u64..0x8800,
        prop_oneof![1 => Just(0u64), 6 => 1u64..0x40],
    )
        .prop_map(
            |(page, pages)| (page * 0x1_0000, pages * 0x1000), // 64 KiB steps, sizes in pages
        )
}

fn child() -> impl Strategy<Value = Child> {
    let status = prop_oneof![
        3 => Just(None),
        1 => Just(Some("okay")),
        1 => Just(Some("disabled")),
        1 => Just(Some("reserved")),
    ];
    let kind = prop_oneof![
        4 => (prop::collection::vec(entry(), 0..3), prop::bool::weighted(0.15))
            .prop_map(|(entries, extra)| Kind::Static { entries, extra }),
        1 => (prop_oneof![Just(4usize), Just(8), Just(3)],
              prop_oneof![Just(None), Just(Some(false)), Just(Some(true))])
            .prop_map(|(size_len, alloc)| Kind::Dynamic { size_len, alloc }),
    ];
    (status, kind).prop_map(|(status, kind)| Child { status, kind })
}

fn cells_strategy() -> impl Strategy<Value = Cells> {
    prop_oneof![
        8 => (1u32..=2, 1u32..=2).prop_map(|(a, s)| Cells::Valid(a, s)),
        1 => Just(Cells::TooMany),
        1 => Just(Cells::MissingAddress),
    ]
}

fn ranges_strategy() -> impl Strategy<Value = Ranges> {
    prop_oneof![6 => Just(Ranges::Empty), 1 => Just(Ranges::Absent), 1 => Just(Ranges::Translating)]
}

/// Cells of one number in `n` cells (1 or 2).
fn number_cells(value: u64, n: u32) -> Vec<u32> {
    if n == 1 {
        vec![value as u32]
    } else {
        vec![(value >> 32) as u32, value as u32]
    }
}

/// The tree: 1 GiB of RAM at 0x4000_0000, one `/reserved-memory` holding `children`.
fn build(cells: &Cells, ranges: Ranges, children: &[Child]) -> Vec<u8> {
    let (ac, sc) = match cells {
        Cells::Valid(a, s) => (*a, *s),
        Cells::TooMany | Cells::MissingAddress => (2, 2),
    };
    let mut t = Tree::new(2, 2)
        .memory("memory@40000000", &[0, 0x4000_0000, 0, 0x4000_0000])
        .begin("reserved-memory");
    t = match cells {
        Cells::Valid(..) => t.cells("#address-cells", &[ac]).cells("#size-cells", &[sc]),
        Cells::TooMany => t.cells("#address-cells", &[3]).cells("#size-cells", &[2]),
        Cells::MissingAddress => t.cells("#size-cells", &[2]),
    };
    t = match ranges {
        Ranges::Empty => t.prop("ranges", &[]),
        Ranges::Absent => t,
        Ranges::Translating => t.cells("ranges", &[0, 0, 0, 1, 0, 0x10, 0, 0]),
    };
    for (i, c) in children.iter().enumerate() {
        t = t.begin(&format!("c{i}"));
        if let Some(s) = c.status {
            t = t.string("status", s);
        }
        match &c.kind {
            Kind::Static { entries, extra } => {
                let mut reg = Vec::new();
                for (base, size) in entries {
                    reg.extend(number_cells(*base, ac));
                    reg.extend(number_cells(*size, sc));
                }
                if *extra {
                    reg.push(7);
                }
                t = t.cells("reg", &reg);
            }
            Kind::Dynamic { size_len, alloc } => {
                let size: Vec<u8> = [0u8, 0, 0, 0, 0, 0, 0x10, 0][8 - size_len..].to_vec();
                t = t.prop("size", &size);
                if let Some(extra) = alloc {
                    let mut v = number_cells(0x4000_0000, ac);
                    v.extend(number_cells(0x100_0000, sc));
                    if *extra {
                        v.push(5);
                    }
                    t = t.cells("alloc-ranges", &v);
                }
            }
        }
        t = t.end();
    }
    t.end().build()
}

/// What the model expects: `Err(path)` of the first node it cannot decode, or `Ok`.
fn expected(cells: &Cells, ranges: Ranges, children: &[Child]) -> Result<(), String> {
    let parent_ok = matches!(cells, Cells::Valid(..)) && ranges != Ranges::Translating;
    for (i, c) in children.iter().enumerate() {
        if c.status == Some("disabled") {
            continue;
        }
        let needs_cells = match &c.kind {
            Kind::Static { .. } => true,
            Kind::Dynamic { size_len, alloc } => {
                if *size_len == 3 {
                    return Err(format!("/reserved-memory/c{i}"));
                }
                alloc.is_some()
            }
        };
        if needs_cells && !parent_ok {
            return Err("/reserved-memory".into());
        }
        let broken = match &c.kind {
            Kind::Static { entries, extra } => {
                entries.is_empty() || *extra || entries.iter().any(|e| e.1 == 0)
            }
            Kind::Dynamic { alloc, .. } => *alloc == Some(true),
        };
        if broken {
            return Err(format!("/reserved-memory/c{i}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn undecodable_reservations_never_become_usable(
        cells in cells_strategy(),
        ranges in ranges_strategy(),
        children in prop::collection::vec(child(), 1..5),
    ) {
        let blob = build(&cells, ranges, &children);
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let got = MemoryMap::from_fdt(&fdt, &KnownRegions::default());
        match (expected(&cells, ranges, &children), got) {
            (Err(path), Err(MemMapError::BadReservedMemory { node, .. }))
            | (Err(path), Err(MemMapError::BadReservedMemoryParent { node, .. })) => {
                prop_assert_eq!(node.as_str(), path.as_str());
            }
            (Ok(()), Ok(map)) => {
                map.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let ram = Region::from_bounds(0x4000_0000, 0x8000_0000);
                for c in children.iter().filter(|c| c.status != Some("disabled")) {
                    if let Kind::Static { entries, .. } = &c.kind {
                        for &(base, size) in entries {
                            let named = Region::new(PhysAddr::new(base), size).intersect(&ram);
                            prop_assert!(
                                !map.usable().iter().any(|u| u.overlaps(&named)),
                                "{:?} is usable", named
                            );
                        }
                    }
                }
            }
            (want, got) => {
                return Err(TestCaseError::fail(format!("expected {want:?}, got {got:?}")));
            }
        }
    }
}
