//! TLB maintenance for the kernel half (TTBR1): the `TlbFlush` that `table::unmap` and
//! `table::protect` call on the live kernel tables (ARM ARM D8.13, TLB maintenance; the
//! break-before-make sequences that need it are in `table`, D8.16).
//!
//! Kernel mappings are global (nG = 0), so invalidation is by VA for all ASIDs (`vaae1`), and
//! broadcast to the Inner Shareable domain (`is`) so every CPU drops the entry once SMP runs.
//! The non-last-level form is used on purpose: it also drops walk-cache entries, which a
//! freed table may still be cached in.

use super::table::TlbFlush;
use levitate_mm::addr::{VirtAddr, PAGE_SIZE};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::registers::InMemoryRegister;

register_bitfields! {u64,
    /// The register operand of TLBI VAAE1IS (ARM ARM C5.5, "TLBI VAAE1IS, TLBI VAAE1ISNXS").
    TLBI_VAA [
        /// Translation table level hint (FEAT_TTL): 0 = any level. Bits [63:56] of an upper
        /// half VA would land here if the operand were just `va >> 12`, and a nonzero hint
        /// naming the wrong granule or level may leave the entry in place.
        TTL OFFSET(44) NUMBITS(4) [],
        /// VA[55:12] of the address to invalidate.
        VA OFFSET(0) NUMBITS(44) []
    ]
}

/// Above this many pages one `tlbi vmalle1is` replaces the per-page loop: each broadcast
/// TLBI costs a message to every CPU, and past a few dozen pages refilling the whole TLB is
/// cheaper than the loop (Linux stops at 512; blocks of 2 MiB and up always take this path).
const PAGE_FLUSH_LIMIT: u64 = 64;

/// Makes this CPU's stores to table memory (zeroing and filling a new table) visible to every
/// CPU's table walker before any later store, such as the one that links the table
/// (`TableAccess::publish`; the rule is in `table`'s module docs). `ish`: the walkers of
/// every CPU in the Inner Shareable domain; `st`: only earlier stores need ordering.
pub fn publish_table_stores() {
    // SAFETY: a barrier only; it changes no memory or register Rust can see. Not `nomem`, so
    // the compiler keeps the table stores before it.
    unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// TLB maintenance for the kernel's global, inner-shareable mappings.
pub struct KernelTlb;

fn operand(va: u64) -> u64 {
    let op: InMemoryRegister<u64, TLBI_VAA::Register> = InMemoryRegister::new(0);
    op.write(TLBI_VAA::VA.val(va >> 12) + TLBI_VAA::TTL.val(0));
    op.get()
}

impl TlbFlush for KernelTlb {
    fn flush_va(&mut self, va: VirtAddr) {
        // SAFETY: barriers and a TLB invalidation only. No memory is written and nothing
        // Rust can observe changes: the walker just re-reads the tables. The asm is not
        // `nomem`, so the compiler keeps the table stores before the `dsb ishst`.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi vaae1is, {op}",
                "dsb ish",
                "isb",
                op = in(reg) operand(va.as_u64()),
                options(nostack, preserves_flags)
            );
        }
    }

    fn flush_range(&mut self, va: VirtAddr, size: u64) {
        let first = va.as_u64() & !(PAGE_SIZE - 1);
        let pages = (va.as_u64() - first + size).div_ceil(PAGE_SIZE);
        if pages > PAGE_FLUSH_LIMIT {
            return self.flush_all();
        }
        // SAFETY: a barrier: makes the table stores visible to the walker before the TLBIs.
        unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
        for page in 0..pages {
            // SAFETY: a TLB invalidation only (see `flush_va`).
            unsafe {
                core::arch::asm!(
                    "tlbi vaae1is, {op}",
                    op = in(reg) operand(first + page * PAGE_SIZE),
                    options(nostack, preserves_flags)
                );
            }
        }
        // SAFETY: barriers only: wait for the broadcast invalidations to complete on every
        // CPU, then resynchronise this CPU's context.
        unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
    }

    fn flush_all(&mut self) {
        // SAFETY: barriers and a TLB invalidation only (see `flush_va`).
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            );
        }
    }
}
