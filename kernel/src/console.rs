//! The kernel console: the UART found through the device tree, shared by the logger, the shell
//! and the panic handler, plus `print!`/`println!`.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use levitate_hal::arch::aarch64::{cpu, timer};
use levitate_hal::console::Console;
use levitate_hal::drivers::bus::MmioBus;
use levitate_hal::drivers::exynos_uart::{self, ExynosUart};
use levitate_hal::drivers::pl011::{self, Pl011};
use levitate_hal::sync::{IrqSafeMutex, IrqSafeMutexGuard};

/// The console devices the kernel can drive.
pub enum Device {
    /// Arm PL011 (QEMU virt, Juno, FVP, many boards).
    Pl011(Pl011),
    /// Samsung/Exynos UART (gs101: Pixel 6; Exynos850).
    Exynos(ExynosUart<MmioBus>),
}

/// One console driver: what it binds to and how it comes up.
pub struct Driver {
    /// `compatible` strings it accepts.
    pub compatible: &'static [&'static str],
    /// Bytes of registers to map.
    pub mmio_size: u64,
    /// Brings the device up on registers mapped at virtual address `va`; `fifo_size` is the
    /// node's `samsung,uart-fifosize` if it has one.
    ///
    /// # Safety
    /// `va` must map `mmio_size` bytes of this device's registers as Device memory for the
    /// kernel's lifetime, used by no other driver.
    pub probe: unsafe fn(va: usize, fifo_size: Option<u32>) -> Device,
}

/// Every console driver, in the order ties are broken (a node's own `compatible` order
/// decides first). `devicetree::find_console` picks from this table and nothing else names a
/// UART.
pub const DRIVERS: [Driver; 2] = [
    Driver {
        compatible: pl011::COMPATIBLE,
        mmio_size: pl011::MMIO_SIZE,
        probe: probe_pl011,
    },
    Driver {
        compatible: exynos_uart::COMPATIBLE,
        mmio_size: exynos_uart::MMIO_SIZE,
        probe: probe_exynos,
    },
];

/// The `compatible` lists of `DRIVERS` (same order), for the pure selection in levitate-mm.
pub const DRIVER_COMPATIBLES: [&[&str]; DRIVERS.len()] = {
    let mut lists: [&[&str]; DRIVERS.len()] = [&[]; DRIVERS.len()];
    let mut i = 0;
    while i < DRIVERS.len() {
        lists[i] = DRIVERS[i].compatible;
        i += 1;
    }
    lists
};

unsafe fn probe_pl011(va: usize, _: Option<u32>) -> Device {
    // SAFETY: forwarded from `Driver::probe`'s contract.
    let mut uart = unsafe { Pl011::new(va) };
    uart.init();
    Device::Pl011(uart)
}

unsafe fn probe_exynos(va: usize, fifo_size: Option<u32>) -> Device {
    // SAFETY: forwarded from `Driver::probe`'s contract (`mmio_size` bytes mapped at `va`).
    let bus = unsafe { MmioBus::new(va, exynos_uart::MMIO_SIZE as usize) };
    let mut uart = ExynosUart::new(bus, fifo_size.unwrap_or(exynos_uart::DEFAULT_FIFO_SIZE));
    uart.init();
    Device::Exynos(uart)
}

impl Device {
    fn as_console(&mut self) -> &mut dyn Console {
        match self {
            Device::Pl011(u) => u,
            Device::Exynos(u) => u,
        }
    }

    /// FIFO mode, FIFO depth and receive errors, for drivers that track them.
    fn fifo(&self) -> Option<FifoStatus> {
        match self {
            Device::Pl011(_) => None,
            Device::Exynos(u) => Some(FifoStatus {
                enabled: u.fifo_mode(),
                size: u.fifo_size(),
                rx_errors: u.rx_errors(),
            }),
        }
    }
}

/// FIFO state of a driver that reports it.
#[derive(Clone, Copy)]
pub struct FifoStatus {
    /// FIFO mode is on.
    pub enabled: bool,
    /// Depth in bytes.
    pub size: u32,
    /// Characters received with an error.
    pub rx_errors: u64,
}

/// What the installed console's driver reports.
#[derive(Clone, Copy)]
pub struct Status {
    /// Driver name.
    pub name: &'static str,
    /// Bytes dropped after a bounded wait for transmit room.
    pub dropped: u64,
    /// FIFO details, for drivers that report them.
    pub fifo: Option<FifoStatus>,
}

/// The installed console's status, read under the console lock (nothing is allocated or
/// locked while it is held).
pub fn status() -> Option<Status> {
    let mut held = lock();
    let dev = held.0.as_mut()?;
    let fifo = dev.fifo();
    let console = dev.as_console();
    Some(Status {
        name: console.name(),
        dropped: console.dropped(),
        fifo,
    })
}

/// The installed console's driver name (for the boot log).
pub fn driver_name() -> Option<&'static str> {
    Some(lock().0.as_mut()?.as_console().name())
}

/// The console device. Protects the UART's registers and the order of what is written.
/// Lock order: taken before the screen's lock (`screen::SCREEN`, which mirrors the output and
/// is a leaf), and nothing else is taken while it is held (the formatting done under it
/// only calls `Display` impls, which take no kernel lock). IRQ-safe: an `IrqSafeMutex`, so
/// IRQ+FIQ are masked on this CPU while it is held, and an interrupt handler that logs never
/// finds it held by the code it interrupted; other CPUs wait their turn (a line's worth of
/// UART writes; on a real 115200-baud UART that is about 87 us per byte once the FIFO is
/// full, the longest ordinary masked section there is). The panic path never waits on it
/// unboundedly: `write_fmt_panic` only try-locks (never spinning with a lock's interrupt
/// guard held), takes it over at once from its own CPU and after a bounded wait from another.
static CONSOLE: IrqSafeMutex<Option<Device>> = IrqSafeMutex::new(None);

/// Whether a console is installed: read by the panic path, which must not take the lock.
static PRESENT: AtomicBool = AtomicBool::new(false);

/// The CPU holding `CONSOLE` (`cpu_tag()`), or 0: lets the panic path see that the lock is
/// its own, held further up this CPU's stack (a panic inside a `Display` while printing).
static OWNER: AtomicU64 = AtomicU64::new(0);

/// The CPU that is printing a panic report, or 0. Once set, other CPUs' ordinary output is
/// dropped so it cannot interleave with the report.
static PANIC_OWNER: AtomicU64 = AtomicU64::new(0);

/// How long the panic path waits for another CPU to release the console before it takes the
/// console anyway: a garbled line beats a silent hang.
const PANIC_WAIT_MS: u64 = 100;

/// A nonzero tag for this CPU (MPIDR affinity with a marker bit; no per-CPU data needed, so
/// it works before SMP is set up).
fn cpu_tag() -> u64 {
    cpu::mpidr() | 1 << 63
}

/// `CONSOLE` held, with `OWNER` naming this CPU for as long as the guard lives.
struct Held(IrqSafeMutexGuard<'static, Option<Device>>);

impl Held {
    fn new(guard: IrqSafeMutexGuard<'static, Option<Device>>) -> Self {
        OWNER.store(cpu_tag(), Ordering::Relaxed);
        Self(guard)
    }

    /// Formats `args` onto the device, if there is one; `panic` writes are never dropped
    /// for another CPU's panic report.
    fn write(&mut self, args: fmt::Arguments<'_>, panic: bool) {
        if let Some(dev) = self.0.as_mut() {
            let _ = fmt::write(
                &mut Writer {
                    console: dev.as_console(),
                    panic,
                    // Lock order: CONSOLE, then the screen (a leaf).
                    screen: crate::screen::mirror(panic),
                },
                args,
            );
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        OWNER.store(0, Ordering::Relaxed);
    }
}

#[track_caller]
fn lock() -> Held {
    Held::new(CONSOLE.lock())
}

/// Installs the console.
pub fn install(device: Device) {
    *lock().0 = Some(device);
    PRESENT.store(true, Ordering::Release);
}

/// Whether a console is installed. Takes no lock (the panic path calls it).
pub fn present() -> bool {
    PRESENT.load(Ordering::Acquire)
}

struct Writer<'a> {
    console: &'a mut dyn Console,
    /// Writing a panic report: never suppressed.
    panic: bool,
    /// The screen console, when there is one: it shows what the UART gets.
    screen: Option<crate::screen::Mirror>,
}

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let owner = PANIC_OWNER.load(Ordering::Relaxed);
        if !self.panic && owner != 0 && owner != cpu_tag() {
            // Another CPU is printing a panic report: stay out of it.
            return Err(fmt::Error);
        }
        self.console.write_str(s);
        if let Some(screen) = self.screen.as_mut() {
            screen.write(s.as_bytes());
        }
        Ok(())
    }
}

/// Writes formatted text to the console (dropped when there is none).
#[track_caller]
pub fn write_fmt(args: fmt::Arguments<'_>) {
    lock().write(args, false);
}

/// Writes raw bytes (the shell's echo).
pub fn write_bytes(bytes: &[u8]) {
    let mut held = lock();
    if let Some(dev) = held.0.as_mut() {
        let c = dev.as_console();
        for &b in bytes {
            c.write_byte(b);
        }
        if let Some(mut screen) = crate::screen::mirror(false) {
            screen.write(bytes);
        }
    }
}

/// Reads a byte if one is waiting: first what `interrupted` set aside, then the UART.
pub fn read_byte() -> Option<u8> {
    if let Some(byte) = TYPEAHEAD.lock().pop() {
        return Some(byte);
    }
    lock().0.as_mut()?.as_console().read_byte()
}

/// Ctrl-C as the terminal sends it (ASCII ETX), what Linux's tty calls VINTR.
pub const INTERRUPT: u8 = 0x03;

/// Input that arrived while a long command ran, kept in order for the shell. Lock order:
/// this, then `CONSOLE`. Only the CPU running the shell takes it; it is an `IrqSafeMutex`
/// like `CONSOLE` (IRQ+FIQ masked while held), so a future console-input interrupt handler
/// could feed it without deadlocking against the shell it interrupted.
static TYPEAHEAD: IrqSafeMutex<Typeahead> = IrqSafeMutex::new(Typeahead {
    bytes: [0; TYPEAHEAD_BYTES],
    head: 0,
    len: 0,
});

/// How much typed-ahead input is kept: a few command lines. When it is full, `interrupted`
/// stops reading, so the rest waits in the UART (and, under QEMU, in the pipe) instead of
/// being dropped.
const TYPEAHEAD_BYTES: usize = 1024;

struct Typeahead {
    bytes: [u8; TYPEAHEAD_BYTES],
    head: usize,
    len: usize,
}

impl Typeahead {
    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.bytes[self.head];
        self.head = (self.head + 1) % TYPEAHEAD_BYTES;
        self.len -= 1;
        Some(byte)
    }

    fn push(&mut self, byte: u8) {
        self.bytes[(self.head + self.len) % TYPEAHEAD_BYTES] = byte;
        self.len += 1;
    }
}

/// Whether the user pressed Ctrl-C since the last look, for long commands that poll. Reads
/// what is waiting: the Ctrl-C is consumed, every other byte is kept for `read_byte`.
pub fn interrupted() -> bool {
    let mut ahead = TYPEAHEAD.lock();
    let mut console = lock();
    let Some(dev) = console.0.as_mut() else {
        return false;
    };
    while ahead.len < TYPEAHEAD_BYTES {
        match dev.as_console().read_byte() {
            None => return false,
            Some(INTERRUPT) => return true,
            Some(byte) => ahead.push(byte),
        }
    }
    false
}

/// Runs `f` with the console lock held by this CPU (the `fault console` shell commands use it
/// to show that a panic under the lock still reports).
pub fn with_lock_held<R>(f: impl FnOnce() -> R) -> R {
    let _held = lock();
    f()
}

/// Whether another CPU holds the console lock right now.
pub fn held_elsewhere() -> bool {
    let owner = OWNER.load(Ordering::Relaxed);
    owner != 0 && owner != cpu_tag()
}

/// Writes from the panic path, never waiting unboundedly: if this CPU holds the lock (the
/// panic happened while it was printing), the lock is taken over at once; if another CPU
/// holds it, this waits at most `PANIC_WAIT_MS` and then takes it over. From then on other
/// CPUs' ordinary output is dropped.
pub fn write_fmt_panic(args: fmt::Arguments<'_>) {
    let me = cpu_tag();
    // The first CPU to panic owns the report; a second panicking CPU still prints (its
    // report matters too) but does not take ownership away.
    let _ = PANIC_OWNER.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed);
    let started = timer::ticks();
    let patience = timer::frequency() / 1000 * PANIC_WAIT_MS;
    let guard = loop {
        if let Some(guard) = CONSOLE.try_lock() {
            break guard;
        }
        let ours = OWNER.load(Ordering::Relaxed) == me;
        if ours || timer::ticks().wrapping_sub(started) > patience {
            // SAFETY: the holder is this CPU's own interrupted print further up the stack
            // (which will never run again: panics do not return), or a CPU that kept the lock
            // past all patience while we are going down. Breaking the lock can at worst mix
            // two writers' bytes in the UART FIFO; the console's state is only its registers.
            unsafe { CONSOLE.force_unlock() };
        }
        core::hint::spin_loop();
    };
    let mut held = Held::new(guard);
    held.write(args, true);
    if let Some(dev) = held.0.as_mut() {
        dev.as_console().flush();
    }
}

/// Writes formatted text if the console is free right now; false (nothing written) if anyone
/// holds it. For interrupt context, where waiting could deadlock against the interrupted
/// code on this CPU.
pub fn try_write_fmt(args: fmt::Arguments<'_>) -> bool {
    let Some(guard) = CONSOLE.try_lock() else {
        return false;
    };
    Held::new(guard).write(args, false);
    true
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
