//! `validate()` finds each kind of corruption, planted by hand in the pages and counters.

use super::*;
use crate::buddy::{NullMemory, Violation, Zone, STATE_ALLOCATED, STATE_FREE, STATE_TAIL};

fn eight_frames() -> Fixture {
    Fixture::all_usable(&[(0x4000_0000, 0x4000_8000)])
}

#[test]
fn a_fresh_allocator_is_valid() {
    let mut f = eight_frames();
    assert_eq!(f.buddy().validate(), Ok(()));
}

#[test]
fn unmerged_buddies() {
    let mut f = eight_frames();
    let mut b = f.buddy();
    let x = take(&mut b, Request::new(0, Owner::Test), &mut NullMemory);
    let y = take(&mut b, Request::new(0, Owner::Test), &mut NullMemory);
    assert_eq!((x.0, y.0), (pa(0x4000_0000), pa(0x4000_1000)));
    // Put both back without merging.
    b.zones[0].push(b.pages, 0, 0);
    b.zones[0].push(b.pages, 0, 1);
    b.allocated[Owner::Test.index()] = 0;
    let v = b.validate().unwrap_err();
    assert_eq!(
        v,
        Violation::UnmergedBuddies {
            addr: pa(0x4000_0000),
            order: 0
        }
    );
    assert_eq!(
        v.to_string(),
        "buddy: free order-0 buddies at 0x40000000 were not merged"
    );
}

#[test]
fn list_and_counter_damage() {
    let mut f = eight_frames();
    let mut b = f.buddy();
    b.zones[0].counts[3] += 1;
    assert_eq!(
        b.validate(),
        Err(Violation::ListCount {
            zone: Zone::Dma32,
            order: 3,
            listed: 1,
            recorded: 2
        })
    );
    b.zones[0].counts[3] -= 1;
    b.zones[0].free_frames += 1;
    assert!(matches!(b.validate(), Err(Violation::ZoneFrames { .. })));
    b.zones[0].free_frames -= 1;
    b.pages[0].set_prev(5);
    let v = b.validate().unwrap_err();
    assert_eq!(
        v.to_string(),
        "buddy: DMA32 order-3 free list broken at mem_map index 0: back link does not match"
    );
    b.pages[0].set_prev(Page::NONE);
    b.pages[0].set_next(99);
    assert!(matches!(
        b.validate(),
        Err(Violation::BrokenList {
            why: "link outside the mem_map",
            ..
        })
    ));
    b.pages[0].set_next(Page::NONE);
    b.zones[0].nonempty = 0;
    assert!(matches!(b.validate(), Err(Violation::BrokenList { .. })));
    b.zones[0].nonempty = 1 << 3;
    b.pages[0].set_order(2);
    assert!(matches!(b.validate(), Err(Violation::BadListEntry { .. })));
    b.pages[0].set_order(3);
    assert_eq!(b.validate(), Ok(()));
}

#[test]
fn block_damage() {
    let mut f = eight_frames();
    let mut b = f.buddy();
    // A head inside the free order-3 block.
    b.pages[5].set_state(STATE_ALLOCATED);
    assert_eq!(
        b.validate().unwrap_err().to_string(),
        "buddy: order-3 block at 0x40005000: a block head inside another block"
    );
    b.pages[5].set_state(STATE_TAIL);
    let all = take(&mut b, Request::new(3, Owner::Heap), &mut NullMemory);
    b.pages[0].set_state(STATE_TAIL);
    assert_eq!(
        b.validate(),
        Err(Violation::Uncovered {
            addr: pa(0x4000_0000)
        })
    );
    b.pages[0].set_state(STATE_ALLOCATED);
    b.pages[0].set_owner(200);
    assert!(matches!(b.validate(), Err(Violation::BadBlock { .. })));
    b.pages[0].set_owner(Owner::Heap as u8);
    b.allocated[Owner::Heap.index()] = 7;
    assert_eq!(
        b.validate().unwrap_err().to_string(),
        "buddy: 8 frames allocated to heap, counter says 7"
    );
    b.allocated[Owner::Heap.index()] = 8;
    assert_eq!(b.validate(), Ok(()));
    b.free(all.0, all.1, &mut NullMemory).unwrap();
}

#[test]
fn a_free_head_on_no_list() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_1000)]);
    let mut b = f.buddy();
    let _x = take(&mut b, Request::new(0, Owner::Test), &mut NullMemory);
    b.pages[0].set_state(STATE_FREE);
    b.allocated[Owner::Test.index()] = 0;
    assert_eq!(
        b.validate(),
        Err(Violation::Unlisted {
            free_heads: 1,
            listed: 0
        })
    );
}
