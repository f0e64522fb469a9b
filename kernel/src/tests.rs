//! In-kernel tests of the exception path, the symbol table and early boot state: things only
//! the real CPU can show.

use levitate_hal::arch::aarch64::esr::{self, ec};
use levitate_hal::arch::aarch64::exception::{catch_fault, TrapFrame};
use levitate_hal::arch::aarch64::mmu::early;
use levitate_hal::arch::aarch64::timer;
use levitate_hal::{kassert, kassert_eq, ksyms, ktest, VirtAddr};

/// What the trap test puts in the caller-saved registers before a BRK and reads back after
/// it: x0-x18 and q0-q31, the registers Rust code in the handler may overwrite. Offsets are
/// hard-coded in `brk_with_known_registers`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct Registers {
    x: [u64; 19],
    _pad: u64,
    q: [u128; 32],
}

const _: () = assert!(core::mem::offset_of!(Registers, q) == 160);

impl Registers {
    /// A distinct value in every register, different in each round, so a register saved in
    /// another's slot, or a slot left with the last trap's value, shows.
    fn pattern(round: u64) -> Self {
        let mix = |i: u64| {
            (i + 1 + (round << 8))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left((i % 64) as u32)
        };
        Registers {
            x: core::array::from_fn(|i| mix(i as u64)),
            _pad: 0,
            q: core::array::from_fn(|i| {
                u128::from(mix(100 + i as u64)) << 64 | u128::from(mix(200 + i as u64))
            }),
        }
    }

    /// The first register whose value in `x`/`q` differs from this pattern's: ("x", n) or
    /// ("q", n).
    fn first_difference(&self, x: &[u64], q: &[u128]) -> Option<(&'static str, usize)> {
        let xs = (0..19).find(|&i| x[i] != self.x[i]).map(|i| ("x", i));
        xs.or_else(|| (0..32).find(|&i| q[i] != self.q[i]).map(|i| ("q", i)))
    }
}

/// Loads `input` into x0-x18 and q0-q31, takes a BRK (which `catch_fault` skips), stores the
/// registers into `output`. Returns SP_EL1 at the BRK: the handler's frame sits just below it.
#[inline(never)]
fn brk_with_known_registers(input: &Registers, output: &mut Registers) -> u64 {
    let sp_el1: u64;
    // SAFETY: reads only `input` and writes only `output` (both `Registers`, at the offsets
    // the struct's layout fixes); every register it changes is declared clobbered. SPSel is
    // switched to 1 only to copy SP, with nothing using the stack meanwhile, and back to 0,
    // the kernel's mode (EL1t, checked by the caller). BRK traps to the vector table, whose
    // handler skips it under catch_fault.
    unsafe {
        core::arch::asm!(
            "msr spsel, #1",
            "mov x22, sp",
            "msr spsel, #0",
            "ldp q0, q1, [x20, #160]",
            "ldp q2, q3, [x20, #192]",
            "ldp q4, q5, [x20, #224]",
            "ldp q6, q7, [x20, #256]",
            "ldp q8, q9, [x20, #288]",
            "ldp q10, q11, [x20, #320]",
            "ldp q12, q13, [x20, #352]",
            "ldp q14, q15, [x20, #384]",
            "ldp q16, q17, [x20, #416]",
            "ldp q18, q19, [x20, #448]",
            "ldp q20, q21, [x20, #480]",
            "ldp q22, q23, [x20, #512]",
            "ldp q24, q25, [x20, #544]",
            "ldp q26, q27, [x20, #576]",
            "ldp q28, q29, [x20, #608]",
            "ldp q30, q31, [x20, #640]",
            "ldp x0, x1, [x20, #0]",
            "ldp x2, x3, [x20, #16]",
            "ldp x4, x5, [x20, #32]",
            "ldp x6, x7, [x20, #48]",
            "ldp x8, x9, [x20, #64]",
            "ldp x10, x11, [x20, #80]",
            "ldp x12, x13, [x20, #96]",
            "ldp x14, x15, [x20, #112]",
            "ldp x16, x17, [x20, #128]",
            "ldr x18, [x20, #144]",
            "brk #0x4c56",
            "stp x0, x1, [x21, #0]",
            "stp x2, x3, [x21, #16]",
            "stp x4, x5, [x21, #32]",
            "stp x6, x7, [x21, #48]",
            "stp x8, x9, [x21, #64]",
            "stp x10, x11, [x21, #80]",
            "stp x12, x13, [x21, #96]",
            "stp x14, x15, [x21, #112]",
            "stp x16, x17, [x21, #128]",
            "str x18, [x21, #144]",
            "stp q0, q1, [x21, #160]",
            "stp q2, q3, [x21, #192]",
            "stp q4, q5, [x21, #224]",
            "stp q6, q7, [x21, #256]",
            "stp q8, q9, [x21, #288]",
            "stp q10, q11, [x21, #320]",
            "stp q12, q13, [x21, #352]",
            "stp q14, q15, [x21, #384]",
            "stp q16, q17, [x21, #416]",
            "stp q18, q19, [x21, #448]",
            "stp q20, q21, [x21, #480]",
            "stp q22, q23, [x21, #512]",
            "stp q24, q25, [x21, #544]",
            "stp q26, q27, [x21, #576]",
            "stp q28, q29, [x21, #608]",
            "stp q30, q31, [x21, #640]",
            in("x20") input as *const Registers,
            in("x21") output as *mut Registers,
            out("x22") sp_el1,
            out("x0") _,
            out("x1") _,
            out("x2") _,
            out("x3") _,
            out("x4") _,
            out("x5") _,
            out("x6") _,
            out("x7") _,
            out("x8") _,
            out("x9") _,
            out("x10") _,
            out("x11") _,
            out("x12") _,
            out("x13") _,
            out("x14") _,
            out("x15") _,
            out("x16") _,
            out("x17") _,
            out("x18") _,
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            out("v4") _,
            out("v5") _,
            out("v6") _,
            out("v7") _,
            out("v8") _,
            out("v9") _,
            out("v10") _,
            out("v11") _,
            out("v12") _,
            out("v13") _,
            out("v14") _,
            out("v15") _,
            out("v16") _,
            out("v17") _,
            out("v18") _,
            out("v19") _,
            out("v20") _,
            out("v21") _,
            out("v22") _,
            out("v23") _,
            out("v24") _,
            out("v25") _,
            out("v26") _,
            out("v27") _,
            out("v28") _,
            out("v29") _,
            out("v30") _,
            out("v31") _,
        )
    };
    sp_el1
}

ktest!(
    fn brk_is_reported_and_resumed_with_every_register_intact() -> KtestResult {
        // Each round checks the syndrome, the symbol ELR resolves to, the frame vectors.S
        // saved (a broken save shows even when the handler happens not to touch the register)
        // and the registers after the return (a broken restore of any register the handler
        // used). Two rounds with different values: a register the entry fails to save would
        // otherwise still read back the first round's value from the stale frame.
        for round in 0..2 {
            let input = Registers::pattern(round);
            let mut output = Registers::pattern(round + 1000);
            let spsel: u64;
            // SAFETY: reads a system register.
            unsafe { core::arch::asm!("mrs {}, spsel", out(reg) spsel) };
            // The kernel runs in EL1t and takes exceptions on SP_EL1 (docs/boot.md), so the
            // frame lands just below SP_EL1.
            kassert_eq!(spsel, 0);
            let daif: u64;
            // SAFETY: masks IRQ and FIQ (restored below), so no other exception reuses the
            // frame's stack slot before the test has read it.
            unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #3", out(reg) daif) };
            let mut sp_el1 = 0;
            let fault = catch_fault(|| sp_el1 = brk_with_known_registers(&input, &mut output));
            // The frame vectors.S pushed on SP_EL1, still in place: nothing has trapped since.
            let frame_at = sp_el1 - core::mem::size_of::<TrapFrame>() as u64;
            // SAFETY: the exception stack is mapped and the BRK's entry wrote the frame a moment
            // ago; read only, with interrupts masked so nothing reuses the slot meanwhile.
            let frame = unsafe { core::ptr::read_volatile(frame_at as *const TrapFrame) };
            // SAFETY: restores the DAIF value read above.
            unsafe { core::arch::asm!("msr daif, {}", in(reg) daif) };

            kassert!(fault.is_some(), "brk did not trap");
            let fault = fault.unwrap();
            kassert_eq!(fault.class(), ec::BRK64);
            kassert_eq!(esr::iss(fault.esr) & 0xffff, 0x4c56);
            // catch_fault's handler stepped over the BRK in the saved frame.
            kassert_eq!(frame.elr, fault.elr + 4);
            // The faulting address resolves to the function that faulted.
            let name = ksyms::resolve(fault.elr).map(|(n, _)| n);
            kassert!(
                name.is_some_and(|n| n.ends_with("brk_with_known_registers")),
                "ELR does not resolve to brk_with_known_registers"
            );
            // What vectors.S saved: every register's value at the BRK, in its own slot.
            let saved_wrong = input.first_difference(&frame.x[..19], &frame.q);
            kassert_eq!(saved_wrong, None);
            kassert_eq!(frame.x[20], &input as *const Registers as u64);
            // What the interrupted code sees after the return.
            let restored_wrong = input.first_difference(&output.x, &output.q);
            kassert_eq!(restored_wrong, None);
        }
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
        let t = crate::mm::paging::translate(VirtAddr::new(here));
        kassert!(t.is_some(), "kernel text is not mapped");
        kassert_eq!(
            t.unwrap().pa.as_u64() - early::image_phys().unwrap().as_u64(),
            here - levitate_hal::layout::KIMAGE_VBASE
        );
        let mmio = crate::mm::paging::translate(VirtAddr::new(levitate_hal::layout::MMIO_BASE));
        kassert!(mmio.is_some(), "console MMIO is not mapped");
        kassert_eq!(
            mmio.unwrap().attrs,
            levitate_hal::arch::aarch64::mmu::Attributes::DEVICE
        );
        Ok(())
    }
);

ktest!(
    fn entry_el_matches_the_hardware_and_the_kernel_runs_at_el1() -> KtestResult {
        // boot.S parks on any entry EL but 1 and 2; `cargo xtask test` checks the reported
        // EL against the configuration booted. Here: an EL2 entry needs EL2 to exist
        // (ID_AA64PFR0_EL1.EL2, bits [11:8], ARM ARM D19.2), and whatever the entry, the kernel
        // runs at EL1.
        let el = crate::boot_info().boot_el;
        let pfr0: u64;
        // SAFETY: reads an ID register.
        unsafe { core::arch::asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0) };
        let el2_implemented = (pfr0 >> 8) & 0xf != 0;
        kassert!(
            el != 2 || el2_implemented,
            "entered at EL2 on a CPU without EL2"
        );
        let current: u64;
        // SAFETY: reads a system register.
        unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) current) };
        kassert_eq!(current >> 2 & 3, 1);
        Ok(())
    }
);
