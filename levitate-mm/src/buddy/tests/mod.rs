//! Unit tests of the buddy allocator, with the helpers they share: a layout fixture and a
//! host-memory `FrameMemory`.

mod corrupt;
mod misuse;
mod operations;
mod poison;
mod singles;
mod stats;

use super::{Buddy, FrameMemory, Owner, Request, ZoneStats, ZONES};
use crate::addr::{Pfn, PhysAddr, PAGE_SIZE};
use crate::mem_map::{Layout, Page};
use crate::region::Region;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;

pub(super) use crate::test_support::frame_memory::{TestMemory, GARBAGE};

/// A layout with its mem_map and RAM, from which a `Buddy` is built.
pub(super) struct Fixture {
    pub layout: Layout,
    pub pages: Vec<Page>,
    pub ram: Vec<Region>,
}

impl Fixture {
    /// `ram` and `usable` as `(start, end)` byte pairs.
    pub fn new(ram: &[(u64, u64)], usable: &[(u64, u64)]) -> Self {
        let usable: Vec<Region> = usable
            .iter()
            .map(|&(a, b)| Region::from_bounds(a, b))
            .collect();
        let layout = Layout::new(&usable).unwrap();
        Fixture {
            pages: vec![Page::new(); layout.frames() as usize],
            layout,
            ram: ram
                .iter()
                .map(|&(a, b)| Region::from_bounds(a, b))
                .collect(),
        }
    }

    /// RAM and usable memory are the same ranges.
    pub fn all_usable(ranges: &[(u64, u64)]) -> Self {
        Self::new(ranges, ranges)
    }

    pub fn buddy(&mut self) -> Buddy<'_> {
        Buddy::new(&self.pages, &self.layout, &self.ram).unwrap()
    }
}

/// Everything a refused call must leave as it was: the free blocks, the zone figures and the
/// per-owner totals (the misuse and failure counters are meant to move).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    free: Vec<(PhysAddr, u8)>,
    zones: [ZoneStats; ZONES],
    allocated: [u64; Owner::COUNT],
}

pub(super) fn snapshot(b: &Buddy<'_>) -> Snapshot {
    let stats = b.stats();
    Snapshot {
        free: free_list(b),
        zones: stats.zones,
        allocated: stats.allocated,
    }
}

/// The free blocks as sorted `(address, order)` pairs.
pub(super) fn free_list(b: &Buddy<'_>) -> Vec<(PhysAddr, u8)> {
    let mut v: Vec<_> = b.free_blocks().map(|f| (f.addr, f.order)).collect();
    v.sort();
    v
}

/// A block as `(address, order)`: tests keep copies, which `Block` deliberately forbids.
pub(super) type FrameBlock = (PhysAddr, u8);

pub(super) fn pa(raw: u64) -> PhysAddr {
    PhysAddr::new(raw)
}

/// Allocates or panics with the error's message.
pub(super) fn take<M: FrameMemory>(b: &mut Buddy<'_>, req: Request, mem: &mut M) -> FrameBlock {
    let block = b.alloc(req, mem).unwrap_or_else(|e| panic!("{e}"));
    (block.addr, block.order)
}

#[test]
fn test_memory_reports_the_first_differing_byte() {
    let mut m = TestMemory::default();
    let f = Pfn::new(0x40000);
    assert_eq!(m.find_not(f, 2, 0), Some(pa(0x4000_0000)));
    m.fill(f, 2, 0);
    assert_eq!(m.find_not(f, 2, 0), None);
    m.write(pa(0x4000_1234), 7);
    assert_eq!(m.find_not(f, 2, 0), Some(pa(0x4000_1234)));
    assert_eq!(m.read(pa(0x4000_1234)), 7);
    assert_eq!(m.read(pa(0x4000_1235)), 0);
    assert_eq!(m.find_not(f, 2, 7), Some(pa(0x4000_0000)));
    m.write(pa(0x4000_0000), 7);
    assert_eq!(m.find_not(f, 1, 7), Some(pa(0x4000_0001)));
    assert_eq!(PAGE_SIZE, 4 * KIB);
}
