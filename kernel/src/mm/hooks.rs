//! What the frame allocator tells the policy above it: the mechanism reports, the policy
//! decides. `frames` calls `usage` after each use of the buddy and `after_op` after each call
//! at its front while the policy has asked for it (`set_due`: a reclaim is due; otherwise the
//! call is one load); whoever registered (today `pressure`, the watermarks and reclaim) acts on
//! it.
//! So the dependency points one way, policy -> mechanism, while the calls still reach the
//! policy at the right moments (Linux's shrinkers are registered the same way: mm calls back
//! into whoever registered, without naming them).
//!
//! Interrupt and SMP safety: the hooks are set once at boot (`spin::Once`, before the first
//! frame allocation) and only read afterwards, with an acquire load and no lock, so calling
//! them is safe under any allocator lock and in an interrupt handler. Each hook states what it
//! may do where it is called.

use core::sync::atomic::{AtomicBool, Ordering};
use spin::Once;

/// The policy's entry points.
pub struct Hooks {
    /// Fresh figures after a use of the buddy: `free` of `managed` frames. Called with a
    /// per-CPU cache or the bitmap layer possibly locked (a refill or a run allocation), and
    /// from interrupt handlers: it must take no allocator lock.
    pub usage: fn(free: u64, managed: u64),
    /// After an operation at the frame allocator's front, with none of its locks held (the
    /// caller may hold the heap or page-table lock: only try-lock those).
    pub after_op: fn(),
}

static HOOKS: Once<Hooks> = Once::new();

/// The policy asked to hear `after_op` (`set_due`): until it clears it, every front operation
/// calls the hook; otherwise an operation pays this one relaxed load and no call. A flag seen
/// late by a moment only delays the hook by an operation (nothing else is ordered by it), so
/// relaxed suffices on every CPU and in interrupt handlers. A clear can wipe a set made at the
/// same moment on another CPU, so the policy clears only where the work the set asks for
/// follows anyway (pressure clears it just before it reclaims).
static DUE: AtomicBool = AtomicBool::new(false);

/// Installs the policy's hooks (once; a second call keeps the first).
pub fn register(hooks: Hooks) {
    HOOKS.call_once(|| hooks);
}

/// Reports the buddy's figures to the policy, if one is registered.
#[inline]
pub fn usage(free: u64, managed: u64) {
    if let Some(h) = HOOKS.get() {
        (h.usage)(free, managed);
    }
}

/// Tells the policy a front operation finished, if it asked to hear it (`set_due`).
#[inline]
pub fn after_op() {
    if !DUE.load(Ordering::Relaxed) {
        return;
    }
    if let Some(h) = HOOKS.get() {
        (h.after_op)();
    }
}

/// The policy wants `after_op` called after the next operations (a reclaim is due).
pub fn set_due() {
    DUE.store(true, Ordering::Relaxed);
}

/// The policy no longer needs `after_op` (it is about to do what the flag asked for; see
/// `DUE`).
pub fn clear_due() {
    DUE.store(false, Ordering::Relaxed);
}

/// Whether `after_op` is called after each operation now.
pub fn due() -> bool {
    DUE.load(Ordering::Relaxed)
}
