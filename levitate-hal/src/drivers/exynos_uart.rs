//! Samsung Exynos UART ("S3C64xx/S5P" register layout) as on Google gs101 (Pixel 6) and
//! Exynos850: a polled console driver.
//!
//! Facts from Linux (drivers/tty/serial/samsung_tty.c, include/linux/serial_s3c.h): the
//! register offsets below; gs101's port data says `UPIO_MEM32` (the peric buses take only
//! 32-bit accesses: a byte store raises an SError, so every access here is a `u32`, checked
//! by the host model) and leaves the FIFO depth to the tree's `samsung,uart-fifosize` (256
//! bytes on port 0, the console); UFSTAT uses the S5PV210 layout (RX count bits 7:0, RX full
//! bit 8, TX count bits 23:16, TX full bit 24); UTRSTAT bit 0 is "receive data ready", bit 1
//! "transmit buffer empty", bit 2 "transmitter empty" (buffer and shifter); a port whose UCON
//! has neither receive nor transmit mode set (bits 3:0 zero) is unconfigured, and Linux does
//! not transmit on it.
//!
//! The bootloader (ABL) configured the port: ULCON (framing) and UBRDIV/UFRACVAL (baud) are
//! never written. The transmit path counts free FIFO entries from UFSTAT so it never writes
//! into a full FIFO, and waits a bounded number of polls for room: a dead FIFO costs one
//! bounded wait, after which bytes are dropped (and counted) with a single poll each until
//! the FIFO moves again.

use super::bus::{BusRegister, RegisterBus};
use crate::console::Console;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::ReadWrite;
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// Line control (framing, kept as the bootloader set it).
    pub ULCON [
        /// Word length (3 = 8 bits).
        WORD_LENGTH OFFSET(0) NUMBITS(2) [],
        /// Parity mode.
        PARITY OFFSET(3) NUMBITS(3) []
    ],
    /// Control.
    pub UCON [
        /// Receive mode (0 = disabled, 1 = interrupt or polling, 2 = DMA).
        RX_MODE OFFSET(0) NUMBITS(2) [
            Disabled = 0,
            Polling = 1
        ],
        /// Transmit mode (0 = disabled, 1 = interrupt or polling, 2 = DMA).
        TX_MODE OFFSET(2) NUMBITS(2) [
            Disabled = 0,
            Polling = 1
        ]
    ],
    /// FIFO control.
    pub UFCON [
        /// FIFO mode on.
        FIFO_ENABLE OFFSET(0) NUMBITS(1) [],
        /// Reset the receive FIFO (self-clearing).
        RX_FIFO_RESET OFFSET(1) NUMBITS(1) [],
        /// Reset the transmit FIFO (self-clearing).
        TX_FIFO_RESET OFFSET(2) NUMBITS(1) []
    ],
    /// Transmit/receive status.
    pub UTRSTAT [
        /// A received character is waiting (non-FIFO mode).
        RX_DATA_READY OFFSET(0) NUMBITS(1) [],
        /// The transmit buffer is empty (non-FIFO mode).
        TX_BUFFER_EMPTY OFFSET(1) NUMBITS(1) [],
        /// Buffer and shifter are both empty: everything written has left.
        TX_EMPTY OFFSET(2) NUMBITS(1) []
    ],
    /// Receive error status (cleared by reading).
    pub UERSTAT [
        /// Overrun, parity, frame and break errors.
        ANY OFFSET(0) NUMBITS(4) []
    ],
    /// FIFO status (S5PV210/Exynos layout).
    pub UFSTAT [
        /// Characters in the receive FIFO (when not full).
        RX_COUNT OFFSET(0) NUMBITS(8) [],
        /// The receive FIFO is full.
        RX_FULL OFFSET(8) NUMBITS(1) [],
        /// Characters in the transmit FIFO (when not full).
        TX_COUNT OFFSET(16) NUMBITS(8) [],
        /// The transmit FIFO is full.
        TX_FULL OFFSET(24) NUMBITS(1) []
    ],
    /// Interrupt mask (a set bit masks).
    pub UINTM [
        /// Receive, error, transmit and modem interrupts.
        ALL OFFSET(0) NUMBITS(4) []
    ],
    /// A character register (UTXH/URXH): the low 8 bits.
    pub DATA [
        /// The character.
        CHAR OFFSET(0) NUMBITS(8) []
    ]
}

register_structs! {
    /// The register block: the offsets are the single source the accessors use.
    #[allow(non_snake_case)]
    pub Registers {
        (0x00 => ULCON: ReadWrite<u32, ULCON::Register>),
        (0x04 => UCON: ReadWrite<u32, UCON::Register>),
        (0x08 => UFCON: ReadWrite<u32, UFCON::Register>),
        (0x0c => UMCON: ReadWrite<u32>),
        (0x10 => UTRSTAT: ReadWrite<u32, UTRSTAT::Register>),
        (0x14 => UERSTAT: ReadWrite<u32, UERSTAT::Register>),
        (0x18 => UFSTAT: ReadWrite<u32, UFSTAT::Register>),
        (0x1c => UMSTAT: ReadWrite<u32>),
        (0x20 => UTXH: ReadWrite<u32, DATA::Register>),
        (0x24 => URXH: ReadWrite<u32, DATA::Register>),
        (0x28 => UBRDIV: ReadWrite<u32>),
        (0x2c => UFRACVAL: ReadWrite<u32>),
        (0x30 => UINTP: ReadWrite<u32>),
        (0x34 => UINTSP: ReadWrite<u32>),
        (0x38 => UINTM: ReadWrite<u32, UINTM::Register>),
        (0x3c => @END),
    }
}

/// Size of the register window to map (the tree says 0xc0; mapping is page-granular).
pub const MMIO_SIZE: u64 = 0x1000;

/// `compatible` strings this driver binds to: the mainline gs101 and Exynos850 ports, and
/// `samsung,exynos-uart`, which the Google Tensor downstream kernels' exynos_tty.c binds with
/// the same S5PV210 UFSTAT layout and the FIFO depth left to the tree (read in the gs201
/// downstream tree; that the stock Pixel 6 tree's console node uses it is unverified).
pub const COMPATIBLE: &[&str] = &[
    "google,gs101-uart",
    "samsung,exynos850-uart",
    "samsung,exynos-uart",
];

/// The FIFO depth assumed when the tree has no `samsung,uart-fifosize`: the smallest Samsung
/// port's. Too small only costs extra UFSTAT reads (room is re-read sooner); too large could
/// overrun, so the guess errs low.
pub const DEFAULT_FIFO_SIZE: u32 = 16;

/// Polls of the status register spent waiting for transmit room before a byte is dropped. A
/// device read takes well over 10 ns, so this waits more than 10 ms: beyond a whole 256-byte
/// FIFO's drain time at 115200 baud (22 ms) only on a very fast interconnect, and far beyond
/// the single byte time (87 us) that frees one entry.
pub const TX_POLL_LIMIT: u32 = 1_000_000;

/// A Samsung/Exynos UART on bus `B`.
pub struct ExynosUart<B: RegisterBus> {
    bus: B,
    fifo_size: u32,
    /// FIFO mode is on (as found, or switched on by `init` while idle).
    fifo_mode: bool,
    /// Entries the transmit FIFO can still take, as of the last UFSTAT read.
    tx_room: u32,
    /// The last wait for room ran out: poll once per byte until the FIFO moves again.
    stalled: bool,
    dropped: u64,
    rx_errors: u64,
}

/// How `init` found the port, for the boot log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitReport {
    /// FIFO mode was already on.
    pub fifo_was_on: bool,
    /// FIFO mode is on now.
    pub fifo_on: bool,
    /// UCON had transmit or receive disabled and `init` set them to polling mode.
    pub enabled_modes: bool,
}

macro_rules! register {
    ($name:ident, $field:ident, $bits:ty) => {
        fn $name(&self) -> BusRegister<'_, B, u32, $bits> {
            BusRegister::new(&self.bus, core::mem::offset_of!(Registers, $field))
        }
    };
}

impl<B: RegisterBus> ExynosUart<B> {
    /// A driver for the UART behind `bus` whose FIFOs hold `fifo_size` bytes (the tree's
    /// `samsung,uart-fifosize`, else [`DEFAULT_FIFO_SIZE`]).
    pub fn new(bus: B, fifo_size: u32) -> Self {
        Self {
            bus,
            fifo_size: fifo_size.clamp(1, 256),
            fifo_mode: false,
            tx_room: 0,
            stalled: false,
            dropped: 0,
            rx_errors: 0,
        }
    }

    register!(ucon, UCON, UCON::Register);
    register!(ufcon, UFCON, UFCON::Register);
    register!(utrstat, UTRSTAT, UTRSTAT::Register);
    register!(uerstat, UERSTAT, UERSTAT::Register);
    register!(ufstat, UFSTAT, UFSTAT::Register);
    register!(utxh, UTXH, DATA::Register);
    register!(urxh, URXH, DATA::Register);
    register!(uintm, UINTM, UINTM::Register);

    /// Makes the port usable for polled I/O without touching framing or baud rate.
    ///
    /// - Transmit and receive mode: set to polling where UCON has them disabled (a port ABL
    ///   printed through has both set already).
    /// - Interrupts masked in UINTM: this driver polls and no handler exists.
    /// - FIFO mode: kept if on. If off, it is switched on only when the transmitter is empty
    ///   and no character is waiting: then no data is in flight that changing the mode could
    ///   lose (the write sets only FIFO_ENABLE, never the self-clearing reset bits).
    ///   Otherwise the driver runs in non-FIFO mode on UTRSTAT's flags, which is slower but
    ///   correct.
    pub fn init(&mut self) -> InitReport {
        let ucon = self.ucon().extract();
        let mut enabled_modes = false;
        let mut new_ucon = ucon.get();
        if ucon.read(UCON::RX_MODE) == 0 {
            new_ucon |= UCON::RX_MODE::Polling.value;
            enabled_modes = true;
        }
        if ucon.read(UCON::TX_MODE) == 0 {
            new_ucon |= UCON::TX_MODE::Polling.value;
            enabled_modes = true;
        }
        if enabled_modes {
            self.ucon().set(new_ucon);
        }
        self.uintm().write(UINTM::ALL.val(0xf));

        let ufcon = self.ufcon().extract();
        let fifo_was_on = ufcon.is_set(UFCON::FIFO_ENABLE);
        self.fifo_mode = fifo_was_on;
        if !fifo_was_on {
            let status = self.utrstat().extract();
            if status.is_set(UTRSTAT::TX_EMPTY) && !status.is_set(UTRSTAT::RX_DATA_READY) {
                let keep = ufcon.get()
                    & !(UFCON::RX_FIFO_RESET::SET.value | UFCON::TX_FIFO_RESET::SET.value);
                self.ufcon().set(keep | UFCON::FIFO_ENABLE::SET.value);
                self.fifo_mode = self.ufcon().is_set(UFCON::FIFO_ENABLE);
            }
        }
        self.tx_room = 0;
        InitReport {
            fifo_was_on,
            fifo_on: self.fifo_mode,
            enabled_modes,
        }
    }

    /// Free transmit entries right now.
    fn room(&self) -> u32 {
        if self.fifo_mode {
            let status = self.ufstat().extract();
            if status.is_set(UFSTAT::TX_FULL) {
                0
            } else {
                self.fifo_size.saturating_sub(status.read(UFSTAT::TX_COUNT))
            }
        } else {
            u32::from(self.utrstat().is_set(UTRSTAT::TX_BUFFER_EMPTY))
        }
    }

    /// Waits (bounded) for transmit room; 0 when there is none in time.
    fn wait_for_room(&mut self) -> u32 {
        let polls = if self.stalled { 1 } else { TX_POLL_LIMIT };
        for _ in 0..polls {
            let room = self.room();
            if room > 0 {
                self.stalled = false;
                return room;
            }
            core::hint::spin_loop();
        }
        self.stalled = true;
        0
    }

    /// The FIFO depth in use.
    pub fn fifo_size(&self) -> u32 {
        self.fifo_size
    }

    /// Whether FIFO mode is on.
    pub fn fifo_mode(&self) -> bool {
        self.fifo_mode
    }

    /// Characters received with an overrun, parity, frame or break error.
    pub fn rx_errors(&self) -> u64 {
        self.rx_errors
    }

    /// The bus (host tests inspect their model through it).
    pub fn bus(&self) -> &B {
        &self.bus
    }
}

impl<B: RegisterBus + Send> Console for ExynosUart<B> {
    fn name(&self) -> &'static str {
        "Samsung/Exynos UART"
    }

    fn write_byte(&mut self, byte: u8) {
        if self.tx_room == 0 {
            self.tx_room = self.wait_for_room();
            if self.tx_room == 0 {
                self.dropped += 1;
                return;
            }
        }
        self.utxh().write(DATA::CHAR.val(u32::from(byte)));
        self.tx_room -= 1;
    }

    fn read_byte(&mut self) -> Option<u8> {
        let waiting = if self.fifo_mode {
            let status = self.ufstat().extract();
            status.is_set(UFSTAT::RX_FULL) || status.read(UFSTAT::RX_COUNT) > 0
        } else {
            self.utrstat().is_set(UTRSTAT::RX_DATA_READY)
        };
        if !waiting {
            return None;
        }
        // Linux reads the error status before the character it belongs to.
        if self.uerstat().read(UERSTAT::ANY) != 0 {
            self.rx_errors += 1;
        }
        Some(self.urxh().read(DATA::CHAR) as u8)
    }

    fn flush(&mut self) {
        if self.stalled {
            return;
        }
        for _ in 0..TX_POLL_LIMIT {
            if self.utrstat().is_set(UTRSTAT::TX_EMPTY) {
                return;
            }
            core::hint::spin_loop();
        }
        self.stalled = true;
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::bus::model::{Device, Strict32};
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// A model UART: a transmit FIFO that the line drains by `drain_per_poll` characters at
    /// each status read, a receive FIFO fed by the test, and a record of every write to the
    /// registers a console driver must leave alone.
    struct Model {
        ulcon: u32,
        ucon: u32,
        ufcon: u32,
        ubrdiv: u32,
        uintm: u32,
        fifo_size: usize,
        tx: VecDeque<u8>,
        /// What left on the line, in order.
        sent: Vec<u8>,
        rx: VecDeque<u8>,
        drain_per_poll: usize,
        /// Writes to UTXH with the FIFO (or, off, the holding register) full.
        overruns: usize,
        /// Writes to ULCON, UBRDIV or UFRACVAL.
        line_writes: usize,
        status_reads: usize,
        /// A character is in the shifter (TX_EMPTY clear).
        busy: bool,
    }

    impl Model {
        fn new(fifo_size: usize) -> Self {
            Self {
                ulcon: 0x3,
                ucon: 0x5,
                ufcon: 0x1,
                ubrdiv: 0x1a,
                uintm: 0,
                fifo_size,
                tx: VecDeque::new(),
                sent: Vec::new(),
                rx: VecDeque::new(),
                drain_per_poll: 1,
                overruns: 0,
                line_writes: 0,
                status_reads: 0,
                busy: false,
            }
        }

        fn capacity(&self) -> usize {
            if self.ufcon & 1 != 0 {
                self.fifo_size
            } else {
                1
            }
        }

        fn drain(&mut self) {
            self.status_reads += 1;
            for _ in 0..self.drain_per_poll {
                match self.tx.pop_front() {
                    Some(b) => self.sent.push(b),
                    None => break,
                }
            }
            self.busy = !self.tx.is_empty();
        }
    }

    impl Device for Model {
        fn read(&mut self, offset: usize) -> u32 {
            match offset {
                0x00 => self.ulcon,
                0x04 => self.ucon,
                0x08 => self.ufcon,
                0x10 => {
                    self.drain();
                    let fifo = self.ufcon & 1 != 0;
                    let mut v = 0;
                    if !fifo && !self.rx.is_empty() {
                        v |= 1;
                    }
                    if !fifo && self.tx.is_empty() {
                        v |= 2;
                    }
                    if self.tx.is_empty() && !self.busy {
                        v |= 4;
                    }
                    v
                }
                0x14 => 0,
                0x18 => {
                    self.drain();
                    let (tx, rx) = (self.tx.len(), self.rx.len());
                    let mut v = 0;
                    if tx >= self.fifo_size {
                        v |= 1 << 24;
                    } else {
                        v |= (tx as u32) << 16;
                    }
                    if rx >= self.fifo_size {
                        v |= 1 << 8;
                    } else {
                        v |= rx as u32;
                    }
                    v
                }
                0x24 => self.rx.pop_front().map_or(0, u32::from),
                0x28 => self.ubrdiv,
                0x38 => self.uintm,
                _ => 0,
            }
        }

        fn write(&mut self, offset: usize, value: u32) {
            match offset {
                0x00 | 0x28 | 0x2c => self.line_writes += 1,
                0x04 => self.ucon = value,
                0x08 => self.ufcon = value & !0x6,
                0x20 => {
                    if self.tx.len() >= self.capacity() {
                        self.overruns += 1;
                    } else {
                        self.tx.push_back(value as u8);
                    }
                }
                0x38 => self.uintm = value,
                _ => {}
            }
        }
    }

    fn uart(model: Model, fifo_size: u32) -> ExynosUart<Strict32<Model>> {
        let mut u = ExynosUart::new(Strict32::new(model), fifo_size);
        u.init();
        u
    }

    fn model(u: &ExynosUart<Strict32<Model>>) -> std::cell::RefMut<'_, Model> {
        u.bus().device.borrow_mut()
    }

    #[test]
    fn the_pixel6_tree_selects_this_driver_with_its_fifo_size() {
        // The kernel's table order: PL011, then this driver (kernel/src/console.rs).
        let blob = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../levitate-mm/tests/dtbs/gs101-oriole.dtb"
        ))
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let drivers = [crate::drivers::pl011::COMPATIBLE, COMPATIBLE];
        let (found, _) = levitate_mm::dtb::devices::select_console(&fdt, &drivers).unwrap();
        assert_eq!(found.driver, 1);
        assert_eq!(found.phys.as_u64(), 0x10a0_0000);
        assert_eq!(
            levitate_mm::dtb::devices::u32_property(&found.node, "samsung,uart-fifosize"),
            Some(256)
        );
    }

    #[test]
    fn long_text_arrives_whole_without_overrunning_the_fifo() {
        let mut u = uart(Model::new(256), 256);
        let text: Vec<u8> = (0..2000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for &b in &text {
            u.write_byte(b);
        }
        u.flush();
        let m = model(&u);
        assert_eq!(m.overruns, 0);
        assert_eq!(m.sent, text);
        assert_eq!(u.dropped(), 0);
        assert_eq!(
            m.line_writes, 0,
            "framing and baud rate must stay as ABL set them"
        );
        assert_eq!(m.uintm, 0xf, "polled driver masks its interrupts");
    }

    #[test]
    fn room_from_the_count_saves_status_reads() {
        // A line as fast as the CPU: the FIFO never fills, and the driver reads UFSTAT about
        // once per FIFO's worth of bytes instead of once per byte.
        let mut m = Model::new(256);
        m.drain_per_poll = 256;
        let mut u = uart(m, 256);
        for _ in 0..2560 {
            u.write_byte(b'x');
        }
        let m = model(&u);
        assert!(m.status_reads <= 12, "{} status reads", m.status_reads);
        assert_eq!(m.overruns, 0);
    }

    #[test]
    fn a_smaller_assumed_fifo_only_costs_status_reads() {
        // No `samsung,uart-fifosize`: the driver assumes 16 entries of a 256-entry FIFO.
        let mut u = uart(Model::new(256), DEFAULT_FIFO_SIZE);
        for _ in 0..1000 {
            u.write_byte(b'y');
        }
        u.flush();
        let m = model(&u);
        assert_eq!(m.overruns, 0);
        assert_eq!(m.sent.len(), 1000);
    }

    #[test]
    fn dead_fifo_drops_and_counts_with_bounded_waits() {
        let mut m = Model::new(256);
        m.drain_per_poll = 0;
        let mut u = uart(m, 256);
        for _ in 0..300 {
            u.write_byte(b'z');
        }
        u.flush();
        {
            let m = model(&u);
            assert_eq!(m.overruns, 0);
            assert_eq!(m.tx.len(), 256, "the FIFO is filled, never overfilled");
            // One full wait, then one poll per dropped byte (and none for flush).
            assert!(
                m.status_reads <= TX_POLL_LIMIT as usize + 44 + 2,
                "{} status reads",
                m.status_reads
            );
        }
        assert_eq!(u.dropped(), 44);
        // The line comes back: output resumes at once.
        model(&u).drain_per_poll = 256;
        u.write_byte(b'!');
        assert_eq!(u.dropped(), 44);
        assert_eq!(model(&u).tx.back(), Some(&b'!'));
    }

    #[test]
    fn fifo_switched_on_only_when_idle() {
        let mut m = Model::new(256);
        m.ufcon = 0;
        let u = uart(m, 256);
        assert!(u.fifo_mode());
        assert_eq!(model(&u).ufcon & 1, 1);

        // Busy transmitter: left in non-FIFO mode, which still works without overruns.
        let mut m = Model::new(256);
        m.ufcon = 0;
        m.tx.push_back(b'q');
        m.drain_per_poll = 0;
        let mut bus = ExynosUart::new(Strict32::new(m), 256);
        let report = bus.init();
        assert!(!report.fifo_on && !report.fifo_was_on);
        model(&bus).drain_per_poll = 1;
        for &b in b"hello" {
            bus.write_byte(b);
        }
        bus.flush();
        let m = model(&bus);
        assert_eq!(m.overruns, 0);
        assert_eq!(m.sent, b"qhello");
    }

    #[test]
    fn unconfigured_port_gets_polling_modes_and_keeps_its_line_settings() {
        let mut m = Model::new(256);
        m.ucon = 0x0300;
        let mut u = ExynosUart::new(Strict32::new(m), 256);
        assert!(u.init().enabled_modes);
        let m = model(&u);
        assert_eq!(m.ucon, 0x0305, "only the mode bits change");
        assert_eq!(m.line_writes, 0);
    }

    #[test]
    fn receive_reads_in_order_including_a_full_fifo() {
        let mut m = Model::new(256);
        m.rx.extend((0..=255u8).collect::<Vec<_>>());
        let mut u = uart(m, 256);
        let got: Vec<u8> = core::iter::from_fn(|| u.read_byte()).collect();
        assert_eq!(got, (0..=255u8).collect::<Vec<_>>());
        assert_eq!(u.read_byte(), None);
    }

    #[test]
    fn receive_without_fifo_uses_data_ready() {
        let mut m = Model::new(256);
        m.ufcon = 0;
        m.rx.extend(*b"ls\n");
        m.busy = true;
        m.tx.push_back(b'.');
        m.drain_per_poll = 0;
        let mut u = ExynosUart::new(Strict32::new(m), 256);
        u.init();
        assert!(!u.fifo_mode());
        let got: Vec<u8> = core::iter::from_fn(|| u.read_byte()).collect();
        assert_eq!(got, b"ls\n");
    }
}
