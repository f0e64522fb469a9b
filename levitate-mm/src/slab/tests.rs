//! The size-class heap's bookkeeping: classes, reuse, misuse refused, empty pages released,
//! and a random workload checked against a model after every step.

use super::*;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec::Vec;

const BASE: usize = 0x10_0000_0000;

/// Counts mapped pages; refuses to map past a limit.
#[derive(Default)]
struct Pages {
    mapped: BTreeMap<usize, ()>,
    limit: usize,
    /// `unmap` refuses (page tables busy).
    busy: bool,
    /// `records` refuses.
    no_records: bool,
}

impl PageSource<'static> for Pages {
    fn records(&mut self, _chunk: usize) -> Option<&'static mut RecordChunk> {
        if self.no_records {
            return None;
        }
        Some(Box::leak(Box::new([SlabPage::UNMAPPED; CHUNK_PAGES])))
    }
    fn map(&mut self, addr: usize) -> bool {
        if self.mapped.len() >= self.limit {
            return false;
        }
        assert!(
            self.mapped.insert(addr, ()).is_none(),
            "{addr:#x} mapped twice"
        );
        true
    }
    fn unmap(&mut self, addr: usize) -> bool {
        if self.busy {
            return false;
        }
        assert!(
            self.mapped.remove(&addr).is_some(),
            "{addr:#x} unmapped but not mapped"
        );
        true
    }
}

fn pages(limit: usize) -> Pages {
    Pages {
        limit,
        ..Pages::default()
    }
}

#[test]
fn classes_hold_size_and_alignment() {
    assert_eq!(class_for(1, 1), Some(0));
    assert_eq!(class_for(17, 8), Some(1));
    assert_eq!(class_for(40, 8), Some(2)); // 48
    assert_eq!(class_for(40, 32), Some(3)); // 48 is not 32-aligned: 64
    assert_eq!(CLASSES[class_for(513, 8).unwrap()], 640);
    assert_eq!(CLASSES[class_for(2048, 8).unwrap()], 2048);
    assert_eq!(class_for(2049, 8), None);
    assert_eq!(CLASSES[class_for(700, 256).unwrap()], 1024);
    assert_eq!(CLASSES[class_for(8, 2048).unwrap()], 2048);
    assert_eq!(class_for(8, 4096), None);
    assert_eq!(class_for(0, 1), None);
    // The table agrees with a scan for every size and alignment.
    for size in 1..=MAX_SMALL {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048] {
            let scan = CLASSES
                .iter()
                .position(|&c| c >= size && c.is_multiple_of(align));
            assert_eq!(class_for(size, align), scan, "{size}/{align}");
        }
    }
    // Every class fills its page to within an eighth.
    for c in CLASSES {
        assert!(PAGE % c <= PAGE / 8, "class {c} wastes {} bytes", PAGE % c);
    }
    assert_eq!(CHUNK_BYTES % PAGE, 0);
    let mut h = SlabHeap::new(BASE, 8).unwrap();
    let mut src = pages(8);
    for (size, align) in [(40, 32), (100, 64), (384, 128), (16, 16), (1500, 512)] {
        let a = h.alloc(size, align, &mut src).unwrap();
        assert_eq!(a % align, 0, "{size}/{align} at {a:#x}");
    }
    assert_eq!(h.alloc(3000, 8, &mut src), Err(SlabError::NotSmall));
    h.validate().unwrap();
}

#[test]
fn misuse_is_refused_and_changes_nothing() {
    let mut h = SlabHeap::new(BASE, 4).unwrap();
    let mut src = pages(4);
    let a = h.alloc(24, 8, &mut src).unwrap();
    let b = h.alloc(24, 8, &mut src).unwrap();
    let before = h.stats();
    assert_eq!(
        h.free(a + 8, 24, 8, &mut src),
        Err(SlabMisuse::NotSlotStart {
            addr: a + 8,
            class: 32
        })
    );
    assert_eq!(
        h.free(a, 200, 8, &mut src),
        Err(SlabMisuse::WrongSize {
            addr: a,
            size: 200,
            class: 32
        })
    );
    assert_eq!(
        h.free(BASE + 3 * PAGE, 24, 8, &mut src),
        Err(SlabMisuse::NotSlab {
            addr: BASE + 3 * PAGE
        })
    );
    assert_eq!(
        h.free(0x1000, 24, 8, &mut src),
        Err(SlabMisuse::NotSlab { addr: 0x1000 })
    );
    assert_eq!(h.stats().objects, before.objects);
    assert_eq!(h.free(a, 24, 8, &mut src), Ok(()));
    assert_eq!(
        h.free(a, 24, 8, &mut src),
        Err(SlabMisuse::DoubleFree { addr: a, class: 32 })
    );
    assert_eq!(h.stats().refused, 5);
    assert_eq!(h.free(b, 32, 8, &mut src), Ok(()));
    assert_eq!(
        h.free(b, 32, 8, &mut src),
        Err(SlabMisuse::NotSlab { addr: b }),
        "page empty now"
    );
    h.validate().unwrap();
    // The last slot of a class whose page has a tail: past the tail is no slot.
    let c = h.alloc(1360, 16, &mut src).unwrap();
    let page = c - c % PAGE;
    assert_eq!(
        h.free(page + 3 * 1360, 1360, 16, &mut src),
        Err(SlabMisuse::NotSlotStart {
            addr: page + 3 * 1360,
            class: 1360
        })
    );
    h.validate().unwrap();
}

#[test]
fn empty_pages_are_reused_then_released() {
    let mut h = SlabHeap::new(BASE, 64).unwrap();
    let mut src = pages(64);
    // Fill 16 pages of 512-byte objects (8 per page), free all.
    let objs: Vec<usize> = (0..128)
        .map(|_| h.alloc(512, 8, &mut src).unwrap())
        .collect();
    assert_eq!(h.stats().slab_pages, 16);
    for a in objs {
        h.free(a, 512, 8, &mut src).unwrap();
    }
    let s = h.stats();
    assert_eq!((s.slab_pages, s.empty_pages, s.objects), (0, 16, 0));
    // Another class reuses the empty pages before mapping more.
    let x = h.alloc(16, 8, &mut src).unwrap();
    assert_eq!(src.mapped.len(), 16);
    h.free(x, 16, 8, &mut src).unwrap();
    // Page tables busy: nothing released, nothing lost.
    src.busy = true;
    assert_eq!(h.release_empty(2, &mut src), 0);
    h.validate().unwrap();
    src.busy = false;
    assert_eq!(h.release_empty(2, &mut src), 14);
    assert_eq!(src.mapped.len(), 2);
    assert_eq!(h.stats().empty_pages, 2);
    h.validate().unwrap();
    // Released pages are mapped again when needed.
    let objs: Vec<usize> = (0..40)
        .map(|_| h.alloc(512, 8, &mut src).unwrap())
        .collect();
    assert_eq!(src.mapped.len(), 5);
    assert!(objs.iter().all(|a| h.contains(*a)));
    h.validate().unwrap();
}

#[test]
fn frees_trim_empty_pages_beyond_the_reserve() {
    let mut h = SlabHeap::new(BASE, 64).unwrap();
    h.set_retain(2, 4);
    let mut src = pages(64);
    let objs: Vec<usize> = (0..80)
        .map(|_| h.alloc(512, 8, &mut src).unwrap())
        .collect();
    assert_eq!(src.mapped.len(), 10);
    for (i, a) in objs.into_iter().enumerate() {
        let before = h.stats().released_pages;
        h.free(a, 512, 8, &mut src).unwrap();
        assert!(h.stats().empty_pages <= 4, "after free {i}");
        assert!(h.stats().released_pages - before <= TRIM_BATCH as u64);
    }
    assert!(src.mapped.len() <= 4 && src.mapped.len() >= 2);
    // A larger surplus goes back a batch per free.
    let mut h = SlabHeap::new(BASE, 64).unwrap();
    let mut src = pages(64);
    let objs: Vec<usize> = (0..320)
        .map(|_| h.alloc(512, 8, &mut src).unwrap())
        .collect();
    h.set_retain(2, 8);
    for a in objs {
        let before = h.stats().released_pages;
        h.free(a, 512, 8, &mut src).unwrap();
        assert!(h.stats().released_pages - before <= TRIM_BATCH as u64);
    }
    assert!(h.stats().empty_pages <= 8);
    h.validate().unwrap();
    h.validate().unwrap();
}

#[test]
fn out_of_pages_is_an_error_not_a_panic() {
    let mut h = SlabHeap::new(BASE, 2).unwrap();
    let mut src = pages(1);
    for _ in 0..8 {
        h.alloc(512, 8, &mut src).unwrap();
    }
    assert_eq!(h.alloc(512, 8, &mut src), Err(SlabError::OutOfPages));
    let mut src = pages(10);
    h.alloc(512, 8, &mut src).unwrap();
    assert_eq!(
        h.alloc(300, 8, &mut src),
        Err(SlabError::OutOfPages),
        "window used up"
    );
    assert!(SlabHeap::new(BASE + 1, 1).is_none());
    assert!(SlabHeap::new(BASE, MAX_CHUNKS * CHUNK_PAGES + 1).is_none());
    // No records to be had: declined, not a panic.
    let mut h2 = SlabHeap::new(BASE, 2).unwrap();
    let mut src = pages(10);
    src.no_records = true;
    assert_eq!(h2.alloc(16, 8, &mut src), Err(SlabError::OutOfPages));
    assert!(src.mapped.is_empty());
    h.validate().unwrap();
    h2.validate().unwrap();
}

#[test]
fn records_come_in_chunks_as_the_window_is_used() {
    let mut h = SlabHeap::new(BASE, 3 * CHUNK_PAGES).unwrap();
    let mut src = pages(usize::MAX);
    let objs: Vec<usize> = (0..2 * (CHUNK_PAGES + 1))
        .map(|_| h.alloc(2048, 8, &mut src).unwrap())
        .collect();
    assert_eq!(h.stats().record_chunks, 2);
    for a in objs {
        h.free(a, 2048, 8, &mut src).unwrap();
    }
    h.validate().unwrap();
}

#[test]
fn random_workload_matches_a_model() {
    let mut h = SlabHeap::new(BASE, 1024).unwrap();
    h.set_retain(3, 8);
    let mut src = pages(1024);
    let mut live: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let mut order: Vec<usize> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..40_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if live.len() < 2000 && (!x.is_multiple_of(3) || live.is_empty()) {
            let size = 1 + (x >> 8) as usize % MAX_SMALL;
            let align = 1 << ((x >> 20) % 9);
            let a = h.alloc(size, align, &mut src).unwrap();
            assert_eq!(a % align, 0);
            let end = a + size;
            // No overlap with a live neighbour.
            if let Some((&lo, &(lsize, _))) = live.range(..a).next_back() {
                assert!(lo + lsize <= a, "step {step}: overlap");
            }
            if let Some((&hi, _)) = live.range(a..).next() {
                assert!(end <= hi, "step {step}: overlap");
            }
            assert!(src.mapped.contains_key(&(a - a % PAGE)), "unmapped page");
            live.insert(a, (size, align));
            order.push(a);
        } else {
            let i = (x >> 32) as usize % order.len();
            let a = order.swap_remove(i);
            let (size, align) = live.remove(&a).unwrap();
            h.free(a, size, align, &mut src).unwrap();
            // A second free of the same object is always refused.
            assert!(h.free(a, size, align, &mut src).is_err());
        }
        if step % 500 == 0 {
            h.validate().unwrap();
        }
    }
    assert_eq!(h.stats().objects, live.len() as u64);
    for (a, (size, align)) in live {
        h.free(a, size, align, &mut src).unwrap();
    }
    h.release_empty(0, &mut src);
    assert!(src.mapped.is_empty());
    h.validate().unwrap();
}
