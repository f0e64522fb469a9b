//! The interrupt dispatch table: which handler runs for which interrupt ID, and how often each
//! interrupt arrived on each CPU. Pure data (atomics and `spin::Once`, no hardware), so the host
//! tests check it; the kernel's `irq` module puts the GIC around it.
//!
//! Interrupt-safety: the IRQ path only reads registrations (`Once::get`, lock-free) and bumps
//! atomic counters, so it never waits for anything the interrupted code could hold.
//! Registration runs in ordinary kernel context; a slot is written once and never changes.

pub use levitate_mm::dtb::interrupts::{IntId, IntKind, Trigger};

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Once;

/// An interrupt handler. It runs on the exception stack with interrupts masked on this CPU;
/// it receives the interrupt ID it was registered for.
pub type Handler = fn(IntId);

/// What a registered interrupt is.
#[derive(Clone, Copy, Debug)]
pub struct Registration {
    /// Name shown by `irqs` (the last column of /proc/interrupts).
    pub name: &'static str,
    /// How the interrupt signals.
    pub trigger: Trigger,
    /// What runs.
    pub handler: Handler,
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The number is not an SGI, PPI or SPI (0-1019).
    OutOfRange(u32),
    /// Another handler owns the interrupt.
    Taken {
        /// The interrupt.
        intid: IntId,
        /// The owner's name.
        by: &'static str,
    },
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange(n) => write!(f, "interrupt {n} is out of range (0-1019)"),
            Self::Taken { intid, by } => write!(f, "interrupt {intid} is taken by {by}"),
        }
    }
}

/// What `dispatch` did with an acknowledged interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatched {
    /// A handler ran.
    Handled,
    /// No handler: counted. `first` is true the first time this happened for the ID, which is
    /// when the caller should log it; the caller disables it at the controller either way.
    Unhandled {
        /// The interrupt.
        intid: IntId,
        /// Whether this is the first unhandled arrival of this ID.
        first: bool,
    },
    /// The acknowledge returned a special ID (1020-1023): nothing was pending. Counted.
    Spurious,
}

const IDS: usize = IntId::LIMIT as usize;

/// Handlers and per-CPU counts for every interrupt ID, for up to `CPUS` CPUs.
pub struct DispatchTable<const CPUS: usize> {
    slots: [Once<Registration>; IDS],
    counts: [[AtomicU64; CPUS]; IDS],
    unhandled: [AtomicBool; IDS],
    spurious: [AtomicU64; CPUS],
}

impl<const CPUS: usize> Default for DispatchTable<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> DispatchTable<CPUS> {
    /// An empty table (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            slots: [const { Once::new() }; IDS],
            counts: [const { [const { AtomicU64::new(0) }; CPUS] }; IDS],
            unhandled: [const { AtomicBool::new(false) }; IDS],
            spurious: [const { AtomicU64::new(0) }; CPUS],
        }
    }

    /// Installs `reg` for interrupt `id`. Each ID takes one handler, for good.
    pub fn register(&self, id: u32, reg: Registration) -> Result<IntId, RegisterError> {
        let intid = IntId::new(id).ok_or(RegisterError::OutOfRange(id))?;
        let mut ours = false;
        let installed = self.slots[intid.index()].call_once(|| {
            ours = true;
            reg
        });
        if ours {
            Ok(intid)
        } else {
            Err(RegisterError::Taken {
                intid,
                by: installed.name,
            })
        }
    }

    /// The registration of `intid`, if any.
    pub fn registration(&self, intid: IntId) -> Option<&Registration> {
        self.slots[intid.index()].get()
    }

    /// Counts interrupt `raw` (what the acknowledge returned) on `cpu` and runs its handler.
    /// `cpu` at or past `CPUS` is counted as the last CPU (the kernel never has more).
    pub fn dispatch(&self, raw: u32, cpu: usize) -> Dispatched {
        let cpu = cpu.min(CPUS - 1);
        let Some(intid) = IntId::new(raw) else {
            self.spurious[cpu].fetch_add(1, Ordering::Relaxed);
            return Dispatched::Spurious;
        };
        self.counts[intid.index()][cpu].fetch_add(1, Ordering::Relaxed);
        match self.slots[intid.index()].get() {
            Some(reg) => {
                (reg.handler)(intid);
                Dispatched::Handled
            }
            None => Dispatched::Unhandled {
                intid,
                first: !self.unhandled[intid.index()].swap(true, Ordering::Relaxed),
            },
        }
    }

    /// How often `intid` arrived on `cpu`.
    pub fn count(&self, intid: IntId, cpu: usize) -> u64 {
        self.counts[intid.index()]
            .get(cpu)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Spurious acknowledges on `cpu`.
    pub fn spurious(&self, cpu: usize) -> u64 {
        self.spurious
            .get(cpu)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Whether `intid` ever arrived without a handler.
    pub fn was_unhandled(&self, intid: IntId) -> bool {
        self.unhandled[intid.index()].load(Ordering::Relaxed)
    }

    /// Interrupt IDs worth listing: registered, or counted on some CPU, in ID order.
    pub fn active(&self) -> impl Iterator<Item = IntId> + '_ {
        (0..IntId::LIMIT).filter_map(IntId::new).filter(|&id| {
            self.registration(id).is_some()
                || self.counts[id.index()]
                    .iter()
                    .any(|c| c.load(Ordering::Relaxed) > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::sync::atomic::AtomicU32;

    static RAN: AtomicU32 = AtomicU32::new(0);
    fn handler(id: IntId) {
        RAN.fetch_add(id.as_u32(), Ordering::SeqCst);
    }
    fn reg(name: &'static str) -> Registration {
        Registration {
            name,
            trigger: Trigger::Level,
            handler,
        }
    }

    #[test]
    fn register_and_dispatch() {
        let t: Box<DispatchTable<4>> = Box::default();
        let id = t.register(27, reg("arch_timer")).unwrap();
        assert_eq!(id.as_u32(), 27);
        assert_eq!(
            t.register(27, reg("other")),
            Err(RegisterError::Taken {
                intid: id,
                by: "arch_timer"
            })
        );
        assert_eq!(
            t.register(1020, reg("x")),
            Err(RegisterError::OutOfRange(1020))
        );
        assert_eq!(
            t.register(u32::MAX, reg("x")),
            Err(RegisterError::OutOfRange(u32::MAX))
        );
        let before = RAN.load(Ordering::SeqCst);
        assert_eq!(t.dispatch(27, 1), Dispatched::Handled);
        assert_eq!(t.dispatch(27, 1), Dispatched::Handled);
        assert!(RAN.load(Ordering::SeqCst) >= before + 54);
        assert_eq!((t.count(id, 0), t.count(id, 1), t.count(id, 9)), (0, 2, 0));
        assert_eq!(t.registration(id).unwrap().name, "arch_timer");
    }

    #[test]
    fn unhandled_is_reported_once_and_spurious_counted() {
        let t: Box<DispatchTable<2>> = Box::default();
        let id = IntId::new(40).unwrap();
        assert_eq!(
            t.dispatch(40, 0),
            Dispatched::Unhandled {
                intid: id,
                first: true
            }
        );
        assert_eq!(
            t.dispatch(40, 1),
            Dispatched::Unhandled {
                intid: id,
                first: false
            }
        );
        assert!(t.was_unhandled(id));
        assert_eq!(t.count(id, 0) + t.count(id, 1), 2);
        for raw in [1020, 1021, 1023, 4000] {
            assert_eq!(t.dispatch(raw, 1), Dispatched::Spurious);
        }
        // An out-of-table CPU number is clamped, never an index panic.
        assert_eq!(t.dispatch(1023, 99), Dispatched::Spurious);
        assert_eq!((t.spurious(0), t.spurious(1)), (0, 5));
        assert_eq!(
            t.active().map(IntId::as_u32).collect::<std::vec::Vec<_>>(),
            [40]
        );
    }

    #[test]
    fn concurrent_registration_has_one_winner() {
        let t: &'static DispatchTable<4> = Box::leak(Box::default());
        let wins: std::vec::Vec<bool> = (0..8)
            .map(|_| std::thread::spawn(move || t.register(33, reg("racer")).is_ok()))
            .collect::<std::vec::Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(wins.iter().filter(|w| **w).count(), 1);
        let counters: std::vec::Vec<_> = (0..4)
            .map(|cpu| {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        t.dispatch(33, cpu);
                    }
                })
            })
            .collect();
        for h in counters {
            h.join().unwrap();
        }
        let id = IntId::new(33).unwrap();
        assert_eq!((0..4).map(|c| t.count(id, c)).sum::<u64>(), 4000);
    }
}
