//! Poisoning through the buddy's switch: freed runs hold the poison, allocations check it and
//! report a write into a free frame with its address, and chunks follow the switch.

use super::*;
use crate::bitmap::{bits, RunMisuse};
use crate::buddy::POISON;

#[test]
fn freed_runs_are_poisoned_and_a_write_after_free_is_reported() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let mut mem = HostMemory::default();
    b.set_poisoning(true, &mut mem);
    let keep = take(&mut r, &mut b, 1, &mut mem);
    let a = take(&mut r, &mut b, 3, &mut mem);
    mem.fill(a.pfn(), 3, 0x11);
    r.free(a, 3, &mut b, &mut mem).unwrap();
    assert!(mem.holds(a, 3, POISON));
    assert_eq!(r.find_use_after_free(&mem), None);

    mem.write(a + PAGE_SIZE + 0x20, 0);
    let want = FrameError::UseAfterFree {
        addr: a + PAGE_SIZE + 0x20,
        run: a,
        frames: 3,
    };
    // memcheck sees it first, in the free run it lies in.
    assert_eq!(
        r.find_use_after_free(&mem),
        Some(FrameError::UseAfterFree {
            addr: a + PAGE_SIZE + 0x20,
            run: a,
            frames: 511,
        })
    );
    let before = r.clone();
    let buddy_before = buddy_state(&b);
    assert_eq!(r.alloc(3, Owner::Test, false, &mut b, &mut mem), Err(want));
    assert_eq!(
        message(want),
        "use after free: 0x40002020 was written while free (run of 3 frames at 0x40001000 in \
         a bitmap chunk); poisoned again and kept free"
    );
    assert_eq!(want.misuse(), None);
    // The runs are as before (hints may move), the run is poisoned again, the retry succeeds.
    let slot = usize::from(r.slots[0]);
    assert_eq!(r.chunks[slot].used, before.chunks[slot].used);
    assert_eq!(r.stats().frames_in_use, 1);
    assert_eq!(r.stats().use_after_free, 1);
    assert_eq!(r.stats().misuse.get(RunMisuse::BadLength), 0);
    assert_eq!(buddy_state(&b), buddy_before);
    assert!(mem.holds(a, 3, POISON));
    check(&r, &b);
    assert_eq!(r.alloc(3, Owner::Test, true, &mut b, &mut mem), Ok(a));
    assert!(mem.holds(a, 3, 0));
    r.free(a, 3, &mut b, &mut mem).unwrap();
    r.free(keep, 1, &mut b, &mut mem).unwrap();
    r.release_idle(&mut b, &mut mem);
    // The chunk went back; the buddy poisoned it whole.
    assert_eq!(r.stats().chunks, 0);
    assert_eq!(b.find_use_after_free(&mem), None);
    check(&r, &b);
}

#[test]
fn turning_poisoning_on_poisons_the_chunks_at_the_next_call() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let mut mem = HostMemory::default();
    let a = take(&mut r, &mut b, 3, &mut mem);
    b.set_poisoning(true, &mut mem);
    // Not synchronised yet: nothing to check, and nothing reported.
    assert_eq!(r.find_use_after_free(&mem), None);
    // The next call poisons the chunk's free frames first, so no false alarm.
    let c = take(&mut r, &mut b, 2, &mut mem);
    assert_eq!(c, a + 3 * PAGE_SIZE);
    assert!(mem.holds(c + 2 * PAGE_SIZE, 507, POISON));
    assert_eq!(mem.read(a), GARBAGE, "runs in use are not touched");
    mem.write(frame(100), 1);
    assert_eq!(
        r.find_use_after_free(&mem),
        Some(FrameError::UseAfterFree {
            addr: frame(100),
            run: frame(5),
            frames: 507
        })
    );
    // Turning it off stops the checks.
    b.set_poisoning(false, &mut mem);
    take(&mut r, &mut b, 200, &mut mem);
    assert_eq!(r.find_use_after_free(&mem), None);
    check(&r, &b);
}

#[test]
fn a_fresh_chunk_is_checked_by_the_buddy() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let mut mem = HostMemory::default();
    b.set_poisoning(true, &mut mem);
    mem.write(frame(7), 9);
    let e = r
        .alloc(1, Owner::Test, false, &mut b, &mut mem)
        .unwrap_err();
    assert!(matches!(
        e,
        FrameError::Alloc(crate::buddy::AllocError::UseAfterFree { .. })
    ));
    assert_eq!(r.stats().chunks, 0);
    check(&r, &b);
    // The buddy poisoned the block again: the retry succeeds.
    let a = take(&mut r, &mut b, 1, &mut mem);
    assert!(bits::get(&r.chunks[usize::from(r.slots[0])].used, 0));
    assert_eq!(r.run_of(a), Some((a, 1, Owner::Test)));
    check(&r, &b);
}
