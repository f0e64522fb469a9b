//! Property tests of RAM limits (`MemoryMap::from_parts_within`): random RAM banks, some
//! wholly or partly beyond a random physical-address or linear-map limit, and random
//! reservations, checked against a byte-level model of what must remain: RAM is exactly the
//! whole pages of the banks' parts below the limit, every bank that runs past the limit gets
//! one warning saying what was kept, and nothing usable lies past the limit.

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::memmap::{
    Addressable, Limit, MemMapError, MemoryMap, Reservation, Source, Warning,
};
use levitate_mm::region::Region;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The universe: 1024 pages (4 MiB).
const TOP: u64 = 1024 * PAGE_SIZE;

fn bank() -> impl Strategy<Value = Region> {
    (0..TOP, 0..TOP / 4).prop_map(|(base, size)| Region::new(PhysAddr::new(base), size))
}

/// A CPU with 14 to 22 address bits (so the limit falls inside the universe) and a linear map
/// ending at a random page, or not limiting at all.
fn addressable() -> impl Strategy<Value = Addressable> {
    (
        14u8..=22,
        prop_oneof![
            2 => (0..=TOP / PAGE_SIZE).prop_map(|p| p * PAGE_SIZE),
            1 => Just(u64::MAX),
        ],
    )
        .prop_map(|(pa_bits, linear_end)| Addressable {
            pa_bits,
            linear_end,
        })
}

/// The model's limit: the first byte neither the CPU nor the linear map may use.
fn model_limit(a: &Addressable) -> u64 {
    (1u64 << a.pa_bits).min(a.linear_end)
}

/// Pages wholly covered by the banks' bytes below `limit`: walk each page's bytes from its
/// start, jumping to the end of any clipped bank that holds the current byte.
fn model_pages(banks: &[Region], limit: u64) -> BTreeSet<u64> {
    let clipped: Vec<(u64, u64)> = banks
        .iter()
        .map(|b| (b.base.as_u64(), b.end().min(limit)))
        .filter(|(start, end)| start < end)
        .collect();
    let covered = |from: u64, to: u64| {
        let mut at = from;
        while at < to {
            match clipped.iter().find(|(s, e)| *s <= at && at < *e) {
                Some((_, e)) => at = *e,
                None => return false,
            }
        }
        true
    };
    (0..TOP / PAGE_SIZE)
        .filter(|p| covered(p * PAGE_SIZE, (p + 1) * PAGE_SIZE))
        .collect()
}

fn map_pages(ranges: &[Region]) -> BTreeSet<u64> {
    ranges
        .iter()
        .flat_map(|r| r.base.as_u64() / PAGE_SIZE..r.end() / PAGE_SIZE)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ram_is_what_lies_below_the_limit(
        banks in prop::collection::vec(bank(), 1..6),
        reserved in prop::collection::vec(bank(), 0..6),
        addressable in addressable(),
    ) {
        let limit = model_limit(&addressable);
        let reservations: Vec<Reservation<'_>> = reserved
            .iter()
            .map(|r| Reservation::new(*r, "r", Source::MemReserve))
            .collect();
        let want = model_pages(&banks, limit);
        let map = match MemoryMap::from_parts_within(&banks, &reservations, &[], &addressable) {
            Ok(map) => map,
            Err(MemMapError::NoMemory | MemMapError::NoAddressableMemory { .. }) => {
                // No bank has a byte below the limit...
                prop_assert!(banks.iter().all(|b| b.is_empty() || b.base.as_u64() >= limit));
                return Ok(());
            }
            Err(MemMapError::NoUsableMemory) => {
                // ...or no whole page survives (rounding, or reservations took the rest).
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
        };
        map.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(map_pages(map.memory()), want);
        prop_assert!(map.usable().iter().all(|u| u.end() <= limit));
        // One warning per bank that runs past the limit, naming what was kept.
        let warned: Vec<(Region, Region, Limit)> = map
            .warnings()
            .iter()
            .filter_map(|w| match *w {
                Warning::Unaddressable { region, kept, limit, .. } => Some((region, kept, limit)),
                _ => None,
            })
            .collect();
        let expected: Vec<(Region, Region)> = banks
            .iter()
            .filter(|b| !b.is_empty() && b.end() > limit)
            .map(|b| (*b, Region::from_bounds(b.base.as_u64(), limit)))
            .collect();
        prop_assert_eq!(
            warned.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>(),
            expected
        );
        for (_, _, l) in warned {
            prop_assert_eq!(l.end(), limit);
        }
    }
}

#[test]
fn the_model_agrees_with_a_hand_case() {
    let banks = [Region::from_bounds(0x1800, 0x6000)];
    assert_eq!(model_pages(&banks, 0x5800), [2u64, 3, 4].into());
}
