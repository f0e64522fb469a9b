//! `Buddy::alloc_singles` (a per-CPU cache's refill) against the model it must match: the
//! same number of order-0 allocations, one at a time, on an identical buddy.

use super::*;
use crate::buddy::{FreeError, NullMemory, MAX_ORDER};
use proptest::prelude::*;

/// Both zones, three sections with odd edges (so blocks of every order, and a split across
/// the main section's end, appear).
fn fixture() -> Fixture {
    Fixture::all_usable(&[
        (0x4000_3000, 0x4040_0000),
        (0x4080_0000, 0x4081_7000),
        (0x1_0000_0000, 0x1_0002_1000),
    ])
}

/// Replays `history` (allocate an order, or free the `i`-th live block) on a fresh buddy.
fn replay(b: &mut Buddy<'_>, history: &[(bool, u8, usize)]) {
    let mut live: Vec<(PhysAddr, u8)> = Vec::new();
    for &(alloc, order, i) in history {
        if alloc || live.is_empty() {
            if let Ok(block) = b.alloc(Request::new(order, Owner::Test), &mut NullMemory) {
                live.push((block.addr, order));
            }
        } else {
            let (addr, order) = live.swap_remove(i % live.len());
            b.free(addr, order, &mut NullMemory).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The frames, their order, the free blocks left and every counter are those of `n`
    /// order-0 allocations; each frame is then its own order-0 block, freed on its own (a
    /// second free refused), and the buddy ends as it began.
    #[test]
    fn singles_are_what_order_0_allocations_give(
        history in proptest::collection::vec((any::<bool>(), 0..=MAX_ORDER, any::<usize>()), 0..200),
        n in 1usize..600,
    ) {
        let (mut fa, mut fb) = (fixture(), fixture());
        let (mut a, mut b) = (fa.buddy(), fb.buddy());
        replay(&mut a, &history);
        replay(&mut b, &history);
        let before = snapshot(&a);
        let mut got = Vec::new();
        let taken = a.alloc_singles(n, Owner::FrameCache, |addr| got.push(addr));
        let mut want = Vec::new();
        while want.len() < n {
            match b.alloc(Request::new(0, Owner::FrameCache), &mut NullMemory) {
                Ok(block) => want.push(block.addr),
                Err(_) => break,
            }
        }
        prop_assert_eq!(taken, got.len());
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(free_list(&a), free_list(&b));
        prop_assert_eq!(a.stats().allocated, b.stats().allocated);
        prop_assert_eq!(a.stats().free_frames, b.stats().free_frames);
        a.validate().unwrap();
        for &addr in &got {
            prop_assert_eq!(a.owner_of(addr), Some((Owner::FrameCache, 0, addr)));
        }
        for &addr in got.iter().rev() {
            prop_assert_eq!(a.free(addr, 0, &mut NullMemory), Ok(Owner::FrameCache));
            let again = a.free(addr, 0, &mut NullMemory);
            prop_assert!(matches!(again, Err(FreeError::DoubleFree { .. })), "{:?}", again);
        }
        a.validate().unwrap();
        prop_assert_eq!(free_list(&a), before.free);
    }
}

/// With poisoning on none are taken (each frame must be checked on its way out, which
/// `alloc` does); out of memory, what is left.
#[test]
fn poisoning_takes_none_and_an_empty_buddy_gives_what_it_has() {
    let mut f = Fixture::all_usable(&[(0x4000_0000, 0x4000_5000)]);
    let mut b = f.buddy();
    let mut mem = TestMemory::default();
    b.set_poisoning(true, &mut mem);
    assert_eq!(
        b.alloc_singles(4, Owner::FrameCache, |_| panic!("taken")),
        0
    );
    b.set_poisoning(false, &mut mem);
    let mut got = Vec::new();
    assert_eq!(b.alloc_singles(32, Owner::FrameCache, |a| got.push(a)), 5);
    // Five frames are an order-2 block and an order-0 one: the smaller first.
    let order2 = (0..4).map(|i| pa(0x4000_0000 + i * PAGE_SIZE));
    assert_eq!(
        got,
        [pa(0x4000_4000)]
            .into_iter()
            .chain(order2)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        b.alloc_singles(1, Owner::FrameCache, |_| panic!("taken")),
        0
    );
    assert_eq!(b.stats().allocated_to(Owner::FrameCache), 5);
    b.validate().unwrap();
}
