//! The shell over plain memory: a model check of random workloads (no overlap, contents
//! kept, every block inside mapped memory, `validate` holds), every misuse refused, growth
//! falling back to the exact need, idle and limit-driven release, and the two stress
//! cases in miniature.

use super::*;
use levitate_mm::slab::runs::MAX_RUN_BYTES;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec::Vec;

const MB: usize = 1 << 20;

/// Plain memory standing in for the kernel's frames: a leaked buffer, the mapped ranges
/// recorded; fresh mappings are filled with junk (as fresh frames would be), unmapped ones
/// too, so a block left in unmapped memory shows up as changed contents.
struct Plain {
    base: usize,
    size: usize,
    mapped: BTreeMap<usize, usize>,
    bytes: usize,
    /// Refuse to map more than this many bytes (a machine out of frames).
    frames: usize,
    /// `unmap` refuses (page tables busy).
    busy: bool,
}

impl Plain {
    fn new(size: usize) -> Self {
        // 2 MiB aligned start inside a leaked buffer (the heap needs it).
        let buf: &'static mut [u8] = Box::leak(std::vec![0u8; size + (2 << 20)].into_boxed_slice());
        let base = (buf.as_mut_ptr() as usize).next_multiple_of(2 << 20);
        Self {
            base,
            size,
            mapped: BTreeMap::new(),
            bytes: 0,
            frames: usize::MAX,
            busy: false,
        }
    }

    /// Whether `[at, at + bytes)` is covered by mappings (adjacent ones join: an extended
    /// segment is two mappings).
    fn is_mapped(&self, at: usize, bytes: usize) -> bool {
        let Some((&s, &n)) = self.mapped.range(..=at).next_back() else {
            return false;
        };
        let mut end = s + n;
        if end <= at {
            return false;
        }
        while end < at + bytes {
            match self.mapped.get(&end) {
                Some(&n) => end += n,
                None => return false,
            }
        }
        true
    }

    fn fill(at: usize, bytes: usize) {
        // SAFETY: the range is inside the leaked buffer (checked by the callers' asserts).
        unsafe { core::ptr::write_bytes(at as *mut u8, 0xa5, bytes) };
    }
}

impl Mapper for Plain {
    fn map(&mut self, at: usize, bytes: usize) -> bool {
        assert!(
            at >= self.base && at + bytes <= self.base + self.size,
            "outside the window"
        );
        assert!(at.is_multiple_of(PAGE) && bytes.is_multiple_of(PAGE) && bytes > 0);
        if self.bytes + bytes > self.frames {
            return false;
        }
        if let Some((&s, &n)) = self.mapped.range(..at + bytes).next_back() {
            assert!(s + n <= at, "{at:#x}+{bytes:#x} overlaps a mapping");
        }
        Self::fill(at, bytes);
        self.mapped.insert(at, bytes);
        self.bytes += bytes;
        true
    }

    fn unmap(&mut self, at: usize, bytes: usize) -> bool {
        if self.busy {
            return false;
        }
        // One range may cover several mappings (an extended segment), exactly.
        let mut cur = at;
        while cur < at + bytes {
            let n = self
                .mapped
                .remove(&cur)
                .unwrap_or_else(|| panic!("unmap of {at:#x}+{bytes:#x}: {cur:#x} not mapped"));
            cur += n;
        }
        assert_eq!(cur, at + bytes, "unmap of {at:#x} ends inside a mapping");
        self.bytes -= bytes;
        Self::fill(at, bytes);
        true
    }
}

fn heap(window: usize, limit: usize) -> Heap<Plain> {
    let mut h = Heap::new(Plain::new(window));
    let base = h.mapper().base;
    // SAFETY: the window is the mapper's leaked buffer, used by this heap alone.
    unsafe { h.init(base, window, limit) };
    h
}

/// Gives every empty page back and checks that only the record chunks (kept for the heap's
/// life) stay mapped, by the heap's count and by the mapper's.
fn only_records_stay_mapped(h: &mut Heap<Plain>) {
    h.release_all_empty();
    assert_eq!(h.mapped(), h.stats().record_bytes);
    assert_eq!(h.mapper().bytes, h.mapped());
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn small_and_large_blocks_go_to_their_paths() {
    let mut h = heap(256 * MB, 64 * MB);
    let small = h.alloc(layout(100, 8)).unwrap();
    let mid = h.alloc(layout(2000, 16)).unwrap();
    let large = h.alloc(layout(10_000, 8)).unwrap();
    let paged = h.alloc(layout(64, 4096)).unwrap();
    let odd = h.alloc(layout(64, 8192)).unwrap();
    let huge = h.alloc(layout(300 << 10, 8)).unwrap();
    assert_eq!(paged.as_ptr() as usize % 4096, 0);
    assert_eq!(odd.as_ptr() as usize % 8192, 0);
    let s = h.stats();
    assert_eq!(s.slab.objects, 2);
    // 2 KiB to 256 KiB aligned to at most a page: runs in a span; the rest: segments (the
    // big one alone in its own).
    assert_eq!((s.runs.blocks, s.runs.used_pages, s.runs.spans), (2, 4, 1));
    assert_eq!(s.segments, 2);
    assert!(h.mapper().is_mapped(large.as_ptr() as usize, 10_000));
    assert!(h.mapper().is_mapped(huge.as_ptr() as usize, 300 << 10));
    h.validate().unwrap();
    for (p, l) in [
        (small, layout(100, 8)),
        (mid, layout(2000, 16)),
        (large, layout(10_000, 8)),
        (paged, layout(64, 4096)),
        (odd, layout(64, 8192)),
        (huge, layout(300 << 10, 8)),
    ] {
        // SAFETY: live blocks with their layouts.
        unsafe { h.free(p, l) }.unwrap();
    }
    assert_eq!(h.stats().used, 0);
    h.validate().unwrap();
}

#[test]
fn every_misuse_is_refused_and_changes_nothing() {
    let mut h = heap(256 * MB, 64 * MB);
    let a = h.alloc(layout(24, 8)).unwrap();
    let big = h.alloc(layout(8192, 8192)).unwrap();
    let mid = h.alloc(layout(12_000, 64)).unwrap();
    let before = h.stats();
    let at = |p: NonNull<u8>, off: usize| NonNull::new(p.as_ptr().wrapping_add(off)).unwrap();
    // SAFETY (all the frees below): each is refused before touching memory, which is what
    // the test checks; the last two are real frees of live blocks.
    unsafe {
        assert!(matches!(
            h.free(at(a, 8), layout(24, 8)),
            Err(Misuse::Slab(SlabMisuse::NotSlotStart { .. }))
        ));
        assert!(matches!(
            h.free(a, layout(300, 8)),
            Err(Misuse::Slab(SlabMisuse::WrongSize { .. }))
        ));
        let foreign = NonNull::new(0x1000 as *mut u8).unwrap();
        assert_eq!(
            h.free(foreign, layout(24, 8)),
            Err(Misuse::Foreign { addr: 0x1000 })
        );
        assert!(matches!(
            h.free(at(big, 8), layout(8192, 8192)),
            Err(Misuse::Misaligned { .. })
        ));
        assert!(matches!(
            h.free(big, layout(1 << 30, 64)),
            Err(Misuse::PastSegment { .. })
        ));
        // Medium blocks: not at the start, inside it, another size, another alignment class.
        assert!(matches!(
            h.free(at(mid, 8), layout(12_000, 64)),
            Err(Misuse::Run(RunMisuse::NotBlockStart { .. }))
        ));
        assert!(matches!(
            h.free(at(mid, PAGE), layout(8000, 64)),
            Err(Misuse::Run(RunMisuse::NotBlockStart { .. }))
        ));
        assert!(matches!(
            h.free(mid, layout(20_000, 64)),
            Err(Misuse::Run(RunMisuse::WrongSize { pages: 3, .. }))
        ));
        assert!(matches!(
            h.free(mid, layout(12_000, 2 * PAGE)),
            Err(Misuse::Run(RunMisuse::WrongSize { .. }))
        ));
        // Free space after it, in the same span.
        assert!(matches!(
            h.free(at(mid, 3 * PAGE), layout(4096, 8)),
            Err(Misuse::Run(RunMisuse::DoubleFree { .. }))
        ));
        assert_eq!(h.stats().used, before.used);
        assert_eq!(h.stats().refused, 10);
        h.free(a, layout(24, 8)).unwrap();
        assert!(matches!(
            h.free(a, layout(24, 8)),
            Err(Misuse::Slab(
                SlabMisuse::DoubleFree { .. } | SlabMisuse::NotSlab { .. }
            ))
        ));
        h.free(big, layout(8192, 8192)).unwrap();
        h.free(mid, layout(12_000, 64)).unwrap();
        assert!(matches!(
            h.free(mid, layout(12_000, 64)),
            Err(Misuse::Run(RunMisuse::DoubleFree { .. }))
        ));
    }
    assert_eq!(h.stats().refused, 12);
    h.validate().unwrap();
}

#[test]
fn growth_falls_back_to_the_exact_need() {
    use levitate_mm::slab::segments::need_for;
    let mut h = heap(256 * MB, MB);
    let a = h.alloc(layout(100 << 10, 8)).unwrap();
    let b = h.alloc(layout(200 << 10, 8)).unwrap();
    // A request whose need fits the room but twice it does not (the 56 MB request
    // with 89 MB of room, in small).
    let room = MB - h.mapped();
    let size = (room * 5 / 8).min(DEDICATED_MIN - PAGE);
    let need = need_for(size, 8).unwrap();
    assert!(
        need <= room && 2 * need > room / 2,
        "room {room}, need {need}"
    );
    let before = h.mapped();
    let c = h.alloc(layout(size, 8)).expect("exact growth");
    assert_eq!(h.mapped(), before + need);
    assert_eq!(h.stats().failures, 0);
    h.validate().unwrap();
    // Past the room: a clean failure naming the need.
    assert!(h.alloc(layout(MB, 8)).is_none());
    assert!(matches!(h.last_error(), Some(AllocError::Limit { .. })));
    assert_eq!(h.stats().failures, 1);
    // Out of frames for the generous step but not for the need.
    let mut h2 = heap(256 * MB, 64 * MB);
    h2.mapper_mut().frames = 150 << 10;
    assert!(h2.alloc(layout(100 << 10, 8)).is_some());
    // (The span's records were mapped before the span was refused; they stay.)
    assert_eq!(
        h2.mapped(),
        need_for(100 << 10, 8).unwrap() + h2.stats().record_bytes
    );
    // Big requests get exactly their need, alone.
    let mut h3 = heap(512 * MB, 128 * MB);
    let big = h3.alloc(layout(56_000_000, 8)).unwrap();
    // (And one page of the segment blocks' table for its record.)
    assert_eq!(h3.stats().record_bytes, PAGE);
    assert_eq!(h3.mapped(), need_for(56_000_000, 8).unwrap() + PAGE);
    // (Aligned past a page, so it goes to a segment rather than a span.)
    assert!(h3.alloc(layout(5000, 8192)).is_some());
    assert_eq!(
        h3.stats().segments,
        2,
        "a small block went into the big one's segment"
    );
    // SAFETY: live blocks with their layouts.
    unsafe {
        h3.free(big, layout(56_000_000, 8)).unwrap();
        h.free(a, layout(100 << 10, 8)).unwrap();
        h.free(b, layout(200 << 10, 8)).unwrap();
        h.free(c, layout(size, 8)).unwrap();
    }
    assert_eq!(h3.stats().segments, 1);
    h.validate().unwrap();
    h3.validate().unwrap();
}

#[test]
fn empty_segments_go_back_at_once_but_a_small_reserve() {
    let mut h = heap(256 * MB, 64 * MB);
    // Two big blocks alone, two in a shared segment (aligned past a page), one in a span.
    let blocks: Vec<_> = [
        (4 * MB, 8),
        (6 * MB, 8),
        (100_000, 8192),
        (5000, 8192),
        (9000, 8),
    ]
    .iter()
    .map(|&(s, a)| (h.alloc(layout(s, a)).unwrap(), layout(s, a)))
    .collect();
    assert_eq!(h.stats().segments, 3);
    assert_eq!(h.stats().runs.spans, 1);
    for (p, l) in blocks {
        // SAFETY: live blocks with their layouts.
        unsafe { h.free(p, l) }.unwrap();
    }
    let s = h.stats();
    assert!(s.segments <= 1, "{} segments left", s.segments);
    assert!(s.segment_bytes <= levitate_mm::slab::segments::RETAIN_MAX);
    assert_eq!(h.mapped(), h.mapper().bytes);
    assert_eq!(h.stats().runs.spans, 1, "the span reserve");
    // Reclaim keeps the reserves; a release of everything leaves only the records.
    h.reclaim();
    assert_eq!(h.stats().segments, 1);
    assert_eq!(h.stats().runs.spans, 1);
    only_records_stay_mapped(&mut h);
    h.validate().unwrap();
}

#[test]
fn priming_maps_the_reserve_once() {
    let mut h = heap(256 * MB, 64 * MB);
    assert!(h.prime());
    let mapped = h.mapped();
    assert_eq!(h.stats().slab.empty_pages, SLAB_RETAIN_LOW as u64);
    assert_eq!(
        mapped,
        SPAN_BYTES + RUN_CHUNK_BYTES + SLAB_RETAIN_LOW * PAGE + CHUNK_BYTES
    );
    for size in [16, 100, 700, 2000] {
        let p = h.alloc(layout(size, 8)).unwrap();
        // SAFETY: a live block with its layout.
        unsafe { h.free(p, layout(size, 8)) }.unwrap();
    }
    assert_eq!(
        h.mapped(),
        mapped,
        "a small object mapped more than the reserve"
    );
    assert!(h.prime());
    let p = h.alloc(layout(4000, 8)).unwrap();
    // SAFETY: a live block with its layout.
    unsafe { h.free(p, layout(4000, 8)) }.unwrap();
    assert_eq!(
        h.mapped(),
        mapped,
        "a medium block mapped more than the reserve"
    );
    let mut tiny = heap(256 * MB, 0);
    assert!(!tiny.prime());
}

#[test]
fn busy_page_tables_keep_memory_mapped_until_later() {
    let mut h = heap(256 * MB, 64 * MB);
    let p = h.alloc(layout(4 * MB, 8)).unwrap();
    h.mapper_mut().busy = true;
    // SAFETY: a live block with its layout.
    unsafe { h.free(p, layout(4 * MB, 8)) }.unwrap();
    assert_eq!(h.stats().segments, 1);
    let r = h.reclaim();
    assert!(r.busy && r.bytes == 0);
    h.mapper_mut().busy = false;
    let r = h.reclaim();
    assert!(!r.busy && r.bytes >= 4 * MB);
    assert_eq!(h.stats().segments, 0);
    h.validate().unwrap();
}

/// The issue's `--mem 32M` case in miniature: a 16 MiB limit; a first stress leaves a few
/// small blocks live; the 3.5 MB request and a second stress must still find room (the old
/// heap kept the first stress's segments mapped, pinned by those blocks).
#[test]
fn a_second_stress_after_the_first_finds_room() {
    let mut h = heap(512 * MB, 16 * MB);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut run = |h: &mut Heap<Plain>, total: usize, keep: usize| -> Vec<(NonNull<u8>, Layout)> {
        let mut live = Vec::new();
        let mut bytes = 0;
        while bytes < total {
            let r = next();
            let size = match r & 15 {
                0..=10 => 16 + (r >> 8) as usize % 512,
                11..=14 => 4096 + (r >> 8) as usize % 65536,
                _ => 1 + (r >> 8) as usize % (total / 4),
            };
            let l = layout(size, 8);
            let p = h.alloc(l).unwrap_or_else(|| {
                panic!(
                    "{size} bytes failed after {bytes}: {:?} {:?}",
                    h.last_error(),
                    h.stats()
                )
            });
            bytes += size;
            live.push((p, l));
        }
        // Keep a few small blocks live, as the stress left 7.6 KiB in use.
        let mut kept = Vec::new();
        while kept.len() < keep {
            let i = live.iter().rposition(|(_, l)| l.size() <= 512).unwrap();
            kept.push(live.swap_remove(i));
        }
        for (p, l) in live {
            // SAFETY: live blocks with their layouts.
            unsafe { h.free(p, l) }.unwrap();
        }
        kept
    };
    let kept = run(&mut h, 10 * MB, 5);
    assert!(
        h.mapped() < 2 * MB,
        "{} mapped after the first stress",
        h.mapped()
    );
    let p = h.alloc(layout(3_500_000, 8)).expect("the 3.5 MB request");
    // SAFETY: a live block with its layout.
    unsafe { h.free(p, layout(3_500_000, 8)) }.unwrap();
    run(&mut h, 10 * MB, 0);
    for (p, l) in kept {
        // SAFETY: live blocks with their layouts.
        unsafe { h.free(p, l) }.unwrap();
    }
    assert_eq!(h.stats().failures, 0);
    h.validate().unwrap();
}

#[test]
fn random_workload_matches_a_model() {
    let mut h = heap(512 * MB, 96 * MB);
    let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
    let mut order: Vec<usize> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..30_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if live.len() < 3000 && (!x.is_multiple_of(3) || live.is_empty()) {
            let size = match x % 10 {
                0 => 2049 + (x >> 8) as usize % 100_000,
                1 => 1 + (x >> 8) as usize % 8,
                _ => 1 + (x >> 8) as usize % 2048,
            };
            let align = 1usize << ((x >> 40) % 13);
            let l = layout(size, align);
            let p = h.alloc(l).expect("room");
            let a = p.as_ptr() as usize;
            assert_eq!(a % align, 0);
            assert!(
                h.mapper().is_mapped(a, size),
                "step {step}: {size}/{align} at {a:#x} not in mapped memory (slab {})",
                h.slab.contains(a)
            );
            if let Some((&lo, &(ll, _))) = live.range(..a).next_back() {
                assert!(lo + ll.size() <= a, "step {step}: overlap");
            }
            if let Some((&hi, _)) = live.range(a..).next() {
                assert!(a + size <= hi, "step {step}: overlap");
            }
            let tag = step as u8;
            // SAFETY: a fresh block of `size` bytes.
            unsafe { core::ptr::write_bytes(p.as_ptr(), tag, size) };
            live.insert(a, (l, tag));
            order.push(a);
        } else {
            let i = (x >> 32) as usize % order.len();
            let a = order.swap_remove(i);
            let (l, tag) = live.remove(&a).unwrap();
            // SAFETY: a live block of `l.size()` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(a as *const u8, l.size()) };
            assert!(
                bytes.iter().all(|&b| b == tag),
                "step {step}: contents changed"
            );
            let p = NonNull::new(a as *mut u8).unwrap();
            // SAFETY: a live block with its layout.
            unsafe { h.free(p, l) }.unwrap();
        }
        if step % 1000 == 0 {
            h.validate().unwrap();
            assert_eq!(h.mapped(), h.mapper().bytes);
        }
    }
    for (a, (l, tag)) in live {
        // SAFETY: a live block.
        let bytes = unsafe { core::slice::from_raw_parts(a as *const u8, l.size()) };
        assert!(bytes.iter().all(|&b| b == tag));
        // SAFETY: a live block with its layout.
        unsafe { h.free(NonNull::new(a as *mut u8).unwrap(), l) }.unwrap();
    }
    let kept = h.mapped();
    h.reclaim();
    assert!(h.mapped() <= kept);
    assert!(h.stats().slab.empty_pages <= SLAB_RETAIN_LOW as u64);
    only_records_stay_mapped(&mut h);
    assert_eq!(h.stats().failures, 0);
    h.validate().unwrap();
}

#[test]
fn a_segment_sized_for_a_request_always_takes_it() {
    // Blocks of 256 KiB and more get a segment of exactly their need; linked_list_allocator
    // rounds a size to 8 bytes and refuses a hole whose tail would be 1..16 bytes, so the
    // need must leave no tail or a whole page (stress heap at 1 GiB failed on 81870834 bytes).
    let mut h = heap(256 * MB, 64 * MB);
    for d in 0..48 {
        let size = 300 * PAGE - d;
        let l = layout(size, 1);
        let p = h
            .alloc(l)
            .unwrap_or_else(|| panic!("{size} bytes: {:?}", h.last_error));
        h.validate().unwrap();
        // SAFETY: the live block with its layout.
        unsafe { h.free(p, l) }.unwrap();
    }
    assert_eq!(h.stats().failures, 0);
}

/// Medium blocks (the bench's heap-large range and a little beyond) against a model, with
/// `validate` after every step: no overlap, contents kept, every block in mapped memory, a
/// misuse tried on a live block every few steps (inside it, a size of another page count)
/// refused with its contents intact, and every double free refused.
#[test]
fn medium_blocks_match_a_model_step_by_step() {
    let mut h = heap(256 * MB, 64 * MB);
    let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
    let mut order: Vec<usize> = Vec::new();
    let mut refused = 0;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for step in 0..6_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if order.len() < 200 && (!x.is_multiple_of(3) || order.is_empty()) {
            let size = (2 << 10) + 1 + (x >> 8) as usize % (MAX_RUN_BYTES - (2 << 10));
            let l = layout(size, 1 << ((x >> 40) % 13));
            let p = h.alloc(l).expect("room");
            let a = p.as_ptr() as usize;
            assert!(
                h.runs.contains(a),
                "step {step}: {size} bytes not in a span"
            );
            assert!(h.mapper().is_mapped(a, size), "step {step}: unmapped");
            if let Some((&lo, &(ll, _))) = live.range(..a).next_back() {
                assert!(lo + ll.size() <= a, "step {step}: overlap");
            }
            if let Some((&hi, _)) = live.range(a..).next() {
                assert!(a + size <= hi, "step {step}: overlap");
            }
            let tag = step as u8;
            // SAFETY: a fresh block of `size` bytes.
            unsafe { core::ptr::write_bytes(p.as_ptr(), tag, size) };
            live.insert(a, (l, tag));
            order.push(a);
        } else {
            let a = order.swap_remove((x >> 32) as usize % order.len());
            let (l, tag) = live.remove(&a).unwrap();
            let p = NonNull::new(a as *mut u8).unwrap();
            if step % 5 == 0 {
                let inside = NonNull::new((a + PAGE) as *mut u8).unwrap();
                let other = layout(l.size() + PAGE, l.align());
                // SAFETY: frees the heap must refuse before touching memory.
                unsafe {
                    if l.size() > PAGE {
                        assert!(h.free(inside, l).is_err(), "step {step}: inside freed");
                        refused += 1;
                    }
                    assert!(h.free(p, other).is_err(), "step {step}: wrong size freed");
                }
                refused += 1;
            }
            // SAFETY: a live block of `l.size()` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(a as *const u8, l.size()) };
            assert!(bytes.iter().all(|&b| b == tag), "step {step}: contents");
            // SAFETY: a live block with its layout, then the same free again (refused).
            unsafe {
                h.free(p, l).unwrap();
                assert!(h.free(p, l).is_err(), "step {step}: double free passed");
            }
            refused += 1;
        }
        h.validate().unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(h.mapped(), h.mapper().bytes);
        assert_eq!(h.stats().refused, refused);
    }
    assert_eq!(h.stats().segments, 0, "a medium block went to a segment");
    for (a, (l, _)) in live {
        // SAFETY: a live block with its layout.
        unsafe { h.free(NonNull::new(a as *mut u8).unwrap(), l) }.unwrap();
    }
    let s = h.stats();
    assert_eq!((s.runs.blocks, s.runs.spans), (0, RETAIN_SPANS as u64));
    only_records_stay_mapped(&mut h);
    h.validate().unwrap();
}

/// Near the limit a span (1 MiB) no longer fits: medium requests go to segments of their
/// exact need, and nothing fails while the limit has room for the need.
#[test]
fn medium_blocks_near_the_limit_take_the_exact_need() {
    let mut h = heap(256 * MB, 3 * MB / 2);
    let a = h.alloc(layout(200 << 10, 8)).unwrap();
    assert_eq!(h.stats().runs.spans, 1);
    // The span's room is 1 MiB - 200 KiB; five more 200 KiB blocks cannot share it and a
    // second span does not fit under the limit.
    let more: Vec<_> = (0..5)
        .map(|_| h.alloc(layout(200 << 10, 8)).expect("exact growth"))
        .collect();
    let s = h.stats();
    assert_eq!(s.runs.spans, 1);
    assert!(s.segments >= 1 && s.slab_fallbacks >= 1, "{s:?}");
    assert_eq!(s.failures, 0);
    assert!(h.mapped() <= 3 * MB / 2);
    h.validate().unwrap();
    for p in more.into_iter().chain([a]) {
        // SAFETY: live blocks with their layouts.
        unsafe { h.free(p, layout(200 << 10, 8)) }.unwrap();
    }
    only_records_stay_mapped(&mut h);
    h.validate().unwrap();
}

/// Fills `[p, p + size)` with `tag`.
fn fill(p: NonNull<u8>, size: usize, tag: u8) {
    // SAFETY: callers pass a live block of at least `size` bytes.
    unsafe { core::ptr::write_bytes(p.as_ptr(), tag, size) };
}

/// Whether `[p, p + size)` still holds `tag` everywhere.
fn holds(p: NonNull<u8>, size: usize, tag: u8) -> bool {
    // SAFETY: callers pass a live block of at least `size` bytes.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), size) }
        .iter()
        .all(|&b| b == tag)
}

/// Every misuse of a segment block is refused before linked_list_allocator sees it, for the
/// three kinds of segment block: one over 256 KiB (alone in its segment), one aligned past a
/// page (in a shared segment), and small and medium fallbacks near the limit. Without the
/// block records these frees reached `linked_list_allocator::Heap::deallocate`, which panics
/// on a freed block overlapping a hole and silently corrupts its list otherwise.
#[test]
fn segment_block_misuse_is_refused_for_every_kind() {
    let mut h = heap(256 * MB, 64 * MB);
    let huge_l = layout(300 << 10, 8);
    let aligned_l = layout(5000, 8192);
    let huge = h.alloc(huge_l).unwrap();
    let aligned = h.alloc(aligned_l).unwrap();
    // Out of frames: the slabs and spans can map nothing, so a small and a medium request
    // fall back to the shared segment's free space.
    h.mapper_mut().frames = h.mapper().bytes;
    let small_l = layout(100, 8);
    let mid_l = layout(10_000, 16);
    let small = h.alloc(small_l).unwrap();
    let mid = h.alloc(mid_l).unwrap();
    assert_eq!(h.stats().slab_fallbacks, 2);
    assert!(!h.slab.contains(small.as_ptr() as usize) && !h.runs.contains(mid.as_ptr() as usize));
    let blocks = [
        (huge, huge_l),
        (aligned, aligned_l),
        (small, small_l),
        (mid, mid_l),
    ];
    assert_eq!(h.stats().segment_blocks, 4);
    for (i, &(p, l)) in blocks.iter().enumerate() {
        fill(p, l.size(), i as u8 + 1);
    }
    let at = |p: NonNull<u8>, off: usize| NonNull::new(p.as_ptr().wrapping_add(off)).unwrap();
    let before = h.stats();
    let mut refused = 0;
    for &(p, l) in &blocks {
        let a = p.as_ptr() as usize;
        // SAFETY (every free in this loop): a misuse the heap must refuse before touching
        // memory, which is what the test checks.
        unsafe {
            assert_eq!(
                h.free(at(p, 16), layout(16, 8)),
                Err(Misuse::Block(BlockMisuse::Inside {
                    addr: a + 16,
                    block: a
                })),
                "inside {l:?}"
            );
            for size in [l.size() + 1, l.size() - 1, l.size() + 64] {
                // (A size past a segment of exactly the block's need is refused as such.)
                assert!(
                    matches!(
                        h.free(p, layout(size, l.align())),
                        Err(Misuse::Block(BlockMisuse::WrongLayout { .. })
                            | Misuse::PastSegment { .. })
                    ),
                    "size {size} for {l:?}"
                );
            }
            assert!(
                matches!(
                    h.free(p, layout(l.size(), l.align() / 2)),
                    Err(Misuse::Block(BlockMisuse::WrongLayout { .. }))
                ),
                "half the alignment of {l:?}"
            );
            assert!(
                matches!(
                    h.free(p, layout(l.size(), l.align() * 2)),
                    Err(Misuse::Block(BlockMisuse::WrongLayout { .. }) | Misuse::Misaligned { .. })
                ),
                "twice the alignment of {l:?}"
            );
        }
        refused += 6;
        h.validate().unwrap();
    }
    let after = h.stats();
    assert_eq!(after.refused, before.refused + refused);
    assert_eq!((after.used, after.segment_blocks), (before.used, 4));
    for (i, &(p, l)) in blocks.iter().enumerate() {
        assert!(
            holds(p, l.size(), i as u8 + 1),
            "a refused free changed {l:?}"
        );
    }
    h.mapper_mut().frames = usize::MAX;
    // Double frees. The big block's segment stays mapped (page tables busy), so its second
    // free finds the segment, empty, and must be refused by the records, not by the
    // segment's absence (linked_list_allocator panicked here: its one hole covers it).
    h.mapper_mut().busy = true;
    // SAFETY: the real free of a live block, then the same free again (to be refused).
    unsafe {
        h.free(huge, huge_l).unwrap();
        assert_eq!(
            h.stats().segments,
            2,
            "the emptied segment went back while busy"
        );
        assert_eq!(
            h.free(huge, huge_l),
            Err(Misuse::Block(BlockMisuse::NotLive {
                addr: huge.as_ptr() as usize
            }))
        );
    }
    h.mapper_mut().busy = false;
    for &(p, l) in &blocks[2..] {
        // SAFETY: as above.
        unsafe {
            h.free(p, l).unwrap();
            assert!(matches!(
                h.free(p, l),
                Err(Misuse::Block(BlockMisuse::NotLive { .. }))
            ));
        }
        h.validate().unwrap();
    }
    // The aligned block: freed, its memory taken by another aligned block, then freed again
    // with its old layout (the hole the list would have made overlaps the new block).
    // SAFETY: the real free; then frees to be refused.
    unsafe { h.free(aligned, aligned_l) }.unwrap();
    let reuse_l = layout(3000, 8192);
    let reuse = h.alloc(reuse_l).unwrap();
    assert_eq!(reuse, aligned, "first fit takes the freed block's place");
    fill(reuse, 3000, 0x77);
    // SAFETY: a free to be refused.
    unsafe {
        assert!(matches!(
            h.free(aligned, aligned_l),
            Err(Misuse::Block(BlockMisuse::WrongLayout {
                block_size: 3000,
                ..
            }))
        ));
    }
    assert!(holds(reuse, 3000, 0x77));
    // SAFETY: the live block with its layout.
    unsafe { h.free(reuse, reuse_l) }.unwrap();
    assert_eq!(h.stats().refused, before.refused + refused + 4);
    assert_eq!(h.stats().segment_blocks, 0);
    h.validate().unwrap();
    only_records_stay_mapped(&mut h);
    h.validate().unwrap();
}

/// Random segment blocks (over 256 KiB, aligned past a page, and small and medium fallbacks
/// while the frames run out) against a model, with misuse tried after every step (inside a
/// live block, a size and an alignment of another layout, a double free of a block freed
/// earlier whose memory may have been reused) and page tables busy at random, so emptied
/// segments stay mapped; `validate` after each step.
#[test]
fn segment_blocks_match_a_model_with_misuse_after_every_step() {
    let mut h = heap(512 * MB, 128 * MB);
    let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
    let mut order: Vec<usize> = Vec::new();
    let mut dead: Vec<(usize, Layout)> = Vec::new();
    let mut refused = 0u64;
    let mut x = 0x853c_49e6_748f_ea9bu64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..4_000u32 {
        let r = next();
        // Every 500 steps, 100 steps without frames: small and medium requests fall back.
        let starved = step % 500 >= 400;
        h.mapper_mut().frames = if starved {
            h.mapper().bytes
        } else {
            usize::MAX
        };
        h.mapper_mut().busy = r % 7 == 0;
        if order.len() < 100 && (r % 3 != 0 || order.is_empty()) {
            let l = match (r >> 8) % 4 {
                _ if starved => layout(1 + (r >> 16) as usize % 20_000, 1 << ((r >> 40) % 5)),
                0 | 1 => layout(
                    DEDICATED_MIN + (r >> 16) as usize % (3 * MB / 4),
                    1 << ((r >> 40) % 13),
                ),
                _ => layout(1 + (r >> 16) as usize % 100_000, 8192 << ((r >> 40) % 3)),
            };
            let Some(p) = h.alloc(l) else {
                assert!(starved, "step {step}: {l:?} failed: {:?}", h.last_error());
                continue;
            };
            let a = p.as_ptr() as usize;
            assert_eq!(a % l.align(), 0);
            if h.slab.contains(a) || h.runs.contains(a) {
                // Served by a slab or span after all (room there): not this test's subject.
                // SAFETY: the live block with its layout.
                unsafe { h.free(p, l) }.unwrap();
                continue;
            }
            assert!(h.mapper().is_mapped(a, l.size()), "step {step}: unmapped");
            if let Some((&lo, &(ll, _))) = live.range(..a).next_back() {
                assert!(lo + ll.size() <= a, "step {step}: overlap");
            }
            if let Some((&hi, _)) = live.range(a..).next() {
                assert!(a + l.size() <= hi, "step {step}: overlap");
            }
            let tag = step as u8 | 1;
            fill(p, l.size(), tag);
            live.insert(a, (l, tag));
            order.push(a);
        } else {
            let a = order.swap_remove((r >> 32) as usize % order.len());
            let (l, tag) = live.remove(&a).unwrap();
            let p = NonNull::new(a as *mut u8).unwrap();
            assert!(holds(p, l.size(), tag), "step {step}: contents changed");
            // SAFETY: the live block with its layout.
            unsafe { h.free(p, l) }.unwrap();
            dead.push((a, l));
            if dead.len() > 64 {
                dead.swap_remove((r >> 20) as usize % dead.len());
            }
        }
        // Misuse after every step, on a live block and on a block freed earlier.
        if let Some(&a) = order.get((r >> 24) as usize % order.len().max(1)) {
            let (l, tag) = live[&a];
            let p = NonNull::new(a as *mut u8).unwrap();
            let inside = a + 8 * (1 + (r >> 44) as usize % (l.size() / 8).max(1));
            let attempts = [
                (inside, layout(8, 8)),
                (a, layout(l.size() + 1 + (r >> 50) as usize % 64, l.align())),
                (a, layout(l.size().max(2) - 1, l.align())),
                (a, layout(l.size(), (l.align() / 2).max(1))),
            ];
            for (b, bl) in attempts {
                if b == a && bl == l || (b != a && b >= a + l.size()) {
                    continue;
                }
                let q = NonNull::new(b as *mut u8).unwrap();
                // SAFETY: a misuse the heap must refuse before touching memory.
                let got = unsafe { h.free(q, bl) };
                assert!(
                    got.is_err(),
                    "step {step}: {b:#x} {bl:?} freed inside {a:#x} {l:?}"
                );
                refused += 1;
            }
            assert!(
                holds(p, l.size(), tag),
                "step {step}: a refused free changed it"
            );
        }
        if !dead.is_empty() {
            let (a, l) = dead[(r >> 28) as usize % dead.len()];
            if live.get(&a).map(|&(ll, _)| ll) != Some(l) {
                let q = NonNull::new(a as *mut u8).unwrap();
                // SAFETY: a double free (or a free of a block reused with another layout)
                // the heap must refuse before touching memory.
                let got = unsafe { h.free(q, l) };
                assert!(
                    got.is_err(),
                    "step {step}: double free of {a:#x} {l:?} passed"
                );
                refused += 1;
            }
        }
        h.validate().unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(h.mapped(), h.mapper().bytes);
        assert_eq!(h.stats().refused, refused);
        assert_eq!(h.stats().segment_blocks, live.len());
    }
    h.mapper_mut().busy = false;
    h.mapper_mut().frames = usize::MAX;
    assert!(h.stats().slab_fallbacks > 0, "no fallback was tried");
    for (a, (l, tag)) in live {
        let p = NonNull::new(a as *mut u8).unwrap();
        assert!(holds(p, l.size(), tag));
        // SAFETY: the live block with its layout.
        unsafe { h.free(p, l) }.unwrap();
    }
    only_records_stay_mapped(&mut h);
    assert_eq!(h.stats().segments, 0);
    h.validate().unwrap();
}

/// The table of segment blocks is bounded: at its most pages, a segment request fails
/// cleanly (counted, with a reason) rather than hand out a block it cannot check; freeing
/// gives the table's pages back as its records go.
#[test]
fn a_full_block_table_fails_the_request_cleanly() {
    use levitate_mm::slab::blocks::RECORDS_PER_PAGE;
    // A table of at most two pages (512 records), set before the first segment block.
    let mut h = heap(256 * MB, 64 * MB);
    h.blocks = BlockTable::new(2);
    let l = layout(16, 8192);
    let mut held = Vec::new();
    while held.len() < 2 * RECORDS_PER_PAGE {
        held.push(h.alloc(l).expect("room in the table"));
    }
    assert_eq!(h.stats().record_bytes, 2 * PAGE);
    let failures = h.stats().failures;
    assert!(h.alloc(l).is_none());
    assert_eq!(
        h.last_error(),
        Some(AllocError::Records {
            live: 2 * RECORDS_PER_PAGE
        })
    );
    assert_eq!(h.stats().failures, failures + 1);
    // Small and medium requests do not need the table.
    let s = h.alloc(layout(64, 8)).unwrap();
    // SAFETY: live blocks with their layouts.
    unsafe { h.free(s, layout(64, 8)) }.unwrap();
    h.validate().unwrap();
    for p in held {
        // SAFETY: as above.
        unsafe { h.free(p, l) }.unwrap();
    }
    assert_eq!(h.stats().segment_blocks, 0);
    // A free keeps a spare page; a release keeps only room for the next block's record.
    assert_eq!(h.blocks.pages(), 2);
    h.release_all_empty();
    assert_eq!(h.blocks.pages(), 1);
    assert_eq!(h.stats().record_bytes, CHUNK_BYTES + PAGE);
    h.validate().unwrap();
}

#[test]
fn freeing_small_objects_trims_empty_slab_pages_beyond_the_high_mark() {
    let mut h = heap(256 * MB, 64 * MB);
    let l = layout(1024, 8);
    let objects: Vec<_> = (0..800).map(|_| h.alloc(l).unwrap()).collect();
    let s = h.stats();
    assert_eq!(s.slab.objects, 800);
    let mapped_full = h.mapper().bytes;
    for p in objects {
        // SAFETY: live blocks with this layout, each freed once.
        unsafe { h.free(p, l) }.unwrap();
        assert!(
            h.stats().slab.empty_pages <= SLAB_RETAIN_HIGH as u64,
            "the free left {} empty slab pages",
            h.stats().slab.empty_pages
        );
    }
    assert_eq!(h.stats().used, 0);
    // The frees themselves gave pages back (no reclaim was asked for).
    assert!(h.mapper().bytes < mapped_full);
    h.validate().unwrap();
}
