// EL1 exception vector table (ARM ARM D1.10.2: 16 entries of 0x80 bytes, 2 KiB aligned).
// Every entry saves the whole context into a `TrapFrame` on the current stack and calls
// `levitate_trap(kind, frame)` (IRQs from EL1: `levitate_irq(kind, frame)`); if that returns,
// the (possibly edited) frame is restored.
//
// TrapFrame layout, mirrored by exception::TrapFrame:
//   0   x0..x30      31 * 8
//   248 sp           stack pointer at the time of the exception (SP_EL0 or SP_EL1)
//   256 elr, 264 spsr, 272 esr, 280 far, 288 fpsr, 296 fpcr
//   304 frame record {x29, elr + 4}: lets backtraces walk from the handler into the interrupted code
//   320 q0..q31      32 * 16
//   832 end

    .set    FRAME_SIZE, 832

.macro VECTOR kind
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       trap_entry
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
    .type   exception_vectors, %function
exception_vectors:
    VECTOR 0        // current EL with SP_EL0: synchronous
    VECTOR 1        //                         IRQ
    VECTOR 2        //                         FIQ
    VECTOR 3        //                         SError (DAIF.A is clear from boot: a bad
                    // device access while the kernel runs lands here; levitate_trap
                    // decodes ESR_EL1's SError syndrome and panics)
    VECTOR 4        // current EL with SP_ELx: synchronous
    VECTOR 5        //                         IRQ
    VECTOR 6        //                         FIQ
    VECTOR 7        //                         SError inside a handler (taken only once
                    // the handler unmasks DAIF.A; entry masks it)
    VECTOR 8        // lower EL, AArch64:      synchronous
    VECTOR 9        //                         IRQ
    VECTOR 10       //                         FIQ
    VECTOR 11       //                         SError
    VECTOR 12       // lower EL, AArch32:      synchronous
    VECTOR 13       //                         IRQ
    VECTOR 14       //                         FIQ
    VECTOR 15       //                         SError

    .size   exception_vectors, . - exception_vectors
    .type   trap_entry, %function
trap_entry:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    // The interrupted stack pointer: SP_EL0 when the kernel ran in EL1t (vectors 0-3), else
    // the SP_EL1 value before this frame was pushed (a fault inside a handler).
    add     x9, sp, #FRAME_SIZE
    cmp     x0, #4
    b.hs    1f
    mrs     x9, sp_el0
1:  stp     x30, x9, [sp, #240]
    mrs     x10, elr_el1
    mrs     x11, spsr_el1
    stp     x10, x11, [sp, #256]
    mrs     x12, esr_el1
    mrs     x13, far_el1
    stp     x12, x13, [sp, #272]
    mrs     x14, fpsr
    mrs     x15, fpcr
    stp     x14, x15, [sp, #288]
    // Frame record {x29, ELR + 4}: backtraces print the instruction before each return
    // address, which for this record is the interrupted instruction itself.
    add     x11, x10, #4
    stp     x29, x11, [sp, #304]
    add     x9, sp, #320
    stp     q0, q1, [x9, #0]
    stp     q2, q3, [x9, #32]
    stp     q4, q5, [x9, #64]
    stp     q6, q7, [x9, #96]
    stp     q8, q9, [x9, #128]
    stp     q10, q11, [x9, #160]
    stp     q12, q13, [x9, #192]
    stp     q14, q15, [x9, #224]
    stp     q16, q17, [x9, #256]
    stp     q18, q19, [x9, #288]
    stp     q20, q21, [x9, #320]
    stp     q22, q23, [x9, #352]
    stp     q24, q25, [x9, #384]
    stp     q26, q27, [x9, #416]
    stp     q28, q29, [x9, #448]
    stp     q30, q31, [x9, #480]

    add     x29, sp, #304               // frame record -> interrupted code
    mov     x1, sp
    // IRQs taken from EL1 (vector 1: kernel on SP_EL0; vector 5: inside a handler) go to the
    // interrupt path, which acknowledges, dispatches and ends the interrupt, then returns
    // here so the same restore resumes the interrupted code untouched. Everything else is a
    // trap. x0 still holds the vector index.
    cmp     x0, #1
    b.eq    2f
    cmp     x0, #5
    b.eq    2f
    bl      levitate_trap
    b       3f
2:  bl      levitate_irq
3:

    add     x9, sp, #320
    ldp     q0, q1, [x9, #0]
    ldp     q2, q3, [x9, #32]
    ldp     q4, q5, [x9, #64]
    ldp     q6, q7, [x9, #96]
    ldp     q8, q9, [x9, #128]
    ldp     q10, q11, [x9, #160]
    ldp     q12, q13, [x9, #192]
    ldp     q14, q15, [x9, #224]
    ldp     q16, q17, [x9, #256]
    ldp     q18, q19, [x9, #288]
    ldp     q20, q21, [x9, #320]
    ldp     q22, q23, [x9, #352]
    ldp     q24, q25, [x9, #384]
    ldp     q26, q27, [x9, #416]
    ldp     q28, q29, [x9, #448]
    ldp     q30, q31, [x9, #480]
    ldp     x14, x15, [sp, #288]
    msr     fpsr, x14
    msr     fpcr, x15
    ldp     x10, x11, [sp, #256]
    msr     elr_el1, x10
    msr     spsr_el1, x11
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_SIZE
    eret
    .size   trap_entry, . - trap_entry
