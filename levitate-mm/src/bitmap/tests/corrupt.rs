//! `validate` finds each kind of broken invariant: a layer is built, one field is broken by
//! hand, and the checker must name the break.

use super::*;
use crate::bitmap::{bits, BitmapViolation, CHUNK_ORDER};
use crate::buddy::NullMemory;
use std::string::ToString;

/// Two chunks. The first: runs of 3, 5 and 500 (frames 0-2, 5-9, 10-509) with holes of 2 at
/// frames 3-4 and 510-511, its bound 4 after a failed search; the second: a run of 11.
fn layer(b: &mut Buddy<'_>) -> SmallRuns<4> {
    let mut r = SmallRuns::<4>::new();
    let m = &mut NullMemory;
    take(&mut r, b, 3, m);
    let hole = take(&mut r, b, 2, m);
    take(&mut r, b, 5, m);
    r.free(hole, 2, b, m).unwrap();
    take(&mut r, b, 500, m);
    take(&mut r, b, 11, m);
    check(&r, b);
    r
}

/// Breaks `r` with `breaks` and expects `validate` to say `want`.
fn caught(b: &Buddy<'_>, r: &SmallRuns<4>, breaks: impl FnOnce(&mut SmallRuns<4>), want: &str) {
    let mut broken = r.clone();
    breaks(&mut broken);
    let v = broken.validate(b).unwrap_err();
    assert_eq!(v.to_string(), want, "{v:?}");
}

#[test]
fn broken_chunks_are_named() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let r = layer(&mut b);
    let first = usize::from(r.slots[0]);
    caught(
        &b,
        &r,
        |r| r.chunks[first].free += 1,
        "bitmap: chunk 0x40000000: the free count disagrees with the map",
    );
    caught(
        &b,
        &r,
        |r| bits::clear(&mut r.chunks[first].starts, 5),
        "bitmap: chunk 0x40000000: used frames without a run start",
    );
    caught(
        &b,
        &r,
        |r| bits::set(&mut r.chunks[first].starts, 511),
        "bitmap: chunk 0x40000000: a run starts at a free frame",
    );
    caught(
        &b,
        &r,
        |r| bits::clear(&mut r.chunks[first].ever, 0),
        "bitmap: chunk 0x40000000: a run start is not marked as ever started",
    );
    caught(
        &b,
        &r,
        |r| r.chunks[first].hint = 4,
        "bitmap: chunk 0x40000000: a free frame below the hint",
    );
    caught(
        &b,
        &r,
        |r| r.chunks[first].bound = 1,
        "bitmap: chunk 0x40000000: the free-run bound is below the longest free run",
    );
}

#[test]
fn broken_lists_tables_and_counters_are_named() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let r = layer(&mut b);
    caught(
        &b,
        &r,
        |r| r.listed = [0; 8],
        "bitmap: list of chunks with bound 4: the non-empty mask disagrees with the list",
    );
    caught(
        &b,
        &r,
        |r| {
            r.keys.swap(0, 1);
            r.slots.swap(0, 1);
        },
        "bitmap: chunk table: chunk bases are not sorted and distinct",
    );
    caught(
        &b,
        &r,
        |r| r.slots[1] = r.slots[0],
        "bitmap: chunk table: a base names a slot that does not hold it",
    );
    caught(
        &b,
        &r,
        |r| r.spare = 0,
        "bitmap: chunk table: a spare slot holds a chunk",
    );
    caught(
        &b,
        &r,
        |r| r.in_use += 1,
        "bitmap: frames in runs: 519 counted, 520 recorded",
    );
    caught(
        &b,
        &r,
        |r| r.allocated[Owner::Test as usize] -= 1,
        "bitmap: 519 frames in runs of test, counter says 518",
    );
    caught(
        &b,
        &r,
        |r| {
            let slot = r.slots[0];
            r.unlink(slot);
        },
        "bitmap: chunks with free frames on the lists: 2 counted, 1 recorded",
    );
}

#[test]
fn a_chunk_the_buddy_no_longer_holds_is_named() {
    let mut f = Fixture::mib(16);
    let mut b = f.buddy();
    let r = layer(&mut b);
    b.free(frame(0), CHUNK_ORDER, &mut NullMemory).unwrap();
    assert_eq!(
        r.validate(&b),
        Err(BitmapViolation::NotHeld { chunk: frame(0) })
    );
}
