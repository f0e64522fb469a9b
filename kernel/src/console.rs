//! The kernel console: the UART found through the device tree, shared by the logger, the shell
//! and the panic handler, plus `print!`/`println!`.

use core::fmt;
use levitate_hal::console::Console;
use levitate_hal::drivers::pl011::Pl011;
use spin::Mutex;

/// The console devices the kernel can drive.
pub enum Device {
    /// Arm PL011 (QEMU virt, Juno, FVP, many boards).
    Pl011(Pl011),
}

impl Device {
    fn as_console(&mut self) -> &mut dyn Console {
        match self {
            Device::Pl011(u) => u,
        }
    }
}

/// Interrupts stay masked while the kernel runs with this lock (no console interrupt handler
/// exists), so an interrupt cannot deadlock on it; other CPUs simply wait their turn. The
/// panic handler takes it with `lock_for_panic`.
static CONSOLE: Mutex<Option<Device>> = Mutex::new(None);

/// Installs the console.
pub fn install(device: Device) {
    *CONSOLE.lock() = Some(device);
}

/// Whether a console is installed.
pub fn present() -> bool {
    CONSOLE.lock().is_some()
}

struct Writer<'a>(&'a mut dyn Console);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s);
        Ok(())
    }
}

/// Writes formatted text to the console (dropped when there is none).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(dev) = CONSOLE.lock().as_mut() {
        let _ = fmt::write(&mut Writer(dev.as_console()), args);
    }
}

/// Writes raw bytes (the shell's echo).
pub fn write_bytes(bytes: &[u8]) {
    if let Some(dev) = CONSOLE.lock().as_mut() {
        let c = dev.as_console();
        for &b in bytes {
            c.write_byte(b);
        }
    }
}

/// Reads a byte if one is waiting: first what `interrupted` set aside, then the UART.
pub fn read_byte() -> Option<u8> {
    if let Some(byte) = TYPEAHEAD.lock().pop() {
        return Some(byte);
    }
    CONSOLE.lock().as_mut()?.as_console().read_byte()
}

/// Ctrl-C as the terminal sends it (ASCII ETX), what Linux's tty calls VINTR.
pub const INTERRUPT: u8 = 0x03;

/// Input that arrived while a long command ran, kept in order for the shell. Lock order:
/// this, then `CONSOLE`; both are taken with interrupts masked (no console interrupt handler
/// exists), and only the CPU running the shell takes this one.
static TYPEAHEAD: Mutex<Typeahead> = Mutex::new(Typeahead {
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
    let mut console = CONSOLE.lock();
    let Some(dev) = console.as_mut() else {
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

/// Writes from the panic path. If the lock is held (the panic happened while printing, or
/// another CPU is printing), it waits a bounded time and then takes the console anyway:
/// a garbled line beats a silent hang.
pub fn write_fmt_panic(args: fmt::Arguments<'_>) {
    let mut spins = 0u32;
    loop {
        if let Some(mut guard) = CONSOLE.try_lock() {
            if let Some(dev) = guard.as_mut() {
                let _ = fmt::write(&mut Writer(dev.as_console()), args);
                dev.as_console().flush();
            }
            return;
        }
        spins += 1;
        if spins == 10_000_000 {
            // SAFETY: we are panicking and the holder has had ample time; forcing the lock is
            // the lesser evil. The console's own state is only FIFO registers.
            unsafe { CONSOLE.force_unlock() };
        }
        core::hint::spin_loop();
    }
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
