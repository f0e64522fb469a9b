//! Statistics: per-owner totals, the buddyinfo line and the unusable free space index.

use super::*;
use crate::buddy::{NullMemory, FRAGMENTATION_ORDER, ORDERS};

#[test]
fn per_owner_frames() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_0000 + 4 * MIB)]);
    let mut b = f.buddy();
    let mut mem = NullMemory;
    let pt = take(&mut b, Request::new(0, Owner::PageTable), &mut mem);
    let heap = take(&mut b, Request::new(4, Owner::Heap), &mut mem);
    let _stack = take(&mut b, Request::new(2, Owner::Stack), &mut mem);
    let s = b.stats();
    assert_eq!(s.allocated_to(Owner::PageTable), 1);
    assert_eq!(s.allocated_to(Owner::Heap), 16);
    assert_eq!(s.allocated_to(Owner::Stack), 4);
    assert_eq!(s.allocated_frames(), 21);
    assert_eq!(s.free_frames + 21, s.managed_frames);
    assert_eq!(b.free_frames(), s.free_frames);
    assert_eq!(b.managed_frames(), s.managed_frames);
    assert_eq!(b.free(heap.0, heap.1, &mut mem), Ok(Owner::Heap));
    assert_eq!(b.free(pt.0, pt.1, &mut mem), Ok(Owner::PageTable));
    assert_eq!(b.stats().allocated_frames(), 4);
    b.validate().unwrap();
    for (i, o) in Owner::ALL.iter().enumerate() {
        assert_eq!(Owner::from_u8(i as u8), Some(*o));
    }
    assert_eq!(Owner::from_u8(Owner::COUNT as u8), None);
    assert_eq!(Owner::PageTable.to_string(), "page-table");
}

#[test]
fn buddyinfo_has_linux_layout() {
    let mut f = Fixture::new(
        &[(0x4000_0000, 0x4100_0000), (0x1_0000_0000, 0x1_4000_0000)],
        &[(0x4000_3000, 0x4010_0000), (0x1_0000_0000, 0x1_4000_0000)],
    );
    let b = f.buddy();
    let text = b.stats().buddyinfo().to_string();
    assert_eq!(
        text,
        "Node 0, zone    DMA32      1      0      1      1      1      1      1      1      0      0      0      0      0      0      0      0      0      0      0\n\
         Node 0, zone   Normal      0      0      0      0      0      0      0      0      0      0      0      0      0      0      0      0      0      0      1"
    );
    // A zone without memory prints no line.
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_2000)]);
    let b = f.buddy();
    let line = b.stats().buddyinfo().to_string();
    assert!(line.starts_with("Node 0, zone    DMA32      0      1      0"));
    assert_eq!(line.split_whitespace().count(), 4 + ORDERS);
    assert!(!line.contains('\n'));
}

#[test]
fn unusable_free_index_follows_linux() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_0000 + 4 * MIB)]);
    let b = f.buddy();
    let mut s = b.stats();
    assert_eq!(s.fragmentation(), 0, "one 4 MiB block");
    // 100 single frames, one 2 MiB and one 4 MiB block.
    s.zones[0].free_blocks = [0; ORDERS];
    s.zones[0].free_blocks[0] = 100;
    s.zones[0].free_blocks[9] = 1;
    s.zones[0].free_blocks[10] = 1;
    s.free_frames = 100 + 512 + 1024;
    s.zones[0].free_frames = s.free_frames;
    assert_eq!(s.unusable_free_index(0), 0);
    assert_eq!(
        s.unusable_free_index(1),
        61,
        "100 / 1636, in thousandths, rounded down"
    );
    assert_eq!(s.unusable_free_index(FRAGMENTATION_ORDER), 61);
    assert_eq!(s.unusable_free_index(10), 374, "612 / 1636");
    assert_eq!(s.unusable_free_index(11), 1000);
    assert_eq!(s.zones[0].unusable_free_index(10), 374);
    s.free_frames = 0;
    assert_eq!(s.fragmentation(), 1000, "nothing free: all unusable");
}

#[test]
fn checkerboard_memory_is_fully_fragmented() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_0000 + 4 * MIB)]);
    let mut b = f.buddy();
    let mut mem = NullMemory;
    let mut all = Vec::new();
    while let Ok(block) = b.alloc(Request::new(0, Owner::Test), &mut mem) {
        all.push(block.addr);
    }
    for a in all.iter().step_by(2) {
        b.free(*a, 0, &mut mem).unwrap();
    }
    let s = b.stats();
    assert_eq!(s.free_blocks()[0], 512);
    assert_eq!(s.unusable_free_index(0), 0);
    assert_eq!(s.unusable_free_index(1), 1000);
    assert_eq!(s.fragmentation(), 1000);
    b.validate().unwrap();
}

#[test]
fn usage_report_comes_first_then_once_per_step() {
    // 64 MiB: 16384 frames, a step of 16 frames (1/1024).
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_0000 + 64 * MIB)]);
    let mut b = f.buddy();
    let mut mem = NullMemory;
    let managed = b.managed_frames();
    assert_eq!(b.usage_report(), Some((managed, managed)));
    assert_eq!(b.usage_report(), None);
    // 8 frames: under the step, nothing to report.
    let small = take(&mut b, Request::new(3, Owner::Test), &mut mem);
    assert_eq!(b.usage_report(), None);
    // 8 + 16 frames away from the last report: reported, with the figures now.
    let big = take(&mut b, Request::new(4, Owner::Test), &mut mem);
    assert_eq!(b.usage_report(), Some((managed - 24, managed)));
    assert_eq!(b.usage_report(), None);
    // Frees move the figure back the same way.
    b.free(big.0, big.1, &mut mem).unwrap();
    assert_eq!(b.usage_report(), Some((managed - 8, managed)));
    b.free(small.0, small.1, &mut mem).unwrap();
    assert_eq!(b.usage_report(), None);
}
