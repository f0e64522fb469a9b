//! Allocation and free in the layer and through the front: exact cost, first fit with the
//! hint, runs across words, chunks taken and given back, best fit by bound, zeroing, owners,
//! the routing by length and the fallbacks to the buddy.

use super::*;
use crate::bitmap::{alloc_frames, free_frames, free_run, Run, CHUNK_FRAMES};
use crate::buddy::{AllocError, NullMemory};

#[test]
fn a_run_costs_exactly_its_length_and_the_empty_chunk_goes_back() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let total = b.stats().free_frames;
    let a = take(&mut r, &mut b, 3, &mut NullMemory);
    let c = take(&mut r, &mut b, 5, &mut NullMemory);
    assert_eq!(c, a + 3 * PAGE_SIZE);
    assert!(a.is_aligned(2 * MIB));
    let s = r.stats();
    assert_eq!((s.chunks, s.frames_in_use, s.frames_free), (1, 8, 504));
    assert_eq!(b.stats().allocated_to(Owner::Bitmap), CHUNK_FRAMES);
    assert_eq!(b.stats().free_frames, total - CHUNK_FRAMES);
    assert_eq!(r.run_of(a + PAGE_SIZE + 5), Some((a, 3, Owner::Test)));
    assert_eq!(r.run_of(c + 7 * PAGE_SIZE), None);
    check(&r, &b);

    assert_eq!(r.free(a, 3, &mut b, &mut NullMemory), Ok(Owner::Test));
    check(&r, &b);
    assert_eq!(r.stats().chunks, 1);
    assert_eq!(r.free(c, 5, &mut b, &mut NullMemory), Ok(Owner::Test));
    check(&r, &b);
    // The first chunk to empty stays, idle, until released.
    let s = r.stats();
    assert_eq!(
        (s.chunks, s.idle_chunks, s.frames_in_use, s.chunks_returned),
        (1, 1, 0, 0)
    );
    assert_eq!(r.release_idle(&mut b, &mut NullMemory), CHUNK_FRAMES);
    assert_eq!(r.release_idle(&mut b, &mut NullMemory), 0);
    check(&r, &b);
    let s = r.stats();
    assert_eq!(
        (s.chunks, s.frames_in_use, s.chunks_taken, s.chunks_returned),
        (0, 0, 1, 1)
    );
    assert_eq!(b.stats().free_frames, total);
}

#[test]
fn first_fit_fills_holes_and_runs_cross_word_boundaries() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let base = take(&mut r, &mut b, 60, m);
    let at = |i: u64| base + i * PAGE_SIZE;
    assert_eq!(take(&mut r, &mut b, 10, m), at(60));
    assert_eq!(take(&mut r, &mut b, 100, m), at(70));
    r.free(at(60), 10, &mut b, m).unwrap();
    check(&r, &b);
    // Too long for the hole: after the last run, across word boundaries.
    assert_eq!(take(&mut r, &mut b, 70, m), at(170));
    // Fits the hole exactly.
    assert_eq!(take(&mut r, &mut b, 10, m), at(60));
    assert_eq!(take(&mut r, &mut b, 1, m), at(240));
    check(&r, &b);
    // A run of more than a word, starting mid-word.
    assert_eq!(take(&mut r, &mut b, 200, m), at(241));
    check(&r, &b);
}

#[test]
fn single_frames_follow_the_hint_and_a_full_chunk_leaves_the_lists() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let base = take(&mut r, &mut b, 1, m);
    for i in 1..CHUNK_FRAMES {
        assert_eq!(take(&mut r, &mut b, 1, m), base + i * PAGE_SIZE);
        let slot = usize::from(r.slots[0]);
        assert_eq!(u64::from(r.chunks[slot].hint), i + 1);
    }
    check(&r, &b);
    assert_eq!(r.listed, [0; 8], "a full chunk is on no list");
    let other = take(&mut r, &mut b, 1, m);
    assert!(other.pfn().as_u64() / CHUNK_FRAMES != base.pfn().as_u64() / CHUNK_FRAMES);
    assert_eq!(r.stats().chunks, 2);
    r.free(base + 100 * PAGE_SIZE, 1, &mut b, m).unwrap();
    check(&r, &b);
    // The freed frame is the tightest fit (its chunk's bound is 1).
    assert_eq!(take(&mut r, &mut b, 1, m), base + 100 * PAGE_SIZE);
    check(&r, &b);
}

#[test]
fn a_short_request_goes_to_the_chunk_with_the_tightest_bound() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let a = take(&mut r, &mut b, 100, m);
    let hole = take(&mut r, &mut b, 2, m);
    take(&mut r, &mut b, 410, m);
    let fresh = take(&mut r, &mut b, 1, m);
    r.free(hole, 2, &mut b, m).unwrap();
    check(&r, &b);
    assert_eq!(take(&mut r, &mut b, 2, m), hole);
    assert_eq!(take(&mut r, &mut b, 2, m), fresh + PAGE_SIZE);
    assert_eq!(r.run_of(a), Some((a, 100, Owner::Test)));
    check(&r, &b);
}

#[test]
fn a_failed_search_lowers_the_bound_and_a_new_chunk_serves_the_run() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let first = take(&mut r, &mut b, 1, m);
    let long = take(&mut r, &mut b, 300, m);
    take(&mut r, &mut b, 1, m);
    r.free(long, 300, &mut b, m).unwrap();
    check(&r, &b);
    // 300 and 210 free frames: the bound (at most the 510 free frames) promises more than
    // there is, so the search fails once, and the chunk moves to the list of 399.
    let other = take(&mut r, &mut b, 400, m);
    assert_eq!(r.stats().chunks, 2);
    assert_ne!(
        other.pfn().as_u64() / CHUNK_FRAMES,
        first.pfn().as_u64() / CHUNK_FRAMES
    );
    let slot = usize::from(r.locate(first.pfn()).unwrap().0);
    assert_eq!(r.chunks[slot].bound, 399);
    check(&r, &b);
    assert_eq!(take(&mut r, &mut b, 300, m), long);
    check(&r, &b);
}

#[test]
fn zeroing_touches_only_the_run() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let mut mem = HostMemory::default();
    let a = r.alloc(3, Owner::Test, true, &mut b, &mut mem).unwrap();
    assert!(mem.holds(a, 3, 0));
    assert_eq!(mem.read(a + 3 * PAGE_SIZE), GARBAGE);
    assert_eq!(mem.read(pa(a.as_u64() - 1)), GARBAGE);
}

#[test]
fn runs_are_counted_per_owner_and_a_free_names_the_owner() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let pt = r.alloc(3, Owner::PageTable, false, &mut b, m).unwrap();
    let heap = r.alloc(5, Owner::Heap, false, &mut b, m).unwrap();
    let s = r.stats();
    assert_eq!(s.allocated_to(Owner::PageTable), 3);
    assert_eq!(s.allocated_to(Owner::Heap), 5);
    // The buddy sees one chunk, owned by the layer.
    assert_eq!(b.stats().allocated_to(Owner::PageTable), 0);
    assert_eq!(b.stats().allocated_to(Owner::Bitmap), CHUNK_FRAMES);
    check(&r, &b);
    assert_eq!(r.free(heap, 5, &mut b, m), Ok(Owner::Heap));
    assert_eq!(r.stats().allocated_to(Owner::Heap), 0);
    assert_eq!(r.free(pt, 3, &mut b, m), Ok(Owner::PageTable));
    check(&r, &b);
}

#[test]
fn the_front_sends_short_runs_to_chunks_and_long_ones_to_the_buddy() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let total = b.stats().free_frames;
    let short = alloc_frames(&mut r, &mut b, 511, Owner::Stack, false, m).unwrap();
    assert!(r.holds(short.addr));
    assert_eq!(short.frames, 511);
    let chunk = alloc_frames(&mut r, &mut b, 512, Owner::Stack, false, m).unwrap();
    assert!(!r.holds(chunk.addr));
    assert_eq!(b.owner_of(chunk.addr), Some((Owner::Stack, 9, chunk.addr)));
    let long = alloc_frames(&mut r, &mut b, 600, Owner::Heap, false, m).unwrap();
    assert_eq!(b.owner_of(long.addr), Some((Owner::Heap, 10, long.addr)));
    assert_eq!(long.bytes(), 600 * PAGE_SIZE);
    check(&r, &b);
    for run in [short, chunk, long] {
        free_run(&mut r, &mut b, run, m).unwrap();
        check(&r, &b);
    }
    r.release_idle(&mut b, m);
    assert_eq!(b.stats().free_frames, total);
    assert_eq!(r.stats().fallbacks, 0);
}

#[test]
fn a_full_table_falls_back_to_the_buddy_rounded_up() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<1>::new();
    let m = &mut NullMemory;
    let total = b.stats().free_frames;
    let big = alloc_frames(&mut r, &mut b, 510, Owner::Test, false, m).unwrap();
    let last = alloc_frames(&mut r, &mut b, 1, Owner::Test, false, m).unwrap();
    assert_eq!(
        r.alloc(3, Owner::Test, false, &mut b, m),
        Err(FrameError::ChunksFull { frames: 3 })
    );
    assert_eq!(
        message(FrameError::ChunksFull { frames: 3 }),
        "bitmap layer: every chunk slot is in use and no chunk has 3 frames free in a row"
    );
    let spill = alloc_frames(&mut r, &mut b, 3, Owner::Dma, true, m).unwrap();
    assert!(!r.holds(spill.addr));
    assert_eq!(b.owner_of(spill.addr), Some((Owner::Dma, 2, spill.addr)));
    assert_eq!(r.stats().fallbacks, 1);
    check(&r, &b);
    // The spill goes back to the buddy as the block it is.
    assert_eq!(
        free_frames(&mut r, &mut b, spill.addr, 3, m),
        Ok(Owner::Dma)
    );
    for run in [big, last] {
        free_run(&mut r, &mut b, run, m).unwrap();
    }
    check(&r, &b);
    r.release_idle(&mut b, m);
    assert_eq!(b.stats().free_frames, total);
}

#[test]
fn without_a_free_2_mib_block_small_runs_come_from_the_buddy() {
    // 1 MiB of RAM: no order-9 block at all.
    let mut f = Fixture::mib(1);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let run = alloc_frames(&mut r, &mut b, 5, Owner::Test, false, m).unwrap();
    assert_eq!(b.owner_of(run.addr), Some((Owner::Test, 3, run.addr)));
    assert_eq!((r.stats().fallbacks, r.stats().chunks), (1, 0));
    assert_eq!(
        r.alloc(5, Owner::Test, false, &mut b, m),
        Err(FrameError::NoFreeChunk { frames: 5 })
    );
    assert_eq!(
        message(FrameError::NoFreeChunk { frames: 5 }),
        "bitmap layer: no chunk has 5 frames free in a row and the buddy has no free 2 MiB block"
    );
    // The layer did not ask the buddy for a chunk it could not have.
    assert_eq!(b.stats().alloc_failures, 0);
    assert_eq!(
        r.alloc(5, Owner::Test, false, &mut b, m),
        Err(FrameError::NoFreeChunk { frames: 5 })
    );
    assert_eq!(
        message(FrameError::NoFreeChunk { frames: 5 }),
        "bitmap layer: no chunk has 5 frames free in a row and the buddy has no free 2 MiB block"
    );
    // The layer did not ask the buddy for a chunk it could not have.
    assert_eq!(b.stats().alloc_failures, 0);
    free_run(&mut r, &mut b, run, m).unwrap();
    check(&r, &b);
}

#[test]
fn when_even_the_buddy_is_out_the_failure_is_reported() {
    let range = [(RAM, RAM + 4 * PAGE_SIZE)];
    let mut f = Fixture::new(&range, &range);
    let mut b = f.buddy();
    let mut r = SmallRuns::<8>::new();
    let m = &mut NullMemory;
    let all = alloc_frames(&mut r, &mut b, 4, Owner::Test, false, m).unwrap();
    let e = alloc_frames(&mut r, &mut b, 1, Owner::Test, false, m).unwrap_err();
    assert!(matches!(
        e,
        FrameError::Alloc(AllocError::OutOfMemory { order: 0, .. })
    ));
    assert_eq!(r.stats().failures, 1);
    let _: Run = all;
    check(&r, &b);
}

#[test]
fn pairs_at_a_chunk_boundary_keep_one_idle_chunk_instead_of_churning() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let m = &mut NullMemory;
    let total = b.stats().free_frames;
    for _ in 0..100 {
        let run = alloc_frames(&mut r, &mut b, 2, Owner::Test, false, m).unwrap();
        free_run(&mut r, &mut b, run, m).unwrap();
        check(&r, &b);
    }
    let s = r.stats();
    assert_eq!(
        (s.chunks_taken, s.chunks_returned, s.idle_chunks),
        (1, 0, 1)
    );
    // A second chunk that empties while one is idle goes back at once.
    let big = alloc_frames(&mut r, &mut b, 500, Owner::Test, false, m).unwrap();
    let other = alloc_frames(&mut r, &mut b, 100, Owner::Test, false, m).unwrap();
    assert_eq!(r.stats().chunks, 2);
    free_run(&mut r, &mut b, big, m).unwrap();
    assert_eq!(r.stats().idle_chunks, 1);
    free_run(&mut r, &mut b, other, m).unwrap();
    check(&r, &b);
    let s = r.stats();
    assert_eq!((s.chunks, s.chunks_returned, s.idle_chunks), (1, 1, 1));
    assert_eq!(r.release_idle(&mut b, m), CHUNK_FRAMES);
    check(&r, &b);
    assert_eq!(b.stats().free_frames, total);
}
