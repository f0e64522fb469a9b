//! The shell's command table and the commands themselves.

use super::{CmdError, Command};
use crate::{devicetree, power, println};
use alloc::format;
use alloc::string::ToString;
use levitate_mm::addr::PhysAddr;
use levitate_mm::dtb::tree;
use levitate_mm::region::Region;

/// Every command, in `help` order.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "help",
        args: "",
        help: "list the commands",
        run: help,
    },
    Command {
        name: "version",
        args: "",
        help: "kernel version and build",
        run: version,
    },
    Command {
        name: "dtb",
        args: "",
        help: "device tree: model, memory, reserved memory, chosen",
        run: dtb,
    },
    Command {
        name: "memmap",
        args: "",
        help: "physical memory map: RAM, reserved, usable, mem_map",
        run: memmap,
    },
    Command {
        name: "ls",
        args: "[PATH]",
        help: "list a directory of the initramfs",
        run: ls,
    },
    Command {
        name: "cat",
        args: "PATH",
        help: "print a file of the initramfs",
        run: cat,
    },
    Command {
        name: "meminfo",
        args: "",
        help: "memory totals in /proc/meminfo's style",
        run: super::mm::meminfo,
    },
    Command {
        name: "buddyinfo",
        args: "",
        help: "free blocks per order, as /proc/buddyinfo",
        run: super::mm::buddyinfo,
    },
    Command {
        name: "memcheck",
        args: "",
        help: "run the memory map's and the buddy allocator's invariant checkers",
        run: super::mm::memcheck,
    },
    Command {
        name: "pt",
        args: "ADDR",
        help: "walk the kernel page tables for a virtual address",
        run: super::mm::pt,
    },
    Command {
        name: "stress",
        args: "frames N | heap BYTES",
        help: "random frame or heap allocations with pattern checks (N <= 100000000 per CPU; Ctrl-C stops)",
        run: super::mm::stress,
    },
    Command {
        name: "cpus",
        args: "",
        help: "online CPUs with their MPIDR and what each is doing",
        run: super::mm::cpus,
    },
    Command {
        name: "irqs",
        args: "[panic]",
        help: "interrupt counts per interrupt and CPU, as /proc/interrupts (panic: in a handler)",
        run: super::interrupts::irqs,
    },
    Command {
        name: "uptime",
        args: "",
        help: "time since boot and the timer ticks each CPU took",
        run: super::interrupts::uptime,
    },
    Command {
        name: "console",
        args: "",
        help: "the console driver, where it is, bytes dropped on a stuck transmitter",
        run: console_cmd,
    },
    Command {
        name: "screen",
        args: "",
        help: "the screen console: mode, format, buffer, source, mapping, font, text grid; redraws band and strip",
        run: super::screen::screen,
    },
    Command {
        name: "watchdog",
        args: "",
        help: "the SoC watchdog: where, as found at boot, now, timeout, last service",
        run: watchdog,
    },
    Command {
        name: "heap",
        args: "",
        help: "kernel heap: size, used, free, growths",
        run: heap,
    },
    Command {
        name: "poweroff",
        args: "",
        help: "power the machine off (PSCI)",
        run: poweroff,
    },
    Command {
        name: "reboot",
        args: "",
        help: "reset the machine (PSCI)",
        run: reboot,
    },
    Command {
        name: "panic",
        args: "[--while-printing | --console-stuck] [MESSAGE]",
        help: "panic on purpose (tests the panic path; inside a println!, or with cpu1 holding the console)",
        run: panic,
    },
    Command {
        name: "fault",
        args: "[ADDR | stack | text | serror PHYS]",
        help: "take an unhandled fault on purpose: read ADDR (default 0), overflow the stack, write to kernel text, or write device address PHYS and wait for an SError",
        run: fault,
    },
    Command {
        name: "irqstat",
        args: "[reset | stress on|off]",
        help: "longest interval with interrupts masked per CPU, and where; the tick's allocation stress",
        run: super::mm::irqstat,
    },
];

fn no_args(args: &[&str]) -> Result<(), CmdError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(CmdError::Usage)
    }
}

fn help(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    for c in COMMANDS {
        let synopsis = if c.args.is_empty() {
            c.name.to_string()
        } else {
            format!("{} {}", c.name, c.args)
        };
        println!("  {synopsis:<22} {}", c.help);
    }
    Ok(())
}

fn version(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    println!("{}", crate::version_line());
    Ok(())
}

fn human_size(bytes: u64) -> alloc::string::String {
    format!("{}", levitate_mm::report::Size(bytes))
}

fn be_number(value: &[u8]) -> Option<u64> {
    match value.len() {
        4 => Some(u64::from(u32::from_be_bytes(value.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}

/// One `(base, size)` range read from the tree, as `base..end  size`. A range that runs past
/// 2^64 is clipped there exactly as boot clips it (`Region::new`, which the memory map uses),
/// and the line says so: the tree is input from outside, so no sum here may overflow.
fn range_line(base: u64, size: u64) -> alloc::string::String {
    let r = Region::new(PhysAddr::new(base), size);
    if r.size == size {
        format!("{base:#012x}..{:#012x}  {}", r.end(), human_size(size))
    } else {
        format!(
            "{base:#012x} + {size:#x} runs past 2^64: clipped to {base:#012x}..{:#012x} ({}), as boot does",
            r.end(),
            human_size(r.size)
        )
    }
}

fn dtb(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    let dt = devicetree::get();
    let fdt = devicetree::fdt();
    let root = fdt
        .find_node("/")
        .ok_or_else(|| CmdError::Failed("no root node".into()))?;
    let root_str = |name| {
        root.property(name)
            .and_then(|p| p.as_str())
            .unwrap_or("(none)")
    };
    println!("model:       {}", root_str("model"));
    let compat = root
        .property("compatible")
        .map(|p| {
            p.value
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| core::str::from_utf8(s).unwrap_or("?"))
                .collect::<alloc::vec::Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "(none)".into());
    println!("compatible:  {compat}");
    println!("blob:        {} bytes at {}", dt.blob.len(), dt.phys);

    println!("memory:");
    let mut any = false;
    tree::find_map(&fdt, |n| {
        if n.node.property("device_type").and_then(|p| p.as_str()) == Some("memory") {
            any = true;
            let status = if n.is_enabled() { "" } else { " (disabled)" };
            println!("  {}{status}", n.node.name);
            for (base, size) in n.raw_reg() {
                println!("    {}", range_line(base, size));
            }
        }
        None::<()>
    });
    if !any {
        println!("  (none: the bootloader is expected to add /memory)");
    }

    println!("reserved-memory:");
    match tree::find_path(&fdt, "/reserved-memory") {
        None => println!("  (no /reserved-memory node)"),
        Some(rm) => {
            let (ac, sc) = tree::child_cell_sizes(&rm.node);
            let mut count = 0;
            for child in rm.node.children() {
                count += 1;
                let flag = |name| child.property(name).is_some();
                let mut flags = alloc::string::String::new();
                for (name, word) in [("no-map", " no-map"), ("reusable", " reusable")] {
                    if flag(name) {
                        flags.push_str(word);
                    }
                }
                if child
                    .property("status")
                    .and_then(|p| p.as_str())
                    .is_some_and(|s| s != "okay")
                {
                    flags.push_str(" disabled");
                }
                println!("  {}{flags}", child.name);
                match child.property("reg") {
                    Some(reg) => {
                        for (base, size) in tree::reg_entries(reg.value, ac, sc) {
                            println!("    {}", range_line(base, size));
                        }
                    }
                    None => {
                        let size = child.property("size").and_then(|p| be_number(p.value));
                        match size {
                            Some(s) => println!("    dynamic, size {}", human_size(s)),
                            None => println!("    (no reg and no size)"),
                        }
                    }
                }
            }
            if count == 0 {
                println!("  (empty)");
            }
        }
    }

    println!("memreserve:");
    let mut count = 0;
    for r in fdt.memory_reservations() {
        count += 1;
        // Spec 5.3: the fdt crate hands the 64-bit address out as a pointer.
        println!("  {}", range_line(r.address() as u64, r.size() as u64));
    }
    if count == 0 {
        println!("  (none)");
    }

    println!("chosen:");
    match fdt.find_node("/chosen") {
        None => println!("  (no /chosen node)"),
        Some(chosen) => {
            for p in chosen.properties() {
                let text = match p.name {
                    "linux,initrd-start" | "linux,initrd-end" => {
                        be_number(p.value).map(|v| format!("{v:#x}"))
                    }
                    _ => p.as_str().map(|s| format!("\"{s}\"")),
                };
                match text {
                    Some(t) => println!("  {:<20} {t}", p.name),
                    None => println!("  {:<20} ({} bytes)", p.name, p.value.len()),
                }
            }
        }
    }
    Ok(())
}

fn memmap(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    let map = crate::memory::map();
    let placement = crate::memory::mem_map();
    crate::print!(
        "{}",
        levitate_mm::report::Table {
            map: &map,
            mem_map: placement
        }
    );
    Ok(())
}

fn archive() -> Result<&'static levitate_mm::cpio::Index<'static, 'static>, CmdError> {
    crate::initramfs::get().map_err(|e| CmdError::Failed(format!("{e}")))
}

/// Lists through the boot-time index: each child once, in path order, in steps linear in the
/// entries below the directory (levitate_mm::cpio::Index::read_dir), then the count.
fn ls(args: &[&str]) -> Result<(), CmdError> {
    let path = match args {
        [] => "/",
        [p] => p,
        _ => return Err(CmdError::Usage),
    };
    let index = archive()?;
    let show = |e: &levitate_mm::cpio::Entry<'_>| {
        let suffix = if e.kind() == levitate_mm::cpio::Kind::Dir {
            "/"
        } else {
            ""
        };
        // Names come from the archive: escaped, like file contents in `cat`.
        println!(
            "{} {:>8}  {}{suffix}",
            e.mode_string(),
            e.data.len(),
            super::Escaped(e.name().as_bytes())
        );
    };
    match index.read_dir(path) {
        Ok(entries) => {
            let mut count = 0usize;
            for e in entries {
                show(&e);
                count += 1;
            }
            println!("{count} {}", if count == 1 { "entry" } else { "entries" });
        }
        Err(levitate_mm::cpio::LookupError::NotADirectory) => show(
            &index
                .find(path)
                .ok_or_else(|| CmdError::Failed(format!("{path}: not found")))?,
        ),
        Err(e) => return Err(CmdError::Failed(format!("{path}: {e}"))),
    }
    Ok(())
}

fn cat(args: &[&str]) -> Result<(), CmdError> {
    let [path] = args else {
        return Err(CmdError::Usage);
    };
    let entry = archive()?
        .find(path)
        .ok_or_else(|| CmdError::Failed(format!("{path}: no such file or directory")))?;
    if entry.kind() != levitate_mm::cpio::Kind::File {
        return Err(CmdError::Failed(format!("{path}: not a regular file")));
    }
    // A file must not drive the terminal: controls and bytes that are not UTF-8 are escaped.
    crate::print!("{}", super::Escaped(entry.data));
    if !entry.data.is_empty() && !entry.data.ends_with(b"\n") {
        println!();
    }
    Ok(())
}

fn console_cmd(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    let (Some(info), Some(status)) = (devicetree::console_info(), crate::console::status()) else {
        return Err(CmdError::Failed("no console installed".to_string()));
    };
    println!(
        "console: {} at {} ({}, node {}, from {})",
        status.name,
        info.phys,
        info.compatible,
        info.node,
        if info.from_stdout_path {
            "stdout-path"
        } else {
            "the first node a driver accepts"
        }
    );
    match status.fifo {
        None => println!("  dropped bytes {}", status.dropped),
        Some(f) => println!(
            "  dropped bytes {}, FIFO {} ({} bytes), receive errors {}",
            status.dropped,
            if f.enabled { "on" } else { "off" },
            f.size,
            f.rx_errors
        ),
    }
    Ok(())
}

fn watchdog(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    let mut text = alloc::string::String::new();
    let _ = crate::watchdog::report(&mut text);
    crate::print!("{text}");
    Ok(())
}

fn heap(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    let h = crate::heap::stats();
    println!(
        "size:     {} mapped (limit {})",
        human_size(h.size as u64),
        human_size(h.limit as u64)
    );
    println!("used:     {} bytes", h.used);
    println!("free:     {} bytes", h.free);
    println!(
        "growths:  {} ({} segments live, {} given back)",
        h.growths, h.segments, h.releases
    );
    println!("failures: {}", h.failures);
    println!("boot arena: {}", human_size(h.boot_size as u64));
    Ok(())
}

fn poweroff(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    println!("powering off");
    Err(CmdError::Failed(format!("{}", power::poweroff())))
}

fn reboot(args: &[&str]) -> Result<(), CmdError> {
    no_args(args)?;
    println!("rebooting");
    Err(CmdError::Failed(format!("{}", power::reboot())))
}

fn panic(args: &[&str]) -> Result<(), CmdError> {
    match args {
        [] => panic!("panic requested from the shell"),
        ["--while-printing", rest @ ..] => {
            // A `Display` that panics while `println!` holds the console lock.
            struct PanicsWhenShown<'a>(&'a [&'a str]);
            impl core::fmt::Display for PanicsWhenShown<'_> {
                fn fmt(&self, _: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    panic!("inside Display while printing: {}", self.0.join(" "));
                }
            }
            println!(
                "printing a value whose Display panics: {}",
                PanicsWhenShown(rest)
            );
            unreachable!("the Display above panics");
        }
        ["--console-stuck", rest @ ..] => {
            if !crate::smp::start_detached(1, hold_console_forever, 0) {
                println!("panic --console-stuck: needs a second CPU online (cpu1)");
                return Ok(());
            }
            while !crate::console::held_elsewhere() {
                core::hint::spin_loop();
            }
            panic!("with the console held by cpu1 forever: {}", rest.join(" "));
        }
        _ => panic!("{}", args.join(" ")),
    }
}

/// A job for `panic --console-stuck`: takes the console lock and never lets it go.
fn hold_console_forever(_: usize) -> u64 {
    crate::console::with_lock_held(|| loop {
        core::hint::spin_loop();
    })
}

fn fault(args: &[&str]) -> Result<(), CmdError> {
    let addr = match args {
        [] => 0,
        ["stack"] => {
            println!("recursing until the stack overflows");
            let depth = recurse(0);
            println!("returned from depth {depth}?");
            return Ok(());
        }
        ["text"] => {
            let target = fault as *const () as *mut u32;
            println!("writing to kernel text at {:#x}", target as u64);
            // SAFETY: deliberately unsound on request: text is mapped read-only, so this
            // write faults (a permission fault) instead of changing code.
            unsafe { target.write_volatile(0) };
            return Ok(());
        }
        ["serror", pa] => {
            let digits = pa.strip_prefix("0x").unwrap_or(pa);
            let pa = u64::from_str_radix(digits, 16).map_err(|_| CmdError::Usage)?;
            return serror(pa);
        }
        [a] => {
            let digits = a.strip_prefix("0x").unwrap_or(a);
            u64::from_str_radix(digits, 16).map_err(|_| CmdError::Usage)?
        }
        _ => return Err(CmdError::Usage),
    };
    println!("reading {addr:#x}");
    let value = load(addr);
    println!("{addr:#x} holds {value:#x}");
    Ok(())
}

/// A virtual page in the MMIO window, far above what `ioremap` hands out, for `fault serror`.
const SERROR_PROBE_VA: u64 = levitate_hal::layout::MMIO_BASE + 0x00f0_0000_0000;

/// `fault serror PHYS`: maps the page of `pa` as Device-nGnRE, writes a 32-bit word there and
/// waits for the write to complete (DSB SY, ISB), which is where an asynchronous external abort
/// is taken with DAIF.A clear: the SError report follows. What a bad write raises is the
/// system's choice (ARM ARM D1.3.5): on real hardware a rejected device write usually comes
/// back as an SError; QEMU TCG reports it synchronously (a synchronous external abort on the
/// store), and has no device that raises a physical SError at all.
fn serror(pa: u64) -> Result<(), CmdError> {
    use levitate_hal::arch::aarch64::mmu::descriptor::Attributes;
    use levitate_hal::VirtAddr;
    use levitate_mm::addr::PAGE_SIZE;
    let page = pa & !(PAGE_SIZE - 1);
    if crate::memory::map()
        .memory()
        .iter()
        .any(|r| r.contains(page))
    {
        return Err(CmdError::Failed(format!(
            "{pa:#x} is RAM: give a device or unassigned physical address"
        )));
    }
    let va = VirtAddr::new(SERROR_PROBE_VA);
    crate::paging::map(va, PhysAddr::new(page), PAGE_SIZE, Attributes::DEVICE)
        .map_err(|e| CmdError::Failed(format!("cannot map {pa:#x}: {e}")))?;
    let target = SERROR_PROBE_VA + (pa & (PAGE_SIZE - 1) & !3);
    println!("writing a word to device address {pa:#x} (at {target:#x}) and waiting for an SError");
    // SAFETY: deliberately unsound on request: a store to a device page the user named, to see
    // how the system reports a bad write. It completes, or traps into the fatal-exception path
    // (a synchronous external abort now, or an SError at the barrier), which does not return.
    unsafe {
        core::arch::asm!(
            "str {v:w}, [{at}]",
            "dsb sy",
            "isb",
            at = in(reg) target,
            v = in(reg) 0u64,
            options(nostack, preserves_flags)
        );
    }
    let isr: u64;
    // SAFETY: reads ISR_EL1 (pending interrupts and SError); no memory access.
    unsafe { core::arch::asm!("mrs {}, isr_el1", out(reg) isr, options(nomem, nostack)) };
    let _ = crate::paging::unmap(va, PAGE_SIZE);
    println!(
        "the write to {pa:#x} completed without an abort (ISR_EL1.A = {}): nothing answered it with an error",
        (isr >> 8) & 1
    );
    Ok(())
}

/// One 64-bit load from any address, aligned or not: a single `ldr` the compiler cannot fold,
/// split or reason about (`read_volatile` demands an aligned pointer: a debug build panics on
/// a misaligned one instead of faulting, and a release build may assume alignment). With
/// SCTLR_EL1.A clear, a misaligned load from Normal memory reads, and one from Device memory
/// takes an alignment fault (ARM ARM B2.5.2); either way `fault` shows what the hardware does.
fn load(addr: u64) -> u64 {
    let value: u64;
    // SAFETY: deliberately unsound on request: the user asked to read `addr` to see the
    // report. The load either reads (a mapped address; nothing is written) or traps into the
    // fatal-exception path, which does not return here.
    unsafe {
        core::arch::asm!(
            "ldr {value}, [{addr}]",
            addr = in(reg) addr,
            value = lateout(reg) value,
            options(nostack, readonly, preserves_flags)
        );
    }
    value
}

/// Recursion with a frame the optimiser cannot remove, for `fault stack`.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 64]);
    // Always true at run time, but the compiler cannot tell, so the recursion stays.
    if core::hint::black_box(depth) != u64::MAX {
        return recurse(depth + 1) + frame[depth as usize % 64];
    }
    frame[0]
}
