//! The size-class heap's bookkeeping: classes, reuse, misuse refused, empty pages released,
//! and a random workload checked against a model after every step.

use super::*;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const BASE: usize = 0x10_0000_0000;

/// Counts mapped pages; refuses to map past a limit.
#[derive(Default)]
struct Pages {
    mapped: BTreeMap<usize, ()>,
    limit: usize,
}

impl PageSource for Pages {
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
    fn unmap(&mut self, addr: usize) {
        assert!(
            self.mapped.remove(&addr).is_some(),
            "{addr:#x} unmapped but not mapped"
        );
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
    assert_eq!(class_for(513, 8), None);
    assert_eq!(class_for(8, 1024), None);
    assert_eq!(class_for(0, 1), None);
    let mut recs = vec![SlabPage::UNMAPPED; 8];
    let mut h = SlabHeap::new(BASE, &mut recs).unwrap();
    let mut src = pages(8);
    for (size, align) in [(40, 32), (100, 64), (384, 128), (16, 16)] {
        let a = h.alloc(size, align, &mut src).unwrap();
        assert_eq!(a % align, 0, "{size}/{align} at {a:#x}");
    }
    assert_eq!(h.alloc(600, 8, &mut src), Err(SlabError::NotSmall));
    h.validate().unwrap();
}

#[test]
fn misuse_is_refused_and_changes_nothing() {
    let mut recs = vec![SlabPage::UNMAPPED; 4];
    let mut h = SlabHeap::new(BASE, &mut recs).unwrap();
    let mut src = pages(4);
    let a = h.alloc(24, 8, &mut src).unwrap();
    let b = h.alloc(24, 8, &mut src).unwrap();
    let before = h.stats();
    assert_eq!(
        h.free(a + 8, 24, 8),
        Err(SlabMisuse::NotSlotStart {
            addr: a + 8,
            class: 32
        })
    );
    assert_eq!(
        h.free(a, 200, 8),
        Err(SlabMisuse::WrongSize {
            addr: a,
            size: 200,
            class: 32
        })
    );
    assert_eq!(
        h.free(BASE + 3 * PAGE, 24, 8),
        Err(SlabMisuse::NotSlab {
            addr: BASE + 3 * PAGE
        })
    );
    assert_eq!(
        h.free(0x1000, 24, 8),
        Err(SlabMisuse::NotSlab { addr: 0x1000 })
    );
    assert_eq!(h.stats().objects, before.objects);
    assert_eq!(h.free(a, 24, 8), Ok(()));
    assert_eq!(
        h.free(a, 24, 8),
        Err(SlabMisuse::DoubleFree { addr: a, class: 32 })
    );
    assert_eq!(h.stats().refused, 5);
    assert_eq!(h.free(b, 32, 8), Ok(()));
    assert_eq!(
        h.free(b, 32, 8),
        Err(SlabMisuse::NotSlab { addr: b }),
        "page empty now"
    );
    h.validate().unwrap();
}

#[test]
fn empty_pages_are_reused_then_released() {
    let mut recs = vec![SlabPage::UNMAPPED; 64];
    let mut h = SlabHeap::new(BASE, &mut recs).unwrap();
    let mut src = pages(64);
    // Fill 16 pages of 512-byte objects (8 per page), free all.
    let objs: Vec<usize> = (0..128)
        .map(|_| h.alloc(512, 8, &mut src).unwrap())
        .collect();
    assert_eq!(h.stats().slab_pages, 16);
    for a in objs {
        h.free(a, 512, 8).unwrap();
    }
    let s = h.stats();
    assert_eq!((s.slab_pages, s.empty_pages, s.objects), (0, 16, 0));
    // Another class reuses the empty pages before mapping more.
    let x = h.alloc(16, 8, &mut src).unwrap();
    assert_eq!(src.mapped.len(), 16);
    h.free(x, 16, 8).unwrap();
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
fn out_of_pages_is_an_error_not_a_panic() {
    let mut recs = vec![SlabPage::UNMAPPED; 2];
    let mut h = SlabHeap::new(BASE, &mut recs).unwrap();
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
        "range used up"
    );
    assert!(SlabHeap::new(BASE + 1, &mut [SlabPage::UNMAPPED]).is_none());
    h.validate().unwrap();
}

#[test]
fn random_workload_matches_a_model() {
    let mut recs = vec![SlabPage::UNMAPPED; 256];
    let mut h = SlabHeap::new(BASE, &mut recs).unwrap();
    let mut src = pages(256);
    let mut live: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let mut order: Vec<usize> = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if live.len() < 2000 && (!x.is_multiple_of(3) || live.is_empty()) {
            let size = 1 + (x >> 8) as usize % 512;
            let align = 1 << ((x >> 20) % 7);
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
            live.insert(a, (size, align));
            order.push(a);
        } else {
            let i = (x >> 32) as usize % order.len();
            let a = order.swap_remove(i);
            let (size, align) = live.remove(&a).unwrap();
            h.free(a, size, align).unwrap();
        }
        if step % 1000 == 0 {
            h.validate().unwrap();
        }
    }
    assert_eq!(h.stats().objects, live.len() as u64);
    for (a, (size, align)) in live {
        h.free(a, size, align).unwrap();
    }
    h.release_empty(0, &mut src);
    assert!(src.mapped.is_empty());
    h.validate().unwrap();
}
