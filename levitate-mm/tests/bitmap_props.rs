//! Property tests of the bitmap layer and the front against a simple model, through the public
//! API only.
//!
//! Machines are small: one RAM bank at 0x4000_0000 plus an odd offset, cut into sections by
//! reserved gaps, so some sections hold 2 MiB blocks and some do not. Random sequences of
//! allocations (1 to 600 frames, and lengths out of range), frees (valid, wrong length, inside
//! a run, misaligned, again after a free, anywhere) and poisoning switched on and off, on a
//! layer of 3 chunk slots (often full: fallbacks) and one of 64. After every operation: both
//! layers' `validate()`; the model's verdict on every free (success with the owner, or the
//! exact error, or a refusal by the buddy); no frame handed out twice; a run of n < 512 from a
//! chunk costs exactly n frames, and a chunk is taken or a fallback made only when no chunk
//! has the run; a refusal leaves both layers as they were; every run still holds the pattern
//! written into it when it is freed (and zeroed runs read zero). At the end everything is
//! freed and the buddy's free blocks are the initial ones again.

use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::bitmap::{
    alloc_frames, free_frames, FrameError, RunHolder, RunMisuse, SmallRuns, CHUNK_FRAMES,
};
use levitate_mm::buddy::{AllocError, Buddy, FrameMemory, Owner, MAX_ORDER, POISON};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::region::Region;
use proptest::prelude::*;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

const CHUNK_BYTES: u64 = CHUNK_FRAMES * PAGE_SIZE;
const MAX_FRAMES: u64 = 1 << MAX_ORDER;
/// Owners the tests allocate for (`Bitmap` is the layer's own).
const OWNERS: [Owner; 6] = [
    Owner::Kernel,
    Owner::PageTable,
    Owner::Heap,
    Owner::Stack,
    Owner::Dma,
    Owner::Test,
];

/// One byte per frame of the machine: what the frame was last filled with.
struct ByteMemory {
    first: u64,
    frames: Vec<u8>,
}

impl ByteMemory {
    fn index(&self, pfn: Pfn) -> usize {
        (pfn.as_u64() - self.first) as usize
    }
}

impl FrameMemory for ByteMemory {
    fn fill(&mut self, first: Pfn, frames: u64, byte: u8) {
        let i = self.index(first);
        self.frames[i..i + frames as usize].fill(byte);
    }

    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr> {
        let i = self.index(first);
        self.frames[i..i + frames as usize]
            .iter()
            .position(|&b| b != byte)
            .map(|k| Pfn::new(first.as_u64() + k as u64).addr())
    }
}

/// A RAM bank and the usable sections inside it.
#[derive(Clone, Debug)]
struct Machine {
    ram: Region,
    usable: Vec<Region>,
}

fn machine() -> impl Strategy<Value = Machine> {
    (
        0u64..600,
        prop::collection::vec((0u64..300, 1u64..2500), 1..4),
        0u64..8,
    )
        .prop_map(|(offset, sections, tail)| {
            let base = 0x4000_0000 + offset * PAGE_SIZE;
            let mut at = base;
            let mut usable = Vec::new();
            for (gap, len) in sections {
                at += gap * PAGE_SIZE;
                usable.push(Region::new(PhysAddr::new(at), len * PAGE_SIZE));
                at += len * PAGE_SIZE;
            }
            Machine {
                ram: Region::from_bounds(base, at + tail * PAGE_SIZE),
                usable,
            }
        })
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        frames: u64,
        owner: usize,
        zero: bool,
    },
    /// A live run, freed properly.
    Free(usize),
    /// A live run, freed with another length.
    WrongLength(usize, u64),
    /// A live run, freed at a byte inside it (a later frame, or not a frame start).
    Inside(usize, u64),
    /// A run freed before, freed again.
    Again(usize),
    /// Any address around RAM, any length.
    Anywhere(u64, u64),
    /// Turns the buddy's poisoning on or off.
    Poison,
}

fn frames() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1u64..8,
        2 => 8u64..64,
        2 => 64u64..512,
        1 => 512u64..600,
        1 => prop::sample::select(vec![0, 1, 511, 512, MAX_FRAMES + 1]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (frames(), 0..OWNERS.len(), any::<bool>())
            .prop_map(|(frames, owner, zero)| Op::Alloc { frames, owner, zero }),
        4 => any::<usize>().prop_map(Op::Free),
        1 => (any::<usize>(), 1u64..700).prop_map(|(p, d)| Op::WrongLength(p, d)),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(p, o)| Op::Inside(p, o)),
        1 => any::<usize>().prop_map(Op::Again),
        1 => (any::<u64>(), 0u64..700).prop_map(|(a, f)| Op::Anywhere(a, f)),
        1 => Just(Op::Poison),
    ]
}

/// The buddy order that holds `frames` frames.
fn order_for(frames: u64) -> u8 {
    frames.next_power_of_two().trailing_zeros() as u8
}

/// A live run as the model sees it.
#[derive(Clone, Copy, Debug)]
struct Live {
    frames: u64,
    owner: Owner,
    /// `None`: from a chunk, exactly `frames` frames; `Some(order)`: a buddy block.
    order: Option<u8>,
    /// The byte written into every frame of it.
    pattern: u8,
}

impl Live {
    /// Frames it really takes.
    fn held(&self) -> u64 {
        self.order.map_or(self.frames, |o| 1 << o)
    }
}

/// What a free must do.
#[derive(Debug)]
enum Verdict {
    /// Succeed and name the owner.
    Freed(Owner),
    /// Be refused by the layer with exactly this error.
    Layer(FrameError),
    /// Be refused by the buddy (any reason).
    Buddy,
}

#[derive(Default)]
struct Model {
    /// Live runs by first byte.
    live: BTreeMap<u64, Live>,
    /// Chunks held, by first byte, each with the frames that started a run since it was taken.
    chunks: BTreeMap<u64, BTreeSet<u64>>,
    /// The wholly free chunk the layer keeps (the first to empty), if any.
    idle: Option<u64>,
    /// Runs freed, as (address, frames).
    freed: Vec<(u64, u64)>,
    patterns: u8,
}

impl Model {
    /// The live run that holds byte `addr`.
    fn holding(&self, addr: u64) -> Option<(u64, Live)> {
        let (&start, &run) = self.live.range(..=addr).next_back()?;
        (addr < start + run.held() * PAGE_SIZE).then_some((start, run))
    }

    /// The chunk runs of `chunk`, in address order.
    fn chunk_runs(&self, chunk: u64) -> impl Iterator<Item = (u64, Live)> + '_ {
        self.live
            .range(chunk..chunk + CHUNK_BYTES)
            .filter(|(_, r)| r.order.is_none())
            .map(|(&a, &r)| (a, r))
    }

    /// Whether some chunk has `frames` free frames in a row.
    fn room_for(&self, frames: u64) -> bool {
        self.chunks.keys().any(|&chunk| {
            let (mut at, mut longest) = (chunk, 0);
            for (start, run) in self.chunk_runs(chunk) {
                longest = longest.max((start - at) / PAGE_SIZE);
                at = start + run.frames * PAGE_SIZE;
            }
            longest.max((chunk + CHUNK_BYTES - at) / PAGE_SIZE) >= frames
        })
    }

    fn judge(&self, addr: u64, frames: u64) -> Verdict {
        if frames == 0 || frames > MAX_FRAMES {
            return Verdict::Layer(FrameError::BadLength { frames });
        }
        let a = PhysAddr::new(addr);
        let chunk = addr & !(CHUNK_BYTES - 1);
        let Some(ever) = self.chunks.get(&chunk) else {
            return match self.live.get(&addr) {
                Some(run) if run.order == Some(order_for(frames)) => Verdict::Freed(run.owner),
                _ => Verdict::Buddy,
            };
        };
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Verdict::Layer(FrameError::Misaligned { addr: a, frames });
        }
        if let Some(run) = self.live.get(&addr) {
            return if run.frames == frames {
                Verdict::Freed(run.owner)
            } else {
                Verdict::Layer(FrameError::WrongLength {
                    addr: a,
                    frames,
                    actual: run.frames,
                    owner: run.owner,
                })
            };
        }
        let now = match self.holding(addr) {
            Some((start, run)) => RunHolder::Run {
                addr: PhysAddr::new(start),
                frames: run.frames,
                owner: run.owner,
            },
            None => RunHolder::Free,
        };
        Verdict::Layer(if ever.contains(&addr) {
            FrameError::DoubleFree {
                addr: a,
                frames,
                now,
            }
        } else {
            FrameError::NeverAllocated {
                addr: a,
                frames,
                now,
            }
        })
    }
}

/// The buddy's free blocks and per-owner totals.
fn buddy_state(b: &Buddy<'_>) -> (Vec<(PhysAddr, u8)>, [u64; Owner::COUNT]) {
    let mut free: Vec<_> = b.free_blocks().map(|f| (f.addr, f.order)).collect();
    free.sort();
    (free, b.stats().allocated)
}

struct World<'m, const N: usize> {
    machine: Machine,
    buddy: Buddy<'m>,
    runs: Box<SmallRuns<N>>,
    mem: ByteMemory,
    model: Model,
}

impl<const N: usize> World<'_, N> {
    fn alloc(&mut self, frames: u64, owner: Owner, zero: bool) -> Result<(), TestCaseError> {
        let room = self.model.room_for(frames);
        let held = self.model.chunks.len();
        let largest = self.buddy.stats().largest_free_order();
        let before = self.runs.stats();
        let got = alloc_frames(
            &mut self.runs,
            &mut self.buddy,
            frames,
            owner,
            zero,
            &mut self.mem,
        );
        let after = self.runs.stats();
        if frames == 0 || frames > MAX_FRAMES {
            prop_assert_eq!(got, Err(FrameError::BadLength { frames }));
            prop_assert_eq!(
                after.misuse.get(RunMisuse::BadLength),
                before.misuse.get(RunMisuse::BadLength) + 1
            );
            return Ok(());
        }
        let small = frames < CHUNK_FRAMES;
        // The layer may leave chunks only when it cannot take one.
        let may_leave_chunks = !room && (held == N || largest < Some(9));
        let run = match got {
            Ok(run) => run,
            Err(FrameError::Alloc(AllocError::OutOfMemory { .. })) => {
                prop_assert!(largest < Some(order_for(frames)));
                prop_assert!(!small || may_leave_chunks);
                prop_assert_eq!(after.frames_in_use, before.frames_in_use);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{frames} frames: {e}"))),
        };
        prop_assert_eq!(run.frames, frames);
        let addr = run.addr.as_u64();
        let order = if small && self.runs.holds(run.addr) {
            // A chunk run: exactly its length, inside one chunk; a new chunk only if needed.
            prop_assert_eq!(after.frames_in_use, before.frames_in_use + frames);
            let chunk = addr & !(CHUNK_BYTES - 1);
            prop_assert!(addr + frames * PAGE_SIZE <= chunk + CHUNK_BYTES);
            let ever = match self.model.chunks.entry(chunk) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    prop_assert!(!room, "took a chunk while one had room for {}", frames);
                    prop_assert!(held < N);
                    e.insert(BTreeSet::new())
                }
            };
            ever.insert(addr);
            if self.model.idle == Some(chunk) {
                self.model.idle = None;
            }
            None
        } else {
            let order = order_for(frames);
            prop_assert_eq!(
                self.buddy.owner_of(run.addr),
                Some((owner, order, run.addr))
            );
            if small {
                prop_assert!(may_leave_chunks, "fell back with room for {}", frames);
                prop_assert_eq!(after.fallbacks, before.fallbacks + 1);
            }
            Some(order)
        };
        self.model.patterns = self.model.patterns.wrapping_add(1) | 1;
        let live = Live {
            frames,
            owner,
            order,
            pattern: self.model.patterns,
        };
        let end = addr + live.held() * PAGE_SIZE;
        prop_assert!(
            self.model.holding(addr).is_none(),
            "{:#x} handed out twice",
            addr
        );
        if let Some((&next, _)) = self.model.live.range(addr..).next() {
            prop_assert!(next >= end, "run at {:#x} overlaps {:#x}", addr, next);
        }
        for pfn in addr / PAGE_SIZE..end / PAGE_SIZE {
            prop_assert!(self
                .machine
                .usable
                .iter()
                .any(|r| r.contains(pfn * PAGE_SIZE)));
        }
        if zero {
            prop_assert_eq!(self.mem.find_not(run.pfn(), frames, 0), None);
        }
        self.mem.fill(run.pfn(), live.held(), live.pattern);
        self.model.live.insert(addr, live);
        Ok(())
    }

    fn free(&mut self, addr: u64, frames: u64) -> Result<(), TestCaseError> {
        let verdict = self.model.judge(addr, frames);
        let before = (*self.runs).clone();
        let buddy_before = buddy_state(&self.buddy);
        let buddy_misuse = self.buddy.stats().misuse.total();
        if let Verdict::Freed(_) = verdict {
            let run = self.model.live[&addr];
            prop_assert_eq!(
                self.mem
                    .find_not(PhysAddr::new(addr).pfn(), run.held(), run.pattern),
                None,
                "a run's contents changed while it was live"
            );
        }
        let got = free_frames(
            &mut self.runs,
            &mut self.buddy,
            PhysAddr::new(addr),
            frames,
            &mut self.mem,
        );
        match verdict {
            Verdict::Freed(owner) => {
                prop_assert_eq!(got, Ok(owner));
                let run = self.model.live.remove(&addr).unwrap();
                self.model.freed.push((addr, frames));
                let chunk = addr & !(CHUNK_BYTES - 1);
                if run.order.is_none() && self.model.chunk_runs(chunk).next().is_none() {
                    // The first chunk to empty stays, idle; another goes back at once.
                    if self.model.idle.is_none() {
                        self.model.idle = Some(chunk);
                    } else {
                        self.model.chunks.remove(&chunk);
                    }
                }
            }
            Verdict::Layer(want) => {
                prop_assert_eq!(got, Err(want));
                let kind = want.misuse().unwrap();
                let (was, now) = (before.stats(), self.runs.stats());
                prop_assert_eq!(now.misuse.get(kind), was.misuse.get(kind) + 1);
                prop_assert_eq!(now.misuse.total(), was.misuse.total() + 1);
                prop_assert_eq!(
                    (now.chunks, now.frames_in_use, now.allocated),
                    (was.chunks, was.frames_in_use, was.allocated)
                );
                prop_assert_eq!(buddy_state(&self.buddy), buddy_before);
            }
            Verdict::Buddy => {
                prop_assert!(matches!(got, Err(FrameError::Free(_))), "{:?}", got);
                prop_assert!(
                    *self.runs == before,
                    "the layer changed on the buddy's refusal"
                );
                prop_assert_eq!(buddy_state(&self.buddy), buddy_before);
                prop_assert_eq!(self.buddy.stats().misuse.total(), buddy_misuse + 1);
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        if let Err(v) = self.buddy.validate() {
            return Err(TestCaseError::fail(format!("{v}")));
        }
        if let Err(v) = self.runs.validate(&self.buddy) {
            return Err(TestCaseError::fail(format!("{v}")));
        }
        let s = self.runs.stats();
        let b = self.buddy.stats();
        prop_assert_eq!(s.chunks, self.model.chunks.len() as u64);
        for &chunk in self.model.chunks.keys() {
            prop_assert!(self.runs.holds(PhysAddr::new(chunk)));
        }
        prop_assert_eq!(b.allocated_to(Owner::Bitmap), s.chunks * CHUNK_FRAMES);
        let mut in_chunks = [0u64; Owner::COUNT];
        let mut in_buddy = [0u64; Owner::COUNT];
        for run in self.model.live.values() {
            let sums = if run.order.is_some() {
                &mut in_buddy
            } else {
                &mut in_chunks
            };
            sums[run.owner as usize] += run.held();
        }
        prop_assert_eq!(s.frames_in_use, in_chunks.iter().sum::<u64>());
        for owner in OWNERS {
            prop_assert_eq!(s.allocated_to(owner), in_chunks[owner as usize]);
            prop_assert_eq!(b.allocated_to(owner), in_buddy[owner as usize]);
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let live: Vec<(u64, Live)> = self.model.live.iter().map(|(&a, &r)| (a, r)).collect();
        let pick = |i: usize| live.get(i % live.len().max(1)).copied();
        match *op {
            Op::Alloc {
                frames,
                owner,
                zero,
            } => self.alloc(frames, OWNERS[owner], zero)?,
            Op::Free(i) => {
                if let Some((addr, run)) = pick(i) {
                    self.free(addr, run.frames)?;
                }
            }
            Op::WrongLength(i, delta) => {
                if let Some((addr, run)) = pick(i) {
                    let mut frames = (run.frames + delta) % 700;
                    if frames == run.frames {
                        frames += 1;
                    }
                    self.free(addr, frames)?;
                }
            }
            Op::Inside(i, offset) => {
                if let Some((addr, run)) = pick(i) {
                    let bytes = run.held() * PAGE_SIZE;
                    self.free(addr + 1 + offset % (bytes - 1), run.frames)?;
                }
            }
            Op::Again(i) => {
                if !self.model.freed.is_empty() {
                    let (addr, frames) = self.model.freed[i % self.model.freed.len()];
                    self.free(addr, frames)?;
                }
            }
            Op::Anywhere(raw, frames) => {
                let lo = self.machine.ram.base.as_u64() - 64 * PAGE_SIZE;
                let span = self.machine.ram.size + 128 * PAGE_SIZE;
                let mut addr = lo + raw % span;
                if raw & (1 << 63) == 0 {
                    addr &= !(PAGE_SIZE - 1);
                }
                self.free(addr, frames)?;
            }
            Op::Poison => {
                let on = !self.buddy.poisoning();
                self.buddy.set_poisoning(on, &mut self.mem);
            }
        }
        self.check()
    }
}

fn run<const N: usize>(m: &Machine, ops: &[Op]) -> Result<(), TestCaseError> {
    let layout = Layout::new(&m.usable).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let ram = [m.ram];
    let buddy = Buddy::new(&pages, &layout, &ram).unwrap();
    let initial = buddy_state(&buddy);
    // Frames from 64 below RAM to 64 above, for the random addresses.
    let first = m.ram.base.pfn().as_u64() - 64;
    let mut world = World::<N> {
        machine: m.clone(),
        buddy,
        runs: Box::new(SmallRuns::new()),
        mem: ByteMemory {
            first,
            frames: vec![0x5a; (m.ram.size / PAGE_SIZE + 128) as usize],
        },
        model: Model::default(),
    };
    for op in ops {
        world.apply(op)?;
    }
    // Free everything: every chunk goes back and the buddy is as it began.
    let live: Vec<(u64, u64)> = world
        .model
        .live
        .iter()
        .map(|(&a, r)| (a, r.frames))
        .collect();
    for (addr, frames) in live.into_iter().rev() {
        world.free(addr, frames)?;
        world.check()?;
    }
    prop_assert_eq!(
        world.runs.stats().idle_chunks,
        u64::from(world.model.idle.is_some())
    );
    let released = world.runs.release_idle(&mut world.buddy, &mut world.mem);
    prop_assert_eq!(
        released,
        CHUNK_FRAMES * u64::from(world.model.idle.is_some())
    );
    world.runs.validate(&world.buddy).unwrap();
    let s = world.runs.stats();
    prop_assert_eq!((s.chunks, s.frames_in_use), (0, 0));
    prop_assert_eq!(s.chunks_taken, s.chunks_returned);
    prop_assert_eq!(buddy_state(&world.buddy), initial);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Three chunk slots: the table is often full and small runs fall back to the buddy.
    #[test]
    fn a_small_table_against_the_model(
        m in machine(),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        run::<3>(&m, &ops)?;
    }

    /// Room for every chunk the machines can give.
    #[test]
    fn a_large_table_against_the_model(
        m in machine(),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        run::<64>(&m, &ops)?;
    }
}

#[test]
fn poison_is_never_a_false_alarm_across_chunk_turnover() {
    // Deterministic: poisoning on from the start, many chunks taken and given back.
    let usable = [Region::from_bounds(
        0x4000_0000,
        0x4000_0000 + 16 * CHUNK_BYTES,
    )];
    let layout = Layout::new(&usable).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let mut b = Buddy::new(&pages, &layout, &usable).unwrap();
    let mut mem = ByteMemory {
        first: 0x40000,
        frames: vec![0x5a; (16 * CHUNK_FRAMES) as usize],
    };
    b.set_poisoning(true, &mut mem);
    let mut r: Box<SmallRuns> = Box::default();
    for round in 1..200u64 {
        let n = round % 97 + 1;
        let run = alloc_frames(&mut r, &mut b, n, Owner::Test, round % 2 == 0, &mut mem).unwrap();
        mem.fill(run.pfn(), n, 0x11);
        let other = alloc_frames(&mut r, &mut b, 600 - n, Owner::Test, false, &mut mem).unwrap();
        levitate_mm::bitmap::free_run(&mut r, &mut b, run, &mut mem).unwrap();
        levitate_mm::bitmap::free_run(&mut r, &mut b, other, &mut mem).unwrap();
        assert_eq!(r.find_use_after_free(&mem), None);
        assert_eq!(b.find_use_after_free(&mem), None);
    }
    r.release_idle(&mut b, &mut mem);
    assert_eq!(r.stats().chunks, 0);
    assert!(mem.frames.iter().all(|&x| x == POISON));
    b.validate().unwrap();
    r.validate(&b).unwrap();
}
