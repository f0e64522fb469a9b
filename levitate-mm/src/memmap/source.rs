//! What the memory map is built from: reservations with their origin, the regions the boot
//! path knows about without the device tree, the machine's limits, and requests for
//! dynamically placed `/reserved-memory` regions.

use super::addressable::Addressable;
use crate::addr::PhysAddr;
use crate::dtb::tree;
use crate::region::Region;
use core::fmt;

/// Where a reservation comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A `/memreserve/` entry of the blob's memory reservation block (Devicetree Specification
    /// v0.4, 5.3).
    MemReserve,
    /// A `/reserved-memory` child with a `reg` property (spec 3.5.2).
    ReservedMemory,
    /// A `/reserved-memory` child with `size` and no `reg`, placed by this module (spec 3.5.2).
    Dynamic,
    /// The initial ramdisk named by `/chosen` `linux,initrd-start`/`linux,initrd-end`.
    Initrd,
    /// The device tree blob itself.
    Dtb,
    /// The kernel image, BSS and boot page tables included.
    Kernel,
    /// An early (pre-buddy) allocation made by the kernel.
    Early,
    /// The kernel's per-frame metadata array.
    MemMap,
    /// A framebuffer the display scans out (`simple-framebuffer` under `/chosen`, or the
    /// board entry of [`crate::dtb::framebuffer::BOARDS`]) that no other reservation covers.
    Framebuffer,
}

impl Source {
    /// A short stable name, as used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::MemReserve => "memreserve",
            Source::ReservedMemory => "reserved-memory",
            Source::Dynamic => "dynamic",
            Source::Initrd => "initrd",
            Source::Dtb => "dtb",
            Source::Kernel => "kernel",
            Source::Early => "early",
            Source::MemMap => "mem_map",
            Source::Framebuffer => "framebuffer",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A range of RAM that must not be handed out by the page allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation<'a> {
    /// The reserved bytes (not page-rounded: the map rounds outward when it computes usable).
    pub region: Region,
    /// The node name (`secmon@5000000`), or a fixed label (`/memreserve/`, `initrd`, `dtb`,
    /// `kernel`), or the kernel's name for an early allocation.
    pub name: &'a str,
    /// Where it comes from.
    pub source: Source,
    /// `no-map` (reserved-memory.yaml): never mapped by the kernel's linear map, never
    /// accessed speculatively.
    pub no_map: bool,
    /// `reusable` (reserved-memory.yaml): the owning driver lends it to the OS for
    /// reclaimable data. Reported, but kept reserved: we have no reclaim yet.
    pub reusable: bool,
}

impl<'a> Reservation<'a> {
    /// A mapped, non-reusable reservation.
    pub const fn new(region: Region, name: &'a str, source: Source) -> Self {
        Self {
            region,
            name,
            source,
            no_map: false,
            reusable: false,
        }
    }
}

/// Regions the boot path knows without reading the tree. On the host both are usually `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KnownRegions {
    /// Where the device tree blob lies (`totalsize` bytes at the address the boot loader gave).
    pub dtb: Option<Region>,
    /// The whole kernel image, BSS and boot page tables included.
    pub kernel: Option<Region>,
}

/// What the caller knows about the machine that changes how the tree is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions<'r> {
    /// Where RAM may lie: the CPU's physical address range and the kernel's linear map. RAM
    /// beyond is ignored (or clipped) with a [`super::Warning::Unaddressable`].
    pub addressable: Addressable,
    /// RAM as the boot loader will describe it, used instead of the tree's memory nodes: for
    /// a host tool predicting what the kernel will see when the boot loader rewrites them
    /// (QEMU's `-dtb` replaces every memory node with its own; U-Boot fixes `/memory` up).
    /// `None`: RAM comes from the tree.
    pub ram: Option<&'r [Region]>,
}

/// Where a dynamic region may go (`alloc-ranges`, reserved-memory.yaml).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocRanges<'a> {
    /// No `alloc-ranges`: anywhere in RAM.
    Anywhere,
    /// Already decoded ranges, tried in order.
    Listed(&'a [Region]),
    /// A raw `alloc-ranges` value: (address, size) pairs in the `/reserved-memory` node's cell
    /// sizes, tried in order.
    Cells {
        /// The property value.
        value: &'a [u8],
        /// `#address-cells` of `/reserved-memory`.
        address_cells: usize,
        /// `#size-cells` of `/reserved-memory`.
        size_cells: usize,
    },
}

impl<'a> AllocRanges<'a> {
    /// The windows to try, in order. `Anywhere` is one window covering the address space.
    /// Entries that run past the top of the address space are clipped there.
    pub fn iter(&self) -> AllocRangeIter<'a> {
        AllocRangeIter {
            ranges: *self,
            next: 0,
        }
    }
}

/// Iterator over the windows of an [`AllocRanges`].
#[derive(Clone, Debug)]
pub struct AllocRangeIter<'a> {
    ranges: AllocRanges<'a>,
    next: usize,
}

impl Iterator for AllocRangeIter<'_> {
    type Item = Region;

    fn next(&mut self) -> Option<Region> {
        let i = self.next;
        self.next += 1;
        match self.ranges {
            AllocRanges::Anywhere => (i == 0).then(|| Region::from_bounds(0, u64::MAX)),
            AllocRanges::Listed(list) => list.get(i).map(|r| Region::new(r.base, r.size)),
            AllocRanges::Cells {
                value,
                address_cells,
                size_cells,
            } => tree::reg_entries(value, address_cells, size_cells)
                .nth(i)
                .map(|(base, size)| Region::new(PhysAddr::new(base), size)),
        }
    }
}

/// A `/reserved-memory` child that asks for `size` bytes somewhere instead of naming them
/// (spec 3.5.2, reserved-memory.yaml `size`, `alignment`, `alloc-ranges`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicRequest<'a> {
    /// The node name.
    pub name: &'a str,
    /// Bytes wanted.
    pub size: u64,
    /// Required alignment of the base; 0 or 1 means none beyond the page.
    pub alignment: u64,
    /// Where it may go.
    pub alloc_ranges: AllocRanges<'a>,
    /// `no-map` is set.
    pub no_map: bool,
    /// `reusable` is set.
    pub reusable: bool,
}

impl<'a> DynamicRequest<'a> {
    /// A request for `size` bytes anywhere, page aligned, mapped and not reusable.
    pub const fn new(name: &'a str, size: u64) -> Self {
        Self {
            name,
            size,
            alignment: 0,
            alloc_ranges: AllocRanges::Anywhere,
            no_map: false,
            reusable: false,
        }
    }
}
