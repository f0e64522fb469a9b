//! Poisoning: free memory holds the pattern, allocation checks it, and a write into a freed
//! frame is reported with its address while the allocator stays consistent.

use super::*;
use crate::buddy::{AllocError, POISON};

fn fixture() -> Fixture {
    Fixture::all_usable(&[(0x4000_0000, 0x4000_8000)])
}

#[test]
fn turning_poisoning_on_poisons_free_memory_only() {
    let mut f = fixture();
    let mut b = f.buddy();
    let mut mem = TestMemory::default();
    let (used, _) = take(&mut b, Request::new(0, Owner::Test), &mut mem);
    b.set_poisoning(true, &mut mem);
    assert!(b.poisoning() && b.stats().poisoning);
    assert_eq!(mem.read(used), GARBAGE);
    for blk in b.free_blocks() {
        assert_eq!(mem.find_not(blk.addr.pfn(), 1 << blk.order, POISON), None);
    }
    assert_eq!(b.find_use_after_free(&mem), None);
    // A freed block is poisoned.
    mem.fill(used.pfn(), 1, 0x11);
    b.free(used, 0, &mut mem).unwrap();
    assert_eq!(mem.find_not(used.pfn(), 8, POISON), None);
}

#[test]
fn a_write_into_a_freed_frame_is_reported_and_the_block_stays_free() {
    let mut f = fixture();
    let mut b = f.buddy();
    let mut mem = TestMemory::default();
    b.set_poisoning(true, &mut mem);
    let (x, _) = take(&mut b, Request::new(0, Owner::Test), &mut mem);
    b.free(x, 0, &mut mem).unwrap();
    mem.write(x + 0x10, 0);
    assert_eq!(
        b.find_use_after_free(&mem),
        Some(AllocError::UseAfterFree {
            addr: x + 0x10,
            block: x,
            order: 3
        })
    );
    let before = snapshot(&b);
    let e = b.alloc(Request::new(0, Owner::Test), &mut mem).unwrap_err();
    assert_eq!(
        e,
        AllocError::UseAfterFree {
            addr: x + 0x10,
            block: x,
            order: 0
        }
    );
    assert_eq!(
        e.to_string(),
        "use after free: 0x40000010 was written while free (order 0 block at 0x40000000); \
         poisoned again and kept free"
    );
    assert_eq!(snapshot(&b), before);
    b.validate().unwrap();
    assert_eq!(b.stats().use_after_free, 1);
    assert_eq!(b.find_use_after_free(&mem), None, "poisoned again");
    // The retry gets the same block, clean.
    assert_eq!(take(&mut b, Request::new(0, Owner::Test), &mut mem).0, x);
}

#[test]
fn only_the_frames_handed_out_are_checked() {
    let mut f = fixture();
    let mut b = f.buddy();
    let mut mem = TestMemory::default();
    b.set_poisoning(true, &mut mem);
    mem.write(pa(0x4000_5008), 1);
    let (x, _) = take(&mut b, Request::new(1, Owner::Test), &mut mem);
    assert_eq!(x, pa(0x4000_0000));
    assert_eq!(
        b.find_use_after_free(&mem),
        Some(AllocError::UseAfterFree {
            addr: pa(0x4000_5008),
            block: pa(0x4000_4000),
            order: 2
        })
    );
    let e = b.alloc(Request::new(2, Owner::Test), &mut mem).unwrap_err();
    assert!(matches!(e, AllocError::UseAfterFree { .. }));
    b.validate().unwrap();
}

#[test]
fn without_poisoning_nothing_is_checked_and_zeroing_still_works() {
    let mut f = fixture();
    let mut b = f.buddy();
    let mut mem = TestMemory::default();
    b.set_poisoning(true, &mut mem);
    let z = take(&mut b, Request::new(1, Owner::Test).zeroed(), &mut mem);
    assert_eq!(
        mem.find_not(z.0.pfn(), 2, 0),
        None,
        "zeroed after the check"
    );
    b.free(z.0, 1, &mut mem).unwrap();
    b.set_poisoning(false, &mut mem);
    mem.write(z.0, 3);
    assert_eq!(b.find_use_after_free(&mem), None);
    let again = take(&mut b, Request::new(1, Owner::Test), &mut mem);
    assert_eq!(again.0, z.0);
    assert_eq!(mem.read(z.0), 3);
}
