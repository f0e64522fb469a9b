//! The physical memory map: which RAM exists, what of it is reserved and why, and what is left
//! for the page allocator. Built once from the device tree before any heap exists (so nothing
//! here allocates), then extended by the kernel's own early reservations.
//!
//! # Rules
//!
//! * **RAM** (Devicetree Specification v0.4, 3.4): every child of the root with
//!   `device_type = "memory"` whose `status` is okay (or absent), every `reg` entry, in the
//!   root's `#address-cells`/`#size-cells`. Zero-size entries are boot loader placeholders and
//!   are skipped. RAM the CPU cannot address or the linear map cannot reach ([`Addressable`])
//!   is ignored, or clipped when only its end is beyond, with a warning naming the node. The
//!   ranges are merged and then rounded inward to whole pages.
//! * **Reservations**: `/memreserve/` entries (spec 5.3), `/reserved-memory` children with
//!   `reg` (spec 3.5, in that node's own cell sizes; every root child named
//!   `reserved-memory`), the initrd from `/chosen`, and the DTB
//!   and kernel image the caller knows about ([`KnownRegions`]); then the framebuffer the
//!   display scans out ([`crate::dtb::framebuffer::discover`]), `no-map`, unless a
//!   reservation already covers it ([`Source::Framebuffer`]). Then each dynamic
//!   `/reserved-memory` child (`size`, no `reg`) is placed as Linux places it (top-down, in
//!   the first `alloc-ranges` entry with room; `dynamic.rs` says how and where we differ).
//!   `no-map` and `reusable` are reported; both kinds stay reserved. Only `status =
//!   "disabled"` releases a `/reserved-memory` child (Linux also skips "reserved" and "fail").
//! * **Reserved memory fails closed**: an enabled `/reserved-memory` child whose reservation
//!   cannot be decoded (cell sizes that cannot describe it, a `reg` or `alloc-ranges` that is
//!   empty, not a whole number of entries, or has a zero-size entry, a `size` or `alignment`
//!   that is not 4 or 8 bytes, a translating `ranges`) is an error
//!   ([`MemMapError::BadReservedMemory`], naming the node): ignoring it would hand its memory
//!   out. Linux warns and skips such nodes; the memory manager's promise is never to hand out
//!   reserved memory.
//! * **Awkward input** never panics: a reservation partly outside RAM is clipped to RAM, one
//!   wholly outside is dropped, one running past 2^64 is clipped there, overlapping ones are
//!   all kept; each case is a [`Warning`]. A list that overflows its fixed capacity is an
//!   error ([`MemMapError::TooMany`]), never a silent loss.
//! * **Usable** = RAM minus every reservation rounded outward to whole pages. Every RAM page is
//!   either usable or reserved ([`MemoryMap::validate`] checks this and the rest).
//!
//! [`MemoryMap::from_parts`] builds the same map from already decoded pieces, for tests and
//! for callers that do not have a tree.

mod addressable;
mod dynamic;
mod error;
mod fixed;
mod parse;
mod source;
mod validate;
mod warning;

#[cfg(test)]
pub(crate) mod tests;

pub use addressable::{Addressable, Limit};
pub use error::{InvariantViolation, MemMapError, NodePath};
pub use source::{
    AllocRangeIter, AllocRanges, BuildOptions, DynamicRequest, KnownRegions, Reservation, Source,
};
pub use validate::Totals;
pub use warning::{Problem, Warning};

use crate::region::{Region, RegionSet};
use core::fmt;
use fixed::FixedVec;

/// Most separate RAM ranges (after merging).
pub const MAX_MEMORY: usize = 64;
/// Most reservations kept (a reservation split by a hole in RAM counts once per piece).
pub const MAX_RESERVED: usize = 256;
/// Most warnings stored; further ones are counted in [`MemoryMap::dropped_warnings`].
pub const MAX_WARNINGS: usize = 64;
/// Most dynamic `/reserved-memory` children [`MemoryMap::from_fdt`] can hold while it
/// collects them for placement.
pub const MAX_DYNAMIC: usize = 32;
/// Most usable ranges. Taking one reservation out of a set of ranges adds at most one range,
/// so this bound is never reached while reservations fit in [`MAX_RESERVED`].
pub const MAX_USABLE: usize = MAX_MEMORY + MAX_RESERVED;

/// The physical memory map. `'a` is the lifetime of the names (the device tree blob's, or the
/// kernel's static strings).
#[derive(Clone)]
pub struct MemoryMap<'a> {
    /// RAM, whole pages, sorted, merged. Until `finish_memory` runs: the raw merged ranges.
    memory: RegionSet<MAX_MEMORY>,
    /// Every reservation kept, clipped to RAM, sorted by base.
    reserved: FixedVec<Reservation<'a>, MAX_RESERVED>,
    /// RAM minus reservations rounded outward, sorted.
    usable: RegionSet<MAX_USABLE>,
    warnings: FixedVec<Warning<'a>, MAX_WARNINGS>,
    dropped_warnings: usize,
}

impl fmt::Debug for MemoryMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryMap")
            .field("memory", &self.memory())
            .field("reserved", &self.reserved())
            .field("usable", &self.usable())
            .field("warnings", &self.warnings())
            .field("dropped_warnings", &self.dropped_warnings)
            .finish()
    }
}

impl Default for MemoryMap<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> MemoryMap<'a> {
    /// An empty map: no RAM, nothing reserved, nothing usable. Only useful as the target of
    /// [`Self::load_fdt`]; it is `const` so that it can initialise a static.
    pub const fn new() -> Self {
        Self {
            memory: RegionSet::new(),
            reserved: FixedVec::new(Reservation::new(
                Region::from_bounds(0, 0),
                "",
                Source::Early,
            )),
            usable: RegionSet::new(),
            warnings: FixedVec::new(Warning::NoRegOrSize { node: "" }),
            dropped_warnings: 0,
        }
    }

    /// Builds the map from a device tree (see the module docs for the rules), with no limit on
    /// where RAM may lie ([`Addressable::ANY`]); the kernel uses [`Self::load_fdt_with`] and
    /// its CPU's limits. The blob must have passed [`crate::dtb::check::check`] (or come from
    /// [`crate::dtb::pack`]), so that the `fdt` crate can walk it; property values are still
    /// treated as untrusted.
    ///
    /// The map is about 20 KiB and this builds it in a local before moving it out: on a small
    /// boot stack, prefer [`Self::load_fdt`] into a map kept in a static.
    pub fn from_fdt(fdt: &fdt::Fdt<'a>, known: &KnownRegions) -> Result<Self, MemMapError> {
        Self::from_fdt_with(fdt, known, &BuildOptions::default())
    }

    /// [`Self::from_fdt`] with the machine's limits and, for host tools, RAM as the boot
    /// loader will describe it ([`BuildOptions`]).
    pub fn from_fdt_with(
        fdt: &fdt::Fdt<'a>,
        known: &KnownRegions,
        options: &BuildOptions<'_>,
    ) -> Result<Self, MemMapError> {
        let mut map = Self::new();
        parse::fill(&mut map, fdt, known, options)?;
        Ok(map)
    }

    /// [`Self::from_fdt`] in place: replaces the contents of `self` with the map of `fdt`.
    /// With `new` being `const`, the kernel can keep its map in a static and build it without
    /// moving it through the boot stack. On `Err` the map is left empty.
    pub fn load_fdt(
        &mut self,
        fdt: &fdt::Fdt<'a>,
        known: &KnownRegions,
    ) -> Result<(), MemMapError> {
        self.load_fdt_with(fdt, known, &BuildOptions::default())
    }

    /// [`Self::load_fdt`] with the machine's limits ([`BuildOptions`]).
    pub fn load_fdt_with(
        &mut self,
        fdt: &fdt::Fdt<'a>,
        known: &KnownRegions,
        options: &BuildOptions<'_>,
    ) -> Result<(), MemMapError> {
        self.clear();
        let result = parse::fill(self, fdt, known, options);
        if result.is_err() {
            self.clear();
        }
        result
    }

    /// Builds the map from decoded parts: raw RAM ranges (any order, overlapping, empty or
    /// running past 2^64), reservations in the order they are made, then dynamic requests
    /// placed in order. [`Self::from_fdt`] decodes the tree and follows the same steps.
    pub fn from_parts(
        ram: &[Region],
        reservations: &[Reservation<'a>],
        dynamic: &[DynamicRequest<'a>],
    ) -> Result<Self, MemMapError> {
        Self::from_parts_within(ram, reservations, dynamic, &Addressable::ANY)
    }

    /// [`Self::from_parts`] with RAM limited to what `addressable` allows.
    pub fn from_parts_within(
        ram: &[Region],
        reservations: &[Reservation<'a>],
        dynamic: &[DynamicRequest<'a>],
        addressable: &Addressable,
    ) -> Result<Self, MemMapError> {
        let mut map = Self::new();
        for r in ram {
            map.add_memory(*r, "", addressable)?;
        }
        map.finish_memory()?;
        for r in reservations {
            map.add_reservation(*r)?;
        }
        for d in dynamic {
            map.place_dynamic(d)?;
        }
        map.finish()?;
        Ok(map)
    }

    /// RAM: each range rounded inward to whole pages, sorted, merged.
    pub fn memory(&self) -> &[Region] {
        self.memory.as_slice()
    }

    /// Every reservation kept (clipped to RAM), sorted by base.
    pub fn reserved(&self) -> &[Reservation<'a>] {
        self.reserved.as_slice()
    }

    /// RAM minus every reservation rounded outward to whole pages; sorted, page aligned.
    pub fn usable(&self) -> &[Region] {
        self.usable.as_slice()
    }

    /// What was worked around, in the order it was met (at most [`MAX_WARNINGS`]).
    pub fn warnings(&self) -> &[Warning<'a>] {
        self.warnings.as_slice()
    }

    /// Warnings beyond [`MAX_WARNINGS`], counted but not stored.
    pub fn dropped_warnings(&self) -> usize {
        self.dropped_warnings
    }

    /// Records a reservation made by the kernel (an early allocation, the mem_map) and takes
    /// its pages out of [`Self::usable`]. Like reservations from the tree, it is clipped to RAM
    /// (with a warning) and may overlap others (with a warning). On `Err` the map is unchanged.
    pub fn reserve(
        &mut self,
        region: Region,
        name: &'a str,
        source: Source,
    ) -> Result<(), MemMapError> {
        self.add_reservation(Reservation::new(region, name, source))
    }

    /// Back to [`Self::new`]'s state, without building a whole new map on the stack.
    fn clear(&mut self) {
        self.memory = RegionSet::new();
        self.reserved.clear();
        self.usable = RegionSet::new();
        self.warnings.clear();
        self.dropped_warnings = 0;
    }

    fn warn(&mut self, warning: Warning<'a>) {
        if self.warnings.push(warning).is_err() {
            self.dropped_warnings += 1;
        }
    }

    /// Adds a raw RAM range (before [`Self::finish_memory`]). `node` names its memory node.
    /// The part `addressable` does not allow is left out, with a warning.
    fn add_memory(
        &mut self,
        given: Region,
        node: &'a str,
        addressable: &Addressable,
    ) -> Result<(), MemMapError> {
        if given.size == 0 {
            return Ok(());
        }
        // The fields are public, so `given` may claim bytes past 2^64: clip, and say so.
        let whole = Region::new(given.base, given.size);
        if whole.size < given.size {
            self.warn(Warning::MemoryPastTop {
                node,
                base: given.base.as_u64(),
                size: given.size,
            });
        }
        // The end decides: a range that starts in reach may still run out of it.
        let (region, limit) = addressable.clip(whole);
        if let Some(limit) = limit {
            self.warn(Warning::Unaddressable {
                node,
                region: whole,
                kept: region,
                limit,
            });
        }
        if region.is_empty() {
            return Ok(());
        }
        self.memory
            .insert(region)
            .map_err(|e| MemMapError::TooMany {
                what: "RAM ranges",
                capacity: e.capacity,
            })
    }

    /// Rounds the merged RAM inward to pages (merging first, so two ranges that meet inside a
    /// page do not lose it) and makes it all usable.
    fn finish_memory(&mut self) -> Result<(), MemMapError> {
        if self.memory.is_empty() {
            // Say why when RAM existed but lay out of reach (RAM comes first, so its warnings
            // are among the first kept).
            let out_of_reach = self.warnings().iter().find_map(|w| match w {
                Warning::Unaddressable { limit, .. } => Some(*limit),
                _ => None,
            });
            return Err(out_of_reach.map_or(MemMapError::NoMemory, |limit| {
                MemMapError::NoAddressableMemory { limit }
            }));
        }
        let mut pages = RegionSet::<MAX_MEMORY>::new();
        for r in self.memory.iter() {
            // Cannot fail: at most as many ranges as before, and rounding inward only widens
            // the gaps between them.
            pages
                .insert(r.page_inward())
                .map_err(|e| MemMapError::TooMany {
                    what: "RAM ranges",
                    capacity: e.capacity,
                })?;
        }
        self.memory = pages;
        if self.memory.is_empty() {
            return Err(MemMapError::NoUsableMemory);
        }
        self.usable = RegionSet::new();
        for r in self.memory.iter() {
            self.usable.insert(*r).map_err(|e| MemMapError::TooMany {
                what: "usable ranges",
                capacity: e.capacity,
            })?;
        }
        Ok(())
    }

    /// Records a reservation: clipped to RAM (one entry per RAM range it meets), its pages
    /// taken out of usable. All checks that can fail come first, so on `Err` nothing changed.
    fn add_reservation(&mut self, given: Reservation<'a>) -> Result<(), MemMapError> {
        if given.region.size == 0 {
            return Ok(());
        }
        let region = Region::new(given.region.base, given.region.size);
        let (mut pieces, mut kept) = (0, 0);
        for m in self.memory.iter().filter(|m| m.overlaps(&region)) {
            pieces += 1;
            kept += m.intersect(&region).size;
        }
        if pieces > self.reserved.spare() {
            return Err(MemMapError::TooMany {
                what: "reservations",
                capacity: MAX_RESERVED,
            });
        }
        if pieces > 0 {
            // RAM is page aligned, so the outward-rounded whole equals the union of the
            // outward-rounded pieces as far as usable (a subset of RAM) is concerned.
            self.usable
                .remove(region.page_outward())
                .map_err(|e| MemMapError::TooMany {
                    what: "usable ranges",
                    capacity: e.capacity,
                })?;
        }
        let (name, source) = (given.name, given.source);
        if region.size < given.region.size {
            self.warn(Warning::ReservationPastTop {
                name,
                source,
                base: given.region.base.as_u64(),
                size: given.region.size,
            });
        }
        if pieces == 0 {
            self.warn(Warning::OutsideMemory {
                name,
                source,
                region,
            });
            return Ok(());
        }
        if kept < region.size {
            self.warn(Warning::PartlyOutsideMemory {
                name,
                source,
                region,
                kept,
            });
        }
        for i in 0..self.memory.len() {
            let piece = self.memory.as_slice()[i].intersect(&region);
            if piece.is_empty() {
                continue;
            }
            for j in 0..self.reserved.len() {
                let other = self.reserved.as_slice()[j];
                if other.region.overlaps(&piece) {
                    self.warn(Warning::Overlap {
                        name,
                        source,
                        other: other.name,
                        other_source: other.source,
                        overlap: other.region.intersect(&piece),
                    });
                }
            }
            let at = self
                .reserved
                .as_slice()
                .partition_point(|r| r.region.base <= piece.base);
            // Cannot fail: room for every piece was checked above.
            let _ = self.reserved.insert(
                at,
                Reservation {
                    region: piece,
                    ..given
                },
            );
        }
        Ok(())
    }

    /// Places one dynamic request in what is usable now and reserves it, or warns.
    fn place_dynamic(&mut self, request: &DynamicRequest<'a>) -> Result<(), MemMapError> {
        if request.size == 0 {
            self.warn(Warning::BadReservedMemoryNode {
                node: request.name,
                problem: Problem::ZeroSize,
            });
            return Ok(());
        }
        match dynamic::find_place(self.usable(), request) {
            Some(region) => self.add_reservation(Reservation {
                region,
                name: request.name,
                source: Source::Dynamic,
                no_map: request.no_map,
                reusable: request.reusable,
            }),
            None => {
                self.warn(Warning::DynamicUnplaced {
                    node: request.name,
                    size: request.size,
                    alignment: dynamic::effective_alignment(request.alignment)
                        .unwrap_or(request.alignment),
                    in_alloc_ranges: request.alloc_ranges != AllocRanges::Anywhere,
                });
                Ok(())
            }
        }
    }

    /// The last step of building: a map the allocator cannot use is an error.
    fn finish(&self) -> Result<(), MemMapError> {
        if self.usable.is_empty() {
            return Err(MemMapError::NoUsableMemory);
        }
        Ok(())
    }
}
