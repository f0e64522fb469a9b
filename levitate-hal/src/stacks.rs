//! The registry of kernel stacks: where each one is and where its guard page is, so a fault in
//! a guard page is reported as "stack overflow on <name>" and backtraces know which memory may
//! hold frame records.

use core::ops::Range;
use spin::Mutex;

/// Most stacks the registry holds (boot, exception, per-CPU and thread stacks).
pub const MAX_STACKS: usize = 64;

/// One kernel stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackInfo {
    /// What it is for ("boot", "exception cpu0", ...).
    pub name: &'static str,
    /// The usable stack, `[bottom, top)`.
    pub stack: Range<u64>,
    /// The unmapped guard page(s) just below it.
    pub guard: Range<u64>,
}

/// The registry is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryFull;

/// Taken briefly to add or look up a stack. The fault path only uses `try_lock`, so a fault
/// while the lock is held cannot deadlock; it just reports without a stack name.
static STACKS: Mutex<[Option<StackInfo>; MAX_STACKS]> = Mutex::new([const { None }; MAX_STACKS]);

/// Records a stack.
pub fn register(info: StackInfo) -> Result<(), RegistryFull> {
    let mut stacks = STACKS.lock();
    let slot = stacks
        .iter_mut()
        .find(|s| s.is_none())
        .ok_or(RegistryFull)?;
    *slot = Some(info);
    Ok(())
}

/// Forgets the stack whose usable range starts at `bottom`.
pub fn unregister(bottom: u64) {
    let mut stacks = STACKS.lock();
    if let Some(slot) = stacks
        .iter_mut()
        .find(|s| s.as_ref().is_some_and(|s| s.stack.start == bottom))
    {
        *slot = None;
    }
}

/// The stack whose guard page holds `addr`, if the registry can be read without waiting.
pub fn guard_hit(addr: u64) -> Option<StackInfo> {
    let stacks = STACKS.try_lock()?;
    stacks
        .iter()
        .flatten()
        .find(|s| s.guard.contains(&addr))
        .cloned()
}

/// Copies the usable ranges of every registered stack into `out`; returns how many.
pub fn ranges(out: &mut [Range<u64>]) -> usize {
    let Some(stacks) = STACKS.try_lock() else {
        return 0;
    };
    let mut n = 0;
    for s in stacks.iter().flatten() {
        if n == out.len() {
            break;
        }
        out[n] = s.stack.clone();
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_hits_name_the_stack() {
        register(StackInfo {
            name: "test-a",
            stack: 0x10_1000..0x10_5000,
            guard: 0x10_0000..0x10_1000,
        })
        .unwrap();
        assert_eq!(guard_hit(0x10_0ff8).map(|s| s.name), Some("test-a"));
        assert_eq!(
            guard_hit(0x10_1000),
            None,
            "the stack itself is not the guard"
        );
        let mut out = [0..0, 0..0, 0..0];
        let n = ranges(&mut out);
        assert!(out[..n].contains(&(0x10_1000..0x10_5000)));
        unregister(0x10_1000);
        assert_eq!(guard_hit(0x10_0ff8), None);
    }
}
