//! Property tests of the per-CPU frame caches in front of the buddy, against a model, through
//! the public API only.
//!
//! A machine is one RAM bank cut into sections by reserved gaps, with two to four caches of
//! random (small) watermarks, poisoning on or off. Random sequences of allocations on random
//! caches (order 0 through the caches; limited and larger requests through the buddy), frees
//! on random caches (so most land on another cache than the allocation), double and stale
//! frees, frees of random addresses, drains, runs to exhaustion, and stray writes into free
//! frames. After every operation: `validate()`; no frame handed out twice; each live block
//! still holds its pattern (a poison fill by a wrongly accepted free would destroy it); a
//! refused free changes nothing; `OutOfMemory` only with every cache empty and the buddy
//! unable to serve the request. At the end everything is freed on random caches, the caches
//! drained, and the buddy's free blocks must be the initial ones.

use levitate_mm::addr::{PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{
    AllocError, Buddy, FrameMemory, FreeError, Misuse, Owner, Request, POISON,
};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::pcp::{self, CacheAccess, CpuCache, FrameState, FrameStates, Limits};
use levitate_mm::region::Region;
mod common;

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const BASE: u64 = 0x4000_0000;

use common::frame_memory::{TestMemory, GARBAGE};

/// The caches, with the calling CPU.
struct Cpus<'c> {
    caches: &'c mut [CpuCache],
    local: usize,
}

impl CacheAccess for Cpus<'_> {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        f(&mut self.caches[self.local])
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        self.caches.iter_mut().for_each(&mut f);
    }
}

#[derive(Clone, Debug)]
struct Setup {
    /// RAM start offset in frames, then (reserved gap, usable length) pairs, in frames.
    offset: u64,
    sections: Vec<(u64, u64)>,
    /// (high, batch) per cache.
    caches: Vec<(u16, u16)>,
    poisoning: bool,
}

impl Setup {
    fn usable(&self) -> Vec<Region> {
        let mut at = BASE + self.offset * PAGE_SIZE;
        let mut v = Vec::new();
        for &(gap, len) in &self.sections {
            at += gap * PAGE_SIZE;
            v.push(Region::new(PhysAddr::new(at), len * PAGE_SIZE));
            at += len * PAGE_SIZE;
        }
        v
    }

    fn ram(&self) -> Region {
        let end = self.usable().last().unwrap().end() + 3 * PAGE_SIZE;
        Region::from_bounds(BASE, end)
    }
}

fn setup() -> impl Strategy<Value = Setup> {
    let limits = (1u16..6, 0u16..12).prop_map(|(batch, extra)| (batch + extra, batch));
    (
        0u64..16,
        prop::collection::vec((0u64..6, 1u64..70), 1..4),
        prop::collection::vec(limits, 2..5),
        any::<bool>(),
    )
        .prop_map(|(offset, sections, caches, poisoning)| Setup {
            offset,
            sections,
            caches,
            poisoning,
        })
}

#[derive(Clone, Debug)]
enum Op {
    /// Order 0 through the caches.
    Alloc {
        cpu: usize,
        owner: usize,
        zero: bool,
    },
    /// Through the buddy: order 0 below a limit, or a larger block.
    AllocBlock {
        cpu: usize,
        order: u8,
        limited: bool,
    },
    /// A live block, freed properly on any cache.
    Free {
        pick: usize,
        cpu: usize,
    },
    /// An address freed before: a double free, or a stale free once handed out again.
    Stale {
        pick: usize,
        cpu: usize,
    },
    /// Any frame from below RAM to above it, maybe misaligned.
    Random {
        frame: u64,
        offset: u64,
        cpu: usize,
    },
    /// Order-0 allocations on one cache until one fails.
    Exhaust {
        cpu: usize,
    },
    Drain {
        cpu: usize,
    },
    /// A write into a frame no live block covers (when poisoning).
    Scribble {
        pick: u64,
        offset: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let cpu = 0usize..4;
    prop_oneof![
        12 => (cpu.clone(), 0..Owner::COUNT, any::<bool>())
            .prop_map(|(cpu, owner, zero)| Op::Alloc { cpu, owner, zero }),
        3 => (cpu.clone(), 0u8..3, any::<bool>())
            .prop_map(|(cpu, order, limited)| Op::AllocBlock { cpu, order, limited }),
        12 => (any::<usize>(), cpu.clone()).prop_map(|(pick, cpu)| Op::Free { pick, cpu }),
        3 => (any::<usize>(), cpu.clone()).prop_map(|(pick, cpu)| Op::Stale { pick, cpu }),
        2 => (any::<u64>(), prop_oneof![4 => Just(0u64), 1 => 1u64..PAGE_SIZE], cpu.clone())
            .prop_map(|(frame, offset, cpu)| Op::Random { frame, offset, cpu }),
        1 => cpu.clone().prop_map(|cpu| Op::Exhaust { cpu }),
        1 => cpu.clone().prop_map(|cpu| Op::Drain { cpu }),
        2 => (any::<u64>(), 0u64..PAGE_SIZE).prop_map(|(pick, offset)| Op::Scribble { pick, offset }),
    ]
}

/// What the allocator should hold, kept the obvious way.
#[derive(Default)]
struct Model {
    /// Live blocks: address -> (order, owner, pattern byte).
    live: BTreeMap<u64, (u8, Owner, u8)>,
    /// Every address handed out to the test as a block's start.
    ever: BTreeSet<u64>,
    /// Addresses freed, in order.
    freed: Vec<u64>,
    /// Free frames holding a stray write nobody has caught yet.
    dirty: BTreeSet<u64>,
    next_pattern: u8,
}

impl Model {
    fn live_at(&self, addr: u64) -> Option<(u64, u8, Owner, u8)> {
        let (&start, &(order, owner, pattern)) = self.live.range(..=addr).next_back()?;
        (addr < start + (PAGE_SIZE << order)).then_some((start, order, owner, pattern))
    }

    fn live_frames(&self) -> u64 {
        self.live.values().map(|&(order, ..)| 1u64 << order).sum()
    }

    /// A byte for the next block's contents: never zero, the poison or the garbage.
    fn pattern(&mut self) -> u8 {
        loop {
            self.next_pattern = self.next_pattern.wrapping_add(37);
            if ![0, POISON, GARBAGE].contains(&self.next_pattern) {
                return self.next_pattern;
            }
        }
    }
}

/// The machine under test.
struct World<'a> {
    setup: &'a Setup,
    buddy: Buddy<'a>,
    states: FrameStates<'a>,
    caches: Vec<CpuCache>,
    mem: TestMemory,
    model: Model,
    usable: Vec<Region>,
    ram: Region,
}

/// Everything a refused free must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    cached: Vec<Vec<PhysAddr>>,
    free: Vec<(PhysAddr, u8)>,
    allocated: [u64; Owner::COUNT],
    states: Vec<Option<FrameState>>,
}

impl World<'_> {
    fn is_usable(&self, addr: u64) -> bool {
        self.usable.iter().any(|r| r.contains(addr))
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let refs: Vec<&CpuCache> = self.caches.iter().collect();
        if let Err(v) = pcp::validate(&refs, &[], &self.states, &self.buddy) {
            return Err(TestCaseError::fail(format!("{v}")));
        }
        for (&start, &(order, owner, pattern)) in &self.model.live {
            let pfn = PhysAddr::new(start).pfn();
            prop_assert_eq!(
                self.mem.find_not(pfn, 1 << order, pattern),
                None,
                "live block {:#x} (order {}, {}) was written by someone else",
                start,
                order,
                owner
            );
        }
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let mut free: Vec<_> = self
            .buddy
            .free_blocks()
            .map(|b| (b.addr, b.order))
            .collect();
        free.sort();
        let states = self
            .usable
            .iter()
            .flat_map(|r| (r.base.as_u64()..r.end()).step_by(PAGE_SIZE as usize))
            .map(|a| self.states.get(PhysAddr::new(a).pfn()))
            .collect();
        Snapshot {
            cached: self.caches.iter().map(|c| c.frames().collect()).collect(),
            free,
            allocated: self.buddy.stats().allocated,
            states,
        }
    }

    /// Forgets the frames filled since their write was caught (and poisoned again).
    fn refresh_dirty(&mut self) {
        let mem = &self.mem;
        self.model
            .dirty
            .retain(|&a| mem.is_scribbled(PhysAddr::new(a).pfn().as_u64()));
    }

    /// Allocates, and checks and records the outcome.
    fn alloc(&mut self, cpu: usize, req: Request) -> Result<Option<PhysAddr>, TestCaseError> {
        self.refresh_dirty();
        let dirty_before = self.model.dirty.clone();
        let result = {
            let states = &self.states;
            let (buddy, mem) = (&mut self.buddy, &mut self.mem);
            let local = cpu % self.caches.len();
            let mut cpus = Cpus {
                caches: &mut self.caches,
                local,
            };
            pcp::alloc(&mut cpus, states, buddy, req, mem)
        };
        match result {
            Ok(block) => {
                let (start, frames) = (block.addr.as_u64(), block.frames());
                prop_assert_eq!(block.order, req.order);
                for f in 0..frames {
                    let a = start + f * PAGE_SIZE;
                    prop_assert!(self.is_usable(a), "{:#x} is not usable", a);
                    prop_assert!(self.model.live_at(a).is_none(), "{:#x} handed out twice", a);
                    prop_assert!(
                        !dirty_before.contains(&a),
                        "a scribbled frame {:#x} handed out",
                        a
                    );
                }
                if let Some(limit) = req.below {
                    prop_assert!(start + block.bytes() <= limit.as_u64());
                }
                if req.zero {
                    prop_assert_eq!(self.mem.find_not(block.pfn(), frames, 0), None);
                }
                let cached = req.order == 0 && req.below.is_none();
                let expected = if cached {
                    FrameState::HandedOut { owner: req.owner }
                } else {
                    FrameState::Buddy
                };
                prop_assert_eq!(self.states.get(block.pfn()), Some(expected));
                let pattern = self.model.pattern();
                self.mem.fill(block.pfn(), frames, pattern);
                self.model
                    .live
                    .insert(start, (req.order, req.owner, pattern));
                self.model.ever.insert(start);
                Ok(Some(block.addr))
            }
            Err(AllocError::UseAfterFree { addr, .. }) => {
                prop_assert!(
                    dirty_before.contains(&addr.align_down(PAGE_SIZE).as_u64()),
                    "use after free reported at {} but nobody wrote there",
                    addr
                );
                Ok(None)
            }
            Err(AllocError::OutOfMemory { order, .. }) => {
                prop_assert!(
                    self.caches.iter().all(CpuCache::is_empty),
                    "out of memory with frames parked"
                );
                let stats = self.buddy.stats();
                if req.below.is_none() {
                    prop_assert!(stats.largest_free_order().is_none_or(|o| o < order));
                }
                if order == 0 && req.below.is_none() {
                    prop_assert_eq!(stats.free_frames, 0);
                    prop_assert_eq!(self.model.live_frames(), stats.managed_frames);
                }
                Ok(None)
            }
            Err(e) => Err(TestCaseError::fail(format!("unexpected {e}"))),
        }
    }

    /// Frees `addr` at `order` on `cpu` and checks the verdict against the model.
    fn free(&mut self, cpu: usize, addr: u64, order: u8) -> Result<(), TestCaseError> {
        let before = self.snapshot();
        let result = {
            let states = &self.states;
            let (buddy, mem) = (&mut self.buddy, &mut self.mem);
            let local = cpu % self.caches.len();
            let mut cpus = Cpus {
                caches: &mut self.caches,
                local,
            };
            pcp::free(&mut cpus, states, buddy, PhysAddr::new(addr), order, mem)
        };
        let expect = self.judge(addr, order);
        match (result, expect) {
            (Ok(owner), Ok(expected)) => {
                prop_assert_eq!(owner, expected);
                self.model.live.remove(&addr);
                self.model.freed.push(addr);
            }
            (Err(e), Err(kinds)) => {
                prop_assert!(kinds.contains(&e.kind()), "{} but expected {:?}", e, kinds);
                prop_assert_eq!(self.snapshot(), before, "a refused free changed something");
            }
            (got, expect) => {
                let got = got.map_err(|e: FreeError| e.to_string());
                return Err(TestCaseError::fail(format!(
                    "free({addr:#x}, {order}): got {got:?}, expected {expect:?}"
                )));
            }
        }
        Ok(())
    }

    /// The verdict on `free(addr, order)`: the owner, or the kinds of misuse allowed.
    fn judge(&self, addr: u64, order: u8) -> Result<Owner, Vec<Misuse>> {
        if !self.is_usable(addr) {
            return Err(vec![if self.ram.contains(addr) {
                Misuse::Reserved
            } else {
                Misuse::OutsideRam
            }]);
        }
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(vec![Misuse::Misaligned]);
        }
        match self.model.live.get(&addr) {
            Some(&(o, owner, _)) if o == order => Ok(owner),
            Some(_) => Err(vec![Misuse::WrongOrder]),
            // Handed out to the test before: the buddy's flag or the caches' byte says so.
            None if self.model.ever.contains(&addr) => Err(vec![Misuse::DoubleFree]),
            // Maybe parked or refilled before (the caches' traffic is not modelled).
            None => Err(vec![Misuse::DoubleFree, Misuse::NeverAllocated]),
        }
    }

    fn drain(&mut self, cpu: usize) {
        let states = &self.states;
        let (buddy, mem) = (&mut self.buddy, &mut self.mem);
        let local = cpu % self.caches.len();
        let mut cpus = Cpus {
            caches: &mut self.caches,
            local,
        };
        pcp::drain_all(&mut cpus, states, buddy, mem);
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Alloc { cpu, owner, zero } => {
                let owner = non_cache_owner(owner);
                let req = Request::new(0, owner);
                let req = if zero { req.zeroed() } else { req };
                self.alloc(cpu, req)?;
            }
            Op::AllocBlock {
                cpu,
                order,
                limited,
            } => {
                let mut req = Request::new(order, Owner::Test);
                if limited || order == 0 {
                    let r = self.ram;
                    req = req.below(PhysAddr::new(r.base.as_u64() + r.size / 4 * 3));
                }
                self.alloc(cpu, req)?;
            }
            Op::Free { pick, cpu } => {
                if let Some((&addr, &(order, ..))) = self
                    .model
                    .live
                    .iter()
                    .nth(pick % self.model.live.len().max(1))
                {
                    self.free(cpu, addr, order)?;
                }
            }
            Op::Stale { pick, cpu } => {
                if !self.model.freed.is_empty() {
                    let addr = self.model.freed[pick % self.model.freed.len()];
                    self.free(cpu, addr, 0)?;
                }
            }
            Op::Random { frame, offset, cpu } => {
                let lo = BASE - 4 * PAGE_SIZE;
                let span = (self.ram.end() + 4 * PAGE_SIZE - lo) / PAGE_SIZE;
                let addr = lo + frame % span * PAGE_SIZE + offset;
                self.free(cpu, addr, 0)?;
            }
            Op::Exhaust { cpu } => {
                let managed = self.buddy.stats().managed_frames;
                // Each failure that is not the end catches one scribbled frame.
                for _ in 0..=managed + self.model.dirty.len() as u64 + 8 {
                    if self.alloc(cpu, Request::new(0, Owner::Test))?.is_none()
                        && self.caches.iter().all(CpuCache::is_empty)
                        && self.buddy.stats().free_frames == 0
                    {
                        break;
                    }
                }
                prop_assert_eq!(self.model.live_frames(), managed, "exhaustion took all");
            }
            Op::Drain { cpu } => self.drain(cpu),
            Op::Scribble { pick, offset } => {
                if self.setup.poisoning {
                    let frames: Vec<u64> = self
                        .usable
                        .iter()
                        .flat_map(|r| (r.base.as_u64()..r.end()).step_by(PAGE_SIZE as usize))
                        .filter(|&a| self.model.live_at(a).is_none())
                        .collect();
                    if !frames.is_empty() {
                        let a = frames[(pick % frames.len() as u64) as usize];
                        self.mem.write(PhysAddr::new(a + offset), !POISON);
                        self.model.dirty.insert(a);
                    }
                }
            }
        }
        self.refresh_dirty();
        self.check()
    }
}

/// Any owner but the caches' own (the buddy counts it for the caches alone).
fn non_cache_owner(i: usize) -> Owner {
    match Owner::ALL[i % Owner::COUNT] {
        Owner::FrameCache => Owner::Test,
        o => o,
    }
}

fn run(setup: &Setup, ops: &[Op], finish_order: &[usize]) -> Result<(), TestCaseError> {
    let usable = setup.usable();
    let ram = setup.ram();
    let layout = Layout::new(&usable).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let buddy = Buddy::new(&pages, &layout, &[ram]).unwrap();
    let states = FrameStates::new(&layout, &pages).unwrap();
    let caches = setup
        .caches
        .iter()
        .enumerate()
        .map(|(i, &(high, batch))| CpuCache::new(i as u8, Limits { high, batch }).unwrap())
        .collect();
    let mut w = World {
        setup,
        buddy,
        states,
        caches,
        mem: TestMemory::default(),
        model: Model::default(),
        usable,
        ram,
    };
    if setup.poisoning {
        pcp::set_poisoning(&w.states, &mut w.buddy, true, &mut w.mem);
    }
    let initial = w.snapshot().free;
    w.check()?;
    for op in ops {
        w.apply(op)?;
    }
    // Free everything, on random caches, then give every cached frame back.
    let mut i = 0;
    while let Some((&addr, &(order, ..))) = w
        .model
        .live
        .iter()
        .nth(finish_order.get(i).copied().unwrap_or(0) % w.model.live.len().max(1))
    {
        w.free(finish_order.get(i).copied().unwrap_or(i), addr, order)?;
        w.check()?;
        i += 1;
    }
    w.drain(0);
    w.check()?;
    prop_assert!(w.caches.iter().all(CpuCache::is_empty));
    let stats = w.buddy.stats();
    prop_assert_eq!(stats.free_frames, stats.managed_frames);
    prop_assert_eq!(stats.allocated_frames(), 0);
    prop_assert_eq!(
        w.snapshot().free,
        initial,
        "the free blocks are the initial ones"
    );
    let mut total = pcp::CacheStats::default();
    for c in &w.caches {
        total += c.stats();
    }
    prop_assert_eq!(total.handed_out_total(), 0);
    prop_assert_eq!(total.conflicts, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn caches_in_front_of_the_buddy_match_the_model(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..160),
        finish_order in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        run(&setup, &ops, &finish_order)?;
    }
}
