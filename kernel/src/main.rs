//! Levitate: a `no_std` aarch64 kernel for Pixel-class phones, run day to day on QEMU virt.
//!
//! Boot order (docs/boot.md): boot.S drops to EL1, builds the early tables, turns the MMU on
//! and calls `levitate_boot_main` at the kernel's link address; from there the device tree is
//! mapped and checked, the console and logger come up, and the shell (or, in a `ktest` build,
//! the in-kernel tests) runs.
#![no_std]
#![no_main]

extern crate alloc;

mod bootargs;
mod boottime;
mod console;
mod devicetree;
mod initramfs;
mod irq;
mod ktest_runner;
mod logger;
mod mm;
mod panic;
mod percpu;
mod power;
mod screen;
mod shell;
mod smp;
#[cfg(feature = "ktest")]
mod tests;
mod tick;
mod watchdog;

use bootargs::BootArgs;
use levitate_hal::arch::aarch64::mmu::early;
use levitate_hal::arch::aarch64::{cpu, semihosting, timer};
use levitate_hal::stacks::{self as stack_registry, StackInfo};
use levitate_mm::addr::PhysAddr;
use levitate_mm::dtb::tree;
use levitate_mm::region::Region;
use mm::{frames, heap, memory, stacks};
use spin::Once;

/// What boot learnt about the machine.
pub struct BootInfo {
    /// Exception level the bootloader entered the kernel at.
    pub boot_el: u64,
    /// Physical load address of the image.
    pub image_phys: PhysAddr,
    /// The kernel command line.
    pub cmdline: &'static str,
    /// Parsed options.
    pub args: BootArgs,
}

static BOOT_INFO: Once<BootInfo> = Once::new();

/// Boot facts, once the console is up.
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO
        .get()
        .expect("boot order invariant: boot_info read before boot set it")
}

/// One line naming this build.
pub fn version_line() -> alloc::string::String {
    alloc::format!(
        "Levitate {} (git {}) aarch64, {} profile, built with {}",
        env!("CARGO_PKG_VERSION"),
        env!("LEVITATE_GIT_REV"),
        env!("LEVITATE_PROFILE"),
        env!("LEVITATE_RUSTC"),
    )
}

/// Reports a failure that happened before (or instead of) a console, then stops: through the
/// console when there is one, through semihosting when allowed, otherwise silently.
fn boot_failure(args: core::fmt::Arguments<'_>) -> ! {
    if console::present() {
        println!("\nboot failed: {args}");
    } else if power::semihosting_enabled() {
        let mut msg = alloc::string::String::new();
        let _ = core::fmt::write(&mut msg, format_args!("\nboot failed: {args}\n"));
        semihosting::write(msg.as_bytes());
    }
    power::exit_failure(power::EXIT_BOOT_FAILED)
}

/// Records the boot and exception stacks (boot.S) for overflow reports and backtraces.
fn register_boot_stacks() {
    extern "C" {
        static __exception_stack_guard: u8;
        static __exception_stack_bottom: u8;
        static __exception_stack_top: u8;
        static __boot_stack_guard: u8;
        static __boot_stack_bottom: u8;
        static __boot_stack_top: u8;
    }
    let addr = |p: *const u8| p as u64;
    let stacks = [
        StackInfo {
            name: "early boot",
            stack: addr(&raw const __boot_stack_bottom)..addr(&raw const __boot_stack_top),
            guard: addr(&raw const __boot_stack_guard)..addr(&raw const __boot_stack_bottom),
        },
        StackInfo {
            name: "exception cpu0",
            stack: addr(&raw const __exception_stack_bottom)
                ..addr(&raw const __exception_stack_top),
            guard: addr(&raw const __exception_stack_guard)
                ..addr(&raw const __exception_stack_bottom),
        },
    ];
    for s in stacks {
        // Two entries in an empty registry of 64 cannot fail.
        stack_registry::register(s).expect("stack registry invariant: room for the boot stacks");
    }
}

/// The first Rust code, called by boot.S at the link address with the MMU on, interrupts
/// masked, on the boot stack; `entry` is the counter boot.S read at its first instruction.
#[no_mangle]
extern "C" fn levitate_boot_main(dtb_phys: u64, image_phys: u64, boot_el: u64, entry: u64) -> ! {
    boottime::set_entry(entry);
    let image_phys = PhysAddr::new(image_phys);
    early::init(image_phys);
    cpu::disable_lower_half();
    register_boot_stacks();
    smp::init_boot_cpu();
    heap::init();

    // Without a readable device tree there is no console to report to and no way to know if
    // semihosting is allowed: stop cleanly.
    let dt = match devicetree::init(PhysAddr::new(dtb_phys)) {
        Ok(dt) => dt,
        Err(_) => cpu::halt(),
    };
    let fdt = devicetree::fdt();
    let cmdline = tree::chosen_str(&fdt, "bootargs").unwrap_or("");
    let args = BootArgs::parse(cmdline, |_| {});
    power::init(devicetree::psci_conduit(), args.semihosting);

    let console_info = match devicetree::find_console() {
        Ok((device, info)) => {
            console::install(device);
            info
        }
        Err(e) => boot_failure(format_args!("{e}")),
    };
    timer::enable_event_stream();
    logger::init(args.log_level);
    BOOT_INFO.call_once(|| BootInfo {
        boot_el,
        image_phys,
        cmdline,
        args,
    });

    log::info!("{}", version_line());
    log::info!(
        "entered at EL{boot_el}, running at EL1; image at {image_phys}, device tree at {} ({} bytes)",
        dt.phys,
        dt.blob.len()
    );
    if console_info.from_stdout_path {
        log::info!(
            "console: {} at {} (from stdout-path, {})",
            console::driver_name().unwrap_or("?"),
            console_info.phys,
            console_info.compatible
        );
    } else {
        log::info!(
            "console: {} at {} (from first {} node)",
            console::driver_name().unwrap_or("?"),
            console_info.phys,
            console_info.compatible
        );
    }
    watchdog::init();
    // The tick services a watchdog that refused to stop, on every CPU (watchdog::service
    // takes no lock it could wait on). Slots only run out if hooks were added twice.
    if tick::register_tick_hook(watchdog::service).is_err() {
        log::warn!("watchdog: no tick hook slot left: a running watchdog is not serviced");
    }
    // Every CPU answers a hold on its frame stash within a tick, even when it never allocates.
    if tick::register_tick_hook(frames::serve_holds).is_err() {
        log::warn!("frames: no tick hook slot left: stash holds wait for allocator calls");
    }
    // The allocator stress in interrupt context (`irqstat stress on`; idle otherwise).
    if tick::register_tick_hook(frames::tick_stress).is_err() {
        log::warn!("frames: no tick hook slot left for the interrupt-context stress");
    }
    if let Some(model) = fdt
        .find_node("/")
        .and_then(|r| r.property("model"))
        .and_then(|p| p.as_str())
    {
        log::info!("machine: {model}");
    }
    log::info!("command line: \"{cmdline}\"");
    BootArgs::parse(cmdline, |u| {
        log::warn!("ignoring unknown boot argument {:?}", u.0)
    });
    match power::conduit() {
        Some(c) => log::info!("PSCI via {c:?}"),
        None => log::warn!("no PSCI in the device tree: poweroff and reboot will fail"),
    }
    // Before memory::init: the final page tables re-map the MMIO windows ioremap made.
    irq::probe();
    // Also before memory::init: QEMU's ramfb is configured through fw_cfg registers that are
    // ioremapped here.
    screen::probe();

    boottime::mark(boottime::Phase::Early);
    let image = Region::new(image_phys, early::image_size());
    let poison = cfg!(feature = "poison") || args.poison;
    if let Err(e) = memory::init(dt, image, poison) {
        boot_failure(format_args!("memory: {e}"));
    }
    // Leave the static boot stack for one from frames, above a guard page.
    match stacks::new("boot", BOOT_STACK_SIZE) {
        // SAFETY: a fresh, mapped stack nobody else uses; nothing on the current stack is used
        // after the switch (`continue_boot` starts from scratch).
        Ok(stack) => unsafe { cpu::switch_stack(stack.top, continue_boot) },
        Err(e) => boot_failure(format_args!("boot stack: {e}")),
    }
}

/// Size of the boot CPU's kernel stack.
const BOOT_STACK_SIZE: u64 = 64 << 10;

/// The rest of boot, on the frame-backed boot stack.
extern "C" fn continue_boot() -> ! {
    // The screen console as early as frames, the heap and the final tables allow.
    screen::init();
    initramfs::init();
    // Interrupts on for this CPU (controller interface, tick, DAIF.I); each secondary does
    // the same for itself in smp::secondary_main.
    tick::start_boot_cpu(boot_info().args.tick_hz);
    smp::start_secondaries();
    boottime::mark(boottime::Phase::Smp);

    // The test build runs the suites and powers off; both builds compile both paths.
    if cfg!(feature = "ktest") {
        ktest_runner::run();
    }
    shell::run()
}
