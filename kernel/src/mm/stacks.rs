//! Kernel stacks from buddy frames, each mapped in the stack region above an unmapped guard
//! page, so an overflow faults (on the exception stack) and the report names the stack.

use super::{frames, paging};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use levitate_hal::arch::aarch64::mmu::{Attributes, MapError};
use levitate_hal::layout::STACKS_BASE;
use levitate_hal::stacks::{self, StackInfo};
use levitate_hal::VirtAddr;
use levitate_mm::addr::PAGE_SIZE;
use levitate_mm::buddy::{AllocError, Owner, Request};

/// Each stack gets a slot this large in the stack region (stack + guard fit in it).
const SLOT: u64 = 1 << 21;
/// Guard pages below each stack.
const GUARD: u64 = PAGE_SIZE;

static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);

/// Why a stack could not be made.
#[derive(Debug)]
pub enum StackError {
    /// No frames.
    Frames(AllocError),
    /// Mapping failed.
    Map(MapError),
    /// The size does not fit a slot or is not a power-of-two number of pages.
    BadSize(u64),
    /// The stack registry is full.
    RegistryFull,
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frames(e) => write!(f, "no frames for a kernel stack: {e}"),
            Self::Map(e) => write!(f, "cannot map a kernel stack: {e}"),
            Self::BadSize(s) => write!(f, "bad kernel stack size {s:#x}"),
            Self::RegistryFull => write!(f, "the stack registry is full"),
        }
    }
}

/// A kernel stack. Stacks live as long as what runs on them; today they are never freed.
#[derive(Clone, Copy, Debug)]
pub struct KernelStack {
    /// Lowest usable address.
    pub bottom: u64,
    /// One past the highest usable address (the initial stack pointer).
    pub top: u64,
}

/// Allocates and maps a stack of `bytes` (a power-of-two number of pages, at most 1 MiB).
pub fn new(name: &'static str, bytes: u64) -> Result<KernelStack, StackError> {
    let pages = bytes / PAGE_SIZE;
    if !pages.is_power_of_two() || !bytes.is_multiple_of(PAGE_SIZE) || bytes + GUARD > SLOT {
        return Err(StackError::BadSize(bytes));
    }
    let order = pages.trailing_zeros() as u8;
    let block = frames::alloc(Request::new(order, Owner::Stack)).map_err(StackError::Frames)?;
    let slot = STACKS_BASE + NEXT_SLOT.fetch_add(1, Ordering::Relaxed) * SLOT;
    // [slot, slot + GUARD) stays unmapped: the guard.
    let bottom = slot + GUARD;
    if let Err(e) = paging::map(
        VirtAddr::new(bottom),
        block.addr,
        bytes,
        Attributes::KERNEL_DATA,
    ) {
        let _ = frames::free(block);
        return Err(StackError::Map(e));
    }
    let stack = KernelStack {
        bottom,
        top: bottom + bytes,
    };
    stacks::register(StackInfo {
        name,
        stack: stack.bottom..stack.top,
        guard: slot..bottom,
    })
    .map_err(|_| StackError::RegistryFull)?;
    Ok(stack)
}

levitate_hal::ktest!(
    fn stacks_have_unmapped_guards() -> KtestResult {
        let s = new("ktest", 4 * PAGE_SIZE);
        levitate_hal::kassert!(s.is_ok());
        let s = s.unwrap();
        levitate_hal::kassert!(paging::translate(VirtAddr::new(s.bottom)).is_some());
        levitate_hal::kassert!(paging::translate(VirtAddr::new(s.top - 8)).is_some());
        levitate_hal::kassert!(
            paging::translate(VirtAddr::new(s.bottom - 8)).is_none(),
            "guard page mapped"
        );
        levitate_hal::kassert_eq!(
            stacks::guard_hit(s.bottom - 8).map(|i| i.name),
            Some("ktest")
        );
        levitate_hal::kassert!(new("bad", 3 * PAGE_SIZE).is_err());
        // The kernel itself runs on a stack from frames.
        let fp = levitate_hal::arch::aarch64::cpu::frame_pointer();
        levitate_hal::kassert!(
            (STACKS_BASE..STACKS_BASE + (1 << 40)).contains(&fp),
            "not running on a frame-backed stack"
        );
        Ok(())
    }
);
