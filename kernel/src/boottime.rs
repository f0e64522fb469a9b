//! Where boot time goes: the counter (CNTPCT_EL0) when boot.S got control, and when each boot
//! phase ended, shown by the shell's `boottime` and logged once when the shell starts. What is
//! not counted: everything before the kernel's first instruction (QEMU starting up and
//! loading the image, or a phone's bootloader). The counter itself starts before the kernel
//! (on QEMU when the machine is created), so its value at entry is reported too.
//!
//! Below every other module (it uses only the HAL's timer), so any of them may mark a phase.
//! Marks are atomics written once each by the boot CPU and read by anyone: no lock, callable
//! from any context.

use core::sync::atomic::{AtomicU64, Ordering};
use levitate_hal::arch::aarch64::timer;

/// A boot phase, in the order boot runs them. Each is marked when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Phase {
    /// Early mapper, device tree checked, console and logger up.
    Early,
    /// The memory map built from the device tree.
    MemoryMap,
    /// The linear map of RAM, the frame state bytes and the mem_map placed.
    MemMap,
    /// The buddy over the mem_map and the per-CPU caches ready.
    Buddy,
    /// The final page tables built and live.
    Paging,
    /// The heap may grow from frames.
    Heap,
    /// Initramfs, interrupts and the tick, secondary CPUs started.
    Smp,
    /// The shell's first prompt.
    Shell,
}

impl Phase {
    /// Every phase, in boot order.
    pub const ALL: [Phase; 8] = [
        Phase::Early,
        Phase::MemoryMap,
        Phase::MemMap,
        Phase::Buddy,
        Phase::Paging,
        Phase::Heap,
        Phase::Smp,
        Phase::Shell,
    ];

    /// The name `boottime` prints.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Early => "early",
            Phase::MemoryMap => "memory-map",
            Phase::MemMap => "mem_map",
            Phase::Buddy => "buddy",
            Phase::Paging => "paging",
            Phase::Heap => "heap",
            Phase::Smp => "smp",
            Phase::Shell => "shell",
        }
    }

    /// What the phase covers.
    pub fn what(self) -> &'static str {
        match self {
            Phase::Early => "early tables, device tree, console, logger",
            Phase::MemoryMap => "memory map from the device tree",
            Phase::MemMap => "linear map, mem_map placed",
            Phase::Buddy => "buddy and per-CPU caches over the mem_map",
            Phase::Paging => "final page tables, TTBR1 switch",
            Phase::Heap => "heap growth enabled",
            Phase::Smp => "boot stack, initramfs, tick, secondary CPUs",
            Phase::Shell => "first prompt",
        }
    }
}

/// The counter at the kernel's first instruction (boot.S); 0 until recorded.
static ENTRY: AtomicU64 = AtomicU64::new(0);
/// The counter when each phase ended; 0 = not yet.
static MARKS: [AtomicU64; Phase::ALL.len()] = [const { AtomicU64::new(0) }; Phase::ALL.len()];

/// Records the counter value boot.S read at entry.
pub fn set_entry(ticks: u64) {
    ENTRY.store(ticks, Ordering::Relaxed);
}

/// Marks the end of `phase` now. A phase is marked once; a second mark is ignored.
pub fn mark(phase: Phase) {
    let now = timer::ticks();
    let _ = MARKS[phase as usize].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
}

/// Microseconds from kernel entry to `ticks` (0 if the counter frequency is unknown).
fn since_entry_us(ticks: u64) -> u64 {
    let freq = timer::frequency();
    let d = ticks.saturating_sub(ENTRY.load(Ordering::Relaxed));
    (u128::from(d) * 1_000_000)
        .checked_div(u128::from(freq))
        .map_or(0, |us| us as u64)
}

/// Microseconds from kernel entry to the end of `phase`, once it ended.
pub fn phase_us(phase: Phase) -> Option<u64> {
    match MARKS[phase as usize].load(Ordering::Relaxed) {
        0 => None,
        t => Some(since_entry_us(t)),
    }
}

/// Microseconds from kernel entry to now.
pub fn now_us() -> u64 {
    since_entry_us(timer::ticks())
}

/// Microseconds the counter had run when the kernel got control (on QEMU: since the machine
/// was created, image loading included).
pub fn entry_counter_us() -> u64 {
    (u128::from(ENTRY.load(Ordering::Relaxed)) * 1_000_000)
        .checked_div(u128::from(timer::frequency()))
        .map_or(0, |us| us as u64)
}

/// `us` as milliseconds with one decimal.
pub struct Ms(pub u64);

impl core::fmt::Display for Ms {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.0 / 1000, (self.0 % 1000) / 100)
    }
}

levitate_hal::ktest!(
    fn boot_phases_are_marked_in_order() -> KtestResult {
        // Every phase before the shell ended (a ktest build runs instead of the shell), each
        // no earlier than the one before.
        let mut last = 0;
        for p in &Phase::ALL[..Phase::ALL.len() - 1] {
            let t = phase_us(*p);
            levitate_hal::kassert!(t.is_some(), "a boot phase was never marked");
            let t = t.unwrap_or(0);
            levitate_hal::kassert!(t >= last, "boot phases out of order");
            last = t;
        }
        levitate_hal::kassert!(now_us() >= last);
        Ok(())
    }
);
