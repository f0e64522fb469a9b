//! Building, allocating (split, zones, limits, zeroing) and freeing (coalescing).

use super::*;
use crate::buddy::{AllocError, BuddyError, NullMemory, Zone, MAX_ORDER};
use crate::memmap::MAX_MEMORY;

#[test]
fn sections_become_maximal_aligned_blocks() {
    // RAM at 0x4000_0000 with two sections starting at odd frames.
    let mut f = Fixture::new(
        &[(0x4000_0000, 0x4100_0000)],
        &[(0x4000_3000, 0x4010_0000), (0x4020_0000, 0x4020_5000)],
    );
    let b = f.buddy();
    let expect = vec![
        (pa(0x4000_3000), 0),
        (pa(0x4000_4000), 2),
        (pa(0x4000_8000), 3),
        (pa(0x4001_0000), 4),
        (pa(0x4002_0000), 5),
        (pa(0x4004_0000), 6),
        (pa(0x4008_0000), 7),
        (pa(0x4020_0000), 2),
        (pa(0x4020_4000), 0),
    ];
    assert_eq!(free_list(&b), expect);
    let s = b.stats();
    assert_eq!(s.managed_frames, 0x100 - 3 + 5);
    assert_eq!(s.free_frames, s.managed_frames);
    assert_eq!(s.allocated_frames(), 0);
    b.validate().unwrap();
}

#[test]
fn a_section_across_4_gib_is_split_between_the_zones() {
    let mut f = Fixture::all_usable(&[(0xffff_e000, 0x1_0000_2000)]);
    let b = f.buddy();
    assert_eq!(
        free_list(&b),
        [(pa(0xffff_e000), 1), (pa(0x1_0000_0000), 1)]
    );
    let s = b.stats();
    assert_eq!(s.zones[0].zone, Zone::Dma32);
    assert_eq!(
        (s.zones[0].managed_frames, s.zones[1].managed_frames),
        (2, 2)
    );
    assert_eq!(
        (s.zones[0].free_blocks[1], s.zones[1].free_blocks[1]),
        (1, 1)
    );
    b.validate().unwrap();
}

#[test]
fn new_refuses_bad_inputs() {
    let usable = [Region::from_bounds(0x4000_0000, 0x4000_4000)];
    let layout = Layout::new(&usable).unwrap();
    let short = vec![Page::new(); 3];
    assert_eq!(
        Buddy::new(&short, &layout, &usable).unwrap_err(),
        BuddyError::MemMapTooSmall { needed: 4, got: 3 }
    );
    let pages = vec![Page::new(); 8];
    let other_ram = [Region::from_bounds(0x8000_0000, 0x9000_0000)];
    let e = Buddy::new(&pages, &layout, &other_ram).unwrap_err();
    assert_eq!(
        e.to_string(),
        "buddy: usable frames at 0x40000000 (16 KiB) lie outside RAM"
    );
    let empty = Layout::new(&[]).unwrap();
    assert_eq!(
        Buddy::new(&pages, &empty, &usable).unwrap_err(),
        BuddyError::NoFrames
    );
    let many: Vec<Region> = (0..=MAX_MEMORY as u64)
        .map(|i| Region::from_bounds(0x4000_0000 + i * 0x2000, 0x4000_1000 + i * 0x2000))
        .collect();
    assert_eq!(
        Buddy::new(&pages, &layout, &many).unwrap_err(),
        BuddyError::TooManyRamRanges {
            capacity: MAX_MEMORY
        }
    );
    // A longer mem_map than needed is fine, and stale contents are overwritten.
    let stale = Page::new();
    stale.set_state(2);
    stale.set_order(7);
    let long = vec![stale; 6];
    let b = Buddy::new(&long, &layout, &usable).unwrap();
    assert_eq!(free_list(&b), [(pa(0x4000_0000), 2)]);
    b.validate().unwrap();
}

#[test]
fn allocation_splits_and_free_coalesces() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_8000)]);
    let mut b = f.buddy();
    let mut mem = NullMemory;
    let first = take(&mut b, Request::new(0, Owner::Test), &mut mem);
    assert_eq!(first, (pa(0x4000_0000), 0));
    assert_eq!(
        free_list(&b),
        [
            (pa(0x4000_1000), 0),
            (pa(0x4000_2000), 1),
            (pa(0x4000_4000), 2)
        ]
    );
    b.validate().unwrap();
    // The next order-0 request reuses the half split off last.
    let second = take(&mut b, Request::new(0, Owner::Heap), &mut mem);
    assert_eq!(second, (pa(0x4000_1000), 0));
    assert_eq!(b.stats().allocated_to(Owner::Heap), 1);
    assert_eq!(b.free(first.0, 0, &mut mem), Ok(Owner::Test));
    b.validate().unwrap();
    assert_eq!(b.free(second.0, 0, &mut mem), Ok(Owner::Heap));
    assert_eq!(free_list(&b), [(pa(0x4000_0000), 3)]);
    assert_eq!(b.stats().allocated_frames(), 0);
    b.validate().unwrap();
}

#[test]
fn free_block_consumes_the_block() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4001_0000)]);
    let mut b = f.buddy();
    let block = b
        .alloc(Request::new(2, Owner::Stack), &mut NullMemory)
        .unwrap();
    assert_eq!((block.frames(), block.bytes()), (4, 16 * KIB));
    assert_eq!(block.pfn(), pa(0x4000_0000).pfn());
    assert_eq!(b.free_block(block, &mut NullMemory), Ok(Owner::Stack));
    assert_eq!(free_list(&b), [(pa(0x4000_0000), 4)]);
}

#[test]
fn every_frame_is_handed_out_once_then_memory_runs_out() {
    let mut f = Fixture::new(
        &[(0x4000_0000, 0x4010_0000), (0x1_0000_0000, 0x1_0001_0000)],
        &[
            (0x4000_5000, 0x4001_3000),
            (0x4003_0000, 0x4003_1000),
            (0x1_0000_0000, 0x1_0001_0000),
        ],
    );
    let mut b = f.buddy();
    let before = free_list(&b);
    let managed = b.stats().managed_frames;
    let mut got = Vec::new();
    while let Ok(block) = b.alloc(Request::new(0, Owner::Test), &mut NullMemory) {
        got.push(block.addr);
    }
    assert_eq!(got.len() as u64, managed);
    // Normal first, then DMA32.
    assert!(got[..16].iter().all(|a| a.as_u64() >= 4 * GIB));
    got.sort();
    got.dedup();
    assert_eq!(got.len() as u64, managed);
    b.validate().unwrap();
    let s = b.stats();
    assert_eq!((s.free_frames, s.allocated_to(Owner::Test)), (0, managed));
    assert_eq!(s.alloc_failures, 1);
    assert_eq!(s.largest_free_order(), None);
    // Free in a scattered order (7 is coprime with the 31 frames), merging from both sides.
    let n = got.len();
    for i in 0..n {
        let a = got[(i * 7) % n];
        assert_eq!(b.free(a, 0, &mut NullMemory), Ok(Owner::Test), "{a}");
    }
    b.validate().unwrap();
    assert_eq!(free_list(&b), before);
}

#[test]
fn zones_and_address_limits() {
    // 16 frames below 4 GiB (DMA32), 16 above (Normal).
    let mut f = Fixture::all_usable(&[(0xffff_0000, 0x1_0001_0000)]);
    let mut b = f.buddy();
    let mut mem = NullMemory;
    let four_gib = pa(4 * GIB);
    let normal = take(&mut b, Request::new(0, Owner::Test), &mut mem);
    assert_eq!(normal.0, four_gib, "plain requests prefer Normal");
    let dma = take(
        &mut b,
        Request::new(0, Owner::Dma).below(four_gib),
        &mut mem,
    );
    assert_eq!(dma.0, pa(0xffff_0000), "below 4 GiB is DMA32");
    // A limit inside DMA32: the block must end at or below it.
    let low = take(
        &mut b,
        Request::new(1, Owner::Dma).below(pa(0xffff_4000)),
        &mut mem,
    );
    assert_eq!(low, (pa(0xffff_2000), 1));
    let e = b
        .alloc(Request::new(1, Owner::Dma).below(pa(0xffff_4000)), &mut mem)
        .unwrap_err();
    assert!(matches!(e, AllocError::OutOfMemory { order: 1, .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "out of memory: order 1 (8 KiB) below 0xffff4000 requested, 28 frames free, largest \
         free block order 3"
    );
    // A limit inside Normal takes from the low end of Normal first.
    let n = take(
        &mut b,
        Request::new(2, Owner::Test).below(pa(4 * GIB + 0x8000)),
        &mut mem,
    );
    assert_eq!(n, (pa(4 * GIB + 0x4000), 2));
    // A limit above all RAM is no limit.
    let any = take(
        &mut b,
        Request::new(3, Owner::Test).below(pa(u64::MAX)),
        &mut mem,
    );
    assert_eq!(any, (pa(4 * GIB + 0x8000), 3));
    // Normal has one order-0 and one order-1 block left: an order-2 request falls back to
    // DMA32.
    let fallback = take(&mut b, Request::new(2, Owner::Test), &mut mem);
    assert_eq!(fallback, (pa(0xffff_4000), 2));
    b.validate().unwrap();
    for (addr, order) in [normal, dma, low, n, any, fallback] {
        b.free(addr, order, &mut mem).unwrap();
    }
    assert_eq!(
        free_list(&b),
        [(pa(0xffff_0000), 4), (pa(0x1_0000_0000), 4)]
    );
    b.validate().unwrap();
}

#[test]
fn a_limit_below_all_memory_or_a_bad_order_fails_cleanly() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_4000)]);
    let mut b = f.buddy();
    let before = snapshot(&b);
    let e = b
        .alloc(
            Request::new(0, Owner::Test).below(pa(0x4000_0000)),
            &mut NullMemory,
        )
        .unwrap_err();
    assert!(matches!(e, AllocError::OutOfMemory { .. }));
    let e = b
        .alloc(Request::new(MAX_ORDER + 1, Owner::Test), &mut NullMemory)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad allocation request: order 19 is above the maximum 18"
    );
    let e = b
        .alloc(Request::new(3, Owner::Test), &mut NullMemory)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "out of memory: order 3 (32 KiB) requested, 4 frames free, largest free block order 2"
    );
    assert_eq!(snapshot(&b), before);
    let s = b.stats();
    assert_eq!(s.alloc_failures, 2);
    assert_eq!(s.misuse.get(crate::buddy::Misuse::BadOrder), 1);
    b.validate().unwrap();
}

#[test]
fn zeroed_blocks_read_as_zero() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4001_0000)]);
    let mut b = f.buddy();
    let mut mem = TestMemory::default();
    let plain = take(&mut b, Request::new(1, Owner::Test), &mut mem);
    assert_eq!(mem.read(plain.0), GARBAGE, "not zeroed unless asked");
    let z = take(&mut b, Request::new(2, Owner::Test).zeroed(), &mut mem);
    assert_eq!(mem.find_not(z.0.pfn(), 4, 0), None);
    assert_eq!(mem.read(z.0 + 4 * PAGE_SIZE), GARBAGE, "only the block");
}

#[test]
fn owner_of_names_the_allocated_block() {
    let mut f = Fixture::new(&[(0x4000_0000, 0x4010_0000)], &[(0x4000_0000, 0x4000_8000)]);
    let mut b = f.buddy();
    let (addr, _) = take(&mut b, Request::new(2, Owner::PageTable), &mut NullMemory);
    assert_eq!(b.owner_of(addr + 0x3fff), Some((Owner::PageTable, 2, addr)));
    assert_eq!(b.owner_of(addr + 0x4000), None, "free");
    assert_eq!(b.owner_of(pa(0x4008_0000)), None, "reserved");
    assert_eq!(b.owner_of(pa(0x1000)), None, "not RAM");
}
