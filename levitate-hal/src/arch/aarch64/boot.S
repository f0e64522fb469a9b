// Levitate entry point: the arm64 Image header and the position-independent code that runs
// with the MMU off (Documentation/arch/arm64/booting.rst).
//
// Entry state: x0 = physical address of the DTB, x1-x3 = 0, MMU off, D-cache off or clean,
// interrupts masked, EL2 or EL1, the image placed at a 2 MiB aligned base + text_offset (0).
// Until the MMU maps the image at its link address only PC-relative addressing (adr/adrp) is
// used; literal-pool loads (`ldr xN, =sym`) give link-time virtual addresses and are only
// dereferenced after the MMU is on.
//
// Registers kept across this file: x19 = DTB physical address, x20 = image physical base,
// x21 = exception level we were entered at, x25 = the counter (CNTPCT_EL0) at entry, for the
// boot-time report.

    // SCTLR_EL1 RES1 bits of ARMv8.0: 29, 28, 23, 22, 20, 11
    .set    SCTLR_EL1_RES1, 0x30d00800
    // ... plus M, C, SA, SA0, I
    .set    SCTLR_EL1_MMU_ON, (SCTLR_EL1_RES1 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 12))
// MAIR_EL1 attribute indices, mirrored by `mmu::MemoryKind`:
//   0 Device-nGnRnE, 1 Device-nGnRE, 2 Normal WB RA/WA, 3 Normal non-cacheable
    .set    MAIR_VALUE, 0x44ff040000
// TCR_EL1: T0SZ=T1SZ=16 (48-bit VA), 4 KiB granules, inner/outer WB WA, inner shareable.
    .set    TCR_VALUE, 0xb5103510
// Block descriptor for early mappings: valid block, AttrIndx=2 (Normal WB), SH=inner,
// AF=1, AP=EL1 RW, UXN. Everything is RWX until the final tables (W^X) replace these.
    .set    BLOCK_NORMAL_LO, 0x709
    .set    BLOCK_UXN, (1 << 54)
    .set    TABLE_DESC, 0x3

    .section .text.head, "ax"
    .global _start
    .type   _start, %function
_start:
    b       primary_entry               // code0
    .long   0                           // code1
    .quad   0                           // text_offset: load at a 2 MiB aligned base
    .quad   __image_size                // image_size: whole image including BSS
    .quad   0xa                         // flags: little endian, 4 KiB pages, anywhere in RAM
    .quad   0                           // res2
    .quad   0                           // res3
    .quad   0                           // res4
    .ascii  "ARM\x64"                   // magic
    .long   0                           // res5

    .size   _start, . - _start
    .type   primary_entry, %function
primary_entry:
    // First: when the kernel got control. CNTPCT_EL0 is readable here at EL2, and at EL1
    // because booting.rst requires CNTHCTL_EL2.EL1PCTEN set for an EL1 entry; the ISB keeps the
    // read from being taken early (ARM ARM D12.1.2, "Reading the counter").
    isb
    mrs     x25, cntpct_el0
    mov     x19, x0
    adr     x20, _start
    msr     daifset, #0xf
    bl      install_park_vectors
    tst     x20, #0x1fffff              // the early block mappings need a 2 MiB aligned base
    b.ne    boot_park

    mrs     x21, CurrentEL
    lsr     x21, x21, #2
    adr     x8, at_el1
    cmp     x21, #2
    b.eq    el2_to_el1
    cmp     x21, #1
    b.eq    at_el1
    b       boot_park                   // EL3 entry is not supported by the boot protocol

// Configures EL2 for an AArch64 EL1 kernel and drops to EL1h at the address in x8.
// Shared by the boot CPU and the secondaries. Clobbers x9, x10.
el2_to_el1:
    // EL1 runs AArch64; no stage 2, no traps of EL1 work to EL2.
    mov     x9, #(1 << 31)              // HCR_EL2.RW
    msr     hcr_el2, x9
    mrs     x9, cnthctl_el2
    orr     x9, x9, #3                  // EL1PCTEN | EL1PCEN: counter and timer from EL1
    msr     cnthctl_el2, x9
    msr     cntvoff_el2, xzr
    mov     x9, #0x33ff                 // CPTR_EL2: RES1 bits, TFP=0 (no FP/SIMD trap)
    msr     cptr_el2, x9
    msr     hstr_el2, xzr
    msr     vttbr_el2, xzr
    mrs     x9, midr_el1                // EL1 reads of MIDR/MPIDR see the real values
    msr     vpidr_el2, x9
    mrs     x9, mpidr_el1
    msr     vmpidr_el2, x9
    mrs     x9, id_aa64pfr0_el1         // GICv3 CPU interface present?
    ubfx    x9, x9, #24, #4
    cbz     x9, 1f
    mrs     x9, S3_4_C12_C9_5           // ICC_SRE_EL2
    mov     x10, #0x9                   // SRE | Enable: EL1 may use the system registers
    orr     x9, x9, x10
    msr     S3_4_C12_C9_5, x9
    isb
1:  ldr     x9, =SCTLR_EL1_RES1
    msr     sctlr_el1, x9
    mov     x9, #0x3c5                  // EL1h with D, A, I, F masked
    msr     spsr_el2, x9
    msr     elr_el2, x8
    eret

at_el1:
    ldr     x9, =SCTLR_EL1_RES1         // MMU and caches off, whatever firmware left
    msr     sctlr_el1, x9
    mov     x9, #(3 << 20)              // CPACR_EL1.FPEN: the compiler uses NEON anywhere
    msr     cpacr_el1, x9
    isb

    // BSS holds the boot page tables and stack. Invalidate it first so no stale line is
    // written back over what we store with the MMU off, zero it, invalidate again after.
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
    bl      dcache_inval_range
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
2:  stp     xzr, xzr, [x0], #16
    cmp     x0, x1
    b.lo    2b

    // Identity map of the 2 MiB block holding this code, for the instant the MMU turns on.
    adrp    x0, boot_idmap_l0
    adrp    x1, boot_idmap_l1
    adrp    x2, boot_idmap_l2
    ubfx    x9, x20, #39, #9
    orr     x10, x1, #TABLE_DESC
    str     x10, [x0, x9, lsl #3]
    ubfx    x9, x20, #30, #9
    orr     x10, x2, #TABLE_DESC
    str     x10, [x1, x9, lsl #3]
    ubfx    x9, x20, #21, #9
    lsr     x10, x20, #21
    lsl     x10, x10, #21
    ldr     x11, =(BLOCK_NORMAL_LO | BLOCK_UXN)
    orr     x10, x10, x11
    str     x10, [x2, x9, lsl #3]

    // The kernel image at its link address: KIMAGE_VBASE is L0 index 511, L1 index 510,
    // L2 index 0, so the image (at most 1 GiB) is a run of 2 MiB blocks in one L2 table.
    adrp    x0, boot_kernel_l0
    adrp    x1, boot_kernel_l1
    adrp    x2, boot_kernel_l2
    orr     x10, x1, #TABLE_DESC
    str     x10, [x0, #(511 * 8)]
    orr     x10, x2, #TABLE_DESC
    str     x10, [x1, #(510 * 8)]
    ldr     x9, =__image_size
    ldr     x10, =0x1fffff
    add     x9, x9, x10
    lsr     x9, x9, #21                 // number of 2 MiB blocks
    mov     x10, x20
    ldr     x11, =(BLOCK_NORMAL_LO | BLOCK_UXN)
    orr     x10, x10, x11
3:  str     x10, [x2], #8
    add     x10, x10, #0x200000
    subs    x9, x9, #1
    b.ne    3b

    dsb     sy
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
    bl      dcache_inval_range

    adrp    x0, boot_kernel_l0
    bl      mmu_on

    ldr     x9, =boot_virtual_entry     // link-time (higher-half) address
    br      x9

// Turns the MMU and caches on: MAIR, TCR (48-bit VAs, 4 KiB granules, IPS from the CPU's
// PARange capped at 48 bits), TTBR0 = the boot identity map, TTBR1 = x0. Runs from the
// identity map and returns there. Clobbers x9-x11.
mmu_on:
    ldr     x9, =MAIR_VALUE
    msr     mair_el1, x9
    mrs     x10, id_aa64mmfr0_el1
    ubfx    x10, x10, #0, #4
    cmp     x10, #5
    mov     x11, #5
    csel    x10, x10, x11, ls
    ldr     x9, =TCR_VALUE
    bfi     x9, x10, #32, #3
    msr     tcr_el1, x9
    adrp    x9, boot_idmap_l0
    msr     ttbr0_el1, x9
    msr     ttbr1_el1, x0
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x9, =SCTLR_EL1_MMU_ON
    msr     sctlr_el1, x9
    isb
    ic      iallu
    dsb     nsh
    isb
    ret

// Invalidate data cache lines by VA to PoC over [x0, x1). Clobbers x0, x2, x3.
dcache_inval_range:
    mrs     x3, ctr_el0
    ubfx    x3, x3, #16, #4             // DminLine: log2(words per line)
    mov     x2, #4
    lsl     x2, x2, x3                  // line size in bytes
    sub     x3, x2, #1
    bic     x0, x0, x3
4:  dc      ivac, x0
    add     x0, x0, x2
    cmp     x0, x1
    b.lo    4b
    dsb     sy
    ret

boot_park:
    wfe
    b       boot_park
    .size   primary_entry, . - primary_entry

// Points VBAR_EL1 (and VBAR_EL2 when running at EL2) at `boot_park_vectors`, by physical
// address: the first thing each CPU does. Before this, VBAR holds whatever firmware left
// (booting.rst promises nothing about it, and at reset it is UNKNOWN), so a fault in the
// earliest code (BSS zeroing running past the end of RAM, say) could vector into garbage or
// loop taking the same exception forever. Clobbers x9, x10.
install_park_vectors:
    adr     x9, boot_park_vectors
    mrs     x10, CurrentEL
    cmp     x10, #(2 << 2)
    b.ne    1f
    msr     vbar_el2, x9
1:  msr     vbar_el1, x9
    isb
    ret

// A vector table whose 16 entries all park the CPU: taking an exception masks DAIF (ARM ARM
// D1.3.5), and the entry waits for events forever without touching memory, so one fault
// stops the CPU instead of turning into a fault loop. It stays installed until
// `boot_virtual_entry` / `secondary_virtual_entry` install the real vectors; with the MMU on
// it is still reached, at the same address, through the boot identity map. VBAR's low 11
// bits are RES0: the table is 2 KiB aligned (ARM ARM D1.3.1).
    .balign 2048
boot_park_vectors:
    .rept   16
    b       boot_park
    .balign 128
    .endr

// Replaces TTBR1_EL1 (the kernel half) with the tables whose physical root is x0, without
// ever letting the TLB hold entries from both trees for one address.
//
// The boot tables map the image with 2 MiB blocks and the final tables with 4 KiB pages: a
// change of block size for a live address. Writing TTBR1 then invalidating would let the TLB
// hold the old block and a new page for the same VA at once, which the architecture calls a
// TLB conflict (a TLB conflict abort, or UNPREDICTABLE results; ARM ARM D8.16.1
// break-before-make, "TLB maintenance requirements and the TLB conflict abort"). So, as
// Linux's `idmap_cpu_replace_ttbr1` does: run from the identity map (TTBR0), point TTBR1 at an
// empty table (break), invalidate every EL1 entry and wait for it to complete, then install
// the new root (make). In between no kernel VA is mapped: this routine touches no stack and
// no data, and interrupts are masked so nothing can vector to the kernel's (unmapped)
// handlers.
//
// Call it at its identity-mapped address (its physical address: `levitate_replace_ttbr1`'s
// link address - KIMAGE_VBASE + the image's load address); it returns to x30, a kernel VA,
// once the new tables are live. The caller made the new tables visible (DSB ISHST). It must
// sit in .text.head, inside the 2 MiB the boot identity map covers. Clobbers x1, x2.
    .global levitate_replace_ttbr1
    .type   levitate_replace_ttbr1, %function
levitate_replace_ttbr1:
    mrs     x2, daif
    msr     daifset, #0xf
    dsb     ishst                       // the new tables are visible to every walker
    adrp    x1, boot_empty_table        // PC-relative from the identity map: a physical address
    msr     ttbr1_el1, x1               // break: no kernel VA translates from here on
    isb
    tlbi    vmalle1is                   // drop every EL1 entry, walk caches included
    dsb     ish
    isb
    msr     ttbr1_el1, x0               // make: the final tables
    isb
    msr     daif, x2
    ret
    .size   levitate_replace_ttbr1, . - levitate_replace_ttbr1

// Secondary CPUs, started by PSCI CPU_ON with x0 = the physical address of their
// `SecondaryBoot` block (kernel/src/smp.rs; the boot CPU cleaned it to PoC):
//   0 ttbr1 (physical root of the kernel tables), 8 kernel stack top, 16 exception stack top,
//   24 per-CPU data pointer, 32 Rust entry (all virtual but the first)
// The code sits in .text.head, inside the 2 MiB the boot identity map covers.
    .global secondary_entry
    .type   secondary_entry, %function
secondary_entry:
    msr     daifset, #0xf
    bl      install_park_vectors
    ldp     x20, x21, [x0]              // ttbr1, kernel stack top
    ldp     x22, x23, [x0, #16]         // exception stack top, per-CPU pointer
    ldr     x24, [x0, #32]              // entry
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    adr     x8, secondary_at_el1
    cmp     x9, #2
    b.eq    el2_to_el1
    cmp     x9, #1
    b.ne    boot_park
secondary_at_el1:
    ldr     x9, =SCTLR_EL1_RES1
    msr     sctlr_el1, x9
    mov     x9, #(3 << 20)
    msr     cpacr_el1, x9
    isb
    mov     x0, x20
    bl      mmu_on
    ldr     x9, =secondary_virtual_entry
    br      x9
    .size   secondary_entry, . - secondary_entry
    .ltorg

    .ltorg

    .section .text.boot, "ax"
    .type   boot_virtual_entry, %function
boot_virtual_entry:
    // Exceptions run on their own stack (SP_EL1), the kernel on SP_EL0 (EL1t): a kernel stack
    // overflow into its guard page then faults onto a good stack and is reported, instead of
    // faulting again while saving the context.
    ldr     x9, =__exception_stack_top
    mov     sp, x9
    msr     spsel, #0
    ldr     x9, =__boot_stack_top
    mov     sp, x9
    ldr     x9, =exception_vectors
    msr     vbar_el1, x9
    isb
    // SError unmasked from here on (DAIF.A clear; DAIFClr #4 = A, ARM ARM C5.2.3): an
    // asynchronous abort, e.g. a bad MMIO write, is taken at once and reported by the real
    // vectors instead of pending silently. IRQ, FIQ and debug stay masked.
    msr     daifclr, #4
    mov     x29, xzr                    // ends the frame-pointer chain for backtraces
    mov     x30, xzr
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    mov     x3, x25
    bl      levitate_boot_main
5:  wfe
    b       5b
    .size   boot_virtual_entry, . - boot_virtual_entry

    .type   secondary_virtual_entry, %function
secondary_virtual_entry:
    mov     sp, x22                     // SP_EL1: this CPU's exception stack
    msr     spsel, #0
    mov     sp, x21                     // SP_EL0: this CPU's kernel stack
    msr     tpidr_el1, x23
    ldr     x9, =exception_vectors
    msr     vbar_el1, x9
    isb
    msr     daifclr, #4                 // SError unmasked, as on the boot CPU
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x23
    blr     x24
6:  wfe
    b       6b
    .size   secondary_virtual_entry, . - secondary_virtual_entry

    .ltorg

// Boot page tables and stack: the only statically allocated tables. The early mapper
// (mmu::early) adds to the kernel tables from a small static pool; the final tables come
// from the frame allocator.
    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_idmap_l0, boot_kernel_l0
boot_idmap_l0:  .space 4096
boot_idmap_l1:  .space 4096
boot_idmap_l2:  .space 4096
boot_kernel_l0: .space 4096
boot_kernel_l1: .space 4096
boot_kernel_l2: .space 4096
// An empty table (BSS is zeroed at boot): TTBR1 points here for the break in
// `levitate_replace_ttbr1`, so every kernel-half walk finds an invalid L0 entry.
boot_empty_table: .space 4096
// Stacks, each above an unmapped guard page once the final page tables exist (the guards
// are page aligned so the final tables can leave exactly them out).
    .balign 4096
    .global __exception_stack_guard, __exception_stack_bottom, __exception_stack_top
__exception_stack_guard:
    .space  0x1000
__exception_stack_bottom:
    .space  0x4000
__exception_stack_top:
    .global __boot_stack_guard, __boot_stack_bottom, __boot_stack_top
__boot_stack_guard:
    .space  0x1000
__boot_stack_bottom:
    .space  0x10000
__boot_stack_top:
