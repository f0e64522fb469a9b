//! The memory map and buddy on a tree shaped like the Pixel 6's stock downstream tree, as its
//! bootloader hands it over: root and `/reserved-memory` with `#size-cells = <1>` (so the
//! 6 GiB bank arrives as several `reg` entries of at most 4 GiB - 1 each), dozens of
//! reserved-memory children of every kind (no-map, mapped, reusable, disabled, dynamic with
//! `alloc-ranges`), one of them reaching into the hole between the banks. The tree is built
//! here byte by byte (Devicetree Specification v0.4, chapter 5: header, memory reservation
//! block, structure block, strings block). Every frame the buddy hands out must lie in usable
//! RAM and outside every reservation.

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{Buddy, NullMemory, Owner, Request, MAX_ORDER};
use levitate_mm::mem_map::{self, Page};
use levitate_mm::memmap::{KnownRegions, MemoryMap, Source};
use levitate_mm::region::Region;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A minimal flattened-device-tree writer.
#[derive(Default)]
struct Fdt {
    structure: Vec<u8>,
    strings: Vec<u8>,
}

impl Fdt {
    fn word(&mut self, w: u32) {
        self.structure.extend_from_slice(&w.to_be_bytes());
    }
    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }
    fn begin(&mut self, name: &str) {
        self.word(1); // FDT_BEGIN_NODE
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
    }
    fn end(&mut self) {
        self.word(2); // FDT_END_NODE
    }
    fn prop(&mut self, name: &str, value: &[u8]) {
        let off = match self
            .strings
            .windows(name.len() + 1)
            .position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0)
        {
            Some(o) => o,
            None => {
                let o = self.strings.len();
                self.strings.extend_from_slice(name.as_bytes());
                self.strings.push(0);
                o
            }
        };
        self.word(3); // FDT_PROP
        self.word(value.len() as u32);
        self.word(off as u32);
        self.structure.extend_from_slice(value);
        self.pad();
    }
    fn cells(&mut self, name: &str, cells: &[u32]) {
        let v: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &v);
    }
    fn string(&mut self, name: &str, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.prop(name, &v);
    }
    fn finish(mut self) -> Vec<u8> {
        self.word(9); // FDT_END
        let rsvmap = 40;
        let structure = rsvmap + 16;
        let strings = structure + self.structure.len();
        let total = strings + self.strings.len();
        let mut blob = Vec::with_capacity(total);
        for w in [
            0xd00d_feed,
            total as u32,
            structure as u32,
            strings as u32,
            rsvmap as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            blob.extend_from_slice(&u32::to_be_bytes(w));
        }
        blob.extend_from_slice(&[0; 16]); // empty memory reservation block
        blob.extend_from_slice(&self.structure);
        blob.extend_from_slice(&self.strings);
        blob
    }
}

fn hi(x: u64) -> u32 {
    (x >> 32) as u32
}
fn lo(x: u64) -> u32 {
    x as u32
}

/// (name, base, size, kind). Kinds: "no-map", "mapped", "reusable", "disabled".
fn static_nodes() -> Vec<(String, u64, u64, &'static str)> {
    let mut v = Vec::new();
    // Firmware carve-outs packed in the first bank, as the stock tree has them.
    let kinds = ["no-map", "mapped", "reusable", "no-map", "disabled"];
    for i in 0..30u64 {
        let base = 0x9000_0000 + i * 3 * MIB;
        let kind = kinds[i as usize % kinds.len()];
        v.push((format!("carveout{i}@{base:x}"), base, MIB + i * 4096, kind));
    }
    // Log buffers near the top of the first bank, sizes that are not whole pages.
    v.push(("dss-log@fd3f0000".into(), 0xfd3f_0000, 0xe000, "no-map"));
    v.push(("kinfo@fd3fe000".into(), 0xfd3f_e000, 0x800, "no-map"));
    // A region crossing the end of the first bank into the hole.
    v.push(("straddle@fff00000".into(), 0xfff0_0000, 2 * MIB, "no-map"));
    // In the second bank.
    v.push(("ion@900000000".into(), 0x9_0000_0000, 64 * MIB, "reusable"));
    v
}

/// (name, size, alignment, alloc-range base, alloc-range size).
const DYNAMIC: [(&str, u64, u64, u64, u64); 3] = [
    ("secure-heap", 32 * MIB, 2 * MIB, 0xe000_0000, 256 * MIB),
    ("video-heap", 8 * MIB, MIB, 0x8_8000_0000, GIB),
    ("no-room-first", 4 * MIB, 4096, 0xc000_0000, 4096),
];

fn stock_like_tree() -> Vec<u8> {
    let mut t = Fdt::default();
    t.begin("");
    t.cells("#address-cells", &[2]);
    t.cells("#size-cells", &[1]);
    t.string("compatible", "google,gs101-oriole\0google,gs101");
    t.begin("memory@80000000");
    t.string("device_type", "memory");
    // 2 GiB, then 6 GiB in pieces that one size cell can express.
    let mut reg = vec![0, 0x8000_0000, 0x8000_0000];
    for piece in 0..3u64 {
        let base = 0x8_8000_0000 + piece * 2 * GIB;
        reg.extend([hi(base), lo(base), 0x8000_0000]);
    }
    t.cells("reg", &reg);
    t.end();
    t.begin("reserved-memory");
    t.cells("#address-cells", &[2]);
    t.cells("#size-cells", &[1]);
    t.prop("ranges", &[]);
    for (name, base, size, kind) in static_nodes() {
        t.begin(&name);
        t.cells("reg", &[hi(base), lo(base), size as u32]);
        match kind {
            "no-map" => t.prop("no-map", &[]),
            "reusable" => {
                t.string("compatible", "shared-dma-pool");
                t.prop("reusable", &[]);
            }
            "disabled" => t.string("status", "disabled"),
            _ => {}
        }
        t.end();
    }
    for (name, size, align, range, range_size) in DYNAMIC {
        t.begin(name);
        t.string("compatible", "shared-dma-pool");
        t.cells("size", &[size as u32]);
        t.cells("alignment", &[align as u32]);
        // The first range too small, so placement must move on to the second.
        t.cells(
            "alloc-ranges",
            &[
                hi(range),
                lo(range),
                range_size as u32,
                hi(range + 16 * MIB),
                lo(range + 16 * MIB),
                (64 * MIB) as u32,
            ],
        );
        t.prop("no-map", &[]);
        t.end();
    }
    t.end();
    t.begin("chosen");
    t.string("bootargs", "earlycon=exynos4210,mmio32,0x10a00000");
    t.end();
    t.end();
    t.finish()
}

#[test]
fn the_stock_like_tree_maps_as_the_phone_has_it() {
    let blob = stock_like_tree();
    levitate_mm::dtb::check::check(&blob).expect("the built tree passes the kernel's check");
    let fdt = fdt::Fdt::new(&blob).unwrap();
    let known = KnownRegions {
        dtb: None,
        kernel: Some(Region::new(PhysAddr::new(0x8008_0000), 4 * MIB)),
    };
    let mut map = MemoryMap::from_fdt(&fdt, &known).unwrap();
    map.validate().unwrap();
    // Adjacent reg pieces are one bank; the hole between the banks is not RAM.
    assert_eq!(
        map.memory(),
        [
            Region::new(PhysAddr::new(0x8000_0000), 2 * GIB),
            Region::new(PhysAddr::new(0x8_8000_0000), 6 * GIB)
        ]
    );
    let reserved = |name: &str| {
        map.reserved()
            .iter()
            .find(|r| r.name == name)
            .map(|r| (r.region, r.no_map, r.reusable))
    };
    for (name, base, size, kind) in static_nodes() {
        let got = reserved(&name);
        if kind == "disabled" {
            assert_eq!(got, None, "{name}: disabled nodes release their memory");
            continue;
        }
        let (region, no_map, reusable) = got.unwrap_or_else(|| panic!("{name} not reserved"));
        // Reservations are clipped to RAM (the straddling one loses its part in the hole).
        let end = (base + size).min(if base < 0x1_0000_0000 {
            0x1_0000_0000
        } else {
            u64::MAX
        });
        assert_eq!(region, Region::from_bounds(base, end), "{name}");
        assert_eq!(no_map, kind == "no-map", "{name}");
        assert_eq!(reusable, kind == "reusable", "{name}");
    }
    for (name, size, align, range, range_size) in DYNAMIC {
        let (region, ..) = reserved(name).unwrap_or_else(|| panic!("{name} not placed"));
        assert_eq!(region.size, size, "{name}");
        assert_eq!(region.base.as_u64() % align, 0, "{name}");
        let in_first = range <= region.base.as_u64() && region.end() <= range + range_size;
        let second = range + 16 * MIB;
        let in_second = second <= region.base.as_u64() && region.end() <= second + 64 * MIB;
        assert!(
            in_first || in_second,
            "{name} at {region:?} outside its alloc-ranges"
        );
        if name == "no-room-first" {
            assert!(in_second, "the 4 KiB first range cannot hold 4 MiB");
        }
    }
    assert!(map
        .reserved()
        .iter()
        .any(|r| r.source == Source::Kernel && r.region.base.as_u64() == 0x8008_0000));

    // The buddy over it: take every frame, largest blocks first; none may touch a
    // reservation or lie outside usable RAM.
    let placement = mem_map::place(&mut map).unwrap();
    let usable: Vec<Region> = map.usable().to_vec();
    let reservations: Vec<Region> = map.reserved().iter().map(|r| r.region).collect();
    let pages = vec![Page::new(); placement.layout.frames() as usize];
    let mut buddy = Buddy::new(&pages, &placement.layout, map.memory()).unwrap();
    let managed = buddy.stats().free_frames;
    assert_eq!(
        managed,
        usable.iter().map(|r| r.size / PAGE_SIZE).sum::<u64>()
    );
    let mut taken = 0;
    for order in (0..=MAX_ORDER).rev() {
        while let Ok(block) = buddy.alloc(Request::new(order, Owner::Kernel), &mut NullMemory) {
            let r = Region::new(block.addr, PAGE_SIZE << order);
            assert!(
                usable
                    .iter()
                    .any(|u| u.base <= r.base && r.end() <= u.end()),
                "{r:?} is not inside usable RAM"
            );
            if let Some(bad) = reservations.iter().find(|x| x.overlaps(&r)) {
                panic!("{r:?} overlaps the reservation {bad:?}");
            }
            taken += 1u64 << order;
        }
    }
    assert_eq!(taken, managed, "every usable frame was handed out once");
    buddy.validate().unwrap();
}
