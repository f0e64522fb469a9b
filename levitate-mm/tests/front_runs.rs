//! The front's runs of 2..=511 frames against a model, counting the buddy's lock: a run from
//! a listed chunk (and its free, while the chunk stays) takes no buddy lock, everything else
//! does, the layer and the buddy validate after every step, and misuse through the front is
//! refused and changes nothing, whichever path sees it first. With poisoning on, every run
//! takes the buddy's lock (the layer's poison switch is read there).

use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::bitmap::SmallRuns;
use levitate_mm::buddy::{Buddy, FrameMemory, Owner};
use levitate_mm::front::{Front, RunsAccess};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::pcp::{self, BuddyAccess, CacheAccess, CpuCache, FrameStates, Limits};
use levitate_mm::region::Region;
use std::collections::{BTreeMap, HashMap};

#[allow(dead_code)]
#[path = "common/frame_memory.rs"]
mod frame_memory;
use frame_memory::TestMemory;

const BASE: u64 = 0x4000_0000;

/// The buddy, counting how often it is locked.
struct Counting<'b, 'm> {
    buddy: &'b mut Buddy<'m>,
    locks: u64,
}

impl BuddyAccess for Counting<'_, '_> {
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R {
        self.locks += 1;
        f(self.buddy)
    }
}

/// This CPU's ring and the layer, each reached by one caller (no stashes here).
struct Ring<'a>(&'a mut CpuCache);
struct Layer<'a>(&'a mut SmallRuns);

impl CacheAccess for Ring<'_> {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        f(self.0)
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        f(self.0)
    }
}

impl RunsAccess for Layer<'_> {
    fn with_runs<R>(&mut self, f: impl FnOnce(&mut SmallRuns) -> R) -> R {
        f(self.0)
    }
}

/// The front over one ring, the layer and the counting buddy, for one step.
fn front_over<'a, 'm>(
    cache: &'a mut CpuCache,
    runs: &'a mut SmallRuns,
    buddy: &'a mut Buddy<'m>,
    states: &'a FrameStates<'m>,
) -> Front<'a, 'm, Ring<'a>, Layer<'a>, Counting<'a, 'm>> {
    Front {
        caches: Ring(cache),
        runs: Layer(runs),
        buddy: Counting { buddy, locks: 0 },
        states,
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn run_model(poison: bool) {
    let frames = 16384u64;
    let ram = Region::from_bounds(BASE, BASE + frames * PAGE_SIZE);
    let layout = Layout::new(&[ram]).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let mut buddy = Buddy::new(&pages, &layout, &[ram]).unwrap();
    let states = FrameStates::new(&layout, &pages).unwrap();
    let mut mem = TestMemory::default();
    pcp::set_poisoning(&states, &mut buddy, poison, &mut mem);
    let mut runs: Box<SmallRuns> = Box::default();
    let mut cache = CpuCache::new(0, Limits::DEFAULT).unwrap();
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut freed: Vec<(u64, u64)> = Vec::new();
    let mut rng = Rng(0x5eed_0f72_756e_7301);
    let (mut fast_allocs, mut fast_frees) = (0u64, 0u64);
    for step in 0..4000 {
        let mut front = front_over(&mut cache, &mut runs, &mut buddy, &states);
        let grow = live.len() < 8 || (live.len() < 40 && rng.below(2) == 0);
        if grow {
            let n = 2 + rng.below(510);
            let chunks_before = front.runs.0.stats().chunks;
            let run = front
                .alloc_frames(n, Owner::Test, false, &mut mem)
                .unwrap_or_else(|e| panic!("step {step}: {n} frames: {e}"));
            let took_chunk = front.runs.0.stats().chunks != chunks_before;
            let locks = front.buddy.locks;
            assert!(
                !live.contains_key(&run.addr.as_u64()),
                "step {step}: {} handed out twice",
                run.addr
            );
            for (&a, &len) in &live {
                let (lo, hi) = (run.addr.as_u64(), run.addr.as_u64() + n * PAGE_SIZE);
                assert!(hi <= a || lo >= a + len * PAGE_SIZE, "step {step}: overlap");
            }
            live.insert(run.addr.as_u64(), n);
            if poison {
                assert!(locks > 0, "step {step}: a poisoned run skipped the buddy");
            } else if locks == 0 {
                fast_allocs += 1;
                assert!(
                    !took_chunk,
                    "step {step}: a chunk was taken without the buddy"
                );
            }
        } else {
            let keys: Vec<u64> = live.keys().copied().collect();
            let at = keys[rng.below(keys.len() as u64) as usize];
            let n = live.remove(&at).unwrap();
            let chunks_before = front.runs.0.stats().chunks;
            let owner = front.free_frames(PhysAddr::new(at), n, &mut mem);
            assert_eq!(owner, Ok(Owner::Test), "step {step}");
            let returned = front.runs.0.stats().chunks != chunks_before;
            if poison {
                assert!(
                    front.buddy.locks > 0,
                    "step {step}: a poisoned free skipped the buddy"
                );
            } else if front.buddy.locks == 0 {
                fast_frees += 1;
                assert!(
                    !returned,
                    "step {step}: a chunk went back without the buddy"
                );
            }
            freed.push((at, n));
        }
        // Misuse now and then: a run freed again (unless handed out again since), or a live
        // run freed with a wrong length. Refused, and nothing changes.
        if step % 7 == 0 {
            let mut front = front_over(&mut cache, &mut runs, &mut buddy, &states);
            let before = (
                front.runs.0.stats().frames_free,
                front.runs.0.stats().chunks,
            );
            let misuse = match freed.last() {
                Some(&(at, n)) if rng.below(2) == 0 && !live.contains_key(&at) => {
                    let overlaps_live = live
                        .iter()
                        .any(|(&a, &l)| a < at + n * PAGE_SIZE && at < a + l * PAGE_SIZE);
                    (!overlaps_live).then_some((at, n))
                }
                _ => live.iter().next().map(|(&a, &l)| (a, l + 1)),
            };
            if let Some((at, n)) = misuse {
                let r = front.free_frames(PhysAddr::new(at), n, &mut mem);
                assert!(
                    r.is_err(),
                    "step {step}: misuse of {at:#x} x{n} accepted: {r:?}"
                );
                let after = (
                    front.runs.0.stats().frames_free,
                    front.runs.0.stats().chunks,
                );
                assert_eq!(
                    before, after,
                    "step {step}: a refused free changed the layer"
                );
            }
        }
        runs.validate(&buddy)
            .unwrap_or_else(|v| panic!("step {step}: {v}"));
        buddy
            .validate()
            .unwrap_or_else(|v| panic!("step {step}: {v}"));
    }
    if !poison {
        assert!(
            fast_allocs > 1000 && fast_frees > 1000,
            "{fast_allocs} allocations and {fast_frees} frees without the buddy's lock"
        );
    }
}

#[test]
fn runs_from_listed_chunks_skip_the_buddy_lock_and_agree_with_a_model() {
    run_model(false);
}

#[test]
fn with_poisoning_every_run_takes_the_buddy_lock() {
    run_model(true);
}
