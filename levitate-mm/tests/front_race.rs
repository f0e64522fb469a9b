//! Double frees racing through the whole front (levitate_mm::front, as the kernel and the
//! bench wire it): several threads, each standing in for a CPU with its own cache, free the
//! same single frames, runs and buddy blocks at once, each in its own order, over and over.
//! Exactly one free of each wins, every other one is refused, and the allocator ends
//! consistent with nothing lost. The wins are counted per item, so a frame parked twice (two
//! winners) or lost (no winner) fails the round that did it. A failure never panics a thread
//! mid-round (the others would wait at the barrier forever): it is recorded, every thread
//! stops at the next round, and the test fails after they are joined. A second test checks the
//! front's out-of-memory promise for the bitmap layer's idle chunk.

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::bitmap::{FrameError, SmallRuns};
use levitate_mm::buddy::{Buddy, Misuse, NullMemory, Owner, Request};
use levitate_mm::front::{Front, RunsAccess};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::pcp::{self, BuddyAccess, CacheAccess, CpuCache, FrameStates, Limits};
use levitate_mm::region::Region;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};

const BASE: u64 = 0x4000_0000;
/// Threads that free (each its own "CPU" and cache); one more allocates.
const RACERS: usize = 4;
const ROUNDS: usize = 150;
const SINGLES: usize = 48;
const RUNS: usize = 8;
const BLOCKS: usize = 4;

struct Locked<'a, 'm> {
    caches: &'a [Mutex<CpuCache>],
    me: usize,
    runs: &'a Mutex<Box<SmallRuns>>,
    buddy: &'a Mutex<Buddy<'m>>,
}

struct Caches<'a>(&'a [Mutex<CpuCache>], usize);
struct Runs<'a>(&'a Mutex<Box<SmallRuns>>);
struct Shared<'a, 'm>(&'a Mutex<Buddy<'m>>);

impl CacheAccess for Caches<'_> {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        f(&mut self.0[self.1].lock().unwrap())
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        for c in self.0 {
            f(&mut c.lock().unwrap());
        }
    }
}

impl RunsAccess for Runs<'_> {
    fn with_runs<R>(&mut self, f: impl FnOnce(&mut SmallRuns) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }
}

impl BuddyAccess for Shared<'_, '_> {
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }
}

impl<'a, 'm> Locked<'a, 'm> {
    fn front<'s>(
        &self,
        states: &'s FrameStates<'m>,
    ) -> Front<'s, 'm, Caches<'a>, Runs<'a>, Shared<'a, 'm>> {
        Front {
            caches: Caches(self.caches, self.me),
            runs: Runs(self.runs),
            buddy: Shared(self.buddy),
            states,
        }
    }
}

/// What one round hands the racers: (address, length in frames; 0 means an order-1 block).
type Item = (u64, u64);

/// A small deterministic generator (xorshift64*).
fn shuffle(items: &mut [Item], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let j = (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[test]
fn racing_frees_through_the_front_have_exactly_one_winner_each() {
    let frames = 8192u64;
    let ram = Region::from_bounds(BASE, BASE + frames * PAGE_SIZE);
    let layout = Layout::new(&[ram]).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let buddy = Mutex::new(Buddy::new(&pages, &layout, &[ram]).unwrap());
    let initial = buddy.lock().unwrap().stats().free_frames;
    let states = FrameStates::new(&layout, &pages).unwrap();
    let runs: Mutex<Box<SmallRuns>> = Mutex::new(Box::default());
    let caches: Vec<Mutex<CpuCache>> = (0..=RACERS)
        .map(|i| Mutex::new(CpuCache::new(i as u8, Limits::DEFAULT).unwrap()))
        .collect();
    let items: Mutex<Vec<Item>> = Mutex::new(Vec::new());
    let total = SINGLES + RUNS + BLOCKS;
    let wins: Vec<AtomicU32> = (0..total).map(|_| AtomicU32::new(0)).collect();
    let refused = AtomicU64::new(0);
    let barrier = Barrier::new(RACERS + 1);
    let stop = AtomicBool::new(false);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let fail = |why: String| {
        stop.store(true, Ordering::Relaxed);
        failures.lock().unwrap().push(why);
    };

    std::thread::scope(|s| {
        for me in 0..RACERS {
            let (caches, runs, buddy, states) = (&caches[..], &runs, &buddy, &states);
            let (items, wins, refused, barrier) = (&items, &wins, &refused, &barrier);
            let (stop, fail) = (&stop, &fail);
            s.spawn(move || {
                let locked = Locked {
                    caches,
                    me,
                    runs,
                    buddy,
                };
                for round in 0..ROUNDS {
                    barrier.wait();
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Each racer its own order (with its index, to count the win).
                    let mut mine: Vec<(usize, Item)> = {
                        let all = items.lock().unwrap();
                        all.iter().copied().enumerate().collect()
                    };
                    let mut order: Vec<Item> = (0..mine.len() as u64).map(|i| (i, 0)).collect();
                    shuffle(&mut order, (round * RACERS + me) as u64 + 1);
                    mine = order.iter().map(|&(i, _)| mine[i as usize]).collect();
                    for (i, (addr, n)) in mine {
                        let addr = PhysAddr::new(addr);
                        let mut front = locked.front(states);
                        let won = match n {
                            0 => front.free(addr, 1, &mut NullMemory).is_ok(),
                            1 => match front.free(addr, 0, &mut NullMemory) {
                                Ok(owner) => {
                                    if owner != Owner::Test {
                                        fail(format!("a frame freed as {owner:?}'s"));
                                    }
                                    true
                                }
                                Err(e) => {
                                    if e.kind() != Misuse::DoubleFree {
                                        fail(format!("a racing free refused as {e}"));
                                    }
                                    false
                                }
                            },
                            _ => match front.free_frames(addr, n, &mut NullMemory) {
                                Ok(_) => true,
                                Err(
                                    FrameError::DoubleFree { .. }
                                    | FrameError::NeverAllocated { .. }
                                    | FrameError::Free(_),
                                ) => false,
                                Err(e) => {
                                    fail(format!("a racing free of a run refused as {e}"));
                                    false
                                }
                            },
                        };
                        if won {
                            wins[i].fetch_add(1, Ordering::Relaxed);
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    barrier.wait();
                }
            });
        }
        let allocator = Locked {
            caches: &caches,
            me: RACERS,
            runs: &runs,
            buddy: &buddy,
        };
        for round in 0..ROUNDS {
            let mut front = allocator.front(&states);
            let mut next: Vec<Item> = Vec::with_capacity(total);
            for _ in 0..SINGLES {
                let r = front.alloc_frames(1, Owner::Test, false, &mut NullMemory);
                next.push((r.unwrap().addr.as_u64(), 1));
            }
            for k in 0..RUNS {
                let n = 2 + k as u64 % 7;
                let r = front.alloc_frames(n, Owner::Test, false, &mut NullMemory);
                next.push((r.unwrap().addr.as_u64(), n));
            }
            for _ in 0..BLOCKS {
                let b = allocator
                    .front(&states)
                    .alloc(Request::new(1, Owner::Test), &mut NullMemory);
                next.push((b.unwrap().addr.as_u64(), 0));
            }
            *items.lock().unwrap() = next;
            for w in &wins {
                w.store(0, Ordering::Relaxed);
            }
            let refused_before = refused.load(Ordering::Relaxed);
            barrier.wait();
            barrier.wait();
            for (i, w) in wins.iter().enumerate() {
                let item = items.lock().unwrap()[i];
                let n = w.load(Ordering::Relaxed);
                if n != 1 {
                    fail(format!(
                        "round {round}: item {item:x?} had {n} winning frees, not 1"
                    ));
                }
            }
            let losers = refused.load(Ordering::Relaxed) - refused_before;
            if losers != ((RACERS - 1) * total) as u64 {
                fail(format!("round {round}: {losers} frees refused"));
            }
            if stop.load(Ordering::Relaxed) {
                // Let the racers see it and leave.
                barrier.wait();
                break;
            }
        }
    });

    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Consistent, and nothing lost: everything handed out came back exactly once.
    {
        let guards: Vec<_> = caches.iter().map(|c| c.lock().unwrap()).collect();
        let refs: Vec<&CpuCache> = guards.iter().map(|g| &**g).collect();
        let b = buddy.lock().unwrap();
        b.validate().unwrap();
        if let Err(v) = pcp::validate(&refs, &[], &states, &b) {
            panic!("{v}");
        }
        runs.lock().unwrap().validate(&b).unwrap();
        let double_frees: u64 = refs.iter().map(|c| c.stats().double_frees).sum();
        assert!(double_frees >= ((RACERS - 1) * SINGLES) as u64 * ROUNDS as u64 / 2);
        assert_eq!(b.stats().allocated_to(Owner::Test), 0);
    }
    let locked = Locked {
        caches: &caches,
        me: 0,
        runs: &runs,
        buddy: &buddy,
    };
    locked.front(&states).release_cached(&mut NullMemory);
    let b = buddy.lock().unwrap();
    assert_eq!(
        b.stats().free_frames,
        initial,
        "every frame back in the buddy"
    );
}

/// The bitmap layer's idle chunk is free memory: an allocation that needs its frames succeeds
/// (the front releases it before it would report `OutOfMemory`), for a block and for a run.
#[test]
fn the_idle_chunk_is_released_before_out_of_memory() {
    // 4 MiB: two 2 MiB blocks.
    let frames = 1024u64;
    let ram = Region::from_bounds(BASE, BASE + frames * PAGE_SIZE);
    let layout = Layout::new(&[ram]).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let buddy = Mutex::new(Buddy::new(&pages, &layout, &[ram]).unwrap());
    let states = FrameStates::new(&layout, &pages).unwrap();
    let runs: Mutex<Box<SmallRuns>> = Mutex::new(Box::default());
    let caches = [Mutex::new(CpuCache::new(0, Limits::DEFAULT).unwrap())];
    let locked = Locked {
        caches: &caches,
        me: 0,
        runs: &runs,
        buddy: &buddy,
    };
    let mut front = locked.front(&states);
    for _ in 0..2 {
        // A run takes a chunk; freed, the chunk stays idle and holds 512 frames.
        let run = front
            .alloc_frames(3, Owner::Test, false, &mut NullMemory)
            .unwrap();
        front.free_frames(run.addr, 3, &mut NullMemory).unwrap();
        assert_eq!(runs.lock().unwrap().stats().idle_chunks, 1);
        // Both 2 MiB blocks: the second is the idle chunk's frames.
        let a = locked
            .front(&states)
            .alloc(Request::new(9, Owner::Test), &mut NullMemory);
        let b = locked
            .front(&states)
            .alloc(Request::new(9, Owner::Test), &mut NullMemory);
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert_eq!(runs.lock().unwrap().stats().chunks, 0);
        for block in [a.unwrap(), b.unwrap()] {
            locked
                .front(&states)
                .free(block.addr, 9, &mut NullMemory)
                .unwrap();
        }
    }
    // The same for a long run (served by the buddy, rounded to 1024 frames: all of RAM).
    let run = front
        .alloc_frames(2, Owner::Test, false, &mut NullMemory)
        .unwrap();
    front.free_frames(run.addr, 2, &mut NullMemory).unwrap();
    let long = front.alloc_frames(1000, Owner::Test, false, &mut NullMemory);
    assert!(long.is_ok(), "{long:?}");
    front
        .free_frames(long.unwrap().addr, 1000, &mut NullMemory)
        .unwrap();
    let b = buddy.lock().unwrap();
    b.validate().unwrap();
    assert_eq!(b.stats().free_frames, frames);
}
