//! The kernel's frame allocator: the buddy allocator (levitate-mm) over the mem_map, behind one
//! lock, with the kernel's side of its contract: memory access through the linear map (zeroing
//! and poisoning), and misuse logged with the caller's location.

use crate::memory;
use core::panic::Location;
use levitate_mm::addr::{Pfn, PhysAddr, PAGE_SIZE};
use levitate_mm::buddy::{
    AllocError, Block, Buddy, BuddyError, FrameMemory, FreeError, Owner, Request, Stats, Violation,
};
use levitate_mm::mem_map::{Layout, Page};
use levitate_mm::region::Region;
use spin::Mutex;

/// Interrupts are masked whenever the kernel runs today and no interrupt handler allocates,
/// so holding this lock cannot deadlock against an interrupt; other CPUs (later) wait. Lock
/// order: heap, then page tables, then this.
static BUDDY: Mutex<Option<Buddy<'static>>> = Mutex::new(None);

/// Frame contents through the linear map.
pub struct LinearMemory;

impl FrameMemory for LinearMemory {
    fn fill(&mut self, first: Pfn, frames: u64, byte: u8) {
        let bytes = (frames * PAGE_SIZE) as usize;
        // SAFETY: the buddy only passes frames it manages: usable RAM, mapped read-write in
        // the linear map, that belong to the block being zeroed or poisoned (nobody else holds
        // them at this moment).
        unsafe { core::ptr::write_bytes(memory::linear(first.addr()), byte, bytes) };
    }

    fn find_not(&self, first: Pfn, frames: u64, byte: u8) -> Option<PhysAddr> {
        let bytes = (frames * PAGE_SIZE) as usize;
        // SAFETY: as for `fill`: managed, mapped frames of a free block, read only.
        let data = unsafe { core::slice::from_raw_parts(memory::linear(first.addr()), bytes) };
        let words = data.len() / 8;
        let pattern = u64::from_ne_bytes([byte; 8]);
        // Word compares first (the common case is a match), then the exact byte.
        let word = data
            .chunks_exact(8)
            .take(words)
            .position(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])) != pattern)?;
        let at = word * 8
            + data[word * 8..]
                .iter()
                .position(|&b| b != byte)
                .unwrap_or(0);
        Some(first.addr() + at as u64)
    }
}

/// Builds the buddy over the mem_map. Poisoning starts on when asked (feature `poison` or the
/// `poison` boot argument).
pub fn init(
    pages: &'static mut [Page],
    layout: &'static Layout,
    ram: &[Region],
    poison: bool,
) -> Result<(), BuddyError> {
    let mut buddy = Buddy::new(pages, layout, ram)?;
    if poison {
        buddy.set_poisoning(true, &mut LinearMemory);
    }
    *BUDDY.lock() = Some(buddy);
    Ok(())
}

/// Runs `f` on the allocator. Panics if called before `init` (a boot-order bug).
pub fn with<R>(f: impl FnOnce(&mut Buddy<'static>) -> R) -> R {
    let mut guard = BUDDY.lock();
    f(guard
        .as_mut()
        .expect("boot order invariant: frames::init runs before any frame allocation"))
}

/// Allocates a block.
#[track_caller]
pub fn alloc(req: Request) -> Result<Block, AllocError> {
    let caller = Location::caller();
    let (result, free, managed) = with(|b| {
        let r = b.alloc(req, &mut LinearMemory);
        let s = b.stats();
        (r, s.free_frames, s.managed_frames)
    });
    if let Err(e @ AllocError::UseAfterFree { .. }) = &result {
        log::error!("frame allocator: {e} (allocation from {caller})");
    }
    crate::pressure::update(free, managed);
    result
}

/// Frames parked in per-CPU caches are given back to the buddy (none exist yet: the caches
/// come with the per-CPU layer). Returns the frames drained.
pub fn drain_caches() -> u64 {
    0
}

/// Frees a block.
#[track_caller]
pub fn free(block: Block) -> Result<Owner, FreeError> {
    free_raw(block.addr, block.order)
}

/// Frees the block of 2^`order` frames at `addr` (for callers that keep addresses, like page
/// tables). Misuse is refused by the allocator, logged here with the caller, and counted.
#[track_caller]
pub fn free_raw(addr: PhysAddr, order: u8) -> Result<Owner, FreeError> {
    let caller = Location::caller();
    let (result, free, managed) = with(|b| {
        let r = b.free(addr, order, &mut LinearMemory);
        let s = b.stats();
        (r, s.free_frames, s.managed_frames)
    });
    if let Err(e) = &result {
        log::error!("frame allocator refused a free: {e} (caller {caller})");
    }
    crate::pressure::update(free, managed);
    result
}

/// Current statistics, once the allocator exists.
pub fn stats() -> Option<Stats> {
    BUDDY.lock().as_ref().map(|b| b.stats())
}

/// Runs the allocator's invariant checker.
pub fn validate() -> Result<(), Violation> {
    with(|b| b.validate())
}

levitate_hal::ktest!(
    fn misuse_is_refused_logged_and_harmless() -> KtestResult {
        let before = stats().unwrap();
        let block = alloc(Request::new(0, Owner::Test));
        levitate_hal::kassert!(block.is_ok());
        let block = block.unwrap();
        let addr = block.addr;
        levitate_hal::kassert!(free_raw(addr, 1).is_err(), "wrong order accepted");
        levitate_hal::kassert!(
            free_raw(addr + 8, 0).is_err(),
            "misaligned address accepted"
        );
        levitate_hal::kassert!(free(block).is_ok());
        levitate_hal::kassert!(free_raw(addr, 0).is_err(), "double free accepted");
        levitate_hal::kassert!(
            free_raw(PhysAddr::new(0x10), 0).is_err(),
            "address outside RAM accepted"
        );
        let after = stats().unwrap();
        levitate_hal::kassert_eq!(after.free_frames, before.free_frames);
        levitate_hal::kassert_eq!(after.misuse.total(), before.misuse.total() + 4);
        levitate_hal::kassert!(validate().is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn zeroed_blocks_read_zero_and_limits_hold() -> KtestResult {
        let block = alloc(Request::new(2, Owner::Test).zeroed());
        levitate_hal::kassert!(block.is_ok());
        let block = block.unwrap();
        levitate_hal::kassert_eq!(LinearMemory.find_not(block.pfn(), 4, 0), None);
        let low = alloc(Request::new(0, Owner::Test).below(PhysAddr::new(1 << 32)));
        levitate_hal::kassert!(low.as_ref().is_ok_and(|b| b.addr.as_u64() < 1 << 32));
        levitate_hal::kassert!(free(block).is_ok());
        levitate_hal::kassert!(free(low.unwrap()).is_ok());
        levitate_hal::kassert!(validate().is_ok());
        Ok(())
    }
);

levitate_hal::ktest!(
    fn poisoning_catches_a_write_after_free() -> KtestResult {
        if !stats().unwrap().poisoning {
            return Ok(()); // only meaningful in the `poison` boot of the matrix
        }
        let block = alloc(Request::new(0, Owner::Test)).unwrap();
        let addr = block.addr;
        levitate_hal::kassert!(free(block).is_ok());
        // A use after free: write into the freed frame.
        // SAFETY: deliberately writing a free frame (mapped in the linear map) to check that
        // poisoning notices; the poison is restored below.
        unsafe { memory::linear(addr + 0x40).write_volatile(0x11) };
        let found = with(|b| b.find_use_after_free(&LinearMemory));
        LinearMemory.fill(addr.pfn(), 1, levitate_mm::buddy::POISON);
        levitate_hal::kassert!(
            matches!(found, Some(AllocError::UseAfterFree { addr: a, .. }) if a == addr + 0x40),
            "the write after free was not found at its address"
        );
        levitate_hal::kassert!(with(|b| b.find_use_after_free(&LinearMemory)).is_none());
        Ok(())
    }
);
