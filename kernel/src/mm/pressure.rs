//! Memory pressure: watermarks on the share of managed frames in use give a level (low below
//! 60 %, medium, high from 80 %, critical from 95 %), shown in `meminfo` and logged when it
//! changes; a level drops only 2 points below its watermark, so usage hovering there does not
//! flap. When the level rises to high or critical the kernel reclaims: it drains the per-CPU
//! frame caches and gives wholly free heap segments back to the buddy. The reclaim runs at the
//! frame allocator's front, after an operation, never inside a cache refill (it takes every
//! cache's lock); its heap part only try-locks the heap and page tables and is retried later
//! when they are busy.
//!
//! This is policy on top of the mechanism: it calls `frames` and `heap`, never the reverse.
//! The frame allocator reaches it only through the hooks `init` registers (`mm::hooks`).
//!
//! Interrupt safety: the level and the flags below are atomics, not locks, so `update` may run
//! under any frame-allocator lock and in an interrupt handler. `reclaim` takes the frame locks
//! one at a time (all `IrqSafeMutex`es, IRQ+FIQ masked while held) and only try-locks the heap
//! and page tables; `RECLAIMING` keeps a second CPU, or a handler interrupting a reclaim on its
//! own CPU, from starting another one (it skips instead of waiting).

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// A pressure level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Below 60 % used.
    Low = 0,
    /// 60 % to 80 %.
    Medium = 1,
    /// 80 % to 95 %: reclaim.
    High = 2,
    /// 95 % and more: reclaim.
    Critical = 3,
}

impl Level {
    /// The level for `used` of `managed` frames.
    pub fn of(used: u64, managed: u64) -> Level {
        let permille = (used * 1000).checked_div(managed).unwrap_or(1000);
        match permille {
            0..600 => Level::Low,
            600..800 => Level::Medium,
            800..950 => Level::High,
            _ => Level::Critical,
        }
    }

    /// The used share (in thousandths) at which this level starts.
    fn threshold(self) -> u64 {
        match self {
            Level::Low => 0,
            Level::Medium => 600,
            Level::High => 800,
            Level::Critical => 950,
        }
    }

    /// The level after `old` for `used` of `managed` frames: rising happens at the watermark,
    /// falling only 2 points below it, so usage hovering at a watermark does not flap the
    /// level (and reclaim on every cache refill).
    pub fn next(old: Level, used: u64, managed: u64) -> Level {
        let new = Level::of(used, managed);
        if new >= old {
            return new;
        }
        let permille = (used * 1000).checked_div(managed).unwrap_or(1000);
        if permille + HYSTERESIS >= old.threshold() {
            old
        } else {
            new
        }
    }

    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Low,
            1 => Level::Medium,
            2 => Level::High,
            _ => Level::Critical,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// How far (in thousandths) usage must fall below a watermark before the level drops.
const HYSTERESIS: u64 = 20;

static LEVEL: AtomicU8 = AtomicU8::new(Level::Low as u8);
/// Set while one CPU reclaims, so others do not pile in.
static RECLAIMING: AtomicBool = AtomicBool::new(false);
// Whether a reclaim is due (the level rose to high or critical, or a reclaim found the heap or
// page tables busy: the next frame operation that holds no allocator lock reclaims) is
// `hooks::due`: the frame allocator's front then calls `reclaim_if_due` after each operation,
// and otherwise not at all.

/// Registers the watermarks and reclaim with the frame allocator. Called once at boot,
/// before the frame allocator starts (`memory::init`).
pub fn init() {
    super::hooks::register(super::hooks::Hooks {
        usage: update,
        after_op: reclaim_if_due,
    });
}

/// The current level.
pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// Updates the level from fresh figures and logs a change; a rise to high or critical makes a
/// reclaim due. The frame allocator calls it (`hooks::usage`) after each use of the buddy,
/// possibly while a per-CPU cache or the bitmap layer is locked, so it must not reclaim itself
/// (draining takes every cache lock).
fn update(free: u64, managed: u64) {
    let used = managed.saturating_sub(free);
    let old = level();
    let new = Level::next(old, used, managed);
    LEVEL.store(new as u8, Ordering::Relaxed);
    if new != old {
        let pct = (used * 100).checked_div(managed).unwrap_or(100);
        if new > old {
            log::warn!(
                "memory pressure {} ({pct}% of managed memory in use)",
                new.as_str()
            );
        } else {
            log::info!("memory pressure back to {} ({pct}% in use)", new.as_str());
        }
    }
    if new >= Level::High && new > old {
        super::hooks::set_due();
    }
}

/// Reclaims if due and the level is still high. The frame allocator's front calls it
/// (`hooks::after_op`) after an operation, when it holds none of its own locks (its caller may
/// hold the heap or page-table lock: the heap part of the reclaim only try-locks those).
fn reclaim_if_due() {
    // The flag is cleared only by the CPU that goes on to reclaim: a rise that set it just
    // before the clear is covered by that reclaim. (Clearing it when the level had fallen
    // lost a rise on another CPU between the level's read and the clear; the flag then
    // stays set, and this check runs after each operation, until a reclaim.)
    if !super::hooks::due() || level() < Level::High {
        return;
    }
    if !RECLAIMING.swap(true, Ordering::Acquire) {
        super::hooks::clear_due();
        reclaim();
        RECLAIMING.store(false, Ordering::Release);
    }
}

/// Gives back what the kernel holds but does not use: the per-CPU caches' frames and wholly
/// free heap segments. Returns (frames drained, heap bytes released).
pub fn reclaim() -> (u64, usize) {
    let drained = super::frames::drain_caches();
    let heap = match super::heap::try_reclaim() {
        Some(bytes) => bytes,
        None => {
            super::hooks::set_due();
            0
        }
    };
    if drained > 0 || heap > 0 {
        log::info!(
            "reclaim: {drained} frames from the per-CPU caches, {heap} bytes of free heap segments"
        );
    }
    (drained, heap)
}

levitate_hal::ktest!(
    fn levels_follow_the_watermarks() -> KtestResult {
        levitate_hal::kassert_eq!(Level::of(0, 100), Level::Low);
        levitate_hal::kassert_eq!(Level::of(59, 100), Level::Low);
        levitate_hal::kassert_eq!(Level::of(60, 100), Level::Medium);
        levitate_hal::kassert_eq!(Level::of(80, 100), Level::High);
        levitate_hal::kassert_eq!(Level::of(95, 100), Level::Critical);
        levitate_hal::kassert_eq!(Level::of(1, 0), Level::Critical);
        // Falling needs 2 points below the watermark.
        levitate_hal::kassert_eq!(Level::next(Level::High, 790, 1000), Level::High);
        levitate_hal::kassert_eq!(Level::next(Level::High, 779, 1000), Level::Medium);
        levitate_hal::kassert_eq!(Level::next(Level::Medium, 810, 1000), Level::High);
        levitate_hal::kassert_eq!(Level::next(Level::Critical, 10, 1000), Level::Low);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn high_pressure_reclaims_free_heap_memory() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        use levitate_mm::buddy::{Owner, Request};
        // Room for every block we will hold, reserved first so no later push uses the heap.
        let mut held = Vec::new();
        levitate_hal::kassert!(held.try_reserve_exact(8192).is_ok());
        // Empty slab pages the heap keeps mapped at low pressure (its idle reserve): 100 pages
        // of 2 KiB objects, all freed.
        let objects: Vec<alloc::boxed::Box<[u8; 2048]>> = (0..200)
            .map(|_| alloc::boxed::Box::new([7; 2048]))
            .collect();
        drop(objects);
        let before = super::heap::stats();
        levitate_hal::kassert!(before.empty_slab_pages > 0, "no empty slab page kept");
        // Push usage past 80 % with 2 MiB blocks.
        while level() < Level::High && held.len() < held.capacity() {
            match super::frames::alloc(Request::new(9, Owner::Test)) {
                Ok(block) => held.push(block),
                Err(_) => break,
            }
        }
        let reached = level();
        let after = super::heap::stats();
        // Give everything back before judging, so a failure leaves memory as it was.
        let mut freed = true;
        for block in held {
            freed &= super::frames::free(block).is_ok();
        }
        levitate_hal::kassert!(freed);
        levitate_hal::kassert!(reached >= Level::High, "could not reach high pressure");
        levitate_hal::kassert!(
            after.released_pages > before.released_pages,
            "no empty slab page was given back"
        );
        levitate_hal::kassert!(after.size < before.size);
        levitate_hal::kassert_eq!(level(), Level::Low);
        Ok(())
    }
);

levitate_hal::ktest!(
    fn reaching_high_pressure_through_cache_refills_reclaims_without_deadlock() -> KtestResult {
        extern crate alloc;
        use alloc::vec::Vec;
        use levitate_mm::buddy::{Owner, Request};
        let mut held = Vec::new();
        levitate_hal::kassert!(held.try_reserve_exact(40_000).is_ok());
        // Close to the high watermark with 2 MiB blocks, then over it with single frames, so
        // the level rises inside a per-CPU cache refill (which holds the cache's lock).
        loop {
            let s = super::frames::stats().unwrap();
            let used = s.managed_frames - s.free_frames + 512;
            if used * 1000 / s.managed_frames >= 790 || held.len() == held.capacity() {
                break;
            }
            match super::frames::alloc(Request::new(9, Owner::Test)) {
                Ok(b) => held.push(b),
                Err(_) => break,
            }
        }
        while level() < Level::High && held.len() < held.capacity() {
            match super::frames::alloc(Request::new(0, Owner::Test)) {
                Ok(b) => held.push(b),
                Err(_) => break,
            }
        }
        let reached = level();
        let parked = super::frames::cache_stats().1;
        let mut freed = true;
        for b in held {
            freed &= super::frames::free(b).is_ok();
        }
        levitate_hal::kassert!(freed);
        levitate_hal::kassert!(reached >= Level::High, "could not reach high pressure");
        // The reclaim drained the caches (at most the refill that followed it is parked).
        levitate_hal::kassert!(parked <= 64, "the caches were not drained at high pressure");
        levitate_hal::kassert!(super::frames::validate().is_ok());
        Ok(())
    }
);
