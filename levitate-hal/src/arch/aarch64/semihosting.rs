//! Arm semihosting (the `hlt #0xf000` trap QEMU answers when started with
//! `-semihosting-config enable=on`). On a phone that instruction is undefined, so the kernel
//! calls these only when the boot arguments say `semihosting`, which only xtask passes.

const SYS_WRITEC: u64 = 0x03;
const SYS_EXIT: u64 = 0x18;
/// ADP_Stopped_ApplicationExit: "the program exited", with a status code.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

fn call(op: u64, param: u64) -> u64 {
    let ret: u64;
    // SAFETY: a semihosting call reads only the parameter block `param` points to (or the byte
    // it names) and returns a value in x0. The caller guarantees semihosting is enabled.
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") op => ret, in("x1") param, options(nostack));
    }
    ret
}

/// Writes bytes to the host's console, one at a time (messages are short and rare).
pub fn write(bytes: &[u8]) {
    for b in bytes {
        call(SYS_WRITEC, b as *const u8 as u64);
    }
}

/// Ends the emulation with `code` as QEMU's exit status.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    call(SYS_EXIT, block.as_ptr() as u64);
    // The host ignored the request: stop here rather than run on.
    super::cpu::halt()
}
