//! Unit tests of the bitmap layer and the front, with the helpers they share: a layout
//! fixture for the buddy underneath and a host-memory `FrameMemory`.

mod corrupt;
mod misuse;
mod operations;
mod poison;

use super::{FrameError, SmallRuns};
use crate::addr::{Pfn, PhysAddr, PAGE_SIZE};
use crate::buddy::{Buddy, FrameMemory, Owner};
use crate::mem_map::{Layout, Page};
use crate::region::Region;
use std::collections::{BTreeMap, HashMap};
use std::vec;
use std::vec::Vec;

pub(super) const MIB: u64 = 1 << 20;
/// RAM starts here in the fixtures.
pub(super) const RAM: u64 = 0x4000_0000;
/// What a frame nobody wrote reads as: not zero, not the poison.
pub(super) const GARBAGE: u8 = 0x5a;

/// Frames in host memory: a fill byte per frame, plus single bytes written on their own
/// (stray writes). Enough to see zeroing, poisoning and a use after free without 4 KiB per
/// frame.
#[derive(Default)]
pub(super) struct HostMemory {
    fills: HashMap<u64, u8>,
    strays: BTreeMap<u64, u8>,
}

impl HostMemory {
    /// Writes one byte.
    pub fn write(&mut self, addr: PhysAddr, byte: u8) {
        self.strays.insert(addr.as_u64(), byte);
    }

    /// Reads one byte.
    pub fn read(&self, addr: PhysAddr) -> u8 {
        match self.strays.get(&addr.as_u64()) {
            Some(&b) => b,
            None => self
                .fills
                .get(&addr.pfn().as_u64())
                .copied()
                .unwrap_or(GARBAGE),
        }
    }

    /// Whether every byte of the frames reads `byte`.
    pub fn holds(&self, first: PhysAddr, frames: u64, byte: u8) -> bool {
        self.find_not(first.pfn(), frames, byte).is_none()
    }
}

impl FrameMemory for HostMemory {
    fn fill(&mut self, first: Pfn, frames: u64, byte: u8) {
        let (lo, hi) = (
            first.addr().as_u64(),
            first.addr().as_u64() + frames * PAGE_SIZE,
        );
        let overwritten: Vec<u64> = self.strays.range(lo..hi).map(|(&a, _)| a).collect();
        for a in overwritten {
            self.strays.remove(&a);
        }
        for pfn in first.as_u64()..first.as_u64() + frames {
            self.fills.insert(pfn, byte);
        }
    }

    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr> {
        (first.as_u64()..first.as_u64() + frames).find_map(|pfn| {
            let base = Pfn::new(pfn).addr();
            if self.fills.get(&pfn).copied().unwrap_or(GARBAGE) != byte {
                // The first byte that a stray write did not set to `byte`.
                return (0..PAGE_SIZE)
                    .map(|o| base + o)
                    .find(|a| self.strays.get(&a.as_u64()) != Some(&byte));
            }
            let page = base.as_u64()..base.as_u64() + PAGE_SIZE;
            self.strays
                .range(page)
                .find(|&(_, &b)| b != byte)
                .map(|(&a, _)| pa(a))
        })
    }
}

/// A layout with its mem_map and RAM, from which a `Buddy` is built.
pub(super) struct Fixture {
    layout: Layout,
    pages: Vec<Page>,
    ram: Vec<Region>,
}

impl Fixture {
    /// RAM and usable memory, as `(start, end)` byte pairs.
    pub fn new(ram: &[(u64, u64)], usable: &[(u64, u64)]) -> Self {
        let regions = |r: &[(u64, u64)]| -> Vec<Region> {
            r.iter().map(|&(a, b)| Region::from_bounds(a, b)).collect()
        };
        let layout = Layout::new(&regions(usable)).unwrap();
        Fixture {
            pages: vec![Page::new(); layout.frames() as usize],
            layout,
            ram: regions(ram),
        }
    }

    /// `mib` MiB of RAM at [`RAM`], all usable.
    pub fn mib(mib: u64) -> Self {
        let range = [(RAM, RAM + mib * MIB)];
        Self::new(&range, &range)
    }

    pub fn buddy(&mut self) -> Buddy<'_> {
        Buddy::new(&self.pages, &self.layout, &self.ram).unwrap()
    }
}

pub(super) fn pa(raw: u64) -> PhysAddr {
    PhysAddr::new(raw)
}

/// Frame `i` of RAM.
pub(super) fn frame(i: u64) -> PhysAddr {
    pa(RAM + i * PAGE_SIZE)
}

/// Both layers valid.
pub(super) fn check<const N: usize>(r: &SmallRuns<N>, b: &Buddy<'_>) {
    b.validate().unwrap_or_else(|v| panic!("{v}"));
    r.validate(b).unwrap_or_else(|v| panic!("{v}"));
}

/// Allocates from the layer or panics with the error's message.
pub(super) fn take<const N: usize, M: FrameMemory>(
    r: &mut SmallRuns<N>,
    b: &mut Buddy<'_>,
    frames: u64,
    mem: &mut M,
) -> PhysAddr {
    r.alloc(frames, Owner::Test, false, b, mem)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What a refused call must leave as it was in the buddy: its free blocks and per-owner
/// totals.
pub(super) fn buddy_state(b: &Buddy<'_>) -> (Vec<(PhysAddr, u8)>, [u64; Owner::COUNT]) {
    let mut free: Vec<_> = b.free_blocks().map(|f| (f.addr, f.order)).collect();
    free.sort();
    (free, b.stats().allocated)
}

/// Whether two layers are the same but for the misuse counters.
pub(super) fn same_but_counters<const N: usize>(a: &SmallRuns<N>, b: &SmallRuns<N>) -> bool {
    let mut a = a.clone();
    a.misuse = b.misuse;
    a == *b
}

/// The error's message, for the tests that pin it.
pub(super) fn message(e: FrameError) -> std::string::String {
    use std::string::ToString;
    e.to_string()
}

#[test]
fn host_memory_reports_the_first_differing_byte() {
    let mut m = HostMemory::default();
    let f = frame(0).pfn();
    assert_eq!(m.find_not(f, 2, 0), Some(frame(0)));
    m.fill(f, 2, 0);
    assert_eq!(m.find_not(f, 2, 0), None);
    m.write(frame(1) + 0x34, 7);
    assert_eq!(m.find_not(f, 2, 0), Some(frame(1) + 0x34));
    assert_eq!((m.read(frame(1) + 0x34), m.read(frame(1))), (7, 0));
    m.write(frame(0), 7);
    assert_eq!(m.find_not(f, 1, 7), Some(frame(0) + 1));
    m.fill(f, 1, 3);
    assert!(m.holds(frame(0), 1, 3));
}
