//! Tests of framebuffer discovery: the binding's properties, `memory-region`, `status`, every
//! kind of bad input, the board entry, and the real oriole trees.

use super::*;
use crate::memmap::tests::builder::Tree;
use proptest::prelude::*;
use std::vec::Vec;

const FB: u64 = 0x4800_0000;

/// A QEMU-like tree (1 GiB at 0x4000_0000, cells 2/2) with one framebuffer node under /chosen
/// built by `node`.
fn tree_with(node: impl FnOnce(Tree) -> Tree) -> Vec<u8> {
    let t = Tree::new(2, 2)
        .memory("memory@40000000", &[0, 0x4000_0000, 0, 0x4000_0000])
        .begin("chosen");
    node(t.begin("framebuffer@48000000")).end().end().build()
}

/// A valid 640x480 x8r8g8b8 node.
fn standard(t: Tree) -> Tree {
    except(t, "")
}

/// The valid node without `skip` (the fdt crate reads the first of two equal names, so a test
/// that replaces a property leaves it out here and adds its own).
fn except(t: Tree, skip: &str) -> Tree {
    let mut t = t.string("compatible", "simple-framebuffer");
    if skip != "reg" {
        t = t.cells("reg", &[0, FB as u32, 0, 640 * 4 * 480]);
    }
    for (name, v) in [("width", 640), ("height", 480), ("stride", 640 * 4)] {
        if name != skip {
            t = t.cells(name, &[v]);
        }
    }
    if skip != "format" {
        t = t.string("format", "x8r8g8b8");
    }
    t
}

fn discover_in(blob: &[u8]) -> Discovery<'_> {
    crate::dtb::check::check(blob).expect("test trees must pass dtb::check");
    let fdt = Fdt::new(blob).unwrap();
    discover(&fdt)
}

fn rejected(blob: &[u8]) -> Problem {
    match discover_in(blob) {
        Discovery::Rejected(r) => r.problem,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn reads_the_binding() {
    let blob = tree_with(standard);
    let Discovery::Found(fb) = discover_in(&blob) else {
        panic!("no framebuffer")
    };
    assert_eq!(fb.region, Region::new(PhysAddr::new(FB), 640 * 4 * 480));
    assert_eq!((fb.width, fb.height, fb.stride), (640, 480, 2560));
    assert_eq!(fb.format, PixelFormat::X8R8G8B8);
    assert_eq!(fb.origin, Origin::Tree("framebuffer@48000000"));
    let ram = [Region::new(PhysAddr::new(0x4000_0000), 0x4000_0000)];
    assert_eq!(fb.check_in(&ram), Ok(()));
}

#[test]
fn every_format_name_is_read() {
    for f in PixelFormat::ALL {
        let blob = tree_with(|t| {
            t.string("compatible", "simple-framebuffer")
                .cells("reg", &[0, FB as u32, 0, 0x20_0000])
                .cells("width", &[640])
                .cells("height", &[480])
                .cells("stride", &[640 * 4])
                .string("format", f.name())
        });
        assert!(
            matches!(discover_in(&blob), Discovery::Found(fb) if fb.format == f),
            "{f}"
        );
    }
}

#[test]
fn memory_region_overrides_reg() {
    let blob = Tree::new(2, 2)
        .memory("memory@40000000", &[0, 0x4000_0000, 0, 0x4000_0000])
        .begin("reserved-memory")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .prop("ranges", &[])
        .begin("fb@50000000")
        .cells("reg", &[0x5000_0000, 0x20_0000])
        .prop("no-map", &[])
        .cells("phandle", &[7])
        .end()
        .end()
        .begin("chosen")
        .begin("framebuffer@50000000")
        .string("compatible", "simple-framebuffer")
        .cells("memory-region", &[7])
        .cells("width", &[640])
        .cells("height", &[480])
        .cells("stride", &[640 * 4])
        .string("format", "r5g6b5")
        .end()
        .end()
        .build();
    let Discovery::Found(fb) = discover_in(&blob) else {
        panic!("no framebuffer")
    };
    assert_eq!(
        fb.region,
        Region::new(PhysAddr::new(0x5000_0000), 0x20_0000)
    );
}

#[test]
fn dangling_memory_region_is_rejected() {
    let blob = tree_with(|t| standard(t).cells("memory-region", &[99]));
    assert_eq!(rejected(&blob), Problem::BadMemoryRegion);
}

#[test]
fn disabled_node_gives_no_screen_and_no_board_fallback() {
    let blob = tree_with(|t| standard(t).string("status", "disabled"));
    assert_eq!(
        discover_in(&blob),
        Discovery::Disabled("framebuffer@48000000")
    );
    assert_eq!(discover_in(&blob).reserve(), None);
}

#[test]
fn no_node_no_board_is_none() {
    let blob = Tree::new(2, 2)
        .memory("memory@40000000", &[0, 0x4000_0000, 0, 0x4000_0000])
        .build();
    assert_eq!(discover_in(&blob), Discovery::None);
}

#[test]
fn bad_input_is_rejected_with_the_reason() {
    type Case = (&'static str, fn(Tree) -> Tree, Problem);
    let cases: [Case; 9] = [
        (
            "zero width",
            |t| except(t, "width").cells("width", &[0]),
            Problem::ZeroSize,
        ),
        (
            "zero reg size",
            |t| except(t, "reg").cells("reg", &[0, FB as u32, 0, 0]),
            Problem::ZeroSize,
        ),
        (
            "stride beyond reg",
            |t| except(t, "height").cells("height", &[481]),
            Problem::BeyondReg {
                needed: 640 * 4 * 481,
                size: 640 * 4 * 480,
            },
        ),
        (
            "stride short of a row",
            |t| except(t, "stride").cells("stride", &[639 * 4]),
            Problem::StrideTooSmall {
                stride: 639 * 4,
                row: 640 * 4,
            },
        ),
        (
            "unknown format",
            |t| except(t, "format").string("format", "r8g8b8"),
            Problem::UnknownFormat,
        ),
        (
            "format not a string",
            |t| except(t, "format").cells("format", &[1]),
            Problem::UnknownFormat,
        ),
        (
            "width two cells",
            |t| except(t, "width").cells("width", &[0, 640]),
            Problem::BadLength {
                property: "width",
                len: 8,
            },
        ),
        (
            "reg short",
            |t| except(t, "reg").cells("reg", &[0, FB as u32, 0]),
            Problem::BadReg,
        ),
        (
            "reg past 2^64",
            |t| except(t, "reg").cells("reg", &[0xffff_ffff, 0xffff_0000, 0, 0x20_0000]),
            Problem::PastTop,
        ),
    ];
    for (what, node, problem) in cases {
        let blob = tree_with(node);
        let got = match discover_in(&blob) {
            Discovery::Rejected(r) => r.problem,
            other => panic!("{what}: expected rejection, got {other:?}"),
        };
        assert_eq!(got, problem, "{what}");
    }
}

#[test]
fn missing_properties_are_named() {
    for property in ["reg", "width", "height", "stride", "format"] {
        let blob = tree_with(|t| except(t, property));
        assert_eq!(rejected(&blob), Problem::Missing { property }, "{property}");
    }
}

#[test]
fn outside_ram_is_a_problem_not_a_fault() {
    let blob = tree_with(standard);
    let Discovery::Found(fb) = discover_in(&blob) else {
        panic!()
    };
    let ram = [Region::new(PhysAddr::new(0x4000_0000), 0x800_0000)];
    assert_eq!(
        fb.check_in(&ram),
        Err(Problem::OutsideRam { region: fb.used() })
    );
    // Straddling the end of RAM is outside too.
    let ram = [Region::new(PhysAddr::new(0x4000_0000), 0x800_0000 + 4096)];
    assert!(fb.check_in(&ram).is_err());
}

#[test]
fn a_rejected_node_still_reserves_its_memory() {
    let blob = tree_with(|t| except(t, "format").string("format", "c8"));
    let d = discover_in(&blob);
    assert_eq!(
        d.reserve(),
        Some(Region::new(PhysAddr::new(FB), 640 * 4 * 480))
    );
}

#[test]
fn pixel_encodings() {
    use PixelFormat::*;
    assert_eq!(R5G6B5.encode(0xff, 0, 0), 0xf800);
    assert_eq!(R5G6B5.encode(0, 0xff, 0), 0x07e0);
    assert_eq!(R5G6B5.encode(0, 0, 0xff), 0x001f);
    assert_eq!(X8R8G8B8.encode(0x12, 0x34, 0x56), 0x0012_3456);
    assert_eq!(A8R8G8B8.encode(0x12, 0x34, 0x56), 0xff12_3456);
    assert_eq!(X2R10G10B10.encode(0xff, 0, 0), 0x3ff0_0000);
    assert_eq!(A2R10G10B10.encode(0, 0, 0xff), 0xc000_03ff);
    assert_eq!(A8R8G8B8.fourcc(), 0x3432_5241);
    assert_eq!(PixelFormat::from_name(b"a8r8g8b8"), Some(A8R8G8B8));
    assert_eq!(PixelFormat::from_name(b"a8r8g8b"), None);
}

fn blob(name: &str) -> Vec<u8> {
    std::fs::read(std::format!(
        "{}/tests/dtbs/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const SPLASH: Region = Region {
    base: PhysAddr::new(0xfac0_0000),
    size: 4320 * 2400,
};

#[test]
fn oriole_stock_tree_gets_the_board_splash() {
    let b = blob("gs101-oriole.dtb");
    let fdt = Fdt::new(&b).unwrap();
    let Discovery::Found(fb) = discover(&fdt) else {
        panic!("no board framebuffer")
    };
    assert_eq!(fb.origin, Origin::Board("google,gs101-oriole"));
    assert_eq!((fb.width, fb.height, fb.stride), (1080, 2400, 4320));
    assert_eq!(fb.format, PixelFormat::A8R8G8B8);
    assert_eq!(fb.region, SPLASH);
}

#[test]
fn oriole_tree_with_the_node_uses_the_node() {
    let b = blob("gs101-oriole.SYNTHETIC-memory-fb.dtb");
    let fdt = Fdt::new(&b).unwrap();
    let Discovery::Found(fb) = discover(&fdt) else {
        panic!("no framebuffer")
    };
    assert_eq!(fb.origin, Origin::Tree("framebuffer@fac00000"));
    assert_eq!(fb.region, SPLASH);
    assert_eq!((fb.width, fb.height, fb.stride), (1080, 2400, 4320));
}

#[test]
fn other_boards_get_nothing() {
    for name in ["qemu-virt-1g.dtb", "juno.dtb", "bcm2837-rpi-3-b.dtb"] {
        let b = blob(name);
        let fdt = Fdt::new(&b).unwrap();
        assert_eq!(discover(&fdt), Discovery::None, "{name}");
    }
}

proptest! {
    /// Whatever the numbers, `new` either refuses or gives a buffer whose every row fits in
    /// its memory; it never panics.
    #[test]
    fn new_never_panics_and_accepted_buffers_fit(
        base in any::<u64>(), size in any::<u64>(),
        width in any::<u32>(), height in any::<u32>(), stride in any::<u32>(),
        f in 0usize..5,
    ) {
        let region = Region { base: PhysAddr::new(base), size };
        if let Ok(fb) = Framebuffer::new(region, width, height, stride, PixelFormat::ALL[f], Origin::Kernel) {
            let bpp = u64::from(PixelFormat::ALL[f].bytes_per_pixel());
            prop_assert!(u64::from(fb.stride) >= u64::from(fb.width) * bpp);
            prop_assert!(fb.used().size <= fb.region.size);
            prop_assert!(base.checked_add(size).is_some());
            prop_assert!(fb.width > 0 && fb.height > 0);
        }
    }
}
