//! QEMU's firmware configuration device, MMIO flavour (`qemu,fw-cfg-mmio`; QEMU
//! docs/specs/fw_cfg.rst): the register accesses only. The byte formats (directory, DMA
//! descriptor, ramfb's record) are parsed and built in `levitate_mm::fw_cfg`, host-tested.
//!
//! fw_cfg.rst, "MMIO register layout" (arm virt): data at +0 (1 to 8 bytes wide, each read
//! returns the next bytes of the selected item in item order), selector at +8 (16 bits,
//! big-endian), DMA address at +16 (64 bits, big-endian; the device starts the transfer when
//! the low half is written, so the high half goes first). Every control register is
//! big-endian whatever the guest, hence the `to_be`/`from_be` below.

use super::mmio::MmioBlock;
use crate::arch::aarch64::timer;
use crate::PhysAddr;
use levitate_mm::fw_cfg::{self as format, DMA_CTL_ERROR};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    /// The fw_cfg MMIO registers (fw_cfg.rst; QEMU hw/nvram/fw_cfg.c `fw_cfg_mem_ops`).
    #[allow(non_snake_case)]
    pub Registers {
        /// Data: byte reads step through the selected item.
        (0x00 => DATA: ReadOnly<u8>),
        (0x01 => _reserved0),
        /// Selector: which item the data register and DMA transfers read (big-endian).
        (0x08 => SELECTOR: WriteOnly<u16>),
        (0x0a => _reserved1),
        /// DMA address, high 32 bits (big-endian); reads "QEMU" when DMA exists.
        (0x10 => DMA_HIGH: ReadWrite<u32>),
        /// DMA address, low 32 bits (big-endian): writing it starts the transfer.
        (0x14 => DMA_LOW: ReadWrite<u32>),
        (0x18 => @END),
    }
}

/// Bytes of registers to map.
pub const MMIO_SIZE: u64 = 0x18;

/// `compatible` strings this driver binds to.
pub const COMPATIBLE: &[&str] = &["qemu,fw-cfg-mmio"];

/// Why a DMA transfer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// The device set the error bit (an unknown item, a read-only item written, a bad
    /// address).
    Device,
    /// The control word did not clear within the wait (QEMU completes transfers before the
    /// register write returns, so this means something other than QEMU answered).
    Timeout,
}

/// The fw_cfg device.
pub struct FwCfg {
    regs: MmioBlock<Registers>,
}

impl FwCfg {
    /// Wraps the device whose registers are mapped at `base`.
    ///
    /// # Safety
    /// `base` must be the virtual address of a fw_cfg MMIO register block mapped as Device
    /// memory (at least [`MMIO_SIZE`] bytes) for the life of the driver, used by no other
    /// driver instance.
    pub unsafe fn new(base: usize) -> Self {
        Self {
            // SAFETY: forwarded from this function's contract.
            regs: unsafe { MmioBlock::new(base) },
        }
    }

    /// Selects item `key` and rewinds its read position.
    pub fn select(&self, key: u16) {
        self.regs.SELECTOR.set(key.to_be());
    }

    /// Reads the next `buf.len()` bytes of the selected item (past its end the device
    /// returns zeros).
    pub fn read(&self, buf: &mut [u8]) {
        for b in buf {
            *b = self.regs.DATA.get();
        }
    }

    /// Whether the signature item reads "QEMU".
    pub fn has_signature(&self) -> bool {
        let mut sig = [0u8; 4];
        self.select(format::KEY_SIGNATURE);
        self.read(&mut sig);
        sig == format::SIGNATURE
    }

    /// The feature bitmap (`FW_CFG_ID`, little-endian in the item).
    pub fn features(&self) -> u32 {
        let mut id = [0u8; 4];
        self.select(format::KEY_ID);
        self.read(&mut id);
        u32::from_le_bytes(id)
    }

    /// Runs one DMA transfer: writes the descriptor `access` (see
    /// [`levitate_mm::fw_cfg::dma_access`]) at `desc_va`, rings the device with its physical
    /// address and waits at most `timeout_ms` for the control word to clear.
    ///
    /// # Safety
    /// `desc_va` must be a kernel mapping of `desc_pa` as Normal memory, 16 bytes, 8-byte
    /// aligned, used by nothing else during the call; the memory the descriptor names must
    /// be RAM the device may read (or write, for reads) and nothing else relies on
    /// meanwhile. QEMU's fw_cfg DMA accesses guest RAM coherently (no cache maintenance;
    /// a real DMA master would need cleans to the point of coherency).
    pub unsafe fn dma(
        &self,
        desc_va: *mut u8,
        desc_pa: PhysAddr,
        access: [u8; 16],
        timeout_ms: u64,
    ) -> Result<(), DmaError> {
        let control = desc_va.cast::<u32>();
        // SAFETY: the caller's contract: 16 writable, aligned bytes only we use.
        unsafe { core::ptr::copy_nonoverlapping(access.as_ptr(), desc_va, access.len()) };
        // The descriptor and the data it names must reach memory before the device reads
        // them: a DSB SY orders the stores before the register write that starts the device
        // (ARM ARM B2.3, "Ordering of memory accesses" across observers).
        // SAFETY: a barrier only.
        unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
        let pa = desc_pa.as_u64();
        self.regs.DMA_HIGH.set(((pa >> 32) as u32).to_be());
        self.regs.DMA_LOW.set((pa as u32).to_be());
        let start = timer::ticks();
        let patience = timer::frequency() / 1000 * timer_ms_floor(timeout_ms);
        loop {
            // The device writes the control word back; see it, not a cached copy of it.
            // SAFETY: a barrier only.
            unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
            // SAFETY: the descriptor is ours for the call (caller's contract); a volatile
            // read because the device, not this code, changes it.
            let word = u32::from_be(unsafe { control.read_volatile() });
            if word & DMA_CTL_ERROR != 0 {
                return Err(DmaError::Device);
            }
            if word == 0 {
                return Ok(());
            }
            if timer::ticks().wrapping_sub(start) > patience {
                return Err(DmaError::Timeout);
            }
            core::hint::spin_loop();
        }
    }
}

/// At least a millisecond of patience, whatever the caller asked.
fn timer_ms_floor(ms: u64) -> u64 {
    ms.max(1)
}
