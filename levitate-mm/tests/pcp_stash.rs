//! One CPU's stash (`pcp::HotCache`) on one thread, against what the caller can see: which
//! frames it stacks (a slot holds a 32-bit frame number, so frames from 16 TiB up must go to
//! the ring), and the counters it derives from its per-owner pop and push counts.

use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{AllocError, Buddy, FrameMemory, FreeError, Owner, Request};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::pcp::{
    self, BuddyAccess, CacheAccess, CpuCache, FrameState, FrameStates, HoldFor, HotCache, Limits,
};
use levitate_mm::region::Region;

/// Frame contents are not simulated.
struct NoMemory;

impl FrameMemory for NoMemory {
    fn fill(&mut self, _first: Pfn, _frames: u64, _byte: u8) {}
    fn find_not(&self, _first: Pfn, _frames: u64, _byte: u8) -> Option<PhysAddr> {
        None
    }
}

/// The one CPU: its ring and its stash, nobody else; counts the ring's lock acquisitions.
struct OneCpu<'a> {
    ring: &'a mut CpuCache,
    hot: &'a HotCache,
    locks: &'a mut u32,
}

impl CacheAccess for OneCpu<'_> {
    fn with_local<R>(&mut self, f: impl FnOnce(&mut CpuCache) -> R) -> R {
        *self.locks += 1;
        f(self.ring)
    }

    fn with_hot<R>(&mut self, f: impl FnOnce(&HotCache) -> R) -> Option<R> {
        Some(f(self.hot))
    }

    fn with_local_hot<R>(&mut self, f: impl FnOnce(Option<&HotCache>, &mut CpuCache) -> R) -> R {
        *self.locks += 1;
        f(Some(self.hot), self.ring)
    }

    fn for_each_cache(&mut self, mut f: impl FnMut(&mut CpuCache)) {
        f(self.ring)
    }

    /// The only stash is the caller's own: answered on the spot.
    fn hold_stashes(
        &mut self,
        _why: HoldFor,
        serve: &mut dyn FnMut(&HotCache, &mut CpuCache),
    ) -> bool {
        self.hot.request_hold();
        serve(self.hot, self.ring);
        true
    }

    fn release_stashes(&mut self) {
        self.hot.release_hold();
    }
}

struct Buddied<'a, 'm>(&'a mut Buddy<'m>);

impl BuddyAccess for Buddied<'_, '_> {
    fn with_buddy<R>(&mut self, f: impl FnOnce(&mut Buddy<'_>) -> R) -> R {
        f(self.0)
    }
}

/// One CPU's ring and stash over a buddy: the allocator under test.
struct One<'m> {
    buddy: Buddy<'m>,
    states: FrameStates<'m>,
    ring: CpuCache,
    hot: HotCache,
    /// Times the ring was locked.
    locks: u32,
}

impl<'m> One<'m> {
    fn new(layout: &'m Layout, pages: &'m [Page], ram: &[Region]) -> Self {
        Self {
            buddy: Buddy::new(pages, layout, ram).unwrap(),
            states: FrameStates::new(layout, pages).unwrap(),
            ring: CpuCache::new(0, Limits::DEFAULT).unwrap(),
            hot: HotCache::new(0),
            locks: 0,
        }
    }

    fn cpu(&mut self) -> (OneCpu<'_>, &FrameStates<'m>, Buddied<'_, 'm>) {
        let cpu = OneCpu {
            ring: &mut self.ring,
            hot: &self.hot,
            locks: &mut self.locks,
        };
        (cpu, &self.states, Buddied(&mut self.buddy))
    }

    fn alloc(&mut self, owner: Owner) -> Result<PhysAddr, AllocError> {
        let (mut cpu, states, mut buddy) = self.cpu();
        let req = Request::new(0, owner);
        pcp::alloc(&mut cpu, states, &mut buddy, req, &mut NoMemory).map(|b| b.addr)
    }

    fn free(&mut self, addr: PhysAddr) -> Result<Owner, FreeError> {
        let (mut cpu, states, mut buddy) = self.cpu();
        pcp::free(&mut cpu, states, &mut buddy, addr, 0, &mut NoMemory)
    }

    fn drain(&mut self) {
        let (mut cpu, states, mut buddy) = self.cpu();
        pcp::drain_all(&mut cpu, states, &mut buddy, &mut NoMemory);
    }

    fn validate(&self) {
        pcp::validate(&[&self.ring], &[&self.hot], &self.states, &self.buddy).unwrap();
    }
}

/// 1 MiB of RAM at 0x4000_0000 (as on QEMU virt), its layout and an empty mem_map for it.
fn flat_ram() -> (Region, Layout, Vec<Page>) {
    let base = 0x4000_0000;
    let ram = Region::from_bounds(base, base + 256 * PAGE_SIZE);
    let layout = Layout::new(&[ram]).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    (ram, layout, pages)
}

/// 512 frames of RAM starting 256 frames below 16 TiB, so half the frame numbers need 33
/// bits.
fn ram_across_16_tib() -> Region {
    let at = (1u64 << 44) - 256 * PAGE_SIZE;
    Region::from_bounds(at, at + 512 * PAGE_SIZE)
}

#[test]
fn frames_from_16_tib_up_are_parked_in_the_ring_not_the_stash() {
    let ram = ram_across_16_tib();
    let layout = Layout::new(&[ram]).unwrap();
    let pages = vec![Page::new(); layout.frames() as usize];
    let mut one = One::new(&layout, &pages, &[ram]);
    let total = one.buddy.stats().free_frames;

    // Everything, one frame at a time through the caches: every frame handed out once.
    let mut held = Vec::new();
    while let Ok(addr) = one.alloc(Owner::Test) {
        held.push(addr);
    }
    assert_eq!(held.len() as u64, total);
    let mut sorted = held.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), held.len(), "a frame was handed out twice");
    assert!(sorted.iter().all(|a| ram.contains(a.as_u64())));

    // Free them one at a time: a frame below 16 TiB lands in the stash, one above in the
    // ring (the stash's length tells which; it never holds more than its capacity).
    let (mut stashed, mut ringed) = (0, 0);
    for &addr in &held {
        let before = one.hot.len();
        assert_eq!(one.free(addr), Ok(Owner::Test));
        assert!(matches!(
            one.states.get(addr.pfn()),
            Some(FrameState::Parked { cache: 0, .. }) | Some(FrameState::Buddy)
        ));
        let high = addr.pfn().as_u64() > u64::from(u32::MAX);
        if one.hot.len() > before {
            assert!(!high, "{addr:?} (above 16 TiB) was stashed");
            stashed += 1;
        } else if high {
            ringed += 1;
        }
    }
    assert!(
        stashed > 0 && ringed > 0,
        "stashed {stashed}, ringed {ringed}"
    );
    one.validate();

    // And they come back out of the stash and the ring with their own addresses.
    let again: Vec<_> = (0..64).map(|_| one.alloc(Owner::Test).unwrap()).collect();
    assert!(again.iter().all(|a| ram.contains(a.as_u64())));
    for addr in again {
        one.free(addr).unwrap();
    }
    one.drain();
    assert_eq!(one.buddy.stats().free_frames, total, "frames lost");
    one.validate();
}

#[test]
fn the_stash_counts_hits_frees_and_frames_out_per_owner() {
    let (ram, layout, pages) = flat_ram();
    let mut one = One::new(&layout, &pages, &[ram]);

    // Warm: the first allocation refills the stash through the ring.
    let first = one.alloc(Owner::Test).unwrap();
    one.free(first).unwrap();
    let start = one.hot.stats();

    let owners = [
        Owner::Heap,
        Owner::Heap,
        Owner::Heap,
        Owner::PageTable,
        Owner::PageTable,
    ];
    let out: Vec<_> = owners.iter().map(|&o| one.alloc(o).unwrap()).collect();
    // One heap frame and one page-table frame back.
    for addr in [out[0], out[3]] {
        one.free(addr).unwrap();
    }
    let s = one.hot.stats();
    assert_eq!(s.hits - start.hits, 5);
    assert_eq!(s.frees - start.frees, 2);
    assert_eq!(s.handed_out_to(Owner::Heap), 2);
    assert_eq!(s.handed_out_to(Owner::PageTable), 1);
    assert_eq!(s.handed_out_to(Owner::Test), 0);
    assert_eq!(s.handed_out_total(), 3);
    one.validate();
}

#[test]
fn a_free_in_another_section_takes_the_ring_once_then_the_stash() {
    // Two sections with a reserved hole between them.
    let base = 0x4000_0000;
    let a = Region::from_bounds(base, base + 64 * PAGE_SIZE);
    let b = Region::from_bounds(base + 80 * PAGE_SIZE, base + 144 * PAGE_SIZE);
    let layout = Layout::new(&[a, b]).unwrap();
    assert_eq!(layout.sections().len(), 2);
    let pages = vec![Page::new(); layout.frames() as usize];
    let mut one = One::new(&layout, &pages, &[a, b]);
    let mut held = Vec::new();
    while let Ok(addr) = one.alloc(Owner::Test) {
        held.push(addr);
    }
    let in_a: Vec<_> = held.iter().filter(|x| a.contains(x.as_u64())).collect();
    let in_b: Vec<_> = held.iter().filter(|x| b.contains(x.as_u64())).collect();
    assert!(in_a.len() >= 2 && in_b.len() >= 2);
    // Each free: (address, whether it locks the ring).
    for (addr, locks) in [
        (in_a[0], 1),
        (in_a[1], 0),
        (in_b[0], 1),
        (in_b[1], 0),
        (in_a[2], 1),
    ] {
        let before = one.locks;
        assert_eq!(one.free(*addr), Ok(Owner::Test));
        assert_eq!(one.locks - before, locks, "free of {addr:?}");
    }
    one.validate();
}

#[test]
fn a_frame_whose_owner_byte_is_corrupt_is_refused_and_left_as_it_was() {
    let (ram, layout, pages) = flat_ram();
    let mut one = One::new(&layout, &pages, &[ram]);
    let x = one.alloc(Owner::Heap).unwrap();
    let y = one.alloc(Owner::Heap).unwrap();
    // Warm the stash's section hint: the next frees take the stash.
    one.free(y).unwrap();
    let page = &pages[layout.index_of(x.pfn()).unwrap() as usize];
    let before = one.hot.stats();

    // A stray write over the owner byte of a handed-out frame: the stash's swap wins the state
    // byte, finds no owner, and puts it back; the locked path then names the frame as lost.
    page.cache_owner()
        .store(Owner::COUNT as u8, core::sync::atomic::Ordering::Relaxed);
    assert!(matches!(
        one.free(x),
        Err(FreeError::NeverAllocated { addr, order: 0, .. }) if addr == x
    ));
    assert_eq!(
        one.states.get(x.pfn()),
        Some(FrameState::InvalidOwner(Owner::COUNT as u8))
    );
    let after = one.hot.stats();
    assert_eq!(
        (after.frees, after.handed_out_to(Owner::Heap)),
        (before.frees, before.handed_out_to(Owner::Heap))
    );
    assert!(pcp::validate(&[&one.ring], &[&one.hot], &one.states, &one.buddy).is_err());

    // Repaired, the same free succeeds and is counted against the right owner.
    page.cache_owner()
        .store(Owner::Heap as u8, core::sync::atomic::Ordering::Relaxed);
    assert_eq!(one.free(x), Ok(Owner::Heap));
    assert_eq!(one.hot.stats().handed_out_to(Owner::Heap), 0);
    one.validate();
}

#[test]
fn a_stashed_frame_whose_byte_changed_is_skipped_never_handed_out() {
    let (ram, layout, pages) = flat_ram();
    let mut one = One::new(&layout, &pages, &[ram]);
    let x = one.alloc(Owner::Heap).unwrap();
    let y = one.alloc(Owner::Heap).unwrap();
    one.free(y).unwrap();
    one.free(x).unwrap();
    // x is on top of the stash; a stray write (or a free behind the caches' back) leaves
    // its byte saying something else than "parked here".
    let page = &pages[layout.index_of(x.pfn()).unwrap() as usize];
    let parked = page
        .cache_state()
        .load(core::sync::atomic::Ordering::Relaxed);
    page.cache_state()
        .store(0, core::sync::atomic::Ordering::Relaxed);
    let conflicts = one.hot.stats().conflicts;

    // The pop drops x from the stash, counts the conflict and hands out the next frame.
    let got = one.alloc(Owner::Test).unwrap();
    assert_eq!(got, y);
    assert_eq!(one.hot.stats().conflicts, conflicts + 1);
    // x's byte is left as the stray write made it (the pop does not write it), and x is no
    // longer stashed: the stash's next pop is not x either.
    assert_eq!(
        page.cache_state()
            .load(core::sync::atomic::Ordering::Relaxed),
        0
    );
    let next = one.alloc(Owner::Test).unwrap();
    assert_ne!(next, x);
    assert_ne!(parked, 0);
}
