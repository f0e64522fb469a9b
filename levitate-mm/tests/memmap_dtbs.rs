//! The memory map of every real device tree in tests/dtbs, against values read off the trees
//! with `dtc -I dtb -O dts` and written here as literals: RAM, each reservation, usable
//! memory, totals and warnings. Every map must also pass `validate()`.

use levitate_mm::addr::PhysAddr;
use levitate_mm::dtb::check::check;
use levitate_mm::memmap::{KnownRegions, MemMapError, MemoryMap, Source, Totals};
use levitate_mm::region::Region;

const QEMU_1G: &[u8] = include_bytes!("dtbs/qemu-virt-1g.dtb");
const QEMU_128M: &[u8] = include_bytes!("dtbs/qemu-virt-128m.dtb");
const QEMU_8G: &[u8] = include_bytes!("dtbs/qemu-virt-8g.dtb");
const QEMU_EL2_2G: &[u8] = include_bytes!("dtbs/qemu-virt-el2-gicv3-2g.dtb");
const JUNO: &[u8] = include_bytes!("dtbs/juno.dtb");
const FVP: &[u8] = include_bytes!("dtbs/fvp-base-revc.dtb");
const RPI3: &[u8] = include_bytes!("dtbs/bcm2837-rpi-3-b.dtb");
const ODROID_N2: &[u8] = include_bytes!("dtbs/meson-g12b-odroid-n2.dtb");
const ODROID_N2_ALLOC_RANGES: &[u8] =
    include_bytes!("dtbs/meson-g12b-odroid-n2.SYNTHETIC-alloc-ranges.dtb");
const PIXEL6: &[u8] = include_bytes!("dtbs/gs101-oriole.dtb");
const PIXEL6_MEMORY: &[u8] = include_bytes!("dtbs/gs101-oriole.SYNTHETIC-memory.dtb");

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const NONE: KnownRegions = KnownRegions {
    dtb: None,
    kernel: None,
};

const fn r(start: u64, end: u64) -> Region {
    Region::from_bounds(start, end)
}

/// (region, name, source, no_map, reusable)
type Row = (Region, &'static str, Source, bool, bool);

struct Expected<'e> {
    memory: &'e [Region],
    reserved: &'e [Row],
    usable: &'e [Region],
    warnings: &'e [&'e str],
}

fn map_of<'a>(blob: &'a [u8], known: &KnownRegions) -> Result<MemoryMap<'a>, MemMapError> {
    check(blob).expect("real trees pass dtb::check");
    let fdt = fdt::Fdt::new(blob).unwrap();
    MemoryMap::from_fdt(&fdt, known)
}

fn assert_map(name: &str, blob: &[u8], known: &KnownRegions, e: &Expected<'_>) -> Totals {
    let map = map_of(blob, known).unwrap_or_else(|err| panic!("{name}: {err}"));
    map.validate().unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(map.memory(), e.memory, "{name}: memory");
    let rows: Vec<(Region, &str, Source, bool, bool)> = map
        .reserved()
        .iter()
        .map(|x| (x.region, x.name, x.source, x.no_map, x.reusable))
        .collect();
    assert_eq!(rows, e.reserved, "{name}: reserved");
    assert_eq!(map.usable(), e.usable, "{name}: usable");
    let warnings: Vec<String> = map.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings, e.warnings, "{name}: warnings");
    assert_eq!(map.dropped_warnings(), 0);
    let t = map.totals();
    let sum = |list: &[Region]| list.iter().map(|x| x.size).sum::<u64>();
    assert_eq!(t.memory, sum(e.memory), "{name}");
    assert_eq!(t.usable, sum(e.usable), "{name}");
    assert_eq!(t.reserved, t.memory - t.usable, "{name}");
    t
}

fn ram_only(memory: &[Region]) -> Expected<'_> {
    Expected {
        memory,
        reserved: &[],
        usable: memory,
        warnings: &[],
    }
}

#[test]
fn qemu_virt_ram_sizes() {
    let cases: [(&str, &[u8], &[Region]); 4] = [
        (
            "qemu 128M",
            QEMU_128M,
            &[Region::new(PhysAddr::new(0x4000_0000), 128 * MIB)],
        ),
        (
            "qemu 1G",
            QEMU_1G,
            &[Region::new(PhysAddr::new(0x4000_0000), GIB)],
        ),
        (
            "qemu EL2 2G",
            QEMU_EL2_2G,
            &[Region::new(PhysAddr::new(0x4000_0000), 2 * GIB)],
        ),
        (
            "qemu 8G",
            QEMU_8G,
            &[Region::new(PhysAddr::new(0x4000_0000), 8 * GIB)],
        ),
    ];
    for (name, blob, memory) in cases {
        let t = assert_map(name, blob, &NONE, &ram_only(memory));
        assert_eq!(t.reserved, 0);
    }
}

#[test]
fn qemu_virt_with_kernel_and_dtb() {
    // QEMU puts the blob at the start of RAM for an ELF kernel; the kernel's load address and
    // size are what a boot would pass.
    let known = KnownRegions {
        dtb: Some(Region::new(
            PhysAddr::new(0x4000_0000),
            QEMU_1G.len() as u64,
        )),
        kernel: Some(r(0x4020_0000, 0x4060_0000)),
    };
    let t = assert_map(
        "qemu 1G + kernel",
        QEMU_1G,
        &known,
        &Expected {
            memory: &[r(0x4000_0000, 0x8000_0000)],
            reserved: &[
                (
                    r(0x4000_0000, 0x4000_1d4e),
                    "dtb",
                    Source::Dtb,
                    false,
                    false,
                ),
                (
                    r(0x4020_0000, 0x4060_0000),
                    "kernel",
                    Source::Kernel,
                    false,
                    false,
                ),
            ],
            usable: &[r(0x4000_2000, 0x4020_0000), r(0x4060_0000, 0x8000_0000)],
            warnings: &[],
        },
    );
    assert_eq!(t.reserved, 0x2000 + 4 * MIB);
}

#[test]
fn juno_two_ranges_around_a_hole() {
    assert_map(
        "juno",
        JUNO,
        &NONE,
        &ram_only(&[r(0x8000_0000, 0xff00_0000), r(0x8_8000_0000, 0xa_0000_0000)]),
    );
}

#[test]
fn fvp_memreserve_and_a_reservation_outside_ram() {
    let t = assert_map(
        "fvp",
        FVP,
        &NONE,
        &Expected {
            memory: &[
                r(0x8000_0000, 0x1_0000_0000),
                r(0x8_8000_0000, 0x9_0000_0000),
            ],
            reserved: &[(
                r(0x8000_0000, 0x8001_0000),
                "/memreserve/",
                Source::MemReserve,
                false,
                false,
            )],
            usable: &[
                r(0x8001_0000, 0x1_0000_0000),
                r(0x8_8000_0000, 0x9_0000_0000),
            ],
            // vram sits in the FVP's video SRAM, not in RAM.
            warnings: &[
                "reserved-memory node 'vram@18000000' 0x18000000..0x18800000 (8 MiB) \
                         lies wholly outside RAM; ignored",
            ],
        },
    );
    assert_eq!(t.memory, 4 * GIB);
}

#[test]
fn rpi3_ram_at_zero_with_one_cell() {
    assert_map(
        "rpi3",
        RPI3,
        &NONE,
        &Expected {
            memory: &[r(0, 0x4000_0000)],
            reserved: &[
                // The spin table page the firmware keeps.
                (
                    r(0, 0x1000),
                    "/memreserve/",
                    Source::MemReserve,
                    false,
                    false,
                ),
                // linux,cma: 64 MiB, no alloc-ranges: top of RAM.
                (
                    r(0x3c00_0000, 0x4000_0000),
                    "linux,cma",
                    Source::Dynamic,
                    false,
                    true,
                ),
            ],
            usable: &[r(0x1000, 0x3c00_0000)],
            warnings: &[],
        },
    );
}

const ODROID_SECMON: [Row; 2] = [
    (
        r(0x500_0000, 0x530_0000),
        "secmon@5000000",
        Source::ReservedMemory,
        true,
        false,
    ),
    (
        r(0x530_0000, 0x730_0000),
        "secmon@5300000",
        Source::ReservedMemory,
        true,
        false,
    ),
];

#[test]
fn odroid_n2_dynamic_cma() {
    // linux,cma: 256 MiB aligned to 4 MiB, no alloc-ranges in this tree: top of RAM.
    let t = assert_map(
        "odroid-n2",
        ODROID_N2,
        &NONE,
        &Expected {
            memory: &[r(0, 0x4000_0000)],
            reserved: &[
                ODROID_SECMON[0],
                ODROID_SECMON[1],
                (
                    r(0x3000_0000, 0x4000_0000),
                    "linux,cma",
                    Source::Dynamic,
                    false,
                    true,
                ),
            ],
            usable: &[r(0, 0x500_0000), r(0x730_0000, 0x3000_0000)],
            warnings: &[],
        },
    );
    assert_eq!(t.no_map, 35 * MIB);
}

#[test]
fn odroid_n2_dynamic_cma_inside_its_alloc_range() {
    // The same tree with alloc-ranges = <0 0x5000000 0 0x1000000>, <0 0x8000000 0 0x18000000>
    // added by hand: the first range (16 MiB) is too small, so the region goes top-down into
    // the second, [0x0800_0000, 0x2000_0000).
    let t = assert_map(
        "odroid-n2 alloc-ranges",
        ODROID_N2_ALLOC_RANGES,
        &NONE,
        &Expected {
            memory: &[r(0, 0x4000_0000)],
            reserved: &[
                ODROID_SECMON[0],
                ODROID_SECMON[1],
                (
                    r(0x1000_0000, 0x2000_0000),
                    "linux,cma",
                    Source::Dynamic,
                    false,
                    true,
                ),
            ],
            usable: &[
                r(0, 0x500_0000),
                r(0x730_0000, 0x1000_0000),
                r(0x2000_0000, 0x4000_0000),
            ],
            warnings: &[],
        },
    );
    assert_eq!(t.usable, GIB - 35 * MIB - 256 * MIB);
}

#[test]
fn pixel6_without_memory_node_is_a_clean_error() {
    assert_eq!(map_of(PIXEL6, &NONE).unwrap_err(), MemMapError::NoMemory);
}

#[test]
fn pixel6_with_memory_node() {
    const NO_MAP: [Row; 9] = [
        (
            r(0x9020_0000, 0x9060_0000),
            "gsa@90200000",
            Source::ReservedMemory,
            true,
            false,
        ),
        (
            r(0x9300_0000, 0x9400_0000),
            "tpu-fw@93000000",
            Source::ReservedMemory,
            true,
            false,
        ),
        (
            r(0x9400_0000, 0x9700_0000),
            "aoc@94000000",
            Source::ReservedMemory,
            true,
            false,
        ),
        (
            r(0xf880_0000, 0xfa80_0000),
            "abl@f8800000",
            Source::ReservedMemory,
            true,
            false,
        ),
        // The stock tree has no splash node: the board entry keeps the panel's buffer.
        (
            r(0xfac0_0000, 0xfb5e_3400),
            "google,gs101-oriole",
            Source::Framebuffer,
            true,
            false,
        ),
        (
            r(0xfd3f_0000, 0xfd3f_e000),
            "dss-log-reserved@fd3f0000",
            Source::ReservedMemory,
            true,
            false,
        ),
        (
            r(0xfd3f_e000, 0xfd3f_f000),
            "debug-kinfo-reserved@fd3fe000",
            Source::ReservedMemory,
            true,
            false,
        ),
        (
            r(0xfd80_0000, 0xfd90_0000),
            "bldr-log-reserved@fd800000",
            Source::ReservedMemory,
            true,
            false,
        ),
        (
            r(0xfd90_0000, 0xfd90_2000),
            "bldr-log-hist-reserved@fd900000",
            Source::ReservedMemory,
            true,
            false,
        ),
    ];
    let t = assert_map(
        "pixel6 synthetic memory",
        PIXEL6_MEMORY,
        &NONE,
        &Expected {
            // Four 2 GiB reg entries (#size-cells = <1>), the last three contiguous.
            memory: &[
                r(0x8000_0000, 0x1_0000_0000),
                r(0x8_8000_0000, 0xa_0000_0000),
            ],
            reserved: &NO_MAP,
            usable: &[
                r(0x8000_0000, 0x9020_0000),
                r(0x9060_0000, 0x9300_0000),
                r(0x9700_0000, 0xf880_0000),
                r(0xfa80_0000, 0xfac0_0000),
                r(0xfb5e_4000, 0xfd3f_0000),
                r(0xfd3f_f000, 0xfd80_0000),
                r(0xfd90_2000, 0x1_0000_0000),
                r(0x8_8000_0000, 0xa_0000_0000),
            ],
            warnings: &[],
        },
    );
    assert_eq!(t.memory, 8 * GIB);
    assert_eq!(t.no_map, 101 * MIB + 68 * 1024 + 0x9e_4000);
    assert_eq!(t.reserved, t.no_map);
}

#[test]
fn pixel6_tree_with_splash_node_is_not_reserved_twice() {
    let blob = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/dtbs/gs101-oriole.SYNTHETIC-memory-fb.dtb"
    ))
    .unwrap();
    let map = map_of(&blob, &NONE).unwrap();
    map.validate().unwrap();
    let splash: Vec<_> = map
        .reserved()
        .iter()
        .filter(|x| x.region.overlaps(&r(0xfac0_0000, 0xfb5e_3400)))
        .map(|x| (x.name, x.source, x.no_map))
        .collect();
    assert_eq!(
        splash,
        [("splash@fac00000", Source::ReservedMemory, true)],
        "the tree's splash node covers the framebuffer"
    );
    assert!(map.warnings().is_empty());
}

#[test]
fn kernel_time_reservations_on_a_real_tree() {
    let mut map = map_of(PIXEL6_MEMORY, &NONE).unwrap();
    let before = map.totals();
    map.reserve(r(0x8_8000_0000, 0x8_8200_0000), "mem_map", Source::MemMap)
        .unwrap();
    map.reserve(r(0x8000_0000, 0x8000_3000), "page tables", Source::Early)
        .unwrap();
    map.validate().unwrap();
    let after = map.totals();
    assert_eq!(after.usable, before.usable - 32 * MIB - 0x3000);
    assert_eq!(after.no_map, before.no_map);
    assert!(map.warnings().is_empty());
}

#[test]
fn load_fdt_in_place_matches_from_fdt() {
    // What the kernel does: a map in a static, filled in place (no 20 KiB move on the stack).
    static BLOB: &[u8] = PIXEL6_MEMORY;
    let mut map = MemoryMap::new();
    assert!(map.memory().is_empty() && map.usable().is_empty());
    let fdt = fdt::Fdt::new(QEMU_1G).unwrap();
    map.load_fdt(&fdt, &NONE).unwrap();
    assert_eq!(map.memory(), [r(0x4000_0000, 0x8000_0000)]);
    // Loading again replaces everything.
    let fdt = fdt::Fdt::new(BLOB).unwrap();
    map.load_fdt(&fdt, &NONE).unwrap();
    let fresh = MemoryMap::from_fdt(&fdt, &NONE).unwrap();
    assert_eq!(format!("{map:?}"), format!("{fresh:?}"));
    // A failed load leaves the map empty, not half built.
    let fdt = fdt::Fdt::new(PIXEL6).unwrap();
    assert_eq!(map.load_fdt(&fdt, &NONE), Err(MemMapError::NoMemory));
    assert!(map.memory().is_empty() && map.reserved().is_empty() && map.usable().is_empty());
    assert!(map.warnings().is_empty());
}
