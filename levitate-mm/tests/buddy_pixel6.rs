//! The buddy allocator on the real Pixel 6 layout: the synthetic-memory gs101 tree (2 GiB at
//! 0x8000_0000, 6 GiB at 0x8_8000_0000, firmware carve-outs), its memory map, the mem_map
//! placed in it, and a mixed workload over all 2 million frames.

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{Buddy, FreeError, Misuse, NullMemory, Owner, Request, Zone, MAX_ORDER};
use levitate_mm::dtb::pack::{pack_into, packed_size};
use levitate_mm::mem_map::{self, Page};
use levitate_mm::memmap::{KnownRegions, MemoryMap};
use std::collections::BTreeMap;

const PIXEL6_MEMORY: &[u8] = include_bytes!("dtbs/gs101-oriole.SYNTHETIC-memory.dtb");
const GIB: u64 = 1 << 30;

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn free_list(b: &Buddy<'_>) -> Vec<(u64, u8)> {
    let mut v: Vec<_> = b
        .free_blocks()
        .map(|f| (f.addr.as_u64(), f.order))
        .collect();
    v.sort();
    v
}

fn pixel6() {
    let mut packed = vec![0u8; packed_size(PIXEL6_MEMORY).unwrap()];
    pack_into(PIXEL6_MEMORY, &mut packed).unwrap();
    let fdt = fdt::Fdt::new(&packed).unwrap();
    let known = KnownRegions {
        dtb: None,
        kernel: None,
    };
    let mut map = MemoryMap::from_fdt(&fdt, &known).unwrap();
    let placement = mem_map::place(&mut map).unwrap();
    let layout = &placement.layout;
    let usable_frames: u64 = map.usable().iter().map(|r| r.size / PAGE_SIZE).sum();
    assert_eq!(layout.frames(), usable_frames);
    let pages = vec![Page::new(); layout.frames() as usize];
    let mut b = Buddy::new(&pages, layout, map.memory()).unwrap();

    let s = b.stats();
    assert_eq!(s.managed_frames, usable_frames);
    assert_eq!(s.free_frames, usable_frames);
    let normal = s.zones[Zone::Normal as usize];
    assert_eq!(normal.managed_frames, 6 * GIB / PAGE_SIZE);
    assert_eq!(
        normal.free_blocks[usize::from(MAX_ORDER)],
        6,
        "six 1 GiB blocks"
    );
    assert_eq!(
        s.zones[Zone::Dma32 as usize].managed_frames,
        usable_frames - normal.managed_frames
    );
    assert!(s.fragmentation() < 10, "{}", s.fragmentation());
    assert!(s.buddyinfo().to_string().contains("Node 0, zone   Normal"));
    b.validate().unwrap();
    let initial = free_list(&b);

    // Misuse on the real map: a firmware carve-out, the mem_map itself, the hole between the
    // banks.
    let gsa = PhysAddr::new(0x9030_0000);
    assert!(matches!(
        b.free(gsa, 0, &mut NullMemory),
        Err(FreeError::Reserved { .. })
    ));
    let mm = placement.region.base;
    assert!(matches!(
        b.free(mm, 0, &mut NullMemory),
        Err(FreeError::Reserved { .. })
    ));
    let hole = PhysAddr::new(8 * GIB);
    assert!(matches!(
        b.free(hole, 0, &mut NullMemory),
        Err(FreeError::OutsideRam { .. })
    ));
    assert_eq!(b.stats().misuse.get(Misuse::Reserved), 2);

    // A mixed workload: orders 0 to 10 (and now and then a 1 GiB block), some below 4 GiB,
    // frees of random live blocks.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: BTreeMap<u64, u8> = BTreeMap::new();
    let mut addrs: Vec<u64> = Vec::new();
    for step in 0..4000 {
        if rng.below(10) < 6 || addrs.is_empty() {
            let order = match rng.below(20) {
                0 => MAX_ORDER,
                n => (n % 11) as u8,
            };
            let mut req = Request::new(order, Owner::ALL[rng.below(Owner::COUNT as u64) as usize]);
            if rng.below(4) == 0 {
                req = req.below(PhysAddr::new(4 * GIB));
            }
            let Ok(blk) = b.alloc(req, &mut NullMemory) else {
                continue;
            };
            let (a, bytes) = (blk.addr.as_u64(), blk.bytes());
            if req.below.is_some() {
                assert!(a + bytes <= 4 * GIB);
            }
            if let Some((&p, &o)) = live.range(..a).next_back() {
                assert!(p + (PAGE_SIZE << o) <= a, "{a:#x} overlaps {p:#x}");
            }
            if let Some((&n, _)) = live.range(a..).next() {
                assert!(n >= a + bytes, "{a:#x} overlaps {n:#x}");
            }
            live.insert(a, blk.order);
            addrs.push(a);
        } else {
            let a = addrs.swap_remove(rng.below(addrs.len() as u64) as usize);
            let order = live.remove(&a).unwrap();
            b.free(PhysAddr::new(a), order, &mut NullMemory).unwrap();
        }
        if step == 2000 {
            b.validate().unwrap();
        }
    }
    b.validate().unwrap();
    let s = b.stats();
    let held: u64 = live.values().map(|&o| 1u64 << o).sum();
    assert_eq!(s.allocated_frames(), held);
    assert_eq!(s.free_frames + held, usable_frames);
    for (a, o) in live {
        b.free(PhysAddr::new(a), o, &mut NullMemory).unwrap();
    }
    assert_eq!(free_list(&b), initial);
    b.validate().unwrap();
}

#[test]
fn pixel6_layout() {
    // The memory map is built on the stack; give it room.
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(pixel6)
        .unwrap()
        .join()
        .unwrap();
}
