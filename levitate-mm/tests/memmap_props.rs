//! Property tests of the memory map on random parts (`MemoryMap::from_parts`): unsorted,
//! overlapping and empty RAM ranges and reservations, some at 0 and some running past 2^64,
//! and random dynamic requests. Each map is checked with `validate()` and against a simple
//! page-level model that places dynamic regions by brute force; kernel-time `reserve` calls
//! follow, with `validate()` after each.

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::memmap::{
    AllocRanges, DynamicRequest, MemMapError, MemoryMap, Reservation, Source, Warning, MAX_RESERVED,
};
use levitate_mm::region::Region;
use proptest::prelude::*;
use std::collections::BTreeSet;

const NAMES: [&str; 12] = [
    "n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10", "n11",
];
const SOURCES: [Source; 5] = [
    Source::MemReserve,
    Source::ReservedMemory,
    Source::Initrd,
    Source::Dtb,
    Source::Kernel,
];

/// Addresses in a small universe (64 pages), mostly page aligned, plus 0 and the top of the
/// address space.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0u64..64, 0u64..4, 0u64..PAGE_SIZE)
            .prop_map(|(page, k, off)| page * PAGE_SIZE + if k == 0 { off } else { 0 }),
        1 => Just(0u64),
        1 => (0u64..8, 0u64..PAGE_SIZE).prop_map(|(page, off)| u64::MAX - page * PAGE_SIZE - off),
    ]
}

/// Small sizes (bounded, so RAM stays a few hundred pages), sometimes 0 or unaligned.
fn small_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0u64..16, 0u64..4, 0u64..PAGE_SIZE)
            .prop_map(|(pages, k, off)| pages * PAGE_SIZE + if k == 0 { off } else { 0 }),
        1 => Just(0u64),
    ]
}

/// Any size, including ones that run past 2^64.
fn any_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => small_size(),
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
}

/// A raw region: its fields are public, so base + size may overflow.
fn raw(base: u64, size: u64) -> Region {
    Region {
        base: PhysAddr::new(base),
        size,
    }
}

#[derive(Clone, Debug)]
struct Dyn {
    size: u64,
    alignment: u64,
    windows: Option<Vec<(u64, u64)>>,
    no_map: bool,
}

fn dynamic() -> impl Strategy<Value = Dyn> {
    let alignment = prop_oneof![
        Just(0u64),
        Just(1),
        Just(PAGE_SIZE),
        Just(2 * PAGE_SIZE),
        Just(3 * PAGE_SIZE),
        Just(16 * PAGE_SIZE),
        Just(1 << 63),
        Just(u64::MAX),
    ];
    let size = prop_oneof![
        8 => (0u64..8, 0u64..2, 1u64..PAGE_SIZE)
            .prop_map(|(pages, k, off)| pages * PAGE_SIZE + if k == 0 { off } else { 0 }),
        1 => Just(0u64),
        1 => Just(u64::MAX),
    ];
    let windows = prop::option::of(prop::collection::vec((addr(), any_size()), 0..3));
    (size, alignment, windows, any::<bool>()).prop_map(|(size, alignment, windows, no_map)| Dyn {
        size,
        alignment,
        windows,
        no_map,
    })
}

#[derive(Clone, Debug)]
struct Parts {
    ram: Vec<(u64, u64)>,
    reservations: Vec<(u64, u64, usize, bool)>,
    dynamic: Vec<Dyn>,
    later: Vec<(u64, u64)>,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        prop::collection::vec((addr(), small_size()), 0..8),
        prop::collection::vec((addr(), any_size(), 0..SOURCES.len(), any::<bool>()), 0..10),
        prop::collection::vec(dynamic(), 0..4),
        prop::collection::vec((addr(), any_size()), 0..6),
    )
        .prop_map(|(ram, reservations, dynamic, later)| Parts {
            ram,
            reservations,
            dynamic,
            later,
        })
}

/// The model: RAM and reservations at page granularity, pages numbered by base address / 4 KiB.
struct Model {
    ram: BTreeSet<u64>,
    reserved: BTreeSet<u64>,
}

fn clip(base: u64, size: u64) -> (u128, u128) {
    let base = u128::from(base);
    (base, (base + u128::from(size)).min(u128::from(u64::MAX)))
}

/// Whether page `p` shares a byte with `[start, end)`.
fn touches(p: u64, (start, end): (u128, u128)) -> bool {
    let page = u128::from(p) * u128::from(PAGE_SIZE);
    start < end && start < page + u128::from(PAGE_SIZE) && page < end
}

impl Model {
    fn new(ram: &[(u64, u64)]) -> Self {
        // Merge the clipped ranges, then keep the pages wholly inside the union.
        let mut ranges: Vec<(u128, u128)> = ram
            .iter()
            .map(|&(b, s)| clip(b, s))
            .filter(|(s, e)| s < e)
            .collect();
        ranges.sort();
        let mut merged: Vec<(u128, u128)> = Vec::new();
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let page = u128::from(PAGE_SIZE);
        let mut pages = BTreeSet::new();
        for (s, e) in merged {
            let first = s.div_ceil(page);
            let last = e / page; // exclusive
            for p in first..last {
                pages.insert(p as u64);
            }
        }
        Model {
            ram: pages,
            reserved: BTreeSet::new(),
        }
    }

    fn reserve(&mut self, range: (u128, u128)) {
        let hits: Vec<u64> = self
            .ram
            .iter()
            .copied()
            .filter(|&p| touches(p, range))
            .collect();
        self.reserved.extend(hits);
    }

    fn free(&self, p: u64) -> bool {
        self.ram.contains(&p) && !self.reserved.contains(&p)
    }

    fn usable(&self) -> BTreeSet<u64> {
        self.ram.difference(&self.reserved).copied().collect()
    }

    /// Brute force: the highest page-aligned base, a multiple of the alignment, whose pages are
    /// all free and inside the first window (whole pages) that has such a base.
    fn place(&self, d: &Dyn) -> Option<u64> {
        if d.size == 0 {
            return None;
        }
        let align = lcm_with_page(d.alignment)?;
        let pages = d.size.checked_next_multiple_of(PAGE_SIZE)? / PAGE_SIZE;
        let windows: Vec<(u128, u128)> = match &d.windows {
            None => vec![(0, u128::from(u64::MAX))],
            Some(list) => list.iter().map(|&(b, s)| clip(b, s)).collect(),
        };
        let page = u128::from(PAGE_SIZE);
        for (ws, we) in windows {
            let (lo, hi) = (ws.div_ceil(page), we / page); // whole pages in the window
            for &p in self.ram.iter().rev() {
                let base = p * PAGE_SIZE;
                let fits = u128::from(p) >= lo
                    && u128::from(p) + u128::from(pages) <= hi
                    && base.is_multiple_of(align)
                    && (0..pages).all(|i| p.checked_add(i).is_some_and(|q| self.free(q)));
                if fits {
                    return Some(base);
                }
            }
        }
        None
    }
}

fn lcm_with_page(alignment: u64) -> Option<u64> {
    if alignment <= 1 {
        return Some(PAGE_SIZE);
    }
    let mut a = alignment;
    let mut b = PAGE_SIZE;
    while b != 0 {
        (a, b) = (b, a % b);
    }
    (alignment / a).checked_mul(PAGE_SIZE)
}

fn pages_of(list: &[Region]) -> BTreeSet<u64> {
    list.iter()
        .flat_map(|r| (r.base.as_u64() / PAGE_SIZE)..(r.end() / PAGE_SIZE))
        .collect()
}

/// Checks `map` against the model after every step.
fn check_against(map: &MemoryMap<'_>, model: &Model) -> Result<(), TestCaseError> {
    map.validate()
        .map_err(|e| TestCaseError::fail(format!("validate: {e}")))?;
    prop_assert_eq!(pages_of(map.memory()), model.ram.clone());
    prop_assert_eq!(pages_of(map.usable()), model.usable());
    // Every RAM page is usable or touched by a listed reservation, never both.
    let usable = pages_of(map.usable());
    for &p in &model.ram {
        let reserved = map
            .reserved()
            .iter()
            .any(|x| touches(p, clip(x.region.base.as_u64(), x.region.size)));
        prop_assert!(usable.contains(&p) != reserved, "page {:#x}", p * PAGE_SIZE);
    }
    Ok(())
}

fn run(parts: &Parts) -> Result<(), TestCaseError> {
    let ram: Vec<Region> = parts.ram.iter().map(|&(b, s)| raw(b, s)).collect();
    let reservations: Vec<Reservation<'static>> = parts
        .reservations
        .iter()
        .enumerate()
        .map(|(i, &(b, s, source, no_map))| Reservation {
            region: raw(b, s),
            name: NAMES[i],
            source: SOURCES[source],
            no_map,
            reusable: !no_map && s % 2 == 1,
        })
        .collect();
    let windows: Vec<Vec<Region>> = parts
        .dynamic
        .iter()
        .map(|d| {
            d.windows
                .iter()
                .flatten()
                .map(|&(b, s)| raw(b, s))
                .collect()
        })
        .collect();
    let requests: Vec<DynamicRequest<'_>> = parts
        .dynamic
        .iter()
        .zip(&windows)
        .enumerate()
        .map(|(i, (d, w))| DynamicRequest {
            name: NAMES[i],
            size: d.size,
            alignment: d.alignment,
            alloc_ranges: match d.windows {
                None => AllocRanges::Anywhere,
                Some(_) => AllocRanges::Listed(w),
            },
            no_map: d.no_map,
            reusable: false,
        })
        .collect();

    let mut model = Model::new(&parts.ram);
    for &(b, s, _, _) in &parts.reservations {
        model.reserve(clip(b, s));
    }
    let mut placed = Vec::new();
    for d in &parts.dynamic {
        let at = model.place(d);
        if let Some(base) = at {
            model.reserve(clip(base, d.size));
        }
        placed.push(at);
    }

    let map = match MemoryMap::from_parts(&ram, &reservations, &requests) {
        Ok(map) => map,
        Err(MemMapError::NoMemory) => {
            prop_assert!(parts.ram.iter().all(|&(b, s)| clip(b, s).0 == clip(b, s).1));
            return Ok(());
        }
        Err(MemMapError::NoUsableMemory) => {
            prop_assert!(model.usable().is_empty());
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
    };
    check_against(&map, &model)?;

    // Static reservations: exactly the given ones clipped to each RAM range.
    let mut expected: Vec<(Region, &str)> = Vec::new();
    for res in &reservations {
        let clipped = Region::new(res.region.base, res.region.size);
        for m in map.memory() {
            let piece = m.intersect(&clipped);
            if !piece.is_empty() {
                expected.push((piece, res.name));
            }
        }
    }
    let mut got: Vec<(Region, &str)> = map
        .reserved()
        .iter()
        .filter(|x| x.source != Source::Dynamic)
        .map(|x| (x.region, x.name))
        .collect();
    expected.sort();
    got.sort();
    prop_assert_eq!(got, expected);

    // Dynamic regions: where the brute-force model puts them, aligned, inside RAM and their
    // window, on pages no other reservation touches.
    for (i, (d, at)) in parts.dynamic.iter().zip(&placed).enumerate() {
        let found: Vec<_> = map
            .reserved()
            .iter()
            .filter(|x| x.source == Source::Dynamic && x.name == NAMES[i])
            .collect();
        match at {
            None => {
                prop_assert!(found.is_empty());
                let warned = map.warnings().iter().any(|w| match w {
                    Warning::DynamicUnplaced { node, .. } => *node == NAMES[i],
                    Warning::BadReservedMemoryNode { node, .. } => *node == NAMES[i],
                    _ => false,
                });
                prop_assert!(warned, "no warning for unplaced {}", NAMES[i]);
            }
            Some(base) => {
                prop_assert_eq!(found.len(), 1);
                let x = found[0];
                prop_assert_eq!(x.region, Region::new(PhysAddr::new(*base), d.size));
                prop_assert_eq!(x.no_map, d.no_map);
                prop_assert!(base.is_multiple_of(lcm_with_page(d.alignment).unwrap()));
                prop_assert!(map
                    .memory()
                    .iter()
                    .any(|m| m.intersect(&x.region) == x.region));
                if let Some(list) = &d.windows {
                    let (start, end) = (x.region.base.as_u64(), x.region.end());
                    let inside = list.iter().any(|&(b, s)| {
                        let (ws, we) = clip(b, s);
                        ws <= u128::from(start) && u128::from(end) <= we
                    });
                    prop_assert!(inside, "outside its alloc-ranges");
                }
                let pages = x.region.page_outward();
                for other in map.reserved().iter().filter(|o| !std::ptr::eq(*o, x)) {
                    prop_assert!(!other.region.page_outward().overlaps(&pages));
                }
            }
        }
    }

    // Kernel-time reservations, validated after each.
    let mut map = map;
    for (i, &(b, s)) in parts.later.iter().enumerate() {
        let before = format!("{map:?}");
        match map.reserve(raw(b, s), NAMES[i], Source::Early) {
            Ok(()) => {
                model.reserve(clip(b, s));
                check_against(&map, &model)?;
            }
            Err(MemMapError::TooMany { .. }) => {
                let after = format!("{map:?}");
                prop_assert_eq!(after, before, "a failed reserve changed the map");
            }
            Err(e) => return Err(TestCaseError::fail(format!("reserve: {e}"))),
        }
    }
    let t = map.totals();
    prop_assert_eq!(t.memory, t.reserved + t.usable);
    prop_assert!(t.no_map <= t.reserved);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_maps_match_the_model(parts in parts()) {
        run(&parts)?;
    }

    /// Many reservations in a wide space: either a valid map or a capacity error, never a
    /// panic or a silently shortened list.
    #[test]
    fn many_reservations_fill_or_fail_cleanly(
        ram in prop::collection::vec((0u64..1 << 20, 1u64..1 << 16), 1..80),
        res in prop::collection::vec((0u64..1 << 20, 0u64..1 << 8), 0..300),
    ) {
        let ram: Vec<Region> = ram
            .iter()
            .map(|&(p, n)| raw(p * PAGE_SIZE, n * PAGE_SIZE))
            .collect();
        let reservations: Vec<Reservation<'_>> = res
            .iter()
            .map(|&(p, n)| Reservation::new(raw(p * PAGE_SIZE + 7, n * 100), "r", Source::Early))
            .collect();
        match MemoryMap::from_parts(&ram, &reservations, &[]) {
            Ok(map) => {
                map.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(map.reserved().len() <= MAX_RESERVED);
            }
            Err(MemMapError::TooMany { .. } | MemMapError::NoUsableMemory) => {}
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }
}
