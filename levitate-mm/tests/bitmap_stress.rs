//! Several std threads share the buddy and the bitmap layer behind one `Mutex`, as the kernel
//! will (one lock over both), each allocating and freeing random runs through the front with
//! poisoning on. Outside the lock a thread claims every frame it was given in a shared
//! per-frame owner table (a frame claimed twice is a frame handed out twice), writes its run's
//! own pattern into a host `FrameMemory` of one atomic word per frame, and checks the pattern
//! before freeing (a change means someone else wrote into the run). At the end everything is
//! freed: both layers validate, no chunk is held and the buddy has every frame back.

use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::bitmap::{alloc_frames, free_run, FrameError, Run, SmallRuns};
use levitate_mm::buddy::{AllocError, Buddy, FrameMemory, Owner};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::region::Region;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const RAM: u64 = 0x4000_0000;
/// 64 MiB: room for 32 chunks, of which the layer may hold 12 (then small runs fall back).
const FRAMES: u64 = 16 * 1024;
const THREADS: u64 = 4;
const OPS: u64 = 10_000;
/// Runs a thread keeps at most.
const LIVE: usize = 32;

/// Frames in host memory, one word per frame: the frame's fill byte repeated, or a run's
/// pattern. Shared by all threads; each writes only frames it holds, and the allocator
/// writes only under the lock.
#[derive(Clone, Copy)]
struct WordMemory<'a> {
    words: &'a [AtomicU64],
}

impl WordMemory<'_> {
    fn word(&self, pfn: u64) -> &AtomicU64 {
        &self.words[(pfn - RAM / PAGE_SIZE) as usize]
    }
}

impl FrameMemory for WordMemory<'_> {
    fn fill(&mut self, first: Pfn, frames: u64, byte: u8) {
        let value = u64::from_ne_bytes([byte; 8]);
        for pfn in first.as_u64()..first.as_u64() + frames {
            self.word(pfn).store(value, Ordering::Relaxed);
        }
    }

    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr> {
        let value = u64::from_ne_bytes([byte; 8]);
        (first.as_u64()..first.as_u64() + frames)
            .find(|&pfn| self.word(pfn).load(Ordering::Relaxed) != value)
            .map(|pfn| Pfn::new(pfn).addr())
    }
}

/// A small xorshift generator: each thread its own, seeded by its number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly short runs, some long ones, now and then one for the buddy.
    fn frames(&mut self) -> u64 {
        match self.next() % 10 {
            0..=4 => self.next() % 4 + 1,
            5..=7 => self.next() % 60 + 1,
            8 => self.next() % 511 + 1,
            _ => self.next() % 200 + 512,
        }
    }
}

type Layers<'m> = (Box<SmallRuns<12>>, Buddy<'m>);

/// One thread's work: `OPS` random allocations and frees, then frees what is left.
fn worker(id: u64, layers: &Mutex<Layers<'_>>, mem: WordMemory<'_>, claims: &[AtomicU64]) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    let mut live: Vec<(Run, u64)> = Vec::new();
    let owners = [Owner::Test, Owner::Heap, Owner::PageTable];
    let claim = |pfn: u64| &claims[(pfn - RAM / PAGE_SIZE) as usize];
    let release = |live: &mut Vec<(Run, u64)>, i: usize, mem: &mut WordMemory<'_>| {
        let (run, tag) = live.swap_remove(i);
        for pfn in run.pfn().as_u64()..run.pfn().as_u64() + run.frames {
            assert_eq!(
                mem.word(pfn).load(Ordering::Relaxed),
                tag,
                "frame {pfn:#x} of a live run was overwritten"
            );
            assert_eq!(claim(pfn).swap(0, Ordering::Relaxed), tag);
        }
        let mut guard = layers.lock().unwrap();
        let (runs, buddy) = &mut *guard;
        free_run(runs, buddy, run, mem).unwrap_or_else(|e| panic!("{e}"));
    };
    let mut mem = mem;
    for op in 0..OPS {
        if live.len() == LIVE || (!live.is_empty() && rng.next() % 5 < 2) {
            let i = (rng.next() % live.len() as u64) as usize;
            release(&mut live, i, &mut mem);
            continue;
        }
        let frames = rng.frames();
        let owner = owners[(rng.next() % 3) as usize];
        let zero = rng.next().is_multiple_of(4);
        let got = {
            let mut guard = layers.lock().unwrap();
            let (runs, buddy) = &mut *guard;
            let got = alloc_frames(runs, buddy, frames, owner, zero, &mut mem);
            if id == 0 && op % 500 == 0 {
                buddy.validate().unwrap_or_else(|v| panic!("{v}"));
                runs.validate(buddy).unwrap_or_else(|v| panic!("{v}"));
            }
            got
        };
        let run = match got {
            Ok(run) => run,
            // Other threads hold the memory: give some back and go on.
            Err(FrameError::Alloc(AllocError::OutOfMemory { .. })) => {
                if !live.is_empty() {
                    release(&mut live, 0, &mut mem);
                }
                continue;
            }
            Err(e) => panic!("thread {id}: {frames} frames: {e}"),
        };
        // A tag unique to this run, never a fill byte pattern.
        let tag = (id + 1) << 48 | op << 16 | 0x5a5a;
        for pfn in run.pfn().as_u64()..run.pfn().as_u64() + run.frames {
            if zero {
                assert_eq!(mem.word(pfn).load(Ordering::Relaxed), 0);
            }
            let previous = claim(pfn).swap(tag, Ordering::Relaxed);
            assert_eq!(previous, 0, "frame {pfn:#x} handed out twice");
            mem.word(pfn).store(tag, Ordering::Relaxed);
        }
        live.push((run, tag));
    }
    while let Some(last) = live.len().checked_sub(1) {
        release(&mut live, last, &mut mem);
    }
}

#[test]
fn threads_sharing_the_layers_never_share_a_frame() {
    let usable = [Region::new(PhysAddr::new(RAM), FRAMES * PAGE_SIZE)];
    let layout = Layout::new(&usable).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let words: Vec<AtomicU64> = (0..FRAMES).map(|_| AtomicU64::new(0)).collect();
    let claims: Vec<AtomicU64> = (0..FRAMES).map(|_| AtomicU64::new(0)).collect();
    let mut mem = WordMemory { words: &words };
    let mut buddy = Buddy::new(&pages, &layout, &usable).unwrap();
    buddy.set_poisoning(true, &mut mem);
    let initial = buddy.stats().free_frames;
    let layers: Mutex<Layers<'_>> = Mutex::new((Box::default(), buddy));
    std::thread::scope(|s| {
        for id in 0..THREADS {
            let (layers, claims) = (&layers, &claims[..]);
            s.spawn(move || worker(id, layers, mem, claims));
        }
    });
    let (mut runs, mut buddy) = layers.into_inner().unwrap();
    buddy.validate().unwrap();
    runs.validate(&buddy).unwrap();
    assert!(runs.stats().idle_chunks <= 1);
    runs.release_idle(&mut buddy, &mut mem);
    runs.validate(&buddy).unwrap();
    let s = runs.stats();
    assert_eq!((s.chunks, s.frames_in_use), (0, 0));
    assert!(s.chunks_taken > 0 && s.chunks_taken == s.chunks_returned);
    assert_eq!(s.misuse.total() + s.use_after_free, 0);
    assert_eq!(buddy.stats().free_frames, initial);
    assert_eq!(buddy.stats().allocated_frames(), 0);
    assert!(claims.iter().all(|c| c.load(Ordering::Relaxed) == 0));
    assert_eq!(runs.find_use_after_free(&mem), None);
    assert_eq!(buddy.find_use_after_free(&mem), None);
}
