//! Regression tests for bugs other buddy allocators have shipped: merging past the top order,
//! adding a range larger than the top order as one block, RAM that does not start at 0 with
//! unaligned ranges, buddies found by array index instead of frame number, and a double free
//! accepted after coalescing (LevitateOS then hands every frame out twice).

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{Buddy, FreeError, Holder, Misuse, NullMemory, Owner, Request, MAX_ORDER};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::region::Region;
use std::collections::BTreeSet;

const GIB: u64 = 1 << 30;

fn regions(ranges: &[(u64, u64)]) -> Vec<Region> {
    ranges
        .iter()
        .map(|&(a, b)| Region::from_bounds(a, b))
        .collect()
}

/// Builds a buddy over `usable` (RAM = `ram`) and hands it to `f`.
fn with_buddy<R>(
    ram: &[(u64, u64)],
    usable: &[(u64, u64)],
    f: impl FnOnce(&mut Buddy<'_>) -> R,
) -> R {
    let layout = Layout::new(&regions(usable)).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let mut b = Buddy::new(&pages, &layout, &regions(ram)).unwrap();
    f(&mut b)
}

fn free_list(b: &Buddy<'_>) -> Vec<(u64, u8)> {
    let mut v: Vec<_> = b
        .free_blocks()
        .map(|f| (f.addr.as_u64(), f.order))
        .collect();
    v.sort();
    v
}

#[test]
fn two_free_top_order_buddies_stay_two_blocks() {
    // 2 GiB and 3 GiB are buddies at order 18; merging them would make an order-19 block.
    let r = [(2 * GIB, 4 * GIB)];
    with_buddy(&r, &r, |b| {
        assert_eq!(free_list(b), [(2 * GIB, 18), (3 * GIB, 18)]);
        let x = b
            .alloc(Request::new(MAX_ORDER, Owner::Test), &mut NullMemory)
            .unwrap();
        let y = b
            .alloc(Request::new(MAX_ORDER, Owner::Test), &mut NullMemory)
            .unwrap();
        b.free_block(y, &mut NullMemory).unwrap();
        b.free_block(x, &mut NullMemory).unwrap();
        assert_eq!(free_list(b), [(2 * GIB, 18), (3 * GIB, 18)]);
        assert_eq!(b.stats().free_blocks()[usize::from(MAX_ORDER)], 2);
        b.validate().unwrap();
    });
}

#[test]
fn a_3_gib_range_is_three_1_gib_blocks() {
    let r = [(GIB, 4 * GIB)];
    with_buddy(&r, &r, |b| {
        assert_eq!(free_list(b), [(GIB, 18), (2 * GIB, 18), (3 * GIB, 18)]);
        for _ in 0..3 {
            let blk = b.alloc(Request::new(MAX_ORDER, Owner::Test), &mut NullMemory);
            assert!(blk.is_ok_and(|blk| blk.order == MAX_ORDER));
        }
        assert!(b
            .alloc(Request::new(0, Owner::Test), &mut NullMemory)
            .is_err());
        b.validate().unwrap();
    });
    // Unaligned at both ends: no block above the top order, and every frame is covered.
    let r = [(GIB + 0x3000, 4 * GIB + 0x5000)];
    with_buddy(&r, &r, |b| {
        let blocks = free_list(b);
        assert!(blocks.iter().all(|&(_, o)| o <= MAX_ORDER));
        let frames: u64 = blocks.iter().map(|&(_, o)| 1u64 << o).sum();
        assert_eq!(frames, (3 * GIB + 0x2000) / PAGE_SIZE);
        assert_eq!(blocks.iter().filter(|&&(_, o)| o == MAX_ORDER).count(), 2);
        b.validate().unwrap();
    });
}

#[test]
fn ram_at_0x4000_0000_with_unaligned_range_starts() {
    let ram = [(0x4000_0000, 0x4040_0000)];
    let usable = [(0x4000_1000, 0x4001_0000), (0x4002_3000, 0x4003_0000)];
    with_buddy(&ram, &usable, |b| {
        let initial = free_list(b);
        assert_eq!(
            initial,
            [
                (0x4000_1000, 0),
                (0x4000_2000, 1),
                (0x4000_4000, 2),
                (0x4000_8000, 3),
                (0x4002_3000, 0),
                (0x4002_4000, 2),
                (0x4002_8000, 3),
            ]
        );
        // Every block handed out lies inside a usable range and is aligned to its size.
        let mut got = Vec::new();
        for order in [0u8, 3, 1, 2, 0, 0, 3, 1] {
            let blk = b
                .alloc(Request::new(order, Owner::Test), &mut NullMemory)
                .unwrap();
            let a = blk.addr.as_u64();
            assert_eq!(a % blk.bytes(), 0);
            assert!(usable.iter().any(|&(s, e)| a >= s && a + blk.bytes() <= e));
            got.push((blk.addr, blk.order));
        }
        for (a, o) in got.into_iter().rev() {
            b.free(a, o, &mut NullMemory).unwrap();
        }
        assert_eq!(free_list(b), initial);
        b.validate().unwrap();
    });
}

#[test]
fn buddies_are_found_by_frame_number_not_mem_map_index() {
    // Frames 0x40000 and 0x40003 are mem_map entries 0 and 1: index buddies, but not frame
    // buddies (and the frames between are reserved).
    let ram = [(0x4000_0000, 0x4000_4000)];
    let usable = [(0x4000_0000, 0x4000_1000), (0x4000_3000, 0x4000_4000)];
    with_buddy(&ram, &usable, |b| {
        let x = b
            .alloc(Request::new(0, Owner::Test), &mut NullMemory)
            .unwrap();
        let y = b
            .alloc(Request::new(0, Owner::Test), &mut NullMemory)
            .unwrap();
        b.free_block(x, &mut NullMemory).unwrap();
        b.free_block(y, &mut NullMemory).unwrap();
        assert_eq!(free_list(b), [(0x4000_0000, 0), (0x4000_3000, 0)]);
        b.validate().unwrap();
    });
}

#[test]
fn a_double_free_after_coalescing_is_caught_and_no_frame_goes_out_twice() {
    let r = [(0x4000_0000, 0x4010_0000)];
    with_buddy(&r, &r, |b| {
        let blk = b
            .alloc(Request::new(0, Owner::Test), &mut NullMemory)
            .unwrap();
        let addr = blk.addr;
        b.free_block(blk, &mut NullMemory).unwrap();
        // The frame merged back into the whole 1 MiB block: the second free is still caught.
        assert_eq!(free_list(b), [(0x4000_0000, 8)]);
        let e = b.free(addr, 0, &mut NullMemory).unwrap_err();
        assert_eq!(
            e,
            FreeError::DoubleFree {
                addr,
                order: 0,
                now: Holder::Free {
                    block: PhysAddr::new(0x4000_0000),
                    order: 8
                }
            }
        );
        assert_eq!(b.stats().misuse.get(Misuse::DoubleFree), 1);
        b.validate().unwrap();
        // Every frame is handed out exactly once.
        let mut seen = BTreeSet::new();
        while let Ok(blk) = b.alloc(Request::new(0, Owner::Test), &mut NullMemory) {
            assert!(seen.insert(blk.addr), "{} handed out twice", blk.addr);
        }
        assert_eq!(seen.len(), 256);
        b.validate().unwrap();
    });
}
