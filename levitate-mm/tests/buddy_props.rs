//! Property tests of the buddy allocator against a simple model, through the public API only.
//!
//! Machines are small: one or two RAM banks (the first at 0x4000_0000 plus an odd offset, the
//! second straddling 4 GiB), each cut into sections at odd alignments by reserved gaps. Random
//! sequences of allocations (orders, owners, address limits, zeroing) and frees (valid, double,
//! stale after reuse, wrong order, misaligned, never allocated, reserved, outside RAM), with
//! poisoning switched on and off and stray writes into free frames. After every operation:
//! `validate()`; the model's verdict on every free (success or the exact kind of misuse); no
//! frame handed out twice; every refusal leaves the allocator as it was; the per-owner and
//! free totals match the model. At the end everything is freed in random order and the free
//! lists must be the initial maximal blocks again.

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{
    AllocError, Buddy, FrameMemory, FreeError, Holder, Misuse, Owner, Request, Stats, MAX_ORDER,
    POISON,
};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::region::Region;
mod common;

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

use common::frame_memory::TestMemory;

/// RAM banks and the usable sections inside them.
#[derive(Clone, Debug)]
struct Machine {
    ram: Vec<Region>,
    usable: Vec<Region>,
}

impl Machine {
    fn is_usable(&self, addr: u64) -> bool {
        self.usable.iter().any(|r| r.contains(addr))
    }
    fn is_ram(&self, addr: u64) -> bool {
        self.ram.iter().any(|r| r.contains(addr))
    }
    /// The span from a little below RAM to a little above, in frames, for random addresses.
    fn span(&self) -> (u64, u64) {
        let lo = self.ram[0].base.as_u64() - 16 * PAGE_SIZE;
        let hi = self.ram.last().unwrap().end() + 16 * PAGE_SIZE;
        (lo, (hi - lo) / PAGE_SIZE)
    }
}

/// A bank: a base, then (reserved gap, usable length) pairs in frames, then a trailing gap.
fn bank(base: u64, sections: &[(u64, u64)], tail: u64, m: &mut Machine) {
    let mut at = base;
    for &(gap, len) in sections {
        at += gap * PAGE_SIZE;
        m.usable
            .push(Region::new(PhysAddr::new(at), len * PAGE_SIZE));
        at += len * PAGE_SIZE;
    }
    m.ram.push(Region::from_bounds(base, at + tail * PAGE_SIZE));
}

fn machine() -> impl Strategy<Value = Machine> {
    let sections = || prop::collection::vec((0u64..24, 1u64..160), 1..4);
    (
        0u64..64,
        sections(),
        0u64..8,
        prop::option::of((0u64..200, sections(), 0u64..8)),
    )
        .prop_map(|(offset, first, tail, second)| {
            let mut m = Machine {
                ram: Vec::new(),
                usable: Vec::new(),
            };
            bank(0x4000_0000 + offset * PAGE_SIZE, &first, tail, &mut m);
            if let Some((below_4g, sections, tail)) = second {
                bank(
                    0x1_0000_0000 - below_4g * PAGE_SIZE,
                    &sections,
                    tail,
                    &mut m,
                );
            }
            m
        })
}

#[derive(Clone, Copy, Debug)]
enum Limit {
    None,
    FourGib,
    /// A fraction (in 1/256) of the way through the machine's span.
    Inside(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        order: u8,
        owner: usize,
        zero: bool,
        limit: Limit,
    },
    /// A live block, freed properly.
    Free(usize),
    /// A live block with another order.
    WrongOrder(usize, u8),
    /// A live block's address plus a byte offset inside its first frame.
    Misaligned(usize, u64),
    /// An address freed before (a double free, or a stale free once reused).
    Stale(usize),
    /// Any frame from just below RAM to just above, any order: reserved, outside, free...
    Random(u64, u8),
    Poisoning(bool),
    /// A write into a free frame (when poisoning is on).
    Scribble(usize, u64, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let order = prop_oneof![8 => 0u8..3, 3 => 3u8..8, 1 => 8u8..=20];
    let limit = prop_oneof![
        6 => Just(Limit::None),
        2 => Just(Limit::FourGib),
        2 => any::<u8>().prop_map(Limit::Inside)
    ];
    prop_oneof![
        12 => (order, 0..Owner::COUNT, any::<bool>(), limit)
            .prop_map(|(order, owner, zero, limit)| Op::Alloc { order, owner, zero, limit }),
        8 => any::<usize>().prop_map(Op::Free),
        1 => (any::<usize>(), 1u8..4).prop_map(|(i, d)| Op::WrongOrder(i, d)),
        1 => (any::<usize>(), 1u64..PAGE_SIZE).prop_map(|(i, o)| Op::Misaligned(i, o)),
        2 => any::<usize>().prop_map(Op::Stale),
        2 => (any::<u64>(), prop_oneof![6 => 0u8..3, 1 => 3u8..25])
            .prop_map(|(f, o)| Op::Random(f, o)),
        1 => any::<bool>().prop_map(Op::Poisoning),
        1 => (any::<usize>(), 0u64..PAGE_SIZE, any::<u8>())
            .prop_map(|(i, o, b)| Op::Scribble(i, o, b)),
    ]
}

/// What the allocator should hold, kept the obvious way.
#[derive(Default)]
struct Model {
    /// Allocated blocks: address -> (order, owner).
    live: BTreeMap<u64, (u8, Owner)>,
    /// Every address that has started an allocated block.
    ever: BTreeSet<u64>,
    /// Addresses freed, in order.
    freed: Vec<u64>,
    /// Stray writes into free frames not yet caught or overwritten.
    dirty: BTreeSet<u64>,
    poisoning: bool,
}

impl Model {
    /// The live block covering `addr`, if any.
    fn live_at(&self, addr: u64) -> Option<(u64, u8, Owner)> {
        let (&start, &(order, owner)) = self.live.range(..=addr).next_back()?;
        (addr < start + (PAGE_SIZE << order)).then_some((start, order, owner))
    }

    /// The verdict on `free(addr, order)`.
    fn judge_free(&self, m: &Machine, addr: u64, order: u8) -> Result<Owner, Misuse> {
        if order > MAX_ORDER {
            return Err(Misuse::BadOrder);
        }
        if !m.is_usable(addr) {
            return Err(if m.is_ram(addr) {
                Misuse::Reserved
            } else {
                Misuse::OutsideRam
            });
        }
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Misuse::Misaligned);
        }
        if let Some(&(o, owner)) = self.live.get(&addr) {
            return if o == order {
                Ok(owner)
            } else {
                Err(Misuse::WrongOrder)
            };
        }
        if self.ever.contains(&addr) {
            Err(Misuse::DoubleFree)
        } else if !(addr / PAGE_SIZE).is_multiple_of(1 << order) {
            Err(Misuse::Misaligned)
        } else {
            Err(Misuse::NeverAllocated)
        }
    }

    fn frames_of(&self, owner: Owner) -> u64 {
        self.live
            .values()
            .filter(|(_, o)| *o == owner)
            .map(|(order, _)| 1u64 << order)
            .sum()
    }

    fn forget_dirty(&mut self, start: u64, bytes: u64) {
        let gone: Vec<u64> = self.dirty.range(start..start + bytes).copied().collect();
        for a in gone {
            self.dirty.remove(&a);
        }
    }
}

/// The allocator's observable state apart from the counters meant to move on a refusal.
fn snapshot(b: &Buddy<'_>) -> (Vec<(PhysAddr, u8)>, Stats) {
    let mut free: Vec<_> = b.free_blocks().map(|f| (f.addr, f.order)).collect();
    free.sort();
    let mut s = b.stats();
    s.misuse = Default::default();
    s.alloc_failures = 0;
    s.use_after_free = 0;
    (free, s)
}

struct Run<'b, 'm> {
    m: &'b Machine,
    b: &'b mut Buddy<'m>,
    mem: TestMemory,
    model: Model,
}

impl Run<'_, '_> {
    fn free(&mut self, addr: u64, order: u8) -> Result<(), TestCaseError> {
        let want = self.model.judge_free(self.m, addr, order);
        let before = snapshot(self.b);
        let misuse_before = self.b.stats().misuse;
        let got = self.b.free(PhysAddr::new(addr), order, &mut self.mem);
        match (got, want) {
            (Ok(owner), Ok(expected)) => {
                prop_assert_eq!(owner, expected);
                self.model.live.remove(&addr);
                self.model.freed.push(addr);
            }
            (Err(e), Err(kind)) => {
                prop_assert_eq!(e.kind(), kind, "{}", e);
                prop_assert_eq!(e.addr(), PhysAddr::new(addr));
                prop_assert_eq!(
                    snapshot(self.b),
                    before,
                    "refused free changed state: {}",
                    e
                );
                let after = self.b.stats().misuse;
                prop_assert_eq!(after.get(kind), misuse_before.get(kind) + 1);
                prop_assert_eq!(after.total(), misuse_before.total() + 1);
                if let FreeError::DoubleFree { now, .. } | FreeError::NeverAllocated { now, .. } = e
                {
                    self.check_holder(addr, now)?;
                }
            }
            (got, want) => prop_assert!(false, "free({addr:#x}, {order}): {got:?}, model {want:?}"),
        }
        Ok(())
    }

    /// The block a refused free names is the one that covers the frame.
    fn check_holder(&self, addr: u64, now: Holder) -> Result<(), TestCaseError> {
        match (self.model.live_at(addr), now) {
            (
                Some((start, order, owner)),
                Holder::Allocated {
                    block,
                    order: o,
                    owner: w,
                },
            ) => {
                prop_assert_eq!((block.as_u64(), o, w), (start, order, owner));
            }
            (None, Holder::Free { block, order }) => {
                let covers = addr >= block.as_u64() && addr < block.as_u64() + (PAGE_SIZE << order);
                prop_assert!(covers);
                prop_assert!(self
                    .b
                    .free_blocks()
                    .any(|f| f.addr == block && f.order == order));
            }
            (live, now) => prop_assert!(false, "{addr:#x}: holder {now:?}, model {live:?}"),
        }
        Ok(())
    }

    fn alloc(
        &mut self,
        order: u8,
        owner: Owner,
        zero: bool,
        limit: Limit,
    ) -> Result<(), TestCaseError> {
        let below = match limit {
            Limit::None => None,
            Limit::FourGib => Some(PhysAddr::new(1 << 32)),
            Limit::Inside(frac) => {
                let (lo, frames) = self.m.span();
                Some(PhysAddr::new(
                    lo + frames * u64::from(frac) / 256 * PAGE_SIZE,
                ))
            }
        };
        let mut req = Request::new(order, owner);
        req.zero = zero;
        req.below = below;
        let before = snapshot(self.b);
        let normal_could = before
            .0
            .iter()
            .any(|&(a, o)| a.as_u64() >= 1 << 32 && o >= order);
        let stats_before = self.b.stats();
        match self.b.alloc(req, &mut self.mem) {
            Ok(block) => {
                let (start, bytes) = (block.addr.as_u64(), block.bytes());
                prop_assert_eq!(block.order, order);
                prop_assert_eq!(start % bytes, 0, "aligned to its size");
                let section = self.m.usable.iter().find(|r| r.contains(start));
                prop_assert!(
                    section.is_some_and(|r| start + bytes <= r.end()),
                    "inside a section"
                );
                prop_assert!(
                    self.model.live_at(start).is_none(),
                    "{start:#x} handed out twice"
                );
                let next = self.model.live.range(start..).next().map(|(&a, _)| a);
                prop_assert!(
                    next.is_none_or(|a| a >= start + bytes),
                    "overlaps a live block"
                );
                if let Some(limit) = below {
                    prop_assert!(start + bytes <= limit.as_u64(), "above the limit");
                }
                if below.is_none() && start < 1 << 32 {
                    prop_assert!(!normal_could, "DMA32 used while Normal had a block");
                }
                if self.model.poisoning {
                    prop_assert!(self
                        .model
                        .dirty
                        .range(start..start + bytes)
                        .next()
                        .is_none());
                }
                if zero {
                    prop_assert_eq!(self.mem.find_not(block.pfn(), block.frames(), 0), None);
                }
                self.model.forget_dirty(start, bytes);
                self.model.live.insert(start, (order, owner));
                self.model.ever.insert(start);
            }
            Err(e) => {
                prop_assert_eq!(
                    &snapshot(self.b),
                    &before,
                    "failed alloc changed state: {}",
                    e
                );
                let stats = self.b.stats();
                match e {
                    AllocError::BadOrder { .. } => {
                        prop_assert!(order > MAX_ORDER);
                        prop_assert_eq!(
                            stats.misuse.get(Misuse::BadOrder),
                            stats_before.misuse.get(Misuse::BadOrder) + 1
                        );
                    }
                    AllocError::OutOfMemory { .. } => {
                        // Nothing free could have served it.
                        let limit = below.map_or(u64::MAX, PhysAddr::as_u64);
                        let fits = |&(a, o): &(PhysAddr, u8)| {
                            o >= order && a.as_u64() + (PAGE_SIZE << order) <= limit
                        };
                        prop_assert!(!before.0.iter().any(fits), "{}", e);
                        prop_assert_eq!(stats.alloc_failures, stats_before.alloc_failures + 1);
                    }
                    AllocError::UseAfterFree {
                        addr,
                        block,
                        order: o,
                    } => {
                        prop_assert!(self.model.poisoning);
                        prop_assert_eq!(o, order);
                        prop_assert!(self.model.dirty.contains(&addr.as_u64()), "{}", e);
                        let bytes = PAGE_SIZE << o;
                        prop_assert!(addr >= block && addr.as_u64() < block.as_u64() + bytes);
                        prop_assert_eq!(stats.use_after_free, stats_before.use_after_free + 1);
                        self.model.forget_dirty(block.as_u64(), bytes);
                    }
                }
            }
        }
        Ok(())
    }

    fn scribble(&mut self, pick: usize, offset: u64, byte: u8) -> Result<(), TestCaseError> {
        if !self.model.poisoning {
            return Ok(());
        }
        let free: Vec<_> = self.b.free_blocks().collect();
        if free.is_empty() {
            return Ok(());
        }
        let blk = free[pick % free.len()];
        let frame = blk.addr.as_u64() + (pick as u64 % (1 << blk.order)) * PAGE_SIZE;
        let byte = if byte == POISON { 0 } else { byte };
        // One stray byte per frame in the test memory.
        self.model.forget_dirty(frame, PAGE_SIZE);
        self.mem.write(PhysAddr::new(frame + offset), byte);
        self.model.dirty.insert(frame + offset);
        let found = self.b.find_use_after_free(&self.mem);
        prop_assert!(
            matches!(found, Some(AllocError::UseAfterFree { addr, .. })
                if self.model.dirty.contains(&addr.as_u64())),
            "{found:?}"
        );
        Ok(())
    }

    fn nth_live(&self, i: usize) -> Option<(u64, u8)> {
        let n = self.model.live.len();
        (n > 0).then(|| {
            let (&a, &(o, _)) = self.model.live.iter().nth(i % n).unwrap();
            (a, o)
        })
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Alloc {
                order,
                owner,
                zero,
                limit,
            } => self.alloc(order, Owner::ALL[owner], zero, limit)?,
            Op::Free(i) => {
                if let Some((a, o)) = self.nth_live(i) {
                    self.free(a, o)?;
                }
            }
            Op::WrongOrder(i, d) => {
                if let Some((a, o)) = self.nth_live(i) {
                    self.free(a, (o + d) % (MAX_ORDER + 1))?;
                }
            }
            Op::Misaligned(i, offset) => {
                if let Some((a, o)) = self.nth_live(i) {
                    self.free(a + offset, o)?;
                }
            }
            Op::Stale(i) => {
                if !self.model.freed.is_empty() {
                    let a = self.model.freed[i % self.model.freed.len()];
                    self.free(a, (i % 3) as u8)?;
                }
            }
            Op::Random(f, order) => {
                let (lo, frames) = self.m.span();
                self.free(lo + (f % frames) * PAGE_SIZE, order)?;
            }
            Op::Poisoning(on) => {
                self.b.set_poisoning(on, &mut self.mem);
                if on && !self.model.poisoning {
                    self.model.dirty.clear();
                }
                self.model.poisoning = on;
                prop_assert_eq!(self.b.poisoning(), on);
            }
            Op::Scribble(i, offset, byte) => self.scribble(i, offset, byte)?,
        }
        self.check()
    }

    /// After every operation.
    fn check(&self) -> Result<(), TestCaseError> {
        if let Err(v) = self.b.validate() {
            prop_assert!(false, "{}", v);
        }
        let s = self.b.stats();
        for owner in Owner::ALL {
            prop_assert_eq!(
                s.allocated_to(owner),
                self.model.frames_of(owner),
                "{}",
                owner
            );
        }
        prop_assert_eq!(s.free_frames + s.allocated_frames(), s.managed_frames);
        Ok(())
    }
}

fn run(m: &Machine, ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    let layout = Layout::new(&m.usable).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let mut b = Buddy::new(&pages, &layout, &m.ram).unwrap();
    let initial = snapshot(&b).0;
    let managed: u64 = m.usable.iter().map(|r| r.size / PAGE_SIZE).sum();
    prop_assert_eq!(b.stats().managed_frames, managed);
    let mut r = Run {
        m,
        b: &mut b,
        mem: TestMemory::default(),
        model: Model::default(),
    };
    r.check()?;
    for op in ops {
        r.step(op)?;
    }
    // Free everything in a random order: back to the initial maximal blocks.
    let mut live: Vec<(u64, u8)> = r.model.live.iter().map(|(&a, &(o, _))| (a, o)).collect();
    let mut x = seed | 1;
    for i in (1..live.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        live.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for (a, o) in live {
        r.free(a, o)?;
        r.check()?;
    }
    let end = snapshot(r.b);
    prop_assert_eq!(end.0, initial);
    prop_assert_eq!(end.1.allocated_frames(), 0);
    prop_assert_eq!(end.1.free_frames, managed);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_model(
        m in machine(),
        ops in prop::collection::vec(op(), 0..200),
        seed in any::<u64>(),
    ) {
        run(&m, &ops, seed)?;
    }
}
