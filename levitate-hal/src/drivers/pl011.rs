//! Arm PrimeCell UART (PL011) driver (ARM DDI 0183G, "PrimeCell UART (PL011) Technical
//! Reference Manual", section 3: register descriptions).
//!
//! The bootloader has already chosen the baud rate (QEMU ignores it; a phone's bootloader
//! programs it for its clock), so `init` keeps the divisors and only makes sure the UART,
//! transmitter, receiver and FIFOs are on with 8N1 framing.

use super::mmio::MmioBlock;
use crate::console::Console;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! {u32,
    /// Data register.
    DR [
        /// Received or transmitted character.
        DATA OFFSET(0) NUMBITS(8) []
    ],
    /// Flag register.
    FR [
        /// Transmit FIFO empty.
        TXFE OFFSET(7) NUMBITS(1) [],
        /// Receive FIFO full.
        RXFF OFFSET(6) NUMBITS(1) [],
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    /// Line control register.
    LCR_H [
        /// Word length.
        WLEN OFFSET(5) NUMBITS(2) [
            FiveBit = 0b00,
            SixBit = 0b01,
            SevenBit = 0b10,
            EightBit = 0b11
        ],
        /// FIFO enable.
        FEN OFFSET(4) NUMBITS(1) [],
        /// Two stop bits.
        STP2 OFFSET(3) NUMBITS(1) [],
        /// Parity enable.
        PEN OFFSET(1) NUMBITS(1) []
    ],
    /// Control register.
    CR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    /// Interrupt clear register.
    ICR [
        /// Clear all interrupts.
        ALL OFFSET(0) NUMBITS(11) []
    ]
}

register_structs! {
    /// The PL011 register block.
    #[allow(non_snake_case)]
    pub Registers {
        (0x00 => DR: ReadWrite<u32, DR::Register>),
        (0x04 => RSR_ECR: ReadWrite<u32>),
        (0x08 => _reserved0),
        (0x18 => FR: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x24 => IBRD: ReadWrite<u32>),
        (0x28 => FBRD: ReadWrite<u32>),
        (0x2c => LCR_H: ReadWrite<u32, LCR_H::Register>),
        (0x30 => CR: ReadWrite<u32, CR::Register>),
        (0x34 => IFLS: ReadWrite<u32>),
        (0x38 => IMSC: ReadWrite<u32>),
        (0x3c => RIS: ReadOnly<u32>),
        (0x40 => MIS: ReadOnly<u32>),
        (0x44 => ICR: WriteOnly<u32, ICR::Register>),
        (0x48 => @END),
    }
}

/// Size of the register window to map.
pub const MMIO_SIZE: u64 = 0x1000;

/// `compatible` strings this driver binds to.
pub const COMPATIBLE: &[&str] = &["arm,pl011"];

/// Depth of the receive FIFO (PL011 r1p5).
const FIFO_DEPTH: usize = 32;

/// Polls of FR spent waiting for transmit room (or for BUSY to clear in `flush`) before the
/// UART is taken as stalled. A device read costs well over 10 ns, so this is more than 10 ms:
/// far beyond one byte time at 115200 baud (87 us) and a full 32-byte FIFO's drain (2.8 ms).
/// A UART whose clock was gated, or a transmitter held off by flow control, must not hang
/// the kernel (and a panic report behind it) for ever.
pub const TX_POLL_LIMIT: u32 = 1_000_000;

/// A PL011 UART.
pub struct Pl011 {
    regs: MmioBlock<Registers>,
    /// Characters that arrived before `init`, saved because reprogramming LCR_H flushes the
    /// FIFO (a piped shell script starts typing before the kernel is up).
    early_rx: [u8; FIFO_DEPTH],
    early_len: usize,
    early_pos: usize,
    /// The last wait for room ran out: poll once per byte until the FIFO moves again, so a
    /// dead UART costs one bounded wait and not one per byte.
    stalled: bool,
    /// Bytes dropped because the transmit FIFO stayed full.
    dropped: u64,
}

impl Pl011 {
    /// Wraps the UART whose registers are mapped at `base`.
    ///
    /// # Safety
    /// `base` must be the virtual address of a PL011's registers mapped as Device memory for
    /// the life of the driver, with no other driver instance using it.
    pub unsafe fn new(base: usize) -> Self {
        Self {
            // SAFETY: forwarded from this function's contract.
            regs: unsafe { MmioBlock::new(base) },
            early_rx: [0; FIFO_DEPTH],
            early_len: 0,
            early_pos: 0,
            stalled: false,
            dropped: 0,
        }
    }

    /// Makes the UART usable without disturbing what the bootloader set up.
    ///
    /// An enabled UART (the bootloader printed through it) keeps its baud rate, framing and FIFO
    /// setting; only the transmitter and receiver are switched on. A disabled one gets 8N1
    /// framing, still without toggling FEN: changing FEN resets the receive FIFO, and on QEMU
    /// a character that lands in that instant is replaced by a stale one.
    pub fn init(&mut self) {
        // Characters typed (or piped) before the kernel got here.
        while self.early_len < FIFO_DEPTH && !self.regs.FR.is_set(FR::RXFE) {
            self.early_rx[self.early_len] = self.regs.DR.read(DR::DATA) as u8;
            self.early_len += 1;
        }
        if !self.regs.CR.is_set(CR::UARTEN) {
            let fifo = self.regs.LCR_H.read(LCR_H::FEN);
            self.regs
                .LCR_H
                .write(LCR_H::WLEN::EightBit + LCR_H::FEN.val(fifo));
        }
        // Polled driver: no interrupts wanted.
        self.regs.IMSC.set(0);
        self.regs.ICR.write(ICR::ALL::SET);
        self.regs
            .CR
            .modify(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }
}

impl Console for Pl011 {
    fn name(&self) -> &'static str {
        "PL011"
    }

    fn write_byte(&mut self, byte: u8) {
        let limit = if self.stalled { 1 } else { TX_POLL_LIMIT };
        let room = (0..limit).any(|_| {
            let full = self.regs.FR.is_set(FR::TXFF);
            if full {
                core::hint::spin_loop();
            }
            !full
        });
        self.stalled = !room;
        if !room {
            self.dropped += 1;
            return;
        }
        self.regs.DR.write(DR::DATA.val(u32::from(byte)));
    }

    fn read_byte(&mut self) -> Option<u8> {
        if self.early_pos < self.early_len {
            self.early_pos += 1;
            return Some(self.early_rx[self.early_pos - 1]);
        }
        if self.regs.FR.is_set(FR::RXFE) {
            return None;
        }
        Some(self.regs.DR.read(DR::DATA) as u8)
    }

    fn flush(&mut self) {
        if self.stalled {
            return;
        }
        for _ in 0..TX_POLL_LIMIT {
            if !self.regs.FR.is_set(FR::BUSY) {
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
