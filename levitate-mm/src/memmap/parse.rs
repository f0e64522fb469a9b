//! Decoding the device tree into the map: RAM from the memory nodes (Devicetree Specification
//! v0.4, 3.4), reservations from the memory reservation block (5.3), `/reserved-memory` (3.5,
//! with reserved-memory.yaml) and `/chosen`, in the order Linux makes them on arm64.
//!
//! Property values come from firmware: every length and cell size is checked, and a value
//! that cannot be decoded is a [`Warning`] (RAM, initrd) or, where ignoring it would hand out
//! reserved memory, a [`MemMapError`] naming the node; never a panic. `reg` values are decoded
//! with [`tree::reg_entries`] rather than the `fdt` crate's `reg()`/`memory()`, some of which
//! panic.

use super::addressable::Addressable;
use super::error::NodePath;
use super::fixed::FixedVec;
use super::source::{AllocRanges, BuildOptions, DynamicRequest, KnownRegions, Reservation, Source};
use super::warning::{Problem, Warning};
use super::{MemMapError, MemoryMap, MAX_DYNAMIC};
use crate::addr::PhysAddr;
use crate::dtb::framebuffer::{self, Discovery, Origin};
use crate::dtb::tree;
use crate::region::Region;
use fdt::node::FdtNode;

/// The first string of a property value (2.2.4.2: NUL-terminated), as Linux's `strcmp` on
/// the raw value sees it. Bytes need not be UTF-8: we only compare them.
fn first_string(value: &[u8]) -> &[u8] {
    value.split(|&b| b == 0).next().unwrap_or(value)
}

/// Whether the node is enabled. Absent `status` means okay (spec 2.3.4). Anything but "okay"
/// or "ok", including a value that is not a string, means not available, as Linux's
/// `of_fdt_device_is_available` reads it.
fn is_okay(node: &FdtNode<'_, '_>) -> bool {
    node.property("status")
        .is_none_or(|p| matches!(first_string(p.value), b"okay" | b"ok"))
}

/// Whether `name` is `base` with or without a unit address.
fn is_named(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('@'))
}

/// Whether both cell sizes can describe a 64-bit physical range.
fn cells_ok(address_cells: usize, size_cells: usize) -> bool {
    (1..=2).contains(&address_cells) && (1..=2).contains(&size_cells)
}

/// A single number stored as one or two cells (4 or 8 bytes, big-endian).
fn number(value: &[u8]) -> Option<u64> {
    match *value {
        [a, b, c, d] => Some(u64::from(u32::from_be_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Some(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
        _ => None,
    }
}

/// Bytes past the last whole `(address, size)` entry of a `reg`-like value.
fn trailing_bytes(value: &[u8], address_cells: usize, size_cells: usize) -> usize {
    value.len() % ((address_cells + size_cells) * 4)
}

/// A raw `(address, size)` entry as a region, not yet clipped at 2^64 (the map clips and warns).
fn raw_region(base: u64, size: u64) -> Region {
    Region {
        base: PhysAddr::new(base),
        size,
    }
}

/// Fills an empty `map` from the tree (see the module docs of `memmap` for the rules).
pub(super) fn fill<'a>(
    map: &mut MemoryMap<'a>,
    fdt: &fdt::Fdt<'a>,
    known: &KnownRegions,
    options: &BuildOptions<'_>,
) -> Result<(), MemMapError> {
    let root = tree::Located::root(fdt).ok_or(MemMapError::NoMemory)?.node;
    let addressable = &options.addressable;

    match options.ram {
        Some(ram) => {
            for r in ram {
                map.add_memory(*r, "", addressable)?;
            }
        }
        None => {
            // 3.4: memory nodes are children of the root, whose cell sizes their `reg` uses.
            // Like Linux (early_init_dt_scan_memory), only the root's children are looked at.
            let (address_cells, size_cells) = tree::child_cell_sizes(&root);
            for node in root.children().filter(|n| is_okay(n) && is_memory(n)) {
                add_memory_node(map, node, address_cells, size_cells, addressable)?;
            }
        }
    }
    map.finish_memory()?;

    // Linux's arm64 order: kernel and initrd (arm64_memblock_init), then the blob's own
    // reservations and the blob itself, then /reserved-memory (early_init_fdt_scan_reserved_mem).
    if let Some(kernel) = known.kernel {
        map.add_reservation(Reservation::new(kernel, "kernel", Source::Kernel))?;
    }
    if let Some(chosen) = root.children().find(|n| is_named(n.name, "chosen")) {
        add_initrd(map, chosen)?;
    }
    if let Some(dtb) = known.dtb {
        map.add_reservation(Reservation::new(dtb, "dtb", Source::Dtb))?;
    }
    for entry in fdt.memory_reservations() {
        // 5.3: the fdt crate hands the 64-bit address out as a pointer; it is a physical
        // address, and pointers are 64 bits on every target we build. Only (0, 0) ends the
        // list, so a (base, 0) entry is an entry that reserves nothing: say so.
        let (base, size) = (entry.address() as usize as u64, entry.size() as u64);
        if size == 0 {
            map.warn(Warning::EmptyMemReserve { base });
            continue;
        }
        let region = raw_region(base, size);
        map.add_reservation(Reservation::new(region, "/memreserve/", Source::MemReserve))?;
    }

    // 3.5: static children are reserved as they come; dynamic ones wait until everything
    // static is in, then are placed in tree order. Linux reads only the node named exactly
    // `reserved-memory`; a second one (`reserved-memory@...`) would be skipped there and its
    // memory handed out, so every one is read here.
    let mut dynamic = FixedVec::<DynamicRequest<'a>, MAX_DYNAMIC>::new(DynamicRequest::new("", 0));
    for parent in root
        .children()
        .filter(|n| is_named(n.name, "reserved-memory"))
    {
        let layout = ParentLayout::read(&parent);
        if layout.no_ranges {
            map.warn(Warning::NoRanges { node: parent.name });
        }
        for child in parent.children() {
            match reserved_status(&child) {
                Status::Disabled => continue,
                Status::Okay => {}
                Status::Other(status) => map.warn(Warning::OddReservedStatus {
                    node: child.name,
                    status,
                }),
            }
            if let Some(request) = add_reserved_child(map, parent.name, &layout, child)? {
                dynamic.push(request).map_err(|_| MemMapError::TooMany {
                    what: "dynamic reserved-memory nodes",
                    capacity: MAX_DYNAMIC,
                })?;
            }
        }
    }
    // Before dynamic placement, so that nothing is placed on the buffer the panel scans out.
    add_framebuffer(map, fdt)?;
    for request in dynamic.as_slice() {
        map.place_dynamic(request)?;
    }
    map.finish()
}

/// The framebuffer the boot loader left scanning out (see [`framebuffer::discover`]), when no
/// reservation covers it yet: the display engine keeps reading it, so no allocator may hand it
/// out (simple-framebuffer.yaml expects the OS to keep it; later oriole trees add a
/// `splash` reserved-memory node, the stock tree does not). A described buffer that cannot be
/// drawn on is still kept. `no-map`: the kernel maps it once, with an attribute for scan-out
/// (docs/screen.md); a cacheable alias in the linear map would be a mismatched-attribute
/// alias (ARM ARM B2.8).
fn add_framebuffer<'a>(map: &mut MemoryMap<'a>, fdt: &fdt::Fdt<'a>) -> Result<(), MemMapError> {
    let found = framebuffer::discover(fdt);
    let Some(region) = found.reserve() else {
        return Ok(());
    };
    let pages = region.page_outward();
    if !map.usable().iter().any(|u| u.overlaps(&pages)) {
        return Ok(()); // already reserved (or outside RAM, which the screen code refuses)
    }
    let name = match found {
        Discovery::Found(fb) => match fb.origin {
            Origin::Tree(node) => node,
            Origin::Board(compatible) => compatible,
            Origin::Kernel => "framebuffer",
        },
        Discovery::Rejected(r) => r.node,
        Discovery::None | Discovery::Disabled(_) => "framebuffer",
    };
    map.add_reservation(Reservation {
        region,
        name,
        source: Source::Framebuffer,
        no_map: true,
        reusable: false,
    })
}

/// Whether the node says `device_type = "memory"`.
fn is_memory(node: &FdtNode<'_, '_>) -> bool {
    node.property("device_type")
        .is_some_and(|p| first_string(p.value) == b"memory")
}

fn add_memory_node<'a>(
    map: &mut MemoryMap<'a>,
    node: FdtNode<'_, 'a>,
    address_cells: usize,
    size_cells: usize,
    addressable: &Addressable,
) -> Result<(), MemMapError> {
    let name = node.name;
    let bad = |problem| Warning::BadMemoryNode {
        node: name,
        problem,
    };
    let Some(reg) = node.property("reg") else {
        map.warn(bad(Problem::Missing { property: "reg" }));
        return Ok(());
    };
    if !cells_ok(address_cells, size_cells) {
        map.warn(bad(Problem::CellSizes {
            address_cells,
            size_cells,
        }));
        return Ok(());
    }
    let bytes = trailing_bytes(reg.value, address_cells, size_cells);
    if bytes != 0 {
        map.warn(bad(Problem::TrailingBytes {
            property: "reg",
            bytes,
        }));
    }
    for (base, size) in tree::reg_entries(reg.value, address_cells, size_cells) {
        map.add_memory(raw_region(base, size), name, addressable)?;
    }
    Ok(())
}

/// `/chosen` `linux,initrd-start`/`linux,initrd-end`: each one or two cells.
fn add_initrd(map: &mut MemoryMap<'_>, chosen: FdtNode<'_, '_>) -> Result<(), MemMapError> {
    const START: &str = "linux,initrd-start";
    const END: &str = "linux,initrd-end";
    let problem = match (chosen.property(START), chosen.property(END)) {
        (None, None) => return Ok(()),
        (Some(_), None) => Problem::Unpaired {
            present: START,
            missing: END,
        },
        (None, Some(_)) => Problem::Unpaired {
            present: END,
            missing: START,
        },
        (Some(s), Some(e)) => match (number(s.value), number(e.value)) {
            (None, _) => Problem::BadLength {
                property: START,
                len: s.value.len(),
            },
            (_, None) => Problem::BadLength {
                property: END,
                len: e.value.len(),
            },
            (Some(start), Some(end)) if end <= start => Problem::EmptyRange { start, end },
            (Some(start), Some(end)) => {
                let region = Region::from_bounds(start, end);
                return map.add_reservation(Reservation::new(region, "initrd", Source::Initrd));
            }
        },
    };
    map.warn(Warning::BadInitrd { problem });
    Ok(())
}

/// A `/reserved-memory` child's `status`.
enum Status<'a> {
    /// Absent, "okay" or "ok".
    Okay,
    /// "disabled": the only status that releases the node's memory.
    Disabled,
    /// Anything else; the string when it is one.
    Other(Option<&'a str>),
}

/// Reads a `/reserved-memory` child's `status` (spec 2.3.4). Linux's
/// `of_fdt_device_is_available` skips every node that is not okay, "reserved" (memory another
/// agent owns) and "fail" included; failing closed, only "disabled" lets memory go.
fn reserved_status<'a>(node: &FdtNode<'_, 'a>) -> Status<'a> {
    let Some(p) = node.property("status") else {
        return Status::Okay;
    };
    match first_string(p.value) {
        b"okay" | b"ok" => Status::Okay,
        b"disabled" => Status::Disabled,
        other => Status::Other(
            (p.value.last() == Some(&0))
                .then(|| core::str::from_utf8(other).ok())
                .flatten(),
        ),
    }
}

/// How a `/reserved-memory` node's children are addressed: its own `#address-cells` and
/// `#size-cells` (reserved-memory.yaml requires both, equal to the root's; we use the node's
/// own, as the spec's 2.3.5 says) and its `ranges` (required, and empty: identity).
struct ParentLayout {
    /// The cell sizes, or why they cannot decode a child's address.
    cells: Result<(usize, usize), Problem>,
    /// `ranges` is absent (addresses are still taken as physical, with a warning).
    no_ranges: bool,
}

impl ParentLayout {
    fn read(node: &FdtNode<'_, '_>) -> Self {
        let declared = |property: &'static str| -> Result<usize, Problem> {
            let p = node
                .property(property)
                .ok_or(Problem::Missing { property })?;
            match *p.value {
                [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d]) as usize),
                _ => Err(Problem::CellsLength {
                    property,
                    len: p.value.len(),
                }),
            }
        };
        let ranges = node.property("ranges");
        let cells = declared("#address-cells").and_then(|address_cells| {
            let size_cells = declared("#size-cells")?;
            if !cells_ok(address_cells, size_cells) {
                return Err(Problem::CellSizes {
                    address_cells,
                    size_cells,
                });
            }
            if ranges.is_some_and(|p| !p.value.is_empty()) {
                return Err(Problem::TranslatingRanges);
            }
            Ok((address_cells, size_cells))
        });
        Self {
            cells,
            no_ranges: ranges.is_none(),
        }
    }
}

/// Checks a `reg`-like value strictly: a whole, non-empty number of entries.
fn whole_entries(
    value: &[u8],
    property: &'static str,
    (address_cells, size_cells): (usize, usize),
) -> Result<(), Problem> {
    if value.is_empty() {
        return Err(Problem::NoEntries { property });
    }
    match trailing_bytes(value, address_cells, size_cells) {
        0 => Ok(()),
        bytes => Err(Problem::TrailingBytes { property, bytes }),
    }
}

/// One enabled `/reserved-memory` child: a static one is reserved now; a dynamic one is
/// returned for placement once everything static is in. Whatever cannot be decoded is an
/// error naming the node (the module docs say why).
fn add_reserved_child<'a>(
    map: &mut MemoryMap<'a>,
    parent: &'a str,
    layout: &ParentLayout,
    node: FdtNode<'_, 'a>,
) -> Result<Option<DynamicRequest<'a>>, MemMapError> {
    let name = node.name;
    let bad = |problem| MemMapError::BadReservedMemory {
        node: NodePath::new(&[parent, name]),
        problem,
    };
    let cells = || {
        layout
            .cells
            .map_err(|problem| MemMapError::BadReservedMemoryParent {
                node: NodePath::new(&[parent]),
                problem,
            })
    };
    let no_map = node.property("no-map").is_some();
    let reusable = node.property("reusable").is_some();

    // A node with `reg` is static, even if it also has `size` (Linux ignores `size` then).
    if let Some(reg) = node.property("reg") {
        let (address_cells, size_cells) = cells()?;
        whole_entries(reg.value, "reg", (address_cells, size_cells)).map_err(bad)?;
        let entries = || tree::reg_entries(reg.value, address_cells, size_cells);
        // Check every entry before reserving any, so an error leaves nothing half done.
        if let Some((base, _)) = entries().find(|&(_, size)| size == 0) {
            return Err(bad(Problem::ZeroSizeEntry {
                property: "reg",
                base,
            }));
        }
        for (base, size) in entries() {
            map.add_reservation(Reservation {
                region: raw_region(base, size),
                name,
                source: Source::ReservedMemory,
                no_map,
                reusable,
            })?;
        }
        return Ok(None);
    }

    let Some(size) = node.property("size") else {
        // `iommu-addresses` alone reserves IO virtual addresses, not physical memory. A node
        // with neither names no memory at all, so nothing is handed out by ignoring it.
        if node.property("iommu-addresses").is_none() {
            map.warn(Warning::NoRegOrSize { node: name });
        }
        return Ok(None);
    };
    // reserved-memory.yaml: `size` and `alignment` are uint32 or uint64 ("based on parent's
    // #size-cells"); either length is unambiguous, so both are accepted.
    let size_value = number(size.value).ok_or_else(|| {
        bad(Problem::BadLength {
            property: "size",
            len: size.value.len(),
        })
    })?;
    let alignment = match node.property("alignment") {
        None => 0,
        // Placing it with the wrong alignment could break its device; Linux refuses the
        // node too.
        Some(p) => number(p.value).ok_or_else(|| {
            bad(Problem::BadLength {
                property: "alignment",
                len: p.value.len(),
            })
        })?,
    };
    let alloc_ranges = match node.property("alloc-ranges") {
        None => AllocRanges::Anywhere,
        Some(p) => {
            let (address_cells, size_cells) = cells()?;
            whole_entries(p.value, "alloc-ranges", (address_cells, size_cells)).map_err(bad)?;
            AllocRanges::Cells {
                value: p.value,
                address_cells,
                size_cells,
            }
        }
    };
    Ok(Some(DynamicRequest {
        name,
        size: size_value,
        alignment,
        alloc_ranges,
        no_map,
        reusable,
    }))
}
