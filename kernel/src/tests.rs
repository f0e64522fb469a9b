//! In-kernel tests of the exception path, the symbol table and early boot state: things only
//! the real CPU can show.

use levitate_hal::arch::aarch64::esr::{self, ec};
use levitate_hal::arch::aarch64::exception::catch_fault;
use levitate_hal::arch::aarch64::mmu::early;
use levitate_hal::arch::aarch64::timer;
use levitate_hal::{kassert, kassert_eq, ksyms, ktest, VirtAddr};

#[inline(never)]
fn provoke_brk() {
    // SAFETY: BRK raises a synchronous exception that catch_fault's handler skips over.
    unsafe { core::arch::asm!("brk #0x4c56") };
}

ktest!(
    fn brk_is_reported_and_resumed() -> KtestResult {
        let marker = core::hint::black_box(0x1234_5678u64);
        let fault = catch_fault(provoke_brk);
        kassert!(fault.is_some(), "brk did not trap");
        let fault = fault.unwrap();
        kassert_eq!(fault.class(), ec::BRK64);
        kassert_eq!(esr::iss(fault.esr) & 0xffff, 0x4c56);
        // Registers survived the round trip through the vector table.
        kassert_eq!(core::hint::black_box(marker), 0x1234_5678);
        // The faulting address resolves to the function that faulted.
        let name = ksyms::resolve(fault.elr).map(|(n, _)| n);
        kassert!(
            name.is_some_and(|n| n.ends_with("provoke_brk")),
            "ELR does not resolve to provoke_brk"
        );
        Ok(())
    }
);

ktest!(
    fn null_read_is_a_translation_fault() -> KtestResult {
        let fault = catch_fault(|| {
            // SAFETY: reading address 0 faults (the lower half is unmapped after boot); the
            // fault is caught and the load skipped.
            unsafe { core::ptr::read_volatile(core::hint::black_box(8usize) as *const u64) };
        });
        let fault = fault.ok_or(levitate_hal::ktest::KtestFailure {
            file: file!(),
            line: line!(),
            message: levitate_hal::ktest::KtestMessage::Static("reading address 8 did not fault"),
        })?;
        kassert_eq!(fault.class(), ec::DABT_CURRENT);
        kassert_eq!(fault.far, 8);
        let fsc = (esr::iss(fault.esr) & 0x3f) as u8;
        kassert_eq!(esr::fault_status_name(fsc), "translation fault");
        Ok(())
    }
);

ktest!(
    fn symbol_table_names_kernel_functions() -> KtestResult {
        let table = ksyms::kernel_table();
        kassert!(
            table.is_some(),
            "xtask did not patch a symbol table into the image"
        );
        let table = table.unwrap();
        kassert!(table.len() > 100);
        let addr = crate::levitate_boot_main as *const () as u64;
        kassert_eq!(table.lookup(addr).map(|s| s.0), Some("levitate_boot_main"));
        kassert_eq!(table.lookup(addr + 4).map(|s| s.1), Some(4));
        Ok(())
    }
);

ktest!(
    fn timer_runs_forward() -> KtestResult {
        kassert!(timer::frequency() > 0);
        let a = timer::ticks();
        let mut spin = 0u64;
        while timer::ticks() == a {
            spin += 1;
            kassert!(spin < 100_000_000, "counter does not move");
        }
        kassert!(timer::uptime_ns() > 0);
        Ok(())
    }
);

ktest!(
    fn kernel_runs_at_link_address_with_mmio_mapped_as_device() -> KtestResult {
        let here = kernel_runs_at_link_address_with_mmio_mapped_as_device as *const () as u64;
        kassert!(here >= levitate_hal::layout::KIMAGE_VBASE);
        let t = crate::paging::translate(VirtAddr::new(here));
        kassert!(t.is_some(), "kernel text is not mapped");
        kassert_eq!(
            t.unwrap().pa.as_u64() - early::image_phys().unwrap().as_u64(),
            here - levitate_hal::layout::KIMAGE_VBASE
        );
        let mmio = crate::paging::translate(VirtAddr::new(levitate_hal::layout::MMIO_BASE));
        kassert!(mmio.is_some(), "console MMIO is not mapped");
        kassert_eq!(
            mmio.unwrap().attrs,
            levitate_hal::arch::aarch64::mmu::Attributes::DEVICE
        );
        Ok(())
    }
);

ktest!(
    fn booted_at_el1_or_el2() -> KtestResult {
        let el = crate::boot_info().boot_el;
        kassert!(el == 1 || el == 2);
        // Whatever we entered at, we run at EL1.
        let current: u64;
        // SAFETY: reads a system register.
        unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) current) };
        kassert_eq!(current >> 2, 1);
        Ok(())
    }
);
