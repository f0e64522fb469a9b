//! Every kind of refused call: the exact error, its message, the counter, and both layers left
//! exactly as they were.

use super::*;
use crate::bitmap::{alloc_frames, free_frames, RunHolder, RunMisuse};
use crate::buddy::{FreeError, Holder, NullMemory};

/// A layer with, from the chunk's start: a run of 3 (frames 0-2), a run of 5 (3-7), a run of
/// 2 at frame 8 (two runs of 1 at frames 8 and 9 were freed first, so frame 9 once started a
/// run), and free frames from 10 on.
struct Scene {
    a: PhysAddr,
    c: PhysAddr,
}

fn scene(r: &mut SmallRuns<4>, b: &mut Buddy<'_>) -> Scene {
    let m = &mut NullMemory;
    let a = take(r, b, 3, m);
    let c = take(r, b, 5, m);
    let x = take(r, b, 1, m);
    let y = take(r, b, 1, m);
    r.free(x, 1, b, m).unwrap();
    r.free(y, 1, b, m).unwrap();
    assert_eq!(take(r, b, 2, m), x);
    check(r, b);
    Scene { a, c }
}

/// Frees through the front, expects `want` and `message`, and checks that nothing but the
/// counter of its kind changed.
fn refused(
    r: &mut SmallRuns<4>,
    b: &mut Buddy<'_>,
    addr: PhysAddr,
    frames: u64,
    want: FrameError,
    text: &str,
) {
    let (before, buddy_before) = (r.clone(), buddy_state(b));
    let kind = want.misuse().unwrap();
    let counted = r.stats().misuse.get(kind);
    assert_eq!(free_frames(r, b, addr, frames, &mut NullMemory), Err(want));
    assert_eq!(message(want), text);
    assert!(same_but_counters(&before, r), "the layer changed");
    assert_eq!(buddy_state(b), buddy_before, "the buddy changed");
    assert_eq!(r.stats().misuse.get(kind), counted + 1);
    assert_eq!(r.stats().misuse.total(), before.stats().misuse.total() + 1);
    check(r, b);
}

#[test]
fn lengths_out_of_range() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let s = scene(&mut r, &mut b);
    refused(
        &mut r,
        &mut b,
        s.a,
        0,
        FrameError::BadLength { frames: 0 },
        "bad run length: 0 frames (1 to 262144 allowed)",
    );
    refused(
        &mut r,
        &mut b,
        s.a,
        (1 << 18) + 1,
        FrameError::BadLength { frames: 262_145 },
        "bad run length: 262145 frames (1 to 262144 allowed)",
    );
    let before = r.clone();
    let m = &mut NullMemory;
    for frames in [0, 512] {
        assert_eq!(
            r.alloc(frames, Owner::Test, false, &mut b, m),
            Err(FrameError::BadLength { frames })
        );
    }
    assert_eq!(
        alloc_frames(&mut r, &mut b, 0, Owner::Test, false, m),
        Err(FrameError::BadLength { frames: 0 })
    );
    assert!(same_but_counters(&before, &r));
    assert_eq!(r.stats().misuse.get(RunMisuse::BadLength), 5);
}

#[test]
fn wrong_lengths_name_the_run() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let s = scene(&mut r, &mut b);
    let wrong = |frames, actual, addr| FrameError::WrongLength {
        addr,
        frames,
        actual,
        owner: Owner::Test,
    };
    refused(
        &mut r,
        &mut b,
        s.a,
        2,
        wrong(2, 3, s.a),
        "free of 0x40000000 (2 frames): the run was allocated with 3 frames (owner test)",
    );
    refused(
        &mut r,
        &mut b,
        s.a,
        4,
        wrong(4, 3, s.a),
        "free of 0x40000000 (4 frames): the run was allocated with 3 frames (owner test)",
    );
    refused(
        &mut r,
        &mut b,
        s.c,
        1,
        wrong(1, 5, s.c),
        "free of 0x40003000 (1 frame): the run was allocated with 5 frames (owner test)",
    );
    // A small run freed as a large one: the chunk holds the address, so the layer checks it.
    refused(
        &mut r,
        &mut b,
        s.a,
        512,
        wrong(512, 3, s.a),
        "free of 0x40000000 (512 frames): the run was allocated with 3 frames (owner test)",
    );
}

#[test]
fn double_frees_and_addresses_never_allocated() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let s = scene(&mut r, &mut b);
    let run_at_8 = RunHolder::Run {
        addr: frame(8),
        frames: 2,
        owner: Owner::Test,
    };
    refused(
        &mut r,
        &mut b,
        frame(9),
        1,
        FrameError::DoubleFree {
            addr: frame(9),
            frames: 1,
            now: run_at_8,
        },
        "double free of 0x40009000 (1 frame): freed before, now inside the run of 2 frames \
         at 0x40008000 allocated to test",
    );
    refused(
        &mut r,
        &mut b,
        frame(1),
        2,
        FrameError::NeverAllocated {
            addr: frame(1),
            frames: 2,
            now: RunHolder::Run {
                addr: s.a,
                frames: 3,
                owner: Owner::Test,
            },
        },
        "free of 0x40001000 (2 frames): never allocated; it is inside the run of 3 frames at \
         0x40000000 allocated to test",
    );
    refused(
        &mut r,
        &mut b,
        frame(20),
        1,
        FrameError::NeverAllocated {
            addr: frame(20),
            frames: 1,
            now: RunHolder::Free,
        },
        "free of 0x40014000 (1 frame): never allocated; the frame is free",
    );
    free_frames(&mut r, &mut b, frame(8), 2, &mut NullMemory).unwrap();
    refused(
        &mut r,
        &mut b,
        frame(8),
        2,
        FrameError::DoubleFree {
            addr: frame(8),
            frames: 2,
            now: RunHolder::Free,
        },
        "double free of 0x40008000 (2 frames): the frame is already free",
    );
}

#[test]
fn misaligned_addresses() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let s = scene(&mut r, &mut b);
    refused(
        &mut r,
        &mut b,
        s.a + 0x10,
        3,
        FrameError::Misaligned {
            addr: s.a + 0x10,
            frames: 3,
        },
        "free of 0x40000010 (3 frames): not the start of a frame",
    );
}

#[test]
fn addresses_in_no_chunk() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    scene(&mut r, &mut b);
    // The layer alone refuses them.
    let far = frame(4000);
    let before = r.clone();
    assert_eq!(
        r.free(far, 1, &mut b, &mut NullMemory),
        Err(FrameError::NotInChunk {
            addr: far,
            frames: 1
        })
    );
    assert_eq!(
        message(FrameError::NotInChunk {
            addr: far,
            frames: 1
        }),
        "free of 0x40fa0000 (1 frame): no chunk of the bitmap layer holds it"
    );
    assert!(same_but_counters(&before, &r));
    assert_eq!(r.stats().misuse.get(RunMisuse::NotInChunk), 1);

    // The front hands them to the buddy, which refuses them in its words and counts them.
    let buddy_before = buddy_state(&b);
    let before = r.clone();
    let outside = pa(0x1000);
    assert_eq!(
        free_frames(&mut r, &mut b, outside, 1, &mut NullMemory),
        Err(FrameError::Free(FreeError::OutsideRam {
            addr: outside,
            order: 0
        }))
    );
    let e = free_frames(&mut r, &mut b, far, 3, &mut NullMemory).unwrap_err();
    assert!(
        matches!(
            e,
            FrameError::Free(FreeError::NeverAllocated {
                order: 2,
                now: Holder::Free { .. },
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(e.misuse(), None);
    assert!(r == before, "the layer counts only its own refusals");
    assert_eq!(buddy_state(&b), buddy_before);
    assert_eq!(b.stats().misuse.total(), 2);
    check(&r, &b);
}

#[test]
fn a_run_freed_again_after_its_chunk_went_back_is_refused_by_the_buddy() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let mut r = SmallRuns::<4>::new();
    let m = &mut NullMemory;
    let run = alloc_frames(&mut r, &mut b, 1, Owner::Test, false, m).unwrap();
    let addr = run.addr;
    crate::bitmap::free_run(&mut r, &mut b, run, m).unwrap();
    r.release_idle(&mut b, m);
    assert_eq!(r.stats().chunks, 0);
    let buddy_before = buddy_state(&b);
    let e = free_frames(&mut r, &mut b, addr, 1, m).unwrap_err();
    assert!(
        matches!(e, FrameError::Free(FreeError::DoubleFree { order: 0, .. })),
        "{e:?}"
    );
    assert_eq!(buddy_state(&b), buddy_before);
    check(&r, &b);
}
